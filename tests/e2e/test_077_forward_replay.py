"""077 — forwarded commands are applied once through crashes and replays
(DESIGN.md §3 and §5).

A processor that finds a command on another partition than its key's owner
forwards it there; the forward is acknowledged before a checkpoint passes it,
so a crash of the forwarder loses none, and the replay forwards again what
came after its checkpoint. The owner's dedupe answers those repeats with the
first result, byte for byte, and the MySQL sink, being idempotent, changes
nothing for them:

  kill      a stream of IssueCoupon commands from confluent_kafka's default
            producer (CRC32: every one on a partition the policy does not
            live on) while the coupon processor is SIGKILLed between two
            checkpoints and started again: every request SUCCEEDED once, one
            coupon each, serials 1..N without a gap or a double, and the
            policy's issued count is N, in MySQL and over HTTP
  replay    a partition whose checkpoint is gone replays from the start of
            its log, but must not forward again what an earlier owner
            forwarded (below the group's committed offset): the owner keeps
            request ids for 24 h of command time only, and would apply an
            older forwarded command a second time
"""

import json
import os
import threading
import time

from client import ADMIN, Client
from confluent_kafka import Consumer, TopicPartition
from test_050_direct_producers import murmur2_partition
from test_071_checkpoint_damage import Points, pc, wait_until
from test_075_oversized_dead_letter import crc32_partition, default_producer, misplaced, procs, settled

DAY_MS = 86400 * 1000


def restart(fleet, name, extra_env=None):
    """SIGTERM one processor (it checkpoints and leaves the group) and start
    it again, with extra_env for this start only."""
    fleet.kill(name, "TERM")
    saved = dict(fleet.env)
    fleet.env.update(extra_env or {})
    try:
        fleet.start(name)
    finally:
        fleet.env.clear()
        fleet.env.update(saved)


def meta(fleet, domain, p, field):
    v = fleet.redis("HGET", "promo:{%s:%d}:meta" % (domain, p), field)
    return int(v) if v is not None else None


def committed(fleet, group, topic, p):
    """The group's committed offset of one partition (OffsetFetch, without
    joining the group); None when nothing is committed."""
    c = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": group, "enable.auto.commit": False})
    try:
        off = c.committed([TopicPartition(topic, p)], timeout=10)[0].offset
        return off if off >= 0 else None
    finally:
        c.close()


