/* checkpoints.c — `promoctl checkpoint [--json] <domain> [partition]`: where
 * each partition's checkpoint stands (offset, epoch, seq, entries, age), read
 * from Redis with the processors' own checkpoint module (common/checkpoint.c)
 * and key names (keys.h).
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "ctl.h"
#include "keys.h"
#include "util.h"

typedef struct ckpt_row {
    int32_t partition;
    int64_t epoch, seq, offset, entries, hlen, at;
} ckpt_row;

static int ckpt_read(redisContext *rc, const char *domain, int32_t partition, ckpt_row *row, char *errstr,
                     size_t errstr_size) {
    row->partition = partition;
    if (checkpoint_meta(rc, domain, partition, &row->epoch, &row->seq, &row->offset, errstr, errstr_size) != CKPT_OK)
        return -1;
    redisReply *r = redisCommand(rc, "HMGET " KEY_CKPT_META " at entries", domain, (int)partition);
    redisReply *h = r ? redisCommand(rc, "HLEN " KEY_CKPT_STATE, domain, (int)partition) : NULL;
    int ok = r && h && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && h->type == REDIS_REPLY_INTEGER;
    if (ok) {
        row->at = r->element[0]->type == REDIS_REPLY_STRING ? strtoll(r->element[0]->str, NULL, 10) : -1;
        row->entries = r->element[1]->type == REDIS_REPLY_STRING ? strtoll(r->element[1]->str, NULL, 10) : -1;
        row->hlen = h->integer;
    } else {
        snprintf(errstr, errstr_size, "redis: %s", rc->err ? rc->errstr : "unexpected reply");
    }
    if (r) freeReplyObject(r);
    if (h) freeReplyObject(h);
    return ok ? 0 : -1;
}

/* Partitions of domain that have a checkpoint meta key, sorted; n in *count.
 * Caller frees. NULL with errstr filled on failure. */
static int32_t *ckpt_partitions(redisContext *rc, const char *domain, size_t *count, char *errstr, size_t errstr_size) {
    size_t n = 0, cap = 16;
    int32_t *out = malloc(cap * sizeof *out);
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH " KEY_CKPT_META_MATCH " COUNT 1000", cursor, domain);
        if (!out || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            snprintf(errstr, errstr_size, "redis SCAN: %s", rc->err ? rc->errstr : "unexpected reply");
            if (r) freeReplyObject(r);
            free(out);
            return NULL;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str ? r->element[0]->str : "0");
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            /* The partition follows the domain in the hash tag; the key
             * counts only when it is exactly the meta key of that pair. */
            const char *k = r->element[1]->element[i]->str;
            const char *tag = k ? strchr(k, '{') : NULL;
            const char *num = tag ? strchr(tag, ':') : NULL;
            long p = num ? strtol(num + 1, NULL, 10) : -1;
            char want[160];
            if (p < 0 || p > INT32_MAX) continue;
            snprintf(want, sizeof want, KEY_CKPT_META, domain, (int)p);
            if (strcmp(k, want) != 0) continue;
            if (n == cap) {
                int32_t *more = realloc(out, (cap *= 2) * sizeof *out);
                if (!more) {
                    freeReplyObject(r);
                    free(out);
                    snprintf(errstr, errstr_size, "out of memory");
                    return NULL;
                }
                out = more;
            }
            out[n++] = (int32_t)p;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    for (size_t i = 1; i < n; i++) /* few partitions: insertion sort */
        for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int32_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    *count = n;
    return out;
}

int checkpoints_main(int argc, char **argv) {
    int json = 0, i = 0;
    if (i < argc && strcmp(argv[i], "--json") == 0) json = 1, i++;
    if (argc - i < 1 || argc - i > 2 || ctl_domain_index(argv[i]) < 0) return ctl_usage();
    const char *domain = argv[i];
    long long one = -1;
    if (argc - i == 2 && ((one = ctl_count(argv[i + 1])) < 0 || one > INT32_MAX)) return ctl_usage();
    char errstr[512];
    redisContext *rc = ctl_redis_new(errstr, sizeof errstr);
    if (!rc) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        return 1;
    }
    int status = 1;
    size_t n = 1;
    int32_t single = (int32_t)one, *parts = &single;
    if (one < 0 && !(parts = ckpt_partitions(rc, domain, &n, errstr, sizeof errstr))) goto fail;
    if (!json)
        printf("%-9s %9s %12s %7s %9s %9s %10s\n", "domain", "partition", "offset", "epoch", "seq", "entries",
               "age_ms");
    int64_t now = now_ms();
    for (size_t k = 0; k < n; k++) {
        ckpt_row row;
        if (ckpt_read(rc, domain, parts[k], &row, errstr, sizeof errstr) != 0) goto fail;
        /* No offset means no checkpoint was ever written (an epoch alone is
         * a claim by an owner that had consumed nothing yet). */
        int found = row.offset >= 0;
        int64_t age = row.at >= 0 ? now - row.at : -1;
        if (json) {
            json_t *o = json_pack("{s:s,s:i,s:b}", "domain", domain, "partition", (int)row.partition, "found", found);
            json_object_set_new(o, "offset", found ? json_integer(row.offset) : json_null());
            json_object_set_new(o, "epoch", row.epoch >= 0 ? json_integer(row.epoch) : json_null());
            json_object_set_new(o, "seq", row.seq >= 0 ? json_integer(row.seq) : json_null());
            json_object_set_new(o, "entries", json_integer(row.hlen));
            json_object_set_new(o, "entries_at_write", row.entries >= 0 ? json_integer(row.entries) : json_null());
            json_object_set_new(o, "at", row.at >= 0 ? json_integer(row.at) : json_null());
            json_object_set_new(o, "age_ms", age >= 0 ? json_integer(age) : json_null());
            char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
            if (s) printf("%s\n", s);
            free(s);
            json_decref(o);
        } else if (!found) {
            printf("%-9s %9d %12s %7" PRId64 " %9s %9s %10s\n", domain, (int)row.partition, "none", row.epoch, "-", "-",
                   "-");
        } else {
            printf("%-9s %9d %12" PRId64 " %7" PRId64 " %9" PRId64 " %9" PRId64 " %10" PRId64 "\n", domain,
                   (int)row.partition, row.offset, row.epoch, row.seq, row.hlen, age);
        }
    }
    status = 0;
    goto out;
fail:
    fprintf(stderr, "promoctl: %s\n", errstr);
out:
    if (parts != &single) free(parts);
    redisFree(rc);
    return status;
}
