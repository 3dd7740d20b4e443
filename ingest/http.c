/* http.c — the CivetWeb side of ingest: one request handler that routes,
 * authenticates, reads the body, and then either produces a command or
 * answers from Redis/MySQL.
 *
 * A write: parse_route_match → API key and role → body (64 KiB cap) →
 * parse_cmd (all field rules, no I/O) → codec_encode_cmd → produce_send,
 * which blocks this worker until Kafka acknowledged (acks=all) → PENDING
 * record in Redis → 202. The PENDING record is written before the 202 goes
 * out so that a client polling right away finds its request; a Redis failure
 * there is logged and the 202 still stands, because the command is in Kafka.
 *
 * Every handler runs on a CivetWeb worker thread. Per-thread things (the
 * codec, which is not thread-safe, the body buffer, the Redis and MySQL
 * connections in status.c) live in thread-local storage; the only state all
 * workers touch is the metric counters, which are atomics. No lock is taken
 * on the request path.
 */
#include "http.h"

#include <civetweb.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "codec.h"
#include "parse.h"
#include "status.h"
#include "util.h"

#define MAX_KEYS 64
#define READY_TIMEOUT_MS 2000

typedef struct api_key {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    parse_role role;
} api_key;

/* HTTP codes the server answers with; anything else is counted as "other". */
static const int metric_codes[] = {200, 202, 400, 401, 403, 404, 405, 413, 415, 429, 500, 503};
#define N_CODES (sizeof metric_codes / sizeof metric_codes[0])

