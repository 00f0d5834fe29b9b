/* Implementation of config.h. One table describes every option once: its
 * file key, flag, environment variable and how its text is parsed; the
 * file, environment and flag layers all go through sx_config_set(). */
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum opt_kind { OPT_STR, OPT_INT, OPT_SIZE, OPT_LISTEN, OPT_LEVEL, OPT_PAIRS, OPT_SYNC };

struct opt {
    const char *key;  /* file key */
    const char *flag; /* command-line flag */
    const char *env;  /* environment variable */
    enum opt_kind kind;
    size_t offset;    /* field in struct sx_config */
    long min, max;    /* OPT_INT / OPT_SIZE bounds */
    const char *help;
};

#define F(field) offsetof(struct sx_config, field)

static const struct opt opts[] = {
    {"listen", "--listen", "SYNAPSEX_LISTEN", OPT_LISTEN, 0, 0, 0,
     "HOST:PORT to listen on (default 127.0.0.1:8080; [::1]:PORT for IPv6)"},
    {"data_dir", "--data", "SYNAPSEX_DATA_DIR", OPT_STR, F(data_dir), 0, 0,
     "data directory (default ./data)"},
    {"store", "--store", "SYNAPSEX_STORE", OPT_STR, F(store_url), 0, 0,
     "store URL: sqlite:PATH or postgres://... (default SQLite in the data dir)"},
    {"redis", "--redis", "SYNAPSEX_REDIS", OPT_STR, F(redis_url), 0, 0,
     "Redis URL for cluster-wide rate limits (default none)"},
    {"tls_cert", "--tls-cert", "SYNAPSEX_TLS_CERT", OPT_STR, F(tls_cert), 0, 0,
     "PEM certificate file; serve HTTPS (needs --tls-key)"},
    {"tls_key", "--tls-key", "SYNAPSEX_TLS_KEY", OPT_STR, F(tls_key), 0, 0,
     "PEM private key file for --tls-cert"},
    {"max_body_bytes", "--max-body-bytes", "SYNAPSEX_MAX_BODY_BYTES", OPT_SIZE,
     F(max_body_bytes), 1024, 1L << 30, "largest request body, e.g. 1MiB (default 1MiB)"},
    {"http_threads", "--http-threads", "SYNAPSEX_HTTP_THREADS", OPT_INT, F(http_threads), 1,
     256, "HTTP worker threads (default 4)"},
    {"log_level", "--log-level", "SYNAPSEX_LOG_LEVEL", OPT_LEVEL, F(log_level), 0, 0,
     "debug, info, warn, error or fatal (default info)"},
    {"max_connections", "--max-connections", "SYNAPSEX_MAX_CONNECTIONS", OPT_INT,
     F(max_connections), 1, 1000000, "open connections accepted at once (default 1024)"},
    {"connection_timeout", "--connection-timeout", "SYNAPSEX_CONNECTION_TIMEOUT", OPT_INT,
     F(connection_timeout_s), 1, 86400, "seconds an idle connection is kept (default 60)"},
    {"shutdown_timeout", "--shutdown-timeout", "SYNAPSEX_SHUTDOWN_TIMEOUT", OPT_INT,
     F(shutdown_timeout_s), 0, 3600,
     "seconds to let in-flight requests finish on SIGTERM (default 10)"},
    {"ledger_sync", "--ledger-sync", "SYNAPSEX_LEDGER_SYNC", OPT_SYNC, F(ledger_sync), 0, 0,
     "usage ledger durability: full (fsync, survives power loss) or normal (survives a "
     "process crash; default full)"},
    {"adapter_memory", "--adapter-memory", "SYNAPSEX_ADAPTER_MEMORY", OPT_SIZE,
     F(adapter_memory), 1L << 20, 1L << 40,
     "memory for loaded LoRA adapters, e.g. 2GiB (default 1GiB; least recently used go "
     "first)"},
    {"adapter_preload", "--adapter-preload", "SYNAPSEX_ADAPTER_PRELOAD", OPT_INT,
     F(adapter_preload), 0, 100000,
     "most used active adapters loaded at start (default 16; 0: none)"},
    {"model", "--model", "SYNAPSEX_MODELS", OPT_PAIRS, F(models), 0, 0,
     "NAME=FILE.gguf, a local model (repeatable)"},
    {"upstream", "--upstream", "SYNAPSEX_UPSTREAMS", OPT_PAIRS, F(upstreams), 0, 0,
     "NAME=URL, an OpenAI-compatible upstream (repeatable)"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* One event loop per CPU the process may run on, from 2 (a loop held up
 * by a slow handler stalls only its share) to 16 (each keeps its own idle
 * upstream connections). On the 2-CPU bench VM, 2 loops served 4 % more
 * requests a second at concurrency 64 than 4 did, and added 8 us less at
 * concurrency 1 (bench/gateway). */
int sx_config_default_http_threads(void)
{
    cpu_set_t set;
    int n = 4;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    return n < 2 ? 2 : n > 16 ? 16 : n;
}

struct sx_config *sx_config_new(void)
{
    struct sx_config *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->listen_host = strdup("127.0.0.1");
    c->data_dir = strdup("./data");
    if (!c->listen_host || !c->data_dir) {
        sx_config_free(c);
        return NULL;
    }
    c->listen_port = 8080;
    c->max_body_bytes = 1u << 20;
    c->http_threads = sx_config_default_http_threads();
    c->log_level = SX_LOG_INFO;
    c->max_connections = 1024;
    c->connection_timeout_s = 60;
    c->shutdown_timeout_s = 10;
    c->adapter_memory = (size_t)1 << 30;
    c->adapter_preload = 16;
    return c;
}

static void free_pairs(struct sx_config_pair *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].name);
        free(p[i].value);
    }
    free(p);
}

