/* Structures shared by the files of src/http/ (server.c, stream.c,
 * metrics.c, health.c). Nothing outside src/http/ includes this. */
#ifndef SX_HTTP_INTERNAL_H
#define SX_HTTP_INTERNAL_H

#include "base/loop.h"
#include "http/http.h"
#include "http/router.h"

#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

/* ---- Metrics: one fixed slot per route, plus one for unmatched paths ---- */

#define SX_HTTP_BUCKETS 14   /* 0.0005 s .. 10 s, then +Inf */
#define SX_HTTP_STATUS_SLOTS 24

enum { SX_M_GET, SX_M_POST, SX_M_PUT, SX_M_PATCH, SX_M_DELETE, SX_M_HEAD, SX_M_OPTIONS,
       SX_M_OTHER, SX_M_COUNT };

struct sx_http_route_stats {
    /* (method code + 1) << 16 | status, 0 = free; claimed by CAS. */
    _Atomic uint32_t key[SX_HTTP_STATUS_SLOTS];
    _Atomic uint64_t count[SX_HTTP_STATUS_SLOTS];
    _Atomic uint64_t overflow;                  /* statuses past the slots */
    _Atomic uint64_t bucket[SX_HTTP_BUCKETS + 1];
    _Atomic uint64_t sum_ns;
};

struct sx_http_metrics {
    struct sx_http_route_stats route[SX_HTTP_MAX_ROUTES + 1]; /* last: unmatched */
    _Atomic int in_flight;
    _Atomic int streams;
    double start_time_s;
};

extern const double sx_http_bucket_bounds[SX_HTTP_BUCKETS];
int sx_http_method_code(const char *method);
/* Counts one finished request; route < 0 means unmatched. */
void sx_http_metrics_record(struct sx_http_metrics *m, int route, int method_code,
                            int status, int64_t dur_ns);

/* ---- Server and request --------------------------------------------------- */

/* One event loop (base/loop.h) with its own daemon on the shared port
 * (SO_REUSEPORT: the kernel spreads connections over them). */
struct sx_http_worker {
    sx_http_server *srv;
    struct sx_loop *loop;
    struct MHD_Daemon *daemon;
    struct sx_loop_watch watch; /* the daemon's epoll descriptor */
    MHD_socket listen_fd;       /* after quiesce: closed at the stop */
    /* MHD_run() costs a system call even with nothing to do, so the loop
     * runs it only when the daemon's descriptor was ready, a connection
     * was resumed (kick, from any thread), or MHD's timeout is due. */
    atomic_bool kick;
    int64_t due_ns; /* CLOCK_MONOTONIC; INT64_MAX: no timeout */
};

/* The worker whose loop runs on this thread (NULL elsewhere). */
extern _Thread_local struct sx_http_worker *sx_http_current_worker;

/* Makes the worker run MHD before its loop next waits (any thread; the
 * caller wakes the loop if it is another's). */
static inline void sx_http_worker_kick(struct sx_http_worker *w)
{
    if (w)
        atomic_store_explicit(&w->kick, true, memory_order_release);
}

struct sx_http_server {
    struct sx_http_worker *workers; /* NULL until started */
    int n_workers;
    struct sx_http_router router;
    struct sx_http_metrics metrics;

    struct sockaddr_storage addr;
    int ipv6;
    int port;
    int threads;
    int max_connections;
    int timeout_s;
    size_t max_body;
    char *tls_cert_path, *tls_key_path;
    char *tls_cert, *tls_key; /* file contents, kept while running */

    int (*ready)(void *ctx); /* health.c callbacks */
    int (*is_admin)(void *ctx, sx_http_req *r);
    void *health_ctx;

    pthread_mutex_t streams_mu; /* guards the live stream list */
    sx_http_stream *streams;
    int stopped;
};

#define SX_HTTP_MAX_HEADERS 12

struct sx_http_req {
    sx_http_server *srv;
    struct MHD_Connection *conn;
    const char *method; /* owned by MHD until the request completes */
    const char *path;
    int method_code;
    int route;          /* index, or -1 when unmatched */
    int stats_route;    /* where metrics go: route, path route for 405, or -1 */
    int64_t start_ns;
    int status;
    int replied;
    int too_big;
    int oom;
    size_t discarded;      /* body bytes dropped after a 413 */

    char id[32];
    const char *client_id;   /* validated client X-Request-ID, or NULL */
    char ip[INET6_ADDRSTRLEN];

    struct sx_http_match match;
    char *scratch;           /* capture values; inline_scratch when it fits */
    char inline_scratch[256];

    char *body;
    size_t body_len, body_cap;
    json_t *json;

    void *user;
    void (*user_free)(void *);

    int nheaders;
    char *header_name[SX_HTTP_MAX_HEADERS];
    char *header_value[SX_HTTP_MAX_HEADERS];

    sx_http_stream *stream;
};

/* Queues resp with status and the common headers; returns 1 when queued. */
int sx_http_queue(sx_http_req *r, int status, struct MHD_Response *resp);

/* Stream hooks for the server. */
void sx_http_stream_completed(sx_http_stream *st);
void sx_http_streams_cancel_all(sx_http_server *s);
/* Called when a deferred request's connection resumes: queues the begun
 * response (or 503 when the server is stopping), else parks it again. */
void sx_http_stream_resumed(sx_http_req *r);

#endif
