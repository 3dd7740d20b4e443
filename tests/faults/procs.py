"""procs.py — extra processor instances beside the fleet's own, for the fault
suite and the fencing test.

tools/fleet.sh runs one process per component name; to have partitions move
between owners we need two or three processors per domain. An Extra is one
more build/bin/promo-processor started with the fleet's own settings (read
from $PROMO_VAR/fleet.env, exactly as fleet.sh would export them), its own
metrics port and its own log under $PROMO_VAR/log, and stopped, killed,
paused and resumed by its pid only. metrics() reads any processor's
Prometheus counters, so tests can see partitions owned and fenced writes.
"""

import os
import re
import signal
import subprocess
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def fleet_env(var):
    """The environment fleet.sh gives its programs, from $PROMO_VAR/fleet.env."""
    path = os.path.join(var, "fleet.env")
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    out = subprocess.run(["bash", "-c", 'source "$1" && env -0', "_", path], env=base, check=True,
                         stdout=subprocess.PIPE).stdout
    env = dict(base)
    for item in out.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode()] = v.decode()
    return env


def metrics(port, timeout=3):
    """{name{labels}: value} from http://127.0.0.1:port/metrics; {} when down."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as r:
            text = r.read().decode()
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def metric(port, name):
    """Sum of every series of one metric name (labels ignored); None when down."""
    m = metrics(port)
    if not m:
        return None
    return sum(v for k, v in m.items() if re.match(re.escape(name) + r"(\{|$)", k))


class Extra:
    """One more processor for a domain, e.g. Extra(fleet, "coupon", 2)."""

    def __init__(self, fleet, domain, index, metrics_port, env=None):
        self.fleet, self.domain, self.index = fleet, domain, index
        self.name = "processor-%s-%d" % (domain, index)
        self.metrics_port = metrics_port
        self.extra_env = dict(env or {})
        self.proc = None

    @property
    def log_path(self):
        return os.path.join(self.fleet.var, "log", self.name + ".log")

    def start(self):
        env = fleet_env(self.fleet.var)
        env["PROMO_METRICS_PORT"] = str(self.metrics_port)
        env.update(self.extra_env)
        binary = os.path.join(env.get("PROMO_BIN_DIR") or os.path.join(ROOT, "build", "bin"), "promo-processor")
        log = open(self.log_path, "ab")
        log.write(b"\n==== faults: starting %s\n" % self.name.encode())
        log.flush()
        self.proc = subprocess.Popen([binary, "--domain", self.domain], env=env, cwd=self.fleet.var,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.time() + 10
        while time.time() < deadline and self.alive():
            if metrics(self.metrics_port, timeout=1):
                return self
            time.sleep(0.1)
        if not self.alive():
            raise RuntimeError("%s exited at start (see %s)" % (self.name, self.log_path))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self):
        """SIGKILL and reap."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, grace=15):
        """SIGTERM (a clean leave: checkpoint, then leave the group), SIGKILL
        after the grace period."""
        if not self.alive():
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def metric(self, name):
        return metric(self.metrics_port, name)
