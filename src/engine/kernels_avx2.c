/* AVX2 + FMA + F16C kernels. Each walks the weight row once, loads a block
 * (or 8 floats) of weights and multiplies it into up to 8 accumulators, one
 * per activation row. Integer blocks use the sign trick: |w| (unsigned) times
 * x with w's sign, through vpmaddubsw, which cannot saturate for |x| <= 127. */
#include <cpuid.h>
#include <immintrin.h>

#include "engine/gguf.h"
#include "engine/kernels.h"

#define XROW(x, j, xs) ((const void *)((const char *)(x) + (size_t)(j) * (xs)))

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                          _mm256_extractf128_ps(v, 1));

    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load_bf16(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));

    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

#define DOT_FLOAT(fname, T, LOAD, SCALAR)                                      \
    static void fname(int n, const void *w, const void *x, size_t xs, int nx,  \
                      float *out)                                              \
    {                                                                          \
        const T *wr = w;                                                       \
        __m256 acc[SX_KERNEL_MAX_ROWS];                                        \
        int i = 0;                                                             \
                                                                               \
        for (int j = 0; j < nx; j++)                                           \
            acc[j] = _mm256_setzero_ps();                                      \
        for (; i + 8 <= n; i += 8) {                                           \
            __m256 wv = LOAD(wr + i);                                          \
                                                                               \
            for (int j = 0; j < nx; j++)                                       \
                acc[j] = _mm256_fmadd_ps(                                      \
                    wv, LOAD((const T *)XROW(x, j, xs) + i), acc[j]);          \
        }                                                                      \
        for (int j = 0; j < nx; j++) {                                         \
            const T *xr = XROW(x, j, xs);                                      \
            float s = hsum(acc[j]);                                            \
                                                                               \
            for (int k = i; k < n; k++)                                        \
                s += SCALAR(wr[k]) * SCALAR(xr[k]);                            \
            out[j] = s;                                                        \
        }                                                                      \
    }

#define LOAD_F32(p) _mm256_loadu_ps(p)
#define LOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define ID(v) (v)

DOT_FLOAT(dot_f32, float, LOAD_F32, ID)
DOT_FLOAT(dot_f16, uint16_t, LOAD_F16, sx_fp16_to_f32)
DOT_FLOAT(dot_bf16, uint16_t, load_bf16, sx_bf16_to_f32)

/* Sum of w*x over 32 int8 pairs, as 8 int32 lanes. */
static inline __m256i dot_i8(__m256i aw, __m256i w, __m256i x)
{
    __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));

    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static void dot_q8_0(int n, const void *w, const void *x, size_t xs, int nx,
                     float *out)
{
    const sx_block_q8_0 *wb = w;
    __m256 acc[SX_KERNEL_MAX_ROWS];

    for (int j = 0; j < nx; j++)
        acc[j] = _mm256_setzero_ps();
    for (int b = 0; b < n / SX_QK; b++) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)wb[b].qs);
        __m256i aw = _mm256_sign_epi8(wv, wv);
        float dw = _cvtsh_ss(wb[b].d);

        for (int j = 0; j < nx; j++) {
            const sx_q8_block *xb = (const sx_q8_block *)XROW(x, j, xs) + b;
            __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256 p = _mm256_cvtepi32_ps(dot_i8(aw, wv, xv));

            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), p, acc[j]);
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum(acc[j]);
}

/* Q4_0: nibbles minus 8 as signed bytes, then the same sign trick. */
static void dot_q4_0(int n, const void *w, const void *x, size_t xs, int nx,
                     float *out)
{
    const sx_block_q4_0 *wb = w;
    const __m128i low = _mm_set1_epi8(15);
    __m256 acc[SX_KERNEL_MAX_ROWS];

    for (int j = 0; j < nx; j++)
        acc[j] = _mm256_setzero_ps();
    for (int b = 0; b < n / SX_QK; b++) {
        __m128i q = _mm_loadu_si128((const __m128i *)wb[b].qs);
        __m256i wv = _mm256_sub_epi8(
            _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), low),
                             _mm_and_si128(q, low)),
            _mm256_set1_epi8(8));
        __m256i aw = _mm256_sign_epi8(wv, wv);
        float dw = _cvtsh_ss(wb[b].d);

        for (int j = 0; j < nx; j++) {
            const sx_q8_block *xb = (const sx_q8_block *)XROW(x, j, xs) + b;
            __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256 p = _mm256_cvtepi32_ps(dot_i8(aw, wv, xv));

            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), p, acc[j]);
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum(acc[j]);
}

static void axpy_f32(int n, float a, const float *x, float *y)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;

    for (; i + 8 <= n; i += 8) {
        __m256 p = _mm256_mul_ps(va, _mm256_loadu_ps(x + i));

        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), p));
    }
    for (; i < n; i++) {
        float p = a * x[i];  /* own statement: clang would fuse a * x + y */

        y[i] += p;
    }
}

static const sx_kernels avx2 = {
    .name = "avx2",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .quantize_q8 = sx_quantize_q8,
    .axpy_f32 = axpy_f32,
    .silu_mul_f32 = sx_silu_mul_f32,
};

const sx_kernels *sx_kernels_avx2(void)
{
    unsigned a, b, c, d;

    /* F16C is CPUID.1:ECX bit 29 (not every compiler names it for
     * __builtin_cpu_supports). */
    __builtin_cpu_init();
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 29)))
        return NULL;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return &avx2;
    return NULL;
}
