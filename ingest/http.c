/* http.c — the CivetWeb side of ingest: one request handler that routes,
 * authenticates, reads the body, and then either produces a command or
 * answers from Redis/MySQL.
 *
 * A write: parse_route_match (on the path as sent) → API key and role →
 * body (64 KiB cap) → parse_cmd (all field rules, no I/O) →
 * codec_encode_cmd → PENDING record queued for Redis (status.c's writer) →
 * produce_send, which blocks this worker until Kafka acknowledged (acks=all)
 * and Redis answered → 202. The PENDING record is written before the 202
 * goes out so that a client polling right away finds its request; a Redis
 * failure there is logged and the 202 still stands, because the command is
 * in Kafka. Under an Idempotency-Key, the PENDING record is instead written
 * with the request's fingerprint by status_claim() before the produce, and a
 * key that holds a different request is answered 422 with nothing sent.
 *
 * Before any of that, every request but the probes and /metrics takes a
 * token from its client address's bucket, and an authenticated one from its
 * API key's bucket (ratelimit.c); an empty bucket answers 429 with
 * Retry-After. A write that Kafka does not acknowledge within
 * PROMO_PRODUCE_TIMEOUT_MS (queue full, brokers down) answers 503 with
 * Retry-After: that bound is the backpressure, and since the producer keeps
 * reconnecting, writes succeed again as soon as Kafka is back.
 *
 * Every handler runs on a CivetWeb worker thread. Per-thread things (the
 * codec, which is not thread-safe, the body buffer, the Redis and MySQL
 * connections in status.c) live in thread-local storage; the state all
 * workers touch is the metric counters, which are atomics, the rate
 * limiters' lock stripes, the producer's partition gates (produce.c) and the
 * queue of PENDING records (status.c).
 */
#include "http.h"

#include <civetweb.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "codec.h"
#include "docs.h"
#include "keys.h"
#include "ops.h"
#include "parse.h"
#include "ratelimit.h"
#include "result_json.h"
#include "status.h"
#include "util.h"

#define MAX_KEYS 64
#define READY_TIMEOUT_MS 2000
#define RATE_IP_ENTRIES 100000

/* The OpenAPI document, ingest/openapi.json compiled in (see the Makefile). */
extern const char ingest_openapi_json[];

typedef enum { LIMITER_IP, LIMITER_KEY, LIMITER__COUNT } limiter;
static const char *const limiter_names[LIMITER__COUNT] = {"ip", "key"};

#define KEY_NAME_MAX 32

typedef struct api_key {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    parse_role role;
    char name[KEY_NAME_MAX + 1]; /* in logs and audits, never the key */
} api_key;

/* HTTP codes the server answers with; anything else is counted as "other". */
static const int metric_codes[] = {200, 202, 400, 401, 403, 404, 405, 413, 415, 422, 429, 500, 503};
#define N_CODES (sizeof metric_codes / sizeof metric_codes[0])

