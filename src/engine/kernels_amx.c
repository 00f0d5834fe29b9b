/* AMX (Intel Advanced Matrix Extensions) matrix kernels for Q8_0 / Q4_0
 * weights against many activation rows (prefill): one tile multiply gives
 * the exact int32 block dots of 16 weight rows and 16 activation rows, and
 * AVX-512 then adds each dot times its two scales into float accumulators.
 * Fewer activation rows than AMX_MIN_NX, calls without a work area and
 * weight rows left over from the 16-row tiles go through the AVX-512 matrix
 * kernels, which this table builds on. */
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/kernels.h"

/* Activation rows from which a matmul takes the tiles (kernel_bench: 2.9x
 * AVX-512 at 16 rows, 2x already at 9). Below, the AVX-512 path: decode
 * batches of a few sequences, and short prompts batched together, then
 * give each sequence's numbers bit for bit (test_engine_lora runs 3 x 3
 * tokens against 3 alone). */
#define AMX_MIN_NX 16
#define TM 16                /* weight rows per tile */
#define TN 16                /* activation rows per tile */

/* Linux: a process must ask for the tile-data state before using it. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* One packed block of 16 activation rows in the layout tdpbssd reads as
 * its second operand: value k of row t at q[k / 4][4 * t + k % 4]. */
typedef struct amx_block {
    int8_t q[SX_QK / 4][4 * TN];
    float d[TN];             /* the rows' scales (0 for padding rows) */
} amx_block;

_Static_assert(sizeof(amx_block) == 576, "AMX block layout");

/* Tile registers: A (16 weight rows x one 32-byte block), B (one block of
 * 16 activation rows), C (16 x 16 int32), twice, so that one block's dots
 * are read back while the next block's are computed. */
#define TA0 0
#define TB0 1
#define TC0 2
#define TA1 3
#define TB1 4
#define TC1 5
/* GCC's tile intrinsics paste their register argument into the assembly
 * text, so the names above must be expanded first. */
#define TZERO(t) _tile_zero(t)
#define TLOAD(t, p, s) _tile_loadd(t, p, s)
#define TSTORE(t, p, s) _tile_stored(t, p, s)
#define TDP(c, a, b) _tile_dpbssd(c, a, b)

typedef struct tile_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_cfg;

_Static_assert(sizeof(tile_cfg) == 64, "tile configuration layout");

static void load_tile_cfg(void)
{
    tile_cfg c;

    memset(&c, 0, sizeof(c));
    c.palette = 1;
    for (int s = 0; s < 2; s++) { /* TA0, TB0, TC0, then TA1, TB1, TC1 */
        c.rows[TA0 + 3 * s] = TM;
        c.colsb[TA0 + 3 * s] = SX_QK;
        c.rows[TB0 + 3 * s] = SX_QK / 4;
        c.colsb[TB0 + 3 * s] = 4 * TN;
        c.rows[TC0 + 3 * s] = TM;
        c.colsb[TC0 + 3 * s] = 4 * TN;
    }
    _tile_loadconfig(&c);
}

/* --- activations ---------------------------------------------------------- */

static size_t amx_offset(int n, int nx)
{
    return (sx_pack_q8_bytes(n, nx) + 63) / 64 * 64;
}

static size_t amx_pack_bytes(int n, int nx)
{
    size_t groups = (size_t)(nx + TN - 1) / TN;

    if (nx < AMX_MIN_NX)
        return sx_pack_q8_bytes(n, nx);
    return amx_offset(n, nx) + groups * (size_t)(n / SX_QK) * sizeof(amx_block);
}

/* The AVX-512 layout first (for the rows the tiles leave over), then, for
 * AMX_MIN_NX rows or more, the tile layout, 16 activation rows a group,
 * taken from the AVX-512 layout so both hold the same quantization. */
static void amx_pack(const float *x, size_t x_stride, int nx, int n,
                     void *dst)
{
    const sx_q8_pair_block *pk = dst;
    amx_block *ab;
    int nb = n / SX_QK, groups = (nx + TN - 1) / TN;

    sx_pack_q8_avx512(x, x_stride, nx, n, dst);
    if (nx < AMX_MIN_NX)
        return;
    ab = (amx_block *)((uint8_t *)dst + amx_offset(n, nx));
    for (int g = 0; g < groups; g++)
        for (int b = 0; b < nb; b++, ab++) {
            for (int t = 0; t < TN; t++) {
                int j = g * TN + t;
                const sx_q8_pair_block *pb = pk + (size_t)(j / 2) * nb + b;

                if (j >= nx) {
                    for (int k4 = 0; k4 < SX_QK / 4; k4++)
                        memset(&ab->q[k4][4 * t], 0, 4);
                    ab->d[t] = 0.0f;
                    continue;
                }
                for (int k4 = 0; k4 < SX_QK / 4; k4++)
                    memcpy(&ab->q[k4][4 * t], &pb->qs[j % 2][4 * k4], 4);
                ab->d[t] = pb->d[j % 2][0];
            }
        }
}

