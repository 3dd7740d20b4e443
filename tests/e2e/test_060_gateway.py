"""test_060_gateway.py — ingest's gateway duties, status code by status code.

Auth (401 without or with a wrong key, 403 for a client key on an admin
route), input limits (400 naming the field, 413, 415, 404, 405), rate limits
(429 with Retry-After, on an ingest of our own started with low limits),
backpressure (503 with Retry-After while every broker is down, then 202 again
once they are back, with no restart), long-polling (answers within ~100 ms of
the result being published; a missing id answers 404 when the wait is over)
and graceful shutdown (SIGTERM lets a slow write finish with 202 and ends a
long-poll at once). Every error is checked for the {"error": {...}} shape.

The extra ingest instances run build/bin/promo-ingest (or $PROMO_BIN_DIR's)
with the fleet's environment and their own port; they share the fleet's
Kafka, Redis and MySQL.
"""

import http.client
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from fleet import ROOT, free_ports

ADMIN = {"Authorization": "Bearer dev-admin-key"}
CLIENT = {"Authorization": "Bearer dev-client-key"}


class Ingest:
    """One promo-ingest process of our own, next to the fleet's."""

    def __init__(self, fleet, **env):
        self.fleet = fleet
        self.port = free_ports(1)[0]
        e = dict(fleet.env)
        e.update({"PROMO_HTTP_PORT": str(self.port), "PROMO_HTTP_BIND": "127.0.0.1"})
        e.update({k: str(v) for k, v in env.items()})
        bindir = os.environ.get("PROMO_BIN_DIR", os.path.join(ROOT, "build", "bin"))
        self.log_path = os.path.join(fleet.var, "log", "ingest-%d.log" % self.port)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([os.path.join(bindir, "promo-ingest")], env=e, cwd=fleet.var,
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("own ingest did not start:\n" + self.logs())
            time.sleep(0.05)

    def request(self, method, path, body=None, headers=None, timeout=30):
        """One request on a fresh connection: (status, headers, parsed body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            hdrs = dict(headers or {})
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            try:
                doc = json.loads(data) if data else None
            except ValueError:
                doc = data
            return r.status, {k.lower(): v for k, v in r.getheaders()}, doc
        finally:
            conn.close()

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def assert_error(status, doc, code, field=None):
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    err = doc["error"]
    assert err["code"] == code, doc
    assert isinstance(err["message"], str) and err["message"], doc
    if field is not None:
        assert err.get("field") == field, doc
    return err


def rid(prefix="gw"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:16])


# ---- auth ---------------------------------------------------------------------

def test_401_without_or_with_a_wrong_key(fleet):
    for key in (None, "wrong-key", "dev-client-key-but-longer", ""):
        r = fleet.get("/v1/points/u1", key=key, role=None)
        assert r.status == 401, (key, r)
        assert_error(r.status, r.json(), "UNAUTHORIZED")
        assert r.headers.get("www-authenticate") == "Bearer"
    r = fleet.post("/v1/points/u1/use", {"amount": 1, "order_id": "o1"}, role=None,
                   headers={"Authorization": "Basic ZGV2LWNsaWVudC1rZXk6"})
    assert r.status == 401, r
    # The key never shows up in a log.
    for name in ("ingest",):
        assert "wrong-key" not in fleet.logs(name, 2000)


def test_403_client_key_on_admin_routes(fleet):
    now = int(time.time() * 1000)
    cases = [
        ("/v1/coupon-policies", {"policy_id": rid("p"), "name": "x", "discount_type": "FIXED",
                                 "discount_value": 100, "total_quantity": 1, "issue_starts_at": now,
                                 "issue_ends_at": now + 60000, "valid_days": 1}),
        ("/v1/time-sales", {"sale_id": rid("s"), "product_id": "p", "name": "x", "original_price": 10,
                            "sale_price": 5, "stock": 1, "starts_at": now, "ends_at": now + 60000}),
        ("/v1/points/u1/earn", {"amount": 10, "reason": "x"}),
    ]
    for path, body in cases:
        r = fleet.post(path, body, role="client")
        assert r.status == 403, (path, r)
        assert_error(r.status, r.json(), "FORBIDDEN")
    # The admin key may do what a client may.
    r = fleet.get("/v1/points/u1", role="admin")
    assert r.status == 200, r


# ---- input limits ---------------------------------------------------------------

def test_400_names_the_field(fleet):
    long_id = "x" * 65
    cases = [
        ("/v1/points/u1/use", {"amount": 1, "order_id": "o1", "colour": "red"}, "UNKNOWN_FIELD", "colour"),
        ("/v1/points/u1/use", {"amount": "12", "order_id": "o1"}, "INVALID_FIELD", "amount"),
        ("/v1/points/u1/use", {"amount": 1.5, "order_id": "o1"}, "INVALID_FIELD", "amount"),
        ("/v1/points/u1/use", {"amount": -5, "order_id": "o1"}, "INVALID_FIELD", "amount"),
        ("/v1/points/u1/use", {"amount": 1}, "MISSING_FIELD", "order_id"),
        ("/v1/points/u1/use", {"amount": 1, "order_id": long_id}, "INVALID_FIELD", "order_id"),
        ("/v1/points/u1/use", {"amount": 1, "order_id": "o/1"}, "INVALID_FIELD", "order_id"),
        ("/v1/points/u%20x/use", {"amount": 1, "order_id": "o1"}, "INVALID_FIELD", "user_id"),
        ("/v1/points/%s/use" % long_id, {"amount": 1, "order_id": "o1"}, "INVALID_FIELD", "user_id"),
        ("/v1/time-sales/s1/orders", {"user_id": "u1", "quantity": 0}, "INVALID_FIELD", "quantity"),
        ("/v1/coupons/nocolon/redeem", {"user_id": "u1", "order_id": "o1", "order_amount": 5},
         "INVALID_FIELD", "coupon_id"),
    ]
    for path, body, code, field in cases:
        r = fleet.post(path, body)
        assert r.status == 400, (path, body, r)
        assert_error(r.status, r.json(), code, field)
    r = fleet.post("/v1/points/u1/use", '{"amount": 1, "order_id": ', headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    assert_error(r.status, r.json(), "INVALID_JSON")
    r = fleet.post("/v1/points/u1/use", {"amount": 1, "order_id": "o1"}, headers={"Idempotency-Key": "bad key!"})
    assert r.status == 400, r
    assert_error(r.status, r.json(), "INVALID_FIELD", "Idempotency-Key")
    r = fleet.get("/v1/requests/r1?wait_ms=-1")
    assert r.status == 400, r
    assert_error(r.status, r.json(), "INVALID_FIELD", "wait_ms")


def test_413_body_too_large(fleet):
    body = b'{"amount": 1, "order_id": "o1", "pad": "' + b"x" * (70 * 1024) + b'"}'
    r = fleet.post("/v1/points/u1/use", body, headers={"Content-Type": "application/json"})
    assert r.status == 413, r
    assert_error(r.status, r.json(), "PAYLOAD_TOO_LARGE")


def test_415_wrong_content_type(fleet):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        hdrs = {"Content-Type": ctype} if ctype else {}
        r = fleet.post("/v1/points/u1/use", b'{"amount": 1, "order_id": "o1"}', headers=hdrs)
        assert r.status == 415, (ctype, r)
        assert_error(r.status, r.json(), "UNSUPPORTED_MEDIA_TYPE")


def test_404_and_405(fleet):
    r = fleet.get("/v1/nothing-here")
    assert r.status == 404, r
    assert_error(r.status, r.json(), "NOT_FOUND")
    r = fleet.get("/v1/points/u1/use")
    assert r.status == 405, r
    assert_error(r.status, r.json(), "METHOD_NOT_ALLOWED")
    r = fleet.request("DELETE", "/v1/coupon-policies/p1")
    assert r.status == 405, r


# ---- rate limits ------------------------------------------------------------------

def metric(text, name, labels):
    for line in text.splitlines():
        if line.startswith(name + "{" + labels + "}"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_429_with_retry_after(fleet):
    ing = Ingest(fleet, PROMO_RATE_KEY_RPS=2, PROMO_RATE_KEY_BURST=5,
                 PROMO_RATE_IP_RPS=2, PROMO_RATE_IP_BURST=20)
    try:
        codes = [ing.request("GET", "/v1/points/u1", headers=CLIENT) for _ in range(12)]
        assert [c[0] for c in codes[:5]] == [200] * 5, codes
        limited = [c for c in codes if c[0] == 429]
        assert limited, codes
        for status, hdrs, doc in limited:
            assert_error(status, doc, "RATE_LIMITED")
            assert int(hdrs["retry-after"]) >= 1, hdrs
        # The admin key has its own bucket.
        assert ing.request("GET", "/v1/points/u1", headers=ADMIN)[0] == 200
        # The address bucket holds 20 (13 taken so far): the rest goes on unauthenticated calls.
        codes = [ing.request("GET", "/openapi.json")[0] for _ in range(12)]
        assert 429 in codes and 200 in codes, codes
        # Probes and scraping are never limited, and show the limits.
        st, _, text = ing.request("GET", "/metrics")
        assert st == 200
        text = text.decode()
        assert metric(text, "promo_ingest_rate_limited_total", 'limiter="key"') >= 1
        assert metric(text, "promo_ingest_rate_limited_total", 'limiter="ip"') >= 1
        assert metric(text, "promo_ingest_rate_limit_rps", 'limiter="key"') == 2
        assert metric(text, "promo_ingest_rate_limit_burst", 'limiter="ip"') == 20
        assert metric(text, "promo_ingest_requests_total", 'route="points_get",code="429"') >= 1
        for _ in range(5):
            assert ing.request("GET", "/healthz")[0] == 200
        # The bucket refills: after Retry-After, the key is served again.
        time.sleep(1.0)
        assert ing.request("GET", "/v1/points/u1", headers=CLIENT)[0] == 200
    finally:
        assert ing.stop() == 0, ing.logs()


# ---- backpressure --------------------------------------------------------------------

def wait_ready(fleet, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        r = fleet.get("/readyz", role=None)
        if r.status == 200:
            return
        assert time.monotonic() < deadline, r
        time.sleep(0.2)


def test_503_while_kafka_is_down_then_202_again(fleet):
    ing = Ingest(fleet, PROMO_PRODUCE_TIMEOUT_MS=1500)
    body = {"amount": 7, "reason": "backpressure"}
    key = rid("bp")
    try:
        # The broker works: a first command goes through.
        st, _, doc = ing.request("POST", "/v1/points/bp-user/earn", body, headers=ADMIN)
        assert st == 202, doc
        # Frozen brokers: connections stay open and nothing answers, the
        # worst kind of "down" for a client.
        for node in fleet.kafka_nodes():
            fleet.kill(node, "STOP")
        try:
            hdrs = dict(ADMIN, **{"Idempotency-Key": key})
            t0 = time.monotonic()
            st, h, doc = ing.request("POST", "/v1/points/bp-user/earn", body, headers=hdrs)
            took = time.monotonic() - t0
            assert st == 503, (st, doc)
            assert_error(st, doc, "KAFKA_UNAVAILABLE")
            assert int(h["retry-after"]) >= 1
            assert took < 1.5 + 3, took  # bounded by PROMO_PRODUCE_TIMEOUT_MS
            # Not acknowledged, so no PENDING record either, and the key's
            # fingerprint is released: a retry starts afresh.
            assert fleet.redis("GET", "promo:req:" + key) is None
            assert fleet.redis("GET", "promo:idem:" + key) is None
            st, _, doc = ing.request("GET", "/readyz")
            assert st == 503, doc
        finally:
            for node in fleet.kafka_nodes():
                fleet.kill(node, "CONT")
        # The same ingest recovers on its own; the client retries with its key.
        deadline = time.monotonic() + 60
        while True:
            st, h, doc = ing.request("POST", "/v1/points/bp-user/earn", body, headers=hdrs)
            if st == 202:
                break
            assert st == 503 and "retry-after" in h, (st, doc)
            assert time.monotonic() < deadline, "still 503 a minute after the brokers came back"
            time.sleep(0.2)
        assert doc["request_id"] == key
        assert fleet.wait_request(key, timeout=60)["status"] == "SUCCEEDED"
        assert ing.proc.poll() is None
    finally:
        assert ing.stop() == 0, ing.logs()
        wait_ready(fleet)


# ---- long-polling -----------------------------------------------------------------------

def test_long_poll_wakes_on_publish(fleet):
    """Ingest's half alone: a result SET and PUBLISHed by hand."""
    request_id = rid("lp")
    out = {}

    def poll():
        t0 = time.monotonic()
        r = fleet.get("/v1/requests/%s?wait_ms=10000" % request_id)
        out["at"] = time.monotonic()
        out["r"] = r
        out["took"] = out["at"] - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)  # the poll is registered by now; a late one re-reads anyway
    doc = {"request_id": request_id, "status": "SUCCEEDED", "reason": None, "result": {"balance": 1}}
    fleet.redis("SET", "promo:req:" + request_id, json.dumps(doc), "EX", 60)
    published = time.monotonic()
    fleet.redis("PUBLISH", "promo:done", request_id)
    t.join(15)
    assert out["r"].status == 200, out
    assert out["r"].json()["status"] == "SUCCEEDED"
    assert out["at"] - published < 0.1, "answered %.3f s after the publish" % (out["at"] - published)


