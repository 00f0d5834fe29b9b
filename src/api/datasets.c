/* /v1/tenants/{t}/datasets: register, list, inspect and delete a tenant's
 * datasets, upsert and delete its documents, and search what retrieval
 * would return. Admin keys and the tenant's own keys; another tenant's
 * datasets are 404 (sx_api_path_tenant). The rules live in rag/. */
#include "api/api.h"

#include "base/err.h"
#include "rag/rag.h"

#include <stdio.h>
#include <string.h>

#define SEARCH_TOP_K_MAX 100

/* Replies for a rag error: limits are 413 (request) or 409 (capacity). */
static void reply_rag(sx_http_req *r, int rc, const struct sx_fault *f, const char *what)
{
    char msg[160];

    if (rc == SX_ENOTFOUND) {
        snprintf(msg, sizeof(msg), "no %s with that id for this tenant (list datasets with "
                 "GET /v1/tenants/{t}/datasets)", what);
        sx_api_reply_rc(r, rc, f, msg);
    } else if (rc == SX_ETOOBIG && f && f->code) {
        sx_http_reply_error(r, strcmp(f->code, "dataset_full") == 0 ? 409 : 413, f->code,
                            f->param[0] ? f->param : NULL, "%s", f->message);
    } else if (rc == SX_ELIMIT && f && f->code) {
        sx_http_reply_error(r, 409, f->code, NULL, "%s", f->message);
    } else {
        sx_api_reply_rc(r, rc, f, NULL);
    }
}

static void register_dataset(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_fault f = {0};
    struct sx_tenant *t;
    json_t *body, *out = NULL;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    if ((body = sx_http_json_object(r)) != NULL) {
        rc = sx_rag_dataset_register(app->rag, t->id, body, &out, &f);
        if (rc)
            reply_rag(r, rc, &f, "dataset");
        else
            sx_http_reply_json(r, 201, out);
    }
    sx_tenant_unref(t);
}

static void list_datasets(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    json_t *out = NULL;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    rc = sx_rag_dataset_list(app->rag, t->id, &out);
    sx_tenant_unref(t);
    if (rc)
        reply_rag(r, rc, NULL, "dataset");
    else
        sx_http_reply_json(r, 200, out);
}

static void get_dataset(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    json_t *out = NULL;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    rc = sx_rag_dataset_get(app->rag, t->id, sx_http_param(r, "d"), &out);
    sx_tenant_unref(t);
    if (rc)
        reply_rag(r, rc, NULL, "dataset");
    else
        sx_http_reply_json(r, 200, out);
}

static void delete_dataset(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    const char *d = sx_http_param(r, "d");
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    rc = sx_rag_dataset_delete(app->rag, t->id, d);
    sx_tenant_unref(t);
    if (rc)
        reply_rag(r, rc, NULL, "dataset");
    else
        sx_http_reply_json(r, 200, json_pack("{s:s, s:s, s:b}", "id", d, "object", "dataset",
                                             "deleted", 1));
}

static void upload_docs(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_fault f = {0};
    struct sx_tenant *t;
    json_t *body, *out = NULL;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    if ((body = sx_http_json_object(r)) != NULL) {
        rc = sx_rag_docs_upload(app->rag, t->id, sx_http_param(r, "d"), body, &out, &f);
        if (rc)
            reply_rag(r, rc, &f, "dataset");
        else
            sx_http_reply_json(r, 200, out);
    }
    sx_tenant_unref(t);
}

static void get_doc(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    json_t *out = NULL;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    rc = sx_rag_doc_get(app->rag, t->id, sx_http_param(r, "d"), sx_http_param(r, "doc_id"),
                        &out);
    sx_tenant_unref(t);
    if (rc)
        reply_rag(r, rc, NULL, "document");
    else
        sx_http_reply_json(r, 200, out);
}

/* GET .../docs?limit=&after=: the dataset's documents by doc_id. */
static void list_docs(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    const char *after = sx_http_query(r, "after");
    json_t *out = NULL;
    int limit, rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    if (sx_api_query_limit(r, 100, &limit)) {
        sx_tenant_unref(t);
        return;
    }
    rc = sx_rag_docs_list(app->rag, t->id, sx_http_param(r, "d"),
                          after ? after : sx_http_query(r, "cursor"), limit, &out);
    sx_tenant_unref(t);
    if (rc)
        reply_rag(r, rc, NULL, "dataset");
    else
        sx_http_reply_json(r, 200, out);
}

