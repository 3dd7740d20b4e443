/* coupon.c — the coupon domain's pure state machine (DESIGN.md §2, Coupon).
 *
 * One state holds the coupon policies of one partition of promo.coupon.cmd
 * (key: policy_id) and every coupon issued from them. apply() decides each
 * command from the state and the command alone, with the command's
 * submitted_at as "now": no Kafka, Redis, clock or logging here, so a replayed
 * partition gives byte-identical results. The runtime dedupes request ids
 * before apply() and checkpoints through dump()/load().
 *
 * Memory and speed are set by the stampede case, a million users taking one
 * hot policy's coupons: a policy keeps its coupons in a dense array indexed
 * by serial - 1 (24 bytes each), an owner is a pointer to a per-policy user
 * record holding the id and the user's issue count (carved from a per-policy
 * arena, found through an open-addressed table of pointers: about 30 bytes a
 * user, where a uthash record took 90), a
 * redemption is allocated only while a coupon is redeemed, and changed
 * entries are remembered in dirty lists (guarded by a flag or a bit so each
 * is listed once), so dump() never scans the state. Issuing allocates only
 * when a user is new or an array has to grow.
 *
 * Campaign controls (DESIGN.md §4a): a policy is ACTIVE, PAUSED or CLOSED
 * (issues are refused while it is not ACTIVE; redemptions go on), and a
 * PATCH may change total_quantity (never below issued), per_user_limit,
 * issue_ends_at and valid_until.
 *
 * Checkpoint entries (bytes.h encoding, version byte first):
 *   "p:<policy_id>"           version 2: definition, issued, redeemed,
 *                             version, state, cancelled redemptions, eras
 *                             (version 1, written before turn 2, ends after
 *                             version and loads as ACTIVE, none cancelled)
 *   "c:<policy_id>:<serial>"  version 1: owner, status, issued_at,
 *                             expires_at, order_id, discount
 * Per-user issue counts are not stored: load() derives them from the
 * coupons, and so the discount total of the redeemed ones. Nor is a coupon's
 * expiry held in memory: it is a function of the policy's validity when the
 * coupon was issued and the issue time, recomputed when needed and checked
 * on load(). A PATCH of valid_until applies to coupons issued after it: the
 * validity it replaced is kept as an era covering the serials issued under
 * it (a policy has a few eras at most, never a field per coupon).
 * load() takes entries in any order, and repeats: a coupon whose policy is not
 * loaded yet, or whose serial is beyond the loaded policy's issued count (a
 * newer delta arriving before its policy entry), waits in the policy's pending
 * list until a policy entry covers it. Coupons are placed in the dense array
 * only up to the policy's issued count, so a corrupt serial can never make
 * the array grow beyond what the policy says was issued.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "bytes.h"
#include "domain.h"
#include "topics.h"
#include "hash.h"

/* uthash must not exit() when it runs out of memory: a failed add leaves the
 * element out of the table with hh.tbl NULL, and we report -1. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#define COUPON_ENTRY_VERSION 1  /* coupon entries, and policy entries before turn 2 */
#define COUPON_POLICY_VERSION 2 /* policy entries: v1 and state, cancelled, eras */
#define COUPON_ERAS_MAX 64      /* valid_until changes that outlive coupons; more is TOO_MANY_CHANGES */
#define COUPON_DAY_MS 86400000LL
/* Dirty coupons are listed by 32-bit index, and per-user counts are int32. */
#define COUPON_SERIAL_MAX INT32_MAX
/* "c:" + coupon id: the longest key either entry kind has. */
#define COUPON_KEY_MAX (2 + PROMO_COUPON_ID_MAX)

/* A user of one policy, in that policy's user arena: allocated once, never
 * moved or freed before the policy is cleared, so coupons point at it. */
typedef struct coupon_user {
    int32_t issued; /* coupons of this policy issued to the user, ever */
    char id[];
} coupon_user;

/* Present only while a coupon is redeemed. */
typedef struct coupon_redemption {
    int64_t discount;
    char order_id[];
} coupon_redemption;

typedef struct coupon {
    coupon_user *owner;            /* NULL: no coupon with this serial (yet) */
    coupon_redemption *redemption; /* NULL: ISSUED; else REDEEMED */
    int64_t issued_at;
} coupon;

/* A restored coupon waiting for its policy entry; its expiry is kept until
 * the policy can confirm it. */
typedef struct coupon_pending {
    coupon c;
    int64_t serial;
    int64_t expires_at;
} coupon_pending;

/* The validity coupons up to a serial were issued under, before a PATCH
 * changed valid_until: a coupon keeps the expiry it was issued with. */
typedef struct coupon_era {
    int64_t upto; /* the last serial issued under it */
    bool has_valid_until;
    int64_t valid_until;
} coupon_era;

typedef struct coupon_policy {
    UT_hash_handle hh; /* key: def.policy_id */
    coupon_policy_def def;
    bool defined;  /* false while only coupons of the policy were loaded */
    bool listed;   /* in the state's dirty list */
    uint8_t state; /* campaign_state */
    int64_t issued, redeemed, version;
    int64_t cancelled;      /* redemptions cancelled, ever */
    int64_t discount_total; /* of the placed coupons redeemed now; derived, never stored */
    coupon_era *eras;       /* oldest first, upto increasing */
    size_t n_eras;
    coupon *coupons;  /* coupons[serial - 1] */
    size_t n_coupons; /* highest serial placed */
    size_t n_placed;  /* slots with an owner */
    size_t cap_coupons;
    uint64_t *dirty_bits; /* one bit per slot of coupons */
    uint32_t *dirty_idx;  /* indexes of dirty coupons, each once */
    size_t n_dirty, cap_dirty;
    coupon_user **users; /* open addressing, linear probing; NULL = empty */
    size_t users_cap, n_users;
    arena *arena; /* its users */
    coupon_pending *pending;
    size_t n_pending, cap_pending;
} coupon_policy;

