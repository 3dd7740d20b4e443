#!/usr/bin/env bash
# fleet.sh — starts and stops the local fleet: Redis, MariaDB, Apache Kafka
# and the promo programs, all on loopback, all data under $PROMO_VAR.
#
#   fleet.sh start              start what is not running, return once ingest is ready
#   fleet.sh stop               stop everything (TERM, then KILL after a grace period)
#   fleet.sh run                start in the foreground; Ctrl-C (INT/TERM) stops everything
#   fleet.sh status             one line per component
#   fleet.sh start-one NAME     start one component and wait until it is up
#   fleet.sh stop-one NAME [SIGNAL]
#   fleet.sh kafka-nodes        the broker components (kafka-1 ... kafka-N)
#                               TERM/INT/HUP/QUIT: stop gracefully, KILL after the grace
#                               period; KILL: kill and wait until gone; any other signal
#                               (STOP, CONT, USR1...) is only delivered
#
# Components, in start order: redis mysql kafka sink-mysql webhook processor-coupon
# processor-point processor-timesale ingest. `kafka` is the whole cluster:
# PROMO_KAFKA_BROKERS Apache Kafka nodes (tools/kafka/kafka.sh, 1 by default),
# each also a component of its own, kafka-1 ... kafka-N, for the tests that
# stop or kill one broker. PROMO_DEV_BROKER=mock runs librdkafka's mock
# cluster (tools/devkafka.c) instead, for the few tests that need a broker
# error Apache Kafka cannot be made to return. Logs go to $PROMO_VAR/log/NAME.log,
# pids to $PROMO_VAR/run/NAME.pid. Every setting is a PROMO_* variable, exported
# to the programs; the effective values are kept in $PROMO_VAR/fleet.env so
# that start-one and stop-one, run later from another shell, use the same
# ports. Ports left at their defaults move to the next free one when taken (a
# Debian machine runs its own redis-server and mariadb on 6379 and 3306 after
# installing them); ports set explicitly must be free. With PROMO_KAFKA_BOOTSTRAP
# set, the fleet uses that Kafka and starts no broker. PROMO_BIN_DIR picks
# the programs (default build/bin).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PROMO_BIN_DIR:-$ROOT/build/bin} # build/san/bin runs the sanitizer builds
PROMO_VAR=${PROMO_VAR:-$ROOT/var}
mkdir -p "$PROMO_VAR"
PROMO_VAR=$(cd "$PROMO_VAR" && pwd)
export PROMO_VAR
LOGDIR="$PROMO_VAR/log"
RUNDIR="$PROMO_VAR/run"
ENVFILE="$PROMO_VAR/fleet.env"

COMPONENTS=(redis mysql kafka sink-mysql webhook processor-coupon processor-point processor-timesale ingest)
PROGRAMS=(sink-mysql webhook processor-coupon processor-point processor-timesale)

