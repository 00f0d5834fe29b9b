/* Compute kernels: dot products of one weight row with up to 8 activation
 * rows at once (so a batch of 8 sequences reads each weight row once), in a
 * scalar version (the reference the SIMD versions are tested against) and
 * AVX2 / AVX-512 (VNNI) versions picked at run time from the CPU's flags. */
#ifndef SX_ENGINE_KERNELS_H
#define SX_ENGINE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/quant.h"

#define SX_KERNEL_MAX_ROWS 8 /* activation rows per weight-row pass */

/* How a weight type wants its input: F32 weights take floats, F16 / BF16
 * weights take activations rounded to fp16 / bf16 (as llama.cpp does), Q8_0
 * and Q4_0 take sx_q8_block rows. */
enum sx_act_format { SX_ACT_F32, SX_ACT_F16, SX_ACT_BF16, SX_ACT_Q8 };

/* out[j] = dot(w, x_j) for j < nx, where x_j starts x_stride bytes after
 * x_{j-1}; n is the row length in values (a multiple of 32 for quantized
 * types, any for the others). */
typedef void (*sx_dot_fn)(int n, const void *w, const void *x,
                          size_t x_stride, int nx, float *out);

/* Matrix kernel: out[j * ldo + r] = dot(row r of w, x_j) for r < nr and
 * j < nx (any nx), rows ws bytes apart, x_j from the packed activations of
 * pack_q8. Results are bit-identical to the dot function of the type.
 * work (64-byte aligned, mat_work_bytes(n, nr), or NULL) lets the kernel
 * decode the rows once when many activation rows reuse them. */
typedef void (*sx_mat_fn)(int n, const void *w, size_t ws, int nr,
                          const void *packed, int nx, float *out, size_t ldo,
                          void *work);

typedef struct sx_kernels {
    const char *name;              /* "scalar", "avx2", "avx512", "amx" */
    sx_dot_fn dot_f32, dot_f16, dot_bf16, dot_q8_0, dot_q4_0;
    void (*quantize_q8)(const float *x, sx_q8_block *y, int n);
    /* y[i] += a * x[i] for i < n, rounded as the scalar expression is
     * (a multiply, then an add: no fused multiply-add). */
    void (*axpy_f32)(int n, float a, const float *x, float *y);
    /* g[i] = g[i] / (1 + e^-g[i]) * u[i] (SwiGLU) for i < n; the SIMD
     * versions compute e^x to within a few ulp of expf. */
    void (*silu_mul_f32)(int n, float *g, const float *u);
    /* The matrix path for Q8_0 / Q4_0 weights, NULL in tables without one:
     * pack_q8 quantizes nx rows of n floats (x_stride floats apart) once
     * per matmul into pack_q8_bytes(n, nx) bytes (64-byte aligned), which
     * mat_q8_0 / mat_q4_0 then read. */
    size_t (*pack_q8_bytes)(int n, int nx);
    size_t (*mat_work_bytes)(int n, int nr);
    void (*pack_q8)(const float *x, size_t x_stride, int nx, int n,
                    void *dst);
    sx_mat_fn mat_q8_0, mat_q4_0;
} sx_kernels;

const sx_kernels *sx_kernels_scalar(void);
/* NULL when this CPU lacks the instructions. */
const sx_kernels *sx_kernels_avx2(void);
const sx_kernels *sx_kernels_avx512(void);
/* The avx512 table with AMX tiles for matmuls of many activation rows
 * (prefill); NULL without AMX-INT8 or when Linux refuses the tile state. */
const sx_kernels *sx_kernels_amx(void);
/* The fastest table this CPU runs; SX_KERNELS=scalar|avx2|avx512|amx in the
 * environment overrides the choice (for benchmarks and bisecting). */
const sx_kernels *sx_kernels_best(void);

/* The scalar silu_mul_f32 (glibc's expf), for tables without their own. */
void sx_silu_mul_f32(int n, float *g, const float *u);

/* The matrix kernel of a weight type, NULL when the table has none. */
sx_mat_fn sx_kernels_mat(const sx_kernels *k, int weight_type);

/* One block of the AVX-512 path's packed activations: two activation rows
 * (a pair) side by side, so a zmm register holds both halves of a (weight
 * row, pair) product. Half h of each field belongs to activation row
 * 2p + h; pair p's blocks are n / 32 apart. */
typedef struct sx_q8_pair_block {
    int8_t qs[2][SX_QK];
    int32_t init[2][8];      /* -128 * sum of q[4l..4l+3], lane l */
    float d[2][8];           /* the activation scale, repeated */
} sx_q8_pair_block;

_Static_assert(sizeof(sx_q8_pair_block) == 192, "packed block layout");

/* The AVX-512 matrix path (kernels_mat_avx512.c), for the avx512 table. */
void sx_quantize_q8_avx512(const float *x, sx_q8_block *y, int n);
size_t sx_pack_q8_bytes(int n, int nx);
size_t sx_mat_work_bytes(int n, int nr);
void sx_pack_q8_avx512(const float *x, size_t x_stride, int nx, int n,
                       void *dst);
void sx_mat_q8_0_avx512(int n, const void *w, size_t ws, int nr,
                        const void *packed, int nx, float *out, size_t ldo,
                        void *work);
void sx_mat_q4_0_avx512(int n, const void *w, size_t ws, int nr,
                        const void *packed, int nx, float *out, size_t ldo,
                        void *work);

/* Activation format, dot function and bytes per activation row of n values
 * for a weight type; the dot function is NULL for an unsupported type. */
int sx_act_format(int weight_type);
sx_dot_fn sx_kernels_dot(const sx_kernels *k, int weight_type);
size_t sx_act_row_bytes(int weight_type, int n);
/* Converts rows floats of n values (x_stride floats apart) into the input
 * format of weight_type at dst (sx_act_row_bytes apart). */
void sx_act_prepare(const sx_kernels *k, int weight_type, const float *x,
                    size_t x_stride, int rows, int n, void *dst);

#endif
