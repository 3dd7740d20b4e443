/* test_timesale.c — cmocka tests of processors/timesale.c, the time-sale
 * (stock) state machine.
 *
 * Hand-written cases pin down every rule, every rejection reason and the order
 * in which they are checked (NOT_FOUND, NOT_STARTED, ENDED, DUPLICATE_ORDER,
 * LIMIT_EXCEEDED, SOLD_OUT), the window boundaries and cancels after the end.
 * A randomized run drives 20,000 commands through the state and a tiny model
 * kept here and checks after every step that they agree, that sold never
 * passes stock, that sold + remaining == stock, and that the checkpoint's
 * orders add up to sold with no user above the limit. Checkpoint round trips
 * (full dump, and incremental dumps layered on an older full one, loaded
 * shuffled, orders before their sale) must give byte-identical results for the
 * next 1,000 commands.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "bytes.h"
#include "domain.h"

/* ---- commands and running them ------------------------------------------ */

static int req_counter;

static promo_cmd cmd_base(cmd_type t, int64_t now) {
    promo_cmd c;
    memset(&c, 0, sizeof c);
    snprintf(c.request_id, sizeof c.request_id, "r%d", ++req_counter);
    c.submitted_at = now;
    c.type = t;
    return c;
}

static promo_cmd create(const char *sale, int64_t stock, int32_t limit, int64_t starts, int64_t ends, int64_t now) {
    promo_cmd c = cmd_base(CMD_CREATE_TIME_SALE, now);
    time_sale_def *d = &c.u.create_sale;
    snprintf(d->sale_id, sizeof d->sale_id, "%s", sale);
    snprintf(d->product_id, sizeof d->product_id, "p-%s", sale);
    snprintf(d->name, sizeof d->name, "Sale %s", sale);
    d->original_price = 20000;
    d->sale_price = 9900;
    d->stock = stock;
    d->per_user_limit = limit;
    d->starts_at = starts;
    d->ends_at = ends;
    return c;
}

static promo_cmd place(const char *sale, const char *user, int32_t quantity, const char *order, int64_t now) {
    promo_cmd c = cmd_base(CMD_PLACE_ORDER, now);
    snprintf(c.u.place_order.sale_id, sizeof c.u.place_order.sale_id, "%s", sale);
    snprintf(c.u.place_order.user_id, sizeof c.u.place_order.user_id, "%s", user);
    c.u.place_order.quantity = quantity;
    snprintf(c.u.place_order.order_id, sizeof c.u.place_order.order_id, "%s", order ? order : "");
    return c;
}

static promo_cmd cancel(const char *sale, const char *order, int64_t now) {
    promo_cmd c = cmd_base(CMD_CANCEL_ORDER, now);
    snprintf(c.u.cancel_order.sale_id, sizeof c.u.cancel_order.sale_id, "%s", sale);
    snprintf(c.u.cancel_order.order_id, sizeof c.u.cancel_order.order_id, "%s", order);
    return c;
}

static promo_cmd control(cmd_type t, const char *sale, int64_t now) {
    promo_cmd c = cmd_base(t, now);
    snprintf(c.u.sale_control.sale_id, sizeof c.u.sale_control.sale_id, "%s", sale);
    snprintf(c.u.sale_control.actor, sizeof c.u.sale_control.actor, "key-test");
    return c;
}

/* A negative value leaves a field unchanged. */
static promo_cmd update(const char *sale, int64_t stock, int32_t limit, int64_t ends, int64_t hold_ms, int64_t now) {
    promo_cmd c = cmd_base(CMD_UPDATE_TIME_SALE, now);
    time_sale_update *u = &c.u.update_sale;
    snprintf(u->sale_id, sizeof u->sale_id, "%s", sale);
    u->has_stock = stock >= 0, u->stock = stock >= 0 ? stock : 0;
    u->has_per_user_limit = limit >= 0, u->per_user_limit = limit >= 0 ? limit : 0;
    u->has_ends_at = ends >= 0, u->ends_at = ends >= 0 ? ends : 0;
    u->has_hold_ms = hold_ms >= 0, u->hold_ms = hold_ms >= 0 ? hold_ms : 0;
    return c;
}

static void run(void *st, const promo_cmd *c, promo_result *res) {
    char field[64], why[256];
    assert_int_equal(cmd_validate(c, field, sizeof field, why, sizeof why), 0);
    result_init(res, c);
    assert_int_equal(timesale_ops.apply(st, c, c->submitted_at, res), 0);
}

static promo_result expect(void *st, promo_cmd c, const char *reason) {
    promo_result res;
    run(st, &c, &res);
    if (reason) {
        assert_int_equal(res.status, STATUS_REJECTED);
        assert_string_equal(res.reason, reason);
    } else {
        if (res.status != STATUS_SUCCEEDED) fail_msg("rejected: %s", res.reason);
        assert_string_equal(res.reason, "");
    }
    return res;
}

static void expect_stock(const promo_result *r, int64_t sold, int64_t remaining, int64_t version) {
    assert_true(r->has_sold && r->has_remaining);
    assert_int_equal(r->sold, sold);
    assert_int_equal(r->remaining, remaining);
    assert_int_equal(r->version, version);
}

/* ---- a key/value store standing in for Redis ----------------------------- */

typedef struct kv {
    char key[160];
    uint8_t *val;
    size_t len;
} kv;

typedef struct store {
    kv *items;
    size_t n, cap;
} store;

static int store_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    store *s = ctx;
    assert_true(key_len < 160);
    assert_non_null(val);
    kv *it = NULL;
    for (size_t i = 0; i < s->n && !it; i++)
        if (strlen(s->items[i].key) == key_len && memcmp(s->items[i].key, key, key_len) == 0) it = &s->items[i];
    if (!it) {
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 64;
            s->items = realloc(s->items, s->cap * sizeof *s->items);
            assert_non_null(s->items);
        }
        it = &s->items[s->n++];
        memcpy(it->key, key, key_len);
        it->key[key_len] = '\0';
        it->val = NULL;
    }
    free(it->val);
    it->val = malloc(val_len ? val_len : 1);
    assert_non_null(it->val);
    memcpy(it->val, val, val_len);
    it->len = val_len;
    return 0;
}

static void store_free(store *s) {
    for (size_t i = 0; i < s->n; i++) free(s->items[i].val);
    free(s->items);
    memset(s, 0, sizeof *s);
}

static void store_shuffle(store *s, unsigned *seed) {
    for (size_t i = s->n; i > 1; i--) {
        size_t j = (size_t)rand_r(seed) % i;
        kv t = s->items[i - 1];
        s->items[i - 1] = s->items[j];
        s->items[j] = t;
    }
}

static void store_load(void *st, const store *s) {
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(
            timesale_ops.load(st, s->items[i].key, strlen(s->items[i].key), s->items[i].val, s->items[i].len), 0);
}

static size_t count_emits(void *st) {
    store s = {0};
    assert_int_equal(timesale_ops.dump(st, 0, store_emit, &s), 0);
    size_t n = s.n;
    store_free(&s);
    return n;
}

/* ---- hand-written cases -------------------------------------------------- */

