/* The adapter registry (registry.h): versions of each tenant's LoRA adapter
 * in the store and as files, activation and rollback, and the cache of
 * loaded adapters (refcounted handles, memory budget, LRU eviction,
 * preloading of the most used active adapters). */
#include "tuning/registry.h"

#include "base/crypto.h"
#include "base/err.h"
#include "base/log.h"
#include "base/time.h"
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#define MODEL_MAX 128

static const struct sx_migration migrations[] = {
    {1, "adapter versions",
     "CREATE TABLE adapters ("
     " tenant_id TEXT NOT NULL,"
     " version INTEGER NOT NULL,"
     " file TEXT NOT NULL,"
     " sha256 TEXT NOT NULL,"
     " size_bytes BIGINT NOT NULL,"
     " rank INTEGER NOT NULL,"
     " alpha TEXT NOT NULL,"
     " base_model TEXT NOT NULL,"
     " created_at BIGINT NOT NULL,"
     " active INTEGER NOT NULL DEFAULT 0,"
     " uses BIGINT NOT NULL DEFAULT 0,"
     " PRIMARY KEY (tenant_id, version));"
     "CREATE INDEX adapters_active ON adapters (active, uses);"},
};

/* One loaded adapter version. The cache holds one reference while the
 * entry is listed; each handle holds one more. */
struct sx_adapter_handle {
    struct sx_adapter_handle *next;
    sx_registry *reg;
    char tenant_id[SX_TENANT_ID_MAX];
    int version;
    char base_model[MODEL_MAX];
    sx_lora *lora;
    uint64_t bytes;
    int refs;                /* under reg->mu */
    bool cached;
    uint64_t last_used;      /* reg->clock when last taken */
    int64_t uses;            /* takes not yet written to the store */
};

struct sx_registry {
    sx_store *store;
    char *dir;               /* <data_dir>/adapters */
    uint64_t budget;
    sx_registry_model_fn model_of;
    sx_registry_remote_fn remote_of;
    void *model_ctx;
    pthread_mutex_t mu;
    sx_adapter_handle *cache;
    uint64_t cached_bytes, clock;
    int n_cached;
};

/* --- cache ----------------------------------------------------------------- */

static void handle_free(sx_adapter_handle *h)
{
    sx_lora_free(h->lora);
    free(h);
}

/* Writes the take counts of an entry back (for preloading by use). */
static void flush_uses(sx_registry *r, sx_adapter_handle *h)
{
    sx_db *db;

    if (h->uses == 0 || !(db = sx_store_acquire(r->store)))
        return;
    sx_db_run(db, "UPDATE adapters SET uses = uses + $1 WHERE tenant_id = $2 AND version = $3",
              "iti", (int64_t)h->uses, h->tenant_id, (int64_t)h->version);
    sx_store_release(r->store, db);
    h->uses = 0;
}

/* Unlists an entry (mu held); returns it when its last reference went. */
static sx_adapter_handle *uncache_locked(sx_registry *r, sx_adapter_handle *h)
{
    for (sx_adapter_handle **p = &r->cache; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    h->cached = false;
    r->cached_bytes -= h->bytes;
    r->n_cached--;
    return --h->refs == 0 ? h : NULL;
}

/* Evicts least recently used entries until the budget holds, never keep
 * and never one a request holds: its memory could not be freed, and the
 * next request would load a second copy. Entries in use leave the cache
 * over budget until their last release (sx_adapter_release evicts then). */
static void evict_locked(sx_registry *r, const sx_adapter_handle *keep,
                         sx_adapter_handle **dead, int *n_dead, int max_dead)
{
    while (r->cached_bytes > r->budget && *n_dead < max_dead) {
        sx_adapter_handle *lru = NULL, *gone;

        for (sx_adapter_handle *h = r->cache; h; h = h->next)
            if (h != keep && h->refs == 1 && (!lru || h->last_used < lru->last_used))
                lru = h;
        if (!lru)
            break;
        SX_INFO("tuning", "evicting adapter %s v%d (%llu bytes) from the cache",
                lru->tenant_id, lru->version, (unsigned long long)lru->bytes);
        gone = uncache_locked(r, lru);
        if (gone)
            dead[(*n_dead)++] = gone;
    }
}

static sx_adapter_handle *find_locked(sx_registry *r, const char *tenant_id, int version)
{
    for (sx_adapter_handle *h = r->cache; h; h = h->next)
        if (h->version == version && strcmp(h->tenant_id, tenant_id) == 0)
            return h;
    return NULL;
}

/* Adds a loaded adapter (or takes the copy another thread added first) and
 * returns a new reference to the cached entry. */
static sx_adapter_handle *insert(sx_registry *r, sx_adapter_handle *h)
{
    sx_adapter_handle *dead[16], *have;
    int n_dead = 0;

    pthread_mutex_lock(&r->mu);
    have = find_locked(r, h->tenant_id, h->version);
    if (have) {
        have->refs++;
        have->last_used = ++r->clock;
        have->uses++;
        pthread_mutex_unlock(&r->mu);
        handle_free(h);
        return have;
    }
    h->reg = r;
    h->cached = true;
    h->refs = 2; /* the cache's and the caller's */
    h->last_used = ++r->clock;
    h->uses = 1;
    h->next = r->cache;
    r->cache = h;
    r->cached_bytes += h->bytes;
    r->n_cached++;
    evict_locked(r, h, dead, &n_dead, 16);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n_dead; i++) {
        flush_uses(r, dead[i]);
        handle_free(dead[i]);
    }
    return h;
}

