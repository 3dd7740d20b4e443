/* fuzz_checkpoint.c — libFuzzer target for restoring processor state from a
 * checkpoint (domain.h load(), dedupe_load).
 *
 * A processor that restarts reads its partition's state back from Redis
 * entries it wrote earlier; a corrupt, truncated or foreign entry must be
 * refused (load returns -1) or restored into a state that is still safe to
 * run commands against, never a crash. This target loads arbitrary entries
 * into one domain's state and a dedupe table, then applies a few valid
 * commands aimed at the entities it loaded, encodes their results and dumps.
 * A full dump must load into a fresh state that holds the same entries and
 * gives byte-identical results to the same commands (what a restart relies
 * on). No crash, leak or out-of-bounds access (ASan, UBSan, LSan).
 *
 * Input layout:
 *   byte 0   domain (mod 3: coupon, point, timesale); bit 2: also compare
 *            the commands against a restore made right after the load
 *   then records until the input ends, each:
 *     tag (bit 0: a dedupe entry, else a domain entry; bit 1: NULL value),
 *     key length (1 byte), value length (2 bytes, little-endian), key, value
 *   (a record cut short by the end of the input takes what is left).
 * Loading stops at the first entry refused, and the state starts over empty,
 * as processors/runtime.c treats such a checkpoint as none.
 * Seeds are real dumps of states built by applying commands
 * (tests/fuzz/corpus/checkpoint).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "dedupe.h"
#include "domain.h"

#define FUZZ_MAX_RECORDS 256
#define FUZZ_MAX_TARGETS 4
#define FUZZ_NOW 1750000000000LL

static codec *fuzz_codec;

/* Entries collected from a dump, to compare two dumps and to reload one. */
typedef struct fuzz_entry {
    size_t seq; /* emit order, so that of repeated keys the last one wins, as in Redis */
    char *key;
    size_t key_len;
    uint8_t *val; /* NULL: a deletion */
    size_t val_len;
} fuzz_entry;

typedef struct fuzz_dump {
    fuzz_entry *e;
    size_t n, cap;
} fuzz_dump;

static int fuzz_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    fuzz_dump *d = ctx;
    if (!key || (!val && val_len)) abort();
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->e = realloc(d->e, d->cap * sizeof *d->e);
        if (!d->e) abort();
    }
    fuzz_entry *e = &d->e[d->n];
    e->seq = d->n++;
    e->key = malloc(key_len ? key_len : 1);
    e->val = val ? malloc(val_len ? val_len : 1) : NULL;
    if (!e->key || (val && !e->val)) abort();
    memcpy(e->key, key, key_len);
    if (val) memcpy(e->val, val, val_len);
    e->key_len = key_len;
    e->val_len = val_len;
    return 0;
}

static void fuzz_dump_free(fuzz_dump *d) {
    for (size_t i = 0; i < d->n; i++) {
        free(d->e[i].key);
        free(d->e[i].val);
    }
    free(d->e);
    memset(d, 0, sizeof *d);
}

static int fuzz_entry_cmp(const void *a, const void *b) {
    const fuzz_entry *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c) return c;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool fuzz_same_key(const fuzz_entry *x, const fuzz_entry *y) {
    return x->key_len == y->key_len && memcmp(x->key, y->key, x->key_len) == 0;
}

/* Keeps the last emitted of each run of equal keys in a sorted dump, as
 * Redis would. coupon.c holds a coupon entry loaded twice before its policy
 * as two pending coupons and dumps both; a restore sees the later one. */
static void fuzz_dump_unique(fuzz_dump *d) {
    size_t k = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (k > 0 && fuzz_same_key(&d->e[k - 1], &d->e[i])) {
            free(d->e[k - 1].key);
            free(d->e[k - 1].val);
            d->e[k - 1] = d->e[i];
        } else {
            d->e[k++] = d->e[i];
        }
    }
    d->n = k;
}

/* Ids of the entities the input loaded, so the commands hit loaded state. */
typedef struct fuzz_targets {
    char id[FUZZ_MAX_TARGETS][PROMO_COUPON_ID_MAX + 1]; /* policy/user/sale id, or a coupon id */
    char sub[FUZZ_MAX_TARGETS][PROMO_ID_MAX + 1];       /* order id of an "o:" key */
    int n;
} fuzz_targets;

