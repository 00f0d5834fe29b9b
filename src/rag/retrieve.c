/* Retrieval for the rag module: the module object, ranking a tenant's
 * chunks for a text (what the search endpoint and chat both call), the
 * chat entry point that applies the tenant's RAG settings, and the two
 * renderings of a result: the system-prompt block and meta.rag. */
#include "rag/internal.h"

#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOP_K_MAX 1000
#define FUSION_DEPTH 50 /* each ranking's depth when fusing */
#define RRF_K 60.0      /* reciprocal rank fusion constant (Cormack et al.) */

static const struct sx_rag_limits default_limits = {
    .docs_per_request = 100,
    .doc_text_bytes = 262144,
    .title_bytes = 512,
    .metadata_bytes = 4096,
    .docs_per_dataset = 100000,
    .datasets_per_tenant = 100,
};

sx_rag *sx_rag_open(sx_store *store, sx_tenancy *tenancy, const struct sx_rag_limits *limits,
                    char *err, size_t errlen)
{
    sx_rag *rag = calloc(1, sizeof(*rag));
    sx_db *db;
    sx_stmt *st;

    if (!rag) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rag->store = store;
    rag->tenancy = tenancy;
    rag->limits = limits ? *limits : default_limits;
    rag->dfcache = sx_rag_dfcache_new(); /* NULL: searches run uncached */
    rag->postings = sx_rag_postings_new(SX_RAG_POSTINGS_BUDGET); /* NULL: FTS5 only */
    rag->norag = sx_rag_norag_new(); /* NULL: every retrieval asks the store */
    if (pthread_rwlock_init(&rag->embed_lock, NULL) != 0) {
        snprintf(err, errlen, "rag: cannot create a lock");
        free(rag);
        return NULL;
    }
    if (sx_rag_schema(rag, err, errlen) != 0)
        goto fail;

    /* The ranking function must be on every connection. */
    db = sx_store_acquire(store);
    st = db ? sx_db_query(db, "SELECT sx_rag_probe()", "") : NULL;
    if (!st || sx_stmt_step(st) != SX_STORE_ROW) {
        snprintf(err, errlen, "rag: the SQLite ranking function is missing; call "
                 "sx_rag_sqlite_setup() before sx_store_open()");
        if (st)
            sx_stmt_done(st);
        sx_store_release(store, db);
        goto fail;
    }
    sx_stmt_done(st);
    sx_store_release(store, db);
    return rag;
fail:
    sx_rag_close(rag);
    return NULL;
}

void sx_rag_set_postings_budget(sx_rag *rag, size_t bytes)
{
    if (rag)
        sx_rag_postings_set_budget(rag->postings, bytes);
}

void sx_rag_close(sx_rag *rag)
{
    if (!rag)
        return;
    pthread_rwlock_destroy(&rag->embed_lock);
    sx_rag_dfcache_free(rag->dfcache);
    sx_rag_postings_free(rag->postings);
    sx_rag_norag_free(rag->norag);
    free(rag);
}

/* ---- results ------------------------------------------------------------- */

void sx_rag_result_clear(struct sx_rag_result *r)
{
    size_t i;

    if (!r)
        return;
    for (i = 0; i < r->n; i++) {
        free(r->hits[i].title);
        free(r->hits[i].text);
        json_decref(r->hits[i].metadata);
    }
    free(r->hits);
    memset(r, 0, sizeof(*r));
}

/* Fills hit from its chunk row, checking once more that it is the
 * tenant's. SX_ENOTFOUND if the row vanished (a concurrent delete). */
