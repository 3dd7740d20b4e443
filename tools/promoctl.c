/* promoctl.c — the operator's command line for a running fleet.
 *
 *   promoctl submit [--follow] <domain> <json>    produce one command (acks=all), print its request id
 *   promoctl follow [--timeout-ms N] <request_id> wait for a request's outcome, print its status JSON
 *   promoctl checkpoint [--json] <domain> [partition]
 *                                                 a partition's checkpoint: offset, epoch, entries, age
 *   promoctl dlq list [--from-beginning] [--limit N] [--json]
 *                                                 decode and show dead letters from promo.dlq
 *   promoctl dlq replay [--dry-run] <selector...|--all>
 *                                                 republish dead letters' original bytes and key
 *   promoctl lag [--json] [domain]                consumer groups' committed offsets vs high watermarks
 *   promoctl topics [--partitions N] [--replication R] [--min-isr M] [--timeout-ms T]
 *                                                 create the promo topics that are missing (tools/topics.c)
 *
 * It talks to the same servers as the fleet, configured by the same PROMO_*
 * variables (PROMO_KAFKA_BOOTSTRAP[_FILE], PROMO_REDIS_*, PROMO_MYSQL_*,
 * PROMO_WEBHOOK_ALLOW), so the same binary works next to the local fleet and
 * inside a container of the production compose file. A command submitted
 * here goes through ingest's own parser and validator (ingest/parse.c), so
 * the CLI accepts exactly what HTTP accepts; the JSON is the HTTP body plus
 * "type" (the Avro record name, e.g. "IssueCoupon") and the path ids as
 * fields ("policy_id", "coupon_id", "user_id", "sale_id", "order_id"), and
 * may carry "request_id" and "client_id".
 *
 * Dead letters are decoded here with Avro-C's generic reader against the
 * embedded DeadLetter schema (the codec only encodes them). A replay sends
 * the original value with the original key to the original topic, through
 * the same partitioner as ingest: use it after fixing what rejected the
 * message (a processor upgrade that knows a new schema id, a relaxed rule),
 * never to bypass validation. Replayed messages are new messages; the
 * processors' request-id dedupe makes replaying one twice harmless.
 *
 * Exit status: 0 done, 1 failure, 2 usage, 3 `follow` saw no final status in
 * time. Reads stdin never; writes results to stdout, progress to stderr.
 */
#include <avro.h>
#include <errno.h>
#include <hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cmd.h"
#include "codec.h"
#include "../ingest/parse.h"
#include "topics_admin.h"
#include "util.h"

#define DLQ_TOPIC "promo.dlq"
#define RESULTS_TOPIC "promo.results"
#define KAFKA_TIMEOUT_MS 10000
#define REQ_PREFIX "promo:req:"

extern const char schema_dead_letter[];

static const char *const domains[] = {"coupon", "point", "timesale"};

static int usage(void) {
    fprintf(stderr, "usage: promoctl submit [--follow] <coupon|point|timesale> '<json>'\n"
                    "       promoctl follow [--timeout-ms N] <request_id>\n"
                    "       promoctl checkpoint [--json] <domain> [partition]\n"
                    "       promoctl dlq list [--from-beginning] [--limit N] [--json]\n"
                    "       promoctl dlq replay [--dry-run] <source_offset|topic:partition:offset ...|--all>\n"
                    "       promoctl lag [--json] [domain]\n"
                    "       promoctl topics [--partitions N] [--replication R] [--min-isr M] [--timeout-ms T]\n"
                    "Configuration from PROMO_* variables, as the fleet (docs/configuration.md).\n");
    return 2;
}

static int domain_index(const char *name) {
    for (int i = 0; i < 3; i++)
        if (strcmp(domains[i], name) == 0) return i;
    return -1;
}

/* Strict non-negative decimal, at most 18 digits; -1 otherwise. */
static long long parse_count(const char *s) {
    if (!*s || strlen(s) > 18) return -1;
    long long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- Kafka ------------------------------------------------------------------ */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/* A producer or consumer on the configured cluster. Returns NULL with errstr
 * filled. Caller frees with rd_kafka_destroy(). */
static rd_kafka_t *kafka_new(rd_kafka_type_t type, const char *group, char *errstr, size_t errstr_size) {
    char bootstrap[1024];
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, errstr_size) != 0) return NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *common[][2] = {{"bootstrap.servers", bootstrap}, {"client.id", "promoctl"}};
    /* The same partitioner as ingest and the processors: a key lands where
     * their messages for that key land. */
    const char *prod[][2] = {{"acks", "all"},
                             {"enable.idempotence", "true"},
                             {"partitioner", "murmur2_random"},
                             {"max.in.flight.requests.per.connection", cfg_kafka_max_in_flight()}};
    const char *cons[][2] = {{"group.id", group ? group : "promoctl"},
                             {"enable.auto.commit", "false"},
                             {"enable.auto.offset.store", "false"},
                             {"enable.partition.eof", "true"}};
    int bad = 0;
    for (size_t i = 0; i < 2 && !bad; i++)
        bad = rd_kafka_conf_set(conf, common[i][0], common[i][1], errstr, errstr_size) != RD_KAFKA_CONF_OK;
    if (type == RD_KAFKA_PRODUCER)
        for (size_t i = 0; i < 4 && !bad; i++)
            bad = rd_kafka_conf_set(conf, prod[i][0], prod[i][1], errstr, errstr_size) != RD_KAFKA_CONF_OK;
    else
        for (size_t i = 0; i < 4 && !bad; i++)
            bad = rd_kafka_conf_set(conf, cons[i][0], cons[i][1], errstr, errstr_size) != RD_KAFKA_CONF_OK;
    if (bad) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (type == RD_KAFKA_PRODUCER) rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, errstr_size); /* takes conf on success */
    if (!rk) rd_kafka_conf_destroy(conf);
    return rk;
}

/* Where a produced message went; set by the delivery callback, which runs on
 * our thread inside rd_kafka_flush(). */
typedef struct delivery {
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
    int done;
} delivery;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    delivery *d = m->_private;
    d->err = m->err;
    d->partition = m->partition;
    d->offset = m->offset;
    d->done = 1;
}

