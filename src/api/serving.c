/* The life of one generation request, shared by /v1/chat/completions and
 * /v1/completions: tenant settings, model resolution, admission by
 * metering, the backend job, and the response, streamed as OpenAI chunks
 * or built whole. The HTTP thread defers its reply and returns; the
 * backend's thread pushes text (for an upstream, usually the request's
 * own event loop); when the job is done its usage is settled there or on a
 * finisher, and the last byte goes out once the ledger says the usage is
 * durable. */
#include "api/serving.h"

#include "base/config.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "tuning/registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Finisher threads: they finish what the engine's batch loop hands off
 * and the embeddings, which block in sx_meter_settle() until their usage
 * is durable; with ledger_sync = full, more settlers in flight share each
 * journal fdatasync. */
#define FINISHERS 32

struct gen;

struct sx_serving {
    sx_catalog *catalog;
    pthread_t threads[FINISHERS];
    int n_threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sx_serving_task *head, *tail;
    bool stop;
};

/* One request in flight. Two references: the request's (dropped when the
 * HTTP request ends, after any on_close) and the producer's (dropped by
 * the finisher after the response ended). */
struct gen {
    struct sx_serving_task task; /* first: the finisher runs it */
    _Atomic int refs;
    struct sx_app *app;
    sx_backend *backend;     /* not used once settled: it may be closed */
    const char *backend_kind; /* static: "local" or "upstream" */
    sx_http_stream *st;
    struct sx_meter_grant *grant;
    _Atomic uint64_t job;    /* backend job id, 0 until started */
    atomic_bool gone;        /* the client went away */
    enum sx_gen_kind kind;
    const char *endpoint;
    bool stream, include_usage, logprobs, begun;
    char id[48];
    int64_t created;
    char *text;              /* non-stream: the whole output */
    size_t len, cap;
    json_t *lp;              /* non-stream logprobs items */
    struct sx_gen_result res;
    char model[192];         /* the public name the client asked for */
    /* The tenant's adapter: the handle (local models) is held until the
     * job is done, so a version activated meanwhile does not move it. */
    sx_adapter_handle *adapter;
    int adapter_version;     /* 0: none */
    char adapter_id[192];    /* "<base>:<slug>-v<N>" */
    char upstream_model[256]; /* upstream: the name the adapter went as */
    bool meta_sent;          /* stream: meta rode on a chunk already */
    sx_loop *loop;           /* the HTTP event loop of the request */
    int loop_index;          /* its number then (it may stop first) */
    int settle_rc;           /* the ledger's verdict, for reply_on_loop */
    atomic_bool awaiting;    /* the ledger has not called back yet */
    bool expecting;          /* loop thread: counted in sx_loop_expect() */
    json_t *rag;             /* meta.rag, or NULL (RAG off) */
};

static void gen_unref(void *p)
{
    struct gen *g = p;

    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    sx_adapter_release(g->adapter);
    if (g->grant)
        sx_meter_release(g->app->meter, g->grant);
    json_decref(g->lp);
    json_decref(g->rag);
    free(g->text);
    free(g);
}

/* ---- response pieces ------------------------------------------------------ */

static json_t *usage_json(const struct sx_gen_result *res)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)res->prompt_tokens,
                     "completion_tokens", (json_int_t)res->completion_tokens, "total_tokens",
                     (json_int_t)(res->prompt_tokens + res->completion_tokens));
}

/* meta.adapter: null, or {"version": "v3", "model_id": "base:slug-v3"}
 * (plus "upstream_model", the name it was served as, for an upstream). */
static json_t *meta_json(const struct gen *g)
{
    json_t *ad = json_null();

    if (g->adapter_version > 0) {
        char v[16];

        snprintf(v, sizeof(v), "v%d", g->adapter_version);
        ad = json_pack("{s:s,s:s}", "version", v, "model_id", g->adapter_id);
        if (g->upstream_model[0])
            json_object_set_new(ad, "upstream_model", json_string(g->upstream_model));
    }
    return json_pack("{s:s,s:o,s:o,s:n}", "backend", g->backend_kind, "adapter",
                     ad, "rag", g->rag ? json_incref(g->rag) : json_null(), "rerank");
}

static json_t *envelope(const struct gen *g, const char *object)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", g->id, "object", object, "created",
                     (json_int_t)g->created, "model", g->model);
}

/* One streamed chunk: text (or NULL), finish reason (or NULL). The first
 * chunk of a stream and the one with the finish reason carry "meta". */
