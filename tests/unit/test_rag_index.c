/* Unit tests of the rag module over a real SQLite store: dataset and
 * document lifecycle, upsert statuses, removal from the index, hostile
 * queries against FTS5, score normalisation on real rankings, the
 * allow_rag filter, and a randomised isolation test over many tenants
 * sharing one vocabulary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdbool.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "rag/rag.h"

struct fx {
    char dir[64];
    sx_store *store;
    sx_rag *rag;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    char err[256];

    sx_log_min_level = SX_LOG_ERROR;
    assert_int_equal(sx_rag_sqlite_setup(), 0);
    snprintf(f->dir, sizeof(f->dir), "/tmp/sx_test_rag_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->store = sx_store_open(NULL, f->dir, 4, err, sizeof(err));
    assert_non_null(f->store);
    f->rag = sx_rag_open(f->store, NULL, NULL, err, sizeof(err));
    assert_non_null(f->rag);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];

    sx_rag_close(f->rag);
    sx_store_close(f->store);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Registers a dataset; returns its id in id (32 bytes). */
static void dataset(struct fx *f, const char *tenant, const char *name, int allow_rag,
                    char *id)
{
    struct sx_fault flt = {0};
    json_t *body = json_pack("{s:s, s:s, s:{s:b}}", "name", name, "type", "documents",
                             "data_use", "allow_rag", allow_rag), *out = NULL;

    assert_int_equal(sx_rag_dataset_register(f->rag, tenant, body, &out, &flt), 0);
    snprintf(id, 32, "%s", json_string_value(json_object_get(out, "id")));
    assert_true(strncmp(id, "ds_", 3) == 0);
    json_decref(out);
    json_decref(body);
}

/* Uploads one document; returns the upload's status for it. */
static const char *put(struct fx *f, const char *tenant, const char *ds, const char *doc_id,
                       const char *title, const char *text)
{
    static char status[16];
    struct sx_fault flt = {0};
    json_t *body = json_pack("{s:[{s:s, s:s, s:s, s:{s:s}}]}", "docs", "doc_id", doc_id,
                             "title", title, "text", text, "metadata", "owner", tenant),
           *out = NULL;
    int rc = sx_rag_docs_upload(f->rag, tenant, ds, body, &out, &flt);

    json_decref(body);
    if (rc != 0) {
        snprintf(status, sizeof(status), "error %d", rc);
        return status;
    }
    snprintf(status, sizeof(status), "%s", json_string_value(json_object_get(
        json_array_get(json_object_get(out, "results"), 0), "status")));
    json_decref(out);
    return status;
}

static size_t search(struct fx *f, const char *tenant, const char *query, double threshold,
                     struct sx_rag_result *r)
{
    struct sx_rag_query q = {.top_k = 50, .threshold = threshold};

    assert_int_equal(sx_rag_retrieve(f->rag, tenant, query, strlen(query), &q, r, NULL), 0);
    return r->n;
}

static void test_spec_example(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32];
    char *ctx;
    json_t *meta;

    dataset(f, "tenant_a", "product_catalog", 1, ds);
    assert_string_equal(put(f, "tenant_a", ds, "med_001", "Aspirin 500mg",
                            "Pain reliever and anti-inflammatory. Dosage: 1-2 tablets every "
                            "4-6 hours..."), "created");
    assert_int_equal(search(f, "tenant_a", "What pain medications do you have?", 0.5, &r), 1);
    assert_string_equal(r.hits[0].doc_id, "med_001");
    assert_string_equal(r.hits[0].title, "Aspirin 500mg");
    assert_true(r.hits[0].score > 0.5 && r.hits[0].score <= 1.0);

    /* The prompt block carries title, metadata and text. */
    ctx = sx_rag_render_context(&r);
    assert_non_null(strstr(ctx, "Aspirin 500mg"));
    assert_non_null(strstr(ctx, "\"owner\":\"tenant_a\""));
    assert_non_null(strstr(ctx, "Pain reliever"));
    free(ctx);
    meta = sx_rag_result_meta(&r, 5, 0.5);
    assert_true(json_is_true(json_object_get(meta, "used")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(
                            json_object_get(meta, "chunks"), 0), "doc_id")), "med_001");
    json_decref(meta);
    sx_rag_result_clear(&r);

    /* Nothing relevant: nothing retrieved, nothing rendered. */
    assert_int_equal(search(f, "tenant_a", "car insurance quote", 0.1, &r), 0);
    assert_null(sx_rag_render_context(&r));
    sx_rag_result_clear(&r);
}

