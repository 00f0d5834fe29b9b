/* Text <-> ids for a built tokenizer: tokenize (special-token partition, then
 * the SentencePiece or BPE segmenter per plain fragment), token pieces,
 * whole-sequence detokenization and the streaming detokenizer that holds
 * incomplete UTF-8 characters back. */
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer_impl.h"

/* --- special-token partition ------------------------------------------- */

typedef struct special_match {
    size_t pos, len;
    int32_t id;
} special_match;

static int cmp_longest_first(const void *a, const void *b)
{
    const special_match *x = a, *y = b;

    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_by_pos(const void *a, const void *b)
{
    const special_match *x = a, *y = b;

    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static bool special_allowed(const sx_tokenizer *t, int32_t id, bool parse)
{
    int ty = t->types[id];

    if (ty == SX_TOKT_USER_DEFINED)
        return true;
    return parse && (ty == SX_TOKT_CONTROL || ty == SX_TOKT_UNKNOWN);
}

/* Finds where special tokens cut the text. As llama.cpp, longer tokens are
 * placed first, each at its leftmost free occurrences; shorter ones fill
 * the plain text left between them. Returns the cuts in text order. */
static int find_specials(const sx_tokenizer *t, const char *text, size_t len,
                         bool parse, special_match **out, size_t *n_out)
{
    size_t lens[64], n_lens = 0, n = 0, cap = 0, kept = 0;
    special_match *m = NULL;
    uint8_t *used = NULL;

    *out = NULL;
    *n_out = 0;
    for (size_t i = 0; i < t->n_special && n_lens < 64; i++) {
        size_t l;
        int32_t id = t->special[i];
        sx_tok_text(t, id, &l);
        if (special_allowed(t, id, parse) && (n_lens == 0 || lens[n_lens - 1] != l))
            lens[n_lens++] = l;
    }
    if (n_lens == 0)
        return SX_OK;

    for (size_t p = 0; p < len; p++) {
        if (!t->special_first[(unsigned char)text[p]])
            continue;
        for (size_t k = 0; k < n_lens; k++) {
            int32_t id;
            if (lens[k] > len - p)
                continue;
            id = sx_tok_lookup(t, text + p, lens[k]);
            if (id < 0 || !special_allowed(t, id, parse))
                continue;
            if (n == cap) {
                size_t c = cap ? cap * 2 : 16;
                special_match *v = realloc(m, c * sizeof(*v));
                if (!v) {
                    free(m);
                    return SX_ENOMEM;
                }
                m = v;
                cap = c;
            }
            m[n++] = (special_match){p, lens[k], id};
        }
    }
    if (n == 0)
        return SX_OK;

    used = calloc(len, 1);
    if (!used) {
        free(m);
        return SX_ENOMEM;
    }
    qsort(m, n, sizeof(*m), cmp_longest_first);
    for (size_t i = 0; i < n; i++) {
        bool free_span = true;
        for (size_t j = 0; j < m[i].len && free_span; j++)
            free_span = !used[m[i].pos + j];
        if (!free_span)
            continue;
        memset(used + m[i].pos, 1, m[i].len);
        m[kept++] = m[i];
    }
    free(used);
    qsort(m, kept, sizeof(*m), cmp_by_pos);
    *out = m;
    *n_out = kept;
    return SX_OK;
}

static int segment(const sx_tokenizer *t, const char *s, size_t n,
                   bool after_special, sx_idvec *out)
{
    if (t->kind == SX_TOK_SPM)
        return sx_tok_spm_segment(t, s, n,
                                  t->add_space_prefix && after_special, out);
    return sx_tok_bpe_segment(t, s, n, out);
}

int sx_tokenizer_tokenize(const sx_tokenizer *t, const char *text, size_t len,
                          bool add_special, bool parse_special, int32_t **ids,
                          size_t *n_ids)
{
    sx_idvec v = {0};
    special_match *cuts = NULL;
    size_t n_cuts = 0, pos = 0;
    bool after_special = true;
    int rc;

    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len > 0))
        return SX_EINVAL;
    if ((rc = sx_idvec_push(&v, 0)) != SX_OK)      /* reserve: never NULL */
        return rc;
    v.n = 0;
    if (add_special && t->add_bos && (rc = sx_idvec_push(&v, t->bos)) != SX_OK)
        goto fail;
    if (len > 0 &&
        (rc = find_specials(t, text, len, parse_special, &cuts, &n_cuts)) !=
            SX_OK)
        goto fail;

    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i].pos : len;
        if (end > pos) {
            rc = segment(t, text + pos, end - pos, after_special, &v);
            if (rc != SX_OK)
                goto fail;
            after_special = false;
        }
        if (i < n_cuts) {
            if ((rc = sx_idvec_push(&v, cuts[i].id)) != SX_OK)
                goto fail;
            after_special = true;
            pos = cuts[i].pos + cuts[i].len;
        }
    }
    if (add_special && t->add_eos && (rc = sx_idvec_push(&v, t->eos)) != SX_OK)
        goto fail;
    free(cuts);
    *ids = v.v;
    *n_ids = v.n;
    return SX_OK;
