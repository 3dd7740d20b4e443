/* devkafka.c — the development and test Kafka broker: librdkafka's mock
 * cluster run as a standalone process.
 *
 * Debian has no Kafka broker, so the local fleet and the end-to-end tests talk
 * to the mock cluster that librdkafka carries for its own tests
 * (rdkafka_mock.h). It speaks the real protocol on loopback ports: produce
 * (idempotent too), fetch, metadata, consumer groups and committed offsets.
 * This program creates the cluster, creates the promo topics, checks them with
 * a metadata request from a separate client, then publishes the bootstrap list
 * by writing it to a file (temp file + rename, so a reader never sees half a
 * line). tools/fleet.sh waits for that file; every program reads it through
 * cfg_kafka_bootstrap(). SIGTERM or SIGINT removes the file and exits 0. Data
 * lives in memory only and dies with the process.
 *
 * An optional line-based control port on 127.0.0.1 (--control-port) lets
 * tests inject faults: take brokers down and up, make requests fail. One
 * command per line, answered by one line, "ok ..." or "error <why>"; `help`
 * lists them.
 *
 * Mock cluster quirks (librdkafka 2.0.2), which the fleet has to live with:
 * - The first join of an empty consumer group waits a fixed 3 s before the
 *   leader is elected (a hard-coded group.initial.rebalance.delay.ms), and a
 *   later rebalance waits up to session.timeout.ms - 1 s for members to
 *   rejoin. The group's session timeout is the one the last joiner sent, and a
 *   member that stops heartbeating is dropped only after it (checked each
 *   second), hence PROMO_SESSION_TIMEOUT_MS=3000 in the local fleet.
 * - Each partition keeps at most 100000 message batches or 5 MiB of them as
 *   received (compressed, if the producer compresses); older batches are
 *   dropped and the log start offset moves up. A consumer that asks for an
 *   older offset gets OFFSET_OUT_OF_RANGE and then auto.offset.reset applies
 *   (librdkafka's default, latest, silently skips everything). So "replay
 *   from the start" only works while a partition is below those limits;
 *   producing with compression.type=lz4 stretches them several times.
 * - A Fetch answers with at most one message batch per partition, and finds
 *   it by walking that partition's batches from the oldest retained one. So
 *   a consumer needs a round trip per batch, and each costs time in
 *   proportion to the batches the partition holds: profiled under the
 *   flash-coupon load, that walk was half of this process's CPU. Producers
 *   that send fewer, larger batches (ingest's per-partition gates) make the
 *   whole local fleet cheaper.
 * - ListOffsets by timestamp (offsets_for_times) is not emulated: it answers
 *   -1. Only the earliest and latest offsets can be looked up.
 * - The CreateTopics admin request is not supported, and a Metadata request
 *   that allows auto-creation (producers do by default) creates an unknown
 *   topic with 4 partitions: a misspelt topic name does not fail loudly.
 * - broker-down closes a broker's connections and refuses new ones but does
 *   not move partition leadership; its partitions are unavailable until
 *   broker-up (or partition-leader moves them). The group coordinator is
 *   chosen by hashing the group id, so taking its broker down stalls the
 *   group as well.
 * - Idempotent producers' sequence numbers are checked only for
 *   transactional producers. Kafka refuses a batch that skips a failed one;
 *   the mock appends it, and librdkafka, seeing the later batch succeed,
 *   reports the failed one delivered though it was never written. Hence
 *   PROMO_KAFKA_MAX_IN_FLIGHT=1 for every producer on this broker
 *   (common/util.c), and the same for any client of one's own that might
 *   meet a failed Produce request here (injected errors, moved leaders).
 * - Replicas and acks=all are emulated: the leader answers at once.
 *   Transactions and read_committed are not emulated faithfully.
 * - Message timestamps are the producer's CreateTime; no LogAppendTime.
 */
