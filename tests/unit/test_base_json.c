/* Tests of base/json: the request body parser's rules (duplicate keys,
 * invalid UTF-8, depth limit, object-only top level, empty body, error
 * positions) and the typed lookups. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/json.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *s, int depth, char *err)
{
    return sx_json_parse_object(s, strlen(s), depth, err, 256);
}

static void expect_error(const char *body, int depth, const char *needle)
{
    char err[256];
    json_t *o = parse(body, depth, err);

    if (o)
        fail_msg("'%s' parsed but should not", body);
    if (!strstr(err, needle))
        fail_msg("error '%s' lacks '%s'", err, needle);
}

static void test_valid_object(void **state)
{
    char err[256];
    json_t *o = parse(" {\"model\": \"m\", \"n\": 2, \"t\": 0.5, \"s\": true} \n", 0, err);

    (void)state;
    assert_non_null(o);
    json_decref(o);
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_error("{\"a\":1,\"a\":2}", 0, "duplicate");
    expect_error("{\"x\":{\"b\":1,\"b\":1}}", 0, "duplicate");
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    expect_error("{\"a\":\"\xc3\x28\"}", 0, "not valid UTF-8");
    expect_error("{\"a\":\"\xed\xa0\x80\"}", 0, "not valid UTF-8"); /* surrogate */
    expect_error("{\"\xff\":1}", 0, "not valid UTF-8");
}

static void test_nul_in_string(void **state)
{
    char err[256];
    const char body[] = "{\"a\":\"x\\u0000y\"}";

    (void)state;
    assert_null(sx_json_parse_object(body, sizeof(body) - 1, 0, err, sizeof(err)));
    /* A raw NUL byte inside the buffer is rejected too. */
    assert_null(sx_json_parse_object("{\"a\":\"x\0\"}", 9, 0, err, sizeof(err)));
}

static void test_depth_limit(void **state)
{
    char *deep = malloc(200001), err[256];
    json_t *o;

    (void)state;
    /* Depth 3 is fine with limit 3; depth 4 is not, and says where. */
    o = parse("{\"a\":{\"b\":[1]}}", 3, err);
    assert_non_null(o);
    json_decref(o);
    expect_error("{\"a\":{\"b\":[[1]]}}", 3, "line 1, column 12");

    /* Brackets inside strings do not count. */
    o = parse("{\"a\":\"[[[[[[[[[[\\\"[[[[\"}", 2, err);
    assert_non_null(o);
    json_decref(o);

    /* A huge nesting is refused quickly, without recursion. */
    deep[0] = '{';
    memcpy(deep + 1, "\"a\":", 4);
    memset(deep + 5, '[', 199995);
    deep[200000] = '\0';
    expect_error(deep, 0, "deeper than 64");
    free(deep);
}

static void test_top_level_and_empty(void **state)
{
    (void)state;
    expect_error("[1,2]", 0, "must be a JSON object, not array");
    expect_error("\"str\"", 0, "not string");
    expect_error("42", 0, "not integer");
    expect_error("", 0, "empty");
    expect_error(" \r\n\t", 0, "empty");
    expect_error("{} {}", 0, "line 1");
    expect_error("{\n  \"a\": 1,\n  \"b\": }", 0, "line 3");
}

static void test_typed_lookups(void **state)
{
    char err[256];
    json_t *o = parse("{\"s\":\"v\",\"i\":7,\"f\":1.5,\"b\":false,\"n\":null}", 0, err);
    const char *s = NULL;
    long long i = 0;
    double f = 0;
    int b = 1;

    (void)state;
    assert_non_null(o);
    assert_int_equal(sx_json_get_str(o, "s", &s), 1);
    assert_string_equal(s, "v");
    assert_int_equal(sx_json_get_str(o, "i", &s), -1);
    assert_int_equal(sx_json_get_str(o, "n", &s), 0);
    assert_int_equal(sx_json_get_str(o, "missing", &s), 0);
    assert_int_equal(sx_json_get_int(o, "i", &i), 1);
    assert_int_equal(i, 7);
    assert_int_equal(sx_json_get_int(o, "f", &i), -1);
    assert_int_equal(sx_json_get_num(o, "i", &f), 1); /* integers are numbers */
    assert_int_equal(sx_json_get_num(o, "f", &f), 1);
    assert_true(f == 1.5);
    assert_int_equal(sx_json_get_bool(o, "b", &b), 1);
    assert_int_equal(b, 0);
    assert_string_equal(sx_json_type_name(json_object_get(o, "f")), "number");
    json_decref(o);
}

