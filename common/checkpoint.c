/* checkpoint.c — writing and restoring partition checkpoints in Redis (see
 * checkpoint.h for the keys and the fencing rules).
 *
 * The write is one EVAL: check epoch, check seq (unless full), apply
 * deletions, apply sets, then move meta to the new seq and offset. Redis runs
 * a script atomically, so a reader (a new owner restoring) sees either the
 * old checkpoint or the new one, never half of each; the state and the offset
 * it belongs to always travel together.
 */
#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"

/* KEYS: meta, state, stage. ARGV: epoch, prev_seq, new_seq, offset, mode
 * ('0' delta, '1' full, '2' full whose entries were staged in KEYS[3]), now,
 * ndel, del keys..., k, v... */
/* A stored epoch above ours: another owner claimed after us, refuse. Below
 * ours: Redis lost writes back past our claim (restored from an older copy,
 * AOF everysec) and we are still the newest owner (epochs never repeat, see
 * checkpoint_claim), so a delta is refused as a gap and a full snapshot
 * takes the epoch back. Never a stall on a stale epoch. */
static const char write_script[] =
    "local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')\n"
    "if not m[1] then return redis.error_reply('FENCED epoch false') end\n"
    "local stored, mine = tonumber(m[1]), tonumber(ARGV[1])\n"
    "if not stored then return redis.error_reply('FENCED epoch false (unreadable)') end\n"
    "if stored > mine then return redis.error_reply('FENCED epoch ' .. m[1]) end\n"
    "if stored < mine then\n"
    "  if ARGV[5] == '0' then return redis.error_reply('GAP epoch ' .. m[1] .. ' below ours') end\n"
    "  redis.call('HSET', KEYS[1], 'epoch', ARGV[1])\n"
    "end\n"
    "if ARGV[5] == '0' and (m[2] or '0') ~= ARGV[2] then\n"
    "  return redis.error_reply('GAP seq ' .. tostring(m[2])) end\n"
    "if ARGV[5] == '1' then redis.call('DEL', KEYS[2]) end\n"
    "if ARGV[5] == '2' then\n"
    "  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('RENAME', KEYS[3], KEYS[2]); redis.call('PERSIST', KEYS[2])\n"
    "  else redis.call('DEL', KEYS[2]) end\n"
    "end\n"
    "local ndel = tonumber(ARGV[7])\n"
    "local i = 8\n"
    "for _ = 1, ndel do redis.call('HDEL', KEYS[2], ARGV[i]); i = i + 1 end\n"
    "while i < #ARGV do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end\n"
    "local n = redis.call('HLEN', KEYS[2])\n"
    "redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'offset', ARGV[4], 'at', ARGV[6], 'entries', n)\n"
    "return n\n";

#define FIXED_ARGS 13 /* EVAL script 3 meta state stage + 7 ARGV */

static void keys_of(const char *domain, int32_t partition, char *meta, char *state, size_t size) {
    snprintf(meta, size, KEY_CKPT_META, domain, (int)partition);
    snprintf(state, size, KEY_CKPT_STATE, domain, (int)partition);
}

/* The stage of one owner: named by its epoch, so a zombie's slices never mix
 * with the owner's; the same hash tag keeps it in the partition's slot. */
static void stage_key_of(const char *domain, int32_t partition, int64_t epoch, char *out, size_t size) {
    snprintf(out, size, "promo:{%s:%d}:stage:%lld", domain, (int)partition, (long long)epoch);
}

static int push(checkpoint_batch *b, const char *p, size_t n) {
    if (b->argc == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        char **argv = realloc(b->argv, cap * sizeof *argv);
        if (!argv) return -1;
        b->argv = argv;
        size_t *lens = realloc(b->argvlen, cap * sizeof *lens);
        if (!lens) return -1;
        b->argvlen = lens;
        b->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy) return -1;
    if (n) memcpy(copy, p, n);
    copy[n] = '\0';
    b->argv[b->argc] = copy;
    b->argvlen[b->argc] = n;
    b->argc++;
    return 0;
}

