#!/usr/bin/python3
"""produce_command.py — publish one promo command straight to Kafka, without ingest.

An example of a "direct producer" (docs/producers.md): any Kafka client may put
commands on promo.<domain>.cmd if it follows the wire contract, and their
results show up in promo.results, in GET /v1/requests/{id} and in MySQL exactly
like those of HTTP requests. This one uses only Debian's python3-avro and
python3-confluent-kafka, and reads the schemas from the schemas/ folder next to
it, so it doubles as the reference for what a producer must do:

  * topic promo.coupon.cmd / promo.point.cmd / promo.timesale.cmd;
  * key = the entity key: policy_id, user_id or sale_id (for a coupon id
    "<policy_id>:<serial>", its policy part); the processor dead-letters a
    command whose key is anything else;
  * value = Confluent framing: byte 0x00, the fixed schema id (1 coupon,
    2 point, 3 time sale) as 4 bytes big-endian, then the Avro binary body;
  * partitioner murmur2_random, the Java client's and ingest's, so that a key
    lands on the partition whose processor holds that entity's state at once
    (librdkafka's own default, consistent_random, puts it elsewhere, from
    where the processor forwards it: it works, one hop later);
  * acks=all and idempotence, so an acknowledged command is durable and a
    retry inside the client does not duplicate it (a repeated request id is
    harmless anyway: the processor answers it with the first result).

Usage (prints the request id; exit status 0 once Kafka acknowledged it):

  produce_command.py --bootstrap HOST:PORT coupon issue --policy-id P --user-id U [--request-id R]
  produce_command.py --bootstrap HOST:PORT point earn --user-id U --amount 500 --reason signup
  produce_command.py --bootstrap HOST:PORT timesale order --sale-id S --user-id U --quantity 1

`produce_command.py --help` and `produce_command.py DOMAIN --help` list every
command and field. --dry-run prints topic, key and the framed value in hex
instead of sending. The module can also be imported: encode() and frame()
build a value without sending it.
"""

import argparse
import binascii
import io
import json
import os
import struct
import sys
import time
import uuid

import avro.errors
import avro.io
import avro.schema

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMAS_DIR = os.path.join(os.path.dirname(HERE), "schemas")

# Fixed, public schema ids (DESIGN.md §3): producers need no registry.
SCHEMA_IDS = {"coupon": 1, "point": 2, "timesale": 3, "result": 4, "dead_letter": 5}
TOPICS = {"coupon": "promo.coupon.cmd", "point": "promo.point.cmd", "timesale": "promo.timesale.cmd"}
SCHEMA_FILES = {"coupon": "coupon_command.avsc", "point": "point_command.avsc",
                "timesale": "timesale_command.avsc", "result": "result.avsc",
                "dead_letter": "dead_letter.avsc"}

DAY_MS = 86400 * 1000

# Per domain, CLI name -> (Avro record name, key field, fields). A field is
# (name, kind, required, default); kind "str", "long", "int" or "enum"; a
# default may be a function of now (ms) and the other values.
COMMANDS = {
    "coupon": {
        "create-policy": ("CreateCouponPolicy", "policy_id", [
            ("policy_id", "str", True, None),
            ("name", "str", True, None),
            ("discount_type", "enum", True, None),
            ("discount_value", "long", True, None),
            ("max_discount", "long", False, None),
            ("min_order_amount", "long", False, 0),
            ("total_quantity", "long", True, None),
            ("per_user_limit", "int", False, 1),
            ("issue_starts_at", "long", False, lambda now, v: now),
            ("issue_ends_at", "long", False, lambda now, v: now + 30 * DAY_MS),
            ("valid_until", "long", False, None),
            # One of valid_until / valid_days is required: 30 days unless told.
            ("valid_days", "int", False, lambda now, v: None if v.get("valid_until") is not None else 30),
        ]),
        "issue": ("IssueCoupon", "policy_id", [
            ("policy_id", "str", True, None),
            ("user_id", "str", True, None),
        ]),
        "redeem": ("RedeemCoupon", "coupon_id", [
            ("coupon_id", "str", True, None),
            ("user_id", "str", True, None),
            ("order_id", "str", True, None),
            ("order_amount", "long", True, None),
        ]),
        "cancel": ("CancelRedemption", "coupon_id", [
            ("coupon_id", "str", True, None),
            ("order_id", "str", True, None),
        ]),
    },
    "point": {
        "earn": ("EarnPoints", "user_id", [
            ("user_id", "str", True, None),
            ("amount", "long", True, None),
            ("reason", "str", True, None),
            ("expires_at", "long", False, None),
        ]),
        "use": ("UsePoints", "user_id", [
            ("user_id", "str", True, None),
            ("amount", "long", True, None),
            ("order_id", "str", True, None),
        ]),
        "cancel": ("CancelPointUse", "user_id", [
            ("user_id", "str", True, None),
            ("order_id", "str", True, None),
        ]),
    },
    "timesale": {
        "create": ("CreateTimeSale", "sale_id", [
            ("sale_id", "str", True, None),
            ("product_id", "str", True, None),
            ("name", "str", True, None),
            ("original_price", "long", True, None),
            ("sale_price", "long", True, None),
            ("stock", "long", True, None),
            ("per_user_limit", "int", False, 1),
            ("starts_at", "long", False, lambda now, v: now),
            ("ends_at", "long", False, lambda now, v: now + DAY_MS),
        ]),
        "order": ("PlaceOrder", "sale_id", [
            ("sale_id", "str", True, None),
            ("user_id", "str", True, None),
            ("quantity", "int", False, 1),
            ("order_id", "str", False, None),  # null: the request id names the order
        ]),
        "cancel": ("CancelOrder", "sale_id", [
            ("sale_id", "str", True, None),
            ("order_id", "str", True, None),
        ]),
    },
}

