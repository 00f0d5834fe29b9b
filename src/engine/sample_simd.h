/* Vector helpers of the sampler (sample.c), with an AVX2 build in
 * sample_avx2.c chosen at run time. Internal to the engine. */
#ifndef SX_ENGINE_SAMPLE_SIMD_H
#define SX_ENGINE_SAMPLE_SIMD_H

#include <stdbool.h>

/* prob[i] = exp(l[i] - m) where l[i] >= lcut, else 0, for i < n (l[i] <= m
 * for all i). Returns the sum of prob[] in double. */
typedef double (*sx_sample_exp_fn)(const float *l, int n, float m, float lcut,
                                   float *prob);

/* The AVX2+FMA version, or NULL when the CPU lacks those instructions. */
sx_sample_exp_fn sx_sample_exp_avx2(void);

#endif
