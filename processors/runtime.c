/* runtime.c — the processor runtime around a domain's pure state machine.
 *
 * One thread does everything that touches state: librdkafka calls the
 * rebalance callback and the delivery-report callback from inside our own
 * consumer_poll / poll / flush calls, so no lock guards the partitions. The
 * only other thread is CivetWeb's, serving /metrics from atomic counters.
 *
 * Lifecycle of a partition, with what holds in each state:
 *
 *   ASSIGNED ──part_restore()──▶ RESTORING ──rd_kafka_assign()──▶ RUNNING
 *      new epoch claimed           state = last checkpoint,          each message: decode → validate
 *      (zombies now fenced)        start offset = its offset           → dedupe → apply → produce
 *                                  (or the log start if none)          next_offset = offset + 1
 *                                                                         │ every PROMO_CHECKPOINT_MS
 *   REVOKED ◀──on_revoke()── RUNNING ◀──────────────── CHECKPOINTING ◀──┘ runtime_checkpoint()
 *      checkpointed, state freed          1. every result produced so far acknowledged (flush)
 *                                         2. dirty entries + next_offset written atomically, fenced
 *                                         3. offsets committed to Kafka (only for lag tools)
 *
 * Why this order gives exactly-once effects: a checkpoint never names an
 * offset whose result is not yet durable in promo.results (step 1 before 2),
 * and state and offset are written together (2), so after a crash the next
 * owner restores a consistent pair and replays the rest of the partition.
 * Replay is deterministic (now = submitted_at, processed_at = the message's
 * Kafka timestamp), so the replayed results are byte-identical to the ones
 * already produced, and the sinks, which are idempotent, absorb the repeats.
 *
 * Timed commands: every PROMO_TICK_MS the runtime asks each owned
 * partition's state for the commands time has made due (domain_ops.due(),
 * e.g. the ExpireHold of a lapsed checkout hold) and produces them into the
 * partition they belong to (produce_ticks()). They are not results: a
 * checkpoint does not wait for them, and one that is lost is asked for again.
 * Applied from the log like any command, they keep replays deterministic.
 *
 * Fencing: a write whose epoch is no longer current is refused by Redis; the
 * runtime then drops that partition until the group reassigns it (a zombie
 * never claims back). When a result could not be delivered, it reloads the
 * partition from its checkpoint under the same epoch and seeks back
 * (part_reset()): never checkpoint past a result that is not in Kafka.
 */
#include "runtime.h"

#include <civetweb.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "codec.h"
#include "dedupe.h"
#include "partition.h"
#include "util.h"

#define RESULTS_TOPIC "promo.results"
#define DLQ_TOPIC "promo.dlq"
#define MAX_PARTITIONS 4096

typedef struct part {
    int32_t id;
    void *state;
    dedupe *dd;
    int64_t epoch;
    int64_t seq;         /* seq of the last checkpoint we wrote or restored */
    int64_t next_offset; /* next input offset to apply */
    int64_t ckpt_offset; /* next_offset as of the last checkpoint */
    int need_full;       /* next checkpoint must be a full snapshot */
    int64_t high;        /* high watermark, for the lag gauge */
    int blocked;         /* its history is gone: applying the rest would be wrong */
} part;

/* Counters read by the metrics thread. */
typedef struct stats {
    _Atomic uint64_t applied[CMD__COUNT][2]; /* by command type and status */
    _Atomic uint64_t repeats;
    _Atomic uint64_t reused;
    _Atomic uint64_t dead_letters;
    _Atomic uint64_t checkpoints;
    _Atomic uint64_t checkpoint_failures;
    _Atomic uint64_t checkpoint_ms_sum;
    _Atomic uint64_t checkpoint_entries;
    _Atomic uint64_t checkpoint_bytes;
    _Atomic uint64_t fenced;
    _Atomic uint64_t resets;
    _Atomic uint64_t delivery_errors;
    _Atomic uint64_t ticks;
    _Atomic int64_t partitions;
    _Atomic int ready; /* the first assignment arrived: the group is joined */
    _Atomic int64_t lag;
    _Atomic int64_t entries;
} stats;

struct runtime {
    const domain_ops *ops;
    rd_kafka_t *consumer, *producer;
    redisContext *redis;
    codec *codec;
    part *parts[MAX_PARTITIONS];
    codec_buf buf, dlbuf, tickbuf;
    checkpoint_batch batch;
    int64_t checkpoint_ms;
    int64_t tick_ms; /* how often to ask the domain for commands time made due */
    int64_t dedupe_window_ms;
    int delivery_failed;     /* set by the delivery callback, on our thread */
    int32_t partition_count; /* of the command topic, refreshed on assignment */
    size_t max_message;      /* the producer's message.max.bytes */
    char name[64];           /* "processor-coupon", the DeadLetter consumer */
    char redis_host[256];
    int redis_port;
    struct mg_context *metrics;
    stats st;
};

static void part_destroy(runtime *rt, part *p) {
    if (!p) return;
    rt->ops->state_destroy(p->state);
    dedupe_destroy(p->dd);
    free(p);
}

/* ---- Redis ---------------------------------------------------------------- */

