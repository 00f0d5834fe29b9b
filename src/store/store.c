/* The generic half of the store (see store.h): URL parsing, the connection
 * pool, a per-connection statement cache and the migration runner. It talks
 * to the database only through a backend's sx_store_ops, so PostgreSQL can
 * be added without touching the modules above. */
#include "store/store.h"
#include "store/store_impl.h"

#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#define STMT_CACHE 48 /* cached statements per connection */
#define POOL_MAX 64
/* A connection that found a lock taken this recently still waits: the
 * busy handler tries again every millisecond (store_sqlite.c). */
#define WAITING_NS 3000000LL

struct sx_stmt {
    sx_db *db;
    void *impl;
    char *sql;    /* the text it was prepared from (cache key) */
    bool in_use;
    bool cached;  /* false: finalized by sx_stmt_done() */
};

struct sx_db {
    sx_store *store;
    void *conn;
    bool in_txn;
    bool busy; /* lent to a thread */
    int next_victim;
    sx_stmt cache[STMT_CACHE];
};

struct sx_store {
    const struct sx_store_ops *ops;
    char *target; /* what ops->connect opens */
    int pool_size;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    sx_db pool[POOL_MAX];
};

static int64_t now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- opening and the pool ---------------------------------------------- */

sx_store *sx_store_open(const char *url, const char *data_dir, int pool_size, char *err,
                        size_t errlen)
{
    sx_store *s;
    char *target = NULL;
    void *probe;

    if (pool_size < 1 || pool_size > POOL_MAX) {
        snprintf(err, errlen, "store pool size %d out of range 1..%d", pool_size, POOL_MAX);
        return NULL;
    }
    if (!url || !*url) {
        const char *dir = data_dir && *data_dir ? data_dir : ".";

        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir(\"%s\") failed: %s", dir, strerror(errno));
            return NULL;
        }
        if (asprintf(&target, "%s/synapsex.db", dir) < 0)
            target = NULL;
    } else if (strncmp(url, "sqlite:", 7) == 0 && url[7]) {
        target = strdup(url + 7);
    } else if (strncmp(url, "postgres://", 11) == 0 ||
               strncmp(url, "postgresql://", 13) == 0) {
        snprintf(err, errlen, "store \"postgres://...\" is not supported by this build yet; "
                              "use the default SQLite store or \"sqlite:PATH\"");
        return NULL;
    } else {
        snprintf(err, errlen, "store URL must be \"sqlite:PATH\" or \"postgres://...\"");
        return NULL;
    }
    if (!target) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    s = calloc(1, sizeof(*s));
    if (!s) {
        free(target);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->ops = &sx_store_sqlite_ops;
    s->target = target;
    s->pool_size = pool_size;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->freed, NULL);
    for (int i = 0; i < pool_size; i++)
        s->pool[i].store = s;

    /* Open the first connection now so a bad path fails at start-up. */
    probe = s->ops->connect(s->target, err, errlen);
    if (!probe) {
        sx_store_close(s);
        return NULL;
    }
    s->pool[0].conn = probe;
    return s;
}

static void db_drop_cache(sx_db *db)
{
    for (int i = 0; i < STMT_CACHE; i++) {
        sx_stmt *st = &db->cache[i];

        if (st->impl)
            db->store->ops->finalize(st->impl);
        free(st->sql);
        memset(st, 0, sizeof(*st));
    }
}

void sx_store_close(sx_store *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->pool_size; i++) {
        sx_db *db = &s->pool[i];

        if (db->busy)
            SX_ERROR("store", "closing the store while connection %d is borrowed", i);
        db_drop_cache(db);
        if (db->conn)
            s->ops->disconnect(db->conn);
    }
    pthread_cond_destroy(&s->freed);
    pthread_mutex_destroy(&s->lock);
    free(s->target);
    free(s);
}

const char *sx_store_backend(const sx_store *s)
{
    return s->ops->name;
}

const char *sx_store_file(const sx_store *s)
{
    return strcmp(s->ops->name, "sqlite") == 0 ? s->target : NULL;
}

