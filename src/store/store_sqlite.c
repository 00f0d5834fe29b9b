/* The SQLite backend of the store (see store.h). One sqlite3 handle per
 * pooled connection, opened in multi-thread mode: the pool in store.c makes
 * sure a handle is used by one thread at a time.
 *
 * Durability: the database runs in WAL mode with synchronous=FULL on every
 * connection, so a COMMIT has reached the disk (the WAL is fsynced) when it
 * returns. Tenants, keys, the audit log and the usage ledger rely on this;
 * we accept the cost of one fsync per write transaction for every table
 * rather than keep two classes of connection. */
#include "store/store_impl.h"

#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a connection waits for another writer before SQLITE_BUSY, and
 * how long it sleeps between two tries. */
#define SQLITE_BUSY_MS 10000
#define BUSY_POLL_MS 1

/* When a connection of this process last found a lock taken (CLOCK_MONOTONIC
 * ns, 0 never): sx_store_writer_waiting() reads it. */
static _Atomic int64_t waited_ns;

static const char *const pragmas =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=FULL;"
    "PRAGMA foreign_keys=ON;"
    "PRAGMA temp_store=MEMORY;";

/* The busy handler: another connection holds the lock; note it and try
 * again in BUSY_POLL_MS, SQLITE_BUSY_MS in all. */
static int sq_busy(void *arg, int tries)
{
    (void)arg;
    atomic_store(&waited_ns, sx_time_mono_ns());
    if ((int64_t)tries * BUSY_POLL_MS >= SQLITE_BUSY_MS)
        return 0;
    sqlite3_sleep(BUSY_POLL_MS);
    return 1;
}

static int64_t sq_lock_waited_ns(void)
{
    return atomic_load(&waited_ns);
}

static void *sq_connect(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc;

    rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite3_open(\"%s\") failed: %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_handler(db, sq_busy, NULL);
    sqlite3_extended_result_codes(db, 1);
    if (sqlite3_exec(db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "configuring \"%s\" failed: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static void sq_disconnect(void *conn)
{
    sqlite3_close_v2(conn);
}

static int sq_exec(void *conn, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(conn, sql, NULL, NULL, &msg) != SQLITE_OK) {
        SX_ERROR("store", "sqlite exec failed: %s", msg ? msg : "?");
        sqlite3_free(msg);
        return SX_ESTORE;
    }
    return 0;
}

/* Rewrites PostgreSQL's "$N" placeholders as SQLite's "?N" (same index),
 * leaving string literals and quoted identifiers alone. */
static char *translate(const char *sql)
{
    char *out = strdup(sql);
    char quote = 0;

    if (!out)
        return NULL;
    for (char *p = out; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            *p = '?';
        }
    }
    return out;
}

static void *sq_prepare(void *conn, const char *sql)
{
    sqlite3_stmt *st = NULL;
    char *text = translate(sql);
    int rc;

    if (!text)
        return NULL;
    rc = sqlite3_prepare_v3(conn, text, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        SX_ERROR("store", "prepare failed: %s (statement: %.60s)", sqlite3_errmsg(conn),
                 sql);
        st = NULL;
    }
    free(text);
    return st;
}

static void sq_finalize(void *st)
{
    sqlite3_finalize(st);
}

static void sq_reset(void *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int bind_rc(void *st, int rc)
{
    if (rc == SQLITE_OK)
        return 0;
    SX_ERROR("store", "bind failed: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
    return SX_ESTORE;
}

static int sq_bind_text(void *st, int idx, const char *v)
{
    if (!v)
        return bind_rc(st, sqlite3_bind_null(st, idx));
    return bind_rc(st, sqlite3_bind_text(st, idx, v, -1, SQLITE_TRANSIENT));
}

static int sq_bind_int(void *st, int idx, int64_t v)
{
    return bind_rc(st, sqlite3_bind_int64(st, idx, v));
}

static int sq_bind_null(void *st, int idx)
{
    return bind_rc(st, sqlite3_bind_null(st, idx));
}

static int sq_step(void *st)
{
    int rc = sqlite3_step(st);

    switch (rc) {
    case SQLITE_ROW:
        return 1;
    case SQLITE_DONE:
        return 0;
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return SX_EEXIST;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        SX_WARN("store", "database busy: %s", sqlite3_errmsg(sqlite3_db_handle(st)));
        return SX_EBUSY;
    default:
        SX_ERROR("store", "step failed: %s (statement: %.60s)",
                 sqlite3_errmsg(sqlite3_db_handle(st)), sqlite3_sql(st));
        return SX_ESTORE;
    }
}

static const char *sq_col_text(void *st, int col)
{
    return (const char *)sqlite3_column_text(st, col);
}

static int64_t sq_col_int(void *st, int col)
{
    return sqlite3_column_int64(st, col);
}

static double sq_col_double(void *st, int col)
{
    return sqlite3_column_double(st, col);
}

static int sq_col_is_null(void *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL;
}

/* BEGIN IMMEDIATE with the busy handler off for the moment. */
static int sq_try_begin(void *conn)
{
    int rc;

    sqlite3_busy_handler(conn, NULL, NULL);
    rc = sqlite3_exec(conn, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    sqlite3_busy_handler(conn, sq_busy, NULL);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return SX_EBUSY;
    if (rc != SQLITE_OK) {
        SX_ERROR("store", "sqlite BEGIN IMMEDIATE failed: %s", sqlite3_errmsg(conn));
        return SX_ESTORE;
    }
    return 0;
}

static int64_t sq_changes(void *conn)
{
    return sqlite3_changes64(conn);
}

const struct sx_store_ops sx_store_sqlite_ops = {
    .name = "sqlite",
    .begin_sql = "BEGIN IMMEDIATE",
    .try_begin = sq_try_begin,
    .lock_waited_ns = sq_lock_waited_ns,
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .exec = sq_exec,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .reset = sq_reset,
    .bind_text = sq_bind_text,
    .bind_int = sq_bind_int,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .col_text = sq_col_text,
    .col_int = sq_col_int,
    .col_double = sq_col_double,
    .col_is_null = sq_col_is_null,
    .changes = sq_changes,
};
