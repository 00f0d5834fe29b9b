/* synapsex side of the engine benchmark: prefill, single-sequence decode and
 * aggregate decode of 1..8 concurrent sequences, measured on the engine's
 * batched forward pass with greedy sampling, the same way llama_bench.mjs
 * measures llama.cpp (same token ids, lengths and thread count). Prints one
 * JSON object with the median of each measurement, plus the bytes of
 * weights one decode step reads.
 * Usage: engine_bench --model F.gguf --threads N [--prompt 128] [--gen 32]
 *        [--conc-gen 16] [--runs 1] [--conc 1,2,4,8] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/sample.h"

#define MAX_CONC 64

typedef struct opts {
    const char *model;
    int threads, prompt, gen, conc_gen, runs;
    int conc[16], n_conc;
} opts;

typedef struct bench {
    sx_model *m;
    sx_pool *pool;
    sx_kv *kv;
    sx_sampler *greedy;
    int n_vocab;
    float *logits;              /* MAX_CONC rows */
} bench;

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* The same ids as llama_bench.mjs: prompt token i of sequence s. */
static int32_t prompt_token(int i, int s)
{
    return 1000 + (int32_t)(((long)i * 7919 + (long)s * 104729) % 30000);
}

static void die(const char *what, const char *err)
{
    fprintf(stderr, "engine_bench: %s: %s\n", what, err);
    exit(1);
}

/* One batched step; each item's logits row (if any) is i-th in b->logits. */
static void step(bench *b, sx_batch_item *items, int n)
{
    char err[256] = "";

    if (sx_engine_decode(b->m, b->pool, items, n, err, sizeof(err)) != SX_OK)
        die("decode", err);
}

static int32_t sample_row(bench *b, int row)
{
    sx_sample_out out;

    if (sx_sampler_sample(b->greedy, b->logits + (size_t)row * b->n_vocab,
                          &out) != SX_OK)
        die("sample", "no finite logit");
    return out.token;
}

/* Fills seqs[0..c) with prompts of len tokens minus the last, in one batch
 * (untimed). */
static void prefill_all(bench *b, sx_seq **seqs, int c, int32_t (*ids)[64],
                        int len)
{
    sx_batch_item items[MAX_CONC];

    for (int s = 0; s < c; s++) {
        sx_seq_reset(seqs[s]);
        for (int i = 0; i < len; i++)
            ids[s][i] = prompt_token(i, s);
        items[s] = (sx_batch_item){.seq = seqs[s], .tokens = ids[s],
                                   .n_tokens = len - 1, .pos = -1,
                                   .logits = SX_LOGITS_NONE};
    }
    step(b, items, c);
}

/* Tokens per second of c sequences decoding n tokens each, together. */
static double decode_rate(bench *b, sx_seq **seqs, int c, int n, int plen)
{
    int32_t ids[MAX_CONC][64], last[MAX_CONC];
    sx_batch_item items[MAX_CONC];
    double t;

    prefill_all(b, seqs, c, ids, plen);
    for (int s = 0; s < c; s++)
        last[s] = ids[s][plen - 1];
    t = now_s();
    for (int k = 0; k < n; k++) {
        for (int s = 0; s < c; s++)
            items[s] = (sx_batch_item){
                .seq = seqs[s], .tokens = &last[s], .n_tokens = 1, .pos = -1,
                .logits = SX_LOGITS_LAST,
                .out = b->logits + (size_t)s * b->n_vocab};
        step(b, items, c);
        for (int s = 0; s < c; s++)
            last[s] = sample_row(b, s);
    }
    return (double)c * n / (now_s() - t);
}

/* Bytes of weights a decode step reads: every tensor except the token
 * embedding, which is read in full only when it doubles as the output. */
static double weight_bytes(const sx_model *m)
{
    const sx_gguf *g = sx_model_gguf(m);
    bool tied = !sx_gguf_find_tensor(g, "output.weight");
    double sum = 0.0;

    for (int i = 0; i < sx_gguf_n_tensors(g); i++) {
        const sx_gguf_tensor *t = sx_gguf_tensor_at(g, i);

        if (!strcmp(t->name, "token_embd.weight") && !tied)
            continue;
        sum += (double)t->nbytes;
    }
    return sum;
}

static void parse(int argc, char **argv, opts *o)
{
    *o = (opts){.prompt = 128, .gen = 32, .conc_gen = 16, .runs = 1,
                .conc = {1, 2, 4, 8}, .n_conc = 4};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];

        if (!strcmp(k, "--model"))
            o->model = v;
        else if (!strcmp(k, "--threads"))
            o->threads = atoi(v);
        else if (!strcmp(k, "--prompt"))
            o->prompt = atoi(v);
        else if (!strcmp(k, "--gen"))
            o->gen = atoi(v);
        else if (!strcmp(k, "--conc-gen"))
            o->conc_gen = atoi(v);
        else if (!strcmp(k, "--runs"))
            o->runs = atoi(v);
        else if (!strcmp(k, "--conc")) {
            char *dup = strdup(v), *save = NULL;

            o->n_conc = 0;
            for (char *p = strtok_r(dup, ",", &save); p && o->n_conc < 16;
                 p = strtok_r(NULL, ",", &save))
                o->conc[o->n_conc++] = atoi(p);
            free(dup);
        } else {
            die("unknown option", k);
        }
    }
    if (!o->model || o->threads < 1 || o->prompt < 2 || o->gen < 1 ||
        o->conc_gen < 1 || o->runs < 1 || o->runs > 99 || o->n_conc < 1)
        die("usage", "--model F --threads N [--prompt N>=2] [--gen N] "
                     "[--conc-gen N] [--runs 1..99] [--conc 1,2,4,8]");
    for (int i = 0; i < o->n_conc; i++) {
        if (o->conc[i] < 1 || o->conc[i] > MAX_CONC)
            die("--conc", "each value must be 1..64");
    }
}