static int load_hit(sx_db *db, const char *tenant_id, int64_t rowid, struct sx_rag_hit *h)
{
    sx_stmt *st = sx_db_query(db, "SELECT c.dataset_id, c.doc_id, c.seq, c.title, c.text, "
                                  "d.metadata FROM rag_chunks c JOIN rag_docs d ON "
                                  "d.dataset_id = c.dataset_id AND d.doc_id = c.doc_id "
                                  "WHERE c.id = $1 AND c.tenant_id = $2 AND d.tenant_id = $2",
                              "it", rowid, tenant_id);
    int rc;

    if (!st)
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    if (rc == SX_STORE_ROW) {
        snprintf(h->chunk_id, sizeof(h->chunk_id), "chk_%lld", (long long)rowid);
        snprintf(h->dataset_id, sizeof(h->dataset_id), "%s", sx_stmt_text(st, 0));
        snprintf(h->doc_id, sizeof(h->doc_id), "%s", sx_stmt_text(st, 1));
        h->chunk_index = (int)sx_stmt_int(st, 2);
        h->title = strdup(sx_stmt_text(st, 3));
        h->text = strdup(sx_stmt_text(st, 4));
        h->metadata = json_loads(sx_stmt_text(st, 5), 0, NULL);
        if (!h->metadata)
            h->metadata = json_object();
        rc = h->title && h->text && h->metadata ? 0 : SX_ENOMEM;
    } else {
        rc = rc == SX_STORE_DONE ? SX_ENOTFOUND : SX_ESTORE;
    }
    sx_stmt_done(st);
    return rc;
}

/* Checks the API's dataset list: an array of 1..100 dataset ids. */
static int datasets_check(const json_t *v, struct sx_fault *f)
{
    size_t i;
    json_t *x;

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 100)
        goto bad;
    json_array_foreach(v, i, x) {
        if (!json_is_string(x) || json_string_length(x) >= SX_RAG_DATASET_ID_MAX)
            goto bad;
    }
    return 0;
bad:
    if (f) {
        f->code = "invalid_datasets";
        snprintf(f->param, sizeof(f->param), "dataset_ids");
        snprintf(f->message, sizeof(f->message), "dataset_ids must be an array of 1 to 100 "
                 "dataset ids (\"ds_...\")");
    }
    return SX_EINVAL;
}

static int listed(const json_t *list, const char *id)
{
    size_t i;
    json_t *x;

    json_array_foreach(list, i, x)
        if (strcmp(json_string_value(x), id) == 0)
            return 1;
    return 0;
}

/* The index tokens of the tenant's datasets a query may see: those named
 * in list, or with list NULL those whose data_use allows RAG. *n_ds 0 with
 * *all set means every dataset; 0 without it, none. */
static int datasets_select(sx_db *db, const char *tenant_id, const json_t *list,
                           char (**tokens)[SX_RAG_TOKEN_MAX], size_t *n_ds, bool *all)
{
    sx_stmt *st = sx_db_query(db, "SELECT id, index_token, allow_rag FROM rag_datasets "
                                  "WHERE tenant_id = $1", "t", tenant_id);
    size_t total = 0, cap = 0;
    int rc;

    *tokens = NULL;
    *n_ds = 0;
    *all = false;
    if (!st)
        return SX_ESTORE;
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        const char *id = sx_stmt_text(st, 0);
        bool take = list && !json_is_null(list) ? listed(list, id) : sx_stmt_int(st, 2) != 0;

        total++;
        if (!take)
            continue;
        if (*n_ds == cap) {
            void *p = realloc(*tokens, (cap = cap ? cap * 2 : 8) * SX_RAG_TOKEN_MAX);

            if (!p) {
                rc = SX_ENOMEM;
                break;
            }
            *tokens = p;
        }
        snprintf((*tokens)[(*n_ds)++], SX_RAG_TOKEN_MAX, "%s", sx_stmt_text(st, 1));
    }
    sx_stmt_done(st);
    if (rc < 0) {
        free(*tokens);
        *tokens = NULL;
        *n_ds = 0;
        return rc == SX_ENOMEM ? rc : SX_ESTORE;
    }
    if (*n_ds > 0 && *n_ds == total) {
        *all = true;
        *n_ds = 0;
    }
    return 0;
}

/* A chunk from either ranking, with what each said of it. */
struct fused {
    int64_t rowid;
    double bm25, norm; /* 0 when BM25 did not rank it */
    double sim;        /* -1 when the vector side did not rank it */
    double rrf;        /* reciprocal rank fusion: sum of 1 / (60 + rank) */
};

static int by_rrf_desc(const void *a, const void *b)
{
    const struct fused *x = a, *y = b;

    return x->rrf > y->rrf ? -1 : x->rrf < y->rrf;
}

