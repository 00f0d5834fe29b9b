/* Kernel tests: the AVX2 and AVX-512 dot products against the scalar
 * reference for every weight type and every batch width 1..8; the AVX-512
 * and AMX matrix paths against the scalar dot; fp16/bf16
 * conversions against the hardware; Q8 activation rounding; Q4_0/Q8_0
 * weight quantization round trips; the thread pool. */
#include <immintrin.h>
#include <math.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/pool.h"
#include "engine/quant.h"

static uint64_t rng = 88172645463325252ULL;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* Weight rows of `type` from random floats. */
static void *make_weights(int type, int n, float *src)
{
    size_t bytes = (size_t)n / (size_t)sx_ggml_block_size(type) *
                   (size_t)sx_ggml_type_size(type);
    uint8_t *w = malloc(bytes);

    for (int i = 0; i < n; i++)
        src[i] = frand() * 0.1f;
    switch (type) {
    case SX_GGML_F32: memcpy(w, src, bytes); break;
    case SX_GGML_F16:
        for (int i = 0; i < n; i++)
            ((uint16_t *)w)[i] = sx_f32_to_fp16(src[i]);
        break;
    case SX_GGML_BF16:
        for (int i = 0; i < n; i++)
            ((uint16_t *)w)[i] = sx_f32_to_bf16(src[i]);
        break;
    case SX_GGML_Q8_0: sx_quantize_q8_0(src, (sx_block_q8_0 *)w, n); break;
    case SX_GGML_Q4_0: sx_quantize_q4_0(src, (sx_block_q4_0 *)w, n); break;
    }
    return w;
}

static void compare_tables(const sx_kernels *k)
{
    static const int types[] = {SX_GGML_F32, SX_GGML_F16, SX_GGML_BF16,
                                SX_GGML_Q8_0, SX_GGML_Q4_0};
    static const int sizes[] = {32, 64, 96, 160, 896, 4864};
    const sx_kernels *ref = sx_kernels_scalar();

    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++)
        for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
            int type = types[ti], n = sizes[si];
            /* Float types also get a length that leaves a scalar tail. */
            int nn = sx_act_format(type) == SX_ACT_Q8 ? n : n + 7;
            float *wsrc = malloc((size_t)nn * sizeof(float));
            float *x = malloc((size_t)8 * nn * sizeof(float));
            void *w = make_weights(type, nn, wsrc);
            size_t rb = sx_act_row_bytes(type, nn);
            void *act = aligned_alloc(64, (8 * rb + 63) / 64 * 64);
            float a[8], b[8];

            for (int i = 0; i < 8 * nn; i++)
                x[i] = frand() * (i % 3 == 0 ? 4.0f : 1.0f);
            sx_act_prepare(ref, type, x, (size_t)nn, 8, nn, act);
            for (int nx = 1; nx <= 8; nx++) {
                sx_kernels_dot(ref, type)(nn, w, act, rb, nx, a);
                sx_kernels_dot(k, type)(nn, w, act, rb, nx, b);
                /* Integer types must agree bit for bit (same float order). */
                for (int j = 0; j < nx; j++)
                    if (sx_act_format(type) == SX_ACT_Q8 ? a[j] != b[j]
                        : fabsf(a[j] - b[j]) > 1e-4f * (1.0f + fabsf(a[j])))
                        fail_msg("%s %s n=%d nx=%d row %d: %g vs scalar %g",
                                 k->name, sx_ggml_type_name(type), nn, nx, j,
                                 b[j], a[j]);
            }
            free(wsrc);
            free(x);
            free(w);
            free(act);
        }
}

static void test_avx2_matches_scalar(void **state)
{
    const sx_kernels *k = sx_kernels_avx2();

    (void)state;
    if (!k) {
        printf("skipped: no AVX2 on this CPU\n");
        skip();
    }
    compare_tables(k);
}

static void test_avx512_matches_scalar(void **state)
{
    const sx_kernels *k = sx_kernels_avx512();

    (void)state;
    if (!k) {
        printf("skipped: no AVX-512 VNNI on this CPU\n");
        skip();
    }
    compare_tables(k);
}

/* Weight rows whose scales are 1 and whose values are random integers
 * (Q8_0: -127..127, Q4_0: all nibbles), so every dot is an exact integer. */