log() { printf 'fleet: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

# ---- configuration -------------------------------------------------------

# Which port variables the caller chose: those must be used as given.
declare -A EXPLICIT=()
for v in PROMO_REDIS_PORT PROMO_MYSQL_PORT PROMO_HTTP_PORT PROMO_METRICS_PORT_BASE PROMO_KAFKA_PORT \
    PROMO_KAFKA_CONTROLLER_PORT \
    PROMO_METRICS_PORT_SINK_MYSQL PROMO_METRICS_PORT_WEBHOOK PROMO_METRICS_PORT_PROCESSOR_COUPON \
    PROMO_METRICS_PORT_PROCESSOR_POINT PROMO_METRICS_PORT_PROCESSOR_TIMESALE; do
    if [[ -n ${!v:-} ]]; then EXPLICIT[$v]=1; fi
done

# Values saved by the start that brought the fleet up win over defaults, but
# not over what the caller's environment sets.
if [[ -f $ENVFILE ]]; then
    # shellcheck disable=SC1090
    source "$ENVFILE"
fi

: "${PROMO_REDIS_HOST:=127.0.0.1}"
: "${PROMO_REDIS_PORT:=6379}"
: "${PROMO_MYSQL_HOST:=127.0.0.1}"
: "${PROMO_MYSQL_PORT:=3306}"
: "${PROMO_MYSQL_USER:=promo}"
: "${PROMO_MYSQL_PASSWORD:=promo}"
: "${PROMO_MYSQL_DB:=promo}"
: "${PROMO_HTTP_PORT:=4000}"
: "${PROMO_API_KEYS:=dev-admin-key:admin,dev-client-key:client}"
: "${PROMO_KAFKA_BOOTSTRAP_FILE:=$PROMO_VAR/kafka.bootstrap}"
: "${PROMO_DEV_BROKER:=apache}"
[[ $PROMO_DEV_BROKER == apache || $PROMO_DEV_BROKER == mock ]] || die "PROMO_DEV_BROKER must be apache or mock"
if [[ $PROMO_DEV_BROKER == mock ]]; then : "${PROMO_KAFKA_BROKERS:=3}"; else : "${PROMO_KAFKA_BROKERS:=1}"; fi
: "${PROMO_KAFKA_PARTITIONS:=12}"
: "${PROMO_KAFKA_PORT:=9092}"
: "${PROMO_KAFKA_CONTROLLER_PORT:=9192}"
: "${PROMO_KAFKA_CONTROL_PORT:=0}"
# The mock broker does not check idempotent producers' sequence numbers, so
# every producer keeps one request in flight there (see
# cfg_kafka_max_in_flight in common/util.c); Apache Kafka keeps the default.
if [[ -z ${PROMO_KAFKA_BOOTSTRAP:-} && $PROMO_DEV_BROKER == mock ]]; then : "${PROMO_KAFKA_MAX_IN_FLIGHT:=1}"; fi
# A killed processor keeps its partitions until its session times out. Short
# here, so a test that kills one sees its partitions move within seconds.
: "${PROMO_SESSION_TIMEOUT_MS:=3000}"
: "${PROMO_MIGRATIONS_DIR:=$ROOT/sinks/migrations}"
: "${PROMO_METRICS_PORT_BASE:=9101}"
: "${PROMO_START_TIMEOUT_S:=60}"
: "${PROMO_STOP_GRACE_S:=10}"
export PROMO_REDIS_HOST PROMO_REDIS_PORT PROMO_MYSQL_HOST PROMO_MYSQL_PORT PROMO_MYSQL_USER \
    PROMO_MYSQL_PASSWORD PROMO_MYSQL_DB PROMO_HTTP_PORT PROMO_API_KEYS PROMO_KAFKA_BOOTSTRAP_FILE \
    PROMO_KAFKA_BROKERS PROMO_KAFKA_PARTITIONS PROMO_KAFKA_CONTROL_PORT PROMO_SESSION_TIMEOUT_MS \
    PROMO_MIGRATIONS_DIR PROMO_DEV_BROKER PROMO_KAFKA_PORT PROMO_KAFKA_CONTROLLER_PORT
[[ -n ${PROMO_KAFKA_MAX_IN_FLIGHT:-} ]] && export PROMO_KAFKA_MAX_IN_FLIGHT

# PROMO_METRICS_PORT_<NAME> for each program, by default BASE, BASE+1, ...
# (BASE 0 turns metrics off everywhere).
metrics_var() {
    local n=${1^^}
    printf 'PROMO_METRICS_PORT_%s' "${n//-/_}"
}
i=0
for p in "${PROGRAMS[@]}"; do
    v=$(metrics_var "$p")
    if [[ -z ${!v:-} ]]; then
        if ((PROMO_METRICS_PORT_BASE > 0)); then
            printf -v "$v" '%d' $((PROMO_METRICS_PORT_BASE + i))
        else
            printf -v "$v" '0'
        fi
    fi
    export "${v?}"
    i=$((i + 1))
done

# ---- helpers ---------------------------------------------------------------

pidfile() { printf '%s/%s.pid' "$RUNDIR" "$1"; }
logfile() { printf '%s/%s.log' "$LOGDIR" "$1"; }

# What a component's command line must contain, so a stale pid file never
# makes us signal an unrelated process that reused the pid.
pattern() {
    case $1 in
    redis) echo redis-server ;;
    mysql) echo mariadbd ;;
    kafka) echo promo-devkafka ;;
    kafka-*) echo kafka.Kafka ;;
    *) echo "promo-${1%%-*}" ;;
    esac
}

