/* synapsex: one binary that serves the gateway and runs the engine tools.
 * main() dispatches on the first argument; `serve` is below, the engine
 * tools (`run`, `model`) live in src/cli/. */
#include "api/app.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "cli/cli.h"
#include "http/http.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SX_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: synapsex <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve     run the gateway (HTTP API)\n"
            "  run       complete a prompt with a local GGUF model\n"
            "  model     inspect or synthesize GGUF model files\n"
            "  version   print the version\n"
            "\n"
            "`synapsex <command> --help` lists a command's options.\n");
}

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: synapsex serve [--config FILE] [--listen HOST:PORT] [--data DIR]\n"
            "                      [--model NAME=FILE.gguf]... [--upstream NAME=URL]...\n"
            "                      [--store URL] [--redis URL] [options]\n"
            "\n"
            "Precedence: flags > SYNAPSEX_* environment > config file > defaults\n"
            "(see docs/configuration.md). SYNAPSEX_ADMIN_KEY sets the admin key.\n"
            "\n"
            "options:\n");
    sx_config_print_flags(out);
    fprintf(out, "  %-24s %s\n", "--help", "show this help");
}

/* mkdir -p with mode 0700 for the directories it creates. */
static int make_dirs(const char *path, char *err, size_t errlen)
{
    char buf[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(buf)) {
        snprintf(err, errlen, "data directory path is empty or too long");
        return SX_EINVAL;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir(\"%.200s\") failed: %s", buf, strerror(errno));
            return SX_EIO;
        }
        buf[i] = path[i];
    }
    return SX_OK;
}

static int app_ready(void *ctx)
{
    return sx_app_ready(ctx);
}

static int app_is_admin(void *ctx, sx_http_req *r)
{
    return sx_app_is_admin(ctx, r);
}

static int serve(int argc, char **argv)
{
    struct sx_config *cfg = NULL;
    struct sx_app *app = NULL;
    sx_http_server *srv = NULL;
    sigset_t sigs;
    char err[512];
    int sig = 0, status = 1;

    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            serve_usage(stdout);
            return 0;
        }

    /* 1. Configuration: defaults < file < environment < flags. */
    cfg = sx_config_load(argc, argv, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "synapsex serve: %s\n", err);
        return 2;
    }
    sx_log_min_level = cfg->log_level;

    /* 2. Signals: blocked here, so every thread started later inherits the
     * mask and only sigwait() below sees SIGINT/SIGTERM. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* 3. Data directory, then the application (store, tenancy, admin key). */
    if (make_dirs(cfg->data_dir, err, sizeof(err)) != SX_OK) {
        SX_ERROR("main", "%s", err);
        goto out;
    }
    app = sx_app_open(cfg, err, sizeof(err));
    if (!app) {
        SX_ERROR("main", "cannot open the application: %s", err);
        goto out;
    }

    /* 4. HTTP server with the API and the operational routes. */
    srv = sx_http_server_new(cfg, err, sizeof(err));
    if (!srv) {
        SX_ERROR("main", "%s", err);
        goto out;
    }
    if (sx_app_register_routes(app, srv) != SX_OK ||
        sx_http_route_health(srv, app_ready, app_is_admin, app) != SX_OK) {
        SX_ERROR("main", "cannot register the HTTP routes (see above)");
        goto out;
    }
    if (sx_http_start(srv, err, sizeof(err)) != SX_OK) {
        SX_ERROR("main", "%s", err);
        goto out;
    }
    SX_INFO("main", "listening on http%s://%s%s%s:%d", cfg->tls_cert ? "s" : "",
            strchr(cfg->listen_host, ':') ? "[" : "", cfg->listen_host,
            strchr(cfg->listen_host, ':') ? "]" : "", sx_http_port(srv));

    /* 5. Serve until SIGINT or SIGTERM. */
    sigwait(&sigs, &sig);
    SX_INFO("main", "%s received; finishing in-flight requests (up to %d s)",
            sig == SIGINT ? "SIGINT" : "SIGTERM", cfg->shutdown_timeout_s);

    /* 6. Graceful shutdown: stop accepting, drain, close. */
    sx_http_stop(srv, cfg->shutdown_timeout_s * 1000);
    status = 0;
    SX_INFO("main", "stopped");

out:
    sx_http_server_free(srv);
    sx_app_close(app);
    sx_config_free(cfg);
    return status;
}

int main(int argc, char **argv)
{
    const char *cmd = argc >= 2 ? argv[1] : NULL;

    if (!cmd || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        usage(cmd ? stdout : stderr);
        return cmd ? 0 : 2;
    }
    if (strcmp(cmd, "serve") == 0)
        return serve(argc - 2, argv + 2);
    if (strcmp(cmd, "run") == 0)
        return sx_cli_run(argc - 1, argv + 1);
    if (strcmp(cmd, "model") == 0)
        return sx_cli_model(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0) {
        if (argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
            printf("usage: synapsex version\n\nPrints the version and exits.\n");
            return 0;
        }
        printf("synapsex %s\n", SX_VERSION);
        return 0;
    }
    fprintf(stderr, "synapsex: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
