/* webhook_main.c — promo-webhook: signed callbacks for results that asked for
 * one, with retries that survive restarts.
 *
 * Two threads, which meet only in MySQL, in a wake-up call and in atomic
 * counters:
 *
 *   main thread      consumes promo.results (group promo-webhook), and for
 *                    each result with a callback_url records a PENDING
 *                    delivery "msg_<request_id>" (webhook_store_enqueue).
 *                    Crash-safe order: the batch's rows are committed in
 *                    MySQL, then its offsets in Kafka — never the other way,
 *                    so a crash re-reads a batch (recording it again changes
 *                    nothing) and never skips one.
 *   delivery thread  claims due rows (webhook_store_claim), POSTs them over
 *                    libcurl (webhook_sender_*), and writes each attempt and
 *                    the delivery's next state (webhook_store_finish): 2xx is
 *                    DELIVERED, anything else is retried by the schedule
 *                    (PROMO_WEBHOOK_SCHEDULE, Retry-After honoured when
 *                    longer) until it is exhausted (FAILED). The host is
 *                    checked against PROMO_WEBHOOK_ALLOW before every send;
 *                    a host not allowed is FAILED with NOT_ALLOWED, unsent.
 *
 * Everything a delivery needs lives in its row, so a restarted dispatcher
 * (or another one beside it) just picks up the rows that are due. CivetWeb
 * workers serve /metrics, /healthz and /readyz from the atomic counters. SIGTERM: stop
 * consuming, start nothing new, let the transfers in flight finish and record
 * them, exit.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>
#include <mysql.h>

#include "codec.h"
#include "kafka.h"
#include "ops.h"
#include "result_json.h"
#include "sink_mysql.h"
#include "topics.h"
#include "util.h"
#include "webhook.h"
#include "webhook_sign.h"

#define PROGRAM "promo-webhook"
#define DEFAULT_SCHEDULE "0,5s,5m,30m,2h,5h,10h,10h"
#define DEFAULT_SECRET "dev-webhook-secret"
#define DEFAULT_ALLOW "127.0.0.1,localhost"
#define BATCH_MAX 500
#define IN_FLIGHT_MAX 1024

static volatile sig_atomic_t stopping;
static int fatal; /* the consumer cannot go on: exit nonzero */

/* ---- configuration -------------------------------------------------- */

typedef struct config {
    webhook_schedule schedule;
    uint8_t key[WEBHOOK_KEY_MAX], key2[WEBHOOK_KEY_MAX];
    size_t key_len, key2_len; /* key2_len 0: no rotation under way */
    const char *allow;
    int timeout_ms;
    int connect_timeout_ms;
    int64_t lease_ms;
    int poll_ms;
    size_t concurrency;
    int linger_ms;
    webhook_store_cfg db;
} config;