static int redis_connect(runtime *rt, char *errstr, size_t errstr_size) {
    if (rt->redis) redisFree(rt->redis);
    struct timeval tv = {2, 0};
    rt->redis = redisConnectWithTimeout(rt->redis_host, rt->redis_port, tv);
    if (!rt->redis || rt->redis->err) {
        snprintf(errstr, errstr_size, "redis %s:%d: %s", rt->redis_host, rt->redis_port,
                 rt->redis ? rt->redis->errstr : "out of memory");
        if (rt->redis) redisFree(rt->redis);
        rt->redis = NULL;
        return -1;
    }
    struct timeval cmd_tv = {10, 0};
    redisSetTimeout(rt->redis, cmd_tv);
    return 0;
}

/* hiredis marks a context unusable after an I/O error; reconnect then. */
static int redis_ready(runtime *rt) {
    char err[256];
    if (rt->redis && !rt->redis->err) return 0;
    if (redis_connect(rt, err, sizeof err) != 0) {
        log_warn("%s", err);
        return -1;
    }
    return 0;
}

/* ---- restore -------------------------------------------------------------- */

static int load_entry(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    void **pp = ctx;
    runtime *rt = pp[0];
    part *p = pp[1];
    if (key_len > 2 && key[0] == 'r' && key[1] == ':') return dedupe_load(p->dd, key, key_len, val, val_len);
    return rt->ops->load(p->state, key, key_len, val, val_len);
}

/* Loads the last checkpoint under an epoch: a new one claimed when epoch is
 * 0 (a new assignment), else the one we hold (a reset), kept only while Redis
 * still names it. If another owner claimed the partition after us, we are a
 * zombie: claiming again would fence the rightful owner, so set *fenced and
 * return NULL. Retries while Redis is unreachable: a partition cannot run
 * without knowing where it stopped. A checkpoint that cannot be parsed is
 * treated as none (full replay), which costs time, never correctness. Returns
 * NULL otherwise only when stopping. */
static part *part_restore(runtime *rt, int32_t id, int64_t epoch, int *fenced, volatile sig_atomic_t *stop) {
    char err[512];
    *fenced = 0;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) {
            if (stop && *stop) return NULL;
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (redis_ready(rt) != 0) continue;
        part *p = calloc(1, sizeof *p);
        if (!p || !(p->state = rt->ops->state_new()) || !(p->dd = dedupe_new(rt->dedupe_window_ms))) {
            log_error("partition %d: out of memory", (int)id);
            if (p) {
                if (p->state) rt->ops->state_destroy(p->state);
                free(p);
            }
            continue;
        }
        p->id = id;
        int64_t now_epoch = -1, now_seq, now_offset;
        if (epoch > 0 && checkpoint_meta(rt->redis, rt->ops->name, id, &now_epoch, &now_seq, &now_offset, err,
                                         sizeof err) != CKPT_OK) {
            log_warn("partition %d: %s", (int)id, err);
            part_destroy(rt, p);
            continue;
        }
        if (epoch > 0 && now_epoch == epoch) {
            p->epoch = epoch;
        } else if (epoch > 0 && now_epoch >= 0) {
            /* The same rule as a fenced checkpoint write (runtime_checkpoint). */
            log_warn("partition %d: epoch %lld is no longer ours (%lld); dropping it until the group reassigns it",
                     (int)id, (long long)now_epoch, (long long)epoch);
            part_destroy(rt, p);
            *fenced = 1;
            return NULL;
        } else if (checkpoint_claim(rt->redis, rt->ops->name, id, &p->epoch, err, sizeof err) != CKPT_OK) {
            /* (A reset finding no epoch at all claims one: Redis lost it, as
             * with CKPT_LOST, and a zombie would have found the newer one.) */
            log_warn("partition %d: %s", (int)id, err);
            part_destroy(rt, p);
            continue;
        }
        int found = 0;
        int64_t offset = -1, seq = 0;
        void *ctx[2] = {rt, p};
        int64_t t0 = mono_ms();
        int rc =
            checkpoint_restore(rt->redis, rt->ops->name, id, load_entry, ctx, &found, &offset, &seq, err, sizeof err);
        if (rc != CKPT_OK && rt->redis->err) {
            log_warn("partition %d: %s", (int)id, err);
            part_destroy(rt, p);
            continue;
        }
        if (rc != CKPT_OK) {
            log_error("partition %d: %s; replaying from the start", (int)id, err);
            int64_t epoch = p->epoch;
            part_destroy(rt, p);
            p = calloc(1, sizeof *p);
            if (!p || !(p->state = rt->ops->state_new()) || !(p->dd = dedupe_new(rt->dedupe_window_ms))) {
                if (p) {
                    if (p->state) rt->ops->state_destroy(p->state);
                    free(p);
                }
                continue;
            }
            p->id = id;
            p->epoch = epoch;
            found = 0;
        }
        if (found) {
            p->seq = seq;
            p->next_offset = p->ckpt_offset = offset;
        } else {
            p->seq = 0;
            p->next_offset = p->ckpt_offset = RD_KAFKA_OFFSET_BEGINNING;
            p->need_full = 1; /* anything left under the state key is not ours */
            /* Rebuilding from the start needs the whole log. If retention
             * already dropped its head, the rebuilt state would miss those
             * commands and every later result would be wrong: stop this
             * partition and say so, unless an operator accepts the loss. */
            int64_t lo = -1, hi = -1;
            if (rd_kafka_query_watermark_offsets(rt->consumer, rt->ops->topic, id, &lo, &hi, 5000) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR &&
                lo > 0 && !cfg_int("PROMO_ALLOW_TRUNCATED_REPLAY", 0)) {
                p->blocked = 1;
                log_error("partition %d: no checkpoint and the log now starts at offset %lld: the state before it "
                          "is lost, so this partition is NOT processed (restore Redis, or set "
                          "PROMO_ALLOW_TRUNCATED_REPLAY=1 to accept the loss)",
                          (int)id, (long long)lo);
            }
        }
        log_info("partition %d restored: epoch %lld, %s offset %lld, seq %lld, %zu entries, %zu request ids, %lld ms",
                 (int)id, (long long)p->epoch, found ? "checkpoint" : "no checkpoint, from the start",
                 (long long)offset, (long long)p->seq, rt->ops->entries(p->state), dedupe_count(p->dd),
                 (long long)(mono_ms() - t0));
        return p;
    }
}

