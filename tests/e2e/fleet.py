"""fleet.py — the end-to-end tests' handle on a real local fleet.

A Fleet runs tools/fleet.sh with its own PROMO_VAR (a fresh temporary
directory) and its own free ports, so a test run never touches the developer's
var/ or a fleet already running on the default ports. It then offers what the
tests need to talk to the fleet and to hurt it: HTTP with the default API
keys over keep-alive connections, MySQL (pymysql), a tiny Redis client, the
Kafka bootstrap list, and stopping, killing and restarting single programs
and brokers through fleet.sh stop-one/start-one. The broker is Apache Kafka
(tools/kafka/); Fleet(broker="mock") runs librdkafka's mock cluster instead,
with its fault-injection port (kafka_control), for the tests that need a
broker error Apache Kafka cannot be made to return.
stop() must always run (conftest.py's fixture sees to it); it stops every
process and, after a failure, prints the tail of every log.

Standard library only, plus pymysql. Run the tests with /usr/bin/python3.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEET_SH = os.path.join(ROOT, "tools", "fleet.sh")

NAMES = ("redis", "mysql", "kafka", "sink-mysql", "webhook", "processor-coupon", "processor-point",
         "processor-timesale", "ingest")
PROGRAMS = ("sink-mysql", "webhook", "processor-coupon", "processor-point", "processor-timesale")
TOPICS = ("promo.coupon.cmd", "promo.point.cmd", "promo.timesale.cmd", "promo.results", "promo.dlq")

ADMIN_KEY = "dev-admin-key"
CLIENT_KEY = "dev-client-key"
API_KEYS = {"admin": ADMIN_KEY, "client": CLIENT_KEY}


class FleetError(Exception):
    pass


def result_request_id(value):
    """The request id of a Result as it sits in promo.results: the first
    field of the Confluent-framed Avro record (after the 5-byte frame), a
    string, so a zigzag varint length and UTF-8. None when malformed."""
    pos, shift, raw = 5, 0, 0
    while pos < len(value):
        b = value[pos]
        raw |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if not b & 0x80:
            n = (raw >> 1) ^ -(raw & 1)
            return value[pos:pos + n].decode() if 0 <= n <= len(value) - pos else None
    return None


def free_port_range(n):
    """The first of n consecutive loopback ports that were free a moment ago
    (the local Kafka nodes listen on consecutive ports). They are drawn below
    the kernel's ephemeral range when there is room: a port in that range may
    become the local end of some outgoing connection between this check and
    the broker's bind (a Kafka node once failed to start so)."""
    import random
    lo, hi = 20000, 60000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
        if eph - lo > 1000 + n:
            hi = eph
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        base = random.randrange(lo, hi - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise FleetError("no %d consecutive free ports" % n)


def free_ports(n):
    """n distinct loopback ports that were free a moment ago."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class Response:
    """One HTTP answer: status, headers (lower-case names), raw body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.body[:200])


