/* runtime.h — the processor runtime: consume, dedupe, apply, produce,
 * checkpoint, restore, for one domain (see runtime.c for the lifecycle). */
#ifndef PROMO_RUNTIME_H
#define PROMO_RUNTIME_H

#include <signal.h>

#include "domain.h"

typedef struct runtime runtime;

/* Connects to Kafka and Redis and joins the domain's consumer group.
 * Returns NULL with errstr filled on failure. Caller frees with
 * runtime_destroy(). */
runtime *runtime_new(const domain_ops *ops, char *errstr, size_t errstr_size);
/* Runs until *stop becomes nonzero, then checkpoints and leaves the group. */
int runtime_run(runtime *rt, volatile sig_atomic_t *stop);
void runtime_destroy(runtime *rt);

#endif
