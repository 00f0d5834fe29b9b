/* Backends: where a completion is generated. One interface, two kinds: the
 * local engine (a GGUF file run by the engine's continuous-batching
 * scheduler) and an upstream OpenAI-compatible server reached over HTTP
 * (vLLM, llama.cpp server, Ollama, OpenAI). The model catalogue maps the
 * public model names of the configuration to one backend each.
 *
 * Threading: every call may come from any thread. A started job reports
 * through its sink from the backend's own thread (the scheduler thread or
 * the upstream I/O thread): sinks must not block. Nothing here knows about
 * tenants or HTTP requests; errors carry the HTTP status the API should
 * answer with, because both callers translate them the same way. */
#ifndef SX_BACKEND_BACKEND_H
#define SX_BACKEND_BACKEND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sx_config;

typedef struct sx_backend sx_backend;
typedef struct sx_catalog sx_catalog;
typedef struct sx_gen_job sx_gen_job;

#define SX_GEN_MAX_STOP 4

enum sx_gen_kind { SX_GEN_CHAT, SX_GEN_COMPLETION };

/* A validated generation request with the tenant's settings applied. */
struct sx_gen_request {
    enum sx_gen_kind kind;
    const json_t *messages; /* chat: array of {"role","content"(string)} */
    const char *prompt;     /* completion: the prompt text */
    size_t prompt_len;
    double temperature;     /* 0..2 */
    double top_p;           /* (0,1] */
    double presence_penalty, frequency_penalty;
    int64_t max_tokens;     /* >= 1, clamped */
    const char *stop[SX_GEN_MAX_STOP];
    int n_stop;
    bool has_seed;
    int64_t seed;
    int logprobs;           /* 0 off, else 1 */
    int top_logprobs;       /* 0..20 */
    const char *user;       /* passed upstream; may be NULL */
    /* The client reads a stream: an upstream is asked for one too (text
     * reaches the client as it comes); else for one whole response. */
    bool stream;
    /* The tenant's LoRA adapter, if any. Local: the loaded adapter (alive
     * until the job's done), applied at scale 1. Upstream: the adapter is
     * named in the upstream's model field (see sx_backend_adapter_name)
     * from the tenant slug and version. */
    const struct sx_lora *adapter;
    const char *adapter_slug;
    int adapter_version;    /* 0: no adapter */
};

/* Why a backend refused or failed a job. status is the HTTP status to
 * answer: 400 (context_length_exceeded, a template refusing the messages),
 * 502 (upstream unreachable or broken), 503 (busy: retry_after_s set),
 * 504 (upstream timeout), 500 (anything else). */
struct sx_gen_error {
    int status;
    const char *code;  /* static string or NULL */
    const char *param; /* static string or NULL */
    int retry_after_s;
    char message[400];
};

