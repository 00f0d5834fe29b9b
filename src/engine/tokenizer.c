/* The tokenizer object: builds the vocabulary from GGUF metadata (or arrays),
 * splits input on special tokens, hands plain text to the SentencePiece or
 * BPE segmenter (tokenizer_spm.c, tokenizer_bpe.c), and turns ids back into
 * text, whole or streamed. See tokenizer.h for the contract. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"
#include "engine/tokenizer_impl.h"

#define K_MODEL "tokenizer.ggml.model"
#define K_PRE "tokenizer.ggml.pre"
#define K_TOKENS "tokenizer.ggml.tokens"
#define K_SCORES "tokenizer.ggml.scores"
#define K_TYPES "tokenizer.ggml.token_type"
#define K_MERGES "tokenizer.ggml.merges"

/* --- small helpers ------------------------------------------------------ */

int sx_idvec_push(sx_idvec *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->v, cap * sizeof(*p));
        if (!p)
            return SX_ENOMEM;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = id;
    return SX_OK;
}

size_t sx_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t need;
    uint32_t v, min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF)
        need = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, v = c & 0x07, min = 0x10000;
    else
        return 0;
    if (need > n)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return need;
}

size_t sx_utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;

    if (cp > 0x10FFFF)
        cp = 0xFFFD;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;

    while (p < n)
        p *= 2;
    return p;
}

int32_t sx_tok_lookup(const sx_tokenizer *t, const char *s, size_t n)
{
    uint32_t h = hash_bytes(s, n);

    for (size_t i = h & t->map_mask;; i = (i + 1) & t->map_mask) {
        int32_t id = t->map_ids[i];
        size_t len;
        const char *txt;

        if (id < 0)
            return -1;
        if (t->map_hash[i] != h)
            continue;
        txt = sx_tok_text(t, id, &len);
        if (len == n && memcmp(txt, s, n) == 0)
            return id;
    }
}

/* Inserts id under its text; a later duplicate text wins, as in llama.cpp. */
static void map_insert(sx_tokenizer *t, int32_t id)
{
    size_t n;
    const char *s = sx_tok_text(t, id, &n);
    uint32_t h = hash_bytes(s, n);

    for (size_t i = h & t->map_mask;; i = (i + 1) & t->map_mask) {
        int32_t cur = t->map_ids[i];
        size_t len;
        const char *txt;

        if (cur < 0) {
            t->map_ids[i] = id;
            t->map_hash[i] = h;
            return;
        }
        if (t->map_hash[i] != h)
            continue;
        txt = sx_tok_text(t, cur, &len);
        if (len == n && memcmp(txt, s, n) == 0) {
            t->map_ids[i] = id;
            return;
        }
    }
}

/* Adds merge (l, r) -> result at rank unless the pair is known (the first
 * rank wins, as in llama.cpp). */
static void pair_insert(sx_tokenizer *t, int32_t l, int32_t r, int32_t result,
                        int32_t rank)
{
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & t->pair_mask;

    for (;; i = (i + 1) & t->pair_mask) {
        if (t->pairs[i].key == key)
            return;
        if (t->pairs[i].key == 0) {
            t->pairs[i] = (sx_pair_slot){key, rank, result};
            return;
        }
    }
}

/* --- construction ------------------------------------------------------- */

/* GPT-2's byte-level alphabet: printable Latin-1 bytes stand for
 * themselves; the 68 others (0x00-0x20, 0x7F-0xA0, 0xAD) for U+0100
 * onwards, in byte order. */
static uint32_t byte_to_cp(int b)
{
    if (b <= 0x20)
        return 256 + (uint32_t)b;
    if (b >= 0x7F && b <= 0xA0)
        return 256 + 33 + (uint32_t)(b - 0x7F);
    if (b == 0xAD)
        return 256 + 67;
    return (uint32_t)b;
}

