/* LoRA tests: the fixture adapters against llama.cpp's reference runs
 * (logits within tolerance, greedy continuations identical), mixed-adapter
 * batches equal to each sequence alone, isolation of sequences without an
 * adapter (bit-identical whatever their neighbours carry), F16 adapters,
 * and validation of malformed adapters with messages naming the tensor. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "engine/quant.h"

#include "engine_fixture.h"

/* --- helpers ------------------------------------------------------------- */

static sx_lora *load_lora(const sx_model *m, const char *rel)
{
    char path[8192], err[256] = "";
    sx_lora *a;

    snprintf(path, sizeof(path), "%s/%s", fixtures, rel);
    a = sx_lora_load(m, path, NULL, err, sizeof(err));
    if (!a)
        fail_msg("load %s: %s", rel, err);
    return a;
}

static int decode(sx_model *m, sx_pool *pool, sx_seq *s, const int32_t *tok,
                  int n, int mode, float *out, const sx_lora *a, float scale)
{
    char err[256] = "";
    sx_batch_item it = {.seq = s, .tokens = tok, .n_tokens = n, .pos = -1,
                        .logits = mode, .out = out, .adapter = a,
                        .lora_scale = scale};
    int rc = sx_engine_decode(m, pool, &it, 1, err, sizeof(err));

    if (rc)
        print_message("decode: %s\n", err);
    return rc;
}

/* --- reference runs ------------------------------------------------------ */

static void check_run(const jv *run, sx_pool *pool)
{
    const jv *prompts = jget(run, "prompts");
    const char *id = jget(run, "id")->str;
    float scale = (float)jget(run, "lora_scale")->num;
    sx_model *m = load_model(jget(run, "model")->str);
    sx_lora *a = load_lora(m, jget(run, "adapter")->str);
    int V = sx_model_get_info(m)->n_vocab;
    sx_kv *kv = sx_kv_new(m, 256, NULL, 0);
    double worst = 0.0, moved = 0.0;
    long n_moved = 0;

    assert_non_null(kv);
    assert_int_equal(sx_lora_get_info(a)->rank, 4);
    assert_true(sx_lora_get_info(a)->alpha == 8.0f);
    assert_int_equal(sx_lora_get_info(a)->n_matrices, 14);
    for (int p = 0; p < prompts->n; p++) {
        const jv *pr = &prompts->items[p];
        const jv *am = jget(pr, "prompt_argmax"), *gr = jget(pr, "greedy");
        int n = (int)jget(pr, "n_tokens")->num;
        int first = (int)jget(pr, "logits_first_pos")->num;
        int rows = (int)jget(pr, "logits_shape")->items[0].num;
        int32_t *tok = tokens_of(jget(pr, "tokens"));
        float *logits = malloc((size_t)n * (size_t)V * sizeof(float));
        float *base = malloc((size_t)n * (size_t)V * sizeof(float));
        float *ref, *last = malloc((size_t)V * sizeof(float));
        size_t len;
        sx_seq *s = sx_seq_new(kv);
        int32_t next;

        ref = (float *)read_fixture(jget(pr, "logits_file")->str, &len);
        assert_int_equal(len, (size_t)rows * (size_t)V * sizeof(float));

        /* The base model, to show the adapter changes the logits. */
        assert_int_equal(decode(m, pool, s, tok, n, SX_LOGITS_ALL, base,
                                NULL, 0.0f), 0);
        sx_seq_reset(s);
        assert_int_equal(decode(m, pool, s, tok, n, SX_LOGITS_ALL, logits, a,
                                scale), 0);
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < V; v++) {
                size_t at = (size_t)(first + r) * V + v;
                double d = fabs((double)logits[at] - ref[(size_t)r * V + v]);

                moved += fabs((double)logits[at] - base[at]);
                n_moved++;
                if (d > worst)
                    worst = d;
                if (d > 1e-3)
                    fail_msg("%s p%d row %d token %d: %g vs %g", id, p,
                             first + r, v, logits[at], ref[(size_t)r * V + v]);
            }
        for (int i = 0; i < n; i++)
            assert_int_equal(argmax(logits + (size_t)i * V, V),
                             (int)am->items[i].num);

        next = argmax(logits + (size_t)(n - 1) * V, V);
        for (int g = 0; g < gr->n; g++) {
            if (next != (int32_t)gr->items[g].num)
                fail_msg("%s p%d greedy step %d: %d, reference %d", id, p, g,
                         next, (int)gr->items[g].num);
            assert_int_equal(decode(m, pool, s, &next, 1, SX_LOGITS_LAST,
                                    last, a, scale), 0);
            next = argmax(last, V);
        }
        sx_seq_free(s);
        free(tok);
        free(logits);
        free(base);
        free(last);
        free(ref);
    }
    /* The adapter really acts (mean |dlogit| ~0.2 at scale 1). */
    assert_true(moved / (double)n_moved > 0.02);
    printf("  %s: max |dlogit| %.2e (adapter moves logits by %.3f on "
           "average), greedy identical\n", id, worst,
           moved / (double)n_moved);
    sx_kv_free(kv);
    sx_lora_free(a);
    sx_model_free(m);
}

