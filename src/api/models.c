/* GET /v1/models and GET /v1/models/{model}: the catalogue's public model
 * names in OpenAI's list shape, for any valid key. */
#include "api/serving.h"

#include <string.h>

static json_t *model_json(sx_catalog *c, sx_backend *b)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", sx_backend_name(b), "object", "model",
                     "created", (json_int_t)sx_catalog_created(c), "owned_by", "synapsex");
}

static void h_list(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    sx_catalog *c = sx_serving_catalog(app->serving);
    struct sx_principal p;
    json_t *data = json_array();

    if (sx_api_principal(app, r, &p)) {
        json_decref(data);
        return;
    }
    for (size_t i = 0; i < sx_catalog_count(c); i++)
        json_array_append_new(data, model_json(c, sx_catalog_at(c, i)));
    sx_http_reply_json(r, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

static void h_get(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    sx_catalog *c = sx_serving_catalog(app->serving);
    struct sx_principal p;
    sx_backend *b;
    char names[1024];

    if (sx_api_principal(app, r, &p))
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
