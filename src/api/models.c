/* GET /v1/models and GET /v1/models/{model}: the catalogue's public model
 * names in OpenAI's list shape, for any valid key, and for a tenant (its
 * key, or a platform or admin key with X-Tenant-ID) its active LoRA adapter
 * as "<base>:<slug>-v<N>", a model only that tenant sees and may ask for. */
#include "api/serving.h"

#include "tuning/registry.h"

#include <string.h>

static json_t *model_json(sx_catalog *c, sx_backend *b)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", sx_backend_name(b), "object", "model",
                     "created", (json_int_t)sx_catalog_created(c), "owned_by", "synapsex");
}

/* An adapter version as a model: owned by the tenant, with its base as
 * parent (vLLM lists LoRA modules the same way). */
static json_t *adapter_json(sx_catalog *c, const struct sx_tenant *t, const char *base,
                            int version)
{
    char id[256];

    sx_adapter_model_id(base, t->slug, version, id, sizeof(id));
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s}", "id", id, "object", "model", "created",
                     (json_int_t)sx_catalog_created(c), "owned_by", t->slug, "parent", base,
                     "root", base);
}

/* Any key. Tenant and platform keys go through the tenant checks of the
 * OpenAI endpoints (X-Tenant-ID routing, status, IP allowlist); the admin
 * key needs no tenant unless it names one. *t: the tenant (new reference)
 * or NULL. */
static int authorize(struct sx_app *app, sx_http_req *r, struct sx_tenant **t)
{
    struct sx_principal p;
    int rc;

    *t = NULL;
    rc = sx_api_principal(app, r, &p);
    if (rc || (p.kind == SX_KEY_ADMIN && !sx_http_header(r, "X-Tenant-ID")))
        return rc;
    return sx_api_request_tenant(app, r, &p, t);
}

static void h_list(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    sx_catalog *c = sx_serving_catalog(app->serving);
    struct sx_tenant *t;
    sx_backend *b;
    json_t *data;
    char base[160];
    int v;

    if (authorize(app, r, &t))
        return;
    data = json_array();
    for (size_t i = 0; i < sx_catalog_count(c); i++)
        json_array_append_new(data, model_json(c, sx_catalog_at(c, i)));
    if (t && sx_registry_active_version(app->adapters, t->id, &v, base, sizeof(base)) == 0 &&
        (b = sx_catalog_find(c, base)) && sx_backend_takes_adapters(b))
        json_array_append_new(data, adapter_json(c, t, base, v));
    sx_tenant_unref(t);
    sx_http_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

static void h_get(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    sx_catalog *c = sx_serving_catalog(app->serving);
    struct sx_tenant *t;
    sx_backend *b;
    int v = 0;

    if (authorize(app, r, &t))
        return;
    b = sx_catalog_find(c, sx_http_param(r, "model"));
    if (b)
        sx_http_reply_json(r, 200, model_json(c, b));
    else if (sx_catalog_count(c) == 0 || !t)
        sx_api_model(app, r, t, sx_http_param(r, "model")); /* replies 503 / 404 */
    else if ((b = sx_api_model_adapter(app, r, t, sx_http_param(r, "model"), &v)))
        sx_http_reply_json(r, 200, adapter_json(c, t, sx_backend_name(b), v));
    sx_tenant_unref(t);
}

int sx_api_models_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "GET", "/v1/models", h_list, app);

    return rc ? rc : sx_http_route(srv, "GET", "/v1/models/{model}", h_get, app);
}
