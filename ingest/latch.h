/* latch.h — a count-down latch on a bare futex word, so that a CivetWeb
 * worker waiting for several things at once (the Kafka ack of its command,
 * the Redis answer for its PENDING record) sleeps once and is woken once, by
 * whichever completes last.
 *
 * The latch lives on the waiting worker's stack. The thread that counts it
 * down to zero wakes the worker, which may then return at once, so the wake
 * can reach an address that already holds something else: harmless, since
 * every futex user (glibc's locks included) treats a wake as "look again".
 * Nothing else touches the latch after its count reached zero.
 */
#ifndef PROMO_INGEST_LATCH_H
#define PROMO_INGEST_LATCH_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct latch {
    atomic_int left;
} latch;

static inline void latch_init(latch *l, int count) {
    atomic_init(&l->left, count);
}

/* Called once per event by the thread that completed it. */
static inline void latch_count_down(latch *l) {
    if (atomic_fetch_sub_explicit(&l->left, 1, memory_order_acq_rel) == 1)
        syscall(SYS_futex, &l->left, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Returns once every event has been counted down. */
static inline void latch_wait(latch *l) {
    int left;
    while ((left = atomic_load_explicit(&l->left, memory_order_acquire)) != 0)
        syscall(SYS_futex, &l->left, FUTEX_WAIT_PRIVATE, left, NULL, NULL, 0);
}

#endif