/* Merges the two rankings (each best first) into fz; n_fz its length. */
static void fuse(const struct sx_rag_cand *cand, size_t n_cand, double ideal,
                 const struct sx_rag_vhit *vec, size_t n_vec, struct fused *fz, size_t *n_fz)
{
    size_t i, j;

    *n_fz = 0;
    for (i = 0; i < n_cand; i++)
        fz[(*n_fz)++] = (struct fused){cand[i].rowid, cand[i].bm25,
                                       sx_rag_normalise(cand[i].bm25, ideal), -1,
                                       1.0 / (RRF_K + (double)i + 1)};
    for (j = 0; j < n_vec; j++) {
        double r = 1.0 / (RRF_K + (double)j + 1);

        for (i = 0; i < n_cand && fz[i].rowid != vec[j].rowid; i++)
            ;
        if (i < n_cand) {
            fz[i].sim = vec[j].sim;
            fz[i].rrf += r;
        } else {
            fz[(*n_fz)++] = (struct fused){vec[j].rowid, 0, 0, vec[j].sim, r};
        }
    }
    if (n_vec)
        qsort(fz, *n_fz, sizeof(*fz), by_rrf_desc);
}

int sx_rag_retrieve(sx_rag *rag, const char *tenant_id, const char *text, size_t len,
                    const struct sx_rag_query *q, struct sx_rag_result *out,
                    struct sx_fault *f)
{
    struct sx_rag_terms terms;
    struct sx_rag_cand *cand = NULL;
    struct sx_rag_vhit *vec = NULL;
    struct fused *fz = NULL;
    char (*tokens)[SX_RAG_TOKEN_MAX] = NULL, model[128];
    const char *ds[128];
    int64_t t0 = sx_time_mono_ns();
    size_t n_cand = 0, n_vec = 0, n_fz = 0, n_ds = 0, depth, i;
    double ideal = 0;
    float *qvec = NULL;
    bool all = false;
    int top_k = q->top_k < 1 ? 1 : q->top_k > TOP_K_MAX ? TOP_K_MAX : q->top_k, dim = 0;
    sx_db *db = NULL;
    bool by_rag = !q->datasets || json_is_null(q->datasets); /* not a list */
    uint64_t gen = sx_rag_norag_gen(rag->norag);
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = datasets_check(q->datasets, f)) != 0)
        return rc;
    sx_rag_terms_parse(text, len, &terms);
    out->n_terms = terms.n;
    if (by_rag && sx_rag_norag_has(rag->norag, tenant_id))
        goto done; /* no dataset allows RAG: nothing to find */

    /* 1. The query's vector, before taking a connection (embedding takes
     * a while); without one, BM25 alone. */
    if (text && len && (rc = sx_rag_vector_embed(rag, text, len, &qvec, &dim, model)) != 0) {
        SX_WARN("rag", "embedding a query of tenant %s failed: %s; ranking by BM25 only",
                tenant_id, sx_strerror(rc));
        rc = 0;
    }
    if (terms.n == 0 && !qvec)
        goto done;
    depth = qvec ? (size_t)(top_k > FUSION_DEPTH ? top_k : FUSION_DEPTH) : (size_t)top_k;
    cand = malloc(depth * sizeof(*cand));
    vec = malloc(depth * sizeof(*vec));
    fz = malloc(2 * depth * sizeof(*fz));
    out->hits = calloc((size_t)top_k, sizeof(*out->hits));
    if (!cand || !vec || !fz || !out->hits) {
        rc = SX_ENOMEM;
        goto done;
    }

    /* 2. The datasets it may see; none, no hits. */
    if (!(db = sx_store_acquire(rag->store))) {
        rc = SX_ESTORE;
        goto done;
    }
    if ((rc = datasets_select(db, tenant_id, q->datasets, &tokens, &n_ds, &all)) != 0)
        goto done;
    if (!all && n_ds == 0) {
        if (by_rag)
            sx_rag_norag_add(rag->norag, tenant_id, gen);
        goto done;
    }
    if (n_ds > sizeof(ds) / sizeof(ds[0])) {
        rc = SX_ETOOBIG;
        goto done;
    }
    for (i = 0; i < n_ds; i++)
        ds[i] = tokens[i];

    /* 3. Rank in the tenant's index, and by similarity; fuse. */
    if (terms.n && (rc = sx_rag_index_search(db, rag, tenant_id, &terms, ds, n_ds,
                                             q->threshold, cand, depth, &n_cand,
                                             &ideal)) != 0)
        goto done;
    if (qvec) {
        if ((rc = sx_rag_vector_search(db, tenant_id, model, qvec, dim, q->datasets, vec,
                                       depth, &n_vec)) != 0)
            goto done;
        out->vectors = true;
    }
    fuse(cand, n_cand, ideal, vec, n_vec, fz, &n_fz);

    /* 4. Keep those scoring at least the threshold, with their text and
     * metadata. The score is the normalised BM25 alone: similarity only
     * reorders. Mean-pooled hidden states of a chat model are anisotropic
     * (unrelated texts often have cosine 0.8 or more), so a threshold on
     * them would mean different things per model and would let unrelated
     * chunks into every prompt. */
    for (i = 0; i < n_fz && out->n < (size_t)top_k; i++) {
        struct sx_rag_hit *h = &out->hits[out->n];
        double s = fz[i].norm;

        s = s < 0 ? 0 : s > 1 ? 1 : s;
        if (s < q->threshold) {
            if (!qvec)
                break; /* BM25 alone: scores only fall from here */
            continue;
        }
        rc = load_hit(db, tenant_id, fz[i].rowid, h);
        if (rc == SX_ENOTFOUND)
            continue;
        out->n++;
        if (rc != 0)
            goto done;
        h->score = s;
        h->bm25 = fz[i].bm25;
        h->similarity = fz[i].sim;
    }
    rc = 0;
