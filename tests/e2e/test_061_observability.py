"""test_061_observability.py — what operators and integrators read.

/openapi.json documents exactly what the server serves: every documented
operation is routed (probed without a key: 401 for a protected one, never 404
or 405; the public ones answer), and the server refuses to start with a route
the document lacks (http.c), which the unit test test_parse checks against the
file as well. /metrics of ingest, of each processor and of the sink parse as
Prometheus text under a strict parser, and their counters move when traffic
flows. /healthz and /readyz answer 200, and /readyz turns 503 while Redis is
down and 200 again once it is back (and the long-poll subscriber
resubscribes).
"""

import math
import re
import time
import uuid

from client import Pool
from fleet import PROGRAMS

METHODS = ("get", "post", "put", "patch", "delete")


# ---- OpenAPI --------------------------------------------------------------------

def fill(path):
    """A concrete path for a templated one, with valid ids."""
    def sub(m):
        name = m.group(1)
        return {"coupon_id": "p1:1", "asset": "docs.js"}.get(name, "x1")
    return re.sub(r"\{(\w+)\}", sub, path)


def test_openapi_lists_every_route_and_only_those(fleet):
    r = fleet.get("/openapi.json", role=None)
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert doc["security"] == [{"bearer": []}]
    ops = [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]
    assert len(ops) >= 23
    for method, path, op in ops:
        public = op.get("security", doc.get("security")) == []
        concrete = fill(path)
        body = {} if method in ("post", "patch") else None
        res = fleet.request(method.upper(), concrete, body=body, role=None)
        if public:
            assert res.status == 200, (method, path, res)
        else:
            assert res.status == 401, (method, path, res)
            assert "401" in op["responses"], (method, path)
        assert res.status not in (404, 405)
        assert op["responses"], (method, path)
        if method in ("post", "patch"):
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[1]
            assert name in doc["components"]["schemas"], name
            # A write answers 202; the one POST that sends nothing (the
            # advisory validation) answers 200 at once.
            answer = "200" if path == "/v1/coupons/{coupon_id}/validate" else "202"
            assert answer in op["responses"] and "400" in op["responses"], path
    documented = {(m.upper(), p) for m, p, _ in ops}
    # A few things the server must not serve, documented or not.
    for method, path in (("GET", "/v1/points"), ("GET", "/v1/coupons/p1:1"), ("POST", "/v1/requests/x1"),
                         ("GET", "/api/docs/../../etc/passwd"), ("GET", "/api/docs/index.html")):
        res = fleet.request(method, path, role="admin", body={} if method == "POST" else None)
        assert res.status in (404, 405), (method, path, res)
        assert (method, path) not in documented
    # Every route of DESIGN.md §4 is there.
    for method, path in [("POST", "/v1/coupon-policies"), ("POST", "/v1/coupon-policies/{policy_id}/issue"),
                         ("POST", "/v1/coupons/{coupon_id}/redeem"), ("POST", "/v1/coupons/{coupon_id}/cancel"),
                         ("GET", "/v1/coupon-policies/{policy_id}"), ("GET", "/v1/users/{user_id}/coupons"),
                         ("POST", "/v1/points/{user_id}/earn"), ("POST", "/v1/points/{user_id}/use"),
                         ("POST", "/v1/points/{user_id}/cancel"), ("GET", "/v1/points/{user_id}"),
                         ("GET", "/v1/points/{user_id}/history"), ("POST", "/v1/time-sales"),
                         ("POST", "/v1/time-sales/{sale_id}/orders"),
                         ("POST", "/v1/time-sales/{sale_id}/orders/{order_id}/cancel"),
                         ("GET", "/v1/time-sales/{sale_id}"), ("GET", "/v1/requests/{request_id}"),
                         ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
                         ("GET", "/api/docs"),
                         # §4a, running a campaign
                         ("POST", "/v1/coupon-policies/{policy_id}/pause"),
                         ("POST", "/v1/coupon-policies/{policy_id}/resume"),
                         ("POST", "/v1/coupon-policies/{policy_id}/close"),
                         ("PATCH", "/v1/coupon-policies/{policy_id}"),
                         ("POST", "/v1/time-sales/{sale_id}/pause"), ("POST", "/v1/time-sales/{sale_id}/resume"),
                         ("POST", "/v1/time-sales/{sale_id}/close"), ("PATCH", "/v1/time-sales/{sale_id}"),
                         ("POST", "/v1/time-sales/{sale_id}/orders/{order_id}/confirm"),
                         ("POST", "/v1/coupons/{coupon_id}/validate"), ("GET", "/v1/coupon-policies"),
                         ("GET", "/v1/time-sales"), ("GET", "/v1/coupon-policies/{policy_id}/stats"),
                         ("GET", "/v1/time-sales/{sale_id}/stats"), ("POST", "/v1/points/{user_id}/adjust")]:
        assert (method, path) in documented, (method, path)


