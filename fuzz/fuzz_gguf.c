/* libFuzzer target for the GGUF reader: any byte string must either open
 * (and then every accessor must stay inside the buffer) or fail with a
 * message; never crash, hang or allocate without bound. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keeps the reads below from being optimised away. */
volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    sx_gguf *g = sx_gguf_open_buffer(data, size, err, sizeof(err));


    if (!g)
        return 0;

    /* Touch every metadata value and tensor byte range the reader hands out. */
    for (int i = 0; i < sx_gguf_n_kv(g); i++) {
        const char *key = sx_gguf_kv_key(g, i);
        uint32_t u;
        int64_t s;
        float f;
        bool b;
        int et;
        uint64_t n;
        size_t len;
        const char *str;

        sx_gguf_get_u32(g, key, &u);
        sx_gguf_get_i64(g, key, &s);
        sx_gguf_get_f32(g, key, &f);
        sx_gguf_get_bool(g, key, &b);
        str = sx_gguf_get_str(g, key, &len);
        if (str && len)
            sink += (uint8_t)str[len - 1];
        if (sx_gguf_get_arr(g, key, &et, &n) == 0 && et == SX_GGUF_STR)
            for (uint64_t j = 0; j < n && j < 64; j++) {
                str = sx_gguf_arr_str(g, key, j, &len);
                if (str && len)
                    sink += (uint8_t)str[len - 1];
            }
    }
    for (int i = 0; i < sx_gguf_n_tensors(g); i++) {
        const sx_gguf_tensor *t = sx_gguf_tensor_at(g, i);

        if (t->nbytes)
            sink += ((const uint8_t *)t->data)[t->nbytes - 1];
        if (sx_gguf_find_tensor(g, t->name) != t)
            __builtin_trap();
    }
    sx_gguf_close(g);
    return 0;
}
