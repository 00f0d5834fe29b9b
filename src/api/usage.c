/* The usage API: GET /v1/tenants/{t}/usage?period= (admin, or the tenant's
 * own key), GET /v1/tenants/{t}/usage/daily?from=&to= (same) and
 * GET /v1/admin/usage/tenants?period=&sort= (admin). Numbers come from the
 * metering module's daily rollups; days are UTC days. */
#include "api/api.h"

#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <stdlib.h>
#include <string.h>

#define DAILY_MAX_DAYS 366
#define PERIOD_FORMS "current_month, previous_month, today or a month as YYYY-MM (e.g. 2024-01)"

static int64_t today(void)
{
    return sx_time_now_s() / 86400;
}

static void day_string(int64_t day, char out[SX_TIME_DATE_LEN + 1])
{
    sx_time_format_date(day * 86400, out);
}

/* Adds the totals' fields to obj. */
static void put_totals(json_t *obj, const struct sx_usage_totals *u)
{
    json_object_set_new(obj, "requests", json_integer(u->requests));
    json_object_set_new(obj, "tokens", json_integer(u->tokens));
    json_object_set_new(obj, "prompt_tokens", json_integer(u->prompt_tokens));
    json_object_set_new(obj, "completion_tokens", json_integer(u->completion_tokens));
    json_object_set_new(obj, "rerank_calls", json_integer(u->rerank_calls));
    json_object_set_new(obj, "quantum_rerank_calls", json_integer(u->quantum_rerank_calls));
    json_object_set_new(obj, "training_jobs", json_integer(u->training_jobs));
}

/* Reads ?period= (default current_month). Replies 400 on a bad one. */
static int query_period(sx_http_req *r, struct sx_usage_span *span, const char **name)
{
    const char *p = sx_http_query(r, "period");

    *name = p ? p : "current_month";
    if (sx_usage_period_parse(*name, today(), span)) {
        sx_http_reply_error(r, 400, "invalid_period", "period",
                            "period \"%.40s\" is not valid; period must be %s", *name,
                            PERIOD_FORMS);
        return SX_EINVAL;
    }
    return 0;
}

static void put_span(json_t *obj, const struct sx_usage_span *span)
{
    char from[SX_TIME_DATE_LEN + 1], to[SX_TIME_DATE_LEN + 1];

    day_string(span->from_day, from);
    day_string(span->to_day, to);
    json_object_set_new(obj, "from", json_string(from));
    json_object_set_new(obj, "to", json_string(to));
}

/* ---- GET /v1/tenants/{t}/usage ------------------------------------------ */

static void get_usage(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    struct sx_usage_span span;
    struct sx_usage_totals u;
    const char *period;
    json_t *body;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    if (query_period(r, &span, &period))
        goto out;
    rc = sx_meter_usage(app->meter, t->id, &span, &u);
    if (rc) {
        sx_api_reply_rc(r, rc, NULL, NULL);
        goto out;
    }
    body = json_pack("{s:s, s:s, s:s}", "object", "usage", "tenant_id", t->id, "period",
                     period);
    put_span(body, &span);
    put_totals(body, &u);
    sx_http_reply_json(r, 200, body);
out:
    sx_tenant_unref(t);
}

/* ---- GET /v1/tenants/{t}/usage/daily ------------------------------------ */

static int query_date(sx_http_req *r, const char *name, int64_t *day, int *given)
{
    const char *s = sx_http_query(r, name);
    int64_t unix_s;

    *given = s != NULL;
    if (!s)
        return 0;
    if (sx_time_parse_date(s, &unix_s)) {
        sx_http_reply_error(r, 400, "invalid_date", name,
                            "%s \"%.40s\" is not a date; %s must be a UTC date as YYYY-MM-DD "
                            "(e.g. 2024-01-31)",
                            name, s, name);
        return SX_EINVAL;
    }
    *day = unix_s / 86400;
    return 0;
}

/* The daily span: from and to (inclusive); a missing from is the first day
 * of to's month, a missing to the last day of from's month, neither the
 * current month. Replies 400 on bad input. */
