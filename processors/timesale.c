/* timesale.c — the time-sale (stock) state machine of one promo.timesale.cmd
 * partition.
 *
 * Pure: commands in, results out, no I/O and no clock ("now" is the command's
 * submitted_at, passed in by the runtime). A sale holds its definition, the
 * units sold, a version, its orders by order id (user, quantity, PLACED or
 * CANCELLED) and, per user, the quantity in PLACED orders, which enforces the
 * per-user limit. That per-user map is derived from the orders and never
 * checkpointed.
 *
 * Invariants after every command: 0 <= sold <= stock; sold == the sum of the
 * quantities of PLACED orders; no user holds more than per_user_limit units
 * in PLACED orders. There are no partial fills: an order gets all it asks for
 * or is rejected.
 *
 * Each apply() decides first, allocates next and mutates last, so an out of
 * memory return leaves the state as it was. uthash is built with non-fatal
 * out-of-memory handling (an add that cannot allocate leaves the item out and
 * its hh.tbl NULL) so that no allocation failure can end the process.
 *
 * Campaign controls (DESIGN.md §4a): a sale is ACTIVE, PAUSED or CLOSED
 * (orders are refused while it is not ACTIVE; cancels go on), and a PATCH
 * may change its stock (never below what is sold), per_user_limit, ends_at
 * and default hold_ms. The counts of orders and of cancelled ones are
 * derived from the orders, never stored.
 *
 * Checkpoint entries: "s:<sale_id>" (version 2: definition, sold, version,
 * state, hold_ms; version 1, from before turn 2, ends after version and
 * loads as ACTIVE without a hold) and "o:<sale_id>:<order_id>" (version 1:
 * user, quantity, status), each a version byte then bytes.h fields. load() accepts them in any order: an order read
 * before its sale hangs on a placeholder sale that the sale's entry fills in.
 */
#include "domain.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "bytes.h"

#define TIMESALE_CKPT_V1 1
#define TIMESALE_CKPT_V2 2 /* sale entries: v1 and state, hold_ms; order entries: status, hold_expires_at */
/* due() asks again for the ExpireHold of a hold still HELD this long after it
 * last asked (the first one may have been lost, or may still be in the log). */
#define TIMESALE_TICK_RETRY_MS 5000
/* ExpireHold commands one due() call makes at most. */
#define TIMESALE_TICKS_MAX 20000

/* An order's status, as stored (version 2 order entries). */
enum { ORDER_PLACED = 0, ORDER_CANCELLED = 1, ORDER_HELD = 2, ORDER_EXPIRED = 3 };
static const char *const order_status_names[] = {"PLACED", "CANCELLED", "HELD", "EXPIRED"};
#define TIMESALE_KEY_MAX (2 + PROMO_ID_MAX + 1 + PROMO_ID_MAX + 1)

typedef struct timesale_user {
    UT_hash_handle hh;
    int64_t placed; /* units in this user's PLACED and HELD orders */
    char user_id[];
} timesale_user;

typedef struct timesale_order {
    UT_hash_handle hh;
    timesale_user *user;
    int32_t quantity;
    uint8_t status; /* ORDER_... */
    bool dirty;
    int64_t hold_expires_at; /* HELD: the deadline; kept after, for the record */
    int64_t tick_at;         /* when due() last asked for its ExpireHold (wall clock); never stored */
    size_t heap_idx;         /* HELD: its place in the sale's holds heap */
    char order_id[];
} timesale_order;

typedef struct timesale_sale {
    UT_hash_handle hh; /* keyed by def.sale_id */
    time_sale_def def;
    bool defined; /* false for a placeholder holding orders loaded before it */
    bool dirty;
    uint8_t state;   /* campaign_state */
    int64_t hold_ms; /* default hold of its orders; 0: none */
    int64_t sold;
    int64_t version;
    /* Derived from the orders, never stored: */
    int64_t n_orders;    /* orders accepted */
    int64_t n_cancelled; /* of them, cancelled */
    int64_t n_expired;   /* of them, held and lapsed */
    int64_t held;        /* units in HELD orders */
    timesale_order *orders;
    timesale_user *users;
    /* The HELD orders, a min-heap by (deadline, order id): due() walks the
     * ones whose deadline has passed without looking at the others. */
    timesale_order **holds;
    size_t n_holds, cap_holds;
} timesale_sale;

/* One dirty checkpoint entry: the sale's own when order is NULL. */
typedef struct timesale_dirty {
    timesale_sale *sale;
    timesale_order *order;
} timesale_dirty;

typedef struct timesale_state {
    timesale_sale *sales;
    size_t norders;
    timesale_dirty *dirty;
    size_t ndirty, dirtycap;
} timesale_state;

static timesale_sale *timesale_sale_find(timesale_state *st, const char *sale_id) {
    timesale_sale *s = NULL;
    HASH_FIND_STR(st->sales, sale_id, s);
    return s;
}

