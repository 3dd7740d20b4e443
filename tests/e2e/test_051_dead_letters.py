"""051 — dead letters: whatever a direct producer puts on a command topic, the
partition goes on.

On ONE partition of promo.coupon.cmd (every message keyed by the same existing
policy, the null-key one sent to that partition explicitly), malformed
messages of many kinds are interleaved with good IssueCoupon commands: bad
framing, wrong or foreign schema ids, truncated and garbage Avro, oversized,
NUL-bearing and non-UTF-8 strings, values the field rules forbid, and keys
that do not name the command's entity. Then:

  * each malformed message is in promo.dlq (read from the beginning with
    confluent_kafka, decoded as DeadLetter with python3-avro, matched on its
    source offset) with its original key and bytes, its source topic,
    partition and offset, and the error code its fault calls for;
  * every good command on the same partition, before and after them,
    SUCCEEDED, as GET /v1/requests/{id} shows;
  * the coupon processor's promo_dead_letters_total rose by exactly the
    number sent.

The messages are built by hand around examples/produce_command.py's encoder,
so each fault is exactly the one named.
"""

import io
import os
import re
import struct
import sys
import time
import urllib.request
import uuid

import avro.io
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from client import ADMIN, Client, now_ms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "examples"))
import produce_command as pc  # noqa: E402

