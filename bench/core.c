/* core.c — bench-core: how fast the pure state machines are, and how much
 * memory their state takes, with no Kafka, Redis, MySQL or HTTP around them.
 *
 *   bench-core [-n commands] [--memory entities]
 *
 * Each case applies commands to one domain state (processors/domain.h) on one
 * thread, exactly as the runtime would between consume and produce:
 * result_init() then apply(). The commands are built in the timed loop from a
 * few integer-to-string copies, a small cost next to the hash lookups apply()
 * does. The "pipeline" case adds the rest of the runtime's CPU work per
 * message — decode the Avro command, look the request id up in the dedupe
 * table, apply, encode the Avro result, remember it — still without I/O, so it
 * is the ceiling one processor core can reach.
 *
 * --memory fills one coupon state with N issued coupons, one point state with
 * N accounts and one dedupe table with N request ids (each holding a real
 * encoded result, as the runtime stores them), and reports heap bytes per
 * entity (glibc mallinfo2) and the bytes a full checkpoint dump emits.
 *
 * Output: one JSON document on stdout. The benchmark script (run.py) prints
 * it as table rows.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "dedupe.h"
#include "domain.h"

#define CORE_T0 1700000000000LL /* a fixed "now": the state machines never read the clock */

static double core_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* prefix + decimal n into out (at most 64 bytes); faster than snprintf,
 * which would otherwise be a fair share of a cheap apply(). */
