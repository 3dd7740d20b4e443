/* result_pack.c — a Result's Avro body packed field by field (result_pack.h).
 *
 * The body after the request id is walked with the schema
 * (schemas/result.avsc, the codec's result_map in common/codec.c: the same
 * fields in the same order, which pk_walk() repeats) and written shorter:
 *   - every [null, X] union becomes one bit, the bits stored first;
 *   - submitted_at is stored as its distance from the entry's time (the
 *     command's submitted_at, so usually 0), and the other times as their
 *     distance from submitted_at;
 *   - a string equal to the request id, to a string met earlier in the
 *     result, or to a word of pack_words (type names, status and reason
 *     codes) is an index; one that extends such a string (a coupon id after
 *     its policy id) is an index and the rest.
 * Layout: varint length of the bit bytes, the bit bytes, then the values.
 * Packing and unpacking run the same walk (pk_walk()), and dedupe_put()
 * keeps the packed form only if unpacking it gives back every byte, so a
 * schema or codec change can only make results stored less tightly, never
 * wrongly. pack_words may grow at its end only: stored indexes refer to it.
 */
#include "result_pack.h"

#include <stdbool.h>
#include <string.h>

#include "bytes.h"

/* The Confluent frame of a Result: magic byte 0, schema id 4 (big-endian). */
static const uint8_t result_frame[5] = {0, 0, 0, 0, 4};

size_t result_pack_prefix(uint8_t *p, const char *id, size_t id_len) {
    memcpy(p, result_frame, sizeof result_frame);
    size_t n = sizeof result_frame;
    n += bytes_uvarint_put(p + n, bytes_zigzag((int64_t)id_len));
    memcpy(p + n, id, id_len);
    return n + id_len;
}

#define W(s)                                                                                                           \
    { s, sizeof s - 1 }
static const struct {
    const char *s;
    size_t n;
} pack_words[] = {
    W("CreateCouponPolicy"),
    W("IssueCoupon"),
    W("RedeemCoupon"),
    W("CancelRedemption"),
    W("EarnPoints"),
    W("UsePoints"),
    W("CancelPointUse"),
    W("CreateTimeSale"),
    W("PlaceOrder"),
    W("CancelOrder"),
    W("ISSUED"),
    W("REDEEMED"),
    W("PLACED"),
    W("CANCELLED"),
    W("SOLD_OUT"),
    W("LIMIT_EXCEEDED"),
    W("NOT_STARTED"),
    W("ENDED"),
    W("NOT_FOUND"),
    W("NOT_OWNER"),
    W("ALREADY_REDEEMED"),
    W("EXPIRED"),
    W("MIN_ORDER_NOT_MET"),
    W("NOT_REDEEMED"),
    W("ORDER_MISMATCH"),
    W("INSUFFICIENT_BALANCE"),
    W("DUPLICATE_ORDER"),
    W("ALREADY_CANCELLED"),
    W("ALREADY_EXISTS"),
    W("ALREADY_EXPIRED"),
    W("BALANCE_OVERFLOW"),
    W("INVALID_AMOUNT"),
    W("INVALID_QUANTITY"),
    W("UNSUPPORTED_COMMAND"),
    W("IDEMPOTENCY_KEY_REUSED"),
};
#undef W
#define PACK_NWORDS (sizeof pack_words / sizeof pack_words[0])
#define PACK_STRS 48   /* strings of one result remembered for back references */
#define PACK_LEDGER 64 /* ledger entries: a result has at most PROMO_LEDGER_MAX */

enum { L_RAW, L_AT, L_TS }; /* how a long is predicted */
enum { S_ID, S_WORD };      /* where a string is looked for */

typedef struct pk {
    bool unpack;
    bool tail; /* the fields after ledger too (pk_tail); packing always writes them */ /* false: Avro -> packed; true:
                                                                                          packed -> Avro */
    const uint8_t *in, *end;                                                           /* values being read */
    uint8_t *out, *oend;                                                               /* values being written */
    uint8_t *wbits;       /* pack: the union bits written */
    const uint8_t *rbits; /* unpack: the union bits read */
    size_t nbits, bits_max;
    int err;
    int64_t at, submitted;
    size_t nstr;
    const uint8_t *str[PACK_STRS]; /* [0] is the request id */
    size_t str_len[PACK_STRS];
} pk;

static uint64_t pk_get(pk *c) {
    uint64_t v = 0;
    size_t k = c->err ? 0 : bytes_uvarint_get(c->in, c->end, &v);
    if (!k) {
        c->err = 1;
        return 0;
    }
    c->in += k;
    return v;
}

