/* Embedding vectors for the rag module: when the serving layer installs an
 * embedder (the engine's pooled embeddings), each new chunk gets a unit
 * vector stored beside it, and retrieval ranks the tenant's vectors by
 * cosine similarity against the query's, to be fused with BM25 by
 * reciprocal rank in retrieve.c. Vectors are stored as base64 of
 * little-endian float32 and tagged with the embedder's model name, so a
 * model change never mixes spaces: vectors of another model are ignored.
 *
 * Limitation: the search is exact and brute force (every vector of the
 * tenant is read per query), so it is skipped above SX_RAG_VECTORS_MAX
 * vectors per tenant (BM25 alone then); an approximate index is the step
 * after this one. */
#include "rag/internal.h"

#include "base/err.h"
#include "base/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *encode(const float *v, int dim)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t n = (size_t)dim * 4, i, o = 0;
    char *s = malloc(4 * ((n + 2) / 3) + 1);

    if (!s)
        return NULL;
    for (i = 0; i < n; i += 3) {
        unsigned x = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);

        s[o++] = b64[x >> 18 & 63];
        s[o++] = b64[x >> 12 & 63];
        s[o++] = i + 1 < n ? b64[x >> 6 & 63] : '=';
        s[o++] = i + 2 < n ? b64[x & 63] : '=';
    }
    s[o] = '\0';
    return s;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;

    return p ? (int)(p - b64) : -1;
}

/* Decodes exactly dim floats; 0 or SX_EINVAL. */
static int decode(const char *s, float *v, int dim)
{
    unsigned char *p = (unsigned char *)v;
    size_t n = (size_t)dim * 4, o = 0, len = strlen(s), i;

    if (len != 4 * ((n + 2) / 3))
        return SX_EINVAL;
    for (i = 0; i < len; i += 4) {
        int a = b64_value(s[i]), b = b64_value(s[i + 1]);
        int c = s[i + 2] == '=' ? 0 : b64_value(s[i + 2]);
        int d = s[i + 3] == '=' ? 0 : b64_value(s[i + 3]);
        unsigned x;

        if (a < 0 || b < 0 || c < 0 || d < 0)
            return SX_EINVAL;
        x = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        if (o < n)
            p[o++] = (unsigned char)(x >> 16);
        if (o < n)
            p[o++] = (unsigned char)(x >> 8);
        if (o < n)
            p[o++] = (unsigned char)x;
    }
    return 0;
}

