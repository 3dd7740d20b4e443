/* codec.c — commands, results and dead letters to and from the Confluent wire
 * format, over Avro-C.
 *
 * Each codec parses the five embedded schemas once and keeps one Avro-C
 * generic value per schema, reused by every call, so a call allocates almost
 * nothing. The mapping between our structs and the Avro records is a set of
 * tables (field name, kind, offset in the struct); codec_new() checks every
 * table against the parsed schema, field by field, so the schemas and the
 * structs cannot drift apart silently: a mismatch fails at start-up.
 *
 * Decoding is two passes. Avro-C 1.11.1 cannot be handed hostile bytes: a
 * negative string or bytes length makes it malloc(SIZE_MAX) or malloc(0) and
 * then write before the buffer, a huge length allocates gigabytes before it
 * notices the input is short, a truncated string leaks its buffer, enum
 * indexes are not range-checked and trailing bytes go unnoticed (all seen with
 * a probe under ASan). So the bytes are first walked against a compiled copy
 * of the schema by a small bounded validator (plan_check), which accepts only
 * what Avro-C will read without error and without allocating more than the
 * input's size; only then does avro_value_read() run, and the struct is filled
 * from the generic value with every string length and count checked against
 * the struct's limits. Strings must also be valid UTF-8 without NUL bytes, so
 * that what we pass on is a C string and valid JSON text.
 *
 * Measured with test-codec's speed test (-O2, one core of the dev machine,
 * rates vary by about 30% between runs): IssueCoupon encode 2-4M/s, decode
 * 1.1-2.2M/s; the Result of an issue encode ~850k/s, decode ~500k/s; a Result
 * with every field, policy, sale and two ledger entries encode ~400k/s, decode
 * ~200k/s. Decoding costs about twice encoding: the validator pass, and
 * Avro-C's reader allocating every string it reads.
 */
#include "codec.h"

#include <avro.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Generated from the schemas/ files by tools/embed.sh (build/gen/schemas.c). */
extern const char schema_coupon_command[], schema_point_command[], schema_timesale_command[], schema_result[],
    schema_dead_letter[];

#define CODEC_HEADER 5    /* magic byte + 4-byte schema id */
#define CODEC_N_SCHEMAS 6 /* indexed by schema id; 0 unused */

const char *codec_err_code(codec_err e) {
    switch (e) {
    case CODEC_OK: return "OK";
    case CODEC_ERR_FRAMING: return "BAD_FRAMING";
    case CODEC_ERR_SCHEMA: return "UNKNOWN_SCHEMA";
    case CODEC_ERR_AVRO: return "BAD_AVRO";
    case CODEC_ERR_FIELD: return "INVALID_FIELD";
    case CODEC_ERR_INTERNAL: return "INTERNAL";
    }
    return "INTERNAL";
}

static int fail(char *errstr, size_t errstr_size, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *errstr, size_t errstr_size, int code, const char *fmt, ...) {
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- The bounded validator ------------------------------------------------
 *
 * A plan is the schema reduced to what walking its binary encoding needs. It
 * is built once per schema; our schemas have no recursive types, so the walk's
 * depth is the schema's, whatever the input. */

typedef enum { PN_NULL, PN_INT, PN_LONG, PN_STRING, PN_BYTES, PN_ENUM, PN_RECORD, PN_UNION, PN_ARRAY } plan_kind;

typedef struct plan {
    plan_kind kind;
    size_t n;            /* enum symbols, record fields, union branches */
    size_t max_items;    /* arrays: more items is CODEC_ERR_FIELD */
    const char *field;   /* the record field this node belongs to, for messages */
    struct plan **child; /* record fields, union branches, array items (child[0]) */
} plan;

static void plan_free(plan *p) {
    if (!p) return;
    for (size_t i = 0; p->child && i < (p->kind == PN_ARRAY ? 1 : p->n); i++) plan_free(p->child[i]);
    free(p->child);
    free(p);
}

static plan *plan_compile(avro_schema_t s, const char *field, char *errstr, size_t errstr_size) {
    plan *p = calloc(1, sizeof *p);
    if (!p) goto oom;
    p->field = field;
    p->max_items = SIZE_MAX;
    switch (avro_typeof(s)) {
    case AVRO_NULL: p->kind = PN_NULL; return p;
    case AVRO_INT32: p->kind = PN_INT; return p;
    case AVRO_INT64: p->kind = PN_LONG; return p;
    case AVRO_STRING: p->kind = PN_STRING; return p;
    case AVRO_BYTES: p->kind = PN_BYTES; return p;
    case AVRO_ENUM:
        p->kind = PN_ENUM;
        p->n = (size_t)avro_schema_enum_number_of_symbols(s);
        return p;
    case AVRO_RECORD:
    case AVRO_UNION: {
        bool rec = avro_typeof(s) == AVRO_RECORD;
        p->kind = rec ? PN_RECORD : PN_UNION;
        size_t n = rec ? avro_schema_record_size(s) : avro_schema_union_size(s);
        p->child = calloc(n ? n : 1, sizeof *p->child);
        if (!p->child) goto oom;
        p->n = n;
        for (size_t i = 0; i < n; i++) {
            avro_schema_t cs =
                rec ? avro_schema_record_field_get_by_index(s, (int)i) : avro_schema_union_branch(s, (int)i);
            const char *cf = rec ? avro_schema_record_field_name(s, (int)i) : field;
            if (!(p->child[i] = plan_compile(cs, cf, errstr, errstr_size))) goto fail;
        }
        return p;
    }
    case AVRO_ARRAY:
        p->kind = PN_ARRAY;
        p->child = calloc(1, sizeof *p->child);
        if (!p->child) goto oom;
        if (!(p->child[0] = plan_compile(avro_schema_array_items(s), field, errstr, errstr_size))) goto fail;
        return p;
    default:
        /* Not used by our schemas; supporting a type means teaching plan_check it. */
        fail(errstr, errstr_size, 0, "schema field %s: type %d is not supported by the codec", field ? field : "?",
             (int)avro_typeof(s));
        goto fail;
    }
oom:
    fail(errstr, errstr_size, 0, "out of memory");
fail:
    plan_free(p);
    return NULL;
}

typedef struct cursor {
    const uint8_t *p, *end;
    char *errstr;
    size_t errstr_size;
} cursor;

/* A zigzag varint of at most 64 bits (ten bytes, the last one 0 or 1): what
 * Avro-C's read_long accepts, minus the overlong forms it silently wraps. */
static int cur_long(cursor *c, int64_t *out) {
    uint64_t u = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->p == c->end) return -1;
        uint8_t b = *c->p++;
        if (shift == 63 && b > 1) return -1;
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
            return 0;
        }
    }
    return -1;
}

static int plan_bad(cursor *c, const plan *p, const char *what) {
    return fail(c->errstr, c->errstr_size, CODEC_ERR_AVRO, "%s%s%s", p->field ? p->field : "", p->field ? ": " : "",
                what);
}

