/* The libmicrohttpd server: daemon setup (one daemon per event loop of
 * base/loop.h, TLS, limits), the access handler that routes a request, enforces the body
 * limit and calls the handler, the replies, and graceful shutdown. Streams
 * live in stream.c, metrics in metrics.c, the health routes in health.c. */
#include "http/internal.h"
#include "base/config.h"
#include "base/crypto.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/time.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Memory libmicrohttpd gives each connection for a request's line and
 * headers, its body as it arrives and the reply's headers. It zeroes about
 * one and a half times this for every request (callgrind: 50k of the
 * 301k instructions a relayed chat request costs at 32 KiB, 26k at 16),
 * from memory that is seldom in the cache with many connections open.
 * 16 KiB still takes 15 KB of headers (more is 431), near Node.js's 16 KB
 * default; bodies stream through in pieces whatever their size. */
#define CONNECTION_MEMORY (16 * 1024)

/* ---- Request ids -------------------------------------------------------- */

/* Request ids need to be unique, not secret: a per-thread xoshiro256**
 * seeded from getrandom() makes one in a few nanoseconds without a
 * syscall or a lock. */
static _Thread_local uint64_t rng_state[4];
static _Thread_local int rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    uint64_t *s = rng_state, result, t;

    if (!rng_seeded) {
        if (sx_crypto_random(rng_state, sizeof(rng_state)) != SX_OK) {
            rng_state[0] = (uint64_t)sx_time_mono_ns();
            rng_state[1] = (uint64_t)(uintptr_t)&rng_seeded;
        }
        rng_state[3] |= 1; /* never all zero */
        rng_seeded = 1;
    }
    result = rotl(s[1] * 5, 7) * 9;
    t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* "req_", 9 base62 digits of the wall-clock millisecond, then 15 random
 * base62 characters (about 89 bits). Time first makes ids sort in the
 * order they were made, so the usage ledger's primary key grows at its
 * end instead of at random pages of an index larger than the cache (the
 * ULID / UUIDv7 idea); the alphabet is in ASCII order for that. */
static void make_request_id(char out[32])
{
    static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uint64_t ms = (uint64_t)sx_time_now_ms(), bits = 0;

    memcpy(out, "req_", 4);
    for (int i = 12; i >= 4; i--) { /* 62^9 ms is 428,000 years */
        out[i] = alphabet[ms % 62];
        ms /= 62;
    }
    /* Random characters 6 bits at a time, ten per 64-bit draw; values
     * >= 62 fold, a bias that is harmless for an identifier. */
    for (int i = 0; i < 15; i++) {
        if (i % 10 == 0)
            bits = rng_next();
        out[13 + i] = alphabet[(bits & 63) % 62];
        bits >>= 6;
    }
    out[28] = '\0';
}

/* A client's X-Request-ID is echoed as x-client-request-id (and logged) only
 * when it is 1-64 characters of [A-Za-z0-9._:-]; our own id stays the one
 * the logs and the ledger use. */
static int client_id_ok(const char *v)
{
    size_t n = 0;

    for (; v[n]; n++) {
        char c = v[n];
        if (n == 64 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                         c == '-'))
            return 0;
    }
    return n > 0;
}

/* ---- Replies ------------------------------------------------------------ */

const char *sx_http_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 405: return "invalid_request_error";
    case 409: return "conflict_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

int sx_http_queue(sx_http_req *r, int status, struct MHD_Response *resp)
{
    int ok;

    if (!resp)
        return 0;
    MHD_add_response_header(resp, "x-request-id", r->id);
    if (r->client_id)
        MHD_add_response_header(resp, "x-client-request-id", r->client_id);
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->header_name[i], r->header_value[i]);
    ok = MHD_queue_response(r->conn, (unsigned)status, resp) == MHD_YES;
    MHD_destroy_response(resp);
    if (ok) {
        r->replied = 1;
        r->status = status;
    }
    return ok;
}

