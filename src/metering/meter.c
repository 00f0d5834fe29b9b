/* The metering module's front: opening (migrations, reload of today's use,
 * purge hook), admission with its 429 replies and x-ratelimit-* headers,
 * settlement into the ledger, training jobs and limit-event subscribers.
 * The limits themselves are limiter.c; durability is ledger.c. */
#include "metering/internal.h"

#include "base/config.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR_COUNT 6

struct sx_meter_grant {
    char tenant_id[SX_TENANT_ID_MAX];
    char request_id[96];
    struct meter_limits limits;
    int64_t day, reserved, started_ms;
    int n_hdr;
    char hdr_value[HDR_COUNT][32];
    const char *hdr_name[HDR_COUNT];
};

const char *sx_meter_limit_kind_name(enum sx_meter_limit_kind k)
{
    switch (k) {
    case SX_LIMIT_DAILY_TOKENS:
        return "daily_token_limit";
    case SX_LIMIT_TRIAL_REQUESTS:
        return "trial_request_limit";
    case SX_LIMIT_TRIAL_TOKENS:
        return "trial_token_limit";
    }
    return "unknown";
}

/* ---- open / close -------------------------------------------------------- */

static int purge_tenant(sx_db *db, const char *tenant_id, void *ctx)
{
    static const char *const tables[] = {
        "DELETE FROM usage_events WHERE tenant_id = $1",
        "DELETE FROM usage_daily WHERE tenant_id = $1",
        "DELETE FROM usage_limit_events WHERE tenant_id = $1",
    };

    (void)ctx;
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        int64_t n = sx_db_run(db, tables[i], "t", tenant_id);

        if (n < 0)
            return (int)n;
    }
    return 0;
}

struct preload_ctx {
    sx_meter *m;
    int64_t day;
    int n;
};

static int preload_one(void *ctx, const char *tenant_id, int64_t tokens, int64_t requests)
{
    struct preload_ctx *p = ctx;

    p->n++;
    return p->m->ops->preload(p->m->state, tenant_id, p->day, tokens, requests);
}

sx_meter *sx_meter_open(sx_store *store, sx_tenancy *tn, const struct sx_meter_options *opt,
                        char *err, size_t errlen)
{
    sx_meter *m = calloc(1, sizeof(*m));
    struct preload_ctx pre;
    int rc;

    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->sub_lock, NULL);
    m->store = store;
    m->tenancy = tn;
    m->ops = &sx_limiter_memory;
    m->state = m->ops->open();
    if (!m->state) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    /* 1. Tables, then the ledger's connection and thread. */
    m->ledger = sx_ledger_open(m, store, opt ? opt->ledger_sync : SX_LEDGER_SYNC_FULL,
                               opt ? opt->journal_dir : NULL, err, errlen);
    if (!m->ledger)
        goto fail;

    /* 2. Today's quota use survives restarts: seed it from the rollups. */
    pre = (struct preload_ctx){m, sx_time_now_ms() / MS_PER_DAY, 0};
    rc = sx_ledger_load_day(m->ledger, pre.day, preload_one, &pre);
    if (rc) {
        snprintf(err, errlen, "loading today's usage from the ledger failed: %s",
                 sx_strerror(rc));
        goto fail;
    }

    /* 3. Deleting a tenant deletes its usage. */
    if (tn && sx_tenancy_on_purge(tn, "metering", purge_tenant, m)) {
        snprintf(err, errlen, "cannot register the metering purge hook");
        goto fail;
    }
    SX_INFO("metering", "limiter %s ready; today's usage of %d tenant(s) reloaded",
            m->ops->name, pre.n);
    return m;

fail:
    sx_meter_close(m);
    return NULL;
}

bool sx_meter_idle_work(void *meter)
{
    return sx_ledger_step(((sx_meter *)meter)->ledger);
}

void sx_meter_close(sx_meter *m)
{
    if (!m)
        return;
    sx_ledger_close(m->ledger);
    if (m->state)
        m->ops->close(m->state);
    pthread_mutex_destroy(&m->sub_lock);
    free(m);
}

/* ---- subscribers --------------------------------------------------------- */

int sx_meter_subscribe(sx_meter *m, sx_meter_limit_fn fn, void *ctx)
{
    int rc = 0;

    pthread_mutex_lock(&m->sub_lock);
    if (m->n_subs >= METER_MAX_SUBSCRIBERS) {
        rc = SX_ELIMIT;
    } else {
        m->subs[m->n_subs].fn = fn;
        m->subs[m->n_subs].ctx = ctx;
        m->n_subs++;
    }
    pthread_mutex_unlock(&m->sub_lock);
    return rc;
}

