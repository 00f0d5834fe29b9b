/* Unit tests of the sampler and the stop-sequence matcher (engine/sample.h):
 * greedy ties, penalties, bias, truncation, seeded reproducibility, the
 * shape of the sampled distribution, log-probabilities against a direct
 * computation, and stop strings split across streamed pieces. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/sample.h"
#include "engine/sample_simd.h"

static sx_sampler *new_sampler(const sx_sample_params *p, int32_t n)
{
    int err = 1;
    const char *why = "x";
    sx_sampler *s = sx_sampler_new(p, n, &err, &why);

    assert_non_null(s);
    assert_int_equal(err, SX_OK);
    assert_null(why);
    return s;
}

static int32_t sample_once(sx_sampler *s, const float *logits, int32_t n)
{
    float *tmp = malloc(sizeof(float) * (size_t)n);
    sx_sample_out out;

    assert_non_null(tmp);
    memcpy(tmp, logits, sizeof(float) * (size_t)n);
    assert_int_equal(sx_sampler_sample(s, tmp, &out), SX_OK);
    free(tmp);
    return out.token;
}

static void test_greedy_ties_lowest_id(void **state)
{
    float l[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, 2.0f};
    sx_sample_params p = {0};
    sx_sampler *s;

    (void)state;
    s = new_sampler(&p, 6);
    assert_int_equal(sample_once(s, l, 6), 1);
    assert_int_equal(sx_sampler_n_generated(s), 1);
    sx_sampler_free(s);
}

static void test_bad_params(void **state)
{
    sx_sample_params p = {0};
    sx_logit_bias b = {7, 1.0f};
    int err = 0;
    const char *why = NULL;

    (void)state;
    p.temperature = -1.0f;
    assert_null(sx_sampler_new(&p, 10, &err, &why));
    assert_int_equal(err, SX_EINVAL);
    assert_string_equal(why, "temperature");

    p.temperature = 1.0f;
    p.top_p = 1.5f;
    assert_null(sx_sampler_new(&p, 10, &err, &why));
    assert_string_equal(why, "top_p");

    p.top_p = 0.9f;
    p.frequency_penalty = 3.0f;
    assert_null(sx_sampler_new(&p, 10, &err, &why));
    assert_string_equal(why, "frequency_penalty");

    p.frequency_penalty = 0.0f;
    p.logit_bias = &b;
    p.n_logit_bias = 1;
    assert_null(sx_sampler_new(&p, 5, &err, &why));
    assert_string_equal(why, "logit_bias");

    p.n_logit_bias = 0;
    p.top_logprobs = 21;
    assert_null(sx_sampler_new(&p, 5, &err, &why));
    assert_string_equal(why, "top_logprobs");

    assert_null(sx_sampler_new(NULL, 5, NULL, NULL));
    sx_sampler_free(NULL);
}

static void test_all_masked_is_error(void **state)
{
    float l[3] = {-INFINITY, -INFINITY, NAN};
    sx_sample_params p = {0};
    sx_sample_out out;
    sx_sampler *s;

    (void)state;
    s = new_sampler(&p, 3);
    assert_int_equal(sx_sampler_sample(s, l, &out), SX_EINVAL);
    sx_sampler_free(s);
}

static void test_penalties_openai(void **state)
{
    float l[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    sx_sample_params p = {0};
    sx_sample_out out;
    sx_sampler *s;

    (void)state;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    s = new_sampler(&p, 4);
    assert_int_equal(sx_sampler_accept(s, 2), SX_OK);
    assert_int_equal(sx_sampler_accept(s, 2), SX_OK);
    assert_int_equal(sx_sampler_accept(s, 0), SX_OK);
    assert_int_equal(sx_sampler_accept(s, 9), SX_EINVAL);
    assert_int_equal(sx_sampler_sample(s, l, &out), SX_OK);
    /* token 2: 1 - 2*0.25 - 0.5; token 0: 1 - 0.25 - 0.5; 1, 3 unchanged */
    assert_float_equal(l[2], 0.0f, 1e-6);
    assert_float_equal(l[0], 0.25f, 1e-6);
    assert_float_equal(l[1], 1.0f, 1e-6);
    assert_float_equal(l[3], 1.0f, 1e-6);
    assert_int_equal(out.token, 1);
    assert_int_equal(sx_sampler_n_generated(s), 4);
    sx_sampler_free(s);
}

