/* The rag module's full-text index on SQLite FTS5: one FTS5 table per
 * tenant over rag_chunks (external content), tokenised by unicode61 with
 * Porter stemming, and a ranking function of our own, sx_rag_bm25(), that
 * FTS5 calls for every matching chunk. This is the only file with FTS SQL.
 *
 * Ranking is BM25F (Robertson & Zaragoza): a term's frequency is summed
 * over the columns title (weight 2), text (1) and meta (1), each length-
 * normalised against its own average, before the usual saturation with
 * k1 = 1.2, b = 0.75. IDF is ln(1 + (N - n + 0.5) / (n + 0.5)), positive
 * even when a term is in most chunks (small tenants). Each query term has
 * a weight (its count in the query). The same function returns the query's
 * reference score: the BM25F score of a chunk of average length holding
 * every query term that the tenant's index contains exactly once in its
 * text, i.e. the sum of weight * IDF over those terms. score / reference,
 * capped at 1, is the normalised score of rag.h. */
#include "rag/internal.h"

#include "base/err.h"
#include "base/log.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BM25_K1 1.2
#define BM25_B 0.75
#define N_COLS 3 /* title, text, meta */

static const double col_weight[N_COLS] = {2.0, 1.0, 1.0};

/* ---- the ranking function ------------------------------------------------ */

/* What sx_rag_bm25() computes once per query and keeps as FTS5 auxdata. */
struct query_stats {
    int n_phrase;
    double avg_len[N_COLS];
    double ideal;
    double idf[SX_RAG_QUERY_TERMS_MAX];
    double weight[SX_RAG_QUERY_TERMS_MAX];
};

static int count_row(const Fts5ExtensionApi *api, Fts5Context *ctx, void *user)
{
    (void)api;
    (void)ctx;
    (*(int64_t *)user)++;
    return SQLITE_OK;
}

static int query_stats_make(const Fts5ExtensionApi *api, Fts5Context *ctx, const char *weights,
                            struct query_stats **out)
{
    struct query_stats *qs = calloc(1, sizeof(*qs));
    sqlite3_int64 rows = 0, total;
    const char *p = weights ? weights : "";
    int i, rc;

    if (!qs)
        return SQLITE_NOMEM;
    qs->n_phrase = api->xPhraseCount(ctx);
    if (qs->n_phrase > SX_RAG_QUERY_TERMS_MAX)
        qs->n_phrase = SX_RAG_QUERY_TERMS_MAX;
    if ((rc = api->xRowCount(ctx, &rows)) != SQLITE_OK)
        goto fail;
    for (i = 0; i < N_COLS; i++) {
        if ((rc = api->xColumnTotalSize(ctx, i, &total)) != SQLITE_OK)
            goto fail;
        qs->avg_len[i] = rows > 0 ? (double)total / (double)rows : 0;
    }

    /* Per phrase: its weight from the argument, and its IDF from the
     * number of chunks that contain it. */
    for (i = 0; i < qs->n_phrase; i++) {
        int64_t n = 0;
        char *end;
        double w = strtod(p, &end);

        qs->weight[i] = end != p && w > 0 && w < 1e6 ? w : 1.0;
        p = end;
        if ((rc = api->xQueryPhrase(ctx, i, &n, count_row)) != SQLITE_OK)
            goto fail;
        qs->idf[i] = log(1.0 + ((double)rows - (double)n + 0.5) / ((double)n + 0.5));
        if (n > 0)
            qs->ideal += qs->weight[i] * qs->idf[i];
    }
    *out = qs;
    return SQLITE_OK;
fail:
    free(qs);
    return rc;
}

/* sx_rag_bm25(fts_table, weights, mode): mode 0 gives the chunk's BM25F
 * score, mode 1 the query's reference score. */
