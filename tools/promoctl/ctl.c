/* ctl.c — the helpers promoctl's subcommands share (ctl.h): usage, domain
 * names, strict numbers, and the Kafka, Redis and MySQL clients.
 */
#include "ctl.h"

#include <stdio.h>
#include <string.h>

#include "kafka.h"
#include "redis_conn.h"
#include "util.h"

const char *const ctl_domains[3] = {"coupon", "point", "timesale"};

int ctl_usage(void) {
    fprintf(stderr, "usage: promoctl submit [--follow] <coupon|point|timesale> '<json>'\n"
                    "       promoctl follow [--timeout-ms N] <request_id>\n"
                    "       promoctl checkpoint [--json] <domain> [partition]\n"
                    "       promoctl dlq list [--from-beginning] [--limit N] [--json]\n"
                    "       promoctl dlq replay [--dry-run] <source_offset|topic:partition:offset ...|--all>\n"
                    "       promoctl lag [--json] [domain]\n"
                    "       promoctl topics [--partitions N] [--replication R] [--min-isr M] [--timeout-ms T]\n"
                    "       promoctl reconcile [--repair]\n"
                    "Configuration from PROMO_* variables, as the fleet (docs/configuration.md).\n");
    return 2;
}

int ctl_domain_index(const char *name) {
    for (int i = 0; i < 3; i++)
        if (strcmp(ctl_domains[i], name) == 0) return i;
    return -1;
}

long long ctl_count(const char *s) {
    if (!*s || strlen(s) > 18) return -1;
    long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

rd_kafka_t *ctl_kafka_new(rd_kafka_type_t type, const char *group, char *errstr, size_t errstr_size) {
    char bootstrap[1024];
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, errstr_size) != 0) return NULL;
    kafka_conf kc;
    if (type == RD_KAFKA_PRODUCER) {
        /* The fleet's producer rules: a key lands where ingest's and the
         * processors' messages for that key land. */
        kafka_conf_producer(&kc, bootstrap, "promoctl");
        rd_kafka_conf_set_dr_msg_cb(kc.conf, on_delivery);
    } else {
        kafka_conf_consumer(&kc, bootstrap, "promoctl", group ? group : "promoctl", NULL, NULL);
        kafka_conf_set(&kc, "enable.partition.eof", "true");
    }
    return kafka_conf_new_client(&kc, type, errstr, errstr_size);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    ctl_delivery *d = m->_private;
    d->err = m->err;
    d->partition = m->partition;
    d->offset = m->offset;
    d->done = 1;
}

rd_kafka_t *ctl_producer_new(char *errstr, size_t errstr_size) {
    return ctl_kafka_new(RD_KAFKA_PRODUCER, NULL, errstr, errstr_size);
}

int ctl_produce_sync(rd_kafka_t *rk, const char *topic, int32_t partition, const void *key, size_t key_len,
                     const void *val, size_t val_len, ctl_delivery *d, char *errstr, size_t errstr_size) {
    memset(d, 0, sizeof *d);
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                          RD_KAFKA_V_KEY((void *)key, key_len), RD_KAFKA_V_VALUE((void *)val, val_len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (e) {
        snprintf(errstr, errstr_size, "produce to %s: %s", topic, rd_kafka_err2str(e));
        return -1;
    }
    rd_kafka_flush(rk, CTL_KAFKA_TIMEOUT_MS);
    if (!d->done) {
        snprintf(errstr, errstr_size, "produce to %s: no acknowledgement in %d ms", topic, CTL_KAFKA_TIMEOUT_MS);
        return -1;
    }
    if (d->err) {
        snprintf(errstr, errstr_size, "produce to %s: %s", topic, rd_kafka_err2str(d->err));
        return -1;
    }
    return 0;
}

int ctl_topic_partitions(rd_kafka_t *rk, const char *topic, char *errstr, size_t errstr_size) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, CTL_KAFKA_TIMEOUT_MS);
    int n = -1;
    if (e)
        snprintf(errstr, errstr_size, "metadata of %s: %s", topic, rd_kafka_err2str(e));
    else if (md->topic_cnt != 1 || md->topics[0].err)
        snprintf(errstr, errstr_size, "metadata of %s: %s", topic,
                 md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "no such topic");
    else
        n = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return n;
}

redisContext *ctl_redis_new(char *errstr, size_t errstr_size) {
    const char *host = cfg_str("PROMO_REDIS_HOST", "127.0.0.1");
    int port = (int)cfg_int("PROMO_REDIS_PORT", 6379);
    struct timeval tv = {2, 0};
    redisContext *rc = redis_open(host, port, tv, errstr, errstr_size);
    if (!rc) return NULL;
    redisSetTimeout(rc, tv);
    return rc;
}

MYSQL *ctl_mysql_new(char *errstr, size_t errstr_size) {
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    unsigned int timeout = 3;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    const char *host = cfg_str("PROMO_MYSQL_HOST", "127.0.0.1");
    int port = (int)cfg_int("PROMO_MYSQL_PORT", 3306);
    if (!mysql_real_connect(m, host, cfg_str("PROMO_MYSQL_USER", "promo"), cfg_secret("PROMO_MYSQL_PASSWORD", "promo"),
                            cfg_str("PROMO_MYSQL_DB", "promo"), (unsigned)port, NULL, 0)) {
        snprintf(errstr, errstr_size, "mysql %s:%d: %s", host, port, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}
