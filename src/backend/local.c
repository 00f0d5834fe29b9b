/* The local backend: a GGUF model run in this process. Chat messages are
 * rendered with the model's own chat template and tokenized with its
 * tokenizer; generation jobs go to the engine's continuous-batching
 * scheduler, whose thread reports each token through the job's sink.
 * Embeddings run on a thread of their own, one request at a time, so no
 * HTTP thread ever runs model math. */
#include "backend/internal.h"

#include "base/err.h"
#include "base/log.h"
#include "base/crypto.h"
#include "engine/chat_template.h"
#include "engine/engine.h"
#include "engine/sched.h"
#include "engine/tokenizer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Context used when the model declares a huge one and none is configured:
 * the KV cache is sized from it. */
#define DEFAULT_CTX_CAP 8192

struct embed_req {
    struct embed_req *next;
    char **inputs;
    size_t n;
    sx_embed_done done;
    void *ctx;
    bool truncate; /* cut inputs to the context instead of refusing them */
};

struct local {
    struct sx_backend base;
    sx_model *model;
    sx_tokenizer *tok;
    sx_chat_template *tmpl;
    sx_sched *sched;
    int n_ctx;

    /* Embeddings: their own cache, pool and thread. */
    sx_kv *ekv;
    sx_seq *eseq;
    sx_pool *epool;
    pthread_t ethread;
    bool ethread_started;
    pthread_mutex_t emu;
    pthread_cond_t ecv;
    struct embed_req *ehead, *etail;
    bool estop;
};

struct local_job {
    struct sx_gen_job base;
    int32_t *ids;
    size_t n_ids;
    sx_job_params params;
    char *stops[SX_GEN_MAX_STOP];
    struct sx_gen_sink sink;
    bool logprobs;
};

static void log_from_engine(void *user, int level, const char *msg)
{
    (void)user;
    if (level >= 3)
        SX_ERROR("engine", "%s", msg);
    else if (level == 2)
        SX_WARN("engine", "%s", msg);
    else if (level == 1)
        SX_INFO("engine", "%s", msg);
    else
        SX_DEBUG("engine", "%s", msg);
}

static void job_free(struct local_job *j)
{
    if (!j)
        return;
    free(j->ids);
    for (int i = 0; i < SX_GEN_MAX_STOP; i++)
        free(j->stops[i]);
    free(j);
}

/* ---- scheduler callbacks (scheduler thread) ------------------------------ */

static json_t *token_json(const sx_tokenizer *tok, int32_t id, float logprob)
{
    char piece[256];
    int n = sx_tokenizer_token_to_piece(tok, id, false, piece, sizeof(piece));
    json_t *bytes = json_array(), *text;

    if (n < 0)
        n = 0;
    if (n > (int)sizeof(piece))
        n = (int)sizeof(piece);
    for (int i = 0; i < n; i++)
        json_array_append_new(bytes, json_integer((unsigned char)piece[i]));
    /* A piece may be part of a UTF-8 character: jansson then refuses it,
     * and "bytes" carries the truth as OpenAI does. */
    text = json_stringn(piece, (size_t)n);
    return json_pack("{s:o,s:f,s:o}", "token", text ? text : json_string(""), "logprob",
                     (double)logprob, "bytes", bytes);
}

static int on_token(void *user, int32_t token, const sx_sample_out *sample, const char *text,
                    size_t len)
{
    struct local_job *j = user;
    struct local *l = (struct local *)j->base.backend;
    json_t *lp = NULL;
    int rc;

    if (j->logprobs) {
        json_t *item = token_json(l->tok, token, sample->logprob), *top = json_array();

        for (int i = 0; i < sample->n_top; i++)
            json_array_append_new(top, token_json(l->tok, sample->top[i].token,
                                                  sample->top[i].logprob));
        json_object_set_new(item, "top_logprobs", top);
        lp = json_array();
        json_array_append_new(lp, item);
    }
    rc = j->sink.delta(j->sink.ctx, text ? text : "", text ? len : 0, lp);
    json_decref(lp);
    return rc;
}

