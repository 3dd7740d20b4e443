/* arena.h — a bump allocator for entities that live as long as their state:
 * coupon users (per policy) and point accounts (per partition). A million of
 * them in 64 KiB blocks cost no malloc header, rounding or hole each, and go
 * all at once with arena_free_all().
 */
#ifndef PROMO_ARENA_H
#define PROMO_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct arena {
    struct arena *next;
    size_t used, cap;
    _Alignas(8) uint8_t data[];
} arena;

/* n bytes from the arena whose newest block is *head. Blocks start
 * 8-aligned and the bytes follow the previous allocation, so a caller that
 * needs alignment k rounds every n it asks for to a multiple of k. NULL on
 * out of memory. The bytes belong to the arena: arena_free_all() frees them. */
static inline void *arena_alloc(arena **head, size_t n) {
    arena *a = *head;
    if (!a || a->cap - a->used < n) {
        size_t cap = n > 65536 - sizeof *a ? n : 65536 - sizeof *a;
        if (!(a = malloc(sizeof *a + cap))) return NULL;
        a->next = *head;
        a->used = 0;
        a->cap = cap;
        *head = a;
    }
    void *r = a->data + a->used;
    a->used += n;
    return r;
}

static inline void arena_free_all(arena **head) {
    while (*head) {
        arena *a = *head;
        *head = a->next;
        free(a);
    }
}

#endif
