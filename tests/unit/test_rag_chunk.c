/* Unit tests of the rag module's chunking (src/rag/chunk.c): token
 * estimates, sentence boundaries, budgets, overlap between neighbours,
 * overlong sentences and words, and UTF-8 safety of every span. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "rag/rag.h"

static char *span(const char *text, const struct sx_rag_piece *p)
{
    return strndup(text + p->off, p->len);
}

/* 1 if s[0..len) is whole UTF-8 characters. */
static int utf8_whole(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = p[i] < 0x80 ? 1 : p[i] >= 0xF0 ? 4 : p[i] >= 0xE0 ? 3 : p[i] >= 0xC0 ? 2 : 0;
        size_t k;

        if (n == 0 || i + n > len)
            return 0;
        for (k = 1; k < n; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
        i += n;
    }
    return 1;
}

static void test_count_tokens(void **state)
{
    (void)state;
    assert_int_equal(sx_rag_count_tokens("", 0), 0);
    assert_int_equal(sx_rag_count_tokens("   \n\t", 5), 0);
    assert_int_equal(sx_rag_count_tokens("hello world", 11), 2);
    assert_int_equal(sx_rag_count_tokens("Hello, world!", 13), 4);
    /* 13 letters: 1 + 12/6 = 3 tokens. */
    assert_int_equal(sx_rag_count_tokens("antibacterial", 13), 3);
    /* "café" is one word of 5 bytes. */
    assert_int_equal(sx_rag_count_tokens("café au lait", strlen("café au lait")), 3);
}

static void test_short_text_is_one_chunk(void **state)
{
    const char *t = "  Pain reliever and anti-inflammatory. Dosage: 1-2 tablets.  ";
    struct sx_rag_chunking c = {256, 48};
    struct sx_rag_piece *p;
    size_t n;
    char *s;

    (void)state;
    assert_int_equal(sx_rag_chunk(t, strlen(t), &c, &p, &n), 0);
    assert_int_equal(n, 1);
    s = span(t, &p[0]);
    assert_string_equal(s, "Pain reliever and anti-inflammatory. Dosage: 1-2 tablets.");
    free(s);
    free(p);
}

static void test_blank_text_has_no_chunks(void **state)
{
    struct sx_rag_chunking c = {256, 48};
    struct sx_rag_piece *p = (void *)1;
    size_t n = 9;

    (void)state;
    assert_int_equal(sx_rag_chunk(" \n\n  ", 5, &c, &p, &n), 0);
    assert_int_equal(n, 0);
    assert_null(p);
}

static void test_bad_options(void **state)
{
    struct sx_rag_chunking c = {8, 0};
    struct sx_rag_piece *p;
    size_t n;

    (void)state;
    assert_int_equal(sx_rag_chunk("a b c", 5, &c, &p, &n), SX_EINVAL);
    c = (struct sx_rag_chunking){64, 40};
    assert_int_equal(sx_rag_chunk("a b c", 5, &c, &p, &n), SX_EINVAL);
    assert_int_equal(sx_rag_chunk("a b c", 5, NULL, &p, &n), SX_EINVAL);
}

/* Ten sentences of 8 tokens each; budget 16 fits two sentences. Chunks must
 * end on sentence boundaries and overlap by one whole sentence. */
static void test_sentence_boundaries_and_overlap(void **state)
{
    char text[1024] = "";
    struct sx_rag_chunking c = {16, 8};
    struct sx_rag_piece *p;
    size_t n, i;
    int k;

    (void)state;
    for (k = 0; k < 10; k++) {
        char s[64];

        snprintf(s, sizeof(s), "%sSentence number %c has words here.", k ? " " : "",
                 'a' + k);
        strcat(text, s);
    }
    assert_int_equal(sx_rag_count_tokens("Sentence number a has words here.", 33), 8);
    assert_int_equal(sx_rag_chunk(text, strlen(text), &c, &p, &n), 0);
    assert_int_equal(n, 9); /* sentences 1-2, 2-3, ..., 9-10 */
    for (i = 0; i < n; i++) {
        char *s = span(text, &p[i]);

        assert_true(p[i].tokens <= 16);
        assert_true(strncmp(s, "Sentence number ", 16) == 0); /* starts a sentence */
        assert_int_equal(s[strlen(s) - 1], '.');                /* ends one */
        if (i > 0) {
            /* The first sentence of this chunk is the last of the previous. */
            char *prev = span(text, &p[i - 1]);
            const char *last = strrchr(prev, 'S');

            assert_non_null(last);
            assert_true(strncmp(s, last, strlen(last)) == 0);
            free(prev);
        }
        free(s);
    }
    /* The last chunk ends at the end of the text. */
    assert_int_equal(p[n - 1].off + p[n - 1].len, strlen(text));
    free(p);
}

