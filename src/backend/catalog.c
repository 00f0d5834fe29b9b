/* The model catalogue: the public model names of the configuration, each
 * bound to a backend (a local GGUF file or an upstream server), plus the
 * thin dispatch of the public sx_backend_* calls through each backend's
 * operations table. Entries are NAME=TARGET;opt=value;... (see
 * docs/configuration.md); upstream keys come from environment variables,
 * never from the configuration itself. */
#include "backend/internal.h"

#include "base/config.h"
#include "base/err.h"
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sx_catalog {
    sx_backend **models;
    size_t n;
    int64_t created;
};

/* ---- dispatch ------------------------------------------------------------ */

int sx_gen_fail(struct sx_gen_error *e, int code, int status, const char *ecode,
                const char *param, const char *fmt, ...)
{
    va_list ap;

    e->status = status;
    e->code = ecode;
    e->param = param;
    e->retry_after_s = 0;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return code;
}

const char *sx_backend_name(const sx_backend *b)
{
    return b->name;
}

const char *sx_backend_kind(const sx_backend *b)
{
    return b->kind;
}

int64_t sx_backend_context(const sx_backend *b)
{
    return b->context;
}

bool sx_backend_embeddings(const sx_backend *b)
{
    return b->embeddings;
}

bool sx_backend_takes_adapters(const sx_backend *b)
{
    return b->adapters;
}

int64_t sx_backend_job_prompt_bound(const sx_gen_job *job)
{
    return job->prompt_bound;
}

int sx_backend_prepare(sx_backend *b, const struct sx_gen_request *req, sx_gen_job **job,
                       int64_t *prompt_tokens, struct sx_gen_error *e)
{
    *job = NULL;
    return b->ops->prepare(b, req, job, prompt_tokens, e);
}

int sx_backend_start(sx_backend *b, sx_gen_job *job, const struct sx_gen_sink *sink,
                     uint64_t *id, struct sx_gen_error *e)
{
    return b->ops->start(b, job, sink, id, e);
}

void sx_backend_job_free(sx_gen_job *job)
{
    if (job)
        job->backend->ops->job_free(job);
}

void sx_backend_cancel(sx_backend *b, uint64_t id)
{
    b->ops->cancel(b, id);
}

int sx_backend_embed(sx_backend *b, const char *const *inputs, size_t n, sx_embed_done done,
                     void *ctx, struct sx_gen_error *e)
{
    if (!b->embeddings)
        return sx_gen_fail(e, SX_EUNSUPPORTED, 400, "model_not_supported", "model",
                           "model '%s' does not serve embeddings", b->name);
    return b->ops->embed(b, inputs, n, done, ctx, e);
}

int64_t sx_backend_count_tokens(sx_backend *b, const char *text, size_t len)
{
    return b->ops->count_tokens(b, text, len);
}

void sx_backend_free(sx_backend *b)
{
    if (b)
        b->ops->free(b);
}

/* ---- configuration entries ----------------------------------------------- */

/* Splits "TARGET;k=v;k=v" in place: returns TARGET, options in keys/vals. */
static char *split_options(char *s, char **keys, char **vals, int max, int *n)
{
    char *save = NULL, *tok = strtok_r(s, ";", &save), *target = tok;

    *n = 0;
    while ((tok = strtok_r(NULL, ";", &save)) && *n < max) {
        char *eq = strchr(tok, '=');

        keys[*n] = tok;
        vals[*n] = eq ? (*eq = '\0', eq + 1) : NULL;
        (*n)++;
    }
    return target;
}

static int parse_int(const char *name, const char *key, const char *v, long lo, long hi,
                     long *out, char *err, size_t errlen)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;

    if (!v || !*v || *end || x < lo || x > hi) {
        snprintf(err, errlen, "model '%s': option %s needs an integer from %ld to %ld", name,
                 key, lo, hi);
        return SX_EINVAL;
    }
    *out = x;
    return 0;
}

static sx_backend *open_local(const char *name, const char *value, char *err, size_t errlen)
{
    struct sx_local_options o = {0};
    char *copy = strdup(value), *keys[8], *vals[8], *path;
    sx_backend *b = NULL;
    long x;
    int n;

    if (!copy)
        return NULL;
    path = split_options(copy, keys, vals, 8, &n);
    for (int i = 0; i < n; i++) {
        int *dst = strcmp(keys[i], "context") == 0       ? &o.n_ctx
                   : strcmp(keys[i], "threads") == 0     ? &o.threads
                   : strcmp(keys[i], "max_running") == 0 ? &o.max_running
                   : strcmp(keys[i], "max_waiting") == 0 ? &o.max_waiting
                                                         : NULL;
        if (!dst) {
            snprintf(err, errlen, "model '%s': unknown option '%s'; known: context, threads, "
                     "max_running, max_waiting", name, keys[i]);
            goto out;
        }
        if (parse_int(name, keys[i], vals[i], 1, 1 << 20, &x, err, errlen))
            goto out;
        *dst = (int)x;
    }
    if (!path || !*path) {
        snprintf(err, errlen, "model '%s': missing the GGUF path (NAME=FILE.gguf)", name);
        goto out;
    }
    b = sx_backend_local_new(name, path, &o, err, errlen);
out:
    free(copy);
    return b;
}

