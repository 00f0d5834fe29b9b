/* A JSON text read in place (json.h, "reading in place"): values are
 * checked as strictly as jansson checks them (RFC 8259 syntax, UTF-8,
 * no NUL in strings, integers that fit in 64 bits) but nothing is built
 * unless the caller asks for it. */
#include "base/json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define READ_DEPTH_MAX 512 /* deeper values are refused when skipped */

void sx_json_rd_init(struct sx_json_rd *r, const char *s, size_t n)
{
    *r = (struct sx_json_rd){.p = s, .end = s + n};
}

static bool fail(struct sx_json_rd *r)
{
    r->bad = true;
    r->p = r->end;
    return false;
}

static void ws(struct sx_json_rd *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

/* The next significant byte, or 0 at the end. */
static char peek(struct sx_json_rd *r)
{
    ws(r);
    return r->p < r->end ? *r->p : '\0';
}

static int hex4(const char *p)
{
    int v = 0;

    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;

        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads a string at r->p (its opening quote); with out, decodes it into
 * out (cap > 0 bytes, NUL-terminated, cut after the last whole character
 * that fits) and sets *len to what out holds; without out, *len is the
 * whole decoded length. */
static bool string(struct sx_json_rd *r, char *out, size_t cap, size_t *len)
{
    const char *p = r->p + 1;
    size_t n = 0, total = 0; /* bytes kept in out, bytes decoded */
    bool full = false;

    if (r->p >= r->end || *r->p != '"')
        return fail(r);
    while (p < r->end && *p != '"') {
        unsigned char c = (unsigned char)*p;
        char tmp[4];
        size_t k;

        if (c >= 0x20 && c < 0x80 && c != '\\') { /* a run of plain ASCII, in one copy */
            const char *q = p + 1;

            while (q < r->end && (unsigned char)*q >= 0x20 && (unsigned char)*q < 0x80 &&
                   *q != '"' && *q != '\\')
                q++;
            k = (size_t)(q - p);
            total += k;
            if (out && !full) {
                size_t room = cap - 1 - n;

                memcpy(out + n, p, k < room ? k : room);
                n += k < room ? k : room;
                full = k > room;
            }
            p = q;
            continue;
        }

        if (c < 0x20)
            return fail(r);
        if (c == '\\') {
            unsigned cp;

            if (p + 1 >= r->end)
                return fail(r);
            switch (p[1]) {
            case '"': case '\\': case '/':
                tmp[0] = p[1];
                k = 1;
                break;
            case 'b': tmp[0] = '\b'; k = 1; break;
            case 'f': tmp[0] = '\f'; k = 1; break;
            case 'n': tmp[0] = '\n'; k = 1; break;
            case 'r': tmp[0] = '\r'; k = 1; break;
            case 't': tmp[0] = '\t'; k = 1; break;
            case 'u': {
                int hi = r->end - p >= 6 ? hex4(p + 2) : -1;

                if (hi <= 0) /* bad digits, or \u0000 (no NUL in strings) */
                    return fail(r);
                cp = (unsigned)hi;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail(r);
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    int lo = r->end - p >= 12 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -1;

                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return fail(r);
                    cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned)lo - 0xDC00);
                    p += 6;
                }
                k = put_utf8(tmp, cp);
                p += 4;
                break;
            }
            default:
                return fail(r);
            }
            p += 2;
        } else {
            k = sx_utf8_char_len(p, (size_t)(r->end - p));
            if (k == 0)
                return fail(r);
            memcpy(tmp, p, k);
            p += k;
        }
        total += k;
        if (out && !full && n + k < cap) {
            memcpy(out + n, tmp, k);
            n += k;
        } else {
            full = true;
        }
    }
    if (p >= r->end)
        return fail(r);
    r->p = p + 1;
    if (out)
        out[n] = '\0';
    if (len)
        *len = out ? n : total;
    return true;
}

static bool literal(struct sx_json_rd *r, const char *word, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return fail(r);
    r->p += n;
    return true;
}

/* A number's text at r->p per RFC 8259; *integer: no fraction or
 * exponent, and then *value holds it. */