void sx_adapter_release(sx_adapter_handle *h)
{
    sx_adapter_handle *dead[16];
    sx_registry *r;
    int n_dead = 0;
    bool last;

    if (!h)
        return;
    r = h->reg;
    pthread_mutex_lock(&r->mu);
    last = --h->refs == 0;
    /* An entry eviction had to skip may go now. */
    if (!last && h->cached && h->refs == 1 && r->cached_bytes > r->budget)
        evict_locked(r, NULL, dead, &n_dead, 16);
    pthread_mutex_unlock(&r->mu);
    if (last) {
        flush_uses(r, h);
        handle_free(h);
    }
    for (int i = 0; i < n_dead; i++) {
        flush_uses(r, dead[i]);
        handle_free(dead[i]);
    }
}

const sx_lora *sx_adapter_lora(const sx_adapter_handle *h) { return h->lora; }
int sx_adapter_version(const sx_adapter_handle *h) { return h->version; }
const char *sx_adapter_base_model(const sx_adapter_handle *h) { return h->base_model; }

void sx_adapter_model_id(const char *base_model, const char *slug, int version, char *buf,
                         size_t len)
{
    snprintf(buf, len, "%s:%s-v%d", base_model, slug, version);
}

void sx_registry_cache_stats(sx_registry *r, int *n_loaded, uint64_t *bytes)
{
    pthread_mutex_lock(&r->mu);
    *n_loaded = r->n_cached;
    *bytes = r->cached_bytes;
    pthread_mutex_unlock(&r->mu);
}

/* --- files ----------------------------------------------------------------- */

/* Tenant ids are generated ([A-Za-z0-9_]); anything else never reaches a path. */
static bool id_ok(const char *id)
{
    if (!id[0])
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return false;
    return true;
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];

    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return SX_EIO;
            *p = '/';
        }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? SX_EIO : 0;
}

/* Writes data to path through a temporary file, fsync'ed, then renamed. */
static int write_file(const char *path, const void *data, size_t len)
{
    char tmp[4500];
    const char *p = data;
    int fd;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return SX_EIO;
    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            unlink(tmp);
            return SX_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return SX_EIO;
    }
    return 0;
}

