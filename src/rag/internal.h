/* Internal to src/rag/: the module object and the full-text index
 * interface. Only index.c holds index SQL (SQLite FTS5 today); a
 * PostgreSQL full-text implementation replaces that file alone. */
#ifndef SX_RAG_INTERNAL_H
#define SX_RAG_INTERNAL_H

#include <pthread.h>

#include "rag/rag.h"

#define SX_RAG_DIM_MAX 8192         /* longest embedding accepted */
#define SX_RAG_VECTORS_MAX 20000    /* vectors scanned per query, at most */

struct sx_rag {
    sx_store *store;
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

#define SX_RAG_TOKEN_MAX 24 /* a dataset's index token: 20 digits */

/* A chunk the index ranked. */
struct sx_rag_cand {
    int64_t rowid;
    double bm25; /* raw BM25F score */
};

/* Creates the tenant's index if missing (inside the caller's transaction).
 * 0, SX_EINVAL (a tenant id the index cannot name) or SX_ESTORE. */
int sx_rag_index_create(sx_db *db, const char *tenant_id);
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
/* Ranks the tenant's chunks matching terms, best first, at most cap, and
 * gives the query's reference score in *ideal. Chunks whose normalised
 * score would be below threshold may be left out (never others). ds lists
 * the index tokens of the datasets to search (n_ds 0: all of them). A
 * tenant without an index has no hits. 0, SX_ETOOBIG or SX_ESTORE. */
int sx_rag_index_search(sx_db *db, const char *tenant_id, const struct sx_rag_terms *t,
                        const char *const *ds, size_t n_ds, double threshold,
                        struct sx_rag_cand *out, size_t cap, size_t *n, double *ideal);

/* The module's migrations and purge hook (dataset.c). */
int sx_rag_schema(sx_rag *rag, char *err, size_t errlen);

#endif
