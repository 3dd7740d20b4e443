/* mysql_main.c — promo-sink-mysql: Results from Kafka into MySQL and Redis.
 *
 * Consumes promo.results in a consumer group, collects a batch (up to
 * PROMO_SINK_BATCH messages or PROMO_SINK_LINGER_MS after its first), and
 * writes it. The crash-safe order of a batch, and why:
 *
 *   1. undecodable messages -> promo.dlq, flushed and acknowledged
 *      (once the offset is committed, only the dead letter remembers them);
 *   2. the decoded results -> MySQL in ONE transaction (sink_mysql_write),
 *      retried with backoff on any error, never skipped;
 *   3. each request's status JSON -> Redis (pipelined EVALSHA of a
 *      first-final-wins script), after the commit, so a status is never
 *      visible before its rows;
 *   4. the batch's offsets -> Kafka, synchronously, last.
 *
 * A crash anywhere before 4 re-reads the batch, and every step is idempotent
 * (a dead letter may be sent twice). A rebalance drops a batch still being
 * collected: its partitions' next owner reads it again from the committed
 * offset. Offsets are never stored automatically.
 *
 * The stages are pipelined over three threads, so that decoding, MySQL and
 * Redis work at the same time on three consecutive batches (see `pipeline`):
 * the main thread polls, decodes and renders the statuses; the MySQL writer
 * runs stages 1 and 2; the status writer runs 3 and 4. Each writer takes
 * the batches in the order they were collected, so offsets are committed in
 * order, each after its own rows and statuses; a stage that gives up (only
 * when stopping) drops its batch and every later one uncommitted. A
 * revocation waits until every batch handed over is through, so a batch is
 * never written after its partitions moved on.
 *
 * Threads: the main thread, the two writers (which share only the pipeline,
 * under its mutex), and the CivetWeb workers behind /metrics, /healthz and
 * /readyz, which only read atomic counters.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>
#include <librdkafka/rdkafka.h>

#include "codec.h"
#include "kafka.h"
#include "keys.h"
#include "ops.h"
#include "result_json.h"
#include "redis_conn.h"
#include "sink_mysql.h"
#include "topics.h"
#include "util.h"

#define PROGRAM "promo-sink-mysql"
#define MAX_RESULT_PARTITIONS 4096

static volatile sig_atomic_t stopping;
static int fatal; /* the consumer cannot go on: exit nonzero */

/* ---- metrics -------------------------------------------------------- */

static const double size_buckets[] = {1, 10, 50, 100, 250, 500, 1000, 2000, 5000};
static const double commit_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

/* Each thread's time, by what it was doing (promo_sink_mysql_stage_seconds_total):
 * consume, render and handoff (waiting for a free slot) on the main thread,
 * dlq and mysql on the MySQL writer, redis and offsets on the status writer.
 * The stage whose thread is busy all the time is the one that paces the sink. */
enum stage { STAGE_CONSUME, STAGE_RENDER, STAGE_HANDOFF, STAGE_MYSQL, STAGE_REDIS, STAGE_OFFSETS, STAGE_DLQ, N_STAGES };
static const char *const stage_names[N_STAGES] = {"consume", "render", "handoff", "mysql", "redis", "offsets", "dlq"};

/* Written by the pipeline's threads, read by CivetWeb workers. */
static struct {
    atomic_ullong batches, results, rows, statuses, dead_letters, dropped;
    atomic_ullong err_mysql, err_redis, err_kafka, err_dlq;
    atomic_ullong skipped; /* results deleted from the log before we read them */
    atomic_int mysql_up;
    atomic_int ready; /* migrations applied and the consumer subscribed */
    prom_hist size, commit;
    atomic_ullong stage_us[N_STAGES]; /* where the main thread's time goes */
} m = {
    .size = {.le = size_buckets, .n = sizeof size_buckets / sizeof size_buckets[0]},
    .commit = {.le = commit_buckets, .n = sizeof commit_buckets / sizeof commit_buckets[0]},
};

static void stage_add(enum stage st, long long since_us) {
    atomic_fetch_add(&m.stage_us[st], (unsigned long long)(mono_us() - since_us));
}

static void metrics_batch(size_t size, long long commit_us) {
    prom_hist_observe(&m.size, (double)size);
    prom_hist_observe(&m.commit, (double)commit_us / 1e6);
}

