/* Tokenizer tests: llama.cpp's vocabulary vectors (every
 * fixtures/tokenizer/ggml-vocab-*.gguf with its .inp/.out), the prompts of
 * fixtures/reference/manifest.json through the models' own tokenizers,
 * round trips, special tokens, the streaming detokenizer, a vocabulary built
 * in memory, bad input and the speed on 100 KB inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"

#include "fixtures.h"

static sx_tokenizer *load_tok(const char *rel)
{
    char path[4200], err[256] = "";
    sx_gguf *g;
    sx_tokenizer *t;

    snprintf(path, sizeof(path), "%s/%s", fixtures, rel);
    g = sx_gguf_open(path, err, sizeof(err));
    if (!g)
        fail_msg("open %s: %s", path, err);
    t = sx_tokenizer_from_gguf(g, err, sizeof(err));
    sx_gguf_close(g);
    if (!t)
        fail_msg("tokenizer of %s: %s", path, err);
    return t;
}

static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k = u[i] < 0x80 ? 1 : u[i] >= 0xF0 ? 4 : u[i] >= 0xE0 ? 3 : 2;
        if (u[i] >= 0x80 && u[i] < 0xC2)
            return false;
        if (i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((u[i + j] & 0xC0) != 0x80)
                return false;
        i += k;
    }
    return true;
}

/* detokenize(tokenize(x)) == x, with BOS/EOS as the vocabulary adds them. */
static bool round_trips(const sx_tokenizer *t, const char *s, size_t n)
{
    int32_t *ids;
    size_t n_ids, len;
    char *back;
    bool ok;

    assert_int_equal(sx_tokenizer_tokenize(t, s, n, true, false, &ids, &n_ids),
                     0);
    assert_int_equal(sx_tokenizer_detokenize(t, ids, n_ids, 0, &back, &len), 0);
    ok = len == n && memcmp(back, s, n) == 0;
    free(ids);
    free(back);
    return ok;
}

/* Splits a .inp file into its test strings (in place). */
static size_t split_inputs(char *buf, size_t len, char **s, size_t *n, size_t max)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t count = 0;
    char *p = buf, *end = buf + len;

    while (p <= end && count < max) {
        char *q = memmem(p, (size_t)(end - p), sep, sizeof(sep) - 1);
        if (!q)
            break;
        s[count] = p;
        n[count++] = (size_t)(q - p);
        p = q + sizeof(sep) - 1;
    }
    return count;
}

static void test_vocab_vectors(void **state)
{
    char pattern[4200];
    glob_t gl;
    size_t total = 0, bad_total = 0;

    (void)state;
    NEED_FIXTURES();
    snprintf(pattern, sizeof(pattern), "%s/tokenizer/ggml-vocab-*.gguf",
             fixtures);
    if (glob(pattern, 0, NULL, &gl) != 0) {
        printf("skipped: no ggml-vocab-*.gguf\n");
        skip();
    }
    for (size_t v = 0; v < gl.gl_pathc; v++) {
        const char *path = gl.gl_pathv[v];
        char rel[4200], file[4200], *inp, *out, *line, *save = NULL;
        char *strs[128];
        size_t lens[128], inp_len, out_len, n_str, bad = 0, bad_trip = 0;
        sx_tokenizer *t;

        snprintf(rel, sizeof(rel), "tokenizer/%s", strrchr(path, '/') + 1);
        t = load_tok(rel);
        snprintf(file, sizeof(file), "%s.inp", path);
        inp = read_all(file, &inp_len);
        snprintf(file, sizeof(file), "%s.out", path);
        out = read_all(file, &out_len);
        assert_non_null(inp);
        assert_non_null(out);
        n_str = split_inputs(inp, inp_len, strs, lens, 128);
        assert_true(n_str > 0);

        line = out;
        for (size_t i = 0; i < n_str; i++) {
            int32_t *ids, want[1024];
            size_t n_ids, n_want = 0;
            char *p = (char *)"";

            /* The empty input has an empty line, which strtok skips. */
            if (lens[i] > 0) {
                p = strtok_r(line, "\n", &save);
                line = NULL;
                p = p ? p : (char *)"";
            }
            while (*p && n_want < 1024) {
                char *e;
                long x = strtol(p, &e, 10);
                if (e == p)
                    break;
                want[n_want++] = (int32_t)x;
                p = e;
            }
            assert_int_equal(sx_tokenizer_tokenize(t, strs[i], lens[i], false,
                                                   false, &ids, &n_ids), 0);
            if (n_ids != n_want ||
                memcmp(ids, want, n_want * sizeof(int32_t)) != 0) {
                bad++;
                printf("%s: test %zu differs (%zu ids, want %zu)\n", rel, i,
                       n_ids, n_want);
            }
            if (!round_trips(t, strs[i], lens[i])) {
                bad_trip++;
                printf("%s: test %zu does not round-trip\n", rel, i);
            }
            free(ids);
        }
        printf("%s: %zu/%zu vectors match, %zu/%zu round-trip\n", rel,
               n_str - bad, n_str, n_str - bad_trip, n_str);
        total += n_str;
        bad_total += bad + bad_trip;
        free(inp);
        free(out);
        sx_tokenizer_free(t);
    }
    globfree(&gl);
    assert_true(total > 0);
    assert_int_equal(bad_total, 0);
}

