/* test_dedupe.c — the request-id table: repeats, expiry in command time, and
 * checkpoint round trips (dirty deltas and deletions layered on a snapshot
 * must equal the live table), checked against a plain model of what the
 * table must answer; real encoded results of every shape stored packed and
 * given back byte for byte; old-layout checkpoints; damaged checkpoints
 * refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "codec.h"
#include "dedupe.h"

#define HOUR (3600LL * 1000)
#define STORE_MAX 8192

/* A key/value store standing in for the Redis hash. Owns its values. */
typedef struct kv {
    char key[80];
    uint8_t *val;
    size_t len;
} kv;
static kv store[STORE_MAX];
static size_t store_n;

static void store_clear(void) {
    for (size_t i = 0; i < store_n; i++) free(store[i].val);
    store_n = 0;
}

static int store_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    (void)ctx;
    assert_true(key_len < 80);
    for (size_t i = 0; i < store_n; i++) {
        if (strlen(store[i].key) != key_len || memcmp(store[i].key, key, key_len) != 0) continue;
        free(store[i].val);
        if (!val) {
            store[i] = store[--store_n];
            return 0;
        }
        store[i].val = malloc(val_len ? val_len : 1);
        memcpy(store[i].val, val, val_len);
        store[i].len = val_len;
        return 0;
    }
    if (!val) return 0;
    assert_true(store_n < STORE_MAX);
    kv *e = &store[store_n++];
    memcpy(e->key, key, key_len);
    e->key[key_len] = '\0';
    e->val = malloc(val_len ? val_len : 1);
    memcpy(e->val, val, val_len);
    e->len = val_len;
    return 0;
}

/* Loads the store into a fresh table, in reverse and in a rotated order, as
 * a scan may return entries in any order. */
static dedupe *reload(size_t rot) {
    dedupe *d = dedupe_new(24 * HOUR);
    for (size_t k = 0; k < store_n; k++) {
        kv *e = &store[(k + rot) % store_n];
        assert_int_equal(dedupe_load(d, e->key, strlen(e->key), e->val, e->len), 0);
    }
    return d;
}

/* The result bytes the codec would write for request id `id`: frame, Avro
 * string, then a body. */
static size_t framed(uint8_t *out, const char *id, const char *body) {
    size_t n = 0, len = strlen(id);
    memcpy(out, "\0\0\0\0\4", 5);
    n = 5;
    out[n++] = (uint8_t)(len * 2); /* zigzag, one byte for ids up to 63 */
    memcpy(out + n, id, len);
    n += len;
    memcpy(out + n, body, strlen(body));
    return n + strlen(body);
}

static void test_repeat_returns_first_result(void **s) {
    (void)s;
    dedupe *d = dedupe_new(24 * HOUR);
    dedupe_hit hit;
    assert_int_equal(dedupe_get(d, "r1", &hit), 0);
    assert_int_equal(dedupe_put(d, "r1", 42, 1000, (const uint8_t *)"first", 5), 0);
    assert_int_equal(dedupe_get(d, "r1", &hit), 1);
    assert_int_equal(hit.fingerprint, 42);
    assert_int_equal(hit.result_len, 5);
    assert_memory_equal(hit.result, "first", 5);
    assert_int_equal(dedupe_count(d), 1);
    assert_int_equal(dedupe_get(d, "r2", &hit), 0);
    assert_int_equal(dedupe_get(d, "r", &hit), 0);
    dedupe_destroy(d);
}

/* A result framed with its own request id is stored without it, and comes
 * back byte for byte; one framed with another id, or cut inside the id, is
 * stored as it is. */
static void test_framed_results_exact(void **s) {
    (void)s;
    dedupe *d = dedupe_new(24 * HOUR);
    uint8_t a[128], b[128];
    size_t na = framed(a, "req-a", "\x02\x0bIssueCoupon rest");
    size_t nb = framed(b, "req-other", "xyz");
    assert_int_equal(dedupe_put(d, "req-a", 1, 10, a, na), 0);
    assert_int_equal(dedupe_put(d, "req-b", 2, 10, b, nb), 0);
    assert_int_equal(dedupe_put(d, "req-c", 3, 10, a, 8), 0); /* ends inside the id */
    assert_int_equal(dedupe_put(d, "req-d", 4, 10, a, 0), 0);
    dedupe_hit hit;
    assert_int_equal(dedupe_get(d, "req-a", &hit), 1);
    assert_int_equal(hit.result_len, na);
    assert_memory_equal(hit.result, a, na);
    assert_int_equal(dedupe_get(d, "req-b", &hit), 1);
    assert_int_equal(hit.result_len, nb);
    assert_memory_equal(hit.result, b, nb);
    assert_int_equal(dedupe_get(d, "req-c", &hit), 1);
    assert_int_equal(hit.result_len, 8);
    assert_memory_equal(hit.result, a, 8);
    assert_int_equal(dedupe_get(d, "req-d", &hit), 1);
    assert_int_equal(hit.result_len, 0);
    /* Invalid ids are refused, not stored. */
    assert_int_not_equal(dedupe_put(d, "", 5, 10, a, na), 0);
    assert_int_not_equal(dedupe_put(d, "bad id", 5, 10, a, na), 0);
    dedupe_destroy(d);
}

