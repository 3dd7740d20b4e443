/* reconcile.c — `promoctl reconcile [--repair]`: does MySQL hold what the
 * engine decided?
 *
 * The engine's decisions are its results log, promo.results: every outcome,
 * in each entity's order (the key is the entity, so one partition holds an
 * entity's results in the order they were decided). Each result carries its
 * entity's version and counters after the command (a repeated request gets
 * its first result again, counters of then included: the highest version
 * wins, as in the sink): a policy's `issued`, a sale's
 * `sold`, an account's `balance`. This reads the log from its start to the
 * high watermarks taken when it starts, keeps the last counters of every
 * entity and every request id, and compares them with the read models the
 * MySQL sink keeps:
 *
 *   requests         a row for every request id with a status-bearing result
 *   coupon policies  coupon_policies.issued, and the rows in coupons
 *   time sales       time_sales.sold, and the units of its PLACED orders
 *   point accounts   point_accounts.balance, the sum of its ledger, and a
 *                    ledger without gaps (seq 1..n)
 *
 * Each difference is printed, one line each; the exit status is 1 when there
 * is one. With --repair, a second pass over the log hands every result of a
 * differing entity, and every result whose request has no row, to the sink's
 * own writer (sinks/sink_mysql.c). The writer keeps a row's highest version,
 * so a row bent in place would keep its wrong values: the differing
 * entity's rows have their version lowered first (to -1), and the log's
 * results, rewritten in order, put back what the engine decided; missing
 * rows are simply inserted. Then it compares again and reports what is left.
 *
 * Results the broker deleted (retention) cannot be compared: the log's start
 * offsets are printed, and entities whose history starts before them are
 * judged on what is left. Run it on a schedule (docs/operations.md); it
 * reads, and with --repair writes, while the fleet runs.
 */
#include "ctl.h"

#include <librdkafka/rdkafka.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uthash.h>

#include "cmd.h"
#include "codec.h"
#include "result_json.h"
#include "sink_mysql.h"
#include "topics.h"
#include "util.h"

#define MAX_PARTS 1024
#define REPAIR_BATCH 500
#define ID_CHUNK 500

/* What the log says of one entity: its last counters. */
typedef struct entity {
    char key[PROMO_ID_MAX + 8]; /* "<domain letter>:<entity key>" */
    promo_domain domain;
    int64_t value;   /* issued, sold or balance after the newest result */
    int64_t version; /* the entity's version after that result */
    int differs;
    UT_hash_handle hh;
} entity;

typedef struct request {
    char id[PROMO_ID_MAX + 1];
    int missing;
    UT_hash_handle hh;
} request;

typedef struct recon {
    rd_kafka_t *rk;
    MYSQL *my;
    codec *codec;
    entity *entities;
    request *requests;
    int64_t high[MAX_PARTS], low[MAX_PARTS];
    int parts;
    long long results, undecodable, differences;
} recon;

static void entity_key(char *out, size_t size, promo_domain d, const char *key) {
    snprintf(out, size, "%c:%s", "CPT"[d < 3 ? d : 0], key);
}

/* Counters a result carries for its entity, by domain. 0 when none. */
static int result_counter(const promo_result *r, int64_t *v) {
    if (r->domain == DOMAIN_COUPON && r->has_issued) return *v = r->issued, 1;
    if (r->domain == DOMAIN_TIMESALE && r->has_sold) return *v = r->sold, 1;
    if (r->domain == DOMAIN_POINT && r->has_balance) return *v = r->balance, 1;
    return 0;
}

/* Assigns every partition of promo.results from its low watermark and
 * records the high ones: the pass ends there. */
static int log_open(recon *rc, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rc->rk, TOPIC_RESULTS, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rc->rk, 0, t, &md, 10000);
    rd_kafka_topic_destroy(t);
    if (e || md->topic_cnt != 1 || md->topics[0].err) {
        snprintf(errstr, errstr_size, "metadata of %s: %s", TOPIC_RESULTS, rd_kafka_err2str(e ? e : md->topics[0].err));
        if (md) rd_kafka_metadata_destroy(md);
        return -1;
    }
    rc->parts = md->topics[0].partition_cnt < MAX_PARTS ? md->topics[0].partition_cnt : MAX_PARTS;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(rc->parts);
    for (int p = 0; p < rc->parts; p++) {
        if ((e = rd_kafka_query_watermark_offsets(rc->rk, TOPIC_RESULTS, p, &rc->low[p], &rc->high[p], 10000))) {
            snprintf(errstr, errstr_size, "watermarks of %s [%d]: %s", TOPIC_RESULTS, p, rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(l);
            return -1;
        }
        if (rc->high[p] > rc->low[p]) rd_kafka_topic_partition_list_add(l, TOPIC_RESULTS, p)->offset = rc->low[p];
    }
    e = rd_kafka_assign(rc->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        snprintf(errstr, errstr_size, "assign: %s", rd_kafka_err2str(e));
        return -1;
    }
    return 0;
}

