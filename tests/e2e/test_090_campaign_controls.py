"""090 — the kill switch and edits of a running campaign (DESIGN.md §4a).

A pause sent in the middle of a concurrent stampede of issues: a control is a
command in the policy's partition, so every issue sent after the pause's own
202 came back is applied after it and is REJECTED PAUSED, and every issue
whose 202 came back before the pause was sent is applied before it and is
not affected. (Issues in flight while the pause was in flight may land on
either side: nothing orders them but the log.) Then resume, close (final),
PATCH below what was issued (BELOW_ISSUED) and above it, the same for a time
sale (BELOW_SOLD), 400s naming the field, 403 for a client key, and at the
end the invariants and the audit trail in MySQL: issued never above the
quantity, sold never above the stock, the state columns, and requests.actor
naming the admin key on every control. Ids carry the prefix "t90".
"""

import hashlib
import json
import threading
import time

from client import ADMIN, Client, Pool, now_ms

ACTOR = "key-" + hashlib.sha256(ADMIN.encode()).hexdigest()[:16]


def patch(c, path, body, key=ADMIN):
    return c.request("PATCH", path, body=body, key=key)


def submit_patch(c, path, body):
    status, doc, _ = patch(c, path, body)
    assert status == 202, (path, status, doc)
    return doc["request_id"]


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def rejected(doc, reason):
    assert doc["status"] == "REJECTED" and doc["reason"] == reason, (reason, doc)
    return doc["result"]


def policy_body(policy_id, quantity, per_user=1):
    t = now_ms()
    return {"policy_id": policy_id, "name": "campaign " + policy_id, "discount_type": "FIXED",
            "discount_value": 1000, "min_order_amount": 0, "total_quantity": quantity,
            "per_user_limit": per_user, "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000,
            "valid_days": 7}


