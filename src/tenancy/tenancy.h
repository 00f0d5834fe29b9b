/* The tenancy module: tenants, tiers, settings, API keys, principals and the
 * audit log. Other modules ask it who a request belongs to
 * (sx_auth_*), what a tenant may do (sx_tenant_limits) and register
 * purge hooks so that deleting a tenant removes their rows too.
 *
 * Ownership: a struct sx_tenant is an immutable, reference-counted
 * snapshot; every function that hands one out (out parameters named
 * "tenant") gives the caller a reference that sx_tenant_unref() drops.
 * Changes build a new snapshot, so holders never see a half-applied update.
 *
 * Errors are SX_E* codes. Functions that validate client input also fill a
 * struct sx_fault: the offending field ("param"), a machine code and a
 * message for the client that says what was wrong and how to fix it. */
#ifndef SX_TENANCY_TENANCY_H
#define SX_TENANCY_TENANCY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct sx_tenancy sx_tenancy;

#define SX_TENANT_ID_MAX 40  /* "tenant_" + 16 base62, with room */
#define SX_SLUG_MIN 3
#define SX_SLUG_MAX 64
#define SX_KEY_ID_MAX 32     /* "key_" + 16 base62 */
#define SX_API_KEY_MAX 160   /* longest secret we hand out, with NUL */
#define SX_KEY_PREFIX_MAX 80

enum sx_tier {
    SX_TIER_FREE,
    SX_TIER_PRO,
    SX_TIER_BUSINESS,
    SX_TIER_ENTERPRISE,
    SX_TIER_TRIAL,
    SX_TIER_COUNT
};

enum sx_rerank_tier { SX_RERANK_CLASSIC, SX_RERANK_QUANTUM_CPU, SX_RERANK_QUANTUM_GPU };

enum sx_tenant_status { SX_TENANT_ACTIVE, SX_TENANT_SUSPENDED };

enum sx_key_kind { SX_KEY_ADMIN, SX_KEY_PLATFORM, SX_KEY_TENANT };

/* What was wrong with client input. code and param point to static
 * strings (param may be NULL). */
struct sx_fault {
    const char *code;
    char param[96];
    char message[320];
};

/* Who performs a change, for the audit log. */
struct sx_actor {
    const char *key_id;     /* NULL for the system itself */
    const char *kind;       /* "admin", "platform", "tenant", "system" */
    const char *request_id; /* may be NULL */
    const char *client_ip;  /* may be NULL */
};

/* ---- names --------------------------------------------------------------- */

const char *sx_tier_name(enum sx_tier t);
int sx_tier_parse(const char *s, enum sx_tier *out);          /* 0 or SX_EINVAL */
const char *sx_rerank_tier_name(enum sx_rerank_tier t);
int sx_rerank_tier_parse(const char *s, enum sx_rerank_tier *out);
const char *sx_key_kind_name(enum sx_key_kind k);

/* ---- CIDR ---------------------------------------------------------------- */

struct sx_cidr {
    uint8_t addr[16]; /* IPv4 uses the first 4 bytes */
    int bits;
    bool v6;
};

/* Parses "10.0.0.0/8", "2001:db8::/32" or a bare address (/32, /128).
 * Host bits must be zero. 0 or SX_EINVAL with a reason in why. */
int sx_cidr_parse(const char *s, struct sx_cidr *out, char *why, size_t whylen);
/* 1 if ip (textual IPv4, IPv6 or IPv4-mapped IPv6) lies inside c. */
int sx_cidr_match(const struct sx_cidr *c, const char *ip);

/* ---- settings ------------------------------------------------------------ */

#define SX_SETTINGS_PROMPT_MAX 8192
#define SX_SETTINGS_TOPICS_MAX 64
#define SX_SETTINGS_TOPIC_LEN 100
#define SX_SETTINGS_ALLOWLIST_MAX 64

