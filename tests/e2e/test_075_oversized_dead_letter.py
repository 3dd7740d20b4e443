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
instead of resetting to its last checkpoint again and again. And a command
on the wrong partition for its key is dead-lettered, not applied.
"""

import io
import os
import sys
import time

import avro.io
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

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


def test_command_on_the_wrong_partition_is_dead_lettered(fleet):
    """A producer that hashes keys differently (or names a partition) puts a
    command where its entity's state is not: applying it there would count
    the entity twice, so it is a WRONG_PARTITION dead letter, and the entity
    on its own partition is untouched."""
    pts = Points(fleet)
    user = "d075w-%s" % os.urandom(4).hex()
    assert pts.balance_after(pts.earn(user, 10)) == 10
    right = murmur2_partition(user, fleet.partitions)
    topic, key, value, rid = pc.encode("point", "EarnPoints", {
        "user_id": user, "amount": 500, "reason": "d075", "expires_at": None})
    dm = pc.send(pts.producer, topic, key, value, partition=(right + 1) % fleet.partitions)
    found = dead_letter(fleet, user)
    assert found["error_code"] == "WRONG_PARTITION", found
    assert (found["source_partition"], found["source_offset"]) == (dm.partition(), dm.offset())
    assert found["value"] == value and found["key"] == key.encode()
    assert pts.balance_after(pts.earn(user, 1)) == 11
