/* sink_mysql.h — writes batches of Results into the MySQL read models.
 *
 * The MySQL sink program (mysql_main.c) consumes promo.results and hands each
 * decoded batch to sink_mysql_write(), which turns it into a few multi-row
 * statements inside ONE transaction: the requests log (first result of a
 * request id wins) and the per-entity tables of 001_init.sql (coupon
 * policies, coupons, point accounts and ledger, time sales, sale orders).
 * Every row carries its entity's version and a row is only changed by a
 * higher one, so writing a batch twice, or an older result after a newer
 * one, changes nothing: the program may replay freely after any failure.
 *
 * This module knows SQL and the MySQL C API only; Kafka, Redis and the
 * retry policy live in the program. One handle per thread.
 */
#ifndef PROMO_SINK_MYSQL_H
#define PROMO_SINK_MYSQL_H

#include <stdbool.h>
#include <stddef.h>

#include "cmd.h"

typedef struct sink_mysql_cfg {
    const char *host;
    int port;
    const char *user;
    const char *password;
    const char *db;
} sink_mysql_cfg;

typedef struct sink_mysql sink_mysql;

/* Connects (strings in cfg are copied). Returns NULL with errstr filled when
 * the server cannot be reached. Caller frees with sink_mysql_destroy(). */
sink_mysql *sink_mysql_new(const sink_mysql_cfg *cfg, char *errstr, size_t errstr_size);
void sink_mysql_destroy(sink_mysql *s);

/* Drops the connection (rolling back whatever it had open) and opens a new
 * one. Returns 0 or -1 with errstr filled. */
int sink_mysql_reconnect(sink_mysql *s, char *errstr, size_t errstr_size);

/* Applies each dir/NNN_name.sql not yet listed in schema_migrations, in name
 * order, and records it there. Holds a server-side named lock throughout, so
 * sinks starting together apply each file once. Returns 0 or -1. */
int sink_mysql_migrate(sink_mysql *s, const char *dir, char *errstr, size_t errstr_size);

/* False for results that must not touch the request status (the requests
 * row or the Redis key): an IDEMPOTENCY_KEY_REUSED rejection shares its
 * request id with the first result, which must stay. */
bool sink_mysql_status_wanted(const promo_result *res);

/* Writes n results in one transaction and commits it. json[i] is the status
 * text of res[i] (result_json_dump()); it may be NULL where
 * sink_mysql_status_wanted(res[i]) is false. On success *rows is the number
 * of rows the server reports as changed. On failure the transaction is
 * rolled back (or dies with the connection) and -1 is returned with errstr
 * filled: reconnect and write the same batch again. */
int sink_mysql_write(sink_mysql *s, const promo_result *res, char *const *json, size_t n, long long *rows, char *errstr,
                     size_t errstr_size);

#endif
