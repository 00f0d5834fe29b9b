/* Thread pool: one job at a time, cut into tasks that any thread takes from
 * a shared counter, the caller included. The caller bumps a generation
 * counter; workers that are spinning see it at once, workers that went to
 * sleep are woken through a futex only when some are asleep, so a busy
 * decode loop makes no system calls. Since nobody waits for a particular
 * thread, a worker the OS has not scheduled (the machine is shared) costs
 * nothing: the others take its tasks. */
#include "engine/pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SPIN_NS 60000 /* how long an idle thread spins before sleeping */
#define CLAIM_CLOSED UINT32_MAX /* claim index while a job is being set up */

struct sx_pool {
    int n;                     /* threads, the caller included */
    pthread_t *threads;
    _Atomic uint32_t gen;      /* bumped once per job: wakes the workers */
    _Atomic uint64_t claim;    /* job id << 32 | next task to take */
    _Atomic uint32_t done;     /* tasks of the current job finished */
    _Atomic int sleepers;      /* workers asleep on gen */
    _Atomic int caller_asleep; /* the caller sleeps on done */
    _Atomic int stop;
    /* The current job; written before claim is reset, read after. */
    _Atomic(sx_pool_fn) fn;
    _Atomic(void *) ctx;
    _Atomic uint32_t n_tasks;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Waits until *addr != val: spin first, then sleep on the futex. `count`
 * tells the other side that this thread sleeps and needs a wake-up. */
static void await_change(_Atomic uint32_t *addr, uint32_t val,
                         _Atomic int *count)
{
    uint64_t start = 0;

    for (unsigned i = 0; atomic_load(addr) == val; i++) {
        __builtin_ia32_pause();
        if ((i & 63) != 63)
            continue;
        if (!start) {
            start = now_ns();
        } else if (now_ns() - start > SPIN_NS) {
            atomic_fetch_add(count, 1);
            while (atomic_load(addr) == val)
                futex_wait(addr, val);
            atomic_fetch_sub(count, 1);
            return;
        }
    }
}

/* Takes and runs tasks of whatever job is current until none is left;
 * returns how many it ran. A task is taken by moving claim from (job, i) to
 * (job, i + 1). Before changing fn, ctx and n_tasks the caller closes the
 * claim word, so a thread that read them from a newer job than the claim
 * value it holds fails its exchange and reads again. */
static int run_tasks(sx_pool *p)
{
    int ran = 0;

    for (;;) {
        uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
        uint32_t i = (uint32_t)c, n;
        sx_pool_fn fn;
        void *ctx;

        if (i == CLAIM_CLOSED)
            return ran;
        fn = atomic_load_explicit(&p->fn, memory_order_acquire);
        ctx = atomic_load_explicit(&p->ctx, memory_order_acquire);
        n = atomic_load_explicit(&p->n_tasks, memory_order_acquire);
        if (i >= n)
            return ran;
        if (!atomic_compare_exchange_weak(&p->claim, &c, c + 1))
            continue;
        fn(ctx, (int)i, (int)n);
        ran++;
        if (atomic_fetch_add(&p->done, 1) + 1 == n &&
            atomic_load(&p->caller_asleep))
            futex_wake(&p->done);
    }
}

static void *worker_main(void *arg)
{
    sx_pool *pool = arg;
    uint32_t seen = 0;

    for (;;) {
        await_change(&pool->gen, seen, &pool->sleepers);
        seen = atomic_load(&pool->gen);
        if (atomic_load(&pool->stop))
            return NULL;
        run_tasks(pool);
    }
}

sx_pool *sx_pool_new(int n_threads)
{
    sx_pool *p;

    if (n_threads < 1 || n_threads > 512)
        return NULL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->n = n_threads;
    p->threads = calloc((size_t)n_threads, sizeof(*p->threads));
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            p->n = i;        /* only threads 1..i-1 exist: stop those */
            sx_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void sx_pool_free(sx_pool *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p);
}

int sx_pool_size(const sx_pool *p) { return p ? p->n : 1; }

void sx_pool_run_tasks(sx_pool *p, int n_tasks, sx_pool_fn fn, void *ctx)
{
    uint64_t id;
    uint32_t d;

    if (n_tasks < 1)
        return;
    if (!p || p->n == 1) {
        for (int i = 0; i < n_tasks; i++)
            fn(ctx, i, n_tasks);
        return;
    }
    id = (uint64_t)(atomic_load(&p->gen) + 1) << 32;
    atomic_store(&p->claim, id | CLAIM_CLOSED);
    atomic_store_explicit(&p->fn, fn, memory_order_release);
    atomic_store_explicit(&p->ctx, ctx, memory_order_release);
    atomic_store_explicit(&p->n_tasks, (uint32_t)n_tasks,
                          memory_order_release);
    atomic_store(&p->done, 0);
    atomic_store_explicit(&p->claim, id, memory_order_release);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers))
        futex_wake(&p->gen);
    run_tasks(p);

    /* Wait for tasks still running elsewhere, as workers wait for work. */
    while ((d = atomic_load(&p->done)) != (uint32_t)n_tasks)
        await_change(&p->done, d, &p->caller_asleep);
}

void sx_pool_run(sx_pool *p, sx_pool_fn fn, void *ctx)
{
    sx_pool_run_tasks(p, sx_pool_size(p), fn, ctx);
}