def test_pause_in_the_middle_of_a_stampede(fleet, quick):
    c = Client(fleet.http_port)
    pid = "t90-stampede"
    users = 600 if quick else 2000
    ok(c.run("/v1/coupon-policies", policy_body(pid, 1000000), key=ADMIN))

    pool = Pool(fleet.http_port, workers=48)
    lock = threading.Lock()
    started = [0]
    pause = {}
    go_pause = threading.Event()

    def one(cl, u):
        sent = time.monotonic()
        rid = cl.submit("/v1/coupon-policies/%s/issue" % pid, {"user_id": "u%05d" % u})
        acked = time.monotonic()
        with lock:
            started[0] += 1
            if started[0] == users // 3:
                go_pause.set()
        return (rid, sent, acked)

    def pauser():
        go_pause.wait(120)
        pc = Client(fleet.http_port)
        pause["sent"] = time.monotonic()
        pause["rid"] = pc.submit("/v1/coupon-policies/%s/pause" % pid, None, key=ADMIN)
        pause["acked"] = time.monotonic()

    t = threading.Thread(target=pauser)
    t.start()
    issued = pool.map(one, range(users))
    t.join()
    assert "acked" in pause, "the pause was never sent"
    docs = pool.wait_all([rid for rid, _, _ in issued])
    p = ok(c.wait(pause["rid"]))
    assert p["state"] == "PAUSED" and p["actor"] == ACTOR, p

    before = after = overlap = 0
    for rid, sent, acked in issued:
        d = docs[rid]
        if sent > pause["acked"]:
            after += 1
            rejected(d, "PAUSED")
            assert d["result"]["state"] == "PAUSED", d
        elif acked < pause["sent"]:
            before += 1
            ok(d)
        else:
            overlap += 1
            assert d["status"] == "SUCCEEDED" or d["reason"] == "PAUSED", d
    assert before > 0 and after > 0, (before, after, overlap)
    succeeded = sum(1 for d in docs.values() if d["status"] == "SUCCEEDED")
    # The pause cut the stream once: the issued coupons are exactly the ones
    # before it in the log, numbered 1..n without a gap.
    serials = sorted(int(d["result"]["coupon_id"].split(":")[1]) for d in docs.values()
                     if d["status"] == "SUCCEEDED")
    assert serials == list(range(1, succeeded + 1))
    print("pause: %d issues before it, %d after, %d in flight with it; %d issued"
          % (before, after, overlap, succeeded))

    # Resume: issues go on; close: final.
    r = ok(c.run("/v1/coupon-policies/%s/resume" % pid, None, key=ADMIN))
    assert r["state"] == "ACTIVE"
    r = ok(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": "late-1"}))
    assert r["coupon_id"] == "%s:%d" % (pid, succeeded + 1)
    r = ok(c.run("/v1/coupon-policies/%s/close" % pid, None, key=ADMIN))
    assert r["state"] == "CLOSED"
    rejected(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": "late-2"}), "CLOSED")
    rejected(c.run("/v1/coupon-policies/%s/resume" % pid, None, key=ADMIN), "CLOSED")
    rejected(c.run("/v1/coupon-policies/%s/pause" % pid, None, key=ADMIN), "CLOSED")
    rejected(c.wait(submit_patch(c, "/v1/coupon-policies/" + pid, {"total_quantity": 5})), "CLOSED")
    # Coupons issued before the close still redeem.
    first = [d for d in docs.values() if d["status"] == "SUCCEEDED" and d["result"]["coupon_id"] == pid + ":1"][0]
    r = ok(c.run("/v1/coupons/%s:1/redeem" % pid,
                 {"user_id": first["result"]["user_id"], "order_id": "t90-o1", "order_amount": 5000}))
    assert r["discount"] == 1000 and r["state"] == "CLOSED"

    # What MySQL holds once the sink caught up.
    deadline = time.time() + 60
    while True:
        row = fleet.mysql_query("SELECT state, issued, total_quantity, redeemed FROM coupon_policies "
                                "WHERE policy_id = %s", (pid,))
        if row and row[0][0] == "CLOSED" and row[0][3] == 1:
            break
        assert time.time() < deadline, row
        time.sleep(0.2)
    state, issued_n, total, _ = row[0]
    count = fleet.mysql_query("SELECT COUNT(*) FROM coupons WHERE policy_id = %s", (pid,))[0][0]
    assert issued_n == count == succeeded + 1 <= total
    status, doc, _ = c.get("/v1/coupon-policies/" + pid)
    assert status == 200 and doc["state"] == "CLOSED" and doc["issued"] == succeeded + 1, doc
    audit = fleet.mysql_query("SELECT command_type, status, actor FROM requests WHERE entity_key = %s "
                              "AND actor IS NOT NULL ORDER BY source_offset", (pid,))
    assert [a[0] for a in audit] == ["PauseCouponPolicy", "ResumeCouponPolicy", "CloseCouponPolicy",
                                     "ResumeCouponPolicy", "PauseCouponPolicy", "UpdateCouponPolicy"], audit
    assert all(a[2] == ACTOR for a in audit), audit


def test_patch_policy(fleet):
    c = Client(fleet.http_port)
    pid = "t90-patch"
    ok(c.run("/v1/coupon-policies", policy_body(pid, 3, per_user=2), key=ADMIN))
    for u in ("a", "a", "b"):
        ok(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": u}))
    rejected(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": "c"}), "SOLD_OUT")
    # Below what was issued: refused, nothing changes.
    r = rejected(c.wait(submit_patch(c, "/v1/coupon-policies/" + pid, {"total_quantity": 2})), "BELOW_ISSUED")
    assert r["issued"] == 3 and r["remaining"] == 0
    t = now_ms()
    rejected(c.wait(submit_patch(c, "/v1/coupon-policies/" + pid, {"issue_ends_at": t - 120000})),
             "INVALID_WINDOW")
    r = ok(c.wait(submit_patch(c, "/v1/coupon-policies/" + pid,
                               {"total_quantity": 5, "per_user_limit": 1, "valid_until": t + 86400000 * 30})))
    assert r["policy"]["total_quantity"] == 5 and r["policy"]["per_user_limit"] == 1, r
    assert r["remaining"] == 2 and r["actor"] == ACTOR
    rejected(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": "a"}), "LIMIT_EXCEEDED")
    ok(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": "c"}))

    # Bad input: 400 naming the field, nothing sent; a client key: 403.
    for body, field in (({}, "total_quantity"), ({"total_quantity": 0}, "total_quantity"),
                        ({"per_user_limit": "2"}, "per_user_limit"), ({"name": "x"}, "name")):
        status, doc, _ = patch(c, "/v1/coupon-policies/" + pid, body)
        assert status == 400 and doc["error"]["field"] == field, (body, status, doc)
    status, doc, _ = patch(c, "/v1/coupon-policies/" + pid, {"total_quantity": 9}, key="dev-client-key")
    assert status == 403, (status, doc)
    status, doc, _ = c.post("/v1/coupon-policies/%s/pause" % pid, None)
    assert status == 403, (status, doc)
    status, doc, _ = c.post("/v1/coupon-policies/%s/pause" % pid, {"x": 1}, key=ADMIN)
    assert status == 400 and doc["error"]["field"] == "x", (status, doc)
    rejected(c.run("/v1/coupon-policies/t90-none/pause", None, key=ADMIN), "NOT_FOUND")

    deadline = time.time() + 30
    while True:
        row = fleet.mysql_query("SELECT total_quantity, per_user_limit, issued, state FROM coupon_policies "
                                "WHERE policy_id = %s", (pid,))
        if row and row[0][2] == 4:
            break
        assert time.time() < deadline, row
        time.sleep(0.2)
    assert row[0] == (5, 1, 4, "ACTIVE"), row


def test_time_sale_controls(fleet):
    c = Client(fleet.http_port)
    sid = "t90-sale"
    t = now_ms()
    ok(c.run("/v1/time-sales", {"sale_id": sid, "product_id": "sku-t90", "name": "t90 sale",
                                "original_price": 30000, "sale_price": 19900, "stock": 5, "per_user_limit": 2,
                                "starts_at": t - 60000, "ends_at": t + 3600000}, key=ADMIN))
    ok(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u1", "quantity": 2, "order_id": "o1"}))
    r = ok(c.run("/v1/time-sales/%s/pause" % sid, None, key=ADMIN))
    assert r["state"] == "PAUSED" and r["actor"] == ACTOR and r["sold"] == 2, r
    r = rejected(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u2", "quantity": 1, "order_id": "o2"}),
                 "PAUSED")
    assert r["state"] == "PAUSED"
    # Orders placed before the pause can still be cancelled.
    ok(c.run("/v1/time-sales/%s/orders/o1/cancel" % sid, None))
    ok(c.run("/v1/time-sales/%s/resume" % sid, None, key=ADMIN))
    ok(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u2", "quantity": 2, "order_id": "o3"}))
    ok(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u3", "quantity": 2, "order_id": "o4"}))
    r = rejected(c.wait(submit_patch(c, "/v1/time-sales/" + sid, {"stock": 3})), "BELOW_SOLD")
    assert r["sold"] == 4 and r["remaining"] == 1
    r = ok(c.wait(submit_patch(c, "/v1/time-sales/" + sid, {"stock": 4, "hold_ms": 60000})))
    assert r["sale"]["stock"] == 4 and r["remaining"] == 0 and r["hold_ms"] == 60000, r
    for body, field in (({}, "stock"), ({"hold_ms": 999}, "hold_ms"), ({"stock": "4"}, "stock")):
        status, doc, _ = patch(c, "/v1/time-sales/" + sid, body)
        assert status == 400 and doc["error"]["field"] == field, (body, status, doc)
    ok(c.run("/v1/time-sales/%s/close" % sid, None, key=ADMIN))
    rejected(c.run("/v1/time-sales/%s/orders" % sid, {"user_id": "u4", "quantity": 1}), "CLOSED")
    rejected(c.run("/v1/time-sales/%s/resume" % sid, None, key=ADMIN), "CLOSED")

    deadline = time.time() + 30
    while True:
        status, doc, _ = c.get("/v1/time-sales/" + sid)
        if status == 200 and doc.get("state") == "CLOSED":
            break
        assert time.time() < deadline, (status, doc)
        time.sleep(0.2)
    assert doc["stock"] == 4 and doc["sold"] == 4 and doc["remaining"] == 0 and doc["hold_ms"] == 60000, doc
    row = fleet.mysql_query("SELECT stock, sold, orders, cancelled_orders, state FROM time_sales WHERE sale_id = %s",
                            (sid,))[0]
    placed = fleet.mysql_query("SELECT COALESCE(SUM(quantity), 0) FROM sale_orders WHERE sale_id = %s "
                               "AND status = 'PLACED'", (sid,))[0][0]
    assert row == (4, 4, 3, 1, "CLOSED") and placed == 4, (row, placed)
    audit = fleet.mysql_query("SELECT command_type, actor FROM requests WHERE entity_key = %s AND actor IS NOT NULL "
                              "ORDER BY source_offset", (sid,))
    assert [a[0] for a in audit] == ["PauseTimeSale", "ResumeTimeSale", "UpdateTimeSale", "UpdateTimeSale",
                                     "CloseTimeSale", "ResumeTimeSale"], audit
    assert all(a[1] == ACTOR for a in audit)


def test_promoctl_sends_controls(fleet):
    """promoctl submit speaks the new commands too: a pause and a PATCH,
    straight to Kafka."""
    from test_080_promoctl import create_policy, ctl_ok
    pid = "t90-ctl"
    create_policy(fleet, pid)
    out, _ = ctl_ok(fleet, "submit", "--follow", "coupon",
                    '{"type": "PauseCouponPolicy", "policy_id": "%s"}' % pid)
    doc = json.loads(out.splitlines()[1])
    assert doc["status"] == "SUCCEEDED" and doc["result"]["state"] == "PAUSED", doc
    out, _ = ctl_ok(fleet, "submit", "--follow", "coupon",
                    '{"type": "UpdateCouponPolicy", "policy_id": "%s", "total_quantity": 50}' % pid)
    doc = json.loads(out.splitlines()[1])
    assert doc["status"] == "SUCCEEDED" and doc["result"]["policy"]["total_quantity"] == 50, doc

