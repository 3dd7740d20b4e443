/* test_coupon.c — unit tests of the coupon state machine (processors/coupon.c).
 *
 * The state machine is driven only through coupon_ops, as the runtime drives
 * it. Fixed tests pin every rule, rejection reason and boundary of DESIGN.md
 * §2 (Coupon). A randomized test runs seeded command sequences against a
 * small independent model kept here, and after every step reads the state
 * back through its dirty dump to check the invariants (never past the
 * quantity or a user's limit, redeemed count = redeemed coupons). Checkpoint
 * tests restore full and incremental dumps, fed in shuffled order, and require
 * the restored state to answer the next commands byte for byte as the
 * original does; malformed entries must be refused without a crash. The last
 * test issues a million coupons of one policy and prints throughput and
 * memory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "domain.h"

#define T0 1700000000000LL
#define DAY 86400000LL
#define NONE (-1)

/* ---- command builders ---- */

static int req_seq;

static void cmd_base(promo_cmd *c, cmd_type t, int64_t now) {
    memset(c, 0, sizeof *c);
    snprintf(c->request_id, sizeof c->request_id, "r%d", ++req_seq);
    c->submitted_at = now;
    c->type = t;
}

/* max, until and days are NONE when absent. */
static coupon_policy_def def_make(const char *id, discount_type type, int64_t value, int64_t max, int64_t min_order,
                                  int64_t total, int32_t per_user, int64_t starts, int64_t ends, int64_t until,
                                  int32_t days) {
    coupon_policy_def d;
    memset(&d, 0, sizeof d);
    snprintf(d.policy_id, sizeof d.policy_id, "%s", id);
    snprintf(d.name, sizeof d.name, "policy %s", id);
    d.discount_type = type;
    d.discount_value = value;
    d.has_max_discount = max != NONE;
    d.max_discount = max != NONE ? max : 0;
    d.min_order_amount = min_order;
    d.total_quantity = total;
    d.per_user_limit = per_user;
    d.issue_starts_at = starts;
    d.issue_ends_at = ends;
    d.has_valid_until = until != NONE;
    d.valid_until = until != NONE ? until : 0;
    d.has_valid_days = days != NONE;
    d.valid_days = days != NONE ? days : 0;
    return d;
}

static void mk_create(promo_cmd *c, const coupon_policy_def *d, int64_t now) {
    cmd_base(c, CMD_CREATE_COUPON_POLICY, now);
    c->u.create_policy = *d;
}

static void mk_issue(promo_cmd *c, const char *pid, const char *uid, int64_t now) {
    cmd_base(c, CMD_ISSUE_COUPON, now);
    snprintf(c->u.issue.policy_id, sizeof c->u.issue.policy_id, "%s", pid);
    snprintf(c->u.issue.user_id, sizeof c->u.issue.user_id, "%s", uid);
}

static void mk_redeem(promo_cmd *c, const char *cid, const char *uid, const char *oid, int64_t amount, int64_t now) {
    cmd_base(c, CMD_REDEEM_COUPON, now);
    snprintf(c->u.redeem.coupon_id, sizeof c->u.redeem.coupon_id, "%s", cid);
    snprintf(c->u.redeem.user_id, sizeof c->u.redeem.user_id, "%s", uid);
    snprintf(c->u.redeem.order_id, sizeof c->u.redeem.order_id, "%s", oid);
    c->u.redeem.order_amount = amount;
}

static void mk_cancel(promo_cmd *c, const char *cid, const char *oid, int64_t now) {
    cmd_base(c, CMD_CANCEL_REDEMPTION, now);
    snprintf(c->u.cancel_redemption.coupon_id, sizeof c->u.cancel_redemption.coupon_id, "%s", cid);
    snprintf(c->u.cancel_redemption.order_id, sizeof c->u.cancel_redemption.order_id, "%s", oid);
}

static void mk_control(promo_cmd *c, cmd_type t, const char *pid, int64_t now) {
    cmd_base(c, t, now);
    snprintf(c->u.policy_control.policy_id, sizeof c->u.policy_control.policy_id, "%s", pid);
    snprintf(c->u.policy_control.actor, sizeof c->u.policy_control.actor, "key-test");
}

/* NONE leaves a field unchanged. */
static void mk_update(promo_cmd *c, const char *pid, int64_t total, int32_t per_user, int64_t ends, int64_t until,
                      int64_t now) {
    cmd_base(c, CMD_UPDATE_COUPON_POLICY, now);
    coupon_policy_update *u = &c->u.update_policy;
    snprintf(u->policy_id, sizeof u->policy_id, "%s", pid);
    u->has_total_quantity = total != NONE;
    u->total_quantity = total != NONE ? total : 0;
    u->has_per_user_limit = per_user != NONE;
    u->per_user_limit = per_user != NONE ? per_user : 0;
    u->has_issue_ends_at = ends != NONE;
    u->issue_ends_at = ends != NONE ? ends : 0;
    u->has_valid_until = until != NONE;
    u->valid_until = until != NONE ? until : 0;
}

/* Runs one command as the runtime does (validated, result_init, apply). The
 * result lives in a static buffer until the next call. */
static promo_result scratch;

static const promo_result *run(void *st, const promo_cmd *c) {
    char field[64], why[160];
    if (cmd_validate(c, field, sizeof field, why, sizeof why) != 0)
        fail_msg("test built an invalid command: %s %s", field, why);
    result_init(&scratch, c);
    assert_int_equal(coupon_ops.apply(st, c, c->submitted_at, &scratch), 0);
    return &scratch;
}

static const promo_result *create(void *st, const coupon_policy_def *d, int64_t now) {
    promo_cmd c;
    mk_create(&c, d, now);
    return run(st, &c);
}
static const promo_result *issue(void *st, const char *pid, const char *uid, int64_t now) {
    promo_cmd c;
    mk_issue(&c, pid, uid, now);
    return run(st, &c);
}
static const promo_result *redeem(void *st, const char *cid, const char *uid, const char *oid, int64_t amount,
                                  int64_t now) {
    promo_cmd c;
    mk_redeem(&c, cid, uid, oid, amount, now);
    return run(st, &c);
}
static const promo_result *cancel(void *st, const char *cid, const char *oid, int64_t now) {
    promo_cmd c;
    mk_cancel(&c, cid, oid, now);
    return run(st, &c);
}

static const promo_result *control(void *st, cmd_type t, const char *pid, int64_t now) {
    promo_cmd c;
    mk_control(&c, t, pid, now);
    return run(st, &c);
}
static const promo_result *update(void *st, const char *pid, int64_t total, int32_t per_user, int64_t ends,
                                  int64_t until, int64_t now) {
    promo_cmd c;
    mk_update(&c, pid, total, per_user, ends, until, now);
    return run(st, &c);
}

/* Each evaluates its result argument once: it is often a command to run. */
#define assert_ok(r)                                                                                                   \
    do {                                                                                                               \
        const promo_result *r_ = (r);                                                                                  \
        if (r_->status != STATUS_SUCCEEDED) fail_msg("unexpected rejection %s", r_->reason);                           \
        assert_string_equal(r_->reason, "");                                                                           \
    } while (0)
#define assert_rejected(r, code)                                                                                       \
    do {                                                                                                               \
        const promo_result *r_ = (r);                                                                                  \
        assert_int_equal(r_->status, STATUS_REJECTED);                                                                 \
        assert_string_equal(r_->reason, code);                                                                         \
    } while (0)
#define assert_counts(r, iss, rem, ver)                                                                                \
    do {                                                                                                               \
        const promo_result *r_ = (r);                                                                                  \
        assert_true(r_->has_issued);                                                                                   \
        assert_int_equal(r_->issued, iss);                                                                             \
        assert_true(r_->has_remaining);                                                                                \
        assert_int_equal(r_->remaining, rem);                                                                          \
        assert_int_equal(r_->version, ver);                                                                            \
    } while (0)

/* FIXED 1000 off orders of 5000+, 3 coupons, one per user, issued during
 * [T0, T0 + 10 days), valid until T0 + 30 days. */
static coupon_policy_def def_p1(void) {
    return def_make("p1", DISCOUNT_FIXED, 1000, NONE, 5000, 3, 1, T0, T0 + 10 * DAY, T0 + 30 * DAY, NONE);
}

/* ---- fixed rules ---- */

static void test_create_policy(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d = def_p1();
    const promo_result *r = create(st, &d, T0 - DAY);
    assert_ok(r);
    assert_int_equal(r->domain, DOMAIN_COUPON);
    assert_string_equal(r->entity_key, "p1");
    assert_string_equal(r->policy_id, "p1");
    assert_true(r->has_policy);
    assert_string_equal(r->policy.name, "policy p1");
    assert_int_equal(r->policy.discount_value, 1000);
    assert_int_equal(r->policy.total_quantity, 3);
    assert_true(r->policy.has_valid_until);
    assert_int_equal(r->policy.valid_until, T0 + 30 * DAY);
    assert_false(r->policy.has_valid_days);
    assert_counts(r, 0, 3, 1);
    assert_false(r->has_issued_at);

    coupon_policy_def other = d;
    snprintf(other.name, sizeof other.name, "another name");
    r = create(st, &other, T0);
    assert_rejected(r, "ALREADY_EXISTS");
    assert_false(r->has_policy);
    assert_counts(r, 0, 3, 1);

    assert_ok(issue(st, "p1", "u1", T0));
    r = create(st, &d, T0 + 1);
    assert_rejected(r, "ALREADY_EXISTS");
    assert_counts(r, 1, 2, 2);
    assert_int_equal(coupon_ops.entries(st), 2);
    coupon_ops.state_destroy(st);
}

