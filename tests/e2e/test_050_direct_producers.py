"""050 — commands published straight to Kafka by an independent client.

examples/produce_command.py (python3-confluent-kafka + python3-avro, run as a
separate /usr/bin/python3 process, sharing no code with the fleet) publishes
coupon, point and time-sale commands, and examples/produce_with_kcat.sh
publishes an IssueCoupon with kcat. Their outcomes must show up exactly like
those of HTTP requests: in GET /v1/requests/{id}, in the read endpoints and in
MySQL. The policy id is chosen so that librdkafka's default partitioner and
murmur2 disagree on its partition, and no processor forwards anything
meanwhile, which proves that both examples land where ingest put the policy
(on another partition the processor would forward them: they would work, a
hop later; test 075 covers that).
"""

import os
import re
import subprocess
import time
import urllib.request
import uuid
import zlib

from client import ADMIN, Client, now_ms

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRODUCE = os.path.join(ROOT, "examples", "produce_command.py")
KCAT = os.path.join(ROOT, "examples", "produce_with_kcat.sh")
PY = "/usr/bin/python3"


def murmur2(data):
    """Kafka's murmur2 (the Java client's partitioner, librdkafka's murmur2_random)."""
    m = 0x5bd1e995
    h = (0x9747b28c ^ len(data)) & 0xffffffff
    n4 = len(data) // 4
    for i in range(n4):
        k = (int.from_bytes(data[4 * i:4 * i + 4], "little") * m) & 0xffffffff
        k = ((k ^ (k >> 24)) * m) & 0xffffffff
        h = ((h * m) & 0xffffffff) ^ k
    rest = data[4 * n4:]
    if len(rest) >= 3:
        h ^= rest[2] << 16
    if len(rest) >= 2:
        h ^= rest[1] << 8
    if len(rest) >= 1:
        h = ((h ^ rest[0]) * m) & 0xffffffff
    h = ((h ^ (h >> 13)) * m) & 0xffffffff
    return h ^ (h >> 15)


