/* Tests of the GGUF reader and writer: the fixture models and vocabularies,
 * every metadata type (nested arrays included) through a write/read round
 * trip, and hostile files: every truncation of a valid file, absurd counts,
 * lengths, shapes, offsets and types must fail with a message, never crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/gguf.h"

#include "fixtures.h"

static sx_gguf *open_fixture(const char *rel, char *err, size_t errlen)
{
    char path[8192];

    snprintf(path, sizeof(path), "%s/%s", fixtures, rel);
    return sx_gguf_open(path, err, errlen);
}

static void test_fixture_llama(void **state)
{
    char err[256] = "";
    sx_gguf *g;
    const sx_gguf_tensor *t;
    size_t n;
    const char *s;
    uint32_t u;
    float f;

    (void)state;
    NEED_FIXTURES();
    g = open_fixture("models/tiny-llama-q8_0.gguf", err, sizeof(err));
    assert_non_null(g);
    assert_int_equal(sx_gguf_version(g), 3);
    s = sx_gguf_get_str(g, "general.architecture", &n);
    assert_non_null(s);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "llama", 5);
    assert_int_equal(sx_gguf_get_u32(g, "llama.embedding_length", &u), 0);
    assert_int_equal(u, 64);
    assert_int_equal(sx_gguf_get_f32(g, "llama.rope.freq_base", &f), 0);
    assert_true(f == 10000.0f);
    assert_int_equal(sx_gguf_get_u32(g, "no.such.key", &u), SX_ENOTFOUND);
    assert_int_equal(sx_gguf_get_f32(g, "general.architecture", &f),
                     SX_EINVAL);

    t = sx_gguf_find_tensor(g, "blk.1.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->type, SX_GGML_Q8_0);
    assert_int_equal(t->ne[0], 192);
    assert_int_equal(t->ne[1], 64);
    assert_int_equal(t->nbytes, 64 * 192 / 32 * 34);
    t = sx_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    assert_non_null(t);
    assert_int_equal(t->type, SX_GGML_F32);
    assert_int_equal(t->n_dims, 1);
    assert_null(sx_gguf_find_tensor(g, "blk.9.attn_norm.weight"));
    assert_int_equal(sx_gguf_n_tensors(g), 2 * 9 + 3);
    sx_gguf_close(g);
}

static void test_fixture_vocab_strings(void **state)
{
    char err[256] = "";
    sx_gguf *g;
    int et;
    uint64_t n;
    size_t len;
    const char *s;

    (void)state;
    NEED_FIXTURES();
    g = open_fixture("tokenizer/ggml-vocab-qwen2.gguf", err, sizeof(err));
    assert_non_null(g);
    assert_int_equal(sx_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), 0);
    assert_int_equal(et, SX_GGUF_STR);
    assert_int_equal(n, 151936);
    s = sx_gguf_arr_str(g, "tokenizer.ggml.tokens", 151643, &len);
    assert_non_null(s);
    assert_int_equal(len, strlen("<|endoftext|>"));
    assert_memory_equal(s, "<|endoftext|>", len);
    assert_null(sx_gguf_arr_str(g, "tokenizer.ggml.tokens", n, &len));
    assert_int_equal(sx_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n), 0);
    assert_int_equal(n, 151387);
    assert_null(sx_gguf_arr_data(g, "tokenizer.ggml.tokens"));
    sx_gguf_close(g);

    g = open_fixture("models/does-not-exist.gguf", err, sizeof(err));
    assert_null(g);
    assert_non_null(strstr(err, "does-not-exist"));
}

/* Fills tensor data with a pattern derived from the index. */
static int fill_pattern(void *ctx, int index, const sx_gguf_tensor *t,
                        void *dst)
{
    (void)ctx;
    memset(dst, 0x10 + index, (size_t)t->nbytes);
    return 0;
}

