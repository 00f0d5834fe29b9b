/* Memory-bandwidth probe for the engine benchmark: N threads each stream
 * their slice of a buffer much larger than the caches, as a decode step
 * streams the weights, and the best of several passes is reported in GB/s.
 * Usage: bwprobe [--threads N] [--mib SIZE] [--passes K]
 * Prints one line: "bandwidth_gbs <value>". */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slice {
    const uint8_t *p;
    size_t n;
    pthread_barrier_t *go;
    double sink;
} slice;

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Four independent 256-bit accumulators keep enough loads in flight to
 * saturate the memory system; the sum is kept so the loads are not dead. */
static void *reader(void *arg)
{
    slice *s = arg;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t out[4];

    pthread_barrier_wait(s->go);
    for (size_t i = 0; i + 128 <= s->n; i += 128) {
        const __m256i *v = (const __m256i *)(s->p + i);

        a0 = _mm256_add_epi64(a0, _mm256_load_si256(v));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + 1));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + 2));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + 3));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    _mm256_storeu_si256((__m256i *)out, a0);
    s->sink = (double)(out[0] + out[1] + out[2] + out[3]);
    pthread_barrier_wait(s->go);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = 2, passes = 7;
    size_t mib = 1024, bytes, per;
    double best = 0.0, sink = 0.0;
    uint8_t *buf;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mib"))
            mib = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--passes"))
            passes = atoi(argv[i + 1]);
    }
    if (threads < 1 || threads > 256 || mib < 64 || passes < 1) {
        fprintf(stderr, "usage: bwprobe [--threads N] [--mib SIZE>=64] "
                        "[--passes K]\n");
        return 2;
    }
    bytes = mib << 20;
    per = bytes / (size_t)threads / 4096 * 4096;
    buf = aligned_alloc(4096, bytes);
    if (!buf) {
        fprintf(stderr, "bwprobe: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    /* Touch every page so the first pass measures memory, not faults. */
    for (size_t i = 0; i < bytes; i++)
        buf[i] = (uint8_t)(i * 131u);

    for (int k = 0; k < passes; k++) {
        pthread_t tid[256];
        slice sl[256];
        pthread_barrier_t go;
        double t0, dt;

        /* The main thread joins the barrier so the clock covers only the
         * reads, not thread creation. */
        pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
        for (int t = 0; t < threads; t++) {
            sl[t] = (slice){buf + (size_t)t * per, per, &go, 0.0};
            pthread_create(&tid[t], NULL, reader, &sl[t]);
        }
        pthread_barrier_wait(&go);
        t0 = now_s();
        pthread_barrier_wait(&go);
        dt = now_s() - t0;
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            sink += sl[t].sink;
        }
        pthread_barrier_destroy(&go);
        if ((double)(per * (size_t)threads) / dt / 1e9 > best)
            best = (double)(per * (size_t)threads) / dt / 1e9;
    }
    printf("bandwidth_gbs %.2f\n", best);
    fprintf(stderr, "bwprobe: %d threads, %zu MiB, best of %d passes "
                    "(checksum %.0f)\n", threads, mib, passes, sink);
    free(buf);
    return 0;
}
