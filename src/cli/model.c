/* `synapsex model inspect|synth`: GGUF tools. inspect prints a file's
 * metadata and tensor table and whether the engine can run it; synth writes
 * a model with random weights and a real model's shapes (and a real
 * tokenizer copied from another GGUF), for benchmarks and tests. */
#include "cli/cli.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/engine.h"
#include "engine/quant.h"

static const char *type_names[] = {
    [SX_GGUF_U8] = "u8",   [SX_GGUF_I8] = "i8",     [SX_GGUF_U16] = "u16",
    [SX_GGUF_I16] = "i16", [SX_GGUF_U32] = "u32",   [SX_GGUF_I32] = "i32",
    [SX_GGUF_F32] = "f32", [SX_GGUF_BOOL] = "bool", [SX_GGUF_STR] = "str",
    [SX_GGUF_ARR] = "arr", [SX_GGUF_U64] = "u64",   [SX_GGUF_I64] = "i64",
    [SX_GGUF_F64] = "f64",
};

/* Prints a string value on one line: escapes control bytes, cuts at max. */
static void print_str(const char *s, size_t n, size_t max)
{
    putchar('"');
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 32 || c == 127)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
    if (n > max)
        printf("... (%zu bytes)", n);
}

static void print_number(int type, const void *p)
{
    switch (type) {
    case SX_GGUF_U8: printf("%u", *(const uint8_t *)p); break;
    case SX_GGUF_I8: printf("%d", *(const int8_t *)p); break;
    case SX_GGUF_U16: printf("%u", *(const uint16_t *)p); break;
    case SX_GGUF_I16: printf("%d", *(const int16_t *)p); break;
    case SX_GGUF_U32: printf("%u", *(const uint32_t *)p); break;
    case SX_GGUF_I32: printf("%d", *(const int32_t *)p); break;
    case SX_GGUF_F32: printf("%g", (double)*(const float *)p); break;
    case SX_GGUF_BOOL: printf("%s", *(const uint8_t *)p ? "true" : "false");
        break;
    case SX_GGUF_U64: printf("%" PRIu64, *(const uint64_t *)p); break;
    case SX_GGUF_I64: printf("%" PRId64, *(const int64_t *)p); break;
    case SX_GGUF_F64: printf("%g", *(const double *)p); break;
    }
}

static size_t number_size(int type)
{
    static const uint8_t size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

    return type >= 0 && type <= SX_GGUF_F64 ? size[type] : 0;
}

static void print_kv(const sx_gguf *g, int i)
{
    const char *key = sx_gguf_kv_key(g, i);
    int type = sx_gguf_kv_type(g, i), et;
    uint64_t n;
    size_t len, raw_size;
    const char *s;

    printf("  %-44s %-4s ", key, type_names[type]);
    if (type == SX_GGUF_STR) {
        s = sx_gguf_get_str(g, key, &len);
        print_str(s, len, 60);
    } else if (type == SX_GGUF_ARR) {
        sx_gguf_get_arr(g, key, &et, &n);
        printf("%s[%" PRIu64 "]", et >= 0 && et <= SX_GGUF_F64
                                      ? type_names[et] : "?", n);
        for (uint64_t j = 0; j < n && j < 4; j++) {
            fputs(j ? ", " : " ", stdout);
            if (et == SX_GGUF_STR) {
                s = sx_gguf_arr_str(g, key, j, &len);
                print_str(s, len, 20);
            } else if (number_size(et)) {
                print_number(et, (const char *)sx_gguf_arr_data(g, key) +
                                     j * number_size(et));
            } else {
                fputs("[...]", stdout);
            }
        }
        if (n > 4)
            fputs(", ...", stdout);
    } else {
        print_number(type, sx_gguf_kv_raw(g, i, &raw_size));
    }
    putchar('\n');
}

