/* point.c — the reward-point state machine of one promo.point.cmd partition.
 *
 * Pure: commands in, results out, no I/O and no clock ("now" is the command's
 * submitted_at, passed in by the runtime). The state is one account per user:
 * a balance, the lots it is made of (amount left, original amount, expiry,
 * earning order), a ledger sequence counter, a version, and every use by
 * order id with the lot-by-lot amounts it took, so that a cancel restores
 * exactly those amounts to exactly those lots.
 *
 * Invariants after every command: balance == sum of the lots' amounts left
 * >= 0; balance == sum of every ledger delta ever emitted for the user; the
 * ledger seq counts entries from 1 without gaps. Lots are kept sorted by
 * (expiry, earning order) with "no expiry" last, so expiry is a prefix of the
 * array and FIFO use is a walk from its start.
 *
 * Each apply() first works out what the command will do without touching the
 * state, then allocates everything it needs, and only then mutates: an out of
 * memory return leaves the state exactly as it was.
 *
 * Accounts live in an open-addressed table of pointers rather than uthash: a
 * partition may hold a million accounts and uthash's 56-byte handle per entry
 * would be most of an account's size. The table never deletes (an account,
 * once created, stays), which keeps linear probing trivial. Each account's uses
 * live in a table of the same kind, owned by the account.
 *
 * Pending points (EarnPendingPoints, DESIGN.md §4a) wait beside the lots,
 * outside the balance, until available_at: the first command of the user at
 * or after that time (any command; ReleasePoints, which due() asks the
 * runtime to produce, when nothing else comes) makes them lots first, with
 * one EARN entry. So a result holds three ledger entries at most: that EARN,
 * an EXPIRE, and the command's own. AdjustPoints adds a lot, or takes
 * points as a use does but for good (ledger kind ADJUST). A lot is named by
 * its EARN (or ADJUST) entry's seq and its expiry: points released together
 * share one entry, in one lot per expiry.
 *
 * Checkpoint entry: "a:<user_id>" holds the whole account (version byte 2,
 * then bytes.h varints; see point_encode()); version 1, written before
 * turn 2, is the same without pending points.
 */
#include "domain.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "bytes.h"

#define POINT_NO_EXPIRY INT64_MAX /* sorts lots without expiry last */
#define POINT_CKPT_V1 1
#define POINT_CKPT_V2 2 /* v1 and the pending lots */
/* due() asks again for a ReleasePoints still due this long after it last asked. */
#define POINT_TICK_RETRY_MS 5000
#define POINT_TICKS_MAX 20000
#define POINT_KEY_MAX (2 + PROMO_ID_MAX + 1)

typedef struct point_lot {
    int64_t left;
    int64_t amount;     /* as earned */
    int64_t expires_at; /* POINT_NO_EXPIRY when none */
    int64_t earn_seq;   /* ledger seq of its EARN entry: unique, in earning order */
    int64_t refs;       /* uncancelled uses holding a piece of it; derived on load */
} point_lot;

/* What one use took from one lot. The lot's expiry is kept too, so a cancel
 * could rebuild the lot if it were ever missing. */
typedef struct point_piece {
    int64_t earn_seq;
    int64_t expires_at;
    int64_t taken;
} point_piece;

typedef struct point_use {
    uint32_t hash; /* of order_id */
    uint32_t npieces;
    bool cancelled;
    int64_t amount;
    char order_id[PROMO_ID_MAX + 1];
    point_piece pieces[];
} point_use;

/* Points earned for later (EarnPendingPoints): outside the balance and the
 * lots until available_at, when the first command of the user at or after
 * that time (a ReleasePoints the processor produces, if nothing else) makes
 * them a lot, with an EARN ledger entry. */
typedef struct point_pending {
    int64_t amount;
    int64_t expires_at; /* POINT_NO_EXPIRY when none */
    int64_t available_at;
    int64_t serial;  /* the account's version when earned: names its ReleasePoints */
    int64_t tick_at; /* when due() last asked for its ReleasePoints (wall clock); never stored */
    char *reason;    /* owned */
} point_pending;

typedef struct point_account {
    uint32_t hash; /* of user_id */
    uint32_t nlots;
    uint32_t nuses;
    /* Capacities as powers of two, to keep the struct small: lots hold
     * 1 << lotbits (lotbits 0: the only lot lives inline in lots.one), uses
     * 1 << usebits slots (usebits 0: no table yet). */
    uint8_t lotbits;
    uint8_t usebits;
    bool dirty;
    int64_t balance;
    int64_t version;
    int64_t seq; /* last ledger seq */
    point_use **uses;
    union {
        point_lot one; /* most accounts hold a single lot: no second allocation */
        point_lot *many;
    } lots;
    point_pending *pending; /* by available_at, then earning order */
    uint32_t npending;
    char user_id[];
} point_account;

/* An entry of the state's release heap: an account with a pending lot
 * available at `at`. Stale entries (released since) are dropped when due()
 * meets them at the top. */
typedef struct point_release_entry {
    int64_t at;
    point_account *a;
} point_release_entry;

typedef struct point_state {
    point_account **slots; /* open addressing, linear probing */
    size_t cap, n;
    arena *arena;          /* its accounts (see point_account_new()) */
    point_account **dirty; /* accounts changed since the last dump */
    size_t ndirty, dirtycap;
    point_release_entry *rel; /* min-heap by at: what due() looks at */
    size_t nrel, caprel;
} point_state;

/* FNV-1a with a final mix, so that the low bits used as the slot index depend
 * on every byte. */
static uint32_t point_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static uint32_t point_lotcap(const point_account *a) {
    return 1u << a->lotbits;
}
static uint32_t point_usecap(const point_account *a) {
    return a->usebits ? 1u << a->usebits : 0;
}
static point_lot *point_lots(point_account *a) {
    return a->lotbits ? a->lots.many : &a->lots.one;
}

/* ---- tables -------------------------------------------------------------- */

/* The table grows by half, so its size is not a power of two: the hash is
 * mapped onto it by multiplication rather than masked. */
static point_account **point_slot(point_account **slots, size_t cap, const char *id, uint32_t h) {
    for (size_t i = (size_t)(((uint64_t)h * cap) >> 32);; i = i + 1 == cap ? 0 : i + 1) {
        point_account *a = slots[i];
        if (!a || (a->hash == h && strcmp(a->user_id, id) == 0)) return &slots[i];
    }
}