/* Latency buckets (produce and request), in seconds. */
static const double latency_s[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BUCKETS (sizeof latency_s / sizeof latency_s[0])

struct http_server {
    struct mg_context *ctx;
    http_config cfg;
    api_key keys[MAX_KEYS];
    int n_keys;
    atomic_ullong requests[ROUTE__COUNT][N_CODES + 1];
    prom_hist produce_latency;
    atomic_llong in_flight;
    prom_hist request_latency[ROUTE__COUNT];
    ratelimit *limiters[LIMITER__COUNT];
    atomic_ullong rate_limited[LIMITER__COUNT];
    atomic_bool draining;
};

/* Random bytes a worker draws from OpenSSL at a time, for request ids. */
#define RANDOM_POOL 512

/* Per worker thread; created on the first request it serves. */
typedef struct worker {
    codec *codec;
    codec_buf out;
    char *body; /* PARSE_BODY_MAX + 1 bytes */
    unsigned char random[RANDOM_POOL];
    size_t random_left; /* unused bytes at the end of random */
} worker;

/* This thread's digest context for API keys; see key_digest(). */
static _Thread_local EVP_MD_CTX *tl_md_ctx;
/* SHA-256, looked up once by http_start(). */
static EVP_MD *sha256_md;

static _Thread_local worker tw;

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
    OPENSSL_cleanse(tw.random, sizeof tw.random); /* unused request ids */
    memset(&tw, 0, sizeof tw);
    EVP_MD_CTX_free(tl_md_ctx);
    tl_md_ctx = NULL;
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
        for (const char *const *h = headers; h && h[0]; h += 2) mg_response_header_add(conn, h[0], h[1], -1);
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

static int hexval(int c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* PROMO_API_KEYS: comma-separated entries, each
 *
 *   <key>:<role>[:<name>]                 a key in clear (local use)
 *   sha256:<64 hex digits>:<role>[:<name>] the SHA-256 of a key (production)
 *
 * with role admin or client, and a name ([A-Za-z0-9_.-]{1,32}, by default
 * "key-" and the first 16 hex digits of the key's SHA-256) that the logs and
 * the audit (the actor of campaign controls and adjustments) name instead
 * of the key. Only digests are kept either way, and every request
 * compares against all of them in constant time, so several keys per role
 * rotate without downtime: add the new one, move the clients, drop the old. */
static int keys_parse(http_server *s, const char *list, char *errstr, size_t errstr_size) {
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 0) {
            p += *p == ',';
            continue;
        }
        int idx = s->n_keys + 1;
        if (s->n_keys == MAX_KEYS) {
            snprintf(errstr, errstr_size, "PROMO_API_KEYS: more than %d keys", MAX_KEYS);
            return -1;
        }
        api_key *k = &s->keys[s->n_keys];
        const char *end = p + n, *secret = p, *rest;
        int hashed = n > 7 && strncmp(p, "sha256:", 7) == 0;
        if (hashed) {
            secret = p + 7;
            rest = secret + 2 * SHA256_DIGEST_LENGTH;
            for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
                int hi = secret + 2 * i + 1 < end ? hexval(secret[2 * i]) : -1;
                int lo = hi >= 0 ? hexval(secret[2 * i + 1]) : -1;
                if (lo < 0) {
                    snprintf(errstr, errstr_size, "PROMO_API_KEYS entry %d: sha256: needs 64 hex digits", idx);
                    return -1;
                }
                k->digest[i] = (unsigned char)(hi << 4 | lo);
            }
            if (rest >= end || *rest != ':') {
                snprintf(errstr, errstr_size, "PROMO_API_KEYS entry %d: sha256:<64 hex>:role expected", idx);
                return -1;
            }
        } else {
            rest = memchr(p, ':', n);
            if (!rest || rest == p) {
                /* Never echo the entry: it holds a secret. */
                snprintf(errstr, errstr_size, "PROMO_API_KEYS entry %d is not key:role", idx);
                return -1;
            }
            SHA256((const unsigned char *)p, (size_t)(rest - p), k->digest);
        }
        const char *role = rest + 1, *colon = memchr(role, ':', (size_t)(end - role));
        size_t role_len = (size_t)((colon ? colon : end) - role);
        if (role_len == 5 && strncmp(role, "admin", 5) == 0)
            k->role = ROLE_ADMIN;
        else if (role_len == 6 && strncmp(role, "client", 6) == 0)
            k->role = ROLE_CLIENT;
        else {
            snprintf(errstr, errstr_size, "PROMO_API_KEYS entry %d: role must be admin or client", idx);
            return -1;
        }
        if (colon) {
            size_t name_len = (size_t)(end - colon - 1);
            if (name_len == 0 || name_len > KEY_NAME_MAX ||
                strspn(colon + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "abcdefghijklmnopqrstuvwxyz0123456789_.-") < name_len) {
                snprintf(errstr, errstr_size, "PROMO_API_KEYS entry %d: name must match [A-Za-z0-9_.-]{1,%d}", idx,
                         KEY_NAME_MAX);
                return -1;
            }
            memcpy(k->name, colon + 1, name_len);
            k->name[name_len] = '\0';
        } else {
            /* No name given: the first 16 hex digits of the key's SHA-256,
             * so the audit names a key without holding it. */
            snprintf(k->name, sizeof k->name, "key-%02x%02x%02x%02x%02x%02x%02x%02x", k->digest[0], k->digest[1],
                     k->digest[2], k->digest[3], k->digest[4], k->digest[5], k->digest[6], k->digest[7]);
        }
        s->n_keys++;
        p = end;
        if (*p == ',') p++;
    }
    if (s->n_keys == 0) {
        snprintf(errstr, errstr_size, "PROMO_API_KEYS holds no key");
        return -1;
    }
    return 0;
}

