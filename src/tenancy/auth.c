/* Principals: who a request comes from (an admin, platform or tenant key)
 * and which tenant it may act for. The rules, in one place:
 *   - a missing, malformed, unknown, revoked or expired key is 401;
 *   - a tenant key acts only for its own tenant; an X-Tenant-ID naming
 *     another tenant is 403 (never ignored), another tenant's
 *     /v1/tenants/{t} resources are 404 (their existence is not revealed),
 *     and admin-only endpoints are 403;
 *   - platform keys act for the tenant named by X-Tenant-ID (id or slug):
 *     without it 400, unknown tenant 404; they never manage tenants (403);
 *   - a suspended or expired tenant is 403, and so is a tenant key used
 *     from outside its tenant's IP allowlist.
 * Messages never echo a presented key. */
#include "tenancy/internal.h"

#include "base/err.h"
#include "base/time.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MAX_PRESENTED 256

static int refuse(struct sx_refusal *why, int status, const char *code, const char *param,
                  const char *message)
{
    why->status = status;
    sx_fault_set(&why->fault, code, param, "%s", message);
    switch (status) {
    case 400:
        return SX_EINVAL;
    case 401:
        return SX_EAUTH;
    case 403:
        return SX_EPERM;
    case 404:
        return SX_ENOTFOUND;
    default:
        return SX_ESTORE;
    }
}

int sx_auth_principal(sx_tenancy *tn, const char *authorization, struct sx_principal *p,
                      struct sx_refusal *why)
{
    struct sx_key_entry k;
    const char *token, *code;
    size_t len;
    int rc;

    memset(p, 0, sizeof(*p));
    if (!authorization || !*authorization)
        return refuse(why, 401, "missing_api_key", NULL,
                      "no API key provided: send it in the header "
                      "\"Authorization: Bearer sk-...\"");
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return refuse(why, 401, "invalid_authorization_header", NULL,
                      "the Authorization header must be \"Bearer <API key>\"");
    token = authorization + 7;
    while (*token == ' ')
        token++;
    len = strlen(token);
    while (len && token[len - 1] == ' ')
        len--;
    if (len == 0)
        return refuse(why, 401, "missing_api_key", NULL,
                      "the Authorization header holds no key after \"Bearer\"");

    /* Anything that cannot be one of our keys is refused without a lookup. */
    for (size_t i = 0; i < len && len <= MAX_PRESENTED; i++)
        if ((unsigned char)token[i] <= 0x20 || (unsigned char)token[i] >= 0x7f)
            len = MAX_PRESENTED + 1; /* ends the loop too */
    if (len > MAX_PRESENTED)
        return refuse(why, 401, "invalid_api_key", NULL,
                      "invalid API key: check the key you sent, or ask the platform "
                      "operator for a new one");
    {
        char buf[MAX_PRESENTED + 1];

        memcpy(buf, token, len);
        buf[len] = 0;
        rc = sx_key_lookup(tn, buf, &k, &code);
        explicit_bzero(buf, sizeof(buf));
    }
    if (rc == SX_EAUTH) {
        if (strcmp(code, "api_key_revoked") == 0)
            return refuse(why, 401, code, NULL,
                          "this API key has been revoked; use another key of the tenant or "
                          "ask the platform operator for a new one");
        if (strcmp(code, "api_key_expired") == 0)
            return refuse(why, 401, code, NULL,
                          "this API key has expired (it was rotated); use its replacement");
        return refuse(why, 401, "invalid_api_key", NULL,
                      "invalid API key: check the key you sent, or ask the platform "
                      "operator for a new one");
    }
    if (rc)
        return refuse(why, 503, "store_unavailable", NULL,
                      "the key store is unavailable; retry shortly");
    p->kind = k.kind;
    snprintf(p->key_id, sizeof(p->key_id), "%s", k.id);
    snprintf(p->tenant_id, sizeof(p->tenant_id), "%s", k.tenant_id);
    return 0;
}

static bool names_tenant(const char *ref, const struct sx_tenant *t)
{
    return strcmp(ref, t->id) == 0 || strcmp(ref, t->slug) == 0;
}

/* Status and expiry: the checks every principal acting for a tenant meets. */
static int admit_status(const struct sx_tenant *t, struct sx_refusal *why)
{
    char msg[200];

    if (t->status == SX_TENANT_SUSPENDED) {
        snprintf(msg, sizeof(msg), "tenant %s is suspended; contact the platform operator "
                 "to reactivate it", t->slug);
        return refuse(why, 403, "tenant_suspended", NULL, msg);
    }
    if (t->expires_at && t->expires_at <= sx_time_now_ms()) {
        snprintf(msg, sizeof(msg), "the trial of tenant %s has expired; contact the "
                 "platform operator to upgrade", t->slug);
        return refuse(why, 403, "trial_expired", NULL, msg);
    }
    return 0;
}