void sx_http_set_header(sx_http_req *r, const char *name, const char *value)
{
    int i = r->nheaders;

    if (i == SX_HTTP_MAX_HEADERS) {
        SX_ERROR("http", "%s: more than %d response headers; '%s' dropped", r->id,
                 SX_HTTP_MAX_HEADERS, name);
        return;
    }
    r->header_name[i] = strdup(name);
    r->header_value[i] = strdup(value);
    if (!r->header_name[i] || !r->header_value[i]) {
        free(r->header_name[i]);
        free(r->header_value[i]);
        return;
    }
    r->nheaders++;
}

void sx_http_reply_text(sx_http_req *r, int status, const char *content_type,
                        const char *body, size_t len)
{
    struct MHD_Response *resp;

    if (r->replied) {
        SX_ERROR("http", "%s: second reply (%d) ignored", r->id, status);
        return;
    }
    resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (resp && content_type)
        MHD_add_response_header(resp, "Content-Type", content_type);
    sx_http_queue(r, status, resp);
}

void sx_http_reply_json(sx_http_req *r, int status, json_t *body)
{
    struct MHD_Response *resp;
    char *text;

    if (r->replied) {
        SX_ERROR("http", "%s: second reply (%d) ignored", r->id, status);
        json_decref(body);
        return;
    }
    text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(body);
    if (!text) {
        /* Only out-of-memory (or a NULL body) gets here; answer something. */
        static const char fail[] = "{\"error\":{\"message\":\"could not encode the "
                                   "response\",\"type\":\"server_error\",\"param\":null,"
                                   "\"code\":null}}";
        resp = MHD_create_response_from_buffer(sizeof(fail) - 1, (void *)fail,
                                               MHD_RESPMEM_PERSISTENT);
        status = 500;
    } else {
        resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            free(text);
    }
    if (resp)
        MHD_add_response_header(resp, "Content-Type", "application/json");
    sx_http_queue(r, status, resp);
}

void sx_http_reply_error(sx_http_req *r, int status, const char *code, const char *param,
                         const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    json_t *body;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Messages may echo a caller's bytes, perhaps cut inside a character. */
    sx_utf8_scrub(msg);
    body = json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", msg, "type",
                     sx_http_error_type(status), "param", param, "code", code);
    if (!body) /* param or code was not valid UTF-8 */
        body = json_pack("{s:{s:s,s:s,s:n,s:n}}", "error", "message",
                         "request failed (error message could not be encoded)", "type",
                         sx_http_error_type(status), "param", "code");
    sx_http_reply_json(r, status, body);
}

int sx_http_replied(const sx_http_req *r)
{
    return r->replied;
}

/* ---- Accessors ---------------------------------------------------------- */

const char *sx_http_method(const sx_http_req *r) { return r->method; }
const char *sx_http_path(const sx_http_req *r) { return r->path; }
const char *sx_http_request_id(const sx_http_req *r) { return r->id; }
void *sx_http_user(const sx_http_req *r) { return r->user; }

const char *sx_http_route_pattern(const sx_http_req *r)
{
    return r->route >= 0 ? r->srv->router.routes[r->route].pattern : NULL;
}

const char *sx_http_param(const sx_http_req *r, const char *name)
{
    for (int i = 0; i < r->match.nparams; i++)
        if (strcmp(r->match.name[i], name) == 0)
            return r->match.value[i];
    return NULL;
}

const char *sx_http_query(const sx_http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *sx_http_header(const sx_http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *sx_http_client_ip(const sx_http_req *r)
{
    sx_http_req *w = (sx_http_req *)r; /* the address is computed once, lazily */
    const union MHD_ConnectionInfo *ci;
    const struct sockaddr *sa;

    if (w->ip[0])
        return w->ip;
    ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return "unknown";
    sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, w->ip, sizeof(w->ip));
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

        /* An IPv4 client on a dual-stack socket reads as plain IPv4. */
        if (IN6_IS_ADDR_V4MAPPED(a))
            inet_ntop(AF_INET, &a->s6_addr[12], w->ip, sizeof(w->ip));
        else
            inet_ntop(AF_INET6, a, w->ip, sizeof(w->ip));
    }
    return w->ip[0] ? w->ip : "unknown";
}

