"""040 — webhook callbacks: a request carrying callback_url gets one signed
POST of its result (checked here with Python's hmac, an implementation
independent of the dispatcher's); failed attempts are retried by the schedule
(Retry-After honoured, redirects not followed) and recorded, and end in a
recorded failure; a dispatcher killed with SIGKILL while deliveries wait
loses none of them; a callback host outside the allow-list is refused by
ingest before anything is sent.

The fleet runs promo-webhook as the component "webhook" with a short retry
schedule (PROMO_WEBHOOK_SCHEDULE); each test runs its own receiver, an
http.server in a thread on a free loopback port."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

import fleet as fleet_module
from client import ADMIN, Client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SECRET = "dev-webhook-secret"


pytestmark = pytest.mark.skipif("webhook" not in fleet_module.NAMES, reason="the fleet has no webhook component")


# ---- helpers -------------------------------------------------------------------


def signing_key(fleet):
    secret = fleet.env.get("PROMO_WEBHOOK_SECRET") or DEFAULT_SECRET
    if secret.startswith("whsec_"):
        rest = secret[len("whsec_"):]
        return base64.b64decode(rest + "=" * (-len(rest) % 4))
    return secret.encode()


def expected_signature(key, msg_id, timestamp, body):
    mac = hmac.new(key, b"%s.%s.%s" % (msg_id.encode(), timestamp.encode(), body), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def schedule(fleet):
    """The fleet's retry delays in seconds, or None when it runs the default
    schedule (hours long)."""
    s = fleet.env.get("PROMO_WEBHOOK_SCHEDULE")
    if not s:
        return None
    units = (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600))
    out = []
    for item in s.split(","):
        item = item.strip()
        unit = next(((u, f) for u, f in units if item.endswith(u)), ("", 0))
        out.append(int(item[:len(item) - len(unit[0])]) * unit[1])
    return out


def schedule_attempts(fleet):
    s = schedule(fleet)
    return len(s) if s is not None else None


class Receiver:
    """A callback endpoint. answer(path, n) gives the reply to the n-th
    (1-based) request on that path: a status code or (status, headers)."""

    def __init__(self, answer=None, port=0):
        self.answer = answer or (lambda path, n: 200)
        self.port = port
        self.requests = []  # (path, headers with lower-case names, body, time)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.server = None

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.cond:
                    receiver.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()},
                                              body, time.time()))
                    n = sum(1 for r in receiver.requests if r[0] == self.path)
                    receiver.cond.notify_all()
                reply = receiver.answer(self.path, n)
                status, headers = reply if isinstance(reply, tuple) else (reply, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                try:
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the dispatcher gave up waiting: that is its right

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def on(self, path):
        with self.lock:
            return [r for r in self.requests if r[0] == path]

    def wait(self, path, n, timeout=30):
        deadline = time.time() + timeout
        with self.cond:
            while sum(1 for r in self.requests if r[0] == path) < n:
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("%s: %d of %d callbacks after %ss" % (
                        path, sum(1 for r in self.requests if r[0] == path), n, timeout))
                self.cond.wait(left)
            return [r for r in self.requests if r[0] == path]


def earn(fleet, user, callback_url=None, key=None):
    """Submits an EarnPoints with a callback; returns the request id."""
    body = {"amount": 100, "reason": "webhook test"}
    if callback_url is not None:
        body["callback_url"] = callback_url
    headers = {"Idempotency-Key": key} if key else None
    return Client(fleet.http_port, key=ADMIN).submit("/v1/points/%s/earn" % user, body, headers=headers)


def delivery(fleet, request_id):
    rows = fleet.mysql_query("SELECT id, status, attempts, last_status, last_error, url FROM webhook_deliveries "
                             "WHERE request_id = %s", (request_id,))
    if not rows:
        return None
    assert len(rows) == 1, rows
    return dict(zip(("id", "status", "attempts", "last_status", "last_error", "url"), rows[0]))


def attempts(fleet, request_id):
    return fleet.mysql_query("SELECT attempt, http_status, error, at FROM webhook_attempts "
                             "WHERE delivery_id = %s ORDER BY attempt, id", ("msg_" + request_id,))


def wait_delivery(fleet, request_id, status, timeout=30):
    deadline = time.time() + timeout
    while True:
        d = delivery(fleet, request_id)
        if d and d["status"] == status:
            return d
        if time.time() > deadline:
            raise AssertionError("delivery of %s: %r, not %s after %ss" % (request_id, d, status, timeout))
        time.sleep(0.1)


def check_signed(fleet, request, request_id):
    _, headers, body, t = request
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == "msg_" + request_id
    ts = headers["webhook-timestamp"]
    assert ts.isdigit() and abs(int(ts) - t) < 60, ts
    assert headers["webhook-signature"] == expected_signature(signing_key(fleet), headers["webhook-id"], ts, body)
    return json.loads(body)


# ---- tests ---------------------------------------------------------------------


def test_signed_callback(fleet):
    rx = Receiver().start()
    try:
        rid = earn(fleet, "wh-user-1", rx.url("/cb/signed"))
        doc = Client(fleet.http_port).wait(rid)
        assert doc["status"] == "SUCCEEDED", doc
        (req,) = rx.wait("/cb/signed", 1)
        body = check_signed(fleet, req, rid)
        # The callback carries what GET /v1/requests/{id} answers, less the
        # delivery state that GET adds (the callback cannot know its own).
        assert body == {k: v for k, v in doc.items() if k != "callback"}
        d = wait_delivery(fleet, rid, "DELIVERED")
        assert d["attempts"] == 1 and d["last_status"] == 200 and d["last_error"] is None, d
        rows = attempts(fleet, rid)
        assert [(r[0], r[1], r[2]) for r in rows] == [(1, 200, None)]

        # A request without callback_url has no delivery at all.
        plain = earn(fleet, "wh-user-1")
        Client(fleet.http_port).wait(plain)
        time.sleep(0.5)
        assert delivery(fleet, plain) is None
        # A forged signature is told apart by the same check.
        _, headers, body, _ = req
        assert expected_signature(b"another key", headers["webhook-id"], headers["webhook-timestamp"], body) \
            != headers["webhook-signature"]
    finally:
        rx.stop()


def test_one_callback_per_request(fleet):
    """A client retry under one Idempotency-Key is one request: one delivery,
    one callback."""
    rx = Receiver().start()
    try:
        key = "wh-idem-%d" % int(time.time() * 1000)
        rid1 = earn(fleet, "wh-user-2", rx.url("/cb/idem"), key=key)
        rid2 = earn(fleet, "wh-user-2", rx.url("/cb/idem"), key=key)
        assert rid1 == rid2 == key
        Client(fleet.http_port).wait(rid1)
        rx.wait("/cb/idem", 1)
        wait_delivery(fleet, rid1, "DELIVERED")
        time.sleep(1.5)
        assert len(rx.on("/cb/idem")) == 1
    finally:
        rx.stop()


def test_retries_until_2xx(fleet):
    n = schedule_attempts(fleet)
    if n is not None and n < 4:
        pytest.skip("the fleet's schedule has fewer than 4 attempts")
    rx = Receiver(lambda path, k: 500 if k <= 3 else 200).start()
    try:
        rid = earn(fleet, "wh-user-3", rx.url("/cb/flaky"))
        d = wait_delivery(fleet, rid, "DELIVERED", timeout=60)
        assert d["attempts"] == 4 and d["last_status"] == 200, d
        rows = attempts(fleet, rid)
        assert [(r[0], r[1]) for r in rows] == [(1, 500), (2, 500), (3, 500), (4, 200)]
        assert all(r[2] for r in rows[:3]) and rows[3][2] is None
        assert [r[3] for r in rows] == sorted(r[3] for r in rows)
        got = rx.on("/cb/flaky")
        assert len(got) == 4
        # Every attempt carries the same id, each freshly signed.
        bodies = [check_signed(fleet, r, rid) for r in got]
        assert all(b == bodies[0] for b in bodies)
        assert len(fleet.mysql_query("SELECT id FROM webhook_deliveries WHERE request_id = %s", (rid,))) == 1
        # The request's status shows the callback's state too.
        status, doc, _ = Client(fleet.http_port).get("/v1/requests/" + rid)
        assert status == 200 and doc["callback"]["status"] == "DELIVERED", doc
        assert doc["callback"]["attempts"] == 4 and doc["callback"]["last_status"] == 200, doc
    finally:
        rx.stop()


def test_retry_after_is_honoured(fleet):
    rx = Receiver(lambda path, k: (503, {"Retry-After": "2"}) if k == 1 else 200).start()
    try:
        rid = earn(fleet, "wh-user-4", rx.url("/cb/later"))
        got = rx.wait("/cb/later", 2, timeout=60)
        assert got[1][3] - got[0][3] >= 1.9, "second attempt %.2f s after the first" % (got[1][3] - got[0][3])
        d = wait_delivery(fleet, rid, "DELIVERED")
        assert d["attempts"] == 2
    finally:
        rx.stop()


def test_redirects_are_not_followed(fleet):
    def answer(path, k):
        if path == "/cb/moved" and k == 1:
            return 302, {"Location": "/cb/elsewhere"}
        return 200

    rx = Receiver(answer).start()
    try:
        rid = earn(fleet, "wh-user-5", rx.url("/cb/moved"))
        d = wait_delivery(fleet, rid, "DELIVERED", timeout=60)
        assert d["attempts"] == 2, d
        assert [r[1] for r in attempts(fleet, rid)] == [302, 200]
        assert rx.on("/cb/elsewhere") == []
    finally:
        rx.stop()


def test_exhausted_schedule_fails(fleet, quick):
    n = schedule_attempts(fleet)
    if n is None:
        pytest.skip("the fleet runs the default schedule (hours)")
    if quick:
        pytest.skip("quick mode")
    rx = Receiver(lambda path, k: 500).start()
    try:
        rid = earn(fleet, "wh-user-6", rx.url("/cb/down"))
        d = wait_delivery(fleet, rid, "FAILED", timeout=120)
        assert d["attempts"] == n and d["last_status"] == 500, d
        assert [r[0] for r in attempts(fleet, rid)] == list(range(1, n + 1))
        time.sleep(1)
        assert len(rx.on("/cb/down")) == n
    finally:
        rx.stop()


def test_pending_deliveries_survive_a_killed_dispatcher(fleet):
    s = schedule(fleet)
    if s is not None and sum(s[1:]) < 8:
        pytest.skip("the fleet's schedule ends before a restarted dispatcher is up (needs 8 s or more)")
    down = Receiver().start()  # holds a free port, then goes away
    port = down.port
    down.stop()
    rids = [earn(fleet, "wh-user-7-%d" % i, "http://127.0.0.1:%d/cb/restart/%d" % (port, i)) for i in range(5)]
    for rid in rids:
        Client(fleet.http_port).wait(rid)
    # Every delivery has failed at least once against the closed port.
    deadline = time.time() + 30
    while not all((delivery(fleet, r) or {}).get("attempts", 0) >= 1 for r in rids):
        assert time.time() < deadline, [delivery(fleet, r) for r in rids]
        time.sleep(0.05)
    fleet.kill("webhook", signal.SIGKILL)
    for rid in rids:
        d = delivery(fleet, rid)
        assert d["status"] == "PENDING", d
    fleet.start("webhook")
    rx = Receiver(port=port).start()
    try:
        for i, rid in enumerate(rids):
            got = rx.wait("/cb/restart/%d" % i, 1, timeout=60)
            check_signed(fleet, got[0], rid)
            wait_delivery(fleet, rid, "DELIVERED")
    finally:
        rx.stop()


def test_callback_outside_allow_list_is_refused(fleet):
    c = Client(fleet.http_port, key=ADMIN)
    for url in ("http://example.com/hook", "http://127.0.0.1@example.com/hook", "ftp://127.0.0.1/hook",
                "http://127.0.0.1.example.com/hook"):
        status, doc, _ = c.post("/v1/points/wh-user-8/earn", {"amount": 1, "reason": "x", "callback_url": url})
        assert status == 400, (url, status, doc)
        assert doc["error"]["field"] == "callback_url", (url, doc)


def test_host_outside_allow_list_is_never_called(fleet):
    """A producer writing to Kafka directly skips ingest's check; the
    dispatcher checks again before sending and records a failure instead."""
    produce = os.path.join(ROOT, "examples", "produce_command.py")
    if not os.path.exists(produce):
        pytest.skip("examples/produce_command.py is missing")
    p = subprocess.run(["/usr/bin/python3", produce, "--bootstrap", fleet.bootstrap_servers, "point", "earn",
                        "--user-id", "wh-user-10", "--amount", "1", "--reason", "direct",
                        "--callback-url", "http://example.com/hook"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    rid = p.stdout.decode().split()[-1]
    assert Client(fleet.http_port).wait(rid)["status"] == "SUCCEEDED"
    d = wait_delivery(fleet, rid, "FAILED")
    assert d["last_error"] == "NOT_ALLOWED" and d["attempts"] == 0 and d["last_status"] is None, d
    assert attempts(fleet, rid) == ()


def test_metrics(fleet):
    port = fleet.env.get("PROMO_METRICS_PORT_WEBHOOK")
    if not port or port == "0":
        pytest.skip("the webhook dispatcher has no metrics port in this fleet")
    rx = Receiver().start()
    try:
        rid = earn(fleet, "wh-user-9", rx.url("/cb/metrics"))
        wait_delivery(fleet, rid, "DELIVERED")
    finally:
        rx.stop()
    with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    line = [ln for ln in text.splitlines() if ln.startswith('promo_webhook_deliveries_total{outcome="delivered"}')]
    assert line and int(line[0].split()[-1]) >= 1, text
    assert "promo_webhook_attempt_seconds_bucket" in text
    with urllib.request.urlopen("http://127.0.0.1:%s/healthz" % port, timeout=10) as r:
        assert r.status == 200


if __name__ == "__main__":
    raise SystemExit(pytest.main([os.path.abspath(__file__), "-v"]))


def test_secret_rotation_signs_with_both(fleet):
    """During a rotation PROMO_WEBHOOK_SECRET holds the new secret and the
    old one: each delivery carries both signatures (Standard Webhooks'
    space-separated list), so a receiver that knows either verifies; after
    it, one signature again."""
    old = fleet.env.get("PROMO_WEBHOOK_SECRET") or DEFAULT_SECRET
    new = "whsec_" + base64.b64encode(b"a new secret, 32 bytes long....").decode()
    saved = dict(fleet.env)
    rx = Receiver().start()
    try:
        fleet.env["PROMO_WEBHOOK_SECRET"] = "%s %s" % (new, old)
        fleet.restart("webhook", "TERM")
        rid = earn(fleet, "wh-rot", rx.url("/cb/rotation"))
        (req,) = rx.wait("/cb/rotation", 1)
        _, headers, body, _ = req
        sigs = headers["webhook-signature"].split(" ")
        msg = (headers["webhook-id"], headers["webhook-timestamp"], body)
        fleet.env["PROMO_WEBHOOK_SECRET"] = new
        assert sigs == [expected_signature(signing_key(fleet), *msg),
                        expected_signature(base64.b64decode(old[len("whsec_"):] + "=" * (-len(old[6:]) % 4))
                                           if old.startswith("whsec_") else old.encode(), *msg)], sigs
        assert wait_delivery(fleet, rid, "DELIVERED")["attempts"] == 1
    finally:
        rx.stop()
        fleet.env.clear()
        fleet.env.update(saved)
        fleet.restart("webhook", "TERM")