static point_account *point_find(point_state *st, const char *id, uint32_t h) {
    return *point_slot(st->slots, st->cap, id, h);
}

/* Makes room for one more account (load kept at or under 3/4). */
static int point_reserve(point_state *st) {
    if ((st->n + 1) * 4 <= st->cap * 3) return 0;
    /* By half, not doubling: a million accounts then take 12 MB of slots
     * on average rather than 16 MB at the unlucky sizes. */
    if (st->cap > (1ULL << 31) / sizeof(point_account *)) return -1;
    size_t cap = st->cap + st->cap / 2;
    point_account **slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < st->cap; i++) {
        point_account *a = st->slots[i];
        if (a) *point_slot(slots, cap, a->user_id, a->hash) = a;
    }
    free(st->slots);
    st->slots = slots;
    st->cap = cap;
    return 0;
}

static point_use **point_use_slot(point_use **slots, uint32_t cap, const char *order_id, uint32_t h) {
    uint32_t mask = cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        point_use *u = slots[i];
        if (!u || (u->hash == h && strcmp(u->order_id, order_id) == 0)) return &slots[i];
    }
}

static point_use *point_use_find(const point_account *a, const char *order_id) {
    if (!a || !a->usebits) return NULL;
    return *point_use_slot(a->uses, point_usecap(a), order_id, point_hash(order_id));
}

/* Makes room for one more use in a's table. */
static int point_use_reserve(point_account *a) {
    uint32_t old = point_usecap(a);
    if ((uint64_t)(a->nuses + 1) * 4 <= (uint64_t)old * 3) return 0;
    if (old >= (1u << 30)) return -1;
    uint8_t bits = a->usebits ? a->usebits + 1 : 2;
    uint32_t cap = 1u << bits;
    point_use **slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (uint32_t i = 0; i < old; i++) {
        point_use *u = a->uses[i];
        if (u) *point_use_slot(slots, cap, u->order_id, u->hash) = u;
    }
    free(a->uses);
    a->uses = slots;
    a->usebits = bits;
    return 0;
}

/* Room must have been made with point_use_reserve(). */
static void point_use_add(point_account *a, point_use *u) {
    *point_use_slot(a->uses, point_usecap(a), u->order_id, u->hash) = u;
    a->nuses++;
}

static int point_dirty_reserve(point_state *st) {
    if (st->ndirty < st->dirtycap) return 0;
    size_t cap = st->dirtycap ? st->dirtycap * 2 : 64;
    point_account **d = realloc(st->dirty, cap * sizeof *d);
    if (!d) return -1;
    st->dirty = d;
    st->dirtycap = cap;
    return 0;
}

/* Room must have been made with point_dirty_reserve(). */
static void point_touch(point_state *st, point_account *a) {
    if (a->dirty) return;
    a->dirty = true;
    st->dirty[st->ndirty++] = a;
}

/* ---- accounts and lots --------------------------------------------------- */

/* An account, zeroed, from the state's arena: accounts are never deleted, so
 * they need no malloc of their own, and packing them together keeps a
 * million of them from being scattered among short-lived allocations (about
 * 20 bytes an account, in malloc headers, rounding and holes). Its lots and
 * uses are still freed with point_account_free(); the account's own bytes go
 * with the state. NULL on out of memory. */
static point_account *point_account_new(point_state *st, const char *user_id) {
    size_t len = strlen(user_id), n = (sizeof(point_account) + len + 1 + 7) & ~(size_t)7;
    point_account *a = arena_alloc(&st->arena, n);
    if (!a) return NULL;
    memset(a, 0, n);
    memcpy(a->user_id, user_id, len + 1);
    a->hash = point_hash(user_id);
    return a;
}

/* Frees what the account holds; its own bytes stay in the arena. */
static void point_account_free(point_account *a) {
    if (!a) return;
    for (uint32_t i = 0; i < point_usecap(a); i++) free(a->uses[i]);
    free(a->uses);
    if (a->lotbits) free(a->lots.many);
    for (uint32_t i = 0; i < a->npending; i++) free(a->pending[i].reason);
    free(a->pending);
    a->uses = NULL;
    a->usebits = 0;
    a->lotbits = 0;
    a->pending = NULL;
    a->npending = 0;
}

/* Makes room for need lots. */
static int point_lots_reserve(point_account *a, uint64_t need) {
    if (need <= point_lotcap(a)) return 0;
    if (need > (1u << 30)) return -1;
    uint8_t bits = a->lotbits ? a->lotbits : 1;
    while ((1u << bits) < need) bits++;
    uint32_t cap = 1u << bits;
    point_lot *lots = calloc(cap, sizeof *lots);
    if (!lots) return -1;
    memcpy(lots, point_lots(a), (size_t)a->nlots * sizeof *lots);
    if (a->lotbits) free(a->lots.many);
    a->lots.many = lots;
    a->lotbits = bits;
    return 0;
}

/* The account a command adds to, with room reserved for it: *a, or a new
 * one in *fresh when there is none yet. A new account stays out of the
 * table until point_account_publish(), so that a later reservation failing
 * leaves the state as it was: the caller then frees *fresh. 0, or -1 when
 * out of memory. */
static int point_account_open(point_state *st, point_account **a, const char *user_id, point_account **fresh) {
    *fresh = NULL;
    if (!*a) {
        if (!(*fresh = point_account_new(st, user_id)) || point_reserve(st) != 0) return -1;
        *a = *fresh;
    }
    return point_dirty_reserve(st);
}

/* Puts a new account of point_account_open() into the table (the table owns
 * it from then on); nothing for an existing one. */
static void point_account_publish(point_state *st, point_account *fresh) {
    if (!fresh) return;
    *point_slot(st->slots, st->cap, fresh->user_id, fresh->hash) = fresh;
    st->n++;
}

/* Inserts in (expiry, earning order) order; room must have been made. */
static void point_lot_insert(point_account *a, const point_lot *lot) {
    point_lot *lots = point_lots(a);
    uint32_t i = a->nlots;
    while (i > 0 && (lots[i - 1].expires_at > lot->expires_at ||
                     (lots[i - 1].expires_at == lot->expires_at && lots[i - 1].earn_seq > lot->earn_seq)))
        i--;
    memmove(&lots[i + 1], &lots[i], (size_t)(a->nlots - i) * sizeof *lots);
    lots[i] = *lot;
    a->nlots++;
}

