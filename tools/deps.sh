#!/bin/sh
# deps.sh — installs the Debian packages that building, testing and running
# the local fleet need, and only those that are missing (apt-get update runs
# only when something must be installed).
set -eu
PKGS="gcc make pkg-config librdkafka-dev libavro-dev libcivetweb-dev libhiredis-dev
default-libmysqlclient-dev libjansson-dev libcurl4-openssl-dev libssl-dev libcmocka-dev
uthash-dev redis-server redis-tools mariadb-server mariadb-client kcat
python3-confluent-kafka python3-avro python3-pytest python3-pymysql chromium docker-compose lcov clang-14 libclang-rt-14-dev
openjdk-17-jdk-headless maven python3-venv"

# Swagger UI for ingest's /api/docs, from the npm registry into build/npm
# (never into git); without npm, /api/docs falls back to a plain page.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SWAGGER_UI=swagger-ui-dist@5.35.0
if command -v npm >/dev/null 2>&1 && [ ! -f "$ROOT/build/npm/node_modules/swagger-ui-dist/swagger-ui-bundle.js" ]; then
    echo "deps: installing $SWAGGER_UI into build/npm"
    mkdir -p "$ROOT/build/npm"
    npm install --prefix "$ROOT/build/npm" --no-audit --no-fund --no-save --silent "$SWAGGER_UI" ||
        echo "deps: npm install failed; /api/docs will show the plain page" >&2
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# The local Apache Kafka's jars from Maven Central into build/kafka (the
# image built from the Dockerfile needs none: production runs its own Kafka).
if [ -z "${PROMO_DEPS_NO_KAFKA:-}" ]; then
    bash "$ROOT/tools/kafka/kafka.sh" fetch
fi