static void test_create(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    promo_cmd c = create("s1", 10, 2, 1000, 2000, 500);
    promo_result r = expect(st, c, NULL);
    assert_true(r.has_sale);
    assert_memory_equal(&r.sale, &c.u.create_sale, sizeof r.sale);
    expect_stock(&r, 0, 10, 1);
    assert_int_equal(timesale_ops.entries(st), 1);
    assert_int_equal(count_emits(st), 1);
    r = expect(st, create("s1", 99, 2, 1000, 2000, 501), "ALREADY_EXISTS");
    assert_false(r.has_sale);
    expect_stock(&r, 0, 10, 1);
    assert_int_equal(count_emits(st), 0);
    timesale_ops.state_destroy(st);
}

static void test_place(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    promo_result r = expect(st, place("s1", "u1", 1, "o1", 1500), "NOT_FOUND");
    assert_false(r.has_sold);
    assert_int_equal(r.version, 0);
    expect(st, create("s1", 10, 3, 1000, 2000, 0), NULL);
    r = expect(st, place("s1", "u1", 1, "o1", 999), "NOT_STARTED");
    expect_stock(&r, 0, 10, 1);
    assert_string_equal(r.order_status, "");
    /* starts_at is inside the window, ends_at is not. */
    r = expect(st, place("s1", "u1", 2, "o1", 1000), NULL);
    assert_string_equal(r.order_id, "o1");
    assert_string_equal(r.user_id, "u1");
    assert_true(r.has_quantity && r.quantity == 2);
    assert_string_equal(r.order_status, "PLACED");
    expect_stock(&r, 2, 8, 2);
    expect(st, place("s1", "u1", 1, "o2", 2000), "ENDED");
    expect(st, place("s1", "u1", 1, "o2", 5000), "ENDED");
    r = expect(st, place("s1", "u1", 1, "o2", 1999), NULL);
    expect_stock(&r, 3, 7, 3);
    /* Without an order id the request id names the order. */
    promo_cmd c = place("s1", "u2", 1, NULL, 1500);
    r = expect(st, c, NULL);
    assert_string_equal(r.order_id, c.request_id);
    r = expect(st, cancel("s1", c.request_id, 1501), NULL);
    assert_string_equal(r.user_id, "u2");
    assert_int_equal(timesale_ops.entries(st), 4);
    timesale_ops.state_destroy(st);
}

static void test_place_rejections_in_order(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, create("s1", 5, 3, 1000, 2000, 0), NULL);
    expect(st, place("s1", "u1", 3, "o1", 1100), NULL);
    /* The user is at the limit and the order id is taken: the duplicate is
     * named first. Outside the window, the window comes first. */
    expect(st, place("s1", "u1", 1, "o1", 1100), "DUPLICATE_ORDER");
    expect(st, place("s1", "u1", 1, "o1", 2100), "ENDED");
    expect(st, place("s1", "u1", 1, "o1", 900), "NOT_STARTED");
    promo_result r = expect(st, place("s1", "u1", 1, "o2", 1100), "LIMIT_EXCEEDED");
    expect_stock(&r, 3, 2, 2);
    assert_string_equal(r.order_id, "o2");
    assert_true(r.has_quantity && r.quantity == 1);
    /* Over the limit and over the stock: the limit is named. */
    expect(st, place("s1", "u2", 4, "o3", 1100), "LIMIT_EXCEEDED");
    /* No partial fill: 3 asked, 2 left. */
    r = expect(st, place("s1", "u2", 3, "o3", 1100), "SOLD_OUT");
    expect_stock(&r, 3, 2, 2);
    r = expect(st, place("s1", "u2", 2, "o3", 1100), NULL);
    expect_stock(&r, 5, 0, 3);
    expect(st, place("s1", "u3", 1, "o4", 1100), "SOLD_OUT");
    /* Order ids are per sale. */
    expect(st, create("s2", 5, 3, 1000, 2000, 0), NULL);
    expect(st, place("s2", "u1", 1, "o1", 1100), NULL);
    /* Rejections change nothing. */
    store s = {0};
    assert_int_equal(timesale_ops.dump(st, 0, store_emit, &s), 0);
    store_free(&s);
    expect(st, place("s1", "u3", 1, "o4", 1100), "SOLD_OUT");
    expect(st, place("s1", "u1", 1, "o1", 1100), "DUPLICATE_ORDER");
    assert_int_equal(count_emits(st), 0);
    timesale_ops.state_destroy(st);
}

static void test_cancel(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, cancel("s1", "o1", 1100), "NOT_FOUND");
    expect(st, create("s1", 4, 2, 1000, 2000, 0), NULL);
    promo_result r = expect(st, cancel("s1", "o1", 1100), "NOT_FOUND");
    expect_stock(&r, 0, 4, 1);
    expect(st, place("s1", "u1", 2, "o1", 1100), NULL);
    expect(st, place("s1", "u2", 2, "o2", 1100), NULL);
    expect(st, place("s1", "u1", 1, "o3", 1100), "LIMIT_EXCEEDED");
    expect(st, place("s1", "u3", 1, "o3", 1100), "SOLD_OUT");
    r = expect(st, cancel("s1", "o1", 1200), NULL);
    assert_string_equal(r.order_id, "o1");
    assert_string_equal(r.user_id, "u1");
    assert_true(r.has_quantity && r.quantity == 2);
    assert_string_equal(r.order_status, "CANCELLED");
    expect_stock(&r, 2, 2, 4);
    r = expect(st, cancel("s1", "o1", 1200), "ALREADY_CANCELLED");
    expect_stock(&r, 2, 2, 4);
    /* Restocked, and u1's limit is free again; the cancelled id stays taken. */
    expect(st, place("s1", "u1", 2, "o1", 1300), "DUPLICATE_ORDER");
    expect(st, place("s1", "u1", 2, "o4", 1300), NULL);
    /* Cancelling after the end still restocks. */
    r = expect(st, cancel("s1", "o2", 9000), NULL);
    expect_stock(&r, 2, 2, 6);
    expect(st, place("s1", "u9", 1, "o5", 9000), "ENDED");
    timesale_ops.state_destroy(st);
}

static void test_controls(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, control(CMD_PAUSE_TIME_SALE, "s1", 1000), "NOT_FOUND");
    promo_result r = expect(st, create("s1", 10, 3, 1000, 2000, 0), NULL);
    assert_string_equal(r.state, "ACTIVE");
    assert_false(r.has_hold_ms);
    expect(st, place("s1", "u1", 2, "o1", 1100), NULL);
    assert_int_equal(count_emits(st), 2);
    r = expect(st, control(CMD_PAUSE_TIME_SALE, "s1", 1101), NULL);
    assert_string_equal(r.state, "PAUSED");
    assert_string_equal(r.actor, "key-test");
    assert_true(r.has_sale);
    expect_stock(&r, 2, 8, 3);
    assert_int_equal(count_emits(st), 1);
    r = expect(st, control(CMD_PAUSE_TIME_SALE, "s1", 1102), NULL);
    expect_stock(&r, 2, 8, 3); /* nothing changed, no new version */
    assert_int_equal(count_emits(st), 0);
    /* Paused first, even before the window is checked. */
    r = expect(st, place("s1", "u2", 1, "o2", 1103), "PAUSED");
    assert_string_equal(r.state, "PAUSED");
    expect(st, place("s1", "u2", 1, "o2", 5000), "PAUSED");
    /* Orders already placed can still be cancelled. */
    r = expect(st, cancel("s1", "o1", 1104), NULL);
    assert_int_equal(r.orders, 1);
    assert_int_equal(r.cancelled_orders, 1);
    r = expect(st, control(CMD_RESUME_TIME_SALE, "s1", 1105), NULL);
    assert_string_equal(r.state, "ACTIVE");
    expect(st, place("s1", "u2", 1, "o2", 1106), NULL);
    r = expect(st, control(CMD_CLOSE_TIME_SALE, "s1", 1107), NULL);
    assert_string_equal(r.state, "CLOSED");
    expect(st, place("s1", "u3", 1, "o3", 1108), "CLOSED");
    expect(st, control(CMD_RESUME_TIME_SALE, "s1", 1109), "CLOSED");
    expect(st, control(CMD_PAUSE_TIME_SALE, "s1", 1110), "CLOSED");
    expect(st, control(CMD_CLOSE_TIME_SALE, "s1", 1111), NULL);
    expect(st, update("s1", 20, -1, -1, -1, 1112), "CLOSED");
    r = expect(st, cancel("s1", "o2", 1113), NULL);
    assert_string_equal(r.state, "CLOSED");
    expect_stock(&r, 0, 10, 8);
    timesale_ops.state_destroy(st);
}

