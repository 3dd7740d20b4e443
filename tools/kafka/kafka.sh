#!/usr/bin/env bash
# kafka.sh — the local Apache Kafka: fetches the broker's jars and runs one
# KRaft node (combined broker and controller) on loopback.
#
#   kafka.sh fetch              make sure the jars are in $KAFKA_HOME/libs (Maven
#                               Central, through tools/kafka/pom.xml; a JDK and
#                               Maven from Debian's packages if missing)
#   kafka.sh node ID DIR        format DIR (unless it is already) and exec the
#                               broker as node ID of the local cluster
#   kafka.sh home               print $KAFKA_HOME
#
# `node` replaces itself with the JVM, so the pid tools/fleet.sh records is
# the broker's own. The cluster is PROMO_KAFKA_BROKERS nodes (1 by default, 3
# for the full fault suite); node i listens on PROMO_KAFKA_PORT + i - 1 and
# its controller on PROMO_KAFKA_CONTROLLER_PORT + i - 1, all on 127.0.0.1.
# Every node of a cluster shares the cluster id kept next to the node
# directories (DIR/../cluster.id). Topics are not created here: tools/fleet.sh
# runs `promoctl topics` once the brokers listen.
#
# Local settings differ from production's (docker-compose.yml) only where a
# single machine needs it: internal topics with one partition and as many
# replicas as there are brokers (Kafka's default of 50 partitions would
# cost seconds at every start), no initial rebalance delay (the tests start
# three consumer groups at once), retention checked every 5 s instead of 5
# min (a test shrinks a topic's retention and waits for it), a small heap (PROMO_KAFKA_HEAP, 512m) and
# few threads for a 2-core machine.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
KAFKA_HOME=${KAFKA_HOME:-$ROOT/build/kafka/$VERSION}

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

java_bin() {
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || true
    fi
}

apt_install() {
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

cmd_fetch() {
    [[ -n $(java_bin) ]] || apt_install openjdk-17-jre-headless
    [[ -f $KAFKA_HOME/libs/kafka_2.13-$VERSION.jar ]] && return 0
    command -v mvn >/dev/null || apt_install maven
    mkdir -p "$KAFKA_HOME"
    # One fetch at a time: two test runs may start on a fresh machine together.
    exec 9>"$KAFKA_HOME/.lock"
    flock 9
    [[ -f $KAFKA_HOME/libs/kafka_2.13-$VERSION.jar ]] && return 0
    echo "kafka.sh: fetching Apache Kafka $VERSION from Maven Central into $KAFKA_HOME" >&2
    rm -rf "$KAFKA_HOME/libs.tmp"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$KAFKA_HOME/libs.tmp" >&2 || die "maven could not fetch the broker's jars"
    mv "$KAFKA_HOME/libs.tmp" "$KAFKA_HOME/libs"
}

cmd_node() {
    local id=$1 dir=$2
    [[ $id =~ ^[1-9][0-9]*$ ]] || die "node id must be a positive number"
    local n=${PROMO_KAFKA_BROKERS:-1} port=${PROMO_KAFKA_PORT:-9092} cport=${PROMO_KAFKA_CONTROLLER_PORT:-9192}
    ((id <= n)) || die "node $id of a $n-node cluster"
    local java
    java=$(java_bin)
    [[ -n $java && -f $KAFKA_HOME/libs/kafka_2.13-$VERSION.jar ]] || die "run 'kafka.sh fetch' first"
    mkdir -p "$dir/data"
    dir=$(cd "$dir" && pwd)
    local voters="" i
    for ((i = 1; i <= n; i++)); do voters+="${voters:+,}$i@127.0.0.1:$((cport + i - 1))"; done
    local rf=$((n < 3 ? n : 3)) isr=$((n < 3 ? 1 : 2))
    cat >"$dir/server.properties" <<PROPS
# Written by tools/kafka/kafka.sh at each start; edits are lost.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$((port + id - 1)),CONTROLLER://127.0.0.1:$((cport + id - 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$((port + id - 1))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
offsets.topic.num.partitions=1
offsets.topic.replication.factor=$rf
transaction.state.log.num.partitions=1
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
replica.lag.time.max.ms=10000
log.retention.check.interval.ms=5000
unclean.leader.election.enable=false
PROPS
    local cid_file=$dir/../cluster.id cid
    if [[ ! -s $cid_file ]]; then
        # A Kafka cluster id is 16 random bytes in unpadded base64url; one
        # that starts with '-' would read as an option to the storage tool.
        cid=-
        while [[ $cid == -* ]]; do cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22); done
        echo "$cid" >"$cid_file.tmp.$id"
        mv -n "$cid_file.tmp.$id" "$cid_file" 2>/dev/null || true
        rm -f "$cid_file.tmp.$id"
    fi
    cid=$(<"$cid_file")
    local cp="$KAFKA_HOME/libs/*" log4j="-Dlog4j.configuration=file:$HERE/log4j.properties"
    # A node formatted before keeps its meta.properties: the format would be
    # a no-op then, and its JVM costs seconds on every restart of a node.
    if [[ ! -s $dir/data/meta.properties ]]; then
        "$java" -cp "$cp" "$log4j" kafka.tools.StorageTool format -t "$cid" -c "$dir/server.properties" \
            --ignore-formatted >/dev/null || die "cannot format $dir"
    fi
    local heap=${PROMO_KAFKA_HEAP:-512m}
    exec "$java" -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -Djava.awt.headless=true "$log4j" \
        -cp "$cp" kafka.Kafka "$dir/server.properties"
}

case ${1:-} in
fetch) cmd_fetch ;;
node)
    [[ $# == 3 ]] || die "usage: kafka.sh node ID DIR"
    cmd_node "$2" "$3"
    ;;
home) echo "$KAFKA_HOME" ;;
*) die "usage: kafka.sh fetch | node ID DIR | home" ;;
esac
