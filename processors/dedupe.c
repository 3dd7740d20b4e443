/* dedupe.c — the request-id table of a partition (see dedupe.h).
 *
 * A uthash table keeps insertion order, which is (nearly) command-time order,
 * so expiry pops from the head and stops at the first young entry: O(expired)
 * per call, not a scan. Ids sent by several ingest nodes may arrive slightly
 * out of time order; such an entry merely lives a little longer.
 *
 * Checkpoint value: version byte 1, fingerprint (8 bytes LE), at (8 bytes LE),
 * then the encoded result to the end.
 */
#include "dedupe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#define DEDUPE_VALUE_VERSION 1
#define DEDUPE_HEADER 17

typedef struct entry {
    UT_hash_handle hh;
    struct entry *dirty_next;
    bool dirty;
    uint64_t fingerprint;
    int64_t at;
    size_t result_len;
    uint8_t *result;
    char id[]; /* request id, NUL-terminated */
} entry;

/* Expired ids not yet written to the checkpoint as deletions. */
typedef struct gone {
    struct gone *next;
    char id[];
} gone;

struct dedupe {
    entry *table;
    entry *dirty_head;
    gone *gone_head;
    int64_t window_ms;
    size_t bytes;
};

dedupe *dedupe_new(int64_t window_ms) {
    dedupe *d = calloc(1, sizeof *d);
    if (d) d->window_ms = window_ms;
    return d;
}

static void entry_free(entry *e) {
    free(e->result);
    free(e);
}

static void gone_clear(dedupe *d) {
    while (d->gone_head) {
        gone *g = d->gone_head;
        d->gone_head = g->next;
        free(g);
    }
}

void dedupe_destroy(dedupe *d) {
    if (!d) return;
    entry *e, *tmp;
    HASH_ITER(hh, d->table, e, tmp) {
        HASH_DEL(d->table, e);
        entry_free(e);
    }
    gone_clear(d);
    free(d);
}

int dedupe_get(dedupe *d, const char *request_id, dedupe_hit *hit) {
    entry *e;
    HASH_FIND_STR(d->table, request_id, e);
    if (!e) return 0;
    hit->fingerprint = e->fingerprint;
    hit->result = e->result;
    hit->result_len = e->result_len;
    return 1;
}

static void mark_dirty(dedupe *d, entry *e) {
    if (e->dirty) return;
    e->dirty = true;
    e->dirty_next = d->dirty_head;
    d->dirty_head = e;
}

/* Inserts or replaces (load may see an id twice); takes ownership of result. */
static int insert(dedupe *d, const char *id, size_t id_len, uint64_t fp, int64_t at, uint8_t *result, size_t len,
                  bool dirty) {
    entry *old;
    HASH_FIND(hh, d->table, id, id_len, old);
    if (old) {
        if (old->dirty) return -1; /* only load() replaces, and it never sees dirty entries */
        HASH_DEL(d->table, old);
        d->bytes -= old->result_len;
        entry_free(old);
    }
    entry *e = calloc(1, sizeof *e + id_len + 1);
    if (!e) return -1;
    memcpy(e->id, id, id_len);
    e->id[id_len] = '\0';
    e->fingerprint = fp;
    e->at = at;
    e->result = result;
    e->result_len = len;
    HASH_ADD(hh, d->table, id, id_len, e);
    d->bytes += len;
    if (dirty) mark_dirty(d, e);
    return 0;
}

int dedupe_put(dedupe *d, const char *request_id, uint64_t fingerprint, int64_t at, const uint8_t *result,
               size_t result_len) {
    uint8_t *copy = malloc(result_len ? result_len : 1);
    if (!copy) return -1;
    memcpy(copy, result, result_len);
    if (insert(d, request_id, strlen(request_id), fingerprint, at, copy, result_len, true) != 0) {
        free(copy);
        return -1;
    }
    return 0;
}

void dedupe_expire(dedupe *d, int64_t now) {
    int64_t cutoff = now - d->window_ms;
    while (d->table && d->table->at <= cutoff) {
        entry *e = d->table;
        if (e->dirty) {
            /* Unlink from the dirty list: it must not be dumped after free. */
            entry **pp = &d->dirty_head;
            while (*pp != e) pp = &(*pp)->dirty_next;
            *pp = e->dirty_next;
        }
        size_t n = strlen(e->id);
        gone *g = malloc(sizeof *g + n + 1);
        if (!g) return; /* keep the entry: forgetting it unrecorded would leave it in Redis */
        memcpy(g->id, e->id, n + 1);
        g->next = d->gone_head;
        d->gone_head = g;
        HASH_DEL(d->table, e);
        d->bytes -= e->result_len;
        entry_free(e);
    }
}

static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int emit_entry(entry *e, domain_emit_fn emit, void *ctx, uint8_t **buf, size_t *cap) {
    char key[PROMO_ID_MAX + 3];
    int klen = snprintf(key, sizeof key, "r:%s", e->id);
    size_t need = DEDUPE_HEADER + e->result_len;
    if (need > *cap) {
        uint8_t *nb = realloc(*buf, need);
        if (!nb) return -1;
        *buf = nb;
        *cap = need;
    }
    (*buf)[0] = DEDUPE_VALUE_VERSION;
    put_le64(*buf + 1, e->fingerprint);
    put_le64(*buf + 9, (uint64_t)e->at);
    memcpy(*buf + DEDUPE_HEADER, e->result, e->result_len);
    return emit(ctx, key, (size_t)klen, *buf, need);
}

int dedupe_dump(dedupe *d, int all, domain_emit_fn emit, void *ctx) {
    uint8_t *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (gone *g = d->gone_head; g && rc == 0; g = g->next) {
        char key[PROMO_ID_MAX + 3];
        int klen = snprintf(key, sizeof key, "r:%s", g->id);
        rc = emit(ctx, key, (size_t)klen, NULL, 0);
    }
    if (all) {
        for (entry *e = d->table; e && rc == 0; e = e->hh.next) rc = emit_entry(e, emit, ctx, &buf, &cap);
    } else {
        for (entry *e = d->dirty_head; e && rc == 0; e = e->dirty_next) rc = emit_entry(e, emit, ctx, &buf, &cap);
    }
    free(buf);
    if (rc != 0) return rc;
    gone_clear(d);
    for (entry *e = d->dirty_head, *next; e; e = next) {
        next = e->dirty_next;
        e->dirty = false;
        e->dirty_next = NULL;
    }
    d->dirty_head = NULL;
    return 0;
}

int dedupe_load(dedupe *d, const char *key, size_t key_len, const uint8_t *val, size_t val_len) {
    if (key_len < 3 || key_len > PROMO_ID_MAX + 2 || memcmp(key, "r:", 2) != 0) return -1;
    if (val_len < DEDUPE_HEADER || val[0] != DEDUPE_VALUE_VERSION) return -1;
    size_t len = val_len - DEDUPE_HEADER;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return -1;
    memcpy(copy, val + DEDUPE_HEADER, len);
    if (insert(d, key + 2, key_len - 2, get_le64(val + 1), (int64_t)get_le64(val + 9), copy, len, false) != 0) {
        free(copy);
        return -1;
    }
    return 0;
}

size_t dedupe_count(const dedupe *d) {
    return HASH_COUNT(d->table);
}
size_t dedupe_bytes(const dedupe *d) {
    return d->bytes;
}
