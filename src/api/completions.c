/* POST /v1/completions: OpenAI's legacy text completions. The prompt is one
 * string (or an array of exactly one string: one choice per request);
 * sampling, stop and streaming behave as for chat, through serving.c. */
#include "api/serving.h"

#include "base/err.h"

#include <string.h>

static const char *const fields[] = {
    "model", "prompt", "temperature", "top_p", "max_tokens", "stop", "seed", "n",
    "presence_penalty", "frequency_penalty", "stream", "stream_options", "user",
    "metadata", "logit_bias", NULL};

static const char *const unsupported[] = {"suffix", "echo", "best_of", "logprobs", NULL};

static int parse_prompt(sx_http_req *r, const json_t *body, struct sx_api_gen *g)
{
    json_t *p = json_object_get(body, "prompt");

    if (json_is_array(p) && json_array_size(p) == 1)
        p = json_array_get(p, 0);
    if (!json_is_string(p) || json_string_length(p) == 0) {
        sx_http_reply_error(r, 400, "invalid_value", "prompt",
                            "prompt must be a non-empty string (or an array holding one); "
                            "token arrays and batches are not supported");
        return SX_EINVAL;
    }
    g->prompt = json_string_value(p);
    g->prompt_len = json_string_length(p);
    return 0;
}

static void h_completions(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_api_gen g = {.kind = SX_GEN_COMPLETION, .endpoint = "completions"};
    struct sx_principal p;
    struct sx_tenant *t = NULL;
    json_t *body;

    if (sx_api_request_tenant(app, r, &p, &t))
        return;
    body = sx_http_json_object(r);
    if (body && sx_api_check_fields(r, body, fields, unsupported) == 0 &&
        sx_api_gen_common(r, body, &g) == 0 && parse_prompt(r, body, &g) == 0)
        sx_api_gen_run(app, r, t, &g);
    sx_tenant_unref(t);
}

int sx_api_completions_routes(struct sx_app *app, sx_http_server *srv)
{
    return sx_http_route(srv, "POST", "/v1/completions", h_completions, app);
}