static void test_upsert_statuses_and_delete(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32];
    json_t *o = NULL;

    dataset(f, "tenant_a", "faq", 1, ds);
    assert_string_equal(put(f, "tenant_a", ds, "d1", "Returns", "Refunds take ten days."),
                        "created");
    assert_string_equal(put(f, "tenant_a", ds, "d1", "Returns", "Refunds take ten days."),
                        "unchanged");
    assert_string_equal(put(f, "tenant_a", ds, "d1", "Returns", "Exchanges take two days."),
                        "updated");
    /* The old text is gone from the index, the new one is there. */
    assert_int_equal(search(f, "tenant_a", "refunds", 0, &r), 0);
    sx_rag_result_clear(&r);
    assert_int_equal(search(f, "tenant_a", "exchanges", 0, &r), 1);
    sx_rag_result_clear(&r);

    assert_int_equal(sx_rag_dataset_get(f->rag, "tenant_a", ds, &o), 0);
    assert_int_equal(json_integer_value(json_object_get(o, "doc_count")), 1);
    json_decref(o);
    assert_int_equal(sx_rag_doc_get(f->rag, "tenant_b", ds, "d1", &o), SX_ENOTFOUND);
    assert_int_equal(sx_rag_doc_delete(f->rag, "tenant_b", ds, "d1"), SX_ENOTFOUND);
    assert_int_equal(sx_rag_doc_delete(f->rag, "tenant_a", ds, "d1"), 0);
    assert_int_equal(sx_rag_doc_delete(f->rag, "tenant_a", ds, "d1"), SX_ENOTFOUND);
    assert_int_equal(search(f, "tenant_a", "exchanges", 0, &r), 0);
    sx_rag_result_clear(&r);

    assert_string_equal(put(f, "tenant_a", ds, "d2", "Shipping", "Shipping is free."),
                        "created");
    assert_int_equal(sx_rag_dataset_delete(f->rag, "tenant_b", ds), SX_ENOTFOUND);
    assert_int_equal(sx_rag_dataset_delete(f->rag, "tenant_a", ds), 0);
    assert_int_equal(search(f, "tenant_a", "shipping", 0, &r), 0);
    sx_rag_result_clear(&r);
    assert_int_equal(sx_rag_dataset_get(f->rag, "tenant_a", ds, &o), SX_ENOTFOUND);
}

static void test_upload_validation_names_the_field(void **state)
{
    struct fx *f = *state;
    struct sx_fault flt = {0};
    char ds[32];
    json_t *body, *out = NULL;

    dataset(f, "tenant_a", "v", 1, ds);
    body = json_pack("{s:[{s:s, s:s}, {s:s, s:i}]}", "docs", "doc_id", "ok", "text", "fine",
                     "doc_id", "bad", "text", 5);
    assert_int_equal(sx_rag_docs_upload(f->rag, "tenant_a", ds, body, &out, &flt), SX_EINVAL);
    assert_string_equal(flt.param, "docs[1].text");
    json_decref(body);
    body = json_pack("{s:[{s:s, s:s}]}", "docs", "doc_id", "a/b", "text", "x");
    assert_int_equal(sx_rag_docs_upload(f->rag, "tenant_a", ds, body, &out, &flt), SX_EINVAL);
    assert_string_equal(flt.param, "docs[0].doc_id");
    json_decref(body);
    body = json_pack("{s:[{s:s, s:s}, {s:s, s:s}]}", "docs", "doc_id", "a", "text", "x",
                     "doc_id", "a", "text", "y");
    assert_int_equal(sx_rag_docs_upload(f->rag, "tenant_a", ds, body, &out, &flt), SX_EINVAL);
    assert_string_equal(flt.param, "docs[1].doc_id");
    json_decref(body);
    /* Nothing of a refused request was written. */
    assert_int_equal(sx_rag_doc_get(f->rag, "tenant_a", ds, "ok", &out), SX_ENOTFOUND);
}

static void test_hostile_queries(void **state)
{
    static const char *const hostile[] = {
        "aspirin OR", "NEAR(aspirin pain, 1)", "asp*", "^aspirin", "title:aspirin",
        "{title}: x", "\"", "\"\"\"", "aspirin\" OR \"x", "a AND", "(((", "- aspirin",
        "rowid:1", "*", "^", ":", "meta:owner", "NOT aspirin", "+", "",
    };
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32];
    size_t i;

    dataset(f, "tenant_a", "h", 1, ds);
    put(f, "tenant_a", ds, "d1", "Aspirin", "Aspirin relieves pain.");
    for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        search(f, "tenant_a", hostile[i], 0, &r);
        sx_rag_result_clear(&r);
    }
    /* The dataset token column is not searchable by query text. */
    {
        sx_db *db = sx_store_acquire(f->store);
        sx_stmt *st = sx_db_query(db, "SELECT index_token FROM rag_datasets WHERE id = $1",
                                  "t", ds);
        char token[32];

        assert_int_equal(sx_stmt_step(st), SX_STORE_ROW);
        snprintf(token, sizeof(token), "%s", sx_stmt_text(st, 0));
        sx_stmt_done(st);
        sx_store_release(f->store, db);
        assert_int_equal(strlen(token), 20);
        assert_int_equal(search(f, "tenant_a", token, 0, &r), 0);
        sx_rag_result_clear(&r);
    }
    /* "asp*" is the word "asp", not a prefix query. */
    assert_int_equal(search(f, "tenant_a", "asp*", 0, &r), 0);
    sx_rag_result_clear(&r);
    assert_int_equal(search(f, "tenant_a", "title:aspirin", 0, &r), 1);
    sx_rag_result_clear(&r);
}

/* Scores lie in [0, 1], fall with the rank, and a chunk holding every
 * query term scores higher than one holding half of them. */