done:
    sx_store_release(rag->store, db);
    free(cand);
    free(vec);
    free(fz);
    free(qvec);
    free(tokens);
    if (rc != 0)
        sx_rag_result_clear(out);
    else
        out->took_ms = (double)(sx_time_mono_ns() - t0) / 1e6;
    return rc;
}

int sx_rag_augment(sx_rag *rag, const struct sx_tenant *t, const char *query, size_t len,
                   struct sx_rag_result *out)
{
    struct sx_rag_query q = {0};

    memset(out, 0, sizeof(*out));
    if (!rag || !t || !t->settings.enable_rag || !query)
        return 0;
    /* No dataset allows RAG: nothing to find, not even the query's terms
     * to count (a chat reports none; 0.5 % of a relayed request's CPU). */
    if (sx_rag_norag_has(rag->norag, t->id))
        return 0;
    q.top_k = t->settings.rag_top_k > 0 ? t->settings.rag_top_k : 5;
    q.threshold = t->settings.rag_threshold;
    return sx_rag_retrieve(rag, t->id, query, len, &q, out, NULL);
}

int sx_rag_augment_messages(sx_rag *rag, const struct sx_tenant *t, json_t *messages,
                            json_t **meta)
{
    struct sx_rag_result res;
    json_t *m, *last_user = NULL, *first;
    const char *q;
    char *block, *merged;
    size_t i;
    int rc;

    *meta = NULL;
    if (!rag || !t || !t->settings.enable_rag || !json_is_array(messages))
        return 0;
    json_array_foreach(messages, i, m)
        if (json_is_string(json_object_get(m, "role")) &&
            strcmp(json_string_value(json_object_get(m, "role")), "user") == 0)
            last_user = json_object_get(m, "content");
    q = json_string_value(last_user);

    /* 1. Retrieve; a failure leaves the prompt alone. */
    rc = sx_rag_augment(rag, t, q ? q : "", q ? json_string_length(last_user) : 0, &res);
    if (rc != 0) {
        SX_WARN("rag", "retrieval for tenant %s failed: %s; answering without context",
                t->id, sx_strerror(rc));
        *meta = json_pack("{s:b, s:[], s:s}", "used", 0, "chunks", "error",
                          "retrieval_failed");
        return *meta ? 0 : SX_ENOMEM;
    }
    *meta = sx_rag_result_meta(&res, t->settings.rag_top_k, t->settings.rag_threshold);
    block = sx_rag_render_context(&res);
    sx_rag_result_clear(&res);
    if (!*meta) {
        free(block);
        return SX_ENOMEM;
    }
    if (!block)
        return 0;

    /* 2. Into the leading system message, so that templates that allow
     * one system turn only still take it. */
    first = json_array_get(messages, 0);
    if (first && json_is_string(json_object_get(first, "role")) &&
        strcmp(json_string_value(json_object_get(first, "role")), "system") == 0 &&
        json_is_string(json_object_get(first, "content"))) {
        if (asprintf(&merged, "%s\n\n%s",
                     json_string_value(json_object_get(first, "content")), block) < 0)
            merged = NULL;
        rc = merged ? json_object_set_new(first, "content", json_string(merged)) : -1;
        free(merged);
    } else {
        rc = json_array_insert_new(messages, 0, json_pack("{s:s, s:s}", "role", "system",
                                                          "content", block));
    }
    free(block);
    return rc == 0 ? 0 : SX_ENOMEM;
}