static int plan_check(const plan *p, cursor *c) {
    int64_t x;
    switch (p->kind) {
    case PN_NULL: return 0;
    case PN_INT:
        if (cur_long(c, &x) != 0) return plan_bad(c, p, "truncated or overlong varint");
        if (x < INT32_MIN || x > INT32_MAX) return plan_bad(c, p, "int out of range");
        return 0;
    case PN_LONG:
        if (cur_long(c, &x) != 0) return plan_bad(c, p, "truncated or overlong varint");
        return 0;
    case PN_STRING:
    case PN_BYTES:
        if (cur_long(c, &x) != 0) return plan_bad(c, p, "truncated or overlong length");
        if (x < 0) return plan_bad(c, p, "negative length");
        if ((uint64_t)x > (uint64_t)(c->end - c->p)) return plan_bad(c, p, "length past the end of the message");
        c->p += x;
        return 0;
    case PN_ENUM:
        if (cur_long(c, &x) != 0) return plan_bad(c, p, "truncated or overlong varint");
        if (x < 0 || (uint64_t)x >= p->n) return plan_bad(c, p, "enum index out of range");
        return 0;
    case PN_RECORD:
        for (size_t i = 0; i < p->n; i++) {
            int rc = plan_check(p->child[i], c);
            if (rc != 0) return rc;
        }
        return 0;
    case PN_UNION:
        if (cur_long(c, &x) != 0) return plan_bad(c, p, "truncated or overlong union index");
        if (x < 0 || (uint64_t)x >= p->n) return plan_bad(c, p, "union index out of range");
        return plan_check(p->child[x], c);
    case PN_ARRAY: {
        uint64_t total = 0;
        for (;;) {
            int64_t count;
            const uint8_t *block_end = NULL;
            if (cur_long(c, &count) != 0) return plan_bad(c, p, "truncated or overlong block count");
            if (count == 0) return 0;
            if (count < 0) { /* a negative count is followed by the block's size in bytes */
                if (count == INT64_MIN) return plan_bad(c, p, "block count out of range");
                count = -count;
                int64_t size;
                if (cur_long(c, &size) != 0) return plan_bad(c, p, "truncated or overlong block size");
                if (size < 0 || (uint64_t)size > (uint64_t)(c->end - c->p)) return plan_bad(c, p, "bad block size");
                block_end = c->p + size;
            }
            total += (uint64_t)count;
            if (total > p->max_items)
                return fail(c->errstr, c->errstr_size, CODEC_ERR_FIELD, "%s: more than %zu items", p->field,
                            p->max_items);
            /* Every item of our arrays takes at least one byte: this bounds
             * what Avro-C allocates by the input's size. */
            if ((uint64_t)count > (uint64_t)(c->end - c->p)) return plan_bad(c, p, "block count past the end");
            for (int64_t i = 0; i < count; i++) {
                int rc = plan_check(p->child[0], c);
                if (rc != 0) return rc;
            }
            if (block_end && c->p != block_end) return plan_bad(c, p, "block size does not match its items");
        }
    }
    }
    return plan_bad(c, p, "unknown plan node");
}

/* ---- Struct <-> record tables ------------------------------------------- */

typedef enum {
    F_STR,          /* string <-> char[size] */
    F_OPT_STR,      /* ["null","string"] <-> char[size], "" = null */
    F_INT,          /* int <-> int32_t */
    F_OPT_INT,      /* ["null","int"] <-> bool at has_off + int32_t */
    F_LONG,         /* long <-> int64_t */
    F_OPT_LONG,     /* ["null","long"] <-> bool at has_off + int64_t */
    F_OPT_LONG_2ND, /* as F_OPT_LONG, sharing the previous field's flag: both null or neither */
    F_ENUM,         /* enum of size symbols <-> a C enum, same order */
    F_CMD_TYPE,     /* string (record name) <-> cmd_type */
    F_OPT_RECORD,   /* ["null", record sub] <-> bool at has_off + struct */
    F_ARRAY,        /* array of record sub <-> int count at has_off + elem[max] of sub_size */
    F_COMMAND,      /* the envelope's union of command records <-> promo_cmd.type + u */
    F_CSTR,         /* string <-> const char * (decoded: borrowed from the codec's value) */
    F_OPT_BYTES,    /* ["null","bytes"] <-> const uint8_t * + size_t at has_off (decoded: borrowed) */
} field_kind;

typedef struct field_map {
    const char *name; /* as in the schema */
    field_kind kind;
    size_t off;
    size_t size;    /* strings: array size; enums: symbol count; arrays: element size */
    size_t has_off; /* see field_kind */
    const struct field_map *sub;
    size_t max; /* arrays: capacity */
} field_map;

#define FM_STR(name, T, m)                                                                                             \
    { name, F_STR, offsetof(T, m), sizeof(((T *)0)->m), 0, NULL, 0 }
#define FM_OPT_STR(name, T, m)                                                                                         \
    { name, F_OPT_STR, offsetof(T, m), sizeof(((T *)0)->m), 0, NULL, 0 }
#define FM_INT(name, T, m)                                                                                             \
    { name, F_INT, offsetof(T, m), 0, 0, NULL, 0 }
#define FM_LONG(name, T, m)                                                                                            \
    { name, F_LONG, offsetof(T, m), 0, 0, NULL, 0 }
#define FM_OPT_INT(name, T, m, has)                                                                                    \
    { name, F_OPT_INT, offsetof(T, m), 0, offsetof(T, has), NULL, 0 }
#define FM_OPT_LONG(name, T, m, has)                                                                                   \
    { name, F_OPT_LONG, offsetof(T, m), 0, offsetof(T, has), NULL, 0 }
#define FM_ENUM(name, T, m, n)                                                                                         \
    { name, F_ENUM, offsetof(T, m), n, 0, NULL, 0 }
#define FM_END                                                                                                         \
    { NULL, 0, 0, 0, 0, NULL, 0 }

_Static_assert(sizeof(discount_type) == sizeof(int) && sizeof(promo_domain) == sizeof(int) &&
                   sizeof(result_status) == sizeof(int) && sizeof(ledger_kind) == sizeof(int) &&
                   sizeof(cmd_type) == sizeof(int),
               "F_ENUM stores C enums as int");

/* Shared by CreateCouponPolicy (a command) and CouponPolicy (in a Result). */
static const field_map policy_map[] = {
    FM_STR("policy_id", coupon_policy_def, policy_id),
    FM_STR("name", coupon_policy_def, name),
    FM_ENUM("discount_type", coupon_policy_def, discount_type, 2),
    FM_LONG("discount_value", coupon_policy_def, discount_value),
    FM_OPT_LONG("max_discount", coupon_policy_def, max_discount, has_max_discount),
    FM_LONG("min_order_amount", coupon_policy_def, min_order_amount),
    FM_LONG("total_quantity", coupon_policy_def, total_quantity),
    FM_INT("per_user_limit", coupon_policy_def, per_user_limit),
    FM_LONG("issue_starts_at", coupon_policy_def, issue_starts_at),
    FM_LONG("issue_ends_at", coupon_policy_def, issue_ends_at),
    FM_OPT_LONG("valid_until", coupon_policy_def, valid_until, has_valid_until),
    FM_OPT_INT("valid_days", coupon_policy_def, valid_days, has_valid_days),
    FM_END,
};

