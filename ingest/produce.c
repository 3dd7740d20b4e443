/* produce.c — one idempotent librdkafka producer shared by all CivetWeb
 * workers, the per-partition gates that batch their messages, and the
 * hand-off of delivery reports back to them.
 *
 * Flow of one write: a worker calls produce_send() with a waiter (mutex,
 * condition variable, done flag) on its own stack as the message's opaque,
 * and sleeps on it. The poll thread, the only caller of rd_kafka_poll(), runs
 * dr_msg_cb() for that message, records the error and signals the waiter.
 * librdkafka reports every message it accepted exactly once, within
 * message.timeout.ms, so the worker always wakes and its stack stays valid
 * until the callback is done with it. The payload is passed without copying
 * for the same reason: the worker's buffer outlives the message.
 *
 * Gates (group commit per partition). An idempotent librdkafka 2.0.2
 * producer stops building requests for a partition once five of its
 * *messages* are in flight (RD_KAFKA_IDEMP_MAX_INFLIGHT, compared with a
 * message count), so a hot partition has one batch in flight at a time
 * whatever the settings. Worse, while that batch waits for its ack, the
 * messages behind it are past linger.ms and "ready", and the broker thread
 * polls its socket with a zero timeout until the ack comes: a busy loop that
 * cost ingest more CPU than its own request handling under a stampede. So
 * ingest keeps that one-batch-in-flight rule itself, and sleeps instead of
 * spinning: a gate per partition lets a message through to librdkafka only
 * while none of ours is in flight there; the others wait in the gate, and the
 * delivery report that empties the partition releases all of them at once
 * (rd_kafka_produce_batch), which librdkafka sends as one request. The batch
 * a partition sends is then everything that arrived during one round trip,
 * as large as the load makes it, with no linger to tune and no idle CPU.
 *
 * The gate's partition is computed here with the murmur2 partitioner on the
 * partition count librdkafka last reported to the partitioner callback; the
 * partition a message is written to is still chosen by librdkafka with its
 * current metadata. A stale count (partitions added) only groups messages by
 * the wrong partition for a moment; it never sends one to the wrong one.
 * Until the first callback reports a count, messages pass ungated.
 *
 * A message held in a gate waits at most for the batch ahead of it. When that
 * batch fails for a reason that concerns the whole partition (timed out,
 * fatal producer error), the held messages fail with it instead of waiting a
 * second message timeout; and one held longer than the message timeout is
 * failed when released, so a write waits for Kafka less than twice
 * PROMO_PRODUCE_TIMEOUT_MS in the worst case and one round trip more than
 * without the gate at most.
 *
 * Settings follow the fleet's producer rules (common/kafka.h): acks=all and
 * enable.idempotence so a retried batch is never written twice, and
 * murmur2_random so a key lands on the partition the Java client would pick
 * for it, whichever producer wrote it.
 */
#include "produce.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "latch.h"
#include "topics.h"
#include "util.h"

/* Gates per topic; partition p uses gate p % GATES. More partitions than
 * gates only makes two partitions share one batch in flight. */
#define GATES 256
/* Messages handed to rd_kafka_produce_batch() in one call. */
#define RELEASE_CHUNK 64

typedef struct waiter waiter;

typedef struct gate {
    pthread_mutex_t mu;
    rd_kafka_topic_t *rkt; /* borrowed from struct produce */
    int busy;              /* our messages in librdkafka, not yet reported */
    waiter *head, *tail;   /* held, oldest first */
} gate;

typedef struct topic {
    rd_kafka_topic_t *rkt;
    /* What the partitioner callback last saw; 0 = not yet known. */
    atomic_int partition_cnt;
    gate gates[GATES];
} topic;

struct produce {
    rd_kafka_t *rk;
    topic topics[3]; /* by promo_domain */
    int timeout_ms;
    pthread_t poller;
    atomic_bool stop;
    bool poller_started;
    bool gates_init;
};

