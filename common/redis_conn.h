/* redis_conn.h — one way to open a Redis connection for every program:
 * TCP or a Unix socket, a connect timeout, and AUTH when the deployment sets
 * a password (PROMO_REDIS_PASSWORD or PROMO_REDIS_PASSWORD_FILE, and
 * PROMO_REDIS_USER for a Redis 6 ACL user). */
#ifndef PROMO_REDIS_CONN_H
#define PROMO_REDIS_CONN_H

#include <hiredis.h>
#include <stddef.h>
#include <sys/time.h>

/* Connects to host (a path starting with '/' is a Unix socket) and
 * authenticates. Returns the context, or NULL with errstr filled (the
 * password is never in it). Caller frees with redisFree(). */
redisContext *redis_open(const char *host, int port, struct timeval timeout, char *errstr, size_t errstr_size);

#endif