static void pk_put(pk *c, uint64_t v) {
    if (c->err || c->oend - c->out < 10) {
        c->err = 1;
        return;
    }
    c->out += bytes_uvarint_put(c->out, v);
}

static void pk_bytes(pk *c, const uint8_t *p, size_t n) {
    if (c->err || (size_t)(c->oend - c->out) < n) {
        c->err = 1;
        return;
    }
    if (n) memcpy(c->out, p, n);
    c->out += n;
}

static int64_t pk_long(pk *c, int kind) {
    uint64_t pred = kind == L_AT ? (uint64_t)c->at : kind == L_TS ? (uint64_t)c->submitted : 0;
    int64_t v;
    if (!c->unpack) {
        v = bytes_unzigzag(pk_get(c));
        pk_put(c, bytes_zigzag((int64_t)((uint64_t)v - pred)));
    } else {
        v = (int64_t)((uint64_t)bytes_unzigzag(pk_get(c)) + pred);
        pk_put(c, bytes_zigzag(v));
    }
    return v;
}

/* A [null, X] union: returns 1 when X follows. */
static int pk_union(pk *c) {
    if (c->err) return 0;
    if (c->nbits >= c->bits_max * 8) {
        c->err = 1;
        return 0;
    }
    size_t i = c->nbits++;
    int b;
    if (!c->unpack) {
        uint64_t u = pk_get(c);
        if (u > 2 || u == 1) { /* branch 0 or 1, zigzag encoded */
            c->err = 1;
            return 0;
        }
        b = u == 2;
        if (b) c->wbits[i / 8] |= (uint8_t)(1u << (i % 8));
    } else {
        b = (c->rbits[i / 8] >> (i % 8)) & 1;
        pk_put(c, b ? 2 : 0);
    }
    return b;
}

static void pk_remember(pk *c, const uint8_t *p, size_t n) {
    if (c->nstr < PACK_STRS) {
        c->str[c->nstr] = p;
        c->str_len[c->nstr++] = n;
    }
}

/* Code 0: a literal; 2i + 1: string i; 2i + 2: string i then a literal.
 * Indexes: 0 the request id, then pack_words, then this result's strings. */
static void pk_str(pk *c, int kind) {
    if (c->err) return;
    if (!c->unpack) {
        int64_t len = bytes_unzigzag(pk_get(c)); /* an Avro string's length is a zigzag long */
        uint64_t n = (uint64_t)len;
        if (c->err || len < 0 || n > (uint64_t)(c->end - c->in)) {
            c->err = 1;
            return;
        }
        const uint8_t *s = c->in;
        c->in += n;
        size_t exact = SIZE_MAX, pre = SIZE_MAX, pre_len = 0;
        for (size_t i = 0; i < c->nstr; i++) {
            size_t l = c->str_len[i];
            if (l == n && memcmp(c->str[i], s, n) == 0) {
                exact = i ? i + PACK_NWORDS : 0;
                break;
            }
            if (l >= 2 && l < n && l > pre_len && memcmp(c->str[i], s, l) == 0) {
                pre = i ? i + PACK_NWORDS : 0;
                pre_len = l;
            }
        }
        for (size_t w = 0; kind == S_WORD && exact == SIZE_MAX && w < PACK_NWORDS; w++)
            if (pack_words[w].n == n && memcmp(pack_words[w].s, s, n) == 0) exact = w + 1;
        if (exact != SIZE_MAX) {
            pk_put(c, 2 * (uint64_t)exact + 1);
        } else if (pre != SIZE_MAX) {
            pk_put(c, 2 * (uint64_t)pre + 2);
            pk_put(c, n - pre_len);
            pk_bytes(c, s + pre_len, n - pre_len);
        } else {
            pk_put(c, 0);
            pk_put(c, n);
            pk_bytes(c, s, n);
        }
        pk_remember(c, s, n);
        return;
    }
    uint64_t code = pk_get(c);
    const uint8_t *base = NULL;
    size_t base_len = 0;
    uint64_t suffix = 0;
    if (code) {
        uint64_t i = (code - 1) / 2;
        if (i == 0) {
            base = c->str[0], base_len = c->str_len[0];
        } else if (i <= PACK_NWORDS) {
            base = (const uint8_t *)pack_words[i - 1].s, base_len = pack_words[i - 1].n;
        } else if (i - PACK_NWORDS < c->nstr) {
            base = c->str[i - PACK_NWORDS], base_len = c->str_len[i - PACK_NWORDS];
        } else {
            c->err = 1;
            return;
        }
    }
    if (code % 2 == 0) {
        suffix = pk_get(c);
        if (c->err || suffix > (uint64_t)(c->end - c->in)) {
            c->err = 1;
            return;
        }
    }
    pk_put(c, bytes_zigzag((int64_t)(base_len + suffix)));
    uint8_t *s = c->out;
    pk_bytes(c, base, base_len);
    pk_bytes(c, c->in, (size_t)suffix);
    if (c->err) return;
    c->in += suffix;
    pk_remember(c, s, base_len + (size_t)suffix);
}