static int cmp_special(const void *a, const void *b, void *arg)
{
    const sx_tokenizer *t = arg;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint64_t lx = t->text_off[x + 1] - t->text_off[x];
    uint64_t ly = t->text_off[y + 1] - t->text_off[y];

    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int build_specials(sx_tokenizer *t)
{
    t->special = malloc(((size_t)t->n_tokens + 1) * sizeof(int32_t));
    if (!t->special)
        return SX_ENOMEM;
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        int ty = t->types[i];
        size_t len;
        const char *s = sx_tok_text(t, (int32_t)i, &len);

        if (len == 0 || (ty != SX_TOKT_CONTROL && ty != SX_TOKT_USER_DEFINED &&
                         ty != SX_TOKT_UNKNOWN))
            continue;
        t->special[t->n_special++] = (int32_t)i;
        t->special_first[(unsigned char)s[0]] = true;
    }
    qsort_r(t->special, t->n_special, sizeof(int32_t), cmp_special, t);
    return SX_OK;
}

static void build_eog(sx_tokenizer *t)
{
    static const char *const names[] = {
        "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
        "<|endoftext|>", "<turn|>", "</s>", "<|end_of_text|>",
    };

    if (t->eos >= 0)
        t->eog[t->eos] = true;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        int32_t id = sx_tok_lookup(t, names[i], strlen(names[i]));
        if (id >= 0 && (t->types[id] == SX_TOKT_CONTROL ||
                        t->types[id] == SX_TOKT_USER_DEFINED))
            t->eog[id] = true;
    }
}

static int32_t check_id(int32_t id, uint32_t n)
{
    return id >= 0 && (uint32_t)id < n ? id : -1;
}

static int build_merges(sx_tokenizer *t, const sx_tokenizer_spec *spec)
{
    char *buf = malloc(t->max_token_len * 2 + 2);

    if (!buf)
        return SX_ENOMEM;
    t->pair_mask = pow2_at_least((size_t)spec->n_merges * 2) - 1;
    t->pairs = calloc(t->pair_mask + 1, sizeof(*t->pairs));
    if (!t->pairs) {
        free(buf);
        return SX_ENOMEM;
    }
    for (uint32_t i = 0; i < spec->n_merges; i++) {
        const char *m = spec->merges[i];
        size_t len = spec->merge_lens ? spec->merge_lens[i] : strlen(m);
        const char *sp = len > 1 ? memchr(m + 1, ' ', len - 1) : NULL;
        size_t nl, nr;
        int32_t l, r, res;

        /* A merge whose sides or result are not tokens cannot apply to
         * byte-level symbols; skip it. */
        if (!sp)
            continue;
        nl = (size_t)(sp - m);
        nr = len - nl - 1;
        if (nl + nr > t->max_token_len)
            continue;
        l = sx_tok_lookup(t, m, nl);
        r = sx_tok_lookup(t, sp + 1, nr);
        memcpy(buf, m, nl);
        memcpy(buf + nl, sp + 1, nr);
        res = sx_tok_lookup(t, buf, nl + nr);
        if (l >= 0 && r >= 0 && res >= 0)
            pair_insert(t, l, r, res, (int32_t)i);
    }
    free(buf);
    return SX_OK;
}

static void build_byte_tokens(sx_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char s[8];

        if (t->kind == SX_TOK_BPE) {
            size_t n = sx_utf8_encode(byte_to_cp(b), t->byte_enc[b]);
            t->byte_enc_len[b] = (uint8_t)n;
            t->byte_tok[b] = sx_tok_lookup(t, t->byte_enc[b], n);
        } else {
            snprintf(s, sizeof(s), "<0x%02X>", b);
            t->byte_tok[b] = sx_tok_lookup(t, s, 6);
            if (t->byte_tok[b] < 0 && b < 0x80) {
                s[0] = (char)b;
                t->byte_tok[b] = sx_tok_lookup(t, s, 1);
            }
        }
    }
}