/* What sx_json_out writes parses back to what went in: every ASCII byte
 * (NUL and the controls escaped), quotes, backslashes, multi-byte UTF-8,
 * integers at both ends, and a jansson value in the middle. */
static void test_out_round_trip(void **state)
{
    struct sx_json_out o = {0};
    char text[200];
    size_t n = 0, len;
    json_t *back, *v = json_pack("{s:[i,s]}", "k", 1, "x");
    const char *utf8 = "Farm\xc3\xa1" "cia \xe2\x82\xac \xf0\x9f\x92\x8a \"q\" \\ /";
    char *out;

    (void)state;
    for (int c = 0; c < 128; c++)
        text[n++] = (char)c;
    memcpy(text + n, utf8, strlen(utf8));
    n += strlen(utf8);
    sx_json_out_raw(&o, "{\"s\":", 5);
    sx_json_out_str(&o, text, n);
    sx_json_out_raw(&o, ",\"lo\":", 6);
    sx_json_out_int(&o, -9223372036854775807LL - 1);
    sx_json_out_raw(&o, ",\"hi\":", 6);
    sx_json_out_int(&o, 9223372036854775807LL);
    sx_json_out_raw(&o, ",\"v\":", 5);
    sx_json_out_value(&o, v);
    sx_json_out_raw(&o, "}", 1);
    out = sx_json_out_take(&o, &len);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    back = json_loadb(out, len, JSON_ALLOW_NUL, NULL);
    assert_non_null(back);
    assert_int_equal(json_string_length(json_object_get(back, "s")), n);
    assert_memory_equal(json_string_value(json_object_get(back, "s")), text, n);
    assert_true(json_integer_value(json_object_get(back, "lo")) == -9223372036854775807LL - 1);
    assert_true(json_integer_value(json_object_get(back, "hi")) == 9223372036854775807LL);
    assert_true(json_equal(json_object_get(back, "v"), v));
    assert_null(o.buf);
    json_decref(back);
    json_decref(v);
    free(out);
}

/* sx_json_out_value() writes what json_dumps(JSON_COMPACT) does, byte for
 * byte: key order, escapes, integers, reals (exponents, ".0", 17 digits),
 * nesting, empty containers. */
static void test_out_value_as_jansson(void **state)
{
    static const char *const texts[] = {
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\\nb\\t\\\"c\\\\\"}],"
        "\"temperature\":0.7,\"top_p\":1.0,\"max_tokens\":16,\"stream\":false,\"stop\":null,"
        "\"n\":{},\"m\":[],\"z\":true}",
        "[1e300, -2.5e-8, 3.0, 0.1, 123456789012345678, -0.0, 1e21, 5e-324, "
        "1.7976931348623157e308]",
        "[0.0, 2.0, -7.0, 1e16, -1e16, 99999999999999984.0, 1e17, -1e17, "
        "4503599627370497.0, 9007199254740993.0, 0.5, -1.5]",
        "{\"ctl\":\"\\u0001\\u001f\\b\\f\\r\\u007f/\\u00e9\\u20ac\\ud83d\\udc8a\"}",
        "{\"b\":1,\"a\":{\"d\":[[[]]],\"c\":\"\"}}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *v = json_loads(texts[i], 0, NULL);
        struct sx_json_out o = {0};
        char *want, *got;
        size_t len;

        assert_non_null(v);
        want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        sx_json_out_value(&o, v);
        got = sx_json_out_take(&o, &len);
        assert_non_null(got);
        assert_string_equal(got, want);
        assert_int_equal(len, strlen(want));
        free(want);
        free(got);
        json_decref(v);
    }
}