/* Unit length in place; SX_EINVAL for a zero or non-finite vector. */
static int normalise(float *v, int dim)
{
    double s = 0;
    int i;

    for (i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    if (!(s > 0) || !isfinite(s))
        return SX_EINVAL;
    s = 1.0 / sqrt(s);
    for (i = 0; i < dim; i++)
        v[i] = (float)(v[i] * s);
    return 0;
}

void sx_rag_set_embedder(sx_rag *rag, sx_rag_embed_fn fn, void *ctx, const char *model,
                         int dim)
{
    pthread_rwlock_wrlock(&rag->embed_lock);
    rag->embed = fn && model && *model && dim > 0 && dim <= SX_RAG_DIM_MAX ? fn : NULL;
    rag->embed_ctx = ctx;
    snprintf(rag->embed_model, sizeof(rag->embed_model), "%s", rag->embed ? model : "");
    rag->embed_dim = rag->embed ? dim : 0;
    pthread_rwlock_unlock(&rag->embed_lock);
}

int sx_rag_vector_embed(sx_rag *rag, const char *text, size_t len, float **out, int *dim,
                        char model[128])
{
    int rc = 0;

    *out = NULL;
    *dim = 0;
    model[0] = '\0';
    pthread_rwlock_rdlock(&rag->embed_lock);
    if (rag->embed) {
        *dim = rag->embed_dim;
        snprintf(model, 128, "%s", rag->embed_model);
        *out = malloc((size_t)*dim * sizeof(float));
        rc = *out ? rag->embed(rag->embed_ctx, text, len, *out, *dim) : SX_ENOMEM;
        if (rc == 0)
            rc = normalise(*out, *dim);
    }
    pthread_rwlock_unlock(&rag->embed_lock);
    if (rc != 0) {
        free(*out);
        *out = NULL;
        *dim = 0;
    }
    return rc;
}

int sx_rag_vector_add(sx_rag *rag, sx_db *db, const char *tenant_id, int64_t chunk_id,
                      const char *title, const char *text)
{
    char model[128], *joined = NULL, *enc;
    float *v;
    int dim, rc;

    if (asprintf(&joined, "%s\n%s", title, text) < 0)
        return SX_ENOMEM;
    rc = sx_rag_vector_embed(rag, joined, strlen(joined), &v, &dim, model);
    free(joined);
    if (rc != 0 || !v) {
        if (rc != 0)
            SX_WARN("rag", "embedding chunk %lld of tenant %s failed: %s; it is found by "
                    "BM25 only", (long long)chunk_id, tenant_id, sx_strerror(rc));
        return 0; /* a chunk without a vector is still a BM25 chunk */
    }
    enc = encode(v, dim);
    free(v);
    if (!enc)
        return SX_ENOMEM;
    rc = sx_db_run(db, "INSERT INTO rag_vectors (chunk_id, tenant_id, model, dim, vec) "
                       "VALUES ($1, $2, $3, $4, $5)", "ittit", chunk_id, tenant_id, model,
                   (int64_t)dim, enc) == 1 ? 0 : SX_ESTORE;
    free(enc);
    return rc;
}

static int by_sim_desc(const void *a, const void *b)
{
    const struct sx_rag_vhit *x = a, *y = b;

    return x->sim > y->sim ? -1 : x->sim < y->sim;
}

int sx_rag_vector_search(sx_db *db, const char *tenant_id, const char *model, const float *q,
                         int dim, const json_t *datasets, struct sx_rag_vhit *out, size_t cap,
                         size_t *n)
{
    float *v = malloc((size_t)dim * sizeof(float));
    char *filter = datasets ? json_dumps(datasets, JSON_COMPACT) : NULL;
    size_t seen = 0, i;
    sx_stmt *st;
    int rc;

    *n = 0;
    if (!v || (datasets && !filter)) {
        free(v);
        free(filter);
        return SX_ENOMEM;
    }

    /* Same datasets as the BM25 side: those named, or those allowing RAG;
     * the tenant filter is on both tables. */
    st = sx_db_query(db, "SELECT v.chunk_id, v.vec FROM rag_vectors v "
                         "JOIN rag_chunks c ON c.id = v.chunk_id "
                         "JOIN rag_datasets d ON d.id = c.dataset_id "
                         "WHERE v.tenant_id = $1 AND c.tenant_id = $1 AND d.tenant_id = $1 "
                         "AND v.model = $2 AND v.dim = $3 "
                         "AND CASE WHEN $4 IS NULL THEN d.allow_rag = 1 "
                         "ELSE d.id IN (SELECT value FROM json_each($4)) END",
                     filter ? "ttit" : "ttin", tenant_id, model, (int64_t)dim, filter);
    free(filter);
    if (!st) {
        free(v);
        return SX_ESTORE;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        double sim = 0;
        int k;

        if (++seen > SX_RAG_VECTORS_MAX) {
            *n = 0; /* too many to scan per query: BM25 alone */
            break;
        }
        if (decode(sx_stmt_text(st, 1), v, dim) != 0)
            continue;
        for (k = 0; k < dim; k++)
            sim += (double)q[k] * v[k];

        /* Keep the cap best: append, and when full, replace the worst. */
        if (*n < cap) {
            out[(*n)++] = (struct sx_rag_vhit){sx_stmt_int(st, 0), sim};
        } else {
            size_t worst = 0;

            for (i = 1; i < cap; i++)
                if (out[i].sim < out[worst].sim)
                    worst = i;
            if (sim > out[worst].sim)
                out[worst] = (struct sx_rag_vhit){sx_stmt_int(st, 0), sim};
        }
    }
    sx_stmt_done(st);
    free(v);
    if (rc < 0)
        return SX_ESTORE;
    qsort(out, *n, sizeof(*out), by_sim_desc);
    return 0;
}