typedef int (*visit_fn)(recon *rc, const promo_result *r, void *arg);

/* Reads the log once, from the low to the high watermarks, calling visit
 * for every result that decodes. */
static int log_pass(recon *rc, visit_fn visit, void *arg, char *errstr, size_t errstr_size) {
    if (log_open(rc, errstr, errstr_size)) return -1;
    int left = 0;
    for (int p = 0; p < rc->parts; p++) left += rc->high[p] > rc->low[p];
    promo_result *r = malloc(sizeof *r);
    if (!r) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    int64_t idle_since = mono_ms();
    int rcode = 0;
    while (left > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rc->rk, 500);
        if (!m) {
            if (mono_ms() - idle_since > 30000) {
                snprintf(errstr, errstr_size, "%s: no message for 30 s with %d partitions unread", TOPIC_RESULTS, left);
                rcode = -1;
                break;
            }
            continue;
        }
        idle_since = mono_ms();
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_warn("%s [%d]: %s", TOPIC_RESULTS, (int)m->partition, rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        int32_t p = m->partition;
        int64_t off = m->offset;
        if (p < rc->parts && off < rc->high[p]) {
            char err[256];
            if (codec_decode_result(rc->codec, m->payload, m->len, r, err, sizeof err) == CODEC_OK) {
                if (visit(rc, r, arg)) rcode = -1;
            } else {
                rc->undecodable++;
            }
            if (off + 1 == rc->high[p]) left--;
        }
        rd_kafka_message_destroy(m);
        if (rcode) break;
    }
    free(r);
    rd_kafka_assign(rc->rk, NULL);
    if (rcode && !errstr[0]) snprintf(errstr, errstr_size, "out of memory");
    return rcode;
}

static int collect(recon *rc, const promo_result *r, void *arg) {
    (void)arg;
    rc->results++;
    if (sink_mysql_status_wanted(r)) {
        request *q;
        HASH_FIND_STR(rc->requests, r->request_id, q);
        if (!q) {
            if (!(q = calloc(1, sizeof *q))) return -1;
            snprintf(q->id, sizeof q->id, "%s", r->request_id);
            HASH_ADD_STR(rc->requests, id, q);
        }
    }
    int64_t v;
    if (!result_counter(r, &v)) return 0;
    char k[PROMO_ID_MAX + 8];
    entity_key(k, sizeof k, r->domain, r->entity_key);
    entity *e;
    HASH_FIND_STR(rc->entities, k, e);
    if (!e) {
        if (!(e = calloc(1, sizeof *e))) return -1;
        snprintf(e->key, sizeof e->key, "%s", k);
        e->domain = r->domain;
        HASH_ADD_STR(rc->entities, key, e);
    }
    /* The newest version wins, not the last message: a repeated request is
     * answered with its first result again, counters of then included. */
    if (e->version <= r->version) {
        e->value = v;
        e->version = r->version;
    }
    return 0;
}

/* Runs sql and calls row(rc, fields) for each row. */
static int query_rows(recon *rc, const char *sql, void (*row)(recon *, MYSQL_ROW), char *errstr, size_t errstr_size) {
    if (mysql_query(rc->my, sql)) {
        snprintf(errstr, errstr_size, "mysql: %s", mysql_error(rc->my));
        return -1;
    }
    MYSQL_RES *res = mysql_use_result(rc->my);
    if (!res) {
        snprintf(errstr, errstr_size, "mysql: %s", mysql_error(rc->my));
        return -1;
    }
    MYSQL_ROW f;
    while ((f = mysql_fetch_row(res))) row(rc, f);
    mysql_free_result(res);
    return 0;
}

/* MySQL's view of an entity, filled by the queries below. */
typedef struct seen {
    char key[PROMO_ID_MAX + 8];
    int64_t a, b, c, d; /* counter, sum over rows, row count, max seq */
    int has_a, has_b;
    UT_hash_handle hh;
} seen;

static seen *seen_map;