/* CivetWeb worker thread (ops.c). */
static void write_metrics(prom *p, void *arg) {
    (void)arg;
    prom_counter(p, "promo_sink_mysql_batches_total", "Batches committed to MySQL.", atomic_load(&m.batches));
    prom_counter(p, "promo_sink_mysql_results_total", "Results written.", atomic_load(&m.results));
    prom_counter(p, "promo_sink_mysql_rows_written_total", "Rows the server reported changed.", atomic_load(&m.rows));
    prom_counter(p, "promo_sink_mysql_statuses_total", "Request statuses set in Redis.", atomic_load(&m.statuses));
    prom_counter(p, "promo_sink_mysql_dead_letters_total", "Undecodable results sent to promo.dlq.",
                 atomic_load(&m.dead_letters));
    prom_counter(p, "promo_sink_mysql_results_skipped_total",
                 "Results the broker deleted before the sink read them: MySQL will never hold them.",
                 atomic_load(&m.skipped));
    prom_counter(p, "promo_sink_mysql_batches_dropped_total", "Uncommitted batches dropped on a rebalance or stop.",
                 atomic_load(&m.dropped));
    prom_family(p, "promo_sink_mysql_errors_total", "counter", "Failed attempts, by stage (each is retried).");
    prom_u64(p, "promo_sink_mysql_errors_total", "stage=\"mysql\"", atomic_load(&m.err_mysql));
    prom_u64(p, "promo_sink_mysql_errors_total", "stage=\"redis\"", atomic_load(&m.err_redis));
    prom_u64(p, "promo_sink_mysql_errors_total", "stage=\"kafka\"", atomic_load(&m.err_kafka));
    prom_u64(p, "promo_sink_mysql_errors_total", "stage=\"dlq\"", atomic_load(&m.err_dlq));
    prom_gauge(p, "promo_sink_mysql_up", "1 while the last MySQL write succeeded.", atomic_load(&m.mysql_up));
    prom_family(p, "promo_sink_mysql_stage_seconds_total", "counter", "Time spent in each stage of the pipeline.");
    for (int i = 0; i < N_STAGES; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "stage=\"%s\"", stage_names[i]);
        prom_f64(p, "promo_sink_mysql_stage_seconds_total", labels, (double)atomic_load(&m.stage_us[i]) / 1e6);
    }
    prom_family(p, "promo_sink_mysql_batch_size", "histogram", "Messages per batch.");
    prom_hist_write(p, "promo_sink_mysql_batch_size", NULL, &m.size);
    prom_family(p, "promo_sink_mysql_commit_seconds", "histogram", "Time to write and commit one batch's transaction.");
    prom_hist_write(p, "promo_sink_mysql_commit_seconds", NULL, &m.commit);
}

/* CivetWeb worker thread (ops.c). Ready once the schema is migrated (ingest
 * reads those tables) and the consumer is subscribed; a sink waiting for
 * MySQL is alive all the same (/healthz). */
static const char *not_ready(void *arg) {
    (void)arg;
    return atomic_load(&m.ready) ? NULL : "starting";
}

/* ---- the batch ------------------------------------------------------ */

typedef struct dead {
    codec_buf value;
    void *key; /* NULL = null */
    size_t key_len;
    rd_kafka_resp_err_t err; /* set by the delivery report */
    bool delivered;
} dead;

typedef struct batch {
    size_t max;
    size_t n;          /* messages consumed, decoded or not */
    int64_t first_ms;  /* mono_ms() of the first message */
    promo_result *res; /* max entries */
    char **json;       /* status text per result, or NULL */
    size_t nres;
    dead *dead; /* max entries */
    size_t ndead;
    rd_kafka_topic_partition_list_t *offsets; /* next offset per partition */
} batch;

/* Batches move through NSLOT slots in order: the main thread fills one while
 * the MySQL writer writes the one before it and the status writer sets the
 * statuses and commits the offsets of the one before that. Sequence numbers
 * count batches; batch i lives in slots[i % NSLOT]. Invariant:
 * done <= written <= filled <= done + NSLOT, and each slot belongs to exactly
 * one thread: [done, written) to the status writer, [written, filled) to the
 * MySQL writer, filled to the main thread. All under mu; cv is broadcast on
 * every change. */
#define NSLOT 3

typedef struct pipeline {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long long filled;  /* batches the main thread handed over */
    unsigned long long written; /* batches past the MySQL writer (committed or dropped) */
    unsigned long long done;    /* batches past the status writer: their slots are free again */
    bool aborted;               /* a batch was dropped: no later batch may commit offsets */
    bool quit;                  /* the writers exit once everything handed over is through */
} pipeline;

typedef struct app {
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    codec *codec;
    sink_mysql *db;
    redisContext *redis;
    char status_sha[41]; /* status_script's SHA1 as loaded on this connection; "" = not loaded */
    const char *redis_host;
    int redis_port;
    long long status_ttl_s;
    int linger_ms;
    batch slots[NSLOT];
    pipeline p;
    /* Next offset expected per partition of promo.results, -1 when unknown:
     * the committed offset at assignment, then each message's offset + 1.
     * Touched only on the consumer's thread (run() and the rebalance
     * callback it triggers). */
    int64_t next[MAX_RESULT_PARTITIONS];
} app;