fail:
    free(cuts);
    free(v.v);
    return rc;
}

/* --- pieces ------------------------------------------------------------- */

typedef struct sink {
    char *buf;
    size_t cap, n;
} sink;

static void put(sink *s, const char *p, size_t n)
{
    if (s->n < s->cap)
        memcpy(s->buf + s->n, p, n < s->cap - s->n ? n : s->cap - s->n);
    s->n += n;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Byte behind a byte-level BPE character (the inverse of the alphabet in
 * tokenizer.c), or -1. */
static int cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD
                   ? -1
                   : (int)cp;
    if (cp < 256 + 33)
        return (int)(cp - 256);
    if (cp < 256 + 67)
        return (int)(cp - 256 - 33 + 0x7F);
    return cp == 256 + 67 ? 0xAD : -1;
}

int sx_tokenizer_token_to_piece(const sx_tokenizer *t, int32_t id,
                                bool special, char *buf, size_t cap)
{
    sink s = {buf, buf ? cap : 0, 0};
    size_t len;
    const char *txt;
    int ty;

    if (!t || id < 0 || (uint32_t)id >= t->n_tokens)
        return SX_EINVAL;
    txt = sx_tok_text(t, id, &len);
    ty = t->types[id];

    if (ty == SX_TOKT_CONTROL || ty == SX_TOKT_UNKNOWN) {
        if (special)
            put(&s, txt, len);
    } else if (ty == SX_TOKT_USER_DEFINED) {
        put(&s, txt, len);
    } else if (ty == SX_TOKT_BYTE) {
        int hi = len == 6 ? hex_digit(txt[3]) : -1;
        int lo = len == 6 ? hex_digit(txt[4]) : -1;
        if (hi >= 0 && lo >= 0 && memcmp(txt, "<0x", 3) == 0) {
            char b = (char)(hi * 16 + lo);
            put(&s, &b, 1);
        } else {
            put(&s, txt, len);
        }
    } else if (ty == SX_TOKT_NORMAL && t->kind == SX_TOK_SPM) {
        for (size_t i = 0; i < len; i++) {
            if (i + 2 < len && memcmp(txt + i, "\xe2\x96\x81", 3) == 0) {
                put(&s, " ", 1);
                i += 2;
            } else {
                put(&s, txt + i, 1);
            }
        }
    } else if (ty == SX_TOKT_NORMAL) {
        /* Byte-level BPE: each character stands for one byte. */
        const unsigned char *u = (const unsigned char *)txt;
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            size_t k = sx_utf8_decode(u + i, len - i, &cp);
            int b = k ? cp_to_byte(cp) : -1;
            if (b >= 0) {
                char c = (char)b;
                put(&s, &c, 1);
            } else {
                k = k ? k : 1;
                put(&s, txt + i, k);
            }
            i += k;
        }
    }
    if (s.n > (size_t)INT32_MAX)
        return SX_ETOOBIG;
    return (int)s.n;
}

/* Appends the piece of id to *buf (growing it); strips one leading space
 * when *strip is set and the piece is not empty, then clears *strip. */
static int append_piece(const sx_tokenizer *t, int32_t id, bool special,
                        bool *strip, char **buf, size_t *n, size_t *cap)
{
    int k = sx_tokenizer_token_to_piece(t, id, special, *buf + *n, *cap - *n);
    size_t off;

    if (k < 0)
        return k;
    if ((size_t)k > *cap - *n) {
        size_t c = (*n + (size_t)k) * 2 + 16;
        char *p = realloc(*buf, c);
        if (!p)
            return SX_ENOMEM;
        *buf = p;
        *cap = c;
        k = sx_tokenizer_token_to_piece(t, id, special, *buf + *n, *cap - *n);
    }
    off = *n;
    *n += (size_t)k;
    if (*strip && k > 0) {
        *strip = false;
        if ((*buf)[off] == ' ') {
            memmove(*buf + off, *buf + off + 1, *n - off - 1);
            (*n)--;
        }
    }
    return SX_OK;
}

