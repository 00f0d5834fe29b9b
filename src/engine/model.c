/* Model loading: reads the hyperparameters of a llama or qwen2 GGUF file,
 * binds every weight tensor (checking its shape and type), and widens the
 * small vectors (norms, biases) to floats. The big matrices stay in the
 * mapping; nothing is copied. Also the engine's log callback. */
#include "engine/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"
#include "engine/lora.h"
#include "engine/quant.h"

static sx_engine_log_fn log_fn;
static void *log_user;

void sx_engine_set_log(sx_engine_log_fn fn, void *user)
{
    log_user = user;
    log_fn = fn;
}

void sx_engine_log(int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!log_fn)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_fn(log_user, level, msg);
}

const char *sx_engine_kernels(void) { return sx_kernels_best()->name; }

/* Loader state: the model being built and where its first error goes. */
typedef struct loader {
    sx_model *m;
    char *err;
    size_t errlen;
    int rc;
} loader;

/* Records a failure; the first one is the one reported. */
static int lfail(loader *l, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int lfail(loader *l, int rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rc = sx_errmsg_vfirst(&l->rc, l->err, l->errlen, rc, fmt, ap);
    va_end(ap);
    return rc;
}

static int is_computable(int type)
{
    return type == SX_GGML_F32 || type == SX_GGML_F16 ||
           type == SX_GGML_BF16 || type == SX_GGML_Q8_0 ||
           type == SX_GGML_Q4_0;
}

/* Finds a tensor and checks its shape (ne1 == 0: a vector). */
static const sx_gguf_tensor *need_tensor(loader *l, const char *name,
                                         int64_t ne0, int64_t ne1,
                                         bool optional)
{
    const sx_gguf_tensor *t = sx_gguf_find_tensor(l->m->gguf, name);
    bool ok;

    if (!t) {
        if (!optional)
            lfail(l, SX_EINVAL, "model: tensor '%s' is missing", name);
        return NULL;
    }
    ok = ne1 ? (t->n_dims == 2 && t->ne[0] == ne0 && t->ne[1] == ne1)
             : (t->n_dims == 1 && t->ne[0] == ne0);
    if (!ok) {
        lfail(l, SX_EINVAL, "model: tensor '%s' has shape [%lld, %lld], "
                            "expected [%lld, %lld]",
              name, (long long)t->ne[0], (long long)t->ne[1], (long long)ne0,
              (long long)(ne1 ? ne1 : 1));
        return NULL;
    }
    if (!is_computable(t->type)) {
        lfail(l, SX_EUNSUPPORTED, "model: tensor '%s' has type %s, which the "
                                  "engine does not compute (it computes f32, "
                                  "f16, bf16, q8_0 and q4_0)",
              name, sx_ggml_type_name(t->type));
        return NULL;
    }
    return t;
}

static float *load_vector(loader *l, const char *name, int n, bool optional)
{
    const sx_gguf_tensor *t = need_tensor(l, name, n, 0, optional);
    float *v;

    if (!t)
        return NULL;
    v = malloc((size_t)n * sizeof(float));
    if (!v || (t->type != SX_GGML_F32 && t->type != SX_GGML_F16 &&
               t->type != SX_GGML_BF16)) {
        if (v)
            lfail(l, SX_EUNSUPPORTED, "model: vector '%s' has type %s "
                                      "(f32, f16 or bf16 expected)",
                  name, sx_ggml_type_name(t->type));
        else
            lfail(l, SX_ENOMEM, "model: out of memory");
        free(v);
        return NULL;
    }
    sx_dequantize_row(t->type, t->data, v, n);
    return v;
}

static void load_matrix(loader *l, sx_wmat *w, const char *name, int n_in,
                        int n_out)
{
    const sx_gguf_tensor *t = need_tensor(l, name, n_in, n_out, false);

    if (!t)
        return;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->row_bytes = (size_t)n_in / (size_t)sx_ggml_block_size(t->type) *
                   (size_t)sx_ggml_type_size(t->type);
    w->data = t->data;
    w->name = t->name;
}

/* Reads {arch}.<key> as a positive int. */
static int hparam(loader *l, const char *key, int *out, int dflt)
{
    char full[128];
    uint32_t v;
    int rc;

    snprintf(full, sizeof(full), "%s.%s", l->m->arch, key);
    rc = sx_gguf_get_u32(l->m->gguf, full, &v);
    if (rc == SX_ENOTFOUND && dflt >= 0) {
        *out = dflt;
        return 0;
    }
    if (rc == SX_ENOTFOUND)
        return lfail(l, SX_EINVAL, "model: metadata '%s' is missing", full);
    if (rc || v == 0 || v > (1u << 24))
        return lfail(l, SX_EINVAL, "model: metadata '%s' is not a positive "
                                   "integer below 2^24", full);
    *out = (int)v;
    return 0;
}

static float fparam(loader *l, const char *key, float dflt)
{
    char full[128];
    float v;

    snprintf(full, sizeof(full), "%s.%s", l->m->arch, key);
    if (sx_gguf_get_f32(l->m->gguf, full, &v) != 0)
        return dflt;
    return v;
}

static int read_hparams(loader *l)
{
    sx_model *m = l->m;
    sx_model_info *mi = &m->info;
    const sx_gguf *g = m->gguf;
    const char *s;
    size_t n;
    int key_len, val_len;
    uint32_t u;
    bool b;

    s = sx_gguf_get_str(g, "general.type", &n);
    if (s && n == 7 && memcmp(s, "adapter", 7) == 0)
        return lfail(l, SX_EINVAL, "model: the file is a LoRA adapter, not a "
                                   "model");
    s = sx_gguf_get_str(g, "general.architecture", &n);
    if (!s)
        return lfail(l, SX_EINVAL, "model: general.architecture is missing");
    if (!((n == 5 && memcmp(s, "llama", 5) == 0) ||
          (n == 5 && memcmp(s, "qwen2", 5) == 0)))
        return lfail(l, SX_EUNSUPPORTED, "model: architecture '%.*s' is not "
                                         "supported (llama and qwen2 are)",
                     (int)(n > 64 ? 64 : n), s);
    memcpy(m->arch, s, n);
    mi->arch = m->arch;
    m->rope_mode = m->arch[0] == 'q' ? SX_ROPE_NEOX : SX_ROPE_NORM;
    s = sx_gguf_get_str(g, "general.name", &n);
    if (s) {
        n = n < sizeof(m->name) - 1 ? n : sizeof(m->name) - 1;
        memcpy(m->name, s, n);
    }
    mi->name = m->name;

    if (hparam(l, "embedding_length", &mi->n_embd, -1) ||
        hparam(l, "block_count", &mi->n_layer, -1) ||
        hparam(l, "attention.head_count", &mi->n_head, -1) ||
        hparam(l, "attention.head_count_kv", &mi->n_head_kv, mi->n_head) ||
        hparam(l, "feed_forward_length", &mi->n_ff, -1) ||
        hparam(l, "context_length", &mi->n_ctx_train, 2048))
        return l->rc;
    if (mi->n_embd % mi->n_head || mi->n_head % mi->n_head_kv)
        return lfail(l, SX_EINVAL, "model: %d heads do not divide n_embd %d "
                                   "or are not a multiple of %d kv heads",
                     mi->n_head, mi->n_embd, mi->n_head_kv);
    mi->head_dim = mi->n_embd / mi->n_head;
    if (hparam(l, "attention.key_length", &key_len, mi->head_dim) ||
        hparam(l, "attention.value_length", &val_len, mi->head_dim) ||
        hparam(l, "rope.dimension_count", &m->n_rot, mi->head_dim))
        return l->rc;
    if (key_len != mi->head_dim || val_len != mi->head_dim)
        return lfail(l, SX_EUNSUPPORTED, "model: head size %d/%d differs from "
                                         "n_embd/n_head = %d",
                     key_len, val_len, mi->head_dim);
    if (m->n_rot > mi->head_dim || m->n_rot % 2)
        return lfail(l, SX_EINVAL, "model: rope.dimension_count %d is odd or "
                                   "larger than the head size %d",
                     m->n_rot, mi->head_dim);
    mi->rope_base = fparam(l, "rope.freq_base", 10000.0f);
    mi->norm_eps = fparam(l, "attention.layer_norm_rms_epsilon",
                          m->arch[0] == 'q' ? 1e-6f : 1e-5f);
    if (!(mi->rope_base > 0.0f) || !(mi->norm_eps >= 0.0f))
        return lfail(l, SX_EINVAL, "model: rope base or rms epsilon invalid");
    {
        char key[64];
        float f;

        snprintf(key, sizeof(key), "%s.rope.scaling.type", m->arch);
        s = sx_gguf_get_str(g, key, &n);
        snprintf(key, sizeof(key), "%s.rope.scaling.factor", m->arch);
        if (s && !(n == 4 && memcmp(s, "none", 4) == 0) &&
            !(sx_gguf_get_f32(g, key, &f) == 0 && f == 1.0f))
            return lfail(l, SX_EUNSUPPORTED, "model: rope scaling '%.*s' is "
                                             "not supported",
                         (int)(n > 32 ? 32 : n), s);
    }

    mi->bos = sx_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u) ? -1
                                                                    : (int)u;
    mi->eos = sx_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u) ? -1
                                                                    : (int)u;
    s = sx_gguf_get_str(g, "tokenizer.ggml.model", &n);
    if (sx_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == 0)
        mi->add_bos = b;
    else
        mi->add_bos = s && n == 5 && memcmp(s, "llama", 5) == 0;
    return 0;
}

