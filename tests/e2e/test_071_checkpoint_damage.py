"""071 — checkpoints that Redis lost or mangled cost replay time, never a
result (DESIGN.md §5).

Point commands are published straight to Kafka (so Redis, which ingest also
uses, is touched only by the test and the processor), each user on a
partition of its own, and the point processor meets four kinds of damage:

  expiry    with a 1 s request-id window (command time), ids older than
            the window are forgotten, and a segment of them is deleted from
            the checkpoint as from memory: a restart brings nothing back
  gap       Redis "loses" the last checkpoint of a partition (its seq rolls
            back, an account it wrote disappears): the next delta would sit
            on a hole, so the processor writes a full snapshot, account
            included
  malformed a checkpoint entry that cannot be parsed, and
  wrong type a state key that is no hash at all: after a restart the new
            processor cannot load either, so it rebuilds those partitions
            from the start of the log, and its next checkpoint replaces them

Every balance afterwards is exactly what the commands add up to, a repeated
request gets its first result, and the damage is gone from Redis.
"""

import importlib.util
import os
import time
import uuid

from test_050_direct_producers import murmur2_partition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPIRY_EARNS = 400

_spec = importlib.util.spec_from_file_location("produce_command",
                                               os.path.join(ROOT, "examples", "produce_command.py"))
pc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pc)


def wait_until(what, fn, timeout=30):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < deadline, "timed out after %ss waiting for %s" % (timeout, what)
        time.sleep(0.1)


def users_on_distinct_partitions(n, partitions):
    out, seen = [], set()
    while len(out) < n:
        u = "d071-%s" % uuid.uuid4().hex[:10]
        p = murmur2_partition(u, partitions)
        if p not in seen:
            seen.add(p)
            out.append((u, p))
    return out


class Points:
    """Publishes EarnPoints straight to promo.point.cmd and waits for results."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.producer = pc.producer(fleet.bootstrap_servers)

    def earn(self, user, amount, request_id=None, submitted_at=None):
        topic, key, value, rid = pc.encode("point", "EarnPoints", {
            "user_id": user, "amount": amount, "reason": "d071", "expires_at": None},
            request_id=request_id, submitted_at=submitted_at)
        pc.send(self.producer, topic, key, value)
        return rid

    def balance_after(self, rid, timeout=60):
        """The balance in rid's result, once it is final. A 503 is retried,
        as its Retry-After asks: ingest answers one after a Redis restart
        (as in tests 061 and 073) on each connection it still held."""
        deadline = time.time() + timeout
        while True:
            r = self.fleet.get("/v1/requests/%s?wait_ms=1000" % rid)
            doc = r.json() if r.status == 200 else None
            if doc and doc["status"] != "PENDING":
                assert doc["status"] == "SUCCEEDED", doc
                return doc["result"]["balance"]
            assert r.status in (200, 404, 503), r
            assert time.time() < deadline, "request %s not final after %ss: %r" % (rid, timeout, r)
            time.sleep(0.05)


def state_key(p):
    return "promo:{point:%d}:state" % p


def meta_key(p):
    return "promo:{point:%d}:meta" % p


def segments(fleet, p):
    """Request-id segment numbers in partition p's checkpoint ("r:~N")."""
    return {int(k[3:]) for k in fleet.redis("HKEYS", state_key(p)) if k.startswith("r:~")}


def user_on_partition(p, partitions):
    while True:
        u = "d071-%s" % uuid.uuid4().hex[:10]
        if murmur2_partition(u, partitions) == p:
            return u


def in_state(fleet, p, field):
    return fleet.redis("HEXISTS", state_key(p), field) == 1


def restart_processor(fleet, extra_env=None):
    """Stop the point processor (SIGTERM: it checkpoints and leaves the group,
    so the next one joins at once) and start it again, with extra_env for this
    start only."""
    fleet.kill("processor-point", "TERM")
    saved = dict(fleet.env)
    fleet.env.update(extra_env or {})
    try:
        fleet.start("processor-point")
    finally:
        fleet.env.clear()
        fleet.env.update(saved)


