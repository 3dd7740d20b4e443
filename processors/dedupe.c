/* dedupe.c — the request-id table of a partition (see dedupe.h).
 *
 * A full window is a million ids or more per partition, so the layout is
 * chosen for bytes per id:
 *
 *   segments  An append-only log of byte segments (SEG_BYTES each, one
 *             malloc per segment, never per entry), held in a ring indexed by
 *             segment number. An entry is: the id (a tag byte, then its
 *             characters, or two hex digits a byte: see sid), its
 *             time as a zigzag varint from the segment's base time, the
 *             fingerprint (8 bytes LE), then the stored result: a varint
 *             length, a form byte and the form's bytes (see "results" below).
 *             A segment is also its own checkpoint value, byte for byte:
 *             version byte SEG_VERSION, base time (8 bytes LE), entry count
 *             (2 bytes LE: a value cut at an entry boundary is refused), entries.
 *   table     Open addressing with linear probing over 8-byte slots: 24 bits
 *             of the id's 64-bit hash (which also place the slot, so growing
 *             never rereads an id), 24 bits of segment number and a 16-bit
 *             offset. A tag match is confirmed against the full id in the
 *             segment: two ids never merge, whatever their hashes. Deletion
 *             shifts back the run behind the slot, so there are no tombstones.
 *
 * Forgetting is logical first: an entry is visible only while its time is
 * after now - window, "now" being the last dedupe_expire() argument (the "r:#"
 * checkpoint entry). Memory is given back a segment at a time, from the
 * oldest, once its youngest entry is out of the window; a segment held back by
 * a few much younger entries (a command stamped far ahead of the others) has
 * them moved to the log's end first. Which entries are visible therefore
 * depends only on the commands applied, never on the order a restore read the
 * segments in, so replays give the same answers. An id put again after it was
 * forgotten leaves its old entry in an older segment until that one is freed:
 * the table points at the later position, and load() resolves duplicates the
 * same way (the later segment, or the later offset, wins).
 *
 * Stored results: a result is Confluent-framed Avro beginning with the request
 * id, which the entry already holds, so FORM_FRAMED keeps only the bytes after
 * it and get() rebuilds the frame; FORM_PACKED goes on to pack those bytes
 * field by field (result_pack.c), about a third of their size.
 * Anything else is kept as is (FORM_RAW). FORM_PACKED2 is FORM_PACKED with
 * the fields appended to the Result after its ledger (result_pack.c's
 * pk_tail); FORM_PACKED entries, written before those existed, still load
 * and unpack as they were put. get() returns exactly the bytes
 * put() was given: the frame is compared byte for byte, and a packed form is
 * kept only after unpacking it gave back every byte.
 *
 * Dirty tracking: a segment appended to since the last dump is listed once;
 * a freed segment's number is kept for the next dump as a deletion.
 */
#include "dedupe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "bytes.h"
#include "hash.h"
#include "result_pack.h"

#define SEG_VERSION 2
#define SEG_HEADER 11  /* version, base time, entry count */
#define SEG_BYTES 8192 /* a delta checkpoint rewrites at most this much per partition */
#define SEG_MAX 65535  /* slot offsets are 16 bits */
#define SEQ_BITS 24    /* segment number bits in a slot */
#define SPAN_MAX (1u << 22)
#define META_VERSION 1
#define LEGACY_VERSION 1 /* "r:<id>": version, fingerprint, at, raw result */
#define LEGACY_HEADER 17
#define ENTRY_MAX (1 + PROMO_ID_MAX + 10 + 8 + 3 + 1) /* everything but the result's own bytes */

enum { FORM_RAW = 0, FORM_FRAMED = 1, FORM_PACKED = 2, FORM_PACKED2 = 3 };

/* The most a packed result may unpack to: what a segment can hold, and room
 * for the strings its indexes stand for. */
#define PACK_OUT_MAX (SEG_MAX + 1024)

typedef struct seg {
    uint64_t seq;
    int64_t base_at;
    int64_t max_at; /* youngest entry's time */
    uint32_t len, cap;
    bool dirty;
    uint8_t data[]; /* the checkpoint value: header, then entries */
} seg;

struct dedupe {
    int64_t window_ms;
    uint64_t seed; /* of the id hash */
    int64_t now;
    bool has_now;    /* dedupe_expire() was called: before that nothing is forgotten */
    bool meta_dirty; /* now changed since the last dump */

    uint64_t *slots; /* 0 = empty */
    size_t cap, n;

    seg **ring; /* ring[seq & (ring_cap - 1)]; holes are NULL */
    size_t ring_cap;
    size_t nsegs;
    uint64_t head, tail; /* lowest and highest held segment number, when nsegs > 0 */
    uint64_t next_seq;   /* number of the next new segment: above every one seen */

