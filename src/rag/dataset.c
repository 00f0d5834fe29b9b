/* Datasets and documents of the rag module: the tables, the tenant purge
 * hook, dataset registration, listing and deletion, and the document
 * upsert that validates a whole upload, chunks each changed document and
 * keeps the full-text index in step, all in one transaction. */
#include "rag/internal.h"

#include "base/crypto.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct sx_migration migrations[] = {
    {1, "datasets, documents and chunks",
     "CREATE TABLE rag_datasets ("
     " id TEXT PRIMARY KEY,"
     " tenant_id TEXT NOT NULL,"
     " name TEXT NOT NULL,"
     " type TEXT NOT NULL,"
     " description TEXT,"
     " allow_rag INTEGER NOT NULL,"
     " chunk_tokens INTEGER NOT NULL,"
     " chunk_overlap INTEGER NOT NULL,"
     " index_token TEXT NOT NULL,"
     " created_at BIGINT NOT NULL,"
     " updated_at BIGINT NOT NULL,"
     " UNIQUE (tenant_id, name));"
     "CREATE INDEX rag_datasets_by_tenant ON rag_datasets (tenant_id, created_at);"
     "CREATE TABLE rag_docs ("
     " dataset_id TEXT NOT NULL,"
     " doc_id TEXT NOT NULL,"
     " tenant_id TEXT NOT NULL,"
     " title TEXT NOT NULL,"
     " text TEXT NOT NULL,"
     " metadata TEXT NOT NULL,"
     " bytes BIGINT NOT NULL,"
     " n_chunks INTEGER NOT NULL,"
     " created_at BIGINT NOT NULL,"
     " updated_at BIGINT NOT NULL,"
     " PRIMARY KEY (dataset_id, doc_id));"
     "CREATE INDEX rag_docs_by_tenant ON rag_docs (tenant_id);"
     "CREATE TABLE rag_chunks ("
     " id INTEGER PRIMARY KEY,"
     " tenant_id TEXT NOT NULL,"
     " dataset_id TEXT NOT NULL,"
     " doc_id TEXT NOT NULL,"
     " seq INTEGER NOT NULL,"
     " tokens INTEGER NOT NULL,"
     " title TEXT NOT NULL,"
     " text TEXT NOT NULL,"
     " meta TEXT NOT NULL,"
     " ds TEXT NOT NULL);"
     "CREATE INDEX rag_chunks_by_doc ON rag_chunks (dataset_id, doc_id, seq);"
     "CREATE INDEX rag_chunks_by_tenant ON rag_chunks (tenant_id);"},
    {2, "embedding vectors of chunks",
     "CREATE TABLE rag_vectors ("
     " chunk_id BIGINT PRIMARY KEY,"
     " tenant_id TEXT NOT NULL,"
     " model TEXT NOT NULL,"
     " dim INTEGER NOT NULL,"
     " vec TEXT NOT NULL);"
     "CREATE INDEX rag_vectors_by_tenant ON rag_vectors (tenant_id, model);"},
};

#define DEFAULT_CHUNK_TOKENS 256
#define DEFAULT_CHUNK_OVERLAP 48

static void fault(struct sx_fault *f, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fault(struct sx_fault *f, const char *code, const char *fmt, ...)
{
    va_list ap;

    if (!f)
        return;
    f->code = code;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof(f->message), fmt, ap);
    va_end(ap);
}

static void fault_param(struct sx_fault *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fault_param(struct sx_fault *f, const char *fmt, ...)
{
    va_list ap;

    if (!f)
        return;
    va_start(ap, fmt);
    vsnprintf(f->param, sizeof(f->param), fmt, ap);
    va_end(ap);
}

static json_t *iso(int64_t ms)
{
    char buf[SX_TIME_ISO_LEN + 1];

    if (ms <= 0)
        return json_null();
    sx_time_iso8601(ms / 1000, buf);
    return json_string(buf);
}

/* ---- schema and purge ---------------------------------------------------- */

static int purge_tenant(sx_db *db, const char *tenant_id, void *ctx)
{
    (void)ctx;
    if (sx_rag_index_drop(db, tenant_id) != 0)
        return SX_ESTORE;
    if (sx_db_run(db, "DELETE FROM rag_vectors WHERE tenant_id = $1", "t", tenant_id) < 0 ||
        sx_db_run(db, "DELETE FROM rag_chunks WHERE tenant_id = $1", "t", tenant_id) < 0 ||
        sx_db_run(db, "DELETE FROM rag_docs WHERE tenant_id = $1", "t", tenant_id) < 0 ||
        sx_db_run(db, "DELETE FROM rag_datasets WHERE tenant_id = $1", "t", tenant_id) < 0)
        return SX_ESTORE;
    return 0;
}

int sx_rag_schema(sx_rag *rag, char *err, size_t errlen)
{
    sx_db *db;
    int rebuilt = 0, rc;

    if (sx_store_migrate(rag->store, "rag", migrations,
                         sizeof(migrations) / sizeof(migrations[0]), err, errlen) != 0)
        return SX_ESTORE;
    /* Indexes made by an earlier tokenizer are rebuilt before any search
     * stems a query the new way. */
    if (!(db = sx_store_acquire(rag->store))) {
        snprintf(err, errlen, "rag: no store connection");
        return SX_ESTORE;
    }
    rc = sx_rag_index_upgrade(db, &rebuilt);
    sx_store_release(rag->store, db);
    if (rebuilt)
        SX_INFO("rag", "rebuilt %d tenant index(es) for the %s tokenizer", rebuilt,
                SX_RAG_TOKENIZER);
    if (rc != 0) {
        snprintf(err, errlen, "rag: rebuilding the tenant indexes failed");
        return SX_ESTORE;
    }
    if (rag->tenancy && sx_tenancy_on_purge(rag->tenancy, "rag", purge_tenant, rag) != 0) {
        snprintf(err, errlen, "rag: cannot register the tenant purge hook");
        return SX_ELIMIT;
    }
    return 0;
}

/* ---- validation helpers -------------------------------------------------- */

static int doc_id_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > SX_RAG_DOC_ID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == ':' || c == '@'))
            return 0;
    }
    return 1;
}

