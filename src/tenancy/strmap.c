/* A small chained hash map from strings to owned values, used by the
 * tenancy caches (tenants by id, slugs, keys by hash). Not thread-safe:
 * callers hold the tenancy lock. */
#include "tenancy/internal.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *next;
    uint64_t hash;
    char *key;
    void *val;
};

struct sx_strmap {
    struct entry **buckets;
    size_t nbuckets, count;
    void (*free_val)(void *);
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

struct sx_strmap *sx_strmap_new(void (*free_val)(void *))
{
    struct sx_strmap *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->nbuckets = 64;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    m->free_val = free_val;
    return m;
}

static void drop(struct sx_strmap *m, struct entry *e)
{
    if (m->free_val)
        m->free_val(e->val);
    free(e->key);
    free(e);
}

void sx_strmap_free(struct sx_strmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct entry *e = m->buckets[i], *n; e; e = n) {
            n = e->next;
            drop(m, e);
        }
    free(m->buckets);
    free(m);
}

void *sx_strmap_get(const struct sx_strmap *m, const char *key)
{
    uint64_t h = fnv1a(key);

    for (struct entry *e = m->buckets[h % m->nbuckets]; e; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e->val;
    return NULL;
}

/* Doubles the bucket array when the load passes 1; failure just keeps
 * the longer chains. */
static void grow(struct sx_strmap *m)
{
    size_t n = m->nbuckets * 2;
    struct entry **b = calloc(n, sizeof(*b));

    if (!b)
        return;
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash % n];
            b[e->hash % n] = e;
        }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

int sx_strmap_put(struct sx_strmap *m, const char *key, void *val)
{
    uint64_t h = fnv1a(key);
    struct entry **slot = &m->buckets[h % m->nbuckets], *e;

    for (e = *slot; e; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0) {
            if (m->free_val && e->val != val)
                m->free_val(e->val);
            e->val = val;
            return 0;
        }
    e = calloc(1, sizeof(*e));
    if (!e || !(e->key = strdup(key))) {
        free(e);
        return SX_ENOMEM;
    }
    e->hash = h;
    e->val = val;
    e->next = *slot;
    *slot = e;
    if (++m->count > m->nbuckets)
        grow(m);
    return 0;
}

void sx_strmap_del(struct sx_strmap *m, const char *key)
{
    uint64_t h = fnv1a(key);

    for (struct entry **p = &m->buckets[h % m->nbuckets]; *p; p = &(*p)->next)
        if ((*p)->hash == h && strcmp((*p)->key, key) == 0) {
            struct entry *e = *p;

            *p = e->next;
            drop(m, e);
            m->count--;
            return;
        }
}

void sx_strmap_filter(struct sx_strmap *m, bool (*pred)(const char *, void *, void *),
                      void *ctx)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct entry **p = &m->buckets[i]; *p;) {
            struct entry *e = *p;

            if (pred(e->key, e->val, ctx)) {
                *p = e->next;
                drop(m, e);
                m->count--;
            } else {
                p = &e->next;
            }
        }
}