static seen *seen_get(promo_domain d, const char *key) {
    char k[PROMO_ID_MAX + 8];
    entity_key(k, sizeof k, d, key);
    seen *s;
    HASH_FIND_STR(seen_map, k, s);
    if (!s && (s = calloc(1, sizeof *s))) {
        snprintf(s->key, sizeof s->key, "%s", k);
        HASH_ADD_STR(seen_map, key, s);
    }
    return s;
}

static int64_t num(const char *s) {
    return s ? strtoll(s, NULL, 10) : 0;
}

static void row_policy(recon *rc, MYSQL_ROW f) {
    (void)rc;
    seen *s = seen_get(DOMAIN_COUPON, f[0]);
    if (s) s->a = num(f[1]), s->has_a = 1;
}
static void row_coupons(recon *rc, MYSQL_ROW f) {
    (void)rc;
    seen *s = seen_get(DOMAIN_COUPON, f[0]);
    if (s) s->b = num(f[1]), s->has_b = 1;
}
static void row_sale(recon *rc, MYSQL_ROW f) {
    (void)rc;
    seen *s = seen_get(DOMAIN_TIMESALE, f[0]);
    if (s) s->a = num(f[1]), s->has_a = 1;
}
static void row_orders(recon *rc, MYSQL_ROW f) {
    (void)rc;
    seen *s = seen_get(DOMAIN_TIMESALE, f[0]);
    if (s) s->b = num(f[1]), s->has_b = 1;
}
static void row_account(recon *rc, MYSQL_ROW f) {
    (void)rc;
    seen *s = seen_get(DOMAIN_POINT, f[0]);
    if (s) s->a = num(f[1]), s->has_a = 1;
}
static void row_ledger(recon *rc, MYSQL_ROW f) {
    (void)rc;
    seen *s = seen_get(DOMAIN_POINT, f[0]);
    if (s) s->b = num(f[1]), s->c = num(f[2]), s->d = num(f[3]), s->has_b = 1;
}

static void seen_free(void) {
    seen *s, *tmp;
    HASH_ITER(hh, seen_map, s, tmp) {
        HASH_DEL(seen_map, s);
        free(s);
    }
}

/* Marks the requests with no row. IN lists of ID_CHUNK escaped ids. */
static int check_requests(recon *rc, long long *missing, char *errstr, size_t errstr_size) {
    request *q = rc->requests;
    char *sql = malloc(ID_CHUNK * (2 * PROMO_ID_MAX + 4) + 128);
    if (!sql) return snprintf(errstr, errstr_size, "out of memory"), -1;
    *missing = 0;
    while (q) {
        request *chunk = q;
        size_t n = 0, len = (size_t)sprintf(sql, "SELECT request_id FROM requests WHERE request_id IN (");
        for (; q && n < ID_CHUNK; q = q->hh.next, n++) {
            q->missing = 1;
            if (n) sql[len++] = ',';
            sql[len++] = '\'';
            len += mysql_real_escape_string(rc->my, sql + len, q->id, strlen(q->id));
            sql[len++] = '\'';
        }
        strcpy(sql + len, ")");
        if (mysql_query(rc->my, sql)) {
            snprintf(errstr, errstr_size, "mysql: %s", mysql_error(rc->my));
            free(sql);
            return -1;
        }
        MYSQL_RES *res = mysql_store_result(rc->my);
        MYSQL_ROW f;
        while (res && (f = mysql_fetch_row(res))) {
            request *found;
            HASH_FIND_STR(rc->requests, f[0], found);
            if (found) found->missing = 0;
        }
        if (res) mysql_free_result(res);
        for (request *c = chunk; c != q; c = c->hh.next)
            if (c->missing) {
                if (*missing < 20) printf("request %s: decided in the log, no row in requests\n", c->id);
                (*missing)++;
            }
    }
    if (*missing > 20) printf("... %lld requests in all without a row\n", *missing);
    free(sql);
    return 0;
}

