/* Tenants: the tenancy schema (migrations), slug and field validation, the
 * snapshot cache, and create / read / update / delete / list. Every change
 * is one durable transaction that also writes its audit entry; the cache
 * is invalidated after the commit, so the next request sees the change.
 *
 * Cache coherence: a reader that misses loads the row without holding the
 * lock. If a writer invalidated anything meanwhile (the generation moved)
 * the loaded copy might be stale and is returned but not cached. */
#include "tenancy/internal.h"

#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schema ------------------------------------------------------------- */

static const char *const schema_v1 =
    "CREATE TABLE tenants ("
    " id TEXT PRIMARY KEY,"
    " slug TEXT NOT NULL UNIQUE,"
    " name TEXT NOT NULL,"
    " tier TEXT NOT NULL,"
    " contact_email TEXT,"
    " status TEXT NOT NULL,"
    " settings TEXT NOT NULL,"       /* JSON object: the fields an admin set */
    " created_at BIGINT NOT NULL,"   /* ms since the epoch, like every time */
    " updated_at BIGINT NOT NULL,"
    " expires_at BIGINT);"
    "CREATE INDEX tenants_by_created ON tenants (created_at, id);"
    "CREATE INDEX tenants_by_tier ON tenants (tier, created_at, id);"
    "CREATE TABLE api_keys ("
    " id TEXT PRIMARY KEY,"
    " kind TEXT NOT NULL,"           /* admin | platform | tenant */
    " tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,"
    " name TEXT,"
    " prefix TEXT NOT NULL,"         /* shown in lists; never enough to use */
    " hash TEXT NOT NULL UNIQUE,"    /* hex HMAC-SHA256(pepper, key) */
    " created_at BIGINT NOT NULL,"
    " created_by TEXT,"
    " expires_at BIGINT,"
    " revoked_at BIGINT,"
    " rotated_from TEXT);"
    "CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);"
    "CREATE TABLE audit_log ("
    " id TEXT PRIMARY KEY,"
    " created_at BIGINT NOT NULL,"
    " actor_key_id TEXT,"
    " actor_kind TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " target_type TEXT,"
    " target_id TEXT,"
    " tenant_id TEXT,"               /* kept after the tenant is deleted */
    " fields TEXT NOT NULL,"         /* JSON array of changed field names */
    " request_id TEXT,"
    " client_ip TEXT);"
    "CREATE INDEX audit_by_created ON audit_log (created_at, id);"
    "CREATE INDEX audit_by_tenant ON audit_log (tenant_id, created_at, id);"
    "CREATE INDEX audit_by_action ON audit_log (action, created_at, id);";

const struct sx_migration sx_tenancy_migrations[] = {
    {1, "tenants, api_keys, audit_log", schema_v1},
};
const size_t sx_tenancy_n_migrations =
    sizeof(sx_tenancy_migrations) / sizeof(sx_tenancy_migrations[0]);

#define TENANT_COLUMNS                                                                     \
    "id, slug, name, tier, contact_email, status, settings, created_at, updated_at, "      \
    "expires_at"

/* ---- snapshots ---------------------------------------------------------- */

