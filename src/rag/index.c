/* The rag module's full-text index on SQLite FTS5: one FTS5 table per
 * tenant over rag_chunks (external content), tokenised by the module's
 * tokenizer (tokenizer.c: Porter stemming over unicode61, compounds also
 * joined), a vocabulary table beside it for document frequencies,
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
 * Speed: scoring a chunk costs far more than finding it (FTS5 merges
 * doclists fast; reading positions for the score is slow), so only chunks
 * that could score what a hit needs are scored, in the spirit of MaxScore
 * (Turtle & Flood) and WAND (Broder et al.). A term's contribution is
 * below bound = weight * IDF * (k1 + 1) whatever the chunk, so a chunk can
 * only reach score s if the bounds of the terms it holds add up to s. The
 * MATCH expression says exactly that, as a small AND/OR formula over the
 * terms ("zircon" OR ("rare" AND "common")), AND-ed with the plain OR of
 * every term so that every term counts in the score. The score a hit needs
 * is the caller's threshold (exact at once) or a guess of the k-th score;
 * a guess is kept only if k hits reached it, else the query runs again at
 * the threshold. Results are therefore always exactly those of scoring
 * every matching chunk.
 *
 * Datasets: each chunk carries its dataset's token (digits, which neither
 * the tokenizer nor the stemmer alter) in the unscored column ds, so the
 * datasets a query may see are one more AND in the expression. */
#include "rag/internal.h"

#include "base/err.h"
#include "base/log.h"

#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BM25_K1 SX_RAG_K1
#define N_COLS SX_RAG_COLS /* title, text, meta */
#define GUESS_FRACTION 0.5 /* first-pass guess of the k-th score / reference */
#define FORMULA_TERMS 40   /* phrases in the candidate formula, at most */
#define FORMULA_DEPTH 3    /* terms AND-ed in one branch, at most */
#define STEMS_MAX 256

#define ID_SERIAL_SHIFT SX_RAG_ID_SERIAL_SHIFT

/* ---- SQL functions ------------------------------------------------------- */

/* What sx_rag_bm25() keeps per query as FTS5 auxdata: the phrases it
 * scores (first, first + 1, ...), a weight and an IDF for each (from the
 * argument), and the columns' average lengths. */
struct query_stats {
    int first, n;
    double avg_len[N_COLS];
    double weight[SX_RAG_QUERY_TERMS_MAX];
    double idf[SX_RAG_QUERY_TERMS_MAX];
    double rest[SX_RAG_QUERY_TERMS_MAX + 1]; /* bound sums of phrases i.. */
    double need;                             /* score a chunk must reach */
    int k, n_top;                            /* the k best scores so far: */
    double *top;                             /* a min-heap of n_top */
};

static void query_stats_free(void *p)
{
    struct query_stats *qs = p;

    if (qs)
        free(qs->top);
    free(qs);
}

/* Keeps score among the k best (min-heap on top[0]). */
static void top_push(struct query_stats *qs, double score)
{
    int i, c;

    if (qs->n_top == qs->k) {
        if (score <= qs->top[0])
            return;
        i = 0; /* replace the root, sift down */
        for (;;) {
            c = 2 * i + 1;
            if (c >= qs->n_top)
                break;
            if (c + 1 < qs->n_top && qs->top[c + 1] < qs->top[c])
                c++;
            if (qs->top[c] >= score)
                break;
            qs->top[i] = qs->top[c];
            i = c;
        }
        qs->top[i] = score;
        return;
    }
    for (i = qs->n_top++; i > 0 && qs->top[(i - 1) / 2] > score; i = (i - 1) / 2)
        qs->top[i] = qs->top[(i - 1) / 2];
    qs->top[i] = score;
}

static int query_stats_make(const Fts5ExtensionApi *api, Fts5Context *ctx, const char *params,
                            struct query_stats **out)
{
    struct query_stats *qs = calloc(1, sizeof(*qs));
    sqlite3_int64 rows = 0, total;
    const char *p = params ? params : "";
    int i, rc, n_phrase = api->xPhraseCount(ctx);
    char *end;

    if (!qs)
        return SQLITE_NOMEM;
    if ((rc = api->xRowCount(ctx, &rows)) != SQLITE_OK)
        goto fail;
    for (i = 0; i < N_COLS; i++) {
        if ((rc = api->xColumnTotalSize(ctx, i, &total)) != SQLITE_OK)
            goto fail;
        qs->avg_len[i] = rows > 0 ? (double)total / (double)rows : 0;
    }