static void test_issue_window_and_expiry(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    const promo_result *r = issue(st, "nope", "u1", T0);
    assert_rejected(r, "NOT_FOUND");
    assert_string_equal(r->policy_id, "nope");
    assert_false(r->has_issued);
    assert_false(r->has_remaining);
    assert_int_equal(r->version, 0);

    coupon_policy_def d = def_p1();
    d.per_user_limit = 5;
    assert_ok(create(st, &d, T0 - DAY));
    r = issue(st, "p1", "u1", T0 - 1);
    assert_rejected(r, "NOT_STARTED");
    assert_counts(r, 0, 3, 1);
    assert_string_equal(r->coupon_id, "");

    r = issue(st, "p1", "u1", T0); /* now == issue_starts_at: open */
    assert_ok(r);
    assert_string_equal(r->coupon_id, "p1:1");
    assert_string_equal(r->coupon_status, "ISSUED");
    assert_string_equal(r->user_id, "u1");
    assert_string_equal(r->policy_id, "p1");
    assert_true(r->has_issued_at);
    assert_int_equal(r->issued_at, T0);
    assert_true(r->has_expires_at);
    assert_int_equal(r->expires_at, T0 + 30 * DAY);
    assert_false(r->has_discount);
    assert_counts(r, 1, 2, 2);

    r = issue(st, "p1", "u1", T0 + 10 * DAY); /* now == issue_ends_at: closed */
    assert_rejected(r, "ENDED");
    assert_counts(r, 1, 2, 2);
    r = issue(st, "p1", "u2", T0 + 10 * DAY - 1);
    assert_ok(r);
    assert_string_equal(r->coupon_id, "p1:2");
    assert_counts(r, 2, 1, 3);

    /* valid_days only: N days after issue. */
    coupon_policy_def dd = def_make("days", DISCOUNT_FIXED, 10, NONE, 0, 10, 10, T0, T0 + DAY, NONE, 7);
    assert_ok(create(st, &dd, T0));
    r = issue(st, "days", "u1", T0 + 5);
    assert_ok(r);
    assert_int_equal(r->expires_at, T0 + 5 + 7 * DAY);
    /* Both set: the earlier wins, either way round. */
    coupon_policy_def b1 = def_make("both1", DISCOUNT_FIXED, 10, NONE, 0, 10, 10, T0, T0 + DAY, T0 + 3 * DAY, 7);
    coupon_policy_def b2 = def_make("both2", DISCOUNT_FIXED, 10, NONE, 0, 10, 10, T0, T0 + DAY, T0 + 30 * DAY, 2);
    assert_ok(create(st, &b1, T0));
    assert_ok(create(st, &b2, T0));
    r = issue(st, "both1", "u1", T0);
    assert_ok(r);
    assert_int_equal(r->expires_at, T0 + 3 * DAY);
    r = issue(st, "both2", "u1", T0 + 1);
    assert_ok(r);
    assert_int_equal(r->expires_at, T0 + 1 + 2 * DAY);
    coupon_ops.state_destroy(st);
}

static void test_issue_limits(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d = def_make("lim", DISCOUNT_FIXED, 100, NONE, 0, 5, 2, T0, T0 + DAY, T0 + 2 * DAY, NONE);
    assert_ok(create(st, &d, T0));
    assert_ok(issue(st, "lim", "u1", T0));
    assert_ok(issue(st, "lim", "u1", T0));
    const promo_result *r = issue(st, "lim", "u1", T0);
    assert_rejected(r, "LIMIT_EXCEEDED");
    assert_counts(r, 2, 3, 3);
    assert_ok(issue(st, "lim", "u2", T0));
    assert_ok(issue(st, "lim", "u2", T0));
    r = issue(st, "lim", "u3", T0);
    assert_ok(r);
    assert_string_equal(r->coupon_id, "lim:5");
    assert_counts(r, 5, 0, 6);
    r = issue(st, "lim", "u3", T0);
    assert_rejected(r, "SOLD_OUT");
    assert_counts(r, 5, 0, 6);
    /* The order of the checks: window, then the user's limit, then stock. */
    assert_rejected(issue(st, "lim", "u1", T0), "LIMIT_EXCEEDED");
    assert_rejected(issue(st, "lim", "u1", T0 + DAY), "ENDED");
    assert_rejected(issue(st, "lim", "u1", T0 - 1), "NOT_STARTED");
    assert_rejected(issue(st, "lim", "u9", T0 - 1), "NOT_STARTED");

    /* Redeeming and cancelling do not give back a user's issue allowance. */
    coupon_policy_def e = def_make("lim2", DISCOUNT_FIXED, 100, NONE, 0, 10, 2, T0, T0 + DAY, T0 + 2 * DAY, NONE);
    assert_ok(create(st, &e, T0));
    assert_ok(issue(st, "lim2", "u1", T0));
    assert_ok(issue(st, "lim2", "u1", T0));
    assert_ok(redeem(st, "lim2:1", "u1", "o1", 500, T0 + 1));
    assert_rejected(issue(st, "lim2", "u1", T0 + 2), "LIMIT_EXCEEDED");
    assert_ok(cancel(st, "lim2:1", "o1", T0 + 3));
    assert_rejected(issue(st, "lim2", "u1", T0 + 4), "LIMIT_EXCEEDED");
    r = issue(st, "lim2", "u2", T0 + 5);
    assert_ok(r);
    assert_string_equal(r->coupon_id, "lim2:3");
    coupon_ops.state_destroy(st);
}

static void test_redeem_rules(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d = def_p1();
    assert_ok(create(st, &d, T0));
    assert_ok(issue(st, "p1", "u1", T0 + 1));
    int64_t exp = T0 + 30 * DAY;

    const promo_result *r = redeem(st, "p9:1", "u1", "o1", 9000, T0 + 2);
    assert_rejected(r, "NOT_FOUND");
    assert_int_equal(r->version, 0);
    assert_false(r->has_issued);
    r = redeem(st, "p1:2", "u1", "o1", 9000, T0 + 2);
    assert_rejected(r, "NOT_FOUND");
    assert_counts(r, 1, 2, 2);
    assert_rejected(redeem(st, "p1:99999999999", "u1", "o1", 9000, T0 + 2), "NOT_FOUND");
    /* Owner, then expiry, then minimum order. */
    assert_rejected(redeem(st, "p1:1", "u2", "o1", 1, exp), "NOT_OWNER");
    assert_rejected(redeem(st, "p1:1", "u1", "o1", 1, exp), "EXPIRED");
    assert_rejected(redeem(st, "p1:1", "u1", "o1", 9000, exp), "EXPIRED"); /* now == expires_at */
    r = redeem(st, "p1:1", "u1", "o1", 4999, exp - 1);
    assert_rejected(r, "MIN_ORDER_NOT_MET");
    assert_counts(r, 1, 2, 2);
    assert_false(r->has_discount);

    r = redeem(st, "p1:1", "u1", "o1", 5000, exp - 1); /* amount == minimum, just before expiry */
    assert_ok(r);
    assert_string_equal(r->coupon_status, "REDEEMED");
    assert_string_equal(r->coupon_id, "p1:1");
    assert_string_equal(r->policy_id, "p1");
    assert_string_equal(r->user_id, "u1");
    assert_string_equal(r->order_id, "o1");
    assert_true(r->has_order_amount);
    assert_int_equal(r->order_amount, 5000);
    assert_true(r->has_discount);
    assert_int_equal(r->discount, 1000);
    assert_int_equal(r->issued_at, T0 + 1);
    assert_int_equal(r->expires_at, exp);
    assert_counts(r, 1, 2, 3);

    assert_rejected(redeem(st, "p1:1", "u1", "o2", 9000, T0 + 3), "ALREADY_REDEEMED");
    assert_rejected(redeem(st, "p1:1", "u1", "o1", 9000, exp + 1), "ALREADY_REDEEMED");
    r = redeem(st, "p1:1", "u2", "o1", 9000, T0 + 3);
    assert_rejected(r, "NOT_OWNER");
    assert_counts(r, 1, 2, 3);
    coupon_ops.state_destroy(st);
}

/* Issues a fresh coupon of pid to a fresh user and redeems it for amount;
 * returns the discount. */
static int64_t discount_of(void *st, const char *pid, int64_t amount) {
    static int n;
    char uid[32], cid[PROMO_COUPON_ID_MAX + 1];
    snprintf(uid, sizeof uid, "d%d", ++n);
    const promo_result *r = issue(st, pid, uid, T0);
    assert_ok(r);
    snprintf(cid, sizeof cid, "%s", r->coupon_id);
    r = redeem(st, cid, uid, "order", amount, T0 + 1);
    assert_ok(r);
    assert_true(r->has_discount);
    return r->discount;
}

static void test_discounts(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    int64_t big = 1000000000000LL; /* the largest order amount cmd_validate allows */
    coupon_policy_def defs[] = {
        def_make("fixed", DISCOUNT_FIXED, 3000, NONE, 0, 100, 100, T0, T0 + DAY, T0 + DAY, NONE),
        def_make("pct", DISCOUNT_PERCENT, 15, NONE, 0, 100, 100, T0, T0 + DAY, T0 + DAY, NONE),
        def_make("capped", DISCOUNT_PERCENT, 15, 1000, 0, 100, 100, T0, T0 + DAY, T0 + DAY, NONE),
        def_make("all", DISCOUNT_PERCENT, 100, NONE, 0, 100, 100, T0, T0 + DAY, T0 + DAY, NONE),
        def_make("odd", DISCOUNT_PERCENT, 37, NONE, 0, 100, 100, T0, T0 + DAY, T0 + DAY, NONE),
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) assert_ok(create(st, &defs[i], T0));

    assert_int_equal(discount_of(st, "fixed", 2000), 2000); /* never above the order */
    assert_int_equal(discount_of(st, "fixed", 3000), 3000);
    assert_int_equal(discount_of(st, "fixed", 5000), 3000);
    assert_int_equal(discount_of(st, "pct", 10001), 1500); /* floor(1500.15) */
    assert_int_equal(discount_of(st, "pct", 99), 14);      /* floor(14.85) */
    assert_int_equal(discount_of(st, "pct", 1), 0);
    assert_int_equal(discount_of(st, "capped", 6000), 900);
    assert_int_equal(discount_of(st, "capped", 6667), 1000); /* 1000.05 -> 1000 */
    assert_int_equal(discount_of(st, "capped", 10000), 1000);
    assert_int_equal(discount_of(st, "capped", big), 1000);
    assert_int_equal(discount_of(st, "all", big), big);
    assert_int_equal(discount_of(st, "all", 7), 7);
    assert_int_equal(discount_of(st, "odd", big - 1), (int64_t)((__int128)(big - 1) * 37 / 100));
    assert_int_equal(discount_of(st, "odd", 99), 36); /* floor(36.63) */
    coupon_ops.state_destroy(st);
}

