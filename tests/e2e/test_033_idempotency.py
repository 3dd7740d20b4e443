"""033 — idempotency as DESIGN.md §7 states it, over HTTP, in every domain.

For one write of each domain (a coupon issue, a point use, a time-sale
order):
- the same Idempotency-Key with the same body, sent twice, is one request:
  one request id, one effect (one coupon, one ledger entry, one order), and
  the same result both times, byte for byte on promo.results;
- the same key with a different body changes nothing: over HTTP it is
  refused at once (422 IDEMPOTENCY_KEY_REUSED, field Idempotency-Key);
  published straight to Kafka under that request id, as a direct producer
  would, it is answered with a REJECTED IDEMPOTENCY_KEY_REUSED result on
  promo.results; either way GET /v1/requests/{id} and MySQL keep the first
  result and the state is untouched (a later command on the same entity
  shows it).
A request that HTTP validation rejected (400) was never sent, so the same key
may be used again and then succeeds. The MySQL sink is idempotent too: old
results published again to promo.results (as a replay after a crash would)
change no row. Last, the same key on another entity (another partition)
must not apply a second command either.

test_reused_key_refused_at_once is the HTTP contract in detail: an earn of
7, then 70 under the same key, then the same key on another path and with
the same JSON spelt differently, are each refused with 422 and never reach
Kafka (no second result for the key on promo.results); only the exact
repeat is 202 again. The balance is 7 and the request's status the first
one's.

promo.results is read with confluent_kafka from the start of every partition
and decoded with python3-avro against schemas/result.avsc after the 5-byte
Confluent header. Ids carry the prefix "i33" so the tests can share a fleet.
"""

import io
import json
import os
import sys
import threading
import time
import urllib.request
import uuid

import avro.io
import avro.schema
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from client import ADMIN, Client, now_ms

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = "promo.results"

sys.path.insert(0, os.path.join(ROOT, "examples"))
import produce_command  # noqa: E402  (the reference direct producer)


class Results:
    """Every message of promo.results, read from the beginning and kept by
    request id as (raw value, decoded record, partition)."""

    def __init__(self, bootstrap):
        with open(os.path.join(ROOT, "schemas", "result.avsc")) as f:
            self.reader = avro.io.DatumReader(avro.schema.parse(f.read()))
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "i33-" + uuid.uuid4().hex,
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        md = self.consumer.list_topics(RESULTS, timeout=10)
        self.consumer.assign([TopicPartition(RESULTS, p, OFFSET_BEGINNING) for p in md.topics[RESULTS].partitions])
        self.by_request = {}

    def close(self):
        self.consumer.close()

    def decode(self, value):
        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == 4, value[:5]
        return self.reader.read(avro.io.BinaryDecoder(io.BytesIO(value[5:])))

    def wait(self, request_id, pred, timeout=30):
        """Reads until pred(list of (raw, record, partition) for request_id) holds;
        returns that list."""
        deadline = time.time() + timeout
        while True:
            got = self.by_request.get(request_id, [])
            if pred(got):
                return got
            if time.time() > deadline:
                raise AssertionError("promo.results: %s has %r" % (request_id, [r for _, r, _ in got]))
            for m in self.consumer.consume(500, 0.2):
                # Only this file's entities: the other tests leave thousands
                # of results, and decoding is the slow part.
                if m.error() or not (m.key() or b"").startswith(b"i33-"):
                    continue
                rec = self.decode(m.value())
                assert m.key().decode() == rec["entity_key"]
                self.by_request.setdefault(rec["request_id"], []).append((m.value(), rec, m.partition()))


@pytest.fixture(scope="module")
def results(fleet):
    r = Results(fleet.bootstrap_servers)
    yield r
    r.close()


def ok(doc):
    assert doc["status"] == "SUCCEEDED" and doc["reason"] is None, doc
    return doc["result"]


