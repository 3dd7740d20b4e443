/* baseline_rowlock.c — baseline-rowlock: the stampede handled the way most
 * shops first build it, for the benchmark to compare against. Each issue
 * request is one MariaDB transaction on the request's thread: lock the
 * policy row (SELECT ... FOR UPDATE), count the user's coupons, insert the
 * coupon, bump the issued count, commit. The row lock serialises every
 * request for one policy, so a hot coupon runs at the speed of one lock
 * holder's round trips and commit.
 *
 * It sits behind the same CivetWeb front as the other baseline (front.c) and
 * answers the outcome synchronously. Tables baseline_policies and
 * baseline_coupons live in the PROMO_MYSQL_* database next to the sink's
 * tables and are created at start. Each worker thread keeps its own
 * connection, opened on first use and reopened after an error.
 */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "util.h"

static _Thread_local MYSQL *rowlock_db;

static MYSQL *rowlock_connect(char *errstr, size_t errstr_size) {
    MYSQL *db = mysql_init(NULL);
    if (!db) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    unsigned int timeout = 10;
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(db, cfg_str("PROMO_MYSQL_HOST", "127.0.0.1"), cfg_str("PROMO_MYSQL_USER", "promo"),
                            cfg_str("PROMO_MYSQL_PASSWORD", "promo"), cfg_str("PROMO_MYSQL_DB", "promo"),
                            (unsigned)cfg_int("PROMO_MYSQL_PORT", 3306), NULL, 0) ||
        mysql_autocommit(db, 0)) {
        snprintf(errstr, errstr_size, "mysql: %s", mysql_error(db));
        mysql_close(db);
        return NULL;
    }
    return db;
}

static MYSQL *rowlock_thread_db(char *errstr, size_t errstr_size) {
    if (!rowlock_db) rowlock_db = rowlock_connect(errstr, errstr_size);
    return rowlock_db;
}

/* After a failed statement: roll back, and drop a connection that broke. */
static int rowlock_fail(MYSQL *db, char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size, "mysql: %s", mysql_error(db));
    if (mysql_query(db, "ROLLBACK") != 0) {
        mysql_close(db);
        rowlock_db = NULL;
    }
    return FRONT_ERROR;
}

static int rowlock_exec(MYSQL *db, const char *sql) {
    return mysql_query(db, sql);
}

/* One row of integers from sql into out[0..n). Returns 1 row found, 0 none,
 * -1 error. */
static int rowlock_row(MYSQL *db, const char *sql, long long *out, unsigned n) {
    if (mysql_query(db, sql) != 0) return -1;
    MYSQL_RES *r = mysql_store_result(db);
    if (!r) return -1;
    MYSQL_ROW row = mysql_fetch_row(r);
    int found = 0;
    if (row && mysql_num_fields(r) >= n) {
        for (unsigned i = 0; i < n; i++) out[i] = row[i] ? atoll(row[i]) : 0;
        found = 1;
    }
    mysql_free_result(r);
    return found;
}

static int rowlock_setup(char *errstr, size_t errstr_size) {
    if (mysql_library_init(0, NULL, NULL) != 0) {
        snprintf(errstr, errstr_size, "mysql_library_init failed");
        return -1;
    }
    MYSQL *db = rowlock_connect(errstr, errstr_size);
    if (!db) return -1;
    const char *ddl[] = {
        "CREATE TABLE IF NOT EXISTS baseline_policies ("
        " policy_id VARCHAR(64) NOT NULL PRIMARY KEY, total_quantity BIGINT NOT NULL,"
        " per_user_limit INT NOT NULL, issued BIGINT NOT NULL DEFAULT 0"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS baseline_coupons ("
        " coupon_id VARCHAR(86) NOT NULL PRIMARY KEY, policy_id VARCHAR(64) NOT NULL,"
        " user_id VARCHAR(64) NOT NULL, issued_at BIGINT NOT NULL, KEY baseline_coupons_user (policy_id, user_id)"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "COMMIT",
    };
    for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++)
        if (mysql_query(db, ddl[i]) != 0) {
            snprintf(errstr, errstr_size, "mysql: %s", mysql_error(db));
            mysql_close(db);
            return -1;
        }
    mysql_close(db);
    return 0;
}

