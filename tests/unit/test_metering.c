/* Unit tests of the metering module: GCRA arithmetic (no window-boundary
 * burst, exact under threads), token reservation and settlement, UTC day
 * rollover, trial limits, limit events, the ledger (group commit, no
 * duplicates, leader/follower, both ledger_sync modes, reload after a
 * restart, purge), its journal (write-behind, replay after a crash, a torn
 * last record), the loops' steps that write it into the store (a lock
 * found taken, a refused row, a waiting writer, a takeover by the ledger
 * thread) and usage periods. The core is driven with explicit
 * clocks, and once with the real ones; the store is a real SQLite file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/time.h"
#include "metering/internal.h"

#define SEC 1000000000LL
#define DAY0 (20000LL * MS_PER_DAY) /* 2024-10-04 00:00 UTC, a fixed day */

struct fx {
    char dir[64];
    sx_store *s;
    sx_meter *m;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    char err[256];

    sx_log_min_level = SX_LOG_WARN;
    snprintf(f->dir, sizeof(f->dir), "/tmp/sx_test_metering_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->s = sx_store_open(NULL, f->dir, 8, err, sizeof(err));
    assert_non_null(f->s);
    f->m = sx_meter_open(f->s, NULL, NULL, err, sizeof(err));
    assert_non_null(f->m);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];