static rd_kafka_t *producer_new(char *errstr, size_t errstr_size) {
    return kafka_new(RD_KAFKA_PRODUCER, NULL, errstr, errstr_size);
}

/* Produces one message and waits for the broker's acknowledgement (acks=all).
 * partition may be RD_KAFKA_PARTITION_UA (by key). Returns 0 with d filled, or
 * -1 with errstr filled. */
static int produce_sync(rd_kafka_t *rk, const char *topic, int32_t partition, const void *key, size_t key_len,
                        const void *val, size_t val_len, delivery *d, char *errstr, size_t errstr_size) {
    memset(d, 0, sizeof *d);
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                          RD_KAFKA_V_KEY((void *)key, key_len), RD_KAFKA_V_VALUE((void *)val, val_len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (e) {
        snprintf(errstr, errstr_size, "produce to %s: %s", topic, rd_kafka_err2str(e));
        return -1;
    }
    rd_kafka_flush(rk, KAFKA_TIMEOUT_MS);
    if (!d->done) {
        snprintf(errstr, errstr_size, "produce to %s: no acknowledgement in %d ms", topic, KAFKA_TIMEOUT_MS);
        return -1;
    }
    if (d->err) {
        snprintf(errstr, errstr_size, "produce to %s: %s", topic, rd_kafka_err2str(d->err));
        return -1;
    }
    return 0;
}

/* The partition count of topic, or -1 with errstr filled. */
static int topic_partitions(rd_kafka_t *rk, const char *topic, char *errstr, size_t errstr_size) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, KAFKA_TIMEOUT_MS);
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

/* ---- Redis and MySQL ---------------------------------------------------------- */

static redisContext *redis_new(char *errstr, size_t errstr_size) {
    const char *host = cfg_str("PROMO_REDIS_HOST", "127.0.0.1");
    int port = (int)cfg_int("PROMO_REDIS_PORT", 6379);
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout(host, port, tv);
    if (!rc || rc->err) {
        snprintf(errstr, errstr_size, "redis %s:%d: %s", host, port, rc ? rc->errstr : "out of memory");
        if (rc) redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, tv);
    return rc;
}

