/* Byte-level BPE segmentation (GGUF model `gpt2`), as llama.cpp does it.
 * First the pre-tokenizer splits the text into words with the model's regex
 * (GPT-2, Llama 3 or Qwen2), written out here by hand over Unicode classes;
 * then each byte of a word becomes its byte-level token and the adjacent
 * pair with the lowest merge rank merges until no pair is left. A heap of
 * candidate pairs keeps each word O(n log n), so long inputs stay fast. */
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_impl.h"

#define OUT_OF_RANGE (-1)

typedef struct bpe_pair {
    int32_t rank;
    int left, right;
    int32_t lid, rid;           /* symbol ids when queued (stale check) */
} bpe_pair;

typedef struct bpe_sym {
    int prev, next;
    int32_t id;                 /* -1 once merged into its left neighbour */
} bpe_sym;

/* Scratch space reused across the words of one call. */
typedef struct bpe_work {
    const sx_tokenizer *t;
    const uint32_t *cp;         /* code points of the fragment */
    const uint8_t *cls;         /* their SX_UNI_* classes */
    size_t n;
    char *word;                 /* UTF-8 of the current word */
    size_t word_cap;
    char *enc;                  /* its byte-level encoding (ignore_merges) */
    bpe_sym *sym;
    size_t sym_cap;
    bpe_pair *heap;
    size_t heap_n, heap_cap;
    sx_idvec *out;
} bpe_work;

/* Lenient UTF-8 decoding as llama.cpp's: an invalid byte becomes U+FFFD. */
static uint32_t decode_lenient(const unsigned char *s, size_t n, size_t *used)
{
    unsigned char c = s[0];
    size_t need;
    uint32_t cp;

    if (c < 0x80) {
        *used = 1;
        return c;
    }
    if ((c & 0x40) == 0)
        need = 0;
    else if ((c & 0x20) == 0)
        need = 2, cp = c & 0x1F;
    else if ((c & 0x10) == 0)
        need = 3, cp = c & 0x0F;
    else if ((c & 0x08) == 0)
        need = 4, cp = c & 0x07;
    else
        need = 0;
    if (need == 0 || need > n)
        goto bad;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            goto bad;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *used = need;
    return cp;
bad:
    *used = 1;
    return 0xFFFD;
}

/* --- merging ------------------------------------------------------------ */

static bool pair_before(const bpe_pair *a, const bpe_pair *b)
{
    if (a->rank != b->rank)
        return a->rank < b->rank;
    return a->left < b->left;
}

static int heap_push(bpe_work *w, bpe_pair p)
{
    size_t i;

    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        bpe_pair *v = realloc(w->heap, cap * sizeof(*v));
        if (!v)
            return SX_ENOMEM;
        w->heap = v;
        w->heap_cap = cap;
    }
    i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = p;
    return SX_OK;
}