/* --- tiles ---------------------------------------------------------------- */

/* Q4_0 rows as Q8_0 rows (nibble - 8), so the tiles read both alike. */
static void q4_to_q8(const uint8_t *w, size_t ws, int nb, sx_block_q8_0 *dst)
{
    for (int r = 0; r < TM; r++) {
        const sx_block_q4_0 *src = (const sx_block_q4_0 *)(w + (size_t)r * ws);

        for (int b = 0; b < nb; b++, dst++) {
            dst->d = src[b].d;
            for (int i = 0; i < SX_QK / 2; i++) {
                dst->qs[i] = (int8_t)((src[b].qs[i] & 15) - 8);
                dst->qs[i + SX_QK / 2] = (int8_t)((src[b].qs[i] >> 4) - 8);
            }
        }
    }
}

/* The fp16 scales of one block of 16 rows (a gather: the rows' cache
 * misses overlap) as floats; rows: the rows' byte offsets. */
static inline __attribute__((always_inline)) __m512
block_scales(const uint8_t *blk, __m512i rows)
{
    __m512i v = _mm512_i32gather_epi32(rows, blk, 1);

    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
}

/* Adds the dots of block b (int32, 16 x 16 at c) times their scales. */
static inline __attribute__((always_inline)) void
scale_add(const int32_t *c, const float *wd, __m512 xd, __m512 *acc)
{
#pragma GCC unroll 16
    for (int r = 0; r < TM; r++) {
        __m512 s = _mm512_mul_ps(xd, _mm512_set1_ps(wd[r]));

        acc[r] = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(_mm512_load_si512(c + r * TN)), s, acc[r]);
    }
}

/* C = the int32 dots of block b of 16 weight rows and 16 activation rows
 * (tile registers c, a, bt). */
#define BLOCK_DOTS(c, a, bt, b)                                             \
    do {                                                                    \
        TZERO(c);                                                           \
        TLOAD(a, w + (size_t)(b) * sizeof(sx_block_q8_0) + 2, (long)ws);    \
        TLOAD(bt, x[b].q, 4 * TN);                                          \
        TDP(c, a, bt);                                                      \
    } while (0)

/* Writes the 16 x 16 results acc[r] lane t as out[t * ldo + r], t < nt:
 * a transpose in registers (pairs of values, then quads, then 128-bit
 * lanes). */
static inline __attribute__((always_inline)) void
store_transposed(const __m512 *acc, float *out, size_t ldo, int nt)
{
    __m512 t[16], u[16];

#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(acc[i], acc[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(acc[i], acc[i + 1]);
    }
    /* u[4g + e], 128-bit lane k: rows 4g..4g+3 of column 4k + e */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        __m512d a = _mm512_castps_pd(t[4 * g]),
                b = _mm512_castps_pd(t[4 * g + 1]),
                c = _mm512_castps_pd(t[4 * g + 2]),
                d = _mm512_castps_pd(t[4 * g + 3]);

        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
#pragma GCC unroll 4
    for (int e = 0; e < 4; e++) {
        __m512 x0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x44),
               x1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xee),
               y0 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x44),
               y1 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xee);
        __m512 col[4] = {_mm512_shuffle_f32x4(x0, y0, 0x88),
                         _mm512_shuffle_f32x4(x0, y0, 0xdd),
                         _mm512_shuffle_f32x4(x1, y1, 0x88),
                         _mm512_shuffle_f32x4(x1, y1, 0xdd)};

#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            if (4 * k + e < nt)
                _mm512_storeu_ps(out + (size_t)(4 * k + e) * ldo, col[k]);
    }
}

/* 16 Q8_0 weight rows (ws bytes apart, float scales in wd[b][r]) against
 * the first nt of a group of 16 packed activation rows: out[t * ldo + r] =
 * dot(row r, t). The dots of the next block are under way while one
 * block's are scaled. fill: the first group of these rows, which reads the
 * weight scales into wd[b][r] for the others. */
static void tile16(const uint8_t *w, size_t ws, float *wd, int nb,
                   const amx_block *x, float *out, size_t ldo, int nt,
                   int fill)
{
    int32_t c[2][TM * TN] __attribute__((aligned(64)));
    __m512i rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32((int)ws));
    __m512 acc[TM];

#pragma GCC unroll 16
    for (int r = 0; r < TM; r++)
        acc[r] = _mm512_setzero_ps();
    BLOCK_DOTS(TC0, TA0, TB0, 0);
    for (int b = 0; b < nb; b += 2) {
        if (b + 1 < nb)
            BLOCK_DOTS(TC1, TA1, TB1, b + 1);
        TSTORE(TC0, c[0], 4 * TN);
        if (b + 2 < nb)
            BLOCK_DOTS(TC0, TA0, TB0, b + 2);
        if (fill)
            for (int i = b; i < b + 2 && i < nb; i++)
                _mm512_store_ps(wd + (size_t)i * TM,
                                block_scales(w + (size_t)i *
                                                     sizeof(sx_block_q8_0),
                                             rows));
        scale_add(c[0], wd + (size_t)b * TM, _mm512_load_ps(x[b].d), acc);
        if (b + 1 < nb) {
            TSTORE(TC1, c[1], 4 * TN);
            scale_add(c[1], wd + (size_t)(b + 1) * TM,
                      _mm512_load_ps(x[b + 1].d), acc);
        }
    }
    store_transposed(acc, out, ldo, nt);
}