static int only_keys(const json_t *o, const char *const *allowed, const char **bad)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)o, k, v) {
        const char *const *a;

        for (a = allowed; *a && strcmp(*a, k) != 0; a++)
            ;
        if (!*a) {
            *bad = k;
            return 0;
        }
    }
    return 1;
}

/* ---- datasets ------------------------------------------------------------ */

static json_t *dataset_row_json(sx_db *db, sx_stmt *st)
{
    /* Columns: id, tenant_id, name, type, description, allow_rag,
     * chunk_tokens, chunk_overlap, created_at, updated_at. */
    const char *id = sx_stmt_text(st, 0), *desc = sx_stmt_text(st, 4);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:{s:b}, s:{s:I, s:I}, s:o, s:o}",
                          "id", id, "object", "dataset", "tenant_id", sx_stmt_text(st, 1),
                          "name", sx_stmt_text(st, 2), "type", sx_stmt_text(st, 3),
                          "description", desc ? json_string(desc) : json_null(),
                          "data_use", "allow_rag", (int)sx_stmt_int(st, 5),
                          "chunking", "max_tokens", (json_int_t)sx_stmt_int(st, 6),
                          "overlap_tokens", (json_int_t)sx_stmt_int(st, 7),
                          "created_at", iso(sx_stmt_int(st, 8)),
                          "updated_at", iso(sx_stmt_int(st, 9)));
    sx_stmt *cnt;

    if (!o)
        return NULL;
    cnt = sx_db_query(db, "SELECT count(*), coalesce(sum(n_chunks), 0), "
                          "coalesce(sum(bytes), 0) FROM rag_docs WHERE dataset_id = $1",
                      "t", id);
    if (cnt && sx_stmt_step(cnt) == SX_STORE_ROW) {
        json_object_set_new(o, "doc_count", json_integer(sx_stmt_int(cnt, 0)));
        json_object_set_new(o, "chunk_count", json_integer(sx_stmt_int(cnt, 1)));
        json_object_set_new(o, "bytes", json_integer(sx_stmt_int(cnt, 2)));
    }
    if (cnt)
        sx_stmt_done(cnt);
    /* Chunks with an embedding vector (of any model). */
    cnt = sx_db_query(db, "SELECT count(*) FROM rag_chunks c JOIN rag_vectors v ON "
                          "v.chunk_id = c.id WHERE c.dataset_id = $1", "t", id);
    if (cnt && sx_stmt_step(cnt) == SX_STORE_ROW)
        json_object_set_new(o, "vector_count", json_integer(sx_stmt_int(cnt, 0)));
    if (cnt)
        sx_stmt_done(cnt);
    return o;
}

#define DATASET_COLS                                                                         \
    "id, tenant_id, name, type, description, allow_rag, chunk_tokens, chunk_overlap, "       \
    "created_at, updated_at"

/* Reads one dataset of tenant into *out (may be NULL: existence check),
 * its chunking into *c and its index token into token (both may be NULL).
 * SX_ENOTFOUND or SX_ESTORE. */
static int dataset_load(sx_db *db, const char *tenant_id, const char *dataset_id, json_t **out,
                        struct sx_rag_chunking *c, char token[SX_RAG_TOKEN_MAX])
{
    sx_stmt *st = sx_db_query(db, "SELECT " DATASET_COLS ", index_token FROM rag_datasets "
                                  "WHERE tenant_id = $1 AND id = $2", "tt", tenant_id,
                              dataset_id);
    int rc;

    if (!st)
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    if (rc == SX_STORE_ROW) {
        if (c) {
            c->max_tokens = (int)sx_stmt_int(st, 6);
            c->overlap_tokens = (int)sx_stmt_int(st, 7);
        }
        if (token)
            snprintf(token, SX_RAG_TOKEN_MAX, "%s", sx_stmt_text(st, 10));
        if (out && !(*out = dataset_row_json(db, st)))
            rc = SX_ENOMEM;
        else
            rc = 0;
    } else {
        rc = rc == SX_STORE_DONE ? SX_ENOTFOUND : SX_ESTORE;
    }
    sx_stmt_done(st);
    return rc;
}

