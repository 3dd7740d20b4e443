/* test_partition.c — our murmur2 partitioner against the vectors of Kafka's
 * own test suite (UtilsTest.testMurmur2), so a key lands where Java
 * producers and librdkafka's murmur2_random put it; and the routing of a
 * command found on some partition: applied by its owner, forwarded from
 * anywhere else in one hop, not forwarded twice below the committed offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "partition.h"

#define PROMO_KEY_BUF 64

static void test_kafka_vectors(void **s) {
    (void)s;
    /* Kafka's murmur2 values with the sign bit cleared (toPositive);
     * modulo INT32_MAX leaves them unchanged. */
    static const struct {
        const char *key;
        int32_t positive;
    } v[] = {
        {"21", 1173551340},
        {"foobar", 1357151166},
        {"a-little-bit-long-string", 1161502112},
        {"a-little-bit-longer-string", 661178819},
        {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 2088585677},
        {"abc", 479470107},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        assert_int_equal(murmur2_partition(v[i].key, strlen(v[i].key), INT32_MAX), v[i].positive);
}

static void test_range(void **s) {
    (void)s;
    char key[16];
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof key, "user-%d", i);
        int32_t p = murmur2_partition(key, (size_t)n, 12);
        assert_true(p >= 0 && p < 12);
    }
    assert_int_equal(murmur2_partition("", 0, 1), 0);
}

/* librdkafka's default partitioner for a non-empty key (consistent_random):
 * CRC-32 (IEEE, as zlib's crc32) modulo the partition count. */
static int32_t crc32_partition(const char *key, size_t len, int32_t partitions) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        c ^= (uint8_t)key[i];
        for (int b = 0; b < 8; b++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return (int32_t)((c ^ 0xffffffffu) % (uint32_t)partitions);
}

static void test_crc32_reference(void **s) {
    (void)s;
    /* The standard check value of CRC-32: crc32("123456789") = 0xcbf43926. */
    assert_int_equal(crc32_partition("123456789", 9, INT32_MAX), (int32_t)(0xcbf43926u % INT32_MAX));
}

static void test_route_owner_applies(void **s) {
    (void)s;
    int32_t owner = -7;
    int32_t mine = murmur2_partition("abc", 3, 12);
    assert_int_equal(partition_route_of("abc", 3, mine, 5, 12, -1, &owner), PARTITION_APPLY);
    assert_int_equal(owner, mine);
    /* Below the committed offset too: skipping is for forwards only, a
     * replay must apply what its partition owns to rebuild the state. */
    assert_int_equal(partition_route_of("abc", 3, mine, 5, 12, 100, &owner), PARTITION_APPLY);
    /* An unknown partition count checks nothing. */
    assert_int_equal(partition_route_of("abc", 3, (mine + 1) % 12, 5, 0, -1, &owner), PARTITION_APPLY);
    assert_int_equal(owner, (mine + 1) % 12);
}

static void test_route_forward_and_committed(void **s) {
    (void)s;
    int32_t owner = -7;
    int32_t mine = murmur2_partition("abc", 3, 12), other = (mine + 5) % 12;
    assert_int_equal(partition_route_of("abc", 3, other, 5, 12, -1, &owner), PARTITION_FORWARD);
    assert_int_equal(owner, mine);
    /* The committed offset is the first not known forwarded: it and above
     * are forwarded (again, on a replay), below it skipped. */
    assert_int_equal(partition_route_of("abc", 3, other, 5, 12, 5, &owner), PARTITION_FORWARD);
    assert_int_equal(partition_route_of("abc", 3, other, 4, 12, 5, &owner), PARTITION_FORWARDED);
    assert_int_equal(owner, mine);
    assert_int_equal(partition_route_of("abc", 3, other, 0, 12, 0, &owner), PARTITION_FORWARD);
}

/* Keys as a librdkafka client's default partitioner places them, on topics
 * of several sizes: every one not on its owner is forwarded there, and the
 * forwarded copy, found on the owner, is applied (one hop, no ping-pong). */
static void test_route_default_partitioner_randomized(void **s) {
    (void)s;
    static const int32_t sizes[] = {1, 2, 3, 6, 12, 64, 100};
    char key[PROMO_KEY_BUF];
    unsigned seed = 12345;
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        int32_t n = sizes[z];
        int forwarded = 0;
        for (int i = 0; i < 5000; i++) {
            seed = seed * 1103515245u + 12345u;
            size_t len = (size_t)snprintf(key, sizeof key, "k%u-%d", seed >> 8, i);
            int32_t landed = crc32_partition(key, len, n), owner = -1, again = -1;
            int64_t offset = (int64_t)(seed % 1000);
            partition_route r = partition_route_of(key, len, landed, offset, n, -1, &owner);
            assert_true(owner >= 0 && owner < n);
            assert_int_equal(owner, murmur2_partition(key, len, n));
            assert_int_equal(r, landed == owner ? PARTITION_APPLY : PARTITION_FORWARD);
            assert_int_equal(partition_route_of(key, len, owner, offset, n, offset + 1, &again), PARTITION_APPLY);
            assert_int_equal(again, owner);
            forwarded += r == PARTITION_FORWARD;
        }
        /* The two hashes agree only by chance, about one key in n: nearly
         * every command of a default-partitioned producer is forwarded. */
        assert_true(forwarded >= 5000 * (n - 1) / n * 9 / 10 && forwarded <= 5000 * (n - 1) / n * 11 / 10);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_vectors),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_crc32_reference),
        cmocka_unit_test(test_route_owner_applies),
        cmocka_unit_test(test_route_forward_and_committed),
        cmocka_unit_test(test_route_default_partitioner_randomized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
