/* webhook.c — the delivery store (MySQL) and the sender (libcurl multi) of
 * the webhook dispatcher (webhook.h).
 *
 * The store speaks plain SQL through the MariaDB Connector/C, with literals
 * escaped by mysql_real_escape_string(); every write is one short
 * transaction, so several dispatchers can share the table: claims use
 * SELECT ... FOR UPDATE SKIP LOCKED (MariaDB 10.6+, MySQL 8) and a lease in
 * next_attempt_at rather than a lock held across the HTTP request.
 *
 * The sender keeps up to max_in_flight POSTs in one curl multi handle, so a
 * slow receiver holds one slot, not the dispatcher. Every transfer is locked
 * down the same way: http and https only, no redirects, no proxy from the
 * environment, short connect and total timeouts, and the URL libcurl uses is
 * the one whose host was checked against the allow-list (parsed once with
 * libcurl's own URL parser and compared with ours, then handed over as is).
 */
#include "webhook.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <mysql.h>

#include "url.h"
#include "util.h"

/* ---- strings ------------------------------------------------------------ */

/* A growable statement; oom is sticky and checked before sending. */
typedef struct sqlbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sqlbuf;

static void sql_reserve(sqlbuf *b, size_t add) {
    if (b->oom || b->len + add + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 16 * 1024;
    while (cap < b->len + add + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sql_addn(sqlbuf *b, const char *s, size_t n) {
    sql_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sql_add(sqlbuf *b, const char *s) {
    sql_addn(b, s, strlen(s));
}

static void sql_int(sqlbuf *b, int64_t v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    sql_addn(b, t, (size_t)n);
}

/* ---- the store ---------------------------------------------------------- */

struct webhook_store {
    MYSQL *conn;
    char *host, *user, *password, *db;
    int port;
    sqlbuf q;
};

/* A quoted literal of n bytes of s. */
static void sql_text(webhook_store *s, const char *v, size_t n) {
    sqlbuf *b = &s->q;
    sql_reserve(b, 2 * n + 2);
    if (b->oom) return;
    b->p[b->len++] = '\'';
    b->len += mysql_real_escape_string(s->conn, b->p + b->len, v, (unsigned long)n);
    b->p[b->len++] = '\'';
    b->p[b->len] = '\0';
}

static void sql_str(webhook_store *s, const char *v) {
    sql_text(s, v, strlen(v));
}

static int store_fail(webhook_store *s, const char *what, char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size, "%s: %s", what, s->conn ? mysql_error(s->conn) : "not connected");
    return -1;
}

static int store_exec(webhook_store *s, const char *q, size_t len, char *errstr, size_t errstr_size) {
    if (!s->conn) return store_fail(s, "mysql", errstr, errstr_size);
    if (mysql_real_query(s->conn, q, (unsigned long)len)) return store_fail(s, "mysql", errstr, errstr_size);
    /* Statements here return no rows, but drain any result to keep the
     * connection in step. */
    MYSQL_RES *r = mysql_store_result(s->conn);
    if (r) mysql_free_result(r);
    return 0;
}

static int store_exec_str(webhook_store *s, const char *q, char *errstr, size_t errstr_size) {
    return store_exec(s, q, strlen(q), errstr, errstr_size);
}

static int store_exec_q(webhook_store *s, char *errstr, size_t errstr_size) {
    if (s->q.oom) {
        snprintf(errstr, errstr_size, "out of memory building a statement");
        return -1;
    }
    return store_exec(s, s->q.p, s->q.len, errstr, errstr_size);
}

static void store_rollback(webhook_store *s) {
    if (s->conn) mysql_rollback(s->conn);
}

static int store_connect(webhook_store *s, char *errstr, size_t errstr_size) {
    MYSQL *c = mysql_init(NULL);
    if (!c) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    unsigned int timeout = 5;
    mysql_options(c, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    timeout = 30;
    mysql_options(c, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(c, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
    mysql_options(c, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(c, s->host, s->user, s->password, s->db, (unsigned int)s->port, NULL, 0)) {
        snprintf(errstr, errstr_size, "connecting to mysql %s:%d as %s: %s", s->host, s->port, s->user, mysql_error(c));
        mysql_close(c);
        return -1;
    }
    s->conn = c;
    /* READ COMMITTED: claims lock only the rows they return, no gaps, so
     * dispatchers and the enqueueing consumer never wait on each other. */
    if (store_exec_str(s, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", errstr, errstr_size) ||
        mysql_autocommit(c, 0)) {
        if (!*errstr) store_fail(s, "autocommit", errstr, errstr_size);
        mysql_close(c);
        s->conn = NULL;
        return -1;
    }
    return 0;
}

webhook_store *webhook_store_new(const webhook_store_cfg *cfg, char *errstr, size_t errstr_size) {
    webhook_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->host = strdup(cfg->host);
    s->user = strdup(cfg->user);
    s->password = strdup(cfg->password);
    s->db = strdup(cfg->db);
    s->port = cfg->port;
    if (!s->host || !s->user || !s->password || !s->db) {
        snprintf(errstr, errstr_size, "out of memory");
        webhook_store_destroy(s);
        return NULL;
    }
    errstr[0] = '\0';
    if (store_connect(s, errstr, errstr_size)) {
        webhook_store_destroy(s);
        return NULL;
    }
    return s;
}

void webhook_store_destroy(webhook_store *s) {
    if (!s) return;
    if (s->conn) mysql_close(s->conn);
    free(s->host);
    free(s->user);
    free(s->password);
    free(s->db);
    free(s->q.p);
    free(s);
}

int webhook_store_reconnect(webhook_store *s, char *errstr, size_t errstr_size) {
    if (s->conn) mysql_close(s->conn);
    s->conn = NULL;
    errstr[0] = '\0';
    return store_connect(s, errstr, errstr_size);
}

/* Statements stay well under max_allowed_packet (16 MB by default). */
#define ENQUEUE_STATEMENT_MAX (4u << 20)

int webhook_store_enqueue(webhook_store *s, const webhook_new *items, size_t n, int64_t now_ms, char *errstr,
                          size_t errstr_size) {
    if (n == 0) return 0;
    if (!s->conn) return store_fail(s, "enqueue", errstr, errstr_size);
    size_t i = 0;
    while (i < n) {
        s->q.len = 0;
        s->q.oom = false;
        /* ON DUPLICATE KEY rather than INSERT IGNORE: a repeated result
         * leaves its delivery alone, and any other problem is still an error. */
        sql_add(&s->q, "INSERT INTO webhook_deliveries (id, request_id, url, body, status, attempts, "
                       "next_attempt_at, created_at) VALUES ");
        size_t first = i;
        for (; i < n && (i == first || s->q.len < ENQUEUE_STATEMENT_MAX); i++) {
            const webhook_new *w = &items[i];
            char id[WEBHOOK_ID_MAX + 1];
            snprintf(id, sizeof id, "msg_%s", w->request_id);
            if (i > first) sql_add(&s->q, ",");
            sql_add(&s->q, "(");
            sql_str(s, id);
            sql_add(&s->q, ",");
            sql_str(s, w->request_id);
            sql_add(&s->q, ",");
            sql_str(s, w->url);
            sql_add(&s->q, ",");
            sql_str(s, w->body);
            sql_add(&s->q, ",'PENDING',0,");
            sql_int(&s->q, w->next_attempt_at);
            sql_add(&s->q, ",");
            sql_int(&s->q, now_ms);
            sql_add(&s->q, ")");
        }
        sql_add(&s->q, " ON DUPLICATE KEY UPDATE id = id");
        if (store_exec_q(s, errstr, errstr_size)) goto fail;
    }
    if (mysql_commit(s->conn)) {
        store_fail(s, "commit", errstr, errstr_size);
        goto fail;
    }
    return 0;
fail:
    store_rollback(s);
    return -1;
}

void webhook_delivery_clear(webhook_delivery *d) {
    free(d->url);
    free(d->body);
    memset(d, 0, sizeof *d);
}

int webhook_store_claim(webhook_store *s, int64_t now_ms, int64_t lease_until_ms, const char *token, size_t max,
                        webhook_delivery *out, size_t *n, char *errstr, size_t errstr_size) {
    *n = 0;
    if (max == 0) return 0;
    if (!s->conn) return store_fail(s, "claim", errstr, errstr_size);
    s->q.len = 0;
    s->q.oom = false;
    sql_add(&s->q, "SELECT id, request_id, url, body, attempts FROM webhook_deliveries "
                   "WHERE status = 'PENDING' AND next_attempt_at <= ");
    sql_int(&s->q, now_ms);
    sql_add(&s->q, " ORDER BY next_attempt_at LIMIT ");
    sql_int(&s->q, (int64_t)max);
    sql_add(&s->q, " FOR UPDATE SKIP LOCKED");
    if (s->q.oom || mysql_real_query(s->conn, s->q.p, (unsigned long)s->q.len)) {
        if (s->q.oom)
            snprintf(errstr, errstr_size, "out of memory");
        else
            store_fail(s, "claim", errstr, errstr_size);
        goto fail;
    }
    MYSQL_RES *r = mysql_store_result(s->conn);
    if (!r) {
        store_fail(s, "claim", errstr, errstr_size);
        goto fail;
    }
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) && *n < max) {
        unsigned long *len = mysql_fetch_lengths(r);
        webhook_delivery *d = &out[*n];
        memset(d, 0, sizeof *d);
        if (!row[0] || !row[1] || !row[2] || !row[3] || len[0] > WEBHOOK_ID_MAX || len[1] > PROMO_ID_MAX)
            continue; /* cannot be: the columns are NOT NULL and sized */
        memcpy(d->id, row[0], len[0]);
        memcpy(d->request_id, row[1], len[1]);
        snprintf(d->token, sizeof d->token, "%s", token);
        d->url = strndup(row[2], len[2]);
        d->body = malloc(len[3] + 1);
        if (!d->url || !d->body) {
            webhook_delivery_clear(d);
            mysql_free_result(r);
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
        memcpy(d->body, row[3], len[3]);
        d->body[len[3]] = '\0';
        d->body_len = len[3];
        d->attempts = row[4] ? atoi(row[4]) : 0;
        (*n)++;
    }
    mysql_free_result(r);
    if (*n == 0) {
        store_rollback(s);
        return 0;
    }
    s->q.len = 0;
    sql_add(&s->q, "UPDATE webhook_deliveries SET claim_token = ");
    sql_str(s, token);
    sql_add(&s->q, ", next_attempt_at = ");
    sql_int(&s->q, lease_until_ms);
    sql_add(&s->q, " WHERE id IN (");
    for (size_t i = 0; i < *n; i++) {
        if (i) sql_add(&s->q, ",");
        sql_str(s, out[i].id);
    }
    sql_add(&s->q, ")");
    if (store_exec_q(s, errstr, errstr_size)) goto fail;
    if (mysql_commit(s->conn)) {
        store_fail(s, "commit", errstr, errstr_size);
        goto fail;
    }
    return 0;
fail:
    store_rollback(s);
    for (size_t i = 0; i < *n; i++) webhook_delivery_clear(&out[i]);
    *n = 0;
    return -1;
}

static const char *fate_status(webhook_fate f) {
    switch (f) {
    case WEBHOOK_DELIVERED: return "DELIVERED";
    case WEBHOOK_RETRY: return "PENDING";
    default: return "FAILED";
    }
}

int webhook_store_finish(webhook_store *s, const webhook_delivery *d, const webhook_attempt *a, webhook_fate fate,
                         int64_t next_attempt_at, bool *lost, char *errstr, size_t errstr_size) {
    *lost = false;
    if (!s->conn) return store_fail(s, "finish", errstr, errstr_size);
    int attempt = d->attempts + (a->sent ? 1 : 0);
    if (a->sent) {
        s->q.len = 0;
        s->q.oom = false;
        sql_add(&s->q, "INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, error, duration_ms) "
                       "VALUES (");
        sql_str(s, d->id);
        sql_add(&s->q, ",");
        sql_int(&s->q, attempt);
        sql_add(&s->q, ",");
        sql_int(&s->q, a->at_ms);
        sql_add(&s->q, ",");
        sql_int(&s->q, a->http_status);
        sql_add(&s->q, ",");
        if (a->error[0])
            sql_str(s, a->error);
        else
            sql_add(&s->q, "NULL");
        sql_add(&s->q, ",");
        sql_int(&s->q, a->duration_ms > INT32_MAX ? INT32_MAX : a->duration_ms);
        sql_add(&s->q, ")");
        if (store_exec_q(s, errstr, errstr_size)) goto fail;
    }
    s->q.len = 0;
    s->q.oom = false;
    sql_add(&s->q, "UPDATE webhook_deliveries SET claim_token = NULL, status = ");
    sql_str(s, fate_status(fate));
    sql_add(&s->q, ", attempts = ");
    sql_int(&s->q, attempt);
    sql_add(&s->q, ", next_attempt_at = ");
    if (fate == WEBHOOK_RETRY)
        sql_int(&s->q, next_attempt_at);
    else
        sql_add(&s->q, "NULL");
    if (a->sent) {
        sql_add(&s->q, ", last_status = ");
        sql_int(&s->q, a->http_status);
    }
    sql_add(&s->q, ", last_error = ");
    if (a->error[0])
        sql_str(s, a->error);
    else
        sql_add(&s->q, "NULL");
    if (fate == WEBHOOK_DELIVERED) {
        sql_add(&s->q, ", delivered_at = ");
        sql_int(&s->q, a->at_ms + a->duration_ms);
    }
    sql_add(&s->q, " WHERE id = ");
    sql_str(s, d->id);
    sql_add(&s->q, " AND claim_token = ");
    sql_str(s, d->token);
    if (store_exec_q(s, errstr, errstr_size)) goto fail;
    *lost = mysql_affected_rows(s->conn) == 0;
    if (mysql_commit(s->conn)) {
        store_fail(s, "commit", errstr, errstr_size);
        goto fail;
    }
    return 0;
fail:
    store_rollback(s);
    return -1;
}

/* ---- the sender --------------------------------------------------------- */

typedef struct transfer {
    CURL *easy;
    CURLU *url;
    struct curl_slist *headers;
    webhook_delivery d;
    int64_t at_ms;
    int64_t started_mono;
    char retry_after[64]; /* the last response's header value, "" if none */
    char curl_err[CURL_ERROR_SIZE];
    struct transfer *prev, *next; /* the sender's list of transfers in flight */
} transfer;

struct webhook_sender {
    CURLM *multi;
    webhook_sender_cfg cfg; /* key, allow, proxy and user_agent point into owned copies */
    uint8_t key[WEBHOOK_KEY_MAX], key2[WEBHOOK_KEY_MAX];
    char *allow, *proxy, *user_agent;
    transfer *head; /* in flight */
    size_t in_flight;
    webhook_done *done; /* finished, waiting for webhook_sender_take() */
    size_t ndone, done_cap;
};

webhook_sender *webhook_sender_new(const webhook_sender_cfg *cfg, char *errstr, size_t errstr_size) {
    if (cfg->key_len > WEBHOOK_KEY_MAX || cfg->key2_len > WEBHOOK_KEY_MAX) {
        snprintf(errstr, errstr_size, "webhook key longer than %d bytes", WEBHOOK_KEY_MAX);
        return NULL;
    }
    webhook_sender *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    if (s->cfg.max_in_flight < 1) s->cfg.max_in_flight = 1;
    memcpy(s->key, cfg->key, cfg->key_len);
    s->cfg.key = s->key;
    if (cfg->key2_len) memcpy(s->key2, cfg->key2, cfg->key2_len);
    s->cfg.key2 = s->key2;
    s->allow = strdup(cfg->allow ? cfg->allow : "");
    s->proxy = strdup(cfg->proxy ? cfg->proxy : "");
    s->user_agent = strdup(cfg->user_agent ? cfg->user_agent : "promo-webhook");
    s->done_cap = s->cfg.max_in_flight;
    s->done = calloc(s->done_cap, sizeof *s->done);
    s->multi = curl_multi_init();
    if (!s->allow || !s->proxy || !s->user_agent || !s->done || !s->multi) {
        snprintf(errstr, errstr_size, "cannot set up libcurl (out of memory?)");
        webhook_sender_destroy(s);
        return NULL;
    }
    s->cfg.allow = s->allow;
    s->cfg.proxy = s->proxy;
    s->cfg.user_agent = s->user_agent;
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->cfg.max_in_flight);
    return s;
}

static void transfer_free(webhook_sender *s, transfer *t) {
    if (!t) return;
    if (t->prev || s->head == t) {
        if (t->prev)
            t->prev->next = t->next;
        else
            s->head = t->next;
        if (t->next) t->next->prev = t->prev;
        s->in_flight--;
    }
    if (t->easy) {
        curl_multi_remove_handle(s->multi, t->easy);
        curl_easy_cleanup(t->easy);
    }
    if (t->url) curl_url_cleanup(t->url);
    curl_slist_free_all(t->headers);
    webhook_delivery_clear(&t->d);
    free(t);
}

void webhook_sender_destroy(webhook_sender *s) {
    if (!s) return;
    /* Abandoned transfers: their rows stay leased and fall due again. */
    while (s->head) transfer_free(s, s->head);
    if (s->multi) curl_multi_cleanup(s->multi);
    for (size_t i = 0; i < s->ndone; i++) webhook_delivery_clear(&s->done[i].d);
    free(s->done);
    free(s->allow);
    free(s->proxy);
    free(s->user_agent);
    free(s);
}

size_t webhook_sender_in_flight(const webhook_sender *s) {
    return s->in_flight + s->ndone;
}

void webhook_sender_wakeup(webhook_sender *s) {
    curl_multi_wakeup(s->multi);
}

/* The response body is not needed, only its status: read and drop it. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}

/* Called for every header line of every response (a 100 Continue too), so a
 * status line starts the collection again. */
static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata) {
    transfer *t = userdata;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        t->retry_after[0] = '\0';
    } else if (n > 12 && strncasecmp(buf, "Retry-After:", 12) == 0) {
        size_t v = n - 12;
        if (v >= sizeof t->retry_after) v = sizeof t->retry_after - 1;
        memcpy(t->retry_after, buf + 12, v);
        t->retry_after[v] = '\0';
    }
    return n;
}

/* Our parser and libcurl's must see the same host: a disagreement means a
 * URL this module cannot vouch for. */
static int url_check(webhook_sender *s, transfer *t, char *why, size_t why_size) {
    char host[URL_HOST_MAX + 1];
    int port;
    if (url_host(t->d.url, host, sizeof host, &port, why, why_size) != 0) return 1;
    if (!url_host_allowed(host, s->allow)) {
        snprintf(why, why_size, "host %s is not on the allow list", host);
        return 1;
    }
    if (!(t->url = curl_url())) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    CURLUcode uc = curl_url_set(t->url, CURLUPART_URL, t->d.url, 0);
    if (uc != CURLUE_OK) {
        snprintf(why, why_size, "libcurl rejects the URL: %s", curl_url_strerror(uc));
        return 1;
    }
    char *curl_host = NULL;
    if (curl_url_get(t->url, CURLUPART_HOST, &curl_host, 0) != CURLUE_OK || !curl_host) {
        snprintf(why, why_size, "libcurl finds no host in the URL");
        return 1;
    }
    size_t n = strlen(curl_host);
    const char *ch = curl_host;
    if (n >= 2 && ch[0] == '[' && ch[n - 1] == ']') ch++, n -= 2;
    bool same = n == strlen(host) && strncasecmp(ch, host, n) == 0;
    curl_free(curl_host);
    if (!same) {
        snprintf(why, why_size, "the URL's host is ambiguous");
        return 1;
    }
    return 0;
}

int webhook_sender_start(webhook_sender *s, webhook_delivery *d, int64_t now_ms, char *why, size_t why_size) {
    if (s->in_flight + s->ndone >= s->cfg.max_in_flight) {
        snprintf(why, why_size, "more than %zu transfers in flight", s->cfg.max_in_flight);
        return -1;
    }
    transfer *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    t->d = *d; /* borrowed until the transfer is sure to start */
    int rc = url_check(s, t, why, why_size);
    if (rc != 0) goto undo;
    rc = -1;
    char sig[WEBHOOK_SIGNATURE_MAX], sig2[WEBHOOK_SIGNATURE_MAX] = "", h_id[32 + WEBHOOK_ID_MAX], h_ts[48],
                                     h_sig[32 + 2 * WEBHOOK_SIGNATURE_MAX];
    int64_t ts = now_ms / 1000;
    if (webhook_sign(s->key, s->cfg.key_len, t->d.id, ts, t->d.body, t->d.body_len, sig, sizeof sig) != 0 ||
        (s->cfg.key2_len &&
         webhook_sign(s->key2, s->cfg.key2_len, t->d.id, ts, t->d.body, t->d.body_len, sig2, sizeof sig2) != 0)) {
        snprintf(why, why_size, "cannot sign (out of memory)");
        goto undo;
    }
    snprintf(h_id, sizeof h_id, "webhook-id: %s", t->d.id);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", (long long)ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s%s%s", sig, sig2[0] ? " " : "", sig2);
    const char *lines[] = {"Content-Type: application/json", h_id, h_ts, h_sig,
                           "Expect:" /* no 100-continue round trip for larger bodies */};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        struct curl_slist *l = curl_slist_append(t->headers, lines[i]);
        if (!l) {
            snprintf(why, why_size, "out of memory");
            goto undo;
        }
        t->headers = l;
    }
    if (!(t->easy = curl_easy_init())) {
        snprintf(why, why_size, "cannot create a libcurl handle");
        goto undo;
    }
    CURL *e = t->easy;
    CURLcode cc = CURLE_OK;
#define SET(opt, val)                                                                                                  \
    if (cc == CURLE_OK) cc = curl_easy_setopt(e, opt, val)
    SET(CURLOPT_CURLU, t->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)s->cfg.connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, (long)s->cfg.timeout_ms);
    SET(CURLOPT_PROXY, s->proxy);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, t->d.body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->d.body_len);
    SET(CURLOPT_HTTPHEADER, t->headers);
    SET(CURLOPT_USERAGENT, s->user_agent);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, t);
    SET(CURLOPT_ERRORBUFFER, t->curl_err);
    SET(CURLOPT_PRIVATE, (void *)t);