static void fuzz_note_target(fuzz_targets *t, const char *key, size_t key_len) {
    if (t->n >= FUZZ_MAX_TARGETS || key_len < 3 || key_len > PROMO_COUPON_ID_MAX + 2 || key[1] != ':') return;
    char k[PROMO_COUPON_ID_MAX + 3];
    memcpy(k, key, key_len);
    k[key_len] = '\0';
    if (strlen(k) != key_len) return;
    char *id = k + 2, *sub = "";
    if (k[0] == 'o') {
        char *colon = strchr(id, ':');
        if (!colon) return;
        *colon = '\0';
        sub = colon + 1;
    }
    if (strlen(id) > PROMO_COUPON_ID_MAX || strlen(sub) > PROMO_ID_MAX) return;
    strcpy(t->id[t->n], id);
    strcpy(t->sub[t->n], sub);
    t->n++;
}

/* Copies an id into dst only when it fits, so commands stay well-formed. */
static void fuzz_set(char *dst, size_t size, const char *src) {
    if (strlen(src) < size) strcpy(dst, src);
}

/* The commands for one loaded entity: each is validated first, as the
 * runtime does, so only commands a processor would apply reach apply(). */
static int fuzz_commands(promo_domain dom, const char *id, const char *sub, promo_cmd *out) {
    char policy[PROMO_ID_MAX + 1] = "p1";
    int64_t serial = 0;
    if (dom == DOMAIN_COUPON && coupon_id_parse(id, policy, sizeof policy, &serial) != 0) {
        fuzz_set(policy, sizeof policy, id);
        serial = 1;
    }
    int n = 0;
    promo_cmd *c;
    switch (dom) {
    case DOMAIN_COUPON:
        c = &out[n++];
        c->type = CMD_ISSUE_COUPON;
        fuzz_set(c->u.issue.policy_id, sizeof c->u.issue.policy_id, policy);
        strcpy(c->u.issue.user_id, "u1");
        c = &out[n++];
        c->type = CMD_REDEEM_COUPON;
        snprintf(c->u.redeem.coupon_id, sizeof c->u.redeem.coupon_id, "%s:%lld", policy, (long long)serial);
        strcpy(c->u.redeem.user_id, "u1");
        strcpy(c->u.redeem.order_id, "fz-o1");
        c->u.redeem.order_amount = 50000;
        c = &out[n++];
        c->type = CMD_CANCEL_REDEMPTION;
        snprintf(c->u.cancel_redemption.coupon_id, sizeof c->u.cancel_redemption.coupon_id, "%s:%lld", policy,
                 (long long)serial);
        strcpy(c->u.cancel_redemption.order_id, "fz-o1");
        break;
    case DOMAIN_POINT:
        c = &out[n++];
        c->type = CMD_USE_POINTS;
        fuzz_set(c->u.use.user_id, sizeof c->u.use.user_id, id);
        c->u.use.amount = 7;
        strcpy(c->u.use.order_id, "fz-o1");
        c = &out[n++];
        c->type = CMD_EARN_POINTS;
        fuzz_set(c->u.earn.user_id, sizeof c->u.earn.user_id, id);
        c->u.earn.amount = 100;
        strcpy(c->u.earn.reason, "fuzz");
        c->u.earn.has_expires_at = true;
        c->u.earn.expires_at = FUZZ_NOW + 1000;
        c = &out[n++];
        c->type = CMD_CANCEL_POINT_USE;
        fuzz_set(c->u.cancel_use.user_id, sizeof c->u.cancel_use.user_id, id);
        strcpy(c->u.cancel_use.order_id, "fz-o1");
        c = &out[n++];
        c->type = CMD_USE_POINTS;
        fuzz_set(c->u.use.user_id, sizeof c->u.use.user_id, id);
        c->u.use.amount = 1;
        strcpy(c->u.use.order_id, "fz-o2");
        break;
    case DOMAIN_TIMESALE:
        c = &out[n++];
        c->type = CMD_PLACE_ORDER;
        fuzz_set(c->u.place_order.sale_id, sizeof c->u.place_order.sale_id, id);
        strcpy(c->u.place_order.user_id, "u1");
        c->u.place_order.quantity = 1;
        strcpy(c->u.place_order.order_id, "fz-o1");
        if (sub[0]) {
            c = &out[n++];
            c->type = CMD_CANCEL_ORDER;
            fuzz_set(c->u.cancel_order.sale_id, sizeof c->u.cancel_order.sale_id, id);
            fuzz_set(c->u.cancel_order.order_id, sizeof c->u.cancel_order.order_id, sub);
        }
        c = &out[n++];
        c->type = CMD_CANCEL_ORDER;
        fuzz_set(c->u.cancel_order.sale_id, sizeof c->u.cancel_order.sale_id, id);
        strcpy(c->u.cancel_order.order_id, "fz-o1");
        break;
    }
    return n;
}

/* Applies cmd to state and, when twin is not NULL, to twin (a state
 * restored from state's dump), requiring byte-identical results from both. */