/* A lot is named by its EARN entry's seq and its expiry: pending points
 * that become available together share one EARN entry, in one lot per
 * expiry. */
static point_lot *point_lot_find(point_account *a, int64_t earn_seq, int64_t expires_at) {
    point_lot *lots = point_lots(a);
    for (uint32_t i = 0; i < a->nlots; i++)
        if (lots[i].earn_seq == earn_seq && lots[i].expires_at == expires_at) return &lots[i];
    return NULL;
}

/* Drops lots nothing can refill (empty, and no uncancelled use took from
 * them), and moves a lone lot back inline. */
static void point_lots_compact(point_account *a) {
    point_lot *lots = point_lots(a);
    uint32_t n = 0;
    for (uint32_t i = 0; i < a->nlots; i++)
        if (lots[i].left > 0 || lots[i].refs > 0) lots[n++] = lots[i];
    a->nlots = n;
    if (a->lotbits && n <= 1) {
        point_lot *many = a->lots.many;
        if (n == 1) a->lots.one = many[0];
        a->lotbits = 0;
        free(many);
    }
}

/* Points still left in lots due at now (expires_at <= now). */
static int64_t point_due(point_account *a, int64_t now) {
    if (!a) return 0;
    point_lot *lots = point_lots(a);
    int64_t sum = 0;
    for (uint32_t i = 0; i < a->nlots && lots[i].expires_at <= now; i++) sum += lots[i].left;
    return sum;
}

/* Expires every lot due at now; returns the amount taken off the balance. */
static int64_t point_expire(point_account *a, int64_t now) {
    point_lot *lots = point_lots(a);
    int64_t sum = 0;
    for (uint32_t i = 0; i < a->nlots && lots[i].expires_at <= now; i++) {
        sum += lots[i].left;
        lots[i].left = 0;
    }
    a->balance -= sum;
    return sum;
}

/* Appends a ledger entry for a change already made to a->balance. */
static void point_ledger(promo_result *res, point_account *a, ledger_kind kind, int64_t delta, const char *order_id,
                         int64_t now) {
    if (res->n_ledger >= PROMO_LEDGER_MAX) return; /* cannot happen: two entries per command at most */
    ledger_entry *e = &res->ledger[res->n_ledger++];
    e->seq = ++a->seq;
    e->kind = kind;
    e->delta = delta;
    e->balance_after = a->balance;
    snprintf(e->order_id, sizeof e->order_id, "%s", order_id ? order_id : "");
    e->at = now;
}

/* The account's side of every result: balance, version, next expiry. A NULL
 * account is one that does not exist yet (balance 0, version 0). */
static void point_fill(promo_result *res, const point_account *a) {
    res->has_balance = true;
    res->balance = a ? a->balance : 0;
    res->version = a ? a->version : 0;
    res->has_next_expiry = false;
    res->has_pending = true;
    res->pending = 0;
    res->has_next_available = a && a->npending > 0;
    res->next_available_at = res->next_available_amount = 0;
    if (!a) return;
    for (uint32_t i = 0; i < a->npending; i++) {
        res->pending += a->pending[i].amount;
        if (a->pending[i].available_at == a->pending[0].available_at) {
            res->next_available_at = a->pending[i].available_at;
            res->next_available_amount += a->pending[i].amount;
        }
    }
    const point_lot *lots = a->lotbits ? a->lots.many : &a->lots.one;
    for (uint32_t i = 0; i < a->nlots && lots[i].expires_at != POINT_NO_EXPIRY; i++) {
        if (lots[i].left == 0) continue;
        if (!res->has_next_expiry) {
            res->has_next_expiry = true;
            res->next_expiry_at = lots[i].expires_at;
            res->next_expiry_amount = 0;
        } else if (lots[i].expires_at != res->next_expiry_at) {
            break;
        }
        res->next_expiry_amount += lots[i].left;
    }
}

/* ---- pending points ------------------------------------------------------ */

static bool point_rel_before(const point_release_entry *x, const point_release_entry *y) {
    return x->at < y->at;
}

/* Room for n more entries in the release heap. */
static int point_rel_reserve_n(point_state *st, size_t n) {
    if (st->caprel - st->nrel >= n) return 0;
    size_t cap = st->caprel ? st->caprel * 2 : 64;
    while (cap - st->nrel < n) cap *= 2;
    point_release_entry *r = realloc(st->rel, cap * sizeof *r);
    if (!r) return -1;
    st->rel = r;
    st->caprel = cap;
    return 0;
}

static int point_rel_reserve(point_state *st) {
    return point_rel_reserve_n(st, 1);
}

/* Needs point_rel_reserve() first. */
static void point_rel_push(point_state *st, int64_t at, point_account *a) {
    size_t i = st->nrel++;
    point_release_entry e = {at, a};
    while (i > 0 && point_rel_before(&e, &st->rel[(i - 1) / 2])) {
        st->rel[i] = st->rel[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    st->rel[i] = e;
}

static void point_rel_pop(point_state *st) {
    point_release_entry last = st->rel[--st->nrel];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= st->nrel) break;
        if (c + 1 < st->nrel && point_rel_before(&st->rel[c + 1], &st->rel[c])) c++;
        if (!point_rel_before(&st->rel[c], &last)) break;
        st->rel[i] = st->rel[c];
        i = c;
    }
    if (st->nrel) st->rel[i] = last;
}

/* How many pending lots are available by now (they are a prefix). */
static uint32_t point_releasable(const point_account *a, int64_t now) {
    uint32_t k = 0;
    while (a && k < a->npending && a->pending[k].available_at <= now) k++;
    return k;
}

static int64_t point_pending_sum(const point_account *a) {
    int64_t sum = 0;
    for (uint32_t i = 0; a && i < a->npending; i++) sum += a->pending[i].amount;
    return sum;
}

/* Makes the first k pending lots lots: one EARN ledger entry for them all
 * (their reason, when they share one), one lot per expiry named by that
 * entry. Room for k more lots must have been made. */