/* Produce latency buckets, in microseconds (rendered in seconds). */
static const long long latency_us[] = {500,    1000,   2500,   5000,    10000,   25000,   50000,
                                       100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
#define N_BUCKETS (sizeof latency_us / sizeof latency_us[0])

struct http_server {
    struct mg_context *ctx;
    http_config cfg;
    api_key keys[MAX_KEYS];
    int n_keys;
    atomic_ullong requests[ROUTE__COUNT][N_CODES + 1];
    atomic_ullong produce_buckets[N_BUCKETS + 1];
    atomic_ullong produce_count;
    atomic_ullong produce_sum_us;
    atomic_llong in_flight;
};

/* Per worker thread; created on the first request it serves. */
typedef struct worker {
    codec *codec;
    codec_buf out;
    char *body; /* PARSE_BODY_MAX + 1 bytes */
} worker;

static _Thread_local worker tw;

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static worker *worker_get(char *errstr, size_t errstr_size) {
    if (!tw.codec) {
        tw.codec = codec_new(errstr, errstr_size);
        if (!tw.codec) return NULL;
    }
    if (!tw.body) {
        tw.body = malloc(PARSE_BODY_MAX + 1);
        if (!tw.body) {
            snprintf(errstr, errstr_size, "out of memory");
            return NULL;
        }
    }
    return &tw;
}

static void worker_end(void) {
    if (tw.codec) codec_destroy(tw.codec);
    free(tw.out.data);
    free(tw.body);
    memset(&tw, 0, sizeof tw);
    status_thread_end();
}

/* ---- responses ---- */

static const char *const *no_headers = (const char *const[]){NULL};

/* Sends status, a body and extra headers (name, value pairs, NULL-ended).
 * Head and body go out in one write, one TCP segment for small answers: with
 * keep-alive and TCP_NODELAY, a second write per response costs a syscall
 * and a packet on every request. A response that must end the connection
 * (a body left unread) goes through CivetWeb's header API, which closes it. */
static int send_body(struct mg_connection *conn, int status, const char *type, const char *body, size_t len,
                     const char *const *headers) {
    bool close = false;
    for (const char *const *h = headers; h && h[0]; h += 2)
        if (strcasecmp(h[0], "Connection") == 0 && strcasecmp(h[1], "close") == 0) close = true;
    if (close) {
        char clen[24];
        snprintf(clen, sizeof clen, "%zu", len);
        mg_response_header_start(conn, status);
        mg_response_header_add(conn, "Content-Type", type, -1);
        mg_response_header_add(conn, "Content-Length", clen, -1);
        for (const char *const *h = headers; h && h[0]; h += 2)
            mg_response_header_add(conn, h[0], h[1], -1);
        mg_response_header_send(conn);
        if (len) mg_write(conn, body, len);
        return status;
    }
    char buf[4096];
    const struct mg_request_info *ri = mg_get_request_info(conn);
    /* An HTTP/1.0 client keeps the connection only if told so. */
    const char *conn_hdr = mg_get_header(conn, "Connection");
    bool ka10 =
        ri->http_version && strcmp(ri->http_version, "1.0") == 0 && conn_hdr && strcasecmp(conn_hdr, "keep-alive") == 0;
    int n = snprintf(
        buf, sizeof buf, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n%s",
        status, mg_get_response_code_text(conn, status), type, len, ka10 ? "Connection: keep-alive\r\n" : "");
    for (const char *const *h = headers; h && h[0] && n > 0 && (size_t)n < sizeof buf; h += 2)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%s: %s\r\n", h[0], h[1]);
    if (n < 0 || (size_t)n + 2 >= sizeof buf) return send_body(conn, 500, "text/plain", "", 0, NULL);
    memcpy(buf + n, "\r\n", 2);
    n += 2;
    if ((size_t)n + len <= sizeof buf) {
        memcpy(buf + n, body, len);
        mg_write(conn, buf, (size_t)n + len);
    } else {
        mg_write(conn, buf, (size_t)n);
        mg_write(conn, body, len);
    }
    return status;
}

static int send_json(struct mg_connection *conn, int status, const char *body, const char *const *headers) {
    return send_body(conn, status, "application/json", body, strlen(body), headers);
}

static int send_error(struct mg_connection *conn, int status, const char *code, const char *field, const char *message,
                      const char *const *headers) {
    json_t *e = json_pack("{s:s,s:s}", "code", code, "message", message);
    if (e && field && *field) json_object_set_new(e, "field", json_string(field));
    json_t *root = e ? json_pack("{s:o}", "error", e) : NULL;
    char *body = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    int rc = send_json(conn, status, body ? body : "{\"error\":{\"code\":\"INTERNAL\",\"message\":\"out of memory\"}}",
                       headers);
    free(body);
    return rc;
}

static int send_parse_error(struct mg_connection *conn, const parse_error *err) {
    const char *close[] = {"Connection", "close", NULL};
    /* A body we refused unread would be taken for the next request. */
    return send_error(conn, err->status, err->code, err->field, err->message, err->status == 413 ? close : no_headers);
}

static int send_unavailable(struct mg_connection *conn, const char *code, const char *message) {
    const char *hdrs[] = {"Retry-After", "1", NULL};
    return send_error(conn, 503, code, NULL, message, hdrs);
}

/* ---- auth ---- */

static int keys_parse(http_server *s, const char *list, char *errstr, size_t errstr_size) {
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *colon = memchr(p, ':', n);
        if (n == 0) {
            p += *p == ',';
            continue;
        }
        if (!colon || colon == p || s->n_keys == MAX_KEYS) {
            /* Never echo the entry: it holds a secret. */
            snprintf(errstr, errstr_size, "PROMO_API_KEYS entry %d is not key:role (or too many keys)", s->n_keys + 1);
            return -1;
        }
        size_t role_len = n - (size_t)(colon + 1 - p);
        parse_role role;
        if (role_len == 5 && strncmp(colon + 1, "admin", 5) == 0)
            role = ROLE_ADMIN;
        else if (role_len == 6 && strncmp(colon + 1, "client", 6) == 0)
            role = ROLE_CLIENT;
        else {
            snprintf(errstr, errstr_size, "PROMO_API_KEYS entry %d: role must be admin or client", s->n_keys + 1);
            return -1;
        }
        SHA256((const unsigned char *)p, (size_t)(colon - p), s->keys[s->n_keys].digest);
        s->keys[s->n_keys].role = role;
        s->n_keys++;
        p += n;
        if (*p == ',') p++;
    }
    if (s->n_keys == 0) {
        snprintf(errstr, errstr_size, "PROMO_API_KEYS holds no key");
        return -1;
    }
    return 0;
}