/* SHA-256 of n byte strings one after the other. OpenSSL 3's one-shot
 * SHA256() looks the algorithm up and allocates a context on every call,
 * which cost several times the hash itself on every request; the algorithm
 * is fetched once and the context kept per thread instead. Returns 0, or -1
 * when OpenSSL fails (out of memory). */
static int digest(size_t n, const void *const parts[], const size_t lens[], unsigned char out[SHA256_DIGEST_LENGTH]) {
    if (!tl_md_ctx) tl_md_ctx = EVP_MD_CTX_new();
    if (!tl_md_ctx || !EVP_DigestInit_ex2(tl_md_ctx, sha256_md ? sha256_md : EVP_sha256(), NULL)) return -1;
    for (size_t i = 0; i < n; i++)
        if (!EVP_DigestUpdate(tl_md_ctx, parts[i], lens[i])) return -1;
    return EVP_DigestFinal_ex(tl_md_ctx, out, NULL) ? 0 : -1;
}

/* SHA-256 of a presented key. */
static void key_digest(const char *key, size_t len, unsigned char out[SHA256_DIGEST_LENGTH]) {
    if (digest(1, (const void *[]){key}, (size_t[]){len}, out)) SHA256((const unsigned char *)key, len, out);
}

/* The role of the presented key, or ROLE_NONE; *index is the key's place in
 * the list (its rate-limit bucket). Digests have one length, and every key
 * is compared, so timing tells nothing about any key. */
