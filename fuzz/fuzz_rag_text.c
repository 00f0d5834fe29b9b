/* libFuzzer target for the rag module's text handling: arbitrary bytes
 * (invalid UTF-8 included) through query analysis, the FTS5 expression
 * builder, chunking with budgets and overlaps taken from the input, and
 * the index's FTS5 tokenizer. Checks the invariants callers rely on: terms
 * hold no FTS5 syntax, the expression quotes every term, chunks lie inside
 * the text, respect the budget and, in valid UTF-8, never start or end
 * inside a character; FTS5's integrity check (which tokenizes the row
 * again and compares) passes on an indexed copy of the input. */
#include <sqlite3.h>
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

/* An in-memory FTS5 table with the index's tokenizer, made once. */
static sqlite3 *index_db(void)
{
    static sqlite3 *db;

    if (db)
        return db;
    if (sx_rag_sqlite_setup() != 0 || sqlite3_open(":memory:", &db) != SQLITE_OK ||
        sqlite3_exec(db, "CREATE VIRTUAL TABLE t USING fts5(x, tokenize='sx_rag')", NULL,
                     NULL, NULL) != SQLITE_OK)
        abort();
    return db;
}

static void run(sqlite3 *db, const char *sql, const uint8_t *data, size_t size)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        abort();
    if (data)
        sqlite3_bind_text(st, 1, (const char *)data, (int)size, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (sqlite3_column_int64(st, 0) < 0)
            abort();
    if (rc != SQLITE_DONE)
        abort();
    sqlite3_finalize(st);
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
        if (!t.term[i][0] || strpbrk(t.term[i], "\"*^:(){}+-, \t\n") || !(t.weight[i] > 0))
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

    /* 3. The index's tokenizer: what it indexes, it finds again. */
    run(index_db(), "SELECT sx_rag_ntok(?1)", data, size);
    run(index_db(), "SELECT length(sx_rag_stem(?1))", data, size);
    run(index_db(), "INSERT INTO t(rowid, x) VALUES (1, ?1)", data, size);
    run(index_db(), "INSERT INTO t(t) VALUES ('integrity-check')", NULL, 0);
    run(index_db(), "DELETE FROM t", NULL, 0);
    return 0;
}
