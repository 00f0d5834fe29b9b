/* Model tests against llama.cpp's reference (fixtures/reference): for every
 * run without an adapter, the stored logits rows (max |diff| <= 1e-3), the
 * argmax at every prompt position and 24 greedy tokens decoded one at a
 * time. Then the batch contract: several sequences in one step give the
 * logits each gives alone, chunked prefill equals token-by-token decoding,
 * a full cache refuses work without changing anything, and embeddings. */
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

#include "engine_fixture.h"

/* --- helpers ------------------------------------------------------------- */

static int decode_one(sx_model *m, sx_pool *pool, sx_seq *s,
                      const int32_t *tok, int n, int mode, float *out)
{
    char err[256] = "";
    sx_batch_item it = {.seq = s, .tokens = tok, .n_tokens = n, .pos = -1,
                        .logits = mode, .out = out};
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
    sx_model *m = load_model(jget(run, "model")->str);
    int V = sx_model_get_info(m)->n_vocab;
    sx_kv *kv = sx_kv_new(m, 256, NULL, 0);
    double worst = 0.0;

    assert_non_null(kv);
    assert_int_equal(V, (int)jget(run, "n_vocab")->num);
    for (int p = 0; p < prompts->n; p++) {
        const jv *pr = &prompts->items[p];
        const jv *am = jget(pr, "prompt_argmax"), *gr = jget(pr, "greedy");
        int n = (int)jget(pr, "n_tokens")->num;
        int first = (int)jget(pr, "logits_first_pos")->num;
        int rows = (int)jget(pr, "logits_shape")->items[0].num;
        int32_t *tok = tokens_of(jget(pr, "tokens"));
        float *logits = malloc((size_t)n * (size_t)V * sizeof(float));
        float *ref, *last = malloc((size_t)V * sizeof(float));
        size_t len;
        sx_seq *s = sx_seq_new(kv);
        int32_t next;

        ref = (float *)read_fixture(jget(pr, "logits_file")->str, &len);
        assert_int_equal(len, (size_t)rows * (size_t)V * sizeof(float));

        /* The whole prompt in one call, every row of logits. */
        assert_int_equal(decode_one(m, pool, s, tok, n, SX_LOGITS_ALL,
                                    logits), 0);
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < V; v++) {
                double d = fabs((double)logits[(size_t)(first + r) * V + v] -
                                ref[(size_t)r * V + v]);

                if (d > worst)
                    worst = d;
                if (d > 1e-3)
                    fail_msg("%s p%d row %d token %d: %g vs %g", id, p,
                             first + r, v,
                             logits[(size_t)(first + r) * V + v],
                             ref[(size_t)r * V + v]);
            }
        for (int i = 0; i < n; i++)
            assert_int_equal(argmax(logits + (size_t)i * V, V),
                             (int)am->items[i].num);

        /* Greedy: the first token from the prompt, then one at a time. */
        next = argmax(logits + (size_t)(n - 1) * V, V);
        for (int g = 0; g < gr->n; g++) {
            if (next != (int32_t)gr->items[g].num)
                fail_msg("%s p%d greedy step %d: %d, reference %d", id, p, g,
                         next, (int)gr->items[g].num);
            assert_int_equal(decode_one(m, pool, s, &next, 1, SX_LOGITS_LAST,
                                        last), 0);
            next = argmax(last, V);
        }
        assert_int_equal(sx_seq_len(s), n + gr->n);
        sx_seq_free(s);
        free(tok);
        free(logits);
        free(last);
        free(ref);
    }
    printf("  %s: max |dlogit| %.2e, greedy identical (%s kernels)\n", id,
           worst, sx_engine_kernels());
    sx_kv_free(kv);
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
        if (jget(&runs->items[i], "adapter")->kind != 'z')
            continue;  /* LoRA runs belong to the adapter tests */
        check_run(&runs->items[i], pool);
        checked++;
    }
    assert_int_equal(checked, 4); /* llama f32, q8_0, q4_0; qwen2 q8_0 */
    jfree(&root);
    sx_pool_free(pool);
}

/* --- batch contract ------------------------------------------------------ */

static const int32_t prompt_a[] = {1, 450, 4996, 17354, 1701, 29916, 432};
static const int32_t prompt_b[] = {1, 15043, 29892, 3186, 29991};
static const int32_t prompt_c[] = {1, 402, 29878, 30162, 29872, 29871, 233,
                                   160, 180, 30675, 29871};

