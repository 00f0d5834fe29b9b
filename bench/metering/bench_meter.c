/* Metering benchmark: requests/s of a cheap request through the real HTTP
 * server, with and without metering (GCRA + token quota + durable ledger
 * with group commit), in one process and one run; a third variant runs the
 * limits without the ledger to split the cost. Rounds alternate the
 * variants so that load from elsewhere hits all alike; medians are printed.
 *
 *   bench_meter [--seconds S] [--rounds N] [--clients C] [--threads T]
 *               [--sync full|normal]   (the ledger's durability, ledger_sync) */
#include "metering/internal.h"

#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct bench {
    sx_meter *m;
    struct sx_tenant *t;
    int port;
    atomic_bool stop;
    atomic_long done;
    atomic_long errors;
};

static void reply_ok(sx_http_req *r)
{
    sx_http_reply_json(r, 200, json_pack("{s:s, s:i}", "object", "bench", "tokens", 28));
}

static void handle_off(sx_http_req *r, void *ctx)
{
    (void)ctx;
    reply_ok(r);
}

/* What a metered endpoint does around its work: admit, settle, reply. */
static void handle_on(sx_http_req *r, void *ctx)
{
    struct bench *b = ctx;
    struct sx_meter_grant *g;
    struct sx_usage_event ev = {"bench-model", 12, 16, 0, 0, "ok", "embeddings"};

    if (sx_meter_admit(b->m, r, b->t, 12, 16, &g))
        return;
    if (sx_meter_settle(b->m, g, &ev)) {
        sx_http_reply_error(r, 500, "ledger_failed", NULL, "the usage ledger write failed");
        return;
    }
    reply_ok(r);
}

/* Limits alone: admission and release, no ledger row. */
static void handle_limits(sx_http_req *r, void *ctx)
{
    struct bench *b = ctx;
    struct sx_meter_grant *g;

    if (sx_meter_admit(b->m, r, b->t, 12, 16, &g))
        return;
    sx_meter_release(b->m, g);
    reply_ok(r);
}

/* One keep-alive client sending requests back to back. */
struct client {
    struct bench *b;
    const char *path;
};

static int read_response(int fd, char *buf, size_t cap)
{
    size_t have = 0;

    for (;;) {
        ssize_t n = recv(fd, buf + have, cap - have - 1, 0);
        char *end, *cl;

        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        cl = strcasestr(buf, "content-length:");
        if (!cl || cl > end)
            return -1;
        if (have >= (size_t)(end + 4 - buf) + (size_t)atol(cl + 15))
            return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : 1;
    }
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->b->port)};
    char req[160], buf[8192];
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, len;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        atomic_fetch_add(&c->b->errors, 1);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    len = snprintf(req, sizeof(req),
                   "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", c->path);
    while (!atomic_load(&c->b->stop)) {
        int rc;

        if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len)
            break;
        rc = read_response(fd, buf, sizeof(buf));
        if (rc < 0)
            break;
        if (rc)
            atomic_fetch_add(&c->b->errors, 1);
        else
            atomic_fetch_add(&c->b->done, 1);
    }
    close(fd);
    return NULL;
}

