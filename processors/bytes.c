/* bytes.c — the compact binary encoding of checkpoint entries (see bytes.h).
 *
 * Writers append to a growable buffer and keep a sticky error, so an encoder
 * writes every field and checks once at the end. Readers never trust their
 * input: every read is bounds-checked, a varint longer than ten bytes or one
 * that does not fit 64 bits is malformed, and a failed read returns zero and
 * sets the sticky error, so a decoder reads all fields and checks once.
 */
#include "bytes.h"

#include <stdlib.h>
#include <string.h>

size_t bytes_uvarint_put(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

size_t bytes_uvarint_get(const uint8_t *p, const uint8_t *end, uint64_t *v) {
    uint64_t u = 0;
    for (size_t i = 0; i < 10 && p + i < end; i++) {
        /* The tenth byte may only carry the top bit of a 64-bit value. */
        if (i == 9 && p[i] > 1) return 0;
        u |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = u;
            return i + 1;
        }
    }
    return 0;
}

/* The shift is done on the unsigned value so it is defined for every input. */
uint64_t bytes_zigzag(int64_t v) {
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

int64_t bytes_unzigzag(uint64_t u) {
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

void bytes_w_reset(bytes_w *w) {
    w->len = 0;
    w->err = 0;
}

/* Makes room for n more bytes; returns 0 or -1 (err set). */
static int bytes_w_grow(bytes_w *w, size_t n) {
    if (w->err) return -1;
    if (w->cap - w->len >= n) return 0;
    if (n > SIZE_MAX / 2 - w->len) goto oom;
    size_t cap = w->cap ? w->cap : 64;
    while (cap - w->len < n) cap *= 2;
    uint8_t *d = realloc(w->data, cap);
    if (!d) goto oom;
    w->data = d;
    w->cap = cap;
    return 0;
oom:
    w->err = 1;
    return -1;
}

void bytes_put_u8(bytes_w *w, uint8_t v) {
    if (bytes_w_grow(w, 1) != 0) return;
    w->data[w->len++] = v;
}

void bytes_put_i64(bytes_w *w, int64_t v) {
    if (bytes_w_grow(w, 10) != 0) return;
    w->len += bytes_uvarint_put(w->data + w->len, bytes_zigzag(v));
}

void bytes_put_str(bytes_w *w, const char *s) {
    size_t n = strlen(s);
    bytes_put_i64(w, (int64_t)n);
    if (bytes_w_grow(w, n) != 0) return;
    memcpy(w->data + w->len, s, n);
    w->len += n;
}

void bytes_r_init(bytes_r *r, const uint8_t *data, size_t len) {
    r->p = data;
    r->end = data ? data + len : data;
    r->err = 0;
}

uint8_t bytes_get_u8(bytes_r *r) {
    if (r->err || r->p >= r->end) {
        r->err = 1;
        return 0;
    }
    return *r->p++;
}

int64_t bytes_get_i64(bytes_r *r) {
    uint64_t u;
    size_t n = r->err || !r->p ? 0 : bytes_uvarint_get(r->p, r->end, &u);
    if (!n) {
        r->err = 1;
        return 0;
    }
    r->p += n;
    return bytes_unzigzag(u);
}

void bytes_get_str(bytes_r *r, char *out, size_t out_size) {
    int64_t n = bytes_get_i64(r);
    /* A string with an embedded NUL would silently read back shorter than it
     * was written: treat it as malformed like an overlong one. */
    if (r->err || n < 0 || (uint64_t)n >= out_size || (uint64_t)n > (uint64_t)(r->end - r->p) ||
        memchr(r->p, '\0', (size_t)n)) {
        r->err = 1;
        if (out_size) out[0] = '\0';
        return;
    }
    memcpy(out, r->p, (size_t)n);
    out[n] = '\0';
    r->p += n;
}
