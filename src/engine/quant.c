/* Quantization and dequantization of rows: activations to Q8 blocks (the
 * input of every quantized matmul), weights to Q8_0/Q4_0 (for synthesized
 * models), and any supported GGUF row type back to floats (embedding lookup,
 * LoRA, tests). */
#include "engine/quant.h"

#include <math.h>

#include "engine/gguf.h"

void sx_quantize_q8(const float *x, sx_q8_block *y, int n)
{
    for (int b = 0; b < n / SX_QK; b++, x += SX_QK, y++) {
        float amax = 0.0f, id;

        for (int j = 0; j < SX_QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        /* The scale is stored as fp16 in llama.cpp; keep its rounding. */
        y->d = sx_fp16_to_f32(sx_f32_to_fp16(amax / 127.0f));
        id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < SX_QK; j++)
            y->qs[j] = (int8_t)nearbyintf(x[j] * id);
    }
}

void sx_quantize_q8_0(const float *x, sx_block_q8_0 *y, int n)
{
    for (int b = 0; b < n / SX_QK; b++, x += SX_QK, y++) {
        float amax = 0.0f, id;

        for (int j = 0; j < SX_QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        y->d = sx_f32_to_fp16(amax / 127.0f);
        id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int j = 0; j < SX_QK; j++)
            y->qs[j] = (int8_t)nearbyintf(x[j] * id);
    }
}

/* The value of largest magnitude maps to -8, so its sign picks the scale's. */
void sx_quantize_q4_0(const float *x, sx_block_q4_0 *y, int n)
{
    for (int b = 0; b < n / SX_QK; b++, x += SX_QK, y++) {
        float amax = 0.0f, max = 0.0f, d, id;

        for (int j = 0; j < SX_QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        d = max / -8.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        y->d = sx_f32_to_fp16(d);
        for (int j = 0; j < SX_QK / 2; j++) {
            int lo = (int)(x[j] * id + 8.5f), hi = (int)(x[j + 16] * id + 8.5f);

            lo = lo < 0 ? 0 : lo > 15 ? 15 : lo;
            hi = hi < 0 ? 0 : hi > 15 ? 15 : hi;
            y->qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

int sx_dequantize_row(int type, const void *src, float *dst, int n)
{
    switch (type) {
    case SX_GGML_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return 0;
    case SX_GGML_F16: {
        const uint16_t *h = src;

        for (int i = 0; i < n; i++)
            dst[i] = sx_fp16_to_f32(h[i]);
        return 0;
    }
    case SX_GGML_BF16: {
        const uint16_t *h = src;

        for (int i = 0; i < n; i++)
            dst[i] = sx_bf16_to_f32(h[i]);
        return 0;
    }
    case SX_GGML_Q8_0: {
        const sx_block_q8_0 *b = src;

        for (int i = 0; i < n / SX_QK; i++, b++) {
            float d = sx_fp16_to_f32(b->d);

            for (int j = 0; j < SX_QK; j++)
                *dst++ = d * (float)b->qs[j];
        }
        return 0;
    }
    case SX_GGML_Q4_0: {
        const sx_block_q4_0 *b = src;

        for (int i = 0; i < n / SX_QK; i++, b++, dst += SX_QK) {
            float d = sx_fp16_to_f32(b->d);

            for (int j = 0; j < SX_QK / 2; j++) {
                dst[j] = d * (float)((b->qs[j] & 15) - 8);
                dst[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
            }
        }
        return 0;
    }
    default:
        return SX_EUNSUPPORTED;
    }
}
