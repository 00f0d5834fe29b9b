/* GGUF reader: opens a GGUF v2/v3 file (mmap) or a caller's buffer, checks
 * every length, offset, shape and type, and gives read-only access to the
 * metadata (key/value pairs) and the tensor table. Nothing is copied: strings
 * and tensor data point into the mapping, which lives until sx_gguf_close(). */
#ifndef SX_ENGINE_GGUF_H
#define SX_ENGINE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/errors.h"

typedef struct sx_gguf sx_gguf;

/* Metadata value types, numbered as in the file format. */
enum sx_gguf_type {
    SX_GGUF_U8 = 0, SX_GGUF_I8 = 1, SX_GGUF_U16 = 2, SX_GGUF_I16 = 3,
    SX_GGUF_U32 = 4, SX_GGUF_I32 = 5, SX_GGUF_F32 = 6, SX_GGUF_BOOL = 7,
    SX_GGUF_STR = 8, SX_GGUF_ARR = 9, SX_GGUF_U64 = 10, SX_GGUF_I64 = 11,
    SX_GGUF_F64 = 12
};

/* Tensor element types, numbered as ggml numbers them. The engine computes
 * with F32, F16, BF16, Q8_0 and Q4_0; the reader knows the block sizes of the
 * others so that it can check and list any file. */
enum sx_ggml_type {
    SX_GGML_F32 = 0, SX_GGML_F16 = 1, SX_GGML_Q4_0 = 2, SX_GGML_Q4_1 = 3,
    SX_GGML_Q5_0 = 6, SX_GGML_Q5_1 = 7, SX_GGML_Q8_0 = 8, SX_GGML_Q8_1 = 9,
    SX_GGML_Q2_K = 10, SX_GGML_Q3_K = 11, SX_GGML_Q4_K = 12,
    SX_GGML_Q5_K = 13, SX_GGML_Q6_K = 14, SX_GGML_Q8_K = 15,
    SX_GGML_IQ2_XXS = 16, SX_GGML_IQ2_XS = 17, SX_GGML_IQ3_XXS = 18,
    SX_GGML_IQ1_S = 19, SX_GGML_IQ4_NL = 20, SX_GGML_IQ3_S = 21,
    SX_GGML_IQ2_S = 22, SX_GGML_IQ4_XS = 23, SX_GGML_I8 = 24,
    SX_GGML_I16 = 25, SX_GGML_I32 = 26, SX_GGML_I64 = 27, SX_GGML_F64 = 28,
    SX_GGML_IQ1_M = 29, SX_GGML_BF16 = 30, SX_GGML_TQ1_0 = 34,
    SX_GGML_TQ2_0 = 35, SX_GGML_MXFP4 = 39,
    SX_GGML_TYPE_COUNT = 40
};

#define SX_GGUF_MAX_DIMS 4

/* One entry of the tensor table. ne[0] is the innermost (contiguous)
 * dimension: a matrix of n_out rows of n_in values has ne = {n_in, n_out}.
 * Unused dimensions are 1. */
typedef struct sx_gguf_tensor {
    const char *name;       /* NUL-terminated copy owned by the handle */
    int type;               /* enum sx_ggml_type */
    int n_dims;
    int64_t ne[SX_GGUF_MAX_DIMS];
    uint64_t offset;        /* from the start of the data section */
    uint64_t nbytes;
    const void *data;       /* inside the mapping, aligned as the file says */
} sx_gguf_tensor;

/* Opens and validates a GGUF v3 (or v2) file through mmap. NULL on failure
 * with a message naming the problem in err (err may be NULL). */
sx_gguf *sx_gguf_open(const char *path, char *err, size_t errlen);
/* Same over a caller-owned buffer (not copied; must outlive the handle). */
sx_gguf *sx_gguf_open_buffer(const void *data, size_t len, char *err,
                             size_t errlen);
void sx_gguf_close(sx_gguf *g);                       /* accepts NULL */

uint32_t sx_gguf_version(const sx_gguf *g);
size_t sx_gguf_alignment(const sx_gguf *g);
uint64_t sx_gguf_data_offset(const sx_gguf *g);       /* file offset of data */

/* --- metadata ------------------------------------------------------------ */

int sx_gguf_find(const sx_gguf *g, const char *key); /* kv index or -1 */
int sx_gguf_n_kv(const sx_gguf *g);
/* Key of entry i (NUL-terminated, owned by the handle), NULL if out of range. */
const char *sx_gguf_kv_key(const sx_gguf *g, int i);
int sx_gguf_kv_type(const sx_gguf *g, int i);          /* enum sx_gguf_type */

