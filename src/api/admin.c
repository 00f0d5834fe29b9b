/* /v1/admin/platform-keys (create with the secret shown once, list by
 * prefix, revoke) and /v1/admin/audit (the admin action log, newest first,
 * filtered by action, tenant and time). Admin only. */
#include "api/api.h"

#include "base/err.h"
#include "base/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void create_platform_key(sx_http_req *r, void *ctx)
{
    static const char *const allowed[] = {"name", NULL};
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    struct sx_fault f = {0};
    json_t *body, *v, *out;
    bool failed;
    int rc;

    if (sx_api_require_admin(app, r, &p))
        return;
    body = sx_api_optional_body(r, &failed);
    if (failed || (body && sx_api_only_fields(r, body, allowed,
                                              "a platform key accepts only \"name\"")))
        return;
    v = json_object_get(body, "name");
    if (v && !json_is_null(v) && !json_is_string(v)) {
        sx_http_reply_error(r, 400, "invalid_type", "name", "name must be a string");
        return;
    }
    sx_api_actor(r, &p, &who);
    rc = sx_key_create(app->tenancy, SX_KEY_PLATFORM, NULL, json_string_value(v), &who, &out,
                       &f);
    if (rc)
        sx_api_reply_rc(r, rc, &f, NULL);
    else
        sx_http_reply_json(r, 201, out);
}

static void list_platform_keys(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    json_t *keys;
    int rc;

    if (sx_api_require_admin(app, r, &p))
        return;
    rc = sx_key_list(app->tenancy, SX_KEY_PLATFORM, NULL, &keys);
    if (rc) {
        sx_api_reply_rc(r, rc, NULL, NULL);
        return;
    }
    sx_http_reply_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "keys", keys));
}

static void revoke_platform_key(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_actor who;
    const char *key_id = sx_http_param(r, "key_id");
    int rc;

    if (sx_api_require_admin(app, r, &p))
        return;
    sx_api_actor(r, &p, &who);
    rc = sx_key_revoke(app->tenancy, SX_KEY_PLATFORM, NULL, key_id, &who);
    if (rc == SX_ENOTFOUND)
        sx_http_reply_error(r, 404, "key_not_found", "key_id",
                            "no platform key \"%.40s\" (list them with GET "
                            "/v1/admin/platform-keys)", key_id);
    else if (rc)
        sx_api_reply_rc(r, rc, NULL, NULL);
    else
        sx_http_reply_json(r, 200, json_pack("{s:s, s:s, s:b}", "id", key_id, "object",
                                             "api_key", "deleted", 1));
}

/* A time bound: "2024-01-15", "2024-01-15T10:20:30Z" (fraction allowed) or
 * Unix seconds. Returns ms, or -1 if unreadable. */
static int64_t parse_time(const char *s)
{
    int64_t secs;
    struct tm tm = {0};
    const char *end;
    char *iend;
    long long v;

    if (sx_time_parse_date(s, &secs) == 0)
        return secs * 1000;
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end) {
        int64_t ms = 0;

        if (*end == '.') {
            int digits = 0;

            for (end++; *end >= '0' && *end <= '9'; end++, digits++)
                if (digits < 3)
                    ms = ms * 10 + (*end - '0');
            for (; digits > 0 && digits < 3; digits++)
                ms *= 10;
        }
        if (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)
            return -1;
        return (int64_t)timegm(&tm) * 1000 + ms;
    }
    v = strtoll(s, &iend, 10);
    if (*s && !*iend && v >= 0 && v < 253402300800LL)
        return v * 1000;
    return -1;
}

static void list_audit(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_audit_filter flt = {0};
    struct sx_tenant *t = NULL;
    const char *tenant = sx_http_query(r, "tenant");
    const char *names[2] = {"since", "until"};
    int64_t *bounds[2] = {&flt.since, &flt.until};
    char next[96];
    json_t *page;
    bool more;
    int rc;

    if (sx_api_require_admin(app, r, &p))
        return;
    if (sx_api_query_limit(r, 50, &flt.limit))
        return;
    for (int i = 0; i < 2; i++) {
        const char *s = sx_http_query(r, names[i]);

        if (s && (*bounds[i] = parse_time(s)) < 0) {
            sx_http_reply_error(r, 400, "invalid_value", names[i],
                                "%s must be a date (2024-01-15), a UTC time "
                                "(2024-01-15T10:00:00Z) or Unix seconds", names[i]);
            return;
        }
    }
    flt.action = sx_http_query(r, "action");
    if (!tenant)
        tenant = sx_http_query(r, "tenant_id");
    /* A slug names a live tenant; a deleted tenant is still found by id. */
    if (tenant && sx_tenant_get(app->tenancy, tenant, &t) == 0)
        flt.tenant_id = t->id;
    else
        flt.tenant_id = tenant;
    flt.after = sx_http_query(r, "after");
    if (!flt.after)
        flt.after = sx_http_query(r, "cursor");
    rc = sx_audit_list(app->tenancy, &flt, &page, &more, next);
    sx_tenant_unref(t);
    if (rc == SX_EINVAL) {
        sx_http_reply_error(r, 400, "invalid_cursor", "after",
                            "after must be the next_cursor value of a previous page");
        return;
    }
    if (rc) {
        sx_api_reply_rc(r, rc, NULL, NULL);
        return;
    }
    sx_http_reply_json(r, 200, json_pack("{s:s, s:o, s:b, s:o}", "object", "list", "events",
                                         page, "has_more", more, "next_cursor",
                                         more ? json_string(next) : json_null()));
}

int sx_api_admin_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "POST", "/v1/admin/platform-keys", create_platform_key, app);

    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/admin/platform-keys", list_platform_keys, app);
    if (rc == 0)
        rc = sx_http_route(srv, "DELETE", "/v1/admin/platform-keys/{key_id}",
                           revoke_platform_key, app);
    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/admin/audit", list_audit, app);
    return rc;
}
