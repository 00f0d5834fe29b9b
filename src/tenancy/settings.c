/* Tenant settings: the fields of the spec's settings object, their types,
 * ranges and defaults. A tenant row stores only the fields an admin set (a
 * JSON object); reading fills in the defaults, and PATCH merges, with null
 * resetting a field to its default. One table below drives checking,
 * parsing and rendering so the three cannot disagree. */
#include "tenancy/internal.h"

#include "base/err.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ftype {
    F_TEXT,   /* short string: no control characters */
    F_PROMPT, /* long string: up to SX_SETTINGS_PROMPT_MAX bytes */
    F_INT,
    F_NUMBER,
    F_BOOL,
    F_RERANK,
    F_TOPICS,
    F_CIDRS,
};

struct field {
    const char *name;
    enum ftype type;
    double lo, hi; /* F_INT, F_NUMBER ranges; F_TEXT length */
};

static const struct field fields[] = {
    {"default_model", F_TEXT, 1, 128},
    {"max_tokens_per_request", F_INT, 1, 1000000},
    {"default_temperature", F_NUMBER, 0, 2},
    {"enable_rerank", F_BOOL, 0, 0},
    {"rerank_tier", F_RERANK, 0, 0},
    {"rerank_k", F_INT, 1, 16},
    {"custom_system_prompt", F_PROMPT, 0, SX_SETTINGS_PROMPT_MAX},
    {"allowed_topics", F_TOPICS, 0, 0},
    {"blocked_topics", F_TOPICS, 0, 0},
    {"enable_rag", F_BOOL, 0, 0},
    {"rag_top_k", F_INT, 1, 50},
    {"rag_threshold", F_NUMBER, 0, 1},
    {"rate_limit_rpm", F_INT, 1, 1000000000},
    {"daily_token_limit", F_INT, 0, 1e15},
    {"enable_training", F_BOOL, 0, 0},
    {"ip_allowlist", F_CIDRS, 0, 0},
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

#define DEFAULT_MODEL "synapsex-chat"
#define DEFAULT_MAX_TOKENS 4096
#define DEFAULT_TEMPERATURE 0.7
#define DEFAULT_RERANK_K 4
#define DEFAULT_RAG_TOP_K 5
#define DEFAULT_RAG_THRESHOLD 0.5

static const struct field *find_field(const char *name)
{
    for (size_t i = 0; i < NFIELDS; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

static bool has_control(const char *s, bool allow_newlines)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && !(allow_newlines && (*p == '\n' || *p == '\t' || *p == '\r'))) ||
            *p == 0x7f)
            return true;
    return false;
}

/* Both topic lists: arrays of at most 64 distinct non-empty short strings. */
static int check_topics(const char *name, const json_t *v, struct sx_fault *f)
{
    size_t i;
    json_t *item;

    if (!json_is_array(v)) {
        sx_fault_set(f, "invalid_type", name, "%s must be an array of strings, e.g. "
                     "[\"orders\", \"products\"]", name);
        return SX_EINVAL;
    }
    if (json_array_size(v) > SX_SETTINGS_TOPICS_MAX) {
        sx_fault_set(f, "too_many_items", name, "%s has %zu items; at most %d are allowed",
                     name, json_array_size(v), SX_SETTINGS_TOPICS_MAX);
        return SX_EINVAL;
    }
    json_array_foreach(v, i, item) {
        const char *s = json_string_value(item);
        size_t len = s ? strlen(s) : 0;

        if (!json_is_string(item) || len == 0 || len > SX_SETTINGS_TOPIC_LEN ||
            has_control(s, false)) {
            sx_fault_set(f, "invalid_value", name, "%s[%zu] must be a non-empty string of at "
                         "most %d bytes without control characters", name, i,
                         SX_SETTINGS_TOPIC_LEN);
            return SX_EINVAL;
        }
    }
    return 0;
}