/* A small file with every value type, a nested array and two tensors. */
static void build_sample(void **buf, size_t *len)
{
    sx_gguf_writer *w = sx_gguf_writer_new();
    const int32_t ia[3] = {-1, 2, 70000};
    const double da[2] = {0.5, -2.25};
    const int64_t ne2[2] = {64, 3}, ne1[1] = {5};
    uint8_t raw[64];
    size_t o = 0;
    uint64_t v;
    uint32_t t;

    assert_non_null(w);
    assert_int_equal(sx_gguf_writer_str(w, "general.architecture", "llama",
                                        5), 0);
    assert_int_equal(sx_gguf_writer_u32(w, "a.u32", 4000000000u), 0);
    assert_int_equal(sx_gguf_writer_f32(w, "a.f32", 1.5f), 0);
    assert_int_equal(sx_gguf_writer_bool(w, "a.bool", true), 0);
    assert_int_equal(sx_gguf_writer_arr(w, "a.i32s", SX_GGUF_I32, ia, 3), 0);
    assert_int_equal(sx_gguf_writer_arr(w, "a.f64s", SX_GGUF_F64, da, 2), 0);
    assert_int_equal(sx_gguf_writer_u32(w, "a.u32", 1), SX_EEXIST);

    /* Raw values: i8 -5, u16 65535, i64 -7, f64 3.0, and [[1,2],["x"]]. */
    raw[0] = (uint8_t)-5;
    assert_int_equal(sx_gguf_writer_raw(w, "a.i8", SX_GGUF_I8, raw, 1), 0);
    raw[0] = raw[1] = 0xff;
    assert_int_equal(sx_gguf_writer_raw(w, "a.u16", SX_GGUF_U16, raw, 2), 0);
    {
        int64_t i64 = -7;
        double f64 = 3.0;

        assert_int_equal(sx_gguf_writer_raw(w, "a.i64", SX_GGUF_I64, &i64,
                                            8), 0);
        assert_int_equal(sx_gguf_writer_raw(w, "a.f64", SX_GGUF_F64, &f64,
                                            8), 0);
    }
    t = SX_GGUF_ARR; memcpy(raw + o, &t, 4); o += 4;   /* outer: 2 arrays */
    v = 2; memcpy(raw + o, &v, 8); o += 8;
    t = SX_GGUF_U8; memcpy(raw + o, &t, 4); o += 4;    /* [1, 2] */
    v = 2; memcpy(raw + o, &v, 8); o += 8;
    raw[o++] = 1; raw[o++] = 2;
    t = SX_GGUF_STR; memcpy(raw + o, &t, 4); o += 4;   /* ["x"] */
    v = 1; memcpy(raw + o, &v, 8); o += 8;
    v = 1; memcpy(raw + o, &v, 8); o += 8;
    raw[o++] = 'x';
    assert_int_equal(sx_gguf_writer_raw(w, "a.nested", SX_GGUF_ARR, raw, o),
                     0);

    assert_int_equal(sx_gguf_writer_tensor(w, "w", SX_GGML_Q8_0, 2, ne2), 0);
    assert_int_equal(sx_gguf_writer_tensor(w, "b", SX_GGML_F32, 1, ne1), 0);
    assert_int_equal(sx_gguf_writer_tensor(w, "bad", SX_GGML_Q4_0, 1, ne1),
                     SX_EINVAL);
    assert_int_equal(sx_gguf_writer_to_buffer(w, fill_pattern, NULL, buf,
                                              len), 0);
    sx_gguf_writer_free(w);
}

