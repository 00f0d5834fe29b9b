/* Thread pool: one job at a time, run on every thread. The caller bumps a
 * generation counter; workers that are spinning see it at once, workers that
 * went to sleep are woken through a futex only when some are asleep, so a
 * busy decode loop makes no system calls. */
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

struct sx_pool {
    int n;                     /* threads, the caller included */
    pthread_t *threads;
    _Atomic uint32_t gen;      /* bumped once per job */
    _Atomic uint32_t pending;  /* workers still running the current job */
    _Atomic int sleepers;      /* workers asleep on gen */
    _Atomic int caller_asleep; /* the caller sleeps on pending */
    _Atomic int stop;
    sx_pool_fn fn;
    void *ctx;
};

typedef struct worker_arg {
    sx_pool *pool;
    int ith;
} worker_arg;

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

static void *worker_main(void *p)
{
    worker_arg *a = p;
    sx_pool *pool = a->pool;
    int ith = a->ith;
    uint32_t seen = 0;

    free(a);
    for (;;) {
        await_change(&pool->gen, seen, &pool->sleepers);
        seen = atomic_load(&pool->gen);
        if (atomic_load(&pool->stop))
            return NULL;
        pool->fn(pool->ctx, ith, pool->n);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 &&
            atomic_load(&pool->caller_asleep))
            futex_wake(&pool->pending);
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
        worker_arg *a = malloc(sizeof(*a));

        if (a) {
            a->pool = p;
            a->ith = i;
        }
        if (!a || pthread_create(&p->threads[i], NULL, worker_main, a) != 0) {
            free(a);
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

void sx_pool_run(sx_pool *p, sx_pool_fn fn, void *ctx)
{
    uint32_t left;

    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, (uint32_t)(p->n - 1));
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers))
        futex_wake(&p->gen);
    fn(ctx, 0, p->n);

    /* Wait for the workers the same way they wait for work. */
    while ((left = atomic_load(&p->pending)) != 0)
        await_change(&p->pending, left, &p->caller_asleep);
}
