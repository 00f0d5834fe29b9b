/* Continuous-batching scheduler (see sched.h). Jobs wait in a FIFO queue
 * until the KV pool can hold their whole budget (prompt + max output, capped
 * at n_ctx), so a running job never runs out of cache halfway. The scheduler
 * thread then loops: retire cancelled jobs, admit waiting ones, build one
 * batch (a decode token per running job, then prompt chunks up to the
 * prefill budget), run it, sample, stream text, retire finished jobs. */
#include "engine/sched.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"

typedef struct job {
    uint64_t id;
    sx_job_params p;            /* prompt and stop point to our copies */
    int32_t *prompt;
    char **stops;
    int n_fed;                  /* prompt tokens already in the cache */
    int n_generated;
    int32_t last;               /* last sampled token, fed next step */
    int pages;                  /* KV pages reserved for this job */
    sx_seq *seq;
    sx_sampler *sampler;
    sx_detok *detok;
    sx_stop *stop;
    atomic_bool cancelled;
    int finish;                 /* 0 while running */
    int error;
    char message[160];
    struct job *next;           /* waiting queue / retire list */
} job;

struct sx_sched {
    sx_model *m;
    const sx_tokenizer *tok;
    const sx_model_info *info;
    sx_pool *pool;
    sx_kv *kv;
    sx_sched_config cfg;
    int cap_pages;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool quit;

    /* Under mu. The running array is written only by the scheduler thread
     * (with mu held), so that thread may read it without the lock. */
    job *wait_head, *wait_tail;
    int n_waiting;
    job **running;
    int n_running;
    int reserved_pages;
    uint64_t next_id;
    sx_sched_stats stats;

    /* Scheduler thread only. */
    float *logits;              /* max_running rows of n_vocab */
    sx_batch_item *items;
    job **item_job;
};

const char *sx_finish_name(int finish)
{
    switch (finish) {
    case SX_FINISH_STOP: return "stop";
    case SX_FINISH_LENGTH: return "length";
    case SX_FINISH_CANCELLED: return "cancelled";
    case SX_FINISH_ERROR: return "error";
    default: return "unknown";
    }
}

/* ---- jobs -------------------------------------------------------------- */

static void job_free(job *j)
{
    if (!j)
        return;
    sx_seq_free(j->seq);
    sx_sampler_free(j->sampler);
    sx_detok_free(j->detok);
    sx_stop_free(j->stop);
    if (j->stops) {
        for (int i = 0; i < j->p.n_stop; i++)
            free(j->stops[i]);
        free(j->stops);
    }
    free(j->prompt);
    free(j);
}

/* Positions a job may need: its prompt and every output token. */
static int job_pages(const sx_sched *s, const job *j)
{
    long need = (long)j->p.n_prompt + j->p.max_tokens;

    if (need > s->cfg.n_ctx)
        need = s->cfg.n_ctx;
    return (int)((need + SX_KV_PAGE - 1) / SX_KV_PAGE);
}

