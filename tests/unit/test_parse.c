/* test_parse.c — cmocka tests of common/parse.c, the pure half of ingest.
 *
 * Every write route is driven from one valid body (the `writes` table); the
 * table-driven tests then take each body apart — drop each field, give it the
 * wrong type, null it, add an unknown one — and check the error names the
 * right field. Further tests cover routes and path ids, headers that become
 * envelope fields, callback URLs, size and media-type limits, query values,
 * and random bytes as bodies (no input may crash, ASan build included).
 *
 * Two more pure pieces of ingest are tested here too, so they need no test
 * binary of their own: the route table against ingest/openapi.json (both
 * ways: every route documented with its error answers, every documented
 * operation routed), and the token buckets of ratelimit.c, which is included
 * whole so its clock can be driven by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "parse.h"
#include "ratelimit.c" /* ingest's, by -Iingest (the Makefile) */

#define ALLOW "127.0.0.1,localhost, hooks.example.com ,[::1]"
#define NOW 1700000000000LL

typedef struct write_case {
    const char *path;
    const char *body;
    const char *required; /* space-separated names of required body fields */
    cmd_type type;
} write_case;

static const write_case writes[] = {
    {"/v1/coupon-policies",
     "{\"policy_id\":\"p1\",\"name\":\"Welcome\",\"discount_type\":\"PERCENT\",\"discount_value\":10,"
     "\"max_discount\":5000,\"min_order_amount\":10000,\"total_quantity\":100,\"per_user_limit\":2,"
     "\"issue_starts_at\":1700000000000,\"issue_ends_at\":1800000000000,\"valid_until\":1900000000000,"
     "\"valid_days\":30}",
     "policy_id name discount_type discount_value total_quantity issue_starts_at issue_ends_at",
     CMD_CREATE_COUPON_POLICY},
    {"/v1/coupon-policies/p1/issue", "{\"user_id\":\"u1\"}", "user_id", CMD_ISSUE_COUPON},
    {"/v1/coupons/p1:7/redeem", "{\"user_id\":\"u1\",\"order_id\":\"o1\",\"order_amount\":20000}",
     "user_id order_id order_amount", CMD_REDEEM_COUPON},
    {"/v1/coupons/p1:7/cancel", "{\"order_id\":\"o1\"}", "order_id", CMD_CANCEL_REDEMPTION},
    {"/v1/points/u1/earn", "{\"amount\":500,\"reason\":\"signup\",\"expires_at\":1900000000000}", "amount reason",
     CMD_EARN_POINTS},
    {"/v1/points/u1/use", "{\"amount\":300,\"order_id\":\"o1\"}", "amount order_id", CMD_USE_POINTS},
    {"/v1/points/u1/cancel", "{\"order_id\":\"o1\"}", "order_id", CMD_CANCEL_POINT_USE},
    {"/v1/time-sales",
     "{\"sale_id\":\"s1\",\"product_id\":\"prod-1\",\"name\":\"Flash\",\"original_price\":10000,"
     "\"sale_price\":5000,\"stock\":10,\"per_user_limit\":1,\"starts_at\":1700000000000,\"ends_at\":1800000000000}",
     "sale_id product_id name original_price sale_price stock starts_at ends_at", CMD_CREATE_TIME_SALE},
    {"/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":2,\"order_id\":\"o9\"}", "user_id quantity",
     CMD_PLACE_ORDER},
    {"/v1/time-sales/s1/orders/o9/cancel", "{}", "", CMD_CANCEL_ORDER},
    /* Campaign controls (DESIGN.md §4a); "PATCH " names the method. */
    {"/v1/coupon-policies/p1/pause", "{}", "", CMD_PAUSE_COUPON_POLICY},
    {"/v1/coupon-policies/p1/resume", "{}", "", CMD_RESUME_COUPON_POLICY},
    {"/v1/coupon-policies/p1/close", "{}", "", CMD_CLOSE_COUPON_POLICY},
    {"PATCH /v1/coupon-policies/p1",
     "{\"total_quantity\":500,\"per_user_limit\":3,\"issue_ends_at\":1800000000000,\"valid_until\":1900000000000}", "",
     CMD_UPDATE_COUPON_POLICY},
    {"/v1/time-sales/s1/pause", "{}", "", CMD_PAUSE_TIME_SALE},
    {"/v1/time-sales/s1/resume", "{}", "", CMD_RESUME_TIME_SALE},
    {"/v1/time-sales/s1/close", "{}", "", CMD_CLOSE_TIME_SALE},
    {"PATCH /v1/time-sales/s1", "{\"stock\":50,\"per_user_limit\":2,\"ends_at\":1800000000000,\"hold_ms\":60000}", "",
     CMD_UPDATE_TIME_SALE},
    /* Checkout holds: an order with hold_ms is a HoldOrder (without it, a
     * PlaceOrder: so hold_ms is not "required" here). */
    {"/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":2,\"order_id\":\"o9\",\"hold_ms\":60000}",
     "user_id quantity", CMD_HOLD_ORDER},
    {"/v1/time-sales/s1/orders/o9/confirm", "{}", "", CMD_CONFIRM_ORDER},
    /* Pending points (an earn with available_at) and adjustments. */
    {"/v1/points/u1/earn",
     "{\"amount\":500,\"reason\":\"signup\",\"expires_at\":1900000000000,\"available_at\":1800000000000}",
     "amount reason", CMD_EARN_PENDING_POINTS},
    {"/v1/points/u1/adjust", "{\"amount\":-300,\"reason\":\"support\"}", "amount reason", CMD_ADJUST_POINTS},
};
#define N_WRITES (sizeof writes / sizeof writes[0])

/* A writes[] path may start with its method ("PATCH /v1/..."); POST if not. */
static const char *path_method(const char *path, const char **method) {
    *method = "POST";
    if (strncmp(path, "PATCH ", 6) == 0) {
        *method = "PATCH";
        return path + 6;
    }
    return path;
}

/* Parses one request; returns parse_cmd's value, or -2 if routing failed. */
static int run_full(const char *method, const char *path, const char *body, size_t body_len, const char *ct,
                    const char *idem, const char *client, promo_cmd *cmd, parse_error *err) {
    parse_route route;
    memset(err, 0, sizeof *err);
    if (strcmp(method, "POST") == 0) path = path_method(path, &method);
    if (parse_route_match(method, path, &route, err)) return -2;
    parse_input in = {
        .route = &route,
        .content_type = ct,
        .body = body,
        .body_len = body_len,
        .idempotency_key = idem,
        .client_id = client,
        .fresh_request_id = "0123456789abcdef0123456789abcdef",
        .now_ms = NOW,
        .webhook_allow = ALLOW,
    };
    return parse_cmd(&in, cmd, err);
}

static int run(const char *path, const char *body, promo_cmd *cmd, parse_error *err) {
    return run_full("POST", path, body, strlen(body), "application/json", NULL, NULL, cmd, err);
}

static char *dump(json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(s);
    return s;
}

static bool is_required(const write_case *w, const char *name) {
    char buf[256];
    snprintf(buf, sizeof buf, " %s ", w->required);
    char want[80];
    snprintf(want, sizeof want, " %s ", name);
    return strstr(buf, want) != NULL;
}

static void expect_err(int rc, const parse_error *err, int status, const char *code, const char *field) {
    if (rc == 0) fail_msg("expected %s on %s, got success", code, field ? field : "-");
    assert_int_equal(err->status, status);
    assert_string_equal(err->code, code);
    if (field) assert_string_equal(err->field, field);
    assert_true(err->message[0] != '\0');
}

/* ---- every write's valid body ---- */

static void test_valid_bodies(void **state) {
    (void)state;
    for (size_t i = 0; i < N_WRITES; i++) {
        promo_cmd cmd;
        parse_error err;
        int rc = run(writes[i].path, writes[i].body, &cmd, &err);
        if (rc) fail_msg("%s: %s %s %s", writes[i].path, err.code, err.field, err.message);
        assert_int_equal(cmd.type, writes[i].type);
        assert_string_equal(cmd.request_id, "0123456789abcdef0123456789abcdef");
        assert_int_equal(cmd.submitted_at, NOW);
        assert_string_equal(cmd.callback_url, "");
        assert_string_equal(cmd.client_id, "");
        char key[PROMO_ID_MAX + 1];
        assert_int_equal(cmd_entity_key(&cmd, key, sizeof key), 0);
    }
}