static long long clamp(long long v, long long lo, long long hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

static int config_load(config *c) {
    char errstr[256];
    memset(c, 0, sizeof *c);
    const char *sched = cfg_str("PROMO_WEBHOOK_SCHEDULE", DEFAULT_SCHEDULE);
    if (webhook_schedule_parse(sched, &c->schedule, errstr, sizeof errstr) != 0) {
        log_error("PROMO_WEBHOOK_SCHEDULE: %s", errstr);
        return -1;
    }
    /* One secret, or two separated by blanks while a rotation is under
     * way (the new one first): every delivery is then signed with both. */
    char secrets[2 * 1500];
    snprintf(secrets, sizeof secrets, "%s", cfg_secret("PROMO_WEBHOOK_SECRET", DEFAULT_SECRET));
    char *save = NULL, *first = strtok_r(secrets, " \t", &save), *second = strtok_r(NULL, " \t", &save);
    if (!first || strtok_r(NULL, " \t", &save)) {
        log_error("PROMO_WEBHOOK_SECRET: one secret, or two separated by a blank during a rotation");
        return -1;
    }
    if (webhook_sign_key(first, c->key, sizeof c->key, &c->key_len, errstr, sizeof errstr) != 0 ||
        (second && webhook_sign_key(second, c->key2, sizeof c->key2, &c->key2_len, errstr, sizeof errstr) != 0)) {
        log_error("PROMO_WEBHOOK_SECRET: %s", errstr);
        return -1;
    }
    c->allow = cfg_str("PROMO_WEBHOOK_ALLOW", DEFAULT_ALLOW);
    c->timeout_ms = (int)clamp(cfg_int("PROMO_WEBHOOK_TIMEOUT_MS", 5000), 100, 600000);
    c->connect_timeout_ms = (int)clamp(cfg_int("PROMO_WEBHOOK_CONNECT_TIMEOUT_MS", 2000), 100, c->timeout_ms);
    /* Long enough that a live dispatcher always finishes before its lease
     * ends; short enough that a dead one's rows come back soon. */
    c->lease_ms =
        clamp(cfg_int("PROMO_WEBHOOK_LEASE_MS", c->timeout_ms + 10000), c->timeout_ms + 1000, 24LL * 3600 * 1000);
    c->poll_ms = (int)clamp(cfg_int("PROMO_WEBHOOK_POLL_MS", 200), 10, 60000);
    c->concurrency = (size_t)clamp(cfg_int("PROMO_WEBHOOK_CONCURRENCY", 32), 1, IN_FLIGHT_MAX);
    c->linger_ms = (int)clamp(cfg_int("PROMO_WEBHOOK_LINGER_MS", 20), 0, 10000);
    c->db.host = cfg_str("PROMO_MYSQL_HOST", "127.0.0.1");
    c->db.port = (int)cfg_int("PROMO_MYSQL_PORT", 3306);
    c->db.user = cfg_str("PROMO_MYSQL_USER", "promo");
    c->db.password = cfg_secret("PROMO_MYSQL_PASSWORD", "promo");
    c->db.db = cfg_str("PROMO_MYSQL_DB", "promo");
    return 0;
}

/* ---- metrics -------------------------------------------------------- */

static const double latency_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

/* Written by the two threads, read by CivetWeb workers. */
static struct {
    atomic_ullong results, undecodable, enqueued;
    atomic_ullong delivered, failed, not_allowed;
    atomic_ullong att_ok, att_http, att_network, retries;
    atomic_ullong err_mysql, err_kafka, lost_claims;
    prom_hist latency;
    atomic_int in_flight, mysql_up;
    atomic_int ready; /* schema migrated, delivery thread running, consumer subscribed */
} m = {.latency = {.le = latency_buckets, .n = sizeof latency_buckets / sizeof latency_buckets[0]}};

static void metrics_latency(int64_t ms) {
    prom_hist_observe(&m.latency, (double)ms / 1000.0);
}

/* CivetWeb worker thread (ops.c). */
static void write_metrics(prom *p, void *arg) {
    (void)arg;
    prom_counter(p, "promo_webhook_results_total", "Results read from promo.results.", atomic_load(&m.results));
    prom_counter(p, "promo_webhook_undecodable_total", "Results skipped because they could not be decoded.",
                 atomic_load(&m.undecodable));
    prom_counter(p, "promo_webhook_enqueued_total", "Results with a callback_url recorded as deliveries.",
                 atomic_load(&m.enqueued));
    prom_family(p, "promo_webhook_deliveries_total", "counter", "Deliveries finished, by outcome.");
    prom_u64(p, "promo_webhook_deliveries_total", "outcome=\"delivered\"", atomic_load(&m.delivered));
    prom_u64(p, "promo_webhook_deliveries_total", "outcome=\"failed\"", atomic_load(&m.failed));
    prom_u64(p, "promo_webhook_deliveries_total", "outcome=\"not_allowed\"", atomic_load(&m.not_allowed));
    prom_family(p, "promo_webhook_attempts_total", "counter", "HTTP attempts, by result.");
    prom_u64(p, "promo_webhook_attempts_total", "result=\"2xx\"", atomic_load(&m.att_ok));
    prom_u64(p, "promo_webhook_attempts_total", "result=\"http_error\"", atomic_load(&m.att_http));
    prom_u64(p, "promo_webhook_attempts_total", "result=\"network_error\"", atomic_load(&m.att_network));
    prom_counter(p, "promo_webhook_retries_scheduled_total", "Failed attempts with another attempt scheduled.",
                 atomic_load(&m.retries));
    prom_counter(p, "promo_webhook_lost_claims_total", "Attempts whose lease had passed to another dispatcher.",
                 atomic_load(&m.lost_claims));
    prom_family(p, "promo_webhook_errors_total", "counter", "Failed operations, by stage (each is retried).");
    prom_u64(p, "promo_webhook_errors_total", "stage=\"mysql\"", atomic_load(&m.err_mysql));
    prom_u64(p, "promo_webhook_errors_total", "stage=\"kafka\"", atomic_load(&m.err_kafka));
    prom_gauge(p, "promo_webhook_in_flight", "HTTP attempts in progress.", atomic_load(&m.in_flight));
    prom_gauge(p, "promo_webhook_mysql_up", "1 while the last MySQL operation succeeded.", atomic_load(&m.mysql_up));
    prom_family(p, "promo_webhook_attempt_seconds", "histogram", "Duration of one HTTP attempt.");
    prom_hist_write(p, "promo_webhook_attempt_seconds", NULL, &m.latency);
}

/* CivetWeb worker thread (ops.c). Ready once results are being read and due
 * deliveries sent; waiting for MySQL is alive all the same (/healthz). */
static const char *not_ready(void *arg) {
    (void)arg;
    return atomic_load(&m.ready) ? NULL : "starting";
}

/* ---- MySQL ---------------------------------------------------------- */

/* Brings the schema up to date with the MySQL sink's migration runner (the
 * dispatcher may start first), then opens a store. Retries until it works;
 * returns NULL only when stopped first. */
static webhook_store *store_open(const config *c, bool migrate) {
    char errstr[512];
    int backoff = BACKOFF_MIN_MS;
    while (!stopping) {
        errstr[0] = '\0';
        if (migrate) {
            sink_mysql_cfg sc = {c->db.host, c->db.port, c->db.user, c->db.password, c->db.db};
            sink_mysql *s = sink_mysql_new(&sc, errstr, sizeof errstr);
            int rc =
                s ? sink_mysql_migrate(s, cfg_str("PROMO_MIGRATIONS_DIR", "sinks/migrations"), errstr, sizeof errstr)
                  : -1;
            sink_mysql_destroy(s);
            if (rc == 0) migrate = false;
        }
        if (!migrate) {
            webhook_store *st = webhook_store_new(&c->db, errstr, sizeof errstr);
            if (st) {
                atomic_store(&m.mysql_up, 1);
                return st;
            }
        }
        atomic_store(&m.mysql_up, 0);
        log_error("mysql not ready: %s; retrying in %d ms", errstr, backoff);
        nap_ms(backoff, &stopping);
        backoff = backoff_next(backoff);
    }
    return NULL;
}

/* ---- the delivery thread -------------------------------------------- */

typedef struct outcome {
    webhook_delivery d;
    webhook_attempt a;
    webhook_fate fate;
    int64_t next_ms;
} outcome;

typedef struct deliverer {
    const config *cfg;
    webhook_store *store;
    webhook_sender *sender;
    atomic_bool wake; /* set by the main thread after it recorded deliveries */
    outcome *pend;    /* decided, not yet written */
    size_t npend;
    webhook_delivery *claimed;
    webhook_done *done;
    char token_prefix[40];
    unsigned long long token_seq;
} deliverer;

/* Decides what a finished attempt means for its delivery, and logs it. */
static void outcome_add(deliverer *w, const webhook_delivery *d, const webhook_attempt *a, bool ok,
                        int64_t retry_after_ms) {
    outcome *o = &w->pend[w->npend++];
    memset(o, 0, sizeof *o);
    o->d = *d;
    o->a = *a;
    int attempt = d->attempts + 1;
    if (ok) {
        o->fate = WEBHOOK_DELIVERED;
        atomic_fetch_add(&m.att_ok, 1);
    } else {
        atomic_fetch_add(a->http_status ? &m.att_http : &m.att_network, 1);
        int64_t now = a->at_ms + a->duration_ms;
        if (webhook_next_attempt(&w->cfg->schedule, attempt, now, retry_after_ms, &o->next_ms) == 0) {
            o->fate = WEBHOOK_RETRY;
            atomic_fetch_add(&m.retries, 1);
            log_warn("request %s: webhook attempt %d to %s failed: %s; next in %lld ms", d->request_id, attempt, d->url,
                     a->error, (long long)(o->next_ms - now));
        } else {
            o->fate = WEBHOOK_FAILED;
            log_warn("request %s: webhook attempt %d to %s failed: %s; no attempts left, delivery FAILED",
                     d->request_id, attempt, d->url, a->error);
        }
    }
    if (a->sent) metrics_latency(a->duration_ms);
}

/* Writes the decided outcomes. Returns 0 when all are written, -1 when
 * MySQL failed (the rest stay queued, in order). */
static int write_outcomes(deliverer *w) {
    char errstr[512];
    size_t i = 0;
    for (; i < w->npend; i++) {
        outcome *o = &w->pend[i];
        bool lost = false;
        if (webhook_store_finish(w->store, &o->d, &o->a, o->fate, o->next_ms, &lost, errstr, sizeof errstr) != 0) {
            atomic_fetch_add(&m.err_mysql, 1);
            atomic_store(&m.mysql_up, 0);
            log_error("recording webhook attempt of request %s: %s", o->d.request_id, errstr);
            break;
        }
        atomic_store(&m.mysql_up, 1);
        if (lost) {
            atomic_fetch_add(&m.lost_claims, 1);
            log_warn("request %s: the lease on %s ended before the attempt was recorded; its new holder decides",
                     o->d.request_id, o->d.id);
        } else if (o->fate == WEBHOOK_DELIVERED) {
            atomic_fetch_add(&m.delivered, 1);
        } else if (o->fate == WEBHOOK_FAILED) {
            atomic_fetch_add(&m.failed, 1);
        } else if (o->fate == WEBHOOK_NOT_ALLOWED) {
            atomic_fetch_add(&m.not_allowed, 1);
        }
        webhook_delivery_clear(&o->d);
    }
    memmove(w->pend, w->pend + i, (w->npend - i) * sizeof *w->pend);
    w->npend -= i;
    return w->npend ? -1 : 0;
}

/* Claims what is due and starts it. Returns the number claimed, or -1 when
 * MySQL failed. */
static int claim_and_start(deliverer *w, size_t room) {
    char errstr[512], why[256];
    char token[WEBHOOK_TOKEN_MAX + 1];
    snprintf(token, sizeof token, "%s.%llu", w->token_prefix, ++w->token_seq);
    int64_t now = now_ms();
    size_t n = 0;
    if (webhook_store_claim(w->store, now, now + w->cfg->lease_ms, token, room, w->claimed, &n, errstr,
                            sizeof errstr) != 0) {
        atomic_fetch_add(&m.err_mysql, 1);
        atomic_store(&m.mysql_up, 0);
        log_error("claiming due webhooks: %s", errstr);
        return -1;
    }
    atomic_store(&m.mysql_up, 1);
    for (size_t i = 0; i < n; i++) {
        webhook_delivery *d = &w->claimed[i];
        int rc = webhook_sender_start(w->sender, d, now_ms(), why, sizeof why);
        if (rc == 0) continue;
        webhook_attempt a;
        memset(&a, 0, sizeof a);
        a.at_ms = now_ms();
        if (rc == 1) {
            /* Never sent: the allow-list is checked at every send, so a host
             * removed from it since ingest accepted the URL is refused too. */
            log_warn("request %s: webhook to %s not sent: %s; delivery FAILED (NOT_ALLOWED)", d->request_id, d->url,
                     why);
            snprintf(a.error, sizeof a.error, "NOT_ALLOWED");
            outcome *o = &w->pend[w->npend++];
            memset(o, 0, sizeof *o);
            o->d = *d;
            o->a = a;
            o->fate = WEBHOOK_NOT_ALLOWED;
        } else {
            a.sent = true;
            snprintf(a.error, sizeof a.error, "%s", why);
            outcome_add(w, d, &a, false, -1);
        }
    }
    return (int)n;
}

static void *deliverer_run(void *arg) {
    deliverer *w = arg;
    const config *c = w->cfg;
    int64_t next_claim = 0, db_retry_at = 0, stop_deadline = 0;
    int backoff = BACKOFF_MIN_MS;
    char errstr[512];
    mysql_thread_init();
    for (;;) {
        bool stop = stopping;
        int64_t mono = mono_ms();
        if (stop && !stop_deadline) stop_deadline = mono + c->timeout_ms + 2000;

        size_t got = webhook_sender_take(w->sender, w->done, c->concurrency - w->npend);
        for (size_t i = 0; i < got; i++)
            outcome_add(w, &w->done[i].d, &w->done[i].a, w->done[i].ok, w->done[i].retry_after_ms);
        atomic_store(&m.in_flight, (int)webhook_sender_in_flight(w->sender));

        bool db_ok = mono >= db_retry_at;
        if (w->npend && db_ok) {
            if (write_outcomes(w) == 0) {
                backoff = BACKOFF_MIN_MS;
            } else {
                db_ok = false;
                db_retry_at = mono + backoff;
                backoff = backoff_next(backoff);
                if (webhook_store_reconnect(w->store, errstr, sizeof errstr) != 0)
                    log_error("mysql reconnect: %s", errstr);
            }
        }
        size_t busy = webhook_sender_in_flight(w->sender);
        if (stop && busy == 0 && w->npend == 0) break;
        if (stop && mono > stop_deadline) {
            log_warn("stopping with %zu transfers in flight and %zu attempts unrecorded; their leases will "
                     "expire and they will be sent again",
                     busy, w->npend);
            break;
        }

        bool woken = atomic_exchange(&w->wake, false);
        if (!stop && db_ok && w->npend == 0 && busy < c->concurrency && (woken || mono >= next_claim)) {
            size_t room = c->concurrency - busy;
            int n = claim_and_start(w, room);
            if (n < 0) {
                db_retry_at = mono + backoff;
                backoff = backoff_next(backoff);
                if (webhook_store_reconnect(w->store, errstr, sizeof errstr) != 0)
                    log_error("mysql reconnect: %s", errstr);
            } else {
                backoff = BACKOFF_MIN_MS;
            }
            /* A full claim suggests more are due: look again at once. */
            next_claim = n == (int)room ? mono : mono + c->poll_ms;
        }

        int wait = c->poll_ms;
        if (w->npend) wait = 50;
        if (next_claim > mono && next_claim - mono < wait) wait = (int)(next_claim - mono);
        if (stop) wait = 50;
        if (webhook_sender_run(w->sender, wait) != 0) {
            log_error("libcurl multi handle failed; pausing");
            nap_ms(100, &stopping);
        }
    }
    mysql_thread_end();
    return NULL;
}

/* ---- the consumer --------------------------------------------------- */

typedef struct item {
    char request_id[PROMO_ID_MAX + 1];
    char *url;
    char *json;
} item;

typedef struct app {
    const config *cfg;
    rd_kafka_t *consumer;
    codec *codec;
    webhook_store *store;
    deliverer *w;
    promo_result res; /* decoding scratch */
    item items[BATCH_MAX];
    webhook_new news[BATCH_MAX];
    size_t nitems;
    size_t n; /* messages in the batch */
    int64_t first_ms;
    rd_kafka_topic_partition_list_t *offsets;
} app;

static void batch_clear(app *a) {
    for (size_t i = 0; i < a->nitems; i++) {
        free(a->items[i].url);
        free(a->items[i].json);
    }
    a->nitems = a->n = 0;
    if (a->offsets) rd_kafka_topic_partition_list_destroy(a->offsets);
    a->offsets = NULL;
}

static void batch_drop(app *a, const char *why) {
    if (a->n == 0) return;
    log_warn("dropping uncommitted batch of %zu results (%s); it will be read again", a->n, why);
    batch_clear(a);
}

/* Which results get a callback: those that asked, except the rejection of a
 * reused idempotency key, which shares its request id (and so its webhook id)
 * with the first result, the one the client is told about. */
static bool wants_callback(const promo_result *r) {
    return r->callback_url[0] && strcmp(r->reason, "IDEMPOTENCY_KEY_REUSED") != 0;
}

/* Returns -1 only when memory runs out; the caller drops the batch. */
static int batch_add(app *a, const rd_kafka_message_t *msg) {
    if (!a->offsets && !(a->offsets = rd_kafka_topic_partition_list_new(8))) return -1;
    if (a->n == 0) a->first_ms = mono_ms();
    atomic_fetch_add(&m.results, 1);
    char errstr[256];
    static const uint8_t empty[1];
    const uint8_t *data = msg->payload ? msg->payload : empty;
    int rc = codec_decode_result(a->codec, data, msg->len, &a->res, errstr, sizeof errstr);
    if (rc == CODEC_ERR_INTERNAL) {
        log_error("decoding %s[%d]@%lld: %s", rd_kafka_topic_name(msg->rkt), (int)msg->partition,
                  (long long)msg->offset, errstr);
        return -1;
    }
    if (rc != CODEC_OK) {
        /* The MySQL sink dead-letters it; here it only has no callback. */
        atomic_fetch_add(&m.undecodable, 1);
        log_warn("skipping undecodable result %s[%d]@%lld: %s: %s", rd_kafka_topic_name(msg->rkt), (int)msg->partition,
                 (long long)msg->offset, codec_err_code(rc), errstr);
    } else if (wants_callback(&a->res) && !promo_id_valid(a->res.request_id)) {
        /* Processors validate request ids; a result without one is not theirs. */
        log_warn("skipping result %s[%d]@%lld: its request id is not valid", rd_kafka_topic_name(msg->rkt),
                 (int)msg->partition, (long long)msg->offset);
    } else if (wants_callback(&a->res)) {
        item *it = &a->items[a->nitems];
        memcpy(it->request_id, a->res.request_id, sizeof it->request_id);
        /* Only ASCII URLs pass the allow-list, but any URL must be storable
         * (a utf8mb4 column refuses bad bytes, which would stall the batch):
         * such a URL is recorded repaired and then refused as NOT_ALLOWED. */
        static char url[3 * PROMO_URL_MAX + 1];
        result_json_utf8_repair(a->res.callback_url, sizeof a->res.callback_url, url);
        it->url = strdup(url);
        it->json = result_json_dump(&a->res);
        if (!it->url || !it->json) {
            free(it->url);
            free(it->json);
            return -1;
        }
        a->nitems++;
    }
    const char *topic = rd_kafka_topic_name(msg->rkt);
    rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(a->offsets, topic, msg->partition);
    if (!p) p = rd_kafka_topic_partition_list_add(a->offsets, topic, msg->partition);
    if (msg->offset + 1 > p->offset) p->offset = msg->offset + 1;
    a->n++;
    return 0;
}

/* The crash-safe order: deliveries committed in MySQL, then offsets. */
static void batch_flush(app *a) {
    if (a->n == 0) return;
    if (a->nitems) {
        int64_t now = now_ms();
        for (size_t i = 0; i < a->nitems; i++) {
            a->news[i].request_id = a->items[i].request_id;
            a->news[i].url = a->items[i].url;
            a->news[i].body = a->items[i].json;
            a->news[i].next_attempt_at = now + a->cfg->schedule.delay_ms[0];
        }
        int backoff = BACKOFF_MIN_MS;
        char errstr[512];
        while (webhook_store_enqueue(a->store, a->news, a->nitems, now, errstr, sizeof errstr) != 0) {
            atomic_fetch_add(&m.err_mysql, 1);
            atomic_store(&m.mysql_up, 0);
            log_error("recording %zu webhooks (first request %s): %s; retrying in %d ms", a->nitems,
                      a->items[0].request_id, errstr, backoff);
            nap_ms(backoff, &stopping);
            backoff = backoff_next(backoff);
            if (stopping) {
                batch_drop(a, "stopping before it was recorded");
                return;
            }
            if (webhook_store_reconnect(a->store, errstr, sizeof errstr) != 0) log_error("mysql reconnect: %s", errstr);
        }
        atomic_store(&m.mysql_up, 1);
        atomic_fetch_add(&m.enqueued, a->nitems);
        if (a->cfg->schedule.delay_ms[0] == 0) {
            atomic_store(&a->w->wake, true);
            webhook_sender_wakeup(a->w->sender);
        }
    }
    /* A failure here (a rebalance meanwhile) costs a re-read, never a loss:
     * recording a delivery again changes nothing. */
    rd_kafka_resp_err_t err = rd_kafka_commit(a->consumer, a->offsets, 0);
    if (err) {
        atomic_fetch_add(&m.err_kafka, 1);
        log_warn("committing offsets of a batch of %zu: %s (it will be re-read)", a->n, rd_kafka_err2str(err));
    }
    batch_clear(a);
}

/* Served inside rd_kafka_consumer_poll() on the main thread, so it never
 * runs while a batch is being recorded. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    app *a = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_info("assigned %d partitions", parts->cnt);
        rd_kafka_assign(rk, parts);
    } else {
        log_info("revoked %d partitions", parts->cnt);
        batch_drop(a, "partitions revoked");
        rd_kafka_assign(rk, NULL);
    }
}

static rd_kafka_t *consumer_new(app *a, const char *bootstrap, const char *group) {
    char errstr[512];
    kafka_conf kc;
    kafka_conf_consumer(&kc, bootstrap, PROGRAM, group, on_rebalance, a);
    kafka_conf_set(&kc, "auto.offset.reset", "earliest");
    rd_kafka_t *rk = kafka_conf_new_consumer(&kc, TOPIC_RESULTS, errstr, sizeof errstr);
    if (!rk) log_error("kafka consumer: %s", errstr);
    return rk;
}

static void consume(app *a) {
    while (!stopping) {
        int timeout = 200;
        if (a->n) {
            int64_t left = a->first_ms + a->cfg->linger_ms - mono_ms();
            timeout = left > 0 ? (int)left : 0;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(a->consumer, timeout);
        if (msg) {
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                /* the end of a partition for now */
            } else if (msg->err) {
                atomic_fetch_add(&m.err_kafka, 1);
                log_warn("kafka: %s", rd_kafka_message_errstr(msg));
                if (msg->err == RD_KAFKA_RESP_ERR__FATAL) {
                    rd_kafka_message_destroy(msg);
                    fatal = 1;
                    stopping = 1;
                    break;
                }
            } else if (batch_add(a, msg) != 0) {
                batch_drop(a, "out of memory");
            }
            rd_kafka_message_destroy(msg);
        }
        if (a->n && (a->nitems == BATCH_MAX || a->n >= 10 * BATCH_MAX || mono_ms() - a->first_ms >= a->cfg->linger_ms))
            batch_flush(a);
    }
    batch_flush(a);
}

