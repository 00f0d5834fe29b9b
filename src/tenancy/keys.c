/* API keys: making them, storing only their keyed hash, finding them again,
 * listing, revoking and rotating, and the admin key bootstrap.
 *
 * A key is "sk-<owner>-<secret>": owner is "admin", "platform", "trial" or
 * the tenant's slug with '_' written as '-' (as the spec's examples show),
 * and secret is 43 base62 characters (more than 256 random bits). The
 * database holds HMAC-SHA256(pepper, whole key) in hex, so a stolen
 * database does not yield usable keys, and a prefix of the key (owner plus
 * four secret characters) to tell keys apart in lists. */
#include "tenancy/internal.h"

#include "base/crypto.h"
#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_CHARS 43
#define PREFIX_SECRET_CHARS 4
#define MAX_OVERLAP_S (30 * 86400)
/* Shortest SYNAPSEX_ADMIN_KEY accepted: an operator's key is a secret too. */
#define ADMIN_ENV_KEY_MIN 32

#define KEY_COLUMNS                                                                        \
    "id, kind, tenant_id, name, prefix, created_at, expires_at, revoked_at, created_by, "  \
    "rotated_from"

int sx_key_hash(const sx_tenancy *tn, const char *presented, char hex[65])
{
    return sx_crypto_hmac_sha256_hex(tn->pepper, tn->pepper_len, presented,
                                     strlen(presented), hex);
}

static int parse_kind(const char *s, enum sx_key_kind *k)
{
    if (strcmp(s, "admin") == 0)
        *k = SX_KEY_ADMIN;
    else if (strcmp(s, "platform") == 0)
        *k = SX_KEY_PLATFORM;
    else if (strcmp(s, "tenant") == 0)
        *k = SX_KEY_TENANT;
    else
        return SX_EINVAL;
    return 0;
}

/* Writes a new key for kind (and tenant) into key; prefix gets what lists
 * show of it. */
static int make_key(enum sx_key_kind kind, const struct sx_tenant *tenant,
                    char key[SX_API_KEY_MAX], char prefix[SX_KEY_PREFIX_MAX])
{
    char owner[SX_SLUG_MAX + 1], secret[SECRET_CHARS + 1];
    int rc;

    if (kind == SX_KEY_ADMIN)
        snprintf(owner, sizeof(owner), "admin");
    else if (kind == SX_KEY_PLATFORM)
        snprintf(owner, sizeof(owner), "platform");
    else if (tenant->tier == SX_TIER_TRIAL)
        snprintf(owner, sizeof(owner), "trial");
    else
        for (size_t i = 0; i <= strlen(tenant->slug); i++)
            owner[i] = tenant->slug[i] == '_' ? '-' : tenant->slug[i];

    rc = sx_crypto_random_base62(secret, SECRET_CHARS);
    if (rc)
        return rc;
    snprintf(key, SX_API_KEY_MAX, "sk-%s-%s", owner, secret);
    snprintf(prefix, SX_KEY_PREFIX_MAX, "sk-%s-%.*s", owner, PREFIX_SECRET_CHARS, secret);
    explicit_bzero(secret, sizeof(secret));
    return 0;
}

static int insert_row(sx_tenancy *tn, sx_db *db, enum sx_key_kind kind,
                      const char *tenant_id, const char *name, const char *prefix,
                      const char *key, const char *created_by, int64_t now,
                      const char *rotated_from, char id[SX_KEY_ID_MAX])
{
    char hash[65];
    int64_t n;
    int rc;

    rc = sx_key_hash(tn, key, hash);
    if (rc)
        return rc;
    rc = sx_tenancy_new_id("key_", id, SX_KEY_ID_MAX);
    if (rc)
        return rc;
    n = sx_db_run(db, "INSERT INTO api_keys (id, kind, tenant_id, name, prefix, hash,"
                      " created_at, created_by, rotated_from)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                  "ttttttitt", id, sx_key_kind_name(kind), tenant_id, name, prefix, hash, now,
                  created_by, rotated_from);
    return n < 0 ? (int)n : 0;
}

