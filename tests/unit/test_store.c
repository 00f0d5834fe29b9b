/* Unit tests of the store (src/store/) on real SQLite files in a temporary
 * directory: migrations, placeholders, constraints, transactions, the
 * statement cache and the connection pool under several threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "store/store.h"

struct fx {
    char dir[64];
    sx_store *s;
};

static const struct sx_migration demo_v2[] = {
    {1, "items", "CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)"},
    {2, "items index", "CREATE INDEX items_by_n ON items (n)"},
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    char err[256];

    snprintf(f->dir, sizeof(f->dir), "/tmp/sx_test_store_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->s = sx_store_open(NULL, f->dir, 4, err, sizeof(err));
    assert_non_null(f->s);
    assert_int_equal(sx_store_migrate(f->s, "demo", demo_v2, 2, err, sizeof(err)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];

    sx_store_close(f->s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static int64_t count_rows(sx_store *s, const char *sql)
{
    sx_db *db = sx_store_acquire(s);
    sx_stmt *st = sx_db_query(db, sql, "");
    int64_t n = -1;

    if (st && sx_stmt_step(st) == SX_STORE_ROW)
        n = sx_stmt_int(st, 0);
    sx_stmt_done(st);
    sx_store_release(s, db);
    return n;
}

static void test_migrations_recorded_once(void **state)
{
    struct fx *f = *state;
    char err[256];

    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM schema_migrations"
                                      " WHERE module = 'demo'"), 2);
    /* Running again applies nothing and fails nothing. */
    assert_int_equal(sx_store_migrate(f->s, "demo", demo_v2, 2, err, sizeof(err)), 0);
    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM schema_migrations"), 2);
}

static void test_migrations_survive_reopen_and_refuse_downgrade(void **state)
{
    struct fx *f = *state;
    char err[256];
    sx_store *again;

    sx_store_close(f->s);
    again = sx_store_open(NULL, f->dir, 2, err, sizeof(err));
    assert_non_null(again);
    f->s = again;
    /* An older binary that knows only version 1 must refuse to run. */
    assert_int_equal(sx_store_migrate(again, "demo", demo_v2, 1, err, sizeof(err)),
                     SX_EUNSUPPORTED);
    assert_non_null(strstr(err, "newer"));
    assert_int_equal(sx_store_migrate(again, "demo", demo_v2, 2, err, sizeof(err)), 0);
}

static void test_failed_migration_leaves_nothing(void **state)
{
    struct fx *f = *state;
    static const struct sx_migration bad[] = {
        {1, "half", "CREATE TABLE half (x TEXT); CREATE TABLE half (y TEXT)"},
    };
    static const struct sx_migration gap[] = {{2, "gap", "SELECT 1"}};
    char err[256];

    assert_int_not_equal(sx_store_migrate(f->s, "bad", bad, 1, err, sizeof(err)), 0);
    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM sqlite_master"
                                      " WHERE name = 'half'"), 0);
    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM schema_migrations"
                                      " WHERE module = 'bad'"), 0);
    assert_int_equal(sx_store_migrate(f->s, "gap", gap, 1, err, sizeof(err)), SX_EINVAL);
}

static void test_placeholders_by_number(void **state)
{
    struct fx *f = *state;
    sx_db *db = sx_store_acquire(f->s);
    sx_stmt *st;

    /* $2 before $1, and $1 used twice: numbers, not positions, bind. */
    assert_int_equal(sx_db_run(db, "INSERT INTO items (n, id, note) VALUES ($2, $1, $1)",
                               "ti", "a", (int64_t)7), 1);
    st = sx_db_query(db, "SELECT id, n, note FROM items WHERE id = $1", "t", "a");
    assert_non_null(st);
    assert_int_equal(sx_stmt_step(st), SX_STORE_ROW);
    assert_string_equal(sx_stmt_text(st, 0), "a");
    assert_int_equal(sx_stmt_int(st, 1), 7);
    assert_string_equal(sx_stmt_text(st, 2), "a");
    assert_int_equal(sx_stmt_step(st), SX_STORE_DONE);
    sx_stmt_done(st);
    /* A '$' inside a string literal is left alone. */
    assert_int_equal(sx_db_run(db, "INSERT INTO items (id, n, note) VALUES ($1, 1, '$1')",
                               "t", "b"), 1);
    st = sx_db_query(db, "SELECT note FROM items WHERE id = 'b'", "");
    assert_int_equal(sx_stmt_step(st), SX_STORE_ROW);
    assert_string_equal(sx_stmt_text(st, 0), "$1");
    sx_stmt_done(st);
    sx_store_release(f->s, db);
}

