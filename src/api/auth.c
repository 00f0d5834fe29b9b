/* HTTP side of authentication: reads the Authorization, X-Tenant-ID and
 * client address of a request, asks tenancy/auth.c for the verdict and
 * sends refusals in the OpenAI error shape. Also the small reply helpers
 * the resource files share. */
#include "api/api.h"

#include "base/err.h"
#include "base/json.h"
#include "base/log.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static void reply_refusal(sx_http_req *r, const struct sx_refusal *why)
{
    const struct sx_fault *f = &why->fault;

    if (why->status == 401)
        sx_http_set_header(r, "WWW-Authenticate", "Bearer");
    if (why->status == 503)
        sx_http_set_header(r, "Retry-After", "1");
    sx_http_reply_error(r, why->status, f->code, f->param[0] ? f->param : NULL, "%s",
                        f->message);
}

int sx_api_principal(struct sx_app *app, sx_http_req *r, struct sx_principal *p)
{
    struct sx_refusal why;
    int rc = sx_auth_principal(app->tenancy, sx_http_header(r, "Authorization"), p, &why);

    if (rc)
        reply_refusal(r, &why);
    return rc;
}

int sx_api_require_admin(struct sx_app *app, sx_http_req *r, struct sx_principal *p)
{
    int rc = sx_api_principal(app, r, p);

    if (rc)
        return rc;
    if (p->kind != SX_KEY_ADMIN) {
        sx_http_reply_error(r, 403, "permission_denied", NULL,
                            "this endpoint requires the admin key (sk-admin-...); %s keys "
                            "may not use it", sx_key_kind_name(p->kind));
        return SX_EPERM;
    }
    return 0;
}

int sx_api_path_tenant(struct sx_app *app, sx_http_req *r, bool tenant_may,
                       struct sx_principal *p, struct sx_tenant **t)
{
    struct sx_refusal why;
    int rc;

    *t = NULL;
    rc = sx_api_principal(app, r, p);
    if (rc)
        return rc;
    rc = sx_auth_path_tenant(app->tenancy, p, sx_http_param(r, "t"),
                             sx_http_header(r, "X-Tenant-ID"), tenant_may,
                             sx_http_client_ip(r), t, &why);
    if (rc)
        reply_refusal(r, &why);
    return rc;
}

int sx_api_request_tenant(struct sx_app *app, sx_http_req *r, struct sx_principal *p,
                          struct sx_tenant **t)
{
    struct sx_refusal why;
    int rc;

    *t = NULL;
    rc = sx_api_principal(app, r, p);
    if (rc)
        return rc;
    rc = sx_auth_request_tenant(app->tenancy, p, sx_http_header(r, "X-Tenant-ID"),
                                sx_http_client_ip(r), t, &why);
    if (rc)
        reply_refusal(r, &why);
    return rc;
}

void sx_api_actor(sx_http_req *r, const struct sx_principal *p, struct sx_actor *a)
{
    a->key_id = p->key_id;
    a->kind = sx_key_kind_name(p->kind);
    a->request_id = sx_http_request_id(r);
    a->client_ip = sx_http_client_ip(r);
}

void sx_api_reply_rc(sx_http_req *r, int rc, const struct sx_fault *f,
                     const char *not_found_msg)
{
    const char *param = f && f->param[0] ? f->param : NULL;

    switch (rc) {
    case SX_EINVAL:
        sx_http_reply_error(r, 400, f ? f->code : "invalid_request", param, "%s",
                            f ? f->message : "invalid request");
        break;
    case SX_EEXIST:
        sx_http_reply_error(r, 409, f ? f->code : "conflict", param, "%s",
                            f ? f->message : "the object already exists");
        break;
    case SX_ENOTFOUND:
        sx_http_reply_error(r, 404, "not_found", NULL, "%s",
                            not_found_msg ? not_found_msg : "not found");
        break;
    case SX_EBUSY:
        sx_http_set_header(r, "Retry-After", "1");
        sx_http_reply_error(r, 503, "store_busy", NULL,
                            "the store is busy; retry the request shortly");
        break;
    default:
        SX_ERROR("api", "%s %s failed: %s", sx_http_method(r), sx_http_route_pattern(r),
                 sx_strerror(rc));
        sx_http_reply_error(r, 500, "internal_error", NULL,
                            "the server failed to complete the request (request id %s)",
                            sx_http_request_id(r));
    }
}

json_t *sx_api_optional_body(sx_http_req *r, bool *failed)
{
    size_t len = 0;
    const char *body = sx_http_body(r, &len);
    json_t *o;

    *failed = false;
    for (size_t i = 0; body && i < len; i++)
        if (!isspace((unsigned char)body[i])) {
            o = sx_http_json_object(r);
            *failed = o == NULL;
            return o;
        }
    return NULL;
}

int sx_api_query_limit(sx_http_req *r, int dflt, int *limit)
{
    const char *s = sx_http_query(r, "limit");
    char *end;
    long v;

    *limit = dflt;
    if (!s)
        return 0;
    v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > 100 || s[0] == '+' || s[0] == ' ') {
        sx_http_reply_error(r, 400, "invalid_value", "limit",
                            "limit must be an integer from 1 to 100");
        return SX_EINVAL;
    }
    *limit = (int)v;
    return 0;
}

int sx_api_only_fields(sx_http_req *r, const json_t *body, const char *const *allowed,
                       const char *hint)
{
    const char *key = sx_json_unknown_key(body, allowed);

    if (!key)
        return 0;
    sx_http_reply_error(r, 400, "unknown_field", key, "unknown field \"%.60s\"; %s", key,
                        hint);
    return SX_EINVAL;
}
