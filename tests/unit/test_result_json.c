/* test_result_json.c — unit tests for the request-status JSON (result_json.h).
 *
 * Clients see exactly this text, so the tests pin its shape: the top-level
 * keys always present, each outcome field present exactly when the Result
 * carries it, nested records with explicit nulls, the ledger only when it
 * has entries, and strings that would break naive JSON (quotes, control
 * bytes, invalid UTF-8, arrays without a NUL) still giving valid JSON; and
 * the PENDING document ingest writes before a result exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "result_json.h"

static void base(promo_result *r) {
    memset(r, 0, sizeof *r);
    strcpy(r->request_id, "req-1");
    r->domain = DOMAIN_COUPON;
    r->command_type = CMD_ISSUE_COUPON;
    r->status = STATUS_SUCCEEDED;
    strcpy(r->entity_key, "pol-1");
    r->submitted_at = 1700000000000;
    r->processed_at = 1700000000005;
    r->version = 3;
}

/* Parses the dump back, so every test also checks the text is valid JSON. */
static json_t *roundtrip(const promo_result *r) {
    char *s = result_json_dump(r);
    assert_non_null(s);
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    if (!j) fail_msg("invalid JSON (%s): %s", err.text, s);
    free(s);
    return j;
}

static void test_minimal_exact_text(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    char *s = result_json_dump(&r);
    assert_non_null(s);
    assert_string_equal(s, "{\"request_id\":\"req-1\",\"status\":\"SUCCEEDED\",\"reason\":null,\"domain\":\"COUPON\","
                           "\"command_type\":\"IssueCoupon\",\"entity_key\":\"pol-1\",\"submitted_at\":1700000000000,"
                           "\"processed_at\":1700000000005,\"result\":{}}");
    free(s);
}

/* The PENDING document has a final status's keys in the same order, and
 * only it is recognised as PENDING. */
static void test_pending(void **state) {
    (void)state;
    promo_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    strcpy(cmd.request_id, "req-1");
    cmd.type = CMD_ISSUE_COUPON;
    cmd.submitted_at = 1700000000000;
    char s[512];
    assert_int_equal(result_json_pending(&cmd, "pol-1", s, sizeof s), 0);
    assert_string_equal(s, "{\"request_id\":\"req-1\",\"status\":\"PENDING\",\"reason\":null,\"domain\":\"COUPON\","
                           "\"command_type\":\"IssueCoupon\",\"entity_key\":\"pol-1\",\"submitted_at\":1700000000000,"
                           "\"processed_at\":null,\"result\":{}}");
    assert_true(result_json_is_pending(s));
    assert_int_equal(result_json_pending(&cmd, "pol-1", s, 40), -1);
    promo_result r;
    base(&r);
    char *final = result_json_dump(&r);
    assert_non_null(final);
    assert_false(result_json_is_pending(final));
    free(final);
}

static void test_rejected_reason(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    r.status = STATUS_REJECTED;
    strcpy(r.reason, "SOLD_OUT");
    r.domain = DOMAIN_TIMESALE;
    r.command_type = CMD_PLACE_ORDER;
    json_t *j = roundtrip(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "REJECTED");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "SOLD_OUT");
    assert_string_equal(json_string_value(json_object_get(j, "domain")), "TIMESALE");
    assert_string_equal(json_string_value(json_object_get(j, "command_type")), "PlaceOrder");
    json_decref(j);
}

/* One outcome field: how to set it on a result, its key, and its value. */
typedef struct field_case {
    const char *key;
    void (*set)(promo_result *r);
    const char *str; /* expected string value, or NULL for an integer */
    long long num;
} field_case;

