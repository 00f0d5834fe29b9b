/* Internal to src/backend/: the HTTP/1.1 client the upstream backend
 * relays with when its upstream is plain HTTP at an IP address. It runs
 * on an event loop (base/loop.h): a pool of keep-alive connections to one
 * target per loop, one request at a time on each, no thread and no copy
 * of the body it sends. libcurl stays the client for everything else
 * (TLS, host names, proxies) and for relays off the loops.
 *
 * The response parser is separate and pure, so that it can be fed any
 * split of a response's bytes. */
#ifndef SX_BACKEND_HTTP1_H
#define SX_BACKEND_HTTP1_H

#include "base/loop.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ---- the response parser --------------------------------------------- */

/* What a response's parts go to; body returns nonzero to stop. */
struct sx_http1_sink {
    void *ctx;
    void (*head)(void *ctx, int status, const char *content_type);
    int (*body)(void *ctx, const char *p, size_t n);
};

enum sx_http1_state {
    SX_HTTP1_HEAD,        /* reading the status line and headers */
    SX_HTTP1_FIXED,       /* a Content-Length body */
    SX_HTTP1_CHUNK_SIZE,  /* chunked: a size line */
    SX_HTTP1_CHUNK_DATA,
    SX_HTTP1_CHUNK_END,   /* the CRLF after a chunk's data */
    SX_HTTP1_TRAILER,     /* header lines after the last chunk */
    SX_HTTP1_TO_CLOSE,    /* a body that ends when the connection does */
    SX_HTTP1_DONE,
};

/* Zeroed, it is ready for a response; fields are private. */
struct sx_http1_parser {
    enum sx_http1_state state;
    char *head;          /* the head read so far (owned) */
    size_t head_len, head_cap;
    uint64_t left;       /* FIXED, CHUNK_DATA: bytes to come */
    size_t line_len;     /* CHUNK_SIZE, CHUNK_END, TRAILER: bytes of the line */
    bool digits;         /* CHUNK_SIZE: a hex digit was seen */
    bool past_digits;    /* CHUNK_SIZE: whitespace after the digits */
    bool in_ext;         /* CHUNK_SIZE: in an extension */
    bool keep_alive;     /* the connection may carry another request */
    const char *error;   /* why the response is malformed */
};

/* Feeds n bytes of the response. 0: all taken (more may be needed: see
 * state); 1: the sink's body asked to stop; SX_EUPSTREAM: malformed (the
 * reason in p->error). *used says how many bytes belonged to the
 * response; bytes after its end are left. */
int sx_http1_parse(struct sx_http1_parser *p, const char *buf, size_t n,
                   const struct sx_http1_sink *s, size_t *used);
/* The connection closed: 0 when that ends the response (a body read to
 * the close), else SX_EUPSTREAM. */
int sx_http1_parse_eof(struct sx_http1_parser *p);
/* Frees the head buffer and zeroes p for the next response. */
void sx_http1_parser_reset(struct sx_http1_parser *p);

/* ---- the client -------------------------------------------------------- */

/* Where requests go: parsed once from an upstream's base URL. */
struct sx_http1_target {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[64];   /* the Host header: the URL's host and port as written */
    char path[1024]; /* the URL's path, without a trailing slash */
};

/* 0 and t filled when url is http:// with a numeric host (IPv4, or IPv6
 * in brackets), no user info, and no proxy from the environment applies
 * to it (http_proxy, all_proxy unless no_proxy is "*" or names the host);
 * else SX_EUNSUPPORTED: libcurl's case. */
int sx_http1_target_parse(const char *url, struct sx_http1_target *t);

typedef struct sx_http1_pool sx_http1_pool;

/* Connections of one target on loop l, at most max_idle of them kept
 * open between requests. NULL when out of memory. Loop thread only. */
sx_http1_pool *sx_http1_pool_new(sx_loop *l, const struct sx_http1_target *t,
                                 int max_idle);
/* Closes the idle connections; the pool's exchanges must have ended or
 * been aborted. Accepts NULL. */
void sx_http1_pool_free(sx_http1_pool *p);

enum sx_http1_end {
    SX_HTTP1_OK,              /* the whole response was read */
    SX_HTTP1_STOPPED,         /* the sink's body asked to stop */
    SX_HTTP1_UNREACHABLE,     /* the connection could not be made */
    SX_HTTP1_CONNECT_TIMEOUT, /* ... within the connect timeout */
    SX_HTTP1_BROKEN,          /* it broke, or the response is malformed */
};

/* An exchange's end: how, and for anything but OK and STOPPED, why, in
 * words that name the target. */
typedef void (*sx_http1_done)(void *ctx, enum sx_http1_end end, const char *msg);

/* One request and its response, in memory the caller provides and keeps
 * until done is called or the exchange is aborted; fields are private. */
struct sx_http1_exchange {
    sx_http1_pool *pool;
    struct http1_conn *conn;
    struct iovec iov[4];
    int iov_n;
    size_t total, sent;
    struct sx_http1_parser parser;
    struct sx_http1_sink sink;
    sx_http1_done done;
    struct sx_loop_timer timer; /* connect timeout; a failure to report */
    int connect_ms;
    bool retried, answered, sending;
    enum sx_http1_end end;      /* a failure the timer reports */
    char msg[192];
};

/* Sends the request in iov (at most 4 parts; the memory they point to
 * stays the caller's and must live until the end) on an idle connection
 * or a new one, and reads the response into sink. Every outcome, even an
 * immediate failure to connect, arrives later through done, never from
 * inside this call. 0, or SX_ENOMEM (nothing started, done never
 * called). A request that meets a kept connection the server had closed
 * is sent again once, on a newly opened connection, as long as nothing of
 * a response came back. */
int sx_http1_send(sx_http1_pool *p, struct sx_http1_exchange *x, const struct iovec *iov,
                  int iov_n, int connect_ms, const struct sx_http1_sink *sink,
                  sx_http1_done done);
/* Ends x now without calling done; its connection is closed. */
void sx_http1_abort(struct sx_http1_exchange *x);

#endif
