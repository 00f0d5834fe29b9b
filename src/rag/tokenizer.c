/* The rag index's FTS5 tokenizer, "sx_rag": FTS5's porter stemmer over
 * unicode61 (case folded, diacritics removed), with two changes that
 * matter in technical text:
 *
 * - Hyphenated compounds. unicode61 cuts "IL-6", "TNF-alpha" or
 *   "beta-cell" into their parts, and the parts ("il", "6") are among the
 *   commonest tokens of such a text, so the name itself is lost, and a
 *   text that writes "IL6" could not be found by one that writes "IL-6".
 *   The parts stay, and the compound joined without its hyphens ("il6")
 *   is added at the position of its last part (FTS5_TOKEN_COLOCATED: a
 *   synonym, which FTS5's column sizes do not count, so lengths stay
 *   those of porter unicode61). Queries add the same joined term
 *   (query.c), so the two sides meet on it. A compound is two or more
 *   tokens separated each by one hyphen (sx_rag_hyphen()) and nothing
 *   else.
 * - Greek letters are spelled in Latin ("TNF-α" is "TNF-alpha", "β2" is
 *   "beta2"), the way both are written, before stemming.
 *
 * Queries are stemmed through this tokenizer too (sx_rag_stem() in
 * index.c), so a term is always looked up as the index holds it. */
#include "rag/internal.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#define WORD_MAX (SX_RAG_TERM_MAX + 1) /* longer joined forms are not added */

static const char *const inner_args[] = {"unicode61", "remove_diacritics", "2"};

struct tokenizer {
    fts5_tokenizer porter;
    Fts5Tokenizer *inner;  /* the text's tokens */
    Fts5Tokenizer *joiner; /* words made here: a second instance, because
                            * a token handed to the callback lives in its
                            * tokenizer's buffer, which stemming one more
                            * word would overwrite */
};

/* One xTokenize call: the caller's callback, and the compound being read. */
struct run {
    struct tokenizer *tk;
    void *ctx;
    int (*emit)(void *, int, const char *, int, int, int);
    const char *text;
    int flags;
    int start, end, parts; /* the compound so far: text[start, end) */
};

/* Latin names of the Greek small letters U+03B1..U+03C9 (final sigma
 * included), which is all unicode61 leaves of Greek after folding. */
static const char *const greek[] = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "sigma",
    "tau", "upsilon", "phi", "chi", "psi", "omega",
};

/* The Greek letter at s[i] (UTF-8, folded), or -1. */
static int greek_at(const char *s, int i, int n)
{
    unsigned a, b, cp;

    if (i + 1 >= n)
        return -1;
    a = (unsigned char)s[i];
    b = (unsigned char)s[i + 1];
    if ((a != 0xCE && a != 0xCF) || (b & 0xC0) != 0x80)
        return -1;
    cp = ((a & 0x1F) << 6) | (b & 0x3F);
    return cp >= 0x3B1 && cp <= 0x3C9 ? (int)(cp - 0x3B1) : -1;
}

/* Copies tok (n bytes) to out with its Greek letters spelled; 0 when it
 * has none or the result does not fit, else the new length. */
static int spell_greek(const char *tok, int n, char out[WORD_MAX])
{
    int i = 0, len = 0, found = 0;

    while (i < n) {
        int g = greek_at(tok, i, n);
        const char *add = g >= 0 ? greek[g] : tok + i;
        int k = g >= 0 ? (int)strlen(greek[g]) : 1;

        if (len + k >= WORD_MAX)
            return 0;
        memcpy(out + len, add, (size_t)k);
        len += k;
        i += g >= 0 ? 2 : 1;
        found |= g >= 0;
    }
    return found ? len : 0;
}

static int first_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    char *out = ctx;

    (void)flags;
    (void)start;
    (void)end;
    if (out[0] == '\0' && n > 0 && n < WORD_MAX) {
        memcpy(out, tok, (size_t)n);
        out[n] = '\0';
    }
    return SQLITE_OK;
}

/* The stem of word (n bytes, no separators) in out; "" if it has none. */
static int stem(struct run *r, const char *word, int n, char out[WORD_MAX])
{
    out[0] = '\0';
    return r->tk->porter.xTokenize(r->tk->joiner, out, r->flags, word, n, first_token);
}

