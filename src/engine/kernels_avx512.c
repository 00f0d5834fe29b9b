/* AVX-512 kernels: 16-float lanes for the float types, and VNNI (vpdpbusd:
 * unsigned bytes times signed bytes, summed into int32, one instruction per
 * block) for the integer types. Used when the CPU has avx512f/bw/vl/dq and
 * avx512vnni. */
#include <immintrin.h>

#include "engine/gguf.h"
#include "engine/kernels.h"

#define XROW(x, j, xs) ((const void *)((const char *)(x) + (size_t)(j) * (xs)))

static inline __m512 load_bf16(const uint16_t *p)
{
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));

    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

#define DOT_FLOAT(fname, T, LOAD, SCALAR)                                      \
    static void fname(int n, const void *w, const void *x, size_t xs, int nx,  \
                      float *out)                                              \
    {                                                                          \
        const T *wr = w;                                                       \
        __m512 acc[SX_KERNEL_MAX_ROWS];                                        \
        int i = 0;                                                             \
                                                                               \
        for (int j = 0; j < nx; j++)                                           \
            acc[j] = _mm512_setzero_ps();                                      \
        for (; i + 16 <= n; i += 16) {                                         \
            __m512 wv = LOAD(wr + i);                                          \
                                                                               \
            for (int j = 0; j < nx; j++)                                       \
                acc[j] = _mm512_fmadd_ps(                                      \
                    wv, LOAD((const T *)XROW(x, j, xs) + i), acc[j]);          \
        }                                                                      \
        for (int j = 0; j < nx; j++) {                                         \
            const T *xr = XROW(x, j, xs);                                      \
            float s = _mm512_reduce_add_ps(acc[j]);                            \
                                                                               \
            for (int k = i; k < n; k++)                                        \
                s += SCALAR(wr[k]) * SCALAR(xr[k]);                            \
            out[j] = s;                                                        \
        }                                                                      \
    }

#define LOAD_F32(p) _mm512_loadu_ps(p)
#define LOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define ID(v) (v)

DOT_FLOAT(dot_f32, float, LOAD_F32, ID)
DOT_FLOAT(dot_f16, uint16_t, LOAD_F16, sx_fp16_to_f32)
DOT_FLOAT(dot_bf16, uint16_t, load_bf16, sx_bf16_to_f32)

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1),
                          _mm256_castps256_ps128(v));

    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The integer kernels keep llama.cpp's order of float operations (8 lanes,
 * one fused multiply-add per block, one horizontal sum at the end): an
 * activation that sits on a rounding boundary of the next layer's Q8 input
 * then rounds the same way, and the logits agree bit for bit. */
static void dot_q8_0(int n, const void *w, const void *x, size_t xs, int nx,
                     float *out)
{
    const sx_block_q8_0 *wb = w;
    __m256 acc[SX_KERNEL_MAX_ROWS];

    for (int j = 0; j < nx; j++)
        acc[j] = _mm256_setzero_ps();
    for (int b = 0; b < n / SX_QK; b++) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)wb[b].qs);
        __m256i aw = _mm256_abs_epi8(wv);
        float dw = _cvtsh_ss(wb[b].d);

        for (int j = 0; j < nx; j++) {
            const sx_q8_block *xb = (const sx_q8_block *)XROW(x, j, xs) + b;
            __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw,
                                            _mm256_sign_epi8(xv, wv));

            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d),
                                     _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum8(acc[j]);
}

/* Q4_0: nibbles minus 8 as signed bytes, then as Q8_0. */
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
        __m256i aw = _mm256_abs_epi8(wv);
        float dw = _cvtsh_ss(wb[b].d);

        for (int j = 0; j < nx; j++) {
            const sx_q8_block *xb = (const sx_q8_block *)XROW(x, j, xs) + b;
            __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);
            __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw,
                                            _mm256_sign_epi8(xv, wv));

            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d),
                                     _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    for (int j = 0; j < nx; j++)
        out[j] = hsum8(acc[j]);
}

static void axpy_f32(int n, float a, const float *x, float *y)
{
    __m512 va = _mm512_set1_ps(a);

    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);

        _mm512_mask_storeu_ps(
            y + i, m,
            _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i),
                          _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, x + i))));
    }
}

/* e^x for 16 floats: x = n ln2 + r with n = round(x / ln2) and |r| <=
 * ln2 / 2 (ln2 in two parts, so r is exact to about 2^-32), e^r by its
 * Taylor series to r^7 (truncation below 2^-26 relative), times 2^n. Inputs
 * are clamped to [-104, 89]: beyond, e^x is 0 or infinite in float anyway
 * (scalef gives the denormals, 0 and infinity). */
static inline __m512 exp16(__m512 x)
{
    const __m512 ln2_hi = _mm512_set1_ps(0.693145751953125f);
    const __m512 ln2_lo = _mm512_set1_ps(1.4286068203094172e-06f);
    __m512 n, r, p;

    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)),
                      _mm512_set1_ps(89.0f));
    n = _mm512_roundscale_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(1.442695040888963f)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static void silu_mul_f32(int n, float *g, const float *u)
{
    const __m512 one = _mm512_set1_ps(1.0f);

    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));

        _mm512_mask_storeu_ps(
            g + i, m,
            _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)),
                          _mm512_maskz_loadu_ps(m, u + i)));
    }
}

static const sx_kernels avx512 = {
    .name = "avx512",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .quantize_q8 = sx_quantize_q8_avx512,
    .axpy_f32 = axpy_f32,
    .silu_mul_f32 = silu_mul_f32,
    .pack_q8_bytes = sx_pack_q8_bytes,
    .mat_work_bytes = sx_mat_work_bytes,
    .pack_q8 = sx_pack_q8_avx512,
    .mat_q8_0 = sx_mat_q8_0_avx512,
    .mat_q4_0 = sx_mat_q4_0_avx512,
};

const sx_kernels *sx_kernels_avx512(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni"))
        return &avx512;
    return NULL;
}
