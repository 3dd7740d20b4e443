"""074 — a zombie whose results were lost must not take its partitions back
(DESIGN.md §5, fencing).

A second point processor, the zombie-to-be, runs with a 3 s result timeout
and checkpoints only when it loses its partitions. It applies commands while
the broker refuses every result (MESSAGE_TOO_LARGE), and is frozen (SIGSTOP) with
those results still queued. Its session times out and the fleet's processor
takes its partitions over, claiming a new epoch for each. Resumed, the
zombie finds its results failed and its partitions revoked. Replaying from
the last checkpoint is then the new owner's job: the zombie must not claim a
newer epoch for itself (which would fence the rightful owner, who would drop
the partitions and leave them unprocessed). Every partition keeps answering,
every earn counts once, and the fleet's processor is never fenced.
"""

import os
import signal
import sys
import time

from fleet import free_ports
from test_071_checkpoint_damage import Points, pc, users_on_distinct_partitions, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "faults"))
import procs  # noqa: E402


# Long enough for a cold broker on a busy machine to answer the first
# results; the zombie stays frozen longer than this, so its queued ones time
# out.
RESULT_TIMEOUT_MS = 3000


def test_zombie_with_lost_results_does_not_fence_the_owner(fleet):
    pts = Points(fleet)
    main_port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_POINT"])
    users = [u for u, _ in users_on_distinct_partitions(fleet.partitions, fleet.partitions)]
    zombie = procs.Extra(fleet, "point", 74, free_ports(1)[0],
                         env={"PROMO_RESULT_TIMEOUT_MS": str(RESULT_TIMEOUT_MS), "PROMO_CHECKPOINT_MS": "600000"})
    errors_on = False
    try:
        zombie.start()
        wait_until("the zombie-to-be to own partitions",
                   lambda: (zombie.metric("promo_partitions_owned") or 0) > 0
                   and (procs.metric(main_port, "promo_partitions_owned") or 0) < fleet.partitions, 40)
        first = {u: pts.earn(u, 100) for u in users}
        for rid in first.values():
            assert pts.balance_after(rid) == 100
        fenced0 = procs.metric(main_port, "promo_checkpoint_fenced_total")
        applied0 = zombie.metric("promo_commands_applied_total")

        # The next earns reach the zombie only once the broker refuses results.
        zombie.signal(signal.SIGSTOP)
        t = pc.now_ms()
        second = []
        for u in users:
            topic, key, value, rid = pc.encode("point", "EarnPoints", {
                "user_id": u, "amount": 10, "reason": "d074", "expires_at": None}, submitted_at=t)
            pts.producer.produce(topic, key=key, value=value)
            second.append((u, rid))
        assert pts.producer.flush(20) == 0
        fleet.refuse_produce("promo.results")
        errors_on = True
        zombie.signal(signal.SIGCONT)
        wait_until("the zombie to apply them", lambda: zombie.metric("promo_commands_applied_total") > applied0, 20)
        zombie.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        fleet.accept_produce("promo.results")
        errors_on = False

        wait_until("the fleet's processor to own every partition",
                   lambda: procs.metric(main_port, "promo_partitions_owned") == fleet.partitions, 40)
        time.sleep(max(0.0, RESULT_TIMEOUT_MS / 1000 + 0.5 - (time.monotonic() - frozen_at)))
        zombie.signal(signal.SIGCONT)
        wait_until("the zombie to learn it lost its partitions",
                   lambda: zombie.metric("promo_partitions_owned") == 0, 30)

        # Every partition still answers, each earn counted once.
        for u, rid in second:
            assert pts.balance_after(rid) == 110, u
        for u in users:
            assert pts.balance_after(pts.earn(u, 1)) == 111, u
        assert procs.metric(main_port, "promo_checkpoint_fenced_total") == fenced0
    finally:
        if errors_on:
            fleet.accept_produce("promo.results")
        zombie.signal(signal.SIGCONT)
        zombie.stop()