const char *sx_http_body(const sx_http_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

json_t *sx_http_json_object(sx_http_req *r)
{
    char err[256];

    if (r->json)
        return r->json;
    r->json = sx_json_parse_object(r->body, r->body_len, SX_JSON_MAX_DEPTH, err, sizeof(err));
    if (!r->json)
        sx_http_reply_error(r, 400, "invalid_json", NULL, "%s", err);
    return r->json;
}

void sx_http_set_user(sx_http_req *r, void *p, void (*free_fn)(void *))
{
    if (r->user && r->user_free && r->user != p)
        r->user_free(r->user);
    r->user = p;
    r->user_free = free_fn;
}

/* ---- Request life cycle ------------------------------------------------- */

static void req_free(sx_http_req *r)
{
    if (r->user && r->user_free)
        r->user_free(r->user);
    json_decref(r->json);
    free(r->body);
    if (r->scratch != r->inline_scratch)
        free(r->scratch);
    for (int i = 0; i < r->nheaders; i++) {
        free(r->header_name[i]);
        free(r->header_value[i]);
    }
    free(r);
}

/* The body limit of the request's route (the server's by default). */
static size_t req_max_body(const sx_http_req *r)
{
    if (r->route >= 0 && r->srv->router.routes[r->route].max_body)
        return r->srv->router.routes[r->route].max_body;
    return r->srv->max_body;
}

/* First call for a request: route it and answer at once what needs no body
 * (404, 405, 413 by Content-Length). */
static sx_http_req *req_begin(sx_http_server *s, struct MHD_Connection *conn,
                              const char *url, const char *method)
{
    sx_http_req *r = calloc(1, sizeof(*r));
    const char *cid, *clen;
    size_t plen = strlen(url);
    char allow[96];
    int path_route = -1, rc;

    if (!r)
        return NULL;
    r->srv = s;
    r->conn = conn;
    r->method = method;
    r->path = url;
    r->method_code = sx_http_method_code(method);
    r->start_ns = sx_time_mono_ns();
    r->route = r->stats_route = -1;
    make_request_id(r->id);
    cid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-ID");
    if (cid && client_id_ok(cid))
        r->client_id = cid;
    atomic_fetch_add_explicit(&s->metrics.in_flight, 1, memory_order_relaxed);

    /* 1. Route. Captures are copied next to the request when they fit. */
    r->scratch = plen < sizeof(r->inline_scratch) ? r->inline_scratch : malloc(plen + 1);
    if (!r->scratch) {
        r->scratch = r->inline_scratch;
        sx_http_reply_error(r, 500, NULL, NULL, "out of memory");
        return r;
    }
    rc = sx_http_router_match(&s->router, method, url, r->scratch, &r->match, &path_route,
                              allow, sizeof(allow));
    if (rc == SX_HTTP_NO_PATH) {
        sx_http_reply_error(r, 404, "not_found", NULL,
                            "no such endpoint: %s %s; see the API reference for valid paths",
                            method, url);
        return r;
    }
    if (rc == SX_HTTP_NO_METHOD) {
        r->stats_route = path_route;
        sx_http_set_header(r, "Allow", allow);
        sx_http_reply_error(r, 405, "method_not_allowed", NULL,
                            "method %s is not allowed on this endpoint; allowed: %s", method,
                            allow);
        return r;
    }
    r->route = r->stats_route = rc;

    /* 2. A declared body over the limit is refused before it is sent. */
    clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (clen) {
        char *end;
        unsigned long long n;

        errno = 0;
        n = strtoull(clen, &end, 10);
        if (errno || *end || n > req_max_body(r)) {
            r->too_big = 1;
            sx_http_reply_error(r, 413, "request_too_large", NULL,
                                "request body is larger than the limit of %zu bytes",
                                req_max_body(r));
            return r;
        }
        /* Reserve the whole body up front: one allocation, no copies. */
        if (n > 0 && (r->body = malloc((size_t)n + 1)))
            r->body_cap = (size_t)n + 1;
    }
    return r;
}

static void req_body(sx_http_req *r, const char *data, size_t n)
{
    size_t need = r->body_len + n;

    if (r->too_big || r->oom || r->replied)
        return;
    if (need > req_max_body(r)) {
        /* A chunked body crossed the limit: drop what we have and try to
         * answer now; if MHD will not take a reply mid-upload, the rest is
         * discarded unbuffered and 413 goes out at the end. */
        r->too_big = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        sx_http_reply_error(r, 413, "request_too_large", NULL,
                            "request body is larger than the limit of %zu bytes",
                            req_max_body(r));
        return;
    }
    if (need + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap * 2 : 4096;
        char *grown;

        while (cap < need + 1)
            cap *= 2;
        if (cap > req_max_body(r) + 1)
            cap = req_max_body(r) + 1;
        grown = realloc(r->body, cap);
        if (!grown) {
            r->oom = 1;
            return;
        }
        r->body = grown;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len = need;
    r->body[need] = '\0';
}

static void req_dispatch(sx_http_req *r)
{
    const struct sx_http_route_entry *e = &r->srv->router.routes[r->route];

    if (r->too_big) {
        sx_http_reply_error(r, 413, "request_too_large", NULL,
                            "request body is larger than the limit of %zu bytes",
                            req_max_body(r));
        return;
    }
    if (r->oom) {
        sx_http_reply_error(r, 500, NULL, NULL, "out of memory while reading the body");
        return;
    }
    e->fn(r, e->ctx);
    if (!r->replied && !r->stream) {
        SX_ERROR("http", "%s: handler for %s %s returned without a reply", r->id, r->method,
                 e->pattern);
        sx_http_reply_error(r, 500, NULL, NULL, "internal error: the request got no reply");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size,
                                  void **con_cls)
{
    sx_http_server *s = cls;
    sx_http_req *r = *con_cls;

    (void)version;
    if (!r) {
        r = req_begin(s, conn, url, method);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (r->too_big || r->replied) {
            /* Discard the rest unbuffered, but not forever: a client that
             * keeps sending long after its answer loses the connection. */
            r->discarded += *upload_size;
            *upload_size = 0;
            return r->discarded > 8 * req_max_body(r) + (16u << 20) ? MHD_NO : MHD_YES;
        }
        req_body(r, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->stream && !r->replied) {
        /* A deferred reply woke up: its producer began the response. */
        sx_http_stream_resumed(r);
        return MHD_YES;
    }
    if (!r->replied)
        req_dispatch(r);
    return r->replied || r->stream ? MHD_YES : MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    sx_http_server *s = cls;
    sx_http_req *r = *con_cls;
    int64_t dur;
    const char *label;

    (void)conn;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->stream)
        sx_http_stream_completed(r->stream);
    dur = sx_time_mono_ns() - r->start_ns;
    sx_http_metrics_record(&s->metrics, r->stats_route, r->method_code,
                           r->replied ? r->status : 499, dur);
    atomic_fetch_sub_explicit(&s->metrics.in_flight, 1, memory_order_relaxed);

    /* The access log names the route pattern, never the raw path or query:
     * paths carry tenant slugs and queries may carry secrets. */
    label = r->stats_route >= 0 ? s->router.routes[r->stats_route].pattern : "unmatched";
    SX_INFO("http", "%s %s %d %.3fms %s%s%s%s", r->method, label, r->replied ? r->status : 499,
            (double)dur / 1e6, r->id, r->client_id ? " client_id=" : "",
            r->client_id ? r->client_id : "",
            toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    req_free(r);
}

/* ---- Server ------------------------------------------------------------- */

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    /* A client that hangs up is routine, not a server problem. */
    if (strstr(line, "no longer available") || strstr(line, "reset by peer"))
        SX_DEBUG("http", "libmicrohttpd: %s", line);
    else
        SX_WARN("http", "libmicrohttpd: %s", line);
}

static int resolve(sx_http_server *s, const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve listen host '%s': %s", host, gai_strerror(rc));
        return SX_EINVAL;
    }
    memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
    s->ipv6 = res->ai_family == AF_INET6;
    if (s->ipv6)
        ((struct sockaddr_in6 *)&s->addr)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&s->addr)->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return SX_OK;
}

sx_http_server *sx_http_server_new(const struct sx_config *cfg, char *err, size_t errlen)
{
    sx_http_server *s = calloc(1, sizeof(*s));

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->streams_mu, NULL);
    s->threads = cfg->http_threads > 0 ? cfg->http_threads : sx_config_default_http_threads();
    s->max_connections = cfg->max_connections > 0 ? cfg->max_connections : 1024;
    s->timeout_s = cfg->connection_timeout_s > 0 ? cfg->connection_timeout_s : 60;
    s->max_body = cfg->max_body_bytes ? cfg->max_body_bytes : (1u << 20);
    s->metrics.start_time_s = (double)sx_time_now_ms() / 1000.0;
    if (resolve(s, cfg->listen_host, cfg->listen_port, err, errlen) != SX_OK)
        goto fail;
    if (cfg->tls_cert && !(s->tls_cert_path = strdup(cfg->tls_cert)))
        goto oom;
    if (cfg->tls_key && !(s->tls_key_path = strdup(cfg->tls_key)))
        goto oom;
    return s;

oom:
    snprintf(err, errlen, "out of memory");
fail:
    sx_http_server_free(s);
    return NULL;
}

