/* produce.c — one idempotent librdkafka producer shared by all CivetWeb
 * workers, and the hand-off of delivery reports back to them.
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
 * Settings follow DESIGN.md §3: acks=all and enable.idempotence so a retried
 * batch is never written twice, and murmur2_random so a key lands on the
 * partition the Java client would pick for it, whichever producer wrote it.
 */
#include "produce.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct produce {
    rd_kafka_t *rk;
    rd_kafka_topic_t *topics[3]; /* by promo_domain */
    pthread_t poller;
    atomic_bool stop;
    bool poller_started;
};

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    rd_kafka_resp_err_t err;
} waiter;

static const char *const topic_names[3] = {"promo.coupon.cmd", "promo.point.cmd", "promo.timesale.cmd"};

const char *produce_topic(promo_domain d) {
    return (d >= DOMAIN_COUPON && d <= DOMAIN_TIMESALE) ? topic_names[d] : "promo.unknown.cmd";
}

/* Runs on the poll thread. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk, (void)opaque;
    waiter *w = m->_private;
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->err = m->err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
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
    while (!atomic_load(&p->stop)) rd_kafka_poll(p->rk, 100);
    return NULL;
}

produce *produce_new(const char *bootstrap, int timeout_ms, char *errstr, size_t errstr_size) {
    produce *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char timeout[24];
    snprintf(timeout, sizeof timeout, "%d", timeout_ms);
    const char *settings[][2] = {
        {"bootstrap.servers", bootstrap},
        {"client.id", "promo-ingest"},
        {"acks", "all"},
        {"enable.idempotence", "true"},
        {"partitioner", "murmur2_random"},
        {"linger.ms", "1"},
        {"max.in.flight.requests.per.connection", cfg_kafka_max_in_flight()},
        {"message.timeout.ms", timeout},
        /* Keep failures of a down cluster short so 503s come quickly. */
        {"socket.connection.setup.timeout.ms", "3000"},
    };
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], errstr, errstr_size) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    for (int d = 0; d < 3; d++) {
        p->topics[d] = rd_kafka_topic_new(p->rk, topic_names[d], NULL);
        if (!p->topics[d]) {
            snprintf(errstr, errstr_size, "topic %s: %s", topic_names[d], rd_kafka_err2str(rd_kafka_last_error()));
            goto fail;
        }
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
         * must reach its waiter before the handle goes. */
        rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, 10000);
        if (err)
            log_warn("kafka flush: %s; %d messages not delivered", rd_kafka_err2str(err), rd_kafka_outq_len(p->rk));
    }
    if (p->poller_started) {
        atomic_store(&p->stop, true);
        pthread_join(p->poller, NULL);
    }
    for (int d = 0; d < 3; d++)
        if (p->topics[d]) rd_kafka_topic_destroy(p->topics[d]);
    if (p->rk) rd_kafka_destroy(p->rk);
    free(p);
}

int produce_send(produce *p, promo_domain d, const char *key, const void *value, size_t value_len, char *errstr,
                 size_t errstr_size) {
    if (d < DOMAIN_COUPON || d > DOMAIN_TIMESALE) {
        snprintf(errstr, errstr_size, "unknown domain");
        return -1;
    }
    waiter w = {.done = false, .err = RD_KAFKA_RESP_ERR_NO_ERROR};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = -1;
    /* No copy flag: value stays valid until the report, which we wait for. */
    if (rd_kafka_produce(p->topics[d], RD_KAFKA_PARTITION_UA, 0, (void *)value, value_len, key, strlen(key), &w) != 0) {
        rd_kafka_resp_err_t err = rd_kafka_last_error();
        snprintf(errstr, errstr_size, "%s",
                 err == RD_KAFKA_RESP_ERR__QUEUE_FULL ? "producer queue is full" : rd_kafka_err2str(err));
        goto out;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (w.err) {
        snprintf(errstr, errstr_size, "%s", rd_kafka_err2str(w.err));
        goto out;
    }
    rc = 0;
out:
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
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
