/* test_codec.c — unit tests for the Avro codec (codec.h).
 *
 * The codec is the gate every Kafka message passes, from our own programs or
 * from anyone's producer, so the tests try to break it: every command type
 * and a full Result round-trip exactly; encoding is deterministic; every
 * truncation of every valid message is refused; and thousands of seeded
 * random buffers, random values in the schemas' shape and byte mutations of
 * valid messages hold one property (decode_any()): what decodes encodes
 * again to the same bytes, or to bytes Avro-C reads as the same data, and a
 * command is judged by cmd_validate() without fail; what does not decode is
 * refused with a decode error code and a message; nothing crashes (run
 * under ASan/UBSan as build/san/bin/test-codec); and
 * hand-built messages hit each rule: oversized strings, NUL bytes, bad UTF-8,
 * huge and negative length prefixes, out-of-range enum and union indexes,
 * overlong varints, trailing bytes, too many ledger entries. A dead letter is
 * read back with Avro-C's generic reader, independent of the codec's decoder.
 * Rates of encode and decode are printed, not asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <avro.h>
#include <cmocka.h>

#include "codec.h"

extern const char schema_coupon_command[], schema_point_command[], schema_timesale_command[], schema_result[],
    schema_dead_letter[];

static codec *C;
static char err[256];

/* Fields appended to the Result after ledger (turn 2): a Result with all of
 * them null ends in this many zero bytes after its ledger. */
#define RESULT_TAIL_FIELDS 14

static int setup(void **state) {
    (void)state;
    C = codec_new(err, sizeof err);
    if (!C) fprintf(stderr, "codec_new: %s\n", err);
    return C ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    codec_destroy(C);
    return 0;
}

/* ---- Sample values ---- */

static void envelope(promo_cmd *c, cmd_type t, bool full) {
    memset(c, 0, sizeof *c);
    c->type = t;
    strcpy(c->request_id, "req-0123456789abcdef");
    c->submitted_at = 1700000000123;
    if (full) {
        strcpy(c->callback_url, "https://shop.example/hooks/promo?x=1&y=\xed\x95\x9c");
        strcpy(c->client_id, "client_7");
    }
}

static void fill_policy(coupon_policy_def *p, bool full) {
    strcpy(p->policy_id, "pol-42");
    strcpy(p->name, "Spring sale \xed\x95\x9c\xea\xb8\x80 10%");
    p->discount_type = DISCOUNT_PERCENT;
    p->discount_value = 10;
    p->min_order_amount = 10000;
    p->total_quantity = 1000000;
    p->per_user_limit = 2;
    p->issue_starts_at = 1700000000000;
    p->issue_ends_at = 1800000000000;
    if (full) {
        p->has_max_discount = true;
        p->max_discount = 5000;
        p->has_valid_until = true;
        p->valid_until = 1900000000000;
        p->has_valid_days = true;
        p->valid_days = 30;
    }
}

static void fill_sale(time_sale_def *s) {
    strcpy(s->sale_id, "sale-9");
    strcpy(s->product_id, "prod-1");
    strcpy(s->name, "Flash sale");
    s->original_price = 50000;
    s->sale_price = 29900;
    s->stock = 100;
    s->per_user_limit = 1;
    s->starts_at = 1700000000000;
    s->ends_at = 1700003600000;
}

/* A command of type t; full sets every optional field, otherwise all are null. */
static void sample_cmd(promo_cmd *c, cmd_type t, bool full) {
    envelope(c, t, full);
    switch (t) {
    case CMD_CREATE_COUPON_POLICY: fill_policy(&c->u.create_policy, full); break;
    case CMD_ISSUE_COUPON:
        strcpy(c->u.issue.policy_id, "pol-42");
        strcpy(c->u.issue.user_id, "user-1");
        break;
    case CMD_REDEEM_COUPON:
        strcpy(c->u.redeem.coupon_id, "pol-42:18446744073709551615");
        strcpy(c->u.redeem.user_id, "user-1");
        strcpy(c->u.redeem.order_id, "ord-1");
        c->u.redeem.order_amount = 123456;
        break;
    case CMD_CANCEL_REDEMPTION:
        strcpy(c->u.cancel_redemption.coupon_id, "pol-42:7");
        strcpy(c->u.cancel_redemption.order_id, "ord-1");
        break;
    case CMD_EARN_POINTS:
        strcpy(c->u.earn.user_id, "user-1");
        c->u.earn.amount = 500;
        strcpy(c->u.earn.reason, "signup bonus");
        if (full) {
            c->u.earn.has_expires_at = true;
            c->u.earn.expires_at = 1710000000000;
        }
        break;
    case CMD_USE_POINTS:
        strcpy(c->u.use.user_id, "user-1");
        c->u.use.amount = INT64_MAX;
        strcpy(c->u.use.order_id, "ord-2");
        break;
    case CMD_CANCEL_POINT_USE:
        strcpy(c->u.cancel_use.user_id, "user-1");
        strcpy(c->u.cancel_use.order_id, "ord-2");
        break;
    case CMD_CREATE_TIME_SALE: fill_sale(&c->u.create_sale); break;
    case CMD_PLACE_ORDER:
        strcpy(c->u.place_order.sale_id, "sale-9");
        strcpy(c->u.place_order.user_id, "user-1");
        c->u.place_order.quantity = INT32_MAX;
        if (full) strcpy(c->u.place_order.order_id, "ord-3");
        break;
    case CMD_CANCEL_ORDER:
        strcpy(c->u.cancel_order.sale_id, "sale-9");
        strcpy(c->u.cancel_order.order_id, "ord-3");
        break;
    case CMD_PAUSE_COUPON_POLICY:
    case CMD_RESUME_COUPON_POLICY:
    case CMD_CLOSE_COUPON_POLICY:
        strcpy(c->u.policy_control.policy_id, "pol-42");
        if (full) strcpy(c->u.policy_control.actor, "key-0123456789abcdef");
        break;
    case CMD_UPDATE_COUPON_POLICY:
        strcpy(c->u.update_policy.policy_id, "pol-42");
        c->u.update_policy.has_total_quantity = true;
        c->u.update_policy.total_quantity = 5000;
        if (full) {
            c->u.update_policy.has_per_user_limit = true;
            c->u.update_policy.per_user_limit = INT32_MAX;
            c->u.update_policy.has_issue_ends_at = true;
            c->u.update_policy.issue_ends_at = 1800000000000;
            c->u.update_policy.has_valid_until = true;
            c->u.update_policy.valid_until = 1900000000000;
            strcpy(c->u.update_policy.actor, "key-0123456789abcdef");
        }
        break;
    case CMD_PAUSE_TIME_SALE:
    case CMD_RESUME_TIME_SALE:
    case CMD_CLOSE_TIME_SALE:
        strcpy(c->u.sale_control.sale_id, "sale-9");
        if (full) strcpy(c->u.sale_control.actor, "key-0123456789abcdef");
        break;
    case CMD_UPDATE_TIME_SALE:
        strcpy(c->u.update_sale.sale_id, "sale-9");
        c->u.update_sale.has_hold_ms = true;
        c->u.update_sale.hold_ms = 0;
        if (full) {
            c->u.update_sale.has_stock = true;
            c->u.update_sale.stock = INT64_MAX;
            c->u.update_sale.has_per_user_limit = true;
            c->u.update_sale.per_user_limit = 1;
            c->u.update_sale.has_ends_at = true;
            c->u.update_sale.ends_at = 1700007200000;
            c->u.update_sale.hold_ms = 600000;
            strcpy(c->u.update_sale.actor, "key-0123456789abcdef");
        }
        break;
    case CMD_HOLD_ORDER:
        strcpy(c->u.hold_order.sale_id, "sale-9");
        strcpy(c->u.hold_order.user_id, "user-1");
        c->u.hold_order.quantity = 3;
        c->u.hold_order.hold_ms = 600000;
        if (full) strcpy(c->u.hold_order.order_id, "ord-4");
        break;
    case CMD_CONFIRM_ORDER:
    case CMD_EXPIRE_HOLD:
        strcpy(c->u.order_ref.sale_id, "sale-9");
        strcpy(c->u.order_ref.order_id, "ord-4");
        break;
    case CMD_EARN_PENDING_POINTS:
        strcpy(c->u.earn_pending.user_id, "user-1");
        c->u.earn_pending.amount = 700;
        strcpy(c->u.earn_pending.reason, "first order");
        c->u.earn_pending.available_at = 1710000000000;
        if (full) {
            c->u.earn_pending.has_expires_at = true;
            c->u.earn_pending.expires_at = 1720000000000;
        }
        break;
    case CMD_ADJUST_POINTS:
        strcpy(c->u.adjust.user_id, "user-1");
        c->u.adjust.amount = -250;
        strcpy(c->u.adjust.reason, "support ticket 42");
        if (full) strcpy(c->u.adjust.actor, "key-0123456789abcdef");
        break;
    case CMD_RELEASE_POINTS: strcpy(c->u.release.user_id, "user-1"); break;
    default: break;
    }
}

