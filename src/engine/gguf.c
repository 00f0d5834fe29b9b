/* GGUF reader. The whole header (metadata and tensor table) is parsed and
 * checked once at open; afterwards every lookup is a read of validated data.
 * The parser trusts nothing in the file: every count is bounded by the bytes
 * left, every size computation is checked for overflow, and the first problem
 * found is reported in words that name the entry and the file offset. */
#include "engine/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8

typedef struct gguf_kv {
    const char *key;          /* owned copy, NUL-terminated */
    int type;
    int elem_type;            /* arrays only */
    uint64_t n;               /* arrays only: element count */
    const uint8_t *val;       /* value bytes (after the type tag) */
    size_t val_size;
    const uint8_t *elems;     /* arrays: first element */
    const uint8_t **strs;     /* string arrays: start of each string record */
} gguf_kv;

struct sx_gguf {
    const uint8_t *base;
    size_t len;
    void *map;                /* mmap'ed region, NULL for buffers */
    size_t map_len;
    uint32_t version;
    size_t alignment;
    uint64_t data_offset;
    int n_kv;
    gguf_kv *kv;
    int n_tensors;
    sx_gguf_tensor *tensors;
    char *names;              /* arena for keys and tensor names */
    size_t names_used, names_cap;
    int *kv_hash, *tn_hash;   /* open addressing; -1 = empty */
    size_t kv_hash_cap, tn_hash_cap;
};

typedef struct reader {
    const uint8_t *p;
    size_t pos, len;
    char *err;
    size_t errlen;
} reader;

/* --- type table ---------------------------------------------------------- */

static const struct {
    const char *name;
    int block, size;
} type_info[SX_GGML_TYPE_COUNT] = {
    [SX_GGML_F32] = {"f32", 1, 4},        [SX_GGML_F16] = {"f16", 1, 2},
    [SX_GGML_Q4_0] = {"q4_0", 32, 18},    [SX_GGML_Q4_1] = {"q4_1", 32, 20},
    [SX_GGML_Q5_0] = {"q5_0", 32, 22},    [SX_GGML_Q5_1] = {"q5_1", 32, 24},
    [SX_GGML_Q8_0] = {"q8_0", 32, 34},    [SX_GGML_Q8_1] = {"q8_1", 32, 36},
    [SX_GGML_Q2_K] = {"q2_K", 256, 84},   [SX_GGML_Q3_K] = {"q3_K", 256, 110},
    [SX_GGML_Q4_K] = {"q4_K", 256, 144},  [SX_GGML_Q5_K] = {"q5_K", 256, 176},
    [SX_GGML_Q6_K] = {"q6_K", 256, 210},  [SX_GGML_Q8_K] = {"q8_K", 256, 292},
    [SX_GGML_IQ2_XXS] = {"iq2_xxs", 256, 66},
    [SX_GGML_IQ2_XS] = {"iq2_xs", 256, 74},
    [SX_GGML_IQ3_XXS] = {"iq3_xxs", 256, 98},
    [SX_GGML_IQ1_S] = {"iq1_s", 256, 50}, [SX_GGML_IQ4_NL] = {"iq4_nl", 32, 18},
    [SX_GGML_IQ3_S] = {"iq3_s", 256, 110}, [SX_GGML_IQ2_S] = {"iq2_s", 256, 82},
    [SX_GGML_IQ4_XS] = {"iq4_xs", 256, 136}, [SX_GGML_I8] = {"i8", 1, 1},
    [SX_GGML_I16] = {"i16", 1, 2},        [SX_GGML_I32] = {"i32", 1, 4},
    [SX_GGML_I64] = {"i64", 1, 8},        [SX_GGML_F64] = {"f64", 1, 8},
    [SX_GGML_IQ1_M] = {"iq1_m", 256, 56}, [SX_GGML_BF16] = {"bf16", 1, 2},
    [SX_GGML_TQ1_0] = {"tq1_0", 256, 54}, [SX_GGML_TQ2_0] = {"tq2_0", 256, 66},
    [SX_GGML_MXFP4] = {"mxfp4", 32, 17},
};

const char *sx_ggml_type_name(int type)
{
    if (type < 0 || type >= SX_GGML_TYPE_COUNT || !type_info[type].name)
        return "unknown";
    return type_info[type].name;
}

int sx_ggml_block_size(int type)
{
    if (type < 0 || type >= SX_GGML_TYPE_COUNT)
        return 0;
    return type_info[type].block;
}

