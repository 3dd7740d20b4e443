/* ratelimit.h — token buckets for ingest: one per API key, one per client
 * address, checked by http.c before a request does any work.
 *
 * A bucket holds up to `burst` tokens and refills at `rps` tokens a second;
 * a request takes one or is refused with the time until one is there (the
 * Retry-After of the 429). The buckets are kept as GCRA "theoretical arrival
 * times", one int64 per bucket, in a hash table split into lock stripes, so
 * workers serving different keys or addresses never wait for each other and
 * a hot key costs one short critical section per request.
 */
#ifndef PROMO_INGEST_RATELIMIT_H
#define PROMO_INGEST_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_KEY_MAX 63 /* longer keys are cut; an IPv6 address is at most 45 */

typedef struct ratelimit ratelimit;

/* rps <= 0 turns the limiter off (every take succeeds, nothing is stored).
 * max_entries bounds the memory: idle buckets (full again) are dropped first
 * when a stripe is full. Returns NULL with errstr. Caller frees with
 * ratelimit_destroy(). */
ratelimit *ratelimit_new(double rps, double burst, size_t max_entries, char *errstr, size_t errstr_size);
void ratelimit_destroy(ratelimit *rl);

/* Takes one token from key's bucket at time now_ns (monotonic). Returns 0
 * when allowed, else the nanoseconds until a token is available (> 0).
 * Thread-safe; runs on CivetWeb worker threads. */
int64_t ratelimit_take(ratelimit *rl, const char *key, int64_t now_ns);

/* The configuration, for /metrics. */
double ratelimit_rps(const ratelimit *rl);
double ratelimit_burst(const ratelimit *rl);

#endif