/* Scalars by key. Return 0, SX_ENOTFOUND when absent, SX_EINVAL on a type
 * that cannot convert (integers convert between widths when the value fits;
 * get_f32 accepts f32 and f64). */
int sx_gguf_get_u32(const sx_gguf *g, const char *key, uint32_t *out);
int sx_gguf_get_i64(const sx_gguf *g, const char *key, int64_t *out);
int sx_gguf_get_f32(const sx_gguf *g, const char *key, float *out);
int sx_gguf_get_bool(const sx_gguf *g, const char *key, bool *out);
/* String value: pointer into the file (NOT NUL-terminated) and its length;
 * NULL if absent or not a string. */
const char *sx_gguf_get_str(const sx_gguf *g, const char *key, size_t *len);
/* Arrays: element type and count; SX_ENOTFOUND / SX_EINVAL as above. */
int sx_gguf_get_arr(const sx_gguf *g, const char *key, int *elem_type,
                    uint64_t *n);
/* i-th string of a string array in O(1) (string arrays are indexed at open);
 * NULL when absent, not a string array or i >= n. */
const char *sx_gguf_arr_str(const sx_gguf *g, const char *key, uint64_t i,
                            size_t *len);
/* Raw little-endian element data of a numeric array (x86-64: usable
 * directly); NULL when absent or not an array of numbers/bools. */
const void *sx_gguf_arr_data(const sx_gguf *g, const char *key);

/* Raw bytes of entry i's value as stored (for copying metadata to another
 * file): *size bytes starting at the value (after the type tag). */
const void *sx_gguf_kv_raw(const sx_gguf *g, int i, size_t *size);

/* --- tensors ------------------------------------------------------------- */

int sx_gguf_n_tensors(const sx_gguf *g);
const sx_gguf_tensor *sx_gguf_tensor_at(const sx_gguf *g, int i);
const sx_gguf_tensor *sx_gguf_find_tensor(const sx_gguf *g, const char *name);

/* Type names ("q8_0", "f32", ...); "unknown" for a number ggml does not use. */
const char *sx_ggml_type_name(int type);
/* Values per block and bytes per block; 0 for an unknown type. */
int sx_ggml_block_size(int type);
int sx_ggml_type_size(int type);

/* --- writer -------------------------------------------------------------- */

/* Builds a GGUF v3 file: metadata and tensor infos are collected first, then
 * sx_gguf_writer_save() writes the header and asks a callback for each
 * tensor's bytes in turn, so a large model never sits in memory whole. */
typedef struct sx_gguf_writer sx_gguf_writer;

/* Fills dst (nbytes, already zeroed) with tensor `index`'s data. Returns 0
 * or a negative SX_E* code, which aborts the save. */
typedef int (*sx_gguf_fill_fn)(void *ctx, int index, const sx_gguf_tensor *t,
                               void *dst);

sx_gguf_writer *sx_gguf_writer_new(void);
void sx_gguf_writer_free(sx_gguf_writer *w);               /* accepts NULL */
/* Each adder returns 0, SX_ENOMEM, or SX_EEXIST for a repeated key/name. */
int sx_gguf_writer_u32(sx_gguf_writer *w, const char *key, uint32_t v);
int sx_gguf_writer_f32(sx_gguf_writer *w, const char *key, float v);
int sx_gguf_writer_bool(sx_gguf_writer *w, const char *key, bool v);
int sx_gguf_writer_str(sx_gguf_writer *w, const char *key, const char *s,
                       size_t len);
/* Numeric array of n elements of elem_type, copied from data. */
int sx_gguf_writer_arr(sx_gguf_writer *w, const char *key, int elem_type,
                       const void *data, uint64_t n);
/* A value copied verbatim from another file (see sx_gguf_kv_raw). */
int sx_gguf_writer_raw(sx_gguf_writer *w, const char *key, int type,
                       const void *raw, size_t size);
/* Declares a tensor; its bytes come from the fill callback at save time.
 * SX_EINVAL when ne[0] is not a multiple of the type's block size. */
int sx_gguf_writer_tensor(sx_gguf_writer *w, const char *name, int type,
                          int n_dims, const int64_t *ne);
/* Writes the file (to a temporary name, renamed into place when complete). */
int sx_gguf_writer_save(sx_gguf_writer *w, const char *path,
                        sx_gguf_fill_fn fill, void *ctx, char *err,
                        size_t errlen);
/* Same into a malloc'ed buffer the caller frees. */
int sx_gguf_writer_to_buffer(sx_gguf_writer *w, sx_gguf_fill_fn fill,
                             void *ctx, void **buf, size_t *len);

#endif