/* Reads the optional "chunking" object. */
static int parse_chunking(const json_t *v, struct sx_rag_chunking *c, struct sx_fault *f)
{
    static const char *const allowed[] = {"max_tokens", "overlap_tokens", NULL};
    const char *bad;
    json_t *m, *o;

    c->max_tokens = DEFAULT_CHUNK_TOKENS;
    c->overlap_tokens = DEFAULT_CHUNK_OVERLAP;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v) || !only_keys(v, allowed, &bad)) {
        fault(f, "invalid_chunking", "chunking must be an object with max_tokens (16 to "
              "2048) and overlap_tokens (0 to half of max_tokens)");
        fault_param(f, "chunking");
        return SX_EINVAL;
    }
    m = json_object_get(v, "max_tokens");
    o = json_object_get(v, "overlap_tokens");
    if (m && !json_is_null(m)) {
        if (!json_is_integer(m) || json_integer_value(m) < 16 ||
            json_integer_value(m) > 2048) {
            fault(f, "invalid_value", "chunking.max_tokens must be an integer from 16 to 2048");
            fault_param(f, "chunking.max_tokens");
            return SX_EINVAL;
        }
        c->max_tokens = (int)json_integer_value(m);
        if (c->overlap_tokens > c->max_tokens / 2)
            c->overlap_tokens = c->max_tokens / 8;
    }
    if (o && !json_is_null(o)) {
        if (!json_is_integer(o) || json_integer_value(o) < 0 ||
            json_integer_value(o) > c->max_tokens / 2) {
            fault(f, "invalid_value", "chunking.overlap_tokens must be an integer from 0 to "
                  "%d (half of max_tokens)", c->max_tokens / 2);
            fault_param(f, "chunking.overlap_tokens");
            return SX_EINVAL;
        }
        c->overlap_tokens = (int)json_integer_value(o);
    }
    return 0;
}

/* Checks a register body; fills the fields. */
static int parse_register(const json_t *body, const char **name, const char **desc,
                          int *allow_rag, struct sx_rag_chunking *c, struct sx_fault *f)
{
    static const char *const allowed[] = {"name", "type", "data_use", "chunking",
                                          "description", NULL};
    const char *bad, *type = "documents";
    json_t *v, *du, *ar;

    if (!json_is_object(body)) {
        fault(f, "invalid_body", "the body must be a JSON object");
        return SX_EINVAL;
    }
    if (!only_keys(body, allowed, &bad)) {
        fault(f, "unknown_field", "unknown field \"%.60s\": a dataset accepts name, type, "
              "data_use, chunking and description", bad);
        fault_param(f, "%.90s", bad);
        return SX_EINVAL;
    }
    v = json_object_get(body, "name");
    *name = json_string_value(v);
    if (!*name || !**name || strlen(*name) > SX_RAG_NAME_MAX ||
        !sx_utf8_valid(*name, json_string_length(v))) {
        fault(f, "invalid_name", "name is required: a string of 1 to %d bytes",
              SX_RAG_NAME_MAX);
        fault_param(f, "name");
        return SX_EINVAL;
    }
    v = json_object_get(body, "type");
    if (v && !json_is_null(v) &&
        (!json_is_string(v) || strcmp((type = json_string_value(v)), "documents") != 0)) {
        fault(f, "unsupported_type", "type must be \"documents\" (the only dataset type "
              "supported)");
        fault_param(f, "type");
        return SX_EINVAL;
    }
    v = json_object_get(body, "description");
    *desc = json_string_value(v);
    if (v && !json_is_null(v) && (!json_is_string(v) || json_string_length(v) > 1000)) {
        fault(f, "invalid_description", "description must be a string of at most 1000 "
              "bytes");
        fault_param(f, "description");
        return SX_EINVAL;
    }
    *allow_rag = 1;
    du = json_object_get(body, "data_use");
    if (du && !json_is_null(du)) {
        static const char *const du_allowed[] = {"allow_rag", NULL};

        if (!json_is_object(du) || !only_keys(du, du_allowed, &bad)) {
            fault(f, "invalid_data_use", "data_use must be an object {\"allow_rag\": "
                  "true|false}");
            fault_param(f, "data_use");
            return SX_EINVAL;
        }
        ar = json_object_get(du, "allow_rag");
        if (ar && !json_is_null(ar)) {
            if (!json_is_boolean(ar)) {
                fault(f, "invalid_type", "data_use.allow_rag must be true or false");
                fault_param(f, "data_use.allow_rag");
                return SX_EINVAL;
            }
            *allow_rag = json_is_true(ar);
        }
    }
    (void)type;
    return parse_chunking(json_object_get(body, "chunking"), c, f);
}

