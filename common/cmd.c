/* cmd.c — names, keys, validation and fingerprints of commands; result setup.
 *
 * cmd_validate() is the single statement of the field rules: ingest answers
 * 400 with its field and reason, processors dead-letter a directly published
 * command that breaks them, and the state machines may rely on them. Business
 * rules that depend on state (sold out, balance) are not here: those are
 * results, decided by the domain state machines.
 */
#include "cmd.h"

#include <stdio.h>
#include <string.h>

/* Amounts, prices, quantities and stock are capped well below INT64_MAX so
 * that sums of many of them (balances, sold counts) cannot overflow. */
#define AMOUNT_MAX 1000000000000LL /* 10^12 */
#define VALID_DAYS_MAX 3650

#define HOLD_MS_MIN PROMO_HOLD_MS_MIN
#define HOLD_MS_MAX PROMO_HOLD_MS_MAX

static const char *const type_names[CMD__COUNT] = {
    [CMD_CREATE_COUPON_POLICY] = "CreateCouponPolicy",
    [CMD_ISSUE_COUPON] = "IssueCoupon",
    [CMD_REDEEM_COUPON] = "RedeemCoupon",
    [CMD_CANCEL_REDEMPTION] = "CancelRedemption",
    [CMD_PAUSE_COUPON_POLICY] = "PauseCouponPolicy",
    [CMD_RESUME_COUPON_POLICY] = "ResumeCouponPolicy",
    [CMD_CLOSE_COUPON_POLICY] = "CloseCouponPolicy",
    [CMD_UPDATE_COUPON_POLICY] = "UpdateCouponPolicy",
    [CMD_EARN_POINTS] = "EarnPoints",
    [CMD_USE_POINTS] = "UsePoints",
    [CMD_CANCEL_POINT_USE] = "CancelPointUse",
    [CMD_EARN_PENDING_POINTS] = "EarnPendingPoints",
    [CMD_ADJUST_POINTS] = "AdjustPoints",
    [CMD_RELEASE_POINTS] = "ReleasePoints",
    [CMD_CREATE_TIME_SALE] = "CreateTimeSale",
    [CMD_PLACE_ORDER] = "PlaceOrder",
    [CMD_CANCEL_ORDER] = "CancelOrder",
    [CMD_PAUSE_TIME_SALE] = "PauseTimeSale",
    [CMD_RESUME_TIME_SALE] = "ResumeTimeSale",
    [CMD_CLOSE_TIME_SALE] = "CloseTimeSale",
    [CMD_UPDATE_TIME_SALE] = "UpdateTimeSale",
    [CMD_HOLD_ORDER] = "HoldOrder",
    [CMD_CONFIRM_ORDER] = "ConfirmOrder",
    [CMD_EXPIRE_HOLD] = "ExpireHold",
};

const char *cmd_type_name(cmd_type t) {
    return (t >= 0 && t < CMD__COUNT) ? type_names[t] : "Unknown";
}

int cmd_type_from_name(const char *name) {
    for (int i = 0; i < CMD__COUNT; i++)
        if (strcmp(type_names[i], name) == 0) return i;
    return -1;
}

const char *campaign_state_name(campaign_state s) {
    switch (s) {
    case CAMPAIGN_ACTIVE: return "ACTIVE";
    case CAMPAIGN_PAUSED: return "PAUSED";
    case CAMPAIGN_CLOSED: return "CLOSED";
    }
    return "UNKNOWN";
}

const char *promo_domain_name(promo_domain d) {
    switch (d) {
    case DOMAIN_COUPON: return "COUPON";
    case DOMAIN_POINT: return "POINT";
    case DOMAIN_TIMESALE: return "TIMESALE";
    }
    return "UNKNOWN";
}

const char *ledger_kind_name(ledger_kind k) {
    switch (k) {
    case LEDGER_EARN: return "EARN";
    case LEDGER_USE: return "USE";
    case LEDGER_CANCEL_USE: return "CANCEL_USE";
    case LEDGER_EXPIRE: return "EXPIRE";
    case LEDGER_ADJUST: return "ADJUST";
    }
    return "UNKNOWN";
}