# ---- Prometheus text --------------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s)(?:,(?:%s))*,?)?\})? (\S+)(?: (-?\d+))?$" % (NAME, LABEL, LABEL))
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    return float(s)  # raises on anything else


def parse_prometheus(text):
    """Strict text format 0.0.4: returns {(name, frozenset(labels)): value}
    and {family: type}; raises AssertionError on any malformed line."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    types, helps, samples = {}, {}, {}
    seen_families = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                assert re.fullmatch(NAME, parts[2]), where
                if parts[1] == "TYPE":
                    assert len(parts) == 4 and parts[3] in TYPES, where
                    assert parts[2] not in types, "second TYPE, " + where
                    assert parts[2] not in seen_families, "TYPE after samples, " + where
                    types[parts[2]] = parts[3]
                else:
                    assert parts[2] not in helps, "second HELP, " + where
                    helps[parts[2]] = parts[3] if len(parts) == 4 else ""
            continue
        assert line.strip(), "blank line, " + where
        m = SAMPLE.match(line)
        assert m, "malformed sample, " + where
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        try:
            v = parse_value(value)
        except ValueError:
            raise AssertionError("bad value, " + where)
        lab = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
        assert len(lab) == len(re.findall(r'="', labels)), "repeated label, " + where
        key = (name, lab)
        assert key not in samples, "duplicate series, " + where
        samples[key] = v
        family = re.sub(r"_(bucket|sum|count|total|created)$", "", name)
        for f in (name, family):
            if f not in seen_families:
                seen_families.append(f)
        t = types.get(name) or types.get(family)
        if t == "counter":
            assert v >= 0, "negative counter, " + where
    # Histograms: cumulative buckets ending in +Inf equal to _count.
    for fam, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, lab), v in samples.items():
            if name == fam + "_bucket":
                d = dict(lab)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append((parse_value(le), v))
        for lab, buckets in series.items():
            buckets.sort()
            assert buckets[-1][0] == math.inf, (fam, lab)
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), "buckets not cumulative: %s %s" % (fam, lab)
            assert samples[(fam + "_count", lab)] == counts[-1], (fam, lab)
            assert (fam + "_sum", lab) in samples, (fam, lab)
    return samples, types


def test_prometheus_parser_is_strict():
    good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="a\\"b"} 3\nb 1.5e3\n'
    samples, _ = parse_prometheus(good)
    assert samples[("a_total", frozenset({("x", "1"), ("y", 'a\\"b')}))] == 3
    for bad in ("a 1", "a{x=1} 1\n", "a{x=\"1\"} one\n", "a 1\na 2\n", "# TYPE a countr\na 1\n",
                "a-b 1\n", "a{x=\"1\"}1\n", "\na 1\n", "# TYPE a_total counter\na_total -1\n"):
        try:
            parse_prometheus(bad)
        except AssertionError:
            continue
        raise AssertionError("accepted %r" % bad)


def scrape(fleet, port):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200, (port, r.status, body[:200])
        ctype = r.getheader("Content-Type", "")
        assert ctype.startswith("text/plain"), (port, ctype)
        return body
    finally:
        conn.close()


def counters_sum(samples, types):
    """Sum of every counter sample (a histogram's _count included)."""
    total = 0.0
    for (name, _), v in samples.items():
        fam = re.sub(r"_(total|count)$", "", name)
        if types.get(name) == "counter" or types.get(fam) == "counter" or \
                (name.endswith("_count") and types.get(fam) == "histogram"):
            total += v
    return total


def program_ports(fleet):
    return {p: int(fleet.env["PROMO_METRICS_PORT_" + p.upper().replace("-", "_")]) for p in PROGRAMS}


def test_metrics_parse_and_move(fleet):
    ports = dict(program_ports(fleet), ingest=fleet.http_port)
    before = {name: parse_prometheus(scrape(fleet, port)) for name, port in ports.items()}
    # Traffic that touches every program: one command per domain.
    now = int(time.time() * 1000)
    tag = uuid.uuid4().hex[:10]
    ids = []
    for path, body, role in (
            ("/v1/points/obs-%s/earn" % tag, {"amount": 5, "reason": "obs"}, "admin"),
            ("/v1/coupon-policies/obs-missing-%s/issue" % tag, {"user_id": "u1"}, "client"),
            ("/v1/time-sales", {"sale_id": "obs-%s" % tag, "product_id": "p", "name": "n", "original_price": 10,
                                "sale_price": 5, "stock": 3, "starts_at": now - 1000, "ends_at": now + 60000},
             "admin")):
        r = fleet.post(path, body, role=role)
        assert r.status == 202, r
        ids.append(r.json()["request_id"])
    for request_id in ids:
        fleet.wait_request(request_id, timeout=60)
    # Processors and the sink may count a moment after the result lands.
    deadline = time.monotonic() + 15
    while True:
        after = {name: parse_prometheus(scrape(fleet, port)) for name, port in ports.items()}
        still = [name for name in ports
                 if counters_sum(*after[name]) <= counters_sum(*before[name])]
        if not still:
            break
        assert time.monotonic() < deadline, "counters did not move in: %s" % still
        time.sleep(0.2)
    samples, types = after["ingest"]
    writes = sum(v for (n, lab), v in samples.items()
                 if n == "promo_ingest_requests_total" and ("code", "202") in lab)
    writes_before = sum(v for (n, lab), v in before["ingest"][0].items()
                        if n == "promo_ingest_requests_total" and ("code", "202") in lab)
    assert writes >= writes_before + 3
    assert types["promo_ingest_produce_seconds"] == "histogram"
    assert types["promo_ingest_request_seconds"] == "histogram"
    assert samples[("promo_ingest_produce_seconds_count", frozenset())] >= 3


# ---- health and readiness -----------------------------------------------------------

def ingest_metric(fleet, name):
    samples, _ = parse_prometheus(fleet.get("/metrics", role=None).body.decode())
    return samples.get((name, frozenset()))


def test_healthz_and_readyz(fleet):
    r = fleet.get("/healthz", role=None)
    assert r.status == 200 and r.json()["status"] == "ok", r
    r = fleet.get("/readyz", role=None)
    assert r.status == 200, r
    assert r.json()["checks"] == {"kafka": "ok", "redis": "ok", "mysql": "ok"}


def status_reads(fleet, n=256):
    """HTTP codes of n status reads from 64 connections at once, so most of
    ingest's worker threads (each with its own Redis connection) serve some."""
    pool = Pool(fleet.http_port, workers=64)
    return pool.map(lambda c, i: c.get("/v1/requests/obs-none-%d" % i)[0], range(n))


def test_readyz_503_while_redis_is_down(fleet):
    subs = ingest_metric(fleet, "promo_ingest_notify_subscriptions_total")
    assert set(status_reads(fleet)) == {404}
    fleet.kill("redis", "TERM")
    try:
        deadline = time.monotonic() + 20
        while True:
            r = fleet.get("/readyz", role=None)
            if r.status == 503:
                break
            assert time.monotonic() < deadline, r
            time.sleep(0.2)
        doc = r.json()
        assert doc["status"] == "unavailable" and doc["checks"]["redis"] != "ok", doc
        assert doc["checks"]["kafka"] == "ok" and doc["checks"]["mysql"] == "ok", doc
        assert fleet.get("/healthz", role=None).status == 200
    finally:
        fleet.start("redis")
    deadline = time.monotonic() + 30
    while True:
        r = fleet.get("/readyz", role=None)
        if r.status == 200:
            break
        assert time.monotonic() < deadline, r
        time.sleep(0.2)
    # Workers whose Redis connection died with the restart reconnect instead
    # of answering 503.
    assert set(status_reads(fleet)) == {404}
    # The long-poll subscriber finds Redis again by itself.
    deadline = time.monotonic() + 10
    while ingest_metric(fleet, "promo_ingest_notify_subscriptions_total") <= subs or \
            ingest_metric(fleet, "promo_ingest_notify_subscribed") != 1:
        assert time.monotonic() < deadline, "the subscriber did not resubscribe"
        time.sleep(0.1)
    # And the fleet serves writes end to end again.
    r = fleet.post("/v1/points/obs-after-redis/earn", {"amount": 1, "reason": "x"}, role="admin")
    assert r.status == 202, r
    assert fleet.wait_request(r.json()["request_id"], timeout=60)["status"] == "SUCCEEDED"
