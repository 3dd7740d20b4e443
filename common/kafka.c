/* kafka.c — the fleet's librdkafka client rules (kafka.h): a configuration
 * with sticky errors, the settings every producer and every consumer share,
 * the session rule, subscribing, and waiting for the bootstrap list.
 */
#include "kafka.h"

#include <stdio.h>

#include "util.h"

long long kafka_session_timeout_ms(void) {
    long long ms = cfg_int("PROMO_SESSION_TIMEOUT_MS", 6000);
    return ms < 1000 ? 1000 : ms > 3600000 ? 3600000 : ms;
}

static void conf_begin(kafka_conf *kc, const char *bootstrap, const char *client_id) {
    kc->err = 0;
    kc->errstr[0] = '\0';
    kc->conf = rd_kafka_conf_new();
    kafka_conf_set(kc, "bootstrap.servers", bootstrap);
    kafka_conf_set(kc, "client.id", client_id);
}

void kafka_conf_producer(kafka_conf *kc, const char *bootstrap, const char *client_id) {
    conf_begin(kc, bootstrap, client_id);
    kafka_conf_set(kc, "acks", "all");
    kafka_conf_set(kc, "enable.idempotence", "true");
    kafka_conf_set(kc, "partitioner", "murmur2_random");
    kafka_conf_set(kc, "max.in.flight.requests.per.connection", cfg_kafka_max_in_flight());
}

void kafka_conf_consumer(kafka_conf *kc, const char *bootstrap, const char *client_id, const char *group,
                         void (*rebalance)(rd_kafka_t *, rd_kafka_resp_err_t, rd_kafka_topic_partition_list_t *,
                                           void *),
                         void *opaque) {
    conf_begin(kc, bootstrap, client_id);
    if (rebalance) rd_kafka_conf_set_rebalance_cb(kc->conf, rebalance);
    rd_kafka_conf_set_opaque(kc->conf, opaque);
    long long session_ms = kafka_session_timeout_ms();
    char session[24], heartbeat[24];
    snprintf(session, sizeof session, "%lld", session_ms);
    snprintf(heartbeat, sizeof heartbeat, "%lld", session_ms / 3);
    kafka_conf_set(kc, "group.id", group);
    kafka_conf_set(kc, "enable.auto.commit", "false");
    kafka_conf_set(kc, "enable.auto.offset.store", "false");
    kafka_conf_set(kc, "partition.assignment.strategy", "range");
    kafka_conf_set(kc, "session.timeout.ms", session);
    kafka_conf_set(kc, "heartbeat.interval.ms", heartbeat);
}

void kafka_conf_set(kafka_conf *kc, const char *name, const char *value) {
    if (kc->err) return;
    char why[256];
    if (rd_kafka_conf_set(kc->conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        kc->err = 1;
        snprintf(kc->errstr, sizeof kc->errstr, "%s=%s: %s", name, value, why);
    }
}

rd_kafka_t *kafka_conf_new_client(kafka_conf *kc, rd_kafka_type_t type, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = NULL;
    if (kc->err)
        snprintf(errstr, errstr_size, "%s", kc->errstr);
    else
        rk = rd_kafka_new(type, kc->conf, errstr, errstr_size);
    if (!rk) rd_kafka_conf_destroy(kc->conf); /* rd_kafka_new() takes it only on success */
    kc->conf = NULL;
    return rk;
}

rd_kafka_t *kafka_conf_new_consumer(kafka_conf *kc, const char *topic, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = kafka_conf_new_client(kc, RD_KAFKA_CONSUMER, errstr, errstr_size);
    if (!rk) return NULL;
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, errstr_size, "subscribing to %s: %s", topic, rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

int kafka_wait_bootstrap(char *out, size_t out_size, volatile sig_atomic_t *stop) {
    char errstr[256];
    int logged = 0;
    while (!*stop) {
        if (cfg_kafka_bootstrap(out, out_size, errstr, sizeof errstr) == 0) return 0;
        if (!logged++) log_warn("waiting for the Kafka bootstrap list: %s", errstr);
        nap_ms(500, stop);
    }
    return -1;
}