def murmur2_partition(key, partitions):
    return (murmur2(key.encode()) & 0x7fffffff) % partitions


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def produce(fleet, *args):
    """Runs the Python example; returns the request id it prints."""
    p = subprocess.run([PY, PRODUCE, "--bootstrap", fleet.bootstrap_servers] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, (args, p.returncode, p.stderr.decode(errors="replace"))
    rid = p.stdout.decode().strip().splitlines()[-1]
    assert rid, p.stdout
    return rid


def wait_row(fleet, sql, args, timeout=30.0):
    """The first row of a query once it has one (the sink writes in batches)."""
    deadline = time.time() + timeout
    while True:
        rows = fleet.mysql_query(sql, args)
        if rows:
            return rows[0]
        assert time.time() < deadline, "no row after %.0f s: %s %r" % (timeout, sql, args)
        time.sleep(0.1)


def forwarded(fleet):
    """promo_commands_forwarded_total of every processor, summed."""
    total = 0
    for d in ("COUPON", "POINT", "TIMESALE"):
        port = int(fleet.env["PROMO_METRICS_PORT_PROCESSOR_" + d])
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            m = re.search(r"^promo_commands_forwarded_total\{[^}]*\} (\d+)$", r.read().decode(), re.M)
        total += int(m.group(1))
    return total


def request_row(fleet, rid):
    return wait_row(fleet, "SELECT status, reason, domain, command_type, entity_key, source_partition"
                           " FROM requests WHERE request_id = %s", (rid,))


def test_direct_producers(fleet):
    c = Client(fleet.http_port)
    partitions = fleet.partitions
    # A policy id whose murmur2 partition differs from librdkafka's default
    # (CRC32) one, so a producer with the other partitioner would need a forward.
    while True:
        policy = unique("d050p")
        if murmur2_partition(policy, partitions) != zlib.crc32(policy.encode()) % partitions:
            break
    user, user2, sale = unique("d050u"), unique("d050v"), unique("d050s")
    t = now_ms()
    forwarded0 = forwarded(fleet)

    # The policy comes in over HTTP, like any campaign an admin sets up.
    doc = c.run("/v1/coupon-policies", {
        "policy_id": policy, "name": "direct " + policy, "discount_type": "FIXED",
        "discount_value": 1000, "min_order_amount": 5000, "total_quantity": 10,
        "per_user_limit": 1, "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000,
        "valid_days": 7}, key=ADMIN)
    assert doc["status"] == "SUCCEEDED", doc
    policy_partition = request_row(fleet, doc["request_id"])[5]
    assert policy_partition == murmur2_partition(policy, partitions)

    # Coupon: issue over Kafka, with a request id of our choosing.
    rid = produce(fleet, "coupon", "issue", "--policy-id", policy, "--user-id", user,
                  "--request-id", unique("d050-issue"))
    issued = c.wait(rid)
    assert issued["status"] == "SUCCEEDED", issued
    assert issued["command_type"] == "IssueCoupon" and issued["entity_key"] == policy
    coupon_id = issued["result"]["coupon_id"]
    assert coupon_id == policy + ":1"
    assert issued["result"]["expires_at"] > t
    assert request_row(fleet, rid) == ("SUCCEEDED", None, "COUPON", "IssueCoupon", policy, policy_partition)
    assert wait_row(fleet, "SELECT user_id, policy_id FROM coupons WHERE coupon_id = %s",
                    (coupon_id,)) == (user, policy)

    # The same request published again is the same request: first result, no second coupon.
    again = produce(fleet, "coupon", "issue", "--policy-id", policy, "--user-id", user, "--request-id", rid)
    assert again == rid
    # The key is the coupon id's policy part: redeem lands on the policy's partition.
    rid = produce(fleet, "coupon", "redeem", "--coupon-id", coupon_id, "--user-id", user,
                  "--order-id", unique("d050o"), "--order-amount", 12000)
    redeemed = c.wait(rid)
    assert redeemed["status"] == "SUCCEEDED", redeemed
    assert redeemed["result"]["discount"] == 1000
    assert request_row(fleet, rid)[5] == policy_partition
    deadline = time.time() + 30
    while fleet.mysql_query("SELECT status FROM coupons WHERE coupon_id = %s", (coupon_id,))[0][0] != "REDEEMED":
        assert time.time() < deadline, "coupon %s never REDEEMED in MySQL" % coupon_id
        time.sleep(0.1)

    # A business rejection is a result too, whoever published the command.
    rid = produce(fleet, "coupon", "issue", "--policy-id", unique("d050-none"), "--user-id", user)
    rejected = c.wait(rid)
    assert rejected["status"] == "REJECTED" and rejected["reason"] == "NOT_FOUND", rejected
    assert request_row(fleet, rid)[:2] == ("REJECTED", "NOT_FOUND")

    # Points: earn over Kafka.
    rid = produce(fleet, "point", "earn", "--user-id", user, "--amount", 700, "--reason", "direct-signup")
    earned = c.wait(rid)
    assert earned["status"] == "SUCCEEDED", earned
    assert earned["result"]["balance"] == 700
    assert request_row(fleet, rid)[:5] == ("SUCCEEDED", None, "POINT", "EarnPoints", user)
    assert wait_row(fleet, "SELECT balance FROM point_accounts WHERE user_id = %s AND balance = 700",
                    (user,)) == (700,)
    assert wait_row(fleet, "SELECT kind, delta, balance_after, request_id FROM point_ledger WHERE user_id = %s",
                    (user,)) == ("EARN", 700, 700, rid)
    status, doc, _ = c.get("/v1/points/" + user)
    assert status == 200 and doc["balance"] == 700, doc

    # Time sale: created and ordered over Kafka, no HTTP at all.
    rid = produce(fleet, "timesale", "create", "--sale-id", sale, "--product-id", "sku-" + sale,
                  "--name", "direct sale", "--original-price", 20000, "--sale-price", 9900,
                  "--stock", 5, "--per-user-limit", 2, "--starts-at", t - 60000, "--ends-at", t + 3600000)
    created = c.wait(rid)
    assert created["status"] == "SUCCEEDED", created
    order_id = unique("d050o")
    rid = produce(fleet, "timesale", "order", "--sale-id", sale, "--user-id", user, "--quantity", 2,
                  "--order-id", order_id)
    ordered = c.wait(rid)
    assert ordered["status"] == "SUCCEEDED", ordered
    r = ordered["result"]
    assert (r["order_id"], r["quantity"], r["remaining"]) == (order_id, 2, 3), r
    assert request_row(fleet, rid)[:5] == ("SUCCEEDED", None, "TIMESALE", "PlaceOrder", sale)
    assert wait_row(fleet, "SELECT user_id, quantity, status FROM sale_orders WHERE sale_id = %s AND order_id = %s",
                    (sale, order_id)) == (user, 2, "PLACED")
    assert wait_row(fleet, "SELECT stock, sold FROM time_sales WHERE sale_id = %s AND sold = 2", (sale,)) == (5, 2)
    status, doc, _ = c.get("/v1/time-sales/" + sale)
    assert status == 200 and (doc["sold"], doc["remaining"]) == (2, 3), doc

    # kcat, with the value framed by printf: the second coupon of the policy.
    p = subprocess.run(["bash", KCAT, fleet.bootstrap_servers, policy, user2], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    rid = p.stdout.decode().strip().splitlines()[-1]
    by_kcat = c.wait(rid)
    assert by_kcat["status"] == "SUCCEEDED", by_kcat
    assert by_kcat["result"]["coupon_id"] == policy + ":2"
    assert request_row(fleet, rid) == ("SUCCEEDED", None, "COUPON", "IssueCoupon", policy, policy_partition)
    assert wait_row(fleet, "SELECT user_id FROM coupons WHERE coupon_id = %s", (policy + ":2",)) == (user2,)

    # Two coupons in all: the repeated request added none.
    status, doc, _ = c.get("/v1/coupon-policies/" + policy)
    assert status == 200 and (doc["issued"], doc["remaining"]) == (2, 8), doc

    # Both examples partition with murmur2: nothing needed forwarding.
    assert forwarded(fleet) == forwarded0
