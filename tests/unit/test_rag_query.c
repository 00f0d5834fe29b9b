/* Unit tests of the rag module's query analysis (src/rag/query.c): what
 * survives of a user's text, that no FTS5 syntax can, the MATCH expression
 * built from it, and the score normalisation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "rag/rag.h"

static void parse(const char *s, struct sx_rag_terms *t)
{
    sx_rag_terms_parse(s, strlen(s), t);
}

/* Every term holds only word characters: no FTS5 syntax character. */
static void assert_plain(const struct sx_rag_terms *t)
{
    size_t i;

    for (i = 0; i < t->n; i++) {
        assert_true(strlen(t->term[i]) > 0);
        assert_null(strpbrk(t->term[i], "\"'*^:(){}+-,. \t\n"));
    }
}

static void test_words_lowercased_and_stopwords_dropped(void **state)
{
    struct sx_rag_terms t;

    (void)state;
    parse("What PAIN medications do you have?", &t);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.term[0], "pain");
    assert_string_equal(t.term[1], "medications");
}

static void test_only_stopwords_are_kept(void **state)
{
    struct sx_rag_terms t;

    (void)state;
    parse("what do you have", &t);
    assert_int_equal(t.n, 4);
}

static void test_duplicates_become_weights(void **state)
{
    struct sx_rag_terms t;

    (void)state;
    parse("aspirin Aspirin ASPIRIN price", &t);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.term[0], "aspirin");
    assert_true(t.weight[0] == 3.0);
    assert_true(t.weight[1] == 1.0);
}

static void test_fts_operators_are_plain_words(void **state)
{
    static const char *const hostile[] = {
        "pain OR aspirin",
        "pain AND NOT aspirin",
        "NEAR(pain aspirin, 2)",
        "asp* ^pain",
        "title:aspirin",
        "{title text}: aspirin",
        "\"unterminated phrase",
        "a\"b\"\"c",
        "- + ( ) ) ) (((",
        "rowid MATCH 1; DROP TABLE rag_chunks; --",
        "col:\"x\" * ^ NEAR/3",
    };
    struct sx_rag_terms t;
    char expr[4096];
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        parse(hostile[i], &t);
        assert_plain(&t);
        assert_true(sx_rag_fts_expr(&t, expr, sizeof(expr)) >= 0);
        /* Quotes only as term delimiters: an even count, 2 per term. */
        for (k = 0; expr[k]; k++)
            ;
        {
            size_t quotes = 0;

            for (k = 0; expr[k]; k++)
                quotes += expr[k] == '"';
            assert_int_equal(quotes, 2 * t.n);
        }
    }

    /* Operators are lower-cased words, searched for like any other. */
    parse("NEAR(pain aspirin, 2)", &t);
    assert_int_equal(t.n, 4);
    assert_string_equal(t.term[0], "near");
    assert_string_equal(t.term[3], "2");
    parse("title:aspirin", &t);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.term[0], "title");
    assert_string_equal(t.term[1], "aspirin");
}

static void test_expression_shape(void **state)
{
    struct sx_rag_terms t;
    char expr[256], small[8];

    (void)state;
    parse("aspirin pain", &t);
    assert_int_equal(sx_rag_fts_expr(&t, expr, sizeof(expr)), 19);
    assert_string_equal(expr, "\"aspirin\" OR \"pain\"");
    assert_int_equal(sx_rag_fts_expr(&t, small, sizeof(small)), SX_ETOOBIG);
    parse("", &t);
    assert_int_equal(t.n, 0);
    assert_int_equal(sx_rag_fts_expr(&t, expr, sizeof(expr)), 0);
    assert_string_equal(expr, "");
}

static double weight_of(const struct sx_rag_terms *t, const char *term)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->term[i], term) == 0)
            return t->weight[i];
    return 0;
}

/* A hyphenated compound weighs as two words: joined (as the index's
 * tokenizer adds it) and its parts sharing the other. Dashes are not
 * hyphens. */
