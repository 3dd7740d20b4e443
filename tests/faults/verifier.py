"""verifier.py — recomputes what the fleet should have done from the command
log alone and compares it with what MySQL holds.

The reference model here is a second, independent statement of the domain
rules (DESIGN.md §2), written from the contract rather than from the C state
machines: it reads every command from the three command topics from the
beginning (confluent_kafka), decodes them with python3-avro, applies each
partition in offset order with now = submitted_at, dedupes by request id with
a fingerprint of the command, and so knows the one outcome every request must
have. It then checks, per request, the `requests` table (exactly one outcome,
the right status, reason and outcome fields) and, per entity, the read models
(policy issued counts and coupons, balances against their ledgers, sold
counts against stock and orders), and that every result published for a
request id is byte-identical (a replay after a crash must repeat itself).

The model covers what the fault suite's load sends: points without expiry
(the suite never earns expiring points), coupons whose validity outlasts the
run. Anything outside that is reported as unmodelled rather than guessed.

Standalone use: verifier.py --bootstrap HOST:PORT --mysql-port N [--accepted FILE]
"""

import argparse
import json
import os
import sys
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CMD_TOPICS = {"promo.coupon.cmd": 1, "promo.point.cmd": 2, "promo.timesale.cmd": 3}
RESULTS_TOPIC = "promo.results"


# ---- log reading and decoding --------------------------------------------------