promo_domain cmd_domain(cmd_type t) {
    if (t < CMD_FIRST_POINT) return DOMAIN_COUPON;
    if (t < CMD_FIRST_TIMESALE) return DOMAIN_POINT;
    return DOMAIN_TIMESALE;
}

bool promo_id_valid(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
        if (n >= PROMO_ID_MAX) return false;
    }
    return n > 0;
}

int coupon_id_parse(const char *coupon_id, char *policy_id, size_t policy_id_size, int64_t *serial) {
    const char *colon = strrchr(coupon_id, ':');
    if (!colon) return -1;
    size_t plen = (size_t)(colon - coupon_id);
    if (plen == 0 || plen > PROMO_ID_MAX || plen + 1 > policy_id_size) return -1;
    char buf[PROMO_ID_MAX + 1];
    memcpy(buf, coupon_id, plen);
    buf[plen] = '\0';
    if (!promo_id_valid(buf)) return -1;
    const char *p = colon + 1;
    if (*p < '1' || *p > '9') return -1; /* no sign, no leading zero: one spelling per coupon */
    int64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        if (v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    memcpy(policy_id, buf, plen + 1);
    *serial = v;
    return 0;
}

int cmd_entity_key(const promo_cmd *cmd, char *key, size_t key_size) {
    const char *k = NULL;
    int64_t serial;
    switch (cmd->type) {
    case CMD_CREATE_COUPON_POLICY: k = cmd->u.create_policy.policy_id; break;
    case CMD_ISSUE_COUPON: k = cmd->u.issue.policy_id; break;
    case CMD_REDEEM_COUPON: return coupon_id_parse(cmd->u.redeem.coupon_id, key, key_size, &serial);
    case CMD_CANCEL_REDEMPTION: return coupon_id_parse(cmd->u.cancel_redemption.coupon_id, key, key_size, &serial);
    case CMD_EARN_POINTS: k = cmd->u.earn.user_id; break;
    case CMD_USE_POINTS: k = cmd->u.use.user_id; break;
    case CMD_CANCEL_POINT_USE: k = cmd->u.cancel_use.user_id; break;
    case CMD_EARN_PENDING_POINTS: k = cmd->u.earn_pending.user_id; break;
    case CMD_ADJUST_POINTS: k = cmd->u.adjust.user_id; break;
    case CMD_RELEASE_POINTS: k = cmd->u.release.user_id; break;
    case CMD_CREATE_TIME_SALE: k = cmd->u.create_sale.sale_id; break;
    case CMD_PLACE_ORDER: k = cmd->u.place_order.sale_id; break;
    case CMD_CANCEL_ORDER: k = cmd->u.cancel_order.sale_id; break;
    case CMD_PAUSE_COUPON_POLICY:
    case CMD_RESUME_COUPON_POLICY:
    case CMD_CLOSE_COUPON_POLICY: k = cmd->u.policy_control.policy_id; break;
    case CMD_UPDATE_COUPON_POLICY: k = cmd->u.update_policy.policy_id; break;
    case CMD_PAUSE_TIME_SALE:
    case CMD_RESUME_TIME_SALE:
    case CMD_CLOSE_TIME_SALE: k = cmd->u.sale_control.sale_id; break;
    case CMD_UPDATE_TIME_SALE: k = cmd->u.update_sale.sale_id; break;
    case CMD_HOLD_ORDER: k = cmd->u.hold_order.sale_id; break;
    case CMD_CONFIRM_ORDER:
    case CMD_EXPIRE_HOLD: k = cmd->u.order_ref.sale_id; break;
    default: return -1;
    }
    if (strlen(k) + 1 > key_size) return -1;
    strcpy(key, k);
    return 0;
}

/* Validation helpers: each returns 0 or fills field/why and returns -1. */
typedef struct vctx {
    char *field;
    size_t field_size;
    char *why;
    size_t why_size;
} vctx;

static int fail(vctx *v, const char *field, const char *why) {
    snprintf(v->field, v->field_size, "%s", field);
    snprintf(v->why, v->why_size, "%s", why);
    return -1;
}

static int check_id(vctx *v, const char *field, const char *s) {
    return promo_id_valid(s) ? 0 : fail(v, field, "must match [A-Za-z0-9_.-]{1,64}");
}

static int check_range(vctx *v, const char *field, int64_t x, int64_t lo, int64_t hi) {
    if (x >= lo && x <= hi) return 0;
    char why[96];
    snprintf(why, sizeof why, "must be between %lld and %lld", (long long)lo, (long long)hi);
    return fail(v, field, why);
}

static int check_text(vctx *v, const char *field, const char *s) {
    return *s ? 0 : fail(v, field, "must not be empty");
}

static int check_coupon_id(vctx *v, const char *field, const char *s) {
    char pid[PROMO_ID_MAX + 1];
    int64_t serial;
    return coupon_id_parse(s, pid, sizeof pid, &serial) == 0 ? 0 : fail(v, field, "must be <policy_id>:<serial>");
}

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        if ((x) != 0) return -1;                                                                                       \
    } while (0)

