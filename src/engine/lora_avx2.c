/* AVX2 / F16C kernels of the LoRA B step: y[i] += s * sum_k u[k] * bt[k][i]
 * over an output range, eight outputs per register, the rank rows of the
 * transposed B streamed once. Picked at run time when the CPU has AVX2. */
#include <immintrin.h>
#include <stdbool.h>

#include "engine/lora.h"
#include "engine/quant.h"

/* Eight consecutive values of one rank row as floats. */
static inline __attribute__((always_inline)) __m256 load8(bool f16, const void *bt, size_t at)
{
    if (f16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)bt + at)));
    return _mm256_loadu_ps((const float *)bt + at);
}

static inline __attribute__((always_inline)) float load1(bool f16, const void *bt, size_t at)
{
    return f16 ? sx_fp16_to_f32(((const uint16_t *)bt)[at]) : ((const float *)bt)[at];
}

static inline __attribute__((always_inline)) void add8(float *y, __m256 vs, __m256 acc)
{
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_loadu_ps(y), _mm256_mul_ps(vs, acc)));
}

/* Four groups of eight outputs at once, so that four independent
 * multiply-add chains hide the latency one chain of rank steps exposes
 * (the kernel was latency-bound). Each output still sums its rank products
 * in order, one fused multiply-add each, so results do not depend on the
 * grouping. */
static inline __attribute__((always_inline)) void bt_avx2(bool f16, int lo, int hi, int rank,
                                                          const void *bt, size_t ld,
                                                          const float *u, float s, float *y)
{
    __m256 vs = _mm256_set1_ps(s);
    int i = lo;

    for (; i + 32 <= hi; i += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;

        for (int k = 0; k < rank; k++) {
            __m256 uk = _mm256_set1_ps(u[k]);
            size_t at = (size_t)k * ld + (size_t)i;

            a0 = _mm256_fmadd_ps(uk, load8(f16, bt, at), a0);
            a1 = _mm256_fmadd_ps(uk, load8(f16, bt, at + 8), a1);
            a2 = _mm256_fmadd_ps(uk, load8(f16, bt, at + 16), a2);
            a3 = _mm256_fmadd_ps(uk, load8(f16, bt, at + 24), a3);
        }
        add8(y + i, vs, a0);
        add8(y + i + 8, vs, a1);
        add8(y + i + 16, vs, a2);
        add8(y + i + 24, vs, a3);
    }
    for (; i + 8 <= hi; i += 8) {
        __m256 acc = _mm256_setzero_ps();

        for (int k = 0; k < rank; k++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(u[k]), load8(f16, bt, (size_t)k * ld + i),
                                  acc);
        add8(y + i, vs, acc);
    }
    for (; i < hi; i++) {
        float acc = 0.0f;

        for (int k = 0; k < rank; k++)
            acc += u[k] * load1(f16, bt, (size_t)k * ld + (size_t)i);
        y[i] += s * acc;
    }
}

void sx_lora_bt_f32_avx2(int lo, int hi, int rank, const void *bt, size_t ld,
                         const float *u, float s, float *y)
{
    bt_avx2(false, lo, hi, rank, bt, ld, u, s, y);
}

void sx_lora_bt_f16_avx2(int lo, int hi, int rank, const void *bt, size_t ld,
                         const float *u, float s, float *y)
{
    bt_avx2(true, lo, hi, rank, bt, ld, u, s, y);
}
