/* POST /v1/chat/completions: the OpenAI chat body checked field by field
 * (messages, sampling, stop, stream options), fields that would change
 * the result but are not served refused by name, then the shared request
 * path of serving.c. */
#include "api/serving.h"
#include "rag/rag.h"

#include "base/err.h"
#include "base/json.h"

#include <string.h>

/* Served, or harmless to accept (metadata, store, service_tier). */
static const char *const chat_fields[] = {
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "n", "presence_penalty", "frequency_penalty", "logprobs",
    "top_logprobs", "stream", "stream_options", "user", "metadata", "store",
    "service_tier", "parallel_tool_calls", "use_rerank", "rerank_k", "response_format",
    "logit_bias", NULL};

/* Would change the result, and are not served. */
static const char *const unsupported[] = {
    "tools", "tool_choice", "functions", "function_call", "audio", "modalities",
    "prediction", "web_search_options", "reasoning_effort", "verbosity", NULL};

int sx_api_check_fields(sx_http_req *r, const json_t *body, const char *const *known,
                        const char *const *refused)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)body, key, v) {
        bool is_refused = sx_json_name_in(key, refused);

        if (is_refused && !json_is_null(v)) {
            sx_http_reply_error(r, 400, "unsupported_parameter", key,
                                "%s is not supported by this server; remove it from "
                                "the request", key);
            return SX_EINVAL;
        }
        if (!is_refused && !sx_json_name_in(key, known)) {
            sx_http_reply_error(r, 400, "unknown_parameter", key,
                                "Unrecognized request argument supplied: %.60s", key);
            return SX_EINVAL;
        }
    }

    /* Accepted only in their neutral form. */
    v = json_object_get(body, "response_format");
    if (v && !json_is_null(v)) {
        json_t *type = json_object_get(v, "type");

        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0) {
            sx_http_reply_error(r, 400, "unsupported_parameter", "response_format",
                                "response_format is supported only as {\"type\": \"text\"}; "
                                "JSON modes are not served");
            return SX_EINVAL;
        }
    }
    v = json_object_get(body, "logit_bias");
    if (v && !json_is_null(v) && !(json_is_object(v) && json_object_size(v) == 0)) {
        sx_http_reply_error(r, 400, "unsupported_parameter", "logit_bias",
                            "logit_bias is not supported by this server; remove it");
        return SX_EINVAL;
    }
    return 0;
}

/* Content as one string: a string, or an array of text parts joined. */
static json_t *message_text(sx_http_req *r, json_t *content, size_t i)
{
    char param[96];
    size_t j;
    json_t *part;
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    if (json_is_string(content))
        return json_incref(content);
    snprintf(param, sizeof(param), "messages[%zu].content", i);
    if (!json_is_array(content)) {
        sx_http_reply_error(r, 400, "invalid_value", param,
                            "%s must be a string or an array of text parts", param);
        return NULL;
    }
    f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    json_array_foreach(content, j, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");

        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
            !json_is_string(text)) {
            fclose(f);
            free(buf);
            snprintf(param, sizeof(param), "messages[%zu].content[%zu].type", i, j);
            sx_http_reply_error(r, 400, "unsupported_content", param,
                                "%s: only {\"type\": \"text\", \"text\": ...} parts are "
                                "supported (no images or audio)", param);
            return NULL;
        }
        fwrite(json_string_value(text), 1, json_string_length(text), f);
    }
    fclose(f);
    content = json_stringn(buf ? buf : "", len);
    free(buf);
    return content;
}