static void test_scores_normalised(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32];
    size_t i;

    dataset(f, "tenant_a", "n", 1, ds);
    put(f, "tenant_a", ds, "both", "Ibuprofen", "Ibuprofen reduces fever and pain.");
    put(f, "tenant_a", ds, "one", "Bandage", "A bandage covers small wounds; no fever.");
    put(f, "tenant_a", ds, "none", "Soap", "Soap cleans hands.");
    put(f, "tenant_a", ds, "none2", "Towel", "Towels dry hands.");
    assert_int_equal(search(f, "tenant_a", "ibuprofen fever", 0, &r), 2);
    assert_string_equal(r.hits[0].doc_id, "both");
    for (i = 0; i < r.n; i++) {
        assert_true(r.hits[i].score >= 0 && r.hits[i].score <= 1);
        if (i)
            assert_true(r.hits[i].score <= r.hits[i - 1].score);
    }
    assert_true(r.hits[0].score > 0.9);
    assert_true(r.hits[1].score < 0.6);
    sx_rag_result_clear(&r);
    /* A threshold between the two keeps only the first. */
    assert_int_equal(search(f, "tenant_a", "ibuprofen fever", 0.7, &r), 1);
    sx_rag_result_clear(&r);
}

static void test_allow_rag_filter(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    struct sx_rag_query q = {.top_k = 10};
    char on[32], off[32], list[64];
    json_t *ids;

    dataset(f, "tenant_a", "on", 1, on);
    dataset(f, "tenant_a", "off", 0, off);
    put(f, "tenant_a", on, "d1", "Open", "Paracetamol tablets.");
    put(f, "tenant_a", off, "d2", "Private", "Paracetamol internal memo.");
    assert_int_equal(search(f, "tenant_a", "paracetamol", 0, &r), 1);
    assert_string_equal(r.hits[0].doc_id, "d1");
    sx_rag_result_clear(&r);

    /* Naming the dataset searches it (operators), still within the tenant. */
    snprintf(list, sizeof(list), "[\"%s\"]", off);
    ids = json_loads(list, 0, NULL);
    q.datasets = ids;
    assert_int_equal(sx_rag_retrieve(f->rag, "tenant_a", "paracetamol", 11, &q, &r, NULL), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.hits[0].doc_id, "d2");
    sx_rag_result_clear(&r);
    assert_int_equal(sx_rag_retrieve(f->rag, "tenant_b", "paracetamol", 11, &q, &r, NULL), 0);
    assert_int_equal(r.n, 0);
    sx_rag_result_clear(&r);
    json_decref(ids);
}

/* 12 tenants, documents drawn from one shared vocabulary (every word is in
 * every tenant's index), random queries: every hit belongs to the tenant
 * that asked, checked through the metadata each document carries and the
 * doc id prefix. */
static void test_isolation_randomised(void **state)
{
    static const char *const vocab[] = {
        "aspirin", "pain", "fever", "tablet", "dose", "price", "syrup", "child", "adult",
        "daily", "relief", "cream", "skin", "allergy", "cough", "vitamin", "zinc", "iron",
        "sleep", "stomach",
    };
    const size_t nv = sizeof(vocab) / sizeof(vocab[0]);
    struct fx *f = *state;
    char ds[12][32], tenant[32], doc[32], text[256], title[64];
    unsigned seed = 12345;
    int t, d, k, q;
    size_t i;

    for (t = 0; t < 12; t++) {
        snprintf(tenant, sizeof(tenant), "tenant_iso%02d", t);
        dataset(f, tenant, "shared-words", 1, ds[t]);
        for (d = 0; d < 15; d++) {
            text[0] = '\0';
            for (k = 0; k < 12; k++) {
                strcat(text, vocab[rand_r(&seed) % nv]);
                strcat(text, k == 11 ? "." : " ");
            }
            snprintf(doc, sizeof(doc), "t%02d_d%02d", t, d);
            snprintf(title, sizeof(title), "%s %s", vocab[rand_r(&seed) % nv],
                     vocab[rand_r(&seed) % nv]);
            assert_string_equal(put(f, tenant, ds[t], doc, title, text), "created");
        }
    }
    for (q = 0; q < 300; q++) {
        struct sx_rag_result r;
        char query[128], prefix[8];

        t = (int)(rand_r(&seed) % 12);
        snprintf(tenant, sizeof(tenant), "tenant_iso%02d", t);
        snprintf(prefix, sizeof(prefix), "t%02d_", t);
        snprintf(query, sizeof(query), "%s %s %s", vocab[rand_r(&seed) % nv],
                 vocab[rand_r(&seed) % nv], vocab[rand_r(&seed) % nv]);
        search(f, tenant, query, 0, &r);
        assert_true(r.n > 0);
        for (i = 0; i < r.n; i++) {
            assert_true(strncmp(r.hits[i].doc_id, prefix, 4) == 0);
            assert_string_equal(r.hits[i].dataset_id, ds[t]);
            assert_string_equal(json_string_value(json_object_get(r.hits[i].metadata,
                                                                  "owner")), tenant);
        }
        sx_rag_result_clear(&r);
    }

    /* A tenant without datasets gets nothing, not another's chunks. */
    {
        struct sx_rag_result r;

        assert_int_equal(search(f, "tenant_nobody", "aspirin pain fever", 0, &r), 0);
        sx_rag_result_clear(&r);
    }
}

