/* Retrieval benchmark of the rag module on SciFact (BEIR layout, see
 * ../shared/fixtures/README.md): loads corpus.jsonl into one tenant's
 * dataset through sx_rag_docs_upload() (the upload endpoint's code path),
 * runs the 300 test claims through sx_rag_retrieve() (what chat's
 * sx_rag_augment() calls), and prints nDCG@10 and recall@100 over the
 * ranked doc ids (a document ranks where its best chunk ranks). Then it
 * grows the tenant to --chunks chunks with synthetic documents made of
 * corpus sentences and prints per-query latency percentiles.
 * Usage: scifact [--fixtures DIR] [--chunks 100000] [--data DIR]
 *                [--max-tokens 256] [--overlap 48] */
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "rag/rag.h"
#include "store/store.h"

#define TENANT "tenant_benchScifact01"
#define MAX_Q 1000
#define MAX_REL 16
#define RANK_DEPTH 100

struct query {
    char id[32];
    char *text;
    char rel[MAX_REL][32];
    int n_rel;
};

static int64_t chunk_count(sx_rag *rag);

static double now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static void __attribute__((noreturn)) die(const char *what)
{
    fprintf(stderr, "scifact: %s\n", what);
    exit(1);
}

static char *path_of(const char *dir, const char *name)
{
    static char buf[4][1024];
    static int k;

    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", dir, name);
    return buf[k];
}

/* Uploads a batch of docs through the API's code path. */
static void upload(sx_rag *rag, const char *ds, json_t *docs)
{
    struct sx_fault f = {0};
    json_t *body = json_pack("{s:O}", "docs", docs), *out = NULL;
    int rc = sx_rag_docs_upload(rag, TENANT, ds, body, &out, &f);

    if (rc != 0) {
        fprintf(stderr, "upload failed (%d): %s %s\n", rc, f.param, f.message);
        exit(1);
    }
    json_decref(out);
    json_decref(body);
    json_array_clear(docs);
}

static int chunk_tokens = 256, chunk_overlap = 48;

static const char *make_dataset(sx_rag *rag, const char *name, char *id_out)
{
    struct sx_fault f = {0};
    json_t *body = json_pack("{s:s, s:s, s:{s:b}, s:{s:i, s:i}}", "name", name, "type",
                             "documents", "data_use", "allow_rag", 1, "chunking",
                             "max_tokens", chunk_tokens, "overlap_tokens", chunk_overlap),
           *out = NULL;

    if (sx_rag_dataset_register(rag, TENANT, body, &out, &f) != 0) {
        fprintf(stderr, "register: %s\n", f.message);
        exit(1);
    }
    snprintf(id_out, 32, "%s", json_string_value(json_object_get(out, "id")));
    json_decref(out);
    json_decref(body);
    return id_out;
}

/* Corpus sentences, kept for the synthetic documents. */
static char **sentences;
static size_t n_sentences, cap_sentences;

static void keep_sentences(const char *text)
{
    const char *p = text;

    while (*p) {
        const char *e = strstr(p, ". ");
        size_t len = e ? (size_t)(e - p) + 1 : strlen(p);

        if (len > 20) {
            if (n_sentences == cap_sentences) {
                cap_sentences = cap_sentences ? cap_sentences * 2 : 4096;
                sentences = realloc(sentences, cap_sentences * sizeof(*sentences));
            }
            sentences[n_sentences++] = strndup(p, len);
        }
        p += len;
        while (*p == ' ')
            p++;
    }
}

static int64_t load_corpus(sx_rag *rag, const char *dir, const char *ds)
{
    FILE *fp = fopen(path_of(dir, "corpus.jsonl"), "r");
    json_t *docs = json_array();
    char *line = NULL;
    size_t cap = 0;
    int64_t n = 0;

    if (!fp)
        die("cannot open corpus.jsonl");
    while (getline(&line, &cap, fp) > 0) {
        json_t *o = json_loads(line, 0, NULL);

        if (!o)
            die("bad corpus line");
        keep_sentences(json_string_value(json_object_get(o, "text")));
        json_array_append_new(docs, json_pack("{s:O, s:O, s:O}", "doc_id",
                                              json_object_get(o, "_id"), "title",
                                              json_object_get(o, "title"), "text",
                                              json_object_get(o, "text")));
        json_decref(o);
        n++;
        if (json_array_size(docs) == 100)
            upload(rag, ds, docs);
    }
    if (json_array_size(docs))
        upload(rag, ds, docs);
    json_decref(docs);
    free(line);
    fclose(fp);
    return n;
}