/* Hands a stemmed token on, its Greek letters spelled and restemmed. */
static int emit_word(struct run *r, int flags, const char *tok, int n, int start, int end)
{
    char spelled[WORD_MAX], stemmed[WORD_MAX];
    int len = spell_greek(tok, n, spelled), rc;

    if (len == 0)
        return r->emit(r->ctx, flags, tok, n, start, end);
    if ((rc = stem(r, spelled, len, stemmed)) != SQLITE_OK)
        return rc;
    if (stemmed[0] == '\0')
        return r->emit(r->ctx, flags, tok, n, start, end);
    return r->emit(r->ctx, flags, stemmed, (int)strlen(stemmed), start, end);
}

/* Adds the joined form of the compound read so far, if it has parts. */
static int flush(struct run *r)
{
    char raw[WORD_MAX], joined[WORD_MAX];
    int n = 0, i, rc;

    if (r->parts < 2)
        return SQLITE_OK;
    for (i = r->start; i < r->end; i++) {
        int h = sx_rag_hyphen(r->text, (size_t)i, (size_t)r->end);

        if (h > 0) {
            i += h - 1;
            continue;
        }
        if (n == WORD_MAX - 1)
            return SQLITE_OK; /* longer than any query term */
        raw[n++] = r->text[i];
    }
    if ((rc = stem(r, raw, n, joined)) != SQLITE_OK || joined[0] == '\0')
        return rc;
    return emit_word(r, FTS5_TOKEN_COLOCATED, joined, (int)strlen(joined), r->start, r->end);
}

static int on_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    struct run *r = ctx;
    int rc, h = r->parts > 0 ? sx_rag_hyphen(r->text, (size_t)r->end, (size_t)start) : 0;

    if (h > 0 && start == r->end + h) {
        r->parts++;
        r->end = end;
    } else {
        if ((rc = flush(r)) != SQLITE_OK)
            return rc;
        r->start = start;
        r->end = end;
        r->parts = 1;
    }
    return emit_word(r, flags, tok, n, start, end);
}

static int tk_tokenize(Fts5Tokenizer *t, void *ctx, int flags, const char *text, int len,
                       int (*emit)(void *, int, const char *, int, int, int))
{
    struct tokenizer *tk = (struct tokenizer *)t;
    struct run r = {.tk = tk, .ctx = ctx, .emit = emit, .text = text, .flags = flags};
    int rc = tk->porter.xTokenize(tk->inner, &r, flags, text, len, on_token);

    return rc == SQLITE_OK ? flush(&r) : rc;
}

static void tk_delete(Fts5Tokenizer *t)
{
    struct tokenizer *tk = (struct tokenizer *)t;

    if (!tk)
        return;
    if (tk->inner)
        tk->porter.xDelete(tk->inner);
    if (tk->joiner)
        tk->porter.xDelete(tk->joiner);
    free(tk);
}

static int tk_create(void *ud, const char **args, int n_args, Fts5Tokenizer **out)
{
    fts5_api *fts = ud;
    struct tokenizer *tk = calloc(1, sizeof(*tk));
    void *porter_ud = NULL;
    int rc;

    (void)args;
    (void)n_args;
    *out = NULL;
    if (!tk)
        return SQLITE_NOMEM;
    rc = fts->xFindTokenizer(fts, "porter", &porter_ud, &tk->porter);
    if (rc == SQLITE_OK)
        rc = tk->porter.xCreate(porter_ud, (const char **)inner_args, 3, &tk->inner);
    if (rc == SQLITE_OK)
        rc = tk->porter.xCreate(porter_ud, (const char **)inner_args, 3, &tk->joiner);
    if (rc != SQLITE_OK) {
        tk_delete((Fts5Tokenizer *)tk);
        return rc;
    }
    *out = (Fts5Tokenizer *)tk;
    return SQLITE_OK;
}

int sx_rag_tokenizer_register(struct fts5_api *fts)
{
    fts5_tokenizer t = {.xCreate = tk_create, .xDelete = tk_delete, .xTokenize = tk_tokenize};

    return fts->xCreateTokenizer(fts, SX_RAG_TOKENIZER, fts, &t, NULL);
}
