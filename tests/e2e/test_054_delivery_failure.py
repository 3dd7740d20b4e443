"""054 — a command Kafka refuses is never answered 202, and leaves nothing.

DESIGN.md §4: a write is answered 202 only after Kafka has acknowledged the
command, and 503 with Retry-After when Kafka cannot take it. Here every
delivery to promo.point.cmd fails for certain: the broker refuses each
Produce to the topic (fleet.refuse_produce: MESSAGE_TOO_LARGE), so the
delivery report of every message is an error. Then:

- an earn with an Idempotency-Key and one without are each answered 503,
  error code KAFKA_UNAVAILABLE, with Retry-After;
- 20 concurrent earns over 4 users, with and without keys, so that several
  wait in one partition's gate behind a batch that fails (ingest/produce.c),
  are all answered 503 too;
- nothing of any of them is in a read model: no promo:req:<id> or
  promo:idem:<id> in Redis (ingest takes back its PENDING record and its
  claim), no MySQL `requests` row, no ledger entry;
- once the topic takes writes again, a barrier earn on each user (the same
  partition, so after anything of ours that reached the log) finds the
  balance as if the refused earns had never been sent;
- the refused Idempotency-Key then works as a fresh one: 202, SUCCEEDED, and
  applied once.

Ids carry the prefix "d54" so the tests can share a fleet.
"""

import json
import os
import sys
import time

from client import ADMIN, Client, Pool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import produce_command  # noqa: E402  (the reference direct producer)

TOPIC = "promo.point.cmd"
EARN = "/v1/points/%s/earn"
SEED = 100
BARRIER = 1000


def assert_unavailable(status, doc, hdrs):
    assert status == 503, (status, doc)
    assert doc["error"]["code"] == "KAFKA_UNAVAILABLE", doc
    retry = {k.lower(): v for k, v in hdrs.items()}.get("retry-after")
    assert retry is not None and retry.isdigit() and int(retry) >= 1, hdrs


def status_records(fleet, users):
    """{request id: status JSON} of every promo:req:* record in Redis whose
    entity is one of users."""
    found, cursor = {}, "0"
    while True:
        cursor, keys = fleet.redis("SCAN", cursor, "MATCH", "promo:req:*", "COUNT", 1000)
        if keys:
            for k, v in zip(keys, fleet.redis("MGET", *keys)):
                doc = json.loads(v) if v else {}
                if doc.get("entity_key") in users:
                    found[k[len("promo:req:"):]] = doc
        if cursor == "0":
            return found


def request_rows(fleet, users):
    marks = ",".join(["%s"] * len(users))
    return {r[0]: r[1] for r in fleet.mysql_query(
        "SELECT request_id, status FROM requests WHERE entity_key IN (%s)" % marks, tuple(users))}


def ledger(fleet, user):
    return fleet.mysql_query("SELECT seq, kind, delta, balance_after, request_id FROM point_ledger"
                             " WHERE user_id = %s ORDER BY seq", (user,))


def earn_until_accepted(c, user, amount, key, timeout=60):
    """An earn under key, sent again (the same key: safe) while ingest answers
    503, as a client told to retry does. Returns the outcome."""
    deadline = time.monotonic() + timeout
    while True:
        status, doc, hdrs = c.post(EARN % user, {"amount": amount, "reason": "d54"}, key=ADMIN,
                                   headers={"Idempotency-Key": key})
        if status == 202:
            assert doc["request_id"] == key, doc
            return c.wait(key)
        assert_unavailable(status, doc, hdrs)
        assert time.monotonic() < deadline, "the topic still refuses writes after %ss" % timeout
        time.sleep(0.2)


def wait_refusing(fleet, timeout=30):
    """Until the broker applies the topic's new limit: a command published
    straight to the topic (not through ingest, which is under test) fails
    with MSG_SIZE_TOO_LARGE. A probe accepted before that is harmless: it
    earns a point for a user of its own."""
    p = produce_command.producer(fleet.bootstrap_servers, **{"message.timeout.ms": 5000})
    deadline = time.monotonic() + timeout
    while True:
        topic, key, value, _ = produce_command.encode("point", "EarnPoints", {
            "user_id": "d54-probe", "amount": 1, "reason": "probe", "expires_at": None})
        try:
            produce_command.send(p, topic, key.encode(), value, timeout=10)
        except RuntimeError as e:
            assert "MSG_SIZE_TOO_LARGE" in str(e), e
            return
        assert time.monotonic() < deadline, "the broker still takes writes to %s" % TOPIC
        time.sleep(0.2)