int sx_key_insert(sx_tenancy *tn, sx_db *db, enum sx_key_kind kind,
                  const struct sx_tenant *tenant, const char *name, const char *created_by,
                  int64_t now, char key[SX_API_KEY_MAX], char id[SX_KEY_ID_MAX])
{
    char prefix[SX_KEY_PREFIX_MAX];
    int rc = make_key(kind, tenant, key, prefix);

    if (rc)
        return rc;
    return insert_row(tn, db, kind, tenant ? tenant->id : NULL, name, prefix, key, created_by,
                      now, NULL, id);
}

/* ---- lookup ------------------------------------------------------------- */

int sx_key_lookup(sx_tenancy *tn, const char *presented, struct sx_key_entry *out,
                  const char **code)
{
    struct sx_key_entry *hit, *copy;
    char hash[65];
    const char *stored;
    int64_t now = sx_time_now_ms(), revoked_at;
    uint64_t gen;
    sx_stmt *st;
    sx_db *db;
    int rc;

    *code = "invalid_api_key";
    if (sx_key_hash(tn, presented, hash) != 0)
        return SX_ESTORE;

    /* 1. The cache holds keys that were valid when loaded; expiry is
     * checked on every use, revocation removes the entry. */
    pthread_mutex_lock(&tn->lock);
    hit = sx_strmap_get(tn->keys, hash);
    if (hit)
        *out = *hit;
    gen = tn->generation;
    pthread_mutex_unlock(&tn->lock);
    if (hit) {
        if (out->expires_at && out->expires_at <= now) {
            sx_tenancy_forget_key(tn, hash);
            *code = "api_key_expired";
            return SX_EAUTH;
        }
        return 0;
    }

    /* 2. The database, by the indexed hash. */
    db = sx_store_acquire(tn->store);
    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db, "SELECT id, kind, tenant_id, expires_at, revoked_at, hash"
                         " FROM api_keys WHERE hash = $1", "t", hash);
    rc = st ? sx_stmt_step(st) : SX_ESTORE;
    if (rc == SX_STORE_DONE) {
        rc = SX_EAUTH;
    } else if (rc == SX_STORE_ROW) {
        stored = sx_stmt_text(st, 5);
        memset(out, 0, sizeof(*out));
        snprintf(out->id, sizeof(out->id), "%s", sx_stmt_text(st, 0));
        snprintf(out->tenant_id, sizeof(out->tenant_id), "%s",
                 sx_stmt_is_null(st, 2) ? "" : sx_stmt_text(st, 2));
        out->expires_at = sx_stmt_is_null(st, 3) ? 0 : sx_stmt_int(st, 3);
        revoked_at = sx_stmt_is_null(st, 4) ? 0 : sx_stmt_int(st, 4);
        rc = 0;
        if (!stored || !sx_crypto_streq(stored, hash) ||
            parse_kind(sx_stmt_text(st, 1), &out->kind) != 0) {
            rc = SX_EAUTH;
        } else if (revoked_at) {
            *code = "api_key_revoked";
            rc = SX_EAUTH;
        } else if (out->expires_at && out->expires_at <= now) {
            *code = "api_key_expired";
            rc = SX_EAUTH;
        }
    }
    sx_stmt_done(st);
    sx_store_release(tn->store, db);
    if (rc)
        return rc;

    /* 3. Remember it unless a revocation happened meanwhile. */
    copy = malloc(sizeof(*copy));
    pthread_mutex_lock(&tn->lock);
    if (copy && gen == tn->generation) {
        *copy = *out;
        if (sx_strmap_put(tn->keys, hash, copy) == 0)
            copy = NULL;
    }
    pthread_mutex_unlock(&tn->lock);
    free(copy);
    return 0;
}

/* ---- JSON and listing --------------------------------------------------- */

static json_t *iso_or_null(int64_t ms)
{
    char buf[32];

    if (ms <= 0)
        return json_null();
    sx_time_iso8601(ms / 1000, buf);
    return json_string(buf);
}

static json_t *text_or_null(sx_stmt *st, int col)
{
    return sx_stmt_is_null(st, col) ? json_null() : json_string(sx_stmt_text(st, col));
}

