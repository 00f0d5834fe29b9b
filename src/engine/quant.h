/* Number formats of the engine: fp16 and bf16 conversions, the GGUF block
 * layouts Q8_0 and Q4_0, and the Q8 activation block that quantized matmuls
 * take as input. The activation rounding follows llama.cpp (per 32 values,
 * d = max|x|/127 rounded to fp16, q = round(x/d)), which is what makes our
 * logits agree with its reference to 1e-3. */
#ifndef SX_ENGINE_QUANT_H
#define SX_ENGINE_QUANT_H

#include <stdint.h>
#include <string.h>

#define SX_QK 32 /* values per Q8_0 / Q4_0 block */

typedef struct sx_block_q8_0 {
    uint16_t d;          /* fp16 scale */
    int8_t qs[SX_QK];
} sx_block_q8_0;         /* 34 bytes, as in the file */

typedef struct sx_block_q4_0 {
    uint16_t d;          /* fp16 scale */
    uint8_t qs[SX_QK / 2]; /* value j in the low nibble of qs[j], j+16 high */
} sx_block_q4_0;         /* 18 bytes, as in the file */

_Static_assert(sizeof(sx_block_q8_0) == 34, "Q8_0 block layout");
_Static_assert(sizeof(sx_block_q4_0) == 18, "Q4_0 block layout");

/* Quantized activations: like Q8_0, with the scale already widened to float
 * (after rounding through fp16, as llama.cpp stores it). */
typedef struct sx_q8_block {
    float d;
    int8_t qs[SX_QK];
} sx_q8_block;

static inline float sx_fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    float f;

    if (exp == 0) {
        f = (float)mant * (1.0f / 16777216.0f); /* subnormal: mant * 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31)
        bits = sign | 0x7f800000u | (mant << 13);
    else
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest, ties to even, as the F16C instruction does. */
static inline uint16_t sx_f32_to_fp16(float f)
{
    uint32_t x, sign;

    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    x &= 0x7fffffffu;
    if (x > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00);          /* NaN */
    if (x >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00);          /* rounds to infinity */
    if (x < 0x38800000u) {                         /* subnormal or zero */
        float a;

        memcpy(&a, &x, 4);
        a *= 16777216.0f;                          /* units of 2^-24 */
        return (uint16_t)(sign | (uint32_t)__builtin_nearbyintf(a));
    }
    x += 0xfffu + ((x >> 13) & 1);
    x -= 0x38000000u;                              /* exponent 127 -> 15 */
    return (uint16_t)(sign | (x >> 13));
}

static inline float sx_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;

    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t sx_f32_to_bf16(float f)
{
    uint32_t x;

    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 64);         /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* Quantizes n values (n a multiple of 32) into n/32 activation blocks. */
void sx_quantize_q8(const float *x, sx_q8_block *y, int n);
/* Quantizes n values into the file's Q8_0 / Q4_0 layouts (for synth). */
void sx_quantize_q8_0(const float *x, sx_block_q8_0 *y, int n);
void sx_quantize_q4_0(const float *x, sx_block_q4_0 *y, int n);
/* Expands one row of n values of a GGUF type (F32, F16, BF16, Q8_0, Q4_0)
 * to floats. Returns 0, or SX_EUNSUPPORTED for any other type. */
int sx_dequantize_row(int type, const void *src, float *dst, int n);

#endif
