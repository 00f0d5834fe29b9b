/* The one logger. Five levels; the level check sits inside the macro so a
 * disabled line costs one comparison. Lines go to stderr as
 *   2026-12-03T18:54:22.123Z WARN  [module] message
 * Never pass a key, secret, prompt or document text to these functions: log
 * the operation, the object's id and the error instead. */
#ifndef SX_BASE_LOG_H
#define SX_BASE_LOG_H

enum sx_log_level {
    SX_LOG_DEBUG = 0,
    SX_LOG_INFO = 1,
    SX_LOG_WARN = 2,
    SX_LOG_ERROR = 3,
    SX_LOG_FATAL = 4,
};

extern int sx_log_min_level;

/* Parses "debug", "info", "warn", "error" or "fatal"; returns -1 if unknown. */
int sx_log_level_parse(const char *name);

void sx_log_write(enum sx_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sx_log(level, module, ...)                                             \
    do {                                                                       \
        if ((int)(level) >= sx_log_min_level)                                  \
            sx_log_write((level), (module), __VA_ARGS__);                      \
    } while (0)

#define SX_DEBUG(mod, ...) sx_log(SX_LOG_DEBUG, mod, __VA_ARGS__)
#define SX_INFO(mod, ...) sx_log(SX_LOG_INFO, mod, __VA_ARGS__)
#define SX_WARN(mod, ...) sx_log(SX_LOG_WARN, mod, __VA_ARGS__)
#define SX_ERROR(mod, ...) sx_log(SX_LOG_ERROR, mod, __VA_ARGS__)

#endif