static void test_cancel_rules(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d = def_p1();
    assert_ok(create(st, &d, T0));
    assert_ok(issue(st, "p1", "u1", T0));
    assert_ok(issue(st, "p1", "u2", T0));
    assert_ok(redeem(st, "p1:1", "u1", "o1", 8000, T0 + 1)); /* version 4 */
    int64_t exp = T0 + 30 * DAY;

    const promo_result *r = cancel(st, "p1:9", "o1", T0 + 2);
    assert_rejected(r, "NOT_FOUND");
    assert_counts(r, 2, 1, 4);
    r = cancel(st, "zz:1", "o1", T0 + 2);
    assert_rejected(r, "NOT_FOUND");
    assert_int_equal(r->version, 0);
    assert_rejected(cancel(st, "p1:2", "o1", T0 + 2), "NOT_REDEEMED");
    r = cancel(st, "p1:1", "o2", T0 + 2);
    assert_rejected(r, "ORDER_MISMATCH");
    assert_counts(r, 2, 1, 4);

    r = cancel(st, "p1:1", "o1", T0 + 2);
    assert_ok(r);
    assert_string_equal(r->coupon_status, "ISSUED");
    assert_string_equal(r->coupon_id, "p1:1");
    assert_string_equal(r->policy_id, "p1");
    assert_string_equal(r->user_id, "u1");
    assert_string_equal(r->order_id, "o1");
    assert_true(r->has_discount);
    assert_int_equal(r->discount, 1000);
    assert_int_equal(r->issued_at, T0);
    assert_int_equal(r->expires_at, exp);
    assert_false(r->has_order_amount);
    assert_counts(r, 2, 1, 5);
    assert_rejected(cancel(st, "p1:1", "o1", T0 + 3), "NOT_REDEEMED");

    /* Restored: usable again, by another order. */
    r = redeem(st, "p1:1", "u1", "o3", 6000, T0 + 4);
    assert_ok(r);
    assert_int_equal(r->discount, 1000);
    /* Cancelled after expiry: ISSUED again but, its expiry unchanged, unusable. */
    r = cancel(st, "p1:1", "o3", exp + 5);
    assert_ok(r);
    assert_string_equal(r->coupon_status, "ISSUED");
    assert_int_equal(r->expires_at, exp);
    assert_rejected(redeem(st, "p1:1", "u1", "o4", 6000, exp + 6), "EXPIRED");
    assert_rejected(redeem(st, "p1:1", "u1", "o4", 6000, exp), "EXPIRED");
    coupon_ops.state_destroy(st);
}

static void test_other_domain_command(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    promo_cmd c;
    cmd_base(&c, CMD_EARN_POINTS, T0);
    snprintf(c.u.earn.user_id, sizeof c.u.earn.user_id, "u1");
    c.u.earn.amount = 5;
    snprintf(c.u.earn.reason, sizeof c.u.earn.reason, "x");
    assert_rejected(run(st, &c), "UNSUPPORTED_COMMAND");
    assert_int_equal(coupon_ops.entries(st), 0);
    coupon_ops.state_destroy(st);
}

static void test_domain_by_name(void **unused) {
    (void)unused;
    assert_ptr_equal(domain_by_name("coupon"), &coupon_ops);
    assert_ptr_equal(domain_by_name("point"), &point_ops);
    assert_ptr_equal(domain_by_name("timesale"), &timesale_ops);
    assert_null(domain_by_name("coupons"));
    assert_null(domain_by_name(""));
    assert_null(domain_by_name(NULL));
    assert_string_equal(coupon_ops.topic, "promo.coupon.cmd");
    assert_int_equal(coupon_ops.schema_id, 1);
}

/* ---- campaign controls (DESIGN.md §4a) ---- */

static void test_pause_resume_close(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d =
        def_make("p1", DISCOUNT_FIXED, 1000, NONE, 5000, 10, 2, T0, T0 + 10 * DAY, T0 + 30 * DAY, NONE);
    const promo_result *r = create(st, &d, T0);
    assert_string_equal(r->state, "ACTIVE");
    assert_rejected(control(st, CMD_PAUSE_COUPON_POLICY, "nope", T0), "NOT_FOUND");
    assert_ok(issue(st, "p1", "u1", T0 + 1));

    r = control(st, CMD_PAUSE_COUPON_POLICY, "p1", T0 + 2);
    assert_ok(r);
    assert_string_equal(r->state, "PAUSED");
    assert_string_equal(r->actor, "key-test");
    assert_true(r->has_policy);
    assert_int_equal(r->policy.total_quantity, 10);
    assert_counts(r, 1, 9, 3);
    /* Pausing again changes nothing, not even the version. */
    r = control(st, CMD_PAUSE_COUPON_POLICY, "p1", T0 + 3);
    assert_ok(r);
    assert_counts(r, 1, 9, 3);

    r = issue(st, "p1", "u2", T0 + 4);
    assert_rejected(r, "PAUSED");
    assert_string_equal(r->state, "PAUSED");
    assert_counts(r, 1, 9, 3);
    /* Coupons already issued are redeemed and cancelled as before. */
    r = redeem(st, "p1:1", "u1", "o1", 8000, T0 + 5);
    assert_ok(r);
    assert_string_equal(r->state, "PAUSED");
    assert_ok(cancel(st, "p1:1", "o1", T0 + 6));

    r = control(st, CMD_RESUME_COUPON_POLICY, "p1", T0 + 7);
    assert_ok(r);
    assert_string_equal(r->state, "ACTIVE");
    assert_ok(issue(st, "p1", "u2", T0 + 8));
    assert_ok(control(st, CMD_RESUME_COUPON_POLICY, "p1", T0 + 9));

    r = control(st, CMD_CLOSE_COUPON_POLICY, "p1", T0 + 10);
    assert_ok(r);
    assert_string_equal(r->state, "CLOSED");
    int64_t v = r->version;
    assert_rejected(issue(st, "p1", "u3", T0 + 11), "CLOSED");
    r = control(st, CMD_RESUME_COUPON_POLICY, "p1", T0 + 12);
    assert_rejected(r, "CLOSED");
    assert_string_equal(r->state, "CLOSED");
    assert_rejected(control(st, CMD_PAUSE_COUPON_POLICY, "p1", T0 + 13), "CLOSED");
    r = control(st, CMD_CLOSE_COUPON_POLICY, "p1", T0 + 14);
    assert_ok(r);
    assert_int_equal(r->version, v);
    assert_rejected(update(st, "p1", 20, NONE, NONE, NONE, T0 + 15), "CLOSED");
    /* Closed, its coupons still work. */
    assert_ok(redeem(st, "p1:2", "u2", "o2", 8000, T0 + 16));
    coupon_ops.state_destroy(st);
}

static void test_update_rules(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d =
        def_make("p1", DISCOUNT_FIXED, 1000, NONE, 5000, 3, 2, T0, T0 + 10 * DAY, T0 + 30 * DAY, NONE);
    assert_ok(create(st, &d, T0));
    assert_rejected(update(st, "nope", 5, NONE, NONE, NONE, T0), "NOT_FOUND");
    assert_ok(issue(st, "p1", "u1", T0));
    assert_ok(issue(st, "p1", "u1", T0));
    assert_rejected(issue(st, "p1", "u1", T0), "LIMIT_EXCEEDED");

    /* Never below what was issued; down to it is fine (sold out). */
    const promo_result *r = update(st, "p1", 1, NONE, NONE, NONE, T0 + 1);
    assert_rejected(r, "BELOW_ISSUED");
    assert_counts(r, 2, 1, 3);
    r = update(st, "p1", 2, NONE, NONE, NONE, T0 + 2);
    assert_ok(r);
    assert_int_equal(r->policy.total_quantity, 2);
    assert_counts(r, 2, 0, 4);
    assert_rejected(issue(st, "p1", "u2", T0 + 3), "SOLD_OUT");
    assert_ok(update(st, "p1", 5, NONE, NONE, NONE, T0 + 4));
    assert_ok(issue(st, "p1", "u2", T0 + 5));

    /* A lower limit keeps what users have and gives them no more. */
    r = update(st, "p1", NONE, 1, NONE, NONE, T0 + 6);
    assert_ok(r);
    assert_int_equal(r->policy.per_user_limit, 1);
    assert_rejected(issue(st, "p1", "u2", T0 + 7), "LIMIT_EXCEEDED");
    assert_ok(issue(st, "p1", "u3", T0 + 7));

    /* Windows against the stored definition. */
    assert_rejected(update(st, "p1", NONE, NONE, T0, NONE, T0 + 8), "INVALID_WINDOW");
    assert_rejected(update(st, "p1", NONE, NONE, T0 + 40 * DAY, NONE, T0 + 8), "INVALID_WINDOW");
    assert_rejected(update(st, "p1", NONE, NONE, NONE, T0 + 9 * DAY, T0 + 8), "INVALID_WINDOW");
    r = update(st, "p1", NONE, NONE, T0 + DAY, NONE, T0 + 9);
    assert_ok(r);
    assert_int_equal(r->policy.issue_ends_at, T0 + DAY);
    assert_rejected(issue(st, "p1", "u4", T0 + DAY), "ENDED");
    assert_ok(update(st, "p1", NONE, NONE, T0 + 20 * DAY, NONE, T0 + 10));

    /* valid_until: coupons issued before keep their expiry. */
    r = update(st, "p1", NONE, NONE, NONE, T0 + 50 * DAY, T0 + 11);
    assert_ok(r);
    assert_int_equal(r->policy.valid_until, T0 + 50 * DAY);
    r = issue(st, "p1", "u5", T0 + 12);
    assert_ok(r);
    assert_int_equal(r->expires_at, T0 + 50 * DAY);
    assert_rejected(redeem(st, "p1:1", "u1", "o1", 9000, T0 + 31 * DAY), "EXPIRED");
    assert_ok(redeem(st, "p1:5", "u5", "o5", 9000, T0 + 31 * DAY));
    /* u5's coupon was issued under the first change: the second takes an
     * era; a third with nothing issued under the second takes none. */
    assert_ok(update(st, "p1", NONE, NONE, NONE, T0 + 60 * DAY, T0 + 13));
    assert_ok(update(st, "p1", NONE, NONE, NONE, T0 + 70 * DAY, T0 + 14));
    assert_ok(update(st, "p1", 100, NONE, NONE, NONE, T0 + 14));
    r = issue(st, "p1", "u6", T0 + 15);
    assert_int_equal(r->expires_at, T0 + 70 * DAY);

    /* Eras are bounded: each change with a coupon issued since takes one. */
    int eras = 2, i = 0;
    for (; i < 200; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "x%d", i);
        assert_ok(update(st, "p1", 10000, NONE, NONE, NONE, T0 + 16));
        assert_ok(issue(st, "p1", uid, T0 + 16));
        r = update(st, "p1", NONE, NONE, NONE, T0 + (71 + i) * DAY, T0 + 17);
        if (r->status == STATUS_REJECTED) break;
        eras++;
    }
    assert_rejected(r, "TOO_MANY_CHANGES");
    assert_int_equal(eras, 64);
    coupon_ops.state_destroy(st);
}

