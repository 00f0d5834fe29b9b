/* The tenants known to have no dataset that allows RAG, so that a chat of
 * one of them (RAG is on by default) skips retrieval without touching the
 * store. Filled by retrieval when the store says so; a registration that
 * allows RAG takes its tenant out and bumps a generation, so that a
 * retrieval that read the store before the registration committed cannot
 * put the tenant back. Deleting datasets only makes a tenant emptier, so
 * it changes nothing here. */
#include "rag/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 4096
#define ENTRIES_MAX 65536 /* beyond this the set starts over */

struct node {
    struct node *next;
    char tenant_id[];
};

struct sx_rag_norag {
    pthread_mutex_t lock;
    uint64_t gen;
    size_t n;
    struct node *b[BUCKETS];
};

static size_t bucket(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % BUCKETS;
}

static void clear(struct sx_rag_norag *c)
{
    for (size_t i = 0; i < BUCKETS; i++)
        for (struct node *n = c->b[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    memset(c->b, 0, sizeof(c->b));
    c->n = 0;
}

struct sx_rag_norag *sx_rag_norag_new(void)
{
    struct sx_rag_norag *c = calloc(1, sizeof(*c));

    if (c)
        pthread_mutex_init(&c->lock, NULL);
    return c;
}

void sx_rag_norag_free(struct sx_rag_norag *c)
{
    if (!c)
        return;
    clear(c);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

uint64_t sx_rag_norag_gen(struct sx_rag_norag *c)
{
    uint64_t g;

    if (!c)
        return 0;
    pthread_mutex_lock(&c->lock);
    g = c->gen;
    pthread_mutex_unlock(&c->lock);
    return g;
}

bool sx_rag_norag_has(struct sx_rag_norag *c, const char *tenant_id)
{
    bool found = false;

    if (!c)
        return false;
    pthread_mutex_lock(&c->lock);
    for (struct node *n = c->b[bucket(tenant_id)]; n && !found; n = n->next)
        found = strcmp(n->tenant_id, tenant_id) == 0;
    pthread_mutex_unlock(&c->lock);
    return found;
}

void sx_rag_norag_add(struct sx_rag_norag *c, const char *tenant_id, uint64_t gen)
{
    size_t len = strlen(tenant_id) + 1, i = bucket(tenant_id);
    struct node *n;

    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    for (n = c->b[i]; n; n = n->next)
        if (strcmp(n->tenant_id, tenant_id) == 0)
            break;
    if (!n && gen == c->gen && (n = malloc(sizeof(*n) + len))) {
        if (c->n >= ENTRIES_MAX)
            clear(c);
        memcpy(n->tenant_id, tenant_id, len);
        n->next = c->b[i];
        c->b[i] = n;
        c->n++;
    }
    pthread_mutex_unlock(&c->lock);
}

void sx_rag_norag_forget(struct sx_rag_norag *c, const char *tenant_id)
{
    struct node **p;

    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->gen++;
    for (p = &c->b[bucket(tenant_id)]; *p; p = &(*p)->next)
        if (strcmp((*p)->tenant_id, tenant_id) == 0) {
            struct node *gone = *p;

            *p = gone->next;
            free(gone);
            c->n--;
            break;
        }
    pthread_mutex_unlock(&c->lock);
}