static void sample_result_min(promo_result *r) {
    memset(r, 0, sizeof *r);
    strcpy(r->request_id, "req-1");
    r->domain = DOMAIN_COUPON;
    r->command_type = CMD_ISSUE_COUPON;
    r->status = STATUS_REJECTED;
    strcpy(r->reason, "SOLD_OUT");
    strcpy(r->entity_key, "pol-42");
    r->submitted_at = 1700000000000;
    r->processed_at = 1700000000001;
    r->source_partition = 3;
    r->source_offset = 99;
    r->version = 0;
}

static void sample_result_full(promo_result *r) {
    memset(r, 0, sizeof *r);
    strcpy(r->request_id, "req-2");
    r->domain = DOMAIN_POINT;
    r->command_type = CMD_USE_POINTS;
    r->status = STATUS_SUCCEEDED;
    strcpy(r->entity_key, "user-1");
    r->submitted_at = 1700000000000;
    r->processed_at = -1;
    strcpy(r->callback_url, "http://127.0.0.1:9/cb");
    strcpy(r->client_id, "client_7");
    r->source_partition = INT32_MAX;
    r->source_offset = INT64_MAX;
    r->version = INT64_MIN;
    strcpy(r->user_id, "user-1");
    strcpy(r->policy_id, "pol-42");
    strcpy(r->coupon_id, "pol-42:1");
    strcpy(r->coupon_status, "REDEEMED");
    r->has_issued_at = true, r->issued_at = 1;
    r->has_expires_at = true, r->expires_at = 2;
    r->has_discount = true, r->discount = 3;
    strcpy(r->order_id, "ord-1");
    r->has_order_amount = true, r->order_amount = 4;
    strcpy(r->order_status, "CANCELLED");
    r->has_quantity = true, r->quantity = INT32_MIN;
    r->has_issued = true, r->issued = 6;
    r->has_sold = true, r->sold = 7;
    r->has_remaining = true, r->remaining = 0;
    r->has_amount = true, r->amount = -9;
    r->has_balance = true, r->balance = 10;
    r->has_next_expiry = true, r->next_expiry_at = 11, r->next_expiry_amount = 12;
    r->has_policy = true;
    fill_policy(&r->policy, true);
    r->has_sale = true;
    fill_sale(&r->sale);
    r->n_ledger = 2;
    r->ledger[0] = (ledger_entry){.seq = 1, .kind = LEDGER_EXPIRE, .delta = -100, .balance_after = 400, .at = 5};
    strcpy(r->ledger[0].reason, "expired");
    r->ledger[1] = (ledger_entry){.seq = 2, .kind = LEDGER_USE, .delta = -50, .balance_after = 350, .at = 6};
    strcpy(r->ledger[1].order_id, "ord-1");
    r->ledger[1].has_expires_at = true;
    r->ledger[1].expires_at = 77;
    strcpy(r->state, "PAUSED");
    strcpy(r->actor, "key-0123456789abcdef");
    r->has_redeemed = true, r->redeemed = 13;
    r->has_cancelled_redemptions = true, r->cancelled_redemptions = 14;
    r->has_discount_total = true, r->discount_total = INT64_MAX;
    r->has_orders = true, r->orders = 15;
    r->has_cancelled_orders = true, r->cancelled_orders = 16;
    r->has_hold_ms = true, r->hold_ms = 3600000;
    r->has_held = true, r->held = 17;
    r->has_expired_orders = true, r->expired_orders = 18;
    r->has_hold_expires_at = true, r->hold_expires_at = 1700000600000;
    r->has_pending = true, r->pending = 19;
    r->has_next_available = true, r->next_available_at = 1700000700000, r->next_available_amount = 20;
    r->n_ledger = 3;
    r->ledger[2] = (ledger_entry){.seq = 3, .kind = LEDGER_ADJUST, .delta = 7, .balance_after = 357, .at = 8};
    strcpy(r->ledger[2].reason, "adjusted");
}

/* ---- Helpers ---- */

static uint32_t frame_id(const codec_buf *b) {
    assert_true(b->len >= 5);
    assert_int_equal(b->data[0], 0);
    return (uint32_t)b->data[1] << 24 | (uint32_t)b->data[2] << 16 | (uint32_t)b->data[3] << 8 | b->data[4];
}

static void enc_cmd(const promo_cmd *c, codec_buf *b) {
    int rc = codec_encode_cmd(C, c, b, err, sizeof err);
    if (rc != CODEC_OK) fail_msg("encode %s: %s", cmd_type_name(c->type), err);
}