static void test_redemption_counts(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d = def_make("p1", DISCOUNT_PERCENT, 10, NONE, 0, 10, 5, T0, T0 + 10 * DAY, T0 + 30 * DAY, NONE);
    assert_ok(create(st, &d, T0));
    for (int i = 0; i < 3; i++) assert_ok(issue(st, "p1", "u1", T0));
    assert_ok(redeem(st, "p1:1", "u1", "o1", 10000, T0));
    const promo_result *r = redeem(st, "p1:2", "u1", "o2", 25000, T0);
    assert_ok(r);
    assert_int_equal(r->redeemed, 2);
    assert_int_equal(r->discount_total, 3500);
    assert_int_equal(r->cancelled_redemptions, 0);
    r = cancel(st, "p1:1", "o1", T0);
    assert_ok(r);
    assert_int_equal(r->redeemed, 1);
    assert_int_equal(r->discount_total, 2500);
    assert_int_equal(r->cancelled_redemptions, 1);
    r = issue(st, "p1", "u2", T0);
    assert_true(r->has_redeemed && r->has_discount_total && r->has_cancelled_redemptions);
    assert_int_equal(r->discount_total, 2500);
    coupon_ops.state_destroy(st);
}

/* ---- randomized: a reference model and the state read back from dumps ---- */

#define NPOL 3 /* created; a fourth policy id is never created */
#define NUSER 50
#define MAXC 128

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ULL;
}
static int64_t rnd(uint64_t *s, int64_t n) {
    return (int64_t)(rng_next(s) % (uint64_t)n);
}

typedef struct mcoupon {
    int user;
    bool redeemed;
    char order[PROMO_ID_MAX + 1];
    int64_t discount, issued_at, expires_at;
} mcoupon;

typedef struct mpol {
    coupon_policy_def def;
    bool exists;
    int64_t issued, redeemed, version;
    int per_user[NUSER];
    mcoupon c[MAXC];
    int state; /* campaign_state */
    int64_t cancelled, discount_total;
    int n_eras;
    int64_t last_era_upto;
    int32_t max_limit; /* the highest per_user_limit it ever had */
} mpol;

typedef struct model {
    mpol p[NPOL + 1];
} model;

static void model_init(model *m) {
    memset(m, 0, sizeof *m);
    m->p[0].def = def_make("pa", DISCOUNT_FIXED, 2000, NONE, 10000, 40, 1, T0, T0 + 20 * DAY, T0 + 25 * DAY, NONE);
    m->p[1].def = def_make("pb", DISCOUNT_PERCENT, 10, 5000, 0, 100, 3, T0 + DAY, T0 + 30 * DAY, NONE, 5);
    m->p[2].def = def_make("pc", DISCOUNT_PERCENT, 33, NONE, 1000, 60, 2, T0, T0 + 10 * DAY, T0 + 12 * DAY, 3);
    m->p[3].def = def_make("pd", DISCOUNT_FIXED, 1, NONE, 0, 10, 1, T0, T0 + DAY, T0 + DAY, NONE);
    for (int i = 0; i <= NPOL; i++) m->p[i].max_limit = m->p[i].def.per_user_limit;
}

static int model_policy(const model *m, const char *id) {
    for (int i = 0; i <= NPOL; i++)
        if (strcmp(m->p[i].def.policy_id, id) == 0) return i;
    return -1;
}

static int user_index(const char *uid) {
    return atoi(uid + 1);
}

static int64_t model_discount(const coupon_policy_def *d, int64_t amount) {
    __int128 x = d->discount_type == DISCOUNT_FIXED ? d->discount_value : (__int128)amount * d->discount_value / 100;
    if (d->discount_type == DISCOUNT_PERCENT && d->has_max_discount && x > d->max_discount) x = d->max_discount;
    if (x > amount) x = amount;
    return (int64_t)x;
}

static int64_t model_expiry(const coupon_policy_def *d, int64_t now) {
    int64_t e = INT64_MAX;
    if (d->has_valid_days) e = now + d->valid_days * DAY;
    if (d->has_valid_until && d->valid_until < e) e = d->valid_until;
    return e;
}

/* The model's verdict on c: the reason ("" for success), and the model
 * advanced. Then compares with the state machine's result r. */
static void model_step(model *m, const promo_cmd *c, const promo_result *r) {
    const char *why = "";
    mpol *p = NULL;
    mcoupon *k = NULL;
    int64_t serial = 0, discount = -1;
    char pid[PROMO_ID_MAX + 1] = "";
    switch (c->type) {
    case CMD_CREATE_COUPON_POLICY:
        p = &m->p[model_policy(m, c->u.create_policy.policy_id)];
        if (p->exists) {
            why = "ALREADY_EXISTS";
            break;
        }
        p->exists = true;
        p->version = 1;
        break;
    case CMD_ISSUE_COUPON: {
        p = &m->p[model_policy(m, c->u.issue.policy_id)];
        int u = user_index(c->u.issue.user_id);
        if (!p->exists)
            why = "NOT_FOUND";
        else if (p->state == CAMPAIGN_PAUSED)
            why = "PAUSED";
        else if (p->state == CAMPAIGN_CLOSED)
            why = "CLOSED";
        else if (c->submitted_at < p->def.issue_starts_at)
            why = "NOT_STARTED";
        else if (c->submitted_at >= p->def.issue_ends_at)
            why = "ENDED";
        else if (p->per_user[u] >= p->def.per_user_limit)
            why = "LIMIT_EXCEEDED";
        else if (p->issued >= p->def.total_quantity)
            why = "SOLD_OUT";
        if (*why) break;
        k = &p->c[p->issued++];
        serial = p->issued;
        p->per_user[u]++;
        *k = (mcoupon){.user = u, .issued_at = c->submitted_at, .expires_at = model_expiry(&p->def, c->submitted_at)};
        p->version++;
        break;
    }
    case CMD_REDEEM_COUPON:
    case CMD_CANCEL_REDEMPTION: {
        bool is_redeem = c->type == CMD_REDEEM_COUPON;
        const char *cid = is_redeem ? c->u.redeem.coupon_id : c->u.cancel_redemption.coupon_id;
        assert_int_equal(coupon_id_parse(cid, pid, sizeof pid, &serial), 0);
        p = &m->p[model_policy(m, pid)];
        if (!p->exists || serial > p->issued) {
            why = "NOT_FOUND";
            break;
        }
        k = &p->c[serial - 1];
        if (is_redeem) {
            if (k->user != user_index(c->u.redeem.user_id))
                why = "NOT_OWNER";
            else if (k->redeemed)
                why = "ALREADY_REDEEMED";
            else if (c->submitted_at >= k->expires_at)
                why = "EXPIRED";
            else if (c->u.redeem.order_amount < p->def.min_order_amount)
                why = "MIN_ORDER_NOT_MET";
            if (*why) break;
            k->redeemed = true;
            k->discount = discount = model_discount(&p->def, c->u.redeem.order_amount);
            snprintf(k->order, sizeof k->order, "%s", c->u.redeem.order_id);
            p->redeemed++;
            p->discount_total += discount;
        } else {
            if (!k->redeemed)
                why = "NOT_REDEEMED";
            else if (strcmp(k->order, c->u.cancel_redemption.order_id) != 0)
                why = "ORDER_MISMATCH";
            if (*why) break;
            discount = k->discount;
            k->redeemed = false;
            k->order[0] = '\0';
            k->discount = 0;
            p->redeemed--;
            p->cancelled++;
            p->discount_total -= discount;
        }
        p->version++;
        break;
    }
    case CMD_PAUSE_COUPON_POLICY:
    case CMD_RESUME_COUPON_POLICY:
    case CMD_CLOSE_COUPON_POLICY: {
        p = &m->p[model_policy(m, c->u.policy_control.policy_id)];
        int to = c->type == CMD_PAUSE_COUPON_POLICY    ? CAMPAIGN_PAUSED
                 : c->type == CMD_RESUME_COUPON_POLICY ? CAMPAIGN_ACTIVE
                                                       : CAMPAIGN_CLOSED;
        if (!p->exists)
            why = "NOT_FOUND";
        else if (p->state == CAMPAIGN_CLOSED && to != CAMPAIGN_CLOSED)
            why = "CLOSED";
        if (*why) break;
        if (p->state != to) p->version++;
        p->state = to;
        break;
    }
    case CMD_UPDATE_COUPON_POLICY: {
        const coupon_policy_update *u = &c->u.update_policy;
        p = &m->p[model_policy(m, u->policy_id)];
        if (!p->exists) {
            why = "NOT_FOUND";
            break;
        }
        coupon_policy_def d = p->def;
        if (u->has_total_quantity) d.total_quantity = u->total_quantity;
        if (u->has_per_user_limit) d.per_user_limit = u->per_user_limit;
        if (u->has_issue_ends_at) d.issue_ends_at = u->issue_ends_at;
        if (u->has_valid_until) d.has_valid_until = true, d.valid_until = u->valid_until;
        bool changed = d.has_valid_until != p->def.has_valid_until || d.valid_until != p->def.valid_until;
        bool era = changed && p->issued > p->last_era_upto;
        if (p->state == CAMPAIGN_CLOSED)
            why = "CLOSED";
        else if (d.total_quantity < p->issued)
            why = "BELOW_ISSUED";
        else if (d.issue_ends_at <= d.issue_starts_at || (d.has_valid_until && d.valid_until < d.issue_ends_at))
            why = "INVALID_WINDOW";
        else if (era && p->n_eras >= 64)
            why = "TOO_MANY_CHANGES";
        if (*why) break;
        if (era) p->n_eras++, p->last_era_upto = p->issued;
        p->def = d;
        if (d.per_user_limit > p->max_limit) p->max_limit = d.per_user_limit;
        p->version++;
        break;
    }
    default: fail();
    }

    if (strcmp(r->reason, why) != 0)
        fail_msg("%s: model says '%s', state machine '%s'", cmd_type_name(c->type), why, r->reason);
    assert_int_equal(r->status, *why ? STATUS_REJECTED : STATUS_SUCCEEDED);
    if (!p->exists) {
        assert_int_equal(r->version, 0);
        assert_false(r->has_issued);
        return;
    }
    assert_counts(r, p->issued, p->def.total_quantity - p->issued, p->version);
    if (strcmp(r->state, campaign_state_name((campaign_state)p->state)) != 0)
        fail_msg("%s %s: state %s, model %d", cmd_type_name(c->type), why, r->state, p->state);
    assert_int_equal(r->redeemed, p->redeemed);
    assert_int_equal(r->cancelled_redemptions, p->cancelled);
    assert_int_equal(r->discount_total, p->discount_total);
    if (c->type >= CMD_PAUSE_COUPON_POLICY && c->type <= CMD_UPDATE_COUPON_POLICY && !*why) {
        assert_true(r->has_policy);
        assert_int_equal(r->policy.total_quantity, p->def.total_quantity);
        assert_int_equal(r->policy.per_user_limit, p->def.per_user_limit);
        assert_int_equal(r->policy.issue_ends_at, p->def.issue_ends_at);
        assert_int_equal(r->policy.valid_until, p->def.valid_until);
    }
    if (*why || (c->type != CMD_ISSUE_COUPON && c->type != CMD_REDEEM_COUPON && c->type != CMD_CANCEL_REDEMPTION)) {
        assert_string_equal(r->coupon_id, "");
        return;
    }
    char cid[PROMO_COUPON_ID_MAX + 1];
    snprintf(cid, sizeof cid, "%s:%lld", p->def.policy_id, (long long)serial);
    assert_string_equal(r->coupon_id, cid);
    char uid[16];
    snprintf(uid, sizeof uid, "u%d", k->user);
    assert_string_equal(r->user_id, uid);
    assert_string_equal(r->coupon_status, k->redeemed ? "REDEEMED" : "ISSUED");
    assert_int_equal(r->issued_at, k->issued_at);
    assert_int_equal(r->expires_at, k->expires_at);
    assert_int_equal(r->has_discount, discount >= 0);
    if (discount >= 0) assert_int_equal(r->discount, discount);
}

