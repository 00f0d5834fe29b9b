/* /v1/tenants and /v1/tenants/{t}: create (201, the first API key shown
 * once), list (tier filter, cursor pages), read, update, delete. All admin
 * only; the rules live in tenancy/tenants.c. */
#include "api/api.h"

#include "base/err.h"

#include <stdio.h>
#include <string.h>

static void not_found_msg(sx_http_req *r, char *buf, size_t len)
{
    snprintf(buf, len, "no tenant \"%.64s\" (use a tenant id or slug)",
             sx_http_param(r, "t") ? sx_http_param(r, "t") : "");
}

static void create_tenant(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_fault f = {0};
    struct sx_tenant *t = NULL;
    char key[SX_API_KEY_MAX], key_id[SX_KEY_ID_MAX];
    json_t *body, *out;
    int rc;

    if (sx_api_require_admin(app, r, &p))
        return;
    body = sx_http_json_object(r);
    if (!body)
        return;
    sx_api_actor(r, &p, &who);
    rc = sx_tenant_create(app->tenancy, body, 0, &who, &t, key, key_id, &f);
    if (rc) {
        sx_api_reply_rc(r, rc, &f, NULL);
        return;
    }
    out = sx_tenant_to_json(app->tenancy, t);
    json_object_set_new(out, "api_key", json_string(key));
    json_object_set_new(out, "api_key_id", json_string(key_id));
    explicit_bzero(key, sizeof(key));
    sx_tenant_unref(t);
    sx_http_reply_json(r, 201, out);
}

static void list_tenants(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_fault f = {0};
    const char *tier_s = sx_http_query(r, "tier");
    const char *after = sx_http_query(r, "after");
    enum sx_tier tier;
    char next[96];
    json_t *page;
    bool more;
    int limit, rc;

    if (sx_api_require_admin(app, r, &p))
        return;
    if (tier_s && sx_tier_parse(tier_s, &tier) != 0) {
        sx_http_reply_error(r, 400, "invalid_value", "tier",
                            "tier must be one of free, pro, business, enterprise or trial");
        return;
    }
    if (sx_api_query_limit(r, 20, &limit))
        return;
    if (!after)
        after = sx_http_query(r, "cursor");
    rc = sx_tenant_list(app->tenancy, tier_s ? &tier : NULL, limit, after, &page, &more, next,
                        &f);
    if (rc) {
        sx_api_reply_rc(r, rc, &f, NULL);
        return;
    }
    sx_http_reply_json(r, 200, json_pack("{s:s, s:o, s:b, s:o}", "object", "list",
                                         "tenants", page, "has_more", more, "next_cursor",
                                         more ? json_string(next) : json_null()));
}

static void get_tenant(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    sx_http_reply_json(r, 200, sx_tenant_to_json(app->tenancy, t));
    sx_tenant_unref(t);
}

static void update_tenant(sx_http_req *r, void *ctx)
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
    rc = sx_tenant_update(app->tenancy, t->id, body, &who, &updated, &f);
    sx_tenant_unref(t);
    if (rc) {
        not_found_msg(r, msg, sizeof(msg));
        sx_api_reply_rc(r, rc, &f, msg);
        return;
    }
    sx_http_reply_json(r, 200, sx_tenant_to_json(app->tenancy, updated));
    sx_tenant_unref(updated);
}

static void delete_tenant(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_tenant *t;
    char id[SX_TENANT_ID_MAX], msg[128];
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    sx_api_actor(r, &p, &who);
    rc = sx_tenant_delete(app->tenancy, t->id, &who, id);
    sx_tenant_unref(t);
    if (rc) {
        not_found_msg(r, msg, sizeof(msg));
        sx_api_reply_rc(r, rc, NULL, msg);
        return;
    }
    sx_http_reply_json(r, 200,
                       json_pack("{s:s, s:s, s:b}", "id", id, "object", "tenant", "deleted",
                                 1));
}

int sx_api_tenants_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "POST", "/v1/tenants", create_tenant, app);

    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/tenants", list_tenants, app);
    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/tenants/{t}", get_tenant, app);
    if (rc == 0)
        rc = sx_http_route(srv, "PATCH", "/v1/tenants/{t}", update_tenant, app);
    if (rc == 0)
        rc = sx_http_route(srv, "DELETE", "/v1/tenants/{t}", delete_tenant, app);
    return rc;
}