/* --- manifest prompts ---------------------------------------------------- */

static void check_run(const char *manifest, const char *run_id,
                      const char *model)
{
    char key[256];
    const char *run, *p;
    sx_tokenizer *t = load_tok(model);
    int prompts = 0;

    snprintf(key, sizeof(key), "\"id\": \"%s\"", run_id);
    run = strstr(manifest, key);
    assert_non_null(run);
    p = run;
    for (int k = 0; k < 3; k++) {
        int32_t *ids, want[512];
        size_t n_ids, n_want = 0, tlen, dlen;
        char *text, *back;

        p = strstr(p, "\"text\": ");
        assert_non_null(p);
        text = json_unquote(p + 8, &tlen, NULL);
        p = strstr(p, "\"tokens\": [");
        assert_non_null(p);
        p += 11;
        while (*p != ']' && n_want < 512) {
            want[n_want++] = (int32_t)strtol(p, (char **)&p, 10);
            while (*p == ',' || *p == ' ' || *p == '\n')
                p++;
        }
        assert_int_equal(sx_tokenizer_tokenize(t, text, tlen, true, false, &ids,
                                               &n_ids), 0);
        assert_int_equal(n_ids, n_want);
        assert_memory_equal(ids, want, n_want * sizeof(int32_t));
        assert_int_equal(sx_tokenizer_detokenize(t, ids, n_ids, 0, &back,
                                                 &dlen), 0);
        assert_int_equal(dlen, tlen);
        assert_memory_equal(back, text, tlen);
        free(back);
        free(ids);
        free(text);
        prompts++;
    }
    printf("%s: %d/3 prompts match llama.cpp\n", run_id, prompts);
    sx_tokenizer_free(t);
}

static void test_model_prompts(void **state)
{
    char path[4200], *manifest;
    size_t len;

    (void)state;
    NEED_FIXTURES();
    snprintf(path, sizeof(path), "%s/reference/manifest.json", fixtures);
    manifest = read_all(path, &len);
    assert_non_null(manifest);
    check_run(manifest, "tiny-llama-f32", "models/tiny-llama-f32.gguf");
    check_run(manifest, "tiny-qwen2-q8_0", "models/tiny-qwen2-q8_0.gguf");
    free(manifest);
}

