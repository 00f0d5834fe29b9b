/* The operational routes: GET /healthz (the process answers), GET /readyz
 * (the store answers, asked through a callback so that src/http/ stays
 * below src/api/) and GET /metrics (Prometheus text, admin key only). */
#include "http/internal.h"
#include "base/err.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void healthz(sx_http_req *r, void *ctx)
{
    (void)ctx;
    sx_http_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static void readyz(sx_http_req *r, void *ctx)
{
    sx_http_server *s = ctx;

    if (s->ready && s->ready(s->health_ctx) == 1)
        sx_http_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
    else
        sx_http_reply_error(r, 503, "not_ready", NULL,
                            "the server is not ready: its store does not answer yet");
}

static void metrics(sx_http_req *r, void *ctx)
{
    sx_http_server *s = ctx;
    const char *auth = sx_http_header(r, "Authorization");
    char *text = NULL;
    size_t len = 0;
    FILE *out;
    int admin;

    /* 1. Admin only: no key is 401, any other key is 403. */
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || auth[7] == '\0') {
        sx_http_set_header(r, "WWW-Authenticate", "Bearer");
        sx_http_reply_error(r, 401, "missing_api_key", NULL,
                            "GET /metrics needs an admin key: send Authorization: "
                            "Bearer sk-admin-...");
        return;
    }
    admin = s->is_admin ? s->is_admin(s->health_ctx, r) : 0;
    if (admin < 0) {
        sx_http_set_header(r, "WWW-Authenticate", "Bearer");
        sx_http_reply_error(r, 401, "invalid_api_key", NULL,
                            "GET /metrics: the key is not valid (unknown, revoked or "
                            "expired); send a current admin key");
        return;
    }
    if (admin != 1) {
        sx_http_reply_error(r, 403, "admin_key_required", NULL,
                            "GET /metrics needs an admin key; this key is not one");
        return;
    }

    /* 2. Render. */
    out = open_memstream(&text, &len);
    if (!out) {
        sx_http_reply_error(r, 500, NULL, NULL, "out of memory");
        return;
    }
    sx_http_metrics_write(s, out);
    fclose(out);
    sx_http_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

int sx_http_route_health(sx_http_server *s, int (*ready)(void *ctx),
                         int (*is_admin)(void *ctx, sx_http_req *r), void *ctx)
{
    int rc;

    s->ready = ready;
    s->is_admin = is_admin;
    s->health_ctx = ctx;
    if ((rc = sx_http_route(s, "GET", "/healthz", healthz, s)) != SX_OK ||
        (rc = sx_http_route(s, "GET", "/readyz", readyz, s)) != SX_OK ||
        (rc = sx_http_route(s, "GET", "/metrics", metrics, s)) != SX_OK)
        return rc;
    return SX_OK;
}