static void test_penalty_counts_survive_growth(void **state)
{
    enum { N = 5000 };
    float *l = calloc(N, sizeof(float));
    sx_sample_params p = {0};
    sx_sampler *s;

    (void)state;
    assert_non_null(l);
    p.frequency_penalty = 1.0f;
    s = new_sampler(&p, N);
    /* 1000 distinct tokens force several rehashes; token i seen i%3+1 times. */
    for (int i = 0; i < 1000; i++) {
        for (int r = 0; r <= i % 3; r++)
            assert_int_equal(sx_sampler_accept(s, i), SX_OK);
    }
    l[4999] = -10.0f;
    assert_int_equal(sample_once(s, l, N), 1000);
    for (int i = 0; i < 1000; i++)
        l[i] = 0.0f;
    {
        sx_sample_out out;

        assert_int_equal(sx_sampler_sample(s, l, &out), SX_OK);
        for (int i = 0; i < 1000; i++)
            assert_float_equal(l[i], -(float)(i % 3 + 1), 1e-6);
    }
    sx_sampler_free(s);
    free(l);
}

static void test_logit_bias(void **state)
{
    float l[4] = {3.0f, 1.0f, 0.0f, 2.0f};
    sx_logit_bias b[2] = {{0, -100.0f}, {2, 2.5f}};
    sx_sample_params p = {0};
    sx_sampler *s;

    (void)state;
    p.logit_bias = b;
    p.n_logit_bias = 2;
    s = new_sampler(&p, 4);
    b[1].bias = -50.0f;     /* the sampler keeps its own copy */
    assert_int_equal(sample_once(s, l, 4), 2);
    sx_sampler_free(s);
}

/* Draws n tokens with a fresh sampler per seed base and counts them. */
static void histogram(const sx_sample_params *p, const float *l, int32_t nv,
                      int draws, int *counts)
{
    sx_sample_params q = *p;
    sx_sampler *s;

    memset(counts, 0, sizeof(int) * (size_t)nv);
    q.seed = 12345;
    s = new_sampler(&q, nv);
    for (int i = 0; i < draws; i++) {
        counts[sample_once(s, l, nv)]++;
    }
    sx_sampler_free(s);
}

static void test_distribution_matches_softmax(void **state)
{
    /* probabilities 0.5, 0.3, 0.2 at temperature 1 */
    float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    sx_sample_params p = {0};
    int c[3];

    (void)state;
    p.temperature = 1.0f;
    histogram(&p, l, 3, 20000, c);
    /* 4 sigma of a binomial with n = 20000 is under 300 */
    assert_true(abs(c[0] - 10000) < 300);
    assert_true(abs(c[1] - 6000) < 300);
    assert_true(abs(c[2] - 4000) < 300);

    /* temperature 2 flattens: p ~ sqrt(p) normalised */
    p.temperature = 2.0f;
    histogram(&p, l, 3, 20000, c);
    {
        double a = sqrt(0.5), b = sqrt(0.3), d = sqrt(0.2), z = a + b + d;

        assert_true(fabs(c[0] - 20000 * a / z) < 300);
        assert_true(fabs(c[2] - 20000 * d / z) < 300);
    }
}

