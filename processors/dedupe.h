/* dedupe.h — one partition's memory of request ids, so a repeat changes
 * nothing.
 *
 * For every request id applied in the partition it keeps the command's
 * fingerprint and the encoded first result. The runtime asks it before apply:
 * a repeat with the same fingerprint gets the stored bytes again, a repeat
 * with another fingerprint is IDEMPOTENCY_KEY_REUSED (DESIGN.md §7). An entry
 * remembered at or before now - window (24 h by default, in command time:
 * "now" is the submitted_at of the last command passed to dedupe_expire(), so
 * replay is deterministic) is forgotten.
 *
 * Memory is what limits a partition's size, so entries are packed into an
 * append-only log of segments (a few KiB each, no allocation per entry) and
 * found through one open-addressed table of 8-byte slots; a stored result
 * drops what can be rebuilt exactly (see dedupe.c). The checkpoint is the
 * same segments, byte for byte: entries "r:~<segment>", a segment deleted
 * once every entry in it is older than the window, and "r:#" for the window's
 * clock. Checkpoints of the earlier layout ("r:<request_id>", one entry per
 * id) still load, and the next dump rewrites them in this one.
 */
#ifndef PROMO_DEDUPE_H
#define PROMO_DEDUPE_H

#include "domain.h"

typedef struct dedupe dedupe;

typedef struct dedupe_hit {
    uint64_t fingerprint;
    const uint8_t *result; /* borrowed: valid until the next call on the table */
    size_t result_len;
} dedupe_hit;

/* Caller frees with dedupe_destroy(). NULL on out of memory. */
dedupe *dedupe_new(int64_t window_ms);
void dedupe_destroy(dedupe *d);

/* Returns 1 and fills hit when request_id is known and inside the window,
 * else 0 (also when rebuilding the stored result runs out of memory, which
 * the caller cannot tell from a miss: it then applies and puts, and the put
 * fails the same way). */
int dedupe_get(dedupe *d, const char *request_id, dedupe_hit *hit);
/* Remembers a first result (copied), replacing a forgotten entry of the same
 * id. Returns 0, or -1 on out of memory (nothing changed). */
int dedupe_put(dedupe *d, const char *request_id, uint64_t fingerprint, int64_t at, const uint8_t *result,
               size_t result_len);
/* Moves the window's clock to now and forgets entries remembered at or
 * before now - window. */
void dedupe_expire(dedupe *d, int64_t now);

/* Checkpoint entries, as domain_ops.dump/load (see domain.h). load() refuses
 * (-1) anything it cannot read exactly, so the runtime replays instead. */
int dedupe_dump(dedupe *d, int all, domain_emit_fn emit, void *ctx);
int dedupe_load(dedupe *d, const char *key, size_t key_len, const uint8_t *val, size_t val_len);
size_t dedupe_count(const dedupe *d); /* ids held, forgotten ones not yet freed included */
size_t dedupe_bytes(const dedupe *d); /* memory held by segments and the table */

#endif