static int validate_policy(vctx *v, const coupon_policy_def *p) {
    TRY(check_id(v, "policy_id", p->policy_id));
    TRY(check_text(v, "name", p->name));
    if (p->discount_type == DISCOUNT_PERCENT)
        TRY(check_range(v, "discount_value", p->discount_value, 1, 100));
    else if (p->discount_type == DISCOUNT_FIXED)
        TRY(check_range(v, "discount_value", p->discount_value, 1, AMOUNT_MAX));
    else
        return fail(v, "discount_type", "must be FIXED or PERCENT");
    if (p->has_max_discount) TRY(check_range(v, "max_discount", p->max_discount, 1, AMOUNT_MAX));
    TRY(check_range(v, "min_order_amount", p->min_order_amount, 0, AMOUNT_MAX));
    TRY(check_range(v, "total_quantity", p->total_quantity, 1, AMOUNT_MAX));
    TRY(check_range(v, "per_user_limit", p->per_user_limit, 1, 1000000));
    TRY(check_range(v, "issue_starts_at", p->issue_starts_at, 0, INT64_MAX / 2));
    TRY(check_range(v, "issue_ends_at", p->issue_ends_at, 0, INT64_MAX / 2));
    if (p->issue_ends_at <= p->issue_starts_at) return fail(v, "issue_ends_at", "must be after issue_starts_at");
    if (!p->has_valid_until && !p->has_valid_days)
        return fail(v, "valid_until", "one of valid_until or valid_days is required");
    if (p->has_valid_until) {
        TRY(check_range(v, "valid_until", p->valid_until, 0, INT64_MAX / 2));
        /* Else a coupon issued late in the window would be born expired,
         * and still count against the quantity. */
        if (p->valid_until < p->issue_ends_at) return fail(v, "valid_until", "must not be before issue_ends_at");
    }
    if (p->has_valid_days) TRY(check_range(v, "valid_days", p->valid_days, 1, VALID_DAYS_MAX));
    return 0;
}

static int validate_sale(vctx *v, const time_sale_def *s) {
    TRY(check_id(v, "sale_id", s->sale_id));
    TRY(check_id(v, "product_id", s->product_id));
    TRY(check_text(v, "name", s->name));
    TRY(check_range(v, "original_price", s->original_price, 0, AMOUNT_MAX));
    TRY(check_range(v, "sale_price", s->sale_price, 0, AMOUNT_MAX));
    if (s->sale_price > s->original_price) return fail(v, "sale_price", "must not exceed original_price");
    TRY(check_range(v, "stock", s->stock, 1, AMOUNT_MAX));
    TRY(check_range(v, "per_user_limit", s->per_user_limit, 1, 1000000));
    TRY(check_range(v, "starts_at", s->starts_at, 0, INT64_MAX / 2));
    TRY(check_range(v, "ends_at", s->ends_at, 0, INT64_MAX / 2));
    if (s->ends_at <= s->starts_at) return fail(v, "ends_at", "must be after starts_at");
    return 0;
}

