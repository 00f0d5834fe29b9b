/* Tests of the route table: literal and capture matching, literal-over-
 * capture precedence, 404 vs 405 with the Allow list, trailing slashes,
 * malformed patterns and duplicates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "http/router.h"

#include <stdlib.h>
#include <string.h>

static void h(sx_http_req *r, void *ctx)
{
    (void)r;
    (void)ctx;
}

static struct sx_http_router *make(void)
{
    struct sx_http_router *rt = calloc(1, sizeof(*rt));

    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/tenants", h, NULL), 0);
    assert_int_equal(sx_http_router_add(rt, "POST", "/v1/tenants", h, NULL), 1);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/tenants/{t}", h, NULL), 2);
    assert_int_equal(sx_http_router_add(rt, "PATCH", "/v1/tenants/{t}", h, NULL), 3);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/tenants/{t}/keys/{key_id}", h, NULL),
                     4);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/tenants/export", h, NULL), 5);
    assert_int_equal(sx_http_router_add(rt, "GET", "/", h, NULL), 6);
    return rt;
}

static void release(struct sx_http_router *rt)
{
    sx_http_router_clear(rt);
    free(rt);
}

static void test_literal_and_captures(void **state)
{
    struct sx_http_router *rt = make();
    struct sx_http_match m;
    char scratch[256];

    (void)state;
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1/tenants", scratch, &m, NULL, NULL, 0),
                     0);
    assert_int_equal(sx_http_router_match(rt, "POST", "/v1/tenants", scratch, &m, NULL, NULL,
                                          0), 1);
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1/tenants/acme/keys/k_1", scratch, &m,
                                          NULL, NULL, 0), 4);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(m.name[0], "t");
    assert_string_equal(m.value[0], "acme");
    assert_string_equal(m.name[1], "key_id");
    assert_string_equal(m.value[1], "k_1");
    assert_int_equal(sx_http_router_match(rt, "GET", "/", scratch, &m, NULL, NULL, 0), 6);
    release(rt);
}

static void test_literal_beats_capture(void **state)
{
    struct sx_http_router *rt = make();
    struct sx_http_match m;
    char scratch[256];

    (void)state;
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1/tenants/export", scratch, &m, NULL,
                                          NULL, 0), 5);
    assert_int_equal(m.nparams, 0);
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1/tenants/exports", scratch, &m, NULL,
                                          NULL, 0), 2);
    release(rt);
}

static void test_not_found_and_method(void **state)
{
    struct sx_http_router *rt = make();
    struct sx_http_match m;
    char scratch[256], allow[64];
    int pr = -1;

    (void)state;
    assert_int_equal(sx_http_router_match(rt, "GET", "/v2/tenants", scratch, &m, NULL, NULL, 0),
                     SX_HTTP_NO_PATH);
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1/tenants/a/b", scratch, &m, NULL, NULL,
                                          0), SX_HTTP_NO_PATH);
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1//tenants", scratch, &m, NULL, NULL,
                                          0), SX_HTTP_NO_PATH);
    assert_int_equal(sx_http_router_match(rt, "GET", "v1/tenants", scratch, &m, NULL, NULL, 0),
                     SX_HTTP_NO_PATH);
    assert_int_equal(sx_http_router_match(rt, "DELETE", "/v1/tenants/acme", scratch, &m, &pr,
                                          allow, sizeof(allow)), SX_HTTP_NO_METHOD);
    assert_string_equal(allow, "GET, PATCH");
    assert_true(pr == 2 || pr == 3);
    assert_int_equal(sx_http_router_match(rt, "PUT", "/v1/tenants", scratch, &m, &pr, allow,
                                          sizeof(allow)), SX_HTTP_NO_METHOD);
    assert_string_equal(allow, "GET, POST");
    release(rt);
}

static void test_trailing_slash(void **state)
{
    struct sx_http_router *rt = make();
    struct sx_http_match m;
    char scratch[256];

    (void)state;
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1/tenants/", scratch, &m, NULL, NULL,
                                          0), 0);
    assert_int_equal(sx_http_router_match(rt, "GET", "/v1/tenants/acme/", scratch, &m, NULL,
                                          NULL, 0), 2);
    assert_string_equal(m.value[0], "acme");
    release(rt);
}

static void test_bad_patterns(void **state)
{
    struct sx_http_router *rt = make();

    (void)state;
    assert_int_equal(sx_http_router_add(rt, "GET", "v1/x", h, NULL), SX_EINVAL);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1//x", h, NULL), SX_EINVAL);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/{}", h, NULL), SX_EINVAL);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/{a", h, NULL), SX_EINVAL);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/a}", h, NULL), SX_EINVAL);
    assert_int_equal(sx_http_router_add(rt, "get", "/v1/x", h, NULL), SX_EINVAL);
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/x", NULL, NULL), SX_EINVAL);
    /* Same method and shape, even with another capture name. */
    assert_int_equal(sx_http_router_add(rt, "GET", "/v1/tenants/{id}", h, NULL), SX_EEXIST);
    release(rt);
}

static void test_table_full(void **state)
{
    struct sx_http_router *rt = calloc(1, sizeof(*rt));
    char p[32];

    (void)state;
    for (int i = 0; i < SX_HTTP_MAX_ROUTES; i++) {
        snprintf(p, sizeof(p), "/r%d", i);
        assert_int_equal(sx_http_router_add(rt, "GET", p, h, NULL), i);
    }
    assert_int_equal(sx_http_router_add(rt, "GET", "/one-more", h, NULL), SX_ETOOBIG);
    release(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_and_captures),
        cmocka_unit_test(test_literal_beats_capture),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_trailing_slash),
        cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_table_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