/* Common terms are kept from generating candidates when they cannot change
 * the answer, yet still count in the scores of the chunks that are ranked,
 * and the ranking equals the one of an unpruned pass. */
static void test_pruning_is_exact(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result small, big;
    struct sx_rag_query q = {.top_k = 3, .threshold = 0};
    char ds[32], id[16], text[128];
    int d;
    size_t i;

    dataset(f, "tenant_a", "p", 1, ds);
    /* 200 chunks, most with "common"; "zircon" in three of them, with
     * "common" twice, once, and not at all. */
    for (d = 0; d < 200; d++) {
        snprintf(id, sizeof(id), "c%03d", d);
        snprintf(text, sizeof(text), "%s filler words number %d here.",
                 d == 0 ? "zircon common common" : d == 1 ? "zircon common" :
                 d == 2 ? "zircon only" : d % 4 ? "common" : "other", d);
        put(f, "tenant_a", ds, id, "T", text);
    }
    assert_int_equal(sx_rag_retrieve(f->rag, "tenant_a", "zircon common", 13, &q, &small,
                                     NULL), 0);
    assert_int_equal(small.n, 3);
    /* c001 and c002 have the same length; only "common" sets c001 ahead. */
    assert_string_equal(small.hits[0].doc_id, "c001");
    assert_string_equal(small.hits[1].doc_id, "c000");
    assert_string_equal(small.hits[2].doc_id, "c002");
    assert_true(small.hits[0].bm25 > small.hits[2].bm25);

    /* Asking for every chunk forces the unpruned pass: same top three,
     * same scores, then chunks holding only "common". */
    q.top_k = 300;
    assert_int_equal(sx_rag_retrieve(f->rag, "tenant_a", "zircon common", 13, &q, &big,
                                     NULL), 0);
    assert_true(big.n > 100);
    for (i = 0; i < 3; i++) {
        assert_string_equal(big.hits[i].doc_id, small.hits[i].doc_id);
        assert_true(fabs(big.hits[i].bm25 - small.hits[i].bm25) < 1e-9);
    }
    sx_rag_result_clear(&small);
    sx_rag_result_clear(&big);

    /* With a threshold only "zircon" chunks can reach, the pruned pass is
     * exact by itself. */
    q.top_k = 300;
    q.threshold = 0.5;
    assert_int_equal(sx_rag_retrieve(f->rag, "tenant_a", "zircon common", 13, &q, &small,
                                     NULL), 0);
    assert_int_equal(small.n, 3);
    sx_rag_result_clear(&small);
}

/* Randomised: for many queries over a skewed vocabulary, the pruned top 5
 * (formula, guess, early exits) equals the top 5 of a 1000-deep ranking,
 * score for score. */
static void test_pruning_matches_deep_ranking(void **state)
{
    static const char *const vocab[] = {
        "the", "cell", "cells", "protein", "gene", "risk", "patients", "increase",
        "mouse", "tumor", "kinase", "insulin", "brain", "zinc", "virus", "dose",
        "receptor", "pathway", "plasma", "liver", "neuron", "obesity", "sleep", "iron",
    };
    const size_t nv = sizeof(vocab) / sizeof(vocab[0]);
    struct fx *f = *state;
    unsigned seed = 99;
    char ds[32], id[16], text[512], title[64];
    int d, k, q;
    size_t i;

    dataset(f, "tenant_a", "zipf", 1, ds);
    for (d = 0; d < 300; d++) {
        text[0] = '\0';
        for (k = 0; k < 20 + d % 30; k++) {
            /* Skewed: low indexes are far more frequent. */
            unsigned r = rand_r(&seed) % 1000;
            size_t w = (size_t)(r * r / 1000 * nv / 1000);

            strcat(text, vocab[w]);
            strcat(text, " ");
        }
        snprintf(id, sizeof(id), "z%03d", d);
        snprintf(title, sizeof(title), "%s %s", vocab[rand_r(&seed) % nv],
                 vocab[rand_r(&seed) % nv]);
        put(f, "tenant_a", ds, id, title, text);
    }
    for (q = 0; q < 60; q++) {
        struct sx_rag_query small = {.top_k = 5, .threshold = q % 2 ? 0.5 : 0};
        struct sx_rag_query deep = {.top_k = 1000, .threshold = 0};
        struct sx_rag_result a, b;
        char query[256] = "";

        for (k = 0; k < 2 + q % 6; k++) {
            strcat(query, vocab[rand_r(&seed) % nv]);
            strcat(query, " ");
        }
        assert_int_equal(sx_rag_retrieve(f->rag, "tenant_a", query, strlen(query), &small,
                                         &a, NULL), 0);
        assert_int_equal(sx_rag_retrieve(f->rag, "tenant_a", query, strlen(query), &deep,
                                         &b, NULL), 0);
        for (i = 0; i < a.n; i++) {
            assert_true(i < b.n);
            assert_true(fabs(a.hits[i].bm25 - b.hits[i].bm25) < 1e-9);
        }
        /* Fewer than 5 only when the threshold cut the deep list there. */
        if (a.n < 5)
            assert_true(b.n == a.n || b.hits[a.n].score < small.threshold);
        sx_rag_result_clear(&a);
        sx_rag_result_clear(&b);
    }
}

