/* AVX-512 VNNI matrix kernels for Q8_0 / Q4_0 weights: several weight rows
 * against several activation rows per pass, accumulators in registers, so a
 * weight block is loaded once for up to 8 activation rows and an activation
 * block once for 4 weight rows; one activation row (decode) streams the
 * weight rows one after another. The activations of one matmul are
 * quantized and packed once (pack_q8) into the layout the kernels read.
 *
 * Exactness: every (row, activation) pair keeps the float order of the
 * scalar dot_q8_0 (8 lanes of 4 products, one fused multiply-add per block
 * and lane with the scale product dw * dx rounded first, then the pairwise
 * horizontal sum), so the results are bit-identical to it. Only the integer
 * part is computed differently: weights enter vpdpbusd as unsigned bytes
 * w + 128, and the packed activation carries -128 * (sum of its 4 values)
 * per lane as the starting value, which cancels the offset exactly. */
#include <immintrin.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/kernels.h"

typedef sx_q8_pair_block pk_block;

#define TILE_ROWS 4          /* weight rows per register tile (pairs path) */
#define TILE_PAIRS 4         /* activation pairs per register tile */
#define VEC_ROWS 8           /* weight rows per tile of the 1-row path */
/* Software prefetch distance in bytes along the weight rows of the pairs
 * path, whose 4 interleaved rows the hardware prefetchers follow poorly:
 * without it a streaming matrix took 1.6x as long. */
#ifndef PF_DIST
#define PF_DIST 8192
#endif
#define KERN_INLINE static inline __attribute__((always_inline))
enum { CONV = -1 };          /* pseudo weight type: rows from convert_rows */

/* --- activations ---------------------------------------------------------- */

/* Quantizes 32 floats as sx_quantize_q8 does (d = max|x|/127 through fp16,
 * q = round-half-even(x * 127/max|x|)); returns d and the 32 bytes in q. */
KERN_INLINE float quant_block(const float *x, __m256i *q)
{
    __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    float amax = _mm512_reduce_max_ps(
        _mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    __m512 vid = _mm512_set1_ps(id);
    __m128i qa = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(a, vid)));
    __m128i qb = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(b, vid)));

    *q = _mm256_set_m128i(qb, qa);
    return _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT));
}

/* The activation format of the dot kernels, vectorized. */
void sx_quantize_q8_avx512(const float *x, sx_q8_block *y, int n)
{
    for (int b = 0; b < n / SX_QK; b++, x += SX_QK, y++) {
        __m256i q;

        y->d = quant_block(x, &q);
        _mm256_storeu_si256((__m256i *)y->qs, q);
    }
}

size_t sx_pack_q8_bytes(int n, int nx)
{
    return (size_t)(nx + 1) / 2 * (size_t)(n / SX_QK) * sizeof(pk_block);
}

void sx_pack_q8_avx512(const float *x, size_t x_stride, int nx, int n,
                       void *dst)
{
    const __m256i ones = _mm256_set1_epi8(1);
    int nb = n / SX_QK;
    pk_block *pk = dst;

    for (int j = 0; j < nx; j++) {
        const float *xr = x + (size_t)j * x_stride;
        pk_block *pb = pk + (size_t)(j / 2) * (size_t)nb;
        int h = j % 2;

        for (int b = 0; b < nb; b++, pb++) {
            __m256i q, s;
            float d = quant_block(xr + (size_t)b * SX_QK, &q);

            s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
            _mm256_storeu_si256((__m256i *)pb->qs[h], q);
            _mm256_storeu_si256((__m256i *)pb->init[h],
                                _mm256_mullo_epi32(s, _mm256_set1_epi32(-128)));
            _mm256_storeu_ps(pb->d[h], _mm256_set1_ps(d));
        }
    }
    if (nx % 2) {                /* the odd row's partner: zeros */
        pk_block *pb = pk + (size_t)(nx / 2) * (size_t)nb;

        for (int b = 0; b < nb; b++, pb++) {
            memset(pb->qs[1], 0, sizeof(pb->qs[1]));
            memset(pb->init[1], 0, sizeof(pb->init[1]));
            memset(pb->d[1], 0, sizeof(pb->d[1]));
        }
    }
}