static void test_no_overlap(void **state)
{
    const char *t = "One two three four five six. Seven eight nine ten eleven twelve. "
                    "Thirteen fourteen fifteen sixteen seventeen eighteen.";
    struct sx_rag_chunking c = {16, 0};
    struct sx_rag_piece *p;
    size_t n;

    (void)state;
    assert_int_equal(sx_rag_chunk(t, strlen(t), &c, &p, &n), 0);
    assert_int_equal(n, 2);
    assert_true(p[1].off >= p[0].off + p[0].len); /* disjoint */
    free(p);
}

/* Abbreviations followed by lower case do not end a sentence; a blank line
 * does. */
static void test_abbreviation_and_paragraphs(void **state)
{
    const char *t = "Take e.g. aspirin daily. Next one\n\nnew paragraph here with more words";
    struct sx_rag_chunking c = {16, 0};
    struct sx_rag_piece *p;
    size_t n;
    char *s;

    (void)state;
    assert_int_equal(sx_rag_chunk(t, strlen(t), &c, &p, &n), 0);
    assert_int_equal(n, 2);
    s = span(t, &p[0]);
    assert_string_equal(s, "Take e.g. aspirin daily. Next one");
    free(s);
    s = span(t, &p[1]);
    assert_string_equal(s, "new paragraph here with more words");
    free(s);
    free(p);
}

/* A sentence longer than the budget is cut at word boundaries. */
static void test_long_sentence_cut_at_words(void **state)
{
    char text[4096] = "";
    struct sx_rag_chunking c = {16, 4};
    struct sx_rag_piece *p;
    size_t n, i, covered = 0;
    int k;

    (void)state;
    for (k = 0; k < 100; k++)
        strcat(text, k ? " word" : "word");
    assert_int_equal(sx_rag_chunk(text, strlen(text), &c, &p, &n), 0);
    assert_true(n >= 7);
    for (i = 0; i < n; i++) {
        assert_true(p[i].tokens <= 16);
        assert_true(p[i].off == 0 || text[p[i].off - 1] == ' ');
        assert_true(p[i].off + p[i].len == strlen(text) || text[p[i].off + p[i].len] == ' ');
        covered += (size_t)p[i].tokens;
    }
    assert_true(covered >= 100);
    free(p);
}

/* Multi-byte text without spaces: every span must hold whole characters,
 * the budget must hold, and all text must be covered. */
static void test_utf8_never_split(void **state)
{
    char text[8192] = "";
    struct sx_rag_chunking c = {16, 0};
    struct sx_rag_piece *p;
    size_t n, i, total = 0;
    int k;

    (void)state;
    for (k = 0; k < 300; k++)
        strcat(text, k % 3 == 0 ? "日" : k % 3 == 1 ? "é" : "\xF0\x9F\x98\x80"); /* 😀 */
    assert_int_equal(sx_rag_chunk(text, strlen(text), &c, &p, &n), 0);
    assert_true(n > 1);
    for (i = 0; i < n; i++) {
        assert_true(utf8_whole(text + p[i].off, p[i].len));
        assert_true(p[i].tokens <= 16);
        total += p[i].len;
    }
    assert_int_equal(total, strlen(text));
    free(p);
}

/* Invalid UTF-8 in the input must not make a chunk end inside a valid
 * sequence, nor crash. */
static void test_invalid_bytes_do_not_crash(void **state)
{
    const char t[] = "abc \xC3 def \xE2\x82 ghi. \xFF\xFE Next sentence \xF0\x9F\x98";
    struct sx_rag_chunking c = {16, 4};
    struct sx_rag_piece *p;
    size_t n, i;

    (void)state;
    assert_int_equal(sx_rag_chunk(t, sizeof(t) - 1, &c, &p, &n), 0);
    assert_true(n >= 1);
    for (i = 0; i < n; i++)
        assert_true(p[i].off + p[i].len <= sizeof(t) - 1);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_tokens),
        cmocka_unit_test(test_short_text_is_one_chunk),
        cmocka_unit_test(test_blank_text_has_no_chunks),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_sentence_boundaries_and_overlap),
        cmocka_unit_test(test_no_overlap),
        cmocka_unit_test(test_abbreviation_and_paragraphs),
        cmocka_unit_test(test_long_sentence_cut_at_words),
        cmocka_unit_test(test_utf8_never_split),
        cmocka_unit_test(test_invalid_bytes_do_not_crash),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
