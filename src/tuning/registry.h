/* The adapter registry: each tenant's LoRA adapters as numbered versions
 * (v1, v2, ...), stored as files under <data_dir>/adapters/<tenant>/ with a
 * row each in the store, one of them active. Requests take a refcounted
 * handle on the active version, so activation or rollback moves new
 * requests at once while requests in flight finish on theirs. Loaded
 * adapters are cached under a memory budget with least-recently-used
 * eviction; the most used active ones are loaded at open. Loading runs on
 * the caller's thread (an HTTP worker), never on a scheduler thread. */
#ifndef SX_TUNING_REGISTRY_H
#define SX_TUNING_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "store/store.h"
#include "tenancy/tenancy.h"

typedef struct sx_registry sx_registry;
typedef struct sx_adapter_handle sx_adapter_handle;

/* The engine model serving a base model name; NULL when the name is not a
 * local model (upstream models take no adapters). */
typedef const sx_model *(*sx_registry_model_fn)(void *ctx, const char *base_model);

/* Whether a base model name is served upstream with adapters named there
 * (adapters for it are stored and versioned, not loaded). May be NULL. */
typedef bool (*sx_registry_remote_fn)(void *ctx, const char *base_model);

struct sx_registry_options {
    const char *data_dir;        /* files under <data_dir>/adapters */
    uint64_t mem_budget;         /* bytes of loaded adapters; 0: 1 GiB */
    int preload;                 /* active adapters loaded at open; -1: none,
                                    0: 16 */
    sx_registry_model_fn model_of;
    sx_registry_remote_fn remote_of;
    void *model_ctx;         /* for model_of and remote_of */
};

/* Runs the registry's migrations, registers the tenant purge hook and
 * preloads. NULL with a message in err. */
sx_registry *sx_registry_open(sx_store *store, sx_tenancy *tn,
                              const struct sx_registry_options *o, char *err,
                              size_t errlen);
void sx_registry_close(sx_registry *r); /* accepts NULL; handles must be released */

/* A version as the API shows it: {"version":"v3","number":3,"active":..,
 * "base_model","rank","alpha","size_bytes","sha256","created_at",
 * "model_id"}. */

/* Validates data (a GGUF LoRA adapter) against the base model, stores it as
 * the tenant's next version and, when activate, makes it the active one.
 * *version gets the new row (new ref). SX_EINVAL (msg says why: not an
 * adapter, wrong architecture, a tensor's shape ...), SX_ENOTFOUND (the
 * base model is not a local model), SX_EIO, SX_ESTORE, SX_ENOMEM. */
int sx_registry_upload(sx_registry *r, const struct sx_tenant *t, const char *base_model,
                       const void *data, size_t len, bool activate,
                       const struct sx_actor *who, json_t **version, char *msg,
                       size_t msglen);

/* {"data":[versions...], "active": "v3" or null}. SX_ESTORE. */
int sx_registry_list(sx_registry *r, const struct sx_tenant *t, json_t **out);

/* Makes version n the active one (rollback is activating an older one).
 * *version gets its row. SX_ENOTFOUND or SX_ESTORE. who (may be NULL) is
 * recorded in the audit log, as for uploads. */
int sx_registry_activate(sx_registry *r, const struct sx_tenant *t, int n,
                         const struct sx_actor *who, json_t **version);

/* Deletes every adapter of a tenant (rows, files, cached copies; handles
 * in use stay valid until released). Also run by the tenant purge hook. */
int sx_registry_purge(sx_registry *r, sx_db *db, const char *tenant_id);

/* The tenant's active adapter for base_model, loaded if needed: a new
 * reference in *h. SX_ENOTFOUND when the tenant has no active adapter or it
 * is for another base model; SX_EIO / SX_EINVAL when its file cannot be
 * loaded (logged); SX_ESTORE. */
int sx_tuning_active_adapter(sx_registry *r, const struct sx_tenant *t,
                             const char *base_model, sx_adapter_handle **h);
/* The same for version n (>= 1) of the tenant, active or not: a request
 * naming "<base>:<slug>-v<n>" pins that version. SX_ENOTFOUND when the
 * tenant has no such version or it is for another base model. */
int sx_tuning_adapter_version(sx_registry *r, const struct sx_tenant *t,
                              const char *base_model, int version, sx_adapter_handle **h);
/* Without loading: the active version number and base model of a tenant
 * (base_model gets up to len bytes). SX_ENOTFOUND when none. */
int sx_registry_active_version(sx_registry *r, const char *tenant_id, int *version,
                               char *base_model, size_t len);
/* The same for version n of the tenant (0: the active one): whether it
 * exists, and its base model. SX_ENOTFOUND when not. */
int sx_registry_find_version(sx_registry *r, const char *tenant_id, int n, int *version,
                             char *base_model, size_t len);

const sx_lora *sx_adapter_lora(const sx_adapter_handle *h);
int sx_adapter_version(const sx_adapter_handle *h);
const char *sx_adapter_base_model(const sx_adapter_handle *h);
void sx_adapter_release(sx_adapter_handle *h); /* accepts NULL */

/* "<base_model>:<slug>-v<version>", the model id a tenant sees. */
void sx_adapter_model_id(const char *base_model, const char *slug, int version, char *buf,
                         size_t len);

/* Loaded adapters: count and bytes (for metrics and tests). */
void sx_registry_cache_stats(sx_registry *r, int *n_loaded, uint64_t *bytes);

#endif
