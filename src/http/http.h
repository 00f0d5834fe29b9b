/* The HTTP layer: a libmicrohttpd server with a method + pattern router,
 * request accessors, JSON/text/error replies in the OpenAI error shape,
 * Server-Sent Events streams fed from other threads, Prometheus metrics and
 * the /healthz, /readyz, /metrics routes.
 *
 * Threading: handlers run on the server's worker threads (one request at a
 * time per thread) and must reply exactly once, or start a stream, before
 * returning. Only the sx_http_stream_* functions may be called from other
 * threads. Every response carries an `x-request-id: req_...` header that
 * the server generates; a client's X-Request-ID of 1-64 [A-Za-z0-9._:-]
 * characters is echoed as x-client-request-id, never adopted. */
#ifndef SX_HTTP_HTTP_H
#define SX_HTTP_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct sx_config;

typedef struct sx_http_server sx_http_server;
typedef struct sx_http_req sx_http_req;
typedef struct sx_http_stream sx_http_stream;
typedef void (*sx_http_handler)(sx_http_req *req, void *ctx);

/* ---- Server lifecycle --------------------------------------------------- */

/* Creates a server for cfg's listen address, TLS files, body limit, thread
 * count, connection limit and timeout (cfg is read now, not kept). Nothing
 * listens until sx_http_start(). Returns NULL with a message in err. */
sx_http_server *sx_http_server_new(const struct sx_config *cfg, char *err, size_t errlen);

/* Binds and starts the worker threads. TLS certificate and key files are
 * read here; unreadable files or a TLS-less libmicrohttpd are an error.
 * Returns 0, or SX_EIO / SX_EINVAL / SX_EUNSUPPORTED with err filled. */
int sx_http_start(sx_http_server *s, char *err, size_t errlen);

/* The bound port (useful with port 0), or 0 before sx_http_start(). */
int sx_http_port(const sx_http_server *s);

/* Graceful stop: stops accepting connections, waits up to timeout_ms for
 * in-flight requests (streams included) to finish, cancels streams still
 * open (their on_close runs), then stops the workers. Safe to call twice. */
void sx_http_stop(sx_http_server *s, int timeout_ms);

/* Stops (without waiting) if still running and frees. Accepts NULL. */
void sx_http_server_free(sx_http_server *s);

/* Requests being processed right now (the in-flight gauge). */
int sx_http_in_flight(const sx_http_server *s);

/* ---- Routing ------------------------------------------------------------ */

/* Pattern segments in braces capture: "/v1/tenants/{t}/keys/{key_id}".
 * Exact match on method + segment count; literal segments win over
 * captures when two patterns match. Unknown path -> 404, known path with
 * another method -> 405 (with an Allow header), both with the OpenAI error
 * body. The pattern (not the raw path) labels metrics and the access log.
 * Register before sx_http_start(). Returns 0, SX_EINVAL for a malformed
 * pattern or method, SX_EEXIST for a duplicate, SX_ETOOBIG past
 * SX_HTTP_MAX_ROUTES. */
#define SX_HTTP_MAX_ROUTES 192
#define SX_HTTP_MAX_PARAMS 8
int sx_http_route(sx_http_server *s, const char *method, const char *pattern,
                  sx_http_handler fn, void *ctx);
/* Gives one registered route its own body limit in bytes (e.g. a file
 * upload above the server's JSON limit). Register the route first. 0,
 * SX_ENOTFOUND (no such route) or SX_EINVAL (after start, or 0 bytes). */
int sx_http_route_set_max_body(sx_http_server *s, const char *method, const char *pattern,
                               size_t max_body);

/* ---- Request accessors ---------------------------------------------------
 * Strings are owned by the request and live until the reply is sent. */
const char *sx_http_method(const sx_http_req *r);
const char *sx_http_path(const sx_http_req *r);
const char *sx_http_route_pattern(const sx_http_req *r);          /* matched pattern */
const char *sx_http_param(const sx_http_req *r, const char *name); /* path capture */
const char *sx_http_query(const sx_http_req *r, const char *name); /* NULL if absent */
const char *sx_http_header(const sx_http_req *r, const char *name); /* case-insensitive */
const char *sx_http_client_ip(const sx_http_req *r);               /* "127.0.0.1"/"::1" */
const char *sx_http_request_id(const sx_http_req *r);              /* "req_..." */
const char *sx_http_body(const sx_http_req *r, size_t *len);       /* raw bytes, NUL-ended */

/* Parses the body as one JSON object (sx_json_parse_object): rejects an
 * empty body, invalid UTF-8, duplicate keys, deep nesting and a non-object
 * top level. On failure replies 400 itself (the message says what and
 * where) and returns NULL. The json_t is owned by the request. */
json_t *sx_http_json_object(sx_http_req *r);

/* Per-request slot for the auth principal or other handler state; free_fn
 * (may be NULL) runs when the request ends. Setting again frees the old. */