#include "topics.h"
#include "util.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEVKAFKA_MAX_BROKERS 16
#define DEVKAFKA_MAX_PARTITIONS 1000
#define DEVKAFKA_MAX_CLIENTS 16
#define DEVKAFKA_LINE_MAX 512
#define DEVKAFKA_READY_TIMEOUT_MS 10000

static const char *const devkafka_topics[] = {
    TOPIC_COUPON_CMD, TOPIC_POINT_CMD, TOPIC_TIMESALE_CMD, TOPIC_RESULTS, TOPIC_DLQ,
};
#define DEVKAFKA_TOPIC_CNT (sizeof devkafka_topics / sizeof devkafka_topics[0])

typedef struct {
    int brokers;
    int partitions;
    const char *bootstrap_file;
    int control_port;
} devkafka_opts;

typedef struct {
    int fd;
    size_t len;
    char buf[DEVKAFKA_LINE_MAX];
} devkafka_client;

typedef struct {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mcluster;
    int brokers;
} devkafka;

/* Kafka protocol request names for the control port, so a test can write
 * `request-errors Produce 3 NOT_LEADER_FOR_PARTITION` instead of numbers. */
static const struct {
    const char *name;
    int16_t key;
} devkafka_apikeys[] = {
    {"Produce", 0},          {"Fetch", 1},
    {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8},     {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},       {"LeaveGroup", 13},
    {"SyncGroup", 14},       {"ApiVersions", 18},
    {"InitProducerId", 22},  {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25}, {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
};

/* librdkafka logs from its own threads; log_msg writes each line with one
 * call, so lines do not interleave. */
static void devkafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    log_msg(level <= 3 ? "error" : level <= 4 ? "warn" : "info", "rdkafka %s: %s", fac, buf);
}

/* The handle that hosts the cluster has no bootstrap list on purpose; its
 * warning about that is noise. */
static void devkafka_host_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers")) return;
    devkafka_log_cb(rk, level, fac, buf);
}

static int devkafka_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    if (!s || !*s) return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int devkafka_parse_apikey(const char *s, int16_t *out) {
    long v;
    if (devkafka_parse_int(s, 0, 32767, &v) == 0) {
        *out = (int16_t)v;
        return 0;
    }
    for (size_t i = 0; i < sizeof devkafka_apikeys / sizeof devkafka_apikeys[0]; i++) {
        if (strcasecmp(s, devkafka_apikeys[i].name) == 0) {
            *out = devkafka_apikeys[i].key;
            return 0;
        }
    }
    return -1;
}

/* An error code by number or by librdkafka's name, with or without the
 * "ERR_" prefix: "6", "NOT_LEADER_FOR_PARTITION", "_TRANSPORT". */
static int devkafka_parse_err(const char *s, rd_kafka_resp_err_t *out) {
    long v;
    if (devkafka_parse_int(s, -200, 1000, &v) == 0) {
        *out = (rd_kafka_resp_err_t)v;
        return 0;
    }
    if (strncasecmp(s, "ERR_", 4) == 0) s += 4;
    const struct rd_kafka_err_desc *descs;
    size_t cnt;
    rd_kafka_get_err_descs(&descs, &cnt);
    for (size_t i = 0; i < cnt; i++) {
        if (descs[i].name && strcasecmp(s, descs[i].name) == 0) {
            *out = descs[i].code;
            return 0;
        }
    }
    return -1;
}

