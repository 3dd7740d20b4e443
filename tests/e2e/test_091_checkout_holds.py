"""091 — checkout holds of time sales (DESIGN.md §4a).

An order with hold_ms is HELD: its units count against remaining until a
confirm makes it PLACED, a cancel gives them back, or its deadline passes
and it becomes EXPIRED with its units back. The log's time decides: the
processor produces an ExpireHold into the sale's partition once the deadline
has passed, so a hold lapses within a few seconds even when nothing else
arrives for its sale. Here: held units are never sold twice (SOLD_OUT while
they are held), a confirm after the deadline is REJECTED EXPIRED, a hold
lapses with no other traffic, a sale's default hold_ms holds plain orders,
and holds outstanding while their processor is SIGKILLed lapse after the
restart, with every copy of every result in promo.results byte for byte the
same (the replay gives the same outcomes). Invariants checked in MySQL: sold
+ held <= stock, sold = the PLACED units, held = the HELD units. Ids carry
the prefix "t91".
"""

import signal
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from client import ADMIN, Client, Pool, now_ms
from fleet import result_request_id


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def rejected(doc, reason):
    assert doc["status"] == "REJECTED" and doc["reason"] == reason, (reason, doc)
    return doc["result"]


def create_sale(c, sid, stock, limit):
    t = now_ms()
    ok(c.run("/v1/time-sales", {"sale_id": sid, "product_id": "sku-" + sid, "name": "sale " + sid,
                                "original_price": 30000, "sale_price": 19900, "stock": stock,
                                "per_user_limit": limit, "starts_at": t - 60000, "ends_at": t + 3600000}, key=ADMIN))


def order(c, sid, user, qty, oid, hold_ms=None):
    body = {"user_id": user, "quantity": qty, "order_id": oid}
    if hold_ms is not None:
        body["hold_ms"] = hold_ms
    return c.run("/v1/time-sales/%s/orders" % sid, body)


def check_mysql(fleet, sid):
    """The stock invariants on the read model; returns (stock, sold, held)."""
    stock, sold, held, expired = fleet.mysql_query(
        "SELECT stock, sold, held, expired_orders FROM time_sales WHERE sale_id = %s", (sid,))[0]
    by = dict(fleet.mysql_query("SELECT status, COALESCE(SUM(quantity), 0) FROM sale_orders WHERE sale_id = %s "
                                "GROUP BY status", (sid,)))
    assert sold + held <= stock, (stock, sold, held)
    assert sold == by.get("PLACED", 0) and held == by.get("HELD", 0), (sold, held, by)
    return stock, sold, held, expired


def wait_for(what, fn, timeout=30):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


def test_hold_lapses_without_traffic(fleet):
    c = Client(fleet.http_port)
    sid = "t91-a"
    create_sale(c, sid, 5, 5)
    h1 = ok(order(c, sid, "u1", 2, "h1", hold_ms=1500))
    assert h1["order_status"] == "HELD" and h1["held"] == 2 and h1["remaining"] == 3, h1
    deadline = h1["hold_expires_at"]
    h2 = ok(order(c, sid, "u2", 3, "h2", hold_ms=600000))
    assert h2["held"] == 5 and h2["remaining"] == 0 and h2["sold"] == 0, h2
    # Held units are not for sale.
    rejected(order(c, sid, "u3", 1, "p1"), "SOLD_OUT")
    r = ok(c.run("/v1/time-sales/%s/orders/h2/confirm" % sid, None))
    assert r["order_status"] == "PLACED" and r["sold"] == 3 and r["held"] == 2 and "hold_expires_at" not in r, r
    rejected(c.run("/v1/time-sales/%s/orders/h2/confirm" % sid, None), "NOT_HELD")
    status, doc, _ = c.get("/v1/time-sales/%s/orders/h1" % sid)
    assert status == 200 and doc["status"] == "HELD" and doc["hold_expires_at"] == deadline, (status, doc)

    # Nothing else arrives for this sale: the hold lapses by itself.
    doc = wait_for("h1 to lapse", lambda: (lambda st, d, _: d if st == 200 and d["status"] == "EXPIRED" else None)(
        *c.get("/v1/time-sales/%s/orders/h1" % sid)), timeout=30)
    late = now_ms() - deadline
    assert doc["hold_expires_at"] is None, doc
    assert late < 5000, "the hold lapsed %d ms after its deadline" % late
    print("hold lapsed and reached MySQL %d ms after its deadline" % late)
    exp = fleet.mysql_query("SELECT request_id, status, submitted_at FROM requests WHERE entity_key = %s "
                            "AND command_type = 'ExpireHold'", (sid,))
    assert len(exp) == 1 and exp[0][0].startswith("hold-exp-") and exp[0][1] == "SUCCEEDED", exp
    assert exp[0][2] >= deadline, exp
    rejected(c.run("/v1/time-sales/%s/orders/h1/confirm" % sid, None), "EXPIRED")
    rejected(c.run("/v1/time-sales/%s/orders/h1/cancel" % sid, None), "EXPIRED")
    # Its units are back: 5 - 3 sold.
    r = ok(order(c, sid, "u3", 1, "p1"))
    assert r["order_status"] == "PLACED" and r["remaining"] == 1 and r["expired_orders"] == 1, r

    # Cancelling a held order gives its units back at once.
    ok(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u4", "quantity": 1, "order_id": "h3",
                                                 "hold_ms": 600000}))
    rejected(order(c, sid, "u5", 1, "p2"), "SOLD_OUT")
    r = ok(c.run("/v1/time-sales/%s/orders/h3/cancel" % sid, None))
    assert r["order_status"] == "CANCELLED" and r["remaining"] == 1 and r["held"] == 0, r

    # A default hold: plain orders are held from the PATCH on.
    status, doc, _ = c.request("PATCH", "/v1/time-sales/" + sid, body={"hold_ms": 600000}, key=ADMIN)
    assert status == 202, (status, doc)
    r = ok(c.wait(doc["request_id"]))
    assert r["hold_ms"] == 600000
    t = now_ms()
    r = ok(order(c, sid, "u5", 1, "p3"))
    assert r["order_status"] == "HELD" and t + 600000 - 5000 <= r["hold_expires_at"] <= now_ms() + 600000, r
    rejected(order(c, sid, "u6", 1, "p4"), "SOLD_OUT")
    # Bad input: 400 naming the field.
    for body in ({"user_id": "u7", "quantity": 1, "hold_ms": 999}, {"user_id": "u7", "quantity": 1, "hold_ms": "1s"}):
        status, doc, _ = c.post("/v1/time-sales/%s/orders" % sid, body)
        assert status == 400 and doc["error"]["field"] == "hold_ms", (status, doc)

    wait_for("the sink", lambda: check_mysql(fleet, sid)[2] == 1)
    assert check_mysql(fleet, sid) == (5, 4, 1, 1)
    status, doc, _ = c.get("/v1/time-sales/" + sid)
    assert (doc["sold"], doc["held"], doc["remaining"]) == (4, 1, 0), doc