void sx_tenant_unref(struct sx_tenant *t)
{
    if (!t || atomic_fetch_sub_explicit((_Atomic int *)&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(t->name);
    free(t->contact_email);
    json_decref(t->settings_stored);
    sx_settings_clear(&t->settings);
    free(t);
}

static struct sx_tenant *tenant_ref(struct sx_tenant *t)
{
    atomic_fetch_add_explicit((_Atomic int *)&t->refs, 1, memory_order_relaxed);
    return t;
}

/* Builds a snapshot from a row of TENANT_COLUMNS; NULL if the row is bad. */
static struct sx_tenant *tenant_from_row(sx_stmt *st)
{
    struct sx_tenant *t = calloc(1, sizeof(*t));
    const char *email = sx_stmt_text(st, 4);
    json_error_t jerr;

    if (!t)
        return NULL;
    t->refs = 1;
    snprintf(t->id, sizeof(t->id), "%s", sx_stmt_text(st, 0));
    snprintf(t->slug, sizeof(t->slug), "%s", sx_stmt_text(st, 1));
    t->name = strdup(sx_stmt_text(st, 2));
    t->contact_email = email ? strdup(email) : NULL;
    if (sx_tier_parse(sx_stmt_text(st, 3), &t->tier) != 0)
        t->tier = SX_TIER_FREE;
    t->status = strcmp(sx_stmt_text(st, 5), "suspended") == 0 ? SX_TENANT_SUSPENDED
                                                                : SX_TENANT_ACTIVE;
    t->settings_stored = json_loads(sx_stmt_text(st, 6), 0, &jerr);
    t->created_at = sx_stmt_int(st, 7);
    t->updated_at = sx_stmt_int(st, 8);
    t->expires_at = sx_stmt_is_null(st, 9) ? 0 : sx_stmt_int(st, 9);
    if (!t->name || (email && !t->contact_email) || !json_is_object(t->settings_stored) ||
        sx_settings_parse(t->settings_stored, &t->settings) != 0) {
        SX_ERROR("tenancy", "tenant %s: unreadable row (settings or memory)", t->id);
        t->refs = 1;
        sx_tenant_unref(t);
        return NULL;
    }
    return t;
}

/* Reads one tenant by id or slug on db. 0, SX_ENOTFOUND or SX_ESTORE. */
static int load_tenant(sx_db *db, const char *ref, struct sx_tenant **out)
{
    sx_stmt *st = sx_db_query(db, "SELECT " TENANT_COLUMNS " FROM tenants"
                                  " WHERE id = $1 OR slug = $1", "t", ref);
    int rc;

    *out = NULL;
    if (!st)
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    if (rc == SX_STORE_ROW) {
        *out = tenant_from_row(st);
        rc = *out ? 0 : SX_ESTORE;
    } else if (rc == SX_STORE_DONE) {
        rc = SX_ENOTFOUND;
    }
    sx_stmt_done(st);
    return rc;
}

int sx_tenant_get(sx_tenancy *tn, const char *ref, struct sx_tenant **tenant)
{
    struct sx_tenant *t;
    const char *id;
    uint64_t gen;
    sx_db *db;
    int rc;

    *tenant = NULL;
    if (!ref || !*ref || strlen(ref) > 128)
        return SX_ENOTFOUND;

    pthread_mutex_lock(&tn->lock);
    t = sx_strmap_get(tn->tenants, ref);
    if (!t && (id = sx_strmap_get(tn->slugs, ref)))
        t = sx_strmap_get(tn->tenants, id);
    if (t)
        *tenant = tenant_ref(t);
    gen = tn->generation;
    pthread_mutex_unlock(&tn->lock);
    if (*tenant)
        return 0;

    db = sx_store_acquire(tn->store);
    if (!db)
        return SX_ESTORE;
    rc = load_tenant(db, ref, &t);
    sx_store_release(tn->store, db);
    if (rc)
        return rc;

    pthread_mutex_lock(&tn->lock);
    if (gen == tn->generation) {
        char *id_copy = strdup(t->id);

        if (id_copy && sx_strmap_put(tn->tenants, t->id, tenant_ref(t)) == 0) {
            if (sx_strmap_put(tn->slugs, t->slug, id_copy) != 0)
                free(id_copy);
        } else {
            free(id_copy);
            if (id_copy)
                sx_tenant_unref(t); /* the put failed: drop the map's reference */
        }
    }
    pthread_mutex_unlock(&tn->lock);
    *tenant = t;
    return 0;
}

/* ---- validation --------------------------------------------------------- */

int sx_tenant_slug_check(const char *s, struct sx_fault *f)
{
    static const char *const reserved[] = {"admin", "platform", "trial", "public", "system"};
    size_t len = s ? strlen(s) : 0;

    if (len < SX_SLUG_MIN || len > SX_SLUG_MAX) {
        sx_fault_set(f, "invalid_slug", "slug", "slug must be %d to %d characters long; "
                     "it has %zu", SX_SLUG_MIN, SX_SLUG_MAX, len);
        return SX_EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
            sx_fault_set(f, "invalid_slug", "slug", "slug may contain only lowercase "
                         "letters, digits, '_' and '-' (character %zu is not one)", i + 1);
            return SX_EINVAL;
        }
    }
    if (s[0] == '_' || s[0] == '-') {
        sx_fault_set(f, "invalid_slug", "slug", "slug must start with a letter or digit");
        return SX_EINVAL;
    }
    /* Ids look like "tenant_..." or "trial_..."; a slug must never be one. */
    if (strncmp(s, "tenant_", 7) == 0 || strncmp(s, "trial_", 6) == 0) {
        sx_fault_set(f, "invalid_slug", "slug", "slug must not start with \"tenant_\" or "
                     "\"trial_\" (reserved for tenant ids)");
        return SX_EINVAL;
    }
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcmp(s, reserved[i]) == 0) {
            sx_fault_set(f, "invalid_slug", "slug", "slug \"%s\" is reserved; choose another",
                         s);
            return SX_EINVAL;
        }
    return 0;
}