static job *job_new(sx_sched *s, const sx_job_params *p, char *err,
                    size_t errlen, int *rc)
{
    const char *why = NULL;
    job *j;

    *rc = SX_EINVAL;
    if (!p->prompt || p->n_prompt < 1) {
        sx_errmsg_set(err, errlen, "prompt: at least one token is needed");
        return NULL;
    }
    for (int i = 0; i < p->n_prompt; i++) {
        if (p->prompt[i] < 0 || p->prompt[i] >= s->info->n_vocab) {
            sx_errmsg_set(err, errlen, "prompt: token %d is %d, outside the "
                          "vocabulary (0..%d)", i, (int)p->prompt[i],
                          s->info->n_vocab - 1);
            return NULL;
        }
    }
    if (p->max_tokens < 1) {
        sx_errmsg_set(err, errlen, "max_tokens: must be at least 1");
        return NULL;
    }
    if (p->n_stop < 0 || (p->n_stop > 0 && !p->stop)) {
        sx_errmsg_set(err, errlen, "stop: bad list");
        return NULL;
    }
    if (p->n_stop > 0 && !s->tok) {
        sx_errmsg_set(err, errlen, "stop: stop strings need a tokenizer");
        return NULL;
    }
    if (p->n_prompt >= s->cfg.n_ctx) {
        *rc = SX_ETOOBIG;
        sx_errmsg_set(err, errlen,
                      "the prompt has %d tokens; the context holds %d "
                      "(prompt and output together)", p->n_prompt,
                      s->cfg.n_ctx);
        return NULL;
    }

    *rc = SX_ENOMEM;
    j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->p = *p;
    j->p.n_stop = 0;
    j->prompt = malloc(sizeof(*j->prompt) * (size_t)p->n_prompt);
    if (!j->prompt)
        goto fail;
    memcpy(j->prompt, p->prompt, sizeof(*j->prompt) * (size_t)p->n_prompt);
    j->p.prompt = j->prompt;
    if (p->n_stop > 0) {
        j->stops = calloc((size_t)p->n_stop, sizeof(*j->stops));
        if (!j->stops)
            goto fail;
        for (int i = 0; i < p->n_stop; i++) {
            if (!p->stop[i] || !p->stop[i][0]) {
                *rc = SX_EINVAL;
                sx_errmsg_set(err, errlen, "stop: stop string %d is empty", i);
                j->p.n_stop = i;
                goto fail;
            }
            j->stops[i] = strdup(p->stop[i]);
            j->p.n_stop = i + 1;
            if (!j->stops[i])
                goto fail;
        }
    }
    j->p.stop = (const char *const *)j->stops;

    j->sampler = sx_sampler_new(&p->sample, s->info->n_vocab, rc, &why);
    if (!j->sampler) {
        if (*rc == SX_EINVAL)
            sx_errmsg_set(err, errlen, "%s: out of range",
                          why ? why : "sampling");
        goto fail;
    }
    *rc = SX_ENOMEM;
    if (s->tok) {
        j->detok = sx_detok_new(s->tok, 0);
        if (!j->detok)
            goto fail;
    }
    j->stop = sx_stop_new(j->p.stop, j->p.n_stop);
    if (!j->stop)
        goto fail;
    atomic_init(&j->cancelled, false);
    j->pages = job_pages(s, j);
    *rc = SX_OK;
    return j;

fail:
    job_free(j);
    return NULL;
}

/* Ends a job: its cache pages go back at once, then its owner hears. */
static void job_retire(job *j)
{
    sx_job_result r;

    sx_seq_free(j->seq);
    j->seq = NULL;
    r = (sx_job_result){
        .id = j->id, .finish = j->finish, .n_prompt = j->p.n_prompt,
        .n_generated = j->n_generated, .error = j->error,
        .message = j->message[0] ? j->message : NULL,
    };
    if (j->p.on_done)
        j->p.on_done(j->p.user, &r);
    job_free(j);
}

static void job_fail(job *j, int error, const char *msg)
{
    size_t n = strlen(msg);

    j->finish = SX_FINISH_ERROR;
    j->error = error;
    /* Cut long engine messages to the buffer. */
    if (n >= sizeof(j->message))
        n = sizeof(j->message) - 1;
    memcpy(j->message, msg, n);
    j->message[n] = '\0';
}

/* Reports text that is not tied to a new token (held-back bytes at the
 * end) through on_token with token -1. */
static void emit_tail(job *j)
{
    const char *t = NULL, *e = NULL;
    size_t tl = 0, el = 0;

    if (!j->p.on_token)
        return;
    if (j->detok && sx_detok_flush(j->detok, &t, &tl) == SX_OK && tl > 0 &&
        sx_stop_feed(j->stop, t, tl, &e, &el) >= 0 && el > 0)
        j->p.on_token(j->p.user, -1, NULL, e, el);
    sx_stop_flush(j->stop, &e, &el);
    if (el > 0)
        j->p.on_token(j->p.user, -1, NULL, e, el);
}

