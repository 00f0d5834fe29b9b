/* libFuzzer target for the JSON code of base/json: the request body
 * parser, sx_json_parse_object() (the function sx_http_json_object() runs
 * on every JSON body), the in-place reader and the writer. Checks that any
 * input yields either an object or a NUL-terminated message, never a
 * crash; that the reader accepts exactly what jansson accepts; and that
 * accepted objects, written by sx_json_out_value() exactly as json_dumps()
 * writes them, parse back equal. */
#include "base/json.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Nesting deeper than this is refused by the reader and jansson at
 * different depths (512, 2048): such inputs are not compared. */
static bool shallow(const uint8_t *d, size_t n)
{
    int depth = 0;

    for (size_t i = 0; i < n; i++)
        if ((d[i] == '[' || d[i] == '{') && ++depth > 500)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_t *o, *any;
    struct sx_json_rd r;
    struct sx_json_out out = {0};
    char *mine;

    /* The reader against jansson, an object or array at the top, on texts
     * without NUL bytes (jansson takes "[0<NUL>]" for "[0]"; the reader
     * refuses it, as RFC 8259 does). */
    if (shallow(data, size) && !memchr(data, 0, size)) {
        const char *span;
        size_t n;
        bool ok;

        any = json_loadb((const char *)data, size, 0, NULL);
        sx_json_rd_init(&r, (const char *)data, size);
        ok = sx_json_rd_span(&r, &span, &n) && (span[0] == '{' || span[0] == '[') &&
             sx_json_rd_end(&r);
        if (ok != (any != NULL))
            abort();
        json_decref(any);
    }

    o = sx_json_parse_object((const char *)data, size, 0, err, sizeof(err));

    if (!o) {
        if (strlen(err) == 0 || strlen(err) >= sizeof(err))
            abort();
        return 0;
    }
    if (!json_is_object(o))
        abort();

    /* What we accept, we can write back out and read again. */
    char *text = json_dumps(o, JSON_COMPACT);
    sx_json_out_value(&out, o);
    mine = sx_json_out_take(&out, NULL);
    if (text && mine && strcmp(text, mine) != 0)
        abort();
    free(mine);
    if (text) {
        json_t *again = sx_json_parse_object(text, strlen(text), 0, err, sizeof(err));
        if (!again || !json_equal(o, again))
            abort();
        json_decref(again);
        free(text);
    }
    json_decref(o);
    return 0;
}