/* Shared by CreateTimeSale (a command) and TimeSale (in a Result). */
static const field_map sale_map[] = {
    FM_STR("sale_id", time_sale_def, sale_id),
    FM_STR("product_id", time_sale_def, product_id),
    FM_STR("name", time_sale_def, name),
    FM_LONG("original_price", time_sale_def, original_price),
    FM_LONG("sale_price", time_sale_def, sale_price),
    FM_LONG("stock", time_sale_def, stock),
    FM_INT("per_user_limit", time_sale_def, per_user_limit),
    FM_LONG("starts_at", time_sale_def, starts_at),
    FM_LONG("ends_at", time_sale_def, ends_at),
    FM_END,
};

static const field_map issue_map[] = {
    FM_STR("policy_id", promo_cmd, u.issue.policy_id),
    FM_STR("user_id", promo_cmd, u.issue.user_id),
    FM_END,
};
static const field_map redeem_map[] = {
    FM_STR("coupon_id", promo_cmd, u.redeem.coupon_id),
    FM_STR("user_id", promo_cmd, u.redeem.user_id),
    FM_STR("order_id", promo_cmd, u.redeem.order_id),
    FM_LONG("order_amount", promo_cmd, u.redeem.order_amount),
    FM_END,
};
static const field_map cancel_redemption_map[] = {
    FM_STR("coupon_id", promo_cmd, u.cancel_redemption.coupon_id),
    FM_STR("order_id", promo_cmd, u.cancel_redemption.order_id),
    FM_END,
};
static const field_map earn_map[] = {
    FM_STR("user_id", promo_cmd, u.earn.user_id),
    FM_LONG("amount", promo_cmd, u.earn.amount),
    FM_STR("reason", promo_cmd, u.earn.reason),
    FM_OPT_LONG("expires_at", promo_cmd, u.earn.expires_at, u.earn.has_expires_at),
    FM_END,
};
static const field_map use_map[] = {
    FM_STR("user_id", promo_cmd, u.use.user_id),
    FM_LONG("amount", promo_cmd, u.use.amount),
    FM_STR("order_id", promo_cmd, u.use.order_id),
    FM_END,
};
static const field_map cancel_use_map[] = {
    FM_STR("user_id", promo_cmd, u.cancel_use.user_id),
    FM_STR("order_id", promo_cmd, u.cancel_use.order_id),
    FM_END,
};
static const field_map earn_pending_map[] = {
    FM_STR("user_id", promo_cmd, u.earn_pending.user_id),
    FM_LONG("amount", promo_cmd, u.earn_pending.amount),
    FM_STR("reason", promo_cmd, u.earn_pending.reason),
    FM_OPT_LONG("expires_at", promo_cmd, u.earn_pending.expires_at, u.earn_pending.has_expires_at),
    FM_LONG("available_at", promo_cmd, u.earn_pending.available_at),
    FM_END,
};
static const field_map adjust_map[] = {
    FM_STR("user_id", promo_cmd, u.adjust.user_id),
    FM_LONG("amount", promo_cmd, u.adjust.amount),
    FM_STR("reason", promo_cmd, u.adjust.reason),
    FM_OPT_STR("actor", promo_cmd, u.adjust.actor),
    FM_END,
};
static const field_map release_map[] = {
    FM_STR("user_id", promo_cmd, u.release.user_id),
    FM_END,
};
static const field_map place_order_map[] = {
    FM_STR("sale_id", promo_cmd, u.place_order.sale_id),
    FM_STR("user_id", promo_cmd, u.place_order.user_id),
    FM_INT("quantity", promo_cmd, u.place_order.quantity),
    FM_OPT_STR("order_id", promo_cmd, u.place_order.order_id),
    FM_END,
};
static const field_map cancel_order_map[] = {
    FM_STR("sale_id", promo_cmd, u.cancel_order.sale_id),
    FM_STR("order_id", promo_cmd, u.cancel_order.order_id),
    FM_END,
};

/* Pause, Resume and Close share one shape per domain. */
static const field_map policy_control_map[] = {
    FM_STR("policy_id", promo_cmd, u.policy_control.policy_id),
    FM_OPT_STR("actor", promo_cmd, u.policy_control.actor),
    FM_END,
};
static const field_map update_policy_map[] = {
    FM_STR("policy_id", coupon_policy_update, policy_id),
    FM_OPT_LONG("total_quantity", coupon_policy_update, total_quantity, has_total_quantity),
    FM_OPT_INT("per_user_limit", coupon_policy_update, per_user_limit, has_per_user_limit),
    FM_OPT_LONG("issue_ends_at", coupon_policy_update, issue_ends_at, has_issue_ends_at),
    FM_OPT_LONG("valid_until", coupon_policy_update, valid_until, has_valid_until),
    FM_OPT_STR("actor", coupon_policy_update, actor),
    FM_END,
};
static const field_map sale_control_map[] = {
    FM_STR("sale_id", promo_cmd, u.sale_control.sale_id),
    FM_OPT_STR("actor", promo_cmd, u.sale_control.actor),
    FM_END,
};
static const field_map update_sale_map[] = {
    FM_STR("sale_id", time_sale_update, sale_id),
    FM_OPT_LONG("stock", time_sale_update, stock, has_stock),
    FM_OPT_INT("per_user_limit", time_sale_update, per_user_limit, has_per_user_limit),
    FM_OPT_LONG("ends_at", time_sale_update, ends_at, has_ends_at),
    FM_OPT_LONG("hold_ms", time_sale_update, hold_ms, has_hold_ms),
    FM_OPT_STR("actor", time_sale_update, actor),
    FM_END,
};

static const field_map hold_order_map[] = {
    FM_STR("sale_id", promo_cmd, u.hold_order.sale_id),   FM_STR("user_id", promo_cmd, u.hold_order.user_id),
    FM_INT("quantity", promo_cmd, u.hold_order.quantity), FM_OPT_STR("order_id", promo_cmd, u.hold_order.order_id),
    FM_LONG("hold_ms", promo_cmd, u.hold_order.hold_ms),  FM_END,
};
/* ConfirmOrder and ExpireHold. */
static const field_map order_ref_map[] = {
    FM_STR("sale_id", promo_cmd, u.order_ref.sale_id),
    FM_STR("order_id", promo_cmd, u.order_ref.order_id),
    FM_END,
};

/* The command records in cmd_type order, which is the union's branch order
 * within each domain; base is where the record's map is relative to. */
