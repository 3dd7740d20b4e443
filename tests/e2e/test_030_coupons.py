"""030 — the coupon domain end to end, over HTTP, one rule at a time.

Fixed and percent (capped) policies, validity as an absolute end, as N days
after issue, or both (the earlier wins); issuing until sold out with a
per-user limit of 2; admin-only creation (403 for a client key, 401 without
one); NOT_STARTED, ENDED and NOT_FOUND; every redeem rejection
(NOT_OWNER, MIN_ORDER_NOT_MET, ALREADY_REDEEMED, EXPIRED once a valid_until
just ahead has passed) and the discount of a successful one; cancelling a
redemption (ORDER_MISMATCH, success, NOT_REDEEMED after, and the coupon
redeemable again); the read endpoints (a policy's issued and remaining
counts, a user's coupons page by page). It ends by comparing the coupons and
coupon_policies rows in MySQL with what the test expects.

Commands on one policy are submitted one after another (each 202 comes after
Kafka acknowledged it, so they keep their order in the partition) and then
waited for together, which keeps the file fast. Ids carry the prefix "c30"
so the test can share a fleet with the others.
"""

import time

import pytest

from client import ADMIN, Client, now_ms

DAY_MS = 86400000


def policy_body(policy_id, **kw):
    t = now_ms()
    body = {"policy_id": policy_id, "name": "policy " + policy_id, "discount_type": "FIXED",
            "discount_value": 1000, "min_order_amount": 0, "total_quantity": 10, "per_user_limit": 1,
            "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000, "valid_days": 7}
    body.update(kw)
    return body


def run_in_order(c, steps):
    """Submits (path, body, key) steps one after another, then waits for
    each; returns the final request documents in step order."""
    rids = []
    for path, body, key in steps:
        rids.append(c.submit(path, body, key=key))
    return [c.wait(rid, 60) for rid in rids]


def issue(policy_id, user):
    return ("/v1/coupon-policies/%s/issue" % policy_id, {"user_id": user}, None)


def redeem(coupon_id, user, order_id, amount):
    return ("/v1/coupons/%s/redeem" % coupon_id, {"user_id": user, "order_id": order_id, "order_amount": amount},
            None)


def cancel(coupon_id, order_id):
    return ("/v1/coupons/%s/cancel" % coupon_id, {"order_id": order_id}, None)


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def rejected(doc, reason):
    assert doc["status"] == "REJECTED" and doc["reason"] == reason, (reason, doc)
    return doc["result"]


def test_coupons_end_to_end(fleet):
    c = Client(fleet.http_port)
    alice, bob, carol, dave, erin = ("c30-alice", "c30-bob", "c30-carol", "c30-dave", "c30-erin")

    # A policy whose coupons stop being valid 1.5 s from now: created and one
    # coupon issued first, so the rest of the test runs while it expires.
    t = now_ms()
    exp_until = t + 1500
    exp_create, exp_issue = run_in_order(c, [
        ("/v1/coupon-policies", policy_body("c30-exp", valid_until=exp_until, issue_ends_at=exp_until, valid_days=None), ADMIN),
        issue("c30-exp", erin)])
    ok(exp_create)
    exp_coupon = ok(exp_issue)
    assert exp_coupon["coupon_id"] == "c30-exp:1"
    assert exp_coupon["expires_at"] == exp_until
    assert exp_issue["submitted_at"] < exp_until, "machine too slow: the coupon was issued after it expired"

    fixed = policy_body("c30-fixed", discount_value=3000, min_order_amount=10000, total_quantity=3,
                        per_user_limit=2, valid_days=7)
    percent = policy_body("c30-pct", discount_type="PERCENT", discount_value=15, max_discount=2000,
                          total_quantity=10, per_user_limit=1, valid_until=t + 30 * DAY_MS, valid_days=None)
    later = policy_body("c30-later", issue_starts_at=t + 3600000, issue_ends_at=t + 7200000, valid_days=1)
    past = policy_body("c30-past", issue_starts_at=t - 7200000, issue_ends_at=t - 3600000, valid_days=1)
    both = policy_body("c30-both", min_order_amount=0, valid_days=1, valid_until=t + 30 * DAY_MS)
    for body in (fixed, percent, later, past, both):
        created = ok(c.run("/v1/coupon-policies", body, key=ADMIN))
        assert created["issued"] == 0 and created["remaining"] == body["total_quantity"], created
        assert created["policy"]["discount_type"] == body["discount_type"]
    # Only an admin key creates policies.
    status, doc, _ = c.post("/v1/coupon-policies", policy_body("c30-client"))
    assert status == 403 and doc["error"]["code"] == "FORBIDDEN", (status, doc)
    status, doc, _ = c.post("/v1/coupon-policies", policy_body("c30-nokey"), key="not-a-key")
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED", (status, doc)
    # ALREADY_EXISTS: a second create changes nothing
    rejected(c.run("/v1/coupon-policies", dict(fixed, discount_value=1), key=ADMIN), "ALREADY_EXISTS")

    # Issue until sold out: 3 coupons, at most 2 per user.
    docs = run_in_order(c, [issue("c30-fixed", alice), issue("c30-fixed", alice), issue("c30-fixed", alice),
                            issue("c30-fixed", bob), issue("c30-fixed", carol)])
    a1, a2 = ok(docs[0]), ok(docs[1])
    assert (a1["coupon_id"], a1["issued"], a1["remaining"]) == ("c30-fixed:1", 1, 2)
    assert (a2["coupon_id"], a2["issued"], a2["remaining"]) == ("c30-fixed:2", 2, 1)
    for r in (a1, a2):
        assert r["user_id"] == alice and r["coupon_status"] == "ISSUED"
        assert r["expires_at"] == r["issued_at"] + 7 * DAY_MS
    rejected(docs[2], "LIMIT_EXCEEDED")
    b1 = ok(docs[3])
    assert (b1["coupon_id"], b1["user_id"], b1["remaining"]) == ("c30-fixed:3", bob, 0)
    sold_out = rejected(docs[4], "SOLD_OUT")
    assert sold_out["issued"] == 3 and sold_out["remaining"] == 0

    rejected(c.run(*issue("c30-later", alice)), "NOT_STARTED")
    rejected(c.run(*issue("c30-past", alice)), "ENDED")
    rejected(c.run(*issue("c30-none", alice)), "NOT_FOUND")

    # Redeem: owner, minimum, discount, once.
    docs = run_in_order(c, [
        redeem("c30-fixed:1", bob, "c30-o-bob", 50000),        # not bob's
        redeem("c30-fixed:1", alice, "c30-o-small", 9999),     # below the 10,000 minimum
        redeem("c30-fixed:1", alice, "c30-o1", 25000),         # 3,000 off
        redeem("c30-fixed:1", alice, "c30-o2", 25000),         # used already
        redeem("c30-fixed:9", alice, "c30-o9", 25000),         # no such serial
        cancel("c30-fixed:2", "c30-o1"),                       # never redeemed
        cancel("c30-fixed:1", "c30-o-wrong"),                  # redeemed for another order
    ])
    rejected(docs[0], "NOT_OWNER")
    rejected(docs[1], "MIN_ORDER_NOT_MET")
    r = ok(docs[2])
    assert (r["coupon_id"], r["coupon_status"], r["discount"], r["order_id"], r["order_amount"]) == \
        ("c30-fixed:1", "REDEEMED", 3000, "c30-o1", 25000), r
    rejected(docs[3], "ALREADY_REDEEMED")
    rejected(docs[4], "NOT_FOUND")
    rejected(docs[5], "NOT_REDEEMED")
    rejected(docs[6], "ORDER_MISMATCH")
    rejected(c.run(*redeem("c30-none:1", alice, "c30-o3", 25000)), "NOT_FOUND")

    # Cancel the redemption: the coupon is ISSUED again and can be redeemed again.
    docs = run_in_order(c, [cancel("c30-fixed:1", "c30-o1"), cancel("c30-fixed:1", "c30-o1"),
                            redeem("c30-fixed:1", alice, "c30-o4", 10000)])
    r = ok(docs[0])
    assert (r["coupon_status"], r["order_id"], r["discount"]) == ("ISSUED", "c30-o1", 3000), r
    assert r["expires_at"] == a1["expires_at"]  # cancelling does not extend or shorten validity
    rejected(docs[1], "NOT_REDEEMED")
    r = ok(docs[2])
    assert (r["coupon_status"], r["discount"], r["order_id"]) == ("REDEEMED", 3000, "c30-o4"), r

    # Percent: 15 % of 10,000 is 1,500; 15 % of 50,000 is 7,500, capped at 2,000.
    docs = run_in_order(c, [issue("c30-pct", dave), issue("c30-pct", erin),
                            redeem("c30-pct:1", dave, "c30-o5", 10000),
                            redeem("c30-pct:2", erin, "c30-o6", 50000)])
    d1, e1 = ok(docs[0]), ok(docs[1])
    assert d1["coupon_id"] == "c30-pct:1" and e1["coupon_id"] == "c30-pct:2"
    assert d1["expires_at"] == percent["valid_until"]
    assert ok(docs[2])["discount"] == 1500
    assert ok(docs[3])["discount"] == 2000

    # Both validities: the earlier one (1 day after issue) wins. A fixed
    # discount above the order amount is cut to the amount.
    docs = run_in_order(c, [issue("c30-both", alice), redeem("c30-both:1", alice, "c30-o8", 600)])
    both1 = ok(docs[0])
    assert both1["expires_at"] == both1["issued_at"] + DAY_MS
    assert ok(docs[1])["discount"] == 600

    # The 1.5 s coupon: past its valid_until it is EXPIRED (wait for the
    # clock, not a fixed time; usually it has passed already).
    deadline = time.time() + 10
    while now_ms() <= exp_until + 50:
        assert time.time() < deadline
        time.sleep(0.05)
    rejected(c.run(*redeem("c30-exp:1", erin, "c30-o7", 50000)), "EXPIRED")

    # Read endpoints.
    status, doc, _ = c.get("/v1/coupon-policies/c30-fixed")
    assert status == 200, doc
    assert (doc["issued"], doc["remaining"], doc["total_quantity"], doc["per_user_limit"]) == (3, 0, 3, 2), doc
    assert (doc["discount_type"], doc["discount_value"], doc["min_order_amount"]) == ("FIXED", 3000, 10000)
    status, doc, _ = c.get("/v1/coupon-policies/c30-pct")
    assert status == 200 and (doc["issued"], doc["remaining"], doc["max_discount"]) == (2, 8, 2000), doc
    status, doc, _ = c.get("/v1/coupon-policies/c30-none")
    assert status == 404 and doc["error"]["code"] == "NOT_FOUND", doc

    status, doc, _ = c.get("/v1/users/%s/coupons" % alice)
    assert status == 200 and doc["next"] is None, doc
    got = [(i["coupon_id"], i["status"], i["order_id"], i["discount"]) for i in doc["items"]]
    assert got == [("c30-both:1", "REDEEMED", "c30-o8", 600), ("c30-fixed:1", "REDEEMED", "c30-o4", 3000),
                   ("c30-fixed:2", "ISSUED", None, None)], got
    assert doc["items"][1]["expires_at"] == a1["expires_at"]
    pages, cursor = [], None
    while True:
        status, page, _ = c.get("/v1/users/%s/coupons?limit=1" % alice + ("&cursor=" + cursor if cursor else ""))
        assert status == 200 and len(page["items"]) == 1, page
        pages.append(page["items"][0]["coupon_id"])
        cursor = page["next"]
        if cursor is None:
            break
        assert cursor == pages[-1] and len(pages) < 5
    assert pages == ["c30-both:1", "c30-fixed:1", "c30-fixed:2"], pages
    status, doc, _ = c.get("/v1/users/c30-nobody/coupons")
    assert status == 200 and doc == {"items": [], "next": None}, doc

    # What MySQL holds.
    want_coupons = {
        "c30-exp:1": ("c30-exp", erin, "ISSUED", None, None, exp_until),
        "c30-both:1": ("c30-both", alice, "REDEEMED", "c30-o8", 600, both1["expires_at"]),
        "c30-fixed:1": ("c30-fixed", alice, "REDEEMED", "c30-o4", 3000, a1["expires_at"]),
        "c30-fixed:2": ("c30-fixed", alice, "ISSUED", None, None, a2["expires_at"]),
        "c30-fixed:3": ("c30-fixed", bob, "ISSUED", None, None, b1["expires_at"]),
        "c30-pct:1": ("c30-pct", dave, "REDEEMED", "c30-o5", 1500, percent["valid_until"]),
        "c30-pct:2": ("c30-pct", erin, "REDEEMED", "c30-o6", 2000, percent["valid_until"]),
    }
    rows = fleet.mysql_query(
        "SELECT coupon_id, policy_id, user_id, status, order_id, discount, expires_at FROM coupons"
        " WHERE policy_id LIKE 'c30-%'")
    assert {r[0]: tuple(r[1:]) for r in rows} == want_coupons

    want_policies = {
        "c30-exp": ("FIXED", 1000, None, 0, 10, 1, exp_until, None, 1),
        "c30-fixed": ("FIXED", 3000, None, 10000, 3, 2, None, 7, 3),
        "c30-pct": ("PERCENT", 15, 2000, 0, 10, 1, percent["valid_until"], None, 2),
        "c30-later": ("FIXED", 1000, None, 0, 10, 1, None, 1, 0),
        "c30-past": ("FIXED", 1000, None, 0, 10, 1, None, 1, 0),
        "c30-both": ("FIXED", 1000, None, 0, 10, 1, both["valid_until"], 1, 1),
    }
    rows = fleet.mysql_query(
        "SELECT policy_id, discount_type, discount_value, max_discount, min_order_amount, total_quantity,"
        " per_user_limit, valid_until, valid_days, issued FROM coupon_policies WHERE policy_id LIKE 'c30-%'")
    assert {r[0]: tuple(r[1:]) for r in rows} == want_policies

    # Every request has its row, with the status the client saw.
    rows = fleet.mysql_query(
        "SELECT command_type, status, COUNT(*) FROM requests WHERE entity_key LIKE 'c30-%'"
        " GROUP BY command_type, status")
    counts = {(r[0], r[1]): r[2] for r in rows}
    assert counts == {
        ("CreateCouponPolicy", "SUCCEEDED"): 6, ("CreateCouponPolicy", "REJECTED"): 1,
        ("IssueCoupon", "SUCCEEDED"): 7, ("IssueCoupon", "REJECTED"): 5,
        ("RedeemCoupon", "SUCCEEDED"): 5, ("RedeemCoupon", "REJECTED"): 6,
        ("CancelRedemption", "SUCCEEDED"): 1, ("CancelRedemption", "REJECTED"): 3,
    }, counts


def test_policy_redeemed_count(fleet):
    c = Client(fleet.http_port)
    ok(c.run("/v1/coupon-policies", policy_body("c30r-count", total_quantity=5), key=ADMIN))
    coupon = ok(c.run(*issue("c30r-count", "c30r-frank")))["coupon_id"]
    ok(c.run(*redeem(coupon, "c30r-frank", "c30r-o8", 5000)))
    status, doc, _ = c.get("/v1/coupon-policies/c30r-count")
    assert status == 200 and doc["issued"] == 1
    assert doc["redeemed"] == 1, doc
