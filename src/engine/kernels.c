/* Scalar kernels (the reference) and the run-time choice among the kernel
 * tables. Each dot function walks one weight row once and keeps nx partial
 * sums, one per activation row. */
#include "engine/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"

static void dot_f32(int n, const void *w, const void *x, size_t xs, int nx,
                    float *out)
{
    const float *wr = w;

    for (int j = 0; j < nx; j++) {
        const float *xr = (const float *)((const char *)x + j * xs);
        float s = 0.0f;

        for (int i = 0; i < n; i++)
            s += wr[i] * xr[i];
        out[j] = s;
    }
}

static void dot_f16(int n, const void *w, const void *x, size_t xs, int nx,
                    float *out)
{
    const uint16_t *wr = w;

    for (int j = 0; j < nx; j++) {
        const uint16_t *xr = (const uint16_t *)((const char *)x + j * xs);
        float s = 0.0f;

        for (int i = 0; i < n; i++)
            s += sx_fp16_to_f32(wr[i]) * sx_fp16_to_f32(xr[i]);
        out[j] = s;
    }
}

static void dot_bf16(int n, const void *w, const void *x, size_t xs, int nx,
                     float *out)
{
    const uint16_t *wr = w;

    for (int j = 0; j < nx; j++) {
        const uint16_t *xr = (const uint16_t *)((const char *)x + j * xs);
        float s = 0.0f;

        for (int i = 0; i < n; i++)
            s += sx_bf16_to_f32(wr[i]) * sx_bf16_to_f32(xr[i]);
        out[j] = s;
    }
}

/* The integer dot products keep the order of float operations of the SIMD
 * versions (and of llama.cpp): eight lanes of four products each, one fused
 * multiply-add per block and lane, then a pairwise horizontal sum. Integer
 * sums are exact in any order; the float order decides rounding. */
static float hsum8(const float *a)
{
    float r[4];

    for (int i = 0; i < 4; i++)
        r[i] = a[i + 4] + a[i];
    return (r[0] + r[2]) + (r[1] + r[3]);
}

static void dot_q8_0(int n, const void *w, const void *x, size_t xs, int nx,
                     float *out)
{
    const sx_block_q8_0 *wb = w;
    int nb = n / SX_QK;

    for (int j = 0; j < nx; j++) {
        const sx_q8_block *xb = (const sx_q8_block *)((const char *)x + j * xs);
        float acc[8] = {0};

        for (int b = 0; b < nb; b++) {
            float d = sx_fp16_to_f32(wb[b].d) * xb[b].d;

            for (int l = 0; l < 8; l++) {
                int32_t sumi = 0;

                for (int i = 4 * l; i < 4 * l + 4; i++)
                    sumi += wb[b].qs[i] * xb[b].qs[i];
                acc[l] = fmaf(d, (float)sumi, acc[l]);
            }
        }
        out[j] = hsum8(acc);
    }
}

/* Weight i of a Q4_0 block: low nibbles hold 0..15, high nibbles 16..31. */
static inline int q4_at(const sx_block_q4_0 *b, int i)
{
    return (i < 16 ? (b->qs[i] & 15) : (b->qs[i - 16] >> 4)) - 8;
}

static void dot_q4_0(int n, const void *w, const void *x, size_t xs, int nx,
                     float *out)
{
    const sx_block_q4_0 *wb = w;
    int nb = n / SX_QK;

    for (int j = 0; j < nx; j++) {
        const sx_q8_block *xb = (const sx_q8_block *)((const char *)x + j * xs);
        float acc[8] = {0};

        for (int b = 0; b < nb; b++) {
            float d = sx_fp16_to_f32(wb[b].d) * xb[b].d;

            for (int l = 0; l < 8; l++) {
                int32_t sumi = 0;

                for (int i = 4 * l; i < 4 * l + 4; i++)
                    sumi += q4_at(&wb[b], i) * xb[b].qs[i];
                acc[l] = fmaf(d, (float)sumi, acc[l]);
            }
        }
        out[j] = hsum8(acc);
    }
}

