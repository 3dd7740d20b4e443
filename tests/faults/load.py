"""load.py — the steady mixed load the fault suite runs under its faults.

Worker threads send coupons (issue, and issue → redeem → sometimes cancel the
redemption), points (earn, use, cancel a use) and time-sale orders (place,
cancel), at a bounded total rate, through ingest over HTTP like any client.
Every request carries its own Idempotency-Key, so a retry after a 503 or a
dropped connection is the same request; on purpose, some requests are sent
again unchanged (repeats: the first outcome must come back and nothing
change) and some keys are reused with a different body on the same entity
(IDEMPOTENCY_KEY_REUSED: ingest refuses those at once with 422 when it holds
the key's fingerprint, and otherwise, with Redis down when the key was first
used or now, lets the processor reject them). A request counts as accepted
when ingest answered 202; the verifier later checks that each accepted one has exactly one
outcome. The load never waits on the fleet except in the coupon flow, which
needs an issued coupon id, and gives that up after a timeout.

Half of the time-sale orders (and their cancels) go to one sale, the
stampede (Load.hot_key, its first sale): that sale's key makes one partition
of promo.timesale.cmd (and the same partition number of promo.results) the
hottest of the run, and the fault suite aims broker faults at its leader
(hot_partition() finds the partition the way ingest does, with murmur2).
"""

import json
import random
import threading
import time

from client import ADMIN, CLIENT, Client, now_ms
# Kafka's murmur2, ingest's and the Java client's partitioner: the hot key's partition.
from test_050_direct_producers import murmur2_partition

RETRYABLE = (429, 500, 502, 503, 504)


