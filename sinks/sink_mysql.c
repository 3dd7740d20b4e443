/* sink_mysql.c — batches of Results into the read models (sink_mysql.h).
 *
 * A batch becomes one transaction. First the batch is collapsed in memory:
 * every row it touches (a policy, a coupon, an account, a sale, an order)
 * gets one entry holding the highest-version result for its mutable columns
 * and, when the batch has it, the result that created it for its immutable
 * ones. Then each table gets one multi-row statement (split only past
 * STMT_MAX_BYTES), so a 2000-result stampede on one coupon writes one policy
 * row, not 2000. The requests log, one row per result, goes through a few
 * prepared multi-row INSERTs instead (see req_sizes): the server then has
 * nothing to parse for the bulk of a batch.
 *
 * A row is "full" when the batch holds its creating result (a create, an
 * issue, a placement): it is written with INSERT ... ON DUPLICATE KEY UPDATE,
 * the update guarded by `IF(VALUES(version) > version, ...)` with `version`
 * assigned last (MySQL assigns left to right). A row the batch only changes
 * (an issue count, a redemption, a cancellation) is "partial": the columns
 * it cannot fill are NOT NULL, so it is an UPDATE ... WHERE version < new,
 * all of a table's updates sent together as one multi-statement round trip;
 * its row exists already because its creating result came earlier in the
 * same partition and was committed before this batch. Immutable columns are
 * never updated, so the first writer wins and a replay changes nothing.
 *
 * Text columns get the same UTF-8 repair as the JSON: a result with bad bytes
 * must not fail the batch forever (the program never skips a batch).
 */
#include "sink_mysql.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>
#include <mysqld_error.h>
#include <uthash.h>

#include "result_json.h"
#include "util.h"

/* A statement grows past this, it is sent and the next one started: well
 * under the 16 MiB max_allowed_packet of MariaDB and 64 MiB of MySQL 8. */
#define STMT_MAX_BYTES (1u << 20)
#define MIGRATION_LOCK "promo.schema_migrations"
#define MIGRATION_LOCK_WAIT_S 120

/* A growable string; oom is sticky, checked when the statement is sent. */
typedef struct sb {
    char *p;
    size_t len;
    size_t cap;
    bool oom;
} sb;

/* The requests table takes one row per result, most of the server's work
 * per batch; as text, parsing those rows cost the server as much as
 * writing them. So they go through prepared multi-row INSERTs with the
 * values bound in the binary protocol (nothing to parse, escape or
 * unescape): one statement per row count in req_sizes, a batch cut into
 * those (2000 rows: 7 x 256, 3 x 64 and 1 x 16). 14 columns x
 * 256 rows stays far under the 65,535 placeholders a statement may have. */
#define REQ_COLS 14
#define REQ_CHUNK 256
#define N_REQ_SIZES 5
static const int req_sizes[N_REQ_SIZES] = {REQ_CHUNK, 64, 16, 4, 1};

struct sink_mysql {
    MYSQL *conn;
    char *host, *user, *password, *db;
    int port;
    MYSQL_STMT *req_stmt[N_REQ_SIZES];         /* req_sizes[i] rows into requests, prepared on this connection when
                                                  first used */
    MYSQL_BIND *req_bind;                      /* REQ_COLS * REQ_CHUNK parameters */
    sb arena;                                  /* UTF-8-repaired copies of the bound strings of one chunk */
    sb q;                                      /* the statement being built */
    char scratch[3 * (PROMO_URL_MAX + 1) + 1]; /* UTF-8 repair of one field */
};

/* ---- strings -------------------------------------------------------- */

