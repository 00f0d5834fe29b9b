/* Internal to src/store/: the operations a store backend (SQLite now,
 * PostgreSQL later) provides to the generic layer in store.c, which owns
 * the connection pool, the statement cache and the migration runner. */
#ifndef SX_STORE_IMPL_H
#define SX_STORE_IMPL_H

#include <stddef.h>
#include <stdint.h>

struct sx_store_ops {
    const char *name;
    const char *begin_sql; /* opens a write transaction */
    /* Opens a write transaction without waiting for another writer:
     * SX_EBUSY at once while one holds the lock. NULL: begin_sql. */
    int (*try_begin)(void *conn);
    /* When a connection last waited for a lock another held (CLOCK_MONOTONIC
     * ns, 0 never). NULL: not known. */
    int64_t (*lock_waited_ns)(void);
    /* Opens one connection to target; NULL and a message on failure. */
    void *(*connect)(const char *target, char *err, size_t errlen);
    void (*disconnect)(void *conn);
    int (*exec)(void *conn, const char *sql);
    void *(*prepare)(void *conn, const char *sql);
    void (*finalize)(void *stmt);
    void (*reset)(void *stmt); /* also clears bindings */
    int (*bind_text)(void *stmt, int idx, const char *v);
    int (*bind_int)(void *stmt, int idx, int64_t v);
    int (*bind_null)(void *stmt, int idx);
    int (*step)(void *stmt);
    const char *(*col_text)(void *stmt, int col);
    int64_t (*col_int)(void *stmt, int col);
    double (*col_double)(void *stmt, int col);
    int (*col_is_null)(void *stmt, int col);
    int64_t (*changes)(void *conn);
};

extern const struct sx_store_ops sx_store_sqlite_ops;

#endif