void sx_http_set_user(sx_http_req *r, void *p, void (*free_fn)(void *));
void *sx_http_user(const sx_http_req *r);

/* ---- Replies (exactly one per request) ---------------------------------- */

/* Adds a response header to the reply about to be sent. */
void sx_http_set_header(sx_http_req *r, const char *name, const char *value);
/* body is stolen (decref'd by the server), even on failure. */
void sx_http_reply_json(sx_http_req *r, int status, json_t *body);
void sx_http_reply_text(sx_http_req *r, int status, const char *content_type,
                        const char *body, size_t len);
/* OpenAI-shaped error {"error":{"message","type","param","code"}}; type from
 * status (400 invalid_request_error, 401 authentication_error,
 * 403 permission_error, 404 not_found_error, 405 invalid_request_error,
 * 409 conflict_error, 413 request_too_large, 429 rate_limit_error,
 * 500 server_error, 503 service_unavailable). param/code may be NULL. */
void sx_http_reply_error(sx_http_req *r, int status, const char *code, const char *param,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The "type" string used for a status. */
const char *sx_http_error_type(int status);
/* 1 once a reply (or stream) has been started for r. */
int sx_http_replied(const sx_http_req *r);

/* ---- Server-Sent Events -------------------------------------------------
 * A handler calls sx_http_stream_start() instead of replying and returns;
 * any thread then pushes events and finally calls sx_http_stream_finish()
 * exactly once. The connection is suspended while nothing is queued and
 * resumed on each push, so a waiting stream costs no worker thread.
 *
 * on_close(ctx) runs once, on a server thread, when the client goes away
 * or the server stops before the producer finished: the producer should
 * cancel its work, and then still call sx_http_stream_finish(). It does
 * not run after a finish: neither a normal one nor one by a producer that
 * learnt of the cut first from a push's SX_ECANCELED. Disconnects are noticed on the next push
 * (a suspended connection is not polled), so producers with long gaps
 * should push sx_http_stream_comment() keep-alives. */
sx_http_stream *sx_http_stream_start(sx_http_req *r, int status,
                                     void (*on_close)(void *ctx), void *ctx);
/* Queues "data: <data>\n\n" (data must not contain a newline; JSON does
 * not). Returns 0, SX_ECANCELED once the client is gone, SX_ENOMEM. */
int sx_http_stream_send(sx_http_stream *st, const char *data, size_t len);
/* Queues raw SSE text as is (e.g. "event: x\ndata: y\n\n"). */
int sx_http_stream_write(sx_http_stream *st, const char *text, size_t len);
/* Queues ": <text>\n\n", an SSE comment that clients ignore. */
int sx_http_stream_comment(sx_http_stream *st, const char *text);
/* Ends the response after the queued data; the stream pointer is invalid
 * afterwards. Returns 0, or SX_ECANCELED if the client had gone. */
int sx_http_stream_finish(sx_http_stream *st);

/* Deferred replies, for a handler whose status is known only later (an
 * upstream call, an engine job): sx_http_defer() suspends the connection
 * and returns a stream that no response has been started for yet; the
 * handler returns at once. Any thread then sets headers with
 * sx_http_stream_header(), calls sx_http_stream_begin() exactly once with
 * the status and content type (the headers go out then), pushes the body
 * with sx_http_stream_write()/send() (data pushed before begin is kept)
 * and ends with sx_http_stream_finish(). A JSON reply is begin + write +
 * finish. on_close is as for sx_http_stream_start(); a server stop before
 * begin answers 503 itself. */
sx_http_stream *sx_http_defer(sx_http_req *r, void (*on_close)(void *ctx), void *ctx);
/* Adds a response header before begin. 0, SX_EINVAL after begin,
 * SX_ECANCELED once the client is gone. */
int sx_http_stream_header(sx_http_stream *st, const char *name, const char *value);
/* Starts the response of a deferred stream. 0, SX_EINVAL (not deferred,
 * or begun twice), SX_ECANCELED once the client is gone. */
int sx_http_stream_begin(sx_http_stream *st, int status, const char *content_type);

/* ---- Health and metrics ------------------------------------------------- */

/* Registers GET /healthz (200 {"status":"ok"}, no auth), GET /readyz (200
 * {"status":"ready"} when ready(ctx) returns 1, else 503) and GET /metrics
 * (Prometheus text). is_admin(ctx, r) returns 1 for an admin key, 0 for
 * another valid key (403) and -1 when the key does not authenticate (401).
 * Returns 0 or sx_http_route's error. */
int sx_http_route_health(sx_http_server *s, int (*ready)(void *ctx),
                         int (*is_admin)(void *ctx, sx_http_req *r), void *ctx);

/* Writes the Prometheus text exposition of the server's metrics to out. */
void sx_http_metrics_write(sx_http_server *s, FILE *out);

#endif
