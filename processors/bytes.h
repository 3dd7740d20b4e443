/* bytes.h — the compact binary encoding of checkpoint entries.
 *
 * Checkpoint values are internal (never on the public wire), written on the
 * hot path and read back only by the same program, so they use a small
 * hand-written format rather than Avro: a version byte, then fields as zigzag
 * varints and length-prefixed strings. Readers are bounds-checked and report
 * malformed input instead of reading past the end. The dedupe window's
 * segments and packed results use the same varints (the primitives below).
 */
#ifndef PROMO_BYTES_H
#define PROMO_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* The primitives, over caller memory. An unsigned LEB128 varint takes at
 * most 10 bytes; zigzag maps signed to unsigned so small magnitudes stay
 * short. bytes_uvarint_get() reads at p, never at or past end, and returns
 * the bytes read, or 0 when the varint is truncated, longer than 10 bytes or
 * does not fit 64 bits. */
size_t bytes_uvarint_put(uint8_t *p, uint64_t v);
size_t bytes_uvarint_get(const uint8_t *p, const uint8_t *end, uint64_t *v);
uint64_t bytes_zigzag(int64_t v);
int64_t bytes_unzigzag(uint64_t u);

typedef struct bytes_w {
    uint8_t *data; /* owned; free() when done */
    size_t len, cap;
    int err; /* sticky: set on out of memory */
} bytes_w;

void bytes_w_reset(bytes_w *w);
void bytes_put_u8(bytes_w *w, uint8_t v);
void bytes_put_i64(bytes_w *w, int64_t v);     /* zigzag varint */
void bytes_put_str(bytes_w *w, const char *s); /* varint length + bytes */

typedef struct bytes_r {
    const uint8_t *p, *end;
    int err; /* sticky: set when a read runs past the end or is malformed */
} bytes_r;

void bytes_r_init(bytes_r *r, const uint8_t *data, size_t len);
uint8_t bytes_get_u8(bytes_r *r);
int64_t bytes_get_i64(bytes_r *r);
/* Copies a string into out (size out_size, NUL-terminated); a longer string
 * sets err. */
void bytes_get_str(bytes_r *r, char *out, size_t out_size);

#endif
