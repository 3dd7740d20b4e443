/* result_pack.h — how the dedupe window stores a Result in a third of its
 * bytes, and gives back exactly the bytes it was given.
 *
 * A stored Result begins with what the entry knows already: the Confluent
 * frame of schema 4 and the request id (result_pack_prefix()). The rest, the
 * Avro body, packs field by field (result_pack()); result_unpack() rebuilds
 * the body byte for byte. Pure functions over caller buffers: no allocation,
 * no state, any thread.
 */
#ifndef PROMO_RESULT_PACK_H
#define PROMO_RESULT_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

/* Bytes of union bits a packed result may have: far more unions than a
 * Result has. result_pack() needs out_max >= len + 1 + RESULT_PACK_BITS to
 * have room for whatever it is given. */
#define RESULT_PACK_BITS 64

/* The longest prefix result_pack_prefix() writes. */
#define RESULT_PACK_PREFIX_MAX (5 + 10 + PROMO_ID_MAX)

/* Writes the frame and the request id id (id_len bytes) as the codec writes
 * them at the start of every Result into p (RESULT_PACK_PREFIX_MAX bytes of
 * room). Returns the bytes written. */
size_t result_pack_prefix(uint8_t *p, const char *id, size_t id_len);

/* Packs body (a Result's Avro after its request id; at is the entry's time,
 * the command's submitted_at) into out (at most out_max bytes), the fields
 * after ledger included (a "tail": see pack_tail in result_pack.c). Returns
 * the packed length, or 0 if it cannot be packed. */
size_t result_pack(const char *id, size_t id_len, int64_t at, const uint8_t *body, size_t len, uint8_t *out,
                   size_t out_max);

/* Unpacks into out (at most out_max bytes); tail: packed with the fields
 * after ledger (every result packed since they exist; false for entries
 * stored before). Returns the Avro length, or SIZE_MAX if the packed bytes
 * are malformed or do not fit. */
size_t result_unpack(bool tail, const char *id, size_t id_len, int64_t at, const uint8_t *p, size_t len, uint8_t *out,
                     size_t out_max);

#endif
