/* result_json.c — builds the request-status JSON of a Result (result_json.h).
 *
 * The text must be the same every time for the same result: the sink writes
 * it to MySQL and Redis on every replay, and clients compare what they polled
 * before and after a restart. So keys are inserted in one fixed order (jansson
 * keeps insertion order) and only fields the Result carries appear in
 * "result". Strings come from Kafka and were never checked for UTF-8; rather
 * than lose a field, bad bytes become U+FFFD.
 */
#include "result_json.h"

#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if the
 * bytes there are not one: overlong forms, surrogates and code points above
 * U+10FFFF are refused, as jansson refuses them. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    if (cp > 0x10FFFF) return 0;
    return len;
}

size_t result_json_utf8_repair(const char *s, size_t n, char *out) {
    n = strnlen(s, n);
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < n) {
        size_t len = utf8_seq_len(p + i, n - i);
        if (len) {
            memcpy(out + o, p + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return o;
}

/* A JSON string from at most cap bytes of s (the field's array size, so an
 * unterminated array cannot be overread). */
static json_t *str_json(const char *s, size_t cap) {
    size_t n = strnlen(s, cap);
    json_t *j = json_stringn(s, n);
    if (j) return j;
    /* Not UTF-8 (or out of memory): repair and try once more. */
    char *fixed = malloc(n * 3 + 1);
    if (!fixed) return NULL;
    size_t len = result_json_utf8_repair(s, n, fixed);
    j = json_stringn(fixed, len);
    free(fixed);
    return j;
}

/* Sets key to v (which may be NULL after a failed allocation); any failure is
 * remembered in *oom so the builder checks once at the end. Takes v. */
static void put(json_t *obj, const char *key, json_t *v, int *oom) {
    if (!v || json_object_set_new(obj, key, v) != 0) *oom = 1;
}

#define PUT_STR(obj, key, field, oom) put((obj), (key), str_json((field), sizeof(field)), (oom))
/* An optional string field: absent when empty. */
#define OPT_STR(obj, key, field, oom)                                                                                  \
    do {                                                                                                               \
        if ((field)[0]) PUT_STR(obj, key, field, oom);                                                                 \
    } while (0)
#define OPT_INT(obj, key, has, val, oom)                                                                               \
    do {                                                                                                               \
        if (has) put((obj), (key), json_integer((json_int_t)(val)), (oom));                                            \
    } while (0)

static json_t *int_or_null(bool has, int64_t v) {
    return has ? json_integer((json_int_t)v) : json_null();
}

static json_t *policy_json(const coupon_policy_def *p, int *oom) {
    json_t *o = json_object();
    if (!o) {
        *oom = 1;
        return NULL;
    }
    PUT_STR(o, "policy_id", p->policy_id, oom);
    PUT_STR(o, "name", p->name, oom);
    put(o, "discount_type", json_string(p->discount_type == DISCOUNT_PERCENT ? "PERCENT" : "FIXED"), oom);
    put(o, "discount_value", json_integer(p->discount_value), oom);
    put(o, "max_discount", int_or_null(p->has_max_discount, p->max_discount), oom);
    put(o, "min_order_amount", json_integer(p->min_order_amount), oom);
    put(o, "total_quantity", json_integer(p->total_quantity), oom);
    put(o, "per_user_limit", json_integer(p->per_user_limit), oom);
    put(o, "issue_starts_at", json_integer(p->issue_starts_at), oom);
    put(o, "issue_ends_at", json_integer(p->issue_ends_at), oom);
    put(o, "valid_until", int_or_null(p->has_valid_until, p->valid_until), oom);
    put(o, "valid_days", int_or_null(p->has_valid_days, p->valid_days), oom);
    return o;
}

static json_t *sale_json(const time_sale_def *s, int *oom) {
    json_t *o = json_object();
    if (!o) {
        *oom = 1;
        return NULL;
    }
    PUT_STR(o, "sale_id", s->sale_id, oom);
    PUT_STR(o, "product_id", s->product_id, oom);
    PUT_STR(o, "name", s->name, oom);
    put(o, "original_price", json_integer(s->original_price), oom);
    put(o, "sale_price", json_integer(s->sale_price), oom);
    put(o, "stock", json_integer(s->stock), oom);
    put(o, "per_user_limit", json_integer(s->per_user_limit), oom);
    put(o, "starts_at", json_integer(s->starts_at), oom);
    put(o, "ends_at", json_integer(s->ends_at), oom);
    return o;
}

static json_t *ledger_json(const ledger_entry *e, int *oom) {
    json_t *o = json_object();
    if (!o) {
        *oom = 1;
        return NULL;
    }
    put(o, "seq", json_integer(e->seq), oom);
    put(o, "kind", json_string(ledger_kind_name(e->kind)), oom);
    put(o, "delta", json_integer(e->delta), oom);
    put(o, "balance_after", json_integer(e->balance_after), oom);
    put(o, "order_id", e->order_id[0] ? str_json(e->order_id, sizeof e->order_id) : json_null(), oom);
    put(o, "reason", e->reason[0] ? str_json(e->reason, sizeof e->reason) : json_null(), oom);
    put(o, "expires_at", int_or_null(e->has_expires_at, e->expires_at), oom);
    put(o, "at", json_integer(e->at), oom);
    return o;
}

static json_t *outcome_json(const promo_result *r, int *oom) {
    json_t *o = json_object();
    if (!o) {
        *oom = 1;
        return NULL;
    }
    OPT_STR(o, "user_id", r->user_id, oom);
    OPT_STR(o, "policy_id", r->policy_id, oom);
    OPT_STR(o, "coupon_id", r->coupon_id, oom);
    OPT_STR(o, "coupon_status", r->coupon_status, oom);
    OPT_INT(o, "issued_at", r->has_issued_at, r->issued_at, oom);
    OPT_INT(o, "expires_at", r->has_expires_at, r->expires_at, oom);
    OPT_INT(o, "discount", r->has_discount, r->discount, oom);
    OPT_STR(o, "order_id", r->order_id, oom);
    OPT_INT(o, "order_amount", r->has_order_amount, r->order_amount, oom);
    OPT_STR(o, "order_status", r->order_status, oom);
    OPT_INT(o, "quantity", r->has_quantity, r->quantity, oom);
    OPT_INT(o, "issued", r->has_issued, r->issued, oom);
    OPT_INT(o, "sold", r->has_sold, r->sold, oom);
    OPT_INT(o, "remaining", r->has_remaining, r->remaining, oom);
    OPT_INT(o, "amount", r->has_amount, r->amount, oom);
    OPT_INT(o, "balance", r->has_balance, r->balance, oom);
    OPT_INT(o, "next_expiry_at", r->has_next_expiry, r->next_expiry_at, oom);
    OPT_INT(o, "next_expiry_amount", r->has_next_expiry, r->next_expiry_amount, oom);
    OPT_STR(o, "state", r->state, oom);
    OPT_STR(o, "actor", r->actor, oom);
    OPT_INT(o, "redeemed", r->has_redeemed, r->redeemed, oom);
    OPT_INT(o, "cancelled_redemptions", r->has_cancelled_redemptions, r->cancelled_redemptions, oom);
    OPT_INT(o, "discount_total", r->has_discount_total, r->discount_total, oom);
    OPT_INT(o, "orders", r->has_orders, r->orders, oom);
    OPT_INT(o, "cancelled_orders", r->has_cancelled_orders, r->cancelled_orders, oom);
    OPT_INT(o, "hold_ms", r->has_hold_ms, r->hold_ms, oom);
    OPT_INT(o, "held", r->has_held, r->held, oom);
    OPT_INT(o, "expired_orders", r->has_expired_orders, r->expired_orders, oom);
    OPT_INT(o, "hold_expires_at", r->has_hold_expires_at, r->hold_expires_at, oom);
    OPT_INT(o, "pending", r->has_pending, r->pending, oom);
    OPT_INT(o, "next_available_at", r->has_next_available, r->next_available_at, oom);
    OPT_INT(o, "next_available_amount", r->has_next_available, r->next_available_amount, oom);
    if (r->has_policy) put(o, "policy", policy_json(&r->policy, oom), oom);
    if (r->has_sale) put(o, "sale", sale_json(&r->sale, oom), oom);
    int n = r->n_ledger;
    if (n > PROMO_LEDGER_MAX) n = PROMO_LEDGER_MAX;
    if (n > 0) {
        json_t *arr = json_array();
        if (!arr) *oom = 1;
        for (int i = 0; arr && i < n; i++) {
            json_t *e = ledger_json(&r->ledger[i], oom);
            if (!e || json_array_append_new(arr, e) != 0) *oom = 1;
        }
        put(o, "ledger", arr, oom);
    }
    return o;
}

json_t *result_json(const promo_result *res) {
    int oom = 0;
    json_t *o = json_object();
    if (!o) return NULL;
    PUT_STR(o, "request_id", res->request_id, &oom);
    put(o, "status", json_string(res->status == STATUS_REJECTED ? "REJECTED" : "SUCCEEDED"), &oom);
    put(o, "reason", res->reason[0] ? str_json(res->reason, sizeof res->reason) : json_null(), &oom);
    put(o, "domain", json_string(promo_domain_name(res->domain)), &oom);
    put(o, "command_type", json_string(cmd_type_name(res->command_type)), &oom);
    PUT_STR(o, "entity_key", res->entity_key, &oom);
    put(o, "submitted_at", json_integer(res->submitted_at), &oom);
    put(o, "processed_at", json_integer(res->processed_at), &oom);
    put(o, "result", outcome_json(res, &oom), &oom);
    if (oom) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *result_json_dump(const promo_result *res) {
    json_t *j = result_json(res);
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    return s;
}

int result_json_pending(const promo_cmd *cmd, const char *key, char *out, size_t out_size) {
    int n = snprintf(out, out_size,
                     "{\"request_id\":\"%s\"," RESULT_JSON_PENDING_MARK ",\"reason\":null,\"domain\":\"%s\","
                     "\"command_type\":\"%s\",\"entity_key\":\"%s\",\"submitted_at\":%lld,\"processed_at\":null,"
                     "\"result\":{}}",
                     cmd->request_id, promo_domain_name(cmd_domain(cmd->type)), cmd_type_name(cmd->type), key,
                     (long long)cmd->submitted_at);
    return n > 0 && (size_t)n < out_size ? 0 : -1;
}

bool result_json_is_pending(const char *json) {
    return strstr(json, RESULT_JSON_PENDING_MARK) != NULL;
}
