/* fuzz_parse.c — libFuzzer target for ingest's request parsing (parse.h).
 *
 * Everything an HTTP client controls before a command reaches Kafka goes
 * through parse.h: the path and method (parse_route_match), the body and the
 * headers that become envelope fields (parse_cmd), the callback URL and the
 * query values. This target feeds all of them from one input and checks the
 * module's promises: no input crashes, leaks or reads out of bounds (ASan,
 * UBSan, LeakSanitizer); a failure always names an HTTP status, a code and a
 * message; an accepted command passes cmd_validate(), has an entity key, and
 * survives an Avro encode/decode round trip unchanged, so anything ingest
 * accepts a processor can read back.
 *
 * Input layout (chosen so the seed corpus can be written by hand):
 *   byte 0   route: index into the sample paths below followed by the
 *            patterns of parse.h's route table, mod their count
 *   byte 1   flags: bit 0 path from input, bit 1 Idempotency-Key from input,
 *            bit 2 X-Client-Id from input, bits 3-4 Content-Type choice,
 *            bit 5 method GET instead of POST
 *   then, for each "from input" flag in bit order, one length byte and that
 *   many bytes; the rest is the body. The body is also given, NUL-terminated,
 *   to the query-value parsers and parse_callback_url.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "parse.h"

static const char *const fuzz_paths[] = {
    "/v1/coupon-policies",
    "/v1/coupon-policies/p1/issue",
    "/v1/coupons/p1:7/redeem",
    "/v1/coupons/p1:7/cancel",
    "/v1/points/u1/earn",
    "/v1/points/u1/use",
    "/v1/points/u1/cancel",
    "/v1/time-sales",
    "/v1/time-sales/s1/orders",
    "/v1/time-sales/s1/orders/o9/cancel",
    "/v1/coupon-policies/p1",
    "/v1/users/u1/coupons",
    "/v1/points/u1",
    "/v1/points/u1/history",
    "/v1/time-sales/s1",
    "/v1/time-sales/s1/orders/o9",
    "/v1/requests/r1",
    "/healthz",
};
#define FUZZ_NPATHS (sizeof fuzz_paths / sizeof fuzz_paths[0])

static const char *const fuzz_content_types[] = {
    "application/json",
    "Application/JSON; charset=utf-8",
    "text/plain",
    NULL,
};

#define FUZZ_ALLOW "127.0.0.1,localhost, hooks.example.com ,[::1]"

static codec *fuzz_codec;

/* The sample paths followed by every pattern of parse.h's route table with
 * its {ids} filled in, so routes added later are fuzzed without edits here. */
#define FUZZ_MAX_PATHS 128
static char fuzz_all_paths[FUZZ_MAX_PATHS][160];
static size_t fuzz_npaths;

static void fuzz_add_path(const char *path) {
    if (fuzz_npaths < FUZZ_MAX_PATHS && strlen(path) < sizeof fuzz_all_paths[0])
        strcpy(fuzz_all_paths[fuzz_npaths++], path);
}

static void fuzz_add_pattern(const char *pattern) {
    char path[160];
    size_t n = 0;
    for (const char *s = pattern; *s && n + 8 < sizeof path;) {
        if (*s != '{') {
            path[n++] = *s++;
            continue;
        }
        const char *end = strchr(s, '}');
        if (!end) return;
        const char *id = strncmp(s, "{coupon_id}", 11) == 0 ? "p1:7" : "id-1";
        memcpy(path + n, id, strlen(id));
        n += strlen(id);
        s = end + 1;
    }
    path[n] = '\0';
    fuzz_add_path(path);
}

/* Takes one length-prefixed field off the front of the input as a fresh
 * NUL-terminated heap string (freed by the caller), so ASan sees its exact
 * bounds. Returns NULL when the input has run out. */
static char *fuzz_take(const uint8_t **p, size_t *n) {
    if (*n < 1) return NULL;
    size_t len = (*p)[0];
    (*p)++, (*n)--;
    if (len > *n) len = *n;
    char *s = malloc(len + 1);
    if (!s) abort();
    memcpy(s, *p, len);
    s[len] = '\0';
    *p += len, *n -= len;
    return s;
}

static void fuzz_check_error(const parse_error *err) {
    if (err->status < 400 || err->status > 499 || !err->code || !err->code[0] || !err->message[0]) {
        fprintf(stderr, "parse error without status, code or message: %d %s\n", err->status,
                err->code ? err->code : "(null)");
        abort();
    }
    if (!memchr(err->field, '\0', sizeof err->field) || !memchr(err->message, '\0', sizeof err->message)) abort();
}

/* An accepted command must be one a processor would accept too. */
static void fuzz_check_cmd(const parse_route *route, const promo_cmd *cmd) {
    char field[80], why[240], key[PROMO_ID_MAX + 1];
    if (cmd->type != parse_route_cmd(route->id)) {
        fprintf(stderr, "route %s built command type %d\n", parse_route_name(route->id), (int)cmd->type);
        abort();
    }
    if (cmd_validate(cmd, field, sizeof field, why, sizeof why) != 0) {
        fprintf(stderr, "accepted command fails cmd_validate: %s: %s\n", field, why);
        abort();
    }
    if (cmd_entity_key(cmd, key, sizeof key) != 0) {
        fprintf(stderr, "accepted command has no entity key\n");
        abort();
    }
    codec_buf a = {0}, b = {0};
    char errstr[256];
    static promo_cmd back, again;
    if (codec_encode_cmd(fuzz_codec, cmd, &a, errstr, sizeof errstr) != CODEC_OK) {
        fprintf(stderr, "accepted command does not encode: %s\n", errstr);
        abort();
    }
    if (codec_decode_cmd(fuzz_codec, a.data, a.len, 0, &back, errstr, sizeof errstr) != CODEC_OK) {
        fprintf(stderr, "accepted command does not decode: %s\n", errstr);
        abort();
    }
    if (codec_encode_cmd(fuzz_codec, &back, &b, errstr, sizeof errstr) != CODEC_OK || a.len != b.len ||
        memcmp(a.data, b.data, a.len) != 0 || cmd_fingerprint(&back) != cmd_fingerprint(cmd) ||
        strcmp(back.request_id, cmd->request_id) != 0) {
        fprintf(stderr, "accepted command changes across an encode/decode round trip\n");
        abort();
    }
    (void)codec_decode_cmd(fuzz_codec, b.data, b.len, 0, &again, errstr, sizeof errstr);
    if (memcmp(&back, &again, sizeof back) != 0) abort();
    free(a.data);
    free(b.data);
}