static void test_update(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, update("s1", 5, -1, -1, -1, 1000), "NOT_FOUND");
    expect(st, create("s1", 10, 3, 1000, 2000, 0), NULL);
    expect(st, place("s1", "u1", 3, "o1", 1100), NULL);
    expect(st, place("s1", "u2", 3, "o2", 1100), NULL);
    promo_result r = expect(st, update("s1", 5, -1, -1, -1, 1200), "BELOW_SOLD");
    expect_stock(&r, 6, 4, 3);
    r = expect(st, update("s1", 6, -1, -1, -1, 1201), NULL);
    assert_true(r.has_sale);
    assert_int_equal(r.sale.stock, 6);
    expect_stock(&r, 6, 0, 4);
    expect(st, place("s1", "u3", 1, "o3", 1202), "SOLD_OUT");
    expect(st, update("s1", 9, 1, -1, -1, 1203), NULL);
    /* A lower limit: u1 keeps 3, new users get 1. */
    expect(st, place("s1", "u3", 2, "o3", 1204), "LIMIT_EXCEEDED");
    expect(st, place("s1", "u3", 1, "o3", 1205), NULL);
    expect(st, update("s1", -1, -1, 1000, -1, 1206), "INVALID_WINDOW");
    r = expect(st, update("s1", -1, -1, 1300, 60000, 1207), NULL);
    assert_int_equal(r.sale.ends_at, 1300);
    assert_true(r.has_hold_ms);
    assert_int_equal(r.hold_ms, 60000);
    expect(st, place("s1", "u4", 1, "o4", 1300), "ENDED");
    r = expect(st, update("s1", -1, -1, 5000, 0, 1301), NULL);
    assert_false(r.has_hold_ms);
    expect(st, place("s1", "u4", 1, "o4", 1302), NULL);
    timesale_ops.state_destroy(st);
}

static promo_cmd hold(const char *sale, const char *user, int32_t quantity, const char *order, int64_t hold_ms,
                      int64_t now);
static promo_cmd order_ref(cmd_type t, const char *sale, const char *order, int64_t now);

/* What due() emits, kept to be applied. */
typedef struct collected {
    promo_cmd cmds[64];
    int n;
} collected;
static int collect(void *ctx, const promo_cmd *cmd);

static void test_holds(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, create("s1", 5, 3, 1000, 100000, 0), NULL);
    /* A hold takes its units from remaining and the user's limit. */
    promo_result r = expect(st, hold("s1", "u1", 2, "h1", 1000, 2000), NULL);
    assert_string_equal(r.order_status, "HELD");
    assert_true(r.has_hold_expires_at);
    assert_int_equal(r.hold_expires_at, 3000);
    assert_int_equal(r.held, 2);
    expect_stock(&r, 0, 3, 2);
    expect(st, place("s1", "u1", 2, "p1", 2001), "LIMIT_EXCEEDED");
    expect(st, place("s2", "u1", 1, "p1", 2001), "NOT_FOUND");
    expect(st, hold("s1", "u2", 3, "h2", 5000, 2002), NULL);
    /* Held units are not sold twice. */
    r = expect(st, place("s1", "u3", 1, "p1", 2003), "SOLD_OUT");
    assert_int_equal(r.held, 5);
    expect_stock(&r, 0, 0, 3);
    expect(st, update("s1", 4, -1, -1, -1, 2004), "BELOW_SOLD");
    /* Confirm: held to sold, before the deadline only. */
    r = expect(st, order_ref(CMD_CONFIRM_ORDER, "s1", "h1", 2999), NULL);
    assert_string_equal(r.order_status, "PLACED");
    assert_false(r.has_hold_expires_at);
    assert_int_equal(r.held, 3);
    expect_stock(&r, 2, 0, 4);
    r = expect(st, order_ref(CMD_CONFIRM_ORDER, "s1", "h1", 3000), "NOT_HELD");
    assert_string_equal(r.order_status, "PLACED");
    expect(st, order_ref(CMD_EXPIRE_HOLD, "s1", "h1", 9000), "NOT_HELD");
    expect(st, order_ref(CMD_CONFIRM_ORDER, "s1", "nope", 3000), "NOT_FOUND");
    /* Not due yet; due at its deadline exactly. */
    r = expect(st, order_ref(CMD_EXPIRE_HOLD, "s1", "h2", 7001), "NOT_DUE");
    assert_string_equal(r.order_status, "HELD");
    /* Past the deadline, a confirm or a cancel is too late even before the
     * expiry is applied, and changes nothing. */
    expect(st, order_ref(CMD_CONFIRM_ORDER, "s1", "h2", 7002), "EXPIRED");
    expect(st, cancel("s1", "h2", 7002), "EXPIRED");
    assert_int_equal(count_emits(st), 3); /* the sale, h1 and h2: nothing since */
    assert_int_equal(count_emits(st), 0);
    r = expect(st, order_ref(CMD_EXPIRE_HOLD, "s1", "h2", 7002), NULL);
    assert_string_equal(r.order_status, "EXPIRED");
    assert_string_equal(r.user_id, "u2");
    assert_int_equal(r.quantity, 3);
    assert_int_equal(r.expired_orders, 1);
    expect_stock(&r, 2, 3, 5);
    expect(st, order_ref(CMD_EXPIRE_HOLD, "s1", "h2", 7003), "NOT_HELD");
    expect(st, order_ref(CMD_CONFIRM_ORDER, "s1", "h2", 7003), "EXPIRED");
    expect(st, cancel("s1", "h2", 7003), "EXPIRED");
    /* u2's limit is free again; the order id stays taken. */
    expect(st, hold("s1", "u2", 3, "h2", 1000, 7004), "DUPLICATE_ORDER");
    /* Cancelling a held order in time returns its units. */
    expect(st, hold("s1", "u2", 3, "h3", 1000, 7005), NULL);
    r = expect(st, cancel("s1", "h3", 7006), NULL);
    assert_string_equal(r.order_status, "CANCELLED");
    expect_stock(&r, 2, 3, 7);
    assert_int_equal(r.held, 0);
    /* A default hold: PATCH hold_ms, then plain orders are held. */
    expect(st, update("s1", -1, -1, -1, 60000, 7007), NULL);
    r = expect(st, place("s1", "u3", 1, "p2", 7008), NULL);
    assert_string_equal(r.order_status, "HELD");
    assert_int_equal(r.hold_expires_at, 67008);
    /* Confirm works on a paused or closed sale. */
    expect(st, control(CMD_CLOSE_TIME_SALE, "s1", 7009), NULL);
    r = expect(st, order_ref(CMD_CONFIRM_ORDER, "s1", "p2", 7010), NULL);
    expect_stock(&r, 3, 2, 11);
    timesale_ops.state_destroy(st);
}

