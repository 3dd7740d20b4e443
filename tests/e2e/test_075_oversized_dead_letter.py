"""075 — dead letters the processor must still get right (DESIGN.md §3: a
bad message never stops the partition).

A command too big to be dead-lettered whole does not stall its partition.

A direct producer may publish a value as large as its client allows (a Java
client: 1 MiB by default, more than the 1,000,000 bytes of librdkafka's
message.max.bytes, which the processor produces with). If it is garbage, its
dead letter holds it plus the reason and where it came from, which does not
fit in one message. The processor must still dead-letter it (with the value
cut down, and saying so) and go on: a valid command behind it on the same
partition is answered once, and the processor checkpoints past both
instead of resetting to its last checkpoint again and again.

A command on another partition than its key's owner (murmur2) is no dead
letter (DESIGN.md §3): a producer with librdkafka's default partitioner
(CRC32, the default of confluent-kafka for Python, Go and .NET) has nearly
every command there, and each is forwarded to its owner and settles exactly
once, with its headers; one whose headers are too big to forward goes on
without them. A command whose key is not its entity's is still a
KEY_MISMATCH dead letter.
"""

import io
import os
import sys
import time
import zlib

import avro.io
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from client import Client
from test_050_direct_producers import murmur2_partition
from test_071_checkpoint_damage import Points, pc, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults"))
import procs  # noqa: E402


def dead_letter(fleet, key, timeout=30):
    """The first DeadLetter in promo.dlq whose message key is key."""
    reader = avro.io.DatumReader(pc.schema("dead_letter"))
    c = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": "d075-%s" % os.urandom(4).hex(),
                  "enable.auto.commit": False})
    try:
        md = c.list_topics("promo.dlq", timeout=10)
        c.assign([TopicPartition("promo.dlq", p, OFFSET_BEGINNING) for p in md.topics["promo.dlq"].partitions])
        deadline = time.time() + timeout
        while time.time() < deadline:
            for m in c.consume(200, 0.2):
                if not m.error() and m.key() == key.encode():
                    return reader.read(avro.io.BinaryDecoder(io.BytesIO(m.value()[5:])))
        raise AssertionError("no dead letter for %s" % key)
    finally:
        c.close()


def test_oversized_dead_letter_does_not_stall(fleet):
    pts = Points(fleet)
    port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_POINT"])
    user = "d075-%s" % os.urandom(4).hex()
    assert pts.balance_after(pts.earn(user, 10)) == 10
    resets0 = procs.metric(port, "promo_partition_resets_total")
    dead0 = procs.metric(port, "promo_dead_letters_total")

    # About the largest value a Java client sends by default (max.request.size
    # 1 MiB): framing for schema 2, then bytes that are no Avro PointCommand.
    big = pc.producer(fleet.bootstrap_servers, **{"message.max.bytes": 1048576})
    value = b"\x00\x00\x00\x00\x02" + b"\xff" * (1040000 - 5)
    dm = pc.send(big, "promo.point.cmd", user.encode(), value)
    rid = pts.earn(user, 5)
    assert pts.balance_after(rid) == 15

    wait_until("the dead letter", lambda: procs.metric(port, "promo_dead_letters_total") > dead0, 30)
    wait_until("a checkpoint past both messages",
               lambda: int(fleet.redis("HGET", "promo:{point:%d}:meta" % dm.partition(), "offset") or -1)
               > dm.offset() + 1, 30)
    assert procs.metric(port, "promo_partition_resets_total") == resets0
    assert pts.balance_after(pts.earn(user, 1)) == 16

    # The dead letter names the message and says its value was cut.
    found = dead_letter(fleet, user)
    assert found["source_partition"] == dm.partition() and found["source_offset"] == dm.offset()
    assert found["error_code"] == "BAD_AVRO", found["error_code"]
    assert 0 < len(found["value"]) < len(value) and value.startswith(found["value"])
    assert "truncated" in found["reason"], found["reason"]


def crc32_partition(key, partitions):
    """librdkafka's default partitioner (consistent_random) for a non-empty key."""
    return zlib.crc32(key.encode()) % partitions


def misplaced(prefix, partitions):
    """A fresh id that librdkafka's default partitioner puts on another
    partition than its owner's (murmur2)."""
    while True:
        k = "%s-%s" % (prefix, os.urandom(5).hex())
        if crc32_partition(k, partitions) != murmur2_partition(k, partitions):
            return k


def default_producer(fleet, **extra):
    """A producer as confluent_kafka makes it when told nothing: no
    partitioner, no idempotence, librdkafka's defaults."""
    conf = {"bootstrap.servers": fleet.bootstrap_servers}
    conf.update(extra)
    return Producer(conf)


def settled(fleet, rid, timeout=60):
    """GET /v1/requests/{rid} once final (404 until the sink has it for a
    direct producer, 503 retried as its Retry-After asks)."""
    deadline = time.time() + timeout
    while True:
        r = fleet.get("/v1/requests/%s?wait_ms=1000" % rid)
        doc = r.json() if r.status == 200 else None
        if doc and doc["status"] != "PENDING":
            return doc
        assert r.status in (200, 404, 503), r
        assert time.time() < deadline, "request %s not final after %ss: %r" % (rid, timeout, r)
        time.sleep(0.05)