static int inspect(const char *path)
{
    char err[512] = "";
    sx_gguf *g = sx_gguf_open(path, err, sizeof(err));
    sx_model *m;
    int rc;

    if (!g) {
        fprintf(stderr, "synapsex model inspect: %s\n", err);
        return 1;
    }
    printf("%s: GGUF v%u, %d metadata entries, %d tensors, alignment %zu, "
           "data at %" PRIu64 "\n",
           path, sx_gguf_version(g), sx_gguf_n_kv(g), sx_gguf_n_tensors(g),
           sx_gguf_alignment(g), sx_gguf_data_offset(g));
    printf("\nmetadata:\n");
    for (int i = 0; i < sx_gguf_n_kv(g); i++)
        print_kv(g, i);
    printf("\ntensors:\n  %-36s %-6s %-22s %12s %12s\n", "name", "type",
           "shape", "bytes", "offset");
    for (int i = 0; i < sx_gguf_n_tensors(g); i++) {
        const sx_gguf_tensor *t = sx_gguf_tensor_at(g, i);
        char shape[64];
        int o = 0;

        for (int d = 0; d < t->n_dims; d++)
            o += snprintf(shape + o, sizeof(shape) - (size_t)o, "%s%" PRId64,
                          d ? " x " : "", t->ne[d]);
        printf("  %-36s %-6s %-22s %12" PRIu64 " %12" PRIu64 "\n", t->name,
               sx_ggml_type_name(t->type), shape, t->nbytes, t->offset);
    }
    sx_gguf_close(g);

    /* Whether the engine runs it, and what it sees. */
    m = sx_model_load(path, &rc, err, sizeof(err));
    if (!m) {
        printf("\nengine: cannot run this file: %s\n", err);
        return 0;
    }
    {
        const sx_model_info *mi = sx_model_get_info(m);

        printf("\nengine: %s, %d layers, n_embd %d, %d heads (%d kv), n_ff "
               "%d, vocab %d, context %d, bos %d, eos %d, add_bos %s, %s "
               "weights, %.1f M parameters, %s kernels\n",
               mi->arch, mi->n_layer, mi->n_embd, mi->n_head, mi->n_head_kv,
               mi->n_ff, mi->n_vocab, mi->n_ctx_train, mi->bos, mi->eos,
               mi->add_bos ? "true" : "false",
               sx_ggml_type_name(mi->weight_type), (double)mi->n_params / 1e6,
               sx_engine_kernels());
    }
    sx_model_free(m);
    return 0;
}

/* --- synth --------------------------------------------------------------- */

typedef struct shape {
    const char *name, *arch, *vocab_file;
    int n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float rope_base, eps;
} shape;

static const shape shapes[] = {
    {"qwen2.5-0.5b", "qwen2", "models/tiny-qwen2-q8_0.gguf", 896, 24, 14, 2,
     4864, 151936, 32768, 1000000.0f, 1e-6f},
    {"llama-3.2-1b", "llama", "tokenizer/ggml-vocab-llama-bpe.gguf", 2048, 16,
     32, 8, 8192, 128256, 131072, 500000.0f, 1e-5f},
    {"tiny", "llama", "models/tiny-llama-f32.gguf", 64, 2, 4, 2, 192, 32000,
     256, 10000.0f, 1e-5f},
};

typedef struct synth_ctx {
    uint64_t seed;
    int type;
} synth_ctx;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Matrices uniform in +-sqrt(3/n_in) (unit variance through a layer), norm
 * weights in [0.9, 1.1), biases in +-0.02; each tensor its own stream. */
static int synth_fill(void *ctx, int index, const sx_gguf_tensor *t,
                      void *dst)
{
    const synth_ctx *c = ctx;
    uint64_t st = c->seed ^ ((uint64_t)(index + 1) * 0x632be59bd9b4e019ULL);
    int64_t n_in = t->ne[0], rows = t->ne[1];   /* 1 for vectors */
    bool is_norm = strstr(t->name, "norm") != NULL;
    float a = t->n_dims == 2 ? sqrtf(3.0f / (float)n_in) : 0.02f;
    float *row = malloc((size_t)n_in * sizeof(float));
    size_t rb = (size_t)(t->nbytes / (uint64_t)rows);

    if (!row)
        return SX_ENOMEM;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;

        for (int64_t i = 0; i < n_in; i++) {
            float u = (float)(splitmix(&st) >> 40) / 16777216.0f; /* [0,1) */

            row[i] = is_norm ? 0.9f + 0.2f * u : (2.0f * u - 1.0f) * a;
        }
        switch (t->type) {
        case SX_GGML_F32: memcpy(out, row, (size_t)n_in * 4); break;
        case SX_GGML_F16:
            for (int64_t i = 0; i < n_in; i++)
                ((uint16_t *)out)[i] = sx_f32_to_fp16(row[i]);
            break;
        case SX_GGML_BF16:
            for (int64_t i = 0; i < n_in; i++)
                ((uint16_t *)out)[i] = sx_f32_to_bf16(row[i]);
            break;
        case SX_GGML_Q8_0:
            sx_quantize_q8_0(row, (sx_block_q8_0 *)out, (int)n_in);
            break;
        case SX_GGML_Q4_0:
            sx_quantize_q4_0(row, (sx_block_q4_0 *)out, (int)n_in);
            break;
        }
    }
    free(row);
    return 0;
}