/* The role of the presented key, or ROLE_NONE. Digests have one length, and
 * every key is compared, so timing tells nothing about any key. */
static parse_role auth_role(http_server *s, const char *header) {
    if (!header || strncasecmp(header, "Bearer ", 7) != 0) return ROLE_NONE;
    const char *key = header + 7;
    while (*key == ' ')
        key++;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), d);
    parse_role role = ROLE_NONE;
    for (int i = 0; i < s->n_keys; i++)
        if (CRYPTO_memcmp(d, s->keys[i].digest, sizeof d) == 0) role = s->keys[i].role;
    return role;
}

/* ---- writes ---- */

/* Reads the body into w->body. Returns its length, -1 when it is larger than
 * PARSE_BODY_MAX, -2 on a read error. */
static long read_body(struct mg_connection *conn, const struct mg_request_info *ri, worker *w) {
    if (ri->content_length > PARSE_BODY_MAX) return -1;
    size_t want = ri->content_length >= 0 ? (size_t)ri->content_length : PARSE_BODY_MAX + 1;
    size_t n = 0;
    while (n < want) {
        int r = mg_read(conn, w->body + n, want - n);
        if (r < 0) return -2;
        if (r == 0) break;
        n += (size_t)r;
    }
    if (n > PARSE_BODY_MAX) return -1;
    return (long)n;
}

static void fresh_request_id(char out[33]) {
    unsigned char raw[16];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r > 0) got += (size_t)r;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[32] = '\0';
}

static void observe_produce(http_server *s, int64_t us) {
    size_t b = 0;
    while (b < N_BUCKETS && us > latency_us[b])
        b++;
    atomic_fetch_add_explicit(&s->produce_buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->produce_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->produce_sum_us, (unsigned long long)us, memory_order_relaxed);
}

static int handle_write(http_server *s, struct mg_connection *conn, const struct mg_request_info *ri,
                        const parse_route *route, char *rid_out, size_t rid_size) {
    char errstr[256];
    worker *w = worker_get(errstr, sizeof errstr);
    if (!w) {
        log_error("worker setup: %s", errstr);
        return send_error(conn, 500, "INTERNAL", NULL, "internal error", no_headers);
    }
    long len = read_body(conn, ri, w);
    if (len == -2) return send_error(conn, 400, "INVALID_JSON", NULL, "could not read the body", no_headers);
    if (len == -1) {
        parse_error e = {413, "PAYLOAD_TOO_LARGE", "", ""};
        snprintf(e.message, sizeof e.message, "body must be at most %d bytes", PARSE_BODY_MAX);
        return send_parse_error(conn, &e);
    }

    char fresh[33];
    fresh_request_id(fresh);
    parse_input in = {
        .route = route,
        .content_type = mg_get_header(conn, "Content-Type"),
        .body = w->body,
        .body_len = (size_t)len,
        .idempotency_key = mg_get_header(conn, "Idempotency-Key"),
        .client_id = mg_get_header(conn, "X-Client-Id"),
        .fresh_request_id = fresh,
        .now_ms = now_ms(),
        .webhook_allow = s->cfg.webhook_allow,
    };
    promo_cmd cmd;
    parse_error perr;
    if (parse_cmd(&in, &cmd, &perr)) return send_parse_error(conn, &perr);
    snprintf(rid_out, rid_size, "%s", cmd.request_id);

    char key[PROMO_ID_MAX + 1];
    if (cmd_entity_key(&cmd, key, sizeof key) ||
        codec_encode_cmd(w->codec, &cmd, &w->out, errstr, sizeof errstr) != CODEC_OK) {
        log_error("request %s: cannot encode %s: %s", cmd.request_id, cmd_type_name(cmd.type), errstr);
        return send_error(conn, 500, "INTERNAL", NULL, "internal error", no_headers);
    }

    promo_domain d = cmd_domain(cmd.type);
    int64_t t0 = mono_us();
    int prc = produce_send(s->cfg.producer, d, key, w->out.data, w->out.len, errstr, sizeof errstr);
    observe_produce(s, mono_us() - t0);
    if (prc) {
        log_error("request %s: produce to %s failed: %s", cmd.request_id, produce_topic(d), errstr);
        return send_unavailable(conn, "KAFKA_UNAVAILABLE",
                                "the command could not be stored; retry with the same Idempotency-Key");
    }

    /* Every string here is an id, a fixed name or a number: no escaping needed. */
    char pending[512];
    snprintf(pending, sizeof pending,
             "{\"request_id\":\"%s\",\"status\":\"PENDING\",\"reason\":null,\"domain\":\"%s\","
             "\"command_type\":\"%s\",\"entity_key\":\"%s\",\"submitted_at\":%lld,\"processed_at\":null,"
             "\"result\":{}}",
             cmd.request_id, promo_domain_name(d), cmd_type_name(cmd.type), key, (long long)cmd.submitted_at);
    if (status_put_pending(cmd.request_id, pending, errstr, sizeof errstr))
        log_warn("request %s: pending status not recorded: %s", cmd.request_id, errstr);

    char url[96], body[256];
    snprintf(url, sizeof url, "/v1/requests/%s", cmd.request_id);
    snprintf(body, sizeof body, "{\"request_id\":\"%s\",\"status\":\"PENDING\",\"status_url\":\"%s\"}", cmd.request_id,
             url);
    const char *hdrs[] = {"Location", url, NULL};
    return send_json(conn, 202, body, hdrs);
}