def test_forwarder_killed_mid_stream(fleet):
    n = fleet.partitions
    port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_COUPON"])
    c = Client(fleet.http_port)
    policy = misplaced("d077p", n)
    landed = crc32_partition(policy, n)
    t = pc.now_ms()
    doc = c.run("/v1/coupon-policies", {
        "policy_id": policy, "name": "d077", "discount_type": "FIXED", "discount_value": 100,
        "min_order_amount": 0, "total_quantity": 1000000, "per_user_limit": 1000000,
        "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000, "valid_days": 7}, key=ADMIN)
    assert doc["status"] == "SUCCEEDED", doc

    # Checkpoints 2 s apart for this process, so the kill below lands well
    # after the last one: everything forwarded since is forwarded again.
    restart(fleet, "processor-coupon", {"PROMO_CHECKPOINT_MS": "2000"})

    users = ["d077u%02d-%s" % (i, os.urandom(3).hex()) for i in range(25)]
    tag = "d077k%s-" % os.urandom(4).hex()  # no "_": it is LIKE's wildcard
    sent, partitions, errors = [], set(), []
    stop = threading.Event()

    def stream():
        prod = default_producer(fleet)

        def on_delivery(err, m):
            if err is not None:
                errors.append(err)
            else:
                partitions.add(m.partition())

        i = 0
        while not stop.is_set():
            user = users[i % len(users)]
            topic, key, value, rid = pc.encode("coupon", "IssueCoupon", {"policy_id": policy, "user_id": user},
                                               request_id="%s%05d" % (tag, i))
            prod.produce(topic, key=key, value=value, on_delivery=on_delivery)
            sent.append((rid, user))
            prod.poll(0)
            i += 1
            time.sleep(0.004)
        if prod.flush(60) != 0:
            errors.append("not all acknowledged")

    th = threading.Thread(target=stream)
    th.start()
    try:
        wait_until("a few hundred commands", lambda: len(sent) >= 300, 30)
        seq = meta(fleet, "coupon", landed, "seq")
        wait_until("a checkpoint of the forwarding partition", lambda: meta(fleet, "coupon", landed, "seq") != seq, 30)
        time.sleep(1.0)
        fleet.kill("processor-coupon", "KILL")
        fleet.start("processor-coupon")
        time.sleep(1.0)
    finally:
        stop.set()
        th.join(120)
    assert not th.is_alive() and not errors, errors
    assert partitions == {landed} and landed != murmur2_partition(policy, n), partitions
    total = len(sent)

    # Every request once in MySQL, SUCCEEDED.
    like = tag + "%"
    wait_until("%d requests in MySQL" % total, lambda: fleet.mysql_query(
        "SELECT COUNT(*) FROM requests WHERE request_id LIKE %s", (like,))[0][0] == total, 120)
    rows = fleet.mysql_query("SELECT request_id, status, result FROM requests WHERE request_id LIKE %s", (like,))
    assert len(rows) == total and all(r[1] == "SUCCEEDED" for r in rows), [r for r in rows if r[1] != "SUCCEEDED"]
    # One coupon each, the serials 1..N, none twice.
    by_request = {rid: json.loads(result)["result"]["coupon_id"] for rid, _status, result in rows}
    assert sorted(by_request.values(), key=lambda cid: int(cid.rsplit(":", 1)[1])) == [
        "%s:%d" % (policy, i) for i in range(1, total + 1)]
    # GET agrees with MySQL for a sample, including the requests around the kill.
    for rid, _user in sent[::max(1, total // 40)]:
        d = settled(fleet, rid)
        assert d["status"] == "SUCCEEDED" and d["result"]["coupon_id"] == by_request[rid], d

    # The sink doubled nothing: N coupons, each user's count its requests'.
    per_user = {}
    for _rid, user in sent:
        per_user[user] = per_user.get(user, 0) + 1
    wait_until("%d coupons in MySQL" % total, lambda: fleet.mysql_query(
        "SELECT COUNT(*) FROM coupons WHERE policy_id = %s", (policy,))[0][0] == total, 60)
    rows = fleet.mysql_query("SELECT user_id, COUNT(*) FROM coupons WHERE policy_id = %s GROUP BY user_id", (policy,))
    assert dict(rows) == per_user
    wait_until("issued = %d in MySQL" % total, lambda: fleet.mysql_query(
        "SELECT issued FROM coupon_policies WHERE policy_id = %s", (policy,)) == ((total,),), 60)
    status, doc, _ = c.get("/v1/coupon-policies/" + policy)
    assert status == 200 and doc["issued"] == total, doc

    # The replay did forward again, and the owner answered with first results.
    assert procs.metric(port, "promo_requests_repeated_total") > 0
    assert procs.metric(port, "promo_commands_forwarded_total") > 0


def test_full_replay_does_not_forward_again(fleet):
    n = fleet.partitions
    port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_POINT"])
    pts = Points(fleet)
    user = misplaced("d077r", n)
    landed = crc32_partition(user, n)
    t = pc.now_ms()

    # Forwarded: an earn stamped two days ago, so that once the owner has a
    # later command its request id is out of the 24 h window.
    topic, key, value, rid = pc.encode("point", "EarnPoints", {
        "user_id": user, "amount": 10, "reason": "d077", "expires_at": None}, submitted_at=t - 2 * DAY_MS)
    dm = pc.send(default_producer(fleet), topic, key.encode(), value)
    assert dm.partition() == landed
    assert pts.balance_after(rid) == 10
    assert pts.balance_after(pts.earn(user, 1, submitted_at=t)) == 11
    wait_until("the group's offset past the forwarded earn",
               lambda: (committed(fleet, "promo-point", topic, landed) or -1) > dm.offset(), 30)

    # The forwarding partition loses its checkpoint and replays its log.
    fleet.kill("processor-point", "TERM")
    fleet.redis("DEL", "promo:{point:%d}:meta" % landed, "promo:{point:%d}:state" % landed)
    fleet.start("processor-point")
    wait_until("the replay checkpointed past the forwarded earn",
               lambda: (meta(fleet, "point", landed, "offset") or -1) > dm.offset(), 60)

    # Forwarded again, the earn would be applied again: 22.
    assert pts.balance_after(pts.earn(user, 1, submitted_at=t + 1)) == 12
    assert procs.metric(port, "promo_commands_forward_skipped_total") >= 1
    wait_until("3 ledger entries in MySQL", lambda: len(fleet.mysql_query(
        "SELECT request_id FROM point_ledger WHERE user_id = %s", (user,))) >= 3, 30)
    time.sleep(1.0)  # a doubled earn's entry would come in the same or the next batch
    rows = fleet.mysql_query("SELECT request_id, delta FROM point_ledger WHERE user_id = %s ORDER BY seq", (user,))
    assert [r[1] for r in rows] == [10, 1, 1] and rows[0][0] == rid, rows