static void axpy_f32(int n, float a, const float *x, float *y)
{
    for (int i = 0; i < n; i++) {
        float p = a * x[i];  /* own statement: clang would fuse a * x + y */

        y[i] += p;
    }
}

void sx_silu_mul_f32(int n, float *g, const float *u)
{
    for (int i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static const sx_kernels scalar = {
    .name = "scalar",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dot_q8_0 = dot_q8_0,
    .dot_q4_0 = dot_q4_0,
    .quantize_q8 = sx_quantize_q8,
    .axpy_f32 = axpy_f32,
    .silu_mul_f32 = sx_silu_mul_f32,
};

const sx_kernels *sx_kernels_scalar(void) { return &scalar; }

const sx_kernels *sx_kernels_best(void)
{
    static const sx_kernels *chosen;
    const char *want;
    const sx_kernels *k;

    if (chosen)
        return chosen;
    want = getenv("SX_KERNELS");
    k = sx_kernels_amx();
    if (!k || (want && strcmp(want, "amx") != 0))
        k = sx_kernels_avx512();
    if (!k || (want && strcmp(want, k->name) != 0))
        k = sx_kernels_avx2();
    if (!k || (want && strcmp(want, k->name) != 0))
        k = &scalar;
    __atomic_store_n(&chosen, k, __ATOMIC_RELEASE);
    return k;
}

int sx_act_format(int weight_type)
{
    switch (weight_type) {
    case SX_GGML_F16: return SX_ACT_F16;
    case SX_GGML_BF16: return SX_ACT_BF16;
    case SX_GGML_Q8_0: case SX_GGML_Q4_0: return SX_ACT_Q8;
    default: return SX_ACT_F32;
    }
}

sx_dot_fn sx_kernels_dot(const sx_kernels *k, int weight_type)
{
    switch (weight_type) {
    case SX_GGML_F32: return k->dot_f32;
    case SX_GGML_F16: return k->dot_f16;
    case SX_GGML_BF16: return k->dot_bf16;
    case SX_GGML_Q8_0: return k->dot_q8_0;
    case SX_GGML_Q4_0: return k->dot_q4_0;
    default: return NULL;
    }
}

sx_mat_fn sx_kernels_mat(const sx_kernels *k, int weight_type)
{
    switch (weight_type) {
    case SX_GGML_Q8_0: return k->mat_q8_0;
    case SX_GGML_Q4_0: return k->mat_q4_0;
    default: return NULL;
    }
}

size_t sx_act_row_bytes(int weight_type, int n)
{
    switch (sx_act_format(weight_type)) {
    case SX_ACT_F16: case SX_ACT_BF16:
        return ((size_t)n * 2 + 63) / 64 * 64;
    case SX_ACT_Q8:
        return (size_t)n / SX_QK * sizeof(sx_q8_block);
    default:
        return ((size_t)n * 4 + 63) / 64 * 64;
    }
}

void sx_act_prepare(const sx_kernels *k, int weight_type, const float *x,
                    size_t x_stride, int rows, int n, void *dst)
{
    size_t rb = sx_act_row_bytes(weight_type, n);
    int fmt = sx_act_format(weight_type);

    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * x_stride;
        char *d = (char *)dst + (size_t)r * rb;

        if (fmt == SX_ACT_Q8) {
            k->quantize_q8(xr, (sx_q8_block *)d, n);
        } else if (fmt == SX_ACT_F16) {
            for (int i = 0; i < n; i++)
                ((uint16_t *)d)[i] = sx_f32_to_fp16(xr[i]);
        } else if (fmt == SX_ACT_BF16) {
            for (int i = 0; i < n; i++)
                ((uint16_t *)d)[i] = sx_f32_to_bf16(xr[i]);
        } else {
            memcpy(d, xr, (size_t)n * sizeof(float));
        }
    }
}
