"""070 — a zombie owner's late checkpoint is refused (fencing, DESIGN.md §5).

A second coupon processor joins the group and takes half the partitions while
coupons are issued steadily. It is then frozen with SIGSTOP: its session times
out (3 s), the group gives its partitions to the fleet's processor, which
claims a new epoch for each. Resumed with SIGCONT, the zombie still believes
it owns them and checkpoints what it applied before the freeze: Redis must
refuse that write (FENCED, promo_checkpoint_fenced_total moves), and the
rightful owner must never be fenced itself: every partition's meta epoch in
the end is the one the fleet's processor claimed on its last assignment. The
outcome must still be right: no policy past its quantity, no user past the
limit, MySQL's issued counts equal to the successful issues, every request
answered once.
"""

import os
import random
import re
import signal
import sys
import threading
import time

from client import ADMIN, Client, Pool, now_ms
from fleet import free_ports

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults"))
import procs  # noqa: E402

POLICIES = 24
QUANTITY = 40
USERS = 150


def wait_until(what, fn, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def last_epochs(log_path):
    """{partition: epoch} from the last 'partition N restored: epoch E' lines."""
    out = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            m = re.search(r"partition (\d+) restored: epoch (\d+)", line)
            if m:
                out[int(m.group(1))] = int(m.group(2))
    return out


def test_zombie_checkpoint_is_fenced(fleet):
    main_port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_COUPON"])
    # The zombie-to-be checkpoints only when it loses its partitions, so it
    # is certain to hold applied-but-unwritten state when frozen: its late
    # write then always comes, and must be refused.
    zombie = procs.Extra(fleet, "coupon", 70, free_ports(1)[0], env={"PROMO_CHECKPOINT_MS": "600000"})
    stop = threading.Event()
    rids, lock = [], threading.Lock()
    try:
        zombie.start()
        wait_until("the zombie-to-be to own partitions",
                   lambda: (zombie.metric("promo_partitions_owned") or 0) > 0
                   and (procs.metric(main_port, "promo_partitions_owned") or 0) < fleet.partitions, 40)

        admin = Client(fleet.http_port, key=ADMIN)
        t = now_ms()
        pids = ["fz-%02d" % i for i in range(POLICIES)]
        created = [admin.submit("/v1/coupon-policies", {
            "policy_id": pid, "name": "fencing " + pid, "discount_type": "FIXED", "discount_value": 1000,
            "min_order_amount": 0, "total_quantity": QUANTITY, "per_user_limit": 1,
            "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000, "valid_days": 7}) for pid in pids]
        for rid in created:
            assert admin.wait(rid, 60)["status"] == "SUCCEEDED"

        def issuer(seed):
            rng = random.Random(seed)
            c = Client(fleet.http_port)
            while not stop.is_set():
                pid = rng.choice(pids)
                rid = c.submit("/v1/coupon-policies/%s/issue" % pid, {"user_id": "u%03d" % rng.randrange(USERS)})
                with lock:
                    rids.append((pid, rid))
                time.sleep(0.03)

        workers = [threading.Thread(target=issuer, args=(i,), daemon=True) for i in range(3)]
        for w in workers:
            w.start()
        wait_until("the zombie-to-be to apply commands",
                   lambda: (zombie.metric("promo_commands_applied_total") or 0) >= 20, 30)

        # Freeze it: its partitions go to the fleet's processor.
        zombie.signal(signal.SIGSTOP)
        wait_until("the fleet's processor to own every partition",
                   lambda: procs.metric(main_port, "promo_partitions_owned") == fleet.partitions, 40)
        time.sleep(1.0)
        assert procs.metric(main_port, "promo_checkpoint_fenced_total") == 0

        # Wake it: its late checkpoint must be refused.
        zombie.signal(signal.SIGCONT)
        wait_until("the zombie's checkpoint to be fenced",
                   lambda: (zombie.metric("promo_checkpoint_fenced_total") or 0) >= 1, 30)
        with open(zombie.log_path, errors="replace") as f:
            assert "FENCED" in f.read()

        time.sleep(3)
        stop.set()
        for w in workers:
            w.join(30)
        zombie.stop()
        wait_until("the fleet's processor to own every partition again",
                   lambda: procs.metric(main_port, "promo_partitions_owned") == fleet.partitions, 40)

        outcomes = Pool(fleet.http_port, workers=16).wait_all([r for _, r in rids], timeout=120)
        time.sleep(1.0)  # a checkpoint or two on the final assignment

        # Read now, asserted last (after the outcome checks): the rightful
        # owner was never fenced, and every partition's epoch is the one it
        # claimed last.
        owner_fenced = procs.metric(main_port, "promo_checkpoint_fenced_total")
        epochs = last_epochs(fleet.log_path("processor-coupon"))
        wrong_epochs = []
        for p in range(fleet.partitions):
            meta = fleet.redis("HGET", "promo:{coupon:%d}:meta" % p, "epoch")
            if meta is None or int(meta) != epochs.get(p):
                wrong_epochs.append("partition %d: meta epoch %s, the owner claimed %s" % (p, meta, epochs.get(p)))

        # The outcome is still right.
        won = {}
        users = set()
        coupon_ids = set()
        for pid, rid in rids:
            o = outcomes[rid]
            if o["status"] == "SUCCEEDED":
                won[pid] = won.get(pid, 0) + 1
                assert o["result"]["coupon_id"] not in coupon_ids, o
                coupon_ids.add(o["result"]["coupon_id"])
                assert (pid, o["result"]["user_id"]) not in users, o
                users.add((pid, o["result"]["user_id"]))
            else:
                assert o["reason"] in ("SOLD_OUT", "LIMIT_EXCEEDED"), o
        assert won and all(n <= QUANTITY for n in won.values()), won

        def mysql_matches():
            rows = dict(fleet.mysql_query("SELECT policy_id, issued FROM coupon_policies WHERE policy_id LIKE 'fz-%%'"))
            return all(rows.get(pid, 0) == won.get(pid, 0) for pid in pids)
        wait_until("MySQL's issued counts to equal the successful issues", mysql_matches, 60)
        n = fleet.mysql_query("SELECT COUNT(*) FROM requests WHERE request_id IN (%s)"
                              % ",".join(["%s"] * len(rids)), [r for _, r in rids])[0][0]
        assert n == len(rids)

        assert owner_fenced == 0, \
            "the fleet's processor (the rightful owner) had %s checkpoints refused: the zombie claimed a new epoch" \
            " after its own write was fenced" % owner_fenced
        assert not wrong_epochs, wrong_epochs
    finally:
        stop.set()
        zombie.signal(signal.SIGCONT)
        zombie.stop()