static void test_fields_land(void **state) {
    (void)state;
    promo_cmd c;
    parse_error e;
    assert_int_equal(run(writes[0].path, writes[0].body, &c, &e), 0);
    const coupon_policy_def *p = &c.u.create_policy;
    assert_string_equal(p->policy_id, "p1");
    assert_string_equal(p->name, "Welcome");
    assert_int_equal(p->discount_type, DISCOUNT_PERCENT);
    assert_int_equal(p->discount_value, 10);
    assert_true(p->has_max_discount);
    assert_int_equal(p->max_discount, 5000);
    assert_int_equal(p->min_order_amount, 10000);
    assert_int_equal(p->total_quantity, 100);
    assert_int_equal(p->per_user_limit, 2);
    assert_int_equal(p->issue_starts_at, 1700000000000LL);
    assert_int_equal(p->issue_ends_at, 1800000000000LL);
    assert_true(p->has_valid_until);
    assert_int_equal(p->valid_until, 1900000000000LL);
    assert_true(p->has_valid_days);
    assert_int_equal(p->valid_days, 30);

    assert_int_equal(run(writes[1].path, writes[1].body, &c, &e), 0);
    assert_string_equal(c.u.issue.policy_id, "p1");
    assert_string_equal(c.u.issue.user_id, "u1");

    assert_int_equal(run(writes[2].path, writes[2].body, &c, &e), 0);
    assert_string_equal(c.u.redeem.coupon_id, "p1:7");
    assert_string_equal(c.u.redeem.user_id, "u1");
    assert_string_equal(c.u.redeem.order_id, "o1");
    assert_int_equal(c.u.redeem.order_amount, 20000);
    char key[PROMO_ID_MAX + 1];
    assert_int_equal(cmd_entity_key(&c, key, sizeof key), 0);
    assert_string_equal(key, "p1");

    assert_int_equal(run(writes[3].path, writes[3].body, &c, &e), 0);
    assert_string_equal(c.u.cancel_redemption.coupon_id, "p1:7");
    assert_string_equal(c.u.cancel_redemption.order_id, "o1");

    assert_int_equal(run(writes[4].path, writes[4].body, &c, &e), 0);
    assert_string_equal(c.u.earn.user_id, "u1");
    assert_int_equal(c.u.earn.amount, 500);
    assert_string_equal(c.u.earn.reason, "signup");
    assert_true(c.u.earn.has_expires_at);
    assert_int_equal(c.u.earn.expires_at, 1900000000000LL);

    assert_int_equal(run(writes[5].path, writes[5].body, &c, &e), 0);
    assert_string_equal(c.u.use.user_id, "u1");
    assert_int_equal(c.u.use.amount, 300);
    assert_string_equal(c.u.use.order_id, "o1");

    assert_int_equal(run(writes[6].path, writes[6].body, &c, &e), 0);
    assert_string_equal(c.u.cancel_use.user_id, "u1");
    assert_string_equal(c.u.cancel_use.order_id, "o1");

    assert_int_equal(run(writes[7].path, writes[7].body, &c, &e), 0);
    const time_sale_def *s = &c.u.create_sale;
    assert_string_equal(s->sale_id, "s1");
    assert_string_equal(s->product_id, "prod-1");
    assert_string_equal(s->name, "Flash");
    assert_int_equal(s->original_price, 10000);
    assert_int_equal(s->sale_price, 5000);
    assert_int_equal(s->stock, 10);
    assert_int_equal(s->per_user_limit, 1);
    assert_int_equal(s->starts_at, 1700000000000LL);
    assert_int_equal(s->ends_at, 1800000000000LL);

    assert_int_equal(run(writes[8].path, writes[8].body, &c, &e), 0);
    assert_string_equal(c.u.place_order.sale_id, "s1");
    assert_string_equal(c.u.place_order.user_id, "u1");
    assert_int_equal(c.u.place_order.quantity, 2);
    assert_string_equal(c.u.place_order.order_id, "o9");

    assert_int_equal(run(writes[9].path, writes[9].body, &c, &e), 0);
    assert_string_equal(c.u.cancel_order.sale_id, "s1");
    assert_string_equal(c.u.cancel_order.order_id, "o9");
}

static void test_defaults_and_nulls(void **state) {
    (void)state;
    promo_cmd c;
    parse_error e;
    /* Optional numbers absent or null: no flag, or the documented default. */
    assert_int_equal(run("/v1/coupon-policies",
                         "{\"policy_id\":\"p2\",\"name\":\"n\",\"discount_type\":\"FIXED\",\"discount_value\":1000,"
                         "\"max_discount\":null,\"total_quantity\":5,\"issue_starts_at\":1,\"issue_ends_at\":2,"
                         "\"valid_days\":7,\"valid_until\":null}",
                         &c, &e),
                     0);
    assert_int_equal(c.u.create_policy.discount_type, DISCOUNT_FIXED);
    assert_false(c.u.create_policy.has_max_discount);
    assert_false(c.u.create_policy.has_valid_until);
    assert_true(c.u.create_policy.has_valid_days);
    assert_int_equal(c.u.create_policy.min_order_amount, 0);
    assert_int_equal(c.u.create_policy.per_user_limit, 1);

    assert_int_equal(run("/v1/points/u1/earn", "{\"amount\":1,\"reason\":\"r\",\"expires_at\":null}", &c, &e), 0);
    assert_false(c.u.earn.has_expires_at);
    assert_int_equal(run("/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":1}", &c, &e), 0);
    assert_string_equal(c.u.place_order.order_id, "");
    assert_int_equal(run("/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":1,\"order_id\":null}", &c, &e),
                     0);
    assert_string_equal(c.u.place_order.order_id, "");
}

/* ---- taking each body apart ---- */

static void test_missing_each_field(void **state) {
    (void)state;
    for (size_t i = 0; i < N_WRITES; i++) {
        json_t *root = json_loads(writes[i].body, 0, NULL);
        assert_non_null(root);
        const char *key;
        json_t *val;
        json_object_foreach(root, key, val) {
            json_t *copy = json_deep_copy(root);
            json_object_del(copy, key);
            char *body = dump(copy);
            promo_cmd c;
            parse_error e;
            int rc = run(writes[i].path, body, &c, &e);
            if (is_required(&writes[i], key)) {
                expect_err(rc, &e, 400, "MISSING_FIELD", key);
            } else if (rc != 0) {
                /* policy: dropping both valid_until and valid_days is the only
                 * optional pair with a cross rule; each alone is fine. */
                fail_msg("%s without %s: %s %s", writes[i].path, key, e.field, e.message);
            }
            free(body);
            json_decref(copy);
        }
        json_decref(root);
    }
}

static void test_null_required_field(void **state) {
    (void)state;
    for (size_t i = 0; i < N_WRITES; i++) {
        json_t *root = json_loads(writes[i].body, 0, NULL);
        const char *key;
        json_t *val;
        json_object_foreach(root, key, val) {
            if (!is_required(&writes[i], key)) continue;
            json_t *copy = json_deep_copy(root);
            json_object_set_new(copy, key, json_null());
            char *body = dump(copy);
            promo_cmd c;
            parse_error e;
            expect_err(run(writes[i].path, body, &c, &e), &e, 400, "MISSING_FIELD", key);
            free(body);
            json_decref(copy);
        }
        json_decref(root);
    }
}

static void test_wrong_type_each_field(void **state) {
    (void)state;
    for (size_t i = 0; i < N_WRITES; i++) {
        json_t *root = json_loads(writes[i].body, 0, NULL);
        const char *key;
        json_t *val;
        json_object_foreach(root, key, val) {
            /* A string where a number is wanted and the other way round, then
             * values JSON has but the field never accepts. */
            json_t *bad[] = {
                json_is_string(val) ? json_integer(1) : json_string("1"), json_true(), json_array(), json_object(),
                json_is_integer(val) ? json_real(1.0) : json_real(1.5),
            };
            for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
                json_t *copy = json_deep_copy(root);
                json_object_set_new(copy, key, bad[b]);
                char *body = dump(copy);
                promo_cmd c;
                parse_error e;
                int rc = run(writes[i].path, body, &c, &e);
                if (rc == 0) fail_msg("%s: %s accepted %s", writes[i].path, key, body);
                expect_err(rc, &e, 400, "INVALID_FIELD", key);
                free(body);
                json_decref(copy);
            }
        }
        json_decref(root);
    }
}

