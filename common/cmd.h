/* cmd.h — the in-memory form of commands and results.
 *
 * Every program speaks in these structs: ingest builds a promo_cmd from JSON,
 * the codec (codec.h) turns it into Avro bytes and back, a domain state
 * machine turns a promo_cmd into a promo_result, and the sinks write results
 * out. Strings are fixed-size, NUL-terminated arrays so that a command owns no
 * heap memory and can be copied with '='; an empty string means Avro null for
 * optional string fields. Sizes are the contract's limits: a decoded string
 * that does not fit is rejected (dead letter), never truncated.
 */
#ifndef PROMO_CMD_H
#define PROMO_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROMO_ID_MAX 64        /* [A-Za-z0-9_.-]{1,64} */
#define PROMO_COUPON_ID_MAX 86 /* <policy_id>:<serial up to 20 digits> */
#define PROMO_TEXT_MAX 200     /* names, reasons */
#define PROMO_URL_MAX 2048
#define PROMO_CODE_MAX 40 /* rejection codes */

typedef enum { DOMAIN_COUPON = 0, DOMAIN_POINT = 1, DOMAIN_TIMESALE = 2 } promo_domain;

/* Order inside each domain matches the branch order of the Avro union; the
 * domains follow each other (coupon, point, timesale), so a branch added at
 * the end of a union is added at the end of its domain's run here. The
 * numbers are in-memory only: the wire names a command by its union branch
 * and a result by its record name. */
typedef enum {
    CMD_CREATE_COUPON_POLICY = 0,
    CMD_ISSUE_COUPON,
    CMD_REDEEM_COUPON,
    CMD_CANCEL_REDEMPTION,
    CMD_PAUSE_COUPON_POLICY,
    CMD_RESUME_COUPON_POLICY,
    CMD_CLOSE_COUPON_POLICY,
    CMD_UPDATE_COUPON_POLICY,
    CMD_EARN_POINTS,
    CMD_USE_POINTS,
    CMD_CANCEL_POINT_USE,
    CMD_EARN_PENDING_POINTS,
    CMD_ADJUST_POINTS,
    CMD_RELEASE_POINTS,
    CMD_CREATE_TIME_SALE,
    CMD_PLACE_ORDER,
    CMD_CANCEL_ORDER,
    CMD_PAUSE_TIME_SALE,
    CMD_RESUME_TIME_SALE,
    CMD_CLOSE_TIME_SALE,
    CMD_UPDATE_TIME_SALE,
    CMD_HOLD_ORDER,
    CMD_CONFIRM_ORDER,
    CMD_EXPIRE_HOLD,
    CMD__COUNT
} cmd_type;

/* The first command type of each domain. */
#define CMD_FIRST_COUPON CMD_CREATE_COUPON_POLICY
#define CMD_FIRST_POINT CMD_EARN_POINTS
#define CMD_FIRST_TIMESALE CMD_CREATE_TIME_SALE

/* A policy's or a sale's campaign state (DESIGN.md §4a). CLOSED is final. */
typedef enum { CAMPAIGN_ACTIVE = 0, CAMPAIGN_PAUSED = 1, CAMPAIGN_CLOSED = 2 } campaign_state;

typedef enum { DISCOUNT_FIXED = 0, DISCOUNT_PERCENT = 1 } discount_type;
typedef enum { STATUS_SUCCEEDED = 0, STATUS_REJECTED = 1 } result_status;
typedef enum { LEDGER_EARN = 0, LEDGER_USE, LEDGER_CANCEL_USE, LEDGER_EXPIRE, LEDGER_ADJUST } ledger_kind;

typedef struct coupon_policy_def {
    char policy_id[PROMO_ID_MAX + 1];
    char name[PROMO_TEXT_MAX + 1];
    discount_type discount_type;
    int64_t discount_value; /* won, or percent 1..100 */
    bool has_max_discount;
    int64_t max_discount;
    int64_t min_order_amount;
    int64_t total_quantity;
    int32_t per_user_limit;
    int64_t issue_starts_at;
    int64_t issue_ends_at;
    bool has_valid_until;
    int64_t valid_until;
    bool has_valid_days;
    int32_t valid_days;
} coupon_policy_def;

