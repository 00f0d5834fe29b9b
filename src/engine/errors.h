/* Error codes of the engine library. The engine may include nothing outside
 * src/engine/, yet it speaks the same codes as the rest of synapsex, so this
 * header repeats src/base/err.h under the same include guard: whichever of the
 * two a file includes first wins, and the other is skipped. Keep the two in
 * step. */
#ifndef SX_BASE_ERR_H
#define SX_BASE_ERR_H

enum {
    SX_OK = 0,
    SX_ENOMEM = -1,     /* allocation failed */
    SX_EINVAL = -2,     /* bad argument or malformed input */
    SX_EIO = -3,        /* read/write/syscall failure; errno was logged */
    SX_ENOTFOUND = -4,  /* no such object */
    SX_EEXIST = -5,     /* object already exists (unique constraint) */
    SX_EPERM = -6,      /* caller may not do this */
    SX_EAUTH = -7,      /* missing or invalid credentials */
    SX_ELIMIT = -8,     /* a rate limit or quota refused the work */
    SX_EBUSY = -9,      /* temporarily unable; retry later */
    SX_EUNSUPPORTED = -10, /* valid input naming something we do not do */
    SX_ETOOBIG = -11,   /* input larger than a configured limit */
    SX_ESTORE = -12,    /* the store failed (SQL error, corruption) */
    SX_ETIMEOUT = -13,  /* an operation ran past its deadline */
    SX_EUPSTREAM = -14, /* an upstream server failed or answered badly */
    SX_ECANCELED = -15, /* the work was cancelled (client went away) */
};

/* Defined by src/base (not by the engine library, which never calls it). */
const char *sx_strerror(int code);

#endif
