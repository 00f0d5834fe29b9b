/* Tests of backend/http1, the upstream backend's own HTTP/1.1 client.
 * The response parser is fed a set of complete responses (a length, chunks
 * with extensions and trailers, bare LF line ends, a body to the close,
 * interim 1xx responses, 204 and 304, HTTP/1.0, Connection and
 * Transfer-Encoding lists) whole, a byte at a time and split at every point
 * into two, and must give the same status, content type, body, keep-alive
 * and end each time, leaving the bytes after a response unread; malformed
 * responses are refused with a reason, a sink can stop the body, and the
 * end of the connection ends only a body read to the close. Target URLs are
 * parsed against a table and against the proxy environment. The client
 * runs on a real loop against a scripted server on loopback: connection
 * reuse and what is not reused, a transparent retry when a kept connection
 * was closed, refused connections, a response cut short or malformed, a
 * sink that stops, aborted exchanges, and a request and a response larger
 * than the socket buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backend/http1.h"
#include "base/err.h"
#include "base/loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Waits up to 5 s for *v to reach want; whether it did. */
static bool wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 5000 && atomic_load(v) < want; i++)
        usleep(1000);
    return atomic_load(v) >= want;
}

static void clear_proxy_env(void)
{
    static const char *const names[] = {"http_proxy", "HTTP_PROXY", "all_proxy",
                                        "ALL_PROXY",  "no_proxy",   "NO_PROXY"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unsetenv(names[i]);
}

/* ---- the parser: a sink that records what it got -------------------------- */

struct got {
    int heads, status, body_calls;
    int stop_at; /* body returns 1 at this call (1-based); 0 never */
    char ctype[64];
    char body[1024];
    size_t body_len;
};

static void got_head(void *ctx, int status, const char *content_type)
{
    struct got *g = ctx;

    g->heads++;
    g->status = status;
    snprintf(g->ctype, sizeof(g->ctype), "%s", content_type);
}

static int got_body(void *ctx, const char *p, size_t n)
{
    struct got *g = ctx;

    g->body_calls++;
    if (g->body_len + n <= sizeof(g->body))
        memcpy(g->body + g->body_len, p, n);
    g->body_len += n;
    return g->stop_at && g->body_calls >= g->stop_at;
}

/* ---- the parser: complete responses -------------------------------------- */

#define NEXT_RESPONSE "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

struct resp_case {
    const char *name;
    const char *text;  /* the response */
    bool to_close;     /* its body ends with the connection: nothing may follow it */
    int status;
    const char *ctype;
    const char *body;
    bool keep_alive;
};

static const struct resp_case resp_cases[] = {
    {"a Content-Length body",
     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
     "{\"a\":[1,2]}",
     false, 200, "application/json", "{\"a\":[1,2]}", true},
    {"chunks with extensions and a trailer",
     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
     "\r\n5;a=b\r\nhello\r\n1 ; c\r\n \r\na\r\n0123456789\r\nB\r\nabcdefghijk\r\n"
     "0003\r\nxyz\r\n0;end=1\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n",
     false, 200, "text/event-stream", "hello 0123456789abcdefghijkxyz", true},
    {"chunks with bare LF line ends",
     "HTTP/1.1 201 Created\nTransfer-Encoding: chunked\n\n3\nabc\n2\nde\n0\n\n", false, 201,
     "", "abcde", true},
    {"a body to the close",
     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this\r\nuntil the close\r\n",
     true, 200, "text/plain", "all of this\r\nuntil the close\r\n", false},
    {"100 Continue, then the response",
     "HTTP/1.1 100 Continue\r\n\r\n"
     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
     false, 200, "text/plain", "hi", true},
    {"103 with headers and 100, then the response",
     "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
     false, 404, "", "", true},
    {"204 has no body", "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n\r\n", false,
     204, "text/plain", "", true},
    {"304 has no body despite a length",
     "HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\n\r\n", false, 304, "", "", true},
    {"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", false, 200, "",
     "abc", false},
    {"HTTP/1.0 with keep-alive",
     "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\nabc", false, 200,
     "", "abc", true},
    {"HTTP/1.0 with keep-alive but no length",
     "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nto the end", true, 200, "",
     "to the end", false},
    {"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
     false, 200, "", "abc", false},
    {"close in a Connection list",
     "HTTP/1.1 200 OK\r\nconnection: Upgrade , CLOSE\r\ncontent-length: 3\r\n\r\nabc", false,
     200, "", "abc", false},
    {"Transfer-Encoding gzip, chunked",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\ngzip\r\n0\r\n\r\n", false,
     200, "", "gzip", true},
    {"Transfer-Encoding chunked, gzip runs to the close",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n4\r\ngzip\r\n0\r\n\r\n", true,
     200, "", "4\r\ngzip\r\n0\r\n\r\n", false},
    {"Transfer-Encoding gzip runs to the close",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz", true, 200, "", "zzz", false},
    {"chunked wins over a length, and closes",
     "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
     "2\r\nok\r\n0\r\n\r\n",
     false, 200, "", "ok", false},
    {"Content-Length 0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, 200, "", "",
     true},
    {"equal lengths twice, any case, blanks",
     "HTTP/1.1 500 Internal Server Error\r\nCONTENT-LENGTH:  4 \r\ncontent-length: 4\r\n"
     "content-TYPE:\ttext/x\r\n\r\nboom",
     false, 500, "text/x", "boom", true},
    {"empty lines first, no reason phrase",
     "\r\n\r\nHTTP/1.1 404\r\nContent-Length: 1\r\n\r\nx", false, 404, "", "x", true},
};

struct feed_result {
    struct got got;
    size_t used;
    bool keep_alive;
    enum sx_http1_state state;
};

/* Feeds buf to a fresh parser in pieces: first bytes, then step bytes at
 * a time (step 0: the rest at once). Pieces after the response's end are
 * still offered and must be left whole. A body to the close is ended by
 * parse_eof. */
static void feed(const char *buf, size_t len, size_t first, size_t step,
                 struct feed_result *out)
{
    struct sx_http1_parser p = {0};
    struct sx_http1_sink s = {&out->got, got_head, got_body};
    size_t off = 0, want = first;
    bool ended = false;

    memset(out, 0, sizeof(*out));
    do {
        size_t n = want < len - off ? want : len - off, used = (size_t)-1;

        assert_int_equal(sx_http1_parse(&p, buf + off, n, &s, &used), 0);
        assert_null(p.error);
        if (ended) {
            assert_int_equal(used, 0); /* bytes after the end are left */
        } else {
            assert_true(used <= n);
            out->used += used;
            if (p.state == SX_HTTP1_DONE)
                ended = true;
            else
                assert_int_equal(used, n);
        }
        off += n;
        want = step ? step : len - off;
    } while (off < len);
    if (p.state == SX_HTTP1_TO_CLOSE) {
        assert_int_equal(sx_http1_parse_eof(&p), 0);
        assert_int_equal(p.state, SX_HTTP1_DONE);
    }
    out->keep_alive = p.keep_alive;
    out->state = p.state;
    sx_http1_parser_reset(&p);
}

static void check_result(const struct resp_case *c, const struct feed_result *r,
                         const char *how, size_t at)
{
    size_t body_len = strlen(c->body);

    if (r->state != SX_HTTP1_DONE || r->got.heads != 1 || r->got.status != c->status ||
        strcmp(r->got.ctype, c->ctype) != 0 || r->got.body_len != body_len ||
        memcmp(r->got.body, c->body, body_len) != 0 || r->keep_alive != c->keep_alive ||
        r->used != strlen(c->text))
        fail_msg("%s, fed %s %zu: state %d, %d heads, status %d, type \"%s\", "
                 "body \"%.*s\" (%zu), keep-alive %d, used %zu of %zu",
                 c->name, how, at, (int)r->state, r->got.heads, r->got.status, r->got.ctype,
                 (int)(r->got.body_len < sizeof(r->got.body) ? r->got.body_len : 0),
                 r->got.body, r->got.body_len, (int)r->keep_alive, r->used, strlen(c->text));
}

static void test_parse_complete_responses_in_any_split(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(resp_cases) / sizeof(resp_cases[0]); k++) {
        const struct resp_case *c = &resp_cases[k];
        char buf[1024];
        size_t len;
        struct feed_result whole, r;

        /* A second response follows unless the body runs to the close. */
        snprintf(buf, sizeof(buf), "%s%s", c->text, c->to_close ? "" : NEXT_RESPONSE);
        len = strlen(buf);
        assert_true(len < sizeof(buf) - 1);

        feed(buf, len, len, 0, &whole);
        check_result(c, &whole, "whole", len);
        if (!c->to_close)
            assert_true(whole.used < len);
        feed(buf, len, 1, 1, &r);
        check_result(c, &r, "bytes", 1);
        for (size_t at = 0; at <= len; at++) {
            feed(buf, len, at, 0, &r);
            check_result(c, &r, "split at", at);
            assert_int_equal(r.used, whole.used);
            assert_int_equal(r.got.status, whole.got.status);
        }
    }
}

/* Two responses back to back, each parsed by the same parser after a reset. */
static void test_parse_pipelined_responses(void **state)
{
    const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                      "HTTP/1.1 201 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n";
    struct sx_http1_parser p = {0};
    struct got g = {0};
    struct sx_http1_sink s = {&g, got_head, got_body};
    size_t len = strlen(two), used = 0, first;

    (void)state;
    assert_int_equal(sx_http1_parse(&p, two, len, &s, &used), 0);
    assert_int_equal(p.state, SX_HTTP1_DONE);
    first = used;
    assert_int_equal(first, strlen("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"));
    /* a parser at its end takes nothing more */
    assert_int_equal(sx_http1_parse(&p, two + first, len - first, &s, &used), 0);
    assert_int_equal(used, 0);
    sx_http1_parser_reset(&p);
    assert_int_equal(sx_http1_parse(&p, two + first, len - first, &s, &used), 0);
    assert_int_equal(used, len - first);
    assert_int_equal(p.state, SX_HTTP1_DONE);
    assert_int_equal(g.heads, 2);
    assert_int_equal(g.status, 201);
    assert_int_equal(g.body_len, 5);
    assert_memory_equal(g.body, "abcde", 5);
    sx_http1_parser_reset(&p);
}

/* ---- the parser: malformed responses -------------------------------------- */

/* Feeds buf (whole, a byte at a time, and split in two where it is short)
 * and expects SX_EUPSTREAM with a reason each time. */
static void expect_malformed(const char *buf, size_t len)
{
    struct got g = {0};
    struct sx_http1_sink s = {&g, got_head, got_body};
    struct sx_http1_parser p = {0};
    size_t used;
    int rc = 0;

    assert_int_equal(sx_http1_parse(&p, buf, len, &s, &used), SX_EUPSTREAM);
    if (!p.error)
        fail_msg("no reason for \"%.*s\"", (int)(len < 80 ? len : 80), buf);
    sx_http1_parser_reset(&p);

    for (size_t i = 0; i < len && rc == 0; i++) {
        rc = sx_http1_parse(&p, buf + i, 1, &s, &used);
        if (rc == 0)
            assert_int_equal(used, 1);
    }
    assert_int_equal(rc, SX_EUPSTREAM);
    assert_non_null(p.error);
    sx_http1_parser_reset(&p);

    for (size_t at = 0; len <= 2048 && at <= len; at++) {
        rc = sx_http1_parse(&p, buf, at, &s, &used);
        if (rc == 0)
            rc = sx_http1_parse(&p, buf + at, len - at, &s, &used);
        assert_int_equal(rc, SX_EUPSTREAM);
        assert_non_null(p.error);
        sx_http1_parser_reset(&p);
    }
}

#define CHUNKED_HEAD "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_parse_malformed(void **state)
{
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "FOO\r\n\r\n",
        "HTTP/1.2 200 OK\r\n\r\n",
        "http/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 600 High\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        CHUNKED_HEAD "zz\r\n",
        CHUNKED_HEAD "5x\r\nhello\r\n0\r\n\r\n",
        CHUNKED_HEAD "5\r7\r\nhello\r\n0\r\n\r\n",
        CHUNKED_HEAD "5 5\r\nhello\r\n0\r\n\r\n",
        CHUNKED_HEAD ";a=b\r\nhello\r\n0\r\n\r\n",
        CHUNKED_HEAD "\r\n",
        CHUNKED_HEAD "5\r\nhelloX\r\n0\r\n\r\n",
        CHUNKED_HEAD "5\r\nhello\r\r\n0\r\n\r\n",
        CHUNKED_HEAD "5\r\nhello0\r\n\r\n",
        CHUNKED_HEAD "10000000000000000\r\n",
        CHUNKED_HEAD "fffffffffffffffff\r\n",
    };
    static const char nul_head[] = "HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n";
    static const char nul_status[] = "HTTP/1.1 200 O\0K\r\nContent-Length: 0\r\n\r\n";
    char *big;
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_malformed(bad[i], strlen(bad[i]));
    expect_malformed(nul_head, sizeof(nul_head) - 1);
    expect_malformed(nul_status, sizeof(nul_status) - 1);

    /* a head over 64 KiB */
    big = malloc(80 * 1024);
    assert_non_null(big);
    n = (size_t)sprintf(big, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big + n, 'a', 70000);
    n += 70000;
    n += (size_t)sprintf(big + n, "\r\nContent-Length: 0\r\n\r\n");
    expect_malformed(big, n);

    /* a chunk-size line, and a trailer line, too long */
    n = (size_t)sprintf(big, CHUNKED_HEAD "5;");
    memset(big + n, 'e', 5000);
    n += 5000;
    n += (size_t)sprintf(big + n, "\r\nhello\r\n0\r\n\r\n");
    expect_malformed(big, n);
    n = (size_t)sprintf(big, CHUNKED_HEAD "0\r\nX-T: ");
    memset(big + n, 'e', 5000);
    n += 5000;
    n += (size_t)sprintf(big + n, "\r\n\r\n");
    expect_malformed(big, n);
    free(big);
}