static void point_release(point_account *a, uint32_t k, int64_t now, promo_result *res) {
    int64_t sum = 0;
    bool same_reason = true, same_expiry = true;
    for (uint32_t i = 0; i < k; i++) {
        sum += a->pending[i].amount;
        same_reason = same_reason && strcmp(a->pending[i].reason, a->pending[0].reason) == 0;
        same_expiry = same_expiry && a->pending[i].expires_at == a->pending[0].expires_at;
    }
    a->balance += sum;
    point_ledger(res, a, LEDGER_EARN, sum, NULL, now);
    ledger_entry *e = &res->ledger[res->n_ledger - 1];
    snprintf(e->reason, sizeof e->reason, "%s", same_reason ? a->pending[0].reason : "pending points available");
    e->has_expires_at = same_expiry && a->pending[0].expires_at != POINT_NO_EXPIRY;
    e->expires_at = e->has_expires_at ? a->pending[0].expires_at : 0;
    for (uint32_t i = 0; i < k; i++) {
        point_pending *p = &a->pending[i];
        point_lot *lot = point_lot_find(a, e->seq, p->expires_at);
        if (lot) {
            lot->left += p->amount;
            lot->amount += p->amount;
        } else {
            point_lot fresh = {.left = p->amount, .amount = p->amount, .expires_at = p->expires_at, .earn_seq = e->seq};
            point_lot_insert(a, &fresh);
        }
        free(p->reason);
    }
    memmove(a->pending, a->pending + k, (size_t)(a->npending - k) * sizeof *a->pending);
    a->npending -= k;
}

/* ---- commands ------------------------------------------------------------ */

static int point_cmd_earn(point_state *st, point_account *a, const promo_cmd *cmd, int64_t now, promo_result *res) {
    int64_t amount = cmd->u.earn.amount;
    int64_t expires_at = cmd->u.earn.has_expires_at ? cmd->u.earn.expires_at : POINT_NO_EXPIRY;
    int64_t due = point_due(a, now);
    int64_t after_due = a ? a->balance - due : 0;
    const char *reject = NULL;
    res->has_amount = true;
    res->amount = amount;
    /* cmd_validate() guarantees amount >= 1; the guard keeps the balance
     * invariant even if an unvalidated command slipped through. */
    if (amount <= 0)
        reject = "INVALID_AMOUNT";
    else if (expires_at <= now)
        reject = "ALREADY_EXPIRED";
    else if (amount > INT64_MAX - after_due)
        reject = "BALANCE_OVERFLOW";
    if (reject && due == 0) {
        point_fill(res, a);
        result_reject(res, reject);
        return 0;
    }

    point_account *fresh;
    if (point_account_open(st, &a, cmd->u.earn.user_id, &fresh) != 0) goto oom;
    if (!reject && point_lots_reserve(a, (uint64_t)a->nlots + 1) != 0) goto oom;
    point_account_publish(st, fresh);

    if (due > 0) point_ledger(res, a, LEDGER_EXPIRE, -point_expire(a, now), NULL, now);
    if (!reject) {
        a->balance += amount;
        point_ledger(res, a, LEDGER_EARN, amount, NULL, now);
        ledger_entry *e = &res->ledger[res->n_ledger - 1];
        snprintf(e->reason, sizeof e->reason, "%s", cmd->u.earn.reason);
        e->has_expires_at = cmd->u.earn.has_expires_at;
        e->expires_at = cmd->u.earn.has_expires_at ? expires_at : 0;
        point_lot lot = {.left = amount, .amount = amount, .expires_at = expires_at, .earn_seq = e->seq};
        point_lot_insert(a, &lot);
    }
    a->version++;
    point_touch(st, a);
    point_lots_compact(a);
    point_fill(res, a);
    if (reject) result_reject(res, reject);
    return 0;
oom:
    point_account_free(fresh);
    return -1;
}

static int point_cmd_use(point_state *st, point_account *a, const promo_cmd *cmd, int64_t now, promo_result *res) {
    int64_t amount = cmd->u.use.amount;
    const char *order_id = cmd->u.use.order_id;
    int64_t due = point_due(a, now);
    int64_t after_due = a ? a->balance - due : 0;
    const char *reject = NULL;
    res->has_amount = true;
    res->amount = amount;
    snprintf(res->order_id, sizeof res->order_id, "%s", order_id);
    if (amount <= 0)
        reject = "INVALID_AMOUNT"; /* see point_cmd_earn() */
    else if (point_use_find(a, order_id))
        reject = "DUPLICATE_ORDER";
    else if (after_due < amount)
        reject = "INSUFFICIENT_BALANCE";
    if (reject && due == 0) {
        point_fill(res, a);
        result_reject(res, reject);
        return 0;
    }
    /* From here on a exists: either lots were due or the balance covers a
     * positive amount. */

    point_use *u = NULL;
    point_lot *lots = point_lots(a);
    uint32_t npieces = 0;
    if (!reject) {
        /* Which lots the use takes from, earliest expiry first, lots without
         * expiry last, ties in earning order: the array's own order, skipping
         * the lots about to expire. */
        int64_t need = amount;
        for (uint32_t i = 0; i < a->nlots && need > 0; i++) {
            if (lots[i].expires_at <= now || lots[i].left == 0) continue;
            need -= lots[i].left < need ? lots[i].left : need;
            npieces++;
        }
        if (!(u = calloc(1, sizeof *u + (size_t)npieces * sizeof u->pieces[0]))) goto oom;
        if (point_use_reserve(a) != 0) goto oom;
    }
    if (point_dirty_reserve(st) != 0) goto oom;

    if (due > 0) point_ledger(res, a, LEDGER_EXPIRE, -point_expire(a, now), NULL, now);
    if (!reject) {
        int64_t need = amount;
        /* Never more pieces than counted above: were the two walks ever to
         * disagree, the use would come up short (its checkpoint then fails
         * load()'s check that the pieces add up to the amount) instead of
         * writing past u->pieces. */
        for (uint32_t i = 0; i < a->nlots && need > 0 && u->npieces < npieces; i++) {
            if (lots[i].left == 0) continue; /* expired ones are empty by now */
            int64_t take = lots[i].left < need ? lots[i].left : need;
            lots[i].left -= take;
            lots[i].refs++;
            need -= take;
            u->pieces[u->npieces++] = (point_piece){lots[i].earn_seq, lots[i].expires_at, take};
        }
        u->amount = amount;
        snprintf(u->order_id, sizeof u->order_id, "%s", order_id);
        u->hash = point_hash(order_id);
        point_use_add(a, u);
        a->balance -= amount;
        point_ledger(res, a, LEDGER_USE, -amount, order_id, now);
    }
    a->version++;
    point_touch(st, a);
    point_lots_compact(a);
    point_fill(res, a);
    if (reject) result_reject(res, reject);
    return 0;
oom:
    free(u);
    return -1;
}