static void *make_int_weights(int type, int n)
{
    size_t bytes = (size_t)n / SX_QK * (size_t)sx_ggml_type_size(type);
    uint8_t *w = malloc(bytes);

    for (int b = 0; b < n / SX_QK; b++) {
        uint8_t *blk = w + (size_t)b * (size_t)sx_ggml_type_size(type);

        memcpy(blk, &(uint16_t){0x3c00}, 2);
        for (int i = 0; i < (type == SX_GGML_Q8_0 ? SX_QK : SX_QK / 2); i++)
            blk[2 + i] = type == SX_GGML_Q8_0
                             ? (uint8_t)(int8_t)(frand() * 127.0f)
                             : (uint8_t)(frand() * 127.0f + 128.0f);
    }
    return w;
}

/* The matrix path of table k: every tile shape (weight rows 1..9, 13..33 in
 * steps of 4; activation rows 1..11, 16, 17, 32 and 33) against the scalar
 * dot on Q8_0 and Q4_0, the activations packed by the table's own
 * quantizer. integers: weights and activations are integers with scale 1,
 * so every sum is exact whatever its order and the results must be equal
 * bit for bit; otherwise they differ by at most tol * (1 + |scalar|) (0:
 * bit for bit). */
static void check_mat(const sx_kernels *k, int integers, float tol)
{
    static const int types[] = {SX_GGML_Q8_0, SX_GGML_Q4_0};
    static const int sizes[] = {32, 96, 896};
    static const int nxs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 32,
                              33};
    const sx_kernels *ref = sx_kernels_scalar();
    enum { MAXR = 35, MAXX = 33 };

    for (size_t ti = 0; ti < 2; ti++)
        for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
            int type = types[ti], n = sizes[si];
            size_t wrow = (size_t)n / 32 * (size_t)sx_ggml_type_size(type);
            size_t rb = sx_act_row_bytes(type, n);
            float *wsrc = malloc((size_t)MAXR * n * sizeof(float));
            float *x = malloc((size_t)MAXX * n * sizeof(float));
            void *w = integers ? make_int_weights(type, MAXR * n)
                               : make_weights(type, MAXR * n, wsrc);
            void *act = aligned_alloc(64, (MAXX * rb + 63) / 64 * 64);
            void *pk = aligned_alloc(64, k->pack_q8_bytes(n, MAXX));
            void *work = aligned_alloc(64, (k->mat_work_bytes(n, MAXR) + 63)
                                               / 64 * 64);
            static float ref_out[MAXR][MAXX], out[MAXX][MAXR];

            for (int i = 0; i < MAXX * n; i++)
                x[i] = integers ? (i % SX_QK == 0 ? 127.0f
                                                  : rintf(frand() * 127.0f))
                                : frand() * (i % 5 == 0 ? 8.0f : 1.0f);
            if (!integers) {
                x[3] = 0.0f;
                for (int i = 0; i < 32; i++) /* an all-zero block */
                    x[n + i] = 0.0f;
            }
            sx_act_prepare(ref, type, x, (size_t)n, MAXX, n, act);
            for (int r = 0; r < MAXR; r++)
                for (int j = 0; j < MAXX; j += 8)
                    sx_kernels_dot(ref, type)(
                        n, (const char *)w + r * wrow,
                        (const char *)act + j * rb, rb,
                        MAXX - j < 8 ? MAXX - j : 8, &ref_out[r][j]);
            for (size_t xi = 0; xi < sizeof(nxs) / sizeof(nxs[0]); xi++) {
                int nx = nxs[xi];

                k->pack_q8(x, (size_t)n, nx, n, pk);
                for (int nr = 1; nr <= 2 * MAXR; nr += (nr < 9 ? 1 : 4)) {
                    /* nr > MAXR: rows 0..nr-MAXR-1 again with a work area */
                    int rows = nr > MAXR ? nr - MAXR : nr;

                    memset(out, 0xff, sizeof(out));
                    sx_kernels_mat(k, type)(n, w, wrow, rows, pk, nx,
                                            &out[0][0], MAXR,
                                            nr > MAXR ? work : NULL);
                    for (int j = 0; j < nx; j++)
                        for (int r = 0; r < rows; r++)
                            if (tol == 0.0f
                                    ? memcmp(&out[j][r], &ref_out[r][j], 4)
                                    : !(fabsf(out[j][r] - ref_out[r][j]) <=
                                        tol * (1.0f + fabsf(ref_out[r][j]))))
                                fail_msg("%s %s mat n=%d nr=%d nx=%d "
                                         "[%d][%d]: %g vs scalar %g", k->name,
                                         sx_ggml_type_name(type), n, nr, nx,
                                         r, j, out[j][r], ref_out[r][j]);
                }
            }
            free(wsrc);
            free(x);
            free(w);
            free(act);
            free(pk);
            free(work);
        }
}