static void test_expiry_in_command_time(void **s) {
    (void)s;
    dedupe *d = dedupe_new(24 * HOUR);
    dedupe_put(d, "old", 1, 0, (const uint8_t *)"a", 1);
    dedupe_put(d, "new", 2, 12 * HOUR, (const uint8_t *)"b", 1);
    dedupe_expire(d, 24 * HOUR - 1); /* the window is inclusive of its last millisecond */
    dedupe_hit hit;
    assert_int_equal(dedupe_get(d, "old", &hit), 1);
    dedupe_expire(d, 24 * HOUR);
    assert_int_equal(dedupe_get(d, "old", &hit), 0);
    assert_int_equal(dedupe_get(d, "new", &hit), 1);
    /* Forgotten, so a new first result may take the id. */
    assert_int_equal(dedupe_put(d, "old", 9, 24 * HOUR, (const uint8_t *)"c", 1), 0);
    assert_int_equal(dedupe_get(d, "old", &hit), 1);
    assert_int_equal(hit.fingerprint, 9);
    assert_memory_equal(hit.result, "c", 1);
    /* Far enough on, everything goes, memory included. */
    dedupe_expire(d, 100 * HOUR);
    assert_int_equal(dedupe_get(d, "old", &hit), 0);
    assert_int_equal(dedupe_get(d, "new", &hit), 0);
    assert_int_equal(dedupe_count(d), 0);
    dedupe_destroy(d);
}

/* ---- a model of what the table must answer ---- */

#define MODEL_MAX 6000

typedef struct model_ent {
    char id[40];
    uint64_t fp;
    int64_t at;
    uint8_t result[96];
    size_t len;
    int put; /* put at least once */
} model_ent;

static model_ent model[MODEL_MAX];

/* 1 visible, 0 forgotten, -1 either: an entry the clock once passed may
 * have had its memory freed, even if the clock has gone back since (then the
 * original and a restored copy must still agree: see check()). */
static int model_visible(const model_ent *m, int has_now, int64_t now, int64_t max_now) {
    if (!m->put) return 0;
    if (!has_now) return 1;
    if (m->at <= now - 24 * HOUR) return 0;
    return m->at > max_now - 24 * HOUR ? 1 : -1;
}

static void check_against_model(dedupe *d, dedupe *twin, int n, int has_now, int64_t now, int64_t max_now) {
    for (int i = 0; i < n; i++) {
        dedupe_hit hit;
        int vis = model_visible(&model[i], has_now, now, max_now);
        int got = dedupe_get(d, model[i].id, &hit);
        if (vis >= 0) assert_int_equal(got, vis);
        if (twin) {
            dedupe_hit other;
            assert_int_equal(dedupe_get(twin, model[i].id, &other), got);
            if (got) dedupe_get(d, model[i].id, &hit); /* the twin's get may reuse nothing of d, but be sure */
        }
        if (!got) continue;
        assert_int_equal(hit.fingerprint, model[i].fp);
        assert_int_equal(hit.result_len, model[i].len);
        assert_memory_equal(hit.result, model[i].result, model[i].len);
    }
}

/* Random puts, repeats, forgotten ids put again, clocks that jitter, go back
 * and once jump far ahead; a delta dump every round and a full one every
 * tenth, each reloaded (in another order) and compared id by id with the
 * live table and the model. */