static int point_cmd_cancel(point_state *st, point_account *a, const promo_cmd *cmd, int64_t now, promo_result *res) {
    const char *order_id = cmd->u.cancel_use.order_id;
    int64_t due = point_due(a, now);
    point_use *u = point_use_find(a, order_id);
    const char *reject = NULL;
    snprintf(res->order_id, sizeof res->order_id, "%s", order_id);
    if (!u)
        reject = "NOT_FOUND";
    else if (u->cancelled)
        reject = "ALREADY_CANCELLED";
    else if (u->amount > INT64_MAX - a->balance)
        reject = "BALANCE_OVERFLOW";
    if (reject && due == 0) {
        point_fill(res, a);
        result_reject(res, reject);
        return 0;
    }

    int64_t into_expired = 0;
    if (!reject) {
        uint32_t missing = 0;
        for (uint32_t i = 0; i < u->npieces; i++) {
            if (u->pieces[i].expires_at <= now) into_expired += u->pieces[i].taken;
            if (!point_lot_find(a, u->pieces[i].earn_seq, u->pieces[i].expires_at)) missing++;
        }
        if (missing && point_lots_reserve(a, (uint64_t)a->nlots + missing) != 0) return -1;
    }
    if (point_dirty_reserve(st) != 0) return -1;

    /* Expiry normally comes first. But a cancel that restores points into
     * lots that have already expired (expires_at <= now) must expire those
     * points at once, after the restore, and a result holds two ledger
     * entries at most: so in that case the restore comes first (CANCEL_USE)
     * and one EXPIRE entry after it covers both the restored points and any
     * other lot due now. The final state is the same either way. */
    if (due > 0 && into_expired == 0) point_ledger(res, a, LEDGER_EXPIRE, -point_expire(a, now), NULL, now);
    if (!reject) {
        for (uint32_t i = 0; i < u->npieces; i++) {
            const point_piece *p = &u->pieces[i];
            point_lot *lot = point_lot_find(a, p->earn_seq, p->expires_at);
            if (!lot) {
                /* Unreachable while refs are kept (load() checks them), but a
                 * restore must land somewhere for the balance to add up. */
                point_lot fresh = {.amount = p->taken, .expires_at = p->expires_at, .earn_seq = p->earn_seq, .refs = 1};
                point_lot_insert(a, &fresh);
                lot = point_lot_find(a, p->earn_seq, p->expires_at);
            }
            lot->left += p->taken;
            lot->refs--;
        }
        u->cancelled = true;
        a->balance += u->amount;
        res->has_amount = true;
        res->amount = u->amount;
        point_ledger(res, a, LEDGER_CANCEL_USE, u->amount, order_id, now);
        if (into_expired > 0) point_ledger(res, a, LEDGER_EXPIRE, -point_expire(a, now), NULL, now);
    }
    a->version++;
    point_touch(st, a);
    point_lots_compact(a);
    point_fill(res, a);
    if (reject) result_reject(res, reject);
    return 0;
}

/* EarnPendingPoints: available at once when available_at is not after the
 * command's time (an earn like any other), else pending until then. */
static int point_cmd_earn_pending(point_state *st, point_account *a, const promo_cmd *cmd, int64_t now,
                                  promo_result *res) {
    if (cmd->u.earn_pending.available_at <= now) {
        promo_cmd earn = *cmd;
        earn.type = CMD_EARN_POINTS;
        memset(&earn.u, 0, sizeof earn.u);
        snprintf(earn.u.earn.user_id, sizeof earn.u.earn.user_id, "%s", cmd->u.earn_pending.user_id);
        earn.u.earn.amount = cmd->u.earn_pending.amount;
        snprintf(earn.u.earn.reason, sizeof earn.u.earn.reason, "%s", cmd->u.earn_pending.reason);
        earn.u.earn.has_expires_at = cmd->u.earn_pending.has_expires_at;
        earn.u.earn.expires_at = cmd->u.earn_pending.expires_at;
        return point_cmd_earn(st, a, &earn, now, res);
    }
    int64_t amount = cmd->u.earn_pending.amount;
    int64_t expires_at = cmd->u.earn_pending.has_expires_at ? cmd->u.earn_pending.expires_at : POINT_NO_EXPIRY;
    int64_t due = point_due(a, now);
    int64_t after_due = a ? a->balance - due + point_pending_sum(a) : 0;
    const char *reject = NULL;
    res->has_amount = true;
    res->amount = amount;
    if (amount <= 0)
        reject = "INVALID_AMOUNT"; /* see point_cmd_earn() */
    else if (expires_at <= cmd->u.earn_pending.available_at)
        reject = "ALREADY_EXPIRED";
    else if (amount > INT64_MAX - after_due)
        reject = "BALANCE_OVERFLOW";
    if (reject && due == 0) {
        point_fill(res, a);
        result_reject(res, reject);
        return 0;
    }

    point_account *fresh;
    char *reason = NULL;
    if (point_account_open(st, &a, cmd->u.earn_pending.user_id, &fresh) != 0) goto oom;
    if (!reject) {
        point_pending *p = realloc(a->pending, (size_t)(a->npending + 1) * sizeof *p);
        if (!p) goto oom;
        a->pending = p;
        if (!(reason = strdup(cmd->u.earn_pending.reason)) || point_rel_reserve(st) != 0) goto oom;
    }
    point_account_publish(st, fresh);

    if (due > 0) point_ledger(res, a, LEDGER_EXPIRE, -point_expire(a, now), NULL, now);
    if (!reject) {
        uint32_t i = a->npending;
        int64_t at = cmd->u.earn_pending.available_at;
        while (i > 0 && a->pending[i - 1].available_at > at) i--;
        memmove(&a->pending[i + 1], &a->pending[i], (size_t)(a->npending - i) * sizeof *a->pending);
        a->pending[i] = (point_pending){amount, expires_at, at, a->version + 1, 0, reason};
        a->npending++;
        point_rel_push(st, at, a);
    }
    a->version++;
    point_touch(st, a);
    point_lots_compact(a);
    point_fill(res, a);
    if (reject) result_reject(res, reject);
    return 0;
oom:
    free(reason);
    point_account_free(fresh);
    return -1;
}