/* The rules of a PATCH that do not depend on the entity's state: each field
 * in its range, at least one field. Windows against the stored definition
 * are the state machine's (INVALID_WINDOW). */
static int validate_update_policy(vctx *v, const promo_cmd *cmd) {
    const coupon_policy_update *u = &cmd->u.update_policy;
    TRY(check_id(v, "policy_id", u->policy_id));
    if (!u->has_total_quantity && !u->has_per_user_limit && !u->has_issue_ends_at && !u->has_valid_until)
        return fail(v, "total_quantity",
                    "at least one of total_quantity, per_user_limit, issue_ends_at, valid_until is required");
    if (u->has_total_quantity) TRY(check_range(v, "total_quantity", u->total_quantity, 1, AMOUNT_MAX));
    if (u->has_per_user_limit) TRY(check_range(v, "per_user_limit", u->per_user_limit, 1, 1000000));
    if (u->has_issue_ends_at) TRY(check_range(v, "issue_ends_at", u->issue_ends_at, 0, INT64_MAX / 2));
    if (u->has_valid_until) {
        TRY(check_range(v, "valid_until", u->valid_until, 0, INT64_MAX / 2));
        if (u->has_issue_ends_at && u->valid_until < u->issue_ends_at)
            return fail(v, "valid_until", "must not be before issue_ends_at");
    }
    if (u->actor[0]) TRY(check_id(v, "actor", u->actor));
    return 0;
}

static int validate_update_sale(vctx *v, const promo_cmd *cmd) {
    const time_sale_update *u = &cmd->u.update_sale;
    TRY(check_id(v, "sale_id", u->sale_id));
    if (!u->has_stock && !u->has_per_user_limit && !u->has_ends_at && !u->has_hold_ms)
        return fail(v, "stock", "at least one of stock, per_user_limit, ends_at, hold_ms is required");
    if (u->has_stock) TRY(check_range(v, "stock", u->stock, 1, AMOUNT_MAX));
    if (u->has_per_user_limit) TRY(check_range(v, "per_user_limit", u->per_user_limit, 1, 1000000));
    if (u->has_ends_at) TRY(check_range(v, "ends_at", u->ends_at, 0, INT64_MAX / 2));
    if (u->has_hold_ms && u->hold_ms != 0) TRY(check_range(v, "hold_ms", u->hold_ms, HOLD_MS_MIN, HOLD_MS_MAX));
    if (u->actor[0]) TRY(check_id(v, "actor", u->actor));
    return 0;
}