TOPIC = "promo.coupon.cmd"
DLQ = "promo.dlq"


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class Raw:
    """Avro binary written field by field, for records no schema would let
    us write: out-of-range enum and union indexes, raw string bytes."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.enc = avro.io.BinaryEncoder(self.buf)

    def string(self, text):  # a string (str) or raw bytes with a string's length prefix
        self.enc.write_bytes(text.encode() if isinstance(text, str) else text)
        return self

    def varint(self, n):  # int and long, and enum and union indexes: zigzag varints
        self.enc.write_long(n)
        return self

    def envelope(self, request_id, branch, submitted_at=None):
        t = now_ms() if submitted_at is None else submitted_at
        # request_id, submitted_at, callback_url null, client_id null, command branch
        return self.string(request_id).varint(t).varint(0).varint(0).varint(branch)

    def value(self):
        return self.buf.getvalue()


def issue(policy, user, request_id=None, **kw):
    """(key, framed value, request id) of an IssueCoupon."""
    _, key, value, rid = pc.encode("coupon", "IssueCoupon", {"policy_id": policy, "user_id": user},
                                   request_id=request_id, **kw)
    return key, value, rid


def policy_fields(policy, **over):
    t = now_ms()
    f = {"policy_id": policy, "name": "dlq " + policy, "discount_type": "FIXED", "discount_value": 500,
         "max_discount": None, "min_order_amount": 0, "total_quantity": 100, "per_user_limit": 1,
         "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000, "valid_until": None, "valid_days": 7}
    f.update(over)
    return f


def coupon_cmd(record, fields, **kw):
    return pc.encode("coupon", record, fields, **kw)[2]


def raw_issue(request_id, policy, user, branch=1):
    """A framed IssueCoupon written by hand: user may be any bytes, branch
    any union index."""
    return pc.frame(1, Raw().envelope(request_id, branch).string(policy).string(user).value())


def raw_policy(request_id, policy, discount_type=0, per_user_limit=1):
    """A framed CreateCouponPolicy written by hand: any enum index, any varint
    for the int field per_user_limit."""
    r = Raw().envelope(request_id, 0).string(policy).string("n")
    r.varint(discount_type).varint(500).varint(0)  # discount_type, discount_value, max_discount null
    r.varint(0).varint(100).varint(per_user_limit)  # min_order_amount, total_quantity, per_user_limit
    r.varint(0).varint(now_ms() + 60000)  # issue_starts_at, issue_ends_at
    r.varint(0).varint(1).varint(7)  # valid_until null, valid_days 7
    return pc.frame(1, r.value())


def malformed(policy):
    """[(label, key, value, expected error code)]. Each goes to the policy's
    partition, whatever its key."""
    k = policy.encode()
    _, good, _ = issue(policy, "u-template")
    body = good[5:]
    rid = unique("d051-bad")
    return [
        ("empty value", k, b"", "BAD_FRAMING"),
        ("null value (tombstone)", k, None, "BAD_FRAMING"),
        ("3-byte value", k, b"\x00\x00\x00", "BAD_FRAMING"),
        ("wrong magic byte", k, b"\x01" + good[1:], "BAD_FRAMING"),
        ("JSON instead of Avro", k, b'{"policy_id": "%s", "user_id": "json"}' % k, "BAD_FRAMING"),
        ("unknown schema id 99", k, pc.frame(99, body), "UNKNOWN_SCHEMA"),
        ("a Result's schema id (4)", k, pc.frame(4, body), "UNKNOWN_SCHEMA"),
        ("a DeadLetter's schema id (5)", k, pc.frame(5, body), "UNKNOWN_SCHEMA"),
        ("a point command (id 2) on the coupon topic", k,
         pc.encode("point", "EarnPoints", {"user_id": policy, "amount": 10, "reason": "x", "expires_at": None})[2],
         "UNKNOWN_SCHEMA"),
        ("header only", k, pc.frame(1, b""), "BAD_AVRO"),
        ("truncated Avro", k, good[:-3], "BAD_AVRO"),
        ("trailing bytes after the record", k, good + b"\x00\x02", "BAD_AVRO"),
        ("garbage after a valid header", k,
         pc.frame(1, bytes.fromhex("9f3ac1ee0142ff7781c0d3a5b4e9117e2d3c4b5a69788796a5b4c3d2e1f0")), "BAD_AVRO"),
        ("negative string length", k, pc.frame(1, Raw().varint(-5).value() + b"abcdefgh"), "BAD_AVRO"),
        ("string length of 2^40", k, pc.frame(1, Raw().varint(1 << 40).value() + b"abc"), "BAD_AVRO"),
        ("command union index 9", k, raw_issue(rid, policy, "u1", branch=9), "BAD_AVRO"),
        ("discount_type enum index 7", k, raw_policy(rid, policy, discount_type=7), "BAD_AVRO"),
        ("per_user_limit past 32 bits", k, raw_policy(rid, policy, per_user_limit=1 << 33), "BAD_AVRO"),
        ("policy_id of 65 characters", k, issue("p" * 65, "u1")[1], "INVALID_FIELD"),
        ("policy name of 201 characters", k, coupon_cmd("CreateCouponPolicy", policy_fields(policy, name="n" * 201)),
         "INVALID_FIELD"),
        ("request_id of 65 characters", k, issue(policy, "u1", request_id="r" * 65)[1], "INVALID_FIELD"),
        ("user_id with an embedded NUL", k, raw_issue(rid, policy, b"ab\x00cd"), "INVALID_FIELD"),
        ("user_id that is not UTF-8", k, raw_issue(rid, policy, b"ab\xff\xfecd"), "INVALID_FIELD"),
        ("user_id with bad characters", k, issue(policy, "bad user!")[1], "INVALID_FIELD"),
        ("empty request_id", k, raw_issue("", policy, "u1"), "INVALID_FIELD"),
        ("negative submitted_at", k, issue(policy, "u1", submitted_at=-1)[1], "INVALID_FIELD"),
        ("callback_url that is not http(s)", k, issue(policy, "u1", callback_url="ftp://example.invalid/x")[1],
         "INVALID_FIELD"),
        ("negative order_amount", k, coupon_cmd("RedeemCoupon", {"coupon_id": policy + ":1", "user_id": "u1",
                                                                 "order_id": "o1", "order_amount": -100}),
         "INVALID_FIELD"),
        ("percent discount of 150", k,
         coupon_cmd("CreateCouponPolicy", policy_fields(policy, discount_type="PERCENT", discount_value=150)),
         "INVALID_FIELD"),
        ("coupon id without a serial", k, coupon_cmd("CancelRedemption", {"coupon_id": policy, "order_id": "o1"}),
         "INVALID_FIELD"),
        ("issue_ends_at before issue_starts_at", k,
         coupon_cmd("CreateCouponPolicy", policy_fields(policy, issue_ends_at=1000, issue_starts_at=2000)),
         "INVALID_FIELD"),
        ("another policy's command under this key", k, issue(unique("d051-other"), "u1")[1], "KEY_MISMATCH"),
        ("a redeem keyed by its coupon id, not its policy", (policy + ":1").encode(),
         coupon_cmd("RedeemCoupon", {"coupon_id": policy + ":1", "user_id": "u1", "order_id": "o1",
                                     "order_amount": 1000}), "KEY_MISMATCH"),
        ("null key", None, issue(policy, "u1")[1], "KEY_MISMATCH"),
    ]


def metrics_port(fleet):
    """The coupon processor's metrics port, as fleet.sh recorded it."""
    name = "PROMO_METRICS_PORT_PROCESSOR_COUPON"
    try:
        with open(os.path.join(fleet.var, "fleet.env")) as f:
            m = re.search(r"export %s=(\d+)" % name, f.read())
            if m:
                return int(m.group(1))
    except OSError:
        pass
    return int(fleet.env[name])


def dead_letters_total(fleet):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port(fleet), timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^promo_dead_letters_total\{domain="coupon"\} (\d+)$', text, re.M)
    assert m, "promo_dead_letters_total missing from:\n" + text
    return int(m.group(1))


