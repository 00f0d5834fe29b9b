/* Implementation of the logger declared in log.h: one write(2) per line so
 * lines from different threads never interleave. */
#include "base/log.h"
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int sx_log_min_level = SX_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "FATAL"};

int sx_log_level_parse(const char *name)
{
    static const char *const lower[] = {"debug", "info", "warn", "error", "fatal"};

    for (int i = 0; i < 5; i++)
        if (strcasecmp(name, lower[i]) == 0)
            return i;
    return -1;
}

void sx_log_write(enum sx_log_level level, const char *module, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n, m;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s [%s] ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level], module);
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);

    /* A truncated line still ends with a newline. */
    n += m < 0 ? 0 : (m >= (int)sizeof(line) - n - 1 ? (int)sizeof(line) - n - 2 : m);
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to report a failing stderr. */
    }
}

const char *sx_strerror(int code)
{
    switch (code) {
    case SX_OK: return "ok";
    case SX_ENOMEM: return "out of memory";
    case SX_EINVAL: return "invalid argument";
    case SX_EIO: return "I/O error";
    case SX_ENOTFOUND: return "not found";
    case SX_EEXIST: return "already exists";
    case SX_EPERM: return "permission denied";
    case SX_EAUTH: return "authentication failed";
    case SX_ELIMIT: return "limit reached";
    case SX_EBUSY: return "busy";
    case SX_EUNSUPPORTED: return "unsupported";
    case SX_ETOOBIG: return "too large";
    case SX_ESTORE: return "store error";
    case SX_ETIMEOUT: return "timed out";
    case SX_EUPSTREAM: return "upstream error";
    case SX_ECANCELED: return "canceled";
    default: return "unknown error";
    }
}