/* Chunk ids carry the token counts of title, text and meta that ranking
 * reads instead of FTS5's docsize table: they must equal FTS5's own counts
 * (read here from its instance vocabulary). */
static void test_chunk_ids_carry_column_sizes(void **state)
{
    struct fx *f = *state;
    char ds[32];
    sx_db *db;
    sx_stmt *st;
    int rows = 0;

    dataset(f, "tenant_a", "sizes", 1, ds);
    put(f, "tenant_a", ds, "d1", "Aspirin 500mg tablets", "Café au lait, naïve résumé! "
        "Über-long words like pneumonoultramicroscopicsilicovolcanoconiosis. 日本語 text.");
    put(f, "tenant_a", ds, "d2", "", "x");
    db = sx_store_acquire(f->store);
    assert_int_equal(sx_db_exec(db, "CREATE VIRTUAL TABLE temp.inst USING "
                                    "fts5vocab(main, rag_fts_tenant_a, 'instance')"), 0);
    /* Colocated tokens (a compound's joined form) share an offset. */
    st = sx_db_query(db, "SELECT c.id, "
                         " (SELECT count(DISTINCT offset) FROM temp.inst"
                         "  WHERE doc = c.id AND col = 'title'),"
                         " (SELECT count(DISTINCT offset) FROM temp.inst"
                         "  WHERE doc = c.id AND col = 'text'),"
                         " (SELECT count(DISTINCT offset) FROM temp.inst"
                         "  WHERE doc = c.id AND col = 'meta')"
                         " FROM rag_chunks c WHERE c.tenant_id = 'tenant_a'", "");
    assert_non_null(st);
    while (sx_stmt_step(st) == SX_STORE_ROW) {
        int64_t id = sx_stmt_int(st, 0);

        assert_true(id >> 32 > 0);
        assert_int_equal((id >> 23) & 511, sx_stmt_int(st, 1));
        assert_int_equal((id >> 10) & 8191, sx_stmt_int(st, 2));
        assert_int_equal(id & 1023, sx_stmt_int(st, 3));
        rows++;
    }
    sx_stmt_done(st);
    assert_int_equal(rows, 2);
    sx_db_exec(db, "DROP TABLE temp.inst");
    sx_store_release(f->store, db);
}

/* A toy embedder: words of a concept share a dimension (so "analgesic"
 * and "pain" are close without sharing a word), other words hash into the
 * rest. "FAIL" makes it fail. */
static int toy_embed(void *ctx, const char *text, size_t len, float *out, int dim)
{
    static const char *const pain[] = {"pain", "analgesic", "analgesics", "painkiller"};
    char word[64];
    size_t i = 0, k;
    int d;

    (void)ctx;
    memset(out, 0, (size_t)dim * sizeof(*out));
    if (len >= 4 && memmem(text, len, "FAIL", 4))
        return SX_EIO;
    while (i < len) {
        size_t n = 0;
        unsigned h = 2166136261u;

        while (i < len && !isalpha((unsigned char)text[i]))
            i++;
        while (i < len && isalpha((unsigned char)text[i]) && n < sizeof(word) - 1)
            word[n++] = (char)tolower((unsigned char)text[i++]);
        while (i < len && isalpha((unsigned char)text[i]))
            i++;
        if (n == 0)
            continue;
        word[n] = '\0';
        for (k = 0, d = -1; k < 4; k++)
            if (strcmp(word, pain[k]) == 0)
                d = 0;
        if (d < 0) {
            for (k = 0; k < n; k++)
                h = (h ^ (unsigned char)word[k]) * 16777619u;
            d = 1 + (int)(h % (unsigned)(dim - 1));
        }
        out[d] += 1;
    }
    return 0;
}

static size_t vectors_of(struct fx *f, const char *tenant)
{
    sx_db *db = sx_store_acquire(f->store);
    sx_stmt *st = sx_db_query(db, "SELECT count(*) FROM rag_vectors WHERE tenant_id = $1", "t",
                              tenant);
    size_t n;

    assert_int_equal(sx_stmt_step(st), SX_STORE_ROW);
    n = (size_t)sx_stmt_int(st, 0);
    sx_stmt_done(st);
    sx_store_release(f->store, db);
    return n;
}

/* With an embedder, similarity finds what BM25 cannot, fused by rank; the
 * tenant, dataset and model filters hold; deletion removes vectors; an
 * embedder failure leaves chunks to BM25. */
