/* dedupe.h — one partition's memory of request ids, so a repeat changes
 * nothing.
 *
 * For every request id applied in the partition it keeps the command's
 * fingerprint and the encoded first result. The runtime asks it before apply:
 * a repeat with the same fingerprint gets the stored bytes again, a repeat
 * with another fingerprint is IDEMPOTENCY_KEY_REUSED (DESIGN.md §7). Entries
 * older than the window (24 h by default, measured in command time, so replay
 * is deterministic) are forgotten. Checkpointed like domain state: entries
 * "r:<request_id>", dirty until dumped; expiry emits deletions.
 */
#ifndef PROMO_DEDUPE_H
#define PROMO_DEDUPE_H

#include "domain.h"

typedef struct dedupe dedupe;

typedef struct dedupe_hit {
    uint64_t fingerprint;
    const uint8_t *result; /* borrowed: valid until the next call that changes the table */
    size_t result_len;
} dedupe_hit;

/* Caller frees with dedupe_destroy(). NULL on out of memory. */
dedupe *dedupe_new(int64_t window_ms);
void dedupe_destroy(dedupe *d);

/* Returns 1 and fills hit when request_id is known, else 0. */
int dedupe_get(dedupe *d, const char *request_id, dedupe_hit *hit);
/* Remembers a first result (copied). Returns 0 or -1 on out of memory. */
int dedupe_put(dedupe *d, const char *request_id, uint64_t fingerprint, int64_t at, const uint8_t *result,
               size_t result_len);
/* Forgets entries remembered at or before now - window. */
void dedupe_expire(dedupe *d, int64_t now);

/* Checkpoint entries, as domain_ops.dump/load (see domain.h). */
int dedupe_dump(dedupe *d, int all, domain_emit_fn emit, void *ctx);
int dedupe_load(dedupe *d, const char *key, size_t key_len, const uint8_t *val, size_t val_len);
size_t dedupe_count(const dedupe *d);
size_t dedupe_bytes(const dedupe *d); /* memory held by stored results */

#endif