static void batch_clear(batch *b) {
    for (size_t i = 0; i < b->nres; i++) {
        free(b->json[i]);
        b->json[i] = NULL;
    }
    for (size_t i = 0; i < b->ndead; i++) {
        free(b->dead[i].value.data);
        free(b->dead[i].key);
    }
    if (b->offsets) rd_kafka_topic_partition_list_destroy(b->offsets);
    b->offsets = NULL;
    b->n = b->nres = b->ndead = 0;
}

static void batch_drop(batch *b, const char *why) {
    if (b->n == 0) return;
    log_warn("dropping uncommitted batch of %zu messages (%s); it will be read again", b->n, why);
    atomic_fetch_add(&m.dropped, 1);
    batch_clear(b);
}

/* Turns an undecodable message into a dead letter kept in the batch. */
/* The slot the main thread fills; free by the invariant above. filled only
 * changes on the main thread, so it reads it without the lock. */
static batch *batch_filling(app *a) {
    return &a->slots[a->p.filled % NSLOT];
}

static int batch_add_dead(app *a, const rd_kafka_message_t *msg, int code, const char *why) {
    batch *b = batch_filling(a);
    dead *d = &b->dead[b->ndead];
    memset(d, 0, sizeof *d);
    dead_letter dl = {
        .source_topic = rd_kafka_topic_name(msg->rkt),
        .source_partition = msg->partition,
        .source_offset = msg->offset,
        .key = msg->key,
        .key_len = msg->key_len,
        .value = msg->payload,
        .value_len = msg->len,
        .error_code = codec_err_code(code),
        .reason = why,
        .failed_at = now_ms(),
        .consumer = PROGRAM,
    };
    char errstr[256];
    if (codec_encode_dead_letter(a->codec, &dl, &d->value, errstr, sizeof errstr) != CODEC_OK) {
        log_error("cannot encode dead letter for %s[%d]@%lld: %s", dl.source_topic, (int)msg->partition,
                  (long long)msg->offset, errstr);
        free(d->value.data);
        return -1;
    }
    if (msg->key) {
        d->key = malloc(msg->key_len ? msg->key_len : 1);
        if (!d->key) {
            free(d->value.data);
            return -1;
        }
        memcpy(d->key, msg->key, msg->key_len);
        d->key_len = msg->key_len;
    }
    b->ndead++;
    log_warn("dead letter %s[%d]@%lld: %s: %s", dl.source_topic, (int)msg->partition, (long long)msg->offset,
             dl.error_code, why);
    return 0;
}

/* Decodes msg into the batch (or makes it a dead letter) and remembers its
 * offset. Returns -1 only when memory runs out or a dead letter cannot be
 * encoded; the caller then stops without committing. */
static int batch_add(app *a, const rd_kafka_message_t *msg) {
    batch *b = batch_filling(a);
    if (!b->offsets && !(b->offsets = rd_kafka_topic_partition_list_new(8))) return -1;
    if (b->n == 0) b->first_ms = mono_ms();
    char errstr[256];
    static const uint8_t empty[1];
    const uint8_t *data = msg->payload ? msg->payload : empty;
    int rc = codec_decode_result(a->codec, data, msg->len, &b->res[b->nres], errstr, sizeof errstr);
    /* Even CODEC_ERR_INTERNAL goes to the dead letters: the codec may say
     * so for input Avro-C cannot represent, and no input may stop the sink. */
    if (rc == CODEC_OK)
        b->nres++;
    else if (batch_add_dead(a, msg, rc, errstr) != 0)
        return -1;
    const char *topic = rd_kafka_topic_name(msg->rkt);
    rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(b->offsets, topic, msg->partition);
    if (!p) p = rd_kafka_topic_partition_list_add(b->offsets, topic, msg->partition);
    if (msg->offset + 1 > p->offset) p->offset = msg->offset + 1;
    b->n++;
    return 0;
}

/* ---- the stages of a batch ------------------------------------------ */