static void test_unknown_field_each_route(void **state) {
    (void)state;
    for (size_t i = 0; i < N_WRITES; i++) {
        json_t *root = json_loads(writes[i].body, 0, NULL);
        json_object_set_new(root, "surprise", json_integer(1));
        char *body = dump(root);
        promo_cmd c;
        parse_error e;
        expect_err(run(writes[i].path, body, &c, &e), &e, 400, "UNKNOWN_FIELD", "surprise");
        free(body);
        json_decref(root);
    }
    /* A path id is not also a body field. */
    promo_cmd c;
    parse_error e;
    expect_err(run("/v1/coupon-policies/p1/issue", "{\"user_id\":\"u1\",\"policy_id\":\"p1\"}", &c, &e), &e, 400,
               "UNKNOWN_FIELD", "policy_id");
    expect_err(run("/v1/points/u1/use", "{\"amount\":1,\"order_id\":\"o\",\"request_id\":\"r\"}", &c, &e), &e, 400,
               "UNKNOWN_FIELD", "request_id");
    /* An unprintable name is echoed safely. */
    expect_err(run("/v1/points/u1/cancel", "{\"order_id\":\"o\",\"a\\u0001b\":1}", &c, &e), &e, 400, "UNKNOWN_FIELD",
               "a?b");
}

static void test_bad_ids_in_body(void **state) {
    (void)state;
    const char *bad[] = {"",
                         "has space",
                         "slash/",
                         "colon:",
                         "\\u00e9",
                         "a\\nb",
                         "12345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        char body[256];
        promo_cmd c;
        parse_error e;
        snprintf(body, sizeof body, "{\"user_id\":\"%s\"}", bad[b]);
        expect_err(run("/v1/coupon-policies/p1/issue", body, &c, &e), &e, 400, "INVALID_FIELD", "user_id");
        snprintf(body, sizeof body, "{\"user_id\":\"u\",\"quantity\":1,\"order_id\":\"%s\"}", bad[b]);
        expect_err(run("/v1/time-sales/s1/orders", body, &c, &e), &e, 400, "INVALID_FIELD", "order_id");
    }
    /* Exactly 64 characters is fine. */
    promo_cmd c;
    parse_error e;
    assert_int_equal(run("/v1/coupon-policies/p1/issue",
                         "{\"user_id\":\"1234567890123456789012345678901234567890123456789012345678901234\"}", &c, &e),
                     0);
}

static void test_oversized_text(void **state) {
    (void)state;
    char reason[PROMO_TEXT_MAX + 2];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0'; /* 201 bytes */
    char body[512];
    promo_cmd c;
    parse_error e;
    snprintf(body, sizeof body, "{\"amount\":1,\"reason\":\"%s\"}", reason);
    expect_err(run("/v1/points/u1/earn", body, &c, &e), &e, 400, "INVALID_FIELD", "reason");
    reason[PROMO_TEXT_MAX] = '\0'; /* 200 bytes */
    snprintf(body, sizeof body, "{\"amount\":1,\"reason\":\"%s\"}", reason);
    assert_int_equal(run("/v1/points/u1/earn", body, &c, &e), 0);
    /* Multi-byte UTF-8 counts in bytes: 101 two-byte characters are 202 bytes. */
    char name[400] = "";
    for (int i = 0; i < 101; i++) strcat(name, "\xc3\xa9");
    char body2[800];
    snprintf(body2, sizeof body2,
             "{\"sale_id\":\"s1\",\"product_id\":\"p\",\"name\":\"%s\",\"original_price\":2,\"sale_price\":1,"
             "\"stock\":1,\"starts_at\":1,\"ends_at\":2}",
             name);
    expect_err(run("/v1/time-sales", body2, &c, &e), &e, 400, "INVALID_FIELD", "name");
    expect_err(run("/v1/points/u1/earn", "{\"amount\":1,\"reason\":\"\"}", &c, &e), &e, 400, "INVALID_FIELD", "reason");
}

static void test_ranges(void **state) {
    (void)state;
    promo_cmd c;
    parse_error e;
    struct {
        const char *path, *body, *field;
    } cases[] = {
        {"/v1/points/u1/earn", "{\"amount\":0,\"reason\":\"r\"}", "amount"},
        {"/v1/points/u1/earn", "{\"amount\":-5,\"reason\":\"r\"}", "amount"},
        {"/v1/points/u1/use", "{\"amount\":9223372036854775807,\"order_id\":\"o\"}", "amount"},
        {"/v1/points/u1/earn", "{\"amount\":1,\"reason\":\"r\",\"expires_at\":-1}", "expires_at"},
        {"/v1/coupons/p1:1/redeem", "{\"user_id\":\"u\",\"order_id\":\"o\",\"order_amount\":0}", "order_amount"},
        {"/v1/time-sales/s1/orders", "{\"user_id\":\"u\",\"quantity\":0}", "quantity"},
        {"/v1/time-sales/s1/orders", "{\"user_id\":\"u\",\"quantity\":2147483648}", "quantity"},
        {"/v1/time-sales/s1/orders", "{\"user_id\":\"u\",\"quantity\":-2147483649}", "quantity"},
        {"/v1/coupon-policies",
         "{\"policy_id\":\"p\",\"name\":\"n\",\"discount_type\":\"PERCENT\",\"discount_value\":101,"
         "\"total_quantity\":1,\"issue_starts_at\":1,\"issue_ends_at\":2,\"valid_days\":1}",
         "discount_value"},
        {"/v1/coupon-policies",
         "{\"policy_id\":\"p\",\"name\":\"n\",\"discount_type\":\"PERCENTAGE\",\"discount_value\":10,"
         "\"total_quantity\":1,\"issue_starts_at\":1,\"issue_ends_at\":2,\"valid_days\":1}",
         "discount_type"},
        {"/v1/coupon-policies",
         "{\"policy_id\":\"p\",\"name\":\"n\",\"discount_type\":\"FIXED\",\"discount_value\":10,"
         "\"total_quantity\":0,\"issue_starts_at\":1,\"issue_ends_at\":2,\"valid_days\":1}",
         "total_quantity"},
        {"/v1/coupon-policies",
         "{\"policy_id\":\"p\",\"name\":\"n\",\"discount_type\":\"FIXED\",\"discount_value\":10,"
         "\"total_quantity\":1,\"issue_starts_at\":5,\"issue_ends_at\":5,\"valid_days\":1}",
         "issue_ends_at"},
        {"/v1/coupon-policies",
         "{\"policy_id\":\"p\",\"name\":\"n\",\"discount_type\":\"FIXED\",\"discount_value\":10,"
         "\"total_quantity\":1,\"issue_starts_at\":1,\"issue_ends_at\":2}",
         "valid_until"},
        {"/v1/coupon-policies",
         "{\"policy_id\":\"p\",\"name\":\"n\",\"discount_type\":\"FIXED\",\"discount_value\":10,"
         "\"total_quantity\":1,\"per_user_limit\":0,\"issue_starts_at\":1,\"issue_ends_at\":2,\"valid_days\":1}",
         "per_user_limit"},
        {"/v1/time-sales",
         "{\"sale_id\":\"s\",\"product_id\":\"p\",\"name\":\"n\",\"original_price\":1,\"sale_price\":2,"
         "\"stock\":1,\"starts_at\":1,\"ends_at\":2}",
         "sale_price"},
        {"/v1/time-sales",
         "{\"sale_id\":\"s\",\"product_id\":\"p\",\"name\":\"n\",\"original_price\":2,\"sale_price\":1,"
         "\"stock\":0,\"starts_at\":1,\"ends_at\":2}",
         "stock"},
        {"/v1/time-sales",
         "{\"sale_id\":\"s\",\"product_id\":\"p\",\"name\":\"n\",\"original_price\":2,\"sale_price\":1,"
         "\"stock\":1,\"starts_at\":3,\"ends_at\":2}",
         "ends_at"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run(cases[i].path, cases[i].body, &c, &e);
        if (rc == 0) fail_msg("accepted %s", cases[i].body);
        expect_err(rc, &e, 400, "INVALID_FIELD", cases[i].field);
    }
}

/* ---- JSON shape, size, media type ---- */

static void test_invalid_json(void **state) {
    (void)state;
    const char *bodies[] = {
        "{",
        "[]",
        "\"str\"",
        "42",
        "null",
        "{\"user_id\":\"u1\"} x",
        "{\"user_id\":\"u1\",\"user_id\":\"u2\"}",
        "{'user_id':'u1'}",
        "{\"user_id\":\"u\\u0000\"}",
        "{\"user_id\":\"\xff\"}",
        "{\"a\":99999999999999999999999}",
        "   ",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        promo_cmd c;
        parse_error e;
        int rc = run("/v1/coupon-policies/p1/issue", bodies[i], &c, &e);
        if (rc == 0) fail_msg("accepted %s", bodies[i]);
        expect_err(rc, &e, 400, "INVALID_JSON", "");
    }
}

static void test_body_limit(void **state) {
    (void)state;
    size_t n = PARSE_BODY_MAX + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    promo_cmd c;
    parse_error e;
    expect_err(run_full("POST", "/v1/points/u1/cancel", big, n, "application/json", NULL, NULL, &c, &e), &e, 413,
               "PAYLOAD_TOO_LARGE", "");
    /* Exactly at the limit it is parsed (padding is JSON whitespace). */
    static const char body[] = "{\"order_id\":\"o\"}";
    memcpy(big, body, sizeof body - 1);
    assert_int_equal(
        run_full("POST", "/v1/points/u1/cancel", big, PARSE_BODY_MAX, "application/json", NULL, NULL, &c, &e), 0);
    free(big);
}

static void test_content_type(void **state) {
    (void)state;
    assert_true(parse_content_type_json("application/json"));
    assert_true(parse_content_type_json("Application/JSON"));
    assert_true(parse_content_type_json("application/json; charset=utf-8"));
    assert_true(parse_content_type_json(" application/json ;charset=UTF-8"));
    assert_false(parse_content_type_json(NULL));
    assert_false(parse_content_type_json(""));
    assert_false(parse_content_type_json("text/plain"));
    assert_false(parse_content_type_json("application/jsonx"));
    assert_false(parse_content_type_json("application/json-patch+json"));
    assert_false(parse_content_type_json("application/x-www-form-urlencoded"));

    promo_cmd c;
    parse_error e;
    const char *body = "{\"order_id\":\"o\"}";
    expect_err(run_full("POST", "/v1/points/u1/cancel", body, strlen(body), "text/plain", NULL, NULL, &c, &e), &e, 415,
               "UNSUPPORTED_MEDIA_TYPE", NULL);
    expect_err(run_full("POST", "/v1/points/u1/cancel", body, strlen(body), NULL, NULL, NULL, &c, &e), &e, 415,
               "UNSUPPORTED_MEDIA_TYPE", NULL);
    /* No body at all needs no type: cancel order has no fields. */
    assert_int_equal(run_full("POST", "/v1/time-sales/s1/orders/o1/cancel", "", 0, NULL, NULL, NULL, &c, &e), 0);
    assert_int_equal(c.type, CMD_CANCEL_ORDER);
    expect_err(run_full("POST", "/v1/points/u1/cancel", "", 0, NULL, NULL, NULL, &c, &e), &e, 400, "MISSING_FIELD",
               "order_id");
}

/* ---- headers and callback URLs ---- */

static void test_idempotency_and_client_headers(void **state) {
    (void)state;
    promo_cmd c;
    parse_error e;
    const char *body = "{\"user_id\":\"u1\"}";
    size_t n = strlen(body);
    assert_int_equal(run_full("POST", "/v1/coupon-policies/p1/issue", body, n, "application/json", "order-42.retry_1",
                              "shop-7", &c, &e),
                     0);
    assert_string_equal(c.request_id, "order-42.retry_1");
    assert_string_equal(c.client_id, "shop-7");
    const char *bad[] = {"", "white space", "a/b", "ä",
                         "12345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_err(run_full("POST", "/v1/coupon-policies/p1/issue", body, n, "application/json", bad[i], NULL, &c, &e),
                   &e, 400, "INVALID_FIELD", "Idempotency-Key");
        expect_err(run_full("POST", "/v1/coupon-policies/p1/issue", body, n, "application/json", NULL, bad[i], &c, &e),
                   &e, 400, "INVALID_FIELD", "X-Client-Id");
    }
}