/* Reloads a partition from its checkpoint and seeks back to it: used when a
 * result was lost, so whatever we applied since the checkpoint is replayed
 * and produced again. It keeps our epoch: if the partition has meanwhile
 * gone to another owner (we were frozen past our session), the replay is
 * theirs, and we drop the partition until the group's revoke arrives. */
static volatile sig_atomic_t *run_stop;

static void part_reset(runtime *rt, int32_t id) {
    int64_t epoch = rt->parts[id]->epoch;
    part_destroy(rt, rt->parts[id]);
    rt->parts[id] = NULL;
    int fenced;
    part *p = part_restore(rt, id, epoch, &fenced, run_stop);
    if (fenced) atomic_fetch_add(&rt->st.fenced, 1);
    if (!p) return; /* fenced, or stopping: the next owner restores it */
    rt->parts[id] = p;
    atomic_fetch_add(&rt->st.resets, 1);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rt->ops->topic, id)->offset = p->next_offset;
    rd_kafka_error_t *e = rd_kafka_seek_partitions(rt->consumer, l, 5000);
    if (e) {
        log_error("partition %d: seek failed: %s", (int)id, rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- checkpoint ----------------------------------------------------------- */

static int part_write(runtime *rt, part *p, int full, char *err, size_t errsz) {
    checkpoint_batch_reset(&rt->batch);
    if (rt->ops->dump(p->state, full, checkpoint_batch_add, &rt->batch) != 0 ||
        dedupe_dump(p->dd, full, checkpoint_batch_add, &rt->batch) != 0) {
        snprintf(err, errsz, "out of memory dumping state");
        return CKPT_ERR;
    }
    int rc = checkpoint_write(rt->redis, rt->ops->name, p->id, p->epoch, p->seq, p->next_offset, full, now_ms(),
                              &rt->batch, err, errsz);
    if (rc == CKPT_OK) {
        atomic_fetch_add(&rt->st.checkpoint_entries, checkpoint_batch_entries(&rt->batch));
        atomic_fetch_add(&rt->st.checkpoint_bytes, rt->batch.bytes);
    }
    return rc;
}

/* Checkpoints every partition that moved. Returns 0, or -1 if some
 * partition could not be checkpointed (it will be tried again). */
static int runtime_checkpoint(runtime *rt) {
    int moved = 0;
    for (int i = 0; i < MAX_PARTITIONS; i++)
        if (rt->parts[i] && rt->parts[i]->next_offset >= 0 &&
            (rt->parts[i]->next_offset != rt->parts[i]->ckpt_offset || rt->parts[i]->need_full))
            moved = 1;
    if (!moved) return 0;
    int64_t t0 = mono_ms();

    /* 1. Every result produced so far must be acknowledged before any
     *    checkpoint may name an offset past its command. */
    rd_kafka_resp_err_t ferr = rd_kafka_flush(rt->producer, 30000);
    if (ferr != RD_KAFKA_RESP_ERR_NO_ERROR || rt->delivery_failed) {
        log_error("checkpoint: results not acknowledged (%s); replaying from the last checkpoint",
                  ferr ? rd_kafka_err2str(ferr) : "delivery failed");
        rt->delivery_failed = 0;
        for (int i = 0; i < MAX_PARTITIONS; i++)
            if (rt->parts[i]) part_reset(rt, i);
        atomic_fetch_add(&rt->st.checkpoint_failures, 1);
        return -1;
    }

    /* 2. State and next offset, atomically, fenced by our epoch. */
    int failed = 0;
    rd_kafka_topic_partition_list_t *commit = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < MAX_PARTITIONS; i++) {
        part *p = rt->parts[i];
        if (!p || p->blocked || (p->next_offset == p->ckpt_offset && !p->need_full)) continue;
        if (p->next_offset < 0) continue; /* nothing consumed yet: no offset to name */
        char err[512];
        int rc = CKPT_ERR;
        if (redis_ready(rt) == 0) {
            rc = part_write(rt, p, p->need_full, err, sizeof err);
            if (rc == CKPT_LOST) {
                /* Redis lost everything of this partition, its epoch too.
                 * We still own it (a zombie would see a newer epoch, not
                 * none): claim afresh and write our whole state. */
                log_warn("partition %d: %s; claiming a new epoch and writing a full snapshot", i, err);
                if (checkpoint_claim(rt->redis, rt->ops->name, i, &p->epoch, err, sizeof err) == CKPT_OK) {
                    p->seq = 0;
                    rc = part_write(rt, p, 1, err, sizeof err);
                }
            }
            if (rc == CKPT_GAP) {
                /* Redis lost our previous checkpoint (restart, failover):
                 * a delta would sit on a hole, so write everything. */
                log_warn("partition %d: %s; writing a full snapshot", i, err);
                rc = part_write(rt, p, 1, err, sizeof err);
            }
        } else {
            snprintf(err, sizeof err, "redis unavailable");
        }
        if (rc == CKPT_OK) {
            p->seq++;
            p->ckpt_offset = p->next_offset;
            p->need_full = 0;
            rd_kafka_topic_partition_list_add(commit, rt->ops->topic, i)->offset = p->next_offset;
        } else if (rc == CKPT_FENCED) {
            /* Another process claimed the partition after us: we are a
             * zombie whose revocation has not arrived yet. Stop applying
             * (never claim it back: that would fence the rightful owner) and
             * let the group's revoke or next assignment settle it. */
            log_warn("partition %d: %s; dropping it until the group reassigns it", i, err);
            atomic_fetch_add(&rt->st.fenced, 1);
            part_destroy(rt, p);
            rt->parts[i] = NULL;
            failed = 1;
        } else {
            /* The dump already cleared the dirty set: only a full snapshot
             * is safe next time. */
            log_warn("partition %d: checkpoint failed: %s", i, err);
            p->need_full = 1;
            failed = 1;
        }
    }

    /* 3. Offsets to Kafka, only so that lag tools see progress: restore
     *    reads the offset from the checkpoint, never from here. */
    if (commit->cnt > 0) rd_kafka_commit(rt->consumer, commit, 1);
    rd_kafka_topic_partition_list_destroy(commit);

    int64_t ms = mono_ms() - t0;
    atomic_fetch_add(&rt->st.checkpoint_ms_sum, (uint64_t)ms);
    atomic_fetch_add(&rt->st.checkpoints, 1);
    if (failed) atomic_fetch_add(&rt->st.checkpoint_failures, 1);
    return failed ? -1 : 0;
}

/* Dead-letter causes found after decoding (decode errors are codec_err < 0). */
enum { DL_INVALID_FIELD = 1, DL_KEY_MISMATCH, DL_WRONG_PARTITION };

/* The command topic's partition count, from the cluster's metadata; 0 when
 * unknown (then the partition check is skipped rather than guessed). */
static int32_t topic_partitions(runtime *rt) {
    rd_kafka_topic_t *t = rd_kafka_topic_new(rt->consumer, rt->ops->topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int32_t n = 0;
    if (t && rd_kafka_metadata(rt->consumer, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
        md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        n = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    if (t) rd_kafka_topic_destroy(t);
    return n;
}

/* ---- Kafka callbacks -------------------------------------------------------- */

/* The delivery opaque of the commands produce_ticks() sends. */
static int tick_marker;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    runtime *rt = opaque;
    if (m->_private == &tick_marker) {
        /* Not a result: nothing a checkpoint waits for. The domain asks
         * for the command again a few seconds later (domain_ops.due). */
        if (m->err) log_warn("timed command not delivered: %s", rd_kafka_err2str(m->err));
        return;
    }
    if (m->err) {
        rt->delivery_failed = 1;
        atomic_fetch_add(&rt->st.delivery_errors, 1);
        log_error("result delivery failed: %s", rd_kafka_err2str(m->err));
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    runtime *rt = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        int32_t n = topic_partitions(rt);
        if (n > 0) rt->partition_count = n;
        for (int i = 0; i < parts->cnt; i++) {
            int32_t id = parts->elems[i].partition;
            if (id < 0 || id >= MAX_PARTITIONS) continue;
            part_destroy(rt, rt->parts[id]);
            int fenced;
            rt->parts[id] = part_restore(rt, id, 0, &fenced, run_stop);
            if (!rt->parts[id]) continue;
            /* Start offsets go into assign() itself: seeking right after
             * assign is unreliable in librdkafka 2.0.2. */
            parts->elems[i].offset = rt->parts[id]->next_offset;
        }
        rd_kafka_assign(rk, parts);
        atomic_store(&rt->st.partitions, parts->cnt);
        atomic_store(&rt->st.ready, 1);
        log_info("assigned %d partitions", parts->cnt);
    } else {
        if (runtime_checkpoint(rt) != 0) log_warn("checkpoint before revoke failed; the next owner replays more");
        for (int i = 0; i < MAX_PARTITIONS; i++) {
            part_destroy(rt, rt->parts[i]);
            rt->parts[i] = NULL;
        }
        rd_kafka_assign(rk, NULL);
        atomic_store(&rt->st.partitions, 0);
        log_info("revoked: %s", rd_kafka_err2str(err));
    }
}

/* ---- producing -------------------------------------------------------------- */

static void produce(runtime *rt, const char *topic, const void *key, size_t key_len, const void *val, size_t val_len) {
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rt->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
            RD_KAFKA_V_VALUE((void *)val, val_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) return;
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rt->producer, 10);
            continue;
        }
        /* Not queued: the result is lost, so the next checkpoint must not
         * pass it. Flag it like a failed delivery. */
        log_error("produce to %s failed: %s", topic, rd_kafka_err2str(e));
        rt->delivery_failed = 1;
        return;
    }
}

