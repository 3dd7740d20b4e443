/* parse.c — routes, request bodies and query values to commands, with no I/O.
 *
 * Two tables carry the HTTP contract of DESIGN.md §4: `routes` (method, path
 * pattern, role) and one field list per command (`*_fields`: the JSON name,
 * its type, whether it is required, and where it lands in promo_cmd). A body
 * is decoded with jansson in strict mode (duplicate keys rejected, a single
 * value, no NUL in strings), then checked against its field list, so adding a
 * field to the contract is one line here. Field rules that do not depend on
 * JSON (ranges, id syntax, windows) stay in cmd_validate(), the one place the
 * processors share.
 */
#include "parse.h"
#include "url.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(parse_error *err, int status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(parse_error *err, int status, const char *code, const char *field, const char *fmt, ...) {
    err->status = status;
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- routes ---- */

typedef struct route_def {
    const char *method;
    const char *pattern; /* "{name}" segments capture a path id named like its JSON field */
    parse_route_id id;
    const char *name;
    parse_role role;
    int cmd; /* the command a write makes; NO_CMD for the rest */
} route_def;

#define NO_CMD (-1)

static const route_def routes[] = {
    {"GET", "/healthz", ROUTE_HEALTHZ, "healthz", ROLE_NONE, NO_CMD},
    {"GET", "/readyz", ROUTE_READYZ, "readyz", ROLE_NONE, NO_CMD},
    {"GET", "/metrics", ROUTE_METRICS, "metrics", ROLE_NONE, NO_CMD},
    {"GET", "/openapi.json", ROUTE_OPENAPI, "openapi", ROLE_NONE, NO_CMD},
    {"GET", "/api/docs", ROUTE_DOCS, "docs", ROLE_NONE, NO_CMD},
    {"GET", "/api/docs/{asset}", ROUTE_DOCS_ASSET, "docs_asset", ROLE_NONE, NO_CMD},
    {"POST", "/v1/coupon-policies", ROUTE_POLICY_CREATE, "policy_create", ROLE_ADMIN, CMD_CREATE_COUPON_POLICY},
    {"POST", "/v1/coupon-policies/{policy_id}/issue", ROUTE_COUPON_ISSUE, "coupon_issue", ROLE_CLIENT,
     CMD_ISSUE_COUPON},
    {"POST", "/v1/coupons/{coupon_id}/redeem", ROUTE_COUPON_REDEEM, "coupon_redeem", ROLE_CLIENT, CMD_REDEEM_COUPON},
    {"POST", "/v1/coupons/{coupon_id}/cancel", ROUTE_COUPON_CANCEL, "coupon_cancel", ROLE_CLIENT,
     CMD_CANCEL_REDEMPTION},
    {"POST", "/v1/points/{user_id}/earn", ROUTE_POINTS_EARN, "points_earn", ROLE_ADMIN, CMD_EARN_POINTS},
    {"POST", "/v1/points/{user_id}/use", ROUTE_POINTS_USE, "points_use", ROLE_CLIENT, CMD_USE_POINTS},
    {"POST", "/v1/points/{user_id}/cancel", ROUTE_POINTS_CANCEL, "points_cancel", ROLE_CLIENT, CMD_CANCEL_POINT_USE},
    {"POST", "/v1/time-sales", ROUTE_SALE_CREATE, "sale_create", ROLE_ADMIN, CMD_CREATE_TIME_SALE},
    {"POST", "/v1/time-sales/{sale_id}/orders", ROUTE_SALE_ORDER, "sale_order", ROLE_CLIENT, CMD_PLACE_ORDER},
    {"POST", "/v1/time-sales/{sale_id}/orders/{order_id}/cancel", ROUTE_SALE_ORDER_CANCEL, "sale_order_cancel",
     ROLE_CLIENT, CMD_CANCEL_ORDER},
    {"GET", "/v1/coupon-policies/{policy_id}", ROUTE_POLICY_GET, "policy_get", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/users/{user_id}/coupons", ROUTE_USER_COUPONS, "user_coupons", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/points/{user_id}", ROUTE_POINTS_GET, "points_get", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/points/{user_id}/history", ROUTE_POINTS_HISTORY, "points_history", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/time-sales/{sale_id}", ROUTE_SALE_GET, "sale_get", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/time-sales/{sale_id}/orders/{order_id}", ROUTE_SALE_ORDER_GET, "sale_order_get", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/requests/{request_id}", ROUTE_REQUEST_GET, "request_get", ROLE_CLIENT, NO_CMD},
    {"POST", "/v1/coupon-policies/{policy_id}/pause", ROUTE_POLICY_PAUSE, "policy_pause", ROLE_ADMIN,
     CMD_PAUSE_COUPON_POLICY},
    {"POST", "/v1/coupon-policies/{policy_id}/resume", ROUTE_POLICY_RESUME, "policy_resume", ROLE_ADMIN,
     CMD_RESUME_COUPON_POLICY},
    {"POST", "/v1/coupon-policies/{policy_id}/close", ROUTE_POLICY_CLOSE, "policy_close", ROLE_ADMIN,
     CMD_CLOSE_COUPON_POLICY},
    {"PATCH", "/v1/coupon-policies/{policy_id}", ROUTE_POLICY_UPDATE, "policy_update", ROLE_ADMIN,
     CMD_UPDATE_COUPON_POLICY},
    {"POST", "/v1/time-sales/{sale_id}/pause", ROUTE_SALE_PAUSE, "sale_pause", ROLE_ADMIN, CMD_PAUSE_TIME_SALE},
    {"POST", "/v1/time-sales/{sale_id}/resume", ROUTE_SALE_RESUME, "sale_resume", ROLE_ADMIN, CMD_RESUME_TIME_SALE},
    {"POST", "/v1/time-sales/{sale_id}/close", ROUTE_SALE_CLOSE, "sale_close", ROLE_ADMIN, CMD_CLOSE_TIME_SALE},
    {"PATCH", "/v1/time-sales/{sale_id}", ROUTE_SALE_UPDATE, "sale_update", ROLE_ADMIN, CMD_UPDATE_TIME_SALE},
    {"POST", "/v1/time-sales/{sale_id}/orders/{order_id}/confirm", ROUTE_SALE_ORDER_CONFIRM, "sale_order_confirm",
     ROLE_CLIENT, CMD_CONFIRM_ORDER},
    {"POST", "/v1/points/{user_id}/adjust", ROUTE_POINTS_ADJUST, "points_adjust", ROLE_ADMIN, CMD_ADJUST_POINTS},
    {"POST", "/v1/coupons/{coupon_id}/validate", ROUTE_COUPON_VALIDATE, "coupon_validate", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/coupon-policies", ROUTE_POLICY_LIST, "policy_list", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/time-sales", ROUTE_SALE_LIST, "sale_list", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/coupon-policies/{policy_id}/stats", ROUTE_POLICY_STATS, "policy_stats", ROLE_CLIENT, NO_CMD},
    {"GET", "/v1/time-sales/{sale_id}/stats", ROUTE_SALE_STATS, "sale_stats", ROLE_CLIENT, NO_CMD},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

size_t parse_route_count(void) {
    return N_ROUTES;
}

void parse_route_at(size_t i, const char **method, const char **pattern) {
    *method = i < N_ROUTES ? routes[i].method : "";
    *pattern = i < N_ROUTES ? routes[i].pattern : "";
}

static const route_def *route_def_of(parse_route_id r) {
    for (size_t i = 0; i < N_ROUTES; i++)
        if (routes[i].id == r) return &routes[i];
    return NULL;
}

const char *parse_route_name(parse_route_id r) {
    const route_def *d = route_def_of(r);
    return d ? d->name : "other";
}

bool parse_route_is_write(parse_route_id r) {
    const route_def *d = route_def_of(r);
    return d && d->cmd != NO_CMD;
}

cmd_type parse_route_cmd(parse_route_id r) {
    const route_def *d = route_def_of(r);
    return d && d->cmd != NO_CMD ? (cmd_type)d->cmd : CMD__COUNT;
}

parse_role parse_route_role(parse_route_id r) {
    const route_def *d = route_def_of(r);
    return d ? d->role : ROLE_CLIENT;
}

/* One capture per "{name}" segment; ids are checked only once the method
 * matches too, so a bad id on a wrong method is 405, not 400. */
typedef struct capture {
    const char *name;
    size_t name_len;
    const char *val;
    size_t val_len;
} capture;

static bool pattern_match(const char *pattern, const char *path, capture caps[2], int *ncaps) {
    const char *p = pattern, *s = path;
    *ncaps = 0;
    while (*p && *s) {
        if (*p != '/' || *s != '/') return false;
        p++, s++;
        size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
        if (plen > 2 && p[0] == '{' && p[plen - 1] == '}') {
            if (slen == 0 || *ncaps == 2) return false;
            caps[*ncaps] = (capture){p + 1, plen - 2, s, slen};
            (*ncaps)++;
        } else if (plen != slen || memcmp(p, s, plen) != 0) {
            return false;
        }
        p += plen, s += slen;
    }
    return *p == '\0' && *s == '\0';
}

int parse_route_match(const char *method, const char *path, parse_route *out, parse_error *err) {
    memset(out, 0, sizeof *out);
    bool path_known = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        capture caps[2];
        int ncaps;
        if (!pattern_match(routes[i].pattern, path, caps, &ncaps)) continue;
        path_known = true;
        if (strcmp(routes[i].method, method) != 0) continue;
        for (int c = 0; c < ncaps; c++) {
            char field[40];
            snprintf(field, sizeof field, "%.*s", (int)caps[c].name_len, caps[c].name);
            char *dst = c == 0 ? out->id1 : out->id2;
            size_t dst_size = c == 0 ? sizeof out->id1 : sizeof out->id2;
            bool ok = caps[c].val_len < dst_size;
            if (ok) {
                memcpy(dst, caps[c].val, caps[c].val_len);
                dst[caps[c].val_len] = '\0';
                if (strcmp(dst, ".") == 0 || strcmp(dst, "..") == 0) {
                    /* Valid as an id, but a dot segment to every URL
                     * library and proxy, which would remove it and send
                     * the request to another path. */
                    dst[0] = '\0';
                    return fail(err, 400, "INVALID_FIELD", field, "%s in the path may not be \".\" or \"..\"", field);
                }
                if (strcmp(field, "coupon_id") == 0) {
                    char pid[PROMO_ID_MAX + 1];
                    int64_t serial;
                    ok = coupon_id_parse(dst, pid, sizeof pid, &serial) == 0;
                } else {
                    ok = promo_id_valid(dst);
                }
            }
            if (!ok) {
                dst[0] = '\0';
                return fail(err, 400, "INVALID_FIELD", field,
                            "%s in the path must match %s as sent, not percent-encoded", field,
                            strcmp(field, "coupon_id") == 0 ? "<policy_id>:<serial>" : "[A-Za-z0-9_.-]{1,64}");
            }
        }
        out->id = routes[i].id;
        return 0;
    }
    if (path_known) return fail(err, 405, "METHOD_NOT_ALLOWED", NULL, "method %s is not allowed here", method);
    return fail(err, 404, "NOT_FOUND", NULL, "no such resource");
}

/* ---- command bodies ---- */

typedef enum { K_ID, K_TEXT, K_LONG, K_INT, K_DISCOUNT_TYPE } field_kind;

#define NO_FLAG ((size_t)-1)

typedef struct field_spec {
    const char *name;
    field_kind kind;
    bool required;
    size_t off;     /* of the value in promo_cmd */
    size_t size;    /* strings: the array's size */
    size_t has_off; /* optional numbers: offset of the has_ flag, or NO_FLAG */
    int64_t dflt;   /* optional numbers without a flag: the value when absent */
} field_spec;

#define OFF(m) offsetof(promo_cmd, u.m)
#define SZ(m) sizeof(((promo_cmd *)0)->u.m)
#define ID(n, m)                                                                                                       \
    { n, K_ID, true, OFF(m), SZ(m), NO_FLAG, 0 }
#define OPT_ID(n, m)                                                                                                   \
    { n, K_ID, false, OFF(m), SZ(m), NO_FLAG, 0 }
#define TEXT(n, m)                                                                                                     \
    { n, K_TEXT, true, OFF(m), SZ(m), NO_FLAG, 0 }
#define LONG(n, m)                                                                                                     \
    { n, K_LONG, true, OFF(m), 0, NO_FLAG, 0 }
#define INT(n, m)                                                                                                      \
    { n, K_INT, true, OFF(m), 0, NO_FLAG, 0 }
#define OPT_LONG(n, m, h)                                                                                              \
    { n, K_LONG, false, OFF(m), 0, OFF(h), 0 }
#define OPT_INT(n, m, h)                                                                                               \
    { n, K_INT, false, OFF(m), 0, OFF(h), 0 }
#define DFLT_LONG(n, m, d)                                                                                             \
    { n, K_LONG, false, OFF(m), 0, NO_FLAG, d }
#define DFLT_INT(n, m, d)                                                                                              \
    { n, K_INT, false, OFF(m), 0, NO_FLAG, d }

/* Optional fields with a default take the value a shop would pick: no
 * minimum order, one coupon or one order line per user. */
static const field_spec policy_fields[] = {
    ID("policy_id", create_policy.policy_id),
    TEXT("name", create_policy.name),
    {"discount_type", K_DISCOUNT_TYPE, true, OFF(create_policy.discount_type), 0, NO_FLAG, 0},
    LONG("discount_value", create_policy.discount_value),
    OPT_LONG("max_discount", create_policy.max_discount, create_policy.has_max_discount),
    DFLT_LONG("min_order_amount", create_policy.min_order_amount, 0),
    LONG("total_quantity", create_policy.total_quantity),
    DFLT_INT("per_user_limit", create_policy.per_user_limit, 1),
    LONG("issue_starts_at", create_policy.issue_starts_at),
    LONG("issue_ends_at", create_policy.issue_ends_at),
    OPT_LONG("valid_until", create_policy.valid_until, create_policy.has_valid_until),
    OPT_INT("valid_days", create_policy.valid_days, create_policy.has_valid_days),
};
static const field_spec issue_fields[] = {ID("user_id", issue.user_id)};
static const field_spec redeem_fields[] = {
    ID("user_id", redeem.user_id),
    ID("order_id", redeem.order_id),
    LONG("order_amount", redeem.order_amount),
};
static const field_spec cancel_redemption_fields[] = {ID("order_id", cancel_redemption.order_id)};
static const field_spec earn_fields[] = {
    LONG("amount", earn.amount),
    TEXT("reason", earn.reason),
    OPT_LONG("expires_at", earn.expires_at, earn.has_expires_at),
};
static const field_spec use_fields[] = {LONG("amount", use.amount), ID("order_id", use.order_id)};
static const field_spec cancel_use_fields[] = {ID("order_id", cancel_use.order_id)};
static const field_spec sale_fields[] = {
    ID("sale_id", create_sale.sale_id),
    ID("product_id", create_sale.product_id),
    TEXT("name", create_sale.name),
    LONG("original_price", create_sale.original_price),
    LONG("sale_price", create_sale.sale_price),
    LONG("stock", create_sale.stock),
    DFLT_INT("per_user_limit", create_sale.per_user_limit, 1),
    LONG("starts_at", create_sale.starts_at),
    LONG("ends_at", create_sale.ends_at),
};
static const field_spec order_fields[] = {
    ID("user_id", place_order.user_id),
    INT("quantity", place_order.quantity),
    OPT_ID("order_id", place_order.order_id),
};

/* An earn that carries available_at is an EarnPendingPoints (parse_cmd()). */
static const field_spec earn_pending_fields[] = {
    LONG("amount", earn_pending.amount),
    TEXT("reason", earn_pending.reason),
    OPT_LONG("expires_at", earn_pending.expires_at, earn_pending.has_expires_at),
    LONG("available_at", earn_pending.available_at),
};
/* A signed amount, not zero (cmd_validate()). */
static const field_spec adjust_fields[] = {
    LONG("amount", adjust.amount),
    TEXT("reason", adjust.reason),
};

/* An order that carries hold_ms is a HoldOrder (parse_cmd()). */
static const field_spec hold_order_fields[] = {
    ID("user_id", hold_order.user_id),
    INT("quantity", hold_order.quantity),
    OPT_ID("order_id", hold_order.order_id),
    LONG("hold_ms", hold_order.hold_ms),
};

/* PATCH: every field optional, at least one present (cmd_validate()). */
static const field_spec update_policy_fields[] = {
    OPT_LONG("total_quantity", update_policy.total_quantity, update_policy.has_total_quantity),
    OPT_INT("per_user_limit", update_policy.per_user_limit, update_policy.has_per_user_limit),
    OPT_LONG("issue_ends_at", update_policy.issue_ends_at, update_policy.has_issue_ends_at),
    OPT_LONG("valid_until", update_policy.valid_until, update_policy.has_valid_until),
};
static const field_spec update_sale_fields[] = {
    OPT_LONG("stock", update_sale.stock, update_sale.has_stock),
    OPT_INT("per_user_limit", update_sale.per_user_limit, update_sale.has_per_user_limit),
    OPT_LONG("ends_at", update_sale.ends_at, update_sale.has_ends_at),
    OPT_LONG("hold_ms", update_sale.hold_ms, update_sale.has_hold_ms),
};

typedef struct cmd_spec {
    const field_spec *fields;
    size_t n;
    /* Where the path ids go (0 = not used by this command). */
    size_t id1_off, id1_size, id2_off, id2_size;
    /* Where the sender's API key label goes (0 = not recorded). */
    size_t actor_off, actor_size;
} cmd_spec;

#define SPEC(f) f, sizeof f / sizeof f[0]
static const cmd_spec cmd_specs[CMD__COUNT] = {
    [CMD_CREATE_COUPON_POLICY] = {SPEC(policy_fields), 0, 0, 0, 0, 0, 0},
    [CMD_ISSUE_COUPON] = {SPEC(issue_fields), OFF(issue.policy_id), SZ(issue.policy_id), 0, 0, 0, 0},
    [CMD_REDEEM_COUPON] = {SPEC(redeem_fields), OFF(redeem.coupon_id), SZ(redeem.coupon_id), 0, 0, 0, 0},
    [CMD_CANCEL_REDEMPTION] = {SPEC(cancel_redemption_fields), OFF(cancel_redemption.coupon_id),
                               SZ(cancel_redemption.coupon_id), 0, 0, 0, 0},
    [CMD_EARN_POINTS] = {SPEC(earn_fields), OFF(earn.user_id), SZ(earn.user_id), 0, 0, 0, 0},
    [CMD_USE_POINTS] = {SPEC(use_fields), OFF(use.user_id), SZ(use.user_id), 0, 0, 0, 0},
    [CMD_CANCEL_POINT_USE] = {SPEC(cancel_use_fields), OFF(cancel_use.user_id), SZ(cancel_use.user_id), 0, 0, 0, 0},
    [CMD_CREATE_TIME_SALE] = {SPEC(sale_fields), 0, 0, 0, 0, 0, 0},
    [CMD_PLACE_ORDER] = {SPEC(order_fields), OFF(place_order.sale_id), SZ(place_order.sale_id), 0, 0, 0, 0},
    [CMD_CANCEL_ORDER] = {NULL, 0, OFF(cancel_order.sale_id), SZ(cancel_order.sale_id), OFF(cancel_order.order_id),
                          SZ(cancel_order.order_id), 0, 0},
#define POLICY_CONTROL                                                                                                 \
    {                                                                                                                  \
        NULL, 0, OFF(policy_control.policy_id), SZ(policy_control.policy_id), 0, 0, OFF(policy_control.actor),         \
            SZ(policy_control.actor)                                                                                   \
    }
#define SALE_CONTROL                                                                                                   \
    {                                                                                                                  \
        NULL, 0, OFF(sale_control.sale_id), SZ(sale_control.sale_id), 0, 0, OFF(sale_control.actor),                   \
            SZ(sale_control.actor)                                                                                     \
    }
    [CMD_PAUSE_COUPON_POLICY] = POLICY_CONTROL,
    [CMD_RESUME_COUPON_POLICY] = POLICY_CONTROL,
    [CMD_CLOSE_COUPON_POLICY] = POLICY_CONTROL,
    [CMD_UPDATE_COUPON_POLICY] = {SPEC(update_policy_fields), OFF(update_policy.policy_id), SZ(update_policy.policy_id),
                                  0, 0, OFF(update_policy.actor), SZ(update_policy.actor)},
    [CMD_PAUSE_TIME_SALE] = SALE_CONTROL,
    [CMD_RESUME_TIME_SALE] = SALE_CONTROL,
    [CMD_CLOSE_TIME_SALE] = SALE_CONTROL,
    [CMD_UPDATE_TIME_SALE] = {SPEC(update_sale_fields), OFF(update_sale.sale_id), SZ(update_sale.sale_id), 0, 0,
                              OFF(update_sale.actor), SZ(update_sale.actor)},
    [CMD_HOLD_ORDER] = {SPEC(hold_order_fields), OFF(hold_order.sale_id), SZ(hold_order.sale_id), 0, 0, 0, 0},
    [CMD_EARN_PENDING_POINTS] = {SPEC(earn_pending_fields), OFF(earn_pending.user_id), SZ(earn_pending.user_id), 0, 0,
                                 0, 0},
    [CMD_ADJUST_POINTS] = {SPEC(adjust_fields), OFF(adjust.user_id), SZ(adjust.user_id), 0, 0, OFF(adjust.actor),
                           SZ(adjust.actor)},
    [CMD_CONFIRM_ORDER] = {NULL, 0, OFF(order_ref.sale_id), SZ(order_ref.sale_id), OFF(order_ref.order_id),
                           SZ(order_ref.order_id), 0, 0},
#undef POLICY_CONTROL
#undef SALE_CONTROL
};

static const char *kind_words(field_kind k) {
    switch (k) {
    case K_ID:
    case K_TEXT: return "a string";
    case K_LONG:
    case K_INT: return "an integer";
    case K_DISCOUNT_TYPE: return "\"FIXED\" or \"PERCENT\"";
    }
    return "a value";
}

/* Copies a path id into the command; the route matcher has checked it. */
static void put_path_id(promo_cmd *cmd, size_t off, size_t size, const char *id) {
    if (size == 0) return;
    snprintf((char *)cmd + off, size, "%s", id);
}

static int set_field(const field_spec *f, json_t *v, promo_cmd *cmd, parse_error *err) {
    char *base = (char *)cmd;
    if (v == NULL || json_is_null(v)) {
        if (f->required) {
            const char *what = v ? "must not be null" : "is required";
            return fail(err, 400, "MISSING_FIELD", f->name, "%s %s", f->name, what);
        }
        if ((f->kind == K_LONG || f->kind == K_INT) && f->has_off == NO_FLAG) {
            if (f->kind == K_LONG)
                *(int64_t *)(base + f->off) = f->dflt;
            else
                *(int32_t *)(base + f->off) = (int32_t)f->dflt;
        }
        return 0; /* strings stay "", flags stay false */
    }
    switch (f->kind) {
    case K_ID:
    case K_TEXT: {
        if (!json_is_string(v)) return fail(err, 400, "INVALID_FIELD", f->name, "%s must be a string", f->name);
        size_t len = json_string_length(v);
        if (len >= f->size) {
            if (f->kind == K_ID)
                return fail(err, 400, "INVALID_FIELD", f->name, "%s must match [A-Za-z0-9_.-]{1,64}", f->name);
            return fail(err, 400, "INVALID_FIELD", f->name, "%s must be at most %zu bytes", f->name, f->size - 1);
        }
        memcpy(base + f->off, json_string_value(v), len + 1);
        if (f->kind == K_ID && !promo_id_valid(base + f->off))
            return fail(err, 400, "INVALID_FIELD", f->name, "%s must match [A-Za-z0-9_.-]{1,64}", f->name);
        return 0;
    }
    case K_LONG:
    case K_INT: {
        if (!json_is_integer(v))
            return fail(err, 400, "INVALID_FIELD", f->name, "%s must be %s", f->name, kind_words(f->kind));
        json_int_t x = json_integer_value(v);
        if (f->kind == K_INT) {
            if (x < INT32_MIN || x > INT32_MAX)
                return fail(err, 400, "INVALID_FIELD", f->name, "%s is out of range", f->name);
            *(int32_t *)(base + f->off) = (int32_t)x;
        } else {
            *(int64_t *)(base + f->off) = (int64_t)x;
        }
        if (f->has_off != NO_FLAG) *(bool *)(base + f->has_off) = true;
        return 0;
    }
    case K_DISCOUNT_TYPE: {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(s, "FIXED") == 0)
            *(discount_type *)(base + f->off) = DISCOUNT_FIXED;
        else if (strcmp(s, "PERCENT") == 0)
            *(discount_type *)(base + f->off) = DISCOUNT_PERCENT;
        else
            return fail(err, 400, "INVALID_FIELD", f->name, "%s must be \"FIXED\" or \"PERCENT\"", f->name);
        return 0;
    }
    }
    return fail(err, 400, "INVALID_FIELD", f->name, "unsupported field");
}