struct waiter {
    latch *done; /* the worker's; counted down once, with err set, at the report */
    rd_kafka_resp_err_t err;
    /* The message, for a gate that holds it. */
    gate *gate; /* NULL: sent ungated */
    waiter *next;
    const void *value;
    size_t value_len;
    const char *key;
    int64_t held_at_ms;
};

const char *produce_topic(promo_domain d) {
    const char *t = topic_cmd(d);
    return t ? t : "promo.unknown.cmd";
}

/* Counts the worker's latch down for w; w may be gone once this returns. */
static void waiter_finish(waiter *w, rd_kafka_resp_err_t err) {
    w->err = err;
    latch_count_down(w->done);
}

/* Errors after which the partition is unlikely to take the next batch within
 * a message timeout either: the messages held behind it fail at once. */
static bool err_blocks_partition(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT || err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
           err == RD_KAFKA_RESP_ERR__FATAL;
}

/* Records that n of g's messages were reported (err: how the last went)
 * and, when none is left in flight, sends everything held as one batch.
 * Runs on the poll thread, or on a worker whose produce call failed. */
static void gate_done(produce *p, gate *g, int n, rd_kafka_resp_err_t err) {
    while (n > 0) {
        pthread_mutex_lock(&g->mu);
        g->busy -= n;
        n = 0;
        waiter *held = NULL;
        if (g->busy == 0 && g->head) {
            held = g->head;
            g->head = g->tail = NULL;
            for (waiter *w = held; w; w = w->next) g->busy++;
        }
        pthread_mutex_unlock(&g->mu);
        if (!held) return;

        /* Everything taken from the gate now counts as in flight; what fails
         * before reaching librdkafka is given back through n, which may
         * release what was held meanwhile. */
        int64_t now = mono_ms();
        rd_kafka_message_t batch[RELEASE_CHUNK];
        waiter *chunk[RELEASE_CHUNK];
        int k = 0;
        waiter *w = held;
        while (w) {
            waiter *next = w->next;
            if (err_blocks_partition(err) || now - w->held_at_ms >= p->timeout_ms) {
                waiter_finish(w, err_blocks_partition(err) ? err : RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);
                n++;
            } else {
                batch[k] = (rd_kafka_message_t){
                    .payload = (void *)w->value,
                    .len = w->value_len,
                    .key = (void *)w->key,
                    .key_len = strlen(w->key),
                    ._private = w,
                };
                chunk[k++] = w;
            }
            if (k == RELEASE_CHUNK || (!next && k > 0)) {
                /* No copy flag: each payload stays valid until its report. */
                if (rd_kafka_produce_batch(g->rkt, RD_KAFKA_PARTITION_UA, 0, batch, k) != k) {
                    for (int i = 0; i < k; i++) {
                        if (!batch[i].err) continue;
                        waiter_finish(chunk[i], batch[i].err);
                        n++;
                    }
                }
                k = 0;
            }
            w = next;
        }
        err = RD_KAFKA_RESP_ERR_NO_ERROR;
    }
}

/* Runs on the poll thread (or in rd_kafka_flush()). */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    produce *p = opaque;
    waiter *w = m->_private;
    if (!w) return;
    gate *g = w->gate; /* read before the worker may return */
    waiter_finish(w, m->err);
    if (g) gate_done(p, g, 1, m->err);
}

/* Runs wherever librdkafka partitions a message: in rd_kafka_produce*() on
 * the calling thread, or on librdkafka's own thread for messages that waited
 * for metadata. Records the partition count for the gates. */
static int32_t partitioner_cb(const rd_kafka_topic_t *rkt, const void *key, size_t keylen, int32_t partition_cnt,
                              void *rkt_opaque, void *msg_opaque) {
    topic *t = rkt_opaque;
    if (atomic_load_explicit(&t->partition_cnt, memory_order_relaxed) != partition_cnt)
        atomic_store_explicit(&t->partition_cnt, partition_cnt, memory_order_relaxed);
    return rd_kafka_msg_partitioner_murmur2_random(rkt, key, keylen, partition_cnt, NULL, msg_opaque);
}

