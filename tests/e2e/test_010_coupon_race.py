"""010 — first come, first served: 100 coupons, 2,000+ concurrent requests from
1,000 users (half of them twice, some retrying with the same Idempotency-Key),
once undisturbed and once with the coupon processor killed with SIGKILL in the
middle of the stampede and restarted. Whatever happens, exactly 100 coupons
exist, in MySQL as over HTTP, no user holds two, and every other request was
rejected for the right reason."""

import random
import signal
import threading
import time

from client import ADMIN, Client, Pool, now_ms

QUANTITY = 100
USERS = 1000


def create_policy(fleet, policy_id):
    c = Client(fleet.http_port)
    t = now_ms()
    doc = c.run("/v1/coupon-policies", {
        "policy_id": policy_id, "name": "race " + policy_id, "discount_type": "FIXED",
        "discount_value": 1000, "min_order_amount": 0, "total_quantity": QUANTITY,
        "per_user_limit": 1, "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000,
        "valid_days": 7}, key=ADMIN)
    assert doc["status"] == "SUCCEEDED", doc


def stampede(fleet, policy_id, during=None):
    """Fires the requests; `during` runs once a quarter of them are in."""
    rng = random.Random(policy_id)
    plan = []  # (user, idempotency key or None)
    for u in range(USERS):
        plan.append(("u%04d" % u, None))
        if u % 10 != 0:
            plan.append(("u%04d" % u, None))          # the same user again: a new request
        if u % 10 == 0:
            key = "%s-retry-%d" % (policy_id, u)      # a client retry: the same request twice
            plan.append(("u%04d" % u, key))
            plan.append(("u%04d" % u, key))
    rng.shuffle(plan)
    assert len(plan) >= 2000

    pool = Pool(fleet.http_port, workers=64)
    done = [0]
    lock = threading.Lock()
    fired = threading.Event()

    def one(c, item):
        user, key = item
        headers = {"Idempotency-Key": key} if key else None
        rid = c.submit("/v1/coupon-policies/%s/issue" % policy_id, {"user_id": user}, headers=headers)
        with lock:
            done[0] += 1
            if during and done[0] == len(plan) // 4:
                fired.set()
        return rid

    side = None
    if during:
        side = threading.Thread(target=lambda: (fired.wait(120), during()))
        side.start()
    t0 = time.time()
    rids = pool.map(one, plan)
    submit_s = time.time() - t0
    if side:
        side.join()
    outcomes = pool.wait_all(sorted(set(rids)), timeout=240)
    settle_s = time.time() - t0
    print("\n%s: %d requests submitted in %.2f s (%.0f/s), all final after %.2f s"
          % (policy_id, len(plan), submit_s, len(plan) / submit_s, settle_s))
    return plan, rids, outcomes


def check(fleet, policy_id, plan, rids, outcomes):
    by_user = {}
    for (user, key), rid in zip(plan, rids):
        by_user.setdefault(user, set()).add(rid)
    # a retried Idempotency-Key is one request
    for (user, key), rid in zip(plan, rids):
        if key:
            assert rid == key
    winners = {}
    for user, ids in by_user.items():
        won = [r for r in ids if outcomes[r]["status"] == "SUCCEEDED"]
        assert len(won) <= 1, (user, won)
        if won:
            winners[user] = outcomes[won[0]]
        for r in ids:
            o = outcomes[r]
            if o["status"] == "SUCCEEDED":
                assert o["result"]["coupon_id"].startswith(policy_id + ":")
                continue
            assert o["status"] == "REJECTED", o
            assert o["reason"] == ("LIMIT_EXCEEDED" if won else "SOLD_OUT"), (user, o)
    assert len(winners) == QUANTITY
    coupon_ids = {w["result"]["coupon_id"] for w in winners.values()}
    assert coupon_ids == {"%s:%d" % (policy_id, i) for i in range(1, QUANTITY + 1)}

    with fleet.mysql() as db, db.cursor() as cur:
        cur.execute("SELECT coupon_id, user_id FROM coupons WHERE policy_id = %s", (policy_id,))
        rows = cur.fetchall()
        assert len(rows) == QUANTITY
        assert {r[1] for r in rows} == set(winners)
        assert {r[0] for r in rows} == coupon_ids
        cur.execute("SELECT issued, total_quantity FROM coupon_policies WHERE policy_id = %s", (policy_id,))
        assert cur.fetchone() == (QUANTITY, QUANTITY)
        cur.execute("SELECT status, COUNT(*) FROM requests WHERE entity_key = %s AND command_type = 'IssueCoupon'"
                    " GROUP BY status", (policy_id,))
        counts = dict(cur.fetchall())
        assert counts.get("SUCCEEDED") == QUANTITY
        assert counts.get("SUCCEEDED", 0) + counts.get("REJECTED", 0) == len(set(rids))

    c = Client(fleet.http_port)
    status, doc, _ = c.get("/v1/coupon-policies/" + policy_id)
    assert status == 200 and doc["issued"] == QUANTITY and doc["remaining"] == 0, doc


def test_coupon_race(fleet):
    create_policy(fleet, "race1")
    plan, rids, outcomes = stampede(fleet, "race1")
    check(fleet, "race1", plan, rids, outcomes)


def test_coupon_race_processor_killed(fleet):
    create_policy(fleet, "race2")

    def crash():
        fleet.kill("processor-coupon", signal.SIGKILL)
        time.sleep(0.5)
        fleet.start("processor-coupon")

    plan, rids, outcomes = stampede(fleet, "race2", during=crash)
    check(fleet, "race2", plan, rids, outcomes)