static MYSQL *mysql_new(char *errstr, size_t errstr_size) {
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
    if (!mysql_real_connect(m, host, cfg_str("PROMO_MYSQL_USER", "promo"), cfg_str("PROMO_MYSQL_PASSWORD", "promo"),
                            cfg_str("PROMO_MYSQL_DB", "promo"), (unsigned)port, NULL, 0)) {
        snprintf(errstr, errstr_size, "mysql %s:%d: %s", host, port, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

/* ---- submit ------------------------------------------------------------------- */

/* The JSON fields that HTTP carries in the path, per command type. */
static const char *const path_ids[CMD__COUNT][2] = {
    [CMD_ISSUE_COUPON] = {"policy_id", NULL},      [CMD_REDEEM_COUPON] = {"coupon_id", NULL},
    [CMD_CANCEL_REDEMPTION] = {"coupon_id", NULL}, [CMD_EARN_POINTS] = {"user_id", NULL},
    [CMD_USE_POINTS] = {"user_id", NULL},          [CMD_CANCEL_POINT_USE] = {"user_id", NULL},
    [CMD_PLACE_ORDER] = {"sale_id", NULL},         [CMD_CANCEL_ORDER] = {"sale_id", "order_id"},
    [CMD_PAUSE_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_RESUME_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_CLOSE_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_UPDATE_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_PAUSE_TIME_SALE] = {"sale_id", NULL},
    [CMD_RESUME_TIME_SALE] = {"sale_id", NULL},
    [CMD_CLOSE_TIME_SALE] = {"sale_id", NULL},
    [CMD_UPDATE_TIME_SALE] = {"sale_id", NULL},
    [CMD_HOLD_ORDER] = {"sale_id", NULL},
    [CMD_CONFIRM_ORDER] = {"sale_id", "order_id"},
    [CMD_EARN_PENDING_POINTS] = {"user_id", NULL},
    [CMD_ADJUST_POINTS] = {"user_id", NULL},
};

/* Takes a string field out of obj into out. Returns 0 (absent leaves out
 * as it is), or -1 with errstr filled. */
static int take_string(json_t *obj, const char *name, char *out, size_t out_size, char *errstr, size_t errstr_size) {
    json_t *v = json_object_get(obj, name);
    if (!v) return 0;
    if (!json_is_string(v) || json_string_length(v) >= out_size) {
        snprintf(errstr, errstr_size, "%s must be a string of at most %zu bytes", name, out_size - 1);
        return -1;
    }
    snprintf(out, out_size, "%s", json_string_value(v));
    json_object_del(obj, name);
    return 0;
}

/* Builds and validates a command from the CLI's JSON. Returns 0, or -1 with
 * errstr filled. */
static int submit_build(const char *text, promo_cmd *cmd, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *obj = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj || !json_is_object(obj)) {
        snprintf(errstr, errstr_size, "the command must be a JSON object%s%s", obj ? "" : ": ", obj ? "" : jerr.text);
        json_decref(obj);
        return -1;
    }
    int rc = -1;
    char type[48] = "", request_id[PROMO_ID_MAX + 1] = "", client_id[PROMO_ID_MAX + 1] = "";
    char *body = NULL;
    if (take_string(obj, "type", type, sizeof type, errstr, errstr_size) ||
        take_string(obj, "request_id", request_id, sizeof request_id, errstr, errstr_size) ||
        take_string(obj, "client_id", client_id, sizeof client_id, errstr, errstr_size))
        goto out;
    int t = cmd_type_from_name(type);
    if (t < 0) {
        snprintf(errstr, errstr_size, "\"type\" must be a command record name such as \"IssueCoupon\"");
        goto out;
    }
    /* A HoldOrder goes by the orders route (with hold_ms), an
     * EarnPendingPoints by the earn route (with available_at); the commands
     * only processors produce (ExpireHold, ReleasePoints) have no route. */
    cmd_type by = t == CMD_HOLD_ORDER ? CMD_PLACE_ORDER : t == CMD_EARN_PENDING_POINTS ? CMD_EARN_POINTS : (cmd_type)t;
    parse_route route = {.id = ROUTE_NONE};
    for (int r = 0; r < ROUTE__COUNT; r++)
        if (parse_route_is_write((parse_route_id)r) && parse_route_cmd((parse_route_id)r) == by)
            route.id = (parse_route_id)r;
    char *ids[2] = {route.id1, route.id2};
    size_t sizes[2] = {sizeof route.id1, sizeof route.id2};
    for (int i = 0; i < 2; i++) {
        const char *name = path_ids[t][i];
        if (!name) continue;
        if (take_string(obj, name, ids[i], sizes[i], errstr, errstr_size)) goto out;
        if (!ids[i][0]) {
            snprintf(errstr, errstr_size, "%s is required", name);
            goto out;
        }
    }
    if (!request_id[0]) {
        uint8_t rnd[8];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
            snprintf(errstr, errstr_size, "getrandom: %s", strerror(errno));
            goto out;
        }
        snprintf(request_id, sizeof request_id, "ctl-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
                 rnd[4], rnd[5], rnd[6], rnd[7]);
    }
    body = json_dumps(obj, JSON_COMPACT);
    if (!body) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    parse_input in = {
        .route = &route,
        .content_type = "application/json",
        .body = body,
        .body_len = strlen(body),
        .idempotency_key = request_id,
        .client_id = client_id[0] ? client_id : NULL,
        .now_ms = now_ms(),
        .webhook_allow = cfg_str("PROMO_WEBHOOK_ALLOW", "127.0.0.1,localhost"),
    };
    parse_error perr;
    if (parse_cmd(&in, cmd, &perr) != 0) {
        snprintf(errstr, errstr_size, "%s%s%s: %s", perr.code, perr.field[0] ? " " : "", perr.field, perr.message);
        goto out;
    }
    rc = 0;
out:
    free(body);
    json_decref(obj);
    return rc;
}

static int cmd_follow_id(const char *request_id, long long timeout_ms);

static int cmd_submit(int argc, char **argv) {
    int follow = 0, i = 0;
    if (i < argc && strcmp(argv[i], "--follow") == 0) follow = 1, i++;
    if (argc - i != 2) return usage();
    int d = domain_index(argv[i]);
    if (d < 0) return usage();
    char errstr[512];
    promo_cmd cmd;
    if (submit_build(argv[i + 1], &cmd, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        return 1;
    }
    if ((int)cmd_domain(cmd.type) != d) {
        fprintf(stderr, "promoctl: %s belongs to the %s domain, not %s\n", cmd_type_name(cmd.type),
                promo_domain_name(cmd_domain(cmd.type)), domains[d]);
        return 1;
    }
    char key[PROMO_ID_MAX + 1], topic[64];
    if (cmd_entity_key(&cmd, key, sizeof key) != 0) {
        fprintf(stderr, "promoctl: no entity key in the command\n");
        return 1;
    }
    snprintf(topic, sizeof topic, "promo.%s.cmd", domains[d]);
    int rc = 1;
    codec_buf buf = {0};
    rd_kafka_t *rk = NULL;
    codec *c = codec_new(errstr, sizeof errstr);
    if (!c || codec_encode_cmd(c, &cmd, &buf, errstr, sizeof errstr) != CODEC_OK) goto fail;
    if (!(rk = producer_new(errstr, sizeof errstr))) goto fail;
    delivery dv;
    if (produce_sync(rk, topic, RD_KAFKA_PARTITION_UA, key, strlen(key), buf.data, buf.len, &dv, errstr,
                     sizeof errstr) != 0)
        goto fail;
    fprintf(stderr, "promoctl: %s %s acknowledged at %s[%d]@%" PRId64 "\n", cmd_type_name(cmd.type), cmd.request_id,
            topic, (int)dv.partition, dv.offset);
    printf("%s\n", cmd.request_id);
    fflush(stdout);
    rc = follow ? cmd_follow_id(cmd.request_id, 30000) : 0;
    goto out;
fail:
    fprintf(stderr, "promoctl: %s\n", errstr);
out:
    if (rk) rd_kafka_destroy(rk);
    free(buf.data);
    codec_destroy(c);
    return rc;
}

/* ---- follow ------------------------------------------------------------------- */

/* The status JSON of a request from Redis, else from MySQL; NULL when neither
 * has it (yet). Caller frees. Unreachable stores are skipped with a warning
 * once: the other one may answer. */
static char *status_lookup(redisContext **rc, MYSQL **my, const char *request_id, int *warned) {
    char errstr[512];
    if (!*rc || (*rc)->err) {
        if (*rc) redisFree(*rc);
        *rc = redis_new(errstr, sizeof errstr);
        if (!*rc && !(*warned & 1)) fprintf(stderr, "promoctl: %s\n", errstr), *warned |= 1;
    }
    if (*rc) {
        redisReply *r = redisCommand(*rc, "GET " REQ_PREFIX "%s", request_id);
        char *out = NULL;
        if (r && r->type == REDIS_REPLY_STRING) out = strndup(r->str, r->len);
        if (r) freeReplyObject(r);
        if (out) return out;
    }
    if (!*my) {
        *my = mysql_new(errstr, sizeof errstr);
        if (!*my && !(*warned & 2)) fprintf(stderr, "promoctl: %s\n", errstr), *warned |= 2;
    }
    if (*my) {
        char esc[2 * PROMO_ID_MAX + 1], q[256];
        size_t n = strlen(request_id);
        if (n > PROMO_ID_MAX) return NULL;
        mysql_real_escape_string(*my, esc, request_id, (unsigned long)n);
        snprintf(q, sizeof q, "SELECT result FROM requests WHERE request_id = '%s'", esc);
        if (mysql_query(*my, q) != 0) {
            mysql_close(*my);
            *my = NULL;
            return NULL;
        }
        MYSQL_RES *res = mysql_store_result(*my);
        char *out = NULL;
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        if (row && row[0]) out = strndup(row[0], mysql_fetch_lengths(res)[0]);
        if (res) mysql_free_result(res);
        return out;
    }
    return NULL;
}

static int is_final(const char *text) {
    json_t *doc = json_loads(text, 0, NULL);
    const char *st = doc ? json_string_value(json_object_get(doc, "status")) : NULL;
    int final = st && strcmp(st, "PENDING") != 0;
    json_decref(doc);
    return final;
}

static int cmd_follow_id(const char *request_id, long long timeout_ms) {
    redisContext *rc = NULL;
    MYSQL *my = NULL;
    int warned = 0, status = 3;
    char *last = NULL;
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        char *doc = status_lookup(&rc, &my, request_id, &warned);
        if (doc) {
            free(last);
            last = doc;
            if (is_final(doc)) {
                status = 0;
                break;
            }
        }
        if (mono_ms() >= deadline) break;
        sleep_ms(100);
    }
    if (last) printf("%s\n", last);
    if (status != 0)
        fprintf(stderr, "promoctl: %s %s after %lld ms\n", request_id, last ? "still PENDING" : "not found",
                timeout_ms);
    free(last);
    if (rc) redisFree(rc);
    if (my) mysql_close(my);
    return status;
}

static int cmd_follow(int argc, char **argv) {
    long long timeout_ms = 30000;
    int i = 0;
    if (i + 1 < argc && strcmp(argv[i], "--timeout-ms") == 0) {
        timeout_ms = parse_count(argv[i + 1]);
        if (timeout_ms < 0) return usage();
        i += 2;
    }
    if (argc - i != 1 || strlen(argv[i]) > PROMO_ID_MAX || !promo_id_valid(argv[i])) return usage();
    return cmd_follow_id(argv[i], timeout_ms);
}

/* ---- checkpoint ------------------------------------------------------------------ */

typedef struct ckpt_row {
    int32_t partition;
    int64_t epoch, seq, offset, entries, hlen, at;
} ckpt_row;

static int ckpt_read(redisContext *rc, const char *domain, int32_t partition, ckpt_row *row, char *errstr,
                     size_t errstr_size) {
    row->partition = partition;
    if (checkpoint_meta(rc, domain, partition, &row->epoch, &row->seq, &row->offset, errstr, errstr_size) != CKPT_OK)
        return -1;
    redisReply *r = redisCommand(rc, "HMGET promo:{%s:%d}:meta at entries", domain, (int)partition);
    redisReply *h = r ? redisCommand(rc, "HLEN promo:{%s:%d}:state", domain, (int)partition) : NULL;
    int ok = r && h && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && h->type == REDIS_REPLY_INTEGER;
    if (ok) {
        row->at = r->element[0]->type == REDIS_REPLY_STRING ? strtoll(r->element[0]->str, NULL, 10) : -1;
        row->entries = r->element[1]->type == REDIS_REPLY_STRING ? strtoll(r->element[1]->str, NULL, 10) : -1;
        row->hlen = h->integer;
    } else {
        snprintf(errstr, errstr_size, "redis: %s", rc->err ? rc->errstr : "unexpected reply");
    }
    if (r) freeReplyObject(r);
    if (h) freeReplyObject(h);
    return ok ? 0 : -1;
}

/* Partitions of domain that have a checkpoint meta key, sorted; n in *count.
 * Caller frees. NULL with errstr filled on failure. */
static int32_t *ckpt_partitions(redisContext *rc, const char *domain, size_t *count, char *errstr, size_t errstr_size) {
    size_t n = 0, cap = 16;
    int32_t *out = malloc(cap * sizeof *out);
    char cursor[32] = "0", prefix[64];
    int plen = snprintf(prefix, sizeof prefix, "promo:{%s:", domain);
    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH promo:{%s:*}:meta COUNT 1000", cursor, domain);
        if (!out || !r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            snprintf(errstr, errstr_size, "redis SCAN: %s", rc->err ? rc->errstr : "unexpected reply");
            if (r) freeReplyObject(r);
            free(out);
            return NULL;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str ? r->element[0]->str : "0");
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const char *k = r->element[1]->element[i]->str;
            if (!k || strncmp(k, prefix, (size_t)plen) != 0) continue;
            char *end;
            long p = strtol(k + plen, &end, 10);
            if (end == k + plen || strcmp(end, "}:meta") != 0 || p < 0 || p > INT32_MAX) continue;
            if (n == cap) {
                int32_t *more = realloc(out, (cap *= 2) * sizeof *out);
                if (!more) {
                    freeReplyObject(r);
                    free(out);
                    snprintf(errstr, errstr_size, "out of memory");
                    return NULL;
                }
                out = more;
            }
            out[n++] = (int32_t)p;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    for (size_t i = 1; i < n; i++) /* few partitions: insertion sort */
        for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
            int32_t t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    *count = n;
    return out;
}

static int cmd_checkpoint(int argc, char **argv) {
    int json = 0, i = 0;
    if (i < argc && strcmp(argv[i], "--json") == 0) json = 1, i++;
    if (argc - i < 1 || argc - i > 2 || domain_index(argv[i]) < 0) return usage();
    const char *domain = argv[i];
    long long one = -1;
    if (argc - i == 2 && ((one = parse_count(argv[i + 1])) < 0 || one > INT32_MAX)) return usage();
    char errstr[512];
    redisContext *rc = redis_new(errstr, sizeof errstr);
    if (!rc) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        return 1;
    }
    int status = 1;
    size_t n = 1;
    int32_t single = (int32_t)one, *parts = &single;
    if (one < 0 && !(parts = ckpt_partitions(rc, domain, &n, errstr, sizeof errstr))) goto fail;
    if (!json)
        printf("%-9s %9s %12s %7s %9s %9s %10s\n", "domain", "partition", "offset", "epoch", "seq", "entries",
               "age_ms");
    int64_t now = now_ms();
    for (size_t k = 0; k < n; k++) {
        ckpt_row row;
        if (ckpt_read(rc, domain, parts[k], &row, errstr, sizeof errstr) != 0) goto fail;
        /* No offset means no checkpoint was ever written (an epoch alone is
         * a claim by an owner that had consumed nothing yet). */
        int found = row.offset >= 0;
        int64_t age = row.at >= 0 ? now - row.at : -1;
        if (json) {
            json_t *o = json_pack("{s:s,s:i,s:b}", "domain", domain, "partition", (int)row.partition, "found", found);
            json_object_set_new(o, "offset", found ? json_integer(row.offset) : json_null());
            json_object_set_new(o, "epoch", row.epoch >= 0 ? json_integer(row.epoch) : json_null());
            json_object_set_new(o, "seq", row.seq >= 0 ? json_integer(row.seq) : json_null());
            json_object_set_new(o, "entries", json_integer(row.hlen));
            json_object_set_new(o, "entries_at_write", row.entries >= 0 ? json_integer(row.entries) : json_null());
            json_object_set_new(o, "at", row.at >= 0 ? json_integer(row.at) : json_null());
            json_object_set_new(o, "age_ms", age >= 0 ? json_integer(age) : json_null());
            char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
            if (s) printf("%s\n", s);
            free(s);
            json_decref(o);
        } else if (!found) {
            printf("%-9s %9d %12s %7" PRId64 " %9s %9s %10s\n", domain, (int)row.partition, "none", row.epoch, "-", "-",
                   "-");
        } else {
            printf("%-9s %9d %12" PRId64 " %7" PRId64 " %9" PRId64 " %9" PRId64 " %10" PRId64 "\n", domain,
                   (int)row.partition, row.offset, row.epoch, row.seq, row.hlen, age);
        }
    }
    status = 0;
    goto out;
fail:
    fprintf(stderr, "promoctl: %s\n", errstr);
out:
    if (parts != &single) free(parts);
    redisFree(rc);
    return status;
}