void sx_meter_publish(sx_meter *m, const struct sx_meter_limit_event *ev)
{
    int n;

    pthread_mutex_lock(&m->sub_lock);
    n = m->n_subs;
    pthread_mutex_unlock(&m->sub_lock);
    for (int i = 0; i < n; i++)
        m->subs[i].fn(ev, m->subs[i].ctx);
}

/* Queues the limit events whose bits are set in reached. */
static void report_reached(sx_meter *m, const char *tenant_id, const struct meter_limits *l,
                           unsigned reached, int64_t day, int64_t used)
{
    if (reached & REACHED_TOKENS)
        sx_ledger_limit_event(m->ledger, tenant_id, SX_LIMIT_DAILY_TOKENS, day,
                              l->tokens_per_day, used);
    if (reached & REACHED_TRIAL_TOKENS)
        sx_ledger_limit_event(m->ledger, tenant_id, SX_LIMIT_TRIAL_TOKENS, day,
                              l->tokens_per_day, used);
    if (reached & REACHED_TRIAL_REQUESTS)
        sx_ledger_limit_event(m->ledger, tenant_id, SX_LIMIT_TRIAL_REQUESTS, day,
                              l->requests_per_day, used);
}

/* ---- admission ----------------------------------------------------------- */

static void add_header(struct sx_meter_grant *g, const char *name, long long v)
{
    _Static_assert(sizeof(g->hdr_value[0]) >= SX_JSON_INT_MAX, "a header holds any count");
    g->hdr_name[g->n_hdr] = name;
    sx_json_format_int(g->hdr_value[g->n_hdr], v);
    g->n_hdr++;
}

static void add_duration(struct sx_meter_grant *g, const char *name, int64_t ms)
{
    g->hdr_name[g->n_hdr] = name;
    sx_meter_format_duration(ms, g->hdr_value[g->n_hdr], sizeof(g->hdr_value[0]));
    g->n_hdr++;
}

/* The x-ratelimit-* values of a decision. Token headers are left out for
 * tenants without a token limit. */
static void fill_headers(struct sx_meter_grant *g, const struct meter_limits *l,
                         const struct admit_result *res, int64_t wall_ms)
{
    g->n_hdr = 0;
    add_header(g, "x-ratelimit-limit-requests", (long long)l->rpm);
    add_header(g, "x-ratelimit-remaining-requests", (long long)res->remaining_requests);
    add_duration(g, "x-ratelimit-reset-requests", (res->reset_requests_ns + 999999) / 1000000);
    if (l->tokens_per_day >= 0) {
        add_header(g, "x-ratelimit-limit-tokens", (long long)l->tokens_per_day);
        add_header(g, "x-ratelimit-remaining-tokens", (long long)res->remaining_tokens);
        add_duration(g, "x-ratelimit-reset-tokens", MS_PER_DAY - wall_ms % MS_PER_DAY);
    }
}

/* sx_meter_admit_core, or with take false only its verdict (a grant that
 * reserves nothing comes back on success; free it). */
static int admit_core(sx_meter *m, const char *tenant_id, const struct meter_limits *l,
                      const char *request_id, int64_t prompt_tokens, int64_t max_tokens,
                      bool take, int64_t mono_ns, int64_t wall_ms, struct admit_result *res,
                      struct sx_meter_grant **out)
{
    struct sx_meter_grant *g;
    int64_t need;
    int rc;

    *out = NULL;
    memset(res, 0, sizeof(*res));
    if (prompt_tokens < 0 || max_tokens < 0 || prompt_tokens > INT64_MAX / 2 ||
        max_tokens > INT64_MAX / 2 || !tenant_id || strlen(tenant_id) >= SX_TENANT_ID_MAX ||
        (request_id && strlen(request_id) >= sizeof(g->request_id)))
        return SX_EINVAL;
    need = prompt_tokens + max_tokens;
    g = calloc(1, sizeof(*g));
    if (!g)
        return SX_ENOMEM;

    rc = m->ops->admit(m->state, tenant_id, l, need, take, mono_ns, wall_ms, res);
    if (rc) {
        free(g);
        return rc;
    }
    fill_headers(g, l, res, res->at_ms);
    if (res->verdict != METER_OK) {
        report_reached(m, tenant_id, l, res->reached, res->day,
                       res->verdict == METER_TRIAL_REQUESTS ? res->requests_today
                                                            : res->used_tokens);
        *out = g; /* the caller replies with the headers, then frees */
        return SX_ELIMIT;
    }
    snprintf(g->tenant_id, sizeof(g->tenant_id), "%s", tenant_id);
    snprintf(g->request_id, sizeof(g->request_id), "%s", request_id ? request_id : "");
    g->limits = *l;
    g->day = res->day;
    g->reserved = need;
    g->started_ms = res->at_ms; /* the decision's time, as GCRA saw it */
    *out = g;
    return 0;
}