/* The Result schema after request_id, in field order. */
/* The Result fields appended after ledger (schemas/result.avsc), in order,
 * each a [null, X] union: how X is packed. A Result ends after any number of
 * them (one written before some existed), so a packed result with a tail
 * stores how many the Avro held, in one byte before their values. New fields
 * are added at the end of this table only. */
enum { T_ID, T_WORD, T_RAW, T_TS };
static const uint8_t pack_tail[] = {
    T_WORD, /* state */
    T_ID,   /* actor */
    T_RAW,  /* redeemed */
    T_RAW,  /* cancelled_redemptions */
    T_RAW,  /* discount_total */
    T_RAW,  /* orders */
    T_RAW,  /* cancelled_orders */
    T_RAW,  /* hold_ms */
    T_RAW,  /* held */
    T_RAW,  /* expired_orders */
    T_TS,   /* hold_expires_at */
    T_RAW,  /* pending */
    T_TS,   /* next_available_at */
    T_RAW,  /* next_available_amount */
};
#define PACK_NTAIL (sizeof pack_tail / sizeof pack_tail[0])

static void pk_tail(pk *c) {
    size_t n;
    uint8_t *count = NULL;
    if (c->unpack) {
        n = (size_t)pk_get(c);
        if (n > PACK_NTAIL) c->err = 1;
    } else {
        count = c->out;
        pk_put(c, 0); /* a one-byte placeholder: PACK_NTAIL < 128 */
        n = PACK_NTAIL;
    }
    size_t i = 0;
    for (; i < n && !c->err; i++) {
        if (!c->unpack && c->in == c->end) break;
        if (!pk_union(c)) continue;
        switch (pack_tail[i]) {
        case T_ID: pk_str(c, S_ID); break;
        case T_WORD: pk_str(c, S_WORD); break;
        case T_RAW: pk_long(c, L_RAW); break;
        case T_TS: pk_long(c, L_TS); break;
        }
    }
    if (count && !c->err) *count = (uint8_t)i;
}

