/* partition.h — which partition owns a key, and what the runtime does with a
 * command found on another one (see partition.c). */
#ifndef PROMO_PARTITION_H
#define PROMO_PARTITION_H

#include <stddef.h>
#include <stdint.h>

/* The partition of key among partitions (> 0), as Java producers and
 * librdkafka's murmur2_random partitioner choose it. */
int32_t murmur2_partition(const void *key, size_t len, int32_t partitions);

typedef enum partition_route {
    PARTITION_APPLY,     /* the partition owns the key (or the count is unknown): apply here */
    PARTITION_FORWARD,   /* another partition owns it: forward it there */
    PARTITION_FORWARDED, /* another owns it, and an earlier owner of this partition forwarded it already */
} partition_route;

/* What to do with a command keyed key (its entity key, already checked),
 * found at offset on partition of a topic with partitions partitions (0 when
 * unknown). forwarded_below is the lowest offset of the partition whose
 * forward is not known to be done (-1: none is). Sets *owner to the owning
 * partition (partition itself when the count is unknown). Pure: no Kafka, no
 * state. */
partition_route partition_route_of(const void *key, size_t len, int32_t partition, int64_t offset, int32_t partitions,
                                   int64_t forwarded_below, int32_t *owner);

#endif
