"""031 — reward points end to end, over HTTP.

The first test walks one account through every rule: earning with and
without expiry (one lot expiring about two seconds ahead), using across lots
earliest expiry first, INSUFFICIENT_BALANCE, DUPLICATE_ORDER, a cancel that
puts back exactly what its use took (seen later in what expires),
ALREADY_CANCELLED and NOT_FOUND, and expiry applied by the first command after
the lot's time (its result carries the EXPIRE ledger entry, even though that
command itself is rejected). Then the read endpoints (balance and next
expiry, history page by page) and the rows in point_accounts and point_ledger.

The second fires 500 random earns, uses and cancels over 20 users from 32
threads and checks what must hold whatever the interleaving: every request
has one outcome, no balance below zero, every ledger gapless from seq 1 with
each balance_after the running sum of deltas, and MySQL, the results and
GET /v1/points/{user} agreeing on every balance.

Commands for one user go to one partition: submitted one after another, they
are applied in that order, so the first test submits in bursts and waits once.
Ids carry the prefix "p31" so the tests can share a fleet with the others.
"""

import random
import threading
import time

from client import ADMIN, Client, Pool, now_ms


def earn(user, amount, reason, expires_at=None):
    body = {"amount": amount, "reason": reason}
    if expires_at is not None:
        body["expires_at"] = expires_at
    return ("/v1/points/%s/earn" % user, body, ADMIN)


def use(user, amount, order_id):
    return ("/v1/points/%s/use" % user, {"amount": amount, "order_id": order_id}, None)


def cancel(user, order_id):
    return ("/v1/points/%s/cancel" % user, {"order_id": order_id}, None)


def run_in_order(c, steps):
    rids = [c.submit(path, body, key=key) for path, body, key in steps]
    return [c.wait(rid, 60) for rid in rids]


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def rejected(doc, reason):
    assert doc["status"] == "REJECTED" and doc["reason"] == reason, (reason, doc)
    return doc["result"]


def entries(result):
    """The ledger entries of a result as (seq, kind, delta, balance_after, order_id)."""
    return [(e["seq"], e["kind"], e["delta"], e["balance_after"], e["order_id"]) for e in result.get("ledger", [])]


def check_ledger_rows(fleet, user):
    """point_accounts and point_ledger of one user agree: seq 1..n, each
    balance_after the running sum, the account's balance the total. Returns
    (balance, rows)."""
    rows = fleet.mysql_query("SELECT seq, kind, delta, balance_after, order_id, reason, expires_at, at, request_id"
                             " FROM point_ledger WHERE user_id = %s ORDER BY seq", (user,))
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)), (user, rows)
    running = 0
    for r in rows:
        running += r[2]
        assert r[3] == running, (user, r)
        assert running >= 0, (user, r)
    acct = fleet.mysql_query("SELECT balance FROM point_accounts WHERE user_id = %s", (user,))
    balance = acct[0][0] if acct else 0
    assert balance == running, (user, balance, running)
    return balance, rows


