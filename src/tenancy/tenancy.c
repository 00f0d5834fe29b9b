/* The tenancy module's life cycle: applying its migrations, loading the
 * key pepper, bootstrapping the admin key, and the caches and purge hooks
 * that tenants.c and keys.c share.
 *
 * The pepper is the HMAC key under which API keys are hashed. It comes from
 * SYNAPSEX_KEY_PEPPER or from <data_dir>/pepper (32 random bytes, created
 * once with mode 0600). Losing it invalidates every key, so it belongs in
 * the same backups as the database but should be stored apart from them. */
#include "tenancy/internal.h"

#include "base/crypto.h"
#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEPPER_BYTES 32

int sx_tenancy_new_id(const char *prefix, char *out, size_t outlen)
{
    char rnd[17];
    int rc = sx_crypto_random_base62(rnd, 16);

    if (rc)
        return rc;
    if ((size_t)snprintf(out, outlen, "%s%s", prefix, rnd) >= outlen)
        return SX_ETOOBIG;
    return 0;
}

void sx_fault_set(struct sx_fault *f, const char *code, const char *param, const char *fmt,
                  ...)
{
    va_list ap;

    if (!f)
        return;
    f->code = code;
    snprintf(f->param, sizeof(f->param), "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof(f->message), fmt, ap);
    va_end(ap);
}

/* ---- caches ------------------------------------------------------------- */

static void tenant_unref_void(void *p)
{
    sx_tenant_unref(p);
}

static bool slug_points_to(const char *slug, void *id, void *tenant_id)
{
    (void)slug;
    return strcmp(id, tenant_id) == 0;
}

void sx_tenancy_forget_tenant(sx_tenancy *tn, const char *tenant_id)
{
    pthread_mutex_lock(&tn->lock);
    tn->generation++;
    sx_strmap_del(tn->tenants, tenant_id);
    sx_strmap_filter(tn->slugs, slug_points_to, (void *)tenant_id);
    pthread_mutex_unlock(&tn->lock);
}

void sx_tenancy_forget_key(sx_tenancy *tn, const char *hash_hex)
{
    pthread_mutex_lock(&tn->lock);
    tn->generation++;
    sx_strmap_del(tn->keys, hash_hex);
    pthread_mutex_unlock(&tn->lock);
}

static bool key_of_tenant(const char *hash, void *val, void *tenant_id)
{
    const struct sx_key_entry *k = val;

    (void)hash;
    return strcmp(k->tenant_id, tenant_id) == 0;
}

void sx_tenancy_forget_tenant_keys(sx_tenancy *tn, const char *tenant_id)
{
    pthread_mutex_lock(&tn->lock);
    tn->generation++;
    sx_strmap_filter(tn->keys, key_of_tenant, (void *)tenant_id);
    pthread_mutex_unlock(&tn->lock);
}

int sx_tenancy_on_purge(sx_tenancy *tn, const char *module, sx_tenant_purge_fn fn, void *ctx)
{
    struct purge_hook *h;

    if (tn->n_hooks >= (int)(sizeof(tn->hooks) / sizeof(tn->hooks[0])))
        return SX_ELIMIT;
    h = &tn->hooks[tn->n_hooks++];
    snprintf(h->module, sizeof(h->module), "%s", module);
    h->fn = fn;
    h->ctx = ctx;
    return 0;
}

sx_store *sx_tenancy_store(sx_tenancy *tn)
{
    return tn->store;
}

/* ---- pepper ------------------------------------------------------------- */

static int read_pepper_file(sx_tenancy *tn, const char *path, char *err, size_t errlen)
{
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(err, errlen, "open(\"%s\") failed: %s", path, strerror(errno));
        return SX_EIO;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        SX_WARN("tenancy", "%s is readable by group or others; chmod 600 it", path);
    n = read(fd, tn->pepper, sizeof(tn->pepper));
    close(fd);
    if (n < 16) {
        snprintf(err, errlen, "%s holds %zd bytes; a pepper needs at least 16 (restore it "
                 "from a backup: without it no API key verifies)", path, n);
        return SX_EIO;
    }
    tn->pepper_len = (size_t)n;
    return 0;
}

/* Creates the pepper file exclusively so that two processes starting at
 * once cannot write different peppers; the loser reads the winner's. */
static int create_pepper_file(sx_tenancy *tn, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0 && errno == EEXIST)
        return read_pepper_file(tn, path, err, errlen);
    if (fd < 0) {
        snprintf(err, errlen, "creating \"%s\" failed: %s", path, strerror(errno));
        return SX_EIO;
    }
    if (sx_crypto_random(tn->pepper, PEPPER_BYTES) != 0 ||
        write(fd, tn->pepper, PEPPER_BYTES) != PEPPER_BYTES || fsync(fd) != 0) {
        snprintf(err, errlen, "writing \"%s\" failed: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return SX_EIO;
    }
    close(fd);
    tn->pepper_len = PEPPER_BYTES;
    SX_INFO("tenancy", "created key pepper %s", path);
    return 0;
}

static int load_pepper(sx_tenancy *tn, const struct sx_tenancy_options *o, char *err,
                       size_t errlen)
{
    const char *dir = o->data_dir && *o->data_dir ? o->data_dir : ".";
    char path[4096];

    if (o->pepper && *o->pepper) {
        size_t len = strlen(o->pepper);

        if (len < 16 || len > sizeof(tn->pepper)) {
            snprintf(err, errlen, "SYNAPSEX_KEY_PEPPER must be 16 to %zu characters long",
                     sizeof(tn->pepper));
            return SX_EINVAL;
        }
        memcpy(tn->pepper, o->pepper, len);
        tn->pepper_len = len;
        return 0;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir(\"%s\") failed: %s", dir, strerror(errno));
        return SX_EIO;
    }
    snprintf(path, sizeof(path), "%s/pepper", dir);
    if (access(path, F_OK) == 0)
        return read_pepper_file(tn, path, err, errlen);
    return create_pepper_file(tn, path, err, errlen);
}

/* ---- open and close ----------------------------------------------------- */

sx_tenancy *sx_tenancy_open(sx_store *store, const struct sx_tenancy_options *o,
                            char new_admin_key[SX_API_KEY_MAX], char *err, size_t errlen)
{
    sx_tenancy *tn = calloc(1, sizeof(*tn));

    new_admin_key[0] = 0;
    if (!tn) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    tn->store = store;
    pthread_mutex_init(&tn->lock, NULL);
    sx_tiers_init(tn->tiers);
    tn->tenants = sx_strmap_new(tenant_unref_void);
    tn->slugs = sx_strmap_new(free);
    tn->keys = sx_strmap_new(free);
    if (!tn->tenants || !tn->slugs || !tn->keys) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (sx_store_migrate(store, "tenancy", sx_tenancy_migrations, sx_tenancy_n_migrations,
                         err, errlen) != 0)
        goto fail;
    if (load_pepper(tn, o, err, errlen) != 0)
        goto fail;
    if (sx_key_bootstrap_admin(tn, o->admin_key, new_admin_key, err, errlen) != 0)
        goto fail;
    return tn;

fail:
    sx_tenancy_close(tn);
    return NULL;
}

void sx_tenancy_close(sx_tenancy *tn)
{
    if (!tn)
        return;
    sx_strmap_free(tn->tenants);
    sx_strmap_free(tn->slugs);
    sx_strmap_free(tn->keys);
    pthread_mutex_destroy(&tn->lock);
    explicit_bzero(tn->pepper, sizeof(tn->pepper)); /* not left in freed memory */
    free(tn);
}
