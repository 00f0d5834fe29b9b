/* Event-loop threads (loop.h): epoll over watched descriptors, a short
 * list of timers, and an eventfd through which other threads post tasks
 * and ask the loop to stop. Level-triggered: a watcher that leaves data
 * unread is called again. */
#include "base/loop.h"

#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define EVENTS_MAX 64
#define SLOTS_MAX 32
/* After handling events, a loop polls for up to this long before it
 * sleeps: a relayed request's next event (the upstream's answer, the
 * client's next request on a kept-alive connection) typically comes
 * within tens of microseconds, and being woken from epoll_wait costs
 * about as much again on a VM. One loop at a time, so a lightly loaded
 * server burns at most one thread's worth. Measured in bench/gateway:
 * 224-232 -> 126-144 us p50 through a loopback upstream at concurrency 1,
 * no change under load (where loops rarely find nothing to do). */
#define LOOP_SPIN_NS 100000
/* ... and for up to this long while the one thing it waits for is on its
 * way from another thread (sx_loop_expect: a reply after the journal's
 * fdatasync, 100-300 us on a VM disk): a sleeping loop is woken about
 * 50-100 us late. Measured with ledger_sync full at concurrency 1:
 * 317-379 -> 246-289 us p50. Only for one: with several awaited, other
 * events come anyway, and spinning long whenever any was awaited cost
 * 15.2k -> 14.2k requests/s at concurrency 64. */
#define LOOP_SPIN_WAITING_NS 400000

struct task {
    struct task *next;
    sx_loop_fn fn;
    void *ctx;
};

struct sx_loop {
    int index;
    int epfd, evfd;
    pthread_t thread;
    bool started;
    int (*before_wait)(void *ctx);
    void *before_ctx;

    struct sx_loop_timer *timers; /* loop thread only */
    int expected;                 /* loop thread only: sx_loop_expect() */
    struct sx_loop_watch wake;    /* the eventfd */
    /* The events being handled: a watch removed meanwhile is struck out
     * of the rest (its owner may have freed it). */
    struct epoll_event *batch;
    int batch_n, batch_i;

    pthread_mutex_t mu; /* guards tasks and stopping */
    struct task *tasks, **tasks_tail;
    bool stopping;
    bool done; /* loop thread: the stop was seen, the loop ends */

    struct {
        const void *key;
        void *value;
        sx_loop_fn dtor;
    } slots[SLOTS_MAX];
    int n_slots;
};

