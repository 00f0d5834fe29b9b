/* GET /v1/models and GET /v1/models/{model}: the catalogue's public model
 * names in OpenAI's list shape, for any valid key. */
#include "api/serving.h"

#include <string.h>

static json_t *model_json(sx_catalog *c, sx_backend *b)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", sx_backend_name(b), "object", "model",
                     "created", (json_int_t)sx_catalog_created(c), "owned_by", "synapsex");
}

/* Any key. Tenant and platform keys go through the tenant checks of the
 * OpenAI endpoints (X-Tenant-ID routing, status, IP allowlist); the admin
 * key needs no tenant unless it names one. */
static int authorize(struct sx_app *app, sx_http_req *r)
{
    struct sx_principal p;
    struct sx_tenant *t = NULL;
    int rc;

    rc = sx_api_principal(app, r, &p);
    if (rc || (p.kind == SX_KEY_ADMIN && !sx_http_header(r, "X-Tenant-ID")))
        return rc;
    rc = sx_api_request_tenant(app, r, &p, &t);
    sx_tenant_unref(t);
    return rc;
}

static void h_list(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    sx_catalog *c = sx_serving_catalog(app->serving);
    json_t *data;

    if (authorize(app, r))
        return;
    data = json_array();
    for (size_t i = 0; i < sx_catalog_count(c); i++)
        json_array_append_new(data, model_json(c, sx_catalog_at(c, i)));
    sx_http_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

static void h_get(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    sx_catalog *c = sx_serving_catalog(app->serving);
    sx_backend *b;
    char names[1024];

    if (authorize(app, r))
        return;
    b = sx_catalog_find(c, sx_http_param(r, "model"));
    if (!b) {
        sx_catalog_names(c, names, sizeof(names));
        sx_http_reply_error(r, 404, "model_not_found", "model",
                            "The model '%.100s' does not exist; available models: %s",
                            sx_http_param(r, "model"), names[0] ? names : "(none)");
        return;
    }
    sx_http_reply_json(r, 200, model_json(c, b));
}

int sx_api_models_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "GET", "/v1/models", h_list, app);

    return rc ? rc : sx_http_route(srv, "GET", "/v1/models/{model}", h_get, app);
}