int cmd_validate(const promo_cmd *cmd, char *field, size_t field_size, char *why, size_t why_size) {
    vctx v = {field, field_size, why, why_size};
    vctx *vp = &v;
    TRY(check_id(vp, "request_id", cmd->request_id));
    TRY(check_range(vp, "submitted_at", cmd->submitted_at, 0, INT64_MAX / 2));
    if (cmd->callback_url[0] && strncmp(cmd->callback_url, "http://", 7) != 0 &&
        strncmp(cmd->callback_url, "https://", 8) != 0)
        return fail(vp, "callback_url", "must be an http or https URL");
    if (cmd->client_id[0]) TRY(check_id(vp, "client_id", cmd->client_id));
    switch (cmd->type) {
    case CMD_CREATE_COUPON_POLICY: return validate_policy(vp, &cmd->u.create_policy);
    case CMD_ISSUE_COUPON:
        TRY(check_id(vp, "policy_id", cmd->u.issue.policy_id));
        return check_id(vp, "user_id", cmd->u.issue.user_id);
    case CMD_REDEEM_COUPON:
        TRY(check_coupon_id(vp, "coupon_id", cmd->u.redeem.coupon_id));
        TRY(check_id(vp, "user_id", cmd->u.redeem.user_id));
        TRY(check_id(vp, "order_id", cmd->u.redeem.order_id));
        return check_range(vp, "order_amount", cmd->u.redeem.order_amount, 1, AMOUNT_MAX);
    case CMD_CANCEL_REDEMPTION:
        TRY(check_coupon_id(vp, "coupon_id", cmd->u.cancel_redemption.coupon_id));
        return check_id(vp, "order_id", cmd->u.cancel_redemption.order_id);
    case CMD_EARN_POINTS:
        TRY(check_id(vp, "user_id", cmd->u.earn.user_id));
        TRY(check_range(vp, "amount", cmd->u.earn.amount, 1, AMOUNT_MAX));
        TRY(check_text(vp, "reason", cmd->u.earn.reason));
        if (cmd->u.earn.has_expires_at) TRY(check_range(vp, "expires_at", cmd->u.earn.expires_at, 0, INT64_MAX / 2));
        return 0;
    case CMD_USE_POINTS:
        TRY(check_id(vp, "user_id", cmd->u.use.user_id));
        TRY(check_range(vp, "amount", cmd->u.use.amount, 1, AMOUNT_MAX));
        return check_id(vp, "order_id", cmd->u.use.order_id);
    case CMD_CANCEL_POINT_USE:
        TRY(check_id(vp, "user_id", cmd->u.cancel_use.user_id));
        return check_id(vp, "order_id", cmd->u.cancel_use.order_id);
    case CMD_EARN_PENDING_POINTS:
        TRY(check_id(vp, "user_id", cmd->u.earn_pending.user_id));
        TRY(check_range(vp, "amount", cmd->u.earn_pending.amount, 1, AMOUNT_MAX));
        TRY(check_text(vp, "reason", cmd->u.earn_pending.reason));
        if (cmd->u.earn_pending.has_expires_at)
            TRY(check_range(vp, "expires_at", cmd->u.earn_pending.expires_at, 0, INT64_MAX / 2));
        TRY(check_range(vp, "available_at", cmd->u.earn_pending.available_at, 0, INT64_MAX / 2));
        /* Points that would expire before they could be used. */
        if (cmd->u.earn_pending.has_expires_at && cmd->u.earn_pending.expires_at <= cmd->u.earn_pending.available_at)
            return fail(vp, "expires_at", "must be after available_at");
        return 0;
    case CMD_ADJUST_POINTS:
        TRY(check_id(vp, "user_id", cmd->u.adjust.user_id));
        if (cmd->u.adjust.amount == 0) return fail(vp, "amount", "must not be zero");
        TRY(check_range(vp, "amount", cmd->u.adjust.amount, -AMOUNT_MAX, AMOUNT_MAX));
        TRY(check_text(vp, "reason", cmd->u.adjust.reason));
        return cmd->u.adjust.actor[0] ? check_id(vp, "actor", cmd->u.adjust.actor) : 0;
    case CMD_RELEASE_POINTS: return check_id(vp, "user_id", cmd->u.release.user_id);
    case CMD_CREATE_TIME_SALE: return validate_sale(vp, &cmd->u.create_sale);
    case CMD_PLACE_ORDER:
        TRY(check_id(vp, "sale_id", cmd->u.place_order.sale_id));
        TRY(check_id(vp, "user_id", cmd->u.place_order.user_id));
        TRY(check_range(vp, "quantity", cmd->u.place_order.quantity, 1, 1000000));
        if (cmd->u.place_order.order_id[0]) TRY(check_id(vp, "order_id", cmd->u.place_order.order_id));
        return 0;
    case CMD_CANCEL_ORDER:
        TRY(check_id(vp, "sale_id", cmd->u.cancel_order.sale_id));
        return check_id(vp, "order_id", cmd->u.cancel_order.order_id);
    case CMD_PAUSE_COUPON_POLICY:
    case CMD_RESUME_COUPON_POLICY:
    case CMD_CLOSE_COUPON_POLICY:
        TRY(check_id(vp, "policy_id", cmd->u.policy_control.policy_id));
        return cmd->u.policy_control.actor[0] ? check_id(vp, "actor", cmd->u.policy_control.actor) : 0;
    case CMD_UPDATE_COUPON_POLICY: return validate_update_policy(vp, cmd);
    case CMD_PAUSE_TIME_SALE:
    case CMD_RESUME_TIME_SALE:
    case CMD_CLOSE_TIME_SALE:
        TRY(check_id(vp, "sale_id", cmd->u.sale_control.sale_id));
        return cmd->u.sale_control.actor[0] ? check_id(vp, "actor", cmd->u.sale_control.actor) : 0;
    case CMD_UPDATE_TIME_SALE: return validate_update_sale(vp, cmd);
    case CMD_HOLD_ORDER:
        TRY(check_id(vp, "sale_id", cmd->u.hold_order.sale_id));
        TRY(check_id(vp, "user_id", cmd->u.hold_order.user_id));
        TRY(check_range(vp, "quantity", cmd->u.hold_order.quantity, 1, 1000000));
        if (cmd->u.hold_order.order_id[0]) TRY(check_id(vp, "order_id", cmd->u.hold_order.order_id));
        return check_range(vp, "hold_ms", cmd->u.hold_order.hold_ms, HOLD_MS_MIN, HOLD_MS_MAX);
    case CMD_CONFIRM_ORDER:
    case CMD_EXPIRE_HOLD:
        TRY(check_id(vp, "sale_id", cmd->u.order_ref.sale_id));
        return check_id(vp, "order_id", cmd->u.order_ref.order_id);
    default: return fail(vp, "command", "unknown command type");
    }
}