static void delete_doc(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    const char *doc_id = sx_http_param(r, "doc_id");
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    rc = sx_rag_doc_delete(app->rag, t->id, sx_http_param(r, "d"), doc_id);
    sx_tenant_unref(t);
    if (rc)
        reply_rag(r, rc, NULL, "document");
    else
        sx_http_reply_json(r, 200, json_pack("{s:s, s:s, s:b}", "doc_id", doc_id, "object",
                                             "document", "deleted", 1));
}

/* {query, top_k, threshold, dataset_ids}: what retrieval returns. top_k and
 * threshold default to the tenant's rag_top_k and rag_threshold, so that
 * the default answer is what chat would put in the prompt. */
static void search(sx_http_req *r, void *ctx)
{
    static const char *const allowed[] = {"query", "top_k", "threshold", "dataset_ids", NULL};
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_fault f = {0};
    struct sx_tenant *t;
    struct sx_rag_query q = {0};
    struct sx_rag_result res;
    json_t *body, *v;
    const char *query;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    if (!(body = sx_http_json_object(r)) ||
        sx_api_only_fields(r, body, allowed, "search accepts query, top_k, threshold and "
                                             "dataset_ids"))
        goto out;
    v = json_object_get(body, "query");
    query = json_string_value(v);
    if (!query || json_string_length(v) == 0 || json_string_length(v) > 8192) {
        sx_http_reply_error(r, 400, "invalid_query", "query",
                            "query is required: a string of 1 to 8192 bytes");
        goto out;
    }
    q.top_k = t->settings.rag_top_k > 0 ? t->settings.rag_top_k : 5;
    q.threshold = t->settings.rag_threshold;
    v = json_object_get(body, "top_k");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > SEARCH_TOP_K_MAX) {
            sx_http_reply_error(r, 400, "invalid_value", "top_k",
                                "top_k must be an integer from 1 to %d", SEARCH_TOP_K_MAX);
            goto out;
        }
        q.top_k = (int)json_integer_value(v);
    }
    v = json_object_get(body, "threshold");
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
            sx_http_reply_error(r, 400, "invalid_value", "threshold",
                                "threshold must be a number from 0 to 1");
            goto out;
        }
        q.threshold = json_number_value(v);
    }
    q.datasets = json_object_get(body, "dataset_ids");
    rc = sx_rag_retrieve(app->rag, t->id, query, json_string_length(json_object_get(body,
                                                                                    "query")),
                         &q, &res, &f);
    if (rc) {
        reply_rag(r, rc, &f, "dataset");
        goto out;
    }
    v = sx_rag_result_to_json(&res);
    json_object_set_new(v, "top_k", json_integer(q.top_k));
    json_object_set_new(v, "threshold", json_real(q.threshold));
    sx_rag_result_clear(&res);
    sx_http_reply_json(r, 200, v);
out:
    sx_tenant_unref(t);
}

int sx_api_datasets_routes(struct sx_app *app, sx_http_server *srv)
{
    static const struct {
        const char *method, *pattern;
        sx_http_handler fn;
    } routes[] = {
        {"POST", "/v1/tenants/{t}/datasets/register", register_dataset},
        {"POST", "/v1/tenants/{t}/datasets/search", search},
        {"GET", "/v1/tenants/{t}/datasets", list_datasets},
        {"GET", "/v1/tenants/{t}/datasets/{d}", get_dataset},
        {"DELETE", "/v1/tenants/{t}/datasets/{d}", delete_dataset},
        {"POST", "/v1/tenants/{t}/datasets/{d}/upload/docs", upload_docs},
        {"GET", "/v1/tenants/{t}/datasets/{d}/docs", list_docs},
        {"GET", "/v1/tenants/{t}/datasets/{d}/docs/{doc_id}", get_doc},
        {"DELETE", "/v1/tenants/{t}/datasets/{d}/docs/{doc_id}", delete_doc},
    };
    size_t i;
    int rc = 0;

    for (i = 0; rc == 0 && i < sizeof(routes) / sizeof(routes[0]); i++)
        rc = sx_http_route(srv, routes[i].method, routes[i].pattern, routes[i].fn, app);
    return rc;
}
