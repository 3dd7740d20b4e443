/* status.c — Redis and MySQL for ingest: request status, read models,
 * readiness pings, over one connection of each per CivetWeb worker.
 *
 * Connections live in thread-local storage (`tl`), so no request waits for a
 * lock or a pool; CivetWeb's exit_thread callback closes them. A connection
 * that fails is dropped and reopened by the next request that needs it, at
 * most every RETRY_MS, so an outage gives fast errors instead of a connect
 * timeout on every request. The PENDING records of writes go through one
 * writer thread instead (`pw`, below), which batches them.
 *
 * The read endpoints answer from the tables the MySQL sink keeps
 * (sinks/migrations/001_init.sql). Every value put into SQL is a path id or
 * cursor that parse.c has already checked against the id syntax, and is
 * escaped with mysql_real_escape_string() all the same.
 */
#include "status.h"

#include <errmsg.h>
#include <errno.h>
#include <hiredis.h>
#include <jansson.h>
#include <mysql.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "keys.h"
#include "redis_conn.h"
#include "result_json.h"
#include "util.h"

#define RETRY_MS 500
#define ID_BUF (PROMO_COUPON_ID_MAX + 1)
#define POLL_MS 10

static status_config cfg;

typedef struct conns {
    redisContext *redis;
    int64_t redis_retry_at; /* mono_ms before which we do not reconnect */
    MYSQL *mysql;
    int64_t mysql_retry_at;
    bool mysql_thread; /* mysql_thread_init() done */
} conns;

static _Thread_local conns tl;

/* ---- the PENDING writer ----
 *
 * One thread with its own connection writes the PENDING records of all
 * workers: it takes every record queued since its last round, sends them as
 * one pipeline and reads the answers, while the next round queues up (group
 * commit). A worker's SET and its reply thus cost one write and one read per
 * round instead of per request, for ingest and for Redis alike, and the
 * round trip overlaps the wait for Kafka. The queue is the only state the
 * workers share with the writer; each record lives on its worker's stack
 * until status_pending_finish() has seen it done. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    status_pending *head, *tail;
    bool idle; /* the writer waits on cv */
    bool stop;
    bool started;
    pthread_t thread;
    redisContext *redis; /* the writer's own */
    int64_t retry_at;
} pw = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *pending_main(void *arg);

int status_init(const status_config *c, char *errstr, size_t errstr_size) {
    cfg = *c;
    /* Not thread-safe: must run before the workers start. */
    if (mysql_library_init(0, NULL, NULL)) {
        snprintf(errstr, errstr_size, "mysql_library_init failed");
        return -1;
    }
    if (pthread_create(&pw.thread, NULL, pending_main, NULL) != 0) {
        snprintf(errstr, errstr_size, "cannot start the pending-status writer thread");
        mysql_library_end();
        return -1;
    }
    pw.started = true;
    return 0;
}

void status_shutdown(void) {
    if (pw.started) {
        pthread_mutex_lock(&pw.mu);
        pw.stop = true;
        pthread_mutex_unlock(&pw.mu);
        pthread_cond_signal(&pw.cv);
        pthread_join(pw.thread, NULL);
        pw.started = false;
    }
    mysql_library_end();
}

static void redis_drop(void) {
    if (tl.redis) redisFree(tl.redis);
    tl.redis = NULL;
}

static void mysql_drop(void) {
    if (tl.mysql) mysql_close(tl.mysql);
    tl.mysql = NULL;
}

void status_thread_end(void) {
    redis_drop();
    mysql_drop();
    if (tl.mysql_thread) mysql_thread_end();
    tl.mysql_thread = false;
}

/* ---- Redis ---- */

static redisContext *redis_conn(char *errstr, size_t errstr_size) {
    if (tl.redis && !tl.redis->err) return tl.redis;
    redis_drop();
    int64_t now = mono_ms();
    if (now < tl.redis_retry_at) {
        snprintf(errstr, errstr_size, "redis unavailable (retrying shortly)");
        return NULL;
    }
    struct timeval connect_tv = {0, 500 * 1000}, io_tv = {2, 0};
    redisContext *c = redis_open(cfg.redis_host, cfg.redis_port, connect_tv, errstr, errstr_size);
    if (!c) {
        tl.redis_retry_at = now + RETRY_MS;
        return NULL;
    }
    redisSetTimeout(c, io_tv);
    tl.redis = c;
    return c;
}

/* Runs one command; on a transport error drops the connection. A worker's
 * connection may have been idle across a Redis restart, so a command that
 * fails on a reused connection is tried once more on a fresh one: every
 * command here may run twice (GET, DEL, PING; a repeated SET NX GET finds
 * our own claim, which the caller takes as ours). Caller frees the reply
 * with freeReplyObject(). */