def post_with_key(c, path, body, key, role_key=None):
    status, doc, hdrs = c.post(path, body, key=role_key, headers={"Idempotency-Key": key})
    assert status == 202, (status, doc)
    assert doc["request_id"] == key and doc["status"] == "PENDING", doc
    assert hdrs.get("Location") == "/v1/requests/" + key
    return doc


def same_key_twice(c, results, path, body, key, role_key=None):
    """Sends one body under one key twice back to back (a client retrying a
    request in flight) and once more after it is final (retrying a lost
    answer); checks one request id and one result, the same every time over
    HTTP and byte for byte on promo.results. Returns the request document."""
    post_with_key(c, path, body, key, role_key)
    post_with_key(c, path, body, key, role_key)
    first = c.wait(key)
    post_with_key(c, path, body, key, role_key)
    copies = results.wait(key, lambda got: len(got) >= 3)
    assert len({raw for raw, _, _ in copies}) == 1, "a repeat must return the first result byte for byte"
    assert copies[0][1]["status"] == "SUCCEEDED"
    assert c.wait(key) == first
    return first


def assert_key_reused(status, doc):
    assert status == 422, (status, doc)
    assert doc["error"]["code"] == "IDEMPOTENCY_KEY_REUSED", doc
    assert doc["error"]["field"] == "Idempotency-Key", doc


def direct_send(fleet, domain, record, fields, request_id):
    """Publishes one command straight to Kafka, as a direct producer does."""
    topic, key, value, _ = produce_command.encode(domain, record, fields, request_id=request_id)
    # One request in flight: the dev broker needs it (docs/configuration.md).
    p = produce_command.producer(fleet.bootstrap_servers, **{"max.in.flight.requests.per.connection": 1})
    produce_command.send(p, topic, key.encode(), value)


def reused(c, results, path, other_body, key, entity, fleet, direct, role_key=None):
    """The same key with another body: refused at once over HTTP; the same
    command published straight to Kafka under that request id (direct =
    (domain, record, fields)) is answered on promo.results with
    IDEMPOTENCY_KEY_REUSED by the processor."""
    status, doc, _ = c.post(path, other_body, key=role_key, headers={"Idempotency-Key": key})
    assert_key_reused(status, doc)
    direct_send(fleet, *direct, key)
    got = results.wait(key, lambda got: any(r["status"] == "REJECTED" for _, r, _ in got))
    rej = [r for _, r, _ in got if r["status"] == "REJECTED"]
    assert len(rej) == 1, rej
    assert (rej[0]["reason"], rej[0]["entity_key"]) == ("IDEMPOTENCY_KEY_REUSED", entity), rej[0]


def request_row(fleet, key):
    rows = fleet.mysql_query("SELECT status, reason, result FROM requests WHERE request_id = %s", (key,))
    assert len(rows) == 1, rows
    return rows[0][0], rows[0][1], json.loads(rows[0][2])


def test_coupon_issue_idempotent(fleet, results):
    c = Client(fleet.http_port)
    t = now_ms()
    pol = "i33-pol"
    ok(c.run("/v1/coupon-policies", {
        "policy_id": pol, "name": "idempotent", "discount_type": "FIXED", "discount_value": 500,
        "total_quantity": 10, "per_user_limit": 5, "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000,
        "valid_days": 3}, key=ADMIN))
    path = "/v1/coupon-policies/%s/issue" % pol
    key = "i33-k-issue"

    first = same_key_twice(c, results, path, {"user_id": "i33-a"}, key)
    assert ok(first)["coupon_id"] == pol + ":1"
    reused(c, results, path, {"user_id": "i33-b"}, key, pol, fleet,
           ("coupon", "IssueCoupon", {"policy_id": pol, "user_id": "i33-b"}))
    # A later command on the policy: serial 2, so the reuse issued nothing.
    assert ok(c.run(path, {"user_id": "i33-c"}))["coupon_id"] == pol + ":2"

    assert c.wait(key) == first
    assert request_row(fleet, key) == ("SUCCEEDED", None, first)
    rows = fleet.mysql_query("SELECT coupon_id, user_id FROM coupons WHERE policy_id = %s ORDER BY coupon_id", (pol,))
    assert rows == ((pol + ":1", "i33-a"), (pol + ":2", "i33-c")), rows
    assert fleet.mysql_query("SELECT issued FROM coupon_policies WHERE policy_id = %s", (pol,)) == ((2,),)


