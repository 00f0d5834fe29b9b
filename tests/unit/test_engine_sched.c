/* Unit tests of the continuous-batching scheduler (engine/sched.h) on the
 * fixture models: concurrent greedy jobs give exactly the tokens each gives
 * alone (also with a different LoRA adapter per job), cancellation (waiting
 * and running), back-pressure, KV admission, prefill chunking, context
 * limits, stop strings and the finish reasons. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "engine/sched.h"
#include "engine/tokenizer.h"

#define MAX_OUT 256

/* What one job produced, filled by the callbacks. */
typedef struct collect {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t tokens[MAX_OUT];
    int n_tokens;
    char text[4096];
    size_t text_len;
    bool done;
    sx_job_result res;
    /* test hooks */
    int cancel_after;           /* on_token returns 1 after this many */
    pthread_mutex_t *gate;      /* held by the test to stall the thread */
    int *gate_open;
    pthread_cond_t *gate_cv;
    sx_sched *sched;
    sx_sched_stats seen;        /* stats sampled at the first token */
    uint64_t prefilled[MAX_OUT];/* stats.tokens_prefilled at each token */
} collect;

static void collect_init(collect *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}

static void collect_destroy(collect *c)
{
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

static int on_token(void *user, int32_t token, const sx_sample_out *out,
                    const char *text, size_t len)
{
    collect *c = user;
    int stop = 0;

    if (c->gate) {
        pthread_mutex_lock(c->gate);
        while (!*c->gate_open)
            pthread_cond_wait(c->gate_cv, c->gate);
        pthread_mutex_unlock(c->gate);
    }
    pthread_mutex_lock(&c->mu);
    if (token >= 0) {
        assert_non_null(out);
        assert_int_equal(out->token, token);
        if (c->sched) {
            sx_sched_stats st;

            sx_sched_get_stats(c->sched, &st);
            if (c->n_tokens == 0)
                c->seen = st;
            if (c->n_tokens < MAX_OUT)
                c->prefilled[c->n_tokens] = st.tokens_prefilled;
        }
        if (c->n_tokens < MAX_OUT)
            c->tokens[c->n_tokens++] = token;
        if (c->cancel_after > 0 && c->n_tokens >= c->cancel_after)
            stop = 1;
    }
    if (len > 0 && c->text_len + len < sizeof(c->text)) {
        memcpy(c->text + c->text_len, text, len);
        c->text_len += len;
        c->text[c->text_len] = '\0';
    }
    pthread_mutex_unlock(&c->mu);
    return stop;
}

static void on_done(void *user, const sx_job_result *r)
{
    collect *c = user;

    pthread_mutex_lock(&c->mu);
    c->res = *r;
    c->res.message = NULL;
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void wait_done(collect *c)
{
    pthread_mutex_lock(&c->mu);
    while (!c->done)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

static sx_job_params greedy_job(const int32_t *prompt, int n, int max_tokens,
                                collect *c)
{
    sx_job_params p = {0};

    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = max_tokens;
    p.ignore_eog = true;
    p.on_token = on_token;
    p.on_done = on_done;
    p.user = c;
    return p;
}

/* ---- fixtures ---------------------------------------------------------- */

static const char *fixtures_dir(void)
{
    const char *d = getenv("SYNAPSEX_FIXTURES");

    return d && d[0] ? d : "../shared/fixtures";
}

static sx_model *load_fixture(const char *file)
{
    char path[1024], err[256] = "";
    struct stat st;
    sx_model *m;
    int rc = 0;

    snprintf(path, sizeof(path), "%s/models/%s", fixtures_dir(), file);
    if (stat(path, &st) != 0) {
        printf("skipped: fixtures absent (%s)\n", path);
        return NULL;
    }
    m = sx_model_load(path, &rc, err, sizeof(err));
    if (!m)
        fail_msg("loading %s: %s (%d)", path, err, rc);
    return m;
}

/* Deterministic prompt ids for job k, inside the vocabulary. */
static void make_prompt(int32_t *out, int n, int k, int n_vocab)
{
    for (int i = 0; i < n; i++)
        out[i] = 3 + (int32_t)(((uint32_t)i * 7919u + (uint32_t)k * 104729u) %
                               (uint32_t)(n_vocab - 3));
}

static sx_sched *new_sched(sx_model *m, const sx_tokenizer *tok,
                           sx_sched_config cfg)
{
    char err[256] = "";
    sx_sched *s = sx_sched_new(m, tok, &cfg, err, sizeof(err));

    if (!s)
        fail_msg("sx_sched_new: %s", err);
    return s;
}

static void submit_ok(sx_sched *s, const sx_job_params *p, uint64_t *id)
{
    char err[256] = "";
    int rc = sx_sched_submit(s, p, id, err, sizeof(err));

    if (rc != SX_OK)
        fail_msg("submit: %s (%d)", err, rc);
    assert_true(*id != 0);
}

/* ---- tests ------------------------------------------------------------- */

enum { NJOBS = 6, GEN = 12 };

/* Job k runs with no adapter, the adapter at 1.0 or at 0.5, in turn. */
static void set_adapter(sx_job_params *p, const sx_lora *lora, int k)
{
    if (lora && k % 3 != 0) {
        p->adapter = lora;
        p->lora_scale = k % 3 == 1 ? 1.0f : 0.5f;
    }
}

static sx_lora *load_lora(const sx_model *m, const char *file)
{
    char path[1024], err[256] = "";
    sx_lora *a;
    int rc = 0;

    snprintf(path, sizeof(path), "%s/models/%s", fixtures_dir(), file);
    a = sx_lora_load(m, path, &rc, err, sizeof(err));
    if (!a)
        fail_msg("loading %s: %s (%d)", path, err, rc);
    return a;
}

static void check_concurrent_equals_alone(const char *file,
                                          const char *lora_file)
{
    static const int lens[NJOBS] = {5, 40, 1, 17, 70, 9};
    int32_t prompts[NJOBS][80];
    int32_t alone[NJOBS][GEN];
    collect c[NJOBS];
    sx_sched_config cfg = {0};
    sx_model *m = load_fixture(file);
    sx_sched *s;
    uint64_t id;

    sx_lora *lora;

    if (!m) {
        skip();
        return;
    }
    lora = lora_file ? load_lora(m, lora_file) : NULL;
    for (int k = 0; k < NJOBS; k++)
        make_prompt(prompts[k], lens[k], k, sx_model_get_info(m)->n_vocab);

    /* Each job alone. */
    cfg.n_threads = 1;
    s = new_sched(m, NULL, cfg);
    for (int k = 0; k < NJOBS; k++) {
        sx_job_params p;

        collect_init(&c[k]);
        p = greedy_job(prompts[k], lens[k], GEN, &c[k]);
        set_adapter(&p, lora, k);
        submit_ok(s, &p, &id);
        wait_done(&c[k]);
        assert_int_equal(c[k].res.finish, SX_FINISH_LENGTH);
        assert_int_equal(c[k].n_tokens, GEN);
        assert_int_equal(c[k].res.n_generated, GEN);
        assert_int_equal(c[k].res.n_prompt, lens[k]);
        memcpy(alone[k], c[k].tokens, sizeof(alone[k]));
        collect_destroy(&c[k]);
    }
    sx_sched_free(s);

    /* All at once: four run together, prompts cut into chunks of 7 tokens
     * that share steps with the decoders, two threads. */
    cfg.n_threads = 2;
    cfg.max_running = 4;
    cfg.prefill_chunk = 7;
    s = new_sched(m, NULL, cfg);
    for (int k = 0; k < NJOBS; k++) {
        sx_job_params p;

        collect_init(&c[k]);
        p = greedy_job(prompts[k], lens[k], GEN, &c[k]);
        set_adapter(&p, lora, k);
        submit_ok(s, &p, &id);
    }
    for (int k = 0; k < NJOBS; k++) {
        wait_done(&c[k]);
        assert_int_equal(c[k].res.finish, SX_FINISH_LENGTH);
        assert_int_equal(c[k].n_tokens, GEN);
        assert_memory_equal(c[k].tokens, alone[k], sizeof(alone[k]));
        collect_destroy(&c[k]);
    }
    {
        sx_sched_stats st;

        sx_sched_get_stats(s, &st);
        assert_int_equal(st.tokens_generated, NJOBS * GEN);
        assert_int_equal(st.running, 0);
        assert_int_equal(st.kv_free, st.kv_capacity);
    }
    sx_sched_free(s);
    sx_lora_free(lora);
    sx_model_free(m);
}

static void test_concurrent_equals_alone_llama(void **state)
{
    (void)state;
    check_concurrent_equals_alone("tiny-llama-q8_0.gguf", NULL);
}

static void test_concurrent_equals_alone_qwen2(void **state)
{
    (void)state;
    check_concurrent_equals_alone("tiny-qwen2-q8_0.gguf", NULL);
}

/* Jobs with different adapters (and none) share every step. */
static void test_concurrent_adapters_llama(void **state)
{
    (void)state;
    check_concurrent_equals_alone("tiny-llama-f32.gguf",
                                  "lora-tiny-llama.gguf");
}

static void test_concurrent_adapters_qwen2(void **state)
{
    (void)state;
    check_concurrent_equals_alone("tiny-qwen2-q8_0.gguf",
                                  "lora-tiny-qwen2.gguf");
}

static void test_cancel(void **state)
{
    int32_t prompt[8];
    collect a, b, d;
    sx_sched_config cfg = {0};
    sx_model *m = load_fixture("tiny-llama-q8_0.gguf");
    sx_sched *s;
    sx_job_params p;
    uint64_t ida, idb, idd;
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
    int open = 0;
    sx_sched_stats st;

    (void)state;
    if (!m) {
        skip();
        return;
    }
    make_prompt(prompt, 8, 1, sx_model_get_info(m)->n_vocab);
    cfg.max_running = 1;
    s = new_sched(m, NULL, cfg);

    /* A runs (stalled in its first callback); B waits behind it. */
    collect_init(&a);
    collect_init(&b);
    a.gate = &gate;
    a.gate_open = &open;
    a.gate_cv = &gate_cv;
    p = greedy_job(prompt, 8, 200, &a);
    submit_ok(s, &p, &ida);
    p = greedy_job(prompt, 8, 200, &b);
    submit_ok(s, &p, &idb);

    /* Cancel both from this thread: B never starts, A stops at once. */
    assert_int_equal(sx_sched_cancel(s, idb), SX_OK);
    assert_int_equal(sx_sched_cancel(s, ida), SX_OK);
    pthread_mutex_lock(&gate);
    open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate);
    wait_done(&a);
    wait_done(&b);
    assert_int_equal(a.res.finish, SX_FINISH_CANCELLED);
    assert_true(a.res.n_generated <= 2);
    assert_int_equal(b.res.finish, SX_FINISH_CANCELLED);
    assert_int_equal(b.res.n_generated, 0);
    assert_int_equal(b.n_tokens, 0);
    assert_int_equal(sx_sched_cancel(s, ida), SX_ENOTFOUND);
    assert_int_equal(sx_sched_cancel(s, 987654), SX_ENOTFOUND);
    sx_sched_get_stats(s, &st);
    assert_int_equal(st.kv_free, st.kv_capacity);

    /* The callback asks to stop after 3 tokens. */
    collect_init(&d);
    d.cancel_after = 3;
    p = greedy_job(prompt, 8, 200, &d);
    submit_ok(s, &p, &idd);
    wait_done(&d);
    assert_int_equal(d.res.finish, SX_FINISH_CANCELLED);
    assert_int_equal(d.n_tokens, 3);

    collect_destroy(&a);
    collect_destroy(&b);
    collect_destroy(&d);
    sx_sched_free(s);
    sx_model_free(m);
}

static void test_backpressure(void **state)
{
    int32_t prompt[4];
    collect c[4];
    sx_sched_config cfg = {0};
    sx_model *m = load_fixture("tiny-llama-q8_0.gguf");
    sx_sched *s;
    sx_job_params p;
    uint64_t id;
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
    int open = 0, rc;
    char err[256] = "";

    (void)state;
    if (!m) {
        skip();
        return;
    }
    make_prompt(prompt, 4, 2, sx_model_get_info(m)->n_vocab);
    cfg.max_running = 1;
    cfg.max_waiting = 2;
    s = new_sched(m, NULL, cfg);
    for (int k = 0; k < 4; k++)
        collect_init(&c[k]);

    /* Job 0 runs and stalls; jobs 1 and 2 fill the queue; 3 is refused. */
    c[0].gate = &gate;
    c[0].gate_open = &open;
    c[0].gate_cv = &gate_cv;
    p = greedy_job(prompt, 4, 3, &c[0]);
    submit_ok(s, &p, &id);
    for (;;) {
        sx_sched_stats st;

        sx_sched_get_stats(s, &st);
        if (st.running == 1)
            break;
    }
    for (int k = 1; k <= 2; k++) {
        p = greedy_job(prompt, 4, 3, &c[k]);
        submit_ok(s, &p, &id);
    }
    p = greedy_job(prompt, 4, 3, &c[3]);
    rc = sx_sched_submit(s, &p, &id, err, sizeof(err));
    assert_int_equal(rc, SX_EBUSY);
    assert_non_null(strstr(err, "queue is full"));

    pthread_mutex_lock(&gate);
    open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate);
    for (int k = 0; k <= 2; k++) {
        wait_done(&c[k]);
        assert_int_equal(c[k].res.finish, SX_FINISH_LENGTH);
        assert_memory_equal(c[k].tokens, c[0].tokens, 3 * sizeof(int32_t));
    }
    /* Room again. */
    submit_ok(s, &p, &id);
    wait_done(&c[3]);
    assert_int_equal(c[3].res.finish, SX_FINISH_LENGTH);
    for (int k = 0; k < 4; k++)
        collect_destroy(&c[k]);
    sx_sched_free(s);
    sx_model_free(m);
}

static void test_limits_and_admission(void **state)
{
    int32_t prompt[64];
    collect a, b;
    sx_sched_config cfg = {0};
    sx_model *m = load_fixture("tiny-llama-q8_0.gguf");
    sx_sched *s;
    sx_job_params p;
    uint64_t id;
    char err[256] = "";
    const char *stops[] = {"x"};
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
    int open = 0;

    (void)state;
    if (!m) {
        skip();
        return;
    }
    make_prompt(prompt, 64, 3, sx_model_get_info(m)->n_vocab);
    /* Four pages of KV: one job of 48 positions at a time. */
    cfg.kv_positions = 64;
    cfg.n_ctx = 64;
    s = new_sched(m, NULL, cfg);
    assert_int_equal(sx_sched_n_ctx(s), 64);

    collect_init(&a);
    p = greedy_job(prompt, 64, 4, &a);
    assert_int_equal(sx_sched_submit(s, &p, &id, err, sizeof(err)),
                     SX_ETOOBIG);
    assert_non_null(strstr(err, "64 tokens"));
    p.n_prompt = 0;
    assert_int_equal(sx_sched_submit(s, &p, &id, err, sizeof(err)),
                     SX_EINVAL);
    p.n_prompt = 4;
    p.max_tokens = 0;
    assert_int_equal(sx_sched_submit(s, &p, &id, err, sizeof(err)),
                     SX_EINVAL);
    p.max_tokens = 4;
    p.stop = stops;
    p.n_stop = 1;
    assert_int_equal(sx_sched_submit(s, &p, &id, err, sizeof(err)),
                     SX_EINVAL);
    assert_non_null(strstr(err, "tokenizer"));
    p.n_stop = 0;
    p.sample.top_p = 2.0f;
    assert_int_equal(sx_sched_submit(s, &p, &id, err, sizeof(err)),
                     SX_EINVAL);
    assert_non_null(strstr(err, "top_p"));
    p.sample.top_p = 0.0f;
    prompt[1] = -5;
    assert_int_equal(sx_sched_submit(s, &p, &id, err, sizeof(err)),
                     SX_EINVAL);
    make_prompt(prompt, 64, 3, sx_model_get_info(m)->n_vocab);

    /* A: 40 + 8 = 48 positions (3 pages); B the same must wait for A. The
     * context limit ends A early: 40 + 30 > 64 -> 24 tokens, "length". */
    collect_init(&b);
    a.sched = s;
    b.sched = s;
    a.gate = &gate;
    a.gate_open = &open;
    a.gate_cv = &gate_cv;
    p = greedy_job(prompt, 40, 8, &a);
    submit_ok(s, &p, &id);
    p = greedy_job(prompt + 1, 40, 30, &b);
    submit_ok(s, &p, &id);
    pthread_mutex_lock(&gate);
    open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate);
    wait_done(&a);
    wait_done(&b);
    assert_int_equal(a.res.finish, SX_FINISH_LENGTH);
    assert_int_equal(a.n_tokens, 8);
    assert_int_equal(a.seen.running, 1);
    assert_int_equal(a.seen.waiting, 1);
    assert_int_equal(b.res.finish, SX_FINISH_LENGTH);
    assert_int_equal(b.n_tokens, 24);
    assert_int_equal(b.seen.running, 1);
    assert_int_equal(b.seen.waiting, 0);
    collect_destroy(&a);
    collect_destroy(&b);
    sx_sched_free(s);
    sx_model_free(m);
}

