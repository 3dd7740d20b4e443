"""052 — an acknowledged command is in the log, whatever the broker does.

HTTP writes through ingest while the broker is hurt: on Apache Kafka (the
fleet's broker) the single local node is SIGKILLed and started again, or
frozen (SIGSTOP) for a few seconds and thawed, over and over. Every request
answered 202 ends SUCCEEDED, and MySQL holds each coupon once; a 503 promised
nothing (though a timed-out command may still have been written).

History: the mock cluster (librdkafka 2.0.2's rdkafka_mock) does not check
idempotent producers' sequence numbers, so with several requests in flight
it acknowledged commands it never wrote. This test, with Produce errors and
leader moves injected there, caught it; Apache Kafka checks the sequences,
so the fleet keeps librdkafka's 5 requests in flight on it.
"""

import random
import threading
import time

from client import ADMIN, Client, Pool, now_ms


class Faults:
    """Kills or freezes the broker, then brings it back, until stopped."""

    def __init__(self, fleet, every):
        self.fleet, self.every = fleet, every
        self.rng = random.Random(52)
        self.stop = threading.Event()
        self.injected = 0
        self.errors = []
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        node = self.fleet.kafka_nodes()[0]
        try:
            while not self.stop.wait(self.every):
                if self.injected % 2 == 0:
                    self.fleet.kill(node, "KILL")
                    time.sleep(self.rng.uniform(0.2, 1.0))
                    self.fleet.start("kafka")
                else:
                    self.fleet.kill(node, "STOP")
                    time.sleep(self.rng.uniform(1.0, 3.0))
                    self.fleet.kill(node, "CONT")
                self.injected += 1
        except Exception as e:  # reported by __exit__, on the test's thread
            self.errors.append(e)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.fleet.kill(self.fleet.kafka_nodes()[0], "CONT")
        self.fleet.start("kafka")
        assert not self.errors, self.errors


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
    with Faults(fleet, every=0.5) as faults:
        rids = pool.map(one, plan)
    assert faults.injected >= 2, "the writes outran the faults: %d injected" % faults.injected
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
