"""032 — time sales end to end, over HTTP.

One sale with stock 6 and a per-user limit of 3 goes through every rule:
LIMIT_EXCEEDED, SOLD_OUT for a quantity above what is left (while some is
left), DUPLICATE_ORDER, an order without order_id (its request id becomes
the order id), a cancel that restocks and frees the user's limit, and a
second cancel answered ALREADY_CANCELLED; beside it NOT_STARTED, ENDED and
NOT_FOUND. Then the read endpoints (the sale's sold and remaining, each
order's status) and the time_sales and sale_orders rows in MySQL.

Commands on one sale share a partition: submitted one after another they are
applied in that order, so the test submits in bursts and waits once. Ids
carry the prefix "t32" so the test can share a fleet with the others.
"""

from client import ADMIN, Client, now_ms


def sale_body(sale_id, **kw):
    t = now_ms()
    body = {"sale_id": sale_id, "product_id": "sku-" + sale_id, "name": "sale " + sale_id,
            "original_price": 30000, "sale_price": 19900, "stock": 6, "per_user_limit": 3,
            "starts_at": t - 60000, "ends_at": t + 3600000}
    body.update(kw)
    return body


def order(sale_id, user, quantity, order_id=None):
    body = {"user_id": user, "quantity": quantity}
    if order_id is not None:
        body["order_id"] = order_id
    return ("/v1/time-sales/%s/orders" % sale_id, body)


def cancel(sale_id, order_id):
    return ("/v1/time-sales/%s/orders/%s/cancel" % (sale_id, order_id), None)


def run_in_order(c, steps):
    rids = [c.submit(path, body) for path, body in steps]
    return [c.wait(rid, 60) for rid in rids]


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def rejected(doc, reason):
    assert doc["status"] == "REJECTED" and doc["reason"] == reason, (reason, doc)
    return doc["result"]