/* A long prompt arriving while a job decodes is cut into chunks of at most
 * prefill_chunk tokens per step, and the decoding job gets a token in every
 * one of those steps. */
static void test_prefill_does_not_starve_decode(void **state)
{
    int32_t prompt[200];
    collect a, b;
    sx_sched_config cfg = {0};
    sx_model *m = load_fixture("tiny-llama-q8_0.gguf");
    sx_sched *s;
    sx_job_params p;
    uint64_t id;
    int interleaved = 0;

    (void)state;
    if (!m) {
        skip();
        return;
    }
    make_prompt(prompt, 200, 5, sx_model_get_info(m)->n_vocab);
    cfg.prefill_chunk = 16;
    s = new_sched(m, NULL, cfg);
    collect_init(&a);
    collect_init(&b);
    a.sched = s;
    /* A generates far more tokens than B's prefill takes steps, so A is
     * still decoding whatever the machine's speed when B arrives. */
    p = greedy_job(prompt, 4, 120, &a);
    submit_ok(s, &p, &id);
    for (;;) {
        pthread_mutex_lock(&a.mu);
        if (a.n_tokens > 0) {
            pthread_mutex_unlock(&a.mu);
            break;
        }
        pthread_mutex_unlock(&a.mu);
    }
    p = greedy_job(prompt, 200, 4, &b);
    submit_ok(s, &p, &id);
    wait_done(&a);
    wait_done(&b);
    assert_int_equal(a.n_tokens, 120);
    assert_int_equal(b.n_tokens, 4);
    for (int i = 1; i < a.n_tokens; i++) {
        uint64_t d = a.prefilled[i] - a.prefilled[i - 1];

        assert_true(d <= 16);
        interleaved += d > 0;
    }
    /* 200 tokens in chunks of 16: 13 steps, each with a token for A. */
    assert_true(interleaved >= 12);
    collect_destroy(&a);
    collect_destroy(&b);
    sx_sched_free(s);
    sx_model_free(m);
}

