/* GGUF v3 writer. Metadata values are serialised as they are added; tensor
 * infos are kept until save, which lays the data section out at the file's
 * alignment and streams each tensor's bytes from a callback. Used by
 * `synapsex model synth` and by the tests to build (also hostile) files. */
#include "engine/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WRITER_ALIGNMENT 32

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf;

struct sx_gguf_writer {
    wbuf kv;                  /* serialised key/value records */
    uint64_t n_kv;
    char **keys;
    sx_gguf_tensor *tensors;  /* names owned here */
    int n_tensors, cap_tensors;
    int oom;
};

static int wb_put(wbuf *b, const void *src, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *p;

        while (cap - b->len < n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (!p)
            return SX_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int wb_u32(wbuf *b, uint32_t v) { return wb_put(b, &v, 4); }
static int wb_u64(wbuf *b, uint64_t v) { return wb_put(b, &v, 8); }

static int wb_str(wbuf *b, const char *s, size_t n)
{
    return wb_u64(b, n) || wb_put(b, s, n) ? SX_ENOMEM : 0;
}

sx_gguf_writer *sx_gguf_writer_new(void)
{
    return calloc(1, sizeof(sx_gguf_writer));
}

void sx_gguf_writer_free(sx_gguf_writer *w)
{
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    for (int i = 0; i < w->n_tensors; i++)
        free((char *)w->tensors[i].name);
    free(w->keys);
    free(w->tensors);
    free(w->kv.p);
    free(w);
}

/* Starts a record: checks the key is new, writes key and type tag. */
static int kv_begin(sx_gguf_writer *w, const char *key, int type)
{
    char **keys;

    for (uint64_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return SX_EEXIST;
    keys = realloc(w->keys, (w->n_kv + 1) * sizeof(*keys));
    if (!keys)
        return SX_ENOMEM;
    w->keys = keys;
    if (!(keys[w->n_kv] = strdup(key)))
        return SX_ENOMEM;
    w->n_kv++;
    if (wb_str(&w->kv, key, strlen(key)) || wb_u32(&w->kv, (uint32_t)type))
        return SX_ENOMEM;
    return 0;
}

int sx_gguf_writer_u32(sx_gguf_writer *w, const char *key, uint32_t v)
{
    int rc = kv_begin(w, key, SX_GGUF_U32);

    return rc ? rc : wb_u32(&w->kv, v);
}

int sx_gguf_writer_f32(sx_gguf_writer *w, const char *key, float v)
{
    int rc = kv_begin(w, key, SX_GGUF_F32);

    return rc ? rc : wb_put(&w->kv, &v, 4);
}

int sx_gguf_writer_bool(sx_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v;
    int rc = kv_begin(w, key, SX_GGUF_BOOL);

    return rc ? rc : wb_put(&w->kv, &b, 1);
}

int sx_gguf_writer_str(sx_gguf_writer *w, const char *key, const char *s,
                       size_t len)
{
    int rc = kv_begin(w, key, SX_GGUF_STR);

    return rc ? rc : wb_str(&w->kv, s, len);
}

int sx_gguf_writer_arr(sx_gguf_writer *w, const char *key, int elem_type,
                       const void *data, uint64_t n)
{
    static const uint8_t size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    int rc;

    if (elem_type < 0 || elem_type > SX_GGUF_F64 || !size[elem_type])
        return SX_EINVAL;
    if ((rc = kv_begin(w, key, SX_GGUF_ARR)))
        return rc;
    if (wb_u32(&w->kv, (uint32_t)elem_type) || wb_u64(&w->kv, n) ||
        wb_put(&w->kv, data, (size_t)n * size[elem_type]))
        return SX_ENOMEM;
    return 0;
}

int sx_gguf_writer_raw(sx_gguf_writer *w, const char *key, int type,
                       const void *raw, size_t size)
{
    int rc = kv_begin(w, key, type);

    return rc ? rc : wb_put(&w->kv, raw, size);
}

int sx_gguf_writer_tensor(sx_gguf_writer *w, const char *name, int type,
                          int n_dims, const int64_t *ne)
{
    sx_gguf_tensor *t;
    int bs = sx_ggml_block_size(type);
    uint64_t nel = 1;

    if (!bs || n_dims < 1 || n_dims > SX_GGUF_MAX_DIMS || ne[0] % bs)
        return SX_EINVAL;
    for (int i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return SX_EEXIST;
    if (w->n_tensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        sx_gguf_tensor *p = realloc(w->tensors, (size_t)cap * sizeof(*p));

        if (!p)
            return SX_ENOMEM;
        w->tensors = p;
        w->cap_tensors = cap;
    }
    t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof(*t));
    if (!(t->name = strdup(name)))
        return SX_ENOMEM;
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < SX_GGUF_MAX_DIMS; d++) {
        t->ne[d] = d < n_dims ? ne[d] : 1;
        nel *= (uint64_t)t->ne[d];
    }
    t->nbytes = nel / (uint64_t)bs * (uint64_t)sx_ggml_type_size(type);
    w->n_tensors++;
    return 0;
}

/* Writes the whole file to f. */
static int write_all(sx_gguf_writer *w, FILE *f, sx_gguf_fill_fn fill,
                     void *ctx)
{
    wbuf h = {0};
    uint64_t off = 0;
    static const uint8_t zeros[WRITER_ALIGNMENT];
    size_t pad;
    int rc = SX_ENOMEM;

    /* Header, metadata, tensor infos with offsets laid out in order. */
    if (wb_put(&h, "GGUF", 4) || wb_u32(&h, 3) ||
        wb_u64(&h, (uint64_t)w->n_tensors) || wb_u64(&h, w->n_kv) ||
        wb_put(&h, w->kv.p ? w->kv.p : zeros, w->kv.len))
        goto out;
    for (int i = 0; i < w->n_tensors; i++) {
        sx_gguf_tensor *t = &w->tensors[i];

        t->offset = off;
        if (wb_str(&h, t->name, strlen(t->name)) ||
            wb_u32(&h, (uint32_t)t->n_dims))
            goto out;
        for (int d = 0; d < t->n_dims; d++)
            if (wb_u64(&h, (uint64_t)t->ne[d]))
                goto out;
        if (wb_u32(&h, (uint32_t)t->type) || wb_u64(&h, off))
            goto out;
        off += (t->nbytes + WRITER_ALIGNMENT - 1) / WRITER_ALIGNMENT *
               WRITER_ALIGNMENT;
    }
    pad = (WRITER_ALIGNMENT - h.len % WRITER_ALIGNMENT) % WRITER_ALIGNMENT;
    if (wb_put(&h, zeros, pad))
        goto out;
    rc = SX_EIO;
    if (fwrite(h.p, 1, h.len, f) != h.len)
        goto out;

    /* Tensor data, each padded to the alignment. */
    for (int i = 0; i < w->n_tensors; i++) {
        sx_gguf_tensor *t = &w->tensors[i];
        void *buf = calloc(1, t->nbytes ? (size_t)t->nbytes : 1);

        if (!buf) {
            rc = SX_ENOMEM;
            goto out;
        }
        rc = fill ? fill(ctx, i, t, buf) : 0;
        if (rc == 0 && fwrite(buf, 1, (size_t)t->nbytes, f) != t->nbytes)
            rc = SX_EIO;
        free(buf);
        if (rc)
            goto out;
        pad = (WRITER_ALIGNMENT - t->nbytes % WRITER_ALIGNMENT) %
              WRITER_ALIGNMENT;
        if (fwrite(zeros, 1, pad, f) != pad) {
            rc = SX_EIO;
            goto out;
        }
    }
    rc = 0;
out:
    free(h.p);
    return rc;
}

int sx_gguf_writer_save(sx_gguf_writer *w, const char *path,
                        sx_gguf_fill_fn fill, void *ctx, char *err,
                        size_t errlen)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    FILE *f;
    int rc;

    if (!tmp)
        return SX_ENOMEM;
    snprintf(tmp, n, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) {
        if (err && errlen)
            snprintf(err, errlen, "fopen(\"%s\") failed: %s", tmp,
                     strerror(errno));
        free(tmp);
        return SX_EIO;
    }
    rc = write_all(w, f, fill, ctx);
    if (fclose(f) != 0 && rc == 0)
        rc = SX_EIO;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = SX_EIO;
    if (rc) {
        if (err && errlen)
            snprintf(err, errlen, "writing \"%s\" failed (%s)", path,
                     rc == SX_ENOMEM ? "out of memory" : strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

int sx_gguf_writer_to_buffer(sx_gguf_writer *w, sx_gguf_fill_fn fill,
                             void *ctx, void **buf, size_t *len)
{
    char *p = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&p, &n);
    int rc;

    if (!f)
        return SX_ENOMEM;
    rc = write_all(w, f, fill, ctx);
    if (fclose(f) != 0 && rc == 0)
        rc = SX_ENOMEM;
    if (rc) {
        free(p);
        return rc;
    }
    *buf = p;
    *len = n;
    return 0;
}