static int check_cidrs(const char *name, const json_t *v, struct sx_fault *f)
{
    struct sx_cidr c;
    char why[200];
    size_t i;
    json_t *item;

    if (!json_is_array(v)) {
        sx_fault_set(f, "invalid_type", name, "%s must be an array of CIDR blocks, e.g. "
                     "[\"203.0.113.0/24\", \"2001:db8::/32\"]", name);
        return SX_EINVAL;
    }
    if (json_array_size(v) > SX_SETTINGS_ALLOWLIST_MAX) {
        sx_fault_set(f, "too_many_items", name, "%s has %zu entries; at most %d are allowed",
                     name, json_array_size(v), SX_SETTINGS_ALLOWLIST_MAX);
        return SX_EINVAL;
    }
    json_array_foreach(v, i, item) {
        if (!json_is_string(item)) {
            sx_fault_set(f, "invalid_type", name, "%s[%zu] must be a string such as "
                         "\"203.0.113.0/24\"", name, i);
            return SX_EINVAL;
        }
        if (sx_cidr_parse(json_string_value(item), &c, why, sizeof(why)) != 0) {
            sx_fault_set(f, "invalid_value", name, "%s[%zu]: %s", name, i, why);
            return SX_EINVAL;
        }
    }
    return 0;
}

static int check_value(const struct field *fd, const json_t *v, struct sx_fault *f)
{
    const char *n = fd->name;
    double x;

    switch (fd->type) {
    case F_TEXT:
    case F_PROMPT: {
        const char *s = json_string_value(v);
        size_t len = s ? json_string_length(v) : 0;

        if (!json_is_string(v)) {
            sx_fault_set(f, "invalid_type", n, "%s must be a string (or null for the "
                         "default)", n);
            return SX_EINVAL;
        }
        if (len < (size_t)fd->lo || len > (size_t)fd->hi) {
            sx_fault_set(f, "invalid_value", n, "%s must be %d to %d bytes long; it has %zu",
                         n, (int)fd->lo, (int)fd->hi, len);
            return SX_EINVAL;
        }
        if (strlen(s) != len || has_control(s, fd->type == F_PROMPT)) {
            sx_fault_set(f, "invalid_value", n, "%s contains control characters", n);
            return SX_EINVAL;
        }
        return 0;
    }
    case F_INT:
        if (!json_is_integer(v)) {
            sx_fault_set(f, "invalid_type", n, "%s must be an integer from %.0f to %.0f%s", n,
                         fd->lo, fd->hi,
                         strcmp(n, "rate_limit_rpm") == 0 ||
                                 strcmp(n, "daily_token_limit") == 0
                             ? " (or null for the tier's default)"
                             : "");
            return SX_EINVAL;
        }
        x = (double)json_integer_value(v);
        if (x < fd->lo || x > fd->hi) {
            sx_fault_set(f, "out_of_range", n, "%s must be from %.0f to %.0f; got %lld", n,
                         fd->lo, fd->hi, (long long)json_integer_value(v));
            return SX_EINVAL;
        }
        return 0;
    case F_NUMBER:
        if (!json_is_number(v)) {
            sx_fault_set(f, "invalid_type", n, "%s must be a number from %g to %g", n, fd->lo,
                         fd->hi);
            return SX_EINVAL;
        }
        x = json_number_value(v);
        if (!isfinite(x) || x < fd->lo || x > fd->hi) {
            sx_fault_set(f, "out_of_range", n, "%s must be from %g to %g; got %g", n, fd->lo,
                         fd->hi, x);
            return SX_EINVAL;
        }
        return 0;
    case F_BOOL:
        if (!json_is_boolean(v)) {
            sx_fault_set(f, "invalid_type", n, "%s must be true or false", n);
            return SX_EINVAL;
        }
        return 0;
    case F_RERANK: {
        enum sx_rerank_tier t;

        if (!json_is_string(v) || sx_rerank_tier_parse(json_string_value(v), &t) != 0) {
            sx_fault_set(f, "invalid_value", n, "%s must be one of \"classic\", "
                         "\"quantum_cpu\" or \"quantum_gpu\"", n);
            return SX_EINVAL;
        }
        return 0;
    }
    case F_TOPICS:
        return check_topics(n, v, f);
    case F_CIDRS:
        return check_cidrs(n, v, f);
    }
    return SX_EINVAL;
}