static void test_truncation(void **state)
{
    float l[5] = {logf(0.4f), logf(0.3f), logf(0.15f), logf(0.1f),
                  logf(0.05f)};
    sx_sample_params p = {0};
    int c[5];

    (void)state;
    p.temperature = 1.0f;

    p.top_k = 2;
    histogram(&p, l, 5, 7000, c);
    assert_int_equal(c[2] + c[3] + c[4], 0);
    assert_true(abs(c[0] - 4000) < 250);       /* 0.4/0.7 of 7000 */

    /* top_p 0.8: the nucleus is {0,1,2} (0.85 >= 0.8), renormalised. */
    p.top_k = 0;
    p.top_p = 0.8f;
    histogram(&p, l, 5, 8500, c);
    assert_int_equal(c[3] + c[4], 0);
    assert_true(abs(c[2] - 1500) < 200);

    /* top_p reached exactly on a boundary keeps no more than needed */
    p.top_p = 0.4f;
    histogram(&p, l, 5, 500, c);
    assert_int_equal(c[0], 500);

    /* min_p 0.3: keep p >= 0.12 -> {0,1,2} */
    p.top_p = 1.0f;
    p.min_p = 0.3f;
    histogram(&p, l, 5, 2000, c);
    assert_int_equal(c[3] + c[4], 0);
    assert_true(c[2] > 0);

    /* top_k 1 is greedy whatever the temperature */
    p.min_p = 0.0f;
    p.top_k = 1;
    p.temperature = 5.0f;
    histogram(&p, l, 5, 200, c);
    assert_int_equal(c[0], 200);

    /* top_k combined with top_p: k = 4 then nucleus 0.5 of that mass */
    p.temperature = 1.0f;
    p.top_k = 4;
    p.top_p = 0.5f;
    histogram(&p, l, 5, 2000, c);
    assert_int_equal(c[2] + c[3] + c[4], 0);
    assert_true(c[1] > 0);
}

/* A big vocabulary exercises the chunked nucleus (several quickselect
 * rounds) and the top-k heap: every draw must be within the set that a
 * full sort would keep. */
static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;

    return (x < y) - (x > y);
}

static void test_large_vocab_nucleus(void **state)
{
    enum { N = 151936 };
    float *l = malloc(sizeof(float) * N), *sorted = malloc(sizeof(float) * N);
    sx_sample_params p = {0};
    sx_sampler *s;
    uint64_t x = 42;
    double z = 0.0, cum = 0.0;
    float cut = 0.0f;

    (void)state;
    assert_non_null(l);
    assert_non_null(sorted);
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        l[i] = (float)((x >> 40) % 100000) / 10000.0f;  /* [0, 10) */
    }
    memcpy(sorted, l, sizeof(float) * N);
    qsort(sorted, N, sizeof(float), cmp_desc);
    for (int i = 0; i < N; i++)
        z += exp(sorted[i] - sorted[0]);
    for (int i = 0; i < N; i++) {
        cum += exp(sorted[i] - sorted[0]);
        if (cum >= 0.9 * z) {
            cut = sorted[i];
            break;
        }
    }
    p.temperature = 1.0f;
    p.top_p = 0.9f;
    s = new_sampler(&p, N);
    for (int i = 0; i < 200; i++) {
        int32_t t = sample_once(s, l, N);

        assert_true(l[t] >= cut);
    }
    sx_sampler_free(s);

    p.top_p = 1.0f;
    p.top_k = 40;
    s = new_sampler(&p, N);
    for (int i = 0; i < 200; i++) {
        int32_t t = sample_once(s, l, N);

        assert_true(l[t] >= sorted[39]);
    }
    sx_sampler_free(s);
    free(l);
    free(sorted);
}

static void test_seed_reproducible(void **state)
{
    enum { N = 1000, STEPS = 64 };
    float l[N];
    int32_t a[STEPS], b[STEPS], c[STEPS];
    sx_sample_params p = {0};
    sx_sampler *s;
    int differ = 0;

    (void)state;
    for (int i = 0; i < N; i++)
        l[i] = sinf((float)i) * 2.0f;
    p.temperature = 0.9f;
    p.top_p = 0.95f;
    p.presence_penalty = 0.3f;
    p.seed = 7;
    s = new_sampler(&p, N);
    for (int i = 0; i < STEPS; i++)
        a[i] = sample_once(s, l, N);
    sx_sampler_free(s);
    s = new_sampler(&p, N);
    for (int i = 0; i < STEPS; i++)
        b[i] = sample_once(s, l, N);
    sx_sampler_free(s);
    p.seed = 8;
    s = new_sampler(&p, N);
    for (int i = 0; i < STEPS; i++)
        c[i] = sample_once(s, l, N);
    sx_sampler_free(s);

    assert_memory_equal(a, b, sizeof(a));
    for (int i = 0; i < STEPS; i++)
        differ += a[i] != c[i];
    assert_true(differ > 0);
}