static int rowlock_create(const char *policy_id, long long quantity, int per_user_limit, char *errstr,
                          size_t errstr_size) {
    MYSQL *db = rowlock_thread_db(errstr, errstr_size);
    if (!db) return -1;
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO baseline_policies (policy_id, total_quantity, per_user_limit, issued) "
             "VALUES ('%s', %lld, %d, 0) ON DUPLICATE KEY UPDATE total_quantity = VALUES(total_quantity), "
             "per_user_limit = VALUES(per_user_limit), issued = 0",
             policy_id, quantity, per_user_limit);
    if (rowlock_exec(db, sql) != 0) return rowlock_fail(db, errstr, errstr_size);
    snprintf(sql, sizeof sql, "DELETE FROM baseline_coupons WHERE policy_id = '%s'", policy_id);
    if (rowlock_exec(db, sql) != 0 || rowlock_exec(db, "COMMIT") != 0) return rowlock_fail(db, errstr, errstr_size);
    return 0;
}

/* Ids reach here validated ([A-Za-z0-9_.-]), so they go into SQL as they are. */
static int rowlock_issue(const char *policy_id, const char *user_id, int64_t now, long long *serial,
                         const char **reason, char *errstr, size_t errstr_size) {
    MYSQL *db = rowlock_thread_db(errstr, errstr_size);
    if (!db) return FRONT_ERROR;
    char sql[512];
    long long pol[3], mine = 0;
    snprintf(sql, sizeof sql,
             "SELECT total_quantity, per_user_limit, issued FROM baseline_policies WHERE policy_id = '%s' FOR UPDATE",
             policy_id);
    int found = rowlock_row(db, sql, pol, 3);
    if (found < 0) return rowlock_fail(db, errstr, errstr_size);
    if (found == 0) {
        *reason = "NOT_FOUND";
    } else {
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM baseline_coupons WHERE policy_id = '%s' AND user_id = '%s'",
                 policy_id, user_id);
        if (rowlock_row(db, sql, &mine, 1) < 0) return rowlock_fail(db, errstr, errstr_size);
        /* Same order of checks as the coupon processor. */
        if (mine >= pol[1])
            *reason = "LIMIT_EXCEEDED";
        else if (pol[2] >= pol[0])
            *reason = "SOLD_OUT";
    }
    if (*reason) {
        if (rowlock_exec(db, "ROLLBACK") != 0) return rowlock_fail(db, errstr, errstr_size);
        return FRONT_REJECTED;
    }
    *serial = pol[2] + 1;
    snprintf(sql, sizeof sql,
             "INSERT INTO baseline_coupons (coupon_id, policy_id, user_id, issued_at) "
             "VALUES ('%s:%lld', '%s', '%s', %lld)",
             policy_id, *serial, policy_id, user_id, (long long)now);
    if (rowlock_exec(db, sql) != 0) return rowlock_fail(db, errstr, errstr_size);
    snprintf(sql, sizeof sql, "UPDATE baseline_policies SET issued = issued + 1 WHERE policy_id = '%s'", policy_id);
    if (rowlock_exec(db, sql) != 0 || rowlock_exec(db, "COMMIT") != 0) return rowlock_fail(db, errstr, errstr_size);
    return FRONT_ISSUED;
}

static void rowlock_thread_end(void) {
    if (rowlock_db) mysql_close(rowlock_db);
    rowlock_db = NULL;
    mysql_thread_end();
}

int main(int argc, char **argv) {
    static const front_backend be = {
        .name = "baseline-rowlock",
        .setup = rowlock_setup,
        .create_policy = rowlock_create,
        .issue = rowlock_issue,
        .thread_end = rowlock_thread_end,
    };
    return front_main(&be, argc, argv);
}
