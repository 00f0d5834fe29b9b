/* Chunking for the rag module: estimates token counts and cuts a document's
 * text into chunks of whole sentences that fit a token budget, with a
 * configurable overlap of trailing sentences between neighbours. Works on
 * byte spans of the caller's text; never splits a UTF-8 sequence. */
#include "rag/rag.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

/* A segment: one sentence, or a word-bounded piece of an overlong one. */
struct seg {
    size_t off, len;
    int tokens;
};

struct segs {
    struct seg *v;
    size_t n, cap;
};

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '_' || c >= 0x80;
}

/* Length of the UTF-8 sequence starting with lead byte c (1 for stray
 * continuation bytes, so callers always advance). */
static size_t utf8_len(unsigned char c)
{
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    if (c >= 0xE0)
        return 3;
    if (c >= 0xC2 && c < 0xE0)
        return 2;
    return 1;
}

static size_t step(const char *s, size_t i, size_t len)
{
    size_t k = utf8_len((unsigned char)s[i]);

    return i + k > len ? len : i + k;
}

int sx_rag_count_tokens(const char *s, size_t len)
{
    size_t i = 0;
    int n = 0;

    while (i < len) {
        unsigned char c = (unsigned char)s[i];

        if (is_space(c)) {
            i++;
        } else if (is_word_byte(c)) {
            size_t start = i;

            while (i < len && is_word_byte((unsigned char)s[i]))
                i = step(s, i, len);
            n += 1 + (int)((i - start - 1) / 6);
        } else {
            n++;
            i++;
        }
    }
    return n;
}

static int segs_push(struct segs *ss, size_t off, size_t len, int tokens)
{
    if (ss->n == ss->cap) {
        size_t cap = ss->cap ? ss->cap * 2 : 32;
        struct seg *v = realloc(ss->v, cap * sizeof(*v));

        if (!v)
            return SX_ENOMEM;
        ss->v = v;
        ss->cap = cap;
    }
    ss->v[ss->n++] = (struct seg){off, len, tokens};
    return 0;
}

/* Whether a sentence ends just before position i (which follows a . ! or
 * ? and any closing quotes or brackets): whitespace, then a capital, a
 * digit, an opening mark or a non-ASCII character. Lower-case after "e.g. "
 * stays in the same sentence. */
static int sentence_ends(const char *s, size_t i, size_t len)
{
    unsigned char c;

    if (i >= len)
        return 1;
    if (!is_space((unsigned char)s[i]))
        return 0;
    while (i < len && is_space((unsigned char)s[i]))
        i++;
    if (i >= len)
        return 1;
    c = (unsigned char)s[i];
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '"' || c == '\'' ||
           c == '(' || c == '[' || c >= 0x80;
}