static redisReply *redis_cmd(char *errstr, size_t errstr_size, const char *fmt, ...) {
    redisReply *r = NULL;
    for (int attempt = 0; attempt < 2 && !r; attempt++) {
        bool reused = tl.redis && !tl.redis->err;
        redisContext *c = redis_conn(errstr, errstr_size);
        if (!c) return NULL;
        va_list ap;
        va_start(ap, fmt);
        r = redisvCommand(c, fmt, ap);
        va_end(ap);
        if (!r) {
            snprintf(errstr, errstr_size, "redis: %s", c->errstr[0] ? c->errstr : "no reply");
            redis_drop();
            if (!reused) return NULL;
        }
    }
    if (!r) return NULL;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size, "redis: %.*s", (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Hands pr's answer to its worker; pr may be gone once this returns. */
static void pending_done(status_pending *pr, int result, const char *err) {
    pr->result = result;
    if (err) snprintf(pr->err, sizeof pr->err, "%s", err);
    latch_count_down(pr->done);
}

/* One round: every record of list in one pipeline. Runs on the writer. */
static void pending_round(status_pending *list) {
    char err[256] = "";
    redisContext *c = pw.redis;
    if (!c || c->err) {
        if (c) redisFree(c);
        c = pw.redis = NULL;
        int64_t now = mono_ms();
        if (now >= pw.retry_at) {
            struct timeval connect_tv = {0, 500 * 1000}, io_tv = {2, 0};
            c = redis_open(cfg.redis_host, cfg.redis_port, connect_tv, err, sizeof err);
            if (!c) {
                pw.retry_at = now + RETRY_MS;
            } else {
                redisSetTimeout(c, io_tv);
                pw.redis = c;
            }
        } else {
            snprintf(err, sizeof err, "redis unavailable (retrying shortly)");
        }
    }
    status_pending *pr = list, *next;
    size_t sent = 0;
    for (status_pending *q = list; c && q; q = q->next, sent++)
        if (redisAppendCommand(c, "SET " KEY_REQ_PREFIX "%s %s NX EX %d", q->request_id, q->json, cfg.ttl_s) !=
            REDIS_OK)
            break;
    for (; pr && sent > 0; pr = next, sent--) {
        next = pr->next; /* pr may be gone once done */
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
            snprintf(err, sizeof err, "redis: %.100s", c->errstr[0] ? c->errstr : "no reply");
            redisFree(c);
            pw.redis = NULL;
            break;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            char why[128];
            snprintf(why, sizeof why, "redis: %.*s", (int)r->len, r->str);
            pending_done(pr, -1, why);
        } else {
            /* SET NX answers OK when it created the record, nil when one was
             * there: only a record this request created may be taken back. */
            pending_done(pr, r->type == REDIS_REPLY_STATUS, NULL);
        }
        freeReplyObject(r);
    }
    for (; pr; pr = next) {
        next = pr->next;
        pending_done(pr, -1, err[0] ? err : "redis: not sent");
    }
}

static void *pending_main(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "ingest-pending"); /* for top and perf */
    pthread_mutex_lock(&pw.mu);
    for (;;) {
        while (!pw.head && !pw.stop) {
            pw.idle = true;
            pthread_cond_wait(&pw.cv, &pw.mu);
            pw.idle = false;
        }
        if (!pw.head) break; /* stopping, and nothing left */
        status_pending *list = pw.head;
        pw.head = pw.tail = NULL;
        pthread_mutex_unlock(&pw.mu);
        pending_round(list);
        pthread_mutex_lock(&pw.mu);
    }
    pthread_mutex_unlock(&pw.mu);
    if (pw.redis) redisFree(pw.redis);
    pw.redis = NULL;
    return NULL;
}

void status_pending_send(status_pending *pr, const char *request_id, const char *json, latch *done) {
    *pr = (status_pending){.request_id = request_id, .json = json, .done = done};
    pthread_mutex_lock(&pw.mu);
    if (pw.tail)
        pw.tail->next = pr;
    else
        pw.head = pr;
    pw.tail = pr;
    bool wake = pw.idle;
    pw.idle = false; /* one wake per round is enough */
    pthread_mutex_unlock(&pw.mu);
    if (wake) pthread_cond_signal(&pw.cv);
}

/* Deletes the keys of request_id named by the flags, in one command. */
static int keys_delete(const char *request_id, bool req, bool idem, char *errstr, size_t errstr_size) {
    redisReply *r;
    if (req && idem)
        r = redis_cmd(errstr, errstr_size, "DEL " KEY_REQ_PREFIX "%s " KEY_IDEM_PREFIX "%s", request_id, request_id);
    else if (req || idem)
        r = redis_cmd(errstr, errstr_size, req ? "DEL " KEY_REQ_PREFIX "%s" : "DEL " KEY_IDEM_PREFIX "%s", request_id);
    else
        return 0;
    if (!r) return -1;
    freeReplyObject(r);
    return 0;
}

int status_pending_finish(status_pending *pr, bool drop, char *errstr, size_t errstr_size) {
    if (pr->result < 0) {
        snprintf(errstr, errstr_size, "%s", pr->err);
        return -1;
    }
    char why[128];
    if (drop && pr->result == 1 && keys_delete(pr->request_id, true, false, why, sizeof why)) {
        snprintf(errstr, errstr_size, "pending record of an unsent command not removed: %s", why);
        return -1;
    }
    return 0;
}

/* 1 when a status JSON names this domain, command type and entity key. */
static int same_target(const char *status_json, size_t len, const char *domain, const char *command_type,
                       const char *entity_key) {
    json_t *doc = json_loadb(status_json, len, 0, NULL);
    if (!doc) return 0;
    const char *d = json_string_value(json_object_get(doc, "domain"));
    const char *t = json_string_value(json_object_get(doc, "command_type"));
    const char *k = json_string_value(json_object_get(doc, "entity_key"));
    int same = d && t && k && strcmp(d, domain) == 0 && strcmp(t, command_type) == 0 && strcmp(k, entity_key) == 0;
    json_decref(doc);
    return same;
}