/* A key row of KEY_COLUMNS as the API shows it. */
static json_t *key_json(sx_stmt *st, int64_t now)
{
    int64_t expires = sx_stmt_is_null(st, 6) ? 0 : sx_stmt_int(st, 6);
    int64_t revoked = sx_stmt_is_null(st, 7) ? 0 : sx_stmt_int(st, 7);
    const char *status = revoked                    ? "revoked"
                         : expires && expires <= now ? "expired"
                         : expires                   ? "expiring"
                                                     : "active";

    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:s, s:o, s:o, s:o, s:o}",
                     "id", sx_stmt_text(st, 0),
                     "object", "api_key",
                     "kind", sx_stmt_text(st, 1),
                     "tenant_id", text_or_null(st, 2),
                     "name", text_or_null(st, 3),
                     "prefix", sx_stmt_text(st, 4),
                     "status", status,
                     "created_at", iso_or_null(sx_stmt_int(st, 5)),
                     "expires_at", iso_or_null(expires),
                     "revoked_at", iso_or_null(revoked),
                     "rotated_from", text_or_null(st, 9));
}

/* The JSON of key id read on db (inside the caller's transaction). */
static json_t *key_json_by_id(sx_db *db, const char *id)
{
    sx_stmt *st = sx_db_query(db, "SELECT " KEY_COLUMNS " FROM api_keys WHERE id = $1", "t",
                              id);
    json_t *o = NULL;

    if (st && sx_stmt_step(st) == SX_STORE_ROW)
        o = key_json(st, sx_time_now_ms());
    sx_stmt_done(st);
    return o;
}

int sx_key_list(sx_tenancy *tn, enum sx_key_kind kind, const char *tenant_id, json_t **out)
{
    int64_t now = sx_time_now_ms();
    sx_db *db = sx_store_acquire(tn->store);
    sx_stmt *st;
    int rc;

    *out = NULL;
    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db, "SELECT " KEY_COLUMNS " FROM api_keys"
                         " WHERE kind = $1 AND COALESCE(tenant_id, '') = $2"
                         " ORDER BY created_at, id",
                     "tt", sx_key_kind_name(kind), tenant_id ? tenant_id : "");
    *out = json_array();
    rc = st && *out ? SX_STORE_ROW : SX_ESTORE;
    while (rc == SX_STORE_ROW && (rc = sx_stmt_step(st)) == SX_STORE_ROW)
        json_array_append_new(*out, key_json(st, now));
    sx_stmt_done(st);
    sx_store_release(tn->store, db);
    if (rc != SX_STORE_DONE) {
        json_decref(*out);
        *out = NULL;
        return rc < 0 ? rc : SX_ESTORE;
    }
    return 0;
}

/* ---- create, revoke, rotate --------------------------------------------- */

static const char *audit_kind(enum sx_key_kind kind, const char *verb, char buf[48])
{
    snprintf(buf, 48, "%s.%s", kind == SX_KEY_PLATFORM ? "platform_key"
                               : kind == SX_KEY_ADMIN  ? "admin_key"
                                                       : "key", verb);
    return buf;
}

int sx_key_create(sx_tenancy *tn, enum sx_key_kind kind, const struct sx_tenant *tenant,
                  const char *name, const struct sx_actor *who, json_t **out,
                  struct sx_fault *f)
{
    char key[SX_API_KEY_MAX], id[SX_KEY_ID_MAX], action[48];
    json_t *fields = NULL;
    sx_db *db;
    int rc;