sx_db *sx_store_acquire(sx_store *s)
{
    sx_db *db = NULL;
    char err[256];

    pthread_mutex_lock(&s->lock);
    for (;;) {
        /* Prefer a connection that is already open. */
        for (int i = 0; i < s->pool_size && !db; i++)
            if (!s->pool[i].busy && s->pool[i].conn)
                db = &s->pool[i];
        for (int i = 0; i < s->pool_size && !db; i++)
            if (!s->pool[i].busy)
                db = &s->pool[i];
        if (db)
            break;
        pthread_cond_wait(&s->freed, &s->lock);
    }
    db->busy = true;
    pthread_mutex_unlock(&s->lock);

    if (!db->conn) {
        db->conn = s->ops->connect(s->target, err, sizeof(err));
        if (!db->conn) {
            SX_ERROR("store", "%s", err);
            sx_store_release(s, db);
            return NULL;
        }
    }
    return db;
}

void sx_store_release(sx_store *s, sx_db *db)
{
    if (!db)
        return;
    if (db->in_txn) {
        SX_WARN("store", "connection released inside a transaction; rolling back");
        sx_db_rollback(db);
    }
    for (int i = 0; i < STMT_CACHE; i++)
        if (db->cache[i].in_use) {
            s->ops->reset(db->cache[i].impl);
            db->cache[i].in_use = false;
        }
    pthread_mutex_lock(&s->lock);
    db->busy = false;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
}

sx_db *sx_store_connect(sx_store *s)
{
    sx_db *db = calloc(1, sizeof(*db));
    char err[256];

    if (!db) {
        SX_ERROR("store", "out of memory opening a connection");
        return NULL;
    }
    db->store = s;
    db->busy = true;
    db->conn = s->ops->connect(s->target, err, sizeof(err));
    if (!db->conn) {
        SX_ERROR("store", "%s", err);
        free(db);
        return NULL;
    }
    return db;
}

void sx_store_disconnect(sx_db *db)
{
    if (!db)
        return;
    if (db->in_txn)
        sx_db_rollback(db);
    db_drop_cache(db);
    db->store->ops->disconnect(db->conn);
    free(db);
}

int sx_store_ping(sx_store *s)
{
    sx_db *db = sx_store_acquire(s);
    sx_stmt *st;
    int rc;

    if (!db)
        return SX_ESTORE;
    st = sx_db_prepare(db, "SELECT 1");
    rc = st ? sx_stmt_step(st) : SX_ESTORE;
    if (st)
        sx_stmt_done(st);
    sx_store_release(s, db);
    return rc == SX_STORE_ROW ? 0 : (rc < 0 ? rc : SX_ESTORE);
}

/* ---- transactions and statements --------------------------------------- */

/* Opens a write transaction: waiting for another connection's to end, or
 * not (SX_EBUSY at once). */
static int begin(sx_db *db, bool wait)
{
    const struct sx_store_ops *ops = db->store->ops;
    int rc;

    if (db->in_txn) {
        SX_ERROR("store", "nested transaction refused");
        return SX_EINVAL;
    }
    rc = !wait && ops->try_begin ? ops->try_begin(db->conn)
                                 : ops->exec(db->conn, ops->begin_sql);
    if (rc == 0)
        db->in_txn = true;
    return rc;
}

int sx_db_begin(sx_db *db)
{
    return begin(db, true);
}

int sx_db_try_begin(sx_db *db)
{
    return begin(db, false);
}

bool sx_store_writer_waiting(const sx_store *s)
{
    int64_t at = s->ops->lock_waited_ns ? s->ops->lock_waited_ns() : 0;

    return at && sx_time_mono_ns() - at < WAITING_NS;
}

int sx_db_commit(sx_db *db)
{
    int rc = db->store->ops->exec(db->conn, "COMMIT");

    if (rc != 0) {
        sx_db_rollback(db);
        return rc;
    }
    db->in_txn = false;
    return 0;
}

int sx_db_rollback(sx_db *db)
{
    if (!db->in_txn)
        return 0;
    /* Reset open statements first: a pending read holds the transaction. */
    for (int i = 0; i < STMT_CACHE; i++)
        if (db->cache[i].impl)
            db->store->ops->reset(db->cache[i].impl);
    db->in_txn = false;
    return db->store->ops->exec(db->conn, "ROLLBACK");
}

