/* POST /v1/embeddings: one string or an array of strings, embedded by the
 * model's backend off the HTTP thread; float or base64 encoding as OpenAI
 * documents (the official SDKs ask for base64 by default). Metered like
 * completions, with the input tokens as the prompt and no output. */
#include "api/serving.h"

#include "base/err.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUTS 2048

static const char *const fields[] = {"model", "input", "encoding_format", "user",
                                     "dimensions", NULL};
static const char *const unsupported[] = {NULL};

struct embed {
    struct sx_serving_task task; /* first */
    _Atomic int refs;
    struct sx_app *app;
    sx_backend *backend;
    sx_http_stream *st;
    struct sx_meter_grant *grant;
    bool base64;
    size_t n_inputs;
    /* Result, filled on the backend thread. */
    json_t *body;
    int64_t tokens;
    struct sx_gen_error err;
    bool failed;
};

static void embed_unref(void *p)
{
    struct embed *e = p;

    if (!e || atomic_fetch_sub(&e->refs, 1) != 1)
        return;
    if (e->grant)
        sx_meter_release(e->app->meter, e->grant);
    json_decref(e->body);
    free(e);
}

static char *base64(const void *data, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);

        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Finisher thread: settle, then send. */
static void finish_task(struct sx_serving_task *t)
{
    struct embed *e = (struct embed *)t;
    struct sx_usage_event ev = {.model = sx_backend_name(e->backend),
                                .prompt_tokens = e->tokens,
                                .status = e->failed ? "error" : "ok",
                                .endpoint = "embeddings"};
    json_t *o;
    char *s, ra[16];

    if (sx_meter_settle(e->app->meter, e->grant, &ev) && !e->failed) {
        sx_gen_fail(&e->err, SX_ESTORE, 500, "usage_not_recorded", NULL,
                    "the embeddings were computed but their usage could not be recorded; "
                    "retry the request");
        e->failed = true;
    }
    e->grant = NULL;
    if (e->failed) {
        o = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", e->err.message, "type",
                      sx_http_error_type(e->err.status), "param", e->err.param, "code",
                      e->err.code);
        if (e->err.retry_after_s > 0) {
            snprintf(ra, sizeof(ra), "%d", e->err.retry_after_s);
            sx_http_stream_header(e->st, "Retry-After", ra);
        }
    } else {
        o = json_incref(e->body);
    }
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    sx_http_stream_begin(e->st, e->failed ? e->err.status : 200, "application/json");
    if (s)
        sx_http_stream_write(e->st, s, strlen(s));
    free(s);
    sx_http_stream_finish(e->st);
    embed_unref(e);
}

/* Backend thread: build the body (vectors are only borrowed). */
static void on_embedded(void *ctx, const float *vecs, int dim, int64_t tokens,
                        const struct sx_gen_error *err)
{
    struct embed *e = ctx;
    json_t *data = json_array();

    e->tokens = tokens;
    if (err) {
        e->failed = true;
        e->err = *err;
    }
    for (size_t i = 0; !err && i < e->n_inputs; i++) {
        const float *v = vecs + i * (size_t)dim;
        json_t *emb;

        if (e->base64) {
            char *b = base64(v, (size_t)dim * sizeof(float));

            emb = b ? json_string(b) : NULL;
            free(b);
        } else {
            emb = json_array();
            for (int k = 0; k < dim; k++)
                json_array_append_new(emb, json_real(v[k]));
        }
        json_array_append_new(data, json_pack("{s:s,s:I,s:o*}", "object", "embedding",
                                              "index", (json_int_t)i, "embedding", emb));
    }
    if (!err)
        e->body = json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data,
                            "model", sx_backend_name(e->backend), "usage", "prompt_tokens",
                            (json_int_t)tokens, "total_tokens", (json_int_t)tokens);
    else
        json_decref(data);
    e->task.run = finish_task;
    sx_serving_post(e->app->serving, &e->task);
}

static void on_close(void *ctx)
{
    (void)ctx; /* embeddings are short: let them finish */
}