/* Fills e (message from fmt) and returns code, a negative SX_E*. */
int sx_gen_fail(struct sx_gen_error *e, int code, int status, const char *ecode,
                const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* What a finished job reports. */
struct sx_gen_result {
    const char *finish_reason; /* "stop", "length"; NULL when failed/cancelled */
    bool cancelled;
    bool failed;               /* err is filled */
    int64_t prompt_tokens, completion_tokens;
    struct sx_gen_error err;
};

/* Where a running job reports. delta: new text (valid UTF-8, may be empty
 * when only logprobs came) and, when asked for, its logprobs content items
 * as a JSON array (borrowed; may be NULL). A nonzero return cancels the
 * job. done: exactly once, last; the job is gone after it. */
struct sx_gen_sink {
    int (*delta)(void *ctx, const char *text, size_t len, json_t *logprobs);
    void (*done)(void *ctx, const struct sx_gen_result *res);
    void *ctx;
};

/* ---- one backend ------------------------------------------------------- */

const char *sx_backend_name(const sx_backend *b);   /* public model name */
const char *sx_backend_kind(const sx_backend *b);   /* "local" / "upstream" */
/* Context length in tokens (prompt + output); 0 when unknown (upstream
 * without context= in its configuration). */
int64_t sx_backend_context(const sx_backend *b);
bool sx_backend_embeddings(const sx_backend *b);    /* can embed */

/* Turns a request into a job ready to start: renders the chat template and
 * tokenizes (local) or builds the upstream body (upstream), and checks the
 * prompt against the context. *prompt_tokens is the exact count (local) or
 * an estimate (upstream, 1 token per 4 bytes, corrected by the upstream's
 * usage). 0, or a negative code with e filled. */
int sx_backend_prepare(sx_backend *b, const struct sx_gen_request *req, sx_gen_job **job,
                       int64_t *prompt_tokens, struct sx_gen_error *e);
/* The most tokens a prepared job's prompt can take: the exact count
 * (local), or a bound the upstream's count cannot pass (every token covers
 * at least one byte, plus the chat template's own tokens). Metering
 * reserves this, so that a quota holds even when the estimate is low. */
int64_t sx_backend_job_prompt_bound(const sx_gen_job *job);
/* Starts a prepared job (always consumes it). On success *id names it for
 * sx_backend_cancel and the sink reports from now on; on failure (e
 * filled, e.g. busy) the sink is never called. */
int sx_backend_start(sx_backend *b, sx_gen_job *job, const struct sx_gen_sink *sink,
                     uint64_t *id, struct sx_gen_error *e);
/* Drops a prepared job that was not started. Accepts NULL. */
void sx_backend_job_free(sx_gen_job *job);
/* Cancels a started job from any thread; its done reports cancelled soon
 * after. Unknown or finished ids are ignored. */
void sx_backend_cancel(sx_backend *b, uint64_t id);

/* Embeddings of n inputs, computed off the caller's thread. done runs
 * once, from the backend's thread: on success vecs holds n * dim floats
 * (borrowed for the call), tokens the input tokens counted; else e. */
typedef void (*sx_embed_done)(void *ctx, const float *vecs, int dim, int64_t tokens,
                              const struct sx_gen_error *e);
int sx_backend_embed(sx_backend *b, const char *const *inputs, size_t n, sx_embed_done done,
                     void *ctx, struct sx_gen_error *e);

/* The embedding size of a local model; 0 for a backend that cannot embed
 * in this process (upstream). */
int sx_backend_embed_dim(const sx_backend *b);
/* One text's embedding from a local model, waited for on the caller's
 * thread (the rag module's embedder): text longer than the model's context
 * is cut to its leading tokens. dim floats into out. 0, SX_EUNSUPPORTED
 * (not a local model), SX_EINVAL (dim is not the model's, empty text),
 * SX_ENOMEM or SX_EIO (the engine failed). */
int sx_backend_embed_text(sx_backend *b, const char *text, size_t len, float *out, int dim);

/* Estimated tokens of text for a backend: exact with a local tokenizer,
 * else 1 per 4 bytes. */
int64_t sx_backend_count_tokens(sx_backend *b, const char *text, size_t len);

/* Whether generations on b can carry a tenant adapter: a local model, or an
 * upstream configured with lora= (its server serves adapters by name). */
bool sx_backend_takes_adapters(const sx_backend *b);
/* The model name an upstream is sent for a tenant's adapter version, from
 * its lora= template ("{slug}-v{version}" by default) into buf. 0, or
 * SX_EUNSUPPORTED (not an upstream with lora=) / SX_ETOOBIG. */
int sx_backend_adapter_name(const sx_backend *b, const char *slug, int version, char *buf,
                            size_t len);

/* The engine model of a local backend (for LoRA adapters, which are bound
 * to it); NULL for an upstream one. */
struct sx_model *sx_backend_engine_model(sx_backend *b);

/* ---- the catalogue ------------------------------------------------------ */

/* Loads every model of the configuration: --model NAME=FILE.gguf[;opts]
 * (local) and --upstream NAME=URL[;opts] (see docs/configuration.md). A
 * model that fails to load stops the start (NULL, message in err). An
 * empty catalogue is valid: requests then get a 503 saying how to
 * configure a model. */
sx_catalog *sx_catalog_open(const struct sx_config *cfg, char *err, size_t errlen);
void sx_catalog_close(sx_catalog *c); /* accepts NULL; cancels running jobs */

size_t sx_catalog_count(const sx_catalog *c);
sx_backend *sx_catalog_at(const sx_catalog *c, size_t i);
sx_backend *sx_catalog_find(const sx_catalog *c, const char *name); /* NULL: unknown */
/* "a, b, c" into buf (for error messages). */
void sx_catalog_names(const sx_catalog *c, char *buf, size_t len);
/* Unix seconds when the catalogue was loaded (the models' "created"). */
int64_t sx_catalog_created(const sx_catalog *c);

/* ---- constructors used by the catalogue ------------------------------- */

struct sx_local_options {
    int n_ctx;        /* 0: the model's training context (capped at 8192) */
    int threads;      /* compute threads; 0: all cores */
    int max_running;  /* sequences decoded together; 0: 16 */
    int max_waiting;  /* queued jobs before 503; 0: 64 */
};
sx_backend *sx_backend_local_new(const char *name, const char *path,
                                 const struct sx_local_options *o, char *err, size_t errlen);

struct sx_upstream_options {
    const char *url;          /* base URL, e.g. http://host:8000/v1 */
    const char *api_key;      /* NULL: none */
    const char *model;        /* model name upstream; NULL: the public name */
    int64_t context;          /* 0: unknown */
    int connect_timeout_ms;   /* 0: 5000 */
    int timeout_ms;           /* no byte for this long -> 504; 0: 120000 */
    const char *lora;         /* adapter naming template ({slug}, {version}, {model});
                                 NULL: adapters are not named upstream */
};
sx_backend *sx_backend_upstream_new(const char *name, const struct sx_upstream_options *o,
                                    char *err, size_t errlen);

void sx_backend_free(sx_backend *b); /* accepts NULL */

#endif
