"""hooks.py — the webhook receiver of the fault suite.

Some requests of the load carry a callback_url pointing here. The receiver
answers 200 and records every delivery it gets: its webhook-id, whether the
Standard Webhooks signature checks out (HMAC-SHA256 of "<id>.<timestamp>.<body>"
with the fleet's secret), and the request id in the body. While `stall` is
set it holds each delivery for a while before answering, so that killing the
dispatcher then leaves deliveries in flight (leased in MySQL, unanswered).
check() tells, for the request ids that asked for a callback, which were never
delivered and which were delivered under more than one webhook-id (receivers
dedupe on the id, so a second id would be a second notification).
"""

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self, secret="dev-webhook-secret"):
        self.set_secret(secret)
        self.lock = threading.Lock()
        self.got = defaultdict(list)  # request id -> [(webhook id, signature ok)]
        self.posts = 0
        self.stall = False
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if recv.stall:
                    time.sleep(2.0)
                wid = self.headers.get("webhook-id", "")
                ts = self.headers.get("webhook-timestamp", "")
                sig = self.headers.get("webhook-signature", "")
                mac = base64.b64encode(hmac.new(recv.key, b"%s.%s.%s" % (wid.encode(), ts.encode(), body),
                                                hashlib.sha256).digest()).decode()
                ok = ("v1," + mac) in sig.split(" ")
                try:
                    rid = json.loads(body).get("request_id")
                except ValueError:
                    rid = None
                with recv.lock:
                    recv.posts += 1
                    recv.got[rid].append((wid, ok))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set_secret(self, secret):
        """The dispatcher's PROMO_WEBHOOK_SECRET: "whsec_" + base64, or raw."""
        if secret.startswith("whsec_"):
            b64 = secret[6:]
            self.key = base64.b64decode(b64 + "=" * (-len(b64) % 4))
        else:
            self.key = secret.encode()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()

    def url(self, rid):
        return "http://127.0.0.1:%d/hook/%s" % (self.port, rid)

    def delivered(self, rids):
        with self.lock:
            return sum(1 for r in rids if self.got.get(r))

    def check(self, rids):
        """(missing, multiple ids, bad signatures, redeliveries) for rids."""
        missing, multi, badsig, redeliveries = [], [], [], 0
        with self.lock:
            for r in rids:
                g = self.got.get(r, [])
                if not g:
                    missing.append(r)
                    continue
                ids = {w for w, _ in g}
                if ids != {"msg_" + r}:
                    multi.append("%s: ids %s" % (r, sorted(ids)))
                if not all(ok for _, ok in g):
                    badsig.append(r)
                redeliveries += len(g) - 1
        return missing, multi, badsig, redeliveries