static timesale_order *timesale_order_find(timesale_sale *s, const char *order_id) {
    timesale_order *o = NULL;
    HASH_FIND_STR(s->orders, order_id, o);
    return o;
}

static timesale_user *timesale_user_find(timesale_sale *s, const char *user_id) {
    timesale_user *u = NULL;
    HASH_FIND_STR(s->users, user_id, u);
    return u;
}

/* Creates a sale keyed sale_id and adds it to the state; NULL on out of
 * memory. The state owns it. */
static timesale_sale *timesale_sale_add(timesale_state *st, const char *sale_id) {
    timesale_sale *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    snprintf(s->def.sale_id, sizeof s->def.sale_id, "%s", sale_id);
    HASH_ADD_KEYPTR(hh, st->sales, s->def.sale_id, strlen(s->def.sale_id), s);
    if (!s->hh.tbl) {
        free(s);
        return NULL;
    }
    return s;
}

/* The user's entry in s, created (with nothing placed) when missing; NULL on
 * out of memory. *created tells whether it was. */
static timesale_user *timesale_user_get(timesale_sale *s, const char *user_id, bool *created) {
    timesale_user *u = timesale_user_find(s, user_id);
    *created = false;
    if (u) return u;
    size_t len = strlen(user_id);
    if (!(u = calloc(1, sizeof *u + len + 1))) return NULL;
    memcpy(u->user_id, user_id, len + 1);
    HASH_ADD_KEYPTR(hh, s->users, u->user_id, len, u);
    if (!u->hh.tbl) {
        free(u);
        return NULL;
    }
    *created = true;
    return u;
}

static void timesale_user_drop(timesale_sale *s, timesale_user *u) {
    HASH_DEL(s->users, u);
    free(u);
}

/* ---- the holds heap ------------------------------------------------------- */

static bool timesale_hold_before(const timesale_order *a, const timesale_order *b) {
    if (a->hold_expires_at != b->hold_expires_at) return a->hold_expires_at < b->hold_expires_at;
    return strcmp(a->order_id, b->order_id) < 0;
}

static void timesale_heap_set(timesale_sale *s, size_t i, timesale_order *o) {
    s->holds[i] = o;
    o->heap_idx = i;
}