/* Runs on the poll thread. Transport errors come and go with the brokers and
 * are retried by librdkafka; a fatal error (idempotence broken) makes every
 * later send fail, and readyz reports it. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        log_error("kafka fatal error %s: %s", rd_kafka_err2name(orig), why);
        return;
    }
    log_warn("kafka %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* error_cb already reports what librdkafka logs as FAIL. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    if (strcmp(fac, "FAIL") == 0) return;
    if (level <= 3)
        log_error("kafka %s: %s", fac, buf);
    else if (level <= 4)
        log_warn("kafka %s: %s", fac, buf);
}

static void *poll_main(void *arg) {
    produce *p = arg;
    pthread_setname_np(pthread_self(), "ingest-kpoll"); /* for top and perf */
    while (!atomic_load(&p->stop)) rd_kafka_poll(p->rk, 100);
    return NULL;
}

produce *produce_new(const char *bootstrap, int timeout_ms, char *errstr, size_t errstr_size) {
    produce *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    p->timeout_ms = timeout_ms;
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < GATES; i++) pthread_mutex_init(&p->topics[d].gates[i].mu, NULL);
    p->gates_init = true;
    char timeout[24];
    snprintf(timeout, sizeof timeout, "%d", timeout_ms);
    kafka_conf kc;
    kafka_conf_producer(&kc, bootstrap, "promo-ingest");
    /* With a batch in flight per partition (see the gates above), a
     * released batch is all there: linger.ms only has to outlast
     * rd_kafka_produce_batch() handing it over, so that it leaves as one
     * request. */
    kafka_conf_set(&kc, "linger.ms", "1");
    /* A request for another partition written while one is unacked
     * must not wait for the broker's ACK (delayed up to 40 ms). */
    kafka_conf_set(&kc, "socket.nagle.disable", "true");
    /* A batch of commands shrinks by a third (84 -> 55 bytes a command
     * on the wire under the flash-coupon load; request ids are random),
     * and the dev broker, which keeps 5 MiB of batches per partition as
     * received, then holds half again as many commands for a processor
     * that falls behind. No CPU cost showed in the profile. */
    kafka_conf_set(&kc, "compression.type", "lz4");
    kafka_conf_set(&kc, "message.timeout.ms", timeout);
    /* Keep failures of a down cluster short so 503s come quickly. */
    kafka_conf_set(&kc, "socket.connection.setup.timeout.ms", "3000");
    rd_kafka_conf_set_opaque(kc.conf, p);
    rd_kafka_conf_set_dr_msg_cb(kc.conf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(kc.conf, error_cb);
    rd_kafka_conf_set_log_cb(kc.conf, log_cb);
    p->rk = kafka_conf_new_client(&kc, RD_KAFKA_PRODUCER, errstr, errstr_size);
    if (!p->rk) goto fail;
    for (int d = 0; d < 3; d++) {
        topic *t = &p->topics[d];
        /* A copy of the defaults set above (acks, message.timeout.ms and
         * the partitioner are topic settings): a fresh topic conf would
         * silently drop them. */
        rd_kafka_topic_conf_t *tconf = rd_kafka_default_topic_conf_dup(p->rk);
        if (!tconf) {
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
        rd_kafka_topic_conf_set_opaque(tconf, t);
        rd_kafka_topic_conf_set_partitioner_cb(tconf, partitioner_cb);
        t->rkt = rd_kafka_topic_new(p->rk, topic_cmd((promo_domain)d), tconf); /* takes tconf, also on failure */
        if (!t->rkt) {
            snprintf(errstr, errstr_size, "topic %s: %s", topic_cmd((promo_domain)d),
                     rd_kafka_err2str(rd_kafka_last_error()));
            goto fail;
        }
        for (int i = 0; i < GATES; i++) t->gates[i].rkt = t->rkt;
    }
    if (pthread_create(&p->poller, NULL, poll_main, p) != 0) {
        snprintf(errstr, errstr_size, "cannot start the kafka poll thread");
        goto fail;
    }
    p->poller_started = true;
    return p;
fail:
    produce_destroy(p);
    return NULL;
}

void produce_destroy(produce *p) {
    if (!p) return;
    if (p->rk) {
        /* Flush while the poll thread still runs the callbacks: every report
         * must reach its waiter before the handle goes. No message is held
         * in a gate: its worker would still be waiting. */
        rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, 10000);
        if (err)
            log_warn("kafka flush: %s; %d messages not delivered", rd_kafka_err2str(err), rd_kafka_outq_len(p->rk));
    }
    if (p->poller_started) {
        atomic_store(&p->stop, true);
        pthread_join(p->poller, NULL);
    }
    for (int d = 0; d < 3; d++) {
        if (p->topics[d].rkt) rd_kafka_topic_destroy(p->topics[d].rkt);
        if (p->gates_init)
            for (int i = 0; i < GATES; i++) pthread_mutex_destroy(&p->topics[d].gates[i].mu);
    }
    if (p->rk) rd_kafka_destroy(p->rk);
    free(p);
}