static int parse_input(sx_http_req *r, const json_t *body, const char ***inputs, size_t *n)
{
    json_t *in = json_object_get(body, "input"), *v;
    size_t i;

    *inputs = NULL;
    *n = 0;
    if (json_is_string(in)) {
        *inputs = malloc(sizeof(char *));
        if (!*inputs)
            return SX_ENOMEM;
        (*inputs)[(*n)++] = json_string_value(in);
    } else if (json_is_array(in) && json_array_size(in) > 0 &&
               json_array_size(in) <= MAX_INPUTS) {
        *inputs = malloc(json_array_size(in) * sizeof(char *));
        if (!*inputs)
            return SX_ENOMEM;
        json_array_foreach(in, i, v) {
            if (!json_is_string(v))
                break;
            (*inputs)[(*n)++] = json_string_value(v);
        }
        if (*n != json_array_size(in))
            *n = 0;
    }
    for (i = 0; i < *n; i++)
        if ((*inputs)[i][0] == '\0')
            *n = 0;
    if (*n == 0) {
        free(*inputs);
        *inputs = NULL;
        sx_http_reply_error(r, 400, "invalid_value", "input",
                            "input must be a non-empty string or an array of 1 to %d "
                            "non-empty strings (token arrays are not supported)",
                            MAX_INPUTS);
        return SX_EINVAL;
    }
    return 0;
}

static void h_embeddings(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t = NULL;
    struct sx_gen_error err = {0};
    struct embed *e = NULL;
    const char **inputs = NULL;
    json_t *body, *fmt, *dims, *model;
    sx_backend *b;
    int64_t tokens = 0;
    size_t n = 0;

    /* 1. Who, and a valid body. */
    if (sx_api_request_tenant(app, r, &p, &t))
        return;
    body = sx_http_json_object(r);
    if (!body || sx_api_check_fields(r, body, fields, unsupported))
        goto out;
    fmt = json_object_get(body, "encoding_format");
    if (fmt && !json_is_null(fmt) &&
        (!json_is_string(fmt) || (strcmp(json_string_value(fmt), "float") != 0 &&
                                  strcmp(json_string_value(fmt), "base64") != 0))) {
        sx_http_reply_error(r, 400, "invalid_value", "encoding_format",
                            "encoding_format must be \"float\" or \"base64\"");
        goto out;
    }
    dims = json_object_get(body, "dimensions");
    if (dims && !json_is_null(dims)) {
        sx_http_reply_error(r, 400, "unsupported_parameter", "dimensions",
                            "dimensions is not supported: the models return their full "
                            "embedding size; remove it");
        goto out;
    }
    model = json_object_get(body, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) {
        sx_http_reply_error(r, 400, "invalid_value", "model", "model must be a string");
        goto out;
    }
    if (parse_input(r, body, &inputs, &n))
        goto out;

    /* 2. Model, count, admission. */
    b = sx_api_model(app, r, t, json_string_value(model));
    if (!b)
        goto out;
    for (size_t i = 0; i < n; i++)
        tokens += sx_backend_count_tokens(b, inputs[i], strlen(inputs[i]));
    e = calloc(1, sizeof(*e));
    if (!e) {
        sx_http_reply_error(r, 500, NULL, NULL, "out of memory");
        goto out;
    }
    atomic_init(&e->refs, 2);
    e->app = app;
    e->backend = b;
    e->n_inputs = n;
    e->base64 = json_is_string(fmt) && strcmp(json_string_value(fmt), "base64") == 0;
    if (sx_meter_admit(app->meter, r, t, tokens, 0, &e->grant))
        goto out;

    /* 3. Defer and embed. */
    e->st = sx_http_defer(r, on_close, e);
    if (!e->st) {
        sx_http_reply_error(r, 500, NULL, NULL, "could not defer the response");
        goto out;
    }
    sx_http_set_user(r, e, embed_unref);
    if (sx_backend_embed(b, inputs, n, on_embedded, e, &err)) {
        e->failed = true;
        e->err = err;
        e->tokens = 0;
        finish_task(&e->task); /* drops the producer's reference */
    }
    e = NULL;
out:
    if (e) {
        atomic_store(&e->refs, 1);
        embed_unref(e);
    }
    free(inputs);
    sx_tenant_unref(t);
}

int sx_api_embeddings_routes(struct sx_app *app, sx_http_server *srv)
{
    return sx_http_route(srv, "POST", "/v1/embeddings", h_embeddings, app);
}