/* ---- dead letters ------------------------------------------------------------------ */

/* One decoded dead letter and where it sits in promo.dlq. Owns its memory:
 * free with dl_clear(). */
typedef struct dl_rec {
    int32_t dlq_partition;
    int64_t dlq_offset;
    char *source_topic, *error_code, *reason, *consumer;
    int32_t source_partition;
    int64_t source_offset;
    uint8_t *key, *value; /* NULL = null */
    size_t key_len, value_len;
    int64_t failed_at;
} dl_rec;

static void dl_clear(dl_rec *r) {
    free(r->source_topic);
    free(r->error_code);
    free(r->reason);
    free(r->consumer);
    free(r->key);
    free(r->value);
    memset(r, 0, sizeof *r);
}

/* Avro-C's generic reader for schema id 5. */
typedef struct dl_reader {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value;
} dl_reader;

static int dl_reader_init(dl_reader *d, char *errstr, size_t errstr_size) {
    memset(d, 0, sizeof *d);
    if (avro_schema_from_json_length(schema_dead_letter, strlen(schema_dead_letter), &d->schema) != 0 ||
        !(d->iface = avro_generic_class_from_schema(d->schema)) || avro_generic_value_new(d->iface, &d->value) != 0) {
        snprintf(errstr, errstr_size, "DeadLetter schema: %s", avro_strerror());
        return -1;
    }
    return 0;
}