static int bind_tensors(loader *l)
{
    sx_model *m = l->m;
    sx_model_info *mi = &m->info;
    int kvd = mi->n_head_kv * mi->head_dim, E = mi->n_embd;
    const sx_gguf_tensor *t;
    char name[96];

    t = sx_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!t || t->n_dims != 2 || t->ne[0] != E || t->ne[1] > INT32_MAX)
        return lfail(l, SX_EINVAL, "model: token_embd.weight is missing or "
                                   "not [%d, n_vocab]", E);
    mi->n_vocab = (int)t->ne[1];
    if (!need_tensor(l, "token_embd.weight", E, mi->n_vocab, false))
        return l->rc;
    m->tok_embd = t->data;
    m->tok_embd_type = t->type;
    m->tok_embd_row_bytes = (size_t)E / (size_t)sx_ggml_block_size(t->type) *
                            (size_t)sx_ggml_type_size(t->type);
    m->output_norm = load_vector(l, "output_norm.weight", E, false);
    if (sx_gguf_find_tensor(m->gguf, "output.weight"))
        load_matrix(l, &m->output, "output.weight", E, mi->n_vocab);
    else
        load_matrix(l, &m->output, "token_embd.weight", E, mi->n_vocab);
    if (sx_gguf_find_tensor(m->gguf, "rope_freqs.weight"))
        m->rope_freqs = load_vector(l, "rope_freqs.weight", m->n_rot / 2,
                                    false);

    m->layers = calloc((size_t)mi->n_layer, sizeof(*m->layers));
    if (!m->layers)
        return lfail(l, SX_ENOMEM, "model: out of memory");
    for (int i = 0; i < mi->n_layer && !l->rc; i++) {
        sx_layer *L = &m->layers[i];
        bool bias = m->arch[0] == 'q';

#define NAME(s) (snprintf(name, sizeof(name), "blk.%d." s, i), name)
        L->attn_norm = load_vector(l, NAME("attn_norm.weight"), E, false);
        L->ffn_norm = load_vector(l, NAME("ffn_norm.weight"), E, false);
        L->bq = load_vector(l, NAME("attn_q.bias"), E, !bias);
        L->bk = load_vector(l, NAME("attn_k.bias"), kvd, !bias);
        L->bv = load_vector(l, NAME("attn_v.bias"), kvd, !bias);
        load_matrix(l, &L->wq, NAME("attn_q.weight"), E, E);
        load_matrix(l, &L->wk, NAME("attn_k.weight"), E, kvd);
        load_matrix(l, &L->wv, NAME("attn_v.weight"), E, kvd);
        load_matrix(l, &L->wo, NAME("attn_output.weight"), E, E);
        load_matrix(l, &L->gate, NAME("ffn_gate.weight"), E, mi->n_ff);
        load_matrix(l, &L->up, NAME("ffn_up.weight"), E, mi->n_ff);
        load_matrix(l, &L->down, NAME("ffn_down.weight"), mi->n_ff, E);
#undef NAME
    }
    if (l->rc)
        return l->rc;
    mi->weight_type = m->layers[0].wq.type;
    for (int i = 0; i < sx_gguf_n_tensors(m->gguf); i++) {
        t = sx_gguf_tensor_at(m->gguf, i);
        mi->n_bytes += t->nbytes;
        mi->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    return 0;
}

