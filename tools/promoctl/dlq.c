/* dlq.c — `promoctl dlq list` and `promoctl dlq replay`: the dead letters in
 * promo.dlq, decoded by the codec (codec_decode_dead_letter), shown, and
 * replayed.
 *
 * A replay sends the original value with the original key to the original
 * topic, through the same partitioner as ingest: use it after fixing what
 * rejected the message (a processor upgrade that knows a new schema id, a
 * relaxed rule), never to bypass validation. Replayed messages are new
 * messages; the processors' request-id dedupe makes replaying one twice
 * harmless.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "ctl.h"
#include "topics.h"
#include "util.h"

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

/* A heap copy of n bytes of p (one byte at least, so an empty value is not
 * taken for a null one), or NULL when memory ran out. */
static void *copy_bytes(const void *p, size_t n) {
    void *out = malloc(n ? n : 1);
    if (out && n) memcpy(out, p, n);
    return out;
}

/* Decodes one framed DeadLetter into out, which owns copies of everything.
 * Returns 0, or -1 with errstr filled. */
static int dl_decode(codec *c, const uint8_t *data, size_t len, dl_rec *out, char *errstr, size_t errstr_size) {
    dead_letter dl;
    int rc = codec_decode_dead_letter(c, data, len, &dl, errstr, errstr_size);
    if (rc != CODEC_OK) return -1;
    out->source_topic = strdup(dl.source_topic);
    out->error_code = strdup(dl.error_code);
    out->reason = strdup(dl.reason);
    out->consumer = strdup(dl.consumer);
    out->source_partition = dl.source_partition;
    out->source_offset = dl.source_offset;
    out->failed_at = dl.failed_at;
    out->key = dl.key ? copy_bytes(dl.key, dl.key_len) : NULL;
    out->key_len = dl.key_len;
    out->value = dl.value ? copy_bytes(dl.value, dl.value_len) : NULL;
    out->value_len = dl.value_len;
    if (!out->source_topic || !out->error_code || !out->reason || !out->consumer || (dl.key && !out->key) ||
        (dl.value && !out->value)) {
        snprintf(errstr, errstr_size, "out of memory");
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
    rd_kafka_t *rk = ctl_kafka_new(RD_KAFKA_CONSUMER, group, errstr, errstr_size);
    if (!rk) return -1;
    int rc = -1;
    codec *c = codec_new(errstr, errstr_size);
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(16);
    int64_t *high = NULL;
    int nparts = ctl_topic_partitions(rk, TOPIC_DLQ, errstr, errstr_size);
    if (!c || nparts < 0) goto out;
    high = calloc((size_t)nparts, sizeof *high);
    if (!high) goto out;
    int open = 0;
    for (int p = 0; p < nparts; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, TOPIC_DLQ, p, &lo, &hi, CTL_KAFKA_TIMEOUT_MS);
        if (e) {
            snprintf(errstr, errstr_size, "watermarks of %s[%d]: %s", TOPIC_DLQ, p, rd_kafka_err2str(e));
            goto out;
        }
        int64_t start = tail >= 0 && hi - tail > lo ? hi - tail : lo;
        high[p] = hi;
        if (start < hi) {
            rd_kafka_topic_partition_list_add(assign, TOPIC_DLQ, p)->offset = start;
            open++;
        }
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, assign);
    if (e) {
        snprintf(errstr, errstr_size, "assign %s: %s", TOPIC_DLQ, rd_kafka_err2str(e));
        goto out;
    }
    int64_t deadline = mono_ms() + 30000;
    while (open > 0) {
        if (mono_ms() > deadline) {
            snprintf(errstr, errstr_size, "reading %s: %d partitions not read to the end in 30 s", TOPIC_DLQ, open);
            goto out;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, "promoctl: %s: %s\n", TOPIC_DLQ, rd_kafka_message_errstr(m));
        } else if (m->partition >= 0 && m->partition < nparts && high[m->partition] >= 0) {
            int p = m->partition;
            if (!m->err && m->offset < high[p]) {
                char why[256];
                dl_rec rec = {0};
                if (dl_decode(c, m->payload, m->len, &rec, why, sizeof why) != 0) {
                    fprintf(stderr, "promoctl: %s[%d]@%" PRId64 " skipped: %s\n", TOPIC_DLQ, p, m->offset, why);
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
    if (c) codec_destroy(c);
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
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc && (limit = ctl_count(argv[++i])) >= 0)
            continue;
        else
            return ctl_usage();
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
    return strcmp(t, TOPIC_COUPON_CMD) == 0 || strcmp(t, TOPIC_POINT_CMD) == 0 || strcmp(t, TOPIC_TIMESALE_CMD) == 0 ||
           strcmp(t, TOPIC_RESULTS) == 0;
}

static int same_source(const dl_rec *a, const dl_rec *b) {
    return a->source_partition == b->source_partition && a->source_offset == b->source_offset &&
           strcmp(a->source_topic, b->source_topic) == 0;
}

/* Does selector sel ("N" or "topic:partition:offset") name r? */
static int selector_match(const char *sel, const dl_rec *r) {
    long long off = ctl_count(sel);
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
           ctl_count(part) == r->source_partition && ctl_count(c2 + 1) == r->source_offset;
}

static int cmd_dlq_replay(int argc, char **argv) {
    int all = 0, dry = 0, nsel = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--all") == 0)
            all = 1;
        else if (strcmp(argv[i], "--dry-run") == 0)
            dry = 1;
        else if (argv[i][0] == '-')
            return ctl_usage();
        else
            nsel++;
    }
    if (all == (nsel > 0)) return ctl_usage(); /* exactly one of --all and selectors */
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
    if (!dry && !(rk = ctl_producer_new(errstr, sizeof errstr))) {
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
        ctl_delivery dv;
        int32_t part = r->key ? RD_KAFKA_PARTITION_UA : r->source_partition;
        if (ctl_produce_sync(rk, r->source_topic, part, r->key, r->key_len, r->value, r->value_len, &dv, errstr,
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

int dlq_main(int argc, char **argv) {
    if (argc < 1) return ctl_usage();
    if (strcmp(argv[0], "list") == 0) return cmd_dlq_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "replay") == 0) return cmd_dlq_replay(argc - 1, argv + 1);
    return ctl_usage();
}