/* The gpt-2 test strings through the models' tokenizers. */
static void test_cross_round_trip(void **state)
{
    static const char *const models[] = {"models/tiny-llama-f32.gguf",
                                         "models/tiny-qwen2-q8_0.gguf"};
    char path[4200], *inp, *strs[128];
    size_t len, lens[128], n;

    (void)state;
    NEED_FIXTURES();
    snprintf(path, sizeof(path), "%s/tokenizer/ggml-vocab-gpt-2.gguf.inp",
             fixtures);
    inp = read_all(path, &len);
    if (!inp) {
        printf("skipped: ggml-vocab-gpt-2.gguf.inp absent\n");
        skip();
    }
    n = split_inputs(inp, len, strs, lens, 128);
    for (size_t m = 0; m < 2; m++) {
        sx_tokenizer *t = load_tok(models[m]);
        for (size_t i = 0; i < n; i++)
            assert_true(round_trips(t, strs[i], lens[i]));
        sx_tokenizer_free(t);
    }
    free(inp);
}

static void test_parse_special(void **state)
{
    static const char msg[] = "<|im_start|>user\nHi<|im_end|>\n";
    sx_tokenizer *t;
    int32_t *ids;
    size_t n, len;
    char *back;

    (void)state;
    NEED_FIXTURES();
    t = load_tok("models/tiny-qwen2-q8_0.gguf");
    assert_int_equal(sx_tokenizer_tokenize(t, msg, sizeof(msg) - 1, true, true,
                                           &ids, &n), 0);
    assert_true(n >= 4);
    assert_int_equal(ids[0], 151644);
    assert_int_equal(ids[n - 2], 151645);
    assert_true(sx_tokenizer_is_eog(t, 151645));
    assert_false(sx_tokenizer_is_eog(t, ids[1]));
    /* Special text comes back only when asked for. */
    assert_int_equal(sx_tokenizer_detokenize(t, ids, n, SX_DETOK_SPECIAL, &back,
                                             &len), 0);
    assert_string_equal(back, msg);
    free(back);
    assert_int_equal(sx_tokenizer_detokenize(t, ids, n, 0, &back, &len), 0);
    assert_string_equal(back, "user\nHi\n");
    free(back);
    free(ids);

    /* Without parse_special the markers are plain text. */
    assert_int_equal(sx_tokenizer_tokenize(t, msg, sizeof(msg) - 1, true, false,
                                           &ids, &n), 0);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] < 151643);
    free(ids);
    sx_tokenizer_free(t);

    /* SPM: BOS text parsed as a control token, and no space after it. */
    t = load_tok("models/tiny-llama-f32.gguf");
    assert_int_equal(sx_tokenizer_tokenize(t, "<s>Hi", 5, false, true, &ids,
                                           &n), 0);
    assert_int_equal(ids[0], 1);
    free(ids);
    sx_tokenizer_free(t);
}

/* GPT-2's first 256 tokens are the byte alphabet: each is one distinct
 * byte, and each byte alone tokenizes back to its token. */
static void test_byte_alphabet(void **state)
{
    bool seen[256] = {false};
    sx_tokenizer *t;

    (void)state;
    NEED_FIXTURES();
    t = load_tok("tokenizer/ggml-vocab-gpt-2.gguf");
    for (int32_t id = 0; id < 256; id++) {
        char c;
        int32_t *ids;
        size_t n;

        assert_int_equal(sx_tokenizer_token_to_piece(t, id, false, &c, 1), 1);
        assert_false(seen[(unsigned char)c]);
        seen[(unsigned char)c] = true;
        if ((unsigned char)c < 0x80) {
            assert_int_equal(sx_tokenizer_tokenize(t, &c, 1, false, false,
                                                   &ids, &n), 0);
            assert_int_equal(n, 1);
            assert_int_equal(ids[0], id);
            free(ids);
        }
    }
    sx_tokenizer_free(t);
}

