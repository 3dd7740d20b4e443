"""076 — results the broker deleted before the sink read them are counted and
logged, never skipped in silence.

The sink resumes each partition of promo.results from its committed offset.
If the broker has deleted that part of the log meanwhile (retention shorter
than the sink's lag),
librdkafka's auto.offset.reset=earliest moves on without telling anyone and
MySQL misses those outcomes for good. The sink must say so.

On a fleet of its own (the filler ends up in its promo.dlq): the sink reads
and commits one message of partition 0 and is stopped; promo.results is
given 1 MB segments and a 1 MB retention per partition, 7 MB are produced
to partition 0, the broker's retention check deletes the oldest segments,
and the sink is started again. Its promo_sink_mysql_results_skipped_total then equals exactly the
offsets the broker dropped between its committed offset and the new log
start, and its log names them.
"""

import os
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

from fleet import Fleet

TOPIC = "promo.results"


def sink_metric(fleet, name):
    port = fleet.env["PROMO_METRICS_PORT_SINK_MYSQL"]
    with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def wait_for(what, cond, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.2)


def low_watermark(bootstrap, partition):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-076"})
    try:
        return c.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=30)[0]
    finally:
        c.close()


def test_deleted_results_are_counted():
    fleet = Fleet()
    try:
        fleet.start()
        p = Producer({"bootstrap.servers": fleet.bootstrap_servers, "linger.ms": 20})
        # Not a Result: the sink dead-letters it and commits past it.
        p.produce(TOPIC, partition=0, value=b"not a result")
        assert p.flush(30) == 0
        wait_for("the sink took the first message",
                 lambda: (sink_metric(fleet, "promo_sink_mysql_dead_letters_total") or 0) >= 1)
        time.sleep(1.0)  # its offsets are committed after the dead letter is acknowledged
        assert sink_metric(fleet, "promo_sink_mysql_results_skipped_total") == 0

        fleet.kill("sink-mysql", "TERM")
        wait_for("the sink stopped", lambda: fleet.status().get("sink-mysql") is None)
        fleet.topic_config(TOPIC, "segment.bytes", 1 << 20)
        fleet.topic_config(TOPIC, "retention.bytes", 1 << 20)
        filler = os.urandom(1000)
        for i in range(7000):  # 7 MB: more than the partition may keep
            p.produce(TOPIC, partition=0, value=filler)
            if i % 500 == 0:
                p.poll(0)
        assert p.flush(60) == 0
        # The broker checks retention every few seconds (tools/kafka/kafka.sh).
        wait_for("the broker deleted old segments", lambda: low_watermark(fleet.bootstrap_servers, 0) > 1, 90)
        low = low_watermark(fleet.bootstrap_servers, 0)

        fleet.start("sink-mysql")
        wait_for("the sink counted the gap",
                 lambda: (sink_metric(fleet, "promo_sink_mysql_results_skipped_total") or 0) > 0)
        assert sink_metric(fleet, "promo_sink_mysql_results_skipped_total") == low - 1
        with open(fleet.log_path("sink-mysql")) as f:
            log = f.read()
        assert "%s[0]: offsets 1..%d were deleted before the sink read them" % (TOPIC, low - 1) in log
    finally:
        fleet.stop()