static void test_round_trip(void **state)
{
    void *buf;
    size_t len, n;
    char err[256] = "";
    sx_gguf *g;
    uint32_t u;
    int64_t i;
    float f;
    bool b;
    int et;
    uint64_t cnt;
    const int32_t *ia;
    const sx_gguf_tensor *t;

    (void)state;
    build_sample(&buf, &len);
    g = sx_gguf_open_buffer(buf, len, err, sizeof(err));
    assert_non_null(g);
    assert_int_equal(sx_gguf_n_kv(g), 11);
    assert_int_equal(sx_gguf_get_u32(g, "a.u32", &u), 0);
    assert_int_equal(u, 4000000000u);
    assert_int_equal(sx_gguf_get_i64(g, "a.u32", &i), 0);
    assert_int_equal(i, 4000000000LL);
    assert_int_equal(sx_gguf_get_i64(g, "a.i8", &i), 0);
    assert_int_equal(i, -5);
    assert_int_equal(sx_gguf_get_u32(g, "a.i8", &u), SX_EINVAL);
    assert_int_equal(sx_gguf_get_u32(g, "a.u16", &u), 0);
    assert_int_equal(u, 65535);
    assert_int_equal(sx_gguf_get_i64(g, "a.i64", &i), 0);
    assert_int_equal(i, -7);
    assert_int_equal(sx_gguf_get_f32(g, "a.f32", &f), 0);
    assert_true(f == 1.5f);
    assert_int_equal(sx_gguf_get_f32(g, "a.f64", &f), 0);
    assert_true(f == 3.0f);
    assert_int_equal(sx_gguf_get_bool(g, "a.bool", &b), 0);
    assert_true(b);
    assert_int_equal(sx_gguf_get_bool(g, "a.u32", &b), SX_EINVAL);
    assert_int_equal(sx_gguf_get_arr(g, "a.i32s", &et, &cnt), 0);
    assert_int_equal(et, SX_GGUF_I32);
    assert_int_equal(cnt, 3);
    ia = sx_gguf_arr_data(g, "a.i32s");
    assert_non_null(ia);
    assert_int_equal(ia[2], 70000);
    assert_int_equal(sx_gguf_get_arr(g, "a.nested", &et, &cnt), 0);
    assert_int_equal(et, SX_GGUF_ARR);
    assert_int_equal(cnt, 2);
    assert_null(sx_gguf_arr_data(g, "a.nested"));
    assert_int_equal(sx_gguf_get_arr(g, "a.f32", &et, &cnt), SX_EINVAL);
    assert_null(sx_gguf_get_str(g, "a.f32", &n));

    t = sx_gguf_find_tensor(g, "w");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 3 * 2 * 34);
    assert_int_equal(((const uint8_t *)t->data)[0], 0x10);
    assert_int_equal((uintptr_t)((const uint8_t *)t->data -
                                 (const uint8_t *)buf) % 32, 0);
    t = sx_gguf_find_tensor(g, "b");
    assert_non_null(t);
    assert_int_equal(((const uint8_t *)t->data)[19], 0x11);
    sx_gguf_close(g);
    free(buf);
}

/* Every strict prefix of a valid file is rejected with a message. */
static void test_truncated(void **state)
{
    void *buf;
    size_t len;
    char err[256];

    (void)state;
    build_sample(&buf, &len);
    for (size_t n = 0; n < len - 1; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        sx_gguf *g;

        memcpy(copy, buf, n);
        err[0] = '\0';
        g = sx_gguf_open_buffer(copy, n, err, sizeof(err));
        if (g) {
            /* Only the last tensor's 12 bytes of padding may be cut. */
            assert_true(n >= len - 12);
            sx_gguf_close(g);
        } else {
            assert_true(strlen(err) > 6);
        }
        free(copy);
    }
    free(buf);
}

/* Patches a u64 at a byte offset of a copy and expects a named error. */
static void expect_bad(const void *buf, size_t len, size_t off,
                       const void *val, size_t vlen, const char *needle)
{
    uint8_t *copy = malloc(len);
    char err[256] = "";
    sx_gguf *g;

    memcpy(copy, buf, len);
    memcpy(copy + off, val, vlen);
    g = sx_gguf_open_buffer(copy, len, err, sizeof(err));
    if (g || !strstr(err, needle))
        fail_msg("offset %zu: expected error with '%s', got '%s'", off,
                 needle, err);
    free(copy);
}