/* The AVX-512 matrix path keeps the scalar float order: bit for bit. */
static void test_mat_matches_scalar(void **state)
{
    const sx_kernels *k = sx_kernels_avx512();

    (void)state;
    if (!k) {
        printf("skipped: no AVX-512 on this CPU\n");
        skip();
    }
    check_mat(k, 0, 0.0f);
    check_mat(k, 1, 0.0f);
}

/* The AMX path sums the blocks in another order (one product per block
 * instead of eight lanes): its integer block dots are exact, so integer
 * data gives the scalar result bit for bit, and random data agrees to
 * 1e-5 relative. It takes 16 activation rows or more and a work area (the
 * calls with nr > MAXR, 18..34 rows: one or two tiles and rows left over
 * for the AVX-512 path); the other calls are the AVX-512 path. */
static void test_amx_matches_scalar(void **state)
{
    const sx_kernels *k = sx_kernels_amx();

    (void)state;
    if (!k) {
        printf("skipped: no AMX-INT8 on this CPU (or not granted)\n");
        skip();
    }
    check_mat(k, 1, 0.0f);
    check_mat(k, 0, 1e-5f);
}

/* axpy_f32 of every table equals the scalar one bit for bit (a multiply,
 * then an add), for lengths around the vector widths. */
static void test_axpy(void **state)
{
    const sx_kernels *tabs[3] = {sx_kernels_avx2(), sx_kernels_avx512(),
                                 sx_kernels_amx()};
    float x[70], y0[70], y1[70];

    (void)state;
    for (int n = 0; n <= 70; n++)
        for (int t = 0; t < 3; t++) {
            float a = frand() * 3.0f;

            if (!tabs[t])
                continue;
            for (int i = 0; i < 70; i++) {
                x[i] = frand();
                y0[i] = y1[i] = frand();
            }
            sx_kernels_scalar()->axpy_f32(n, a, x, y0);
            tabs[t]->axpy_f32(n, a, x, y1);
            assert_memory_equal(y0, y1, sizeof(y0));
        }
}

/* silu_mul_f32 of every table against the scalar one (glibc's expf): at
 * most 4e-7 relative (a few ulp) from -120 to 120, with lengths that end
 * inside a vector; 0, infinities and NaN as the scalar gives them. */
static void test_silu(void **state)
{
    const sx_kernels *tabs[3] = {sx_kernels_avx2(), sx_kernels_avx512(),
                                 sx_kernels_amx()};
    enum { N = 4099 };
    static float g[N], u[N], a[N], b[N];

    (void)state;
    for (int i = 0; i < N; i++) {
        g[i] = (float)(i - N / 2) * (120.0f / (N / 2)) + frand() * 0.01f;
        u[i] = frand() * 4.0f;
    }
    g[0] = 0.0f;
    g[1] = INFINITY;
    g[2] = -INFINITY;
    g[3] = NAN;
    g[4] = 1e-30f;
    for (int t = 0; t < 3; t++) {
        if (!tabs[t])
            continue;
        memcpy(a, g, sizeof(g));
        memcpy(b, g, sizeof(g));
        sx_kernels_scalar()->silu_mul_f32(N, a, u);
        tabs[t]->silu_mul_f32(N, b, u);
        for (int i = 0; i < N; i++) {
            if (isnan(a[i]) || isinf(a[i]) || a[i] == 0.0f) {
                if (!(isnan(a[i]) ? isnan(b[i]) : a[i] == b[i]))
                    fail_msg("%s silu(%g) = %g, scalar %g", tabs[t]->name,
                             (double)g[i], (double)b[i], (double)a[i]);
            } else if (fabsf(a[i] - b[i]) > 4e-7f * fabsf(a[i])) {
                fail_msg("%s silu(%g) = %.9g, scalar %.9g", tabs[t]->name,
                         (double)g[i], (double)b[i], (double)a[i]);
            }
        }
    }
}