/* Both SETs of a claim as one transaction, pipelined: MULTI, SET, SET, EXEC
 * go out in one write and their answers come back in one read. The
 * transaction keeps a concurrent claim of the same id from falling between
 * the two SETs, where each would find one key of the other and both could
 * think themselves refused, or take back a record the other relies on.
 * Tried once more on a fresh connection like redis_cmd(): a claim that ran
 * but whose answer was lost then finds its own fingerprint, a retry. Returns
 * EXEC's array of the two old values (caller frees with freeReplyObject()),
 * or NULL with errstr. */
static redisReply *claim_exec(const char *request_id, const char *fingerprint, const char *json, char *errstr,
                              size_t errstr_size) {
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = tl.redis && !tl.redis->err;
        redisContext *c = redis_conn(errstr, errstr_size);
        if (!c) return NULL;
        if (redisAppendCommand(c, "MULTI") != REDIS_OK ||
            redisAppendCommand(c, "SET " KEY_IDEM_PREFIX "%s %s NX GET EX %d", request_id, fingerprint, cfg.ttl_s) !=
                REDIS_OK ||
            redisAppendCommand(c, "SET " KEY_REQ_PREFIX "%s %s NX GET EX %d", request_id, json, cfg.ttl_s) !=
                REDIS_OK ||
            redisAppendCommand(c, "EXEC") != REDIS_OK) {
            snprintf(errstr, errstr_size, "out of memory");
            redis_drop(); /* commands may be half queued */
            return NULL;
        }
        redisReply *r[4] = {NULL};
        int got = 0;
        while (got < 4 && redisGetReply(c, (void **)&r[got]) == REDIS_OK && r[got]) got++;
        if (got < 4) {
            snprintf(errstr, errstr_size, "redis: %s", c->errstr[0] ? c->errstr : "no reply");
            for (int i = 0; i < got; i++) freeReplyObject(r[i]);
            redis_drop();
            if (!reused) return NULL;
            continue;
        }
        for (int i = 0; i < 3; i++) freeReplyObject(r[i]);
        redisReply *ex = r[3];
        /* EXEC fails whole (EXECABORT) when a SET was refused as queued,
         * e.g. by a Redis before 7, which knows no NX GET. */
        bool ok = ex->type == REDIS_REPLY_ARRAY && ex->elements == 2;
        for (size_t i = 0; ok && i < 2; i++)
            ok = ex->element[i]->type == REDIS_REPLY_STRING || ex->element[i]->type == REDIS_REPLY_NIL;
        if (!ok) {
            const redisReply *e = ex->type == REDIS_REPLY_ARRAY && ex->elements == 2
                                      ? (ex->element[0]->type == REDIS_REPLY_ERROR ? ex->element[0] : ex->element[1])
                                      : ex;
            if (e->type == REDIS_REPLY_ERROR)
                snprintf(errstr, errstr_size, "redis: %.*s", (int)e->len, e->str);
            else
                snprintf(errstr, errstr_size, "redis: unexpected answer to the claim");
            freeReplyObject(ex);
            return NULL;
        }
        return ex;
    }
    return NULL;
}

int status_claim(const char *request_id, const char *fingerprint, const char *json, const char *domain,
                 const char *command_type, const char *entity_key, status_claimed *claimed, char *errstr,
                 size_t errstr_size) {
    *claimed = (status_claimed){false, false};
    redisReply *ex = claim_exec(request_id, fingerprint, json, errstr, errstr_size);
    if (!ex) return -1;
    const redisReply *old_fp = ex->element[0], *old_req = ex->element[1];
    claimed->idem = old_fp->type == REDIS_REPLY_NIL;
    claimed->req = old_req->type == REDIS_REPLY_NIL;
    bool ours;
    if (!claimed->idem)
        ours = old_fp->len == strlen(fingerprint) && memcmp(old_fp->str, fingerprint, old_fp->len) == 0;
    else if (!claimed->req)
        /* A status with no fingerprint: the id came to Kafka another way
         * first, so only its target can be compared here. */
        ours = same_target(old_req->str, old_req->len, domain, command_type, entity_key);
    else
        ours = true;
    freeReplyObject(ex);
    if (ours) return 0;
    /* Refused: what this call wrote belongs to no request. */
    char why[128];
    if (status_release(request_id, claimed, why, sizeof why))
        log_warn("request %s: refused claim not taken back: %s", request_id, why);
    *claimed = (status_claimed){false, false};
    return STATUS_KEY_REUSED;
}

int status_release(const char *request_id, const status_claimed *claimed, char *errstr, size_t errstr_size) {
    return keys_delete(request_id, claimed->req, claimed->idem, errstr, errstr_size);
}

/* 0 with *val (caller frees), STATUS_NOT_FOUND, or -1. */
static int redis_get_request(const char *request_id, char **val, char *errstr, size_t errstr_size) {
    redisReply *r = redis_cmd(errstr, errstr_size, "GET " KEY_REQ_PREFIX "%s", request_id);
    if (!r) return -1;
    int rc = STATUS_NOT_FOUND;
    if (r->type == REDIS_REPLY_STRING) {
        *val = strndup(r->str, r->len);
        rc = *val ? 0 : -1;
        if (rc) snprintf(errstr, errstr_size, "out of memory");
    }
    freeReplyObject(r);
    return rc;
}

int status_ping_redis(char *errstr, size_t errstr_size) {
    redisReply *r = redis_cmd(errstr, errstr_size, "PING");
    if (!r) return -1;
    freeReplyObject(r);
    return 0;
}

/* ---- MySQL ---- */