    sx_meter_close(f->m);
    sx_store_close(f->s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static struct meter_limits rpm_only(int64_t rpm)
{
    return (struct meter_limits){rpm, -1, -1, false};
}

/* Admits (or not) one request; frees a refusal's grant. */
static int admit(struct fx *f, const char *tenant, const struct meter_limits *l, int64_t prompt,
                 int64_t max, int64_t mono_ns, int64_t wall_ms, struct admit_result *res,
                 struct sx_meter_grant **g)
{
    static int seq;
    char rid[40];
    int rc;

    snprintf(rid, sizeof(rid), "req_unit_%d_%d", (int)getpid(), __atomic_add_fetch(&seq, 1,
             __ATOMIC_SEQ_CST));
    rc = sx_meter_admit_core(f->m, tenant, l, rid, prompt, max, mono_ns, wall_ms, res, g);
    if (rc == SX_ELIMIT) {
        free(*g);
        *g = NULL;
    }
    return rc;
}

static void settle(struct fx *f, struct sx_meter_grant *g, int64_t prompt, int64_t completion,
                   int64_t wall_ms)
{
    struct sx_usage_event ev = {"m", prompt, completion, 0, 0, "ok", "chat.completions"};

    assert_int_equal(sx_meter_settle_at(f->m, g, &ev, wall_ms), 0);
}

/* ---- GCRA --------------------------------------------------------------- */

static void test_gcra_params(void **state)
{
    int64_t t, tau, b;

    (void)state;
    sx_gcra_params(30, &t, &tau, &b);
    assert_int_equal(b, 3);
    assert_true(t * 28 > 60 * SEC + 27 * 1000000); /* ~1 ms of margin a slot */
    assert_int_equal(tau, 2 * t);
    sx_gcra_params(1, &t, &tau, &b);
    assert_int_equal(b, 1);
    assert_int_equal(tau, 0);
    assert_true(t > 60 * SEC);
    sx_gcra_params(0, &t, &tau, &b); /* clamped, never a division by zero */
    assert_int_equal(b, 1);
}

/* Counts the most admissions inside any closed 60 s window. */
static int max_in_window(const int64_t *t, int n)
{
    int best = 0;

    for (int i = 0, j = 0; i < n; i++) {
        while (t[i] - t[j] > 60 * SEC)
            j++;
        if (i - j + 1 > best)
            best = i - j + 1;
    }
    return best;
}

/* A client sending every 10 ms for 5 minutes never gets more than rpm
 * admissions into any 60 s window, yet gets close to rpm per minute. */
static void test_gcra_sliding_window(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = rpm_only(30);
    struct admit_result res;
    struct sx_meter_grant *g;
    int64_t times[4096];
    int n = 0;

    for (int64_t t = 0; t < 300 * SEC; t += 10000000) {
        int rc = sx_meter_admit_core(f->m, "tenant_win", &l, NULL, 0, 0, t, DAY0, &res, &g);

        assert_int_equal(rc, res.verdict == METER_OK ? 0 : SX_ELIMIT);
        if (rc == 0) {
            assert_true(n < 4096);
            times[n++] = t;
            sx_meter_release(f->m, g);
        } else {
            assert_int_equal(res.verdict, METER_RATE);
            assert_true(res.retry_after_ns > 0);
            free(g);
        }
    }
    assert_true(max_in_window(times, n) <= 30);
    /* 3 at once, then 28/min: 3 + 28 * 5 minus the rounding of T. */
    assert_true(n >= 3 + 28 * 5 - 1);
    assert_true(n <= 3 + 28 * 5 + 1);
}

/* The fixed-window attack: a burst just before and just after a minute
 * boundary gets no more than the limit. */
static void test_gcra_no_boundary_burst(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = rpm_only(60);
    struct admit_result res;
    struct sx_meter_grant *g;
    int admitted = 0;

    /* Steady use (one a second) from 1 s, then 200 requests at 59.999 s
     * and 200 at 60.001 s: all inside one 60 s window. */
    for (int64_t t = SEC; t < 59 * SEC; t += SEC) {
        if (admit(f, "tenant_edge", &l, 0, 0, t, DAY0, &res, &g) == 0) {
            sx_meter_release(f->m, g);
            admitted++;
        }
    }
    for (int i = 0; i < 400; i++) {
        int64_t t = i < 200 ? 59999 * (SEC / 1000) : 60001 * (SEC / 1000);

        if (admit(f, "tenant_edge", &l, 0, 0, t, DAY0, &res, &g) == 0) {
            sx_meter_release(f->m, g);
            admitted++;
        }
    }
    assert_true(admitted <= 60);
    assert_true(admitted >= 50);
}

static void test_gcra_headers_math(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = rpm_only(100); /* burst 10 */
    struct admit_result res;
    struct sx_meter_grant *g;

    assert_int_equal(admit(f, "tenant_hdr", &l, 0, 0, 0, DAY0, &res, &g), 0);
    assert_int_equal(res.remaining_requests, 9);
    sx_meter_release(f->m, g);
    for (int i = 0; i < 9; i++) {
        assert_int_equal(admit(f, "tenant_hdr", &l, 0, 0, 0, DAY0, &res, &g), 0);
        sx_meter_release(f->m, g);
    }
    assert_int_equal(res.remaining_requests, 0);
    assert_true(res.reset_requests_ns > 5 * SEC);
    assert_int_equal(admit(f, "tenant_hdr", &l, 0, 0, 0, DAY0, &res, &g), SX_ELIMIT);
    assert_int_equal(res.verdict, METER_RATE);
    /* The next slot opens one interval (60 s / 91) later. */
    assert_true(res.retry_after_ns > 650000000 && res.retry_after_ns < 670000000);
}

struct hammer {
    struct fx *f;
    const struct meter_limits *l;
    int64_t prompt, max;
    int admitted;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    struct admit_result res;
    struct sx_meter_grant *g;

    for (int i = 0; i < 2000; i++)
        if (admit(h->f, "tenant_threads", h->l, h->prompt, h->max, 5 * SEC, DAY0, &res, &g) ==
            0) {
            h->admitted++;
            free(g); /* keep the reservation: nothing settles */
        }
    return NULL;
}

static int run_hammer(struct fx *f, const struct meter_limits *l, int64_t prompt, int64_t max)
{
    pthread_t th[8];
    struct hammer h[8];
    int total = 0;

    for (int i = 0; i < 8; i++) {
        h[i] = (struct hammer){f, l, prompt, max, 0};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += h[i].admitted;
    }
    return total;
}

/* 8 threads at one instant get exactly the burst between them. */
static void test_exact_under_threads(void **state)
{
    struct fx *f = *state;
    struct meter_limits rate = rpm_only(500); /* burst 50 */

    assert_int_equal(run_hammer(f, &rate, 0, 0), 50);
}

static void *quota_main(void *arg)
{
    struct hammer *h = arg;
    struct admit_result res;
    struct sx_meter_grant *g;

    for (int i = 0; i < 500; i++)
        if (admit(h->f, "tenant_quota_threads", h->l, h->prompt, h->max, (int64_t)i * SEC,
                  DAY0, &res, &g) == 0) {
            h->admitted++;
            free(g);
        }
    return NULL;
}

/* 8 threads over time get exactly the quota between them. */
static void test_quota_exact_under_threads(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, 10000, -1, false};
    pthread_t th[8];
    struct hammer h[8];
    int total = 0;

    for (int i = 0; i < 8; i++) {
        h[i] = (struct hammer){f, &l, 30, 70, 0};
        assert_int_equal(pthread_create(&th[i], NULL, quota_main, &h[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += h[i].admitted;
    }
    assert_int_equal(total, 100); /* 10,000 / (30 + 70) */
}

/* ---- tokens per day ------------------------------------------------------ */

/* A check (take false, what sx_meter_check asks before retrieval) takes
 * nothing: any number of them leave the admissions exactly as they were,
 * and one refuses once the tenant's rate or day is used up. */
static void test_check_takes_nothing(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {60, 100, -1, false}; /* burst 6, then 1 a second */
    struct admit_result res;
    struct sx_meter_grant *g;
    int64_t t = DAY0 + 1000;
    int admitted = 0;

    for (int i = 0; i < 50; i++) {
        assert_int_equal(f->m->ops->admit(f->m->state, "tenant_chk", &l, 1, false, 0, t, &res),
                         0);
        assert_int_equal(res.verdict, METER_OK);
    }
    while (admit(f, "tenant_chk", &l, 1, 0, 0, t, &res, &g) == 0) {
        admitted++;
        settle(f, g, 1, 0, t);
    }
    assert_int_equal(admitted, 6);
    assert_int_equal(f->m->ops->admit(f->m->state, "tenant_chk", &l, 1, false, 0, t, &res), 0);
    assert_int_equal(res.verdict, METER_RATE);

    /* A minute later the rate allows again, but the day's tokens are
     * spent: the check refuses for them. */
    t += 60000;
    assert_int_equal(admit(f, "tenant_chk", &l, 94, 0, 60 * SEC, t, &res, &g), 0);
    settle(f, g, 94, 0, t);
    assert_int_equal(f->m->ops->admit(f->m->state, "tenant_chk", &l, 1, false, 61 * SEC, t,
                                      &res), 0);
    assert_int_equal(res.verdict, METER_TOKENS);
    assert_int_equal(admit(f, "tenant_chk", &l, 1, 0, 62 * SEC, t, &res, &g), SX_ELIMIT);
}

static void test_reserve_and_settle(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, 1000, -1, false};
    struct admit_result res;
    struct sx_meter_grant *a, *b, *c;
    int64_t t = DAY0 + 1000;

    assert_int_equal(admit(f, "tenant_q", &l, 100, 400, 0, t, &res, &a), 0);
    assert_int_equal(res.remaining_tokens, 500);
    assert_int_equal(admit(f, "tenant_q", &l, 100, 400, 0, t, &res, &b), 0);
    assert_int_equal(res.remaining_tokens, 0);

    /* Full: refused, but it would fit once the requests in flight settle,
     * so the retry is soon, not at midnight. */
    assert_int_equal(admit(f, "tenant_q", &l, 1, 0, 0, t, &res, &c), SX_ELIMIT);
    assert_int_equal(res.verdict, METER_TOKENS);
    assert_int_equal(res.retry_after_ns, SEC);
    assert_int_equal(res.reserved_tokens, 1000);

    /* Settling bills the real count and frees the rest. */
    settle(f, a, 100, 50, t);
    assert_int_equal(admit(f, "tenant_q", &l, 350, 0, 0, t, &res, &c), 0);
    assert_int_equal(res.remaining_tokens, 0);
    assert_int_equal(res.used_tokens, 150);

    /* An error after 10 tokens bills 110; the release gives all back. */
    settle(f, b, 100, 10, t);
    sx_meter_release(f->m, c);
    assert_int_equal(admit(f, "tenant_q", &l, 740, 0, 0, t, &res, &c), 0);
    assert_int_equal(res.used_tokens, 260);
    assert_int_equal(res.remaining_tokens, 0);
    sx_meter_release(f->m, c);

    /* More than the whole day can ever give: refused until midnight. */
    assert_int_equal(admit(f, "tenant_q", &l, 10, 990, 0, t, &res, &c), SX_ELIMIT);
    assert_true(res.retry_after_ns > 86000LL * SEC);

    /* Unlimited tenants: no token accounting in the headers. */
    l.tokens_per_day = -1;
    assert_int_equal(admit(f, "tenant_q", &l, 1000000, 1000000, 0, t, &res, &c), 0);
    assert_int_equal(res.remaining_tokens, -1);
    sx_meter_release(f->m, c);
}

static void test_negative_counts_refused(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {100, 1000, -1, false};
    struct admit_result res;
    struct sx_meter_grant *g;
    struct sx_usage_event bad = {"m", -1, 0, 0, 0, "ok", "completions"};

    assert_int_equal(sx_meter_admit_core(f->m, "tenant_neg", &l, "r1", -5, 0, 0, DAY0, &res, &g),
                     SX_EINVAL);
    assert_null(g);
    assert_int_equal(admit(f, "tenant_neg", &l, 10, 10, 0, DAY0, &res, &g), 0);
    assert_int_equal(sx_meter_settle_at(f->m, g, &bad, DAY0), SX_EINVAL);
    /* The reservation was released. */
    assert_int_equal(admit(f, "tenant_neg", &l, 1000, 0, SEC, DAY0, &res, &g), 0);
    sx_meter_release(f->m, g);
}

static void test_day_rollover(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, 1000, -1, false};
    struct admit_result res;
    struct sx_meter_grant *late, *g;
    struct sx_usage_totals d[2];
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY + 1};
    int64_t before = DAY0 + MS_PER_DAY - 10; /* 23:59:59.990 */

    assert_int_equal(admit(f, "tenant_roll", &l, 100, 800, 0, before, &res, &late), 0);
    assert_int_equal(res.remaining_tokens, 100);
    assert_true(res.retry_after_ns == 0);

    /* A new UTC day: the whole quota again. */
    assert_int_equal(admit(f, "tenant_roll", &l, 500, 500, SEC, before + 20, &res, &g), 0);
    assert_int_equal(res.remaining_tokens, 0);
    assert_int_equal(res.day, DAY0 / MS_PER_DAY + 1);

    /* The late request settles after midnight: billed to its own day,
     * today's counters untouched. */
    settle(f, late, 100, 700, before + 30);
    settle(f, g, 500, 100, before + 40);
    assert_int_equal(sx_meter_usage_daily(f->m, "tenant_roll", &span, d, 2), 0);
    assert_int_equal(d[0].tokens, 800);
    assert_int_equal(d[0].requests, 1);
    assert_int_equal(d[1].tokens, 600);
    assert_int_equal(admit(f, "tenant_roll", &l, 400, 0, 2 * SEC, before + 50, &res, &g), 0);
    assert_int_equal(res.used_tokens, 600);
    sx_meter_release(f->m, g);
}

/* ---- trial limits and limit events --------------------------------------- */

struct seen {
    pthread_mutex_t lock; /* the writer thread publishes */
    int n;
    enum sx_meter_limit_kind kind[8];
    int64_t limit[8];
    char day[8][11];
};

static void on_limit(const struct sx_meter_limit_event *ev, void *ctx)
{
    struct seen *s = ctx;

    if (strcmp(ev->tenant_id, "tenant_trial") && strcmp(ev->tenant_id, "tenant_lim"))
        return;
    pthread_mutex_lock(&s->lock);
    if (s->n < 8) {
        s->kind[s->n] = ev->kind;
        s->limit[s->n] = ev->limit;
        memcpy(s->day[s->n], ev->day, 11);
    }
    s->n++;
    pthread_mutex_unlock(&s->lock);
}

/* Waits until the writer has published n events (it runs asynchronously
 * for refusals), and a little longer to catch a duplicate. Returns a copy. */
static struct seen wait_seen(struct seen *s, int n)
{
    struct seen copy;

    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&s->lock);
        copy = *s;
        pthread_mutex_unlock(&s->lock);
        if (copy.n >= n)
            break;
        usleep(10000);
    }
    usleep(20000);
    pthread_mutex_lock(&s->lock);
    copy = *s;
    pthread_mutex_unlock(&s->lock);
    return copy;
}

