/* LoRA adapters: loading llama.cpp's GGUF adapter format with validation
 * against the base model, and the grouped low-rank update of a batch step.
 * The base matmul of a step is shared by every token; afterwards each group
 * of tokens using the same adapter gets y += s * (alpha/r) * B (A x): A x
 * through the engine's dot kernels (x rounded as llama.cpp rounds it for
 * the adapter's tensor type), then B u as rank axpys over the output. */
#include "engine/lora.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"
#include "engine/model.h"
#include "engine/pool.h"
#include "engine/quant.h"

static const char *const slot_names[SX_LORA_NSLOT] = {
    "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_gate", "ffn_up", "ffn_down",
};

/* --- loading ------------------------------------------------------------- */

typedef struct lload {
    const sx_model *m;
    sx_gguf *g;
    sx_lora *a;
    const sx_gguf_tensor **ta, **tb; /* per layer * slot */
    char *err;
    size_t errlen;
    int rc;
} lload;

/* Records a failure; the first one is the one reported. */
static int lerr(lload *l, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int lerr(lload *l, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rc = sx_errmsg_vfirst(&l->rc, l->err, l->errlen, rc, fmt, ap);
    va_end(ap);
    return rc;
}

static const sx_wmat *base_matrix(const sx_model *m, int layer, int slot)
{
    const sx_layer *L = &m->layers[layer];
    const sx_wmat *w[SX_LORA_NSLOT] = {&L->wq, &L->wk, &L->wv, &L->wo,
                                       &L->gate, &L->up, &L->down};

    return w[slot];
}

static bool str_is(const char *s, size_t n, const char *want)
{
    return s && n == strlen(want) && memcmp(s, want, n) == 0;
}

/* "blk.N.<matrix>.weight.lora_a|b" -> layer, slot, half (0 a, 1 b). */
static int parse_name(const char *name, int *layer, int *slot, int *half)
{
    const char *p = name, *dot;
    char *end;
    long n;
    size_t len;

    if (strncmp(p, "blk.", 4) != 0)
        return -1;
    p += 4;
    if (*p < '0' || *p > '9')
        return -1;
    n = strtol(p, &end, 10);
    if (*end != '.' || n > 1 << 20)
        return -1;
    p = end + 1;
    dot = strchr(p, '.');
    if (!dot)
        return -1;
    len = (size_t)(dot - p);
    if (strcmp(dot, ".weight.lora_a") == 0)
        *half = 0;
    else if (strcmp(dot, ".weight.lora_b") == 0)
        *half = 1;
    else
        return -1;
    for (int s = 0; s < SX_LORA_NSLOT; s++)
        if (strlen(slot_names[s]) == len && memcmp(p, slot_names[s], len) == 0) {
            *layer = (int)n;
            *slot = s;
            return 0;
        }
    return -1;
}

static bool lora_type_ok(int type)
{
    return type == SX_GGML_F32 || type == SX_GGML_F16 || type == SX_GGML_BF16;
}

static float value_at(int type, const void *data, size_t i)
{
    if (type == SX_GGML_F32)
        return ((const float *)data)[i];
    if (type == SX_GGML_F16)
        return sx_fp16_to_f32(((const uint16_t *)data)[i]);
    return sx_bf16_to_f32(((const uint16_t *)data)[i]);
}

static void *balloc(size_t n)
{
    return aligned_alloc(64, (n + 63) / 64 * 64);
}

/* Checks one A/B pair against the base matrix and copies it in. */
static int bind_pair(lload *l, int layer, int slot)
{
    const sx_gguf_tensor *ta = l->ta[layer * SX_LORA_NSLOT + slot];
    const sx_gguf_tensor *tb = l->tb[layer * SX_LORA_NSLOT + slot];
    const sx_wmat *w = base_matrix(l->m, layer, slot);
    sx_lora_mat *lm = &l->a->mats[layer * SX_LORA_NSLOT + slot];
    size_t esz;
    int r;

    if (!ta || !tb)
        return lerr(l, SX_EINVAL, "lora: tensor '%s' has no matching %s",
                    (ta ? ta : tb)->name, ta ? "lora_b" : "lora_a");
    if (!lora_type_ok(ta->type) || !lora_type_ok(tb->type)) {
        const sx_gguf_tensor *t = lora_type_ok(ta->type) ? tb : ta;

        return lerr(l, SX_EUNSUPPORTED, "lora: tensor '%s' has type %s; "
                                        "adapters must be f32, f16 or bf16",
                    t->name, sx_ggml_type_name(t->type));
    }
    if (ta->n_dims != 2 || ta->ne[0] != w->n_in)
        return lerr(l, SX_EINVAL, "lora: tensor '%s' has shape [%lld, %lld]; "
                                  "the base matrix '%s' takes %d inputs, so "
                                  "[%d, rank] was expected",
                    ta->name, (long long)ta->ne[0], (long long)ta->ne[1],
                    w->name, w->n_in, w->n_in);
    if (ta->ne[1] < 1 || ta->ne[1] > SX_LORA_MAX_RANK)
        return lerr(l, SX_EINVAL, "lora: tensor '%s' has rank %lld; ranks "
                                  "1..%d are supported",
                    ta->name, (long long)ta->ne[1], SX_LORA_MAX_RANK);
    r = (int)ta->ne[1];
    if (tb->n_dims != 2 || tb->ne[0] != r || tb->ne[1] != w->n_out)
        return lerr(l, SX_EINVAL, "lora: tensor '%s' has shape [%lld, %lld]; "
                                  "[%d, %d] was expected (rank of its lora_a, "
                                  "outputs of '%s')",
                    tb->name, (long long)tb->ne[0], (long long)tb->ne[1], r,
                    w->n_out, w->name);

    /* Every value finite. */
    for (int h = 0; h < 2; h++) {
        const sx_gguf_tensor *t = h ? tb : ta;
        size_t n = (size_t)t->ne[0] * (size_t)t->ne[1];

        for (size_t i = 0; i < n; i++)
            if (!isfinite(value_at(t->type, t->data, i)))
                return lerr(l, SX_EINVAL, "lora: tensor '%s' holds a value "
                                          "that is not finite (index %zu)",
                            t->name, i);
    }

    lm->rank = r;
    lm->n_in = w->n_in;
    lm->n_out = w->n_out;
    lm->a_type = ta->type;
    esz = (size_t)sx_ggml_type_size(ta->type);
    lm->a_row_bytes = (size_t)w->n_in * esz;
    lm->a = balloc((size_t)r * lm->a_row_bytes);
    /* B transposed: bt[k][i] = B[i][k]; bf16 widens exactly to f32. */
    lm->bt_type = tb->type == SX_GGML_F16 ? SX_GGML_F16 : SX_GGML_F32;
    lm->u_round = tb->type == SX_GGML_F32 ? 0 : tb->type;
    esz = lm->bt_type == SX_GGML_F16 ? 2 : 4;
    lm->bt = balloc((size_t)r * (size_t)w->n_out * esz);
    if (!lm->a || !lm->bt)
        return lerr(l, SX_ENOMEM, "lora: out of memory");
    memcpy(lm->a, ta->data, (size_t)r * lm->a_row_bytes);
    for (int i = 0; i < w->n_out; i++)
        for (int k = 0; k < r; k++) {
            size_t src = (size_t)i * (size_t)r + (size_t)k;
            size_t dst = (size_t)k * (size_t)w->n_out + (size_t)i;

            if (lm->bt_type == SX_GGML_F16)
                ((uint16_t *)lm->bt)[dst] = ((const uint16_t *)tb->data)[src];
            else
                ((float *)lm->bt)[dst] = value_at(tb->type, tb->data, src);
        }
    lm->alpha = l->a->info.alpha;
    l->a->info.n_bytes += (size_t)r * lm->a_row_bytes +
                          (size_t)r * (size_t)w->n_out * esz;
    l->a->info.n_matrices++;
    if (r > l->a->info.rank)
        l->a->info.rank = r;
    if (l->a->info.n_matrices == 1)
        l->a->info.type = ta->type;
    return 0;
}

static int read_meta(lload *l)
{
    const sx_gguf *g = l->g;
    sx_lora *a = l->a;
    const char *s;
    size_t n;
    int rc;

    s = sx_gguf_get_str(g, "general.type", &n);
    if (!str_is(s, n, "adapter"))
        return lerr(l, SX_EINVAL, "lora: general.type is not \"adapter\": "
                                  "the file is not a LoRA adapter");
    s = sx_gguf_get_str(g, "adapter.type", &n);
    if (!str_is(s, n, "lora"))
        return lerr(l, SX_EUNSUPPORTED, "lora: adapter.type is %s%.*s%s; "
                                        "only \"lora\" adapters are supported",
                    s ? "\"" : "", s ? (int)(n > 32 ? 32 : n) : 7,
                    s ? s : "missing", s ? "\"" : "");
    s = sx_gguf_get_str(g, "general.architecture", &n);
    if (!s)
        return lerr(l, SX_EINVAL, "lora: general.architecture is missing");
    if (!str_is(s, n, l->m->arch))
        return lerr(l, SX_EINVAL, "lora: the adapter is for architecture "
                                  "'%.*s' but the base model is '%s'",
                    (int)(n > 32 ? 32 : n), s, l->m->arch);
    memcpy(a->arch, l->m->arch, sizeof(a->arch));
    a->info.arch = a->arch;
    s = sx_gguf_get_str(g, "general.name", &n);
    if (s) {
        n = n < sizeof(a->name) - 1 ? n : sizeof(a->name) - 1;
        memcpy(a->name, s, n);
    }
    a->info.name = a->name;
    rc = sx_gguf_get_f32(g, "adapter.lora.alpha", &a->info.alpha);
    if (rc == SX_ENOTFOUND)
        a->info.alpha = 0.0f;
    else if (rc || !isfinite(a->info.alpha))
        return lerr(l, SX_EINVAL, "lora: adapter.lora.alpha is not a finite "
                                  "number");
    return 0;
}

static int bind_all(lload *l)
{
    const sx_model *m = l->m;
    int nmat = m->info.n_layer * SX_LORA_NSLOT, nt = sx_gguf_n_tensors(l->g);

    l->ta = calloc((size_t)nmat, sizeof(*l->ta));
    l->tb = calloc((size_t)nmat, sizeof(*l->tb));
    l->a->mats = calloc((size_t)nmat, sizeof(*l->a->mats));
    if (!l->ta || !l->tb || !l->a->mats)
        return lerr(l, SX_ENOMEM, "lora: out of memory");
    l->a->n_layer = m->info.n_layer;
    if (nt == 0)
        return lerr(l, SX_EINVAL, "lora: the adapter has no tensors");
    for (int i = 0; i < nt; i++) {
        const sx_gguf_tensor *t = sx_gguf_tensor_at(l->g, i);
        const sx_gguf_tensor **slot;
        int layer, s, half;

        if (parse_name(t->name, &layer, &s, &half) != 0)
            return lerr(l, SX_EUNSUPPORTED, "lora: tensor '%s' does not name "
                                            "an adaptable matrix (blk.N."
                                            "{attn_q,attn_k,attn_v,"
                                            "attn_output,ffn_gate,ffn_up,"
                                            "ffn_down}.weight.lora_a/b)",
                        t->name);
        if (layer >= m->info.n_layer)
            return lerr(l, SX_EINVAL, "lora: tensor '%s' targets layer %d but "
                                      "the base model has %d layers",
                        t->name, layer, m->info.n_layer);
        slot = half ? &l->tb[layer * SX_LORA_NSLOT + s]
                    : &l->ta[layer * SX_LORA_NSLOT + s];
        if (*slot)
            return lerr(l, SX_EINVAL, "lora: tensor '%s' appears twice",
                        t->name);
        *slot = t;
    }
    for (int i = 0; i < nmat; i++)
        if ((l->ta[i] || l->tb[i]) &&
            bind_pair(l, i / SX_LORA_NSLOT, i % SX_LORA_NSLOT))
            return l->rc;
    return 0;
}

static sx_lora *load_common(const sx_model *m, sx_gguf *g, int *rc, char *err,
                            size_t errlen)
{
    lload l = {.m = m, .g = g, .err = err, .errlen = errlen};

    if (!g) {
        l.rc = SX_EINVAL;
        goto out;
    }
    if (!m) {
        lerr(&l, SX_EINVAL, "lora: no base model");
        goto out;
    }
    l.a = calloc(1, sizeof(*l.a));
    if (!l.a) {
        lerr(&l, SX_ENOMEM, "lora: out of memory");
        goto out;
    }
    l.a->model = m;
    l.a->info.name = l.a->name;
    l.a->info.arch = l.a->arch;
    if (read_meta(&l) == 0)
        bind_all(&l);
out:
    free(l.ta);
    free(l.tb);
    sx_gguf_close(g);
    if (rc)
        *rc = l.rc;
    if (l.rc) {
        sx_lora_free(l.a);
        return NULL;
    }
    sx_engine_log(1, "engine: loaded LoRA adapter (%d matrices, rank %d, "
                     "alpha %g, %s)",
                  l.a->info.n_matrices, l.a->info.rank,
                  (double)l.a->info.alpha, sx_ggml_type_name(l.a->info.type));
    return l.a;
}

sx_lora *sx_lora_load(const sx_model *m, const char *path, int *rc,
                      char *err, size_t errlen)
{
    return load_common(m, sx_gguf_open(path, err, errlen), rc, err, errlen);
}

sx_lora *sx_lora_load_buffer(const sx_model *m, const void *data, size_t len,
                             int *rc, char *err, size_t errlen)
{
    return load_common(m, sx_gguf_open_buffer(data, len, err, errlen), rc,
                       err, errlen);
}

void sx_lora_free(sx_lora *a)
{
    if (!a)
        return;
    if (a->mats)
        for (int i = 0; i < a->n_layer * SX_LORA_NSLOT; i++) {
            free(a->mats[i].a);
            free(a->mats[i].bt);
        }
    free(a->mats);
    free(a);
}

const sx_lora_info *sx_lora_get_info(const sx_lora *a) { return &a->info; }

/* --- the step workspace -------------------------------------------------- */

#define MAX_CALL_SLOTS 3 /* slots sharing one input: q, k, v */

struct sx_lora_ws {
    int cap_T, cap_in, cap_groups;
    int T, n_groups;
    const sx_lora **g_lora;  /* per group */
    int *g_start, *g_count;  /* into tok[] */
    int *tok;                /* chunk token indices, grouped */
    float *scale;            /* per grouped token: the user scale */
    uint8_t *xbuf;           /* MAX_CALL_SLOTS regions of T prepared rows */
    size_t xregion, xrow;    /* bytes per region, per row (the widest) */
    float *u;                /* MAX_CALL_SLOTS * T * SX_LORA_MAX_RANK */
    int *ubase;              /* phase A unit offsets, per slot * group + 1 */
};

void sx_lora_ws_free(sx_lora_ws *ws)
{
    if (!ws)
        return;
    free(ws->g_lora);
    free(ws->g_start);
    free(ws->g_count);
    free(ws->tok);
    free(ws->scale);
    free(ws->xbuf);
    free(ws->u);
    free(ws->ubase);
    free(ws);
}

static int ws_reserve(sx_lora_ws *ws, int T, int max_in)
{
    if (T <= ws->cap_T && max_in <= ws->cap_in)
        return 0;
    T = T > ws->cap_T ? T : ws->cap_T;
    max_in = max_in > ws->cap_in ? max_in : ws->cap_in;
    free(ws->g_lora);
    free(ws->g_start);
    free(ws->g_count);
    free(ws->tok);
    free(ws->scale);
    free(ws->xbuf);
    free(ws->u);
    free(ws->ubase);
    ws->xrow = ((size_t)max_in * 4 + 63) / 64 * 64;
    ws->xregion = ws->xrow * (size_t)T;
    ws->g_lora = malloc((size_t)T * sizeof(*ws->g_lora));
    ws->g_start = malloc((size_t)T * sizeof(int));
    ws->g_count = malloc((size_t)T * sizeof(int));
    ws->tok = malloc((size_t)T * sizeof(int));
    ws->scale = malloc((size_t)T * sizeof(float));
    ws->xbuf = balloc(ws->xregion * MAX_CALL_SLOTS);
    ws->u = balloc((size_t)MAX_CALL_SLOTS * (size_t)T * SX_LORA_MAX_RANK *
                   sizeof(float));
    ws->ubase = malloc(((size_t)MAX_CALL_SLOTS * (size_t)T + 1) * sizeof(int));
    ws->cap_T = ws->cap_groups = T;
    ws->cap_in = max_in;
    if (!ws->g_lora || !ws->g_start || !ws->g_count || !ws->tok ||
        !ws->scale || !ws->xbuf || !ws->u || !ws->ubase) {
        ws->cap_T = ws->cap_in = 0;
        return SX_ENOMEM;
    }
    return 0;
}

int sx_lora_plan(sx_lora_ws **wsp, int T, const sx_lora *const *t_lora,
                 const float *t_scale, int max_in)
{
    sx_lora_ws *ws = *wsp;
    int any = 0, n = 0;

    for (int t = 0; t < T && !any; t++)
        any = t_lora[t] != NULL;
    if (!any) {
        if (ws)
            ws->n_groups = 0;
        return 0;
    }
    if (!ws) {
        ws = calloc(1, sizeof(*ws));
        if (!ws)
            return SX_ENOMEM;
        *wsp = ws;
    }
    ws->n_groups = 0;
    if (ws_reserve(ws, T, max_in))
        return SX_ENOMEM;

    /* Distinct adapters in order of first use, then their tokens. */
    for (int t = 0; t < T; t++) {
        int g;

        if (!t_lora[t])
            continue;
        for (g = 0; g < ws->n_groups; g++)
            if (ws->g_lora[g] == t_lora[t])
                break;
        if (g == ws->n_groups) {
            ws->g_lora[g] = t_lora[t];
            ws->g_count[g] = 0;
            ws->n_groups++;
        }
        ws->g_count[g]++;
    }
    for (int g = 0; g < ws->n_groups; g++) {
        ws->g_start[g] = n;
        n += ws->g_count[g];
        ws->g_count[g] = 0;
    }
    for (int t = 0; t < T; t++) {
        int g = 0, at;

        if (!t_lora[t])
            continue;
        while (ws->g_lora[g] != t_lora[t])
            g++;
        at = ws->g_start[g] + ws->g_count[g]++;
        ws->tok[at] = t;
        ws->scale[at] = t_scale[t];
    }
    ws->T = n;
    return ws->n_groups;
}

/* --- applying ------------------------------------------------------------ */

static void bt_f32(int lo, int hi, int rank, const void *bt, size_t ld,
                   const float *u, float s, float *y)
{
    const float *b = bt;

    for (int i = lo; i < hi; i++) {
        float acc = 0.0f;

        for (int k = 0; k < rank; k++)
            acc += u[k] * b[(size_t)k * ld + (size_t)i];
        y[i] += s * acc;
    }
}

static void bt_f16(int lo, int hi, int rank, const void *bt, size_t ld,
                   const float *u, float s, float *y)
{
    const uint16_t *b = bt;

    for (int i = lo; i < hi; i++) {
        float acc = 0.0f;

        for (int k = 0; k < rank; k++)
            acc += u[k] * sx_fp16_to_f32(b[(size_t)k * ld + (size_t)i]);
        y[i] += s * acc;
    }
}

typedef struct apply_job {
    sx_lora_ws *ws;
    const sx_kernels *k;
    int layer, n;
    const int *slots;
    float *const *y;
    const int *ldy;
    int n_units;
    bool simd;
} apply_job;

static const sx_lora_mat *mat_of(const apply_job *j, int i, int g)
{
    const sx_lora *a = j->ws->g_lora[g];

    return &a->mats[j->layer * SX_LORA_NSLOT + j->slots[i]];
}

/* Phase A: u = A x for each (slot, group, row of A). */
static void phase_a(void *ctx, int ith, int nth)
{
    const apply_job *j = ctx;
    sx_lora_ws *ws = j->ws;
    int G = ws->n_groups, lo, hi, cell = 0;
    float out[SX_KERNEL_MAX_ROWS];

    sx_pool_split(j->n_units, 1, ith, nth, &lo, &hi);
    for (int unit = lo; unit < hi; unit++) {
        const sx_lora_mat *lm;
        const uint8_t *wrow, *x;
        sx_dot_fn dot;
        int i, g, kr;
        float *u;

        while (ws->ubase[cell + 1] <= unit)
            cell++;
        i = cell / G;
        g = cell % G;
        kr = unit - ws->ubase[cell];
        lm = mat_of(j, i, g);
        dot = sx_kernels_dot(j->k, lm->a_type);
        wrow = (const uint8_t *)lm->a + (size_t)kr * lm->a_row_bytes;
        x = ws->xbuf + (size_t)i * ws->xregion +
            (size_t)ws->g_start[g] * ws->xrow;
        u = ws->u + ((size_t)i * (size_t)ws->cap_T + (size_t)ws->g_start[g]) *
                        SX_LORA_MAX_RANK;
        for (int t0 = 0; t0 < ws->g_count[g]; t0 += SX_KERNEL_MAX_ROWS) {
            int nt = ws->g_count[g] - t0;

            nt = nt < SX_KERNEL_MAX_ROWS ? nt : SX_KERNEL_MAX_ROWS;
            dot(lm->n_in, wrow, x + (size_t)t0 * ws->xrow, ws->xrow, nt, out);
            for (int q = 0; q < nt; q++)
                u[(size_t)(t0 + q) * SX_LORA_MAX_RANK + kr] = out[q];
        }
    }
}

static float round_as(int type, float v)
{
    if (type == SX_GGML_F16)
        return sx_fp16_to_f32(sx_f32_to_fp16(v));
    if (type == SX_GGML_BF16)
        return sx_bf16_to_f32(sx_f32_to_bf16(v));
    return v;
}

/* Phase B: y += s' * B u, where s' = s * alpha / rank as llama.cpp
 * computes it (s alone without alpha); output rows split across threads. */
static void phase_b(void *ctx, int ith, int nth)
{
    const apply_job *j = ctx;
    sx_lora_ws *ws = j->ws;
    float w[SX_LORA_MAX_RANK];

    for (int i = 0; i < j->n; i++) {
        int n_out = 0, lo, hi;

        for (int g = 0; g < ws->n_groups && !n_out; g++)
            if (mat_of(j, i, g)->rank)
                n_out = mat_of(j, i, g)->n_out;
        if (!n_out)
            continue;
        sx_pool_split(n_out, 16, ith, nth, &lo, &hi);
        if (lo >= hi)
            continue;
        for (int g = 0; g < ws->n_groups; g++) {
            const sx_lora_mat *lm = mat_of(j, i, g);
            sx_lora_bt_fn fn;

            if (!lm->rank)
                continue;
            if (lm->bt_type == SX_GGML_F16)
                fn = j->simd ? sx_lora_bt_f16_avx2 : bt_f16;
            else
                fn = j->simd ? sx_lora_bt_f32_avx2 : bt_f32;
            for (int q = 0; q < ws->g_count[g]; q++) {
                int at = ws->g_start[g] + q;
                const float *u = ws->u + ((size_t)i * (size_t)ws->cap_T +
                                          (size_t)at) * SX_LORA_MAX_RANK;
                float s = lm->alpha != 0.0f
                              ? ws->scale[at] * lm->alpha / (float)lm->rank
                              : ws->scale[at];
                float *y = j->y[i] + (size_t)ws->tok[at] * (size_t)j->ldy[i];

                for (int kr = 0; kr < lm->rank; kr++)
                    w[kr] = round_as(lm->u_round, u[kr]);
                fn(lo, hi, lm->rank, lm->bt, (size_t)lm->n_out, w, s, y);
            }
        }
    }
}

void sx_lora_apply(sx_lora_ws *ws, sx_pool *pool, const sx_kernels *k,
                   int layer, int n, const int *slots, const float *x,
                   int ldx, float *const *y, const int *ldy)
{
    apply_job j = {.ws = ws, .k = k, .layer = layer, .n = n, .slots = slots,
                   .y = y, .ldy = ldy,
                   .simd = strcmp(k->name, "scalar") != 0};
    int G, cell = 0;

    if (!ws || !ws->n_groups || n < 1 || n > MAX_CALL_SLOTS)
        return;
    G = ws->n_groups;

    /* Gather each group's rows in the input format of its A matrices. */
    ws->ubase[0] = 0;
    for (int i = 0; i < n; i++)
        for (int g = 0; g < G; g++, cell++) {
            const sx_lora_mat *lm = mat_of(&j, i, g);
            uint8_t *dst = ws->xbuf + (size_t)i * ws->xregion +
                           (size_t)ws->g_start[g] * ws->xrow;

            ws->ubase[cell + 1] = ws->ubase[cell] + lm->rank;
            if (!lm->rank)
                continue;
            for (int q = 0; q < ws->g_count[g]; q++)
                sx_act_prepare(k, lm->a_type,
                               x + (size_t)ws->tok[ws->g_start[g] + q] *
                                       (size_t)ldx,
                               (size_t)ldx, 1, lm->n_in,
                               dst + (size_t)q * ws->xrow);
        }
    j.n_units = ws->ubase[cell];
    if (!j.n_units)
        return;
    sx_pool_run(pool, phase_a, &j);
    sx_pool_run(pool, phase_b, &j);
}
