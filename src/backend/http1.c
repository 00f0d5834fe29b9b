/* The upstream backend's own HTTP/1.1 client (see http1.h): a response
 * parser fed bytes in any split, and pools of keep-alive connections on
 * the event loops. A relay through it costs a writev, a read or two and
 * no epoll change on a kept connection, where libcurl spent some 90k
 * instructions a request (bench/gateway/README.md). */
#include "backend/http1.h"

#include "base/err.h"
#include "base/time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Longest response head (status line and headers) accepted. */
#define HEAD_MAX (64 * 1024)
/* Longest chunk-size line (extensions included) and trailer accepted. */
#define LINE_MAX_LEN 4096

/* ---- the response parser ------------------------------------------------ */

static int malformed(struct sx_http1_parser *p, const char *why)
{
    p->error = why;
    return SX_EUPSTREAM;
}

/* The value of a header line "name: value" when its name is name. */
static const char *header_value(const char *line, const char *name)
{
    size_t n = strlen(name);

    if (strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    line += n + 1;
    while (*line == ' ' || *line == '\t')
        line++;
    return line;
}

/* Whether the comma-separated list s has token (any case). */
static bool has_token(const char *s, const char *token)
{
    size_t n = strlen(token);

    while (*s) {
        const char *end;
        size_t len;

        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        end = s;
        while (*end && *end != ',')
            end++;
        len = (size_t)(end - s);
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len == n && strncasecmp(s, token, n) == 0)
            return true;
        s = end;
    }
    return false;
}

/* Whether the last coding of a Transfer-Encoding list is chunked. */
static bool ends_chunked(const char *s)
{
    const char *last = strrchr(s, ',');

    return has_token(last ? last + 1 : s, "chunked");
}

/* The head is complete in p->head (NUL-terminated lines, ending with an
 * empty one): read the status and the framing of the body. */
static int parse_head(struct sx_http1_parser *p, const struct sx_http1_sink *s)
{
    char *line = p->head, *next;
    const char *content_type = "";
    int status, minor;
    bool chunked = false, te = false, close = false, keep = false, length = false;
    uint64_t content_length = 0;

    /* 1. The status line: HTTP/1.x NNN reason. */
    if (strncmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') ||
        line[8] != ' ' || line[9] < '1' || line[9] > '5' || line[10] < '0' ||
        line[10] > '9' || line[11] < '0' || line[11] > '9' ||
        (line[12] != ' ' && line[12] != '\0'))
        return malformed(p, "its status line is not HTTP/1.x");
    minor = line[7] - '0';
    status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');

    /* 2. The headers that frame the body and say what it is. */
    for (line += strlen(line) + 1; *line; line = next) {
        const char *v;

        next = line + strlen(line) + 1;
        if ((v = header_value(line, "content-length"))) {
            uint64_t n = 0;
            const char *d = v;

            for (; *d >= '0' && *d <= '9'; d++) {
                if (n > (UINT64_MAX - 9) / 10)
                    return malformed(p, "its Content-Length is too large");
                n = n * 10 + (uint64_t)(*d - '0');
            }
            while (*d == ' ' || *d == '\t')
                d++;
            if (d == v || *d || (length && n != content_length))
                return malformed(p, "its Content-Length is not one number");
            content_length = n;
            length = true;
        } else if ((v = header_value(line, "transfer-encoding"))) {
            te = true;
            chunked = ends_chunked(v);
        } else if ((v = header_value(line, "connection"))) {
            close |= has_token(v, "close");
            keep |= has_token(v, "keep-alive");
        } else if ((v = header_value(line, "content-type"))) {
            content_type = v;
        }
    }

    /* 3. An interim response (100 Continue) is followed by the real one. */
    if (status < 200) {
        if (status == 101)
            return malformed(p, "it switched protocols, which was never asked for");
        p->head_len = 0;
        return 0;
    }
    p->keep_alive = !close && (minor == 1 || keep);
    s->head(s->ctx, status, content_type);

    /* 4. The body's framing (RFC 9112, 6.3): chunked wins over a length, a
     * transfer coding that is not chunked runs to the close. */
    if (status == 204 || status == 304) {
        p->state = SX_HTTP1_DONE;
    } else if (te) {
        p->state = chunked ? SX_HTTP1_CHUNK_SIZE : SX_HTTP1_TO_CLOSE;
        if (length || !chunked)
            p->keep_alive = false;
    } else if (length) {
        p->left = content_length;
        p->state = content_length ? SX_HTTP1_FIXED : SX_HTTP1_DONE;
    } else {
        p->state = SX_HTTP1_TO_CLOSE;
        p->keep_alive = false;
    }
    return 0;
}