static void test_trial_limits(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, 50, 3, true};
    struct admit_result res;
    struct sx_meter_grant *g;
    static struct seen seen = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct seen got;

    assert_int_equal(sx_meter_subscribe(f->m, on_limit, &seen), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(admit(f, "tenant_trial", &l, 5, 5, 0, DAY0, &res, &g), 0);
        settle(f, g, 5, 5, DAY0);
    }
    assert_int_equal(admit(f, "tenant_trial", &l, 1, 1, 0, DAY0, &res, &g), SX_ELIMIT);
    assert_int_equal(res.verdict, METER_TRIAL_REQUESTS);
    assert_int_equal(admit(f, "tenant_trial", &l, 1, 1, 0, DAY0, &res, &g), SX_ELIMIT);
    got = wait_seen(&seen, 1);
    assert_int_equal(got.n, 1); /* reported once a day */
    assert_int_equal(got.kind[0], SX_LIMIT_TRIAL_REQUESTS);
    assert_int_equal(got.limit[0], 3);
    assert_string_equal(got.day[0], "2024-10-04");

    /* Tokens of a trial tenant: the trial code, reported once. */
    l.requests_per_day = -1;
    assert_int_equal(admit(f, "tenant_trial", &l, 10, 11, 0, DAY0, &res, &g), SX_ELIMIT);
    assert_int_equal(res.verdict, METER_TOKENS);
    assert_int_equal(admit(f, "tenant_trial", &l, 10, 11, 0, DAY0, &res, &g), SX_ELIMIT);
    got = wait_seen(&seen, 2);
    assert_int_equal(got.n, 2);
    assert_int_equal(got.kind[1], SX_LIMIT_TRIAL_TOKENS);

    /* A paid tenant whose settled use reaches the limit: one event. */
    l = (struct meter_limits){1000000, 100, -1, false};
    assert_int_equal(admit(f, "tenant_lim", &l, 1, 100, 0, DAY0, &res, &g), SX_ELIMIT);
    assert_int_equal(res.reached, 0); /* too big alone: the limit is not reached */
    assert_int_equal(admit(f, "tenant_lim", &l, 50, 50, 0, DAY0, &res, &g), 0);
    settle(f, g, 50, 50, DAY0);
    assert_int_equal(admit(f, "tenant_lim", &l, 1, 0, 0, DAY0, &res, &g), SX_ELIMIT);
    got = wait_seen(&seen, 3);
    assert_int_equal(got.n, 3);
    assert_int_equal(got.kind[2], SX_LIMIT_DAILY_TOKENS);
}