/* Lenient or not, the limits themselves are accepted: a head just under
 * 64 KiB, and the largest chunk size that fits. */
static void test_parse_limits_accepted(void **state)
{
    struct got g = {0};
    struct sx_http1_sink s = {&g, got_head, got_body};
    struct sx_http1_parser p = {0};
    const char *huge = CHUNKED_HEAD "ffffffffffffffff\r\nabc";
    char *big = malloc(64 * 1024);
    size_t n, used;

    (void)state;
    assert_non_null(big);
    n = (size_t)sprintf(big, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big + n, 'a', 60000);
    n += 60000;
    n += (size_t)sprintf(big + n, "\r\nContent-Length: 2\r\n\r\nok");
    assert_int_equal(sx_http1_parse(&p, big, n, &s, &used), 0);
    assert_int_equal(used, n);
    assert_int_equal(p.state, SX_HTTP1_DONE);
    assert_int_equal(g.body_len, 2);
    sx_http1_parser_reset(&p);
    free(big);

    memset(&g, 0, sizeof(g));
    assert_int_equal(sx_http1_parse(&p, huge, strlen(huge), &s, &used), 0);
    assert_int_equal(used, strlen(huge));
    assert_int_equal(p.state, SX_HTTP1_CHUNK_DATA);
    assert_int_equal(g.body_len, 3);
    sx_http1_parser_reset(&p);
}