static void test_hyphenated_compounds(void **state)
{
    struct sx_rag_terms t;
    char big[256];

    (void)state;
    parse("IL-6 and pro-inflammatory T\xE2\x80\x90" "cells, 10\xE2\x80\x93" "20 x- y", &t);
    assert_plain(&t);
    assert_true(weight_of(&t, "il6") == 1.0);
    assert_true(weight_of(&t, "il") == 0.5 && weight_of(&t, "6") == 0.5);
    assert_true(weight_of(&t, "proinflammatory") == 1.0);
    assert_true(weight_of(&t, "pro") == 0.5 && weight_of(&t, "inflammatory") == 0.5);
    assert_true(weight_of(&t, "tcells") == 1.0 && weight_of(&t, "cells") == 0.5);
    assert_true(weight_of(&t, "10") == 1.0 && weight_of(&t, "20") == 1.0);
    assert_true(weight_of(&t, "1020") == 0 && weight_of(&t, "xy") == 0);
    assert_true(weight_of(&t, "and") == 0);

    /* Three parts share one word's weight; a joined form longer than a
     * term is left out, its parts stay. */
    parse("state-of-art", &t);
    assert_true(weight_of(&t, "stateofart") == 1.0);
    assert_true(fabs(weight_of(&t, "state") - 1.0 / 3) < 1e-12);
    memset(big, 'a', 40);
    big[40] = '-';
    memset(big + 41, 'b', 40);
    big[81] = '\0';
    parse(big, &t);
    assert_int_equal(t.n, 2);
    assert_true(t.weight[0] == 0.5 && t.weight[1] == 0.5);
}

static void test_unicode_words_and_separators(void **state)
{
    struct sx_rag_terms t;

    (void)state;
    /* Non-ASCII letters stay in words; typographic punctuation splits. */
    parse("Farmácia—analgésicos “dipirona” 日本語", &t);
    assert_int_equal(t.n, 4);
    assert_string_equal(t.term[0], "farmácia");
    assert_string_equal(t.term[1], "analgésicos");
    assert_string_equal(t.term[2], "dipirona");
    assert_string_equal(t.term[3], "日本語");
}

static void test_invalid_utf8_and_limits(void **state)
{
    struct sx_rag_terms t;
    char big[4096];
    size_t i;

    (void)state;
    sx_rag_terms_parse("abc\xFF\xFE" "def \xC3", 9, &t);
    assert_int_equal(t.n, 2);
    assert_string_equal(t.term[0], "abc");
    assert_string_equal(t.term[1], "def");

    /* A word longer than SX_RAG_TERM_MAX is ignored. */
    memset(big, 'x', 200);
    strcpy(big + 200, " aspirin");
    parse(big, &t);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.term[0], "aspirin");

    /* At most SX_RAG_QUERY_TERMS_MAX distinct terms. */
    big[0] = '\0';
    for (i = 0; i < 200; i++) {
        char w[16];

        snprintf(w, sizeof(w), "w%zu ", i);
        strcat(big, w);
    }
    parse(big, &t);
    assert_int_equal(t.n, SX_RAG_QUERY_TERMS_MAX);
    sx_rag_terms_parse(NULL, 0, &t);
    assert_int_equal(t.n, 0);
}

static void test_normalise(void **state)
{
    (void)state;
    assert_true(sx_rag_normalise(0, 5) == 0);
    assert_true(sx_rag_normalise(1, 0) == 0);
    assert_true(sx_rag_normalise(-1, 5) == 0);
    assert_true(sx_rag_normalise(2.5, 5) == 0.5);
    assert_true(sx_rag_normalise(5, 5) == 1);
    assert_true(sx_rag_normalise(9, 5) == 1); /* capped */
    /* Monotone in the raw score for a fixed query. */
    assert_true(sx_rag_normalise(1, 5) < sx_rag_normalise(2, 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_words_lowercased_and_stopwords_dropped),
        cmocka_unit_test(test_only_stopwords_are_kept),
        cmocka_unit_test(test_duplicates_become_weights),
        cmocka_unit_test(test_fts_operators_are_plain_words),
        cmocka_unit_test(test_expression_shape),
        cmocka_unit_test(test_hyphenated_compounds),
        cmocka_unit_test(test_unicode_words_and_separators),
        cmocka_unit_test(test_invalid_utf8_and_limits),
        cmocka_unit_test(test_normalise),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
