/* The rag module: per-tenant datasets of documents, cut into chunks that
 * respect sentences and token counts, indexed for BM25 retrieval (SQLite
 * FTS5 in the embedded default) and, when the serving layer installs an
 * embedder, by vectors fused with BM25 by reciprocal rank.
 *
 * Isolation: every read and write names its tenant. The full-text index is
 * one table per tenant (so term statistics are the tenant's own) and every
 * query also filters on the tenant id, so no code path can return another
 * tenant's chunk.
 *
 * Scores: a chunk's score is in [0, 1] and means the same for every query:
 * its BM25 score divided by the BM25 score that a chunk of average length
 * containing each query term once would get (capped at 1). 0.5 means "as
 * good as a chunk holding half of the query's IDF-weighted terms once";
 * query terms that occur nowhere in the tenant's documents are left out of
 * that reference, since no chunk can match them. See docs in index.c.
 *
 * Errors are SX_E* codes; functions that validate client input also fill a
 * struct sx_fault (tenancy.h) naming the field, e.g. "docs[3].text". */
#ifndef SX_RAG_RAG_H
#define SX_RAG_RAG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "tenancy/tenancy.h"

typedef struct sx_rag sx_rag;

#define SX_RAG_DATASET_ID_MAX 24 /* "ds_" + 16 base62, with NUL */
#define SX_RAG_DOC_ID_MAX 128    /* bytes of a doc_id: [A-Za-z0-9._:-] */
#define SX_RAG_NAME_MAX 100      /* bytes of a dataset name */

/* ---- chunking ------------------------------------------------------------ */

struct sx_rag_chunking {
    int max_tokens;     /* 16..2048, default 256 */
    int overlap_tokens; /* 0..max_tokens/2, default 48 */
};

/* One chunk: a byte span of the text and its estimated token count. */
struct sx_rag_piece {
    size_t off, len;
    int tokens;
};

/* Estimated tokens of s[0..len): a word counts 1 per 6 bytes (at least 1),
 * every other visible character 1, so English text comes out close to
 * what BPE tokenizers count. Never splits a UTF-8 sequence. */
int sx_rag_count_tokens(const char *s, size_t len);

/* Cuts text into chunks of at most max_tokens: whole sentences where they
 * fit (a sentence ends at . ! ? followed by space and a capital, digit or
 * opening mark, or at a blank line), longer sentences at word boundaries.
 * Consecutive chunks share whole trailing sentences of up to overlap_tokens.
 * Spans never start or end inside a UTF-8 sequence and carry no leading or
 * trailing whitespace. *pieces is malloc'd (free()); an empty or blank text
 * gives 0 pieces. 0, SX_EINVAL (bad options) or SX_ENOMEM. */
int sx_rag_chunk(const char *text, size_t len, const struct sx_rag_chunking *c,
                 struct sx_rag_piece **pieces, size_t *n);

/* ---- queries ------------------------------------------------------------- */

#define SX_RAG_QUERY_TERMS_MAX 48 /* distinct terms kept from a query */
#define SX_RAG_TERM_MAX 64        /* longer words are ignored */

/* The search terms of a user's text: words (letters, digits, any
 * non-ASCII letter), ASCII lower-cased, deduplicated with their counts as
 * weights, common function words dropped unless nothing else is left.
 * Nothing of the user's syntax survives: no quote, operator, column filter
 * or prefix mark can reach the index. */
struct sx_rag_terms {
    size_t n;
    char term[SX_RAG_QUERY_TERMS_MAX][SX_RAG_TERM_MAX + 1];
    double weight[SX_RAG_QUERY_TERMS_MAX];
};

void sx_rag_terms_parse(const char *text, size_t len, struct sx_rag_terms *out);

/* The FTS5 MATCH expression for terms: each term in double quotes, joined
 * by OR ("aspirin" OR "pain"). Returns the length written, or SX_ETOOBIG if
 * cap is too small; "" (0) when there are no terms. */
int sx_rag_fts_expr(const struct sx_rag_terms *t, char *out, size_t cap);

/* The normalised score (see the top of this file) from a BM25 score and the
 * query's reference score; 0 when ideal <= 0. */