static void test_batch_equals_alone(void **state)
{
    const int32_t *pr[3] = {prompt_a, prompt_b, prompt_c};
    const int len[3] = {7, 5, 11};
    sx_model *m;
    sx_kv *kv;
    sx_pool *pool = sx_pool_new(2);
    sx_seq *alone[3], *batch[3];
    float *la[3], *lb[3];
    sx_batch_item it[3];
    int32_t next[3];
    int V;
    char err[256];

    (void)state;
    NEED_FIXTURES();
    m = load_model("models/tiny-llama-q8_0.gguf");
    V = sx_model_get_info(m)->n_vocab;
    kv = sx_kv_new(m, 512, NULL, 0);
    for (int i = 0; i < 3; i++) {
        alone[i] = sx_seq_new(kv);
        batch[i] = sx_seq_new(kv);
        la[i] = malloc((size_t)len[i] * (size_t)V * sizeof(float));
        lb[i] = malloc((size_t)len[i] * (size_t)V * sizeof(float));
        assert_int_equal(decode_one(m, pool, alone[i], pr[i], len[i],
                                    SX_LOGITS_ALL, la[i]), 0);
        it[i] = (sx_batch_item){.seq = batch[i], .tokens = pr[i],
                                .n_tokens = len[i], .pos = -1,
                                .logits = SX_LOGITS_ALL, .out = lb[i]};
    }

    /* Prefill of three prompts in one step. */
    assert_int_equal(sx_engine_decode(m, pool, it, 3, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        for (size_t k = 0; k < (size_t)len[i] * V; k++)
            assert_true(fabsf(la[i][k] - lb[i][k]) <= 1e-5f);

    /* Three decode steps of one token each, batched vs alone. */
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 3; i++) {
            next[i] = (int32_t)(100 + 37 * i + step);
            assert_int_equal(decode_one(m, pool, alone[i], &next[i], 1,
                                        SX_LOGITS_LAST, la[i]), 0);
            it[i] = (sx_batch_item){.seq = batch[i], .tokens = &next[i],
                                    .n_tokens = 1, .pos = -1,
                                    .logits = SX_LOGITS_LAST, .out = lb[i]};
        }
        assert_int_equal(sx_engine_decode(m, pool, it, 3, err, sizeof(err)),
                         0);
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < V; k++)
                assert_true(fabsf(la[i][k] - lb[i][k]) <= 1e-5f);
    }

    /* A sequence may not appear twice in one step. */
    it[1].seq = it[0].seq;
    assert_int_equal(sx_engine_decode(m, pool, it, 2, err, sizeof(err)),
                     SX_EINVAL);
    assert_non_null(strstr(err, "share"));
    for (int i = 0; i < 3; i++) {
        sx_seq_free(alone[i]);
        sx_seq_free(batch[i]);
        free(la[i]);
        free(lb[i]);
    }
    sx_kv_free(kv);
    sx_model_free(m);
    sx_pool_free(pool);
}

/* A prompt longer than one chunk equals the same tokens fed one by one, and
 * rewinding with pos recomputes the same logits. */