int sx_http_route(sx_http_server *s, const char *method, const char *pattern,
                  sx_http_handler fn, void *ctx)
{
    int rc;

    if (s->workers) {
        SX_ERROR("http", "route %s %s added after start", method, pattern);
        return SX_EINVAL;
    }
    rc = sx_http_router_add(&s->router, method, pattern, fn, ctx);
    if (rc < 0) {
        SX_ERROR("http", "route %s %s rejected: %s", method, pattern, sx_strerror(rc));
        return rc;
    }
    return SX_OK;
}

int sx_http_route_set_max_body(sx_http_server *s, const char *method, const char *pattern,
                               size_t max_body)
{
    if (s->workers || max_body == 0)
        return SX_EINVAL;
    for (int i = 0; i < s->router.n; i++) {
        struct sx_http_route_entry *e = &s->router.routes[i];

        if (strcmp(e->method, method) == 0 && strcmp(e->pattern, pattern) == 0) {
            e->max_body = max_body;
            return SX_OK;
        }
    }
    return SX_ENOTFOUND;
}

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f) {
        snprintf(err, errlen, "cannot read TLS file %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (1 << 20) &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) == (size_t)n) {
            buf[n] = '\0';
        } else {
            free(buf);
            buf = NULL;
        }
    }
    if (!buf)
        snprintf(err, errlen, "cannot read TLS file %s: %s", path,
                 errno ? strerror(errno) : "empty or larger than 1 MiB");
    fclose(f);
    return buf;
}