static void sx_rag_bm25(const Fts5ExtensionApi *api, Fts5Context *ctx, sqlite3_context *out,
                        int argc, sqlite3_value **argv)
{
    struct query_stats *qs = api->xGetAuxdata(ctx, 0);
    double tf[SX_RAG_QUERY_TERMS_MAX][N_COLS];
    double norm[N_COLS], score = 0;
    int n_inst = 0, i, c, rc;

    if (argc != 2) {
        sqlite3_result_error(out, "sx_rag_bm25(table, weights, mode)", -1);
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
    if (sqlite3_value_int(argv[1]) == 1) {
        sqlite3_result_double(out, qs->ideal);
        return;
    }

    /* Term frequencies per phrase and column in this chunk. */
    memset(tf, 0, sizeof(tf));
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

        for (c = 0; c < N_COLS; c++)
            if (tf[i][c] > 0)
                x += col_weight[c] * tf[i][c] / norm[c];
        if (x > 0)
            score += qs->weight[i] * qs->idf[i] * x * (BM25_K1 + 1) / (x + BM25_K1);
    }
    sqlite3_result_double(out, score);
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
    if (rc != SQLITE_OK)
        return rc;
    return fts->xCreateFunction(fts, "sx_rag_bm25", NULL, sx_rag_bm25, NULL);
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
             "tokenize='porter unicode61 remove_diacritics 2')", name);
    return sx_db_exec(db, sql) == 0 ? 0 : SX_ESTORE;
}

int sx_rag_index_drop(sx_db *db, const char *tenant_id)
{
    char name[64], sql[128];

    if (table_name(tenant_id, name) != 0)
        return 0; /* such a tenant never had an index */
    snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", name);
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

int sx_rag_index_search(sx_db *db, const char *tenant_id, const struct sx_rag_terms *t,
                        const char *datasets_json, struct sx_rag_cand *out, size_t cap,
                        size_t *n)
{
    char name[64], sql[1024], expr[SX_RAG_QUERY_TERMS_MAX * (SX_RAG_TERM_MAX + 8)];
    char weights[SX_RAG_QUERY_TERMS_MAX * 24];
    size_t i, used = 0;
    sx_stmt *st;
    int rc;

    *n = 0;
    if (t->n == 0 || cap == 0)
        return 0;
    if (table_name(tenant_id, name) != 0)
        return 0;
    if ((rc = table_exists(db, name)) <= 0)
        return rc;
    if (sx_rag_fts_expr(t, expr, sizeof(expr)) <= 0)
        return 0;
    weights[0] = '\0';
    for (i = 0; i < t->n; i++)
        used += (size_t)snprintf(weights + used, sizeof(weights) - used, "%s%.6g",
                                 i ? " " : "", t->weight[i]);

    /* The tenant filter repeats what the per-tenant table already ensures:
     * isolation does not rest on one mechanism. */
    snprintf(sql, sizeof(sql),
             "SELECT c.id, sx_rag_bm25(%s, $2, 0) AS r, sx_rag_bm25(%s, $2, 1)"
             " FROM %s JOIN rag_chunks c ON c.id = %s.rowid"
             " WHERE %s MATCH $1 AND c.tenant_id = $3"
             " AND c.dataset_id IN (SELECT d.id FROM rag_datasets d WHERE d.tenant_id = $3"
             " AND CASE WHEN $5 IS NULL THEN d.allow_rag = 1"
             " ELSE d.id IN (SELECT value FROM json_each($5)) END)"
             " ORDER BY r DESC LIMIT $4",
             name, name, name, name, name);
    st = sx_db_prepare(db, sql);
    if (!st)
        return SX_ESTORE;
    if (sx_stmt_bind_text(st, 1, expr) || sx_stmt_bind_text(st, 2, weights) ||
        sx_stmt_bind_text(st, 3, tenant_id) || sx_stmt_bind_int(st, 4, (int64_t)cap) ||
        (datasets_json ? sx_stmt_bind_text(st, 5, datasets_json) : sx_stmt_bind_null(st, 5))) {
        sx_stmt_done(st);
        return SX_ESTORE;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW && *n < cap) {
        out[*n].rowid = sx_stmt_int(st, 0);
        out[*n].bm25 = sx_stmt_double(st, 1);
        out[*n].ideal = sx_stmt_double(st, 2);
        (*n)++;
    }
    sx_stmt_done(st);
    return rc < 0 ? SX_ESTORE : 0;
}