/* Room in one dead letter for the original key (counted twice: in the record
 * and as the message key) and value; the rest of the limit is left for the
 * topic, reason and consumer names and the framing. */
#define DL_OVERHEAD 4096

static void send_dead_letter(runtime *rt, const rd_kafka_message_t *m, int code, const char *why) {
    /* The original bytes plus where they came from and why can be more than
     * the producer takes, when the message was near the size limit (or the
     * sender's limit is higher than ours). A dead letter that cannot be
     * produced would reset the partition and replay into the same message
     * forever, so cut the value, and a key beyond a quarter of the room,
     * down to fit, and say so in the reason. */
    size_t room = rt->max_message > 2 * DL_OVERHEAD ? rt->max_message - DL_OVERHEAD : DL_OVERHEAD;
    size_t key_len = m->key_len < room / 4 ? m->key_len : room / 4;
    size_t value_len = m->len < room - 2 * key_len ? m->len : room - 2 * key_len;
    char reason[768];
    if (key_len < m->key_len || value_len < m->len) {
        snprintf(reason, sizeof reason,
                 "%s (key and value truncated to %zu of %zu and %zu of %zu bytes to fit in a "
                 "dead letter)",
                 why, key_len, m->key_len, value_len, m->len);
        why = reason;
    }
    dead_letter dl = {
        .source_topic = rd_kafka_topic_name(m->rkt),
        .source_partition = m->partition,
        .source_offset = m->offset,
        .key = m->key,
        .key_len = key_len,
        .value = m->payload,
        .value_len = value_len,
        .error_code = code < 0                   ? codec_err_code(code)
                      : code == DL_INVALID_FIELD ? "INVALID_FIELD"
                      : code == DL_KEY_MISMATCH  ? "KEY_MISMATCH"
                                                 : "WRONG_PARTITION",
        .reason = why,
        .failed_at = now_ms(),
        .consumer = rt->name,
    };
    char err[256];
    if (codec_encode_dead_letter(rt->codec, &dl, &rt->dlbuf, err, sizeof err) != CODEC_OK) {
        log_error("dead letter %s[%d]@%lld not encoded: %s", dl.source_topic, (int)m->partition, (long long)m->offset,
                  err);
        return;
    }
    produce(rt, DLQ_TOPIC, m->key, key_len, rt->dlbuf.data, rt->dlbuf.len);
    atomic_fetch_add(&rt->st.dead_letters, 1);
    log_warn("dead letter %s[%d]@%lld %s: %s", dl.source_topic, (int)m->partition, (long long)m->offset, dl.error_code,
             why);
}

