/* notify.h — wakes long-polling GET /v1/requests/{id} as soon as a request
 * is decided, without polling Redis.
 *
 * The MySQL sink PUBLISHes a request id on the Redis channel promo:done
 * (KEY_DONE_CHANNEL, keys.h) right after it SETs promo:req:<id>. One subscriber thread here (its own
 * hiredis connection, reconnecting after any failure) receives those ids and
 * wakes the waiters registered under them. Waiters sit in a striped hash
 * table, each on its stripe's mutex and its own condition variable.
 *
 * A waiter's protocol (status.c): register, read Redis once more (the result
 * may have landed between the first read and the registration: the lost
 * wakeup), then wait; after every wake-up or timeout, read Redis again. While
 * the subscriber is disconnected, waits last at most NOTIFY_FALLBACK_MS so
 * waiters fall back to slow polling, and on every (re)subscription every
 * waiter is woken to re-read, since messages published meanwhile are lost.
 */
#ifndef PROMO_INGEST_NOTIFY_H
#define PROMO_INGEST_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

#define NOTIFY_FALLBACK_MS 100

typedef struct notify notify;
typedef struct notify_waiter notify_waiter;

/* Starts the subscriber thread; it connects in the background, so a Redis
 * that is down now is no error. Returns NULL with errstr (out of resources).
 * Caller stops it with notify_stop(). */
notify *notify_start(const char *redis_host, int redis_port, char *errstr, size_t errstr_size);

/* Makes every current and future wait return at once (NOTIFY_CLOSED): the
 * first step of a shutdown, so long-polls answer instead of holding it up. */
void notify_close(notify *n);

/* Closes, stops the subscriber thread and frees. Call after every worker has
 * returned. */
void notify_stop(notify *n);

/* Registers the calling worker's interest in request_id. Returns NULL when
 * out of memory (the caller then polls). Caller ends it with
 * notify_unregister(). */
notify_waiter *notify_register(notify *n, const char *request_id);
void notify_unregister(notify *n, notify_waiter *w);

#define NOTIFY_WOKEN 0
#define NOTIFY_TIMEOUT 1
#define NOTIFY_CLOSED 2

/* Waits until w is woken, deadline_ms (mono_ms clock) passes, or the
 * notifier closes; returns which. Consumes the wake-up. Runs on a CivetWeb
 * worker thread. */
int notify_wait(notify *n, notify_waiter *w, int64_t deadline_ms);

/* Counters for /metrics. */
typedef struct notify_stats {
    unsigned long long messages;   /* ids received */
    unsigned long long wakeups;    /* waiters woken by a message */
    unsigned long long reconnects; /* subscriptions made */
    long long waiting;             /* waiters registered now */
    int connected;                 /* 1 while subscribed */
} notify_stats;
void notify_get_stats(notify *n, notify_stats *out);

#endif