def test_point_use_idempotent(fleet, results):
    c = Client(fleet.http_port)
    u = "i33-pts"
    ok(c.run("/v1/points/%s/earn" % u, {"amount": 100, "reason": "seed"}, key=ADMIN))
    path = "/v1/points/%s/use" % u
    key = "i33-k-use"

    first = same_key_twice(c, results, path, {"amount": 30, "order_id": "i33-po1"}, key)
    assert ok(first)["balance"] == 70
    reused(c, results, path, {"amount": 40, "order_id": "i33-po2"}, key, u, fleet,
           ("point", "UsePoints", {"user_id": u, "amount": 40, "order_id": "i33-po2"}))
    assert ok(c.run(path, {"amount": 1, "order_id": "i33-po3"}))["balance"] == 69

    # An earn, the admin's write, under a key too.
    ekey = "i33-k-earn"
    first_earn = same_key_twice(c, results, "/v1/points/%s/earn" % u, {"amount": 11, "reason": "bonus"}, ekey,
                                role_key=ADMIN)
    assert ok(first_earn)["balance"] == 80
    reused(c, results, "/v1/points/%s/earn" % u, {"amount": 12, "reason": "bonus"}, ekey, u, fleet,
           ("point", "EarnPoints", {"user_id": u, "amount": 12, "reason": "bonus"}), role_key=ADMIN)
    assert ok(c.run(path, {"amount": 1, "order_id": "i33-po4"}))["balance"] == 79

    assert c.wait(key) == first and c.wait(ekey) == first_earn
    assert request_row(fleet, key) == ("SUCCEEDED", None, first)
    assert request_row(fleet, ekey) == ("SUCCEEDED", None, first_earn)
    rows = fleet.mysql_query("SELECT seq, kind, delta, balance_after, order_id, request_id FROM point_ledger"
                             " WHERE user_id = %s ORDER BY seq", (u,))
    assert [r[:5] for r in rows] == [(1, "EARN", 100, 100, None), (2, "USE", -30, 70, "i33-po1"),
                                     (3, "USE", -1, 69, "i33-po3"), (4, "EARN", 11, 80, None),
                                     (5, "USE", -1, 79, "i33-po4")], rows
    assert rows[1][5] == key and rows[3][5] == ekey
    assert fleet.mysql_query("SELECT balance FROM point_accounts WHERE user_id = %s", (u,)) == ((79,),)


def test_timesale_order_idempotent(fleet, results):
    c = Client(fleet.http_port)
    t = now_ms()
    sale = "i33-sale"
    ok(c.run("/v1/time-sales", {
        "sale_id": sale, "product_id": "sku-i33", "name": "idempotent", "original_price": 1000,
        "sale_price": 700, "stock": 10, "per_user_limit": 5, "starts_at": t - 60000, "ends_at": t + 3600000},
        key=ADMIN))
    path = "/v1/time-sales/%s/orders" % sale
    key = "i33-k-order"

    first = same_key_twice(c, results, path, {"user_id": "i33-t", "quantity": 2, "order_id": "i33-so1"}, key)
    assert (ok(first)["sold"], ok(first)["remaining"]) == (2, 8)
    reused(c, results, path, {"user_id": "i33-t", "quantity": 3, "order_id": "i33-so1"}, key, sale, fleet,
           ("timesale", "PlaceOrder", {"sale_id": sale, "user_id": "i33-t", "quantity": 3, "order_id": "i33-so1"}))
    assert ok(c.run(path, {"user_id": "i33-t", "quantity": 1, "order_id": "i33-so2"}))["sold"] == 3

    assert c.wait(key) == first
    assert request_row(fleet, key) == ("SUCCEEDED", None, first)
    rows = fleet.mysql_query("SELECT order_id, quantity, status FROM sale_orders WHERE sale_id = %s ORDER BY order_id",
                             (sale,))
    assert rows == (("i33-so1", 2, "PLACED"), ("i33-so2", 1, "PLACED")), rows
    assert fleet.mysql_query("SELECT sold FROM time_sales WHERE sale_id = %s", (sale,)) == ((3,),)