static void test_unique_is_eexist_and_null_binds(void **state)
{
    struct fx *f = *state;
    sx_db *db = sx_store_acquire(f->s);
    sx_stmt *st;

    assert_int_equal(sx_db_run(db, "INSERT INTO items (id, n, note) VALUES ($1, $2, $3)",
                               "tit", "x", (int64_t)1, (const char *)NULL), 1);
    assert_int_equal(sx_db_run(db, "INSERT INTO items (id, n) VALUES ($1, $2)", "ti", "x",
                               (int64_t)2), SX_EEXIST);
    st = sx_db_query(db, "SELECT note FROM items WHERE id = 'x'", "");
    assert_int_equal(sx_stmt_step(st), SX_STORE_ROW);
    assert_true(sx_stmt_is_null(st, 0));
    assert_null(sx_stmt_text(st, 0));
    sx_stmt_done(st);
    sx_store_release(f->s, db);
}

static void test_rollback_discards_and_commit_keeps(void **state)
{
    struct fx *f = *state;
    sx_db *db = sx_store_acquire(f->s);

    assert_int_equal(sx_db_begin(db), 0);
    assert_int_equal(sx_db_begin(db), SX_EINVAL); /* no nesting */
    assert_int_equal(sx_db_run(db, "INSERT INTO items (id, n) VALUES ('r', 1)", ""), 1);
    assert_int_equal(sx_db_rollback(db), 0);
    assert_int_equal(sx_db_begin(db), 0);
    assert_int_equal(sx_db_run(db, "INSERT INTO items (id, n) VALUES ('c', 1)", ""), 1);
    assert_int_equal(sx_db_commit(db), 0);
    /* A transaction left open is rolled back on release. */
    assert_int_equal(sx_db_begin(db), 0);
    assert_int_equal(sx_db_run(db, "INSERT INTO items (id, n) VALUES ('l', 1)", ""), 1);
    sx_store_release(f->s, db);
    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM items WHERE id = 'r'"), 0);
    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM items WHERE id = 'c'"), 1);
    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM items WHERE id = 'l'"), 0);
}

static void test_same_statement_nested(void **state)
{
    struct fx *f = *state;
    sx_db *db = sx_store_acquire(f->s);
    const char *q = "SELECT n FROM items WHERE n >= $1 ORDER BY n";
    sx_stmt *outer, *inner;
    int rows = 0;

    for (int64_t i = 0; i < 3; i++)
        assert_int_equal(sx_db_run(db, "INSERT INTO items (id, n) VALUES ($1, $2)", "ti",
                                   i == 0 ? "n0" : i == 1 ? "n1" : "n2", i), 1);
    /* The same SQL prepared while the first is still stepping. */
    outer = sx_db_query(db, q, "i", (int64_t)0);
    while (sx_stmt_step(outer) == SX_STORE_ROW) {
        inner = sx_db_query(db, q, "i", sx_stmt_int(outer, 0));
        assert_non_null(inner);
        while (sx_stmt_step(inner) == SX_STORE_ROW)
            rows++;
        sx_stmt_done(inner);
    }
    sx_stmt_done(outer);
    assert_int_equal(rows, 3 + 2 + 1);
    sx_store_release(f->s, db);
}

struct writer {
    sx_store *s;
    int id;
    int failures;
};

static void *write_many(void *arg)
{
    struct writer *w = arg;
    char id[32];

    for (int i = 0; i < 40; i++) {
        sx_db *db = sx_store_acquire(w->s);

        snprintf(id, sizeof(id), "w%d-%d", w->id, i);
        if (!db || sx_db_begin(db) != 0 ||
            sx_db_run(db, "INSERT INTO items (id, n) VALUES ($1, $2)", "ti", id,
                      (int64_t)i) != 1 ||
            sx_db_commit(db) != 0)
            w->failures++;
        sx_store_release(w->s, db);
    }
    return NULL;
}

static void test_pool_under_threads(void **state)
{
    struct fx *f = *state;
    struct writer w[6];
    pthread_t th[6];

    /* Six threads share a pool of four connections. */
    for (int i = 0; i < 6; i++) {
        w[i] = (struct writer){f->s, i, 0};
        pthread_create(&th[i], NULL, write_many, &w[i]);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(count_rows(f->s, "SELECT COUNT(*) FROM items WHERE id LIKE 'w%'"),
                     240);
    assert_int_equal(sx_store_ping(f->s), 0);
}

static void test_urls(void **state)
{
    struct fx *f = *state;
    char err[256], url[128];
    sx_store *s;

    (void)state;
    assert_null(sx_store_open("postgres://localhost/x", NULL, 2, err, sizeof(err)));
    assert_non_null(strstr(err, "not supported"));
    assert_null(sx_store_open("mysql://x", NULL, 2, err, sizeof(err)));
    assert_null(sx_store_open(NULL, f->dir, 0, err, sizeof(err)));
    snprintf(url, sizeof(url), "sqlite:%s/other.db", f->dir);
    s = sx_store_open(url, NULL, 1, err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(sx_store_backend(s), "sqlite");
    sx_store_close(s);
    assert_int_equal(access(url + 7, F_OK), 0);
    sx_store_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations_recorded_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_survive_reopen_and_refuse_downgrade,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_migration_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_placeholders_by_number, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unique_is_eexist_and_null_binds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_rollback_discards_and_commit_keeps, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_same_statement_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_under_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_urls, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