static void dl_reader_free(dl_reader *d) {
    if (d->iface) {
        avro_value_decref(&d->value);
        avro_value_iface_decref(d->iface);
    }
    if (d->schema) avro_schema_decref(d->schema);
}

static char *field_string(avro_value_t *rec, const char *name) {
    avro_value_t f;
    const char *s;
    size_t n;
    if (avro_value_get_by_name(rec, name, &f, NULL) || avro_value_get_string(&f, &s, &n)) return NULL;
    return strndup(s, n ? n - 1 : 0); /* Avro-C counts the NUL */
}

static int field_opt_bytes(avro_value_t *rec, const char *name, uint8_t **out, size_t *len) {
    avro_value_t f, b;
    int disc;
    const void *p;
    size_t n;
    *out = NULL;
    *len = 0;
    if (avro_value_get_by_name(rec, name, &f, NULL) || avro_value_get_discriminant(&f, &disc)) return -1;
    if (disc == 0) return 0;
    if (avro_value_get_current_branch(&f, &b) || avro_value_get_bytes(&b, &p, &n)) return -1;
    *out = malloc(n ? n : 1);
    if (!*out) return -1;
    memcpy(*out, p, n);
    *len = n;
    return 0;
}

/* Decodes one framed DeadLetter. Returns 0, or -1 with errstr filled. */
static int dl_decode(dl_reader *d, const uint8_t *data, size_t len, dl_rec *out, char *errstr, size_t errstr_size) {
    if (len < 5 || data[0] != 0) {
        snprintf(errstr, errstr_size, "not Confluent-framed");
        return -1;
    }
    uint32_t id = (uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 | data[4];
    if (id != SCHEMA_ID_DEAD_LETTER) {
        snprintf(errstr, errstr_size, "schema id %u, not %d", id, SCHEMA_ID_DEAD_LETTER);
        return -1;
    }
    avro_reader_t r = avro_reader_memory((const char *)data + 5, (int64_t)(len - 5));
    avro_value_reset(&d->value);
    int bad = avro_value_read(r, &d->value) != 0;
    char extra;
    /* avro_reader_is_eof() answers only for file readers: probe one byte. */
    if (!bad && avro_read(r, &extra, 1) == 0) bad = 2;
    avro_reader_free(r);
    if (bad) {
        snprintf(errstr, errstr_size, "%s", bad == 2 ? "trailing bytes" : avro_strerror());
        return -1;
    }
    avro_value_t f;
    out->source_topic = field_string(&d->value, "source_topic");
    out->error_code = field_string(&d->value, "error_code");
    out->reason = field_string(&d->value, "reason");
    out->consumer = field_string(&d->value, "consumer");
    if (!out->source_topic || !out->error_code || !out->reason || !out->consumer ||
        avro_value_get_by_name(&d->value, "source_partition", &f, NULL) ||
        avro_value_get_int(&f, &out->source_partition) ||
        avro_value_get_by_name(&d->value, "source_offset", &f, NULL) || avro_value_get_long(&f, &out->source_offset) ||
        avro_value_get_by_name(&d->value, "failed_at", &f, NULL) || avro_value_get_long(&f, &out->failed_at) ||
        field_opt_bytes(&d->value, "key", &out->key, &out->key_len) ||
        field_opt_bytes(&d->value, "value", &out->value, &out->value_len)) {
        snprintf(errstr, errstr_size, "DeadLetter fields: %s", avro_strerror());
        dl_clear(out);
        return -1;
    }
    return 0;
}

typedef struct dl_list {
    dl_rec *v;
    size_t n, cap;
} dl_list;

static void dl_list_free(dl_list *l) {
    for (size_t i = 0; i < l->n; i++) dl_clear(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Reads promo.dlq up to the high watermarks seen at the start: every
 * partition from its beginning, or only its last `tail` messages when tail
 * >= 0. Messages that are not DeadLetters are reported and skipped. Returns
 * 0 with out filled (in partition, offset order), or -1 with errstr filled. */
static int dl_read(long long tail, dl_list *out, char *errstr, size_t errstr_size) {
    char group[64];
    snprintf(group, sizeof group, "promoctl-%d-%lld", (int)getpid(), (long long)now_ms());
    rd_kafka_t *rk = kafka_new(RD_KAFKA_CONSUMER, group, errstr, errstr_size);
    if (!rk) return -1;
    int rc = -1;
    dl_reader dr;
    int have_reader = dl_reader_init(&dr, errstr, errstr_size) == 0;
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(16);
    int64_t *high = NULL;
    int nparts = topic_partitions(rk, DLQ_TOPIC, errstr, errstr_size);
    if (!have_reader || nparts < 0) goto out;
    high = calloc((size_t)nparts, sizeof *high);
    if (!high) goto out;
    int open = 0;
    for (int p = 0; p < nparts; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, DLQ_TOPIC, p, &lo, &hi, KAFKA_TIMEOUT_MS);
        if (e) {
            snprintf(errstr, errstr_size, "watermarks of %s[%d]: %s", DLQ_TOPIC, p, rd_kafka_err2str(e));
            goto out;
        }
        int64_t start = tail >= 0 && hi - tail > lo ? hi - tail : lo;
        high[p] = hi;
        if (start < hi) {
            rd_kafka_topic_partition_list_add(assign, DLQ_TOPIC, p)->offset = start;
            open++;
        }
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, assign);
    if (e) {
        snprintf(errstr, errstr_size, "assign %s: %s", DLQ_TOPIC, rd_kafka_err2str(e));
        goto out;
    }
    int64_t deadline = mono_ms() + 30000;
    while (open > 0) {
        if (mono_ms() > deadline) {
            snprintf(errstr, errstr_size, "reading %s: %d partitions not read to the end in 30 s", DLQ_TOPIC, open);
            goto out;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, "promoctl: %s: %s\n", DLQ_TOPIC, rd_kafka_message_errstr(m));
        } else if (m->partition >= 0 && m->partition < nparts && high[m->partition] >= 0) {
            int p = m->partition;
            if (!m->err && m->offset < high[p]) {
                char why[256];
                dl_rec rec = {0};
                if (dl_decode(&dr, m->payload, m->len, &rec, why, sizeof why) != 0) {
                    fprintf(stderr, "promoctl: %s[%d]@%" PRId64 " skipped: %s\n", DLQ_TOPIC, p, m->offset, why);
                } else {
                    if (out->n == out->cap) {
                        size_t cap = out->cap ? out->cap * 2 : 64;
                        dl_rec *more = realloc(out->v, cap * sizeof *more);
                        if (!more) {
                            dl_clear(&rec);
                            rd_kafka_message_destroy(m);
                            snprintf(errstr, errstr_size, "out of memory");
                            goto out;
                        }
                        out->v = more;
                        out->cap = cap;
                    }
                    rec.dlq_partition = p;
                    rec.dlq_offset = m->offset;
                    out->v[out->n++] = rec;
                }
            }
            /* Done with a partition at its start-time end (EOF may come
             * later or, with new dead letters arriving, never). */
            if ((m->err && m->offset >= high[p]) || (!m->err && m->offset + 1 >= high[p])) {
                high[p] = -1;
                open--;
            }
        }
        rd_kafka_message_destroy(m);
    }
    rc = 0;
out:
    free(high);
    rd_kafka_topic_partition_list_destroy(assign);
    if (have_reader) dl_reader_free(&dr);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

static int dl_by_time(const void *a, const void *b) {
    const dl_rec *x = a, *y = b;
    if (x->failed_at != y->failed_at) return x->failed_at < y->failed_at ? -1 : 1;
    if (x->dlq_partition != y->dlq_partition) return x->dlq_partition < y->dlq_partition ? -1 : 1;
    return x->dlq_offset < y->dlq_offset ? -1 : x->dlq_offset > y->dlq_offset;
}

/* Printable rendering of raw bytes: as text when printable ASCII, else hex.
 * Caller frees. */
static char *bytes_text(const uint8_t *p, size_t n) {
    int printable = 1;
    for (size_t i = 0; i < n && printable; i++) printable = p[i] >= 0x20 && p[i] < 0x7f;
    char *s = malloc(printable ? n + 1 : 2 * n + 4);
    if (!s) return NULL;
    if (printable) {
        memcpy(s, p, n);
        s[n] = '\0';
    } else {
        strcpy(s, "0x");
        for (size_t i = 0; i < n; i++) sprintf(s + 2 + 2 * i, "%02x", p[i]);
    }
    return s;
}

static void dl_print(const dl_rec *r, int json) {
    char *key = r->key ? bytes_text(r->key, r->key_len) : NULL;
    if (json) {
        json_t *o = json_pack("{s:i,s:I,s:s,s:i,s:I,s:s,s:s,s:I,s:s}", "dlq_partition", (int)r->dlq_partition,
                              "dlq_offset", (json_int_t)r->dlq_offset, "source_topic", r->source_topic,
                              "source_partition", (int)r->source_partition, "source_offset",
                              (json_int_t)r->source_offset, "error_code", r->error_code, "reason", r->reason,
                              "failed_at", (json_int_t)r->failed_at, "consumer", r->consumer);
        if (o) {
            json_object_set_new(o, "key", key ? json_string(key) : json_null());
            char *val = r->value ? bytes_text(r->value, r->value_len) : NULL;
            json_object_set_new(o, "value", val ? json_string(val) : json_null());
            free(val);
            char *s = json_dumps(o, JSON_COMPACT);
            if (s) printf("%s\n", s);
            free(s);
            json_decref(o);
        }
    } else {
        time_t secs = (time_t)(r->failed_at / 1000);
        struct tm tm;
        char when[32];
        gmtime_r(&secs, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("%s  %s:%d:%" PRId64 "  %-14s key=%s  by %s  (dlq %d@%" PRId64 ")\n    %s\n", when, r->source_topic,
               (int)r->source_partition, r->source_offset, r->error_code, key ? key : "null", r->consumer,
               (int)r->dlq_partition, r->dlq_offset, r->reason);
    }
    free(key);
}

static int cmd_dlq_list(int argc, char **argv) {
    int from_beginning = 0, json = 0;
    long long limit = 20;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--from-beginning") == 0)
            from_beginning = 1;
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc && (limit = parse_count(argv[++i])) >= 0)
            continue;
        else
            return usage();
    }
    char errstr[512];
    dl_list l = {0};
    /* Without --from-beginning, the last `limit` of each partition are
     * enough to find the last `limit` overall. */
    if (dl_read(from_beginning ? -1 : limit, &l, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        dl_list_free(&l);
        return 1;
    }
    qsort(l.v, l.n, sizeof *l.v, dl_by_time);
    size_t first = 0, last = l.n;
    if ((size_t)limit < l.n) {
        if (from_beginning)
            last = (size_t)limit;
        else
            first = l.n - (size_t)limit;
    }
    for (size_t i = first; i < last; i++) dl_print(&l.v[i], json);
    if (!json) fprintf(stderr, "promoctl: %zu of %zu dead letters shown\n", last - first, l.n);
    dl_list_free(&l);
    return 0;
}

/* Topics a replay may write to: the command topics and the results topic
 * (the sinks dead-letter results they cannot decode). Never promo.dlq. */
static int replay_topic_ok(const char *t) {
    return strcmp(t, "promo.coupon.cmd") == 0 || strcmp(t, "promo.point.cmd") == 0 ||
           strcmp(t, "promo.timesale.cmd") == 0 || strcmp(t, RESULTS_TOPIC) == 0;
}

static int same_source(const dl_rec *a, const dl_rec *b) {
    return a->source_partition == b->source_partition && a->source_offset == b->source_offset &&
           strcmp(a->source_topic, b->source_topic) == 0;
}

/* Does selector sel ("N" or "topic:partition:offset") name r? */
static int selector_match(const char *sel, const dl_rec *r) {
    long long off = parse_count(sel);
    if (off >= 0) return r->source_offset == off;
    const char *c2 = strrchr(sel, ':');
    if (!c2 || c2 == sel) return 0;
    const char *c1 = c2 - 1;
    while (c1 > sel && *c1 != ':') c1--;
    if (*c1 != ':') return 0;
    char part[16];
    size_t plen = (size_t)(c2 - c1 - 1);
    if (plen == 0 || plen >= sizeof part) return 0;
    memcpy(part, c1 + 1, plen);
    part[plen] = '\0';
    return strlen(r->source_topic) == (size_t)(c1 - sel) && strncmp(sel, r->source_topic, (size_t)(c1 - sel)) == 0 &&
           parse_count(part) == r->source_partition && parse_count(c2 + 1) == r->source_offset;
}

static int cmd_dlq_replay(int argc, char **argv) {
    int all = 0, dry = 0, nsel = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--all") == 0)
            all = 1;
        else if (strcmp(argv[i], "--dry-run") == 0)
            dry = 1;
        else if (argv[i][0] == '-')
            return usage();
        else
            nsel++;
    }
    if (all == (nsel > 0)) return usage(); /* exactly one of --all and selectors */
    char errstr[512];
    dl_list l = {0};
    if (dl_read(-1, &l, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        dl_list_free(&l);
        return 1;
    }
    /* Pick one dead letter per source message: a message may have been
     * dead-lettered twice (a processor replaying after a crash). */
    char *pick = calloc(l.n ? l.n : 1, 1);
    int status = 0;
    if (!pick) {
        dl_list_free(&l);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        size_t found = 0, distinct = 0, firstk = 0;
        for (size_t k = 0; k < l.n; k++) {
            if (!selector_match(argv[i], &l.v[k])) continue;
            if (!found++) firstk = k;
            int seen = 0;
            for (size_t j = 0; j < k && !seen; j++)
                seen = selector_match(argv[i], &l.v[j]) && same_source(&l.v[j], &l.v[k]);
            if (!seen) distinct++;
        }
        if (!found) {
            fprintf(stderr, "promoctl: no dead letter for %s\n", argv[i]);
            status = 1;
        } else if (distinct > 1) {
            fprintf(stderr, "promoctl: %s names %zu different messages; use topic:partition:offset\n", argv[i],
                    distinct);
            status = 1;
        } else {
            pick[firstk] = 1;
        }
    }
    if (all)
        for (size_t k = 0; k < l.n; k++) pick[k] = 1;
    for (size_t k = 0; k < l.n; k++)
        for (size_t j = 0; j < k && pick[k]; j++)
            if (pick[j] && same_source(&l.v[j], &l.v[k])) pick[k] = 0;

    rd_kafka_t *rk = NULL;
    if (!dry && !(rk = producer_new(errstr, sizeof errstr))) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        status = 1;
        goto out;
    }
    size_t replayed = 0;
    for (size_t k = 0; k < l.n; k++) {
        const dl_rec *r = &l.v[k];
        if (!pick[k]) continue;
        if (!replay_topic_ok(r->source_topic) || !r->value) {
            fprintf(stderr, "promoctl: %s:%d:%" PRId64 " not replayed: %s\n", r->source_topic, (int)r->source_partition,
                    r->source_offset, r->value ? "not a topic promoctl replays to" : "no original value");
            status = 1;
            continue;
        }
        if (dry) {
            printf("would replay %s:%d:%" PRId64 " (%s, %zu bytes)\n", r->source_topic, (int)r->source_partition,
                   r->source_offset, r->error_code, r->value_len);
            continue;
        }
        /* By key, like every producer of the topic; a message without a key
         * goes back to its own partition. */
        delivery dv;
        int32_t part = r->key ? RD_KAFKA_PARTITION_UA : r->source_partition;
        if (produce_sync(rk, r->source_topic, part, r->key, r->key_len, r->value, r->value_len, &dv, errstr,
                         sizeof errstr) != 0) {
            fprintf(stderr, "promoctl: %s\n", errstr);
            status = 1;
            continue;
        }
        printf("replayed %s:%d:%" PRId64 " -> %s:%d:%" PRId64 "\n", r->source_topic, (int)r->source_partition,
               r->source_offset, r->source_topic, (int)dv.partition, dv.offset);
        replayed++;
    }
    if (!dry) fprintf(stderr, "promoctl: %zu dead letters replayed\n", replayed);
out:
    if (rk) rd_kafka_destroy(rk);
    free(pick);
    dl_list_free(&l);
    return status;
}

static int cmd_dlq(int argc, char **argv) {
    if (argc < 1) return usage();
    if (strcmp(argv[0], "list") == 0) return cmd_dlq_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "replay") == 0) return cmd_dlq_replay(argc - 1, argv + 1);
    return usage();
}