/* FNV-1a: the fingerprint only has to tell commands under one request id
 * apart, not resist an adversary (a client can only collide with itself). */
typedef struct fnv {
    uint64_t h;
} fnv;

static void fnv_bytes(fnv *f, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        f->h ^= b[i];
        f->h *= 1099511628211ULL;
    }
}
static void fnv_str(fnv *f, const char *s) {
    fnv_bytes(f, s, strlen(s) + 1);
}
static void fnv_i64(fnv *f, int64_t x) {
    fnv_bytes(f, &x, sizeof x);
}
static void fnv_opt(fnv *f, bool has, int64_t x) {
    fnv_i64(f, has);
    fnv_i64(f, has ? x : 0);
}

uint64_t cmd_fingerprint(const promo_cmd *cmd) {
    fnv f = {14695981039346656037ULL};
    fnv_i64(&f, cmd->type);
    switch (cmd->type) {
    case CMD_CREATE_COUPON_POLICY: {
        const coupon_policy_def *p = &cmd->u.create_policy;
        fnv_str(&f, p->policy_id);
        fnv_str(&f, p->name);
        fnv_i64(&f, p->discount_type);
        fnv_i64(&f, p->discount_value);
        fnv_opt(&f, p->has_max_discount, p->max_discount);
        fnv_i64(&f, p->min_order_amount);
        fnv_i64(&f, p->total_quantity);
        fnv_i64(&f, p->per_user_limit);
        fnv_i64(&f, p->issue_starts_at);
        fnv_i64(&f, p->issue_ends_at);
        fnv_opt(&f, p->has_valid_until, p->valid_until);
        fnv_opt(&f, p->has_valid_days, p->valid_days);
        break;
    }
    case CMD_ISSUE_COUPON:
        fnv_str(&f, cmd->u.issue.policy_id);
        fnv_str(&f, cmd->u.issue.user_id);
        break;
    case CMD_REDEEM_COUPON:
        fnv_str(&f, cmd->u.redeem.coupon_id);
        fnv_str(&f, cmd->u.redeem.user_id);
        fnv_str(&f, cmd->u.redeem.order_id);
        fnv_i64(&f, cmd->u.redeem.order_amount);
        break;
    case CMD_CANCEL_REDEMPTION:
        fnv_str(&f, cmd->u.cancel_redemption.coupon_id);
        fnv_str(&f, cmd->u.cancel_redemption.order_id);
        break;
    case CMD_EARN_POINTS:
        fnv_str(&f, cmd->u.earn.user_id);
        fnv_i64(&f, cmd->u.earn.amount);
        fnv_str(&f, cmd->u.earn.reason);
        fnv_opt(&f, cmd->u.earn.has_expires_at, cmd->u.earn.expires_at);
        break;
    case CMD_USE_POINTS:
        fnv_str(&f, cmd->u.use.user_id);
        fnv_i64(&f, cmd->u.use.amount);
        fnv_str(&f, cmd->u.use.order_id);
        break;
    case CMD_CANCEL_POINT_USE:
        fnv_str(&f, cmd->u.cancel_use.user_id);
        fnv_str(&f, cmd->u.cancel_use.order_id);
        break;
    case CMD_EARN_PENDING_POINTS:
        fnv_str(&f, cmd->u.earn_pending.user_id);
        fnv_i64(&f, cmd->u.earn_pending.amount);
        fnv_str(&f, cmd->u.earn_pending.reason);
        fnv_opt(&f, cmd->u.earn_pending.has_expires_at, cmd->u.earn_pending.expires_at);
        fnv_i64(&f, cmd->u.earn_pending.available_at);
        break;
    case CMD_ADJUST_POINTS:
        fnv_str(&f, cmd->u.adjust.user_id);
        fnv_i64(&f, cmd->u.adjust.amount);
        fnv_str(&f, cmd->u.adjust.reason);
        break;
    case CMD_RELEASE_POINTS: fnv_str(&f, cmd->u.release.user_id); break;
    case CMD_CREATE_TIME_SALE: {
        const time_sale_def *s = &cmd->u.create_sale;
        fnv_str(&f, s->sale_id);
        fnv_str(&f, s->product_id);
        fnv_str(&f, s->name);
        fnv_i64(&f, s->original_price);
        fnv_i64(&f, s->sale_price);
        fnv_i64(&f, s->stock);
        fnv_i64(&f, s->per_user_limit);
        fnv_i64(&f, s->starts_at);
        fnv_i64(&f, s->ends_at);
        break;
    }
    case CMD_PLACE_ORDER:
        fnv_str(&f, cmd->u.place_order.sale_id);
        fnv_str(&f, cmd->u.place_order.user_id);
        fnv_i64(&f, cmd->u.place_order.quantity);
        fnv_str(&f, cmd->u.place_order.order_id);
        break;
    case CMD_CANCEL_ORDER:
        fnv_str(&f, cmd->u.cancel_order.sale_id);
        fnv_str(&f, cmd->u.cancel_order.order_id);
        break;
    /* The actor is who asked, not what was asked: like client_id, it is
     * left out, so a retry of a control by another key is a repeat. */
    case CMD_PAUSE_COUPON_POLICY:
    case CMD_RESUME_COUPON_POLICY:
    case CMD_CLOSE_COUPON_POLICY: fnv_str(&f, cmd->u.policy_control.policy_id); break;
    case CMD_UPDATE_COUPON_POLICY: {
        const coupon_policy_update *u = &cmd->u.update_policy;
        fnv_str(&f, u->policy_id);
        fnv_opt(&f, u->has_total_quantity, u->total_quantity);
        fnv_opt(&f, u->has_per_user_limit, u->per_user_limit);
        fnv_opt(&f, u->has_issue_ends_at, u->issue_ends_at);
        fnv_opt(&f, u->has_valid_until, u->valid_until);
        break;
    }
    case CMD_PAUSE_TIME_SALE:
    case CMD_RESUME_TIME_SALE:
    case CMD_CLOSE_TIME_SALE: fnv_str(&f, cmd->u.sale_control.sale_id); break;
    case CMD_UPDATE_TIME_SALE: {
        const time_sale_update *u = &cmd->u.update_sale;
        fnv_str(&f, u->sale_id);
        fnv_opt(&f, u->has_stock, u->stock);
        fnv_opt(&f, u->has_per_user_limit, u->per_user_limit);
        fnv_opt(&f, u->has_ends_at, u->ends_at);
        fnv_opt(&f, u->has_hold_ms, u->hold_ms);
        break;
    }
    case CMD_HOLD_ORDER:
        fnv_str(&f, cmd->u.hold_order.sale_id);
        fnv_str(&f, cmd->u.hold_order.user_id);
        fnv_i64(&f, cmd->u.hold_order.quantity);
        fnv_str(&f, cmd->u.hold_order.order_id);
        fnv_i64(&f, cmd->u.hold_order.hold_ms);
        break;
    case CMD_CONFIRM_ORDER:
    case CMD_EXPIRE_HOLD:
        fnv_str(&f, cmd->u.order_ref.sale_id);
        fnv_str(&f, cmd->u.order_ref.order_id);
        break;
    default: break;
    }
    return f.h;
}