typedef struct coupon_state {
    coupon_policy *policies;
    coupon_policy *last; /* the policy of the previous command: one hot policy is the stampede case */
    coupon_policy **dirty;
    size_t n_dirty, cap_dirty;
} coupon_state;

/* Grows an array so it holds at least need elements, doubling. Returns the
 * (possibly moved) array, or NULL on out of memory with arr untouched. */
static void *coupon_grow(void *arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return arr;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 4 / elem) return NULL;
        c *= 2;
    }
    void *p = realloc(arr, c * elem);
    if (p) *cap = c;
    return p;
}

/* Makes slots [0, n) of the coupon array exist (zeroed when new). */
static int coupon_policy_reserve(coupon_policy *p, size_t n) {
    if (n <= p->cap_coupons) return 0;
    size_t cap = p->cap_coupons;
    coupon *c = coupon_grow(p->coupons, &cap, n, sizeof *c);
    if (!c) return -1;
    p->coupons = c;
    memset(c + p->cap_coupons, 0, (cap - p->cap_coupons) * sizeof *c);
    size_t old_words = (p->cap_coupons + 63) / 64, words = (cap + 63) / 64;
    uint64_t *bits = realloc(p->dirty_bits, words * sizeof *bits);
    if (!bits) return -1; /* the larger coupon array stays; cap_coupons still tells the truth */
    memset(bits + old_words, 0, (words - old_words) * sizeof *bits);
    p->dirty_bits = bits;
    p->cap_coupons = cap;
    return 0;
}

/* Reserves room to mark p and one more of its coupons dirty, so that a
 * command can allocate everything before it changes anything. */
static int coupon_reserve_dirty(coupon_state *s, coupon_policy *p) {
    void *d = coupon_grow(s->dirty, &s->cap_dirty, s->n_dirty + 1, sizeof *s->dirty);
    if (!d) return -1;
    s->dirty = d;
    d = coupon_grow(p->dirty_idx, &p->cap_dirty, p->n_dirty + 1, sizeof *p->dirty_idx);
    if (!d) return -1;
    p->dirty_idx = d;
    return 0;
}

/* Needs coupon_reserve_dirty() first. idx is serial - 1. */
static void coupon_mark_dirty(coupon_state *s, coupon_policy *p, size_t idx) {
    if (!p->listed) {
        p->listed = true;
        s->dirty[s->n_dirty++] = p;
    }
    if (idx != SIZE_MAX && !(p->dirty_bits[idx / 64] & (1ULL << (idx % 64)))) {
        p->dirty_bits[idx / 64] |= 1ULL << (idx % 64);
        p->dirty_idx[p->n_dirty++] = (uint32_t)idx;
    }
}

/* A user id and its hash, computed once per command: a new user is looked
 * up and then added with the same hash. */
typedef struct coupon_user_key {
    const char *id;
    size_t len;
    uint64_t hash;
} coupon_user_key;

static uint64_t coupon_user_hash(const char *id, size_t len) {
    return hash_bytes(HASH_FNV_BASIS, id, len);
}

static coupon_user_key coupon_user_key_of(const char *id) {
    coupon_user_key k = {id, strlen(id), 0};
    k.hash = coupon_user_hash(id, k.len);
    return k;
}

/* The slot of k's user, or the empty slot where it would go. The table's
 * size need not be a power of two (it grows by half), so the hash is
 * mapped onto it by multiplication. */
static size_t coupon_user_slot(coupon_user **tab, size_t cap, const coupon_user_key *k) {
    for (size_t i = (size_t)(((unsigned __int128)k->hash * cap) >> 64);; i = i + 1 == cap ? 0 : i + 1) {
        coupon_user *u = tab[i];
        if (!u || (strncmp(u->id, k->id, k->len) == 0 && u->id[k->len] == '\0')) return i;
    }
}

static coupon_user *coupon_user_find(coupon_policy *p, const coupon_user_key *k) {
    return p->users_cap ? p->users[coupon_user_slot(p->users, p->users_cap, k)] : NULL;
}

/* Room for one more user at a load of at most 3/4. */
static int coupon_user_reserve(coupon_policy *p) {
    if ((p->n_users + 1) * 4 <= p->users_cap * 3) return 0;
    size_t cap = p->users_cap ? p->users_cap + p->users_cap / 2 : 16;
    if (cap > SIZE_MAX / 2 / sizeof(coupon_user *)) return -1;
    coupon_user **tab = calloc(cap, sizeof *tab);
    if (!tab) return -1;
    for (size_t i = 0; i < p->users_cap; i++) {
        coupon_user *u = p->users[i];
        if (!u) continue;
        coupon_user_key k = coupon_user_key_of(u->id);
        tab[coupon_user_slot(tab, cap, &k)] = u;
    }
    free(p->users);
    p->users = tab;
    p->users_cap = cap;
    return 0;
}

/* Adds a user with no coupons; NULL on out of memory (nothing changed). */
static coupon_user *coupon_user_add(coupon_policy *p, const coupon_user_key *k) {
    if (coupon_user_reserve(p) != 0) return NULL;
    coupon_user *u = arena_alloc(&p->arena, (sizeof *u + k->len + 1 + 3) & ~(size_t)3);
    if (!u) return NULL;
    u->issued = 0;
    memcpy(u->id, k->id, k->len + 1);
    p->users[coupon_user_slot(p->users, p->users_cap, k)] = u;
    p->n_users++;
    return u;
}

static coupon_user *coupon_user_get(coupon_policy *p, const char *id) {
    coupon_user_key k = coupon_user_key_of(id);
    coupon_user *u = coupon_user_find(p, &k);
    return u ? u : coupon_user_add(p, &k);
}

static coupon_redemption *coupon_redemption_new(const char *order_id, int64_t discount) {
    size_t len = strlen(order_id);
    coupon_redemption *r = malloc(sizeof *r + len + 1);
    if (!r) return NULL;
    r->discount = discount;
    memcpy(r->order_id, order_id, len + 1);
    return r;
}