static json_t *chunk(struct gen *g, const char *text, size_t len, json_t *lp,
                     const char *finish, bool first)
{
    json_t *o, *c;

    if (g->kind == SX_GEN_CHAT) {
        json_t *delta = json_object();

        o = envelope(g, "chat.completion.chunk");
        if (first)
            json_object_set_new(delta, "role", json_string("assistant"));
        if (text)
            json_object_set_new(delta, "content", json_stringn(text, len));
        c = json_pack("{s:i,s:o}", "index", 0, "delta", delta);
        json_object_set_new(c, "logprobs",
                            lp ? json_pack("{s:O}", "content", lp) : json_null());
    } else {
        o = envelope(g, "text_completion");
        c = json_pack("{s:i,s:s%}", "index", 0, "text", text ? text : "", text ? len : 0);
        json_object_set_new(c, "logprobs", json_null());
    }
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(o, "choices", json_pack("[o]", c));
    if (g->include_usage)
        json_object_set_new(o, "usage", json_null());
    if (!g->meta_sent || finish) {
        json_object_set_new(o, "meta", meta_json(g));
        g->meta_sent = true;
    }
    return o;
}

static int send_json(struct gen *g, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    int rc = s ? sx_http_stream_send(g->st, s, strlen(s)) : SX_ENOMEM;

    free(s);
    json_decref(o);
    return rc;
}

static void begin_stream(struct gen *g)
{
    if (g->begun)
        return;
    g->begun = true;
    sx_http_stream_begin(g->st, 200, "text/event-stream; charset=utf-8");
}

/* An error answered through a deferred stream that has not begun. */
static void reply_error_deferred(sx_http_stream *st, const struct sx_gen_error *e)
{
    json_t *o = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", e->message, "type",
                          sx_http_error_type(e->status), "param", e->param, "code", e->code);
    char *s = json_dumps(o, JSON_COMPACT), ra[16];

    json_decref(o);
    if (e->retry_after_s > 0) {
        snprintf(ra, sizeof(ra), "%d", e->retry_after_s);
        sx_http_stream_header(st, "Retry-After", ra);
    }
    sx_http_stream_begin(st, e->status, "application/json");
    if (s)
        sx_http_stream_write(st, s, strlen(s));
    free(s);
    sx_http_stream_finish(st);
}

/* ---- backend callbacks (backend thread) ----------------------------------- */

static int on_delta(void *ctx, const char *text, size_t len, json_t *lp)
{
    struct gen *g = ctx;

    if (atomic_load(&g->gone))
        return 1;
    if (!g->stream) {
        if (g->len + len + 1 > g->cap) {
            size_t cap = g->cap ? g->cap * 2 : 1024;
            char *grown;

            while (cap < g->len + len + 1)
                cap *= 2;
            grown = realloc(g->text, cap);
            if (!grown)
                return 1;
            g->text = grown;
            g->cap = cap;
        }
        memcpy(g->text + g->len, text, len);
        g->len += len;
        g->text[g->len] = '\0';
        if (lp && g->logprobs)
            json_array_extend(g->lp, lp);
        return 0;
    }
    if (len == 0 && !lp)
        return 0;
    if (!g->begun) {
        begin_stream(g);
        if (g->kind == SX_GEN_CHAT &&
            send_json(g, chunk(g, "", 0, NULL, NULL, true)) == SX_ECANCELED)
            return 1;
    }
    return send_json(g, chunk(g, text, len, g->logprobs ? lp : NULL, NULL, false)) ==
           SX_ECANCELED;
}

static void finish_task(struct sx_serving_task *t);

/* A generation on an upstream backend is finished on the thread that
 * relayed it (the request's event loop, or the upstream's I/O thread):
 * settling does not block it (the ledger calls back once the usage is
 * durable), and a hand-off to a finisher would cost a thread wake-up, tens
 * of microseconds. Local models hand off: their thread is the engine's
 * batch loop. */
static void on_done(void *ctx, const struct sx_gen_result *res)
{
    struct gen *g = ctx;

    g->res = *res;
    g->task.run = finish_task;
    if (!g->adapter && strcmp(g->backend_kind, "upstream") == 0)
        finish_task(&g->task);
    else
        sx_serving_post(g->app->serving, &g->task);
}

