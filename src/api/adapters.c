/* /v1/tenants/{t}/adapters: a tenant's LoRA adapter versions (admin).
 * POST uploads a GGUF adapter as the raw request body (application/
 * octet-stream, up to 256 MiB) for ?base_model= or the tenant's default
 * model; GET lists versions and the active one; POST .../{version}/activate
 * switches versions (rollback). The registry (tuning/registry.h) holds the
 * rules; this file translates HTTP. */
#include "api/api.h"
#include "api/serving.h"

#include "base/config.h"
#include "base/err.h"
#include "tuning/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ADAPTER_MAX_BODY ((size_t)256 << 20)

/* The engine model behind a public model name (local models only). */
static const sx_model *model_of(void *ctx, const char *name)
{
    struct sx_app *app = ctx;
    sx_backend *b;

    if (!app->serving)
        return NULL;
    b = sx_catalog_find(sx_serving_catalog(app->serving), name);
    return b ? sx_backend_engine_model(b) : NULL;
}

/* Whether a public model name is an upstream that serves adapters by name. */
static bool remote_of(void *ctx, const char *name)
{
    struct sx_app *app = ctx;
    sx_backend *b;

    if (!app->serving)
        return false;
    b = sx_catalog_find(sx_serving_catalog(app->serving), name);
    return b && !sx_backend_engine_model(b) && sx_backend_takes_adapters(b);
}

struct sx_registry *sx_api_adapters_open(struct sx_app *app, const struct sx_config *cfg,
                                         char *err, size_t errlen)
{
    struct sx_registry_options o = {
        .data_dir = cfg->data_dir,
        .mem_budget = cfg->adapter_memory,
        .preload = cfg->adapter_preload ? cfg->adapter_preload : -1,
        .model_of = model_of,
        .remote_of = remote_of,
        .model_ctx = app,
    };

    return sx_registry_open(app->store, app->tenancy, &o, err, errlen);
}

static void upload(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_tenant *t;
    const char *ctype = sx_http_header(r, "Content-Type");
    const char *base = sx_http_query(r, "base_model");
    const char *act = sx_http_query(r, "activate");
    const char *body;
    char msg[300] = "";
    json_t *v;
    size_t len;
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    body = sx_http_body(r, &len);
    if (!ctype || strncasecmp(ctype, "application/octet-stream", 24) != 0)
        sx_http_reply_error(r, 400, "invalid_content_type", NULL,
                            "send the adapter's GGUF file as the raw request body with "
                            "Content-Type: application/octet-stream");
    else if (!body || len == 0)
        sx_http_reply_error(r, 400, "invalid_request_error", NULL,
                            "the request body is empty; send a GGUF LoRA adapter file");
    else if (act && strcmp(act, "true") != 0 && strcmp(act, "false") != 0)
        sx_http_reply_error(r, 400, "invalid_request_error", "activate",
                            "activate must be true or false");
    else if (!(base && base[0]) && !(base = t->settings.default_model))
        sx_http_reply_error(r, 400, "invalid_request_error", "base_model",
                            "name the base model with ?base_model= (the tenant has no "
                            "default_model setting)");
    else {
        sx_api_actor(r, &p, &who);
        rc = sx_registry_upload(app->adapters, t, base, body, len, !act || act[0] == 't',
                                &who, &v, msg, sizeof(msg));
        if (rc == 0)
            sx_http_reply_json(r, 201, v);
        else if (rc == SX_EINVAL)
            sx_http_reply_error(r, 400, "invalid_adapter", NULL, "%s", msg);
        else if (rc == SX_ENOTFOUND)
            sx_http_reply_error(r, 400, "invalid_request_error", "base_model", "%s", msg);
        else
            sx_api_reply_rc(r, rc, NULL, NULL);
    }
    sx_tenant_unref(t);
}

static void list(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    json_t *out;
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    rc = sx_registry_list(app->adapters, t, &out);
    sx_tenant_unref(t);
    if (rc)
        sx_api_reply_rc(r, rc, NULL, NULL);
    else
        sx_http_reply_json(r, 200, out);
}

static void activate(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_tenant *t;
    const char *ver = sx_http_param(r, "version");
    char *end;
    long n;
    json_t *v;
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    n = strtol(ver + (ver[0] == 'v'), &end, 10);
    if (*end || end == ver + (ver[0] == 'v') || n < 1 || n > 1000000) {
        sx_http_reply_error(r, 400, "invalid_request_error", "version",
                            "version must look like v3 (or 3)");
    } else {
        sx_api_actor(r, &p, &who);
        rc = sx_registry_activate(app->adapters, t, (int)n, &who, &v);
        if (rc == 0)
            sx_http_reply_json(r, 200, v);
        else if (rc == SX_ENOTFOUND)
            sx_http_reply_error(r, 404, "adapter_not_found", "version",
                                "tenant has no adapter version %s; list them with GET "
                                "/v1/tenants/{t}/adapters", ver);
        else
            sx_api_reply_rc(r, rc, NULL, NULL);
    }
    sx_tenant_unref(t);
}

int sx_api_adapters_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "POST", "/v1/tenants/{t}/adapters", upload, app);

    if (rc == 0)
        rc = sx_http_route_set_max_body(srv, "POST", "/v1/tenants/{t}/adapters",
                                        ADAPTER_MAX_BODY);
    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/tenants/{t}/adapters", list, app);
    if (rc == 0)
        rc = sx_http_route(srv, "POST", "/v1/tenants/{t}/adapters/{version}/activate",
                           activate, app);
    return rc;
}