/* ---- reads ---- */

/* Query value name, or NULL when absent; "\x01" marks a value too long to be
 * valid, so the parser rejects it. */
static const char *query_get(const struct mg_request_info *ri, const char *name, char *buf, size_t size) {
    if (!ri->query_string) return NULL;
    int n = mg_get_var(ri->query_string, strlen(ri->query_string), name, buf, size);
    if (n == -1) return NULL;
    if (n < 0) return "\x01";
    return buf;
}

static int answer_read(struct mg_connection *conn, const parse_route *r, int rc, char *body, const char *errstr,
                       const char *what) {
    if (rc == 0) {
        int r = send_json(conn, 200, body, no_headers);
        free(body);
        return r;
    }
    if (rc == STATUS_NOT_FOUND) return send_error(conn, 404, "NOT_FOUND", NULL, what, no_headers);
    log_error("%s %s%s%s: %s", parse_route_name(r->id), r->id1, r->id2[0] ? " " : "", r->id2, errstr);
    return send_unavailable(conn, "STORE_UNAVAILABLE", "the status store is unavailable");
}

static int handle_read(struct mg_connection *conn, const struct mg_request_info *ri, const parse_route *r) {
    char errstr[256] = "", qbuf[128], cursor[PROMO_COUPON_ID_MAX + 1];
    char *body = NULL;
    parse_error perr;
    int limit, wait_ms, rc;
    int64_t seq;
    switch (r->id) {
    case ROUTE_REQUEST_GET:
        if (parse_wait_ms(query_get(ri, "wait_ms", qbuf, sizeof qbuf), &wait_ms, &perr))
            return send_parse_error(conn, &perr);
        rc = status_get_request(r->id1, wait_ms, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "no such request");
    case ROUTE_POLICY_GET:
        rc = status_get_policy(r->id1, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "no such coupon policy");
    case ROUTE_USER_COUPONS:
        if (parse_limit(query_get(ri, "limit", qbuf, sizeof qbuf), &limit, &perr) ||
            parse_coupon_cursor(query_get(ri, "cursor", qbuf, sizeof qbuf), cursor, sizeof cursor, &perr))
            return send_parse_error(conn, &perr);
        rc = status_list_coupons(r->id1, cursor, limit, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "");
    case ROUTE_POINTS_GET:
        rc = status_get_points(r->id1, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "");
    case ROUTE_POINTS_HISTORY:
        if (parse_limit(query_get(ri, "limit", qbuf, sizeof qbuf), &limit, &perr) ||
            parse_seq_cursor(query_get(ri, "cursor", qbuf, sizeof qbuf), &seq, &perr))
            return send_parse_error(conn, &perr);
        rc = status_list_history(r->id1, seq, limit, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "");
    case ROUTE_SALE_GET:
        rc = status_get_sale(r->id1, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "no such time sale");
    case ROUTE_SALE_ORDER_GET:
        rc = status_get_order(r->id1, r->id2, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "no such order");
    default: return send_error(conn, 404, "NOT_FOUND", NULL, "no such resource", no_headers);
    }
}

