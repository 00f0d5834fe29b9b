/* Paged KV cache: page allocation for sequences from one shared pool. Pages
 * are handed out lazily as a sequence grows and returned when it shrinks, so
 * the pool's capacity is shared by whoever needs it now. */
#include "engine/kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"

sx_kv *sx_kv_new(const sx_model *m, int n_positions, char *err,
                 size_t errlen)
{
    const sx_model_info *mi = sx_model_get_info(m);
    sx_kv *kv;
    size_t total;

    if (n_positions < 1 || n_positions > (1 << 24)) {
        if (err && errlen)
            snprintf(err, errlen, "kv: capacity %d positions is out of range",
                     n_positions);
        return NULL;
    }
    kv = calloc(1, sizeof(*kv));
    if (!kv)
        goto oom;
    kv->model = m;
    kv->n_layer = mi->n_layer;
    kv->kv_dim = mi->n_head_kv * mi->head_dim;
    kv->n_pages = (n_positions + SX_KV_PAGE - 1) / SX_KV_PAGE;
    kv->page_floats = (size_t)kv->n_layer * 2 * SX_KV_PAGE * kv->kv_dim;
    total = (size_t)kv->n_pages * kv->page_floats * sizeof(float);
    kv->data = aligned_alloc(64, (total + 63) / 64 * 64);
    kv->free_pages = malloc((size_t)kv->n_pages * sizeof(int));
    if (!kv->data || !kv->free_pages)
        goto oom;
    /* Lowest page on top of the stack, so a fresh pool fills in order. */
    for (int i = 0; i < kv->n_pages; i++)
        kv->free_pages[i] = kv->n_pages - 1 - i;
    kv->n_free = kv->n_pages;
    return kv;
oom:
    if (err && errlen)
        snprintf(err, errlen, "kv: out of memory for %d positions",
                 n_positions);
    sx_kv_free(kv);
    return NULL;
}

void sx_kv_free(sx_kv *kv)
{
    if (!kv)
        return;
    free(kv->data);
    free(kv->free_pages);
    free(kv);
}

int sx_kv_free_positions(const sx_kv *kv) { return kv->n_free * SX_KV_PAGE; }
int sx_kv_capacity(const sx_kv *kv) { return kv->n_pages * SX_KV_PAGE; }

sx_seq *sx_seq_new(sx_kv *kv)
{
    sx_seq *s = calloc(1, sizeof(*s));

    if (s)
        s->kv = kv;
    return s;
}

void sx_seq_free(sx_seq *s)
{
    if (!s)
        return;
    sx_seq_reset(s);
    free(s->pages);
    free(s);
}

void sx_seq_reset(sx_seq *s)
{
    sx_seq_truncate(s, 0);
}

int sx_seq_len(const sx_seq *s) { return s->len; }

int sx_seq_truncate(sx_seq *s, int len)
{
    int keep;

    if (len < 0 || len > s->len)
        return SX_EINVAL;
    keep = (len + SX_KV_PAGE - 1) / SX_KV_PAGE;
    while (s->n_pages > keep)
        s->kv->free_pages[s->kv->n_free++] = s->pages[--s->n_pages];
    s->len = len;
    return 0;
}

int sx_seq_pages_needed(const sx_seq *s, int len)
{
    int need = (len + SX_KV_PAGE - 1) / SX_KV_PAGE;

    return need > s->n_pages ? need - s->n_pages : 0;
}

int sx_seq_reserve(sx_seq *s, int len)
{
    int need = (len + SX_KV_PAGE - 1) / SX_KV_PAGE;

    if (need <= s->n_pages)
        return 0;
    if (need - s->n_pages > s->kv->n_free)
        return SX_ELIMIT;
    if (need > s->cap_pages) {
        int *p = realloc(s->pages, (size_t)need * 2 * sizeof(int));

        if (!p)
            return SX_ENOMEM;
        s->pages = p;
        s->cap_pages = need * 2;
    }
    while (s->n_pages < need)
        s->pages[s->n_pages++] = s->kv->free_pages[--s->kv->n_free];
    return 0;
}
