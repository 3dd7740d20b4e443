"""053 — direct producers in the two languages shops use most, on their own clients.

Test 050 runs examples/produce_command.py on Debian's python3-confluent-kafka
(librdkafka 2.0.2, the fleet's own library). Here the commands come from
clients that share nothing with the fleet:

  * examples/java: Apache Kafka's Java client (its default partitioner,
    murmur2) and Avro's GenericRecord API, built with Maven;
  * examples/produce_command.py, unchanged, on PyPI's current confluent-kafka
    (its own bundled librdkafka) and avro, in the venv tools/pyenv.sh makes.

`make e2e` builds both first (`make examples`, examples/examples.mk); run
alone, this test runs that make target itself and fails, never skips, when
the Java build or the venv cannot be made. Each producer issues a coupon,
earns points and orders from a time sale; every request id must end
SUCCEEDED (or REJECTED for the expected reason) in GET /v1/requests/{id},
land on murmur2's partition, and its rows must be in MySQL exactly once. The
three encoders (Java's Avro, PyPI's avro, Debian's python3-avro) must also
write the same bytes for the same command.
"""

import os
import re
import subprocess
import zlib

import pytest

from client import ADMIN, Client, now_ms
from test_050_direct_producers import murmur2_partition, request_row, unique, wait_row

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JAR = os.path.join(ROOT, "examples", "java", "target", "promo-produce-command.jar")
PYENV_PYTHON = os.path.join(ROOT, "build", "pyenv", "bin", "python")
PRODUCE_PY = os.path.join(ROOT, "examples", "produce_command.py")
# A short-lived JVM starts fastest with the client compiler and the serial GC.
JAVA = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-jar", JAR]
PYPI = [PYENV_PYTHON, PRODUCE_PY]
DEBIAN = ["/usr/bin/python3", PRODUCE_PY]


@pytest.fixture(scope="module")
def built():
    """Builds the Java example and the PyPI venv (nothing to do after `make e2e`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    p = subprocess.run(["make", "-s", "-C", ROOT, "examples"], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, "make examples failed (exit %d): the Java producer or the PyPI venv " \
        "could not be built:\n%s" % (p.returncode, out[-6000:])
    assert os.path.isfile(JAR), "make examples made no %s:\n%s" % (JAR, out[-6000:])
    assert os.access(PYENV_PYTHON, os.X_OK), "make examples made no %s:\n%s" % (PYENV_PYTHON, out[-6000:])
    # The venv must really run PyPI's client, not Debian's 1.x.
    p = subprocess.run(PYENV_PYTHON + " -c 'import confluent_kafka, avro; print(confluent_kafka.__version__,"
                       " confluent_kafka.libversion()[0], avro.__version__)'", shell=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    ck, librdkafka, avro_version = p.stdout.decode().split()
    assert int(ck.split(".")[0]) >= 2 and librdkafka != "2.0.2", (ck, librdkafka)
    print("053: confluent-kafka %s (librdkafka %s), avro %s from PyPI" % (ck, librdkafka, avro_version))


def producer_env(fleet):
    """The environment of a producer next to this fleet: PROMO_KAFKA_MAX_IN_FLIGHT
    as the fleet's own producers have it (1 on the dev broker, which does not
    check idempotent sequences), read from ingest's environment."""
    env = dict(os.environ)
    pid = fleet.pid("ingest")
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"PROMO_KAFKA_MAX_IN_FLIGHT="):
                    env["PROMO_KAFKA_MAX_IN_FLIGHT"] = item.split(b"=", 1)[1].decode()
    except (OSError, TypeError):
        pass
    return env