static void on_done(void *user, const sx_job_result *r)
{
    struct local_job *j = user;
    struct sx_gen_result res = {0};

    res.prompt_tokens = r->n_prompt;
    res.completion_tokens = r->n_generated;
    switch (r->finish) {
    case SX_FINISH_STOP:
        res.finish_reason = "stop";
        break;
    case SX_FINISH_LENGTH:
        res.finish_reason = "length";
        break;
    case SX_FINISH_CANCELLED:
        res.cancelled = true;
        break;
    default:
        res.failed = true;
        sx_gen_fail(&res.err, r->error ? r->error : SX_EIO, 500, "engine_error", NULL,
                    "the model failed while generating: %s",
                    r->message ? r->message : sx_strerror(r->error));
        SX_ERROR("backend", "model %s: job %llu failed: %s", j->base.backend->name,
                 (unsigned long long)r->id, res.err.message);
    }
    j->sink.done(j->sink.ctx, &res);
    job_free(j);
}

/* ---- preparing a job ------------------------------------------------------ */

static int render_chat(struct local *l, const json_t *messages, char **text, size_t *len,
                       struct sx_gen_error *e)
{
    size_t n = json_array_size(messages);
    sx_chat_msg *msgs = calloc(n ? n : 1, sizeof(*msgs));
    char why[256] = "";
    int rc;

    if (!msgs)
        return sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(messages, i), *c = json_object_get(m, "content");

        msgs[i].role = json_string_value(json_object_get(m, "role"));
        msgs[i].content = json_string_value(c);
        msgs[i].content_len = json_string_length(c);
    }
    rc = sx_chat_template_apply(l->tmpl, msgs, n, true, text, len, why, sizeof(why));
    free(msgs);
    if (rc == SX_EINVAL)
        return sx_gen_fail(e, rc, 400, "invalid_messages", "messages",
                           "model '%s' cannot take these messages: %s", l->base.name, why);
    if (rc)
        return sx_gen_fail(e, rc, 500, NULL, NULL, "could not render the chat template");
    return 0;
}

static int lo_prepare(sx_backend *b, const struct sx_gen_request *req, sx_gen_job **out,
                      int64_t *prompt_tokens, struct sx_gen_error *e)
{
    struct local *l = (struct local *)b;
    struct local_job *j = calloc(1, sizeof(*j));
    char *text = NULL;
    size_t len = 0;
    bool add_special, parse_special;
    int rc;

    if (!j)
        return sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
    j->base.backend = b;

    /* 1. The prompt text: the chat template, or the raw prompt. */
    if (req->kind == SX_GEN_CHAT) {
        rc = render_chat(l, req->messages, &text, &len, e);
        if (rc)
            goto fail;
        add_special = !sx_chat_template_has_bos(l->tmpl);
        parse_special = true;
    } else {
        add_special = true;
        parse_special = false;
    }

    /* 2. Tokens, checked against the context (one output token at least). */
    rc = sx_tokenizer_tokenize(l->tok, text ? text : req->prompt, text ? len : req->prompt_len,
                               add_special, parse_special, &j->ids, &j->n_ids);
    free(text);
    if (rc) {
        sx_gen_fail(e, rc, 500, NULL, NULL, "could not tokenize the prompt");
        goto fail;
    }
    *prompt_tokens = (int64_t)j->n_ids;
    j->base.prompt_bound = (int64_t)j->n_ids;
    if (j->n_ids == 0 || (int64_t)j->n_ids + 1 > l->n_ctx) {
        rc = sx_gen_fail(e, SX_ETOOBIG, 400, "context_length_exceeded",
                         req->kind == SX_GEN_CHAT ? "messages" : "prompt",
                         "this model's maximum context length is %d tokens, and the prompt "
                         "has %zu; shorten the %s", l->n_ctx, j->n_ids,
                         req->kind == SX_GEN_CHAT ? "messages" : "prompt");
        goto fail;
    }

    /* 3. Sampling. Without a seed every request gets a fresh one. */
    j->params.prompt = j->ids;
    j->params.n_prompt = (int)j->n_ids;
    j->params.max_tokens = (int)(req->max_tokens < l->n_ctx ? req->max_tokens : l->n_ctx);
    j->params.sample.temperature = (float)req->temperature;
    j->params.sample.top_p = (float)req->top_p;
    j->params.sample.presence_penalty = (float)req->presence_penalty;
    j->params.sample.frequency_penalty = (float)req->frequency_penalty;
    if (req->has_seed)
        j->params.sample.seed = (uint64_t)req->seed;
    else
        sx_crypto_random(&j->params.sample.seed, sizeof(j->params.sample.seed));
    j->params.adapter = req->adapter;
    j->params.lora_scale = 1.0f;
    j->params.sample.logprobs = req->logprobs;
    j->params.sample.top_logprobs = req->top_logprobs;
    j->logprobs = req->logprobs != 0;
    for (int i = 0; i < req->n_stop; i++) {
        j->stops[i] = strdup(req->stop[i]);
        if (!j->stops[i]) {
            rc = sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
            goto fail;
        }
    }
    j->params.stop = (const char *const *)j->stops;
    j->params.n_stop = req->n_stop;
    j->params.on_token = on_token;
    j->params.on_done = on_done;
    j->params.user = j;
    *out = &j->base;
    return 0;

fail:
    job_free(j);
    return rc;
}