def read_dead_letters(fleet, partition, offsets, timeout=30.0):
    """{source offset: (message key, DeadLetter dict)} for the dead letters of
    promo.coupon.cmd[partition] at the given offsets, read from the start of
    every promo.dlq partition."""
    c = Consumer({"bootstrap.servers": fleet.bootstrap_servers, "group.id": unique("d051-reader"),
                  "enable.auto.commit": False, "enable.partition.eof": False})
    reader = avro.io.DatumReader(pc.schema("dead_letter"))
    found = {}
    try:
        md = c.list_topics(DLQ, timeout=10)
        c.assign([TopicPartition(DLQ, p, OFFSET_BEGINNING) for p in md.topics[DLQ].partitions])
        deadline = time.time() + timeout
        while not set(offsets) <= set(found) and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            v = m.value()
            assert v[:1] == b"\x00" and struct.unpack(">I", v[1:5])[0] == 5, "not a framed DeadLetter: %r" % v[:16]
            buf = io.BytesIO(v[5:])
            dl = reader.read(avro.io.BinaryDecoder(buf))
            assert buf.read() == b"", "trailing bytes after a DeadLetter"
            if dl["source_topic"] == TOPIC and dl["source_partition"] == partition and dl["source_offset"] in offsets:
                assert dl["source_offset"] not in found or found[dl["source_offset"]][1]["value"] == dl["value"]
                found[dl["source_offset"]] = (m.key(), dl)
    finally:
        c.close()
    return found


def test_dead_letters(fleet):
    c = Client(fleet.http_port)
    policy = unique("d051p")
    t0 = now_ms()
    doc = c.run("/v1/coupon-policies", {
        "policy_id": policy, "name": "dead letters", "discount_type": "FIXED", "discount_value": 500,
        "min_order_amount": 0, "total_quantity": 1000, "per_user_limit": 1,
        "issue_starts_at": t0 - 60000, "issue_ends_at": t0 + 3600000, "valid_days": 7}, key=ADMIN)
    assert doc["status"] == "SUCCEEDED", doc
    before = dead_letters_total(fleet)

    p = pc.producer(fleet.bootstrap_servers)
    # The first good command finds the policy's partition; every other
    # message goes there too: by its key, or explicitly when its key is not
    # the policy id (null, or wrong on purpose).
    key, value, first = issue(policy, "good-0")
    partition = pc.send(p, TOPIC, key.encode(), value).partition()
    goods = [first]
    delivered, errors = {}, []  # delivered: label or request id -> (partition, offset)

    def report(label):
        def cb(err, msg):
            if err is not None:
                errors.append((label, err))
            else:
                delivered[label] = (msg.partition(), msg.offset())
        return cb

    cases = malformed(policy)
    assert len({label for label, *_ in cases}) == len(cases)
    for i, (label, key, value, _) in enumerate(cases):
        p.produce(TOPIC, value=value, key=key, partition=-1 if key == policy.encode() else partition,
                  on_delivery=report(label))
        k, v, rid = issue(policy, "good-%d" % (i + 1))
        goods.append(rid)
        p.produce(TOPIC, value=v, key=k.encode(), on_delivery=report(rid))
        p.poll(0)
    assert p.flush(30) == 0, "messages still unacknowledged"
    assert not errors, errors
    assert {part for part, _ in delivered.values()} == {partition}, "not all on one partition: %r" % delivered

    # Every good command completes, the last one after every bad message.
    for n, rid in enumerate(goods):
        res = c.wait(rid, timeout=30)
        assert res["status"] == "SUCCEEDED", (rid, res)
        assert res["result"]["user_id"] == "good-%d" % n

    offsets = {delivered[label][1]: case for case in cases for label in case[:1]}
    found = read_dead_letters(fleet, partition, offsets)
    missing = sorted(offsets[o][0] for o in set(offsets) - set(found))
    assert not missing, "not in %s: %s" % (DLQ, missing)
    t1 = now_ms()
    problems = []
    for off, (label, key, value, code) in sorted(offsets.items()):
        msg_key, dl = found[off]
        print("%s[%d]@%d %-45s %-14s %s" % (TOPIC, partition, off, label, dl["error_code"], dl["reason"]))
        if dl["error_code"] != code:
            problems.append("%s: error_code %s, expected %s (reason: %s)" % (label, dl["error_code"], code,
                                                                             dl["reason"]))
        if dl["value"] != value:  # an empty value stays b"", a null one None
            problems.append("%s: value %r, expected the original %r" % (label, dl["value"], value))
        if dl["key"] != key or msg_key != key:
            problems.append("%s: key %r / message key %r, expected %r" % (label, dl["key"], msg_key, key))
        if not dl["reason"] or dl["consumer"] != "processor-coupon" or not t0 <= dl["failed_at"] <= t1 + 1000:
            problems.append("%s: reason %r, consumer %r, failed_at %r" % (label, dl["reason"], dl["consumer"],
                                                                          dl["failed_at"]))
    assert not problems, "\n".join(problems)
    # No good command was dead-lettered.
    good_offsets = {delivered[rid][1] for rid in goods[1:]}
    assert not good_offsets & set(read_dead_letters(fleet, partition, good_offsets, timeout=2))

    # Counted: exactly one per malformed message.
    deadline = time.time() + 10
    while dead_letters_total(fleet) < before + len(cases) and time.time() < deadline:
        time.sleep(0.2)
    assert dead_letters_total(fleet) - before == len(cases)