static void on_close(void *ctx)
{
    struct gen *g = ctx;
    uint64_t id;

    atomic_store(&g->gone, true);
    id = atomic_load(&g->job);
    if (id)
        sx_backend_cancel(g->backend, id);
}

/* ---- finishing (finisher threads) ----------------------------------------- */

#define OUT_LIT(o, lit) sx_json_out_raw(o, lit, sizeof(lit) - 1)

/* A key and a string value, as ',"key":"value"' (first: no comma). */
static void out_field(struct sx_json_out *o, const char *key, const char *v, bool first)
{
    if (!first)
        OUT_LIT(o, ",");
    OUT_LIT(o, "\"");
    sx_json_out_raw(o, key, strlen(key));
    OUT_LIT(o, "\":");
    if (v)
        sx_json_out_str(o, v, strlen(v));
    else
        OUT_LIT(o, "null");
}

/* The whole (non-streamed) response, written directly: the same object
 * the chunks describe (envelope, choices, usage, meta), without building
 * a jansson tree of the text and envelope only to serialise it (that cost
 * more than the rest of the reply). The text is valid UTF-8 (the backends
 * guarantee it). */
static char *whole_body(struct gen *g, size_t *len)
{
    struct sx_json_out o = {0};
    bool chat = g->kind == SX_GEN_CHAT;
    json_t *meta;

    OUT_LIT(&o, "{");
    out_field(&o, "id", g->id, true);
    out_field(&o, "object", chat ? "chat.completion" : "text_completion", false);
    OUT_LIT(&o, ",\"created\":");
    sx_json_out_int(&o, g->created);
    out_field(&o, "model", g->model, false);

    OUT_LIT(&o, ",\"choices\":[{\"index\":0,");
    if (chat) {
        OUT_LIT(&o, "\"message\":{\"role\":\"assistant\",\"content\":");
        sx_json_out_str(&o, g->text ? g->text : "", g->len);
        OUT_LIT(&o, ",\"refusal\":null},\"logprobs\":");
        if (g->logprobs) {
            OUT_LIT(&o, "{\"content\":");
            sx_json_out_value(&o, g->lp);
            OUT_LIT(&o, "}");
        } else {
            OUT_LIT(&o, "null");
        }
    } else {
        OUT_LIT(&o, "\"text\":");
        sx_json_out_str(&o, g->text ? g->text : "", g->len);
        OUT_LIT(&o, ",\"logprobs\":null");
    }
    out_field(&o, "finish_reason", g->res.finish_reason, false);
    OUT_LIT(&o, "}]");

    OUT_LIT(&o, ",\"usage\":{\"prompt_tokens\":");
    sx_json_out_int(&o, g->res.prompt_tokens);
    OUT_LIT(&o, ",\"completion_tokens\":");
    sx_json_out_int(&o, g->res.completion_tokens);
    OUT_LIT(&o, ",\"total_tokens\":");
    sx_json_out_int(&o, g->res.prompt_tokens + g->res.completion_tokens);
    OUT_LIT(&o, "}");

    /* meta: one definition (meta_json), shared with the chunks. */
    meta = meta_json(g);
    OUT_LIT(&o, ",\"meta\":");
    sx_json_out_value(&o, meta);
    json_decref(meta);
    OUT_LIT(&o, "}");
    return sx_json_out_take(&o, len);
}

/* The response's end, once its usage is durable (rc: SX_ESTORE when it
 * could not be recorded; the response must then not claim success). On
 * the thread that settled, or on the request's loop when the ledger
 * called back from its journal thread (settled()). */
