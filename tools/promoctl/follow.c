/* follow.c — `promoctl follow [--timeout-ms N] <request_id>`: waits for a
 * request's final status and prints its status JSON, read where ingest reads
 * it: Redis first (promo:req:<id>), MySQL's requests table when Redis does
 * not have it. Exit status 3 when no final status came in time.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "ctl.h"
#include "keys.h"
#include "util.h"

/* The status JSON of a request from Redis, else from MySQL; NULL when neither
 * has it (yet). Caller frees. Unreachable stores are skipped with a warning
 * once: the other one may answer. */
static char *status_lookup(redisContext **rc, MYSQL **my, const char *request_id, int *warned) {
    char errstr[512];
    if (!*rc || (*rc)->err) {
        if (*rc) redisFree(*rc);
        *rc = ctl_redis_new(errstr, sizeof errstr);
        if (!*rc && !(*warned & 1)) fprintf(stderr, "promoctl: %s\n", errstr), *warned |= 1;
    }
    if (*rc) {
        redisReply *r = redisCommand(*rc, "GET " KEY_REQ_PREFIX "%s", request_id);
        char *out = NULL;
        if (r && r->type == REDIS_REPLY_STRING) out = strndup(r->str, r->len);
        if (r) freeReplyObject(r);
        if (out) return out;
    }
    if (!*my) {
        *my = ctl_mysql_new(errstr, sizeof errstr);
        if (!*my && !(*warned & 2)) fprintf(stderr, "promoctl: %s\n", errstr), *warned |= 2;
    }
    if (*my) {
        char esc[2 * PROMO_ID_MAX + 1], q[256];
        size_t n = strlen(request_id);
        if (n > PROMO_ID_MAX) return NULL;
        mysql_real_escape_string(*my, esc, request_id, (unsigned long)n);
        snprintf(q, sizeof q, "SELECT result FROM requests WHERE request_id = '%s'", esc);
        if (mysql_query(*my, q) != 0) {
            mysql_close(*my);
            *my = NULL;
            return NULL;
        }
        MYSQL_RES *res = mysql_store_result(*my);
        char *out = NULL;
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        if (row && row[0]) out = strndup(row[0], mysql_fetch_lengths(res)[0]);
        if (res) mysql_free_result(res);
        return out;
    }
    return NULL;
}

static int is_final(const char *text) {
    json_t *doc = json_loads(text, 0, NULL);
    const char *st = doc ? json_string_value(json_object_get(doc, "status")) : NULL;
    int final = st && strcmp(st, "PENDING") != 0;
    json_decref(doc);
    return final;
}

int follow_request(const char *request_id, long long timeout_ms) {
    redisContext *rc = NULL;
    MYSQL *my = NULL;
    int warned = 0, status = 3;
    char *last = NULL;
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        char *doc = status_lookup(&rc, &my, request_id, &warned);
        if (doc) {
            free(last);
            last = doc;
            if (is_final(doc)) {
                status = 0;
                break;
            }
        }
        if (mono_ms() >= deadline) break;
        sleep_ms(100);
    }
    if (last) printf("%s\n", last);
    if (status != 0)
        fprintf(stderr, "promoctl: %s %s after %lld ms\n", request_id, last ? "still PENDING" : "not found",
                timeout_ms);
    free(last);
    if (rc) redisFree(rc);
    if (my) mysql_close(my);
    return status;
}

int follow_main(int argc, char **argv) {
    long long timeout_ms = 30000;
    int i = 0;
    if (i + 1 < argc && strcmp(argv[i], "--timeout-ms") == 0) {
        timeout_ms = ctl_count(argv[i + 1]);
        if (timeout_ms < 0) return ctl_usage();
        i += 2;
    }
    if (argc - i != 1 || strlen(argv[i]) > PROMO_ID_MAX || !promo_id_valid(argv[i])) return ctl_usage();
    return follow_request(argv[i], timeout_ms);
}