void checkpoint_batch_init(checkpoint_batch *b) {
    memset(b, 0, sizeof *b);
    for (int i = 0; i < FIXED_ARGS; i++) push(b, "", 0); /* filled in by checkpoint_write */
}

void checkpoint_batch_reset(checkpoint_batch *b) {
    for (size_t i = FIXED_ARGS; i < b->argc; i++) free(b->argv[i]);
    b->argc = b->argc < FIXED_ARGS ? b->argc : FIXED_ARGS;
    b->ndel = 0;
    b->bytes = 0;
    b->err = 0;
}

void checkpoint_batch_free(checkpoint_batch *b) {
    for (size_t i = 0; i < b->argc; i++) free(b->argv[i]);
    free(b->argv);
    free(b->argvlen);
    memset(b, 0, sizeof *b);
}

size_t checkpoint_batch_entries(const checkpoint_batch *b) {
    return b->ndel + (b->argc - FIXED_ARGS - b->ndel) / 2;
}

int checkpoint_batch_add(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    checkpoint_batch *b = ctx;
    if (b->err) return -1;
    if (!val) {
        /* Deletions must precede the pairs; dump() emits them first, but
         * stay correct if a caller mixes: insert at the deletion boundary. */
        if (push(b, key, key_len) != 0) goto oom;
        size_t at = FIXED_ARGS + b->ndel, last = b->argc - 1;
        if (last != at) {
            char *p = b->argv[last];
            size_t l = b->argvlen[last];
            memmove(&b->argv[at + 1], &b->argv[at], (last - at) * sizeof *b->argv);
            memmove(&b->argvlen[at + 1], &b->argvlen[at], (last - at) * sizeof *b->argvlen);
            b->argv[at] = p;
            b->argvlen[at] = l;
        }
        b->ndel++;
        return 0;
    }
    if (push(b, key, key_len) != 0 || push(b, (const char *)val, val_len) != 0) goto oom;
    b->bytes += val_len;
    return 0;
oom:
    b->err = 1;
    return -1;
}

static void set_fixed(checkpoint_batch *b, int i, const char *s) {
    free(b->argv[i]);
    b->argv[i] = strdup(s);
    b->argvlen[i] = b->argv[i] ? strlen(s) : 0;
    if (!b->argv[i]) b->err = 1;
}

/* One step: the increment alone could repeat an epoch Redis has forgotten. */
static const char claim_script[] = "local e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)\n"
                                   "local floor = tonumber(ARGV[1])\n"
                                   "if e <= floor then e = floor + 1; redis.call('HSET', KEYS[1], 'epoch', e) end\n"
                                   "return e\n";

int checkpoint_claim(redisContext *rc, const char *domain, int32_t partition, int64_t floor, int64_t *epoch,
                     char *errstr, size_t errstr_size) {
    char meta[96], state[96];
    keys_of(domain, partition, meta, state, sizeof meta);
    redisReply *r = redisCommand(rc, "EVAL %s 1 %s %lld", claim_script, meta, (long long)floor);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        snprintf(errstr, errstr_size, "claim %s: %s", meta, r ? r->str : rc->errstr);
        if (r) freeReplyObject(r);
        return CKPT_ERR;
    }
    *epoch = r->integer;
    freeReplyObject(r);
    return CKPT_OK;
}

int checkpoint_meta(redisContext *rc, const char *domain, int32_t partition, int64_t *epoch, int64_t *seq,
                    int64_t *offset, char *errstr, size_t errstr_size) {
    char meta[96], state[96];
    keys_of(domain, partition, meta, state, sizeof meta);
    redisReply *r = redisCommand(rc, "HMGET %s epoch seq offset", meta);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        snprintf(errstr, errstr_size, "meta %s: %s", meta, r ? (r->str ? r->str : "bad reply") : rc->errstr);
        if (r) freeReplyObject(r);
        return CKPT_ERR;
    }
    int64_t *out[3] = {epoch, seq, offset};
    for (int i = 0; i < 3; i++)
        *out[i] = r->element[i]->type == REDIS_REPLY_STRING ? strtoll(r->element[i]->str, NULL, 10) : -1;
    freeReplyObject(r);
    return CKPT_OK;
}

