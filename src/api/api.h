/* Internal to src/api/: the application struct and the helpers every
 * handler uses to authenticate, resolve the tenant and turn domain errors
 * into OpenAI-shaped HTTP errors. Each helper that refuses a request has
 * already replied when it returns non-zero; the handler just returns. */
#ifndef SX_API_API_H
#define SX_API_API_H

#include <stdbool.h>

#include "api/app.h"
#include "http/http.h"
#include "metering/metering.h"
#include "store/store.h"
#include "tenancy/tenancy.h"

struct sx_app {
    sx_store *store;
    sx_tenancy *tenancy;
    sx_meter *meter; /* rate limits, quotas, usage ledger */
    struct sx_serving *serving; /* model catalogue, completions (api/serving.h) */
    struct sx_registry *adapters; /* tenants' LoRA adapters (tuning/registry.h) */
    struct sx_rag *rag; /* datasets, documents, retrieval (rag/rag.h) */
};

/* Authenticates the request's key into p. */
int sx_api_principal(struct sx_app *app, sx_http_req *r, struct sx_principal *p);
/* Authenticates and requires the admin key (403 for other keys). */
int sx_api_require_admin(struct sx_app *app, sx_http_req *r, struct sx_principal *p);
/* Authenticates and resolves the {t} path parameter; see
 * sx_auth_path_tenant for who may reach what. *t is a new reference. */
int sx_api_path_tenant(struct sx_app *app, sx_http_req *r, bool tenant_may,
                       struct sx_principal *p, struct sx_tenant **t);
/* Authenticates and resolves the tenant an OpenAI-style request acts for
 * (tenant key, or platform/admin key + X-Tenant-ID). */
int sx_api_request_tenant(struct sx_app *app, sx_http_req *r, struct sx_principal *p,
                          struct sx_tenant **t);

/* The audit actor of a request (pointers into p and r). */
void sx_api_actor(sx_http_req *r, const struct sx_principal *p, struct sx_actor *a);

/* Replies for a domain error code: SX_EINVAL 400 and SX_EEXIST 409 with the
 * fault; SX_ENOTFOUND 404 with not_found_msg; SX_EBUSY 503; others 500. */
void sx_api_reply_rc(sx_http_req *r, int rc, const struct sx_fault *f,
                     const char *not_found_msg);

/* The body as a JSON object, or NULL for an empty body (*failed = false).
 * A malformed body has been answered with 400 (*failed = true). */
json_t *sx_api_optional_body(sx_http_req *r, bool *failed);

/* Replies 400 naming the first key of body not in allowed (NULL-ended);
 * hint says what is accepted. */
int sx_api_only_fields(sx_http_req *r, const json_t *body, const char *const *allowed,
                       const char *hint);

/* Reads ?limit= (1..100, default dflt) into *limit. */
int sx_api_query_limit(sx_http_req *r, int dflt, int *limit);

/* Route tables of each resource file. */
int sx_api_tenants_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_settings_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_keys_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_admin_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_usage_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_datasets_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_adapters_routes(struct sx_app *app, sx_http_server *srv);

/* Opens the adapter registry over the serving catalogue's local models
 * (api/adapters.c). NULL with err. */
struct sx_config;
struct sx_registry *sx_api_adapters_open(struct sx_app *app, const struct sx_config *cfg,
                                         char *err, size_t errlen);

#endif
