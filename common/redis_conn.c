/* redis_conn.c — opening and authenticating Redis connections (see
 * redis_conn.h). The credentials are read from the environment on every
 * open: they are secrets, so they are never copied into logs or errstr. */
#include "redis_conn.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

redisContext *redis_open(const char *host, int port, struct timeval timeout, char *errstr, size_t errstr_size) {
    redisContext *c =
        host[0] == '/' ? redisConnectUnixWithTimeout(host, timeout) : redisConnectWithTimeout(host, port, timeout);
    if (!c || c->err) {
        snprintf(errstr, errstr_size, "redis connect %s:%d: %s", host, port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    const char *password = cfg_secret("PROMO_REDIS_PASSWORD", NULL);
    if (!password) return c;
    const char *user = cfg_str("PROMO_REDIS_USER", NULL);
    redisReply *r = user ? redisCommand(c, "AUTH %s %s", user, password) : redisCommand(c, "AUTH %s", password);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size, "redis AUTH%s%s at %s:%d refused: %s", user ? " as " : "", user ? user : "", host,
                 port, r ? r->str : c->errstr);
        if (r) freeReplyObject(r);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r);
    return c;
}