/* Decodes %XX escapes in paths and query values, except %00: a NUL would
 * end the C string early and make "/v1/tenants/x%00y" look up "x". Left
 * encoded, such an id simply names nothing and a query value fails its
 * validation. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    char *in = s, *out = s;

    (void)cls;
    (void)conn;
    while (*in) {
        if (in[0] == '%' && isxdigit((unsigned char)in[1]) &&
            isxdigit((unsigned char)in[2])) {
            char hex[3] = {in[1], in[2], '\0'};
            char c = (char)strtol(hex, NULL, 16);

            if (c != '\0') {
                *out++ = c;
                in += 3;
                continue;
            }
        }
        *out++ = *in++;
    }
    *out = '\0';
    return (size_t)(out - s);
}

/* Loops first (their modules' per-loop state goes with them), then the
 * daemons, from this thread. */
static void stop_workers(sx_http_server *s)
{
    for (int i = 0; s->workers && i < s->n_workers; i++)
        sx_loop_stop(s->workers[i].loop);
    for (int i = 0; s->workers && i < s->n_workers; i++) {
        struct sx_http_worker *w = &s->workers[i];

        if (w->daemon)
            MHD_stop_daemon(w->daemon);
        if (w->listen_fd != MHD_INVALID_SOCKET)
            close(w->listen_fd);
        sx_loop_free(w->loop);
    }
    free(s->workers);
    s->workers = NULL;
    s->n_workers = 0;
}

