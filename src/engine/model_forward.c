/* The forward pass of llama/qwen2 models over a batch of sequences. All the
 * tokens of a step (every sequence's new tokens, prompts cut into chunks of
 * at most SX_CHUNK) go through each weight matrix together, so a step costs
 * about one pass over the weights however many sequences it carries. Each
 * sequence attends only to its own cached positions. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv.h"
#include "engine/lora.h"
#include "engine/model.h"
#include "engine/pool.h"

#define SX_CHUNK 128 /* tokens per forward chunk */
/* Rows of one matrix-kernel call: their weights stay in L2 while the
 * kernel walks the activation tiles. */
#define MM_ROWS 64
#define MM_TASKS 4   /* matmul tasks per thread, at most */

/* One chunk: where each token comes from and what it must produce. */
typedef struct chunk {
    sx_model *m;
    sx_pool *pool;
    sx_scratch *s;
    int T;                   /* tokens in the chunk */
    sx_seq **seq;            /* per token */
    int *pos;                /* per token */
    int32_t *tok;            /* per token */
    float **logit_out;       /* per token: destination row or NULL */
    const sx_lora **lora;    /* per token: adapter or NULL */
    float *lscale;           /* per token: adapter scale */
    int n_lora_groups;       /* adapters in this chunk (0: none) */
    float *embed_sum;        /* embed mode: n_embd sums, else NULL */
    int layer;
    float *rope;             /* per token: n_rot/2 (cos, sin) pairs */
} chunk;

