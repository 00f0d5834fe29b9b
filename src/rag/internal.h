/* Internal to src/rag/: the module object and the full-text index
 * interface. Only index.c holds index SQL (SQLite FTS5 today, with the
 * FTS5 tokenizer of tokenizer.c); a PostgreSQL full-text implementation
 * replaces those two files. */
#ifndef SX_RAG_INTERNAL_H
#define SX_RAG_INTERNAL_H

#include <pthread.h>

#include "rag/rag.h"

#define SX_RAG_DIM_MAX 8192         /* longest embedding accepted */
#define SX_RAG_VECTORS_MAX 20000    /* vectors scanned per query, at most */

struct sx_rag_dfcache;
struct sx_rag_norag;
struct sx_rag_postings;

struct sx_rag {
    sx_store *store;
    struct sx_rag_dfcache *dfcache;   /* document frequencies per tenant */
    struct sx_rag_postings *postings; /* in-memory postings per tenant */
    struct sx_rag_norag *norag;       /* tenants with no dataset for RAG */
    sx_tenancy *tenancy;
    struct sx_rag_limits limits;

    pthread_rwlock_t embed_lock; /* guards the embedder fields */
    sx_rag_embed_fn embed;       /* NULL: no vectors */
    void *embed_ctx;
    char embed_model[128];
    int embed_dim;
};

/* ---- vectors (vector.c) -------------------------------------------------- */

struct sx_rag_vhit {
    int64_t rowid;
    double sim; /* cosine similarity */
};

/* The unit embedding of text under the installed embedder: *out (malloc'd)
 * with *dim floats and the model's name, or *out NULL when none is
 * installed. 0, or the embedder's error. */
int sx_rag_vector_embed(sx_rag *rag, const char *text, size_t len, float **out, int *dim,
                        char model[128]);
/* Stores the vector of a new chunk (nothing without an embedder; an
 * embedder failure is logged and leaves the chunk BM25-only). Inside the
 * caller's transaction. 0, SX_ENOMEM or SX_ESTORE. */
int sx_rag_vector_add(sx_rag *rag, sx_db *db, const char *tenant_id, int64_t chunk_id,
                      const char *title, const char *text);
/* The cap most similar chunks of the tenant to unit vector q, best first,
 * over the datasets named (JSON array) or, with NULL, those allowing RAG.
 * No hits when the tenant has more than SX_RAG_VECTORS_MAX vectors.
 * 0, SX_ENOMEM or SX_ESTORE. */
int sx_rag_vector_search(sx_db *db, const char *tenant_id, const char *model, const float *q,
                         int dim, const json_t *datasets, struct sx_rag_vhit *out, size_t cap,
                         size_t *n);

/* ---- tokenizer (tokenizer.c) --------------------------------------------- */

/* The FTS5 tokenizer of every tenant's index: porter unicode61, plus the
 * joined form of each hyphenated compound, Greek letters spelled in
 * Latin. Registered on fts by sx_rag_tokenizer_register() (an SQLite
 * result code). */
#define SX_RAG_TOKENIZER "sx_rag"
struct fts5_api;
int sx_rag_tokenizer_register(struct fts5_api *fts);

/* The length of the hyphen at s[i] (len bytes in all), 0 if none: ASCII
 * '-', U+2010 HYPHEN and U+2011 NON-BREAKING HYPHEN join a compound; the
 * dashes (ranges, asides) do not. */
static inline int sx_rag_hyphen(const char *s, size_t i, size_t len)
{
    if (i < len && s[i] == '-')
        return 1;
    if (i + 2 < len && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x80 &&
        ((unsigned char)s[i + 2] == 0x90 || (unsigned char)s[i + 2] == 0x91))
        return 3;
    return 0;
}

#define SX_RAG_TOKEN_MAX 24 /* a dataset's index token: 20 digits */

/* BM25F's arithmetic, shared by the FTS5 ranking function (index.c) and
 * the in-memory postings (postings.c) so that both give the same bits:
 * k1 = 1.2, b = 0.75, column weights title 2, text 1, meta 1. */
#define SX_RAG_K1 1.2
#define SX_RAG_B 0.75
#define SX_RAG_COLS 3

/* A column's length normaliser. */
static inline double sx_rag_norm(int len, double avg_len)
{
    return avg_len > 0 ? 1 - SX_RAG_B + SX_RAG_B * len / avg_len : 1;
}

/* One query term's share of a chunk's score, from its frequency in each
 * column. */
static inline double sx_rag_term_score(const int tf[SX_RAG_COLS],
                                       const double norm[SX_RAG_COLS], double weight,
                                       double idf)
{
    static const double col_weight[SX_RAG_COLS] = {2.0, 1.0, 1.0};
    double x = 0;
    int c;

    for (c = 0; c < SX_RAG_COLS; c++)
        if (tf[c] > 0)
            x += col_weight[c] * tf[c] / norm[c];
    return x > 0 ? weight * idf * x * (SX_RAG_K1 + 1) / (x + SX_RAG_K1) : 0;
}

/* A chunk id: a serial number above bit 32, then the token counts of its
 * title (9 bits), text (13 bits) and meta (10 bits), capped there. Ids
 * without a serial (older chunks) carry no counts. */