void sx_config_free(struct sx_config *c)
{
    if (!c)
        return;
    free(c->listen_host);
    free(c->data_dir);
    free(c->store_url);
    free(c->redis_url);
    free(c->tls_cert);
    free(c->tls_key);
    free_pairs(c->models, c->n_models);
    free_pairs(c->upstreams, c->n_upstreams);
    free(c);
}

static const struct opt *find_key(const char *key)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    return NULL;
}

/* The list fields sit next to their counts: models/n_models and
 * upstreams/n_upstreams. */
static void pair_list(struct sx_config *c, const struct opt *o,
                      struct sx_config_pair ***list, size_t **n)
{
    if (o->offset == F(models)) {
        *list = &c->models;
        *n = &c->n_models;
    } else {
        *list = &c->upstreams;
        *n = &c->n_upstreams;
    }
}

static void clear_pairs(struct sx_config *c, const struct opt *o)
{
    struct sx_config_pair **list;
    size_t *n;

    pair_list(c, o, &list, &n);
    free_pairs(*list, *n);
    *list = NULL;
    *n = 0;
}

static int parse_long(const char *s, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* "1048576", "512K", "512KiB", "1M", "1MiB", "1G", "1GiB" (binary units). */
static int parse_size(const char *s, long *out)
{
    char *end;
    unsigned long long v;
    int shift = 0;

    errno = 0;
    if (!isdigit((unsigned char)s[0]))
        return -1;
    v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift) {
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
            end += strlen(end);
    }
    if (*end != '\0' || v > (unsigned long long)(LONG_MAX >> shift))
        return -1;
    *out = (long)(v << shift);
    return 0;
}

static int set_listen(struct sx_config *c, const char *v, char *err, size_t errlen)
{
    const char *colon, *host = v;
    size_t hostlen;
    long port;
    char *h;

    /* "[v6addr]:port" or "host:port"; the port is after the last colon. */
    colon = strrchr(v, ':');
    if (!colon)
        goto bad;
    hostlen = (size_t)(colon - v);
    if (v[0] == '[') {
        if (hostlen < 3 || v[hostlen - 1] != ']')
            goto bad;
        host = v + 1;
        hostlen -= 2;
    } else if (memchr(v, ':', hostlen)) {
        goto bad; /* a bare IPv6 address needs brackets */
    }
    if (hostlen == 0 || parse_long(colon + 1, &port) || port < 0 || port > 65535)
        goto bad;
    h = strndup(host, hostlen);
    if (!h)
        return SX_ENOMEM;
    free(c->listen_host);
    c->listen_host = h;
    c->listen_port = (int)port;
    return SX_OK;

bad:
    snprintf(err, errlen,
             "listen: '%s' is not HOST:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:80, [::1]:8080)",
             v);
    return SX_EINVAL;
}

static char *trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int add_pair(struct sx_config *c, const struct opt *o, const char *v, char *err,
                    size_t errlen)
{
    struct sx_config_pair **list, *grown;
    size_t *n;
    const char *eq = strchr(v, '=');

    if (!eq || eq == v || eq[1] == '\0') {
        snprintf(err, errlen, "%s: '%s' is not NAME=%s", o->key, v,
                 o->offset == F(models) ? "FILE.gguf" : "URL");
        return SX_EINVAL;
    }
    pair_list(c, o, &list, &n);
    grown = realloc(*list, (*n + 1) * sizeof(**list));
    if (!grown)
        return SX_ENOMEM;
    *list = grown;
    /* "qwen = /m/q.gguf" and "qwen=/m/q.gguf" mean the same. */
    grown[*n].name = strndup(v, (size_t)(eq - v));
    grown[*n].value = strdup(eq + 1);
    if (grown[*n].name && grown[*n].value) {
        char *name = trim(grown[*n].name), *value = trim(grown[*n].value);

        memmove(grown[*n].name, name, strlen(name) + 1);
        memmove(grown[*n].value, value, strlen(value) + 1);
        if (!*name || !*value) {
            free(grown[*n].name);
            free(grown[*n].value);
            snprintf(err, errlen, "%s: '%s' is not NAME=%s", o->key, v,
                     o->offset == F(models) ? "FILE.gguf" : "URL");
            return SX_EINVAL;
        }
    }
    if (!grown[*n].name || !grown[*n].value) {
        free(grown[*n].name);
        free(grown[*n].value);
        return SX_ENOMEM;
    }
    (*n)++;
    return SX_OK;
}