int sx_rag_dataset_register(sx_rag *rag, const char *tenant_id, const json_t *body,
                            json_t **out, struct sx_fault *f)
{
    struct sx_rag_chunking c;
    const char *name, *desc;
    char id[SX_RAG_DATASET_ID_MAX] = "ds_", token[SX_RAG_TOKEN_MAX];
    uint64_t r;
    int64_t now = sx_time_now_ms(), n;
    int allow_rag, rc;
    sx_db *db;
    sx_stmt *st;

    if ((rc = parse_register(body, &name, &desc, &allow_rag, &c, f)) != 0)
        return rc;
    if (sx_crypto_random_base62(id + 3, 16) != 0 || sx_crypto_random(&r, sizeof(r)) != 0)
        return SX_EIO;
    snprintf(token, sizeof(token), "%020llu", (unsigned long long)r);
    if (!(db = sx_store_acquire(rag->store)))
        return SX_ESTORE;
    if ((rc = sx_db_begin(db)) != 0)
        goto done;

    /* Per-tenant cap, then the row and the tenant's index. */
    st = sx_db_query(db, "SELECT count(*) FROM rag_datasets WHERE tenant_id = $1", "t",
                     tenant_id);
    if (!st || sx_stmt_step(st) != SX_STORE_ROW) {
        if (st)
            sx_stmt_done(st);
        rc = SX_ESTORE;
        goto done;
    }
    n = sx_stmt_int(st, 0);
    sx_stmt_done(st);
    if (n >= rag->limits.datasets_per_tenant) {
        fault(f, "too_many_datasets", "this tenant already has %lld datasets, the most "
              "allowed; delete one first", (long long)n);
        rc = SX_ELIMIT;
        goto done;
    }
    n = sx_db_run(db, "INSERT INTO rag_datasets (id, tenant_id, name, type, description, "
                      "allow_rag, chunk_tokens, chunk_overlap, index_token, created_at, "
                      "updated_at) VALUES ($1, $2, $3, 'documents', $4, $5, $6, $7, $8, $9, "
                      "$9)", "ttttiiiti", id, tenant_id, name, desc, (int64_t)allow_rag,
                  (int64_t)c.max_tokens, (int64_t)c.overlap_tokens, token, now);
    if (n == SX_EEXIST) {
        fault(f, "dataset_exists", "this tenant already has a dataset named \"%.100s\"",
              name);
        fault_param(f, "name");
        rc = SX_EEXIST;
        goto done;
    }
    if (n < 0 || (rc = sx_rag_index_create(db, tenant_id)) != 0) {
        rc = rc ? rc : SX_ESTORE;
        goto done;
    }
    if ((rc = sx_db_commit(db)) == 0) {
        if (allow_rag)
            sx_rag_norag_forget(rag->norag, tenant_id);
        rc = dataset_load(db, tenant_id, id, out, NULL, NULL);
    }
done:
    sx_store_release(rag->store, db);
    return rc;
}

int sx_rag_dataset_list(sx_rag *rag, const char *tenant_id, json_t **out)
{
    sx_db *db = sx_store_acquire(rag->store);
    json_t *data = json_array();
    sx_stmt *st;
    int rc = 0;

    if (!db || !data) {
        sx_store_release(rag->store, db);
        json_decref(data);
        return db ? SX_ENOMEM : SX_ESTORE;
    }
    st = sx_db_query(db, "SELECT " DATASET_COLS " FROM rag_datasets WHERE tenant_id = $1 "
                         "ORDER BY created_at, id", "t", tenant_id);
    if (!st)
        rc = SX_ESTORE;
    while (st && (rc = sx_stmt_step(st)) == SX_STORE_ROW)
        json_array_append_new(data, dataset_row_json(db, st));
    if (st)
        sx_stmt_done(st);
    sx_store_release(rag->store, db);
    if (rc < 0) {
        json_decref(data);
        return SX_ESTORE;
    }
    *out = json_pack("{s:s, s:o}", "object", "list", "data", data);
    return *out ? 0 : SX_ENOMEM;
}

int sx_rag_dataset_get(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                       json_t **out)
{
    sx_db *db = sx_store_acquire(rag->store);
    int rc;

    if (!db)
        return SX_ESTORE;
    rc = dataset_load(db, tenant_id, dataset_id, out, NULL, NULL);
    sx_store_release(rag->store, db);
    return rc;
}

/* Removes the chunks of (dataset, doc) or, with doc_id NULL, of the whole
 * dataset from the index and the table. */
static int chunks_remove(sx_db *db, const char *tenant_id, const char *dataset_id,
                         const char *doc_id)
{
    sx_stmt *st = doc_id ? sx_db_query(db, "SELECT id, title, text, meta, ds FROM rag_chunks "
                                           "WHERE tenant_id = $1 AND dataset_id = $2 AND "
                                           "doc_id = $3", "ttt", tenant_id, dataset_id, doc_id)
                         : sx_db_query(db, "SELECT id, title, text, meta, ds FROM rag_chunks "
                                           "WHERE tenant_id = $1 AND dataset_id = $2",
                                       "tt", tenant_id, dataset_id);
    int rc;

    if (!st)
        return SX_ESTORE;
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        struct sx_rag_index_row row = {sx_stmt_int(st, 0), sx_stmt_text(st, 1),
                                       sx_stmt_text(st, 2), sx_stmt_text(st, 3),
                                       sx_stmt_text(st, 4)};

        rc = sx_rag_index_remove(db, tenant_id, &row);
        if (rc != 0)
            break;
    }
    sx_stmt_done(st);
    if (rc < 0)
        return SX_ESTORE;
    if (doc_id)
        rc = (int)sx_db_run(db, "DELETE FROM rag_vectors WHERE chunk_id IN (SELECT id FROM "
                                "rag_chunks WHERE tenant_id = $1 AND dataset_id = $2 AND "
                                "doc_id = $3)", "ttt", tenant_id, dataset_id, doc_id);
    else
        rc = (int)sx_db_run(db, "DELETE FROM rag_vectors WHERE chunk_id IN (SELECT id FROM "
                                "rag_chunks WHERE tenant_id = $1 AND dataset_id = $2)", "tt",
                            tenant_id, dataset_id);
    if (rc < 0)
        return SX_ESTORE;
    if (doc_id)
        rc = (int)sx_db_run(db, "DELETE FROM rag_chunks WHERE tenant_id = $1 AND "
                                "dataset_id = $2 AND doc_id = $3", "ttt", tenant_id,
                            dataset_id, doc_id);
    else
        rc = (int)sx_db_run(db, "DELETE FROM rag_chunks WHERE tenant_id = $1 AND "
                                "dataset_id = $2", "tt", tenant_id, dataset_id);
    return rc < 0 ? SX_ESTORE : 0;
}