static int check_name(const json_t *v, struct sx_fault *f)
{
    const char *s = json_string_value(v);
    size_t len = s ? json_string_length(v) : 0;

    if (!json_is_string(v) || len == 0 || len > 200 || strlen(s) != len) {
        sx_fault_set(f, "invalid_value", "name", "name must be a non-empty string of at "
                     "most 200 bytes");
        return SX_EINVAL;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            sx_fault_set(f, "invalid_value", "name", "name must not contain control "
                         "characters");
            return SX_EINVAL;
        }
    return 0;
}

/* A pragmatic address check: one '@', a non-empty local part, a dotted
 * domain of letters, digits, '-' and '.', no spaces; 254 bytes at most. */
static int check_email(const json_t *v, struct sx_fault *f)
{
    const char *s = json_string_value(v), *at, *dot;
    size_t len = s ? strlen(s) : 0;
    bool ok = json_is_string(v) && len >= 3 && len <= 254;

    if (ok) {
        at = strchr(s, '@');
        ok = at && at != s && !strchr(at + 1, '@') && at[1];
        for (const char *p = s; ok && p < at; p++)
            ok = (unsigned char)*p > 0x20 && *p != 0x7f && !strchr("()<>,;:\\\"[]", *p);
        dot = ok ? strrchr(at, '.') : NULL;
        ok = ok && dot && dot > at + 1 && dot[1] && at[1] != '.';
        for (const char *p = at + 1; ok && *p; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                 (*p >= '0' && *p <= '9') || *p == '-' || (*p == '.' && p[1] != '.');
    }
    if (!ok) {
        sx_fault_set(f, "invalid_value", "contact_email", "contact_email must be an email "
                     "address such as admin@example.com (or null)");
        return SX_EINVAL;
    }
    return 0;
}

static int check_tier(const json_t *v, enum sx_tier *out, struct sx_fault *f)
{
    if (!json_is_string(v) || sx_tier_parse(json_string_value(v), out) != 0) {
        sx_fault_set(f, "invalid_value", "tier", "tier must be one of \"free\", \"pro\", "
                     "\"business\", \"enterprise\" or \"trial\"");
        return SX_EINVAL;
    }
    return 0;
}

/* Settings inside a tenant body: the fault names "settings.<field>". */
static int check_nested_settings(const json_t *v, struct sx_fault *f)
{
    char param[sizeof(f->param)];

    if (sx_settings_check(v, f) == 0)
        return 0;
    if (strcmp(f->param, "settings") != 0) {
        snprintf(param, sizeof(param), "settings.%.80s", f->param);
        snprintf(f->param, sizeof(f->param), "%s", param);
    }
    return SX_EINVAL;
}

static int check_keys(const json_t *body, const char *const *allowed, const char *what,
                      struct sx_fault *f)
{
    const char *key = sx_json_unknown_key(body, allowed);

    if (!key)
        return 0;
    if (strcmp(key, "slug") == 0)
        sx_fault_set(f, "immutable_field", "slug", "slug cannot be changed; create a "
                     "new tenant to use another slug");
    else
        sx_fault_set(f, "unknown_field", key, "unknown field \"%.60s\"; %s", key, what);
    return SX_EINVAL;
}

/* Lists the names of the fields in body for the audit log; settings fields
 * appear as "settings.<name>". */
static json_t *field_names(const json_t *body)
{
    json_t *names = json_array(), *v;
    const char *key;

    json_object_foreach((json_t *)body, key, v) {
        if (strcmp(key, "settings") == 0 && json_is_object(v)) {
            const char *sk;
            json_t *sv;
            char buf[96];

            json_object_foreach(v, sk, sv) {
                snprintf(buf, sizeof(buf), "settings.%s", sk);
                json_array_append_new(names, json_string(buf));
            }
        } else {
            json_array_append_new(names, json_string(key));
        }
    }
    return names;
}

/* ---- create ------------------------------------------------------------- */

int sx_tenant_create(sx_tenancy *tn, const json_t *body, int64_t expires_at,
                     const struct sx_actor *who, struct sx_tenant **tenant,
                     char api_key[SX_API_KEY_MAX], char key_id[SX_KEY_ID_MAX],
                     struct sx_fault *f)
{
    static const char *const allowed[] = {"name", "slug", "tier", "contact_email",
                                          "settings", NULL};
    json_t *settings = json_object_get(body, "settings"), *email, *fields = NULL;
    struct sx_tenant shell = {0};
    enum sx_tier tier = SX_TIER_FREE;
    char id[SX_TENANT_ID_MAX], *settings_text = NULL;
    const char *slug;
    int64_t now = sx_time_now_ms();
    sx_db *db = NULL;
    int64_t n;
    int rc;

    *tenant = NULL;

    /* 1. Validate the body; nothing is written before it all passes. */
    if (check_keys(body, allowed, "a tenant has name, slug, tier, contact_email and "
                   "settings", f))
        return SX_EINVAL;
    if (!json_object_get(body, "name")) {
        sx_fault_set(f, "missing_field", "name", "name is required");
        return SX_EINVAL;
    }
    if (check_name(json_object_get(body, "name"), f))
        return SX_EINVAL;
    slug = json_string_value(json_object_get(body, "slug"));
    if (!json_object_get(body, "slug")) {
        sx_fault_set(f, "missing_field", "slug", "slug is required (3-64 characters of "
                     "a-z, 0-9, '_' and '-')");
        return SX_EINVAL;
    }
    if (!slug) {
        sx_fault_set(f, "invalid_type", "slug", "slug must be a string");
        return SX_EINVAL;
    }
    if (sx_tenant_slug_check(slug, f))
        return SX_EINVAL;
    if (json_object_get(body, "tier") && check_tier(json_object_get(body, "tier"), &tier, f))
        return SX_EINVAL;
    email = json_object_get(body, "contact_email");
    if (email && !json_is_null(email) && check_email(email, f))
        return SX_EINVAL;
    if (settings && !json_is_null(settings)) {
        if (check_nested_settings(settings, f))
            return SX_EINVAL;
        settings = sx_settings_merge(NULL, settings);
    } else {
        settings = json_object();
    }
    settings_text = settings ? json_dumps(settings, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(settings);
    fields = field_names(body);
    if (!settings_text || !fields) {
        rc = SX_ENOMEM;
        goto out;
    }

    /* 2. One transaction: the tenant, its first key, the audit entry. */
    rc = sx_tenancy_new_id(tier == SX_TIER_TRIAL ? "trial_" : "tenant_", id, sizeof(id));
    if (rc)
        goto out;
    db = sx_store_acquire(tn->store);
    if (!db) {
        rc = SX_ESTORE;
        goto out;
    }
    rc = sx_db_begin(db);
    if (rc)
        goto out;
    n = sx_db_run(db, "INSERT INTO tenants (" TENANT_COLUMNS ")"
                      " VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $7, $8)",
                  expires_at > 0 ? "ttttttii" : "ttttttin", id, slug,
                  json_string_value(json_object_get(body, "name")), sx_tier_name(tier),
                  json_string_value(email), settings_text, now, expires_at);
    if (n == SX_EEXIST) {
        sx_fault_set(f, "slug_taken", "slug", "a tenant with slug \"%s\" already exists; "
                     "choose another slug", slug);
        rc = SX_EEXIST;
        goto out;
    }
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    snprintf(shell.id, sizeof(shell.id), "%s", id);
    snprintf(shell.slug, sizeof(shell.slug), "%s", slug);
    shell.tier = tier;
    rc = sx_key_insert(tn, db, SX_KEY_TENANT, &shell, "default", who ? who->key_id : NULL, now,
                       api_key, key_id);
    if (rc)
        goto out;
    rc = sx_audit_record(db, who, "tenant.create", "tenant", id, id, fields);
    if (rc)
        goto out;
    rc = sx_db_commit(db);
    if (rc)
        goto out;
    SX_INFO("tenancy", "created tenant %s (tier %s)", id, sx_tier_name(tier));

    /* 3. Read it back through the cache like any later request would. */
    sx_store_release(tn->store, db);
    db = NULL;
    rc = sx_tenant_get(tn, id, tenant);

out:
    if (db) {
        sx_db_rollback(db);
        sx_store_release(tn->store, db);
    }
    if (rc)
        api_key[0] = key_id[0] = 0;
    free(settings_text);
    json_decref(fields);
    return rc;
}

/* ---- update ------------------------------------------------------------- */

/* Applies the validated changes of body (tenant fields) to ref in one
 * transaction. action names the audit entry. */
static int apply_update(sx_tenancy *tn, const char *ref, const json_t *body,
                        const char *action, const struct sx_actor *who,
                        struct sx_tenant **tenant)
{
    struct sx_tenant *cur = NULL;
    json_t *v, *merged = NULL, *fields = field_names(body);
    char *settings_text = NULL, id[SX_TENANT_ID_MAX];
    const char *name, *email, *tier, *status;
    int64_t n;
    sx_db *db;
    int rc;

    db = sx_store_acquire(tn->store);
    if (!db || !fields) {
        json_decref(fields);
        sx_store_release(tn->store, db);
        return db ? SX_ENOMEM : SX_ESTORE;
    }
    rc = sx_db_begin(db);
    if (rc)
        goto out;
    rc = load_tenant(db, ref, &cur);
    if (rc)
        goto out;
    snprintf(id, sizeof(id), "%s", cur->id);

    name = (v = json_object_get(body, "name")) ? json_string_value(v) : cur->name;
    v = json_object_get(body, "contact_email");
    email = v ? json_string_value(v) : cur->contact_email;
    tier = (v = json_object_get(body, "tier")) ? json_string_value(v)
                                               : sx_tier_name(cur->tier);
    status = (v = json_object_get(body, "status"))
                 ? json_string_value(v)
                 : (cur->status == SX_TENANT_SUSPENDED ? "suspended" : "active");
    v = json_object_get(body, "settings");
    merged = v ? sx_settings_merge(cur->settings_stored, v) : json_incref(cur->settings_stored);
    settings_text = merged ? json_dumps(merged, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!settings_text) {
        rc = SX_ENOMEM;
        goto out;
    }
    n = sx_db_run(db, "UPDATE tenants SET name = $1, contact_email = $2, tier = $3,"
                      " status = $4, settings = $5, updated_at = $6 WHERE id = $7",
                  "tttttit", name, email, tier, status, settings_text, sx_time_now_ms(), id);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    rc = sx_audit_record(db, who, action, "tenant", id, id, fields);
    if (rc)
        goto out;
    rc = sx_db_commit(db);

out:
    if (rc)
        sx_db_rollback(db);
    sx_store_release(tn->store, db);
    sx_tenant_unref(cur);
    json_decref(merged);
    json_decref(fields);
    free(settings_text);
    if (rc)
        return rc;
    sx_tenancy_forget_tenant(tn, id);
    return sx_tenant_get(tn, id, tenant);
}

int sx_tenant_update(sx_tenancy *tn, const char *ref, const json_t *body,
                     const struct sx_actor *who, struct sx_tenant **tenant,
                     struct sx_fault *f)
{
    static const char *const allowed[] = {"name", "tier", "contact_email", "status",
                                          "settings", NULL};
    json_t *v;
    enum sx_tier tier;

    *tenant = NULL;
    if (check_keys(body, allowed, "PATCH accepts name, tier, contact_email, status and "
                   "settings", f))
        return SX_EINVAL;
    if ((v = json_object_get(body, "name")) && check_name(v, f))
        return SX_EINVAL;
    if ((v = json_object_get(body, "tier")) && check_tier(v, &tier, f))
        return SX_EINVAL;
    if ((v = json_object_get(body, "contact_email")) && !json_is_null(v) && check_email(v, f))
        return SX_EINVAL;
    if ((v = json_object_get(body, "status")) &&
        (!json_is_string(v) || (strcmp(json_string_value(v), "active") != 0 &&
                                strcmp(json_string_value(v), "suspended") != 0))) {
        sx_fault_set(f, "invalid_value", "status", "status must be \"active\" or "
                     "\"suspended\"");
        return SX_EINVAL;
    }
    if ((v = json_object_get(body, "settings")) && check_nested_settings(v, f))
        return SX_EINVAL;
    return apply_update(tn, ref, body, "tenant.update", who, tenant);
}

int sx_tenant_settings_update(sx_tenancy *tn, const char *ref, const json_t *patch,
                              const struct sx_actor *who, struct sx_tenant **tenant,
                              struct sx_fault *f)
{
    json_t *body;
    int rc;

    *tenant = NULL;
    if (sx_settings_check(patch, f))
        return SX_EINVAL;
    body = json_pack("{s:O}", "settings", patch);
    if (!body)
        return SX_ENOMEM;
    rc = apply_update(tn, ref, body, "tenant.settings.update", who, tenant);
    json_decref(body);
    return rc;
}

/* ---- delete ------------------------------------------------------------- */

int sx_tenant_delete(sx_tenancy *tn, const char *ref, const struct sx_actor *who,
                     char id_out[SX_TENANT_ID_MAX])
{
    struct sx_tenant *cur = NULL;
    sx_db *db = sx_store_acquire(tn->store);
    int64_t n;
    int rc;

    id_out[0] = 0;
    if (!db)
        return SX_ESTORE;
    rc = sx_db_begin(db);
    if (rc)
        goto out;
    rc = load_tenant(db, ref, &cur);
    if (rc)
        goto out;

    /* Other modules' rows first (they may reference the tenant), then the
     * keys and the tenant itself. The audit entry outlives the tenant. */
    for (int i = 0; i < tn->n_hooks && rc == 0; i++) {
        rc = tn->hooks[i].fn(db, cur->id, tn->hooks[i].ctx);
        if (rc)
            SX_ERROR("tenancy", "purge of tenant %s failed in module %s: %s", cur->id,
                     tn->hooks[i].module, sx_strerror(rc));
    }
    if (rc)
        goto out;
    n = sx_db_run(db, "DELETE FROM api_keys WHERE tenant_id = $1", "t", cur->id);
    if (n >= 0)
        n = sx_db_run(db, "DELETE FROM tenants WHERE id = $1", "t", cur->id);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    rc = sx_audit_record(db, who, "tenant.delete", "tenant", cur->id, cur->id, NULL);
    if (rc)
        goto out;
    rc = sx_db_commit(db);

out:
    if (rc)
        sx_db_rollback(db);
    sx_store_release(tn->store, db);
    if (rc == 0) {
        snprintf(id_out, SX_TENANT_ID_MAX, "%s", cur->id);
        sx_tenancy_forget_tenant_keys(tn, cur->id);
        sx_tenancy_forget_tenant(tn, cur->id);
        SX_INFO("tenancy", "deleted tenant %s and its data", cur->id);
    }
    sx_tenant_unref(cur);
    return rc;
}

/* ---- list --------------------------------------------------------------- */

/* Cursors are "<created_at ms>.<id>" of the last tenant of a page. */
static int parse_cursor(const char *c, int64_t *ms, char id[SX_TENANT_ID_MAX])
{
    char *end;
    long long v;

    if (!c || c[0] < '0' || c[0] > '9')
        return SX_EINVAL;
    v = strtoll(c, &end, 10);
    if (*end != '.' || strlen(end + 1) == 0 || strlen(end + 1) >= SX_TENANT_ID_MAX)
        return SX_EINVAL;
    *ms = v;
    snprintf(id, SX_TENANT_ID_MAX, "%s", end + 1);
    return 0;
}

int sx_tenant_list(sx_tenancy *tn, const enum sx_tier *tier, int limit, const char *after,
                   json_t **page, bool *has_more, char next_cursor[96], struct sx_fault *f)
{
    char after_id[SX_TENANT_ID_MAX] = "";
    int64_t after_ms = -1;
    struct sx_tenant *last = NULL;
    sx_stmt *st;
    sx_db *db;
    int rc, count = 0;

    *page = NULL;
    *has_more = false;
    if (after && *after && parse_cursor(after, &after_ms, after_id) != 0) {
        sx_fault_set(f, "invalid_cursor", "after", "after must be the next_cursor value of a "
                     "previous page");
        return SX_EINVAL;
    }
    next_cursor[0] = 0; /* after may point into it */
    db = sx_store_acquire(tn->store);
    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db, "SELECT " TENANT_COLUMNS " FROM tenants"
                         " WHERE ($1 = '' OR tier = $1)"
                         " AND ($2 < 0 OR created_at > $2 OR (created_at = $2 AND id > $3))"
                         " ORDER BY created_at, id LIMIT $4",
                     "titi", tier ? sx_tier_name(*tier) : "", after_ms, after_id,
                     (int64_t)limit + 1);
    *page = json_array();
    if (!st || !*page) {
        rc = SX_ESTORE;
        goto out;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        struct sx_tenant *t;

        if (count == limit) {
            *has_more = true;
            continue;
        }
        t = tenant_from_row(st);
        if (!t) {
            rc = SX_ESTORE;
            break;
        }
        json_array_append_new(*page, sx_tenant_to_json(tn, t));
        sx_tenant_unref(last);
        last = t;
        count++;
    }
    if (rc == SX_STORE_DONE && *has_more && last)
        snprintf(next_cursor, 96, "%lld.%s", (long long)last->created_at, last->id);
    rc = rc == SX_STORE_DONE ? 0 : rc;

out:
    sx_stmt_done(st);
    sx_store_release(tn->store, db);
    sx_tenant_unref(last);
    if (rc) {
        json_decref(*page);
        *page = NULL;
    }
    return rc;
}

/* ---- JSON --------------------------------------------------------------- */

static json_t *iso_or_null(int64_t ms)
{
    char buf[32];

    if (ms <= 0)
        return json_null();
    sx_time_iso8601(ms / 1000, buf);
    return json_string(buf);
}

json_t *sx_tenant_to_json(sx_tenancy *tn, const struct sx_tenant *t)
{
    struct sx_tenant_limits lim;

    sx_tenant_limits(tn, t, &lim);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "id", t->id,
                     "object", "tenant",
                     "name", t->name,
                     "slug", t->slug,
                     "tier", sx_tier_name(t->tier),
                     "status", t->status == SX_TENANT_SUSPENDED ? "suspended" : "active",
                     "contact_email",
                     t->contact_email ? json_string(t->contact_email) : json_null(),
                     "created_at", iso_or_null(t->created_at),
                     "updated_at", iso_or_null(t->updated_at),
                     "expires_at", iso_or_null(t->expires_at),
                     "settings", sx_settings_to_json(t->settings_stored, &t->settings),
                     "limits", sx_tenant_limits_to_json(&lim));
}