def test_rejected_by_validation_then_retried(fleet):
    c = Client(fleet.http_port)
    t = now_ms()
    sale = "i33-sale400"
    ok(c.run("/v1/time-sales", {
        "sale_id": sale, "product_id": "sku-i33", "name": "retry", "original_price": 1000, "sale_price": 700,
        "stock": 10, "per_user_limit": 5, "starts_at": t - 60000, "ends_at": t + 3600000}, key=ADMIN))
    key = "i33-k-400"
    path = "/v1/time-sales/%s/orders" % sale
    for bad, field in (({"user_id": "i33-v", "quantity": 0}, "quantity"),
                       ({"user_id": "not an id!", "quantity": 1}, "user_id"),
                       ({"user_id": "i33-v", "quantity": 1, "colour": "red"}, "colour")):
        status, doc, _ = c.post(path, bad, headers={"Idempotency-Key": key})
        assert status == 400 and doc["error"]["field"] == field, (status, doc)
        status, doc, _ = c.get("/v1/requests/" + key)
        assert status == 404, doc  # nothing was sent
    status, doc, _ = c.post(path, {"user_id": "i33-v", "quantity": 1}, headers={"Idempotency-Key": key})
    assert status == 202 and doc["request_id"] == key, doc
    r = ok(c.wait(key))
    assert (r["order_id"], r["quantity"], r["sold"]) == (key, 1, 1), r

    pkey = "i33-k-400p"
    status, doc, _ = c.post("/v1/points/i33-v/use", {"amount": -5, "order_id": "i33-vo"},
                            headers={"Idempotency-Key": pkey})
    assert status == 400 and doc["error"]["field"] == "amount", doc
    status, doc, _ = c.post("/v1/points/i33-v/earn", {"amount": 5, "reason": "retry"}, key=ADMIN,
                            headers={"Idempotency-Key": pkey})
    assert status == 202, doc
    assert ok(c.wait(pkey))["balance"] == 5


def sink_results_written(fleet):
    """promo_sink_mysql_results_total from the sink's /metrics."""
    port = int(fleet.env["PROMO_METRICS_PORT_SINK_MYSQL"])
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("promo_sink_mysql_results_total "):
                return int(float(line.split()[1]))
    raise AssertionError("promo_sink_mysql_results_total not in the sink's metrics")