int sx_rag_dataset_delete(sx_rag *rag, const char *tenant_id, const char *dataset_id)
{
    sx_db *db = sx_store_acquire(rag->store);
    int rc;

    if (!db)
        return SX_ESTORE;
    if ((rc = sx_db_begin(db)) != 0)
        goto done;
    if ((rc = dataset_load(db, tenant_id, dataset_id, NULL, NULL, NULL)) != 0)
        goto done;
    if ((rc = chunks_remove(db, tenant_id, dataset_id, NULL)) != 0)
        goto done;
    if (sx_db_run(db, "DELETE FROM rag_docs WHERE tenant_id = $1 AND dataset_id = $2", "tt",
                  tenant_id, dataset_id) < 0 ||
        sx_db_run(db, "DELETE FROM rag_datasets WHERE tenant_id = $1 AND id = $2", "tt",
                  tenant_id, dataset_id) < 0) {
        rc = SX_ESTORE;
        goto done;
    }
    rc = sx_db_commit(db);
done:
    sx_store_release(rag->store, db); /* rolls back on failure */
    return rc;
}

/* ---- documents ----------------------------------------------------------- */

struct doc_in {
    const char *doc_id, *title, *text;
    size_t text_len;
    char *metadata; /* compact JSON, malloc'd */
    char *meta;     /* flattened for the index, malloc'd */
};

/* Appends the values (and keys) of a metadata value as plain words. */
static void flatten(const json_t *v, const char *key, char *buf, size_t cap, size_t *used)
{
    const char *k;
    json_t *x;
    size_t i;
    char num[64];
    const char *s = NULL;

    if (key && *used < cap)
        *used += (size_t)snprintf(buf + *used, cap - *used, "%s%s", *used ? " " : "", key);
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        json_object_foreach((json_t *)v, k, x) flatten(x, k, buf, cap, used);
        return;
    case JSON_ARRAY:
        json_array_foreach(v, i, x) flatten(x, NULL, buf, cap, used);
        return;
    case JSON_STRING:
        s = json_string_value(v);
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = num;
        break;
    case JSON_REAL:
        snprintf(num, sizeof(num), "%.10g", json_real_value(v));
        s = num;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
    case JSON_NULL:
        return;
    }
    if (s && *used < cap)
        *used += (size_t)snprintf(buf + *used, cap - *used, "%s%s", *used ? " " : "", s);
    if (*used >= cap)
        *used = cap - 1;
}

static void docs_free(struct doc_in *d, size_t n)
{
    size_t i;

    for (i = 0; d && i < n; i++) {
        free(d[i].metadata);
        free(d[i].meta);
    }
    free(d);
}

/* Checks one document; names the failing field as docs[i].field. */
static int check_doc(sx_rag *rag, const json_t *o, size_t i, struct doc_in *d,
                     struct sx_fault *f)
{
    static const char *const allowed[] = {"doc_id", "title", "text", "metadata", NULL};
    const struct sx_rag_limits *lim = &rag->limits;
    const char *bad;
    json_t *v;

    if (!json_is_object(o)) {
        fault(f, "invalid_doc", "docs[%zu] must be an object {doc_id, title, text, metadata}",
              i);
        fault_param(f, "docs[%zu]", i);
        return SX_EINVAL;
    }
    if (!only_keys(o, allowed, &bad)) {
        fault(f, "unknown_field", "docs[%zu].%.60s is not a document field: a document has "
              "doc_id, title, text and metadata", i, bad);
        fault_param(f, "docs[%zu].%.60s", i, bad);
        return SX_EINVAL;
    }
    v = json_object_get(o, "doc_id");
    d->doc_id = json_string_value(v);
    if (!d->doc_id || !doc_id_ok(d->doc_id)) {
        fault(f, "invalid_doc_id", "docs[%zu].doc_id must be 1 to %d characters of letters, "
              "digits and _ - . : @", i, SX_RAG_DOC_ID_MAX);
        fault_param(f, "docs[%zu].doc_id", i);
        return SX_EINVAL;
    }
    v = json_object_get(o, "title");
    d->title = "";
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || !sx_utf8_valid(json_string_value(v), json_string_length(v))) {
            fault(f, "invalid_title", "docs[%zu].title must be a UTF-8 string", i);
            fault_param(f, "docs[%zu].title", i);
            return SX_EINVAL;
        }
        if (json_string_length(v) > lim->title_bytes) {
            fault(f, "title_too_long", "docs[%zu].title is %zu bytes; the limit is %zu", i,
                  json_string_length(v), lim->title_bytes);
            fault_param(f, "docs[%zu].title", i);
            return SX_EINVAL;
        }
        d->title = json_string_value(v);
    }
    v = json_object_get(o, "text");
    d->text = json_string_value(v);
    d->text_len = json_string_length(v);
    if (!d->text || !sx_utf8_valid(d->text, d->text_len) || sx_rag_count_tokens(d->text,
                                                                          d->text_len) == 0) {
        fault(f, "invalid_text", "docs[%zu].text is required: a non-empty UTF-8 string", i);
        fault_param(f, "docs[%zu].text", i);
        return SX_EINVAL;
    }
    if (d->text_len > lim->doc_text_bytes) {
        fault(f, "text_too_long", "docs[%zu].text is %zu bytes; the limit is %zu (split the "
              "document)", i, d->text_len, lim->doc_text_bytes);
        fault_param(f, "docs[%zu].text", i);
        return SX_EINVAL;
    }
    v = json_object_get(o, "metadata");
    if (v && !json_is_null(v) && !json_is_object(v)) {
        fault(f, "invalid_metadata", "docs[%zu].metadata must be an object", i);
        fault_param(f, "docs[%zu].metadata", i);
        return SX_EINVAL;
    }
    d->metadata = v && !json_is_null(v) ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS)
                                        : strdup("{}");
    if (!d->metadata)
        return SX_ENOMEM;
    if (strlen(d->metadata) > lim->metadata_bytes) {
        fault(f, "metadata_too_large", "docs[%zu].metadata is %zu bytes as JSON; the limit "
              "is %zu", i, strlen(d->metadata), lim->metadata_bytes);
        fault_param(f, "docs[%zu].metadata", i);
        return SX_EINVAL;
    }
    {
        size_t cap = strlen(d->metadata) + 2, used = 0;

        if (!(d->meta = malloc(cap)))
            return SX_ENOMEM;
        d->meta[0] = '\0';
        if (v && !json_is_null(v))
            flatten(v, NULL, d->meta, cap, &used);
    }
    return 0;
}

