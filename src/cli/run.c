/* `synapsex run`: completes a raw prompt with a local GGUF model (and an
 * optional LoRA adapter in llama.cpp's GGUF format). The prompt
 * is tokenized as the model's metadata says (BOS where the model adds one,
 * no chat template); generation goes through the engine scheduler as one
 * job, and only the generated text reaches stdout, streamed as whole UTF-8
 * characters. Everything else (errors, timings) goes to stderr. */
#include "cli/cli.h"

#include "engine/engine.h"
#include "engine/sched.h"
#include "engine/tokenizer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct run_opts {
    const char *model;
    const char *lora;
    const char *prompt;
    int max_tokens;
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    bool seed_set;
    int threads;
    bool verbose;
} run_opts;

/* Shared between the scheduler thread (callbacks) and main. */
typedef struct run_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    sx_job_result res;
    char message[200];
    double t_start, t_first, t_end;
    bool write_failed;
} run_state;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: synapsex run --model FILE.gguf --prompt TEXT [options]\n"
            "\n"
            "Completes the raw prompt (no chat template) and prints only the\n"
            "generated text on stdout.\n"
            "\n"
            "options:\n"
            "  --model FILE.gguf        model to load (llama, qwen2)\n"
            "  --lora FILE.gguf[:SCALE] apply a LoRA adapter (scale default 1)\n"
            "  --prompt TEXT            text to complete\n"
            "  --max-tokens N           tokens to generate (default 128)\n"
            "  --temperature T          0 = greedy (default 0.8)\n"
            "  --top-p P                nucleus mass, 1 = off (default 0.95)\n"
            "  --top-k K                0 = off (default 40)\n"
            "  --seed S                 random seed (default: from the clock)\n"
            "  --threads N              compute threads (default: all CPUs)\n"
            "  --verbose                timings on stderr\n"
            "  --help                   show this help\n");
}

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Parses a whole-string integer in [lo, hi]; 0 on success. */
static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_float(const char *s, float lo, float hi, float *out)
{
    char *end;
    float v;

    errno = 0;
    v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

/* Splits FILE[:SCALE]. A suffix after the last ':' that is not a number
 * belongs to the path. 0, or -1 for a bad scale or an over-long path. */
static int parse_lora(const char *spec, char *path, size_t cap, float *scale)
{
    const char *colon = strrchr(spec, ':');
    size_t n = strlen(spec);
    float v;

    *scale = 1.0f;
    if (colon && colon[1] && parse_float(colon + 1, -100.0f, 100.0f, &v) == 0) {
        *scale = v;
        n = (size_t)(colon - spec);
    }
    if (n == 0 || n >= cap)
        return -1;
    memcpy(path, spec, n);
    path[n] = '\0';
    return 0;
}

/* Returns 0, or 2 after printing a usage error, or -1 for --help. */
static int parse_args(int argc, char **argv, run_opts *o)
{
    *o = (run_opts){.max_tokens = 128, .temperature = 0.8f, .top_p = 0.95f,
                    .top_k = 40};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;

        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return -1;
        if (!strcmp(a, "--verbose")) {
            o->verbose = true;
            continue;
        }
        if (!val) {
            fprintf(stderr, "synapsex run: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model"))
            o->model = val;
        else if (!strcmp(a, "--lora"))
            o->lora = val;
        else if (!strcmp(a, "--prompt"))
            o->prompt = val;
        else if (!strcmp(a, "--max-tokens"))
            bad = parse_int(val, 1, 1 << 20, &o->max_tokens);
        else if (!strcmp(a, "--temperature"))
            bad = parse_float(val, 0.0f, 100.0f, &o->temperature);
        else if (!strcmp(a, "--top-p"))
            bad = parse_float(val, 0.0f, 1.0f, &o->top_p);
        else if (!strcmp(a, "--top-k"))
            bad = parse_int(val, 0, 1 << 24, &o->top_k);
        else if (!strcmp(a, "--threads"))
            bad = parse_int(val, 1, 512, &o->threads);
        else if (!strcmp(a, "--seed")) {
            char *end;

            errno = 0;
            o->seed = strtoull(val, &end, 10);
            bad = errno || end == val || *end || val[0] == '-';
            o->seed_set = true;
        } else {
            fprintf(stderr, "synapsex run: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "synapsex run: bad value for %s: \"%s\" "
                            "(see --help)\n", a, val);
            return 2;
        }
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "synapsex run: --model and --prompt are required "
                        "(see --help)\n");
        return 2;
    }
    return 0;
}

static int on_token(void *user, int32_t token, const sx_sample_out *out,
                    const char *text, size_t len)
{
    run_state *st = user;

    (void)token;
    (void)out;
    if (st->t_first == 0.0)
        st->t_first = now_s();
    if (len > 0) {
        if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0) {
            /* stdout is gone (closed pipe): stop generating. */
            st->write_failed = true;
            return 1;
        }
    }
    return 0;
}

