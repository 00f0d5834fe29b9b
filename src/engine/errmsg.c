/* Error messages of the engine: writing the one-line message a fallible
 * engine call leaves in its caller's buffer (see errmsg.h). */
#include "engine/errmsg.h"

#include <stdio.h>

void sx_errmsg_set(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int sx_errmsg_vfirst(int *first, char *err, size_t errlen, int rc,
                     const char *fmt, va_list ap)
{
    if (*first)
        return *first;
    *first = rc;
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    return rc;
}
