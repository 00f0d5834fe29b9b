/* Server configuration: built-in defaults, then a config file, then
 * SYNAPSEX_* environment variables, then command-line flags, each layer
 * overriding the one before. docs/configuration.md lists every option with
 * its flag, environment variable, file key and default. */
#ifndef SX_BASE_CONFIG_H
#define SX_BASE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

/* One NAME=VALUE entry of a repeatable option (--model, --upstream). */
struct sx_config_pair {
    char *name;
    char *value;
};

struct sx_config {
    char *listen_host;        /* "127.0.0.1" */
    int listen_port;          /* 8080 */
    char *data_dir;           /* "./data" */
    char *store_url;          /* NULL = SQLite at <data_dir>/synapsex.db; "sqlite:PATH" or
                                 "postgres://..." */
    char *redis_url;          /* NULL */
    char *tls_cert, *tls_key; /* NULL = plain HTTP; both or neither */
    size_t max_body_bytes;    /* 1 MiB */
    int http_threads;         /* HTTP event loops, sx_config_default_http_threads() */
    int log_level;            /* SX_LOG_INFO */
    int max_connections;      /* open connections accepted at once, 1024 */
    int connection_timeout_s; /* idle connection timeout, 60 */
    int shutdown_timeout_s;   /* graceful shutdown wait for in-flight requests, 10 */
    int ledger_sync;          /* SX_LEDGER_SYNC_FULL (default) or SX_LEDGER_SYNC_NORMAL */
    size_t adapter_memory;    /* bytes of loaded LoRA adapters, 1 GiB */
    int adapter_preload;      /* most used active adapters loaded at start, 16 */
    struct sx_config_pair *models;    /* --model NAME=FILE.gguf, in order given */
    size_t n_models;
    struct sx_config_pair *upstreams; /* --upstream NAME=URL, in order given */
    size_t n_upstreams;
};

/* How the usage ledger's commits reach the disk (key ledger_sync):
 * FULL fsyncs every group commit (survives power loss); NORMAL leaves a
 * commit in the OS page cache (survives a crash or SIGKILL of synapsex,
 * not a power loss or kernel crash). docs/configuration.md explains. */
enum { SX_LEDGER_SYNC_FULL = 0, SX_LEDGER_SYNC_NORMAL = 1 };

/* A configuration holding the built-in defaults, or NULL when out of
 * memory. Free with sx_config_free(). */
struct sx_config *sx_config_new(void);
void sx_config_free(struct sx_config *c); /* accepts NULL */
/* The default http_threads: the CPUs this process may run on, 2 to 16. */
int sx_config_default_http_threads(void);

/* Sets one option by its file key ("listen", "data_dir", "model", ...) from
 * its text form. Repeatable keys append. Returns 0, or SX_EINVAL with a
 * message in err naming the key and what a valid value looks like
 * (unknown key, bad number, bad HOST:PORT, missing NAME=...). */
int sx_config_set(struct sx_config *c, const char *key, const char *value, char *err,
                  size_t errlen);

/* Applies a config file: one `key = value` per line; blank lines and lines
 * starting with '#' are ignored; a value may be wrapped in double quotes.
 * Repeatable keys given in the file replace the defaults' (empty) lists.
 * Returns 0, SX_EIO when the file cannot be read, SX_EINVAL on a bad line
 * ("FILE:LINE: ..." in err). */
int sx_config_apply_file(struct sx_config *c, const char *path, char *err, size_t errlen);

/* Applies the SYNAPSEX_<KEY> environment variables (SYNAPSEX_LISTEN,
 * SYNAPSEX_DATA_DIR, ...; the repeatable ones as SYNAPSEX_MODELS /
 * SYNAPSEX_UPSTREAMS, comma-separated). Unset or empty variables are
 * skipped. Returns 0 or SX_EINVAL. */
int sx_config_apply_env(struct sx_config *c, char *err, size_t errlen);

/* Applies command-line flags (argv[0..argc), no program name): "--flag
 * VALUE" or "--flag=VALUE". --config is accepted and skipped here (see
 * sx_config_load). A repeatable flag, once given, replaces the list that
 * the file or environment set. Unknown flags, stray arguments and missing
 * values are SX_EINVAL with a message. */
int sx_config_apply_args(struct sx_config *c, int argc, char **argv, char *err,
                         size_t errlen);

/* The whole load: defaults < file (--config, else SYNAPSEX_CONFIG, else
 * none) < environment < flags. Returns a new configuration, or NULL with
 * a message in err. */
struct sx_config *sx_config_load(int argc, char **argv, char *err, size_t errlen);

/* Prints the flags that sx_config_apply_args() accepts, one per line. */
void sx_config_print_flags(FILE *out);

#endif