class Load:
    def __init__(self, port, rate=100.0, workers=10, seed=1, tag="f", hook=None):
        self.port, self.rate, self.workers, self.seed, self.tag = port, rate, workers, seed, tag
        self.hook = hook  # a hooks.Receiver: some requests ask for a callback to it
        self.hooked = []  # accepted request ids that carry a callback_url
        self.lock = threading.Lock()
        self.accepted = []  # request ids answered 202, in order
        self.accepted_at = []  # time.time() of each
        self.stats = {"sent": 0, "retries": 0, "given_up": 0, "unexpected": 0, "repeats": 0, "reused": 0,
                      "reuse_refused": 0}
        self.unexpected = []
        self.stop_event = threading.Event()
        self.threads = []
        self._next = time.time()
        self.policies, self.sales = [], []
        self.coupon_users = ["cu%03d" % i for i in range(300)]
        self.point_users = ["pu%03d" % i for i in range(150)]
        self.sale_users = ["su%03d" % i for i in range(300)]

    # ---- sending -----------------------------------------------------------------

    def send(self, c, path, body, rid, key=CLIENT, deadline_s=90, reuse=False):
        """POSTs with Idempotency-Key rid, retrying what a client would retry
        with the same key. Returns the request id when accepted, else None.
        With reuse (rid holds another request), 422 IDEMPOTENCY_KEY_REUSED is
        an expected answer too."""
        deadline = time.time() + deadline_s
        with self.lock:
            self.stats["sent"] += 1
        while True:
            try:
                status, doc, _ = c.post(path, body, key=key, headers={"Idempotency-Key": rid})
            except Exception as e:  # connection trouble: same key again
                status, doc = 0, str(e)
            if status == 202:
                with self.lock:
                    self.accepted.append(rid)
                    self.accepted_at.append(time.time())
                return rid
            if reuse and status == 422 and isinstance(doc, dict) and \
                    doc.get("error", {}).get("code") == "IDEMPOTENCY_KEY_REUSED":
                with self.lock:
                    self.stats["reuse_refused"] += 1
                return None
            if (status in RETRYABLE or status == 0) and time.time() < deadline and not self._hard_stop():
                with self.lock:
                    self.stats["retries"] += 1
                time.sleep(0.2)
                continue
            with self.lock:
                if status in RETRYABLE or status == 0:
                    self.stats["given_up"] += 1
                else:
                    self.stats["unexpected"] += 1
                    if len(self.unexpected) < 20:
                        self.unexpected.append("%s %s -> %s %s" % (path, json.dumps(body), status, doc))
            return None

    def _hard_stop(self):
        return getattr(self, "hard_stop", False)

    def _pace(self):
        with self.lock:
            now = time.time()
            self._next = max(self._next + 1.0 / self.rate, now - 1.0)
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)

    # ---- setup -------------------------------------------------------------------------

    def setup(self, n_policies=10, n_sales=8):
        """Creates the policies and sales (and waits for them)."""
        c = Client(self.port, key=ADMIN)
        t = now_ms()
        rng = random.Random(self.seed)
        rids = []
        for i in range(n_policies):
            pid = "%s-pol-%02d" % (self.tag, i)
            pct = i % 3 == 2
            body = {"policy_id": pid, "name": "fault policy %d" % i,
                    "discount_type": "PERCENT" if pct else "FIXED",
                    "discount_value": 15 if pct else 1000 + 500 * i, "max_discount": 3000 if pct else None,
                    "min_order_amount": 5000, "total_quantity": rng.choice([200, 400, 800]),
                    "per_user_limit": 3, "issue_starts_at": t - 60000, "issue_ends_at": t + 6 * 3600000,
                    "valid_days": 30}
            if body["max_discount"] is None:
                del body["max_discount"]
            rids.append(self.send(c, "/v1/coupon-policies", body, "%s-cp-%02d" % (self.tag, i), key=ADMIN))
            self.policies.append(pid)
        for i in range(n_sales):
            sid = "%s-sale-%02d" % (self.tag, i)
            # The last sale ends soon: later orders meet ENDED.
            ends = t + 45000 if i == n_sales - 1 else t + 6 * 3600000
            # The stampede's sale (the first) has the most stock of all.
            stock = rng.choice([150, 300, 600]) if i else 600
            body = {"sale_id": sid, "product_id": "sku-%d" % i, "name": "fault sale %d" % i,
                    "original_price": 20000, "sale_price": 9900, "stock": stock,
                    "per_user_limit": 3, "starts_at": t - 60000, "ends_at": ends}
            rids.append(self.send(c, "/v1/time-sales", body, "%s-cs-%02d" % (self.tag, i), key=ADMIN))
            self.sales.append(sid)
        for rid in rids:
            assert rid, "setup request not accepted"
            doc = c.wait(rid, 120)
            assert doc["status"] == "SUCCEEDED", doc

    # ---- the workers --------------------------------------------------------------------

    def start(self):
        for w in range(self.workers):
            t = threading.Thread(target=self._worker, args=(w,), daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, timeout=120):
        self.stop_event.set()
        deadline = time.time() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.time()))
        self.hard_stop = True

    @property
    def hot_key(self):
        """The entity key most requests go to: the stampede's sale."""
        return self.sales[0]

    def hot_partition(self, partitions):
        """(topic, partition) of the hot key's commands."""
        return "promo.timesale.cmd", murmur2_partition(self.hot_key, partitions)

    def accepted_between(self, t0, t1):
        with self.lock:
            return sum(1 for t in self.accepted_at if t0 <= t < t1)

    def _worker(self, w):
        rng = random.Random(self.seed * 1000 + w)
        c = Client(self.port)
        admin = Client(self.port, key=ADMIN)
        n = 0
        history = []  # (path, body, rid, key) of accepted requests, for repeats
        uses, orders = [], []  # (user, order id), (sale, order id)
        actions = [("issue", 25), ("flow", 6), ("earn", 12), ("use", 14), ("pcancel", 6),
                   ("order", 22), ("ocancel", 7), ("repeat", 7), ("reuse", 1)]
        names = [a for a, _ in actions]
        weights = [wt for _, wt in actions]
        while not self.stop_event.is_set():
            self._pace()
            n += 1
            rid = "%s-%d-%d" % (self.tag, w, n)
            act = rng.choices(names, weights)[0]
            key, path, body = CLIENT, None, None
            if act == "issue":
                pid = rng.choice(self.policies)
                path, body = "/v1/coupon-policies/%s/issue" % pid, {"user_id": rng.choice(self.coupon_users)}
            elif act == "flow":
                self._flow(c, rng, rid)
                continue
            elif act == "earn":
                u = rng.choice(self.point_users)
                key, path, body = ADMIN, "/v1/points/%s/earn" % u, {"amount": rng.randint(100, 1000), "reason": "buy"}
            elif act == "use":
                u = rng.choice(self.point_users)
                oid = "po-%d-%d" % (w, n)
                path, body = "/v1/points/%s/use" % u, {"amount": rng.randint(50, 900), "order_id": oid}
                uses.append((u, oid))
            elif act == "pcancel":
                if not uses:
                    continue
                u, oid = rng.choice(uses[-50:])
                path, body = "/v1/points/%s/cancel" % u, {"order_id": oid}
            elif act == "order":
                sid = self.hot_key if rng.random() < 0.5 else rng.choice(self.sales)
                oid = "so-%d-%d" % (w, n)
                path = "/v1/time-sales/%s/orders" % sid
                body = {"user_id": rng.choice(self.sale_users), "quantity": rng.choice([1, 1, 2]), "order_id": oid}
                orders.append((sid, oid))
            elif act == "ocancel":
                if not orders:
                    continue
                sid, oid = rng.choice(orders[-50:])
                path, body = "/v1/time-sales/%s/orders/%s/cancel" % (sid, oid), None
            elif act == "repeat":
                if not history:
                    continue
                path, body, rid, key = rng.choice(history[-30:])
                with self.lock:
                    self.stats["repeats"] += 1
            elif act == "reuse":
                # Same key, different body, same entity (so the same partition).
                cands = [h for h in history[-30:] if "/issue" in h[0] or "/earn" in h[0]]
                if not cands:
                    continue
                path, body, rid, key = rng.choice(cands)
                body = dict(body)
                if "user_id" in body:
                    body["user_id"] = rng.choice(self.coupon_users)
                else:
                    body["amount"] += 1
                with self.lock:
                    self.stats["reused"] += 1
            hooked = False
            if self.hook and act not in ("repeat", "reuse") and body is not None and rng.random() < 0.1:
                body = dict(body, callback_url=self.hook.url(rid))
                hooked = True
            got = self.send(admin if key == ADMIN else c, path, body, rid, key=key, reuse=act == "reuse")
            if got and hooked:
                with self.lock:
                    self.hooked.append(rid)
            if got and act not in ("repeat", "reuse"):
                history.append((path, body, rid, key))
                if len(history) > 200:
                    del history[:100]
            if len(uses) > 200:
                del uses[:100]
            if len(orders) > 200:
                del orders[:100]

    def _flow(self, c, rng, rid):
        """Issue, wait for the coupon, redeem it, sometimes cancel that."""
        pid = rng.choice(self.policies)
        user = rng.choice(self.coupon_users)
        if not self.send(c, "/v1/coupon-policies/%s/issue" % pid, {"user_id": user}, rid):
            return
        try:
            doc = c.wait(rid, 20)
        except Exception:
            return
        if doc.get("status") != "SUCCEEDED" or self.stop_event.is_set():
            return
        cid = doc["result"]["coupon_id"]
        oid = "co-" + rid
        r2 = self.send(c, "/v1/coupons/%s/redeem" % cid,
                       {"user_id": user, "order_id": oid, "order_amount": rng.choice([3000, 12000, 50000])},
                       rid + "-r")
        if r2 and rng.random() < 0.4:
            self.send(c, "/v1/coupons/%s/cancel" % cid, {"order_id": oid}, rid + "-c")