/* A random command, aimed with the model's knowledge (owners, orders, expiry
 * boundaries) so that every outcome happens often. */
static void gen_cmd(uint64_t *s, const model *m, promo_cmd *c) {
    int op = (int)rnd(s, 100);
    int pi = (int)rnd(s, NPOL + 1);
    const mpol *p = &m->p[pi];
    int64_t now;
    int64_t k = rnd(s, 10);
    if (k == 0)
        now = p->def.issue_starts_at - rnd(s, 2);
    else if (k == 1)
        now = p->def.issue_ends_at - rnd(s, 2);
    else if (k == 2 && p->issued > 0)
        now = p->c[rnd(s, p->issued)].expires_at - rnd(s, 2);
    else
        now = T0 - DAY + rnd(s, 45 * DAY);
    char uid[16], oid[PROMO_ID_MAX + 1], cid[PROMO_COUPON_ID_MAX + 1];
    snprintf(uid, sizeof uid, "u%d", (int)rnd(s, NUSER));
    snprintf(oid, sizeof oid, "o%d", (int)rnd(s, 300));
    int64_t serial = 1 + rnd(s, p->issued + 2);
    const mcoupon *mc = serial <= p->issued ? &p->c[serial - 1] : NULL;
    snprintf(cid, sizeof cid, "%s:%lld", p->def.policy_id, (long long)serial);

    int ctl = (int)rnd(s, 1000);
    if (ctl < 12) {
        /* Pauses and resumes often enough to matter; a close rarely, and
         * only of pc (or pd, never created), so pa and pb stay open. */
        cmd_type t = ctl < 5 ? CMD_PAUSE_COUPON_POLICY : ctl < 11 ? CMD_RESUME_COUPON_POLICY : CMD_CLOSE_COUPON_POLICY;
        if (t == CMD_CLOSE_COUPON_POLICY && (rnd(s, 8) != 0 || pi < 2)) t = CMD_RESUME_COUPON_POLICY;
        mk_control(c, t, p->def.policy_id, now);
    } else if (ctl < 20) {
        int64_t total = NONE, ends = NONE, until = NONE;
        int32_t per_user = NONE;
        int what = (int)rnd(s, 4);
        if (what == 0) total = p->issued + rnd(s, 40) - 3 > 0 ? p->issued + rnd(s, 40) - 3 : 1;
        if (total > MAXC) total = MAXC; /* the model holds at most MAXC coupons a policy */
        if (what == 1) per_user = (int32_t)(1 + rnd(s, 4));
        if (what == 2) ends = p->def.issue_starts_at + rnd(s, 30 * DAY) - DAY;
        if (what == 3) until = p->def.issue_ends_at + rnd(s, 20 * DAY) - 2 * DAY;
        if (ends != NONE && ends < 0) ends = 0;
        mk_update(c, p->def.policy_id, total, per_user, ends, until, now);
        if (cmd_validate(c, oid, sizeof oid, cid, sizeof cid) != 0)
            mk_update(c, p->def.policy_id, NONE, 2, NONE, NONE, now);
    } else if (op < 4) {
        mk_create(c, &m->p[pi % NPOL].def, now);
    } else if (op < 55) {
        mk_issue(c, p->def.policy_id, uid, now);
    } else if (op < 85) {
        if (mc && rnd(s, 10) < 8) snprintf(uid, sizeof uid, "u%d", mc->user);
        int64_t a = rnd(s, 10);
        int64_t amount = a == 0   ? (p->def.min_order_amount > 1 ? p->def.min_order_amount - rnd(s, 2) : 1)
                         : a == 1 ? 1 + rnd(s, 1000000000000LL)
                                  : 1 + rnd(s, 60000);
        mk_redeem(c, cid, uid, oid, amount, now);
    } else {
        if (mc && mc->redeemed && rnd(s, 10) < 7) snprintf(oid, sizeof oid, "%s", mc->order);
        mk_cancel(c, cid, oid, now);
    }
}

/* The state as its dumps describe it, decoded independently of coupon.c. */
typedef struct mir_coupon {
    bool present;
    char user[PROMO_ID_MAX + 1];
    uint8_t status;
    int64_t issued_at, expires_at, discount;
    char order[PROMO_ID_MAX + 1];
} mir_coupon;

typedef struct mir_pol {
    bool present;
    coupon_policy_def def;
    int64_t issued, redeemed, version;
    int state;
    int64_t cancelled, n_eras;
    mir_coupon c[MAXC];
} mir_pol;

typedef struct mirror {
    const model *m;
    mir_pol p[NPOL + 1];
    size_t emitted;
} mirror;

static int mirror_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    mirror *mr = ctx;
    char k[128], pid[PROMO_ID_MAX + 1];
    assert_true(key_len < sizeof k);
    assert_non_null(val);
    memcpy(k, key, key_len);
    k[key_len] = '\0';
    bytes_r r;
    bytes_r_init(&r, val, val_len);
    assert_int_equal(bytes_get_u8(&r), strncmp(k, "p:", 2) == 0 ? 2 : 1);
    mr->emitted++;
    if (strncmp(k, "p:", 2) == 0) {
        int i = model_policy(mr->m, k + 2);
        assert_true(i >= 0);
        mir_pol *p = &mr->p[i];
        coupon_policy_def *d = &p->def;
        p->present = true;
        snprintf(d->policy_id, sizeof d->policy_id, "%s", mr->m->p[i].def.policy_id);
        bytes_get_str(&r, d->name, sizeof d->name);
        d->discount_type = bytes_get_u8(&r);
        d->discount_value = bytes_get_i64(&r);
        d->has_max_discount = bytes_get_u8(&r);
        d->max_discount = bytes_get_i64(&r);
        d->min_order_amount = bytes_get_i64(&r);
        d->total_quantity = bytes_get_i64(&r);
        d->per_user_limit = (int32_t)bytes_get_i64(&r);
        d->issue_starts_at = bytes_get_i64(&r);
        d->issue_ends_at = bytes_get_i64(&r);
        d->has_valid_until = bytes_get_u8(&r);
        d->valid_until = bytes_get_i64(&r);
        d->has_valid_days = bytes_get_u8(&r);
        d->valid_days = (int32_t)bytes_get_i64(&r);
        p->issued = bytes_get_i64(&r);
        p->redeemed = bytes_get_i64(&r);
        p->version = bytes_get_i64(&r);
        p->state = bytes_get_u8(&r);
        p->cancelled = bytes_get_i64(&r);
        p->n_eras = bytes_get_i64(&r);
        int64_t prev = 0;
        for (int64_t i = 0; i < p->n_eras; i++) {
            int64_t upto = bytes_get_i64(&r);
            assert_true(upto > prev && upto <= p->issued);
            prev = upto;
            assert_true(bytes_get_u8(&r) <= 1);
            (void)bytes_get_i64(&r);
        }
    } else {
        int64_t serial;
        assert_int_equal(strncmp(k, "c:", 2), 0);
        assert_int_equal(coupon_id_parse(k + 2, pid, sizeof pid, &serial), 0);
        int i = model_policy(mr->m, pid);
        assert_true(i >= 0 && serial >= 1 && serial <= MAXC);
        mir_coupon *c = &mr->p[i].c[serial - 1];
        c->present = true;
        bytes_get_str(&r, c->user, sizeof c->user);
        c->status = bytes_get_u8(&r);
        c->issued_at = bytes_get_i64(&r);
        c->expires_at = bytes_get_i64(&r);
        bytes_get_str(&r, c->order, sizeof c->order);
        c->discount = bytes_get_i64(&r);
    }
    assert_false(r.err);
    assert_true(r.p == r.end);
    return 0;
}