def test_replayed_results_change_nothing(fleet, results):
    """Older results published again, as a processor replaying its partition
    after a crash would: the sink keeps the newer rows and the first status."""
    c = Client(fleet.http_port)
    t = now_ms()
    pol, user, sale = "i33-rp", "i33-rpu", "i33-rps"
    steps = [
        ("/v1/coupon-policies", {"policy_id": pol, "name": "replay", "discount_type": "FIXED",
                                 "discount_value": 500, "total_quantity": 10, "issue_starts_at": t - 60000,
                                 "issue_ends_at": t + 3600000, "valid_days": 3}, ADMIN),
        ("/v1/coupon-policies/%s/issue" % pol, {"user_id": user}, None),
        ("/v1/coupons/%s:1/redeem" % pol, {"user_id": user, "order_id": "i33-ro1", "order_amount": 9000}, None),
        ("/v1/coupons/%s:1/cancel" % pol, {"order_id": "i33-ro1"}, None),
        ("/v1/points/%s/earn" % user, {"amount": 50, "reason": "replay"}, ADMIN),
        ("/v1/points/%s/use" % user, {"amount": 20, "order_id": "i33-ro2"}, None),
        ("/v1/points/%s/cancel" % user, {"order_id": "i33-ro2"}, None),
        ("/v1/time-sales", {"sale_id": sale, "product_id": "sku-rp", "name": "replay", "original_price": 1000,
                            "sale_price": 700, "stock": 10, "per_user_limit": 5, "starts_at": t - 60000,
                            "ends_at": t + 3600000}, ADMIN),
        ("/v1/time-sales/%s/orders" % sale, {"user_id": user, "quantity": 2, "order_id": "i33-ro3"}, None),
        ("/v1/time-sales/%s/orders/i33-ro3/cancel" % sale, None, None),
    ]
    rids = [c.submit(path, body, key=k) for path, body, k in steps]
    docs = [ok(c.wait(r)) for r in rids]
    assert docs[3]["coupon_status"] == "ISSUED" and docs[6]["balance"] == 50 and docs[9]["sold"] == 0

    def snapshot():
        q = fleet.mysql_query
        return {
            "coupon": q("SELECT status, order_id, discount, version FROM coupons WHERE coupon_id = %s",
                        (pol + ":1",)),
            "policy": q("SELECT issued, version FROM coupon_policies WHERE policy_id = %s", (pol,)),
            "account": q("SELECT balance, next_expiry_at, version FROM point_accounts WHERE user_id = %s", (user,)),
            "ledger": q("SELECT seq, kind, delta, balance_after, request_id FROM point_ledger WHERE user_id = %s"
                        " ORDER BY seq", (user,)),
            "sale": q("SELECT sold, version FROM time_sales WHERE sale_id = %s", (sale,)),
            "order": q("SELECT status, quantity, version FROM sale_orders WHERE sale_id = %s AND order_id = %s",
                       (sale, "i33-ro3")),
            "requests": q("SELECT request_id, status, reason, result FROM requests WHERE request_id IN (%s)"
                          " ORDER BY request_id" % ",".join(["%s"] * len(rids)), rids),
        }

    before = snapshot()
    assert before["coupon"][0][:3] == ("ISSUED", None, None)
    assert before["order"][0][:2] == ("CANCELLED", 2)
    assert [r[1] for r in before["ledger"]] == ["EARN", "USE", "CANCEL_USE"]
    statuses = [c.wait(r) for r in rids]
    # Every result again, oldest first, then newest first.
    replay = [results.wait(r, lambda got: len(got) >= 1)[0] for r in rids]
    written = sink_results_written(fleet)
    producer = Producer({"bootstrap.servers": fleet.bootstrap_servers, "enable.idempotence": True})
    for raw, rec, partition in replay + list(reversed(replay)):
        producer.produce(RESULTS, value=raw, key=rec["entity_key"].encode(), partition=partition)
    assert producer.flush(30) == 0

    # Then, nothing changed: the sink reads the replays before these
    # results, which come after them in the same partitions.
    ok(c.run("/v1/coupon-policies/%s/issue" % pol, {"user_id": "i33-rpv"}))
    ok(c.run("/v1/points/%s/earn" % user, {"amount": 1, "reason": "barrier"}, key=ADMIN))
    ok(c.run("/v1/time-sales/%s/orders" % sale, {"user_id": "i33-rpv", "quantity": 1, "order_id": "i33-ro4"}))
    after = snapshot()
    assert sink_results_written(fleet) >= written + 2 * len(replay) + 3  # the replays were read

    assert after["requests"] == before["requests"]
    assert [c.wait(r) for r in rids] == statuses
    assert after["coupon"] == before["coupon"]
    assert after["policy"][0][0] == 2 and after["policy"][0][1] > before["policy"][0][1]
    assert after["ledger"][:-1] == before["ledger"] and after["ledger"][-1][:4] == (4, "EARN", 1, 51)
    assert after["account"][0][0] == 51 and after["account"][0][2] > before["account"][0][2]
    assert after["order"] == before["order"]
    assert after["sale"][0][0] == 1 and after["sale"][0][1] > before["sale"][0][1]