static void enc_result(const promo_result *r, codec_buf *b) {
    int rc = codec_encode_result(C, r, b, err, sizeof err);
    if (rc != CODEC_OK) fail_msg("encode result: %s", err);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) { /* xorshift64*: seeded, so failures reproduce */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* What decode_any() saw, for the tests to print and to check that their
 * inputs reach every outcome. */
typedef struct outcomes {
    int cmds, results;  /* accepted by either decoder */
    int same_bytes;     /* of those, encoded again to the input's bytes */
    int valid, invalid; /* commands passed / refused by cmd_validate() */
    int refused[6];     /* by -code: FRAMING..INTERNAL, both decoders */
} outcomes;

/* A refusal: one of the decoder's codes, never INTERNAL, with a message. */
static void check_refusal(int rc, const char *errstr, outcomes *o) {
    if (rc < CODEC_ERR_FIELD || rc > CODEC_ERR_FRAMING) fail_msg("decode returned %d (%s)", rc, errstr);
    if (!errstr[0]) fail_msg("decode refused with %s and no message", codec_err_code(rc));
    o->refused[-rc]++;
}

/* An empty string, or null: an optional string the codec reads as absent. */
static bool empty_or_null(avro_value_t *v) {
    const char *str;
    size_t size;
    if (avro_value_get_type(v) == AVRO_NULL) return true;
    return avro_value_get_type(v) == AVRO_STRING && avro_value_get_string(v, &str, &size) == 0 && size == 1;
}

/* a and b, read by Avro-C's generic reader, hold the same data, except that
 * a union holding an empty string may hold null in the other: the one form
 * of a value the codec does not keep apart ("" and null both mean "none" in
 * its structs). */
static bool avro_same(avro_value_t *a, avro_value_t *b) {
    avro_type_t t = avro_value_get_type(a);
    if (t != avro_value_get_type(b)) return false;
    if (t == AVRO_UNION) {
        int da, db;
        avro_value_t ba, bb;
        if (avro_value_get_discriminant(a, &da) || avro_value_get_discriminant(b, &db) ||
            avro_value_get_current_branch(a, &ba) || avro_value_get_current_branch(b, &bb))
            return false;
        return da == db ? avro_same(&ba, &bb) : empty_or_null(&ba) && empty_or_null(&bb);
    }
    if (t == AVRO_RECORD || t == AVRO_ARRAY) {
        size_t na, nb;
        if (avro_value_get_size(a, &na) || avro_value_get_size(b, &nb) || na != nb) return false;
        for (size_t i = 0; i < na; i++) {
            avro_value_t ca, cb;
            if (avro_value_get_by_index(a, i, &ca, NULL) || avro_value_get_by_index(b, i, &cb, NULL)) return false;
            if (!avro_same(&ca, &cb)) return false;
        }
        return true;
    }
    return avro_value_equal_fast(a, b);
}

/* The Avro body of a framed message of schema id, read whole by Avro-C's
 * generic reader into *v (caller frees with avro_value_decref() and the
 * iface with avro_value_iface_decref()). Fails the test if it cannot. */
/* Reads with Avro-C; false (and nothing to free) when it cannot read all of
 * data exactly. */
static bool generic_try(int id, const uint8_t *data, size_t len, avro_value_iface_t **iface, avro_value_t *v);

static void generic_read(int id, const uint8_t *data, size_t len, avro_value_iface_t **iface, avro_value_t *v) {
    static const char *const jsons[] = {
        NULL, schema_coupon_command, schema_point_command, schema_timesale_command, schema_result, schema_dead_letter};
    avro_schema_t schema;
    assert_true(id >= 1 && id <= 5);
    assert_int_equal(avro_schema_from_json_length(jsons[id], strlen(jsons[id]), &schema), 0);
    *iface = avro_generic_class_from_schema(schema);
    assert_non_null(*iface);
    assert_int_equal(avro_generic_value_new(*iface, v), 0);
    avro_reader_t r = avro_reader_memory((const char *)data + 5, (int64_t)len - 5);
    if (avro_value_read(r, v) != 0) fail_msg("Avro-C cannot read what the codec accepted: %s", avro_strerror());
    /* Nothing left over that the codec would have ignored. */
    char extra;
    assert_int_not_equal(avro_read(r, &extra, 1), 0);
    avro_reader_free(r);
    avro_schema_decref(schema);
}

static bool generic_try(int id, const uint8_t *data, size_t len, avro_value_iface_t **iface, avro_value_t *v) {
    static const char *const jsons[] = {
        NULL, schema_coupon_command, schema_point_command, schema_timesale_command, schema_result, schema_dead_letter};
    avro_schema_t schema;
    if (avro_schema_from_json_length(jsons[id], strlen(jsons[id]), &schema)) return false;
    *iface = avro_generic_class_from_schema(schema);
    avro_schema_decref(schema);
    if (!*iface || avro_generic_value_new(*iface, v)) return false;
    avro_reader_t r = avro_reader_memory((const char *)data + 5, (int64_t)len - 5);
    char extra;
    bool ok = avro_value_read(r, v) == 0 && avro_read(r, &extra, 1) != 0;
    avro_reader_free(r);
    if (!ok) {
        avro_value_decref(v);
        avro_value_iface_decref(*iface);
    }
    return ok;
}

/* The original of an accepted message as Avro-C reads it. A Result of the
 * older, shorter layout (written before the fields after ledger existed,
 * which the codec reads as null) is read with those nulls appended: one
 * zero byte each. */
static void original_read(int id, const uint8_t *data, size_t len, avro_value_iface_t **iface, avro_value_t *v) {
    if (id != 4 || generic_try(id, data, len, iface, v)) {
        if (id != 4) generic_read(id, data, len, iface, v);
        return;
    }
    uint8_t *padded = malloc(len + 32);
    assert_non_null(padded);
    memcpy(padded, data, len);
    memset(padded + len, 0, 32);
    for (size_t pad = 1; pad <= 32; pad++)
        if (generic_try(id, padded, len + pad, iface, v)) {
            free(padded);
            return;
        }
    free(padded);
    fail_msg("Avro-C cannot read what the codec accepted, nor it with nulls appended");
}

/* An accepted message, encoded again as enc: the same bytes, or, where Avro
 * allows another encoding of the same data (a varint with redundant
 * continuation bytes, an array in several blocks) or the codec keeps two
 * forms apart no more (an empty optional string and null), bytes that Avro-C
 * reads as the same data, that the codec decodes to an equal value, and
 * that are a fixed point of decode and encode. */
static void check_reencoding(const uint8_t *data, size_t len, const codec_buf *enc, bool is_cmd, const void *value,
                             outcomes *o) {
    if (enc->len == len && memcmp(enc->data, data, len) == 0) {
        o->same_bytes++;
        return;
    }
    avro_value_iface_t *ia, *ib;
    avro_value_t va, vb;
    original_read(frame_id(enc), data, len, &ia, &va);
    generic_read(frame_id(enc), enc->data, enc->len, &ib, &vb);
    if (!avro_same(&va, &vb)) {
        char *ja = NULL, *jb = NULL;
        avro_value_to_json(&va, 1, &ja);
        avro_value_to_json(&vb, 1, &jb);
        fail_msg("re-encoding changed the data:\n  read %s\n  sent %s", ja ? ja : "?", jb ? jb : "?");
    }
    avro_value_decref(&va);
    avro_value_decref(&vb);
    avro_value_iface_decref(ia);
    avro_value_iface_decref(ib);

    promo_cmd c2;
    promo_result r2;
    codec_buf again = {0};
    int rc = is_cmd ? codec_decode_cmd(C, enc->data, enc->len, 0, &c2, err, sizeof err)
                    : codec_decode_result(C, enc->data, enc->len, &r2, err, sizeof err);
    if (rc != CODEC_OK) fail_msg("a re-encoded %s does not decode: %s", is_cmd ? "command" : "result", err);
    if (is_cmd) {
        assert_memory_equal(&c2, value, sizeof c2);
        enc_cmd(&c2, &again);
    } else {
        assert_memory_equal(&r2, value, sizeof r2);
        enc_result(&r2, &again);
    }
    assert_int_equal(again.len, enc->len);
    assert_memory_equal(again.data, enc->data, enc->len);
    free(again.data);
}

/* The property every decode has, whatever the bytes. Each decoder either
 * accepts, and the value encodes again (check_reencoding); or refuses with
 * an error code and a message. An accepted command is then judged by
 * cmd_validate() without fail, as the processors do before applying it: 0,
 * and it has an entity key (the Kafka key it must carry); or -1 naming a
 * field and why. Returns CODEC_OK when either decoder accepted. */
static int decode_any(const uint8_t *data, size_t len, outcomes *o) {
    promo_cmd cmd;
    promo_result res;
    codec_buf b = {0};
    err[0] = '\0';
    int rc1 = codec_decode_cmd(C, data, len, 0, &cmd, err, sizeof err);
    if (rc1 == CODEC_OK) {
        o->cmds++;
        enc_cmd(&cmd, &b);
        check_reencoding(data, len, &b, true, &cmd, o);
        char field[64] = "", why[256] = "", key[PROMO_ID_MAX + 1];
        if (cmd_validate(&cmd, field, sizeof field, why, sizeof why) == 0) {
            o->valid++;
            assert_int_equal(cmd_entity_key(&cmd, key, sizeof key), 0);
            assert_true(promo_id_valid(key));
        } else {
            o->invalid++;
            if (!field[0] || !why[0]) fail_msg("cmd_validate refused %s without naming why", cmd_type_name(cmd.type));
        }
    } else {
        check_refusal(rc1, err, o);
    }
    err[0] = '\0';
    int rc2 = codec_decode_result(C, data, len, &res, err, sizeof err);
    if (rc2 == CODEC_OK) {
        o->results++;
        enc_result(&res, &b);
        check_reencoding(data, len, &b, false, &res, o);
    } else {
        check_refusal(rc2, err, o);
    }
    free(b.data);
    /* Bytes are one schema's or the other's, never both. */
    assert_false(rc1 == CODEC_OK && rc2 == CODEC_OK);
    return rc1 == CODEC_OK ? rc1 : rc2;
}

static void outcomes_print(const char *what, int total, const outcomes *o) {
    print_message("%s: %d inputs; accepted %d commands (%d valid, %d refused by cmd_validate) and %d results, "
                  "%d of them re-encoded to the same bytes; refused: %d BAD_FRAMING, %d UNKNOWN_SCHEMA, %d BAD_AVRO, "
                  "%d INVALID_FIELD\n",
                  what, total, o->cmds, o->valid, o->invalid, o->results, o->same_bytes, o->refused[1], o->refused[2],
                  o->refused[3], o->refused[4]);
}

/* After whatever came before, the codec still decodes a valid message right:
 * a refusal leaves nothing behind in its reused values. */
static void codec_still_works(void) {
    promo_cmd c, d;
    codec_buf b = {0};
    sample_cmd(&c, CMD_CREATE_COUPON_POLICY, true);
    enc_cmd(&c, &b);
    assert_int_equal(codec_decode_cmd(C, b.data, b.len, 0, &d, err, sizeof err), CODEC_OK);
    assert_memory_equal(&c, &d, sizeof c);
    free(b.data);
}

/* Every valid sample message, framed: 20 commands and 2 results. */
typedef struct corpus {
    codec_buf m[2 * CMD__COUNT + 2];
    int n;
} corpus;

static void corpus_build(corpus *k) {
    memset(k, 0, sizeof *k);
    for (int t = 0; t < CMD__COUNT; t++)
        for (int full = 0; full < 2; full++) {
            promo_cmd c;
            sample_cmd(&c, (cmd_type)t, full);
            enc_cmd(&c, &k->m[k->n++]);
        }
    promo_result r;
    sample_result_min(&r);
    enc_result(&r, &k->m[k->n++]);
    sample_result_full(&r);
    enc_result(&r, &k->m[k->n++]);
}

static void corpus_free(corpus *k) {
    for (int i = 0; i < k->n; i++) free(k->m[i].data);
}

/* A tiny Avro writer for hand-built, possibly malformed, messages. */
typedef struct mb {
    uint8_t b[16384];
    size_t n;
} mb;

static void mb_byte(mb *m, uint8_t x) {
    m->b[m->n++] = x;
}
static void mb_varint(mb *m, uint64_t u) {
    while (u > 0x7f) {
        mb_byte(m, (uint8_t)(u | 0x80));
        u >>= 7;
    }
    mb_byte(m, (uint8_t)u);
}
static void mb_long(mb *m, int64_t v) {
    mb_varint(m, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}
static void mb_raw(mb *m, const void *p, size_t n) {
    memcpy(m->b + m->n, p, n);
    m->n += n;
}
static void mb_bytes(mb *m, const void *p, size_t n) {
    mb_long(m, (int64_t)n);
    mb_raw(m, p, n);
}
static void mb_str(mb *m, const char *s) {
    mb_bytes(m, s, strlen(s));
}
static void mb_header(mb *m, uint32_t id) {
    m->n = 0;
    mb_byte(m, 0);
    mb_byte(m, (uint8_t)(id >> 24));
    mb_byte(m, (uint8_t)(id >> 16));
    mb_byte(m, (uint8_t)(id >> 8));
    mb_byte(m, (uint8_t)id);
}

/* An IssueCoupon envelope up to (not including) the command's fields. */
static void mb_issue_head(mb *m, const char *request_id) {
    mb_header(m, SCHEMA_ID_COUPON_CMD);
    mb_str(m, request_id);
    mb_long(m, 1700000000000);
    mb_long(m, 0); /* callback_url null */
    mb_long(m, 0); /* client_id null */
    mb_long(m, CMD_ISSUE_COUPON - CMD_CREATE_COUPON_POLICY);
}

static int decode_cmd_mb(const mb *m, promo_cmd *c) {
    return codec_decode_cmd(C, m->b, m->n, 0, c, err, sizeof err);
}

static void expect_field_error(int rc, const char *field) {
    assert_int_equal(rc, CODEC_ERR_FIELD);
    if (!strstr(err, field)) fail_msg("errstr \"%s\" does not name %s", err, field);
}

static char *repeat(char ch, size_t n) {
    char *s = malloc(n + 1);
    memset(s, ch, n);
    s[n] = '\0';
    return s;
}

/* ---- Round trips ---- */

static void test_cmd_roundtrip(void **state) {
    (void)state;
    codec_buf b = {0};
    for (int t = 0; t < CMD__COUNT; t++)
        for (int full = 0; full < 2; full++) {
            promo_cmd in, out;
            sample_cmd(&in, (cmd_type)t, full);
            enc_cmd(&in, &b);
            assert_int_equal(frame_id(&b), SCHEMA_ID_COUPON_CMD + cmd_domain((cmd_type)t));
            memset(&out, 0xa5, sizeof out);
            int rc = codec_decode_cmd(C, b.data, b.len, 0, &out, err, sizeof err);
            if (rc != CODEC_OK) fail_msg("decode %s: %s", cmd_type_name((cmd_type)t), err);
            assert_int_equal(out.type, t);
            if (memcmp(&in, &out, sizeof in) != 0)
                fail_msg("%s (full=%d) differs after a round trip", cmd_type_name((cmd_type)t), full);
            rc = codec_decode_cmd(C, b.data, b.len, (int)frame_id(&b), &out, err, sizeof err);
            assert_int_equal(rc, CODEC_OK);
        }
    free(b.data);
}

static void test_cmd_null_optionals_are_null_on_the_wire(void **state) {
    (void)state;
    promo_cmd c;
    codec_buf b = {0};
    sample_cmd(&c, CMD_ISSUE_COUPON, false);
    enc_cmd(&c, &b);
    /* header, request_id (1 + 20), submitted_at (6), then two null branches */
    assert_int_equal(b.data[5], 2 * 20);
    assert_int_equal(b.data[5 + 21 + 6], 0);
    assert_int_equal(b.data[5 + 21 + 7], 0);
    free(b.data);
}

static void test_result_roundtrip(void **state) {
    (void)state;
    codec_buf b = {0};
    promo_result in, out;
    for (int full = 0; full < 2; full++) {
        if (full)
            sample_result_full(&in);
        else
            sample_result_min(&in);
        enc_result(&in, &b);
        assert_int_equal(frame_id(&b), SCHEMA_ID_RESULT);
        memset(&out, 0x5a, sizeof out);
        int rc = codec_decode_result(C, b.data, b.len, &out, err, sizeof err);
        if (rc != CODEC_OK) fail_msg("decode result: %s", err);
        assert_memory_equal(&in, &out, sizeof in);
    }
    /* The ledger goes back to empty after a result that had one. */
    sample_result_min(&in);
    enc_result(&in, &b);
    assert_int_equal(b.data[b.len - 1], 0);
    assert_int_equal(codec_decode_result(C, b.data, b.len, &out, err, sizeof err), CODEC_OK);
    assert_int_equal(out.n_ledger, 0);
    free(b.data);
}

static void test_result_every_command_type(void **state) {
    (void)state;
    codec_buf b = {0};
    promo_result in, out;
    for (int t = 0; t < CMD__COUNT; t++) {
        sample_result_min(&in);
        in.command_type = (cmd_type)t;
        in.domain = cmd_domain((cmd_type)t);
        enc_result(&in, &b);
        assert_int_equal(codec_decode_result(C, b.data, b.len, &out, err, sizeof err), CODEC_OK);
        assert_int_equal(out.command_type, t);
        assert_int_equal(out.domain, in.domain);
    }
    free(b.data);
}

static void test_determinism(void **state) {
    (void)state;
    codec_buf a = {0}, b = {0}, other = {0};
    char e2[128];
    codec *c2 = codec_new(e2, sizeof e2);
    assert_non_null(c2);
    for (int t = 0; t < CMD__COUNT; t++) {
        promo_cmd c, d;
        sample_cmd(&c, (cmd_type)t, true);
        sample_cmd(&d, (cmd_type)((t + 1) % CMD__COUNT), false);
        enc_cmd(&c, &a);
        enc_cmd(&d, &other); /* reused values must not carry state over */
        assert_int_equal(codec_encode_cmd(c2, &c, &b, e2, sizeof e2), CODEC_OK);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
        enc_cmd(&c, &b);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
    }
    promo_result r, m;
    sample_result_full(&r);
    sample_result_min(&m);
    enc_result(&r, &a);
    enc_result(&m, &other);
    enc_result(&r, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    codec_destroy(c2);
    free(a.data);
    free(b.data);
    free(other.data);
}

/* The dead letter is read back with Avro-C's own generic reader. */
static void check_dead_letter(const codec_buf *b, const dead_letter *dl) {
    avro_schema_t schema;
    assert_int_equal(avro_schema_from_json_length(schema_dead_letter, strlen(schema_dead_letter), &schema), 0);
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    avro_value_t v, f, br;
    assert_int_equal(avro_generic_value_new(iface, &v), 0);
    assert_int_equal(frame_id(b), SCHEMA_ID_DEAD_LETTER);
    avro_reader_t rd = avro_reader_memory((const char *)b->data + 5, (int64_t)(b->len - 5));
    assert_int_equal(avro_value_read(rd, &v), 0);

    const char *s;
    size_t size;
    const void *p;
    int32_t i;
    int64_t l;
    int d;
    assert_int_equal(avro_value_get_by_name(&v, "source_topic", &f, NULL), 0);
    assert_int_equal(avro_value_get_string(&f, &s, &size), 0);
    assert_string_equal(s, dl->source_topic);
    assert_int_equal(avro_value_get_by_name(&v, "source_partition", &f, NULL), 0);
    assert_int_equal(avro_value_get_int(&f, &i), 0);
    assert_int_equal(i, dl->source_partition);
    assert_int_equal(avro_value_get_by_name(&v, "source_offset", &f, NULL), 0);
    assert_int_equal(avro_value_get_long(&f, &l), 0);
    assert_int_equal(l, dl->source_offset);
    assert_int_equal(avro_value_get_by_name(&v, "key", &f, NULL), 0);
    assert_int_equal(avro_value_get_discriminant(&f, &d), 0);
    assert_int_equal(d, dl->key != NULL);
    if (dl->key) {
        assert_int_equal(avro_value_get_current_branch(&f, &br), 0);
        assert_int_equal(avro_value_get_bytes(&br, &p, &size), 0);
        assert_int_equal(size, dl->key_len);
        if (size) assert_memory_equal(p, dl->key, size);
    }
    assert_int_equal(avro_value_get_by_name(&v, "value", &f, NULL), 0);
    assert_int_equal(avro_value_get_discriminant(&f, &d), 0);
    assert_int_equal(d, dl->value != NULL);
    if (dl->value) {
        assert_int_equal(avro_value_get_current_branch(&f, &br), 0);
        assert_int_equal(avro_value_get_bytes(&br, &p, &size), 0);
        assert_int_equal(size, dl->value_len);
        if (size) assert_memory_equal(p, dl->value, size);
    }
    assert_int_equal(avro_value_get_by_name(&v, "error_code", &f, NULL), 0);
    assert_int_equal(avro_value_get_string(&f, &s, &size), 0);
    assert_string_equal(s, dl->error_code);
    assert_int_equal(avro_value_get_by_name(&v, "reason", &f, NULL), 0);
    assert_int_equal(avro_value_get_string(&f, &s, &size), 0);
    assert_string_equal(s, dl->reason);
    assert_int_equal(avro_value_get_by_name(&v, "failed_at", &f, NULL), 0);
    assert_int_equal(avro_value_get_long(&f, &l), 0);
    assert_int_equal(l, dl->failed_at);
    assert_int_equal(avro_value_get_by_name(&v, "consumer", &f, NULL), 0);
    assert_int_equal(avro_value_get_string(&f, &s, &size), 0);
    assert_string_equal(s, dl->consumer);

    avro_reader_free(rd);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
}

/* codec_decode_dead_letter() gives back what was encoded. */
static void check_dead_letter_decoded(const codec_buf *b, const dead_letter *want) {
    dead_letter got;
    assert_int_equal(codec_decode_dead_letter(C, b->data, b->len, &got, err, sizeof err), CODEC_OK);
    assert_string_equal(got.source_topic, want->source_topic);
    assert_int_equal(got.source_partition, want->source_partition);
    assert_int_equal(got.source_offset, want->source_offset);
    assert_int_equal(got.key == NULL, want->key == NULL);
    assert_int_equal(got.key_len, want->key_len);
    if (want->key_len) assert_memory_equal(got.key, want->key, want->key_len);
    assert_int_equal(got.value == NULL, want->value == NULL);
    assert_int_equal(got.value_len, want->value_len);
    if (want->value_len) assert_memory_equal(got.value, want->value, want->value_len);
    assert_string_equal(got.error_code, want->error_code);
    assert_string_equal(got.reason, want->reason);
    assert_int_equal(got.failed_at, want->failed_at);
    assert_string_equal(got.consumer, want->consumer);
    /* Not a command, not a result: a dead letter only where one is expected. */
    promo_result res;
    assert_int_equal(codec_decode_result(C, b->data, b->len, &res, err, sizeof err), CODEC_ERR_SCHEMA);
}

static void test_dead_letter(void **state) {
    (void)state;
    codec_buf b = {0};
    const uint8_t bad[] = {0x01, 0x00, 0xff, 0x00, 0x7f};
    dead_letter dl = {
        .source_topic = "promo.coupon.cmd",
        .source_partition = 7,
        .source_offset = 123456789012,
        .key = (const uint8_t *)"pol-42",
        .key_len = 6,
        .value = bad,
        .value_len = sizeof bad,
        .error_code = codec_err_code(CODEC_ERR_FRAMING),
        .reason = "magic byte 0x01, expected 0x00",
        .failed_at = 1700000000999,
        .consumer = "promo-processor/host-1/coupon",
    };
    assert_int_equal(codec_encode_dead_letter(C, &dl, &b, err, sizeof err), CODEC_OK);
    check_dead_letter(&b, &dl);
    check_dead_letter_decoded(&b, &dl);

    /* null key, empty value */
    dl.key = NULL;
    dl.key_len = 0;
    dl.value = (const uint8_t *)"";
    dl.value_len = 0;
    assert_int_equal(codec_encode_dead_letter(C, &dl, &b, err, sizeof err), CODEC_OK);
    check_dead_letter(&b, &dl);
    check_dead_letter_decoded(&b, &dl);

    /* A large original value, into a small buffer: the buffer must grow. */
    free(b.data);
    b = (codec_buf){0};
    size_t big_len = 300000;
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++) big[i] = (uint8_t)rng();
    dl.value = big;
    dl.value_len = big_len;
    dl.key = (const uint8_t *)"k";
    dl.key_len = 1;
    assert_int_equal(codec_encode_dead_letter(C, &dl, &b, err, sizeof err), CODEC_OK);
    assert_true(b.len > big_len);
    check_dead_letter(&b, &dl);
    check_dead_letter_decoded(&b, &dl);
    /* Truncated anywhere: an error, never a crash. */
    for (size_t cut = 0; cut < 64; cut++)
        assert_true(codec_decode_dead_letter(C, b.data, cut, &(dead_letter){0}, err, sizeof err) < 0);
    free(big);
    free(b.data);
}

static void test_err_codes(void **state) {
    (void)state;
    assert_string_equal(codec_err_code(CODEC_ERR_FRAMING), "BAD_FRAMING");
    assert_string_equal(codec_err_code(CODEC_ERR_SCHEMA), "UNKNOWN_SCHEMA");
    assert_string_equal(codec_err_code(CODEC_ERR_AVRO), "BAD_AVRO");
    assert_string_equal(codec_err_code(CODEC_ERR_FIELD), "INVALID_FIELD");
}

/* ---- Framing and schema ids ---- */

static void test_framing(void **state) {
    (void)state;
    promo_cmd c;
    promo_result r;
    codec_buf b = {0};
    assert_int_equal(codec_decode_cmd(C, NULL, 0, 0, &c, err, sizeof err), CODEC_ERR_FRAMING);
    assert_int_equal(codec_decode_cmd(C, (const uint8_t *)"", 0, 0, &c, err, sizeof err), CODEC_ERR_FRAMING);
    assert_int_equal(codec_decode_result(C, (const uint8_t *)"", 0, &r, err, sizeof err), CODEC_ERR_FRAMING);

    sample_cmd(&c, CMD_ISSUE_COUPON, true);
    enc_cmd(&c, &b);
    for (int magic = 1; magic < 256; magic++) {
        b.data[0] = (uint8_t)magic;
        assert_int_equal(codec_decode_cmd(C, b.data, b.len, 0, &c, err, sizeof err), CODEC_ERR_FRAMING);
    }
    b.data[0] = 0;

    const uint32_t bad_ids[] = {0, 6, 99, 0x01000001, 0xffffffff};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        uint32_t id = bad_ids[i];
        b.data[1] = (uint8_t)(id >> 24), b.data[2] = (uint8_t)(id >> 16), b.data[3] = (uint8_t)(id >> 8);
        b.data[4] = (uint8_t)id;
        assert_int_equal(codec_decode_cmd(C, b.data, b.len, 0, &c, err, sizeof err), CODEC_ERR_SCHEMA);
        assert_int_equal(codec_decode_result(C, b.data, b.len, &r, err, sizeof err), CODEC_ERR_SCHEMA);
    }
    b.data[1] = b.data[2] = b.data[3] = 0;
    b.data[4] = SCHEMA_ID_COUPON_CMD;
    assert_int_equal(codec_decode_cmd(C, b.data, b.len, SCHEMA_ID_COUPON_CMD, &c, err, sizeof err), CODEC_OK);
    assert_int_equal(codec_decode_cmd(C, b.data, b.len, SCHEMA_ID_POINT_CMD, &c, err, sizeof err), CODEC_ERR_SCHEMA);
    assert_int_equal(codec_decode_result(C, b.data, b.len, &r, err, sizeof err), CODEC_ERR_SCHEMA);
    /* The same bytes labelled as a point command are garbage to that schema, or at best not a coupon command. */
    b.data[4] = SCHEMA_ID_POINT_CMD;
    int rc = codec_decode_cmd(C, b.data, b.len, 0, &c, err, sizeof err);
    assert_true(rc != CODEC_OK || cmd_domain(c.type) == DOMAIN_POINT);

    /* A result, or a dead letter, is not a command. */
    sample_result_full(&r);
    enc_result(&r, &b);
    assert_int_equal(codec_decode_cmd(C, b.data, b.len, 0, &c, err, sizeof err), CODEC_ERR_SCHEMA);
    assert_int_equal(codec_decode_cmd(C, b.data, b.len, SCHEMA_ID_RESULT, &c, err, sizeof err), CODEC_ERR_SCHEMA);
    dead_letter dl = {.source_topic = "t", .error_code = "BAD_AVRO", .reason = "r", .consumer = "c"};
    assert_int_equal(codec_encode_dead_letter(C, &dl, &b, err, sizeof err), CODEC_OK);
    assert_int_equal(codec_decode_cmd(C, b.data, b.len, 0, &c, err, sizeof err), CODEC_ERR_SCHEMA);
    assert_int_equal(codec_decode_result(C, b.data, b.len, &r, err, sizeof err), CODEC_ERR_SCHEMA);
    free(b.data);
}

/* ---- Hostile input ---- */

static void test_truncations(void **state) {
    (void)state;
    corpus k;
    corpus_build(&k);
    promo_cmd c;
    promo_result r;
    for (int i = 0; i < k.n; i++) {
        const codec_buf *m = &k.m[i];
        bool is_result = frame_id(m) == SCHEMA_ID_RESULT;
        for (size_t len = 0; len < m->len; len++) {
            /* A copy of exactly len bytes, so ASan sees any read past it. */
            uint8_t *p = malloc(len ? len : 1);
            memcpy(p, m->data, len);
            int rc = is_result ? codec_decode_result(C, p, len, &r, err, sizeof err)
                               : codec_decode_cmd(C, p, len, 0, &c, err, sizeof err);
            if (is_result && rc == CODEC_OK) {
                /* Cut where a field appended in turn 2 begins: read as a
                 * Result written before it, that field and the rest null,
                 * which encode as one zero byte each. */
                codec_buf again = {0};
                enc_result(&r, &again);
                assert_true(again.len > len && again.len - len <= RESULT_TAIL_FIELDS);
                assert_memory_equal(again.data, p, len);
                for (size_t j = len; j < again.len; j++) assert_int_equal(again.data[j], 0);
                free(again.data);
                free(p);
                continue;
            }
            /* (Cut between next_available_at and next_available_amount, which
             * go together: the amount read as null is refused as such.) */
            if (!(is_result && rc == CODEC_ERR_FIELD && strstr(err, "next_available_amount")))
                assert_int_equal(rc, len < 5 ? CODEC_ERR_FRAMING : CODEC_ERR_AVRO);
            free(p);
        }
        int rc = is_result ? codec_decode_result(C, m->data, m->len, &r, err, sizeof err)
                           : codec_decode_cmd(C, m->data, m->len, 0, &c, err, sizeof err);
        assert_int_equal(rc, CODEC_OK);
    }
    corpus_free(&k);
}

/* ---- Schema-shaped garbage ---- */

/* A random string for a field: mostly an id that might pass (or a coupon
 * id), else empty, too long, with a space, a colon, a NUL or bad UTF-8. */
static void gen_string(mb *m, const char *field) {
    static const char idchars[] = "abcXYZ019_.-";
    char s[3000];
    size_t n;
    if (strcmp(field, "command_type") == 0 && rng() % 8) { /* a Result's: a name, of any domain */
        mb_str(m, cmd_type_name((cmd_type)(rng() % CMD__COUNT)));
        return;
    }
    switch (rng() % 10) {
    case 0: n = 0; break;
    case 1: n = 60 + rng() % 2100; break; /* past an id's 64, or a URL's 2048 */
    default: n = 1 + rng() % 12;
    }
    for (size_t i = 0; i < n; i++) s[i] = idchars[rng() % (sizeof idchars - 1)];
    if (n > 2 && rng() % 4 == 0) s[rng() % n] = ':';
    if (n > 0 && rng() % 12 == 0) s[rng() % n] = " \0\xff\xc0/"[rng() % 5];
    if (n > 0 && rng() % 6 == 0) {
        int k = snprintf(s + n - 1, sizeof s - n, ":%llu", (unsigned long long)(rng() % 20));
        n += (size_t)k - 1;
    }
    mb_bytes(m, s, n);
}

static int64_t gen_long(void) {
    switch (rng() % 8) {
    case 0: return 0;
    case 1: return -(int64_t)(rng() % 1000) - 1;
    case 2: return (int64_t)(rng() >> 1); /* any size */
    case 3: return rng() % 2 ? INT64_MAX : INT64_MIN;
    case 4: return (int64_t)INT32_MAX + (int64_t)(rng() % 3);       /* at an int's edge */
    case 5: return 1700000000000 + (int64_t)(rng() % 200000000000); /* a time */
    default: return (int64_t)(rng() % 200);
    }
}

/* Writes a random value of schema s, the field named field, in Avro's
 * binary encoding: the right shape, with values now and then out of range
 * (union and enum indexes, booleans, ints), so that the decoder's checks are
 * reached as well as its acceptance of a whole message. */
static void gen_value(mb *m, avro_schema_t s, const char *field, int depth) {
    if (m->n > sizeof m->b - 4096) return; /* long enough: the rest truncated */
    switch (avro_typeof(s)) {
    case AVRO_NULL: break;
    case AVRO_BOOLEAN: mb_byte(m, rng() % 16 ? (uint8_t)(rng() % 2) : (uint8_t)rng()); break;
    case AVRO_INT32: mb_long(m, rng() % 16 ? (int64_t)(int32_t)gen_long() : gen_long()); break;
    case AVRO_INT64: mb_long(m, gen_long()); break;
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        for (int i = avro_typeof(s) == AVRO_FLOAT ? 4 : 8; i > 0; i--) mb_byte(m, (uint8_t)rng());
        break;
    case AVRO_STRING:
    case AVRO_BYTES: gen_string(m, field); break;
    case AVRO_ENUM: {
        int n = avro_schema_enum_number_of_symbols(s);
        mb_long(m, rng() % 64 ? (int64_t)(rng() % (uint64_t)n) : (int64_t)(rng() % 5) - 2 + n);
        break;
    }
    case AVRO_UNION: {
        size_t n = avro_schema_union_size(s);
        int64_t idx = rng() % 128 ? (int64_t)(rng() % n) : (int64_t)n + (int64_t)(rng() % 3) - (rng() % 2 ? 0 : 5);
        mb_long(m, idx);
        if (idx >= 0 && (size_t)idx < n) gen_value(m, avro_schema_union_branch(s, (int)idx), field, depth + 1);
        break;
    }
    case AVRO_RECORD:
        for (size_t i = 0; i < avro_schema_record_size(s); i++)
            gen_value(m, avro_schema_record_field_get_by_index(s, (int)i), avro_schema_record_field_name(s, (int)i),
                      depth + 1);
        break;
    case AVRO_ARRAY:
    case AVRO_MAP: {
        int64_t n = depth > 6 ? 0 : rng() % 16 ? (int64_t)(rng() % 3) : (int64_t)(rng() % 5) - 1;
        mb_long(m, n);
        for (int64_t i = 0; i < n; i++) {
            if (avro_typeof(s) == AVRO_MAP) gen_string(m, "key");
            gen_value(m, avro_typeof(s) == AVRO_MAP ? avro_schema_map_values(s) : avro_schema_array_items(s), field,
                      depth + 1);
        }
        if (n > 0) mb_long(m, 0);
        break;
    }
    case AVRO_LINK: gen_value(m, avro_schema_link_target(s), field, depth + 1); break;
    default:
        for (int i = (int)(rng() % 4); i > 0; i--) mb_byte(m, (uint8_t)rng());
        break;
    }
}

static void test_random_garbage(void **state) {
    (void)state;
    rng_state = 12345;
    outcomes o = {0};
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        size_t len = (size_t)(rng() % 200);
        uint8_t *p = malloc(len ? len : 1);
        /* Half of the buffers use small bytes only: short varints and lengths
         * that fit, so the decoder gets deep into the schema. */
        bool small = i % 2 == 1;
        for (size_t j = 0; j < len; j++) p[j] = small ? (uint8_t)(rng() % 6) : (uint8_t)rng();
        if (len >= 5 && i % 4 != 0) { /* mostly past the framing, to reach the Avro decoder */
            p[0] = 0;
            p[1] = p[2] = p[3] = 0;
            p[4] = (uint8_t)(1 + rng() % 5);
        }
        (void)decode_any(p, len, &o);
        free(p);
        if (i % 1000 == 0) codec_still_works();
    }
    outcomes_print("random garbage", N, &o);
    /* Bytes at random almost never make a message: they must be refused,
     * each with its code and message (checked in decode_any()). */
    for (int e = 1; e <= 3; e++) assert_true(o.refused[e] > 0);

    /* Garbage in the schemas' shape: random values written as the schema of
     * its (correct) id says, sometimes cut short or followed by a byte. Many
     * decode, so the property is checked on accepted values as well. */
    const char *const jsons[] = {NULL,          schema_coupon_command, schema_point_command, schema_timesale_command,
                                 schema_result, schema_dead_letter};
    avro_schema_t schemas[6] = {NULL};
    for (int id = 1; id <= 5; id++)
        assert_int_equal(avro_schema_from_json_length(jsons[id], strlen(jsons[id]), &schemas[id]), 0);
    outcomes shaped = {0};
    mb *m = malloc(sizeof *m);
    for (int i = 0; i < N; i++) {
        int id = 1 + (int)(rng() % 5);
        mb_header(m, (uint32_t)id);
        gen_value(m, schemas[id], "", 0);
        size_t len = m->n;
        if (rng() % 10 == 0)
            len = 5 + (size_t)(rng() % (len - 4)); /* cut, maybe to nothing */
        else if (rng() % 10 == 0)
            m->b[len++] = (uint8_t)rng(); /* one byte too many */
        uint8_t *p = malloc(len);         /* exactly len, so ASan sees a read past it */
        memcpy(p, m->b, len);
        (void)decode_any(p, len, &shaped);
        free(p);
        if (i % 1000 == 0) codec_still_works();
    }
    free(m);
    for (int id = 1; id <= 5; id++) avro_schema_decref(schemas[id]);
    outcomes_print("schema-shaped garbage", N, &shaped);
    assert_true(shaped.cmds > 1000 && shaped.results > 20 && shaped.valid > 50 && shaped.invalid > 1000);
    for (int e = 2; e <= 4; e++) assert_true(shaped.refused[e] > 0);
    codec_still_works();
}