int sx_ggml_type_size(int type)
{
    if (type < 0 || type >= SX_GGML_TYPE_COUNT)
        return 0;
    return type_info[type].size;
}

/* Size in bytes of one scalar metadata value; 0 for strings and arrays. */
static size_t scalar_size(int t)
{
    switch (t) {
    case SX_GGUF_U8: case SX_GGUF_I8: case SX_GGUF_BOOL: return 1;
    case SX_GGUF_U16: case SX_GGUF_I16: return 2;
    case SX_GGUF_U32: case SX_GGUF_I32: case SX_GGUF_F32: return 4;
    case SX_GGUF_U64: case SX_GGUF_I64: case SX_GGUF_F64: return 8;
    default: return 0;
    }
}

/* --- reading primitives -------------------------------------------------- */

static int fail(reader *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(reader *r, const char *fmt, ...)
{
    va_list ap;
    int n = 0;

    if (r->err && r->errlen) {
        n = snprintf(r->err, r->errlen, "gguf: ");
        if (n < 0 || (size_t)n >= r->errlen)
            return SX_EINVAL;
        va_start(ap, fmt);
        vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return SX_EINVAL;
}

static int need(reader *r, size_t n, const char *what)
{
    if (r->len - r->pos < n)
        return fail(r, "file truncated while reading %s at offset %zu "
                       "(%zu bytes needed, %zu left)",
                    what, r->pos, n, r->len - r->pos);
    return 0;
}

static int rd_u32(reader *r, uint32_t *v, const char *what)
{
    int rc = need(r, 4, what);

    if (rc)
        return rc;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(reader *r, uint64_t *v, const char *what)
{
    int rc = need(r, 8, what);

    if (rc)
        return rc;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return 0;
}

/* Reads a string record (u64 length + bytes); *s points at the bytes. */
static int rd_str(reader *r, const uint8_t **s, uint64_t *n, const char *what)
{
    int rc = rd_u64(r, n, what);

    if (rc)
        return rc;
    if (*n > r->len - r->pos)
        return fail(r, "%s at offset %zu has length %llu but only %zu bytes "
                       "are left",
                    what, r->pos - 8, (unsigned long long)*n, r->len - r->pos);
    *s = r->p + r->pos;
    r->pos += (size_t)*n;
    return 0;
}

/* Skips one value of type t, recursing into nested arrays up to a depth. */
static int skip_value(reader *r, int t, int depth, const char *key)
{
    uint32_t et;
    uint64_t n, len;
    const uint8_t *s;
    size_t sz;
    int rc;

    if (t == SX_GGUF_STR)
        return rd_str(r, &s, &len, "string value");
    if (t != SX_GGUF_ARR) {
        sz = scalar_size(t);
        if (!sz)
            return fail(r, "metadata '%s' has unknown value type %d", key, t);
        return need(r, sz, "scalar value") ? SX_EINVAL : (r->pos += sz, 0);
    }
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return fail(r, "metadata '%s' nests arrays deeper than %d", key,
                    GGUF_MAX_ARRAY_DEPTH);
    if ((rc = rd_u32(r, &et, "array element type")) ||
        (rc = rd_u64(r, &n, "array length")))
        return rc;
    sz = scalar_size((int)et);
    if (sz) {
        if (n > (r->len - r->pos) / sz)
            return fail(r, "metadata '%s': array of %llu elements does not "
                           "fit in the %zu bytes left",
                        key, (unsigned long long)n, r->len - r->pos);
        r->pos += (size_t)(n * sz);
        return 0;
    }
    if (et != SX_GGUF_STR && et != SX_GGUF_ARR)
        return fail(r, "metadata '%s' has unknown array element type %u", key,
                    et);
    /* Every string or array element takes at least 8 bytes. */
    if (n > (r->len - r->pos) / 8)
        return fail(r, "metadata '%s': array of %llu elements does not fit "
                       "in the %zu bytes left",
                    key, (unsigned long long)n, r->len - r->pos);
    for (uint64_t i = 0; i < n; i++)
        if ((rc = skip_value(r, (int)et, depth + 1, key)))
            return rc;
    return 0;
}

/* --- name arena and hashes ----------------------------------------------- */

static const char *arena_add(sx_gguf *g, const uint8_t *s, size_t n)
{
    char *p = g->names + g->names_used;

    memcpy(p, s, n);
    p[n] = '\0';
    g->names_used += n + 1;
    return p;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    while (*s)
        h = (h ^ (uint8_t)*s++) * 1099511628211ULL;
    return h;
}

/* Looks up name in a table whose slots index into names_of(i). */
static int hash_find(const int *tab, size_t cap, const char *name,
                     const char *(*name_of)(const sx_gguf *, int),
                     const sx_gguf *g)
{
    size_t i;

    if (!cap)
        return -1;
    i = hash_str(name) & (cap - 1);
    while (tab[i] >= 0) {
        if (strcmp(name_of(g, tab[i]), name) == 0)
            return tab[i];
        i = (i + 1) & (cap - 1);
    }
    return -1;
}

static void hash_put(int *tab, size_t cap, const char *name, int idx)
{
    size_t i = hash_str(name) & (cap - 1);

    while (tab[i] >= 0)
        i = (i + 1) & (cap - 1);
    tab[i] = idx;
}

static const char *kv_name(const sx_gguf *g, int i) { return g->kv[i].key; }
static const char *tn_name(const sx_gguf *g, int i)
{
    return g->tensors[i].name;
}

static int *hash_new(size_t n, size_t *cap)
{
    int *tab;

    *cap = 16;
    while (*cap < 2 * n)
        *cap *= 2;
    tab = malloc(*cap * sizeof(*tab));
    if (tab)
        memset(tab, 0xff, *cap * sizeof(*tab));
    return tab;
}

/* --- parsing ------------------------------------------------------------- */

static int parse_kv(sx_gguf *g, reader *r, int i)
{
    gguf_kv *kv = &g->kv[i];
    const uint8_t *s;
    uint64_t n;
    uint32_t t;
    size_t start;
    int rc;

    if ((rc = rd_str(r, &s, &n, "metadata key")))
        return rc;
    if (n == 0 || memchr(s, '\0', (size_t)n))
        return fail(r, "metadata entry %d has an empty key or one with a NUL "
                       "byte", i);
    kv->key = arena_add(g, s, (size_t)n);
    if (hash_find(g->kv_hash, g->kv_hash_cap, kv->key, kv_name, g) >= 0)
        return fail(r, "metadata key '%s' appears twice", kv->key);
    if ((rc = rd_u32(r, &t, "metadata value type")))
        return rc;
    kv->type = (int)t;
    start = r->pos;
    if (t == SX_GGUF_ARR) {
        uint32_t et;
        uint64_t cnt;

        if ((rc = rd_u32(r, &et, "array element type")) ||
            (rc = rd_u64(r, &cnt, "array length")))
            return rc;
        kv->elem_type = (int)et;
        kv->n = cnt;
        kv->elems = r->p + r->pos;
        r->pos = start;
    }
    if ((rc = skip_value(r, kv->type, 0, kv->key)))
        return rc;
    kv->val = r->p + start;
    kv->val_size = r->pos - start;
    hash_put(g->kv_hash, g->kv_hash_cap, kv->key, i);

    /* Index string arrays so that the i-th string is one lookup. */
    if (kv->type == SX_GGUF_ARR && kv->elem_type == SX_GGUF_STR && kv->n) {
        const uint8_t *p = kv->elems;
        uint64_t len;

        kv->strs = malloc((size_t)kv->n * sizeof(*kv->strs));
        if (!kv->strs)
            return fail(r, "out of memory indexing '%s'", kv->key);
        for (uint64_t j = 0; j < kv->n; j++) {
            kv->strs[j] = p;
            memcpy(&len, p, 8);
            p += 8 + len;
        }
    }
    return 0;
}

static int parse_tensor(sx_gguf *g, reader *r, int i)
{
    sx_gguf_tensor *t = &g->tensors[i];
    const uint8_t *s;
    uint64_t n, off, nel = 1, nrow;
    uint32_t nd, type;
    int rc, bs;

    if ((rc = rd_str(r, &s, &n, "tensor name")))
        return rc;
    if (n == 0 || memchr(s, '\0', (size_t)n))
        return fail(r, "tensor %d has an empty name or one with a NUL byte",
                    i);
    t->name = arena_add(g, s, (size_t)n);
    if (hash_find(g->tn_hash, g->tn_hash_cap, t->name, tn_name, g) >= 0)
        return fail(r, "tensor '%s' appears twice", t->name);
    if ((rc = rd_u32(r, &nd, "tensor dimension count")))
        return rc;
    if (nd < 1 || nd > SX_GGUF_MAX_DIMS)
        return fail(r, "tensor '%s' has %u dimensions (1 to %d allowed)",
                    t->name, nd, SX_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (int d = 0; d < SX_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t v;

        if ((rc = rd_u64(r, &v, "tensor dimension")))
            return rc;
        if (v == 0 || v > (uint64_t)INT64_MAX)
            return fail(r, "tensor '%s' dimension %u is %llu", t->name, d,
                        (unsigned long long)v);
        if (nel > (uint64_t)INT64_MAX / v)
            return fail(r, "tensor '%s' has too many elements", t->name);
        nel *= v;
        t->ne[d] = (int64_t)v;
    }
    if ((rc = rd_u32(r, &type, "tensor type")) ||
        (rc = rd_u64(r, &off, "tensor data offset")))
        return rc;
    bs = sx_ggml_block_size((int)type);
    if (bs == 0)
        return fail(r, "tensor '%s' has unknown type %u", t->name, type);
    t->type = (int)type;
    if (t->ne[0] % bs)
        return fail(r, "tensor '%s': row of %lld values is not a multiple "
                       "of the %s block size %d",
                    t->name, (long long)t->ne[0], sx_ggml_type_name(t->type),
                    bs);
    nrow = nel / (uint64_t)t->ne[0];
    n = (uint64_t)t->ne[0] / (uint64_t)bs * (uint64_t)sx_ggml_type_size(t->type);
    if (nrow && n > UINT64_MAX / nrow)
        return fail(r, "tensor '%s' is too large", t->name);
    t->nbytes = n * nrow;
    t->offset = off;
    hash_put(g->tn_hash, g->tn_hash_cap, t->name, i);
    return 0;
}

/* Parses the header of g->base[0..len) into g. */
static int parse(sx_gguf *g, char *err, size_t errlen)
{
    reader r = {.p = g->base, .len = g->len, .err = err, .errlen = errlen};
    uint64_t n_tensors, n_kv, data_size;
    uint32_t align;
    int rc;

    if (g->len < 4 || memcmp(g->base, "GGUF", 4) != 0)
        return fail(&r, "not a GGUF file (bad magic)");
    r.pos = 4;
    if ((rc = rd_u32(&r, &g->version, "version")))
        return rc;
    if (g->version != 2 && g->version != 3)
        return fail(&r, "unsupported GGUF version %u (2 and 3 are read)",
                    g->version);
    if ((rc = rd_u64(&r, &n_tensors, "tensor count")) ||
        (rc = rd_u64(&r, &n_kv, "metadata count")))
        return rc;

    /* A key/value takes at least 8+1+4+1 bytes, a tensor info 8+1+4+8+4+8. */
    if (n_kv > (g->len - r.pos) / 14)
        return fail(&r, "metadata count %llu is impossible for a file of %zu "
                        "bytes", (unsigned long long)n_kv, g->len);
    if (n_tensors > (g->len - r.pos) / 33)
        return fail(&r, "tensor count %llu is impossible for a file of %zu "
                        "bytes", (unsigned long long)n_tensors, g->len);
    g->n_kv = (int)n_kv;
    g->n_tensors = (int)n_tensors;
    g->kv = calloc(n_kv ? n_kv : 1, sizeof(*g->kv));
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof(*g->tensors));
    g->names_cap = g->len + (size_t)(n_kv + n_tensors) + 1;
    g->names = malloc(g->names_cap);
    g->kv_hash = hash_new((size_t)n_kv, &g->kv_hash_cap);
    g->tn_hash = hash_new((size_t)n_tensors, &g->tn_hash_cap);
    if (!g->kv || !g->tensors || !g->names || !g->kv_hash || !g->tn_hash)
        return fail(&r, "out of memory");

    for (int i = 0; i < g->n_kv; i++)
        if ((rc = parse_kv(g, &r, i)))
            return rc;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    rc = sx_gguf_get_u32(g, "general.alignment", &align);
    if (rc == SX_OK) {
        if (align == 0 || (align & (align - 1)) || align > (1u << 20))
            return fail(&r, "general.alignment %u is not a power of two up to "
                            "1 MiB", align);
        g->alignment = align;
    } else if (rc != SX_ENOTFOUND) {
        return fail(&r, "general.alignment is not an unsigned integer");
    }

    for (int i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor(g, &r, i)))
            return rc;

    /* Data starts at the next multiple of the alignment. */
    g->data_offset = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors && g->data_offset > g->len)
        return fail(&r, "file truncated before the tensor data (offset %llu)",
                    (unsigned long long)g->data_offset);
    data_size = g->data_offset <= g->len ? g->len - g->data_offset : 0;
    for (int i = 0; i < g->n_tensors; i++) {
        sx_gguf_tensor *t = &g->tensors[i];

        if (t->offset % g->alignment)
            return fail(&r, "tensor '%s' data offset %llu is not aligned to "
                            "%zu", t->name, (unsigned long long)t->offset,
                        g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return fail(&r, "tensor '%s' data (%llu bytes at %llu) runs past "
                            "the end of the file",
                        t->name, (unsigned long long)t->nbytes,
                        (unsigned long long)t->offset);
        t->data = g->base + g->data_offset + t->offset;
    }
    return 0;
}

static sx_gguf *open_common(sx_gguf *g, char *err, size_t errlen)
{
    if (parse(g, err, errlen)) {
        sx_gguf_close(g);
        return NULL;
    }
    return g;
}

sx_gguf *sx_gguf_open_buffer(const void *data, size_t len, char *err,
                             size_t errlen)
{
    sx_gguf *g = calloc(1, sizeof(*g));

    if (!g) {
        if (err && errlen)
            snprintf(err, errlen, "gguf: out of memory");
        return NULL;
    }
    g->base = data;
    g->len = data ? len : 0;
    return open_common(g, err, errlen);
}

sx_gguf *sx_gguf_open(const char *path, char *err, size_t errlen)
{
    struct stat st;
    sx_gguf *g;
    void *map;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (err && errlen)
            snprintf(err, errlen, "open(\"%s\") failed: %s", path,
                     strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        if (err && errlen)
            snprintf(err, errlen, "gguf: \"%s\" is not a non-empty regular "
                                  "file", path);
        close(fd);
        return NULL;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        if (err && errlen)
            snprintf(err, errlen, "mmap(\"%s\") failed: %s", path,
                     strerror(errno));
        return NULL;
    }
    g = calloc(1, sizeof(*g));
    if (!g) {
        munmap(map, (size_t)st.st_size);
        if (err && errlen)
            snprintf(err, errlen, "gguf: out of memory");
        return NULL;
    }
    g->map = map;
    g->map_len = (size_t)st.st_size;
    g->base = map;
    g->len = (size_t)st.st_size;
    return open_common(g, err, errlen);
}

void sx_gguf_close(sx_gguf *g)
{
    if (!g)
        return;
    if (g->kv)
        for (int i = 0; i < g->n_kv; i++)
            free(g->kv[i].strs);
    free(g->kv);
    free(g->tensors);
    free(g->names);
    free(g->kv_hash);
    free(g->tn_hash);
    if (g->map)
        munmap(g->map, g->map_len);
    free(g);
}

/* --- accessors ----------------------------------------------------------- */

uint32_t sx_gguf_version(const sx_gguf *g) { return g->version; }
size_t sx_gguf_alignment(const sx_gguf *g) { return g->alignment; }
uint64_t sx_gguf_data_offset(const sx_gguf *g) { return g->data_offset; }
int sx_gguf_n_kv(const sx_gguf *g) { return g->n_kv; }
int sx_gguf_n_tensors(const sx_gguf *g) { return g->n_tensors; }

int sx_gguf_find(const sx_gguf *g, const char *key)
{
    return hash_find(g->kv_hash, g->kv_hash_cap, key, kv_name, g);
}

const char *sx_gguf_kv_key(const sx_gguf *g, int i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

int sx_gguf_kv_type(const sx_gguf *g, int i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].type : -1;
}

const void *sx_gguf_kv_raw(const sx_gguf *g, int i, size_t *size)
{
    if (i < 0 || i >= g->n_kv)
        return NULL;
    *size = g->kv[i].val_size;
    return g->kv[i].val;
}

/* Reads an integer value of any width as a signed 128-bit-safe pair. */
static int get_int(const gguf_kv *kv, int64_t *s, uint64_t *u, int *is_signed)
{
    const uint8_t *p = kv->val;

    *is_signed = 1;
    switch (kv->type) {
    case SX_GGUF_U8: *s = *p; break;
    case SX_GGUF_I8: *s = (int8_t)*p; break;
    case SX_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *s = v; break; }
    case SX_GGUF_I16: { int16_t v; memcpy(&v, p, 2); *s = v; break; }
    case SX_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *s = v; break; }
    case SX_GGUF_I32: { int32_t v; memcpy(&v, p, 4); *s = v; break; }
    case SX_GGUF_I64: memcpy(s, p, 8); break;
    case SX_GGUF_U64:
        memcpy(u, p, 8);
        *is_signed = 0;
        break;
    default: return SX_EINVAL;
    }
    return 0;
}