/* ---- lag ------------------------------------------------------------------------ */

/* Prints one group's lag on topic; returns 0 or -1 with errstr filled. */
static int lag_group(const char *group, const char *topic, int json, int64_t *total, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = kafka_new(RD_KAFKA_CONSUMER, group, errstr, errstr_size);
    if (!rk) return -1;
    int rc = -1;
    rd_kafka_topic_partition_list_t *l = NULL;
    int n = topic_partitions(rk, topic, errstr, errstr_size);
    if (n < 0) goto out;
    l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) rd_kafka_topic_partition_list_add(l, topic, p);
    /* Reads the group's committed offsets (OffsetFetch) without joining it. */
    rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, KAFKA_TIMEOUT_MS);
    if (e) {
        snprintf(errstr, errstr_size, "committed offsets of %s: %s", group, rd_kafka_err2str(e));
        goto out;
    }
    *total = 0;
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo, hi;
        e = rd_kafka_query_watermark_offsets(rk, topic, l->elems[i].partition, &lo, &hi, KAFKA_TIMEOUT_MS);
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

static int cmd_lag(int argc, char **argv) {
    int json = 0, i = 0;
    if (i < argc && strcmp(argv[i], "--json") == 0) json = 1, i++;
    if (argc - i > 1 || (argc - i == 1 && domain_index(argv[i]) < 0)) return usage();
    if (!json) printf("%-18s %-20s %9s %12s %12s %9s\n", "group", "topic", "partition", "committed", "high", "lag");
    char errstr[512], group[64], topic[64];
    int64_t total;
    for (int d = 0; d < 3; d++) {
        if (argc - i == 1 && strcmp(argv[i], domains[d]) != 0) continue;
        snprintf(group, sizeof group, "promo-%s", domains[d]);
        snprintf(topic, sizeof topic, "promo.%s.cmd", domains[d]);
        if (lag_group(group, topic, json, &total, errstr, sizeof errstr) != 0) goto fail;
    }
    /* The sinks read every domain's results. */
    if (lag_group(cfg_str("PROMO_SINK_GROUP", "promo-sink-mysql"), RESULTS_TOPIC, json, &total, errstr,
                  sizeof errstr) != 0)
        goto fail;
    return 0;
fail:
    fprintf(stderr, "promoctl: %s\n", errstr);
    return 1;
}