static size_t load_queries(const char *dir, struct query *q)
{
    FILE *fp = fopen(path_of(dir, "queries-test.jsonl"), "r");
    char *line = NULL, a[32], b[32];
    size_t cap = 0, n = 0, i;
    int s;

    if (!fp)
        die("cannot open queries-test.jsonl");
    while (n < MAX_Q && getline(&line, &cap, fp) > 0) {
        json_t *o = json_loads(line, 0, NULL);

        if (!o)
            die("bad query line");
        snprintf(q[n].id, sizeof(q[n].id), "%s", json_string_value(json_object_get(o, "_id")));
        q[n].text = strdup(json_string_value(json_object_get(o, "text")));
        q[n].n_rel = 0;
        n++;
        json_decref(o);
    }
    fclose(fp);
    fp = fopen(path_of(dir, "qrels/test.tsv"), "r");
    if (!fp)
        die("cannot open qrels/test.tsv");
    while (getline(&line, &cap, fp) > 0) {
        if (sscanf(line, "%31s %31s %d", a, b, &s) != 3 || s <= 0)
            continue; /* the header */
        for (i = 0; i < n; i++)
            if (strcmp(q[i].id, a) == 0 && q[i].n_rel < MAX_REL)
                snprintf(q[i].rel[q[i].n_rel++], 32, "%s", b);
    }
    free(line);
    fclose(fp);
    return n;
}

static int is_rel(const struct query *q, const char *doc)
{
    int i;

    for (i = 0; i < q->n_rel; i++)
        if (strcmp(q->rel[i], doc) == 0)
            return 1;
    return 0;
}

/* Ranked distinct doc ids of a result (best chunk decides). */
static size_t doc_ranking(const struct sx_rag_result *r, char ranked[][SX_RAG_DOC_ID_MAX + 1],
                          size_t cap)
{
    size_t n = 0, i, j;

    for (i = 0; i < r->n && n < cap; i++) {
        for (j = 0; j < n && strcmp(ranked[j], r->hits[i].doc_id) != 0; j++)
            ;
        if (j == n)
            snprintf(ranked[n++], SX_RAG_DOC_ID_MAX + 1, "%s", r->hits[i].doc_id);
    }
    return n;
}