/* A tenant's settings with defaults filled in. */
struct sx_settings {
    char *default_model;
    int64_t max_tokens_per_request;
    double default_temperature;
    bool enable_rerank;
    enum sx_rerank_tier rerank_tier;
    int rerank_k;
    char *custom_system_prompt; /* NULL: none */
    char **allowed_topics;
    size_t n_allowed_topics;
    char **blocked_topics;
    size_t n_blocked_topics;
    bool enable_rag;
    int rag_top_k;
    double rag_threshold;
    int64_t rate_limit_rpm;    /* 0: the tier's default */
    int64_t daily_token_limit; /* -1: the tier's default */
    int enable_training;       /* -1: the tier's default, else 0/1 */
    struct sx_cidr *ip_allowlist;
    size_t n_ip_allowlist;
};

/* Checks a settings object (create or PATCH): every key known, every value
 * of the right type and range; null resets a field to its default.
 * 0 or SX_EINVAL with the fault filled. */
int sx_settings_check(const json_t *patch, struct sx_fault *f);
/* The stored object after applying patch (null removes a key). New ref. */
json_t *sx_settings_merge(const json_t *stored, const json_t *patch);
/* Typed settings from a stored (checked) object; 0 or SX_EINVAL/SX_ENOMEM.
 * sx_settings_clear() frees what it allocated. */
int sx_settings_parse(const json_t *stored, struct sx_settings *out);
void sx_settings_clear(struct sx_settings *s);
/* Every field, defaults included, as the API shows them. New ref. */
json_t *sx_settings_to_json(const json_t *stored, const struct sx_settings *s);

/* ---- tenants ------------------------------------------------------------- */

struct sx_tenant {
    char id[SX_TENANT_ID_MAX];
    char slug[SX_SLUG_MAX + 1];
    char *name;
    char *contact_email; /* NULL if none */
    enum sx_tier tier;
    enum sx_tenant_status status;
    int64_t created_at, updated_at; /* ms since the epoch */
    int64_t expires_at;             /* ms; 0: never (trial tenants expire) */
    json_t *settings_stored;        /* the fields an admin set */
    struct sx_settings settings;    /* with defaults */
    int refs;                       /* atomic */
};

void sx_tenant_unref(struct sx_tenant *t); /* accepts NULL */

/* 0 if s is a valid new slug: 3..64 of [a-z0-9_-], starting with a letter
 * or digit, not reserved. Else SX_EINVAL with the fault filled. */
int sx_tenant_slug_check(const char *s, struct sx_fault *f);

/* Looks a tenant up by id or slug (cached). 0 or SX_ENOTFOUND/SX_ESTORE. */
int sx_tenant_get(sx_tenancy *tn, const char *ref, struct sx_tenant **tenant);

/* Creates a tenant from the API body {name, slug, tier, contact_email,
 * settings} and its first key, in one durable transaction with its audit
 * entry. expires_at (ms, 0 none) is for trial tenants. The key is written
 * to api_key and its id to key_id. SX_EINVAL (fault), SX_EEXIST (slug
 * taken), SX_ESTORE. */
int sx_tenant_create(sx_tenancy *tn, const json_t *body, int64_t expires_at,
                     const struct sx_actor *who, struct sx_tenant **tenant,
                     char api_key[SX_API_KEY_MAX], char key_id[SX_KEY_ID_MAX],
                     struct sx_fault *f);

/* Applies a PATCH body {tier, name, contact_email, status, settings}
 * (settings merged). SX_EINVAL (fault), SX_ENOTFOUND, SX_ESTORE. */
int sx_tenant_update(sx_tenancy *tn, const char *ref, const json_t *body,
                     const struct sx_actor *who, struct sx_tenant **tenant,
                     struct sx_fault *f);

/* Merges a settings PATCH. Same errors as sx_tenant_update. */
int sx_tenant_settings_update(sx_tenancy *tn, const char *ref, const json_t *patch,
                              const struct sx_actor *who, struct sx_tenant **tenant,
                              struct sx_fault *f);

/* Deletes a tenant, its keys (refused from the next request on) and, through
 * the purge hooks, every module's rows, in one transaction. id_out gets the
 * deleted id. SX_ENOTFOUND or SX_ESTORE. */
int sx_tenant_delete(sx_tenancy *tn, const char *ref, const struct sx_actor *who,
                     char id_out[SX_TENANT_ID_MAX]);

/* One page of tenants in creation order. tier may be NULL (all); after is
 * the next_cursor of the previous page or NULL. *page is a new JSON array
 * of tenant objects; next_cursor gets the cursor when *has_more.
 * SX_EINVAL (bad cursor, fault filled) or SX_ESTORE. */
