/* ratelimit.c — striped GCRA token buckets (see ratelimit.h).
 *
 * GCRA keeps, per bucket, the time `tat` at which the bucket would be full
 * again. With T = 1/rps, a request at t is allowed when
 * max(tat, t) + T - t <= burst * T, and then tat becomes max(tat, t) + T;
 * otherwise the caller may retry after max(tat, t) + T - burst * T - t. This
 * is exactly a token bucket of `burst` tokens refilled at `rps`, with no
 * timer and no refill step.
 *
 * Entries live in one uthash table per stripe, the stripe picked by a hash of
 * the key, each behind its own mutex. A stripe holding its share of
 * max_entries first drops entries whose bucket is full again (tat <= now:
 * forgetting them changes nothing), then the oldest inserted.
 */
#include "ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define STRIPES 64

typedef struct entry {
    char key[RATELIMIT_KEY_MAX + 1];
    int64_t tat;
    UT_hash_handle hh;
} entry;

typedef struct stripe {
    pthread_mutex_t mu;
    entry *table;
    size_t n;
    /* Padding keeps two stripes' mutexes off one cache line. */
    char pad[64];
} stripe;

struct ratelimit {
    double rps, burst;
    int64_t t_ns;     /* emission interval */
    int64_t burst_ns; /* burst * t_ns */
    size_t per_stripe;
    stripe stripes[STRIPES];
};

ratelimit *ratelimit_new(double rps, double burst, size_t max_entries, char *errstr, size_t errstr_size) {
    if (rps > 0 && (burst < 1 || rps > 1e9)) {
        snprintf(errstr, errstr_size, "rate limit burst must be at least 1 and rps at most 1e9");
        return NULL;
    }
    ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    rl->rps = rps > 0 ? rps : 0;
    rl->burst = rps > 0 ? burst : 0;
    if (rps > 0) {
        rl->t_ns = (int64_t)(1e9 / rps);
        if (rl->t_ns < 1) rl->t_ns = 1;
        rl->burst_ns = (int64_t)(burst * (double)rl->t_ns);
    }
    rl->per_stripe = max_entries / STRIPES + 1;
    for (int i = 0; i < STRIPES; i++) pthread_mutex_init(&rl->stripes[i].mu, NULL);
    return rl;
}

void ratelimit_destroy(ratelimit *rl) {
    if (!rl) return;
    for (int i = 0; i < STRIPES; i++) {
        entry *e, *tmp;
        HASH_ITER(hh, rl->stripes[i].table, e, tmp) {
            HASH_DEL(rl->stripes[i].table, e);
            free(e);
        }
        pthread_mutex_destroy(&rl->stripes[i].mu);
    }
    free(rl);
}

double ratelimit_rps(const ratelimit *rl) {
    return rl->rps;
}
double ratelimit_burst(const ratelimit *rl) {
    return rl->burst;
}

/* FNV-1a; only spreads keys over stripes. */
static unsigned stripe_of(const char *key, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h % STRIPES;
}

/* Makes room in a full stripe; called with its mutex held. */
static void stripe_evict(stripe *st, int64_t now_ns) {
    entry *e, *tmp;
    HASH_ITER(hh, st->table, e, tmp) {
        if (e->tat <= now_ns) {
            HASH_DEL(st->table, e);
            free(e);
            st->n--;
        }
    }
    if (st->table && st->n > 0) {
        /* Still full of busy buckets: the oldest one goes (an attacker with
         * many addresses gets fresh buckets, never more than max_entries). */
        e = st->table;
        HASH_DEL(st->table, e);
        free(e);
        st->n--;
    }
}

int64_t ratelimit_take(ratelimit *rl, const char *key, int64_t now_ns) {
    if (rl->t_ns == 0) return 0;
    size_t len = strnlen(key, RATELIMIT_KEY_MAX);
    stripe *st = &rl->stripes[stripe_of(key, len)];
    int64_t wait = 0;
    pthread_mutex_lock(&st->mu);
    entry *e;
    HASH_FIND(hh, st->table, key, len, e);
    if (!e) {
        if (st->n >= rl->per_stripe) stripe_evict(st, now_ns);
        e = calloc(1, sizeof *e);
        if (!e) {
            /* Out of memory: let the request through rather than fail it. */
            pthread_mutex_unlock(&st->mu);
            return 0;
        }
        memcpy(e->key, key, len);
        e->tat = now_ns;
        HASH_ADD(hh, st->table, key, len, e);
        st->n++;
    }
    int64_t base = e->tat > now_ns ? e->tat : now_ns;
    int64_t next = base + rl->t_ns;
    if (next - now_ns <= rl->burst_ns)
        e->tat = next;
    else
        wait = next - rl->burst_ns - now_ns;
    pthread_mutex_unlock(&st->mu);
    return wait;
}
