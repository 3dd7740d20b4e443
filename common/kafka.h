/* kafka.h — how every program sets up its librdkafka clients, so that the
 * fleet's producers and consumers follow one set of rules.
 *
 * A configuration is built in a kafka_conf, whose errors are sticky (like a
 * hiredis context's): kafka_conf_set() after a failed setting does nothing,
 * and kafka_conf_new_client() reports the first failure. A program's own
 * settings are then plain calls, checked once at the end.
 *
 * The rules every client shares:
 *   - producers: acks=all and enable.idempotence (a retried batch is never
 *     written twice), murmur2_random (a key lands on the partition ingest and
 *     the Java client pick), and max.in.flight from
 *     cfg_kafka_max_in_flight() (util.c says why the dev broker needs 1);
 *   - consumers: offsets are never committed or stored automatically (each
 *     program commits only what it has made durable), the eager `range`
 *     assignor (cooperative-sticky had bugs fixed only after librdkafka
 *     2.0.2), and the session rule of kafka_session_timeout_ms().
 */
#ifndef PROMO_KAFKA_H
#define PROMO_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stddef.h>

typedef struct kafka_conf {
    rd_kafka_conf_t *conf; /* handed to librdkafka by kafka_conf_new_client() */
    int err;               /* sticky: a setting failed, the later ones were skipped */
    char errstr[512];      /* "name=value: why" of the failed setting */
} kafka_conf;

/* PROMO_SESSION_TIMEOUT_MS (default 6000) clamped to 1 s .. 1 h: how long a
 * killed member keeps its partitions. Kept short in the local fleet and the
 * tests; the broker must allow it (group.min.session.timeout.ms, 1000 in
 * tools/kafka). heartbeat.interval.ms is a third of it, librdkafka's and
 * Kafka's recommendation, so one lost heartbeat does not end a session. */
long long kafka_session_timeout_ms(void);

/* Starts kc as a producer's configuration with the shared producer rules. */
void kafka_conf_producer(kafka_conf *kc, const char *bootstrap, const char *client_id);

/* Starts kc as a consumer's configuration in group with the shared consumer
 * rules. rebalance (NULL: none) is called with opaque, inside
 * rd_kafka_consumer_poll() on the polling thread. */
void kafka_conf_consumer(kafka_conf *kc, const char *bootstrap, const char *client_id, const char *group,
                         void (*rebalance)(rd_kafka_t *, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t *,
                                           void *),
                         void *opaque);

/* One more setting; nothing once kc has failed. */
void kafka_conf_set(kafka_conf *kc, const char *name, const char *value);

/* The client of kc's configuration. Always takes kc->conf (freed on any
 * failure). Returns NULL with errstr filled when a setting failed or
 * librdkafka refused; caller frees with rd_kafka_destroy(). */
rd_kafka_t *kafka_conf_new_client(kafka_conf *kc, rd_kafka_type_t type, char *errstr, size_t errstr_size);

/* kafka_conf_new_client() for a consumer in a group, subscribed to topic,
 * its events routed to rd_kafka_consumer_poll(). Same contract. */
rd_kafka_t *kafka_conf_new_consumer(kafka_conf *kc, const char *topic, char *errstr, size_t errstr_size);

/* Waits for the bootstrap list (cfg_kafka_bootstrap()), which the local
 * fleet writes once the brokers answer: a program started before them waits
 * instead of failing, logging once. Returns 0, or -1 when *stop was set
 * first. */
int kafka_wait_bootstrap(char *out, size_t out_size, volatile sig_atomic_t *stop);

#endif
