/* Tests of base/loop: tasks posted from another thread run on the loop's
 * own, posting to a stopped loop is refused, timers fire in due order and a
 * disarmed one never does, a watch removed while its event waits in the
 * same batch is not called, slot destructors run on the loop's thread
 * when it stops, and the idle work runs on a loop that polls after an
 * event, while it reports more. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/loop.h"
#include "base/time.h"

#include <stdatomic.h>
#include <sys/epoll.h>
#include <unistd.h>

static void wait_until(atomic_int *v, int want)
{
    for (int i = 0; i < 2000 && atomic_load(v) < want; i++)
        usleep(1000);
    assert_true(atomic_load(v) >= want);
}

static sx_loop *started(void)
{
    char err[128];
    sx_loop *l = sx_loop_new(err, sizeof(err));

    assert_non_null(l);
    assert_int_equal(sx_loop_start(l, NULL, NULL), 0);
    return l;
}

/* ---- tasks ------------------------------------------------------------------ */

struct where {
    sx_loop *l;
    atomic_int ran, on_loop;
};

static void note_thread(void *ctx)
{
    struct where *w = ctx;

    if (sx_loop_current() == w->l)
        atomic_fetch_add(&w->on_loop, 1);
    atomic_fetch_add(&w->ran, 1);
}

static void test_post_runs_on_the_loop(void **state)
{
    struct where w = {0};

    (void)state;
    w.l = started();
    assert_null(sx_loop_current());
    for (int i = 0; i < 100; i++)
        assert_int_equal(sx_loop_post(w.l, note_thread, &w), 0);
    wait_until(&w.ran, 100);
    assert_int_equal(atomic_load(&w.on_loop), 100);
    sx_loop_free(w.l);
}

static void test_post_to_a_stopped_loop_is_refused(void **state)
{
    struct where w = {0};
    int index;

    (void)state;
    w.l = started();
    index = sx_loop_index(w.l);
    assert_int_equal(sx_loop_post_at(index, w.l, note_thread, &w), 0);
    assert_int_equal(sx_loop_post_at(index, NULL, note_thread, &w), 0);
    wait_until(&w.ran, 2);
    sx_loop_stop(w.l);
    assert_int_equal(sx_loop_post(w.l, note_thread, &w), SX_EBUSY);
    assert_int_equal(sx_loop_post_at(index, w.l, note_thread, &w), SX_EBUSY);
    assert_int_equal(atomic_load(&w.ran), 2);
    sx_loop_free(w.l);
}

/* ---- timers ----------------------------------------------------------------- */

struct timers;

struct timer_id {
    struct timers *ts;
    int k;
};

struct timers {
    sx_loop *l;
    struct sx_loop_timer t[3];
    struct timer_id id[3];
    int order[3];
    atomic_int fired;
};

static void fire(void *ctx)
{
    struct timer_id *id = ctx;
    int at = atomic_fetch_add(&id->ts->fired, 1);

    if (at < 3)
        id->ts->order[at] = id->k;
}

static void arm(void *ctx)
{
    struct timers *ts = ctx;
    int64_t now = sx_time_mono_ns();

    for (int k = 0; k < 3; k++) {
        ts->id[k] = (struct timer_id){ts, k};
        ts->t[k] = (struct sx_loop_timer){.fn = fire, .ctx = &ts->id[k]};
    }
    sx_loop_timer_set(ts->l, &ts->t[0], now + 20000000); /* 20 ms */
    sx_loop_timer_set(ts->l, &ts->t[1], now + 5000000);  /* 5 ms */
    sx_loop_timer_set(ts->l, &ts->t[2], now + 1000000);  /* 1 ms, then disarmed */
    sx_loop_timer_set(ts->l, &ts->t[2], -1);
}

static void test_timers_fire_in_due_order(void **state)
{
    struct timers ts = {0};

    (void)state;
    ts.l = started();
    assert_int_equal(sx_loop_post(ts.l, arm, &ts), 0);
    wait_until(&ts.fired, 2);
    usleep(30000);
    assert_int_equal(atomic_load(&ts.fired), 2);
    assert_int_equal(ts.order[0], 1);
    assert_int_equal(ts.order[1], 0);
    sx_loop_free(ts.l);
}

/* ---- watches ---------------------------------------------------------------- */

struct pair {
    sx_loop *l;
    int fds[2][2];
    struct sx_loop_watch w[2];
    atomic_int calls, armed;
};