typedef struct time_sale_def {
    char sale_id[PROMO_ID_MAX + 1];
    char product_id[PROMO_ID_MAX + 1];
    char name[PROMO_TEXT_MAX + 1];
    int64_t original_price;
    int64_t sale_price;
    int64_t stock;
    int32_t per_user_limit;
    int64_t starts_at;
    int64_t ends_at;
} time_sale_def;

/* PATCH of a policy or a sale: a field is changed only when its has_ flag is
 * set. actor names the API key that sent it ("" = null). */
typedef struct coupon_policy_update {
    char policy_id[PROMO_ID_MAX + 1];
    bool has_total_quantity;
    int64_t total_quantity;
    bool has_per_user_limit;
    int32_t per_user_limit;
    bool has_issue_ends_at;
    int64_t issue_ends_at;
    bool has_valid_until;
    int64_t valid_until;
    char actor[PROMO_ID_MAX + 1];
} coupon_policy_update;

typedef struct time_sale_update {
    char sale_id[PROMO_ID_MAX + 1];
    bool has_stock;
    int64_t stock;
    bool has_per_user_limit;
    int32_t per_user_limit;
    bool has_ends_at;
    int64_t ends_at;
    bool has_hold_ms;
    int64_t hold_ms; /* 0 removes the sale's default hold */
    char actor[PROMO_ID_MAX + 1];
} time_sale_update;

typedef struct promo_cmd {
    char request_id[PROMO_ID_MAX + 1];
    int64_t submitted_at;
    char callback_url[PROMO_URL_MAX + 1]; /* "" = null */
    char client_id[PROMO_ID_MAX + 1];     /* "" = null */
    cmd_type type;
    union {
        coupon_policy_def create_policy;
        struct {
            char policy_id[PROMO_ID_MAX + 1];
            char user_id[PROMO_ID_MAX + 1];
        } issue;
        struct {
            char coupon_id[PROMO_COUPON_ID_MAX + 1];
            char user_id[PROMO_ID_MAX + 1];
            char order_id[PROMO_ID_MAX + 1];
            int64_t order_amount;
        } redeem;
        struct {
            char coupon_id[PROMO_COUPON_ID_MAX + 1];
            char order_id[PROMO_ID_MAX + 1];
        } cancel_redemption;
        struct {
            char user_id[PROMO_ID_MAX + 1];
            int64_t amount;
            char reason[PROMO_TEXT_MAX + 1];
            bool has_expires_at;
            int64_t expires_at;
        } earn;
        struct {
            char user_id[PROMO_ID_MAX + 1];
            int64_t amount;
            char order_id[PROMO_ID_MAX + 1];
        } use;
        struct {
            char user_id[PROMO_ID_MAX + 1];
            char order_id[PROMO_ID_MAX + 1];
        } cancel_use;
        struct {
            char user_id[PROMO_ID_MAX + 1];
            int64_t amount;
            char reason[PROMO_TEXT_MAX + 1];
            bool has_expires_at;
            int64_t expires_at;
            int64_t available_at;
        } earn_pending;
        struct {
            char user_id[PROMO_ID_MAX + 1];
            int64_t amount; /* signed, not zero */
            char reason[PROMO_TEXT_MAX + 1];
            char actor[PROMO_ID_MAX + 1];
        } adjust;
        struct {
            char user_id[PROMO_ID_MAX + 1];
        } release;
        time_sale_def create_sale;
        struct {
            char sale_id[PROMO_ID_MAX + 1];
            char user_id[PROMO_ID_MAX + 1];
            int32_t quantity;
            char order_id[PROMO_ID_MAX + 1]; /* "" = null: the request id is used */
        } place_order;
        struct {
            char sale_id[PROMO_ID_MAX + 1];
            char order_id[PROMO_ID_MAX + 1];
        } cancel_order;
        /* Pause, Resume and Close of a policy: the same record shape. actor
         * names the API key that sent it ("" = null; see README, audit). */
        struct {
            char policy_id[PROMO_ID_MAX + 1];
            char actor[PROMO_ID_MAX + 1];
        } policy_control;
        coupon_policy_update update_policy;
        struct {
            char sale_id[PROMO_ID_MAX + 1];
            char user_id[PROMO_ID_MAX + 1];
            int32_t quantity;
            char order_id[PROMO_ID_MAX + 1]; /* "" = null: the request id is used */
            int64_t hold_ms;
        } hold_order;
        /* ConfirmOrder and ExpireHold: the same record shape. */
        struct {
            char sale_id[PROMO_ID_MAX + 1];
            char order_id[PROMO_ID_MAX + 1];
        } order_ref;
        struct {
            char sale_id[PROMO_ID_MAX + 1];
            char actor[PROMO_ID_MAX + 1];
        } sale_control;
        time_sale_update update_sale;
    } u;
} promo_cmd;