/* ---- ledger -------------------------------------------------------------- */

static void test_ledger_no_duplicates(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, -1, -1, false};
    struct admit_result res;
    struct sx_meter_grant *g;
    struct sx_usage_totals u;
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    struct sx_usage_event ev = {"m", 7, 3, 2, 1, "ok", "chat.completions"};

    for (int i = 0; i < 2; i++) {
        assert_int_equal(sx_meter_admit_core(f->m, "tenant_dup", &l, "req_same", 1, 1, 0, DAY0,
                                             &res, &g),
                         0);
        assert_int_equal(sx_meter_settle_at(f->m, g, &ev, DAY0), 0);
    }
    assert_int_equal(sx_meter_record_training_job(f->m, "tenant_dup", "job_1"), 0);
    assert_int_equal(sx_meter_record_training_job(f->m, "tenant_dup", "job_1"), 0);
    span.to_day = sx_time_now_ms() / MS_PER_DAY;
    assert_int_equal(sx_meter_usage(f->m, "tenant_dup", &span, &u), 0);
    assert_int_equal(u.requests, 1);
    assert_int_equal(u.tokens, 10);
    assert_int_equal(u.prompt_tokens, 7);
    assert_int_equal(u.completion_tokens, 3);
    assert_int_equal(u.rerank_calls, 2);
    assert_int_equal(u.quantum_rerank_calls, 1);
    assert_int_equal(u.training_jobs, 1);
}

struct settler {
    struct fx *f;
    int id;
};

static void *settler_main(void *arg)
{
    struct settler *s = arg;
    struct meter_limits l = {1000000000, -1, -1, false};
    struct admit_result res;
    struct sx_meter_grant *g;

    for (int i = 0; i < 25; i++) {
        char rid[48];
        struct sx_usage_event ev = {"m", 1, 2, 0, 0, "ok", "embeddings"};

        snprintf(rid, sizeof(rid), "req_gc_%d_%d", s->id, i);
        if (sx_meter_admit_core(s->f->m, "tenant_gc", &l, rid, 1, 2, 0, DAY0, &res, &g))
            return (void *)1;
        if (sx_meter_settle_at(s->f->m, g, &ev, DAY0))
            return (void *)1;
    }
    return NULL;
}

/* 16 threads run fn (settler_main: 25 requests each of tenant_gc, 3
 * tokens each). */
static void run_threads(struct fx *f, void *(*fn)(void *))
{
    struct settler s[16];
    pthread_t th[16];
    void *ret;

    for (int i = 0; i < 16; i++) {
        s[i] = (struct settler){f, i};
        assert_int_equal(pthread_create(&th[i], NULL, fn, &s[i]), 0);
    }
    for (int i = 0; i < 16; i++) {
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
}

/* 16 threads settling at once share commits, and every row lands. */
static void test_group_commit(void **state)
{
    struct fx *f = *state;
    struct sx_usage_totals u;
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    int64_t b0, r0, b1, r1;

    sx_ledger_stats(f->m->ledger, &b0, &r0);
    run_threads(f, settler_main);
    sx_ledger_stats(f->m->ledger, &b1, &r1);
    assert_int_equal(r1 - r0, 400);
    assert_true(b1 - b0 < 400); /* some commits carried several rows */
    assert_int_equal(sx_meter_usage(f->m, "tenant_gc", &span, &u), 0);
    assert_int_equal(u.requests, 400);
    assert_int_equal(u.tokens, 1200);
}

/* Alone, a settling request leads its own commit: one commit per row. */
static void test_leader_alone(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, -1, -1, false};
    struct admit_result res;
    struct sx_meter_grant *g;
    int64_t b0, r0, b1, r1;

    sx_ledger_stats(f->m->ledger, &b0, &r0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(admit(f, "tenant_alone", &l, 1, 1, 0, DAY0, &res, &g), 0);
        settle(f, g, 1, 1, DAY0);
    }
    sx_ledger_stats(f->m->ledger, &b1, &r1);
    assert_int_equal(r1 - r0, 20);
    assert_int_equal(b1 - b0, 20);
}

/* ledger_sync = normal: the same rows and rollups, duplicates ignored,
 * group commit under threads, and a restart finds everything. */
static void test_ledger_sync_normal(void **state)
{
    struct fx *f = *state;
    struct sx_meter_options o = {SX_LEDGER_SYNC_NORMAL, NULL};
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    struct sx_usage_totals u;
    struct settler s[1];
    char err[256];

    sx_meter_close(f->m);
    o.ledger_sync = 7;
    assert_null(sx_meter_open(f->s, NULL, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "full or normal"));
    o.ledger_sync = SX_LEDGER_SYNC_NORMAL;
    f->m = sx_meter_open(f->s, NULL, &o, err, sizeof(err));
    assert_non_null(f->m);
    run_threads(f, settler_main);
    /* Settling the same request ids again bills nothing. */
    s[0] = (struct settler){f, 3};
    assert_null(settler_main(&s[0]));
    sx_meter_close(f->m);
    f->m = sx_meter_open(f->s, NULL, NULL, err, sizeof(err));
    assert_non_null(f->m);
    assert_int_equal(sx_meter_usage(f->m, "tenant_gc", &span, &u), 0);
    assert_int_equal(u.requests, 400);
    assert_int_equal(u.tokens, 1200);
}

/* Real clocks: the decision times reported (the ledger's started_at) obey
 * the GCRA bound exactly, whatever the threads' interleaving: n
 * admissions span at least (n - burst) T, less 1 ms of truncation. */
struct clocked {
    struct fx *f;
    const struct meter_limits *l;
    int64_t until_ns;
    int64_t at[512];
    int n;
};

