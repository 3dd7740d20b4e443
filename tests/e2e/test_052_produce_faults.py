"""052 — an acknowledged command is in the log, whatever the broker refuses.

A Produce request may fail (an error, a partition leader moved away) while
the next one to the same partition succeeds. Apache Kafka then refuses the
next one too (its sequence skips the failed batch), so an idempotent producer
may take any later success as proof that the earlier batch was written, and
librdkafka does: it reports the failed batch delivered ("implicitly acked").
The dev broker, librdkafka 2.0.2's mock cluster, does not check those
sequences, so with several requests in flight it acknowledged commands it
never wrote (docs/operations.md, "Settled: acknowledged commands lost on the
dev broker"). The fleet therefore runs its producers with one request in
flight there (PROMO_KAFKA_MAX_IN_FLIGHT=1, set by tools/fleet.sh).

HTTP writes through ingest while Produce errors and leader moves are
injected: every request answered 202 ends SUCCEEDED, and MySQL holds each
coupon once. With 5 requests in flight on the dev broker this test failed: an
accepted request never reached a processor.
"""

import random
import threading

from client import ADMIN, Client, Pool, now_ms


class Faults:
    """Injects Produce errors and moves partition leaders until stopped."""

    def __init__(self, fleet, topic, partitions, every):
        self.fleet, self.topic, self.partitions, self.every = fleet, topic, partitions, every
        self.rng = random.Random(topic)
        self.stop = threading.Event()
        self.injected = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        brokers = int(self.fleet.env.get("PROMO_KAFKA_BROKERS", "3"))
        while not self.stop.wait(self.every):
            if self.rng.random() < 0.5:
                self.fleet.kafka_control("request-errors Produce 4 NOT_LEADER_FOR_PARTITION")
            else:
                self.fleet.kafka_control("partition-leader %s %d %d" % (
                    self.topic, self.rng.randrange(self.partitions), self.rng.randint(1, brokers)))
            self.injected += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.fleet.kafka_control("clear-errors Produce")


def test_accepted_writes_survive_produce_faults(fleet, quick):
    policies = ["pf%d-%d" % (i, now_ms() % 100000) for i in range(6)]
    per_policy = 150 if quick else 400
    c = Client(fleet.http_port)
    t = now_ms()
    for pid in policies:
        doc = c.run("/v1/coupon-policies", {
            "policy_id": pid, "name": "produce faults", "discount_type": "FIXED", "discount_value": 100,
            "total_quantity": per_policy, "per_user_limit": 1, "issue_starts_at": t - 60000,
            "issue_ends_at": t + 3600000, "valid_days": 7}, key=ADMIN)
        assert doc["status"] == "SUCCEEDED", doc
    plan = [(pid, "u%d" % u) for pid in policies for u in range(per_policy)]
    random.Random(7).shuffle(plan)

    def one(cl, item):
        pid, user = item
        status, doc, _ = cl.post("/v1/coupon-policies/%s/issue" % pid, {"user_id": user})
        # 503: Kafka did not take it in time; nothing was promised.
        assert status in (202, 503), (status, doc)
        return doc["request_id"] if status == 202 else None

    pool = Pool(fleet.http_port, workers=32)
    with Faults(fleet, "promo.coupon.cmd", int(fleet.env["PROMO_KAFKA_PARTITIONS"]), every=0.25) as faults:
        rids = pool.map(one, plan)
    assert faults.injected >= 3, "the writes outran the faults: %d injected" % faults.injected
    accepted = [(item, rid) for item, rid in zip(plan, rids) if rid]
    assert len(accepted) >= len(plan) // 2, "most writes must get through: %d of %d" % (len(accepted), len(plan))
    outcomes = pool.wait_all([rid for _, rid in accepted], timeout=180)
    for (pid, user), rid in accepted:
        o = outcomes[rid]
        assert o["status"] == "SUCCEEDED", o  # every user asks once, and there is a coupon for each
    # A 503 after a timeout may still have been written ("possibly persisted"),
    # so its user may hold a coupon too; an accepted one must, exactly once.
    with fleet.mysql() as db, db.cursor() as cur:
        for pid in policies:
            mine = {user for (p, user), _ in accepted if p == pid}
            unsure = {user for (p, user), rid in zip(plan, rids) if p == pid and not rid}
            cur.execute("SELECT user_id FROM coupons WHERE policy_id = %s", (pid,))
            held = [r[0] for r in cur.fetchall()]
            assert len(held) == len(set(held)), pid
            assert mine <= set(held) <= mine | unsure, pid
