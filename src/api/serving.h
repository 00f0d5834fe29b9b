/* Internal to the OpenAI endpoints of src/api/ (chat.c, completions.c,
 * embeddings.c, models.c): the serving state of the application (model
 * catalogue and the finisher threads that settle usage and end responses)
 * and the request life cycle shared by chat and text completions. */
#ifndef SX_API_SERVING_H
#define SX_API_SERVING_H

#include "api/api.h"
#include "backend/backend.h"

struct sx_config;
struct sx_serving;

/* Loads the catalogue and starts the finisher threads. NULL with err. */
struct sx_serving *sx_serving_open(const struct sx_config *cfg, char *err, size_t errlen);
/* Cancels what runs, lets the finishers settle it, stops. Accepts NULL. */
void sx_serving_close(struct sx_serving *s);
sx_catalog *sx_serving_catalog(struct sx_serving *s);

/* A validated request of either endpoint, before tenant settings. */
struct sx_api_gen {
    enum sx_gen_kind kind;
    const char *endpoint;  /* "chat.completions" / "completions" */
    const char *model;     /* NULL: the tenant's default */
    json_t *messages;      /* chat (owned): [{"role","content"}] */
    const char *prompt;    /* completions */
    size_t prompt_len;
    bool has_temperature, has_top_p, has_max_tokens;
    struct sx_gen_request req;
    bool stream, include_usage;
    json_t *rag;           /* meta.rag from chat's retrieval (owned), or NULL */
};

/* Replies 400 naming the first field of body that is in refused (and not
 * null: unsupported_parameter) or in neither list (unknown_parameter);
 * also refuses response_format other than text and a non-empty
 * logit_bias. */
int sx_api_check_fields(sx_http_req *r, const json_t *body, const char *const *known,
                        const char *const *refused);

/* Work for the finisher threads, which may block (usage settlement waits
 * for a durable commit) without stalling a backend thread. */
struct sx_serving_task {
    struct sx_serving_task *next;
    void (*run)(struct sx_serving_task *t);
};
void sx_serving_post(struct sx_serving *s, struct sx_serving_task *t);

/* Common field checks. Each replies 400 naming the field and returns
 * SX_EINVAL, or returns 0 with the value stored. */
int sx_api_gen_common(sx_http_req *r, const json_t *body, struct sx_api_gen *g);

/* The rest of the request path once the body is valid: tenant, settings,
 * model, prompt, admission, then the job; replies (now or later) in every
 * case. t is the tenant of the request. */
void sx_api_gen_run(struct sx_app *app, sx_http_req *r, struct sx_tenant *t,
                    struct sx_api_gen *g);

/* Resolves a model name (NULL: the tenant's default) or replies 404 / 503
 * and returns NULL. */
sx_backend *sx_api_model(struct sx_app *app, sx_http_req *r, const struct sx_tenant *t,
                         const char *name);

/* The same, also taking "<base>:<slug>-v<N>", version N of the tenant's own
 * adapter for a base model (*version = N; 0 for a plain model name). The
 * id of another tenant's adapter is an unknown model (404). */
sx_backend *sx_api_model_adapter(struct sx_app *app, sx_http_req *r,
                                 const struct sx_tenant *t, const char *name, int *version);

/* Route tables. */
int sx_api_chat_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_completions_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_embeddings_routes(struct sx_app *app, sx_http_server *srv);
int sx_api_models_routes(struct sx_app *app, sx_http_server *srv);

#endif