static void test_stream(void **state)
{
    static const char text[] = "Gr\xc3\xbc\xc3\x9f" "e \xe6\x9d\xb1\xe4\xba\xac "
                               "\xf0\x9f\x99\x82\n\tok. \xf0\x9f\xa6\x99!";
    static const char *const models[] = {"models/tiny-llama-f32.gguf",
                                         "models/tiny-qwen2-q8_0.gguf"};

    (void)state;
    NEED_FIXTURES();
    for (size_t m = 0; m < 2; m++) {
        sx_tokenizer *t = load_tok(models[m]);
        sx_detok *d = sx_detok_new(t, 0);
        char acc[256];
        size_t n_acc = 0, n, len;
        int32_t *ids;
        const char *s;
        int held = 0;

        assert_int_equal(sx_tokenizer_tokenize(t, text, sizeof(text) - 1, true,
                                               false, &ids, &n), 0);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(sx_detok_feed(d, ids[i], &s, &len), 0);
            assert_true(valid_utf8(s, len));
            held += len == 0;
            memcpy(acc + n_acc, s, len);
            n_acc += len;
        }
        assert_int_equal(sx_detok_flush(d, &s, &len), 0);
        assert_int_equal(len, 0);
        assert_int_equal(n_acc, sizeof(text) - 1);
        assert_memory_equal(acc, text, n_acc);
        assert_true(held > 0);  /* some ids carried only part of a char */
        free(ids);

        /* A lone lead byte and a stray continuation byte become U+FFFD. */
        if (sx_tokenizer_kind(t) == SX_TOK_SPM) {
            int32_t bad[2] = {sx_tokenizer_find(t, "<0xE6>", 6),
                              sx_tokenizer_find(t, "<0x80>", 6)};
            assert_int_equal(sx_detok_feed(d, bad[0], &s, &len), 0);
            assert_int_equal(len, 0);
            assert_int_equal(sx_detok_feed(d, sx_tokenizer_find(t, "A", 1),
                                           &s, &len), 0);
            assert_int_equal(len, 4);
            assert_memory_equal(s, "\xef\xbf\xbd" "A", 4);
            assert_int_equal(sx_detok_feed(d, bad[1], &s, &len), 0);
            assert_memory_equal(s, "\xef\xbf\xbd", 3);
            assert_int_equal(sx_detok_feed(d, bad[0], &s, &len), 0);
            assert_int_equal(sx_detok_flush(d, &s, &len), 0);
            assert_int_equal(len, 3);
        }
        assert_int_equal(sx_detok_feed(d, -1, &s, &len), SX_EINVAL);
        sx_detok_free(d);
        sx_tokenizer_free(t);
    }
    sx_detok_free(NULL);
}

/* A vocabulary built in memory: merges by rank and the pre-tokenizer. */
static void test_in_memory_bpe(void **state)
{
    /* Byte-level: 'Ġ' (U+0120) stands for the space byte. */
    static const char *const toks[] = {"a", "b", "c", "\xc4\xa0", "ab", "bc",
                                       "abc", "\xc4\xa0\x61", "<|end|>"};
    static const char *const merges[] = {"b c", "a b", "a bc", "\xc4\xa0 a"};
    static const int32_t types[] = {1, 1, 1, 1, 1, 1, 1, 1, 3};
    sx_tokenizer_spec spec = {
        .model = "gpt2", .pre = "gpt-2", .n_tokens = 9, .tokens = toks,
        .types = types, .n_merges = 4, .merges = merges, .bos = -1,
        .eos = 8, .unk = -1, .pad = -1, .add_eos = true,
    };
    char err[128];
    sx_tokenizer *t = sx_tokenizer_new(&spec, err, sizeof(err));
    int32_t *ids;
    size_t n;

    (void)state;
    assert_non_null(t);
    /* "b c" ranks before "a b": abc = a + bc -> "abc" via "a bc". */
    assert_int_equal(sx_tokenizer_tokenize(t, "abc ab", 6, true, false, &ids,
                                           &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 6);
    /* " ab": "a b" (rank 1) beats "Ġ a" (rank 3), and "Ġ ab" is none. */
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 4);
    assert_int_equal(ids[3], 8);                  /* EOS */
    free(ids);
    sx_tokenizer_free(t);

    spec.pre = "falcon";
    assert_null(sx_tokenizer_new(&spec, err, sizeof(err)));
    assert_non_null(strstr(err, "falcon"));
    spec.model = "bert";
    assert_null(sx_tokenizer_new(&spec, err, sizeof(err)));
    assert_non_null(strstr(err, "bert"));
    sx_tokenizer_free(NULL);
}