/* Writes one changed or new document and its chunks. *status gets
 * "created", "updated" or "unchanged"; *n_chunks its chunk count. */
static int doc_write(sx_rag *rag, sx_db *db, const char *tenant_id, const char *dataset_id,
                     const char *token, const struct sx_rag_chunking *c,
                     const struct doc_in *d, const char **status, int *n_chunks)
{
    struct sx_rag_piece *pieces = NULL;
    int64_t now = sx_time_now_ms();
    size_t n = 0, i;
    sx_stmt *st;
    int rc, exists = 0;

    /* 1. Unchanged documents are left alone (their chunk ids stay). */
    st = sx_db_query(db, "SELECT title, text, metadata, n_chunks FROM rag_docs WHERE "
                         "tenant_id = $1 AND dataset_id = $2 AND doc_id = $3", "ttt",
                     tenant_id, dataset_id, d->doc_id);
    if (!st)
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    if (rc == SX_STORE_ROW) {
        exists = 1;
        if (strcmp(sx_stmt_text(st, 0), d->title) == 0 &&
            strcmp(sx_stmt_text(st, 1), d->text) == 0 &&
            strcmp(sx_stmt_text(st, 2), d->metadata) == 0) {
            *status = "unchanged";
            *n_chunks = (int)sx_stmt_int(st, 3);
            sx_stmt_done(st);
            return 0;
        }
    }
    sx_stmt_done(st);
    if (rc < 0)
        return SX_ESTORE;

    /* 2. Chunk, replace the old chunks and the document row. */
    if ((rc = sx_rag_chunk(d->text, d->text_len, c, &pieces, &n)) != 0)
        return rc;
    if (exists && (rc = chunks_remove(db, tenant_id, dataset_id, d->doc_id)) != 0)
        goto done;
    if (exists)
        rc = (int)sx_db_run(db, "UPDATE rag_docs SET title = $4, text = $5, metadata = $6, "
                                "bytes = $7, n_chunks = $8, updated_at = $9 WHERE "
                                "tenant_id = $1 AND dataset_id = $2 AND doc_id = $3",
                            "ttttttiii", tenant_id, dataset_id, d->doc_id, d->title, d->text,
                            d->metadata, (int64_t)d->text_len, (int64_t)n, now);
    else
        rc = (int)sx_db_run(db, "INSERT INTO rag_docs (tenant_id, dataset_id, doc_id, title, "
                                "text, metadata, bytes, n_chunks, created_at, updated_at) "
                                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                            "ttttttiii", tenant_id, dataset_id, d->doc_id, d->title, d->text,
                            d->metadata, (int64_t)d->text_len, (int64_t)n, now);
    if (rc < 0) {
        rc = SX_ESTORE;
        goto done;
    }
    for (i = 0; i < n; i++) {
        char *text = strndup(d->text + pieces[i].off, pieces[i].len);
        struct sx_rag_index_row row;
        int64_t id;

        if (!text) {
            rc = SX_ENOMEM;
            goto done;
        }
        rc = sx_rag_index_chunk_id(db, d->title, text, d->meta, &id);
        if (rc == 0 &&
            sx_db_run(db, "INSERT INTO rag_chunks (id, tenant_id, dataset_id, doc_id, seq, "
                          "tokens, title, text, meta, ds) VALUES ($1, $2, $3, $4, $5, $6, "
                          "$7, $8, $9, $10)", "itttiitttt", id, tenant_id, dataset_id,
                      d->doc_id, (int64_t)i, (int64_t)pieces[i].tokens, d->title, text,
                      d->meta, token) != 1)
            rc = SX_ESTORE;
        row = (struct sx_rag_index_row){id, d->title, text, d->meta, token};
        if (rc != 0 || (rc = sx_rag_index_add(db, tenant_id, &row)) != 0 ||
            (rc = sx_rag_vector_add(rag, db, tenant_id, id, d->title, text)) != 0) {
            free(text);
            rc = rc < 0 ? rc : SX_ESTORE;
            goto done;
        }
        free(text);
    }
    *status = exists ? "updated" : "created";
    *n_chunks = (int)n;
    rc = 0;
done:
    free(pieces);
    return rc;
}