/* AdjustPoints: an operator's correction, signed. Added points are a lot
 * without expiry; taken points come from the lots as a use takes them
 * (earliest expiry first) but for good: an adjustment is not cancelled, it
 * is corrected by another. Never below zero: INSUFFICIENT_BALANCE. */
static int point_cmd_adjust(point_state *st, point_account *a, const promo_cmd *cmd, int64_t now, promo_result *res) {
    int64_t amount = cmd->u.adjust.amount;
    int64_t due = point_due(a, now);
    int64_t after_due = a ? a->balance - due : 0;
    const char *reject = NULL;
    res->has_amount = true;
    res->amount = amount;
    if (amount == 0)
        reject = "INVALID_AMOUNT"; /* cmd_validate() refuses it */
    else if (amount > 0 && amount > INT64_MAX - after_due - point_pending_sum(a))
        reject = "BALANCE_OVERFLOW";
    else if (amount < 0 && after_due < -amount)
        reject = "INSUFFICIENT_BALANCE";
    if (reject && due == 0) {
        point_fill(res, a);
        result_reject(res, reject);
        return 0;
    }

    point_account *fresh; /* only an addition reaches here without an account */
    if (point_account_open(st, &a, cmd->u.adjust.user_id, &fresh) != 0) goto oom;
    if (!reject && amount > 0 && point_lots_reserve(a, (uint64_t)a->nlots + 1) != 0) goto oom;
    point_account_publish(st, fresh);

    if (due > 0) point_ledger(res, a, LEDGER_EXPIRE, -point_expire(a, now), NULL, now);
    if (!reject) {
        if (amount > 0) {
            a->balance += amount;
        } else {
            point_lot *lots = point_lots(a);
            int64_t need = -amount;
            for (uint32_t i = 0; i < a->nlots && need > 0; i++) {
                int64_t take = lots[i].left < need ? lots[i].left : need;
                lots[i].left -= take;
                need -= take;
            }
            a->balance += amount;
        }
        point_ledger(res, a, LEDGER_ADJUST, amount, NULL, now);
        ledger_entry *e = &res->ledger[res->n_ledger - 1];
        snprintf(e->reason, sizeof e->reason, "%s", cmd->u.adjust.reason);
        if (amount > 0) {
            point_lot lot = {.left = amount, .amount = amount, .expires_at = POINT_NO_EXPIRY, .earn_seq = e->seq};
            point_lot_insert(a, &lot);
        }
    }
    a->version++;
    point_touch(st, a);
    point_lots_compact(a);
    point_fill(res, a);
    if (reject) result_reject(res, reject);
    return 0;
oom:
    point_account_free(fresh);
    return -1;
}

static int point_apply(void *state, const promo_cmd *cmd, int64_t now, promo_result *res) {
    point_state *st = state;
    const char *user_id;
    switch (cmd->type) {
    case CMD_EARN_POINTS: user_id = cmd->u.earn.user_id; break;
    case CMD_USE_POINTS: user_id = cmd->u.use.user_id; break;
    case CMD_CANCEL_POINT_USE: user_id = cmd->u.cancel_use.user_id; break;
    case CMD_EARN_PENDING_POINTS: user_id = cmd->u.earn_pending.user_id; break;
    case CMD_ADJUST_POINTS: user_id = cmd->u.adjust.user_id; break;
    case CMD_RELEASE_POINTS: user_id = cmd->u.release.user_id; break;
    default: result_reject(res, "UNSUPPORTED_COMMAND"); return 0;
    }
    point_account *a = point_find(st, user_id, point_hash(user_id));
    snprintf(res->user_id, sizeof res->user_id, "%s", user_id);
    /* Pending points available by the command's time count for it, whatever
     * it is: released first (their EARN entry leads the ledger), as expired
     * lots are taken off first. */
    uint32_t k = point_releasable(a, now);
    if (k > 0) {
        if (point_dirty_reserve(st) != 0 || point_lots_reserve(a, (uint64_t)a->nlots + k) != 0) return -1;
        point_release(a, k, now, res);
        a->version++;
        point_touch(st, a);
    }
    switch (cmd->type) {
    case CMD_EARN_POINTS: return point_cmd_earn(st, a, cmd, now, res);
    case CMD_USE_POINTS: return point_cmd_use(st, a, cmd, now, res);
    case CMD_CANCEL_POINT_USE: return point_cmd_cancel(st, a, cmd, now, res);
    case CMD_EARN_PENDING_POINTS: return point_cmd_earn_pending(st, a, cmd, now, res);
    case CMD_ADJUST_POINTS: return point_cmd_adjust(st, a, cmd, now, res);
    default:
        /* ReleasePoints: the release above is all it does. */
        point_fill(res, a);
        if (!a)
            result_reject(res, "NOT_FOUND");
        else if (k == 0)
            result_reject(res, "NOT_DUE");
        return 0;
    }
}

/* ---- checkpoint ---------------------------------------------------------- */

/* Optional times are a flag byte then the value, as on the wire. */
static void point_put_expiry(bytes_w *w, int64_t expires_at) {
    bytes_put_u8(w, expires_at != POINT_NO_EXPIRY);
    if (expires_at != POINT_NO_EXPIRY) bytes_put_i64(w, expires_at);
}

static int64_t point_get_expiry(bytes_r *r) {
    uint8_t has = bytes_get_u8(r);
    if (has > 1) r->err = 1;
    return has == 1 ? bytes_get_i64(r) : POINT_NO_EXPIRY;
}

/* Version 2: balance, version, seq; lots (left, amount, expiry, earn_seq);
 * uses (order_id, cancelled, amount, pieces (earn_seq, expiry, taken));
 * pending lots. Lot refs are not stored: load() derives them from the uses. */
