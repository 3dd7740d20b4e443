/* test_ops.c — unit tests for the Prometheus text writer (ops.h).
 *
 * Every program's /metrics goes through it and the end-to-end tests parse
 * the result strictly, so the tests pin the exact text: HELP and TYPE once
 * per family, labelled and unlabelled samples, and histograms whose buckets
 * are cumulative, end in +Inf and agree with _count whatever the order of
 * the observations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ops.h"

/* The text p holds; caller frees. */
static char *text_of(prom *p) {
    char *out;
    size_t len;
    assert_int_equal(prom_close(p, &out, &len), 0);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_families_and_samples(void **state) {
    (void)state;
    prom p;
    assert_int_equal(prom_open(&p), 0);
    prom_counter(&p, "a_total", "As seen.", 3);
    prom_gauge(&p, "b", "Bs now.", -2);
    prom_family(&p, "c_total", "counter", "Cs by kind.");
    prom_u64(&p, "c_total", "kind=\"x\"", 1);
    prom_f64(&p, "c_total", "kind=\"y\"", 0.25);
    prom_i64(&p, "c_total", "", 7);
    char *t = text_of(&p);
    assert_string_equal(t, "# HELP a_total As seen.\n# TYPE a_total counter\na_total 3\n"
                           "# HELP b Bs now.\n# TYPE b gauge\nb -2\n"
                           "# HELP c_total Cs by kind.\n# TYPE c_total counter\n"
                           "c_total{kind=\"x\"} 1\nc_total{kind=\"y\"} 0.250000\nc_total 7\n");
    free(t);
}

static const double le[] = {0.1, 1, 10};

static void test_histogram_cumulative(void **state) {
    (void)state;
    prom_hist h = {.le = le, .n = 3};
    /* On a bound counts in that bucket; above the last, only in +Inf. */
    double seen[] = {20, 0.1, 5, 0.05, 1, 11, -1};
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++) prom_hist_observe(&h, seen[i]);
    assert_int_equal(prom_hist_count(&h), 7);
    prom p;
    assert_int_equal(prom_open(&p), 0);
    prom_family(&p, "d_seconds", "histogram", "Ds.");
    prom_hist_write(&p, "d_seconds", NULL, &h);
    prom_hist_write(&p, "d_seconds", "route=\"r\"", &h);
    char *t = text_of(&p);
    /* A negative observation counts but adds nothing to the sum. */
    assert_string_equal(t, "# HELP d_seconds Ds.\n# TYPE d_seconds histogram\n"
                           "d_seconds_bucket{le=\"0.1\"} 3\nd_seconds_bucket{le=\"1\"} 4\n"
                           "d_seconds_bucket{le=\"10\"} 5\nd_seconds_bucket{le=\"+Inf\"} 7\n"
                           "d_seconds_sum 37.150000\nd_seconds_count 7\n"
                           "d_seconds_bucket{route=\"r\",le=\"0.1\"} 3\nd_seconds_bucket{route=\"r\",le=\"1\"} 4\n"
                           "d_seconds_bucket{route=\"r\",le=\"10\"} 5\nd_seconds_bucket{route=\"r\",le=\"+Inf\"} 7\n"
                           "d_seconds_sum{route=\"r\"} 37.150000\nd_seconds_count{route=\"r\"} 7\n");
    free(t);
}

static void test_empty_histogram(void **state) {
    (void)state;
    prom_hist h = {.le = le, .n = 3};
    assert_int_equal(prom_hist_count(&h), 0);
    prom p;
    assert_int_equal(prom_open(&p), 0);
    prom_hist_write(&p, "e", NULL, &h);
    char *t = text_of(&p);
    assert_string_equal(t, "e_bucket{le=\"0.1\"} 0\ne_bucket{le=\"1\"} 0\ne_bucket{le=\"10\"} 0\n"
                           "e_bucket{le=\"+Inf\"} 0\ne_sum 0.000000\ne_count 0\n");
    free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families_and_samples),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_empty_histogram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