/* ---- start and run -------------------------------------------------- */

int main(void) {
    log_init(PROGRAM);
    signals_on_stop(&stopping);

    static config cfg;
    static app a;
    static deliverer w;
    int status = 1;
    bool thread_started = false;
    pthread_t thread;
    ops *http = NULL;
    char errstr[512], bootstrap[1024];
    if (config_load(&cfg) != 0) return 2;
    /* Both libraries' global set-up is not thread-safe: do it before any
     * thread (CivetWeb's included) exists. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || mysql_library_init(0, NULL, NULL) != 0) {
        log_error("cannot initialise libcurl or the MySQL client library");
        return 1;
    }
    a.cfg = &cfg;
    a.w = &w;
    w.cfg = &cfg;
    snprintf(w.token_prefix, sizeof w.token_prefix, "%d.%lld", (int)getpid(), (long long)now_ms());
    w.pend = calloc(cfg.concurrency, sizeof *w.pend);
    w.claimed = calloc(cfg.concurrency, sizeof *w.claimed);
    w.done = calloc(cfg.concurrency, sizeof *w.done);
    if (!w.pend || !w.claimed || !w.done) {
        log_error("out of memory");
        goto out;
    }
    webhook_sender_cfg scfg = {
        .connect_timeout_ms = cfg.connect_timeout_ms,
        .timeout_ms = cfg.timeout_ms,
        .max_in_flight = cfg.concurrency,
        .key = cfg.key,
        .key_len = cfg.key_len,
        .key2 = cfg.key2,
        .key2_len = cfg.key2_len,
        .allow = cfg.allow,
        .proxy = cfg_str("PROMO_WEBHOOK_PROXY", ""),
        .user_agent = PROGRAM "/1",
    };
    if (!(w.sender = webhook_sender_new(&scfg, errstr, sizeof errstr))) {
        log_error("webhook sender: %s", errstr);
        goto out;
    }
    if (!(a.codec = codec_new(errstr, sizeof errstr))) {
        log_error("codec: %s", errstr);
        goto out;
    }
    ops_handlers handlers = {.metrics = write_metrics, .not_ready = not_ready};
    if (ops_start(&handlers, &http, errstr, sizeof errstr) != 0) {
        log_error("%s", errstr);
        goto out;
    }
    if (!(a.store = store_open(&cfg, true)) || !(w.store = store_open(&cfg, false))) goto stopped;
    if (pthread_create(&thread, NULL, deliverer_run, &w) != 0) {
        log_error("cannot start the delivery thread");
        goto out;
    }
    thread_started = true;
    if (kafka_wait_bootstrap(bootstrap, sizeof bootstrap, &stopping) != 0) goto stopped;
    const char *group = cfg_str("PROMO_WEBHOOK_GROUP", PROGRAM);
    if (!(a.consumer = consumer_new(&a, bootstrap, group))) goto out;
    log_info("consuming %s as group %s; %zu attempts, allow %s, timeout %d ms, %zu in flight", TOPIC_RESULTS, group,
             cfg.schedule.n, cfg.allow, cfg.timeout_ms, cfg.concurrency);
    atomic_store(&m.ready, 1);
    consume(&a);
stopped:
    log_info("stopping");
    status = fatal;
out:
    stopping = 1;
    if (thread_started) {
        webhook_sender_wakeup(w.sender);
        pthread_join(thread, NULL);
    }
    if (a.consumer) {
        /* Commits nothing: auto commit is off and every recorded batch has
         * been committed already. */
        rd_kafka_consumer_close(a.consumer);
        rd_kafka_destroy(a.consumer);
    }
    ops_stop(http);
    batch_clear(&a);
    for (size_t i = 0; w.pend && i < w.npend; i++) webhook_delivery_clear(&w.pend[i].d);
    webhook_sender_destroy(w.sender);
    webhook_store_destroy(a.store);
    webhook_store_destroy(w.store);
    if (a.codec) codec_destroy(a.codec);
    free(w.pend);
    free(w.claimed);
    free(w.done);
    mysql_library_end();
    curl_global_cleanup();
    return status;
}