    *out = NULL;
    if ((kind == SX_KEY_TENANT) != (tenant != NULL))
        return SX_EINVAL;
    if (name && (strlen(name) == 0 || strlen(name) > 100)) {
        sx_fault_set(f, "invalid_value", "name", "name must be 1 to 100 bytes long");
        return SX_EINVAL;
    }
    db = sx_store_acquire(tn->store);
    if (!db)
        return SX_ESTORE;
    rc = sx_db_begin(db);
    if (rc)
        goto out;
    rc = sx_key_insert(tn, db, kind, tenant, name, who ? who->key_id : NULL,
                       sx_time_now_ms(), key, id);
    if (rc)
        goto out;
    fields = name ? json_pack("[s]", "name") : NULL;
    rc = sx_audit_record(db, who, audit_kind(kind, "create", action), "api_key", id,
                         tenant ? tenant->id : NULL, fields);
    if (rc)
        goto out;
    *out = key_json_by_id(db, id);
    if (!*out) {
        rc = SX_ESTORE;
        goto out;
    }
    rc = sx_db_commit(db);
    if (rc == 0)
        json_object_set_new(*out, "api_key", json_string(key));

out:
    if (rc) {
        sx_db_rollback(db);
        json_decref(*out);
        *out = NULL;
    }
    sx_store_release(tn->store, db);
    json_decref(fields);
    explicit_bzero(key, sizeof(key));
    return rc;
}

/* Reads the hash, revocation and expiry of a key of kind/tenant inside the
 * caller's transaction. 0 or SX_ENOTFOUND / SX_ESTORE. */
static int read_key(sx_db *db, enum sx_key_kind kind, const char *tenant_id, const char *id,
                    char hash[65], int64_t *revoked_at, int64_t *expires_at, char **name)
{
    sx_stmt *st = sx_db_query(db, "SELECT hash, revoked_at, expires_at, name FROM api_keys"
                                  " WHERE id = $1 AND kind = $2"
                                  " AND COALESCE(tenant_id, '') = $3",
                              "ttt", id, sx_key_kind_name(kind), tenant_id ? tenant_id : "");
    int rc = st ? sx_stmt_step(st) : SX_ESTORE;

    if (rc == SX_STORE_ROW) {
        snprintf(hash, 65, "%s", sx_stmt_text(st, 0));
        *revoked_at = sx_stmt_is_null(st, 1) ? 0 : sx_stmt_int(st, 1);
        *expires_at = sx_stmt_is_null(st, 2) ? 0 : sx_stmt_int(st, 2);
        if (name)
            *name = sx_stmt_is_null(st, 3) ? NULL : strdup(sx_stmt_text(st, 3));
        rc = 0;
    } else if (rc == SX_STORE_DONE) {
        rc = SX_ENOTFOUND;
    }
    sx_stmt_done(st);
    return rc;
}

int sx_key_revoke(sx_tenancy *tn, enum sx_key_kind kind, const char *tenant_id,
                  const char *key_id, const struct sx_actor *who)
{
    char hash[65], action[48];
    int64_t revoked_at, expires_at, n;
    sx_db *db = sx_store_acquire(tn->store);
    int rc;

    if (!db)
        return SX_ESTORE;
    rc = sx_db_begin(db);
    if (rc)
        goto out;
    rc = read_key(db, kind, tenant_id, key_id, hash, &revoked_at, &expires_at, NULL);
    if (rc || revoked_at) /* revoking twice changes nothing */
        goto out;
    n = sx_db_run(db, "UPDATE api_keys SET revoked_at = $1 WHERE id = $2", "it",
                  sx_time_now_ms(), key_id);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    rc = sx_audit_record(db, who, audit_kind(kind, "revoke", action), "api_key", key_id,
                         tenant_id, NULL);
    if (rc == 0)
        rc = sx_db_commit(db);
    if (rc == 0) {
        sx_tenancy_forget_key(tn, hash);
        SX_INFO("tenancy", "revoked %s key %s", sx_key_kind_name(kind), key_id);
    }

out:
    sx_db_rollback(db); /* nothing to undo after a commit */
    sx_store_release(tn->store, db);
    return rc;
}

int sx_key_rotate(sx_tenancy *tn, const struct sx_tenant *tenant, const char *key_id,
                  int64_t overlap_s, const struct sx_actor *who, json_t **out,
                  struct sx_fault *f)
{
    char hash[65], key[SX_API_KEY_MAX], prefix[SX_KEY_PREFIX_MAX], new_id[SX_KEY_ID_MAX];
    int64_t revoked_at, expires_at, now = sx_time_now_ms(), until, n;
    char *name = NULL;
    json_t *fields = NULL;
    sx_db *db;
    int rc;