# True when pid runs and is not a zombie: the programs outlive the fleet.sh
# that started them, and their new parent may be slow to reap them (or, as
# the init of a minimal container, never do it).
pid_alive() {
    local pid=$1 state
    [[ -r /proc/$pid/stat ]] || return 1
    state=$(sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]]
}

# True while the process in the component's pid file lives, whatever it runs:
# right after spawn it may still be the subshell about to exec the program.
spawned_alive() {
    local f
    f=$(pidfile "$1")
    [[ -f $f ]] && pid_alive "$(<"$f")"
}

# Prints the component's pid when it is running.
running_pid() {
    local f pid
    f=$(pidfile "$1")
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(pattern "$1")" || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# HTTP status of GET path on loopback, or 000; bash only, no curl needed.
http_status() {
    local port=$1 path=$2 line
    if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
        echo 000
        return
    fi 2>/dev/null
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    if IFS=' ' read -r -t 2 _ line _ <&3; then echo "${line:-000}"; else echo 000; fi
    # Read the rest: closing with unread data makes the server see a reset.
    while read -r -t 2 _ <&3; do :; done
    exec 3>&-
}

tail_log() {
    local f
    f=$(logfile "$1")
    if [[ -s $f ]]; then
        log "last lines of $f:"
        tail -n "${2:-30}" "$f" | sed 's/^/    /' >&2
    else
        log "$f is empty"
    fi
}

fail_start() {
    log "$1 failed to start: $2"
    tail_log "$1"
    exit 1
}

# Moves a defaulted port variable to the next free port; an explicit one must
# be free as it is.
pick_port() {
    local var=$1 what=$2 port=${!1}
    ((port > 0)) || return 0
    if port_open "$port"; then
        [[ -n ${EXPLICIT[$var]:-} ]] && die "port $port ($var, $what) is in use by another process"
        local p=$port
        while port_open "$p"; do p=$((p + 1)); done
        log "port $port for $what is taken (a system service?), using $p"
        printf -v "$var" '%d' "$p"
    fi
}

# pick_port for n consecutive ports from the variable's value on.
pick_ports() {
    local var=$1 what=$2 n=$3 port=${!1} i
    for ((i = 0; i < n; i++)); do
        if port_open $((port + i)); then
            [[ -n ${EXPLICIT[$var]:-} ]] && die "port $((port + i)) ($var + $i, $what) is in use by another process"
            port=$((port + i + 1))
            i=-1
        fi
    done
    if ((port != ${!1})); then
        log "ports from ${!1} for $what are taken, using $port-$((port + n - 1))"
        printf -v "$var" '%d' "$port"
    fi
}

save_env() {
    local v tmp="$ENVFILE.tmp"
    {
        echo "# Written by fleet.sh start: the settings the running fleet uses."
        for v in $(compgen -v PROMO_); do
            # shellcheck disable=SC2016 # the line is for the reader of fleet.env to expand
            printf '[[ -n ${%s:-} ]] || export %s=%q\n' "$v" "$v" "${!v}"
        done
    } >"$tmp"
    mv "$tmp" "$ENVFILE"
}

# Chooses ports before a fresh start. A fleet already partly running keeps the
# ports recorded in fleet.env.
choose_ports() {
    local c
    for c in "${COMPONENTS[@]}"; do
        component_pid "$c" >/dev/null && return 0
    done
    pick_port PROMO_REDIS_PORT redis
    pick_port PROMO_MYSQL_PORT mysql
    port_open "$PROMO_HTTP_PORT" && die "port $PROMO_HTTP_PORT (PROMO_HTTP_PORT, ingest) is in use by another process"
    local p
    for p in "${PROGRAMS[@]}"; do pick_port "$(metrics_var "$p")" "$p metrics"; done
    if [[ -z ${PROMO_KAFKA_BOOTSTRAP:-} && $PROMO_DEV_BROKER == apache ]]; then
        pick_ports PROMO_KAFKA_PORT "kafka brokers" "$PROMO_KAFKA_BROKERS"
        pick_ports PROMO_KAFKA_CONTROLLER_PORT "kafka controllers" "$PROMO_KAFKA_BROKERS"
    fi
    ((PROMO_KAFKA_CONTROL_PORT > 0)) && port_open "$PROMO_KAFKA_CONTROL_PORT" &&
        die "port $PROMO_KAFKA_CONTROL_PORT (PROMO_KAFKA_CONTROL_PORT) is in use"
    return 0
}

# Starts "$@" in its own session (so a Ctrl-C meant for fleet.sh run or for
# the terminal does not reach it), output appended to the component's log.
spawn() {
    local name=$1 pid
    shift
    local log
    log=$(logfile "$name")
    printf '\n==== %s fleet: starting %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
    (cd "$PROMO_VAR" && exec setsid "$@" >>"$log" 2>&1 </dev/null) &
    pid=$!
    echo "$pid" >"$(pidfile "$name")"
}

# Waits until "$2..." succeeds, failing early when the component dies. The
# check may leave a word on what it last saw in WAIT_DETAIL.
WAIT_DETAIL=""
wait_for() {
    local name=$1 what=$2
    shift 2
    local deadline=$((SECONDS + PROMO_START_TIMEOUT_S))
    while ! "$@"; do
        spawned_alive "$name" || fail_start "$name" "process exited while waiting for $what"
        ((SECONDS < deadline)) || fail_start "$name" "no $what after ${PROMO_START_TIMEOUT_S}s${WAIT_DETAIL:+ ($WAIT_DETAIL)}"
        sleep 0.1
    done
}

need_bin() {
    [[ -x $1 ]] || die "$1 is missing: build it first (make)"
}

# ---- components --------------------------------------------------------------

# The password the programs present (PROMO_REDIS_PASSWORD, or the file
# PROMO_REDIS_PASSWORD_FILE names), empty when Redis takes none.
redis_password() {
    if [[ -n ${PROMO_REDIS_PASSWORD:-} ]]; then
        printf '%s' "$PROMO_REDIS_PASSWORD"
    elif [[ -n ${PROMO_REDIS_PASSWORD_FILE:-} ]]; then
        tr -d '\r\n' <"$PROMO_REDIS_PASSWORD_FILE"
    fi
}

redis_ping() {
    [[ $(REDISCLI_AUTH=$(redis_password) redis-cli --no-auth-warning -h 127.0.0.1 -p "$PROMO_REDIS_PORT" ping \
        2>/dev/null) == PONG ]]
}

start_redis() {
    mkdir -p "$PROMO_VAR/redis"
    local auth=()
    # A password on the command line would show in ps: it goes in a config
    # file of the fleet's own instead.
    if [[ -n $(redis_password) ]]; then
        (umask 077 && printf 'requirepass "%s"\n' "$(redis_password)" >"$PROMO_VAR/redis/auth.conf")
        auth=("$PROMO_VAR/redis/auth.conf")
    fi
    spawn redis redis-server "${auth[@]}" --port "$PROMO_REDIS_PORT" --bind 127.0.0.1 --dir "$PROMO_VAR/redis" \
        --appendonly yes --appendfsync everysec --save "" --daemonize no --logfile ""
}
wait_redis() { wait_for redis "PING reply on port $PROMO_REDIS_PORT" redis_ping; }

MYSQL_SOCK() { printf '%s/mysql.sock' "$RUNDIR"; }
mysql_root() { mariadb --no-defaults -uroot --socket="$(MYSQL_SOCK)" "$@"; }
mysql_ping() { mariadb-admin --no-defaults -uroot --socket="$(MYSQL_SOCK)" --connect-timeout=2 ping >/dev/null 2>&1; }

# InnoDB sized for the sink's write stream, durability untouched. Every
# result adds some 800 bytes of redo (its requests row holds the status
# JSON): a 300,000-result benchmark writes about 250 MB, so the default 96 MB
# log wrapped more than twice per run and forced page flushes once its
# checkpoint age neared the log's size; 512 MB holds a run. The buffer pool
# holds the tables a run writes. Still innodb_flush_log_at_trx_commit=1 and
# the doublewrite buffer: a committed batch survives an OS crash, which the
# sink relies on (it commits Kafka offsets only after the MySQL commit), and
# with batched transactions the fsyncs cost little (a few per batch of
# 2,000). The same sizes go to mariadb-install-db, so the first start need
# not resize the log.
MYSQL_INNODB=(--innodb-buffer-pool-size=512M --innodb-log-file-size=512M)
# Its temporary files under $PROMO_VAR too: fleets started side by side (the
# tests, the benchmarks) must not meet in a shared /tmp.
MYSQL_TMP() { printf '%s/mysql-tmp' "$PROMO_VAR"; }

start_mysql() {
    local data="$PROMO_VAR/mysql"
    if [[ ! -d $data/mysql ]]; then
        log "mysql: creating a data directory in $data"
        mkdir -p "$data" "$(MYSQL_TMP)"
        mariadb-install-db --no-defaults --user=root --datadir="$data" --tmpdir="$(MYSQL_TMP)" \
            --auth-root-authentication-method=socket \
            --skip-test-db "${MYSQL_INNODB[@]}" >>"$(logfile mysql)" 2>&1 || fail_start mysql "mariadb-install-db failed"
    fi
    mkdir -p "$(MYSQL_TMP)"
    spawn mysql mariadbd --no-defaults --user=root --datadir="$data" --tmpdir="$(MYSQL_TMP)" --bind-address=127.0.0.1 \
        --port="$PROMO_MYSQL_PORT" --socket="$(MYSQL_SOCK)" --pid-file="$RUNDIR/mariadbd.pid" \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_bin "${MYSQL_INNODB[@]}"
}
wait_mysql() {
    wait_for mysql "answer to mariadb-admin ping" mysql_ping
    # The user exists for both ways in: TCP from 127.0.0.1 ('%') and the socket.
    local db=${PROMO_MYSQL_DB//\`/} user=${PROMO_MYSQL_USER//\'/} pw=${PROMO_MYSQL_PASSWORD//\'/\'\'}
    mysql_root -e "CREATE DATABASE IF NOT EXISTS \`$db\`;
        CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY '$pw';
        CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$pw';
        GRANT ALL ON \`$db\`.* TO '$user'@'%';
        GRANT ALL ON \`$db\`.* TO '$user'@'localhost';" >>"$(logfile mysql)" 2>&1 ||
        fail_start mysql "cannot create database $db and user $user"
}

# The broker components: kafka-1 ... kafka-N for Apache Kafka, the single
# process `kafka` for the mock cluster, nothing for an external cluster.
kafka_nodes() {
    [[ -n ${PROMO_KAFKA_BOOTSTRAP:-} ]] && return 0
    if [[ $PROMO_DEV_BROKER == mock ]]; then
        echo kafka
        return 0
    fi
    local i
    for ((i = 1; i <= PROMO_KAFKA_BROKERS; i++)); do echo "kafka-$i"; done
}

kafka_bootstrap_list() {
    local i list=""
    for ((i = 0; i < PROMO_KAFKA_BROKERS; i++)); do list+="${list:+,}127.0.0.1:$((PROMO_KAFKA_PORT + i))"; done
    echo "$list"
}

# Starts the nodes of the cluster that are not running (all of them for
# `kafka`, one for `kafka-N`).
start_kafka() {
    if [[ -n ${PROMO_KAFKA_BOOTSTRAP:-} ]]; then
        log "kafka: using PROMO_KAFKA_BOOTSTRAP=$PROMO_KAFKA_BOOTSTRAP, no local broker"
        return 0
    fi
    local want=${1:-kafka} node
    if [[ $PROMO_DEV_BROKER == mock ]]; then
        need_bin "$BIN/promo-devkafka"
        rm -f "$PROMO_KAFKA_BOOTSTRAP_FILE"
        spawn kafka "$BIN/promo-devkafka" --bootstrap-file "$PROMO_KAFKA_BOOTSTRAP_FILE" \
            --brokers "$PROMO_KAFKA_BROKERS" --partitions "$PROMO_KAFKA_PARTITIONS" \
            --control-port "$PROMO_KAFKA_CONTROL_PORT"
        return 0
    fi
    need_bin "$BIN/promoctl"
    bash "$ROOT/tools/kafka/kafka.sh" fetch || fail_start kafka "cannot fetch the Kafka broker (tools/kafka/kafka.sh fetch)"
    for node in $(kafka_nodes); do
        [[ $want == kafka || $want == "$node" ]] || continue
        running_pid "$node" >/dev/null && continue
        spawn "$node" bash "$ROOT/tools/kafka/kafka.sh" node "${node#kafka-}" "$PROMO_VAR/kafka/${node#kafka-}"
    done
}

kafka_node_listening() { port_open $((PROMO_KAFKA_PORT + ${1#kafka-} - 1)); }

# The promo topics exist with a leader for every partition (promoctl topics
# creates what is missing), as seen through the whole bootstrap list.
kafka_topics_ready() {
    local out
    if out=$(PROMO_KAFKA_BOOTSTRAP=$(kafka_bootstrap_list) "$BIN/promoctl" topics \
        --partitions "$PROMO_KAFKA_PARTITIONS" --replication $((PROMO_KAFKA_BROKERS < 3 ? PROMO_KAFKA_BROKERS : 3)) \
        --min-isr $((PROMO_KAFKA_BROKERS < 3 ? 1 : 2)) --timeout-ms 5000 2>&1); then
        return 0
    fi
    WAIT_DETAIL=$out
    return 1
}

# Waits for the nodes asked for; then, the bootstrap file is written (temp
# file and rename: a reader never sees half a line) once the topics are ready.
wait_kafka() {
    [[ -n ${PROMO_KAFKA_BOOTSTRAP:-} ]] && return 0
    local want=${1:-kafka} node
    if [[ $PROMO_DEV_BROKER == mock ]]; then
        wait_for kafka "$PROMO_KAFKA_BOOTSTRAP_FILE" test -s "$PROMO_KAFKA_BOOTSTRAP_FILE"
        return 0
    fi
    for node in $(kafka_nodes); do
        [[ $want == kafka || $want == "$node" ]] || continue
        wait_for "$node" "a listener on port $((PROMO_KAFKA_PORT + ${node#kafka-} - 1))" kafka_node_listening "$node"
    done
    [[ $want == kafka ]] || return 0
    wait_for "$(kafka_nodes | head -n 1)" "the promo topics" kafka_topics_ready
    kafka_bootstrap_list >"$PROMO_KAFKA_BOOTSTRAP_FILE.tmp"
    mv "$PROMO_KAFKA_BOOTSTRAP_FILE.tmp" "$PROMO_KAFKA_BOOTSTRAP_FILE"
}

# The sink runs the migrations; ingest reads those tables, so the sink counts
# as up once the first table exists.
sink_migrated() {
    [[ $(mysql_root -N -e "SELECT COUNT(*) FROM information_schema.tables
        WHERE table_schema='${PROMO_MYSQL_DB//\'/}' AND table_name='requests'" 2>/dev/null) == 1 ]]
}

ingest_ready() {
    local code
    code=$(http_status "$PROMO_HTTP_PORT" /readyz)
    WAIT_DETAIL="last answer: $code"
    [[ $code == 000 ]] && WAIT_DETAIL="no answer"
    [[ $code == 200 ]]
}

start_program() {
    local name=$1 bin args=() mport v
    case $name in
    sink-mysql) bin=promo-sink-mysql ;;
    webhook) bin=promo-webhook ;;
    processor-*) bin=promo-processor args=(--domain "${name#processor-}") ;;
    ingest) bin=promo-ingest ;;
    *) die "unknown component $name" ;;
    esac
    need_bin "$BIN/$bin"
    mport=0
    [[ $name != ingest ]] && { v=$(metrics_var "$name"); mport=${!v}; }
    PROMO_METRICS_PORT=$mport spawn "$name" "$BIN/$bin" "${args[@]}"
}

# 200 from a program's /readyz on its metrics port: the sink once its
# migrations ran and it subscribed, a processor once it joined its group and
# restored its partitions.
metrics_ready() {
    local code
    code=$(http_status "$1" /readyz)
    WAIT_DETAIL="last answer: $code"
    [[ $code == 200 ]]
}

wait_program() {
    local name=$1 v port
    case $name in
    ingest) wait_for ingest "200 from http://127.0.0.1:$PROMO_HTTP_PORT/readyz" ingest_ready ;;
    *)
        v=$(metrics_var "$name")
        port=${!v}
        if ((port > 0)); then
            wait_for "$name" "200 from its /readyz on port $port" metrics_ready "$port"
        elif [[ $name == sink-mysql ]]; then
            wait_for "$name" "tables in $PROMO_MYSQL_DB (migrations)" sink_migrated
        else
            spawned_alive "$name" || fail_start "$name" "process exited"
        fi
        ;;
    esac
}

start_component() {
    case $1 in
    redis) start_redis ;;
    mysql) start_mysql ;;
    kafka | kafka-*) start_kafka "$1" ;;
    *) start_program "$1" ;;
    esac
}

wait_component() {
    case $1 in
    redis) wait_redis ;;
    mysql) wait_mysql ;;
    kafka | kafka-*) wait_kafka "$1" ;;
    *) wait_program "$1" ;;
    esac
}

is_component() {
    local c
    for c in "${COMPONENTS[@]}" $(kafka_nodes); do [[ $c == "$1" ]] && return 0; done
    return 1
}

# The pid of a running component; for `kafka` on Apache Kafka, of its first
# running node.
component_pid() {
    local node
    if [[ $1 == kafka && $PROMO_DEV_BROKER == apache ]]; then
        for node in $(kafka_nodes); do running_pid "$node" && return 0; done
        return 1
    fi
    running_pid "$1"
}

# ---- commands ------------------------------------------------------------------

# Starts one component unless it runs already; waits only when told to.
launch() {
    local name=$1 node
    if [[ $name == kafka && $PROMO_DEV_BROKER == apache && -z ${PROMO_KAFKA_BOOTSTRAP:-} ]]; then
        # Started when any node is missing, so a start after one was killed
        # brings it back.
        for node in $(kafka_nodes); do
            running_pid "$node" >/dev/null || {
                start_component kafka
                return 0
            }
        done
        return 1
    fi
    if running_pid "$name" >/dev/null; then
        return 1
    fi
    start_component "$name"
}

cmd_start() {
    mkdir -p "$LOGDIR" "$RUNDIR"
    choose_ports
    save_env
    local c started=()
    # The servers start side by side, then each is waited for; the programs
    # start in order, each once the one before it is up.
    for c in redis mysql kafka; do launch "$c" && started+=("$c"); done
    for c in "${started[@]}"; do wait_component "$c"; done
    # The sink first (it runs the migrations), then the processors side by
    # side (each group's first join takes the broker a few seconds), then
    # ingest, so that "ready" means a command sent now is applied now.
    launch sink-mysql && wait_component sink-mysql
    started=()
    for c in "${PROGRAMS[@]}"; do
        [[ $c == sink-mysql ]] && continue
        launch "$c" && started+=("$c")
    done
    for c in "${started[@]}"; do wait_component "$c"; done
    launch ingest && wait_component ingest
    log "ready: http://127.0.0.1:$PROMO_HTTP_PORT (redis $PROMO_REDIS_PORT, mysql $PROMO_MYSQL_PORT," \
        "kafka $(cat "$PROMO_KAFKA_BOOTSTRAP_FILE" 2>/dev/null || echo "${PROMO_KAFKA_BOOTSTRAP:-?}"), logs $LOGDIR)"
}

# Sends sig and, for the stopping signals, waits until the process is gone,
# escalating to KILL after the grace period.
stop_component() {
    local name=$1 sig=${2:-TERM} pid grace=$PROMO_STOP_GRACE_S
    sig=${sig#SIG}
    sig=${sig^^}
    pid=$(running_pid "$name") || {
        rm -f "$(pidfile "$name")"
        return 0
    }
    [[ $name == mysql ]] && ((grace < 30)) && grace=30 # a clean InnoDB shutdown takes a while
    kill -s "$sig" "$pid" 2>/dev/null || true
    case $sig in
    TERM | INT | HUP | QUIT) kill -CONT "$pid" 2>/dev/null || true ;; # a STOPped process cannot exit
    KILL | 9) grace=10 ;;
    *) return 0 ;;
    esac
    local deadline=$((SECONDS + grace))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            [[ $sig == KILL || $sig == 9 ]] && die "$name (pid $pid) survived SIGKILL"
            log "$name (pid $pid) still running after ${grace}s, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sig=KILL
            deadline=$((SECONDS + 10))
        fi
        sleep 0.1
    done
    rm -f "$(pidfile "$name")"
    [[ $name == kafka ]] && rm -f "$PROMO_KAFKA_BOOTSTRAP_FILE"
    return 0
}

# stop_component for a name that may be the whole Apache Kafka cluster: its
# nodes get the signal side by side, and the bootstrap file goes with them.
stop_named() {
    local name=$1 sig=${2:-TERM} node pids=() p rc=0
    if [[ $name == kafka && $PROMO_DEV_BROKER == apache ]]; then
        for node in $(kafka_nodes); do
            stop_component "$node" "$sig" &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || rc=1; done
        case ${sig#SIG} in TERM | INT | HUP | QUIT | KILL | 9) rm -f "$PROMO_KAFKA_BOOTSTRAP_FILE" ;; esac
        return $rc
    fi
    stop_component "$name" "$sig"
}

# Stops the named components side by side and waits for all of them.
stop_tier() {
    local c p pids=() rc=0
    for c in "$@"; do
        stop_named "$c" TERM &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}

# Reverse start order, a tier at a time: no new commands first, then the
# processors (their results reach Kafka before it goes), then the sink (it
# drains what they produced), then the servers.
cmd_stop() {
    local rc=0
    stop_tier ingest || rc=1
    stop_tier processor-coupon processor-point processor-timesale || rc=1
    stop_tier sink-mysql webhook || rc=1
    stop_tier kafka || rc=1
    stop_tier mysql redis || rc=1
    rm -f "$ENVFILE"
    return $rc
}

cmd_status() {
    local c pid rc=0
    for c in "${COMPONENTS[@]}"; do
        if [[ $c == kafka && $PROMO_DEV_BROKER == apache && -z ${PROMO_KAFKA_BOOTSTRAP:-} ]]; then
            local node
            for node in $(kafka_nodes); do
                if pid=$(running_pid "$node"); then
                    printf '%-20s running  pid %s\n' "$node" "$pid"
                else
                    printf '%-20s stopped\n' "$node"
                    rc=3
                fi
            done
            continue
        fi
        if pid=$(running_pid "$c"); then
            printf '%-20s running  pid %s\n' "$c" "$pid"
        else
            printf '%-20s stopped\n' "$c"
            rc=3
        fi
    done
    return $rc
}

# cmd_start in a subshell, so that its exits end only it, with set -e still
# in force inside (it would be ignored in an if or || context).
start_checked() {
    local rc
    set +e
    (
        set -e
        cmd_start
    )
    rc=$?
    set -e
    return $rc
}

cmd_run() {
    trap 'log "stopping"; cmd_stop; exit 0' INT TERM
    # A failed start leaves nothing behind.
    if ! start_checked; then
        cmd_stop
        exit 1
    fi
    log "running in the foreground; Ctrl-C stops the fleet"
    while :; do
        sleep 1 &
        wait $! || true
    done
}

main() {
    local cmd=${1:-}
    shift || true
    case $cmd in
    start)
        if ! start_checked; then
            log "start failed, stopping what was started"
            cmd_stop
            exit 1
        fi
        ;;
    stop) cmd_stop ;;
    run) cmd_run ;;
    status) cmd_status ;;
    start-one)
        if [[ $# -ne 1 ]] || ! is_component "$1"; then die "usage: fleet.sh start-one {${COMPONENTS[*]}}"; fi
        mkdir -p "$LOGDIR" "$RUNDIR"
        if launch "$1"; then wait_component "$1"; else log "$1 is already running"; fi
        ;;
    stop-one)
        if [[ $# -lt 1 || $# -gt 2 ]] || ! is_component "$1"; then die "usage: fleet.sh stop-one NAME [SIGNAL]"; fi
        stop_named "$1" "${2:-TERM}"
        ;;
    kafka-nodes) kafka_nodes ;;
    *)
        sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
        exit 2
        ;;
    esac
}

main "$@"
