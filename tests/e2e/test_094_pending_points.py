"""094 — pending points and adjustments (DESIGN.md §4a).

An earn with available_at is pending: GET /v1/points/{user_id} shows it in
`pending`, not in `balance`, and a use cannot take it before then (the
command's time decides). Once the time has come the points become available
without any other traffic for the user (the processor produces a
ReleasePoints into the user's partition), with an EARN ledger entry. An
adjustment adds or takes points with a ledger entry of kind ADJUST and never
takes the balance below zero (INSUFFICIENT_BALANCE); its request records the
admin key that sent it. At the end, in MySQL: the balance is the sum of the
ledger and never went below zero. Ids carry the prefix "t94".
"""

import hashlib
import time

from client import ADMIN, Client, now_ms

ACTOR = "key-" + hashlib.sha256(ADMIN.encode()).hexdigest()[:16]


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def rejected(doc, reason):
    assert doc["status"] == "REJECTED" and doc["reason"] == reason, (reason, doc)
    return doc["result"]


def points(c, user):
    status, doc, _ = c.get("/v1/points/" + user)
    assert status == 200, (status, doc)
    return doc


def test_pending_points_and_adjust(fleet):
    c = Client(fleet.http_port)
    u = "t94-u1"
    ok(c.run("/v1/points/%s/earn" % u, {"amount": 1000, "reason": "signup"}, key=ADMIN))
    available_at = now_ms() + 2500
    r = ok(c.run("/v1/points/%s/earn" % u, {"amount": 500, "reason": "first order", "available_at": available_at},
                 key=ADMIN))
    assert (r["balance"], r["pending"], r["next_available_at"], r["next_available_amount"]) == \
        (1000, 500, available_at, 500), r
    assert "ledger" not in r, r  # nothing changed the balance yet
    doc = points(c, u)
    assert (doc["balance"], doc["pending"], doc["next_available_at"]) == (1000, 500, available_at), doc
    # Not usable before its time.
    r = rejected(c.run("/v1/points/%s/use" % u, {"amount": 1200, "order_id": "t94-o1"}), "INSUFFICIENT_BALANCE")
    assert r["balance"] == 1000 and r["pending"] == 500

    # No other traffic for the user: the points become available by themselves.
    deadline = time.time() + 30
    while True:
        doc = points(c, u)
        if doc["pending"] == 0:
            break
        assert time.time() < deadline, doc
        time.sleep(0.1)
    late = now_ms() - available_at
    assert doc["balance"] == 1500 and doc["next_available_at"] is None, doc
    assert late < 5000, "available %d ms after available_at" % late
    print("pending points available and in MySQL %d ms after available_at" % late)
    status, hist, _ = c.get("/v1/points/%s/history" % u)
    earn = hist["items"][0]
    assert (earn["kind"], earn["delta"], earn["balance_after"], earn["reason"]) == ("EARN", 500, 1500, "first order"), \
        hist
    assert earn["at"] >= available_at and earn["request_id"].startswith("points-rel-"), earn
    r = ok(c.run("/v1/points/%s/use" % u, {"amount": 1200, "order_id": "t94-o1"}))
    assert r["balance"] == 300

    # Adjustments: never below zero.
    r = ok(c.run("/v1/points/%s/adjust" % u, {"amount": 200, "reason": "goodwill"}, key=ADMIN))
    assert r["balance"] == 500 and r["actor"] == ACTOR, r
    assert [(e["kind"], e["delta"], e["reason"]) for e in r["ledger"]] == [("ADJUST", 200, "goodwill")], r
    rejected(c.run("/v1/points/%s/adjust" % u, {"amount": -501, "reason": "too much"}, key=ADMIN),
             "INSUFFICIENT_BALANCE")
    r = ok(c.run("/v1/points/%s/adjust" % u, {"amount": -500, "reason": "fraud"}, key=ADMIN))
    assert r["balance"] == 0 and r["ledger"][0]["kind"] == "ADJUST" and r["ledger"][0]["delta"] == -500, r
    rejected(c.run("/v1/points/%s/adjust" % u, {"amount": -1, "reason": "again"}, key=ADMIN), "INSUFFICIENT_BALANCE")
    rejected(c.run("/v1/points/t94-nobody/adjust", {"amount": -1, "reason": "none"}, key=ADMIN),
             "INSUFFICIENT_BALANCE")
    # A cancelled use gives back what it took, adjustments aside.
    r = ok(c.run("/v1/points/%s/cancel" % u, {"order_id": "t94-o1"}))
    assert r["balance"] == 1200, r

    # Bad input: 400 naming the field; a client key may not adjust.
    for path, body, field in (("adjust", {"amount": 0, "reason": "x"}, "amount"),
                              ("adjust", {"amount": 5}, "reason"),
                              ("adjust", {"amount": "5", "reason": "x"}, "amount"),
                              ("earn", {"amount": 5, "reason": "x", "available_at": "soon"}, "available_at"),
                              ("earn", {"amount": 5, "reason": "x", "available_at": 2000, "expires_at": 1000},
                               "expires_at")):
        status, doc, _ = c.post("/v1/points/%s/%s" % (u, path), body, key=ADMIN)
        assert status == 400 and doc["error"]["field"] == field, (path, body, status, doc)
    status, doc, _ = c.post("/v1/points/%s/adjust" % u, {"amount": 5, "reason": "x"})
    assert status == 403, (status, doc)

    # MySQL: the balance is the ledger's sum, never below zero; the audit trail.
    deadline = time.time() + 30
    while points(c, u)["balance"] != 1200:
        assert time.time() < deadline
        time.sleep(0.1)
    bal, pending = fleet.mysql_query("SELECT balance, pending FROM point_accounts WHERE user_id = %s", (u,))[0]
    total, lowest, n = fleet.mysql_query("SELECT SUM(delta), MIN(balance_after), COUNT(*) FROM point_ledger "
                                         "WHERE user_id = %s", (u,))[0]
    assert (bal, pending) == (1200, 0) and total == bal and lowest >= 0, (bal, total, lowest)
    seqs = [s for (s,) in fleet.mysql_query("SELECT seq FROM point_ledger WHERE user_id = %s ORDER BY seq", (u,))]
    assert seqs == list(range(1, n + 1))
    audit = fleet.mysql_query("SELECT status, actor FROM requests WHERE entity_key = %s AND "
                              "command_type = 'AdjustPoints' ORDER BY source_offset", (u,))
    assert [a[0] for a in audit] == ["SUCCEEDED", "REJECTED", "SUCCEEDED", "REJECTED"], audit
    assert all(a[1] == ACTOR for a in audit)