static void fail_msg(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail_msg(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* --- scratch ------------------------------------------------------------- */

void sx_model_scratch_free(sx_scratch *s)
{
    free(s->x);
    free(s->h);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->ff_gate);
    free(s->ff_up);
    free(s->rows);
    free(s->act);
    free(s->scores);
    free(s->t_seq);
    free(s->t_pos);
    free(s->t_tok);
    free(s->t_out);
    free(s->t_lora);
    free(s->t_lscale);
    free(s->yrows);
    memset(s, 0, sizeof(*s));
}

static void *falloc(size_t n)
{
    return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
}

/* Bytes each matmul task may use to decode its rows once (0: none). */
static size_t mm_work_bytes(const sx_model *m, int widest)
{
    const sx_kernels *k = m->kern;

    if (!k->mat_work_bytes)
        return 0;
    return (k->mat_work_bytes(widest, MM_ROWS) + 63) / 64 * 64;
}

/* The activation area: prepared or packed activations of T rows (prepared
 * rows take at most 4 bytes a value and a block header; packed ones what
 * the table's pack_q8_bytes says), then the matmul tasks' work. */
static size_t act_prep_bytes(const sx_model *m, int T, int widest)
{
    const sx_kernels *k = m->kern;
    size_t prep = (size_t)(T + 1) * (size_t)(widest + 16) * sizeof(float);

    if (k->pack_q8_bytes && k->pack_q8_bytes(widest, T) > prep)
        prep = k->pack_q8_bytes(widest, T);
    return (prep + 63) / 64 * 64;
}

static size_t act_floats(const sx_model *m, int T, int widest, int nth)
{
    return (act_prep_bytes(m, T, widest) +
            (size_t)(MM_TASKS * nth) * mm_work_bytes(m, widest)) /
           sizeof(float);
}

/* Grows the scratch to T tokens, contexts of n_ctx positions, nth threads. */
static int scratch_reserve(sx_model *m, int T, int n_ctx, int nth)
{
    sx_scratch *s = &m->scratch;
    const sx_model_info *mi = &m->info;
    size_t E = (size_t)mi->n_embd, F = (size_t)mi->n_ff;
    size_t kvd = (size_t)(mi->n_head_kv * mi->head_dim);
    size_t widest = (E > F ? E : F);

    if (T <= s->cap_tokens && n_ctx <= s->cap_ctx && nth <= s->n_threads)
        return 0;
    if (T < s->cap_tokens)
        T = s->cap_tokens;
    if (n_ctx < s->cap_ctx)
        n_ctx = s->cap_ctx;
    if (nth < s->n_threads)
        nth = s->n_threads;
    sx_model_scratch_free(s);
    s->x = falloc((size_t)T * E);
    s->h = falloc((size_t)T * E);
    s->q = falloc((size_t)T * E);
    s->k = falloc((size_t)T * kvd);
    s->v = falloc((size_t)T * kvd);
    s->att = falloc((size_t)T * E);
    s->ff_gate = falloc((size_t)T * F);
    s->ff_up = falloc((size_t)T * F);
    s->rows = falloc((size_t)T * (size_t)m->n_rot + (size_t)T * E);
    /* Packed Q8 activations take 6 bytes a value per pair of rows. */
    s->act = falloc(act_floats(m, T, (int)widest, nth));
    s->scores = falloc((size_t)nth * (size_t)n_ctx);
    s->t_seq = malloc((size_t)T * sizeof(*s->t_seq));
    s->t_pos = malloc((size_t)T * sizeof(*s->t_pos));
    s->t_tok = malloc((size_t)T * sizeof(*s->t_tok));
    s->t_out = malloc((size_t)T * sizeof(*s->t_out));
    s->yrows = malloc((size_t)T * sizeof(*s->yrows));
    s->t_lora = malloc((size_t)T * sizeof(*s->t_lora));
    s->t_lscale = malloc((size_t)T * sizeof(*s->t_lscale));
    if (!s->x || !s->h || !s->q || !s->k || !s->v || !s->att ||
        !s->ff_gate || !s->ff_up || !s->rows || !s->act || !s->scores ||
        !s->t_seq || !s->t_pos || !s->t_tok || !s->t_out || !s->yrows ||
        !s->t_lora || !s->t_lscale) {
        sx_model_scratch_free(s);
        return SX_ENOMEM;
    }
    s->cap_tokens = T;
    s->cap_ctx = n_ctx;
    s->n_threads = nth;
    return 0;
}

/* --- elementwise steps --------------------------------------------------- */

/* y = x / sqrt(mean(x^2) + eps) * w, summing squares in double as ggml. */
static void rmsnorm(float *y, const float *x, const float *w, int n,
                    float eps)
{
    double sum = 0.0;
    float scale;

    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    scale = 1.0f / sqrtf((float)(sum / n) + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

/* cos/sin of pos * base^(-2i/n_rot) (divided by the optional frequency
 * factor), built by repeated multiplication as ggml does. */
static void rope_table(const sx_model *m, int pos, float *cs)
{
    float theta_scale = powf(m->info.rope_base, -2.0f / (float)m->n_rot);
    float theta = (float)pos;

    for (int i = 0; i < m->n_rot / 2; i++) {
        float t = m->rope_freqs ? theta / m->rope_freqs[i] : theta;

        cs[2 * i] = cosf(t);
        cs[2 * i + 1] = sinf(t);
        theta *= theta_scale;
    }
}

/* Rotates the first n_rot values of one head: adjacent pairs (NORM, llama)
 * or pairs half a rotation apart (NEOX, qwen2). */
static void rope_apply(const sx_model *m, float *v, const float *cs)
{
    int half = m->n_rot / 2;

    for (int i = 0; i < half; i++) {
        int a = m->rope_mode == SX_ROPE_NORM ? 2 * i : i;
        int b = m->rope_mode == SX_ROPE_NORM ? 2 * i + 1 : i + half;
        float x0 = v[a], x1 = v[b], c = cs[2 * i], s = cs[2 * i + 1];

        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

/* --- matmul -------------------------------------------------------------- */

typedef struct mm_job {
    const sx_wmat *w;
    sx_dot_fn dot;
    sx_mat_fn mat;           /* matrix kernel (packed activations) or NULL */
    void (*axpy)(int, float, const float *, float *);
    uint8_t *work;           /* per task: work_bytes for the matrix kernel */
    size_t work_bytes;
    const uint8_t *act;
    size_t act_bytes;        /* per activation row (dot path) */
    int nx;
    float *y;                /* row j of the output at y + j * ldy */
    size_t ldy;
    float *const *yrows;     /* or one pointer per row (logits) */
    const float *bias;
    int accumulate;          /* y += W x instead of y = W x */
} mm_job;


/* Output rows r0..r0+nr of activation rows x0..x0+nx from out[j][r]. */
static void mm_store(const mm_job *j, int r0, int nr, int x0, int nx,
                     const float *out, size_t ldo)
{
    for (int i = 0; i < nx; i++) {
        float *y = (j->yrows ? j->yrows[x0 + i]
                             : j->y + (size_t)(x0 + i) * j->ldy) + r0;
        const float *o = out + (size_t)i * ldo;
        const float *b = j->bias ? j->bias + r0 : NULL;

        /* this runs for every output: the vector axpy (1 * v is v) */
        if (!j->accumulate) {
            memcpy(y, o, (size_t)nr * sizeof(float));
            if (b)
                j->axpy(nr, 1.0f, b, y);
        } else if (!b) {
            j->axpy(nr, 1.0f, o, y);
        } else {
            for (int r = 0; r < nr; r++)
                y[r] += o[r] + b[r];
        }
    }
}

static void mm_worker(void *ctx, int ith, int nth)
{
    const mm_job *j = ctx;
    const sx_wmat *w = j->w;
    float out[SX_CHUNK * MM_ROWS];
    int lo, hi;

    sx_pool_split(w->n_out, 16, ith, nth, &lo, &hi);
    if (j->mat) {
        for (int r = lo; r < hi; r += MM_ROWS) {
            int nr = hi - r < MM_ROWS ? hi - r : MM_ROWS;

            j->mat(w->n_in, w->data + (size_t)r * w->row_bytes, w->row_bytes,
                   nr, j->act, j->nx, out, MM_ROWS,
                   j->work_bytes ? j->work + (size_t)ith * j->work_bytes
                                 : NULL);
            mm_store(j, r, nr, 0, j->nx, out, MM_ROWS);
        }
        return;
    }
    for (int r = lo; r < hi; r++) {
        const uint8_t *wr = w->data + (size_t)r * w->row_bytes;

        for (int x0 = 0; x0 < j->nx; x0 += SX_KERNEL_MAX_ROWS) {
            int n = j->nx - x0 < SX_KERNEL_MAX_ROWS ? j->nx - x0
                                                     : SX_KERNEL_MAX_ROWS;

            j->dot(w->n_in, wr, j->act + (size_t)x0 * j->act_bytes,
                   j->act_bytes, n, out);
            mm_store(j, r, 1, x0, n, out, 1);
        }
    }
}

/* Prepared activations are reused while the input and format stay the
 * same (q, k and v share one preparation). */
typedef struct act_cache {
    const float *src;
    int fmt, n, rows;        /* fmt: an sx_act_format, or -1 for packed */
} act_cache;

static void matmul(chunk *c, act_cache *ac, const sx_wmat *w, const float *x,
                   int rows, float *y, float *const *yrows,
                   const float *bias, int accumulate)
{
    const sx_kernels *k = c->m->kern;
    sx_mat_fn mat = sx_kernels_mat(k, w->type);
    int fmt = mat ? -1 : sx_act_format(w->type), tasks;
    mm_job j = {
        .w = w,
        .dot = sx_kernels_dot(k, w->type),
        .mat = mat,
        .axpy = k->axpy_f32,
        .act = c->s->act,
        .act_bytes = sx_act_row_bytes(w->type, w->n_in),
        .nx = rows,
        .y = y,
        .ldy = (size_t)w->n_out,
        .yrows = yrows,
        .bias = bias,
        .accumulate = accumulate,
    };

    if (ac->src != x || ac->fmt != fmt || ac->n != w->n_in ||
        ac->rows != rows) {
        if (mat)
            k->pack_q8(x, (size_t)w->n_in, rows, w->n_in, c->s->act);
        else
            sx_act_prepare(k, w->type, x, (size_t)w->n_in, rows, w->n_in,
                           c->s->act);
        *ac = (act_cache){.src = x, .fmt = fmt, .n = w->n_in, .rows = rows};
    }
    /* A few tasks per thread, so that threads the OS runs late (the
     * machine is shared) leave their part to the others. */
    tasks = (w->n_out + MM_ROWS - 1) / MM_ROWS;
    if (tasks > MM_TASKS * sx_pool_size(c->pool))
        tasks = MM_TASKS * sx_pool_size(c->pool);
    if (mat) {
        const sx_model_info *mi = &c->m->info;
        int widest = mi->n_embd > mi->n_ff ? mi->n_embd : mi->n_ff;

        j.work_bytes = mm_work_bytes(c->m, widest);
        j.work = (uint8_t *)c->s->act +
                 act_prep_bytes(c->m, c->s->cap_tokens, widest);
    }
    sx_pool_run_tasks(c->pool, tasks, mm_worker, &j);
}

/* --- attention ----------------------------------------------------------- */

static void attn_worker(void *ctx, int ith, int nth)
{
    const chunk *c = ctx;
    const sx_model_info *mi = &c->m->info;
    sx_dot_fn dot = c->m->kern->dot_f32;
    void (*axpy)(int, float, const float *, float *) = c->m->kern->axpy_f32;
    int hd = mi->head_dim, group = mi->n_head / mi->n_head_kv;
    int units = c->T * mi->n_head, lo, hi;
    size_t kv_stride = (size_t)(mi->n_head_kv * hd) * sizeof(float);
    float *sc = c->s->scores + (size_t)ith * (size_t)c->s->cap_ctx;
    float scale = 1.0f / sqrtf((float)hd);

    sx_pool_split(units, 1, ith, nth, &lo, &hi);
    for (int u = lo; u < hi; u++) {
        int t = u / mi->n_head, h = u % mi->n_head, kvh = h / group;
        const float *q = c->s->q + (size_t)t * mi->n_embd + (size_t)h * hd;
        float *out = c->s->att + (size_t)t * mi->n_embd + (size_t)h * hd;
        const sx_seq *seq = c->seq[t];
        int n = c->pos[t] + 1;
        float max = -INFINITY, sum = 0.0f;

        /* q . k for up to 8 cached positions of one page per kernel call
         * (positions of a page are kv_stride bytes apart). */
        for (int p = 0; p < n;) {
            int cnt = SX_KV_PAGE - p % SX_KV_PAGE;

            cnt = cnt < n - p ? cnt : n - p;
            cnt = cnt < SX_KERNEL_MAX_ROWS ? cnt : SX_KERNEL_MAX_ROWS;
            dot(hd, q, sx_kv_k(seq, c->layer, p) + (size_t)kvh * hd,
                kv_stride, cnt, sc + p);
            p += cnt;
        }
        for (int p = 0; p < n; p++) {
            sc[p] *= scale;
            max = sc[p] > max ? sc[p] : max;
        }
        for (int p = 0; p < n; p++) {
            sc[p] = expf(sc[p] - max);
            sum += sc[p];
        }
        memset(out, 0, (size_t)hd * sizeof(float));
        for (int p = 0; p < n; p++)
            axpy(hd, sc[p] / sum,
                 sx_kv_v(seq, c->layer, p) + (size_t)kvh * hd, out);
    }
}

/* --- one chunk ----------------------------------------------------------- */

/* y[t] += b for T rows of n (b NULL: nothing). */
static void add_bias(float *y, const float *b, int T, int n)
{
    if (!b)
        return;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++)
            y[(size_t)t * (size_t)n + (size_t)i] += b[i];
}

static void add_rows(float *x, const float *d, int T, int n)
{
    for (size_t i = 0; i < (size_t)T * (size_t)n; i++)
        x[i] += d[i];
}

/* gate = silu(gate) * up over the chunk's T x n_ff values, part ith of nth
 * (the threads share the work from SWIGLU_SPLIT values on: prefill). */
#define SWIGLU_SPLIT 16384
static void swiglu_worker(void *ctx, int ith, int nth)
{
    const chunk *c = ctx;
    int lo, hi;

    sx_pool_split(c->T * c->m->info.n_ff, 16, ith, nth, &lo, &hi);
    c->m->kern->silu_mul_f32(hi - lo, c->s->ff_gate + lo, c->s->ff_up + lo);
}

/* The LoRA update of one matrix whose input x has rows ldx floats apart. */
static void lora_one(chunk *c, int slot, const float *x, int ldx, float *y,
                     int ldy)
{
    float *const ys[1] = {y};

    sx_lora_apply(c->m->lora_ws, c->pool, c->m->kern, c->layer, 1, &slot, x,
                  ldx, ys, &ldy);
}

static void forward_layer(chunk *c, const sx_layer *L)
{
    const sx_model *m = c->m;
    const sx_model_info *mi = &m->info;
    sx_scratch *s = c->s;
    int E = mi->n_embd, F = mi->n_ff, T = c->T, hd = mi->head_dim;
    int kvd = mi->n_head_kv * hd;
    bool lora = c->n_lora_groups > 0;
    act_cache ac = {0};

    /* Attention: q, k, v of the normed input; rope; keys/values to cache. */
    for (int t = 0; t < T; t++)
        rmsnorm(s->h + (size_t)t * E, s->x + (size_t)t * E, L->attn_norm, E,
                mi->norm_eps);
    if (!lora) {
        matmul(c, &ac, &L->wq, s->h, T, s->q, NULL, L->bq, 0);
        matmul(c, &ac, &L->wk, s->h, T, s->k, NULL, L->bk, 0);
        matmul(c, &ac, &L->wv, s->h, T, s->v, NULL, L->bv, 0);
    } else {
        /* (W x + delta) + b, in llama.cpp's order (the sums feed Q8
         * roundings, where the order of two additions can show). */
        static const int qkv[3] = {SX_LORA_Q, SX_LORA_K, SX_LORA_V};
        float *const ys[3] = {s->q, s->k, s->v};
        const int ld[3] = {E, kvd, kvd};

        matmul(c, &ac, &L->wq, s->h, T, s->q, NULL, NULL, 0);
        matmul(c, &ac, &L->wk, s->h, T, s->k, NULL, NULL, 0);
        matmul(c, &ac, &L->wv, s->h, T, s->v, NULL, NULL, 0);
        sx_lora_apply(m->lora_ws, c->pool, m->kern, c->layer, 3, qkv, s->h, E,
                      ys, ld);
        add_bias(s->q, L->bq, T, E);
        add_bias(s->k, L->bk, T, kvd);
        add_bias(s->v, L->bv, T, kvd);
    }
    for (int t = 0; t < T; t++) {
        const float *cs = c->rope + (size_t)t * (size_t)m->n_rot;
        float *q = s->q + (size_t)t * E, *k = s->k + (size_t)t * kvd;

        for (int h = 0; h < mi->n_head; h++)
            rope_apply(m, q + (size_t)h * hd, cs);
        for (int h = 0; h < mi->n_head_kv; h++)
            rope_apply(m, k + (size_t)h * hd, cs);
        memcpy(sx_kv_k(c->seq[t], c->layer, c->pos[t]), k,
               (size_t)kvd * sizeof(float));
        memcpy(sx_kv_v(c->seq[t], c->layer, c->pos[t]),
               s->v + (size_t)t * kvd, (size_t)kvd * sizeof(float));
    }
    sx_pool_run(c->pool, attn_worker, c);
    if (!lora) {
        matmul(c, &ac, &L->wo, s->att, T, s->x, NULL, NULL, 1);
    } else {
        /* x + (Wo a + delta): the product goes through s->q (free now). */
        matmul(c, &ac, &L->wo, s->att, T, s->q, NULL, NULL, 0);
        lora_one(c, SX_LORA_O, s->att, E, s->q, E);
        add_rows(s->x, s->q, T, E);
    }

    /* Feed-forward: x += down(silu(gate(h)) * up(h)). */
    for (int t = 0; t < T; t++)
        rmsnorm(s->h + (size_t)t * E, s->x + (size_t)t * E, L->ffn_norm, E,
                mi->norm_eps);
    matmul(c, &ac, &L->gate, s->h, T, s->ff_gate, NULL, NULL, 0);
    matmul(c, &ac, &L->up, s->h, T, s->ff_up, NULL, NULL, 0);
    if (lora) {
        static const int gu[2] = {SX_LORA_GATE, SX_LORA_UP};
        float *const ys[2] = {s->ff_gate, s->ff_up};
        const int ld[2] = {F, F};

        sx_lora_apply(m->lora_ws, c->pool, m->kern, c->layer, 2, gu, s->h, E,
                      ys, ld);
    }
    if ((size_t)T * (size_t)F >= SWIGLU_SPLIT)
        sx_pool_run(c->pool, swiglu_worker, c);
    else
        swiglu_worker(c, 0, 1);
    if (!lora) {
        matmul(c, &ac, &L->down, s->ff_gate, T, s->x, NULL, NULL, 1);
    } else {
        matmul(c, &ac, &L->down, s->ff_gate, T, s->q, NULL, NULL, 0);
        lora_one(c, SX_LORA_DOWN, s->ff_gate, F, s->q, E);
        add_rows(s->x, s->q, T, E);
    }
}

static int forward_chunk(chunk *c, char *err, size_t errlen)
{
    sx_model *m = c->m;
    const sx_model_info *mi = &m->info;
    sx_scratch *s = c->s;
    int E = mi->n_embd, n_out = 0;
    float **yrows = s->yrows;
    act_cache ac = {0};

    /* Tokens grouped by adapter, token embeddings, rope table per token. */
    c->n_lora_groups = sx_lora_plan(&m->lora_ws, c->T, c->lora, c->lscale,
                                    mi->n_embd > mi->n_ff ? mi->n_embd
                                                          : mi->n_ff);
    if (c->n_lora_groups < 0) {
        fail_msg(err, errlen, "engine: out of memory for the LoRA step");
        return c->n_lora_groups;
    }
    c->rope = s->rows + (size_t)c->T * E;
    for (int t = 0; t < c->T; t++) {
        const uint8_t *row = m->tok_embd +
                             (size_t)c->tok[t] * m->tok_embd_row_bytes;

        if (sx_dequantize_row(m->tok_embd_type, row, s->x + (size_t)t * E,
                              E)) {
            fail_msg(err, errlen, "engine: token_embd type %s is not "
                                  "supported",
                     sx_ggml_type_name(m->tok_embd_type));
            return SX_EUNSUPPORTED;
        }
        rope_table(m, c->pos[t], c->rope + (size_t)t * (size_t)m->n_rot);
    }

    for (c->layer = 0; c->layer < mi->n_layer; c->layer++)
        forward_layer(c, &m->layers[c->layer]);

    /* Final norm of the rows that want logits (packed), then the output. */
    for (int t = 0; t < c->T; t++) {
        if (c->embed_sum) {
            float *h = s->h;

            rmsnorm(h, s->x + (size_t)t * E, m->output_norm, E, mi->norm_eps);
            for (int i = 0; i < E; i++)
                c->embed_sum[i] += h[i];
        }
        if (!c->logit_out[t])
            continue;
        rmsnorm(s->rows + (size_t)n_out * E, s->x + (size_t)t * E,
                m->output_norm, E, mi->norm_eps);
        yrows[n_out++] = c->logit_out[t];
    }
    if (n_out)
        matmul(c, &ac, &m->output, s->rows, n_out, NULL, yrows, NULL, 0);
    return 0;
}

/* --- batch steps --------------------------------------------------------- */

/* Checks every item before anything changes; returns the longest context. */
static int check_items(sx_model *m, sx_batch_item *items, int n_items,
                       int *max_ctx, char *err, size_t errlen)
{
    *max_ctx = 0;
    if (n_items < 1 || !items) {
        fail_msg(err, errlen, "engine: empty batch");
        return SX_EINVAL;
    }
    for (int i = 0; i < n_items; i++) {
        sx_batch_item *it = &items[i];
        int pos;

        if (!it->seq || it->seq->kv->model != m) {
            fail_msg(err, errlen, "engine: item %d has no sequence or one "
                                  "whose cache belongs to another model", i);
            return SX_EINVAL;
        }
        pos = it->pos < 0 ? it->seq->len : it->pos;
        if (it->n_tokens < 1 || !it->tokens || pos > it->seq->len ||
            (int64_t)pos + it->n_tokens > (int64_t)1 << 24) {
            fail_msg(err, errlen, "engine: item %d has %d tokens at position "
                                  "%d of a sequence of %d",
                     i, it->n_tokens, pos, it->seq->len);
            return SX_EINVAL;
        }
        if (it->logits < SX_LOGITS_NONE || it->logits > SX_LOGITS_ALL ||
            (it->logits != SX_LOGITS_NONE && !it->out)) {
            fail_msg(err, errlen, "engine: item %d: bad logits mode or no "
                                  "output buffer", i);
            return SX_EINVAL;
        }
        if (it->adapter && (it->adapter->model != m ||
                            !isfinite(it->lora_scale))) {
            fail_msg(err, errlen, "engine: item %d: %s", i,
                     it->adapter->model != m
                         ? "its LoRA adapter was loaded for another model"
                         : "its LoRA scale is not a finite number");
            return SX_EINVAL;
        }
        for (int t = 0; t < it->n_tokens; t++)
            if (it->tokens[t] < 0 || it->tokens[t] >= m->info.n_vocab) {
                fail_msg(err, errlen, "engine: item %d: token id %d is "
                                      "outside the vocabulary (0..%d)",
                         i, it->tokens[t], m->info.n_vocab - 1);
                return SX_EINVAL;
            }
        for (int j = 0; j < i; j++)
            if (items[j].seq == it->seq) {
                fail_msg(err, errlen, "engine: items %d and %d share a "
                                      "sequence", j, i);
                return SX_EINVAL;
            }
        if (pos + it->n_tokens > *max_ctx)
            *max_ctx = pos + it->n_tokens;
    }

    /* Room in each cache pool, counting pages freed by rewinds. */
    for (int i = 0; i < n_items; i++) {
        sx_kv *kv = items[i].seq->kv;
        long net = 0;
        bool first = true;

        for (int j = 0; j < n_items && first; j++)
            if (items[j].seq->kv == kv && j < i)
                first = false;
        if (!first)
            continue;
        for (int j = i; j < n_items; j++) {
            const sx_seq *s = items[j].seq;
            int pos = items[j].pos < 0 ? s->len : items[j].pos;

            if (s->kv == kv)
                net += (pos + items[j].n_tokens + SX_KV_PAGE - 1) /
                       SX_KV_PAGE - s->n_pages;
        }
        if (net > kv->n_free) {
            fail_msg(err, errlen, "engine: the KV cache is full (%ld pages "
                                  "needed, %d free)", net, kv->n_free);
            return SX_ELIMIT;
        }
    }
    return 0;
}

/* Runs items through the model; embed_sum (embed mode) gathers hidden rows. */
static int run_batch(sx_model *m, sx_pool *pool, sx_batch_item *items,
                     int n_items, float *embed_sum, char *err, size_t errlen)
{
    int max_ctx, total = 0, rc, item = 0, off = 0;
    chunk c = {.m = m, .pool = pool, .s = &m->scratch,
               .embed_sum = embed_sum};

    rc = check_items(m, items, n_items, &max_ctx, err, errlen);
    if (rc)
        return rc;
    for (int i = 0; i < n_items; i++)
        total += items[i].n_tokens;
    rc = scratch_reserve(m, total < SX_CHUNK ? total : SX_CHUNK, max_ctx,
                         sx_pool_size(pool));
    if (rc) {
        fail_msg(err, errlen, "engine: out of memory for the step scratch");
        return rc;
    }

    /* Cut back rewound sequences, then take the pages (checked above). */
    for (int i = 0; i < n_items; i++) {
        sx_batch_item *it = &items[i];

        if (it->pos < 0)
            it->pos = it->seq->len;
        sx_seq_truncate(it->seq, it->pos);
    }
    for (int i = 0; i < n_items; i++)
        if ((rc = sx_seq_reserve(items[i].seq,
                                 items[i].pos + items[i].n_tokens))) {
            fail_msg(err, errlen, "engine: out of memory for page tables");
            return rc;
        }

    /* Chunks of up to SX_CHUNK tokens, in item order. */
    c.seq = c.s->t_seq;
    c.pos = c.s->t_pos;
    c.tok = c.s->t_tok;
    c.logit_out = c.s->t_out;
    c.lora = c.s->t_lora;
    c.lscale = c.s->t_lscale;
    while (item < n_items) {
        c.T = 0;
        while (item < n_items && c.T < SX_CHUNK) {
            sx_batch_item *it = &items[item];
            int t = c.T++;
            size_t nv = (size_t)m->info.n_vocab;

            c.seq[t] = it->seq;
            c.pos[t] = it->pos + off;
            c.tok[t] = it->tokens[off];
            c.logit_out[t] = NULL;
            c.lora[t] = it->adapter;
            c.lscale[t] = it->lora_scale;
            if (it->logits == SX_LOGITS_ALL)
                c.logit_out[t] = it->out + (size_t)off * nv;
            else if (it->logits == SX_LOGITS_LAST && off == it->n_tokens - 1)
                c.logit_out[t] = it->out;
            if (++off == it->n_tokens) {
                it->seq->len = it->pos + it->n_tokens;
                item++;
                off = 0;
            }
        }
        if ((rc = forward_chunk(&c, err, errlen)))
            return rc;
    }
    return 0;
}

int sx_engine_decode(sx_model *m, sx_pool *pool, sx_batch_item *items,
                     int n_items, char *err, size_t errlen)
{
    int rc;

    pthread_mutex_lock(&m->lock);
    rc = run_batch(m, pool, items, n_items, NULL, err, errlen);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int sx_engine_embed(sx_model *m, sx_pool *pool, sx_seq *scratch,
                    const int32_t *tokens, int n_tokens, float *out,
                    char *err, size_t errlen)
{
    sx_batch_item it = {.seq = scratch, .tokens = tokens,
                        .n_tokens = n_tokens, .pos = 0};
    int E = m->info.n_embd, rc;
    double norm = 0.0;

    if (!scratch) {
        fail_msg(err, errlen, "engine: embed needs a scratch sequence");
        return SX_EINVAL;
    }
    memset(out, 0, (size_t)E * sizeof(float));
    pthread_mutex_lock(&m->lock);
    sx_seq_reset(scratch);
    rc = run_batch(m, pool, &it, 1, out, err, errlen);
    sx_seq_reset(scratch);
    pthread_mutex_unlock(&m->lock);
    if (rc)
        return rc;

    /* Mean over positions, then unit length (the mean's scale cancels). */
    for (int i = 0; i < E; i++)
        norm += (double)out[i] * out[i];
    norm = sqrt(norm);
    for (int i = 0; i < E; i++)
        out[i] = norm > 0.0 ? (float)(out[i] / norm) : 0.0f;
    return 0;
}