def test_points_end_to_end(fleet):
    c = Client(fleet.http_port)
    u = "p31-walk"
    t = now_ms()
    soon = t + 2000          # lot A: gone two seconds from now
    far = t + 3600000        # lot B: an hour

    docs = run_in_order(c, [
        earn(u, 100, "welcome"),                 # seq 1: no expiry
        earn(u, 30, "promo-a", soon),            # seq 2: lot A
        earn(u, 50, "promo-b", far),             # seq 3: lot B
        use(u, 20, "p31-o1"),                    # seq 4: 20 from A (earliest expiry first)
        use(u, 50, "p31-o2"),                    # seq 5: 10 from A, 40 from B
        use(u, 10000, "p31-o3"),                 # INSUFFICIENT_BALANCE
        use(u, 5, "p31-o2"),                     # DUPLICATE_ORDER
        cancel(u, "p31-o1"),                     # seq 6: the 20 go back to A
        cancel(u, "p31-o1"),                     # ALREADY_CANCELLED
        cancel(u, "p31-nope"),                   # NOT_FOUND
    ])
    assert docs[-1]["submitted_at"] < soon, "machine too slow: lot A expired before the cancel"
    r = ok(docs[0])
    assert (r["amount"], r["balance"], r.get("next_expiry_at")) == (100, 100, None), r
    assert entries(r) == [(1, "EARN", 100, 100, None)]
    assert r["ledger"][0]["reason"] == "welcome" and r["ledger"][0]["expires_at"] is None
    r = ok(docs[1])
    assert (r["balance"], r["next_expiry_at"], r["next_expiry_amount"]) == (130, soon, 30), r
    assert entries(r) == [(2, "EARN", 30, 130, None)] and r["ledger"][0]["expires_at"] == soon
    r = ok(docs[2])
    assert (r["balance"], r["next_expiry_at"], r["next_expiry_amount"]) == (180, soon, 30), r
    r = ok(docs[3])
    assert entries(r) == [(4, "USE", -20, 160, "p31-o1")]
    assert (r["next_expiry_at"], r["next_expiry_amount"]) == (soon, 10), r   # 20 of A's 30 taken
    r = ok(docs[4])
    assert entries(r) == [(5, "USE", -50, 110, "p31-o2")]
    assert (r["next_expiry_at"], r["next_expiry_amount"]) == (far, 10), r    # A empty, 40 of B's 50 taken
    r = rejected(docs[5], "INSUFFICIENT_BALANCE")
    assert r["balance"] == 110 and entries(r) == []
    r = rejected(docs[6], "DUPLICATE_ORDER")
    assert r["balance"] == 110 and entries(r) == []
    r = ok(docs[7])
    assert (r["amount"], r["balance"]) == (20, 130)
    assert entries(r) == [(6, "CANCEL_USE", 20, 130, "p31-o1")]
    assert (r["next_expiry_at"], r["next_expiry_amount"]) == (soon, 20), r   # exactly A's 20 back
    assert rejected(docs[8], "ALREADY_CANCELLED")["balance"] == 130
    assert rejected(docs[9], "NOT_FOUND")["balance"] == 130

    status, doc, _ = c.get("/v1/points/%s" % u)
    assert status == 200, doc
    assert (doc["balance"], doc["next_expiry_at"], doc["next_expiry_amount"]) == (130, soon, 20), doc

    # Lot A's time passes; the next command expires its 20 first. That
    # command is rejected (it asks for more than is left), and its result
    # still carries the EXPIRE entry, because the expiry itself happened.
    deadline = time.time() + 10
    while now_ms() <= soon + 50:
        assert time.time() < deadline
        time.sleep(0.05)
    docs = run_in_order(c, [use(u, 1000, "p31-o4"), use(u, 5, "p31-o5")])
    r = rejected(docs[0], "INSUFFICIENT_BALANCE")
    assert entries(r) == [(7, "EXPIRE", -20, 110, None)], r
    assert r["balance"] == 110
    r = ok(docs[1])
    assert entries(r) == [(8, "USE", -5, 105, "p31-o5")]                     # from B, the only lot expiring
    assert (r["balance"], r["next_expiry_at"], r["next_expiry_amount"]) == (105, far, 5), r

    status, doc, _ = c.get("/v1/points/%s" % u)
    assert status == 200, doc
    assert (doc["user_id"], doc["balance"], doc["next_expiry_at"], doc["next_expiry_amount"]) == \
        (u, 105, far, 5), doc
    # Only an admin key earns points; a client key may not.
    status, doc, _ = c.post("/v1/points/%s/earn" % u, {"amount": 1000000, "reason": "self-service"})
    assert status == 403 and doc["error"]["code"] == "FORBIDDEN", (status, doc)
    status, doc, _ = c.get("/v1/points/p31-nobody")
    assert status == 200 and doc["balance"] == 0 and doc["next_expiry_at"] is None, doc

    # History: newest first, three at a time.
    want = [(8, "USE", -5, 105, "p31-o5"), (7, "EXPIRE", -20, 110, None), (6, "CANCEL_USE", 20, 130, "p31-o1"),
            (5, "USE", -50, 110, "p31-o2"), (4, "USE", -20, 160, "p31-o1"), (3, "EARN", 50, 180, None),
            (2, "EARN", 30, 130, None), (1, "EARN", 100, 100, None)]
    got, cursor, pages = [], None, 0
    while True:
        path = "/v1/points/%s/history?limit=3" % u + ("&cursor=%s" % cursor if cursor else "")
        status, doc, _ = c.get(path)
        assert status == 200, doc
        pages += 1
        assert len(doc["items"]) == (3 if doc["next"] else 2), doc
        got += [(i["seq"], i["kind"], i["delta"], i["balance_after"], i["order_id"]) for i in doc["items"]]
        cursor = doc["next"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3 and got == want, got
    status, doc, _ = c.get("/v1/points/%s/history" % u)
    assert status == 200 and len(doc["items"]) == 8 and doc["next"] is None
    assert doc["items"][5]["reason"] == "promo-b" and doc["items"][5]["expires_at"] == far

    # MySQL: the account and its ledger.
    balance, rows = check_ledger_rows(fleet, u)
    assert balance == 105
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == list(reversed(want))
    assert [r[5] for r in rows[:3]] == ["welcome", "promo-a", "promo-b"]
    assert [r[6] for r in rows[:3]] == [None, soon, far]
    assert rows[6][8] == docs[0]["request_id"]  # the EXPIRE entry belongs to the rejected request that applied it
    acct = fleet.mysql_query("SELECT balance, next_expiry_at, next_expiry_amount FROM point_accounts"
                             " WHERE user_id = %s", (u,))
    assert acct == ((105, far, 5),)


USERS = ["p31-c%02d" % i for i in range(20)]
N_REQUESTS = 500


def test_points_concurrent(fleet):
    rng = random.Random(31)
    uses = {u: [] for u in USERS}  # order ids of uses submitted, per user
    lock = threading.Lock()
    plan = []
    for i in range(N_REQUESTS):
        u = rng.choice(USERS)
        plan.append((i, u, rng.random(), rng.randint(1, 120)))

    def one(c, item):
        i, u, x, amount = item
        if x < 0.4:
            path, body, key = earn(u, amount, "r%d" % i)
        elif x < 0.8:
            order = "p31-u%d" % i
            with lock:
                uses[u].append(order)
            path, body, key = use(u, amount, order)
        else:
            with lock:
                known = list(uses[u])
            # mostly a use submitted earlier (maybe not applied yet, maybe
            # rejected, maybe cancelled already); sometimes an unknown order
            order = rng_local(i).choice(known) if known and x < 0.97 else "p31-unknown-%d" % i
            path, body, key = cancel(u, order)
        rid = c.submit(path, body, key=key)
        return rid, c.wait(rid, 90)

    t0 = time.time()
    out = Pool(fleet.http_port, workers=32).map(one, plan)
    print("\n%d point requests over %d users, all final in %.2f s" % (len(plan), len(USERS), time.time() - t0))

    allowed = {"UsePoints": {"INSUFFICIENT_BALANCE"}, "CancelPointUse": {"NOT_FOUND", "ALREADY_CANCELLED"},
               "EarnPoints": set()}
    by_user = {u: [] for u in USERS}
    assert len({rid for rid, _ in out}) == N_REQUESTS
    for (i, u, _, _), (rid, doc) in zip(plan, out):
        assert doc["request_id"] == rid and doc["entity_key"] == u
        if doc["status"] == "REJECTED":
            assert doc["reason"] in allowed[doc["command_type"]], doc
        else:
            assert doc["status"] == "SUCCEEDED", doc
        by_user[u].append(doc)
    kinds = {(doc["command_type"], doc["status"]) for _, doc in out}
    for ct in ("EarnPoints", "UsePoints", "CancelPointUse"):
        assert (ct, "SUCCEEDED") in kinds, kinds  # the mix exercised every command

    with_ledger = 0
    for u in USERS:
        # The results' ledger entries, put together, are the account's
        # ledger: seq 1..n once each, each balance_after the running sum,
        # and each result's balance the one after its last entry.
        ledger = {}
        for doc in by_user[u]:
            r = doc["result"]
            es = r.get("ledger", [])
            assert r["balance"] >= 0, doc
            if es:
                assert r["balance"] == es[-1]["balance_after"], doc
            if doc["status"] == "SUCCEEDED":
                kind = {"EarnPoints": "EARN", "UsePoints": "USE", "CancelPointUse": "CANCEL_USE"}[doc["command_type"]]
                assert [e["kind"] for e in es] == [kind], doc
                sign = -1 if kind == "USE" else 1
                assert es[0]["delta"] == sign * r["amount"], doc
            else:
                assert es == [], doc  # nothing expires in this test
            for e in es:
                assert e["seq"] not in ledger, (u, e)
                ledger[e["seq"]] = e
        assert sorted(ledger) == list(range(1, len(ledger) + 1)), u
        running = 0
        for s in sorted(ledger):
            running += ledger[s]["delta"]
            assert ledger[s]["balance_after"] == running >= 0, (u, ledger[s])
        with_ledger += len(ledger)

        balance, rows = check_ledger_rows(fleet, u)
        assert balance == running, u
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == \
            [(s, ledger[s]["kind"], ledger[s]["delta"], ledger[s]["balance_after"]) for s in sorted(ledger)]
        status, doc, _ = Client(fleet.http_port).get("/v1/points/%s" % u)
        assert status == 200 and doc["balance"] == balance, (u, doc, balance)
    assert with_ledger > N_REQUESTS // 2  # most requests changed something


def rng_local(i):
    return random.Random(i)
