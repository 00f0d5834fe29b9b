/* libFuzzer target for the request body parser, sx_json_parse_object(), the
 * same function sx_http_json_object() runs on every JSON body. Checks that
 * any input yields either an object or a NUL-terminated message, never a
 * crash, and that accepted objects survive a dump and re-parse. */
#include "base/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_t *o = sx_json_parse_object((const char *)data, size, 0, err, sizeof(err));

    if (!o) {
        if (strlen(err) == 0 || strlen(err) >= sizeof(err))
            abort();
        return 0;
    }
    if (!json_is_object(o))
        abort();

    /* What we accept, we can write back out and read again. */
    char *text = json_dumps(o, JSON_COMPACT);
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
