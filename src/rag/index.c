/* The rag module's full-text index on SQLite FTS5: one FTS5 table per
 * tenant over rag_chunks (external content), tokenised by unicode61 with
 * Porter stemming, a vocabulary table beside it for document frequencies,
 * and a ranking function of our own, sx_rag_bm25(), that FTS5 calls for
 * every matching chunk. This is the only file with FTS SQL.
 *
 * Ranking is BM25F (Robertson & Zaragoza): a term's frequency is summed
 * over the columns title (weight 2), text (1) and meta (1), each length-
 * normalised against its own average, before the usual saturation with
 * k1 = 1.2, b = 0.75. IDF is ln(1 + (N - n + 0.5) / (n + 0.5)), positive
 * even when a term is in most chunks (small tenants). Each query term has
 * a weight (its count in the query).
 *
 * Reference score (for the normalised score of rag.h): the BM25F score of
 * a chunk of average length holding, once in its text, every query term
 * that the tenant's index contains: the sum of weight * IDF over those
 * terms.
 *
 * Speed: scoring a chunk costs far more than finding it, so common terms
 * are kept from generating candidates when they cannot change the answer
 * (the MaxScore idea of Turtle & Flood). A term's contribution is below
 * weight * IDF * (k1 + 1) whatever the chunk. Sorting terms by that bound,
 * the cheapest ones ("optional") whose bounds add up to less than the
 * score a hit needs still count in the score of chunks that contain a
 * rarer term, but a chunk holding only optional terms is never scored.
 * The score a hit needs is the caller's threshold, or, when the first pass
 * filled the k hits, the k-th best score; otherwise the query is run again
 * with fewer optional terms, so results are always exact. */
#include "rag/internal.h"

#include "base/err.h"
#include "base/log.h"

#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BM25_K1 1.2
#define BM25_B 0.75
#define N_COLS 3          /* title, text, meta */
#define GUESS_FRACTION 0.5 /* first-pass guess of the k-th score / reference */
#define STEMS_MAX 256

static const double col_weight[N_COLS] = {2.0, 1.0, 1.0};

/* ---- SQL functions ------------------------------------------------------- */

/* What sx_rag_bm25() keeps per query as FTS5 auxdata: per phrase a weight
 * and an IDF (from the argument), and the columns' average lengths. */
struct query_stats {
    int n_phrase;
    double avg_len[N_COLS];
    double weight[2 * SX_RAG_QUERY_TERMS_MAX];
    double idf[2 * SX_RAG_QUERY_TERMS_MAX];
};

static int query_stats_make(const Fts5ExtensionApi *api, Fts5Context *ctx, const char *params,
                            struct query_stats **out)
{
    struct query_stats *qs = calloc(1, sizeof(*qs));
    sqlite3_int64 rows = 0, total;
    const char *p = params ? params : "";
    int i, rc;

    if (!qs)
        return SQLITE_NOMEM;
    qs->n_phrase = api->xPhraseCount(ctx);
    if (qs->n_phrase > 2 * SX_RAG_QUERY_TERMS_MAX)
        qs->n_phrase = 2 * SX_RAG_QUERY_TERMS_MAX;
    if ((rc = api->xRowCount(ctx, &rows)) != SQLITE_OK)
        goto fail;
    for (i = 0; i < N_COLS; i++) {
        if ((rc = api->xColumnTotalSize(ctx, i, &total)) != SQLITE_OK)
            goto fail;
        qs->avg_len[i] = rows > 0 ? (double)total / (double)rows : 0;
    }
    for (i = 0; i < qs->n_phrase; i++) {
        char *end;

        qs->weight[i] = strtod(p, &end);
        p = end;
        qs->idf[i] = strtod(p, &end);
        p = end;
        if (!(qs->weight[i] >= 0 && qs->weight[i] < 1e6))
            qs->weight[i] = 0;
        if (!(qs->idf[i] >= 0 && qs->idf[i] < 1e3))
            qs->idf[i] = 0;
    }
    *out = qs;
    return SQLITE_OK;
fail:
    free(qs);
    return rc;
}

/* sx_rag_bm25(fts_table, params): the chunk's BM25F score; params holds
 * "weight idf" per phrase of the MATCH expression, in order. */