/* --- weights -------------------------------------------------------------- */

/* Block b of a weight row as 32 unsigned bytes w + 128, and its scale. */
KERN_INLINE __m256i wblock_u8(int type, const uint8_t *row, int b)
{
    if (type == SX_GGML_Q8_0) {
        const sx_block_q8_0 *wb = (const sx_block_q8_0 *)row + b;

        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)wb->qs),
                                _mm256_set1_epi8((char)0x80));
    } else {
        const sx_block_q4_0 *wb = (const sx_block_q4_0 *)row + b;
        const __m128i low = _mm_set1_epi8(15);
        __m128i q = _mm_loadu_si128((const __m128i *)wb->qs);

        /* nibble - 8 + 128 */
        return _mm256_add_epi8(
            _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), low),
                             _mm_and_si128(q, low)),
            _mm256_set1_epi8(120));
    }
}

KERN_INLINE size_t wbytes(int type)
{
    return type == SX_GGML_Q8_0 ? sizeof(sx_block_q8_0)
                                : sizeof(sx_block_q4_0);
}

KERN_INLINE uint16_t wscale(int type, const uint8_t *row, int b)
{
    uint16_t d;

    memcpy(&d, row + (size_t)b * wbytes(type), 2);
    return d;
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1),
                          _mm256_castps256_ps128(v));

    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* --- register tiles ------------------------------------------------------- */

/* R weight rows against P activation pairs (2P rows, nx_tile of them real):
 * out[j * ldo + r]. Type CONV reads rows already converted by
 * convert_rows: w + 128 at w (ws bytes a row), float scales at wd. */
KERN_INLINE void tile_pairs(int type, int R, int P, int nb, const uint8_t *w,
                            size_t ws, const float *wd, const pk_block *x,
                            int nx_tile, float *out, size_t ldo)
{
    __m512 acc[TILE_ROWS][TILE_PAIRS];

#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int p = 0; p < P; p++)
            acc[r][p] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m512i wv[TILE_ROWS];
        __m512 dw[TILE_ROWS];

#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *row = w + (size_t)r * ws;

            if (type == CONV) {
                wv[r] = _mm512_broadcast_i64x4(_mm256_load_si256(
                    (const __m256i *)(row + (size_t)b * SX_QK)));
                dw[r] = _mm512_set1_ps(wd[(size_t)r * (size_t)nb + b]);
                continue;
            }
            wv[r] = _mm512_broadcast_i64x4(wblock_u8(type, row, b));
            _mm_prefetch((const char *)row + (size_t)b * wbytes(type) + PF_DIST,
                         _MM_HINT_T0);
            dw[r] = _mm512_cvtph_ps(_mm256_set1_epi16(
                (short)wscale(type, row, b)));
        }
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            const pk_block *xb = x + (size_t)p * (size_t)nb + b;
            __m512i xq = _mm512_loadu_si512(xb->qs);
            __m512i xi = _mm512_loadu_si512(xb->init);
            __m512 xd = _mm512_loadu_ps(xb->d);

#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                __m512i s = _mm512_dpbusd_epi32(xi, wv[r], xq);

                acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw[r], xd),
                                            _mm512_cvtepi32_ps(s), acc[r][p]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            out[(size_t)(2 * p) * ldo + (size_t)r] =
                hsum8(_mm512_castps512_ps256(acc[r][p]));
            if (2 * p + 1 < nx_tile)
                out[(size_t)(2 * p + 1) * ldo + (size_t)r] =
                    hsum8(_mm512_extractf32x8_ps(acc[r][p], 1));
        }
}

/* R weight rows against one activation row (half 0 of pair 0): decode.
 * One row at a time, front to back: the weights then stream from memory as
 * one sequential run, which the hardware prefetchers follow best. On a
 * Zen 4 VM this read a streaming matrix 1.2-1.5x faster than 8 rows
 * interleaved with software prefetch (kernel_bench), and the activation
 * row, reused for every weight row, stays in L1 either way. */