int sx_gguf_get_u32(const sx_gguf *g, const char *key, uint32_t *out)
{
    int i = sx_gguf_find(g, key), sg;
    int64_t s = 0;
    uint64_t u = 0;

    if (i < 0)
        return SX_ENOTFOUND;
    if (get_int(&g->kv[i], &s, &u, &sg))
        return SX_EINVAL;
    if (sg) {
        if (s < 0 || s > (int64_t)UINT32_MAX)
            return SX_EINVAL;
        *out = (uint32_t)s;
    } else {
        if (u > UINT32_MAX)
            return SX_EINVAL;
        *out = (uint32_t)u;
    }
    return 0;
}

int sx_gguf_get_i64(const sx_gguf *g, const char *key, int64_t *out)
{
    int i = sx_gguf_find(g, key), sg;
    int64_t s = 0;
    uint64_t u = 0;

    if (i < 0)
        return SX_ENOTFOUND;
    if (get_int(&g->kv[i], &s, &u, &sg))
        return SX_EINVAL;
    if (!sg) {
        if (u > (uint64_t)INT64_MAX)
            return SX_EINVAL;
        s = (int64_t)u;
    }
    *out = s;
    return 0;
}

int sx_gguf_get_f32(const sx_gguf *g, const char *key, float *out)
{
    int i = sx_gguf_find(g, key);

    if (i < 0)
        return SX_ENOTFOUND;
    if (g->kv[i].type == SX_GGUF_F32) {
        memcpy(out, g->kv[i].val, 4);
    } else if (g->kv[i].type == SX_GGUF_F64) {
        double d;

        memcpy(&d, g->kv[i].val, 8);
        *out = (float)d;
    } else {
        return SX_EINVAL;
    }
    return 0;
}

