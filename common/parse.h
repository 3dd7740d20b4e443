/* parse.h — everything ingest decides about a request before any I/O.
 *
 * The HTTP layer (http.c) hands this module strings it read off the wire —
 * method, path, headers, body, query values — and gets back either a route, a
 * complete promo_cmd that has passed cmd_validate(), or a parse_error that says
 * which HTTP status to answer, which error code, which field and why; promoctl
 * submits commands through the same rules (hence common/). Nothing
 * here touches a socket, a clock or a random source (the caller passes "now"
 * and a fresh request id in), so tests/unit/test_parse.c drives every rule
 * directly.
 *
 * Order of checks for a write: body size (413), Content-Type (415), JSON
 * syntax and shape (400 INVALID_JSON), unknown fields, then each field's
 * presence and type in the order the contract lists them, then the headers
 * that become envelope fields, then cmd_validate()'s field rules. The first
 * failure wins, so one request gets one precise error.
 */
#ifndef PROMO_INGEST_PARSE_H
#define PROMO_INGEST_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

#define PARSE_BODY_MAX (64 * 1024) /* bytes; a larger body is 413 */
#define PARSE_LIMIT_DEFAULT 50
#define PARSE_LIMIT_MAX 100
#define PARSE_WAIT_MAX_MS 30000

typedef enum {
    ROUTE_NONE = 0, /* no such path */
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_OPENAPI,
    ROUTE_DOCS,
    ROUTE_DOCS_ASSET, /* /api/docs/{asset}: Swagger UI's files */
    /* writes: each makes a command (parse_route_cmd()) */
    ROUTE_POLICY_CREATE,
    ROUTE_COUPON_ISSUE,
    ROUTE_COUPON_REDEEM,
    ROUTE_COUPON_CANCEL,
    ROUTE_POINTS_EARN,
    ROUTE_POINTS_USE,
    ROUTE_POINTS_CANCEL,
    ROUTE_SALE_CREATE,
    ROUTE_SALE_ORDER,
    ROUTE_SALE_ORDER_CANCEL,
    ROUTE_POLICY_PAUSE,
    ROUTE_POLICY_RESUME,
    ROUTE_POLICY_CLOSE,
    ROUTE_POLICY_UPDATE,
    ROUTE_SALE_PAUSE,
    ROUTE_SALE_RESUME,
    ROUTE_SALE_CLOSE,
    ROUTE_SALE_UPDATE,
    ROUTE_SALE_ORDER_CONFIRM,
    ROUTE_POINTS_ADJUST,
    /* reads */
    ROUTE_POLICY_GET,
    ROUTE_USER_COUPONS,
    ROUTE_POINTS_GET,
    ROUTE_POINTS_HISTORY,
    ROUTE_SALE_GET,
    ROUTE_SALE_ORDER_GET,
    ROUTE_REQUEST_GET,
    ROUTE_COUPON_VALIDATE, /* a POST that sends nothing: answered from the read models */
    ROUTE_POLICY_LIST,
    ROUTE_SALE_LIST,
    ROUTE_POLICY_STATS,
    ROUTE_SALE_STATS,
    ROUTE__COUNT
} parse_route_id;

typedef enum { ROLE_NONE = 0, ROLE_CLIENT, ROLE_ADMIN } parse_role;

/* A matched route and its path ids, already checked against the id syntax. */
typedef struct parse_route {
    parse_route_id id;
    char id1[PROMO_COUPON_ID_MAX + 1]; /* policy, coupon, user, sale or request id */
    char id2[PROMO_ID_MAX + 1];        /* order id of the order routes */
} parse_route;

/* What to answer instead of going on. code is a static string. */
typedef struct parse_error {
    int status;       /* 400, 404, 405, 413, 415 */
    const char *code; /* "INVALID_FIELD", "MISSING_FIELD"... */
    char field[80];   /* "" when the error is not about one field */
    char message[240];
} parse_error;

