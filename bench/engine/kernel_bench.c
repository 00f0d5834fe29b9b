/* Single-thread micro-benchmark of the Q8_0 matmul kernels: the per-row dot
 * path against the AVX-512 and (where the CPU has it) AMX matrix paths,
 * for 1 to 128 activation rows, on a matrix that fits in cache and (up to 8
 * rows) on one that streams from memory. Times are
 * thread CPU time, best of several repetitions, so that other load on a
 * shared machine disturbs them less than wall time would.
 * Build: cc -O2 -Isrc bench/engine/kernel_bench.c build/libsxengine.a -lm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/gguf.h"
#include "engine/kernels.h"

static double cpu_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void dot_path(const sx_kernels *k, int n, const void *w, size_t wrow,
                     int nr, const void *act, size_t rb, int nx, float *out)
{
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nx; j += 8)
            k->dot_q8_0(n, (const char *)w + (size_t)r * wrow,
                        (const char *)act + (size_t)j * rb, rb,
                        nx - j < 8 ? nx - j : 8, out + (size_t)r * 8);
}

int main(int argc, char **argv)
{
    const sx_kernels *k = sx_kernels_best();
    int n = 896, rows_small = 4864, rows_big = argc > 1 ? atoi(argv[1])
                                                        : 151936;

    if (rows_big < rows_small)
        rows_big = rows_small;
    static const int nxs[] = {1, 8, 9, 16, 32, 128};
    /* the matrix paths compared: AVX-512 and, where present, AMX */
    const sx_kernels *mats[2] = {sx_kernels_avx512(), sx_kernels_amx()};
    size_t wrow = (size_t)n / 32 * 34;
    size_t rb = sx_act_row_bytes(SX_GGML_Q8_0, n);
    uint8_t *w = malloc(wrow * (size_t)rows_big);
    float *x = malloc(sizeof(float) * 128 * (size_t)n);
    void *act = aligned_alloc(64, 128 * rb);
    void *pk = aligned_alloc(64, mats[1] ? mats[1]->pack_q8_bytes(n, 128)
                                         : sx_pack_q8_bytes(n, 128));
    float *out = malloc(sizeof(float) * 128 * (size_t)rows_big);
    void *work = aligned_alloc(64, (k->mat_work_bytes(n, 64) + 63) / 64 * 64);

    if (!mats[0]) {
        fprintf(stderr, "kernel_bench: no AVX-512 matrix path here\n");
        return 1;
    }
    for (size_t i = 0; i < wrow * (size_t)rows_big; i++)
        w[i] = (uint8_t)(i * 2654435761u >> 13);
    for (int r = 0; r < rows_big; r++)   /* sane fp16 scales */
        for (int b = 0; b < n / 32; b++)
            memcpy(w + (size_t)r * wrow + (size_t)b * 34,
                   &(uint16_t){0x2000}, 2);
    for (int i = 0; i < 128 * n; i++)
        x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    sx_act_prepare(k, SX_GGML_Q8_0, x, (size_t)n, 128, n, act);

    for (int big = 0; big < 2; big++) {
        int nr = big ? rows_big : rows_small;
        double gb = (double)wrow * nr / 1e9;

        for (size_t xi = 0; xi < sizeof(nxs) / sizeof(nxs[0]); xi++) {
            int nx = nxs[xi], reps = big ? 3 : (nx >= 16 ? 5 : 30);
            double best_dot = 1e9, best_mat[2] = {1e9, 1e9};

            if (big && nx > 8)
                continue;
            for (int rep = 0; rep < reps; rep++) {
                double t = cpu_s();

                dot_path(k, n, w, wrow, nr, act, rb, nx, out);
                t = cpu_s() - t;
                best_dot = t < best_dot ? t : best_dot;
                for (int m = 0; m < 2 && mats[m]; m++) {
                    mats[m]->pack_q8(x, (size_t)n, nx, n, pk);
                    t = cpu_s();
                    for (int r = 0; r < nr; r += 64)
                        mats[m]->mat_q8_0(n, w + (size_t)r * wrow, wrow,
                                          nr - r < 64 ? nr - r : 64, pk, nx,
                                          out + r, (size_t)nr, work);
                    t = cpu_s() - t;
                    best_mat[m] = t < best_mat[m] ? t : best_mat[m];
                }
            }
            printf("%-5s rows %6d nx %3d: dot %8.3f ms (%5.1f GB/s)",
                   big ? "big" : "small", nr, nx, best_dot * 1e3,
                   gb / best_dot);
            for (int m = 0; m < 2 && mats[m]; m++)
                printf("  %s %8.3f ms %5.2fx", mats[m]->name,
                       best_mat[m] * 1e3, best_dot / best_mat[m]);
            printf("\n");
        }
    }
    free(w);
    free(x);
    free(act);
    free(pk);
    free(out);
    free(work);
    return 0;
}
