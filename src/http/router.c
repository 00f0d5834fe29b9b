/* Implementation of the route table (router.h). Paths are split into at
 * most SX_HTTP_MAX_SEGS segments and compared with each route of the same
 * segment count; a literal segment beats a capture at the same position,
 * so "/v1/tenants/{t}" and "/v1/tenants/export" can both exist. */
#include "http/router.h"
#include "base/err.h"

#include <stdlib.h>
#include <string.h>

static int method_ok(const char *m)
{
    size_t n = strlen(m);

    if (n == 0 || n >= sizeof(((struct sx_http_route_entry *)0)->method))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return 0;
    return 1;
}

static void entry_free(struct sx_http_route_entry *e)
{
    free(e->pattern);
    for (int i = 0; i < e->nseg; i++)
        free(e->seg[i]);
    memset(e, 0, sizeof(*e));
}

/* Splits pattern into e's segments. Returns 0 or SX_EINVAL/SX_ENOMEM. */
static int parse_pattern(struct sx_http_route_entry *e, const char *pattern)
{
    const char *p = pattern;
    int ncap = 0;

    if (p[0] != '/')
        return SX_EINVAL;
    if (strcmp(p, "/") == 0)
        return SX_OK; /* the root has zero segments */
    while (*p == '/') {
        const char *start = ++p, *end;
        size_t len;
        int cap;

        end = strchr(start, '/');
        if (!end)
            end = start + strlen(start);
        len = (size_t)(end - start);
        if (len == 0 || e->nseg == SX_HTTP_MAX_SEGS)
            return SX_EINVAL;
        cap = start[0] == '{';
        if (cap && (len < 3 || start[len - 1] != '}' || ++ncap > SX_HTTP_MAX_PARAMS))
            return SX_EINVAL;
        if (memchr(start + cap, '{', len - cap) || memchr(start, '}', len - cap))
            return SX_EINVAL;
        e->capture[e->nseg] = (unsigned char)cap;
        e->seg[e->nseg] = cap ? strndup(start + 1, len - 2) : strndup(start, len);
        if (!e->seg[e->nseg])
            return SX_ENOMEM;
        e->nseg++;
        p = end;
    }
    return *p == '\0' ? SX_OK : SX_EINVAL;
}

static int same_shape(const struct sx_http_route_entry *a, const struct sx_http_route_entry *b)
{
    if (a->nseg != b->nseg || strcmp(a->method, b->method) != 0)
        return 0;
    for (int i = 0; i < a->nseg; i++) {
        if (a->capture[i] != b->capture[i])
            return 0;
        if (!a->capture[i] && strcmp(a->seg[i], b->seg[i]) != 0)
            return 0;
    }
    return 1;
}

int sx_http_router_add(struct sx_http_router *rt, const char *method, const char *pattern,
                       sx_http_handler fn, void *ctx)
{
    struct sx_http_route_entry *e;
    int rc;

    if (!method || !pattern || !fn || !method_ok(method))
        return SX_EINVAL;
    if (rt->n == SX_HTTP_MAX_ROUTES)
        return SX_ETOOBIG;
    e = &rt->routes[rt->n];
    memset(e, 0, sizeof(*e));
    strcpy(e->method, method);
    rc = parse_pattern(e, pattern);
    if (rc == SX_OK && !(e->pattern = strdup(pattern)))
        rc = SX_ENOMEM;
    for (int i = 0; rc == SX_OK && i < rt->n; i++)
        if (same_shape(&rt->routes[i], e))
            rc = SX_EEXIST;
    if (rc != SX_OK) {
        entry_free(e);
        return rc;
    }
    e->fn = fn;
    e->ctx = ctx;
    return rt->n++;
}

void sx_http_router_clear(struct sx_http_router *rt)
{
    for (int i = 0; i < rt->n; i++)
        entry_free(&rt->routes[i]);
    rt->n = 0;
}

/* Scores how well e matches the split path: -1 for no match, else a mask
 * with one bit per literal segment, earlier segments weighing more. */
static long score(const struct sx_http_route_entry *e, int nseg, const char *const *seg,
                  const size_t *len)
{
    long s = 0;

    if (e->nseg != nseg)
        return -1;
    for (int i = 0; i < nseg; i++) {
        s <<= 1;
        if (e->capture[i])
            continue;
        if (strlen(e->seg[i]) != len[i] || memcmp(e->seg[i], seg[i], len[i]) != 0)
            return -1;
        s |= 1;
    }
    return s;
}

static void add_allow(char *allow, size_t allowlen, const char *method)
{
    size_t used = strlen(allow);

    if (strstr(allow, method))
        return;
    if (used + strlen(method) + 3 > allowlen)
        return;
    if (used)
        strcat(allow, ", ");
    strcat(allow, method);
}

int sx_http_router_match(const struct sx_http_router *rt, const char *method,
                         const char *path, char *scratch, struct sx_http_match *m,
                         int *path_route, char *allow, size_t allowlen)
{
    const char *seg[SX_HTTP_MAX_SEGS];
    size_t len[SX_HTTP_MAX_SEGS];
    int nseg = 0, best = -1, any = -1;
    long best_score = -1, any_score = -1;
    const char *p = path;

    m->route = -1;
    m->nparams = 0;
    if (allow && allowlen)
        allow[0] = '\0';

    /* 1. Split; one trailing slash is tolerated ("/v1/models/"). */
    if (!p || p[0] != '/')
        return SX_HTTP_NO_PATH;
    while (*p == '/' && p[1] != '\0') {
        const char *start = ++p, *end = strchr(start, '/');

        if (!end)
            end = start + strlen(start);
        if (end == start || nseg == SX_HTTP_MAX_SEGS)
            return SX_HTTP_NO_PATH;
        seg[nseg] = start;
        len[nseg] = (size_t)(end - start);
        nseg++;
        p = end;
    }

    /* 2. Best route for this method, and any route for this path. */
    for (int i = 0; i < rt->n; i++) {
        const struct sx_http_route_entry *e = &rt->routes[i];
        long sc = score(e, nseg, seg, len);

        if (sc < 0)
            continue;
        if (strcmp(e->method, method) == 0) {
            if (sc > best_score) {
                best = i;
                best_score = sc;
            }
        } else if (sc > any_score) {
            any = i;
            any_score = sc;
        }
    }
    if (best < 0 && any < 0)
        return SX_HTTP_NO_PATH;
    if (best < 0) {
        /* Allow lists every method whose best pattern is as specific. */
        for (int i = 0; allow && i < rt->n; i++)
            if (score(&rt->routes[i], nseg, seg, len) == any_score)
                add_allow(allow, allowlen, rt->routes[i].method);
        if (path_route)
            *path_route = any;
        return SX_HTTP_NO_METHOD;
    }

    /* 3. Copy the captures out as NUL-terminated strings. */
    const struct sx_http_route_entry *e = &rt->routes[best];
    for (int i = 0; i < nseg; i++) {
        if (!e->capture[i])
            continue;
        memcpy(scratch, seg[i], len[i]);
        scratch[len[i]] = '\0';
        m->name[m->nparams] = e->seg[i];
        m->value[m->nparams] = scratch;
        m->nparams++;
        scratch += len[i] + 1;
    }
    m->route = best;
    return best;
}
