/* Internal to src/tenancy/: the module's shared state and the helpers its
 * files use among themselves. Nothing outside src/tenancy/ includes this. */
#ifndef SX_TENANCY_INTERNAL_H
#define SX_TENANCY_INTERNAL_H

#include "tenancy/tenancy.h"

#include <pthread.h>

/* A string-keyed hash map owning its values through free_val. */
struct sx_strmap;
struct sx_strmap *sx_strmap_new(void (*free_val)(void *));
void sx_strmap_free(struct sx_strmap *m);
void *sx_strmap_get(const struct sx_strmap *m, const char *key);
int sx_strmap_put(struct sx_strmap *m, const char *key, void *val); /* replaces */
void sx_strmap_del(struct sx_strmap *m, const char *key);
/* Deletes every entry for which pred returns true. */
void sx_strmap_filter(struct sx_strmap *m, bool (*pred)(const char *key, void *val, void *ctx),
                      void *ctx);

struct purge_hook {
    char module[32];
    sx_tenant_purge_fn fn;
    void *ctx;
};

struct tier_info {
    int64_t rpm, tokens_per_day, requests_per_day; /* -1: unlimited */
    enum sx_rerank_tier rerank;
    bool training, ip_allowlist;
};

struct sx_tenancy {
    sx_store *store;
    uint8_t pepper[64];
    size_t pepper_len;

    /* Caches. generation counts invalidations so that a load that raced
     * with a change is not inserted (see tenants.c). */
    pthread_mutex_t lock;
    uint64_t generation;
    struct sx_strmap *tenants;      /* id -> struct sx_tenant (ref) */
    struct sx_strmap *slugs;        /* slug -> strdup(id) */
    struct sx_strmap *keys;         /* hash hex -> struct sx_key_entry */

    struct tier_info tiers[SX_TIER_COUNT];

    struct purge_hook hooks[32];
    int n_hooks;
};

/* tenancy.c */
int sx_tenancy_new_id(const char *prefix, char *out, size_t outlen);
void sx_fault_set(struct sx_fault *f, const char *code, const char *param, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));
/* Forgets cached copies of a tenant (by id) and of keys (all of a tenant
 * when tenant_id, else the one hash). */
void sx_tenancy_forget_tenant(sx_tenancy *tn, const char *tenant_id);
void sx_tenancy_forget_key(sx_tenancy *tn, const char *hash_hex);
void sx_tenancy_forget_tenant_keys(sx_tenancy *tn, const char *tenant_id);

/* keys.c */
int sx_key_hash(const sx_tenancy *tn, const char *presented, char hex[65]);
/* Inserts a new key inside the caller's transaction; fills key (the
 * secret) and id. */
int sx_key_insert(sx_tenancy *tn, sx_db *db, enum sx_key_kind kind,
                  const struct sx_tenant *tenant, const char *name, const char *created_by,
                  int64_t now, char key[SX_API_KEY_MAX], char id[SX_KEY_ID_MAX]);
int sx_key_bootstrap_admin(sx_tenancy *tn, const char *admin_key,
                           char new_admin_key[SX_API_KEY_MAX], char *err, size_t errlen);

/* tiers.c */
void sx_tiers_init(struct tier_info tiers[SX_TIER_COUNT]);

/* tenants.c */
extern const struct sx_migration sx_tenancy_migrations[];
extern const size_t sx_tenancy_n_migrations;

#endif
