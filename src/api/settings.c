/* /v1/tenants/{t}/settings: GET (admin, or the tenant's own key) returns
 * every settings field with defaults filled in; PATCH (admin) merges a
 * validated partial object, null resetting a field to its default. */
#include "api/api.h"

#include "base/err.h"

#include <stdio.h>

static json_t *settings_json(const struct sx_tenant *t)
{
    return sx_settings_to_json(t->settings_stored, &t->settings);
}

static void get_settings(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    sx_http_reply_json(r, 200, settings_json(t));
    sx_tenant_unref(t);
}

static void patch_settings(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_fault f = {0};
    struct sx_tenant *t, *updated = NULL;
    char msg[128];
    json_t *body;
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    body = sx_http_json_object(r);
    if (!body) {
        sx_tenant_unref(t);
        return;
    }
    sx_api_actor(r, &p, &who);
    rc = sx_tenant_settings_update(app->tenancy, t->id, body, &who, &updated, &f);
    snprintf(msg, sizeof(msg), "no tenant \"%.64s\" (it was deleted)", t->id);
    sx_tenant_unref(t);
    if (rc) {
        sx_api_reply_rc(r, rc, &f, msg);
        return;
    }
    sx_http_reply_json(r, 200, settings_json(updated));
    sx_tenant_unref(updated);
}

int sx_api_settings_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "GET", "/v1/tenants/{t}/settings", get_settings, app);

    if (rc == 0)
        rc = sx_http_route(srv, "PATCH", "/v1/tenants/{t}/settings", patch_settings, app);
    return rc;
}