static bool number(struct sx_json_rd *r, bool *integer, long long *value)
{
    const char *p = r->p;

    *integer = true;
    if (p < r->end && *p == '-')
        p++;
    if (p >= r->end || *p < '0' || *p > '9')
        return fail(r);
    if (*p == '0')
        p++;
    else
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    if (p < r->end && *p == '.') {
        *integer = false;
        if (++p >= r->end || *p < '0' || *p > '9')
            return fail(r);
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        *integer = false;
        if (++p < r->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= r->end || *p < '0' || *p > '9')
            return fail(r);
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    /* As jansson: an integer must fit in 64 bits, a real in a double. */
    {
        char small[64], *buf = small;
        size_t n = (size_t)(p - r->p);
        long long parsed = 0;
        bool out_of_range;

        if (n >= sizeof(small) && (*integer || !(buf = malloc(n + 1))))
            return fail(r); /* no 64-bit integer is that long */
        memcpy(buf, r->p, n);
        buf[n] = '\0';
        errno = 0;
        if (*integer)
            parsed = strtoll(buf, NULL, 10);
        out_of_range = errno == ERANGE || (!*integer && isinf(strtod(buf, NULL)));
        if (buf != small)
            free(buf);
        if (out_of_range)
            return fail(r);
        if (*integer)
            *value = parsed;
    }
    r->p = p;
    return true;
}

static bool skip(struct sx_json_rd *r, int depth);

/* Skips the members (an object) or elements of a container whose opening
 * bracket was just read, its closing one included. */
static bool skip_items(struct sx_json_rd *r, int depth, char close, bool object)
{
    if (peek(r) == close) {
        r->p++;
        return true;
    }
    for (;;) {
        if (object) {
            if (peek(r) != '"' || !string(r, NULL, 0, NULL) || peek(r) != ':')
                return fail(r);
            r->p++;
        }
        if (!skip(r, depth + 1))
            return false;
        if (peek(r) == close) {
            r->p++;
            return true;
        }
        if (peek(r) != ',')
            return fail(r);
        r->p++;
    }
}

static bool skip(struct sx_json_rd *r, int depth)
{
    long long value;
    bool integer;

    if (depth > READ_DEPTH_MAX)
        return fail(r);
    switch (peek(r)) {
    case '"':
        return string(r, NULL, 0, NULL);
    case 't':
        return literal(r, "true", 4);
    case 'f':
        return literal(r, "false", 5);
    case 'n':
        return literal(r, "null", 4);
    case '{':
        r->p++;
        return skip_items(r, depth, '}', true);
    case '[':
        r->p++;
        return skip_items(r, depth, ']', false);
    default:
        return number(r, &integer, &value);
    }
}

bool sx_json_rd_skip(struct sx_json_rd *r)
{
    return !r->bad && skip(r, 0);
}

bool sx_json_rd_span(struct sx_json_rd *r, const char **s, size_t *n)
{
    const char *start;

    if (r->bad)
        return false;
    ws(r);
    start = r->p;
    if (!skip(r, 0))
        return false;
    *s = start;
    *n = (size_t)(r->p - start);
    return true;
}

/* Opens a container: true when the next value starts with open. */
static bool open_(struct sx_json_rd *r, char open)
{
    if (r->bad || peek(r) != open)
        return false;
    r->p++;
    r->first = true;
    return true;
}

bool sx_json_rd_object(struct sx_json_rd *r)
{
    return open_(r, '{');
}

bool sx_json_rd_array(struct sx_json_rd *r)
{
    return open_(r, '[');
}

/* Before the next member or element: false at the closing close (consumed)
 * or on an error. */
static bool more(struct sx_json_rd *r, char close)
{
    char c;

    if (r->bad)
        return false;
    c = peek(r);
    if (c == close) {
        r->p++;
        r->first = false;
        return false;
    }
    if (!r->first) {
        if (c != ',')
            return fail(r);
        r->p++;
        peek(r);
    }
    r->first = false;
    return true;
}

bool sx_json_rd_member(struct sx_json_rd *r, char *key, size_t cap)
{
    if (!more(r, '}'))
        return false;
    if (peek(r) != '"' || sx_json_rd_str(r, key, cap, NULL) != 1)
        return fail(r);
    if (peek(r) != ':')
        return fail(r);
    r->p++;
    return true;
}

bool sx_json_rd_element(struct sx_json_rd *r)
{
    return more(r, ']');
}

/* The bytes between the quotes of the string at r->p, undecoded (an
 * escape never decodes longer than itself), or false at the text's end. */
static bool string_extent(const struct sx_json_rd *r, size_t *n)
{
    const char *p = r->p + 1;

    while (p < r->end && *p != '"') {
        if (*p == '\\' && ++p == r->end)
            return false;
        p++;
    }
    if (p >= r->end)
        return false;
    *n = (size_t)(p - r->p - 1);
    return true;
}

int sx_json_rd_str(struct sx_json_rd *r, char *buf, size_t cap, size_t *len)
{
    if (r->bad || cap == 0)
        return -1;
    if (peek(r) != '"')
        return sx_json_rd_skip(r) ? 0 : -1;
    return string(r, buf, cap, len) ? 1 : -1;
}

int sx_json_rd_strdup(struct sx_json_rd *r, char **out, size_t *len)
{
    size_t n;

    *out = NULL;
    if (r->bad)
        return -1;
    if (peek(r) != '"')
        return sx_json_rd_skip(r) ? 0 : -1;
    if (!string_extent(r, &n)) {
        fail(r);
        return -1;
    }
    if (!(*out = malloc(n + 1))) {
        fail(r);
        return -1;
    }
    if (!string(r, *out, n + 1, len)) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 1;
}

int sx_json_rd_int(struct sx_json_rd *r, long long *v)
{
    bool integer;
    char c;

    if (r->bad)
        return -1;
    c = peek(r);
    if (!(c == '-' || (c >= '0' && c <= '9')))
        return sx_json_rd_skip(r) ? 0 : -1;
    if (!number(r, &integer, v))
        return -1;
    return integer ? 1 : 0;
}

bool sx_json_rd_end(struct sx_json_rd *r)
{
    return !r->bad && peek(r) == '\0' && r->p == r->end;
}