static void set_user(promo_result *r) {
    strcpy(r->user_id, "u-1");
}
static void set_policy_id(promo_result *r) {
    strcpy(r->policy_id, "pol-1");
}
static void set_coupon(promo_result *r) {
    strcpy(r->coupon_id, "pol-1:7");
}
static void set_coupon_status(promo_result *r) {
    strcpy(r->coupon_status, "ISSUED");
}
static void set_issued_at(promo_result *r) {
    r->has_issued_at = true, r->issued_at = 11;
}
static void set_expires_at(promo_result *r) {
    r->has_expires_at = true, r->expires_at = 12;
}
static void set_discount(promo_result *r) {
    r->has_discount = true, r->discount = 0;
}
static void set_order(promo_result *r) {
    strcpy(r->order_id, "o-1");
}
static void set_order_amount(promo_result *r) {
    r->has_order_amount = true, r->order_amount = 50000;
}
static void set_order_status(promo_result *r) {
    strcpy(r->order_status, "PLACED");
}
static void set_quantity(promo_result *r) {
    r->has_quantity = true, r->quantity = 2;
}
static void set_issued(promo_result *r) {
    r->has_issued = true, r->issued = 100;
}
static void set_sold(promo_result *r) {
    r->has_sold = true, r->sold = 9;
}
static void set_remaining(promo_result *r) {
    r->has_remaining = true, r->remaining = -0;
}
static void set_amount(promo_result *r) {
    r->has_amount = true, r->amount = 700;
}
static void set_balance(promo_result *r) {
    r->has_balance = true, r->balance = INT64_MAX;
}