static void *clocked_main(void *arg)
{
    struct clocked *c = arg;
    struct admit_result res;
    struct sx_meter_grant *g;

    while (sx_time_mono_ns() < c->until_ns && c->n < 512) {
        if (admit(c->f, "tenant_clock", c->l, 0, 0, -1, -1, &res, &g) == 0) {
            c->at[c->n++] = res.at_ms;
            assert_int_equal(res.day, res.at_ms / MS_PER_DAY);
            sx_meter_release(c->f->m, g);
        }
        sched_yield();
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static void test_gcra_real_clock(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = rpm_only(1200); /* burst 120, T = 55.5 ms */
    static struct clocked c[8];
    pthread_t th[8];
    int64_t t_ns, tau_ns, burst, all[8 * 512], before = sx_time_now_ms(), after;
    int n = 0;

    sx_gcra_params(l.rpm, &t_ns, &tau_ns, &burst);
    for (int i = 0; i < 8; i++) {
        c[i] = (struct clocked){f, &l, sx_time_mono_ns() + SEC, {0}, 0};
        assert_int_equal(pthread_create(&th[i], NULL, clocked_main, &c[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        memcpy(all + n, c[i].at, (size_t)c[i].n * sizeof(all[0]));
        n += c[i].n;
    }
    after = sx_time_now_ms();
    qsort(all, (size_t)n, sizeof(all[0]), cmp_i64);
    assert_true(n >= burst + 10 && n <= burst + 20);
    assert_true(all[0] >= before - 50 && all[n - 1] <= after + 50);
    for (int i = 0; i < n; i++)
        for (int j = i + (int)burst; j < n; j++)
            assert_true((j - i + 1 - burst) * t_ns <= (all[j] - all[i] + 1) * 1000000);
}

/* Today's use survives a restart: the quota is reloaded from the ledger. */
static void test_reload_after_restart(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, 1000, 5, false};
    struct admit_result res;
    struct sx_meter_grant *g;
    int64_t now = sx_time_now_ms();
    char err[256];

    for (int i = 0; i < 3; i++) {
        assert_int_equal(admit(f, "tenant_reload", &l, 50, 100, 0, now, &res, &g), 0);
        settle(f, g, 50, 50, now);
    }
    sx_meter_close(f->m);
    f->m = sx_meter_open(f->s, NULL, NULL, err, sizeof(err));
    assert_non_null(f->m);

    assert_int_equal(admit(f, "tenant_reload", &l, 0, 701, 0, now, &res, &g), SX_ELIMIT);
    assert_int_equal(res.used_tokens, 300);
    assert_int_equal(admit(f, "tenant_reload", &l, 0, 700, 0, now, &res, &g), 0);
    assert_int_equal(res.requests_today, 4);
    sx_meter_release(f->m, g);
}

/* ---- the journal ---------------------------------------------------------- */

/* Reopens the fixture's meter with a journal in <dir>/ledger. */
static void reopen_journaled(struct fx *f, int sync, char *jdir, size_t n)
{
    struct sx_meter_options o = {sync, jdir};
    char err[256];

    snprintf(jdir, n, "%s/ledger", f->dir);
    sx_meter_close(f->m);
    f->m = sx_meter_open(f->s, NULL, &o, err, sizeof(err));
    assert_non_null(f->m);
}

static int count_segments(const char *jdir)
{
    char cmd[256];
    FILE *p;
    int n = -1;

    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c '^ledger-.*\\.journal$'", jdir);
    p = popen(cmd, "r");
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

/* Both modes journaled: 16 threads settle 400 rows, duplicates bill
 * nothing, a report sees every row at once, and a clean close leaves no
 * journal behind. */
static void test_journal_write_behind(void **state)
{
    struct fx *f = *state;
    const int modes[2] = {SX_LEDGER_SYNC_FULL, SX_LEDGER_SYNC_NORMAL};
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    struct sx_usage_totals u;
    struct settler s[1];
    char jdir[128];

    for (int m = 0; m < 2; m++) {
        reopen_journaled(f, modes[m], jdir, sizeof(jdir));
        run_threads(f, settler_main);
        s[0] = (struct settler){f, 3};
        assert_null(settler_main(&s[0]));
        assert_int_equal(sx_meter_usage(f->m, "tenant_gc", &span, &u), 0);
        assert_int_equal(u.requests, 400);
        assert_int_equal(u.tokens, 1200);
        sx_meter_close(f->m);
        f->m = NULL;
        assert_int_equal(count_segments(jdir), 0);
    }
    reopen_journaled(f, SX_LEDGER_SYNC_FULL, jdir, sizeof(jdir));
    assert_int_equal(sx_meter_usage(f->m, "tenant_gc", &span, &u), 0);
    assert_int_equal(u.requests, 400);
}

/* A long run does not keep its journal: once a segment's rows are all in
 * the store (and, full, on the disk), the segment goes. */
static void *long_settler_main(void *arg)
{
    struct settler *s = arg;
    struct meter_limits l = {1000000000, -1, -1, false};

    for (int i = 0; i < 2900; i++) {
        struct sx_usage_event ev = {"m", 1, 1, 0, 0, "ok", "embeddings"};
        struct admit_result res;
        struct sx_meter_grant *g;
        char rid[48];

        snprintf(rid, sizeof(rid), "req_long_%d_%d", s->id, i);
        if (sx_meter_admit_core(s->f->m, "tenant_long", &l, rid, 1, 1, 0, DAY0, &res, &g) ||
            sx_meter_settle_at(s->f->m, g, &ev, DAY0))
            return (void *)1;
    }
    return NULL;
}

static void test_journal_segments_go(void **state)
{
    struct fx *f = *state;
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    struct sx_usage_totals u;
    char jdir[128];

    reopen_journaled(f, SX_LEDGER_SYNC_FULL, jdir, sizeof(jdir));
    run_threads(f, long_settler_main);
    assert_int_equal(sx_meter_usage(f->m, "tenant_long", &span, &u), 0);
    assert_int_equal(u.requests, 16 * 2900);
    assert_int_equal(count_segments(jdir), 1); /* the one being written */
}

/* Journals n rows of tenant (ids from first on), each settled. */
static void settle_rows(struct fx *f, const char *tenant, int first, int n)
{
    struct meter_limits l = {1000000000, -1, -1, false};

    for (int i = first; i < first + n; i++) {
        struct sx_usage_event ev = {"m", 1, 1, 0, 0, "ok", "embeddings"};
        struct admit_result res;
        struct sx_meter_grant *g;
        char rid[48];

        snprintf(rid, sizeof(rid), "req_%s_%d", tenant, i);
        assert_int_equal(sx_meter_admit_core(f->m, tenant, &l, rid, 1, 1, 0, DAY0, &res, &g),
                         0);
        assert_int_equal(sx_meter_settle_at(f->m, g, &ev, DAY0), 0);
    }
}

/* The ledger thread runs at the lowest priority and may get no CPU for a
 * while: past SX_LEDGER_BACKLOG_ROWS rows waiting, a settling thread
 * commits a batch itself, and a report commits what it must see. */
static void test_journal_backlog_bounded(void **state)
{
    struct fx *f = *state;
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    const int n = SX_LEDGER_BACKLOG_ROWS + 1500;
    struct sx_usage_totals u;
    int64_t batches, rows;
    char jdir[128];

    reopen_journaled(f, SX_LEDGER_SYNC_NORMAL, jdir, sizeof(jdir));
    sx_ledger_hold(f->m->ledger, true);
    settle_rows(f, "tenant_bl", 0, n);
    sx_ledger_stats(f->m->ledger, &batches, &rows);
    assert_true(rows >= n - SX_LEDGER_BACKLOG_ROWS);
    assert_true(rows < n);
    assert_int_equal(sx_meter_usage(f->m, "tenant_bl", &span, &u), 0);
    assert_int_equal(u.requests, n);
    sx_ledger_hold(f->m->ledger, false);
}

/* Takes n steps that do something (a step that finds the ledger's lock
 * taken does nothing); returns how many it took, n unless there was
 * nothing left to do. */
static int steps(struct ledger *lg, int n)
{
    int done = 0;

    for (int tries = 0; done < n && tries < 100000; tries++)
        done += sx_ledger_step(lg);
    return done;
}

/* The loops' idle steps, the ledger thread held: a row into the open
 * transaction per step, which a step commits once it is old and nothing
 * is queued; a step never waits for another connection's write lock (it
 * gives the row back and pauses), and a report commits what the steps
 * left open. Every row lands once. */
static void test_journal_steps(void **state)
{
    struct fx *f = *state;
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    struct sx_usage_totals u;
    int64_t batches, rows, t0;
    char jdir[128];
    sx_db *other;

    reopen_journaled(f, SX_LEDGER_SYNC_NORMAL, jdir, sizeof(jdir));
    sx_ledger_hold(f->m->ledger, true);
    settle_rows(f, "tenant_st", 0, 20);
    assert_int_equal(steps(f->m->ledger, 20), 20);
    sx_ledger_stats(f->m->ledger, &batches, &rows);
    assert_int_equal(rows, 0);
    usleep(20000);
    assert_int_equal(steps(f->m->ledger, 1), 1); /* the commit */
    sx_ledger_stats(f->m->ledger, &batches, &rows);
    assert_int_equal(rows, 20);

    /* Another connection writes: the step returns at once (the store's
     * busy wait is 10 s), the row stays queued. */
    other = sx_store_connect(f->s);
    assert_non_null(other);
    assert_int_equal(sx_db_begin(other), 0);
    settle_rows(f, "tenant_st", 20, 10);
    t0 = sx_time_mono_ns();
    assert_false(sx_ledger_step(f->m->ledger));
    assert_true(sx_time_mono_ns() - t0 < 5 * SEC);
    assert_int_equal(sx_db_rollback(other), 0);
    sx_store_disconnect(other);
    usleep(5000);
    assert_int_equal(steps(f->m->ledger, 10), 10);
    assert_int_equal(sx_meter_usage(f->m, "tenant_st", &span, &u), 0);
    assert_int_equal(u.requests, 30);
    sx_ledger_stats(f->m->ledger, &batches, &rows);
    assert_int_equal(rows, 30);
    sx_ledger_hold(f->m->ledger, false);
}

/* Another connection that writes, outside a transaction of its own (the
 * store's other modules mostly do). */
struct writer {
    sx_store *s;
    int rc;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    sx_db *db = sx_store_connect(w->s);

    w->rc = db ? sx_db_exec(db, "CREATE TABLE writer_was_here (x INTEGER)") : SX_ESTORE;
    sx_store_disconnect(db);
    return NULL;
}

/* Steps hold the write lock from step to step; when another connection
 * waits to write, the next step commits (instead of adding a row to a
 * young transaction) and lets it in. */
static void test_journal_steps_let_writers_in(void **state)
{
    struct fx *f = *state;
    struct writer w = {.s = f->s};
    int64_t batches, rows, t0;
    char jdir[128];
    pthread_t t;

    reopen_journaled(f, SX_LEDGER_SYNC_NORMAL, jdir, sizeof(jdir));
    sx_ledger_hold(f->m->ledger, true);
    settle_rows(f, "tenant_wr", 0, 2);
    assert_int_equal(steps(f->m->ledger, 1), 1); /* the transaction is open */
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    t0 = sx_time_mono_ns();
    while (!sx_store_writer_waiting(f->s) && sx_time_mono_ns() - t0 < 5 * SEC)
        usleep(100);
    assert_true(sx_store_writer_waiting(f->s));
    assert_int_equal(steps(f->m->ledger, 1), 1); /* commits its one row */
    sx_ledger_stats(f->m->ledger, &batches, &rows);
    assert_int_equal(rows, 1);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    sx_ledger_hold(f->m->ledger, false);
}

/* Steps that stop (their loop went to sleep) leave their transaction to
 * the ledger thread, which commits it without anyone asking. */
static void test_journal_steps_stop(void **state)
{
    struct fx *f = *state;
    int64_t batches, rows = 0;
    char jdir[128];

    reopen_journaled(f, SX_LEDGER_SYNC_NORMAL, jdir, sizeof(jdir));
    settle_rows(f, "tenant_ss", 0, 5);
    steps(f->m->ledger, 5); /* all five, unless the ledger thread was quicker */
    for (int i = 0; i < 500 && rows < 5; i++) {
        usleep(10000);
        sx_ledger_stats(f->m->ledger, &batches, &rows);
    }
    assert_int_equal(rows, 5);
}

/* A row that the store refuses in a step goes back to the queue, and the
 * steps pause; the ledger's own batch then retries it, and refused again,
 * it stays in the journal for the next start, which commits it once. */
static void test_journal_step_refused(void **state)
{
    struct fx *f = *state;
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    struct sx_usage_totals u;
    char jdir[128];
    sx_db *other;

    reopen_journaled(f, SX_LEDGER_SYNC_NORMAL, jdir, sizeof(jdir));
    sx_ledger_hold(f->m->ledger, true);
    settle_rows(f, "tenant_rf", 0, 3);
    other = sx_store_connect(f->s);
    assert_non_null(other);
    assert_int_equal(sx_db_exec(other, "ALTER TABLE usage_events RENAME TO usage_away"), 0);
    assert_false(sx_ledger_step(f->m->ledger)); /* refused */
    assert_false(sx_ledger_step(f->m->ledger)); /* paused */
    assert_int_equal(sx_ledger_flush(f->m->ledger), SX_ESTORE);
    assert_int_equal(sx_db_exec(other, "ALTER TABLE usage_away RENAME TO usage_events"), 0);
    sx_store_disconnect(other);
    reopen_journaled(f, SX_LEDGER_SYNC_NORMAL, jdir, sizeof(jdir));
    assert_int_equal(sx_meter_usage(f->m, "tenant_rf", &span, &u), 0);
    assert_int_equal(u.requests, 3);
}

/* The offset just past the last record of a segment file (headers of 16
 * bytes: magic, length, ...). */
static long records_end(FILE *fp)
{
    uint32_t h[4];
    long off = 0;

    assert_non_null(fp);
    while (fseek(fp, off, SEEK_SET) == 0 && fread(h, sizeof(h), 1, fp) == 1 &&
           h[0] == 0x314a5853u)
        off += 16 + (long)h[1];
    return off;
}

/* A process that dies right after settling (no close, the ledger thread
 * still gathering) loses nothing: the next open commits the journaled
 * rows, exactly once, and ignores a record torn by the crash. */
static void test_journal_replay_after_crash(void **state)
{
    struct fx *f = *state;
    struct sx_usage_span span = {DAY0 / MS_PER_DAY, DAY0 / MS_PER_DAY};
    struct sx_usage_totals u;
    char jdir[128], path[256], err[256];
    pid_t pid;
    int status;

    /* 1. The child settles 50 rows and exits without closing anything. */
    snprintf(jdir, sizeof(jdir), "%s/ledger", f->dir);
    sx_meter_close(f->m);
    f->m = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sx_meter_options o = {SX_LEDGER_SYNC_NORMAL, jdir};
        sx_store *s = sx_store_open(NULL, f->dir, 2, err, sizeof(err));
        sx_meter *m = s ? sx_meter_open(s, NULL, &o, err, sizeof(err)) : NULL;
        struct meter_limits l = {1000000, -1, -1, false};

        for (int i = 0; m && i < 50; i++) {
            struct sx_usage_event ev = {"m", 2, 3, 0, 0, "ok", "chat.completions"};
            struct admit_result res;
            struct sx_meter_grant *g;
            char rid[40];

            snprintf(rid, sizeof(rid), "req_crash_%d", i);
            if (sx_meter_admit_core(m, "tenant_crash", &l, rid, 2, 3, 0, DAY0, &res, &g) ||
                sx_meter_settle_at(m, g, &ev, DAY0))
                _exit(2);
        }
        _exit(m ? 0 : 3);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(count_segments(jdir) >= 1);

    /* 2. A torn record right after the intact ones (the segment is a
     * reused file: zeros follow its records). */
    snprintf(path, sizeof(path), "%s/ledger-0000000001.journal", jdir);
    {
        FILE *fp = fopen(path, "r+b");
        long end = records_end(fp);

        assert_true(end > 0);
        assert_int_equal(fseek(fp, end, SEEK_SET), 0);
        assert_int_equal(fwrite("\x53\x58\x4a\x31\x40\x00\x00", 1, 7, fp), 7);
        fclose(fp);
    }

    /* 3. Reopened twice: every row once, the journal gone. */
    for (int round = 0; round < 2; round++) {
        reopen_journaled(f, SX_LEDGER_SYNC_NORMAL, jdir, sizeof(jdir));
        assert_int_equal(count_segments(jdir), 0);
        assert_int_equal(sx_meter_usage(f->m, "tenant_crash", &span, &u), 0);
        assert_int_equal(u.requests, 50);
        assert_int_equal(u.tokens, 250);
    }
}

static int count_apply(void *ctx, const void *rec, size_t len)
{
    (void)rec;
    (void)len;
    ++*(int *)ctx;
    return 0;
}

/* Segment files are reused: a released one becomes the spare and then the
 * next segment, written over from its start; what it held before is not
 * replayed, and numbering continues above it after a restart. */
static void test_journal_reuses_segments(void **state)
{
    struct fx *f = *state;
    char jdir[128], err[256], rec[200], cmd[400];
    struct journal *j;
    uint32_t seq = 0, first_seq;
    size_t records;
    int n = 0;

    snprintf(jdir, sizeof(jdir), "%s/reuse", f->dir);
    j = sx_journal_open(jdir, true, err, sizeof(err));
    assert_non_null(j);
    snprintf(cmd, sizeof(cmd), "test -s '%s/spare-0000000000.journal'", jdir);
    assert_int_equal(system(cmd), 0); /* the first spare, zeros */
    memset(rec, 'a', sizeof(rec));

    /* 1. Fill segment 1 and part of 2; release 1: it becomes the spare. */
    do
        assert_int_equal(sx_journal_append(j, rec, sizeof(rec), true, &seq), 0);
    while (seq == 1);
    first_seq = seq;
    assert_int_equal(first_seq, 2);
    sx_journal_release(j, 2);
    snprintf(cmd, sizeof(cmd), "test -s '%s/spare-0000000001.journal' && "
             "! test -e '%s/ledger-0000000001.journal'", jdir, jdir);
    assert_int_equal(system(cmd), 0);

    /* 2. Segment 3 is segment 1's file: 5 new records over 20,000 old. */
    do
        assert_int_equal(sx_journal_append(j, rec, sizeof(rec), true, &seq), 0);
    while (seq == 2);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sx_journal_append(j, rec, sizeof(rec), true, &seq), 0);
    assert_int_equal(seq, 3);
    sx_journal_release(j, 3);
    sx_journal_close(j); /* a crash: nothing reset */

    /* 3. Reopened: segment 3's five records, none of segment 1's. */
    j = sx_journal_open(jdir, true, err, sizeof(err));
    assert_non_null(j);
    assert_int_equal(sx_journal_replay(j, count_apply, &n, &records), 0);
    assert_int_equal(n, 5);
    assert_int_equal(sx_journal_reset(j), 0);
    sx_journal_close(j);

    /* 4. After the reset the newest file is the spare, named for what it
     * held, and numbering goes on above it. */
    j = sx_journal_open(jdir, true, err, sizeof(err));
    assert_non_null(j);
    assert_int_equal(sx_journal_append(j, rec, sizeof(rec), true, &seq), 0);
    assert_int_equal(seq, 4);
    n = 0;
    sx_journal_close(j);
    j = sx_journal_open(jdir, true, err, sizeof(err));
    assert_int_equal(sx_journal_replay(j, count_apply, &n, &records), 0);
    assert_int_equal(n, 1);
    sx_journal_close(j);
}

/* Checks that records come back in order: each holds its number. */
static int ordered_apply(void *ctx, const void *rec, size_t len)
{
    int *n = ctx, got;

    assert_int_equal(len, 200);
    memcpy(&got, rec, sizeof(got));
    assert_int_equal(got, *n);
    ++*n;
    return 0;
}

/* Records go into the mapped segment, and past its end (while nobody may
 * rotate it) by pwrite(); a file that was no spare is allocated first.
 * Replay after a crash returns every one, in order. */
static void test_journal_past_the_mapping(void **state)
{
    struct fx *f = *state;
    char jdir[128], err[256], rec[200], cmd[400];
    const int total = (4 << 20) / (16 + 200) + 500;
    struct journal *j;
    uint32_t seq = 0;
    size_t records;
    int n = 0;

    snprintf(jdir, sizeof(jdir), "%s/overflow", f->dir);
    j = sx_journal_open(jdir, false, err, sizeof(err));
    assert_non_null(j);
    snprintf(cmd, sizeof(cmd), "rm '%s/spare-0000000000.journal'", jdir);
    assert_int_equal(system(cmd), 0);
    sx_log_min_level = SX_LOG_ERROR; /* the missing spare is warned of */
    memset(rec, 'b', sizeof(rec));
    for (int i = 0; i < total; i++) {
        memcpy(rec, &i, sizeof(i));
        assert_int_equal(sx_journal_append(j, rec, sizeof(rec), false, &seq), 0);
        assert_int_equal(seq, 1);
    }
    sx_log_min_level = SX_LOG_WARN;
    sx_journal_close(j); /* a crash: nothing reset */
    snprintf(cmd, sizeof(cmd), "test $(stat -c %%s '%s/ledger-0000000001.journal') -gt %d",
             jdir, 4 << 20);
    assert_int_equal(system(cmd), 0);

    j = sx_journal_open(jdir, false, err, sizeof(err));
    assert_non_null(j);
    assert_int_equal(sx_journal_replay(j, ordered_apply, &n, &records), 0);
    assert_int_equal(n, total);
    assert_int_equal(records, (size_t)total);
    sx_journal_close(j);
}

/* ---- formats and periods ------------------------------------------------ */

static void test_format_duration(void **state)
{
    char b[32];

    (void)state;
    sx_meter_format_duration(0, b, sizeof(b));
    assert_string_equal(b, "0s");
    sx_meter_format_duration(250, b, sizeof(b));
    assert_string_equal(b, "250ms");
    sx_meter_format_duration(1000, b, sizeof(b));
    assert_string_equal(b, "1s");
    sx_meter_format_duration(1500, b, sizeof(b));
    assert_string_equal(b, "1.5s");
    sx_meter_format_duration(17218, b, sizeof(b));
    assert_string_equal(b, "17.218s");
    sx_meter_format_duration(360000, b, sizeof(b));
    assert_string_equal(b, "6m0s");
    sx_meter_format_duration(3723500, b, sizeof(b));
    assert_string_equal(b, "1h2m3.5s");
}

static void test_period_parse(void **state)
{
    struct sx_usage_span s;
    int64_t jan15 = sx_time_days_from_civil(2024, 1, 15);

    (void)state;
    assert_int_equal(sx_usage_period_parse("today", jan15, &s), 0);
    assert_true(s.from_day == jan15 && s.to_day == jan15);
    assert_int_equal(sx_usage_period_parse("current_month", jan15, &s), 0);
    assert_int_equal(s.from_day, sx_time_days_from_civil(2024, 1, 1));
    assert_int_equal(s.to_day, sx_time_days_from_civil(2024, 1, 31));
    assert_int_equal(sx_usage_period_parse("previous_month", jan15, &s), 0);
    assert_int_equal(s.from_day, sx_time_days_from_civil(2023, 12, 1));
    assert_int_equal(s.to_day, sx_time_days_from_civil(2023, 12, 31));
    assert_int_equal(sx_usage_period_parse("2024-02", jan15, &s), 0);
    assert_int_equal(s.to_day - s.from_day + 1, 29);
    assert_int_equal(sx_usage_period_parse("2023-02", jan15, &s), 0);
    assert_int_equal(s.to_day - s.from_day + 1, 28);
    assert_int_equal(sx_usage_period_parse("2024-12", jan15, &s), 0);
    assert_int_equal(s.to_day, sx_time_days_from_civil(2024, 12, 31));

    const char *bad[] = {"", "2024-13", "2024-00", "2024-1", "24-01", "2024/01", "1969-12",
                         "2024-01-01", "month", "Today", "2024-01 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sx_usage_period_parse(bad[i], jan15, &s), SX_EINVAL);
    assert_int_equal(sx_usage_period_parse(NULL, jan15, &s), SX_EINVAL);
}

static void test_daily_fills_every_day(void **state)
{
    struct fx *f = *state;
    struct meter_limits l = {1000000, -1, -1, false};
    struct admit_result res;
    struct sx_meter_grant *g;
    struct sx_usage_totals d[5];
    struct sx_usage_span span = {DAY0 / MS_PER_DAY - 2, DAY0 / MS_PER_DAY + 2};

    assert_int_equal(admit(f, "tenant_days", &l, 4, 0, 0, DAY0 + 5, &res, &g), 0);
    settle(f, g, 4, 6, DAY0 + 5);
    assert_int_equal(sx_meter_usage_daily(f->m, "tenant_days", &span, d, 5), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(d[i].tokens, i == 2 ? 10 : 0);
    span.to_day = span.from_day - 1;
    assert_int_equal(sx_meter_usage_daily(f->m, "tenant_days", &span, d, 0), SX_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_params),
        cmocka_unit_test_setup_teardown(test_gcra_sliding_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_no_boundary_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_headers_math, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_under_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quota_exact_under_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_takes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_and_settle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_negative_counts_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_day_rollover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trial_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ledger_no_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leader_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ledger_sync_normal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gcra_real_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_write_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_replay_after_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_segments_go, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_backlog_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_step_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_steps_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_steps_let_writers_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_reuses_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_past_the_mapping, setup, teardown),
        cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_period_parse),
        cmocka_unit_test_setup_teardown(test_daily_fills_every_day, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