/* ---- operations ---- */

static int handle_ready(http_server *s, struct mg_connection *conn) {
    char kafka[256] = "ok", redis[256] = "ok", mysql[256] = "ok";
    bool ok = true;
    if (produce_ready(s->cfg.producer, READY_TIMEOUT_MS, kafka, sizeof kafka)) ok = false;
    if (status_ping_redis(redis, sizeof redis)) ok = false;
    if (status_ping_mysql(mysql, sizeof mysql)) ok = false;
    json_t *j = json_pack("{s:s,s:{s:s,s:s,s:s}}", "status", ok ? "ready" : "unavailable", "checks", "kafka", kafka,
                          "redis", redis, "mysql", mysql);
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!ok) log_warn("not ready: kafka=%s redis=%s mysql=%s", kafka, redis, mysql);
    int rc = send_json(conn, ok ? 200 : 503, body ? body : "{}", no_headers);
    free(body);
    return rc;
}

static int handle_metrics(http_server *s, struct mg_connection *conn) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return send_error(conn, 500, "INTERNAL", NULL, "out of memory", no_headers);
    fputs("# HELP promo_ingest_requests_total HTTP requests by route and status code.\n"
          "# TYPE promo_ingest_requests_total counter\n",
          f);
    for (int r = 0; r < ROUTE__COUNT; r++) {
        for (size_t c = 0; c <= N_CODES; c++) {
            unsigned long long v = atomic_load_explicit(&s->requests[r][c], memory_order_relaxed);
            if (!v) continue;
            char code[8];
            if (c < N_CODES)
                snprintf(code, sizeof code, "%d", metric_codes[c]);
            else
                snprintf(code, sizeof code, "other");
            fprintf(f, "promo_ingest_requests_total{route=\"%s\",code=\"%s\"} %llu\n",
                    parse_route_name((parse_route_id)r), code, v);
        }
    }
    fputs("# HELP promo_ingest_produce_seconds Time from produce to Kafka acknowledgement.\n"
          "# TYPE promo_ingest_produce_seconds histogram\n",
          f);
    unsigned long long cum = 0;
    for (size_t b = 0; b <= N_BUCKETS; b++) {
        cum += atomic_load_explicit(&s->produce_buckets[b], memory_order_relaxed);
        if (b < N_BUCKETS)
            fprintf(f, "promo_ingest_produce_seconds_bucket{le=\"%g\"} %llu\n", latency_us[b] / 1e6, cum);
        else
            fprintf(f, "promo_ingest_produce_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    fprintf(f, "promo_ingest_produce_seconds_sum %.6f\n",
            atomic_load_explicit(&s->produce_sum_us, memory_order_relaxed) / 1e6);
    fprintf(f, "promo_ingest_produce_seconds_count %llu\n", cum);
    fprintf(f,
            "# HELP promo_ingest_in_flight Requests being handled now.\n"
            "# TYPE promo_ingest_in_flight gauge\n"
            "promo_ingest_in_flight %lld\n",
            (long long)atomic_load(&s->in_flight));
    fclose(f);
    int rc = send_body(conn, 200, "text/plain; version=0.0.4", buf, len, no_headers);
    free(buf);
    return rc;
}

