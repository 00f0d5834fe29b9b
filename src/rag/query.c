/* Query analysis for the rag module: turns a user's text into plain search
 * terms (the only thing that reaches the index, so no FTS5 syntax can be
 * injected), drops common function words, and builds the FTS5 MATCH
 * expression and the normalised score. */
#include "rag/internal.h"

#include "base/err.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Function words of English (and the most common Portuguese and Spanish
 * ones) that carry no topic. Dropping them from queries is a general
 * technique, not tuned to any corpus: it keeps huge posting lists out of
 * every query (latency) and keeps the score's reference to topic words. */
static const char *const stopwords[] = {
    "a", "about", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "as", "at", "be", "been", "before", "being", "between", "both", "but", "by",
    "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for",
    "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers",
    "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just",
    "me", "more", "most", "my", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "out", "over", "own", "same", "she", "should",
    "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "then",
    "there", "these", "they", "this", "those", "through", "to", "too", "under", "until",
    "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your", "yours",
    /* Portuguese and Spanish */
    "al", "como", "com", "da", "das", "de", "del", "dos", "el", "em", "en", "es", "la",
    "las", "lo", "los", "mas", "na", "nas", "no", "nos", "o", "os", "para", "pela",
    "pelo", "por", "que", "se", "um", "uma", "un", "una", "y",
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int is_stopword(const char *w)
{
    static const char *sorted[sizeof(stopwords) / sizeof(stopwords[0])];
    static int ready; /* benign race: every thread writes the same data */
    const size_t n = sizeof(stopwords) / sizeof(stopwords[0]);

    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        memcpy(sorted, stopwords, sizeof(sorted));
        qsort(sorted, n, sizeof(sorted[0]), cmp_str);
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    return bsearch(&w, sorted, n, sizeof(sorted[0]), cmp_str) != NULL;
}

/* Decodes one UTF-8 character at s[i]; returns its length (1 for invalid
 * bytes, which the caller treats as separators) and the code point. */
static size_t decode(const unsigned char *s, size_t i, size_t len, unsigned *cp)
{
    unsigned c = s[i];
    size_t n, k;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    if (n == 0 || i + n > len) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = c & (0x7F >> n);
    for (k = 1; k < n; k++) {
        if ((s[i + k] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        *cp = (*cp << 6) | (s[i + k] & 0x3F);
    }
    return n;
}

/* Whether code point cp belongs inside a word: ASCII letters and digits,
 * and non-ASCII characters outside the common punctuation, symbol and
 * space blocks (the index's unicode61 tokenizer splits on those too). */
static int word_char(unsigned cp)
{
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
    if (cp == 0xFFFD || (cp >= 0x80 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7)
        return 0;
    if ((cp >= 0x2000 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x303F) ||
        (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF0F) ||
        (cp >= 0x1F000 && cp <= 0x1FAFF))
        return 0;
    return 1;
}

static void add_term(struct sx_rag_terms *t, const char *w, size_t len, double weight)
{
    size_t i;

    for (i = 0; i < t->n; i++) {
        if (strlen(t->term[i]) == len && memcmp(t->term[i], w, len) == 0) {
            t->weight[i] += weight;
            return;
        }
    }
    if (t->n == SX_RAG_QUERY_TERMS_MAX)
        return;
    memcpy(t->term[t->n], w, len);
    t->term[t->n][len] = '\0';
    t->weight[t->n] = weight;
    t->n++;
}

/* A word of the query being read: a plain word, or a hyphenated compound
 * ("IL-6") of parts. A compound weighs as two words: its joined form
 * ("il6", which the index's tokenizer adds too, tokenizer.c) as one, and
 * its parts, which also match texts that write them apart, share the
 * other. */
#define COMPOUND_PARTS 8

struct compound {
    char part[COMPOUND_PARTS][SX_RAG_TERM_MAX + 1];
    char joined[SX_RAG_TERM_MAX + 1];
    size_t joined_len;
    int parts, kept; /* parts read; parts held in part[] */
    bool joined_ok;
};

static void compound_add(struct compound *c, struct sx_rag_terms *t, const char *w,
                         size_t len, bool too_long)
{
    if (too_long || c->joined_len + len > SX_RAG_TERM_MAX)
        c->joined_ok = false;
    else
        memcpy(c->joined + c->joined_len, w, len);
    c->joined_len += len;
    c->parts++;
    if (too_long)
        return;
    if (c->kept == COMPOUND_PARTS) {
        add_term(t, w, len, 1.0); /* too many parts to be one word */
        return;
    }
    memcpy(c->part[c->kept], w, len);
    c->part[c->kept++][len] = '\0';
}

static void compound_end(struct compound *c, struct sx_rag_terms *t)
{
    double share = c->parts > 1 ? 1.0 / c->parts : 1.0;

    for (int k = 0; k < c->kept; k++)
        add_term(t, c->part[k], strlen(c->part[k]), share);
    if (c->parts > 1 && c->joined_ok)
        add_term(t, c->joined, c->joined_len, 1.0);
    c->parts = c->kept = 0;
    c->joined_len = 0;
    c->joined_ok = true;
}

void sx_rag_terms_parse(const char *text, size_t len, struct sx_rag_terms *out)
{
    const unsigned char *s = (const unsigned char *)text;
    struct sx_rag_terms all = {0};
    char w[SX_RAG_TERM_MAX + 1];
    struct compound c = {.joined_ok = true};
    size_t i = 0, k;
    int h;

    memset(out, 0, sizeof(*out));
    if (!text)
        return;

    /* 1. Words: runs of word characters, ASCII lower-cased, and the
     *    compounds they make with single hyphens. */
    while (i < len && all.n < SX_RAG_QUERY_TERMS_MAX) {
        size_t wl = 0, start;
        unsigned cp;
        int too_long = 0;

        while (i < len) {
            size_t n = decode(s, i, len, &cp);

            if (word_char(cp))
                break;
            i += n;
        }
        start = i;
        while (i < len) {
            size_t n = decode(s, i, len, &cp);

            if (!word_char(cp))
                break;
            if (wl + n > SX_RAG_TERM_MAX)
                too_long = 1;
            else
                for (k = 0; k < n; k++) {
                    unsigned char c = s[i + k];

                    w[wl++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
                }
            i += n;
        }
        if (i == start)
            continue;
        compound_add(&c, &all, w, wl, too_long);
        h = sx_rag_hyphen(text, i, len);
        if (h > 0 && i + (size_t)h < len && decode(s, i + (size_t)h, len, &cp) &&
            word_char(cp)) {
            i += (size_t)h; /* the compound goes on */
            continue;
        }
        compound_end(&c, &all);
    }
    compound_end(&c, &all); /* the term limit cut the query short */

    /* 2. Drop function words, unless the query is nothing else. */
    for (k = 0; k < all.n; k++) {
        if (is_stopword(all.term[k]))
            continue;
        memcpy(out->term[out->n], all.term[k], sizeof(out->term[0]));
        out->weight[out->n++] = all.weight[k];
    }
    if (out->n == 0)
        *out = all;
}

int sx_rag_fts_expr(const struct sx_rag_terms *t, char *out, size_t cap)
{
    size_t used = 0, i;

    if (cap == 0)
        return SX_ETOOBIG;
    out[0] = '\0';
    for (i = 0; i < t->n; i++) {
        /* Terms hold only word characters, so no quote can occur; the
         * quotes make every term a plain phrase, never an operator (OR,
         * NEAR, AND), a column filter, a prefix (*) or an anchor (^). */
        int n = snprintf(out + used, cap - used, "%s\"%s\"", i ? " OR " : "", t->term[i]);

        if (n < 0 || (size_t)n >= cap - used)
            return SX_ETOOBIG;
        used += (size_t)n;
    }
    return (int)used;
}

double sx_rag_normalise(double bm25, double ideal)
{
    double s;

    if (!(ideal > 0) || !(bm25 > 0))
        return 0;
    s = bm25 / ideal;
    return s > 1 ? 1 : s;
}