/* The invariants, on the state as dumped, and its agreement with the model. */
static void mirror_check(const mirror *mr) {
    const model *m = mr->m;
    assert_false(mr->p[NPOL].present);
    for (int i = 0; i < NPOL; i++) {
        const mpol *mp = &m->p[i];
        const mir_pol *p = &mr->p[i];
        assert_int_equal(p->present, mp->exists);
        if (!mp->exists) continue;
        assert_string_equal(p->def.name, mp->def.name);
        assert_int_equal(p->def.total_quantity, mp->def.total_quantity);
        assert_true(p->issued >= 0 && p->issued <= p->def.total_quantity);
        assert_int_equal(p->issued, mp->issued);
        assert_int_equal(p->redeemed, mp->redeemed);
        assert_int_equal(p->version, mp->version);
        assert_int_equal(p->state, mp->state);
        assert_int_equal(p->cancelled, mp->cancelled);
        assert_int_equal(p->n_eras, mp->n_eras);
        assert_int_equal(p->def.per_user_limit, mp->def.per_user_limit);
        assert_int_equal(p->def.issue_ends_at, mp->def.issue_ends_at);
        assert_int_equal(p->def.valid_until, mp->def.valid_until);
        int per_user[NUSER] = {0};
        int64_t redeemed = 0;
        for (int s = 0; s < MAXC; s++) {
            const mir_coupon *c = &p->c[s];
            assert_int_equal(c->present, s < p->issued);
            if (!c->present) continue;
            const mcoupon *mc = &mp->c[s];
            int u = user_index(c->user);
            assert_int_equal(u, mc->user);
            per_user[u]++;
            redeemed += c->status == 1;
            assert_int_equal(c->status, mc->redeemed);
            assert_int_equal(c->issued_at, mc->issued_at);
            assert_int_equal(c->expires_at, mc->expires_at);
            assert_string_equal(c->order, mc->order);
            assert_int_equal(c->discount, mc->discount);
        }
        for (int u = 0; u < NUSER; u++) {
            /* A lowered limit leaves users above it with what they had. */
            assert_true(per_user[u] <= mp->max_limit);
            assert_int_equal(per_user[u], mp->per_user[u]);
        }
        assert_int_equal(redeemed, p->redeemed);
    }
}

static void test_randomized(void **unused) {
    (void)unused;
    static model m;
    static mirror mr;
    for (uint64_t seed = 1; seed <= 2; seed++) {
        uint64_t s = 0x9e3779b97f4a7c15ULL * seed;
        model_init(&m);
        memset(&mr, 0, sizeof mr);
        mr.m = &m;
        void *st = coupon_ops.state_new();
        int outcomes[CMD__COUNT][2] = {{0}};
        for (int step = 0; step < 20000; step++) {
            promo_cmd c;
            gen_cmd(&s, &m, &c);
            const promo_result *r = run(st, &c);
            outcomes[c.type][r->status]++;
            model_step(&m, &c, r);
            /* Read back exactly what changed: proves the dirty set complete. */
            assert_int_equal(coupon_ops.dump(st, 0, mirror_emit, &mr), 0);
            mirror_check(&mr);
        }
        /* A full dump says the same as the accumulated deltas. */
        static mirror full;
        memset(&full, 0, sizeof full);
        full.m = &m;
        assert_int_equal(coupon_ops.dump(st, 1, mirror_emit, &full), 0);
        mirror_check(&full);
        assert_int_equal(coupon_ops.entries(st), full.emitted);
        for (int t = 0; t <= CMD_UPDATE_COUPON_POLICY; t++) {
            print_message("seed %llu %-18s succeeded %5d rejected %5d\n", (unsigned long long)seed, cmd_type_name(t),
                          outcomes[t][0], outcomes[t][1]);
            assert_true(outcomes[t][0] > 0 && outcomes[t][1] > 0);
        }
        coupon_ops.state_destroy(st);
    }
}

/* coupon_policy_discount(), which the redeem and the advisory validation
 * share, against the model's wide arithmetic: never above the order or the
 * cap, never negative, over random policies and amounts up to the limits. */
static void test_discount_random(void **unused) {
    (void)unused;
    uint64_t s = 0x5eed5eed5eedULL;
    for (int i = 0; i < 200000; i++) {
        coupon_policy_def d;
        memset(&d, 0, sizeof d);
        d.discount_type = rnd(&s, 2) ? DISCOUNT_PERCENT : DISCOUNT_FIXED;
        d.discount_value = d.discount_type == DISCOUNT_PERCENT ? 1 + rnd(&s, 100) : 1 + rnd(&s, 1000000000000LL);
        d.has_max_discount = rnd(&s, 2);
        d.max_discount = d.has_max_discount ? 1 + rnd(&s, 1000000000000LL) : 0;
        int64_t amount = rnd(&s, 3) ? 1 + rnd(&s, 100000) : 1 + rnd(&s, 1000000000000LL);
        int64_t x = coupon_policy_discount(&d, amount);
        assert_int_equal(x, model_discount(&d, amount));
        assert_true(x >= 0 && x <= amount);
        if (d.has_max_discount && d.discount_type == DISCOUNT_PERCENT) assert_true(x <= d.max_discount);
    }
}

/* ---- checkpoints ---- */

typedef struct entry {
    char *key;
    size_t key_len;
    uint8_t *val;
    size_t val_len;
} entry;

typedef struct entries {
    entry *e;
    size_t n, cap;
} entries;

static int entries_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    entries *es = ctx;
    if (es->n == es->cap) {
        es->cap = es->cap ? es->cap * 2 : 64;
        es->e = realloc(es->e, es->cap * sizeof *es->e);
        assert_non_null(es->e);
    }
    entry *e = &es->e[es->n++];
    e->key = malloc(key_len + 1);
    e->val = malloc(val_len ? val_len : 1);
    assert_true(e->key && e->val);
    memcpy(e->key, key, key_len);
    e->key[key_len] = '\0';
    e->key_len = key_len;
    memcpy(e->val, val, val_len);
    e->val_len = val_len;
    return 0;
}

static void entries_free(entries *es) {
    for (size_t i = 0; i < es->n; i++) {
        free(es->e[i].key);
        free(es->e[i].val);
    }
    free(es->e);
    memset(es, 0, sizeof *es);
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const entry *)a)->key, ((const entry *)b)->key);
}

static void entries_shuffle(entries *es, uint64_t *s) {
    for (size_t i = es->n; i > 1; i--) {
        size_t j = (size_t)rnd(s, (int64_t)i);
        entry t = es->e[i - 1];
        es->e[i - 1] = es->e[j];
        es->e[j] = t;
    }
}

static void entries_load(void *st, entries *es, uint64_t *s) {
    entries_shuffle(es, s);
    for (size_t i = 0; i < es->n; i++)
        assert_int_equal(coupon_ops.load(st, es->e[i].key, es->e[i].key_len, es->e[i].val, es->e[i].val_len), 0);
}

static void dump_sorted(void *st, int all, entries *es) {
    assert_int_equal(coupon_ops.dump(st, all, entries_emit, es), 0);
    qsort(es->e, es->n, sizeof *es->e, entry_cmp);
}

static void assert_same_entries(const entries *ea, const entries *eb) {
    assert_int_equal(ea->n, eb->n);
    for (size_t i = 0; i < ea->n; i++) {
        assert_string_equal(ea->e[i].key, eb->e[i].key);
        assert_int_equal(ea->e[i].val_len, eb->e[i].val_len);
        assert_memory_equal(ea->e[i].val, eb->e[i].val, ea->e[i].val_len);
    }
}

/* The three states dump the same entries (dumping clears their dirty sets). */
static void assert_same_dump(void *a, void *b, void *c, int all) {
    entries ea = {0}, eb = {0}, ec = {0};
    dump_sorted(a, all, &ea);
    dump_sorted(b, all, &eb);
    dump_sorted(c, all, &ec);
    assert_same_entries(&ea, &eb);
    assert_same_entries(&ea, &ec);
    if (!all) assert_true(ea.n > 0);
    entries_free(&ea);
    entries_free(&eb);
    entries_free(&ec);
}

static void steps(void *st, model *m, uint64_t *s, int n) {
    for (int i = 0; i < n; i++) {
        promo_cmd c;
        gen_cmd(s, m, &c);
        model_step(m, &c, run(st, &c));
    }
}

static void test_checkpoint_roundtrip(void **unused) {
    (void)unused;
    static model m;
    static promo_result ra, rb, rc;
    uint64_t s = 0xfeedfacecafebeefULL, shuf = 42;
    model_init(&m);
    void *a = coupon_ops.state_new();

    steps(a, &m, &s, 3000);
    entries full0 = {0}, d1 = {0}, d2 = {0}, full1 = {0};
    assert_int_equal(coupon_ops.dump(a, 1, entries_emit, &full0), 0);
    steps(a, &m, &s, 1500);
    assert_int_equal(coupon_ops.dump(a, 0, entries_emit, &d1), 0);
    steps(a, &m, &s, 1500);
    assert_int_equal(coupon_ops.dump(a, 0, entries_emit, &d2), 0);
    assert_int_equal(coupon_ops.dump(a, 1, entries_emit, &full1), 0);
    assert_true(d1.n > 0 && d1.n < full1.n);

    void *b = coupon_ops.state_new(); /* from the latest full dump */
    entries_load(b, &full1, &shuf);
    void *c = coupon_ops.state_new(); /* from an older full dump and the deltas since */
    entries_load(c, &full0, &shuf);
    entries_load(c, &d1, &shuf);
    entries_load(c, &d2, &shuf);
    /* Loading the same entries again changes nothing (a Redis scan may repeat). */
    entries_load(c, &d2, &shuf);
    assert_int_equal(coupon_ops.entries(b), full1.n);
    assert_int_equal(coupon_ops.entries(c), full1.n);
    assert_same_dump(a, b, c, 1);

    for (int i = 0; i < 1000; i++) {
        promo_cmd cmd;
        gen_cmd(&s, &m, &cmd);
        result_init(&ra, &cmd);
        result_init(&rb, &cmd);
        result_init(&rc, &cmd);
        assert_int_equal(coupon_ops.apply(a, &cmd, cmd.submitted_at, &ra), 0);
        assert_int_equal(coupon_ops.apply(b, &cmd, cmd.submitted_at, &rb), 0);
        assert_int_equal(coupon_ops.apply(c, &cmd, cmd.submitted_at, &rc), 0);
        assert_memory_equal(&ra, &rb, sizeof ra);
        assert_memory_equal(&ra, &rc, sizeof ra);
        model_step(&m, &cmd, &ra);
    }
    /* All three changed the same entries since they were in step. */
    assert_same_dump(a, b, c, 0);
    assert_same_dump(a, b, c, 1);

    entries_free(&full0);
    entries_free(&d1);
    entries_free(&d2);
    entries_free(&full1);
    coupon_ops.state_destroy(a);
    coupon_ops.state_destroy(b);
    coupon_ops.state_destroy(c);
}

/* A coupon restored before its policy waits for it, and still counts toward
 * its owner's limit once the policy arrives. */