/* Static facts about routes. The name is the Prometheus label. */
const char *parse_route_name(parse_route_id r);
bool parse_route_is_write(parse_route_id r);
/* Only for writes. An order with hold_ms is a HoldOrder, an earn with
 * available_at an EarnPendingPoints. */
cmd_type parse_route_cmd(parse_route_id r);
parse_role parse_route_role(parse_route_id r); /* ROLE_NONE: no key needed */

/* The route table, for checking it against /openapi.json: entry i's
 * method ("GET"/"POST"/"PATCH") and path pattern ("/v1/points/{user_id}"), static
 * strings; i from 0 to parse_route_count() - 1. */
size_t parse_route_count(void);
void parse_route_at(size_t i, const char **method, const char **pattern);

/* Matches method and path (no query string). The path is taken exactly as
 * the client sent it: neither percent-decoded nor with dot segments removed,
 * so an id is checked as it was written ("p%2F..%2Fx" is no id, and
 * "p/../x" is no path). Returns 0 with out filled; or -1 with err: 404
 * NOT_FOUND for an unknown path, 405 METHOD_NOT_ALLOWED for a known path with
 * another method, 400 INVALID_FIELD for a malformed path id, percent-encoded
 * or "." or ".." included (field = the id's name, e.g. "policy_id"). */
int parse_route_match(const char *method, const char *path, parse_route *out, parse_error *err);

/* Everything a write request brings. Pointers are borrowed; NULL = absent. */
typedef struct parse_input {
    const parse_route *route;
    const char *content_type;
    const char *body; /* need not be NUL-terminated */
    size_t body_len;
    const char *idempotency_key;  /* becomes the request id when present */
    const char *client_id;        /* X-Client-Id */
    const char *actor;            /* the API key's label, for the commands that record it (controls) */
    const char *fresh_request_id; /* used when there is no Idempotency-Key */
    int64_t now_ms;               /* submitted_at */
    const char *webhook_allow;    /* comma-separated callback hosts */
} parse_input;

/* Builds and validates the command of a write route. Returns 0 with cmd
 * filled and passing cmd_validate(), or -1 with err filled. An empty body is
 * read as {} (cancel order has no fields) and then needs no Content-Type. */
int parse_cmd(const parse_input *in, promo_cmd *cmd, parse_error *err);

/* The body of POST /v1/coupons/{coupon_id}/validate, {user_id,
 * order_amount}, checked as a write's body is (size 413, Content-Type 415,
 * JSON, unknown fields, each field 400); order_amount as a redeem's. Returns
 * 0 with user_id (PROMO_ID_MAX + 1 bytes) and *order_amount filled, or -1
 * with err. */
int parse_validate(const char *content_type, const char *body, size_t body_len, char *user_id, int64_t *order_amount,
                   parse_error *err);

/* True for "application/json", any case, with optional parameters. */
bool parse_content_type_json(const char *content_type);

/* Checks a callback URL: http or https, no user info, a host on the
 * comma-separated allow list (case-insensitive), optional port, printable
 * ASCII only, at most PROMO_URL_MAX bytes. Returns 0 or -1 with why filled. */
int parse_callback_url(const char *url, const char *allow, char *why, size_t why_size);

/* Query values. s NULL means absent. Each returns 0 or -1 with err filled
 * (400 INVALID_FIELD, field = the parameter's name). */
int parse_limit(const char *s, int *limit, parse_error *err);     /* default 50, above 100 means 100 */
int parse_wait_ms(const char *s, int *wait_ms, parse_error *err); /* default 0, above 30000 means 30000 */
int parse_coupon_cursor(const char *s, char *out, size_t out_size, parse_error *err); /* a coupon id; "" if absent */
int parse_seq_cursor(const char *s, int64_t *seq, parse_error *err); /* a positive integer; 0 if absent */
/* An id cursor (a policy or sale id); "" if absent. out holds PROMO_ID_MAX + 1 bytes. */
int parse_id_cursor(const char *s, char *out, parse_error *err);
/* ?state=: ACTIVE, PAUSED or CLOSED (exactly); "" if absent. out holds 8 bytes. */
int parse_state(const char *s, char *out, parse_error *err);

#endif