KERN_INLINE void tile_one(int type, int R, int nb, const uint8_t *w,
                          size_t ws, const pk_block *x, float *out)
{
    for (int r = 0; r < R; r++) {
        const uint8_t *row = w + (size_t)r * ws;
        __m256 acc = _mm256_setzero_ps();

        for (int b = 0; b < nb; b++) {
            __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs[0]);
            __m256i xi = _mm256_loadu_si256((const __m256i *)x[b].init[0]);
            __m256 xd = _mm256_loadu_ps(x[b].d[0]);
            __m256 dw = _mm256_cvtph_ps(_mm_set1_epi16(
                (short)wscale(type, row, b)));
            __m256i s = _mm256_dpbusd_epi32(xi, wblock_u8(type, row, b), xq);

            acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, xd),
                                  _mm256_cvtepi32_ps(s), acc);
        }
        out[r] = hsum8(acc);
    }
}

/* Instances for every tile shape a matrix can end with. */
typedef void (*pairs_fn)(int nb, const uint8_t *w, size_t ws,
                         const float *wd, const pk_block *x, int nx_tile,
                         float *out, size_t ldo);
typedef void (*one_fn)(int nb, const uint8_t *w, size_t ws,
                       const pk_block *x, float *out);

#define SX_GGML_CONV CONV
#define PAIRS(T, R, P)                                                      \
    static void pairs_##T##_##R##_##P(int nb, const uint8_t *w, size_t ws,  \
                                      const float *wd, const pk_block *x,   \
                                      int nx_tile, float *out, size_t ldo)  \
    {                                                                       \
        tile_pairs(SX_GGML_##T, R, P, nb, w, ws, wd, x, nx_tile, out, ldo); \
    }
#define PAIRS_R(T, R) PAIRS(T, R, 1) PAIRS(T, R, 2) PAIRS(T, R, 3) PAIRS(T, R, 4)
#define PAIRS_T(T) PAIRS_R(T, 1) PAIRS_R(T, 2) PAIRS_R(T, 3) PAIRS_R(T, 4)
PAIRS_T(Q8_0)
PAIRS_T(Q4_0)
PAIRS_T(CONV)

#define ONE(T, R)                                                           \
    static void one_##T##_##R(int nb, const uint8_t *w, size_t ws,          \
                              const pk_block *x, float *out)                \
    {                                                                       \
        tile_one(SX_GGML_##T, R, nb, w, ws, x, out);                        \
    }
#define ONE_T(T) ONE(T, 1) ONE(T, 2) ONE(T, 3) ONE(T, 4) ONE(T, 5) ONE(T, 6) \
    ONE(T, 7) ONE(T, 8)
ONE_T(Q8_0)
ONE_T(Q4_0)

#define PAIRS_ROW(T, R) {pairs_##T##_##R##_1, pairs_##T##_##R##_2,          \
                         pairs_##T##_##R##_3, pairs_##T##_##R##_4}
static const pairs_fn pairs_q8[TILE_ROWS][TILE_PAIRS] = {
    PAIRS_ROW(Q8_0, 1), PAIRS_ROW(Q8_0, 2), PAIRS_ROW(Q8_0, 3),
    PAIRS_ROW(Q8_0, 4)};
static const pairs_fn pairs_q4[TILE_ROWS][TILE_PAIRS] = {
    PAIRS_ROW(Q4_0, 1), PAIRS_ROW(Q4_0, 2), PAIRS_ROW(Q4_0, 3),
    PAIRS_ROW(Q4_0, 4)};
static const pairs_fn pairs_conv[TILE_ROWS][TILE_PAIRS] = {
    PAIRS_ROW(CONV, 1), PAIRS_ROW(CONV, 2), PAIRS_ROW(CONV, 3),
    PAIRS_ROW(CONV, 4)};
static const one_fn one_q8[VEC_ROWS] = {
    one_Q8_0_1, one_Q8_0_2, one_Q8_0_3, one_Q8_0_4,
    one_Q8_0_5, one_Q8_0_6, one_Q8_0_7, one_Q8_0_8};
static const one_fn one_q4[VEC_ROWS] = {
    one_Q4_0_1, one_Q4_0_2, one_Q4_0_3, one_Q4_0_4,
    one_Q4_0_5, one_Q4_0_6, one_Q4_0_7, one_Q4_0_8};

/* --- matrices ------------------------------------------------------------- */

size_t sx_mat_work_bytes(int n, int nr)
{
    return (size_t)nr * (size_t)n + (size_t)nr * (size_t)(n / SX_QK) * 4;
}

/* Rows as w + 128 bytes (32-byte aligned blocks) and float scales, once
 * per call, so the tiles that reuse them do no per-block decoding. */
static void convert_rows(int type, int nb, const uint8_t *w, size_t ws,
                         int nr, uint8_t *q, float *d)
{
    for (int r = 0; r < nr; r++) {
        const uint8_t *row = w + (size_t)r * ws;

        for (int b = 0; b < nb; b++) {
            size_t i = (size_t)r * (size_t)nb + b;

            _mm256_store_si256((__m256i *)(q + i * SX_QK),
                               type == SX_GGML_Q8_0
                                   ? wblock_u8(SX_GGML_Q8_0, row, b)
                                   : wblock_u8(SX_GGML_Q4_0, row, b));
            d[i] = _cvtsh_ss(wscale(type, row, b));
        }
    }
}

/* Activation pairs outermost within the call, so a tile of pairs stays in
 * L1 while the rows go by; the caller keeps nr small enough (tens of rows)
 * for those rows to stay in L2 across the pair tiles. With more than one
 * tile of pairs and a work area, the rows are converted first. */
static void mat(int type, const pairs_fn (*pairs)[TILE_PAIRS],
                const one_fn *one, int n, const void *w, size_t ws, int nr,
                const void *packed, int nx, float *out, size_t ldo,
                void *work)
{
    const uint8_t *wr = w;
    const pk_block *x = packed;
    const float *wd = NULL;
    int nb = n / SX_QK, np = (nx + 1) / 2;

    if (nx == 1) {
        for (int r = 0; r < nr; r += VEC_ROWS) {
            int R = nr - r < VEC_ROWS ? nr - r : VEC_ROWS;

            one[R - 1](nb, wr + (size_t)r * ws, ws, x, out + r);
        }
        return;
    }
    if (work && np > TILE_PAIRS) {
        uint8_t *q = work;
        float *d = (float *)(q + (size_t)nr * (size_t)n);

        convert_rows(type, nb, wr, ws, nr, q, d);
        wr = q;
        ws = (size_t)n;
        wd = d;
        pairs = pairs_conv;
    }
    for (int p = 0; p < np; p += TILE_PAIRS) {
        int P = np - p < TILE_PAIRS ? np - p : TILE_PAIRS;
        int nxt = nx - 2 * p < 2 * P ? nx - 2 * p : 2 * P;

        for (int r = 0; r < nr; r += TILE_ROWS) {
            int R = nr - r < TILE_ROWS ? nr - r : TILE_ROWS;

            pairs[R - 1][P - 1](nb, wr + (size_t)r * ws, ws,
                                wd ? wd + (size_t)r * (size_t)nb : NULL,
                                x + (size_t)p * (size_t)nb, nxt,
                                out + (size_t)(2 * p) * ldo + (size_t)r, ldo);
        }
    }
}

void sx_mat_q8_0_avx512(int n, const void *w, size_t ws, int nr,
                        const void *packed, int nx, float *out, size_t ldo,
                        void *work)
{
    mat(SX_GGML_Q8_0, pairs_q8, one_q8, n, w, ws, nr, packed, nx, out, ldo,
        work);
}

void sx_mat_q4_0_avx512(int n, const void *w, size_t ws, int nr,
                        const void *packed, int nx, float *out, size_t ldo,
                        void *work)
{
    mat(SX_GGML_Q4_0, pairs_q4, one_q4, n, w, ws, nr, packed, nx, out, ldo,
        work);
}