static void test_random_mutations(void **state) {
    (void)state;
    corpus k;
    corpus_build(&k);
    rng_state = 777;
    outcomes o = {0};
    int total = 0;
    for (int i = 0; i < k.n; i++) {
        const codec_buf *m = &k.m[i];
        uint8_t *p = malloc(m->len);
        for (int j = 0; j < 1500; j++) {
            memcpy(p, m->data, m->len);
            size_t pos = 5 + (size_t)(rng() % (m->len - 5));
            p[pos] = (uint8_t)rng();
            if (j % 3 == 0) p[(size_t)(rng() % m->len)] ^= (uint8_t)(1u << (rng() % 8)); /* and a bit flip */
            (void)decode_any(p, m->len, &o);
            total++;
        }
        free(p);
        codec_still_works();
    }
    outcomes_print("mutations", total, &o);
    assert_true(o.cmds > 0 && o.results > 0 && o.valid > 0 && o.invalid > 0);
    for (int e = 1; e <= 4; e++) assert_true(o.refused[e] > 0);
    corpus_free(&k);
}

static void test_string_limits(void **state) {
    (void)state;
    mb m;
    promo_cmd c;
    char *s64 = repeat('a', 64), *s65 = repeat('a', 65), *u2048 = repeat('u', 2048), *u2049 = repeat('u', 2049);

    mb_issue_head(&m, s64);
    mb_str(&m, s64);
    mb_str(&m, "user-1");
    assert_int_equal(decode_cmd_mb(&m, &c), CODEC_OK);
    assert_string_equal(c.request_id, s64);
    assert_string_equal(c.u.issue.policy_id, s64);

    mb_issue_head(&m, s65);
    mb_str(&m, "pol");
    mb_str(&m, "user-1");
    expect_field_error(decode_cmd_mb(&m, &c), "request_id");

    mb_issue_head(&m, "req");
    mb_str(&m, "pol");
    mb_str(&m, s65);
    expect_field_error(decode_cmd_mb(&m, &c), "user_id");

    /* callback_url: 2048 fits, 2049 does not */
    for (int over = 0; over < 2; over++) {
        mb_header(&m, SCHEMA_ID_COUPON_CMD);
        mb_str(&m, "req");
        mb_long(&m, 1);
        mb_long(&m, 1);
        mb_str(&m, over ? u2049 : u2048);
        mb_long(&m, 0);
        mb_long(&m, 1);
        mb_str(&m, "pol");
        mb_str(&m, "user");
        if (over)
            expect_field_error(decode_cmd_mb(&m, &c), "callback_url");
        else
            assert_int_equal(decode_cmd_mb(&m, &c), CODEC_OK);
    }

    /* An embedded NUL, and invalid UTF-8 */
    mb_issue_head(&m, "req");
    mb_str(&m, "pol");
    mb_bytes(&m, "us\0er", 5);
    expect_field_error(decode_cmd_mb(&m, &c), "user_id");
    assert_non_null(strstr(err, "NUL"));
    const char *bad_utf8[] = {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        mb_issue_head(&m, "req");
        mb_str(&m, "pol");
        mb_str(&m, bad_utf8[i]);
        expect_field_error(decode_cmd_mb(&m, &c), "user_id");
    }
    mb_issue_head(&m, "req");
    mb_str(&m, "pol");
    mb_str(&m, "\xf0\x9f\x8e\x89 \xed\x95\x9c");
    assert_int_equal(decode_cmd_mb(&m, &c), CODEC_OK);

    /* An empty optional string decodes to "" like null */
    mb_header(&m, SCHEMA_ID_COUPON_CMD);
    mb_str(&m, "req");
    mb_long(&m, 1);
    mb_long(&m, 1);
    mb_str(&m, "");
    mb_long(&m, 0);
    mb_long(&m, 1);
    mb_str(&m, "pol");
    mb_str(&m, "user");
    assert_int_equal(decode_cmd_mb(&m, &c), CODEC_OK);
    assert_string_equal(c.callback_url, "");

    /* A nested string over its limit names the record it is in. */
    mb_header(&m, SCHEMA_ID_TIMESALE_CMD);
    mb_str(&m, "req");
    mb_long(&m, 1);
    mb_long(&m, 0);
    mb_long(&m, 0);
    mb_long(&m, 0); /* CreateTimeSale */
    mb_str(&m, "sale");
    mb_str(&m, "prod");
    char *n201 = repeat('n', 201);
    mb_str(&m, n201);
    for (int i = 0; i < 3; i++) mb_long(&m, 1);
    mb_long(&m, 1);
    mb_long(&m, 1);
    mb_long(&m, 2);
    expect_field_error(decode_cmd_mb(&m, &c), "name");
    free(n201);

    free(s64);
    free(s65);
    free(u2048);
    free(u2049);
}