static void test_reference_runs(void **state)
{
    jv root;
    const jv *runs;
    int checked = 0;
    sx_pool *pool = sx_pool_new(2);

    (void)state;
    NEED_FIXTURES();
    load_manifest(&root);
    runs = jget(&root, "runs");
    for (int i = 0; i < runs->n; i++) {
        if (jget(&runs->items[i], "adapter")->kind == 'z')
            continue;
        check_run(&runs->items[i], pool);
        checked++;
    }
    assert_int_equal(checked, 4); /* llama f32 and qwen2 q8_0, s 1.0, 0.5 */
    jfree(&root);
    sx_pool_free(pool);
}

/* --- synthetic adapters --------------------------------------------------- */

typedef struct ttensor {
    char name[96];
    int type;
    int64_t ne0, ne1;
    const float *src;        /* values, or NULL: pseudo-random */
    int bad_at;              /* index of a NaN, or -1 */
} ttensor;

typedef struct tspec {
    const char *gtype, *atype, *arch;
    float alpha;
    uint64_t seed;
    float amp;
    int n;
    ttensor t[64];
} tspec;

static float prand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int fill(void *ctx, int index, const sx_gguf_tensor *t, void *dst)
{
    tspec *sp = ctx;
    const ttensor *tt = &sp->t[index];
    size_t n = (size_t)t->ne[0] * (size_t)t->ne[1];
    uint64_t seed = sp->seed + (uint64_t)index * 7919u;
    float *v = malloc(n * sizeof(float));

    for (size_t i = 0; i < n; i++)
        v[i] = tt->src ? tt->src[i] : sp->amp * prand(&seed);
    if (tt->bad_at >= 0)
        v[tt->bad_at] = NAN;
    if (tt->type == SX_GGML_F32)
        memcpy(dst, v, n * sizeof(float));
    else if (tt->type == SX_GGML_F16)
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = sx_f32_to_fp16(v[i]);
    else if (tt->type == SX_GGML_BF16)
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = sx_f32_to_bf16(v[i]);
    else if (tt->type == SX_GGML_Q8_0)
        for (int64_t r = 0; r < t->ne[1]; r++)
            sx_quantize_q8_0(v + r * t->ne[0],
                             (sx_block_q8_0 *)dst + r * (t->ne[0] / 32),
                             (int)t->ne[0]);
    free(v);
    return 0;
}

static void add_t(tspec *sp, const char *name, int type, int64_t ne0,
                  int64_t ne1, const float *src)
{
    ttensor *t = &sp->t[sp->n++];

    snprintf(t->name, sizeof(t->name), "%s", name);
    t->type = type;
    t->ne0 = ne0;
    t->ne1 = ne1;
    t->src = src;
    t->bad_at = -1;
}