int sx_rag_docs_upload(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                       const json_t *body, json_t **out, struct sx_fault *f)
{
    static const char *const allowed[] = {"docs", NULL};
    struct sx_rag_chunking c;
    struct doc_in *docs = NULL;
    char token[SX_RAG_TOKEN_MAX];
    json_t *arr, *results = NULL;
    size_t n, i, j;
    int64_t have = 0, fresh = 0;
    int counts[3] = {0, 0, 0}, rc;
    const char *bad;
    sx_db *db = NULL;
    sx_stmt *st;

    /* 1. Check the whole request before touching anything. */
    if (!json_is_object(body) || !only_keys(body, allowed, &bad)) {
        fault(f, "invalid_body", "the body must be {\"docs\": [{doc_id, title, text, "
              "metadata}, ...]}");
        fault_param(f, "docs");
        return SX_EINVAL;
    }
    arr = json_object_get(body, "docs");
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        fault(f, "invalid_docs", "docs must be a non-empty array of documents");
        fault_param(f, "docs");
        return SX_EINVAL;
    }
    n = json_array_size(arr);
    if (n > (size_t)rag->limits.docs_per_request) {
        fault(f, "too_many_docs", "docs has %zu documents; send at most %d per request", n,
              rag->limits.docs_per_request);
        fault_param(f, "docs");
        return SX_ETOOBIG;
    }
    if (!(docs = calloc(n, sizeof(*docs))))
        return SX_ENOMEM;
    for (i = 0; i < n; i++) {
        if ((rc = check_doc(rag, json_array_get(arr, i), i, &docs[i], f)) != 0)
            goto done;
        for (j = 0; j < i; j++)
            if (strcmp(docs[j].doc_id, docs[i].doc_id) == 0) {
                fault(f, "duplicate_doc_id", "docs[%zu].doc_id \"%s\" repeats docs[%zu]; "
                      "each document may appear once per request", i, docs[i].doc_id, j);
                fault_param(f, "docs[%zu].doc_id", i);
                rc = SX_EINVAL;
                goto done;
            }
    }

    /* 2. One transaction: dataset, capacity, then each document. */
    if (!(db = sx_store_acquire(rag->store))) {
        rc = SX_ESTORE;
        goto done;
    }
    if ((rc = sx_db_begin(db)) != 0 ||
        (rc = dataset_load(db, tenant_id, dataset_id, NULL, &c, token)) != 0)
        goto done;
    st = sx_db_query(db, "SELECT count(*) FROM rag_docs WHERE dataset_id = $1", "t",
                     dataset_id);
    if (!st || sx_stmt_step(st) != SX_STORE_ROW) {
        if (st)
            sx_stmt_done(st);
        rc = SX_ESTORE;
        goto done;
    }
    have = sx_stmt_int(st, 0);
    sx_stmt_done(st);
    for (i = 0; i < n; i++) {
        st = sx_db_query(db, "SELECT 1 FROM rag_docs WHERE dataset_id = $1 AND doc_id = $2",
                         "tt", dataset_id, docs[i].doc_id);
        if (!st) {
            rc = SX_ESTORE;
            goto done;
        }
        if (sx_stmt_step(st) == SX_STORE_DONE)
            fresh++;
        sx_stmt_done(st);
    }
    if (have + fresh > rag->limits.docs_per_dataset) {
        fault(f, "dataset_full", "the dataset holds %lld documents and this upload adds %lld; "
              "the limit is %lld per dataset", (long long)have, (long long)fresh,
              (long long)rag->limits.docs_per_dataset);
        fault_param(f, "docs");
        rc = SX_ETOOBIG;
        goto done;
    }
    if (!(results = json_array())) {
        rc = SX_ENOMEM;
        goto done;
    }
    for (i = 0; i < n; i++) {
        const char *status = NULL;
        int chunks = 0;

        if ((rc = doc_write(rag, db, tenant_id, dataset_id, token, &c, &docs[i], &status,
                            &chunks)) != 0)
            goto done;
        counts[strcmp(status, "created") == 0 ? 0 : strcmp(status, "updated") == 0 ? 1 : 2]++;
        json_array_append_new(results, json_pack("{s:i, s:s, s:s, s:i}", "index", (int)i,
                                                 "doc_id", docs[i].doc_id, "status", status,
                                                 "chunks", chunks));
    }
    if (sx_db_run(db, "UPDATE rag_datasets SET updated_at = $2 WHERE id = $1", "ti",
                  dataset_id, sx_time_now_ms()) < 0) {
        rc = SX_ESTORE;
        goto done;
    }
    if ((rc = sx_db_commit(db)) != 0)
        goto done;
    *out = json_pack("{s:s, s:s, s:o, s:i, s:i, s:i}", "object", "upload", "dataset_id",
                     dataset_id, "results", results, "created", counts[0], "updated",
                     counts[1], "unchanged", counts[2]);
    results = NULL;
    rc = *out ? 0 : SX_ENOMEM;
done:
    json_decref(results);
    sx_store_release(rag->store, db);
    docs_free(docs, n);
    return rc;
}