/* Takes head bytes from buf; *used how many. Parses the head once its
 * empty line is in. */
static int take_head(struct sx_http1_parser *p, const char *buf, size_t n,
                     const struct sx_http1_sink *s, size_t *used)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char c = buf[i];

        if (p->head_len + 2 > p->head_cap) {
            size_t cap = p->head_cap ? p->head_cap * 2 : 512;
            char *grown;

            if (cap > HEAD_MAX)
                return malformed(p, "its head is larger than 64 KiB");
            if (!(grown = realloc(p->head, cap)))
                return SX_ENOMEM;
            p->head = grown;
            p->head_cap = cap;
        }
        if (c == '\r')
            continue;
        if (c != '\n') {
            if (c == '\0')
                return malformed(p, "its head has a NUL byte");
            p->head[p->head_len++] = c;
            continue;
        }
        /* A line ends; an empty one (before it a line's NUL) ends the head. */
        if (p->head_len && p->head[p->head_len - 1] != '\0') {
            p->head[p->head_len++] = '\0';
            continue;
        }
        if (p->head_len == 0)
            continue; /* empty lines before a status line are tolerated */
        p->head[p->head_len++] = '\0';
        *used = i + 1;
        return parse_head(p, s);
    }
    *used = n;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int sx_http1_parse(struct sx_http1_parser *p, const char *buf, size_t n,
                   const struct sx_http1_sink *s, size_t *used)
{
    size_t i = 0;

    while (i < n && p->state != SX_HTTP1_DONE) {
        size_t take;
        int rc, d;
        char c;

        switch (p->state) {
        case SX_HTTP1_HEAD:
            rc = take_head(p, buf + i, n - i, s, &take);
            if (rc)
                return rc;
            i += take;
            break;
        case SX_HTTP1_FIXED:
        case SX_HTTP1_CHUNK_DATA:
            take = n - i < p->left ? n - i : (size_t)p->left;
            p->left -= take;
            if (p->left == 0)
                p->state = p->state == SX_HTTP1_FIXED ? SX_HTTP1_DONE : SX_HTTP1_CHUNK_END;
            if (s->body(s->ctx, buf + i, take)) {
                *used = i + take;
                return 1;
            }
            i += take;
            break;
        case SX_HTTP1_TO_CLOSE:
            if (s->body(s->ctx, buf + i, n - i)) {
                *used = n;
                return 1;
            }
            i = n;
            break;
        case SX_HTTP1_CHUNK_SIZE:
            /* hex digits, then extensions (ignored) to the line's end */
            c = buf[i++];
            if (++p->line_len > LINE_MAX_LEN)
                return malformed(p, "a chunk-size line is too long");
            if (c == '\n') {
                if (!p->digits)
                    return malformed(p, "a chunk has no size");
                p->state = p->left ? SX_HTTP1_CHUNK_DATA : SX_HTTP1_TRAILER;
                p->line_len = 0;
                p->digits = p->past_digits = p->in_ext = false;
            } else if (p->in_ext) {
                /* a ";name=value" extension: ignored */
            } else if (!p->past_digits && (d = hex_digit(c)) >= 0) {
                if (p->left > (UINT64_MAX >> 4))
                    return malformed(p, "a chunk size is too large");
                p->left = p->left * 16 + (uint64_t)d;
                p->digits = true;
            } else if (p->digits && c == ';') {
                p->in_ext = true;
            } else if (p->digits && (c == ' ' || c == '\t' || c == '\r')) {
                p->past_digits = true;
            } else {
                return malformed(p, "a chunk size is not hexadecimal");
            }
            break;
        case SX_HTTP1_CHUNK_END:
            c = buf[i++];
            if (c == '\n') {
                p->state = SX_HTTP1_CHUNK_SIZE;
                p->line_len = 0;
            } else if (c != '\r' || p->line_len++) {
                return malformed(p, "a chunk does not end where its size says");
            }
            break;
        case SX_HTTP1_TRAILER:
            c = buf[i++];
            if (c == '\n') {
                if (p->line_len == 0)
                    p->state = SX_HTTP1_DONE;
                p->line_len = 0;
            } else if (c != '\r' && ++p->line_len > LINE_MAX_LEN) {
                return malformed(p, "a trailer line is too long");
            }
            break;
        case SX_HTTP1_DONE:
            break;
        }
    }
    *used = i;
    return 0;
}