/* --- matrices ------------------------------------------------------------- */

/* The work area of the tiles: the float scales of 16 rows (wd[b][r]),
 * then, for Q4_0, the 16 rows widened to Q8_0. The AVX-512 kernel reuses
 * it for the rows left over. */
static size_t amx_work_bytes(int n, int nr)
{
    size_t nb = (size_t)(n / SX_QK);
    size_t tiles = nb * TM * sizeof(float) + nb * TM * sizeof(sx_block_q8_0);
    size_t avx = sx_mat_work_bytes(n, nr);

    return avx > tiles ? avx : tiles;
}

static void amx_mat(int type, int n, const void *w, size_t ws, int nr,
                    const void *packed, int nx, float *out, size_t ldo,
                    void *work)
{
    sx_mat_fn avx = type == SX_GGML_Q8_0 ? sx_mat_q8_0_avx512
                                         : sx_mat_q4_0_avx512;
    const uint8_t *wr = w;
    const amx_block *xa;
    int nb = n / SX_QK, full = nr / TM * TM, groups = (nx + TN - 1) / TN;
    float *wd = work;
    sx_block_q8_0 *q8;

    /* the scale gather takes row offsets as int32 */
    if (nx < AMX_MIN_NX || !work || ws > INT32_MAX / TM ||
        (size_t)nb * sizeof(sx_block_q8_0) > INT32_MAX / TM) {
        avx(n, w, ws, nr, packed, nx, out, ldo, work);
        return;
    }
    q8 = (sx_block_q8_0 *)(wd + (size_t)nb * TM);
    xa = (const amx_block *)((const uint8_t *)packed + amx_offset(n, nx));
    load_tile_cfg();
    for (int r0 = 0; r0 < full; r0 += TM) {
        const uint8_t *rows = wr + (size_t)r0 * ws;
        size_t rs = ws;

        if (type == SX_GGML_Q4_0) {
            q4_to_q8(rows, ws, nb, q8);
            rows = (const uint8_t *)q8;
            rs = (size_t)nb * sizeof(sx_block_q8_0);
        }
        for (int g = 0; g < groups; g++) {
            int nt = nx - g * TN < TN ? nx - g * TN : TN;

            tile16(rows, rs, wd, nb, xa + (size_t)g * nb,
                   out + (size_t)(g * TN) * ldo + (size_t)r0, ldo, nt,
                   g == 0);
        }
    }
    _tile_release();
    if (full < nr)
        avx(n, wr + (size_t)full * ws, ws, nr - full, packed, nx, out + full,
            ldo, work);
}

static void amx_mat_q8_0(int n, const void *w, size_t ws, int nr,
                         const void *packed, int nx, float *out, size_t ldo,
                         void *work)
{
    amx_mat(SX_GGML_Q8_0, n, w, ws, nr, packed, nx, out, ldo, work);
}

static void amx_mat_q4_0(int n, const void *w, size_t ws, int nr,
                         const void *packed, int nx, float *out, size_t ldo,
                         void *work)
{
    amx_mat(SX_GGML_Q4_0, n, w, ws, nr, packed, nx, out, ldo, work);
}

/* --- detection ------------------------------------------------------------ */

static sx_kernels amx_table;
static int amx_ok;

/* CPU flags AMX-TILE and AMX-INT8, the OS saving the tile state (XCR0 bits
 * 17 and 18), and the kernel granting this process the tile data. */
static void amx_detect(void)
{
    const sx_kernels *base = sx_kernels_avx512();
    unsigned a, b, c, d;

    if (!base || !__get_cpuid_count(7, 0, &a, &b, &c, &d) ||
        !(d & (1u << 24)) || !(d & (1u << 25)))
        return;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))
        return;                                  /* no OSXSAVE */
    if ((_xgetbv(0) & (3u << 17)) != (3u << 17))
        return;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
        return;
    amx_table = *base;
    amx_table.name = "amx";
    amx_table.pack_q8_bytes = amx_pack_bytes;
    amx_table.mat_work_bytes = amx_work_bytes;
    amx_table.pack_q8 = amx_pack;
    amx_table.mat_q8_0 = amx_mat_q8_0;
    amx_table.mat_q4_0 = amx_mat_q4_0;
    amx_ok = 1;
}

const sx_kernels *sx_kernels_amx(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, amx_detect);
    return amx_ok ? &amx_table : NULL;
}