static void test_logprobs(void **state)
{
    float l[6] = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f, 2.0f};
    float raw[6];
    sx_sample_params p = {0};
    sx_sample_out out;
    sx_sampler *s;
    double z = 0.0, logz;

    (void)state;
    memcpy(raw, l, sizeof(l));
    for (int i = 0; i < 6; i++)
        z += exp(raw[i] / 2.0);
    logz = log(z);

    p.temperature = 2.0f;
    p.top_logprobs = 3;
    p.seed = 1;
    s = new_sampler(&p, 6);
    assert_int_equal(sx_sampler_sample(s, l, &out), SX_OK);
    assert_float_equal(out.logprob, raw[out.token] / 2.0 - logz, 1e-5);
    assert_int_equal(out.n_top, 3);
    assert_int_equal(out.top[0].token, 1);      /* tie with 2: lower id */
    assert_int_equal(out.top[1].token, 2);
    assert_int_equal(out.top[2].token, 5);
    assert_float_equal(out.top[0].logprob, 1.5 - logz, 1e-5);
    assert_float_equal(out.top[2].logprob, 1.0 - logz, 1e-5);
    sx_sampler_free(s);

    /* greedy: logprobs of the plain softmax */
    memcpy(l, raw, sizeof(l));
    p.temperature = 0.0f;
    p.top_logprobs = 0;
    p.logprobs = 1;
    s = new_sampler(&p, 6);
    assert_int_equal(sx_sampler_sample(s, l, &out), SX_OK);
    z = 0.0;
    for (int i = 0; i < 6; i++)
        z += exp(raw[i]);
    assert_int_equal(out.token, 1);
    assert_float_equal(out.logprob, 3.0 - log(z), 1e-5);
    assert_int_equal(out.n_top, 0);
    sx_sampler_free(s);
}

/* The vector exp pass against libm: relative error, the cut, the mass,
 * and exact zeros for -inf, NaN and underflow. */
static void test_exp_pass_avx2(void **state)
{
    enum { N = 20003 };
    sx_sample_exp_fn f = sx_sample_exp_avx2();
    float *l = malloc(sizeof(float) * N), *p = malloc(sizeof(float) * N);
    double sum, ref = 0.0;

    (void)state;
    if (!f) {
        free(l);
        free(p);
        skip();
        return;
    }
    assert_non_null(l);
    assert_non_null(p);
    for (int i = 0; i < N; i++)
        l[i] = 3.0f - 95.0f * (float)i / N;     /* m = 3, down to -92 */
    l[5] = -INFINITY;
    l[6] = NAN;
    sum = f(l, N, 3.0f, -50.0f, p);
    for (int i = 0; i < N; i++) {
        double e = l[i] >= -50.0f ? exp((double)l[i] - 3.0) : 0.0;

        ref += (float)e;
        if (e == 0.0)
            assert_true(p[i] == 0.0f);
        else
            assert_true(fabs(p[i] - e) <= 1e-6 * e);
    }
    assert_true(fabs(sum - ref) <= 1e-6 * ref);

    /* Without a cut: differences beyond e^-87 underflow to exactly 0. */
    l[7] = 3.0f - 90.0f;
    sum = f(l, N, 3.0f, -INFINITY, p);
    assert_true(p[5] == 0.0f && p[6] == 0.0f && p[7] == 0.0f);
    assert_true(p[N - 1] == 0.0f);
    assert_true(sum > 1.0);
    free(l);
    free(p);
}

/* ---- stop sequences ---------------------------------------------------- */

/* Feeds pieces, concatenating what is emitted; returns the feed result of
 * the last piece that matched (or 0). */
