/* Thread pool of the engine (internal part; sx_pool_new/free are declared in
 * engine.h). Workers are persistent: after a job they spin for about 60 us
 * waiting for the next one (decode steps come back to back), then sleep on a
 * futex, so an idle engine burns no core. */
#ifndef SX_ENGINE_POOL_H
#define SX_ENGINE_POOL_H

#include "engine/engine.h"

/* fn(ctx, i, n) runs once for each task i < n_tasks, on whichever thread
 * takes it first (the caller takes tasks too, so a task may run on any
 * thread, and one thread may run several); returns when all have finished.
 * Per-task scratch is safe to index by i. A NULL pool runs them in order. */
typedef void (*sx_pool_fn)(void *ctx, int ith, int nth);
void sx_pool_run_tasks(sx_pool *p, int n_tasks, sx_pool_fn fn, void *ctx);
/* sx_pool_run_tasks with one task per thread: fn(ctx, ith, nth), ith < nth
 * = sx_pool_size(p). */
void sx_pool_run(sx_pool *p, sx_pool_fn fn, void *ctx);

/* Splits [0, n) into nth nearly equal parts rounded to `align`; part ith. */
static inline void sx_pool_split(int n, int align, int ith, int nth, int *lo,
                                 int *hi)
{
    int units = (n + align - 1) / align;

    *lo = (int)((long)units * ith / nth) * align;
    *hi = (int)((long)units * (ith + 1) / nth) * align;
    if (*lo > n)
        *lo = n;
    if (*hi > n)
        *hi = n;
}

#endif
