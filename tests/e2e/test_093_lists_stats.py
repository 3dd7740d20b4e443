"""093 — operators' lists and stats (DESIGN.md §4a).

GET /v1/coupon-policies and /v1/time-sales page through every policy and
sale by id (`{"items", "next"}`), filtered by state; a walk with limit=1
sees each exactly once, in order. GET .../{id}/stats: a policy's issued,
redeemed, cancelled redemptions, discount given and issues per minute, a
sale's orders, units sold and held, expired and cancelled orders and
revenue, each checked against what the test did and against the rows in
MySQL (the issues per minute add up to the coupons). 400 naming the query
parameter, 404 for an unknown entity. Ids carry the prefix "t93".
"""

import time

from client import ADMIN, Client, Pool, now_ms


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def get(c, path):
    status, doc, _ = c.get(path)
    assert status == 200, (path, status, doc)
    return doc


def walk(c, path, limit):
    """Every item of a list, page by page."""
    items, cursor, pages = [], None, 0
    while True:
        sep = "&" if "?" in path else "?"
        doc = get(c, path + sep + "limit=%d" % limit + ("&cursor=" + cursor if cursor else ""))
        assert len(doc["items"]) <= limit
        items += doc["items"]
        pages += 1
        cursor = doc["next"]
        if cursor is None:
            return items, pages
        assert cursor == doc["items"][-1]["policy_id" if "coupon-policies" in path else "sale_id"]


def wait_for(what, fn, timeout=30):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.1)


def test_policy_list_and_stats(fleet):
    c = Client(fleet.http_port)
    t = now_ms()
    pids = ["t93-p%d" % i for i in range(5)]
    for pid in pids:
        ok(c.run("/v1/coupon-policies", {
            "policy_id": pid, "name": "list " + pid, "discount_type": "FIXED", "discount_value": 1500,
            "min_order_amount": 0, "total_quantity": 100, "per_user_limit": 1, "issue_starts_at": t - 60000,
            "issue_ends_at": t + 3600000, "valid_days": 3}, key=ADMIN))
    ok(c.run("/v1/coupon-policies/t93-p1/pause", None, key=ADMIN))
    ok(c.run("/v1/coupon-policies/t93-p3/pause", None, key=ADMIN))
    ok(c.run("/v1/coupon-policies/t93-p4/close", None, key=ADMIN))

    # Issues, redemptions and cancellations on t93-p0.
    pool = Pool(fleet.http_port, workers=16)
    docs = pool.wait_all(pool.map(lambda cl, i: cl.submit("/v1/coupon-policies/t93-p0/issue",
                                                          {"user_id": "u%02d" % i}), range(30)))
    coupons = sorted((d["result"]["coupon_id"], d["result"]["user_id"]) for d in docs.values())
    assert len(coupons) == 30
    for cid, user in coupons[:5]:
        ok(c.run("/v1/coupons/%s/redeem" % cid, {"user_id": user, "order_id": "o-" + user, "order_amount": 10000}))
    for cid, user in coupons[:2]:
        ok(c.run("/v1/coupons/%s/cancel" % cid, {"order_id": "o-" + user}))

    stats = wait_for("the sink", lambda: (lambda d: d if d["cancelled_redemptions"] == 2 else None)(
        get(c, "/v1/coupon-policies/t93-p0/stats")))
    assert (stats["issued"], stats["remaining"], stats["redeemed"], stats["discount_total"]) == (30, 70, 3, 4500), stats
    assert stats["state"] == "ACTIVE"
    per_minute = stats["issued_per_minute"]
    assert sum(m["issued"] for m in per_minute) == 30, per_minute
    assert all(m["minute"] % 60000 == 0 for m in per_minute)
    assert [m["minute"] for m in per_minute] == sorted(m["minute"] for m in per_minute)
    rows = fleet.mysql_query("SELECT issued_at DIV 60000 * 60000, COUNT(*) FROM coupons WHERE policy_id = 't93-p0' "
                             "GROUP BY 1 ORDER BY 1")
    assert [(m["minute"], m["issued"]) for m in per_minute] == [tuple(r) for r in rows]
    row = fleet.mysql_query("SELECT issued, redeemed, discount_total FROM coupon_policies WHERE policy_id = 't93-p0'")
    redeemed = fleet.mysql_query("SELECT COUNT(*), COALESCE(SUM(discount), 0) FROM coupons WHERE policy_id = 't93-p0' "
                                 "AND status = 'REDEEMED'")[0]
    assert row[0] == (30, redeemed[0], redeemed[1]) and row[0][0] <= 100, (row, redeemed)
    # The policy's own answer agrees.
    p = get(c, "/v1/coupon-policies/t93-p0")
    assert (p["issued"], p["redeemed"], p["remaining"], p["state"]) == (30, 3, 70, "ACTIVE"), p

    # Lists: every policy once, in id order, whatever the page size.
    for limit in (1, 2, 100):
        items, pages = walk(c, "/v1/coupon-policies", limit)
        ids = [i["policy_id"] for i in items]
        assert ids == sorted(set(ids)), ids
        assert [i for i in ids if i.startswith("t93-")] == pids
        if limit == 1:
            assert pages == len(items)
    mine = {i["policy_id"]: i for i in walk(c, "/v1/coupon-policies", 100)[0] if i["policy_id"].startswith("t93-")}
    assert mine["t93-p0"]["issued"] == 30 and mine["t93-p0"]["remaining"] == 70
    for state, want in (("PAUSED", ["t93-p1", "t93-p3"]), ("CLOSED", ["t93-p4"]), ("ACTIVE", ["t93-p0", "t93-p2"])):
        items, _ = walk(c, "/v1/coupon-policies?state=" + state, 1)
        assert all(i["state"] == state for i in items), items
        assert [i["policy_id"] for i in items if i["policy_id"].startswith("t93-")] == want
    page = get(c, "/v1/coupon-policies?limit=2&cursor=t93-p1")
    assert [i["policy_id"] for i in page["items"]] == ["t93-p2", "t93-p3"] and page["next"] == "t93-p3", page

    for query, field in (("state=paused", "state"), ("limit=0", "limit"), ("cursor=a%20b", "cursor"),
                         ("limit=x", "limit")):
        status, doc, _ = c.get("/v1/coupon-policies?" + query)
        assert status == 400 and doc["error"]["field"] == field, (query, status, doc)
    status, doc, _ = c.get("/v1/coupon-policies/t93-none/stats")
    assert status == 404, (status, doc)