static int lo_start(sx_backend *b, sx_gen_job *job, const struct sx_gen_sink *sink,
                    uint64_t *id, struct sx_gen_error *e)
{
    struct local *l = (struct local *)b;
    struct local_job *j = (struct local_job *)job;
    char why[256] = "";
    int rc;

    j->sink = *sink;
    rc = sx_sched_submit(l->sched, &j->params, id, why, sizeof(why));
    if (rc == 0)
        return 0; /* on_done frees j */
    job_free(j);
    if (rc == SX_EBUSY) {
        sx_gen_fail(e, rc, 503, "server_busy", NULL,
                    "model '%s' is busy with other requests; retry shortly", b->name);
        e->retry_after_s = 1;
        return rc;
    }
    if (rc == SX_ETOOBIG)
        return sx_gen_fail(e, rc, 400, "context_length_exceeded", "messages",
                           "the prompt leaves no room for output in this model's context of "
                           "%d tokens; shorten it", l->n_ctx);
    if (rc == SX_EINVAL)
        return sx_gen_fail(e, rc, 400, "invalid_value", NULL, "invalid request: %s", why);
    return sx_gen_fail(e, rc, 500, NULL, NULL, "could not start the generation: %s",
                       why[0] ? why : sx_strerror(rc));
}

static void lo_job_free(sx_gen_job *job)
{
    job_free((struct local_job *)job);
}

static void lo_cancel(sx_backend *b, uint64_t id)
{
    sx_sched_cancel(((struct local *)b)->sched, id);
}

static int64_t lo_count_tokens(sx_backend *b, const char *text, size_t len)
{
    struct local *l = (struct local *)b;
    int32_t *ids = NULL;
    size_t n = 0;

    if (sx_tokenizer_tokenize(l->tok, text, len, false, false, &ids, &n))
        return (int64_t)(len + 3) / 4;
    free(ids);
    return (int64_t)n;
}

/* ---- embeddings ------------------------------------------------------------ */

static void embed_req_free(struct embed_req *r)
{
    for (size_t i = 0; r && i < r->n; i++)
        free(r->inputs[i]);
    if (r)
        free(r->inputs);
    free(r);
}

static void embed_one(struct local *l, struct embed_req *r)
{
    const sx_model_info *mi = sx_model_get_info(l->model);
    float *vecs = calloc(r->n * (size_t)mi->n_embd, sizeof(float));
    struct sx_gen_error e = {0};
    int64_t tokens = 0;
    char why[256] = "";

    if (!vecs) {
        sx_gen_fail(&e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < r->n; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = sx_tokenizer_tokenize(l->tok, r->inputs[i], strlen(r->inputs[i]), true,
                                       false, &ids, &n);

        if (rc == 0 && r->truncate && (int)n > l->n_ctx)
            n = (size_t)l->n_ctx; /* the leading tokens stand for the text */
        if (rc == 0 && (n == 0 || (int)n > l->n_ctx)) {
            free(ids);
            sx_gen_fail(&e, SX_ETOOBIG, 400, "context_length_exceeded", "input",
                        "input %zu has %zu tokens; this model embeds 1 to %d tokens", i, n,
                        l->n_ctx);
            goto fail;
        }
        if (rc == 0)
            rc = sx_engine_embed(l->model, l->epool, l->eseq, ids, (int)n,
                                 vecs + i * (size_t)mi->n_embd, why, sizeof(why));
        free(ids);
        if (rc) {
            sx_gen_fail(&e, rc, 500, "engine_error", NULL, "the embedding failed: %s",
                        why[0] ? why : sx_strerror(rc));
            goto fail;
        }
        tokens += (int64_t)n;
    }
    r->done(r->ctx, vecs, mi->n_embd, tokens, NULL);
    free(vecs);
    return;
fail:
    free(vecs);
    r->done(r->ctx, NULL, 0, 0, &e);
}

static void *embed_main(void *arg)
{
    struct local *l = arg;

    for (;;) {
        struct embed_req *r;

        pthread_mutex_lock(&l->emu);
        while (!l->ehead && !l->estop)
            pthread_cond_wait(&l->ecv, &l->emu);
        r = l->ehead;
        if (r) {
            l->ehead = r->next;
            if (!l->ehead)
                l->etail = NULL;
        }
        pthread_mutex_unlock(&l->emu);
        if (!r)
            return NULL; /* stopping, queue empty */
        embed_one(l, r);
        embed_req_free(r);
    }
}

static int lo_embed(sx_backend *b, const char *const *inputs, size_t n, sx_embed_done done,
                    void *ctx, struct sx_gen_error *e)
{
    struct local *l = (struct local *)b;
    struct embed_req *r = calloc(1, sizeof(*r));

    if (!r || !(r->inputs = calloc(n ? n : 1, sizeof(char *)))) {
        free(r);
        return sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
    }
    for (size_t i = 0; i < n; i++, r->n++)
        if (!(r->inputs[i] = strdup(inputs[i]))) {
            embed_req_free(r);
            return sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
        }
    r->done = done;
    r->ctx = ctx;
    pthread_mutex_lock(&l->emu);
    if (l->etail)
        l->etail->next = r;
    else
        l->ehead = r;
    l->etail = r;
    pthread_cond_signal(&l->ecv);
    pthread_mutex_unlock(&l->emu);
    return 0;
}

/* One text's embedding, waited for (the rag module's embedder). */
struct embed_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    float *out;
    int dim;
};

