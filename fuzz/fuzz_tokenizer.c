/* libFuzzer target for the tokenizers: arbitrary bytes (invalid UTF-8
 * included) through BPE and SentencePiece tokenization with and without
 * special-token parsing, then whole and streamed detokenization. Loads the
 * gpt-2 (or qwen2) and llama-spm vocabularies from SYNAPSEX_FIXTURES; when
 * they are absent it builds small vocabularies in memory so it still runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

static sx_tokenizer *bpe, *spm;

static sx_tokenizer *load(const char *rel)
{
    const char *dir = getenv("SYNAPSEX_FIXTURES");
    char path[4096], err[256];
    sx_gguf *g;
    sx_tokenizer *t;

    snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir :
             "../shared/fixtures", rel);
    g = sx_gguf_open(path, err, sizeof(err));
    if (!g)
        return NULL;
    t = sx_tokenizer_from_gguf(g, err, sizeof(err));
    sx_gguf_close(g);
    return t;
}

/* A byte-level BPE vocabulary: the 256 byte characters, a few merges and
 * a control token. */
static sx_tokenizer *tiny_bpe(void)
{
    static char texts[260][8];
    static const char *toks[260];
    static const char *const merges[] = {"a b", "ab c", "\xc4\xa0 a"};
    int32_t types[260];
    sx_tokenizer_spec spec = {.model = "gpt2", .pre = "qwen2", .n_tokens = 260,
                              .tokens = toks, .types = types, .n_merges = 3,
                              .merges = merges, .bos = -1, .eos = 259,
                              .unk = -1, .pad = -1};
    uint32_t next = 256;

    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
                         b >= 0xAE;
        uint32_t cp = printable ? (uint32_t)b : next++;
        if (cp < 0x80) {
            texts[b][0] = (char)cp;
        } else {
            texts[b][0] = (char)(0xC0 | (cp >> 6));
            texts[b][1] = (char)(0x80 | (cp & 0x3F));
        }
        toks[b] = texts[b];
        types[b] = 1;
    }
    toks[256] = "ab", toks[257] = "abc", toks[258] = "\xc4\xa0\x61";
    toks[259] = "<|end|>";
    types[256] = types[257] = types[258] = 1;
    types[259] = 3;
    return sx_tokenizer_new(&spec, NULL, 0);
}

/* A SentencePiece vocabulary with byte tokens and a few pieces. */
static sx_tokenizer *tiny_spm(void)
{
    static char texts[256][8];
    static const char *toks[262];
    static float scores[262];
    int32_t types[262];
    sx_tokenizer_spec spec = {.model = "llama", .n_tokens = 262,
                              .tokens = toks, .scores = scores, .types = types,
                              .bos = 256, .eos = 257, .unk = 258, .pad = -1,
                              .add_bos = true, .add_space_prefix = true};

    for (int b = 0; b < 256; b++) {
        snprintf(texts[b], sizeof(texts[b]), "<0x%02X>", b);
        toks[b] = texts[b];
        types[b] = 6;
    }
    toks[256] = "<s>", toks[257] = "</s>", toks[258] = "<unk>";
    types[256] = types[257] = 3;
    types[258] = 2;
    toks[259] = "\xe2\x96\x81", toks[260] = "a", toks[261] = "\xe2\x96\x81\x61";
    types[259] = types[260] = types[261] = 1;
    scores[261] = 1.0f;
    return sx_tokenizer_new(&spec, NULL, 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bpe = load("tokenizer/ggml-vocab-gpt-2.gguf");
    if (!bpe)
        bpe = load("models/tiny-qwen2-q8_0.gguf");
    if (!bpe)
        bpe = tiny_bpe();
    spm = load("tokenizer/ggml-vocab-llama-spm.gguf");
    if (!spm)
        spm = tiny_spm();
    if (!bpe || !spm)
        abort();
    return 0;
}

static void check_utf8(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k = u[i] < 0x80 ? 1 : u[i] >= 0xF0 ? 4 : u[i] >= 0xE0 ? 3 : 2;
        if ((u[i] >= 0x80 && u[i] < 0xC2) || u[i] > 0xF4 || i + k > n)
            abort();
        for (size_t j = 1; j < k; j++)
            if ((u[i + j] & 0xC0) != 0x80)
                abort();
        i += k;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const sx_tokenizer *t;
    int32_t *ids;
    size_t n, len;
    char *text;
    unsigned mode;

    if (size == 0)
        return 0;
    mode = data[0];
    t = mode & 1 ? spm : bpe;
    data++, size--;

    if (sx_tokenizer_tokenize(t, (const char *)data, size, mode & 2, mode & 4,
                              &ids, &n) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= sx_tokenizer_n_tokens(t))
            abort();
    if (sx_tokenizer_detokenize(t, ids, n, mode & 8 ? SX_DETOK_SPECIAL : 0,
                                &text, &len) == 0)
        free(text);

    /* Streamed text must always be valid UTF-8, whatever the ids. */
    sx_detok *d = sx_detok_new(t, mode & 8 ? SX_DETOK_SPECIAL : 0);
    if (d) {
        const char *s;
        for (size_t i = 0; i < n; i++)
            if (sx_detok_feed(d, ids[i], &s, &len) == 0)
                check_utf8(s, len);
        /* Also raw ids taken from the input bytes. */
        for (size_t i = 0; i + 2 <= size; i += 2) {
            int32_t id = (int32_t)(data[i] | data[i + 1] << 8);
            if (sx_detok_feed(d, id, &s, &len) == 0)
                check_utf8(s, len);
        }
        if (sx_detok_flush(d, &s, &len) == 0)
            check_utf8(s, len);
        sx_detok_free(d);
    }
    free(ids);
    return 0;
}