static void test_length_prefixes(void **state) {
    (void)state;
    mb m;
    promo_cmd c;
    const int64_t lens[] = {-1, -2, -64, INT32_MIN, INT64_MIN, INT64_MAX, (int64_t)1 << 40, 1 << 20, 10};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        /* as the first string's length */
        mb_header(&m, SCHEMA_ID_COUPON_CMD);
        mb_long(&m, lens[i]);
        mb_raw(&m, "abcdefgh", 8);
        assert_int_equal(decode_cmd_mb(&m, &c), CODEC_ERR_AVRO);
        /* and as a later one, after valid fields */
        mb_issue_head(&m, "req");
        mb_str(&m, "pol");
        mb_long(&m, lens[i]);
        mb_raw(&m, "abcdefgh", 8);
        assert_int_equal(decode_cmd_mb(&m, &c), CODEC_ERR_AVRO);
    }
    /* Overlong varints: eleven bytes, and ten whose last carries more than 64 bits */
    mb_issue_head(&m, "req");
    m.n -= 1 + 1 + 1 + 6; /* back to before submitted_at */
    for (int i = 0; i < 10; i++) mb_byte(&m, 0x80);
    mb_byte(&m, 0);
    assert_int_equal(decode_cmd_mb(&m, &c), CODEC_ERR_AVRO);
    mb_header(&m, SCHEMA_ID_COUPON_CMD);
    mb_str(&m, "req");
    for (int i = 0; i < 9; i++) mb_byte(&m, 0xff);
    mb_byte(&m, 0x02);
    mb_long(&m, 0);
    mb_long(&m, 0);
    mb_long(&m, 1);
    mb_str(&m, "pol");
    mb_str(&m, "user");
    assert_int_equal(decode_cmd_mb(&m, &c), CODEC_ERR_AVRO);
    /* The largest ten-byte varint is fine: INT64_MIN */
    m.n = 5 + 4;
    mb_long(&m, INT64_MIN);
    mb_long(&m, 0);
    mb_long(&m, 0);
    mb_long(&m, 1);
    mb_str(&m, "pol");
    mb_str(&m, "user");
    assert_int_equal(decode_cmd_mb(&m, &c), CODEC_OK);
    assert_true(c.submitted_at == INT64_MIN);
}