int sx_tenant_list(sx_tenancy *tn, const enum sx_tier *tier, int limit, const char *after,
                   json_t **page, bool *has_more, char next_cursor[96], struct sx_fault *f);

/* The API representation of a tenant. New ref. */
json_t *sx_tenant_to_json(sx_tenancy *tn, const struct sx_tenant *t);

/* Registers fn to delete module rows of a tenant inside the deletion
 * transaction (db is in that transaction). A non-zero return aborts the
 * deletion. Call before serving; up to 32 hooks. 0 or SX_ELIMIT. */
typedef int (*sx_tenant_purge_fn)(sx_db *db, const char *tenant_id, void *ctx);
int sx_tenancy_on_purge(sx_tenancy *tn, const char *module, sx_tenant_purge_fn fn,
                        void *ctx);

/* ---- tiers and effective limits ----------------------------------------- */

/* What a tenant may use: its tier's defaults raised by what an admin set in
 * its settings. Metering, rerank, rag and tuning read this. */
struct sx_tenant_limits {
    int64_t requests_per_minute;    /* > 0 */
    int64_t tokens_per_day;         /* -1: unlimited */
    int64_t requests_per_day;       /* -1: unlimited (trial tenants have one) */
    int64_t max_tokens_per_request; /* per request cap */
    enum sx_rerank_tier max_rerank_tier; /* best rerank tier allowed */
    bool training;                  /* may train LoRA adapters */
    bool ip_allowlist;              /* an allowlist is in force */
};

void sx_tenant_limits(sx_tenancy *tn, const struct sx_tenant *t, struct sx_tenant_limits *out);
/* Same as JSON: {"requests_per_minute", "tokens_per_day" (null=unlimited),
 * ...}. New ref. */
json_t *sx_tenant_limits_to_json(const struct sx_tenant_limits *l);

/* The trial tier's defaults come from the trial configuration (a later
 * module); until it calls this, trial tenants get 20 requests/min, 100
 * requests/day, 10,000 tokens/day, classic rerank, no training. */
void sx_tenancy_set_trial_limits(sx_tenancy *tn, int64_t requests_per_day,
                                 int64_t tokens_per_day, enum sx_rerank_tier rerank,
                                 bool training);

/* ---- keys ---------------------------------------------------------------- */

struct sx_key_entry {
    char id[SX_KEY_ID_MAX];
    enum sx_key_kind kind;
    char tenant_id[SX_TENANT_ID_MAX]; /* "" unless a tenant key */
    int64_t expires_at;               /* ms; 0: never */
};

/* Finds the key a client presented (the whole "sk-..." string).
 * 0, SX_EAUTH (unknown, revoked or expired: code says which) or SX_ESTORE. */
int sx_key_lookup(sx_tenancy *tn, const char *presented, struct sx_key_entry *out,
                  const char **code);

/* Creates a key. tenant (tenant keys only) is a snapshot from
 * sx_tenant_get. name may be NULL. On success *out is the new key's JSON
 * object (with "api_key", shown once). SX_EINVAL (fault), SX_ESTORE. */
int sx_key_create(sx_tenancy *tn, enum sx_key_kind kind, const struct sx_tenant *tenant,
                  const char *name, const struct sx_actor *who, json_t **out,
                  struct sx_fault *f);

/* Lists keys of one kind (and tenant): prefixes only, never secrets.
 * *out is a new JSON array. 0 or SX_ESTORE. */
int sx_key_list(sx_tenancy *tn, enum sx_key_kind kind, const char *tenant_id, json_t **out);

/* Revokes a key of kind (and tenant_id for tenant keys): refused from the
 * next request on. 0, SX_ENOTFOUND or SX_ESTORE. */
int sx_key_revoke(sx_tenancy *tn, enum sx_key_kind kind, const char *tenant_id,
                  const char *key_id, const struct sx_actor *who);

/* Issues a replacement for a tenant key; the old one keeps working for
 * overlap_s seconds (0: stops at once). *out as for sx_key_create plus
 * "rotated_from" and "previous_key_expires_at". SX_ENOTFOUND, SX_EINVAL
 * (key revoked or expired; fault filled), SX_ESTORE. */