static void test_load_coupon_first(void **unused) {
    (void)unused;
    void *a = coupon_ops.state_new();
    coupon_policy_def d = def_p1();
    assert_ok(create(a, &d, T0));
    assert_ok(issue(a, "p1", "u1", T0));
    assert_ok(issue(a, "p1", "u2", T0));
    assert_ok(redeem(a, "p1:2", "u2", "o1", 7000, T0 + 1));
    entries es = {0};
    assert_int_equal(coupon_ops.dump(a, 1, entries_emit, &es), 0);
    qsort(es.e, es.n, sizeof *es.e, entry_cmp); /* "c:..." sorts before "p:..." */
    assert_int_equal(es.n, 3);
    assert_int_equal(es.e[2].key[0], 'p');

    void *b = coupon_ops.state_new();
    for (size_t i = 0; i < es.n; i++) {
        assert_int_equal(coupon_ops.load(b, es.e[i].key, es.e[i].key_len, es.e[i].val, es.e[i].val_len), 0);
        /* Until its policy is loaded, the policy does not exist for commands. */
        if (i == 0) assert_rejected(issue(b, "p1", "u3", T0 + 2), "NOT_FOUND");
    }
    assert_int_equal(coupon_ops.entries(b), 3);
    const promo_result *r = issue(b, "p1", "u1", T0 + 2);
    assert_rejected(r, "LIMIT_EXCEEDED");
    assert_counts(r, 2, 1, 4);
    assert_rejected(redeem(b, "p1:2", "u2", "o2", 7000, T0 + 3), "ALREADY_REDEEMED");
    r = cancel(b, "p1:2", "o1", T0 + 3);
    assert_ok(r);
    assert_int_equal(r->discount, 1000);
    r = issue(b, "p1", "u3", T0 + 4);
    assert_ok(r);
    assert_string_equal(r->coupon_id, "p1:3");
    assert_rejected(issue(b, "p1", "u4", T0 + 4), "SOLD_OUT");
    entries_free(&es);
    coupon_ops.state_destroy(a);
    coupon_ops.state_destroy(b);
}

/* The value of an entry, written field by field. */
static size_t put_policy(uint8_t *out, uint8_t ver, uint8_t type, int64_t value, int64_t per_user, int64_t total,
                         int64_t issued, int64_t redeemed, int64_t version) {
    bytes_w w = {0};
    bytes_put_u8(&w, ver);
    bytes_put_str(&w, "name");
    bytes_put_u8(&w, type);
    bytes_put_i64(&w, value);
    bytes_put_u8(&w, 0);
    bytes_put_i64(&w, 0);
    bytes_put_i64(&w, 0);
    bytes_put_i64(&w, total);
    bytes_put_i64(&w, per_user);
    bytes_put_i64(&w, T0);
    bytes_put_i64(&w, T0 + DAY);
    bytes_put_u8(&w, 1);
    bytes_put_i64(&w, T0 + 2 * DAY);
    bytes_put_u8(&w, 0);
    bytes_put_i64(&w, 0);
    bytes_put_i64(&w, issued);
    bytes_put_i64(&w, redeemed);
    bytes_put_i64(&w, version);
    assert_false(w.err);
    memcpy(out, w.data, w.len);
    size_t n = w.len;
    free(w.data);
    return n;
}

/* Coupons issued at T0; the policy above makes them expire at T0 + 2 days. */
static size_t put_coupon_exp(uint8_t *out, uint8_t ver, const char *user, uint8_t status, const char *order,
                             int64_t discount, int64_t expires_at) {
    bytes_w w = {0};
    bytes_put_u8(&w, ver);
    bytes_put_str(&w, user);
    bytes_put_u8(&w, status);
    bytes_put_i64(&w, T0);
    bytes_put_i64(&w, expires_at);
    bytes_put_str(&w, order);
    bytes_put_i64(&w, discount);
    assert_false(w.err);
    memcpy(out, w.data, w.len);
    size_t n = w.len;
    free(w.data);
    return n;
}

static size_t put_coupon(uint8_t *out, uint8_t ver, const char *user, uint8_t status, const char *order,
                         int64_t discount) {
    return put_coupon_exp(out, ver, user, status, order, discount, T0 + 2 * DAY);
}

static int load_str(void *st, const char *key, const uint8_t *val, size_t len) {
    return coupon_ops.load(st, key, strlen(key), val, len);
}

/* A policy entry written before turn 2 (version 1) loads as an ACTIVE
 * policy with no cancellations and no eras; its discount total comes from
 * the coupons. */
static void test_load_v1_policy(void **unused) {
    (void)unused;
    void *a = coupon_ops.state_new();
    coupon_policy_def d = def_p1();
    assert_ok(create(a, &d, T0));
    assert_ok(issue(a, "p1", "u1", T0));
    assert_ok(redeem(a, "p1:1", "u1", "o1", 7000, T0));
    bytes_w w = {0};
    bytes_put_u8(&w, 1);
    bytes_put_str(&w, d.name);
    bytes_put_u8(&w, (uint8_t)d.discount_type);
    bytes_put_i64(&w, d.discount_value);
    bytes_put_u8(&w, d.has_max_discount);
    bytes_put_i64(&w, d.max_discount);
    bytes_put_i64(&w, d.min_order_amount);
    bytes_put_i64(&w, d.total_quantity);
    bytes_put_i64(&w, d.per_user_limit);
    bytes_put_i64(&w, d.issue_starts_at);
    bytes_put_i64(&w, d.issue_ends_at);
    bytes_put_u8(&w, d.has_valid_until);
    bytes_put_i64(&w, d.valid_until);
    bytes_put_u8(&w, d.has_valid_days);
    bytes_put_i64(&w, d.valid_days);
    bytes_put_i64(&w, 1); /* issued */
    bytes_put_i64(&w, 1); /* redeemed */
    bytes_put_i64(&w, 3); /* version */
    entries es = {0};
    assert_int_equal(coupon_ops.dump(a, 1, entries_emit, &es), 0);
    void *b = coupon_ops.state_new();
    for (size_t i = 0; i < es.n; i++)
        if (es.e[i].key[0] == 'c')
            assert_int_equal(coupon_ops.load(b, es.e[i].key, es.e[i].key_len, es.e[i].val, es.e[i].val_len), 0);
    assert_int_equal(coupon_ops.load(b, "p:p1", 4, w.data, w.len), 0);
    const promo_result *r = issue(b, "p1", "u2", T0 + 1);
    assert_ok(r);
    assert_string_equal(r->state, "ACTIVE");
    assert_int_equal(r->redeemed, 1);
    assert_int_equal(r->discount_total, 1000);
    assert_int_equal(r->cancelled_redemptions, 0);
    assert_int_equal(r->version, 4);
    /* A v1 entry with bytes after its last field is refused. */
    bytes_put_u8(&w, 0);
    void *c = coupon_ops.state_new();
    assert_int_equal(coupon_ops.load(c, "p:p1", 4, w.data, w.len), -1);
    free(w.data);
    entries_free(&es);
    coupon_ops.state_destroy(a);
    coupon_ops.state_destroy(b);
    coupon_ops.state_destroy(c);
}