static int parse_messages(sx_http_req *r, const json_t *body, struct sx_api_gen *g)
{
    json_t *msgs = json_object_get(body, "messages"), *m;
    size_t i;

    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        sx_http_reply_error(r, 400, "invalid_value", "messages",
                            "messages must be a non-empty array of {\"role\", \"content\"} "
                            "objects");
        return SX_EINVAL;
    }
    g->messages = json_array();
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role"), *text;
        const char *rs = json_string_value(role);
        char param[48];

        snprintf(param, sizeof(param), "messages[%zu].role", i);
        if (!json_is_object(m) || !rs) {
            sx_http_reply_error(r, 400, "invalid_value", param,
                                "%s must be system, user or assistant", param);
            return SX_EINVAL;
        }
        if (strcmp(rs, "tool") == 0 || strcmp(rs, "function") == 0 ||
            json_object_get(m, "tool_calls") || json_object_get(m, "function_call")) {
            sx_http_reply_error(r, 400, "unsupported_parameter", param,
                                "%s: tool and function messages are not supported by this "
                                "server", param);
            return SX_EINVAL;
        }
        if (strcmp(rs, "developer") == 0)
            rs = "system";
        if (strcmp(rs, "system") != 0 && strcmp(rs, "user") != 0 &&
            strcmp(rs, "assistant") != 0) {
            sx_http_reply_error(r, 400, "invalid_value", param,
                                "%s must be system, developer, user or assistant, not "
                                "'%.40s'", param, rs);
            return SX_EINVAL;
        }
        text = message_text(r, json_object_get(m, "content"), i);
        if (!text) {
            if (!sx_http_replied(r))
                sx_http_reply_error(r, 500, NULL, NULL, "out of memory");
            return SX_EINVAL;
        }
        json_array_append_new(g->messages, json_pack("{s:s,s:o}", "role", rs, "content", text));
    }
    return 0;
}

static int parse_logprobs(sx_http_req *r, const json_t *body, struct sx_api_gen *g)
{
    json_t *lp = json_object_get(body, "logprobs"), *top = json_object_get(body, "top_logprobs");

    if (lp && !json_is_null(lp) && !json_is_boolean(lp)) {
        sx_http_reply_error(r, 400, "invalid_value", "logprobs",
                            "logprobs must be true or false");
        return SX_EINVAL;
    }
    g->req.logprobs = json_is_true(lp);
    if (top && !json_is_null(top)) {
        if (!json_is_integer(top) || json_integer_value(top) < 0 ||
            json_integer_value(top) > 20) {
            sx_http_reply_error(r, 400, "invalid_value", "top_logprobs",
                                "top_logprobs must be an integer from 0 to 20");
            return SX_EINVAL;
        }
        if (!g->req.logprobs) {
            sx_http_reply_error(r, 400, "invalid_value", "top_logprobs",
                                "top_logprobs needs logprobs set to true");
            return SX_EINVAL;
        }
        g->req.top_logprobs = (int)json_integer_value(top);
    }
    return 0;
}

static void h_chat(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_api_gen g = {.kind = SX_GEN_CHAT, .endpoint = "chat.completions"};
    struct sx_principal p;
    struct sx_tenant *t = NULL;
    json_t *body;

    if (sx_api_request_tenant(app, r, &p, &t))
        return;
    body = sx_http_json_object(r);
    if (!body || sx_api_check_fields(r, body, chat_fields, unsupported) != 0 ||
        sx_api_gen_common(r, body, &g) != 0 || parse_messages(r, body, &g) != 0 ||
        parse_logprobs(r, body, &g) != 0)
        goto out;

    /* RAG context joins the messages before the prompt is counted, so
     * admission comes after retrieval; a tenant that admission would refuse
     * whatever the request's size is refused first, before that work. */
    if (t->settings.enable_rag && sx_meter_check(app->meter, r, t) != 0)
        goto out;
    if (sx_rag_augment_messages(app->rag, t, g.messages, &g.rag) != 0)
        sx_http_reply_error(r, 500, NULL, NULL, "out of memory");
    else
        sx_api_gen_run(app, r, t, &g);
out:
    json_decref(g.messages);
    json_decref(g.rag);
    sx_tenant_unref(t);
}

int sx_api_chat_routes(struct sx_app *app, sx_http_server *srv)
{
    return sx_http_route(srv, "POST", "/v1/chat/completions", h_chat, app);
}