static void test_due(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, create("s1", 100, 10, 0, 100000, 0), NULL);
    expect(st, create("s2", 100, 10, 0, 100000, 0), NULL);
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "h%d", i);
        expect(st, hold(i % 2 ? "s1" : "s2", "u1", 1, id, 1000 + 100 * (9 - i), 1000), NULL);
    }
    expect(st, place("s1", "u2", 1, "p1", 1000), NULL);
    collected *c = calloc(1, sizeof *c);
    /* Nothing due before the first deadline (h9's, at 2000). */
    assert_int_equal(timesale_ops.due(st, 1999, collect, c), 0);
    assert_int_equal(c->n, 0);
    assert_int_equal(timesale_ops.due(st, 2200, collect, c), 0);
    assert_int_equal(c->n, 3); /* h9, h8, h7 */
    for (int i = 0; i < c->n; i++) {
        promo_cmd *x = &c->cmds[i];
        assert_int_equal(x->type, CMD_EXPIRE_HOLD);
        char want[PROMO_ID_MAX + 1];
        cmd_expire_hold_id(x->u.order_ref.sale_id, x->u.order_ref.order_id, want);
        assert_string_equal(x->request_id, want);
        assert_int_equal(x->submitted_at, 2200);
        char field[64], why[160];
        assert_int_equal(cmd_validate(x, field, sizeof field, why, sizeof why), 0);
    }
    /* Asked for once: not again until the retry interval passed. */
    c->n = 0;
    assert_int_equal(timesale_ops.due(st, 2300, collect, c), 0);
    assert_int_equal(c->n, 1); /* h6 */
    c->n = 0;
    assert_int_equal(timesale_ops.due(st, 7299, collect, c), 0);
    assert_int_equal(c->n, 9); /* all of them, the first three again, but h6: asked for 4999 ms ago */
    assert_int_equal(timesale_ops.due(st, 7300, collect, c), 0);
    assert_int_equal(c->n, 10); /* and now h6 */
    /* The ids differ per hold, and are the same for the same hold. */
    for (int i = 0; i < c->n; i++)
        for (int j = i + 1; j < c->n; j++) assert_string_not_equal(c->cmds[i].request_id, c->cmds[j].request_id);
    /* Applied, they expire the holds; then nothing is due. */
    for (int i = 0; i < c->n; i++) expect(st, c->cmds[i], NULL);
    c->n = 0;
    assert_int_equal(timesale_ops.due(st, 99999, collect, c), 0);
    assert_int_equal(c->n, 0);
    free(c);
    timesale_ops.state_destroy(st);
}

/* An order entry written before turn 2 (version 1: a cancelled flag) loads
 * as PLACED or CANCELLED. */
static void test_load_v1_order(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, create("s1", 10, 3, 1000, 2000, 0), NULL);
    for (int cancelled = 0; cancelled < 2; cancelled++) {
        bytes_w w = {0};
        bytes_put_u8(&w, 1);
        bytes_put_str(&w, "u1");
        bytes_put_i64(&w, 2);
        bytes_put_u8(&w, (uint8_t)cancelled);
        assert_int_equal(timesale_ops.load(st, cancelled ? "o:s1:o2" : "o:s1:o1", 7, w.data, w.len), 0);
        bytes_put_i64(&w, 0); /* a v1 entry ends at its flag */
        assert_int_equal(timesale_ops.load(st, "o:s1:o3", 7, w.data, w.len), -1);
        free(w.data);
    }
    promo_result r = expect(st, cancel("s1", "o2", 1100), "ALREADY_CANCELLED");
    assert_int_equal(r.cancelled_orders, 1);
    assert_int_equal(r.orders, 2);
    expect(st, place("s1", "u1", 2, "o4", 1100), "LIMIT_EXCEEDED");
    r = expect(st, cancel("s1", "o1", 1100), NULL);
    assert_string_equal(r.order_status, "CANCELLED");
    timesale_ops.state_destroy(st);
}

/* A sale entry written before turn 2 (version 1) loads as an ACTIVE sale
 * without a default hold. */
static void test_load_v1_sale(void **unused) {
    (void)unused;
    bytes_w w = {0};
    bytes_put_u8(&w, 1);
    bytes_put_str(&w, "p-s1");
    bytes_put_str(&w, "Sale s1");
    bytes_put_i64(&w, 20000);
    bytes_put_i64(&w, 9900);
    bytes_put_i64(&w, 10);
    bytes_put_i64(&w, 3);
    bytes_put_i64(&w, 1000);
    bytes_put_i64(&w, 2000);
    bytes_put_i64(&w, 2);
    bytes_put_i64(&w, 2);
    void *st = timesale_ops.state_new();
    assert_int_equal(timesale_ops.load(st, "s:s1", 4, w.data, w.len), 0);
    promo_result r = expect(st, place("s1", "u1", 1, "o9", 1100), NULL);
    assert_string_equal(r.state, "ACTIVE");
    expect_stock(&r, 3, 7, 3);
    bytes_put_u8(&w, 0);
    assert_int_equal(timesale_ops.load(st, "s:s2", 4, w.data, w.len), -1);
    free(w.data);
    timesale_ops.state_destroy(st);
}