sx_model *sx_model_load(const char *path, int *rc, char *err, size_t errlen)
{
    loader l = {.err = err, .errlen = errlen};
    sx_model *m = calloc(1, sizeof(*m));

    if (!m) {
        lfail(&l, SX_ENOMEM, "model: out of memory");
        goto out;
    }
    l.m = m;
    pthread_mutex_init(&m->lock, NULL);
    m->kern = sx_kernels_best();
    m->gguf = sx_gguf_open(path, err, errlen);
    if (!m->gguf) {
        l.rc = SX_EINVAL;
        goto out;
    }
    if (read_hparams(&l) == 0)
        bind_tensors(&l);
out:
    if (rc)
        *rc = l.rc;
    if (l.rc) {
        sx_model_free(m);
        return NULL;
    }
    sx_engine_log(1, "engine: loaded %s model (%d layers, n_embd %d, %s "
                     "weights, %s kernels)",
                  m->arch, m->info.n_layer, m->info.n_embd,
                  sx_ggml_type_name(m->info.weight_type), m->kern->name);
    return m;
}

void sx_model_free(sx_model *m)
{
    if (!m)
        return;
    if (m->layers)
        for (int i = 0; i < m->info.n_layer; i++) {
            sx_layer *L = &m->layers[i];

            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
        }
    free(m->layers);
    free(m->output_norm);
    free(m->rope_freqs);
    sx_model_scratch_free(&m->scratch);
    sx_lora_ws_free(m->lora_ws);
    pthread_mutex_destroy(&m->lock);
    sx_gguf_close(m->gguf);
    free(m);
}

const sx_model_info *sx_model_get_info(const sx_model *m) { return &m->info; }
const sx_gguf *sx_model_gguf(const sx_model *m) { return m->gguf; }