    uint64_t *dirty; /* numbers of segments changed since the last dump */
    size_t ndirty, dirty_cap;
    uint64_t *gone; /* numbers of segments freed since the last dump */
    size_t ngone, gone_cap;
    char *legacy; /* ids loaded from "r:<id>" entries, NUL-separated: deleted at the next dump */
    size_t legacy_len, legacy_cap;

    size_t seg_bytes;
    uint8_t *scratch; /* a rebuilt result, returned by get() */
    size_t scratch_cap;
    uint8_t *pack; /* a result being packed by put() */
    size_t pack_cap;
};

/* ---- small encodings (varints and zigzag: bytes.h) ------------------------ */

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static bool id_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}
static bool id_ok(const char *s, size_t n) {
    if (n < 1 || n > PROMO_ID_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char_ok(s[i])) return false;
    return true;
}

/* An id as an entry stores it: a tag byte, the id's length, with ID_HEX set
 * when the id is all lowercase hex digits (as ingest makes them: 32 digits)
 * and stored two digits a byte; otherwise the characters as they are. The
 * form is a function of the id, so equal ids have equal forms, and load()
 * refuses a form put() would not have made. */
#define ID_HEX 0x80

typedef struct sid {
    uint8_t tag;
    size_t n; /* bytes in b */
    uint8_t b[PROMO_ID_MAX];
} sid;