int produce_send(produce *p, promo_domain d, const char *key, const void *value, size_t value_len, latch *also,
                 char *errstr, size_t errstr_size) {
    latch own;
    if (!also) latch_init(&own, 1);
    waiter w = {.done = also ? also : &own, .value = value, .value_len = value_len, .key = key};
    if (d < DOMAIN_COUPON || d > DOMAIN_TIMESALE) {
        waiter_finish(&w, RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC);
        latch_wait(w.done);
        snprintf(errstr, errstr_size, "unknown domain");
        return -1;
    }
    topic *t = &p->topics[d];
    size_t key_len = strlen(key);

    int cnt = atomic_load_explicit(&t->partition_cnt, memory_order_relaxed);
    if (cnt > 0) {
        /* Every key is a non-empty id, so murmur2_random is plain murmur2. */
        int32_t part = rd_kafka_msg_partitioner_murmur2(t->rkt, key, key_len, cnt, NULL, NULL);
        w.gate = &t->gates[part % GATES];
        pthread_mutex_lock(&w.gate->mu);
        bool hold = w.gate->busy > 0;
        if (hold) {
            w.held_at_ms = mono_ms();
            if (w.gate->tail)
                w.gate->tail->next = &w;
            else
                w.gate->head = &w;
            w.gate->tail = &w;
        } else {
            w.gate->busy = 1;
        }
        pthread_mutex_unlock(&w.gate->mu);
        if (hold) goto wait; /* the report that empties the gate sends it */
    }
    /* No copy flag: value stays valid until the report, which we wait for. */
    if (rd_kafka_produce(t->rkt, RD_KAFKA_PARTITION_UA, 0, (void *)value, value_len, key, key_len, &w) != 0) {
        rd_kafka_resp_err_t err = rd_kafka_last_error();
        snprintf(errstr, errstr_size, "%s",
                 err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? "producer queue is full" : rd_kafka_err2str(err));
        gate *g = w.gate;
        waiter_finish(&w, err);
        if (g) gate_done(p, g, 1, err);
        latch_wait(w.done);
        return -1;
    }
wait:
    latch_wait(w.done);
    if (w.err) {
        snprintf(errstr, errstr_size, "%s", rd_kafka_err2str(w.err));
        return -1;
    }
    return 0;
}

int produce_ready(produce *p, int timeout_ms, char *errstr, size_t errstr_size) {
    char why[256];
    if (rd_kafka_fatal_error(p->rk, why, sizeof why)) {
        snprintf(errstr, errstr_size, "producer fatal error: %s", why);
        return -1;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms);
    if (err) {
        snprintf(errstr, errstr_size, "kafka metadata: %s", rd_kafka_err2str(err));
        return -1;
    }
    int rc = 0;
    if (md->broker_cnt == 0) {
        snprintf(errstr, errstr_size, "kafka metadata lists no brokers");
        rc = -1;
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}