int checkpoint_restore(redisContext *rc, const char *domain, int32_t partition, checkpoint_load_fn load, void *ctx,
                       int *found, int64_t *offset, int64_t *seq, char *errstr, size_t errstr_size) {
    char meta[96], state[96];
    keys_of(domain, partition, meta, state, sizeof meta);
    int64_t epoch;
    if (checkpoint_meta(rc, domain, partition, &epoch, seq, offset, errstr, errstr_size) != CKPT_OK) return CKPT_ERR;
    *found = *offset >= 0 && *seq >= 0;
    if (!*found) {
        *offset = -1;
        *seq = 0;
        return CKPT_OK;
    }
    /* HSCAN in pages: a large state never becomes one huge reply. A hash
     * changed during the scan could repeat entries; load() accepts repeats,
     * and only this partition's owner (us, now) writes it. */
    char cursor[32] = "0";
    do {
        redisReply *r = redisCommand(rc, "HSCAN %s %s COUNT 2000", state, cursor);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[1]->type != REDIS_REPLY_ARRAY) {
            snprintf(errstr, errstr_size, "restore %s: %s", state, r ? "bad reply" : rc->errstr);
            if (r) freeReplyObject(r);
            return CKPT_ERR;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *kv = r->element[1];
        for (size_t i = 0; i + 1 < kv->elements; i += 2) {
            redisReply *k = kv->element[i], *v = kv->element[i + 1];
            if (load(ctx, k->str, k->len, (const uint8_t *)v->str, v->len) != 0) {
                snprintf(errstr, errstr_size, "restore %s: malformed entry %.*s", state, (int)k->len, k->str);
                freeReplyObject(r);
                return CKPT_ERR;
            }
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return CKPT_OK;
}

int checkpoint_write(redisContext *rc, const char *domain, int32_t partition, int64_t epoch, int64_t prev_seq,
                     int64_t offset, int full, const checkpoint_stage *stage, int64_t now, checkpoint_batch *b,
                     char *errstr, size_t errstr_size) {
    char meta[96], state[96], stage_key[112], num[32];
    if (b->err) {
        snprintf(errstr, errstr_size, "out of memory building checkpoint");
        return CKPT_ERR;
    }
    keys_of(domain, partition, meta, state, sizeof meta);
    stage_key_of(domain, partition, epoch, stage_key, sizeof stage_key);
    set_fixed(b, 0, "EVAL");
    set_fixed(b, 1, write_script);
    set_fixed(b, 2, "3");
    set_fixed(b, 3, meta);
    set_fixed(b, 4, state);
    set_fixed(b, 5, stage_key);
    snprintf(num, sizeof num, "%lld", (long long)epoch);
    set_fixed(b, 6, num);
    snprintf(num, sizeof num, "%lld", (long long)prev_seq);
    set_fixed(b, 7, num);
    snprintf(num, sizeof num, "%lld", (long long)(prev_seq + 1));
    set_fixed(b, 8, num);
    snprintf(num, sizeof num, "%lld", (long long)offset);
    set_fixed(b, 9, num);
    set_fixed(b, 10, stage ? "2" : full ? "1" : "0");
    snprintf(num, sizeof num, "%lld", (long long)now);
    set_fixed(b, 11, num);
    snprintf(num, sizeof num, "%zu", b->ndel);
    set_fixed(b, 12, num);
    if (b->err) {
        snprintf(errstr, errstr_size, "out of memory building checkpoint");
        return CKPT_ERR;
    }
    redisReply *r = redisCommandArgv(rc, (int)b->argc, (const char **)b->argv, b->argvlen);
    if (!r) {
        snprintf(errstr, errstr_size, "checkpoint %s: %s", meta, rc->errstr);
        return CKPT_ERR;
    }
    int rcode = CKPT_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size, "checkpoint %s: %s", meta, r->str);
        /* "FENCED epoch false": no epoch at all, so Redis lost the meta;
         * a number: another owner claimed the partition after us. */
        if (strstr(r->str, "FENCED epoch false"))
            rcode = CKPT_LOST;
        else
            rcode = strstr(r->str, "FENCED") ? CKPT_FENCED : strstr(r->str, "GAP") ? CKPT_GAP : CKPT_ERR;
    }
    freeReplyObject(r);
    return rcode;
}