static void core_id(char *out, const char *prefix, unsigned long long n) {
    char tmp[24];
    int k = 0;
    do {
        tmp[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    while (k) out[p++] = tmp[--k];
    out[p] = '\0';
}

static const char *core_sep = "";

static void core_report(const char *name, long long n, double secs, long long ok) {
    printf("%s{\"name\":\"%s\",\"commands\":%lld,\"succeeded\":%lld,\"seconds\":%.4f,\"per_s\":%.0f}", core_sep, name,
           n, ok, secs, secs > 0 ? (double)n / secs : 0.0);
    core_sep = ",";
    fflush(stdout);
}

static void core_policy(promo_cmd *c, const char *policy_id, long long quantity) {
    memset(c, 0, sizeof *c);
    c->type = CMD_CREATE_COUPON_POLICY;
    strcpy(c->request_id, "create");
    c->submitted_at = CORE_T0;
    coupon_policy_def *p = &c->u.create_policy;
    strcpy(p->policy_id, policy_id);
    strcpy(p->name, "bench");
    p->discount_type = DISCOUNT_FIXED;
    p->discount_value = 1000;
    p->total_quantity = quantity;
    p->per_user_limit = 1;
    p->issue_starts_at = CORE_T0 - 1000;
    p->issue_ends_at = CORE_T0 + 86400000LL * 30;
    p->has_valid_days = true;
    p->valid_days = 7;
}

/* Issues n coupons of one policy holding quantity, to users drawn in turn
 * from a range of `users`. Returns the state (caller destroys) or NULL. */
static void *core_coupon(const char *name, long long n, long long users, long long quantity, int report) {
    static promo_cmd cmd;
    static promo_result res;
    void *st = coupon_ops.state_new();
    if (!st) return NULL;
    core_policy(&cmd, "hot", quantity);
    result_init(&res, &cmd);
    if (coupon_ops.apply(st, &cmd, CORE_T0, &res) != 0 || res.status != STATUS_SUCCEEDED) goto fail;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = CMD_ISSUE_COUPON;
    strcpy(cmd.u.issue.policy_id, "hot");
    long long ok = 0;
    double t0 = core_secs();
    for (long long i = 0; i < n; i++) {
        core_id(cmd.request_id, "r", (unsigned long long)i);
        core_id(cmd.u.issue.user_id, "u", (unsigned long long)(i % users));
        cmd.submitted_at = CORE_T0 + i / 1000;
        result_init(&res, &cmd);
        if (coupon_ops.apply(st, &cmd, cmd.submitted_at, &res) != 0) goto fail;
        ok += res.status == STATUS_SUCCEEDED;
    }
    if (report) core_report(name, n, core_secs() - t0, ok);
    return st;
fail:
    fprintf(stderr, "bench-core: %s: apply failed\n", name);
    coupon_ops.state_destroy(st);
    return NULL;
}

/* Earn, use, cancel that use, round after round over `users` accounts:
 * n commands in all. Returns the state or NULL. */
static void *core_point(const char *name, long long n, long long users, int report) {
    static promo_cmd cmd;
    static promo_result res;
    void *st = point_ops.state_new();
    if (!st) return NULL;
    long long ok = 0;
    double t0 = core_secs();
    for (long long i = 0; i < n; i++) {
        long long u = i % users, round = i / users;
        memset(&cmd.u, 0, sizeof cmd.u.use);
        core_id(cmd.request_id, "r", (unsigned long long)i);
        cmd.submitted_at = CORE_T0 + i / 1000;
        switch (report ? round % 3 : 0) {
        case 0:
            cmd.type = CMD_EARN_POINTS;
            core_id(cmd.u.earn.user_id, "u", (unsigned long long)u);
            cmd.u.earn.amount = 1000;
            strcpy(cmd.u.earn.reason, "bench");
            cmd.u.earn.has_expires_at = false;
            break;
        case 1:
            cmd.type = CMD_USE_POINTS;
            core_id(cmd.u.use.user_id, "u", (unsigned long long)u);
            cmd.u.use.amount = 300;
            core_id(cmd.u.use.order_id, "o", (unsigned long long)round);
            break;
        default:
            cmd.type = CMD_CANCEL_POINT_USE;
            core_id(cmd.u.cancel_use.user_id, "u", (unsigned long long)u);
            core_id(cmd.u.cancel_use.order_id, "o", (unsigned long long)(round - 1));
            break;
        }
        result_init(&res, &cmd);
        if (point_ops.apply(st, &cmd, cmd.submitted_at, &res) != 0) {
            fprintf(stderr, "bench-core: %s: apply failed\n", name);
            point_ops.state_destroy(st);
            return NULL;
        }
        ok += res.status == STATUS_SUCCEEDED;
    }
    if (report) core_report(name, n, core_secs() - t0, ok);
    return st;
}

static int core_timesale(long long n, long long users, long long stock) {
    static promo_cmd cmd;
    static promo_result res;
    void *st = timesale_ops.state_new();
    if (!st) return -1;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = CMD_CREATE_TIME_SALE;
    strcpy(cmd.request_id, "create");
    cmd.submitted_at = CORE_T0;
    time_sale_def *s = &cmd.u.create_sale;
    strcpy(s->sale_id, "sale");
    strcpy(s->product_id, "product");
    strcpy(s->name, "bench");
    s->original_price = 20000;
    s->sale_price = 9900;
    s->stock = stock;
    s->per_user_limit = 1;
    s->starts_at = CORE_T0 - 1000;
    s->ends_at = CORE_T0 + 86400000LL;
    result_init(&res, &cmd);
    int rc = -1;
    if (timesale_ops.apply(st, &cmd, CORE_T0, &res) != 0 || res.status != STATUS_SUCCEEDED) goto out;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = CMD_PLACE_ORDER;
    strcpy(cmd.u.place_order.sale_id, "sale");
    cmd.u.place_order.quantity = 1;
    long long ok = 0;
    double t0 = core_secs();
    for (long long i = 0; i < n; i++) {
        core_id(cmd.request_id, "r", (unsigned long long)i);
        core_id(cmd.u.place_order.user_id, "u", (unsigned long long)(i % users));
        cmd.submitted_at = CORE_T0 + i / 1000;
        result_init(&res, &cmd);
        if (timesale_ops.apply(st, &cmd, cmd.submitted_at, &res) != 0) goto out;
        ok += res.status == STATUS_SUCCEEDED;
    }
    core_report("timesale.order", n, core_secs() - t0, ok);
    rc = 0;
out:
    if (rc) fprintf(stderr, "bench-core: timesale: apply failed\n");
    timesale_ops.state_destroy(st);
    return rc;
}

/* The runtime's CPU work per message, minus the I/O: decode, dedupe, apply,
 * encode, remember. Commands are encoded beforehand. */
static int core_pipeline(long long n, long long users, long long quantity) {
    char errstr[256];
    static promo_cmd cmd;
    static promo_result res;
    int rc = -1;
    codec *cd = codec_new(errstr, sizeof errstr);
    void *st = coupon_ops.state_new();
    dedupe *dd = dedupe_new(86400000LL);
    codec_buf one = {0}, out = {0};
    uint8_t *wire = NULL;
    size_t *off = malloc((size_t)(n + 1) * sizeof *off), used = 0, cap = 0;
    if (!cd || !st || !dd || !off) goto out;
    core_policy(&cmd, "hot", quantity);
    result_init(&res, &cmd);
    if (coupon_ops.apply(st, &cmd, CORE_T0, &res) != 0) goto out;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = CMD_ISSUE_COUPON;
    strcpy(cmd.u.issue.policy_id, "hot");
    for (long long i = 0; i < n; i++) {
        core_id(cmd.request_id, "r", (unsigned long long)i);
        core_id(cmd.u.issue.user_id, "u", (unsigned long long)(i % users));
        cmd.submitted_at = CORE_T0 + i / 1000;
        if (codec_encode_cmd(cd, &cmd, &one, errstr, sizeof errstr) != CODEC_OK) goto out;
        if (used + one.len > cap) {
            cap = (cap + one.len) * 2;
            uint8_t *w = realloc(wire, cap);
            if (!w) goto out;
            wire = w;
        }
        off[i] = used;
        memcpy(wire + used, one.data, one.len);
        used += one.len;
    }
    off[n] = used;
    long long ok = 0;
    double t0 = core_secs();
    for (long long i = 0; i < n; i++) {
        if (codec_decode_cmd(cd, wire + off[i], off[i + 1] - off[i], SCHEMA_ID_COUPON_CMD, &cmd, errstr,
                             sizeof errstr) != CODEC_OK)
            goto out;
        dedupe_hit hit;
        if (dedupe_get(dd, cmd.request_id, &hit)) continue;
        result_init(&res, &cmd);
        if (coupon_ops.apply(st, &cmd, cmd.submitted_at, &res) != 0) goto out;
        res.processed_at = cmd.submitted_at;
        if (codec_encode_result(cd, &res, &out, errstr, sizeof errstr) != CODEC_OK) goto out;
        if (dedupe_put(dd, cmd.request_id, cmd_fingerprint(&cmd), cmd.submitted_at, out.data, out.len) != 0) goto out;
        ok += res.status == STATUS_SUCCEEDED;
    }
    core_report("coupon.pipeline", n, core_secs() - t0, ok);
    rc = 0;
out:
    if (rc) fprintf(stderr, "bench-core: pipeline failed: %s\n", errstr);
    free(wire);
    free(off);
    free(one.data);
    free(out.data);
    if (dd) dedupe_destroy(dd);
    if (st) coupon_ops.state_destroy(st);
    codec_destroy(cd);
    return rc;
}

/* ---- memory ---- */

typedef struct core_dump {
    long long entries;
    long long bytes;
} core_dump;

static int core_count(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    (void)key;
    (void)val;
    core_dump *d = ctx;
    d->entries++;
    d->bytes += (long long)(key_len + val_len);
    return 0;
}

/* Bytes allocated: small blocks (uordblks) and the large ones glibc maps on
 * their own (hblkhd), such as a policy's coupon array or a hash table. */
static long long core_heap(void) {
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
}

static void core_memory_report(const char *name, long long n, long long heap, const core_dump *d) {
    printf("%s\"%s\":{\"entities\":%lld,\"heap_bytes\":%lld,\"bytes_per_entity\":%.1f,\"checkpoint_entries\":%lld,"
           "\"checkpoint_bytes\":%lld,\"checkpoint_bytes_per_entity\":%.1f}",
           core_sep, name, n, heap, n ? (double)heap / (double)n : 0.0, d->entries, d->bytes,
           n ? (double)d->bytes / (double)n : 0.0);
    core_sep = ",";
    fflush(stdout);
}

static int core_memory(long long n) {
    char errstr[256];
    int rc = -1;
    core_sep = "";
    printf(",\"memory\":{");

    long long h0 = core_heap();
    void *cs = core_coupon("coupon.fill", n, n, n, 0);
    if (!cs) return -1;
    core_dump d = {0, 0};
    coupon_ops.dump(cs, 1, core_count, &d);
    core_memory_report("coupon", n, core_heap() - h0, &d);
    coupon_ops.state_destroy(cs);

    h0 = core_heap();
    void *ps = core_point("point.fill", n, n, 0);
    if (!ps) return -1;
    d = (core_dump){0, 0};
    point_ops.dump(ps, 1, core_count, &d);
    core_memory_report("point", n, core_heap() - h0, &d);
    point_ops.state_destroy(ps);

    /* A full dedupe window: n request ids, each with an issue's encoded
     * result (the most common command in a stampede). */
    codec *cd = codec_new(errstr, sizeof errstr);
    codec_buf out = {0};
    static promo_cmd cmd;
    static promo_result res;
    void *st = coupon_ops.state_new();
    dedupe *dd = NULL;
    if (!cd || !st) goto out;
    core_policy(&cmd, "hot", 1);
    result_init(&res, &cmd);
    coupon_ops.apply(st, &cmd, CORE_T0, &res);
    memset(&cmd, 0, sizeof cmd);
    cmd.type = CMD_ISSUE_COUPON;
    strcpy(cmd.u.issue.policy_id, "hot");
    core_id(cmd.u.issue.user_id, "u", 1);
    strcpy(cmd.request_id, "0123456789abcdef0123456789abcdef");
    cmd.submitted_at = CORE_T0;
    result_init(&res, &cmd);
    coupon_ops.apply(st, &cmd, CORE_T0, &res);
    res.processed_at = CORE_T0;
    if (codec_encode_result(cd, &res, &out, errstr, sizeof errstr) != CODEC_OK) goto out;
    h0 = core_heap();
    if (!(dd = dedupe_new(86400000LL))) goto out;
    for (long long i = 0; i < n; i++) {
        /* Ingest's request ids are 32 hex digits. */
        char rid[40];
        snprintf(rid, sizeof rid, "%032llx", (unsigned long long)i * 0x9e3779b97f4a7c15ULL);
        /* The result names its own request id, as the runtime's do: the id
         * (32 characters, like the one it was encoded with) sits after the
         * 5-byte frame and its 1-byte length. */
        memcpy(out.data + 6, rid, 32);
        if (dedupe_put(dd, rid, (uint64_t)i, CORE_T0, out.data, out.len) != 0) goto out;
    }
    d = (core_dump){0, 0};
    dedupe_dump(dd, 1, core_count, &d);
    core_memory_report("dedupe", n, core_heap() - h0, &d);
    printf(",\"dedupe_result_bytes\":%zu}", out.len);
    rc = 0;
out:
    if (rc) fprintf(stderr, "bench-core: memory: failed %s\n", errstr);
    if (dd) dedupe_destroy(dd);
    if (st) coupon_ops.state_destroy(st);
    free(out.data);
    codec_destroy(cd);
    return rc;
}

int main(int argc, char **argv) {
    long long n = 2000000, mem = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--memory") && i + 1 < argc)
            mem = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-core [-n commands] [--memory entities]\n");
            return 2;
        }
    }
    if (n < 1000) n = 1000;
    printf("{\"cores\":%ld,\"cases\":[", sysconf(_SC_NPROCESSORS_ONLN));
    void *st;
    /* Every command succeeds: the most work an issue does. */
    if (!(st = core_coupon("coupon.issue", n, n, n, 1))) return 1;
    coupon_ops.state_destroy(st);
    /* The flash sale's shape: every user twice, quantity a twentieth. */
    if (!(st = core_coupon("coupon.flash", n, n / 2, n / 20, 1))) return 1;
    coupon_ops.state_destroy(st);
    if (!(st = core_point("point.mix", n, n / 6 > 0 ? n / 6 : 1, 1))) return 1;
    point_ops.state_destroy(st);
    if (core_timesale(n, n / 2, n / 20) != 0) return 1;
    if (core_pipeline(n / 2, n / 4, n / 40) != 0) return 1;
    printf("]");
    if (mem > 0 && core_memory(mem) != 0) return 1;
    printf("}\n");
    return 0;
}