static int add_tensor(sx_gguf_writer *w, const char *name, int type,
                      int64_t n_in, int64_t n_out)
{
    int64_t ne[2] = {n_in, n_out};

    return sx_gguf_writer_tensor(w, name, n_out ? type : SX_GGML_F32,
                                 n_out ? 2 : 1, ne);
}

/* Metadata and tensor table of the shape, tokenizer keys from vocab. */
static int synth_layout(sx_gguf_writer *w, const shape *sh, int type,
                        int file_type, const sx_gguf *vocab)
{
    char key[128];
    int rc = 0, kvd = sh->n_embd / sh->n_head * sh->n_head_kv;
    const char *a = sh->arch;

#define KEY(s) (snprintf(key, sizeof(key), "%s." s, a), key)
    rc |= sx_gguf_writer_str(w, "general.architecture", a, strlen(a));
    snprintf(key, sizeof(key), "synapsex synth %s", sh->name);
    rc |= sx_gguf_writer_str(w, "general.name", key, strlen(key));
    rc |= sx_gguf_writer_u32(w, "general.file_type", (uint32_t)file_type);
    rc |= sx_gguf_writer_u32(w, KEY("context_length"), (uint32_t)sh->n_ctx);
    rc |= sx_gguf_writer_u32(w, KEY("embedding_length"),
                             (uint32_t)sh->n_embd);
    rc |= sx_gguf_writer_u32(w, KEY("block_count"), (uint32_t)sh->n_layer);
    rc |= sx_gguf_writer_u32(w, KEY("feed_forward_length"),
                             (uint32_t)sh->n_ff);
    rc |= sx_gguf_writer_u32(w, KEY("attention.head_count"),
                             (uint32_t)sh->n_head);
    rc |= sx_gguf_writer_u32(w, KEY("attention.head_count_kv"),
                             (uint32_t)sh->n_head_kv);
    rc |= sx_gguf_writer_u32(w, KEY("rope.dimension_count"),
                             (uint32_t)(sh->n_embd / sh->n_head));
    rc |= sx_gguf_writer_f32(w, KEY("rope.freq_base"), sh->rope_base);
    rc |= sx_gguf_writer_f32(w, KEY("attention.layer_norm_rms_epsilon"),
                             sh->eps);
#undef KEY
    for (int i = 0; i < sx_gguf_n_kv(vocab); i++) {
        const char *k = sx_gguf_kv_key(vocab, i);
        size_t size;
        const void *raw;

        if (strncmp(k, "tokenizer.", 10) != 0)
            continue;
        raw = sx_gguf_kv_raw(vocab, i, &size);
        rc |= sx_gguf_writer_raw(w, k, sx_gguf_kv_type(vocab, i), raw, size);
    }

    rc |= add_tensor(w, "token_embd.weight", type, sh->n_embd, sh->n_vocab);
    rc |= add_tensor(w, "output_norm.weight", type, sh->n_embd, 0);
    for (int l = 0; l < sh->n_layer; l++) {
        static const struct { const char *n; int in, out; } m[] = {
            {"attn_q.weight", 0, 0}, {"attn_k.weight", 0, 1},
            {"attn_v.weight", 0, 1}, {"attn_output.weight", 0, 0},
            {"ffn_gate.weight", 0, 2}, {"ffn_up.weight", 0, 2},
            {"ffn_down.weight", 2, 0},
        };
        int dims[3] = {sh->n_embd, kvd, sh->n_ff};

        snprintf(key, sizeof(key), "blk.%d.attn_norm.weight", l);
        rc |= add_tensor(w, key, type, sh->n_embd, 0);
        snprintf(key, sizeof(key), "blk.%d.ffn_norm.weight", l);
        rc |= add_tensor(w, key, type, sh->n_embd, 0);
        if (strcmp(a, "qwen2") == 0) {
            snprintf(key, sizeof(key), "blk.%d.attn_q.bias", l);
            rc |= add_tensor(w, key, type, sh->n_embd, 0);
            snprintf(key, sizeof(key), "blk.%d.attn_k.bias", l);
            rc |= add_tensor(w, key, type, kvd, 0);
            snprintf(key, sizeof(key), "blk.%d.attn_v.bias", l);
            rc |= add_tensor(w, key, type, kvd, 0);
        }
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
            snprintf(key, sizeof(key), "blk.%d.%s", l, m[i].n);
            rc |= add_tensor(w, key, type, dims[m[i].in], dims[m[i].out]);
        }
    }
    return rc ? SX_EINVAL : 0;
}

