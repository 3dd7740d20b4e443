"""codec_interop.py - shows that any Avro client speaks the fleet's wire format.

The C codec (common/codec.c) is one implementation of the contract; this is
another, with the stock Apache Avro library for Python and nothing but the
schemas/ files: byte 0x00, the 4-byte big-endian schema id, then plain Avro
binary. Run with Debian's interpreter:

    /usr/bin/python3 tests/unit/codec_interop.py
        prints one IssueCoupon command, framed, as hex (decode it with the C codec)
    /usr/bin/python3 tests/unit/codec_interop.py <hex of a framed Result>
        prints the Result as JSON (encode it with the C codec)
"""
import datetime
import io
import json
import os
import struct
import sys

import avro.io
import avro.schema

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schemas")
COUPON_COMMAND_ID = 1
RESULT_ID = 4
# The library maps timestamp-millis to datetime; the wire carries epoch ms.
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def from_ms(ms):
    return EPOCH + datetime.timedelta(milliseconds=ms)


def to_ms(value):
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    raise TypeError(type(value).__name__)


def load(name):
    with open(os.path.join(SCHEMAS, name + ".avsc")) as f:
        return avro.schema.parse(f.read())


def encode(schema, schema_id, datum):
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(out))
    return out.getvalue()


def decode(schema, schema_id, data):
    magic, got = struct.unpack(">bI", data[:5])
    if magic != 0 or got != schema_id:
        raise ValueError("not a framed value of schema id %d" % schema_id)
    body = io.BytesIO(data[5:])
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(body))
    if body.tell() != len(data) - 5:
        raise ValueError("trailing bytes")
    return datum


def main(argv):
    if len(argv) == 1:
        command = {
            "request_id": "py-req-1",
            "submitted_at": from_ms(1700000000000),
            "callback_url": None,
            "client_id": "python",
            # This library writes the first union branch the datum fits, so a
            # command dict carries exactly its record's fields.
            "command": {"policy_id": "pol-42", "user_id": "user-1"},
        }
        print(encode(load("coupon_command"), COUPON_COMMAND_ID, command).hex())
        return 0
    result = decode(load("result"), RESULT_ID, bytes.fromhex(argv[1]))
    print(json.dumps(result, sort_keys=True, default=to_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
