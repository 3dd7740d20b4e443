/* partition.h — Kafka's default partitioner (see partition.c). */
#ifndef PROMO_PARTITION_H
#define PROMO_PARTITION_H

#include <stddef.h>
#include <stdint.h>

/* The partition of key among partitions (> 0), as Java producers and
 * librdkafka's murmur2_random partitioner choose it. */
int32_t murmur2_partition(const void *key, size_t len, int32_t partitions);

#endif