/* ---- the parser: a sink that stops, the end of the connection, reset ---- */

static void test_parse_sink_stops(void **state)
{
    const char *fixed = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world" NEXT_RESPONSE;
    const char *chunked = CHUNKED_HEAD "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    const char *to_close = "HTTP/1.1 200 OK\r\n\r\nsome body";
    struct got g = {0};
    struct sx_http1_sink s = {&g, got_head, got_body};
    struct sx_http1_parser p = {0};
    size_t used = 0;
    int rc = 0;

    (void)state;
    g.stop_at = 1;
    assert_int_equal(sx_http1_parse(&p, fixed, strlen(fixed), &s, &used), 1);
    assert_int_equal(used, strlen(fixed) - strlen(NEXT_RESPONSE));
    assert_int_equal(g.body_len, 11);
    sx_http1_parser_reset(&p);

    for (int stop = 1; stop <= 2; stop++) {
        const char *at = strstr(chunked, stop == 1 ? "hello" : " world");

        memset(&g, 0, sizeof(g));
        g.stop_at = stop;
        assert_int_equal(sx_http1_parse(&p, chunked, strlen(chunked), &s, &used), 1);
        assert_int_equal(used, (size_t)(at - chunked) + (stop == 1 ? 5 : 6));
        assert_int_equal(g.body_len, stop == 1 ? 5 : 11);
        sx_http1_parser_reset(&p);
    }

    /* a byte at a time: the third body byte stops it */
    memset(&g, 0, sizeof(g));
    g.stop_at = 3;
    for (size_t i = 0; i < strlen(fixed) && rc == 0; i++) {
        rc = sx_http1_parse(&p, fixed + i, 1, &s, &used);
        assert_int_equal(used, 1);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(g.body_len, 3);
    assert_memory_equal(g.body, "hel", 3);
    sx_http1_parser_reset(&p);

    memset(&g, 0, sizeof(g));
    g.stop_at = 1;
    assert_int_equal(sx_http1_parse(&p, to_close, strlen(to_close), &s, &used), 1);
    assert_int_equal(used, strlen(to_close));
    sx_http1_parser_reset(&p);
}

static void test_parse_eof(void **state)
{
    static const struct {
        const char *text;
        int rc;
    } cases[] = {
        {"", SX_EUPSTREAM},
        {"\r\n", SX_EUPSTREAM},
        {"HTTP/1.1 200 OK\r\nContent-Le", SX_EUPSTREAM},
        {"HTTP/1.1 100 Continue\r\n\r\n", SX_EUPSTREAM},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", SX_EUPSTREAM},
        {CHUNKED_HEAD "5\r\nhel", SX_EUPSTREAM},
        {CHUNKED_HEAD "5\r\nhello", SX_EUPSTREAM},
        {CHUNKED_HEAD "5\r\nhello\r\n", SX_EUPSTREAM},
        {CHUNKED_HEAD "5\r\nhello\r\n0\r\n", SX_EUPSTREAM},
        {"HTTP/1.1 200 OK\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\n\r\nto the close", 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0},
        {CHUNKED_HEAD "0\r\n\r\n", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct got g = {0};
        struct sx_http1_sink s = {&g, got_head, got_body};
        struct sx_http1_parser p = {0};
        size_t used;
        int rc;

        assert_int_equal(sx_http1_parse(&p, cases[i].text, strlen(cases[i].text), &s, &used),
                         0);
        rc = sx_http1_parse_eof(&p);
        if (rc != cases[i].rc)
            fail_msg("eof after \"%s\": %d, not %d", cases[i].text, rc, cases[i].rc);
        if (rc == 0)
            assert_int_equal(p.state, SX_HTTP1_DONE);
        else
            assert_non_null(p.error);
        sx_http1_parser_reset(&p);
    }
}

static void test_parse_reset(void **state)
{
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct got g = {0};
    struct sx_http1_sink s = {&g, got_head, got_body};
    struct sx_http1_parser p = {0};
    size_t used;

    (void)state;
    sx_http1_parser_reset(&p); /* a zeroed parser */

    /* mid-head: the head buffer is held, then freed */
    assert_int_equal(sx_http1_parse(&p, ok, 20, &s, &used), 0);
    assert_int_equal(p.state, SX_HTTP1_HEAD);
    assert_non_null(p.head);
    sx_http1_parser_reset(&p);
    assert_null(p.head);
    assert_int_equal(p.head_len, 0);
    assert_int_equal(p.state, SX_HTTP1_HEAD);

    /* mid-body, then a whole response on the same parser */
    assert_int_equal(sx_http1_parse(&p, ok, strlen(ok) - 1, &s, &used), 0);
    assert_int_equal(p.state, SX_HTTP1_FIXED);
    assert_true(p.keep_alive);
    sx_http1_parser_reset(&p);
    assert_false(p.keep_alive);
    assert_int_equal(p.left, 0);
    memset(&g, 0, sizeof(g));
    assert_int_equal(sx_http1_parse(&p, ok, strlen(ok), &s, &used), 0);
    assert_int_equal(p.state, SX_HTTP1_DONE);
    assert_int_equal(g.heads, 1);
    assert_int_equal(g.body_len, 2);

    /* after an error, the reason goes too */
    sx_http1_parser_reset(&p);
    assert_int_equal(sx_http1_parse(&p, "FOO\r\n\r\n", 7, &s, &used), SX_EUPSTREAM);
    assert_non_null(p.error);
    sx_http1_parser_reset(&p);
    assert_null(p.error);
    assert_null(p.head);
    sx_http1_parser_reset(&p);
}

/* ---- targets --------------------------------------------------------------- */

static void test_target_parse(void **state)
{
    static const struct {
        const char *url;
        int rc;
        const char *host, *path;
        int family, port;
    } cases[] = {
        {"http://127.0.0.1:8000/v1/", 0, "127.0.0.1:8000", "/v1", AF_INET, 8000},
        {"http://127.0.0.1:8000/v1", 0, "127.0.0.1:8000", "/v1", AF_INET, 8000},
        {"http://10.0.0.1", 0, "10.0.0.1", "", AF_INET, 80},
        {"http://10.0.0.1/", 0, "10.0.0.1", "", AF_INET, 80},
        {"HTTP://10.0.0.1:1/a/b//", 0, "10.0.0.1:1", "/a/b", AF_INET, 1},
        {"http://1.2.3.4/a@b", 0, "1.2.3.4", "/a@b", AF_INET, 80},
        {"http://[::1]:9/x", 0, "[::1]:9", "/x", AF_INET6, 9},
        {"http://[::1]/x/", 0, "[::1]", "/x", AF_INET6, 80},
        {"http://[2001:db8::2]:65535", 0, "[2001:db8::2]:65535", "", AF_INET6, 65535},
        {"http://localhost:8000/v1", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://example.com/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"https://1.2.3.4/v1", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"ftp://1.2.3.4/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"1.2.3.4:80/v1", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://u:p@1.2.3.4/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://u@[::1]/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4:0/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4:70000/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4:99999999999999999999999/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4:/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4:8a/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4:-1/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4:+80/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4/v1?x=1", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4?x=1", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4/v1#frag", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http:///v1", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://:80/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://[::1/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://[::1]x/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://[::1]:/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://[]:80/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://[1.2.3.4]/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://::1/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://1.2.3.4.5/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://256.1.1.1/", SX_EUNSUPPORTED, NULL, NULL, 0, 0},
        {"http://[0000:0000:0000:0000:0000:0000:0000:0001]:65535/", 0,
         "[0000:0000:0000:0000:0000:0000:0000:0001]:65535", "", AF_INET6, 65535},
        {"http://1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23/", SX_EUNSUPPORTED,
         NULL, NULL, 0, 0}, /* a Host over 63 characters */
    };
    struct sx_http1_target t;
    char url[1200];

    (void)state;
    clear_proxy_env();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = sx_http1_target_parse(cases[i].url, &t);

        if (rc != cases[i].rc)
            fail_msg("%s: %d, not %d", cases[i].url, rc, cases[i].rc);
        if (rc)
            continue;
        assert_string_equal(t.host, cases[i].host);
        assert_string_equal(t.path, cases[i].path);
        assert_int_equal(t.addr.ss_family, cases[i].family);
        if (cases[i].family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&t.addr;

            assert_int_equal(ntohs(a->sin_port), cases[i].port);
            assert_int_equal(t.addr_len, sizeof(*a));
        } else {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&t.addr;

            assert_int_equal(ntohs(a->sin6_port), cases[i].port);
            assert_int_equal(t.addr_len, sizeof(*a));
        }
    }

    /* the path's length: 1023 bytes fit, 1024 do not */
    memcpy(url, "http://1.2.3.4/", 15);
    memset(url + 15, 'p', 1022);
    url[15 + 1022] = '\0';
    assert_int_equal(sx_http1_target_parse(url, &t), 0);
    assert_int_equal(strlen(t.path), 1023);
    url[15 + 1022] = 'p';
    url[15 + 1023] = '\0';
    assert_int_equal(sx_http1_target_parse(url, &t), SX_EUNSUPPORTED);
}

static void test_target_proxy_env(void **state)
{
    const char *v4 = "http://127.0.0.1:8000/v1", *v6 = "http://[::1]:8000/v1";
    struct sx_http1_target t;

    (void)state;
    clear_proxy_env();
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);

    setenv("http_proxy", "http://proxy.example:3128", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), SX_EUNSUPPORTED);
    setenv("no_proxy", "*", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);
    setenv("no_proxy", "127.0.0.1", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);
    setenv("no_proxy", "localhost, 127.0.0.1,10.0.0.1", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);
    setenv("no_proxy", "10.0.0.1", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), SX_EUNSUPPORTED);
    setenv("no_proxy", "127.0.0.10,27.0.0.1", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), SX_EUNSUPPORTED);
    setenv("no_proxy", "::1", 1);
    assert_int_equal(sx_http1_target_parse(v6, &t), 0);
    unsetenv("no_proxy");
    assert_int_equal(sx_http1_target_parse(v6, &t), SX_EUNSUPPORTED);
    setenv("NO_PROXY", "127.0.0.1", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);
    unsetenv("NO_PROXY");

    /* all_proxy in either case; an empty http_proxy is no proxy */
    unsetenv("http_proxy");
    setenv("all_proxy", "socks5://proxy.example:1080", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), SX_EUNSUPPORTED);
    unsetenv("all_proxy");
    setenv("ALL_PROXY", "socks5://proxy.example:1080", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), SX_EUNSUPPORTED);
    setenv("no_proxy", "*", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);
    clear_proxy_env();
    setenv("http_proxy", "", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);
    /* like libcurl, the upper-case HTTP_PROXY is not read */
    unsetenv("http_proxy");
    setenv("HTTP_PROXY", "http://proxy.example:3128", 1);
    assert_int_equal(sx_http1_target_parse(v4, &t), 0);
    clear_proxy_env();
}