static int set_opt(struct sx_config *c, const struct opt *o, const char *v, char *err,
                   size_t errlen)
{
    char *field = (char *)c + o->offset;
    long n;
    char *s;

    switch (o->kind) {
    case OPT_STR:
        if (v[0] == '\0') {
            snprintf(err, errlen, "%s: value is empty", o->key);
            return SX_EINVAL;
        }
        if (!(s = strdup(v)))
            return SX_ENOMEM;
        free(*(char **)field);
        *(char **)field = s;
        return SX_OK;
    case OPT_INT:
        if (parse_long(v, &n) || n < o->min || n > o->max) {
            snprintf(err, errlen, "%s: '%s' is not an integer from %ld to %ld", o->key, v,
                     o->min, o->max);
            return SX_EINVAL;
        }
        *(int *)field = (int)n;
        return SX_OK;
    case OPT_SIZE:
        if (parse_size(v, &n) || n < o->min || n > o->max) {
            snprintf(err, errlen,
                     "%s: '%s' is not a size from 1KiB to 1GiB (e.g. 1048576, 512KiB, 4MiB)",
                     o->key, v);
            return SX_EINVAL;
        }
        *(size_t *)field = (size_t)n;
        return SX_OK;
    case OPT_LISTEN:
        return set_listen(c, v, err, errlen);
    case OPT_LEVEL:
        n = sx_log_level_parse(v);
        if (n < 0) {
            snprintf(err, errlen, "%s: '%s' is not one of debug, info, warn, error, fatal",
                     o->key, v);
            return SX_EINVAL;
        }
        *(int *)field = (int)n;
        return SX_OK;
    case OPT_PAIRS:
        return add_pair(c, o, v, err, errlen);
    case OPT_SYNC:
        if (strcmp(v, "full") == 0) {
            *(int *)field = SX_LEDGER_SYNC_FULL;
        } else if (strcmp(v, "normal") == 0) {
            *(int *)field = SX_LEDGER_SYNC_NORMAL;
        } else {
            snprintf(err, errlen, "%s: '%s' is not full or normal", o->key, v);
            return SX_EINVAL;
        }
        return SX_OK;
    }
    return SX_EINVAL;
}

int sx_config_set(struct sx_config *c, const char *key, const char *value, char *err,
                  size_t errlen)
{
    const struct opt *o = find_key(key);

    if (!o) {
        snprintf(err, errlen, "unknown configuration key '%s'", key);
        return SX_EINVAL;
    }
    return set_opt(c, o, value, err, errlen);
}

/* Within one layer, the first value of a repeatable option replaces what
 * lower layers set; later values of the same layer append. */
static int set_in_layer(struct sx_config *c, const struct opt *o, const char *v,
                        unsigned *cleared, char *err, size_t errlen)
{
    unsigned bit = 1u << (o - opts);

    if (o->kind == OPT_PAIRS && !(*cleared & bit)) {
        clear_pairs(c, o);
        *cleared |= bit;
    }
    return set_opt(c, o, v, err, errlen);
}

int sx_config_apply_file(struct sx_config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[4096], msg[512];
    unsigned cleared = 0;
    int lineno = 0, rc = SX_OK;

    if (!f) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        return SX_EIO;
    }
    while (fgets(line, sizeof(line), f)) {
        char *key, *value, *eq;
        const struct opt *o;
        size_t vlen;

        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line longer than %zu bytes", path, lineno,
                     sizeof(line) - 2);
            rc = SX_EINVAL;
            break;
        }
        key = trim(line);
        if (*key == '\0' || *key == '#')
            continue;
        eq = strchr(key, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            rc = SX_EINVAL;
            break;
        }
        *eq = '\0';
        key = trim(key);
        value = trim(eq + 1);
        vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        o = find_key(key);
        if (!o) {
            snprintf(err, errlen, "%s:%d: unknown key '%s'", path, lineno, key);
            rc = SX_EINVAL;
            break;
        }
        rc = set_in_layer(c, o, value, &cleared, msg, sizeof(msg));
        if (rc != SX_OK) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno,
                     rc == SX_ENOMEM ? "out of memory" : msg);
            break;
        }
    }
    if (rc == SX_OK && ferror(f)) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        rc = SX_EIO;
    }
    fclose(f);
    return rc;
}

