/* The route table behind sx_http_route(): method + pattern -> handler, with
 * {name} segments capturing. Internal to src/http/ (and its unit test). The
 * table is fixed-size and read-only once the server starts, so matching
 * takes no lock. */
#ifndef SX_HTTP_ROUTER_H
#define SX_HTTP_ROUTER_H

#include "http/http.h"

#define SX_HTTP_MAX_SEGS 16

struct sx_http_route_entry {
    char method[12];
    char *pattern;                  /* as registered, for labels and logs */
    int nseg;
    char *seg[SX_HTTP_MAX_SEGS];    /* literal text, or capture name */
    unsigned char capture[SX_HTTP_MAX_SEGS];
    sx_http_handler fn;
    void *ctx;
    size_t max_body;                /* 0: the server's limit */
};

struct sx_http_router {
    struct sx_http_route_entry routes[SX_HTTP_MAX_ROUTES];
    int n;
};

/* Result of a match: the route index and the captures, pointing into the
 * caller's scratch buffer. */
struct sx_http_match {
    int route;
    int nparams;
    const char *name[SX_HTTP_MAX_PARAMS];
    const char *value[SX_HTTP_MAX_PARAMS];
};

#define SX_HTTP_NO_PATH (-1)   /* no pattern has this path: 404 */
#define SX_HTTP_NO_METHOD (-2) /* the path exists with other methods: 405 */

/* Adds a route. Returns its index (>= 0), SX_EINVAL (pattern not starting
 * with '/', empty or unbalanced {}, too many segments or captures, bad
 * method), SX_EEXIST (same method and same shape), SX_ETOOBIG or
 * SX_ENOMEM. */
int sx_http_router_add(struct sx_http_router *rt, const char *method, const char *pattern,
                       sx_http_handler fn, void *ctx);

/* Matches method + path. Captured values are copied into scratch (which
 * must hold strlen(path) + 1 bytes). Returns the route index, or
 * SX_HTTP_NO_PATH / SX_HTTP_NO_METHOD; for NO_METHOD, *path_route is set
 * to a route with that path (for its pattern and the Allow header), and
 * allow (if not NULL) receives "GET, POST" style text. */
int sx_http_router_match(const struct sx_http_router *rt, const char *method,
                         const char *path, char *scratch, struct sx_http_match *m,
                         int *path_route, char *allow, size_t allowlen);

void sx_http_router_clear(struct sx_http_router *rt);

#endif