def test_long_poll_real_command(fleet):
    """The whole way: the sink publishes, the waiting poll answers."""
    request_id = rid("lpr")
    r = fleet.post("/v1/points/lp-user/earn", {"amount": 3, "reason": "lp"}, role="admin",
                   headers={"Idempotency-Key": request_id})
    assert r.status == 202, r
    t0 = time.monotonic()
    r = fleet.get("/v1/requests/%s?wait_ms=20000" % request_id)
    took = time.monotonic() - t0
    assert r.status == 200 and r.json()["status"] == "SUCCEEDED", r
    assert took < 5, "long-poll took %.2f s: is the sink publishing on promo:done?" % took
    # Once decided, the answer is immediate.
    t0 = time.monotonic()
    assert fleet.get("/v1/requests/%s?wait_ms=20000" % request_id).status == 200
    assert time.monotonic() - t0 < 0.5


def test_long_poll_missing_id_is_404_after_the_wait(fleet):
    t0 = time.monotonic()
    r = fleet.get("/v1/requests/%s?wait_ms=400" % rid("none"))
    took = time.monotonic() - t0
    assert r.status == 404, r
    assert_error(r.status, r.json(), "NOT_FOUND")
    assert 0.35 <= took < 3, took
    st = fleet.get("/metrics", role=None).body.decode()
    assert "promo_ingest_notify_subscribed 1" in st