static void test_vectors_fused_with_bm25(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32], ds_b[32];

    dataset(f, "tenant_a", "catalog", 1, ds);
    dataset(f, "tenant_b", "catalog", 1, ds_b);
    put(f, "tenant_a", ds, "early", "Aspirin", "Pain relief before vectors.");
    assert_int_equal(search(f, "tenant_a", "analgesic", 0, &r), 0);
    sx_rag_result_clear(&r);

    sx_rag_set_embedder(f->rag, toy_embed, NULL, "toy-1", 16);
    put(f, "tenant_a", ds, "med_001", "Aspirin 500mg", "Pain reliever. Take with water.");
    put(f, "tenant_a", ds, "soap", "Soap", "Cleans hands and water bottles.");
    put(f, "tenant_b", ds_b, "b_med", "Ibuprofen", "Pain reliever for tenant b.");
    assert_string_equal(put(f, "tenant_a", ds, "bad", "FAIL", "Embedding fails here."),
                        "created");
    assert_int_equal(vectors_of(f, "tenant_a"), 2);
    assert_int_equal(vectors_of(f, "tenant_b"), 1);

    /* "analgesic" shares no word with any document: only similarity finds
     * the pain reliever, and tenant b's twin is never seen. Similarity
     * reorders but scores nothing, so the hit passes no positive
     * threshold: an uncalibrated cosine must not put text in a prompt. */
    search(f, "tenant_a", "analgesic", 0, &r);
    assert_true(r.vectors);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.hits[0].doc_id, "med_001");
    assert_true(r.hits[0].bm25 == 0 && r.hits[0].similarity > 0.3);
    assert_true(r.hits[0].score == 0);
    sx_rag_result_clear(&r);
    search(f, "tenant_a", "analgesic", 0.3, &r);
    assert_int_equal(r.n, 0);
    sx_rag_result_clear(&r);

    /* Both signals: "pain water" ranks the aspirin first (BM25 and
     * similarity agree); the chunk from before the embedder is BM25-only. */
    search(f, "tenant_a", "pain water", 0, &r);
    assert_true(r.n >= 3);
    assert_string_equal(r.hits[0].doc_id, "med_001");
    assert_true(r.hits[0].bm25 > 0 && r.hits[0].similarity > 0);
    sx_rag_result_clear(&r);

    /* Another model's space: the stored vectors are ignored. */
    sx_rag_set_embedder(f->rag, toy_embed, NULL, "toy-2", 16);
    assert_int_equal(search(f, "tenant_a", "analgesic", 0, &r), 0);
    sx_rag_result_clear(&r);
    sx_rag_set_embedder(f->rag, toy_embed, NULL, "toy-1", 16);

    /* Deleting the document deletes its vector. */
    assert_int_equal(sx_rag_doc_delete(f->rag, "tenant_a", ds, "med_001"), 0);
    assert_int_equal(vectors_of(f, "tenant_a"), 1);
    assert_int_equal(search(f, "tenant_a", "analgesic", 0.3, &r), 0);
    sx_rag_result_clear(&r);
    sx_rag_set_embedder(f->rag, NULL, NULL, NULL, 0);
}

/* Tenant ids the index cannot name are refused, never put into SQL. */
/* The dataset token (unscored column ds) is not searchable text: a query
 * of exactly those digits matches no chunk, alone or beside a real word. */
static void test_dataset_token_not_searchable(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32], token[64], q[128];
    sx_db *db;
    sx_stmt *st;

    dataset(f, "tenant_a", "tok", 1, ds);
    put(f, "tenant_a", ds, "d1", "Ibuprofen", "Ibuprofen reduces fever.");
    put(f, "tenant_a", ds, "d2", "Soap", "Soap cleans hands.");
    db = sx_store_acquire(f->store);
    st = sx_db_query(db, "SELECT index_token FROM rag_datasets WHERE id = $1", "t", ds);
    assert_non_null(st);
    assert_int_equal(sx_stmt_step(st), SX_STORE_ROW);
    snprintf(token, sizeof(token), "%s", sx_stmt_text(st, 0));
    sx_stmt_done(st);
    sx_store_release(f->store, db);
    assert_int_equal(search(f, "tenant_a", token, 0, &r), 0);
    sx_rag_result_clear(&r);
    snprintf(q, sizeof(q), "%s fever", token);
    assert_int_equal(search(f, "tenant_a", q, 0, &r), 1);
    assert_string_equal(r.hits[0].doc_id, "d1");
    sx_rag_result_clear(&r);
}

static void test_bad_tenant_id(void **state)
{
    struct fx *f = *state;
    struct sx_fault flt = {0};
    struct sx_rag_result r;
    json_t *body = json_pack("{s:s}", "name", "x"), *out = NULL;

    assert_int_equal(sx_rag_dataset_register(f->rag, "t; DROP TABLE rag_chunks", body, &out,
                                             &flt), SX_EINVAL);
    json_decref(body);
    assert_int_equal(search(f, "t'--", "aspirin", 0, &r), 0);
    sx_rag_result_clear(&r);
}

/* Document frequencies are cached per tenant; every write (upload, delete,
 * through this module object or another) must show in the next search: its
 * scores equal those of a module object with an empty cache. */
static void expect_fresh_scores(struct fx *f, const char *query, size_t n)
{
    struct sx_rag_query q = {.top_k = 50, .threshold = 0};
    struct sx_rag_result a, b;
    char err[256];
    sx_rag *fresh = sx_rag_open(f->store, NULL, NULL, err, sizeof(err));
    size_t i;

    assert_non_null(fresh);
    assert_int_equal(sx_rag_retrieve(f->rag, "tenant_a", query, strlen(query), &q, &a, NULL),
                     0);
    assert_int_equal(sx_rag_retrieve(fresh, "tenant_a", query, strlen(query), &q, &b, NULL),
                     0);
    assert_int_equal(a.n, n);
    assert_int_equal(b.n, n);
    for (i = 0; i < n; i++) {
        assert_string_equal(a.hits[i].chunk_id, b.hits[i].chunk_id);
        assert_true(a.hits[i].bm25 == b.hits[i].bm25);
    }
    sx_rag_result_clear(&a);
    sx_rag_result_clear(&b);
    sx_rag_close(fresh);
}