static int feed_all(sx_stop *m, const char *const *pieces, int n, char *out)
{
    const char *e;
    size_t el;
    int hit = 0;

    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        int rc = sx_stop_feed(m, pieces[i], strlen(pieces[i]), &e, &el);

        assert_true(rc == 0 || rc == 1);
        strncat(out, e, el);
        if (rc == 1)
            hit = 1;
    }
    if (!hit) {
        sx_stop_flush(m, &e, &el);
        strncat(out, e, el);
    }
    return hit;
}

static void test_stop_split_across_pieces(void **state)
{
    const char *stops[] = {"\n\nUser:", "###"};
    const char *pieces[] = {"Hello", " world.\n", "\nUs", "er:", " more"};
    char out[256];
    const char *e;
    size_t el;
    sx_stop *m = sx_stop_new(stops, 2);

    (void)state;
    assert_non_null(m);
    assert_int_equal(sx_stop_feed(m, "Hello", 5, &e, &el), 0);
    assert_int_equal(el, 5);
    assert_memory_equal(e, "Hello", 5);
    /* "\n" might start "\n\nUser:": held back */
    assert_int_equal(sx_stop_feed(m, " world.\n", 8, &e, &el), 0);
    assert_int_equal(el, 7);
    assert_int_equal(sx_stop_feed(m, "\nUs", 3, &e, &el), 0);
    assert_int_equal(el, 0);
    assert_int_equal(sx_stop_feed(m, "er:", 3, &e, &el), 1);
    assert_int_equal(el, 0);
    assert_true(sx_stop_matched(m));
    assert_int_equal(sx_stop_feed(m, " more", 5, &e, &el), 1);
    assert_int_equal(el, 0);
    sx_stop_free(m);

    m = sx_stop_new(stops, 2);
    assert_int_equal(feed_all(m, pieces, 5, out), 1);
    assert_string_equal(out, "Hello world.");
    sx_stop_free(m);
}

static void test_stop_false_start_released(void **state)
{
    const char *stops[] = {"END"};
    const char *pieces[] = {"the E", "N", "D", "ing"};
    const char *pieces2[] = {"an EN", "igma", " ab"};
    char out[256];
    sx_stop *m = sx_stop_new(stops, 1);

    (void)state;
    /* "ENDing" contains END: stops right before it */
    assert_int_equal(feed_all(m, pieces, 4, out), 1);
    assert_string_equal(out, "the ");
    sx_stop_free(m);

    m = sx_stop_new(stops, 1);
    assert_int_equal(feed_all(m, pieces2, 3, out), 0);
    assert_string_equal(out, "an ENigma ab");
    sx_stop_free(m);
}

static void test_stop_earliest_and_inside_piece(void **state)
{
    const char *stops[] = {"bb", "a"};
    const char *pieces[] = {"xxbbya"};
    const char *pieces2[] = {"😀🙂 done 🙂"};
    const char *emoji[] = {"🙂"};
    char out[256];
    sx_stop *m = sx_stop_new(stops, 2);

    (void)state;
    assert_int_equal(feed_all(m, pieces, 1, out), 1);
    assert_string_equal(out, "xx");
    sx_stop_free(m);

    /* a multi-byte stop string splits only at character boundaries */
    m = sx_stop_new(emoji, 1);
    assert_int_equal(feed_all(m, pieces2, 1, out), 1);
    assert_string_equal(out, "😀");
    sx_stop_free(m);

    /* no stops: pass-through; empty stop string is refused */
    m = sx_stop_new(NULL, 0);
    assert_non_null(m);
    assert_int_equal(feed_all(m, pieces, 1, out), 0);
    assert_string_equal(out, "xxbbya");
    sx_stop_free(m);
    {
        const char *empty[] = {"ok", ""};

        assert_null(sx_stop_new(empty, 2));
    }
    sx_stop_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties_lowest_id),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_all_masked_is_error),
        cmocka_unit_test(test_penalties_openai),
        cmocka_unit_test(test_penalty_counts_survive_growth),
        cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_distribution_matches_softmax),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_large_vocab_nucleus),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_exp_pass_avx2),
        cmocka_unit_test(test_stop_split_across_pieces),
        cmocka_unit_test(test_stop_false_start_released),
        cmocka_unit_test(test_stop_earliest_and_inside_piece),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