class Fleet:
    def __init__(self, env=None, partitions=12, session_timeout_ms=3000, broker="apache", brokers=None):
        self.broker = broker
        self.brokers = brokers or (3 if broker == "mock" else 1)
        self.var = None
        self.env = None
        self.extra_env = dict(env or {})
        self.partitions = partitions
        self.session_timeout_ms = session_timeout_ms
        self.failed = False
        self.running = False
        self._local = threading.local()

    # ---- lifecycle -------------------------------------------------------------

    def start(self, name=None, timeout=180):
        """Start the whole fleet (name None) or one component of it."""
        if name is not None:
            self._check_name(name)
            self._fleet_sh("start-one", name, timeout=timeout)
            return self
        self.var = tempfile.mkdtemp(prefix="promo-e2e-")
        ports = free_ports(4 + len(PROGRAMS))
        # The caller's PROMO_* settings would point at its own fleet; only
        # the choice of binaries and the fleet.sh timeouts pass through.
        keep = ("PROMO_BIN_DIR", "PROMO_START_TIMEOUT_S", "PROMO_STOP_GRACE_S")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMO_") or k in keep}
        env.update({
            "PROMO_VAR": self.var,
            "PROMO_HTTP_PORT": str(ports[0]),
            "PROMO_REDIS_PORT": str(ports[1]),
            "PROMO_MYSQL_PORT": str(ports[2]),
            "PROMO_KAFKA_CONTROL_PORT": str(ports[3]) if self.broker == "mock" else "0",
            "PROMO_DEV_BROKER": self.broker,
            "PROMO_KAFKA_BROKERS": str(self.brokers),
            "PROMO_KAFKA_PORT": str(free_port_range(self.brokers)),
            "PROMO_KAFKA_CONTROLLER_PORT": str(free_port_range(self.brokers)),
            "PROMO_KAFKA_PARTITIONS": str(self.partitions),
            "PROMO_KAFKA_BOOTSTRAP_FILE": os.path.join(self.var, "kafka.bootstrap"),
            "PROMO_SESSION_TIMEOUT_MS": str(self.session_timeout_ms),
            "PROMO_API_KEYS": "%s:admin,%s:client" % (ADMIN_KEY, CLIENT_KEY),
            "PROMO_MYSQL_USER": "promo",
            "PROMO_MYSQL_PASSWORD": "promo",
            "PROMO_MYSQL_DB": "promo",
            # Webhook retries in fractions of a second, so a test sees a
            # schedule play out; the secret in its Standard Webhooks form.
            "PROMO_WEBHOOK_SCHEDULE": "0,300ms,300ms,300ms,1s,2s,3s,5s,5s,5s",
            "PROMO_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        })
        for i, prog in enumerate(PROGRAMS):
            env["PROMO_METRICS_PORT_" + prog.upper().replace("-", "_")] = str(ports[4 + i])
        env.update(self.extra_env)
        self.env = env
        self.running = True
        try:
            self._fleet_sh("start", timeout=timeout)
        except Exception:
            self.failed = True
            raise
        return self

    def stop(self):
        """Stop everything; after a failure print every log's tail first.
        Safe to call twice and after a failed start."""
        if self.env is None:
            return
        if self.failed:
            self.dump_logs()
        if self.running:
            try:
                self._fleet_sh("stop", timeout=120)
            finally:
                self.running = False
        if self.var and not self.failed and not os.environ.get("PROMO_E2E_KEEP"):
            shutil.rmtree(self.var, ignore_errors=True)
        elif self.var:
            sys.__stderr__.write("fleet: kept %s\n" % self.var)

    def kill(self, name, sig="KILL"):
        """Send sig (a name like "KILL" or a signal number) to one component: KILL and TERM wait until it is gone
        (TERM escalates to KILL after the grace period); other signals (STOP,
        CONT...) are only delivered."""
        self._check_name(name)
        if isinstance(sig, int):  # signal.SIGKILL or 9
            sig = signal.Signals(sig).name
        self._fleet_sh("stop-one", name, str(sig))

    def restart(self, name, sig="TERM"):
        self.kill(name, sig)
        self.start(name)

    def kafka_nodes(self):
        """The broker components: kafka-1 ... kafka-N (Apache Kafka) or kafka (mock)."""
        return ["kafka"] if self.broker == "mock" else ["kafka-%d" % i for i in range(1, self.brokers + 1)]

    def pid(self, name):
        if name == "kafka" and self.broker != "mock":
            name = "kafka-1"
        try:
            with open(os.path.join(self.var, "run", name + ".pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def status(self):
        """{name: pid or None} for every component, None when not running."""
        out = {}
        for name in NAMES:
            pid = self.pid(name)
            try:
                with open("/proc/%d/stat" % pid) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                out[name] = pid if state not in ("Z", "X") else None
            except (OSError, TypeError, IndexError):
                out[name] = None
        return out

    def _check_name(self, name):
        if name not in NAMES and name not in self.kafka_nodes():
            raise ValueError("unknown component %r, one of %s" % (name, ", ".join(NAMES)))

    def _fleet_sh(self, *args, timeout=120):
        try:
            p = subprocess.run(["bash", FLEET_SH] + list(args), env=self.env, cwd=ROOT,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise FleetError("fleet.sh %s: no answer after %ss\n%s" % (
                " ".join(args), timeout, (e.output or b"").decode(errors="replace")))
        out = p.stdout.decode(errors="replace")
        if p.returncode != 0:
            raise FleetError("fleet.sh %s failed (exit %d):\n%s" % (" ".join(args), p.returncode, out))
        return out

    # ---- logs ------------------------------------------------------------------

    def log_path(self, name):
        return os.path.join(self.var, "log", name + ".log")

    def logs(self, name, lines=50):
        """The last lines of a component's log, as one string."""
        try:
            with open(self.log_path(name), "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                data = f.read().decode(errors="replace")
        except OSError as e:
            return "(no log: %s)" % e
        return "\n".join(data.splitlines()[-lines:])

    def dump_logs(self, lines=40, out=None):
        out = out or sys.__stderr__
        for name in NAMES:
            out.write("\n----- %s (last %d lines of %s)\n" % (name, lines, self.log_path(name)))
            out.write(self.logs(name, lines) + "\n")
        out.flush()

    # ---- HTTP ------------------------------------------------------------------

    @property
    def http_port(self):
        return int(self.env["PROMO_HTTP_PORT"])

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.http_port, path)

    def http(self, timeout=30):
        """A new keep-alive connection to ingest; the caller closes it."""
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)

    def request(self, method, path, body=None, role="client", key=None, headers=None, timeout=30):
        """One request over this thread's keep-alive connection. body: a dict
        or list (sent as JSON), bytes or str (sent as is), or None. role picks
        the default API key ("admin", "client", or None for no
        Authorization); key overrides it. Returns a Response."""
        hdrs = {}
        key = key if key is not None else API_KEYS.get(role) if role else None
        if key:
            hdrs["Authorization"] = "Bearer " + key
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        hdrs.update(headers or {})
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self._local.conn = self.http(timeout)
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request(method, path, body=body, headers=hdrs)
                r = conn.getresponse()
                data = r.read()
                resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
                if r.will_close:
                    conn.close()
                    self._local.conn = None
                return resp
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._local.conn = None
                # A kept-alive connection the server had closed: one retry on
                # a fresh one. A fresh connection failing is a real failure.
                if not reused or attempt == 1:
                    raise
            except Exception:
                conn.close()
                self._local.conn = None
                raise
        raise AssertionError("unreachable")

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def wait_request(self, request_id, timeout=30, role="client"):
        """Poll GET /v1/requests/{id} until it leaves PENDING; returns the JSON."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get("/v1/requests/%s?wait_ms=1000" % request_id, role=role)
            if r.status == 200:
                doc = r.json()
                if doc.get("status") != "PENDING":
                    return doc
            elif r.status != 404:
                raise FleetError("GET /v1/requests/%s: %r" % (request_id, r))
            if time.monotonic() > deadline:
                raise FleetError("request %s still pending after %ss" % (request_id, timeout))
            time.sleep(0.05)

    # ---- MySQL, Redis, Kafka ----------------------------------------------------

    @property
    def mysql_port(self):
        return int(self.env["PROMO_MYSQL_PORT"])

    def mysql(self, **kw):
        """A new pymysql connection (autocommit) to the fleet's database; the
        caller closes it."""
        import pymysql
        args = dict(host="127.0.0.1", port=self.mysql_port, user=self.env["PROMO_MYSQL_USER"],
                    password=self.env["PROMO_MYSQL_PASSWORD"], database=self.env["PROMO_MYSQL_DB"],
                    autocommit=True, connect_timeout=10, charset="utf8mb4")
        args.update(kw)
        return pymysql.connect(**args)

    def mysql_query(self, sql, args=None):
        """Rows of one query, on a short-lived connection."""
        conn = self.mysql()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    @property
    def redis_port(self):
        return int(self.env["PROMO_REDIS_PORT"])

    def redis(self, *args, timeout=10):
        """One Redis command, e.g. fleet.redis("GET", "promo:req:r1"). Returns
        str, int, None, or a list; a Redis error raises FleetError."""
        def frame(cmd):
            out = b"*%d\r\n" % len(cmd)
            for a in cmd:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            return out

        password = self.env.get("PROMO_REDIS_PASSWORD")
        if not password and self.env.get("PROMO_REDIS_PASSWORD_FILE"):
            with open(self.env["PROMO_REDIS_PASSWORD_FILE"]) as f:
                password = f.read().strip()
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=timeout) as s:
            r = s.makefile("rb")
            if password:
                s.sendall(frame(("AUTH", password)))
                _resp_read(r)
            s.sendall(frame(args))
            return _resp_read(r)

    @property
    def bootstrap_servers(self):
        """The broker list (the mock broker's changes when it restarts)."""
        with open(self.env["PROMO_KAFKA_BOOTSTRAP_FILE"]) as f:
            return f.readline().strip()

    def topic_config(self, topic, name, value, timeout=30):
        """Sets one dynamic config of a topic on the broker, keeping its other
        dynamic configs (AlterConfigs replaces the whole set)."""
        from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        res = ConfigResource("topic", topic)
        entries = list(admin.describe_configs([res], request_timeout=timeout).values())[0].result(timeout)
        keep = {e.name: e.value for e in entries.values()
                if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and e.value is not None}
        keep[name] = str(value)
        for f in admin.alter_configs([ConfigResource("topic", topic, set_config=keep)],
                                     request_timeout=timeout).values():
            f.result(timeout)

    def refuse_produce(self, topic):
        """Apache Kafka refuses every write to topic until accept_produce:
        its max.message.bytes goes below the size of any record batch, so
        each Produce is answered MESSAGE_TOO_LARGE. (min.insync.replicas
        above the replica count does not work: Kafka 3.9 caps the required
        in-sync replicas at the replica count.)"""
        self.topic_config(topic, "max.message.bytes", 16)

    def accept_produce(self, topic):
        self.topic_config(topic, "max.message.bytes", 1048588)  # the broker's default

    def kafka_control(self, command, timeout=10):
        """Send one fault-injection command to the dev broker (see
        tools/devkafka.c: broker-down N, broker-up N, request-errors APIKEY
        COUNT ERRCODE, ...). Returns the answer after "ok"; raises on "error".
        Only on Fleet(broker="mock")."""
        if self.broker != "mock":
            raise FleetError("kafka_control needs Fleet(broker='mock'); this fleet runs Apache Kafka")
        port = int(self.env["PROMO_KAFKA_CONTROL_PORT"])
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(command.encode() + b"\n")
            line = s.makefile("rb").readline().decode().strip()
        if not line.startswith("ok"):
            raise FleetError("devkafka %r: %s" % (command, line))
        return line[2:].strip()

    def migration_tables(self):
        """Table names the migrations create, read from sinks/migrations."""
        names = []
        mdir = os.path.join(ROOT, "sinks", "migrations")
        for fn in sorted(os.listdir(mdir)):
            if fn.endswith(".sql"):
                with open(os.path.join(mdir, fn)) as f:
                    names += re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?(\w+)`?",
                                        f.read(), re.I)
        return names


def _resp_read(f):
    line = f.readline()
    if not line:
        raise FleetError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise FleetError("redis: " + rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:n]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise FleetError("redis: unexpected reply %r" % line)
