"""073 — Redis goes away under the point processors, and a partition moves
while it is gone (DESIGN.md §5).

A second point processor joins, so the partitions are split. Redis stops.
Commands keep coming straight through Kafka: both processors apply them and
deliver their results, but cannot checkpoint (each failed checkpoint is
retried, as a full snapshot). A processor started now refuses to run without
Redis and says why; so does one with a setting librdkafka rejects. The second
processor then leaves the group: its last checkpoint fails too, so its
partitions go back to the fleet's processor, which has to wait for Redis to
restore them. Redis comes back: the fleet's processor restores the
partitions from their last checkpoints and replays the rest. Every balance
counts every earn once, and the processor stayed alive (/healthz) through
it all.
"""

import json
import os
import subprocess
import sys
import urllib.request

from fleet import free_ports
from test_071_checkpoint_damage import Points, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults"))
import procs  # noqa: E402

PREFIX = "d073-"


def run_processor(fleet, env):
    """Runs promo-processor --domain point once with the fleet's settings
    plus env, expecting it to refuse to start; returns (exit code, output)."""
    e = procs.fleet_env(fleet.var)
    e["PROMO_METRICS_PORT"] = "0"
    e.update(env)
    binary = os.path.join(e.get("PROMO_BIN_DIR") or os.path.join(procs.ROOT, "build", "bin"), "promo-processor")
    p = subprocess.run([binary, "--domain", "point"], env=e, cwd=fleet.var, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.returncode, p.stdout.decode(errors="replace")


def test_redis_outage_and_a_rebalance_lose_nothing(fleet):
    pts = Points(fleet)
    main_port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_POINT"])
    users = [PREFIX + "%s-%d" % (os.urandom(4).hex(), i) for i in range(8)]

    # A setting librdkafka refuses stops the start, naming it.
    # (librdkafka names linger.ms by its alias.)
    for var, prop in (("PROMO_LINGER_MS", "queue.buffering.max.ms"), ("PROMO_FETCH_WAIT_MS", "fetch.wait.max.ms")):
        rc, out = run_processor(fleet, {var: "soon"})
        assert rc == 1 and "start failed" in out and '"%s"' % prop in out, (var, rc, out)

    extra = procs.Extra(fleet, "point", 73, free_ports(1)[0])
    redis_down = False
    try:
        extra.start()
        wait_until("the second processor to own partitions",
                   lambda: (extra.metric("promo_partitions_owned") or 0) > 0
                   and (procs.metric(main_port, "promo_partitions_owned") or 0) < fleet.partitions, 40)
        first = {u: pts.earn(u, 100) for u in users}
        for rid in first.values():
            assert pts.balance_after(rid) == 100
        fails_main = procs.metric(main_port, "promo_checkpoint_failures_total")
        fails_extra = extra.metric("promo_checkpoint_failures_total")

        fleet.kill("redis", "TERM")
        redis_down = True
        later = [(u, pts.earn(u, 10), 110) for u in users]
        wait_until("checkpoints failing on both processors",
                   lambda: procs.metric(main_port, "promo_checkpoint_failures_total") > fails_main
                   and extra.metric("promo_checkpoint_failures_total") > fails_extra, 30)

        # Without Redis a processor cannot know where its partitions stopped.
        rc, out = run_processor(fleet, {})
        assert rc == 1 and "start failed: redis" in out, (rc, out)

        # The second processor leaves; the fleet's one inherits partitions it
        # cannot restore yet. More commands meanwhile, for both halves.
        revoked = fleet.logs("processor-point", 100000).count("revoked:")
        extra.stop()
        later += [(u, pts.earn(u, 1), 111) for u in users]
        wait_until("the fleet's processor to give up its partitions for the rebalance",
                   lambda: fleet.logs("processor-point", 100000).count("revoked:") > revoked, 30)
        wait_until("the fleet's processor to retry Redis a few times",
                   lambda: fleet.logs("processor-point", 3).count("Connection refused") == 3, 30)
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % main_port, timeout=5) as r:
            assert r.status == 200 and json.loads(r.read()) == {"status": "ok"}

        fleet.start("redis")
        redis_down = False
        wait_until("the fleet's processor to own every partition",
                   lambda: procs.metric(main_port, "promo_partitions_owned") == fleet.partitions, 60)

        # Every earn counted once, in order per user.
        for u, rid, balance in later:
            assert pts.balance_after(rid) == balance, u
        for u in users:
            assert pts.balance_after(pts.earn(u, 1000)) == 1111, u
        with open(extra.log_path, errors="replace") as f:
            assert "checkpoint before revoke failed" in f.read()
    finally:
        extra.stop()
        if redis_down:
            fleet.start("redis")