static void test_enum_union_int_ranges(void **state) {
    (void)state;
    mb m;
    promo_cmd c;
    /* Command union index: 4 coupon commands, 3 point, 3 time sale. */
    const struct {
        uint32_t id;
        int64_t idx;
    } bad[] = {{1, 4}, {2, 3}, {3, 3}, {1, -1}, {1, INT64_MAX}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb_header(&m, bad[i].id);
        mb_str(&m, "req");
        mb_long(&m, 1);
        mb_long(&m, 0);
        mb_long(&m, 0);
        mb_long(&m, bad[i].idx);
        mb_str(&m, "x");
        mb_str(&m, "y");
        mb_str(&m, "z");
        assert_int_equal(decode_cmd_mb(&m, &c), CODEC_ERR_AVRO);
    }
    /* Optional-field union index 2 */
    mb_header(&m, SCHEMA_ID_COUPON_CMD);
    mb_str(&m, "req");
    mb_long(&m, 1);
    mb_long(&m, 2);
    mb_str(&m, "http://x");
    mb_long(&m, 0);
    mb_long(&m, 1);
    mb_str(&m, "pol");
    mb_str(&m, "user");
    assert_int_equal(decode_cmd_mb(&m, &c), CODEC_ERR_AVRO);

    /* CreateCouponPolicy: discount_type enum index and per_user_limit int range */
    for (int variant = 0; variant < 5; variant++) {
        mb_header(&m, SCHEMA_ID_COUPON_CMD);
        mb_str(&m, "req");
        mb_long(&m, 1);
        mb_long(&m, 0);
        mb_long(&m, 0);
        mb_long(&m, 0);
        mb_str(&m, "pol");
        mb_str(&m, "name");
        mb_long(&m, variant == 0 ? 2 : variant == 1 ? -1 : 1); /* discount_type */
        mb_long(&m, 10);
        mb_long(&m, 0);
        mb_long(&m, 0);
        mb_long(&m, 100);
        mb_long(&m, variant == 2 ? (int64_t)INT32_MAX + 1 : variant == 3 ? (int64_t)INT32_MIN - 1 : INT32_MIN);
        mb_long(&m, 1);
        mb_long(&m, 2);
        mb_long(&m, 0);
        mb_long(&m, 1);
        mb_long(&m, 30);
        int rc = decode_cmd_mb(&m, &c);
        if (variant < 4)
            assert_int_equal(rc, CODEC_ERR_AVRO);
        else {
            assert_int_equal(rc, CODEC_OK);
            assert_int_equal(c.u.create_policy.discount_type, DISCOUNT_PERCENT);
            assert_int_equal(c.u.create_policy.per_user_limit, INT32_MIN);
            assert_true(c.u.create_policy.has_valid_days);
            assert_int_equal(c.u.create_policy.valid_days, 30);
        }
    }
}