static _Thread_local sx_loop *current;
static atomic_bool spinner; /* a loop is polling before it sleeps */
static bool (*idle_work)(void *ctx); /* sx_loop_set_idle_work() */
static void *idle_ctx;
static _Atomic(sx_loop *) registry[SX_LOOP_MAX];
/* Held by sx_loop_post_at() while it posts and by a stop while it takes
 * its loop out of the registry: a loop found there is not freed yet. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;

void sx_loop_set_idle_work(bool (*fn)(void *ctx), void *ctx)
{
    idle_work = fn;
    idle_ctx = ctx;
}

sx_loop *sx_loop_current(void)
{
    return current;
}

int sx_loop_index(const sx_loop *l)
{
    return l->index;
}

int sx_loop_watch(sx_loop *l, struct sx_loop_watch *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};

    if (epoll_ctl(l->epfd, w->added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, w->fd, &ev) != 0) {
        SX_ERROR("loop", "epoll_ctl(fd %d) on loop %d failed: %s", w->fd, l->index,
                 strerror(errno));
        return SX_EIO;
    }
    w->added = true;
    return 0;
}

void sx_loop_unwatch(sx_loop *l, struct sx_loop_watch *w)
{
    if (w->added)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->added = false;
    for (int i = l->batch_i + 1; i < l->batch_n; i++)
        if (l->batch[i].data.ptr == w)
            l->batch[i].data.ptr = NULL;
}

void sx_loop_timer_set(sx_loop *l, struct sx_loop_timer *t, int64_t due_ns)
{
    struct sx_loop_timer **p;

    if (t->armed)
        for (p = &l->timers; *p; p = &(*p)->next)
            if (*p == t) {
                *p = t->next;
                break;
            }
    t->armed = due_ns >= 0;
    t->due_ns = due_ns;
    if (t->armed) {
        t->next = l->timers;
        l->timers = t;
    }
}

int sx_loop_post(sx_loop *l, sx_loop_fn fn, void *ctx)
{
    struct task *t = malloc(sizeof(*t));
    uint64_t one = 1;
    bool first;

    if (!t)
        return SX_ENOMEM;
    *t = (struct task){NULL, fn, ctx};
    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        pthread_mutex_unlock(&l->mu);
        free(t);
        return SX_EBUSY;
    }
    first = !l->tasks;
    *l->tasks_tail = t;
    l->tasks_tail = &t->next;
    pthread_mutex_unlock(&l->mu);
    if (first && write(l->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        SX_ERROR("loop", "waking loop %d failed: %s", l->index, strerror(errno));
    return 0;
}

int sx_loop_post_at(int index, const sx_loop *l, sx_loop_fn fn, void *ctx)
{
    int rc = SX_EBUSY;

    pthread_mutex_lock(&registry_mu);
    if (index >= 0 && index < SX_LOOP_MAX) {
        sx_loop *at = atomic_load(&registry[index]);

        if (at && (!l || at == l))
            rc = sx_loop_post(at, fn, ctx);
    }
    pthread_mutex_unlock(&registry_mu);
    return rc;
}

void sx_loop_expect(sx_loop *l, int delta)
{
    if (l)
        l->expected += delta;
}

void sx_loop_wake(sx_loop *l)
{
    uint64_t one = 1;

    if (write(l->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        SX_ERROR("loop", "waking loop %d failed: %s", l->index, strerror(errno));
}

void **sx_loop_slot(sx_loop *l, const void *key, sx_loop_fn dtor)
{
    for (int i = 0; i < l->n_slots; i++)
        if (l->slots[i].key == key)
            return &l->slots[i].value;
    if (l->n_slots == SLOTS_MAX)
        return NULL;
    l->slots[l->n_slots].key = key;
    l->slots[l->n_slots].value = NULL;
    l->slots[l->n_slots].dtor = dtor;
    return &l->slots[l->n_slots++].value;
}

/* The eventfd: run the posted tasks. Returns whether the loop stops. */
static bool run_tasks(sx_loop *l)
{
    struct task *t;
    uint64_t n;
    bool stop;

    if (read(l->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        SX_WARN("loop", "reading the eventfd of loop %d failed: %s", l->index, strerror(errno));
    pthread_mutex_lock(&l->mu);
    t = l->tasks;
    l->tasks = NULL;
    l->tasks_tail = &l->tasks;
    stop = l->stopping;
    pthread_mutex_unlock(&l->mu);
    while (t) {
        struct task *next = t->next;

        t->fn(t->ctx);
        free(t);
        t = next;
    }
    return stop;
}

/* The eventfd's watch: posted tasks, and the request to stop. */
static void on_wake(void *ctx, uint32_t events)
{
    sx_loop *l = ctx;

    (void)events;
    if (run_tasks(l))
        l->done = true;
}

/* Runs the timers that are due (a timer may re-arm itself or others). */
static void run_timers(sx_loop *l)
{
    int64_t now = sx_time_mono_ns();
    struct sx_loop_timer *t;

    for (;;) {
        for (t = l->timers; t && t->due_ns > now; t = t->next)
            ;
        if (!t)
            return;
        sx_loop_timer_set(l, t, -1);
        t->fn(t->ctx);
    }
}

static int wait_ms(sx_loop *l)
{
    int ms = l->before_wait ? l->before_wait(l->before_ctx) : -1;
    int64_t now = sx_time_mono_ns();

    for (struct sx_loop_timer *t = l->timers; t; t = t->next) {
        int64_t left = t->due_ns <= now ? 0 : (t->due_ns - now + 999999) / 1000000;

        if (left > 60000)
            left = 60000;
        if (ms < 0 || left < ms)
            ms = (int)left;
    }
    return ms;
}

static void *loop_main(void *arg)
{
    sx_loop *l = arg;
    struct epoll_event ev[EVENTS_MAX];
    int64_t busy_at = 0; /* when events last came, 0: spun since */

    current = l;
    while (!l->done) {
        int ms = wait_ms(l), n = 0;

        /* Busy a moment ago: poll a little before sleeping. */
        if (ms != 0 && busy_at) {
            int64_t spin_until =
                busy_at + (l->expected == 1 ? LOOP_SPIN_WAITING_NS : LOOP_SPIN_NS);

            if (!atomic_exchange(&spinner, true)) {
                int64_t now;

                /* Between polls, the idle work. Past the short spin, each
                 * poll first yields the CPU, so that a busy machine's
                 * other threads lose nothing to the wait (an idle one
                 * returns at once). */
                while ((n = epoll_wait(l->epfd, ev, EVENTS_MAX, 0)) == 0 &&
                       (now = sx_time_mono_ns()) < spin_until)
                    if (!(idle_work && idle_work(idle_ctx)) && now > busy_at + LOOP_SPIN_NS)
                        sched_yield();
                atomic_store(&spinner, false);
            }
            busy_at = 0;
        }
        if (n == 0)
            n = epoll_wait(l->epfd, ev, EVENTS_MAX, ms);
        if (n > 0)
            busy_at = sx_time_mono_ns();

        if (n < 0 && errno != EINTR) {
            SX_ERROR("loop", "epoll_wait on loop %d failed: %s", l->index, strerror(errno));
            break;
        }
        l->batch = ev;
        l->batch_n = n;
        for (l->batch_i = 0; l->batch_i < n; l->batch_i++) {
            struct sx_loop_watch *w = ev[l->batch_i].data.ptr;

            if (w)
                w->fn(w->ctx, ev[l->batch_i].events);
        }
        l->batch_n = 0;
        run_timers(l);
    }

    /* Stopping: the modules' per-loop state goes on this thread. */
    for (int i = 0; i < l->n_slots; i++)
        if (l->slots[i].dtor && l->slots[i].value)
            l->slots[i].dtor(l->slots[i].value);
    l->n_slots = 0;
    run_tasks(l);
    current = NULL;
    return NULL;
}

sx_loop *sx_loop_new(char *err, size_t errlen)
{
    sx_loop *l;

    if (!(l = calloc(1, sizeof(*l)))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->index = -1;
    l->tasks_tail = &l->tasks;
    pthread_mutex_init(&l->mu, NULL);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->wake = (struct sx_loop_watch){l->evfd, on_wake, l, false};
    if (l->epfd < 0 || l->evfd < 0 || sx_loop_watch(l, &l->wake, EPOLLIN) != 0) {
        snprintf(err, errlen, "cannot create an event loop: %s", strerror(errno));
        sx_loop_free(l);
        return NULL;
    }
    return l;
}

int sx_loop_start(sx_loop *l, int (*before_wait)(void *ctx), void *ctx)
{
    l->before_wait = before_wait;
    l->before_ctx = ctx;
    for (int i = 0; i < SX_LOOP_MAX && l->index < 0; i++) {
        sx_loop *none = NULL;

        if (atomic_compare_exchange_strong(&registry[i], &none, l))
            l->index = i;
    }
    if (l->index < 0)
        return SX_ELIMIT;
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        atomic_store(&registry[l->index], NULL);
        l->index = -1;
        return SX_EIO;
    }
    l->started = true;
    return 0;
}

void sx_loop_stop(sx_loop *l)
{
    uint64_t one = 1;

    if (!l || !l->started)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    pthread_mutex_unlock(&l->mu);
    if (write(l->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        SX_ERROR("loop", "waking loop %d failed: %s", l->index, strerror(errno));
    pthread_join(l->thread, NULL);
    l->started = false;
    pthread_mutex_lock(&registry_mu);
    atomic_store(&registry[l->index], NULL);
    pthread_mutex_unlock(&registry_mu);
    l->index = -1;
}

void sx_loop_free(sx_loop *l)
{
    if (!l)
        return;
    sx_loop_stop(l);
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->evfd >= 0)
        close(l->evfd);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