    /* "first n k need weight idf weight idf ...", phrases by falling
     * bound. */
    qs->first = (int)strtol(p, &end, 10);
    p = end;
    qs->n = (int)strtol(p, &end, 10);
    p = end;
    qs->k = (int)strtol(p, &end, 10);
    p = end;
    qs->need = strtod(p, &end);
    p = end;
    if (qs->first < 0 || qs->n < 0 || qs->n > SX_RAG_QUERY_TERMS_MAX ||
        qs->first + qs->n > n_phrase || qs->k < 1 || qs->k > 100000 || !(qs->need >= 0)) {
        rc = SQLITE_ERROR;
        goto fail;
    }
    if (!(qs->top = malloc((size_t)qs->k * sizeof(*qs->top)))) {
        rc = SQLITE_NOMEM;
        goto fail;
    }
    for (i = 0; i < qs->n; i++) {
        qs->weight[i] = strtod(p, &end);
        p = end;
        qs->idf[i] = strtod(p, &end);
        p = end;
        if (!(qs->weight[i] >= 0 && qs->weight[i] < 1e6))
            qs->weight[i] = 0;
        if (!(qs->idf[i] >= 0 && qs->idf[i] < 1e3))
            qs->idf[i] = 0;
    }
    for (i = qs->n; i-- > 0;)
        qs->rest[i] = qs->rest[i + 1] + qs->weight[i] * qs->idf[i] * (BM25_K1 + 1);
    *out = qs;
    return SQLITE_OK;
fail:
    query_stats_free(qs);
    return rc;
}

/* sx_rag_bm25(fts_table, params): the chunk's BM25F score over the
 * phrases params names (see struct query_stats). Only their positions are
 * read; other phrases of the expression only select candidates. A chunk
 * that cannot reach the need, or the k-th best score seen so far in this
 * query, scores 0 as soon as that is certain (its exact score could not
 * put it among the k best), which saves reading the rest of its
 * positions. */
static void sx_rag_bm25(const Fts5ExtensionApi *api, Fts5Context *ctx, sqlite3_context *out,
                        int argc, sqlite3_value **argv)
{
    struct query_stats *qs = api->xGetAuxdata(ctx, 0);
    double norm[N_COLS], score = 0, bar;
    sqlite3_int64 rowid;
    int i, c, rc;

    if (argc != 1) {
        sqlite3_result_error(out, "sx_rag_bm25(table, params)", -1);
        return;
    }
    if (!qs) {
        rc = query_stats_make(api, ctx, (const char *)sqlite3_value_text(argv[0]), &qs);
        if (rc == SQLITE_OK)
            rc = api->xSetAuxdata(ctx, qs, query_stats_free);
        if (rc != SQLITE_OK) {
            sqlite3_result_error_code(out, rc);
            return;
        }
    }
    /* Column lengths ride in the rowid (see sx_rag_index_chunk_id), which
     * spares FTS5 a docsize lookup per chunk. */
    rowid = api->xRowid(ctx);
    for (c = 0; c < N_COLS; c++) {
        int len = 0;

        if (rowid >> ID_SERIAL_SHIFT)
            len = sx_rag_id_len(rowid, c);
        else
            api->xColumnSize(ctx, c, &len);
        norm[c] = sx_rag_norm(len, qs->avg_len[c]);
    }

    /* BM25F: per phrase, its weighted, length-normalised frequency over the
     * columns, then saturation; stop when the rest cannot make the bar. */
    bar = qs->n_top == qs->k && qs->top[0] > qs->need ? qs->top[0] : qs->need;
    for (i = 0; i < qs->n; i++) {
        Fts5PhraseIter it;
        int col, off, tf[N_COLS] = {0};

        if (score + qs->rest[i] < bar) {
            sqlite3_result_double(out, 0);
            return;
        }
        if (qs->weight[i] == 0)
            continue;
        if (api->xPhraseFirst(ctx, qs->first + i, &it, &col, &off) != SQLITE_OK)
            continue;
        for (; col >= 0; api->xPhraseNext(ctx, &it, &col, &off))
            if (col < N_COLS)
                tf[col]++;
        score += sx_rag_term_score(tf, norm, qs->weight[i], qs->idf[i]);
    }
    top_push(qs, score);
    sqlite3_result_double(out, score);
}

/* sx_rag_tf(fts_table): the first phrase's frequency in the chunk's
 * title, text and meta, 20 bits each (title lowest), for postings.c. */
static void sx_rag_tf(const Fts5ExtensionApi *api, Fts5Context *ctx, sqlite3_context *out,
                      int argc, sqlite3_value **argv)
{
    Fts5PhraseIter it;
    int64_t tf[N_COLS] = {0};
    int col, off;

    (void)argc;
    (void)argv;
    if (api->xPhraseFirst(ctx, 0, &it, &col, &off) != SQLITE_OK) {
        sqlite3_result_error(out, "sx_rag_tf: cannot read positions", -1);
        return;
    }
    for (; col >= 0; api->xPhraseNext(ctx, &it, &col, &off))
        if (col < N_COLS && tf[col] < 0xFFFFF)
            tf[col]++;
    sqlite3_result_int64(out, tf[0] | tf[1] << 20 | tf[2] << 40);
}

/* sx_rag_totals(fts_table): "rows title text meta", the row count and the
 * columns' total token counts, for postings.c. */