double sx_rag_normalise(double bm25, double ideal);

/* ---- the module ---------------------------------------------------------- */

/* Limits of the datasets API (defaults in brackets). */
struct sx_rag_limits {
    int docs_per_request;     /* [100] */
    size_t doc_text_bytes;    /* [262144] */
    size_t title_bytes;       /* [512] */
    size_t metadata_bytes;    /* [4096] as compact JSON */
    int64_t docs_per_dataset; /* [100000] */
    int datasets_per_tenant;  /* [100] */
};

/* The embedder the serving layer may install (the engine's pooled
 * embeddings): writes dim floats for text[0..len) into out, truncating
 * text to what the model takes. 0 or a negative code. Called from HTTP
 * threads, during uploads (inside their transaction) and queries. */
typedef int (*sx_rag_embed_fn)(void *ctx, const char *text, size_t len, float *out, int dim);

/* Registers the rag module's SQLite functions (the BM25 ranking function
 * used by the index) for every SQLite connection opened afterwards. Call
 * once, before sx_store_open(). 0 or SX_ESTORE. */
int sx_rag_sqlite_setup(void);

/* Applies the module's migrations and registers its tenant purge hook.
 * limits may be NULL (defaults). NULL with err filled on failure, e.g.
 * when sx_rag_sqlite_setup() was not called first. */
sx_rag *sx_rag_open(sx_store *store, sx_tenancy *tenancy, const struct sx_rag_limits *limits,
                    char *err, size_t errlen);
void sx_rag_close(sx_rag *rag); /* accepts NULL */

/* Memory for the in-memory postings that rank a tenant's chunks without
 * FTS5 (same results, faster), across tenants; 0 turns them off. The
 * default is 256 MiB. */
void sx_rag_set_postings_budget(sx_rag *rag, size_t bytes);

/* Installs (fn non-NULL) or removes the embedder. model names its vector
 * space (vectors of another model are ignored); dim is 1..8192. From then
 * on new chunks get vectors, and retrieval fuses cosine similarity with
 * BM25 by reciprocal rank. Chunks uploaded before stay BM25-only until
 * they are uploaded again. Thread-safe. */
void sx_rag_set_embedder(sx_rag *rag, sx_rag_embed_fn fn, void *ctx, const char *model,
                         int dim);

/* ---- datasets and documents (JSON in, JSON out, as the API shows) ------ */

/* Registers a dataset from {name, type: "documents", data_use: {allow_rag},
 * chunking: {max_tokens, overlap_tokens}, description}. *out is the new
 * dataset object. SX_EINVAL (fault), SX_EEXIST (name taken), SX_ELIMIT
 * (too many datasets; fault), SX_ESTORE. */
int sx_rag_dataset_register(sx_rag *rag, const char *tenant_id, const json_t *body,
                            json_t **out, struct sx_fault *f);

/* {"object":"list","data":[datasets...]} of a tenant. 0 or SX_ESTORE. */
int sx_rag_dataset_list(sx_rag *rag, const char *tenant_id, json_t **out);

/* One dataset with its counts. SX_ENOTFOUND or SX_ESTORE. */
int sx_rag_dataset_get(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                       json_t **out);

/* Deletes a dataset, its documents and chunks (gone from the index when
 * this returns). SX_ENOTFOUND or SX_ESTORE. */
int sx_rag_dataset_delete(sx_rag *rag, const char *tenant_id, const char *dataset_id);

/* Upserts {"docs":[{doc_id, title, text, metadata}]} by doc_id in one
 * transaction. The whole request is checked first; a bad document is
 * SX_EINVAL with the fault naming "docs[i].field" and nothing is written.
 * *out is {"object":"upload","dataset_id","results":[{doc_id, status:
 * "created"|"updated"|"unchanged", chunks}], "created","updated",
 * "unchanged"}. SX_ENOTFOUND (dataset), SX_ETOOBIG (too many docs in the
 * request or the dataset; fault), SX_ESTORE. */
int sx_rag_docs_upload(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                       const json_t *body, json_t **out, struct sx_fault *f);