int main(int argc, char **argv)
{
    opts o;
    bench b = {0};
    char err[512] = "";
    sx_sample_params greedy = {0};
    sx_seq *seqs[MAX_CONC] = {0};
    int32_t *prompt;
    double pre[99], dec[99], conc[16];
    int rc, max_conc = 1, positions;

    parse(argc, argv, &o);
    for (int i = 0; i < o.n_conc; i++)
        max_conc = o.conc[i] > max_conc ? o.conc[i] : max_conc;

    b.m = sx_model_load(o.model, &rc, err, sizeof(err));
    if (!b.m)
        die(o.model, err);
    b.n_vocab = sx_model_get_info(b.m)->n_vocab;
    b.pool = o.threads > 1 ? sx_pool_new(o.threads) : NULL;
    if (o.threads > 1 && !b.pool)
        die("pool", "cannot start threads");
    positions = o.prompt + o.gen + SX_KV_PAGE;
    if (max_conc * (64 + o.conc_gen + SX_KV_PAGE) > positions)
        positions = max_conc * (64 + o.conc_gen + SX_KV_PAGE);
    b.kv = sx_kv_new(b.m, positions, err, sizeof(err));
    if (!b.kv)
        die("kv", err);
    b.greedy = sx_sampler_new(&greedy, b.n_vocab, NULL, NULL);
    b.logits = malloc(sizeof(float) * (size_t)b.n_vocab * MAX_CONC);
    prompt = malloc(sizeof(int32_t) * (size_t)o.prompt);
    if (!b.greedy || !b.logits || !prompt)
        die("memory", "out of memory");
    for (int s = 0; s < max_conc; s++) {
        seqs[s] = sx_seq_new(b.kv);
        if (!seqs[s])
            die("memory", "out of memory");
    }
    for (int i = 0; i < o.prompt; i++)
        prompt[i] = prompt_token(i, 0);

    /* Warm-up, untimed: one pass faults every weight page in. */
    {
        sx_batch_item it = {.seq = seqs[0], .tokens = prompt,
                            .n_tokens = o.prompt < 8 ? o.prompt : 8,
                            .pos = -1, .logits = SX_LOGITS_LAST,
                            .out = b.logits};

        step(&b, &it, 1);
        sx_seq_reset(seqs[0]);
    }

    /* Prefill of prompt - 1 tokens without logits, then decode of gen + 1
     * tokens from the last prompt token, like llama_bench.mjs. */
    for (int r = 0; r < o.runs; r++) {
        sx_batch_item it = {.seq = seqs[0], .tokens = prompt,
                            .n_tokens = o.prompt - 1, .pos = -1,
                            .logits = SX_LOGITS_NONE};
        int32_t last = prompt[o.prompt - 1];
        double t;

        sx_seq_reset(seqs[0]);
        t = now_s();
        step(&b, &it, 1);
        pre[r] = (o.prompt - 1) / (now_s() - t);

        t = now_s();
        for (int k = 0; k <= o.gen; k++) {
            it = (sx_batch_item){.seq = seqs[0], .tokens = &last,
                                 .n_tokens = 1, .pos = -1,
                                 .logits = SX_LOGITS_LAST, .out = b.logits};
            step(&b, &it, 1);
            last = sample_row(&b, 0);
        }
        dec[r] = (o.gen + 1) / (now_s() - t);
    }

    for (int i = 0; i < o.n_conc; i++) {
        double rates[99];

        for (int r = 0; r < o.runs; r++)
            rates[r] = decode_rate(&b, seqs, o.conc[i], o.conc_gen, 16);
        conc[i] = median(rates, o.runs);
    }

    printf("{\"engine\":\"synapsex (%s kernels)\",\"threads\":%d,"
           "\"weight_bytes\":%.0f,\"prefill_tps\":%.3f,\"decode_tps\":%.3f,"
           "\"concurrent\":{", sx_engine_kernels(), o.threads,
           weight_bytes(b.m), median(pre, o.runs), median(dec, o.runs));
    for (int i = 0; i < o.n_conc; i++)
        printf("%s\"%d\":%.3f", i ? "," : "", o.conc[i], conc[i]);
    printf("}}\n");

    for (int s = 0; s < max_conc; s++)
        sx_seq_free(seqs[s]);
    free(prompt);
    free(b.logits);
    sx_sampler_free(b.greedy);
    sx_kv_free(b.kv);
    sx_pool_free(b.pool);
    sx_model_free(b.m);
    return 0;
}
