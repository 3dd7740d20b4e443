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
 *      new epoch claimed above     state = last checkpoint,          each message: decode → validate
 *      every announced one, and    start offset = its offset           → dedupe → apply → produce,
 *      announced in Kafka
 *      (zombies now fenced)
 *                                  (or the log start if none)          or forward to its owner
 *                                                                      next_offset = offset + 1
 *                                                                         │ every PROMO_CHECKPOINT_MS
 *   REVOKED ◀──on_revoke()── RUNNING ◀──────────────── CHECKPOINTING ◀──┘ runtime_checkpoint()
 *      checkpointed, state freed          1. everything produced so far acknowledged (flush):
 *                                            results, dead letters and forwards
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
 * Forwarding: a command on another partition than its key's owner is
 * produced, unchanged, to the owner's partition of the same topic (forward())
 * and applied there like any other. A forward is a produced message like a
 * result: acknowledged before a checkpoint passes it (step 1), so never lost,
 * and produced again by a replay, so the owner may see it twice; its dedupe
 * answers the second with the first result. A replay reaching further back
 * than the group's committed offset skips forwards made before (see
 * partition_route_of()).
 *
 * Timed commands: every PROMO_TICK_MS the runtime asks each owned
 * partition's state for the commands time has made due (domain_ops.due(),
 * e.g. the ExpireHold of a lapsed checkout hold) and produces them into the
 * partition they belong to (produce_ticks()). They are not results: a
 * checkpoint does not wait for them, and one that is lost is asked for again.
 * Applied from the log like any command, they keep replays deterministic.
 *
 * Fencing: a write whose epoch is below the stored one is refused by Redis;
 * the runtime then drops that partition until the group reassigns it (a
 * zombie never claims back). Epochs never repeat, because each is claimed
 * above every epoch announced in the group's committed offsets, which Kafka
 * keeps when Redis forgets (epoch_announce()); so a stored epoch below ours
 * only means Redis went back in time, and a full snapshot repairs it.
 * When a result could not be delivered, it reloads the
 * partition from its checkpoint under the same epoch and seeks back
 * (part_reset()): never checkpoint past a result that is not in Kafka.
 */
#include "runtime.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "codec.h"
#include "dedupe.h"
#include "kafka.h"
#include "ops.h"
#include "partition.h"
#include "redis_conn.h"
#include "topics.h"
#include "util.h"

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
    /* The group's committed offset when the partition was assigned (-1: none):
     * commands below it that belong elsewhere were forwarded already. */
    int64_t forwarded_below;
} part;

