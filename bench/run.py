#!/usr/bin/python3
"""run.py — `make bench`: the stampede measured against the usual
alternatives, in one run, on one machine.

It runs bench-core (the pure state machines, no I/O) first, on a quiet
machine, then starts the real fleet through tests/e2e/fleet.py (tools/fleet.sh
with a fresh PROMO_VAR and free ports, as the end-to-end tests do) and runs
every scenario against it with promo-loadgen:

  core           commands/s per core of each domain's state machine
  flash-coupon   N users race for Q coupons over HTTP (closed loop)
  flash-open     the same at a fixed rate (open loop: no coordinated omission)
  timesale       N orders race for Q units of stock
  points-mix     earn / use / cancel-use over HTTP
  hot-partition  one policy, so one partition carries all; 1,000,000
                 commands produced straight into Kafka in one go
  rowlock        the flash load against baseline-rowlock (MariaDB FOR UPDATE)
  lua            the flash load against baseline-lua (Redis EVALSHA)
  overload       open loop at twice the capacity just measured, for a minute:
                 accepted/s, 503/s, latency of each, resets (bench/overload.py)
  connections    1,024 keep-alive connections at once: is every one served?
  state-size     1,000,000 coupons in one coupon processor, 1,000,000
                 accounts in the point processors; bytes per entity, checkpoint
                 size in Redis

Each scenario prints one table row and writes bench/results/<scenario>.json
(bench/results/quick/ in quick mode, so `make test` never overwrites the
figures of a full run).
"Settle" is the time from the first request until every accepted request's
outcome is in MySQL; the invariants are checked against MySQL afterwards.
Peak resident memory is VmHWM of every program, reset at the start of each
scenario (clear_refs 5). CPU per request is each process's utime + stime
(/proc/<pid>/stat) over the scenario's load and its settle tail, divided by
the requests answered: ingest, the Kafka broker (its JVM), every processor,
the sink, the webhook dispatcher, Redis, MariaDB and the load generator, and
their sum. Everything started here is stopped at the end, also
on failure or Ctrl-C.

  /usr/bin/python3 bench/run.py [--quick] [--only a,b] [--conns N] [--rate R]
"""

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PROMO_BIN_DIR", os.path.join(ROOT, "build", "bin"))
RESULTS = os.path.join(ROOT, "bench", "results")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

from fleet import ADMIN_KEY, CLIENT_KEY, Fleet, free_ports, result_request_id  # noqa: E402

FULL = dict(flash_n=200000, flash_users=100000, flash_q=10000, open_n=100000,
            sale_n=200000, sale_users=100000, sale_stock=10000,
            points_n=100000, points_users=20000, hot_n=1000000,
            core_n=2000000, state_n=1000000, conns=64, settle_timeout=900)
QUICK = dict(flash_n=4000, flash_users=2000, flash_q=200, open_n=2000,
             sale_n=3000, sale_users=1500, sale_stock=150,
             points_n=3000, points_users=500, hot_n=20000,
             core_n=200000, state_n=20000, conns=32, settle_timeout=90)

SCENARIOS = ("core", "flash-coupon", "flash-open", "timesale", "points-mix", "hot-partition",
             "rowlock", "lua", "overload", "connections", "state-size")


class BenchError(Exception):
    pass


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


# ---- processes and memory ---------------------------------------------------

def peak_reset(pids):
    """Resets VmHWM (the peak) of each process, so a peak is per scenario."""
    for pid in pids.values():
        try:
            with open("/proc/%d/clear_refs" % pid, "w") as f:
                f.write("5")
        except (OSError, TypeError):
            pass


def proc_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, TypeError, ValueError):
        pass
    return None


def peaks(pids):
    return {name: proc_kb(pid, "VmHWM") for name, pid in pids.items() if pid}


TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (fields 14 and 15 of
    /proc/<pid>/stat, counted after the parenthesised command name)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, TypeError, ValueError, IndexError):
        return None


def children_ticks():
    """CPU of the children this process has waited for (the load generator)."""
    r = os.times()
    return (r.children_user + r.children_system) * TICK


class CpuMeter:
    """CPU per process over an interval: start() at the load's start, stop()
    once it settled; per_request(n) in microseconds."""

    def __init__(self, pids):
        self.pids = dict(pids)
        self.t0 = {name: cpu_ticks(pid) for name, pid in self.pids.items()}
        self.c0 = children_ticks()
        self.ticks = None

    def stop(self):
        self.ticks = {}
        for name, pid in self.pids.items():
            t1 = cpu_ticks(pid)
            if t1 is not None and self.t0.get(name) is not None:
                self.ticks[name] = t1 - self.t0[name]
        self.ticks["loadgen"] = children_ticks() - self.c0
        return self

    def per_request(self, n):
        us = {name: t * 1e6 / TICK / max(n, 1) for name, t in self.ticks.items()}
        us["total"] = sum(us.values())
        return us