static void test_random_against_model_and_reload(void **s) {
    (void)s;
    store_clear();
    dedupe *d = dedupe_new(24 * HOUR);
    uint64_t seed = 7;
    int64_t t = 1700000000000LL, now = 0, max_now = 0;
    int has_now = 0, n = 0;
#define RND() (seed = seed * 6364136223846793005ULL + 1442695040888963407ULL, seed >> 33)
    for (int round = 0; round < 60; round++) {
        for (int k = 0; k < 100; k++) {
            int64_t at = t + (int64_t)(RND() % 60000) - 30000; /* ingest nodes disagree a little */
            if (round == 41 && k == 0) at = t + 30 * HOUR;     /* one command stamped far ahead */
            int i;
            uint64_t r = RND() % 10;
            if (r < 6 || n == 0) {
                if (n == MODEL_MAX) break;
                i = n++;
                if (r % 3 == 0) /* all hex (ingest's ids), some of odd length: stored two digits a byte */
                    snprintf(model[i].id, sizeof model[i].id, "%llx%04x", (unsigned long long)RND(), (unsigned)i);
                else
                    snprintf(model[i].id, sizeof model[i].id, "%s%d-%llu", r & 1 ? "req" : "0123456789abcdef", i,
                             (unsigned long long)(RND() % 1000));
            } else {
                i = (int)(RND() % (uint64_t)n);
            }
            dedupe_hit hit;
            int vis = model_visible(&model[i], has_now, now, max_now);
            int got = dedupe_get(d, model[i].id, &hit);
            if (vis >= 0) assert_int_equal(got, vis);
            if (got) continue; /* a repeat: the runtime returns hit, changes nothing */
            model[i].fp = RND();
            model[i].at = at;
            model[i].put = 1;
            char body[40];
            snprintf(body, sizeof body, "body-%llu", (unsigned long long)RND());
            model[i].len = RND() % 3 ? framed(model[i].result, model[i].id, body) : strlen(body);
            if (model[i].len == strlen(body)) memcpy(model[i].result, body, model[i].len);
            assert_int_equal(dedupe_put(d, model[i].id, model[i].fp, at, model[i].result, model[i].len), 0);
            dedupe_expire(d, at);
            max_now = !has_now || at > max_now ? at : max_now;
            has_now = 1;
            now = at;
        }
        t += (int64_t)(RND() % (3 * HOUR));
        check_against_model(d, NULL, n, has_now, now, max_now);
        if (round % 10 == 0) store_clear();
        assert_int_equal(dedupe_dump(d, round % 10 == 0, store_emit, NULL), 0);
        dedupe *copy = reload((size_t)round * 7);
        assert_int_equal(dedupe_count(copy), dedupe_count(d));
        check_against_model(copy, d, n, has_now, now, max_now);
        /* The copy goes on like the original. */
        if (round % 5 == 4) {
            dedupe_expire(copy, now + HOUR);
            dedupe_expire(d, now + HOUR);
            now += HOUR;
            max_now = now > max_now ? now : max_now;
            assert_int_equal(dedupe_count(copy), dedupe_count(d));
            check_against_model(copy, d, n, has_now, now, max_now);
        }
        dedupe_destroy(copy);
    }
    /* Memory follows the window: once everything is older, nothing is held. */
    dedupe_expire(d, t + 1000 * HOUR);
    assert_int_equal(dedupe_count(d), 0);
    assert_int_equal(dedupe_dump(d, 0, store_emit, NULL), 0);
    for (size_t i = 0; i < store_n; i++) assert_string_equal(store[i].key, "r:#");
    dedupe_destroy(d);
    store_clear();
}

/* A checkpoint written in the earlier layout ("r:<id>" -> version 1,
 * fingerprint, at, raw result) loads, and the next dump rewrites it in the
 * current layout and deletes the old entries. */
static void test_legacy_entries_load_and_are_rewritten(void **s) {
    (void)s;
    store_clear();
    for (int i = 0; i < 50; i++) {
        char id[32], key[40];
        uint8_t val[17 + 64];
        snprintf(id, sizeof id, "old-%d", i);
        snprintf(key, sizeof key, "r:%s", id);
        val[0] = 1;
        for (int b = 0; b < 8; b++) val[1 + b] = (uint8_t)((uint64_t)(1000 + i) >> (8 * b));
        for (int b = 0; b < 8; b++) val[9 + b] = (uint8_t)((uint64_t)(5000 + i) >> (8 * b));
        size_t len = 17 + (i % 2 ? framed(val + 17, id, "rest") : 3);
        if (!(i % 2)) memcpy(val + 17, "raw", 3);
        assert_int_equal(store_emit(NULL, key, strlen(key), val, len), 0);
    }
    dedupe *d = reload(3);
    assert_int_equal(dedupe_count(d), 50);
    assert_int_equal(dedupe_dump(d, 0, store_emit, NULL), 0);
    for (size_t i = 0; i < store_n; i++) assert_true(store[i].key[2] == '~' || store[i].key[2] == '#');
    dedupe *copy = reload(1);
    for (int i = 0; i < 50; i++) {
        char id[32];
        uint8_t want[64];
        snprintf(id, sizeof id, "old-%d", i);
        size_t len = i % 2 ? framed(want, id, "rest") : 3;
        if (!(i % 2)) memcpy(want, "raw", 3);
        dedupe_hit a, b;
        assert_int_equal(dedupe_get(d, id, &a), 1);
        assert_int_equal(a.fingerprint, (uint64_t)(1000 + i));
        assert_int_equal(a.result_len, len);
        assert_memory_equal(a.result, want, len);
        assert_int_equal(dedupe_get(copy, id, &b), 1);
        assert_int_equal(b.result_len, len);
        assert_memory_equal(b.result, want, len);
    }
    dedupe_destroy(copy);
    dedupe_destroy(d);
    store_clear();
}

