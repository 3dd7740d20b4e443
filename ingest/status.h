/* status.h — what ingest reads and records outside Kafka: request status in
 * Redis (with MySQL as the fallback) and the read models in MySQL.
 *
 * Each CivetWeb worker thread has its own Redis and MySQL connection, opened
 * on first use and reopened after a failure (not more often than every half
 * second, so a dead server costs a request one quick error, not a connect
 * timeout each). The PENDING records of writes are the exception: one
 * writer thread with its own connection sends them for all workers, in one
 * pipeline per round (status_pending_send()). Otherwise nothing here is
 * shared between threads except the configuration, which is fixed before the
 * server starts.
 *
 * The getters answer with a JSON body the caller sends as is: 0 and *out set
 * (caller frees with free()), STATUS_NOT_FOUND, or -1 with errstr when a store
 * is unreachable (the caller answers 503).
 */
#ifndef PROMO_INGEST_STATUS_H
#define PROMO_INGEST_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "latch.h"
#include "notify.h"

#define STATUS_NOT_FOUND 1

typedef struct status_config {
    const char *redis_host;
    int redis_port;
    const char *mysql_host;
    int mysql_port;
    const char *mysql_user;
    const char *mysql_password;
    const char *mysql_db;
    int ttl_s;      /* of the PENDING record */
    notify *notify; /* borrowed; wakes long-polls (NULL: poll every 10 ms) */
} status_config;

/* Copies cfg and initialises the MySQL client library. Call once from main
 * before any worker starts. Returns 0 or -1 with errstr. */
int status_init(const status_config *cfg, char *errstr, size_t errstr_size);
void status_shutdown(void);
/* Closes the calling thread's connections; CivetWeb's exit_thread calls it. */
void status_thread_end(void);

/* The PENDING record, SET promo:req:<id> json NX EX ttl (the sink's result,
 * if it came first, is never overwritten), written by one writer thread for
 * all workers, so that its round trip overlaps the wait for Kafka and many
 * records share one. The caller owns the struct (its stack will do) and must
 * not touch it between the two calls. */
typedef struct status_pending {
    const char *request_id; /* borrowed until status_pending_finish() */
    const char *json;       /* borrowed until status_pending_finish() */
    latch *done;            /* the worker's, counted down at the answer */
    int result;             /* 1 created, 0 was there, -1 failed (err) */
    char err[128];
    struct status_pending *next;
} status_pending;
/* Queues the record and returns at once; the writer counts done down once
 * Redis answered. status_init() must have run. */
void status_pending_send(status_pending *pr, const char *request_id, const char *json, latch *done);
/* After done reached zero: the record's outcome. With drop (the command was
 * not sent after all), deletes the record again if this request created it.
 * Returns 0, or -1 with errstr (the record may be missing). */
int status_pending_finish(status_pending *pr, bool drop, char *errstr, size_t errstr_size);
/* What status_claim() wrote, so that status_release() takes back only that. */
typedef struct status_claimed {
    bool req;  /* created promo:req:<id> (the PENDING record) */
    bool idem; /* created promo:idem:<id> (the request's fingerprint) */
} status_claimed;

#define STATUS_KEY_REUSED 2

/* Claims request_id (an explicit Idempotency-Key) before its command is
 * sent: in one round trip, SET NX GET of the fingerprint (64 hex digits of
 * the whole HTTP request) under promo:idem:<id> and of the PENDING json under
 * promo:req:<id>, both for the status TTL. Returns 0 when the command may
 * go: the id was free, or its fingerprint is this one (a retry of the same
 * request; the processor dedupes it); or it has no fingerprint but a status
 * record of this domain, command type and entity key (an id a direct Kafka
 * producer used first; the processor compares the command itself). Returns
 * STATUS_KEY_REUSED when any other request holds the id, having taken back
 * what this call wrote; -1 with errstr on a Redis error. *claimed says what
 * this call created. */
int status_claim(const char *request_id, const char *fingerprint, const char *json, const char *domain,
                 const char *command_type, const char *entity_key, status_claimed *claimed, char *errstr,
                 size_t errstr_size);
/* Deletes what status_claim() created (the command was not sent, so a
 * retry starts afresh). 0, or -1 with errstr. */
int status_release(const char *request_id, const status_claimed *claimed, char *errstr, size_t errstr_size);

/* The status body of a request: Redis, else MySQL's requests.result. With
 * wait_ms > 0, waits while the request is unknown or PENDING, until it is
 * decided or the time is up: registered with the notifier, re-reading Redis
 * only when woken (see notify.h). */
int status_get_request(const char *request_id, int wait_ms, char **out, char *errstr, size_t errstr_size);

/* Read models. Lists answer {"items": [...], "next": cursor-or-null}. */
int status_get_policy(const char *policy_id, char **out, char *errstr, size_t errstr_size);
int status_list_coupons(const char *user_id, const char *after_coupon_id, int limit, char **out, char *errstr,
                        size_t errstr_size);
/* A user never seen has balance 0 (never STATUS_NOT_FOUND). */
int status_get_points(const char *user_id, char **out, char *errstr, size_t errstr_size);
/* Newest first; before_seq 0 = from the newest. */
int status_list_history(const char *user_id, int64_t before_seq, int limit, char **out, char *errstr,
                        size_t errstr_size);
int status_get_sale(const char *sale_id, char **out, char *errstr, size_t errstr_size);
/* Pages of policies and sales by id, after the cursor id ("" = from the
 * first), in one state ("" = every state). */
int status_list_policies(const char *state, const char *after, int limit, char **out, char *errstr,
                         size_t errstr_size);
int status_list_sales(const char *state, const char *after, int limit, char **out, char *errstr, size_t errstr_size);
/* Operators' numbers. A policy's: issued, remaining, redeemed,
 * cancelled_redemptions, discount_total, and issued_per_minute, the issues
 * of each minute of the hour up to now (by issued_at) that had some. A
 * sale's: orders, units_sold, units_held, expired, cancelled, revenue
 * (units sold at the sale price), remaining. */
int status_policy_stats(const char *policy_id, int64_t now, char **out, char *errstr, size_t errstr_size);
int status_sale_stats(const char *sale_id, char **out, char *errstr, size_t errstr_size);
int status_get_order(const char *sale_id, const char *order_id, char **out, char *errstr, size_t errstr_size);

/* POST /v1/coupons/{coupon_id}/validate: would a redeem of this coupon by
 * user_id for order_amount succeed now (the caller's clock), and with what
 * discount? Answered from the read models with the redeem's rules, in their
 * order (NOT_FOUND, NOT_OWNER, ALREADY_REDEEMED, EXPIRED, MIN_ORDER_NOT_MET):
 * {"coupon_id", "valid", "discount", "reason"}, never STATUS_NOT_FOUND (an
 * unknown coupon is valid: false). Advisory: the read models trail the log,
 * and the redeem decides. */
int status_validate_coupon(const char *coupon_id, const char *user_id, int64_t order_amount, int64_t now,
                           char **out, char *errstr, size_t errstr_size);

/* Round trips for /readyz. Return 0 or -1 with errstr. */
int status_ping_redis(char *errstr, size_t errstr_size);
int status_ping_mysql(char *errstr, size_t errstr_size);

#endif