static int admit_ip(const struct sx_tenant *t, const char *client_ip, struct sx_refusal *why)
{
    const struct sx_settings *s = &t->settings;
    char msg[200];

    if (s->n_ip_allowlist == 0)
        return 0;
    for (size_t i = 0; i < s->n_ip_allowlist; i++)
        if (sx_cidr_match(&s->ip_allowlist[i], client_ip))
            return 0;
    snprintf(msg, sizeof(msg), "requests from %.64s are not allowed by this tenant's IP "
             "allowlist", client_ip ? client_ip : "this address");
    return refuse(why, 403, "ip_not_allowed", NULL, msg);
}

int sx_auth_admit(const struct sx_tenant *t, const char *client_ip, struct sx_refusal *why)
{
    int rc = admit_status(t, why);

    return rc ? rc : admit_ip(t, client_ip, why);
}

/* The tenant of a tenant key; a key whose tenant is gone is refused as an
 * unknown key. */
static int own_tenant(sx_tenancy *tn, const struct sx_principal *p, struct sx_tenant **out,
                      struct sx_refusal *why)
{
    int rc = sx_tenant_get(tn, p->tenant_id, out);

    if (rc == SX_ENOTFOUND)
        return refuse(why, 401, "invalid_api_key", NULL,
                      "invalid API key: check the key you sent, or ask the platform "
                      "operator for a new one");
    if (rc)
        return refuse(why, 503, "store_unavailable", NULL,
                      "the tenant store is unavailable; retry shortly");
    return 0;
}

static int x_tenant_mismatch(struct sx_refusal *why)
{
    return refuse(why, 403, "tenant_mismatch", "X-Tenant-ID",
                  "X-Tenant-ID names a different tenant than the one this API key belongs "
                  "to; omit the header or use that tenant's key");
}

int sx_auth_request_tenant(sx_tenancy *tn, const struct sx_principal *p,
                           const char *x_tenant_id, const char *client_ip,
                           struct sx_tenant **tenant, struct sx_refusal *why)
{
    char msg[200];
    int rc;

    *tenant = NULL;
    if (p->kind == SX_KEY_TENANT) {
        rc = own_tenant(tn, p, tenant, why);
        if (rc == 0 && x_tenant_id && *x_tenant_id && !names_tenant(x_tenant_id, *tenant))
            rc = x_tenant_mismatch(why);
        if (rc == 0)
            rc = sx_auth_admit(*tenant, client_ip, why);
    } else {
        if (!x_tenant_id || !*x_tenant_id)
            return refuse(why, 400, "missing_tenant_id", "X-Tenant-ID",
                          "a platform key must name the tenant it acts for in the "
                          "X-Tenant-ID header (the tenant's id or slug)");
        rc = sx_tenant_get(tn, x_tenant_id, tenant);
        if (rc == SX_ENOTFOUND) {
            snprintf(msg, sizeof(msg), "no tenant \"%.64s\": X-Tenant-ID takes a tenant id "
                     "or slug", x_tenant_id);
            return refuse(why, 404, "tenant_not_found", "X-Tenant-ID", msg);
        }
        if (rc)
            return refuse(why, 503, "store_unavailable", NULL,
                          "the tenant store is unavailable; retry shortly");
        rc = admit_status(*tenant, why);
    }
    if (rc) {
        sx_tenant_unref(*tenant);
        *tenant = NULL;
    }
    return rc;
}

int sx_auth_path_tenant(sx_tenancy *tn, const struct sx_principal *p, const char *ref,
                        const char *x_tenant_id, bool tenant_may, const char *client_ip,
                        struct sx_tenant **tenant, struct sx_refusal *why)
{
    char msg[200];
    int rc;

    *tenant = NULL;
    snprintf(msg, sizeof(msg), "no tenant \"%.64s\" (use a tenant id or slug)",
             ref ? ref : "");
    if (p->kind == SX_KEY_PLATFORM)
        return refuse(why, 403, "permission_denied", NULL,
                      "platform keys act only on the OpenAI-compatible endpoints; "
                      "managing tenants requires the admin key");
    rc = sx_tenant_get(tn, ref, tenant);
    if (rc && rc != SX_ENOTFOUND)
        return refuse(why, 503, "store_unavailable", NULL,
                      "the tenant store is unavailable; retry shortly");
    if (p->kind == SX_KEY_ADMIN)
        return rc ? refuse(why, 404, "tenant_not_found", NULL, msg) : 0;

    /* A tenant key: another tenant looks exactly like no tenant. */
    if (rc || strcmp((*tenant)->id, p->tenant_id) != 0)
        rc = refuse(why, 404, "tenant_not_found", NULL, msg);
    else if (x_tenant_id && *x_tenant_id && !names_tenant(x_tenant_id, *tenant))
        rc = x_tenant_mismatch(why);
    else if (!tenant_may)
        rc = refuse(why, 403, "permission_denied", NULL,
                    "this endpoint requires the admin key; tenant keys may not use it");
    else
        rc = sx_auth_admit(*tenant, client_ip, why);
    if (rc) {
        sx_tenant_unref(*tenant);
        *tenant = NULL;
    }
    return rc;
}
