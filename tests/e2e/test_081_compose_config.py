"""081 — the production compose file and the configuration reference agree
with the programs.

Every PROMO_* variable a C program reads (a "PROMO_..." string literal in
its sources) must be documented in docs/configuration.md, and set in
docker-compose.yml for every service that runs that program; the variables
fleet.sh and the dev broker read are documented too (they have no place in
production). `docker-compose config -q` must accept the file when the command
is installed (Debian's docker-compose, from tools/deps.sh). Needs no fleet.
"""

import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
CONFIG_MD = os.path.join(ROOT, "docs", "configuration.md")
# The secrets the compose file requires, with throwaway values for the check.
SECRETS = {"PROMO_MYSQL_PASSWORD": "check", "MYSQL_ROOT_PASSWORD": "check",
           "PROMO_API_KEYS": "check-admin:admin", "PROMO_WEBHOOK_SECRET": "check", "PROMO_REDIS_PASSWORD": "check"}

# Which sources make up each program that runs in production: its own
# directory's files and what it links from elsewhere (see the Makefile and
# its fragments), plus common/.
PROGRAMS = {
    "promo-ingest": ["ingest/*.c"],
    "promo-processor": ["processors/*.c"],
    "promo-sink-mysql": ["sinks/mysql_main.c", "sinks/sink_mysql.c"],
    "promo-webhook": ["sinks/webhook*.c", "sinks/sink_mysql.c"],
    "promoctl": ["tools/promoctl/*.c"],
}
DEV_ONLY = ["tools/devkafka.c", "tools/fleet.sh", "tools/kafka/kafka.sh"]
LITERAL = re.compile(r'"(PROMO_[A-Z0-9_]+)"')


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def vars_in(patterns, shell=False):
    found = set()
    for pat in patterns:
        for path in glob.glob(os.path.join(ROOT, pat)):
            text = read(path)
            found |= set(LITERAL.findall(text))
            if shell:
                found |= set(re.findall(r"\b(PROMO_[A-Z0-9_]+)\b", text))
    return found


def program_vars():
    common = vars_in(["common/*.c"])
    return {prog: vars_in(pats) | common for prog, pats in PROGRAMS.items()}


def test_sources_are_found():
    got = program_vars()
    # A sanity check of the scan itself: a few reads every deployment needs.
    assert "PROMO_KAFKA_BOOTSTRAP" in got["promo-ingest"]
    assert "PROMO_SESSION_TIMEOUT_MS" in got["promo-processor"]
    assert "PROMO_MYSQL_HOST" in got["promo-sink-mysql"]


def test_every_variable_is_documented():
    doc = read(CONFIG_MD)
    documented = set(re.findall(r"^\|\s*`(PROMO_[A-Z0-9_]+)`", doc, re.M))
    wanted = set().union(*program_vars().values())
    # fleet.sh's derived names (PROMO_METRICS_PORT_<PROGRAM>) are documented as a pattern.
    wanted |= {v for v in vars_in(DEV_ONLY, shell=True) if not v.startswith("PROMO_METRICS_PORT_")}
    missing = sorted(wanted - documented)
    assert not missing, "undocumented in docs/configuration.md: %s" % ", ".join(missing)


def compose_services():
    yaml = pytest.importorskip("yaml")  # a dependency of docker-compose
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)["services"]


def service_program(svc):
    """The promo program a service runs (entrypoint or first command word), or None."""
    for key in ("entrypoint", "command"):
        v = svc.get(key)
        words = v if isinstance(v, list) else (v or "").split()
        if words and (words[0].startswith("promo-") or words[0] == "promoctl"):
            return words[0]
    return None


def test_compose_sets_what_each_program_reads():
    services = compose_services()
    wanted = program_vars()
    seen = set()
    for name, svc in services.items():
        prog = service_program(svc)
        if not prog:
            continue
        seen.add(prog)
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        missing = sorted(wanted[prog] - set(env))
        assert not missing, "service %s (%s) does not set %s" % (name, prog, ", ".join(missing))
    assert seen == set(PROGRAMS), "programs without a service: %s" % sorted(set(PROGRAMS) - seen)


def test_compose_runs_several_processors_per_domain():
    services = compose_services()
    per_domain = {}
    for svc in services.values():
        if service_program(svc) == "promo-processor":
            d = svc["environment"]["PROMO_DOMAIN"]
            per_domain[d] = per_domain.get(d, 0) + 1
            assert svc["environment"]["PROMO_SESSION_TIMEOUT_MS"] >= 6000
    assert per_domain == {"coupon": 2, "point": 2, "timesale": 2}, per_domain


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
def test_docker_compose_accepts_the_file(tmp_path):
    # An empty env file: a developer's .env must not decide the outcome.
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMO_")}
    env.update(SECRETS)
    p = subprocess.run(["docker-compose", "-f", COMPOSE, "--env-file", str(env_file), "config", "-q"], env=env, cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, p.stdout.decode(errors="replace")
    # And refuses it without the secrets: nothing insecure by default.
    env = {k: v for k, v in env.items() if k not in SECRETS}
    p = subprocess.run(["docker-compose", "-f", COMPOSE, "--env-file", str(env_file), "config", "-q"], env=env, cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode != 0