static size_t find_bytes(const void *buf, size_t len, const char *s,
                         size_t n)
{
    const uint8_t *p = memmem(buf, len, s, n);

    assert_non_null(p);
    return (size_t)(p - (const uint8_t *)buf);
}

static void test_hostile(void **state)
{
    void *buf;
    size_t len, k;
    uint64_t big = UINT64_MAX / 2;
    uint32_t u;

    (void)state;
    build_sample(&buf, &len);
    expect_bad(buf, len, 0, "GGUX", 4, "magic");
    u = 7;
    expect_bad(buf, len, 4, &u, 4, "version 7");
    expect_bad(buf, len, 8, &big, 8, "tensor count");
    expect_bad(buf, len, 16, &big, 8, "metadata count");

    /* Key length (8 bytes before the key text) made huge. */
    k = find_bytes(buf, len, "a.u32", 5);
    expect_bad(buf, len, k - 8, &big, 8, "metadata key");
    /* Unknown value type. */
    u = 99;
    expect_bad(buf, len, k + 5, &u, 4, "unknown value type 99");
    /* Array count of a.i32s: key, type (4), elem type (4), then count. */
    k = find_bytes(buf, len, "a.i32s", 6);
    expect_bad(buf, len, k + 6 + 8, &big, 8, "does not fit");
    /* Duplicate key: rename a.f32 to a.u32. */
    k = find_bytes(buf, len, "a.f32", 5);
    expect_bad(buf, len, k, "a.u32", 5, "appears twice");

    /* Tensor "w": name, n_dims, ne[0], ne[1], type, offset. */
    k = find_bytes(buf, len, "\x01\x00\x00\x00\x00\x00\x00\x00w", 9) + 9;
    u = 9;
    expect_bad(buf, len, k, &u, 4, "dimensions");
    expect_bad(buf, len, k + 4, &big, 8, "too many elements");
    big = 63;
    expect_bad(buf, len, k + 4, &big, 8, "block size");
    big = 0;
    expect_bad(buf, len, k + 4, &big, 8, "dimension 0 is 0");
    u = 31;
    expect_bad(buf, len, k + 20, &u, 4, "unknown type 31");
    big = 4096;
    expect_bad(buf, len, k + 24, &big, 8, "runs past the end");
    big = 3;
    expect_bad(buf, len, k + 24, &big, 8, "not aligned");
    big = 1ULL << 40;
    expect_bad(buf, len, k + 12, &big, 8, "runs past the end");
    free(buf);
}

/* Arrays nested deeper than the limit are refused, not recursed into. */
static void test_deep_nesting(void **state)
{
    uint8_t raw[2048];
    size_t o = 0;
    uint32_t t = SX_GGUF_ARR;
    uint64_t one = 1;
    sx_gguf_writer *w = sx_gguf_writer_new();
    void *buf;
    size_t len;
    char err[256] = "";

    (void)state;
    for (int d = 0; d < 100; d++) {
        memcpy(raw + o, &t, 4);
        memcpy(raw + o + 4, &one, 8);
        o += 12;
    }
    t = SX_GGUF_U8;
    memcpy(raw + o, &t, 4);
    memcpy(raw + o + 4, &one, 8);
    o += 12;
    raw[o++] = 0;
    assert_int_equal(sx_gguf_writer_raw(w, "deep", SX_GGUF_ARR, raw, o), 0);
    assert_int_equal(sx_gguf_writer_to_buffer(w, NULL, NULL, &buf, &len), 0);
    assert_null(sx_gguf_open_buffer(buf, len, err, sizeof(err)));
    assert_non_null(strstr(err, "deeper"));
    free(buf);
    sx_gguf_writer_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_llama),
        cmocka_unit_test(test_fixture_vocab_strings),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_deep_nesting),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
