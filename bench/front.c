/* front.c — the CivetWeb front of the baselines (see front.h): routing,
 * bearer keys, JSON bodies, answers. Everything here runs on CivetWeb worker
 * threads except front_main's start and stop; the only shared data, the key
 * list, is read-only once the server runs.
 */
#include "front.h"

#include <civetweb.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "util.h"

#define FRONT_KEYS_MAX 16
#define FRONT_BODY_MAX 4096

typedef struct front_key {
    char key[128];
    bool admin;
} front_key;

static front_key front_keys[FRONT_KEYS_MAX];
static int front_n_keys;
static const front_backend *front_be;
static volatile sig_atomic_t front_stop;

static void front_on_signal(int sig) {
    (void)sig;
    front_stop = 1;
}

static int front_keys_parse(const char *spec) {
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        if (!colon || front_n_keys == FRONT_KEYS_MAX || (size_t)(colon - tok) >= sizeof front_keys[0].key) return -1;
        *colon = '\0';
        snprintf(front_keys[front_n_keys].key, sizeof front_keys[0].key, "%s", tok);
        front_keys[front_n_keys].admin = strcmp(colon + 1, "admin") == 0;
        front_n_keys++;
    }
    return front_n_keys > 0 ? 0 : -1;
}

/* 1 admin, 0 client, -1 no valid key. */
static int front_role(struct mg_connection *conn) {
    const char *h = mg_get_header(conn, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return -1;
    for (int i = 0; i < front_n_keys; i++)
        if (strcmp(h + 7, front_keys[i].key) == 0) return front_keys[i].admin;
    return -1;
}

static int front_send(struct mg_connection *conn, int status, const char *body) {
    char head[256];
    size_t len = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n\r\n",
                     status, mg_get_response_code_text(conn, status), len);
    char buf[2048];
    if ((size_t)n + len <= sizeof buf) {
        memcpy(buf, head, (size_t)n);
        memcpy(buf + n, body, len);
        mg_write(conn, buf, (size_t)n + len);
    } else {
        mg_write(conn, head, (size_t)n);
        mg_write(conn, body, len);
    }
    return status;
}

static int front_error(struct mg_connection *conn, int status, const char *code, const char *message) {
    char body[512];
    snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, message);
    return front_send(conn, status, body);
}

/* Reads the JSON body. Caller frees with json_decref(). NULL when absent,
 * too large or not a JSON object. */