int sx_settings_check(const json_t *patch, struct sx_fault *f)
{
    const char *key;
    json_t *v;

    if (!json_is_object(patch)) {
        sx_fault_set(f, "invalid_type", "settings", "settings must be a JSON object");
        return SX_EINVAL;
    }
    json_object_foreach((json_t *)patch, key, v) {
        const struct field *fd = find_field(key);

        if (!fd) {
            sx_fault_set(f, "unknown_field", key,
                         "unknown settings field \"%.60s\"; known fields are default_model, "
                         "max_tokens_per_request, default_temperature, enable_rerank, "
                         "rerank_tier, rerank_k, custom_system_prompt, allowed_topics, "
                         "blocked_topics, enable_rag, rag_top_k, rag_threshold, "
                         "rate_limit_rpm, daily_token_limit, enable_training, ip_allowlist",
                         key);
            return SX_EINVAL;
        }
        if (!json_is_null(v) && check_value(fd, v, f) != 0)
            return SX_EINVAL;
    }
    return 0;
}

json_t *sx_settings_merge(const json_t *stored, const json_t *patch)
{
    json_t *out = stored ? json_deep_copy(stored) : json_object();
    const char *key;
    json_t *v;

    if (!out)
        return NULL;
    json_object_foreach((json_t *)patch, key, v) {
        if (json_is_null(v))
            json_object_del(out, key);
        else
            json_object_set_new(out, key, json_deep_copy(v));
    }
    return out;
}