static int daily_span(sx_http_req *r, struct sx_usage_span *span)
{
    struct sx_usage_span month;
    int64_t from = 0, to = 0;
    int has_from, has_to;

    if (query_date(r, "from", &from, &has_from) || query_date(r, "to", &to, &has_to))
        return SX_EINVAL;
    if (!has_from || !has_to) {
        char m[8], d[SX_TIME_DATE_LEN + 1];

        day_string(has_from ? from : has_to ? to : today(), d);
        memcpy(m, d, 7);
        m[7] = 0;
        sx_usage_period_parse(m, today(), &month);
        from = has_from ? from : month.from_day;
        to = has_to ? to : month.to_day;
    }
    if (to < from) {
        sx_http_reply_error(r, 400, "invalid_range", "to",
                            "to must not be before from; give from=YYYY-MM-DD and "
                            "to=YYYY-MM-DD with from <= to");
        return SX_EINVAL;
    }
    if (to - from + 1 > DAILY_MAX_DAYS) {
        sx_http_reply_error(r, 400, "invalid_range", "to",
                            "the range from..to spans %lld days; to may be at most %d days "
                            "after from (inclusive), so ask for longer spans in parts",
                            (long long)(to - from + 1), DAILY_MAX_DAYS);
        return SX_EINVAL;
    }
    span->from_day = from;
    span->to_day = to;
    return 0;
}

static void get_usage_daily(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_tenant *t;
    struct sx_usage_span span;
    struct sx_usage_totals *days = NULL;
    int64_t n;
    json_t *body, *arr;
    int rc;

    if (sx_api_path_tenant(app, r, true, &p, &t))
        return;
    if (daily_span(r, &span))
        goto out;
    n = span.to_day - span.from_day + 1;
    days = calloc((size_t)n, sizeof(*days));
    rc = days ? sx_meter_usage_daily(app->meter, t->id, &span, days, n) : SX_ENOMEM;
    if (rc) {
        sx_api_reply_rc(r, rc, NULL, NULL);
        goto out;
    }
    arr = json_array();
    for (int64_t i = 0; i < n; i++) {
        char d[SX_TIME_DATE_LEN + 1];
        json_t *o;

        day_string(span.from_day + i, d);
        o = json_pack("{s:s}", "date", d);
        put_totals(o, &days[i]);
        json_array_append_new(arr, o);
    }
    body = json_pack("{s:s, s:s, s:o}", "object", "usage.daily", "tenant_id", t->id, "days",
                     arr);
    put_span(body, &span);
    sx_http_reply_json(r, 200, body);
out:
    free(days);
    sx_tenant_unref(t);
}

/* ---- GET /v1/admin/usage/tenants ---------------------------------------- */

enum sort_key { TOKENS_DESC, TOKENS_ASC, REQUESTS_DESC, REQUESTS_ASC, NAME_ASC };
static const char *const sort_names[] = {"tokens_desc", "tokens_asc", "requests_desc",
                                         "requests_asc", "name_asc"};

struct row {
    json_t *obj; /* the tenant's entry */
    const char *name;
    int64_t tokens, requests;
};

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static int cmp_rows(const void *pa, const void *pb, void *arg)
{
    const struct row *a = pa, *b = pb;
    int c = 0;

    switch (*(const enum sort_key *)arg) {
    case TOKENS_DESC:
        c = cmp_i64(b->tokens, a->tokens);
        break;
    case TOKENS_ASC:
        c = cmp_i64(a->tokens, b->tokens);
        break;
    case REQUESTS_DESC:
        c = cmp_i64(b->requests, a->requests);
        break;
    case REQUESTS_ASC:
        c = cmp_i64(a->requests, b->requests);
        break;
    case NAME_ASC:
        break;
    }
    return c ? c : strcmp(a->name, b->name);
}