static const char openapi_json[] =
    "{\"openapi\":\"3.0.3\",\"info\":{\"title\":\"Promotion engine\",\"version\":\"1\","
    "\"description\":\"Writes answer 202 once Kafka has the command; poll status_url or use callback_url. "
    "Errors are {error:{code,message,field}}.\"},"
    "\"components\":{\"securitySchemes\":{\"bearer\":{\"type\":\"http\",\"scheme\":\"bearer\"}}},"
    "\"security\":[{\"bearer\":[]}],\"paths\":{"
    "\"/v1/coupon-policies\":{\"post\":{\"summary\":\"Create a coupon policy (admin)\"}},"
    "\"/v1/coupon-policies/{policy_id}\":{\"get\":{\"summary\":\"Policy with issued and remaining\"}},"
    "\"/v1/coupon-policies/{policy_id}/issue\":{\"post\":{\"summary\":\"Issue a coupon {user_id}\"}},"
    "\"/v1/coupons/{coupon_id}/redeem\":{\"post\":{\"summary\":\"Redeem {user_id, order_id, order_amount}\"}},"
    "\"/v1/coupons/{coupon_id}/cancel\":{\"post\":{\"summary\":\"Cancel a redemption {order_id}\"}},"
    "\"/v1/users/{user_id}/coupons\":{\"get\":{\"summary\":\"A user's coupons (?limit, ?cursor)\"}},"
    "\"/v1/points/{user_id}\":{\"get\":{\"summary\":\"Balance and next expiry\"}},"
    "\"/v1/points/{user_id}/history\":{\"get\":{\"summary\":\"Ledger, newest first (?limit, ?cursor)\"}},"
    "\"/v1/points/{user_id}/earn\":{\"post\":{\"summary\":\"Earn {amount, reason, expires_at?} (admin)\"}},"
    "\"/v1/points/{user_id}/use\":{\"post\":{\"summary\":\"Use {amount, order_id}\"}},"
    "\"/v1/points/{user_id}/cancel\":{\"post\":{\"summary\":\"Cancel a use {order_id}\"}},"
    "\"/v1/time-sales\":{\"post\":{\"summary\":\"Create a time sale (admin)\"}},"
    "\"/v1/time-sales/{sale_id}\":{\"get\":{\"summary\":\"Sale with sold and remaining\"}},"
    "\"/v1/time-sales/{sale_id}/orders\":{\"post\":{\"summary\":\"Order {user_id, quantity, order_id?}\"}},"
    "\"/v1/time-sales/{sale_id}/orders/{order_id}\":{\"get\":{\"summary\":\"One order\"}},"
    "\"/v1/time-sales/{sale_id}/orders/{order_id}/cancel\":{\"post\":{\"summary\":\"Cancel an order\"}},"
    "\"/v1/requests/{request_id}\":{\"get\":{\"summary\":\"Request status (?wait_ms long-polls, max 30000)\"}},"
    "\"/healthz\":{\"get\":{\"security\":[]}},\"/readyz\":{\"get\":{\"security\":[]}},"
    "\"/metrics\":{\"get\":{\"security\":[]}}}}";

static const char docs_html[] =
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Promotion engine API</title></head><body>"
    "<redoc spec-url=\"/openapi.json\"></redoc>"
    "<script src=\"https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js\"></script>"
    "<noscript><a href=\"/openapi.json\">openapi.json</a></noscript></body></html>";

/* ---- the handler ---- */

static void count(http_server *s, parse_route_id r, int status) {
    size_t c = 0;
    while (c < N_CODES && metric_codes[c] != status)
        c++;
    atomic_fetch_add_explicit(&s->requests[r][c], 1, memory_order_relaxed);
}