/* The table's activation quantizer equals the scalar one. */
static void test_quantize_table(void **state)
{
    const sx_kernels *k = sx_kernels_best();
    float x[4 * 32];
    sx_q8_block a[4], b[4];

    (void)state;
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 4 * 32; i++)
            x[i] = frand() * (float)(1 + round % 7) * (round % 3 ? 1.0f
                                                                : 1e-3f);
        for (int i = 0; i < 32; i++)
            x[32 + i] = 0.0f;
        x[64] = (float)(round % 2 ? 2.5 : -2.5); /* exact halves */
        sx_quantize_q8(x, a, 4 * 32);
        k->quantize_q8(x, b, 4 * 32);
        assert_memory_equal(a, b, sizeof(a));
    }
}

/* Extreme weights: Q8_0 -128 and Q4_0 nibbles 0 and 15 against +-127. */
static void test_extreme_blocks(void **state)
{
    const sx_kernels *tabs[3] = {sx_kernels_scalar(), sx_kernels_avx2(),
                                 sx_kernels_avx512()};
    sx_block_q8_0 w8[2];
    sx_block_q4_0 w4[2];
    sx_q8_block x[2];

    (void)state;
    for (int b = 0; b < 2; b++) {
        w8[b].d = w4[b].d = sx_f32_to_fp16(1.0f);
        x[b].d = 1.0f;
        for (int i = 0; i < 32; i++) {
            w8[b].qs[i] = -128;
            x[b].qs[i] = (int8_t)(i % 2 ? 127 : -127);
        }
        for (int i = 0; i < 16; i++)
            w4[b].qs[i] = (uint8_t)(i % 2 ? 0xf0 : 0x0f);
    }
    for (int t = 0; t < 3; t++) {
        float o8, o4;
        int32_t e4 = 0;

        if (!tabs[t])
            continue;
        tabs[t]->dot_q8_0(64, w8, x, sizeof(x), 1, &o8);
        tabs[t]->dot_q4_0(64, w4, x, sizeof(x), 1, &o4);
        assert_true(o8 == 0.0f);  /* 16 * (-128*127) + 16 * (-128*-127) */
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < 16; i++)
                e4 += ((w4[b].qs[i] & 15) - 8) * x[b].qs[i] +
                      ((w4[b].qs[i] >> 4) - 8) * x[b].qs[i + 16];
        assert_true(o4 == (float)e4);
    }
}

__attribute__((target("f16c"))) static uint16_t hw_to_fp16(float f)
{
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

__attribute__((target("f16c"))) static float hw_from_fp16(uint16_t h)
{
    return _cvtsh_ss(h);
}

static void test_fp16_conversions(void **state)
{
    (void)state;
    if (!__builtin_cpu_supports("avx2")) {
        printf("skipped: no F16C\n");
        skip();
    }
    for (uint32_t h = 0; h < 65536; h++) {
        float a = sx_fp16_to_f32((uint16_t)h), b = hw_from_fp16((uint16_t)h);

        if (isnan(b))
            assert_true(isnan(a));
        else
            assert_memory_equal(&a, &b, 4);
    }
    for (int i = 0; i < 2000000; i++) {
        uint32_t bits = (uint32_t)(rng >> 16);
        float f;

        frand();
        memcpy(&f, &bits, 4);
        if (isnan(f))
            continue;
        if (sx_f32_to_fp16(f) != hw_to_fp16(f))
            fail_msg("fp16(%a) = %04x, hardware %04x", (double)f,
                     sx_f32_to_fp16(f), hw_to_fp16(f));
    }
    assert_int_equal(sx_f32_to_bf16(1.0f), 0x3f80);
    assert_true(sx_bf16_to_f32(sx_f32_to_bf16(3.140625f)) == 3.140625f);
}

static void test_quantize(void **state)
{
    float x[64], y[64];
    sx_q8_block q[2];
    sx_block_q8_0 b8[2];
    sx_block_q4_0 b4[2];

    (void)state;
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i - 20) * 0.25f;
    x[40] = 0.0f;
    sx_quantize_q8(x, q, 64);
    /* Block 0: max |x| = 5.0, so d = 5/127 and x = -5 -> -127. */
    assert_true(q[0].d == sx_fp16_to_f32(sx_f32_to_fp16(5.0f / 127.0f)));
    assert_int_equal(q[0].qs[0], -127);
    assert_int_equal(q[0].qs[20], 0);
    assert_int_equal(q[1].qs[31], 127);   /* x = 10.75, the block max */
    sx_quantize_q8_0(x, b8, 64);
    sx_dequantize_row(SX_GGML_Q8_0, b8, y, 64);
    for (int i = 0; i < 64; i++)
        assert_true(fabsf(x[i] - y[i]) <= 11.0f / 127.0f / 2 + 1e-3f);
    sx_quantize_q4_0(x, b4, 64);
    sx_dequantize_row(SX_GGML_Q4_0, b4, y, 64);
    for (int i = 0; i < 64; i++)
        assert_true(fabsf(x[i] - y[i]) <= 11.0f / 8.0f / 2 + 1e-3f);
    assert_int_equal(sx_dequantize_row(SX_GGML_Q4_K, b4, y, 64),
                     SX_EUNSUPPORTED);
}