static MYSQL *mysql_conn(char *errstr, size_t errstr_size) {
    if (tl.mysql) return tl.mysql;
    int64_t now = mono_ms();
    if (now < tl.mysql_retry_at) {
        snprintf(errstr, errstr_size, "mysql unavailable (retrying shortly)");
        return NULL;
    }
    if (!tl.mysql_thread) {
        mysql_thread_init();
        tl.mysql_thread = true;
    }
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        snprintf(errstr, errstr_size, "mysql_init: out of memory");
        return NULL;
    }
    unsigned int connect_s = 2, io_s = 5;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &io_s);
    mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &io_s);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    const char *host = cfg.mysql_host, *sock = NULL;
    if (host[0] == '/') sock = host, host = "localhost";
    if (!mysql_real_connect(m, host, cfg.mysql_user, cfg.mysql_password, cfg.mysql_db, (unsigned)cfg.mysql_port, sock,
                            0)) {
        snprintf(errstr, errstr_size, "mysql connect %s:%d: %s", cfg.mysql_host, cfg.mysql_port, mysql_error(m));
        mysql_close(m);
        tl.mysql_retry_at = now + RETRY_MS;
        return NULL;
    }
    tl.mysql = m;
    return m;
}

/* Escapes s (an id, a few dozen bytes) for a quoted SQL literal. */
static int mysql_esc(const char *s, char *out, size_t out_size, char *errstr, size_t errstr_size) {
    MYSQL *m = mysql_conn(errstr, errstr_size);
    if (!m) return -1;
    size_t n = strlen(s);
    if (2 * n + 1 > out_size) {
        snprintf(errstr, errstr_size, "value too long for a query");
        return -1;
    }
    mysql_real_escape_string(m, out, s, (unsigned long)n);
    return 0;
}

/* Runs a SELECT; on a lost connection reconnects once and retries (a read is
 * safe to repeat). Caller frees *res with mysql_free_result(). */
static int mysql_select(const char *sql, MYSQL_RES **res, char *errstr, size_t errstr_size) {
    for (int attempt = 0; attempt < 2; attempt++) {
        MYSQL *m = mysql_conn(errstr, errstr_size);
        if (!m) return -1;
        if (mysql_real_query(m, sql, (unsigned long)strlen(sql)) == 0 && (*res = mysql_store_result(m)) != NULL)
            return 0;
        unsigned int e = mysql_errno(m);
        snprintf(errstr, errstr_size, "mysql: %s", mysql_error(m));
        if (e < CR_MIN_ERROR || e > CR_MAX_ERROR) return -1; /* a server-side error: retrying won't help */
        mysql_drop();
        if (e != CR_SERVER_GONE_ERROR && e != CR_SERVER_LOST) return -1;
    }
    return -1;
}

int status_ping_mysql(char *errstr, size_t errstr_size) {
    MYSQL *m = mysql_conn(errstr, errstr_size);
    if (!m) return -1;
    if (mysql_ping(m) == 0) return 0;
    snprintf(errstr, errstr_size, "mysql: %s", mysql_error(m));
    mysql_drop();
    return -1;
}

typedef enum { COL_STR, COL_INT } col_type;
typedef struct col {
    const char *name;
    col_type type;
} col;

/* One row as an object; SQL NULL becomes JSON null. */
static json_t *row_json(MYSQL_ROW row, const unsigned long *len, const col *cols, size_t n) {
    json_t *o = json_object();
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *v;
        if (!row[i])
            v = json_null();
        else if (cols[i].type == COL_INT)
            v = json_integer(strtoll(row[i], NULL, 10));
        else
            v = json_stringn(row[i], len[i]);
        if (!v) v = json_null(); /* text the sink wrote is UTF-8; never fail a read over one field */
        json_object_set_new(o, cols[i].name, v);
    }
    return o;
}

/* SELECT columns listed in cols; the SQL's column order must match. */
static int select_rows(const char *sql, const col *cols, size_t ncols, json_t **rows, char *errstr,
                       size_t errstr_size) {
    MYSQL_RES *res;
    if (mysql_select(sql, &res, errstr, errstr_size)) return -1;
    int rc = 0;
    *rows = json_array();
    if (mysql_num_fields(res) != ncols) {
        snprintf(errstr, errstr_size, "mysql: unexpected column count");
        rc = -1;
    }
    MYSQL_ROW row;
    while (rc == 0 && *rows && (row = mysql_fetch_row(res)) != NULL) {
        json_t *o = row_json(row, mysql_fetch_lengths(res), cols, ncols);
        if (!o || json_array_append_new(*rows, o)) rc = -1, snprintf(errstr, errstr_size, "out of memory");
    }
    mysql_free_result(res);
    if (!*rows) rc = -1, snprintf(errstr, errstr_size, "out of memory");
    if (rc) {
        json_decref(*rows);
        *rows = NULL;
    }
    return rc;
}

/* Dumps and frees j into *out. */
static int finish(json_t *j, char **out, char *errstr, size_t errstr_size) {
    *out = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!*out) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    return 0;
}

/* Fetches at most one row as an object, or STATUS_NOT_FOUND. */
static int select_one(const char *sql, const col *cols, size_t ncols, json_t **obj, char *errstr, size_t errstr_size) {
    json_t *rows;
    if (select_rows(sql, cols, ncols, &rows, errstr, errstr_size)) return -1;
    if (json_array_size(rows) == 0) {
        json_decref(rows);
        return STATUS_NOT_FOUND;
    }
    *obj = json_incref(json_array_get(rows, 0));
    json_decref(rows);
    return 0;
}