/* ---- staged full snapshots ---------------------------------------------------- */

/* A slice goes out once its values reach this: the memory a full snapshot
 * holds beyond the state itself (the batch and hiredis' formatted command)
 * stays near twice this, whatever the state's size. */
#define STAGE_SLICE_BYTES (1u << 20)
/* A stage left by a writer that died mid-snapshot goes away on its own. */
#define STAGE_TTL_S 3600

int checkpoint_stage_begin(checkpoint_stage *s, redisContext *rc, checkpoint_batch *b, const char *domain,
                           int32_t partition, int64_t epoch) {
    memset(s, 0, sizeof *s);
    s->rc = rc;
    s->batch = b;
    stage_key_of(domain, partition, epoch, s->key, sizeof s->key);
    checkpoint_batch_reset(b);
    /* A stage of ours from a write that failed halfway holds stale slices. */
    redisReply *r = redisCommand(rc, "DEL %s", s->key);
    if (!r) {
        snprintf(s->errstr, sizeof s->errstr, "stage %s: %s", s->key, rc->errstr);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/* Sends the batch's pairs as one HSET into the stage (and renews its TTL),
 * then empties the batch. The two fixed slots just before the pairs carry
 * the command name and key; checkpoint_write() overwrites them later. */
static int stage_flush(checkpoint_stage *s) {
    checkpoint_batch *b = s->batch;
    if (b->err) {
        snprintf(s->errstr, sizeof s->errstr, "out of memory staging the snapshot");
        return -1;
    }
    size_t pairs = b->argc - FIXED_ARGS;
    if (pairs == 0) return 0;
    set_fixed(b, FIXED_ARGS - 2, "HSET");
    set_fixed(b, FIXED_ARGS - 1, s->key);
    if (b->err) {
        snprintf(s->errstr, sizeof s->errstr, "out of memory staging the snapshot");
        return -1;
    }
    redisAppendCommandArgv(s->rc, (int)(pairs + 2), (const char **)&b->argv[FIXED_ARGS - 2],
                           &b->argvlen[FIXED_ARGS - 2]);
    redisAppendCommand(s->rc, "EXPIRE %s %d", s->key, STAGE_TTL_S);
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        redisReply *r = NULL;
        if (redisGetReply(s->rc, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR) {
            if (rc == 0)
                snprintf(s->errstr, sizeof s->errstr, "stage %s: %s", s->key, r ? r->str : s->rc->errstr);
            rc = -1;
        }
        if (r) freeReplyObject(r);
        if (!r) break; /* the connection is gone: no second reply */
    }
    s->entries += pairs / 2;
    s->bytes += b->bytes;
    checkpoint_batch_reset(b);
    return rc;
}

int checkpoint_stage_add(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    checkpoint_stage *s = ctx;
    if (s->err) return -1;
    if (!val) return 0; /* a full snapshot replaces everything: nothing to delete */
    if (checkpoint_batch_add(s->batch, key, key_len, val, val_len) != 0 ||
        (s->batch->bytes >= STAGE_SLICE_BYTES && stage_flush(s) != 0)) {
        if (!s->errstr[0]) snprintf(s->errstr, sizeof s->errstr, "out of memory staging the snapshot");
        s->err = 1;
        return -1;
    }
    return 0;
}

void checkpoint_stage_abort(checkpoint_stage *s) {
    if (!s->rc || s->rc->err) return; /* the TTL removes it */
    redisReply *r = redisCommand(s->rc, "DEL %s", s->key);
    if (r) freeReplyObject(r);
}