int sx_http1_parse_eof(struct sx_http1_parser *p)
{
    if (p->state == SX_HTTP1_TO_CLOSE || p->state == SX_HTTP1_DONE) {
        p->state = SX_HTTP1_DONE;
        return 0;
    }
    return malformed(p, p->state == SX_HTTP1_HEAD ? "the connection closed before a response"
                                                  : "the connection closed mid-response");
}

void sx_http1_parser_reset(struct sx_http1_parser *p)
{
    free(p->head);
    *p = (struct sx_http1_parser){0};
}

/* ---- the target ---------------------------------------------------------- */

/* Whether the proxy environment, as libcurl reads it, sends requests to
 * host through a proxy: http_proxy or all_proxy set, and no_proxy neither
 * "*" nor naming host. */
static bool proxied(const char *host)
{
    const char *proxy = getenv("http_proxy"), *none = getenv("no_proxy");
    size_t n = strlen(host);

    if (!proxy || !*proxy)
        proxy = getenv("all_proxy");
    if (!proxy || !*proxy)
        proxy = getenv("ALL_PROXY");
    if (!proxy || !*proxy)
        return false;
    if (!none)
        none = getenv("NO_PROXY");
    if (!none)
        return true;
    if (strcmp(none, "*") == 0)
        return false;
    for (const char *s = none; *s;) {
        size_t len = strcspn(s, ", ");

        if (len == n && strncasecmp(s, host, n) == 0)
            return false;
        s += len;
        s += strspn(s, ", ");
    }
    return true;
}

int sx_http1_target_parse(const char *url, struct sx_http1_target *t)
{
    const char *auth, *end, *host_at, *port = NULL;
    char host[INET6_ADDRSTRLEN + 1];
    size_t host_len, path_len;
    unsigned long pnum = 80;

    memset(t, 0, sizeof(*t));
    if (strncasecmp(url, "http://", 7) != 0)
        return SX_EUNSUPPORTED;

    /* 1. The authority: [v6]:port or v4:port, no user info. */
    auth = url + 7;
    end = auth + strcspn(auth, "/?#");
    if (memchr(auth, '@', (size_t)(end - auth)) || end == auth ||
        (size_t)(end - auth) >= sizeof(t->host))
        return SX_EUNSUPPORTED;
    if (*auth == '[') {
        const char *close = memchr(auth, ']', (size_t)(end - auth));

        if (!close)
            return SX_EUNSUPPORTED;
        host_at = auth + 1;
        host_len = (size_t)(close - host_at);
        if (close + 1 < end)
            port = *(close + 1) == ':' ? close + 2 : end;
    } else {
        const char *colon = memchr(auth, ':', (size_t)(end - auth));

        host_at = auth;
        host_len = (size_t)((colon ? colon : end) - auth);
        port = colon ? colon + 1 : NULL;
    }
    if (host_len == 0 || host_len >= sizeof(host))
        return SX_EUNSUPPORTED;
    memcpy(host, host_at, host_len);
    host[host_len] = '\0';
    if (port) {
        char *stop;

        if (port >= end || *port < '0' || *port > '9')
            return SX_EUNSUPPORTED;
        pnum = strtoul(port, &stop, 10);
        if (stop != end || pnum == 0 || pnum > 65535)
            return SX_EUNSUPPORTED;
    }

    /* 2. A numeric address only: names are resolved by libcurl, whose
     * resolver does not block a loop. */
    if (*auth == '[') {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&t->addr;

        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return SX_EUNSUPPORTED;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)pnum);
        t->addr_len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&t->addr;

        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return SX_EUNSUPPORTED;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)pnum);
        t->addr_len = sizeof(*a);
    }
    if (proxied(host))
        return SX_EUNSUPPORTED;

    /* 3. The Host header and the path; a query or fragment is not ours. */
    path_len = strlen(end);
    while (path_len && end[path_len - 1] == '/')
        path_len--;
    if (path_len >= sizeof(t->path) || strcspn(end, "?#") < strlen(end))
        return SX_EUNSUPPORTED;
    memcpy(t->host, auth, (size_t)(end - auth));
    memcpy(t->path, end, path_len);
    return 0;
}