bool parse_content_type_json(const char *ct) {
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t') ct++;
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof want - 1) != 0) return false;
    ct += sizeof want - 1;
    while (*ct == ' ' || *ct == '\t') ct++;
    return *ct == '\0' || *ct == ';';
}

int parse_callback_url(const char *url, const char *allow, char *why, size_t why_size) {
    if (strlen(url) > PROMO_URL_MAX) {
        snprintf(why, why_size, "callback_url must be at most %d bytes", PROMO_URL_MAX);
        return -1;
    }
    /* The dispatcher checks again before every send, with the same rule. */
    char reason[160];
    if (url_allowed(url, allow, reason, sizeof reason) != 0) {
        snprintf(why, why_size, "callback_url: %s", reason);
        return -1;
    }
    return 0;
}

static int check_header_id(const char *v, const char *header, char *dst, size_t dst_size, parse_error *err) {
    if (strlen(v) >= dst_size || !promo_id_valid(v))
        return fail(err, 400, "INVALID_FIELD", header, "%s must match [A-Za-z0-9_.-]{1,64}", header);
    snprintf(dst, dst_size, "%s", v);
    return 0;
}

int parse_cmd(const parse_input *in, promo_cmd *cmd, parse_error *err) {
    memset(cmd, 0, sizeof *cmd);
    if (!in->route || !parse_route_is_write(in->route->id))
        return fail(err, 404, "NOT_FOUND", NULL, "not a write route");
    if (in->body_len > PARSE_BODY_MAX)
        return fail(err, 413, "PAYLOAD_TOO_LARGE", NULL, "body must be at most %d bytes", PARSE_BODY_MAX);
    if (in->body_len > 0 && !parse_content_type_json(in->content_type))
        return fail(err, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type", "Content-Type must be application/json");

    json_t *root = NULL;
    int rc = -1;
    if (in->body_len == 0) {
        root = json_object();
        if (!root) return fail(err, 500, "INTERNAL", NULL, "out of memory");
    } else {
        json_error_t jerr;
        root = json_loadb(in->body, in->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
            return fail(err, 400, "INVALID_JSON", NULL, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                        jerr.text);
        if (!json_is_object(root)) {
            fail(err, 400, "INVALID_JSON", NULL, "body must be a JSON object");
            goto out;
        }
    }

    cmd->type = parse_route_cmd(in->route->id);
    /* An order asking for a checkout hold is another command on the wire. */
    if (cmd->type == CMD_PLACE_ORDER && json_object_get(root, "hold_ms")) cmd->type = CMD_HOLD_ORDER;
    /* So is an earn of points for later. */
    if (cmd->type == CMD_EARN_POINTS && json_object_get(root, "available_at")) cmd->type = CMD_EARN_PENDING_POINTS;
    const cmd_spec *spec = &cmd_specs[cmd->type];

    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        bool known = strcmp(key, "callback_url") == 0;
        for (size_t i = 0; !known && i < spec->n; i++) known = strcmp(key, spec->fields[i].name) == 0;
        if (!known) {
            /* The name is the client's: keep it printable and short in the answer. */
            char shown[64];
            size_t j = 0;
            for (const char *k = key; *k && j < sizeof shown - 1; k++)
                shown[j++] = (*k >= 0x20 && *k < 0x7f) ? *k : '?';
            shown[j] = '\0';
            fail(err, 400, "UNKNOWN_FIELD", shown, "%s is not a field of this request", shown);
            goto out;
        }
    }

    put_path_id(cmd, spec->id1_off, spec->id1_size, in->route->id1);
    put_path_id(cmd, spec->id2_off, spec->id2_size, in->route->id2);
    for (size_t i = 0; i < spec->n; i++)
        if (set_field(&spec->fields[i], json_object_get(root, spec->fields[i].name), cmd, err)) goto out;

    json_t *cb = json_object_get(root, "callback_url");
    if (cb && !json_is_null(cb)) {
        char why[160];
        if (!json_is_string(cb)) {
            fail(err, 400, "INVALID_FIELD", "callback_url", "callback_url must be a string");
            goto out;
        }
        if (json_string_length(cb) > PROMO_URL_MAX ||
            parse_callback_url(json_string_value(cb), in->webhook_allow ? in->webhook_allow : "", why, sizeof why)) {
            if (json_string_length(cb) > PROMO_URL_MAX)
                snprintf(why, sizeof why, "callback_url must be at most %d bytes", PROMO_URL_MAX);
            fail(err, 400, "INVALID_FIELD", "callback_url", "%s", why);
            goto out;
        }
        snprintf(cmd->callback_url, sizeof cmd->callback_url, "%s", json_string_value(cb));
    }

    if (in->idempotency_key) {
        if (check_header_id(in->idempotency_key, "Idempotency-Key", cmd->request_id, sizeof cmd->request_id, err))
            goto out;
    } else if (check_header_id(in->fresh_request_id ? in->fresh_request_id : "", "request_id", cmd->request_id,
                               sizeof cmd->request_id, err)) {
        goto out;
    }
    if (in->client_id && check_header_id(in->client_id, "X-Client-Id", cmd->client_id, sizeof cmd->client_id, err))
        goto out;
    if (spec->actor_size && in->actor) put_path_id(cmd, spec->actor_off, spec->actor_size, in->actor);
    cmd->submitted_at = in->now_ms;

    char field[64], why[160];
    if (cmd_validate(cmd, field, sizeof field, why, sizeof why)) {
        fail(err, 400, "INVALID_FIELD", field, "%s %s", field, why);
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* The validation's fields, read into a redeem's (they are a redeem's). */
static const field_spec validate_fields[] = {
    ID("user_id", redeem.user_id),
    LONG("order_amount", redeem.order_amount),
};

int parse_validate(const char *content_type, const char *body, size_t body_len, char *user_id, int64_t *order_amount,
                   parse_error *err) {
    if (body_len > PARSE_BODY_MAX)
        return fail(err, 413, "PAYLOAD_TOO_LARGE", NULL, "body must be at most %d bytes", PARSE_BODY_MAX);
    if (!parse_content_type_json(content_type))
        return fail(err, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type", "Content-Type must be application/json");
    json_error_t jerr;
    json_t *root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(err, 400, "INVALID_JSON", NULL, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                    jerr.text);
    int rc = -1;
    promo_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    if (!json_is_object(root)) {
        fail(err, 400, "INVALID_JSON", NULL, "body must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "user_id") != 0 && strcmp(key, "order_amount") != 0) {
            char shown[64];
            size_t j = 0;
            for (const char *k = key; *k && j < sizeof shown - 1; k++)
                shown[j++] = (*k >= 0x20 && *k < 0x7f) ? *k : '?';
            shown[j] = '\0';
            fail(err, 400, "UNKNOWN_FIELD", shown, "%s is not a field of this request", shown);
            goto out;
        }
    }
    for (size_t i = 0; i < sizeof validate_fields / sizeof validate_fields[0]; i++)
        if (set_field(&validate_fields[i], json_object_get(root, validate_fields[i].name), &cmd, err)) goto out;
    if (cmd.u.redeem.order_amount < 1 || cmd.u.redeem.order_amount > 1000000000000LL) {
        fail(err, 400, "INVALID_FIELD", "order_amount", "order_amount must be between 1 and 1000000000000");
        goto out;
    }
    memcpy(user_id, cmd.u.redeem.user_id, sizeof cmd.u.redeem.user_id);
    *order_amount = cmd.u.redeem.order_amount;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* ---- query values ---- */

/* Strict decimal: digits only, no sign, no blanks; -1 when not a number or
 * beyond 10^15 (every value we accept is far smaller). */
static long long parse_decimal(const char *s) {
    if (!*s || strlen(s) > 15) return -1;
    long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

int parse_limit(const char *s, int *limit, parse_error *err) {
    *limit = PARSE_LIMIT_DEFAULT;
    if (!s) return 0;
    long long v = parse_decimal(s);
    if (v < 1) return fail(err, 400, "INVALID_FIELD", "limit", "limit must be a positive integer");
    *limit = v > PARSE_LIMIT_MAX ? PARSE_LIMIT_MAX : (int)v;
    return 0;
}

int parse_wait_ms(const char *s, int *wait_ms, parse_error *err) {
    *wait_ms = 0;
    if (!s) return 0;
    long long v = parse_decimal(s);
    if (v < 0) return fail(err, 400, "INVALID_FIELD", "wait_ms", "wait_ms must be a non-negative integer");
    *wait_ms = v > PARSE_WAIT_MAX_MS ? PARSE_WAIT_MAX_MS : (int)v;
    return 0;
}

int parse_coupon_cursor(const char *s, char *out, size_t out_size, parse_error *err) {
    if (out_size) out[0] = '\0';
    if (!s) return 0;
    char pid[PROMO_ID_MAX + 1];
    int64_t serial;
    if (strlen(s) >= out_size || coupon_id_parse(s, pid, sizeof pid, &serial) != 0)
        return fail(err, 400, "INVALID_FIELD", "cursor", "cursor is not one this API returned");
    snprintf(out, out_size, "%s", s);
    return 0;
}

int parse_seq_cursor(const char *s, int64_t *seq, parse_error *err) {
    *seq = 0;
    if (!s) return 0;
    long long v = parse_decimal(s);
    if (v < 1) return fail(err, 400, "INVALID_FIELD", "cursor", "cursor is not one this API returned");
    *seq = v;
    return 0;
}

int parse_id_cursor(const char *s, char *out, parse_error *err) {
    out[0] = '\0';
    if (!s) return 0;
    if (strlen(s) > PROMO_ID_MAX || !promo_id_valid(s))
        return fail(err, 400, "INVALID_FIELD", "cursor", "cursor is not one this API returned");
    snprintf(out, PROMO_ID_MAX + 1, "%s", s);
    return 0;
}

int parse_state(const char *s, char *out, parse_error *err) {
    out[0] = '\0';
    if (!s) return 0;
    if (strcmp(s, "ACTIVE") != 0 && strcmp(s, "PAUSED") != 0 && strcmp(s, "CLOSED") != 0)
        return fail(err, 400, "INVALID_FIELD", "state", "state must be ACTIVE, PAUSED or CLOSED");
    snprintf(out, 8, "%s", s);
    return 0;
}
