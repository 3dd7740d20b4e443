"""075 — a command too big to be dead-lettered whole does not stall its
partition (DESIGN.md §3: a bad message never stops the partition).

A direct producer may publish a value as large as its client allows (about
1 MB with librdkafka's default message.max.bytes). If it is garbage, its
dead letter holds it plus the reason and where it came from, which no longer
fits in one message. The processor must still dead-letter it (with the value
cut down, and saying so) and go on: a valid command behind it on the same
partition is answered once, and the processor checkpoints past both
instead of resetting to its last checkpoint again and again.
"""

import io
import os
import sys
import time

import avro.io
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from test_071_checkpoint_damage import Points, pc, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults"))
import procs  # noqa: E402


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
    reader = avro.io.DatumReader(pc.schema("dead_letter"))
    c = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": "d075-%d" % os.getpid(),
                  "enable.auto.commit": False})
    try:
        md = c.list_topics("promo.dlq", timeout=10)
        c.assign([TopicPartition("promo.dlq", p, OFFSET_BEGINNING) for p in md.topics["promo.dlq"].partitions])
        found = None
        deadline = time.time() + 30
        while found is None and time.time() < deadline:
            for m in c.consume(200, 0.2):
                if m.error() or m.key() != user.encode():
                    continue
                found = reader.read(avro.io.BinaryDecoder(io.BytesIO(m.value()[5:])))
        assert found is not None, "no dead letter for %s" % user
    finally:
        c.close()
    assert found["source_partition"] == dm.partition() and found["source_offset"] == dm.offset()
    assert found["error_code"] == "BAD_AVRO", found["error_code"]
    assert 0 < len(found["value"]) < len(value) and value.startswith(found["value"])
    assert "truncated" in found["reason"], found["reason"]