_schemas = {}


def _plain_longs(node):
    """Drops "logicalType" annotations. A timestamp-millis is a plain long on
    the wire, but python3-avro would only accept datetime objects for it;
    times here are integers (ms since the epoch) throughout."""
    if isinstance(node, dict):
        return {k: _plain_longs(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_plain_longs(v) for v in node]
    return node


def schema(name, schemas_dir=SCHEMAS_DIR):
    """The parsed schema "coupon", "point", "timesale", "result" or "dead_letter"."""
    if name not in _schemas:
        with open(os.path.join(schemas_dir, SCHEMA_FILES[name])) as f:
            _schemas[name] = avro.schema.parse(json.dumps(_plain_longs(json.load(f))))
    return _schemas[name]


def frame(schema_id, body):
    """Confluent wire format: magic byte 0, schema id (4 bytes, big-endian), Avro body."""
    return b"\x00" + struct.pack(">I", schema_id) + body


def entity_key(domain, record, fields):
    """The message key: the entity the command acts on."""
    key_field = next(c for c in COMMANDS[domain].values() if c[0] == record)[1]
    key = fields[key_field]
    if key_field == "coupon_id":
        key = key.rsplit(":", 1)[0]  # "<policy_id>:<serial>" lives with its policy
    return key


def encode_body(domain, record, fields, request_id, submitted_at, callback_url=None, client_id=None):
    """The Avro binary body of one command envelope (no framing).

    The command field is a union of records. python3-avro picks a union branch
    by trying the value against every branch, which is ambiguous for records
    with overlapping fields, so the branch index is written here explicitly
    and the chosen record is then encoded with its own schema."""
    env = schema(domain)
    out = io.BytesIO()
    enc = avro.io.BinaryEncoder(out)
    w = avro.io.DatumWriter()
    values = {"request_id": request_id, "submitted_at": submitted_at,
              "callback_url": callback_url, "client_id": client_id}
    for field in env.fields:
        if field.name != "command":
            w.write_data(field.type, values[field.name], enc)
            continue
        branches = field.type.schemas
        idx = next((i for i, b in enumerate(branches) if b.name == record), None)
        if idx is None:
            raise ValueError("%s is not a %s command" % (record, domain))
        datum = {f.name: fields.get(f.name) for f in branches[idx].fields}
        avro.io.validate(branches[idx], datum, raise_on_error=True)
        enc.write_long(idx)
        w.write_data(branches[idx], datum, enc)
    return out.getvalue()


def encode(domain, record, fields, request_id=None, submitted_at=None, callback_url=None, client_id=None):
    """(topic, key, framed value, request id) of one command; fields are the
    command record's fields by Avro name."""
    request_id = request_id or new_request_id()
    submitted_at = now_ms() if submitted_at is None else submitted_at
    body = encode_body(domain, record, fields, request_id, submitted_at, callback_url, client_id)
    return TOPICS[domain], entity_key(domain, record, fields), frame(SCHEMA_IDS[domain], body), request_id


def now_ms():
    return int(time.time() * 1000)


def new_request_id():
    # Request ids match [A-Za-z0-9_.-]{1,64}; a UUID's hex fits.
    return "kafka-" + uuid.uuid4().hex


def producer(bootstrap, **extra):
    """A confluent_kafka Producer set up as every direct producer should be."""
    from confluent_kafka import Producer  # imported late: --dry-run needs no Kafka client
    conf = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        # ingest's partitioner, and the Java client's default for keyed
        # messages: the owning partition at once, no forward
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        # fail within half a minute rather than librdkafka's default five
        "message.timeout.ms": 30000,
        # 5 is safe with Apache Kafka; the dev broker does not check idempotent
        # sequences and needs 1 (the local fleet sets it: docs/configuration.md)
        "max.in.flight.requests.per.connection": int(os.environ.get("PROMO_KAFKA_MAX_IN_FLIGHT") or 5),
    }
    conf.update(extra)
    return Producer(conf)