static void fuzz_apply(const domain_ops *ops, void *state, void *twin, dedupe *dd, promo_cmd *cmd, int seq) {
    char field[80], why[240];
    snprintf(cmd->request_id, sizeof cmd->request_id, "fz-req-%d", seq);
    cmd->submitted_at = FUZZ_NOW + seq;
    if (cmd_validate(cmd, field, sizeof field, why, sizeof why) != 0) return;
    if (cmd_domain(cmd->type) != ops->domain) abort();

    dedupe_hit hit;
    uint64_t fp = cmd_fingerprint(cmd);
    if (dedupe_get(dd, cmd->request_id, &hit)) {
        if (hit.result_len && !hit.result) abort();
        return;
    }
    static promo_result res, twin_res;
    result_init(&res, cmd);
    result_init(&twin_res, cmd);
    int rc = ops->apply(state, cmd, cmd->submitted_at, &res);
    if (twin && ops->apply(twin, cmd, cmd->submitted_at, &twin_res) != rc) abort();
    if (rc != 0) return;

    codec_buf buf = {0}, twin_buf = {0};
    char errstr[256];
    if (codec_encode_result(fuzz_codec, &res, &buf, errstr, sizeof errstr) != CODEC_OK) {
        fprintf(stderr, "result of %s after a fuzzed restore does not encode: %s\n", cmd_type_name(cmd->type), errstr);
        abort();
    }
    if (twin) {
        if (codec_encode_result(fuzz_codec, &twin_res, &twin_buf, errstr, sizeof errstr) != CODEC_OK) abort();
        if (buf.len != twin_buf.len || memcmp(buf.data, twin_buf.data, buf.len) != 0) {
            fprintf(stderr, "%s: %s gives another result on a state restored from a dump (%s %s vs %s %s)\n", ops->name,
                    cmd_type_name(cmd->type), res.status ? "REJECTED" : "SUCCEEDED", res.reason,
                    twin_res.status ? "REJECTED" : "SUCCEEDED", twin_res.reason);
            abort();
        }
        free(twin_buf.data);
    }
    (void)dedupe_put(dd, cmd->request_id, fp, cmd->submitted_at, buf.data, buf.len);
    free(buf.data);
}

/* A full dump must reload into a fresh state holding the same entries:
 * otherwise a restart would silently change the partition. Values need not
 * be byte-identical (point.c writes an account's uses in hash-table order,
 * which depends on insertion history), but they have the same keys and
 * lengths, and the caller runs the same commands on both states and compares
 * the results. Returns the restored state; caller destroys it. */