typedef struct pool_ctx {
    long parts[64];
    int n;
} pool_ctx;

static void pool_sum(void *ctx, int ith, int nth)
{
    pool_ctx *c = ctx;
    int lo, hi;
    long s = 0;

    sx_pool_split(c->n, 4, ith, nth, &lo, &hi);
    for (int i = lo; i < hi; i++)
        s += i;
    c->parts[ith] = s;
}

static void test_pool(void **state)
{
    (void)state;
    assert_null(sx_pool_new(0));
    sx_pool_free(NULL);
    for (int nt = 1; nt <= 4; nt++) {
        sx_pool *p = sx_pool_new(nt);

        assert_non_null(p);
        assert_int_equal(sx_pool_size(p), nt);
        for (int round = 0; round < 2000; round++) {
            pool_ctx c = {.n = 1000 + round};
            long total = 0;

            sx_pool_run(p, pool_sum, &c);
            for (int i = 0; i < nt; i++)
                total += c.parts[i];
            assert_int_equal(total, (long)c.n * (c.n - 1) / 2);
            if (round == 1000) {
                /* Let the workers fall asleep, then wake them. */
                struct timespec ts = {0, 5000000};

                nanosleep(&ts, NULL);
            }
        }
        sx_pool_free(p);
    }
}

typedef struct task_ctx {
    int n;
    _Atomic int runs[8];
    _Atomic int bad;
} task_ctx;

static void count_task(void *ctx, int i, int n)
{
    task_ctx *c = ctx;

    if (n != c->n || i < 0 || i >= n)
        atomic_fetch_add(&c->bad, 1);
    else
        atomic_fetch_add(&c->runs[i], 1);
}

/* Jobs of changing task counts back to back: every task runs exactly once,
 * with its own job's context (a regression: a worker once took a task of
 * the next job with the previous job's claim, and the caller hung). */
static void test_pool_tasks(void **state)
{
    sx_pool *p = sx_pool_new(3);

    (void)state;
    assert_non_null(p);
    for (int round = 0; round < 50000; round++) {
        task_ctx c = {.n = 1 + (round * 7) % 8};

        sx_pool_run_tasks(p, c.n, count_task, &c);
        assert_int_equal(atomic_load(&c.bad), 0);
        for (int i = 0; i < 8; i++)
            assert_int_equal(atomic_load(&c.runs[i]), i < c.n ? 1 : 0);
    }
    sx_pool_run_tasks(p, 0, count_task, NULL);  /* no tasks: no call */
    sx_pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_avx2_matches_scalar),
        cmocka_unit_test(test_avx512_matches_scalar),
        cmocka_unit_test(test_mat_matches_scalar),
        cmocka_unit_test(test_amx_matches_scalar),
        cmocka_unit_test(test_quantize_table),
        cmocka_unit_test(test_axpy),
        cmocka_unit_test(test_silu),
        cmocka_unit_test(test_extreme_blocks),
        cmocka_unit_test(test_fp16_conversions),
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_tasks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