/* The percent form is floor(amount * value / 100) without forming amount *
 * value: with amount = 100q + r it is q * value + floor(r * value / 100),
 * and q * value <= amount because value <= 100. */
int64_t coupon_policy_discount(const coupon_policy_def *d, int64_t amount) {
    int64_t x;
    if (d->discount_type == DISCOUNT_PERCENT) {
        x = amount / 100 * d->discount_value + amount % 100 * d->discount_value / 100;
        if (d->has_max_discount && x > d->max_discount) x = d->max_discount;
    } else {
        x = d->discount_value;
    }
    if (x > amount) x = amount;
    return x < 0 ? 0 : x;
}

void cmd_expire_hold_id(const char *sale_id, const char *order_id, char *out) {
    /* Two FNV-1a runs from different bases over "sale_id\0order_id\0": the
     * id only has to tell the holds of one partition apart. */
    fnv a = {14695981039346656037ULL}, b = {0x84222325cbf29ce4ULL};
    fnv_str(&a, sale_id);
    fnv_str(&a, order_id);
    fnv_str(&b, order_id);
    fnv_str(&b, sale_id);
    snprintf(out, PROMO_ID_MAX + 1, "hold-exp-%016llx%016llx", (unsigned long long)a.h, (unsigned long long)b.h);
}

