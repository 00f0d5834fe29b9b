/* The store: one SQL interface over SQLite (the embedded default) and, in a
 * later issue, PostgreSQL. Domain modules write SQL both engines run: "$1"
 * style placeholders, TEXT / INTEGER / BIGINT columns, booleans as 0/1,
 * times as BIGINT milliseconds since the Unix epoch. Each module owns its
 * tables and registers its own numbered migrations with sx_store_migrate().
 *
 * Threads: the store holds a small pool of connections. A thread borrows one
 * with sx_store_acquire(), uses it alone, and gives it back with
 * sx_store_release(). Statements belong to the connection they came from. */
#ifndef SX_STORE_STORE_H
#define SX_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sx_store sx_store;
typedef struct sx_db sx_db;     /* one borrowed connection */
typedef struct sx_stmt sx_stmt; /* one prepared statement on a connection */

/* Results of sx_stmt_step() besides negative SX_E* codes. */
enum { SX_STORE_DONE = 0, SX_STORE_ROW = 1 };

/* One schema step of a module. Versions start at 1 and increase by one. */
struct sx_migration {
    int version;
    const char *name; /* short description, stored in schema_migrations */
    const char *sql;  /* one or more statements, no parameters */
};

/* Opens the store named by url: NULL or "" means SQLite at
 * <data_dir>/synapsex.db, "sqlite:PATH" a SQLite file, "postgres://..." is
 * refused for now (SX_EUNSUPPORTED). pool_size connections (1..64) are
 * opened lazily. Returns NULL and a message in err on failure. */
sx_store *sx_store_open(const char *url, const char *data_dir, int pool_size, char *err,
                        size_t errlen);
void sx_store_close(sx_store *s); /* accepts NULL; all connections must be released */

/* "sqlite" or "postgres". */
const char *sx_store_backend(const sx_store *s);

/* The database file of an SQLite store (owned by the store), NULL for a
 * database server. Modules keep files that belong with the database (the
 * usage ledger's journal) next to it. */
const char *sx_store_file(const sx_store *s);

/* Applies, in version order, the migrations of module that the database
 * has not recorded yet, each in its own transaction together with its row
 * in schema_migrations. Returns 0, SX_EINVAL (versions not 1, 2, 3, ...),
 * SX_EUNSUPPORTED (the database is newer than this binary) or SX_ESTORE;
 * the reason is written to err. */
int sx_store_migrate(sx_store *s, const char *module, const struct sx_migration *m, size_t n,
                     char *err, size_t errlen);

/* 0 when a trivial query succeeds, else a negative code. */
int sx_store_ping(sx_store *s);

/* Borrows a connection, waiting while all are in use. NULL if a new
 * connection could not be opened (logged). */
sx_db *sx_store_acquire(sx_store *s);
/* Gives a connection back; an open transaction is rolled back first.
 * Accepts NULL. */
void sx_store_release(sx_store *s, sx_db *db);

/* A connection of the caller's own, outside the pool (a module that keeps
 * one for its lifetime, e.g. the usage ledger with its own durability
 * setting). Used by one thread at a time like a borrowed one. NULL if it
 * cannot be opened (logged). sx_store_disconnect() rolls back an open
 * transaction and closes it; accepts NULL. Close these before the store. */
sx_db *sx_store_connect(sx_store *s);
void sx_store_disconnect(sx_db *db);

/* Write transactions. begin takes the write lock at once (SQLite
 * "BEGIN IMMEDIATE") so two writers never deadlock on upgrade; commit is
 * durable when it returns (synchronous=FULL). 0 or a negative code. */
int sx_db_begin(sx_db *db);
/* As sx_db_begin, but SX_EBUSY at once where begin would wait for another
 * connection's write transaction to end (for a thread that must not
 * block, which tries again later). */
int sx_db_try_begin(sx_db *db);
/* Whether a connection waits for a lock another holds (found it taken
 * within the last few milliseconds; with SQLite, any connection of the
 * process): whoever holds transactions open for long (the usage ledger's
 * steps) commits and lets it in. */
bool sx_store_writer_waiting(const sx_store *s);
int sx_db_commit(sx_db *db);
int sx_db_rollback(sx_db *db); /* safe to call without a transaction */

/* Runs statements that take no parameters (DDL). 0 or SX_ESTORE. */
int sx_db_exec(sx_db *db, const char *sql);

/* Prepares sql (placeholders "$1", "$2", ...). Statements are cached per
 * connection; sx_stmt_done() returns one to the cache. NULL on SQL error
 * (logged with the statement's first words). */
sx_stmt *sx_db_prepare(sx_db *db, const char *sql);

/* Binding: index from 1. A NULL text binds SQL NULL. 0 or SX_ESTORE. */
int sx_stmt_bind_text(sx_stmt *st, int idx, const char *v);
int sx_stmt_bind_int(sx_stmt *st, int idx, int64_t v);
int sx_stmt_bind_null(sx_stmt *st, int idx);

/* Runs one step: SX_STORE_ROW, SX_STORE_DONE, SX_EEXIST (a unique or
 * primary key constraint refused the write), SX_EBUSY or SX_ESTORE. */
int sx_stmt_step(sx_stmt *st);

/* Columns of the current row, from 0. Text is NULL for SQL NULL and lives
 * until the next step or sx_stmt_done(). */
const char *sx_stmt_text(sx_stmt *st, int col);
int64_t sx_stmt_int(sx_stmt *st, int col);
double sx_stmt_double(sx_stmt *st, int col);
int sx_stmt_is_null(sx_stmt *st, int col);

/* Rows changed by the last completed write on this statement's connection. */
int64_t sx_stmt_changes(sx_stmt *st);

/* Resets the statement, clears its bindings, returns it to the cache. */
void sx_stmt_done(sx_stmt *st);

/* Shorthand for a write: prepare, bind by types ('t' const char * or NULL,
 * 'i' int64_t, 'n' SQL NULL taking no argument), step to the end. Returns
 * the number of rows changed (>= 0) or a negative code from step. */
int64_t sx_db_run(sx_db *db, const char *sql, const char *types, ...);

/* Shorthand for a read: prepare and bind like sx_db_run, no step. The caller
 * steps and calls sx_stmt_done(). NULL on failure. */
sx_stmt *sx_db_query(sx_db *db, const char *sql, const char *types, ...);

#endif
