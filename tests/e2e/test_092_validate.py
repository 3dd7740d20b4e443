"""092 — would this coupon apply to this cart? (DESIGN.md §4a, validation)

POST /v1/coupons/{coupon_id}/validate answers 200 at once from the read
models, with the redeem's rules and discount, and spends nothing: the same
coupon validated many times is then redeemed for the very discount the
validation announced, and only then does a validation say
ALREADY_REDEEMED. Every reason a redeem gives: NOT_FOUND (a 200, not a
404), NOT_OWNER, ALREADY_REDEEMED, EXPIRED, MIN_ORDER_NOT_MET; a percent
discount capped at max_discount; 400 naming the field; nothing is sent to
Kafka (no request is recorded). Ids carry the prefix "t92".
"""

import time

from client import ADMIN, Client, now_ms


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def validate(c, coupon_id, user, amount):
    t0 = time.monotonic()
    status, doc, _ = c.post("/v1/coupons/%s/validate" % coupon_id, {"user_id": user, "order_amount": amount})
    took = time.monotonic() - t0
    assert status == 200, (status, doc)
    assert took < 2, "validate took %.2f s" % took
    return doc


def wait_coupon(c, user, coupon_id, status="ISSUED", timeout=30):
    deadline = time.time() + timeout
    while True:
        code, doc, _ = c.get("/v1/users/%s/coupons" % user)
        if code == 200 and any(i["coupon_id"] == coupon_id and i["status"] == status for i in doc["items"]):
            return
        assert time.time() < deadline, (code, doc)
        time.sleep(0.1)


def test_validate(fleet):
    c = Client(fleet.http_port)
    pid = "t92-pct"
    t = now_ms()
    ok(c.run("/v1/coupon-policies", {
        "policy_id": pid, "name": "10 % off", "discount_type": "PERCENT", "discount_value": 10,
        "max_discount": 5000, "min_order_amount": 10000, "total_quantity": 10, "per_user_limit": 1,
        "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000, "valid_days": 7}, key=ADMIN))
    alice = ok(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": "t92-alice"}))["coupon_id"]
    bob = ok(c.run("/v1/coupon-policies/%s/issue" % pid, {"user_id": "t92-bob"}))["coupon_id"]
    wait_coupon(c, "t92-alice", alice)
    wait_coupon(c, "t92-bob", bob)
    requests_before = fleet.mysql_query("SELECT COUNT(*) FROM requests WHERE entity_key = %s", (pid,))[0][0]

    assert validate(c, alice, "t92-alice", 20000) == {"coupon_id": alice, "valid": True, "discount": 2000,
                                                       "reason": None}
    assert validate(c, alice, "t92-alice", 68000)["discount"] == 5000  # capped at max_discount
    assert validate(c, alice, "t92-alice", 9999) == {"coupon_id": alice, "valid": False, "discount": None,
                                                      "reason": "MIN_ORDER_NOT_MET"}
    assert validate(c, alice, "t92-bob", 20000)["reason"] == "NOT_OWNER"
    assert validate(c, pid + ":99", "t92-alice", 20000) == {"coupon_id": pid + ":99", "valid": False,
                                                             "discount": None, "reason": "NOT_FOUND"}
    assert validate(c, "t92-nope:1", "t92-alice", 20000)["reason"] == "NOT_FOUND"
    for _ in range(20):
        assert validate(c, bob, "t92-bob", 30000)["valid"] is True
    # Nothing was sent: no request was recorded for any of those.
    assert fleet.mysql_query("SELECT COUNT(*) FROM requests WHERE entity_key = %s", (pid,))[0][0] == requests_before

    # The redeem decides, and gives what the validation said.
    r = ok(c.run("/v1/coupons/%s/redeem" % alice, {"user_id": "t92-alice", "order_id": "t92-o1",
                                                  "order_amount": 20000}))
    assert r["discount"] == 2000
    wait_coupon(c, "t92-alice", alice, status="REDEEMED")
    assert validate(c, alice, "t92-alice", 20000)["reason"] == "ALREADY_REDEEMED"
    r = ok(c.run("/v1/coupons/%s/redeem" % bob, {"user_id": "t92-bob", "order_id": "t92-o2", "order_amount": 30000}))
    assert r["discount"] == 3000

    # Expiry, by ingest's clock.
    pid2 = "t92-short"
    t = now_ms()
    ok(c.run("/v1/coupon-policies", {
        "policy_id": pid2, "name": "short", "discount_type": "FIXED", "discount_value": 1000,
        "min_order_amount": 0, "total_quantity": 10, "per_user_limit": 1, "issue_starts_at": t - 60000,
        "issue_ends_at": t + 1500, "valid_until": t + 2000}, key=ADMIN))
    cid = ok(c.run("/v1/coupon-policies/%s/issue" % pid2, {"user_id": "t92-carol"}))["coupon_id"]
    wait_coupon(c, "t92-carol", cid)
    if now_ms() < t + 1900:
        assert validate(c, cid, "t92-carol", 500) == {"coupon_id": cid, "valid": True, "discount": 500,
                                                      "reason": None}  # never above the order
    while now_ms() < t + 2100:
        time.sleep(0.05)
    assert validate(c, cid, "t92-carol", 5000)["reason"] == "EXPIRED"

    # Bad input: 400 naming the field; no key: 401.
    for body, field in (({"order_amount": 1}, "user_id"), ({"user_id": "u", "order_amount": 0}, "order_amount"),
                        ({"user_id": "u", "order_amount": "1"}, "order_amount"),
                        ({"user_id": "u", "order_amount": 1, "x": 1}, "x")):
        status, doc, _ = c.post("/v1/coupons/%s/validate" % alice, body)
        assert status == 400 and doc["error"]["field"] == field, (body, status, doc)
    status, doc, _ = c.post("/v1/coupons/nocolon/validate", {"user_id": "u", "order_amount": 1})
    assert status == 400 and doc["error"]["field"] == "coupon_id", (status, doc)
    status, doc, _ = c.request("POST", "/v1/coupons/%s/validate" % alice, body={"user_id": "u", "order_amount": 1},
                               key="wrong-key")
    assert status == 401, (status, doc)