static void test_load_malformed(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    uint8_t v[512];
    size_t n = put_policy(v, 1, DISCOUNT_FIXED, 100, 2, 10, 2, 1, 3);
    uint8_t cv[256];
    size_t cn = put_coupon(cv, 1, "u1", 0, "", 0);

    /* Keys. */
    assert_int_equal(load_str(st, "", v, n), -1);
    assert_int_equal(load_str(st, "p:", v, n), -1);
    assert_int_equal(load_str(st, "x:p1", v, n), -1);
    assert_int_equal(load_str(st, "p:bad id", v, n), -1);
    assert_int_equal(load_str(st, "p:p1:1", v, n), -1);
    assert_int_equal(coupon_ops.load(st, "p:p1\0x", 6, v, n), -1);
    char longkey[300];
    memset(longkey, 'a', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    longkey[0] = 'p';
    longkey[1] = ':';
    assert_int_equal(load_str(st, longkey, v, n), -1);
    assert_int_equal(load_str(st, "c:p1", cv, cn), -1);
    assert_int_equal(load_str(st, "c:p1:0", cv, cn), -1);
    assert_int_equal(load_str(st, "c:p1:01", cv, cn), -1);
    assert_int_equal(load_str(st, "c:p1:-1", cv, cn), -1);
    assert_int_equal(load_str(st, "c:p1:99999999999", cv, cn), -1);
    assert_int_equal(load_str(st, "c::1", cv, cn), -1);
    assert_int_equal(coupon_ops.load(st, "p:p1", 4, NULL, 0), -1);
    assert_int_equal(coupon_ops.load(st, NULL, 0, v, n), -1);

    /* Policy values: every truncation, trailing bytes, bad fields. */
    for (size_t k = 0; k < n; k++) assert_int_equal(load_str(st, "p:p1", v, k), -1);
    v[n] = 0;
    assert_int_equal(load_str(st, "p:p1", v, n + 1), -1);
    uint8_t b[512];
    size_t bn;
    bn = put_policy(b, 2, DISCOUNT_FIXED, 100, 2, 10, 2, 0, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1); /* unknown version */
    bn = put_policy(b, 1, 2, 100, 2, 10, 2, 0, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1); /* discount type */
    bn = put_policy(b, 1, DISCOUNT_PERCENT, 101, 2, 10, 2, 0, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1); /* percent > 100 */
    bn = put_policy(b, 1, DISCOUNT_FIXED, 100, 0, 10, 2, 0, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1); /* per-user limit */
    bn = put_policy(b, 1, DISCOUNT_FIXED, 100, 1LL << 40, 10, 2, 0, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1);
    bn = put_policy(b, 1, DISCOUNT_FIXED, 100, 2, 10, 11, 0, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1); /* issued > total */
    bn = put_policy(b, 1, DISCOUNT_FIXED, 100, 2, 10, -1, 0, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1);
    bn = put_policy(b, 1, DISCOUNT_FIXED, 100, 2, 10, 2, 3, 3);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1); /* redeemed > issued */
    bn = put_policy(b, 1, DISCOUNT_FIXED, 100, 2, 10, 2, 0, 0);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1); /* version */
    uint8_t overlong[12] = {1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    assert_int_equal(load_str(st, "p:p1", overlong, sizeof overlong), -1);
    assert_int_equal(coupon_ops.entries(st), 0);

    /* Coupon values. */
    for (size_t k = 0; k < cn; k++) assert_int_equal(load_str(st, "c:p1:1", cv, k), -1);
    bn = put_coupon(b, 2, "u1", 0, "", 0);
    assert_int_equal(load_str(st, "c:p1:1", b, bn), -1);
    bn = put_coupon(b, 1, "bad user", 0, "", 0);
    assert_int_equal(load_str(st, "c:p1:1", b, bn), -1);
    bn = put_coupon(b, 1, "", 0, "", 0);
    assert_int_equal(load_str(st, "c:p1:1", b, bn), -1);
    bn = put_coupon(b, 1, "u1", 2, "", 0);
    assert_int_equal(load_str(st, "c:p1:1", b, bn), -1); /* status */
    bn = put_coupon(b, 1, "u1", 1, "", 5);
    assert_int_equal(load_str(st, "c:p1:1", b, bn), -1); /* redeemed without order */
    bn = put_coupon(b, 1, "u1", 1, "o1", -5);
    assert_int_equal(load_str(st, "c:p1:1", b, bn), -1);
    bn = put_coupon(b, 1, "u1", 0, "o1", 0);
    assert_int_equal(load_str(st, "c:p1:1", b, bn), -1); /* issued with an order */
    memcpy(b, cv, cn);
    b[3] = 0; /* an embedded NUL in the user id */
    assert_int_equal(load_str(st, "c:p1:1", b, cn), -1);
    assert_int_equal(coupon_ops.entries(st), 0);

    /* Consistent entries load; a coupon beyond the quantity waits, never
     * placed, for a newer policy entry (a PATCH may have raised it). */
    assert_int_equal(load_str(st, "p:p1", v, n), 0);
    assert_int_equal(load_str(st, "c:p1:1", cv, cn), 0);
    assert_int_equal(load_str(st, "c:p1:11", cv, cn), 0);
    bn = put_coupon_exp(b, 1, "u2", 0, "", 0, T0 + DAY); /* an expiry the policy contradicts */
    assert_int_equal(load_str(st, "c:p1:2", b, bn), -1);
    bn = put_coupon(b, 1, "u2", 1, "o9", 100);
    assert_int_equal(load_str(st, "c:p1:2", b, bn), 0);
    /* A policy entry older than the coupons already placed is refused. */
    bn = put_policy(b, 1, DISCOUNT_FIXED, 100, 2, 10, 1, 0, 2);
    assert_int_equal(load_str(st, "p:p1", b, bn), -1);
    assert_int_equal(coupon_ops.entries(st), 4);
    const promo_result *r = issue(st, "p1", "u1", T0 + 1);
    assert_ok(r);
    assert_string_equal(r->coupon_id, "p1:3");
    assert_counts(r, 3, 7, 4);
    assert_rejected(issue(st, "p1", "u1", T0 + 1), "LIMIT_EXCEEDED");
    assert_ok(cancel(st, "p1:2", "o9", T0 + 2));

    /* A waiting coupon that its policy contradicts fails the policy's load. */
    void *st2 = coupon_ops.state_new();
    bn = put_coupon_exp(b, 1, "u2", 0, "", 0, T0 + DAY);
    assert_int_equal(load_str(st2, "c:p1:1", b, bn), 0);
    assert_int_equal(load_str(st2, "p:p1", v, n), -1);
    coupon_ops.state_destroy(st2);

    /* Random garbage and mutations of valid entries: refused or accepted,
     * never a crash (ASan and UBSan watch this in the sanitizer build). */
    uint64_t s = 7;
    const char *keys[] = {"p:p1", "p:p2", "c:p1:1", "c:p1:4", "c:p2:1", "c:p2:3"};
    for (int i = 0; i < 20000; i++) {
        uint8_t g[96];
        size_t gn;
        if (i % 2) {
            gn = (size_t)rnd(&s, sizeof g);
            for (size_t j = 0; j < gn; j++) g[j] = (uint8_t)rng_next(&s);
        } else {
            bool pol = rnd(&s, 2);
            gn = pol ? n : cn;
            memcpy(g, pol ? v : cv, gn);
            int flips = 1 + (int)rnd(&s, 3);
            for (int f = 0; f < flips; f++) g[rnd(&s, (int64_t)gn)] = (uint8_t)rng_next(&s);
            if (rnd(&s, 4) == 0) gn = (size_t)rnd(&s, (int64_t)gn + 1);
        }
        int rc = load_str(st, keys[rnd(&s, 6)], g, gn);
        assert_true(rc == 0 || rc == -1);
    }
    /* Whatever was accepted, the state still answers commands. */
    for (int i = 0; i < 200; i++) {
        char uid[16], cid[32];
        snprintf(uid, sizeof uid, "u%d", i % 7);
        snprintf(cid, sizeof cid, "p%d:%d", 1 + i % 2, 1 + i % 5);
        issue(st, i % 2 ? "p1" : "p2", uid, T0 + i);
        redeem(st, cid, uid, "o1", 20000, T0 + i);
        cancel(st, cid, "o1", T0 + i);
    }
    entries es = {0};
    assert_int_equal(coupon_ops.dump(st, 1, entries_emit, &es), 0);
    entries_free(&es);
    coupon_ops.state_destroy(st);
}

/* dump() stops at the first failing emit and keeps the dirty set. */
static int emit_fail_after(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    (void)key, (void)key_len, (void)val, (void)val_len;
    int *left = ctx;
    return (*left)-- > 0 ? 0 : 7;
}

static void test_dump_failure_keeps_dirty(void **unused) {
    (void)unused;
    void *st = coupon_ops.state_new();
    coupon_policy_def d = def_p1();
    assert_ok(create(st, &d, T0));
    assert_ok(issue(st, "p1", "u1", T0));
    int left = 1;
    assert_int_equal(coupon_ops.dump(st, 0, emit_fail_after, &left), 7);
    left = 0;
    assert_int_equal(coupon_ops.dump(st, 1, emit_fail_after, &left), 7);
    entries es = {0};
    assert_int_equal(coupon_ops.dump(st, 0, entries_emit, &es), 0);
    assert_int_equal(es.n, 2);
    entries_free(&es);
    assert_int_equal(coupon_ops.dump(st, 0, entries_emit, &es), 0);
    assert_int_equal(es.n, 0);
    /* A coupon changed twice is emitted once. */
    assert_ok(redeem(st, "p1:1", "u1", "o1", 9000, T0 + 1));
    assert_ok(cancel(st, "p1:1", "o1", T0 + 2));
    assert_int_equal(coupon_ops.dump(st, 0, entries_emit, &es), 0);
    assert_int_equal(es.n, 2);
    entries_free(&es);
    coupon_ops.state_destroy(st);
}

/* ---- the stampede: a million coupons of one policy ---- */

static double seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static size_t heap_bytes(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static int count_emit(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    (void)key, (void)key_len, (void)val;
    size_t *bytes = ctx;
    *bytes += val_len;
    return 0;
}

static void test_million_issue(void **unused) {
    (void)unused;
    enum { N = 1000000 };
    char(*users)[16] = malloc(sizeof *users * N);
    assert_non_null(users);
    for (int i = 0; i < N; i++) snprintf(users[i], sizeof users[i], "user%07d", i);
    static promo_cmd c;
    static promo_result r;

    size_t heap0 = heap_bytes();
    void *st = coupon_ops.state_new();
    coupon_policy_def d = def_make("hot", DISCOUNT_PERCENT, 10, 5000, 0, N, 1, T0, T0 + DAY, NONE, 30);
    assert_ok(create(st, &d, T0));
    mk_issue(&c, "hot", "x", T0 + 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        strcpy(c.u.issue.user_id, users[i]);
        result_init(&r, &c);
        if (coupon_ops.apply(st, &c, c.submitted_at, &r) != 0 || r.status != STATUS_SUCCEEDED) fail_msg("issue %d", i);
    }
    double secs = seconds_since(&t0);
    size_t heap = heap_bytes() - heap0;
    print_message("IssueCoupon: %d commands in %.3f s = %.0f commands/s (with result_init)\n", N, secs, N / secs);
    print_message("state holding %d coupons of one policy: %.1f MiB of heap\n", N, (double)heap / (1 << 20));
    assert_string_equal(r.coupon_id, "hot:1000000");
    assert_rejected(issue(st, "hot", "late", T0 + 2), "SOLD_OUT");
    assert_rejected(issue(st, "hot", users[5], T0 + 2), "LIMIT_EXCEEDED");
#ifndef __SANITIZE_ADDRESS__
    assert_true(heap < 80u << 20); /* about 54 MiB: 24 B a coupon, about 30 a user */
#endif

    /* apply() alone, without the runtime's result_init() (4 KiB memset). */
    void *st2 = coupon_ops.state_new();
    assert_ok(create(st2, &d, T0));
    mk_issue(&c, "hot", "x", T0 + 1);
    result_init(&r, &c);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        strcpy(c.u.issue.user_id, users[i]);
        if (coupon_ops.apply(st2, &c, c.submitted_at, &r) != 0 || r.status != STATUS_SUCCEEDED) fail_msg("issue %d", i);
    }
    secs = seconds_since(&t0);
    print_message("IssueCoupon: %d commands in %.3f s = %.0f commands/s (apply alone)\n", N, secs, N / secs);
    coupon_ops.state_destroy(st2);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t bytes = 0;
    assert_int_equal(coupon_ops.dump(st, 0, count_emit, &bytes), 0);
    print_message("dirty dump of %zu entries (%.1f MiB of values) in %.3f s\n", coupon_ops.entries(st),
                  (double)bytes / (1 << 20), seconds_since(&t0));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    coupon_ops.state_destroy(st);
    print_message("destroy in %.3f s\n", seconds_since(&t0));
    free(users);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_policy),
        cmocka_unit_test(test_issue_window_and_expiry),
        cmocka_unit_test(test_issue_limits),
        cmocka_unit_test(test_redeem_rules),
        cmocka_unit_test(test_discounts),
        cmocka_unit_test(test_cancel_rules),
        cmocka_unit_test(test_other_domain_command),
        cmocka_unit_test(test_domain_by_name),
        cmocka_unit_test(test_pause_resume_close),
        cmocka_unit_test(test_update_rules),
        cmocka_unit_test(test_redemption_counts),
        cmocka_unit_test(test_load_v1_policy),
        cmocka_unit_test(test_randomized),
        cmocka_unit_test(test_discount_random),
        cmocka_unit_test(test_checkpoint_roundtrip),
        cmocka_unit_test(test_load_coupon_first),
        cmocka_unit_test(test_load_malformed),
        cmocka_unit_test(test_dump_failure_keeps_dirty),
        cmocka_unit_test(test_million_issue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
