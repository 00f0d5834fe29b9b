/* Implementation of json.h. Nesting depth is checked by a linear pre-scan
 * before jansson runs, so a body of a million '[' costs one pass and no
 * recursion; everything else (syntax, UTF-8, duplicates) is jansson's. */
#include "base/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Returns 0 when nesting stays within max_depth, else 1 with the line and
 * column (1-based, columns in bytes) of the bracket that went too deep. */
static int too_deep(const char *buf, size_t len, int max_depth, int *line, int *col)
{
    int depth = 0, in_string = 0, escaped = 0, l = 1, c = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];

        c++;
        if (ch == '\n') {
            l++;
            c = 0;
        }
        if (in_string) {
            if (escaped)
                escaped = 0;
            else if (ch == '\\')
                escaped = 1;
            else if (ch == '"')
                in_string = 0;
            continue;
        }
        if (ch == '"') {
            in_string = 1;
        } else if (ch == '{' || ch == '[') {
            if (++depth > max_depth) {
                *line = l;
                *col = c;
                return 1;
            }
        } else if ((ch == '}' || ch == ']') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

static int blank(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r' && buf[i] != '\n')
            return 0;
    return 1;
}

json_t *sx_json_parse_object(const char *buf, size_t len, int max_depth, char *err,
                             size_t errlen)
{
    json_error_t jerr;
    json_t *root;
    int line, col;

    if (errlen > 0)
        err[0] = '\0';
    if (max_depth <= 0)
        max_depth = SX_JSON_MAX_DEPTH;

    /* 1. An empty body is the most common mistake; name it plainly. */
    if (!buf || blank(buf, len)) {
        snprintf(err, errlen, "request body is empty; send a JSON object");
        return NULL;
    }

    /* 2. Bound the nesting before jansson recurses into it. */
    if (too_deep(buf, len, max_depth, &line, &col)) {
        snprintf(err, errlen,
                 "JSON nesting is deeper than %d levels at line %d, column %d", max_depth,
                 line, col);
        return NULL;
    }

    /* 3. Parse: jansson rejects invalid UTF-8, NUL in strings, trailing data
     * and (with the flag) duplicate keys, and reports where. */
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_invalid_utf8)
            snprintf(err, errlen,
                     "request body is not valid UTF-8 at line %d, column %d: %s",
                     jerr.line, jerr.column, jerr.text);
        else if (json_error_code(&jerr) == json_error_duplicate_key)
            snprintf(err, errlen,
                     "duplicate key in request body at line %d, column %d: %s; send "
                     "each key once", jerr.line, jerr.column, jerr.text);
        else
            snprintf(err, errlen, "invalid JSON in request body at line %d, column %d: %s",
                     jerr.line, jerr.column, jerr.text);
        return NULL;
    }

    /* 4. The API takes objects only. */
    if (!json_is_object(root)) {
        snprintf(err, errlen, "request body must be a JSON object, not %s",
                 sx_json_type_name(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

bool sx_json_name_in(const char *name, const char *const *names)
{
    for (const char *const *n = names; *n; n++)
        if (strcmp(*n, name) == 0)
            return true;
    return false;
}

const char *sx_json_unknown_key(const json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v) {
        if (!sx_json_name_in(key, allowed))
            return key;
    }
    return NULL;
}

const char *sx_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

int sx_json_get_str(const json_t *obj, const char *key, const char **out)
{
    const json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = json_string_value(v);
    return 1;
}

int sx_json_get_int(const json_t *obj, const char *key, long long *out)
{
    const json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return -1;
    *out = (long long)json_integer_value(v);
    return 1;
}

int sx_json_get_num(const json_t *obj, const char *key, double *out)
{
    const json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return 1;
}

int sx_json_get_bool(const json_t *obj, const char *key, int *out)
{
    const json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return -1;
    *out = json_is_true(v);
    return 1;
}

size_t sx_utf8_char_len(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned c, cp;
    size_t n;

    if (len == 0 || p[0] == 0)
        return 0;
    c = p[0];
    if (c < 0x80)
        return 1;
    n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n == 0 || n > len)
        return 0;
    cp = c & (0x7F >> n);
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

bool sx_utf8_valid(const char *s, size_t len)
{
    for (size_t i = 0, n; i < len; i += n)
        if ((n = sx_utf8_char_len(s + i, len - i)) == 0)
            return false;
    return true;
}

void sx_utf8_scrub(char *s)
{
    size_t len = strlen(s), n;

    for (size_t i = 0; i < len; i += n)
        if ((n = sx_utf8_char_len(s + i, len - i)) == 0) {
            s[i] = '?';
            n = 1;
        }
}

/* ---- writing by hand --------------------------------------------------- */

static bool out_room(struct sx_json_out *o, size_t n)
{
    size_t cap;
    char *grown;

    if (o->failed)
        return false;
    if (o->len + n + 1 <= o->cap)
        return true;
    for (cap = o->cap ? o->cap : 512; cap < o->len + n + 1; cap *= 2)
        ;
    if (!(grown = realloc(o->buf, cap))) {
        o->failed = true;
        return false;
    }
    o->buf = grown;
    o->cap = cap;
    return true;
}

void sx_json_out_raw(struct sx_json_out *o, const char *s, size_t n)
{
    if (!out_room(o, n))
        return;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

void sx_json_out_str(struct sx_json_out *o, const char *s, size_t n)
{
    /* The escapes jansson writes short; other controls go as \u00XX. */
    static const char short_escape[0x60] = {
        ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
        ['\t'] = 't', ['"'] = '"',   ['\\'] = '\\',
    };
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 0, run;

    sx_json_out_raw(o, "\"", 1);
    while (i < n) {
        unsigned char c;

        /* The bytes that need nothing, in one copy. */
        for (run = i; run < n; run++) {
            c = (unsigned char)s[run];
            if (c < 0x20 || c == '"' || c == '\\')
                break;
        }
        sx_json_out_raw(o, s + i, run - i);
        if (run == n)
            break;
        c = (unsigned char)s[run];
        if (short_escape[c]) {
            char e[2] = {'\\', short_escape[c]};

            sx_json_out_raw(o, e, sizeof(e));
        } else {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

            sx_json_out_raw(o, u, sizeof(u));
        }
        i = run + 1;
    }
    sx_json_out_raw(o, "\"", 1);
}

size_t sx_json_format_int(char *out, long long v)
{
    /* The magnitude as unsigned, so that LLONG_MIN has one too. */
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    char digits[SX_JSON_INT_MAX];
    size_t n = 0, len = 0;

    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = digits[--n];
    out[len] = '\0';
    return len;
}

void sx_json_out_int(struct sx_json_out *o, long long v)
{
    char b[SX_JSON_INT_MAX];

    sx_json_out_raw(o, b, sx_json_format_int(b, v));
}

/* A real as json_dumps() writes it (17 significant digits, and a ".0"
 * when that alone would read back as an integer). */
static void out_real(struct sx_json_out *o, double d)
{
    char b[40], *e;
    int n;

    /* A whole number below 1e17 has all its digits within the 17: it is
     * the integer and ".0" (settings' reals such as top_p 1 often are). */
    if (d > -1e17 && d < 1e17 && d == (double)(long long)d) {
        if (d == 0 && signbit(d)) /* -0.0, whose integer has no sign */
            sx_json_out_raw(o, "-0", 2);
        else
            sx_json_out_raw(o, b, sx_json_format_int(b, (long long)d));
        sx_json_out_raw(o, ".0", 2);
        return;
    }
    n = snprintf(b, sizeof(b) - 2, "%.17g", d);

    if (n < 0 || n >= (int)sizeof(b) - 2) {
        o->failed = true;
        return;
    }
    if ((e = strchr(b, 'e')) != NULL) { /* "e+07" is written "e7" */
        char *to = e + 1, *from = to;

        if (*from == '-')
            to++, from++;
        else if (*from == '+')
            from++;
        while (*from == '0' && from[1])
            from++;
        memmove(to, from, strlen(from) + 1);
        n = (int)strlen(b);
    } else if (!strchr(b, '.')) {
        b[n++] = '.';
        b[n++] = '0';
    }
    sx_json_out_raw(o, b, (size_t)n);
}

#define OUT_DEPTH_MAX 2048 /* deeper trees are refused, as a cycle would be */

static void out_value(struct sx_json_out *o, const json_t *v, int depth)
{
    size_t i, n;
    void *it;

    if (!v || depth > OUT_DEPTH_MAX) {
        o->failed = true;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        sx_json_out_raw(o, "{", 1);
        for (it = json_object_iter((json_t *)v), n = 0; it;
             it = json_object_iter_next((json_t *)v, it), n++) {
            if (n)
                sx_json_out_raw(o, ",", 1);
            sx_json_out_str(o, json_object_iter_key(it), json_object_iter_key_len(it));
            sx_json_out_raw(o, ":", 1);
            out_value(o, json_object_iter_value(it), depth + 1);
        }
        sx_json_out_raw(o, "}", 1);
        break;
    case JSON_ARRAY:
        sx_json_out_raw(o, "[", 1);
        for (i = 0, n = json_array_size(v); i < n; i++) {
            if (i)
                sx_json_out_raw(o, ",", 1);
            out_value(o, json_array_get(v, i), depth + 1);
        }
        sx_json_out_raw(o, "]", 1);
        break;
    case JSON_STRING:
        sx_json_out_str(o, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        sx_json_out_int(o, (long long)json_integer_value(v));
        break;
    case JSON_REAL:
        out_real(o, json_real_value(v));
        break;
    case JSON_TRUE:
        sx_json_out_raw(o, "true", 4);
        break;
    case JSON_FALSE:
        sx_json_out_raw(o, "false", 5);
        break;
    case JSON_NULL:
        sx_json_out_raw(o, "null", 4);
        break;
    }
}

void sx_json_out_value(struct sx_json_out *o, const json_t *v)
{
    out_value(o, v, 0);
}

char *sx_json_out_take(struct sx_json_out *o, size_t *len)
{
    char *s = o->failed ? NULL : o->buf;

    if (o->failed)
        free(o->buf);
    if (s && len)
        *len = o->len;
    *o = (struct sx_json_out){0};
    return s;
}