static json_t *front_body(struct mg_connection *conn) {
    char buf[FRONT_BODY_MAX + 1];
    size_t n = 0;
    for (;;) {
        int r = mg_read(conn, buf + n, sizeof buf - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        if (n == sizeof buf - 1) return NULL;
    }
    json_t *doc = json_loadb(buf, n, 0, NULL);
    if (doc && !json_is_object(doc)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static void front_request_id(struct mg_connection *conn, char out[PROMO_ID_MAX + 1]) {
    const char *idem = mg_get_header(conn, "Idempotency-Key");
    if (idem && promo_id_valid(idem)) {
        snprintf(out, PROMO_ID_MAX + 1, "%s", idem);
        return;
    }
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) memset(raw, 0, sizeof raw);
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

static int front_create(struct mg_connection *conn) {
    if (front_role(conn) != 1) return front_error(conn, 403, "FORBIDDEN", "admin key required");
    json_t *doc = front_body(conn);
    const char *pid = doc ? json_string_value(json_object_get(doc, "policy_id")) : NULL;
    json_int_t qty = doc ? json_integer_value(json_object_get(doc, "total_quantity")) : 0;
    json_t *lim = doc ? json_object_get(doc, "per_user_limit") : NULL;
    int per_user = lim ? (int)json_integer_value(lim) : 1;
    char policy_id[PROMO_ID_MAX + 1];
    if (!pid || !promo_id_valid(pid) || qty < 1 || per_user < 1) {
        json_decref(doc);
        return front_error(conn, 400, "INVALID_FIELD", "policy_id, total_quantity >= 1, per_user_limit >= 1");
    }
    snprintf(policy_id, sizeof policy_id, "%s", pid);
    json_decref(doc);
    char errstr[256];
    if (front_be->create_policy(policy_id, (long long)qty, per_user, errstr, sizeof errstr) != 0) {
        log_error("create %s: %s", policy_id, errstr);
        return front_error(conn, 503, "UNAVAILABLE", "store failed");
    }
    char rid[PROMO_ID_MAX + 1], body[512];
    front_request_id(conn, rid);
    snprintf(body, sizeof body,
             "{\"request_id\":\"%s\",\"status\":\"SUCCEEDED\",\"reason\":null,\"domain\":\"COUPON\","
             "\"command_type\":\"CreateCouponPolicy\",\"entity_key\":\"%s\",\"result\":{\"policy_id\":\"%s\","
             "\"issued\":0,\"remaining\":%lld}}",
             rid, policy_id, policy_id, (long long)qty);
    return front_send(conn, 200, body);
}

static int front_issue(struct mg_connection *conn, const char *policy_id) {
    if (front_role(conn) < 0) return front_error(conn, 401, "UNAUTHORIZED", "missing or unknown API key");
    json_t *doc = front_body(conn);
    const char *uid = doc ? json_string_value(json_object_get(doc, "user_id")) : NULL;
    char user_id[PROMO_ID_MAX + 1];
    if (!uid || !promo_id_valid(uid)) {
        json_decref(doc);
        return front_error(conn, 400, "INVALID_FIELD", "user_id must match [A-Za-z0-9_.-]{1,64}");
    }
    snprintf(user_id, sizeof user_id, "%s", uid);
    json_decref(doc);
    char rid[PROMO_ID_MAX + 1], errstr[256], body[1024];
    front_request_id(conn, rid);
    long long serial = 0;
    const char *reason = NULL;
    int rc = front_be->issue(policy_id, user_id, now_ms(), &serial, &reason, errstr, sizeof errstr);
    if (rc == FRONT_ERROR) {
        log_error("request %s: %s", rid, errstr);
        return front_error(conn, 503, "UNAVAILABLE", "store failed; retry");
    }
    if (rc == FRONT_ISSUED)
        snprintf(body, sizeof body,
                 "{\"request_id\":\"%s\",\"status\":\"SUCCEEDED\",\"reason\":null,\"domain\":\"COUPON\","
                 "\"command_type\":\"IssueCoupon\",\"entity_key\":\"%s\",\"result\":{\"user_id\":\"%s\","
                 "\"policy_id\":\"%s\",\"coupon_id\":\"%s:%lld\",\"coupon_status\":\"ISSUED\"}}",
                 rid, policy_id, user_id, policy_id, policy_id, serial);
    else
        snprintf(body, sizeof body,
                 "{\"request_id\":\"%s\",\"status\":\"REJECTED\",\"reason\":\"%s\",\"domain\":\"COUPON\","
                 "\"command_type\":\"IssueCoupon\",\"entity_key\":\"%s\",\"result\":{\"user_id\":\"%s\","
                 "\"policy_id\":\"%s\"}}",
                 rid, reason, policy_id, user_id, policy_id);
    return front_send(conn, 200, body);
}

/* Runs on a CivetWeb worker thread. */
static int front_handle(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *uri = ri->local_uri ? ri->local_uri : "";
    if (strcmp(uri, "/healthz") == 0 || strcmp(uri, "/readyz") == 0) return front_send(conn, 200, "{\"ok\":true}");
    if (strcmp(ri->request_method, "POST") != 0) return front_error(conn, 405, "METHOD_NOT_ALLOWED", "POST only");
    if (strcmp(uri, "/v1/coupon-policies") == 0) return front_create(conn);
    const char *prefix = "/v1/coupon-policies/", *suffix = "/issue";
    size_t pl = strlen(prefix), ul = strlen(uri), sl = strlen(suffix);
    if (ul > pl + sl && strncmp(uri, prefix, pl) == 0 && strcmp(uri + ul - sl, suffix) == 0) {
        char policy_id[PROMO_ID_MAX + 1];
        size_t idl = ul - pl - sl;
        if (idl > PROMO_ID_MAX) return front_error(conn, 404, "NOT_FOUND", "no such route");
        memcpy(policy_id, uri + pl, idl);
        policy_id[idl] = '\0';
        if (!promo_id_valid(policy_id)) return front_error(conn, 404, "NOT_FOUND", "no such route");
        return front_issue(conn, policy_id);
    }
    return front_error(conn, 404, "NOT_FOUND", "no such route");
}

static void front_exit_thread(const struct mg_context *ctx, int thread_type, void *thread_pointer) {
    (void)ctx, (void)thread_pointer;
    if (thread_type == 1 && front_be->thread_end) front_be->thread_end();
}

int front_main(const front_backend *b, int argc, char **argv) {
    log_init(b->name);
    front_be = b;
    long long port = cfg_int("PROMO_HTTP_PORT", 4000);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--port N]\n", b->name);
            return 2;
        }
    }
    long long threads = cfg_int("PROMO_HTTP_THREADS", 64);
    if (port < 1 || port > 65535 || threads < 1 || threads > 1024 ||
        front_keys_parse(cfg_str("PROMO_API_KEYS", "dev-admin-key:admin,dev-client-key:client")) != 0) {
        log_error("bad configuration: port, PROMO_HTTP_THREADS or PROMO_API_KEYS");
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = front_on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char errstr[512] = "";
    if (b->setup(errstr, sizeof errstr) != 0) {
        log_error("setup failed: %s", errstr);
        return 1;
    }
    mg_init_library(0);
    char listen[64], nthreads[16];
    snprintf(listen, sizeof listen, "127.0.0.1:%lld", port);
    snprintf(nthreads, sizeof nthreads, "%lld", threads);
    char keep_alive[16];
    snprintf(keep_alive, sizeof keep_alive, "%lld", cfg_int("PROMO_HTTP_KEEPALIVE_MS", 5000));
    const char *options[] = {"listening_ports",
                             listen,
                             "num_threads",
                             nthreads,
                             "enable_keep_alive",
                             "yes",
                             "keep_alive_timeout_ms",
                             keep_alive,
                             "tcp_nodelay",
                             "1",
                             "listen_backlog",
                             "1024",
                             NULL};
    struct mg_callbacks cb = {0};
    cb.exit_thread = front_exit_thread;
    struct mg_init_data init = {.callbacks = &cb, .user_data = NULL, .configuration_options = options};
    struct mg_error_data err = {.text = errstr, .text_buffer_size = sizeof errstr};
    struct mg_context *ctx = mg_start2(&init, &err);
    if (!ctx) {
        log_error("cannot listen on %s: %s", listen, errstr);
        return 1;
    }
    mg_set_request_handler(ctx, "/", front_handle, NULL);
    log_info("listening on %s with %lld threads", listen, threads);
    while (!front_stop) pause();
    mg_stop(ctx);
    mg_exit_library();
    log_info("stopped");
    return 0;
}