static void sb_reserve(sb *b, size_t add) {
    if (b->oom || b->len + add + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap < b->len + add + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_addn(sb *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(sb *b, const char *s) {
    sb_addn(b, s, strlen(s));
}

static void sb_int(sb *b, int64_t v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    sb_addn(b, t, (size_t)n);
}

static void sb_opt_int(sb *b, bool has, int64_t v) {
    if (has)
        sb_int(b, v);
    else
        sb_add(b, "NULL");
}

/* A quoted SQL literal from text already known to be valid UTF-8. */
static void sb_text(sink_mysql *s, const char *v, size_t n) {
    sb *b = &s->q;
    sb_reserve(b, 2 * n + 2);
    if (b->oom) return;
    b->p[b->len++] = '\'';
    unsigned long w = mysql_real_escape_string(s->conn, b->p + b->len, v, (unsigned long)n);
    if (w == (unsigned long)-1) {
        b->oom = true; /* cannot happen with utf8mb4; refuse rather than send garbage */
        return;
    }
    b->len += w;
    b->p[b->len++] = '\'';
    b->p[b->len] = '\0';
}

/* A quoted literal from a result's fixed-size field (cap = its array size). */
static void sb_str(sink_mysql *s, const char *v, size_t cap) {
    if (cap > PROMO_URL_MAX + 1) cap = PROMO_URL_MAX + 1;
    size_t n = result_json_utf8_repair(v, cap, s->scratch);
    sb_text(s, s->scratch, n);
}

#define SB_STR(s, field) sb_str((s), (field), sizeof(field))
/* NULL for an empty optional string. */
#define SB_OPT_STR(s, field)                                                                                           \
    do {                                                                                                               \
        if ((field)[0])                                                                                                \
            SB_STR(s, field);                                                                                          \
        else                                                                                                           \
            sb_add(&(s)->q, "NULL");                                                                                   \
    } while (0)

/* ---- running statements -------------------------------------------- */

static int mysql_fail(sink_mysql *s, const char *what, char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size, "%s: mysql error %u (%s): %s", what, mysql_errno(s->conn), mysql_sqlstate(s->conn),
             mysql_error(s->conn));
    return -1;
}

/* Sends q (one or several statements) and drains every result, adding the
 * changed-row counts to *rows when rows is not NULL. */
static int run(sink_mysql *s, const char *q, size_t len, long long *rows, char *errstr, size_t errstr_size) {
    if (mysql_real_query(s->conn, q, (unsigned long)len) != 0) {
        if (mysql_errno(s->conn) == ER_EMPTY_QUERY) return 0; /* a file of comments */
        return mysql_fail(s, "query", errstr, errstr_size);
    }
    for (;;) {
        MYSQL_RES *r = mysql_store_result(s->conn);
        if (r) {
            mysql_free_result(r);
        } else if (mysql_field_count(s->conn) != 0) {
            return mysql_fail(s, "reading result", errstr, errstr_size);
        } else if (rows) {
            my_ulonglong n = mysql_affected_rows(s->conn);
            if (n != (my_ulonglong)-1) *rows += (long long)n;
        }
        int st = mysql_next_result(s->conn);
        if (st == -1) return 0;
        if (st > 0) return mysql_fail(s, "statement", errstr, errstr_size);
    }
}

static int run_str(sink_mysql *s, const char *q, char *errstr, size_t errstr_size) {
    return run(s, q, strlen(q), NULL, errstr, errstr_size);
}

/* The first column of the first row of a one-value query, copied into out
 * ("" for SQL NULL or no row). */
static int query_value(sink_mysql *s, const char *q, char *out, size_t out_size, char *errstr, size_t errstr_size) {
    out[0] = '\0';
    if (mysql_real_query(s->conn, q, (unsigned long)strlen(q)) != 0) return mysql_fail(s, q, errstr, errstr_size);
    MYSQL_RES *r = mysql_store_result(s->conn);
    if (!r) return mysql_fail(s, q, errstr, errstr_size);
    MYSQL_ROW row = mysql_fetch_row(r);
    if (row && mysql_num_fields(r) > 0 && row[0]) snprintf(out, out_size, "%s", row[0]);
    mysql_free_result(r);
    return 0;
}

/* A statement made of items: rows of one multi-row INSERT (sep ",") or
 * whole statements sent together (head "", sep ";"). */
typedef struct stmt {
    const char *head;
    const char *sep;
    const char *tail;
    size_t items;
} stmt;

typedef struct wctx {
    sink_mysql *s;
    long long rows;
    char *errstr;
    size_t errstr_size;
} wctx;

static void stmt_item(wctx *w, stmt *st) {
    sb_add(&w->s->q, st->items ? st->sep : st->head);
}

static int stmt_flush(wctx *w, stmt *st) {
    sb *b = &w->s->q;
    int rc = 0;
    if (st->items == 0) goto out;
    sb_add(b, st->tail);
    if (b->oom) {
        snprintf(w->errstr, w->errstr_size, "out of memory building a statement");
        rc = -1;
        goto out;
    }
    rc = run(w->s, b->p, b->len, &w->rows, w->errstr, w->errstr_size);
out:
    b->len = 0;
    b->oom = false;
    st->items = 0;
    return rc;
}

static int stmt_item_done(wctx *w, stmt *st) {
    st->items++;
    return w->s->q.len >= STMT_MAX_BYTES ? stmt_flush(w, st) : 0;
}

/* ---- collapsing a batch -------------------------------------------- */

/* A policy or a sale: its definition from a create in the batch, the
 * highest-version result carrying its counts (issued or sold, and the rest:
 * state, redeemed...), and the highest-version result carrying its
 * definition (a create, a control or a PATCH), for the columns a PATCH may
 * change (guarded by def_version). */
typedef struct counted_row {
    char id[PROMO_ID_MAX + 1];
    const promo_result *create;
    const promo_result *last; /* NULL: the batch has no counts for it */
    const promo_result *def;
    UT_hash_handle hh;
} counted_row;

/* A coupon, account or order: the result that created it (if in the batch)
 * and the highest-version result, which holds its current mutable state. */
typedef struct row_key {
    char a[PROMO_COUPON_ID_MAX + 1];
    char b[PROMO_ID_MAX + 1];
} row_key;

typedef struct entity_row {
    row_key key;
    const promo_result *create;
    const promo_result *last;
    UT_hash_handle hh;
} entity_row;

typedef struct collapsed {
    counted_row *policies;
    counted_row *sales;
    entity_row *coupons;
    entity_row *accounts;
    entity_row *orders;
} collapsed;

static counted_row *counted_get(counted_row **tab, const char *id) {
    counted_row *r;
    HASH_FIND_STR(*tab, id, r);
    if (r) return r;
    r = calloc(1, sizeof *r);
    if (!r) return NULL;
    snprintf(r->id, sizeof r->id, "%s", id);
    HASH_ADD_STR(*tab, id, r);
    return r;
}

static void counted_merge(counted_row *r, const promo_result *res, bool counts, bool def) {
    if (counts && (!r->last || res->version > r->last->version)) r->last = res;
    if (def && (!r->def || res->version > r->def->version)) r->def = res;
}

static entity_row *entity_get(entity_row **tab, const char *a, const char *b) {
    row_key k;
    memset(&k, 0, sizeof k);
    snprintf(k.a, sizeof k.a, "%s", a);
    snprintf(k.b, sizeof k.b, "%s", b);
    entity_row *r;
    HASH_FIND(hh, *tab, &k, sizeof k, r);
    if (r) return r;
    r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->key = k;
    HASH_ADD(hh, *tab, key, sizeof k, r);
    return r;
}

/* Keeps the highest version; the first creating result wins (its fields are
 * immutable, and a replayed copy is identical anyway). */
static void entity_merge(entity_row *r, const promo_result *res, bool creates) {
    if (!r->last || res->version > r->last->version) r->last = res;
    if (creates && !r->create) r->create = res;
}

static void collapsed_free(collapsed *c) {
    counted_row *cr, *ctmp;
    HASH_ITER(hh, c->policies, cr, ctmp) {
        HASH_DEL(c->policies, cr);
        free(cr);
    }
    HASH_ITER(hh, c->sales, cr, ctmp) {
        HASH_DEL(c->sales, cr);
        free(cr);
    }
    entity_row **tabs[] = {&c->coupons, &c->accounts, &c->orders};
    for (size_t i = 0; i < sizeof tabs / sizeof tabs[0]; i++) {
        entity_row *er, *etmp;
        HASH_ITER(hh, *tabs[i], er, etmp) {
            HASH_DEL(*tabs[i], er);
            free(er);
        }
    }
}

bool sink_mysql_status_wanted(const promo_result *res) {
    return strcmp(res->reason, "IDEMPOTENCY_KEY_REUSED") != 0;
}

static int collapse_one(collapsed *c, const promo_result *r) {
    bool ok = r->status == STATUS_SUCCEEDED;
    switch (r->domain) {
    case DOMAIN_COUPON: {
        bool def = ok && r->has_policy;
        if (def || r->has_issued) {
            counted_row *p = counted_get(&c->policies, r->entity_key);
            if (!p) return -1;
            counted_merge(p, r, r->has_issued, def);
            if (def && r->command_type == CMD_CREATE_COUPON_POLICY && !p->create) p->create = r;
        }
        bool coupon_cmd = r->command_type == CMD_ISSUE_COUPON || r->command_type == CMD_REDEEM_COUPON ||
                          r->command_type == CMD_CANCEL_REDEMPTION;
        if (ok && coupon_cmd && r->coupon_id[0]) {
            entity_row *e = entity_get(&c->coupons, r->coupon_id, "");
            if (!e) return -1;
            entity_merge(e, r, r->command_type == CMD_ISSUE_COUPON);
        }
        return 0;
    }
    case DOMAIN_POINT:
        if (r->has_balance) {
            entity_row *e = entity_get(&c->accounts, r->entity_key, "");
            if (!e) return -1;
            entity_merge(e, r, true);
        }
        return 0;
    case DOMAIN_TIMESALE: {
        bool def = ok && r->has_sale;
        if (def || r->has_sold) {
            counted_row *t = counted_get(&c->sales, r->entity_key);
            if (!t) return -1;
            counted_merge(t, r, r->has_sold, def);
            if (def && r->command_type == CMD_CREATE_TIME_SALE && !t->create) t->create = r;
        }
        bool creates = r->command_type == CMD_PLACE_ORDER || r->command_type == CMD_HOLD_ORDER;
        bool order_cmd = creates || r->command_type == CMD_CANCEL_ORDER || r->command_type == CMD_CONFIRM_ORDER ||
                         r->command_type == CMD_EXPIRE_HOLD;
        if (ok && order_cmd) {
            /* A placement without an order id is known by its request id. */
            const char *order_id = r->order_id[0] ? r->order_id : r->request_id;
            entity_row *e = entity_get(&c->orders, r->entity_key, order_id);
            if (!e) return -1;
            entity_merge(e, r, creates);
        }
        return 0;
    }
    }
    return 0;
}

static int sink_connect(sink_mysql *s, char *errstr, size_t errstr_size);

/* ---- the tables ----------------------------------------------------- */

static const char req_insert[] = "INSERT IGNORE INTO requests (request_id, domain, command_type, status, reason, "
                                 "entity_key, submitted_at, processed_at, source_partition, source_offset, "
                                 "callback_url, client_id, result, actor) VALUES ";

static int stmt_fail(MYSQL_STMT *st, const char *what, char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size, "%s: mysql error %u (%s): %s", what, mysql_stmt_errno(st), mysql_stmt_sqlstate(st),
             mysql_stmt_error(st));
    return -1;
}

static void req_close(sink_mysql *s) {
    for (int i = 0; i < N_REQ_SIZES; i++) {
        if (s->req_stmt[i]) mysql_stmt_close(s->req_stmt[i]);
        s->req_stmt[i] = NULL;
    }
}

/* Prepares the INSERT of req_sizes[size] rows on this connection, once. */
static int req_prepare(wctx *w, int size) {
    sink_mysql *s = w->s;
    if (s->req_stmt[size]) return 0;
    if (!s->req_bind && !(s->req_bind = calloc(REQ_COLS * REQ_CHUNK, sizeof *s->req_bind))) {
        snprintf(w->errstr, w->errstr_size, "out of memory for the requests statement");
        return -1;
    }
    sb *b = &s->q;
    b->len = 0;
    sb_add(b, req_insert);
    for (int r = 0; r < req_sizes[size]; r++)
        sb_add(b, r ? ",(?,?,?,?,?,?,?,?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    int rc = -1;
    if (b->oom) {
        snprintf(w->errstr, w->errstr_size, "out of memory building the requests statement");
        goto out;
    }
    MYSQL_STMT *st = mysql_stmt_init(s->conn);
    if (!st) {
        mysql_fail(s, "mysql_stmt_init", w->errstr, w->errstr_size);
        goto out;
    }
    if (mysql_stmt_prepare(st, b->p, (unsigned long)b->len) != 0) {
        stmt_fail(st, "preparing the requests INSERT", w->errstr, w->errstr_size);
        mysql_stmt_close(st);
        goto out;
    }
    s->req_stmt[size] = st;
    rc = 0;
out:
    b->len = 0;
    b->oom = false;
    return rc;
}

/* Appends the UTF-8 repair of a field to the arena; returns its offset. The
 * binds point into the arena only once the chunk is complete, as appending
 * may move it. */
static size_t arena_str(sink_mysql *s, const char *v, size_t cap, unsigned long *len) {
    sb *a = &s->arena;
    if (cap > PROMO_URL_MAX + 1) cap = PROMO_URL_MAX + 1;
    size_t at = a->len;
    sb_reserve(a, 3 * cap + 1);
    *len = 0;
    if (a->oom) return 0;
    size_t n = result_json_utf8_repair(v, cap, a->p + at);
    a->len += n + 1; /* keep the NUL: a->p + at is a C string */
    *len = (unsigned long)n;
    return at;
}

static void bind_text(MYSQL_BIND *bd, const char *v, unsigned long len) {
    bd->buffer_type = MYSQL_TYPE_STRING;
    bd->buffer = (void *)v; /* only read by the client library */
    bd->buffer_length = len;
}

static void bind_int(MYSQL_BIND *bd, enum enum_field_types type, const void *v) {
    bd->buffer_type = type;
    bd->buffer = (void *)v; /* only read by the client library */
}

/* Binds and runs the prepared INSERT of req_sizes[size] results, idx[]
 * their positions in res. String fields are bound from repaired copies in
 * the arena; the JSON is valid UTF-8 already (result_json_dump() repairs it). */
static int req_exec(wctx *w, const promo_result *res, char *const *json, const size_t *idx, int size) {
    sink_mysql *s = w->s;
    if (req_prepare(w, size)) return -1;
    int rows = req_sizes[size];
    MYSQL_STMT *st = s->req_stmt[size];
    enum { ID, REASON, ENTITY, URL, CLIENT, ACTOR, N_STR };
    size_t at[REQ_CHUNK][N_STR];
    unsigned long len[REQ_CHUNK][N_STR];
    s->arena.len = 0;
    for (int r = 0; r < rows; r++) {
        const promo_result *x = &res[idx[r]];
        at[r][ID] = arena_str(s, x->request_id, sizeof x->request_id, &len[r][ID]);
        at[r][REASON] = arena_str(s, x->reason, sizeof x->reason, &len[r][REASON]);
        at[r][ENTITY] = arena_str(s, x->entity_key, sizeof x->entity_key, &len[r][ENTITY]);
        at[r][URL] = arena_str(s, x->callback_url, sizeof x->callback_url, &len[r][URL]);
        at[r][CLIENT] = arena_str(s, x->client_id, sizeof x->client_id, &len[r][CLIENT]);
        at[r][ACTOR] = arena_str(s, x->actor, sizeof x->actor, &len[r][ACTOR]);
    }
    if (s->arena.oom) {
        s->arena.oom = false;
        snprintf(w->errstr, w->errstr_size, "out of memory binding the requests");
        return -1;
    }
    MYSQL_BIND *bd = s->req_bind;
    memset(bd, 0, REQ_COLS * (size_t)rows * sizeof *bd);
    const char *base = s->arena.p;
    for (int r = 0; r < rows; r++, bd += REQ_COLS) {
        const promo_result *x = &res[idx[r]];
        const char *domain = promo_domain_name(x->domain), *type = cmd_type_name(x->command_type);
        const char *status = x->status == STATUS_REJECTED ? "REJECTED" : "SUCCEEDED";
        bind_text(&bd[0], base + at[r][ID], len[r][ID]);
        bind_text(&bd[1], domain, (unsigned long)strlen(domain));
        bind_text(&bd[2], type, (unsigned long)strlen(type));
        bind_text(&bd[3], status, (unsigned long)strlen(status));
        if (len[r][REASON])
            bind_text(&bd[4], base + at[r][REASON], len[r][REASON]);
        else
            bd[4].buffer_type = MYSQL_TYPE_NULL;
        bind_text(&bd[5], base + at[r][ENTITY], len[r][ENTITY]);
        bind_int(&bd[6], MYSQL_TYPE_LONGLONG, &x->submitted_at);
        bind_int(&bd[7], MYSQL_TYPE_LONGLONG, &x->processed_at);
        bind_int(&bd[8], MYSQL_TYPE_LONG, &x->source_partition);
        bind_int(&bd[9], MYSQL_TYPE_LONGLONG, &x->source_offset);
        if (len[r][URL])
            bind_text(&bd[10], base + at[r][URL], len[r][URL]);
        else
            bd[10].buffer_type = MYSQL_TYPE_NULL;
        if (len[r][CLIENT])
            bind_text(&bd[11], base + at[r][CLIENT], len[r][CLIENT]);
        else
            bd[11].buffer_type = MYSQL_TYPE_NULL;
        bind_text(&bd[12], json[idx[r]], (unsigned long)strlen(json[idx[r]]));
        if (len[r][ACTOR])
            bind_text(&bd[13], base + at[r][ACTOR], len[r][ACTOR]);
        else
            bd[13].buffer_type = MYSQL_TYPE_NULL;
    }
    if (mysql_stmt_bind_param(st, s->req_bind) != 0)
        return stmt_fail(st, "binding the requests", w->errstr, w->errstr_size);
    if (mysql_stmt_execute(st) != 0) return stmt_fail(st, "inserting requests", w->errstr, w->errstr_size);
    my_ulonglong changed = mysql_stmt_affected_rows(st);
    if (changed != (my_ulonglong)-1) w->rows += (long long)changed;
    return 0;
}

static int write_requests(wctx *w, const promo_result *res, char *const *json, size_t n) {
    size_t *idx = malloc((n ? n : 1) * sizeof *idx), k = 0;
    if (!idx) {
        snprintf(w->errstr, w->errstr_size, "out of memory listing the requests");
        return -1;
    }
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        if (!sink_mysql_status_wanted(&res[i])) continue;
        if (!json[i]) {
            snprintf(w->errstr, w->errstr_size, "no status text for request %s", res[i].request_id);
            goto out;
        }
        idx[k++] = i;
    }
    /* The largest statements first, then the smaller ones for the rest. */
    size_t done = 0;
    for (int size = 0; size < N_REQ_SIZES; size++)
        for (; k - done >= (size_t)req_sizes[size]; done += (size_t)req_sizes[size])
            if (req_exec(w, res, json, idx + done, size)) goto out;
    rc = 0;
out:
    free(idx);
    return rc;
}

/* The counts a policy's or a sale's result carries, as "col=value" pairs
 * after sep: issued or sold, and the counts and state appended in turn 2
 * when the result has them (a result of an older processor does not). */
static void counts_set(sink_mysql *s, const promo_result *r, bool policy) {
    sb *b = &s->q;
    if (policy) {
        sb_add(b, "issued=");
        sb_int(b, r->issued);
        if (r->has_redeemed) sb_add(b, ",redeemed="), sb_int(b, r->redeemed);
        if (r->has_cancelled_redemptions) sb_add(b, ",cancelled_redemptions="), sb_int(b, r->cancelled_redemptions);
        if (r->has_discount_total) sb_add(b, ",discount_total="), sb_int(b, r->discount_total);
    } else {
        sb_add(b, "sold=");
        sb_int(b, r->sold);
        if (r->has_orders) sb_add(b, ",orders="), sb_int(b, r->orders);
        if (r->has_cancelled_orders) sb_add(b, ",cancelled_orders="), sb_int(b, r->cancelled_orders);
        if (r->has_held) sb_add(b, ",held="), sb_int(b, r->held);
        if (r->has_expired_orders) sb_add(b, ",expired_orders="), sb_int(b, r->expired_orders);
    }
    if (r->state[0]) {
        sb_add(b, ",state=");
        SB_STR(s, r->state);
    }
}

/* Partial counter rows: UPDATE ... WHERE version < new, one round trip. */
static int write_counts(wctx *w, counted_row *tab, const char *table, const char *id_col, bool policy) {
    sb *b = &w->s->q;
    stmt st = {"", ";", "", 0};
    for (counted_row *r = tab; r; r = r->hh.next) {
        if (r->create || !r->last) continue;
        stmt_item(w, &st);
        sb_add(b, "UPDATE ");
        sb_add(b, table);
        sb_add(b, " SET ");
        counts_set(w->s, r->last, policy);
        sb_add(b, ",version=");
        sb_int(b, r->last->version);
        sb_add(b, " WHERE ");
        sb_add(b, id_col);
        sb_add(b, "=");
        SB_STR(w->s, r->id);
        sb_add(b, " AND version<");
        sb_int(b, r->last->version);
        if (stmt_item_done(w, &st)) return -1;
    }
    return stmt_flush(w, &st);
}

/* The columns a PATCH may change, from the newest definition the batch
 * holds when it is newer than the create (if any): UPDATE ... WHERE
 * def_version < new, one round trip. */
static int write_defs(wctx *w, counted_row *tab, bool policy) {
    sink_mysql *s = w->s;
    sb *b = &s->q;
    stmt st = {"", ";", "", 0};
    for (counted_row *r = tab; r; r = r->hh.next) {
        const promo_result *d = r->def;
        if (!d || (r->create && d->version <= r->create->version)) continue;
        stmt_item(w, &st);
        if (policy) {
            const coupon_policy_def *p = &d->policy;
            sb_add(b, "UPDATE coupon_policies SET total_quantity=");
            sb_int(b, p->total_quantity);
            sb_add(b, ",per_user_limit=");
            sb_int(b, p->per_user_limit);
            sb_add(b, ",issue_ends_at=");
            sb_int(b, p->issue_ends_at);
            sb_add(b, ",valid_until=");
            sb_opt_int(b, p->has_valid_until, p->valid_until);
        } else {
            const time_sale_def *t = &d->sale;
            sb_add(b, "UPDATE time_sales SET stock=");
            sb_int(b, t->stock);
            sb_add(b, ",per_user_limit=");
            sb_int(b, t->per_user_limit);
            sb_add(b, ",ends_at=");
            sb_int(b, t->ends_at);
            sb_add(b, ",hold_ms=");
            sb_opt_int(b, d->has_hold_ms, d->hold_ms);
        }
        sb_add(b, ",def_version=");
        sb_int(b, d->version);
        sb_add(b, policy ? " WHERE policy_id=" : " WHERE sale_id=");
        SB_STR(s, r->id);
        sb_add(b, " AND def_version<");
        sb_int(b, d->version);
        if (stmt_item_done(w, &st)) return -1;
    }
    return stmt_flush(w, &st);
}

/* A counted row's counts for an INSERT: from its newest result, else those
 * of a new entity (the create's result may come from an older processor,
 * without the turn-2 counts). */
static const char *row_state(const counted_row *r) {
    return r->last && r->last->state[0] ? r->last->state : "ACTIVE";
}

static int write_policies(wctx *w, counted_row *tab) {
    sink_mysql *s = w->s;
    sb *b = &s->q;
    stmt st = {"INSERT INTO coupon_policies (policy_id, name, discount_type, discount_value, max_discount, "
               "min_order_amount, total_quantity, per_user_limit, issue_starts_at, issue_ends_at, valid_until, "
               "valid_days, issued, redeemed, cancelled_redemptions, discount_total, state, created_at, "
               "def_version, version) VALUES ",
               ",",
               " ON DUPLICATE KEY UPDATE issued=IF(VALUES(version)>version,VALUES(issued),issued),"
               "redeemed=IF(VALUES(version)>version,VALUES(redeemed),redeemed),"
               "cancelled_redemptions=IF(VALUES(version)>version,VALUES(cancelled_redemptions),cancelled_redemptions),"
               "discount_total=IF(VALUES(version)>version,VALUES(discount_total),discount_total),"
               "state=IF(VALUES(version)>version,VALUES(state),state),"
               "version=GREATEST(version,VALUES(version))",
               0};
    for (counted_row *r = tab; r; r = r->hh.next) {
        if (!r->create) continue;
        const coupon_policy_def *p = &r->create->policy;
        const promo_result *l = r->last;
        stmt_item(w, &st);
        sb_add(b, "(");
        SB_STR(s, r->id);
        sb_add(b, ",");
        SB_STR(s, p->name);
        sb_add(b, p->discount_type == DISCOUNT_PERCENT ? ",'PERCENT'," : ",'FIXED',");
        sb_int(b, p->discount_value);
        sb_add(b, ",");
        sb_opt_int(b, p->has_max_discount, p->max_discount);
        sb_add(b, ",");
        sb_int(b, p->min_order_amount);
        sb_add(b, ",");
        sb_int(b, p->total_quantity);
        sb_add(b, ",");
        sb_int(b, p->per_user_limit);
        sb_add(b, ",");
        sb_int(b, p->issue_starts_at);
        sb_add(b, ",");
        sb_int(b, p->issue_ends_at);
        sb_add(b, ",");
        sb_opt_int(b, p->has_valid_until, p->valid_until);
        sb_add(b, ",");
        sb_opt_int(b, p->has_valid_days, p->valid_days);
        sb_add(b, ",");
        sb_int(b, l ? l->issued : 0);
        sb_add(b, ",");
        sb_int(b, l && l->has_redeemed ? l->redeemed : 0);
        sb_add(b, ",");
        sb_int(b, l && l->has_cancelled_redemptions ? l->cancelled_redemptions : 0);
        sb_add(b, ",");
        sb_int(b, l && l->has_discount_total ? l->discount_total : 0);
        sb_add(b, ",");
        sb_text(s, row_state(r), strlen(row_state(r)));
        sb_add(b, ",");
        sb_int(b, r->create->processed_at);
        sb_add(b, ",");
        sb_int(b, r->create->version);
        sb_add(b, ",");
        sb_int(b, l ? l->version : r->create->version);
        sb_add(b, ")");
        if (stmt_item_done(w, &st)) return -1;
    }
    if (stmt_flush(w, &st)) return -1;
    if (write_counts(w, tab, "coupon_policies", "policy_id", true)) return -1;
    return write_defs(w, tab, true);
}

static int write_sales(wctx *w, counted_row *tab) {
    sink_mysql *s = w->s;
    sb *b = &s->q;
    stmt st = {"INSERT INTO time_sales (sale_id, product_id, name, original_price, sale_price, stock, "
               "per_user_limit, starts_at, ends_at, sold, orders, cancelled_orders, held, expired_orders, state, "
               "hold_ms, created_at, def_version, version) VALUES ",
               ",",
               " ON DUPLICATE KEY UPDATE sold=IF(VALUES(version)>version,VALUES(sold),sold),"
               "orders=IF(VALUES(version)>version,VALUES(orders),orders),"
               "cancelled_orders=IF(VALUES(version)>version,VALUES(cancelled_orders),cancelled_orders),"
               "held=IF(VALUES(version)>version,VALUES(held),held),"
               "expired_orders=IF(VALUES(version)>version,VALUES(expired_orders),expired_orders),"
               "state=IF(VALUES(version)>version,VALUES(state),state),"
               "version=GREATEST(version,VALUES(version))",
               0};
    for (counted_row *r = tab; r; r = r->hh.next) {
        if (!r->create) continue;
        const time_sale_def *t = &r->create->sale;
        const promo_result *l = r->last;
        stmt_item(w, &st);
        sb_add(b, "(");
        SB_STR(s, r->id);
        sb_add(b, ",");
        SB_STR(s, t->product_id);
        sb_add(b, ",");
        SB_STR(s, t->name);
        sb_add(b, ",");
        sb_int(b, t->original_price);
        sb_add(b, ",");
        sb_int(b, t->sale_price);
        sb_add(b, ",");
        sb_int(b, t->stock);
        sb_add(b, ",");
        sb_int(b, t->per_user_limit);
        sb_add(b, ",");
        sb_int(b, t->starts_at);
        sb_add(b, ",");
        sb_int(b, t->ends_at);
        sb_add(b, ",");
        sb_int(b, l ? l->sold : 0);
        sb_add(b, ",");
        sb_int(b, l && l->has_orders ? l->orders : 0);
        sb_add(b, ",");
        sb_int(b, l && l->has_cancelled_orders ? l->cancelled_orders : 0);
        sb_add(b, ",");
        sb_int(b, l && l->has_held ? l->held : 0);
        sb_add(b, ",");
        sb_int(b, l && l->has_expired_orders ? l->expired_orders : 0);
        sb_add(b, ",");
        sb_text(s, row_state(r), strlen(row_state(r)));
        sb_add(b, ",");
        sb_opt_int(b, r->create->has_hold_ms, r->create->hold_ms);
        sb_add(b, ",");
        sb_int(b, r->create->processed_at);
        sb_add(b, ",");
        sb_int(b, r->create->version);
        sb_add(b, ",");
        sb_int(b, l ? l->version : r->create->version);
        sb_add(b, ")");
        if (stmt_item_done(w, &st)) return -1;
    }
    if (stmt_flush(w, &st)) return -1;
    if (write_counts(w, tab, "time_sales", "sale_id", false)) return -1;
    return write_defs(w, tab, false);
}

/* A coupon's status after its last result; results should say it, but the
 * command type implies it when they do not. */
static const char *coupon_status(const promo_result *r) {
    if (r->coupon_status[0]) return r->coupon_status;
    return r->command_type == CMD_REDEEM_COUPON ? "REDEEMED" : "ISSUED";
}

/* The mutable columns of a coupon, as "status,order_id,discount" values:
 * order and discount only while redeemed (a cancelled redemption clears them). */
static void coupon_mutable(sink_mysql *s, const promo_result *last) {
    sb *b = &s->q;
    const char *status = coupon_status(last);
    bool redeemed = strcmp(status, "REDEEMED") == 0;
    sb_text(s, status, strnlen(status, sizeof last->coupon_status));
    sb_add(b, ",");
    if (redeemed)
        SB_OPT_STR(s, last->order_id);
    else
        sb_add(b, "NULL");
    sb_add(b, ",");
    sb_opt_int(b, redeemed && last->has_discount, last->discount);
}

static int write_coupons(wctx *w, entity_row *tab) {
    sink_mysql *s = w->s;
    sb *b = &s->q;
    stmt st = {"INSERT INTO coupons (coupon_id, policy_id, user_id, issued_at, expires_at, status, order_id, "
               "discount, version) VALUES ",
               ",",
               " ON DUPLICATE KEY UPDATE status=IF(VALUES(version)>version,VALUES(status),status),"
               "order_id=IF(VALUES(version)>version,VALUES(order_id),order_id),"
               "discount=IF(VALUES(version)>version,VALUES(discount),discount),"
               "version=GREATEST(version,VALUES(version))",
               0};
    for (entity_row *r = tab; r; r = r->hh.next) {
        if (!r->create) continue;
        const promo_result *c = r->create;
        stmt_item(w, &st);
        sb_add(b, "(");
        SB_STR(s, r->key.a);
        sb_add(b, ",");
        if (c->policy_id[0])
            SB_STR(s, c->policy_id);
        else
            SB_STR(s, c->entity_key);
        sb_add(b, ",");
        SB_STR(s, c->user_id);
        sb_add(b, ",");
        sb_int(b, c->has_issued_at ? c->issued_at : c->submitted_at);
        sb_add(b, ",");
        sb_opt_int(b, c->has_expires_at, c->expires_at);
        sb_add(b, ",");
        coupon_mutable(s, r->last);
        sb_add(b, ",");
        sb_int(b, r->last->version);
        sb_add(b, ")");
        if (stmt_item_done(w, &st)) return -1;
    }
    if (stmt_flush(w, &st)) return -1;

    stmt up = {"", ";", "", 0};
    for (entity_row *r = tab; r; r = r->hh.next) {
        if (r->create) continue;
        const promo_result *l = r->last;
        const char *status = coupon_status(l);
        bool redeemed = strcmp(status, "REDEEMED") == 0;
        stmt_item(w, &up);
        sb_add(b, "UPDATE coupons SET status=");
        sb_text(s, status, strnlen(status, sizeof l->coupon_status));
        sb_add(b, ",order_id=");
        if (redeemed)
            SB_OPT_STR(s, l->order_id);
        else
            sb_add(b, "NULL");
        sb_add(b, ",discount=");
        sb_opt_int(b, redeemed && l->has_discount, l->discount);
        sb_add(b, ",version=");
        sb_int(b, l->version);
        sb_add(b, " WHERE coupon_id=");
        SB_STR(s, r->key.a);
        sb_add(b, " AND version<");
        sb_int(b, l->version);
        if (stmt_item_done(w, &up)) return -1;
    }
    return stmt_flush(w, &up);
}

static int write_accounts(wctx *w, entity_row *tab) {
    sink_mysql *s = w->s;
    sb *b = &s->q;
    stmt st = {"INSERT INTO point_accounts (user_id, balance, next_expiry_at, next_expiry_amount, pending, "
               "next_available_at, next_available_amount, version) VALUES ",
               ",",
               " ON DUPLICATE KEY UPDATE balance=IF(VALUES(version)>version,VALUES(balance),balance),"
               "next_expiry_at=IF(VALUES(version)>version,VALUES(next_expiry_at),next_expiry_at),"
               "next_expiry_amount=IF(VALUES(version)>version,VALUES(next_expiry_amount),next_expiry_amount),"
               "pending=IF(VALUES(version)>version,VALUES(pending),pending),"
               "next_available_at=IF(VALUES(version)>version,VALUES(next_available_at),next_available_at),"
               "next_available_amount=IF(VALUES(version)>version,VALUES(next_available_amount),next_available_amount),"
               "version=GREATEST(version,VALUES(version))",
               0};
    for (entity_row *r = tab; r; r = r->hh.next) {
        const promo_result *l = r->last;
        stmt_item(w, &st);
        sb_add(b, "(");
        SB_STR(s, r->key.a);
        sb_add(b, ",");
        sb_int(b, l->balance);
        sb_add(b, ",");
        sb_opt_int(b, l->has_next_expiry, l->next_expiry_at);
        sb_add(b, ",");
        sb_opt_int(b, l->has_next_expiry, l->next_expiry_amount);
        sb_add(b, ",");
        sb_int(b, l->has_pending ? l->pending : 0);
        sb_add(b, ",");
        sb_opt_int(b, l->has_next_available, l->next_available_at);
        sb_add(b, ",");
        sb_opt_int(b, l->has_next_available, l->next_available_amount);
        sb_add(b, ",");
        sb_int(b, l->version);
        sb_add(b, ")");
        if (stmt_item_done(w, &st)) return -1;
    }
    return stmt_flush(w, &st);
}

/* Ledger entries are immutable and keyed by (user, seq): INSERT IGNORE. */
static int write_ledger(wctx *w, const promo_result *res, size_t n) {
    sink_mysql *s = w->s;
    sb *b = &s->q;
    stmt st = {"INSERT IGNORE INTO point_ledger (user_id, seq, kind, delta, balance_after, order_id, reason, "
               "expires_at, at, request_id) VALUES ",
               ",", "", 0};
    for (size_t i = 0; i < n; i++) {
        const promo_result *r = &res[i];
        if (r->domain != DOMAIN_POINT || !sink_mysql_status_wanted(r)) continue;
        int n_ledger = r->n_ledger > PROMO_LEDGER_MAX ? PROMO_LEDGER_MAX : r->n_ledger;
        for (int j = 0; j < n_ledger; j++) {
            const ledger_entry *e = &r->ledger[j];
            const char *kind = ledger_kind_name(e->kind);
            stmt_item(w, &st);
            sb_add(b, "(");
            SB_STR(s, r->entity_key);
            sb_add(b, ",");
            sb_int(b, e->seq);
            sb_add(b, ",");
            sb_text(s, kind, strlen(kind));
            sb_add(b, ",");
            sb_int(b, e->delta);
            sb_add(b, ",");
            sb_int(b, e->balance_after);
            sb_add(b, ",");
            SB_OPT_STR(s, e->order_id);
            sb_add(b, ",");
            SB_OPT_STR(s, e->reason);
            sb_add(b, ",");
            sb_opt_int(b, e->has_expires_at, e->expires_at);
            sb_add(b, ",");
            sb_int(b, e->at);
            sb_add(b, ",");
            SB_STR(s, r->request_id);
            sb_add(b, ")");
            if (stmt_item_done(w, &st)) return -1;
        }
    }
    return stmt_flush(w, &st);
}

static const char *order_status(const promo_result *r) {
    if (r->order_status[0]) return r->order_status;
    return r->command_type == CMD_CANCEL_ORDER ? "CANCELLED" : "PLACED";
}

static int write_orders(wctx *w, entity_row *tab) {
    sink_mysql *s = w->s;
    sb *b = &s->q;
    stmt st = {"INSERT INTO sale_orders (sale_id, order_id, user_id, quantity, status, placed_at, hold_expires_at, "
               "version) VALUES ",
               ",",
               " ON DUPLICATE KEY UPDATE status=IF(VALUES(version)>version,VALUES(status),status),"
               "version=GREATEST(version,VALUES(version))",
               0};
    for (entity_row *r = tab; r; r = r->hh.next) {
        if (!r->create) continue;
        const promo_result *c = r->create;
        const char *status = order_status(r->last);
        stmt_item(w, &st);
        sb_add(b, "(");
        SB_STR(s, r->key.a);
        sb_add(b, ",");
        SB_STR(s, r->key.b);
        sb_add(b, ",");
        SB_STR(s, c->user_id);
        sb_add(b, ",");
        sb_int(b, c->has_quantity ? c->quantity : 0);
        sb_add(b, ",");
        sb_text(s, status, strnlen(status, sizeof c->order_status));
        sb_add(b, ",");
        sb_int(b, c->submitted_at); /* the order's "now", as a coupon's issued_at */
        sb_add(b, ",");
        sb_opt_int(b, c->has_hold_expires_at, c->hold_expires_at);
        sb_add(b, ",");
        sb_int(b, r->last->version);
        sb_add(b, ")");
        if (stmt_item_done(w, &st)) return -1;
    }
    if (stmt_flush(w, &st)) return -1;

    stmt up = {"", ";", "", 0};
    for (entity_row *r = tab; r; r = r->hh.next) {
        if (r->create) continue;
        const char *status = order_status(r->last);
        stmt_item(w, &up);
        sb_add(b, "UPDATE sale_orders SET status=");
        sb_text(s, status, strnlen(status, sizeof r->last->order_status));
        sb_add(b, ",version=");
        sb_int(b, r->last->version);
        sb_add(b, " WHERE sale_id=");
        SB_STR(s, r->key.a);
        sb_add(b, " AND order_id=");
        SB_STR(s, r->key.b);
        sb_add(b, " AND version<");
        sb_int(b, r->last->version);
        if (stmt_item_done(w, &up)) return -1;
    }
    return stmt_flush(w, &up);
}

int sink_mysql_write(sink_mysql *s, const promo_result *res, char *const *json, size_t n, long long *rows, char *errstr,
                     size_t errstr_size) {
    wctx w = {s, 0, errstr, errstr_size};
    collapsed c = {0};
    int rc = -1;
    *rows = 0;
    s->q.len = 0;
    s->q.oom = false;
    if (!s->conn && sink_connect(s, errstr, errstr_size)) return -1; /* a reconnect failed before */
    for (size_t i = 0; i < n; i++) {
        if (!sink_mysql_status_wanted(&res[i])) continue; /* it changed nothing */
        if (collapse_one(&c, &res[i]) != 0) {
            snprintf(errstr, errstr_size, "out of memory collapsing the batch");
            goto out;
        }
    }
    if (run_str(s, "START TRANSACTION", errstr, errstr_size)) goto out;
    /* Tables in one fixed order in every sink, so two sinks' transactions
     * (during a rebalance) take row locks in the same order. */
    if (write_requests(&w, res, json, n) || write_policies(&w, c.policies) || write_coupons(&w, c.coupons) ||
        write_accounts(&w, c.accounts) || write_ledger(&w, res, n) || write_sales(&w, c.sales) ||
        write_orders(&w, c.orders))
        goto rollback;
    if (run_str(s, "COMMIT", errstr, errstr_size)) goto rollback;
    *rows = w.rows;
    rc = 0;
    goto out;
rollback:
    /* Best effort: on a dead connection the server rolls back by itself. */
    mysql_rollback(s->conn);
out:
    collapsed_free(&c);
    return rc;
}

/* ---- connection ----------------------------------------------------- */

static int sink_connect(sink_mysql *s, char *errstr, size_t errstr_size) {
    MYSQL *c = mysql_init(NULL);
    if (!c) {
        snprintf(errstr, errstr_size, "mysql_init: out of memory");
        return -1;
    }
    unsigned int connect_timeout = 5, io_timeout = 60;
    mysql_options(c, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(c, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(c, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(c, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    /* Multi-statements: migration files, and a table's UPDATEs in one trip. */
    if (!mysql_real_connect(c, s->host, s->user, s->password, s->db, (unsigned int)s->port, NULL,
                            CLIENT_MULTI_STATEMENTS)) {
        snprintf(errstr, errstr_size, "connecting to mysql %s:%d as %s: %s", s->host, s->port, s->user, mysql_error(c));
        mysql_close(c);
        return -1;
    }
    s->conn = c;
    /* Fewer gap locks than REPEATABLE READ; the sink reads nothing back. */
    if (run_str(s, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", errstr, errstr_size)) {
        mysql_close(c);
        s->conn = NULL;
        return -1;
    }
    return 0;
}

sink_mysql *sink_mysql_new(const sink_mysql_cfg *cfg, char *errstr, size_t errstr_size) {
    sink_mysql *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->host = strdup(cfg->host);
    s->user = strdup(cfg->user);
    s->password = strdup(cfg->password);
    s->db = strdup(cfg->db);
    s->port = cfg->port;
    if (!s->host || !s->user || !s->password || !s->db) {
        snprintf(errstr, errstr_size, "out of memory");
        sink_mysql_destroy(s);
        return NULL;
    }
    if (sink_connect(s, errstr, errstr_size)) {
        sink_mysql_destroy(s);
        return NULL;
    }
    return s;
}

void sink_mysql_destroy(sink_mysql *s) {
    if (!s) return;
    req_close(s);
    if (s->conn) mysql_close(s->conn);
    free(s->host);
    free(s->user);
    free(s->password);
    free(s->db);
    free(s->q.p);
    free(s->arena.p);
    free(s->req_bind);
    free(s);
}

int sink_mysql_reconnect(sink_mysql *s, char *errstr, size_t errstr_size) {
    /* A prepared statement lives on its connection: prepared again on the new one. */
    req_close(s);
    if (s->conn) mysql_close(s->conn);
    s->conn = NULL;
    return sink_connect(s, errstr, errstr_size);
}

/* ---- migrations ----------------------------------------------------- */

static int is_migration(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 4 && strcmp(d->d_name + n - 4, ".sql") == 0;
}

static int read_file(const char *path, sb *out, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errstr, errstr_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char buf[8192];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) sb_addn(out, buf, got);
    int bad = ferror(f);
    fclose(f);
    if (bad || out->oom) {
        snprintf(errstr, errstr_size, "cannot read %s", path);
        return -1;
    }
    return 0;
}

/* Applies one file unless recorded; a file's statements must be safe to run
 * again (CREATE TABLE IF NOT EXISTS...), because DDL commits as it goes and
 * a crash between the file and its record replays it. */
static int migrate_file(sink_mysql *s, const char *dir, const char *name, char *errstr, size_t errstr_size) {
    char version[256], q[1024], found[8], path[4096];
    snprintf(version, sizeof version, "%.*s", (int)(strlen(name) - 4), name);
    char esc[sizeof version * 2 + 1];
    mysql_real_escape_string(s->conn, esc, version, (unsigned long)strlen(version));
    snprintf(q, sizeof q, "SELECT COUNT(*) FROM schema_migrations WHERE version='%s'", esc);
    if (query_value(s, q, found, sizeof found, errstr, errstr_size)) return -1;
    if (strcmp(found, "0") != 0) return 0;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    sb text = {0};
    int rc = read_file(path, &text, errstr, errstr_size);
    if (rc == 0 && text.len > 0) rc = run(s, text.p, text.len, NULL, errstr, errstr_size);
    free(text.p);
    if (rc) {
        size_t used = strlen(errstr);
        snprintf(errstr + used, errstr_size - used, " (in %s)", path);
        return -1;
    }
    snprintf(q, sizeof q, "INSERT INTO schema_migrations (version, applied_at) VALUES ('%s', %" PRId64 ")", esc,
             now_ms());
    if (run_str(s, q, errstr, errstr_size)) return -1;
    log_info("migration %s applied", version);
    return 0;
}

int sink_mysql_migrate(sink_mysql *s, const char *dir, char *errstr, size_t errstr_size) {
    if (!s->conn && sink_connect(s, errstr, errstr_size)) return -1;
    struct dirent **names = NULL;
    int count = scandir(dir, &names, is_migration, alphasort);
    if (count < 0) {
        snprintf(errstr, errstr_size, "cannot read migrations from %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = -1;
    char got[8], q[128];
    /* A named lock, not a table lock: it works before any table exists and
     * dies with the connection if this process does. */
    snprintf(q, sizeof q, "SELECT GET_LOCK('%s', %d)", MIGRATION_LOCK, MIGRATION_LOCK_WAIT_S);
    if (query_value(s, q, got, sizeof got, errstr, errstr_size)) goto out;
    if (strcmp(got, "1") != 0) {
        snprintf(errstr, errstr_size, "another sink held the migration lock for %d s", MIGRATION_LOCK_WAIT_S);
        goto out;
    }
    if (run_str(s,
                "CREATE TABLE IF NOT EXISTS schema_migrations (version VARCHAR(190) NOT NULL PRIMARY KEY, "
                "applied_at BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
                errstr, errstr_size))
        goto unlock;
    for (int i = 0; i < count; i++)
        if (migrate_file(s, dir, names[i]->d_name, errstr, errstr_size)) goto unlock;
    rc = 0;
unlock:;
    char ignored[8], err2[256];
    snprintf(q, sizeof q, "SELECT RELEASE_LOCK('%s')", MIGRATION_LOCK);
    query_value(s, q, ignored, sizeof ignored, err2, sizeof err2);
out:
    for (int i = 0; i < count; i++) free(names[i]);
    free(names);
    return rc;
}