def send(p, topic, key, value, timeout=40.0, partition=None):
    """Produces one message and waits for its acknowledgement. Returns the
    delivered message (topic, partition, offset); raises on failure."""
    box = {}

    def on_delivery(err, msg):
        box["err"], box["msg"] = err, msg

    kw = {} if partition is None else {"partition": partition}
    p.produce(topic, value=value, key=key, on_delivery=on_delivery, **kw)
    deadline = time.monotonic() + timeout
    while "err" not in box and time.monotonic() < deadline:
        p.poll(0.1)
    p.flush(max(0.0, deadline - time.monotonic()))
    if "err" not in box:
        raise RuntimeError("no acknowledgement from Kafka after %.0f s" % timeout)
    if box["err"] is not None:
        raise RuntimeError("delivery failed: %s" % box["err"])
    return box["msg"]


def default_bootstrap():
    """$PROMO_KAFKA_BOOTSTRAP, or the broker list the local fleet wrote."""
    if os.environ.get("PROMO_KAFKA_BOOTSTRAP"):
        return os.environ["PROMO_KAFKA_BOOTSTRAP"]
    path = os.environ.get("PROMO_KAFKA_BOOTSTRAP_FILE") or os.path.join(os.path.dirname(HERE), "var",
                                                                       "kafka.bootstrap")
    try:
        with open(path) as f:
            return f.readline().strip() or None
    except OSError:
        return None


def _parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Publish one promo command to Kafka directly (Confluent-framed Avro).")
    ap.add_argument("--bootstrap", default=default_bootstrap(),
                    help="Kafka bootstrap servers, HOST:PORT[,...] (default $PROMO_KAFKA_BOOTSTRAP, "
                    "else the local fleet's var/kafka.bootstrap)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print topic, key and the framed value in hex; send nothing")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="also print topic, partition and offset to stderr")
    doms = ap.add_subparsers(dest="domain", metavar="DOMAIN", required=True)
    for domain, cmds in COMMANDS.items():
        dp = doms.add_parser(domain, help="%s commands (%s)" % (domain, TOPICS[domain]))
        sub = dp.add_subparsers(dest="command", metavar="COMMAND", required=True)
        for name, (record, key_field, fields) in cmds.items():
            cp = sub.add_parser(name, help="%s (key: %s)" % (record, key_field))
            for fname, kind, required, default in fields:
                opt = "--" + fname.replace("_", "-")
                if kind == "enum":
                    cp.add_argument(opt, dest=fname, required=required, choices=["FIXED", "PERCENT"])
                elif kind == "str":
                    cp.add_argument(opt, dest=fname, required=required)
                else:
                    cp.add_argument(opt, dest=fname, required=required, type=int,
                                    help="milliseconds since the epoch" if fname.endswith("_at")
                                    or fname == "valid_until" else None)
            cp.add_argument("--request-id", help="default: a new unique id")
            cp.add_argument("--submitted-at", type=int, help="ms since the epoch (default: now); "
                            "the processor's clock for this command")
            cp.add_argument("--callback-url", help="webhook for the result")
            cp.add_argument("--client-id")
    args = ap.parse_args(argv)
    if not args.dry_run and not args.bootstrap:
        ap.error("--bootstrap is required (no $PROMO_KAFKA_BOOTSTRAP, no var/kafka.bootstrap)")
    return args


def main(argv=None):
    args = _parse_args(argv)
    record, _, fields = COMMANDS[args.domain][args.command]
    now = now_ms() if args.submitted_at is None else args.submitted_at
    values = {}
    for fname, kind, required, default in fields:
        v = getattr(args, fname)
        if v is None and default is not None:
            v = default(now, values) if callable(default) else default
        values[fname] = v
    try:
        topic, key, value, rid = encode(args.domain, record, values, args.request_id, now,
                                        args.callback_url, args.client_id)
    except (ValueError, avro.errors.AvroException) as e:
        print("produce_command: cannot encode: %s" % e, file=sys.stderr)
        return 2
    if args.dry_run:
        print("topic %s\nkey %s\nvalue %s" % (topic, key, binascii.hexlify(value).decode()))
        print(rid)
        return 0
    p = producer(args.bootstrap)
    try:
        msg = send(p, topic, key.encode(), value)
    except Exception as e:  # KafkaException, BufferError, RuntimeError: all mean "not sent"
        print("produce_command: %s" % e, file=sys.stderr)
        return 1
    if args.verbose:
        print("%s [%d] @%d key %s" % (msg.topic(), msg.partition(), msg.offset(), key), file=sys.stderr)
    print(rid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