static void test_chunked_prefill(void **state)
{
    enum { N = 300 };
    int32_t tok[N];
    sx_model *m;
    sx_kv *kv;
    sx_seq *a, *b;
    float *all, *one;
    int V;
    char err[256];

    (void)state;
    NEED_FIXTURES();
    m = load_model("models/tiny-qwen2-q8_0.gguf");
    V = sx_model_get_info(m)->n_vocab;
    kv = sx_kv_new(m, 2 * N + 32, NULL, 0);
    a = sx_seq_new(kv);
    b = sx_seq_new(kv);
    for (int i = 0; i < N; i++)
        tok[i] = (int32_t)((i * 7919) % 150000);
    all = malloc((size_t)V * sizeof(float));
    one = malloc((size_t)V * sizeof(float));
    assert_int_equal(decode_one(m, NULL, a, tok, N, SX_LOGITS_LAST, all), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(decode_one(m, NULL, b, &tok[i], 1, SX_LOGITS_LAST,
                                    one), 0);
    for (int k = 0; k < V; k++)
        assert_true(fabsf(all[k] - one[k]) <= 1e-4f);

    /* Rewind the last 10 positions and feed them again. */
    {
        sx_batch_item it = {.seq = a, .tokens = tok + N - 10, .n_tokens = 10,
                            .pos = N - 10, .logits = SX_LOGITS_LAST,
                            .out = one};

        assert_int_equal(sx_engine_decode(m, NULL, &it, 1, err, sizeof(err)),
                         0);
        assert_int_equal(sx_seq_len(a), N);
        for (int k = 0; k < V; k++)
            assert_true(fabsf(all[k] - one[k]) <= 1e-6f);
    }
    sx_seq_free(a);
    sx_seq_free(b);
    sx_kv_free(kv);
    sx_model_free(m);
    free(all);
    free(one);
}

static void test_cache_full_and_errors(void **state)
{
    sx_model *m;
    sx_kv *kv;
    sx_seq *s, *t;
    int32_t tok[40] = {1};
    float *out;
    char err[256] = "";
    sx_batch_item it;

    (void)state;
    NEED_FIXTURES();
    m = load_model("models/tiny-llama-f32.gguf");
    out = malloc((size_t)sx_model_get_info(m)->n_vocab * sizeof(float));
    kv = sx_kv_new(m, 32, NULL, 0);
    assert_int_equal(sx_kv_capacity(kv), 32);
    s = sx_seq_new(kv);
    t = sx_seq_new(kv);
    assert_int_equal(decode_one(m, NULL, s, tok, 20, SX_LOGITS_LAST, out), 0);
    assert_int_equal(sx_kv_free_positions(kv), 0);

    it = (sx_batch_item){.seq = t, .tokens = tok, .n_tokens = 1, .pos = -1,
                         .logits = SX_LOGITS_LAST, .out = out};
    assert_int_equal(sx_engine_decode(m, NULL, &it, 1, err, sizeof(err)),
                     SX_ELIMIT);
    assert_non_null(strstr(err, "full"));
    assert_int_equal(sx_seq_len(t), 0);
    assert_int_equal(sx_seq_len(s), 20);

    /* Shrinking s returns a page that t can then use. */
    assert_int_equal(sx_seq_truncate(s, 16), 0);
    assert_int_equal(sx_kv_free_positions(kv), 16);
    assert_int_equal(sx_engine_decode(m, NULL, &it, 1, err, sizeof(err)), 0);

    tok[0] = 32000;
    assert_int_equal(sx_engine_decode(m, NULL, &it, 1, err, sizeof(err)),
                     SX_EINVAL);
    assert_non_null(strstr(err, "vocabulary"));
    tok[0] = 1;
    {
        /* An adapter bound to another instance of the model is refused. */
        sx_model *other = load_model("models/tiny-llama-f32.gguf");
        char path[8192];
        sx_lora *a;

        snprintf(path, sizeof(path), "%s/models/lora-tiny-llama.gguf",
                 fixtures);
        a = sx_lora_load(other, path, NULL, err, sizeof(err));
        assert_non_null(a);
        it.adapter = a;
        it.lora_scale = 1.0f;
        assert_int_equal(sx_engine_decode(m, NULL, &it, 1, err, sizeof(err)),
                         SX_EINVAL);
        assert_non_null(strstr(err, "LoRA"));
        sx_lora_free(a);
        sx_model_free(other);
    }
    it.adapter = NULL;
    it.pos = 5;
    assert_int_equal(sx_engine_decode(m, NULL, &it, 1, err, sizeof(err)),
                     SX_EINVAL);
    sx_seq_free(s);
    sx_seq_free(t);
    sx_kv_free(kv);
    sx_model_free(m);
    free(out);
}

static void test_load_errors(void **state)
{
    char path[8192], err[256] = "";
    int rc = 0;

    (void)state;
    NEED_FIXTURES();
    snprintf(path, sizeof(path), "%s/models/lora-tiny-llama.gguf", fixtures);
    assert_null(sx_model_load(path, &rc, err, sizeof(err)));
    assert_int_equal(rc, SX_EINVAL);
    assert_non_null(strstr(err, "adapter"));
    snprintf(path, sizeof(path), "%s/tokenizer/ggml-vocab-gpt-2.gguf",
             fixtures);
    assert_null(sx_model_load(path, &rc, err, sizeof(err)));
    assert_int_equal(rc, SX_EUNSUPPORTED);
    assert_non_null(strstr(err, "gpt2"));
}

static void test_info_and_embed(void **state)
{
    sx_model *m;
    const sx_model_info *mi;
    sx_kv *kv;
    sx_seq *s;
    float e1[64], e2[64], e3[64];
    double n = 0, dot = 0;
    char err[256];

    (void)state;
    NEED_FIXTURES();
    m = load_model("models/tiny-qwen2-q8_0.gguf");
    mi = sx_model_get_info(m);
    assert_string_equal(mi->arch, "qwen2");
    assert_int_equal(mi->n_vocab, 151936);
    assert_int_equal(mi->n_embd, 64);
    assert_int_equal(mi->n_ctx_train, 256);
    assert_int_equal(mi->bos, 151643);
    assert_false(mi->add_bos);
    assert_non_null(sx_model_gguf(m));
    kv = sx_kv_new(m, 64, NULL, 0);
    s = sx_seq_new(kv);
    assert_int_equal(sx_engine_embed(m, NULL, s, prompt_a, 7, e1, err,
                                     sizeof(err)), 0);
    assert_int_equal(sx_engine_embed(m, NULL, s, prompt_a, 7, e2, err,
                                     sizeof(err)), 0);
    assert_int_equal(sx_engine_embed(m, NULL, s, prompt_b, 5, e3, err,
                                     sizeof(err)), 0);
    assert_int_equal(sx_seq_len(s), 0);
    for (int i = 0; i < 64; i++) {
        n += (double)e1[i] * e1[i];
        dot += (double)e1[i] * e3[i];
        assert_true(e1[i] == e2[i]);
    }
    assert_true(fabs(n - 1.0) < 1e-5);
    assert_true(dot < 0.9999);
    sx_seq_free(s);
    sx_kv_free(kv);
    sx_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_runs),
        cmocka_unit_test(test_batch_equals_alone),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_cache_full_and_errors),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_info_and_embed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