/* A pair for blk.L.<mat> of a model with inputs n_in, outputs n_out. */
static void add_pair(tspec *sp, int layer, const char *mat, int type,
                     int n_in, int r, int n_out)
{
    char name[96];

    snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_a", layer, mat);
    add_t(sp, name, type, n_in, r, NULL);
    snprintf(name, sizeof(name), "blk.%d.%s.weight.lora_b", layer, mat);
    add_t(sp, name, type, r, n_out, NULL);
}

static void *build(tspec *sp, size_t *len)
{
    sx_gguf_writer *w = sx_gguf_writer_new();
    void *buf = NULL;

    assert_non_null(w);
    if (sp->gtype)
        sx_gguf_writer_str(w, "general.type", sp->gtype, strlen(sp->gtype));
    if (sp->atype)
        sx_gguf_writer_str(w, "adapter.type", sp->atype, strlen(sp->atype));
    if (sp->arch)
        sx_gguf_writer_str(w, "general.architecture", sp->arch,
                           strlen(sp->arch));
    sx_gguf_writer_f32(w, "adapter.lora.alpha", sp->alpha);
    for (int i = 0; i < sp->n; i++) {
        int64_t ne[2] = {sp->t[i].ne0, sp->t[i].ne1};

        assert_int_equal(sx_gguf_writer_tensor(w, sp->t[i].name,
                                               sp->t[i].type, 2, ne), 0);
    }
    assert_int_equal(sx_gguf_writer_to_buffer(w, fill, sp, &buf, len), 0);
    sx_gguf_writer_free(w);
    return buf;
}

/* q, v and down of both layers of a fixture model: a partial adapter. */
static tspec partial_spec(const char *arch, int n_ff, int type, int r)
{
    tspec sp = {.gtype = "adapter", .atype = "lora", .arch = arch,
                .alpha = 16.0f, .seed = 42, .amp = 0.1f};

    for (int l = 0; l < 2; l++) {
        add_pair(&sp, l, "attn_q", type, 64, r, 64);
        add_pair(&sp, l, "attn_v", type, 64, r, 32);
        add_pair(&sp, l, "ffn_down", type, n_ff, r, 64);
    }
    return sp;
}

static tspec llama_spec(int type, int r)
{
    return partial_spec("llama", 192, type, r);
}

static sx_lora *from_spec(const sx_model *m, tspec *sp, int *rc, char *err,
                          size_t errlen)
{
    size_t len;
    void *buf = build(sp, &len);
    sx_lora *a = sx_lora_load_buffer(m, buf, len, rc, err, errlen);

    free(buf);
    return a;
}

/* --- batches --------------------------------------------------------------- */

static const int32_t prompt_a[] = {1, 450, 4996, 17354, 1701, 29916, 432};
static const int32_t prompt_b[] = {1, 15043, 29892, 3186, 29991};
static const int32_t prompt_c[] = {1, 402, 29878, 30162, 29872, 29871, 233,
                                   160, 180, 30675, 29871};

/* Three sequences {fixture adapter, synthetic F16 adapter, none}, prefilled
 * together then decoded together, equal each run alone: on the F32 model,
 * and on the Q8_0 one, whose batch and single-row steps take different
 * matrix kernels. */
