/* webhook.h — the webhook dispatcher's two I/O halves: the delivery store in
 * MySQL and the sender over libcurl.
 *
 * The program (webhook_main.c) reads results from Kafka and records one
 * delivery per callback with webhook_store_enqueue(); its delivery thread
 * claims the rows that are due (webhook_store_claim), hands them to the
 * sender (webhook_sender_start), and writes each finished attempt back with
 * webhook_store_finish(). The decisions in between (signature, schedule,
 * allow-list) are the pure functions of webhook_sign.h.
 *
 * A delivery's life, all of it in webhook_deliveries (002_webhooks.sql):
 *
 *   PENDING, due ──claim──▶ PENDING, leased (claim_token set, next_attempt_at
 *   pushed past the send timeout) ──finish──▶ DELIVERED (2xx)
 *                                         ├──▶ PENDING, due later (retry)
 *                                         └──▶ FAILED (schedule exhausted, or
 *                                              host not allowed: never sent)
 *
 * A dispatcher that dies holding a lease loses nothing: the row falls due
 * again when the lease ends, and is sent again (receivers dedupe on the
 * webhook-id, which never changes). Each handle belongs to one thread.
 */
#ifndef PROMO_WEBHOOK_H
#define PROMO_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"
#include "webhook_sign.h"

#define WEBHOOK_ID_MAX (4 + PROMO_ID_MAX) /* "msg_" + request id */
#define WEBHOOK_TOKEN_MAX 63
#define WEBHOOK_ERROR_MAX 255

/* ---- the store ---------------------------------------------------------- */

typedef struct webhook_store_cfg {
    const char *host;
    int port;
    const char *user;
    const char *password;
    const char *db;
} webhook_store_cfg;

typedef struct webhook_store webhook_store;

/* Connects (strings are copied). Returns NULL with errstr filled when MySQL
 * cannot be reached. Caller frees with webhook_store_destroy(). */
webhook_store *webhook_store_new(const webhook_store_cfg *cfg, char *errstr, size_t errstr_size);
void webhook_store_destroy(webhook_store *s);
/* Drops the connection and opens a new one. Returns 0 or -1. */
int webhook_store_reconnect(webhook_store *s, char *errstr, size_t errstr_size);

/* A new delivery; all pointers borrowed. */
typedef struct webhook_new {
    const char *request_id;
    const char *url;
    const char *body;
    int64_t next_attempt_at;
} webhook_new;

/* Records n deliveries as PENDING in one transaction and commits it. A
 * delivery already recorded (a result read again) is left as it is. Returns
 * 0, or -1 with errstr filled after rolling back: write the same batch again. */
int webhook_store_enqueue(webhook_store *s, const webhook_new *items, size_t n, int64_t now_ms, char *errstr,
                          size_t errstr_size);

/* A claimed delivery. url and body are owned: free with
 * webhook_delivery_clear(). */
typedef struct webhook_delivery {
    char id[WEBHOOK_ID_MAX + 1];
    char request_id[PROMO_ID_MAX + 1];
    char token[WEBHOOK_TOKEN_MAX + 1];
    char *url;
    char *body;
    size_t body_len;
    int attempts; /* attempts made before this one */
} webhook_delivery;

void webhook_delivery_clear(webhook_delivery *d);

/* Claims up to max deliveries due at now_ms (PENDING, next_attempt_at <=
 * now_ms), oldest first, skipping rows another dispatcher holds (SELECT ...
 * FOR UPDATE SKIP LOCKED in one short transaction), and leases them under
 * token until lease_until_ms. Fills out[0..*n). Returns 0, or -1 with errstr
 * filled (nothing claimed). */
int webhook_store_claim(webhook_store *s, int64_t now_ms, int64_t lease_until_ms, const char *token, size_t max,
                        webhook_delivery *out, size_t *n, char *errstr, size_t errstr_size);

/* What became of one claimed delivery. */
typedef enum {
    WEBHOOK_DELIVERED = 0, /* 2xx */
    WEBHOOK_RETRY,         /* not delivered, next attempt at next_attempt_at */
    WEBHOOK_FAILED,        /* not delivered, schedule exhausted */
    WEBHOOK_NOT_ALLOWED,   /* never sent: host not on the allow list */
} webhook_fate;

typedef struct webhook_attempt {
    bool sent;       /* false for NOT_ALLOWED: no attempt row */
    int64_t at_ms;   /* wall clock at the start of the attempt */
    int http_status; /* 0 when no response */
    int64_t duration_ms;
    char error[WEBHOOK_ERROR_MAX + 1]; /* "" on success */
} webhook_attempt;

/* In one transaction: the attempt row (when sent) and the delivery's new
 * state, written only while the row still carries d->token (a dispatcher
 * whose lease ran out leaves the row to its new holder; *lost is then true).
 * Returns 0, or -1 with errstr filled: keep the outcome and try again. */
int webhook_store_finish(webhook_store *s, const webhook_delivery *d, const webhook_attempt *a, webhook_fate fate,
                         int64_t next_attempt_at, bool *lost, char *errstr, size_t errstr_size);

/* ---- the sender --------------------------------------------------------- */

typedef struct webhook_sender_cfg {
    int connect_timeout_ms;
    int timeout_ms;
    size_t max_in_flight;
    const uint8_t *key; /* the HMAC key (webhook_sign_key()), copied */
    size_t key_len;
    /* During a secret rotation, the other secret's key (copied; key2_len 0:
     * none): each delivery then carries both signatures, space-separated,
     * as Standard Webhooks allows, and a receiver knowing either verifies. */
    const uint8_t *key2;
    size_t key2_len;
    const char *allow; /* PROMO_WEBHOOK_ALLOW, copied */
    const char *proxy; /* "" = none, whatever the environment says */
    const char *user_agent;
} webhook_sender_cfg;

typedef struct webhook_sender webhook_sender;

/* Returns NULL with errstr filled when libcurl cannot be set up. Caller
 * frees with webhook_sender_destroy(), which abandons transfers in flight. */
webhook_sender *webhook_sender_new(const webhook_sender_cfg *cfg, char *errstr, size_t errstr_size);
void webhook_sender_destroy(webhook_sender *s);

/* Starts one POST of d, signed with the current time. Takes ownership of d's
 * url and body (d is cleared). Returns 0 when the transfer started; 1 when
 * the URL's host is not allowed (nothing sent; why filled, d untouched); -1
 * when the transfer could not be set up (why filled, d untouched: treat it
 * as a failed attempt). */
int webhook_sender_start(webhook_sender *s, webhook_delivery *d, int64_t now_ms, char *why, size_t why_size);

/* Transfers started and not yet taken back with webhook_sender_take(); start
 * at most max_in_flight minus this many. */
size_t webhook_sender_in_flight(const webhook_sender *s);

/* Drives transfers, waiting up to wait_ms for network activity or a
 * webhook_sender_wakeup(). Returns 0, or -1 on a libcurl multi error. */
int webhook_sender_run(webhook_sender *s, int wait_ms);

/* A finished transfer: the delivery (ownership back to the caller), what
 * happened, and the receiver's Retry-After in ms (-1 = none). */
typedef struct webhook_done {
    webhook_delivery d;
    webhook_attempt a;
    bool ok; /* 2xx */
    int64_t retry_after_ms;
} webhook_done;

/* Moves up to max finished transfers into out; returns how many. */
size_t webhook_sender_take(webhook_sender *s, webhook_done *out, size_t max);

/* Makes a webhook_sender_run() in progress return early. The only sender
 * function that may be called from another thread. */
void webhook_sender_wakeup(webhook_sender *s);

#endif