static void test_df_cache_follows_writes(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32], id[16], err[256];
    double before;
    sx_rag *other;
    int d;

    dataset(f, "tenant_a", "cache", 1, ds);
    for (d = 0; d < 12; d++) {
        snprintf(id, sizeof(id), "d%02d", d);
        put(f, "tenant_a", ds, id, "T", d < 2 ? "zircon crystal here" : "plain words here");
    }
    expect_fresh_scores(f, "zircon crystal", 2);
    assert_int_equal(search(f, "tenant_a", "zircon", 0, &r), 2);
    before = r.hits[0].bm25;
    sx_rag_result_clear(&r);

    /* More chunks with the term: lower IDF, so a lower score. */
    for (d = 12; d < 18; d++) {
        snprintf(id, sizeof(id), "d%02d", d);
        assert_string_equal(put(f, "tenant_a", ds, id, "T", "zircon again"), "created");
    }
    assert_int_equal(search(f, "tenant_a", "zircon", 0, &r), 8);
    assert_true(r.hits[0].bm25 < before);
    sx_rag_result_clear(&r);
    expect_fresh_scores(f, "zircon crystal", 8);

    /* Deletes, and writes through another module object. */
    assert_int_equal(sx_rag_doc_delete(f->rag, "tenant_a", ds, "d12"), 0);
    expect_fresh_scores(f, "zircon crystal", 7);
    other = sx_rag_open(f->store, NULL, NULL, err, sizeof(err));
    assert_non_null(other);
    assert_int_equal(sx_rag_doc_delete(other, "tenant_a", ds, "d13"), 0);
    sx_rag_close(other);
    expect_fresh_scores(f, "zircon crystal", 6);
    assert_int_equal(sx_rag_dataset_delete(f->rag, "tenant_a", ds), 0);
    assert_int_equal(search(f, "tenant_a", "zircon", 0, &r), 0);
    sx_rag_result_clear(&r);
}

/* The in-memory postings (built from the second query under one index
 * state) rank exactly as FTS5 does, and a delete or upload shows in the
 * very next query once they are warm; another tenant's chunks never come
 * back from them. */
static void expect_same_as_fts5(struct fx *f, const char *tenant, const char *query,
                                const char *absent)
{
    struct sx_rag_query q = {.top_k = 50, .threshold = 0};
    struct sx_rag_result a, b;
    char err[256];
    sx_rag *fts = sx_rag_open(f->store, NULL, NULL, err, sizeof(err));

    assert_non_null(fts);
    sx_rag_set_postings_budget(fts, 0);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(sx_rag_retrieve(f->rag, tenant, query, strlen(query), &q, &a, NULL),
                         0);
        assert_int_equal(sx_rag_retrieve(fts, tenant, query, strlen(query), &q, &b, NULL),
                         0);
        assert_int_equal(a.n, b.n);
        for (size_t i = 0; i < a.n; i++) {
            assert_string_equal(a.hits[i].chunk_id, b.hits[i].chunk_id);
            assert_true(a.hits[i].bm25 == b.hits[i].bm25);
            assert_true(strncmp(a.hits[i].doc_id, tenant, strlen(tenant)) == 0);
            assert_false(absent && strcmp(a.hits[i].doc_id, absent) == 0);
        }
        sx_rag_result_clear(&a);
        sx_rag_result_clear(&b);
    }
    sx_rag_close(fts);
}

static void test_postings_follow_writes(void **state)
{
    struct fx *f = *state;
    char ds_a[32], ds_b[32], id[32];

    dataset(f, "tenant_a", "warm", 1, ds_a);
    dataset(f, "tenant_b", "warm", 1, ds_b);
    for (int d = 0; d < 20; d++) {
        snprintf(id, sizeof(id), "tenant_a-%02d", d);
        put(f, "tenant_a", ds_a, id, "Basalt", d % 3 ? "basalt columns near the coast"
                                                     : "granite and basalt quarry");
        snprintf(id, sizeof(id), "tenant_b-%02d", d);
        put(f, "tenant_b", ds_b, id, "Basalt", "basalt granite basalt everywhere");
    }
    expect_same_as_fts5(f, "tenant_a", "basalt granite quarry", NULL);

    /* Warm, then a delete: gone from the next query on. */
    assert_int_equal(sx_rag_doc_delete(f->rag, "tenant_a", ds_a, "tenant_a-00"), 0);
    expect_same_as_fts5(f, "tenant_a", "basalt granite quarry", "tenant_a-00");

    /* Warm, then an upload that changes every score (IDF). */
    put(f, "tenant_a", ds_a, "tenant_a-99", "Quarry", "quarry quarry granite");
    expect_same_as_fts5(f, "tenant_a", "basalt granite quarry", "tenant_a-00");
    expect_same_as_fts5(f, "tenant_b", "basalt granite quarry", NULL);
}