static void reply_settled(void *ctx, int rc)
{
    struct gen *g = ctx;
    const struct sx_gen_result *res = &g->res;

    /* 1. Cancelled: billed what was generated; the client is gone. */
    if (res->cancelled) {
        if (!g->begun) {
            struct sx_gen_error e;

            sx_gen_fail(&e, 0, 503, "cancelled", NULL, "the request was cancelled");
            reply_error_deferred(g->st, &e);
        } else {
            sx_http_stream_finish(g->st);
        }
        goto out;
    }

    /* 2. Failed, or done but not recorded in the ledger (a response that is
     * not there must not look complete): an error status when nothing was
     * sent, else an error event that ends the stream without [DONE]. */
    if (!res->failed && rc) {
        sx_gen_fail(&g->res.err, SX_ESTORE, 500, "usage_not_recorded", NULL,
                    "the completion finished but its usage could not be recorded; retry "
                    "the request");
        g->res.failed = true;
    }
    if (res->failed) {
        if (!g->begun) {
            reply_error_deferred(g->st, &res->err);
        } else {
            json_t *o = json_pack("{s:{s:s,s:s,s:n,s:s?}}", "error", "message",
                                  res->err.message, "type",
                                  sx_http_error_type(res->err.status), "param", "code",
                                  res->err.code);
            send_json(g, o);
            sx_http_stream_finish(g->st);
        }
        goto out;
    }

    /* 3. Success: the last bytes. */
    if (!g->stream) {
        size_t len = 0;
        char *s = whole_body(g, &len);

        sx_http_stream_begin(g->st, 200, "application/json");
        if (s)
            sx_http_stream_write(g->st, s, len);
        free(s);
        sx_http_stream_finish(g->st);
        goto out;
    }
    if (!g->begun) {
        begin_stream(g);
        if (g->kind == SX_GEN_CHAT)
            send_json(g, chunk(g, "", 0, NULL, NULL, true));
    }
    send_json(g, chunk(g, NULL, 0, NULL, res->finish_reason, false));
    if (g->include_usage) {
        json_t *u = envelope(g, g->kind == SX_GEN_CHAT ? "chat.completion.chunk"
                                                       : "text_completion");

        json_object_set_new(u, "choices", json_array());
        json_object_set_new(u, "usage", usage_json(res));
        send_json(g, u);
    }
    sx_http_stream_send(g->st, "[DONE]", 6);
    sx_http_stream_finish(g->st);
out:
    gen_unref(g); /* the producer's reference */
}

/* The reply, posted to the request's loop by settled(). */
static void reply_on_loop(void *ctx)
{
    struct gen *g = ctx;

    if (g->expecting) {
        g->expecting = false;
        sx_loop_expect(sx_loop_current(), -1);
    }
    reply_settled(g, g->settle_rc);
}

/* The settlement is durable: reply on the request's own event loop when
 * the ledger called back from elsewhere (its journal thread, for a whole
 * group of requests at once: each loop then builds its own replies, and is
 * woken once for all of them). */
static void settled(void *ctx, int rc)
{
    struct gen *g = ctx;

    atomic_store(&g->awaiting, false);
    g->settle_rc = rc;
    if (g->loop && g->loop != sx_loop_current() &&
        sx_loop_post_at(g->loop_index, g->loop, reply_on_loop, g) == 0)
        return;
    reply_settled(g, rc);
}

/* Settles the grant to what was generated (a failed or cancelled job is
 * billed what it generated), then replies from reply_settled. */
static void finish_gen(struct gen *g)
{
    struct sx_usage_event ev = {
        .model = sx_backend_name(g->backend),
        .prompt_tokens = g->res.prompt_tokens,
        .completion_tokens = g->res.completion_tokens,
        .status = g->res.cancelled ? "cancelled" : g->res.failed ? "error" : "ok",
        .endpoint = g->endpoint,
    };
    struct sx_meter_grant *grant = g->grant;
    int rc;

    g->grant = NULL;
    if (!grant) {
        reply_settled(g, 0);
        return;
    }
    atomic_fetch_add(&g->refs, 1); /* g outlives a reply made inline */
    atomic_store(&g->awaiting, true);
    rc = sx_meter_settle_then(g->app->meter, grant, &ev, settled, g);
    if (rc)
        reply_settled(g, rc);
    else if (g->loop && g->loop == sx_loop_current() && atomic_exchange(&g->awaiting, false)) {
        /* The journal's sync will post the reply here: the loop keeps
         * polling for it a while rather than sleep. */
        g->expecting = true;
        sx_loop_expect(g->loop, 1);
    }
    gen_unref(g);
}

static void finish_task(struct sx_serving_task *t)
{
    struct gen *g = (struct gen *)t;

    /* The job is gone: its adapter version may go too. Released here, on
     * a finisher thread, so that none is held past sx_serving_close(). */
    sx_adapter_release(g->adapter);
    g->adapter = NULL;
    finish_gen(g); /* the producer's reference goes once it has replied */
}