/* Runs one control command and writes the one-line answer into reply. */
static void devkafka_command(devkafka *dk, char *line, char *reply, size_t reply_size) {
    char *argv[8];
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r", &save); tok && argc < 8; tok = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = tok;
    if (argc == 0) {
        snprintf(reply, reply_size, "error empty command");
        return;
    }
    const char *cmd = argv[0];
    long n, cnt, ms;
    int16_t apikey;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR, code;

    if (strcmp(cmd, "ping") == 0 && argc == 1) {
        snprintf(reply, reply_size, "ok pong");
    } else if (strcmp(cmd, "help") == 0 && argc == 1) {
        snprintf(reply, reply_size,
                 "ok commands: ping | bootstrap | broker-down N | broker-up N | broker-rtt N MS"
                 " | request-errors APIKEY COUNT ERRCODE | clear-errors APIKEY"
                 " | topic-error TOPIC ERRCODE | partition-leader TOPIC PARTITION BROKER");
    } else if (strcmp(cmd, "bootstrap") == 0 && argc == 1) {
        snprintf(reply, reply_size, "ok %s", rd_kafka_mock_cluster_bootstraps(dk->mcluster));
    } else if ((strcmp(cmd, "broker-down") == 0 || strcmp(cmd, "broker-up") == 0) && argc == 2) {
        if (devkafka_parse_int(argv[1], 1, dk->brokers, &n)) {
            snprintf(reply, reply_size, "error broker id must be 1..%d", dk->brokers);
            return;
        }
        err = cmd[7] == 'd' ? rd_kafka_mock_broker_set_down(dk->mcluster, (int32_t)n)
                            : rd_kafka_mock_broker_set_up(dk->mcluster, (int32_t)n);
        if (!err) snprintf(reply, reply_size, "ok");
    } else if (strcmp(cmd, "broker-rtt") == 0 && argc == 3) {
        if (devkafka_parse_int(argv[1], 1, dk->brokers, &n) || devkafka_parse_int(argv[2], 0, 600000, &ms)) {
            snprintf(reply, reply_size, "error usage: broker-rtt BROKER(1..%d) MS", dk->brokers);
            return;
        }
        err = rd_kafka_mock_broker_set_rtt(dk->mcluster, (int32_t)n, (int)ms);
        if (!err) snprintf(reply, reply_size, "ok");
    } else if ((strcmp(cmd, "request-errors") == 0 || strcmp(cmd, "push-errors") == 0) && argc == 4) {
        if (devkafka_parse_apikey(argv[1], &apikey)) {
            snprintf(reply, reply_size, "error unknown api key %s", argv[1]);
            return;
        }
        if (devkafka_parse_int(argv[2], 1, 10000, &cnt)) {
            snprintf(reply, reply_size, "error count must be 1..10000");
            return;
        }
        if (devkafka_parse_err(argv[3], &code)) {
            snprintf(reply, reply_size, "error unknown error code %s", argv[3]);
            return;
        }
        rd_kafka_resp_err_t *errs = malloc((size_t)cnt * sizeof *errs);
        if (!errs) {
            snprintf(reply, reply_size, "error out of memory");
            return;
        }
        for (long i = 0; i < cnt; i++) errs[i] = code;
        rd_kafka_mock_push_request_errors_array(dk->mcluster, apikey, (size_t)cnt, errs);
        free(errs);
        snprintf(reply, reply_size, "ok %ld x %s on api %d", cnt, rd_kafka_err2name(code), apikey);
    } else if (strcmp(cmd, "clear-errors") == 0 && argc == 2) {
        if (devkafka_parse_apikey(argv[1], &apikey)) {
            snprintf(reply, reply_size, "error unknown api key %s", argv[1]);
            return;
        }
        rd_kafka_mock_clear_request_errors(dk->mcluster, apikey);
        snprintf(reply, reply_size, "ok");
    } else if (strcmp(cmd, "topic-error") == 0 && argc == 3) {
        if (devkafka_parse_err(argv[2], &code)) {
            snprintf(reply, reply_size, "error unknown error code %s", argv[2]);
            return;
        }
        rd_kafka_mock_topic_set_error(dk->mcluster, argv[1], code);
        snprintf(reply, reply_size, "ok");
    } else if (strcmp(cmd, "partition-leader") == 0 && argc == 4) {
        if (devkafka_parse_int(argv[2], 0, DEVKAFKA_MAX_PARTITIONS - 1, &n) ||
            devkafka_parse_int(argv[3], -1, dk->brokers, &cnt) || cnt == 0) {
            snprintf(reply, reply_size, "error usage: partition-leader TOPIC PARTITION BROKER(1..%d or -1)",
                     dk->brokers);
            return;
        }
        err = rd_kafka_mock_partition_set_leader(dk->mcluster, argv[1], (int32_t)n, (int32_t)cnt);
        if (!err) snprintf(reply, reply_size, "ok");
    } else {
        snprintf(reply, reply_size, "error unknown command or wrong arguments (try help)");
        return;
    }
    if (err) snprintf(reply, reply_size, "error %s", rd_kafka_err2str(err));
}