/* ---- renderings ---------------------------------------------------------- */

char *sx_rag_render_context(const struct sx_rag_result *r)
{
    char *buf = NULL;
    size_t size = 0, i;
    FILE *m;

    if (!r || r->n == 0 || !(m = open_memstream(&buf, &size)))
        return NULL;
    fputs("Use the following documents from this organisation's knowledge base when they "
          "help answer the user. Each starts with its title and details.\n", m);
    for (i = 0; i < r->n; i++) {
        const struct sx_rag_hit *h = &r->hits[i];
        char *meta = json_object_size(h->metadata) ? json_dumps(h->metadata, JSON_COMPACT)
                                                   : NULL;

        fprintf(m, "\n[%zu] %s (doc %s)\n", i + 1, h->title[0] ? h->title : "untitled",
                h->doc_id);
        if (meta)
            fprintf(m, "Details: %s\n", meta);
        fprintf(m, "%s\n", h->text);
        free(meta);
    }
    if (fclose(m) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

json_t *sx_rag_result_meta(const struct sx_rag_result *r, int top_k, double threshold)
{
    json_t *chunks = json_array();
    size_t i;

    for (i = 0; chunks && r && i < r->n; i++) {
        const struct sx_rag_hit *h = &r->hits[i];

        json_t *c = json_pack("{s:s, s:s, s:s, s:i, s:s, s:f}", "doc_id", h->doc_id,
                              "chunk_id", h->chunk_id, "dataset_id", h->dataset_id,
                              "chunk_index", h->chunk_index, "title", h->title, "score",
                              h->score);

        if (c && r->vectors)
            json_object_set_new(c, "similarity",
                                h->similarity > -1
                                    ? json_real(h->similarity) : json_null());
        json_array_append_new(chunks, c);
    }
    return json_pack("{s:b, s:o, s:i, s:f}", "used", r && r->n > 0, "chunks",
                     chunks ? chunks : json_array(), "top_k", top_k, "threshold", threshold);
}

json_t *sx_rag_result_to_json(const struct sx_rag_result *r)
{
    json_t *data = json_array();
    size_t i;

    for (i = 0; data && i < r->n; i++) {
        const struct sx_rag_hit *h = &r->hits[i];

        json_t *x = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:O, s:f}", "chunk_id",
                              h->chunk_id, "dataset_id", h->dataset_id, "doc_id", h->doc_id,
                              "chunk_index", h->chunk_index, "title", h->title, "text",
                              h->text, "metadata", h->metadata, "score", h->score);

        if (x && r->vectors)
            json_object_set_new(x, "similarity", h->similarity > -1
                                                     ? json_real(h->similarity)
                                                     : json_null());
        json_array_append_new(data, x);
    }
    return json_pack("{s:s, s:o, s:I, s:b, s:f}", "object", "search_results", "data",
                     data ? data : json_array(), "query_terms", (json_int_t)r->n_terms,
                     "vectors", r->vectors, "took_ms", r->took_ms);
}