static void test_malformed_load_rejected(void **s) {
    (void)s;
    dedupe *d = dedupe_new(HOUR);
    uint8_t v[17] = {1};
    assert_int_not_equal(dedupe_load(d, "x:abc", 5, v, sizeof v), 0);
    assert_int_not_equal(dedupe_load(d, "r:abc", 5, v, 10), 0);
    assert_int_not_equal(dedupe_load(d, "r:a c", 5, v, sizeof v), 0);
    v[0] = 9;
    assert_int_not_equal(dedupe_load(d, "r:abc", 5, v, sizeof v), 0);
    v[0] = 1;
    assert_int_equal(dedupe_load(d, "r:abc", 5, v, sizeof v), 0);
    assert_int_equal(dedupe_count(d), 1);
    dedupe_destroy(d);

    /* A real segment, then damaged copies of it. */
    d = dedupe_new(HOUR);
    uint8_t r[64];
    size_t rn = framed(r, "seg-1", "body");
    assert_int_equal(dedupe_put(d, "seg-1", 7, 100, r, rn), 0);
    assert_int_equal(dedupe_put(d, "seg-2", 8, 101, (const uint8_t *)"x", 1), 0);
    store_clear();
    assert_int_equal(dedupe_dump(d, 1, store_emit, NULL), 0);
    dedupe_destroy(d);
    kv *sg = NULL;
    for (size_t i = 0; i < store_n; i++)
        if (store[i].key[2] == '~') sg = &store[i];
    assert_non_null(sg);
    uint8_t buf[256];
    assert_true(sg->len <= sizeof buf);
    memcpy(buf, sg->val, sg->len);
    d = dedupe_new(HOUR);
    for (size_t cut = 1; cut < sg->len; cut++)
        assert_int_not_equal(dedupe_load(d, sg->key, strlen(sg->key), buf, cut), 0);
    buf[0] = 3;
    assert_int_not_equal(dedupe_load(d, sg->key, strlen(sg->key), buf, sg->len), 0);
    buf[0] = sg->val[0];
    buf[11 + 1] = ' '; /* a character no request id has */
    assert_int_not_equal(dedupe_load(d, sg->key, strlen(sg->key), buf, sg->len), 0);
    memcpy(buf, sg->val, sg->len);
    assert_int_not_equal(dedupe_load(d, "r:~01", 5, buf, sg->len), 0);
    assert_int_not_equal(dedupe_load(d, "r:~1x", 5, buf, sg->len), 0);
    assert_int_not_equal(dedupe_load(d, "r:~", 3, buf, sg->len), 0);
    assert_int_not_equal(dedupe_load(d, "r:#", 3, buf, sg->len), 0);
    assert_int_equal(dedupe_count(d), 0);
    /* The same segment twice (a scan repeats) is fine; other bytes under
     * its number are not. */
    assert_int_equal(dedupe_load(d, sg->key, strlen(sg->key), buf, sg->len), 0);
    assert_int_equal(dedupe_load(d, sg->key, strlen(sg->key), buf, sg->len), 0);
    assert_int_equal(dedupe_count(d), 2);
    buf[sg->len - 1] ^= 1;
    assert_int_not_equal(dedupe_load(d, sg->key, strlen(sg->key), buf, sg->len), 0);
    dedupe_hit hit;
    assert_int_equal(dedupe_get(d, "seg-1", &hit), 1);
    assert_int_equal(hit.result_len, rn);
    assert_memory_equal(hit.result, r, rn);
    dedupe_destroy(d);

    /* A hex id is stored two digits a byte; the same id stored as plain
     * characters is a form put() never makes, and would never be found:
     * refused. Hand-made segment: header, then one entry. */
    uint8_t seg[64] = {2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    size_t n = 11;
    seg[n++] = 4; /* plain, 4 characters */
    memcpy(seg + n, "beef", 4);
    n += 4;
    seg[n++] = 0;          /* at - base */
    memset(seg + n, 0, 8); /* fingerprint */
    n += 8;
    seg[n++] = 2; /* result: form byte and one byte */
    seg[n++] = 0; /* FORM_RAW */
    seg[n++] = 'x';
    d = dedupe_new(HOUR);
    assert_int_not_equal(dedupe_load(d, "r:~5", 4, seg, n), 0);
    seg[11] = 0x80 | 4; /* hex, 4 digits: 0xbe 0xef, then the same tail */
    seg[12] = 0xbe;
    seg[13] = 0xef;
    memmove(seg + 14, seg + 16, n - 16);
    assert_int_equal(dedupe_load(d, "r:~5", 4, seg, n - 2), 0);
    assert_int_equal(dedupe_get(d, "beef", &hit), 1);
    assert_int_equal(hit.result_len, 1);
    assert_memory_equal(hit.result, "x", 1);
    assert_int_equal(dedupe_get(d, "BEEF", &hit), 0);
    dedupe_destroy(d);
    store_clear();
}

/* ---- real results ---- */

static uint64_t rnd_state = 99;
static uint64_t rnd(void) {
    rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return rnd_state >> 17;
}

static void rnd_id(char *out, size_t max) {
    static const char ch[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
    size_t n = 1 + rnd() % (max - 1 < 24 ? max - 1 : (rnd() % 4 ? 24 : max - 1));
    for (size_t i = 0; i < n; i++) out[i] = ch[rnd() % (sizeof ch - 1)];
    out[n] = '\0';
}

/* A long that is sometimes near base, sometimes anywhere, sometimes extreme. */
static int64_t rnd_long(int64_t base) {
    switch (rnd() % 6) {
    case 0: return base;
    case 1: return (int64_t)((uint64_t)base + rnd() % 100000 - 50000); /* wraps, never overflows */
    case 2: return (int64_t)(rnd() % 1000);
    case 3: return rnd() % 2 ? INT64_MAX : INT64_MIN;
    case 4: return -(int64_t)(rnd() % 1000000);
    default: return (int64_t)(rnd() << 20 ^ rnd());
    }
}

static const char *const words[] = {"IssueCoupon", "ISSUED", "SOLD_OUT", "EarnPoints", "PLACED", "NOT_A_WORD", ""};

static void rnd_result(promo_result *r, int64_t at) {
    memset(r, 0, sizeof *r);
    rnd_id(r->request_id, 65);
    r->command_type = (cmd_type)(rnd() % CMD__COUNT);
    r->domain = cmd_domain(r->command_type);
    r->status = (result_status)(rnd() % 2);
    if (rnd() % 2) snprintf(r->reason, sizeof r->reason, "%s", words[rnd() % 7]);
    rnd_id(r->entity_key, 65);
    r->submitted_at = rnd() % 4 ? at : rnd_long(at);
    r->processed_at = rnd_long(r->submitted_at);
    if (rnd() % 4 == 0)
        snprintf(r->callback_url, sizeof r->callback_url, "https://hooks.example/%llu", (unsigned long long)rnd());
    if (rnd() % 4 == 0) rnd_id(r->client_id, 65);
    r->source_partition = (int32_t)(rnd() % 64);
    r->source_offset = rnd_long(1000);
    r->version = rnd_long(10);
    if (rnd() % 2) strcpy(r->user_id, rnd() % 3 ? r->entity_key : "u1");
    if (rnd() % 2) strcpy(r->policy_id, r->entity_key);
    if (rnd() % 2)
        snprintf(r->coupon_id, sizeof r->coupon_id, "%s:%llu", r->entity_key, (unsigned long long)rnd() % 100000);
    if (rnd() % 2) snprintf(r->coupon_status, sizeof r->coupon_status, "%s", rnd() % 2 ? "ISSUED" : "REDEEMED");
    if ((r->has_issued_at = rnd() % 2)) r->issued_at = rnd_long(r->submitted_at);
    if ((r->has_expires_at = rnd() % 2)) r->expires_at = rnd_long((int64_t)((uint64_t)r->submitted_at + 7 * 24 * HOUR));
    if ((r->has_discount = rnd() % 2)) r->discount = rnd_long(0);
    if (rnd() % 2) strcpy(r->order_id, rnd() % 2 ? r->request_id : "ord-1");
    if ((r->has_order_amount = rnd() % 2)) r->order_amount = rnd_long(0);
    if (rnd() % 2) strcpy(r->order_status, rnd() % 2 ? "PLACED" : "CANCELLED");
    if ((r->has_quantity = rnd() % 2)) r->quantity = (int32_t)rnd_long(1);
    if ((r->has_issued = rnd() % 2)) r->issued = rnd_long(5);
    if ((r->has_sold = rnd() % 2)) r->sold = rnd_long(5);
    if ((r->has_remaining = rnd() % 2)) r->remaining = rnd_long(5);
    if ((r->has_amount = rnd() % 2)) r->amount = rnd_long(5);
    if ((r->has_balance = rnd() % 2)) r->balance = rnd_long(5);
    if ((r->has_next_expiry = rnd() % 2)) {
        r->next_expiry_at = rnd_long(r->submitted_at);
        r->next_expiry_amount = rnd_long(5);
    }
    if ((r->has_policy = rnd() % 4 == 0)) {
        coupon_policy_def *p = &r->policy;
        strcpy(p->policy_id, r->entity_key);
        snprintf(p->name, sizeof p->name, "Policy %llu", (unsigned long long)rnd());
        p->discount_type = (discount_type)(rnd() % 2);
        p->discount_value = rnd_long(10);
        if ((p->has_max_discount = rnd() % 2)) p->max_discount = rnd_long(5000);
        p->min_order_amount = rnd_long(0);
        p->total_quantity = rnd_long(100);
        p->per_user_limit = (int32_t)(rnd() % 10);
        p->issue_starts_at = rnd_long(r->submitted_at);
        p->issue_ends_at = rnd_long(r->submitted_at);
        if ((p->has_valid_until = rnd() % 2)) p->valid_until = rnd_long(r->submitted_at);
        if ((p->has_valid_days = rnd() % 2)) p->valid_days = (int32_t)(rnd() % 100);
    }
    if ((r->has_sale = rnd() % 4 == 0)) {
        time_sale_def *t = &r->sale;
        strcpy(t->sale_id, r->entity_key);
        rnd_id(t->product_id, 65);
        snprintf(t->name, sizeof t->name, "Sale %llu", (unsigned long long)rnd());
        t->original_price = rnd_long(100);
        t->sale_price = rnd_long(50);
        t->stock = rnd_long(10);
        t->per_user_limit = (int32_t)(rnd() % 5);
        t->starts_at = rnd_long(r->submitted_at);
        t->ends_at = rnd_long(r->submitted_at);
    }
    /* The fields appended in turn 2. */
    if (rnd() % 2) strcpy(r->state, rnd() % 2 ? "ACTIVE" : "PAUSED");
    if (rnd() % 8 == 0) snprintf(r->actor, sizeof r->actor, "key-%016llx", (unsigned long long)(rnd() % 3));
    /* Counters are mostly small; now and then anything. */
    if ((r->has_redeemed = rnd() % 2)) r->redeemed = rnd() % 8 ? (int64_t)(rnd() % 1000) : rnd_long(5);
    if ((r->has_cancelled_redemptions = rnd() % 2)) r->cancelled_redemptions = (int64_t)(rnd() % 100);
    if ((r->has_discount_total = rnd() % 2)) r->discount_total = rnd() % 8 ? (int64_t)(rnd() % 100000) : rnd_long(0);
    if ((r->has_orders = rnd() % 2)) r->orders = (int64_t)(rnd() % 1000);
    if ((r->has_cancelled_orders = rnd() % 2)) r->cancelled_orders = rnd() % 8 ? (int64_t)(rnd() % 100) : rnd_long(0);
    if ((r->has_hold_ms = rnd() % 4 == 0)) r->hold_ms = rnd() % 8 ? 60000 : rnd_long(60000);
    if ((r->has_held = rnd() % 2)) r->held = (int64_t)(rnd() % 100);
    if ((r->has_expired_orders = rnd() % 2)) r->expired_orders = (int64_t)(rnd() % 100);
    if ((r->has_hold_expires_at = rnd() % 4 == 0))
        r->hold_expires_at = rnd_long((int64_t)((uint64_t)r->submitted_at + 600000));
    if ((r->has_pending = rnd() % 2)) r->pending = (int64_t)(rnd() % 1000);
    if ((r->has_next_available = rnd() % 4 == 0)) {
        r->next_available_at = rnd_long(r->submitted_at);
        r->next_available_amount = (int64_t)(rnd() % 1000);
    }
    r->n_ledger = (int)(rnd() % (PROMO_LEDGER_MAX + 1));
    for (int i = 0; i < r->n_ledger; i++) {
        ledger_entry *l = &r->ledger[i];
        l->seq = rnd_long(3);
        l->kind = (ledger_kind)(rnd() % 5);
        l->delta = rnd_long(0);
        l->balance_after = rnd_long(0);
        if (rnd() % 2) strcpy(l->order_id, rnd() % 2 ? r->request_id : "o-9");
        if (rnd() % 2) snprintf(l->reason, sizeof l->reason, "%s", rnd() % 2 ? "review reward" : r->entity_key);
        if ((l->has_expires_at = rnd() % 2)) l->expires_at = rnd_long(r->submitted_at);
        l->at = rnd_long(r->submitted_at);
    }
}

/* A Result written before turn 2 ends after its ledger. Stored now, it packs
 * (FORM_PACKED2, no appended fields) and comes back byte for byte; stored by
 * the dedupe of then (FORM_PACKED: the same bytes without the count of
 * appended fields), it still loads and comes back byte for byte. */
static void test_results_before_turn2(void **s) {
    (void)s;
    char errstr[256];
    codec *cd = codec_new(errstr, sizeof errstr);
    assert_non_null(cd);
    static promo_result r;
    memset(&r, 0, sizeof r);
    strcpy(r.request_id, "legacy-1");
    r.domain = DOMAIN_COUPON;
    r.command_type = CMD_ISSUE_COUPON;
    strcpy(r.entity_key, "p1");
    r.submitted_at = r.processed_at = 1700000000000LL;
    r.has_issued = r.has_remaining = true;
    r.issued = 1, r.remaining = 9, r.version = 2;
    strcpy(r.coupon_id, "p1:1");
    codec_buf b = {0};
    assert_int_equal(codec_encode_result(cd, &r, &b, errstr, sizeof errstr), CODEC_OK);
    size_t old_len = b.len - 14; /* the fields appended in turn 2, null: one zero byte each */
    for (size_t i = old_len; i < b.len; i++) assert_int_equal(b.data[i], 0);
    dedupe *d = dedupe_new(24 * HOUR);
    assert_int_equal(dedupe_put(d, "legacy-1", 7, r.submitted_at, b.data, old_len), 0);
    dedupe_hit hit;
    assert_int_equal(dedupe_get(d, "legacy-1", &hit), 1);
    assert_int_equal(hit.result_len, old_len);
    assert_memory_equal(hit.result, b.data, old_len);
    store_clear();
    assert_int_equal(dedupe_dump(d, 1, store_emit, NULL), 0);
    dedupe_destroy(d);
    kv *sg = NULL;
    for (size_t i = 0; i < store_n; i++)
        if (store[i].key[2] == '~') sg = &store[i];
    assert_non_null(sg);
    /* header (11), id "legacy-1" (1 + 8), at (1), fingerprint (8), then the
     * result's length, its form and its bytes, the last one the count. */
    size_t at = 11 + 1 + 8 + 1 + 8;
    assert_int_equal(sg->len, at + 1 + sg->val[at]);
    assert_int_equal(sg->val[at + 1], 3); /* FORM_PACKED2 */
    assert_int_equal(sg->val[sg->len - 1], 0);
    sg->val[at]--;
    sg->val[at + 1] = 2; /* FORM_PACKED */
    sg->len--;
    d = dedupe_new(24 * HOUR);
    assert_int_equal(dedupe_load(d, sg->key, strlen(sg->key), sg->val, sg->len), 0);
    assert_int_equal(dedupe_get(d, "legacy-1", &hit), 1);
    assert_int_equal(hit.result_len, old_len);
    assert_memory_equal(hit.result, b.data, old_len);
    dedupe_destroy(d);
    store_clear();
    free(b.data);
    codec_destroy(cd);
}

static int count_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    (void)key_len;
    if (val && key[2] == '~') *(size_t *)ctx += val_len;
    return 0;
}

/* Results of every shape, as the codec writes them: each comes back byte for
 * byte, from the table and from a reload of its checkpoint; and the common
 * ones (an issue) take well under their encoded size. */
static void test_real_results_exact(void **s) {
    (void)s;
    char errstr[256];
    codec *cd = codec_new(errstr, sizeof errstr);
    assert_non_null(cd);
    enum { N = 3000 };
    static codec_buf enc[N];
    static char ids[N][PROMO_ID_MAX + 1];
    static promo_result r;
    dedupe *d = dedupe_new(24 * HOUR);
    size_t raw = 0;
    for (int i = 0; i < N; i++) {
        int64_t at = 1700000000000LL + i;
        rnd_result(&r, at);
        snprintf(r.request_id + (strlen(r.request_id) > 50 ? 50 : strlen(r.request_id)), 15, "-%d", i);
        strcpy(ids[i], r.request_id);
        if (codec_encode_result(cd, &r, &enc[i], errstr, sizeof errstr) != CODEC_OK) fail_msg("%s", errstr);
        assert_int_equal(dedupe_put(d, ids[i], (uint64_t)i, at, enc[i].data, enc[i].len), 0);
        raw += enc[i].len;
    }
    /* Most of them pack (the check that packing happened at all: these
     * results are mostly random values, which no packing shortens). */
    size_t stored = 0;
    assert_int_equal(dedupe_dump(d, 1, count_emit, &stored), 0);
    if (stored >= raw * 4 / 5) fail_msg("stored %zu of %zu bytes", stored, raw);
    store_clear();
    assert_int_equal(dedupe_dump(d, 1, store_emit, NULL), 0);
    dedupe *copy = reload(5);
    for (int i = 0; i < N; i++) {
        dedupe_hit a, b;
        assert_int_equal(dedupe_get(d, ids[i], &a), 1);
        assert_int_equal(a.fingerprint, (uint64_t)i);
        assert_int_equal(a.result_len, enc[i].len);
        assert_memory_equal(a.result, enc[i].data, enc[i].len);
        assert_int_equal(dedupe_get(copy, ids[i], &b), 1);
        assert_int_equal(b.result_len, enc[i].len);
        assert_memory_equal(b.result, enc[i].data, enc[i].len);
    }
    dedupe_destroy(copy);
    dedupe_destroy(d);
    store_clear();

    /* An issue's result, as a stampede fills the window with them. */
    d = dedupe_new(24 * HOUR);
    memset(&r, 0, sizeof r);
    r.domain = DOMAIN_COUPON;
    r.command_type = CMD_ISSUE_COUPON;
    strcpy(r.entity_key, "summer-sale-2026");
    strcpy(r.policy_id, r.entity_key);
    strcpy(r.coupon_status, "ISSUED");
    r.has_issued_at = r.has_expires_at = r.has_issued = r.has_remaining = true;
    size_t issue_raw = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(r.request_id, sizeof r.request_id, "%032llx", (unsigned long long)rnd() << 20 ^ rnd());
        snprintf(r.user_id, sizeof r.user_id, "user-%d", i);
        snprintf(r.coupon_id, sizeof r.coupon_id, "%s:%d", r.entity_key, i + 1);
        r.submitted_at = r.issued_at = 1750000000000LL + i * 7;
        r.processed_at = r.submitted_at + 3;
        r.expires_at = r.issued_at + 30 * 24 * HOUR;
        r.source_offset = 5000 + i;
        r.version = r.issued = i + 1;
        r.remaining = 100000 - i - 1;
        assert_int_equal(codec_encode_result(cd, &r, &enc[0], errstr, sizeof errstr), CODEC_OK);
        assert_int_equal(dedupe_put(d, r.request_id, 1, r.submitted_at, enc[0].data, enc[0].len), 0);
        issue_raw += enc[0].len;
        dedupe_hit h;
        assert_int_equal(dedupe_get(d, r.request_id, &h), 1);
        assert_int_equal(h.result_len, enc[0].len);
        assert_memory_equal(h.result, enc[0].data, enc[0].len);
    }
    stored = 0;
    assert_int_equal(dedupe_dump(d, 1, count_emit, &stored), 0);
    /* id and fingerprint included, the entry is well under the result. */
    assert_true(stored * 10 < issue_raw * 7);
    dedupe_destroy(d);
    for (int i = 0; i < N; i++) free(enc[i].data);
    codec_destroy(cd);
}