/* Writes the whole buffer to a blocking-enough socket; a client that does not
 * read its answers is dropped rather than waited for. */
static int devkafka_send(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads what a control client sent and answers each complete line.
 * Returns -1 when the client is gone or misbehaved and must be closed. */
static int devkafka_client_read(devkafka *dk, devkafka_client *c) {
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
    if (n <= 0) return -1;
    c->len += (size_t)n;
    char *nl;
    while ((nl = memchr(c->buf, '\n', c->len))) {
        *nl = '\0';
        char cmd[DEVKAFKA_LINE_MAX], reply[DEVKAFKA_LINE_MAX + 64];
        snprintf(cmd, sizeof cmd, "%s", c->buf);
        cmd[strcspn(cmd, "\r")] = '\0';
        devkafka_command(dk, c->buf, reply, sizeof reply - 1);
        log_info("control: %s -> %s", cmd, reply);
        size_t rlen = strlen(reply);
        reply[rlen++] = '\n';
        if (devkafka_send(c->fd, reply, rlen)) return -1;
        size_t used = (size_t)(nl - c->buf) + 1;
        memmove(c->buf, nl + 1, c->len - used);
        c->len -= used;
    }
    if (c->len == sizeof c->buf) {
        devkafka_send(c->fd, "error line too long\n", 20);
        return -1;
    }
    return 0;
}

static int devkafka_listen(int port, char *errstr, size_t errstr_size) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) || listen(fd, 8)) {
        snprintf(errstr, errstr_size, "control port 127.0.0.1:%d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Asks the cluster, through a separate client, for the metadata of all topics
 * (asking for all never auto-creates one) and checks that each promo topic
 * has its partitions, each with a leader. That is what "ready" means: the
 * bootstrap file is written only after. */
static int devkafka_check_ready(const char *bootstraps, int partitions, char *errstr, size_t errstr_size) {
    char cerr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, cerr, sizeof cerr)) {
        snprintf(errstr, errstr_size, "config: %s", cerr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_log_cb(conf, devkafka_log_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, cerr, sizeof cerr);
    if (!rk) {
        snprintf(errstr, errstr_size, "check client: %s", cerr);
        return -1;
    }
    int rc = -1;
    int64_t deadline = mono_ms() + DEVKAFKA_READY_TIMEOUT_MS;
    snprintf(errstr, errstr_size, "no metadata");
    while (rc != 0 && mono_ms() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 2000);
        if (err) {
            snprintf(errstr, errstr_size, "metadata: %s", rd_kafka_err2str(err));
            usleep(100 * 1000);
            continue;
        }
        size_t ok = 0;
        for (size_t t = 0; t < DEVKAFKA_TOPIC_CNT; t++) {
            for (int i = 0; i < md->topic_cnt; i++) {
                const struct rd_kafka_metadata_topic *mt = &md->topics[i];
                if (strcmp(mt->topic, devkafka_topics[t]) || mt->err || mt->partition_cnt != partitions) continue;
                int led = 0;
                for (int p = 0; p < mt->partition_cnt; p++) led += mt->partitions[p].leader >= 0;
                if (led == partitions) ok++;
            }
        }
        rd_kafka_metadata_destroy(md);
        if (ok == DEVKAFKA_TOPIC_CNT)
            rc = 0;
        else {
            snprintf(errstr, errstr_size, "only %zu of %zu topics complete", ok, DEVKAFKA_TOPIC_CNT);
            usleep(100 * 1000);
        }
    }
    rd_kafka_destroy(rk);
    return rc;
}

/* temp file + fsync + rename: whoever opens the path sees the whole line or
 * no file at all. */
static int devkafka_write_bootstrap(const char *path, const char *bootstraps, char *errstr, size_t errstr_size) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
        snprintf(errstr, errstr_size, "bootstrap file path too long");
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "%.300s: %s", tmp, strerror(errno));
        return -1;
    }
    char line[1024];
    int len = snprintf(line, sizeof line, "%s\n", bootstraps);
    int rc = 0;
    if (len < 0 || (size_t)len >= sizeof line || write(fd, line, (size_t)len) != len || fsync(fd)) {
        snprintf(errstr, errstr_size, "%.300s: write failed: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (close(fd) && rc == 0) {
        snprintf(errstr, errstr_size, "%.300s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path)) {
        snprintf(errstr, errstr_size, "rename to %.300s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc) unlink(tmp);
    return rc;
}

static void devkafka_usage(FILE *f) {
    fprintf(f, "usage: promo-devkafka [--brokers N] [--partitions N] [--bootstrap-file PATH] [--control-port PORT]\n"
               "  --brokers N            mock brokers (PROMO_KAFKA_BROKERS, default 3)\n"
               "  --partitions N         partitions per topic (PROMO_KAFKA_PARTITIONS, default 12)\n"
               "  --bootstrap-file PATH  where to write the broker list once ready\n"
               "                         (PROMO_KAFKA_BOOTSTRAP_FILE, default var/kafka.bootstrap)\n"
               "  --control-port PORT    fault-injection commands on 127.0.0.1:PORT, 0 = off\n"
               "                         (PROMO_KAFKA_CONTROL_PORT, default 0)\n");
}

static int devkafka_parse_opts(int argc, char **argv, devkafka_opts *o) {
    o->brokers = (int)cfg_int("PROMO_KAFKA_BROKERS", 3);
    o->partitions = (int)cfg_int("PROMO_KAFKA_PARTITIONS", 12);
    o->bootstrap_file = cfg_str("PROMO_KAFKA_BOOTSTRAP_FILE", "var/kafka.bootstrap");
    o->control_port = (int)cfg_int("PROMO_KAFKA_CONTROL_PORT", 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            devkafka_usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            log_error("%s: missing value or unknown option", a);
            return -1;
        }
        const char *v = argv[++i];
        long n = 0;
        if (strcmp(a, "--brokers") == 0 && devkafka_parse_int(v, 1, 1000000, &n) == 0)
            o->brokers = (int)n;
        else if (strcmp(a, "--partitions") == 0 && devkafka_parse_int(v, 1, 1000000, &n) == 0)
            o->partitions = (int)n;
        else if (strcmp(a, "--control-port") == 0 && devkafka_parse_int(v, 0, 65535, &n) == 0)
            o->control_port = (int)n;
        else if (strcmp(a, "--bootstrap-file") == 0 && *v)
            o->bootstrap_file = v;
        else {
            log_error("bad option %s %s", a, v);
            return -1;
        }
    }
    if (o->brokers < 1 || o->brokers > DEVKAFKA_MAX_BROKERS) {
        log_error("brokers must be 1..%d, not %d", DEVKAFKA_MAX_BROKERS, o->brokers);
        return -1;
    }
    if (o->partitions < 1 || o->partitions > DEVKAFKA_MAX_PARTITIONS) {
        log_error("partitions must be 1..%d, not %d", DEVKAFKA_MAX_PARTITIONS, o->partitions);
        return -1;
    }
    if (o->control_port < 0 || o->control_port > 65535) {
        log_error("control port must be 0..65535, not %d", o->control_port);
        return -1;
    }
    return 0;
}

/* Serves the control port until SIGTERM or SIGINT arrives on sfd. */
static void devkafka_serve(devkafka *dk, int sfd, int lfd) {
    devkafka_client clients[DEVKAFKA_MAX_CLIENTS];
    int nclients = 0;
    for (;;) {
        struct pollfd pfd[2 + DEVKAFKA_MAX_CLIENTS];
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        if (lfd >= 0) pfd[n++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        int first_client = n;
        for (int i = 0; i < nclients; i++) pfd[n++] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            log_error("poll: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) log_info("signal %u, shutting down", si.ssi_signo);
            break;
        }
        /* Clients first, from the end, so removing one does not disturb the
         * indexes of those not yet looked at. */
        for (int i = nclients - 1; i >= 0; i--) {
            if (!pfd[first_client + i].revents) continue;
            if (devkafka_client_read(dk, &clients[i])) {
                close(clients[i].fd);
                clients[i] = clients[--nclients];
            }
        }
        if (lfd >= 0 && pfd[1].revents) {
            int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (cfd >= 0 && nclients == DEVKAFKA_MAX_CLIENTS) {
                devkafka_send(cfd, "error too many control clients\n", 31);
                close(cfd);
            } else if (cfd >= 0) {
                clients[nclients].fd = cfd;
                clients[nclients].len = 0;
                nclients++;
            }
        }
    }
    for (int i = 0; i < nclients; i++) close(clients[i].fd);
}

int main(int argc, char **argv) {
    log_init("devkafka");
    devkafka_opts o;
    if (devkafka_parse_opts(argc, argv, &o)) {
        devkafka_usage(stderr);
        return 2;
    }

    /* Block the stop signals before librdkafka starts its threads, so they
     * inherit the mask and the signals reach only the signalfd below. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        log_error("signalfd: %s", strerror(errno));
        return 1;
    }

    char errstr[512];
    int rc = 1, lfd = -1;
    devkafka dk = {.brokers = o.brokers};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, devkafka_host_log_cb);
    /* The handle only hosts the cluster; it never connects anywhere, and an
     * empty bootstrap list keeps it that way. */
    dk.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!dk.rk) {
        log_error("rd_kafka_new: %s", errstr);
        goto out;
    }
    dk.mcluster = rd_kafka_mock_cluster_new(dk.rk, o.brokers);
    if (!dk.mcluster) {
        log_error("cannot create the mock cluster (see above)");
        goto out;
    }
    int rf = o.brokers < 3 ? o.brokers : 3;
    for (size_t t = 0; t < DEVKAFKA_TOPIC_CNT; t++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(dk.mcluster, devkafka_topics[t], o.partitions, rf);
        if (err) {
            log_error("create topic %s: %s", devkafka_topics[t], rd_kafka_err2str(err));
            goto out;
        }
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(dk.mcluster);
    if (devkafka_check_ready(bootstraps, o.partitions, errstr, sizeof errstr)) {
        log_error("cluster not ready: %s", errstr);
        goto out;
    }
    if (o.control_port > 0 && (lfd = devkafka_listen(o.control_port, errstr, sizeof errstr)) < 0) {
        log_error("%s", errstr);
        goto out;
    }
    if (devkafka_write_bootstrap(o.bootstrap_file, bootstraps, errstr, sizeof errstr)) {
        log_error("%s", errstr);
        goto out;
    }
    log_info("ready: bootstrap=%s brokers=%d partitions=%d replication=%d topics=%zu control=%d file=%s", bootstraps,
             o.brokers, o.partitions, rf, DEVKAFKA_TOPIC_CNT, o.control_port, o.bootstrap_file);

    devkafka_serve(&dk, sfd, lfd);
    if (unlink(o.bootstrap_file) && errno != ENOENT)
        log_warn("cannot remove %s: %s", o.bootstrap_file, strerror(errno));
    rc = 0;

out:
    if (lfd >= 0) close(lfd);
    if (dk.mcluster) rd_kafka_mock_cluster_destroy(dk.mcluster);
    if (dk.rk) rd_kafka_destroy(dk.rk);
    close(sfd);
    if (rc == 0) log_info("stopped");
    return rc;
}