/* ---- one message -------------------------------------------------------------- */

static void handle(runtime *rt, const rd_kafka_message_t *m) {
    if (m->partition < 0 || m->partition >= MAX_PARTITIONS) return;
    part *p = rt->parts[m->partition];
    if (!p || p->blocked) return; /* revoked while in flight, or stopped (see part_restore) */
    if (p->next_offset >= 0 && m->offset < p->next_offset) return; /* already applied */
    p->next_offset = m->offset + 1;

    promo_cmd cmd;
    char err[512];
    int rc = codec_decode_cmd(rt->codec, m->payload, m->len, rt->ops->schema_id, &cmd, err, sizeof err);
    if (rc != CODEC_OK) {
        send_dead_letter(rt, m, rc, err);
        return;
    }
    char field[64], why[256], key[PROMO_ID_MAX + 1];
    if (cmd_validate(&cmd, field, sizeof field, why, sizeof why) != 0) {
        snprintf(err, sizeof err, "%s: %s", field, why);
        send_dead_letter(rt, m, DL_INVALID_FIELD, err);
        return;
    }
    /* The key decides the partition, and so which state the command meets:
     * a command keyed otherwise would act on the wrong state. */
    key[0] = '\0';
    if (cmd_entity_key(&cmd, key, sizeof key) != 0 || !m->key || m->key_len != strlen(key) ||
        memcmp(m->key, key, m->key_len) != 0) {
        snprintf(err, sizeof err, "message key must be the entity key '%s'", key);
        send_dead_letter(rt, m, DL_KEY_MISMATCH, err);
        return;
    }
    /* And the partition must be the one Kafka's default partitioner gives
     * that key: a producer hashing differently would create an entity on a
     * second partition, where its limits would be counted a second time. */
    if (rt->partition_count > 0) {
        int32_t want = murmur2_partition(key, strlen(key), rt->partition_count);
        if (want != m->partition) {
            snprintf(err, sizeof err, "key '%s' belongs on partition %d (murmur2), not %d", key, (int)want,
                     (int)m->partition);
            send_dead_letter(rt, m, DL_WRONG_PARTITION, err);
            return;
        }
    }

    uint64_t fp = cmd_fingerprint(&cmd);
    dedupe_hit hit;
    if (dedupe_get(p->dd, cmd.request_id, &hit)) {
        if (hit.fingerprint == fp) {
            /* A repeat: the first result again, byte for byte. */
            produce(rt, RESULTS_TOPIC, key, strlen(key), hit.result, hit.result_len);
            atomic_fetch_add(&rt->st.repeats, 1);
            return;
        }
        promo_result res;
        result_init(&res, &cmd);
        result_reject(&res, "IDEMPOTENCY_KEY_REUSED");
        int64_t ts = rd_kafka_message_timestamp(m, NULL);
        res.processed_at = ts >= 0 ? ts : cmd.submitted_at;
        res.source_partition = m->partition;
        res.source_offset = m->offset;
        if (codec_encode_result(rt->codec, &res, &rt->buf, err, sizeof err) == CODEC_OK)
            produce(rt, RESULTS_TOPIC, key, strlen(key), rt->buf.data, rt->buf.len);
        else
            log_error("request %s: result not encoded: %s", cmd.request_id, err);
        atomic_fetch_add(&rt->st.reused, 1);
        return;
    }

    static promo_result res; /* large; one thread */
    result_init(&res, &cmd);
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    res.processed_at = ts >= 0 ? ts : cmd.submitted_at;
    res.source_partition = m->partition;
    res.source_offset = m->offset;
    if (rt->ops->apply(p->state, &cmd, cmd.submitted_at, &res) != 0) {
        /* Out of memory, state unchanged: stop rather than skip a command. */
        log_error("request %s: out of memory applying; exiting for a clean replay", cmd.request_id);
        abort();
    }
    if (codec_encode_result(rt->codec, &res, &rt->buf, err, sizeof err) != CODEC_OK) {
        log_error("request %s: result not encoded: %s; exiting for a clean replay", cmd.request_id, err);
        abort();
    }
    if (dedupe_put(p->dd, cmd.request_id, fp, cmd.submitted_at, rt->buf.data, rt->buf.len) != 0) {
        log_error("request %s: out of memory; exiting for a clean replay", cmd.request_id);
        abort();
    }
    dedupe_expire(p->dd, cmd.submitted_at);
    produce(rt, RESULTS_TOPIC, key, strlen(key), rt->buf.data, rt->buf.len);
    atomic_fetch_add(&rt->st.applied[cmd.type][res.status], 1);
}