static void remove_tenant_dir(sx_registry *r, const char *tenant_id)
{
    char dir[4096], path[4400];
    DIR *d;
    struct dirent *e;

    if (!id_ok(tenant_id))
        return;
    snprintf(dir, sizeof(dir), "%s/%s", r->dir, tenant_id);
    d = opendir(dir);
    if (!d)
        return;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

/* --- loading ---------------------------------------------------------------- */

/* Loads one stored version; a new entry (not yet cached) or NULL. */
static sx_adapter_handle *load_version(sx_registry *r, const char *tenant_id, int version,
                                       const char *file, const char *base_model, int *rc)
{
    const sx_model *m = r->model_of ? r->model_of(r->model_ctx, base_model) : NULL;
    sx_adapter_handle *h;
    char path[4400], err[256] = "";

    if (!m) {
        SX_WARN("tuning", "adapter %s v%d: base model '%s' is not loaded", tenant_id, version,
                base_model);
        *rc = SX_ENOTFOUND;
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        *rc = SX_ENOMEM;
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/%s", r->dir, file);
    h->lora = sx_lora_load(m, path, rc, err, sizeof(err));
    if (!h->lora) {
        SX_ERROR("tuning", "adapter %s v%d cannot be loaded: %s", tenant_id, version, err);
        free(h);
        if (*rc != SX_ENOMEM)
            *rc = SX_EIO;
        return NULL;
    }
    snprintf(h->tenant_id, sizeof(h->tenant_id), "%s", tenant_id);
    snprintf(h->base_model, sizeof(h->base_model), "%s", base_model);
    h->version = version;
    h->bytes = sx_lora_get_info(h->lora)->n_bytes;
    *rc = 0;
    return h;
}

/* The tenant's version n (0: the active one) for base_model, loaded if
 * needed. */
static int take_adapter(sx_registry *r, const struct sx_tenant *t, const char *base_model,
                        int n, sx_adapter_handle **out)
{
    char file[256], base[MODEL_MAX];
    sx_adapter_handle *h;
    sx_db *db;
    sx_stmt *st;
    int version = 0, rc;

    *out = NULL;
    if (!r || !t || n < 0)
        return SX_ENOTFOUND;
    db = sx_store_acquire(r->store);
    if (!db)
        return SX_ESTORE;
    if (n == 0)
        st = sx_db_query(db, "SELECT version, file, base_model FROM adapters"
                             " WHERE tenant_id = $1 AND active = 1", "t", t->id);
    else
        st = sx_db_query(db, "SELECT version, file, base_model FROM adapters"
                             " WHERE tenant_id = $1 AND version = $2", "ti", t->id,
                         (int64_t)n);
    rc = st ? sx_stmt_step(st) : SX_ESTORE;
    if (rc == SX_STORE_ROW) {
        version = (int)sx_stmt_int(st, 0);
        snprintf(file, sizeof(file), "%s", sx_stmt_text(st, 1));
        snprintf(base, sizeof(base), "%s", sx_stmt_text(st, 2));
    }
    if (st)
        sx_stmt_done(st);
    sx_store_release(r->store, db);
    if (rc < 0)
        return rc;
    if (rc != SX_STORE_ROW || (base_model && strcmp(base, base_model) != 0))
        return SX_ENOTFOUND;

    pthread_mutex_lock(&r->mu);
    h = find_locked(r, t->id, version);
    if (h) {
        h->refs++;
        h->last_used = ++r->clock;
        h->uses++;
    }
    pthread_mutex_unlock(&r->mu);
    if (!h) {
        /* Loaded here, on the request's thread, outside the lock. */
        h = load_version(r, t->id, version, file, base, &rc);
        if (!h)
            return rc;
        h = insert(r, h);
    }
    *out = h;
    return 0;
}

int sx_tuning_active_adapter(sx_registry *r, const struct sx_tenant *t,
                             const char *base_model, sx_adapter_handle **h)
{
    return take_adapter(r, t, base_model, 0, h);
}

int sx_tuning_adapter_version(sx_registry *r, const struct sx_tenant *t,
                              const char *base_model, int version, sx_adapter_handle **h)
{
    if (version < 1) {
        *h = NULL;
        return SX_ENOTFOUND;
    }
    return take_adapter(r, t, base_model, version, h);
}

int sx_registry_active_version(sx_registry *r, const char *tenant_id, int *version,
                               char *base_model, size_t len)
{
    return sx_registry_find_version(r, tenant_id, 0, version, base_model, len);
}

int sx_registry_find_version(sx_registry *r, const char *tenant_id, int n, int *version,
                             char *base_model, size_t len)
{
    sx_db *db;
    sx_stmt *st;
    int rc;

    if (!r || n < 0)
        return SX_ENOTFOUND;
    db = sx_store_acquire(r->store);
    if (!db)
        return SX_ESTORE;
    if (n == 0)
        st = sx_db_query(db, "SELECT version, base_model FROM adapters"
                             " WHERE tenant_id = $1 AND active = 1", "t", tenant_id);
    else
        st = sx_db_query(db, "SELECT version, base_model FROM adapters"
                             " WHERE tenant_id = $1 AND version = $2", "ti", tenant_id,
                         (int64_t)n);
    rc = st ? sx_stmt_step(st) : SX_ESTORE;
    if (rc == SX_STORE_ROW) {
        *version = (int)sx_stmt_int(st, 0);
        snprintf(base_model, len, "%s", sx_stmt_text(st, 1));
    }
    if (st)
        sx_stmt_done(st);
    sx_store_release(r->store, db);
    return rc == SX_STORE_ROW ? 0 : rc < 0 ? rc : SX_ENOTFOUND;
}

/* --- versions ----------------------------------------------------------------- */

#define ROW_COLUMNS "version, active, base_model, rank, alpha, size_bytes, sha256, created_at"

static json_t *row_json(sx_stmt *st, const struct sx_tenant *t)
{
    char v[16], id[256];
    int n = (int)sx_stmt_int(st, 0);

    snprintf(v, sizeof(v), "v%d", n);
    sx_adapter_model_id(sx_stmt_text(st, 2), t->slug, n, id, sizeof(id));
    return json_pack("{s:s,s:i,s:b,s:s,s:I,s:f,s:I,s:s,s:I,s:s}", "version", v, "number", n,
                     "active", (int)sx_stmt_int(st, 1), "base_model", sx_stmt_text(st, 2),
                     "rank", (json_int_t)sx_stmt_int(st, 3), "alpha",
                     atof(sx_stmt_text(st, 4)), "size_bytes",
                     (json_int_t)sx_stmt_int(st, 5), "sha256", sx_stmt_text(st, 6),
                     "created_at", (json_int_t)(sx_stmt_int(st, 7) / 1000), "model_id", id);
}

static int read_version(sx_db *db, const struct sx_tenant *t, int n, json_t **out)
{
    sx_stmt *st = sx_db_query(db, "SELECT " ROW_COLUMNS " FROM adapters"
                                  " WHERE tenant_id = $1 AND version = $2", "ti", t->id,
                              (int64_t)n);
    int rc = st ? sx_stmt_step(st) : SX_ESTORE;

    if (rc == SX_STORE_ROW)
        *out = row_json(st, t);
    if (st)
        sx_stmt_done(st);
    return rc == SX_STORE_ROW ? (*out ? 0 : SX_ENOMEM) : rc < 0 ? rc : SX_ENOTFOUND;
}

int sx_registry_list(sx_registry *r, const struct sx_tenant *t, json_t **out)
{
    sx_db *db = sx_store_acquire(r->store);
    json_t *data = json_array(), *active = json_null();
    sx_stmt *st;
    int rc = SX_ESTORE;

    *out = NULL;
    if (!db || !data)
        goto done;
    st = sx_db_query(db, "SELECT " ROW_COLUMNS " FROM adapters WHERE tenant_id = $1"
                         " ORDER BY version", "t", t->id);
    if (!st)
        goto done;
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        json_t *v = row_json(st, t);

        if (json_is_true(json_object_get(v, "active"))) {
            json_decref(active);
            active = json_incref(json_object_get(v, "version"));
        }
        json_array_append_new(data, v);
    }
    sx_stmt_done(st);
    if (rc == SX_STORE_DONE) {
        *out = json_pack("{s:s,s:O,s:O}", "object", "list", "data", data, "active", active);
        rc = *out ? 0 : SX_ENOMEM;
    }
done:
    json_decref(data);
    json_decref(active);
    sx_store_release(r->store, db);
    return rc;
}

static void audit(sx_db *db, const struct sx_actor *who, const char *action,
                  const struct sx_tenant *t, int n)
{
    char target[16];

    if (!who)
        return;
    snprintf(target, sizeof(target), "v%d", n);
    sx_audit_record(db, who, action, "adapter", target, t->id, NULL);
}

int sx_registry_activate(sx_registry *r, const struct sx_tenant *t, int n,
                         const struct sx_actor *who, json_t **version)
{
    sx_db *db = sx_store_acquire(r->store);
    int64_t changed;
    int rc;

    *version = NULL;
    if (!db)
        return SX_ESTORE;
    rc = sx_db_begin(db);
    if (rc == 0) {
        sx_db_run(db, "UPDATE adapters SET active = 0 WHERE tenant_id = $1", "t", t->id);
        changed = sx_db_run(db, "UPDATE adapters SET active = 1"
                                " WHERE tenant_id = $1 AND version = $2", "ti", t->id,
                            (int64_t)n);
        if (changed == 1) {
            audit(db, who, "adapter.activate", t, n);
            rc = sx_db_commit(db);
        }
        else
            rc = changed == 0 ? SX_ENOTFOUND : (int)changed;
        if (rc)
            sx_db_rollback(db);
    }
    if (rc == 0)
        rc = read_version(db, t, n, version);
    sx_store_release(r->store, db);
    if (rc == 0)
        SX_INFO("tuning", "tenant %s: adapter v%d is now active", t->id, n);
    return rc;
}

/* An adapter for a model served upstream cannot be checked against the
 * base weights here: the file must be a GGUF LoRA adapter with matching
 * halves of sane rank; the upstream server checks the rest when the
 * operator loads it there. Fills rank and alpha. */
static int check_remote(const void *data, size_t len, int *rank, float *alpha, char *msg,
                        size_t msglen)
{
    char err[200] = "";
    sx_gguf *g = sx_gguf_open_buffer(data, len, err, sizeof(err));
    const char *type, *atype;
    size_t tlen = 0, alen = 0;
    int rc = SX_EINVAL, n_a = 0;

    *rank = 0;
    *alpha = 0;
    if (!g) {
        snprintf(msg, msglen, "not a GGUF file: %s", err);
        return SX_EINVAL;
    }
    type = sx_gguf_get_str(g, "general.type", &tlen);   /* not NUL-terminated */
    atype = sx_gguf_get_str(g, "adapter.type", &alen);
    if (!type || tlen != 7 || memcmp(type, "adapter", 7) != 0 || !atype || alen != 4 ||
        memcmp(atype, "lora", 4) != 0) {
        snprintf(msg, msglen, "not a LoRA adapter: general.type must be \"adapter\" and "
                              "adapter.type \"lora\"");
        goto out;
    }
    sx_gguf_get_f32(g, "adapter.lora.alpha", alpha);
    for (int i = 0; i < sx_gguf_n_tensors(g); i++) {
        const sx_gguf_tensor *a = sx_gguf_tensor_at(g, i), *b;
        char bname[256];
        size_t n = strlen(a->name);

        if (n < 7 || strcmp(a->name + n - 7, ".lora_a") != 0)
            continue;
        snprintf(bname, sizeof(bname), "%.*s.lora_b", (int)(n - 7), a->name);
        b = sx_gguf_find_tensor(g, bname);
        if (!b || a->n_dims != 2 || b->n_dims != 2 || a->ne[1] != b->ne[0] ||
            a->ne[1] < 1 || a->ne[1] > SX_LORA_MAX_RANK) {
            snprintf(msg, msglen, "tensor %.100s: needs a %.100s partner with the same "
                                  "rank (1 to %d)", a->name, bname, SX_LORA_MAX_RANK);
            goto out;
        }
        if (a->ne[1] > *rank)
            *rank = (int)a->ne[1];
        n_a++;
    }
    if (n_a == 0) {
        snprintf(msg, msglen, "the adapter has no .lora_a/.lora_b tensors");
        goto out;
    }
    rc = 0;
out:
    sx_gguf_close(g);
    return rc;
}

int sx_registry_upload(sx_registry *r, const struct sx_tenant *t, const char *base_model,
                       const void *data, size_t len, bool activate,
                       const struct sx_actor *who, json_t **version, char *msg,
                       size_t msglen)
{
    const sx_model *m;
    sx_adapter_handle *h;
    int rank = 0;
    float lalpha = 0;
    uint8_t digest[SX_SHA256_LEN];
    char hex[2 * SX_SHA256_LEN + 1], dir[4200], file[256], path[4400], alpha[32];
    void *copy;
    sx_db *db;
    sx_stmt *st;
    int rc, n = 0;

    *version = NULL;
    m = r->model_of ? r->model_of(r->model_ctx, base_model) : NULL;
    if (!m && !(r->remote_of && r->remote_of(r->model_ctx, base_model))) {
        snprintf(msg, msglen, "base_model '%s' takes no adapters on this server: adapters "
                              "apply to local GGUF models and to upstreams configured with "
                              "lora=", base_model);
        return SX_ENOTFOUND;
    }
    if (!id_ok(t->id)) {
        snprintf(msg, msglen, "tenant id not usable in a path");
        return SX_EINVAL;
    }
    if (!m) {
        rc = check_remote(data, len, &rank, &lalpha, msg, msglen);
        if (rc)
            return rc;
        h = NULL;
        goto store;
    }
    h = calloc(1, sizeof(*h));
    copy = aligned_alloc(64, (len + 63) / 64 * 64); /* tensor data wants alignment */
    if (!h || !copy) {
        free(h);
        free(copy);
        snprintf(msg, msglen, "out of memory");
        return SX_ENOMEM;
    }
    memcpy(copy, data, len);
    h->lora = sx_lora_load_buffer(m, copy, len, &rc, msg, msglen);
    free(copy);
    if (!h->lora) {
        free(h);
        return rc == SX_ENOMEM ? rc : SX_EINVAL;
    }
    rank = sx_lora_get_info(h->lora)->rank;
    lalpha = sx_lora_get_info(h->lora)->alpha;
store:
    sx_crypto_sha256(data, len, digest);
    sx_crypto_hex(digest, sizeof(digest), hex);
    snprintf(alpha, sizeof(alpha), "%.9g", (double)lalpha);

    db = sx_store_acquire(r->store);
    if (!db || sx_db_begin(db) != 0) {
        rc = SX_ESTORE;
        goto fail;
    }
    st = sx_db_query(db, "SELECT COALESCE(MAX(version), 0) FROM adapters WHERE tenant_id = $1",
                     "t", t->id);
    if (!st || sx_stmt_step(st) != SX_STORE_ROW) {
        if (st)
            sx_stmt_done(st);
        rc = SX_ESTORE;
        goto fail;
    }
    n = (int)sx_stmt_int(st, 0) + 1;
    sx_stmt_done(st);
    snprintf(dir, sizeof(dir), "%s/%s", r->dir, t->id);
    snprintf(file, sizeof(file), "%s/%d.gguf", t->id, n);
    snprintf(path, sizeof(path), "%s/%s", r->dir, file);
    if (mkdir_p(dir) != 0 || write_file(path, data, len) != 0) {
        SX_ERROR("tuning", "cannot write %s: %s", path, strerror(errno));
        rc = SX_EIO;
        goto fail;
    }
    if (activate)
        sx_db_run(db, "UPDATE adapters SET active = 0 WHERE tenant_id = $1", "t", t->id);
    rc = (int)sx_db_run(db, "INSERT INTO adapters (tenant_id, version, file, sha256, size_bytes,"
                            " rank, alpha, base_model, created_at, active)"
                            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        "tittiittii", t->id, (int64_t)n, file, hex, (int64_t)len,
                        (int64_t)rank, alpha, base_model, sx_time_now_ms(),
                        (int64_t)(activate ? 1 : 0));
    if (rc == 1)
        audit(db, who, "adapter.upload", t, n);
    if (rc != 1 || sx_db_commit(db) != 0) {
        unlink(path);
        rc = SX_ESTORE;
        goto fail;
    }
    rc = read_version(db, t, n, version);
    sx_store_release(r->store, db);
    SX_INFO("tuning", "tenant %s: adapter v%d stored (%zu bytes, rank %d, base %s)%s", t->id,
            n, len, rank, base_model, activate ? ", active" : "");

    /* The new version is loaded already (local models): cache it. */
    if (!h)
        return rc;
    snprintf(h->tenant_id, sizeof(h->tenant_id), "%s", t->id);
    snprintf(h->base_model, sizeof(h->base_model), "%s", base_model);
    h->version = n;
    h->bytes = sx_lora_get_info(h->lora)->n_bytes;
    sx_adapter_release(insert(r, h));
    return rc;

fail:
    if (db) {
        sx_db_rollback(db);
        sx_store_release(r->store, db);
    }
    snprintf(msg, msglen, "the adapter could not be stored (%s)", sx_strerror(rc));
    if (h)
        handle_free(h);
    return rc;
}

int sx_registry_purge(sx_registry *r, sx_db *db, const char *tenant_id)
{
    sx_adapter_handle *dead[64];
    int n_dead = 0;
    int64_t rc;

    rc = sx_db_run(db, "DELETE FROM adapters WHERE tenant_id = $1", "t", tenant_id);
    if (rc < 0)
        return (int)rc;
    pthread_mutex_lock(&r->mu);
    for (sx_adapter_handle *h = r->cache, *next; h && n_dead < 64; h = next) {
        next = h->next;
        if (strcmp(h->tenant_id, tenant_id) == 0) {
            sx_adapter_handle *gone = uncache_locked(r, h);

            if (gone)
                dead[n_dead++] = gone;
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n_dead; i++)
        handle_free(dead[i]);
    remove_tenant_dir(r, tenant_id);
    return 0;
}

static int purge_hook(sx_db *db, const char *tenant_id, void *ctx)
{
    return sx_registry_purge(ctx, db, tenant_id);
}

/* --- open / close ------------------------------------------------------------ */

static void preload(sx_registry *r, int limit)
{
    struct row { char tenant[SX_TENANT_ID_MAX], file[256], base[MODEL_MAX]; int version; };
    struct row *rows = calloc((size_t)limit, sizeof(*rows));
    sx_db *db = sx_store_acquire(r->store);
    sx_stmt *st = NULL;
    int n = 0, loaded = 0;

    if (rows && db)
        st = sx_db_query(db, "SELECT tenant_id, version, file, base_model FROM adapters"
                             " WHERE active = 1 ORDER BY uses DESC, created_at DESC LIMIT $1",
                         "i", (int64_t)limit);
    while (st && n < limit && sx_stmt_step(st) == SX_STORE_ROW) {
        snprintf(rows[n].tenant, sizeof(rows[n].tenant), "%s", sx_stmt_text(st, 0));
        rows[n].version = (int)sx_stmt_int(st, 1);
        snprintf(rows[n].file, sizeof(rows[n].file), "%s", sx_stmt_text(st, 2));
        snprintf(rows[n].base, sizeof(rows[n].base), "%s", sx_stmt_text(st, 3));
        n++;
    }
    if (st)
        sx_stmt_done(st);
    sx_store_release(r->store, db);
    for (int i = 0; i < n && r->cached_bytes < r->budget; i++) {
        int rc;
        sx_adapter_handle *h;

        if (!r->model_of || !r->model_of(r->model_ctx, rows[i].base))
            continue; /* served upstream, or its model is gone (warned on use) */
        h = load_version(r, rows[i].tenant, rows[i].version, rows[i].file,
                                            rows[i].base, &rc);

        if (h) {
            h = insert(r, h);
            h->uses--; /* a preload is not a use */
            sx_adapter_release(h);
            loaded++;
        }
    }
    if (n)
        SX_INFO("tuning", "preloaded %d of %d active adapter(s)", loaded, n);
    free(rows);
}

sx_registry *sx_registry_open(sx_store *store, sx_tenancy *tn,
                              const struct sx_registry_options *o, char *err, size_t errlen)
{
    sx_registry *r = calloc(1, sizeof(*r));
    size_t dlen = strlen(o->data_dir ? o->data_dir : ".") + 16;

    if (!r || !(r->dir = malloc(dlen))) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(r->dir, dlen, "%s/adapters", o->data_dir ? o->data_dir : ".");
    r->store = store;
    r->budget = o->mem_budget ? o->mem_budget : (1ull << 30);
    r->model_of = o->model_of;
    r->remote_of = o->remote_of;
    r->model_ctx = o->model_ctx;
    pthread_mutex_init(&r->mu, NULL);
    if (sx_store_migrate(store, "adapters", migrations,
                         sizeof(migrations) / sizeof(migrations[0]), err, errlen) != 0)
        goto fail;
    if (mkdir_p(r->dir) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", r->dir, strerror(errno));
        goto fail;
    }
    if (tn && sx_tenancy_on_purge(tn, "adapters", purge_hook, r) != 0) {
        snprintf(err, errlen, "cannot register the adapters purge hook");
        goto fail;
    }
    if (o->preload >= 0)
        preload(r, o->preload ? o->preload : 16);
    return r;
fail:
    sx_registry_close(r);
    return NULL;
}

void sx_registry_close(sx_registry *r)
{
    if (!r)
        return;
    while (r->cache) {
        sx_adapter_handle *h = r->cache;

        flush_uses(r, h);
        h = uncache_locked(r, h);
        if (h)
            handle_free(h);
        else
            SX_WARN("tuning", "registry closed while an adapter handle is held");
    }
    pthread_mutex_destroy(&r->mu);
    free(r->dir);
    free(r);
}