static void sx_rag_bm25(const Fts5ExtensionApi *api, Fts5Context *ctx, sqlite3_context *out,
                        int argc, sqlite3_value **argv)
{
    struct query_stats *qs = api->xGetAuxdata(ctx, 0);
    double tf[2 * SX_RAG_QUERY_TERMS_MAX][N_COLS];
    double norm[N_COLS], score = 0;
    int n_inst = 0, i, c, rc;

    if (argc != 1) {
        sqlite3_result_error(out, "sx_rag_bm25(table, params)", -1);
        return;
    }
    if (!qs) {
        rc = query_stats_make(api, ctx, (const char *)sqlite3_value_text(argv[0]), &qs);
        if (rc == SQLITE_OK)
            rc = api->xSetAuxdata(ctx, qs, free);
        if (rc != SQLITE_OK) {
            sqlite3_result_error_code(out, rc);
            return;
        }
    }

    /* Term frequencies per phrase and column in this chunk. */
    memset(tf, 0, sizeof(tf[0]) * (size_t)qs->n_phrase);
    if ((rc = api->xInstCount(ctx, &n_inst)) != SQLITE_OK) {
        sqlite3_result_error_code(out, rc);
        return;
    }
    for (i = 0; i < n_inst; i++) {
        int phrase, col, off;

        if (api->xInst(ctx, i, &phrase, &col, &off) == SQLITE_OK && phrase >= 0 &&
            phrase < qs->n_phrase && col >= 0 && col < N_COLS)
            tf[phrase][col] += 1;
    }
    for (c = 0; c < N_COLS; c++) {
        int len = 0;

        api->xColumnSize(ctx, c, &len);
        norm[c] = qs->avg_len[c] > 0 ? 1 - BM25_B + BM25_B * len / qs->avg_len[c] : 1;
    }

    /* BM25F: weighted, length-normalised frequency, then saturation. */
    for (i = 0; i < qs->n_phrase; i++) {
        double x = 0;

        if (qs->weight[i] == 0)
            continue;
        for (c = 0; c < N_COLS; c++)
            if (tf[i][c] > 0)
                x += col_weight[c] * tf[i][c] / norm[c];
        if (x > 0)
            score += qs->weight[i] * qs->idf[i] * x * (BM25_K1 + 1) / (x + BM25_K1);
    }
    sqlite3_result_double(out, score);
}

/* sx_rag_rows(fts_table): the number of rows in the index. */
static void sx_rag_rows(const Fts5ExtensionApi *api, Fts5Context *ctx, sqlite3_context *out,
                        int argc, sqlite3_value **argv)
{
    sqlite3_int64 rows = 0;

    (void)argc;
    (void)argv;
    if (api->xRowCount(ctx, &rows) != SQLITE_OK)
        rows = 0;
    sqlite3_result_int64(out, rows);
}

struct stem_buf {
    char s[STEMS_MAX];
    size_t len;
};

static int stem_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    struct stem_buf *b = ctx;

    (void)flags;
    (void)start;
    (void)end;
    if (n <= 0 || b->len + (size_t)n + 2 > sizeof(b->s))
        return SQLITE_OK;
    if (b->len)
        b->s[b->len++] = ' ';
    memcpy(b->s + b->len, tok, (size_t)n);
    b->len += (size_t)n;
    return SQLITE_OK;
}

/* sx_rag_stem(text): the tokens the index's tokenizer makes of text,
 * space-separated, so that a term can be looked up in the vocabulary. */
static void sx_rag_stem(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    static const char *const args[] = {"unicode61", "remove_diacritics", "2"};
    fts5_api *fts = sqlite3_user_data(ctx);
    const char *text = (const char *)sqlite3_value_text(argv[0]);
    struct stem_buf b = {.len = 0};
    fts5_tokenizer tk;
    Fts5Tokenizer *t = NULL;
    void *ud = NULL;
    int rc;

    (void)argc;
    if (!text) {
        sqlite3_result_null(ctx);
        return;
    }
    rc = fts->xFindTokenizer(fts, "porter", &ud, &tk);
    if (rc == SQLITE_OK)
        rc = tk.xCreate(ud, (const char **)args, 3, &t);
    if (rc == SQLITE_OK)
        rc = tk.xTokenize(t, &b, FTS5_TOKENIZE_QUERY, text, sqlite3_value_bytes(argv[0]),
                          stem_token);
    if (t)
        tk.xDelete(t);
    if (rc != SQLITE_OK)
        sqlite3_result_error_code(ctx, rc);
    else
        sqlite3_result_text(ctx, b.s, (int)b.len, SQLITE_TRANSIENT);
}

/* sx_rag_probe(): 1, so that the module can check that setup ran. */
static void probe(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int(ctx, 1);
}