/* librdkafka's thread-free delivery report, served inside rd_kafka_flush(). */
static void dlq_delivered(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
    (void)rk;
    (void)opaque;
    dead *d = msg->_private;
    if (!d) return;
    d->err = msg->err;
    d->delivered = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Stage 1: every dead letter acknowledged by promo.dlq. */
static int stage_dead_letters(app *a, batch *b) {
    int backoff = BACKOFF_MIN_MS;
    for (;;) {
        size_t pending = 0;
        for (size_t i = 0; i < b->ndead; i++) {
            dead *d = &b->dead[i];
            if (d->delivered) continue;
            d->err = RD_KAFKA_RESP_ERR__IN_PROGRESS;
            /* Copied: a copy still queued after a timed-out flush must not
             * point into a batch that is gone by then. */
            rd_kafka_resp_err_t err =
                rd_kafka_producev(a->producer, RD_KAFKA_V_TOPIC(TOPIC_DLQ), RD_KAFKA_V_KEY(d->key, d->key_len),
                                  RD_KAFKA_V_VALUE(d->value.data, d->value.len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
            if (err) d->err = err;
            pending++;
        }
        if (pending == 0) return 0;
        rd_kafka_flush(a->producer, 10000);
        size_t failed = 0;
        rd_kafka_resp_err_t last = RD_KAFKA_RESP_ERR_NO_ERROR;
        for (size_t i = 0; i < b->ndead; i++)
            if (!b->dead[i].delivered) {
                failed++;
                last = b->dead[i].err;
            }
        if (failed == 0) {
            atomic_fetch_add(&m.dead_letters, pending);
            return 0;
        }
        atomic_fetch_add(&m.err_dlq, 1);
        log_error("%zu dead letters not acknowledged by %s: %s; retrying in %d ms", failed, TOPIC_DLQ,
                  rd_kafka_err2str(last), backoff);
        if (stopping) return -1;
        nap_ms(backoff, &stopping);
        backoff = backoff_next(backoff);
        if (stopping) return -1;
    }
}

/* The status text of each result that sets one. Returns 0, or -1 when
 * memory ran out (the caller retries: dropping the batch would skip it). */
static int render_statuses(batch *b, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < b->nres; i++) {
        if (b->json[i] || !sink_mysql_status_wanted(&b->res[i])) continue;
        if (!(b->json[i] = result_json_dump(&b->res[i]))) {
            snprintf(errstr, errstr_size, "out of memory rendering request %s", b->res[i].request_id);
            return -1;
        }
    }
    return 0;
}

/* Stage 2: the batch in one MySQL transaction, retried until it commits. */
static int stage_mysql(app *a, batch *b) {
    int backoff = BACKOFF_MIN_MS;
    char errstr[512];
    for (;;) {
        long long rows = 0;
        long long t0 = mono_us();
        /* Rendered on the main thread already, unless memory ran out there. */
        if (render_statuses(b, errstr, sizeof errstr) == 0 &&
            sink_mysql_write(a->db, b->res, b->json, b->nres, &rows, errstr, sizeof errstr) == 0) {
            long long us = mono_us() - t0;
            atomic_store(&m.mysql_up, 1);
            atomic_fetch_add(&m.rows, (unsigned long long)rows);
            atomic_fetch_add(&m.results, b->nres);
            metrics_batch(b->n, us);
            return 0;
        }
        atomic_store(&m.mysql_up, 0);
        atomic_fetch_add(&m.err_mysql, 1);
        log_error("mysql batch of %zu results (first request %s) failed: %s; retrying in %d ms", b->nres,
                  b->nres ? b->res[0].request_id : "-", errstr, backoff);
        if (stopping) return -1;
        nap_ms(backoff, &stopping);
        backoff = backoff_next(backoff);
        if (stopping) return -1;
        /* A failed reconnect leaves no connection; the next write tries
         * again and its error is the one logged. */
        sink_mysql_reconnect(a->db, errstr, sizeof errstr);
    }
}

/* The first final result of a request id is the one kept, in Redis as in
 * the requests table (INSERT IGNORE): a status is written over nothing, over
 * ingest's PENDING or over itself (a replay), never over another result —
 * such as a command sent under a reused id to another entity's partition,
 * which no single processor can see. The PUBLISH wakes ingest's long-polls
 * (GET /v1/requests/{id}?wait_ms=) once the status they read is in place.
 * The script knows ingest's PENDING document by RESULT_JSON_PENDING_MARK
 * (result_json.h), the one spelling result_json_pending() writes: a plain
 * substring search, as result_json_is_pending() does in C. */
static const char status_script[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v and v ~= ARGV[1] and not string.find(v, '" RESULT_JSON_PENDING_MARK "', 1, true) then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
    "redis.call('PUBLISH', '" KEY_DONE_CHANNEL "', ARGV[3])\n"
    "return 1\n";

static void redis_drop(app *a) {
    if (a->redis) redisFree(a->redis);
    a->redis = NULL;
    a->status_sha[0] = '\0';
}

/* Loads status_script and keeps its SHA1: each status then goes as EVALSHA,
 * sparing Redis the hashing and parsing of the script's text per call (and
 * the network its bytes). Returns 0, or -1 with errstr filled. */
static int redis_load_script(app *a, char *errstr, size_t errstr_size) {
    redisReply *r = redisCommand(a->redis, "SCRIPT LOAD %s", status_script);
    if (!r) {
        snprintf(errstr, errstr_size, "SCRIPT LOAD: %s", a->redis->errstr);
        redis_drop(a);
        return -1;
    }
    int rc = 0;
    if (r->type == REDIS_REPLY_STRING && r->len == 40)
        memcpy(a->status_sha, r->str, 41);
    else {
        snprintf(errstr, errstr_size, "SCRIPT LOAD: %s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

static int redis_connect(app *a, char *errstr, size_t errstr_size) {
    struct timeval tv = {2, 0};
    if (!(a->redis = redis_open(a->redis_host, a->redis_port, tv, errstr, errstr_size))) return -1;
    struct timeval io = {5, 0};
    redisSetTimeout(a->redis, io);
    return redis_load_script(a, errstr, errstr_size);
}

/* One pipelined round of status writes. Returns 0, or -1 with errstr filled (and the
 * connection dropped when it broke). */
static int redis_set_statuses(app *a, batch *b, size_t *sent, char *errstr, size_t errstr_size) {
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", a->status_ttl_s);
    size_t n = 0;
    for (size_t i = 0; i < b->nres; i++) {
        if (!b->json[i]) continue;
        char key[16 + PROMO_ID_MAX + 1];
        int klen = snprintf(key, sizeof key, KEY_REQ_PREFIX "%s", b->res[i].request_id);
        const char *argv[] = {"EVALSHA", a->status_sha, "1", key, b->json[i], ttl, b->res[i].request_id};
        size_t lens[] = {7, 40, 1, (size_t)klen, strlen(b->json[i]), strlen(ttl), strlen(b->res[i].request_id)};
        if (redisAppendCommandArgv(a->redis, 7, argv, lens) != REDIS_OK) goto io_error;
        n++;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *reply = NULL;
        if (redisGetReply(a->redis, (void **)&reply) != REDIS_OK) goto io_error;
        if (reply->type == REDIS_REPLY_ERROR && rc == 0) {
            snprintf(errstr, errstr_size, "EVALSHA: %s", reply->str);
            /* NOSCRIPT: the server lost its scripts (SCRIPT FLUSH) on a
             * connection we kept; load it again before the retry. */
            if (strncmp(reply->str, "NOSCRIPT", 8) == 0) a->status_sha[0] = '\0';
            rc = -1;
        }
        freeReplyObject(reply);
    }
    *sent = n;
    return rc;
io_error:
    snprintf(errstr, errstr_size, "%s", a->redis->errstr);
    redis_drop(a);
    return -1;
}

/* Stage 3: the status of every request in Redis. The rows are committed, so
 * a retry only repeats SETs of identical values. */
static int stage_redis(app *a, batch *b) {
    int backoff = BACKOFF_MIN_MS;
    char errstr[256];
    for (;;) {
        size_t sent = 0;
        if ((a->redis || redis_connect(a, errstr, sizeof errstr) == 0) &&
            (a->status_sha[0] || redis_load_script(a, errstr, sizeof errstr) == 0) &&
            redis_set_statuses(a, b, &sent, errstr, sizeof errstr) == 0) {
            atomic_fetch_add(&m.statuses, sent);
            return 0;
        }
        atomic_fetch_add(&m.err_redis, 1);
        log_error("redis %s:%d: statuses of a batch of %zu not set: %s; retrying in %d ms", a->redis_host,
                  a->redis_port, b->nres, errstr, backoff);
        if (stopping) return -1;
        nap_ms(backoff, &stopping);
        backoff = backoff_next(backoff);
        if (stopping) return -1;
    }
}

/* Stage 4: the offsets. A failure here (the group rebalanced while we wrote)
 * costs a re-read by the next owner, never a loss: the writes are idempotent. */
static void stage_commit(app *a, batch *b) {
    rd_kafka_resp_err_t err = rd_kafka_commit(a->consumer, b->offsets, 0);
    if (err) {
        atomic_fetch_add(&m.err_kafka, 1);
        log_warn("committing offsets of a batch of %zu: %s (it will be re-read and rewritten)", b->n,
                 rd_kafka_err2str(err));
    }
}

/* The MySQL writer's thread: dead letters, then the batch's transaction, for
 * each batch in the order handed over. Owns a->db and the producer. */
static void *mysql_writer(void *arg) {
    app *a = arg;
    pipeline *p = &a->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->written == p->filled && !p->quit) pthread_cond_wait(&p->cv, &p->mu);
        if (p->written == p->filled) break;
        batch *b = &a->slots[p->written % NSLOT];
        bool skip = p->aborted;
        pthread_mutex_unlock(&p->mu);
        int rc = -1;
        if (!skip) {
            long long t = mono_us();
            rc = stage_dead_letters(a, b);
            stage_add(STAGE_DLQ, t);
            if (rc == 0) {
                t = mono_us();
                rc = stage_mysql(a, b);
                stage_add(STAGE_MYSQL, t);
            }
        }
        pthread_mutex_lock(&p->mu);
        /* Only a stop ends a stage unwritten; the status writer then drops
         * this batch and every later one, so no offset passes it. */
        if (rc) p->aborted = true;
        p->written++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* The status writer's thread: Redis statuses, then the offsets, for each
 * batch the MySQL writer committed, in order; then frees the slot. The
 * crash-safe order holds per batch (rows, statuses, offsets) and across
 * batches (offsets are committed in batch order). Owns a->redis; commits
 * through the consumer handle, which librdkafka lets any thread use. */
static void *status_writer(void *arg) {
    app *a = arg;
    pipeline *p = &a->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->done == p->written && !(p->quit && p->written == p->filled)) pthread_cond_wait(&p->cv, &p->mu);
        if (p->done == p->written) break;
        batch *b = &a->slots[p->done % NSLOT];
        bool skip = p->aborted;
        pthread_mutex_unlock(&p->mu);
        int rc = -1;
        if (!skip) {
            long long t = mono_us();
            rc = stage_redis(a, b);
            stage_add(STAGE_REDIS, t);
        }
        if (rc == 0) {
            long long t = mono_us();
            stage_commit(a, b);
            stage_add(STAGE_OFFSETS, t);
            atomic_fetch_add(&m.batches, 1);
            batch_clear(b);
        } else {
            batch_drop(b, "stopping before it was written");
        }
        pthread_mutex_lock(&p->mu);
        if (rc) p->aborted = true;
        p->done++;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Main thread: renders the filled batch's statuses (CPU work kept off the
 * writers) and hands it to the MySQL writer, then waits until the next slot
 * is free, which is the pipeline's backpressure. */
static void batch_handoff(app *a) {
    batch *b = batch_filling(a);
    if (b->n == 0) return;
    char errstr[256];
    long long t = mono_us();
    if (render_statuses(b, errstr, sizeof errstr) != 0) log_warn("%s; the MySQL writer retries", errstr);
    stage_add(STAGE_RENDER, t);
    t = mono_us();
    pipeline *p = &a->p;
    pthread_mutex_lock(&p->mu);
    p->filled++;
    pthread_cond_broadcast(&p->cv);
    while (p->filled - p->done >= NSLOT) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    stage_add(STAGE_HANDOFF, t);
}

/* Main thread: true when the MySQL writer has nothing left to write. */
static bool mysql_writer_idle(app *a) {
    pthread_mutex_lock(&a->p.mu);
    bool idle = a->p.written == a->p.filled;
    pthread_mutex_unlock(&a->p.mu);
    return idle;
}

/* Main thread: waits until every batch handed over is through. */
static void pipeline_drain(app *a) {
    pipeline *p = &a->p;
    pthread_mutex_lock(&p->mu);
    while (p->done != p->filled) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ---- Kafka ---------------------------------------------------------- */

/* Served inside rd_kafka_consumer_poll() on the main thread. */
/* The committed offsets of newly assigned partitions, where reading must
 * resume. Without one (a new group) nothing is expected yet. */
static void expect_committed(app *a, rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts) {
    for (int i = 0; i < MAX_RESULT_PARTITIONS; i++) a->next[i] = -1;
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    if (!c) return;
    rd_kafka_resp_err_t err = rd_kafka_committed(rk, c, 10000);
    if (err)
        log_warn("reading committed offsets: %s (gaps in promo.results go unnoticed until the next message)",
                 rd_kafka_err2str(err));
    else
        for (int i = 0; i < c->cnt; i++)
            if (c->elems[i].partition >= 0 && c->elems[i].partition < MAX_RESULT_PARTITIONS && c->elems[i].offset >= 0)
                a->next[c->elems[i].partition] = c->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(c);
}

/* promo.results is written without transactions and never compacted, so its
 * offsets have no holes: a message past the expected offset means the broker
 * deleted results (retention shorter than the sink's lag, or the dev broker's
 * 5 MiB per partition) before we read them. librdkafka's
 * auto.offset.reset=earliest moves on without a word, so say it here: MySQL
 * will never hold those outcomes, and nothing in Kafka can bring them back. */
static void expect_check(app *a, const rd_kafka_message_t *msg) {
    int32_t p = msg->partition;
    if (p < 0 || p >= MAX_RESULT_PARTITIONS) return;
    if (a->next[p] >= 0 && msg->offset > a->next[p]) {
        long long lost = (long long)(msg->offset - a->next[p]);
        atomic_fetch_add(&m.skipped, (unsigned long long)lost);
        log_error("%s[%d]: offsets %lld..%lld were deleted before the sink read them: MySQL misses those %lld "
                  "results (retention shorter than the sink's lag?)",
                  TOPIC_RESULTS, (int)p, (long long)a->next[p], (long long)msg->offset - 1, lost);
    }
    a->next[p] = msg->offset + 1;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    app *a = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_info("assigned %d partitions", parts->cnt);
        expect_committed(a, rk, parts);
        rd_kafka_assign(rk, parts);
    } else {
        log_info("revoked %d partitions", parts->cnt);
        /* Batches already handed over finish first, so their offsets are
         * committed while this member still owns the partitions; the one
         * being collected is left to the next owner. */
        pipeline_drain(a);
        batch_drop(batch_filling(a), "partitions revoked");
        rd_kafka_assign(rk, NULL);
    }
}

static rd_kafka_t *consumer_new(app *a, const char *bootstrap) {
    char errstr[512];
    kafka_conf kc;
    kafka_conf_consumer(&kc, bootstrap, PROGRAM, cfg_str("PROMO_SINK_GROUP", PROGRAM), on_rebalance, a);
    kafka_conf_set(&kc, "auto.offset.reset", "earliest");
    rd_kafka_t *rk = kafka_conf_new_consumer(&kc, TOPIC_RESULTS, errstr, sizeof errstr);
    if (!rk) log_error("kafka consumer: %s", errstr);
    return rk;
}

static rd_kafka_t *producer_new(const char *bootstrap) {
    char errstr[512];
    kafka_conf kc;
    kafka_conf_producer(&kc, bootstrap, PROGRAM);
    kafka_conf_set(&kc, "linger.ms", "5");
    rd_kafka_conf_set_dr_msg_cb(kc.conf, dlq_delivered);
    rd_kafka_t *rk = kafka_conf_new_client(&kc, RD_KAFKA_PRODUCER, errstr, sizeof errstr);
    if (!rk) log_error("kafka producer: %s", errstr);
    return rk;
}

/* ---- start and run -------------------------------------------------- */

/* Waits for MySQL, then brings its schema up to date. Returns 0, or -1 when
 * stopped first. */
static int mysql_start(app *a) {
    sink_mysql_cfg cfg = {
        .host = cfg_str("PROMO_MYSQL_HOST", "127.0.0.1"),
        .port = (int)cfg_int("PROMO_MYSQL_PORT", 3306),
        .user = cfg_str("PROMO_MYSQL_USER", "promo"),
        .password = cfg_secret("PROMO_MYSQL_PASSWORD", "promo"),
        .db = cfg_str("PROMO_MYSQL_DB", "promo"),
    };
    const char *dir = cfg_str("PROMO_MIGRATIONS_DIR", "sinks/migrations");
    char errstr[512];
    int backoff = BACKOFF_MIN_MS;
    while (!stopping) {
        if (!a->db) a->db = sink_mysql_new(&cfg, errstr, sizeof errstr);
        if (a->db && sink_mysql_migrate(a->db, dir, errstr, sizeof errstr) == 0) {
            atomic_store(&m.mysql_up, 1);
            return 0;
        }
        log_error("mysql not ready: %s; retrying in %d ms", errstr, backoff);
        if (a->db) {
            sink_mysql_destroy(a->db);
            a->db = NULL;
        }
        nap_ms(backoff, &stopping);
        backoff = backoff_next(backoff);
    }
    return -1;
}

static void run(app *a) {
    while (!stopping) {
        coverage_flush_tick();
        batch *b = batch_filling(a);
        int timeout = 200;
        if (b->n) {
            int64_t left = b->first_ms + a->linger_ms - mono_ms();
            /* Past its linger, a batch waits only for the MySQL writer:
             * look again soon, without spinning. */
            timeout = left > 0 ? (int)left : mysql_writer_idle(a) ? 0 : 5;
        }
        long long t = mono_us();
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(a->consumer, timeout);
        if (msg) {
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                /* nothing: the end of a partition for now */
            } else if (msg->err) {
                atomic_fetch_add(&m.err_kafka, 1);
                log_warn("kafka: %s", rd_kafka_message_errstr(msg));
                if (msg->err == RD_KAFKA_RESP_ERR__FATAL) {
                    rd_kafka_message_destroy(msg);
                    fatal = 1;
                    stopping = 1;
                    break;
                }
            } else if (expect_check(a, msg), batch_add(a, msg) != 0) {
                /* Dropping the batch but keeping the partitions would skip
                 * it; stopping unassigned re-reads it on the next start. */
                log_error("cannot hold message %s[%d]@%lld; stopping", rd_kafka_topic_name(msg->rkt),
                          (int)msg->partition, (long long)msg->offset);
                fatal = 1;
                stopping = 1;
            }
            rd_kafka_message_destroy(msg);
        }
        stage_add(STAGE_CONSUME, t);
        /* Linger bounds a batch's wait while the MySQL writer is idle; while
         * it is busy the batch could not start sooner anyway, so it keeps
         * growing (fewer, larger transactions) until full or the writer is
         * free. */
        if (b->n && (b->n >= b->max || (mono_ms() - b->first_ms >= a->linger_ms && mysql_writer_idle(a))))
            batch_handoff(a);
    }
    /* A collected batch is written if that works at once; otherwise dropped. */
    batch_handoff(a);
}

int main(void) {
    log_init(PROGRAM);
    signals_on_stop(&stopping);

    app a;
    memset(&a, 0, sizeof a);
    int status = 1;
    ops *http = NULL;
    char errstr[512], bootstrap[1024];
    a.redis_host = cfg_str("PROMO_REDIS_HOST", "127.0.0.1");
    a.redis_port = (int)cfg_int("PROMO_REDIS_PORT", 6379);
    a.status_ttl_s = cfg_int("PROMO_STATUS_TTL_S", 86400);
    if (a.status_ttl_s < 1) a.status_ttl_s = 86400;
    a.linger_ms = (int)cfg_int("PROMO_SINK_LINGER_MS", 20);
    if (a.linger_ms < 0) a.linger_ms = 0;
    /* 5000: a backlog drained about a fifth faster than with 2000 (fewer
     * transactions, commits and round trips per result); each of the NSLOT
     * slots then holds up to 5000 decoded results (some 21 MB). */
    long long max = cfg_int("PROMO_SINK_BATCH", 5000);
    for (int i = 0; i < NSLOT; i++) {
        batch *b = &a.slots[i];
        b->max = max < 1 ? 1 : max > 100000 ? 100000 : (size_t)max;
        b->res = calloc(b->max, sizeof *b->res);
        b->json = calloc(b->max, sizeof *b->json);
        b->dead = calloc(b->max, sizeof *b->dead);
        if (!b->res || !b->json || !b->dead) {
            log_error("out of memory for a batch of %zu", b->max);
            goto out;
        }
    }
    pthread_mutex_init(&a.p.mu, NULL);
    pthread_cond_init(&a.p.cv, NULL);
    if (!(a.codec = codec_new(errstr, sizeof errstr))) {
        log_error("codec: %s", errstr);
        goto out;
    }
    ops_handlers handlers = {.metrics = write_metrics, .not_ready = not_ready};
    if (ops_start(&handlers, &http, errstr, sizeof errstr) != 0) {
        log_error("%s", errstr);
        goto out;
    }
    if (mysql_start(&a) != 0) goto stopped;
    if (kafka_wait_bootstrap(bootstrap, sizeof bootstrap, &stopping) != 0) goto stopped;
    if (!(a.producer = producer_new(bootstrap)) || !(a.consumer = consumer_new(&a, bootstrap))) goto out;
    log_info("consuming %s as group %s (batch %zu, linger %d ms)", TOPIC_RESULTS, cfg_str("PROMO_SINK_GROUP", PROGRAM),
             a.slots[0].max, a.linger_ms);
    pthread_t writers[2];
    int nwriters = 0;
    if (pthread_create(&writers[0], NULL, mysql_writer, &a) != 0) goto out;
    nwriters++;
    if (pthread_create(&writers[1], NULL, status_writer, &a) != 0) goto stop_writers;
    nwriters++;
    atomic_store(&m.ready, 1);
    run(&a);
stop_writers:
    /* Everything handed over is written (or, when a stage fails while
     * stopping, dropped) before the consumer closes. */
    pthread_mutex_lock(&a.p.mu);
    a.p.quit = true;
    pthread_cond_broadcast(&a.p.cv);
    pthread_mutex_unlock(&a.p.mu);
    for (int i = 0; i < nwriters; i++) pthread_join(writers[i], NULL);
    if (nwriters < 2) goto out;
stopped:
    log_info("stopping");
    status = fatal;
out:
    if (a.consumer) {
        /* Commits nothing: auto commit is off and every written batch has
         * been committed already. */
        rd_kafka_consumer_close(a.consumer);
        rd_kafka_destroy(a.consumer);
    }
    if (a.producer) {
        rd_kafka_flush(a.producer, 5000);
        rd_kafka_destroy(a.producer);
    }
    ops_stop(http);
    for (int i = 0; i < NSLOT; i++) {
        batch_clear(&a.slots[i]);
        free(a.slots[i].res);
        free(a.slots[i].json);
        free(a.slots[i].dead);
    }
    redis_drop(&a);
    sink_mysql_destroy(a.db);
    if (a.codec) codec_destroy(a.codec);
    return status;
}
