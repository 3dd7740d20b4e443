/* domain.h — what the runtime needs from a domain's pure state machine.
 *
 * Each domain (coupon.c, point.c, timesale.c) keeps the state of one Kafka
 * partition in memory and applies commands to it. apply() touches no Kafka,
 * Redis or clock: "now" is the command's submitted_at, passed in, so replaying
 * a partition gives byte-identical results. Request-id dedupe is not done here
 * (the runtime does it before apply); a domain sees each request once.
 *
 * State is checkpointed as independent entries, each a key (a short string
 * such as "p:<policy_id>" or "c:<policy_id>:<serial>") and an opaque byte
 * value encoded by the domain. An entry changed by apply() is dirty until the
 * next dump(). The runtime writes dumped entries to Redis and gives them back
 * through load() on restore, in any order.
 */
#ifndef PROMO_DOMAIN_H
#define PROMO_DOMAIN_H

#include "cmd.h"

/* Called once per entry by dump(); val NULL means the entry was deleted.
 * Returns 0 to go on, nonzero to stop the dump (dump returns that value). */
typedef int (*domain_emit_fn)(void *ctx, const char *key, size_t key_len, const uint8_t *val, size_t val_len);

/* Called once per command by due(); returns 0 to go on, nonzero to stop. */
typedef int (*domain_cmd_fn)(void *ctx, const promo_cmd *cmd);

typedef struct domain_ops {
    promo_domain domain;
    const char *name;  /* "coupon", "point", "timesale" */
    const char *topic; /* TOPIC_COUPON_CMD... (topics.h) */
    int schema_id;     /* 1, 2, 3 */
    /* Caller frees with destroy(). NULL on out of memory. */
    void *(*state_new)(void);
    void (*state_destroy)(void *state);
    /* Fills res (already result_init()ed by the caller) with SUCCEEDED and
     * the outcome, or with REJECTED and a reason code. Returns 0, or -1 only
     * on out of memory (state unchanged). */
    int (*apply)(void *state, const promo_cmd *cmd, int64_t now, promo_result *res);
    /* Restores one entry. Returns 0, or -1 if the value is malformed. */
    int (*load)(void *state, const char *key, size_t key_len, const uint8_t *val, size_t val_len);
    /* Emits every dirty entry (all entries when all is true) and clears the
     * dirty set if every emit returned 0. */
    int (*dump)(void *state, int all, domain_emit_fn emit, void *ctx);
    size_t (*entries)(void *state); /* number of entries held */
    /* The commands that time has made due by now (the processor's wall
     * clock): e.g. the ExpireHold of a hold whose deadline has passed. The
     * runtime produces them into the partition's own topic, so they are
     * applied in the log's order like any command; apply() still never reads
     * a clock. Each command has a complete envelope but callback_url and
     * client_id. NULL for a domain with nothing timed. Returns 0, or the
     * first nonzero emit() value. */
    int (*due)(void *state, int64_t now, domain_cmd_fn emit, void *ctx);
} domain_ops;

extern const domain_ops coupon_ops;
extern const domain_ops point_ops;
extern const domain_ops timesale_ops;

/* "coupon" -> &coupon_ops; NULL for an unknown name. */
const domain_ops *domain_by_name(const char *name);

#endif