static const struct {
    const field_map *map;
    size_t base;
} command_maps[CMD__COUNT] = {
    [CMD_CREATE_COUPON_POLICY] = {policy_map, offsetof(promo_cmd, u.create_policy)},
    [CMD_ISSUE_COUPON] = {issue_map, 0},
    [CMD_REDEEM_COUPON] = {redeem_map, 0},
    [CMD_CANCEL_REDEMPTION] = {cancel_redemption_map, 0},
    [CMD_EARN_POINTS] = {earn_map, 0},
    [CMD_USE_POINTS] = {use_map, 0},
    [CMD_CANCEL_POINT_USE] = {cancel_use_map, 0},
    [CMD_EARN_PENDING_POINTS] = {earn_pending_map, 0},
    [CMD_ADJUST_POINTS] = {adjust_map, 0},
    [CMD_RELEASE_POINTS] = {release_map, 0},
    [CMD_CREATE_TIME_SALE] = {sale_map, offsetof(promo_cmd, u.create_sale)},
    [CMD_PLACE_ORDER] = {place_order_map, 0},
    [CMD_CANCEL_ORDER] = {cancel_order_map, 0},
    [CMD_PAUSE_COUPON_POLICY] = {policy_control_map, 0},
    [CMD_RESUME_COUPON_POLICY] = {policy_control_map, 0},
    [CMD_CLOSE_COUPON_POLICY] = {policy_control_map, 0},
    [CMD_UPDATE_COUPON_POLICY] = {update_policy_map, offsetof(promo_cmd, u.update_policy)},
    [CMD_PAUSE_TIME_SALE] = {sale_control_map, 0},
    [CMD_RESUME_TIME_SALE] = {sale_control_map, 0},
    [CMD_CLOSE_TIME_SALE] = {sale_control_map, 0},
    [CMD_UPDATE_TIME_SALE] = {update_sale_map, offsetof(promo_cmd, u.update_sale)},
    [CMD_HOLD_ORDER] = {hold_order_map, 0},
    [CMD_CONFIRM_ORDER] = {order_ref_map, 0},
    [CMD_EXPIRE_HOLD] = {order_ref_map, 0},
};

/* The first command type of each domain: union branch i is first + i. */
static const cmd_type domain_first[3] = {CMD_FIRST_COUPON, CMD_FIRST_POINT, CMD_FIRST_TIMESALE};
static const cmd_type domain_end[3] = {CMD_FIRST_POINT, CMD_FIRST_TIMESALE, CMD__COUNT};

static const field_map envelope_map[] = {
    FM_STR("request_id", promo_cmd, request_id),
    FM_LONG("submitted_at", promo_cmd, submitted_at),
    FM_OPT_STR("callback_url", promo_cmd, callback_url),
    FM_OPT_STR("client_id", promo_cmd, client_id),
    {"command", F_COMMAND, 0, 0, 0, NULL, 0},
    FM_END,
};

static const field_map ledger_map[] = {
    FM_LONG("seq", ledger_entry, seq),
    FM_ENUM("kind", ledger_entry, kind, 5),
    FM_LONG("delta", ledger_entry, delta),
    FM_LONG("balance_after", ledger_entry, balance_after),
    FM_OPT_STR("order_id", ledger_entry, order_id),
    FM_OPT_STR("reason", ledger_entry, reason),
    FM_OPT_LONG("expires_at", ledger_entry, expires_at, has_expires_at),
    FM_LONG("at", ledger_entry, at),
    FM_END,
};

#define R promo_result
static const field_map result_map[] = {
    FM_STR("request_id", R, request_id),
    FM_ENUM("domain", R, domain, 3),
    {"command_type", F_CMD_TYPE, offsetof(R, command_type), 0, 0, NULL, 0},
    FM_ENUM("status", R, status, 2),
    FM_OPT_STR("reason", R, reason),
    FM_STR("entity_key", R, entity_key),
    FM_LONG("submitted_at", R, submitted_at),
    FM_LONG("processed_at", R, processed_at),
    FM_OPT_STR("callback_url", R, callback_url),
    FM_OPT_STR("client_id", R, client_id),
    FM_INT("source_partition", R, source_partition),
    FM_LONG("source_offset", R, source_offset),
    FM_LONG("version", R, version),
    FM_OPT_STR("user_id", R, user_id),
    FM_OPT_STR("policy_id", R, policy_id),
    FM_OPT_STR("coupon_id", R, coupon_id),
    FM_OPT_STR("coupon_status", R, coupon_status),
    FM_OPT_LONG("issued_at", R, issued_at, has_issued_at),
    FM_OPT_LONG("expires_at", R, expires_at, has_expires_at),
    FM_OPT_LONG("discount", R, discount, has_discount),
    FM_OPT_STR("order_id", R, order_id),
    FM_OPT_LONG("order_amount", R, order_amount, has_order_amount),
    FM_OPT_STR("order_status", R, order_status),
    FM_OPT_INT("quantity", R, quantity, has_quantity),
    FM_OPT_LONG("issued", R, issued, has_issued),
    FM_OPT_LONG("sold", R, sold, has_sold),
    FM_OPT_LONG("remaining", R, remaining, has_remaining),
    FM_OPT_LONG("amount", R, amount, has_amount),
    FM_OPT_LONG("balance", R, balance, has_balance),
    FM_OPT_LONG("next_expiry_at", R, next_expiry_at, has_next_expiry),
    {"next_expiry_amount", F_OPT_LONG_2ND, offsetof(R, next_expiry_amount), 0, offsetof(R, has_next_expiry), NULL, 0},
    {"policy", F_OPT_RECORD, offsetof(R, policy), 0, offsetof(R, has_policy), policy_map, 0},
    {"sale", F_OPT_RECORD, offsetof(R, sale), 0, offsetof(R, has_sale), sale_map, 0},
    {"ledger", F_ARRAY, offsetof(R, ledger), sizeof(ledger_entry), offsetof(R, n_ledger), ledger_map, PROMO_LEDGER_MAX},
    /* Appended in turn 2, from RESULT_TAIL_FIRST on: each encodes as one
     * zero byte when null, which is how decode_framed() completes a Result
     * written before they existed. */
    FM_OPT_STR("state", R, state),
    FM_OPT_STR("actor", R, actor),
    FM_OPT_LONG("redeemed", R, redeemed, has_redeemed),
    FM_OPT_LONG("cancelled_redemptions", R, cancelled_redemptions, has_cancelled_redemptions),
    FM_OPT_LONG("discount_total", R, discount_total, has_discount_total),
    FM_OPT_LONG("orders", R, orders, has_orders),
    FM_OPT_LONG("cancelled_orders", R, cancelled_orders, has_cancelled_orders),
    FM_OPT_LONG("hold_ms", R, hold_ms, has_hold_ms),
    FM_OPT_LONG("held", R, held, has_held),
    FM_OPT_LONG("expired_orders", R, expired_orders, has_expired_orders),
    FM_OPT_LONG("hold_expires_at", R, hold_expires_at, has_hold_expires_at),
    FM_OPT_LONG("pending", R, pending, has_pending),
    FM_OPT_LONG("next_available_at", R, next_available_at, has_next_available),
    {"next_available_amount", F_OPT_LONG_2ND, offsetof(R, next_available_amount), 0, offsetof(R, has_next_available),
     NULL, 0},
    FM_END,
};
#undef R
/* The first field a Result written before turn 2 lacks. */
#define RESULT_TAIL_FIRST "state"