static const field_case fields[] = {
    {"user_id", set_user, "u-1", 0},
    {"policy_id", set_policy_id, "pol-1", 0},
    {"coupon_id", set_coupon, "pol-1:7", 0},
    {"coupon_status", set_coupon_status, "ISSUED", 0},
    {"issued_at", set_issued_at, NULL, 11},
    {"expires_at", set_expires_at, NULL, 12},
    {"discount", set_discount, NULL, 0},
    {"order_id", set_order, "o-1", 0},
    {"order_amount", set_order_amount, NULL, 50000},
    {"order_status", set_order_status, "PLACED", 0},
    {"quantity", set_quantity, NULL, 2},
    {"issued", set_issued, NULL, 100},
    {"sold", set_sold, NULL, 9},
    {"remaining", set_remaining, NULL, 0},
    {"amount", set_amount, NULL, 700},
    {"balance", set_balance, NULL, INT64_MAX},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

static void check_field(json_t *res, const field_case *f) {
    json_t *v = json_object_get(res, f->key);
    if (!v) fail_msg("missing %s", f->key);
    if (f->str) {
        assert_true(json_is_string(v));
        assert_string_equal(json_string_value(v), f->str);
    } else {
        assert_true(json_is_integer(v));
        assert_int_equal(json_integer_value(v), f->num);
    }
}

/* Each field alone: it and nothing else appears in "result". */
static void test_each_field_alone(void **state) {
    (void)state;
    for (size_t i = 0; i < N_FIELDS; i++) {
        promo_result r;
        base(&r);
        fields[i].set(&r);
        json_t *j = roundtrip(&r);
        json_t *res = json_object_get(j, "result");
        assert_true(json_is_object(res));
        assert_int_equal(json_object_size(res), 1);
        check_field(res, &fields[i]);
        json_decref(j);
    }
}

/* All fields but one: the one left out is absent, never null. */
static void test_each_field_missing(void **state) {
    (void)state;
    for (size_t skip = 0; skip < N_FIELDS; skip++) {
        promo_result r;
        base(&r);
        for (size_t i = 0; i < N_FIELDS; i++)
            if (i != skip) fields[i].set(&r);
        json_t *j = roundtrip(&r);
        json_t *res = json_object_get(j, "result");
        assert_int_equal(json_object_size(res), N_FIELDS - 1);
        assert_null(json_object_get(res, fields[skip].key));
        for (size_t i = 0; i < N_FIELDS; i++)
            if (i != skip) check_field(res, &fields[i]);
        json_decref(j);
    }
}

static void test_next_expiry_pair(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    r.has_next_expiry = true;
    r.next_expiry_at = 1800000000000;
    r.next_expiry_amount = 300;
    json_t *j = roundtrip(&r);
    json_t *res = json_object_get(j, "result");
    assert_int_equal(json_object_size(res), 2);
    assert_int_equal(json_integer_value(json_object_get(res, "next_expiry_at")), 1800000000000);
    assert_int_equal(json_integer_value(json_object_get(res, "next_expiry_amount")), 300);
    json_decref(j);
}

static void test_policy_nested(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    r.command_type = CMD_CREATE_COUPON_POLICY;
    r.has_policy = true;
    coupon_policy_def *p = &r.policy;
    strcpy(p->policy_id, "pol-1");
    strcpy(p->name, "Spring 10%");
    p->discount_type = DISCOUNT_PERCENT;
    p->discount_value = 10;
    p->min_order_amount = 10000;
    p->total_quantity = 1000;
    p->per_user_limit = 1;
    p->issue_starts_at = 1;
    p->issue_ends_at = 2;
    p->has_valid_days = true;
    p->valid_days = 30;
    json_t *j = roundtrip(&r);
    json_t *pj = json_object_get(json_object_get(j, "result"), "policy");
    assert_true(json_is_object(pj));
    assert_int_equal(json_object_size(pj), 12);
    assert_string_equal(json_string_value(json_object_get(pj, "name")), "Spring 10%");
    assert_string_equal(json_string_value(json_object_get(pj, "discount_type")), "PERCENT");
    assert_true(json_is_null(json_object_get(pj, "max_discount")));
    assert_true(json_is_null(json_object_get(pj, "valid_until")));
    assert_int_equal(json_integer_value(json_object_get(pj, "valid_days")), 30);
    assert_int_equal(json_integer_value(json_object_get(pj, "total_quantity")), 1000);
    json_decref(j);

    p->discount_type = DISCOUNT_FIXED;
    p->has_max_discount = true;
    p->max_discount = 5000;
    p->has_valid_days = false;
    p->has_valid_until = true;
    p->valid_until = 99;
    j = roundtrip(&r);
    pj = json_object_get(json_object_get(j, "result"), "policy");
    assert_string_equal(json_string_value(json_object_get(pj, "discount_type")), "FIXED");
    assert_int_equal(json_integer_value(json_object_get(pj, "max_discount")), 5000);
    assert_int_equal(json_integer_value(json_object_get(pj, "valid_until")), 99);
    assert_true(json_is_null(json_object_get(pj, "valid_days")));
    json_decref(j);
}

static void test_sale_nested(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    r.domain = DOMAIN_TIMESALE;
    r.command_type = CMD_CREATE_TIME_SALE;
    r.has_sale = true;
    strcpy(r.sale.sale_id, "sale-1");
    strcpy(r.sale.product_id, "prod-1");
    strcpy(r.sale.name, "Flash");
    r.sale.original_price = 20000;
    r.sale.sale_price = 9900;
    r.sale.stock = 100;
    r.sale.per_user_limit = 2;
    r.sale.starts_at = 5;
    r.sale.ends_at = 6;
    json_t *j = roundtrip(&r);
    json_t *sj = json_object_get(json_object_get(j, "result"), "sale");
    assert_int_equal(json_object_size(sj), 9);
    assert_string_equal(json_string_value(json_object_get(sj, "product_id")), "prod-1");
    assert_int_equal(json_integer_value(json_object_get(sj, "sale_price")), 9900);
    assert_int_equal(json_integer_value(json_object_get(sj, "ends_at")), 6);
    json_decref(j);
}

static void test_ledger(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    r.domain = DOMAIN_POINT;
    r.command_type = CMD_USE_POINTS;
    r.n_ledger = 2;
    r.ledger[0] = (ledger_entry){.seq = 4, .kind = LEDGER_EXPIRE, .delta = -100, .balance_after = 900, .at = 7};
    r.ledger[1] = (ledger_entry){.seq = 5, .kind = LEDGER_USE, .delta = -300, .balance_after = 600, .at = 7};
    strcpy(r.ledger[1].order_id, "o-9");
    strcpy(r.ledger[1].reason, "checkout");
    r.ledger[1].has_expires_at = true;
    r.ledger[1].expires_at = 8;
    json_t *j = roundtrip(&r);
    json_t *lj = json_object_get(json_object_get(j, "result"), "ledger");
    assert_true(json_is_array(lj));
    assert_int_equal(json_array_size(lj), 2);
    json_t *e0 = json_array_get(lj, 0), *e1 = json_array_get(lj, 1);
    assert_int_equal(json_object_size(e0), 8);
    assert_string_equal(json_string_value(json_object_get(e0, "kind")), "EXPIRE");
    assert_int_equal(json_integer_value(json_object_get(e0, "delta")), -100);
    assert_true(json_is_null(json_object_get(e0, "order_id")));
    assert_true(json_is_null(json_object_get(e0, "reason")));
    assert_true(json_is_null(json_object_get(e0, "expires_at")));
    assert_string_equal(json_string_value(json_object_get(e1, "kind")), "USE");
    assert_string_equal(json_string_value(json_object_get(e1, "order_id")), "o-9");
    assert_string_equal(json_string_value(json_object_get(e1, "reason")), "checkout");
    assert_int_equal(json_integer_value(json_object_get(e1, "expires_at")), 8);
    assert_int_equal(json_integer_value(json_object_get(e1, "balance_after")), 600);
    json_decref(j);

    /* Empty, and counts out of range: no ledger key, no overread. */
    int counts[] = {0, -1, PROMO_LEDGER_MAX + 5};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        r.n_ledger = counts[i];
        j = roundtrip(&r);
        lj = json_object_get(json_object_get(j, "result"), "ledger");
        if (counts[i] > 0)
            assert_int_equal(json_array_size(lj), PROMO_LEDGER_MAX);
        else
            assert_null(lj);
        json_decref(j);
    }
}