int sx_db_exec(sx_db *db, const char *sql)
{
    return db->store->ops->exec(db->conn, sql);
}

sx_stmt *sx_db_prepare(sx_db *db, const char *sql)
{
    const struct sx_store_ops *ops = db->store->ops;
    sx_stmt *slot = NULL, *st;

    for (int i = 0; i < STMT_CACHE; i++) {
        st = &db->cache[i];
        if (st->sql && !st->in_use && strcmp(st->sql, sql) == 0) {
            st->in_use = true;
            return st;
        }
    }

    /* Not cached (or in use by an outer loop): take a free slot, evicting
     * an idle statement round-robin; with none idle, use a one-off. */
    for (int i = 0; i < STMT_CACHE && !slot; i++) {
        int k = (db->next_victim + i) % STMT_CACHE;

        if (!db->cache[k].in_use)
            slot = &db->cache[k];
    }
    if (slot) {
        db->next_victim = (int)(slot - db->cache + 1) % STMT_CACHE;
        if (slot->impl)
            ops->finalize(slot->impl);
        free(slot->sql);
        memset(slot, 0, sizeof(*slot));
        slot->sql = strdup(sql);
        slot->impl = slot->sql ? ops->prepare(db->conn, sql) : NULL;
        if (!slot->impl) {
            free(slot->sql);
            slot->sql = NULL;
            return NULL;
        }
        slot->db = db;
        slot->in_use = true;
        slot->cached = true;
        return slot;
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->impl = ops->prepare(db->conn, sql);
    if (!st->impl) {
        free(st);
        return NULL;
    }
    st->db = db;
    st->in_use = true;
    return st;
}

int sx_stmt_bind_text(sx_stmt *st, int idx, const char *v)
{
    return st->db->store->ops->bind_text(st->impl, idx, v);
}

int sx_stmt_bind_int(sx_stmt *st, int idx, int64_t v)
{
    return st->db->store->ops->bind_int(st->impl, idx, v);
}

int sx_stmt_bind_null(sx_stmt *st, int idx)
{
    return st->db->store->ops->bind_null(st->impl, idx);
}

int sx_stmt_step(sx_stmt *st)
{
    return st->db->store->ops->step(st->impl);
}

const char *sx_stmt_text(sx_stmt *st, int col)
{
    return st->db->store->ops->col_text(st->impl, col);
}

int64_t sx_stmt_int(sx_stmt *st, int col)
{
    return st->db->store->ops->col_int(st->impl, col);
}

double sx_stmt_double(sx_stmt *st, int col)
{
    return st->db->store->ops->col_double(st->impl, col);
}

int sx_stmt_is_null(sx_stmt *st, int col)
{
    return st->db->store->ops->col_is_null(st->impl, col);
}

int64_t sx_stmt_changes(sx_stmt *st)
{
    return st->db->store->ops->changes(st->db->conn);
}

void sx_stmt_done(sx_stmt *st)
{
    const struct sx_store_ops *ops;

    if (!st)
        return;
    ops = st->db->store->ops;
    if (st->cached) {
        ops->reset(st->impl);
        st->in_use = false;
        return;
    }
    ops->finalize(st->impl);
    free(st);
}

static int bind_va(sx_stmt *st, const char *types, va_list ap)
{
    int rc = 0, idx = 1;

    for (const char *t = types; *t && rc == 0; t++, idx++) {
        switch (*t) {
        case 't':
            rc = sx_stmt_bind_text(st, idx, va_arg(ap, const char *));
            break;
        case 'i':
            rc = sx_stmt_bind_int(st, idx, va_arg(ap, int64_t));
            break;
        case 'n':
            rc = sx_stmt_bind_null(st, idx);
            break;
        default:
            SX_ERROR("store", "bad bind type '%c'", *t);
            rc = SX_EINVAL;
        }
    }
    return rc;
}

int64_t sx_db_run(sx_db *db, const char *sql, const char *types, ...)
{
    sx_stmt *st = sx_db_prepare(db, sql);
    va_list ap;
    int64_t rc;

    if (!st)
        return SX_ESTORE;
    va_start(ap, types);
    rc = bind_va(st, types, ap);
    va_end(ap);
    if (rc == 0) {
        while ((rc = sx_stmt_step(st)) == SX_STORE_ROW)
            ;
        if (rc == SX_STORE_DONE)
            rc = sx_stmt_changes(st);
    }
    sx_stmt_done(st);
    return rc;
}

sx_stmt *sx_db_query(sx_db *db, const char *sql, const char *types, ...)
{
    sx_stmt *st = sx_db_prepare(db, sql);
    va_list ap;
    int rc;

    if (!st)
        return NULL;
    va_start(ap, types);
    rc = bind_va(st, types, ap);
    va_end(ap);
    if (rc != 0) {
        sx_stmt_done(st);
        return NULL;
    }
    return st;
}

/* ---- migrations --------------------------------------------------------- */

static const char *const migrations_table =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " module TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " name TEXT NOT NULL,"
    " applied_at BIGINT NOT NULL,"
    " PRIMARY KEY (module, version))";

/* Highest version of module recorded, 0 if none, negative on error. */
static int64_t applied_version(sx_db *db, const char *module)
{
    sx_stmt *st = sx_db_query(db, "SELECT MAX(version) FROM schema_migrations"
                                  " WHERE module = $1", "t", module);
    int64_t v;
    int rc;

    if (!st)
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    v = rc == SX_STORE_ROW && !sx_stmt_is_null(st, 0) ? sx_stmt_int(st, 0) : 0;
    sx_stmt_done(st);
    return rc < 0 ? rc : v;
}

static int apply_one(sx_db *db, const char *module, const struct sx_migration *m,
                     char *err, size_t errlen)
{
    int64_t have;
    int rc;

    rc = sx_db_begin(db);
    if (rc)
        goto fail;
    /* Re-read inside the write lock: another process may have migrated. */
    have = applied_version(db, module);
    if (have < 0) {
        rc = (int)have;
        goto fail;
    }
    if (have >= m->version) {
        sx_db_rollback(db);
        return 0;
    }
    rc = sx_db_exec(db, m->sql);
    if (rc)
        goto fail;
    rc = (int)sx_db_run(db, "INSERT INTO schema_migrations (module, version, name, applied_at)"
                            " VALUES ($1, $2, $3, $4)",
                        "titi", module, (int64_t)m->version, m->name, now_ms());
    if (rc < 0)
        goto fail;
    rc = sx_db_commit(db);
    if (rc)
        goto fail;
    SX_INFO("store", "applied migration %s/%d (%s)", module, m->version, m->name);
    return 0;

fail:
    sx_db_rollback(db);
    snprintf(err, errlen, "migration %s/%d (%s) failed", module, m->version, m->name);
    return rc < 0 ? rc : SX_ESTORE;
}

int sx_store_migrate(sx_store *s, const char *module, const struct sx_migration *m, size_t n,
                     char *err, size_t errlen)
{
    sx_db *db;
    int64_t have;
    int rc = 0;

    for (size_t i = 0; i < n; i++)
        if (m[i].version != (int)i + 1) {
            snprintf(err, errlen, "migrations of %s must be numbered 1, 2, 3, ...", module);
            return SX_EINVAL;
        }
    db = sx_store_acquire(s);
    if (!db) {
        snprintf(err, errlen, "no database connection");
        return SX_ESTORE;
    }
    if (sx_db_exec(db, migrations_table) != 0) {
        snprintf(err, errlen, "creating schema_migrations failed");
        rc = SX_ESTORE;
        goto out;
    }
    have = applied_version(db, module);
    if (have < 0) {
        snprintf(err, errlen, "reading schema_migrations failed");
        rc = (int)have;
        goto out;
    }
    if (have > (int64_t)n) {
        snprintf(err, errlen,
                 "the database has %s schema version %lld but this synapsex knows only %zu;"
                 " run a newer synapsex", module, (long long)have, n);
        rc = SX_EUNSUPPORTED;
        goto out;
    }
    for (size_t i = (size_t)have; i < n && rc == 0; i++)
        rc = apply_one(db, module, &m[i], err, errlen);
out:
    sx_store_release(s, db);
    return rc;
}
