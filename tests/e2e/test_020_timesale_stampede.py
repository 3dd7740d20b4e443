"""020 — a flash sale: stock 50, 2,000+ concurrent orders from 1,000 users with
a per-user limit of 2, some orders cancelled while the stampede runs (so stock
comes back and sells again), once undisturbed and once with the time-sale
processor killed with SIGKILL mid-run. In the end, over HTTP and in MySQL:
sold + remaining == stock, sold == the quantity of live orders, no user above
the limit, every accepted request has exactly one outcome."""

import random
import signal
import threading
import time

from client import ADMIN, Client, Pool, now_ms

STOCK = 50
LIMIT = 2
USERS = 1000


def create_sale(fleet, sale_id):
    t = now_ms()
    doc = Client(fleet.http_port).run("/v1/time-sales", {
        "sale_id": sale_id, "product_id": "sku-" + sale_id, "name": "flash " + sale_id,
        "original_price": 20000, "sale_price": 9900, "stock": STOCK, "per_user_limit": LIMIT,
        "starts_at": t - 60000, "ends_at": t + 3600000}, key=ADMIN)
    assert doc["status"] == "SUCCEEDED", doc
    assert doc["result"]["remaining"] == STOCK


def run_sale(fleet, sale_id, during=None):
    rng = random.Random(sale_id)
    plan = []
    for u in range(USERS):
        user = "u%04d" % u
        plan.append((user, "%s-%s-a" % (sale_id, user), rng.choice([1, 1, 1, 2])))
        plan.append((user, "%s-%s-b" % (sale_id, user), 1))
    rng.shuffle(plan)
    pool = Pool(fleet.http_port, workers=64)
    placed = []
    lock = threading.Lock()
    cancels = []
    fired = threading.Event()

    def order(c, item):
        user, order_id, qty = item
        rid = c.submit("/v1/time-sales/%s/orders" % sale_id,
                       {"user_id": user, "quantity": qty, "order_id": order_id})
        with lock:
            placed.append(rid)
            if len(placed) == len(plan) // 4:
                fired.set()
        return rid

    def canceller():
        # Cancel the first ten orders that succeed, while orders keep coming.
        c = Client(fleet.http_port)
        seen = 0
        deadline = time.time() + 120
        while len(cancels) < 10 and time.time() < deadline:
            with lock:
                batch = placed[seen:seen + 20]
                seen += len(batch)
            if not batch:
                time.sleep(0.01)
                continue
            for rid in batch:
                o = c.wait(rid, 60)
                if o["status"] == "SUCCEEDED" and len(cancels) < 10:
                    cancels.append(c.submit("/v1/time-sales/%s/orders/%s/cancel" % (sale_id, o["result"]["order_id"]),
                                            None))

    side = [threading.Thread(target=canceller)]
    if during:
        side.append(threading.Thread(target=lambda: (fired.wait(120), during())))
    for s in side:
        s.start()
    t0 = time.time()
    rids = pool.map(order, plan)
    for s in side:
        s.join()
    outcomes = pool.wait_all(rids + cancels, timeout=240)
    print("\n%s: %d orders + %d cancels, all final after %.2f s" % (sale_id, len(rids), len(cancels), time.time() - t0))
    assert len(cancels) == 10
    return plan, rids, cancels, outcomes


def check(fleet, sale_id, plan, rids, cancels, outcomes):
    for rid in cancels:
        assert outcomes[rid]["status"] == "SUCCEEDED", outcomes[rid]
    cancelled = {outcomes[r]["result"]["order_id"] for r in cancels}
    live = {}  # order id -> (user, qty) of orders placed and not cancelled
    for (user, order_id, qty), rid in zip(plan, rids):
        o = outcomes[rid]
        if o["status"] == "SUCCEEDED":
            assert o["result"]["order_id"] == order_id and o["result"]["quantity"] == qty
            if order_id not in cancelled:
                live[order_id] = (user, qty)
        else:
            assert o["reason"] in ("SOLD_OUT", "LIMIT_EXCEEDED"), o
    sold = sum(q for _, q in live.values())
    per_user = {}
    for user, q in live.values():
        per_user[user] = per_user.get(user, 0) + q
    assert max(per_user.values()) <= LIMIT
    assert sold <= STOCK
    # 2,000 orders for 50 units sell out; only units cancelled after the last
    # order was applied may stay unsold.
    restocked = sum(outcomes[r]["result"]["quantity"] for r in cancels)
    assert sold >= STOCK - restocked

    with fleet.mysql() as db, db.cursor() as cur:
        cur.execute("SELECT sold, stock FROM time_sales WHERE sale_id = %s", (sale_id,))
        assert cur.fetchone() == (sold, STOCK)
        cur.execute("SELECT order_id, user_id, quantity FROM sale_orders WHERE sale_id = %s AND status = 'PLACED'",
                    (sale_id,))
        rows = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        assert rows == live
        cur.execute("SELECT COUNT(*) FROM sale_orders WHERE sale_id = %s AND status = 'CANCELLED'", (sale_id,))
        assert cur.fetchone()[0] == len(cancelled)
        cur.execute("SELECT user_id, SUM(quantity) FROM sale_orders WHERE sale_id = %s AND status = 'PLACED'"
                    " GROUP BY user_id HAVING SUM(quantity) > %s", (sale_id, LIMIT))
        assert cur.fetchall() == ()
        cur.execute("SELECT COUNT(*) FROM requests WHERE entity_key = %s", (sale_id,))
        assert cur.fetchone()[0] == 1 + len(rids) + len(cancels)

    status, doc, _ = Client(fleet.http_port).get("/v1/time-sales/" + sale_id)
    assert status == 200 and doc["sold"] == sold and doc["remaining"] == STOCK - sold, doc


def test_timesale_stampede(fleet):
    create_sale(fleet, "flash1")
    check(fleet, "flash1", *run_sale(fleet, "flash1"))


def test_timesale_stampede_processor_killed(fleet):
    create_sale(fleet, "flash2")

    def crash():
        fleet.kill("processor-timesale", signal.SIGKILL)
        time.sleep(0.5)
        fleet.start("processor-timesale")

    check(fleet, "flash2", *run_sale(fleet, "flash2", during=crash))