int sx_meter_admit_core(sx_meter *m, const char *tenant_id, const struct meter_limits *l,
                        const char *request_id, int64_t prompt_tokens, int64_t max_tokens,
                        int64_t mono_ns, int64_t wall_ms, struct admit_result *res,
                        struct sx_meter_grant **out)
{
    return admit_core(m, tenant_id, l, request_id, prompt_tokens, max_tokens, true, mono_ns,
                      wall_ms, res, out);
}

static void reply_refusal(sx_http_req *r, const struct sx_meter_grant *g,
                          const struct meter_limits *l, const struct admit_result *res,
                          int64_t need)
{
    char retry[32];
    int64_t secs = (res->retry_after_ns + 999999999LL) / 1000000000LL;

    if (secs < 1)
        secs = 1;
    snprintf(retry, sizeof(retry), "%lld", (long long)secs);
    sx_http_set_header(r, "Retry-After", retry);
    for (int i = 0; i < g->n_hdr; i++)
        sx_http_set_header(r, g->hdr_name[i], g->hdr_value[i]);

    switch (res->verdict) {
    case METER_RATE:
        sx_http_reply_error(r, 429, "rate_limit_exceeded", NULL,
                            "rate limit reached: this tenant may make %lld requests per "
                            "minute; retry after %lld s",
                            (long long)l->rpm, (long long)secs);
        break;
    case METER_TRIAL_REQUESTS:
        sx_http_reply_error(r, 429, "trial_request_limit_exceeded", NULL,
                            "trial request limit reached: %lld requests per UTC day are "
                            "allowed and %lld were made today; the limit resets at 00:00 "
                            "UTC (in %lld s)",
                            (long long)l->requests_per_day, (long long)res->requests_today,
                            (long long)secs);
        break;
    case METER_TOKENS:
    default:
        if (need > l->tokens_per_day)
            sx_http_reply_error(r, 429,
                                l->trial ? "trial_token_limit_exceeded"
                                         : "daily_token_limit_exceeded",
                                NULL,
                                "this request needs %lld tokens (prompt + max_tokens), more "
                                "than the daily limit of %lld; lower max_tokens or shorten "
                                "the prompt",
                                (long long)need, (long long)l->tokens_per_day);
        else
            sx_http_reply_error(r, 429,
                                l->trial ? "trial_token_limit_exceeded"
                                         : "daily_token_limit_exceeded",
                                NULL,
                                "%s token limit reached: this request needs %lld tokens "
                                "(prompt + max_tokens) and %lld of today's %lld remain (%lld "
                                "used, %lld reserved by requests in flight); lower "
                                "max_tokens or retry after %lld s",
                                l->trial ? "trial" : "daily", (long long)need,
                                (long long)res->remaining_tokens, (long long)l->tokens_per_day,
                                (long long)res->used_tokens, (long long)res->reserved_tokens,
                                (long long)secs);
        break;
    }
}

static int admit_http(sx_meter *m, sx_http_req *r, const struct sx_tenant *t,
                      int64_t prompt_tokens, int64_t max_tokens, bool take,
                      struct sx_meter_grant **out)
{
    struct sx_tenant_limits tl;
    struct meter_limits l;
    struct admit_result res;
    struct sx_meter_grant *g = NULL;
    int rc;

    *out = NULL;
    if (!m->tenancy) {
        sx_http_reply_error(r, 500, "internal_error", NULL,
                            "metering is not connected to tenancy (request id %s)",
                            sx_http_request_id(r));
        return SX_EINVAL;
    }
    sx_tenant_limits(m->tenancy, t, &tl);
    l.rpm = tl.requests_per_minute > 0 ? tl.requests_per_minute : 1;
    l.tokens_per_day = tl.tokens_per_day;
    l.requests_per_day = tl.requests_per_day;
    l.trial = t->tier == SX_TIER_TRIAL;

    rc = admit_core(m, t->id, &l, sx_http_request_id(r), prompt_tokens, max_tokens, take, -1,
                    -1, &res, &g);
    if (rc == SX_ELIMIT) {
        reply_refusal(r, g, &l, &res, prompt_tokens + max_tokens);
        free(g);
        return rc;
    }
    if (rc) {
        SX_ERROR("metering", "admission of a request of tenant %s failed: %s", t->id,
                 sx_strerror(rc));
        sx_http_reply_error(r, 500, "internal_error", NULL,
                            "the server failed to meter the request (request id %s)",
                            sx_http_request_id(r));
        return rc;
    }
    /* The headers of an admission; a check leaves them to the admission
     * that follows. */
    for (int i = 0; take && i < g->n_hdr; i++)
        sx_http_set_header(r, g->hdr_name[i], g->hdr_value[i]);
    *out = g;
    return 0;
}