void sx_serving_post(struct sx_serving *s, struct sx_serving_task *t)
{
    pthread_mutex_lock(&s->mu);
    t->next = NULL;
    if (s->tail)
        s->tail->next = t;
    else
        s->head = t;
    s->tail = t;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void *finisher_main(void *arg)
{
    struct sx_serving *s = arg;

    for (;;) {
        struct sx_serving_task *g;

        pthread_mutex_lock(&s->mu);
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        g = s->head;
        if (g) {
            s->head = g->next;
            if (!s->head)
                s->tail = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        if (!g)
            return NULL;
        g->run(g);
    }
}

/* ---- the serving state ------------------------------------------------------ */

struct sx_serving *sx_serving_open(const struct sx_config *cfg, char *err, size_t errlen)
{
    struct sx_serving *s = calloc(1, sizeof(*s));

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->catalog = sx_catalog_open(cfg, err, errlen);
    if (!s->catalog)
        goto fail;
    for (; s->n_threads < FINISHERS; s->n_threads++)
        if (pthread_create(&s->threads[s->n_threads], NULL, finisher_main, s) != 0) {
            snprintf(err, errlen, "cannot start the serving threads");
            goto fail;
        }
    return s;
fail:
    sx_serving_close(s);
    return NULL;
}

void sx_serving_close(struct sx_serving *s)
{
    if (!s)
        return;
    /* Backends first: their jobs end cancelled and queue for the
     * finishers, which drain the queue before they stop. */
    sx_catalog_close(s->catalog);
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

sx_catalog *sx_serving_catalog(struct sx_serving *s)
{
    return s->catalog;
}

/* ---- the request path --------------------------------------------------------- */

sx_backend *sx_api_model(struct sx_app *app, sx_http_req *r, const struct sx_tenant *t,
                         const char *name)
{
    sx_catalog *c = app->serving->catalog;
    sx_backend *b;
    char names[1024];

    if (sx_catalog_count(c) == 0) {
        sx_http_set_header(r, "Retry-After", "60");
        sx_http_reply_error(r, 503, "no_model_configured", NULL,
                            "no model is configured on this server; the operator starts it "
                            "with --model NAME=FILE.gguf or --upstream NAME=URL (see "
                            "docs/configuration.md)");
        return NULL;
    }
    if (!name)
        name = t && t->settings.default_model ? t->settings.default_model : NULL;
    b = sx_catalog_find(c, name);
    if (!b) {
        sx_catalog_names(c, names, sizeof(names));
        sx_http_reply_error(r, 404, "model_not_found", "model",
                            "The model '%.100s' does not exist; available models: %s",
                            name ? name : "", names);
    }
    return b;
}

/* Splits "<base>:<slug>-v<N>" when slug is the tenant's own: the base
 * name into base (len bytes) and N; else 0 (not an adapter id of t). */
static int adapter_id_version(const struct sx_tenant *t, const char *name, char *base,
                              size_t len)
{
    const char *colon = name ? strrchr(name, ':') : NULL, *v;
    size_t slen = t ? strlen(t->slug) : 0;
    char *end;
    long n;

    if (!colon || colon == name || (size_t)(colon - name) >= len || !slen)
        return 0;
    v = colon + 1;
    if (strncmp(v, t->slug, slen) != 0 || strncmp(v + slen, "-v", 2) != 0)
        return 0;
    v += slen + 2;
    if (*v < '1' || *v > '9')
        return 0;
    n = strtol(v, &end, 10);
    if (*end || n < 1 || n > 1000000)
        return 0;
    memcpy(base, name, (size_t)(colon - name));
    base[colon - name] = '\0';
    return (int)n;
}

sx_backend *sx_api_model_adapter(struct sx_app *app, sx_http_req *r, const struct sx_tenant *t,
                                 const char *name, int *version)
{
    sx_catalog *c = app->serving->catalog;
    sx_backend *b = NULL;
    char base[160], names[1024], found_base[160];
    int n, have;

    *version = 0;
    if (!name)
        name = t && t->settings.default_model ? t->settings.default_model : NULL;
    if (sx_catalog_count(c) == 0 || sx_catalog_find(c, name))
        return sx_api_model(app, r, t, name);
    /* "<base>:<slug>-v<N>": version N of this tenant's adapter, which must
     * exist for that base; anything else is an unknown model, whoever
     * else's adapter it may name. */
    n = adapter_id_version(t, name, base, sizeof(base));
    if (n > 0)
        b = sx_catalog_find(c, base);
    if (b && sx_backend_takes_adapters(b) &&
        sx_registry_find_version(app->adapters, t->id, n, &have, found_base,
                                 sizeof(found_base)) == 0 &&
        strcmp(found_base, base) == 0) {
        *version = n;
        return b;
    }
    sx_catalog_names(c, names, sizeof(names));
    sx_http_reply_error(r, 404, "model_not_found", "model",
                        "The model '%.100s' does not exist; available models: %s",
                        name ? name : "", names);
    return NULL;
}

/* The tenant's adapter for this request: version pin (from a model id) or
 * the active one, on a backend that takes adapters. Fills g and req; 0,
 * or replies (500 when the adapter cannot be loaded: a tenant's request is
 * never silently served without its adapter) and returns nonzero. */
static int take_adapter(struct sx_app *app, sx_http_req *r, const struct sx_tenant *t,
                        sx_backend *b, int pin, struct gen *g, struct sx_gen_request *req)
{
    const char *base = sx_backend_name(b);
    char found[160];
    int rc, v = 0;

    if (!sx_backend_takes_adapters(b) || !app->adapters)
        return 0;
    if (sx_backend_engine_model(b)) {
        rc = pin ? sx_tuning_adapter_version(app->adapters, t, base, pin, &g->adapter)
                 : sx_tuning_active_adapter(app->adapters, t, base, &g->adapter);
        if (rc == 0) {
            v = sx_adapter_version(g->adapter);
            req->adapter = sx_adapter_lora(g->adapter);
        }
    } else {
        rc = sx_registry_find_version(app->adapters, t->id, pin, &v, found, sizeof(found));
        if (rc == 0 && strcmp(found, base) != 0)
            rc = SX_ENOTFOUND;
        if (rc == 0) {
            req->adapter_slug = t->slug;
            req->adapter_version = v;
            sx_backend_adapter_name(b, t->slug, v, g->upstream_model,
                                    sizeof(g->upstream_model));
        }
    }
    if (rc == SX_ENOTFOUND && !pin)
        return 0; /* no active adapter for this model */
    if (rc) {
        sx_http_reply_error(r, 500, "adapter_unavailable", NULL,
                            "the tenant's LoRA adapter for model '%s' cannot be used right "
                            "now (%s); an operator can activate another version",
                            base, sx_strerror(rc));
        return rc;
    }
    g->adapter_version = v;
    sx_adapter_model_id(base, t->slug, v, g->adapter_id, sizeof(g->adapter_id));
    return 0;
}

static void reply_gen_error(sx_http_req *r, const struct sx_gen_error *e)
{
    char ra[16];

    if (e->retry_after_s > 0) {
        snprintf(ra, sizeof(ra), "%d", e->retry_after_s);
        sx_http_set_header(r, "Retry-After", ra);
    }
    sx_http_reply_error(r, e->status, e->code, e->param, "%s", e->message);
}

/* The tenant's settings over the request: system prompt, temperature,
 * the max_tokens clamp. Returns the messages to send (new reference). */
static json_t *apply_settings(struct sx_app *app, const struct sx_tenant *t,
                              struct sx_api_gen *g)
{
    const struct sx_settings *set = &t->settings;
    struct sx_tenant_limits lim;
    json_t *msgs = NULL;

    sx_tenant_limits(app->tenancy, t, &lim);
    if (!g->has_temperature)
        g->req.temperature = set->default_temperature;
    if (!g->has_top_p)
        g->req.top_p = 1.0;
    if (!g->has_max_tokens || g->req.max_tokens > lim.max_tokens_per_request)
        g->req.max_tokens = lim.max_tokens_per_request;
    if (g->kind == SX_GEN_CHAT) {
        json_t *first = json_array_get(g->messages, 0);
        const char *role = json_string_value(json_object_get(first, "role"));
        const char *text = json_string_value(json_object_get(first, "content"));
        size_t skip = 0;

        msgs = json_array();
        /* One system turn: templates such as Mistral's and Gemma's accept
         * no second one, so the request's own system message (which may
         * carry RAG context) follows the tenant's prompt in the same turn. */
        if (set->custom_system_prompt && *set->custom_system_prompt) {
            char *joined = NULL;

            if (role && text && strcmp(role, "system") == 0 &&
                asprintf(&joined, "%s\n\n%s", set->custom_system_prompt, text) >= 0)
                skip = 1;
            json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content",
                                                  joined ? joined
                                                         : set->custom_system_prompt));
            free(joined);
        }
        for (size_t i = skip; i < json_array_size(g->messages); i++)
            json_array_append(msgs, json_array_get(g->messages, i));
    }
    return msgs;
}

void sx_api_gen_run(struct sx_app *app, sx_http_req *r, struct sx_tenant *t,
                    struct sx_api_gen *ag)
{
    struct sx_gen_error e = {0};
    struct sx_gen_sink sink = {on_delta, on_done, NULL};
    sx_gen_job *job = NULL;
    struct gen *g = NULL;
    json_t *msgs = NULL;
    sx_backend *b;
    int64_t prompt_tokens = 0, room;
    uint64_t id = 0;
    const char *rid = sx_http_request_id(r);
    int pin = 0;

    /* 1. Model (with the tenant's adapter) and settings. */
    b = sx_api_model_adapter(app, r, t, ag->model, &pin);
    if (!b)
        return;
    g = calloc(1, sizeof(*g));
    if (!g) {
        sx_http_reply_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    atomic_init(&g->refs, 1);
    if (take_adapter(app, r, t, b, pin, g, &ag->req))
        goto out;
    msgs = apply_settings(app, t, ag);
    ag->req.kind = ag->kind;
    ag->req.messages = msgs;
    ag->req.prompt = ag->prompt;
    ag->req.prompt_len = ag->prompt_len;
    ag->req.stream = ag->stream;

    /* 2. The prompt, counted and checked against the context. */
    if (sx_backend_prepare(b, &ag->req, &job, &prompt_tokens, &e)) {
        reply_gen_error(r, &e);
        goto out;
    }
    room = sx_backend_context(b) ? sx_backend_context(b) - prompt_tokens : ag->req.max_tokens;
    if (ag->req.max_tokens > room)
        ag->req.max_tokens = room;

    /* 3. The response state, then admission (429 replies itself). */
    atomic_store(&g->refs, 2);
    g->app = app;
    g->backend = b;
    g->backend_kind = sx_backend_kind(b);
    g->loop = sx_loop_current();
    g->loop_index = g->loop ? sx_loop_index(g->loop) : -1;
    g->kind = ag->kind;
    g->endpoint = ag->endpoint;
    g->stream = ag->stream;
    g->include_usage = ag->include_usage;
    g->logprobs = ag->req.logprobs != 0;
    g->lp = json_array();
    g->rag = ag->rag; /* meta.rag: the request's retrieval, if any */
    ag->rag = NULL;
    g->created = sx_time_now_s();
    snprintf(g->model, sizeof(g->model), "%s",
             !pin ? sx_backend_name(b) : ag->model ? ag->model : t->settings.default_model);
    snprintf(g->id, sizeof(g->id), "%s%s", ag->kind == SX_GEN_CHAT ? "chatcmpl-" : "cmpl-",
             strncmp(rid, "req_", 4) == 0 ? rid + 4 : rid);
    if (sx_meter_admit(app->meter, r, t, sx_backend_job_prompt_bound(job), ag->req.max_tokens,
                       &g->grant))
        goto out;

    /* 4. Defer the reply and start the job: from here on the response goes
     * out through the stream, from whichever thread finishes it. */
    g->st = sx_http_defer(r, on_close, g);
    if (!g->st) {
        sx_http_reply_error(r, 500, NULL, NULL, "could not defer the response");
        goto out;
    }
    sx_http_set_user(r, g, gen_unref);
    sink.ctx = g;
    if (sx_backend_start(b, job, &sink, &id, &e)) {
        job = NULL;
        sx_meter_release(app->meter, g->grant);
        g->grant = NULL;
        reply_error_deferred(g->st, &e);
        gen_unref(g); /* the producer's reference: no job will drop it */
        goto out_started;
    }
    job = NULL;
    atomic_store(&g->job, id);
    if (atomic_load(&g->gone))
        sx_backend_cancel(b, id);
out_started:
    json_decref(msgs);
    return;

out:
    sx_backend_job_free(job);
    if (g) {
        atomic_store(&g->refs, 1);
        gen_unref(g);
    }
    json_decref(msgs);
}

/* ---- common field validation ------------------------------------------------ */

static int bad(sx_http_req *r, const char *param, const char *fmt, const char *what)
{
    sx_http_reply_error(r, 400, "invalid_value", param, fmt, param, what);
    return SX_EINVAL;
}

static int get_number(sx_http_req *r, const json_t *body, const char *key, double lo,
                      double hi, double *out, bool *present)
{
    json_t *v = json_object_get(body, key);

    if (present)
        *present = false;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi) {
        char range[64];

        snprintf(range, sizeof(range), "from %g to %g", lo, hi);
        return bad(r, key, "%s must be a number %s", range);
    }
    *out = json_number_value(v);
    if (present)
        *present = true;
    return 0;
}

int sx_api_gen_common(sx_http_req *r, const json_t *body, struct sx_api_gen *g)
{
    json_t *v;

    /* model: a string when given; absent means the tenant's default. */
    v = json_object_get(body, "model");
    if (v && !json_is_null(v) && (!json_is_string(v) || !json_string_length(v)))
        return bad(r, "model", "%s must be a model name such as %s", "\"synapsex-chat\"");
    g->model = json_is_string(v) ? json_string_value(v) : NULL;

    if (get_number(r, body, "temperature", 0, 2, &g->req.temperature, &g->has_temperature) ||
        get_number(r, body, "top_p", 0, 1, &g->req.top_p, &g->has_top_p) ||
        get_number(r, body, "presence_penalty", -2, 2, &g->req.presence_penalty, NULL) ||
        get_number(r, body, "frequency_penalty", -2, 2, &g->req.frequency_penalty, NULL))
        return SX_EINVAL;
    if (g->has_top_p && g->req.top_p == 0)
        return bad(r, "top_p", "%s must be %s", "greater than 0 and at most 1");

    /* max_tokens / max_completion_tokens: the smaller when both. */
    for (int i = 0; i < 2; i++) {
        const char *k = i ? "max_completion_tokens" : "max_tokens";

        v = json_object_get(body, k);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return bad(r, k, "%s must be %s", "an integer of at least 1");
        if (!g->has_max_tokens || json_integer_value(v) < g->req.max_tokens)
            g->req.max_tokens = json_integer_value(v);
        g->has_max_tokens = true;
    }

    /* n: only one choice. */
    v = json_object_get(body, "n");
    if (v && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) != 1)) {
        sx_http_reply_error(r, 400, "unsupported_value", "n",
                            "n must be 1: this server returns one choice per request; send "
                            "n separate requests instead");
        return SX_EINVAL;
    }

    /* stop: a string or up to 4 strings. */
    v = json_object_get(body, "stop");
    if (json_is_string(v) && json_string_length(v)) {
        g->req.stop[g->req.n_stop++] = json_string_value(v);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *s;

        if (json_array_size(v) > SX_GEN_MAX_STOP)
            return bad(r, "stop", "%s takes %s", "at most 4 sequences");
        json_array_foreach(v, i, s) {
            if (!json_is_string(s) || !json_string_length(s))
                return bad(r, "stop", "%s must hold %s", "non-empty strings");
            g->req.stop[g->req.n_stop++] = json_string_value(s);
        }
    } else if (v && !json_is_null(v) && !json_is_string(v)) {
        return bad(r, "stop", "%s must be %s", "a string or an array of up to 4 strings");
    }

    v = json_object_get(body, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v))
            return bad(r, "seed", "%s must be %s", "an integer");
        g->req.has_seed = true;
        g->req.seed = json_integer_value(v);
    }

    v = json_object_get(body, "stream");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return bad(r, "stream", "%s must be %s", "true or false");
    g->stream = json_is_true(v);
    v = json_object_get(body, "stream_options");
    if (v && !json_is_null(v)) {
        json_t *iu = json_object_get(v, "include_usage");

        if (!g->stream)
            return bad(r, "stream_options", "%s is only allowed %s", "when stream is true");
        if (!json_is_object(v) || (iu && !json_is_boolean(iu)))
            return bad(r, "stream_options", "%s must be %s",
                       "an object such as {\"include_usage\": true}");
        g->include_usage = json_is_true(iu);
    }

    v = json_object_get(body, "user");
    if (v && !json_is_null(v) && !json_is_string(v))
        return bad(r, "user", "%s must be %s", "a string");
    g->req.user = json_is_string(v) ? json_string_value(v) : NULL;
    v = json_object_get(body, "metadata");
    if (v && !json_is_null(v) && !json_is_object(v))
        return bad(r, "metadata", "%s must be %s", "an object of string values");

    /* Extra fields of this platform: rerank is not served yet. */
    v = json_object_get(body, "use_rerank");
    if (v && !json_is_null(v) && !json_is_false(v)) {
        sx_http_reply_error(r, 400, "unsupported_parameter", "use_rerank",
                            "use_rerank is not available on this server yet; remove it");
        return SX_EINVAL;
    }
    return 0;
}