static double run_round(struct bench *b, const char *path, int clients, double seconds)
{
    pthread_t th[256];
    struct client c[256];
    int64_t t0, t1;
    long n;

    atomic_store(&b->stop, false);
    atomic_store(&b->done, 0);
    t0 = sx_time_mono_ns();
    for (int i = 0; i < clients; i++) {
        c[i] = (struct client){b, path};
        pthread_create(&th[i], NULL, client_main, &c[i]);
    }
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&b->stop, true);
    n = atomic_load(&b->done);
    t1 = sx_time_mono_ns();
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    return (double)n / ((double)(t1 - t0) / 1e9);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    struct bench b = {0};
    struct sx_tenancy_options to = {0};
    struct sx_config *cfg = sx_config_new();
    struct sx_fault fault = {0};
    const struct sx_actor who = {NULL, "system", NULL, NULL};
    char dir[] = "/tmp/sx_bench_meter_XXXXXX", err[256], key[SX_API_KEY_MAX],
         kid[SX_KEY_ID_MAX], admin[SX_API_KEY_MAX], cmd[128];
    double seconds = 2, off[64], on[64], lim[64];
    int rounds = 5, clients = 16, threads = 8;
    int64_t batches, rows;
    struct sx_meter_options mo = {SX_LEDGER_SYNC_FULL, NULL};
    char journal[256];
    sx_store *store;
    sx_tenancy *tn;
    sx_http_server *srv;
    json_t *body;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--clients") == 0)
            clients = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--sync") == 0)
            mo.ledger_sync = strcmp(argv[i + 1], "normal") == 0 ? SX_LEDGER_SYNC_NORMAL
                                                                : SX_LEDGER_SYNC_FULL;
    }
    if (rounds < 1 || rounds > 64 || clients < 1 || clients > 256 || threads < 1 ||
        seconds <= 0) {
        fprintf(stderr, "usage: bench_meter [--seconds S] [--rounds 1..64] "
                        "[--clients 1..256] [--threads N]\n");
        return 2;
    }
    sx_log_min_level = SX_LOG_WARN;

    /* 1. A store, tenancy and metering in a scratch directory, and one
     * business tenant whose limits never refuse (their accounting still
     * runs on every request). */
    if (!mkdtemp(dir) || !cfg)
        return 1;
    store = sx_store_open(NULL, dir, threads + 4, err, sizeof(err));
    snprintf(journal, sizeof(journal), "%s/synapsex.db.ledger", dir); /* as the server */
    mo.journal_dir = journal;
    to.data_dir = dir;
    to.admin_key = "sk-admin-bench-0123456789abcdefghijklmnop";
    tn = store ? sx_tenancy_open(store, &to, admin, err, sizeof(err)) : NULL;
    b.m = tn ? sx_meter_open(store, tn, &mo, err, sizeof(err)) : NULL;
    if (!b.m) {
        fprintf(stderr, "bench_meter: %s\n", err);
        return 1;
    }
    body = json_pack("{s:s, s:s, s:s, s:{s:I, s:I}}", "name", "Bench", "slug", "bench", "tier",
                     "business", "settings", "rate_limit_rpm", (json_int_t)1000000000,
                     "daily_token_limit", (json_int_t)1000000000000000LL);
    if (sx_tenant_create(tn, body, 0, &who, &b.t, key, kid, &fault)) {
        fprintf(stderr, "bench_meter: tenant: %s\n", fault.message);
        return 1;
    }
    json_decref(body);

    /* 2. The HTTP server with the two routes. */
    cfg->listen_port = 0;
    cfg->http_threads = threads;
    srv = sx_http_server_new(cfg, err, sizeof(err));
    if (!srv || sx_http_route(srv, "POST", "/bench/off", handle_off, &b) ||
        sx_http_route(srv, "POST", "/bench/on", handle_on, &b) ||
        sx_http_route(srv, "POST", "/bench/limits", handle_limits, &b) ||
        sx_http_start(srv, err, sizeof(err))) {
        fprintf(stderr, "bench_meter: server: %s\n", err);
        return 1;
    }
    b.port = sx_http_port(srv);

    /* 3. Rounds, alternating. */
    run_round(&b, "/bench/off", clients, seconds / 4); /* warm-up */
    for (int i = 0; i < rounds; i++) {
        off[i] = run_round(&b, "/bench/off", clients, seconds);
        lim[i] = run_round(&b, "/bench/limits", clients, seconds);
        on[i] = run_round(&b, "/bench/on", clients, seconds);
        printf("round %d: off %.0f req/s, limits only %.0f req/s, on %.0f req/s\n", i + 1,
               off[i], lim[i], on[i]);
        fflush(stdout);
    }
    sx_ledger_stats(b.m->ledger, &batches, &rows);
    {
        double moff = median(off, rounds), mon = median(on, rounds);
        double mlim = median(lim, rounds);

        printf("\nmetered cheap request, %d clients, %d HTTP threads, %d rounds of %.1f s, "
               "ledger_sync = %s\n",
               clients, threads, rounds, seconds,
               mo.ledger_sync == SX_LEDGER_SYNC_FULL ? "full" : "normal");
        printf("  limits+ledger off: %10.0f req/s (median)\n", moff);
        printf("  limits only:       %10.0f req/s (median, ratio %.3f)\n", mlim,
               mlim / moff);
        printf("  limits+ledger on:  %10.0f req/s (median)\n", mon);
        printf("  ratio on/off:      %10.3f\n", mon / moff);
        printf("  ledger: %lld rows in %lld commits (%.1f rows per commit)\n", (long long)rows,
               (long long)batches, batches ? (double)rows / (double)batches : 0.0);
        printf("  errors: %ld\n", atomic_load(&b.errors));
    }

    /* 4. Clean up. */
    sx_http_stop(srv, 2000);
    sx_http_server_free(srv);
    sx_tenant_unref(b.t);
    sx_meter_close(b.m);
    sx_tenancy_close(tn);
    sx_store_close(store);
    sx_config_free(cfg);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
