#!/usr/bin/env bash
# produce_with_kcat.sh — issue one coupon by publishing an IssueCoupon command
# to Kafka with kcat, no Avro library and no ingest involved.
#
#   produce_with_kcat.sh BOOTSTRAP POLICY_ID USER_ID [REQUEST_ID]
#
# Prints the request id; follow it with GET /v1/requests/<id>?wait_ms=2000.
#
# It shows the whole wire contract of docs/producers.md in a few lines: the
# value is Confluent-framed Avro (byte 0x00, schema id 1 as 4 bytes
# big-endian, then the CouponCommand envelope in Avro's binary encoding),
# written byte by byte with printf; the key is the policy id; the topic is
# promo.coupon.cmd. Avro's binary encoding of this record is simple enough to
# write by hand: a string is its length as a zigzag varint followed by its
# UTF-8 bytes, a long is a zigzag varint, a union is the branch index as a
# zigzag varint followed by the branch's value (nothing for null).
# examples/produce_command.py does the same for every command with
# python3-avro.
set -euo pipefail

if (($# < 3 || $# > 4)); then
    echo "usage: $0 BOOTSTRAP POLICY_ID USER_ID [REQUEST_ID]" >&2
    exit 2
fi
bootstrap=$1 policy_id=$2 user_id=$3
request_id=${4:-kcat-$(date +%s%N)-$RANDOM}

# The processor dead-letters ids outside this pattern; refuse them here, which
# also keeps every character a single byte for the length prefixes below.
for id in "$policy_id" "$user_id" "$request_id"; do
    if ! [[ $id =~ ^[A-Za-z0-9_.-]{1,64}$ ]]; then
        echo "$0: '$id' does not match [A-Za-z0-9_.-]{1,64}" >&2
        exit 2
    fi
done

# One byte, given as a number: %b expands the \xHH escape built for it.
byte() { printf '%b' "$(printf '\\x%02x' "$1")"; }

# A long or int (and an enum or union index): zigzag, (n << 1) ^ (n >> 63), then
# 7 bits at a time, low group first, the high bit set on all but the last.
varint() {
    local n=$(($1))
    local z=$(((n << 1) ^ (n >> 63)))
    while (((z & ~0x7f) != 0)); do
        byte $(((z & 0x7f) | 0x80))
        z=$(((z >> 7) & 0x01ffffffffffffff)) # bash shifts are signed: make it a logical shift
    done
    byte "$z"
}

# A string: its length in bytes as a varint, then the bytes (ids are ASCII here).
str() {
    varint ${#1}
    printf '%s' "$1"
}

submitted_at=$(($(date +%s%N) / 1000000)) # ms since the epoch: the processor's "now" for it

value=$(mktemp)
trap 'rm -f "$value"' EXIT
{
    byte 0                  # magic byte
    byte 0; byte 0; byte 0; byte 1  # schema id 1 (promo.v1.CouponCommand), 4 bytes big-endian
    str "$request_id"       # request_id: string
    varint "$submitted_at"  # submitted_at: long (timestamp-millis)
    varint 0                # callback_url: union branch 0 = null
    varint 0                # client_id: union branch 0 = null
    varint 1                # command: union branch 1 = IssueCoupon
    str "$policy_id"        # IssueCoupon.policy_id
    str "$user_id"          # IssueCoupon.user_id
} >"$value"

# A file argument is sent as one message, whatever bytes it holds (stdin would
# be split at newlines, and 0x0a is a likely byte in Avro). -k sets the key.
# partitioner=murmur2_random is the partitioner of ingest and of the Java
# client: kcat's default (librdkafka's consistent_random, a CRC32 hash) would
# put the policy on another partition than the one whose processor holds its
# state, which would then forward it there, a hop later. acks=all and
# idempotence: an acknowledged command is durable, and an
# internal retry does not write it twice. kcat exits non-zero when the
# message could not be delivered, here within 30 s.
kcat -P -b "$bootstrap" -t promo.coupon.cmd -k "$policy_id" \
    -X partitioner=murmur2_random -X acks=all -X enable.idempotence=true \
    -X message.timeout.ms=30000 "$value"

echo "$request_id"
