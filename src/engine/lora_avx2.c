/* AVX2 / F16C kernels of the LoRA B step: y[i] += s * sum_k u[k] * bt[k][i]
 * over an output range, eight outputs per register, the rank rows of the
 * transposed B streamed once. Picked at run time when the CPU has AVX2. */
#include <immintrin.h>

#include "engine/lora.h"
#include "engine/quant.h"

void sx_lora_bt_f32_avx2(int lo, int hi, int rank, const void *bt, size_t ld,
                         const float *u, float s, float *y)
{
    const float *b = bt;
    __m256 vs = _mm256_set1_ps(s);
    int i = lo;

    for (; i + 8 <= hi; i += 8) {
        __m256 acc = _mm256_setzero_ps();

        for (int k = 0; k < rank; k++)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(u[k]),
                                  _mm256_loadu_ps(b + (size_t)k * ld + i),
                                  acc);
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i),
                                              _mm256_mul_ps(vs, acc)));
    }
    for (; i < hi; i++) {
        float acc = 0.0f;

        for (int k = 0; k < rank; k++)
            acc += u[k] * b[(size_t)k * ld + i];
        y[i] += s * acc;
    }
}

void sx_lora_bt_f16_avx2(int lo, int hi, int rank, const void *bt, size_t ld,
                         const float *u, float s, float *y)
{
    const uint16_t *b = bt;
    __m256 vs = _mm256_set1_ps(s);
    int i = lo;

    for (; i + 8 <= hi; i += 8) {
        __m256 acc = _mm256_setzero_ps();

        for (int k = 0; k < rank; k++) {
            __m128i h = _mm_loadu_si128(
                (const __m128i *)(b + (size_t)k * ld + i));

            acc = _mm256_fmadd_ps(_mm256_set1_ps(u[k]), _mm256_cvtph_ps(h),
                                  acc);
        }
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i),
                                              _mm256_mul_ps(vs, acc)));
    }
    for (; i < hi; i++) {
        float acc = 0.0f;

        for (int k = 0; k < rank; k++)
            acc += u[k] * sx_fp16_to_f32(b[(size_t)k * ld + i]);
        y[i] += s * acc;
    }
}