int sx_tokenizer_detokenize(const sx_tokenizer *t, const int32_t *ids,
                            size_t n, unsigned flags, char **out, size_t *len)
{
    bool special = flags & SX_DETOK_SPECIAL;
    bool strip = t && t->add_space_prefix &&
                 !(flags & SX_DETOK_KEEP_PREFIX_SPACE);
    size_t used = 0, cap = 64;
    char *buf;
    int rc;

    *out = NULL;
    *len = 0;
    if (!t || (!ids && n > 0))
        return SX_EINVAL;
    if (!(buf = malloc(cap)))
        return SX_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        rc = append_piece(t, ids[i], special, &strip, &buf, &used, &cap);
        if (rc != SX_OK) {
            free(buf);
            return rc;
        }
    }
    if (used == cap) {
        char *p = realloc(buf, cap + 1);
        if (!p) {
            free(buf);
            return SX_ENOMEM;
        }
        buf = p;
    }
    buf[used] = '\0';
    *out = buf;
    *len = used;
    return SX_OK;
}

/* --- streaming ---------------------------------------------------------- */

struct sx_detok {
    const sx_tokenizer *t;
    unsigned flags;
    bool strip;
    char *in;                   /* held bytes + the new piece */
    size_t in_n, in_cap;
    char *out;                  /* completed text handed back */
    size_t out_cap;
};

sx_detok *sx_detok_new(const sx_tokenizer *t, unsigned flags)
{
    sx_detok *d;

    if (!t)
        return NULL;
    d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->in = malloc(64);
    if (!d->in) {
        free(d);
        return NULL;
    }
    d->in_cap = 64;
    d->t = t;
    d->flags = flags;
    d->strip = t->add_space_prefix && !(flags & SX_DETOK_KEEP_PREFIX_SPACE);
    return d;
}

void sx_detok_free(sx_detok *d)
{
    if (!d)
        return;
    free(d->in);
    free(d->out);
    free(d);
}

/* Whether s[0..n) (n < the full length) can still begin a valid UTF-8
 * character once more bytes arrive. */
static bool valid_prefix(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;

    if (c < 0xC2 || c > 0xF4 || n >= need)
        return false;
    for (size_t i = 1; i < n; i++) {
        unsigned char lo = 0x80, hi = 0xBF;
        if (i == 1 && c == 0xE0)
            lo = 0xA0;
        if (i == 1 && c == 0xED)
            hi = 0x9F;
        if (i == 1 && c == 0xF0)
            lo = 0x90;
        if (i == 1 && c == 0xF4)
            hi = 0x8F;
        if (s[i] < lo || s[i] > hi)
            return false;
    }
    return true;
}

/* Moves the complete characters of d->in to d->out; keeps a valid
 * incomplete tail unless final; other bad bytes become U+FFFD. */
static int drain(sx_detok *d, bool final, const char **text, size_t *len)
{
    const unsigned char *s = (const unsigned char *)d->in;
    size_t i = 0, o = 0;

    if (d->out_cap < d->in_n * 3 + 4) {
        size_t c = d->in_n * 3 + 4;
        char *p = realloc(d->out, c);
        if (!p)
            return SX_ENOMEM;
        d->out = p;
        d->out_cap = c;
    }
    while (i < d->in_n) {
        uint32_t cp;
        size_t k = sx_utf8_decode(s + i, d->in_n - i, &cp);

        if (k > 0) {
            memcpy(d->out + o, s + i, k);
            o += k;
            i += k;
        } else if (!final && valid_prefix(s + i, d->in_n - i)) {
            break;
        } else {
            memcpy(d->out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    memmove(d->in, d->in + i, d->in_n - i);
    d->in_n -= i;
    *text = d->out;
    *len = o;
    return SX_OK;
}

int sx_detok_feed(sx_detok *d, int32_t id, const char **text, size_t *len)
{
    int rc;

    *text = "";
    *len = 0;
    if (!d)
        return SX_EINVAL;
    rc = append_piece(d->t, id, d->flags & SX_DETOK_SPECIAL, &d->strip,
                      &d->in, &d->in_n, &d->in_cap);
    if (rc != SX_OK)
        return rc;
    return drain(d, false, text, len);
}

int sx_detok_flush(sx_detok *d, const char **text, size_t *len)
{
    int rc;

    *text = "";
    *len = 0;
    if (!d)
        return SX_EINVAL;
    rc = drain(d, true, text, len);
    d->in_n = 0;
    d->strip = d->t->add_space_prefix &&
               !(d->flags & SX_DETOK_KEEP_PREFIX_SPACE);
    return rc;
}