typedef struct ledger_entry {
    int64_t seq; /* per user, from 1 */
    ledger_kind kind;
    int64_t delta;
    int64_t balance_after;
    char order_id[PROMO_ID_MAX + 1]; /* "" = null */
    char reason[PROMO_TEXT_MAX + 1]; /* "" = null */
    bool has_expires_at;
    int64_t expires_at;
    int64_t at;
} ledger_entry;

/* At most three ledger entries per command: pending points that became
 * available by command time (one EARN entry), the expiry of lots due at
 * command time (summed into one entry) and the command's own change. */
#define PROMO_LEDGER_MAX 3

/* Optional numeric outcome fields have a has_ flag; optional strings are "". */
typedef struct promo_result {
    char request_id[PROMO_ID_MAX + 1];
    promo_domain domain;
    cmd_type command_type;
    result_status status;
    char reason[PROMO_CODE_MAX + 1]; /* "" when SUCCEEDED */
    char entity_key[PROMO_ID_MAX + 1];
    int64_t submitted_at;
    int64_t processed_at;
    char callback_url[PROMO_URL_MAX + 1];
    char client_id[PROMO_ID_MAX + 1];
    int32_t source_partition;
    int64_t source_offset;
    int64_t version;

    char user_id[PROMO_ID_MAX + 1];
    char policy_id[PROMO_ID_MAX + 1];
    char coupon_id[PROMO_COUPON_ID_MAX + 1];
    char coupon_status[16]; /* ISSUED | REDEEMED */
    bool has_issued_at;
    int64_t issued_at;
    bool has_expires_at;
    int64_t expires_at;
    bool has_discount;
    int64_t discount;
    char order_id[PROMO_ID_MAX + 1];
    bool has_order_amount;
    int64_t order_amount;
    char order_status[16]; /* PLACED | CANCELLED | HELD | EXPIRED */
    bool has_quantity;
    int32_t quantity;
    bool has_issued;
    int64_t issued;
    bool has_sold;
    int64_t sold;
    bool has_remaining;
    int64_t remaining;
    bool has_amount;
    int64_t amount;
    bool has_balance;
    int64_t balance;
    bool has_next_expiry;
    int64_t next_expiry_at;
    int64_t next_expiry_amount;
    bool has_policy;
    coupon_policy_def policy;
    bool has_sale;
    time_sale_def sale;
    int n_ledger;
    ledger_entry ledger[PROMO_LEDGER_MAX];

    /* Appended to the Result record after ledger (turn 2): a reader of an
     * older Result finds them all null. */
    char state[12];               /* ACTIVE | PAUSED | CLOSED, of the policy or sale */
    char actor[PROMO_ID_MAX + 1]; /* the API key label that sent a control */
    bool has_redeemed;
    int64_t redeemed; /* a policy's coupons redeemed now */
    bool has_cancelled_redemptions;
    int64_t cancelled_redemptions;
    bool has_discount_total;
    int64_t discount_total; /* the discounts of the coupons redeemed now */
    bool has_orders;
    int64_t orders; /* a sale's orders accepted, ever */
    bool has_cancelled_orders;
    int64_t cancelled_orders;
    bool has_hold_ms;
    int64_t hold_ms; /* a sale's default hold, with its definition */
    bool has_held;
    int64_t held; /* a sale's units in HELD orders */
    bool has_expired_orders;
    int64_t expired_orders;
    bool has_hold_expires_at;
    int64_t hold_expires_at; /* a HELD order's deadline */
    bool has_pending;
    int64_t pending; /* a user's points not available yet */
    bool has_next_available;
    int64_t next_available_at;
    int64_t next_available_amount;
} promo_result;

