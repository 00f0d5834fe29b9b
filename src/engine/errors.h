/* Error codes of synapsex. They are defined here, in the engine library,
 * because the engine may include nothing outside src/engine/; src/base/err.h
 * re-exports them to the rest of the server. Functions return 0 or one of
 * these negative codes. */
#ifndef SX_ENGINE_ERRORS_H
#define SX_ENGINE_ERRORS_H

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

#endif