static bpe_pair heap_pop(bpe_work *w)
{
    bpe_pair top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->heap_n)
            break;
        if (c + 1 < w->heap_n && pair_before(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!pair_before(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->heap_n > 0)
        w->heap[i] = last;
    return top;
}

static const sx_pair_slot *find_pair(const sx_tokenizer *t, int32_t l,
                                     int32_t r)
{
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & t->pair_mask;

    if (!t->pairs)
        return NULL;
    for (;; i = (i + 1) & t->pair_mask) {
        if (t->pairs[i].key == key)
            return &t->pairs[i];
        if (t->pairs[i].key == 0)
            return NULL;
    }
}

static int try_pair(bpe_work *w, int left, int right)
{
    const sx_pair_slot *p;
    int32_t l, r;

    if (left < 0 || right < 0)
        return SX_OK;
    l = w->sym[left].id;
    r = w->sym[right].id;
    if (l < 0 || r < 0 || !(p = find_pair(w->t, l, r)))
        return SX_OK;
    return heap_push(w, (bpe_pair){p->rank, left, right, l, r});
}

/* Merges the bytes of one word (UTF-8 in w->word) and emits its ids. */
static int merge_word(bpe_work *w, size_t m)
{
    const sx_tokenizer *t = w->t;
    int rc;

    /* llama-bpe keeps a word whole when the word itself is a token. */
    if (t->ignore_merges) {
        size_t k = 0;
        for (size_t i = 0; i < m; i++) {
            unsigned char b = (unsigned char)w->word[i];
            memcpy(w->enc + k, t->byte_enc[b], t->byte_enc_len[b]);
            k += t->byte_enc_len[b];
        }
        int32_t id = sx_tok_lookup(t, w->enc, k);
        if (id >= 0)
            return sx_idvec_push(w->out, id);
    }

    for (size_t i = 0; i < m; i++)
        w->sym[i] = (bpe_sym){(int)i - 1, i + 1 < m ? (int)i + 1 : -1,
                              t->byte_tok[(unsigned char)w->word[i]]};
    w->heap_n = 0;
    for (size_t i = 1; i < m; i++)
        if ((rc = try_pair(w, (int)i - 1, (int)i)) != SX_OK)
            return rc;

    while (w->heap_n > 0) {
        bpe_pair p = heap_pop(w);
        bpe_sym *l = &w->sym[p.left], *r = &w->sym[p.right];
        const sx_pair_slot *slot;

        if (l->id != p.lid || r->id != p.rid || l->next != p.right)
            continue;
        slot = find_pair(t, p.lid, p.rid);
        l->id = slot->result;
        r->id = -1;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = p.left;
        if ((rc = try_pair(w, l->prev, p.left)) != SX_OK ||
            (rc = try_pair(w, p.left, l->next)) != SX_OK)
            return rc;
    }

    rc = SX_OK;
    for (int i = 0; i >= 0 && rc == SX_OK; i = w->sym[i].next) {
        int32_t id = w->sym[i].id >= 0 ? w->sym[i].id : t->unk;
        if (id >= 0)
            rc = sx_idvec_push(w->out, id);
    }
    return rc;
}

/* Emits code points [a, b) as one word. */
static int add_word(bpe_work *w, size_t a, size_t b)
{
    size_t m = 0;

    if (a >= b)
        return SX_OK;
    for (size_t i = a; i < b; i++)
        m += sx_utf8_encode(w->cp[i], w->word + m);
    return merge_word(w, m);
}

/* --- pre-tokenizers ----------------------------------------------------- */

static int cls_at(const bpe_work *w, size_t pos)
{
    return pos < w->n ? w->cls[pos] : OUT_OF_RANGE;
}

static uint32_t cp_at(const bpe_work *w, size_t pos)
{
    return pos < w->n ? w->cp[pos] : 0xFFFFFFFFu;
}

static uint32_t ascii_lower(uint32_t c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, or 0. */
static size_t contraction(const bpe_work *w, size_t pos, bool any_case)
{
    uint32_t a, b;

    if (w->cp[pos] != '\'' || pos + 1 >= w->n)
        return 0;
    a = any_case ? ascii_lower(w->cp[pos + 1]) : w->cp[pos + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (pos + 2 >= w->n)
        return 0;
    b = any_case ? ascii_lower(w->cp[pos + 2]) : w->cp[pos + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
        (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* Length of the whitespace run after \s+(?!\S) and \s+: all of it at the
 * end of the text or when it is one character, else all but the last. */
static size_t space_run(const bpe_work *w, size_t pos, size_t ws)
{
    return ws > 1 && pos + ws < w->n ? ws - 1 : ws;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
 *        \s+(?!\S)|\s+ */
static int split_gpt2(bpe_work *w)
{
    size_t pos = 0, prev = 0;
    int rc;

    while (pos < w->n) {
        uint32_t c = w->cp[pos];
        size_t k = contraction(w, pos, false), ws = 0;
        int f2 = c == ' ' ? cls_at(w, pos + 1) : w->cls[pos];

        if (k > 0) {
            pos += k;
        } else if (f2 == SX_UNI_LETTER || f2 == SX_UNI_NUMBER ||
                   f2 == SX_UNI_OTHER) {
            pos += c == ' ';
            while (cls_at(w, pos) == f2)
                pos++;
        } else {
            while (cls_at(w, pos + ws) == SX_UNI_SPACE)
                ws++;
            pos += ws > 0 ? space_run(w, pos, ws) : 1;
        }
        if ((rc = add_word(w, prev, pos)) != SX_OK)
            return rc;
        prev = pos;
    }
    return SX_OK;
}

/* Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static int split_llama3(bpe_work *w, size_t max_digits)
{
    size_t pos = 0, prev = 0;
    int rc;

    while (pos < w->n) {
        uint32_t c = w->cp[pos];
        int f = w->cls[pos], f2 = c == ' ' ? cls_at(w, pos + 1) : f;
        size_t k = contraction(w, pos, true);
        bool nl = c == '\r' || c == '\n';

        if (k > 0) {
            pos += k;
        } else if (!nl && f != SX_UNI_NUMBER &&
                   (f == SX_UNI_LETTER || cls_at(w, pos + 1) == SX_UNI_LETTER)) {
            pos++;
            while (cls_at(w, pos) == SX_UNI_LETTER)
                pos++;
        } else if (f == SX_UNI_NUMBER) {
            size_t start = pos;
            while (cls_at(w, pos) == SX_UNI_NUMBER && pos - start < max_digits)
                pos++;
        } else if (f2 == SX_UNI_OTHER || f2 == OUT_OF_RANGE) {
            pos += c == ' ';
            while (cls_at(w, pos) == SX_UNI_OTHER)
                pos++;
            while (cp_at(w, pos) == '\r' || cp_at(w, pos) == '\n')
                pos++;
        } else {
            size_t ws = 0, last_nl = 0;
            while (cls_at(w, pos + ws) == SX_UNI_SPACE) {
                uint32_t c2 = w->cp[pos + ws];
                if (c2 == '\r' || c2 == '\n')
                    last_nl = pos + ws + 1;
                ws++;
            }
            if (last_nl > 0)
                pos = last_nl;
            else
                pos += ws > 0 ? space_run(w, pos, ws) : 1;
        }
        if ((rc = add_word(w, prev, pos)) != SX_OK)
            return rc;
        prev = pos;
    }
    return SX_OK;
}

int sx_tok_bpe_segment(const sx_tokenizer *t, const char *text, size_t len,
                       sx_idvec *out)
{
    const unsigned char *s = (const unsigned char *)text;
    bpe_work w = {.t = t, .out = out};
    uint32_t *cp = NULL;
    uint8_t *cls = NULL;
    size_t n = 0;
    int rc = SX_ENOMEM;

    if (len == 0)
        return SX_OK;
    if (len > (size_t)INT32_MAX / 4)
        return SX_ETOOBIG;
    cp = malloc(len * sizeof(*cp));
    cls = malloc(len);
    /* A word has at most len code points of 4 bytes each, and its
     * byte-level encoding at most 2 bytes per byte. */
    w.word = malloc(len * 4);
    w.enc = malloc(len * 8);
    w.sym = malloc(len * 4 * sizeof(*w.sym));
    if (!cp || !cls || !w.word || !w.enc || !w.sym)
        goto done;

    for (size_t off = 0, used; off < len; off += used) {
        cp[n] = decode_lenient(s + off, len - off, &used);
        cls[n] = (uint8_t)sx_tok_uni_class(cp[n]);
        n++;
    }
    w.cp = cp;
    w.cls = cls;
    w.n = n;

    switch (t->pre) {
    case SX_PRE_GPT2:
        rc = split_gpt2(&w);
        break;
    case SX_PRE_LLAMA3:
        rc = split_llama3(&w, 3);
        break;
    case SX_PRE_QWEN2:
        rc = split_llama3(&w, 1);
        break;
    default:
        rc = add_word(&w, 0, n);
        break;
    }
done:
    free(cp);
    free(cls);
    free(w.word);
    free(w.enc);
    free(w.sym);
    free(w.heap);
    return rc;
}
