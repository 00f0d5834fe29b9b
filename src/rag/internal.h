/* Internal to src/rag/: the module object and the full-text index
 * interface. Only index.c holds index SQL (SQLite FTS5 today); a
 * PostgreSQL full-text implementation replaces that file alone. */
#ifndef SX_RAG_INTERNAL_H
#define SX_RAG_INTERNAL_H

#include "rag/rag.h"

struct sx_rag {
    sx_store *store;
    sx_tenancy *tenancy;
    struct sx_rag_limits limits;
};

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
/* Adds / removes chunk rowid with its indexed fields; remove must be given
 * the same fields that add was (they are read back from rag_chunks). */
int sx_rag_index_add(sx_db *db, const char *tenant_id, int64_t rowid, const char *title,
                     const char *text, const char *meta);
int sx_rag_index_remove(sx_db *db, const char *tenant_id, int64_t rowid, const char *title,
                        const char *text, const char *meta);
/* Ranks the tenant's chunks matching terms, best first, at most cap, and
 * gives the query's reference score in *ideal. Chunks whose normalised
 * score would be below threshold may be left out (never others).
 * datasets_json: a JSON array of dataset ids to search, or NULL for the
 * datasets whose data_use allows RAG. A tenant without an index has no
 * hits. 0, SX_ETOOBIG or SX_ESTORE. */
int sx_rag_index_search(sx_db *db, const char *tenant_id, const struct sx_rag_terms *t,
                        const char *datasets_json, double threshold,
                        struct sx_rag_cand *out, size_t cap, size_t *n, double *ideal);

/* The module's migrations and purge hook (dataset.c). */
int sx_rag_schema(sx_rag *rag, char *err, size_t errlen);

#endif