/* Integers as printf writes them: the edges, then random ones of every
 * size. */
static void test_format_int_as_printf(void **state)
{
    static const long long edges[] = {0, -1, 9, 10, -10, LLONG_MAX, LLONG_MIN};
    char want[SX_JSON_INT_MAX + 8], got[SX_JSON_INT_MAX];
    uint64_t x = 0x9e3779b97f4a7c15u;

    (void)state;
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        snprintf(want, sizeof(want), "%lld", edges[i]);
        assert_int_equal(sx_json_format_int(got, edges[i]), strlen(want));
        assert_string_equal(got, want);
    }
    for (int i = 0; i < 200000; i++) {
        long long n;

        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        n = (long long)(x >> (i % 63 + 1)) * (i & 1 ? -1 : 1);
        snprintf(want, sizeof(want), "%lld", n);
        assert_int_equal(sx_json_format_int(got, n), strlen(want));
        assert_string_equal(got, want);
    }
}

/* Reals as jansson writes them, over random bit patterns and random whole
 * numbers of every size (halved a few times, so some are not whole). */
static void test_reals_as_jansson(void **state)
{
    uint64_t x = 0x2545f4914f6cdd1du;

    (void)state;
    for (int i = 0; i < 200000; i++) {
        struct sx_json_out o = {0};
        char *want, *got;
        size_t len;
        json_t *v;
        double d;

        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (i % 3 == 0)
            memcpy(&d, &x, sizeof(d));
        else
            d = (double)(long long)(x >> (i % 63 + 1)) / (double)(1ull << (i % 4 * 8)) *
                (i & 1 ? -1 : 1);
        if (!isfinite(d))
            continue;
        v = json_real(d);
        want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        sx_json_out_value(&o, v);
        got = sx_json_out_take(&o, &len);
        assert_non_null(got);
        assert_string_equal(got, want);
        free(want);
        free(got);
        json_decref(v);
    }
}

/* The in-place reader accepts exactly the texts jansson accepts (any top
 * level), over a set of valid and broken ones. */
static void test_reader_agrees_with_jansson(void **state)
{
    static const char *const texts[] = {
        "{}", "[]", " {\"a\" : [1, -2, 3.5e-3, true, false, null, \"x\"]} ", "\"s\"", "0", "-0",
        "9223372036854775807", "-9223372036854775808", "9223372036854775808", "1e999",
        "1e-999", "01", "-", "1.", ".5", "1e", "1e+", "+1", "[1,]", "[,1]", "{\"a\":1,}",
        "{\"a\" 1}", "{a:1}", "[1 2]", "\"\\u0000\"", "\"\\ud83d\\udc8a\"", "\"\\ud83d\"",
        "\"\\udc8a\"", "\"\\ud83dx\"", "\"\\x\"", "\"\\u12\"", "\"a\tb\"", "\"\xc3\xa9\"",
        "\"\xc3\"", "\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "[1] x", "", "   ", "tru", "nulls",
        "{\"a\":{\"b\":[{\"c\":\"\\n\\\"\\\\\\/\\b\\f\\r\\t\"}]}}", "[[[[[[]]]]]]", "[\"a\"",
        "{\"k\":\"v\"", "123456789012345678901234567890", "[\"\\u\x02" "DD[\"]",
        "[\"\\uD83D\\u0041\"]", "[\"\\uZZZZ\"]", "[1e400]", "[-1e-400]",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct sx_json_rd r;
        json_t *v = json_loadb(texts[i], strlen(texts[i]), JSON_DECODE_ANY, NULL);
        bool ours;

        sx_json_rd_init(&r, texts[i], strlen(texts[i]));
        ours = sx_json_rd_skip(&r) && sx_json_rd_end(&r);
        if (ours != (v != NULL))
            fail_msg("text %zu (%s): reader %d, jansson %d", i, texts[i], ours, v != NULL);
        json_decref(v);
    }
}