/* Frees everything a policy holds and leaves it empty (but keeps its id and
 * its place in the state's table). */
static void coupon_policy_clear(coupon_policy *p) {
    for (size_t i = 0; i < p->n_coupons; i++) free(p->coupons[i].redemption);
    for (size_t i = 0; i < p->n_pending; i++) free(p->pending[i].c.redemption);
    free(p->coupons);
    free(p->dirty_bits);
    free(p->dirty_idx);
    free(p->pending);
    free(p->users);
    free(p->eras);
    p->eras = NULL;
    p->n_eras = 0;
    arena_free_all(&p->arena);
    p->users = NULL;
    p->users_cap = p->n_users = 0;
    p->coupons = NULL;
    p->dirty_bits = NULL;
    p->dirty_idx = NULL;
    p->pending = NULL;
    p->n_coupons = p->n_placed = p->cap_coupons = p->n_dirty = p->cap_dirty = 0;
    p->n_pending = p->cap_pending = 0;
    p->issued = p->redeemed = p->version = 0;
    p->cancelled = p->discount_total = 0;
    p->state = CAMPAIGN_ACTIVE;
    p->defined = false;
}

/* The policy named id, defined or not yet; NULL if absent. */
static coupon_policy *coupon_policy_find(coupon_state *s, const char *id) {
    if (s->last && strcmp(s->last->def.policy_id, id) == 0) return s->last;
    coupon_policy *p;
    HASH_FIND_STR(s->policies, id, p);
    if (p) s->last = p;
    return p;
}

/* Finds or adds the (possibly undefined) policy named id; NULL on out of memory. */
static coupon_policy *coupon_policy_get(coupon_state *s, const char *id) {
    coupon_policy *p = coupon_policy_find(s, id);
    if (p) return p;
    p = calloc(1, sizeof *p);
    if (!p) return NULL;
    strcpy(p->def.policy_id, id);
    HASH_ADD_STR(s->policies, def.policy_id, p);
    if (!p->hh.tbl) {
        free(p);
        return NULL;
    }
    return p;
}

/* Copies a definition field by field into a zeroed struct, so that padding
 * and the bytes after each string's NUL are zero: results built from it then
 * compare equal with memcmp whether the policy was created or restored. */
static void coupon_def_copy(coupon_policy_def *dst, const coupon_policy_def *src) {
    memset(dst, 0, sizeof *dst);
    strcpy(dst->policy_id, src->policy_id);
    strcpy(dst->name, src->name);
    dst->discount_type = src->discount_type;
    dst->discount_value = src->discount_value;
    dst->has_max_discount = src->has_max_discount;
    dst->max_discount = src->has_max_discount ? src->max_discount : 0;
    dst->min_order_amount = src->min_order_amount;
    dst->total_quantity = src->total_quantity;
    dst->per_user_limit = src->per_user_limit;
    dst->issue_starts_at = src->issue_starts_at;
    dst->issue_ends_at = src->issue_ends_at;
    dst->has_valid_until = src->has_valid_until;
    dst->valid_until = src->has_valid_until ? src->valid_until : 0;
    dst->has_valid_days = src->has_valid_days;
    dst->valid_days = src->has_valid_days ? src->valid_days : 0;
}

/* valid_until, or now + valid_days, the earlier when both are set. */
static int64_t coupon_expiry(const coupon_policy_def *d, int64_t now) {
    int64_t e = INT64_MAX;
    if (d->has_valid_days && __builtin_add_overflow(now, (int64_t)d->valid_days * COUPON_DAY_MS, &e)) e = INT64_MAX;
    if (d->has_valid_until && d->valid_until < e) e = d->valid_until;
    return e;
}

/* The expiry of the coupon with this serial issued at issued_at: under the
 * validity of its era, the current definition's past the last era. */
static int64_t coupon_expiry_of(const coupon_policy *p, int64_t serial, int64_t issued_at) {
    for (size_t i = 0; i < p->n_eras; i++) {
        if (serial > p->eras[i].upto) continue;
        coupon_policy_def d = p->def;
        d.has_valid_until = p->eras[i].has_valid_until;
        d.valid_until = p->eras[i].valid_until;
        return coupon_expiry(&d, issued_at);
    }
    return coupon_expiry(&p->def, issued_at);
}


/* Writes "<policy_id>:<serial>" into out (PROMO_COUPON_ID_MAX + 1 bytes):
 * by hand, because it runs once per issued coupon. */