static void test_load_any_order_and_malformed(void **unused) {
    (void)unused;
    void *src = timesale_ops.state_new();
    expect(src, create("s1", 10, 3, 1000, 2000, 0), NULL);
    expect(src, place("s1", "u1", 2, "o1", 1100), NULL);
    expect(src, place("s1", "u1", 1, "o2", 1100), NULL);
    expect(src, cancel("s1", "o2", 1101), NULL);
    store s = {0};
    assert_int_equal(timesale_ops.dump(src, 1, store_emit, &s), 0);
    assert_int_equal(s.n, 3);

    /* Orders first, then the sale. */
    void *st = timesale_ops.state_new();
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < s.n; i++)
            if ((s.items[i].key[0] == 'o') == (pass == 0))
                assert_int_equal(
                    timesale_ops.load(st, s.items[i].key, strlen(s.items[i].key), s.items[i].val, s.items[i].len), 0);
    assert_int_equal(timesale_ops.entries(st), 3);
    /* u1 holds 2 of 3: the derived per-user count came back. */
    expect(st, place("s1", "u1", 2, "o3", 1200), "LIMIT_EXCEEDED");
    promo_result r = expect(st, place("s1", "u1", 1, "o3", 1200), NULL);
    expect_stock(&r, 3, 7, 5);

    const kv *sale = NULL, *order = NULL;
    for (size_t i = 0; i < s.n; i++) {
        if (s.items[i].key[0] == 's')
            sale = &s.items[i];
        else
            order = &s.items[i];
    }
    const char *bad_keys[] = {"", "s", "s:", "o:s1", "o:s1:", "o::o1", "x:s1", "s:bad id", "o:s1:o 1", "o:s1:o1:x"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        assert_int_equal(timesale_ops.load(st, bad_keys[i], strlen(bad_keys[i]), sale->val, sale->len), -1);
        assert_int_equal(timesale_ops.load(st, bad_keys[i], strlen(bad_keys[i]), order->val, order->len), -1);
    }
    assert_int_equal(timesale_ops.load(st, "s:\0x", 4, sale->val, sale->len), -1);
    assert_int_equal(timesale_ops.load(st, "s:s9", 4, NULL, 0), -1);
    for (size_t n = 0; n < sale->len; n++) assert_int_equal(timesale_ops.load(st, "s:s9", 4, sale->val, n), -1);
    for (size_t n = 0; n < order->len; n++) assert_int_equal(timesale_ops.load(st, "o:s9:o1", 7, order->val, n), -1);
    /* A sale value is not an order value and the other way round. */
    assert_int_equal(timesale_ops.load(st, "s:s9", 4, order->val, order->len), -1);
    assert_int_equal(timesale_ops.load(st, "o:s9:o1", 7, sale->val, sale->len), -1);

    /* Random bytes and flipped bytes: no crash, and whatever loads still
     * works. */
    unsigned seed = 3;
    uint8_t v[256];
    for (int round = 0; round < 20000; round++) {
        const kv *it = round % 2 ? sale : order;
        memcpy(v, it->val, it->len);
        for (int f = 0; f < 1 + rand_r(&seed) % 3; f++) v[(size_t)rand_r(&seed) % it->len] = (uint8_t)rand_r(&seed);
        const char *key = round % 2 ? "s:s1" : "o:s1:o1";
        if (timesale_ops.load(st, key, strlen(key), v, it->len) == 0) {
            promo_result res;
            promo_cmd c = place("s1", "u1", 1 + rand_r(&seed) % 3, NULL, 1000 + rand_r(&seed) % 2000);
            run(st, &c, &res);
            c = cancel("s1", "o1", 1500);
            run(st, &c, &res);
        }
        size_t n = (size_t)rand_r(&seed) % 40;
        for (size_t i = 0; i < n; i++) v[i] = (uint8_t)rand_r(&seed);
        if (n) v[0] = 1;
        (void)timesale_ops.load(st, key, strlen(key), v, n);
    }
    store_free(&s);
    timesale_ops.state_destroy(st);
    timesale_ops.state_destroy(src);
}

static int failing_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    (void)key, (void)key_len, (void)val, (void)val_len;
    int *calls = ctx;
    return ++*calls == 2 ? 9 : 0;
}

static void test_dump(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, create("s1", 10, 3, 1000, 2000, 0), NULL);
    expect(st, place("s1", "u1", 1, "o1", 1100), NULL);
    int calls = 0;
    assert_int_equal(timesale_ops.dump(st, 0, failing_emit, &calls), 9);
    store s = {0};
    assert_int_equal(timesale_ops.dump(st, 0, store_emit, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.items[0].key, "s:s1");
    assert_string_equal(s.items[1].key, "o:s1:o1");
    store_free(&s);
    expect(st, place("s1", "u1", 1, "o2", 1100), NULL);
    assert_int_equal(timesale_ops.dump(st, 0, store_emit, &s), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.items[1].key, "o:s1:o2");
    store_free(&s);
    assert_int_equal(timesale_ops.dump(st, 1, store_emit, &s), 0);
    assert_int_equal(s.n, 3);
    store_free(&s);
    timesale_ops.state_destroy(st);
}

/* ---- the reference model ------------------------------------------------- */

#define SALES 64
#define USERS 30
#define POOL 100

enum { M_PLACED, M_CANCELLED, M_HELD, M_EXPIRED };
static const char *const m_status_names[] = {"PLACED", "CANCELLED", "HELD", "EXPIRED"};

typedef struct msale {
    bool exists;
    int64_t stock, limit, starts, ends, sold, version;
    int state;
    int64_t orders, cancelled, expired, held, hold_ms;
} msale;

/* The highest per-user limit each sale ever had: a lowered limit leaves
 * users above it with their orders. */
static int64_t max_limit[SALES];

typedef struct morder {
    char id[PROMO_ID_MAX + 1];
    int user;
    int qty;
    int status;
    int64_t deadline;
} morder;

typedef struct model {
    msale sales[SALES];
    morder *orders[SALES]; /* per sale */
    int n[SALES];
} model;

typedef struct mresult {
    const char *reason;
    bool has_stock;
    int64_t sold, remaining, version, held, expired;
    const char *status; /* order_status */
    int64_t deadline;   /* hold_expires_at of a HELD order */
    int state;
    int64_t orders, cancelled;
    bool changed; /* a control or update that changed the sale */
} mresult;

static morder *m_find(model *m, int sale, const char *id) {
    for (int i = 0; i < m->n[sale]; i++)
        if (strcmp(m->orders[sale][i].id, id) == 0) return &m->orders[sale][i];
    return NULL;
}

/* Units of a sale's orders in a status (user < 0: every user's). */
static int64_t m_units(const model *m, int sale, int user, int status) {
    int64_t sum = 0;
    for (int i = 0; i < m->n[sale]; i++) {
        const morder *o = &m->orders[sale][i];
        if ((user < 0 || o->user == user) && o->status == status) sum += o->qty;
    }
    return sum;
}

/* What counts against a user's limit: PLACED and HELD. */
static int64_t m_taken(const model *m, int sale, int user) {
    return m_units(m, sale, user, M_PLACED) + m_units(m, sale, user, M_HELD);
}