/* ---- the client: a scripted server on loopback ----------------------------- */

#define MAX_CONNS 16

enum act {
    RESPOND,        /* answer, and read the next request */
    RESPOND_CLOSE,  /* answer, then close (no Connection: close said) */
    RESPOND_RESET,  /* answer, wait for release, then reset the connection */
    SILENT,         /* never answer; wait for the client to close */
    CUT,            /* send the bytes, then close */
};

struct step {
    const char *resp;
    enum act act;
};

struct server;

struct conn_arg {
    struct server *s;
    int fd, idx;
};

struct server {
    int lfd, port;
    pthread_t thread;
    const struct step *steps;
    int n_steps;
    atomic_int accepts, requests, closed, release, stop;
    atomic_int conn_reqs[MAX_CONNS];
    pthread_t conn_threads[MAX_CONNS];
    struct conn_arg args[MAX_CONNS];
    pthread_mutex_t mu;
    char *got; /* every request's bytes, in the order they came */
    size_t got_len;
};

/* Waits for fd to be readable; false when the server stops. */
static bool readable(struct server *s, int fd)
{
    while (!atomic_load(&s->stop)) {
        struct pollfd pf = {fd, POLLIN, 0};

        if (poll(&pf, 1, 20) > 0)
            return true;
    }
    return false;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* The Content-Length of the request head in buf[0..n). */
static size_t request_length(const char *buf, size_t n)
{
    char *head = strndup(buf, n);
    const char *cl = head ? strcasestr(head, "\r\nContent-Length:") : NULL;
    size_t len = cl ? strtoul(cl + 17, NULL, 10) : 0;

    free(head);
    return len;
}

static void *conn_main(void *arg)
{
    struct conn_arg *a = arg;
    struct server *s = a->s;
    char *buf = NULL;
    size_t len = 0, cap = 0;

    for (;;) {
        size_t head_end = 0, want = 0;
        const struct step *st;
        int k;

        /* 1. A request: its head, then Content-Length bytes of body. */
        for (;;) {
            ssize_t n;

            if (!head_end && len) {
                const char *e = memmem(buf, len, "\r\n\r\n", 4);

                if (e) {
                    head_end = (size_t)(e - buf) + 4;
                    want = head_end + request_length(buf, head_end);
                }
            }
            if (head_end && len >= want)
                break;
            if (!readable(s, a->fd))
                goto out;
            if (cap - len < 64 * 1024) {
                cap = cap ? cap * 2 : 128 * 1024;
                buf = realloc(buf, cap);
                if (!buf)
                    goto out;
            }
            n = read(a->fd, buf + len, cap - len);
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        pthread_mutex_lock(&s->mu);
        s->got = realloc(s->got, s->got_len + want);
        memcpy(s->got + s->got_len, buf, want);
        s->got_len += want;
        pthread_mutex_unlock(&s->mu);
        memmove(buf, buf + want, len - want);
        len -= want;
        atomic_fetch_add(&s->conn_reqs[a->idx], 1);
        k = atomic_fetch_add(&s->requests, 1);
        st = &s->steps[k < s->n_steps ? k : s->n_steps - 1];

        /* 2. The script's answer. */
        if (st->act == SILENT) {
            while (readable(s, a->fd) && read(a->fd, buf, cap) > 0)
                ;
            goto out;
        }
        write_all(a->fd, st->resp, strlen(st->resp));
        if (st->act == RESPOND_CLOSE || st->act == CUT)
            goto out;
        if (st->act == RESPOND_RESET) {
            struct linger lg = {1, 0};

            while (!atomic_load(&s->release) && !atomic_load(&s->stop))
                usleep(1000);
            setsockopt(a->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            goto out;
        }
    }
out:
    close(a->fd);
    atomic_fetch_add(&s->closed, 1);
    free(buf);
    return NULL;
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    int n = 0;

    while (!atomic_load(&s->stop)) {
        struct pollfd pf = {s->lfd, POLLIN, 0};
        int fd;

        if (poll(&pf, 1, 20) <= 0 || (fd = accept(s->lfd, NULL, NULL)) < 0)
            continue;
        if (n == MAX_CONNS) {
            close(fd);
            continue;
        }
        s->args[n] = (struct conn_arg){s, fd, n};
        atomic_fetch_add(&s->accepts, 1);
        if (pthread_create(&s->conn_threads[n], NULL, conn_main, &s->args[n]) != 0) {
            close(fd);
            continue;
        }
        n++;
    }
    for (int i = 0; i < n; i++)
        pthread_join(s->conn_threads[i], NULL);
    return NULL;
}

/* A loopback socket bound to a free port; returns the port. */
static int bound_socket(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof(a);

    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &n), 0);
    return ntohs(a.sin_port);
}

static void server_start(struct server *s, const struct step *steps, int n_steps)
{
    int one = 1;

    memset(s, 0, sizeof(*s));
    s->steps = steps;
    s->n_steps = n_steps;
    pthread_mutex_init(&s->mu, NULL);
    s->port = bound_socket(&s->lfd);
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    assert_int_equal(listen(s->lfd, 16), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    free(s->got);
    pthread_mutex_destroy(&s->mu);
}

/* ---- the client: a loop, a pool, exchanges ---------------------------------- */

struct client {
    sx_loop *loop;
    sx_http1_pool *pool;
    struct sx_http1_target target;
    int max_idle;
};

struct ex {
    struct sx_http1_exchange x;
    struct client *c;
    struct iovec iov[4];
    int iov_n;
    char line[1200], length[64]; /* the request head, in two parts */
    int stop_at;                 /* the sink's body stops at this call; 0 never */
    int status, heads, body_calls;
    char ctype[64];
    char *body;
    size_t body_len, body_cap;
    bool sending; /* inside sx_http1_send */
    int send_rc;
    enum sx_http1_end end;
    char msg[256];
    atomic_int done, done_in_send;
    /* sent from this one's done, once the server has closed a connection */
    struct ex *then;
    struct server *then_wait;
};

/* A client test's state, so that a failed test's server, loop and
 * exchanges are still ended by the teardown. */
#define FX_EXCHANGES 8

struct fx {
    struct server s;
    bool server_on, client_on;
    struct client c;
    struct ex e[FX_EXCHANGES];
    char *big, *resp;
};

struct call {
    void (*fn)(void *);
    void *arg;
    atomic_int ran;
};

static void call_run(void *ctx)
{
    struct call *c = ctx;

    c->fn(c->arg);
    atomic_store(&c->ran, 1);
}

/* Runs fn(arg) on the loop's thread and waits for it. */
static void on_loop(sx_loop *l, void (*fn)(void *), void *arg)
{
    struct call c = {fn, arg, 0};

    assert_int_equal(sx_loop_post(l, call_run, &c), 0);
    assert_true(wait_for(&c.ran, 1));
}

static void task_pool_new(void *ctx)
{
    struct client *c = ctx;

    c->pool = sx_http1_pool_new(c->loop, &c->target, c->max_idle);
}

static void task_pool_free(void *ctx)
{
    struct client *c = ctx;

    sx_http1_pool_free(c->pool);
    c->pool = NULL;
}

static void fx_client_open_url(struct fx *f, const char *url, int max_idle)
{
    struct client *c = &f->c;
    char err[128];

    memset(c, 0, sizeof(*c));
    assert_int_equal(sx_http1_target_parse(url, &c->target), 0);
    c->loop = sx_loop_new(err, sizeof(err));
    assert_non_null(c->loop);
    assert_int_equal(sx_loop_start(c->loop, NULL, NULL), 0);
    f->client_on = true;
    c->max_idle = max_idle;
    on_loop(c->loop, task_pool_new, c);
    assert_non_null(c->pool);
}

static void fx_client_open(struct fx *f, int port, int max_idle)
{
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/", port);
    fx_client_open_url(f, url, max_idle);
}

/* Frees the pool (its exchanges must have ended) and the loop. */
static void fx_client_close(struct fx *f)
{
    f->client_on = false;
    on_loop(f->c.loop, task_pool_free, &f->c);
    sx_loop_free(f->c.loop);
}

static void fx_server_start(struct fx *f, const struct step *steps, int n_steps)
{
    server_start(&f->s, steps, n_steps);
    f->server_on = true;
}

static void fx_server_stop(struct fx *f)
{
    f->server_on = false;
    server_stop(&f->s);
}

static int fx_setup(void **state)
{
    *state = calloc(1, sizeof(struct fx));
    return *state ? 0 : -1;
}

/* After a failed test: the exchanges still going are aborted. */
static void task_abort_all(void *ctx)
{
    struct fx *f = ctx;

    for (int i = 0; i < FX_EXCHANGES; i++)
        if (f->e[i].x.pool)
            sx_http1_abort(&f->e[i].x);
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;

    if (f->client_on) {
        on_loop(f->c.loop, task_abort_all, f);
        fx_client_close(f);
    }
    if (f->server_on)
        fx_server_stop(f);
    for (int i = 0; i < FX_EXCHANGES; i++)
        free(f->e[i].body);
    free(f->big);
    free(f->resp);
    free(f);
    return 0;
}

static void ex_head(void *ctx, int status, const char *content_type)
{
    struct ex *e = ctx;

    e->heads++;
    e->status = status;
    snprintf(e->ctype, sizeof(e->ctype), "%s", content_type);
}

static int ex_body(void *ctx, const char *p, size_t n)
{
    struct ex *e = ctx;

    if (e->body_len + n > e->body_cap) {
        char *grown = realloc(e->body, (e->body_len + n) * 2);

        if (!grown)
            return 1;
        e->body = grown;
        e->body_cap = (e->body_len + n) * 2;
    }
    memcpy(e->body + e->body_len, p, n);
    e->body_len += n;
    e->body_calls++;
    return e->stop_at && e->body_calls >= e->stop_at;
}

/* Waits on the loop's thread, where cmocka may not fail. */
static void quiet_wait(atomic_int *v, int want)
{
    for (int i = 0; i < 5000 && atomic_load(v) < want; i++)
        usleep(1000);
}

static void ex_start(struct ex *e);

static void ex_done(void *ctx, enum sx_http1_end end, const char *msg)
{
    struct ex *e = ctx;

    if (e->sending)
        atomic_fetch_add(&e->done_in_send, 1);
    e->end = end;
    snprintf(e->msg, sizeof(e->msg), "%s", msg ? msg : "(null)");
    if (e->then) {
        /* The connection is back in the pool, and the loop has not had a
         * turn to see that the server closed it: the next request meets
         * a connection the server had closed. */
        quiet_wait(&e->then_wait->closed, 1);
        usleep(20000);
        ex_start(e->then);
    }
    atomic_fetch_add(&e->done, 1);
}

/* A POST of body (n bytes) to the client's target in three parts. */
static struct ex *ex_init(struct fx *f, int i, const char *body, size_t n)
{
    struct ex *e = &f->e[i];

    free(e->body);
    memset(e, 0, sizeof(*e));
    e->c = &f->c;
    snprintf(e->line, sizeof(e->line), "POST %s/chat/completions HTTP/1.1\r\nHost: %s\r\n",
             f->c.target.path, f->c.target.host);
    snprintf(e->length, sizeof(e->length), "Content-Length: %zu\r\n\r\n", n);
    e->iov[0] = (struct iovec){e->line, strlen(e->line)};
    e->iov[1] = (struct iovec){e->length, strlen(e->length)};
    e->iov[2] = (struct iovec){(void *)body, n};
    e->iov_n = 3;
    return e;
}

/* On the loop's thread. */
static void ex_start(struct ex *e)
{
    struct sx_http1_sink s = {e, ex_head, ex_body};

    e->sending = true;
    e->send_rc = sx_http1_send(e->c->pool, &e->x, e->iov, e->iov_n, 2000, &s, ex_done);
    e->sending = false;
}

static void task_send(void *ctx)
{
    ex_start(ctx);
}

static void task_send_two(void *ctx)
{
    struct ex **two = ctx;

    ex_start(two[0]);
    ex_start(two[1]);
}

static void task_abort(void *ctx)
{
    struct ex *e = ctx;

    sx_http1_abort(&e->x);
}

static void task_send_abort(void *ctx)
{
    struct ex *e = ctx;

    ex_start(e);
    sx_http1_abort(&e->x);
}

/* Sends e and waits for its end. */
static void ex_run(struct ex *e)
{
    on_loop(e->c->loop, task_send, e);
    assert_int_equal(e->send_rc, 0);
    assert_true(wait_for(&e->done, 1));
    assert_int_equal(atomic_load(&e->done_in_send), 0);
}

static void expect_ok(struct ex *e, int status, const char *body)
{
    if (e->end != SX_HTTP1_OK)
        fail_msg("the exchange ended %d: %s", (int)e->end, e->msg);
    assert_int_equal(e->heads, 1);
    assert_int_equal(e->status, status);
    assert_int_equal(e->body_len, strlen(body));
    assert_memory_equal(e->body ? e->body : "", body, strlen(body));
}

/* What the server got equals the requests of f->e[i..j), in order: the
 * concatenation of each one's iov. */
static void expect_requests(struct fx *f, int i, int j)
{
    size_t total = 0, at = 0, got_len;
    char *want, *got;

    for (int k = i; k < j; k++)
        for (int m = 0; m < f->e[k].iov_n; m++)
            total += f->e[k].iov[m].iov_len;
    want = malloc(total + 1);
    assert_non_null(want);
    for (int k = i; k < j; k++)
        for (int m = 0; m < f->e[k].iov_n; m++) {
            memcpy(want + at, f->e[k].iov[m].iov_base, f->e[k].iov[m].iov_len);
            at += f->e[k].iov[m].iov_len;
        }
    pthread_mutex_lock(&f->s.mu);
    got_len = f->s.got_len;
    got = malloc(got_len + 1);
    if (got)
        memcpy(got, f->s.got, got_len);
    pthread_mutex_unlock(&f->s.mu);
    if (!got || got_len != total || memcmp(got, want, total) != 0) {
        free(want);
        free(got);
        fail_msg("the server got %zu bytes, not the %zu sent", got_len, total);
    }
    free(want);
    free(got);
}

/* ---- the client: tests ------------------------------------------------------------ */

static void test_client_reuses_a_connection(void **state)
{
    static const struct step steps[] = {
        {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
         RESPOND},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nwor\r\n2\r\nld\r\n0\r\n\r\n",
         RESPOND},
        {"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", RESPOND},
    };
    static const char prefix[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:";
    struct fx *f = *state;
    struct ex *e1, *e2, *e3;

    fx_server_start(f, steps, 3);
    fx_client_open(f, f->s.port, 4);
    e1 = ex_init(f, 0, "abc", 3);
    e2 = ex_init(f, 1, "defg", 4);
    e3 = ex_init(f, 2, "", 0);
    ex_run(e1);
    expect_ok(e1, 200, "hello");
    assert_string_equal(e1->ctype, "text/plain");
    ex_run(e2);
    expect_ok(e2, 200, "world");
    assert_string_equal(e2->ctype, "");
    ex_run(e3);
    expect_ok(e3, 201, "");
    assert_int_equal(atomic_load(&f->s.accepts), 1);
    assert_int_equal(atomic_load(&f->s.requests), 3);
    assert_int_equal(atomic_load(&f->s.conn_reqs[0]), 3);
    expect_requests(f, 0, 3);
    assert_memory_equal(e1->line, prefix, sizeof(prefix) - 1);

    /* freeing the pool closes its idle connection */
    fx_client_close(f);
    assert_true(wait_for(&f->s.closed, 1));
    fx_server_stop(f);
}

static void test_client_does_not_reuse(void **state)
{
    static const struct step steps[] = {
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na", RESPOND},
        {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nb", RESPOND},
        {"HTTP/1.1 200 OK\r\n\r\nc", CUT},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ndEXTRA", RESPOND},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ne", RESPOND},
    };
    static const char *const bodies[] = {"a", "b", "c", "d", "e", "e"};
    struct fx *f = *state;

    fx_server_start(f, steps, 5);
    fx_client_open(f, f->s.port, 4);
    for (int i = 0; i < 6; i++) {
        ex_run(ex_init(f, i, "x", 1));
        expect_ok(&f->e[i], 200, bodies[i]);
    }
    /* Connection: close, HTTP/1.0, a body to the close and bytes after
     * the response each cost a connection; the last two share one. */
    assert_int_equal(atomic_load(&f->s.accepts), 5);
    assert_int_equal(atomic_load(&f->s.requests), 6);
    assert_int_equal(atomic_load(&f->s.conn_reqs[4]), 2);
    expect_requests(f, 0, 6);
    fx_client_close(f);
    assert_true(wait_for(&f->s.closed, 5));

    /* a pool that keeps none */
    atomic_store(&f->s.requests, 4); /* the steps answer "e" from here */
    fx_client_open(f, f->s.port, 0);
    for (int i = 0; i < 2; i++) {
        ex_run(ex_init(f, i, "x", 1));
        expect_ok(&f->e[i], 200, "e");
    }
    assert_int_equal(atomic_load(&f->s.accepts), 7);
    fx_client_close(f);
    fx_server_stop(f);
}

static void test_client_retries_on_a_closed_connection(void **state)
{
    static const struct step steps[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", RESPOND_CLOSE},
        {"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond", RESPOND},
    };
    struct fx *f = *state;
    struct ex *e1, *e2;

    fx_server_start(f, steps, 2);
    fx_client_open(f, f->s.port, 4);
    e1 = ex_init(f, 0, "one", 3);
    e2 = ex_init(f, 1, "two", 3);
    e1->then = e2; /* sent on the connection the server closed */
    e1->then_wait = &f->s;
    ex_run(e1);
    assert_true(wait_for(&e2->done, 1));
    expect_ok(e1, 200, "first");
    assert_int_equal(e2->send_rc, 0);
    assert_int_equal(atomic_load(&e2->done_in_send), 0);
    expect_ok(e2, 200, "second");
    assert_int_equal(atomic_load(&f->s.accepts), 2);
    assert_int_equal(atomic_load(&f->s.requests), 2);
    assert_int_equal(atomic_load(&f->s.conn_reqs[0]), 1);
    assert_int_equal(atomic_load(&f->s.conn_reqs[1]), 1);
    expect_requests(f, 0, 2);
    fx_client_close(f);
    fx_server_stop(f);
}

struct stale {
    struct fx *f;
    int resets; /* connections the server resets */
    struct ex *e;
};

/* The server resets its kept connections while the loop is busy; then a
 * request goes out on one of them, and fails inside sx_http1_send. */
static void task_reset_then_send(void *ctx)
{
    struct stale *st = ctx;

    atomic_store(&st->f->s.release, 1);
    quiet_wait(&st->f->s.closed, st->resets);
    usleep(20000);
    ex_start(st->e);
}

/* One kept connection, reset by the server: the request is sent again on
 * a new connection, and done still comes later. */
static void test_client_retries_on_a_reset_connection(void **state)
{
    static const struct step steps[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept", RESPOND_RESET},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh", RESPOND},
    };
    struct fx *f = *state;
    struct stale st = {f, 1, NULL};

    fx_server_start(f, steps, 2);
    fx_client_open(f, f->s.port, 4);
    ex_run(ex_init(f, 0, "1", 1));
    expect_ok(&f->e[0], 200, "kept");
    st.e = ex_init(f, 1, "2", 1);
    on_loop(f->c.loop, task_reset_then_send, &st);
    assert_int_equal(atomic_load(&f->s.closed), 1);
    assert_int_equal(f->e[1].send_rc, 0);
    assert_true(wait_for(&f->e[1].done, 1));
    assert_int_equal(atomic_load(&f->e[1].done_in_send), 0);
    expect_ok(&f->e[1], 200, "fresh");
    assert_int_equal(atomic_load(&f->s.accepts), 2);
    expect_requests(f, 0, 2);
    fx_client_close(f);
    fx_server_stop(f);
}

/* All of a pool's kept connections were closed by the server (it
 * restarted, or timed them out together): the retry must go out on a new
 * connection, as http1.h says, not on another of the dead ones. (A
 * regression: the retry took the next idle connection, dead too, and the
 * request ended SX_HTTP1_BROKEN.) */
static void test_client_retry_uses_a_new_connection(void **state)
{
    static const struct step steps[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept", RESPOND_RESET},
        {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept", RESPOND_RESET},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh", RESPOND},
    };
    struct fx *f = *state;
    struct stale st = {f, 2, NULL};

    fx_server_start(f, steps, 3);
    fx_client_open(f, f->s.port, 4);
    ex_init(f, 0, "1", 1);
    ex_init(f, 1, "2", 1);
    on_loop(f->c.loop, task_send_two, (struct ex *[]){&f->e[0], &f->e[1]});
    assert_true(wait_for(&f->e[0].done, 1));
    assert_true(wait_for(&f->e[1].done, 1));
    expect_ok(&f->e[0], 200, "kept");
    expect_ok(&f->e[1], 200, "kept");
    assert_int_equal(atomic_load(&f->s.accepts), 2);

    st.e = ex_init(f, 2, "3", 1);
    on_loop(f->c.loop, task_reset_then_send, &st);
    assert_int_equal(atomic_load(&f->s.closed), 2);
    assert_true(wait_for(&f->e[2].done, 1));
    assert_int_equal(atomic_load(&f->e[2].done_in_send), 0);
    expect_ok(&f->e[2], 200, "fresh");
    assert_int_equal(atomic_load(&f->s.accepts), 3);
    fx_client_close(f);
    fx_server_stop(f);
}

static void test_client_refused(void **state)
{
    static const char *const urls[] = {"http://127.0.0.1:%d/v1", "http://[::1]:%d/v1"};
    static const char *const names[] = {"127.0.0.1:%d", "[::1]:%d"};
    struct fx *f = *state;

    for (int i = 0; i < 2; i++) {
        char url[64], name[64];
        int fd, port = bound_socket(&fd);
        struct ex *e;

        close(fd); /* nothing listens there now */
        snprintf(url, sizeof(url), urls[i], port);
        snprintf(name, sizeof(name), names[i], port);
        fx_client_open_url(f, url, 4);
        e = ex_init(f, 0, "x", 1);
        ex_run(e);
        assert_int_equal(e->end, SX_HTTP1_UNREACHABLE);
        if (!strstr(e->msg, name))
            fail_msg("\"%s\" does not name %s", e->msg, name);
        assert_int_equal(e->heads, 0);

        /* aborted at once, its failure is never reported */
        on_loop(f->c.loop, task_send_abort, ex_init(f, 1, "x", 1));
        usleep(100000);
        assert_int_equal(atomic_load(&f->e[1].done), 0);
        assert_int_equal(atomic_load(&f->e[0].done), 1);
        fx_client_close(f);
    }
}

static void test_client_broken_responses(void **state)
{
    static const struct step steps[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", CUT},
        {"", CUT},
        {"HTTP/2 200 OK\r\n\r\n", RESPOND},
        {CHUNKED_HEAD "5\r\nhello\r\n", CUT},
    };
    static const char *const why[] = {"closed mid-response", "closed without a response",
                                      "malformed", "closed mid-response"};
    struct fx *f = *state;
    char name[64];

    fx_server_start(f, steps, 4);
    fx_client_open(f, f->s.port, 4);
    snprintf(name, sizeof(name), "127.0.0.1:%d", f->s.port);
    for (int i = 0; i < 4; i++) {
        struct ex *e = ex_init(f, i, "x", 1);

        ex_run(e);
        assert_int_equal(e->end, SX_HTTP1_BROKEN);
        if (!strstr(e->msg, name) || !strstr(e->msg, why[i]))
            fail_msg("exchange %d: \"%s\"", i, e->msg);
    }
    assert_int_equal(f->e[0].status, 200);
    assert_int_equal(f->e[0].body_len, 5);
    assert_memory_equal(f->e[0].body, "hello", 5);
    assert_int_equal(f->e[1].heads, 0);
    assert_int_equal(f->e[3].body_len, 5);
    assert_int_equal(atomic_load(&f->s.accepts), 4);
    fx_client_close(f);
    fx_server_stop(f);
}

static void test_client_sink_stops(void **state)
{
    static const struct step steps[] = {
        {CHUNKED_HEAD "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", RESPOND},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", RESPOND},
    };
    struct fx *f = *state;
    struct ex *e;

    fx_server_start(f, steps, 2);
    fx_client_open(f, f->s.port, 4);
    e = ex_init(f, 0, "x", 1);
    e->stop_at = 1;
    ex_run(e);
    assert_int_equal(e->end, SX_HTTP1_STOPPED);
    assert_int_equal(e->body_calls, 1);
    assert_int_equal(e->body_len, 5);
    /* its connection is not kept */
    assert_true(wait_for(&f->s.closed, 1));
    e = ex_init(f, 1, "y", 1);
    ex_run(e);
    expect_ok(e, 200, "ok");
    assert_int_equal(atomic_load(&f->s.accepts), 2);
    fx_client_close(f);
    fx_server_stop(f);
}

static void test_client_abort(void **state)
{
    static const struct step steps[] = {{"", SILENT}};
    struct fx *f = *state;

    fx_server_start(f, steps, 1);
    fx_client_open(f, f->s.port, 4);

    /* in flight: the request went, the server never answers */
    on_loop(f->c.loop, task_send, ex_init(f, 0, "x", 1));
    assert_true(wait_for(&f->s.requests, 1));
    on_loop(f->c.loop, task_abort, &f->e[0]);
    assert_true(wait_for(&f->s.closed, 1)); /* its connection was closed */

    /* connecting: aborted in the task that sent it */
    on_loop(f->c.loop, task_send_abort, ex_init(f, 1, "y", 1));
    usleep(100000);
    assert_int_equal(atomic_load(&f->e[0].done), 0);
    assert_int_equal(atomic_load(&f->e[1].done), 0);
    fx_client_close(f);
    fx_server_stop(f);
    assert_int_equal(atomic_load(&f->e[0].done), 0);
    assert_int_equal(atomic_load(&f->e[1].done), 0);
}

/* A request far larger than the socket buffers (sendmsg writes part, the
 * rest waits for EPOLLOUT), then a response read in many pieces. */
static void test_client_large_request_and_response(void **state)
{
    enum { REQ = 4 << 20, RESP = 3 << 20 };
    static struct step steps[2];
    struct fx *f = *state;
    struct ex *e;
    size_t n;

    f->big = malloc(REQ);
    f->resp = malloc(RESP + 128);
    assert_non_null(f->big);
    assert_non_null(f->resp);
    for (size_t i = 0; i < REQ; i++)
        f->big[i] = (char)('a' + (i * 7 + i / 4093) % 26);
    n = (size_t)sprintf(f->resp, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", RESP);
    memcpy(f->resp + n, f->big + 12345, RESP);
    f->resp[n + RESP] = '\0';
    steps[0] = (struct step){"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", RESPOND};
    steps[1] = (struct step){f->resp, RESPOND};
    fx_server_start(f, steps, 2);
    fx_client_open(f, f->s.port, 4);

    e = ex_init(f, 0, f->big, REQ);
    ex_run(e);
    expect_ok(e, 200, "ok");
    e = ex_init(f, 1, "z", 1);
    ex_run(e);
    if (e->end != SX_HTTP1_OK)
        fail_msg("the exchange ended %d: %s", (int)e->end, e->msg);
    assert_int_equal(e->body_len, RESP);
    assert_memory_equal(e->body, f->big + 12345, RESP);
    assert_true(e->body_calls > 1);
    expect_requests(f, 0, 2);
    assert_int_equal(atomic_load(&f->s.accepts), 1);
    fx_client_close(f);
    fx_server_stop(f);
}

#define CLIENT_TEST(t) cmocka_unit_test_setup_teardown(t, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_complete_responses_in_any_split),
        cmocka_unit_test(test_parse_pipelined_responses),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_limits_accepted),
        cmocka_unit_test(test_parse_sink_stops),
        cmocka_unit_test(test_parse_eof),
        cmocka_unit_test(test_parse_reset),
        cmocka_unit_test(test_target_parse),
        cmocka_unit_test(test_target_proxy_env),
        CLIENT_TEST(test_client_reuses_a_connection),
        CLIENT_TEST(test_client_does_not_reuse),
        CLIENT_TEST(test_client_retries_on_a_closed_connection),
        CLIENT_TEST(test_client_retries_on_a_reset_connection),
        CLIENT_TEST(test_client_retry_uses_a_new_connection),
        CLIENT_TEST(test_client_refused),
        CLIENT_TEST(test_client_broken_responses),
        CLIENT_TEST(test_client_sink_stops),
        CLIENT_TEST(test_client_abort),
        CLIENT_TEST(test_client_large_request_and_response),
    };

    clear_proxy_env(); /* the client tests go straight to loopback */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