static void embed_wait_done(void *ctx, const float *vecs, int dim, int64_t tokens,
                            const struct sx_gen_error *e)
{
    struct embed_wait *w = ctx;

    (void)tokens;
    pthread_mutex_lock(&w->mu);
    if (e)
        w->rc = e->status == 400 ? SX_EINVAL : e->status == 503 ? SX_EBUSY : SX_EIO;
    else if (dim != w->dim)
        w->rc = SX_EINVAL;
    else
        memcpy(w->out, vecs, (size_t)dim * sizeof(float));
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int sx_backend_embed_dim(const sx_backend *b)
{
    const struct local *l = (const struct local *)b;

    if (!b || strcmp(b->kind, "local") != 0 || !b->embeddings)
        return 0;
    return sx_model_get_info(l->model)->n_embd;
}

int sx_backend_embed_text(sx_backend *b, const char *text, size_t len, float *out, int dim)
{
    struct local *l = (struct local *)b;
    struct embed_wait w = {.out = out, .dim = dim};
    struct embed_req *r;
    size_t cap;

    if (sx_backend_embed_dim(b) == 0)
        return SX_EUNSUPPORTED;
    if (!text || !out || dim != sx_backend_embed_dim(b))
        return SX_EINVAL;

    /* A token takes at least a byte, so more than 8 bytes per token of
     * context is never needed; cut at a UTF-8 character's start. */
    cap = (size_t)l->n_ctx * 8;
    if (len > cap) {
        len = cap;
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
            len--;
    }
    if (!(r = calloc(1, sizeof(*r))) || !(r->inputs = calloc(1, sizeof(char *))) ||
        !(r->inputs[0] = strndup(text, len))) {
        embed_req_free(r);
        return SX_ENOMEM;
    }
    r->n = 1;
    r->done = embed_wait_done;
    r->ctx = &w;
    r->truncate = true;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    pthread_mutex_lock(&l->emu);
    if (l->etail)
        l->etail->next = r;
    else
        l->ehead = r;
    l->etail = r;
    pthread_cond_signal(&l->ecv);
    pthread_mutex_unlock(&l->emu);

    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return w.rc;
}

/* ---- life cycle ------------------------------------------------------------ */

static void lo_free(sx_backend *b)
{
    struct local *l = (struct local *)b;

    if (l->ethread_started) {
        pthread_mutex_lock(&l->emu);
        l->estop = true;
        pthread_cond_signal(&l->ecv);
        pthread_mutex_unlock(&l->emu);
        pthread_join(l->ethread, NULL);
    }
    sx_sched_free(l->sched); /* running jobs end cancelled first */
    sx_seq_free(l->eseq);
    sx_kv_free(l->ekv);
    sx_pool_free(l->epool);
    sx_chat_template_free(l->tmpl);
    sx_tokenizer_free(l->tok);
    sx_model_free(l->model);
    pthread_mutex_destroy(&l->emu);
    pthread_cond_destroy(&l->ecv);
    free(l->base.name);
    free(l);
}

static const struct sx_backend_ops local_ops = {
    .prepare = lo_prepare,
    .start = lo_start,
    .job_free = lo_job_free,
    .cancel = lo_cancel,
    .embed = lo_embed,
    .count_tokens = lo_count_tokens,
    .free = lo_free,
};

/* The vocabulary text of a special token, for the template's bos/eos. */
static char *token_text(const sx_tokenizer *t, int32_t id)
{
    size_t n = 0;
    const char *s = id >= 0 ? sx_tokenizer_token_text(t, id, &n) : NULL;

    return s ? strndup(s, n) : strdup("");
}

struct sx_model *sx_backend_engine_model(sx_backend *b)
{
    return b && strcmp(b->kind, "local") == 0 ? ((struct local *)b)->model : NULL;
}

sx_backend *sx_backend_local_new(const char *name, const char *path,
                                 const struct sx_local_options *o, char *err, size_t errlen)
{
    struct local *l = calloc(1, sizeof(*l));
    const sx_model_info *mi;
    sx_sched_config sc = {0};
    const char *tmpl;
    char *bos = NULL, *eos = NULL, why[384] = "";
    size_t tlen = 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->emu, NULL);
    pthread_cond_init(&l->ecv, NULL);
    l->base.ops = &local_ops;
    l->base.kind = "local";
    l->base.embeddings = true;
    l->base.adapters = true;
    l->base.name = strdup(name);
    sx_engine_set_log(log_from_engine, NULL);

    /* 1. Model, tokenizer, chat template. */
    l->model = sx_model_load(path, NULL, why, sizeof(why));
    if (!l->model) {
        snprintf(err, errlen, "model '%s': cannot load %s: %s", name, path, why);
        goto fail;
    }
    mi = sx_model_get_info(l->model);
    l->tok = sx_tokenizer_from_gguf(sx_model_gguf(l->model), why, sizeof(why));
    if (!l->tok) {
        snprintf(err, errlen, "model '%s': tokenizer: %s", name, why);
        goto fail;
    }
    tmpl = sx_gguf_get_str(sx_model_gguf(l->model), "tokenizer.chat_template", &tlen);
    bos = token_text(l->tok, sx_tokenizer_bos(l->tok));
    eos = token_text(l->tok, sx_tokenizer_eos(l->tok));
    l->tmpl = sx_chat_template_new(tmpl, tmpl ? tlen : 0, bos, eos, why, sizeof(why));
    if (!l->tmpl) {
        SX_WARN("backend", "model %s: %s; using ChatML", name, why);
        l->tmpl = sx_chat_template_new_named("chatml", bos, eos, why, sizeof(why));
    }
    free(bos);
    free(eos);
    bos = eos = NULL;
    if (!l->tmpl) {
        snprintf(err, errlen, "model '%s': chat template: %s", name, why);
        goto fail;
    }

    /* 2. The scheduler with its KV pool. */
    l->n_ctx = o->n_ctx > 0                      ? o->n_ctx
               : mi->n_ctx_train > DEFAULT_CTX_CAP ? DEFAULT_CTX_CAP
               : mi->n_ctx_train > 0             ? mi->n_ctx_train
                                                 : 2048;
    sc.n_threads = o->threads > 0 ? o->threads : cores > 0 ? (int)cores : 1;
    sc.n_ctx = l->n_ctx;
    sc.max_running = o->max_running;
    sc.max_waiting = o->max_waiting;
    l->sched = sx_sched_new(l->model, l->tok, &sc, why, sizeof(why));
    if (!l->sched) {
        snprintf(err, errlen, "model '%s': scheduler: %s", name, why);
        goto fail;
    }
    l->n_ctx = sx_sched_n_ctx(l->sched);
    l->base.context = l->n_ctx;

    /* 3. Embeddings: a cache for one sequence and a thread. */
    l->ekv = sx_kv_new(l->model, l->n_ctx, why, sizeof(why));
    l->eseq = l->ekv ? sx_seq_new(l->ekv) : NULL;
    l->epool = sx_pool_new(sc.n_threads);
    if (!l->eseq || !l->epool) {
        snprintf(err, errlen, "model '%s': embeddings cache: %s", name, why);
        goto fail;
    }
    if (pthread_create(&l->ethread, NULL, embed_main, l) != 0) {
        snprintf(err, errlen, "model '%s': cannot start the embeddings thread", name);
        goto fail;
    }
    l->ethread_started = true;
    return &l->base;

fail:
    free(bos);
    free(eos);
    lo_free(&l->base);
    return NULL;
}