def test_damaged_checkpoints_are_rebuilt(fleet):
    pts = Points(fleet)
    (ua, pa), (ub, pb), (uc, pcn), (ud, pd) = users_on_distinct_partitions(4, fleet.partitions)

    # ---- expiry: a 1 s window (command time) for this processor's life.
    # Enough earns at one instant to fill more than one request-id segment
    # (8 KiB each), so the oldest segment can be freed whole.
    restart_processor(fleet, {"PROMO_DEDUPE_WINDOW_MS": "1000"})
    t = pc.now_ms()
    for _ in range(EXPIRY_EARNS - 1):
        topic, key, value, _rid = pc.encode("point", "EarnPoints", {
            "user_id": ua, "amount": 1, "reason": "d071", "expires_at": None}, submitted_at=t)
        pts.producer.produce(topic, key=key, value=value)
    ra1 = pts.earn(ua, 100, submitted_at=t)
    assert pts.balance_after(ra1) == EXPIRY_EARNS - 1 + 100
    wait_until("the earns' ids checkpointed in more than one segment", lambda: len(segments(fleet, pa)) >= 2)
    before = segments(fleet, pa)
    # Five seconds later in command time, every one of them is out of the
    # window: the segments holding only them go, from memory and from Redis.
    ra2 = pts.earn(ua, 50, submitted_at=t + 5000)
    balance_a = EXPIRY_EARNS - 1 + 150
    assert pts.balance_after(ra2) == balance_a
    wait_until("the expired segment deleted from the checkpoint", lambda: min(before) not in segments(fleet, pa))
    assert in_state(fleet, pa, "a:" + ua)

    # ---- gap: Redis loses partition pb's last checkpoint.
    ub2 = user_on_partition(pb, fleet.partitions)
    assert pts.balance_after(pts.earn(ub2, 20)) == 20
    rb1 = pts.earn(ub, 70)
    assert pts.balance_after(rb1) == 70
    wait_until("ub's account in the checkpoint", lambda: in_state(fleet, pb, "a:" + ub))
    seq = int(fleet.redis("HGET", meta_key(pb), "seq"))
    assert seq >= 1
    # Nothing else writes to pb now: the processor checkpoints a partition
    # only when it moved, and only this test sends to it. The lost write
    # held ub2's account; the next delta (another earn of ub) would not
    # carry it again.
    fleet.redis("HSET", meta_key(pb), "seq", seq - 1)
    fleet.redis("HDEL", state_key(pb), "a:" + ub2)
    rb2 = pts.earn(ub, 5)
    assert pts.balance_after(rb2) == 75
    wait_until("a full snapshot restoring ub2's account", lambda: in_state(fleet, pb, "a:" + ub2))
    assert in_state(fleet, pb, "a:" + ub)
    with open(fleet.log_path("processor-point"), errors="replace") as f:
        assert "partition %d: checkpoint %s: GAP" % (pb, meta_key(pb)) in f.read()

    # ---- malformed entry, wrong type: damage that only a restart meets.
    tc = pc.now_ms()
    rc1 = pts.earn(uc, 30, submitted_at=tc)
    rd1 = pts.earn(ud, 40)
    assert pts.balance_after(rc1) == 30 and pts.balance_after(rd1) == 40
    wait_until("uc's and ud's accounts in the checkpoint",
               lambda: in_state(fleet, pcn, "a:" + uc) and in_state(fleet, pd, "a:" + ud))
    fleet.kill("processor-point", "TERM")
    fleet.redis("HSET", state_key(pcn), "r:d071-junk", "not a dedupe entry")
    fleet.redis("DEL", state_key(pd))
    fleet.redis("SET", state_key(pd), "not a hash")
    fleet.start("processor-point")  # the default window again

    # Each balance continues from exactly what was earned, nothing lost or
    # applied twice; the replayed partitions rebuilt the same accounts.
    assert pts.balance_after(pts.earn(ua, 1)) == balance_a + 1
    assert pts.balance_after(pts.earn(ub, 1)) == 76
    assert pts.balance_after(pts.earn(ub2, 1)) == 21
    assert pts.balance_after(pts.earn(uc, 1)) == 31
    assert pts.balance_after(pts.earn(ud, 1)) == 41
    # A repeat gets the first result, from the restored or rebuilt id table.
    again = pts.earn(ua, 50, request_id=ra2, submitted_at=t + 5000)
    assert again == ra2
    assert pts.balance_after(pts.earn(ua, 1)) == balance_a + 2
    rc_again = pts.earn(uc, 30, request_id=rc1, submitted_at=tc)
    assert rc_again == rc1
    assert pts.balance_after(pts.earn(uc, 1)) == 32

    # The damage is gone: the rebuilt partitions were written in full.
    wait_until("the malformed entry replaced", lambda: not in_state(fleet, pcn, "r:d071-junk"))
    wait_until("the wrong-typed state replaced by a hash",
               lambda: fleet.redis("TYPE", state_key(pd)) == "hash" and in_state(fleet, pd, "a:" + ud))
    with open(fleet.log_path("processor-point"), errors="replace") as f:
        log = f.read()
    assert "partition %d: restore" % pcn in log and "partition %d: restore" % pd in log
    assert "replaying from the start" in log