/* Walking a completion: members, nested objects, arrays, typed reads,
 * skipping, a span handed to jansson, and a cut string. */
static void test_reader_walk(void **state)
{
    const char *text = "{\"id\":\"x\",\"choices\":[{\"message\":{\"role\":\"assistant\","
                       "\"content\":\"Hi \\u00e9\\n\"},\"logprobs\":{\"content\":[{\"t\":1}]},"
                       "\"finish_reason\":\"a_very_long_reason_that_does_not_fit\"},{\"x\":1}],"
                       "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3.0}}";
    struct sx_json_rd r;
    char key[16], k2[16], small[8];
    char *content = NULL;
    size_t len = 0, n;
    const char *span = NULL;
    long long pt = -1, ct = -1;
    int elements = 0, ct_rc = -2;

    (void)state;
    sx_json_rd_init(&r, text, strlen(text));
    assert_true(sx_json_rd_object(&r));
    while (sx_json_rd_member(&r, key, sizeof(key))) {
        if (strcmp(key, "choices") == 0) {
            assert_true(sx_json_rd_array(&r));
            while (sx_json_rd_element(&r)) {
                if (elements++ > 0) {
                    assert_true(sx_json_rd_skip(&r));
                    continue;
                }
                assert_true(sx_json_rd_object(&r));
                while (sx_json_rd_member(&r, k2, sizeof(k2))) {
                    if (strcmp(k2, "message") == 0) {
                        assert_true(sx_json_rd_object(&r));
                        while (sx_json_rd_member(&r, key, sizeof(key)))
                            if (strcmp(key, "content") == 0)
                                assert_int_equal(sx_json_rd_strdup(&r, &content, &len), 1);
                            else
                                assert_int_equal(sx_json_rd_int(&r, &pt), 0); /* a string */
                    } else if (strcmp(k2, "logprobs") == 0) {
                        assert_true(sx_json_rd_span(&r, &span, &n));
                    } else {
                        assert_int_equal(sx_json_rd_str(&r, small, sizeof(small), &n), 1);
                        assert_string_equal(small, "a_very_");
                        assert_int_equal(n, 7);
                    }
                }
            }
        } else if (strcmp(key, "usage") == 0) {
            assert_true(sx_json_rd_object(&r));
            while (sx_json_rd_member(&r, k2, sizeof(k2)))
                if (strcmp(k2, "prompt_tokens") == 0)
                    assert_int_equal(sx_json_rd_int(&r, &pt), 1);
                else
                    ct_rc = sx_json_rd_int(&r, &ct);
        } else {
            assert_true(sx_json_rd_skip(&r));
        }
    }
    assert_true(sx_json_rd_end(&r));
    assert_int_equal(elements, 2);
    assert_string_equal(content, "Hi \xc3\xa9\n");
    assert_int_equal(len, 6);
    assert_int_equal(pt, 12);
    assert_int_equal(ct_rc, 0); /* 3.0 is no integer */
    assert_int_equal(ct, -1);
    assert_memory_equal(span, "{\"content\":[{\"t\":1}]}", n);
    free(content);

    /* An error sticks: every later call fails. */
    sx_json_rd_init(&r, "{\"a\":tru}", 9);
    assert_true(sx_json_rd_object(&r));
    assert_true(sx_json_rd_member(&r, key, sizeof(key)));
    assert_false(sx_json_rd_skip(&r));
    assert_false(sx_json_rd_member(&r, key, sizeof(key)));
    assert_false(sx_json_rd_end(&r));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_object),     cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_invalid_utf8),     cmocka_unit_test(test_nul_in_string),
        cmocka_unit_test(test_depth_limit),      cmocka_unit_test(test_top_level_and_empty),
        cmocka_unit_test(test_typed_lookups),
        cmocka_unit_test(test_out_round_trip),
        cmocka_unit_test(test_out_value_as_jansson),
        cmocka_unit_test(test_format_int_as_printf),
        cmocka_unit_test(test_reals_as_jansson),
        cmocka_unit_test(test_reader_agrees_with_jansson),
        cmocka_unit_test(test_reader_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