static void on_done(void *user, const sx_job_result *r)
{
    run_state *st = user;

    pthread_mutex_lock(&st->mu);
    st->res = *r;
    snprintf(st->message, sizeof(st->message), "%s",
             r->message ? r->message : "");
    st->t_end = now_s();
    st->done = true;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void log_to_stderr(void *user, int level, const char *msg)
{
    (void)user;
    if (level >= 2)
        fprintf(stderr, "synapsex run: %s\n", msg);
}

static void print_timings(const run_state *st)
{
    double prefill = st->t_first - st->t_start;
    double decode = st->t_end - st->t_first;
    int n_dec = st->res.n_generated > 0 ? st->res.n_generated - 1 : 0;

    fprintf(stderr, "synapsex run: %d prompt tokens in %.3f s (%.1f tok/s), "
            "%d generated, %.1f tok/s after the first, finish: %s\n",
            st->res.n_prompt, prefill,
            prefill > 0 ? st->res.n_prompt / prefill : 0.0,
            st->res.n_generated, decode > 0 ? n_dec / decode : 0.0,
            sx_finish_name(st->res.finish));
}

int sx_cli_run(int argc, char **argv)
{
    run_opts o;
    run_state st = {0};
    char err[512] = "";
    sx_model *m = NULL;
    sx_tokenizer *tok = NULL;
    sx_sched *sched = NULL;
    sx_lora *lora = NULL;
    char lora_path[4096];
    float lora_scale = 1.0f;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    sx_sched_config cfg = {0};
    sx_job_params jp = {0};
    const sx_model_info *info;
    uint64_t id;
    int rc, status = 1;
    long n_ctx;

    rc = parse_args(argc, argv, &o);
    if (rc == -1) {
        usage(stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (o.lora && parse_lora(o.lora, lora_path, sizeof(lora_path),
                             &lora_scale) != 0) {
        fprintf(stderr, "synapsex run: bad --lora \"%s\": expected "
                        "FILE.gguf or FILE.gguf:SCALE\n", o.lora);
        return 2;
    }
    if (o.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        o.threads = n > 0 && n <= 512 ? (int)n : 1;
    }
    if (!o.seed_set)
        o.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    sx_engine_set_log(log_to_stderr, NULL);

    /* 1. Model and tokenizer. */
    m = sx_model_load(o.model, &rc, err, sizeof(err));
    if (!m) {
        fprintf(stderr, "synapsex run: cannot load %s: %s\n", o.model, err);
        goto done;
    }
    info = sx_model_get_info(m);
    if (o.lora) {
        lora = sx_lora_load(m, lora_path, &rc, err, sizeof(err));
        if (!lora) {
            fprintf(stderr, "synapsex run: cannot use adapter %s: %s\n",
                    lora_path, err);
            goto done;
        }
    }
    tok = sx_tokenizer_from_gguf(sx_model_gguf(m), err, sizeof(err));
    if (!tok) {
        fprintf(stderr, "synapsex run: %s: no usable tokenizer: %s\n",
                o.model, err);
        goto done;
    }

    /* 2. The raw prompt, with BOS where the model adds one. */
    rc = sx_tokenizer_tokenize(tok, o.prompt, strlen(o.prompt), true, false,
                               &ids, &n_ids);
    if (rc != SX_OK) {
        fprintf(stderr, "synapsex run: cannot tokenize the prompt (%d)\n", rc);
        goto done;
    }
    if (n_ids == 0) {
        fprintf(stderr, "synapsex run: the prompt is empty and the model "
                        "adds no BOS token; give some text\n");
        goto done;
    }

    /* 3. A scheduler sized for this one job. */
    n_ctx = (long)n_ids + o.max_tokens;
    if (info->n_ctx_train > 0 && n_ctx > info->n_ctx_train)
        n_ctx = info->n_ctx_train;
    if ((long)n_ids >= n_ctx) {
        fprintf(stderr, "synapsex run: the prompt has %zu tokens; the model's "
                "context holds %ld\n", n_ids, n_ctx);
        goto done;
    }
    cfg.n_threads = o.threads;
    cfg.n_ctx = (int)n_ctx;
    cfg.kv_positions = (int)n_ctx;
    cfg.max_running = 1;
    cfg.max_waiting = 1;
    cfg.prefill_chunk = 512;
    sched = sx_sched_new(m, tok, &cfg, err, sizeof(err));
    if (!sched) {
        fprintf(stderr, "synapsex run: %s\n", err);
        goto done;
    }

    /* 4. Generate, streaming to stdout from the scheduler thread. */
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    jp.prompt = ids;
    jp.n_prompt = (int)n_ids;
    jp.max_tokens = o.max_tokens;
    jp.sample.temperature = o.temperature;
    jp.sample.top_p = o.top_p;
    jp.sample.top_k = o.top_k;
    jp.sample.seed = o.seed;
    jp.adapter = lora;
    jp.lora_scale = lora_scale;
    jp.on_token = on_token;
    jp.on_done = on_done;
    jp.user = &st;
    st.t_start = now_s();
    rc = sx_sched_submit(sched, &jp, &id, err, sizeof(err));
    if (rc != SX_OK) {
        fprintf(stderr, "synapsex run: %s\n", err);
        goto done_sync;
    }
    pthread_mutex_lock(&st.mu);
    while (!st.done)
        pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);

    if (st.res.finish == SX_FINISH_ERROR) {
        fprintf(stderr, "\nsynapsex run: generation failed: %s\n", st.message);
    } else if (st.write_failed) {
        fprintf(stderr, "synapsex run: stdout closed; generation stopped\n");
    } else {
        if (isatty(STDOUT_FILENO))
            fputc('\n', stdout);
        status = 0;
    }
    if (o.verbose)
        print_timings(&st);

done_sync:
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.cv);
done:
    sx_sched_free(sched);
    free(ids);
    sx_tokenizer_free(tok);
    sx_lora_free(lora);
    sx_model_free(m);
    sx_engine_set_log(NULL, NULL);
    return status;
}