static void mixed_batch_equals_alone(const char *model, const char *lora, const char *arch,
                                     int n_ff)
{
    const int32_t *pr[3] = {prompt_a, prompt_b, prompt_c};
    const int len[3] = {7, 5, 11};
    sx_model *m;
    sx_lora *ad[3];
    float sc[3] = {1.0f, 0.75f, 0.0f};
    sx_kv *kv;
    sx_pool *pool = sx_pool_new(2);
    sx_seq *alone[3], *batch[3];
    float *la[3], *lb[3];
    sx_batch_item it[3];
    int32_t next[3];
    int V;
    double worst = 0.0;
    char err[256];
    tspec sp;

    m = load_model(model);
    V = sx_model_get_info(m)->n_vocab;
    ad[0] = load_lora(m, lora);
    sp = partial_spec(arch, n_ff, SX_GGML_F16, 8);
    ad[1] = from_spec(m, &sp, NULL, err, sizeof(err));
    assert_non_null(ad[1]);
    assert_int_equal(sx_lora_get_info(ad[1])->n_matrices, 6);
    assert_int_equal(sx_lora_get_info(ad[1])->type, SX_GGML_F16);
    ad[2] = NULL;
    kv = sx_kv_new(m, 512, NULL, 0);
    for (int i = 0; i < 3; i++) {
        alone[i] = sx_seq_new(kv);
        batch[i] = sx_seq_new(kv);
        la[i] = malloc((size_t)len[i] * (size_t)V * sizeof(float));
        lb[i] = malloc((size_t)len[i] * (size_t)V * sizeof(float));
        assert_int_equal(decode(m, pool, alone[i], pr[i], len[i],
                                SX_LOGITS_ALL, la[i], ad[i], sc[i]), 0);
        it[i] = (sx_batch_item){.seq = batch[i], .tokens = pr[i],
                                .n_tokens = len[i], .pos = -1,
                                .logits = SX_LOGITS_ALL, .out = lb[i],
                                .adapter = ad[i], .lora_scale = sc[i]};
    }
    assert_int_equal(sx_engine_decode(m, pool, it, 3, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        for (size_t k = 0; k < (size_t)len[i] * V; k++) {
            double d = fabs((double)la[i][k] - lb[i][k]);

            worst = d > worst ? d : worst;
            assert_true(d <= 1e-5);
        }
    for (int step = 0; step < 4; step++) {
        for (int i = 0; i < 3; i++) {
            next[i] = (int32_t)(300 + 41 * i + step);
            assert_int_equal(decode(m, pool, alone[i], &next[i], 1,
                                    SX_LOGITS_LAST, la[i], ad[i], sc[i]), 0);
            it[i] = (sx_batch_item){.seq = batch[i], .tokens = &next[i],
                                    .n_tokens = 1, .pos = -1,
                                    .logits = SX_LOGITS_LAST, .out = lb[i],
                                    .adapter = ad[i], .lora_scale = sc[i]};
        }
        assert_int_equal(sx_engine_decode(m, pool, it, 3, err, sizeof(err)),
                         0);
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < V; k++) {
                double d = fabs((double)la[i][k] - lb[i][k]);

                worst = d > worst ? d : worst;
                assert_true(d <= 1e-5);
            }
    }
    printf("  %s, mixed batch vs alone: max |dlogit| %.2e\n", model, worst);
    for (int i = 0; i < 3; i++) {
        sx_seq_free(alone[i]);
        sx_seq_free(batch[i]);
        free(la[i]);
        free(lb[i]);
        sx_lora_free(ad[i]);
    }
    sx_kv_free(kv);
    sx_model_free(m);
    sx_pool_free(pool);
}

static void test_mixed_batch_equals_alone(void **state)
{
    (void)state;
    NEED_FIXTURES();
    mixed_batch_equals_alone("models/tiny-llama-f32.gguf", "models/lora-tiny-llama.gguf",
                             "llama", 192);
    mixed_batch_equals_alone("models/tiny-qwen2-q8_0.gguf", "models/lora-tiny-qwen2.gguf",
                             "qwen2", 160);
}

/* A sequence without an adapter is bit-identical whether its neighbours in
 * the step carry adapters or not; and scale 0 is the base model exactly. */
static void test_isolation(void **state)
{
    sx_model *m;
    sx_lora *a, *b;
    sx_kv *kv;
    sx_pool *pool = sx_pool_new(2);
    sx_seq *s[6];
    float *out[6], *zero;
    sx_batch_item it[6];
    int V;
    char err[256];
    tspec sp;

    (void)state;
    NEED_FIXTURES();
    m = load_model("models/tiny-qwen2-q8_0.gguf");
    V = sx_model_get_info(m)->n_vocab;
    a = load_lora(m, "models/lora-tiny-qwen2.gguf");
    sp = llama_spec(SX_GGML_F32, 16);
    sp.arch = "qwen2";
    for (int i = 0; i < sp.n; i++)   /* qwen2's n_ff is 160 */
        if (strstr(sp.t[i].name, "ffn_down.weight.lora_a"))
            sp.t[i].ne0 = 160;
    b = from_spec(m, &sp, NULL, err, sizeof(err));
    if (!b)
        fail_msg("%s", err);
    kv = sx_kv_new(m, 512, NULL, 0);
    zero = malloc((size_t)V * 3 * sizeof(float));
    for (int i = 0; i < 6; i++) {
        s[i] = sx_seq_new(kv);
        out[i] = malloc((size_t)V * 3 * sizeof(float));
    }
    for (int round = 0; round < 2; round++) {
        /* Round 0: nobody has an adapter; round 1: seqs 0 and 1 do. */
        static const int32_t tok[3][3] = {{9707, 11, 1879},
                                          {9708, 11, 1879},
                                          {9709, 11, 1879}};

        for (int i = 0; i < 3; i++) {
            it[i] = (sx_batch_item){.seq = s[3 * round + i],
                                    .tokens = tok[i], .n_tokens = 3,
                                    .pos = -1, .logits = SX_LOGITS_ALL,
                                    .out = out[3 * round + i]};
            if (round == 1 && i < 2) {
                it[i].adapter = i == 0 ? a : b;
                it[i].lora_scale = 1.0f;
            }
        }
        assert_int_equal(sx_engine_decode(m, pool, it, 3, err, sizeof(err)),
                         0);
    }
    /* The sequence without adapter: identical bits in both rounds. */
    assert_memory_equal(out[2], out[5], (size_t)V * 3 * sizeof(float));
    /* Those with adapters did change. */
    assert_memory_not_equal(out[0], out[3], (size_t)V * 3 * sizeof(float));
    assert_memory_not_equal(out[1], out[4], (size_t)V * 3 * sizeof(float));

    /* Scale 0 equals the base model bit for bit. */
    {
        const int32_t t0[3] = {9707, 11, 1879};

        sx_seq_reset(s[0]);
        assert_int_equal(decode(m, pool, s[0], t0, 3, SX_LOGITS_ALL, zero, a,
                                0.0f), 0);
        assert_memory_equal(zero, out[0], (size_t)V * 3 * sizeof(float));
    }
    for (int i = 0; i < 6; i++) {
        sx_seq_free(s[i]);
        free(out[i]);
    }
    free(zero);
    sx_kv_free(kv);
    sx_lora_free(a);
    sx_lora_free(b);
    sx_model_free(m);
    sx_pool_free(pool);
}

/* The fixture adapter converted to F16 and BF16 gives nearly the logits of
 * the F32 original (what is left is the rounding of the weights and of the
 * adapter's inputs, as llama.cpp does for such tensors). */
static void test_f16_bf16_adapters(void **state)
{
    char path[8192], err[256];
    sx_model *m;
    sx_gguf *g;
    sx_kv *kv;
    sx_seq *s;
    sx_lora *ref, *half;
    float *l32, *l16;
    int V, types[2] = {SX_GGML_F16, SX_GGML_BF16};
    tspec sp = {.gtype = "adapter", .atype = "lora", .arch = "llama",
                .alpha = 8.0f};

    (void)state;
    NEED_FIXTURES();
    m = load_model("models/tiny-llama-f32.gguf");
    V = sx_model_get_info(m)->n_vocab;
    snprintf(path, sizeof(path), "%s/models/lora-tiny-llama.gguf", fixtures);
    g = sx_gguf_open(path, err, sizeof(err));
    assert_non_null(g);
    ref = sx_lora_load(m, path, NULL, err, sizeof(err));
    assert_non_null(ref);
    kv = sx_kv_new(m, 64, NULL, 0);
    s = sx_seq_new(kv);
    l32 = malloc((size_t)V * 7 * sizeof(float));
    l16 = malloc((size_t)V * 7 * sizeof(float));
    assert_int_equal(decode(m, NULL, s, prompt_a, 7, SX_LOGITS_ALL, l32, ref,
                            1.0f), 0);
    for (int ty = 0; ty < 2; ty++) {
        double worst = 0.0;

        sp.n = 0;
        for (int i = 0; i < sx_gguf_n_tensors(g); i++) {
            const sx_gguf_tensor *t = sx_gguf_tensor_at(g, i);

            add_t(&sp, t->name, types[ty], t->ne[0], t->ne[1], t->data);
        }
        half = from_spec(m, &sp, NULL, err, sizeof(err));
        if (!half)
            fail_msg("%s", err);
        assert_int_equal(sx_lora_get_info(half)->type, types[ty]);
        sx_seq_reset(s);
        assert_int_equal(decode(m, NULL, s, prompt_a, 7, SX_LOGITS_ALL, l16,
                                half, 1.0f), 0);
        for (size_t k = 0; k < (size_t)V * 7; k++) {
            double d = fabs((double)l32[k] - l16[k]);

            worst = d > worst ? d : worst;
        }
        printf("  %s adapter vs f32: max |dlogit| %.2e\n",
               types[ty] == SX_GGML_F16 ? "f16" : "bf16", worst);
        assert_true(worst < (types[ty] == SX_GGML_F16 ? 2e-3 : 2e-2));
        assert_true(worst > 0.0);
        sx_lora_free(half);
    }
    sx_seq_free(s);
    sx_kv_free(kv);
    sx_lora_free(ref);
    sx_gguf_close(g);
    sx_model_free(m);
    free(l32);
    free(l16);
}

/* --- validation ------------------------------------------------------------ */

static void expect_error(const sx_model *m, tspec *sp, int want_rc,
                         const char *want1, const char *want2)
{
    char err[256] = "";
    int rc = 0;
    sx_lora *a = from_spec(m, sp, &rc, err, sizeof(err));

    if (a)
        fail_msg("adapter accepted; expected '%s'", want1);
    assert_int_equal(rc, want_rc);
    if (!strstr(err, want1) || (want2 && !strstr(err, want2)))
        fail_msg("message '%s' lacks '%s' / '%s'", err, want1,
                 want2 ? want2 : "");
}

static void test_validation(void **state)
{
    sx_model *m, *q;
    tspec sp;
    char path[8192], err[256] = "";
    int rc = 0;

    (void)state;
    NEED_FIXTURES();
    m = load_model("models/tiny-llama-f32.gguf");
    q = load_model("models/tiny-qwen2-q8_0.gguf");

    /* The fixture adapter of one architecture on the other model. */
    snprintf(path, sizeof(path), "%s/models/lora-tiny-llama.gguf", fixtures);
    assert_null(sx_lora_load(q, path, &rc, err, sizeof(err)));
    assert_int_equal(rc, SX_EINVAL);
    assert_non_null(strstr(err, "architecture"));
    /* A model is not an adapter. */
    snprintf(path, sizeof(path), "%s/models/tiny-llama-f32.gguf", fixtures);
    assert_null(sx_lora_load(m, path, &rc, err, sizeof(err)));
    assert_non_null(strstr(err, "general.type"));
    /* Not a GGUF file at all. */
    assert_null(sx_lora_load_buffer(m, "hello", 5, &rc, err, sizeof(err)));
    assert_int_equal(rc, SX_EINVAL);

    sp = llama_spec(SX_GGML_F32, 4);
    sp.t[2].ne0 = 63;                 /* attn_v lora_a: wrong n_in */
    expect_error(m, &sp, SX_EINVAL, "blk.0.attn_v.weight.lora_a", "64");
    sp = llama_spec(SX_GGML_F32, 4);
    sp.t[3].ne1 = 33;                 /* attn_v lora_b: wrong n_out */
    expect_error(m, &sp, SX_EINVAL, "blk.0.attn_v.weight.lora_b", "[4, 32]");
    sp = llama_spec(SX_GGML_F32, 4);
    sp.t[1].ne0 = 5;                  /* ranks of a and b differ */
    expect_error(m, &sp, SX_EINVAL, "blk.0.attn_q.weight.lora_b", NULL);
    sp = llama_spec(SX_GGML_F32, 257);
    expect_error(m, &sp, SX_EINVAL, "rank 257", "1..256");
    sp = llama_spec(SX_GGML_F32, 4);
    sp.t[4].bad_at = 7;               /* a NaN in ffn_down's lora_a */
    expect_error(m, &sp, SX_EINVAL, "blk.0.ffn_down.weight.lora_a",
                 "not finite");
    sp = llama_spec(SX_GGML_F32, 4);
    sp.n--;                           /* blk.1.ffn_down lora_b missing */
    expect_error(m, &sp, SX_EINVAL, "blk.1.ffn_down.weight.lora_a",
                 "lora_b");
    sp = llama_spec(SX_GGML_F32, 4);
    snprintf(sp.t[0].name, sizeof(sp.t[0].name), "blk.2.attn_q.weight.lora_a");
    snprintf(sp.t[1].name, sizeof(sp.t[1].name), "blk.2.attn_q.weight.lora_b");
    expect_error(m, &sp, SX_EINVAL, "blk.2.attn_q.weight.lora_a", "2 layers");
    sp = llama_spec(SX_GGML_F32, 4);
    snprintf(sp.t[0].name, sizeof(sp.t[0].name), "output.weight.lora_a");
    expect_error(m, &sp, SX_EUNSUPPORTED, "output.weight.lora_a", NULL);
    sp = llama_spec(SX_GGML_F32, 4);
    snprintf(sp.t[0].name, sizeof(sp.t[0].name), "blk.0.attn_qq.weight.lora_a");
    expect_error(m, &sp, SX_EUNSUPPORTED, "attn_qq", NULL);
    sp = llama_spec(SX_GGML_Q8_0, 32);
    expect_error(m, &sp, SX_EUNSUPPORTED, "q8_0", "blk.0.attn_q");
    sp = llama_spec(SX_GGML_F32, 4);
    sp.arch = "qwen2";
    expect_error(m, &sp, SX_EINVAL, "architecture", "'qwen2'");
    sp = llama_spec(SX_GGML_F32, 4);
    sp.atype = "control_vector";
    expect_error(m, &sp, SX_EUNSUPPORTED, "adapter.type", NULL);
    sp = llama_spec(SX_GGML_F32, 4);
    sp.gtype = "model";
    expect_error(m, &sp, SX_EINVAL, "general.type", NULL);
    sp = llama_spec(SX_GGML_F32, 4);
    sp.n = 0;
    expect_error(m, &sp, SX_EINVAL, "no tensors", NULL);
    sp = llama_spec(SX_GGML_F32, 4);
    sp.alpha = INFINITY;
    expect_error(m, &sp, SX_EINVAL, "alpha", NULL);

    /* A good one is accepted and described. */
    sp = llama_spec(SX_GGML_F32, 4);
    {
        sx_lora *a = from_spec(m, &sp, &rc, err, sizeof(err));
        const sx_lora_info *in;

        assert_non_null(a);
        assert_int_equal(rc, 0);
        in = sx_lora_get_info(a);
        assert_string_equal(in->arch, "llama");
        assert_int_equal(in->rank, 4);
        assert_int_equal(in->n_matrices, 6);
        assert_true(in->alpha == 16.0f);
        assert_true(in->n_bytes >= 2 * 4 * (64 + 64 + 64 + 32 + 192 + 64) * 4);
        sx_lora_free(a);
    }
    sx_lora_free(NULL);
    sx_model_free(m);
    sx_model_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_runs),
        cmocka_unit_test(test_mixed_batch_equals_alone),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_f16_bf16_adapters),
        cmocka_unit_test(test_validation),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