def read_results(fleet, key, timeout=60, want=None):
    """{request id: [raw value, ...]} of promo.results under this key."""
    cons = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": "t91-reader-%d" % now_ms(),
                     "enable.auto.commit": False})
    try:
        md = cons.list_topics("promo.results", timeout=10)
        cons.assign([TopicPartition("promo.results", p, OFFSET_BEGINNING)
                     for p in md.topics["promo.results"].partitions])
        got, idle = {}, time.time()
        deadline = time.time() + timeout
        while time.time() < deadline and (time.time() - idle < 3 or (want and not want(got))):
            for m in cons.consume(1000, 0.2):
                if m.error() or m.key() != key.encode():
                    continue
                idle = time.time()
                got.setdefault(result_request_id(m.value()), []).append(m.value())
        return got
    finally:
        cons.close()


def test_holds_lapse_across_a_sigkill(fleet, quick):
    c = Client(fleet.http_port)
    sid = "t91-kill"
    n = 20 if quick else 40
    create_sale(c, sid, n * 2, n * 2)
    pool = Pool(fleet.http_port, workers=16)
    # Holds of 3 s, and the processor SIGKILLed while they are outstanding
    # (some applied and checkpointed, some not yet).
    rids = pool.map(lambda cl, i: cl.submit("/v1/time-sales/%s/orders" % sid,
                                            {"user_id": "u%d" % i, "quantity": 2 if i % 4 == 0 else 1,
                                             "order_id": "k%03d" % i, "hold_ms": 3000}), range(n))
    fleet.kill("processor-timesale", signal.SIGKILL)
    time.sleep(4)  # every deadline passes while no processor runs
    fleet.start("processor-timesale")
    docs = pool.wait_all(rids, timeout=120)
    held = {d["result"]["order_id"]: d["result"] for d in docs.values()}
    assert all(r["order_status"] == "HELD" for r in held.values()), docs
    units = sum(r["quantity"] for r in held.values())

    # After the restart every hold lapses, none is sold, all units are back.
    def lapsed():
        rows = fleet.mysql_query("SELECT status, COUNT(*) FROM sale_orders WHERE sale_id = %s GROUP BY status",
                                 (sid,))
        return dict(rows) == {"EXPIRED": n} and check_mysql(fleet, sid)[3] == n
    wait_for("every hold to lapse", lapsed, timeout=60)
    assert check_mysql(fleet, sid) == (n * 2, 0, 0, n)
    rejected(c.run("/v1/time-sales/%s/orders/k000/confirm" % sid, None), "EXPIRED")
    r = ok(order(c, sid, "after", n * 2, "all"))
    assert r["sold"] == n * 2 and r["remaining"] == 0, (r, units)

    # The replay gave the same outcomes: every copy of a result is the same
    # bytes, holds and expiries alike, and each hold lapsed exactly once.
    results = read_results(fleet, sid, want=lambda got: sum(1 for r in got if r.startswith("hold-exp-")) >= n)
    for rid in rids:
        assert rid in results, rid
    expiries = [r for r in results if r.startswith("hold-exp-")]
    assert len(expiries) == n, len(expiries)
    copies = 0
    for rid, vals in results.items():
        assert all(v == vals[0] for v in vals), "%s: %d different copies" % (rid, len(set(vals)))
        copies += len(vals) - 1
    print("%d holds lapsed across the kill; %d repeated result copies, all identical" % (n, copies))