/* ---- commands that time made due -------------------------------------------- */

typedef struct tick_ctx {
    runtime *rt;
    int32_t partition;
    uint64_t n;
} tick_ctx;

/* Produces one command of domain_ops.due() into the partition it came from
 * (its entity lives there), like any producer would: the log orders it with
 * everything else, and a replay applies it again from the log, never from
 * the clock. */
static int tick_emit(void *ctx, const promo_cmd *cmd) {
    tick_ctx *t = ctx;
    runtime *rt = t->rt;
    char key[PROMO_ID_MAX + 1], err[256];
    if (cmd_entity_key(cmd, key, sizeof key) != 0 ||
        codec_encode_cmd(rt->codec, cmd, &rt->tickbuf, err, sizeof err) != CODEC_OK) {
        log_error("timed command %s not encoded", cmd->request_id);
        return 0;
    }
    rd_kafka_resp_err_t e =
        rd_kafka_producev(rt->producer, RD_KAFKA_V_TOPIC(rt->ops->topic), RD_KAFKA_V_PARTITION(t->partition),
                          RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(rt->tickbuf.data, rt->tickbuf.len),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&tick_marker), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("timed command %s not produced: %s", cmd->request_id, rd_kafka_err2str(e));
        return 1; /* the rest next time */
    }
    t->n++;
    return 0;
}

/* Asks each owned partition's state for the commands time has made due
 * (e.g. the ExpireHold of a lapsed checkout hold) and produces them, so that
 * a hold lapses within tick_ms of its deadline even when nothing else
 * arrives for its sale. */
static void produce_ticks(runtime *rt) {
    if (!rt->ops->due) return;
    int64_t now = now_ms();
    for (int i = 0; i < MAX_PARTITIONS; i++) {
        part *p = rt->parts[i];
        if (!p || p->blocked) continue;
        tick_ctx t = {rt, i, 0};
        rt->ops->due(p->state, now, tick_emit, &t);
        if (t.n) atomic_fetch_add(&rt->st.ticks, t.n);
    }
}

/* ---- metrics ------------------------------------------------------------------ */

static int metrics_handler(struct mg_connection *conn, void *cbdata) {
    runtime *rt = cbdata;
    const char *d = rt->ops->name;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f) return 500;
    fprintf(f, "# TYPE promo_commands_applied_total counter\n");
    for (int t = 0; t < CMD__COUNT; t++) {
        if (cmd_domain(t) != rt->ops->domain) continue;
        for (int s = 0; s < 2; s++)
            fprintf(f, "promo_commands_applied_total{domain=\"%s\",type=\"%s\",status=\"%s\"} %llu\n", d,
                    cmd_type_name(t), s ? "REJECTED" : "SUCCEEDED",
                    (unsigned long long)atomic_load(&rt->st.applied[t][s]));
    }
#define COUNTER(name, field)                                                                                           \
    fprintf(f, "# TYPE " name " counter\n" name "{domain=\"%s\"} %llu\n", d,                                           \
            (unsigned long long)atomic_load(&rt->st.field))
#define GAUGE(name, field)                                                                                             \
    fprintf(f, "# TYPE " name " gauge\n" name "{domain=\"%s\"} %lld\n", d, (long long)atomic_load(&rt->st.field))
    COUNTER("promo_requests_repeated_total", repeats);
    COUNTER("promo_idempotency_key_reused_total", reused);
    COUNTER("promo_dead_letters_total", dead_letters);
    COUNTER("promo_checkpoints_total", checkpoints);
    COUNTER("promo_checkpoint_failures_total", checkpoint_failures);
    COUNTER("promo_checkpoint_duration_ms_total", checkpoint_ms_sum);
    COUNTER("promo_checkpoint_entries_total", checkpoint_entries);
    COUNTER("promo_checkpoint_bytes_total", checkpoint_bytes);
    COUNTER("promo_checkpoint_fenced_total", fenced);
    COUNTER("promo_partition_resets_total", resets);
    COUNTER("promo_result_delivery_errors_total", delivery_errors);
    COUNTER("promo_timed_commands_total", ticks);
    GAUGE("promo_partitions_owned", partitions);
    GAUGE("promo_consumer_lag", lag);
    GAUGE("promo_state_entries", entries);
    fclose(f);
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %zu\r\n"
              "Connection: close\r\n\r\n",
              len);
    mg_write(conn, out, len);
    free(out);
    return 200;
}