/* Counters read by the metrics thread. */
typedef struct stats {
    _Atomic uint64_t applied[CMD__COUNT][2]; /* by command type and status */
    _Atomic uint64_t repeats;
    _Atomic uint64_t reused;
    _Atomic uint64_t dead_letters;
    _Atomic uint64_t forwarded;       /* commands produced to their owning partition */
    _Atomic uint64_t forward_skipped; /* found forwarded already by an earlier owner */
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
    ops *metrics;
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
    if (!(rt->redis = redis_open(rt->redis_host, rt->redis_port, tv, errstr, errstr_size))) return -1;
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
static part *part_restore(runtime *rt, int32_t id, int64_t epoch, int64_t floor, int *fenced,
                          volatile sig_atomic_t *stop) {
    char err[512];
    *fenced = 0;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) {
            if (stop && *stop) return NULL;
            sleep_ms(200);
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
        } else if (epoch > 0 && now_epoch >= 0 && now_epoch < epoch) {
            /* Redis went back past our claim (epochs never repeat): still
             * ours; the next write finds the gap and writes everything. */
            p->epoch = epoch;
        } else if (epoch > 0 && now_epoch >= 0) {
            /* The same rule as a fenced checkpoint write (runtime_checkpoint). */
            log_warn("partition %d: epoch %lld is no longer ours (%lld); dropping it until the group reassigns it",
                     (int)id, (long long)now_epoch, (long long)epoch);
            part_destroy(rt, p);
            *fenced = 1;
            return NULL;
        } else if (checkpoint_claim(rt->redis, rt->ops->name, id, floor, &p->epoch, err, sizeof err) != CKPT_OK) {
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

/* ---- epochs announced in Kafka ---------------------------------------------
 *
 * Redis may lose its last writes (AOF everysec) or be restored from an older
 * copy, and with them the epochs it handed out: a new owner could then draw
 * the very epoch a frozen zombie holds. So every owner announces its epoch in
 * the metadata of the group's committed offsets ("promo-epoch=N"), once at
 * assignment before it applies anything and again with every checkpoint's
 * commit; Kafka keeps them durably, and only the group's current generation
 * may commit. The next owner claims above the highest announced epoch
 * (checkpoint_claim's floor), so epochs never repeat. */

#define EPOCH_META "promo-epoch="

/* The epoch an earlier owner announced for a committed offset; 0 when none. */
static int64_t epoch_announced(const rd_kafka_topic_partition_t *e) {
    size_t n = strlen(EPOCH_META);
    if (e->err || !e->metadata || e->metadata_size <= n || e->metadata_size > 40) return 0;
    char buf[41];
    memcpy(buf, e->metadata, e->metadata_size);
    buf[e->metadata_size] = '\0';
    if (strncmp(buf, EPOCH_META, n) != 0) return 0;
    char *end;
    long long v = strtoll(buf + n, &end, 10);
    return *end == '\0' && v > 0 ? v : 0;
}

/* Fills a commit list element: the offset, and our epoch as its metadata. */
static void epoch_announce(rd_kafka_topic_partition_t *e, int64_t offset, int64_t epoch) {
    char meta[48];
    int n = snprintf(meta, sizeof meta, EPOCH_META "%lld", (long long)epoch);
    e->offset = offset;
    free(e->metadata);
    e->metadata = malloc((size_t)n); /* freed with the list */
    if (e->metadata) memcpy(e->metadata, meta, (size_t)n);
    e->metadata_size = e->metadata ? (size_t)n : 0;
}

/* Reloads a partition from its checkpoint and seeks back to it: used when a
 * result was lost, so whatever we applied since the checkpoint is replayed
 * and produced again. It keeps our epoch: if the partition has meanwhile
 * gone to another owner (we were frozen past our session), the replay is
 * theirs, and we drop the partition until the group's revoke arrives. */
static volatile sig_atomic_t *run_stop;

static void part_reset(runtime *rt, int32_t id) {
    int64_t epoch = rt->parts[id]->epoch;
    int64_t forwarded_below = rt->parts[id]->forwarded_below;
    part_destroy(rt, rt->parts[id]);
    rt->parts[id] = NULL;
    int fenced;
    part *p = part_restore(rt, id, epoch, 0, &fenced, run_stop);
    if (fenced) atomic_fetch_add(&rt->st.fenced, 1);
    if (!p) return; /* fenced, or stopping: the next owner restores it */
    /* Still a safe bound: the replay starts at our checkpoint, at or past it. */
    p->forwarded_below = forwarded_below;
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

/* A delta goes in one script. A full snapshot is staged in slices first
 * (checkpoint_stage), so writing a million entries never holds a second copy
 * of them: the script then only swaps the stage in. */
static int part_write(runtime *rt, part *p, int full, char *err, size_t errsz) {
    checkpoint_stage stage;
    checkpoint_batch_reset(&rt->batch);
    if (full) {
        if (checkpoint_stage_begin(&stage, rt->redis, &rt->batch, rt->ops->name, p->id, p->epoch) != 0) {
            snprintf(err, errsz, "%s", stage.errstr);
            return CKPT_ERR;
        }
        if (rt->ops->dump(p->state, 1, checkpoint_stage_add, &stage) != 0 ||
            dedupe_dump(p->dd, 1, checkpoint_stage_add, &stage) != 0) {
            snprintf(err, errsz, "%s", stage.errstr[0] ? stage.errstr : "out of memory dumping state");
            checkpoint_stage_abort(&stage);
            return CKPT_ERR;
        }
    } else if (rt->ops->dump(p->state, 0, checkpoint_batch_add, &rt->batch) != 0 ||
               dedupe_dump(p->dd, 0, checkpoint_batch_add, &rt->batch) != 0) {
        snprintf(err, errsz, "out of memory dumping state");
        return CKPT_ERR;
    }
    int rc = checkpoint_write(rt->redis, rt->ops->name, p->id, p->epoch, p->seq, p->next_offset, full,
                              full ? &stage : NULL, now_ms(), &rt->batch, err, errsz);
    if (rc == CKPT_OK) {
        atomic_fetch_add(&rt->st.checkpoint_entries, checkpoint_batch_entries(&rt->batch) + (full ? stage.entries : 0));
        atomic_fetch_add(&rt->st.checkpoint_bytes, rt->batch.bytes + (full ? stage.bytes : 0));
    } else if (full) {
        checkpoint_stage_abort(&stage);
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

    /* 1. Every result, dead letter and forward produced so far must be
     *    acknowledged before any checkpoint may name an offset past its
     *    command: a forward lost after its checkpoint would be a command
     *    lost, as a lost result would be an answer lost. */
    rd_kafka_resp_err_t ferr = rd_kafka_flush(rt->producer, 30000);
    if (ferr != RD_KAFKA_RESP_ERR_NO_ERROR || rt->delivery_failed) {
        log_error("checkpoint: results or forwards not acknowledged (%s); replaying from the last checkpoint",
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
                if (checkpoint_claim(rt->redis, rt->ops->name, i, p->epoch, &p->epoch, err, sizeof err) == CKPT_OK) {
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
            epoch_announce(rd_kafka_topic_partition_list_add(commit, rt->ops->topic, i), p->next_offset, p->epoch);
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

/* Dead-letter causes found after decoding (decode errors are codec_err < 0).
 * (WRONG_PARTITION, a code of the schema, is no longer produced: such a
 * command is forwarded.) */
enum { DL_INVALID_FIELD = 1, DL_KEY_MISMATCH };

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

/* The group's committed offsets of the partitions in parts, as a copy of the
 * list (caller destroys it): what earlier owners checkpointed past, and so
 * forwarded (part.forwarded_below). Asked again while the coordinator does
 * not answer, as part_restore() asks Redis. NULL only when stopping. */
static rd_kafka_topic_partition_list_t *committed_offsets(runtime *rt, const rd_kafka_topic_partition_list_t *parts) {
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) {
            if (run_stop && *run_stop) return NULL;
            sleep_ms(200);
        }
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(parts);
        rd_kafka_resp_err_t e = rd_kafka_committed(rt->consumer, l, 10000);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) return l;
        log_warn("committed offsets of group: %s", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_destroy(l);
    }
}

/* Commits the new epochs before any command is applied, retrying what a
 * moving coordinator refuses. A partition whose commit the group refuses
 * (a newer generation: this assignment is already stale) is blocked: it
 * applies and checkpoints nothing until the group's next assignment, since
 * its epoch may not be above a newer owner's. */
static void epochs_announce(runtime *rt, rd_kafka_topic_partition_list_t *l) {
    if (l->cnt == 0) return;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) {
            if (run_stop && *run_stop) return;
            sleep_ms(200);
        }
        rd_kafka_resp_err_t e = rd_kafka_commit(rt->consumer, l, 0);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) return;
        int stale = e == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION || e == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
                    e == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS || e == RD_KAFKA_RESP_ERR__ASSIGNMENT_LOST ||
                    e == RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID;
        for (int i = 0; stale && i < l->cnt; i++) {
            part *p = rt->parts[l->elems[i].partition];
            if (p) p->blocked = 1;
        }
        if (stale) {
            log_warn("announcing epochs: %s; holding %d partitions until the group reassigns them", rd_kafka_err2str(e),
                     l->cnt);
            return;
        }
        log_warn("announcing epochs: %s; retrying", rd_kafka_err2str(e));
    }
}

/* ---- Kafka callbacks -------------------------------------------------------- */

/* The delivery opaque of the commands produce_ticks() sends. */
static int tick_marker;

/* Results, dead letters and forwards alike: any of them lost means the next
 * checkpoint must replay instead of passing it. */
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
        log_error("delivery to %s [%d] failed: %s", rd_kafka_topic_name(m->rkt), (int)m->partition,
                  rd_kafka_err2str(m->err));
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    runtime *rt = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        int32_t n = topic_partitions(rt);
        if (n > 0) rt->partition_count = n;
        rd_kafka_topic_partition_list_t *committed = committed_offsets(rt, parts);
        rd_kafka_topic_partition_list_t *announce = rd_kafka_topic_partition_list_new(parts->cnt);
        for (int i = 0; i < parts->cnt; i++) {
            int32_t id = parts->elems[i].partition;
            if (id < 0 || id >= MAX_PARTITIONS) continue;
            part_destroy(rt, rt->parts[id]);
            /* (The copy keeps the order of parts.) */
            const rd_kafka_topic_partition_t *c = committed ? &committed->elems[i] : NULL;
            int fenced;
            rt->parts[id] = part_restore(rt, id, 0, c ? epoch_announced(c) : 0, &fenced, run_stop);
            if (!rt->parts[id]) continue;
            /* Nothing committed, or an error for this partition: no forward
             * is known done. */
            rt->parts[id]->forwarded_below = -1;
            if (c && !c->err && c->offset >= 0) rt->parts[id]->forwarded_below = c->offset;
            /* The committed offset stays what it was; only the epoch is new. */
            int64_t keep = c && !c->err && c->offset >= 0 ? c->offset : 0;
            epoch_announce(rd_kafka_topic_partition_list_add(announce, rt->ops->topic, id), keep, rt->parts[id]->epoch);
            /* Start offsets go into assign() itself: seeking right after
             * assign is unreliable in librdkafka 2.0.2. */
            parts->elems[i].offset = rt->parts[id]->next_offset;
        }
        if (committed) rd_kafka_topic_partition_list_destroy(committed);
        epochs_announce(rt, announce);
        rd_kafka_topic_partition_list_destroy(announce);
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

/* Produces message m as it came (key, value, headers) to partition owner of
 * the command topic, where its owner applies it like any other command. It
 * goes on the producer of the results (idempotent, acks=all), so the
 * checkpoint's flush waits for it exactly as for a result, and a forward that
 * fails, in the queue or at the broker, resets the partition to its
 * checkpoint like a lost result: the command is forwarded again, never
 * skipped. The timestamp is the producer's now rather than the original's,
 * which a broker limiting old timestamps would refuse on a late replay,
 * resetting the partition forever; the owner's result takes its
 * processed_at from the forwarded message, the same on every replay of the
 * owner. Counted, never logged: this is the hot path of a producer that
 * hashes keys otherwise. */
static void forward(runtime *rt, const rd_kafka_message_t *m, int32_t owner) {
    rd_kafka_headers_t *orig = NULL, *hdrs = NULL;
    if (rd_kafka_message_headers(m, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR) hdrs = rd_kafka_headers_copy(orig);
    for (;;) {
        /* producev takes hdrs when it succeeds; it is still ours otherwise. */
        rd_kafka_resp_err_t e =
            rd_kafka_producev(rt->producer, RD_KAFKA_V_TOPIC(rt->ops->topic), RD_KAFKA_V_PARTITION(owner),
                              RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            atomic_fetch_add(&rt->st.forwarded, 1);
            return;
        }
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rt->producer, 10);
            continue;
        }
        if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && hdrs) {
            /* A valid command is a few KB, so only the headers can make the
             * message too big for our producer (a sender's limit may be
             * higher). Failing would replay into it forever; the processors
             * never read headers, so the command goes on without them. */
            log_warn("%s[%d]@%lld: forwarded without its headers, too big for message.max.bytes %zu", rt->ops->topic,
                     (int)m->partition, (long long)m->offset, rt->max_message);
            rd_kafka_headers_destroy(hdrs);
            hdrs = NULL;
            continue;
        }
        log_error("forward of %s[%d]@%lld to partition %d failed: %s", rt->ops->topic, (int)m->partition,
                  (long long)m->offset, (int)owner, rd_kafka_err2str(e));
        if (hdrs) rd_kafka_headers_destroy(hdrs);
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
                                                 : "KEY_MISMATCH",
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
    produce(rt, TOPIC_DLQ, m->key, key_len, rt->dlbuf.data, rt->dlbuf.len);
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
    /* And the partition must be the key's owner (murmur2): a producer
     * hashing otherwise would create the entity on a second partition, where
     * its limits would be counted a second time. So the command goes on to
     * its owner, which answers it: no result here (DESIGN.md §3). */
    int32_t owner;
    switch (partition_route_of(key, strlen(key), m->partition, m->offset, rt->partition_count, p->forwarded_below,
                               &owner)) {
    case PARTITION_APPLY: break;
    case PARTITION_FORWARD: forward(rt, m, owner); return;
    case PARTITION_FORWARDED: atomic_fetch_add(&rt->st.forward_skipped, 1); return;
    }

    uint64_t fp = cmd_fingerprint(&cmd);
    dedupe_hit hit;
    if (dedupe_get(p->dd, cmd.request_id, &hit)) {
        if (hit.fingerprint == fp) {
            /* A repeat: the first result again, byte for byte. */
            produce(rt, TOPIC_RESULTS, key, strlen(key), hit.result, hit.result_len);
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
            produce(rt, TOPIC_RESULTS, key, strlen(key), rt->buf.data, rt->buf.len);
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
    produce(rt, TOPIC_RESULTS, key, strlen(key), rt->buf.data, rt->buf.len);
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

/* CivetWeb worker thread (ops.c): reads the atomic counters only. */
static void write_metrics(prom *p, void *arg) {
    runtime *rt = arg;
    char labels[160];
    const char *d = rt->ops->name;
    prom_family(p, "promo_commands_applied_total", "counter", "Commands applied, by type and outcome.");
    for (int t = 0; t < CMD__COUNT; t++) {
        if (cmd_domain(t) != rt->ops->domain) continue;
        for (int s = 0; s < 2; s++) {
            snprintf(labels, sizeof labels, "domain=\"%s\",type=\"%s\",status=\"%s\"", d, cmd_type_name(t),
                     s ? "REJECTED" : "SUCCEEDED");
            prom_u64(p, "promo_commands_applied_total", labels, atomic_load(&rt->st.applied[t][s]));
        }
    }
    snprintf(labels, sizeof labels, "domain=\"%s\"", d);
#define COUNTER(name, field, help)                                                                                     \
    do {                                                                                                               \
        prom_family(p, name, "counter", help);                                                                         \
        prom_u64(p, name, labels, atomic_load(&rt->st.field));                                                         \
    } while (0)
#define GAUGE(name, field, help)                                                                                       \
    do {                                                                                                               \
        prom_family(p, name, "gauge", help);                                                                           \
        prom_i64(p, name, labels, (long long)atomic_load(&rt->st.field));                                              \
    } while (0)
    COUNTER("promo_requests_repeated_total", repeats, "Repeated requests answered with their first result.");
    COUNTER("promo_idempotency_key_reused_total", reused, "Request ids reused for a different command.");
    COUNTER("promo_dead_letters_total", dead_letters, "Commands sent to promo.dlq.");
    COUNTER("promo_commands_forwarded_total", forwarded, "Commands produced to the partition that owns their key.");
    COUNTER("promo_commands_forward_skipped_total", forward_skipped,
            "Commands an earlier owner had forwarded already (below the group's committed offset).");
    COUNTER("promo_checkpoints_total", checkpoints, "Checkpoints written.");
    COUNTER("promo_checkpoint_failures_total", checkpoint_failures, "Checkpoints that could not be written.");
    COUNTER("promo_checkpoint_duration_ms_total", checkpoint_ms_sum, "Time spent checkpointing, in ms.");
    COUNTER("promo_checkpoint_entries_total", checkpoint_entries, "State entries written by checkpoints.");
    COUNTER("promo_checkpoint_bytes_total", checkpoint_bytes, "Bytes written by checkpoints.");
    COUNTER("promo_checkpoint_fenced_total", fenced, "Partitions dropped because a newer owner fenced us.");
    COUNTER("promo_partition_resets_total", resets, "Partitions replayed from their checkpoint after lost results.");
    COUNTER("promo_result_delivery_errors_total", delivery_errors, "Results or dead letters Kafka did not take.");
    COUNTER("promo_timed_commands_total", ticks,
            "Commands time made due (lapsed holds, points now available), produced.");
    GAUGE("promo_partitions_owned", partitions, "Partitions this process owns.");
    GAUGE("promo_consumer_lag", lag, "Commands not yet applied in the owned partitions.");
    GAUGE("promo_state_entries", entries, "Entities and request ids held in memory.");
#undef COUNTER
#undef GAUGE
}

/* CivetWeb worker thread (ops.c). Ready once the processor has joined its
 * group and restored what it was given (possibly nothing, when other
 * members own every partition). */
static const char *not_ready(void *arg) {
    runtime *rt = arg;
    return atomic_load(&rt->st.ready) ? NULL : "joining";
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

    char bootstrap[1024], group[128];
    snprintf(group, sizeof group, "%s", cfg_str("PROMO_GROUP", ""));
    if (!*group) snprintf(group, sizeof group, "promo-%s", ops->name);
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, errstr_size) != 0) goto fail;
    if (!(rt->codec = codec_new(errstr, errstr_size))) goto fail;
    if (redis_connect(rt, errstr, errstr_size) != 0) goto fail;

    kafka_conf pc;
    kafka_conf_producer(&pc, bootstrap, rt->name);
    kafka_conf_set(&pc, "linger.ms", cfg_str("PROMO_LINGER_MS", "2"));
    /* A result not acknowledged within this time is reported failed, and
     * the next checkpoint replays from the last one instead of passing it. */
    kafka_conf_set(&pc, "message.timeout.ms", cfg_str("PROMO_RESULT_TIMEOUT_MS", "300000"));
    kafka_conf_set(&pc, "queue.buffering.max.messages", cfg_str("PROMO_RESULT_QUEUE_MAX", "1000000"));
    char max_bytes[32];
    size_t max_bytes_size = sizeof max_bytes;
    rt->max_message = 1000000; /* librdkafka's default */
    if (!pc.err && rd_kafka_conf_get(pc.conf, "message.max.bytes", max_bytes, &max_bytes_size) == RD_KAFKA_CONF_OK)
        rt->max_message = (size_t)strtoull(max_bytes, NULL, 10);
    rd_kafka_conf_set_opaque(pc.conf, rt);
    rd_kafka_conf_set_dr_msg_cb(pc.conf, on_delivery);
    if (!(rt->producer = kafka_conf_new_client(&pc, RD_KAFKA_PRODUCER, errstr, errstr_size))) goto fail;

    kafka_conf cc;
    kafka_conf_consumer(&cc, bootstrap, rt->name, group, on_rebalance, rt);
    /* A checkpointed offset that retention has deleted must stop the
     * partition, not silently skip to whatever is left. */
    kafka_conf_set(&cc, "auto.offset.reset", "error");
    /* Apache Kafka holds a fetch until a byte arrives (fetch.min.bytes 1)
     * or this wait ends, so a long wait costs no latency; a short one only
     * polls. At 10 ms, three idle processors made an idle broker spend a
     * fifth of a core (the mock cluster, which answered at once, needed the
     * short wait). */
    kafka_conf_set(&cc, "fetch.wait.max.ms", cfg_str("PROMO_FETCH_WAIT_MS", "500"));
    /* librdkafka prefetches until 100,000 messages wait (its default):
     * tens of MB of a backlog held twice, once as fetched and once as
     * the heap they leave behind. 20,000 still covers a tenth of a second
     * at full speed, and the next fetch is under a millisecond away. */
    kafka_conf_set(&cc, "queued.min.messages", cfg_str("PROMO_CONSUMER_QUEUE_MIN", "20000"));
    kafka_conf_set(&cc, "enable.partition.eof", "false");
    if (!(rt->consumer = kafka_conf_new_consumer(&cc, ops->topic, errstr, errstr_size))) goto fail;

    ops_handlers handlers = {.metrics = write_metrics, .not_ready = not_ready, .arg = rt};
    char merr[256];
    if (ops_start(&handlers, &rt->metrics, merr, sizeof merr) != 0) log_warn("metrics: %s", merr);
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
    ops_stop(rt->metrics);
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