static int synth(const char *shape_name, const char *type_name,
                 const char *out, const char *vocab_path, uint64_t seed)
{
    static const struct { const char *n; int type, file_type; } types[] = {
        {"f32", SX_GGML_F32, 0}, {"f16", SX_GGML_F16, 1},
        {"bf16", SX_GGML_BF16, 32}, {"q8_0", SX_GGML_Q8_0, 7},
        {"q4_0", SX_GGML_Q4_0, 2},
    };
    const shape *sh = NULL;
    int ti = -1, et, rc;
    char path[4096], err[512] = "";
    const char *fx = getenv("SYNAPSEX_FIXTURES");
    sx_gguf *vocab;
    sx_gguf_writer *w;
    synth_ctx ctx;
    uint64_t n_tokens = 0;

    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        if (strcmp(shapes[i].name, shape_name) == 0)
            sh = &shapes[i];
    for (int i = 0; i < (int)(sizeof(types) / sizeof(types[0])); i++)
        if (strcmp(types[i].n, type_name) == 0)
            ti = i;
    if (!sh || ti < 0) {
        fprintf(stderr, "synapsex model synth: unknown %s '%s' (shapes: "
                        "qwen2.5-0.5b, llama-3.2-1b, tiny; types: f32, f16, "
                        "bf16, q8_0, q4_0)\n",
                !sh ? "shape" : "type", !sh ? shape_name : type_name);
        return 2;
    }
    if (!vocab_path) {
        snprintf(path, sizeof(path), "%s/%s", fx ? fx : "../shared/fixtures",
                 sh->vocab_file);
        vocab_path = path;
    }
    vocab = sx_gguf_open(vocab_path, err, sizeof(err));
    if (!vocab) {
        fprintf(stderr, "synapsex model synth: tokenizer source: %s (give "
                        "one with --vocab FILE.gguf)\n", err);
        return 1;
    }
    if (sx_gguf_get_arr(vocab, "tokenizer.ggml.tokens", &et, &n_tokens) ||
        n_tokens != (uint64_t)sh->n_vocab) {
        fprintf(stderr, "synapsex model synth: %s has %" PRIu64 " tokens but "
                        "shape %s needs %d\n",
                vocab_path, n_tokens, sh->name, sh->n_vocab);
        sx_gguf_close(vocab);
        return 1;
    }
    w = sx_gguf_writer_new();
    rc = w ? synth_layout(w, sh, types[ti].type, types[ti].file_type, vocab)
           : SX_ENOMEM;
    ctx = (synth_ctx){.seed = seed, .type = types[ti].type};
    if (rc == 0)
        rc = sx_gguf_writer_save(w, out, synth_fill, &ctx, err, sizeof(err));
    sx_gguf_writer_free(w);
    sx_gguf_close(vocab);
    if (rc) {
        fprintf(stderr, "synapsex model synth: %s\n",
                err[0] ? err : "cannot build the file layout");
        return 1;
    }
    printf("wrote %s (%s, %s)\n", out, sh->name, type_name);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: synapsex model inspect FILE.gguf\n"
            "       synapsex model synth --shape qwen2.5-0.5b|llama-3.2-1b|tiny\n"
            "                            --type f32|f16|bf16|q8_0|q4_0 --out FILE\n"
            "                            [--vocab FILE.gguf] [--seed N]\n"
            "synth writes random weights with the named model's shapes and\n"
            "the tokenizer.* metadata of --vocab (default: a fixture from\n"
            "$SYNAPSEX_FIXTURES, ../shared/fixtures).\n");
}

int sx_cli_model(int argc, char **argv)
{
    const char *shape = NULL, *type = NULL, *out = NULL, *vocab = NULL;
    uint64_t seed = 20250601;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
                      strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "inspect") == 0)
        return inspect(argv[2]);
    if (argc < 2 || strcmp(argv[1], "synth") != 0) {
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--shape") == 0)
            shape = v;
        else if (strcmp(a, "--type") == 0)
            type = v;
        else if (strcmp(a, "--out") == 0)
            out = v;
        else if (strcmp(a, "--vocab") == 0)
            vocab = v;
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!shape || !type || !out) {
        usage(stderr);
        return 2;
    }
    return synth(shape, type, out, vocab, seed);
}