static void point_encode(bytes_w *w, const point_account *a) {
    bytes_put_u8(w, POINT_CKPT_V2);
    bytes_put_i64(w, a->balance);
    bytes_put_i64(w, a->version);
    bytes_put_i64(w, a->seq);
    const point_lot *lots = a->lotbits ? a->lots.many : &a->lots.one;
    bytes_put_i64(w, a->nlots);
    for (uint32_t i = 0; i < a->nlots; i++) {
        bytes_put_i64(w, lots[i].left);
        bytes_put_i64(w, lots[i].amount);
        point_put_expiry(w, lots[i].expires_at);
        bytes_put_i64(w, lots[i].earn_seq);
    }
    bytes_put_i64(w, a->nuses);
    for (uint32_t i = 0; i < point_usecap(a); i++) {
        const point_use *u = a->uses[i];
        if (!u) continue;
        bytes_put_str(w, u->order_id);
        bytes_put_u8(w, u->cancelled);
        bytes_put_i64(w, u->amount);
        bytes_put_i64(w, u->npieces);
        for (uint32_t j = 0; j < u->npieces; j++) {
            bytes_put_i64(w, u->pieces[j].earn_seq);
            point_put_expiry(w, u->pieces[j].expires_at);
            bytes_put_i64(w, u->pieces[j].taken);
        }
    }
    /* Version 2 from here on: pending lots (amount, expiry, available_at,
     * serial, reason). */
    bytes_put_i64(w, a->npending);
    for (uint32_t i = 0; i < a->npending; i++) {
        const point_pending *p = &a->pending[i];
        bytes_put_i64(w, p->amount);
        point_put_expiry(w, p->expires_at);
        bytes_put_i64(w, p->available_at);
        bytes_put_i64(w, p->serial);
        bytes_put_str(w, p->reason);
    }
}

static int point_emit(bytes_w *w, const point_account *a, domain_emit_fn emit, void *ctx) {
    char key[POINT_KEY_MAX];
    int klen = snprintf(key, sizeof key, "a:%s", a->user_id);
    bytes_w_reset(w);
    point_encode(w, a);
    if (w->err) return -1;
    return emit(ctx, key, (size_t)klen, w->data, w->len);
}

static int point_dump(void *state, int all, domain_emit_fn emit, void *ctx) {
    point_state *st = state;
    bytes_w w = {0};
    int rc = 0;
    if (all) {
        for (size_t i = 0; i < st->cap && rc == 0; i++)
            if (st->slots[i]) rc = point_emit(&w, st->slots[i], emit, ctx);
    } else {
        for (size_t i = 0; i < st->ndirty && rc == 0; i++) rc = point_emit(&w, st->dirty[i], emit, ctx);
    }
    free(w.data);
    if (rc != 0) return rc;
    for (size_t i = 0; i < st->ndirty; i++) st->dirty[i]->dirty = false;
    st->ndirty = 0;
    return 0;
}

/* Decodes and checks one account; NULL if the value is malformed (or on out
 * of memory). Caller frees with point_account_free(). */
static point_account *point_decode(point_state *st, const char *user_id, const uint8_t *val, size_t val_len) {
    bytes_r r;
    bytes_r_init(&r, val, val_len);
    point_account *a = point_account_new(st, user_id);
    if (!a) return NULL;
    uint8_t v = bytes_get_u8(&r);
    if (v != POINT_CKPT_V1 && v != POINT_CKPT_V2) goto bad;
    a->balance = bytes_get_i64(&r);
    a->version = bytes_get_i64(&r);
    a->seq = bytes_get_i64(&r);
    int64_t nlots = bytes_get_i64(&r);
    /* Counts are bounded by the bytes left (a lot takes 5 at least), so a
     * forged count cannot make us allocate much. */
    if (r.err || a->balance < 0 || a->version < 0 || a->seq < 0 || nlots < 0 || nlots > r.end - r.p) goto bad;
    if (point_lots_reserve(a, (uint64_t)nlots) != 0) goto bad;
    point_lot *lots = point_lots(a);
    int64_t sum = 0;
    for (int64_t i = 0; i < nlots; i++) {
        point_lot *l = &lots[i];
        l->left = bytes_get_i64(&r);
        l->amount = bytes_get_i64(&r);
        l->expires_at = point_get_expiry(&r);
        l->earn_seq = bytes_get_i64(&r);
        l->refs = 0; /* counted from the uses below */
        if (r.err || l->left < 0 || l->amount <= 0 || l->left > l->amount || l->earn_seq < 1 || l->earn_seq > a->seq ||
            l->left > INT64_MAX - sum)
            goto bad;
        if (i > 0 &&
            (l[-1].expires_at > l->expires_at || (l[-1].expires_at == l->expires_at && l[-1].earn_seq >= l->earn_seq)))
            goto bad;
        sum += l->left;
        a->nlots++;
    }
    if (sum != a->balance) goto bad;
    int64_t nuses = bytes_get_i64(&r);
    if (r.err || nuses < 0 || nuses > r.end - r.p) goto bad;
    for (int64_t i = 0; i < nuses; i++) {
        char order_id[PROMO_ID_MAX + 1];
        bytes_get_str(&r, order_id, sizeof order_id);
        uint8_t cancelled = bytes_get_u8(&r);
        int64_t amount = bytes_get_i64(&r);
        int64_t npieces = bytes_get_i64(&r);
        if (r.err || !promo_id_valid(order_id) || cancelled > 1 || amount <= 0 || npieces < 1 ||
            npieces > r.end - r.p || point_use_find(a, order_id))
            goto bad;
        point_use *u = calloc(1, sizeof *u + (size_t)npieces * sizeof u->pieces[0]);
        if (!u) goto bad;
        if (point_use_reserve(a) != 0) {
            free(u);
            goto bad;
        }
        snprintf(u->order_id, sizeof u->order_id, "%s", order_id);
        u->hash = point_hash(order_id);
        u->cancelled = cancelled;
        u->amount = amount;
        u->npieces = (uint32_t)npieces;
        point_use_add(a, u);
        int64_t taken = 0;
        for (int64_t j = 0; j < npieces; j++) {
            point_piece *p = &u->pieces[j];
            p->earn_seq = bytes_get_i64(&r);
            p->expires_at = point_get_expiry(&r);
            p->taken = bytes_get_i64(&r);
            if (r.err || p->taken <= 0 || p->taken > amount - taken) goto bad;
            taken += p->taken;
            if (cancelled) continue;
            /* An uncancelled use must be able to give back to its lots. */
            point_lot *lot = point_lot_find(a, p->earn_seq, p->expires_at);
            if (!lot || p->taken > lot->amount - lot->left) goto bad;
            lot->refs++;
        }
        if (taken != amount) goto bad;
    }
    /* Version 1 (before turn 2) ends here: no pending points. */
    int64_t npending = v == POINT_CKPT_V2 ? bytes_get_i64(&r) : 0;
    if (r.err || npending < 0 || npending > r.end - r.p) goto bad;
    if (npending && !(a->pending = calloc((size_t)npending, sizeof *a->pending))) goto bad;
    int64_t pending_sum = 0;
    for (int64_t i = 0; i < npending; i++) {
        point_pending *p = &a->pending[i];
        char reason[PROMO_TEXT_MAX + 1];
        p->amount = bytes_get_i64(&r);
        p->expires_at = point_get_expiry(&r);
        p->available_at = bytes_get_i64(&r);
        p->serial = bytes_get_i64(&r);
        bytes_get_str(&r, reason, sizeof reason);
        if (r.err || p->amount <= 0 || p->amount > INT64_MAX - a->balance - pending_sum || p->available_at < 0 ||
            p->expires_at <= p->available_at || p->serial < 1 || p->serial > a->version || !reason[0] ||
            (i > 0 && p[-1].available_at > p->available_at) || !(p->reason = strdup(reason)))
            goto bad;
        pending_sum += p->amount;
        a->npending++;
    }
    if (r.p != r.end) goto bad;
    return a;
bad:
    point_account_free(a);
    return NULL;
}

