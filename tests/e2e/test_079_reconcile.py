"""079 — promoctl reconcile finds where MySQL disagrees with the engine's
results log, and --repair mends it (issue 16, item 4).

On the fleet every other test has used (so the whole log is compared):
coupons, orders and point changes go through HTTP and settle. Then MySQL is
damaged in the ways public FCFS builds have drifted, and results are
skipped the way a lost stretch of the log would skip them:

  - a coupon row deleted, a policy's issued counter bent;
  - an account's balance bent and one of its ledger entries deleted;
  - a sale's sold counter bent;
  - a request's row deleted;
  - with the sink stopped, more commands are decided and the sink group's
    committed offsets are moved past their results, so the sink never
    writes them.

`promoctl reconcile` then exits 1 and names each damaged entity and the
request; `--repair` writes the log's results of those again through the
sink's own writer and exits 0; MySQL then holds the right rows, counters
and ledger, and a plain reconcile agrees (exit 0).
"""

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from client import ADMIN, Client, now_ms
from test_080_promoctl import ctl


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def skip_sink_past_everything(fleet):
    """Commits the (stopped) sink group's offsets at the end of promo.results."""
    c = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": "promo-sink-mysql",
                  "enable.auto.commit": False})
    try:
        parts = c.list_topics("promo.results", timeout=10).topics["promo.results"].partitions
        tps = []
        for p in parts:
            _, high = c.get_watermark_offsets(TopicPartition("promo.results", p), timeout=10)
            tps.append(TopicPartition("promo.results", p, high))
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def test_reconcile_finds_and_repairs(fleet):
    c = Client(fleet.http_port)
    t = now_ms()
    pol, sale = unique("rc-pol"), unique("rc-sale")
    users = [unique("rc-u") for _ in range(4)]
    assert c.run("/v1/coupon-policies", {
        "policy_id": pol, "name": "reconcile", "discount_type": "FIXED", "discount_value": 100,
        "total_quantity": 10, "per_user_limit": 1, "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000,
        "valid_days": 7}, key=ADMIN)["status"] == "SUCCEEDED"
    assert c.run("/v1/time-sales", {
        "sale_id": sale, "product_id": "p", "name": "reconcile", "original_price": 1000, "sale_price": 500,
        "stock": 10, "per_user_limit": 2, "starts_at": t - 60000, "ends_at": t + 3600000},
        key=ADMIN)["status"] == "SUCCEEDED"
    rids = []
    for u in users:
        rids.append(c.run("/v1/coupon-policies/%s/issue" % pol, {"user_id": u})["request_id"])
        assert c.run("/v1/time-sales/%s/orders" % sale, {"user_id": u, "quantity": 1})["status"] == "SUCCEEDED"
        for amount in (100, 50):
            assert c.run("/v1/points/%s/earn" % u, {"amount": amount, "reason": "rc"}, key=ADMIN)["status"] \
                == "SUCCEEDED"

    rc, out, err = ctl(fleet, "reconcile", timeout=120)
    assert rc == 0, (rc, out, err)
    assert "differences: 0 entities, 0 requests without a row" in out, out

    # Results the sink never sees.
    fleet.kill("sink-mysql", "TERM")
    skipped_user = unique("rc-skip")
    skipped = [c.post("/v1/points/%s/earn" % skipped_user, {"amount": 7, "reason": "rc"}, key=ADMIN)[1]
               ["request_id"] for _ in range(2)]
    skipped.append(c.post("/v1/coupon-policies/%s/issue" % pol, {"user_id": skipped_user})[1]["request_id"])
    # Decided in the log (the processors answer) before the sink's offsets move past them.
    _wait_results(fleet, skipped)
    skip_sink_past_everything(fleet)
    fleet.start("sink-mysql")

    with fleet.mysql() as db, db.cursor() as cur:
        cur.execute("DELETE FROM coupons WHERE policy_id = %s AND user_id = %s", (pol, users[0]))
        cur.execute("UPDATE coupon_policies SET issued = issued + 5 WHERE policy_id = %s", (pol,))
        cur.execute("UPDATE point_accounts SET balance = balance + 1 WHERE user_id = %s", (users[1],))
        cur.execute("DELETE FROM point_ledger WHERE user_id = %s AND seq = 1", (users[2],))
        cur.execute("UPDATE time_sales SET sold = sold - 1 WHERE sale_id = %s", (sale,))
        cur.execute("DELETE FROM requests WHERE request_id = %s", (rids[3],))
        db.commit()

    rc, out, err = ctl(fleet, "reconcile", timeout=120)
    assert rc == 1, (rc, out, err)
    for name in (pol, users[1], users[2], sale, skipped_user):
        assert name in out, (name, out)
    assert "request %s: decided in the log, no row in requests" % rids[3] in out, out

    rc, out, err = ctl(fleet, "reconcile", "--repair", timeout=180)
    assert rc == 0, (rc, out, err)
    assert "after repair: 0 entities differ, 0 requests without a row" in out, out

    with fleet.mysql() as db, db.cursor() as cur:
        cur.execute("SELECT COUNT(*), (SELECT issued FROM coupon_policies WHERE policy_id = %s) FROM coupons "
                    "WHERE policy_id = %s", (pol, pol))
        assert cur.fetchone() == (5, 5)
        cur.execute("SELECT balance FROM point_accounts WHERE user_id = %s", (skipped_user,))
        assert cur.fetchone() == (14,)
        for u in users[1:3]:
            cur.execute("SELECT a.balance, SUM(l.delta), COUNT(*), MAX(l.seq) FROM point_accounts a JOIN point_ledger l"
                        " ON l.user_id = a.user_id WHERE a.user_id = %s GROUP BY a.balance", (u,))
            assert tuple(int(x) for x in cur.fetchone()) == (150, 150, 2, 2), u
        cur.execute("SELECT sold FROM time_sales WHERE sale_id = %s", (sale,))
        assert cur.fetchone() == (4,)
        marks = ",".join(["%s"] * (len(skipped) + 1))
        cur.execute("SELECT COUNT(*) FROM requests WHERE request_id IN (%s)" % marks, skipped + [rids[3]])
        assert cur.fetchone() == (len(skipped) + 1,)
    rc, out, err = ctl(fleet, "reconcile", timeout=120)
    assert rc == 0, (rc, out, err)


def _wait_results(fleet, rids, timeout=60):
    """Until every request id has a result in promo.results."""
    c = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": "e2e-079-%s" % uuid.uuid4().hex[:6],
                  "enable.auto.commit": False})
    try:
        parts = c.list_topics("promo.results", timeout=10).topics["promo.results"].partitions
        c.assign([TopicPartition("promo.results", p, OFFSET_BEGINNING) for p in parts])
        want = {r.encode() for r in rids}
        deadline = time.time() + timeout
        while want:
            assert time.time() < deadline, "results missing for %s" % want
            for m in c.consume(1000, 0.5):
                if not m.error():
                    v = m.value()
                    for r in list(want):
                        if r in v[:80]:
                            want.discard(r)
    finally:
        c.close()