static int register_on(sqlite3 *db, char **errmsg, const sqlite3_api_routines *routines)
{
    fts5_api *fts = NULL;
    sqlite3_stmt *st = NULL;
    int rc;

    (void)errmsg;
    (void)routines;
    rc = sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_pointer(st, 1, (void *)&fts, "fts5_api_ptr", NULL);
    sqlite3_step(st);
    sqlite3_finalize(st);
    if (!fts || fts->iVersion < 2)
        return SQLITE_ERROR;
    rc = sqlite3_create_function(db, "sx_rag_probe", 0, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                 NULL, probe, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function(db, "sx_rag_stem", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                     fts, sx_rag_stem, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = fts->xCreateFunction(fts, "sx_rag_bm25", NULL, sx_rag_bm25, NULL);
    if (rc == SQLITE_OK)
        rc = fts->xCreateFunction(fts, "sx_rag_rows", NULL, sx_rag_rows, NULL);
    return rc;
}

int sx_rag_sqlite_setup(void)
{
    typedef int (*entry_fn)(sqlite3 *, char **, const sqlite3_api_routines *);
    union {
        entry_fn fn;
        void (*generic)(void);
    } entry = {.fn = register_on};

    return sqlite3_auto_extension(entry.generic) == SQLITE_OK ? 0 : SX_ESTORE;
}

/* ---- per-tenant tables --------------------------------------------------- */

/* "rag_fts_<tenant id>"; tenant ids are [A-Za-z0-9_], anything else is
 * refused so that the name can go into SQL text. */
static int table_name(const char *tenant_id, char out[64])
{
    const char *p;

    if (!tenant_id || !*tenant_id || strlen(tenant_id) > 48)
        return SX_EINVAL;
    for (p = tenant_id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_'))
            return SX_EINVAL;
    snprintf(out, 64, "rag_fts_%s", tenant_id);
    return 0;
}

static int table_exists(sx_db *db, const char *name)
{
    sx_stmt *st = sx_db_query(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                  "name = $1", "t", name);
    int rc;

    if (!st)
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    sx_stmt_done(st);
    return rc == SX_STORE_ROW ? 1 : rc == SX_STORE_DONE ? 0 : SX_ESTORE;
}

int sx_rag_index_create(sx_db *db, const char *tenant_id)
{
    char name[64], sql[512];
    int rc;

    if ((rc = table_name(tenant_id, name)) != 0)
        return rc;
    snprintf(sql, sizeof(sql),
             "CREATE VIRTUAL TABLE IF NOT EXISTS %s USING fts5(title, text, meta, "
             "content='rag_chunks', content_rowid='id', "
             "tokenize='porter unicode61 remove_diacritics 2');"
             "CREATE VIRTUAL TABLE IF NOT EXISTS %s_v USING fts5vocab(%s, 'row');",
             name, name, name);
    return sx_db_exec(db, sql) == 0 ? 0 : SX_ESTORE;
}

int sx_rag_index_drop(sx_db *db, const char *tenant_id)
{
    char name[64], sql[192];

    if (table_name(tenant_id, name) != 0)
        return 0; /* such a tenant never had an index */
    snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s_v; DROP TABLE IF EXISTS %s", name,
             name);
    return sx_db_exec(db, sql) == 0 ? 0 : SX_ESTORE;
}

static int index_write(sx_db *db, const char *tenant_id, const char *cmd, int64_t rowid,
                       const char *title, const char *text, const char *meta)
{
    char name[64], sql[256];
    int64_t rc;

    if (table_name(tenant_id, name) != 0)
        return SX_EINVAL;
    if (cmd)
        snprintf(sql, sizeof(sql), "INSERT INTO %s(%s, rowid, title, text, meta) "
                 "VALUES ('%s', $1, $2, $3, $4)", name, name, cmd);
    else
        snprintf(sql, sizeof(sql), "INSERT INTO %s(rowid, title, text, meta) "
                 "VALUES ($1, $2, $3, $4)", name);
    rc = sx_db_run(db, sql, "ittt", rowid, title, text, meta);
    return rc < 0 ? SX_ESTORE : 0;
}

int sx_rag_index_add(sx_db *db, const char *tenant_id, int64_t rowid, const char *title,
                     const char *text, const char *meta)
{
    return index_write(db, tenant_id, NULL, rowid, title, text, meta);
}

int sx_rag_index_remove(sx_db *db, const char *tenant_id, int64_t rowid, const char *title,
                        const char *text, const char *meta)
{
    return index_write(db, tenant_id, "delete", rowid, title, text, meta);
}

/* ---- search -------------------------------------------------------------- */

/* A query term with what the vocabulary says of it. */
struct plan_term {
    const char *term;
    double weight, df, idf, bound;
    bool single; /* one token: df exact; else a phrase, always essential */
};

/* Document frequencies of the terms (0: not in the index). */
static int lookup_df(sx_db *db, const char *name, const struct sx_rag_terms *t,
                     struct plan_term *p)
{
    char sql[160];
    size_t i;

    snprintf(sql, sizeof(sql), "SELECT s.stem, (SELECT doc FROM %s_v WHERE term = s.stem) "
             "FROM (SELECT sx_rag_stem($1) AS stem) s", name);
    for (i = 0; i < t->n; i++) {
        sx_stmt *st = sx_db_query(db, sql, "t", t->term[i]);
        const char *stem;
        int rc;

        if (!st)
            return SX_ESTORE;
        rc = sx_stmt_step(st);
        p[i].term = t->term[i];
        p[i].weight = t->weight[i];
        p[i].df = 0;
        p[i].single = true;
        if (rc == SX_STORE_ROW) {
            stem = sx_stmt_text(st, 0);
            p[i].single = stem && !strchr(stem, ' ');
            /* A phrase's frequency is unknown here; its rarest-token bound
             * is unknown too, so it is treated as present everywhere it
             * could be (n = 1) and always searched. */
            p[i].df = !stem || !*stem ? 0 : p[i].single ? (double)sx_stmt_int(st, 1) : 1;
        }
        sx_stmt_done(st);
        if (rc < 0)
            return SX_ESTORE;
    }
    return 0;
}

/* Rows in the index, read through a term known to be in it. */
static int64_t index_rows(sx_db *db, const char *name, const char *term)
{
    char sql[256], expr[SX_RAG_TERM_MAX + 3];
    sx_stmt *st;
    int64_t n = 0;

    snprintf(sql, sizeof(sql), "SELECT sx_rag_rows(%s) FROM %s WHERE %s MATCH $1 LIMIT 1",
             name, name, name);
    snprintf(expr, sizeof(expr), "\"%s\"", term);
    st = sx_db_query(db, sql, "t", expr);
    if (!st)
        return SX_ESTORE;
    if (sx_stmt_step(st) == SX_STORE_ROW)
        n = sx_stmt_int(st, 0);
    sx_stmt_done(st);
    return n;
}

static int by_bound(const void *a, const void *b)
{
    const struct plan_term *x = a, *y = b;

    return x->bound < y->bound ? -1 : x->bound > y->bound;
}

static int append(char *buf, size_t cap, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int append(char *buf, size_t cap, size_t *used, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf + *used, cap - *used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *used)
        return SX_ETOOBIG;
    *used += (size_t)n;
    return 0;
}

/* Runs one pass with terms p[0..n_opt) optional and p[n_opt..n) essential:
 * ("e1" OR "e2") AND ("e1" OR "e2" OR "o1" ...), the repeated essential
 * phrases weighted 0, so that candidates hold an essential term and every
 * term scores. */
static int run_pass(sx_db *db, const char *name, const char *tenant_id,
                    const struct plan_term *p, size_t n, size_t n_opt,
                    const char *datasets_json, struct sx_rag_cand *out, size_t cap,
                    size_t *n_out)
{
    char expr[2 * SX_RAG_QUERY_TERMS_MAX * (SX_RAG_TERM_MAX + 8) + 16];
    char params[2 * SX_RAG_QUERY_TERMS_MAX * 40], sql[1024];
    size_t eu = 0, pu = 0, i;
    sx_stmt *st;
    int rc = 0;

    *n_out = 0;
    if (n_opt)
        rc |= append(expr, sizeof(expr), &eu, "(");
    for (i = n_opt; i < n; i++) {
        rc |= append(expr, sizeof(expr), &eu, "%s\"%s\"", i > n_opt ? " OR " : "", p[i].term);
        rc |= append(params, sizeof(params), &pu, "%.6g %.6g ", p[i].weight, p[i].idf);
    }
    if (n_opt) {
        rc |= append(expr, sizeof(expr), &eu, ") AND (");
        for (i = 0; i < n; i++) {
            rc |= append(expr, sizeof(expr), &eu, "%s\"%s\"", i ? " OR " : "", p[i].term);
            rc |= append(params, sizeof(params), &pu, "%.6g %.6g ",
                         i < n_opt ? p[i].weight : 0.0, p[i].idf);
        }
        rc |= append(expr, sizeof(expr), &eu, ")");
    }
    if (rc)
        return SX_ETOOBIG;

    /* The tenant filter repeats what the per-tenant table already ensures:
     * isolation does not rest on one mechanism. */
    snprintf(sql, sizeof(sql),
             "SELECT c.id, sx_rag_bm25(%s, $2) AS r"
             " FROM %s JOIN rag_chunks c ON c.id = %s.rowid"
             " WHERE %s MATCH $1 AND c.tenant_id = $3"
             " AND c.dataset_id IN (SELECT d.id FROM rag_datasets d WHERE d.tenant_id = $3"
             " AND CASE WHEN $5 IS NULL THEN d.allow_rag = 1"
             " ELSE d.id IN (SELECT value FROM json_each($5)) END)"
             " ORDER BY r DESC LIMIT $4",
             name, name, name, name);
    st = sx_db_prepare(db, sql);
    if (!st)
        return SX_ESTORE;
    if (sx_stmt_bind_text(st, 1, expr) || sx_stmt_bind_text(st, 2, params) ||
        sx_stmt_bind_text(st, 3, tenant_id) || sx_stmt_bind_int(st, 4, (int64_t)cap) ||
        (datasets_json ? sx_stmt_bind_text(st, 5, datasets_json) : sx_stmt_bind_null(st, 5))) {
        sx_stmt_done(st);
        return SX_ESTORE;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW && *n_out < cap) {
        out[*n_out].rowid = sx_stmt_int(st, 0);
        out[*n_out].bm25 = sx_stmt_double(st, 1);
        (*n_out)++;
    }
    sx_stmt_done(st);
    return rc < 0 ? SX_ESTORE : 0;
}

int sx_rag_index_search(sx_db *db, const char *tenant_id, const struct sx_rag_terms *t,
                        const char *datasets_json, double threshold,
                        struct sx_rag_cand *out, size_t cap, size_t *n, double *ideal)
{
    struct plan_term p[SX_RAG_QUERY_TERMS_MAX];
    char name[64];
    size_t i, k = 0, n_exact = 0, n_guess = 0;
    double rows, sum, need;
    int64_t nrows;
    int rc;

    *n = 0;
    *ideal = 0;
    if (t->n == 0 || cap == 0 || table_name(tenant_id, name) != 0)
        return 0;
    if ((rc = table_exists(db, name)) <= 0)
        return rc;

    /* 1. Frequencies; terms absent from the index drop out. */
    if ((rc = lookup_df(db, name, t, p)) != 0)
        return rc;
    for (i = 0; i < t->n; i++)
        if (p[i].df > 0)
            p[k++] = p[i];
    if (k == 0)
        return 0;
    nrows = index_rows(db, name, p[0].term);
    if (nrows < 0)
        return (int)nrows;
    rows = (double)nrows;

    /* 2. IDF, bounds and the reference score. */
    for (i = 0; i < k; i++) {
        double df = p[i].df > rows ? rows : p[i].df;

        p[i].idf = log(1.0 + (rows - df + 0.5) / (df + 0.5));
        p[i].bound = p[i].single ? p[i].weight * p[i].idf * (BM25_K1 + 1) : INFINITY;
        *ideal += p[i].weight * p[i].idf;
    }
    qsort(p, k, sizeof(p[0]), by_bound);

    /* 3. How many terms may be optional: exactly, below the threshold; as
     * a guess, below a fraction of the reference (checked after). */
    need = threshold * *ideal;
    for (i = 0, sum = 0; i < k; i++) {
        sum += p[i].bound;
        if (sum >= (need > GUESS_FRACTION * *ideal ? need : GUESS_FRACTION * *ideal))
            break;
        n_guess = i + 1;
        if (sum < need)
            n_exact = i + 1;
    }
    if (n_guess == k)
        n_guess = n_exact = k - 1; /* some term must generate candidates */
    if (n_exact > n_guess)
        n_exact = n_guess;

    /* 4. The guess holds if it prunes below the threshold, or if k hits
     * came back and the k-th beats every chunk with optional terms only. */
    if (getenv("RAGDBG")) { fprintf(stderr, "k=%zu guess=%zu exact=%zu:", k, n_guess, n_exact); for (i=0;i<k;i++) fprintf(stderr, " %s/%.0f", p[i].term, p[i].df); fprintf(stderr, "\n"); }
    if (n_guess > n_exact) {
        for (i = 0, sum = 0; i < n_guess; i++)
            sum += p[i].bound;
        if ((rc = run_pass(db, name, tenant_id, p, k, n_guess, datasets_json, out, cap, n)))
            return rc;
        if (getenv("RAGDBG")) fprintf(stderr, "  guess n=%zu kth=%.3f sum=%.3f\n", *n, *n ? out[*n-1].bm25 : 0, sum);
        if (*n == cap && out[cap - 1].bm25 >= sum)
            return 0;
    }
    return run_pass(db, name, tenant_id, p, k, n_exact, datasets_json, out, cap, n);
}
