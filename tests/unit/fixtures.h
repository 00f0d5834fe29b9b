/* Helpers for the unit tests that read ../shared/fixtures: where the
 * fixtures are (SYNAPSEX_FIXTURES, else ../shared/fixtures), skipping when
 * they are absent, whole-file reads, a JSON string decoder and a small JSON
 * reader for reference/manifest.json. Header-only (static inline) because
 * the Makefile links each tests/unit/test_*.c on its own. Include after
 * <cmocka.h>. */
#ifndef SX_TESTS_FIXTURES_H
#define SX_TESTS_FIXTURES_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The fixture folder, filled by have_fixtures(). */
static char fixtures[4096];

static inline bool have_fixtures(void)
{
    const char *env = getenv("SYNAPSEX_FIXTURES");
    struct stat st;

    snprintf(fixtures, sizeof(fixtures), "%s",
             env && *env ? env : "../shared/fixtures");
    return stat(fixtures, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Skips the current test, saying why, when the fixtures are absent. */
#define NEED_FIXTURES()                                                        \
    do {                                                                       \
        if (!have_fixtures()) {                                                \
            printf("skipped: fixtures absent\n");                              \
            skip();                                                            \
        }                                                                      \
    } while (0)

/* The whole file, NUL-terminated, in a malloc'd buffer; its length in *len
 * when len is not NULL (0 on failure). NULL when the file cannot be read
 * entirely. */
static inline char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (len)
        *len = 0;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            if (len)
                *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* read_all() of <fixtures>/<rel>; fails the test when it cannot be read. */
static inline char *read_fixture(const char *rel, size_t *len)
{
    char path[8192];
    char *buf;

    snprintf(path, sizeof(path), "%s/%s", fixtures, rel);
    buf = read_all(path, len);
    if (!buf)
        fail_msg("cannot read %s", path);
    return buf;
}

/* Decodes the JSON string whose opening quote is at p into a malloc'd UTF-8
 * string of *len bytes; *end (if given) receives the position after the
 * closing quote. */
static inline char *json_unquote(const char *p, size_t *len, const char **end)
{
    const char *q = p + 1;
    char *out;
    size_t n = 0;

    /* Measure the escaped text first: the decoded one is never longer. */
    while (*q && *q != '"')
        q += q[0] == '\\' && q[1] ? 2 : 1;
    out = malloc((size_t)(q - p));

    for (p++; *p && *p != '"'; p++) {
        unsigned cp;

        if (*p != '\\') {
            out[n++] = *p;
            continue;
        }
        if (!*++p)
            break;
        switch (*p) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'u':
            sscanf(p + 1, "%4x", &cp);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[1] == '\\' && p[2] == 'u') {
                unsigned lo;

                sscanf(p + 3, "%4x", &lo);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (cp < 0x80) {
                out[n++] = (char)cp;
            } else if (cp < 0x800) {
                out[n++] = (char)(0xC0 | (cp >> 6));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                out[n++] = (char)(0xE0 | (cp >> 12));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                out[n++] = (char)(0xF0 | (cp >> 18));
                out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                out[n++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        default: out[n++] = *p; break;
        }
    }
    out[n] = '\0';
    if (len)
        *len = n;
    if (end)
        *end = *p ? p + 1 : p;
    return out;
}

/* --- a small JSON reader (enough for reference/manifest.json) ------------ */

typedef struct jv {
    char kind;               /* 'o' object, 'a' array, 's', 'n', 'b', 'z' */
    double num;
    char *str;               /* strings */
    int n;
    struct jv *items;        /* arrays, object values */
    char **keys;             /* objects */
} jv;

static inline const char *jskip(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

/* Parses the value at p into v; returns the position after it. The input
 * is a trusted fixture, so it is not validated. */
static inline const char *jparse(const char *p, jv *v)
{
    char *end;

    memset(v, 0, sizeof(*v));
    p = jskip(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';

        v->kind = *p == '{' ? 'o' : 'a';
        p = jskip(p + 1);
        while (*p != close) {
            v->items = realloc(v->items, (size_t)(v->n + 1) * sizeof(jv));
            v->keys = realloc(v->keys, (size_t)(v->n + 1) * sizeof(char *));
            v->keys[v->n] = NULL;
            if (v->kind == 'o') {
                v->keys[v->n] = json_unquote(jskip(p), NULL, &p);
                p = jskip(p) + 1;             /* ':' */
            }
            p = jskip(jparse(p, &v->items[v->n++]));
            if (*p == ',')
                p = jskip(p + 1);
        }
        return p + 1;
    }
    if (*p == '"') {
        v->kind = 's';
        v->str = json_unquote(p, NULL, &p);
        return p;
    }
    if (*p == 't' || *p == 'f') {
        v->kind = 'b';
        v->num = *p == 't';
        return p + (*p == 't' ? 4 : 5);
    }
    if (*p == 'n') {
        v->kind = 'z';
        return p + 4;
    }
    v->kind = 'n';
    v->num = strtod(p, &end);
    return end;
}

static inline void jfree(jv *v)
{
    for (int i = 0; i < v->n; i++) {
        jfree(&v->items[i]);
        free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
}

/* The value of key in object o; fails the test when it is missing. */
static inline const jv *jget(const jv *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (o->keys[i] && strcmp(o->keys[i], key) == 0)
            return &o->items[i];
    fail_msg("manifest: key '%s' missing", key);
    return NULL;
}

/* Reads <fixtures>/reference/manifest.json into root (jfree() it). */
static inline void load_manifest(jv *root)
{
    char *text = read_fixture("reference/manifest.json", NULL);

    jparse(text, root);
    free(text);
}

#endif