static void pk_walk(pk *c) {
    pk_long(c, L_RAW);                  /* domain */
    pk_str(c, S_WORD);                  /* command_type */
    pk_long(c, L_RAW);                  /* status */
    if (pk_union(c)) pk_str(c, S_WORD); /* reason */
    pk_str(c, S_ID);                    /* entity_key */
    c->submitted = pk_long(c, L_AT);
    pk_long(c, L_TS);                   /* processed_at */
    if (pk_union(c)) pk_str(c, S_ID);   /* callback_url */
    if (pk_union(c)) pk_str(c, S_ID);   /* client_id */
    pk_long(c, L_RAW);                  /* source_partition */
    pk_long(c, L_RAW);                  /* source_offset */
    pk_long(c, L_RAW);                  /* version */
    if (pk_union(c)) pk_str(c, S_ID);   /* user_id */
    if (pk_union(c)) pk_str(c, S_ID);   /* policy_id */
    if (pk_union(c)) pk_str(c, S_ID);   /* coupon_id */
    if (pk_union(c)) pk_str(c, S_WORD); /* coupon_status */
    if (pk_union(c)) pk_long(c, L_TS);  /* issued_at */
    if (pk_union(c)) pk_long(c, L_TS);  /* expires_at */
    if (pk_union(c)) pk_long(c, L_RAW); /* discount */
    if (pk_union(c)) pk_str(c, S_ID);   /* order_id */
    if (pk_union(c)) pk_long(c, L_RAW); /* order_amount */
    if (pk_union(c)) pk_str(c, S_WORD); /* order_status */
    for (int i = 0; i < 6; i++)         /* quantity, issued, sold, remaining, amount, balance */
        if (pk_union(c)) pk_long(c, L_RAW);
    if (pk_union(c)) pk_long(c, L_TS);                 /* next_expiry_at */
    if (pk_union(c)) pk_long(c, L_RAW);                /* next_expiry_amount */
    if (pk_union(c)) {                                 /* policy */
        pk_str(c, S_ID);                               /* policy_id */
        pk_str(c, S_ID);                               /* name */
        pk_long(c, L_RAW);                             /* discount_type */
        pk_long(c, L_RAW);                             /* discount_value */
        if (pk_union(c)) pk_long(c, L_RAW);            /* max_discount */
        for (int i = 0; i < 3; i++) pk_long(c, L_RAW); /* min_order_amount, total_quantity, per_user_limit */
        pk_long(c, L_TS);                              /* issue_starts_at */
        pk_long(c, L_TS);                              /* issue_ends_at */
        if (pk_union(c)) pk_long(c, L_TS);             /* valid_until */
        if (pk_union(c)) pk_long(c, L_RAW);            /* valid_days */
    }
    if (pk_union(c)) {                                 /* sale */
        for (int i = 0; i < 3; i++) pk_str(c, S_ID);   /* sale_id, product_id, name */
        for (int i = 0; i < 4; i++) pk_long(c, L_RAW); /* prices, stock, per_user_limit */
        pk_long(c, L_TS);                              /* starts_at */
        pk_long(c, L_TS);                              /* ends_at */
    }
    /* ledger: one block of n entries then 0, as the codec writes it. */
    int64_t n = c->unpack ? (int64_t)pk_get(c) : bytes_unzigzag(pk_get(c));
    if (c->err || n < 0 || n > PACK_LEDGER) {
        c->err = 1;
        return;
    }
    pk_put(c, c->unpack ? bytes_zigzag(n) : (uint64_t)n);
    for (int64_t i = 0; i < n && !c->err; i++) {
        for (int k = 0; k < 4; k++) pk_long(c, L_RAW); /* seq, kind, delta, balance_after */
        if (pk_union(c)) pk_str(c, S_ID);              /* order_id */
        if (pk_union(c)) pk_str(c, S_ID);              /* reason */
        if (pk_union(c)) pk_long(c, L_TS);             /* expires_at */
        pk_long(c, L_TS);                              /* at */
    }
    if (n > 0) {
        if (!c->unpack && pk_get(c) != 0) c->err = 1;
        if (c->unpack) pk_put(c, 0);
    }
    if (c->tail) pk_tail(c);
}

size_t result_pack(const char *id, size_t id_len, int64_t at, const uint8_t *body, size_t len, uint8_t *out,
                   size_t out_max) {
    uint8_t bits[RESULT_PACK_BITS] = {0};
    pk c = {.tail = true,
            .in = body,
            .end = body + len,
            .out = out + 1 + RESULT_PACK_BITS,
            .oend = out + out_max,
            .wbits = bits,
            .bits_max = RESULT_PACK_BITS,
            .at = at};
    if (out_max < 1 + RESULT_PACK_BITS) return 0;
    pk_remember(&c, (const uint8_t *)id, id_len);
    pk_walk(&c);
    if (c.err || c.in != c.end) return 0;
    /* Bits first: move the values down behind them. */
    size_t nb = (c.nbits + 7) / 8, values = (size_t)(c.out - (out + 1 + RESULT_PACK_BITS));
    out[0] = (uint8_t)nb;
    memcpy(out + 1, bits, nb);
    memmove(out + 1 + nb, out + 1 + RESULT_PACK_BITS, values);
    return 1 + nb + values;
}

size_t result_unpack(bool tail, const char *id, size_t id_len, int64_t at, const uint8_t *p, size_t len, uint8_t *out,
                     size_t out_max) {
    if (len < 1 || p[0] > RESULT_PACK_BITS || (size_t)p[0] + 1 > len) return SIZE_MAX;
    pk c = {.unpack = true,
            .tail = tail,
            .in = p + 1 + p[0],
            .end = p + len,
            .out = out,
            .oend = out + out_max,
            .rbits = p + 1,
            .bits_max = p[0],
            .at = at};
    pk_remember(&c, (const uint8_t *)id, id_len);
    pk_walk(&c);
    /* Exactly the bits written: an unused bit set would unpack the same
     * from two different byte strings. */
    if (c.err || c.in != c.end || (c.nbits + 7) / 8 != p[0] || (c.nbits % 8 && p[p[0]] >> (c.nbits % 8)))
        return SIZE_MAX;
    return (size_t)(c.out - out);
}