static int find_usage(char **ids, size_t n, const char *id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(ids[mid], id);

        if (c == 0)
            return (int)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Every tenant, page by page, as a new JSON array. */
static int all_tenants(struct sx_app *app, json_t **out)
{
    json_t *all = json_array(), *page;
    char cursor[96] = "";
    bool more = true;
    struct sx_fault f;
    int rc = 0;

    while (more && rc == 0) {
        rc = sx_tenant_list(app->tenancy, NULL, 100, cursor[0] ? cursor : NULL, &page, &more,
                            cursor, &f);
        if (rc == 0) {
            json_array_extend(all, page);
            json_decref(page);
        }
    }
    if (rc) {
        json_decref(all);
        return rc;
    }
    *out = all;
    return 0;
}

static void get_admin_usage(sx_http_req *r, void *ctx)
{
    struct sx_app *app = ctx;
    struct sx_principal p;
    struct sx_usage_span span;
    struct sx_usage_totals *totals = NULL, zero = {0};
    struct row *rows = NULL;
    const char *period, *sort_s = sx_http_query(r, "sort");
    char **ids = NULL;
    size_t n_usage = 0, n;
    json_t *tenants = NULL, *arr, *body;
    enum sort_key sort = TOKENS_DESC;
    int rc;

    if (sx_api_require_admin(app, r, &p) || query_period(r, &span, &period))
        return;
    if (sort_s) {
        size_t i;

        for (i = 0; i < sizeof(sort_names) / sizeof(sort_names[0]); i++)
            if (strcmp(sort_s, sort_names[i]) == 0)
                break;
        if (i == sizeof(sort_names) / sizeof(sort_names[0])) {
            sx_http_reply_error(r, 400, "invalid_sort", "sort",
                                "sort \"%.40s\" is not valid; sort must be tokens_desc, "
                                "tokens_asc, requests_desc, requests_asc or name_asc",
                                sort_s);
            return;
        }
        sort = (enum sort_key)i;
    }

    rc = all_tenants(app, &tenants);
    if (rc == 0)
        rc = sx_meter_usage_by_tenant(app->meter, &span, &ids, &totals, &n_usage);
    if (rc) {
        sx_api_reply_rc(r, rc, NULL, NULL);
        goto out;
    }

    /* One entry per tenant, zeros for those without use. */
    n = json_array_size(tenants);
    rows = calloc(n ? n : 1, sizeof(*rows));
    if (!rows) {
        sx_api_reply_rc(r, SX_ENOMEM, NULL, NULL);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tenants, i);
        const char *id = json_string_value(json_object_get(t, "id"));
        int k = id ? find_usage(ids, n_usage, id) : -1;
        const struct sx_usage_totals *u = k >= 0 ? &totals[k] : &zero;

        rows[i].obj = json_pack("{s:O, s:O, s:O, s:O, s:O}", "tenant_id",
                                json_object_get(t, "id"), "name", json_object_get(t, "name"),
                                "slug", json_object_get(t, "slug"), "tier",
                                json_object_get(t, "tier"), "status",
                                json_object_get(t, "status"));
        put_totals(rows[i].obj, u);
        rows[i].name = json_string_value(json_object_get(t, "name"));
        if (!rows[i].name)
            rows[i].name = "";
        rows[i].tokens = u->tokens;
        rows[i].requests = u->requests;
    }
    qsort_r(rows, n, sizeof(*rows), cmp_rows, &sort);

    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, rows[i].obj);
    body = json_pack("{s:s, s:s, s:s, s:o}", "object", "usage.tenants", "period", period,
                     "sort", sort_names[sort], "tenants", arr);
    put_span(body, &span);
    sx_http_reply_json(r, 200, body);
out:
    free(rows);
    sx_meter_usage_list_free(ids, totals, n_usage);
    json_decref(tenants);
}

int sx_api_usage_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_http_route(srv, "GET", "/v1/tenants/{t}/usage", get_usage, app);

    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/tenants/{t}/usage/daily", get_usage_daily, app);
    if (rc == 0)
        rc = sx_http_route(srv, "GET", "/v1/admin/usage/tenants", get_admin_usage, app);
    return rc;
}