static sx_backend *open_upstream(const char *name, const char *value, char *err,
                                 size_t errlen)
{
    struct sx_upstream_options o = {0};
    char *copy = strdup(value), *keys[8], *vals[8];
    sx_backend *b = NULL;
    long x;
    int n;

    if (!copy)
        return NULL;
    o.url = split_options(copy, keys, vals, 8, &n);
    for (int i = 0; i < n; i++) {
        const char *k = keys[i], *v = vals[i];

        if (strcmp(k, "key_env") == 0) {
            o.api_key = v ? getenv(v) : NULL;
            if (!o.api_key || !*o.api_key) {
                snprintf(err, errlen, "upstream '%s': key_env names the environment "
                         "variable holding its API key, and '%s' is not set", name,
                         v ? v : "");
                goto out;
            }
        } else if (strcmp(k, "model") == 0 && v && *v) {
            o.model = v;
        } else if (strcmp(k, "lora") == 0) {
            o.lora = v && strcmp(v, "slug") == 0 ? "{slug}-v{version}" : v;
            if (!o.lora || !strstr(o.lora, "{slug}") || !strstr(o.lora, "{version}")) {
                snprintf(err, errlen, "upstream '%s': lora= takes 'slug' (the adapter of "
                         "tenant acme, version 3, is sent as model acme-v3) or a template "
                         "holding both {slug} and {version}, e.g. lora={slug}-v{version}",
                         name);
                goto out;
            }
        } else if (strcmp(k, "context") == 0) {
            if (parse_int(name, k, v, 1, 1 << 24, &x, err, errlen))
                goto out;
            o.context = x;
        } else if (strcmp(k, "connect_timeout_ms") == 0) {
            if (parse_int(name, k, v, 1, 600000, &x, err, errlen))
                goto out;
            o.connect_timeout_ms = (int)x;
        } else if (strcmp(k, "timeout_ms") == 0) {
            if (parse_int(name, k, v, 1, 3600000, &x, err, errlen))
                goto out;
            o.timeout_ms = (int)x;
        } else {
            snprintf(err, errlen, "upstream '%s': unknown option '%s'; known: key_env, "
                     "model, lora, context, connect_timeout_ms, timeout_ms", name, k);
            goto out;
        }
    }
    if (!o.url || (strncmp(o.url, "http://", 7) != 0 && strncmp(o.url, "https://", 8) != 0)) {
        snprintf(err, errlen, "upstream '%s': the URL must start with http:// or https:// "
                 "(e.g. http://127.0.0.1:8000/v1)", name);
        goto out;
    }
    b = sx_backend_upstream_new(name, &o, err, errlen);
out:
    free(copy);
    return b;
}

/* ---- the catalogue --------------------------------------------------------- */

static int add(sx_catalog *c, sx_backend *b, char *err, size_t errlen)
{
    sx_backend **grown;

    if (sx_catalog_find(c, b->name)) {
        snprintf(err, errlen, "model name '%s' is configured twice", b->name);
        sx_backend_free(b);
        return SX_EEXIST;
    }
    grown = realloc(c->models, (c->n + 1) * sizeof(*grown));
    if (!grown) {
        sx_backend_free(b);
        return SX_ENOMEM;
    }
    c->models = grown;
    c->models[c->n++] = b;
    return 0;
}

sx_catalog *sx_catalog_open(const struct sx_config *cfg, char *err, size_t errlen)
{
    sx_catalog *c = calloc(1, sizeof(*c));

    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->created = (int64_t)time(NULL);
    for (size_t i = 0; i < cfg->n_models; i++) {
        sx_backend *b = open_local(cfg->models[i].name, cfg->models[i].value, err, errlen);

        if (!b || add(c, b, err, errlen))
            goto fail;
        SX_INFO("backend", "model %s: local, context %lld", b->name, (long long)b->context);
    }
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        sx_backend *b = open_upstream(cfg->upstreams[i].name, cfg->upstreams[i].value, err,
                                      errlen);

        if (!b || add(c, b, err, errlen))
            goto fail;
        SX_INFO("backend", "model %s: upstream", b->name);
    }
    if (c->n == 0)
        SX_WARN("backend", "no model configured: completions answer 503 until one is "
                "given with --model NAME=FILE.gguf or --upstream NAME=URL");
    return c;

fail:
    sx_catalog_close(c);
    return NULL;
}

void sx_catalog_close(sx_catalog *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sx_backend_free(c->models[i]);
    free(c->models);
    free(c);
}

size_t sx_catalog_count(const sx_catalog *c)
{
    return c ? c->n : 0;
}

sx_backend *sx_catalog_at(const sx_catalog *c, size_t i)
{
    return i < c->n ? c->models[i] : NULL;
}

sx_backend *sx_catalog_find(const sx_catalog *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->n; i++)
        if (strcmp(c->models[i]->name, name) == 0)
            return c->models[i];
    return NULL;
}

void sx_catalog_names(const sx_catalog *c, char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (size_t i = 0; c && i < c->n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "",
                                c->models[i]->name);
}

int64_t sx_catalog_created(const sx_catalog *c)
{
    return c->created;
}