static void fuzz_query_values(const char *s) {
    parse_error err;
    int limit = 0, wait_ms = 0;
    int64_t seq = 0;
    char cursor[PROMO_COUPON_ID_MAX + 1], why[240];

    memset(&err, 0, sizeof err);
    if (parse_limit(s, &limit, &err) == 0) {
        if (limit < 1 || limit > PARSE_LIMIT_MAX) abort();
    } else {
        fuzz_check_error(&err);
    }
    memset(&err, 0, sizeof err);
    if (parse_wait_ms(s, &wait_ms, &err) == 0) {
        if (wait_ms < 0 || wait_ms > PARSE_WAIT_MAX_MS) abort();
    } else {
        fuzz_check_error(&err);
    }
    memset(&err, 0, sizeof err);
    if (parse_coupon_cursor(s, cursor, sizeof cursor, &err) == 0) {
        if (!memchr(cursor, '\0', sizeof cursor)) abort();
    } else {
        fuzz_check_error(&err);
    }
    memset(&err, 0, sizeof err);
    if (parse_seq_cursor(s, &seq, &err) == 0) {
        if (seq < 0) abort();
    } else {
        fuzz_check_error(&err);
    }
    if (parse_callback_url(s, FUZZ_ALLOW, why, sizeof why) == 0 && strlen(s) > PROMO_URL_MAX) abort();
    (void)parse_content_type_json(s);
}

/* Avro-C's generic values keep pointers at unaligned offsets inside their
 * records, which LeakSanitizer does not scan by default: without this, the
 * codec's reused values look leaked while the codec still owns them. */
const char *__lsan_default_options(void);
const char *__lsan_default_options(void) {
    return "use_unaligned=1";
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char errstr[256];
    fuzz_codec = codec_new(errstr, sizeof errstr);
    if (!fuzz_codec) {
        fprintf(stderr, "codec_new: %s\n", errstr);
        abort();
    }
    for (size_t i = 0; i < FUZZ_NPATHS; i++) fuzz_add_path(fuzz_paths[i]);
    for (size_t i = 0; i < parse_route_count(); i++) {
        const char *method = NULL, *pattern = NULL;
        parse_route_at(i, &method, &pattern);
        if (pattern) fuzz_add_pattern(pattern);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    const char *sample_path = fuzz_all_paths[data[0] % fuzz_npaths];
    uint8_t flags = data[1];
    const uint8_t *p = data + 2;
    size_t n = size - 2;

    char *path_in = (flags & 1) ? fuzz_take(&p, &n) : NULL;
    char *idem = (flags & 2) ? fuzz_take(&p, &n) : NULL;
    char *client = (flags & 4) ? fuzz_take(&p, &n) : NULL;
    const char *ct = fuzz_content_types[(flags >> 3) & 3];
    const char *method = (flags & 32) ? "GET" : "POST";

    /* The body gets its own allocation of exactly its length and no NUL:
     * parse_cmd promises not to need one. */
    char *body = malloc(n ? n : 1);
    if (!body) abort();
    if (n) memcpy(body, p, n);

    parse_route route;
    parse_error err;
    memset(&err, 0, sizeof err);
    if (parse_route_match(method, path_in ? path_in : sample_path, &route, &err) != 0) {
        fuzz_check_error(&err);
    } else {
        (void)parse_route_name(route.id);
        (void)parse_route_role(route.id);
        if (!memchr(route.id1, '\0', sizeof route.id1) || !memchr(route.id2, '\0', sizeof route.id2)) abort();
        if (parse_route_is_write(route.id)) {
            parse_input in = {
                .route = &route,
                .content_type = ct,
                .body = body,
                .body_len = n,
                .idempotency_key = idem,
                .client_id = client,
                .fresh_request_id = "0123456789abcdef0123456789abcdef",
                .now_ms = 1700000000000LL,
                .webhook_allow = FUZZ_ALLOW,
            };
            static promo_cmd cmd;
            memset(&cmd, 0, sizeof cmd);
            memset(&err, 0, sizeof err);
            if (parse_cmd(&in, &cmd, &err) == 0)
                fuzz_check_cmd(&route, &cmd);
            else
                fuzz_check_error(&err);
        }
    }

    /* Query values and callback URLs are short strings; a bounded prefix of
     * the body keeps each run fast. */
    size_t qn = n < 4096 ? n : 4096;
    char *q = malloc(qn + 1);
    if (!q) abort();
    memcpy(q, p, qn);
    q[qn] = '\0';
    fuzz_query_values(q);

    free(q);
    free(body);
    free(path_in);
    free(idem);
    free(client);
    return 0;
}
