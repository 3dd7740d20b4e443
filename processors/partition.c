/* partition.c — which partition Kafka's default partitioner gives a key.
 *
 * The processor refuses a command found on another partition than its key's
 * (runtime.c), because an entity must live in exactly one partition's state.
 */
#include "partition.h"

/* Kafka's default partitioner: murmur2 (Java client's variant, seed
 * 0x9747b28c) of the key, sign bit cleared, modulo the partition count. It is
 * what ingest uses (librdkafka's murmur2_random) and what Java producers do;
 * librdkafka does not export it, hence this copy. */
int32_t murmur2_partition(const void *key, size_t len, int32_t partitions) {
    const uint32_t m = 0x5bd1e995;
    const uint8_t *d = key;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    for (; len >= 4; d += 4, len -= 4) {
        uint32_t k = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len) {
    case 3: h ^= (uint32_t)d[2] << 16; /* fall through */
    case 2: h ^= (uint32_t)d[1] << 8;  /* fall through */
    case 1: h ^= d[0]; h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)((h & 0x7fffffff) % (uint32_t)partitions);
}
