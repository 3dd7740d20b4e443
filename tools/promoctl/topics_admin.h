/* topics_admin.h — creating the promo topics on a Kafka cluster (topics_admin.c). */
#ifndef PROMO_TOPICS_ADMIN_H
#define PROMO_TOPICS_ADMIN_H

#include <stddef.h>

typedef struct topics_spec {
    int partitions;  /* per topic; fixed for the life of the cluster */
    int replication; /* replication factor */
    int min_isr;     /* min.insync.replicas: acks=all needs this many copies */
} topics_spec;

/* Creates every promo topic that is missing on the cluster at bootstrap and
 * waits, up to timeout_ms, until each has spec->partitions partitions with a
 * leader. Retries what a starting cluster refuses. Returns 0, or -1 with
 * errstr (also when a topic exists with another partition count). */
int topics_ensure(const char *bootstrap, const topics_spec *spec, int timeout_ms, char *errstr, size_t errstr_size);

#endif