/* A page of rows plus "next": the cursor of its last row when one more row
 * exists (the query fetched limit + 1). */
static int finish_page(json_t *rows, int limit, const char *cursor_field, char **out, char *errstr,
                       size_t errstr_size) {
    json_t *next = json_null();
    if (json_array_size(rows) > (size_t)limit) {
        json_array_remove(rows, (size_t)limit);
        json_t *c = json_object_get(json_array_get(rows, (size_t)limit - 1), cursor_field);
        if (json_is_integer(c)) {
            char buf[24];
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(c));
            next = json_string(buf);
        } else if (json_is_string(c)) {
            next = json_string(json_string_value(c));
        }
    }
    return finish(json_pack("{s:o,s:o}", "items", rows, "next", next ? next : json_null()), out, errstr, errstr_size);
}

static const col policy_cols[] = {
    {"policy_id", COL_STR},      {"name", COL_STR},           {"discount_type", COL_STR},
    {"discount_value", COL_INT}, {"max_discount", COL_INT},   {"min_order_amount", COL_INT},
    {"total_quantity", COL_INT}, {"per_user_limit", COL_INT}, {"issue_starts_at", COL_INT},
    {"issue_ends_at", COL_INT},  {"valid_until", COL_INT},    {"valid_days", COL_INT},
    {"issued", COL_INT},         {"redeemed", COL_INT},       {"created_at", COL_INT},
    {"state", COL_STR},
};

/* The policy columns every answer about a policy shows, in policy_cols'
 * order. redeemed is the count every result of the policy carries (and
 * migration 007 counted once for policies older than that). */
#define POLICY_SELECT                                                                                                  \
    "SELECT policy_id, name, discount_type, discount_value, max_discount, min_order_amount, total_quantity, "          \
    "per_user_limit, issue_starts_at, issue_ends_at, valid_until, valid_days, issued, redeemed, created_at, state "    \
    "FROM coupon_policies"

/* remaining, from total_quantity and issued. */
static void policy_remaining(json_t *o) {
    json_int_t total = json_integer_value(json_object_get(o, "total_quantity"));
    json_int_t issued = json_integer_value(json_object_get(o, "issued"));
    json_object_set_new(o, "remaining", json_integer(total > issued ? total - issued : 0));
}

