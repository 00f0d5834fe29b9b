/* Model internals shared by the loader (model.c) and the forward pass
 * (model_forward.c): weight matrices as views into the mapped file, norm
 * vectors and biases widened to floats, and the scratch of a batch step. */
#ifndef SX_ENGINE_MODEL_H
#define SX_ENGINE_MODEL_H

#include <pthread.h>

#include "engine/engine.h"
#include "engine/kernels.h"

enum sx_rope_mode { SX_ROPE_NORM, SX_ROPE_NEOX };

/* A matrix of n_out rows of n_in values, y = W x. */
typedef struct sx_wmat {
    int type;                /* enum sx_ggml_type */
    int n_in, n_out;
    size_t row_bytes;
    const uint8_t *data;
    const char *name;        /* tensor name, for messages */
} sx_wmat;

typedef struct sx_layer {
    float *attn_norm, *ffn_norm;
    float *bq, *bk, *bv;     /* NULL when the model has no biases */
    sx_wmat wq, wk, wv, wo, gate, up, down;
} sx_layer;

/* Scratch of one batch step, grown on demand and kept between steps. */
typedef struct sx_scratch {
    int cap_tokens, cap_ctx, n_threads;
    float *x, *h, *q, *k, *v, *att, *ff_gate, *ff_up, *rows;
    void *act;               /* prepared activations */
    float *scores;           /* n_threads * cap_ctx */
    sx_seq **t_seq;          /* per chunk token: its sequence, */
    int *t_pos;              /* position, */
    int32_t *t_tok;          /* id, */
    float **t_out;           /* logits destination or NULL */
    const sx_lora **t_lora;  /* adapter or NULL */
    float *t_lscale;         /* its user scale */
    float **yrows;           /* packed logits destinations */
} sx_scratch;

struct sx_model {
    sx_gguf *gguf;
    sx_model_info info;
    char arch[16];
    char name[128];
    int rope_mode, n_rot;
    float *rope_freqs;       /* optional per-pair divisors (llama 3) */
    const uint8_t *tok_embd;
    int tok_embd_type;
    size_t tok_embd_row_bytes;
    float *output_norm;
    sx_wmat output;          /* token_embd again when the model ties them */
    sx_layer *layers;
    const sx_kernels *kern;
    pthread_mutex_t lock;    /* serialises forward passes (scratch) */
    sx_scratch scratch;
    struct sx_lora_ws *lora_ws; /* LoRA step workspace (lora.c) */
};

void sx_model_scratch_free(sx_scratch *s);

/* Engine-wide logging through the installed callback. */
void sx_engine_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
