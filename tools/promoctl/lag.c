/* lag.c — `promoctl lag [--json] [domain]`: each consumer group's committed
 * offsets against the high watermarks: the processors' groups on their
 * command topics, the MySQL sink's on promo.results. Reads the groups'
 * offsets without joining them.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "ctl.h"
#include "topics.h"
#include "util.h"

/* Prints one group's lag on topic; returns 0 or -1 with errstr filled. */
static int lag_group(const char *group, const char *topic, int json, int64_t *total, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = ctl_kafka_new(RD_KAFKA_CONSUMER, group, errstr, errstr_size);
    if (!rk) return -1;
    int rc = -1;
    rd_kafka_topic_partition_list_t *l = NULL;
    int n = ctl_topic_partitions(rk, topic, errstr, errstr_size);
    if (n < 0) goto out;
    l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) rd_kafka_topic_partition_list_add(l, topic, p);
    /* Reads the group's committed offsets (OffsetFetch) without joining it. */
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, CTL_KAFKA_TIMEOUT_MS);
    if (e) {
        snprintf(errstr, errstr_size, "committed offsets of %s: %s", group, rd_kafka_err2str(e));
        goto out;
    }
    *total = 0;
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo, hi;
        e = rd_kafka_query_watermark_offsets(rk, topic, l->elems[i].partition, &lo, &hi, CTL_KAFKA_TIMEOUT_MS);
        if (e) {
            snprintf(errstr, errstr_size, "watermarks of %s[%d]: %s", topic, l->elems[i].partition,
                     rd_kafka_err2str(e));
            goto out;
        }
        int64_t committed = l->elems[i].offset;
        /* Nothing committed yet: everything still in the log is behind. */
        int64_t lag = committed >= 0 ? hi - committed : hi - lo;
        if (lag < 0) lag = 0;
        *total += lag;
        if (json) {
            json_t *o = json_pack("{s:s,s:s,s:i,s:I,s:I}", "group", group, "topic", topic, "partition",
                                  (int)l->elems[i].partition, "high", (json_int_t)hi, "lag", (json_int_t)lag);
            if (o) {
                json_object_set_new(o, "committed", committed >= 0 ? json_integer(committed) : json_null());
                char *s = json_dumps(o, JSON_COMPACT);
                if (s) printf("%s\n", s);
                free(s);
                json_decref(o);
            }
        } else {
            char c[24];
            if (committed >= 0)
                snprintf(c, sizeof c, "%" PRId64, committed);
            else
                snprintf(c, sizeof c, "-");
            printf("%-18s %-20s %9d %12s %12" PRId64 " %9" PRId64 "\n", group, topic, (int)l->elems[i].partition, c, hi,
                   lag);
        }
    }
    if (!json) printf("%-18s %-20s %9s %12s %12s %9" PRId64 "\n", group, topic, "total", "", "", *total);
    rc = 0;
out:
    if (l) rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

int lag_main(int argc, char **argv) {
    int json = 0, i = 0;
    if (i < argc && strcmp(argv[i], "--json") == 0) json = 1, i++;
    if (argc - i > 1 || (argc - i == 1 && ctl_domain_index(argv[i]) < 0)) return ctl_usage();
    if (!json) printf("%-18s %-20s %9s %12s %12s %9s\n", "group", "topic", "partition", "committed", "high", "lag");
    char errstr[512], group[64];
    int64_t total;
    for (int d = 0; d < 3; d++) {
        if (argc - i == 1 && strcmp(argv[i], ctl_domains[d]) != 0) continue;
        snprintf(group, sizeof group, "promo-%s", ctl_domains[d]);
        if (lag_group(group, topic_cmd((promo_domain)d), json, &total, errstr, sizeof errstr) != 0) goto fail;
    }
    /* The sinks read every domain's results. */
    if (lag_group(cfg_str("PROMO_SINK_GROUP", "promo-sink-mysql"), TOPIC_RESULTS, json, &total, errstr,
                  sizeof errstr) != 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "promoctl: %s\n", errstr);
    return 1;
}