static const field_map dead_letter_map[] = {
    {"source_topic", F_CSTR, offsetof(dead_letter, source_topic), 0, 0, NULL, 0},
    FM_INT("source_partition", dead_letter, source_partition),
    FM_LONG("source_offset", dead_letter, source_offset),
    {"key", F_OPT_BYTES, offsetof(dead_letter, key), 0, offsetof(dead_letter, key_len), NULL, 0},
    {"value", F_OPT_BYTES, offsetof(dead_letter, value), 0, offsetof(dead_letter, value_len), NULL, 0},
    {"error_code", F_CSTR, offsetof(dead_letter, error_code), 0, 0, NULL, 0},
    {"reason", F_CSTR, offsetof(dead_letter, reason), 0, 0, NULL, 0},
    FM_LONG("failed_at", dead_letter, failed_at),
    {"consumer", F_CSTR, offsetof(dead_letter, consumer), 0, 0, NULL, 0},
    FM_END,
};

/* ---- The codec ------------------------------------------------------------ */

typedef struct codec_schema {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value;
    bool has_value;
    plan *plan;
    const field_map *map;
    size_t tail_from; /* top-level fields from here on may be missing at the end; 0: none may */
} codec_schema;

struct codec {
    codec_schema s[CODEC_N_SCHEMAS];
    avro_reader_t reader;
    avro_writer_t writer;
    uint8_t *pad; /* a Result completed with its missing tail (decode_framed) */
    size_t pad_cap;
};

/* What a conversion needs besides the value: where errors go, the command
 * schema's domain, and the enclosing field for messages ("policy.name"). */
typedef struct xctx {
    char *errstr;
    size_t errstr_size;
    promo_domain domain; /* commands only: which domain's union is read or written */
    const char *parent;
} xctx;

static int avro_fail(xctx *x) {
    return fail(x->errstr, x->errstr_size, CODEC_ERR_INTERNAL, "avro: %s", avro_strerror());
}

#define AV(x, call)                                                                                                    \
    do {                                                                                                               \
        if ((call) != 0) return avro_fail(x);                                                                          \
    } while (0)

