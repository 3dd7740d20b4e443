/* test_dedupe.c — the request-id table: repeats, expiry in command time, and
 * checkpoint round trips (dirty deltas and deletions layered on a snapshot
 * must equal the live table). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dedupe.h"

#define HOUR (3600LL * 1000)

/* A tiny key/value store standing in for the Redis hash. */
typedef struct kv {
    char key[80];
    uint8_t val[64];
    size_t len;
    int used;
} kv;
static kv store[4096];

static int store_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    (void)ctx;
    assert_true(key_len < 80 && val_len <= 64);
    kv *free_slot = NULL;
    for (size_t i = 0; i < 4096; i++) {
        if (store[i].used && strlen(store[i].key) == key_len && memcmp(store[i].key, key, key_len) == 0) {
            if (!val)
                store[i].used = 0;
            else {
                memcpy(store[i].val, val, val_len);
                store[i].len = val_len;
            }
            return 0;
        }
        if (!store[i].used && !free_slot) free_slot = &store[i];
    }
    if (!val) return 0;
    assert_non_null(free_slot);
    memcpy(free_slot->key, key, key_len);
    free_slot->key[key_len] = '\0';
    memcpy(free_slot->val, val, val_len);
    free_slot->len = val_len;
    free_slot->used = 1;
    return 0;
}

static dedupe *reload(void) {
    dedupe *d = dedupe_new(24 * HOUR);
    for (size_t i = 0; i < 4096; i++)
        if (store[i].used)
            assert_int_equal(dedupe_load(d, store[i].key, strlen(store[i].key), store[i].val, store[i].len), 0);
    return d;
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
    dedupe_destroy(d);
}

static void test_expiry_in_command_time(void **s) {
    (void)s;
    dedupe *d = dedupe_new(24 * HOUR);
    dedupe_put(d, "old", 1, 0, (const uint8_t *)"a", 1);
    dedupe_put(d, "new", 2, 12 * HOUR, (const uint8_t *)"b", 1);
    dedupe_expire(d, 24 * HOUR - 1); /* the window is inclusive of its last millisecond */
    assert_int_equal(dedupe_count(d), 2);
    dedupe_expire(d, 24 * HOUR);
    dedupe_hit hit;
    assert_int_equal(dedupe_get(d, "old", &hit), 0);
    assert_int_equal(dedupe_get(d, "new", &hit), 1);
    dedupe_destroy(d);
}

static void test_checkpoint_round_trip_with_deletions(void **s) {
    (void)s;
    memset(store, 0, sizeof store);
    dedupe *d = dedupe_new(24 * HOUR);
    char id[32], val[16];
    uint64_t seed = 7;
    int64_t t = 0;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 40; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            t += (int64_t)(seed >> 40) % (HOUR / 2);
            snprintf(id, sizeof id, "req-%d-%d", round, i);
            snprintf(val, sizeof val, "v%d", i);
            dedupe_hit hit;
            if (!dedupe_get(d, id, &hit)) assert_int_equal(dedupe_put(d, id, seed, t, (uint8_t *)val, strlen(val)), 0);
            dedupe_expire(d, t);
        }
        /* Every round a delta, every tenth a full snapshot. */
        if (round % 10 == 0) memset(store, 0, sizeof store);
        assert_int_equal(dedupe_dump(d, round % 10 == 0, store_emit, NULL), 0);
        dedupe *copy = reload();
        assert_int_equal(dedupe_count(copy), dedupe_count(d));
        for (size_t i = 0; i < 4096; i++) {
            if (!store[i].used) continue;
            dedupe_hit a, b;
            assert_int_equal(dedupe_get(d, store[i].key + 2, &a), 1);
            assert_int_equal(dedupe_get(copy, store[i].key + 2, &b), 1);
            assert_int_equal(a.fingerprint, b.fingerprint);
            assert_int_equal(a.result_len, b.result_len);
            assert_memory_equal(a.result, b.result, a.result_len);
        }
        dedupe_destroy(copy);
    }
    dedupe_destroy(d);
}

static void test_malformed_load_rejected(void **s) {
    (void)s;
    dedupe *d = dedupe_new(HOUR);
    uint8_t v[17] = {1};
    assert_int_not_equal(dedupe_load(d, "x:abc", 5, v, sizeof v), 0);
    assert_int_not_equal(dedupe_load(d, "r:abc", 5, v, 10), 0);
    v[0] = 9;
    assert_int_not_equal(dedupe_load(d, "r:abc", 5, v, sizeof v), 0);
    v[0] = 1;
    assert_int_equal(dedupe_load(d, "r:abc", 5, v, sizeof v), 0);
    assert_int_equal(dedupe_count(d), 1);
    dedupe_destroy(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repeat_returns_first_result),
        cmocka_unit_test(test_expiry_in_command_time),
        cmocka_unit_test(test_checkpoint_round_trip_with_deletions),
        cmocka_unit_test(test_malformed_load_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