int status_get_policy(const char *policy_id, char **out, char *errstr, size_t errstr_size) {
    char id[2 * ID_BUF], sql[768];
    if (mysql_esc(policy_id, id, sizeof id, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql, POLICY_SELECT " WHERE policy_id = '%s'", id);
    json_t *o;
    int rc = select_one(sql, policy_cols, sizeof policy_cols / sizeof policy_cols[0], &o, errstr, errstr_size);
    if (rc) return rc;
    policy_remaining(o);
    return finish(o, out, errstr, errstr_size);
}

/* " WHERE [state = 's' AND] id > 'after'" for a page of a list. */
static int page_where(const char *id_col, const char *state, const char *after, char *out, size_t out_size,
                      char *errstr, size_t errstr_size) {
    char st[32], aft[2 * ID_BUF];
    if (mysql_esc(state, st, sizeof st, errstr, errstr_size) || mysql_esc(after, aft, sizeof aft, errstr, errstr_size))
        return -1;
    snprintf(out, out_size, " WHERE %s%s%s%s > '%s' ORDER BY %s", state[0] ? "state = '" : "", st,
             state[0] ? "' AND " : "", id_col, aft, id_col);
    return 0;
}

int status_list_policies(const char *state, const char *after, int limit, char **out, char *errstr,
                         size_t errstr_size) {
    char where[320], sql[1024];
    if (page_where("policy_id", state, after, where, sizeof where, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql, POLICY_SELECT "%s LIMIT %d", where, limit + 1);
    json_t *rows;
    if (select_rows(sql, policy_cols, sizeof policy_cols / sizeof policy_cols[0], &rows, errstr, errstr_size))
        return -1;
    for (size_t i = 0; i < json_array_size(rows); i++) policy_remaining(json_array_get(rows, i));
    return finish_page(rows, limit, "policy_id", out, errstr, errstr_size);
}

static const col policy_stats_cols[] = {
    {"policy_id", COL_STR},      {"state", COL_STR},      {"total_quantity", COL_INT},
    {"issued", COL_INT},         {"redeemed", COL_INT},   {"cancelled_redemptions", COL_INT},
    {"discount_total", COL_INT}, {"created_at", COL_INT},
};
static const col minute_cols[] = {{"minute", COL_INT}, {"issued", COL_INT}};

int status_policy_stats(const char *policy_id, int64_t now, char **out, char *errstr, size_t errstr_size) {
    char id[2 * ID_BUF], sql[640];
    if (mysql_esc(policy_id, id, sizeof id, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql,
             "SELECT policy_id, state, total_quantity, issued, redeemed, cancelled_redemptions, discount_total, "
             "created_at FROM coupon_policies WHERE policy_id = '%s'",
             id);
    json_t *o;
    int rc = select_one(sql, policy_stats_cols, sizeof policy_stats_cols / sizeof policy_stats_cols[0], &o, errstr,
                        errstr_size);
    if (rc) return rc;
    policy_remaining(o);
    /* Issues per minute of the last hour, by issued_at (the log's time of
     * each issue), oldest first, minutes without issues left out: a range of
     * index coupons_policy_issued. */
    int64_t from = (now / 60000 - 59) * 60000;
    snprintf(sql, sizeof sql,
             "SELECT issued_at DIV 60000 * 60000 AS minute, COUNT(*) FROM coupons WHERE policy_id = '%s' AND "
             "issued_at >= %lld GROUP BY minute ORDER BY minute",
             id, (long long)from);
    json_t *minutes;
    if (select_rows(sql, minute_cols, 2, &minutes, errstr, errstr_size)) {
        json_decref(o);
        return -1;
    }
    json_object_set_new(o, "issued_per_minute", minutes);
    return finish(o, out, errstr, errstr_size);
}

static const col coupon_cols[] = {
    {"coupon_id", COL_STR}, {"policy_id", COL_STR},  {"user_id", COL_STR},  {"status", COL_STR},
    {"issued_at", COL_INT}, {"expires_at", COL_INT}, {"order_id", COL_STR}, {"discount", COL_INT},
};

int status_list_coupons(const char *user_id, const char *after_coupon_id, int limit, char **out, char *errstr,
                        size_t errstr_size) {
    char uid[2 * ID_BUF], after[2 * ID_BUF], sql[720];
    if (mysql_esc(user_id, uid, sizeof uid, errstr, errstr_size) ||
        mysql_esc(after_coupon_id, after, sizeof after, errstr, errstr_size))
        return -1;
    snprintf(sql, sizeof sql,
             "SELECT coupon_id, policy_id, user_id, status, issued_at, expires_at, order_id, discount FROM coupons "
             "WHERE user_id = '%s' AND coupon_id > '%s' ORDER BY coupon_id LIMIT %d",
             uid, after, limit + 1);
    json_t *rows;
    if (select_rows(sql, coupon_cols, sizeof coupon_cols / sizeof coupon_cols[0], &rows, errstr, errstr_size))
        return -1;
    return finish_page(rows, limit, "coupon_id", out, errstr, errstr_size);
}

static const col points_cols[] = {
    {"balance", COL_INT}, {"next_expiry_at", COL_INT},    {"next_expiry_amount", COL_INT},
    {"pending", COL_INT}, {"next_available_at", COL_INT}, {"next_available_amount", COL_INT},
    {"version", COL_INT}};

int status_get_points(const char *user_id, char **out, char *errstr, size_t errstr_size) {
    char uid[2 * ID_BUF], sql[512];
    if (mysql_esc(user_id, uid, sizeof uid, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql,
             "SELECT balance, next_expiry_at, next_expiry_amount, pending, next_available_at, next_available_amount, "
             "version FROM point_accounts WHERE user_id = '%s'",
             uid);
    json_t *o;
    int rc = select_one(sql, points_cols, sizeof points_cols / sizeof points_cols[0], &o, errstr, errstr_size);
    if (rc < 0) return rc;
    if (rc == STATUS_NOT_FOUND)
        o = json_pack("{s:I,s:n,s:n,s:I,s:n,s:n,s:I}", "balance", (json_int_t)0, "next_expiry_at", "next_expiry_amount",
                      "pending", (json_int_t)0, "next_available_at", "next_available_amount", "version", (json_int_t)0);
    json_t *all = json_pack("{s:s}", "user_id", user_id);
    if (all && o) json_object_update(all, o);
    json_decref(o);
    return finish(all, out, errstr, errstr_size);
}

static const col ledger_cols[] = {
    {"seq", COL_INT},    {"kind", COL_STR},       {"delta", COL_INT}, {"balance_after", COL_INT}, {"order_id", COL_STR},
    {"reason", COL_STR}, {"expires_at", COL_INT}, {"at", COL_INT},    {"request_id", COL_STR},
};

int status_list_history(const char *user_id, int64_t before_seq, int limit, char **out, char *errstr,
                        size_t errstr_size) {
    char uid[2 * ID_BUF], sql[512], cond[48] = "";
    if (mysql_esc(user_id, uid, sizeof uid, errstr, errstr_size)) return -1;
    if (before_seq > 0) snprintf(cond, sizeof cond, " AND seq < %lld", (long long)before_seq);
    snprintf(sql, sizeof sql,
             "SELECT seq, kind, delta, balance_after, order_id, reason, expires_at, at, request_id FROM point_ledger "
             "WHERE user_id = '%s'%s ORDER BY seq DESC LIMIT %d",
             uid, cond, limit + 1);
    json_t *rows;
    if (select_rows(sql, ledger_cols, sizeof ledger_cols / sizeof ledger_cols[0], &rows, errstr, errstr_size))
        return -1;
    return finish_page(rows, limit, "seq", out, errstr, errstr_size);
}

static const col sale_cols[] = {
    {"sale_id", COL_STR},    {"product_id", COL_STR}, {"name", COL_STR},           {"original_price", COL_INT},
    {"sale_price", COL_INT}, {"stock", COL_INT},      {"per_user_limit", COL_INT}, {"starts_at", COL_INT},
    {"ends_at", COL_INT},    {"sold", COL_INT},       {"created_at", COL_INT},     {"state", COL_STR},
    {"hold_ms", COL_INT},    {"held", COL_INT},
};

#define SALE_SELECT                                                                                                    \
    "SELECT sale_id, product_id, name, original_price, sale_price, stock, per_user_limit, starts_at, ends_at, sold, "  \
    "created_at, state, hold_ms, held FROM time_sales"

/* remaining, from stock, sold and held. */
static void sale_remaining(json_t *o) {
    json_int_t stock = json_integer_value(json_object_get(o, "stock"));
    json_int_t taken = json_integer_value(json_object_get(o, "sold")) + json_integer_value(json_object_get(o, "held"));
    json_object_set_new(o, "remaining", json_integer(stock > taken ? stock - taken : 0));
}

int status_get_sale(const char *sale_id, char **out, char *errstr, size_t errstr_size) {
    char id[2 * ID_BUF], sql[512];
    if (mysql_esc(sale_id, id, sizeof id, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql, SALE_SELECT " WHERE sale_id = '%s'", id);
    json_t *o;
    int rc = select_one(sql, sale_cols, sizeof sale_cols / sizeof sale_cols[0], &o, errstr, errstr_size);
    if (rc) return rc;
    sale_remaining(o);
    return finish(o, out, errstr, errstr_size);
}

int status_list_sales(const char *state, const char *after, int limit, char **out, char *errstr, size_t errstr_size) {
    char where[320], sql[1024];
    if (page_where("sale_id", state, after, where, sizeof where, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql, SALE_SELECT "%s LIMIT %d", where, limit + 1);
    json_t *rows;
    if (select_rows(sql, sale_cols, sizeof sale_cols / sizeof sale_cols[0], &rows, errstr, errstr_size)) return -1;
    for (size_t i = 0; i < json_array_size(rows); i++) sale_remaining(json_array_get(rows, i));
    return finish_page(rows, limit, "sale_id", out, errstr, errstr_size);
}

static const col sale_stats_cols[] = {
    {"sale_id", COL_STR},    {"state", COL_STR},      {"stock", COL_INT},   {"orders", COL_INT},
    {"units_sold", COL_INT}, {"units_held", COL_INT}, {"expired", COL_INT}, {"cancelled", COL_INT},
    {"revenue", COL_INT},    {"remaining", COL_INT},
};

int status_sale_stats(const char *sale_id, char **out, char *errstr, size_t errstr_size) {
    char id[2 * ID_BUF], sql[640];
    if (mysql_esc(sale_id, id, sizeof id, errstr, errstr_size)) return -1;
    /* revenue: the units sold (placed, not cancelled) at the sale price. */
    snprintf(sql, sizeof sql,
             "SELECT sale_id, state, stock, orders, sold, held, expired_orders, cancelled_orders, sold * sale_price, "
             "GREATEST(stock - sold - held, 0) FROM time_sales WHERE sale_id = '%s'",
             id);
    json_t *o;
    int rc =
        select_one(sql, sale_stats_cols, sizeof sale_stats_cols / sizeof sale_stats_cols[0], &o, errstr, errstr_size);
    if (rc) return rc;
    return finish(o, out, errstr, errstr_size);
}

static const col order_cols[] = {
    {"sale_id", COL_STR}, {"order_id", COL_STR},  {"user_id", COL_STR},         {"quantity", COL_INT},
    {"status", COL_STR},  {"placed_at", COL_INT}, {"hold_expires_at", COL_INT},
};

int status_get_order(const char *sale_id, const char *order_id, char **out, char *errstr, size_t errstr_size) {
    char sid[2 * ID_BUF], oid[2 * ID_BUF], sql[512];
    if (mysql_esc(sale_id, sid, sizeof sid, errstr, errstr_size) ||
        mysql_esc(order_id, oid, sizeof oid, errstr, errstr_size))
        return -1;
    snprintf(sql, sizeof sql,
             /* The deadline only while it holds. */
             "SELECT sale_id, order_id, user_id, quantity, status, placed_at, "
             "IF(status = 'HELD', hold_expires_at, NULL) FROM sale_orders WHERE sale_id = '%s' AND order_id = '%s'",
             sid, oid);
    json_t *o;
    int rc = select_one(sql, order_cols, sizeof order_cols / sizeof order_cols[0], &o, errstr, errstr_size);
    if (rc) return rc;
    return finish(o, out, errstr, errstr_size);
}

static const col validate_cols[] = {
    {"user_id", COL_STR},        {"status", COL_STR},       {"expires_at", COL_INT},       {"discount_type", COL_STR},
    {"discount_value", COL_INT}, {"max_discount", COL_INT}, {"min_order_amount", COL_INT},
};

int status_validate_coupon(const char *coupon_id, const char *user_id, int64_t order_amount, int64_t now, char **out,
                           char *errstr, size_t errstr_size) {
    char cid[2 * ID_BUF], sql[640];
    if (mysql_esc(coupon_id, cid, sizeof cid, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql,
             "SELECT c.user_id, c.status, c.expires_at, p.discount_type, p.discount_value, p.max_discount, "
             "p.min_order_amount FROM coupons c JOIN coupon_policies p ON p.policy_id = c.policy_id "
             "WHERE c.coupon_id = '%s'",
             cid);
    json_t *o = NULL;
    int rc = select_one(sql, validate_cols, sizeof validate_cols / sizeof validate_cols[0], &o, errstr, errstr_size);
    if (rc < 0) return rc;
    const char *why = NULL;
    int64_t discount = 0;
    if (rc == STATUS_NOT_FOUND) {
        why = "NOT_FOUND";
    } else {
        json_t *exp = json_object_get(o, "expires_at"), *max = json_object_get(o, "max_discount");
        const char *owner = json_string_value(json_object_get(o, "user_id"));
        const char *status = json_string_value(json_object_get(o, "status"));
        if (!owner || strcmp(owner, user_id) != 0)
            why = "NOT_OWNER";
        else if (status && strcmp(status, "REDEEMED") == 0)
            why = "ALREADY_REDEEMED";
        else if (json_is_integer(exp) && now >= json_integer_value(exp))
            why = "EXPIRED";
        else if (order_amount < json_integer_value(json_object_get(o, "min_order_amount")))
            why = "MIN_ORDER_NOT_MET";
        else {
            coupon_policy_def d = {0};
            const char *type = json_string_value(json_object_get(o, "discount_type"));
            d.discount_type = type && strcmp(type, "PERCENT") == 0 ? DISCOUNT_PERCENT : DISCOUNT_FIXED;
            d.discount_value = json_integer_value(json_object_get(o, "discount_value"));
            d.has_max_discount = json_is_integer(max);
            d.max_discount = json_integer_value(max);
            discount = coupon_policy_discount(&d, order_amount);
        }
        json_decref(o);
    }
    json_t *j = json_pack("{s:s,s:b,s:o,s:o}", "coupon_id", coupon_id, "valid", why == NULL, "discount",
                          why ? json_null() : json_integer(discount), "reason", why ? json_string(why) : json_null());
    return finish(j, out, errstr, errstr_size);
}

/* requests.result holds the exact body, so it is returned untouched. */
static int mysql_get_request(const char *request_id, char **out, char *errstr, size_t errstr_size) {
    char id[2 * ID_BUF], sql[320];
    if (mysql_esc(request_id, id, sizeof id, errstr, errstr_size)) return -1;
    snprintf(sql, sizeof sql, "SELECT result FROM requests WHERE request_id = '%s'", id);
    MYSQL_RES *res;
    if (mysql_select(sql, &res, errstr, errstr_size)) return -1;
    int rc = STATUS_NOT_FOUND;
    MYSQL_ROW row = mysql_fetch_row(res);
    if (row && row[0]) {
        unsigned long *len = mysql_fetch_lengths(res);
        *out = strndup(row[0], len[0]);
        rc = *out ? 0 : -1;
        if (rc) snprintf(errstr, errstr_size, "out of memory");
    }
    mysql_free_result(res);
    return rc;
}

static const col callback_cols[] = {
    {"status", COL_STR},       {"attempts", COL_INT},        {"last_status", COL_INT}, {"last_error", COL_STR},
    {"delivered_at", COL_INT}, {"next_attempt_at", COL_INT}, {"url", COL_STR},
};

/* A final status whose command asked for a callback shows the delivery's
 * state ("callback": PENDING, DELIVERED or FAILED, with attempts), read
 * from the dispatcher's table. Only final answers pay for this query; a
 * failure to read it leaves the answer as it was. */
static void add_callback_state(const char *request_id, char **json) {
    if (result_json_is_pending(*json)) return;
    char id[2 * ID_BUF], sql[320], err[128];
    if (mysql_esc(request_id, id, sizeof id, err, sizeof err)) return;
    snprintf(sql, sizeof sql,
             "SELECT status, attempts, last_status, last_error, delivered_at, next_attempt_at, url "
             "FROM webhook_deliveries WHERE id = 'msg_%s'",
             id);
    json_t *cb = NULL;
    if (select_one(sql, callback_cols, sizeof callback_cols / sizeof callback_cols[0], &cb, err, sizeof err)) return;
    json_t *doc = json_loads(*json, 0, NULL);
    char *text = NULL;
    if (doc && json_object_set_new(doc, "callback", cb) == 0) {
        cb = NULL;
        text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(cb);
    json_decref(doc);
    if (text) {
        free(*json);
        *json = text;
    }
}

int status_get_request(const char *request_id, int wait_ms, char **out, char *errstr, size_t errstr_size) {
    int64_t deadline = mono_ms() + wait_ms;
    bool asked_mysql = false;
    notify_waiter *w = NULL;
    int rc;
    for (;;) {
        char *val = NULL;
        rc = redis_get_request(request_id, &val, errstr, errstr_size);
        bool time_left = mono_ms() < deadline;
        if (rc == 0) {
            if (!result_json_is_pending(val) || !time_left) {
                *out = val;
                goto out;
            }
            free(val);
        } else if (rc < 0) {
            /* Redis is down: MySQL alone can still say the request is done;
             * if it does not know it, the honest answer is "unavailable". */
            char why[128];
            rc = mysql_get_request(request_id, out, why, sizeof why) == 0 ? 0 : -1;
            goto out;
        } else if (!asked_mysql || !time_left) {
            /* Unknown to Redis: expired from it, or written straight to Kafka
             * and not yet processed. Ask MySQL at the start and at the end of
             * the wait, not at every wake-up. */
            asked_mysql = true;
            rc = mysql_get_request(request_id, out, errstr, errstr_size);
            if (rc <= 0) goto out;
            if (!time_left) goto out;
        }
        if (!cfg.notify) {
            sleep_ms(POLL_MS);
            continue;
        }
        if (!w) {
            /* Registered only now, so the read above may have just missed
             * the result: read once more before sleeping (lost wakeup). */
            w = notify_register(cfg.notify, request_id);
            if (!w) sleep_ms(POLL_MS);
            continue;
        }
        if (notify_wait(cfg.notify, w, deadline) == NOTIFY_CLOSED) {
            /* Shutting down: answer with what the next read finds. */
            deadline = mono_ms();
        }
    }
out:
    if (w) notify_unregister(cfg.notify, w);
    if (rc == 0) add_callback_state(request_id, out);
    return rc;
}