# ---- graceful shutdown ------------------------------------------------------------------

def test_sigterm_finishes_in_flight_requests(fleet):
    ing = Ingest(fleet, PROMO_PRODUCE_TIMEOUT_MS=10000)
    results = {}

    def write():
        t0 = time.monotonic()
        results["write"] = ing.request("POST", "/v1/points/gs-user/earn", {"amount": 1, "reason": "gs"},
                                       headers=ADMIN)
        results["write_took"] = time.monotonic() - t0

    def long_poll():
        t0 = time.monotonic()
        results["poll"] = ing.request("GET", "/v1/requests/%s?wait_ms=25000" % rid("gs"), headers=CLIENT)
        results["poll_took"] = time.monotonic() - t0

    try:
        # Warm up first: connections, metadata and the producer id are in
        # place, so the slow write below costs one produce round trip.
        st, _, doc = ing.request("POST", "/v1/points/gs-user/earn", {"amount": 1, "reason": "warm"}, headers=ADMIN)
        assert st == 202, doc
        # A slow acknowledgement: the brokers freeze for a second.
        for node in fleet.kafka_nodes():
            fleet.kill(node, "STOP")
        thaw = threading.Timer(1.0, lambda: [fleet.kill(node, "CONT") for node in fleet.kafka_nodes()])
        thaw.start()
        threads = [threading.Thread(target=write), threading.Thread(target=long_poll)]
        for t in threads:
            t.start()
        time.sleep(0.4)  # both are in flight: the write waits for its slow ack
        t0 = time.monotonic()
        ing.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        rc = ing.proc.wait(30)
        took = time.monotonic() - t0
    finally:
        thaw.join()
        for node in fleet.kafka_nodes():
            fleet.kill(node, "CONT")
        ing.stop()
    assert rc == 0, ing.logs()
    st, _, doc = results["write"]
    assert st == 202, doc  # acknowledged before the process went
    assert results["write_took"] > 0.6, results  # so it was in flight when SIGTERM came
    assert results["poll"][0] == 404, results["poll"]
    assert results["poll_took"] < 10, results["poll_took"]
    assert took < 15, took
    assert fleet.wait_request(doc["request_id"], timeout=60)["status"] == "SUCCEEDED"