static void *fuzz_reload(const domain_ops *ops, void *state) {
    fuzz_dump a = {0}, b = {0};
    if (ops->dump(state, 1, fuzz_emit, &a) != 0) abort();
    void *fresh = ops->state_new();
    if (!fresh) abort();
    for (size_t i = 0; i < a.n; i++) {
        if (!a.e[i].val) continue;
        if (ops->load(fresh, a.e[i].key, a.e[i].key_len, a.e[i].val, a.e[i].val_len) != 0) {
            fprintf(stderr, "%s: dumped entry %.*s does not load back\n", ops->name, (int)a.e[i].key_len, a.e[i].key);
            abort();
        }
    }
    if (ops->dump(fresh, 1, fuzz_emit, &b) != 0) abort();
    /* entries() counts what a full dump emits. */
    if (ops->entries(state) != a.n || ops->entries(fresh) != b.n) {
        fprintf(stderr, "%s: entries() says %zu and %zu, full dumps emit %zu and %zu\n", ops->name, ops->entries(state),
                ops->entries(fresh), a.n, b.n);
        abort();
    }
    if (a.n > 1) qsort(a.e, a.n, sizeof *a.e, fuzz_entry_cmp);
    if (b.n > 1) qsort(b.e, b.n, sizeof *b.e, fuzz_entry_cmp);
    fuzz_dump_unique(&a);
    fuzz_dump_unique(&b);
    if (a.n != b.n) {
        fprintf(stderr, "%s: full dump has %zu entries, its reload %zu\n", ops->name, a.n, b.n);
        for (size_t i = 0; i < a.n; i++) fprintf(stderr, "  dumped   %.*s\n", (int)a.e[i].key_len, a.e[i].key);
        for (size_t i = 0; i < b.n; i++) fprintf(stderr, "  reloaded %.*s\n", (int)b.e[i].key_len, b.e[i].key);
        abort();
    }
    for (size_t i = 0; i < a.n; i++) {
        if (!fuzz_same_key(&a.e[i], &b.e[i]) || a.e[i].val_len != b.e[i].val_len) {
            fprintf(stderr, "%s: entry %.*s differs after a reload\n", ops->name, (int)a.e[i].key_len, a.e[i].key);
            abort();
        }
    }
    fuzz_dump_free(&a);
    fuzz_dump_free(&b);
    return fresh;
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
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const domain_ops *const all_ops[] = {&coupon_ops, &point_ops, &timesale_ops};
    if (size < 1) return 0;
    const domain_ops *ops = all_ops[data[0] % 3];
    int dump_all_first = (data[0] >> 2) & 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    void *state = ops->state_new();
    dedupe *dd = dedupe_new(24LL * 3600 * 1000);
    if (!state || !dd) abort();
    fuzz_targets targets = {.n = 0};

    for (int r = 0; r < FUZZ_MAX_RECORDS && n >= 4; r++) {
        uint8_t tag = p[0];
        size_t klen = p[1], vlen = (size_t)p[2] | (size_t)p[3] << 8;
        p += 4, n -= 4;
        if (klen > n) klen = n;
        /* Exact-size copies, so a read past either end is caught. */
        char *key = malloc(klen ? klen : 1);
        if (!key) abort();
        memcpy(key, p, klen);
        p += klen, n -= klen;
        if (vlen > n) vlen = n;
        uint8_t *val = NULL;
        if (!(tag & 2)) {
            val = malloc(vlen ? vlen : 1);
            if (!val) abort();
            memcpy(val, p, vlen);
        }
        p += vlen, n -= vlen;

        int rc = (tag & 1) ? dedupe_load(dd, key, klen, val, val ? vlen : 0)
                           : ops->load(state, key, klen, val, val ? vlen : 0);
        if (rc == 0 && !(tag & 1)) fuzz_note_target(&targets, key, klen);
        free(key);
        free(val);
        if (rc != 0) {
            /* As the runtime does: a checkpoint with an entry that does not
             * load is no checkpoint (full replay), so a state left half-built
             * by a refused entry is destroyed, never used. */
            ops->state_destroy(state);
            dedupe_destroy(dd);
            state = ops->state_new();
            dd = dedupe_new(24LL * 3600 * 1000);
            if (!state || !dd) abort();
            targets.n = 0;
            break;
        }
    }
    (void)ops->entries(state);
    (void)dedupe_count(dd);
    (void)dedupe_bytes(dd);

    void *twin = dump_all_first ? fuzz_reload(ops, state) : NULL;

    static promo_cmd cmds[8];
    int seq = 0;
    if (targets.n == 0) fuzz_note_target(&targets, ops->domain == DOMAIN_COUPON ? "p:p1" : "x:u1", 4);
    for (int t = 0; t < targets.n; t++) {
        memset(cmds, 0, sizeof cmds);
        int nc = fuzz_commands(ops->domain, targets.id[t], targets.sub[t], cmds);
        for (int i = 0; i < nc; i++) fuzz_apply(ops, state, twin, dd, &cmds[i], seq++);
    }
    /* A repeat of the first request goes through dedupe. */
    if (seq > 0) {
        memset(cmds, 0, sizeof cmds);
        (void)fuzz_commands(ops->domain, targets.id[0], targets.sub[0], cmds);
        fuzz_apply(ops, state, twin, dd, &cmds[0], 0);
    }
    dedupe_expire(dd, FUZZ_NOW + 24LL * 3600 * 1000 + 1);

    fuzz_dump dirty = {0}, ddump = {0};
    (void)ops->dump(state, 0, fuzz_emit, &dirty);
    (void)dedupe_dump(dd, 0, fuzz_emit, &ddump);
    fuzz_dump_free(&dirty);
    fuzz_dump_free(&ddump);
    (void)dedupe_dump(dd, 1, fuzz_emit, &ddump);
    fuzz_dump_free(&ddump);

    /* After the commands, a restore must still behave like the original:
     * the same commands again, now fresh request ids, on both. */
    if (twin) ops->state_destroy(twin);
    twin = fuzz_reload(ops, state);
    dedupe *dd2 = dedupe_new(24LL * 3600 * 1000);
    if (!dd2) abort();
    for (int t = 0; t < targets.n; t++) {
        memset(cmds, 0, sizeof cmds);
        int nc = fuzz_commands(ops->domain, targets.id[t], targets.sub[t], cmds);
        for (int i = 0; i < nc; i++) fuzz_apply(ops, state, twin, dd2, &cmds[i], 1000 + seq++);
    }
    dedupe_destroy(dd2);
    ops->state_destroy(twin);

    ops->state_destroy(state);
    dedupe_destroy(dd);
    return 0;
}
