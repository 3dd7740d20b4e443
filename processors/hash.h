/* hash.h — the string hash of the processors' in-memory tables (coupon
 * users, the dedupe window): FNV-1a over the bytes, then murmur3's 64-bit
 * finalizer, so that the high bits, which pick a slot, depend on every input
 * bit. Nothing stored or sent depends on it.
 */
#ifndef PROMO_HASH_H
#define PROMO_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV_BASIS 14695981039346656037ULL
#define HASH_FNV_PRIME 1099511628211ULL

/* Hashes n bytes at s, starting from state h (HASH_FNV_BASIS, or a value
 * derived from it to seed the table). */
static inline uint64_t hash_bytes(uint64_t h, const void *s, size_t n) {
    const uint8_t *p = s;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * HASH_FNV_PRIME;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

#endif