static void sx_rag_totals(const Fts5ExtensionApi *api, Fts5Context *ctx,
                          sqlite3_context *out, int argc, sqlite3_value **argv)
{
    sqlite3_int64 rows = 0, total[N_COLS] = {0};
    char buf[96];
    int c;

    (void)argc;
    (void)argv;
    if (api->xRowCount(ctx, &rows) != SQLITE_OK) {
        sqlite3_result_error(out, "sx_rag_totals: no row count", -1);
        return;
    }
    for (c = 0; c < N_COLS; c++)
        if (api->xColumnTotalSize(ctx, c, &total[c]) != SQLITE_OK) {
            sqlite3_result_error(out, "sx_rag_totals: no column size", -1);
            return;
        }
    snprintf(buf, sizeof(buf), "%lld %lld %lld %lld", (long long)rows, (long long)total[0],
             (long long)total[1], (long long)total[2]);
    sqlite3_result_text(out, buf, -1, SQLITE_TRANSIENT);
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

/* Both callbacks below skip colocated tokens (a compound's joined form):
 * FTS5 does not count them in a column's size, and a term's stem is the
 * phrase of its tokens. */
static int stem_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    struct stem_buf *b = ctx;

    (void)start;
    (void)end;
    if ((flags & FTS5_TOKEN_COLOCATED) || n <= 0 || b->len + (size_t)n + 2 > sizeof(b->s))
        return SQLITE_OK;
    if (b->len)
        b->s[b->len++] = ' ';
    memcpy(b->s + b->len, tok, (size_t)n);
    b->len += (size_t)n;
    return SQLITE_OK;
}

static int count_token(void *ctx, int flags, const char *tok, int n, int start, int end)
{
    (void)tok;
    (void)n;
    (void)start;
    (void)end;
    if (!(flags & FTS5_TOKEN_COLOCATED))
        (*(int64_t *)ctx)++;
    return SQLITE_OK;
}

/* Runs the index's tokenizer over the SQL function's text argument. */
static int tokenize_arg(sqlite3_context *ctx, sqlite3_value *arg, int flags, void *out,
                        int (*cb)(void *, int, const char *, int, int, int))
{
    fts5_api *fts = sqlite3_user_data(ctx);
    const char *text = (const char *)sqlite3_value_text(arg);
    fts5_tokenizer tk;
    Fts5Tokenizer *t = NULL;
    void *ud = NULL;
    int rc;

    if (!text)
        return SQLITE_OK;
    rc = fts->xFindTokenizer(fts, SX_RAG_TOKENIZER, &ud, &tk);
    if (rc == SQLITE_OK)
        rc = tk.xCreate(ud, NULL, 0, &t);
    if (rc == SQLITE_OK)
        rc = tk.xTokenize(t, out, flags, text, sqlite3_value_bytes(arg), cb);
    if (t)
        tk.xDelete(t);
    return rc;
}

/* sx_rag_stem(text): the tokens the index's tokenizer makes of text,
 * space-separated, so that a term can be looked up in the vocabulary. */
static void sx_rag_stem(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct stem_buf b = {.len = 0};
    int rc;

    (void)argc;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    rc = tokenize_arg(ctx, argv[0], FTS5_TOKENIZE_QUERY, &b, stem_token);
    if (rc != SQLITE_OK)
        sqlite3_result_error_code(ctx, rc);
    else
        sqlite3_result_text(ctx, b.s, (int)b.len, SQLITE_TRANSIENT);
}

/* sx_rag_ntok(text): the number of tokens the index makes of text, as
 * FTS5 counts a column's size. */
