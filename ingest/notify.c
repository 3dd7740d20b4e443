/* notify.c — the "promo:done" subscriber and the waiter table (notify.h).
 *
 * Threads: the subscriber thread owns its hiredis connection alone and only
 * touches the waiter table through a stripe's mutex; workers touch only their
 * own waiter and its stripe. The subscriber never blocks in hiredis: it
 * poll()s the socket together with a pipe, so notify_stop() can interrupt it
 * at once, and a dead connection is noticed by the read that fails.
 */
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "keys.h"
#include "redis_conn.h"
#include "util.h"

#define STRIPES 256
#define RECONNECT_MS 500

struct notify_waiter {
    char id[PROMO_ID_MAX + 1];
    unsigned stripe;
    bool fired;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC, so mono_ms deadlines apply */
    notify_waiter *prev, *next;
};

typedef struct stripe {
    pthread_mutex_t mu;
    notify_waiter *head;
} stripe;

struct notify {
    char host[256];
    int port;
    pthread_t thread;
    int stop_pipe[2];
    atomic_bool closed;
    atomic_bool connected;
    atomic_ullong messages, wakeups, reconnects;
    atomic_llong waiting;
    stripe stripes[STRIPES];
};

static unsigned stripe_of(const char *id) {
    uint32_t h = 2166136261u;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return h % STRIPES;
}

/* Wakes the waiters of id, or every waiter when id is NULL. */
static void wake(notify *n, const char *id) {
    unsigned lo = 0, hi = STRIPES;
    if (id) lo = stripe_of(id), hi = lo + 1;
    for (unsigned s = lo; s < hi; s++) {
        stripe *st = &n->stripes[s];
        pthread_mutex_lock(&st->mu);
        for (notify_waiter *w = st->head; w; w = w->next) {
            if (id && strcmp(w->id, id) != 0) continue;
            w->fired = true;
            pthread_cond_signal(&w->cv);
            if (id) atomic_fetch_add_explicit(&n->wakeups, 1, memory_order_relaxed);
        }
        pthread_mutex_unlock(&st->mu);
    }
}

/* Sleeps up to ms, or less when stop is asked. Returns true when it is. */
static bool stop_sleep(notify *n, int ms) {
    struct pollfd p = {.fd = n->stop_pipe[0], .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

static void on_reply(notify *n, redisReply *r) {
    /* ["message", channel, id]; the subscribe confirmation is ignored. */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) return;
    redisReply *kind = r->element[0], *id = r->element[2];
    if (kind->type != REDIS_REPLY_STRING || strcmp(kind->str, "message") != 0) return;
    if (id->type != REDIS_REPLY_STRING || id->len == 0 || id->len > PROMO_ID_MAX) return;
    atomic_fetch_add_explicit(&n->messages, 1, memory_order_relaxed);
    wake(n, id->str);
}

/* One subscription, until the connection fails or stop is asked. Returns
 * true when stop was asked. */
static bool subscribe_once(notify *n) {
    struct timeval tv = {1, 0};
    char err[256];
    redisContext *c = redis_open(n->host, n->port, tv, err, sizeof err);
    if (!c) return false;
    redisSetTimeout(c, tv);
    redisReply *r = redisCommand(c, "SUBSCRIBE %s", KEY_DONE_CHANNEL);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        if (r) freeReplyObject(r);
        redisFree(c);
        return false;
    }
    freeReplyObject(r);
    atomic_store(&n->connected, true);
    atomic_fetch_add(&n->reconnects, 1);
    log_info("subscribed to %s on %s:%d", KEY_DONE_CHANNEL, n->host, n->port);
    /* What was published while we were away is lost: everyone re-reads. */
    wake(n, NULL);
    bool stop = false;
    for (;;) {
        void *reply = NULL;
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) break;
        if (reply) {
            on_reply(n, reply);
            freeReplyObject(reply);
            continue;
        }
        struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = n->stop_pipe[0], .events = POLLIN}};
        int pr = poll(p, 2, 1000);
        if (pr < 0 && errno != EINTR) break;
        if (p[1].revents) {
            stop = true;
            break;
        }
        if (p[0].revents && redisBufferRead(c) != REDIS_OK) break;
    }
    atomic_store(&n->connected, false);
    if (!stop) log_warn("subscription to %s lost: %s", KEY_DONE_CHANNEL, c->err ? c->errstr : "closed");
    redisFree(c);
    /* Waiters now poll slowly until the next subscription; wake them so
     * none sleeps through its whole wait. */
    wake(n, NULL);
    return stop;
}