int sx_rag_docs_list(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                     const char *after, int limit, json_t **out)
{
    sx_db *db = sx_store_acquire(rag->store);
    json_t *data = json_array(), *last = NULL;
    sx_stmt *st = NULL;
    int rc, n = 0;

    if (!db || !data) {
        rc = db ? SX_ENOMEM : SX_ESTORE;
        goto done;
    }
    if (limit < 1 || limit > 100)
        limit = 100;
    rc = dataset_load(db, tenant_id, dataset_id, NULL, NULL, NULL);
    if (rc)
        goto done;

    /* One row more than the page shows whether there is a next one. */
    st = sx_db_query(db, "SELECT doc_id, title, bytes, n_chunks, created_at, updated_at "
                         "FROM rag_docs WHERE tenant_id = $1 AND dataset_id = $2 AND "
                         "doc_id > $3 ORDER BY doc_id LIMIT $4", "ttti", tenant_id,
                     dataset_id, after ? after : "", (int64_t)limit + 1);
    if (!st) {
        rc = SX_ESTORE;
        goto done;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW && n < limit) {
        last = json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:o}", "object", "document",
                         "doc_id", sx_stmt_text(st, 0), "title", sx_stmt_text(st, 1),
                         "bytes", (json_int_t)sx_stmt_int(st, 2), "chunk_count",
                         (json_int_t)sx_stmt_int(st, 3), "created_at", iso(sx_stmt_int(st, 4)),
                         "updated_at", iso(sx_stmt_int(st, 5)));
        json_array_append_new(data, last);
        n++;
    }
    if (rc < 0) {
        rc = SX_ESTORE;
        goto done;
    }
    *out = json_pack("{s:s, s:O, s:b, s:o}", "object", "list", "data", data, "has_more",
                     rc == SX_STORE_ROW, "next_cursor",
                     rc == SX_STORE_ROW ? json_deep_copy(json_object_get(last, "doc_id"))
                                        : json_null());
    rc = *out ? 0 : SX_ENOMEM;
done:
    sx_stmt_done(st);
    json_decref(data);
    sx_store_release(rag->store, db);
    return rc;
}

int sx_rag_doc_get(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                   const char *doc_id, json_t **out)
{
    sx_db *db = sx_store_acquire(rag->store);
    json_t *chunks = NULL, *meta;
    sx_stmt *st;
    int rc;

    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db, "SELECT doc_id, title, text, metadata, bytes, n_chunks, created_at, "
                         "updated_at FROM rag_docs WHERE tenant_id = $1 AND dataset_id = $2 "
                         "AND doc_id = $3", "ttt", tenant_id, dataset_id, doc_id);
    if (!st) {
        rc = SX_ESTORE;
        goto done;
    }
    rc = sx_stmt_step(st);
    if (rc != SX_STORE_ROW) {
        sx_stmt_done(st);
        rc = rc == SX_STORE_DONE ? SX_ENOTFOUND : SX_ESTORE;
        goto done;
    }
    meta = json_loads(sx_stmt_text(st, 3), 0, NULL);
    *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:o, s:o}", "object",
                     "document", "dataset_id", dataset_id, "doc_id", sx_stmt_text(st, 0),
                     "title", sx_stmt_text(st, 1), "text", sx_stmt_text(st, 2), "metadata",
                     meta ? meta : json_object(), "bytes", (json_int_t)sx_stmt_int(st, 4),
                     "chunk_count", (json_int_t)sx_stmt_int(st, 5), "created_at",
                     iso(sx_stmt_int(st, 6)), "updated_at", iso(sx_stmt_int(st, 7)));
    sx_stmt_done(st);
    if (!*out) {
        rc = SX_ENOMEM;
        goto done;
    }

    /* The chunks, so that operators can see how the text was cut. */
    chunks = json_array();
    st = sx_db_query(db, "SELECT id, seq, tokens, text FROM rag_chunks WHERE tenant_id = $1 "
                         "AND dataset_id = $2 AND doc_id = $3 ORDER BY seq", "ttt", tenant_id,
                     dataset_id, doc_id);
    while (st && chunks && (rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        char id[32];

        snprintf(id, sizeof(id), "chk_%lld", (long long)sx_stmt_int(st, 0));
        json_array_append_new(chunks, json_pack("{s:s, s:I, s:I, s:s}", "chunk_id", id,
                                                "index", (json_int_t)sx_stmt_int(st, 1),
                                                "tokens", (json_int_t)sx_stmt_int(st, 2),
                                                "text", sx_stmt_text(st, 3)));
    }
    if (st)
        sx_stmt_done(st);
    json_object_set_new(*out, "chunks", chunks ? chunks : json_array());
    rc = 0;
done:
    sx_store_release(rag->store, db);
    return rc;
}

int sx_rag_doc_delete(sx_rag *rag, const char *tenant_id, const char *dataset_id,
                      const char *doc_id)
{
    sx_db *db = sx_store_acquire(rag->store);
    int64_t n;
    int rc;

    if (!db)
        return SX_ESTORE;
    if ((rc = sx_db_begin(db)) != 0)
        goto done;
    if ((rc = chunks_remove(db, tenant_id, dataset_id, doc_id)) != 0)
        goto done;
    n = sx_db_run(db, "DELETE FROM rag_docs WHERE tenant_id = $1 AND dataset_id = $2 AND "
                      "doc_id = $3", "ttt", tenant_id, dataset_id, doc_id);
    if (n < 0) {
        rc = SX_ESTORE;
        goto done;
    }
    if (n == 0) {
        rc = SX_ENOTFOUND;
        goto done;
    }
    rc = sx_db_commit(db);
done:
    sx_store_release(rag->store, db);
    return rc;
}