static int field_fail(xctx *x, const field_map *f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int field_fail(xctx *x, const field_map *f, const char *fmt, ...) {
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return fail(x->errstr, x->errstr_size, CODEC_ERR_FIELD, "%s%s%s: %s", x->parent ? x->parent : "",
                x->parent ? "." : "", f->name, why);
}

/* ---- Start-up checks: every table against its schema ---- */

static bool is_opt(avro_schema_t s, avro_type_t t) {
    return avro_typeof(s) == AVRO_UNION && avro_schema_union_size(s) == 2 &&
           avro_typeof(avro_schema_union_branch(s, 0)) == AVRO_NULL && avro_typeof(avro_schema_union_branch(s, 1)) == t;
}

static int map_check(avro_schema_t rec, const field_map *map, plan *pl, char *errstr, size_t errstr_size) {
    size_t n = 0;
    const char *rname = avro_schema_name(rec);
    for (; map[n].name; n++) {
        const field_map *f = &map[n];
        if (n >= avro_schema_record_size(rec) || strcmp(avro_schema_record_field_name(rec, (int)n), f->name) != 0)
            return fail(errstr, errstr_size, -1, "%s: field %zu is not %s", rname, n, f->name);
        avro_schema_t s = avro_schema_record_field_get_by_index(rec, (int)n);
        bool ok = false;
        switch (f->kind) {
        case F_STR:
        case F_CMD_TYPE:
        case F_CSTR: ok = avro_typeof(s) == AVRO_STRING; break;
        case F_OPT_STR: ok = is_opt(s, AVRO_STRING); break;
        case F_INT: ok = avro_typeof(s) == AVRO_INT32; break;
        case F_LONG: ok = avro_typeof(s) == AVRO_INT64; break;
        case F_OPT_INT: ok = is_opt(s, AVRO_INT32); break;
        case F_OPT_LONG: ok = is_opt(s, AVRO_INT64); break;
        case F_OPT_LONG_2ND:
            ok = n > 0 && map[n - 1].kind == F_OPT_LONG && map[n - 1].has_off == f->has_off && is_opt(s, AVRO_INT64);
            break;
        case F_OPT_BYTES: ok = is_opt(s, AVRO_BYTES); break;
        case F_ENUM:
            ok = avro_typeof(s) == AVRO_ENUM && (size_t)avro_schema_enum_number_of_symbols(s) == f->size;
            break;
        case F_OPT_RECORD:
            if (!is_opt(s, AVRO_RECORD)) break;
            if (map_check(avro_schema_union_branch(s, 1), f->sub, pl->child[n]->child[1], errstr, errstr_size) != 0)
                return -1;
            ok = true;
            break;
        case F_ARRAY: {
            if (avro_typeof(s) != AVRO_ARRAY || avro_typeof(avro_schema_array_items(s)) != AVRO_RECORD) break;
            if (map_check(avro_schema_array_items(s), f->sub, pl->child[n]->child[0], errstr, errstr_size) != 0)
                return -1;
            pl->child[n]->max_items = f->max; /* refused by the validator, before Avro-C allocates */
            ok = true;
            break;
        }
        case F_COMMAND: {
            if (avro_typeof(s) != AVRO_UNION) break;
            size_t nb = avro_schema_union_size(s);
            cmd_type first = CMD__COUNT;
            for (size_t b = 0; b < nb; b++) {
                avro_schema_t bs = avro_schema_union_branch(s, (int)b);
                int t = avro_typeof(bs) == AVRO_RECORD ? cmd_type_from_name(avro_schema_name(bs)) : -1;
                if (b == 0 && t >= 0) first = (cmd_type)t;
                if (t < 0 || t != (int)first + (int)b || cmd_domain((cmd_type)t) != cmd_domain(first))
                    return fail(errstr, errstr_size, -1, "%s: command branch %zu is not in cmd_type order", rname, b);
                if (map_check(bs, command_maps[t].map, pl->child[n]->child[b], errstr, errstr_size) != 0) return -1;
            }
            promo_domain d = cmd_domain(first);
            ok = nb > 0 && first == domain_first[d] && first + nb == (size_t)domain_end[d];
            break;
        }
        }
        if (!ok) return fail(errstr, errstr_size, -1, "%s.%s: schema type does not match the codec", rname, f->name);
    }
    if (n != avro_schema_record_size(rec)) return fail(errstr, errstr_size, -1, "%s: unexpected extra fields", rname);
    return 0;
}

static int schema_load(codec_schema *cs, const char *json, const field_map *map, char *errstr, size_t errstr_size) {
    if (avro_schema_from_json_length(json, strlen(json), &cs->schema) != 0) {
        cs->schema = NULL;
        return fail(errstr, errstr_size, -1, "schema: %s", avro_strerror());
    }
    if (!(cs->plan = plan_compile(cs->schema, NULL, errstr, errstr_size))) return -1;
    if (map_check(cs->schema, map, cs->plan, errstr, errstr_size) != 0) return -1;
    cs->map = map;
    if (!(cs->iface = avro_generic_class_from_schema(cs->schema)) || avro_generic_value_new(cs->iface, &cs->value) != 0)
        return fail(errstr, errstr_size, -1, "schema %s: %s", avro_schema_name(cs->schema), avro_strerror());
    cs->has_value = true;
    return 0;
}

codec *codec_new(char *errstr, size_t errstr_size) {
    static const char empty[1];
    codec *c = calloc(1, sizeof *c);
    if (!c) {
        fail(errstr, errstr_size, 0, "out of memory");
        return NULL;
    }
    if (schema_load(&c->s[SCHEMA_ID_COUPON_CMD], schema_coupon_command, envelope_map, errstr, errstr_size) != 0 ||
        schema_load(&c->s[SCHEMA_ID_POINT_CMD], schema_point_command, envelope_map, errstr, errstr_size) != 0 ||
        schema_load(&c->s[SCHEMA_ID_TIMESALE_CMD], schema_timesale_command, envelope_map, errstr, errstr_size) != 0 ||
        schema_load(&c->s[SCHEMA_ID_RESULT], schema_result, result_map, errstr, errstr_size) != 0 ||
        schema_load(&c->s[SCHEMA_ID_DEAD_LETTER], schema_dead_letter, dead_letter_map, errstr, errstr_size) != 0)
        goto fail;
    for (size_t i = 0; result_map[i].name; i++)
        if (strcmp(result_map[i].name, RESULT_TAIL_FIRST) == 0) c->s[SCHEMA_ID_RESULT].tail_from = i;
    if (!c->s[SCHEMA_ID_RESULT].tail_from) {
        fail(errstr, errstr_size, 0, "Result has no field %s", RESULT_TAIL_FIRST);
        goto fail;
    }
    if (!(c->reader = avro_reader_memory(empty, 0)) || !(c->writer = avro_writer_memory(empty, 0))) {
        fail(errstr, errstr_size, 0, "avro: %s", avro_strerror());
        goto fail;
    }
    return c;
fail:
    codec_destroy(c);
    return NULL;
}

void codec_destroy(codec *c) {
    if (!c) return;
    for (int i = 0; i < CODEC_N_SCHEMAS; i++) {
        codec_schema *cs = &c->s[i];
        if (cs->has_value) avro_value_decref(&cs->value);
        if (cs->iface) avro_value_iface_decref(cs->iface);
        if (cs->schema) avro_schema_decref(cs->schema);
        plan_free(cs->plan);
    }
    if (c->reader) avro_reader_free(c->reader);
    if (c->writer) avro_writer_free(c->writer);
    free(c->pad);
    free(c);
}

/* ---- Encoding ---- */

static int enc_record(xctx *x, avro_value_t *rec, const field_map *map, const char *base);

/* A struct string must be NUL-terminated inside its array. */
static int enc_str(xctx *x, const field_map *f, avro_value_t *v, const char *s) {
    size_t n = strnlen(s, f->size);
    if (n == f->size) return field_fail(x, f, "not NUL-terminated");
    AV(x, avro_value_set_string_len(v, s, n + 1));
    return 0;
}

static int enc_field(xctx *x, const field_map *f, avro_value_t *v, const char *base) {
    const char *p = base + f->off;
    avro_value_t b;
    bool has = false;
    if (f->kind == F_OPT_INT || f->kind == F_OPT_LONG || f->kind == F_OPT_LONG_2ND || f->kind == F_OPT_RECORD)
        memcpy(&has, base + f->has_off, sizeof has);
    switch (f->kind) {
    case F_STR: return enc_str(x, f, v, p);
    case F_OPT_STR: AV(x, avro_value_set_branch(v, p[0] ? 1 : 0, &b)); return p[0] ? enc_str(x, f, &b, p) : 0;
    case F_INT: {
        int32_t i;
        memcpy(&i, p, sizeof i);
        AV(x, avro_value_set_int(v, i));
        return 0;
    }
    case F_LONG: {
        int64_t l;
        memcpy(&l, p, sizeof l);
        AV(x, avro_value_set_long(v, l));
        return 0;
    }
    case F_OPT_INT: {
        int32_t i;
        memcpy(&i, p, sizeof i);
        AV(x, avro_value_set_branch(v, has, &b));
        if (has) AV(x, avro_value_set_int(&b, i));
        return 0;
    }
    case F_OPT_LONG:
    case F_OPT_LONG_2ND: {
        int64_t l;
        memcpy(&l, p, sizeof l);
        AV(x, avro_value_set_branch(v, has, &b));
        if (has) AV(x, avro_value_set_long(&b, l));
        return 0;
    }
    case F_ENUM: {
        int e;
        memcpy(&e, p, sizeof e);
        if (e < 0 || (size_t)e >= f->size) return field_fail(x, f, "enum value %d out of range", e);
        AV(x, avro_value_set_enum(v, e));
        return 0;
    }
    case F_CMD_TYPE: {
        int t;
        memcpy(&t, p, sizeof t);
        if (t < 0 || t >= CMD__COUNT) return field_fail(x, f, "unknown command type %d", t);
        const char *name = cmd_type_name((cmd_type)t);
        AV(x, avro_value_set_string_len(v, name, strlen(name) + 1));
        return 0;
    }
    case F_OPT_RECORD: {
        AV(x, avro_value_set_branch(v, has, &b));
        if (!has) return 0;
        xctx sub = *x;
        sub.parent = f->name;
        return enc_record(&sub, &b, f->sub, p);
    }
    case F_ARRAY: {
        int n;
        memcpy(&n, base + f->has_off, sizeof n);
        if (n < 0 || (size_t)n > f->max) return field_fail(x, f, "%d items, at most %zu", n, f->max);
        AV(x, avro_value_reset(v));
        xctx sub = *x;
        sub.parent = f->name;
        for (int i = 0; i < n; i++) {
            avro_value_t e;
            AV(x, avro_value_append(v, &e, NULL));
            int rc = enc_record(&sub, &e, f->sub, p + (size_t)i * f->size);
            if (rc != 0) return rc;
        }
        return 0;
    }
    case F_COMMAND: {
        const promo_cmd *cmd = (const promo_cmd *)base;
        cmd_type t = cmd->type;
        AV(x, avro_value_set_branch(v, (int)(t - domain_first[x->domain]), &b));
        return enc_record(x, &b, command_maps[t].map, base + command_maps[t].base);
    }
    case F_CSTR: {
        const char *s;
        memcpy(&s, p, sizeof s);
        if (!s) s = "";
        AV(x, avro_value_set_string_len(v, s, strlen(s) + 1));
        return 0;
    }
    case F_OPT_BYTES: {
        const uint8_t *bytes;
        size_t len;
        memcpy(&bytes, p, sizeof bytes);
        memcpy(&len, base + f->has_off, sizeof len);
        AV(x, avro_value_set_branch(v, bytes != NULL, &b));
        /* Avro-C copies the bytes; its API is not const-correct. */
        if (bytes) AV(x, avro_value_set_bytes(&b, (void *)bytes, len));
        return 0;
    }
    }
    return field_fail(x, f, "unknown field kind");
}

static int enc_record(xctx *x, avro_value_t *rec, const field_map *map, const char *base) {
    for (size_t i = 0; map[i].name; i++) {
        avro_value_t v;
        AV(x, avro_value_get_by_index(rec, i, &v, NULL));
        int rc = enc_field(x, &map[i], &v, base);
        if (rc != 0) return rc;
    }
    return 0;
}

static int buf_reserve(codec_buf *b, size_t need) {
    if (b->cap >= need) return 0;
    size_t cap = b->cap > 256 ? b->cap : 256;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* Writes the header and the value into out. The buffer is grown only when
 * the value does not fit, so a reused codec_buf settles at its largest
 * message and encoding stops allocating. */
static int encode_framed(codec *c, int id, const void *src, codec_buf *out, promo_domain domain, char *errstr,
                         size_t errstr_size) {
    codec_schema *cs = &c->s[id];
    xctx x = {errstr, errstr_size, domain, NULL};
    int rc = enc_record(&x, &cs->value, cs->map, src);
    if (rc != 0) return rc;
    if (buf_reserve(out, 512) != 0) return fail(errstr, errstr_size, CODEC_ERR_INTERNAL, "out of memory");
    avro_writer_memory_set_dest(c->writer, (const char *)out->data + CODEC_HEADER, (int64_t)(out->cap - CODEC_HEADER));
    rc = avro_value_write(c->writer, &cs->value);
    if (rc == ENOSPC) {
        size_t size;
        if (avro_value_sizeof(&cs->value, &size) != 0) return avro_fail(&x);
        if (buf_reserve(out, CODEC_HEADER + size) != 0)
            return fail(errstr, errstr_size, CODEC_ERR_INTERNAL, "out of memory");
        avro_writer_memory_set_dest(c->writer, (const char *)out->data + CODEC_HEADER,
                                    (int64_t)(out->cap - CODEC_HEADER));
        rc = avro_value_write(c->writer, &cs->value);
    }
    if (rc != 0) return avro_fail(&x);
    out->data[0] = 0;
    out->data[1] = (uint8_t)(id >> 24);
    out->data[2] = (uint8_t)(id >> 16);
    out->data[3] = (uint8_t)(id >> 8);
    out->data[4] = (uint8_t)id;
    out->len = CODEC_HEADER + (size_t)avro_writer_tell(c->writer);
    return CODEC_OK;
}

int codec_encode_cmd(codec *c, const promo_cmd *cmd, codec_buf *out, char *errstr, size_t errstr_size) {
    if ((int)cmd->type < 0 || cmd->type >= CMD__COUNT)
        return fail(errstr, errstr_size, CODEC_ERR_FIELD, "command: unknown command type %d", (int)cmd->type);
    promo_domain d = cmd_domain(cmd->type);
    return encode_framed(c, SCHEMA_ID_COUPON_CMD + (int)d, cmd, out, d, errstr, errstr_size);
}

int codec_encode_result(codec *c, const promo_result *res, codec_buf *out, char *errstr, size_t errstr_size) {
    /* The decoder refuses this pair, so the encoder must not write it. */
    if ((int)res->command_type >= 0 && res->command_type < CMD__COUNT && cmd_domain(res->command_type) != res->domain)
        return fail(errstr, errstr_size, CODEC_ERR_FIELD, "command_type: %s is not a %s command",
                    cmd_type_name(res->command_type), promo_domain_name(res->domain));
    return encode_framed(c, SCHEMA_ID_RESULT, res, out, DOMAIN_COUPON, errstr, errstr_size);
}

int codec_encode_dead_letter(codec *c, const dead_letter *dl, codec_buf *out, char *errstr, size_t errstr_size) {
    return encode_framed(c, SCHEMA_ID_DEAD_LETTER, dl, out, DOMAIN_COUPON, errstr, errstr_size);
}

/* ---- Decoding ---- */

static int dec_record(xctx *x, avro_value_t *rec, const field_map *map, char *base);

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF),
 * so that what we pass on is valid JSON text. Returns 0, 1 for a NUL byte, 2
 * for bad UTF-8. */
static int utf8_check(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t ch = s[i];
        if (ch < 0x80) {
            if (ch == 0) return 1;
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((ch & 0xe0) == 0xc0)
            k = 1, cp = ch & 0x1f, min = 0x80;
        else if ((ch & 0xf0) == 0xe0)
            k = 2, cp = ch & 0x0f, min = 0x800;
        else if ((ch & 0xf8) == 0xf0)
            k = 3, cp = ch & 0x07, min = 0x10000;
        else
            return 2;
        if (n - i <= k) return 2;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 2;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 2;
        i += k + 1;
    }
    return 0;
}

/* Copies an Avro string (size counts Avro-C's NUL terminator) into dst. */
static int dec_str(xctx *x, const field_map *f, avro_value_t *v, char *dst, size_t dst_size) {
    const char *s;
    size_t size;
    AV(x, avro_value_get_string(v, &s, &size));
    size_t n = size ? size - 1 : 0;
    if (n >= dst_size) return field_fail(x, f, "%zu bytes, at most %zu", n, dst_size - 1);
    int u = utf8_check((const uint8_t *)s, n);
    if (u == 1) return field_fail(x, f, "contains a NUL byte");
    if (u == 2) return field_fail(x, f, "not valid UTF-8");
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

static int dec_field(xctx *x, const field_map *f, avro_value_t *v, char *base) {
    char *p = base + f->off;
    avro_value_t b;
    int d = 0;
    if (f->kind == F_OPT_STR || f->kind == F_OPT_INT || f->kind == F_OPT_LONG || f->kind == F_OPT_LONG_2ND ||
        f->kind == F_OPT_RECORD || f->kind == F_COMMAND || f->kind == F_OPT_BYTES) {
        AV(x, avro_value_get_discriminant(v, &d));
        AV(x, avro_value_get_current_branch(v, &b));
    }
    bool has = d == 1;
    switch (f->kind) {
    case F_STR: return dec_str(x, f, v, p, f->size);
    case F_OPT_STR:
        if (!has) {
            p[0] = '\0';
            return 0;
        }
        return dec_str(x, f, &b, p, f->size);
    case F_INT: {
        int32_t i;
        AV(x, avro_value_get_int(v, &i));
        memcpy(p, &i, sizeof i);
        return 0;
    }
    case F_LONG: {
        int64_t l;
        AV(x, avro_value_get_long(v, &l));
        memcpy(p, &l, sizeof l);
        return 0;
    }
    case F_OPT_INT: {
        int32_t i = 0;
        if (has) AV(x, avro_value_get_int(&b, &i));
        memcpy(p, &i, sizeof i);
        memcpy(base + f->has_off, &has, sizeof has);
        return 0;
    }
    case F_OPT_LONG_2ND: {
        bool first;
        memcpy(&first, base + f->has_off, sizeof first);
        if (first != has) return field_fail(x, f, "must be null exactly when %s is", f[-1].name);
    }
        /* fall through */
    case F_OPT_LONG: {
        int64_t l = 0;
        if (has) AV(x, avro_value_get_long(&b, &l));
        memcpy(p, &l, sizeof l);
        memcpy(base + f->has_off, &has, sizeof has);
        return 0;
    }
    case F_ENUM: {
        int e;
        AV(x, avro_value_get_enum(v, &e));
        if (e < 0 || (size_t)e >= f->size) return field_fail(x, f, "enum index out of range");
        memcpy(p, &e, sizeof e);
        return 0;
    }
    case F_CMD_TYPE: {
        char name[32];
        int rc = dec_str(x, f, v, name, sizeof name);
        if (rc != 0) return rc;
        int t = cmd_type_from_name(name);
        if (t < 0) return field_fail(x, f, "unknown command type");
        memcpy(p, &t, sizeof t);
        return 0;
    }
    case F_OPT_RECORD: {
        memcpy(base + f->has_off, &has, sizeof has);
        if (!has) return 0;
        xctx sub = *x;
        sub.parent = f->name;
        return dec_record(&sub, &b, f->sub, p);
    }
    case F_ARRAY: {
        size_t n;
        AV(x, avro_value_get_size(v, &n));
        if (n > f->max) return field_fail(x, f, "%zu items, at most %zu", n, f->max);
        xctx sub = *x;
        sub.parent = f->name;
        for (size_t i = 0; i < n; i++) {
            avro_value_t e;
            AV(x, avro_value_get_by_index(v, i, &e, NULL));
            int rc = dec_record(&sub, &e, f->sub, p + i * f->size);
            if (rc != 0) return rc;
        }
        int count = (int)n;
        memcpy(base + f->has_off, &count, sizeof count);
        return 0;
    }
    case F_COMMAND: {
        cmd_type t = domain_first[x->domain] + d;
        if (d < 0 || t >= domain_end[x->domain]) return field_fail(x, f, "union index out of range");
        ((promo_cmd *)base)->type = t;
        return dec_record(x, &b, command_maps[t].map, base + command_maps[t].base);
    }
    case F_CSTR: {
        const char *s;
        size_t size;
        AV(x, avro_value_get_string(v, &s, &size));
        memcpy(p, &s, sizeof s);
        return 0;
    }
    case F_OPT_BYTES: {
        const void *bytes = NULL;
        size_t n = 0;
        if (has) AV(x, avro_value_get_bytes(&b, &bytes, &n));
        memcpy(p, &bytes, sizeof bytes);
        memcpy(base + f->has_off, &n, sizeof n);
        return 0;
    }
    }
    return fail(x->errstr, x->errstr_size, CODEC_ERR_INTERNAL, "%s: cannot be decoded", f->name);
}

static int dec_record(xctx *x, avro_value_t *rec, const field_map *map, char *base) {
    for (size_t i = 0; map[i].name; i++) {
        avro_value_t v;
        AV(x, avro_value_get_by_index(rec, i, &v, NULL));
        int rc = dec_field(x, &map[i], &v, base);
        if (rc != 0) return rc;
    }
    return 0;
}

/* Checks the header, validates the body against the schema's plan and reads
 * it into the schema's reusable value. Returns the schema id or an error. */
static int decode_framed(codec *c, const uint8_t *data, size_t len, int lo, int hi, int expect, char *errstr,
                         size_t errstr_size) {
    if (!data || len < CODEC_HEADER)
        return fail(errstr, errstr_size, CODEC_ERR_FRAMING, "message of %zu bytes is shorter than its header", len);
    if (data[0] != 0)
        return fail(errstr, errstr_size, CODEC_ERR_FRAMING, "magic byte 0x%02x, expected 0x00", (unsigned)data[0]);
    uint32_t id = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 | data[4];
    if (id < (uint32_t)lo || id > (uint32_t)hi || (expect != 0 && id != (uint32_t)expect))
        return fail(errstr, errstr_size, CODEC_ERR_SCHEMA, "schema id %u is not expected here", (unsigned)id);
    codec_schema *cs = &c->s[id];
    cursor cur = {data + CODEC_HEADER, data + len, errstr, errstr_size};
    /* The top record field by field: a record whose schema grew at its end
     * (tail_from) may end before the new fields, as its writer's did. */
    size_t missing = 0;
    for (size_t i = 0; i < cs->plan->n; i++) {
        if (cs->tail_from && i >= cs->tail_from && cur.p == cur.end) {
            missing = cs->plan->n - i;
            break;
        }
        int rc = plan_check(cs->plan->child[i], &cur);
        if (rc != 0) return rc;
    }
    if (cur.p != cur.end)
        return fail(errstr, errstr_size, CODEC_ERR_AVRO, "%zu trailing bytes after the record",
                    (size_t)(cur.end - cur.p));
    const uint8_t *body = data + CODEC_HEADER;
    size_t body_len = len - CODEC_HEADER;
    if (missing) {
        /* Each missing field is a null union or an empty array: one zero
         * byte, the encoding of its default. */
        if (c->pad_cap < body_len + missing) {
            uint8_t *p = realloc(c->pad, body_len + missing);
            if (!p) return fail(errstr, errstr_size, CODEC_ERR_INTERNAL, "out of memory");
            c->pad = p;
            c->pad_cap = body_len + missing;
        }
        memcpy(c->pad, body, body_len);
        memset(c->pad + body_len, 0, missing);
        body = c->pad;
        body_len += missing;
    }
    avro_reader_memory_set_source(c->reader, (const char *)body, (int64_t)body_len);
    /* After plan_check this can fail only for lack of memory. */
    if (avro_value_read(c->reader, &cs->value) != 0)
        return fail(errstr, errstr_size, CODEC_ERR_AVRO, "avro: %s", avro_strerror());
    return (int)id;
}

/* On error *cmd (or *res below) holds whatever was decoded before the fault:
 * use it for nothing but logging. */
int codec_decode_cmd(codec *c, const uint8_t *data, size_t len, int expect_schema_id, promo_cmd *cmd, char *errstr,
                     size_t errstr_size) {
    int id = decode_framed(c, data, len, SCHEMA_ID_COUPON_CMD, SCHEMA_ID_TIMESALE_CMD, expect_schema_id, errstr,
                           errstr_size);
    if (id < 0) return id;
    xctx x = {errstr, errstr_size, (promo_domain)(id - SCHEMA_ID_COUPON_CMD), NULL};
    memset(cmd, 0, sizeof *cmd);
    return dec_record(&x, &c->s[id].value, envelope_map, (char *)cmd);
}

int codec_decode_result(codec *c, const uint8_t *data, size_t len, promo_result *res, char *errstr,
                        size_t errstr_size) {
    int id = decode_framed(c, data, len, SCHEMA_ID_RESULT, SCHEMA_ID_RESULT, 0, errstr, errstr_size);
    if (id < 0) return id;
    xctx x = {errstr, errstr_size, DOMAIN_COUPON, NULL};
    memset(res, 0, sizeof *res);
    int rc = dec_record(&x, &c->s[id].value, result_map, (char *)res);
    if (rc != 0) return rc;
    if (cmd_domain(res->command_type) != res->domain)
        return fail(errstr, errstr_size, CODEC_ERR_FIELD, "command_type: %s is not a %s command",
                    cmd_type_name(res->command_type), promo_domain_name(res->domain));
    return CODEC_OK;
}

int codec_decode_dead_letter(codec *c, const uint8_t *data, size_t len, dead_letter *dl, char *errstr,
                             size_t errstr_size) {
    int id = decode_framed(c, data, len, SCHEMA_ID_DEAD_LETTER, SCHEMA_ID_DEAD_LETTER, 0, errstr, errstr_size);
    if (id < 0) return id;
    xctx x = {errstr, errstr_size, DOMAIN_COUPON, NULL};
    memset(dl, 0, sizeof *dl);
    return dec_record(&x, &c->s[id].value, dead_letter_map, (char *)dl);
}