/* Enough ids that many share the 24 hash bits a slot keeps (about a
 * thousand pairs at 200,000 ids): each still finds its own entry, the full id
 * deciding, and ids never put are not found. */
static void test_many_ids_never_merge(void **s) {
    (void)s;
    enum { N = 200000 };
    dedupe *d = dedupe_new(24 * HOUR);
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, i % 2 ? "id-%d" : "%08x", i);
        assert_int_equal(dedupe_put(d, id, (uint64_t)i, 1000 + i / 100, (const uint8_t *)id, strlen(id)), 0);
    }
    assert_int_equal(dedupe_count(d), N);
    for (int i = 0; i < N; i++) {
        dedupe_hit hit;
        snprintf(id, sizeof id, i % 2 ? "id-%d" : "%08x", i);
        assert_int_equal(dedupe_get(d, id, &hit), 1);
        assert_int_equal(hit.fingerprint, (uint64_t)i);
        assert_int_equal(hit.result_len, strlen(id));
        assert_memory_equal(hit.result, id, strlen(id));
        snprintf(id, sizeof id, i % 2 ? "id-%d-" : "%08x0", i);
        assert_int_equal(dedupe_get(d, id, &hit), 0);
    }
    /* Forgetting them all frees every slot and segment. */
    dedupe_expire(d, 1000 + N / 100 + 24 * HOUR);
    assert_int_equal(dedupe_count(d), 0);
    dedupe_destroy(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repeat_returns_first_result),
        cmocka_unit_test(test_framed_results_exact),
        cmocka_unit_test(test_expiry_in_command_time),
        cmocka_unit_test(test_random_against_model_and_reload),
        cmocka_unit_test(test_many_ids_never_merge),
        cmocka_unit_test(test_real_results_exact),
        cmocka_unit_test(test_legacy_entries_load_and_are_rewritten),
        cmocka_unit_test(test_malformed_load_rejected),
        cmocka_unit_test(test_results_before_turn2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
