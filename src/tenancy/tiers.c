/* Tiers: the default limits and features of free, pro, business,
 * enterprise and trial tenants (DESIGN.md section 3), and the effective
 * limits of one tenant once an admin's settings have raised them. */
#include "tenancy/internal.h"

#include "base/err.h"

#include <string.h>

static const char *const tier_names[SX_TIER_COUNT] = {
    "free", "pro", "business", "enterprise", "trial",
};
static const char *const rerank_names[] = {"classic", "quantum_cpu", "quantum_gpu"};

const char *sx_tier_name(enum sx_tier t)
{
    return (unsigned)t < SX_TIER_COUNT ? tier_names[t] : "unknown";
}

int sx_tier_parse(const char *s, enum sx_tier *out)
{
    for (int i = 0; i < SX_TIER_COUNT; i++)
        if (strcmp(s, tier_names[i]) == 0) {
            *out = (enum sx_tier)i;
            return 0;
        }
    return SX_EINVAL;
}

const char *sx_rerank_tier_name(enum sx_rerank_tier t)
{
    return (unsigned)t <= SX_RERANK_QUANTUM_GPU ? rerank_names[t] : "unknown";
}

int sx_rerank_tier_parse(const char *s, enum sx_rerank_tier *out)
{
    for (int i = 0; i <= SX_RERANK_QUANTUM_GPU; i++)
        if (strcmp(s, rerank_names[i]) == 0) {
            *out = (enum sx_rerank_tier)i;
            return 0;
        }
    return SX_EINVAL;
}

const char *sx_key_kind_name(enum sx_key_kind k)
{
    switch (k) {
    case SX_KEY_ADMIN:
        return "admin";
    case SX_KEY_PLATFORM:
        return "platform";
    case SX_KEY_TENANT:
        return "tenant";
    }
    return "unknown";
}

/* Enterprise limits are "custom": set per tenant in its settings. Without a
 * setting an enterprise tenant gets 1,000 requests/min and no token cap. */
void sx_tiers_init(struct tier_info t[SX_TIER_COUNT])
{
    t[SX_TIER_FREE] = (struct tier_info){20, 10000, -1, SX_RERANK_CLASSIC, false, false};
    t[SX_TIER_PRO] =
        (struct tier_info){100, 100000, -1, SX_RERANK_QUANTUM_CPU, false, false};
    t[SX_TIER_BUSINESS] =
        (struct tier_info){500, 1000000, -1, SX_RERANK_QUANTUM_CPU, true, false};
    t[SX_TIER_ENTERPRISE] =
        (struct tier_info){1000, -1, -1, SX_RERANK_QUANTUM_GPU, true, true};
    t[SX_TIER_TRIAL] = (struct tier_info){20, 10000, 100, SX_RERANK_CLASSIC, false, false};
}

void sx_tenancy_set_trial_limits(sx_tenancy *tn, int64_t requests_per_day,
                                 int64_t tokens_per_day, enum sx_rerank_tier rerank,
                                 bool training)
{
    pthread_mutex_lock(&tn->lock);
    tn->tiers[SX_TIER_TRIAL].requests_per_day = requests_per_day;
    tn->tiers[SX_TIER_TRIAL].tokens_per_day = tokens_per_day;
    tn->tiers[SX_TIER_TRIAL].rerank = rerank;
    tn->tiers[SX_TIER_TRIAL].training = training;
    pthread_mutex_unlock(&tn->lock);
}

void sx_tenant_limits(sx_tenancy *tn, const struct sx_tenant *t, struct sx_tenant_limits *out)
{
    const struct sx_settings *s = &t->settings;
    struct tier_info ti;

    pthread_mutex_lock(&tn->lock);
    ti = tn->tiers[t->tier];
    pthread_mutex_unlock(&tn->lock);

    /* Settings an admin wrote override the tier; a rerank tier or an
     * allowlist set above the tier's own is a grant. */
    out->requests_per_minute = s->rate_limit_rpm > 0 ? s->rate_limit_rpm : ti.rpm;
    out->tokens_per_day = s->daily_token_limit >= 0 ? s->daily_token_limit : ti.tokens_per_day;
    out->requests_per_day = ti.requests_per_day;
    out->max_tokens_per_request = s->max_tokens_per_request;
    out->max_rerank_tier = s->rerank_tier > ti.rerank ? s->rerank_tier : ti.rerank;
    out->training = s->enable_training >= 0 ? s->enable_training == 1 : ti.training;
    out->ip_allowlist = s->n_ip_allowlist > 0;
}

static json_t *limit_or_null(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

json_t *sx_tenant_limits_to_json(const struct sx_tenant_limits *l)
{
    json_t *tiers = json_array();

    for (int i = 0; i <= (int)l->max_rerank_tier; i++)
        json_array_append_new(tiers, json_string(rerank_names[i]));
    return json_pack("{s:I, s:o, s:o, s:I, s:o, s:b, s:b}",
                     "requests_per_minute", (json_int_t)l->requests_per_minute,
                     "tokens_per_day", limit_or_null(l->tokens_per_day),
                     "requests_per_day", limit_or_null(l->requests_per_day),
                     "max_tokens_per_request", (json_int_t)l->max_tokens_per_request,
                     "rerank_tiers", tiers,
                     "training", l->training,
                     "ip_allowlist", l->ip_allowlist);
}