/* ---- connections ----------------------------------------------------------- */

/* One TCP connection to the target: carrying an exchange (x), or idle in
 * the pool's list and watched for EPOLLIN, which then means the server
 * closed it (or spoke out of turn) and it goes. */
struct http1_conn {
    struct sx_loop_watch watch;
    sx_http1_pool *pool;
    struct http1_conn *next; /* idle list */
    struct sx_http1_exchange *x;
    uint32_t events;
    bool connecting;
    unsigned uses;           /* exchanges it finished */
};

struct sx_http1_pool {
    sx_loop *loop;
    struct sx_http1_target target;
    char name[80];           /* "address:port", for messages */
    struct http1_conn *idle;
    int n_idle, max_idle;
    char rbuf[64 * 1024];    /* responses are parsed from here */
};

static void conn_close(struct http1_conn *c)
{
    sx_loop_unwatch(c->pool->loop, &c->watch);
    close(c->watch.fd);
    free(c);
}

static int conn_watch(struct http1_conn *c, uint32_t events)
{
    if (c->watch.added && c->events == events)
        return 0;
    c->events = events;
    return sx_loop_watch(c->pool->loop, &c->watch, events);
}

/* Back to the pool after a complete exchange, or closed. */
static void conn_release(struct http1_conn *c, bool reusable)
{
    sx_http1_pool *p = c->pool;

    c->x = NULL;
    c->uses++;
    if (!reusable || p->n_idle >= p->max_idle || conn_watch(c, EPOLLIN) != 0) {
        conn_close(c);
        return;
    }
    c->next = p->idle;
    p->idle = c;
    p->n_idle++;
}

static void idle_remove(sx_http1_pool *p, struct http1_conn *c)
{
    for (struct http1_conn **q = &p->idle; *q; q = &(*q)->next)
        if (*q == c) {
            *q = c->next;
            p->n_idle--;
            return;
        }
}

/* ---- exchanges --------------------------------------------------------------- */

static void conn_io(void *ctx, uint32_t events);
static void exchange_timer(void *ctx);

/* Ends x: its connection kept or closed, then done. x may be freed by
 * done, so nothing touches it after. */
static void exchange_end(struct sx_http1_exchange *x, enum sx_http1_end end, bool reusable,
                         const char *msg)
{
    struct http1_conn *c = x->conn;

    sx_loop_timer_set(x->pool->loop, &x->timer, -1);
    x->conn = NULL;
    if (c)
        conn_release(c, reusable && end == SX_HTTP1_OK);
    sx_http1_parser_reset(&x->parser);
    x->done(x->sink.ctx, end, msg ? msg : "");
}

/* Closes x's connection, if it has one. */
static void exchange_drop_conn(struct sx_http1_exchange *x)
{
    if (x->conn) {
        conn_close(x->conn);
        x->conn = NULL;
    }
}

/* A failure, reported from the timer: never from inside sx_http1_send. */
static void exchange_fail_later(struct sx_http1_exchange *x, enum sx_http1_end end)
{
    exchange_drop_conn(x);
    x->end = end;
    sx_loop_timer_set(x->pool->loop, &x->timer, 0);
}

static void exchange_fail(struct sx_http1_exchange *x, enum sx_http1_end end)
{
    if (x->sending) {
        exchange_fail_later(x, end);
        return;
    }
    exchange_drop_conn(x);
    exchange_end(x, end, false, x->msg);
}

/* Writes what is left of the request; watches for the response (and for
 * room to write, while some is left). 0 while x goes on on its
 * connection; 1 when it ended (x may be gone) or moved to a new one. */
static int exchange_write(struct sx_http1_exchange *x);
static int exchange_connect(struct sx_http1_exchange *x, bool fresh);

/* A kept connection failed before any of the response: the server had
 * closed it. Sends the request once more on a new one. Returns 1 when it
 * does not apply. */