static void test_bad_input(void **state)
{
    sx_tokenizer *t;
    char buf[8], err[256] = "";
    int32_t *ids, bad[2] = {5, 99999999};
    size_t n, len;
    char *out;
    sx_gguf *g;

    (void)state;
    NEED_FIXTURES();
    t = load_tok("models/tiny-llama-f32.gguf");
    assert_int_equal(sx_tokenizer_token_to_piece(t, -1, false, buf, 8),
                     SX_EINVAL);
    assert_int_equal(sx_tokenizer_token_to_piece(t, 32000, false, buf, 8),
                     SX_EINVAL);
    assert_int_equal(sx_tokenizer_detokenize(t, bad, 2, 0, &out, &len),
                     SX_EINVAL);
    assert_null(out);
    /* A piece longer than the buffer reports its full length. */
    assert_int_equal(sx_tokenizer_token_to_piece(t, 1, true, buf, 1), 3);
    assert_int_equal(sx_tokenizer_tokenize(t, "", 0, true, false, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    assert_int_equal(sx_tokenizer_tokenize(t, "", 0, false, false, &ids, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(ids);
    free(ids);
    sx_tokenizer_free(t);

    /* A GGUF without a vocabulary (a LoRA adapter) is refused clearly. */
    {
        char path[4200];
        snprintf(path, sizeof(path), "%s/models/lora-tiny-llama.gguf",
                 fixtures);
        g = sx_gguf_open(path, err, sizeof(err));
        assert_non_null(g);
        assert_null(sx_tokenizer_from_gguf(g, err, sizeof(err)));
        assert_non_null(strstr(err, "tokenizer.ggml.model"));
        sx_gguf_close(g);
    }
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 100 KB inputs, including one word of 100 KB and 100 KB of spaces, must
 * stay fast (no quadratic step) and round-trip. */
static void test_long_input(void **state)
{
    static const char *const models[] = {"models/tiny-llama-f32.gguf",
                                         "models/tiny-qwen2-q8_0.gguf"};
    static const char *const words[] = {"The ", "quick ", "br\xc3\xb8wn ",
                                        "\xe6\x9d\xb1\xe4\xba\xac", "fox, ",
                                        "12345 ", "\xf0\x9f\x99\x82 ", "\n\t",
                                        "jumps! ", "<|im_start|>"};
    const size_t len = 100 * 1024;
    unsigned seed = 12345;
    char *text;

    (void)state;
    NEED_FIXTURES();
    text = malloc(len + 16);
    assert_non_null(text);
    for (size_t m = 0; m < 2; m++) {
        sx_tokenizer *t = load_tok(models[m]);
        for (int kind = 0; kind < 3; kind++) {
            size_t n = 0, n_ids;
            int32_t *ids;
            double t0;

            while (n < len) {
                const char *w = kind == 1 ? "a" : " ";
                if (kind == 0) {
                    seed = seed * 1103515245u + 12345u;
                    w = words[(seed >> 16) % 10];
                }
                size_t wl = strlen(w);
                memcpy(text + n, w, wl);
                n += wl;
            }
            t0 = now_s();
            assert_int_equal(sx_tokenizer_tokenize(t, text, n, true, true,
                                                   &ids, &n_ids), 0);
            printf("%s kind %d: %zu bytes -> %zu ids in %.1f ms\n", models[m],
                   kind, n, n_ids, (now_s() - t0) * 1e3);
            assert_true(now_s() - t0 < 2.0);
            assert_true(round_trips(t, text, n));
            free(ids);
        }
        sx_tokenizer_free(t);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab_vectors),
        cmocka_unit_test(test_model_prompts),
        cmocka_unit_test(test_cross_round_trip),
        cmocka_unit_test(test_parse_special),
        cmocka_unit_test(test_byte_alphabet),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_in_memory_bpe),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_long_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
