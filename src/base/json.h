/* JSON helpers on top of jansson. sx_json_parse_object() is the one body
 * parser of the gateway: sx_http_json_object() and the fuzz target call it,
 * so every request body meets the same rules (one object, UTF-8, no
 * duplicate keys, bounded nesting). */
#ifndef SX_BASE_JSON_H
#define SX_BASE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define SX_JSON_MAX_DEPTH 64 /* default nesting limit for request bodies */

/* Parses buf[0..len) as exactly one JSON object. Rejected, with a message
 * in err (what was wrong and where, as "line L, column C"):
 *   - an empty or whitespace-only body,
 *   - invalid JSON or invalid UTF-8, NUL characters in strings,
 *   - duplicate keys in any object,
 *   - nesting deeper than max_depth arrays/objects (0 = SX_JSON_MAX_DEPTH),
 *   - a top level that is not an object, or trailing data after it.
 * Returns a new reference the caller decrefs, or NULL (err is filled, and
 * is always NUL-terminated when errlen > 0). */
json_t *sx_json_parse_object(const char *buf, size_t len, int max_depth, char *err,
                             size_t errlen);

/* Length (1 to 4) of the valid UTF-8 character at s[0..len), or 0 when s
 * starts with a NUL, an invalid or overlong sequence, a surrogate or a
 * truncated character (len 0 included). */
size_t sx_utf8_char_len(const char *s, size_t len);
/* Whether s[0..len) is valid UTF-8 without NUL bytes. */
bool sx_utf8_valid(const char *s, size_t len);
/* Replaces each byte of the NUL-terminated s that does not begin a valid
 * UTF-8 character with '?', in place: the result is valid UTF-8 of the
 * same length (for messages that echo a caller's bytes). */
void sx_utf8_scrub(char *s);

/* Name of a JSON value's type as the API reports it: "object", "array",
 * "string", "integer", "number", "boolean" or "null". */
const char *sx_json_type_name(const json_t *v);

/* Whether name is one of the NULL-terminated list names. */
bool sx_json_name_in(const char *name, const char *const *names);

/* The first key of obj (in document order) that is not in the
 * NULL-terminated list allowed, or NULL when every key is allowed. The
 * pointer stays valid while obj does. */
const char *sx_json_unknown_key(const json_t *obj, const char *const *allowed);

/* Typed lookups in an object. Each returns 1 and stores the value when key
 * is present with that type, 0 when absent (or JSON null), -1 when present
 * with another type. out is left untouched unless 1 is returned. */
int sx_json_get_str(const json_t *obj, const char *key, const char **out);
int sx_json_get_int(const json_t *obj, const char *key, long long *out);
int sx_json_get_num(const json_t *obj, const char *key, double *out);
int sx_json_get_bool(const json_t *obj, const char *key, int *out);

/* A JSON text written by hand, for the few hot replies where building a
 * jansson tree only to serialise it costs more than the rest of the reply
 * (a completion body). Append functions never fail visibly: on a failed
 * allocation the buffer is marked and sx_json_out_take() returns NULL. */
struct sx_json_out {
    char *buf;
    size_t len, cap;
    bool failed;
};

/* Appends raw JSON text (the caller's, already valid). */
void sx_json_out_raw(struct sx_json_out *o, const char *s, size_t n);
/* Appends s[0..n) (UTF-8) as a JSON string literal, quotes included:
 * '"', '\\' and control characters escaped (as jansson does), the rest
 * as it is. */
void sx_json_out_str(struct sx_json_out *o, const char *s, size_t n);
/* Appends an integer. */
void sx_json_out_int(struct sx_json_out *o, long long v);
/* Longest decimal text of a long long, NUL included. */
#define SX_JSON_INT_MAX 21
/* Writes v in decimal ("%lld") and a NUL to out, which holds at least
 * SX_JSON_INT_MAX bytes; returns the length. printf's parsing is most of
 * the cost of a small number, and requests write several. */
size_t sx_json_format_int(char *out, long long v);
/* Appends v serialised compactly, byte for byte as json_dumps(v,
 * JSON_COMPACT | JSON_ENCODE_ANY) would (keys in insertion order, reals
 * with 17 digits), for the parts that are trees already. */
void sx_json_out_value(struct sx_json_out *o, const json_t *v);
/* The NUL-terminated text (the caller frees it) and its length, or NULL
 * when an allocation failed; the writer is empty afterwards. */
char *sx_json_out_take(struct sx_json_out *o, size_t *len);

/* ---- reading in place ----------------------------------------------------
 * A JSON text read without building a tree, for hot bodies whose fields are
 * known ahead (an upstream's completion): the caller walks it, reading the
 * values it wants and skipping the rest, and the reader checks what it
 * passes as strictly as jansson would (syntax, UTF-8, no NUL in strings,
 * integers within 64 bits). A container opened must be read to its end
 * (or skipped whole). Any error marks the reader bad, and every call after
 * it fails. */
struct sx_json_rd {
    const char *p, *end;
    bool first; /* no member or element read yet in the open container */
    bool bad;
};

void sx_json_rd_init(struct sx_json_rd *r, const char *s, size_t n);
/* Enters the next value if it is an object / array (false otherwise,
 * nothing consumed). */
bool sx_json_rd_object(struct sx_json_rd *r);
bool sx_json_rd_array(struct sx_json_rd *r);
/* The next member of the object being read, its key decoded into key
 * (cut to cap - 1 bytes, so a longer key equals no shorter name); the
 * value is next. false after the last (the object is closed) or on an
 * error. */
bool sx_json_rd_member(struct sx_json_rd *r, char *key, size_t cap);
/* Whether the array being read has another element (it is next). */
bool sx_json_rd_element(struct sx_json_rd *r);
/* Value readers: 1 read, 0 the value is of another type and was skipped,
 * -1 error. sx_json_rd_str cuts a string to cap - 1 bytes (after a whole
 * character) and NUL-terminates it. */
int sx_json_rd_str(struct sx_json_rd *r, char *buf, size_t cap, size_t *len);
int sx_json_rd_strdup(struct sx_json_rd *r, char **out, size_t *len); /* malloc'd */
int sx_json_rd_int(struct sx_json_rd *r, long long *v);
/* Skips the next value; with span, gives its text too (to hand a part to
 * jansson). */
bool sx_json_rd_skip(struct sx_json_rd *r);
bool sx_json_rd_span(struct sx_json_rd *r, const char **s, size_t *n);
/* Whether the whole text was read without error. */
bool sx_json_rd_end(struct sx_json_rd *r);

#endif
