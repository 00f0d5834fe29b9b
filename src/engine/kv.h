/* Paged KV cache (internal part). The pool is one array of fixed-size pages
 * of SX_KV_PAGE positions; a sequence owns a page table. Inside a page the
 * layout is [layer][K or V][slot][kv_dim], so one position of one layer is a
 * contiguous vector of kv_dim floats. */
#ifndef SX_ENGINE_KV_H
#define SX_ENGINE_KV_H

#include "engine/engine.h"

struct sx_kv {
    const sx_model *model;
    int n_layer, kv_dim;
    int n_pages;
    size_t page_floats;
    float *data;
    int *free_pages;         /* stack of free page indices */
    int n_free;
};

struct sx_seq {
    sx_kv *kv;
    int len;                 /* positions holding keys/values */
    int *pages;              /* page table */
    int n_pages, cap_pages;
};

/* Makes room for positions < len (allocating pages); SX_ELIMIT when the pool
 * is out of pages (then nothing is allocated), SX_ENOMEM. */
int sx_seq_reserve(sx_seq *s, int len);
/* Pages the sequence would need to hold len positions, beyond those held. */
int sx_seq_pages_needed(const sx_seq *s, int len);

static inline float *sx_kv_k(const sx_seq *s, int layer, int pos)
{
    const sx_kv *kv = s->kv;
    float *page = kv->data + (size_t)s->pages[pos / SX_KV_PAGE] *
                             kv->page_floats;

    return page + ((size_t)(layer * 2) * SX_KV_PAGE + pos % SX_KV_PAGE) *
                  (size_t)kv->kv_dim;
}

static inline float *sx_kv_v(const sx_seq *s, int layer, int pos)
{
    const sx_kv *kv = s->kv;
    float *page = kv->data + (size_t)s->pages[pos / SX_KV_PAGE] *
                             kv->page_floats;

    return page + ((size_t)(layer * 2 + 1) * SX_KV_PAGE + pos % SX_KV_PAGE) *
                  (size_t)kv->kv_dim;
}

#endif
