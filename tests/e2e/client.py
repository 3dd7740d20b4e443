"""client.py — what an HTTP client of the promotion engine does, for the
end-to-end tests: keep-alive connections, JSON in and out, submit then wait
for the outcome. Standard library only, so the tests depend on nothing of
ours but the running fleet."""

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ADMIN = "dev-admin-key"
CLIENT = "dev-client-key"


class Client:
    """One keep-alive connection; not thread-safe (one per thread)."""

    def __init__(self, port, key=CLIENT, host="127.0.0.1"):
        self.host, self.port, self.key = host, port, key
        self.conn = None

    def request(self, method, path, body=None, headers=None, key=None, raw=None):
        hdrs = {"Authorization": "Bearer " + (key or self.key)}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                payload = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                try:
                    doc = json.loads(payload) if payload else None
                except ValueError:
                    doc = payload.decode(errors="replace")
                return resp.status, doc, dict(resp.getheaders())
            except (http.client.HTTPException, ConnectionError, OSError):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.1)

    def post(self, path, body, key=None, headers=None):
        return self.request("POST", path, body=body, key=key, headers=headers)

    def get(self, path, key=None):
        return self.request("GET", path, key=key)

    def wait(self, request_id, timeout=60.0):
        """Polls GET /v1/requests/{id} (long-polling) until it is final."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, doc, _ = self.get("/v1/requests/%s?wait_ms=2000" % request_id)
            if status == 200 and doc.get("status") in ("SUCCEEDED", "REJECTED"):
                return doc
            if status not in (200, 404):
                raise AssertionError("GET request %s: %s %s" % (request_id, status, doc))
            time.sleep(0.02)
        raise AssertionError("request %s not final after %.0f s" % (request_id, timeout))

    def submit(self, path, body, key=None, headers=None):
        """POST a command; returns its request id (asserts 202)."""
        status, doc, hdrs = self.post(path, body, key=key, headers=headers)
        assert status == 202, (path, status, doc)
        assert doc["status"] == "PENDING"
        assert hdrs.get("Location") == doc["status_url"]
        return doc["request_id"]

    def run(self, path, body, key=None, headers=None, timeout=60.0):
        """Submit and wait for the outcome."""
        return self.wait(self.submit(path, body, key=key, headers=headers), timeout)


class Pool:
    """Many clients in parallel: each worker thread has its own connection."""

    def __init__(self, port, workers=64):
        self.port, self.workers = port, workers
        self.local = threading.local()

    def client(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = self.local.c = Client(self.port)
        return c

    def map(self, fn, items):
        with ThreadPoolExecutor(self.workers) as ex:
            return list(ex.map(lambda it: fn(self.client(), it), items))

    def wait_all(self, request_ids, timeout=180.0):
        deadline = time.time() + timeout
        return dict(zip(request_ids, self.map(lambda c, rid: c.wait(rid, max(1.0, deadline - time.time())),
                                              request_ids)))


def now_ms():
    return int(time.time() * 1000)
