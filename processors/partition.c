/* partition.c — which partition owns a key, and where a command found on
 * another partition goes.
 *
 * An entity lives in exactly one partition's state: the one murmur2 of its
 * key gives, as ingest and the Java client partition. A producer may hash
 * otherwise (librdkafka's default partitioner is CRC32) or name a partition
 * itself; the runtime (runtime.c) then forwards the command to its owner
 * instead of applying it where it landed, where the entity would be created
 * or counted a second time. partition_route_of() is that decision, kept free
 * of Kafka so it can be tested alone.
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

/* A forward is produced before the checkpoint that passes its offset (the
 * runtime flushes first), and the group's committed offset trails that
 * checkpoint: so every command below the committed offset an owner found at
 * assignment was forwarded and acknowledged already. Replaying those again
 * (Redis lost the checkpoint, or an operator deleted it to regenerate the
 * results) must not forward them again: the owner remembers request ids for
 * a window only (24 h of command time), and a forward of an older command
 * would be applied a second time. Above it, a replay forwards again, and the
 * owner's dedupe answers the repeat, which is recent. Only forwards are
 * skipped: a command its partition owns is always applied, which is how a
 * replay rebuilds the state. */
partition_route partition_route_of(const void *key, size_t len, int32_t partition, int64_t offset, int32_t partitions,
                                   int64_t forwarded_below, int32_t *owner) {
    *owner = partition;
    if (partitions <= 0) return PARTITION_APPLY; /* unknown: checking would be guessing */
    *owner = murmur2_partition(key, len, partitions);
    if (*owner == partition) return PARTITION_APPLY;
    return offset < forwarded_below ? PARTITION_FORWARDED : PARTITION_FORWARD;
}