/* With a tokenizer: the text streamed equals the detokenized tokens, and a
 * stop string taken from the middle of that text cuts it exactly there. */
static void test_text_and_stop(void **state)
{
    int32_t prompt[6];
    collect a, b;
    sx_sched_config cfg = {0};
    sx_model *m = load_fixture("tiny-llama-q8_0.gguf");
    sx_tokenizer *tok;
    sx_sched *s;
    sx_job_params p;
    uint64_t id;
    char err[256] = "", stop[8], *full = NULL;
    const char *stops[1] = {stop};
    size_t full_len = 0, cut;

    (void)state;
    if (!m) {
        skip();
        return;
    }
    tok = sx_tokenizer_from_gguf(sx_model_gguf(m), err, sizeof(err));
    if (!tok)
        fail_msg("tokenizer: %s", err);
    make_prompt(prompt, 6, 4, sx_model_get_info(m)->n_vocab);
    s = new_sched(m, tok, cfg);

    collect_init(&a);
    p = greedy_job(prompt, 6, 24, &a);
    submit_ok(s, &p, &id);
    wait_done(&a);
    assert_int_equal(sx_tokenizer_detokenize(tok, a.tokens, (size_t)a.n_tokens,
                                             0, &full, &full_len), SX_OK);
    assert_int_equal(a.text_len, full_len);
    assert_memory_equal(a.text, full, full_len);
    if (full_len < 12) {
        printf("skipped: the fixture's output text is too short\n");
    } else {
        /* Three bytes from the middle, at a character boundary. */
        cut = full_len / 2;
        while (cut > 0 && ((unsigned char)full[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(stop, full + cut, 3);
        stop[3] = '\0';
        cut = (size_t)(strstr(full, stop) - full);

        collect_init(&b);
        p = greedy_job(prompt, 6, 24, &b);
        p.stop = stops;
        p.n_stop = 1;
        submit_ok(s, &p, &id);
        wait_done(&b);
        assert_int_equal(b.res.finish, SX_FINISH_STOP);
        assert_int_equal(b.text_len, cut);
        assert_memory_equal(b.text, full, cut);
        collect_destroy(&b);
    }
    free(full);
    collect_destroy(&a);
    sx_sched_free(s);
    sx_tokenizer_free(tok);
    sx_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_equals_alone_llama),
        cmocka_unit_test(test_concurrent_equals_alone_qwen2),
        cmocka_unit_test(test_concurrent_adapters_llama),
        cmocka_unit_test(test_concurrent_adapters_qwen2),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_limits_and_admission),
        cmocka_unit_test(test_prefill_does_not_starve_decode),
        cmocka_unit_test(test_text_and_stop),
    };

    sx_sched_free(NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
