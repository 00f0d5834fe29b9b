/* Tests of base/config: built-in defaults, the file format, environment
 * variables, flags, their precedence (flags > env > file > defaults),
 * repeatable options, and clear errors for unknown or malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/config.h"
#include "base/err.h"
#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static void write_file(const char *text)
{
    FILE *f;

    snprintf(path, sizeof(path), "/tmp/sx_test_config_%d.conf", (int)getpid());
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void clear_env(void)
{
    static const char *const vars[] = {
        "SYNAPSEX_CONFIG", "SYNAPSEX_LISTEN", "SYNAPSEX_DATA_DIR", "SYNAPSEX_LOG_LEVEL",
        "SYNAPSEX_MODELS", "SYNAPSEX_HTTP_THREADS", "SYNAPSEX_MAX_BODY_BYTES",
        "SYNAPSEX_STORE", "SYNAPSEX_REDIS", "SYNAPSEX_TLS_CERT", "SYNAPSEX_TLS_KEY",
    };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

static int teardown(void **state)
{
    (void)state;
    clear_env();
    if (path[0])
        unlink(path);
    return 0;
}

static void test_defaults(void **state)
{
    char err[256];
    struct sx_config *c;

    (void)state;
    clear_env();
    c = sx_config_load(0, NULL, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 8080);
    assert_string_equal(c->data_dir, "./data");
    assert_null(c->store_url);
    assert_null(c->redis_url);
    assert_null(c->tls_cert);
    assert_int_equal(c->max_body_bytes, 1 << 20);
    assert_int_equal(c->http_threads, sx_config_default_http_threads());
    assert_in_range(c->http_threads, 2, 16);
    assert_int_equal(c->log_level, SX_LOG_INFO);
    assert_int_equal(c->shutdown_timeout_s, 10);
    assert_int_equal(c->n_models, 0);
    sx_config_free(c);
    sx_config_free(NULL);
}

static void test_precedence(void **state)
{
    char err[256];
    struct sx_config *c;
    char *argv[] = {"--config", path, "--listen", "0.0.0.0:9000"};

    (void)state;
    clear_env();
    write_file("# comment\n\nlisten = 10.0.0.1:7000\ndata_dir = \"/srv/file data\"\n"
               "log_level = debug\nhttp_threads=8\n");
    setenv("SYNAPSEX_DATA_DIR", "/srv/env", 1);
    setenv("SYNAPSEX_LISTEN", "10.0.0.2:7001", 1);
    c = sx_config_load(4, argv, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(c->listen_host, "0.0.0.0"); /* flag */
    assert_int_equal(c->listen_port, 9000);
    assert_string_equal(c->data_dir, "/srv/env");   /* env over file */
    assert_int_equal(c->log_level, SX_LOG_DEBUG);   /* file over default */
    assert_int_equal(c->http_threads, 8);
    sx_config_free(c);

    /* SYNAPSEX_CONFIG names the file when --config is absent. */
    clear_env();
    setenv("SYNAPSEX_CONFIG", path, 1);
    c = sx_config_load(0, NULL, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(c->data_dir, "/srv/file data");
    assert_int_equal(c->listen_port, 7000);
    sx_config_free(c);
}

static void test_repeatable_lists(void **state)
{
    char err[256];
    struct sx_config *c;
    char *argv[] = {"--model", "a=/m/a.gguf", "--model=b=/m/b.gguf",
                    "--upstream", "vllm=http://gpu:8000/v1"};

    (void)state;
    clear_env();
    write_file("model = file=/m/file.gguf\nmodel = two = /m/two.gguf\n");
    setenv("SYNAPSEX_CONFIG", path, 1);
    c = sx_config_load(0, NULL, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->n_models, 2);
    assert_string_equal(c->models[1].name, "two");
    assert_string_equal(c->models[1].value, "/m/two.gguf");
    sx_config_free(c);

    /* Flags replace the file's list rather than appending to it. */
    c = sx_config_load(5, argv, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->n_models, 2);
    assert_string_equal(c->models[0].name, "a");
    assert_string_equal(c->models[0].value, "/m/a.gguf");
    assert_string_equal(c->models[1].name, "b");
    assert_string_equal(c->models[1].value, "/m/b.gguf");
    assert_int_equal(c->n_upstreams, 1);
    assert_string_equal(c->upstreams[0].value, "http://gpu:8000/v1");
    sx_config_free(c);

    setenv("SYNAPSEX_MODELS", "x=/x.gguf, y=/y.gguf", 1);
    c = sx_config_load(0, NULL, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->n_models, 2);
    assert_string_equal(c->models[1].name, "y");
    sx_config_free(c);
}

