/* Error codes shared by every module: 0 or a negative SX_E* code. The codes
 * themselves live in the engine's public header (the engine is built as its
 * own library and cannot include base/); this header adds their names. */
#ifndef SX_BASE_ERR_H
#define SX_BASE_ERR_H

#include "engine/errors.h"

/* A short English name for code ("not found"); never NULL. */
const char *sx_strerror(int code);

#endif