/* One page of a dataset's documents by doc_id (no text): at most limit
 * (1..100) after the doc_id `after` (NULL: from the start). *out is
 * {"object": "list", "data": [...], "has_more", "next_cursor"}, the cursor
 * being the last doc_id of the page. SX_ENOTFOUND (dataset), SX_ESTORE. */
int sx_rag_docs_list(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                     const char *after, int limit, json_t **out);

/* A document with its chunks' ids. SX_ENOTFOUND or SX_ESTORE. */
int sx_rag_doc_get(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                   const char *doc_id, json_t **out);

/* Deletes a document and its chunks. SX_ENOTFOUND or SX_ESTORE. */
int sx_rag_doc_delete(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                      const char *doc_id);

/* ---- retrieval ----------------------------------------------------------- */

struct sx_rag_hit {
    char chunk_id[32];                     /* "chk_<n>" */
    char dataset_id[SX_RAG_DATASET_ID_MAX];
    char doc_id[SX_RAG_DOC_ID_MAX + 1];
    int chunk_index;                       /* position in its document */
    char *title;
    char *text;
    json_t *metadata;                      /* object (own reference) */
    double score;                          /* [0, 1] */
    double bm25;                           /* raw BM25F score, 0: vector only */
    double similarity;                     /* cosine, or -1 without vectors */
};

struct sx_rag_result {
    struct sx_rag_hit *hits; /* best first */
    size_t n;
    size_t n_terms;          /* query terms used */
    bool vectors;            /* vector similarity took part */
    double took_ms;
};

struct sx_rag_query {
    int top_k;               /* 1..100 */
    double threshold;        /* [0, 1]: hits scoring less are dropped */
    const json_t *datasets;  /* array of dataset ids, or NULL: every dataset
                              * whose data_use allows RAG */
};

/* Ranks the tenant's chunks for text: BM25 over the tenant's index and,
 * with an embedder, cosine similarity of vectors, fused by reciprocal rank
 * (k = 60); a hit's score is its normalised BM25 score (similarity only
 * reorders). Keeps those scoring at least threshold, best first. out is
 * cleared first and must be passed to sx_rag_result_clear(). 0, SX_EINVAL
 * (bad dataset list; fault) or SX_ESTORE. A query without words gives 0 hits, not an error. */
int sx_rag_retrieve(sx_rag *rag, const char *tenant_id, const char *text, size_t len,
                    const struct sx_rag_query *q, struct sx_rag_result *out,
                    struct sx_fault *f);

/* What chat calls: when t's settings enable RAG, retrieves rag_top_k
 * chunks scoring at least rag_threshold from datasets that allow RAG.
 * With RAG off, out is empty and 0 is returned. */
int sx_rag_augment(sx_rag *rag, const struct sx_tenant *t, const char *query, size_t len,
                   struct sx_rag_result *out);

/* What chat calls on its messages ([{"role","content"}], content strings):
 * with RAG on, retrieves for the last user message and adds the context
 * block to the leading system message (inserting one if there is none), so
 * that the prompt, and its token count, include it. *meta gets meta.rag
 * (a new reference), or NULL when the tenant's RAG is off. A retrieval
 * failure is logged and leaves the messages as they were (meta.rag says
 * "error"): chat still answers. 0 or SX_ENOMEM. */
int sx_rag_augment_messages(sx_rag *rag, const struct sx_tenant *t, json_t *messages,
                            json_t **meta);

/* The system-prompt block for the hits (titles, metadata, text), or NULL
 * when there are none or on ENOMEM. malloc'd; the caller frees. Chat adds
 * it to the system prompt before counting prompt tokens, so RAG context
 * is billed like any prompt token. */
char *sx_rag_render_context(const struct sx_rag_result *r);

/* meta.rag of a chat response: {"used", "chunks":[{doc_id, chunk_id,
 * dataset_id, title, score}], "top_k", "threshold"}. New reference. */
json_t *sx_rag_result_meta(const struct sx_rag_result *r, int top_k, double threshold);

/* The search endpoint's JSON: every hit with text and metadata. */
json_t *sx_rag_result_to_json(const struct sx_rag_result *r);

void sx_rag_result_clear(struct sx_rag_result *r); /* accepts zeroed or cleared */

#endif
