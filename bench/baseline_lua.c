/* baseline_lua.c — baseline-lua: the stampede handled with Redis, the other
 * usual answer. Each issue request is one EVALSHA of a Lua script that checks
 * the policy, the user's count and the quantity and issues the coupon
 * atomically (Redis runs one script at a time). Nothing goes to a database:
 * the coupons live in Redis only, as durable as its AOF (everysec).
 *
 * Keys, one hash tag per policy so a Redis Cluster would keep them together:
 *   baseline:{<policy_id>}:policy   hash: total_quantity, per_user_limit, issued
 *   baseline:{<policy_id>}:users    hash: user_id -> coupons issued
 *   baseline:{<policy_id>}:coupons  hash: serial -> user_id
 *
 * It sits behind the same CivetWeb front as the other baseline (front.c) and
 * answers the outcome synchronously. Each worker thread keeps its own hiredis
 * connection, opened on first use and reopened after an error.
 */
#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "util.h"

/* Same order of checks as the coupon processor: limit before quantity. */
static const char lua_script[] =
    "local p = redis.call('HMGET', KEYS[1], 'total_quantity', 'per_user_limit', 'issued')\n"
    "if not p[1] then return -1 end\n"
    "local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')\n"
    "if mine >= tonumber(p[2]) then return -2 end\n"
    "if tonumber(p[3]) >= tonumber(p[1]) then return -3 end\n"
    "local serial = redis.call('HINCRBY', KEYS[1], 'issued', 1)\n"
    "redis.call('HINCRBY', KEYS[2], ARGV[1], 1)\n"
    "redis.call('HSET', KEYS[3], serial, ARGV[1])\n"
    "return serial\n";

static char lua_sha[64];
static _Thread_local redisContext *lua_rc;

static redisContext *lua_connect(char *errstr, size_t errstr_size) {
    struct timeval tv = {5, 0};
    redisContext *c =
        redisConnectWithTimeout(cfg_str("PROMO_REDIS_HOST", "127.0.0.1"), (int)cfg_int("PROMO_REDIS_PORT", 6379), tv);
    if (!c || c->err) {
        snprintf(errstr, errstr_size, "redis: %s", c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

static redisContext *lua_thread_rc(char *errstr, size_t errstr_size) {
    if (!lua_rc) lua_rc = lua_connect(errstr, errstr_size);
    return lua_rc;
}

static void lua_drop(void) {
    if (lua_rc) redisFree(lua_rc);
    lua_rc = NULL;
}

static int lua_load(redisContext *c, char *errstr, size_t errstr_size) {
    redisReply *r = redisCommand(c, "SCRIPT LOAD %s", lua_script);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_STRING && r->len < (int)sizeof lua_sha) {
        memcpy(lua_sha, r->str, (size_t)r->len);
        lua_sha[r->len] = '\0';
        rc = 0;
    } else {
        snprintf(errstr, errstr_size, "SCRIPT LOAD: %s", r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    }
    if (r) freeReplyObject(r);
    return rc;
}

static int lua_setup(char *errstr, size_t errstr_size) {
    redisContext *c = lua_connect(errstr, errstr_size);
    if (!c) return -1;
    int rc = lua_load(c, errstr, errstr_size);
    redisFree(c);
    return rc;
}

static int lua_create(const char *policy_id, long long quantity, int per_user_limit, char *errstr, size_t errstr_size) {
    redisContext *c = lua_thread_rc(errstr, errstr_size);
    if (!c) return -1;
    char k1[128], k2[128], k3[128];
    snprintf(k1, sizeof k1, "baseline:{%s}:policy", policy_id);
    snprintf(k2, sizeof k2, "baseline:{%s}:users", policy_id);
    snprintf(k3, sizeof k3, "baseline:{%s}:coupons", policy_id);
    redisAppendCommand(c, "MULTI");
    redisAppendCommand(c, "DEL %s %s %s", k1, k2, k3);
    redisAppendCommand(c, "HSET %s total_quantity %lld per_user_limit %d issued 0", k1, quantity, per_user_limit);
    redisAppendCommand(c, "EXEC");
    int rc = 0;
    for (int i = 0; i < 4; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r || r->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "redis: %s", r ? r->str : c->errstr);
            rc = -1;
        }
        if (r) freeReplyObject(r);
        if (rc) {
            lua_drop();
            break;
        }
    }
    return rc;
}

static int lua_issue(const char *policy_id, const char *user_id, int64_t now, long long *serial, const char **reason,
                     char *errstr, size_t errstr_size) {
    (void)now;
    redisContext *c = lua_thread_rc(errstr, errstr_size);
    if (!c) return FRONT_ERROR;
    char k1[128], k2[128], k3[128];
    snprintf(k1, sizeof k1, "baseline:{%s}:policy", policy_id);
    snprintf(k2, sizeof k2, "baseline:{%s}:users", policy_id);
    snprintf(k3, sizeof k3, "baseline:{%s}:coupons", policy_id);
    for (int attempt = 0; attempt < 2; attempt++) {
        redisReply *r = redisCommand(c, "EVALSHA %s 3 %s %s %s %s", lua_sha, k1, k2, k3, user_id);
        if (!r) {
            snprintf(errstr, errstr_size, "redis: %s", c->errstr);
            lua_drop();
            return FRONT_ERROR;
        }
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && attempt == 0) {
            freeReplyObject(r);
            /* Redis restarted or flushed its scripts. */
            if (lua_load(c, errstr, errstr_size) != 0) return FRONT_ERROR;
            continue;
        }
        int rc = FRONT_ERROR;
        if (r->type == REDIS_REPLY_INTEGER) {
            long long v = r->integer;
            if (v > 0) {
                *serial = v;
                rc = FRONT_ISSUED;
            } else {
                *reason = v == -1 ? "NOT_FOUND" : v == -2 ? "LIMIT_EXCEEDED" : "SOLD_OUT";
                rc = FRONT_REJECTED;
            }
        } else {
            snprintf(errstr, errstr_size, "redis: %s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        }
        freeReplyObject(r);
        return rc;
    }
    return FRONT_ERROR;
}

int main(int argc, char **argv) {
    static const front_backend be = {
        .name = "baseline-lua",
        .setup = lua_setup,
        .create_policy = lua_create,
        .issue = lua_issue,
        .thread_end = lua_drop,
    };
    return front_main(&be, argc, argv);
}