/* Names as on the wire: "IssueCoupon", "COUPON", "EARN"... Static strings. */
const char *cmd_type_name(cmd_type t);
const char *campaign_state_name(campaign_state s); /* "ACTIVE"... */
const char *promo_domain_name(promo_domain d);
const char *ledger_kind_name(ledger_kind k);
/* Name back to enum; returns -1 for an unknown name. */
int cmd_type_from_name(const char *name);

/* The domain a command belongs to, and the Kafka key it must carry (the entity
 * key: policy_id, user_id or sale_id; for a coupon id, its policy part, written
 * into key of size PROMO_ID_MAX + 1). Returns 0, or -1 if no key can be made. */
promo_domain cmd_domain(cmd_type t);
int cmd_entity_key(const promo_cmd *cmd, char *key, size_t key_size);

/* True when s matches [A-Za-z0-9_.-]{1,64}. */
bool promo_id_valid(const char *s);
/* Splits "<policy_id>:<serial>" (serial >= 1). Returns 0 or -1 if malformed. */
int coupon_id_parse(const char *coupon_id, char *policy_id, size_t policy_id_size, int64_t *serial);

/* The discount a policy gives an order of amount, never above the amount:
 * the fixed value, or floor(amount * percent / 100) capped at max_discount.
 * The redeem decides with it (coupon.c), and so does the advisory validation
 * (ingest, POST /v1/coupons/{coupon_id}/validate). */
int64_t coupon_policy_discount(const coupon_policy_def *d, int64_t amount);

/* A sale's default hold and an order's hold, in ms (DESIGN.md §4a). */
#define PROMO_HOLD_MS_MIN 1000
#define PROMO_HOLD_MS_MAX 3600000

/* The request id of the ExpireHold of an order: "hold-exp-" and 32 hex
 * digits of a 128-bit hash of sale and order id, so that the commands the
 * processors produce for one hold are repeats of one request (the dedupe
 * answers the first result again). out holds PROMO_ID_MAX + 1 bytes. */
void cmd_expire_hold_id(const char *sale_id, const char *order_id, char *out);
/* The request id of the ReleasePoints of a user's points available at
 * available_at: "points-rel-" and 32 hex digits, as cmd_expire_hold_id(). */
void cmd_release_points_id(const char *user_id, int64_t available_at, char *out);

/* Checks every field of a command against the contract's rules (ids, ranges,
 * windows). Returns 0, or -1 with the offending field name (as on the wire,
 * e.g. "discount_value") in field and a sentence in why. Ingest answers 400
 * with these; processors send the message to the dead-letter topic. */
int cmd_validate(const promo_cmd *cmd, char *field, size_t field_size, char *why, size_t why_size);

/* A 64-bit fingerprint of what the command asks for: its type and command
 * fields, not request_id, submitted_at, callback_url or client_id. Two
 * submissions under one request id with different fingerprints are
 * IDEMPOTENCY_KEY_REUSED. */
uint64_t cmd_fingerprint(const promo_cmd *cmd);

/* Resets a result and fills the fields every result carries from the command. */
void result_init(promo_result *res, const promo_cmd *cmd);
/* Marks res REJECTED with code (a static string such as "SOLD_OUT"). */
void result_reject(promo_result *res, const char *code);

#endif
