/* LoRA adapters inside the engine (internal part; the public calls are in
 * engine.h): the adapter's matrices per layer and slot, and the low-rank
 * update the forward pass applies after each shared base matmul, grouped by
 * adapter: gather the group's rows, u = A x, then y += s * B u. */
#ifndef SX_ENGINE_LORA_H
#define SX_ENGINE_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/kernels.h"

/* The base matrices an adapter may adapt, in layer order. */
enum sx_lora_slot {
    SX_LORA_Q, SX_LORA_K, SX_LORA_V, SX_LORA_O,
    SX_LORA_GATE, SX_LORA_UP, SX_LORA_DOWN,
    SX_LORA_NSLOT
};

/* One adapted matrix: A is rank rows of n_in values (as in the file), B is
 * kept transposed (rank rows of n_out values) so that B u is rank axpys. */
typedef struct sx_lora_mat {
    int rank;                /* 0: this matrix is not adapted */
    int n_in, n_out;
    int a_type;              /* F32, F16 or BF16 */
    size_t a_row_bytes;
    void *a;
    int bt_type;             /* F32 or F16 */
    int u_round;             /* round u as B's type wants: 0, F16, BF16 */
    void *bt;
    float alpha;             /* the adapter's alpha (0: scale alone) */
} sx_lora_mat;

struct sx_lora {
    const sx_model *model;
    sx_lora_info info;
    char arch[16];
    char name[128];
    int n_layer;
    sx_lora_mat *mats;       /* n_layer * SX_LORA_NSLOT */
};

/* Step workspace, owned by the model (m->lora_ws) and used under its lock. */
typedef struct sx_lora_ws sx_lora_ws;
void sx_lora_ws_free(sx_lora_ws *ws);

/* Groups the T tokens of a chunk by adapter (t_lora[t] NULL: none).
 * Returns the number of adapter groups (0: nothing to apply) or SX_ENOMEM.
 * *ws is created on first use. */
int sx_lora_plan(sx_lora_ws **ws, int T, const sx_lora *const *t_lora,
                 const float *t_scale, int max_in);

/* For each of n slots (sharing the input x, rows ldx floats apart), adds
 * the update of every group to y[i] (rows ldy[i] floats apart). */
void sx_lora_apply(sx_lora_ws *ws, sx_pool *pool, const sx_kernels *k,
                   int layer, int n, const int *slots, const float *x,
                   int ldx, float *const *y, const int *ldy);

/* y[i] += s * (sum_k u[k] * bt[k][i]) for i in [lo, hi): the B step
 * kernels (scalar in lora.c, AVX2 in lora_avx2.c); the sum is scaled, then
 * added, as ggml does (scale, then add). ld: values per bt row. */
typedef void (*sx_lora_bt_fn)(int lo, int hi, int rank, const void *bt,
                              size_t ld, const float *u, float s, float *y);
void sx_lora_bt_f32_avx2(int lo, int hi, int rank, const void *bt, size_t ld,
                         const float *u, float s, float *y);
void sx_lora_bt_f16_avx2(int lo, int hi, int rank, const void *bt, size_t ld,
                         const float *u, float s, float *y);

#endif