static mresult m_apply(model *m, const promo_cmd *c) {
    mresult r = {0};
    int64_t now = c->submitted_at;
    if (c->type == CMD_CREATE_TIME_SALE) {
        msale *s = &m->sales[atoi(c->u.create_sale.sale_id + 1)];
        if (s->exists)
            r.reason = "ALREADY_EXISTS";
        else {
            const time_sale_def *d = &c->u.create_sale;
            *s = (msale){true, d->stock, d->per_user_limit, d->starts_at, d->ends_at, 0, 1, 0, 0, 0, 0, 0, 0};
            max_limit[atoi(c->u.create_sale.sale_id + 1)] = d->per_user_limit;
        }
        goto counts;
    }
    char key[PROMO_ID_MAX + 1];
    assert_int_equal(cmd_entity_key(c, key, sizeof key), 0);
    int si = atoi(key + 1);
    msale *s = &m->sales[si];
    if (!s->exists) {
        r.reason = "NOT_FOUND";
        return r;
    }
    if (c->type == CMD_PAUSE_TIME_SALE || c->type == CMD_RESUME_TIME_SALE || c->type == CMD_CLOSE_TIME_SALE) {
        int to = c->type == CMD_PAUSE_TIME_SALE    ? CAMPAIGN_PAUSED
                 : c->type == CMD_RESUME_TIME_SALE ? CAMPAIGN_ACTIVE
                                                   : CAMPAIGN_CLOSED;
        if (s->state == CAMPAIGN_CLOSED && to != CAMPAIGN_CLOSED)
            r.reason = "CLOSED";
        else if (s->state != to)
            s->state = to, s->version++, r.changed = true;
    } else if (c->type == CMD_UPDATE_TIME_SALE) {
        const time_sale_update *u = &c->u.update_sale;
        int64_t stock = u->has_stock ? u->stock : s->stock, ends = u->has_ends_at ? u->ends_at : s->ends;
        if (s->state == CAMPAIGN_CLOSED)
            r.reason = "CLOSED";
        else if (stock < s->sold + s->held)
            r.reason = "BELOW_SOLD";
        else if (ends <= s->starts)
            r.reason = "INVALID_WINDOW";
        else {
            s->stock = stock, s->ends = ends;
            if (u->has_per_user_limit) s->limit = u->per_user_limit;
            if (u->has_hold_ms) s->hold_ms = u->hold_ms;
            if (s->limit > max_limit[si]) max_limit[si] = s->limit;
            s->version++;
            r.changed = true;
        }
    } else if (c->type == CMD_PLACE_ORDER || c->type == CMD_HOLD_ORDER) {
        bool h = c->type == CMD_HOLD_ORDER;
        const char *named = h ? c->u.hold_order.order_id : c->u.place_order.order_id;
        const char *id = named[0] ? named : c->request_id;
        int user = atoi((h ? c->u.hold_order.user_id : c->u.place_order.user_id) + 1);
        int qty = h ? c->u.hold_order.quantity : c->u.place_order.quantity;
        int64_t hold_ms = h ? c->u.hold_order.hold_ms : s->hold_ms;
        if (s->state == CAMPAIGN_PAUSED)
            r.reason = "PAUSED";
        else if (s->state == CAMPAIGN_CLOSED)
            r.reason = "CLOSED";
        else if (now < s->starts)
            r.reason = "NOT_STARTED";
        else if (now >= s->ends)
            r.reason = "ENDED";
        else if (m_find(m, si, id))
            r.reason = "DUPLICATE_ORDER";
        else if (m_taken(m, si, user) + qty > s->limit)
            r.reason = "LIMIT_EXCEEDED";
        else if (s->sold + s->held + qty > s->stock)
            r.reason = "SOLD_OUT";
        else {
            m->orders[si] = realloc(m->orders[si], (size_t)(m->n[si] + 1) * sizeof *m->orders[si]);
            morder *o = &m->orders[si][m->n[si]++];
            *o = (morder){.user = user, .qty = qty, .status = hold_ms > 0 ? M_HELD : M_PLACED};
            snprintf(o->id, sizeof o->id, "%s", id);
            if (hold_ms > 0)
                o->deadline = now + hold_ms, s->held += qty;
            else
                s->sold += qty;
            s->orders++;
            s->version++;
            r.status = m_status_names[o->status];
            r.deadline = o->deadline;
        }
    } else {
        bool cancel = c->type == CMD_CANCEL_ORDER;
        morder *o = m_find(m, si, cancel ? c->u.cancel_order.order_id : c->u.order_ref.order_id);
        bool lapsed = o && o->status == M_HELD && now >= o->deadline;
        if (!o)
            r.reason = "NOT_FOUND";
        else if (c->type == CMD_EXPIRE_HOLD)
            r.reason = o->status != M_HELD ? "NOT_HELD" : now < o->deadline ? "NOT_DUE" : NULL;
        else if (o->status == M_CANCELLED)
            r.reason = "ALREADY_CANCELLED";
        else if (o->status == M_EXPIRED || lapsed)
            r.reason = "EXPIRED";
        else if (c->type == CMD_CONFIRM_ORDER && o->status == M_PLACED)
            r.reason = "NOT_HELD";
        if (o && r.reason && !cancel) r.status = m_status_names[o->status], r.deadline = o->deadline;
        if (o && !r.reason) {
            if (o->status == M_HELD) s->held -= o->qty;
            if (c->type == CMD_CONFIRM_ORDER) {
                o->status = M_PLACED;
                s->sold += o->qty;
            } else if (c->type == CMD_EXPIRE_HOLD) {
                o->status = M_EXPIRED;
                s->expired++;
            } else {
                if (o->status == M_PLACED) s->sold -= o->qty;
                o->status = M_CANCELLED;
                s->cancelled++;
            }
            s->version++;
            r.status = m_status_names[o->status];
            r.deadline = o->deadline;
        }
    }
counts:;
    msale *t = &m->sales[atoi(c->type == CMD_CREATE_TIME_SALE ? c->u.create_sale.sale_id + 1 : "0")];
    if (c->type != CMD_CREATE_TIME_SALE) {
        char k2[PROMO_ID_MAX + 1];
        assert_int_equal(cmd_entity_key(c, k2, sizeof k2), 0);
        t = &m->sales[atoi(k2 + 1)];
    }
    r.has_stock = true;
    r.sold = t->sold;
    r.held = t->held;
    r.remaining = t->stock - t->sold - t->held;
    r.version = t->version;
    r.state = t->state;
    r.orders = t->orders;
    r.cancelled = t->cancelled;
    r.expired = t->expired;
    return r;
}

static void m_check(const mresult *m, const promo_result *r) {
    if (m->reason) {
        if (r->status != STATUS_REJECTED) fail_msg("model rejects with %s, state succeeds", m->reason);
        assert_string_equal(r->reason, m->reason);
    } else {
        if (r->status != STATUS_SUCCEEDED) fail_msg("model succeeds, state rejects with %s", r->reason);
    }
    assert_string_equal(r->order_status, m->status ? m->status : "");
    assert_int_equal(r->has_hold_expires_at, m->status && strcmp(m->status, "HELD") == 0);
    if (r->has_hold_expires_at) assert_int_equal(r->hold_expires_at, m->deadline);
    assert_int_equal(r->has_sold, m->has_stock);
    assert_int_equal(r->has_remaining, m->has_stock);
    if (m->has_stock) {
        assert_int_equal(r->sold, m->sold);
        assert_int_equal(r->held, m->held);
        assert_int_equal(r->remaining, m->remaining);
        assert_int_equal(r->expired_orders, m->expired);
        assert_string_equal(r->state, campaign_state_name((campaign_state)m->state));
        assert_int_equal(r->orders, m->orders);
        assert_int_equal(r->cancelled_orders, m->cancelled);
    }
    assert_int_equal(r->version, m->version);
}

/* ---- randomized runs ----------------------------------------------------- */

typedef struct gen {
    unsigned seed;
    int64_t base;
    char recent[8][PROMO_ID_MAX + 1]; /* request ids that named orders */
} gen;

static int64_t rnd(gen *g, int64_t lo, int64_t hi) {
    return lo + (int64_t)((unsigned)rand_r(&g->seed) % (unsigned)(hi - lo + 1));
}

static promo_cmd hold(const char *sale, const char *user, int32_t quantity, const char *order, int64_t hold_ms,
                      int64_t now) {
    promo_cmd c = cmd_base(CMD_HOLD_ORDER, now);
    snprintf(c.u.hold_order.sale_id, sizeof c.u.hold_order.sale_id, "%s", sale);
    snprintf(c.u.hold_order.user_id, sizeof c.u.hold_order.user_id, "%s", user);
    c.u.hold_order.quantity = quantity;
    snprintf(c.u.hold_order.order_id, sizeof c.u.hold_order.order_id, "%s", order ? order : "");
    c.u.hold_order.hold_ms = hold_ms;
    return c;
}

static promo_cmd order_ref(cmd_type t, const char *sale, const char *order, int64_t now) {
    promo_cmd c = cmd_base(t, now);
    snprintf(c.u.order_ref.sale_id, sizeof c.u.order_ref.sale_id, "%s", sale);
    snprintf(c.u.order_ref.order_id, sizeof c.u.order_ref.order_id, "%s", order);
    return c;
}

