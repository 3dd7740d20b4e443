#!/bin/sh
# pyenv.sh — a Python environment with the current confluent-kafka and avro
# from PyPI, for running examples/produce_command.py on them instead of
# Debian's python3-confluent-kafka and python3-avro (tests/e2e/test_053).
#
#   tools/pyenv.sh [DIR]      (default build/pyenv; `make pyenv` runs it)
#
# A venv made from /usr/bin/python3, without Debian's site packages, so the
# example imports only what is installed here. Run it with
#   build/pyenv/bin/python examples/produce_command.py ...
# The versions are pinned; DIR/.installed records them, and the venv is made
# anew when they change.
set -eu
CONFLUENT_KAFKA=2.16.2
AVRO=1.12.2

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$ROOT/build/pyenv}
WANT="confluent-kafka==$CONFLUENT_KAFKA avro==$AVRO"

if [ -x "$DIR/bin/python" ] && [ "$(cat "$DIR/.installed" 2>/dev/null)" = "$WANT" ]; then
    exit 0
fi
echo "pyenv: installing $WANT into $DIR"
rm -rf "$DIR"
/usr/bin/python3 -m venv "$DIR"
"$DIR/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir $WANT
"$DIR/bin/python" -c 'import confluent_kafka, avro.io; print("pyenv: confluent-kafka %s (librdkafka %s)" % (confluent_kafka.__version__, confluent_kafka.libversion()[0]))'
echo "$WANT" > "$DIR/.installed"