/* Whether doc_id is among the first n hits of query. */
static bool ranks(struct fx *f, const char *query, const char *doc_id, size_t n)
{
    struct sx_rag_result r;
    bool found = false;

    search(f, "tenant_a", query, 0, &r);
    for (size_t i = 0; i < r.n && i < n; i++)
        found |= strcmp(r.hits[i].doc_id, doc_id) == 0;
    sx_rag_result_clear(&r);
    return found;
}

/* A hyphenated compound is found whole, however the other side writes it
 * ("IL-6" and "IL6"), and its parts still match; Greek letters match
 * their Latin names. Column sizes do not count the joined token, and
 * FTS5 and the postings agree on every score. */
static void test_compounds_and_greek(void **state)
{
    struct fx *f = *state;
    struct sx_rag_result r;
    char ds[32];

    dataset(f, "tenant_a", "papers", 1, ds);
    put(f, "tenant_a", ds, "tenant_a-hy", "Cytokines", "IL-6 signalling in T-cells");
    put(f, "tenant_a", ds, "tenant_a-jo", "Cytokines", "IL6 levels rose");
    put(f, "tenant_a", ds, "tenant_a-il", "Interleukins", "IL 1 and 6 other cells");
    put(f, "tenant_a", ds, "tenant_a-gr", "Receptors", "TNF-α binds the β2 receptor");
    put(f, "tenant_a", ds, "tenant_a-la", "Receptors", "NF-kappaB after stimulation");
    for (int d = 0; d < 12; d++) {
        char id[32];

        snprintf(id, sizeof(id), "tenant_a-f%02d", d);
        put(f, "tenant_a", ds, id, "Filler", "unrelated words about the weather");
    }
    for (int round = 0; round < 2; round++) { /* FTS5 first, then the postings */
        assert_true(ranks(f, "IL6", "tenant_a-hy", 2) && ranks(f, "IL6", "tenant_a-jo", 2));
        assert_true(ranks(f, "il-6", "tenant_a-hy", 2) && ranks(f, "il-6", "tenant_a-jo", 2));
        assert_true(ranks(f, "TNF-alpha", "tenant_a-gr", 1));
        assert_true(ranks(f, "tnfalpha", "tenant_a-gr", 1));
        assert_true(ranks(f, "TNFα", "tenant_a-gr", 1));
        assert_true(ranks(f, "beta2", "tenant_a-gr", 1));
        assert_true(ranks(f, "NF-κB", "tenant_a-la", 1));
        assert_true(ranks(f, "NF-\xCE\x9A\xCE\x92", "tenant_a-la", 1)); /* capitals */
    }
    /* The parts still match on their own. */
    assert_true(search(f, "tenant_a", "cells", 0, &r) == 2);
    sx_rag_result_clear(&r);
    expect_same_as_fts5(f, "tenant_a", "IL-6 T-cell signalling TNF-α", NULL);
}

/* An index made by an earlier tokenizer (porter unicode61) is rebuilt
 * with today's when the module opens, and finds compounds then. */
static void test_old_index_rebuilt(void **state)
{
    struct fx *f = *state;
    char ds[32], err[256];
    sx_db *db;
    sx_stmt *st;

    dataset(f, "tenant_a", "papers", 1, ds);
    put(f, "tenant_a", ds, "tenant_a-hy", "Cytokines", "IL-6 signalling in T-cells");
    put(f, "tenant_a", ds, "tenant_a-f1", "Filler", "unrelated words about the weather");
    db = sx_store_acquire(f->store);
    assert_int_equal(sx_db_exec(db, "DROP TABLE rag_fts_tenant_a_v; DROP TABLE rag_fts_tenant_a;"
                                    "CREATE VIRTUAL TABLE rag_fts_tenant_a USING fts5(title, "
                                    "text, meta, ds, content='rag_chunks', content_rowid='id', "
                                    "tokenize='porter unicode61 remove_diacritics 2');"
                                    "CREATE VIRTUAL TABLE rag_fts_tenant_a_v USING "
                                    "fts5vocab(rag_fts_tenant_a, 'row');"
                                    "INSERT INTO rag_fts_tenant_a(rowid, title, text, meta, ds)"
                                    " SELECT id, title, text, meta, ds FROM rag_chunks"), 0);
    sx_store_release(f->store, db);
    sx_rag_close(f->rag);

    f->rag = sx_rag_open(f->store, NULL, NULL, err, sizeof(err));
    assert_non_null(f->rag);
    db = sx_store_acquire(f->store);
    st = sx_db_query(db, "SELECT sql FROM sqlite_master WHERE name = 'rag_fts_tenant_a'", "");
    assert_int_equal(sx_stmt_step(st), SX_STORE_ROW);
    assert_non_null(strstr(sx_stmt_text(st, 0), "tokenize='sx_rag'"));
    sx_stmt_done(st);
    sx_store_release(f->store, db);
    assert_true(ranks(f, "IL6", "tenant_a-hy", 1));
    assert_true(ranks(f, "weather", "tenant_a-f1", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spec_example, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upsert_statuses_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_validation_names_the_field, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hostile_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scores_normalised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allow_rag_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_isolation_randomised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pruning_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pruning_matches_deep_ranking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunk_ids_carry_column_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vectors_fused_with_bm25, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dataset_token_not_searchable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_tenant_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_df_cache_follows_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_postings_follow_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compounds_and_greek, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_index_rebuilt, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