static void test_trailing_bytes(void **state) {
    (void)state;
    corpus k;
    corpus_build(&k);
    promo_cmd c;
    promo_result r;
    for (int i = 0; i < k.n; i++) {
        codec_buf *m = &k.m[i];
        uint8_t *p = malloc(m->len + 3);
        memcpy(p, m->data, m->len);
        p[m->len] = 0, p[m->len + 1] = 0, p[m->len + 2] = 0;
        for (size_t extra = 1; extra <= 3; extra++) {
            int rc = frame_id(m) == SCHEMA_ID_RESULT ? codec_decode_result(C, p, m->len + extra, &r, err, sizeof err)
                                                     : codec_decode_cmd(C, p, m->len + extra, 0, &c, err, sizeof err);
            assert_int_equal(rc, CODEC_ERR_AVRO);
            assert_non_null(strstr(err, "trailing"));
        }
        free(p);
    }
    corpus_free(&k);
}

/* Result-specific rules, by editing the tail or the command_type of an encoded minimal result. */
static void result_with_ledger(mb *m, int64_t count, int n_entries, bool sized_block) {
    promo_result r;
    codec_buf b = {0};
    sample_result_min(&r);
    r.domain = DOMAIN_POINT;
    r.command_type = CMD_EARN_POINTS;
    enc_result(&r, &b);
    m->n = 0;
    mb_raw(m, b.data, b.len - 1 - RESULT_TAIL_FIELDS); /* everything before the empty ledger */
    free(b.data);
    mb entries = {.n = 0};
    for (int i = 0; i < n_entries; i++) {
        mb_long(&entries, i + 1); /* seq */
        mb_long(&entries, 0);     /* EARN */
        mb_long(&entries, 10);
        mb_long(&entries, 10 * (i + 1));
        mb_long(&entries, 0);
        mb_long(&entries, 1);
        mb_str(&entries, "bonus");
        mb_long(&entries, 0);
        mb_long(&entries, 1000);
    }
    mb_long(m, sized_block ? -count : count);
    if (sized_block) mb_long(m, (int64_t)entries.n);
    mb_raw(m, entries.b, entries.n);
    if (count != 0) mb_long(m, 0);
}