sx_tokenizer *sx_tokenizer_new(const sx_tokenizer_spec *spec, char *err,
                               size_t errlen)
{
    sx_tokenizer *t;
    size_t total = 0;

    if (!spec || !spec->model || !spec->tokens || spec->n_tokens == 0 ||
        spec->n_tokens >= (uint32_t)INT32_MAX / 2) {
        sx_errmsg_set(err, errlen, "tokenizer: no vocabulary");
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (!t)
        goto oom;

    if (strcmp(spec->model, "llama") == 0) {
        t->kind = SX_TOK_SPM;
    } else if (strcmp(spec->model, "gpt2") == 0) {
        const char *pre = spec->pre ? spec->pre : "";
        t->kind = SX_TOK_BPE;
        if (strcmp(pre, "gpt-2") == 0) {
            t->pre = SX_PRE_GPT2;
        } else if (strcmp(pre, "llama-bpe") == 0 ||
                   strcmp(pre, "llama3") == 0) {
            t->pre = SX_PRE_LLAMA3;
            t->ignore_merges = true;
        } else if (strcmp(pre, "qwen2") == 0) {
            t->pre = SX_PRE_QWEN2;
        } else {
            sx_errmsg_set(err, errlen,
                          "tokenizer: BPE pre-tokenizer '%s' is not supported "
                          "(supported: gpt-2, llama-bpe, qwen2)", pre);
            goto fail;
        }
    } else {
        sx_errmsg_set(err, errlen,
                      "tokenizer: model '%s' is not supported "
                      "(supported: llama, gpt2)", spec->model);
        goto fail;
    }

    /* Token texts into one arena, each NUL-terminated. */
    t->n_tokens = spec->n_tokens;
    t->text_off = malloc(((size_t)t->n_tokens + 1) * sizeof(uint64_t));
    t->scores = calloc(t->n_tokens, sizeof(float));
    t->types = malloc(t->n_tokens);
    t->eog = calloc(t->n_tokens, sizeof(bool));
    if (!t->text_off || !t->scores || !t->types || !t->eog)
        goto oom;
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        size_t len;
        if (!spec->tokens[i]) {
            sx_errmsg_set(err, errlen, "tokenizer: token %u has no text", i);
            goto fail;
        }
        len = spec->token_lens ? spec->token_lens[i] : strlen(spec->tokens[i]);
        t->text_off[i] = total;
        total += len + 1;
        if (len > t->max_token_len)
            t->max_token_len = len;
    }
    t->text_off[t->n_tokens] = total;
    t->arena = malloc(total);
    if (!t->arena)
        goto oom;
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        size_t len = (size_t)(t->text_off[i + 1] - t->text_off[i] - 1);
        memcpy(t->arena + t->text_off[i], spec->tokens[i], len);
        t->arena[t->text_off[i] + len] = '\0';
        t->scores[i] = spec->scores ? spec->scores[i] : 0.0f;
        t->types[i] = spec->types && spec->types[i] >= 1 && spec->types[i] <= 6
                          ? (uint8_t)spec->types[i]
                          : SX_TOKT_NORMAL;
    }

    t->map_mask = pow2_at_least((size_t)t->n_tokens * 2) - 1;
    t->map_ids = malloc((t->map_mask + 1) * sizeof(int32_t));
    t->map_hash = malloc((t->map_mask + 1) * sizeof(uint32_t));
    if (!t->map_ids || !t->map_hash)
        goto oom;
    memset(t->map_ids, 0xFF, (t->map_mask + 1) * sizeof(int32_t));
    for (uint32_t i = 0; i < t->n_tokens; i++)
        map_insert(t, (int32_t)i);

    if (t->kind == SX_TOK_BPE && build_merges(t, spec) != SX_OK)
        goto oom;
    build_byte_tokens(t);
    if (build_specials(t) != SX_OK)
        goto oom;

    t->bos = check_id(spec->bos, t->n_tokens);
    t->eos = check_id(spec->eos, t->n_tokens);
    t->unk = check_id(spec->unk, t->n_tokens);
    t->pad = check_id(spec->pad, t->n_tokens);
    t->add_bos = spec->add_bos && t->bos >= 0;
    t->add_eos = spec->add_eos && t->eos >= 0;
    t->add_space_prefix = t->kind == SX_TOK_SPM && spec->add_space_prefix;
    build_eog(t);
    return t;