static void test_values(void **state)
{
    struct sx_config *c = sx_config_new();
    char err[256];

    (void)state;
    assert_int_equal(sx_config_set(c, "listen", "[::1]:8443", err, sizeof(err)), 0);
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 8443);
    assert_int_equal(sx_config_set(c, "listen", "localhost:0", err, sizeof(err)), 0);
    assert_int_equal(c->listen_port, 0);
    assert_int_equal(sx_config_set(c, "max_body_bytes", "4MiB", err, sizeof(err)), 0);
    assert_int_equal(c->max_body_bytes, 4 << 20);
    assert_int_equal(sx_config_set(c, "max_body_bytes", "512k", err, sizeof(err)), 0);
    assert_int_equal(c->max_body_bytes, 512 << 10);
    assert_int_equal(sx_config_set(c, "max_body_bytes", "65536", err, sizeof(err)), 0);
    assert_int_equal(c->max_body_bytes, 65536);
    assert_int_equal(sx_config_set(c, "log_level", "WARN", err, sizeof(err)), 0);
    assert_int_equal(c->log_level, SX_LOG_WARN);
    sx_config_free(c);
}

static void expect_set_error(const char *key, const char *value, const char *needle)
{
    struct sx_config *c = sx_config_new();
    char err[256] = "";

    assert_int_equal(sx_config_set(c, key, value, err, sizeof(err)), SX_EINVAL);
    if (!strstr(err, needle))
        fail_msg("%s=%s: error '%s' lacks '%s'", key, value, err, needle);
    sx_config_free(c);
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_set_error("listen", "8080", "HOST:PORT");
    expect_set_error("listen", "host:99999", "HOST:PORT");
    expect_set_error("listen", "::1:80", "HOST:PORT");
    expect_set_error("listen", ":80", "HOST:PORT");
    expect_set_error("http_threads", "0", "from 1 to 256");
    expect_set_error("http_threads", "4x", "not an integer");
    expect_set_error("max_body_bytes", "1TB", "size");
    expect_set_error("max_body_bytes", "-5", "size");
    expect_set_error("log_level", "loud", "debug, info");
    expect_set_error("model", "noequals.gguf", "NAME=FILE.gguf");
    expect_set_error("upstream", "=http://x", "NAME=URL");
    expect_set_error("model", "a = ", "NAME=FILE.gguf");
    expect_set_error("data_dir", "", "empty");
    expect_set_error("colour", "blue", "unknown configuration key 'colour'");
}

static void test_errors_name_the_source(void **state)
{
    char err[256];
    struct sx_config *c;
    char *unknown_flag[] = {"--lisen", "1.2.3.4:5"};
    char *missing[] = {"--data"};
    char *stray[] = {"serve-now"};
    char *tls_half[] = {"--tls-cert", "/c.pem"};
    char *no_file[] = {"--config", "/nonexistent/sx.conf"};

    (void)state;
    clear_env();
    assert_null(sx_config_load(2, unknown_flag, err, sizeof(err)));
    assert_non_null(strstr(err, "unknown option '--lisen'"));
    assert_null(sx_config_load(1, missing, err, sizeof(err)));
    assert_non_null(strstr(err, "'--data' needs a value"));
    assert_null(sx_config_load(1, stray, err, sizeof(err)));
    assert_non_null(strstr(err, "unexpected argument 'serve-now'"));
    assert_null(sx_config_load(2, tls_half, err, sizeof(err)));
    assert_non_null(strstr(err, "tls_key"));
    assert_null(sx_config_load(2, no_file, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/sx.conf"));

    write_file("listen = 127.0.0.1:1\n\nbogus_key = 1\n");
    setenv("SYNAPSEX_CONFIG", path, 1);
    c = sx_config_load(0, NULL, err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, ":3: unknown key 'bogus_key'"));

    write_file("just words\n");
    assert_null(sx_config_load(0, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, ":1: expected 'key = value'"));

    clear_env();
    setenv("SYNAPSEX_HTTP_THREADS", "many", 1);
    assert_null(sx_config_load(0, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "SYNAPSEX_HTTP_THREADS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_defaults, teardown),
        cmocka_unit_test_teardown(test_precedence, teardown),
        cmocka_unit_test_teardown(test_repeatable_lists, teardown),
        cmocka_unit_test_teardown(test_values, teardown),
        cmocka_unit_test_teardown(test_bad_values, teardown),
        cmocka_unit_test_teardown(test_errors_name_the_source, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
