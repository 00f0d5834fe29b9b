/* Chat template tests: every fixtures/chat-templates/<name>.jinja rendered
 * with the four messages of <name>.json must equal its `jinja_formatted`
 * byte for byte; plus the families' variants (default system prompts,
 * dates, Gemma's system message, Phi-3 legacy), the templates embedded in
 * the fixture models and the refusals. */
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

#include "engine/chat_template.h"
#include "engine/gguf.h"

#include "fixtures.h"

/* 26 Jul 2024 00:00 UTC, the date the fixtures were rendered with. */
static const time_t FIXTURE_DAY = 1721952000;

/* Value of "key": "..." in a JSON text, or NULL (absent or null). */
static char *json_field(const char *json, const char *key, size_t *len)
{
    char pat[128];
    const char *p;

    snprintf(pat, sizeof(pat), "\"%s\": ", key);
    p = strstr(json, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    return *p == '"' ? json_unquote(p, len, NULL) : NULL;
}

/* Text between quotes after marker in s ("bos_token '<s>'" -> "<s>"). */
static char *quoted_after(const char *s, const char *marker)
{
    const char *p = strstr(s, marker), *e;

    if (!p)
        return strdup("");
    p += strlen(marker);
    e = strchr(p, '\'');
    return strndup(p, e ? (size_t)(e - p) : 0);
}

typedef struct fixture_msgs {
    sx_chat_msg m[8];
    char *role[8], *content[8];
    size_t n;
} fixture_msgs;

static void read_messages(const char *json, fixture_msgs *fm)
{
    const char *p = strstr(json, "\"messages\": [");

    fm->n = 0;
    assert_non_null(p);
    while (fm->n < 8) {
        const char *r = strstr(p, "\"role\": "), *c, *close = strchr(p, ']');
        size_t len;
        if (!r || (close && close < r))
            break;
        fm->role[fm->n] = json_unquote(r + 8, &len, &p);
        c = strstr(p, "\"content\": ");
        assert_non_null(c);
        fm->content[fm->n] = json_unquote(c + 11, &len, &p);
        fm->m[fm->n] = (sx_chat_msg){fm->role[fm->n], fm->content[fm->n], len};
        fm->n++;
    }
}

static void free_messages(fixture_msgs *fm)
{
    for (size_t i = 0; i < fm->n; i++) {
        free(fm->role[i]);
        free(fm->content[i]);
    }
}

static const struct {
    const char *file;
    const char *family;
} expected_family[] = {
    {"Qwen-Qwen2.5-7B-Instruct", "chatml"},
    {"meta-llama-Llama-3.1-8B-Instruct", "llama3"},
    {"meta-llama-Llama-3.2-3B-Instruct", "llama3"},
    {"mistralai-Mistral-Nemo-Instruct-2407", "mistral-v3-tekken"},
    {"Mistral-Small-3.2-24B-Instruct-2506", "mistral-v7"},
    {"microsoft-Phi-3.5-mini-instruct", "phi3"},
    {"google-gemma-2-2b-it", "gemma"},
    {"google-gemma-4-31B-it", "gemma4"},
};

static void test_fixture_templates(void **state)
{
    char pattern[4200];
    glob_t gl;
    size_t compared = 0;

    (void)state;
    NEED_FIXTURES();
    snprintf(pattern, sizeof(pattern), "%s/chat-templates/*.json", fixtures);
    if (glob(pattern, 0, NULL, &gl) != 0) {
        printf("skipped: no chat template fixtures\n");
        skip();
    }
    for (size_t i = 0; i < gl.gl_pathc; i++) {
        char path[4200], err[256] = "", *json, *tmpl, *want, *note, *bos, *eos;
        char *out;
        size_t jlen, tlen, wlen, olen;
        fixture_msgs fm;
        sx_chat_template *t;
        const char *base = strrchr(gl.gl_pathv[i], '/') + 1;

        json = read_all(gl.gl_pathv[i], &jlen);
        snprintf(path, sizeof(path), "%.*s.jinja",
                 (int)(strlen(gl.gl_pathv[i]) - 5), gl.gl_pathv[i]);
        tmpl = read_all(path, &tlen);
        assert_non_null(json);
        assert_non_null(tmpl);
        note = json_field(json, "jinja_note", &wlen);
        assert_non_null(note);
        bos = quoted_after(note, "bos_token '");
        eos = quoted_after(note, "eos_token '");
        read_messages(json, &fm);
        assert_int_equal(fm.n, 4);

        t = sx_chat_template_new(tmpl, tlen, bos, eos, err, sizeof(err));
        if (!t)
            fail_msg("%s: %s", base, err);
        sx_chat_template_set_now(t, FIXTURE_DAY);
        for (size_t k = 0; k < sizeof(expected_family) /
                                    sizeof(expected_family[0]); k++)
            if (strncmp(base, expected_family[k].file,
                        strlen(expected_family[k].file)) == 0)
                assert_string_equal(sx_chat_template_name(t),
                                    expected_family[k].family);

        want = json_field(json, "jinja_formatted", &wlen);
        if (want) {
            assert_int_equal(sx_chat_template_apply(t, fm.m, fm.n, true, &out,
                                                    &olen, err, sizeof(err)),
                             0);
            if (olen != wlen || memcmp(out, want, wlen) != 0)
                fail_msg("%s: rendering differs:\n got: %s\nwant: %s", base,
                         out, want);
            assert_int_equal(sx_chat_template_has_bos(t),
                             bos[0] && strncmp(want, bos, strlen(bos)) == 0);
            printf("%s: identical (%zu bytes, %s)\n", base, olen,
                   sx_chat_template_name(t));
            compared++;
            free(out);
            free(want);
        } else {
            printf("%s: no Jinja reference (%s)\n", base, note);
        }
        sx_chat_template_free(t);
        free_messages(&fm);
        free(note);
        free(bos);
        free(eos);
        free(json);
        free(tmpl);
    }
    globfree(&gl);
    assert_true(compared >= 7);
}

static sx_chat_template *from_fixture(const char *name, const char *bos,
                                      const char *eos)
{
    char path[4200], err[256] = "", *tmpl;
    size_t len;
    sx_chat_template *t;

    snprintf(path, sizeof(path), "%s/chat-templates/%s.jinja", fixtures, name);
    tmpl = read_all(path, &len);
    assert_non_null(tmpl);
    t = sx_chat_template_new(tmpl, len, bos, eos, err, sizeof(err));
    free(tmpl);
    if (!t)
        fail_msg("%s: %s", name, err);
    sx_chat_template_set_now(t, FIXTURE_DAY);
    return t;
}

static void expect(const sx_chat_template *t, const sx_chat_msg *m, size_t n,
                   bool gen, const char *want)
{
    char *out, err[256] = "";
    size_t len;

    assert_int_equal(sx_chat_template_apply(t, m, n, gen, &out, &len, err,
                                            sizeof(err)), 0);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

#define MSG(r, c) {r, c, sizeof(c) - 1}

static void test_variants(void **state)
{
    static const sx_chat_msg sys_user[] = {MSG("system", "  Be brief. \n"),
                                           MSG("user", "Hi")};
    static const sx_chat_msg user[] = {MSG("user", "Hi")};
    static const sx_chat_msg model_think[] = {
        MSG("user", "Q"), MSG("assistant", "<|channel>hmm<channel|> A ")};
    sx_chat_template *t;
    char *out, err[256];
    size_t len;

    (void)state;
    NEED_FIXTURES();

    /* Qwen2.5: its own default system prompt when none is given. */
    t = from_fixture("Qwen-Qwen2.5-7B-Instruct", "<|endoftext|>", "<|im_end|>");
    expect(t, user, 1, true,
           "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You "
           "are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
           "<|im_end|>\n<|im_start|>assistant\n");
    expect(t, user, 1, false,
           "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You "
           "are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi"
           "<|im_end|>\n");
    sx_chat_template_free(t);

    /* Gemma 2: the system message joins the first user turn. */
    t = from_fixture("google-gemma-2-2b-it", "<bos>", "<eos>");
    expect(t, sys_user, 2, true,
           "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
           "<start_of_turn>model\n");
    expect(t, model_think, 2, false,
           "<bos><start_of_turn>user\nQ<end_of_turn>\n<start_of_turn>model\n"
           "<|channel>hmm<channel|> A<end_of_turn>\n");
    assert_int_equal(sx_chat_template_apply(t, model_think + 1, 1, true, &out,
                                            &len, err, sizeof(err)),
                     SX_EINVAL);
    assert_non_null(strstr(err, "alternate"));
    assert_null(out);
    sx_chat_template_free(t);

    /* Gemma 4: thinking spans are dropped from assistant turns. */
    t = from_fixture("google-gemma-4-31B-it", "<bos>", "<eos>");
    expect(t, model_think, 2, false,
           "<bos><|turn>user\nQ<turn|>\n<|turn>model\nA<turn|>\n");
    sx_chat_template_free(t);

    /* Llama 3.2 prints today's date; 3.1 always its fixed one. */
    t = from_fixture("meta-llama-Llama-3.2-3B-Instruct", "<|begin_of_text|>",
                     "<|eot_id|>");
    sx_chat_template_set_now(t, FIXTURE_DAY + 40 * 86400);
    expect(t, user, 1, false,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
           "Cutting Knowledge Date: December 2023\nToday Date: 04 Sep 2024\n\n"
           "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi"
           "<|eot_id|>");
    sx_chat_template_free(t);
    t = from_fixture("meta-llama-Llama-3.1-8B-Instruct", "<|begin_of_text|>",
                     "<|eot_id|>");
    sx_chat_template_set_now(t, FIXTURE_DAY + 40 * 86400);
    expect(t, sys_user, 2, true,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
           "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
           "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi"
           "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
    sx_chat_template_free(t);

    /* Mistral Small 3.2: the template's default system prompt, dated. */
    t = from_fixture("Mistral-Small-3.2-24B-Instruct-2506", "<s>", "</s>");
    assert_int_equal(sx_chat_template_apply(t, user, 1, true, &out, &len, err,
                                            sizeof(err)), 0);
    assert_true(strncmp(out, "<s>[SYSTEM_PROMPT]You are Mistral Small 3, a "
                        "Large Language Model", 60) == 0);
    assert_non_null(strstr(out, "The current date is 2024-07-26.\n\nWhen"));
    assert_non_null(strstr(out, "(e.g. \"What are some good restaurants"));
    assert_non_null(strstr(out, "at the moment.[/SYSTEM_PROMPT][INST]Hi"
                                "[/INST]"));
    assert_int_equal(out[len - 1], ']');
    free(out);
    sx_chat_template_free(t);

    /* Mistral Nemo: the system message only rides on a final user turn. */
    t = from_fixture("mistralai-Mistral-Nemo-Instruct-2407", "<s>", "</s>");
    expect(t, sys_user, 2, true, "<s>[INST]  Be brief. \n\n\nHi[/INST]");
    sx_chat_template_free(t);
}

static void test_model_templates(void **state)
{
    static const sx_chat_msg sys_user[] = {MSG("system", "Be brief."),
                                           MSG("user", "Hi")};
    static const sx_chat_msg user[] = {MSG("user", "Hi")};
    struct {
        const char *model, *bos, *eos, *family, *want_user, *want_sys;
    } cases[] = {
        {"models/tiny-qwen2-q8_0.gguf", "<|endoftext|>", "<|endoftext|>",
         "chatml",
         "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
         "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"
         "<|im_end|>\n<|im_start|>assistant\n"},
        {"tokenizer/ggml-vocab-phi-3.gguf", "<s>", "<|endoftext|>",
         "phi3-legacy", "<s><|user|>\nHi<|end|>\n<|assistant|>\n",
         "<s><|user|>\nBe brief.\n\nHi<|end|>\n<|assistant|>\n"},
    };

    (void)state;
    NEED_FIXTURES();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[4200], err[256] = "";
        const char *tmpl;
        size_t len;
        sx_gguf *g;
        sx_chat_template *t;

        snprintf(path, sizeof(path), "%s/%s", fixtures, cases[i].model);
        g = sx_gguf_open(path, err, sizeof(err));
        assert_non_null(g);
        tmpl = sx_gguf_get_str(g, "tokenizer.chat_template", &len);
        assert_non_null(tmpl);
        t = sx_chat_template_new(tmpl, len, cases[i].bos, cases[i].eos, err,
                                 sizeof(err));
        assert_non_null(t);
        assert_string_equal(sx_chat_template_name(t), cases[i].family);
        expect(t, user, 1, true, cases[i].want_user);
        expect(t, sys_user, 2, true, cases[i].want_sys);
        sx_chat_template_free(t);
        sx_gguf_close(g);
    }
}

static void test_refusals(void **state)
{
    static const char jinja[] = "{% for m in messages %}{{ m.content }}"
                                "{% endfor %}";
    static const sx_chat_msg tool[] = {MSG("tool", "42")};
    static const sx_chat_msg user[] = {MSG("user", "Hi")};
    sx_chat_template *t;
    char err[256] = "", *out;
    size_t len;

    (void)state;
    assert_null(sx_chat_template_new(jinja, sizeof(jinja) - 1, "", "", err,
                                     sizeof(err)));
    assert_non_null(strstr(err, "unrecognised"));
    assert_null(sx_chat_template_new_named("jinja", NULL, NULL, err,
                                           sizeof(err)));
    assert_non_null(strstr(err, "jinja"));

    /* No template: ChatML, as llama.cpp; and ChatML by name. */
    t = sx_chat_template_new(NULL, 0, NULL, NULL, err, sizeof(err));
    assert_non_null(t);
    assert_string_equal(sx_chat_template_name(t), "chatml");
    expect(t, user, 1, true,
           "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    assert_false(sx_chat_template_has_bos(t));
    assert_int_equal(sx_chat_template_apply(t, tool, 1, true, &out, &len, err,
                                            sizeof(err)), SX_EINVAL);
    assert_non_null(strstr(err, "tool"));
    sx_chat_template_free(t);

    t = sx_chat_template_new_named("llama3", "<|begin_of_text|>", "<|eot_id|>",
                                   err, sizeof(err));
    assert_non_null(t);
    assert_true(sx_chat_template_has_bos(t));
    sx_chat_template_free(t);
    sx_chat_template_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_templates),
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_model_templates),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