int sx_meter_admit(sx_meter *m, sx_http_req *r, const struct sx_tenant *t,
                   int64_t prompt_tokens, int64_t max_tokens, struct sx_meter_grant **out)
{
    return admit_http(m, r, t, prompt_tokens, max_tokens, true, out);
}

int sx_meter_check(sx_meter *m, sx_http_req *r, const struct sx_tenant *t)
{
    struct sx_meter_grant *g = NULL;
    int rc = admit_http(m, r, t, 0, 1, false, &g); /* any request needs a token */

    free(g);
    return rc;
}

int sx_meter_headers(const struct sx_meter_grant *g,
                     void (*set)(void *ctx, const char *name, const char *value), void *ctx)
{
    for (int i = 0; i < g->n_hdr; i++)
        set(ctx, g->hdr_name[i], g->hdr_value[i]);
    return g->n_hdr;
}

/* ---- settlement ---------------------------------------------------------- */

/* Both settlements: durable NULL waits for the ledger, else it is told. */
static int settle(sx_meter *m, struct sx_meter_grant *g, const struct sx_usage_event *ev,
                  int64_t wall_ms, sx_meter_settled_fn durable, void *ctx)
{
    struct ledger_row row = {0};
    unsigned reached;
    int64_t used, used_after;
    int rc;

    if (!g)
        return SX_EINVAL;
    if (!ev || ev->prompt_tokens < 0 || ev->completion_tokens < 0 || ev->rerank_calls < 0 ||
        ev->quantum_rerank_calls < 0) {
        sx_meter_release(m, g);
        return SX_EINVAL;
    }
    used = ev->prompt_tokens + ev->completion_tokens;

    /* 1. The quota: the real count replaces the reservation. */
    reached = m->ops->settle(m->state, g->tenant_id, &g->limits, g->day, g->reserved, used,
                             false, &used_after);
    report_reached(m, g->tenant_id, &g->limits, reached, g->day, used_after);

    /* 2. The ledger, durably, billed to the day of admission. */
    row.request_id = g->request_id;
    row.tenant_id = g->tenant_id;
    row.endpoint = ev->endpoint ? ev->endpoint : "unknown";
    row.model = ev->model;
    row.status = ev->status ? ev->status : "ok";
    row.day = g->day;
    row.started_ms = g->started_ms;
    row.finished_ms = wall_ms;
    row.prompt_tokens = ev->prompt_tokens;
    row.completion_tokens = ev->completion_tokens;
    row.rerank_calls = ev->rerank_calls;
    row.quantum_rerank_calls = ev->quantum_rerank_calls;
    rc = durable ? sx_ledger_append_then(m->ledger, &row, durable, ctx)
                 : sx_ledger_append(m->ledger, &row);
    free(g);
    return rc;
}

int sx_meter_settle_at(sx_meter *m, struct sx_meter_grant *g, const struct sx_usage_event *ev,
                       int64_t wall_ms)
{
    return settle(m, g, ev, wall_ms, NULL, NULL);
}

int sx_meter_settle(sx_meter *m, struct sx_meter_grant *g, const struct sx_usage_event *ev)
{
    return settle(m, g, ev, sx_time_now_ms(), NULL, NULL);
}

int sx_meter_settle_then(sx_meter *m, struct sx_meter_grant *g,
                         const struct sx_usage_event *ev, sx_meter_settled_fn settled,
                         void *ctx)
{
    if (!settled)
        return SX_EINVAL;
    return settle(m, g, ev, sx_time_now_ms(), settled, ctx);
}

void sx_meter_release(sx_meter *m, struct sx_meter_grant *g)
{
    int64_t used_after;

    if (!g)
        return;
    m->ops->settle(m->state, g->tenant_id, &g->limits, g->day, g->reserved, 0, true,
                   &used_after);
    free(g);
}

int sx_meter_record_training_job(sx_meter *m, const char *tenant_id, const char *job_id)
{
    struct ledger_row row = {0};
    char rid[96];
    int64_t now = sx_time_now_ms();

    if (!tenant_id || !job_id || !*job_id || strlen(job_id) > 80)
        return SX_EINVAL;
    snprintf(rid, sizeof(rid), "train:%s", job_id);
    row.request_id = rid;
    row.tenant_id = tenant_id;
    row.endpoint = "training";
    row.status = "ok";
    row.day = now / MS_PER_DAY;
    row.started_ms = now;
    row.finished_ms = now;
    row.training_jobs = 1;
    return sx_ledger_append(m->ledger, &row);
}