static void coupon_id_format(char *out, const char *policy_id, int64_t serial) {
    size_t n = strlen(policy_id);
    memcpy(out, policy_id, n);
    out[n++] = ':';
    char digits[20];
    int k = 0;
    uint64_t v = (uint64_t)serial;
    do {
        digits[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (k) out[n++] = digits[--k];
    out[n] = '\0';
}

/* What every result on an existing policy carries: its counts and state. */
static void coupon_result_policy(promo_result *res, const coupon_policy *p) {
    res->has_issued = true;
    res->issued = p->issued;
    res->has_remaining = true;
    /* Never negative: a PATCH keeps total_quantity at or above issued. */
    res->remaining = p->def.total_quantity > p->issued ? p->def.total_quantity - p->issued : 0;
    res->version = p->version;
    strcpy(res->state, campaign_state_name((campaign_state)p->state));
    res->has_redeemed = true;
    res->redeemed = p->redeemed;
    res->has_cancelled_redemptions = true;
    res->cancelled_redemptions = p->cancelled;
    res->has_discount_total = true;
    res->discount_total = p->discount_total;
}

static void coupon_result_coupon(promo_result *res, const coupon_policy *p, const coupon *c, int64_t serial) {
    coupon_id_format(res->coupon_id, p->def.policy_id, serial);
    strcpy(res->user_id, c->owner->id);
    strcpy(res->coupon_status, c->redemption ? "REDEEMED" : "ISSUED");
    res->has_issued_at = true;
    res->issued_at = c->issued_at;
    res->has_expires_at = true;
    res->expires_at = coupon_expiry_of(p, serial, c->issued_at);
}

/* The defined policy named id, for apply(); NULL if there is none. */
static coupon_policy *coupon_policy_live(coupon_state *s, const char *id) {
    coupon_policy *p = coupon_policy_find(s, id);
    return p && p->defined ? p : NULL;
}

static int coupon_create(coupon_state *s, const promo_cmd *cmd, promo_result *res) {
    const coupon_policy_def *def = &cmd->u.create_policy;
    strcpy(res->policy_id, def->policy_id);
    coupon_policy *p = coupon_policy_find(s, def->policy_id);
    if (p && p->defined) {
        coupon_result_policy(res, p);
        result_reject(res, "ALREADY_EXISTS");
        return 0;
    }
    if (!p && !(p = coupon_policy_get(s, def->policy_id))) return -1;
    /* An undefined policy holds only coupons restored without their policy
     * entry, i.e. a damaged checkpoint: the new policy starts clean. */
    coupon_policy_clear(p);
    if (coupon_reserve_dirty(s, p) != 0) return -1;
    coupon_def_copy(&p->def, def);
    p->defined = true;
    p->version = 1;
    coupon_mark_dirty(s, p, SIZE_MAX);

    res->has_policy = true;
    res->policy = p->def;
    coupon_result_policy(res, p);
    return 0;
}

/* Drops pending coupons that a newly issued serial supersedes (only a damaged
 * checkpoint leaves pending coupons at or below the issued count). */
static void coupon_pending_drop_upto(coupon_policy *p, int64_t serial) {
    size_t k = 0;
    for (size_t i = 0; i < p->n_pending; i++) {
        if (p->pending[i].serial <= serial)
            free(p->pending[i].c.redemption);
        else
            p->pending[k++] = p->pending[i];
    }
    p->n_pending = k;
}

static int coupon_issue(coupon_state *s, const promo_cmd *cmd, int64_t now, promo_result *res) {
    const char *uid = cmd->u.issue.user_id;
    strcpy(res->policy_id, cmd->u.issue.policy_id);
    coupon_policy *p = coupon_policy_live(s, cmd->u.issue.policy_id);
    if (!p) {
        result_reject(res, "NOT_FOUND");
        return 0;
    }
    coupon_result_policy(res, p);
    coupon_user_key uk = coupon_user_key_of(uid);
    coupon_user *u = coupon_user_find(p, &uk);
    const char *why = NULL;
    /* The campaign's state first: a paused or closed policy says so, not
     * that it is out of coupons. */
    if (p->state == CAMPAIGN_PAUSED)
        why = "PAUSED";
    else if (p->state == CAMPAIGN_CLOSED)
        why = "CLOSED";
    else if (now < p->def.issue_starts_at)
        why = "NOT_STARTED";
    else if (now >= p->def.issue_ends_at)
        why = "ENDED";
    else if (u && u->issued >= p->def.per_user_limit)
        why = "LIMIT_EXCEEDED";
    else if (p->issued >= p->def.total_quantity)
        why = "SOLD_OUT";
    if (why) {
        result_reject(res, why);
        return 0;
    }

    /* Allocate first, so running out of memory changes nothing. */
    if (p->issued >= COUPON_SERIAL_MAX) return -1;
    size_t idx = (size_t)p->issued;
    if (coupon_policy_reserve(p, idx + 1) != 0 || coupon_reserve_dirty(s, p) != 0) return -1;
    if (!u && !(u = coupon_user_add(p, &uk))) return -1;

    if (p->n_pending) coupon_pending_drop_upto(p, p->issued + 1);
    coupon *c = &p->coupons[idx];
    c->owner = u;
    c->redemption = NULL;
    c->issued_at = now;
    u->issued++;
    p->issued++;
    p->n_placed++;
    p->n_coupons = idx + 1;
    p->version++;
    coupon_mark_dirty(s, p, idx);

    coupon_result_policy(res, p);
    coupon_result_coupon(res, p, c, p->issued);
    return 0;
}

/* The coupon named by coupon_id and its policy, or NULL (NOT_FOUND). Fills
 * the result's policy fields when the policy exists. */
static coupon *coupon_lookup(coupon_state *s, const char *coupon_id, promo_result *res, coupon_policy **pp,
                             int64_t *serial) {
    char pid[PROMO_ID_MAX + 1];
    if (coupon_id_parse(coupon_id, pid, sizeof pid, serial) != 0) return NULL;
    strcpy(res->policy_id, pid);
    coupon_policy *p = coupon_policy_live(s, pid);
    if (!p) return NULL;
    coupon_result_policy(res, p);
    *pp = p;
    if (*serial > p->issued || (uint64_t)*serial > p->n_coupons) return NULL;
    coupon *c = &p->coupons[*serial - 1];
    return c->owner ? c : NULL;
}

static int coupon_redeem(coupon_state *s, const promo_cmd *cmd, int64_t now, promo_result *res) {
    coupon_policy *p = NULL;
    int64_t serial;
    coupon *c = coupon_lookup(s, cmd->u.redeem.coupon_id, res, &p, &serial);
    const char *why = NULL;
    if (!c)
        why = "NOT_FOUND";
    else if (strcmp(c->owner->id, cmd->u.redeem.user_id) != 0)
        why = "NOT_OWNER";
    else if (c->redemption)
        why = "ALREADY_REDEEMED";
    else if (now >= coupon_expiry_of(p, serial, c->issued_at))
        why = "EXPIRED";
    else if (cmd->u.redeem.order_amount < p->def.min_order_amount)
        why = "MIN_ORDER_NOT_MET";
    if (why) {
        result_reject(res, why);
        return 0;
    }

    int64_t discount = coupon_policy_discount(&p->def, cmd->u.redeem.order_amount);
    if (coupon_reserve_dirty(s, p) != 0) return -1;
    if (!(c->redemption = coupon_redemption_new(cmd->u.redeem.order_id, discount))) return -1;
    p->redeemed++;
    p->discount_total += discount;
    p->version++;
    coupon_mark_dirty(s, p, (size_t)(serial - 1));

    coupon_result_policy(res, p);
    coupon_result_coupon(res, p, c, serial);
    strcpy(res->order_id, cmd->u.redeem.order_id);
    res->has_order_amount = true;
    res->order_amount = cmd->u.redeem.order_amount;
    res->has_discount = true;
    res->discount = discount;
    return 0;
}

static int coupon_cancel(coupon_state *s, const promo_cmd *cmd, promo_result *res) {
    coupon_policy *p = NULL;
    int64_t serial;
    coupon *c = coupon_lookup(s, cmd->u.cancel_redemption.coupon_id, res, &p, &serial);
    const char *why = NULL;
    if (!c)
        why = "NOT_FOUND";
    else if (!c->redemption)
        why = "NOT_REDEEMED";
    else if (strcmp(c->redemption->order_id, cmd->u.cancel_redemption.order_id) != 0)
        why = "ORDER_MISMATCH";
    if (why) {
        result_reject(res, why);
        return 0;
    }

    if (coupon_reserve_dirty(s, p) != 0) return -1;
    /* A cancellation restores the coupon as it was before the redemption:
     * ISSUED, with its expiry unchanged. A coupon cancelled after it expired
     * is therefore ISSUED but stays unusable (a redeem answers EXPIRED), as
     * the customer would have had it had they never used it. */
    int64_t discount = c->redemption->discount;
    free(c->redemption);
    c->redemption = NULL;
    p->redeemed--;
    p->cancelled++;
    p->discount_total -= discount;
    p->version++;
    coupon_mark_dirty(s, p, (size_t)(serial - 1));

    coupon_result_policy(res, p);
    coupon_result_coupon(res, p, c, serial);
    strcpy(res->order_id, cmd->u.cancel_redemption.order_id);
    res->has_discount = true;
    res->discount = discount;
    return 0;
}

/* Pause, resume and close (DESIGN.md §4a). A control that changes nothing
 * (pausing a paused policy, closing a closed one) succeeds without a new
 * version, so an operator may simply retry; CLOSED is final. Every control
 * answers with the policy's definition, like a create. */
static int coupon_control(coupon_state *s, const promo_cmd *cmd, promo_result *res) {
    strcpy(res->policy_id, cmd->u.policy_control.policy_id);
    coupon_policy *p = coupon_policy_live(s, cmd->u.policy_control.policy_id);
    if (!p) {
        result_reject(res, "NOT_FOUND");
        return 0;
    }
    coupon_result_policy(res, p);
    uint8_t to = cmd->type == CMD_PAUSE_COUPON_POLICY    ? CAMPAIGN_PAUSED
                 : cmd->type == CMD_RESUME_COUPON_POLICY ? CAMPAIGN_ACTIVE
                                                         : CAMPAIGN_CLOSED;
    if (p->state == CAMPAIGN_CLOSED && to != CAMPAIGN_CLOSED) {
        result_reject(res, "CLOSED");
        return 0;
    }
    if (p->state != to) {
        if (coupon_reserve_dirty(s, p) != 0) return -1;
        p->state = to;
        p->version++;
        coupon_mark_dirty(s, p, SIZE_MAX);
    }
    res->has_policy = true;
    res->policy = p->def;
    coupon_result_policy(res, p);
    return 0;
}

/* PATCH: total_quantity, per_user_limit, issue_ends_at, valid_until. Never
 * below what exists (BELOW_ISSUED); the windows must stay well formed
 * against the stored definition (INVALID_WINDOW: cmd_validate() checked
 * what the command alone says). A lower per_user_limit leaves users above it
 * with their coupons, and gives them no more. A new valid_until applies to
 * coupons issued from now on: the ones issued before keep the expiry they
 * were issued with, remembered as an era (COUPON_ERAS_MAX of them). */
static int coupon_update(coupon_state *s, const promo_cmd *cmd, promo_result *res) {
    const coupon_policy_update *u = &cmd->u.update_policy;
    strcpy(res->policy_id, u->policy_id);
    coupon_policy *p = coupon_policy_live(s, u->policy_id);
    if (!p) {
        result_reject(res, "NOT_FOUND");
        return 0;
    }
    coupon_result_policy(res, p);
    coupon_policy_def d = p->def;
    if (u->has_total_quantity) d.total_quantity = u->total_quantity;
    if (u->has_per_user_limit) d.per_user_limit = u->per_user_limit;
    if (u->has_issue_ends_at) d.issue_ends_at = u->issue_ends_at;
    if (u->has_valid_until) {
        d.has_valid_until = true;
        d.valid_until = u->valid_until;
    }
    bool validity_changed =
        d.has_valid_until != p->def.has_valid_until || (d.has_valid_until && d.valid_until != p->def.valid_until);
    /* Coupons issued under the validity being replaced need an era. */
    bool new_era = validity_changed && p->issued > (p->n_eras ? p->eras[p->n_eras - 1].upto : 0);
    const char *why = NULL;
    if (p->state == CAMPAIGN_CLOSED)
        why = "CLOSED";
    else if (d.total_quantity < p->issued)
        why = "BELOW_ISSUED";
    else if (d.issue_ends_at <= d.issue_starts_at || (d.has_valid_until && d.valid_until < d.issue_ends_at))
        why = "INVALID_WINDOW";
    else if (new_era && p->n_eras >= COUPON_ERAS_MAX)
        why = "TOO_MANY_CHANGES";
    if (why) {
        result_reject(res, why);
        return 0;
    }

    if (coupon_reserve_dirty(s, p) != 0) return -1;
    if (new_era) {
        coupon_era *e = realloc(p->eras, (p->n_eras + 1) * sizeof *e);
        if (!e) return -1;
        p->eras = e;
        e[p->n_eras++] = (coupon_era){p->issued, p->def.has_valid_until, p->def.valid_until};
    }
    coupon_def_copy(&p->def, &d);
    p->version++;
    coupon_mark_dirty(s, p, SIZE_MAX);
    res->has_policy = true;
    res->policy = p->def;
    coupon_result_policy(res, p);
    return 0;
}

static int coupon_apply(void *state, const promo_cmd *cmd, int64_t now, promo_result *res) {
    coupon_state *s = state;
    switch (cmd->type) {
    case CMD_CREATE_COUPON_POLICY: return coupon_create(s, cmd, res);
    case CMD_ISSUE_COUPON: return coupon_issue(s, cmd, now, res);
    case CMD_REDEEM_COUPON: return coupon_redeem(s, cmd, now, res);
    case CMD_CANCEL_REDEMPTION: return coupon_cancel(s, cmd, res);
    case CMD_PAUSE_COUPON_POLICY:
    case CMD_RESUME_COUPON_POLICY:
    case CMD_CLOSE_COUPON_POLICY: return coupon_control(s, cmd, res);
    case CMD_UPDATE_COUPON_POLICY: return coupon_update(s, cmd, res);
    default:
        /* The runtime routes by topic, so this is another domain's command
         * published to the coupon topic: a result, not a crash. */
        result_reject(res, "UNSUPPORTED_COMMAND");
        return 0;
    }
}

/* ---- checkpoint entries ---- */

static void coupon_encode_policy(bytes_w *w, const coupon_policy *p) {
    const coupon_policy_def *d = &p->def;
    bytes_w_reset(w);
    bytes_put_u8(w, COUPON_POLICY_VERSION);
    bytes_put_str(w, d->name);
    bytes_put_u8(w, (uint8_t)d->discount_type);
    bytes_put_i64(w, d->discount_value);
    bytes_put_u8(w, d->has_max_discount);
    bytes_put_i64(w, d->max_discount);
    bytes_put_i64(w, d->min_order_amount);
    bytes_put_i64(w, d->total_quantity);
    bytes_put_i64(w, d->per_user_limit);
    bytes_put_i64(w, d->issue_starts_at);
    bytes_put_i64(w, d->issue_ends_at);
    bytes_put_u8(w, d->has_valid_until);
    bytes_put_i64(w, d->valid_until);
    bytes_put_u8(w, d->has_valid_days);
    bytes_put_i64(w, d->valid_days);
    bytes_put_i64(w, p->issued);
    bytes_put_i64(w, p->redeemed);
    bytes_put_i64(w, p->version);
    /* Version 2 from here on. */
    bytes_put_u8(w, p->state);
    bytes_put_i64(w, p->cancelled);
    bytes_put_i64(w, (int64_t)p->n_eras);
    for (size_t i = 0; i < p->n_eras; i++) {
        bytes_put_i64(w, p->eras[i].upto);
        bytes_put_u8(w, p->eras[i].has_valid_until);
        bytes_put_i64(w, p->eras[i].valid_until);
    }
}

static void coupon_encode_coupon(bytes_w *w, const coupon *c, int64_t expires_at) {
    bytes_w_reset(w);
    bytes_put_u8(w, COUPON_ENTRY_VERSION);
    bytes_put_str(w, c->owner->id);
    bytes_put_u8(w, c->redemption ? 1 : 0);
    bytes_put_i64(w, c->issued_at);
    bytes_put_i64(w, expires_at);
    bytes_put_str(w, c->redemption ? c->redemption->order_id : "");
    bytes_put_i64(w, c->redemption ? c->redemption->discount : 0);
}

static int coupon_emit_policy(bytes_w *w, const coupon_policy *p, domain_emit_fn emit, void *ctx) {
    char key[COUPON_KEY_MAX + 1];
    size_t n = strlen(p->def.policy_id);
    memcpy(key, "p:", 2);
    memcpy(key + 2, p->def.policy_id, n + 1);
    coupon_encode_policy(w, p);
    if (w->err) return -1;
    return emit(ctx, key, n + 2, w->data, w->len);
}

static int coupon_emit_coupon(bytes_w *w, const coupon_policy *p, const coupon *c, int64_t serial, int64_t expires_at,
                              domain_emit_fn emit, void *ctx) {
    char key[COUPON_KEY_MAX + 1];
    memcpy(key, "c:", 2);
    coupon_id_format(key + 2, p->def.policy_id, serial);
    coupon_encode_coupon(w, c, expires_at);
    if (w->err) return -1;
    return emit(ctx, key, strlen(key), w->data, w->len);
}

static int coupon_dump_all(coupon_state *s, bytes_w *w, domain_emit_fn emit, void *ctx) {
    coupon_policy *p, *tmp;
    int rc;
    HASH_ITER(hh, s->policies, p, tmp) {
        if (p->defined && (rc = coupon_emit_policy(w, p, emit, ctx)) != 0) return rc;
        for (size_t i = 0; i < p->n_coupons; i++) {
            const coupon *c = &p->coupons[i];
            if (c->owner &&
                (rc = coupon_emit_coupon(w, p, c, (int64_t)i + 1, coupon_expiry_of(p, (int64_t)i + 1, c->issued_at),
                                         emit, ctx)) != 0)
                return rc;
        }
        for (size_t i = 0; i < p->n_pending; i++) {
            const coupon_pending *q = &p->pending[i];
            if ((rc = coupon_emit_coupon(w, p, &q->c, q->serial, q->expires_at, emit, ctx)) != 0) return rc;
        }
    }
    return 0;
}

static int coupon_dump_dirty(coupon_state *s, bytes_w *w, domain_emit_fn emit, void *ctx) {
    int rc;
    for (size_t i = 0; i < s->n_dirty; i++) {
        coupon_policy *p = s->dirty[i];
        if ((rc = coupon_emit_policy(w, p, emit, ctx)) != 0) return rc;
        for (size_t j = 0; j < p->n_dirty; j++) {
            const coupon *c = &p->coupons[p->dirty_idx[j]];
            if ((rc = coupon_emit_coupon(w, p, c, (int64_t)p->dirty_idx[j] + 1,
                                         coupon_expiry_of(p, (int64_t)p->dirty_idx[j] + 1, c->issued_at), emit, ctx)) !=
                0)
                return rc;
        }
    }
    return 0;
}

static int coupon_dump(void *state, int all, domain_emit_fn emit, void *ctx) {
    coupon_state *s = state;
    bytes_w w = {0};
    int rc = all ? coupon_dump_all(s, &w, emit, ctx) : coupon_dump_dirty(s, &w, emit, ctx);
    free(w.data);
    if (rc != 0) return rc; /* the dirty set stays: the next dump retries it */
    for (size_t i = 0; i < s->n_dirty; i++) {
        coupon_policy *p = s->dirty[i];
        for (size_t j = 0; j < p->n_dirty; j++)
            p->dirty_bits[p->dirty_idx[j] / 64] &= ~(1ULL << (p->dirty_idx[j] % 64));
        p->n_dirty = 0;
        p->listed = false;
    }
    s->n_dirty = 0;
    return 0;
}

/* Puts a restored coupon in its slot (serial <= issued, <= COUPON_SERIAL_MAX),
 * replacing what a repeated or newer entry had there. Takes ownership of
 * c->redemption on success. */
static int coupon_place(coupon_policy *p, int64_t serial, const coupon *c) {
    size_t idx = (size_t)serial - 1;
    if (coupon_policy_reserve(p, idx + 1) != 0) return -1;
    coupon *slot = &p->coupons[idx];
    if (slot->owner) {
        slot->owner->issued--;
        if (slot->redemption) p->discount_total -= slot->redemption->discount;
        free(slot->redemption);
    } else {
        p->n_placed++;
    }
    *slot = *c;
    slot->owner->issued++;
    if (slot->redemption) p->discount_total += slot->redemption->discount;
    if (idx + 1 > p->n_coupons) p->n_coupons = idx + 1;
    return 0;
}

/* Places the pending coupons that the policy's issued count now covers. A
 * coupon whose expiry the policy contradicts is dropped and reported. */
static int coupon_place_pending(coupon_policy *p) {
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < p->n_pending; i++) {
        coupon_pending *q = &p->pending[i];
        /* Only a coupon the policy says was issued is checked and placed:
         * the policy entry loaded may be older than the coupon's (a PATCH
         * may have raised total_quantity since), and a newer one will come. */
        if (q->serial <= p->issued && q->expires_at != coupon_expiry_of(p, q->serial, q->c.issued_at)) {
            free(q->c.redemption);
            rc = -1;
            continue;
        }
        if (rc == 0 && q->serial <= p->issued && (rc = coupon_place(p, q->serial, &q->c)) == 0) continue;
        p->pending[k++] = *q;
    }
    p->n_pending = k;
    return rc;
}

static bool coupon_flag_ok(uint8_t v) {
    return v <= 1;
}

static int coupon_load_policy(coupon_state *s, const char *id, const uint8_t *val, size_t val_len) {
    if (!promo_id_valid(id)) return -1;
    /* Decoded into a command so that cmd_validate(), the one statement of the
     * policy rules, vets restored definitions as it vetted created ones. */
    promo_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    coupon_policy_def *d = &cmd.u.create_policy;
    bytes_r r;
    bytes_r_init(&r, val, val_len);
    uint8_t version = bytes_get_u8(&r);
    strcpy(d->policy_id, id);
    bytes_get_str(&r, d->name, sizeof d->name);
    uint8_t type = bytes_get_u8(&r);
    d->discount_value = bytes_get_i64(&r);
    uint8_t has_max = bytes_get_u8(&r);
    d->max_discount = bytes_get_i64(&r);
    d->min_order_amount = bytes_get_i64(&r);
    d->total_quantity = bytes_get_i64(&r);
    int64_t per_user = bytes_get_i64(&r);
    d->issue_starts_at = bytes_get_i64(&r);
    d->issue_ends_at = bytes_get_i64(&r);
    uint8_t has_until = bytes_get_u8(&r);
    d->valid_until = bytes_get_i64(&r);
    uint8_t has_days = bytes_get_u8(&r);
    int64_t days = bytes_get_i64(&r);
    int64_t issued = bytes_get_i64(&r);
    int64_t redeemed = bytes_get_i64(&r);
    int64_t pversion = bytes_get_i64(&r);
    /* Version 1 (before turn 2) ends here: an ACTIVE policy, no
     * cancellations counted, no eras. */
    uint8_t pstate = CAMPAIGN_ACTIVE;
    int64_t cancelled = 0, n_eras = 0;
    coupon_era eras[COUPON_ERAS_MAX];
    if (version == COUPON_POLICY_VERSION) {
        pstate = bytes_get_u8(&r);
        cancelled = bytes_get_i64(&r);
        n_eras = bytes_get_i64(&r);
        if (n_eras < 0 || n_eras > COUPON_ERAS_MAX) return -1;
        for (int64_t i = 0; i < n_eras; i++) {
            eras[i].upto = bytes_get_i64(&r);
            uint8_t has = bytes_get_u8(&r);
            eras[i].valid_until = bytes_get_i64(&r);
            /* Eras cover increasing serials, all of them issued. */
            if (!coupon_flag_ok(has) || eras[i].upto < 1 || eras[i].upto > issued ||
                (i > 0 && eras[i].upto <= eras[i - 1].upto) || eras[i].valid_until < 0)
                return -1;
            eras[i].has_valid_until = has;
        }
    } else if (version != COUPON_ENTRY_VERSION) {
        return -1;
    }
    if (r.err || r.p != r.end || pstate > CAMPAIGN_CLOSED || cancelled < 0 || type > DISCOUNT_PERCENT ||
        !coupon_flag_ok(has_max) || !coupon_flag_ok(has_until) || !coupon_flag_ok(has_days) || per_user < 1 ||
        per_user > INT32_MAX || days < 0 || days > INT32_MAX)
        return -1;
    d->discount_type = (discount_type)type;
    d->has_max_discount = has_max;
    d->per_user_limit = (int32_t)per_user;
    d->has_valid_until = has_until;
    d->has_valid_days = has_days;
    d->valid_days = (int32_t)days;
    cmd.type = CMD_CREATE_COUPON_POLICY;
    strcpy(cmd.request_id, "checkpoint");
    char field[32], why[128];
    if (cmd_validate(&cmd, field, sizeof field, why, sizeof why) != 0) return -1;
    if (issued < 0 || issued > d->total_quantity || issued > COUPON_SERIAL_MAX || redeemed < 0 || redeemed > issued ||
        pversion < 1)
        return -1;

    coupon_policy *p = coupon_policy_get(s, id);
    if (!p) return -1;
    /* Placed coupons have serials at or below the issued count of an earlier
     * policy entry, and issued never decreases. */
    if ((uint64_t)issued < p->n_coupons) return -1;
    coupon_era *e = NULL;
    if (n_eras && !(e = malloc((size_t)n_eras * sizeof *e))) return -1;
    if (n_eras) memcpy(e, eras, (size_t)n_eras * sizeof *e);
    free(p->eras);
    p->eras = e;
    p->n_eras = (size_t)n_eras;
    coupon_def_copy(&p->def, d);
    p->defined = true;
    p->issued = issued;
    p->redeemed = redeemed;
    p->version = pversion;
    p->state = pstate;
    p->cancelled = cancelled;
    return p->n_pending ? coupon_place_pending(p) : 0;
}

static int coupon_load_coupon(coupon_state *s, const char *coupon_id, const uint8_t *val, size_t val_len) {
    char pid[PROMO_ID_MAX + 1];
    int64_t serial;
    if (coupon_id_parse(coupon_id, pid, sizeof pid, &serial) != 0 || serial > COUPON_SERIAL_MAX) return -1;
    char user[PROMO_ID_MAX + 1], order[PROMO_ID_MAX + 1];
    bytes_r r;
    bytes_r_init(&r, val, val_len);
    uint8_t version = bytes_get_u8(&r);
    bytes_get_str(&r, user, sizeof user);
    uint8_t redeemed = bytes_get_u8(&r);
    coupon c = {0};
    c.issued_at = bytes_get_i64(&r);
    int64_t expires_at = bytes_get_i64(&r);
    bytes_get_str(&r, order, sizeof order);
    int64_t discount = bytes_get_i64(&r);
    if (r.err || r.p != r.end || version != COUPON_ENTRY_VERSION || !promo_id_valid(user) ||
        !coupon_flag_ok(redeemed) || c.issued_at < 0)
        return -1;
    if (redeemed ? !promo_id_valid(order) || discount < 0 : order[0] || discount != 0) return -1;

    coupon_policy *p = coupon_policy_get(s, pid);
    if (!p) return -1;
    /* Checked against the policy once it covers the serial (see
     * coupon_place_pending()): an older policy entry knows fewer serials. */
    if (p->defined && serial <= p->issued && expires_at != coupon_expiry_of(p, serial, c.issued_at)) return -1;
    if (!p->defined || serial > p->issued) {
        /* Reserve before allocating, so a failure leaks nothing. */
        void *q = coupon_grow(p->pending, &p->cap_pending, p->n_pending + 1, sizeof *p->pending);
        if (!q) return -1;
        p->pending = q;
    }
    if (!(c.owner = coupon_user_get(p, user))) return -1;
    if (redeemed && !(c.redemption = coupon_redemption_new(order, discount))) return -1;
    if (!p->defined || serial > p->issued) {
        p->pending[p->n_pending++] = (coupon_pending){c, serial, expires_at};
        return 0;
    }
    if (coupon_place(p, serial, &c) != 0) {
        free(c.redemption);
        return -1;
    }
    return 0;
}

static int coupon_load(void *state, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    char k[COUPON_KEY_MAX + 1];
    if (!key || !val || key_len < 3 || key_len > COUPON_KEY_MAX || memchr(key, '\0', key_len)) return -1;
    memcpy(k, key, key_len);
    k[key_len] = '\0';
    if (k[0] == 'p' && k[1] == ':') return coupon_load_policy(state, k + 2, val, val_len);
    if (k[0] == 'c' && k[1] == ':') return coupon_load_coupon(state, k + 2, val, val_len);
    return -1;
}

static void *coupon_state_new(void) {
    return calloc(1, sizeof(coupon_state));
}

static void coupon_state_destroy(void *state) {
    coupon_state *s = state;
    if (!s) return;
    coupon_policy *p, *tmp;
    HASH_ITER(hh, s->policies, p, tmp) {
        HASH_DEL(s->policies, p);
        coupon_policy_clear(p);
        free(p);
    }
    free(s->dirty);
    free(s);
}

static size_t coupon_entries(void *state) {
    coupon_state *s = state;
    size_t n = 0;
    coupon_policy *p, *tmp;
    HASH_ITER(hh, s->policies, p, tmp) n += (p->defined ? 1 : 0) + p->n_placed + p->n_pending;
    return n;
}

const domain_ops coupon_ops = {
    .domain = DOMAIN_COUPON,
    .name = "coupon",
    .topic = TOPIC_COUPON_CMD,
    .schema_id = 1,
    .state_new = coupon_state_new,
    .state_destroy = coupon_state_destroy,
    .apply = coupon_apply,
    .load = coupon_load,
    .dump = coupon_dump,
    .entries = coupon_entries,
};