/* Before each wait of a worker's loop: MHD does what is ready (requests,
 * resumed responses, timeouts) and says how long the loop may sleep. */
_Thread_local struct sx_http_worker *sx_http_current_worker;

static int worker_run(void *ctx)
{
    struct sx_http_worker *w = ctx;
    MHD_UNSIGNED_LONG_LONG ms;
    int64_t now = sx_time_mono_ns(), left;

    sx_http_current_worker = w;
    if (atomic_exchange_explicit(&w->kick, false, memory_order_acq_rel) || now >= w->due_ns) {
        MHD_run(w->daemon);
        w->due_ns = INT64_MAX;
        if (MHD_get_timeout(w->daemon, &ms) == MHD_YES)
            w->due_ns = now + (int64_t)(ms > 60000 ? 60000 : ms) * 1000000;
    }
    if (w->due_ns == INT64_MAX)
        return -1;
    left = w->due_ns - now;
    return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

/* The daemon's epoll descriptor is ready: worker_run runs MHD next. */
static void worker_wake(void *ctx, uint32_t events)
{
    (void)events;
    sx_http_worker_kick(ctx);
}

static void set_port(struct sockaddr_storage *a, int port)
{
    if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
}

static int start_worker(sx_http_server *s, struct sx_http_worker *w, unsigned flags,
                        struct MHD_OptionItem *tls, char *err, size_t errlen)
{
    const union MHD_DaemonInfo *info;
    unsigned limit = (unsigned)(s->max_connections + s->n_workers - 1) / (unsigned)s->n_workers;

    w->srv = s;
    w->listen_fd = MHD_INVALID_SOCKET;
    atomic_init(&w->kick, true);
    w->due_ns = 0;
    if (!(w->loop = sx_loop_new(err, errlen)))
        return SX_EIO;
    w->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&s->addr, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONNECTION_MEMORY, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, MHD_OPTION_ARRAY, tls,
        MHD_OPTION_END);
    if (!w->daemon) {
        snprintf(err, errlen,
                 "cannot start the HTTP server on port %d (address in use, bad TLS "
                 "files or permissions; see the log above)",
                 ntohs(s->ipv6 ? ((struct sockaddr_in6 *)&s->addr)->sin6_port
                               : ((struct sockaddr_in *)&s->addr)->sin_port));
        return SX_EIO;
    }
    info = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info) {
        snprintf(err, errlen, "libmicrohttpd gave no epoll descriptor");
        return SX_EIO;
    }
    w->watch = (struct sx_loop_watch){info->epoll_fd, worker_wake, w, false};
    if (sx_loop_watch(w->loop, &w->watch, EPOLLIN) != 0 ||
        sx_loop_start(w->loop, worker_run, w) != 0) {
        snprintf(err, errlen, "cannot start the HTTP server's event loops");
        return SX_EIO;
    }
    return SX_OK;
}