static void test_result_rules(void **state) {
    (void)state;
    mb m;
    promo_result r;
    result_with_ledger(&m, 2, 2, false);
    assert_int_equal(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), CODEC_OK);
    assert_int_equal(r.n_ledger, 2);
    assert_string_equal(r.ledger[1].reason, "bonus");
    result_with_ledger(&m, 2, 2, true); /* negative count + byte size, as other encoders may write */
    assert_int_equal(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), CODEC_OK);
    assert_int_equal(r.n_ledger, 2);
    result_with_ledger(&m, 3, 3, false);
    assert_int_equal(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), CODEC_OK);
    assert_int_equal(r.n_ledger, 3);
    result_with_ledger(&m, 4, 4, false);
    expect_field_error(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), "ledger");
    result_with_ledger(&m, 4, 4, true);
    expect_field_error(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), "ledger");
    result_with_ledger(&m, (int64_t)1 << 40, 1, false);
    assert_true(codec_decode_result(C, m.b, m.n, &r, err, sizeof err) < 0);
    result_with_ledger(&m, INT64_MIN, 1, false);
    assert_true(codec_decode_result(C, m.b, m.n, &r, err, sizeof err) < 0);

    /* Two blocks of one entry each: fine; a block size that lies: not. */
    result_with_ledger(&m, 1, 1, false);
    m.n--; /* drop the terminator, add a second block */
    mb_long(&m, 1);
    {
        mb e = {.n = 0};
        mb_long(&e, 2), mb_long(&e, 1), mb_long(&e, -5), mb_long(&e, 5), mb_long(&e, 1), mb_str(&e, "o"),
            mb_long(&e, 0), mb_long(&e, 0), mb_long(&e, 1);
        mb_raw(&m, e.b, e.n);
        mb_long(&m, 0);
    }
    assert_int_equal(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), CODEC_OK);
    assert_int_equal(r.n_ledger, 2);
    assert_int_equal(r.ledger[1].kind, LEDGER_USE);
    assert_string_equal(r.ledger[1].order_id, "o");
    {
        mb e = {.n = 0};
        mb_long(&e, 1), mb_long(&e, 0), mb_long(&e, 1), mb_long(&e, 1), mb_long(&e, 0), mb_long(&e, 0), mb_long(&e, 0),
            mb_long(&e, 1);
        result_with_ledger(&m, 0, 0, false);
        m.n--; /* the 0 count written for an empty array */
        mb_long(&m, -1);
        mb_long(&m, (int64_t)e.n + 1);
        mb_raw(&m, e.b, e.n);
        mb_long(&m, 0);
        mb_long(&m, 0);
        assert_int_equal(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), CODEC_ERR_AVRO);
    }

    /* command_type: unknown, too long, and of another domain */
    promo_result in;
    codec_buf b = {0};
    sample_result_min(&in);
    enc_result(&in, &b);
    size_t ct = 5 + 1 + strlen(in.request_id) + 1; /* request_id, domain */
    size_t ct_len = (size_t)(b.data[ct] >> 1);
    const char *names[] = {"Bogus", "EarnPoints", "IssueCouponIssueCouponIssueCouponIssueCoupon", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        m.n = 0;
        mb_raw(&m, b.data, ct);
        mb_str(&m, names[i]);
        mb_raw(&m, b.data + ct + 1 + ct_len, b.len - ct - 1 - ct_len);
        expect_field_error(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), "command_type");
    }
    m.n = 0;
    mb_raw(&m, b.data, ct);
    mb_str(&m, "CancelRedemption");
    mb_raw(&m, b.data + ct + 1 + ct_len, b.len - ct - 1 - ct_len);
    assert_int_equal(codec_decode_result(C, m.b, m.n, &r, err, sizeof err), CODEC_OK);
    assert_int_equal(r.command_type, CMD_CANCEL_REDEMPTION);

    /* next_expiry_at and next_expiry_amount are both null or both set */
    in.has_next_expiry = true;
    in.next_expiry_at = 5;
    in.next_expiry_amount = 6;
    enc_result(&in, &b);
    /* the end is: ..., next_expiry_at [2, 10], next_expiry_amount [2, 12], policy 0, sale 0, ledger 0, then
     * the null fields appended in turn 2 */
    size_t end = b.len - RESULT_TAIL_FIELDS;
    assert_int_equal(b.data[end - 5], 2);
    assert_int_equal(b.data[end - 4], 12);
    b.data[end - 5] = 0; /* amount null */
    memmove(b.data + end - 4, b.data + end - 3, 3 + RESULT_TAIL_FIELDS);
    expect_field_error(codec_decode_result(C, b.data, b.len - 1, &r, err, sizeof err), "next_expiry_amount");
    free(b.data);
}

static void test_encode_errors(void **state) {
    (void)state;
    codec_buf b = {0};
    promo_cmd c;
    promo_result r;
    sample_cmd(&c, CMD_ISSUE_COUPON, false);
    c.type = CMD__COUNT;
    assert_int_equal(codec_encode_cmd(C, &c, &b, err, sizeof err), CODEC_ERR_FIELD);
    c.type = (cmd_type)-1;
    assert_int_equal(codec_encode_cmd(C, &c, &b, err, sizeof err), CODEC_ERR_FIELD);
    sample_cmd(&c, CMD_ISSUE_COUPON, false);
    memset(c.u.issue.user_id, 'x', sizeof c.u.issue.user_id); /* no NUL */
    expect_field_error(codec_encode_cmd(C, &c, &b, err, sizeof err), "user_id");
    sample_cmd(&c, CMD_CREATE_COUPON_POLICY, false);
    c.u.create_policy.discount_type = (discount_type)2;
    expect_field_error(codec_encode_cmd(C, &c, &b, err, sizeof err), "discount_type");

    sample_result_full(&r);
    r.n_ledger = PROMO_LEDGER_MAX + 1;
    expect_field_error(codec_encode_result(C, &r, &b, err, sizeof err), "ledger");
    r.n_ledger = -1;
    expect_field_error(codec_encode_result(C, &r, &b, err, sizeof err), "ledger");
    sample_result_full(&r);
    r.ledger[1].kind = (ledger_kind)5;
    expect_field_error(codec_encode_result(C, &r, &b, err, sizeof err), "ledger.kind");
    sample_result_min(&r);
    r.status = (result_status)2;
    expect_field_error(codec_encode_result(C, &r, &b, err, sizeof err), "status");
    sample_result_min(&r);
    r.command_type = CMD_EARN_POINTS; /* but domain COUPON */
    expect_field_error(codec_encode_result(C, &r, &b, err, sizeof err), "command_type");
    sample_result_min(&r);
    r.command_type = (cmd_type)42;
    expect_field_error(codec_encode_result(C, &r, &b, err, sizeof err), "command_type");
    /* After failures, a good encode is still right. */
    promo_result out;
    sample_result_full(&r);
    enc_result(&r, &b);
    assert_int_equal(codec_decode_result(C, b.data, b.len, &out, err, sizeof err), CODEC_OK);
    assert_memory_equal(&r, &out, sizeof r);
    free(b.data);
}

/* ---- Speed (printed; the numbers go in codec.c's comment) ---- */

static double secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Encodes and decodes one message n times; prints the rates. */
static void speed(const char *what, const promo_cmd *c, const promo_result *r) {
    const int n = 100000;
    codec_buf b = {0};
    promo_cmd cout;
    promo_result rout;
    double t0 = secs();
    for (int i = 0; i < n; i++) {
        int rc = c ? codec_encode_cmd(C, c, &b, err, sizeof err) : codec_encode_result(C, r, &b, err, sizeof err);
        assert_int_equal(rc, CODEC_OK);
    }
    double t1 = secs();
    for (int i = 0; i < n; i++) {
        int rc = c ? codec_decode_cmd(C, b.data, b.len, 0, &cout, err, sizeof err)
                   : codec_decode_result(C, b.data, b.len, &rout, err, sizeof err);
        assert_int_equal(rc, CODEC_OK);
    }
    double t2 = secs();
    print_message("%-28s %4zu bytes: encode %8.0f/s, decode %8.0f/s\n", what, b.len, n / (t1 - t0), n / (t2 - t1));
    free(b.data);
}

static void test_speed(void **state) {
    (void)state;
    promo_cmd c;
    promo_result r;
    sample_cmd(&c, CMD_ISSUE_COUPON, false);
    speed("IssueCoupon", &c, NULL);
    sample_cmd(&c, CMD_CREATE_COUPON_POLICY, true);
    speed("CreateCouponPolicy, full", &c, NULL);
    sample_result_min(&r);
    r.status = STATUS_SUCCEEDED;
    r.reason[0] = '\0';
    strcpy(r.user_id, "user-1");
    strcpy(r.coupon_id, "pol-42:1");
    strcpy(r.coupon_status, "ISSUED");
    r.has_issued_at = r.has_expires_at = r.has_issued = r.has_remaining = true;
    speed("Result of an IssueCoupon", NULL, &r);
    sample_result_full(&r);
    speed("Result, every field", NULL, &r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_roundtrip),    cmocka_unit_test(test_cmd_null_optionals_are_null_on_the_wire),
        cmocka_unit_test(test_result_roundtrip), cmocka_unit_test(test_result_every_command_type),
        cmocka_unit_test(test_determinism),      cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_err_codes),        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_truncations),      cmocka_unit_test(test_random_garbage),
        cmocka_unit_test(test_random_mutations), cmocka_unit_test(test_string_limits),
        cmocka_unit_test(test_length_prefixes),  cmocka_unit_test(test_enum_union_int_ranges),
        cmocka_unit_test(test_trailing_bytes),   cmocka_unit_test(test_result_rules),
        cmocka_unit_test(test_encode_errors),    cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
