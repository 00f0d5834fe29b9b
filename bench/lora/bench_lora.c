/* LoRA serving benchmark: aggregate decode tok/s of 8 concurrent sequences
 * on one model with (a) no adapter, (b) one shared adapter, (c) 8 different
 * adapters, side by side. Adapters are synthesized: rank R (default 16),
 * F16, on q/k/v/o/gate/up/down of every layer. With OUT.gguf, the first
 * adapter is also written there (for the llama.cpp peer, llama_lora.mjs).
 *   bench_lora MODEL.gguf [threads] [steps] [rank] [OUT.gguf] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/quant.h"

#define NSEQ 8

static uint64_t rng = 20250601;

static float prand(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (float)((double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0 * 2 - 1);
}

static int fill(void *ctx, int index, const sx_gguf_tensor *t, void *dst)
{
    size_t n = (size_t)t->ne[0] * (size_t)t->ne[1];

    (void)ctx;
    (void)index;
    for (size_t i = 0; i < n; i++)
        ((uint16_t *)dst)[i] = sx_f32_to_fp16(0.02f * prand());
    return 0;
}

static sx_lora *synth(sx_model *m, int rank, const char *out)
{
    const sx_model_info *mi = sx_model_get_info(m);
    static const char *names[7] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                   "ffn_gate", "ffn_up", "ffn_down"};
    int kvd = mi->n_head_kv * mi->head_dim, E = mi->n_embd, F = mi->n_ff;
    int nin[7] = {E, E, E, E, E, E, F}, nout[7] = {E, kvd, kvd, E, F, F, E};
    sx_gguf_writer *w = sx_gguf_writer_new();
    void *buf;
    size_t len;
    char name[96], err[256];
    sx_lora *a;

    sx_gguf_writer_str(w, "general.type", "adapter", 7);
    sx_gguf_writer_str(w, "adapter.type", "lora", 4);
    sx_gguf_writer_str(w, "general.architecture", mi->arch, strlen(mi->arch));
    sx_gguf_writer_f32(w, "adapter.lora.alpha", (float)rank);
    for (int l = 0; l < mi->n_layer; l++)
        for (int s = 0; s < 7; s++) {
            int64_t na[2] = {nin[s], rank}, nb[2] = {rank, nout[s]};

            snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_a", l, names[s]);
            sx_gguf_writer_tensor(w, name, SX_GGML_F16, 2, na);
            snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_b", l, names[s]);
            sx_gguf_writer_tensor(w, name, SX_GGML_F16, 2, nb);
        }
    if (sx_gguf_writer_to_buffer(w, fill, NULL, &buf, &len))
        return NULL;
    sx_gguf_writer_free(w);
    if (out) {
        FILE *f = fopen(out, "wb");

        if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", out);
            exit(1);
        }
    }
    a = sx_lora_load_buffer(m, buf, len, NULL, err, sizeof(err));
    if (!a)
        fprintf(stderr, "adapter: %s\n", err);
    free(buf);
    return a;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Aggregate tok/s of `steps` decode steps of NSEQ sequences after a
 * 16-token prompt each; ads[i] is sequence i's adapter. */
static double run(sx_model *m, sx_pool *pool, sx_lora *const *ads, int steps)
{
    int V = sx_model_get_info(m)->n_vocab;
    sx_kv *kv = sx_kv_new(m, NSEQ * (steps + 64), NULL, 0);
    sx_seq *s[NSEQ];
    sx_batch_item it[NSEQ];
    int32_t prompt[16], tok[NSEQ];
    float *out = malloc((size_t)NSEQ * V * sizeof(float));
    char err[256];
    double t0;

    for (int i = 0; i < 16; i++)
        prompt[i] = 100 + 7 * i;
    for (int i = 0; i < NSEQ; i++) {
        s[i] = sx_seq_new(kv);
        it[i] = (sx_batch_item){.seq = s[i], .tokens = prompt, .n_tokens = 16, .pos = -1,
                                .logits = SX_LOGITS_LAST, .out = out + (size_t)i * V,
                                .adapter = ads[i], .lora_scale = 1.0f};
    }
    sx_engine_decode(m, pool, it, NSEQ, err, sizeof(err));
    t0 = now();
    for (int st = 0; st < steps; st++) {
        for (int i = 0; i < NSEQ; i++) {
            tok[i] = (int32_t)(1000 + 31 * i + st);
            it[i].tokens = &tok[i];
            it[i].n_tokens = 1;
        }
        if (sx_engine_decode(m, pool, it, NSEQ, err, sizeof(err))) {
            fprintf(stderr, "decode: %s\n", err);
            exit(1);
        }
    }
    t0 = now() - t0;
    for (int i = 0; i < NSEQ; i++)
        sx_seq_free(s[i]);
    sx_kv_free(kv);
    free(out);
    return NSEQ * steps / t0;
}

int main(int argc, char **argv)
{
    int threads = argc > 2 ? atoi(argv[2]) : 2, steps = argc > 3 ? atoi(argv[3]) : 16;
    int rank = argc > 4 ? atoi(argv[4]) : 16, reps = 3;
    char err[256];
    sx_model *m;
    sx_pool *pool;
    sx_lora *ad[NSEQ], *none[NSEQ] = {0}, *shared[NSEQ];
    double r_none[3], r_shared[3], r_multi[3];

    if (argc < 2) {
        fprintf(stderr, "usage: bench_lora MODEL.gguf [threads] [steps] [rank] "
                        "[OUT.gguf]\n");
        return 2;
    }
    m = sx_model_load(argv[1], NULL, err, sizeof(err));
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    pool = sx_pool_new(threads);
    for (int i = 0; i < NSEQ; i++)
        if (!(ad[i] = synth(m, rank, i == 0 && argc > 5 ? argv[5] : NULL)))
            return 1;
    for (int i = 0; i < NSEQ; i++)
        shared[i] = ad[0];
    printf("model %s, %d threads, %d seqs, %d decode steps, rank %d F16 adapters "
           "(%.1f MB each), %s kernels\n", argv[1], threads, NSEQ, steps, rank,
           sx_lora_get_info(ad[0])->n_bytes / 1e6, sx_engine_kernels());
    for (int k = 0; k < reps; k++) {
        r_none[k] = run(m, pool, none, steps);
        r_shared[k] = run(m, pool, shared, steps);
        r_multi[k] = run(m, pool, ad, steps);
    }
    for (int k = 0; k < reps; k++)   /* medians of 3 */
        for (int j = k + 1; j < reps; j++) {
#define SWAP(a) if (a[j] < a[k]) { double x = a[j]; a[j] = a[k]; a[k] = x; }
            SWAP(r_none) SWAP(r_shared) SWAP(r_multi)
        }
    printf("aggregate tok/s (median of %d): none %.1f | 1 shared adapter %.1f (%.0f%%) | "
           "8 different adapters %.1f (%.0f%%)\n", reps, r_none[1], r_shared[1],
           100 * r_shared[1] / r_none[1], r_multi[1], 100 * r_multi[1] / r_none[1]);
    printf("{\"none_tps\":%.2f,\"shared_adapter_tps\":%.2f,\"multi_adapter_tps\":%.2f}\n",
           r_none[1], r_shared[1], r_multi[1]);
    for (int i = 0; i < NSEQ; i++)
        sx_lora_free(ad[i]);
    sx_pool_free(pool);
    sx_model_free(m);
    return 0;
}