int sx_config_apply_env(struct sx_config *c, char *err, size_t errlen)
{
    char msg[512];
    unsigned cleared = 0;

    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        const char *v = getenv(o->env);
        int rc;

        if (!v || !*v)
            continue;
        if (o->kind != OPT_PAIRS) {
            rc = set_in_layer(c, o, v, &cleared, msg, sizeof(msg));
        } else {
            /* Repeatable options come comma-separated. */
            char *copy = strdup(v), *save = NULL, *item;

            if (!copy)
                return SX_ENOMEM;
            rc = SX_OK;
            for (item = strtok_r(copy, ",", &save); item && rc == SX_OK;
                 item = strtok_r(NULL, ",", &save))
                rc = set_in_layer(c, o, trim(item), &cleared, msg, sizeof(msg));
            free(copy);
        }
        if (rc != SX_OK) {
            snprintf(err, errlen, "environment %s: %s", o->env,
                     rc == SX_ENOMEM ? "out of memory" : msg);
            return rc;
        }
    }
    return SX_OK;
}

int sx_config_apply_args(struct sx_config *c, int argc, char **argv, char *err,
                         size_t errlen)
{
    char msg[512];
    unsigned cleared = 0;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i], *value = NULL, *eq;
        const struct opt *o = NULL;
        size_t flaglen;
        int rc;

        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (options start with --)", arg);
            return SX_EINVAL;
        }
        eq = strchr(arg, '=');
        flaglen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (flaglen == 8 && strncmp(arg, "--config", 8) == 0) {
            if (!eq && ++i >= argc)
                goto missing;
            continue;
        }
        for (size_t k = 0; k < N_OPTS; k++)
            if (strlen(opts[k].flag) == flaglen && strncmp(opts[k].flag, arg, flaglen) == 0)
                o = &opts[k];
        if (!o) {
            snprintf(err, errlen, "unknown option '%.*s' (see --help)", (int)flaglen, arg);
            return SX_EINVAL;
        }
        if (eq)
            value = eq + 1;
        else if (i + 1 < argc)
            value = argv[++i];
        else
            goto missing;
        rc = set_in_layer(c, o, value, &cleared, msg, sizeof(msg));
        if (rc != SX_OK) {
            snprintf(err, errlen, "%s: %s", o->flag, rc == SX_ENOMEM ? "out of memory" : msg);
            return rc;
        }
        continue;

    missing:
        snprintf(err, errlen, "option '%s' needs a value", arg);
        return SX_EINVAL;
    }
    return SX_OK;
}

/* The file named by --config FILE or --config=FILE, if any. */
static const char *config_flag(int argc, char **argv)
{
    const char *path = NULL;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
    }
    return path;
}

struct sx_config *sx_config_load(int argc, char **argv, char *err, size_t errlen)
{
    struct sx_config *c = sx_config_new();
    const char *file;

    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    /* 1. File: the flag wins over the environment variable. */
    file = config_flag(argc, argv);
    if (!file && getenv("SYNAPSEX_CONFIG") && *getenv("SYNAPSEX_CONFIG"))
        file = getenv("SYNAPSEX_CONFIG");
    if (file && sx_config_apply_file(c, file, err, errlen) != SX_OK)
        goto fail;

    /* 2. Environment, 3. flags. */
    if (sx_config_apply_env(c, err, errlen) != SX_OK ||
        sx_config_apply_args(c, argc, argv, err, errlen) != SX_OK)
        goto fail;

    /* 4. Checks across options. */
    if (!c->tls_cert != !c->tls_key) {
        snprintf(err, errlen, "TLS needs both tls_cert and tls_key (only %s is set)",
                 c->tls_cert ? "tls_cert" : "tls_key");
        goto fail;
    }
    return c;

fail:
    sx_config_free(c);
    return NULL;
}

void sx_config_print_flags(FILE *out)
{
    fprintf(out, "  %-24s %s\n", "--config FILE",
             "config file of key = value lines (or SYNAPSEX_CONFIG)");
    for (size_t i = 0; i < N_OPTS; i++) {
        char flag[64];

        snprintf(flag, sizeof(flag), "%s %s", opts[i].flag,
                 opts[i].kind == OPT_PAIRS  ? "NAME=VALUE"
                 : opts[i].kind == OPT_INT  ? "N"
                 : opts[i].kind == OPT_SIZE ? "SIZE"
                                            : "VALUE");
        fprintf(out, "  %-24s %s\n", flag, opts[i].help);
    }
}