static int health_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    mg_printf(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
                    "Connection: close\r\n\r\n{\"status\":\"ok\"}");
    return 200;
}

/* 200 once the processor has joined its group and restored what it was
 * given (possibly nothing, when other members own every partition). */
static int ready_handler(struct mg_connection *conn, void *cbdata) {
    runtime *rt = cbdata;
    int ok = atomic_load(&rt->st.ready);
    const char *body = ok ? "{\"status\":\"ready\"}" : "{\"status\":\"joining\"}";
    mg_printf(conn,
              "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
              ok ? "200 OK" : "503 Service Unavailable", strlen(body), body);
    return ok ? 200 : 503;
}

static void metrics_start(runtime *rt) {
    long long port = cfg_int("PROMO_METRICS_PORT", 0);
    if (port <= 0) return;
    char ports[32];
    snprintf(ports, sizeof ports, "127.0.0.1:%lld", port);
    if (strcmp(cfg_str("PROMO_METRICS_BIND", "loopback"), "any") == 0) snprintf(ports, sizeof ports, "%lld", port);
    const char *opts[] = {"listening_ports", ports, "num_threads", "2", NULL};
    struct mg_callbacks cb = {0};
    rt->metrics = mg_start(&cb, NULL, opts);
    if (!rt->metrics) {
        log_warn("metrics: cannot listen on %s", ports);
        return;
    }
    mg_set_request_handler(rt->metrics, "/metrics", metrics_handler, rt);
    mg_set_request_handler(rt->metrics, "/healthz", health_handler, rt);
    mg_set_request_handler(rt->metrics, "/readyz", ready_handler, rt);
}

static void update_gauges(runtime *rt) {
    int64_t lag = 0, entries = 0;
    for (int i = 0; i < MAX_PARTITIONS; i++) {
        part *p = rt->parts[i];
        if (!p) continue;
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(rt->consumer, rt->ops->topic, i, &lo, &hi) == 0 && hi >= 0 &&
            p->next_offset >= 0 && hi > p->next_offset)
            lag += hi - p->next_offset;
        entries += (int64_t)(rt->ops->entries(p->state) + dedupe_count(p->dd));
    }
    atomic_store(&rt->st.lag, lag);
    atomic_store(&rt->st.entries, entries);
}

/* ---- setup ---------------------------------------------------------------------- */

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t errstr_size) {
    if (rd_kafka_conf_set(conf, k, v, errstr, errstr_size) != RD_KAFKA_CONF_OK) return -1;
    return 0;
}