static void test_escaping(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    r.command_type = CMD_CREATE_COUPON_POLICY;
    r.has_policy = true;
    const char *odd = "a\"b\\c/d\n\r\t\x01\x1f </script> '; DROP TABLE requests; -- \xea\xb0\x80\xf0\x9f\x8e\x89";
    strcpy(r.policy.name, odd);
    strcpy(r.reason, "X\"Y");
    char *s = result_json_dump(&r);
    assert_non_null(s);
    assert_non_null(strstr(s, "a\\\"b\\\\c/d\\n\\r\\t\\u0001\\u001F"));
    assert_null(strchr(s, '\n'));
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_object_get(j, "result"), "policy"), "name")), odd);
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "X\"Y");
    json_decref(j);
    free(s);
}

static void test_invalid_utf8_replaced(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"ab\xff"
         "cd",
         "ab\xef\xbf\xbd"
         "cd"},                                                                   /* stray byte */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong '/' */
        {"\xed\xa0\x80!", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!"},               /* surrogate */
        {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* truncated at the end */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* above U+10FFFF */
        {"ok\xea\xb0\x80", "ok\xea\xb0\x80"},                                     /* valid Hangul untouched */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        promo_result r;
        base(&r);
        strcpy(r.user_id, cases[i].in);
        json_t *j = roundtrip(&r);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "result"), "user_id")), cases[i].out);
        json_decref(j);
    }
}

/* Fixed-size fields filled to the brim with no NUL must not be overread. */
static void test_unterminated_fields(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    memset(r.request_id, 'q', sizeof r.request_id);
    memset(r.user_id, 'u', sizeof r.user_id);
    memset(r.coupon_status, 'S', sizeof r.coupon_status);
    json_t *j = roundtrip(&r);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "request_id"))), sizeof r.request_id);
    assert_int_equal(strlen(json_string_value(json_object_get(json_object_get(j, "result"), "user_id"))),
                     sizeof r.user_id);
    json_decref(j);
}

static void test_deterministic(void **state) {
    (void)state;
    promo_result r;
    base(&r);
    for (size_t i = 0; i < N_FIELDS; i++) fields[i].set(&r);
    r.n_ledger = 1;
    r.ledger[0].seq = 1;
    char *a = result_json_dump(&r);
    char *b = result_json_dump(&r);
    assert_non_null(a);
    assert_string_equal(a, b);
    /* Keys follow the documented order. */
    assert_true(strstr(a, "\"user_id\"") < strstr(a, "\"balance\""));
    assert_true(strstr(a, "\"balance\"") < strstr(a, "\"ledger\""));
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_exact_text),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_rejected_reason),
        cmocka_unit_test(test_each_field_alone),
        cmocka_unit_test(test_each_field_missing),
        cmocka_unit_test(test_next_expiry_pair),
        cmocka_unit_test(test_policy_nested),
        cmocka_unit_test(test_sale_nested),
        cmocka_unit_test(test_ledger),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_invalid_utf8_replaced),
        cmocka_unit_test(test_unterminated_fields),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