def test_sale_list_and_stats(fleet):
    c = Client(fleet.http_port)
    t = now_ms()
    sid = "t93-s0"
    for s in (sid, "t93-s1"):
        ok(c.run("/v1/time-sales", {"sale_id": s, "product_id": "sku", "name": "stats " + s,
                                    "original_price": 30000, "sale_price": 19900, "stock": 20, "per_user_limit": 5,
                                    "starts_at": t - 60000, "ends_at": t + 3600000}, key=ADMIN))
    ok(c.run("/v1/time-sales/t93-s1/pause", None, key=ADMIN))
    for i in range(3):
        ok(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u%d" % i, "quantity": 2, "order_id": "p%d" % i}))
    ok(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u3", "quantity": 3, "order_id": "h1",
                                                 "hold_ms": 1000}))
    ok(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u4", "quantity": 4, "order_id": "h2",
                                                 "hold_ms": 600000}))
    ok(c.run("/v1/time-sales/%s/orders/p0/cancel" % sid, None))

    # h1 lapses by itself: 5 orders, 4 units sold, 4 held, 1 expired, 1 cancelled.
    stats = wait_for("h1 to lapse", lambda: (lambda d: d if d["expired"] == 1 else None)(
        get(c, "/v1/time-sales/%s/stats" % sid)))
    assert stats == {"sale_id": sid, "state": "ACTIVE", "stock": 20, "orders": 5, "units_sold": 4, "units_held": 4,
                     "expired": 1, "cancelled": 1, "revenue": 4 * 19900, "remaining": 12}, stats
    row = fleet.mysql_query("SELECT SUM(IF(status = 'PLACED', quantity, 0)), SUM(IF(status = 'HELD', quantity, 0)), "
                            "COUNT(*) FROM sale_orders WHERE sale_id = %s", (sid,))[0]
    assert tuple(int(x) for x in row) == (4, 4, 5), row

    items, _ = walk(c, "/v1/time-sales", 1)
    ids = [i["sale_id"] for i in items]
    assert ids == sorted(set(ids)) and [i for i in ids if i.startswith("t93-")] == [sid, "t93-s1"]
    paused = [i for i in walk(c, "/v1/time-sales?state=PAUSED", 3)[0] if i["sale_id"].startswith("t93-")]
    assert [(i["sale_id"], i["state"]) for i in paused] == [("t93-s1", "PAUSED")]
    mine = [i for i in items if i["sale_id"] == sid][0]
    assert (mine["sold"], mine["held"], mine["remaining"]) == (4, 4, 12), mine
    status, doc, _ = c.get("/v1/time-sales?state=OPEN")
    assert status == 400 and doc["error"]["field"] == "state", (status, doc)
    status, doc, _ = c.get("/v1/time-sales/t93-none/stats")
    assert status == 404, (status, doc)