void cmd_release_points_id(const char *user_id, int64_t available_at, char *out) {
    fnv a = {14695981039346656037ULL}, b = {0x84222325cbf29ce4ULL};
    fnv_str(&a, user_id);
    fnv_i64(&a, available_at);
    fnv_i64(&b, available_at);
    fnv_str(&b, user_id);
    snprintf(out, PROMO_ID_MAX + 1, "points-rel-%016llx%016llx", (unsigned long long)a.h, (unsigned long long)b.h);
}

void result_init(promo_result *res, const promo_cmd *cmd) {
    memset(res, 0, sizeof *res);
    strcpy(res->request_id, cmd->request_id);
    res->domain = cmd_domain(cmd->type);
    res->command_type = cmd->type;
    res->status = STATUS_SUCCEEDED;
    if (cmd_entity_key(cmd, res->entity_key, sizeof res->entity_key) != 0) res->entity_key[0] = '\0';
    res->submitted_at = cmd->submitted_at;
    res->processed_at = cmd->submitted_at;
    strcpy(res->callback_url, cmd->callback_url);
    strcpy(res->client_id, cmd->client_id);
    const char *actor = NULL;
    switch (cmd->type) {
    case CMD_PAUSE_COUPON_POLICY:
    case CMD_RESUME_COUPON_POLICY:
    case CMD_CLOSE_COUPON_POLICY: actor = cmd->u.policy_control.actor; break;
    case CMD_UPDATE_COUPON_POLICY: actor = cmd->u.update_policy.actor; break;
    case CMD_PAUSE_TIME_SALE:
    case CMD_RESUME_TIME_SALE:
    case CMD_CLOSE_TIME_SALE: actor = cmd->u.sale_control.actor; break;
    case CMD_UPDATE_TIME_SALE: actor = cmd->u.update_sale.actor; break;
    case CMD_ADJUST_POINTS: actor = cmd->u.adjust.actor; break;
    default: break;
    }
    if (actor) strcpy(res->actor, actor);
}

void result_reject(promo_result *res, const char *code) {
    res->status = STATUS_REJECTED;
    snprintf(res->reason, sizeof res->reason, "%s", code);
}
