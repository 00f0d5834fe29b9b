/* /v1/tenants/{t}/keys: more keys for a tenant (the secret is shown once),
 * the list (prefixes only), revocation (refused from the next request on)
 * and rotation with an overlap window. Admin only. */
#include "api/api.h"

#include "base/err.h"

#include <stdio.h>

#define DEFAULT_OVERLAP_S 86400

static void key_not_found(sx_http_req *r)
{
    sx_http_reply_error(r, 404, "key_not_found", "key_id",
                        "no key \"%.40s\" for this tenant (list them with GET "
                        "/v1/tenants/{t}/keys)", sx_http_param(r, "key_id"));
}

/* The optional {"name": ...} body of key creation. */
static int read_name(sx_http_req *r, const char **name)
{
    static const char *const allowed[] = {"name", NULL};
    json_t *body, *v;
    bool failed;

    *name = NULL;
    body = sx_api_optional_body(r, &failed);
    if (failed)
        return SX_EINVAL;
    if (!body)
        return 0;
    if (sx_api_only_fields(r, body, allowed, "a key accepts only \"name\""))
        return SX_EINVAL;
    v = json_object_get(body, "name");
    if (v && !json_is_null(v) && !json_is_string(v)) {
        sx_http_reply_error(r, 400, "invalid_type", "name", "name must be a string");
        return SX_EINVAL;
    }
    *name = json_string_value(v);
    return 0;
}

static void create_key(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_fault f = {0};
    struct sx_tenant *t;
    const char *name;
    json_t *out;
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    if (read_name(r, &name) == 0) {
        sx_api_actor(r, &p, &who);
        rc = sx_key_create(app->tenancy, SX_KEY_TENANT, t, name, &who, &out, &f);
        if (rc)
            sx_api_reply_rc(r, rc, &f, NULL);
        else
            sx_http_reply_json(r, 201, out);
    }
    sx_tenant_unref(t);
}

static void list_keys(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    json_t *keys;
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    rc = sx_key_list(app->tenancy, SX_KEY_TENANT, t->id, &keys);
    sx_tenant_unref(t);
    if (rc) {
        sx_api_reply_rc(r, rc, NULL, NULL);
        return;
    }
    sx_http_reply_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "keys", keys));
}

static void revoke_key(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_tenant *t;
    const char *key_id = sx_http_param(r, "key_id");
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    sx_api_actor(r, &p, &who);
    rc = sx_key_revoke(app->tenancy, SX_KEY_TENANT, t->id, key_id, &who);
    sx_tenant_unref(t);
    if (rc == SX_ENOTFOUND)
        key_not_found(r);
    else if (rc)
        sx_api_reply_rc(r, rc, NULL, NULL);
    else
        sx_http_reply_json(r, 200, json_pack("{s:s, s:s, s:b}", "id", key_id, "object",
                                             "api_key", "deleted", 1));
}

static void rotate_key(sx_http_req *r, void *ctx)
{
    static const char *const allowed[] = {"overlap_seconds", NULL};
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_fault f = {0};
    struct sx_tenant *t;
    json_int_t overlap = DEFAULT_OVERLAP_S;
    json_t *body, *v, *out;
    bool failed;
    int rc;

    if (sx_api_path_tenant(app, r, false, &p, &t))
        return;
    body = sx_api_optional_body(r, &failed);
    if (failed || (body && sx_api_only_fields(r, body, allowed,
                                              "rotation accepts only \"overlap_seconds\"")))
        goto out;
    v = json_object_get(body, "overlap_seconds");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) {
            sx_http_reply_error(r, 400, "invalid_type", "overlap_seconds",
                                "overlap_seconds must be an integer number of seconds "
                                "(0 to 2592000)");
            goto out;
        }
        overlap = json_integer_value(v);
    }
    sx_api_actor(r, &p, &who);
    rc = sx_key_rotate(app->tenancy, t, sx_http_param(r, "key_id"), overlap, &who, &out, &f);
    if (rc == SX_ENOTFOUND)
        key_not_found(r);
    else if (rc)
        sx_api_reply_rc(r, rc, &f, NULL);
    else
        sx_http_reply_json(r, 201, out);
out:
    sx_tenant_unref(t);
}

int sx_api_keys_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "POST", "/v1/tenants/{t}/keys", create_key, app);

    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/tenants/{t}/keys", list_keys, app);
    if (rc == 0)
        rc = sx_http_route(srv, "DELETE", "/v1/tenants/{t}/keys/{key_id}", revoke_key, app);
    if (rc == 0)
        rc = sx_http_route(srv, "POST", "/v1/tenants/{t}/keys/{key_id}/rotate", rotate_key,
                           app);
    return rc;
}