static int exchange_retry(struct sx_http1_exchange *x)
{
    if (x->retried || x->answered || !x->conn || x->conn->uses == 0)
        return 1;
    x->retried = true;
    exchange_drop_conn(x);
    x->sent = 0;
    sx_http1_parser_reset(&x->parser);
    /* Not another kept one: the server may have closed them all. */
    if (exchange_connect(x, true) != 0) {
        snprintf(x->msg, sizeof(x->msg), "out of memory");
        exchange_fail(x, SX_HTTP1_BROKEN);
    } else if (x->conn && !x->conn->connecting) {
        exchange_write(x);
    }
    return 0;
}

static int exchange_write(struct sx_http1_exchange *x)
{
    struct iovec iov[4];
    struct msghdr mh = {.msg_iov = iov};
    size_t skip = x->sent;
    ssize_t n;

    for (int i = 0; i < x->iov_n; i++) {
        if (skip >= x->iov[i].iov_len) {
            skip -= x->iov[i].iov_len;
            continue;
        }
        iov[mh.msg_iovlen].iov_base = (char *)x->iov[i].iov_base + skip;
        iov[mh.msg_iovlen++].iov_len = x->iov[i].iov_len - skip;
        skip = 0;
    }
    n = sendmsg(x->conn->watch.fd, &mh, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        int e = errno;

        if (exchange_retry(x) == 0)
            return 1;
        snprintf(x->msg, sizeof(x->msg), "send() to %s failed: %s", x->pool->name,
                 strerror(e));
        exchange_fail(x, SX_HTTP1_BROKEN);
        return 1;
    }
    if (n > 0)
        x->sent += (size_t)n;
    if (conn_watch(x->conn, x->sent < x->total ? EPOLLIN | EPOLLOUT : EPOLLIN) != 0) {
        snprintf(x->msg, sizeof(x->msg), "cannot watch the connection to %s",
                 x->pool->name);
        exchange_fail(x, SX_HTTP1_BROKEN);
        return 1;
    }
    return 0;
}

static void exchange_read(struct sx_http1_exchange *x)
{
    sx_http1_pool *p = x->pool;
    ssize_t n = recv(x->conn->watch.fd, p->rbuf, sizeof(p->rbuf), 0);
    size_t used = 0;
    int rc;

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        int e = n < 0 ? errno : 0;

        if (exchange_retry(x) == 0)
            return;
        if (n == 0 && sx_http1_parse_eof(&x->parser) == 0) {
            exchange_end(x, SX_HTTP1_OK, false, NULL);
            return;
        }
        if (e)
            snprintf(x->msg, sizeof(x->msg), "recv() from %s failed: %s", p->name,
                     strerror(e));
        else
            snprintf(x->msg, sizeof(x->msg), "%s: %s", p->name,
                     x->answered ? "the connection closed mid-response"
                                 : "the connection closed without a response");
        exchange_fail(x, SX_HTTP1_BROKEN);
        return;
    }
    x->answered = true;
    rc = sx_http1_parse(&x->parser, p->rbuf, (size_t)n, &x->sink, &used);
    if (rc == 1) {
        exchange_fail(x, SX_HTTP1_STOPPED);
    } else if (rc) {
        snprintf(x->msg, sizeof(x->msg), "%s sent a malformed HTTP response: %s", p->name,
                 rc == SX_ENOMEM ? "out of memory" : x->parser.error);
        exchange_fail(x, SX_HTTP1_BROKEN);
    } else if (x->parser.state == SX_HTTP1_DONE) {
        /* Reused only if nothing else came and the request went whole. */
        exchange_end(x, SX_HTTP1_OK,
                     x->parser.keep_alive && used == (size_t)n && x->sent == x->total, NULL);
    }
}

static void conn_io(void *ctx, uint32_t events)
{
    struct http1_conn *c = ctx;
    struct sx_http1_exchange *x = c->x;

    if (!x) { /* idle: the server closed it, or sent what nobody asked */
        idle_remove(c->pool, c);
        conn_close(c);
        return;
    }
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(c->watch.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err == 0 && !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            snprintf(x->msg, sizeof(x->msg), "connect() to %s failed: %s", c->pool->name,
                     strerror(err ? err : ECONNREFUSED));
            exchange_fail(x, SX_HTTP1_UNREACHABLE);
            return;
        }
        c->connecting = false;
        sx_loop_timer_set(c->pool->loop, &x->timer, -1);
        exchange_write(x);
        return;
    }
    if ((events & EPOLLOUT) && x->sent < x->total && exchange_write(x) != 0)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        exchange_read(x);
}