/* Handles one sampled token of a running job. */
static void job_token(sx_sched *s, job *j, const sx_sample_out *out)
{
    const char *piece = NULL, *text = NULL;
    size_t plen = 0, tlen = 0;
    int32_t t = out->token;
    bool eog;

    j->n_generated++;
    eog = s->tok ? sx_tokenizer_is_eog(s->tok, t) : t == s->info->eos;
    if (eog && !j->p.ignore_eog) {
        j->finish = SX_FINISH_STOP;
        emit_tail(j);
        return;
    }

    if (j->detok) {
        int rc = sx_detok_feed(j->detok, t, &piece, &plen);

        if (rc == SX_OK)
            rc = sx_stop_feed(j->stop, piece, plen, &text, &tlen);
        if (rc < 0) {
            job_fail(j, rc, "detokenizing the output failed");
            return;
        }
    }
    if (j->p.on_token && j->p.on_token(j->p.user, t, out, text, tlen)) {
        j->finish = SX_FINISH_CANCELLED;
        return;
    }
    if (sx_stop_matched(j->stop)) {
        j->finish = SX_FINISH_STOP;
        return;
    }
    if (j->n_generated >= j->p.max_tokens ||
        j->p.n_prompt + j->n_generated >= s->cfg.n_ctx) {
        j->finish = SX_FINISH_LENGTH;
        emit_tail(j);
        return;
    }
    j->last = t;
}

/* ---- one step ---------------------------------------------------------- */

/* Builds and runs one batch over the running jobs, then samples. */
static void run_step(sx_sched *s)
{
    int n_items = 0, budget = s->cfg.prefill_chunk, rc;
    size_t nv = (size_t)s->info->n_vocab;
    uint64_t prefilled = 0, generated = 0;
    char err[200] = "";

    for (int i = 0; i < s->n_running; i++) {
        job *j = s->running[i];
        sx_batch_item *it = &s->items[n_items];

        if (j->finish)
            continue;
        *it = (sx_batch_item){
            .seq = j->seq, .pos = -1, .out = s->logits + (size_t)n_items * nv,
            .adapter = j->p.adapter, .lora_scale = j->p.lora_scale,
        };
        if (j->n_fed < j->p.n_prompt) {
            int take = j->p.n_prompt - j->n_fed;

            /* Prompts share the budget first come, first served. */
            if (budget == 0)
                continue;
            if (take > budget)
                take = budget;
            budget -= take;
            it->tokens = j->prompt + j->n_fed;
            it->n_tokens = take;
            it->logits = j->n_fed + take == j->p.n_prompt ? SX_LOGITS_LAST
                                                          : SX_LOGITS_NONE;
        } else {
            it->tokens = &j->last;
            it->n_tokens = 1;
            it->logits = SX_LOGITS_LAST;
        }
        s->item_job[n_items++] = j;
    }
    if (n_items == 0)
        return;

    rc = sx_engine_decode(s->m, s->pool, s->items, n_items, err, sizeof(err));
    if (rc != SX_OK) {
        for (int i = 0; i < n_items; i++)
            job_fail(s->item_job[i], rc, err[0] ? err : "forward pass failed");
        return;
    }

    for (int i = 0; i < n_items; i++) {
        job *j = s->item_job[i];
        sx_batch_item *it = &s->items[i];
        sx_sample_out out;

        if (it->tokens != &j->last) {
            j->n_fed += it->n_tokens;
            prefilled += (uint64_t)it->n_tokens;
        }
        if (it->logits != SX_LOGITS_LAST)
            continue;
        rc = sx_sampler_sample(j->sampler, it->out, &out);
        if (rc != SX_OK) {
            job_fail(j, rc, "sampling failed: no token has a finite logit");
            continue;
        }
        generated++;
        job_token(s, j, &out);
    }

    pthread_mutex_lock(&s->mu);
    s->stats.steps++;
    s->stats.tokens_generated += generated;
    s->stats.tokens_prefilled += prefilled;
    pthread_mutex_unlock(&s->mu);
}

/* ---- the scheduler thread ---------------------------------------------- */