static char **copy_strings(const json_t *arr, size_t *n)
{
    char **out;
    size_t i;
    json_t *item;

    *n = 0;
    if (!arr || json_array_size(arr) == 0)
        return NULL;
    out = calloc(json_array_size(arr), sizeof(*out));
    if (!out)
        return NULL;
    json_array_foreach(arr, i, item) {
        out[i] = strdup(json_string_value(item));
        if (!out[i])
            break;
        *n = i + 1;
    }
    return out;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void sx_settings_clear(struct sx_settings *s)
{
    if (!s)
        return;
    free(s->default_model);
    free(s->custom_system_prompt);
    free_strings(s->allowed_topics, s->n_allowed_topics);
    free_strings(s->blocked_topics, s->n_blocked_topics);
    free(s->ip_allowlist);
    memset(s, 0, sizeof(*s));
}

static int64_t int_or(const json_t *o, const char *k, int64_t def)
{
    json_t *v = json_object_get(o, k);

    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

static double num_or(const json_t *o, const char *k, double def)
{
    json_t *v = json_object_get(o, k);

    return json_is_number(v) ? json_number_value(v) : def;
}

static bool bool_or(const json_t *o, const char *k, bool def)
{
    json_t *v = json_object_get(o, k);

    return json_is_boolean(v) ? json_is_true(v) : def;
}

int sx_settings_parse(const json_t *o, struct sx_settings *s)
{
    json_t *v;

    memset(s, 0, sizeof(*s));
    v = json_object_get(o, "default_model");
    s->default_model = strdup(json_is_string(v) ? json_string_value(v) : DEFAULT_MODEL);
    s->max_tokens_per_request = int_or(o, "max_tokens_per_request", DEFAULT_MAX_TOKENS);
    s->default_temperature = num_or(o, "default_temperature", DEFAULT_TEMPERATURE);
    s->enable_rerank = bool_or(o, "enable_rerank", false);
    v = json_object_get(o, "rerank_tier");
    if (!json_is_string(v) || sx_rerank_tier_parse(json_string_value(v), &s->rerank_tier))
        s->rerank_tier = SX_RERANK_CLASSIC;
    s->rerank_k = (int)int_or(o, "rerank_k", DEFAULT_RERANK_K);
    v = json_object_get(o, "custom_system_prompt");
    s->custom_system_prompt = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
    s->allowed_topics = copy_strings(json_object_get(o, "allowed_topics"),
                                     &s->n_allowed_topics);
    s->blocked_topics = copy_strings(json_object_get(o, "blocked_topics"),
                                     &s->n_blocked_topics);
    s->enable_rag = bool_or(o, "enable_rag", true);
    s->rag_top_k = (int)int_or(o, "rag_top_k", DEFAULT_RAG_TOP_K);
    s->rag_threshold = num_or(o, "rag_threshold", DEFAULT_RAG_THRESHOLD);
    s->rate_limit_rpm = int_or(o, "rate_limit_rpm", 0);
    s->daily_token_limit = int_or(o, "daily_token_limit", -1);
    v = json_object_get(o, "enable_training");
    s->enable_training = json_is_boolean(v) ? json_is_true(v) : -1;

    v = json_object_get(o, "ip_allowlist");
    if (json_array_size(v) > 0) {
        size_t i;
        json_t *item;
        char why[200];

        s->ip_allowlist = calloc(json_array_size(v), sizeof(*s->ip_allowlist));
        if (!s->ip_allowlist)
            goto nomem;
        json_array_foreach(v, i, item) {
            if (sx_cidr_parse(json_string_value(item), &s->ip_allowlist[i], why,
                              sizeof(why)) != 0) {
                sx_settings_clear(s);
                return SX_EINVAL;
            }
            s->n_ip_allowlist = i + 1;
        }
    }
    if (!s->default_model ||
        (json_is_string(json_object_get(o, "custom_system_prompt")) &&
         !s->custom_system_prompt) ||
        s->n_allowed_topics != json_array_size(json_object_get(o, "allowed_topics")) ||
        s->n_blocked_topics != json_array_size(json_object_get(o, "blocked_topics")))
        goto nomem;
    return 0;

nomem:
    sx_settings_clear(s);
    return SX_ENOMEM;
}

static json_t *strings_json(char **v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

json_t *sx_settings_to_json(const json_t *stored, const struct sx_settings *s)
{
    json_t *allow = json_object_get(stored, "ip_allowlist");
    json_t *o;

    o = json_pack("{s:s, s:I, s:f, s:b, s:s, s:i, s:o, s:o, s:o, s:b, s:i, s:f, s:o, s:o, "
                  "s:o, s:o}",
                  "default_model", s->default_model,
                  "max_tokens_per_request", (json_int_t)s->max_tokens_per_request,
                  "default_temperature", s->default_temperature,
                  "enable_rerank", s->enable_rerank,
                  "rerank_tier", sx_rerank_tier_name(s->rerank_tier),
                  "rerank_k", s->rerank_k,
                  "custom_system_prompt",
                  s->custom_system_prompt ? json_string(s->custom_system_prompt)
                                          : json_null(),
                  "allowed_topics", strings_json(s->allowed_topics, s->n_allowed_topics),
                  "blocked_topics", strings_json(s->blocked_topics, s->n_blocked_topics),
                  "enable_rag", s->enable_rag,
                  "rag_top_k", s->rag_top_k,
                  "rag_threshold", s->rag_threshold,
                  "rate_limit_rpm",
                  s->rate_limit_rpm > 0 ? json_integer(s->rate_limit_rpm) : json_null(),
                  "daily_token_limit",
                  s->daily_token_limit >= 0 ? json_integer(s->daily_token_limit)
                                            : json_null(),
                  "enable_training",
                  s->enable_training >= 0 ? json_boolean(s->enable_training) : json_null(),
                  "ip_allowlist", allow ? json_deep_copy(allow) : json_array());
    return o;
}