/* Runs on a CivetWeb worker thread for every request. */
static int handle(struct mg_connection *conn, void *cbdata) {
    http_server *s = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    int64_t t0 = s->cfg.access_log ? mono_us() : 0;
    atomic_fetch_add(&s->in_flight, 1);
    char rid[PROMO_ID_MAX + 1] = "";
    parse_route route;
    parse_error perr;
    int status;
    const char *path = ri->local_uri ? ri->local_uri : ri->request_uri;
    if (parse_route_match(ri->request_method, path ? path : "", &route, &perr)) {
        route.id = ROUTE_NONE;
        status = send_parse_error(conn, &perr);
        goto done;
    }
    parse_role need = parse_route_role(route.id);
    if (need != ROLE_NONE) {
        parse_role have = auth_role(s, mg_get_header(conn, "Authorization"));
        if (have == ROLE_NONE) {
            const char *hdrs[] = {"WWW-Authenticate", "Bearer", NULL};
            status = send_error(conn, 401, "UNAUTHORIZED", NULL, "a valid API key is required", hdrs);
            goto done;
        }
        if (need == ROLE_ADMIN && have != ROLE_ADMIN) {
            status = send_error(conn, 403, "FORBIDDEN", NULL, "this operation needs an admin key", no_headers);
            goto done;
        }
    }
    switch (route.id) {
    case ROUTE_HEALTHZ: status = send_json(conn, 200, "{\"status\":\"ok\"}", no_headers); break;
    case ROUTE_READYZ: status = handle_ready(s, conn); break;
    case ROUTE_METRICS: status = handle_metrics(s, conn); break;
    case ROUTE_OPENAPI: status = send_json(conn, 200, openapi_json, no_headers); break;
    case ROUTE_DOCS:
        status = send_body(conn, 200, "text/html; charset=utf-8", docs_html, sizeof docs_html - 1, no_headers);
        break;
    default:
        status = parse_route_is_write(route.id) ? handle_write(s, conn, ri, &route, rid, sizeof rid)
                                                : handle_read(conn, ri, &route);
    }
done:
    count(s, route.id, status);
    atomic_fetch_sub(&s->in_flight, 1);
    if (s->cfg.access_log)
        log_info("%s %s %d %lldus%s%s", ri->request_method, path ? path : "-", status, (long long)(mono_us() - t0),
                 rid[0] ? " request_id=" : "", rid);
    return status;
}

static int on_log_message(const struct mg_connection *conn, const char *message) {
    (void)conn;
    log_warn("civetweb: %s", message);
    return 1;
}

static void on_exit_thread(const struct mg_context *ctx, int thread_type, void *thread_pointer) {
    (void)ctx, (void)thread_pointer;
    if (thread_type == 1) worker_end();
}

http_server *http_start(const http_config *cfg, char *errstr, size_t errstr_size) {
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    if (keys_parse(s, cfg->api_keys, errstr, errstr_size)) {
        free(s);
        return NULL;
    }
    char threads[16], keep_alive[16];
    snprintf(threads, sizeof threads, "%d", cfg->threads);
    snprintf(keep_alive, sizeof keep_alive, "%d", cfg->keep_alive_ms);
    const char *options[] = {
        "listening_ports",
        cfg->listen,
        "num_threads",
        threads,
        "enable_keep_alive",
        "yes",
        "keep_alive_timeout_ms",
        keep_alive,
        "tcp_nodelay",
        "1",
        "listen_backlog",
        "1024",
        "request_timeout_ms",
        "35000", /* above the longest long-poll */
        NULL,
    };
    struct mg_callbacks cb = {0};
    cb.log_message = on_log_message;
    cb.exit_thread = on_exit_thread;
    struct mg_init_data init = {.callbacks = &cb, .user_data = s, .configuration_options = options};
    struct mg_error_data err = {.text = errstr, .text_buffer_size = errstr_size};
    s->ctx = mg_start2(&init, &err);
    if (!s->ctx) {
        if (!errstr[0]) snprintf(errstr, errstr_size, "cannot start the HTTP server on %s", cfg->listen);
        free(s);
        return NULL;
    }
    mg_set_request_handler(s->ctx, "/", handle, s);
    return s;
}

void http_stop(http_server *s) {
    if (!s) return;
    mg_stop(s->ctx);
    free(s);
}