oom:
    sx_errmsg_set(err, errlen, "tokenizer: out of memory");
fail:
    sx_tokenizer_free(t);
    return NULL;
}

/* Reads an optional token id key; absent keeps *id. */
static int read_id(const sx_gguf *g, const char *key, int32_t *id)
{
    uint32_t v;
    int rc = sx_gguf_get_u32(g, key, &v);

    if (rc == SX_ENOTFOUND)
        return SX_OK;
    if (rc != SX_OK || v > (uint32_t)INT32_MAX)
        return SX_EINVAL;
    *id = (int32_t)v;
    return SX_OK;
}

static char *dup_str(const sx_gguf *g, const char *key)
{
    size_t len;
    const char *s = sx_gguf_get_str(g, key, &len);
    char *d;

    if (!s)
        return NULL;
    d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

/* Reads a string array into pointer/length arrays (pointing into g). */
static int read_strings(const sx_gguf *g, const char *key, uint64_t *n,
                        const char ***strs, size_t **lens)
{
    int type;

    if (sx_gguf_get_arr(g, key, &type, n) != SX_OK || type != SX_GGUF_STR ||
        *n >= (uint64_t)INT32_MAX / 2)
        return SX_EINVAL;
    *strs = malloc((size_t)(*n ? *n : 1) * sizeof(char *));
    *lens = malloc((size_t)(*n ? *n : 1) * sizeof(size_t));
    if (!*strs || !*lens)
        return SX_ENOMEM;
    for (uint64_t i = 0; i < *n; i++) {
        (*strs)[i] = sx_gguf_arr_str(g, key, i, &(*lens)[i]);
        if (!(*strs)[i])
            return SX_EINVAL;
    }
    return SX_OK;
}

sx_tokenizer *sx_tokenizer_from_gguf(const sx_gguf *g, char *err,
                                     size_t errlen)
{
    sx_tokenizer_spec spec = {.bos = -1, .eos = -1, .unk = -1, .pad = -1};
    const char **toks = NULL, **merges = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    size_t *tok_lens = NULL, *merge_lens = NULL;
    char *model = NULL, *pre = NULL;
    sx_tokenizer *t = NULL;
    uint64_t n = 0, n_merges = 0, cnt;
    bool b;
    int type;

    model = dup_str(g, K_MODEL);
    pre = dup_str(g, K_PRE);
    if (!model) {
        sx_errmsg_set(err, errlen, "tokenizer: %s missing", K_MODEL);
        goto done;
    }
    if (read_strings(g, K_TOKENS, &n, &toks, &tok_lens) != SX_OK || n == 0) {
        sx_errmsg_set(err, errlen, "tokenizer: %s missing or malformed",
                      K_TOKENS);
        goto done;
    }
    spec.model = model;
    spec.pre = pre;
    spec.n_tokens = (uint32_t)n;
    spec.tokens = toks;
    spec.token_lens = tok_lens;

    if (sx_gguf_get_arr(g, K_SCORES, &type, &cnt) == SX_OK) {
        if (type != SX_GGUF_F32 || cnt != n) {
            sx_errmsg_set(err, errlen, "tokenizer: %s malformed", K_SCORES);
            goto done;
        }
        /* Copied: array data in a GGUF file need not be aligned. */
        if (!(scores = malloc((size_t)n * sizeof(float))))
            goto oom;
        memcpy(scores, sx_gguf_arr_data(g, K_SCORES), (size_t)n * 4);
        spec.scores = scores;
    }
    if (sx_gguf_get_arr(g, K_TYPES, &type, &cnt) == SX_OK) {
        if (type != SX_GGUF_I32 || cnt != n) {
            sx_errmsg_set(err, errlen, "tokenizer: %s malformed", K_TYPES);
            goto done;
        }
        if (!(types = malloc((size_t)n * sizeof(int32_t))))
            goto oom;
        memcpy(types, sx_gguf_arr_data(g, K_TYPES), (size_t)n * 4);
        spec.types = types;
    }
    if (strcmp(model, "gpt2") == 0) {
        if (read_strings(g, K_MERGES, &n_merges, &merges, &merge_lens) !=
            SX_OK) {
            sx_errmsg_set(err, errlen, "tokenizer: %s missing or malformed",
                          K_MERGES);
            goto done;
        }
        spec.n_merges = (uint32_t)n_merges;
        spec.merges = merges;
        spec.merge_lens = merge_lens;
    }

    /* Defaults as llama.cpp: SentencePiece has BOS 1, EOS 2, UNK 0 and adds
     * BOS; BPE has no defaults and adds nothing unless told. */
    if (strcmp(model, "llama") == 0) {
        spec.bos = 1, spec.eos = 2, spec.unk = 0;
        spec.add_bos = true;
        spec.add_space_prefix = true;
    }
    if (read_id(g, "tokenizer.ggml.bos_token_id", &spec.bos) != SX_OK ||
        read_id(g, "tokenizer.ggml.eos_token_id", &spec.eos) != SX_OK ||
        read_id(g, "tokenizer.ggml.unknown_token_id", &spec.unk) != SX_OK ||
        read_id(g, "tokenizer.ggml.padding_token_id", &spec.pad) != SX_OK) {
        sx_errmsg_set(err, errlen,
                      "tokenizer: a special token id is malformed");
        goto done;
    }
    if (sx_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == SX_OK)
        spec.add_bos = b;
    if (sx_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b) == SX_OK)
        spec.add_eos = b;
    if (sx_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b) == SX_OK)
        spec.add_space_prefix = b;

    t = sx_tokenizer_new(&spec, err, errlen);
    goto done;