static void sx_rag_ntok(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    int64_t n = 0;
    int rc;

    (void)argc;
    rc = tokenize_arg(ctx, argv[0], FTS5_TOKENIZE_DOCUMENT, &n, count_token);
    if (rc != SQLITE_OK)
        sqlite3_result_error_code(ctx, rc);
    else
        sqlite3_result_int64(ctx, n);
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
        rc = sqlite3_create_function(db, "sx_rag_ntok", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                     fts, sx_rag_ntok, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sx_rag_tokenizer_register(fts);
    if (rc == SQLITE_OK)
        rc = fts->xCreateFunction(fts, "sx_rag_bm25", NULL, sx_rag_bm25, NULL);
    if (rc == SQLITE_OK)
        rc = fts->xCreateFunction(fts, "sx_rag_rows", NULL, sx_rag_rows, NULL);
    if (rc == SQLITE_OK)
        rc = fts->xCreateFunction(fts, "sx_rag_tf", NULL, sx_rag_tf, NULL);
    if (rc == SQLITE_OK)
        rc = fts->xCreateFunction(fts, "sx_rag_totals", NULL, sx_rag_totals, NULL);
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

/* ---- document-frequency cache -------------------------------------------- */

/* Looking a term's document frequency up in the fts5vocab table walks its
 * whole doclist, so a common term costs as much as matching it. The
 * frequencies (and the row count) only change when the index does, so
 * they are kept per tenant under a key that changes with every write:
 * the tenant's FTS5 structure record (rewritten by every committed write,
 * from this process or another) and a per-tenant generation that this
 * process bumps on every index write, create and drop (which catches an
 * index dropped and rebuilt into a byte-identical structure). Searches
 * read committed data only (a pooled connection outside any write
 * transaction), so a key never names two different states. */
#define DFC_TENANTS 32   /* tenants cached; the least recently used goes */
#define DFC_SLOTS 4096   /* terms per tenant (open addressing, power of 2) */
#define DFC_FILL 3072    /* a tenant's table is emptied when this full */
#define DFC_GENS 1024    /* generation counters, tenants hashed onto them */
#define STRUCTURE_MAX 65536 /* longer structure records are not cached */

static unsigned long dfc_gen[DFC_GENS];

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static unsigned long gen_of(const char *tenant_id)
{
    return __atomic_load_n(&dfc_gen[hash_str(tenant_id) % DFC_GENS], __ATOMIC_ACQUIRE);
}

static void gen_bump(const char *tenant_id)
{
    __atomic_add_fetch(&dfc_gen[hash_str(tenant_id) % DFC_GENS], 1, __ATOMIC_ACQ_REL);
}

struct dfc_term {
    char term[SX_RAG_TERM_MAX + 1]; /* "" : free slot */
    bool phrase;                    /* the tokenizer makes several tokens */
    double df;
};

struct dfc_tenant {
    char tenant[64];         /* "": unused */
    char *structure;         /* hex of the structure record */
    unsigned long gen;
    int64_t rows;            /* -1: not known yet */
    uint64_t used;           /* LRU clock */
    size_t n;
    struct dfc_term *slot;   /* DFC_SLOTS */
};

struct sx_rag_dfcache {
    pthread_mutex_t mu;
    uint64_t clock;
    struct dfc_tenant t[DFC_TENANTS];
};

struct sx_rag_dfcache *sx_rag_dfcache_new(void)
{
    struct sx_rag_dfcache *c = calloc(1, sizeof(*c));

    if (c && pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

void sx_rag_dfcache_free(struct sx_rag_dfcache *c)
{
    size_t i;

    if (!c)
        return;
    for (i = 0; i < DFC_TENANTS; i++) {
        free(c->t[i].structure);
        free(c->t[i].slot);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The tenant's entry if it holds this key (lock held); with create, an
 * entry emptied for the key otherwise (the least recently used one if the
 * tenant has none). NULL when there is none or memory runs out. */
static struct dfc_tenant *dfc_find(struct sx_rag_dfcache *c, const char *tenant_id,
                                   const char *structure, unsigned long gen, bool create)
{
    struct dfc_tenant *e = NULL, *old = &c->t[0];
    size_t i;

    for (i = 0; i < DFC_TENANTS && !e; i++) {
        if (strcmp(c->t[i].tenant, tenant_id) == 0)
            e = &c->t[i];
        else if (c->t[i].used < old->used)
            old = &c->t[i];
    }
    if (e && e->gen == gen && e->structure && strcmp(e->structure, structure) == 0) {
        e->used = ++c->clock;
        return e;
    }
    if (!create)
        return NULL;
    if (!e) {
        e = old;
        snprintf(e->tenant, sizeof(e->tenant), "%s", tenant_id);
    }
    free(e->structure);
    e->structure = strdup(structure);
    if (!e->slot)
        e->slot = malloc(DFC_SLOTS * sizeof(*e->slot));
    if (!e->structure || !e->slot) {
        free(e->structure);
        free(e->slot);
        memset(e, 0, sizeof(*e));
        return NULL;
    }
    for (i = 0; i < DFC_SLOTS; i++)
        e->slot[i].term[0] = '\0';
    e->n = 0;
    e->gen = gen;
    e->rows = -1;
    e->used = ++c->clock;
    return e;
}

/* The slot of term in e: where it is, or the free one where it would go. */
static struct dfc_term *dfc_slot(struct dfc_tenant *e, const char *term)
{
    size_t i = (size_t)hash_str(term) & (DFC_SLOTS - 1);

    while (e->slot[i].term[0] && strcmp(e->slot[i].term, term) != 0)
        i = (i + 1) & (DFC_SLOTS - 1);
    return &e->slot[i];
}

/* The tenant's structure record as hex text (malloc'd) in *out; NULL when
 * the record is missing or too long to be worth keying on. */
static int read_structure(sx_db *db, const char *name, char **out)
{
    char sql[160];
    const char *hex;
    sx_stmt *st;
    int rc;

    *out = NULL;
    snprintf(sql, sizeof(sql), "SELECT hex(block) FROM %s_data WHERE id = 10", name);
    if (!(st = sx_db_query(db, sql, "")))
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    if (rc == SX_STORE_ROW && (hex = sx_stmt_text(st, 0)) != NULL &&
        strlen(hex) <= STRUCTURE_MAX && !(*out = strdup(hex)))
        rc = SX_ENOMEM;
    sx_stmt_done(st);
    return rc == SX_STORE_ROW || rc == SX_STORE_DONE ? 0 : rc == SX_ENOMEM ? rc : SX_ESTORE;
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
    /* The pragma reads the in-memory schema; sqlite_master would be a scan
     * over every tenant's tables. */
    sx_stmt *st = sx_db_query(db, "SELECT 1 FROM pragma_table_info($1) LIMIT 1", "t", name);
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
    gen_bump(tenant_id);
    snprintf(sql, sizeof(sql),
             "CREATE VIRTUAL TABLE IF NOT EXISTS %s USING fts5(title, text, meta, ds, "
             "content='rag_chunks', content_rowid='id', "
             "tokenize='" SX_RAG_TOKENIZER "');"
             "CREATE VIRTUAL TABLE IF NOT EXISTS %s_v USING fts5vocab(%s, 'row');",
             name, name, name);
    return sx_db_exec(db, sql) == 0 ? 0 : SX_ESTORE;
}

/* Rebuilds one tenant's index (name: its FTS5 table) with today's
 * tokenizer, from the tenant's rows of rag_chunks, in one transaction. */
static int rebuild(sx_db *db, const char *name)
{
    const char *tenant_id = name + strlen("rag_fts_");
    char sql[256];
    int rc;

    if ((rc = sx_db_begin(db)) != 0)
        return rc;
    if ((rc = sx_rag_index_drop(db, tenant_id)) == 0 &&
        (rc = sx_rag_index_create(db, tenant_id)) == 0) {
        snprintf(sql, sizeof(sql), "INSERT INTO %s(rowid, title, text, meta, ds) "
                 "SELECT id, title, text, meta, ds FROM rag_chunks WHERE tenant_id = $1",
                 name);
        rc = sx_db_run(db, sql, "t", tenant_id) < 0 ? SX_ESTORE : sx_db_commit(db);
    }
    if (rc != 0)
        sx_db_rollback(db);
    return rc;
}

int sx_rag_index_upgrade(sx_db *db, int *rebuilt)
{
    /* FTS5 keeps the table's CREATE statement, tokenizer included. */
    sx_stmt *st = sx_db_query(db, "SELECT name FROM sqlite_master WHERE type = 'table'"
                                  " AND name LIKE 'rag\\_fts\\_%' ESCAPE '\\'"
                                  " AND sql LIKE 'CREATE VIRTUAL TABLE % USING fts5(%'"
                                  " AND sql NOT LIKE '%tokenize=''" SX_RAG_TOKENIZER "''%'",
                              "");
    char (*names)[64] = NULL;
    size_t n = 0, cap = 0, i;
    int rc = 0;

    *rebuilt = 0;
    if (!st)
        return SX_ESTORE;
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        const char *name = sx_stmt_text(st, 0);

        if (!name || strlen(name) >= 64)
            continue;
        if (n == cap) {
            char (*v)[64] = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof(*v));

            if (!v) {
                rc = SX_ENOMEM;
                break;
            }
            names = v;
        }
        snprintf(names[n++], 64, "%s", name);
    }
    sx_stmt_done(st);
    if (rc == SX_STORE_DONE)
        rc = 0;
    for (i = 0; rc == 0 && i < n; i++)
        if ((rc = rebuild(db, names[i])) == 0)
            (*rebuilt)++;
    free(names);
    return rc;
}

int sx_rag_index_drop(sx_db *db, const char *tenant_id)
{
    char name[64], sql[192];

    if (table_name(tenant_id, name) != 0)
        return 0; /* such a tenant never had an index */
    gen_bump(tenant_id);
    snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s_v; DROP TABLE IF EXISTS %s", name,
             name);
    return sx_db_exec(db, sql) == 0 ? 0 : SX_ESTORE;
}

static int index_write(sx_db *db, const char *tenant_id, const char *cmd,
                       const struct sx_rag_index_row *row)
{
    char name[64], sql[256];
    int64_t rc;

    if (table_name(tenant_id, name) != 0)
        return SX_EINVAL;
    gen_bump(tenant_id);
    if (cmd)
        snprintf(sql, sizeof(sql), "INSERT INTO %s(%s, rowid, title, text, meta, ds) "
                 "VALUES ('%s', $1, $2, $3, $4, $5)", name, name, cmd);
    else
        snprintf(sql, sizeof(sql), "INSERT INTO %s(rowid, title, text, meta, ds) "
                 "VALUES ($1, $2, $3, $4, $5)", name);
    rc = sx_db_run(db, sql, "itttt", row->rowid, row->title, row->text, row->meta, row->ds);
    return rc < 0 ? SX_ESTORE : 0;
}

int sx_rag_index_chunk_id(sx_db *db, const char *title, const char *text, const char *meta,
                          int64_t *id)
{
    sx_stmt *st = sx_db_query(db,
                              "SELECT (((coalesce(max(id), 0) >> 32) + 1) << 32)"
                              " | (min(sx_rag_ntok($1), 511) << 23)"
                              " | (min(sx_rag_ntok($2), 8191) << 10)"
                              " | min(sx_rag_ntok($3), 1023) FROM rag_chunks",
                              "ttt", title, text, meta);
    int rc;

    if (!st)
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    *id = rc == SX_STORE_ROW ? sx_stmt_int(st, 0) : 0;
    sx_stmt_done(st);
    return *id > 0 ? 0 : SX_ESTORE;
}

int sx_rag_index_add(sx_db *db, const char *tenant_id, const struct sx_rag_index_row *row)
{
    return index_write(db, tenant_id, NULL, row);
}

int sx_rag_index_remove(sx_db *db, const char *tenant_id, const struct sx_rag_index_row *row)
{
    return index_write(db, tenant_id, "delete", row);
}

/* ---- search -------------------------------------------------------------- */

/* A query term with what the vocabulary says of it. */
struct plan_term {
    const char *term;
    double weight, df, idf, bound;
};

/* What keys the tenant's cached frequencies (see the cache above). */
struct df_key {
    struct sx_rag_dfcache *c; /* NULL: no caching */
    const char *tenant_id;
    char *structure;
    unsigned long gen;
};

/* One term's document frequency from the vocabulary table into p. */
static int lookup_one(sx_db *db, const char *name, const char *term, struct plan_term *p)
{
    char sql[160];
    sx_stmt *st;
    const char *stem;
    int rc;

    snprintf(sql, sizeof(sql), "SELECT s.stem, (SELECT doc FROM %s_v WHERE term = s.stem) "
             "FROM (SELECT sx_rag_stem($1) AS stem) s", name);
    if (!(st = sx_db_query(db, sql, "t", term)))
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    if (rc == SX_STORE_ROW && (stem = sx_stmt_text(st, 0)) != NULL && *stem) {
        if (strchr(stem, ' ')) {
            p->df = 1;
            p->bound = INFINITY;
        } else {
            p->df = (double)sx_stmt_int(st, 1);
        }
    }
    sx_stmt_done(st);
    return rc < 0 ? SX_ESTORE : 0;
}

/* Document frequencies of the terms (0: not in the index), from the cache
 * where it has them. A term the tokenizer cuts in several tokens is a
 * phrase whose frequency the vocabulary does not know: it gets df 1 (so
 * an upper IDF) and an infinite bound (any chunk holding it is scored). */
static int lookup_df(sx_db *db, const char *name, const struct df_key *key,
                     const struct sx_rag_terms *t, struct plan_term *p)
{
    bool hit[SX_RAG_QUERY_TERMS_MAX] = {false}, missed = false;
    struct dfc_tenant *e;
    size_t i;
    int rc;

    for (i = 0; i < t->n; i++)
        p[i] = (struct plan_term){.term = t->term[i], .weight = t->weight[i]};
    if (key->c) {
        pthread_mutex_lock(&key->c->mu);
        e = dfc_find(key->c, key->tenant_id, key->structure, key->gen, false);
        for (i = 0; e && i < t->n; i++) {
            struct dfc_term *x = dfc_slot(e, t->term[i]);

            if ((hit[i] = x->term[0] != '\0')) {
                p[i].df = x->df;
                p[i].bound = x->phrase ? INFINITY : 0;
            }
        }
        pthread_mutex_unlock(&key->c->mu);
    }
    for (i = 0; i < t->n; i++) {
        if (hit[i])
            continue;
        missed = true;
        if ((rc = lookup_one(db, name, t->term[i], &p[i])) != 0)
            return rc;
    }
    if (!key->c || !missed)
        return 0;
    pthread_mutex_lock(&key->c->mu);
    e = dfc_find(key->c, key->tenant_id, key->structure, key->gen, true);
    for (i = 0; e && i < t->n; i++) {
        struct dfc_term *x;

        if (hit[i])
            continue;
        if (e->n >= DFC_FILL) { /* full: start over rather than stop caching */
            size_t j;

            for (j = 0; j < DFC_SLOTS; j++)
                e->slot[j].term[0] = '\0';
            e->n = 0;
        }
        x = dfc_slot(e, t->term[i]);
        if (x->term[0])
            continue; /* a concurrent query put it there */
        snprintf(x->term, sizeof(x->term), "%s", t->term[i]);
        x->df = p[i].df;
        x->phrase = p[i].bound == INFINITY;
        e->n++;
    }
    pthread_mutex_unlock(&key->c->mu);
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

/* index_rows() through the cache. */
static int64_t cached_rows(sx_db *db, const char *name, const struct df_key *key,
                           const char *term)
{
    struct dfc_tenant *e;
    int64_t rows = -1;

    if (key->c) {
        pthread_mutex_lock(&key->c->mu);
        if ((e = dfc_find(key->c, key->tenant_id, key->structure, key->gen, false)))
            rows = e->rows;
        pthread_mutex_unlock(&key->c->mu);
        if (rows >= 0)
            return rows;
    }
    if ((rows = index_rows(db, name, term)) < 0 || !key->c)
        return rows;
    pthread_mutex_lock(&key->c->mu);
    if ((e = dfc_find(key->c, key->tenant_id, key->structure, key->gen, true)))
        e->rows = rows;
    pthread_mutex_unlock(&key->c->mu);
    return rows;
}

static int by_bound_desc(const void *a, const void *b)
{
    const struct plan_term *x = a, *y = b;

    return x->bound > y->bound ? -1 : x->bound < y->bound;
}

/* ---- the candidate formula ----------------------------------------------- */

enum { F_FALSE, F_TRUE, F_TERM, F_AND, F_OR };

struct fnode {
    int kind, term, a, b;
};

struct formula {
    struct fnode node[4 * FORMULA_TERMS];
    int n_node, n_terms;
    bool overflow;
    const struct plan_term *p;
    size_t k;
    double suffix[SX_RAG_QUERY_TERMS_MAX + 1]; /* bound sums of p[i..k) */
};

static int fnew(struct formula *f, int kind, int term, int a, int b)
{
    if (f->n_node == (int)(sizeof(f->node) / sizeof(f->node[0])) ||
        (kind == F_TERM && f->n_terms == FORMULA_TERMS)) {
        f->overflow = true;
        return 0; /* node 0 is F_FALSE; the result is discarded anyway */
    }
    if (kind == F_TERM)
        f->n_terms++;
    f->node[f->n_node] = (struct fnode){kind, term, a, b};
    return f->n_node++;
}

/* "Any of p[i..m)" where m leaves out the smallest terms whose bounds add
 * up to less than need: a superset of what fbuild() would say. */
static int fchain(struct formula *f, size_t i, double need)
{
    size_t m = f->k;
    int x = 0;

    while (m > i + 1 && f->suffix[m - 1] < need)
        m--;
    while (m-- > i) {
        int t = fnew(f, F_TERM, (int)m, 0, 0);

        x = x ? fnew(f, F_OR, 0, t, x) : t;
    }
    return x;
}

/* Chunks holding terms of p[i..k) whose bounds add up to need:
 * with p[i] (then need - bound_i from the rest) or without it. Past
 * max_depth terms in a branch, the looser fchain() keeps it small. */
static int fbuild(struct formula *f, size_t i, double need, int depth, int max_depth)
{
    int with, without, t;

    if (need <= 0)
        return 1; /* F_TRUE */
    if (i >= f->k || f->suffix[i] < need || f->overflow)
        return 0; /* F_FALSE */
    if (depth == max_depth)
        return fchain(f, i, need);
    t = fnew(f, F_TERM, (int)i, 0, 0);
    with = fbuild(f, i + 1, need - f->p[i].bound, depth + 1, max_depth);
    without = fbuild(f, i + 1, need, depth, max_depth);
    if (f->node[with].kind != F_TRUE)
        t = f->node[with].kind == F_FALSE ? 0 : fnew(f, F_AND, 0, t, with);
    if (f->node[without].kind == F_FALSE)
        return t;
    if (f->node[t].kind == F_FALSE)
        return without;
    return fnew(f, F_OR, 0, t, without);
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

/* Writes node x as FTS5 syntax. */
static int fwrite_node(const struct formula *f, int x, char *e, size_t cap, size_t *eu)
{
    const struct fnode *nd = &f->node[x];
    int rc;

    if (nd->kind == F_TERM)
        return append(e, cap, eu, "\"%s\"", f->p[nd->term].term);
    if ((rc = append(e, cap, eu, "(")) ||
        (rc = fwrite_node(f, nd->a, e, cap, eu)) ||
        (rc = append(e, cap, eu, nd->kind == F_AND ? " AND " : " OR ")) ||
        (rc = fwrite_node(f, nd->b, e, cap, eu)))
        return rc;
    return append(e, cap, eu, ")");
}

/* ---- passes -------------------------------------------------------------- */

struct plan {
    sx_db *db;
    const char *name;
    struct plan_term p[SX_RAG_QUERY_TERMS_MAX];
    size_t k;
    const char *const *ds;
    size_t n_ds; /* 0: every dataset */
};

/* Ranks the chunks that could reach need (0: every matching chunk). */
static int run_pass(const struct plan *pl, double need, struct sx_rag_cand *out, size_t cap,
                    size_t *n)
{
    static __thread struct formula f;
    char expr[8192], params[2 * SX_RAG_QUERY_TERMS_MAX * 32], sql[512];
    size_t eu = 0, pu = 0, i;
    sx_stmt *st;
    int root = 1, rc = 0;

    *n = 0;

    /* 1. The candidate formula, as deep as fits; shallower formulas are
     * supersets of deeper ones, so results stay exact. */
    if (need > 0) {
        int depth;

        memset(&f, 0, sizeof(f));
        f.p = pl->p;
        f.k = pl->k;
        f.node[1].kind = F_TRUE; /* 0: F_FALSE, 1: F_TRUE */
        for (i = pl->k; i-- > 0;)
            f.suffix[i] = f.suffix[i + 1] + pl->p[i].bound;
        for (depth = FORMULA_DEPTH; depth >= 0; depth--) {
            f.overflow = false;
            f.n_node = 2;
            f.n_terms = 0;
            root = depth ? fbuild(&f, 0, need, 0, depth) : fchain(&f, 0, need);
            if (!f.overflow)
                break;
        }
        if (f.overflow)
            root = 1;
        else if (f.node[root].kind == F_FALSE)
            return 0; /* no chunk can reach need */
    }
    /* 2. Every term, scored, AND-ed with the formula; then the datasets.
     * No column filter: FTS5 would read every candidate's positions to
     * apply it. A term met only in ds (a query of 20 digits) makes its
     * chunk a candidate that scores nothing for it (sx_rag_bm25 counts
     * title, text and meta only), so the results are unchanged. */
    rc |= append(expr, sizeof(expr), &eu, "((");
    for (i = 0; i < pl->k; i++)
        rc |= append(expr, sizeof(expr), &eu, "%s\"%s\"", i ? " OR " : "", pl->p[i].term);
    rc |= append(expr, sizeof(expr), &eu, ")");
    rc |= append(params, sizeof(params), &pu, "0 %zu %zu %.17g ", pl->k, cap, need);
    for (i = 0; i < pl->k; i++)
        rc |= append(params, sizeof(params), &pu, "%.9g %.9g ", pl->p[i].weight,
                     pl->p[i].idf);
    if (root != 1) {
        rc |= append(expr, sizeof(expr), &eu, " AND ");
        rc |= fwrite_node(&f, root, expr, sizeof(expr), &eu);
    }
    rc |= append(expr, sizeof(expr), &eu, ")");
    if (pl->n_ds) {
        rc |= append(expr, sizeof(expr), &eu, " AND ds : (");
        for (i = 0; i < pl->n_ds; i++)
            rc |= append(expr, sizeof(expr), &eu, "%s\"%s\"", i ? " OR " : "", pl->ds[i]);
        rc |= append(expr, sizeof(expr), &eu, ")");
    }
    if (rc)
        return SX_ETOOBIG;

    /* 3. Rank inside the tenant's own index. */
    snprintf(sql, sizeof(sql), "SELECT rowid, sx_rag_bm25(%s, $2) AS r FROM %s WHERE %s "
             "MATCH $1 ORDER BY r DESC LIMIT $3", pl->name, pl->name, pl->name);
    st = sx_db_prepare(pl->db, sql);
    if (!st)
        return SX_ESTORE;
    if (sx_stmt_bind_text(st, 1, expr) || sx_stmt_bind_text(st, 2, params) ||
        sx_stmt_bind_int(st, 3, (int64_t)cap)) {
        sx_stmt_done(st);
        return SX_ESTORE;
    }
    /* Chunks the ranking function set aside score 0 (every real score
     * is positive): they come last and are not hits. */
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW && *n < cap) {
        out[*n].rowid = sx_stmt_int(st, 0);
        out[*n].bm25 = sx_stmt_double(st, 1);
        if (out[*n].bm25 <= 0)
            break;
        (*n)++;
    }
    sx_stmt_done(st);
    return rc < 0 ? SX_ESTORE : 0;
}

int sx_rag_index_search(sx_db *db, sx_rag *rag, const char *tenant_id,
                        const struct sx_rag_terms *t, const char *const *ds, size_t n_ds,
                        double threshold, struct sx_rag_cand *out, size_t cap, size_t *n,
                        double *ideal)
{
    static __thread struct plan pl;
    struct df_key key = {rag ? rag->dfcache : NULL, tenant_id, NULL, 0};
    struct sx_rag_pterm pt[SX_RAG_QUERY_TERMS_MAX];
    char name[64];
    double need, guess;
    int64_t rows;
    size_t i;
    int rc;

    *n = 0;
    *ideal = 0;
    if (t->n == 0 || cap == 0 || table_name(tenant_id, name) != 0)
        return 0;
    if ((rc = table_exists(db, name)) <= 0)
        return rc;
    memset(&pl, 0, sizeof(pl));
    pl.db = db;
    pl.name = name;
    pl.ds = ds;
    pl.n_ds = n_ds;

    /* 1. Frequencies; terms absent from the index drop out. The cache key:
     * the generation first, so that a write racing with this query can
     * only make the key older than the data, never newer. */
    if (rag && (rag->dfcache || rag->postings)) {
        key.gen = gen_of(tenant_id);
        if ((rc = read_structure(db, name, &key.structure)) != 0)
            return rc;
        if (!key.structure)
            key.c = NULL;
    }
    rc = lookup_df(db, name, &key, t, pl.p);
    for (i = 0; rc == 0 && i < t->n; i++)
        if (pl.p[i].df > 0)
            pl.p[pl.k++] = pl.p[i];
    if (rc == 0 && pl.k > 0 && (rows = cached_rows(db, name, &key, pl.p[0].term)) < 0)
        rc = (int)rows;
    if (rc != 0 || pl.k == 0)
        goto out;

    /* 2. IDF, bounds and the reference score. */
    for (i = 0; i < pl.k; i++) {
        double df = pl.p[i].df > (double)rows ? (double)rows : pl.p[i].df;

        pl.p[i].idf = log(1.0 + ((double)rows - df + 0.5) / (df + 0.5));
        if (pl.p[i].bound == 0)
            pl.p[i].bound = pl.p[i].weight * pl.p[i].idf * (BM25_K1 + 1);
        *ideal += pl.p[i].weight * pl.p[i].idf;
    }
    qsort(pl.p, pl.k, sizeof(pl.p[0]), by_bound_desc);

    need = threshold * *ideal;

    /* 3. The in-memory postings when this tenant has them (or can have
     * them), with weights and IDFs as the ranking function would parse
     * them from its parameters, so that scores are the same bits. Not
     * when the query is limited to some datasets. */
    if (rag && rag->postings && n_ds == 0 && key.structure) {
        char num[64];

        for (i = 0; i < pl.k; i++) {
            pt[i].term = pl.p[i].term;
            snprintf(num, sizeof(num), "%.9g", pl.p[i].weight);
            pt[i].weight = strtod(num, NULL);
            snprintf(num, sizeof(num), "%.9g", pl.p[i].idf);
            pt[i].idf = strtod(num, NULL);
        }
        rc = sx_rag_postings_search(rag->postings, db, name, tenant_id, key.structure,
                                    key.gen, pt, pl.k, need, out, cap, n);
        if (rc != 0)
            goto out; /* 1: answered */
    }

    /* 4. Else FTS5: a guess first when it prunes more than the threshold;
     * kept if the k-th hit reached it, since no unscored chunk could. */
    guess = GUESS_FRACTION * *ideal;
    if (guess > need) {
        if ((rc = run_pass(&pl, guess, out, cap, n)) != 0)
            goto out;
        if (*n == cap && out[cap - 1].bm25 >= guess)
            goto out;
    }
    rc = run_pass(&pl, need, out, cap, n);
out:
    free(key.structure);
    return rc < 0 ? rc : 0;
}