def test_timesales_end_to_end(fleet):
    c = Client(fleet.http_port)
    s = "t32-sale"
    u1, u2, u3 = "t32-u1", "t32-u2", "t32-u3"
    t = now_ms()
    main = sale_body(s)
    for body in (main, sale_body("t32-later", starts_at=t + 3600000, ends_at=t + 7200000),
                 sale_body("t32-past", starts_at=t - 7200000, ends_at=t - 3600000)):
        r = ok(c.run("/v1/time-sales", body, key=ADMIN))
        assert (r["sold"], r["remaining"]) == (0, body["stock"]), r
        assert r["sale"]["sale_id"] == body["sale_id"] and r["sale"]["sale_price"] == 19900
    rejected(c.run("/v1/time-sales", dict(main, stock=1000), key=ADMIN), "ALREADY_EXISTS")
    status, doc, _ = c.post("/v1/time-sales", sale_body("t32-client"))
    assert status == 403 and doc["error"]["code"] == "FORBIDDEN", (status, doc)
    status, doc, _ = c.get("/v1/requests/t32-never-sent")
    assert status == 404, (status, doc)

    rejected(c.run(*order("t32-later", u1, 1, "t32-early")), "NOT_STARTED")
    rejected(c.run(*order("t32-past", u1, 1, "t32-late")), "ENDED")
    rejected(c.run(*order("t32-none", u1, 1, "t32-x")), "NOT_FOUND")
    rejected(c.run(*cancel("t32-none", "t32-x")), "NOT_FOUND")

    docs = run_in_order(c, [
        order(s, u1, 2, "t32-o1"),     # sold 2, left 4
        order(s, u1, 2, "t32-o2"),     # 2 + 2 > 3: LIMIT_EXCEEDED
        order(s, u2, 3, "t32-o3"),     # sold 5, left 1
        order(s, u3, 2, "t32-o4"),     # 2 > 1 left: SOLD_OUT, though not sold out
        order(s, u3, 1, "t32-o1"),     # DUPLICATE_ORDER
        order(s, u3, 1),               # no order_id: the request id names the order; sold 6
        cancel(s, "t32-o1"),           # restock 2, u1's limit freed
        cancel(s, "t32-o1"),           # ALREADY_CANCELLED
        cancel(s, "t32-o9"),           # NOT_FOUND
        order(s, u1, 2, "t32-o6"),     # 0 + 2 <= 3 now; sold 6 again
        order(s, "t32-u4", 1, "t32-o7"),  # nothing left: SOLD_OUT
    ])
    r = ok(docs[0])
    assert (r["order_id"], r["user_id"], r["quantity"], r["order_status"], r["sold"], r["remaining"]) == \
        ("t32-o1", u1, 2, "PLACED", 2, 4), r
    r = rejected(docs[1], "LIMIT_EXCEEDED")
    assert (r["sold"], r["remaining"]) == (2, 4), r
    r = ok(docs[2])
    assert (r["quantity"], r["sold"], r["remaining"]) == (3, 5, 1), r
    r = rejected(docs[3], "SOLD_OUT")
    assert (r["quantity"], r["remaining"]) == (2, 1), r
    rejected(docs[4], "DUPLICATE_ORDER")
    r = ok(docs[5])
    generated = docs[5]["request_id"]
    assert (r["order_id"], r["user_id"], r["quantity"], r["remaining"]) == (generated, u3, 1, 0), r
    r = ok(docs[6])
    assert (r["order_id"], r["order_status"], r["quantity"], r["user_id"], r["sold"], r["remaining"]) == \
        ("t32-o1", "CANCELLED", 2, u1, 4, 2), r
    r = rejected(docs[7], "ALREADY_CANCELLED")
    assert (r["sold"], r["remaining"]) == (4, 2), r
    rejected(docs[8], "NOT_FOUND")
    r = ok(docs[9])
    assert (r["order_id"], r["quantity"], r["sold"], r["remaining"]) == ("t32-o6", 2, 6, 0), r
    r = rejected(docs[10], "SOLD_OUT")
    assert (r["sold"], r["remaining"]) == (6, 0), r

    # Read endpoints.
    status, doc, _ = c.get("/v1/time-sales/" + s)
    assert status == 200, doc
    assert (doc["sale_id"], doc["stock"], doc["sold"], doc["remaining"], doc["per_user_limit"]) == \
        (s, 6, 6, 0, 3), doc
    assert (doc["product_id"], doc["original_price"], doc["sale_price"]) == ("sku-" + s, 30000, 19900)
    status, doc, _ = c.get("/v1/time-sales/t32-later")
    assert status == 200 and (doc["sold"], doc["remaining"]) == (0, 6), doc
    status, doc, _ = c.get("/v1/time-sales/t32-none")
    assert status == 404 and doc["error"]["code"] == "NOT_FOUND", doc
    want_orders = {"t32-o1": (u1, 2, "CANCELLED"), "t32-o3": (u2, 3, "PLACED"), generated: (u3, 1, "PLACED"),
                   "t32-o6": (u1, 2, "PLACED")}
    for oid, (user, qty, st) in want_orders.items():
        status, doc, _ = c.get("/v1/time-sales/%s/orders/%s" % (s, oid))
        assert status == 200, (oid, doc)
        assert (doc["sale_id"], doc["order_id"], doc["user_id"], doc["quantity"], doc["status"]) == \
            (s, oid, user, qty, st), doc
    for oid in ("t32-o2", "t32-o4", "t32-o9"):  # rejected orders leave nothing
        status, doc, _ = c.get("/v1/time-sales/%s/orders/%s" % (s, oid))
        assert status == 404, (oid, doc)

    # What MySQL holds.
    rows = fleet.mysql_query("SELECT sale_id, stock, sold, per_user_limit, sale_price FROM time_sales"
                             " WHERE sale_id LIKE 't32-%' ORDER BY sale_id")
    assert rows == (("t32-later", 6, 0, 3, 19900), ("t32-past", 6, 0, 3, 19900), (s, 6, 6, 3, 19900)), rows
    rows = fleet.mysql_query("SELECT order_id, user_id, quantity, status, placed_at FROM sale_orders"
                             " WHERE sale_id LIKE 't32-%'")
    assert {r[0]: tuple(r[1:4]) for r in rows} == want_orders
    placed_at = {r[0]: r[4] for r in rows}
    assert placed_at["t32-o1"] == docs[0]["submitted_at"] and placed_at[generated] == docs[5]["submitted_at"]
    rows = fleet.mysql_query("SELECT SUM(quantity) FROM sale_orders WHERE sale_id = %s AND status = 'PLACED'", (s,))
    assert rows[0][0] == 6
    rows = fleet.mysql_query("SELECT command_type, status, COUNT(*) FROM requests WHERE entity_key LIKE 't32-%'"
                             " GROUP BY command_type, status")
    assert {(r[0], r[1]): r[2] for r in rows} == {
        ("CreateTimeSale", "SUCCEEDED"): 3, ("CreateTimeSale", "REJECTED"): 1,
        ("PlaceOrder", "SUCCEEDED"): 4, ("PlaceOrder", "REJECTED"): 7,
        ("CancelOrder", "SUCCEEDED"): 1, ("CancelOrder", "REJECTED"): 3,
    }
