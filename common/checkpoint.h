/* checkpoint.h — a partition's state and next input offset in Redis, written
 * atomically and fenced (DESIGN.md §5). The processors write and restore
 * checkpoints; promoctl reads them (hence common/).
 *
 * Keys (keys.h), hash-tagged so Redis Cluster keeps a partition in one slot:
 *   promo:{<domain>:<partition>}:meta   hash: epoch, seq, offset, at, entries
 *   promo:{<domain>:<partition>}:state  hash: entry key -> entry value
 *
 * An owner takes a new epoch when it is assigned the partition
 * (checkpoint_claim), above every epoch an owner ever announced in the
 * consumer group's committed offsets (processors/runtime.c), which Kafka
 * keeps durably: so an epoch never repeats, even when Redis loses its last
 * writes or is restored from an older copy. Each write runs as one Lua script, so it is atomic, and
 * is refused unless the stored epoch is still the writer's (a zombie owner
 * cannot overwrite a newer one) and, for a delta, unless the stored sequence
 * number is the one the writer last wrote (Redis may have lost recent writes:
 * the writer then writes a full snapshot instead).
 */
#ifndef PROMO_CHECKPOINT_H
#define PROMO_CHECKPOINT_H

#include <hiredis.h>
#include <stddef.h>
#include <stdint.h>

enum {
    CKPT_OK = 0,
    CKPT_ERR = -1,    /* Redis unreachable or replied with an error */
    CKPT_FENCED = -2, /* another owner holds a newer epoch */
    CKPT_GAP = -3,    /* stored seq is not ours: write a full snapshot */
    CKPT_LOST = -4,   /* Redis lost the partition's meta, epoch included */
};

/* A pending write: deletions and key/value pairs, gathered from dump()
 * callbacks. Owns copies of everything; reset with checkpoint_batch_reset(),
 * free with checkpoint_batch_free(). */
typedef struct checkpoint_batch {
    char **argv;
    size_t *argvlen;
    size_t argc, cap;
    size_t ndel;  /* deletions come first after the fixed arguments */
    size_t bytes; /* total value bytes, for metrics */
    int err;      /* sticky out-of-memory */
} checkpoint_batch;

void checkpoint_batch_init(checkpoint_batch *b);
void checkpoint_batch_reset(checkpoint_batch *b);
void checkpoint_batch_free(checkpoint_batch *b);
/* A domain_emit_fn: ctx is a checkpoint_batch. */
int checkpoint_batch_add(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len);
size_t checkpoint_batch_entries(const checkpoint_batch *b);

/* Increments and returns the partition's epoch, at least floor + 1 (floor:
 * the highest epoch announced in Kafka, 0 when none). */
int checkpoint_claim(redisContext *rc, const char *domain, int32_t partition, int64_t floor, int64_t *epoch,
                     char *errstr, size_t errstr_size);

/* Loads every state entry through load(ctx, ...) and returns the stored next
 * offset and seq. *found is 0 when there is no checkpoint (no meta): then
 * nothing is loaded and the partition must be replayed from the start. */
typedef int (*checkpoint_load_fn)(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len);
int checkpoint_restore(redisContext *rc, const char *domain, int32_t partition, checkpoint_load_fn load, void *ctx,
                       int *found, int64_t *offset, int64_t *seq, char *errstr, size_t errstr_size);

/* A full snapshot written in stages, so that its memory stays bounded
 * whatever the state's size: the dump's entries go out in slices of about a
 * megabyte (checkpoint_stage_add, a domain_emit_fn) into a staging hash,
 * promo:{<domain>:<partition>}:stage:<epoch>; checkpoint_write() given the
 * stage then checks the epoch and, in the same script that writes the meta,
 * renames the stage over the state. The stage expires on its own if its
 * writer dies halfway. */
typedef struct checkpoint_stage {
    redisContext *rc;
    checkpoint_batch *batch; /* borrowed; emptied after each slice */
    char key[112];
    size_t entries, bytes; /* sent so far */
    int err;               /* sticky: a slice failed */
    char errstr[256];
} checkpoint_stage;

/* Starts a stage (removing a stale one of ours). 0, or -1 with s->errstr. */
int checkpoint_stage_begin(checkpoint_stage *s, redisContext *rc, checkpoint_batch *b, const char *domain,
                           int32_t partition, int64_t epoch);
/* A domain_emit_fn: ctx is a checkpoint_stage. */
int checkpoint_stage_add(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len);
/* Drops the stage after a failed write. */
void checkpoint_stage_abort(checkpoint_stage *s);

/* Writes batch as checkpoint seq = prev_seq + 1 with the given next offset;
 * full replaces the whole state, with the entries staged in stage when it is
 * not NULL (then full is implied) plus those in batch. Returns CKPT_OK,
 * CKPT_FENCED, CKPT_GAP, CKPT_LOST or CKPT_ERR (errstr filled). */
int checkpoint_write(redisContext *rc, const char *domain, int32_t partition, int64_t epoch, int64_t prev_seq,
                     int64_t offset, int full, const checkpoint_stage *stage, int64_t now, checkpoint_batch *batch,
                     char *errstr, size_t errstr_size);

/* Reads a checkpoint's meta without loading it (admin and tests). */
int checkpoint_meta(redisContext *rc, const char *domain, int32_t partition, int64_t *epoch, int64_t *seq,
                    int64_t *offset, char *errstr, size_t errstr_size);

#endif