/* Whether s[i] starts a blank line (a paragraph break). */
static int blank_line_at(const char *s, size_t i, size_t len)
{
    if (s[i] != '\n')
        return 0;
    for (i++; i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'); i++)
        ;
    return i < len && s[i] == '\n';
}

/* Trims whitespace around s[*off .. *off + *len). */
static void trim(const char *s, size_t *off, size_t *len)
{
    while (*len && is_space((unsigned char)s[*off])) {
        (*off)++;
        (*len)--;
    }
    while (*len && is_space((unsigned char)s[*off + *len - 1]))
        (*len)--;
}

/* Adds sentence s[off..off+len) as segments: whole when it fits max, else
 * cut before the word that would overflow the budget (a single word longer
 * than the budget is cut at a UTF-8 character boundary). One pass. */
static int add_sentence(struct segs *ss, const char *s, size_t off, size_t len, int max)
{
    size_t end, i, seg_start;
    int tokens = 0, rc;

    trim(s, &off, &len);
    end = off + len;
    i = seg_start = off;
    while (i < end) {
        unsigned char c = (unsigned char)s[i];
        size_t unit_end;
        int t;

        if (is_space(c)) {
            i++;
            continue;
        }
        if (is_word_byte(c)) {
            for (unit_end = i; unit_end < end && is_word_byte((unsigned char)s[unit_end]);)
                unit_end = step(s, unit_end, end);
            t = 1 + (int)((unit_end - i - 1) / 6);
        } else {
            unit_end = i + 1;
            t = 1;
        }
        if (tokens + t > max && tokens > 0) {
            /* Close the segment before this unit. */
            size_t o = seg_start, l = i - seg_start;

            trim(s, &o, &l);
            if ((rc = segs_push(ss, o, l, tokens)) != 0)
                return rc;
            seg_start = i;
            tokens = 0;
            continue;
        }
        if (t > max) {
            /* One word longer than the budget: cut it at max * 6 bytes. */
            size_t cut = i, lim = i + (size_t)max * 6;

            while (cut < unit_end && step(s, cut, end) <= lim)
                cut = step(s, cut, end);
            if (cut == i)
                cut = step(s, i, end);
            if ((rc = segs_push(ss, i, cut - i, sx_rag_count_tokens(s + i, cut - i))) != 0)
                return rc;
            seg_start = i = cut;
            continue;
        }
        tokens += t;
        i = unit_end;
    }
    if (tokens > 0) {
        size_t o = seg_start, l = end - seg_start;

        trim(s, &o, &l);
        return segs_push(ss, o, l, tokens);
    }
    return 0;
}

/* Splits text into sentence segments. */
static int split_sentences(const char *s, size_t len, int max, struct segs *ss)
{
    size_t start = 0, i = 0;
    int rc;

    while (i < len) {
        unsigned char c = (unsigned char)s[i];

        if (c == '.' || c == '!' || c == '?') {
            size_t j = i + 1;

            while (j < len && (s[j] == '.' || s[j] == '!' || s[j] == '?' || s[j] == '"' ||
                               s[j] == '\'' || s[j] == ')' || s[j] == ']'))
                j++;
            if (sentence_ends(s, j, len)) {
                if ((rc = add_sentence(ss, s, start, j - start, max)) != 0)
                    return rc;
                start = i = j;
                continue;
            }
            i = j;
        } else if (blank_line_at(s, i, len)) {
            if ((rc = add_sentence(ss, s, start, i - start, max)) != 0)
                return rc;
            start = ++i;
        } else {
            i = step(s, i, len);
        }
    }
    return start < len ? add_sentence(ss, s, start, len - start, max) : 0;
}

int sx_rag_chunk(const char *text, size_t len, const struct sx_rag_chunking *c,
                 struct sx_rag_piece **pieces, size_t *n)
{
    struct segs ss = {0};
    struct sx_rag_piece *out = NULL;
    size_t n_out = 0, i = 0;
    int rc;

    *pieces = NULL;
    *n = 0;
    if (!c || c->max_tokens < 16 || c->max_tokens > 2048 || c->overlap_tokens < 0 ||
        c->overlap_tokens > c->max_tokens / 2)
        return SX_EINVAL;
    if ((rc = split_sentences(text, len, c->max_tokens, &ss)) != 0)
        goto done;
    if (ss.n == 0)
        goto done;
    out = malloc(ss.n * sizeof(*out));
    if (!out) {
        rc = SX_ENOMEM;
        goto done;
    }

    /* Greedy packing; the next chunk starts with the trailing segments of
     * this one that fit the overlap, and always advances by one. */
    while (i < ss.n) {
        size_t j = i + 1, k;
        int ov = 0;

        /* The span is counted whole: in invalid UTF-8, neighbours can count
         * differently together than apart. */
        while (j < ss.n && sx_rag_count_tokens(text + ss.v[i].off, ss.v[j].off + ss.v[j].len -
                                               ss.v[i].off) <= c->max_tokens)
            j++;
        out[n_out].off = ss.v[i].off;
        out[n_out].len = ss.v[j - 1].off + ss.v[j - 1].len - ss.v[i].off;
        out[n_out].tokens = sx_rag_count_tokens(text + out[n_out].off, out[n_out].len);
        n_out++;
        if (j >= ss.n)
            break;
        k = j;
        while (k - 1 > i && ov + ss.v[k - 1].tokens <= c->overlap_tokens)
            ov += ss.v[--k].tokens;
        i = k;
    }
    *pieces = out;
    *n = n_out;
    out = NULL;
done:
    free(out);
    free(ss.v);
    return rc;
}
