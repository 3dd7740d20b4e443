"""080 — the operator CLI, promoctl, against the running fleet.

Every subcommand runs at least once: submit (valid, invalid, wrong domain),
follow (final and unknown), checkpoint (one partition and all), lag, dlq list
and dlq replay. Two dead-letter stories:

- A producer publishes bytes that are not a command. The processor dead-
  letters them (BAD_FRAMING); `dlq list` shows them with their key; `dlq
  replay` republishes the same bytes under the same key, and they are dead-
  lettered again, byte for byte: a replay never bypasses validation, so the
  fix for such a message is the producer's, not a replay.
- A valid IssueCoupon in a dead letter that an older processor release wrote
  (here: published to promo.dlq by the test, as such a processor would have).
  Replaying it after the upgrade issues the coupon; replaying it a second time
  changes nothing, because the request id is deduplicated.

The CLI is the one under PROMO_BIN_DIR (build/bin by default), so `make
coverage` measures it too.
"""

import io
import json
import os
import re
import struct
import subprocess
import time
import uuid
from datetime import datetime, timezone

import avro.io
import avro.schema
from confluent_kafka import Producer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("PROMO_BIN_DIR") or os.path.join(ROOT, "build", "bin")
PROMOCTL = os.path.join(BIN, "promoctl")
if not os.path.exists(PROMOCTL):  # a bin dir without the CLI (sanitizer builds)
    PROMOCTL = os.path.join(ROOT, "build", "bin", "promoctl")