def test_same_key_on_another_entity(fleet):
    c = Client(fleet.http_port)
    t = now_ms()
    policies = ["i33-x%d" % i for i in range(4)]  # with 12 partitions, some land apart
    for p in policies:
        ok(c.run("/v1/coupon-policies", {
            "policy_id": p, "name": "cross", "discount_type": "FIXED", "discount_value": 500, "total_quantity": 10,
            "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000, "valid_days": 3}, key=ADMIN))
    key = "i33-k-cross"
    post_with_key(c, "/v1/coupon-policies/%s/issue" % policies[0], {"user_id": "i33-x"}, key)
    first = c.wait(key)
    assert ok(first)["coupon_id"] == policies[0] + ":1"
    for p in policies[1:]:
        status, doc, _ = c.post("/v1/coupon-policies/%s/issue" % p, {"user_id": "i33-x"},
                                headers={"Idempotency-Key": key})
        # Either answer keeps the contract: refused at once, or accepted and
        # then rejected by the processors.
        assert status in (202, 409, 422), (status, doc)
        # A later command on the same policy; by then the reuse was handled.
        assert ok(c.run("/v1/coupon-policies/%s/issue" % p, {"user_id": "i33-y"}))
    assert c.wait(key) == first
    rows = fleet.mysql_query("SELECT coupon_id FROM coupons WHERE policy_id LIKE 'i33-x%' AND user_id = 'i33-x'")
    assert rows == ((policies[0] + ":1",),), rows


def test_reused_key_refused_at_once(fleet, results):
    """A key reused with any other request is 422 at once and sends nothing;
    the exact same request again is 202 with the same request id."""
    c = Client(fleet.http_port)
    u, other = "i33-fp", "i33-fp2"
    path = "/v1/points/%s/earn" % u
    key = "i33-k-fp"
    earn7 = b'{"amount": 7, "reason": "x"}'
    hdrs = {"Idempotency-Key": key, "Content-Type": "application/json"}

    status, doc, _ = c.request("POST", path, raw=earn7, key=ADMIN, headers=hdrs)
    assert status == 202 and doc["request_id"] == key, (status, doc)
    first = c.wait(key)
    assert ok(first)["balance"] == 7

    refused = [
        (path, b'{"amount": 70, "reason": "x"}'),  # another body
        ("/v1/points/%s/earn" % other, earn7),  # another path (another entity, partition)
        ("/v1/points/%s/use" % u, b'{"amount": 7, "order_id": "i33-fpo"}'),  # another command
        (path, b'{"reason": "x", "amount": 7}'),  # the same JSON in other bytes: the bytes count
    ]
    for p, body in refused:
        status, doc, _ = c.request("POST", p, raw=body, key=ADMIN, headers=hdrs)
        assert_key_reused(status, doc)
        # Polling the key still shows the first request, never a success of this one.
        assert c.wait(key) == first

    status, doc, _ = c.get("/v1/points/%s" % u)
    assert status == 200 and doc["balance"] == 7, doc

    # The exact request again: accepted, same id, the processor answers it with the first result.
    status, doc, h = c.request("POST", path, raw=earn7, key=ADMIN, headers=hdrs)
    assert status == 202 and doc["request_id"] == key, (status, doc)
    assert h.get("Location") == "/v1/requests/" + key

    # Later commands on both users, after any command the refusals could have
    # sent in their partitions: once their results are read, so is every
    # result for the key.
    for user, balance in ((u, 8), (other, 1)):
        barrier = c.submit("/v1/points/%s/earn" % user, {"amount": 1, "reason": "barrier"}, key=ADMIN)
        assert ok(c.wait(barrier))["balance"] == balance
        results.wait(barrier, lambda got: len(got) >= 1)
    got = results.by_request.get(key, [])
    assert [r["status"] for _, r, _ in got] == ["SUCCEEDED", "SUCCEEDED"], [r for _, r, _ in got]
    assert got[0][0] == got[1][0], "the repeat must get the first result byte for byte"

    assert c.wait(key) == first
    assert request_row(fleet, key) == ("SUCCEEDED", None, first)
    rows = fleet.mysql_query("SELECT kind, delta, request_id FROM point_ledger WHERE user_id = %s ORDER BY seq",
                             (u,))
    assert [r[:2] for r in rows] == [("EARN", 7), ("EARN", 1)] and rows[0][2] == key, rows
    status, doc, _ = c.get("/v1/points/%s" % u)
    assert status == 200 and doc["balance"] == 8, doc
    status, doc, _ = c.get("/v1/points/%s" % other)
    assert status == 200 and doc["balance"] == 1, doc
    # The fingerprint lives as long as the status record.
    assert 0 < int(fleet.redis("TTL", "promo:idem:" + key)) <= int(fleet.redis("TTL", "promo:req:" + key)) + 5


def test_concurrent_claims(fleet):
    """Eight requests under one fresh key at once: with different bodies one
    wins and seven are 422; with one body all are 202, one request."""
    u = "i33-cc"

    def fire(key, bodies):
        out = [None] * len(bodies)
        go = threading.Barrier(len(bodies))

        def one(i):
            c = Client(fleet.http_port)
            c.get("/healthz")  # connected before the barrier
            go.wait()
            out[i] = c.post("/v1/points/%s/earn" % u, bodies[i], key=ADMIN, headers={"Idempotency-Key": key})[:2]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return out

    c = Client(fleet.http_port)
    got = fire("i33-k-cc1", [{"amount": 10 + i, "reason": "race"} for i in range(8)])
    won = [i for i, (status, _) in enumerate(got) if status == 202]
    assert len(won) == 1, got
    for i, (status, doc) in enumerate(got):
        if i not in won:
            assert_key_reused(status, doc)
    assert ok(c.wait("i33-k-cc1"))["balance"] == 10 + won[0]

    got = fire("i33-k-cc2", [{"amount": 100, "reason": "same"}] * 8)
    assert all(status == 202 and doc["request_id"] == "i33-k-cc2" for status, doc in got), got
    assert ok(c.wait("i33-k-cc2"))["balance"] == 110 + won[0]
    assert ok(c.run("/v1/points/%s/earn" % u, {"amount": 1, "reason": "barrier"}, key=ADMIN))["balance"] == \
        111 + won[0]


def test_direct_producer_id_then_http(fleet):
    """An id first used straight on Kafka has a status but no fingerprint:
    HTTP refuses it for another target, lets it through for the same one
    (the processor answers with the first result), and from then on holds
    that request's fingerprint."""
    c = Client(fleet.http_port)
    u = "i33-dp"
    key = "i33-k-direct"
    direct_send(fleet, "point", "EarnPoints", {"user_id": u, "amount": 5, "reason": "direct"}, key)
    first = c.wait(key)
    assert ok(first)["balance"] == 5

    status, doc, _ = c.post("/v1/points/i33-dp2/earn", {"amount": 5, "reason": "direct"}, key=ADMIN,
                            headers={"Idempotency-Key": key})
    assert_key_reused(status, doc)
    body = {"amount": 5, "reason": "direct"}
    for _ in range(2):
        status, doc, _ = c.post("/v1/points/%s/earn" % u, body, key=ADMIN, headers={"Idempotency-Key": key})
        assert status == 202 and doc["request_id"] == key, (status, doc)
    status, doc, _ = c.post("/v1/points/%s/earn" % u, {"amount": 6, "reason": "direct"}, key=ADMIN,
                            headers={"Idempotency-Key": key})
    assert_key_reused(status, doc)

    assert ok(c.run("/v1/points/%s/earn" % u, {"amount": 1, "reason": "barrier"}, key=ADMIN))["balance"] == 6
    assert ok(c.run("/v1/points/i33-dp2/earn", {"amount": 1, "reason": "barrier"}, key=ADMIN))["balance"] == 1
    assert c.wait(key) == first