static int point_load(void *state, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    point_state *st = state;
    char user_id[PROMO_ID_MAX + 1];
    if (!key || key_len < 3 || key_len - 2 > PROMO_ID_MAX || memcmp(key, "a:", 2) != 0) return -1;
    memcpy(user_id, key + 2, key_len - 2);
    user_id[key_len - 2] = '\0';
    if (!promo_id_valid(user_id) || (!val && val_len)) return -1;
    point_account *a = point_decode(st, user_id, val, val_len);
    if (!a) return -1;
    /* Room in the release heap for its pending lots first (entries the
     * replaced value leaves behind go stale, and due() drops them). */
    if (point_rel_reserve_n(st, a->npending) != 0) {
        point_account_free(a);
        return -1;
    }
    point_account **slot = point_slot(st->slots, st->cap, a->user_id, a->hash);
    if (*slot) {
        /* A newer value of a loaded account (incremental checkpoints layered
         * on a full one): swap the contents in place, so pointers held in the
         * dirty list and the release heap stay valid. */
        point_account *old = *slot;
        bool dirty = old->dirty;
        point_account tmp = *old;
        *old = *a;
        old->dirty = dirty;
        *a = tmp;
        point_account_free(a);
        for (uint32_t i = 0; i < old->npending; i++) point_rel_push(st, old->pending[i].available_at, old);
        return 0;
    }
    if (point_reserve(st) != 0) {
        point_account_free(a);
        return -1;
    }
    *point_slot(st->slots, st->cap, a->user_id, a->hash) = a;
    st->n++;
    for (uint32_t i = 0; i < a->npending; i++) point_rel_push(st, a->pending[i].available_at, a);
    return 0;
}

/* ---- pending points that time has made available ---------------------------- */

typedef struct point_due_ctx {
    int64_t now;
    domain_cmd_fn emit;
    void *ctx;
    size_t made;
    int rc;
} point_due_ctx;

static void point_due_walk(point_state *st, size_t i, point_due_ctx *d) {
    while (i < st->nrel && d->rc == 0 && d->made < POINT_TICKS_MAX) {
        const point_release_entry *e = &st->rel[i];
        if (e->at > d->now) return;
        point_account *a = e->a;
        point_pending *p = a->npending ? &a->pending[0] : NULL;
        if (p && p->available_at <= d->now && (p->tick_at == 0 || d->now - p->tick_at >= POINT_TICK_RETRY_MS)) {
            promo_cmd cmd;
            memset(&cmd, 0, sizeof cmd);
            cmd.type = CMD_RELEASE_POINTS;
            cmd_release_points_id(a->user_id, p->serial, cmd.request_id);
            cmd.submitted_at = d->now > p->available_at ? d->now : p->available_at;
            snprintf(cmd.u.release.user_id, sizeof cmd.u.release.user_id, "%s", a->user_id);
            if ((d->rc = d->emit(d->ctx, &cmd)) != 0) return;
            p->tick_at = d->now;
            d->made++;
        }
        point_due_walk(st, 2 * i + 1, d);
        i = 2 * i + 2;
    }
}

/* The ReleasePoints of every user whose first pending lot is available by
 * now (the processor's wall clock), once per POINT_TICK_RETRY_MS each, so
 * the read models show the points without waiting for the user's next
 * command. As for holds (timesale.c), the log decides when they apply. */
static int point_due_cmds(void *state, int64_t now, domain_cmd_fn emit, void *ctx) {
    point_state *st = state;
    /* Entries of lots released since are stale: drop those on top. */
    while (st->nrel) {
        const point_release_entry *e = &st->rel[0];
        if (e->a->npending && e->a->pending[0].available_at <= e->at) break;
        point_rel_pop(st);
    }
    point_due_ctx d = {now, emit, ctx, 0, 0};
    point_due_walk(st, 0, &d);
    return d.rc;
}

/* ---- lifecycle ----------------------------------------------------------- */

static void *point_state_new(void) {
    point_state *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->cap = 16;
    if (!(st->slots = calloc(st->cap, sizeof *st->slots))) {
        free(st);
        return NULL;
    }
    return st;
}

static void point_state_destroy(void *state) {
    point_state *st = state;
    if (!st) return;
    for (size_t i = 0; i < st->cap; i++) point_account_free(st->slots[i]);
    arena_free_all(&st->arena);
    free(st->slots);
    free(st->dirty);
    free(st->rel);
    free(st);
}

static size_t point_entries(void *state) {
    return ((point_state *)state)->n;
}

const domain_ops point_ops = {
    .domain = DOMAIN_POINT,
    .name = "point",
    .topic = TOPIC_POINT_CMD,
    .schema_id = 2,
    .state_new = point_state_new,
    .state_destroy = point_state_destroy,
    .apply = point_apply,
    .load = point_load,
    .dump = point_dump,
    .entries = point_entries,
    .due = point_due_cmds,
};