/* Gives x a connection: an idle one unless fresh, else a new one
 * (connecting, with the timeout armed). 0, or SX_ENOMEM; a failure to
 * connect is reported later. */
static int exchange_connect(struct sx_http1_exchange *x, bool fresh)
{
    sx_http1_pool *p = x->pool;
    struct http1_conn *c = fresh ? NULL : p->idle;
    int fd, one = 1;

    if (c) {
        p->idle = c->next;
        p->n_idle--;
        c->x = x;
        x->conn = c;
        return 0;
    }
    if (!(c = calloc(1, sizeof(*c))))
        return SX_ENOMEM;
    fd = socket(p->target.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        free(c);
        snprintf(x->msg, sizeof(x->msg), "socket() for %s failed: %s", p->name,
                 strerror(errno));
        exchange_fail_later(x, SX_HTTP1_UNREACHABLE);
        return 0;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->watch = (struct sx_loop_watch){fd, conn_io, c, false};
    c->pool = p;
    c->x = x;
    x->conn = c;
    if (connect(fd, (struct sockaddr *)&p->target.addr, p->target.addr_len) == 0)
        return 0;
    if (errno != EINPROGRESS) {
        snprintf(x->msg, sizeof(x->msg), "connect() to %s failed: %s", p->name,
                 strerror(errno));
        exchange_fail_later(x, SX_HTTP1_UNREACHABLE);
        return 0;
    }
    c->connecting = true;
    if (conn_watch(c, EPOLLOUT) != 0) {
        snprintf(x->msg, sizeof(x->msg), "cannot watch the connection to %s", p->name);
        exchange_fail_later(x, SX_HTTP1_BROKEN);
        return 0;
    }
    sx_loop_timer_set(p->loop, &x->timer,
                      sx_time_mono_ns() + (int64_t)x->connect_ms * 1000000);
    return 0;
}

/* The connect timeout, or a failure reported after sx_http1_send. */
static void exchange_timer(void *ctx)
{
    struct sx_http1_exchange *x = ctx;

    if (x->conn && x->conn->connecting) {
        snprintf(x->msg, sizeof(x->msg), "%s did not accept the connection within %d ms",
                 x->pool->name, x->connect_ms);
        exchange_fail(x, SX_HTTP1_CONNECT_TIMEOUT);
        return;
    }
    exchange_end(x, x->end, false, x->msg);
}

int sx_http1_send(sx_http1_pool *p, struct sx_http1_exchange *x, const struct iovec *iov,
                  int iov_n, int connect_ms, const struct sx_http1_sink *sink,
                  sx_http1_done done)
{
    memset(x, 0, sizeof(*x));
    x->pool = p;
    x->iov_n = iov_n < 4 ? iov_n : 4;
    for (int i = 0; i < x->iov_n; i++) {
        x->iov[i] = iov[i];
        x->total += iov[i].iov_len;
    }
    x->sink = *sink;
    x->done = done;
    x->connect_ms = connect_ms;
    x->timer = (struct sx_loop_timer){.fn = exchange_timer, .ctx = x};
    x->sending = true;
    if (exchange_connect(x, false) != 0)
        return SX_ENOMEM;
    if (x->conn && !x->conn->connecting)
        exchange_write(x);
    x->sending = false;
    return 0;
}

void sx_http1_abort(struct sx_http1_exchange *x)
{
    sx_loop_timer_set(x->pool->loop, &x->timer, -1);
    exchange_drop_conn(x);
    sx_http1_parser_reset(&x->parser);
}

/* ---- pools ------------------------------------------------------------------ */

sx_http1_pool *sx_http1_pool_new(sx_loop *l, const struct sx_http1_target *t, int max_idle)
{
    sx_http1_pool *p = calloc(1, sizeof(*p));
    char addr[INET6_ADDRSTRLEN] = "?", port[8] = "?";

    if (!p)
        return NULL;
    p->loop = l;
    p->target = *t;
    p->max_idle = max_idle;
    getnameinfo((const struct sockaddr *)&t->addr, t->addr_len, addr, sizeof(addr), port,
                sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(p->name, sizeof(p->name), t->addr.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
             addr, port);
    return p;
}

void sx_http1_pool_free(sx_http1_pool *p)
{
    if (!p)
        return;
    while (p->idle) {
        struct http1_conn *c = p->idle;

        p->idle = c->next;
        conn_close(c);
    }
    free(p);
}