static struct pair *the_pair;

/* Each watcher, when called, removes both: when one batch holds both
 * events, the second must not be called. */
static void on_readable(void *ctx, uint32_t events)
{
    struct pair *p = the_pair;

    (void)ctx;
    (void)events;
    sx_loop_unwatch(p->l, &p->w[0]);
    sx_loop_unwatch(p->l, &p->w[1]);
    atomic_fetch_add(&p->calls, 1);
}

static void watch_both(void *ctx)
{
    struct pair *p = ctx;

    for (int i = 0; i < 2; i++) {
        p->w[i] = (struct sx_loop_watch){p->fds[i][0], on_readable, p, false};
        assert_int_equal(sx_loop_watch(p->l, &p->w[i], EPOLLIN), 0);
    }
    atomic_store(&p->armed, 1);
}

static void test_watch_removed_in_the_batch_is_not_called(void **state)
{
    struct pair p = {0};

    (void)state;
    the_pair = &p;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pipe(p.fds[i]), 0);
        assert_int_equal(write(p.fds[i][1], "x", 1), 1); /* both readable at once */
    }
    p.l = started();
    assert_int_equal(sx_loop_post(p.l, watch_both, &p), 0);
    wait_until(&p.armed, 1);
    wait_until(&p.calls, 1);
    usleep(20000);
    assert_int_equal(atomic_load(&p.calls), 1);
    sx_loop_free(p.l);
    for (int i = 0; i < 2; i++) {
        close(p.fds[i][0]);
        close(p.fds[i][1]);
    }
}

/* ---- slots ------------------------------------------------------------------ */

static atomic_int dtor_on_loop;
static sx_loop *slot_loop;
static int slot_key;

static void slot_dtor(void *value)
{
    if (sx_loop_current() == slot_loop && value == &slot_key)
        atomic_fetch_add(&dtor_on_loop, 1);
}

static void make_slot(void *ctx)
{
    void **slot = sx_loop_slot(slot_loop, &slot_key, slot_dtor);

    (void)ctx;
    assert_non_null(slot);
    assert_null(*slot);
    *slot = &slot_key;
    assert_ptr_equal(sx_loop_slot(slot_loop, &slot_key, slot_dtor), slot);
}

/* ---- idle work ---------------------------------------------------------------- */

struct idle {
    sx_loop *l;
    atomic_int calls, off_loop, left;
};

static bool idle_step(void *ctx)
{
    struct idle *id = ctx;

    if (sx_loop_current() != id->l)
        atomic_fetch_add(&id->off_loop, 1);
    atomic_fetch_add(&id->calls, 1);
    return atomic_fetch_sub(&id->left, 1) > 1;
}

static void nothing(void *ctx)
{
    (void)ctx;
}

/* After an event, the loop polls a while before it sleeps, and between
 * polls it does the idle work: called on the loop's thread, again at once
 * while it says more is left (five steps here, after a single event). */
static void test_idle_work_runs_while_the_loop_polls(void **state)
{
    struct idle id = {0};

    (void)state;
    atomic_store(&id.left, 5);
    id.l = started();
    sx_loop_set_idle_work(idle_step, &id);
    assert_int_equal(sx_loop_post(id.l, nothing, NULL), 0);
    wait_until(&id.calls, 5);
    sx_loop_free(id.l);
    sx_loop_set_idle_work(NULL, NULL);
    assert_int_equal(atomic_load(&id.off_loop), 0);
}

static void test_slot_dtor_runs_on_the_loop_at_stop(void **state)
{
    struct where w = {0};

    (void)state;
    slot_loop = w.l = started();
    assert_int_equal(sx_loop_post(w.l, make_slot, NULL), 0);
    assert_int_equal(sx_loop_post(w.l, note_thread, &w), 0);
    wait_until(&w.ran, 1);
    assert_int_equal(atomic_load(&dtor_on_loop), 0);
    sx_loop_stop(w.l);
    assert_int_equal(atomic_load(&dtor_on_loop), 1);
    sx_loop_free(w.l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_runs_on_the_loop),
        cmocka_unit_test(test_post_to_a_stopped_loop_is_refused),
        cmocka_unit_test(test_timers_fire_in_due_order),
        cmocka_unit_test(test_watch_removed_in_the_batch_is_not_called),
        cmocka_unit_test(test_slot_dtor_runs_on_the_loop_at_stop),
        cmocka_unit_test(test_idle_work_runs_while_the_loop_polls),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