ACKED = re.compile(r"acknowledged at (\S+)\[(\d+)\]@(\d+)")


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def ctl(fleet, *args, timeout=60):
    """Runs promoctl with the fleet's settings; returns (exit status, stdout, stderr)."""
    p = subprocess.run([PROMOCTL] + [str(a) for a in args], env=fleet.env, cwd=ROOT,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def ctl_ok(fleet, *args, **kw):
    rc, out, err = ctl(fleet, *args, **kw)
    assert rc == 0, (args, rc, out, err)
    return out, err


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def eventually(check, timeout=30, what="condition"):
    """Calls check() until it returns something true; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.2)


def create_policy(fleet, policy_id, quantity=10):
    t = int(time.time() * 1000)
    body = {"type": "CreateCouponPolicy", "policy_id": policy_id, "name": "cli " + policy_id,
            "discount_type": "FIXED", "discount_value": 1000, "total_quantity": quantity,
            "issue_starts_at": t - 60000, "issue_ends_at": t + 3600000, "valid_days": 7}
    out, _ = ctl_ok(fleet, "submit", "--follow", "coupon", json.dumps(body))
    rid, doc = out.splitlines()[0], json.loads(out.splitlines()[1])
    assert doc["request_id"] == rid and doc["status"] == "SUCCEEDED", doc


def test_submit_follow_checkpoint_lag(fleet):
    policy = unique("ctl")
    create_policy(fleet, policy)

    rid = unique("ctl-issue")
    out, err = ctl_ok(fleet, "submit", "coupon", json.dumps(
        {"type": "IssueCoupon", "policy_id": policy, "user_id": "alice", "request_id": rid}))
    assert out.strip() == rid
    topic, part, offset = ACKED.search(err).groups()
    assert topic == "promo.coupon.cmd"
    part, offset = int(part), int(offset)

    out, _ = ctl_ok(fleet, "follow", rid)
    doc = json.loads(out)
    assert doc["status"] == "SUCCEEDED", doc
    assert doc["result"]["coupon_id"] == policy + ":1"
    # The same outcome as over HTTP: the CLI's command went the same way.
    assert fleet.wait_request(rid) == doc

    # The partition's checkpoint passes the command within a few checkpoint periods.
    def checkpointed():
        row = json_lines(ctl_ok(fleet, "checkpoint", "--json", "coupon", part)[0])[0]
        return row if row["found"] and row["offset"] >= offset + 1 else None
    row = eventually(checkpointed, what="checkpoint of coupon partition %d" % part)
    assert row["partition"] == part and row["epoch"] >= 1 and row["seq"] >= 1
    assert row["entries"] >= 2  # the policy, the coupon, the request ids
    assert 0 <= row["age_ms"] < 600000
    table, _ = ctl_ok(fleet, "checkpoint", "coupon")
    m = re.search(r"^coupon\s+%d\s+(\d+)\s" % part, table, re.M)
    assert m and int(m.group(1)) >= row["offset"], table

    # Lag: the processor group and the sink catch up on that partition.
    def caught_up():
        rows = json_lines(ctl_ok(fleet, "lag", "--json", "coupon")[0])
        mine = [r for r in rows if r["group"] == "promo-coupon" and r["partition"] == part]
        sink = [r for r in rows if r["group"] == "promo-sink-mysql"]
        if mine and sink and mine[0]["committed"] is not None and mine[0]["lag"] == 0:
            return rows
        return None
    rows = eventually(caught_up, what="promo-coupon lag 0 on partition %d" % part)
    assert {r["topic"] for r in rows} == {"promo.coupon.cmd", "promo.results"}
    table, _ = ctl_ok(fleet, "lag")
    for group in ("promo-coupon", "promo-point", "promo-timesale", "promo-sink-mysql"):
        assert re.search(r"^%s\s.*\btotal\b" % group, table, re.M), table


def test_submit_refuses_what_http_refuses(fleet):
    rc, out, err = ctl(fleet, "submit", "coupon", json.dumps(
        {"type": "IssueCoupon", "policy_id": "p1", "user_id": "not valid"}))
    assert rc == 1 and out == "" and "user_id" in err, (rc, out, err)
    rc, out, err = ctl(fleet, "submit", "point", json.dumps(
        {"type": "IssueCoupon", "policy_id": "p1", "user_id": "u1"}))
    assert rc == 1 and "COUPON domain" in err, err
    rc, out, err = ctl(fleet, "submit", "coupon", json.dumps({"type": "Nope"}))
    assert rc == 1 and "type" in err, err
    rc, out, err = ctl(fleet, "submit", "coupon", "{not json")
    assert rc == 1, err
    rc, _, _ = ctl(fleet, "frobnicate")
    assert rc == 2


def test_follow_unknown_request_times_out(fleet):
    rc, out, err = ctl(fleet, "follow", "--timeout-ms", "300", unique("never"))
    assert rc == 3 and out == "" and "not found" in err, (rc, out, err)


def dead_letters(fleet, **match):
    rows = json_lines(ctl_ok(fleet, "dlq", "list", "--from-beginning", "--limit", "100000", "--json")[0])
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def test_dlq_malformed_message_is_dead_lettered_again_on_replay(fleet):
    key = unique("junk")
    value = b"not an avro command " + key.encode()
    p = Producer({"bootstrap.servers": fleet.bootstrap_servers, "acks": "all"})
    p.produce("promo.coupon.cmd", value=value, key=key.encode())
    assert p.flush(30) == 0

    first = eventually(lambda: dead_letters(fleet, key=key), what="dead letter for key " + key)
    assert len(first) == 1, first
    dl = first[0]
    assert dl["source_topic"] == "promo.coupon.cmd" and dl["error_code"] == "BAD_FRAMING", dl
    assert dl["value"] == value.decode() and dl["consumer"] == "processor-coupon", dl
    text, _ = ctl_ok(fleet, "dlq", "list")  # the default view: the latest ones, readable
    assert key in text and "BAD_FRAMING" in text, text

    coord = "promo.coupon.cmd:%d:%d" % (dl["source_partition"], dl["source_offset"])
    out, _ = ctl_ok(fleet, "dlq", "replay", "--dry-run", coord)
    assert out.startswith("would replay " + coord), out
    out, _ = ctl_ok(fleet, "dlq", "replay", coord)
    m = re.match(r"replayed %s -> promo\.coupon\.cmd:(\d+):(\d+)$" % re.escape(coord), out.strip())
    assert m, out
    again = eventually(lambda: dead_letters(fleet, key=key, source_offset=int(m.group(2)),
                                            source_partition=int(m.group(1))),
                       what="the replayed message dead-lettered again")
    assert again[0]["value"] == dl["value"] and again[0]["error_code"] == "BAD_FRAMING", again

    rc, _, err = ctl(fleet, "dlq", "replay", "promo.coupon.cmd:0:999999999999")
    assert rc == 1 and "no dead letter" in err, err


def schema(name):
    with open(os.path.join(ROOT, "schemas", name + ".avsc")) as f:
        return avro.schema.parse(f.read())


def framed(name, schema_id, datum):
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    avro.io.DatumWriter(schema(name)).write(datum, avro.io.BinaryEncoder(out))
    return out.getvalue()


def test_dlq_replay_after_upgrade_applies_once(fleet):
    policy = unique("ctl-dl")
    create_policy(fleet, policy)
    rid = unique("ctl-dl-issue")
    now = datetime.now(timezone.utc)  # the library writes timestamp-millis from datetimes
    command = framed("coupon_command", 1, {
        "request_id": rid, "submitted_at": now, "callback_url": None, "client_id": "old-release",
        "command": {"policy_id": policy, "user_id": "bob"}})
    source_offset = 10**12 + uuid.uuid4().int % 10**9  # far from any real offset of this run
    letter = framed("dead_letter", 5, {
        "source_topic": "promo.coupon.cmd", "source_partition": 0, "source_offset": source_offset,
        "key": policy.encode(), "value": command, "error_code": "UNKNOWN_SCHEMA",
        "reason": "written by a processor release that predates this command",
        "failed_at": now, "consumer": "processor-coupon"})
    p = Producer({"bootstrap.servers": fleet.bootstrap_servers, "acks": "all"})
    p.produce("promo.dlq", value=letter, key=policy.encode())
    assert p.flush(30) == 0
    eventually(lambda: dead_letters(fleet, source_offset=source_offset), what="the planted dead letter")

    # By source offset alone: unique here.
    out, _ = ctl_ok(fleet, "dlq", "replay", source_offset)
    assert out.startswith("replayed promo.coupon.cmd:0:%d -> promo.coupon.cmd:" % source_offset), out
    out, _ = ctl_ok(fleet, "follow", rid)
    doc = json.loads(out)
    assert doc["status"] == "SUCCEEDED" and doc["result"]["coupon_id"] == policy + ":1", doc

    # A second replay is a repeat of the same request: the first result
    # again, no second coupon. Once the partition's checkpoint has passed the
    # repeat, the processor has applied it.
    out, _ = ctl_ok(fleet, "dlq", "replay", "promo.coupon.cmd:0:%d" % source_offset)
    part, offset = map(int, re.search(r"-> promo\.coupon\.cmd:(\d+):(\d+)$", out.strip()).groups())
    eventually(lambda: json_lines(ctl_ok(fleet, "checkpoint", "--json", "coupon", part)[0])[0]["offset"] > offset,
               what="checkpoint past the repeat")
    assert json.loads(ctl_ok(fleet, "follow", rid)[0]) == doc

    def issued():
        r = fleet.get("/v1/coupon-policies/" + policy)
        return r.json() if r.status == 200 and r.json().get("issued") else None
    pol = eventually(issued, what="policy with an issued coupon")
    assert pol["issued"] == 1 and pol["remaining"] == 9, pol