static void timesale_heap_up(timesale_sale *s, size_t i) {
    timesale_order *o = s->holds[i];
    while (i > 0 && timesale_hold_before(o, s->holds[(i - 1) / 2])) {
        timesale_heap_set(s, i, s->holds[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    timesale_heap_set(s, i, o);
}

static void timesale_heap_down(timesale_sale *s, size_t i) {
    timesale_order *o = s->holds[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n_holds) break;
        if (c + 1 < s->n_holds && timesale_hold_before(s->holds[c + 1], s->holds[c])) c++;
        if (!timesale_hold_before(s->holds[c], o)) break;
        timesale_heap_set(s, i, s->holds[c]);
        i = c;
    }
    timesale_heap_set(s, i, o);
}

/* Room for one more hold, so a command can allocate before it changes anything. */
static int timesale_heap_reserve(timesale_sale *s) {
    if (s->n_holds < s->cap_holds) return 0;
    size_t cap = s->cap_holds ? s->cap_holds * 2 : 16;
    timesale_order **h = realloc(s->holds, cap * sizeof *h);
    if (!h) return -1;
    s->holds = h;
    s->cap_holds = cap;
    return 0;
}

/* Needs timesale_heap_reserve() first. */
static void timesale_heap_push(timesale_sale *s, timesale_order *o) {
    s->holds[s->n_holds] = o;
    o->heap_idx = s->n_holds++;
    timesale_heap_up(s, o->heap_idx);
}

static void timesale_heap_remove(timesale_sale *s, timesale_order *o) {
    size_t i = o->heap_idx;
    timesale_order *last = s->holds[--s->n_holds];
    if (i == s->n_holds) return;
    timesale_heap_set(s, i, last);
    timesale_heap_up(s, i);
    timesale_heap_down(s, last->heap_idx);
}

/* A HELD order ends (PLACED, CANCELLED or EXPIRED): its units leave held. */
static void timesale_unhold(timesale_sale *s, timesale_order *o, uint8_t to) {
    timesale_heap_remove(s, o);
    s->held -= o->quantity;
    o->status = to;
}

/* Creates an order in s; NULL on out of memory. The sale owns it. */
static timesale_order *timesale_order_add(timesale_sale *s, const char *order_id, timesale_user *user,
                                          int32_t quantity) {
    size_t len = strlen(order_id);
    timesale_order *o = calloc(1, sizeof *o + len + 1);
    if (!o) return NULL;
    memcpy(o->order_id, order_id, len + 1);
    o->user = user;
    o->quantity = quantity;
    HASH_ADD_KEYPTR(hh, s->orders, o->order_id, len, o);
    if (!o->hh.tbl) {
        free(o);
        return NULL;
    }
    return o;
}

static void timesale_sale_free(timesale_sale *s) {
    timesale_order *o, *otmp;
    HASH_ITER(hh, s->orders, o, otmp) {
        HASH_DEL(s->orders, o);
        free(o);
    }
    timesale_user *u, *utmp;
    HASH_ITER(hh, s->users, u, utmp) {
        HASH_DEL(s->users, u);
        free(u);
    }
    free(s->holds);
    free(s);
}

static int timesale_dirty_reserve(timesale_state *st, size_t n) {
    if (st->dirtycap - st->ndirty >= n) return 0;
    size_t cap = st->dirtycap ? st->dirtycap : 64;
    while (cap - st->ndirty < n) cap *= 2;
    timesale_dirty *d = realloc(st->dirty, cap * sizeof *d);
    if (!d) return -1;
    st->dirty = d;
    st->dirtycap = cap;
    return 0;
}

/* Room must have been made with timesale_dirty_reserve(). */
static void timesale_touch(timesale_state *st, timesale_sale *s, timesale_order *o) {
    bool *flag = o ? &o->dirty : &s->dirty;
    if (*flag) return;
    *flag = true;
    st->dirty[st->ndirty++] = (timesale_dirty){s, o};
}

/* What every result on an existing sale carries: its counts and state. */
static void timesale_fill(promo_result *res, const timesale_sale *s) {
    res->has_sold = true;
    res->sold = s->sold;
    res->has_held = true;
    res->held = s->held;
    res->has_remaining = true;
    /* Never negative: a PATCH keeps stock at or above sold + held. */
    res->remaining = s->def.stock - s->sold - s->held > 0 ? s->def.stock - s->sold - s->held : 0;
    res->has_expired_orders = true;
    res->expired_orders = s->n_expired;
    res->version = s->version;
    strcpy(res->state, campaign_state_name((campaign_state)s->state));
    res->has_orders = true;
    res->orders = s->n_orders;
    res->has_cancelled_orders = true;
    res->cancelled_orders = s->n_cancelled;
}

/* The definition, as a create or a change answers with it. */
static void timesale_fill_def(promo_result *res, const timesale_sale *s) {
    res->has_sale = true;
    res->sale = s->def;
    res->has_hold_ms = s->hold_ms > 0;
    res->hold_ms = s->hold_ms;
}

static void timesale_fill_order(promo_result *res, const timesale_order *o) {
    snprintf(res->user_id, sizeof res->user_id, "%s", o->user->user_id);
    res->has_quantity = true;
    res->quantity = o->quantity;
}

/* The order's status after the command, and its deadline while it is held. */
static void timesale_fill_status(promo_result *res, const timesale_order *o) {
    snprintf(res->order_status, sizeof res->order_status, "%s", order_status_names[o->status]);
    res->has_hold_expires_at = o->status == ORDER_HELD;
    res->hold_expires_at = o->status == ORDER_HELD ? o->hold_expires_at : 0;
}

/* ---- commands ------------------------------------------------------------ */

static int timesale_create(timesale_state *st, const promo_cmd *cmd, promo_result *res) {
    const time_sale_def *def = &cmd->u.create_sale;
    timesale_sale *s = timesale_sale_find(st, def->sale_id);
    if (s && s->defined) {
        timesale_fill(res, s);
        result_reject(res, "ALREADY_EXISTS");
        return 0;
    }
    if (timesale_dirty_reserve(st, 1) != 0) return -1;
    /* A placeholder can only be left by a checkpoint that holds orders of a
     * sale but not the sale: the definition arriving now completes it. */
    if (!s && !(s = timesale_sale_add(st, def->sale_id))) return -1;
    s->def = *def;
    s->defined = true;
    s->state = CAMPAIGN_ACTIVE;
    s->hold_ms = 0;
    s->sold = 0;
    s->version = 1;
    timesale_touch(st, s, NULL);
    timesale_fill_def(res, s);
    timesale_fill(res, s);
    return 0;
}

/* PlaceOrder and HoldOrder. An order is HELD when it asks for a hold
 * (HoldOrder) or its sale has a default one; a held order's units count
 * against the stock (remaining = stock - sold - held) and the user's limit
 * until it is confirmed (PLACED), cancelled, or its deadline passes and an
 * ExpireHold makes it EXPIRED. So a unit is never both held and sold, or
 * held twice. */
static int timesale_place(timesale_state *st, const promo_cmd *cmd, int64_t now, promo_result *res) {
    bool hold_cmd = cmd->type == CMD_HOLD_ORDER;
    const char *sale_id = hold_cmd ? cmd->u.hold_order.sale_id : cmd->u.place_order.sale_id;
    const char *user_id = hold_cmd ? cmd->u.hold_order.user_id : cmd->u.place_order.user_id;
    int32_t quantity = hold_cmd ? cmd->u.hold_order.quantity : cmd->u.place_order.quantity;
    const char *named = hold_cmd ? cmd->u.hold_order.order_id : cmd->u.place_order.order_id;
    const char *order_id = named[0] ? named : cmd->request_id;
    snprintf(res->order_id, sizeof res->order_id, "%s", order_id);
    snprintf(res->user_id, sizeof res->user_id, "%s", user_id);
    res->has_quantity = true;
    res->quantity = quantity;

    timesale_sale *s = timesale_sale_find(st, sale_id);
    if (!s || !s->defined) {
        result_reject(res, "NOT_FOUND");
        return 0;
    }
    timesale_fill(res, s);
    int64_t hold_ms = hold_cmd ? cmd->u.hold_order.hold_ms : s->hold_ms;
    timesale_user *u = timesale_user_find(s, user_id);
    int64_t placed = u ? u->placed : 0;
    const char *reject = NULL;
    if (s->state == CAMPAIGN_PAUSED)
        reject = "PAUSED";
    else if (s->state == CAMPAIGN_CLOSED)
        reject = "CLOSED";
    else if (now < s->def.starts_at)
        reject = "NOT_STARTED";
    else if (now >= s->def.ends_at)
        reject = "ENDED";
    else if (timesale_order_find(s, order_id))
        reject = "DUPLICATE_ORDER";
    /* cmd_validate() keeps quantity >= 1 and hold_ms in range; the guards
     * keep the counts honest anyway. */
    else if (quantity <= 0)
        reject = "INVALID_QUANTITY";
    else if (hold_ms < 0 || hold_ms > PROMO_HOLD_MS_MAX)
        reject = "INVALID_HOLD";
    else if (placed + quantity > s->def.per_user_limit)
        reject = "LIMIT_EXCEEDED";
    else if (quantity > s->def.stock - s->sold - s->held)
        reject = "SOLD_OUT";
    if (reject) {
        result_reject(res, reject);
        return 0;
    }

    bool created;
    if (timesale_dirty_reserve(st, 2) != 0 || (hold_ms > 0 && timesale_heap_reserve(s) != 0) ||
        !(u = timesale_user_get(s, user_id, &created)))
        return -1;
    timesale_order *o = timesale_order_add(s, order_id, u, quantity);
    if (!o) {
        if (created) timesale_user_drop(s, u);
        return -1;
    }
    st->norders++;
    s->n_orders++;
    u->placed += quantity;
    if (hold_ms > 0) {
        o->status = ORDER_HELD;
        o->hold_expires_at = now + hold_ms;
        s->held += quantity;
        timesale_heap_push(s, o);
    } else {
        o->status = ORDER_PLACED;
        s->sold += quantity;
    }
    s->version++;
    timesale_touch(st, s, NULL);
    timesale_touch(st, s, o);
    timesale_fill_status(res, o);
    timesale_fill(res, s);
    return 0;
}

/* The order a cancel, confirm or expiry names, with the result's order
 * fields filled; NULL (NOT_FOUND, already in res) when the sale or the order
 * does not exist. */
static timesale_order *timesale_order_cmd(timesale_state *st, const char *sale_id, const char *order_id,
                                          promo_result *res, timesale_sale **sp) {
    snprintf(res->order_id, sizeof res->order_id, "%s", order_id);
    timesale_sale *s = timesale_sale_find(st, sale_id);
    timesale_order *o = s && s->defined ? timesale_order_find(s, order_id) : NULL;
    if (s && s->defined) timesale_fill(res, s);
    if (!o) {
        result_reject(res, "NOT_FOUND");
        return NULL;
    }
    timesale_fill_order(res, o);
    *sp = s;
    return o;
}

/* Why a command on a held order is refused whatever it is: the hold has
 * lapsed (by the command's time, even if its ExpireHold is still to come),
 * or the order has ended. NULL when the order is HELD and in time. */
static const char *timesale_hold_gone(const timesale_order *o, int64_t now) {
    if (o->status == ORDER_CANCELLED) return "ALREADY_CANCELLED";
    if (o->status == ORDER_EXPIRED) return "EXPIRED";
    if (o->status == ORDER_HELD && now >= o->hold_expires_at) return "EXPIRED";
    return NULL;
}

static int timesale_cancel(timesale_state *st, const promo_cmd *cmd, int64_t now, promo_result *res) {
    timesale_sale *s = NULL;
    timesale_order *o = timesale_order_cmd(st, cmd->u.cancel_order.sale_id, cmd->u.cancel_order.order_id, res, &s);
    if (!o) return 0;
    const char *reject = timesale_hold_gone(o, now);
    if (reject) {
        result_reject(res, reject);
        return 0;
    }
    if (timesale_dirty_reserve(st, 2) != 0) return -1;
    /* Allowed after the sale has ended too, and whatever its state: the
     * stock comes back either way, and the user's limit is freed. */
    o->user->placed -= o->quantity;
    if (o->status == ORDER_HELD) {
        timesale_unhold(s, o, ORDER_CANCELLED);
    } else {
        o->status = ORDER_CANCELLED;
        /* Never below zero: a checkpoint whose sale entry and order entries
         * disagree (sold smaller than its PLACED orders) is accepted entry by
         * entry, and a negative sold would make the next dump unloadable. */
        s->sold -= o->quantity < s->sold ? o->quantity : s->sold;
    }
    s->n_cancelled++;
    s->version++;
    timesale_touch(st, s, NULL);
    timesale_touch(st, s, o);
    timesale_fill_status(res, o);
    timesale_fill(res, s);
    return 0;
}

/* A held order, in time, becomes PLACED: its units move from held to sold.
 * Whatever the sale's state or window: the hold was taken while it was open. */
static int timesale_confirm(timesale_state *st, const promo_cmd *cmd, int64_t now, promo_result *res) {
    timesale_sale *s = NULL;
    timesale_order *o = timesale_order_cmd(st, cmd->u.order_ref.sale_id, cmd->u.order_ref.order_id, res, &s);
    if (!o) return 0;
    const char *reject = o->status == ORDER_PLACED ? "NOT_HELD" : timesale_hold_gone(o, now);
    if (reject) {
        timesale_fill_status(res, o);
        result_reject(res, reject);
        return 0;
    }
    if (timesale_dirty_reserve(st, 2) != 0) return -1;
    timesale_unhold(s, o, ORDER_PLACED);
    s->sold += o->quantity;
    s->version++;
    timesale_touch(st, s, NULL);
    timesale_touch(st, s, o);
    timesale_fill_status(res, o);
    timesale_fill(res, s);
    return 0;
}

/* A held order whose deadline has passed by the command's time lapses: its
 * units return to the stock and the user's limit. The processor produces
 * this command (timesale_due()); the log decides when it applies, so a
 * replay expires exactly the same holds. NOT_HELD for an order that is not
 * held (any more), NOT_DUE before its deadline. */
static int timesale_expire(timesale_state *st, const promo_cmd *cmd, int64_t now, promo_result *res) {
    timesale_sale *s = NULL;
    timesale_order *o = timesale_order_cmd(st, cmd->u.order_ref.sale_id, cmd->u.order_ref.order_id, res, &s);
    if (!o) return 0;
    const char *reject = o->status != ORDER_HELD ? "NOT_HELD" : now < o->hold_expires_at ? "NOT_DUE" : NULL;
    if (reject) {
        timesale_fill_status(res, o);
        result_reject(res, reject);
        return 0;
    }
    if (timesale_dirty_reserve(st, 2) != 0) return -1;
    o->user->placed -= o->quantity;
    timesale_unhold(s, o, ORDER_EXPIRED);
    s->n_expired++;
    s->version++;
    timesale_touch(st, s, NULL);
    timesale_touch(st, s, o);
    timesale_fill_status(res, o);
    timesale_fill(res, s);
    return 0;
}

/* Pause, resume and close, as for coupon policies (coupon.c): a control
 * that changes nothing succeeds without a new version; CLOSED is final.
 * Orders already placed are not touched: they can still be cancelled. */
static int timesale_control(timesale_state *st, const promo_cmd *cmd, promo_result *res) {
    timesale_sale *s = timesale_sale_find(st, cmd->u.sale_control.sale_id);
    if (!s || !s->defined) {
        result_reject(res, "NOT_FOUND");
        return 0;
    }
    timesale_fill(res, s);
    uint8_t to = cmd->type == CMD_PAUSE_TIME_SALE    ? CAMPAIGN_PAUSED
                 : cmd->type == CMD_RESUME_TIME_SALE ? CAMPAIGN_ACTIVE
                                                     : CAMPAIGN_CLOSED;
    if (s->state == CAMPAIGN_CLOSED && to != CAMPAIGN_CLOSED) {
        result_reject(res, "CLOSED");
        return 0;
    }
    if (s->state != to) {
        if (timesale_dirty_reserve(st, 1) != 0) return -1;
        s->state = to;
        s->version++;
        timesale_touch(st, s, NULL);
    }
    timesale_fill_def(res, s);
    timesale_fill(res, s);
    return 0;
}

/* PATCH: stock, per_user_limit, ends_at, hold_ms. Stock never below the
 * units taken (BELOW_SOLD); ends_at stays after starts_at (INVALID_WINDOW).
 * A lower per_user_limit keeps the orders users have; a new hold_ms applies
 * to orders placed from now on. */
static int timesale_update(timesale_state *st, const promo_cmd *cmd, promo_result *res) {
    const time_sale_update *u = &cmd->u.update_sale;
    timesale_sale *s = timesale_sale_find(st, u->sale_id);
    if (!s || !s->defined) {
        result_reject(res, "NOT_FOUND");
        return 0;
    }
    timesale_fill(res, s);
    time_sale_def d = s->def;
    if (u->has_stock) d.stock = u->stock;
    if (u->has_per_user_limit) d.per_user_limit = u->per_user_limit;
    if (u->has_ends_at) d.ends_at = u->ends_at;
    const char *reject = NULL;
    if (s->state == CAMPAIGN_CLOSED)
        reject = "CLOSED";
    else if (d.stock < s->sold + s->held)
        reject = "BELOW_SOLD";
    else if (d.ends_at <= d.starts_at)
        reject = "INVALID_WINDOW";
    if (reject) {
        result_reject(res, reject);
        return 0;
    }
    if (timesale_dirty_reserve(st, 1) != 0) return -1;
    s->def = d;
    if (u->has_hold_ms) s->hold_ms = u->hold_ms;
    s->version++;
    timesale_touch(st, s, NULL);
    timesale_fill_def(res, s);
    timesale_fill(res, s);
    return 0;
}

static int timesale_apply(void *state, const promo_cmd *cmd, int64_t now, promo_result *res) {
    timesale_state *st = state;
    switch (cmd->type) {
    case CMD_CREATE_TIME_SALE: return timesale_create(st, cmd, res);
    case CMD_PLACE_ORDER:
    case CMD_HOLD_ORDER: return timesale_place(st, cmd, now, res);
    case CMD_CANCEL_ORDER: return timesale_cancel(st, cmd, now, res);
    case CMD_CONFIRM_ORDER: return timesale_confirm(st, cmd, now, res);
    case CMD_EXPIRE_HOLD: return timesale_expire(st, cmd, now, res);
    case CMD_PAUSE_TIME_SALE:
    case CMD_RESUME_TIME_SALE:
    case CMD_CLOSE_TIME_SALE: return timesale_control(st, cmd, res);
    case CMD_UPDATE_TIME_SALE: return timesale_update(st, cmd, res);
    default: result_reject(res, "UNSUPPORTED_COMMAND"); return 0;
    }
}

/* ---- checkpoint ---------------------------------------------------------- */

static int timesale_emit_sale(bytes_w *w, const timesale_sale *s, domain_emit_fn emit, void *ctx) {
    if (!s->defined) return 0; /* nothing of its own to write */
    char key[TIMESALE_KEY_MAX];
    int klen = snprintf(key, sizeof key, "s:%s", s->def.sale_id);
    bytes_w_reset(w);
    bytes_put_u8(w, TIMESALE_CKPT_V2);
    bytes_put_str(w, s->def.product_id);
    bytes_put_str(w, s->def.name);
    bytes_put_i64(w, s->def.original_price);
    bytes_put_i64(w, s->def.sale_price);
    bytes_put_i64(w, s->def.stock);
    bytes_put_i64(w, s->def.per_user_limit);
    bytes_put_i64(w, s->def.starts_at);
    bytes_put_i64(w, s->def.ends_at);
    bytes_put_i64(w, s->sold);
    bytes_put_i64(w, s->version);
    bytes_put_u8(w, s->state); /* version 2 from here on */
    bytes_put_i64(w, s->hold_ms);
    if (w->err) return -1;
    return emit(ctx, key, (size_t)klen, w->data, w->len);
}

static int timesale_emit_order(bytes_w *w, const timesale_sale *s, const timesale_order *o, domain_emit_fn emit,
                               void *ctx) {
    char key[TIMESALE_KEY_MAX];
    int klen = snprintf(key, sizeof key, "o:%s:%s", s->def.sale_id, o->order_id);
    bytes_w_reset(w);
    bytes_put_u8(w, TIMESALE_CKPT_V2);
    bytes_put_str(w, o->user->user_id);
    bytes_put_i64(w, o->quantity);
    bytes_put_u8(w, o->status);
    bytes_put_i64(w, o->hold_expires_at);
    if (w->err) return -1;
    return emit(ctx, key, (size_t)klen, w->data, w->len);
}

static int timesale_dump(void *state, int all, domain_emit_fn emit, void *ctx) {
    timesale_state *st = state;
    bytes_w w = {0};
    int rc = 0;
    if (all) {
        for (timesale_sale *s = st->sales; s && rc == 0; s = s->hh.next) {
            rc = timesale_emit_sale(&w, s, emit, ctx);
            for (timesale_order *o = s->orders; o && rc == 0; o = o->hh.next)
                rc = timesale_emit_order(&w, s, o, emit, ctx);
        }
    } else {
        for (size_t i = 0; i < st->ndirty && rc == 0; i++) {
            timesale_dirty *d = &st->dirty[i];
            rc = d->order ? timesale_emit_order(&w, d->sale, d->order, emit, ctx)
                          : timesale_emit_sale(&w, d->sale, emit, ctx);
        }
    }
    free(w.data);
    if (rc != 0) return rc;
    for (size_t i = 0; i < st->ndirty; i++) {
        if (st->dirty[i].order)
            st->dirty[i].order->dirty = false;
        else
            st->dirty[i].sale->dirty = false;
    }
    st->ndirty = 0;
    return 0;
}

static int timesale_load_sale(timesale_state *st, const char *sale_id, const uint8_t *val, size_t val_len) {
    time_sale_def def = {0};
    bytes_r r;
    bytes_r_init(&r, val, val_len);
    uint8_t v = bytes_get_u8(&r);
    size_t idlen = strlen(sale_id);
    if (idlen >= sizeof def.sale_id) return -1;
    memcpy(def.sale_id, sale_id, idlen + 1);
    bytes_get_str(&r, def.product_id, sizeof def.product_id);
    bytes_get_str(&r, def.name, sizeof def.name);
    def.original_price = bytes_get_i64(&r);
    def.sale_price = bytes_get_i64(&r);
    def.stock = bytes_get_i64(&r);
    int64_t limit = bytes_get_i64(&r);
    def.starts_at = bytes_get_i64(&r);
    def.ends_at = bytes_get_i64(&r);
    int64_t sold = bytes_get_i64(&r);
    int64_t version = bytes_get_i64(&r);
    /* Version 1 (before turn 2) ends here: an ACTIVE sale without a hold. */
    uint8_t state = CAMPAIGN_ACTIVE;
    int64_t hold_ms = 0;
    if (v == TIMESALE_CKPT_V2) {
        state = bytes_get_u8(&r);
        hold_ms = bytes_get_i64(&r);
    }
    if (r.err || (v != TIMESALE_CKPT_V1 && v != TIMESALE_CKPT_V2) || r.p != r.end || def.stock < 0 || limit < 0 ||
        limit > INT32_MAX || sold < 0 || sold > def.stock || version < 1 || state > CAMPAIGN_CLOSED || hold_ms < 0 ||
        hold_ms > INT32_MAX)
        return -1;
    def.per_user_limit = (int32_t)limit;
    timesale_sale *s = timesale_sale_find(st, sale_id);
    if (!s && !(s = timesale_sale_add(st, sale_id))) return -1;
    s->def = def;
    s->defined = true;
    s->sold = sold;
    s->version = version;
    s->state = state;
    s->hold_ms = hold_ms;
    return 0;
}

/* Takes an order's share off or on its sale's derived counts. */
static void timesale_order_count(timesale_sale *s, timesale_order *o, int sign) {
    if (o->status == ORDER_PLACED || o->status == ORDER_HELD) o->user->placed += sign * o->quantity;
    if (o->status == ORDER_CANCELLED) s->n_cancelled += sign;
    if (o->status == ORDER_EXPIRED) s->n_expired += sign;
    if (o->status == ORDER_HELD) s->held += sign * o->quantity;
}

static int timesale_load_order(timesale_state *st, const char *sale_id, const char *order_id, const uint8_t *val,
                               size_t val_len) {
    char user_id[PROMO_ID_MAX + 1];
    bytes_r r;
    bytes_r_init(&r, val, val_len);
    uint8_t v = bytes_get_u8(&r);
    bytes_get_str(&r, user_id, sizeof user_id);
    int64_t quantity = bytes_get_i64(&r);
    uint8_t status = bytes_get_u8(&r);
    /* Version 1 (before turn 2) ends here, status a cancelled flag. */
    int64_t hold_expires_at = v == TIMESALE_CKPT_V2 ? bytes_get_i64(&r) : 0;
    if (r.err || (v != TIMESALE_CKPT_V1 && v != TIMESALE_CKPT_V2) || r.p != r.end || !promo_id_valid(user_id) ||
        quantity < 1 || quantity > INT32_MAX || status > (v == TIMESALE_CKPT_V1 ? ORDER_CANCELLED : ORDER_EXPIRED) ||
        hold_expires_at < 0 || hold_expires_at > INT64_MAX / 2 || (status == ORDER_HELD && hold_expires_at == 0))
        return -1;

    timesale_sale *s = timesale_sale_find(st, sale_id);
    if (!s && !(s = timesale_sale_add(st, sale_id))) return -1;
    if (status == ORDER_HELD && timesale_heap_reserve(s) != 0) return -1;
    bool created;
    timesale_user *u = timesale_user_get(s, user_id, &created);
    if (!u) return -1;
    timesale_order *o = timesale_order_find(s, order_id);
    if (o) {
        /* A newer value layered over an older one: take the old one's share
         * off before adding the new one's. */
        timesale_order_count(s, o, -1);
        if (o->status == ORDER_HELD) timesale_heap_remove(s, o);
    } else {
        if (!(o = timesale_order_add(s, order_id, u, (int32_t)quantity))) {
            if (created) timesale_user_drop(s, u);
            return -1;
        }
        st->norders++;
        s->n_orders++;
    }
    o->user = u;
    o->quantity = (int32_t)quantity;
    o->status = status;
    o->hold_expires_at = hold_expires_at;
    o->tick_at = 0;
    timesale_order_count(s, o, +1);
    if (status == ORDER_HELD) timesale_heap_push(s, o);
    return 0;
}

static int timesale_load(void *state, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    char buf[TIMESALE_KEY_MAX];
    if (!key || key_len < 3 || key_len >= sizeof buf || key[1] != ':' || (!val && val_len)) return -1;
    memcpy(buf, key, key_len);
    buf[key_len] = '\0';
    if (strlen(buf) != key_len) return -1;
    char *sale_id = buf + 2;
    if (buf[0] == 's') return promo_id_valid(sale_id) ? timesale_load_sale(state, sale_id, val, val_len) : -1;
    if (buf[0] != 'o') return -1;
    /* Ids never hold ':', so the first one after the prefix ends the sale id. */
    char *colon = strchr(sale_id, ':');
    if (!colon) return -1;
    *colon = '\0';
    if (!promo_id_valid(sale_id) || !promo_id_valid(colon + 1)) return -1;
    return timesale_load_order(state, sale_id, colon + 1, val, val_len);
}

/* ---- holds that time has made due ---------------------------------------- */

typedef struct timesale_due_ctx {
    int64_t now;
    domain_cmd_fn emit;
    void *ctx;
    size_t made;
    int rc;
} timesale_due_ctx;

/* The heap below index i, pruned at the first deadline not yet passed. */
static void timesale_due_walk(timesale_sale *s, size_t i, timesale_due_ctx *d) {
    while (i < s->n_holds && d->rc == 0 && d->made < TIMESALE_TICKS_MAX) {
        timesale_order *o = s->holds[i];
        if (o->hold_expires_at > d->now) return;
        if (o->tick_at == 0 || d->now - o->tick_at >= TIMESALE_TICK_RETRY_MS) {
            promo_cmd cmd;
            memset(&cmd, 0, sizeof cmd);
            cmd.type = CMD_EXPIRE_HOLD;
            cmd_expire_hold_id(s->def.sale_id, o->order_id, cmd.request_id);
            /* Stamped at the deadline or later: applied, it always finds the
             * hold due, however the clocks of ingest and processor differ. */
            cmd.submitted_at = d->now > o->hold_expires_at ? d->now : o->hold_expires_at;
            snprintf(cmd.u.order_ref.sale_id, sizeof cmd.u.order_ref.sale_id, "%s", s->def.sale_id);
            snprintf(cmd.u.order_ref.order_id, sizeof cmd.u.order_ref.order_id, "%s", o->order_id);
            if ((d->rc = d->emit(d->ctx, &cmd)) != 0) return;
            o->tick_at = d->now;
            d->made++;
        }
        timesale_due_walk(s, 2 * i + 1, d); /* depth is log2 of the holds */
        i = 2 * i + 2;
    }
}

/* The ExpireHold of every held order whose deadline is at or before now
 * (the processor's wall clock), at most once per TIMESALE_TICK_RETRY_MS each.
 * This is the only place time enters the state machine, and it changes
 * nothing a result depends on: the commands go through the log like any
 * other, and the log's order decides. */
static int timesale_due(void *state, int64_t now, domain_cmd_fn emit, void *ctx) {
    timesale_state *st = state;
    timesale_due_ctx d = {now, emit, ctx, 0, 0};
    for (timesale_sale *s = st->sales; s && d.rc == 0; s = s->hh.next)
        if (s->defined) timesale_due_walk(s, 0, &d);
    return d.rc;
}

/* ---- lifecycle ----------------------------------------------------------- */

static void *timesale_state_new(void) {
    return calloc(1, sizeof(timesale_state));
}

static void timesale_state_destroy(void *state) {
    timesale_state *st = state;
    if (!st) return;
    timesale_sale *s, *tmp;
    HASH_ITER(hh, st->sales, s, tmp) {
        HASH_DEL(st->sales, s);
        timesale_sale_free(s);
    }
    free(st->dirty);
    free(st);
}

static size_t timesale_entries(void *state) {
    timesale_state *st = state;
    size_t n = st->norders;
    for (timesale_sale *s = st->sales; s; s = s->hh.next) n += s->defined;
    return n;
}

const domain_ops timesale_ops = {
    .domain = DOMAIN_TIMESALE,
    .name = "timesale",
    .topic = TOPIC_TIMESALE_CMD,
    .schema_id = 3,
    .state_new = timesale_state_new,
    .state_destroy = timesale_state_destroy,
    .apply = timesale_apply,
    .load = timesale_load,
    .dump = timesale_dump,
    .entries = timesale_entries,
    .due = timesale_due,
};
