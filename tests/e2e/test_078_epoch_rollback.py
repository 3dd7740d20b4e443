"""078 — fencing survives Redis going back in time (DESIGN.md §5; issue 16).

An owner's epoch used to come from Redis alone (HINCRBY). Restored from an
older copy, Redis hands out again the epochs it handed out since: a new
owner could draw the very epoch a frozen zombie holds, and a stored epoch
below an owner's own read as "fenced" and stalled its partitions. Now each
owner also announces its epoch in the metadata of the group's committed
offsets, which Kafka keeps, and claims above the highest one announced; a
stored epoch below ours is a gap, repaired by a full snapshot.

The scenario, on the point domain, commands published straight to Kafka:

  1. the fleet's point processor owns every partition; earns (round 1) are
     checkpointed; Redis is copied (its AOF rewritten, the files copied);
  2. round 2; a second processor starts and the fleet's stops, so the
     second owns every partition under new epochs; round 3 goes through it;
  3. the second owner is frozen (SIGSTOP), Redis is killed and restored
     from the copy (its epochs and checkpoints are round 1's), and the
     fleet's processor starts again and takes every partition over once
     the frozen one's session ends;
  4. every epoch it claims must be above the one the frozen owner holds:
     without the announcement the restored counter hands the same epoch out
     twice, and the frozen owner's late writes would pass as the owner's;
  5. round 4 settles through it; the frozen owner thaws, rejoins and gets
     partitions (claimed above every announced epoch again), round 5
     settles through both;
  6. Redis is restored from the copy again, under both running owners: a
     stored epoch below an owner's own is a gap repaired by a full snapshot,
     never a fence, so round 6 settles and nobody counts a fenced write;
  7. with the second one gone, round 7 through the fleet's processor alone:
     every balance counts each earn once, and MySQL's ledger holds each
     request once.
"""

import os
import shutil
import signal
import sys
import time

from fleet import free_ports
from test_071_checkpoint_damage import Points, users_on_distinct_partitions, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults"))
import procs  # noqa: E402


def meta_epochs(fleet, partitions):
    out = {}
    for p in partitions:
        v = fleet.redis("HGET", "promo:{point:%d}:meta" % p, "epoch")
        out[p] = int(v) if v is not None else None
    return out


def copy_redis(fleet, dest):
    fleet.redis("BGREWRITEAOF")
    wait_until("the AOF rewrite", lambda: "aof_rewrite_in_progress:0" in fleet.redis("INFO", "persistence")
               and "aof_rewrite_scheduled:0" in fleet.redis("INFO", "persistence"), 30)
    time.sleep(1.2)  # everysec: the last writes reach the file
    shutil.copytree(os.path.join(fleet.var, "redis"), dest)


def restore_redis(fleet, src):
    fleet.kill("redis", "KILL")
    d = os.path.join(fleet.var, "redis")
    shutil.rmtree(d)
    shutil.copytree(src, d)
    fleet.start("redis")


def test_epochs_survive_a_redis_rollback(fleet, tmp_path):
    pts = Points(fleet)
    main_port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_POINT"])
    users = users_on_distinct_partitions(fleet.partitions, fleet.partitions)
    parts = [p for _, p in users]
    expect = {u: 0 for u, _ in users}
    rids = []

    def round_(amount, timeout=60):
        mine = {u: pts.earn(u, amount) for u, _ in users}
        for u, rid in mine.items():
            expect[u] += amount
            assert pts.balance_after(rid, timeout=timeout) == expect[u], u
        rids.extend(mine.values())

    round_(1)
    wait_until("round 1 checkpointed", lambda: all(
        fleet.redis("HGET", "promo:{point:%d}:meta" % p, "seq") not in (None, "0") for p in parts), 30)
    epochs_before = meta_epochs(fleet, parts)
    backup = str(tmp_path / "redis-copy")
    copy_redis(fleet, backup)

    round_(2)
    second = procs.Extra(fleet, "point", 78, free_ports(1)[0])
    frozen = False
    try:
        second.start()
        fleet.kill("processor-point", "TERM")
        wait_until("the second processor to own every partition",
                   lambda: second.metric("promo_partitions_owned") == fleet.partitions, 60)
        held = meta_epochs(fleet, parts)
        assert all(held[p] > epochs_before[p] for p in parts), (epochs_before, held)
        round_(3)

        second.signal(signal.SIGSTOP)
        frozen = True
        restore_redis(fleet, backup)  # epochs back to the copy's, below what the frozen owner holds
        fleet.start("processor-point")
        wait_until("the fleet's processor to own every partition",
                   lambda: procs.metric(main_port, "promo_partitions_owned") == fleet.partitions, 60)
        claimed = meta_epochs(fleet, parts)
        assert all(claimed[p] is not None and claimed[p] > held[p] for p in parts), (held, claimed)
        round_(4, timeout=90)

        second.signal(signal.SIGCONT)
        frozen = False
        # The rebalance re-claims every partition, above every announced epoch.
        wait_until("the thawed processor to rejoin, and every partition claimed anew",
                   lambda: (second.metric("promo_partitions_owned") or 0) > 0
                   and (procs.metric(main_port, "promo_partitions_owned") or 0) > 0
                   and all(e > claimed[p] for p, e in meta_epochs(fleet, parts).items()), 60)
        round_(5, timeout=90)

        # Redis goes back again under two running owners: a stored epoch
        # below theirs is a gap (full snapshots), never a fence and a stall.
        fenced = (procs.metric(main_port, "promo_checkpoint_fenced_total"),
                  second.metric("promo_checkpoint_fenced_total"))
        restore_redis(fleet, backup)
        round_(6, timeout=60)
        assert (procs.metric(main_port, "promo_checkpoint_fenced_total"),
                second.metric("promo_checkpoint_fenced_total")) == fenced
    finally:
        if frozen:
            second.signal(signal.SIGCONT)
        second.stop()
        if fleet.status().get("processor-point") is None:
            fleet.start("processor-point")

    round_(7)  # the fleet's processor alone again
    with fleet.mysql() as db, db.cursor() as cur:
        marks = ",".join(["%s"] * len(rids))
        cur.execute("SELECT request_id, COUNT(*) FROM point_ledger WHERE request_id IN (%s) GROUP BY request_id"
                    % marks, rids)
        counts = dict(cur.fetchall())
        assert sorted(counts) == sorted(rids) and set(counts.values()) == {1}, counts
        for u, _ in users:
            cur.execute("SELECT balance FROM point_accounts WHERE user_id = %s", (u,))
            assert cur.fetchone()[0] == expect[u], u