def test_refused_delivery_is_503_and_leaves_nothing(fleet):
    c = Client(fleet.http_port)
    user = "d54-u"
    crowd = ["d54-c%d" % i for i in range(4)]
    users = [user] + crowd
    seeds = {}
    for u in users:
        doc = c.run(EARN % u, {"amount": SEED, "reason": "seed"}, key=ADMIN)
        assert doc["status"] == "SUCCEEDED" and doc["result"]["balance"] == SEED, doc
        seeds[u] = doc["request_id"]

    keyed = "d54-k1"
    crowd_keys = ["d54-ck%d" % i for i in range(10)]
    fleet.refuse_produce(TOPIC)
    try:
        wait_refusing(fleet)
        t0 = time.monotonic()
        status, doc, hdrs = c.post(EARN % user, {"amount": 7, "reason": "d54"}, key=ADMIN,
                                   headers={"Idempotency-Key": keyed})
        assert_unavailable(status, doc, hdrs)
        status, doc, hdrs = c.post(EARN % user, {"amount": 9, "reason": "d54"}, key=ADMIN)
        assert_unavailable(status, doc, hdrs)
        # A refused batch is answered at once, not after the message timeout.
        assert time.monotonic() - t0 < 10

        # Ingest took its claim and its PENDING record back before answering.
        assert fleet.redis("EXISTS", "promo:req:" + keyed, "promo:idem:" + keyed) == 0
        status, doc, _ = c.get("/v1/requests/" + keyed)
        assert status == 404, (status, doc)

        # Several writes per partition at once: most wait in a gate behind
        # a batch that fails, and each must get its own 503.
        def one(cl, i):
            hdrs = {"Idempotency-Key": crowd_keys[i // 2]} if i % 2 == 0 else None
            return cl.post(EARN % crowd[i % len(crowd)], {"amount": 1 + i, "reason": "d54"}, key=ADMIN,
                           headers=hdrs)

        answers = Pool(fleet.http_port, workers=20).map(one, range(20))
        for status, doc, hdrs in answers:
            assert_unavailable(status, doc, hdrs)
        for k in crowd_keys:
            assert fleet.redis("EXISTS", "promo:req:" + k, "promo:idem:" + k) == 0, k
    finally:
        fleet.accept_produce(TOPIC)

    # Every user's partition: a barrier behind anything of ours in the log.
    barriers = {u: earn_until_accepted(c, u, BARRIER, "d54-b-" + u) for u in users}
    for u, doc in barriers.items():
        assert doc["status"] == "SUCCEEDED", doc
        assert doc["result"]["balance"] == SEED + BARRIER, (u, doc)

    known = set(seeds.values()) | {"d54-b-" + u for u in users}
    assert set(status_records(fleet, users)) == known
    for k in [keyed] + crowd_keys:
        assert fleet.redis("EXISTS", "promo:idem:" + k) == 0, k
    # The sink may still be writing the barriers' rows: wait for them.
    deadline = time.monotonic() + 30
    while set(request_rows(fleet, users)) != known and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(request_rows(fleet, users)) == known
    for u in users:
        assert [r[1:4] for r in ledger(fleet, u)] == [("EARN", SEED, SEED), ("EARN", BARRIER, SEED + BARRIER)], u
        status, doc, _ = c.get("/v1/points/" + u)
        assert status == 200 and doc["balance"] == SEED + BARRIER, (u, doc)

    # The refused key was never used: it works now, once.
    status, doc, hdrs = c.post(EARN % user, {"amount": 7, "reason": "d54"}, key=ADMIN,
                               headers={"Idempotency-Key": keyed})
    assert status == 202 and doc["request_id"] == keyed, (status, doc)
    out = c.wait(keyed)
    assert out["status"] == "SUCCEEDED" and out["result"]["balance"] == SEED + BARRIER + 7, out
    status, doc, _ = c.post(EARN % user, {"amount": 7, "reason": "d54"}, key=ADMIN,
                            headers={"Idempotency-Key": keyed})
    assert status == 202 and doc["request_id"] == keyed, (status, doc)
    assert c.wait(keyed) == out
    deadline = time.monotonic() + 30
    while len(ledger(fleet, user)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = ledger(fleet, user)
    assert [r[1:] for r in rows] == [("EARN", SEED, SEED, seeds[user]),
                                     ("EARN", BARRIER, SEED + BARRIER, "d54-b-" + user),
                                     ("EARN", 7, SEED + BARRIER + 7, keyed)], rows
    assert request_rows(fleet, [user])[keyed] == "SUCCEEDED"
