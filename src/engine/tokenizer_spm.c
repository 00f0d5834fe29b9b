/* SentencePiece segmentation (GGUF model `llama`), as llama.cpp does it:
 * spaces become U+2581 ("▁"), a space is prefixed to the text, then the
 * adjacent pair whose concatenation is the highest-scoring token merges,
 * again and again. A piece left that is no token becomes its bytes
 * (<0xXX> tokens), or UNK when the vocabulary has no byte tokens. A heap of
 * candidate pairs keeps this O(n log n) in the text length. */
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_impl.h"

typedef struct spm_sym {
    int prev, next;
    size_t start, n;            /* bytes of the escaped text */
} spm_sym;

typedef struct spm_pair {
    float score;
    int left, right;
    size_t size;
} spm_pair;

typedef struct spm_heap {
    spm_pair *v;
    size_t n, cap;
} spm_heap;

/* Heap order: higher score first; on a tie the leftmost pair first. */
static bool pair_before(const spm_pair *a, const spm_pair *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return a->left < b->left;
}

static int heap_push(spm_heap *h, spm_pair p)
{
    size_t i;

    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        spm_pair *v = realloc(h->v, cap * sizeof(*v));
        if (!v)
            return SX_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = p;
    return SX_OK;
}

static spm_pair heap_pop(spm_heap *h)
{
    spm_pair top = h->v[0], last = h->v[--h->n];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && pair_before(&h->v[c + 1], &h->v[c]))
            c++;
        if (!pair_before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0)
        h->v[i] = last;
    return top;
}

/* Queues the pair (left, right) when their joined text is a token. */
static int try_pair(const sx_tokenizer *t, const char *esc, const spm_sym *sym,
                    int left, int right, spm_heap *h)
{
    size_t size;
    int32_t id;

    if (left < 0 || right < 0)
        return SX_OK;
    size = sym[left].n + sym[right].n;
    if (size > t->max_token_len)
        return SX_OK;
    id = sx_tok_lookup(t, esc + sym[left].start, size);
    if (id < 0)
        return SX_OK;
    return heap_push(h, (spm_pair){t->scores[id], left, right, size});
}

/* Emits the ids of one final piece: the token itself, or its bytes. */
static int emit_piece(const sx_tokenizer *t, const char *s, size_t n,
                      sx_idvec *out)
{
    int32_t id = sx_tok_lookup(t, s, n);
    int rc = SX_OK;

    if (id >= 0)
        return sx_idvec_push(out, id);
    for (size_t i = 0; i < n && rc == SX_OK; i++) {
        int32_t b = t->byte_tok[(unsigned char)s[i]];
        if (b < 0)
            b = t->unk;
        if (b >= 0)
            rc = sx_idvec_push(out, b);
    }
    return rc;
}

int sx_tok_spm_segment(const sx_tokenizer *t, const char *text, size_t len,
                       bool prefix_space, sx_idvec *out)
{
    static const char ws[3] = {'\xe2', '\x96', '\x81'};
    spm_heap heap = {0};
    spm_sym *sym = NULL;
    char *esc = NULL;
    size_t n_esc = 0;
    int n_sym = 0, rc = SX_ENOMEM;

    /* Escape: optional leading space, every ' ' becomes U+2581. */
    if (len > (SIZE_MAX - 3) / 3 || len + 1 > (size_t)INT32_MAX)
        return SX_EINVAL;
    esc = malloc(len * 3 + 3);
    sym = malloc((len * 3 + 3) * sizeof(*sym));  /* <= one per byte */
    if (!esc || !sym)
        goto done;
    if (prefix_space) {
        memcpy(esc, ws, 3);
        n_esc = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(esc + n_esc, ws, 3);
            n_esc += 3;
        } else {
            esc[n_esc++] = text[i];
        }
    }

    /* One symbol per UTF-8 character (clamped to the bytes left). */
    for (size_t off = 0; off < n_esc;) {
        size_t n = sx_utf8_len((unsigned char)esc[off]);
        if (n > n_esc - off)
            n = n_esc - off;
        sym[n_sym] = (spm_sym){n_sym - 1, -1, off, n};
        if (n_sym > 0)
            sym[n_sym - 1].next = n_sym;
        n_sym++;
        off += n;
    }

    for (int i = 1; i < n_sym; i++)
        if ((rc = try_pair(t, esc, sym, i - 1, i, &heap)) != SX_OK)
            goto done;

    /* Merge the best pair until none is left; stale pairs are skipped. */
    while (heap.n > 0) {
        spm_pair p = heap_pop(&heap);
        spm_sym *l = &sym[p.left], *r = &sym[p.right];

        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            sym[r->next].prev = p.left;
        if ((rc = try_pair(t, esc, sym, l->prev, p.left, &heap)) != SX_OK ||
            (rc = try_pair(t, esc, sym, p.left, l->next, &heap)) != SX_OK)
            goto done;
    }

    rc = SX_OK;
    for (int i = n_sym > 0 ? 0 : -1; i >= 0 && rc == SX_OK; i = sym[i].next)
        rc = emit_piece(t, esc + sym[i].start, sym[i].n, out);
done:
    free(heap.v);
    free(sym);
    free(esc);
    return rc;
}