def copies_on(fleet, topic, partition, key):
    """Every message keyed key on one partition, oldest first."""
    c = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": "d075c-%s" % os.urandom(4).hex(),
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        _lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        out, last = [], -1
        deadline = time.time() + 30
        while last < hi - 1 and time.time() < deadline:
            for m in c.consume(500, 0.5):
                if m.error():
                    continue
                last = max(last, m.offset())
                if m.key() == key.encode():
                    out.append(m)
        return out
    finally:
        c.close()


def test_default_partitioner_commands_are_forwarded(fleet):
    """Commands from confluent_kafka's default producer, on the CRC32
    partitions of their keys (not murmur2's), in all three domains: a
    policy, a sale and accounts created that way and used that way, one
    request published twice. Each settles once, on its owner's partition;
    MySQL has each row once; nothing is dead-lettered; each message was
    forwarded once."""
    n = fleet.partitions
    ports = {d: int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_%s" % d.upper()]) for d in ("coupon", "point", "timesale")}
    before = {d: {m: procs.metric(port, m) for m in ("promo_commands_forwarded_total", "promo_dead_letters_total",
                                                      "promo_partition_resets_total")}
              for d, port in ports.items()}
    policy, sale = misplaced("d075p", n), misplaced("d075s", n)
    users = [misplaced("d075u", n) for _ in range(3)]
    t = pc.now_ms()
    msgs = []  # (domain, topic, key, value, request id, headers)

    def add(domain, record, fields, request_id=None, headers=None):
        topic, key, value, rid = pc.encode(domain, record, fields, request_id=request_id)
        msgs.append((domain, topic, key, value, rid, headers))
        return rid

    create = add("coupon", "CreateCouponPolicy", {
        "policy_id": policy, "name": "d075", "discount_type": "FIXED", "discount_value": 500,
        "min_order_amount": 0, "total_quantity": 10, "per_user_limit": 5, "issue_starts_at": t - 60000,
        "issue_ends_at": t + 3600000, "valid_days": 7})
    issues = [add("coupon", "IssueCoupon", {"policy_id": policy, "user_id": u}) for u in users]
    repeat = add("coupon", "IssueCoupon", {"policy_id": policy, "user_id": users[0]}, request_id=issues[0])
    earns = [add("point", "EarnPoints", {"user_id": u, "amount": 100 * (i + 1), "reason": "d075"},
                 headers=[("trace-id", b"d075-%d" % i), ("empty", b"")] if i == 0 else None)
             for i, u in enumerate(users)]
    earn_again = add("point", "EarnPoints", {"user_id": users[0], "amount": 7, "reason": "d075"})
    sale_create = add("timesale", "CreateTimeSale", {
        "sale_id": sale, "product_id": "sku-" + sale, "name": "d075", "original_price": 2000, "sale_price": 1500,
        "stock": 5, "per_user_limit": 2, "starts_at": t - 60000, "ends_at": t + 3600000})
    order = add("timesale", "PlaceOrder", {"sale_id": sale, "user_id": users[1], "quantity": 2, "order_id": None})

    prod = default_producer(fleet)
    delivered = {}

    def on_delivery(err, m):
        assert err is None, err
        delivered.setdefault(m.value(), []).append(m)

    for domain, topic, key, value, rid, headers in msgs:
        prod.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        prod.poll(0)
    assert prod.flush(30) == 0
    # Each on the default partitioner's partition, which is not its owner's.
    for domain, topic, key, value, rid, headers in msgs:
        for m in delivered[value]:
            assert m.partition() == crc32_partition(key, n) != murmur2_partition(key, n), (key, m.partition())

    # Everything settles, applied by the owner.
    docs = {rid: settled(fleet, rid) for rid in {m[4] for m in msgs}}
    for rid, doc in docs.items():
        assert doc["status"] == "SUCCEEDED", doc
    assert docs[create]["entity_key"] == policy
    coupons = [docs[r]["result"]["coupon_id"] for r in issues]
    assert sorted(coupons) == ["%s:%d" % (policy, i) for i in (1, 2, 3)], coupons
    assert [docs[r]["result"]["balance"] for r in earns] == [100, 200, 300]
    assert docs[earn_again]["result"]["balance"] == 107
    assert (docs[order]["result"]["quantity"], docs[order]["result"]["remaining"]) == (2, 3)
    status, doc, _ = Client(fleet.http_port).get("/v1/coupon-policies/" + policy)
    assert status == 200 and (doc["issued"], doc["remaining"]) == (3, 7), doc

    # MySQL: each request once, with the owner's partition; each row once.
    rids = sorted(docs)
    rows = fleet.mysql_query("SELECT request_id, status, entity_key, source_partition FROM requests"
                             " WHERE request_id IN (%s)" % ",".join(["%s"] * len(rids)), rids)
    assert len(rows) == len(rids), rows
    for rid, status, entity, part in rows:
        assert status == "SUCCEEDED" and part == murmur2_partition(entity, n), (rid, status, entity, part)
    wait_until("3 coupons of the policy in MySQL",
               lambda: fleet.mysql_query("SELECT COUNT(*), COUNT(DISTINCT user_id) FROM coupons"
                                         " WHERE policy_id = %s", (policy,)) == ((3, 3),))
    wait_until("the policy's issued count in MySQL",
               lambda: fleet.mysql_query("SELECT issued FROM coupon_policies WHERE policy_id = %s",
                                         (policy,)) == ((3,),))
    wait_until("4 ledger entries in MySQL", lambda: len(fleet.mysql_query(
        "SELECT request_id FROM point_ledger WHERE user_id IN (%s, %s, %s)", users)) == 4)
    ledger = fleet.mysql_query("SELECT request_id, COUNT(*) FROM point_ledger WHERE user_id IN (%s, %s, %s)"
                               " GROUP BY request_id", users)
    assert sorted(ledger) == sorted((r, 1) for r in earns + [earn_again]), ledger
    wait_until("the order in MySQL", lambda: fleet.mysql_query(
        "SELECT quantity, status FROM sale_orders WHERE sale_id = %s", (sale,)) == ((2, "PLACED"),))
    wait_until("the sale's sold count in MySQL", lambda: fleet.mysql_query(
        "SELECT sold FROM time_sales WHERE sale_id = %s", (sale,)) == ((2,),))

    # The repeated request: its first result, and no fourth coupon.
    assert docs[repeat]["result"]["coupon_id"] == coupons[0]

    # The forwarded copy on the owner's partition: same key, bytes, headers.
    domain, topic, key, value, rid, headers = msgs[[m[4] for m in msgs].index(earns[0])]
    copies = [m for m in copies_on(fleet, topic, murmur2_partition(key, n), key) if m.value() == value]
    assert len(copies) == 1, copies
    assert copies[0].headers() == headers

    # Nothing dead-lettered, every message forwarded once (again only if a
    # partition was reset, which replays).
    for d, port in ports.items():
        sent = sum(1 for m in msgs if m[0] == d)
        now = {m: procs.metric(port, m) for m in before[d]}
        assert now["promo_dead_letters_total"] == before[d]["promo_dead_letters_total"], d
        fwd = now["promo_commands_forwarded_total"] - before[d]["promo_commands_forwarded_total"]
        assert fwd == sent or (fwd > sent and now["promo_partition_resets_total"] >
                               before[d]["promo_partition_resets_total"]), (d, fwd, sent)


def test_forward_with_headers_too_big_goes_without_them(fleet):
    """A sender whose limit is higher than the processor's (a Java client's
    1 MiB against librdkafka's 1,000,000 bytes) can attach headers that make
    the message too big to forward as it came. Failing would replay into it
    forever; the processors never read headers, so it is forwarded without
    them, and settles."""
    pts = Points(fleet)
    user = misplaced("d075h", fleet.partitions)
    topic, key, value, rid = pc.encode("point", "EarnPoints", {
        "user_id": user, "amount": 42, "reason": "d075", "expires_at": None})
    big = default_producer(fleet, **{"message.max.bytes": 1048576})
    got = {}
    big.produce(topic, key=key, value=value, headers=[("blob", b"h" * 1000000)],
                on_delivery=lambda err, m: got.update(err=err, m=m))
    assert big.flush(30) == 0 and got["err"] is None, got
    assert got["m"].partition() != murmur2_partition(user, fleet.partitions)
    assert pts.balance_after(rid) == 42
    copies = [m for m in copies_on(fleet, topic, murmur2_partition(user, fleet.partitions), key)
              if m.value() == value]
    assert len(copies) == 1 and not copies[0].headers(), [m.headers() and len(m.headers()) for m in copies]
    assert pts.balance_after(pts.earn(user, 1)) == 43


def test_key_mismatch_is_still_dead_lettered(fleet):
    """Forwarding needs the key to be the entity's: a message keyed otherwise
    is a KEY_MISMATCH dead letter, wherever it lands, and changes nothing."""
    pts = Points(fleet)
    user = "d075k-%s" % os.urandom(4).hex()
    assert pts.balance_after(pts.earn(user, 10)) == 10
    other = misplaced("d075o", fleet.partitions)
    topic, _key, value, rid = pc.encode("point", "EarnPoints", {
        "user_id": user, "amount": 500, "reason": "d075", "expires_at": None})
    dm = pc.send(default_producer(fleet), topic, other.encode(), value)
    found = dead_letter(fleet, other)
    assert found["error_code"] == "KEY_MISMATCH", found
    assert (found["source_partition"], found["source_offset"]) == (dm.partition(), dm.offset())
    assert found["value"] == value and found["key"] == other.encode()
    assert pts.balance_after(pts.earn(user, 1)) == 11
    r = fleet.get("/v1/requests/%s" % rid)
    assert r.status == 404, r