/* Under mu: moves finished or cancelled running jobs and cancelled waiting
 * jobs to *retire; admits waiting jobs in order while the pool has room. */
static void reap_and_admit(sx_sched *s, job **retire)
{
    job **pp = &s->wait_head, *last = NULL;
    int k = 0;

    for (int i = 0; i < s->n_running; i++) {
        job *j = s->running[i];

        if (!j->finish && atomic_load(&j->cancelled))
            j->finish = SX_FINISH_CANCELLED;
        if (j->finish) {
            s->reserved_pages -= j->pages;
            j->next = *retire;
            *retire = j;
        } else {
            s->running[k++] = j;
        }
    }
    s->n_running = k;

    while (*pp) {
        job *j = *pp;

        if (atomic_load(&j->cancelled)) {
            *pp = j->next;
            s->n_waiting--;
            j->finish = SX_FINISH_CANCELLED;
            j->next = *retire;
            *retire = j;
        } else {
            last = j;
            pp = &j->next;
        }
    }
    s->wait_tail = last;

    /* FIFO: a job that does not fit blocks those behind it, so a large job
     * is never starved by a stream of small ones. */
    while (s->wait_head && s->n_running < s->cfg.max_running &&
           s->reserved_pages + s->wait_head->pages <= s->cap_pages) {
        job *j = s->wait_head;

        s->wait_head = j->next;
        if (!s->wait_head)
            s->wait_tail = NULL;
        s->n_waiting--;
        j->next = NULL;
        j->seq = sx_seq_new(s->kv);
        if (!j->seq) {
            job_fail(j, SX_ENOMEM, "out of memory for the sequence");
            j->next = *retire;
            *retire = j;
            continue;
        }
        s->reserved_pages += j->pages;
        s->running[s->n_running++] = j;
    }
    s->stats.waiting = s->n_waiting;
    s->stats.running = s->n_running;
}

static void *sched_main(void *arg)
{
    sx_sched *s = arg;

    pthread_mutex_lock(&s->mu);
    while (!s->quit) {
        job *retire = NULL;

        reap_and_admit(s, &retire);
        if (!retire && s->n_running == 0) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);

        while (retire) {
            job *j = retire;

            retire = j->next;
            job_retire(j);
        }
        if (s->n_running > 0)
            run_step(s);

        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- public ------------------------------------------------------------ */

sx_sched *sx_sched_new(sx_model *m, const sx_tokenizer *tok,
                       const sx_sched_config *cfg, char *err, size_t errlen)
{
    sx_sched_config c = cfg ? *cfg : (sx_sched_config){0};
    sx_sched *s;
    size_t nv;

    if (!m) {
        sx_errmsg_set(err, errlen, "no model");
        return NULL;
    }
    if (c.n_threads < 1)
        c.n_threads = 1;
    if (c.max_running <= 0)
        c.max_running = 16;
    if (c.max_waiting <= 0)
        c.max_waiting = 64;
    if (c.prefill_chunk <= 0)
        c.prefill_chunk = 256;
    if (c.n_ctx <= 0)
        c.n_ctx = sx_model_get_info(m)->n_ctx_train;
    if (c.n_ctx <= 1)
        c.n_ctx = 2048;
    if (c.kv_positions <= 0)
        c.kv_positions = 8 * c.n_ctx;
    if (c.n_ctx > c.kv_positions)
        c.n_ctx = c.kv_positions;
    if (c.max_running > 1024 || c.max_waiting > 1000000 || c.n_ctx < 2) {
        sx_errmsg_set(err, errlen, "scheduler config out of range");
        return NULL;
    }

    s = calloc(1, sizeof(*s));
    if (!s) {
        sx_errmsg_set(err, errlen, "out of memory");
        return NULL;
    }
    s->m = m;
    s->tok = tok;
    s->info = sx_model_get_info(m);
    s->cfg = c;
    s->next_id = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    nv = (size_t)s->info->n_vocab;

    s->pool = c.n_threads > 1 ? sx_pool_new(c.n_threads) : NULL;
    if (c.n_threads > 1 && !s->pool) {
        sx_errmsg_set(err, errlen, "cannot start %d compute threads",
                      c.n_threads);
        goto fail;
    }
    s->kv = sx_kv_new(m, c.kv_positions, err, errlen);
    if (!s->kv)
        goto fail;
    s->cap_pages = sx_kv_capacity(s->kv) / SX_KV_PAGE;
    s->running = calloc((size_t)c.max_running, sizeof(*s->running));
    s->items = calloc((size_t)c.max_running, sizeof(*s->items));
    s->item_job = calloc((size_t)c.max_running, sizeof(*s->item_job));
    s->logits = malloc(sizeof(float) * nv * (size_t)c.max_running);
    if (!s->running || !s->items || !s->item_job || !s->logits) {
        sx_errmsg_set(err, errlen, "out of memory for %d running jobs",
                      c.max_running);
        goto fail;
    }
    s->stats.kv_capacity = sx_kv_capacity(s->kv);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        sx_errmsg_set(err, errlen, "cannot start the scheduler thread");
        goto fail;
    }
    s->started = true;
    return s;

fail:
    sx_sched_free(s);
    return NULL;
}