#undef SET
    if (cc != CURLE_OK) {
        snprintf(why, why_size, "libcurl option: %s", curl_easy_strerror(cc));
        goto undo;
    }
    t->at_ms = now_ms;
    t->started_mono = mono_ms();
    CURLMcode mc = curl_multi_add_handle(s->multi, e);
    if (mc != CURLM_OK) {
        snprintf(why, why_size, "libcurl multi: %s", curl_multi_strerror(mc));
        goto undo;
    }
    memset(d, 0, sizeof *d); /* the transfer owns url and body now */
    t->next = s->head;
    if (s->head) s->head->prev = t;
    s->head = t;
    s->in_flight++;
    return 0;
undo:
    memset(&t->d, 0, sizeof t->d); /* still the caller's */
    transfer_free(s, t);
    return rc;
}

static void transfer_finish(webhook_sender *s, transfer *t, CURLcode result) {
    webhook_done *out = &s->done[s->ndone++];
    memset(out, 0, sizeof *out);
    out->d = t->d;
    memset(&t->d, 0, sizeof t->d);
    out->retry_after_ms = -1;
    webhook_attempt *a = &out->a;
    a->sent = true;
    a->at_ms = t->at_ms;
    a->duration_ms = mono_ms() - t->started_mono;
    long code = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    a->http_status = (int)code;
    if (result != CURLE_OK) {
        snprintf(a->error, sizeof a->error, "%s", t->curl_err[0] ? t->curl_err : curl_easy_strerror(result));
    } else if (code >= 200 && code < 300) {
        out->ok = true;
    } else if (code >= 300 && code < 400) {
        snprintf(a->error, sizeof a->error, "HTTP %ld (redirects are not followed)", code);
    } else {
        snprintf(a->error, sizeof a->error, "HTTP %ld", code);
    }
    int64_t delay;
    if (!out->ok && t->retry_after[0] &&
        webhook_retry_after_parse(t->retry_after, a->at_ms + a->duration_ms, &delay) == 0)
        out->retry_after_ms = delay;
    transfer_free(s, t);
}

int webhook_sender_run(webhook_sender *s, int wait_ms) {
    int running = 0;
    CURLMcode mc = curl_multi_perform(s->multi, &running);
    if (mc == CURLM_OK) mc = curl_multi_poll(s->multi, NULL, 0, wait_ms < 0 ? 0 : wait_ms, NULL);
    if (mc == CURLM_OK) mc = curl_multi_perform(s->multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        transfer *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        /* done has room for every transfer: start() counts it in. */
        if (t && s->ndone < s->done_cap) transfer_finish(s, t, msg->data.result);
    }
    return mc == CURLM_OK ? 0 : -1;
}

size_t webhook_sender_take(webhook_sender *s, webhook_done *out, size_t max) {
    size_t n = s->ndone < max ? s->ndone : max;
    memcpy(out, s->done, n * sizeof *out);
    memmove(s->done, s->done + n, (s->ndone - n) * sizeof *s->done);
    s->ndone -= n;
    return n;
}