static void test_callback_url(void **state) {
    (void)state;
    char why[160];
    const char *good[] = {
        "http://127.0.0.1:8080/hook", "https://localhost/a?b=c#d",       "HTTP://LOCALHOST",
        "http://hooks.example.com",   "https://HOOKS.example.COM:443/x", "http://[::1]:9000/h",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (parse_callback_url(good[i], ALLOW, why, sizeof why)) fail_msg("%s: %s", good[i], why);
    const char *bad[] = {
        "ftp://localhost/",
        "localhost/hook",
        "http://",
        "http:///x",
        "http://evil.com/",
        "http://127.0.0.1@evil.com/",
        "http://evil.com@127.0.0.1/",
        "http://localhost.evil.com/",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:65536/",
        "http://127.0.0.1:/",
        "http://127.0.0.1:8x/",
        "http://local host/",
        "http://localhost/\x01",
        "http://[::1/",
        "http://[::1]x/",
        "javascript:alert(1)",
        "http://hooks.example.com.",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (parse_callback_url(bad[i], ALLOW, why, sizeof why) == 0) fail_msg("accepted %s", bad[i]);
    /* An empty allow list allows nothing. */
    assert_int_equal(parse_callback_url("http://localhost/", "", why, sizeof why), -1);

    promo_cmd c;
    parse_error e;
    assert_int_equal(run("/v1/points/u1/use",
                         "{\"amount\":1,\"order_id\":\"o\",\"callback_url\":\"http://localhost:9/cb\"}", &c, &e),
                     0);
    assert_string_equal(c.callback_url, "http://localhost:9/cb");
    assert_int_equal(run("/v1/points/u1/use", "{\"amount\":1,\"order_id\":\"o\",\"callback_url\":null}", &c, &e), 0);
    assert_string_equal(c.callback_url, "");
    expect_err(
        run("/v1/points/u1/use", "{\"amount\":1,\"order_id\":\"o\",\"callback_url\":\"http://evil.com/\"}", &c, &e), &e,
        400, "INVALID_FIELD", "callback_url");
    expect_err(run("/v1/points/u1/use", "{\"amount\":1,\"order_id\":\"o\",\"callback_url\":7}", &c, &e), &e, 400,
               "INVALID_FIELD", "callback_url");
    expect_err(run("/v1/points/u1/use", "{\"amount\":1,\"order_id\":\"o\",\"callback_url\":\"\"}", &c, &e), &e, 400,
               "INVALID_FIELD", "callback_url");
    /* Every write takes one. */
    for (size_t i = 0; i < N_WRITES; i++) {
        json_t *root = json_loads(writes[i].body, 0, NULL);
        json_object_set_new(root, "callback_url", json_string("https://hooks.example.com/promo"));
        char *body = dump(root);
        assert_int_equal(run(writes[i].path, body, &c, &e), 0);
        assert_string_equal(c.callback_url, "https://hooks.example.com/promo");
        free(body);
        json_decref(root);
    }
    /* Too long: 2049 bytes. */
    size_t n = PROMO_URL_MAX + 1;
    char *url = malloc(n + 1);
    memcpy(url, "http://localhost/", 17);
    memset(url + 17, 'a', n - 17);
    url[n] = '\0';
    assert_int_equal(parse_callback_url(url, ALLOW, why, sizeof why), -1);
    json_t *root = json_pack("{s:I,s:s,s:s}", "amount", (json_int_t)1, "order_id", "o", "callback_url", url);
    char *body = dump(root);
    expect_err(run("/v1/points/u1/use", body, &c, &e), &e, 400, "INVALID_FIELD", "callback_url");
    free(body);
    json_decref(root);
    url[n - 1] = '\0'; /* 2048 bytes: fine */
    assert_int_equal(parse_callback_url(url, ALLOW, why, sizeof why), 0);
    free(url);
}

/* ---- campaign controls ---- */

static int run_patch(const char *path, const char *body, promo_cmd *cmd, parse_error *err) {
    return run_full("PATCH", path, body, strlen(body), "application/json", NULL, NULL, cmd, err);
}

static void test_controls(void **state) {
    (void)state;
    promo_cmd c;
    parse_error e;
    /* A PATCH must change something, within the create's ranges. */
    expect_err(run_patch("/v1/coupon-policies/p1", "{}", &c, &e), &e, 400, "INVALID_FIELD", "total_quantity");
    expect_err(run_patch("/v1/coupon-policies/p1", "{\"total_quantity\":0}", &c, &e), &e, 400, "INVALID_FIELD",
               "total_quantity");
    expect_err(run_patch("/v1/coupon-policies/p1", "{\"per_user_limit\":\"2\"}", &c, &e), &e, 400, "INVALID_FIELD",
               "per_user_limit");
    expect_err(run_patch("/v1/coupon-policies/p1", "{\"issue_ends_at\":2000,\"valid_until\":1000}", &c, &e), &e, 400,
               "INVALID_FIELD", "valid_until");
    expect_err(run_patch("/v1/coupon-policies/p1", "{\"name\":\"x\"}", &c, &e), &e, 400, "UNKNOWN_FIELD", "name");
    assert_int_equal(run_patch("/v1/coupon-policies/p1", "{\"valid_until\":null,\"per_user_limit\":4}", &c, &e), 0);
    assert_false(c.u.update_policy.has_valid_until);
    assert_true(c.u.update_policy.has_per_user_limit);
    assert_int_equal(c.u.update_policy.per_user_limit, 4);
    expect_err(run_patch("/v1/time-sales/s1", "{}", &c, &e), &e, 400, "INVALID_FIELD", "stock");
    expect_err(run_patch("/v1/time-sales/s1", "{\"stock\":-1}", &c, &e), &e, 400, "INVALID_FIELD", "stock");
    expect_err(run_patch("/v1/time-sales/s1", "{\"hold_ms\":999}", &c, &e), &e, 400, "INVALID_FIELD", "hold_ms");
    expect_err(run_patch("/v1/time-sales/s1", "{\"hold_ms\":3600001}", &c, &e), &e, 400, "INVALID_FIELD", "hold_ms");
    assert_int_equal(run_patch("/v1/time-sales/s1", "{\"hold_ms\":0}", &c, &e), 0);
    assert_true(c.u.update_sale.has_hold_ms);
    assert_int_equal(c.u.update_sale.hold_ms, 0);
    assert_string_equal(c.u.update_sale.sale_id, "s1");
    /* A control takes no fields but callback_url, and an empty body. */
    expect_err(run("/v1/time-sales/s1/pause", "{\"stock\":1}", &c, &e), &e, 400, "UNKNOWN_FIELD", "stock");
    assert_int_equal(run_full("POST", "/v1/coupon-policies/p1/close", "", 0, NULL, NULL, NULL, &c, &e), 0);
    assert_int_equal(c.type, CMD_CLOSE_COUPON_POLICY);
    assert_string_equal(c.u.policy_control.policy_id, "p1");
    assert_string_equal(c.u.policy_control.actor, "");
    /* The sender's key label lands in the controls that record it, only. */
    parse_route route;
    assert_int_equal(parse_route_match("POST", "/v1/time-sales/s1/resume", &route, &e), 0);
    parse_input in = {.route = &route, .fresh_request_id = "rid", .now_ms = NOW, .actor = "key-0011223344556677"};
    assert_int_equal(parse_cmd(&in, &c, &e), 0);
    assert_string_equal(c.u.sale_control.actor, "key-0011223344556677");
    assert_int_equal(parse_route_match("PATCH", "/v1/coupon-policies/p1", &route, &e), 0);
    in.body = "{\"total_quantity\":9}";
    in.body_len = strlen(in.body);
    in.content_type = "application/json";
    assert_int_equal(parse_cmd(&in, &c, &e), 0);
    assert_string_equal(c.u.update_policy.actor, "key-0011223344556677");
    assert_int_equal(parse_route_match("POST", "/v1/coupon-policies/p1/issue", &route, &e), 0);
    in.body = "{\"user_id\":\"u1\"}";
    in.body_len = strlen(in.body);
    assert_int_equal(parse_cmd(&in, &c, &e), 0);
    assert_string_equal(c.client_id, "");
    /* An order with hold_ms is held; the range is the contract's. */
    assert_int_equal(run("/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":1,\"hold_ms\":1000}", &c, &e),
                     0);
    assert_int_equal(c.type, CMD_HOLD_ORDER);
    assert_string_equal(c.u.hold_order.sale_id, "s1");
    assert_int_equal(c.u.hold_order.hold_ms, 1000);
    assert_string_equal(c.u.hold_order.order_id, "");
    expect_err(run("/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":1,\"hold_ms\":999}", &c, &e), &e, 400,
               "INVALID_FIELD", "hold_ms");
    expect_err(run("/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":1,\"hold_ms\":3600001}", &c, &e), &e,
               400, "INVALID_FIELD", "hold_ms");
    expect_err(run("/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":1,\"hold_ms\":null}", &c, &e), &e, 400,
               "MISSING_FIELD", "hold_ms");
    expect_err(run("/v1/time-sales/s1/orders", "{\"user_id\":\"u1\",\"quantity\":1,\"hold_ms\":\"60s\"}", &c, &e), &e,
               400, "INVALID_FIELD", "hold_ms");
    assert_int_equal(run_full("POST", "/v1/time-sales/s1/orders/o7/confirm", "", 0, NULL, NULL, NULL, &c, &e), 0);
    assert_int_equal(c.type, CMD_CONFIRM_ORDER);
    assert_string_equal(c.u.order_ref.sale_id, "s1");
    assert_string_equal(c.u.order_ref.order_id, "o7");
    expect_err(run("/v1/time-sales/s1/orders/o7/confirm", "{\"hold_ms\":1000}", &c, &e), &e, 400, "UNKNOWN_FIELD",
               "hold_ms");
    /* An earn with available_at is for later; expiry after it. */
    assert_int_equal(run("/v1/points/u1/earn", "{\"amount\":5,\"reason\":\"r\",\"available_at\":2000}", &c, &e), 0);
    assert_int_equal(c.type, CMD_EARN_PENDING_POINTS);
    assert_string_equal(c.u.earn_pending.user_id, "u1");
    assert_int_equal(c.u.earn_pending.available_at, 2000);
    assert_false(c.u.earn_pending.has_expires_at);
    expect_err(
        run("/v1/points/u1/earn", "{\"amount\":5,\"reason\":\"r\",\"available_at\":2000,\"expires_at\":2000}", &c, &e),
        &e, 400, "INVALID_FIELD", "expires_at");
    expect_err(run("/v1/points/u1/earn", "{\"amount\":5,\"reason\":\"r\",\"available_at\":-1}", &c, &e), &e, 400,
               "INVALID_FIELD", "available_at");
    /* An adjustment is signed, never zero, and records its sender. */
    expect_err(run("/v1/points/u1/adjust", "{\"amount\":0,\"reason\":\"r\"}", &c, &e), &e, 400, "INVALID_FIELD",
               "amount");
    expect_err(run("/v1/points/u1/adjust", "{\"amount\":-1000000000001,\"reason\":\"r\"}", &c, &e), &e, 400,
               "INVALID_FIELD", "amount");
    expect_err(run("/v1/points/u1/adjust", "{\"amount\":5}", &c, &e), &e, 400, "MISSING_FIELD", "reason");
    expect_err(run("/v1/points/u1/adjust", "{\"amount\":5,\"reason\":\"\"}", &c, &e), &e, 400, "INVALID_FIELD",
               "reason");
    assert_int_equal(parse_route_match("POST", "/v1/points/u1/adjust", &route, &e), 0);
    assert_int_equal(parse_route_role(route.id), ROLE_ADMIN);
    in.body = "{\"amount\":-7,\"reason\":\"fix\"}";
    in.body_len = strlen(in.body);
    assert_int_equal(parse_cmd(&in, &c, &e), 0);
    assert_int_equal(c.u.adjust.amount, -7);
    assert_string_equal(c.u.adjust.actor, "key-0011223344556677");
    /* PATCH is only for the policy and sale themselves. */
    expect_err(run_full("PATCH", "/v1/points/u1", "{}", 2, "application/json", NULL, NULL, &c, &e), &e, 405,
               "METHOD_NOT_ALLOWED", NULL);
}

static void test_validate_body(void **state) {
    (void)state;
    char user[PROMO_ID_MAX + 1];
    int64_t amount;
    parse_error e;
    const char *ct = "application/json";
#define V(body) parse_validate(ct, body, strlen(body), user, &amount, &e)
    assert_int_equal(V("{\"user_id\":\"u1\",\"order_amount\":20000}"), 0);
    assert_string_equal(user, "u1");
    assert_int_equal(amount, 20000);
    expect_err(V("{\"order_amount\":20000}"), &e, 400, "MISSING_FIELD", "user_id");
    expect_err(V("{\"user_id\":\"u1\"}"), &e, 400, "MISSING_FIELD", "order_amount");
    expect_err(V("{\"user_id\":\"u 1\",\"order_amount\":1}"), &e, 400, "INVALID_FIELD", "user_id");
    expect_err(V("{\"user_id\":\"u1\",\"order_amount\":0}"), &e, 400, "INVALID_FIELD", "order_amount");
    expect_err(V("{\"user_id\":\"u1\",\"order_amount\":1000000000001}"), &e, 400, "INVALID_FIELD", "order_amount");
    expect_err(V("{\"user_id\":\"u1\",\"order_amount\":\"5\"}"), &e, 400, "INVALID_FIELD", "order_amount");
    expect_err(V("{\"user_id\":\"u1\",\"order_amount\":5,\"order_id\":\"o\"}"), &e, 400, "UNKNOWN_FIELD", "order_id");
    expect_err(V("[1]"), &e, 400, "INVALID_JSON", NULL);
    expect_err(V("{\"user_id\":\"u1\",\"user_id\":\"u2\",\"order_amount\":5}"), &e, 400, "INVALID_JSON", NULL);
    expect_err(V(""), &e, 400, "INVALID_JSON", NULL);
    ct = "text/plain";
    expect_err(V("{}"), &e, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type");
    ct = NULL;
    expect_err(V("{}"), &e, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type");
    ct = "application/json";
    expect_err(parse_validate(ct, "{}", PARSE_BODY_MAX + 1, user, &amount, &e), &e, 413, "PAYLOAD_TOO_LARGE", NULL);
#undef V
    /* A POST that is not a write. */
    parse_route r;
    assert_int_equal(parse_route_match("POST", "/v1/coupons/p1:3/validate", &r, &e), 0);
    assert_int_equal(r.id, ROUTE_COUPON_VALIDATE);
    assert_false(parse_route_is_write(r.id));
    assert_int_equal(parse_route_role(r.id), ROLE_CLIENT);
    expect_err(parse_route_match("POST", "/v1/coupons/p1/validate", &r, &e), &e, 400, "INVALID_FIELD", "coupon_id");
}

static void test_list_queries(void **state) {
    (void)state;
    char st[8], cur[PROMO_ID_MAX + 1];
    parse_error e;
    assert_int_equal(parse_state(NULL, st, &e), 0);
    assert_string_equal(st, "");
    assert_int_equal(parse_state("PAUSED", st, &e), 0);
    assert_string_equal(st, "PAUSED");
    expect_err(parse_state("paused", st, &e), &e, 400, "INVALID_FIELD", "state");
    expect_err(parse_state("", st, &e), &e, 400, "INVALID_FIELD", "state");
    expect_err(parse_state("ACTIVE'--", st, &e), &e, 400, "INVALID_FIELD", "state");
    assert_int_equal(parse_id_cursor(NULL, cur, &e), 0);
    assert_string_equal(cur, "");
    assert_int_equal(parse_id_cursor("spring-10", cur, &e), 0);
    assert_string_equal(cur, "spring-10");
    expect_err(parse_id_cursor("a b", cur, &e), &e, 400, "INVALID_FIELD", "cursor");
    expect_err(parse_id_cursor("", cur, &e), &e, 400, "INVALID_FIELD", "cursor");
    expect_err(parse_id_cursor("x'", cur, &e), &e, 400, "INVALID_FIELD", "cursor");
    char big[80];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    expect_err(parse_id_cursor(big, cur, &e), &e, 400, "INVALID_FIELD", "cursor");
}

/* ---- routes ---- */

static void test_routes(void **state) {
    (void)state;
    struct {
        const char *method, *path;
        parse_route_id id;
        const char *id1, *id2;
        parse_role role;
    } ok[] = {
        {"GET", "/healthz", ROUTE_HEALTHZ, "", "", ROLE_NONE},
        {"GET", "/readyz", ROUTE_READYZ, "", "", ROLE_NONE},
        {"GET", "/metrics", ROUTE_METRICS, "", "", ROLE_NONE},
        {"GET", "/openapi.json", ROUTE_OPENAPI, "", "", ROLE_NONE},
        {"GET", "/api/docs", ROUTE_DOCS, "", "", ROLE_NONE},
        {"GET", "/api/docs/swagger-ui.css", ROUTE_DOCS_ASSET, "swagger-ui.css", "", ROLE_NONE},
        {"POST", "/v1/coupon-policies", ROUTE_POLICY_CREATE, "", "", ROLE_ADMIN},
        {"POST", "/v1/coupon-policies/p1/issue", ROUTE_COUPON_ISSUE, "p1", "", ROLE_CLIENT},
        {"POST", "/v1/coupons/p1:12/redeem", ROUTE_COUPON_REDEEM, "p1:12", "", ROLE_CLIENT},
        {"POST", "/v1/coupons/p1:12/cancel", ROUTE_COUPON_CANCEL, "p1:12", "", ROLE_CLIENT},
        {"POST", "/v1/points/u-1/earn", ROUTE_POINTS_EARN, "u-1", "", ROLE_ADMIN},
        {"POST", "/v1/points/u-1/use", ROUTE_POINTS_USE, "u-1", "", ROLE_CLIENT},
        {"POST", "/v1/points/u-1/cancel", ROUTE_POINTS_CANCEL, "u-1", "", ROLE_CLIENT},
        {"POST", "/v1/time-sales", ROUTE_SALE_CREATE, "", "", ROLE_ADMIN},
        {"POST", "/v1/time-sales/s.1/orders", ROUTE_SALE_ORDER, "s.1", "", ROLE_CLIENT},
        {"POST", "/v1/time-sales/s.1/orders/o_2/cancel", ROUTE_SALE_ORDER_CANCEL, "s.1", "o_2", ROLE_CLIENT},
        {"GET", "/v1/coupon-policies/p1", ROUTE_POLICY_GET, "p1", "", ROLE_CLIENT},
        {"GET", "/v1/users/u1/coupons", ROUTE_USER_COUPONS, "u1", "", ROLE_CLIENT},
        {"GET", "/v1/points/u1", ROUTE_POINTS_GET, "u1", "", ROLE_CLIENT},
        {"GET", "/v1/points/u1/history", ROUTE_POINTS_HISTORY, "u1", "", ROLE_CLIENT},
        {"GET", "/v1/time-sales/s1", ROUTE_SALE_GET, "s1", "", ROLE_CLIENT},
        {"GET", "/v1/time-sales/s1/orders/o1", ROUTE_SALE_ORDER_GET, "s1", "o1", ROLE_CLIENT},
        {"GET", "/v1/requests/abc", ROUTE_REQUEST_GET, "abc", "", ROLE_CLIENT},
        {"POST", "/v1/coupon-policies/p1/pause", ROUTE_POLICY_PAUSE, "p1", "", ROLE_ADMIN},
        {"POST", "/v1/coupon-policies/p1/resume", ROUTE_POLICY_RESUME, "p1", "", ROLE_ADMIN},
        {"POST", "/v1/coupon-policies/p1/close", ROUTE_POLICY_CLOSE, "p1", "", ROLE_ADMIN},
        {"PATCH", "/v1/coupon-policies/p1", ROUTE_POLICY_UPDATE, "p1", "", ROLE_ADMIN},
        {"POST", "/v1/time-sales/s1/pause", ROUTE_SALE_PAUSE, "s1", "", ROLE_ADMIN},
        {"POST", "/v1/time-sales/s1/resume", ROUTE_SALE_RESUME, "s1", "", ROLE_ADMIN},
        {"POST", "/v1/time-sales/s1/close", ROUTE_SALE_CLOSE, "s1", "", ROLE_ADMIN},
        {"PATCH", "/v1/time-sales/s1", ROUTE_SALE_UPDATE, "s1", "", ROLE_ADMIN},
        {"POST", "/v1/time-sales/s1/orders/o1/confirm", ROUTE_SALE_ORDER_CONFIRM, "s1", "o1", ROLE_CLIENT},
        {"GET", "/v1/coupon-policies", ROUTE_POLICY_LIST, "", "", ROLE_CLIENT},
        {"GET", "/v1/time-sales", ROUTE_SALE_LIST, "", "", ROLE_CLIENT},
        {"GET", "/v1/coupon-policies/p1/stats", ROUTE_POLICY_STATS, "p1", "", ROLE_CLIENT},
        {"GET", "/v1/time-sales/s1/stats", ROUTE_SALE_STATS, "s1", "", ROLE_CLIENT},
        /* "stats" as an id is the entity itself. */
        {"GET", "/v1/time-sales/stats", ROUTE_SALE_GET, "stats", "", ROLE_CLIENT},
        /* Dots are id characters; only a whole "." or ".." segment is not. */
        {"GET", "/v1/coupon-policies/...", ROUTE_POLICY_GET, "...", "", ROLE_CLIENT},
        {"GET", "/v1/points/.u", ROUTE_POINTS_GET, ".u", "", ROLE_CLIENT},
        {"POST", "/v1/coupons/..x:3/redeem", ROUTE_COUPON_REDEEM, "..x:3", "", ROLE_CLIENT},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        parse_route r;
        parse_error e;
        if (parse_route_match(ok[i].method, ok[i].path, &r, &e))
            fail_msg("%s %s: %s", ok[i].method, ok[i].path, e.code);
        assert_int_equal(r.id, ok[i].id);
        assert_string_equal(r.id1, ok[i].id1);
        assert_string_equal(r.id2, ok[i].id2);
        assert_int_equal(parse_route_role(r.id), ok[i].role);
        assert_string_not_equal(parse_route_name(r.id), "other");
    }
    /* Each write route maps onto its own command type. */
    for (size_t i = 0; i < N_WRITES; i++) {
        parse_route r;
        parse_error e;
        const char *method, *path = path_method(writes[i].path, &method);
        assert_int_equal(parse_route_match(method, path, &r, &e), 0);
        assert_true(parse_route_is_write(r.id));
        cmd_type want = writes[i].type == CMD_HOLD_ORDER            ? CMD_PLACE_ORDER
                        : writes[i].type == CMD_EARN_PENDING_POINTS ? CMD_EARN_POINTS
                                                                    : writes[i].type;
        assert_int_equal(parse_route_cmd(r.id), want);
    }
    assert_false(parse_route_is_write(ROUTE_REQUEST_GET));
    assert_false(parse_route_is_write(ROUTE_HEALTHZ));

    struct {
        const char *method, *path;
        int status;
        const char *code, *field;
    } bad[] = {
        {"GET", "/", 404, "NOT_FOUND", ""},
        {"GET", "/v1", 404, "NOT_FOUND", ""},
        {"GET", "/v1/nothing", 404, "NOT_FOUND", ""},
        {"GET", "/v1/time-sales/", 404, "NOT_FOUND", ""},
        {"GET", "/v1/points//history", 404, "NOT_FOUND", ""},
        {"GET", "/healthz/", 404, "NOT_FOUND", ""},
        {"GET", "/v1/coupon-policies/p1/issue/x", 404, "NOT_FOUND", ""},
        {"PATCH", "/v1/coupon-policies", 405, "METHOD_NOT_ALLOWED", ""},
        {"DELETE", "/v1/points/u1", 405, "METHOD_NOT_ALLOWED", ""},
        {"POST", "/healthz", 405, "METHOD_NOT_ALLOWED", ""},
        {"GET", "/v1/coupons/p1:1/redeem", 405, "METHOD_NOT_ALLOWED", ""},
        {"POST", "/v1/coupon-policies/bad id/issue", 400, "INVALID_FIELD", "policy_id"},
        {"POST", "/v1/coupons/p1/redeem", 400, "INVALID_FIELD", "coupon_id"},
        {"POST", "/v1/coupons/p1:0/redeem", 400, "INVALID_FIELD", "coupon_id"},
        {"POST", "/v1/coupons/p1:01/cancel", 400, "INVALID_FIELD", "coupon_id"},
        {"POST", "/v1/coupons/:5/cancel", 400, "INVALID_FIELD", "coupon_id"},
        {"POST", "/v1/coupons/p1:99999999999999999999999/cancel", 400, "INVALID_FIELD", "coupon_id"},
        {"POST", "/v1/points/u:1/use", 400, "INVALID_FIELD", "user_id"},
        {"GET", "/v1/users/ü/coupons", 400, "INVALID_FIELD", "user_id"},
        {"POST", "/v1/time-sales/s1/orders/o 1/cancel", 400, "INVALID_FIELD", "order_id"},
        {"GET", "/v1/time-sales/s1/orders/o*1", 400, "INVALID_FIELD", "order_id"},
        {"GET", "/v1/requests/12345678901234567890123456789012345678901234567890123456789012345", 400, "INVALID_FIELD",
         "request_id"},
        {"GET",
         "/v1/coupons/"
         "12345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345:1/redeem",
         405, "METHOD_NOT_ALLOWED", ""},
        /* The path as sent: ingest decodes nothing and removes no dot
         * segment, so no spelling of a path reaches another entity. */
        {"POST", "/v1/coupon-policies/p%2F..%2Fx/issue", 400, "INVALID_FIELD", "policy_id"},
        {"POST", "/v1/coupon-policies/%2E%2E/issue", 400, "INVALID_FIELD", "policy_id"},
        {"POST", "/v1/coupon-policies/%41/issue", 400, "INVALID_FIELD", "policy_id"},
        {"POST", "/v1/coupon-policies/../issue", 400, "INVALID_FIELD", "policy_id"},
        {"POST", "/v1/coupon-policies/./issue", 400, "INVALID_FIELD", "policy_id"},
        {"POST", "/v1/coupon-policies/p/../x/issue", 404, "NOT_FOUND", ""},
        {"POST", "/v1/coupon-policies/x/issue/..", 404, "NOT_FOUND", ""},
        {"POST", "/v1/coupons/p%3A1/redeem", 400, "INVALID_FIELD", "coupon_id"},
        {"POST", "/v1/coupons/p%2F..%2Fx:1/redeem", 400, "INVALID_FIELD", "coupon_id"},
        {"POST", "/v1/coupons/p/../x:1/redeem", 404, "NOT_FOUND", ""},
        {"GET", "/v1/coupon-policies/..", 400, "INVALID_FIELD", "policy_id"},
        {"GET", "/v1/coupon-policies/p%2F..%2Fx", 400, "INVALID_FIELD", "policy_id"},
        {"GET", "/v1/time-sales/s1/orders/..", 400, "INVALID_FIELD", "order_id"},
        {"GET", "/v1/./healthz", 404, "NOT_FOUND", ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_route r;
        parse_error e;
        int rc = parse_route_match(bad[i].method, bad[i].path, &r, &e);
        if (rc == 0) fail_msg("%s %s matched", bad[i].method, bad[i].path);
        assert_int_equal(e.status, bad[i].status);
        assert_string_equal(e.code, bad[i].code);
        assert_string_equal(e.field, bad[i].field);
    }
}

/* ---- query values ---- */

static void test_query_values(void **state) {
    (void)state;
    parse_error e;
    int v;
    assert_int_equal(parse_limit(NULL, &v, &e), 0);
    assert_int_equal(v, 50);
    assert_int_equal(parse_limit("7", &v, &e), 0);
    assert_int_equal(v, 7);
    assert_int_equal(parse_limit("1000", &v, &e), 0);
    assert_int_equal(v, 100);
    const char *bad_limit[] = {"0", "-1", "", "abc", "5x", " 5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_limit / sizeof bad_limit[0]; i++)
        expect_err(parse_limit(bad_limit[i], &v, &e), &e, 400, "INVALID_FIELD", "limit");

    assert_int_equal(parse_wait_ms(NULL, &v, &e), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_wait_ms("0", &v, &e), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_wait_ms("2500", &v, &e), 0);
    assert_int_equal(v, 2500);
    assert_int_equal(parse_wait_ms("600000", &v, &e), 0);
    assert_int_equal(v, 30000);
    expect_err(parse_wait_ms("-1", &v, &e), &e, 400, "INVALID_FIELD", "wait_ms");
    expect_err(parse_wait_ms("1.5", &v, &e), &e, 400, "INVALID_FIELD", "wait_ms");

    char cur[PROMO_COUPON_ID_MAX + 1];
    assert_int_equal(parse_coupon_cursor(NULL, cur, sizeof cur, &e), 0);
    assert_string_equal(cur, "");
    assert_int_equal(parse_coupon_cursor("p1:3", cur, sizeof cur, &e), 0);
    assert_string_equal(cur, "p1:3");
    expect_err(parse_coupon_cursor("p1", cur, sizeof cur, &e), &e, 400, "INVALID_FIELD", "cursor");
    expect_err(parse_coupon_cursor("' OR 1=1 --:1", cur, sizeof cur, &e), &e, 400, "INVALID_FIELD", "cursor");

    int64_t seq;
    assert_int_equal(parse_seq_cursor(NULL, &seq, &e), 0);
    assert_int_equal(seq, 0);
    assert_int_equal(parse_seq_cursor("42", &seq, &e), 0);
    assert_int_equal(seq, 42);
    expect_err(parse_seq_cursor("0", &seq, &e), &e, 400, "INVALID_FIELD", "cursor");
    expect_err(parse_seq_cursor("x", &seq, &e), &e, 400, "INVALID_FIELD", "cursor");
}

/* ---- no input crashes ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint32_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void test_random_bodies(void **state) {
    (void)state;
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        const write_case *w = &writes[next_rand() % N_WRITES];
        size_t n;
        if (iter % 2) {
            /* Mutate a valid body: flip, drop or insert bytes. */
            n = strlen(w->body);
            if (n > sizeof buf) n = sizeof buf;
            memcpy(buf, w->body, n);
            int edits = 1 + (int)(next_rand() % 4);
            for (int k = 0; k < edits && n > 0; k++) {
                size_t at = next_rand() % n;
                switch (next_rand() % 3) {
                case 0: buf[at] = (char)next_rand(); break;
                case 1: memmove(buf + at, buf + at + 1, n - at - 1), n--; break;
                default:
                    if (n < sizeof buf) {
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = "{}[]\":,0-9e.\\u"[next_rand() % 15];
                        n++;
                    }
                }
            }
        } else {
            n = next_rand() % sizeof buf;
            for (size_t k = 0; k < n; k++) buf[k] = (char)next_rand();
        }
        promo_cmd c;
        parse_error e;
        int rc = run_full("POST", w->path, buf, n, "application/json", NULL, NULL, &c, &e);
        if (rc) {
            assert_true(e.status == 400);
            assert_non_null(e.code);
        } else {
            char f[64], why[160];
            assert_int_equal(cmd_validate(&c, f, sizeof f, why, sizeof why), 0);
        }
    }
}

/* ---- the route table and the OpenAPI document ---- */

/* make runs the tests from the top of the tree. */
static json_t *openapi_load(void) {
    const char *path = getenv("PROMO_OPENAPI_JSON");
    json_error_t jerr;
    json_t *doc = json_load_file(path ? path : "ingest/openapi.json", 0, &jerr);
    if (!doc) fail_msg("ingest/openapi.json: %s (line %d)", jerr.text, jerr.line);
    return doc;
}

/* "/v1/points/{user_id}/history" with every {name} replaced by a valid id. */
static void pattern_fill(const char *pattern, char *out, size_t size) {
    size_t n = 0;
    for (const char *p = pattern; *p && n + 8 < size;) {
        if (*p == '{') {
            bool coupon = strncmp(p, "{coupon_id}", 11) == 0;
            n += (size_t)snprintf(out + n, size - n, "%s", coupon ? "p1:7" : "x1");
            p = strchr(p, '}') + 1;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
}

static void test_openapi_matches_routes(void **state) {
    (void)state;
    json_t *doc = openapi_load();
    assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
    json_t *paths = json_object_get(doc, "paths");
    assert_true(json_is_object(paths));
    /* Route table → document. */
    for (size_t i = 0; i < parse_route_count(); i++) {
        const char *method, *pattern;
        parse_route_at(i, &method, &pattern);
        char lower[8];
        snprintf(lower, sizeof lower, "%s", method);
        for (char *c = lower; *c; c++) *c = (char)(*c - 'A' + 'a');
        json_t *op = json_object_get(json_object_get(paths, pattern), lower);
        if (!op) fail_msg("%s %s is served but not documented", method, pattern);
        json_t *responses = json_object_get(op, "responses");
        assert_true(json_is_object(responses));
        char path[256];
        pattern_fill(pattern, path, sizeof path);
        parse_route r;
        parse_error e;
        assert_int_equal(parse_route_match(method, path, &r, &e), 0);
        const char *need_write[] = {"202", "400", "401", "404", "413", "415", "422", "429", "503"};
        const char *need_read[] = {"200", "400", "401", "404", "429", "503"};
        if (parse_route_is_write(r.id)) {
            for (size_t k = 0; k < sizeof need_write / sizeof need_write[0]; k++)
                if (!json_object_get(responses, need_write[k]))
                    fail_msg("%s %s does not document %s", method, pattern, need_write[k]);
            assert_non_null(json_object_get(op, "requestBody"));
        } else if (parse_route_role(r.id) != ROLE_NONE) {
            for (size_t k = 0; k < sizeof need_read / sizeof need_read[0]; k++)
                if (!json_object_get(responses, need_read[k]))
                    fail_msg("%s %s does not document %s", method, pattern, need_read[k]);
        } else {
            /* No key needed: the operation must say so. */
            json_t *sec = json_object_get(op, "security");
            assert_true(json_is_array(sec) && json_array_size(sec) == 0);
        }
        if (parse_route_role(r.id) == ROLE_ADMIN && !json_object_get(responses, "403"))
            fail_msg("%s %s is admin-only but does not document 403", method, pattern);
    }
    /* Document → route table: every operation is routed to its own route. */
    const char *pattern;
    json_t *item;
    size_t ops = 0;
    json_object_foreach(paths, pattern, item) {
        const char *m;
        json_t *op;
        json_object_foreach(item, m, op) {
            const char *method = strcmp(m, "get") == 0 ? "GET" : strcmp(m, "post") == 0 ? "POST" : "PATCH";
            if (strcmp(m, "get") != 0 && strcmp(m, "post") != 0 && strcmp(m, "patch") != 0)
                fail_msg("%s %s: unexpected method", m, pattern);
            char path[256];
            pattern_fill(pattern, path, sizeof path);
            parse_route r;
            parse_error e;
            if (parse_route_match(method, path, &r, &e))
                fail_msg("%s %s is documented but not served (%d %s)", m, pattern, e.status, e.code);
            ops++;
        }
    }
    assert_int_equal(ops, parse_route_count());
    /* Every $ref points at something that exists. */
    char *text = json_dumps(doc, JSON_COMPACT);
    json_t *comps = json_object_get(doc, "components");
    for (const char *p = text; (p = strstr(p, "\"$ref\":\"#/components/")) != NULL;) {
        p += strlen("\"$ref\":\"#/components/");
        char kind[32], name[64];
        assert_int_equal(sscanf(p, "%31[^/]/%63[^\"]", kind, name), 2);
        if (!json_object_get(json_object_get(comps, kind), name)) fail_msg("dangling $ref %s/%s", kind, name);
    }
    free(text);
    json_decref(doc);
}

/* ---- token buckets ---- */

#define SEC 1000000000LL

static void test_ratelimit_bucket(void **state) {
    (void)state;
    char errstr[128];
    ratelimit *rl = ratelimit_new(10, 3, 100, errstr, sizeof errstr);
    assert_non_null(rl);
    int64_t t = 5 * SEC;
    /* A full bucket: burst requests pass at once, the next waits 1/rps. */
    for (int i = 0; i < 3; i++) assert_int_equal(ratelimit_take(rl, "a", t), 0);
    int64_t wait = ratelimit_take(rl, "a", t);
    assert_true(wait > 0 && wait <= SEC / 10);
    /* Another key has its own bucket. */
    assert_int_equal(ratelimit_take(rl, "b", t), 0);
    /* After the wait, exactly one more. */
    assert_int_equal(ratelimit_take(rl, "a", t + wait), 0);
    assert_true(ratelimit_take(rl, "a", t + wait) > 0);
    /* Over a long run the rate holds: 10 s at 10 rps gives about 100 + burst. */
    int passed = 0;
    for (int64_t now = t + SEC; now < t + 11 * SEC; now += SEC / 1000) passed += ratelimit_take(rl, "c", now) == 0;
    assert_true(passed >= 100 && passed <= 104);
    ratelimit_destroy(rl);

    /* Off: everything passes, nothing is stored. */
    rl = ratelimit_new(0, 0, 100, errstr, sizeof errstr);
    assert_non_null(rl);
    for (int i = 0; i < 1000; i++) assert_int_equal(ratelimit_take(rl, "a", t), 0);
    ratelimit_destroy(rl);
    assert_null(ratelimit_new(5, 0, 100, errstr, sizeof errstr));
}

static void test_ratelimit_bounded(void **state) {
    (void)state;
    char errstr[128], key[32];
    /* Many addresses: memory stays bounded, and a busy bucket evicted under
     * pressure never makes a request fail, only forgets its debt. */
    ratelimit *rl = ratelimit_new(1, 1, 640, errstr, sizeof errstr);
    assert_non_null(rl);
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof key, "10.0.%d.%d", i / 256, i % 256);
        assert_int_equal(ratelimit_take(rl, key, SEC), 0);
    }
    size_t total = 0;
    for (int i = 0; i < STRIPES; i++) total += rl->stripes[i].n;
    assert_true(total <= 640 + STRIPES);
    /* A very long key is cut, not overflowed. */
    char big[300];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(ratelimit_take(rl, big, SEC), 0);
    assert_true(ratelimit_take(rl, big, SEC) > 0);
    ratelimit_destroy(rl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_bodies),
        cmocka_unit_test(test_fields_land),
        cmocka_unit_test(test_defaults_and_nulls),
        cmocka_unit_test(test_missing_each_field),
        cmocka_unit_test(test_null_required_field),
        cmocka_unit_test(test_wrong_type_each_field),
        cmocka_unit_test(test_unknown_field_each_route),
        cmocka_unit_test(test_bad_ids_in_body),
        cmocka_unit_test(test_controls),
        cmocka_unit_test(test_validate_body),
        cmocka_unit_test(test_list_queries),
        cmocka_unit_test(test_oversized_text),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_idempotency_and_client_headers),
        cmocka_unit_test(test_callback_url),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_query_values),
        cmocka_unit_test(test_random_bodies),
        cmocka_unit_test(test_openapi_matches_routes),
        cmocka_unit_test(test_ratelimit_bucket),
        cmocka_unit_test(test_ratelimit_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
