/* libFuzzer target for the upstream client's HTTP/1.1 response parser
 * (backend/http1.h): an upstream's bytes are hostile input. Any byte
 * string must parse or be refused with a reason, never crash, hang or
 * grow without bound; and fed in two pieces, split where the first byte
 * says, it must come out exactly as fed whole: the same outcome, status,
 * body and end. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/http1.h"
#include "base/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a parse produced. */
struct seen {
    int heads, status;
    uint8_t body_sum;
    size_t body_len;
};

static void on_head(void *ctx, int status, const char *content_type)
{
    struct seen *s = ctx;

    s->heads++;
    s->status = status;
    (void)strlen(content_type);
}

static int on_body(void *ctx, const char *p, size_t n)
{
    struct seen *s = ctx;

    for (size_t i = 0; i < n; i++)
        s->body_sum = (uint8_t)(s->body_sum * 31 + (uint8_t)p[i]);
    s->body_len += n;
    return 0;
}

/* Parses in at most two pieces, then the end of the connection; the
 * outcome: 0 complete, else the failing return code. */
static int run(const char *p, size_t n, size_t split, struct seen *s, size_t *used)
{
    struct sx_http1_parser parser = {0};
    const struct sx_http1_sink sink = {s, on_head, on_body};
    size_t u1 = 0, u2 = 0;
    int rc = sx_http1_parse(&parser, p, split, &sink, &u1);

    if (rc == 0 && u1 == split && parser.state != SX_HTTP1_DONE)
        rc = sx_http1_parse(&parser, p + split, n - split, &sink, &u2);
    if (rc == 0 && parser.state != SX_HTTP1_DONE)
        rc = sx_http1_parse_eof(&parser) == 0 ? 0 : 1000;
    if (rc != 0 && rc != 1000 && !parser.error && rc != SX_ENOMEM)
        __builtin_trap(); /* refused without a reason */
    *used = u1 + u2;
    sx_http1_parser_reset(&parser);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct seen whole = {0}, split = {0};
    size_t used_whole, used_split, at;
    int rc_whole, rc_split;

    if (size < 1)
        return 0;
    at = size > 1 ? data[0] % size : 0;
    data++;
    size--;
    if (at > size)
        at = size;
    rc_whole = run((const char *)data, size, size, &whole, &used_whole);
    rc_split = run((const char *)data, size, at, &split, &used_split);
    if (rc_whole != rc_split || whole.heads != split.heads || whole.heads > 1)
        __builtin_trap();
    if (rc_whole == 0 && (whole.status != split.status || whole.body_len != split.body_len ||
                          whole.body_sum != split.body_sum || used_whole != used_split))
        __builtin_trap();
    return 0;
}
