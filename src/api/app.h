/* The application: what main.c opens, wires into the HTTP server and
 * closes. It owns the store and the domain modules; the api/ files hold the
 * HTTP handlers, one file per resource, and no business rules. */
#ifndef SX_API_APP_H
#define SX_API_APP_H

#include <stddef.h>

#include "http/http.h"

struct sx_config;
struct sx_app;

/* Opens the store (applying migrations), loads tenancy (settings cache, key
 * index, pepper) and bootstraps the admin key: SYNAPSEX_ADMIN_KEY if set
 * (only its keyed hash is stored), else on first start a new sk-admin-...
 * key is printed once to stdout (never to the log). NULL with a message in
 * err on failure. */
struct sx_app *sx_app_open(const struct sx_config *cfg, char *err, size_t errlen);

/* Registers every /v1 route on srv. 0 or sx_http_route's error. */
int sx_app_register_routes(struct sx_app *app, sx_http_server *srv);

/* 1 when the store answers a query (for /readyz), else 0. */
int sx_app_ready(struct sx_app *app);

/* 1 when r carries a valid admin key (for /metrics), else 0. */
int sx_app_is_admin(struct sx_app *app, sx_http_req *r);

void sx_app_close(struct sx_app *app); /* accepts NULL */

/* For the other domain modules' API files. */
struct sx_tenancy *sx_app_tenancy(struct sx_app *app);
struct sx_store *sx_app_store(struct sx_app *app);

#endif
