/* Error messages of the engine. A fallible engine call takes a caller's
 * buffer (err, errlen) and, besides its negative SX_E* code, leaves one line
 * there saying what failed. These helpers write that line; internal to the
 * engine (not part of engine.h). */
#ifndef SX_ENGINE_ERRMSG_H
#define SX_ENGINE_ERRMSG_H

#include <stdarg.h>
#include <stddef.h>

/* Formats the message into err; does nothing when err is NULL or errlen 0.
 * A message longer than the buffer is cut, always NUL-terminated. */
void sx_errmsg_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* For operations of many steps where the first failure is the one to
 * report (loaders): when *first is 0, sets it to rc and formats the message
 * into err as sx_errmsg_set() does; otherwise leaves both alone. Returns
 * *first afterwards, so a caller can return it. */
int sx_errmsg_vfirst(int *first, char *err, size_t errlen, int rc,
                     const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

#endif