static void *subscriber_main(void *arg) {
    notify *n = arg;
    pthread_setname_np(pthread_self(), "ingest-notify"); /* for top and perf */
    while (!subscribe_once(n))
        if (stop_sleep(n, RECONNECT_MS)) break;
    return NULL;
}

notify *notify_start(const char *redis_host, int redis_port, char *errstr, size_t errstr_size) {
    notify *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    snprintf(n->host, sizeof n->host, "%s", redis_host);
    n->port = redis_port;
    for (int i = 0; i < STRIPES; i++) pthread_mutex_init(&n->stripes[i].mu, NULL);
    if (pipe2(n->stop_pipe, O_CLOEXEC) != 0) {
        snprintf(errstr, errstr_size, "pipe: %s", strerror(errno));
        free(n);
        return NULL;
    }
    if (pthread_create(&n->thread, NULL, subscriber_main, n) != 0) {
        snprintf(errstr, errstr_size, "cannot start the subscriber thread");
        close(n->stop_pipe[0]);
        close(n->stop_pipe[1]);
        free(n);
        return NULL;
    }
    return n;
}

void notify_close(notify *n) {
    if (!n) return;
    atomic_store(&n->closed, true);
    wake(n, NULL);
}

void notify_stop(notify *n) {
    if (!n) return;
    notify_close(n);
    ssize_t wr = write(n->stop_pipe[1], "x", 1);
    (void)wr;
    pthread_join(n->thread, NULL);
    close(n->stop_pipe[0]);
    close(n->stop_pipe[1]);
    for (int i = 0; i < STRIPES; i++) pthread_mutex_destroy(&n->stripes[i].mu);
    free(n);
}

notify_waiter *notify_register(notify *n, const char *request_id) {
    notify_waiter *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    snprintf(w->id, sizeof w->id, "%s", request_id);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &attr);
    pthread_condattr_destroy(&attr);
    w->stripe = stripe_of(w->id);
    stripe *st = &n->stripes[w->stripe];
    pthread_mutex_lock(&st->mu);
    w->next = st->head;
    if (st->head) st->head->prev = w;
    st->head = w;
    pthread_mutex_unlock(&st->mu);
    atomic_fetch_add(&n->waiting, 1);
    return w;
}

void notify_unregister(notify *n, notify_waiter *w) {
    if (!w) return;
    stripe *st = &n->stripes[w->stripe];
    pthread_mutex_lock(&st->mu);
    if (w->prev)
        w->prev->next = w->next;
    else
        st->head = w->next;
    if (w->next) w->next->prev = w->prev;
    pthread_mutex_unlock(&st->mu);
    atomic_fetch_sub(&n->waiting, 1);
    pthread_cond_destroy(&w->cv);
    free(w);
}

int notify_wait(notify *n, notify_waiter *w, int64_t deadline_ms) {
    stripe *st = &n->stripes[w->stripe];
    int rc = NOTIFY_TIMEOUT;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (atomic_load(&n->closed)) {
            rc = NOTIFY_CLOSED;
            break;
        }
        if (w->fired) {
            w->fired = false;
            rc = NOTIFY_WOKEN;
            break;
        }
        int64_t now = mono_ms(), until = deadline_ms;
        if (!atomic_load(&n->connected) && until > now + NOTIFY_FALLBACK_MS) until = now + NOTIFY_FALLBACK_MS;
        if (now >= until) break;
        /* mono_ms() and CLOCK_MONOTONIC are one clock. */
        struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000L};
        if (pthread_cond_timedwait(&w->cv, &st->mu, &ts) == ETIMEDOUT && !w->fired) break;
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void notify_get_stats(notify *n, notify_stats *out) {
    out->messages = atomic_load(&n->messages);
    out->wakeups = atomic_load(&n->wakeups);
    out->reconnects = atomic_load(&n->reconnects);
    out->waiting = atomic_load(&n->waiting);
    out->connected = atomic_load(&n->connected);
}