def run(cmd, *args, env=None):
    """Runs one producer; returns (stdout lines, stderr)."""
    p = subprocess.run(cmd + [str(a) for a in args], env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, (cmd[0], args, p.returncode, err)
    lines = p.stdout.decode().strip().splitlines()
    assert lines, (cmd[0], args, err)
    return lines, err


def produce(fleet, cmd, *args):
    """Publishes one command with --verbose; returns (request id, partition)."""
    lines, err = run(cmd, "--bootstrap", fleet.bootstrap_servers, "--verbose", *args, env=producer_env(fleet))
    m = re.search(r"^promo\.\w+\.cmd \[(\d+)\] @\d+ key ", err, re.M)
    assert m, "no 'topic [partition] @offset' on stderr: %r" % err
    return lines[-1], int(m.group(1))


def test_same_bytes(built):
    """Java's Avro, PyPI's avro and Debian's python3-avro frame a command identically."""
    commands = [
        ["coupon", "create-policy", "--policy-id", "p053", "--name", "Fifty-three", "--discount-type", "PERCENT",
         "--discount-value", 15, "--max-discount", 3000, "--total-quantity", 100, "--valid-until", 1800000000000],
        ["coupon", "redeem", "--coupon-id", "p053:7", "--user-id", "u053", "--order-id", "o053",
         "--order-amount", 25000],
        ["point", "earn", "--user-id", "u053", "--amount", 500, "--reason", "signup", "--expires-at", 1800000000000],
        ["timesale", "order", "--sale-id", "s053", "--user-id", "u053", "--quantity", 2],
    ]
    for c in commands:
        common = c + ["--request-id", "r053", "--submitted-at", 1700000000000, "--client-id", "c053",
                      "--callback-url", "http://127.0.0.1:9/hook"]
        outs = [run(tool, "--dry-run", *common)[0] for tool in (JAVA, PYPI, DEBIAN)]
        assert outs[0] == outs[1] == outs[2], (c, outs)
        assert outs[0][-1] == "r053" and outs[0][2].startswith("value 00000000"), outs[0]


def test_foreign_producers(fleet, built):
    c = Client(fleet.http_port)
    partitions = fleet.partitions
    # A policy id whose murmur2 partition differs from librdkafka's default
    # (CRC32) one, so a producer with the wrong partitioner would show it.
    while True:
        policy = unique("d053p")
        if murmur2_partition(policy, partitions) != zlib.crc32(policy.encode()) % partitions:
            break
    sale = unique("d053s")
    ju, pu = unique("d053j"), unique("d053y")  # the Java producer's user, the PyPI producer's
    t = now_ms()

    # The campaign comes in over HTTP, as an admin sets it up.
    doc = c.run("/v1/coupon-policies", {
        "policy_id": policy, "name": "foreign " + policy, "discount_type": "FIXED",
        "discount_value": 1000, "min_order_amount": 5000, "total_quantity": 10,
        "per_user_limit": 1, "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000,
        "valid_days": 7}, key=ADMIN)
    assert doc["status"] == "SUCCEEDED", doc
    policy_partition = request_row(fleet, doc["request_id"])[5]
    assert policy_partition == murmur2_partition(policy, partitions)
    doc = c.run("/v1/time-sales", {
        "sale_id": sale, "product_id": "sku-" + sale, "name": "foreign sale", "original_price": 20000,
        "sale_price": 9900, "stock": 10, "per_user_limit": 2, "starts_at": t - 60000,
        "ends_at": t + 3600000}, key=ADMIN)
    assert doc["status"] == "SUCCEEDED", doc

    def check(rid, partition, key, status="SUCCEEDED", reason=None):
        assert partition == murmur2_partition(key, partitions), (rid, partition, key)
        doc = c.wait(rid)
        assert (doc["status"], doc.get("reason")) == (status, reason), doc
        assert doc["entity_key"] == key, doc
        row = request_row(fleet, rid)
        assert row[:2] == (status, reason) and row[4:] == (key, partition), row
        return doc

    # ---- Java: Apache Kafka's client, GenericRecord ----------------------------------------------------------
    issue_rid = unique("d053-java-issue")
    rid, part = produce(fleet, JAVA, "coupon", "issue", "--policy-id", policy, "--user-id", ju,
                        "--request-id", issue_rid)
    assert rid == issue_rid
    issued = check(rid, part, policy)
    assert issued["command_type"] == "IssueCoupon" and issued["result"]["coupon_id"] == policy + ":1", issued
    # The same request again: the first result, no second coupon.
    rid, part = produce(fleet, JAVA, "coupon", "issue", "--policy-id", policy, "--user-id", ju,
                        "--request-id", issue_rid)
    assert rid == issue_rid and c.wait(rid)["result"]["coupon_id"] == policy + ":1"
    # A new request for the same user: per_user_limit 1.
    rid, part = produce(fleet, JAVA, "coupon", "issue", "--policy-id", policy, "--user-id", ju)
    assert rid.startswith("java-")
    check(rid, part, policy, "REJECTED", "LIMIT_EXCEEDED")

    java_earn, part = produce(fleet, JAVA, "point", "earn", "--user-id", ju, "--amount", 700,
                              "--reason", "java-signup")
    assert check(java_earn, part, ju)["result"]["balance"] == 700

    java_order = unique("d053o")
    rid, part = produce(fleet, JAVA, "timesale", "order", "--sale-id", sale, "--user-id", ju,
                        "--quantity", 2, "--order-id", java_order)
    r = check(rid, part, sale)["result"]
    assert (r["order_id"], r["quantity"], r["remaining"]) == (java_order, 2, 8), r

    # ---- Python: examples/produce_command.py on PyPI's confluent-kafka ----------------------------------------
    rid, part = produce(fleet, PYPI, "coupon", "issue", "--policy-id", policy, "--user-id", pu)
    assert check(rid, part, policy)["result"]["coupon_id"] == policy + ":2"

    pypi_earn, part = produce(fleet, PYPI, "point", "earn", "--user-id", pu, "--amount", 300,
                              "--reason", "pypi-signup")
    assert check(pypi_earn, part, pu)["result"]["balance"] == 300

    pypi_order, part = produce(fleet, PYPI, "timesale", "order", "--sale-id", sale, "--user-id", pu,
                               "--quantity", 1)
    r = check(pypi_order, part, sale)["result"]
    assert (r["order_id"], r["quantity"], r["remaining"]) == (pypi_order, 1, 7), r  # the request id names it
    # The Java producer's user has ordered 2 already: per_user_limit 2.
    rid, part = produce(fleet, PYPI, "timesale", "order", "--sale-id", sale, "--user-id", ju, "--quantity", 1)
    check(rid, part, sale, "REJECTED", "LIMIT_EXCEEDED")

    # ---- MySQL: every row once ----------------------------------------------------------------------------------
    def rows(sql, args):
        return sorted(tuple(r) for r in fleet.mysql_query(sql, args))

    wait_row(fleet, "SELECT 1 FROM time_sales WHERE sale_id = %s AND sold = 3", (sale,))
    wait_row(fleet, "SELECT COUNT(*) FROM coupons WHERE policy_id = %s HAVING COUNT(*) >= 2", (policy,))
    assert rows("SELECT coupon_id, user_id, status FROM coupons WHERE policy_id = %s ORDER BY coupon_id",
                (policy,)) == \
        [(policy + ":1", ju, "ISSUED"), (policy + ":2", pu, "ISSUED")]
    wait_row(fleet, "SELECT COUNT(*) FROM point_ledger WHERE user_id IN (%s, %s) HAVING COUNT(*) >= 2", (ju, pu))
    assert rows("SELECT user_id, kind, delta, balance_after, request_id FROM point_ledger"
                " WHERE user_id IN (%s, %s)", (ju, pu)) == \
        sorted([(ju, "EARN", 700, 700, java_earn), (pu, "EARN", 300, 300, pypi_earn)])
    assert rows("SELECT user_id, balance FROM point_accounts WHERE user_id IN (%s, %s)", (ju, pu)) == \
        sorted([(ju, 700), (pu, 300)])
    assert rows("SELECT order_id, user_id, quantity, status FROM sale_orders WHERE sale_id = %s", (sale,)) == \
        sorted([(java_order, ju, 2, "PLACED"), (pypi_order, pu, 1, "PLACED")])
    assert rows("SELECT stock, sold FROM time_sales WHERE sale_id = %s", (sale,)) == [(10, 3)]
    assert rows("SELECT COUNT(*) FROM requests WHERE request_id = %s", (issue_rid,)) == [(1,)]
    status, doc, _ = c.get("/v1/coupon-policies/" + policy)
    assert status == 200 and (doc["issued"], doc["remaining"]) == (2, 8), doc