static bool hex_digit(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void sid_of(const char *id, size_t len, sid *k) {
    bool hex = len >= 2;
    for (size_t i = 0; i < len && hex; i++) hex = hex_digit(id[i]);
    if (!hex) {
        k->tag = (uint8_t)len;
        k->n = len;
        memcpy(k->b, id, len);
        return;
    }
    k->tag = (uint8_t)(ID_HEX | len);
    k->n = (len + 1) / 2;
    memset(k->b, 0, k->n);
    for (size_t i = 0; i < len; i++) {
        uint8_t v = (uint8_t)(id[i] <= '9' ? id[i] - '0' : id[i] - 'a' + 10);
        k->b[i / 2] |= (uint8_t)(i % 2 ? v : v << 4);
    }
}

/* Bytes a stored id of this tag takes; 0 for a tag no id has. */
static size_t sid_bytes(uint8_t tag) {
    size_t len = tag & ~ID_HEX;
    if (len < 1 || len > PROMO_ID_MAX || (tag & ID_HEX && len < 2)) return 0;
    return tag & ID_HEX ? (len + 1) / 2 : len;
}

/* Writes the id's characters to out (PROMO_ID_MAX bytes); returns its length. */
static size_t sid_text(uint8_t tag, const uint8_t *b, char *out) {
    static const char digits[] = "0123456789abcdef";
    size_t len = tag & ~ID_HEX;
    if (!(tag & ID_HEX)) {
        memcpy(out, b, len);
        return len;
    }
    for (size_t i = 0; i < len; i++) out[i] = digits[(b[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    return len;
}

/* Is this stored id one that sid_of() makes? */
static bool sid_canonical(uint8_t tag, const uint8_t *b) {
    char text[PROMO_ID_MAX];
    size_t len = sid_text(tag, b, text);
    sid k;
    if (!id_ok(text, len)) return false;
    sid_of(text, len, &k);
    return k.tag == tag && memcmp(k.b, b, k.n) == 0;
}

/* FNV-1a over a stored id from a per-table secret start, then a murmur3
 * finalizer so every bit depends on every byte: the top 24 bits place the
 * slot. Request ids come from clients (an Idempotency-Key header): with a
 * known hash, ids that all land in one probe run are cheap to find; with a
 * secret one they are not. Nothing stored depends on it. */
static uint64_t id_hash(uint64_t seed, uint8_t tag, const uint8_t *s, size_t n) {
    return hash_bytes((HASH_FNV_BASIS ^ seed ^ tag) * HASH_FNV_PRIME, s, n);
}

/* now - window, saturating: a clock near the bottom of the range forgets nothing. */
static int64_t cutoff_of(const dedupe *d) {
    int64_t c;
    if (!d->has_now || __builtin_sub_overflow(d->now, d->window_ms, &c)) return INT64_MIN;
    return c;
}

/* ---- entries --------------------------------------------------------------- */

typedef struct ent {
    uint8_t id_tag;    /* see sid */
    const uint8_t *id; /* the stored id's bytes */
    size_t id_len;     /* their number */
    int64_t at;
    uint64_t fp;
    uint8_t form;
    const uint8_t *body; /* the form's bytes */
    size_t body_len;
} ent;

/* Parses the entry at off (bounds-checked). Returns the offset after it, or
 * 0 if malformed. */
static size_t ent_parse(const uint8_t *data, size_t len, int64_t base_at, size_t off, ent *e) {
    const uint8_t *p = data + off, *end = data + len;
    if (p >= end) return 0;
    e->id_tag = *p++;
    e->id_len = sid_bytes(e->id_tag);
    if (!e->id_len || (size_t)(end - p) < e->id_len) return 0;
    e->id = p;
    p += e->id_len;
    uint64_t u;
    size_t k = bytes_uvarint_get(p, end, &u);
    if (!k) return 0;
    p += k;
    e->at = (int64_t)((uint64_t)base_at + (uint64_t)bytes_unzigzag(u));
    if (end - p < 8) return 0;
    e->fp = get_le64(p);
    p += 8;
    if (!(k = bytes_uvarint_get(p, end, &u)) || u < 1 || u > (uint64_t)(end - p - (ptrdiff_t)k)) return 0;
    p += k;
    e->form = p[0];
    e->body = p + 1;
    e->body_len = (size_t)u - 1;
    return (size_t)(p + u - data);
}

/* How a result will be stored: FORM_FRAMED when it begins with the frame and
 * the request id exactly as the codec writes them (the rebuilt prefix is
 * compared byte for byte, so this can never change a result), else raw. */
static uint8_t result_form(const char *id, size_t id_len, const uint8_t *r, size_t len, size_t *skip) {
    uint8_t pre[RESULT_PACK_PREFIX_MAX];
    size_t n = result_pack_prefix(pre, id, id_len);
    if (len >= n && memcmp(r, pre, n) == 0) {
        *skip = n;
        return FORM_FRAMED;
    }
    *skip = 0;
    return FORM_RAW;
}

static int scratch_reserve(dedupe *d, size_t n) {
    if (n <= d->scratch_cap) return 0;
    size_t cap = d->scratch_cap ? d->scratch_cap : 256;
    while (cap < n) cap *= 2;
    uint8_t *p = realloc(d->scratch, cap);
    if (!p) return -1;
    d->scratch = p;
    d->scratch_cap = cap;
    return 0;
}

/* The result an entry stores, exactly as it was put: borrowed from the
 * segment or rebuilt in d->scratch. Returns 0 or -1 (out of memory, or an
 * unknown form, which load() never lets in). */
static int ent_result(dedupe *d, const ent *e, const uint8_t **out, size_t *out_len) {
    char id[PROMO_ID_MAX];
    size_t id_len = sid_text(e->id_tag, e->id, id);
    switch (e->form) {
    case FORM_RAW:
        *out = e->body;
        *out_len = e->body_len;
        return 0;
    case FORM_FRAMED: {
        if (scratch_reserve(d, RESULT_PACK_PREFIX_MAX + e->body_len) != 0) return -1;
        uint8_t *p = d->scratch;
        size_t n = result_pack_prefix(p, id, id_len);
        if (e->body_len) memcpy(p + n, e->body, e->body_len);
        *out = p;
        *out_len = n + e->body_len;
        return 0;
    }
    case FORM_PACKED:
    case FORM_PACKED2: {
        size_t pre = RESULT_PACK_PREFIX_MAX;
        if (scratch_reserve(d, pre + PACK_OUT_MAX) != 0) return -1;
        uint8_t *p = d->scratch;
        size_t n = result_pack_prefix(p, id, id_len);
        size_t m = result_unpack(e->form == FORM_PACKED2, id, id_len, e->at, e->body, e->body_len, p + n, PACK_OUT_MAX);
        if (m == SIZE_MAX) return -1;
        *out = p;
        *out_len = n + m;
        return 0;
    }
    default: return -1;
    }
}

/* ---- segments -------------------------------------------------------------- */

static seg *seg_get(const dedupe *d, uint64_t seq) {
    if (!d->nsegs || seq - d->head > d->tail - d->head) return NULL;
    return d->ring[seq & (d->ring_cap - 1)];
}

/* Makes the ring hold every number from lo to hi. Returns 0 or -1. */
static int ring_span(dedupe *d, uint64_t lo, uint64_t hi) {
    if (hi - lo + 1 > SPAN_MAX) return -1;
    size_t need = (size_t)(hi - lo + 1);
    if (need <= d->ring_cap) return 0;
    size_t cap = d->ring_cap ? d->ring_cap : 16;
    while (cap < need) cap *= 2;
    seg **r = calloc(cap, sizeof *r);
    if (!r) return -1;
    for (size_t i = 0; i < d->ring_cap; i++)
        if (d->ring[i]) r[d->ring[i]->seq & (cap - 1)] = d->ring[i];
    free(d->ring);
    d->ring = r;
    d->ring_cap = cap;
    return 0;
}

/* Places s in the ring; ring_span() must have made room. */
static void ring_put(dedupe *d, seg *s) {
    if (!d->nsegs) {
        d->head = d->tail = s->seq;
    } else {
        if (s->seq - d->head > d->tail - d->head) {
            /* Outside [head, tail]: extend toward the nearer side. */
            if (d->head - s->seq < s->seq - d->tail)
                d->head = s->seq;
            else
                d->tail = s->seq;
        }
    }
    d->ring[s->seq & (d->ring_cap - 1)] = s;
    d->nsegs++;
    d->seg_bytes += sizeof *s + s->cap;
    if (s->seq >= d->next_seq) d->next_seq = s->seq + 1;
}

static int dirty_reserve(dedupe *d) {
    if (d->ndirty < d->dirty_cap) return 0;
    size_t cap = d->dirty_cap ? d->dirty_cap * 2 : 16;
    uint64_t *p = realloc(d->dirty, cap * sizeof *p);
    if (!p) return -1;
    d->dirty = p;
    d->dirty_cap = cap;
    return 0;
}

/* dirty_reserve() first. */
static void seg_mark_dirty(dedupe *d, seg *s) {
    if (s->dirty) return;
    s->dirty = true;
    d->dirty[d->ndirty++] = s->seq;
}

/* ---- table ----------------------------------------------------------------- */

static uint64_t slot_make(uint64_t h, uint64_t seq, size_t off) {
    return (h >> 40) << 40 | (seq & ((1u << SEQ_BITS) - 1)) << 16 | (uint64_t)off;
}
static size_t slot_home(uint64_t slot, size_t cap) {
    return (size_t)(((slot >> 40) * (uint64_t)cap) >> 24);
}
static uint64_t slot_seq(const dedupe *d, uint64_t slot) {
    return d->head + ((((slot >> 16) & ((1u << SEQ_BITS) - 1)) - d->head) & ((1u << SEQ_BITS) - 1));
}
static size_t slot_off(uint64_t slot) {
    return (size_t)(slot & 0xffff);
}

/* The entry a slot points at (it always points into a held segment). */
static int slot_ent(const dedupe *d, uint64_t slot, ent *e, seg **sp) {
    seg *s = seg_get(d, slot_seq(d, slot));
    if (!s || !ent_parse(s->data, s->len, s->base_at, slot_off(slot), e)) return -1;
    if (sp) *sp = s;
    return 0;
}

/* Index of id's slot, or of the empty slot that ends its probe run. */
static size_t table_find(const dedupe *d, uint8_t id_tag, const uint8_t *id, size_t id_len, uint64_t h) {
    uint64_t tag = h >> 40;
    for (size_t i = slot_home(h, d->cap);; i = i + 1 == d->cap ? 0 : i + 1) {
        uint64_t sl = d->slots[i];
        if (!sl) return i;
        ent e;
        if (sl >> 40 == tag && slot_ent(d, sl, &e, NULL) == 0 && e.id_tag == id_tag && e.id_len == id_len &&
            memcmp(e.id, id, id_len) == 0)
            return i;
    }
}

/* Removes slot i, shifting back the entries whose probe run crossed it. */
static void table_delete(dedupe *d, size_t i) {
    for (;;) {
        d->slots[i] = 0;
        size_t j = i;
        for (;;) {
            j = j + 1 == d->cap ? 0 : j + 1;
            if (!d->slots[j]) return;
            size_t k = slot_home(d->slots[j], d->cap);
            /* Move j back to i unless its home lies cyclically in (i, j]. */
            bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (!stays) break;
        }
        d->slots[i] = d->slots[j];
        i = j;
    }
}

/* Makes room for extra more slots at a load of at most 4/5. */
static int table_reserve(dedupe *d, size_t extra) {
    if ((d->n + extra) * 5 <= d->cap * 4) return 0;
    size_t cap = d->cap ? d->cap : 64;
    while ((d->n + extra) * 5 > cap * 4) cap += cap / 2;
    uint64_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < d->cap; i++) {
        uint64_t sl = d->slots[i];
        if (!sl) continue;
        size_t j = slot_home(sl, cap);
        while (slots[j]) j = j + 1 == cap ? 0 : j + 1;
        slots[j] = sl;
    }
    free(d->slots);
    d->slots = slots;
    d->cap = cap;
    return 0;
}

/* The slot pointing at exactly (s, off), or SIZE_MAX. */
static size_t table_find_pos(const dedupe *d, const seg *s, size_t off, const ent *e) {
    uint64_t want = slot_make(id_hash(d->seed, e->id_tag, e->id, e->id_len), s->seq, off);
    for (size_t i = slot_home(want, d->cap);; i = i + 1 == d->cap ? 0 : i + 1) {
        if (!d->slots[i]) return SIZE_MAX;
        if (d->slots[i] == want) return i;
    }
}

/* ---- lifecycle ------------------------------------------------------------- */

dedupe *dedupe_new(int64_t window_ms) {
    dedupe *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->window_ms = window_ms;
    if (getrandom(&d->seed, sizeof d->seed, GRND_NONBLOCK) != (ssize_t)sizeof d->seed) {
        struct timespec ts; /* no entropy yet (early boot): still differs per table and run */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        d->seed = (uint64_t)(uintptr_t)d * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 32;
    }
    return d;
}

void dedupe_destroy(dedupe *d) {
    if (!d) return;
    for (size_t i = 0; i < d->ring_cap; i++) free(d->ring[i]);
    free(d->ring);
    free(d->slots);
    free(d->dirty);
    free(d->gone);
    free(d->legacy);
    free(d->scratch);
    free(d->pack);
    free(d);
}

/* Removes a segment and the slots that point into it, and remembers its
 * number for the next dump (best effort: a segment whose deletion is lost
 * stays in Redis out of the window, and is freed again after a restore). */
static void seg_free(dedupe *d, seg *s) {
    ent e;
    for (size_t off = SEG_HEADER, next; off < s->len; off = next) {
        if (!(next = ent_parse(s->data, s->len, s->base_at, off, &e))) break;
        size_t i = table_find_pos(d, s, off, &e);
        if (i != SIZE_MAX) {
            table_delete(d, i);
            d->n--;
        }
    }
    if (d->ngone == d->gone_cap) {
        size_t cap = d->gone_cap ? d->gone_cap * 2 : 16;
        uint64_t *g = realloc(d->gone, cap * sizeof *g);
        if (g) {
            d->gone = g;
            d->gone_cap = cap;
        }
    }
    if (d->ngone < d->gone_cap) d->gone[d->ngone++] = s->seq;
    d->ring[s->seq & (d->ring_cap - 1)] = NULL;
    d->nsegs--;
    d->seg_bytes -= sizeof *s + s->cap;
    if (s->seq == d->head && d->nsegs) {
        while (!d->ring[++d->head & (d->ring_cap - 1)]) {
        }
    } else if (s->seq == d->tail && d->nsegs) {
        while (!d->ring[--d->tail & (d->ring_cap - 1)]) {
        }
    }
    free(s);
}

/* The segment to append need bytes to: the newest one if it has room, else
 * a new one (based at `at`). NULL on out of memory. Reserves a dirty-list
 * place too, so the caller can then append without failing. */
static seg *seg_for_append(dedupe *d, size_t need, int64_t at) {
    if (dirty_reserve(d) != 0) return NULL;
    seg *t = d->nsegs ? d->ring[d->tail & (d->ring_cap - 1)] : NULL;
    if (t && t->seq + 1 == d->next_seq && t->cap - t->len >= need) return t;
    uint64_t seq = d->next_seq;
    if (ring_span(d, d->nsegs ? d->head : seq, seq) != 0) return NULL;
    size_t cap = SEG_HEADER + need > SEG_BYTES ? SEG_HEADER + need : SEG_BYTES;
    if (cap > SEG_MAX) return NULL;
    seg *s = malloc(sizeof *s + cap);
    if (!s) return NULL;
    s->seq = seq;
    s->base_at = at;
    s->max_at = INT64_MIN;
    s->len = SEG_HEADER;
    s->cap = (uint32_t)cap;
    s->dirty = false;
    s->data[0] = SEG_VERSION;
    put_le64(s->data + 1, (uint64_t)at);
    s->data[9] = s->data[10] = 0;
    ring_put(d, s);
    return s;
}

/* Appends an entry whose result is (form, body) to s; s must have room
 * (ENTRY_MAX + body_len). Returns its offset. */
static size_t seg_append(dedupe *d, seg *s, uint8_t id_tag, const uint8_t *id, size_t id_len, int64_t at, uint64_t fp,
                         uint8_t form, const uint8_t *body, size_t body_len) {
    size_t off = s->len;
    uint8_t *p = s->data + off;
    *p++ = id_tag;
    memcpy(p, id, id_len);
    p += id_len;
    p += bytes_uvarint_put(p, bytes_zigzag((int64_t)((uint64_t)at - (uint64_t)s->base_at)));
    put_le64(p, fp);
    p += 8;
    p += bytes_uvarint_put(p, (uint64_t)body_len + 1);
    *p++ = form;
    if (body_len) memcpy(p, body, body_len);
    p += body_len;
    s->len = (uint32_t)(p - s->data);
    unsigned count = (unsigned)s->data[9] | (unsigned)s->data[10] << 8;
    s->data[9] = (uint8_t)(count + 1);
    s->data[10] = (uint8_t)((count + 1) >> 8);
    if (at > s->max_at) s->max_at = at;
    seg_mark_dirty(d, s);
    return off;
}

/* put() without the id check: appends and points the table at the new entry. */
static int put_entry(dedupe *d, const char *id, size_t id_len, uint64_t fp, int64_t at, uint8_t form,
                     const uint8_t *body, size_t body_len) {
    if (ENTRY_MAX + body_len > SEG_MAX - SEG_HEADER) return -1;
    if (table_reserve(d, 1) != 0) return -1;
    seg *s = seg_for_append(d, ENTRY_MAX + body_len, at);
    if (!s) return -1;
    sid k;
    sid_of(id, id_len, &k);
    uint64_t h = id_hash(d->seed, k.tag, k.b, k.n);
    size_t i = table_find(d, k.tag, k.b, k.n, h);
    size_t off = seg_append(d, s, k.tag, k.b, k.n, at, fp, form, body, body_len);
    if (!d->slots[i]) d->n++;
    d->slots[i] = slot_make(h, s->seq, off);
    return 0;
}

/* ---- the API --------------------------------------------------------------- */

int dedupe_get(dedupe *d, const char *request_id, dedupe_hit *hit) {
    if (!d->n) return 0;
    size_t len = strlen(request_id);
    if (len < 1 || len > PROMO_ID_MAX) return 0;
    sid k;
    sid_of(request_id, len, &k);
    size_t i = table_find(d, k.tag, k.b, k.n, id_hash(d->seed, k.tag, k.b, k.n));
    ent e;
    if (!d->slots[i] || slot_ent(d, d->slots[i], &e, NULL) != 0) return 0;
    if (e.at <= cutoff_of(d)) return 0; /* forgotten, if not yet freed */
    if (ent_result(d, &e, &hit->result, &hit->result_len) != 0) return 0;
    hit->fingerprint = e.fp;
    return 1;
}

/* Packs a framed result's body into d->pack. Returns the packed length, or
 * 0 to store the body as it is: it does not pack, packs no shorter, or does
 * not unpack to the very same bytes. */
static size_t pack_try(dedupe *d, const char *id, size_t id_len, int64_t at, const uint8_t *body, size_t len) {
    size_t max = len + 1 + RESULT_PACK_BITS;
    if (max > d->pack_cap) {
        uint8_t *p = realloc(d->pack, max);
        if (!p) return 0;
        d->pack = p;
        d->pack_cap = max;
    }
    if (scratch_reserve(d, PACK_OUT_MAX) != 0) return 0;
    size_t n = result_pack(id, id_len, at, body, len, d->pack, max);
    if (!n || n >= len) return 0;
    size_t m = result_unpack(true, id, id_len, at, d->pack, n, d->scratch, PACK_OUT_MAX);
    return m == len && memcmp(d->scratch, body, len) == 0 ? n : 0;
}

int dedupe_put(dedupe *d, const char *request_id, uint64_t fingerprint, int64_t at, const uint8_t *result,
               size_t result_len) {
    size_t id_len = strlen(request_id), skip;
    if (!id_ok(request_id, id_len)) return -1;
    uint8_t form = result_form(request_id, id_len, result, result_len, &skip);
    const uint8_t *body = result + skip;
    size_t body_len = result_len - skip, packed;
    if (form == FORM_FRAMED && (packed = pack_try(d, request_id, id_len, at, body, body_len))) {
        form = FORM_PACKED2;
        body = d->pack;
        body_len = packed;
    }
    return put_entry(d, request_id, id_len, fingerprint, at, form, body, body_len);
}

/* Moves the live entries of the oldest segment s to the log's end, so that a
 * few young ones do not hold back the memory of many forgotten ones. Returns
 * 0 when s can now be freed. */
static int seg_evacuate(dedupe *d, seg *s, int64_t cutoff) {
    ent e;
    for (size_t off = SEG_HEADER, next; off < s->len; off = next) {
        if (!(next = ent_parse(s->data, s->len, s->base_at, off, &e))) return -1;
        if (e.at <= cutoff) continue;
        size_t i = table_find_pos(d, s, off, &e);
        if (i == SIZE_MAX) continue; /* put again later: the newer entry holds the id */
        seg *t = seg_for_append(d, ENTRY_MAX + e.body_len, e.at);
        if (!t || t == s) return -1;
        /* e points into s, which stays allocated until freed below. */
        size_t noff = seg_append(d, t, e.id_tag, e.id, e.id_len, e.at, e.fp, e.form, e.body, e.body_len);
        d->slots[i] = slot_make(id_hash(d->seed, e.id_tag, e.id, e.id_len), t->seq, noff);
    }
    return 0;
}

void dedupe_expire(dedupe *d, int64_t now) {
    if (!d->has_now || d->now != now) {
        d->now = now;
        d->has_now = true;
        d->meta_dirty = true;
    }
    int64_t cutoff = cutoff_of(d);
    while (d->nsegs) {
        seg *s = d->ring[d->head & (d->ring_cap - 1)];
        if (s->max_at <= cutoff) {
            seg_free(d, s);
            continue;
        }
        /* Held back: is its oldest entry forgotten while its youngest stays
         * for more than an eighth of the window still? Then evacuate. */
        ent e;
        if (s->len > SEG_HEADER && s->seq + 1 != d->next_seq &&
            ent_parse(s->data, s->len, s->base_at, SEG_HEADER, &e) && e.at <= cutoff &&
            (uint64_t)s->max_at - (uint64_t)cutoff > (uint64_t)(d->window_ms / 8) && seg_evacuate(d, s, cutoff) == 0) {
            seg_free(d, s);
            continue;
        }
        break;
    }
}

/* ---- checkpoint ------------------------------------------------------------ */

static int emit_seg(const seg *s, domain_emit_fn emit, void *ctx) {
    char key[32];
    int klen = snprintf(key, sizeof key, "r:~%llu", (unsigned long long)s->seq);
    return emit(ctx, key, (size_t)klen, s->data, s->len);
}

int dedupe_dump(dedupe *d, int all, domain_emit_fn emit, void *ctx) {
    int rc = 0;
    char key[PROMO_ID_MAX + 3];
    for (size_t i = 0; i < d->ngone && rc == 0; i++) {
        int klen = snprintf(key, sizeof key, "r:~%llu", (unsigned long long)d->gone[i]);
        rc = emit(ctx, key, (size_t)klen, NULL, 0);
    }
    for (size_t off = 0; off < d->legacy_len && rc == 0;) {
        size_t n = strlen(d->legacy + off);
        int klen = snprintf(key, sizeof key, "r:%s", d->legacy + off);
        rc = emit(ctx, key, (size_t)klen, NULL, 0);
        off += n + 1;
    }
    if (all) {
        for (uint64_t q = d->head; d->nsegs && q - d->head <= d->tail - d->head && rc == 0; q++) {
            seg *s = seg_get(d, q);
            if (s) rc = emit_seg(s, emit, ctx);
        }
    } else {
        for (size_t i = 0; i < d->ndirty && rc == 0; i++) {
            seg *s = seg_get(d, d->dirty[i]);
            if (s && s->dirty) rc = emit_seg(s, emit, ctx);
        }
    }
    if (rc == 0 && (all || d->meta_dirty)) {
        uint8_t v[12];
        v[0] = META_VERSION;
        v[1] = d->has_now;
        size_t n = 2 + bytes_uvarint_put(v + 2, bytes_zigzag(d->has_now ? d->now : 0));
        rc = emit(ctx, "r:#", 3, v, n);
    }
    if (rc != 0) return rc;
    for (size_t i = 0; i < d->ndirty; i++) {
        seg *s = seg_get(d, d->dirty[i]);
        if (s) s->dirty = false;
    }
    d->ndirty = 0;
    d->ngone = 0;
    d->legacy_len = 0;
    d->meta_dirty = false;
    return 0;
}

static int load_meta(dedupe *d, const uint8_t *val, size_t val_len) {
    uint64_t u;
    if (val_len < 3 || val[0] != META_VERSION || val[1] > 1) return -1;
    size_t k = bytes_uvarint_get(val + 2, val + val_len, &u);
    if (!k || 2 + k != val_len || (!val[1] && u != 0)) return -1;
    d->has_now = val[1];
    d->now = d->has_now ? bytes_unzigzag(u) : 0;
    return 0;
}

/* Is position (sa, oa) after (sb, ob) in the log? Both segments are held. */
static bool pos_after(const dedupe *d, uint64_t sa, size_t oa, uint64_t sb, size_t ob) {
    return sa != sb ? sa - d->head > sb - d->head : oa > ob;
}

static int load_seg(dedupe *d, const char *num, size_t num_len, const uint8_t *val, size_t val_len) {
    uint64_t seq = 0;
    if (num_len < 1 || num_len > 20 || (num[0] == '0' && num_len > 1)) return -1;
    for (size_t i = 0; i < num_len; i++) {
        if (num[i] < '0' || num[i] > '9' || seq > (UINT64_MAX - (uint64_t)(num[i] - '0')) / 10) return -1;
        seq = seq * 10 + (uint64_t)(num[i] - '0');
    }
    if (seq == UINT64_MAX || val_len < SEG_HEADER || val_len > SEG_MAX || val[0] != SEG_VERSION) return -1;
    int64_t base_at = (int64_t)get_le64(val + 1), max_at = INT64_MIN;
    /* Every entry must parse, to the last byte, before anything changes. */
    size_t count = 0;
    ent e;
    for (size_t off = SEG_HEADER, next; off < val_len; off = next, count++) {
        if (!(next = ent_parse(val, val_len, base_at, off, &e)) || !sid_canonical(e.id_tag, e.id) ||
            e.form > FORM_PACKED2)
            return -1;
        char id[PROMO_ID_MAX];
        size_t id_len = sid_text(e.id_tag, e.id, id);
        if ((e.form == FORM_PACKED || e.form == FORM_PACKED2) &&
            (scratch_reserve(d, PACK_OUT_MAX) != 0 || result_unpack(e.form == FORM_PACKED2, id, id_len, e.at, e.body,
                                                                    e.body_len, d->scratch, PACK_OUT_MAX) == SIZE_MAX))
            return -1;
        if (e.at > max_at) max_at = e.at;
    }
    if (count != ((size_t)val[9] | (size_t)val[10] << 8)) return -1;
    seg *old = seg_get(d, seq);
    if (old) /* a scan may repeat an entry: the same bytes again are fine */
        return old->len == val_len && memcmp(old->data, val, val_len) == 0 ? 0 : -1;
    /* The ring must reach seq; ring_put() extends toward the nearer side. */
    uint64_t lo = seq, hi = seq;
    if (d->nsegs) {
        lo = d->head, hi = d->tail;
        if (seq - d->head > d->tail - d->head) {
            if (d->head - seq < seq - d->tail)
                lo = seq;
            else
                hi = seq;
        }
    }
    if (ring_span(d, lo, hi) != 0) return -1;
    if (table_reserve(d, count) != 0) return -1;
    seg *s = malloc(sizeof *s + val_len);
    if (!s) return -1;
    s->seq = seq;
    s->base_at = base_at;
    s->max_at = max_at;
    s->len = s->cap = (uint32_t)val_len;
    s->dirty = false;
    memcpy(s->data, val, val_len);
    ring_put(d, s);
    for (size_t off = SEG_HEADER, next; off < s->len; off = next) {
        next = ent_parse(s->data, s->len, s->base_at, off, &e);
        uint64_t h = id_hash(d->seed, e.id_tag, e.id, e.id_len);
        size_t i = table_find(d, e.id_tag, e.id, e.id_len, h);
        if (!d->slots[i]) {
            d->slots[i] = slot_make(h, seq, off);
            d->n++;
        } else if (pos_after(d, seq, off, slot_seq(d, d->slots[i]), slot_off(d->slots[i]))) {
            d->slots[i] = slot_make(h, seq, off);
        }
    }
    return 0;
}

static int load_legacy(dedupe *d, const char *id, size_t id_len, const uint8_t *val, size_t val_len) {
    if (!id_ok(id, id_len) || val_len < LEGACY_HEADER || val[0] != LEGACY_VERSION) return -1;
    if (d->legacy_cap - d->legacy_len < id_len + 1) {
        size_t cap = d->legacy_cap ? d->legacy_cap * 2 : 1024;
        while (cap - d->legacy_len < id_len + 1) cap *= 2;
        char *p = realloc(d->legacy, cap);
        if (!p) return -1;
        d->legacy = p;
        d->legacy_cap = cap;
    }
    char rid[PROMO_ID_MAX + 1];
    memcpy(rid, id, id_len);
    rid[id_len] = '\0';
    /* Rewritten in the current layout: the new segment is dirty, so the next
     * dump writes it, and deletes the old entry. */
    if (dedupe_put(d, rid, get_le64(val + 1), (int64_t)get_le64(val + 9), val + LEGACY_HEADER,
                   val_len - LEGACY_HEADER) != 0)
        return -1;
    memcpy(d->legacy + d->legacy_len, rid, id_len + 1);
    d->legacy_len += id_len + 1;
    return 0;
}

int dedupe_load(dedupe *d, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    if (!key || !val || key_len < 3 || memcmp(key, "r:", 2) != 0) return -1;
    if (key_len == 3 && key[2] == '#') return load_meta(d, val, val_len);
    if (key[2] == '~') return load_seg(d, key + 3, key_len - 3, val, val_len);
    return load_legacy(d, key + 2, key_len - 2, val, val_len);
}

size_t dedupe_count(const dedupe *d) {
    return d->n;
}
size_t dedupe_bytes(const dedupe *d) {
    return d->seg_bytes + d->cap * sizeof *d->slots + d->ring_cap * sizeof *d->ring;
}
