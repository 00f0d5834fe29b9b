/* The application object (app.h): opens the store and the domain modules
 * in order, registers every /v1 route, and closes them in reverse. The
 * generated admin key is printed here, on stdout, and nowhere else. */
#include "api/api.h"
#include "api/serving.h"

#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/loop.h"
#include "rag/rag.h"
#include "tuning/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The rag module's embedder: a local model's pooled embeddings. */
static int rag_embed(void *ctx, const char *text, size_t len, float *out, int dim)
{
    return sx_backend_embed_text(ctx, text, len, out, dim);
}

/* Installs the first local model of the catalogue as the rag module's
 * embedder, so that chunks get vectors; none: BM25 alone. */
static void rag_embedder_install(struct sx_app *app)
{
    sx_catalog *c = sx_serving_catalog(app->serving);

    for (size_t i = 0; i < sx_catalog_count(c); i++) {
        sx_backend *b = sx_catalog_at(c, i);
        int dim = sx_backend_embed_dim(b);

        if (dim > 0) {
            sx_rag_set_embedder(app->rag, rag_embed, b, sx_backend_name(b), dim);
            SX_INFO("app", "rag: chunks get %d-dim vectors from model %s", dim,
                    sx_backend_name(b));
            return;
        }
    }
}

struct sx_app *sx_app_open(const struct sx_config *cfg, char *err, size_t errlen)
{
    struct sx_tenancy_options topt = {0};
    char admin_key[SX_API_KEY_MAX], *journal = NULL;
    struct sx_app *app = calloc(1, sizeof(*app));
    int pool = cfg->http_threads + 4;

    if (!app) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    /* Limitation: limits live in this process; the Redis backend that lets
     * several processes share them is a later piece of work. Refusing the
     * option beats silently running with per-process limits. */
    if (cfg->redis_url && cfg->redis_url[0]) {
        snprintf(err, errlen, "--redis / redis: the Redis limiter backend is not built yet; "
                              "remove the option (limits are kept in this process)");
        free(app);
        return NULL;
    }

    /* 1. The store: one connection per HTTP worker plus a few for
     * background work. The rag module's SQLite functions are registered
     * first so that every connection has them. */
    if (sx_rag_sqlite_setup() != 0) {
        snprintf(err, errlen, "cannot register the rag module's SQLite functions");
        goto fail;
    }
    app->store = sx_store_open(cfg->store_url, cfg->data_dir, pool > 64 ? 64 : pool, err,
                               errlen);
    if (!app->store)
        goto fail;

    /* 2. Tenancy: migrations, pepper, admin key. */
    topt.data_dir = cfg->data_dir;
    topt.pepper = getenv("SYNAPSEX_KEY_PEPPER");
    topt.admin_key = getenv("SYNAPSEX_ADMIN_KEY");
    app->tenancy = sx_tenancy_open(app->store, &topt, admin_key, err, errlen);
    if (!app->tenancy)
        goto fail;
    if (admin_key[0]) {
        printf("synapsex: generated the admin key; it is shown only this once, store it "
               "now:\n%s\n", admin_key);
        fflush(stdout);
        explicit_bzero(admin_key, sizeof(admin_key));
    }

    /* 3. Metering: usage ledger tables, its journal next to the database
     * (or in the data directory for a database server), today's quota
     * use, purge hook. */
    if (sx_store_file(app->store)
            ? asprintf(&journal, "%s.ledger", sx_store_file(app->store)) < 0
            : asprintf(&journal, "%s/ledger", cfg->data_dir) < 0) {
        journal = NULL;
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    app->meter = sx_meter_open(app->store, app->tenancy,
                               &(struct sx_meter_options){cfg->ledger_sync, journal}, err,
                               errlen);
    free(journal);
    journal = NULL;
    if (!app->meter)
        goto fail;
    sx_loop_set_idle_work(sx_meter_idle_work, app->meter);
    /* 4. Serving: the model catalogue (loads local models) and the
     * threads that finish completions. */
    app->serving = sx_serving_open(cfg, err, errlen);
    if (!app->serving)
        goto fail;
    /* 5. Adapters: the tenants' LoRA versions over the local models. */
    app->adapters = sx_api_adapters_open(app, cfg, err, errlen);
    if (!app->adapters)
        goto fail;
    /* 6. RAG: datasets, documents, chunks and the per-tenant index. */
    app->rag = sx_rag_open(app->store, app->tenancy, NULL, err, errlen);
    if (!app->rag)
        goto fail;
    rag_embedder_install(app);
    SX_INFO("app", "store %s ready", sx_store_backend(app->store));
    return app;

fail:
    sx_app_close(app);
    return NULL;
}

int sx_app_register_routes(struct sx_app *app, sx_http_server *srv)
{
    int rc = sx_api_tenants_routes(app, srv);

    if (rc == 0)
        rc = sx_api_settings_routes(app, srv);
    if (rc == 0)
        rc = sx_api_keys_routes(app, srv);
    if (rc == 0)
        rc = sx_api_admin_routes(app, srv);
    if (rc == 0)
        rc = sx_api_usage_routes(app, srv);
    if (rc == 0)
        rc = sx_api_chat_routes(app, srv);
    if (rc == 0)
        rc = sx_api_completions_routes(app, srv);
    if (rc == 0)
        rc = sx_api_embeddings_routes(app, srv);
    if (rc == 0)
        rc = sx_api_models_routes(app, srv);
    if (rc == 0)
        rc = sx_api_adapters_routes(app, srv);
    if (rc == 0)
        rc = sx_api_datasets_routes(app, srv);
    return rc;
}

int sx_app_ready(struct sx_app *app)
{
    return app && sx_store_ping(app->store) == 0;
}

int sx_app_is_admin(struct sx_app *app, sx_http_req *r)
{
    struct sx_principal p;
    struct sx_refusal why;

    if (sx_auth_principal(app->tenancy, sx_http_header(r, "Authorization"), &p, &why) != 0)
        return -1;
    return p.kind == SX_KEY_ADMIN;
}

void sx_app_close(struct sx_app *app)
{
    if (!app)
        return;
    if (app->rag) /* the embedder is a model of the catalogue */
        sx_rag_set_embedder(app->rag, NULL, NULL, NULL, 0);
    sx_serving_close(app->serving); /* settles what it cancels */
    sx_rag_close(app->rag);
    sx_registry_close(app->adapters); /* after the jobs holding adapters */
    if (app->meter)
        sx_loop_set_idle_work(NULL, NULL); /* the loops have stopped */
    sx_meter_close(app->meter);
    sx_tenancy_close(app->tenancy);
    sx_store_close(app->store);
    free(app);
}

struct sx_tenancy *sx_app_tenancy(struct sx_app *app)
{
    return app->tenancy;
}

struct sx_store *sx_app_store(struct sx_app *app)
{
    return app->store;
}
