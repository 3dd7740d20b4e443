/* front.h — the HTTP front both baselines share, so that in the benchmark
 * table only the core behind the front differs from ours.
 *
 * The front is a CivetWeb server configured like ingest (keep-alive,
 * TCP_NODELAY, PROMO_HTTP_THREADS workers, PROMO_API_KEYS bearer keys) that
 * serves the two routes the stampede needs:
 *
 *   POST /v1/coupon-policies               {policy_id, total_quantity, per_user_limit?}  admin
 *   POST /v1/coupon-policies/{id}/issue    {user_id}                                      client
 *
 * An issue answers 200 with the outcome at once, in the shape of our
 * GET /v1/requests/{id} body ({request_id, status SUCCEEDED|REJECTED, reason,
 * result: {coupon_id...}}): these designs decide while the client waits.
 * A backend implements the decision; its functions run on CivetWeb worker
 * threads, several at once, and keep per-thread connections.
 */
#ifndef PROMO_BENCH_FRONT_H
#define PROMO_BENCH_FRONT_H

#include <stddef.h>
#include <stdint.h>

enum { FRONT_ISSUED = 0, FRONT_REJECTED = 1, FRONT_ERROR = -1 };

typedef struct front_backend {
    const char *name; /* "baseline-rowlock" */
    /* Once at start, on the main thread: create tables, load scripts. */
    int (*setup)(char *errstr, size_t errstr_size);
    /* Creates the policy, or resets it to nothing issued. */
    int (*create_policy)(const char *policy_id, long long quantity, int per_user_limit, char *errstr,
                         size_t errstr_size);
    /* FRONT_ISSUED with *serial, FRONT_REJECTED with *reason (a static
     * code), or FRONT_ERROR with errstr. */
    int (*issue)(const char *policy_id, const char *user_id, int64_t now, long long *serial, const char **reason,
                 char *errstr, size_t errstr_size);
    /* A worker thread ends: close its connection. */
    void (*thread_end)(void);
} front_backend;

/* Runs the server until SIGTERM or SIGINT; returns the exit status. The port
 * comes from --port or PROMO_HTTP_PORT. */
int front_main(const front_backend *b, int argc, char **argv);

#endif