class Bench:
    def __init__(self, args):
        self.args = args
        self.size = QUICK if args.quick else FULL
        if args.conns:
            self.size = dict(self.size, conns=args.conns)
        self.run_id = datetime.datetime.now().strftime("%H%M%S")
        self.fleet = None
        self.baselines = {}  # name -> Popen
        self.tmp = tempfile.mkdtemp(prefix="promo-bench-")
        self.rows = []
        self.results = {}
        self.cores = os.cpu_count()
        self.meter = None

    # ---- plumbing --------------------------------------------------------------

    def pids(self):
        out = {}
        if self.fleet and self.fleet.running:
            out.update({k: v for k, v in self.fleet.status().items() if v})
            for node in self.fleet.kafka_nodes()[1:]:
                if self.fleet.pid(node):
                    out[node] = self.fleet.pid(node)
        for name, p in self.baselines.items():
            if p.poll() is None:
                out[name] = p.pid
        return out

    def env(self):
        env = dict(self.fleet.env) if self.fleet else dict(os.environ)
        return env

    def loadgen(self, *args, timeout=3600):
        cmd = [os.path.join(BIN, "promo-loadgen")] + [str(a) for a in args]
        p = subprocess.run(cmd, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        if p.returncode != 0:
            raise BenchError("promo-loadgen %s failed (exit %d): %s" % (
                args[0], p.returncode, p.stderr.decode(errors="replace")[-2000:]))
        return json.loads(p.stdout)

    def mysql_one(self, sql, args=None):
        rows = self.fleet.mysql_query(sql, args)
        return rows[0] if rows else None

    def wait_settled(self, count_sql, args, want, t0, what, probes=()):
        """Polls MySQL until count_sql reaches want; returns seconds since t0.
        count_sql scans `requests` (no index on entity_key: the sink would pay
        for one on every write), which costs MariaDB more CPU the more rows
        there are and so slows the very sink being timed. While some of the
        probes (request ids, by primary key) are still missing, the count
        cannot be complete, and only they are looked up."""
        deadline = time.monotonic() + self.size["settle_timeout"]
        last = -1
        probes = list(probes)
        while True:
            if probes:
                marks = ",".join(["%s"] * len(probes))
                found = self.fleet.mysql_query("SELECT request_id FROM requests WHERE request_id IN (%s)" % marks,
                                               probes)
                probes = sorted(set(probes) - {r[0] for r in found})
                if probes and time.monotonic() <= deadline:
                    time.sleep(0.05)
                    continue
            n = self.mysql_one(count_sql, args)[0]
            if n >= want:
                return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise BenchError("%s: only %d of %d outcomes in MySQL after %ds" % (
                    what, n, want, self.size["settle_timeout"]))
            if n != last:
                last = n
            time.sleep(0.2)

    def create(self, path, body):
        r = self.fleet.post(path, body, role="admin")
        if r.status != 202:
            raise BenchError("POST %s: %r" % (path, r))
        doc = self.fleet.wait_request(r.json()["request_id"], timeout=60)
        if doc["status"] != "SUCCEEDED":
            raise BenchError("POST %s: %s" % (path, doc))

    def record(self, name, row, doc):
        """One table row (dict of column -> text) and its JSON file."""
        if getattr(self, "meter", None) and self.meter.ticks is not None and "cpu_us_per_request" not in doc:
            n = doc.get("loadgen", {}).get("requests") or doc.get("params", {}).get("commands")
            if n:
                doc = dict(doc, cpu_us_per_request=self.meter.per_request(n))
        self.meter = None
        doc = dict(doc, scenario=name, quick=bool(self.args.quick), cores=self.cores,
                   at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        self.results[name] = doc
        self.rows.append((name, row, doc))
        out = os.path.join(RESULTS, "quick") if self.args.quick else RESULTS
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
        print_row(name, row, first=len(self.rows) == 1)

    def read_ids(self, path):
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]

    def check_final(self, ids, entity_sql, args):
        """Every accepted request has a final outcome in MySQL; returns
        (ok, {status: count}) over the accepted ids."""
        rows = self.fleet.mysql_query(entity_sql, args)
        status = dict(rows)
        counts = {}
        missing = 0
        for rid in ids:
            s = status.get(rid)
            if s not in ("SUCCEEDED", "REJECTED"):
                missing += 1
            else:
                counts[s] = counts.get(s, 0) + 1
        return missing == 0, counts, missing

    # ---- scenarios -------------------------------------------------------------

    def http_stampede(self, name, path, body, n, users, entity_sql_count, entity_sql_ids, entity_args,
                      rate=0, ops=None):
        """Fires the load at ingest, waits until MySQL has every outcome.
        Returns (loadgen summary, accepted ids, settle seconds)."""
        ids_file = os.path.join(self.tmp, name + ".ids")
        args = ["http", "-p", self.fleet.http_port, "-c", self.size["conns"], "-n", n, "-u", users,
                "-o", ids_file, "--tag", self.run_id]
        if rate:
            args += ["-R", int(rate)]
        if ops:
            for op in ops:
                args += ["--op", op]
        else:
            args += ["-k", CLIENT_KEY, "--path", path, "--body", body]
        peak_reset(self.pids())
        self.meter = CpuMeter(self.pids())
        t0 = time.monotonic()
        lg = self.loadgen(*args)
        ids = self.read_ids(ids_file)
        accepted = lg["status"].get("202", 0)
        if accepted != len(ids):
            raise BenchError("%s: %d answers 202 but %d request ids" % (name, accepted, len(ids)))
        probes = ids[-100:] + random.Random(name).sample(ids, min(100, len(ids)))
        settle = self.wait_settled(entity_sql_count, entity_args, accepted, t0, name, probes)
        self.meter.stop()
        return lg, ids, settle

    def http_row(self, lg, settle, accepted, inv, rss):
        lat = lg["latency_ms"]
        return {
            "requests": "%d" % lg["requests"],
            "submit/s": "%.0f" % lg["throughput"],
            "p50 ms": "%.2f" % lat["p50"],
            "p99 ms": "%.2f" % lat["p99"],
            "p999 ms": "%.2f" % lat["p999"],
            "settle/s": "%.0f" % (accepted / settle) if settle else "-",
            "settled s": "%.1f" % settle if settle else "-",
            "invariants": inv_text(inv),
            "peak RSS MB": rss_text(rss),
            "CPU us/req": cpu_text(self.meter.per_request(lg["requests"])),
        }

    def scenario_core(self):
        out = subprocess.run([os.path.join(BIN, "bench-core"), "-n", str(self.size["core_n"])],
                             stdout=subprocess.PIPE, check=True, timeout=600)
        doc = json.loads(out.stdout)
        cases = {c["name"]: c for c in doc["cases"]}
        row = {"requests": "%d" % self.size["core_n"],
               "per core": " ".join("%s %.2fM/s" % (k, c["per_s"] / 1e6) for k, c in cases.items())}
        self.record("core", row, {"params": {"n": self.size["core_n"]}, "cases": doc["cases"],
                                  "summary": "per core, single thread, no I/O: " + ", ".join(
                                      "%s %.0f/s" % (k, c["per_s"]) for k, c in cases.items())})

    def scenario_flash(self, name="flash-coupon", rate=0, n=None):
        s = self.size
        n = n or s["flash_n"]
        users = s["flash_users"] if n == s["flash_n"] else max(1, n // 2)
        q = s["flash_q"] if n == s["flash_n"] else max(1, n // 20)
        pid = "%s-%s" % (name, self.run_id)
        t = int(time.time() * 1000)
        self.create("/v1/coupon-policies", {
            "policy_id": pid, "name": "bench " + pid, "discount_type": "FIXED", "discount_value": 1000,
            "min_order_amount": 0, "total_quantity": q, "per_user_limit": 1,
            "issue_starts_at": t - 60000, "issue_ends_at": t + 86400000, "valid_days": 7})
        lg, ids, settle = self.http_stampede(
            name, "/v1/coupon-policies/%s/issue" % pid, '{"user_id":"u{user}"}', n, users,
            "SELECT COUNT(*) FROM requests WHERE entity_key = %s AND command_type = 'IssueCoupon'",
            None, (pid,), rate=rate)
        rss = peaks(self.pids())
        final, counts, missing = self.check_final(
            ids, "SELECT request_id, status FROM requests WHERE entity_key = %s AND command_type = 'IssueCoupon'",
            (pid,))
        issued, distinct = self.mysql_one(
            "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM coupons WHERE policy_id = %s", (pid,))
        pol = self.mysql_one("SELECT issued FROM coupon_policies WHERE policy_id = %s", (pid,))
        want = min(q, users)
        inv = {"issued == Q": issued == want and pol is not None and pol[0] == want
               and counts.get("SUCCEEDED", 0) == want,
               "no user twice": issued == distinct,
               "every request final": final,
               "no HTTP errors": lg["errors"] == 0}
        row = self.http_row(lg, settle, len(ids), inv, rss)
        self.record(name, row, {
            "params": {"requests": n, "users": users, "quantity": q, "connections": s["conns"], "rate": rate},
            "loadgen": lg, "accepted": len(ids), "settle_s": settle, "settle_per_s": len(ids) / settle,
            "outcomes": counts, "missing": missing, "issued": issued, "invariants": inv, "peak_rss_kb": rss,
            "summary": "%d requests from %d users for %d coupons: %.0f submits/s (p99 %.1f ms), all %d outcomes "
                       "in MySQL after %.1f s (%.0f/s); %d issued" % (
                           n, users, q, lg["throughput"], lg["latency_ms"]["p99"], len(ids), settle,
                           len(ids) / settle, issued)})

    def scenario_timesale(self):
        s = self.size
        sid = "sale-%s" % self.run_id
        t = int(time.time() * 1000)
        self.create("/v1/time-sales", {
            "sale_id": sid, "product_id": "p-" + sid, "name": "bench sale", "original_price": 20000,
            "sale_price": 9900, "stock": s["sale_stock"], "per_user_limit": 1,
            "starts_at": t - 60000, "ends_at": t + 86400000})
        lg, ids, settle = self.http_stampede(
            "timesale", "/v1/time-sales/%s/orders" % sid, '{"user_id":"u{user}","quantity":1}',
            s["sale_n"], s["sale_users"],
            "SELECT COUNT(*) FROM requests WHERE entity_key = %s AND command_type = 'PlaceOrder'", None, (sid,))
        rss = peaks(self.pids())
        final, counts, missing = self.check_final(
            ids, "SELECT request_id, status FROM requests WHERE entity_key = %s AND command_type = 'PlaceOrder'",
            (sid,))
        sold = self.mysql_one("SELECT sold, stock FROM time_sales WHERE sale_id = %s", (sid,))
        n_orders, distinct, qty = self.mysql_one(
            "SELECT COUNT(*), COUNT(DISTINCT user_id), COALESCE(SUM(quantity), 0) FROM sale_orders "
            "WHERE sale_id = %s AND status = 'PLACED'", (sid,))
        want = min(s["sale_stock"], s["sale_users"])
        inv = {"sold == stock": sold is not None and sold[0] == want and int(qty) == want
               and counts.get("SUCCEEDED", 0) == want,
               "no user twice": n_orders == distinct,
               "every request final": final,
               "no HTTP errors": lg["errors"] == 0}
        row = self.http_row(lg, settle, len(ids), inv, rss)
        self.record("timesale", row, {
            "params": {"requests": s["sale_n"], "users": s["sale_users"], "stock": s["sale_stock"],
                       "connections": s["conns"]},
            "loadgen": lg, "accepted": len(ids), "settle_s": settle, "settle_per_s": len(ids) / settle,
            "outcomes": counts, "missing": missing, "sold": sold and sold[0], "invariants": inv,
            "peak_rss_kb": rss,
            "summary": "%d orders from %d users for %d units: %.0f submits/s (p99 %.1f ms), settled after %.1f s "
                       "(%.0f/s); %s sold" % (s["sale_n"], s["sale_users"], s["sale_stock"], lg["throughput"],
                                              lg["latency_ms"]["p99"], settle, len(ids) / settle,
                                              sold and sold[0])})

    def scenario_points(self):
        s = self.size
        prefix = "pm%s" % self.run_id
        user = prefix + "u{user}"
        ops = ["2|%s|/v1/points/%s/earn|{\"amount\":1000,\"reason\":\"bench\"}" % (ADMIN_KEY, user),
               "2|%s|/v1/points/%s/use|{\"amount\":300,\"order_id\":\"o{useq}\"}" % (CLIENT_KEY, user),
               "1|%s|/v1/points/%s/cancel|{\"order_id\":\"o{prev}\"}" % (CLIENT_KEY, user)]
        like = prefix + "u%"
        lg, ids, settle = self.http_stampede(
            "points-mix", None, None, s["points_n"], s["points_users"],
            "SELECT COUNT(*) FROM requests WHERE entity_key LIKE %s", None, (like,), ops=ops)
        rss = peaks(self.pids())
        final, counts, missing = self.check_final(
            ids, "SELECT request_id, status FROM requests WHERE entity_key LIKE %s", (like,))
        negative = self.mysql_one("SELECT COUNT(*) FROM point_accounts WHERE user_id LIKE %s AND balance < 0",
                                  (like,))[0]
        mismatched = self.mysql_one(
            "SELECT COUNT(*) FROM point_accounts a LEFT JOIN (SELECT user_id, SUM(delta) AS s, COUNT(*) AS n, "
            "MAX(seq) AS m FROM point_ledger WHERE user_id LIKE %s GROUP BY user_id) l ON l.user_id = a.user_id "
            "WHERE a.user_id LIKE %s AND (a.balance <> COALESCE(l.s, 0) OR COALESCE(l.n, 0) <> COALESCE(l.m, 0))",
            (like, like))[0]
        inv = {"no balance below 0": negative == 0,
               "balance == sum of ledger, no gaps": mismatched == 0,
               "every request final": final,
               "no HTTP errors": lg["errors"] == 0}
        row = self.http_row(lg, settle, len(ids), inv, rss)
        self.record("points-mix", row, {
            "params": {"requests": s["points_n"], "users": s["points_users"], "mix": "earn 2 : use 2 : cancel 1",
                       "connections": s["conns"]},
            "loadgen": lg, "accepted": len(ids), "settle_s": settle, "settle_per_s": len(ids) / settle,
            "outcomes": counts, "missing": missing, "invariants": inv, "peak_rss_kb": rss,
            "summary": "%d earn/use/cancel over %d users: %.0f submits/s (p99 %.1f ms), settled after %.1f s "
                       "(%.0f/s); %s" % (s["points_n"], s["points_users"], lg["throughput"],
                                         lg["latency_ms"]["p99"], settle, len(ids) / settle, counts)})

    def kafka_client(self):
        from confluent_kafka import Consumer
        return Consumer({"bootstrap.servers": self.fleet.bootstrap_servers, "group.id": "bench-" + self.run_id,
                         "enable.auto.commit": False, "enable.partition.eof": False})

    def results_consumer(self):
        """A consumer positioned at the current end of promo.results."""
        from confluent_kafka import TopicPartition
        c = self.kafka_client()
        md = c.list_topics("promo.results", timeout=10)
        tps = []
        for p in md.topics["promo.results"].partitions:
            _, high = c.get_watermark_offsets(TopicPartition("promo.results", p), timeout=10)
            tps.append(TopicPartition("promo.results", p, high))
        c.assign(tps)
        return c

    def scenario_hot(self):
        """One policy, so one partition of promo.coupon.cmd carries every
        command: hot_n issues produced straight into Kafka in one go, while
        the coupon processor works through them. Its outcomes/s is the
        commands over the span of their results' timestamps in promo.results
        (the broker's append time of the first and the last); settle is until
        MySQL holds every outcome, which the sink paces."""
        s = self.size
        n = s["hot_n"]
        pid = "hot-%s" % self.run_id
        consumer = self.results_consumer()
        peak_reset(self.pids())
        self.meter = CpuMeter(self.pids())
        key = pid.encode()
        part, seen, sizes, last_id, lo, hi = None, 0, 0, None, None, None
        t0 = time.monotonic()
        try:
            producer = self.loadgen("kafka", "--cmd", "issue", "--entity", pid, "-n", n, "-u", n // 2,
                                    "--tag", "hot" + self.run_id, "--create", s["flash_q"])
            want = n + 1
            deadline = time.monotonic() + s["settle_timeout"]
            while seen < want:
                if time.monotonic() > deadline:
                    raise BenchError("hot-partition: %d of %d results in promo.results" % (seen, want))
                for m in consumer.consume(num_messages=10000, timeout=0.5):
                    if m.error() or m.key() != key:
                        continue
                    seen += 1
                    sizes += len(m.value())
                    ts = m.timestamp()[1]
                    lo = ts if lo is None else min(lo, ts)
                    hi = ts if hi is None else max(hi, ts)
                    part = m.partition()
                    last_id = result_request_id(m.value())
            outcomes_s = time.monotonic() - t0
            # One partition of promo.results, written by the sink in order:
            # once the last result is in, the rest are.
            self.wait_settled("SELECT COUNT(*) FROM requests WHERE entity_key = %s", (pid,), want, t0,
                              "hot-partition", [last_id] if last_id else ())
            settle = time.monotonic() - t0
            self.meter.stop()
        finally:
            consumer.close()
        rate = n / max((hi - lo) / 1000.0, 0.001)
        rss = peaks(self.pids())
        issued, distinct = self.mysql_one(
            "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM coupons WHERE policy_id = %s", (pid,))
        finals = self.mysql_one("SELECT COUNT(*) FROM requests WHERE entity_key = %s AND status IN "
                                "('SUCCEEDED', 'REJECTED')", (pid,))[0]
        want_q = min(s["flash_q"], n // 2)
        inv = {"issued == Q": issued == want_q, "no user twice": issued == distinct,
               "every request final": finals == n + 1}
        prod_rate = producer["delivered"] / producer["duration_s"]
        cpu = self.meter.per_request(n)
        row = {"requests": "%d" % n, "submit/s": "%.0f" % prod_rate, "outcomes/s": "%.0f" % rate,
               "settle/s": "%.0f" % ((n + 1) / settle), "settled s": "%.1f" % settle,
               "invariants": inv_text(inv), "peak RSS MB": rss_text(rss), "CPU us/req": cpu_text(cpu)}
        self.record("hot-partition", row, {
            "params": {"commands": n, "users": n // 2, "quantity": s["flash_q"]},
            "producer": producer, "producer_per_s": prod_rate, "results_partition": part,
            "outcomes_per_s": rate, "results_in_kafka_s": outcomes_s,
            "result_bytes_avg": sizes / max(seen, 1), "settle_s": settle, "settle_per_s": (n + 1) / settle,
            "invariants": inv, "peak_rss_kb": rss, "cpu_us_per_request": cpu,
            "summary": "%d issues of one policy produced straight into Kafka in one go (%.0f/s): %.0f outcomes/s "
                       "through one partition (promo.results partition %s); all in MySQL after %.1f s, paced by "
                       "the sink (%.0f/s)" % (n, prod_rate, rate, part, settle, (n + 1) / settle)})

    def start_baseline(self, name):
        port = free_ports(1)[0]
        env = self.env()
        env["PROMO_HTTP_PORT"] = str(port)
        logf = open(os.path.join(self.tmp, name + ".log"), "ab")
        p = subprocess.Popen([os.path.join(BIN, name)], env=env, stdout=logf, stderr=logf,
                             stdin=subprocess.DEVNULL)
        self.baselines[name] = p
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1).read()
                return port
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    logf.flush()
                    with open(os.path.join(self.tmp, name + ".log"), errors="replace") as f:
                        raise BenchError("%s did not start: %s" % (name, f.read()[-2000:]))
                time.sleep(0.1)

    def stop_baseline(self, name):
        p = self.baselines.pop(name, None)
        if p and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def scenario_baseline(self, name):
        s = self.size
        prog = "baseline-" + name
        port = self.start_baseline(prog)
        try:
            pid = "%s-%s" % (name, self.run_id)
            req = urllib.request.Request(
                "http://127.0.0.1:%d/v1/coupon-policies" % port, method="POST",
                data=json.dumps({"policy_id": pid, "total_quantity": s["flash_q"], "per_user_limit": 1}).encode(),
                headers={"Authorization": "Bearer " + ADMIN_KEY, "Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=30).read()
            peak_reset(self.pids())
            self.meter = CpuMeter(self.pids())
            lg = self.loadgen("http", "-p", port, "-c", s["conns"], "-n", s["flash_n"], "-u", s["flash_users"],
                              "-k", CLIENT_KEY, "--path", "/v1/coupon-policies/%s/issue" % pid,
                              "--body", '{"user_id":"u{user}"}')
            self.meter.stop()
            rss = peaks(self.pids())
        finally:
            self.stop_baseline(prog)
        want = min(s["flash_q"], s["flash_users"])
        if name == "rowlock":
            issued, distinct = self.mysql_one(
                "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM baseline_coupons WHERE policy_id = %s", (pid,))
        else:
            issued = self.fleet.redis("HLEN", "baseline:{%s}:coupons" % pid)
            distinct = len(set(self.fleet.redis("HVALS", "baseline:{%s}:coupons" % pid) or []))
        out = lg["outcomes"]
        inv = {"issued == Q": issued == want and out["SUCCEEDED"] == want,
               "no user twice": issued == distinct,
               "every request final": out["SUCCEEDED"] + out["REJECTED"] == lg["requests"],
               "no HTTP errors": lg["errors"] == 0}
        ours = self.results.get("flash-coupon")
        ratios = {}
        if ours:
            ol = ours["loadgen"]
            ratios = {"submit": ol["throughput"] / lg["throughput"],
                      "settle": ours["settle_per_s"] / lg["throughput"],
                      "p99": ol["latency_ms"]["p99"] / lg["latency_ms"]["p99"] if lg["latency_ms"]["p99"] else None}
        row = self.http_row(lg, None, lg["requests"], inv, rss)
        row["settle/s"] = "%.0f" % lg["throughput"]  # the answer is the outcome: settled when answered
        if ratios:
            row["ours/it"] = "submit/s %.2fx, settle/s %.2fx, p99 %.2fx" % (
                ratios["submit"], ratios["settle"], ratios["p99"] or 0)
        what = {"rowlock": "one MariaDB transaction per request (SELECT ... FOR UPDATE)",
                "lua": "one Redis EVALSHA per request"}[name]
        self.record(name, row, {
            "params": {"requests": s["flash_n"], "users": s["flash_users"], "quantity": s["flash_q"],
                       "connections": s["conns"]},
            "design": what, "loadgen": lg, "issued": issued, "invariants": inv, "peak_rss_kb": rss,
            "ours_over_it": ratios,
            "summary": "%s: %.0f outcomes/s (p99 %.1f ms)%s" % (
                what, lg["throughput"], lg["latency_ms"]["p99"],
                "; ours/its: submit rate %.2fx, rate to outcomes in MySQL %.2fx, p99 %.2fx" % (
                    ratios["submit"], ratios["settle"], ratios["p99"] or 0) if ratios else "")})

    def scenario_overload(self, name):
        """overload or connections, from bench/overload.py, on this fleet."""
        import overload
        t = overload.Target(self.fleet.http_port, self.pids, self.fleet.mysql_query, tmp=self.tmp, env=self.env())
        row, doc = overload.SCENARIOS[name](t, overload.QUICK if self.args.quick else overload.FULL, self.run_id)
        self.record(name, row, doc)

    def checkpoint_bytes(self, domain):
        """MEMORY USAGE summed over the domain's checkpoint keys, and their field count."""
        total, fields, cursor = 0, 0, "0"
        while True:
            cursor, keys = self.fleet.redis("SCAN", cursor, "MATCH", "promo:{%s:*" % domain, "COUNT", 1000)
            for k in keys:
                total += self.fleet.redis("MEMORY", "USAGE", k, "SAMPLES", "0") or 0
                if k.endswith(":state"):
                    fields += self.fleet.redis("HLEN", k)
            if cursor == "0":
                return total, fields

    def caught_up(self, consumer, domain):
        """True when every partition's checkpoint names the end of its command topic."""
        from confluent_kafka import TopicPartition
        topic = "promo.%s.cmd" % domain
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high == 0:
                continue
            off = self.fleet.redis("HGET", "promo:{%s:%d}:meta" % (domain, p), "offset")
            if off is None or int(off) < high:
                return False
        return True

    def forced_snapshot(self, policy, n, pid):
        """A full snapshot of the coupon partition holding the policy, forced
        the way Redis loss forces one: its stored seq no longer matches, so
        the next delta is refused as a gap. Peak resident memory of the
        processor while it writes, over its steady size before."""
        from test_050_direct_producers import murmur2_partition
        part = murmur2_partition(policy, self.fleet.partitions)
        meta = "promo:{coupon:%d}:meta" % part
        steady = proc_kb(pid, "VmRSS")
        peak_reset({"processor-coupon": pid})
        self.fleet.redis("HSET", meta, "seq", "-1")
        t0 = time.monotonic()
        self.loadgen("kafka", "--cmd", "issue", "--entity", policy, "--first", n, "-n", 1, "-u", n,
                     "--tag", "snap" + self.run_id)
        deadline = t0 + self.size["settle_timeout"]
        while self.fleet.redis("HGET", meta, "seq") in ("-1", "0", None):
            if time.monotonic() > deadline:
                raise BenchError("state-size: the forced full snapshot was not written")
            time.sleep(0.05)
        took = time.monotonic() - t0
        peak = proc_kb(pid, "VmHWM")
        return {"partition": part, "steady_kb": steady, "peak_kb": peak, "seconds": took,
                "peak_over_steady": peak / steady if steady else None}

    def scenario_state(self):
        """Fills the processors through Kafka, each domain's commands in one
        go, then waits until every partition is applied and checkpointed. The
        MySQL sink is stopped first: it is not measured here and could not
        keep up with a million results a domain anyway."""
        s = self.size
        n = s["state_n"]
        self.fleet.kill("sink-mysql", "TERM")
        pids = self.pids()
        before = {d: proc_kb(pids.get("processor-" + d), "VmRSS") for d in ("coupon", "point")}
        rbefore = {d: self.checkpoint_bytes(d) for d in ("coupon", "point")}
        peak_reset(pids)
        t0 = time.monotonic()
        pid = "state-%s" % self.run_id
        consumer = self.kafka_client()
        plan = {"coupon": ["--cmd", "issue", "--entity", pid, "--tag", "sc" + self.run_id],
                "point": ["--cmd", "earn", "--entity", "st%su" % self.run_id, "--tag", "sp" + self.run_id]}
        prod = {}
        try:
            for d in ("coupon", "point"):
                extra = ["--create", n] if d == "coupon" else []
                prod[d] = self.loadgen("kafka", *plan[d], "-n", n, "-u", n, *extra)
            for d in ("coupon", "point"):
                deadline = time.monotonic() + s["settle_timeout"]
                while not self.caught_up(consumer, d):
                    if time.monotonic() > deadline:
                        raise BenchError("state-size: processor-%s did not catch up and checkpoint" % d)
                    time.sleep(0.2)
        finally:
            consumer.close()
        applied_s = time.monotonic() - t0
        pids = self.pids()
        rss = peaks(pids)
        after = {d: proc_kb(pids.get("processor-" + d), "VmRSS") for d in ("coupon", "point")}
        rafter = {d: self.checkpoint_bytes(d) for d in ("coupon", "point")}
        snap = self.forced_snapshot(pid, n, pids.get("processor-coupon"))
        core = json.loads(subprocess.run([os.path.join(BIN, "bench-core"), "-n", "1000", "--memory", str(n)],
                                         stdout=subprocess.PIPE, check=True, timeout=900).stdout)["memory"]
        fig = {}
        for d in ("coupon", "point"):
            rss_delta = (after[d] - before[d]) * 1024 if after[d] and before[d] else None
            fig[d] = {"entities": n,
                      "rss_bytes_per_entity": rss_delta / n if rss_delta is not None else None,
                      "checkpoint_bytes": rafter[d][0] - rbefore[d][0],
                      "checkpoint_fields": rafter[d][1] - rbefore[d][1],
                      "checkpoint_bytes_per_entity": (rafter[d][0] - rbefore[d][0]) / n}
        row = {"requests": "%d+%d" % (n, n),
               "bytes/entity": "coupon %s point %s" % (fmt_num(fig["coupon"]["rss_bytes_per_entity"]),
                                                       fmt_num(fig["point"]["rss_bytes_per_entity"])),
               "ckpt MB": "coupon %.0f point %.0f" % (fig["coupon"]["checkpoint_bytes"] / 1e6,
                                                     fig["point"]["checkpoint_bytes"] / 1e6),
               "snapshot peak": "%.2fx steady (%.0f of %.0f MB, %.1f s)" % (
                   snap["peak_over_steady"], snap["peak_kb"] / 1024, snap["steady_kb"] / 1024, snap["seconds"]),
               "settled s": "%.1f" % applied_s, "invariants": "-", "peak RSS MB": rss_text(rss)}
        self.record("state-size", row, {
            "params": {"coupons": n, "accounts": n, "dedupe": "every request id kept (24 h window)"},
            "producer": prod, "fleet": fig, "in_process": core, "applied_and_checkpointed_s": applied_s,
            "forced_full_snapshot": snap,
            "peak_rss_kb": rss,
            "summary": "one coupon processor holding %d coupons: %s B/coupon resident, %s B/coupon in Redis; "
                       "point processors holding %d accounts: %s B/account resident, %s B/account in Redis "
                       "(each with its request id in the dedupe window; in-process heap: coupon %.0f, point %.0f, "
                       "dedupe entry %.0f B)" % (
                           n, fmt_num(fig["coupon"]["rss_bytes_per_entity"]),
                           fmt_num(fig["coupon"]["checkpoint_bytes_per_entity"]), n,
                           fmt_num(fig["point"]["rss_bytes_per_entity"]),
                           fmt_num(fig["point"]["checkpoint_bytes_per_entity"]),
                           core["coupon"]["bytes_per_entity"], core["point"]["bytes_per_entity"],
                           core["dedupe"]["bytes_per_entity"])})

    # ---- the run -----------------------------------------------------------------

    def run(self):
        only = set(self.args.only.split(",")) if self.args.only else set(SCENARIOS)
        unknown = only - set(SCENARIOS)
        if unknown:
            raise BenchError("unknown scenario(s) %s; choose from %s" % (", ".join(unknown), ", ".join(SCENARIOS)))
        log("%s run on %d cores; results in %s" % ("quick" if self.args.quick else "full", self.cores,
                                                      os.path.join(RESULTS, "quick") if self.args.quick else RESULTS))
        failed = []

        def attempt(name, fn, *a):
            if name not in only:
                return
            log("scenario %s" % name)
            try:
                fn(*a)
            except Exception as e:  # one scenario failing must not hide the others' figures
                failed.append(name)
                log("scenario %s FAILED: %s" % (name, e))
                if self.fleet:
                    self.fleet.failed = True

        attempt("core", self.scenario_core)
        if only - {"core"}:
            log("starting the fleet")
            self.fleet = Fleet(partitions=12)
            self.fleet.start()
            attempt("flash-coupon", self.scenario_flash)
            if "flash-open" in only:
                # Open loop at 70 % of what the closed loop reached, so latency
                # is measured at a load the system sustains.
                closed = self.results.get("flash-coupon", {}).get("loadgen", {}).get("throughput")
                rate = self.args.rate or (0.7 * closed if closed else 1000)
                attempt("flash-open", self.scenario_flash, "flash-open", rate, self.size["open_n"])
            attempt("timesale", self.scenario_timesale)
            attempt("points-mix", self.scenario_points)
            attempt("hot-partition", self.scenario_hot)
            attempt("rowlock", self.scenario_baseline, "rowlock")
            attempt("lua", self.scenario_baseline, "lua")
            attempt("overload", self.scenario_overload, "overload")
            attempt("connections", self.scenario_overload, "connections")
            attempt("state-size", self.scenario_state)  # last: it stops the sink
        print()
        for name, row, doc in self.rows:
            print("%-14s %s" % (name + ":", doc.get("summary", "")))
        print("machine: %d cores (%s)%s" % (self.cores, os.uname().machine,
                                            "; quick mode, figures are only a smoke test" if self.args.quick else ""))
        if failed:
            raise BenchError("failed: %s" % ", ".join(failed))

    def close(self):
        for name in list(self.baselines):
            self.stop_baseline(name)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.fleet:
            try:
                self.fleet.stop()
            except Exception as e:
                log("stopping the fleet: %s" % e)


# ---- table -----------------------------------------------------------------------

COLUMNS = [("requests", 12), ("submit/s", 9), ("p50 ms", 8), ("p99 ms", 8), ("p999 ms", 8), ("settle/s", 9),
           ("settled s", 9), ("outcomes/s", 10), ("invariants", 10)]
OURS = ("ingest", "processor-coupon", "processor-point", "processor-timesale", "sink-mysql",
        "baseline-rowlock", "baseline-lua")


def print_row(name, row, first):
    if first:
        print("%-14s %s  %s" % ("scenario", " ".join(c.rjust(w) for c, w in COLUMNS), "notes"))
    cells = [str(row.get(c, "-")).rjust(w) for c, w in COLUMNS]
    notes = []
    for c in ("per core", "bytes/entity", "ckpt MB", "snapshot peak", "ours/it", "overload", "peak RSS MB",
              "CPU us/req"):
        if c in row:
            notes.append("%s: %s" % (c, row[c]))
    print("%-14s %s  %s" % (name, " ".join(cells), "; ".join(notes)))
    sys.stdout.flush()


def inv_text(inv):
    bad = [k for k, v in inv.items() if not v]
    return "OK" if not bad else "FAIL(" + "; ".join(bad) + ")"


def rss_text(rss):
    """Our programs' peaks in MB (the baselines count as ours here), then the servers'."""
    short = {"processor-coupon": "coupon", "processor-point": "point", "processor-timesale": "timesale",
             "sink-mysql": "sink", "baseline-rowlock": "rowlock", "baseline-lua": "lua"}
    names = [k for k in OURS if rss.get(k)] + [k for k in ("redis", "mysql", "kafka") if rss.get(k)]
    return " ".join("%s %.0f" % (short.get(k, k), rss[k] / 1024) for k in names)


def cpu_text(us):
    """CPU microseconds per request by process, largest first, then the sum."""
    short = {"processor-coupon": "coupon", "processor-point": "point", "processor-timesale": "timesale",
             "sink-mysql": "sink", "baseline-rowlock": "rowlock", "baseline-lua": "lua"}
    parts = sorted(((v, k) for k, v in us.items() if k != "total"), reverse=True)
    return " ".join("%s %.1f" % (short.get(k, k), v) for v, k in parts) + " | total %.1f" % us["total"]


def fmt_num(x):
    return "-" if x is None else "%.0f" % x


def main():
    ap = argparse.ArgumentParser(description="promotion engine benchmarks")
    ap.add_argument("--quick", action="store_true", help="every scenario shrunk: under a minute")
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--conns", type=int, help="HTTP connections (default 64, quick 32)")
    ap.add_argument("--rate", type=float, help="open-loop rate for flash-open (default 70%% of closed loop)")
    args = ap.parse_args()
    b = Bench(args)

    def on_term(sig, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_term)
    rc = 0
    try:
        b.run()
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except Exception as e:
        log("FAILED: %s" % e)
        rc = 1
    finally:
        b.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
