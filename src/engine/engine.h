/* synapsex inference engine: the public header.
 *
 * The engine loads a GGUF model (architectures llama and qwen2; tensor types
 * F32, F16, BF16, Q8_0, Q4_0) and runs its forward pass for a batch of
 * sequences at once. It knows nothing of tenants or HTTP and logs nothing
 * except through the callback installed with sx_engine_set_log().
 *
 * Conventions: functions return 0 or a negative SX_E* code (engine/errors.h);
 * constructors return a pointer or NULL. Where a function takes
 * (char *err, size_t errlen), a failure also leaves a one-line message there
 * that names what is wrong (err may be NULL). Every _new/_load has a _free
 * that accepts NULL.
 *
 * Typical use:
 *   sx_model *m = sx_model_load("q.gguf", err, sizeof err);
 *   sx_pool *pool = sx_pool_new(4);
 *   sx_kv *kv = sx_kv_new(m, 8192, err, sizeof err);   // shared by all seqs
 *   sx_seq *s = sx_seq_new(kv);
 *   sx_batch_item it = {.seq = s, .tokens = ids, .n_tokens = n, .pos = -1,
 *                       .logits = SX_LOGITS_LAST, .out = logits};
 *   sx_engine_decode(m, pool, &it, 1, err, sizeof err);
 */
#ifndef SX_ENGINE_ENGINE_H
#define SX_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/errors.h"
#include "engine/gguf.h"

typedef struct sx_model sx_model;
typedef struct sx_pool sx_pool;
typedef struct sx_kv sx_kv;
typedef struct sx_seq sx_seq;
typedef struct sx_lora sx_lora;

/* --- logging -------------------------------------------------------------- */

/* level: 0 debug, 1 info, 2 warn, 3 error (the values of src/base/log.h). */
typedef void (*sx_engine_log_fn)(void *user, int level, const char *msg);
/* Installs the process-wide log callback (NULL: the engine stays silent). */
void sx_engine_set_log(sx_engine_log_fn fn, void *user);

/* --- threads -------------------------------------------------------------- */

/* A pool of n_threads threads (the calling thread counts as one, so 1 means
 * no extra thread). Idle workers sleep; a busy pool spins briefly between
 * steps. NULL on failure or n_threads outside 1..512. A NULL pool is valid
 * wherever a pool is taken and means "single-threaded". */
sx_pool *sx_pool_new(int n_threads);
void sx_pool_free(sx_pool *p);
int sx_pool_size(const sx_pool *p);

/* --- models --------------------------------------------------------------- */

typedef struct sx_model_info {
    const char *arch;       /* "llama" or "qwen2" */
    const char *name;       /* general.name, or "" */
    int n_vocab;
    int n_ctx_train;        /* {arch}.context_length */
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int32_t bos, eos;       /* token ids from the metadata; -1 when absent */
    bool add_bos;           /* whether prompts start with BOS */
    float rope_base, norm_eps;
    int weight_type;        /* enum sx_ggml_type of the attn_q matrices */
    uint64_t n_params;
    uint64_t n_bytes;       /* bytes of tensor data */
} sx_model_info;

/* Maps and checks a model file. Fails with SX_EUNSUPPORTED (message names
 * the architecture or the tensor and its type) for what the engine cannot
 * run, SX_EINVAL for a malformed or inconsistent file. The return code is
 * stored in *rc when rc is not NULL. */
sx_model *sx_model_load(const char *path, int *rc, char *err, size_t errlen);
void sx_model_free(sx_model *m);
const sx_model_info *sx_model_get_info(const sx_model *m);
/* The model's GGUF handle (metadata, tokenizer keys); owned by the model. */
const sx_gguf *sx_model_gguf(const sx_model *m);

/* --- LoRA adapters -------------------------------------------------------- */

#define SX_LORA_MAX_RANK 256

/* An adapter in llama.cpp's GGUF format (general.type "adapter",
 * adapter.type "lora", adapter.lora.alpha, general.architecture of the base,
 * tensors blk.N.<matrix>.weight.lora_a with ne [n_in, r] and .lora_b with
 * ne [r, n_out]; F32, F16 or BF16). A batch item applying it at scale s
 * computes y = W x + s * (alpha / r) * B (A x) for every adapted matrix
 * (s alone when alpha is 0), as llama.cpp does. */
typedef struct sx_lora_info {
    const char *arch;       /* general.architecture */
    const char *name;       /* general.name, or "" */
    int rank;               /* the largest rank of its matrices */
    float alpha;            /* adapter.lora.alpha; 0 when absent */
    int n_matrices;         /* base matrices it adapts */
    int type;               /* enum sx_ggml_type of its first lora_a */
    uint64_t n_bytes;       /* memory it holds */
} sx_lora_info;