static void quality(sx_rag *rag, struct query *q, size_t nq, const char *label)
{
    static char ranked[RANK_DEPTH][SX_RAG_DOC_ID_MAX + 1];
    struct sx_rag_query rq = {.top_k = 1000, .threshold = 0};
    double ndcg = 0, recall = 0;
    size_t i, k, n;

    for (i = 0; i < nq; i++) {
        struct sx_rag_result r;
        double dcg = 0, idcg = 0;
        int found = 0;

        if (sx_rag_retrieve(rag, TENANT, q[i].text, strlen(q[i].text), &rq, &r, NULL) != 0)
            die("retrieve failed");
        n = doc_ranking(&r, ranked, RANK_DEPTH);
        for (k = 0; k < n; k++) {
            if (!is_rel(&q[i], ranked[k]))
                continue;
            if (k < 10)
                dcg += 1.0 / log2((double)k + 2);
            found++;
        }
        for (k = 0; k < (size_t)q[i].n_rel && k < 10; k++)
            idcg += 1.0 / log2((double)k + 2);
        if (q[i].n_rel) {
            ndcg += dcg / idcg;
            recall += (double)found / q[i].n_rel;
        }
        sx_rag_result_clear(&r);
    }
    printf("{\"bench\":\"rag_scifact\",\"corpus\":\"%s\",\"chunks\":%lld,\"queries\":%zu,"
           "\"ndcg@10\":%.4f,\"recall@100\":%.4f,\"published_bm25\":0.665,"
           "\"plain_fts5_bm25\":0.682}\n", label, (long long)chunk_count(rag), nq,
           ndcg / (double)nq, recall / (double)nq);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Synthetic documents of 3..20 random corpus sentences until the tenant
 * holds target chunks (counted after each batch). */
static int64_t grow(sx_rag *rag, const char *ds, int64_t have, int64_t target)
{
    json_t *docs = json_array();
    uint64_t x = 20250601;
    int64_t n = 0, guess = have;
    char id[32];

    while (have < target) {
        char *buf = NULL;
        size_t size = 0;
        FILE *m = open_memstream(&buf, &size);
        int k, ns;

        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ns = 3 + (int)((x >> 33) % 18);
        for (k = 0; k < ns; k++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            fprintf(m, "%s%s", k ? " " : "", sentences[(x >> 33) % n_sentences]);
        }
        fclose(m);
        snprintf(id, sizeof(id), "syn_%lld", (long long)n++);
        json_array_append_new(docs, json_pack("{s:s, s:s, s:s}", "doc_id", id, "title",
                                              "Synthetic document", "text", buf));
        guess += 1 + (int64_t)(size / 1400);
        free(buf);
        if (json_array_size(docs) == 100 || guess >= target) {
            upload(rag, ds, docs);
            guess = have = chunk_count(rag);
        }
    }
    if (json_array_size(docs))
        upload(rag, ds, docs);
    json_decref(docs);
    return have;
}

static int64_t chunk_count(sx_rag *rag)
{
    json_t *list = NULL, *d;
    int64_t n = 0;
    size_t i;

    if (sx_rag_dataset_list(rag, TENANT, &list) != 0)
        die("list failed");
    json_array_foreach(json_object_get(list, "data"), i, d)
        n += json_integer_value(json_object_get(d, "chunk_count"));
    json_decref(list);
    return n;
}

static void latency(sx_rag *rag, struct query *q, size_t nq, int top_k, double threshold)
{
    struct sx_rag_query rq = {.top_k = top_k, .threshold = threshold};
    double *ms = malloc(nq * 2 * sizeof(*ms));
    size_t i, n = 0;
    int pass;

    for (pass = 0; pass < 2; pass++) /* the first pass warms the page cache */
        for (i = 0; i < nq; i++) {
            struct sx_rag_result r;
            double t0 = now_ms();

            if (sx_rag_retrieve(rag, TENANT, q[i].text, strlen(q[i].text), &rq, &r, NULL))
                die("retrieve failed");
            if (pass)
                ms[n++] = now_ms() - t0;
            sx_rag_result_clear(&r);
        }
    qsort(ms, n, sizeof(*ms), cmp_double);
    printf("{\"bench\":\"rag_latency\",\"chunks\":%lld,\"top_k\":%d,\"threshold\":%.2f,"
           "\"queries\":%zu,\"p50_ms\":%.2f,\"p95_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
           (long long)chunk_count(rag), top_k, threshold, n, ms[n / 2], ms[n * 95 / 100],
           ms[n * 99 / 100], ms[n - 1]);
    fflush(stdout);
    free(ms);
}

int main(int argc, char **argv)
{
    const char *fixtures = getenv("SYNAPSEX_FIXTURES"), *data = NULL;
    static struct query q[MAX_Q];
    struct sx_rag_limits lim = {100, 262144, 512, 4096, 1000000, 100};
    char dir[1024], err[256], ds1[32], ds2[32];
    int64_t chunks = 100000, have;
    bool own_dir = false;
    sx_store *store = NULL;
    sx_rag *rag;
    size_t nq;
    double t0;
    int i;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--fixtures") == 0)
            fixtures = argv[i + 1];
        else if (strcmp(argv[i], "--chunks") == 0)
            chunks = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--max-tokens") == 0)
            chunk_tokens = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--overlap") == 0)
            chunk_overlap = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--data") == 0)
            data = argv[i + 1];
    }
    snprintf(dir, sizeof(dir), "%s/scifact", fixtures ? fixtures : "../shared/fixtures");
    if (access(path_of(dir, "corpus.jsonl"), R_OK) != 0) {
        printf("skipped: fixtures absent (%s)\n", dir);
        return 0;
    }
    sx_log_min_level = SX_LOG_WARN;

    /* 1. A fresh store with the rag module. */
    if (!data) {
        static char tmp[] = "/tmp/sx-rag-bench-XXXXXX";

        data = mkdtemp(tmp);
        own_dir = data != NULL;
    }
    if (sx_rag_sqlite_setup() != 0 || !(store = sx_store_open(NULL, data, 2, err, sizeof(err))))
        die("cannot open the store");
    if (!(rag = sx_rag_open(store, NULL, &lim, err, sizeof(err))))
        die(err);

    /* 2. Corpus and quality. */
    t0 = now_ms();
    make_dataset(rag, "scifact", ds1);
    have = load_corpus(rag, dir, ds1);
    fprintf(stderr, "loaded %lld docs, %lld chunks in %.1f s\n", (long long)have,
            (long long)chunk_count(rag), (now_ms() - t0) / 1e3);
    nq = load_queries(dir, q);
    quality(rag, q, nq, "scifact");

    /* 3. Latency at the target size. */
    if (chunks > 0) {
        t0 = now_ms();
        make_dataset(rag, "synthetic", ds2);
        grow(rag, ds2, chunk_count(rag), chunks);
        fprintf(stderr, "grew to %lld chunks in %.1f s\n", (long long)chunk_count(rag),
                (now_ms() - t0) / 1e3);
        latency(rag, q, nq, 5, 0.5);
        latency(rag, q, nq, 10, 0);
        quality(rag, q, nq, "scifact+synthetic distractors");
    }
    sx_rag_close(rag);
    sx_store_close(store);
    if (own_dir) {
        static const char *const files[] = {"synapsex.db", "synapsex.db-wal",
                                            "synapsex.db-shm"};

        for (i = 0; i < 3; i++)
            unlink(path_of(data, files[i]));
        rmdir(data);
    }
    return 0;
}