    *out = NULL;
    if (overlap_s < 0 || overlap_s > MAX_OVERLAP_S) {
        sx_fault_set(f, "out_of_range", "overlap_seconds", "overlap_seconds must be from 0 to "
                     "%d (30 days)", MAX_OVERLAP_S);
        return SX_EINVAL;
    }
    db = sx_store_acquire(tn->store);
    if (!db)
        return SX_ESTORE;
    rc = sx_db_begin(db);
    if (rc)
        goto out;
    rc = read_key(db, SX_KEY_TENANT, tenant->id, key_id, hash, &revoked_at, &expires_at,
                  &name);
    if (rc)
        goto out;
    if (revoked_at || (expires_at && expires_at <= now)) {
        sx_fault_set(f, revoked_at ? "api_key_revoked" : "api_key_expired", "key_id",
                     "key %s is %s and cannot be rotated; create a new key instead", key_id,
                     revoked_at ? "revoked" : "expired");
        rc = SX_EINVAL;
        goto out;
    }

    /* The new key, then the old key's end of life (never later than an
     * expiry it already had). */
    rc = make_key(SX_KEY_TENANT, tenant, key, prefix);
    if (rc == 0)
        rc = insert_row(tn, db, SX_KEY_TENANT, tenant->id, name, prefix, key,
                        who ? who->key_id : NULL, now, key_id, new_id);
    if (rc)
        goto out;
    until = now + overlap_s * 1000;
    if (expires_at && expires_at < until)
        until = expires_at;
    n = sx_db_run(db, "UPDATE api_keys SET expires_at = $1 WHERE id = $2", "it", until,
                  key_id);
    if (n < 0) {
        rc = (int)n;
        goto out;
    }
    fields = json_pack("[s]", "expires_at");
    rc = sx_audit_record(db, who, "key.rotate", "api_key", key_id, tenant->id, fields);
    if (rc == 0) /* the key that takes over, as a creation of its own */
        rc = sx_audit_record(db, who, "key.create", "api_key", new_id, tenant->id, NULL);
    if (rc)
        goto out;
    *out = key_json_by_id(db, new_id);
    if (!*out) {
        rc = SX_ESTORE;
        goto out;
    }
    rc = sx_db_commit(db);
    if (rc == 0) {
        json_object_set_new(*out, "api_key", json_string(key));
        json_object_set_new(*out, "previous_key_expires_at", iso_or_null(until));
        sx_tenancy_forget_key(tn, hash);
    }

out:
    if (rc) {
        sx_db_rollback(db);
        json_decref(*out);
        *out = NULL;
    }
    sx_store_release(tn->store, db);
    json_decref(fields);
    free(name);
    explicit_bzero(key, sizeof(key));
    return rc;
}

/* ---- admin bootstrap ---------------------------------------------------- */

/* SYNAPSEX_ADMIN_KEY: make sure exactly this key is the environment's admin
 * key; an earlier environment key stops working. */
