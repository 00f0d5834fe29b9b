/* AVX2 exp pass of the sampler (see sample_simd.h): eight exponentials at a
 * time for the probabilities of a whole vocabulary. exp(x) for x <= 0 is
 * 2^k * p(r) with k = round(x / ln 2), r = x - k ln 2 (ln 2 split in two
 * parts to keep r exact) and p a degree-6 polynomial; relative error is a
 * few ulp, far below what sampling can notice. */
#include "engine/sample_simd.h"

#include <immintrin.h>
#include <math.h>

static inline __m256 exp_neg(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 k, r, p;
    __m256i e;

    /* The caller zeroes lanes below -87 (underflow); the clamp keeps the
     * exponent arithmetic in range for them. */
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    k = _mm256_round_ps(_mm256_mul_ps(x, log2e),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_fnmadd_ps(k, ln2_hi, x);
    r = _mm256_fnmadd_ps(k, ln2_lo, r);

    /* Taylor coefficients 1/6! .. 1/0!, Horner form. */
    p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));

    /* Multiply by 2^k through the exponent field. */
    e = _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

static double exp_pass(const float *l, int n, float m, float lcut,
                       float *prob)
{
    __m256 vm = _mm256_set1_ps(m), vcut = _mm256_set1_ps(lcut);
    __m256 vlow = _mm256_set1_ps(-87.0f);
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    double sum;
    int i = 0;

    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(l + i), d = _mm256_sub_ps(x, vm);
        __m256 keep = _mm256_and_ps(_mm256_cmp_ps(x, vcut, _CMP_GE_OQ),
                                    _mm256_cmp_ps(d, vlow, _CMP_GE_OQ));
        __m256 e = _mm256_and_ps(exp_neg(d), keep);

        _mm256_storeu_ps(prob + i, e);
        acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    {
        double lanes[4];

        _mm256_storeu_pd(lanes, _mm256_add_pd(acc0, acc1));
        sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    }
    /* The tail follows the same rules as the vector lanes. */
    for (; i < n; i++) {
        float d = l[i] - m;

        prob[i] = l[i] >= lcut && d >= -87.0f ? expf(d) : 0.0f;
        sum += prob[i];
    }
    return sum;
}

sx_sample_exp_fn sx_sample_exp_avx2(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return exp_pass;
    return NULL;
}
