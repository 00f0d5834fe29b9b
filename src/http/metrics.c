/* Prometheus metrics of the HTTP layer. Every route owns a fixed slot of
 * atomic counters (requests by method and status, a latency histogram), so
 * recording a request is a handful of relaxed atomic adds and no lock, and
 * labels are route patterns, never raw paths: the series count is bounded
 * by the route table, however many tenants there are. */
#include "http/internal.h"

#include <string.h>

const double sx_http_bucket_bounds[SX_HTTP_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

static const char *const method_names[SX_M_COUNT] = {
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
};

int sx_http_method_code(const char *m)
{
    for (int i = 0; i < SX_M_OTHER; i++)
        if (strcmp(m, method_names[i]) == 0)
            return i;
    return SX_M_OTHER;
}

/* Bucket bounds in nanoseconds, for an integer comparison per bound. */
static const int64_t bound_ns[SX_HTTP_BUCKETS] = {
    500000,    1000000,    2500000,    5000000,    10000000,
    25000000,  50000000,   100000000,  250000000,  500000000,
    1000000000, 2500000000, 5000000000, 10000000000,
};

void sx_http_metrics_record(struct sx_http_metrics *m, int route, int method_code,
                            int status, int64_t dur_ns)
{
    struct sx_http_route_stats *st;
    uint32_t key = ((uint32_t)(method_code + 1) << 16) | (uint32_t)(status & 0xffff);
    int b = 0, counted = 0;

    /* 1. The counter for (route, method, status). Slots are claimed once
     * by compare-and-swap and never released. */
    st = &m->route[route >= 0 ? route : SX_HTTP_MAX_ROUTES];
    for (int i = 0; i < SX_HTTP_STATUS_SLOTS && !counted; i++) {
        uint32_t cur = atomic_load_explicit(&st->key[i], memory_order_acquire);

        if (cur == 0) {
            uint32_t expected = 0;
            if (atomic_compare_exchange_strong(&st->key[i], &expected, key))
                cur = key;
            else
                cur = expected;
        }
        if (cur == key) {
            atomic_fetch_add_explicit(&st->count[i], 1, memory_order_relaxed);
            counted = 1;
        }
    }
    if (!counted)
        atomic_fetch_add_explicit(&st->overflow, 1, memory_order_relaxed);

    /* 2. Latency. A 405 is timed with the unmatched requests, so that a
     * route's histogram only holds requests its handler served. */
    if (route < 0 || status == 405)
        st = &m->route[SX_HTTP_MAX_ROUTES];
    while (b < SX_HTTP_BUCKETS && dur_ns > bound_ns[b])
        b++;
    atomic_fetch_add_explicit(&st->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->sum_ns, (uint64_t)(dur_ns > 0 ? dur_ns : 0),
                              memory_order_relaxed);
}

/* Writes a label value with Prometheus escaping. */
static void put_label(FILE *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            fputc('\\', out);
        if (*v == '\n')
            fputs("\\n", out);
        else
            fputc(*v, out);
    }
}

static uint64_t load(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

void sx_http_metrics_write(sx_http_server *s, FILE *out)
{
    struct sx_http_metrics *m = &s->metrics;
    int n = s->router.n;

    fputs("# HELP synapsex_http_requests_total HTTP requests answered, by route "
          "pattern, method and status.\n"
          "# TYPE synapsex_http_requests_total counter\n",
          out);
    for (int r = 0; r <= n; r++) {
        int slot = r < n ? r : SX_HTTP_MAX_ROUTES;
        struct sx_http_route_stats *st = &m->route[slot];
        const char *route = r < n ? s->router.routes[r].pattern : "unmatched";

        for (int i = 0; i < SX_HTTP_STATUS_SLOTS; i++) {
            uint32_t key = atomic_load_explicit(&st->key[i], memory_order_acquire);
            int mc;

            if (key == 0)
                break;
            mc = (int)(key >> 16) - 1;
            fputs("synapsex_http_requests_total{route=\"", out);
            put_label(out, route);
            fprintf(out, "\",method=\"%s\",status=\"%u\"} %llu\n",
                    mc >= 0 && mc < SX_M_COUNT ? method_names[mc] : "OTHER", key & 0xffff,
                    (unsigned long long)load(&st->count[i]));
        }
        if (load(&st->overflow)) {
            fputs("synapsex_http_requests_total{route=\"", out);
            put_label(out, route);
            fprintf(out, "\",method=\"OTHER\",status=\"other\"} %llu\n",
                    (unsigned long long)load(&st->overflow));
        }
    }

    fputs("# HELP synapsex_http_request_duration_seconds Time from the request line "
          "to the last byte of the response.\n"
          "# TYPE synapsex_http_request_duration_seconds histogram\n",
          out);
    for (int r = 0; r <= n; r++) {
        int slot = r < n ? r : SX_HTTP_MAX_ROUTES;
        struct sx_http_route_stats *st = &m->route[slot];
        const char *route = r < n ? s->router.routes[r].pattern : "unmatched";
        const char *method = r < n ? s->router.routes[r].method : "ANY";
        uint64_t cum = 0, total = 0;

        for (int b = 0; b <= SX_HTTP_BUCKETS; b++)
            total += load(&st->bucket[b]);
        if (total == 0)
            continue;
        for (int b = 0; b <= SX_HTTP_BUCKETS; b++) {
            cum += load(&st->bucket[b]);
            fputs("synapsex_http_request_duration_seconds_bucket{route=\"", out);
            put_label(out, route);
            if (b < SX_HTTP_BUCKETS)
                fprintf(out, "\",method=\"%s\",le=\"%g\"} %llu\n", method,
                        sx_http_bucket_bounds[b], (unsigned long long)cum);
            else
                fprintf(out, "\",method=\"%s\",le=\"+Inf\"} %llu\n", method,
                        (unsigned long long)cum);
        }
        fputs("synapsex_http_request_duration_seconds_sum{route=\"", out);
        put_label(out, route);
        fprintf(out, "\",method=\"%s\"} %.9f\n", method, (double)load(&st->sum_ns) / 1e9);
        fputs("synapsex_http_request_duration_seconds_count{route=\"", out);
        put_label(out, route);
        fprintf(out, "\",method=\"%s\"} %llu\n", method, (unsigned long long)cum);
    }

    fprintf(out,
            "# HELP synapsex_http_requests_in_flight Requests being processed now.\n"
            "# TYPE synapsex_http_requests_in_flight gauge\n"
            "synapsex_http_requests_in_flight %d\n"
            "# HELP synapsex_http_streams_open Event streams open now.\n"
            "# TYPE synapsex_http_streams_open gauge\n"
            "synapsex_http_streams_open %d\n"
            "# HELP synapsex_process_start_time_seconds Start time of the process since "
            "the Unix epoch in seconds.\n"
            "# TYPE synapsex_process_start_time_seconds gauge\n"
            "synapsex_process_start_time_seconds %.3f\n",
            atomic_load(&m->in_flight), atomic_load(&m->streams), m->start_time_s);
}
