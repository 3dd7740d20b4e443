"""072 — a result Kafka would not take is never checkpointed past
(DESIGN.md §5, checkpoint order).

The point processor runs with a 1 s result timeout (PROMO_RESULT_TIMEOUT_MS)
and room for only 4 results in its producer queue (PROMO_RESULT_QUEUE_MAX).
Commands are published straight to Kafka while it is frozen for a moment;
then the broker refuses every result (promo.results's max.message.bytes
below any batch: MESSAGE_TOO_LARGE). The processor fills its queue, waits
for room, sees its results fail, and resets its partitions
to their last checkpoints instead of checkpointing. Once the broker takes
results again, the replay delivers them: every request is answered, each
balance counts each earn once, and every copy of a request's result in
promo.results is byte for byte the same.
"""

import os
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from fleet import result_request_id
from test_071_checkpoint_damage import Points, pc, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults"))
import procs  # noqa: E402

PREFIX = "d072-"


def read_results(bootstrap, request_ids, timeout=60):
    """{request id: [raw value, ...]} from promo.results for this test's keys,
    once every request id has at least one."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": PREFIX + "reader-%d" % os.getpid(),
                  "enable.auto.commit": False})
    try:
        md = c.list_topics("promo.results", timeout=10)
        c.assign([TopicPartition("promo.results", p, OFFSET_BEGINNING) for p in md.topics["promo.results"].partitions])
        got = {}
        deadline = time.time() + timeout
        while not all(r in got for r in request_ids):
            assert time.time() < deadline, "promo.results lacks %s" % [r for r in request_ids if r not in got]
            for m in c.consume(1000, 0.2):
                if m.error() or not (m.key() or b"").startswith(PREFIX.encode()):
                    continue
                got.setdefault(result_request_id(m.value()), []).append(m.value())
        return got
    finally:
        c.close()


def restart_point_processor(fleet, extra_env):
    saved = dict(fleet.env)
    fleet.env.update(extra_env)
    try:
        fleet.restart("processor-point", "TERM")
    finally:
        fleet.env.clear()
        fleet.env.update(saved)


def test_undelivered_results_are_replayed(fleet):
    pts = Points(fleet)
    port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_POINT"])
    users = [PREFIX + "%s-%d" % (os.urandom(4).hex(), i) for i in range(6)]
    restart_point_processor(fleet, {"PROMO_RESULT_TIMEOUT_MS": "1000", "PROMO_RESULT_QUEUE_MAX": "4"})
    try:
        first = {u: pts.earn(u, 10) for u in users}
        for u, rid in first.items():
            assert pts.balance_after(rid) == 10
        errors0 = procs.metric(port, "promo_result_delivery_errors_total")
        resets0 = procs.metric(port, "promo_partition_resets_total")

        # Frozen (well within its session timeout), the processor cannot
        # apply and deliver the commands before the broker starts refusing.
        fleet.kill("processor-point", "STOP")
        try:
            t = pc.now_ms()
            later = []
            for k in range(2):
                for u in users:
                    topic, key, value, rid = pc.encode("point", "EarnPoints", {
                        "user_id": u, "amount": 5, "reason": "d072", "expires_at": None}, submitted_at=t + k)
                    pts.producer.produce(topic, key=key, value=value)
                    later.append((u, k, rid))
            assert pts.producer.flush(20) == 0
            fleet.refuse_produce("promo.results")
        finally:
            fleet.kill("processor-point", "CONT")
        try:
            wait_until("results to fail and partitions to be reset",
                       lambda: procs.metric(port, "promo_result_delivery_errors_total") > errors0
                       and procs.metric(port, "promo_partition_resets_total") > resets0, 60)
        finally:
            fleet.accept_produce("promo.results")

        # Every request answered, each earn counted once.
        for u, k, rid in later:
            assert pts.balance_after(rid) == 15 + 5 * k, (u, k)
        for u in users:
            assert pts.balance_after(pts.earn(u, 1)) == 21
        with open(fleet.log_path("processor-point"), errors="replace") as f:
            assert "replaying from the last checkpoint" in f.read()

        # Replayed results are the first ones again, byte for byte.
        results = read_results(fleet.bootstrap_servers, [rid for _, _, rid in later])
        for _, _, rid in later:
            assert len(set(results[rid])) == 1, (rid, len(results[rid]))
    finally:
        fleet.accept_produce("promo.results")
        restart_point_processor(fleet, {})