oom:
    sx_errmsg_set(err, errlen, "tokenizer: out of memory");
done:
    free(scores);
    free(types);
    free(toks);
    free(tok_lens);
    free(merges);
    free(merge_lens);
    free(model);
    free(pre);
    return t;
}

void sx_tokenizer_free(sx_tokenizer *t)
{
    if (!t)
        return;
    free(t->arena);
    free(t->text_off);
    free(t->scores);
    free(t->types);
    free(t->map_ids);
    free(t->map_hash);
    free(t->pairs);
    free(t->special);
    free(t->eog);
    free(t);
}

/* --- accessors ---------------------------------------------------------- */

int sx_tokenizer_kind(const sx_tokenizer *t) { return t->kind; }
uint32_t sx_tokenizer_n_tokens(const sx_tokenizer *t) { return t->n_tokens; }
int32_t sx_tokenizer_bos(const sx_tokenizer *t) { return t->bos; }
int32_t sx_tokenizer_eos(const sx_tokenizer *t) { return t->eos; }
bool sx_tokenizer_add_bos(const sx_tokenizer *t) { return t->add_bos; }

static bool valid_id(const sx_tokenizer *t, int32_t id)
{
    return id >= 0 && (uint32_t)id < t->n_tokens;
}

bool sx_tokenizer_is_eog(const sx_tokenizer *t, int32_t id)
{
    return valid_id(t, id) && t->eog[id];
}

int sx_tokenizer_token_type(const sx_tokenizer *t, int32_t id)
{
    return valid_id(t, id) ? t->types[id] : SX_EINVAL;
}

const char *sx_tokenizer_token_text(const sx_tokenizer *t, int32_t id,
                                    size_t *len)
{
    return valid_id(t, id) ? sx_tok_text(t, id, len) : NULL;
}

int32_t sx_tokenizer_find(const sx_tokenizer *t, const char *text, size_t len)
{
    return sx_tok_lookup(t, text, len);
}