/* Compares every entity of the log with MySQL; prints each difference. */
static int compare(recon *rc, long long *diffs, char *errstr, size_t errstr_size) {
    static const struct {
        const char *sql;
        void (*row)(recon *, MYSQL_ROW);
    } q[] = {
        {"SELECT policy_id, issued FROM coupon_policies", row_policy},
        {"SELECT policy_id, COUNT(*) FROM coupons GROUP BY policy_id", row_coupons},
        {"SELECT sale_id, sold FROM time_sales", row_sale},
        {"SELECT sale_id, SUM(quantity) FROM sale_orders WHERE status = 'PLACED' GROUP BY sale_id", row_orders},
        {"SELECT user_id, balance FROM point_accounts", row_account},
        {"SELECT user_id, SUM(delta), COUNT(*), MAX(seq) FROM point_ledger GROUP BY user_id", row_ledger},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        if (query_rows(rc, q[i].sql, q[i].row, errstr, errstr_size)) {
            seen_free();
            return -1;
        }
    *diffs = 0;
    static const char *const what[] = {"policy", "account", "sale"};
    static const char *const counter[] = {"issued", "balance", "sold"};
    static const char *const rows[] = {"coupons rows", "ledger sum", "units of PLACED orders"};
    for (entity *e = rc->entities; e; e = e->hh.next) {
        seen *s;
        HASH_FIND_STR(seen_map, e->key, s);
        int64_t a = s && s->has_a ? s->a : -1, b = s && s->has_b ? s->b : 0;
        int d = e->domain;
        /* A policy's coupons rows include none for a policy nobody got a
         * coupon of yet; an account's ledger is its whole history. */
        int bad = a != e->value || b != e->value || (e->domain == DOMAIN_POINT && s && s->has_b && s->c != s->d);
        if (!bad) {
            e->differs = 0;
            continue;
        }
        e->differs = 1;
        (*diffs)++;
        if (*diffs <= 50) {
            printf("%s %s: engine %s %lld; MySQL %s %s, %s %lld", what[d], e->key + 2, counter[d], (long long)e->value,
                   counter[d], a < 0 ? "(no row)" : "", rows[d], (long long)b);
            if (a >= 0) printf(" (%s %lld)", counter[d], (long long)a);
            if (e->domain == DOMAIN_POINT && s && s->has_b && s->c != s->d)
                printf(", ledger has %lld entries up to seq %lld", (long long)s->c, (long long)s->d);
            printf("\n");
        }
    }
    if (*diffs > 50) printf("... %lld entities in all differ\n", *diffs);
    seen_free();
    return 0;
}

typedef struct repair {
    sink_mysql *sink;
    promo_result *batch;
    char *json[REPAIR_BATCH];
    size_t n;
    long long written;
    char errstr[256];
} repair;

static int repair_flush(repair *rp) {
    long long rows = 0;
    int rc = rp->n ? sink_mysql_write(rp->sink, rp->batch, rp->json, rp->n, &rows, rp->errstr, sizeof rp->errstr) : 0;
    for (size_t i = 0; i < rp->n; i++) free(rp->json[i]);
    rp->written += rc == 0 ? (long long)rp->n : 0;
    rp->n = 0;
    return rc;
}

static int repair_visit(recon *rc, const promo_result *r, void *arg) {
    repair *rp = arg;
    char k[PROMO_ID_MAX + 8];
    entity_key(k, sizeof k, r->domain, r->entity_key);
    entity *e;
    HASH_FIND_STR(rc->entities, k, e);
    int want = e && e->differs;
    if (!want) {
        request *q;
        HASH_FIND_STR(rc->requests, r->request_id, q);
        want = q && q->missing;
    }
    if (!want) return 0;
    rp->batch[rp->n] = *r;
    rp->json[rp->n] = sink_mysql_status_wanted(r) ? result_json_dump(r) : NULL;
    if (sink_mysql_status_wanted(r) && !rp->json[rp->n]) return -1;
    rp->n++;
    return rp->n == REPAIR_BATCH ? repair_flush(rp) : 0;
}

/* Lowers the version of a differing entity's rows, so that its results,
 * written again, win over whatever the rows hold now. */
static int entity_unversion(recon *rc, const entity *e, char *errstr, size_t errstr_size) {
    static const char *const sql[3][2] = {
        {"UPDATE coupon_policies SET version = -1 WHERE policy_id = '%s'",
         "UPDATE coupons SET version = -1 WHERE policy_id = '%s'"},
        {"UPDATE point_accounts SET version = -1 WHERE user_id = '%s'", NULL},
        {"UPDATE time_sales SET version = -1 WHERE sale_id = '%s'",
         "UPDATE sale_orders SET version = -1 WHERE sale_id = '%s'"},
    };
    char id[2 * PROMO_ID_MAX + 1], q[256];
    const char *key = e->key + 2;
    mysql_real_escape_string(rc->my, id, key, strlen(key));
    for (int i = 0; i < 2; i++) {
        if (!sql[e->domain][i]) continue;
        snprintf(q, sizeof q, sql[e->domain][i], id);
        if (mysql_query(rc->my, q)) {
            snprintf(errstr, errstr_size, "mysql: %s", mysql_error(rc->my));
            return -1;
        }
    }
    return 0;
}

/* A reader of the results log with the CLI's consumer rules (ctl.c), in a
 * group of its own: it assigns partitions and commits nothing. */
static rd_kafka_t *reader_new(char *errstr, size_t errstr_size) {
    char group[64];
    snprintf(group, sizeof group, "promoctl-reconcile-%d", (int)getpid());
    return ctl_kafka_new(RD_KAFKA_CONSUMER, group, errstr, errstr_size);
}

static int reconcile_run(MYSQL *my, int repair_mode, char *errstr, size_t errstr_size) {
    recon rc = {.my = my};
    errstr[0] = '\0';
    int status = -1;
    sink_mysql *sink = NULL;
    if (!(rc.codec = codec_new(errstr, errstr_size)) || !(rc.rk = reader_new(errstr, errstr_size))) goto done;
    if (log_pass(&rc, collect, NULL, errstr, errstr_size)) goto done;
    long long low_total = 0;
    for (int p = 0; p < rc.parts; p++) low_total += rc.low[p];
    printf("log: %lld results in %d partitions of %s (%lld deleted by retention before them), %lld undecodable; "
           "%u entities, %u requests\n",
           rc.results, rc.parts, TOPIC_RESULTS, low_total, rc.undecodable, HASH_COUNT(rc.entities),
           HASH_COUNT(rc.requests));
    long long missing, diffs;
    if (check_requests(&rc, &missing, errstr, errstr_size) || compare(&rc, &diffs, errstr, errstr_size)) goto done;
    printf("differences: %lld entities, %lld requests without a row\n", diffs, missing);
    if (repair_mode && (diffs || missing)) {
        sink_mysql_cfg cfg = {cfg_str("PROMO_MYSQL_HOST", "127.0.0.1"), (int)cfg_int("PROMO_MYSQL_PORT", 3306),
                              cfg_str("PROMO_MYSQL_USER", "promo"), cfg_secret("PROMO_MYSQL_PASSWORD", "promo"),
                              cfg_str("PROMO_MYSQL_DB", "promo")};
        repair rp = {0};
        if (!(sink = sink_mysql_new(&cfg, errstr, errstr_size))) goto done;
        rp.sink = sink;
        if (!(rp.batch = calloc(REPAIR_BATCH, sizeof *rp.batch))) {
            snprintf(errstr, errstr_size, "out of memory");
            goto done;
        }
        int prc = 0;
        for (entity *e = rc.entities; e && prc == 0; e = e->hh.next)
            if (e->differs) prc = entity_unversion(&rc, e, errstr, errstr_size);
        if (prc == 0) prc = log_pass(&rc, repair_visit, &rp, errstr, errstr_size);
        if (prc == 0)
            prc = repair_flush(&rp);
        else
            for (size_t i = 0; i < rp.n; i++) free(rp.json[i]);
        free(rp.batch);
        if (prc) {
            if (!errstr[0] || rp.errstr[0]) snprintf(errstr, errstr_size, "repair: %s", rp.errstr);
            goto done;
        }
        printf("repair: %lld results written again through the sink's writer\n", rp.written);
        if (check_requests(&rc, &missing, errstr, errstr_size) || compare(&rc, &diffs, errstr, errstr_size)) goto done;
        printf("after repair: %lld entities differ, %lld requests without a row\n", diffs, missing);
    }
    status = diffs || missing ? 1 : 0;
done:
    if (sink) sink_mysql_destroy(sink);
    entity *e, *et;
    HASH_ITER(hh, rc.entities, e, et) {
        HASH_DEL(rc.entities, e);
        free(e);
    }
    request *q, *qt;
    HASH_ITER(hh, rc.requests, q, qt) {
        HASH_DEL(rc.requests, q);
        free(q);
    }
    if (rc.rk) {
        rd_kafka_consumer_close(rc.rk);
        rd_kafka_destroy(rc.rk);
    }
    if (rc.codec) codec_destroy(rc.codec);
    return status;
}

/* Exit status 0 agreed, 1 differences (left), 2 usage, 3 could not tell. */
int reconcile_main(int argc, char **argv) {
    int repair = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--repair") == 0)
            repair = 1;
        else
            return ctl_usage();
    }
    char errstr[512];
    MYSQL *my = ctl_mysql_new(errstr, sizeof errstr);
    if (!my) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        return 3;
    }
    int rc = reconcile_run(my, repair, errstr, sizeof errstr);
    mysql_close(my);
    if (rc < 0) {
        fprintf(stderr, "promoctl: reconcile: %s\n", errstr);
        return 3;
    }
    return rc;
}