int sx_gguf_get_bool(const sx_gguf *g, const char *key, bool *out)
{
    int i = sx_gguf_find(g, key);

    if (i < 0)
        return SX_ENOTFOUND;
    if (g->kv[i].type != SX_GGUF_BOOL)
        return SX_EINVAL;
    *out = g->kv[i].val[0] != 0;
    return 0;
}

const char *sx_gguf_get_str(const sx_gguf *g, const char *key, size_t *len)
{
    int i = sx_gguf_find(g, key);
    uint64_t n;

    if (i < 0 || g->kv[i].type != SX_GGUF_STR)
        return NULL;
    memcpy(&n, g->kv[i].val, 8);
    if (len)
        *len = (size_t)n;
    return (const char *)g->kv[i].val + 8;
}

int sx_gguf_get_arr(const sx_gguf *g, const char *key, int *elem_type,
                    uint64_t *n)
{
    int i = sx_gguf_find(g, key);

    if (i < 0)
        return SX_ENOTFOUND;
    if (g->kv[i].type != SX_GGUF_ARR)
        return SX_EINVAL;
    if (elem_type)
        *elem_type = g->kv[i].elem_type;
    if (n)
        *n = g->kv[i].n;
    return 0;
}

const char *sx_gguf_arr_str(const sx_gguf *g, const char *key, uint64_t i,
                            size_t *len)
{
    int k = sx_gguf_find(g, key);
    uint64_t n;

    if (k < 0 || g->kv[k].type != SX_GGUF_ARR ||
        g->kv[k].elem_type != SX_GGUF_STR || i >= g->kv[k].n)
        return NULL;
    memcpy(&n, g->kv[k].strs[i], 8);
    if (len)
        *len = (size_t)n;
    return (const char *)g->kv[k].strs[i] + 8;
}

const void *sx_gguf_arr_data(const sx_gguf *g, const char *key)
{
    int k = sx_gguf_find(g, key);

    if (k < 0 || g->kv[k].type != SX_GGUF_ARR ||
        !scalar_size(g->kv[k].elem_type))
        return NULL;
    return g->kv[k].elems;
}

const sx_gguf_tensor *sx_gguf_tensor_at(const sx_gguf *g, int i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const sx_gguf_tensor *sx_gguf_find_tensor(const sx_gguf *g, const char *name)
{
    int i = hash_find(g->tn_hash, g->tn_hash_cap, name, tn_name, g);

    return i >= 0 ? &g->tensors[i] : NULL;
}