/* A random command: sales created now and then (some twice), orders inside
 * and around their windows, held ones among them, repeated order ids, orders
 * named by their request id, cancels, confirms and expiries of unknown,
 * placed, held and lapsed orders, times that mostly go forward. */
static promo_cmd gen_cmd(gen *g) {
    char sale[16], user[16], order[16];
    g->base += rnd(g, 0, 3);
    int64_t now = g->base + rnd(g, -5, 5);
    if (now < 0) now = 0;
    /* New sales come up as time goes by, a few live at once. */
    int64_t si = g->base / 600 + rnd(g, 0, 4);
    snprintf(sale, sizeof sale, "s%d", (int)(si < SALES ? si : SALES - 1));
    snprintf(user, sizeof user, "u%d", (int)rnd(g, 0, USERS - 1));
    snprintf(order, sizeof order, "o%d", (int)rnd(g, 0, POOL - 1));
    const char *recent = g->recent[rnd(g, 0, 7)];
    const char *some = rnd(g, 0, 9) < 4 && recent[0] ? recent : order;
    int k = (int)rnd(g, 0, 99);
    if (k < 5) {
        int64_t starts = now + rnd(g, -200, 500);
        if (starts < 0) starts = 0;
        return create(sale, rnd(g, 1, 150), (int32_t)rnd(g, 1, 5), starts, starts + rnd(g, 1, 4000), now);
    }
    if (k < 55) {
        bool named = rnd(g, 0, 9) < 7;
        promo_cmd c = rnd(g, 0, 2) == 0
                          ? hold(sale, user, (int32_t)rnd(g, 1, 4), named ? order : NULL, rnd(g, 1000, 2000), now)
                          : place(sale, user, (int32_t)rnd(g, 1, 4), named ? order : NULL, now);
        if (!named) memcpy(g->recent[rnd(g, 0, 7)], c.request_id, sizeof c.request_id);
        return c;
    }
    if (k < 58) {
        /* Pauses and resumes; a close now and then (final for that sale). */
        int64_t x = rnd(g, 0, 20);
        return control(x < 9 ? CMD_PAUSE_TIME_SALE : x < 20 ? CMD_RESUME_TIME_SALE : CMD_CLOSE_TIME_SALE, sale, now);
    }
    if (k < 62) {
        int64_t x = rnd(g, 0, 3);
        return update(sale, x == 0 ? rnd(g, 1, 150) : -1, x == 1 ? (int32_t)rnd(g, 1, 5) : -1,
                      x == 2 ? (now > 2000 ? now - 2000 : 0) + rnd(g, 0, 5000) : -1,
                      x == 3 ? (rnd(g, 0, 1) ? 0 : rnd(g, 1000, 3000)) : -1, now);
    }
    if (k < 72) return order_ref(CMD_CONFIRM_ORDER, sale, some, now);
    /* An expiry for a random time near now: before and after deadlines. */
    if (k < 78) return order_ref(CMD_EXPIRE_HOLD, sale, some, now + rnd(g, 0, 2000));
    return cancel(sale, some, now);
}

/* Reads every checkpoint entry and checks the stock invariants on the real
 * state: sold == the sum of PLACED orders, sold + held <= stock, no user
 * above the highest limit the sale had. */
static void check_checkpoint(void *st) {
    store s = {0};
    assert_int_equal(timesale_ops.dump(st, 1, store_emit, &s), 0);
    int64_t stock[SALES] = {0}, limit[SALES] = {0}, sold[SALES] = {0}, placed[SALES] = {0}, held[SALES] = {0};
    int64_t per_user[SALES][USERS] = {{0}};
    for (size_t i = 0; i < s.n; i++) {
        bytes_r r;
        bytes_r_init(&r, s.items[i].val, s.items[i].len);
        assert_int_equal(bytes_get_u8(&r), 2);
        int si = atoi(s.items[i].key + 3);
        char buf[PROMO_TEXT_MAX + 1];
        if (s.items[i].key[0] == 's') {
            bytes_get_str(&r, buf, sizeof buf);
            bytes_get_str(&r, buf, sizeof buf);
            bytes_get_i64(&r);
            bytes_get_i64(&r);
            stock[si] = bytes_get_i64(&r);
            limit[si] = bytes_get_i64(&r);
            bytes_get_i64(&r);
            bytes_get_i64(&r);
            sold[si] = bytes_get_i64(&r);
        } else {
            bytes_get_str(&r, buf, sizeof buf);
            int64_t qty = bytes_get_i64(&r);
            uint8_t status = bytes_get_u8(&r);
            int64_t deadline = bytes_get_i64(&r);
            assert_true(status <= 3);
            assert_true(status != 2 || deadline > 0);
            if (status == 0) placed[si] += qty;
            if (status == 2) held[si] += qty;
            if (status == 0 || status == 2) per_user[si][atoi(buf + 1)] += qty;
        }
        assert_int_equal(r.err, 0);
    }
    for (int si = 0; si < SALES; si++) {
        assert_int_equal(sold[si], placed[si]);
        assert_true(sold[si] + held[si] <= stock[si]);
        for (int u = 0; u < USERS; u++)
            assert_true(per_user[si][u] <= (limit[si] > max_limit[si] ? limit[si] : max_limit[si]));
    }
    store_free(&s);
}

static int collect(void *ctx, const promo_cmd *cmd) {
    collected *c = ctx;
    if (c->n == 64) return 1;
    c->cmds[c->n++] = *cmd;
    return 0;
}