int sx_http_start(sx_http_server *s, char *err, size_t errlen)
{
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct MHD_OptionItem tls[3] = {{MHD_OPTION_END, 0, NULL},
                                    {MHD_OPTION_END, 0, NULL},
                                    {MHD_OPTION_END, 0, NULL}};
    int rc = SX_OK;

    /* 1. TLS: both files are read now so that a bad path fails the start. */
    if (s->tls_cert_path) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "TLS requested but this libmicrohttpd has no TLS support");
            return SX_EUNSUPPORTED;
        }
        if (!(s->tls_cert = read_file(s->tls_cert_path, err, errlen)) ||
            !(s->tls_key = read_file(s->tls_key_path, err, errlen)))
            return SX_EIO;
        flags |= MHD_USE_TLS;
        tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
        tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
    }
    if (s->ipv6)
        flags |= MHD_USE_IPv6;

    /* 2. The workers: a loop and a daemon each; the first one binds the
     * port (maybe an ephemeral one), the others share it. Upstream relays
     * started by a request run on its worker's loop too. */
    s->workers = calloc((size_t)s->threads, sizeof(*s->workers));
    if (!s->workers) {
        snprintf(err, errlen, "out of memory");
        return SX_ENOMEM;
    }
    s->n_workers = s->threads;
    for (int i = 0; i < s->n_workers && rc == SX_OK; i++) {
        rc = start_worker(s, &s->workers[i], flags, tls, err, errlen);
        if (rc == SX_OK && i == 0) {
            const union MHD_DaemonInfo *info =
                MHD_get_daemon_info(s->workers[0].daemon, MHD_DAEMON_INFO_BIND_PORT);

            s->port = info ? info->port : 0;
            set_port(&s->addr, s->port);
        }
    }
    if (rc != SX_OK)
        stop_workers(s);
    return rc;
}

int sx_http_port(const sx_http_server *s)
{
    return s->workers ? s->port : 0;
}

int sx_http_in_flight(const sx_http_server *s)
{
    return atomic_load_explicit(&((sx_http_server *)s)->metrics.in_flight,
                                memory_order_relaxed);
}

static void wait_idle(sx_http_server *s, int64_t deadline_ns)
{
    while (sx_http_in_flight(s) > 0 && sx_time_mono_ns() < deadline_ns)
        usleep(5000);
}

void sx_http_stop(sx_http_server *s, int timeout_ms)
{
    if (!s || !s->workers || s->stopped)
        return;
    s->stopped = 1;

    /* 1. Stop accepting; keep serving the connections we have. The
     * sockets stay open until the daemons stop, but shutting them down
     * makes new connections fail at once instead of waiting in the
     * backlog. */
    for (int i = 0; i < s->n_workers; i++) {
        struct sx_http_worker *w = &s->workers[i];

        w->listen_fd = MHD_quiesce_daemon(w->daemon);
        if (w->listen_fd != MHD_INVALID_SOCKET)
            shutdown(w->listen_fd, SHUT_RDWR);
    }

    /* 2. Let in-flight requests (and streams) finish, up to the timeout. */
    wait_idle(s, sx_time_mono_ns() + (int64_t)timeout_ms * 1000000);

    /* 3. Cancel the streams still open: they end and run on_close. MHD
     * must not be stopped with suspended connections. */
    sx_http_streams_cancel_all(s);
    wait_idle(s, sx_time_mono_ns() + 2000000000LL);
    if (sx_http_in_flight(s) > 0)
        SX_WARN("http", "stopping with %d requests still running", sx_http_in_flight(s));

    /* 4. Close everything. */
    stop_workers(s);
}

void sx_http_server_free(sx_http_server *s)
{
    if (!s)
        return;
    if (s->workers && !s->stopped)
        sx_http_stop(s, 0);
    stop_workers(s);
    sx_http_router_clear(&s->router);
    free(s->tls_cert_path);
    free(s->tls_key_path);
    free(s->tls_cert);
    free(s->tls_key);
    pthread_mutex_destroy(&s->streams_mu);
    free(s);
}