static parse_role auth_role(http_server *s, const char *header, int *index) {
    *index = -1;
    if (!header || strncasecmp(header, "Bearer ", 7) != 0) return ROLE_NONE;
    const char *key = header + 7;
    while (*key == ' ') key++;
    unsigned char d[SHA256_DIGEST_LENGTH];
    key_digest(key, strlen(key), d);
    parse_role role = ROLE_NONE;
    for (int i = 0; i < s->n_keys; i++)
        if (CRYPTO_memcmp(d, s->keys[i].digest, sizeof d) == 0) role = s->keys[i].role, *index = i;
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

/* 128 random bits from OpenSSL's DRBG (seeded from the kernel, private to
 * each thread). Drawn RANDOM_POOL bytes at a time: a RAND_bytes() call has a
 * fixed cost (a profile put it at a tenth of a write's CPU) that 16 bytes
 * do not amortise. */
static void fresh_request_id(worker *w, char out[33]) {
    unsigned char raw[16];
    if (w->random_left < sizeof raw) {
        if (RAND_bytes(w->random, sizeof w->random) == 1) w->random_left = sizeof w->random;
    }
    if (w->random_left >= sizeof raw) {
        unsigned char *from = w->random + sizeof w->random - w->random_left;
        memcpy(raw, from, sizeof raw);
        OPENSSL_cleanse(from, sizeof raw); /* an id handed out is not kept */
        w->random_left -= sizeof raw;
    } else {
        size_t got = 0; /* the DRBG failed to seed: ask the kernel */
        while (got < sizeof raw) {
            ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
            if (r > 0) got += (size_t)r;
        }
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[32] = '\0';
}

/* The fingerprint of a write under an Idempotency-Key, as payment APIs keep
 * one: SHA-256 over the method, the path as sent and the body's bytes, in
 * hex. A NUL ends the method and the path, which cannot hold one, so two
 * different requests never hash the same bytes. The query string is left
 * out: no write reads one. Returns 0, or -1 when OpenSSL fails. */
static int request_fingerprint(const char *method, const char *path, const char *body, size_t body_len,
                               char out[2 * SHA256_DIGEST_LENGTH + 1]) {
    unsigned char d[SHA256_DIGEST_LENGTH];
    const void *parts[] = {method, path, body};
    size_t lens[] = {strlen(method) + 1, strlen(path) + 1, body_len};
    if (digest(3, parts, lens, d)) return -1;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof d; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * sizeof d] = '\0';
    return 0;
}

/* path: as sent, the one the route was matched on; actor: the caller's key, by its name
 * (the audit the campaign controls keep). */
static int handle_write(http_server *s, struct mg_connection *conn, const struct mg_request_info *ri, const char *path,
                        const parse_route *route, const char *actor, char *rid_out, size_t rid_size) {
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
    fresh_request_id(w, fresh);
    parse_input in = {
        .route = route,
        .content_type = mg_get_header(conn, "Content-Type"),
        .body = w->body,
        .body_len = (size_t)len,
        .idempotency_key = mg_get_header(conn, "Idempotency-Key"),
        .client_id = mg_get_header(conn, "X-Client-Id"),
        .actor = actor[0] ? actor : NULL,
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
    char pending[512];
    if (result_json_pending(&cmd, key, pending, sizeof pending)) {
        log_error("request %s: PENDING status does not fit", cmd.request_id);
        return send_error(conn, 500, "INTERNAL", NULL, "internal error", no_headers);
    }

    /* A client's own Idempotency-Key is claimed before the command is sent,
     * with the request's fingerprint, and a key that holds another request
     * is refused here (DESIGN.md §7). The processors would catch a reuse on
     * the same entity too, but only later, on promo.results, while polling
     * the key showed the first request's success as if it were this one's;
     * and a reuse on another entity lands on another partition, where nobody
     * has seen the key. A Redis failure lets the command go unclaimed, as
     * before there was a claim: the processor still dedupes its partition. */
    bool claimed = false;
    status_claimed made = {false, false};
    if (in.idempotency_key) {
        char fp[2 * SHA256_DIGEST_LENGTH + 1];
        if (request_fingerprint(ri->request_method, path, w->body, (size_t)len, fp)) {
            log_error("request %s: cannot hash the request", cmd.request_id);
            return send_error(conn, 500, "INTERNAL", NULL, "internal error", no_headers);
        }
        int crc = status_claim(cmd.request_id, fp, pending, promo_domain_name(d), cmd_type_name(cmd.type), key, &made,
                               errstr, sizeof errstr);
        if (crc == STATUS_KEY_REUSED)
            return send_error(conn, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key",
                              "this Idempotency-Key was already used for a different request", no_headers);
        if (crc < 0) log_warn("request %s: idempotency key not claimed: %s", cmd.request_id, errstr);
        claimed = crc == 0; /* new, or this very request again: the processor dedupes */
    }

    /* An unclaimed request's PENDING record is written while Kafka takes the
     * command: queued for status.c's writer now, so the Redis round trip
     * overlaps the Kafka one and shares a pipeline with other workers', and
     * one latch wakes this worker when both have answered. Before the 202
     * is early enough that a client polling right after it finds the
     * record, and NX keeps it from ever replacing the final status,
     * whichever comes first. */
    status_pending pr;
    latch done;
    bool pending_sent = !claimed;
    latch_init(&done, pending_sent ? 2 : 1);
    if (pending_sent) status_pending_send(&pr, cmd.request_id, pending, &done);

    int64_t t0 = mono_us();
    /* Returns once Kafka and, when sent, Redis have both answered. */
    int prc = produce_send(s->cfg.producer, d, key, w->out.data, w->out.len, &done, errstr, sizeof errstr);
    prom_hist_observe(&s->produce_latency, (double)(mono_us() - t0) / 1e6);
    if (prc) {
        log_error("request %s: produce to %s failed: %s", cmd.request_id, produce_topic(d), errstr);
        /* Nothing was sent: a retry starts afresh. */
        if (pending_sent && status_pending_finish(&pr, true, errstr, sizeof errstr))
            log_warn("request %s: %s", cmd.request_id, errstr);
        if (claimed && status_release(cmd.request_id, &made, errstr, sizeof errstr))
            log_warn("request %s: idempotency key not released: %s", cmd.request_id, errstr);
        return send_unavailable(conn, "KAFKA_UNAVAILABLE",
                                "the command could not be stored; retry with the same Idempotency-Key");
    }

    if (pending_sent && status_pending_finish(&pr, false, errstr, sizeof errstr))
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

/* POST /v1/coupons/{coupon_id}/validate: a body, but no command, and an
 * answer at once from the read models (status_validate_coupon()). */
static int handle_validate(struct mg_connection *conn, const struct mg_request_info *ri, const parse_route *r) {
    char errstr[256] = "", user_id[PROMO_ID_MAX + 1];
    worker *w = worker_get(errstr, sizeof errstr);
    if (!w) {
        log_error("worker setup: %s", errstr);
        return send_error(conn, 500, "INTERNAL", NULL, "internal error", no_headers);
    }
    long len = read_body(conn, ri, w);
    if (len == -2) return send_error(conn, 400, "INVALID_JSON", NULL, "could not read the body", no_headers);
    parse_error perr = {413, "PAYLOAD_TOO_LARGE", "", "body too large"};
    int64_t amount;
    if (len == -1 || parse_validate(mg_get_header(conn, "Content-Type"), w->body, (size_t)len, user_id, &amount, &perr))
        return send_parse_error(conn, &perr);
    char *body = NULL;
    int rc = status_validate_coupon(r->id1, user_id, amount, now_ms(), &body, errstr, sizeof errstr);
    return answer_read(conn, r, rc, body, errstr, "");
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
    case ROUTE_COUPON_VALIDATE: return handle_validate(conn, ri, r);
    case ROUTE_POLICY_LIST:
    case ROUTE_SALE_LIST: {
        char state[8], after[PROMO_ID_MAX + 1];
        if (parse_limit(query_get(ri, "limit", qbuf, sizeof qbuf), &limit, &perr) ||
            parse_state(query_get(ri, "state", qbuf, sizeof qbuf), state, &perr) ||
            parse_id_cursor(query_get(ri, "cursor", qbuf, sizeof qbuf), after, &perr))
            return send_parse_error(conn, &perr);
        rc = r->id == ROUTE_POLICY_LIST ? status_list_policies(state, after, limit, &body, errstr, sizeof errstr)
                                        : status_list_sales(state, after, limit, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "");
    }
    case ROUTE_POLICY_STATS:
        rc = status_policy_stats(r->id1, now_ms(), &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "no such coupon policy");
    case ROUTE_SALE_STATS:
        rc = status_sale_stats(r->id1, &body, errstr, sizeof errstr);
        return answer_read(conn, r, rc, body, errstr, "no such time sale");
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

static void write_metrics(http_server *s, prom *p) {
    char labels[96];
    prom_family(p, "promo_ingest_requests_total", "counter", "HTTP requests by route and status code.");
    for (int r = 0; r < ROUTE__COUNT; r++) {
        for (size_t c = 0; c <= N_CODES; c++) {
            unsigned long long v = atomic_load_explicit(&s->requests[r][c], memory_order_relaxed);
            if (!v) continue;
            char code[8];
            if (c < N_CODES)
                snprintf(code, sizeof code, "%d", metric_codes[c]);
            else
                snprintf(code, sizeof code, "other");
            snprintf(labels, sizeof labels, "route=\"%s\",code=\"%s\"", parse_route_name((parse_route_id)r), code);
            prom_u64(p, "promo_ingest_requests_total", labels, v);
        }
    }
    prom_family(p, "promo_ingest_produce_seconds", "histogram", "Time from produce to Kafka acknowledgement.");
    prom_hist_write(p, "promo_ingest_produce_seconds", NULL, &s->produce_latency);
    prom_family(p, "promo_ingest_request_seconds", "histogram", "Time to answer a request, by route.");
    for (int r = 0; r < ROUTE__COUNT; r++) {
        /* a route never asked for is 24 lines of zeros */
        if (!prom_hist_count(&s->request_latency[r])) continue;
        snprintf(labels, sizeof labels, "route=\"%s\"", parse_route_name((parse_route_id)r));
        prom_hist_write(p, "promo_ingest_request_seconds", labels, &s->request_latency[r]);
    }
    prom_family(p, "promo_ingest_rate_limited_total", "counter", "Requests refused with 429, by limiter.");
    for (int l = 0; l < LIMITER__COUNT; l++) {
        snprintf(labels, sizeof labels, "limiter=\"%s\"", limiter_names[l]);
        prom_u64(p, "promo_ingest_rate_limited_total", labels,
                 atomic_load_explicit(&s->rate_limited[l], memory_order_relaxed));
    }
    prom_family(p, "promo_ingest_rate_limit_rps", "gauge", "Configured refill rate per bucket (0 = no limit).");
    for (int l = 0; l < LIMITER__COUNT; l++) {
        snprintf(labels, sizeof labels, "limiter=\"%s\"", limiter_names[l]);
        prom_f64(p, "promo_ingest_rate_limit_rps", labels, ratelimit_rps(s->limiters[l]));
    }
    prom_family(p, "promo_ingest_rate_limit_burst", "gauge", "Configured bucket size (0 = no limit).");
    for (int l = 0; l < LIMITER__COUNT; l++) {
        snprintf(labels, sizeof labels, "limiter=\"%s\"", limiter_names[l]);
        prom_f64(p, "promo_ingest_rate_limit_burst", labels, ratelimit_burst(s->limiters[l]));
    }
    if (s->cfg.notify) {
        notify_stats ns;
        notify_get_stats(s->cfg.notify, &ns);
        prom_counter(p, "promo_ingest_notify_messages_total", "Decided request ids received on " KEY_DONE_CHANNEL ".",
                     ns.messages);
        prom_counter(p, "promo_ingest_notify_wakeups_total", "Long-polls woken by a decided request.", ns.wakeups);
        prom_counter(p, "promo_ingest_notify_subscriptions_total", "Subscriptions made (1 + reconnects).",
                     ns.reconnects);
        prom_gauge(p, "promo_ingest_notify_subscribed", "1 while subscribed to " KEY_DONE_CHANNEL ".", ns.connected);
        prom_gauge(p, "promo_ingest_long_polls", "Long-polls waiting now.", ns.waiting);
    }
    prom_gauge(p, "promo_ingest_in_flight", "Requests being handled now.", (long long)atomic_load(&s->in_flight));
}

static int handle_metrics(http_server *s, struct mg_connection *conn) {
    prom p;
    char *buf;
    size_t len;
    if (prom_open(&p) != 0) return send_error(conn, 500, "INTERNAL", NULL, "out of memory", no_headers);
    write_metrics(s, &p);
    if (prom_close(&p, &buf, &len) != 0) return send_error(conn, 500, "INTERNAL", NULL, "out of memory", no_headers);
    int rc = send_body(conn, 200, "text/plain; version=0.0.4", buf, len, no_headers);
    free(buf);
    return rc;
}

/* Serves one of Swagger UI's files, or docs.js. */
static int handle_docs_asset(http_server *s, struct mg_connection *conn, const parse_route *r) {
    if (strcmp(r->id1, "docs.js") == 0)
        return send_body(conn, 200, "application/javascript", docs_script, strlen(docs_script), no_headers);
    char path[4096];
    const char *mime;
    if (docs_asset(s->cfg.docs_dir, r->id1, path, sizeof path, &mime))
        return send_error(conn, 404, "NOT_FOUND", NULL, "no such file", no_headers);
    mg_send_mime_file(conn, path, mime);
    return 200;
}

/* ---- the handler ---- */

static void count(http_server *s, parse_route_id r, int status, int64_t us) {
    size_t c = 0;
    while (c < N_CODES && metric_codes[c] != status) c++;
    atomic_fetch_add_explicit(&s->requests[r][c], 1, memory_order_relaxed);
    prom_hist_observe(&s->request_latency[r], (double)us / 1e6);
}

/* Takes a token from the bucket of key in limiter l; on refusal answers 429
 * and returns its status, else 0. */
static int rate_check(http_server *s, struct mg_connection *conn, limiter l, const char *key) {
    int64_t wait_ns = ratelimit_take(s->limiters[l], key, mono_us() * 1000);
    if (wait_ns == 0) return 0;
    atomic_fetch_add_explicit(&s->rate_limited[l], 1, memory_order_relaxed);
    char retry[24];
    snprintf(retry, sizeof retry, "%lld", (long long)((wait_ns + 999999999) / 1000000000));
    const char *hdrs[] = {"Retry-After", retry, NULL};
    return send_error(conn, 429, "RATE_LIMITED", NULL,
                      l == LIMITER_KEY ? "too many requests for this API key" : "too many requests from this address",
                      hdrs);
}

/* Probes and scraping must work however busy the clients are. */
static bool route_rate_exempt(parse_route_id r) {
    return r == ROUTE_HEALTHZ || r == ROUTE_READYZ || r == ROUTE_METRICS;
}

/* Runs on a CivetWeb worker thread for every request. */
static int handle(struct mg_connection *conn, void *cbdata) {
    http_server *s = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    int64_t t0 = mono_us();
    atomic_fetch_add(&s->in_flight, 1);
    char rid[PROMO_ID_MAX + 1] = "";
    const char *key_name = NULL; /* the caller's key, by its name */
    parse_route route;
    parse_error perr;
    int status;
    /* Routed on the path exactly as sent (decode_url is off, see
     * http_start()): local_uri has dot segments removed, and with decoding
     * on, request_uri and local_uri_raw too are percent-decoded, so an id
     * "p%2F..%2Fx" would reach the entity "x". NULL for an absolute URI
     * naming another host: no route. */
    const char *path = ri->local_uri_raw ? ri->local_uri_raw : "";
    if (parse_route_match(ri->request_method, path, &route, &perr)) {
        route.id = ROUTE_NONE;
        status = send_parse_error(conn, &perr);
        goto done;
    }
    if (atomic_load_explicit(&s->draining, memory_order_relaxed) && route.id != ROUTE_HEALTHZ &&
        route.id != ROUTE_METRICS) {
        const char *hdrs[] = {"Retry-After", "1", "Connection", "close", NULL};
        status = send_error(conn, 503, "SHUTTING_DOWN", NULL, "this instance is shutting down; retry", hdrs);
        goto done;
    }
    if (!route_rate_exempt(route.id) && (status = rate_check(s, conn, LIMITER_IP, ri->remote_addr)) != 0) goto done;
    parse_role need = parse_route_role(route.id);
    if (need != ROLE_NONE) {
        int key_index;
        parse_role have = auth_role(s, mg_get_header(conn, "Authorization"), &key_index);
        if (have == ROLE_NONE) {
            const char *hdrs[] = {"WWW-Authenticate", "Bearer", NULL};
            status = send_error(conn, 401, "UNAUTHORIZED", NULL, "a valid API key is required", hdrs);
            goto done;
        }
        key_name = s->keys[key_index].name;
        /* The bucket is named by the key's place in the list, never by the key. */
        char bucket[16];
        snprintf(bucket, sizeof bucket, "k%d", key_index);
        if ((status = rate_check(s, conn, LIMITER_KEY, bucket)) != 0) goto done;
        if (need == ROLE_ADMIN && have != ROLE_ADMIN) {
            status = send_error(conn, 403, "FORBIDDEN", NULL, "this operation needs an admin key", no_headers);
            goto done;
        }
    }
    switch (route.id) {
    case ROUTE_HEALTHZ: status = send_json(conn, 200, OPS_HEALTHZ_BODY, no_headers); break;
    case ROUTE_READYZ: status = handle_ready(s, conn); break;
    case ROUTE_METRICS: status = handle_metrics(s, conn); break;
    case ROUTE_OPENAPI: status = send_json(conn, 200, ingest_openapi_json, no_headers); break;
    case ROUTE_DOCS:
        status = send_body(conn, 200, "text/html; charset=utf-8", docs_page, strlen(docs_page), no_headers);
        break;
    case ROUTE_DOCS_ASSET: status = handle_docs_asset(s, conn, &route); break;
    default:
        status = parse_route_is_write(route.id)
                     ? handle_write(s, conn, ri, path, &route, key_name ? key_name : "", rid, sizeof rid)
                     : handle_read(conn, ri, &route);
    }
done:;
    int64_t us = mono_us() - t0;
    count(s, route.id, status, us);
    atomic_fetch_sub(&s->in_flight, 1);
    /* Failures log their own line where they happen; this is the access log. */
    /* Writes an admin route allows are the audit trail: always logged, with
     * the key's name (never the key). */
    if (s->cfg.access_log || (parse_route_role(route.id) == ROLE_ADMIN && key_name))
        log_info("%s%s %s %d %lldus%s%s%s%s", s->cfg.access_log ? "" : "audit: ", ri->request_method,
                 path[0] ? path : "-", status, (long long)us, key_name ? " key=" : "", key_name ? key_name : "",
                 rid[0] ? " request_id=" : "", rid);
    return status;
}

/* Every route the server serves must be in the document it publishes, and
 * every documented operation must be served: checked at start, so the two
 * cannot drift apart unnoticed (tests/unit/test_parse.c checks the file too). */
static int routes_documented(char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *doc = json_loads(ingest_openapi_json, 0, &jerr);
    json_t *paths = json_object_get(doc, "paths");
    int rc = 0;
    if (!json_is_object(paths)) {
        snprintf(errstr, errstr_size, "embedded openapi.json: %s", doc ? "no paths" : jerr.text);
        rc = -1;
    }
    size_t served = 0;
    for (size_t i = 0; rc == 0 && i < parse_route_count(); i++) {
        const char *method, *pattern;
        parse_route_at(i, &method, &pattern);
        char lower[8];
        snprintf(lower, sizeof lower, "%s", method);
        for (char *c = lower; *c; c++) *c = (char)(*c - 'A' + 'a');
        if (!json_object_get(json_object_get(paths, pattern), lower)) {
            snprintf(errstr, errstr_size, "openapi.json does not document %s %s", method, pattern);
            rc = -1;
        }
        served++;
    }
    size_t documented = 0;
    const char *key;
    json_t *item;
    json_object_foreach(paths, key, item) {
        const char *ops[] = {"get", "post", "put", "patch", "delete"};
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) documented += json_object_get(item, ops[i]) != NULL;
    }
    if (rc == 0 && documented != served) {
        snprintf(errstr, errstr_size, "openapi.json documents %zu operations, the server serves %zu", documented,
                 served);
        rc = -1;
    }
    json_decref(doc);
    return rc;
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
    s->produce_latency = (prom_hist){.le = latency_s, .n = N_BUCKETS};
    for (int r = 0; r < ROUTE__COUNT; r++) s->request_latency[r] = (prom_hist){.le = latency_s, .n = N_BUCKETS};
    if (!sha256_md) sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); /* NULL: key_digest() falls back */
    if (keys_parse(s, cfg->api_keys, errstr, errstr_size) || routes_documented(errstr, errstr_size)) {
        free(s);
        return NULL;
    }
    s->limiters[LIMITER_KEY] = ratelimit_new(cfg->rate_key_rps, cfg->rate_key_burst, MAX_KEYS, errstr, errstr_size);
    s->limiters[LIMITER_IP] = s->limiters[LIMITER_KEY] ? ratelimit_new(cfg->rate_ip_rps, cfg->rate_ip_burst,
                                                                       RATE_IP_ENTRIES, errstr, errstr_size)
                                                       : NULL;
    if (!s->limiters[LIMITER_IP]) goto fail;
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
        /* Off: a path is routed as sent, never percent-decoded (handle());
         * query values are decoded by mg_get_var() all the same. */
        "decode_url",
        "no",
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
        goto fail;
    }
    mg_set_request_handler(s->ctx, "/", handle, s);
    return s;
fail:
    for (int l = 0; l < LIMITER__COUNT; l++) ratelimit_destroy(s->limiters[l]);
    free(s);
    return NULL;
}

void http_drain(http_server *s, int timeout_ms) {
    if (!s) return;
    atomic_store(&s->draining, true);
    int64_t deadline = mono_us() + (int64_t)timeout_ms * 1000;
    while (atomic_load(&s->in_flight) > 0 && mono_us() < deadline) sleep_ms(10);
    long long left = atomic_load(&s->in_flight);
    if (left > 0) log_warn("shutdown: %lld requests still in flight after %d ms", left, timeout_ms);
}

void http_stop(http_server *s) {
    if (!s) return;
    mg_stop(s->ctx);
    EVP_MD_free(sha256_md);
    sha256_md = NULL;
    for (int l = 0; l < LIMITER__COUNT; l++) ratelimit_destroy(s->limiters[l]);
    free(s);
}