/* Reads an adapter and checks it against the base model m: architecture,
 * every tensor naming an adaptable matrix of m (attn_q/k/v/output,
 * ffn_gate/up/down of an existing layer) with both halves present, shapes,
 * ranks 1..SX_LORA_MAX_RANK, types, finite values. The adapter is copied
 * into memory (the file is not kept open) and may be used only with m.
 * Failures: SX_EINVAL with a message naming the tensor or key,
 * SX_EUNSUPPORTED (a tensor type or target the engine does not apply),
 * SX_ENOMEM. The code is stored in *rc when rc is not NULL. */
sx_lora *sx_lora_load(const sx_model *m, const char *path, int *rc,
                      char *err, size_t errlen);
/* Same from a GGUF file held in memory (not kept after the call). */
sx_lora *sx_lora_load_buffer(const sx_model *m, const void *data, size_t len,
                             int *rc, char *err, size_t errlen);
void sx_lora_free(sx_lora *a);
const sx_lora_info *sx_lora_get_info(const sx_lora *a);

/* --- KV cache and sequences ----------------------------------------------- */

#define SX_KV_PAGE 16 /* positions per page */

/* One cache pool for a model: capacity for n_positions positions in all
 * (rounded up to whole pages), shared by every sequence made from it. Each
 * position costs n_layer * 2 * n_head_kv * head_dim floats. */
sx_kv *sx_kv_new(const sx_model *m, int n_positions, char *err,
                 size_t errlen);
void sx_kv_free(sx_kv *kv);       /* all its sequences must be freed first */
/* Positions still free in the pool (whole pages). */
int sx_kv_free_positions(const sx_kv *kv);
int sx_kv_capacity(const sx_kv *kv);

/* A sequence: its own page table into the pool. NULL on allocation failure. */
sx_seq *sx_seq_new(sx_kv *kv);
void sx_seq_free(sx_seq *s);      /* returns its pages to the pool */
void sx_seq_reset(sx_seq *s);     /* length 0, pages returned */
int sx_seq_len(const sx_seq *s);  /* positions held */
/* Drops positions >= len (keeps the prefix); SX_EINVAL if len > length. */
int sx_seq_truncate(sx_seq *s, int len);

/* --- forward pass --------------------------------------------------------- */

enum sx_logits_mode {
    SX_LOGITS_NONE = 0, /* only fill the cache (prompt chunks) */
    SX_LOGITS_LAST = 1, /* one row: the prediction after the last token */
    SX_LOGITS_ALL = 2,  /* n_tokens rows, one per position */
};

/* One sequence's share of a batch step. */
typedef struct sx_batch_item {
    sx_seq *seq;
    const int32_t *tokens;
    int n_tokens;           /* >= 1 */
    int pos;                /* position of tokens[0]: <= sx_seq_len(seq);
                               the cache is cut back to pos first; -1 means
                               append at sx_seq_len(seq) */
    int logits;             /* enum sx_logits_mode */
    float *out;             /* n_vocab floats per row wanted, row-major */
    const sx_lora *adapter; /* NULL: base model only; else loaded for this
                               model and alive until the call returns */
    float lora_scale;       /* the adapter's user scale (llama.cpp's) */
} sx_batch_item;

/* Runs the tokens of every item through the model in one pass over the
 * weights (long prompts are cut into chunks), appends their keys/values to
 * each sequence and writes the wanted logits. Each sequence may appear in
 * one item only. Errors: SX_EINVAL (bad token id, position, duplicate
 * sequence, a cache of another model, an adapter of another model or a
 * scale that is not finite), SX_ELIMIT (the cache pool has no room;
 * nothing was changed), SX_ENOMEM. The base matmuls are one shared pass for
 * all items whatever their adapters; each adapter's low-rank update touches
 * only its own items' rows. Calls on one model are serialised internally. */
int sx_engine_decode(sx_model *m, sx_pool *pool, sx_batch_item *items,
                     int n_items, char *err, size_t errlen);

/* Embedding of a token sequence: the final hidden states (after the output
 * norm) averaged over positions and scaled to unit L2 length; n_embd floats
 * in out. `scratch` is a sequence used for the pass; it is reset before and
 * after. */
int sx_engine_embed(sx_model *m, sx_pool *pool, sx_seq *scratch,
                    const int32_t *tokens, int n_tokens, float *out,
                    char *err, size_t errlen);

/* Name of the kernel set in use: "scalar", "avx2" or "avx512". */
const char *sx_engine_kernels(void);

#endif
