/* libFuzzer target for the rag module's text handling: arbitrary bytes
 * (invalid UTF-8 included) through query analysis, the FTS5 expression
 * builder and chunking with budgets and overlaps taken from the input.
 * Checks the invariants callers rely on: terms hold no FTS5 syntax, the
 * expression quotes every term, chunks lie inside the text, respect the
 * budget and, in valid UTF-8, never start or end inside a character. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rag/rag.h"

static int continuation(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* 1 if d[0..n) is valid UTF-8 (overlong and surrogate forms aside). */
static int valid_utf8(const uint8_t *d, size_t n)
{
    size_t i = 0, k, len;

    while (i < n) {
        len = d[i] < 0x80 ? 1 : d[i] >= 0xC2 && d[i] < 0xE0 ? 2 : d[i] >= 0xE0 && d[i] < 0xF0 ? 3
            : d[i] >= 0xF0 && d[i] < 0xF5 ? 4 : 0;
        if (len == 0 || i + len > n)
            return 0;
        for (k = 1; k < len; k++)
            if (!continuation(d[i + k]))
                return 0;
        i += len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct sx_rag_terms t;
    struct sx_rag_chunking c;
    struct sx_rag_piece *p = NULL;
    char expr[SX_RAG_QUERY_TERMS_MAX * (SX_RAG_TERM_MAX + 8)];
    size_t n = 0, i, quotes = 0;
    int valid = valid_utf8(data, size);

    /* 1. Query analysis and the MATCH expression. */
    sx_rag_terms_parse(text, size, &t);
    if (t.n > SX_RAG_QUERY_TERMS_MAX)
        abort();
    for (i = 0; i < t.n; i++)
        if (!t.term[i][0] || strpbrk(t.term[i], "\"*^:(){}+-, \t\n") || t.weight[i] < 1)
            abort();
    if (sx_rag_fts_expr(&t, expr, sizeof(expr)) < 0)
        abort();
    for (i = 0; expr[i]; i++)
        quotes += expr[i] == '"';
    if (quotes != 2 * t.n)
        abort();

    /* 2. Chunking with a budget and overlap from the first bytes. */
    c.max_tokens = 16 + (size ? data[0] % 64 : 0);
    c.overlap_tokens = size > 1 ? data[1] % (c.max_tokens / 2 + 1) : 0;
    if (sx_rag_chunk(text, size, &c, &p, &n) != 0)
        abort();
    for (i = 0; i < n; i++) {
        size_t end = p[i].off + p[i].len;

        if (p[i].len == 0 || end > size || p[i].tokens > c.max_tokens ||
            p[i].tokens != sx_rag_count_tokens(text + p[i].off, p[i].len))
            abort();
        if (valid && (continuation(data[p[i].off]) ||
                      (end < size && continuation(data[end]))))
            abort();
    }
    free(p);
    return 0;
}