static void test_random_against_model(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    model m = {0};
    gen g = {.seed = 777};
    int rejected = 0, sold_out = 0, placed = 0, held = 0, ticked = 0;
    const char *reasons[] = {"NOT_FOUND",         "NOT_STARTED",    "ENDED",   "DUPLICATE_ORDER", "LIMIT_EXCEEDED",
                             "SOLD_OUT",          "PAUSED",         "CLOSED",  "BELOW_SOLD",      "INVALID_WINDOW",
                             "ALREADY_CANCELLED", "ALREADY_EXISTS", "EXPIRED", "NOT_HELD",        "NOT_DUE"};
    enum { NREASONS = sizeof reasons / sizeof reasons[0] };
    int seen[NREASONS] = {0};
    for (int step = 0; step < 20000; step++) {
        collected due = {.n = 0};
        promo_cmd c;
        if (step % 50 == 49) {
            /* What the processor would produce now: applied like the rest. */
            assert_int_equal(timesale_ops.due(st, g.base, collect, &due), due.n == 64 ? 1 : 0);
            ticked += due.n;
        }
        for (int d = 0; d <= due.n; d++) {
            c = d < due.n ? due.cmds[d] : gen_cmd(&g);
            if (d < due.n) assert_int_equal(c.type, CMD_EXPIRE_HOLD);
            promo_result r;
            run(st, &c, &r);
            mresult mr = m_apply(&m, &c);
            m_check(&mr, &r);
            if (d < due.n) assert_string_equal(r.order_status, "EXPIRED"); /* due, and applied at once */
            rejected += r.status == STATUS_REJECTED;
            sold_out += strcmp(r.reason, "SOLD_OUT") == 0;
            placed += strcmp(r.order_status, "PLACED") == 0;
            held += strcmp(r.order_status, "HELD") == 0 && r.status == STATUS_SUCCEEDED;
            for (int i = 0; i < NREASONS; i++) seen[i] += strcmp(r.reason, reasons[i]) == 0;
            if (r.has_sold) {
                int si = atoi(r.entity_key + 1);
                assert_true(r.sold >= 0 && r.held >= 0 && r.remaining >= 0);
                assert_true(r.sold + r.held <= m.sales[si].stock);
                assert_int_equal(r.sold + r.held + r.remaining, m.sales[si].stock);
                assert_int_equal(r.sold, m_units(&m, si, -1, M_PLACED));
                assert_int_equal(r.held, m_units(&m, si, -1, M_HELD));
                if ((c.type == CMD_PLACE_ORDER || c.type == CMD_HOLD_ORDER) && r.status == STATUS_SUCCEEDED)
                    assert_true(m_taken(&m, si, atoi(r.user_id + 1)) <= m.sales[si].limit);
            }
            /* Exactly the changed entries are dirty. */
            store s = {0};
            assert_int_equal(timesale_ops.dump(st, 0, store_emit, &s), 0);
            bool sale_only = c.type == CMD_CREATE_TIME_SALE || mr.changed;
            bool controls = c.type >= CMD_PAUSE_TIME_SALE && c.type <= CMD_UPDATE_TIME_SALE;
            size_t want = r.status == STATUS_REJECTED ? 0 : sale_only ? 1 : controls ? 0 : 2;
            assert_int_equal(s.n, want);
            if (want == 2) {
                char key[160];
                snprintf(key, sizeof key, "o:%s:%s", r.entity_key, r.order_id);
                assert_string_equal(s.items[1].key, key);
            }
            store_free(&s);
        }
        if (step % 1000 == 999) check_checkpoint(st);
    }
    print_message("random: 20000 commands and %d expiries from due(), %d rejected, %d placed, %d held, %d sold out\n",
                  ticked, rejected, placed, held, sold_out);
    assert_true(placed > 500 && held > 500 && sold_out > 100 && ticked > 100);
    for (int i = 0; i < NREASONS; i++) {
        print_message("  %-18s %d\n", reasons[i], seen[i]);
        assert_true(seen[i] > 0);
    }
    for (int i = 0; i < SALES; i++) free(m.orders[i]);
    timesale_ops.state_destroy(st);
}

static void run_n(void *st, gen *g, int n) {
    for (int i = 0; i < n; i++) {
        promo_cmd c = gen_cmd(g);
        promo_result r;
        run(st, &c, &r);
    }
}

static void test_checkpoint_full_round_trip(void **unused) {
    (void)unused;
    void *a = timesale_ops.state_new();
    gen g = {.seed = 31337};
    run_n(a, &g, 5000);
    store s = {0};
    assert_int_equal(timesale_ops.dump(a, 1, store_emit, &s), 0);
    assert_int_equal(s.n, timesale_ops.entries(a));
    unsigned seed = 8;
    store_shuffle(&s, &seed);
    void *b = timesale_ops.state_new();
    store_load(b, &s);
    assert_int_equal(timesale_ops.entries(b), timesale_ops.entries(a));
    assert_int_equal(count_emits(b), 0);
    for (int i = 0; i < 1000; i++) {
        promo_cmd c = gen_cmd(&g);
        promo_result ra, rb;
        run(a, &c, &ra);
        run(b, &c, &rb);
        assert_memory_equal(&ra, &rb, sizeof ra);
    }
    store_free(&s);
    timesale_ops.state_destroy(a);
    timesale_ops.state_destroy(b);
}

static void test_checkpoint_incremental_round_trip(void **unused) {
    (void)unused;
    void *a = timesale_ops.state_new();
    gen g = {.seed = 2718};
    run_n(a, &g, 3000);
    store full = {0}, merged = {0};
    assert_int_equal(timesale_ops.dump(a, 1, store_emit, &full), 0);
    for (size_t i = 0; i < full.n; i++)
        store_emit(&merged, full.items[i].key, strlen(full.items[i].key), full.items[i].val, full.items[i].len);
    unsigned seed = 13;
    store_shuffle(&full, &seed);
    /* b: the older full dump, then each delta loaded over it in turn;
     * c: every delta merged into one store (as Redis holds it), shuffled. */
    void *b = timesale_ops.state_new();
    store_load(b, &full);
    for (int round = 0; round < 10; round++) {
        run_n(a, &g, 1 + round * 41);
        store delta = {0};
        assert_int_equal(timesale_ops.dump(a, 0, store_emit, &delta), 0);
        for (size_t i = 0; i < delta.n; i++)
            store_emit(&merged, delta.items[i].key, strlen(delta.items[i].key), delta.items[i].val, delta.items[i].len);
        store_shuffle(&delta, &seed);
        store_load(b, &delta);
        store_free(&delta);
    }
    store_shuffle(&merged, &seed);
    void *c = timesale_ops.state_new();
    store_load(c, &merged);
    assert_int_equal(timesale_ops.entries(b), timesale_ops.entries(a));
    assert_int_equal(timesale_ops.entries(c), timesale_ops.entries(a));
    for (int i = 0; i < 1000; i++) {
        promo_cmd cmd = gen_cmd(&g);
        promo_result ra, rb, rc;
        run(a, &cmd, &ra);
        run(b, &cmd, &rb);
        run(c, &cmd, &rc);
        assert_memory_equal(&ra, &rb, sizeof ra);
        assert_memory_equal(&ra, &rc, sizeof ra);
    }
    store_free(&full);
    store_free(&merged);
    timesale_ops.state_destroy(a);
    timesale_ops.state_destroy(b);
    timesale_ops.state_destroy(c);
}

/* ---- throughput ---------------------------------------------------------- */

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A flash sale: 200,000 orders at one sale, most of them after it sold out. */
static void test_throughput(void **unused) {
    (void)unused;
    void *st = timesale_ops.state_new();
    expect(st, create("hot", 100000, 2, 0, INT64_MAX / 4, 0), NULL);
    enum { N = 200000 };
    promo_cmd *cmds = malloc(N * sizeof *cmds);
    assert_non_null(cmds);
    for (int i = 0; i < N; i++) {
        char user[16];
        snprintf(user, sizeof user, "u%d", i);
        cmds[i] = place("hot", user, 1, NULL, 1 + i);
    }
    promo_result r;
    int ok = 0;
    double t0 = seconds();
    for (int i = 0; i < N; i++) {
        result_init(&r, &cmds[i]);
        assert_int_equal(timesale_ops.apply(st, &cmds[i], cmds[i].submitted_at, &r), 0);
        ok += r.status == STATUS_SUCCEEDED;
    }
    double dt = seconds() - t0;
    print_message("timesale apply: %d commands in %.3f s = %.0f commands/s\n", N, dt, N / dt);
    assert_int_equal(ok, 100000);
    free(cmds);
    timesale_ops.state_destroy(st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_controls),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_load_v1_sale),
        cmocka_unit_test(test_holds),
        cmocka_unit_test(test_due),
        cmocka_unit_test(test_load_v1_order),
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_place),
        cmocka_unit_test(test_place_rejections_in_order),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_load_any_order_and_malformed),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_checkpoint_full_round_trip),
        cmocka_unit_test(test_checkpoint_incremental_round_trip),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
