/* test_partition.c — our murmur2 partitioner against the vectors of Kafka's
 * own test suite (UtilsTest.testMurmur2), so a key lands where Java
 * producers and librdkafka's murmur2_random put it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "partition.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_vectors),
        cmocka_unit_test(test_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
