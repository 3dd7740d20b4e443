/* topics_admin.c — `promoctl topics`: creates the promo topics on a real Kafka
 * cluster and waits until every partition has a leader.
 *
 * The local broker (tools/kafka/) and the production compose file both run
 * it, so the two clusters get the same topics with the same settings:
 *
 *   command topics   retention.ms=-1, retention.bytes=-1: the command log is
 *                    the source of truth; a processor without a checkpoint
 *                    rebuilds a partition by replaying it from offset 0.
 *   promo.results    30 days: long enough to rebuild MySQL from a backup.
 *   promo.dlq        30 days, for the operators.
 *
 * All with cleanup.policy=delete (compaction by key would drop earlier
 * commands of an entity) and min.insync.replicas as given. A topic that
 * exists already is left as it is, but its partition count must be the one
 * asked for: the key-to-partition mapping decides which processor owns an
 * entity, so a different count is an error, never repaired here.
 *
 * Admin requests go through librdkafka's CreateTopics; a cluster still
 * starting answers with retriable errors, so the whole step is retried until
 * the deadline. */
#include "topics_admin.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "topics.h"
#include "util.h"

#define RETENTION_30D "2592000000"

static const struct {
    const char *name;
    const char *retention_ms;
    const char *retention_bytes;
} topic_specs[] = {
    {TOPIC_COUPON_CMD, "-1", "-1"},       {TOPIC_POINT_CMD, "-1", "-1"},    {TOPIC_TIMESALE_CMD, "-1", "-1"},
    {TOPIC_RESULTS, RETENTION_30D, "-1"}, {TOPIC_DLQ, RETENTION_30D, "-1"},
};
#define TOPIC_CNT (sizeof topic_specs / sizeof topic_specs[0])

/* One CreateTopics round for every promo topic. 0 when each exists now
 * (created or found), -1 with errstr otherwise. */
