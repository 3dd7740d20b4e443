/* ctl.h — what promoctl's subcommands share: the clients of the fleet's
 * servers (Kafka, Redis, MySQL) configured from the same PROMO_* variables as
 * the fleet, the domain names, and strict number parsing. One subcommand
 * group per file (submit.c, follow.c, checkpoints.c, dlq.c, lag.c,
 * topics_admin.c); main.c dispatches. Everything here runs on the one thread
 * promoctl has.
 */
#ifndef PROMO_CTL_H
#define PROMO_CTL_H

#include <hiredis.h>
#include <librdkafka/rdkafka.h>
#include <mysql.h>
#include <stddef.h>
#include <stdint.h>

/* How long one Kafka request (produce, metadata, offsets) may take. */
#define CTL_KAFKA_TIMEOUT_MS 10000

/* "coupon", "point", "timesale": the order of promo_domain. */
extern const char *const ctl_domains[3];

/* Prints the usage text to stderr; returns 2, the usage exit status. */
int ctl_usage(void);

/* The index of a domain name in ctl_domains, or -1. */
int ctl_domain_index(const char *name);

/* Strict non-negative decimal, at most 18 digits; -1 otherwise. */
long long ctl_count(const char *s);

/* A producer (the fleet's producer rules, deliveries reported to
 * ctl_produce_sync()) or a consumer in group (NULL: "promoctl") that never
 * commits. Returns NULL with errstr filled. Caller frees with
 * rd_kafka_destroy(). */
rd_kafka_t *ctl_kafka_new(rd_kafka_type_t type, const char *group, char *errstr, size_t errstr_size);
rd_kafka_t *ctl_producer_new(char *errstr, size_t errstr_size);

/* Where a produced message went; set by the delivery callback, which runs on
 * our thread inside rd_kafka_flush(). */
typedef struct ctl_delivery {
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
    int done;
} ctl_delivery;

/* Produces one message and waits for the broker's acknowledgement (acks=all).
 * partition may be RD_KAFKA_PARTITION_UA (by key). Returns 0 with d filled, or
 * -1 with errstr filled. */
int ctl_produce_sync(rd_kafka_t *rk, const char *topic, int32_t partition, const void *key, size_t key_len,
                     const void *val, size_t val_len, ctl_delivery *d, char *errstr, size_t errstr_size);

/* The partition count of topic, or -1 with errstr filled. */
int ctl_topic_partitions(rd_kafka_t *rk, const char *topic, char *errstr, size_t errstr_size);

/* Connections to the fleet's Redis and MySQL, with short timeouts. NULL with
 * errstr filled. Caller frees with redisFree() and mysql_close(). */
redisContext *ctl_redis_new(char *errstr, size_t errstr_size);
MYSQL *ctl_mysql_new(char *errstr, size_t errstr_size);

/* The subcommands: argv holds the arguments after the subcommand's name.
 * Each returns promoctl's exit status (main.c lists them). */
int submit_main(int argc, char **argv);
int follow_main(int argc, char **argv);
int checkpoints_main(int argc, char **argv);
int dlq_main(int argc, char **argv);
int lag_main(int argc, char **argv);
int topics_main(int argc, char **argv);
int reconcile_main(int argc, char **argv);

/* Waits up to timeout_ms for request_id's final status and prints its
 * status JSON (follow.c). Returns 0, or 3 when none was final in time. */
int follow_request(const char *request_id, long long timeout_ms);

#endif