static int bootstrap_env(sx_tenancy *tn, sx_db *db, const char *admin_key, char *err,
                         size_t errlen)
{
    const struct sx_actor sys = {NULL, "system", NULL, NULL};
    char hash[65], id[SX_KEY_ID_MAX], prefix[SX_KEY_PREFIX_MAX];
    size_t len = strlen(admin_key);
    int64_t now = sx_time_now_ms(), n;
    sx_stmt *st;
    int rc, found;

    for (size_t i = 0; i < len; i++)
        if (admin_key[i] <= 0x20 || admin_key[i] >= 0x7f) {
            snprintf(err, errlen, "SYNAPSEX_ADMIN_KEY must be printable ASCII without spaces");
            return SX_EINVAL;
        }
    if (len < ADMIN_ENV_KEY_MIN || len >= SX_API_KEY_MAX) {
        snprintf(err, errlen, "SYNAPSEX_ADMIN_KEY must be %d to %d characters long "
                 "(e.g. sk-admin- followed by 43 random base62 characters)",
                 ADMIN_ENV_KEY_MIN, SX_API_KEY_MAX - 1);
        return SX_EINVAL;
    }
    rc = sx_key_hash(tn, admin_key, hash);
    if (rc)
        return rc;
    st = sx_db_query(db, "SELECT kind, revoked_at FROM api_keys WHERE hash = $1", "t", hash);
    rc = st ? sx_stmt_step(st) : SX_ESTORE;
    found = rc == SX_STORE_ROW;
    if (found && (strcmp(sx_stmt_text(st, 0), "admin") != 0 || !sx_stmt_is_null(st, 1))) {
        snprintf(err, errlen, "SYNAPSEX_ADMIN_KEY matches a %s key; choose a new value",
                 sx_stmt_is_null(st, 1) ? "non-admin" : "revoked");
        rc = SX_EINVAL;
    }
    sx_stmt_done(st);
    if (rc < 0)
        return rc;
    if (found)
        return 0;

    /* The new key replaces the earlier bootstrap key, from the environment
     * or generated at first start (admin keys made otherwise stay). */
    n = sx_db_run(db, "UPDATE api_keys SET revoked_at = $1"
                      " WHERE kind = 'admin' AND created_by IN ('bootstrap:env',"
                      " 'bootstrap:generated') AND revoked_at IS NULL", "i", now);
    if (n < 0)
        return (int)n;
    snprintf(prefix, sizeof(prefix), "%.*s", (int)(len < 36 ? len / 3 : 12), admin_key);
    rc = insert_row(tn, db, SX_KEY_ADMIN, NULL, "SYNAPSEX_ADMIN_KEY", prefix, admin_key,
                    "bootstrap:env", now, NULL, id);
    if (rc == 0)
        rc = sx_audit_record(db, &sys, "admin_key.bootstrap", "api_key", id, NULL, NULL);
    if (rc == 0)
        SX_INFO("tenancy", "admin key %s registered from SYNAPSEX_ADMIN_KEY", id);
    return rc;
}

/* No SYNAPSEX_ADMIN_KEY: on a database without an admin key, make one. */
static int bootstrap_generated(sx_tenancy *tn, sx_db *db, char new_key[SX_API_KEY_MAX])
{
    const struct sx_actor sys = {NULL, "system", NULL, NULL};
    char id[SX_KEY_ID_MAX];
    sx_stmt *st;
    int64_t count;
    int rc;

    st = sx_db_query(db, "SELECT COUNT(*) FROM api_keys"
                         " WHERE kind = 'admin' AND revoked_at IS NULL", "");
    rc = st ? sx_stmt_step(st) : SX_ESTORE;
    count = rc == SX_STORE_ROW ? sx_stmt_int(st, 0) : 0;
    sx_stmt_done(st);
    if (rc < 0)
        return rc;
    if (count > 0)
        return 0;
    rc = sx_key_insert(tn, db, SX_KEY_ADMIN, NULL, "generated at first start",
                       "bootstrap:generated", sx_time_now_ms(), new_key, id);
    if (rc == 0)
        rc = sx_audit_record(db, &sys, "admin_key.bootstrap", "api_key", id, NULL, NULL);
    if (rc == 0)
        SX_INFO("tenancy", "generated admin key %s (printed once on stdout)", id);
    return rc;
}

int sx_key_bootstrap_admin(sx_tenancy *tn, const char *admin_key,
                           char new_admin_key[SX_API_KEY_MAX], char *err, size_t errlen)
{
    sx_db *db = sx_store_acquire(tn->store);
    int rc;

    new_admin_key[0] = 0;
    err[0] = 0;
    if (!db) {
        snprintf(err, errlen, "no database connection");
        return SX_ESTORE;
    }
    rc = sx_db_begin(db);
    if (rc == 0)
        rc = admin_key && *admin_key ? bootstrap_env(tn, db, admin_key, err, errlen)
                                     : bootstrap_generated(tn, db, new_admin_key);
    if (rc == 0)
        rc = sx_db_commit(db);
    if (rc) {
        sx_db_rollback(db);
        new_admin_key[0] = 0;
        if (!err[0])
            snprintf(err, errlen, "admin key bootstrap failed: %s", sx_strerror(rc));
    }
    sx_store_release(tn->store, db);
    return rc;
}