static int create_round(rd_kafka_t *rk, const topics_spec *spec, char *errstr, size_t errstr_size) {
    rd_kafka_NewTopic_t *nt[TOPIC_CNT] = {0};
    char min_isr[16];
    snprintf(min_isr, sizeof min_isr, "%d", spec->min_isr);
    int rc = -1;
    for (size_t i = 0; i < TOPIC_CNT; i++) {
        nt[i] = rd_kafka_NewTopic_new(topic_specs[i].name, spec->partitions, spec->replication, errstr, errstr_size);
        if (!nt[i]) goto done;
        if (rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "delete") ||
            rd_kafka_NewTopic_set_config(nt[i], "retention.ms", topic_specs[i].retention_ms) ||
            rd_kafka_NewTopic_set_config(nt[i], "retention.bytes", topic_specs[i].retention_bytes) ||
            rd_kafka_NewTopic_set_config(nt[i], "min.insync.replicas", min_isr)) {
            snprintf(errstr, errstr_size, "cannot set the configuration of %s", topic_specs[i].name);
            goto done;
        }
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opt, 10000, NULL, 0);
    rd_kafka_AdminOptions_set_request_timeout(opt, 15000, NULL, 0);
    rd_kafka_CreateTopics(rk, nt, TOPIC_CNT, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
    if (!ev) {
        snprintf(errstr, errstr_size, "no answer to CreateTopics");
    } else if (rd_kafka_event_error(ev)) {
        snprintf(errstr, errstr_size, "CreateTopics: %s", rd_kafka_event_error_string(ev));
    } else {
        size_t cnt;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        rc = 0;
        for (size_t i = 0; i < cnt && rc == 0; i++) {
            rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
            if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                snprintf(errstr, errstr_size, "create %s: %s", rd_kafka_topic_result_name(res[i]),
                         rd_kafka_topic_result_error_string(res[i]) ? rd_kafka_topic_result_error_string(res[i])
                                                                    : rd_kafka_err2str(err));
                rc = -1;
            }
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
done:
    for (size_t i = 0; i < TOPIC_CNT; i++)
        if (nt[i]) rd_kafka_NewTopic_destroy(nt[i]);
    return rc;
}

/* 0 when the cluster's metadata shows every promo topic with the expected
 * partition count, each partition led; 1 when not yet; -2 with errstr when a
 * topic has another partition count (final: never repaired). */
static int check_round(rd_kafka_t *rk, const topics_spec *spec, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    /* Asking for all topics never auto-creates one. */
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 5000);
    if (err) {
        snprintf(errstr, errstr_size, "metadata: %s", rd_kafka_err2str(err));
        return 1;
    }
    int rc = 0;
    for (size_t t = 0; t < TOPIC_CNT && rc != -2; t++) {
        const struct rd_kafka_metadata_topic *mt = NULL;
        for (int i = 0; i < md->topic_cnt; i++)
            if (strcmp(md->topics[i].topic, topic_specs[t].name) == 0) mt = &md->topics[i];
        if (!mt || mt->err) {
            snprintf(errstr, errstr_size, "%s: %s", topic_specs[t].name,
                     mt ? rd_kafka_err2str(mt->err) : "not in the metadata yet");
            rc = 1;
            continue;
        }
        if (mt->partition_cnt != spec->partitions) {
            snprintf(errstr, errstr_size, "%s has %d partitions, not %d: the key-to-partition mapping would move",
                     mt->topic, mt->partition_cnt, spec->partitions);
            rc = -2;
            break;
        }
        for (int p = 0; p < mt->partition_cnt; p++)
            if (mt->partitions[p].err || mt->partitions[p].leader < 0) {
                snprintf(errstr, errstr_size, "%s [%d] has no leader yet", mt->topic, p);
                rc = 1;
                break;
            }
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

int topics_ensure(const char *bootstrap, const topics_spec *spec, int timeout_ms, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, errstr_size) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "client.id", "promoctl-topics", errstr, errstr_size) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, errstr_size) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* A producer handle: admin requests need no group and start no fetcher. */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    int64_t deadline = mono_ms() + timeout_ms;
    int rc;
    for (;;) {
        rc = create_round(rk, spec, errstr, errstr_size);
        if (rc == 0) rc = check_round(rk, spec, errstr, errstr_size);
        if (rc == 0 || rc == -2) break;
        /* Anything else may be a cluster still electing leaders or
         * registering brokers: try again until the deadline. */
        if (mono_ms() >= deadline) break;
        sleep_ms(250);
    }
    rd_kafka_destroy(rk);
    return rc == 0 ? 0 : -1;
}

/* Defaults: the partition count of the local fleet (PROMO_KAFKA_PARTITIONS),
 * one replica; production passes 3 and 2 (docker-compose.yml). */
int topics_main(int argc, char **argv) {
    topics_spec spec = {(int)cfg_int("PROMO_KAFKA_PARTITIONS", 12), 1, 1};
    long long timeout_ms = 60000;
    for (int i = 0; i < argc; i++) {
        long long v = i + 1 < argc ? ctl_count(argv[i + 1]) : -1;
        if (v < 1 || v > 100000) return ctl_usage();
        if (strcmp(argv[i], "--partitions") == 0)
            spec.partitions = (int)v;
        else if (strcmp(argv[i], "--replication") == 0)
            spec.replication = (int)v;
        else if (strcmp(argv[i], "--min-isr") == 0)
            spec.min_isr = (int)v;
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            timeout_ms = v;
        else
            return ctl_usage();
        i++;
    }
    char bootstrap[1024], errstr[512];
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, sizeof errstr) != 0 ||
        topics_ensure(bootstrap, &spec, (int)timeout_ms, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "promoctl: topics: %s\n", errstr);
        return 1;
    }
    fprintf(stderr, "promoctl: topics ready: %d partitions, replication %d, min.insync.replicas %d\n", spec.partitions,
            spec.replication, spec.min_isr);
    return 0;
}