/* Defaults: the partition count of the local fleet (PROMO_KAFKA_PARTITIONS),
 * one replica; production passes 3 and 2 (docker-compose.yml). */
static int cmd_topics(int argc, char **argv) {
    topics_spec spec = {(int)cfg_int("PROMO_KAFKA_PARTITIONS", 12), 1, 1};
    long long timeout_ms = 60000;
    for (int i = 0; i < argc; i++) {
        long long v = i + 1 < argc ? parse_count(argv[i + 1]) : -1;
        if (v < 1 || v > 100000) return usage();
        if (strcmp(argv[i], "--partitions") == 0) spec.partitions = (int)v;
        else if (strcmp(argv[i], "--replication") == 0) spec.replication = (int)v;
        else if (strcmp(argv[i], "--min-isr") == 0) spec.min_isr = (int)v;
        else if (strcmp(argv[i], "--timeout-ms") == 0) timeout_ms = v;
        else return usage();
        i++;
    }
    char bootstrap[1024], errstr[512];
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, sizeof errstr) != 0 ||
        topics_ensure(bootstrap, &spec, (int)timeout_ms, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "promoctl: topics: %s\n", errstr);
        return 1;
    }
    fprintf(stderr, "promoctl: topics ready: %d partitions, replication %d, min.insync.replicas %d\n",
            spec.partitions, spec.replication, spec.min_isr);
    return 0;
}

int main(int argc, char **argv) {
    log_init("promoctl");
    if (argc < 2) return usage();
    const char *sub = argv[1];
    if (strcmp(sub, "submit") == 0) return cmd_submit(argc - 2, argv + 2);
    if (strcmp(sub, "follow") == 0) return cmd_follow(argc - 2, argv + 2);
    if (strcmp(sub, "checkpoint") == 0) return cmd_checkpoint(argc - 2, argv + 2);
    if (strcmp(sub, "dlq") == 0) return cmd_dlq(argc - 2, argv + 2);
    if (strcmp(sub, "lag") == 0) return cmd_lag(argc - 2, argv + 2);
    if (strcmp(sub, "topics") == 0) return cmd_topics(argc - 2, argv + 2);
    return usage();
}