def _strip_logical(node):
    """python3-avro turns timestamp-millis into datetimes; the contract's
    values are plain milliseconds, so the logical types are dropped."""
    if isinstance(node, dict):
        return {k: _strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


class Decoder:
    def __init__(self):
        import avro.io
        import avro.schema
        self._io = avro.io
        self.readers = {}
        for sid, fn in ((1, "coupon_command"), (2, "point_command"), (3, "timesale_command"), (4, "result")):
            with open(os.path.join(ROOT, "schemas", fn + ".avsc")) as f:
                schema = avro.schema.parse(json.dumps(_strip_logical(json.load(f))))
            self.readers[sid] = avro.io.DatumReader(schema)

    def decode(self, payload, want_id):
        import io
        if len(payload) < 5 or payload[0] != 0:
            raise ValueError("not Confluent framing")
        sid = int.from_bytes(payload[1:5], "big")
        if sid != want_id:
            raise ValueError("schema id %d, want %d" % (sid, want_id))
        return self.readers[sid].read(self._io.BinaryDecoder(io.BytesIO(payload[5:])))


def read_topics(bootstrap, topics, timeout=120):
    """{topic: {partition: [(offset, key, value), ...]}} for everything the
    topics hold now, and {(topic, partition): low watermark} (non-zero means
    the broker dropped old data)."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-verifier-%d" % os.getpid(),
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "auto.offset.reset": "earliest", "fetch.max.bytes": 8 << 20})
    try:
        md = c.list_topics(timeout=30)
        want, out, lows = {}, {}, {}
        assign = []
        for t in topics:
            out[t] = {}
            for p in md.topics[t].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=30)
                lows[(t, p)] = lo
                out[t][p] = []
                if hi > lo:
                    want[(t, p)] = hi
                    assign.append(TopicPartition(t, p, OFFSET_BEGINNING))
        if assign:
            c.assign(assign)
        deadline = time.time() + timeout
        while want and time.time() < deadline:
            for m in c.consume(1000, 1.0):
                if m.error():
                    continue
                tp = (m.topic(), m.partition())
                out[m.topic()][m.partition()].append((m.offset(), m.key(), m.value()))
                if tp in want and m.offset() + 1 >= want[tp]:
                    del want[tp]
        if want:
            raise RuntimeError("could not read the log to its end: %s" % sorted(want))
        return out, lows
    finally:
        c.close()


# ---- the reference model -----------------------------------------------------------

def command_type(domain, cmd):
    """The command record's name, from its fields (python3-avro gives the
    union's value without the branch name)."""
    k = set(cmd)
    if domain == "coupon":
        if "discount_type" in k:
            return "CreateCouponPolicy"
        if "coupon_id" in k:
            return "RedeemCoupon" if "user_id" in k else "CancelRedemption"
        return "IssueCoupon"
    if domain == "point":
        if "reason" in k:
            return "EarnPoints"
        return "UsePoints" if "amount" in k else "CancelPointUse"
    if "product_id" in k:
        return "CreateTimeSale"
    return "PlaceOrder" if "user_id" in k else "CancelOrder"


def ok(**fields):
    return dict(status="SUCCEEDED", reason=None, **fields)


def rej(reason, **fields):
    return dict(status="REJECTED", reason=reason, **fields)


class CouponModel:
    def __init__(self):
        self.policies = {}

    @staticmethod
    def discount(d, amount):
        if d["discount_type"] == "PERCENT":
            x = amount * d["discount_value"] // 100
            if d["max_discount"] is not None:
                x = min(x, d["max_discount"])
        else:
            x = d["discount_value"]
        return max(0, min(x, amount))

    @staticmethod
    def expiry(d, issued_at):
        e = None
        if d["valid_days"] is not None:
            e = issued_at + d["valid_days"] * 86400000
        if d["valid_until"] is not None:
            e = d["valid_until"] if e is None else min(e, d["valid_until"])
        return e

    def _coupon(self, coupon_id):
        pid, _, serial = coupon_id.rpartition(":")
        p = self.policies.get(pid)
        if p is None or not serial.isdigit() or not 1 <= int(serial) <= len(p["coupons"]):
            return p, None
        return p, p["coupons"][int(serial) - 1]

    def apply(self, t, c, now):
        if t == "CreateCouponPolicy":
            if c["policy_id"] in self.policies:
                return rej("ALREADY_EXISTS")
            self.policies[c["policy_id"]] = {"def": dict(c), "issued": 0, "coupons": [], "per_user": {},
                                             "version": 1}
            return ok(remaining=c["total_quantity"], issued=0)
        if t == "IssueCoupon":
            p = self.policies.get(c["policy_id"])
            if p is None:
                return rej("NOT_FOUND")
            d = p["def"]
            if now < d["issue_starts_at"]:
                return rej("NOT_STARTED")
            if now >= d["issue_ends_at"]:
                return rej("ENDED")
            if p["per_user"].get(c["user_id"], 0) >= d["per_user_limit"]:
                return rej("LIMIT_EXCEEDED")
            if p["issued"] >= d["total_quantity"]:
                return rej("SOLD_OUT")
            p["issued"] += 1
            p["per_user"][c["user_id"]] = p["per_user"].get(c["user_id"], 0) + 1
            p["coupons"].append({"user_id": c["user_id"], "issued_at": now, "order_id": None, "discount": None})
            p["version"] += 1
            return ok(coupon_id="%s:%d" % (c["policy_id"], p["issued"]), user_id=c["user_id"], issued=p["issued"],
                      remaining=d["total_quantity"] - p["issued"], coupon_status="ISSUED")
        if t == "RedeemCoupon":
            p, cp = self._coupon(c["coupon_id"])
            if cp is None:
                return rej("NOT_FOUND")
            if cp["user_id"] != c["user_id"]:
                return rej("NOT_OWNER")
            if cp["order_id"] is not None:
                return rej("ALREADY_REDEEMED")
            e = self.expiry(p["def"], cp["issued_at"])
            if e is not None and now >= e:
                return rej("EXPIRED")
            if c["order_amount"] < p["def"]["min_order_amount"]:
                return rej("MIN_ORDER_NOT_MET")
            cp["order_id"] = c["order_id"]
            cp["discount"] = self.discount(p["def"], c["order_amount"])
            p["version"] += 1
            return ok(discount=cp["discount"], coupon_status="REDEEMED", order_id=c["order_id"])
        if t == "CancelRedemption":
            p, cp = self._coupon(c["coupon_id"])
            if cp is None:
                return rej("NOT_FOUND")
            if cp["order_id"] is None:
                return rej("NOT_REDEEMED")
            if cp["order_id"] != c["order_id"]:
                return rej("ORDER_MISMATCH")
            disc = cp["discount"]
            cp["order_id"] = cp["discount"] = None
            p["version"] += 1
            return ok(discount=disc, coupon_status="ISSUED", order_id=c["order_id"])
        return rej("UNSUPPORTED_COMMAND")


class PointModel:
    def __init__(self):
        self.accounts = {}

    def apply(self, t, c, now, rid):
        a = self.accounts.get(c["user_id"])
        bal = a["balance"] if a else 0
        if t == "EarnPoints":
            if c.get("expires_at") is not None:
                raise Unmodelled("expiring points")
            if a is None:
                a = self.accounts[c["user_id"]] = {"balance": 0, "uses": {}, "ledger": [], "version": 0}
            a["balance"] += c["amount"]
            a["ledger"].append((rid, c["amount"]))
            a["version"] += 1
            return ok(balance=a["balance"])
        if t == "UsePoints":
            if a is not None and c["order_id"] in a["uses"]:
                return rej("DUPLICATE_ORDER", balance=bal)
            if bal < c["amount"]:
                return rej("INSUFFICIENT_BALANCE", balance=bal)
            a["uses"][c["order_id"]] = [c["amount"], False]
            a["balance"] -= c["amount"]
            a["ledger"].append((rid, -c["amount"]))
            a["version"] += 1
            return ok(balance=a["balance"], order_id=c["order_id"])
        if t == "CancelPointUse":
            u = a["uses"].get(c["order_id"]) if a else None
            if u is None:
                return rej("NOT_FOUND", balance=bal)
            if u[1]:
                return rej("ALREADY_CANCELLED", balance=bal)
            u[1] = True
            a["balance"] += u[0]
            a["ledger"].append((rid, u[0]))
            a["version"] += 1
            return ok(balance=a["balance"], amount=u[0], order_id=c["order_id"])
        return rej("UNSUPPORTED_COMMAND")


class SaleModel:
    def __init__(self):
        self.sales = {}

    def apply(self, t, c, now, rid):
        if t == "CreateTimeSale":
            if c["sale_id"] in self.sales:
                return rej("ALREADY_EXISTS")
            self.sales[c["sale_id"]] = {"def": dict(c), "sold": 0, "orders": {}, "placed": {}, "version": 1}
            return ok(sold=0, remaining=c["stock"])
        s = self.sales.get(c["sale_id"])
        if s is None:
            return rej("NOT_FOUND")
        d = s["def"]
        if t == "PlaceOrder":
            oid = c.get("order_id") or rid
            q = c["quantity"]
            if now < d["starts_at"]:
                return rej("NOT_STARTED")
            if now >= d["ends_at"]:
                return rej("ENDED")
            if oid in s["orders"]:
                return rej("DUPLICATE_ORDER")
            if s["placed"].get(c["user_id"], 0) + q > d["per_user_limit"]:
                return rej("LIMIT_EXCEEDED")
            if q > d["stock"] - s["sold"]:
                return rej("SOLD_OUT")
            s["orders"][oid] = {"user_id": c["user_id"], "quantity": q, "status": "PLACED"}
            s["placed"][c["user_id"]] = s["placed"].get(c["user_id"], 0) + q
            s["sold"] += q
            s["version"] += 1
            return ok(order_id=oid, quantity=q, sold=s["sold"], remaining=d["stock"] - s["sold"],
                      order_status="PLACED")
        if t == "CancelOrder":
            o = s["orders"].get(c["order_id"])
            if o is None:
                return rej("NOT_FOUND")
            if o["status"] == "CANCELLED":
                return rej("ALREADY_CANCELLED")
            o["status"] = "CANCELLED"
            s["placed"][o["user_id"]] -= o["quantity"]
            s["sold"] -= o["quantity"]
            s["version"] += 1
            return ok(order_id=c["order_id"], sold=s["sold"], remaining=d["stock"] - s["sold"],
                      order_status="CANCELLED")
        return rej("UNSUPPORTED_COMMAND")


class Unmodelled(Exception):
    pass


def fingerprint(t, cmd):
    return (t, tuple(sorted(cmd.items())))


def run_model(log, dec):
    """Applies the log. Returns (expected {rid: outcome}, models, info)."""
    models = {"coupon": CouponModel(), "point": PointModel(), "timesale": SaleModel()}
    expected, info = {}, defaultdict(int)
    for topic, sid in CMD_TOPICS.items():
        domain = topic.split(".")[1]
        m = models[domain]
        for part, msgs in sorted(log[topic].items()):
            seen = {}  # the processors dedupe per partition
            for off, key, val in msgs:
                try:
                    env = dec.decode(val, sid)
                except Exception:
                    info["undecodable"] += 1
                    continue
                rid, now, cmd = env["request_id"], env["submitted_at"], env["command"]
                t = command_type(domain, cmd)
                fp = fingerprint(t, cmd)
                info["commands"] += 1
                if rid in seen:
                    info["repeats" if seen[rid] == fp else "reused_keys"] += 1
                    continue
                seen[rid] = fp
                if rid in expected:
                    info["cross_partition_ids"] += 1
                    continue
                if domain == "coupon":
                    out = m.apply(t, cmd, now)
                else:
                    out = m.apply(t, cmd, now, rid)
                out.update(domain=domain, command_type=t)
                expected[rid] = out
    return expected, models, info


# ---- comparison ---------------------------------------------------------------------------

class Report:
    def __init__(self):
        self.lost, self.duplicated, self.violations, self.mismatched = [], [], [], []
        self.counts = {}
        self.outcomes = {}

    def ok(self):
        return not (self.lost or self.duplicated or self.violations or self.mismatched)

    def summary(self, limit=15):
        lines = []
        for name in ("lost", "duplicated", "mismatched", "violations"):
            items = getattr(self, name)
            lines.append("%s = %d" % ("invariant violations" if name == "violations" else name, len(items)))
            for it in items[:limit]:
                lines.append("    " + it)
            if len(items) > limit:
                lines.append("    ... %d more" % (len(items) - limit))
        return lines


def verify(bootstrap, mysql_conn, accepted=(), check_results=True):
    """accepted: request ids the load generator got a 202 for. Returns a Report."""
    rep = Report()
    dec = Decoder()
    log, lows = read_topics(bootstrap, list(CMD_TOPICS) + ([RESULTS_TOPIC] if check_results else []))
    for (t, p), lo in lows.items():
        if lo > 0:
            rep.violations.append("broker dropped %s[%d] below offset %d: the log is incomplete" % (t, p, lo))
    expected, models, info = run_model(log, dec)
    rep.counts.update(info)
    rep.counts["requests_in_log"] = len(expected)
    rep.outcomes = defaultdict(int)
    for exp in expected.values():
        rep.outcomes["%s %s" % (exp["command_type"], exp["reason"] or exp["status"])] += 1
    if info["cross_partition_ids"]:
        rep.violations.append("%d request ids appear in two partitions (the load never does that)"
                              % info["cross_partition_ids"])

    # Accepted by ingest (202) but not in Kafka: lost before any processor.
    missing_log = [r for r in accepted if r not in expected]
    for r in missing_log:
        rep.lost.append("request %s: answered 202 but not in the command log" % r)
    rep.counts["accepted"] = len(set(accepted))

    cur = mysql_conn.cursor()
    cur.execute("SELECT request_id, domain, command_type, status, reason, result FROM requests")
    rows = {r[0]: r for r in cur.fetchall()}
    for rid, exp in expected.items():
        row = rows.get(rid)
        if row is None:
            rep.lost.append("request %s (%s): no outcome in MySQL" % (rid, exp["command_type"]))
            continue
        _, _, ctype, status, reason, result = row
        got = json.loads(result) if result else {}
        res = (got.get("result") or {}) if "request_id" in got else got
        diffs = []
        if status != exp["status"] or (reason or None) != exp["reason"]:
            diffs.append("status %s/%s, want %s/%s" % (status, reason, exp["status"], exp["reason"]))
        if ctype != exp["command_type"]:
            diffs.append("command_type %s, want %s" % (ctype, exp["command_type"]))
        for k, v in exp.items():
            if k in ("status", "reason", "domain", "command_type"):
                continue
            if res.get(k) != v:
                diffs.append("%s %r, want %r" % (k, res.get(k), v))
        if diffs:
            rep.mismatched.append("request %s (%s): %s" % (rid, exp["command_type"], "; ".join(diffs)))
    extra = [r for r in rows if r not in expected]
    for r in extra:
        rep.violations.append("request %s in MySQL but in no command topic" % r)

    _check_coupons(cur, models["coupon"], rep)
    _check_points(cur, models["point"], rep)
    _check_sales(cur, models["timesale"], rep)
    if check_results:
        _check_results(log[RESULTS_TOPIC], dec, rep)
    cur.close()
    return rep


def _check_coupons(cur, m, rep):
    cur.execute("SELECT policy_id, issued, total_quantity, version FROM coupon_policies")
    pol = {r[0]: r[1:] for r in cur.fetchall()}
    cur.execute("SELECT coupon_id, policy_id, user_id, status, order_id FROM coupons")
    coupons = defaultdict(dict)
    for cid, pid, uid, st, oid in cur.fetchall():
        coupons[pid][cid] = (uid, st, oid)
    for pid, p in m.policies.items():
        if pid not in pol:
            rep.lost.append("policy %s: no row" % pid)
            continue
        issued, total, version = pol[pid]
        if issued > total:
            rep.violations.append("policy %s: issued %d > quantity %d" % (pid, issued, total))
        if issued != p["issued"]:
            (rep.duplicated if issued > p["issued"] else rep.lost).append(
                "policy %s: issued %d, want %d" % (pid, issued, p["issued"]))
        if version != p["version"]:
            rep.mismatched.append("policy %s: version %d, want %d" % (pid, version, p["version"]))
        rows = coupons.get(pid, {})
        if len(rows) != issued:
            rep.violations.append("policy %s: %d coupon rows, issued says %d" % (pid, len(rows), issued))
        for i, cp in enumerate(p["coupons"], 1):
            cid = "%s:%d" % (pid, i)
            want = (cp["user_id"], "REDEEMED" if cp["order_id"] else "ISSUED")
            got = rows.get(cid)
            if got is None:
                rep.lost.append("coupon %s: no row" % cid)
            elif (got[0], got[1]) != want or (cp["order_id"] and got[2] != cp["order_id"]):
                rep.mismatched.append("coupon %s: %r, want %r order %r" % (cid, got, want, cp["order_id"]))
        for cid in rows:
            serial = int(cid.rpartition(":")[2])
            if serial > len(p["coupons"]):
                rep.duplicated.append("coupon %s: issued beyond the model's %d" % (cid, len(p["coupons"])))


def _check_points(cur, m, rep):
    cur.execute("SELECT user_id, balance, version FROM point_accounts")
    acc = {r[0]: r[1:] for r in cur.fetchall()}
    cur.execute("SELECT user_id, seq, delta, balance_after, request_id FROM point_ledger ORDER BY user_id, seq")
    ledgers = defaultdict(list)
    for uid, seq, delta, after, rid in cur.fetchall():
        ledgers[uid].append((seq, delta, after, rid))
    for uid, a in m.accounts.items():
        if uid not in acc:
            rep.lost.append("account %s: no row" % uid)
            continue
        bal, version = acc[uid]
        led = ledgers.get(uid, [])
        if bal < 0:
            rep.violations.append("account %s: balance %d < 0" % (uid, bal))
        if sum(e[1] for e in led) != bal:
            rep.violations.append("account %s: balance %d but ledger sums to %d" % (uid, bal, sum(e[1] for e in led)))
        if [e[0] for e in led] != list(range(1, len(led) + 1)):
            rep.violations.append("account %s: ledger seqs not 1..%d" % (uid, len(led)))
        run = 0
        for seq, delta, after, _ in led:
            run += delta
            if after != run:
                rep.violations.append("account %s: ledger seq %d balance_after %d, running sum %d"
                                      % (uid, seq, after, run))
                break
        if bal != a["balance"]:
            rep.mismatched.append("account %s: balance %d, want %d" % (uid, bal, a["balance"]))
        if version != a["version"]:
            rep.mismatched.append("account %s: version %d, want %d" % (uid, version, a["version"]))
        got = defaultdict(list)
        for _, delta, _, rid in led:
            got[rid].append(delta)
        want = defaultdict(list)
        for rid, delta in a["ledger"]:
            want[rid].append(delta)
        for rid, ds in want.items():
            g = got.get(rid, [])
            if len(g) < len(ds):
                rep.lost.append("account %s: ledger entry of %s missing" % (uid, rid))
            elif g != ds:
                rep.mismatched.append("account %s: ledger of %s %r, want %r" % (uid, rid, g, ds))
        for rid, g in got.items():
            if len(g) > len(want.get(rid, [])):
                rep.duplicated.append("account %s: request %s has %d ledger entries, want %d"
                                      % (uid, rid, len(g), len(want.get(rid, []))))


def _check_sales(cur, m, rep):
    cur.execute("SELECT sale_id, stock, sold, version FROM time_sales")
    sales = {r[0]: r[1:] for r in cur.fetchall()}
    cur.execute("SELECT sale_id, order_id, user_id, quantity, status FROM sale_orders")
    orders = defaultdict(dict)
    for sid, oid, uid, q, st in cur.fetchall():
        orders[sid][oid] = (uid, q, st)
    for sid, s in m.sales.items():
        if sid not in sales:
            rep.lost.append("sale %s: no row" % sid)
            continue
        stock, sold, version = sales[sid]
        rows = orders.get(sid, {})
        if sold > stock or sold < 0:
            rep.violations.append("sale %s: sold %d of stock %d" % (sid, sold, stock))
        placed = sum(q for _, q, st in rows.values() if st == "PLACED")
        if placed != sold:
            rep.violations.append("sale %s: sold %d but PLACED orders hold %d" % (sid, sold, placed))
        if sold != s["sold"]:
            (rep.duplicated if sold > s["sold"] else rep.lost).append(
                "sale %s: sold %d, want %d" % (sid, sold, s["sold"]))
        if version != s["version"]:
            rep.mismatched.append("sale %s: version %d, want %d" % (sid, version, s["version"]))
        per_user = defaultdict(int)
        for uid, q, st in rows.values():
            if st == "PLACED":
                per_user[uid] += q
        for uid, q in per_user.items():
            if q > s["def"]["per_user_limit"]:
                rep.violations.append("sale %s: user %s holds %d > limit %d" % (sid, uid, q, s["def"]["per_user_limit"]))
        for oid, o in s["orders"].items():
            got = rows.get(oid)
            want = (o["user_id"], o["quantity"], o["status"])
            if got is None:
                rep.lost.append("order %s/%s: no row" % (sid, oid))
            elif got != want:
                rep.mismatched.append("order %s/%s: %r, want %r" % (sid, oid, got, want))
        for oid in rows:
            if oid not in s["orders"]:
                rep.duplicated.append("order %s/%s: not placed by the model" % (sid, oid))


def _avro_string_at(buf, pos):
    """Reads an Avro string at pos: zig-zag varint length, then bytes."""
    shift = n = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    n = (n >> 1) ^ -(n & 1)
    return buf[pos:pos + n].decode(), pos + n


def _check_results(parts, dec, rep):
    """Every result published for a request must be the same bytes, except an
    IDEMPOTENCY_KEY_REUSED rejection of a later, different command."""
    by_rid = defaultdict(set)
    total = 0
    for msgs in parts.values():
        for _, _, val in msgs:
            total += 1
            try:
                rid, _ = _avro_string_at(val, 5)  # request_id is the first field
            except Exception:
                rep.violations.append("undecodable result")
                continue
            by_rid[rid].add(bytes(val))
    rep.counts["results_in_log"] = total
    for rid, vals in by_rid.items():
        if len(vals) < 2:
            continue
        firsts = [v for v in vals if dec.decode(v, 4).get("reason") != "IDEMPOTENCY_KEY_REUSED"]
        if len(firsts) > 1:
            ds = [dec.decode(v, 4) for v in firsts]
            keys = sorted(k for k in ds[0] if any(d.get(k) != ds[0].get(k) for d in ds))
            rep.violations.append("request %s: %d different results published (differ in %s)"
                                  % (rid, len(firsts), ", ".join(keys)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--mysql-port", type=int, required=True)
    ap.add_argument("--accepted", help="file with one accepted request id per line")
    a = ap.parse_args()
    import pymysql
    conn = pymysql.connect(host="127.0.0.1", port=a.mysql_port, user="promo", password="promo", database="promo",
                           autocommit=True)
    acc = []
    if a.accepted:
        with open(a.accepted) as f:
            acc = [l.strip() for l in f if l.strip()]
    rep = verify(a.bootstrap, conn, acc)
    print("\n".join(rep.summary()))
    print(json.dumps(rep.counts))
    return 0 if rep.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
