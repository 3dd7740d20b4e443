/* webhook_sign.h — the pure decisions of the webhook dispatcher: how a
 * callback is signed, when the next attempt is due, and whether a callback URL
 * may be called at all.
 *
 * Nothing here does I/O or reads a clock: "now" is always an argument, so the
 * unit tests (tests/unit/test_webhook.c) pin every rule down, and the
 * dispatcher (webhook.c, webhook_main.c) only wires them to MySQL and libcurl.
 *
 * Signatures follow the Standard Webhooks convention (DESIGN.md §6):
 * "v1," + base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")),
 * where a secret spelled "whsec_<base64>" means the decoded bytes are the key
 * and any other secret is used as raw bytes.
 */
#ifndef PROMO_WEBHOOK_SIGN_H
#define PROMO_WEBHOOK_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEBHOOK_KEY_MAX 1024     /* bytes of a decoded secret */
#define WEBHOOK_SIGNATURE_MAX 64 /* "v1," + 44 base64 characters + NUL, rounded up */
#define WEBHOOK_SCHEDULE_MAX 32  /* attempts at most */
#define WEBHOOK_DELAY_MAX_MS (7LL * 24 * 3600 * 1000)
/* A receiver's Retry-After is honoured up to this; a longer wish is cut here
 * so a mistaken header cannot park a delivery for years. */
#define WEBHOOK_RETRY_AFTER_MAX_MS (24LL * 3600 * 1000)

/* The secret as HMAC key bytes: "whsec_" + base64 is decoded, anything else
 * is taken as is. Returns 0, or -1 with errstr filled (bad base64, empty, too
 * long). */
int webhook_sign_key(const char *secret, uint8_t *key, size_t key_size, size_t *key_len, char *errstr,
                     size_t errstr_size);

/* Writes "v1,<base64 HMAC-SHA256 of '<id>.<timestamp_s>.<body>'>" into out
 * (at least WEBHOOK_SIGNATURE_MAX bytes). Returns 0, or -1 when out of memory
 * or out is too small. */
int webhook_sign(const uint8_t *key, size_t key_len, const char *id, int64_t timestamp_s, const char *body,
                 size_t body_len, char *out, size_t out_size);

/* The retry schedule: delay_ms[i] is the wait before attempt i + 1, counted
 * from the failure of attempt i (for attempt 1, from the moment the result
 * was read). n attempts in all. */
typedef struct webhook_schedule {
    int64_t delay_ms[WEBHOOK_SCHEDULE_MAX];
    size_t n;
} webhook_schedule;

/* Parses a comma-separated list of delays such as "0,5s,5m,30m,2h,5h,10h,10h".
 * Each item is a whole number with a unit: ms, s, m or h ("0" alone needs
 * none); blanks around items are allowed. Returns 0, or -1 with errstr
 * naming the bad item. */
int webhook_schedule_parse(const char *text, webhook_schedule *out, char *errstr, size_t errstr_size);

/* The wait a Retry-After header value asks for, in ms from now_ms: either
 * delay-seconds ("120") or an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT"; a
 * date in the past asks for 0). Returns 0 with *delay_ms set, or -1 when the
 * value is neither (the header is then ignored). */
int webhook_retry_after_parse(const char *value, int64_t now_ms, int64_t *delay_ms);

/* After attempts_done attempts have failed (the last one at now_ms), when is
 * the next one due? The schedule's delay, or the receiver's Retry-After
 * (retry_after_ms, negative = none) when it asks for longer, up to
 * WEBHOOK_RETRY_AFTER_MAX_MS. Returns 0 with *next_ms set, or 1 when the
 * schedule is exhausted and the delivery has failed for good. */
int webhook_next_attempt(const webhook_schedule *s, int attempts_done, int64_t now_ms, int64_t retry_after_ms,
                         int64_t *next_ms);

#endif