runtime *runtime_new(const domain_ops *ops, char *errstr, size_t errstr_size) {
    runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    rt->ops = ops;
    snprintf(rt->name, sizeof rt->name, "processor-%s", ops->name);
    rt->checkpoint_ms = cfg_int("PROMO_CHECKPOINT_MS", 200);
    rt->tick_ms = cfg_int("PROMO_TICK_MS", 250);
    rt->dedupe_window_ms = cfg_int("PROMO_DEDUPE_WINDOW_MS", 24LL * 3600 * 1000);
    snprintf(rt->redis_host, sizeof rt->redis_host, "%s", cfg_str("PROMO_REDIS_HOST", "127.0.0.1"));
    rt->redis_port = (int)cfg_int("PROMO_REDIS_PORT", 6379);
    checkpoint_batch_init(&rt->batch);

    char bootstrap[1024], group[128], session[32], heartbeat[32];
    long long session_ms = cfg_int("PROMO_SESSION_TIMEOUT_MS", 6000);
    snprintf(session, sizeof session, "%lld", session_ms);
    snprintf(heartbeat, sizeof heartbeat, "%lld", session_ms / 3 > 100 ? session_ms / 3 : 100);
    snprintf(group, sizeof group, "%s", cfg_str("PROMO_GROUP", ""));
    if (!*group) snprintf(group, sizeof group, "promo-%s", ops->name);
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, errstr_size) != 0) goto fail;
    if (!(rt->codec = codec_new(errstr, errstr_size))) goto fail;
    if (redis_connect(rt, errstr, errstr_size) != 0) goto fail;

    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    if (conf_set(pc, "bootstrap.servers", bootstrap, errstr, errstr_size) ||
        conf_set(pc, "client.id", rt->name, errstr, errstr_size) || conf_set(pc, "acks", "all", errstr, errstr_size) ||
        conf_set(pc, "enable.idempotence", "true", errstr, errstr_size) ||
        conf_set(pc, "linger.ms", cfg_str("PROMO_LINGER_MS", "2"), errstr, errstr_size) ||
        conf_set(pc, "partitioner", "murmur2_random", errstr, errstr_size) ||
        /* A result not acknowledged within this time is reported failed, and
         * the next checkpoint replays from the last one instead of passing it. */
        conf_set(pc, "message.timeout.ms", cfg_str("PROMO_RESULT_TIMEOUT_MS", "300000"), errstr, errstr_size) ||
        conf_set(pc, "queue.buffering.max.messages", cfg_str("PROMO_RESULT_QUEUE_MAX", "1000000"), errstr,
                 errstr_size) ||
        conf_set(pc, "max.in.flight.requests.per.connection", cfg_kafka_max_in_flight(), errstr, errstr_size)) {
        rd_kafka_conf_destroy(pc);
        goto fail;
    }
    char max_bytes[32];
    size_t max_bytes_size = sizeof max_bytes;
    rt->max_message = 1000000; /* librdkafka's default */
    if (rd_kafka_conf_get(pc, "message.max.bytes", max_bytes, &max_bytes_size) == RD_KAFKA_CONF_OK)
        rt->max_message = (size_t)strtoull(max_bytes, NULL, 10);
    rd_kafka_conf_set_opaque(pc, rt);
    rd_kafka_conf_set_dr_msg_cb(pc, on_delivery);
    if (!(rt->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, errstr_size))) goto fail;

    rd_kafka_conf_t *cc = rd_kafka_conf_new();
    if (conf_set(cc, "bootstrap.servers", bootstrap, errstr, errstr_size) ||
        conf_set(cc, "client.id", rt->name, errstr, errstr_size) ||
        conf_set(cc, "group.id", group, errstr, errstr_size) ||
        /* Eager assignor: cooperative-sticky had bugs fixed only after 2.0.2. */
        conf_set(cc, "partition.assignment.strategy", "range", errstr, errstr_size) ||
        conf_set(cc, "session.timeout.ms", session, errstr, errstr_size) ||
        conf_set(cc, "heartbeat.interval.ms", heartbeat, errstr, errstr_size) ||
        conf_set(cc, "enable.auto.commit", "false", errstr, errstr_size) ||
        conf_set(cc, "enable.auto.offset.store", "false", errstr, errstr_size) ||
        /* A checkpointed offset that retention has deleted must stop the
         * partition, not silently skip to whatever is left. */
        conf_set(cc, "auto.offset.reset", "error", errstr, errstr_size) ||
        conf_set(cc, "fetch.wait.max.ms", cfg_str("PROMO_FETCH_WAIT_MS", "10"), errstr, errstr_size) ||
        /* librdkafka prefetches until 100,000 messages wait (its default):
         * tens of MB of a backlog held twice, once as fetched and once as
         * the heap they leave behind. 20,000 still covers a tenth of a second
         * at full speed, and the next fetch is under a millisecond away. */
        conf_set(cc, "queued.min.messages", cfg_str("PROMO_CONSUMER_QUEUE_MIN", "20000"), errstr, errstr_size) ||
        conf_set(cc, "enable.partition.eof", "false", errstr, errstr_size)) {
        rd_kafka_conf_destroy(cc);
        goto fail;
    }
    rd_kafka_conf_set_opaque(cc, rt);
    rd_kafka_conf_set_rebalance_cb(cc, on_rebalance);
    if (!(rt->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, errstr_size))) goto fail;
    rd_kafka_poll_set_consumer(rt->consumer);

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, ops->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rt->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e) {
        snprintf(errstr, errstr_size, "subscribe %s: %s", ops->topic, rd_kafka_err2str(e));
        goto fail;
    }
    metrics_start(rt);
    log_info("started: group %s, topic %s, checkpoint every %lld ms", group, ops->topic, (long long)rt->checkpoint_ms);
    return rt;
fail:
    runtime_destroy(rt);
    return NULL;
}

int runtime_run(runtime *rt, volatile sig_atomic_t *stop) {
    run_stop = stop;
    int64_t last = mono_ms(), last_gauges = 0, last_tick = 0;
    while (!*stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rt->consumer, 20);
        if (m) {
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) log_warn("consumer: %s", rd_kafka_message_errstr(m));
            } else {
                handle(rt, m);
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(rt->producer, 0);
        int64_t now = mono_ms();
        if (now - last >= rt->checkpoint_ms) {
            runtime_checkpoint(rt);
            last = mono_ms();
        }
        if (now - last_gauges >= 1000) {
            update_gauges(rt);
            last_gauges = now;
        }
        if (now - last_tick >= rt->tick_ms) {
            produce_ticks(rt);
            last_tick = now;
        }
        coverage_flush_tick();
    }
    /* Closing revokes our partitions, which checkpoints them (on_rebalance). */
    log_info("stopping: leaving the group");
    rd_kafka_consumer_close(rt->consumer);
    return 0;
}

void runtime_destroy(runtime *rt) {
    if (!rt) return;
    if (rt->metrics) mg_stop(rt->metrics);
    if (rt->consumer) rd_kafka_destroy(rt->consumer);
    if (rt->producer) {
        rd_kafka_flush(rt->producer, 10000);
        rd_kafka_destroy(rt->producer);
    }
    for (int i = 0; i < MAX_PARTITIONS; i++) part_destroy(rt, rt->parts[i]);
    if (rt->redis) redisFree(rt->redis);
    if (rt->codec) codec_destroy(rt->codec);
    free(rt->buf.data);
    free(rt->dlbuf.data);
    free(rt->tickbuf.data);
    checkpoint_batch_free(&rt->batch);
    free(rt);
}