int sx_key_rotate(sx_tenancy *tn, const struct sx_tenant *tenant, const char *key_id,
                  int64_t overlap_s, const struct sx_actor *who, json_t **out,
                  struct sx_fault *f);

/* ---- principals (authentication and tenant routing) ---------------------- */

struct sx_principal {
    enum sx_key_kind kind;
    char key_id[SX_KEY_ID_MAX];
    char tenant_id[SX_TENANT_ID_MAX]; /* tenant keys only */
};

/* Every refusal carries the HTTP status the API answers with. */
struct sx_refusal {
    int status; /* 400, 401, 403, 404, 500, 503 */
    struct sx_fault fault;
};

/* Authenticates an Authorization header value ("Bearer sk-..."). 0 or
 * negative with *why filled (401: missing, malformed, unknown, revoked,
 * expired). */
int sx_auth_principal(sx_tenancy *tn, const char *authorization, struct sx_principal *p,
                      struct sx_refusal *why);

/* The tenant a request on an OpenAI-style endpoint acts for: a tenant key's
 * own tenant (an X-Tenant-ID naming another is 403), or the tenant named by
 * X-Tenant-ID for platform and admin keys (missing: 400, unknown: 404).
 * Then sx_auth_admit(). */
int sx_auth_request_tenant(sx_tenancy *tn, const struct sx_principal *p,
                           const char *x_tenant_id, const char *client_ip,
                           struct sx_tenant **tenant, struct sx_refusal *why);

/* The tenant of a /v1/tenants/{t}/... path. Admin keys reach every tenant
 * (unknown: 404). A tenant key reaches only its own tenant (another one is
 * 404, never revealing that it exists), and only when tenant_may is true
 * (else 403). Platform keys are 403. Then sx_auth_admit() for tenant
 * keys. */
int sx_auth_path_tenant(sx_tenancy *tn, const struct sx_principal *p, const char *ref,
                        const char *x_tenant_id, bool tenant_may, const char *client_ip,
                        struct sx_tenant **tenant, struct sx_refusal *why);

/* Whether a tenant may be served now: suspended or expired tenants are 403;
 * with an IP allowlist, other client addresses are 403. */
int sx_auth_admit(const struct sx_tenant *t, const char *client_ip, struct sx_refusal *why);

/* ---- audit log ----------------------------------------------------------- */

/* Records an admin action inside the caller's transaction. fields is a JSON
 * array of the names of the fields changed (never values), may be NULL. */
int sx_audit_record(sx_db *db, const struct sx_actor *who, const char *action,
                    const char *target_type, const char *target_id, const char *tenant_id,
                    const json_t *fields);

struct sx_audit_filter {
    const char *action;    /* exact, or NULL */
    const char *tenant_id; /* or NULL */
    int64_t since, until;  /* ms, inclusive/exclusive; 0: open */
    int limit;             /* 1..100 */
    const char *after;     /* cursor or NULL */
};

/* Newest first. *page is a new JSON array; next_cursor set when *has_more.
 * SX_EINVAL (bad cursor) or SX_ESTORE. */
int sx_audit_list(sx_tenancy *tn, const struct sx_audit_filter *flt, json_t **page,
                  bool *has_more, char next_cursor[96]);

/* ---- the module ---------------------------------------------------------- */

struct sx_tenancy_options {
    const char *data_dir;   /* where the pepper file lives */
    const char *pepper;     /* SYNAPSEX_KEY_PEPPER or NULL */
    const char *admin_key;  /* SYNAPSEX_ADMIN_KEY or NULL */
};

/* Applies the module's migrations, loads the key pepper and makes sure an
 * admin key exists: options->admin_key when given (only its keyed hash is
 * stored), else on first start a new one written to new_admin_key (the
 * caller shows it once); new_admin_key is "" otherwise. NULL with err on
 * failure. */
sx_tenancy *sx_tenancy_open(sx_store *store, const struct sx_tenancy_options *o,
                            char new_admin_key[SX_API_KEY_MAX], char *err, size_t errlen);
void sx_tenancy_close(sx_tenancy *tn); /* accepts NULL */

sx_store *sx_tenancy_store(sx_tenancy *tn);

#endif