void sx_sched_free(sx_sched *s)
{
    job *j;

    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->quit = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }

    /* The thread is gone: whatever is left ends as cancelled. */
    for (int i = 0; i < s->n_running; i++) {
        if (!s->running[i]->finish)
            s->running[i]->finish = SX_FINISH_CANCELLED;
        job_retire(s->running[i]);
    }
    while ((j = s->wait_head)) {
        s->wait_head = j->next;
        j->finish = SX_FINISH_CANCELLED;
        job_retire(j);
    }

    free(s->running);
    free(s->items);
    free(s->item_job);
    free(s->logits);
    sx_kv_free(s->kv);
    sx_pool_free(s->pool);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int sx_sched_submit(sx_sched *s, const sx_job_params *p, uint64_t *id,
                    char *err, size_t errlen)
{
    job *j;
    int rc;

    if (!s || !p || !id) {
        sx_errmsg_set(err, errlen, "missing argument");
        return SX_EINVAL;
    }
    j = job_new(s, p, err, errlen, &rc);
    if (!j) {
        if (rc == SX_ENOMEM)
            sx_errmsg_set(err, errlen, "out of memory");
        return rc;
    }

    pthread_mutex_lock(&s->mu);
    if (s->n_waiting >= s->cfg.max_waiting) {
        pthread_mutex_unlock(&s->mu);
        job_free(j);
        sx_errmsg_set(err, errlen,
                      "the engine queue is full (%d waiting); retry "
                      "later", s->cfg.max_waiting);
        return SX_EBUSY;
    }
    j->id = s->next_id++;
    if (s->wait_tail)
        s->wait_tail->next = j;
    else
        s->wait_head = j;
    s->wait_tail = j;
    s->n_waiting++;
    s->stats.waiting = s->n_waiting;
    *id = j->id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return SX_OK;
}

int sx_sched_cancel(sx_sched *s, uint64_t id)
{
    int rc = SX_ENOTFOUND;

    if (!s)
        return SX_EINVAL;
    pthread_mutex_lock(&s->mu);
    for (job *j = s->wait_head; j && rc; j = j->next) {
        if (j->id == id) {
            atomic_store(&j->cancelled, true);
            rc = SX_OK;
        }
    }
    for (int i = 0; i < s->n_running && rc; i++) {
        /* finish belongs to the scheduler thread; the flag is enough. */
        if (s->running[i]->id == id) {
            atomic_store(&s->running[i]->cancelled, true);
            rc = SX_OK;
        }
    }
    if (rc == SX_OK)
        pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sx_sched_get_stats(sx_sched *s, sx_sched_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    st->kv_free = (s->cap_pages - s->reserved_pages) * SX_KV_PAGE;
    pthread_mutex_unlock(&s->mu);
}

int sx_sched_n_ctx(const sx_sched *s)
{
    return s ? s->cfg.n_ctx : 0;
}