#define SX_RAG_ID_SERIAL_SHIFT 32
static inline int sx_rag_id_len(int64_t rowid, int col)
{
    static const int shift[SX_RAG_COLS] = {23, 10, 0};
    static const int64_t mask[SX_RAG_COLS] = {511, 8191, 1023};

    return (int)((rowid >> shift[col]) & mask[col]);
}

/* A chunk the index ranked. */
struct sx_rag_cand {
    int64_t rowid;
    double bm25; /* raw BM25F score */
};

/* Creates the tenant's index if missing (inside the caller's transaction).
 * 0, SX_EINVAL (a tenant id the index cannot name) or SX_ESTORE. */
int sx_rag_index_create(sx_db *db, const char *tenant_id);
/* Rebuilds every tenant index made with another tokenizer than today's
 * (SX_RAG_TOKENIZER), one transaction each; *rebuilt says how many.
 * 0, SX_ENOMEM or SX_ESTORE. */
int sx_rag_index_upgrade(sx_db *db, int *rebuilt);
/* Drops the tenant's index if present. 0 or SX_ESTORE. */
int sx_rag_index_drop(sx_db *db, const char *tenant_id);
/* A chunk's indexed fields: ds is its dataset's index token. */
struct sx_rag_index_row {
    int64_t rowid;
    const char *title, *text, *meta, *ds;
};

/* The id for a new chunk with these fields (the SQLite index stores the
 * fields' token counts in it). Call inside the write transaction that
 * inserts the chunk. 0 or SX_ESTORE. */
int sx_rag_index_chunk_id(sx_db *db, const char *title, const char *text, const char *meta,
                          int64_t *id);

/* Adds / removes a chunk; remove must be given the same fields that add
 * was (they are read back from rag_chunks). 0, SX_EINVAL or SX_ESTORE. */
int sx_rag_index_add(sx_db *db, const char *tenant_id, const struct sx_rag_index_row *row);
int sx_rag_index_remove(sx_db *db, const char *tenant_id, const struct sx_rag_index_row *row);
/* A cache of the index's document frequencies and row counts per tenant,
 * for the module's lifetime (index.c). Entries are exact: they are keyed
 * by the tenant's FTS5 structure record, which every committed write
 * rewrites, and by a per-tenant write generation of this process. new:
 * NULL when out of memory (searches then work uncached); free takes NULL. */
struct sx_rag_dfcache *sx_rag_dfcache_new(void);
void sx_rag_dfcache_free(struct sx_rag_dfcache *c);

/* The tenants known to have no dataset that allows RAG (norag.c). new:
 * NULL when out of memory (every retrieval then asks the store); the
 * others accept NULL. has: the tenant is known to have none. add: records
 * that the store said so, unless a registration came after gen (read
 * before asking the store). forget: a dataset allowing RAG was registered
 * for the tenant (call after its commit). */
struct sx_rag_norag *sx_rag_norag_new(void);
void sx_rag_norag_free(struct sx_rag_norag *c);
uint64_t sx_rag_norag_gen(struct sx_rag_norag *c);
bool sx_rag_norag_has(struct sx_rag_norag *c, const char *tenant_id);
void sx_rag_norag_add(struct sx_rag_norag *c, const char *tenant_id, uint64_t gen);
void sx_rag_norag_forget(struct sx_rag_norag *c, const char *tenant_id);

/* Ranks the tenant's chunks matching terms, best first, at most cap, and
 * gives the query's reference score in *ideal. Chunks whose normalised
 * score would be below threshold may be left out (never others). ds lists
 * the index tokens of the datasets to search (n_ds 0: all of them). A
 * tenant without an index has no hits. rag (its caches) may be NULL.
 * 0, SX_ETOOBIG or SX_ESTORE. */
int sx_rag_index_search(sx_db *db, sx_rag *rag, const char *tenant_id,
                        const struct sx_rag_terms *t,
                        const char *const *ds, size_t n_ds, double threshold,
                        struct sx_rag_cand *out, size_t cap, size_t *n, double *ideal);

/* ---- in-memory postings (postings.c) ------------------------------------ */

#define SX_RAG_POSTINGS_BUDGET ((size_t)256 << 20) /* bytes, all tenants */

/* A query term as the FTS5 ranking function sees it (weight and IDF as
 * parsed back from its parameter text). */
struct sx_rag_pterm {
    const char *term;
    double weight, idf;
};

/* new: NULL when out of memory; free takes NULL. budget 0 turns the
 * postings off (and frees them). */
struct sx_rag_postings *sx_rag_postings_new(size_t budget);
void sx_rag_postings_free(struct sx_rag_postings *c);
void sx_rag_postings_set_budget(struct sx_rag_postings *c, size_t budget);
/* Ranks like the FTS5 pass would (terms t by falling bound, name the
 * tenant's FTS5 table, structure and gen its index key): the best cap
 * chunks scoring at least need, best first (equal scores by chunk id).
 * 1 when answered, 0 when the caller must rank through FTS5 (first query
 * under this key, over budget, older chunk ids), or SX_ENOMEM /
 * SX_ESTORE. */
int sx_rag_postings_search(struct sx_rag_postings *c, sx_db *db, const char *name,
                           const char *tenant_id, const char *structure, unsigned long gen,
                           const struct sx_rag_pterm *t, size_t k, double need,
                           struct sx_rag_cand *out, size_t cap, size_t *n);

/* The module's migrations and purge hook (dataset.c). */
int sx_rag_schema(sx_rag *rag, char *err, size_t errlen);

#endif
