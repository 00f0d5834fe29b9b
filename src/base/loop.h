/* Event-loop threads: each runs one epoll loop over the file descriptors
 * that modules watch on it, with timers and tasks posted from other
 * threads. The HTTP server runs its connections on these loops, and a
 * module that does I/O for a request (the upstream relay) can do it on the
 * loop that serves the request, so that the request never changes thread.
 *
 * Everything but sx_loop_post*(), sx_loop_wake() and sx_loop_current() is
 * called on the loop's own thread (or before it starts / after it ends). */
#ifndef SX_BASE_LOOP_H
#define SX_BASE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SX_LOOP_MAX 256

typedef struct sx_loop sx_loop;
typedef void (*sx_loop_fn)(void *ctx);

/* A watched descriptor; the owner keeps it alive while it is watched.
 * fn gets the epoll events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP). */
struct sx_loop_watch {
    int fd;
    void (*fn)(void *ctx, uint32_t events);
    void *ctx;
    bool added;
};

/* A timer; the owner keeps it alive while it is armed. */
struct sx_loop_timer {
    struct sx_loop_timer *next;
    int64_t due_ns; /* CLOCK_MONOTONIC */
    bool armed;
    sx_loop_fn fn;
    void *ctx;
};

/* A new loop, not running yet. NULL and a message in err on failure. */
sx_loop *sx_loop_new(char *err, size_t errlen);
/* Starts the thread and gives the loop a number among the running loops
 * (sx_loop_index); before_wait (may be NULL) runs on the thread before
 * every wait and returns how long the loop may sleep at most (ms, -1
 * forever). 0, SX_ELIMIT (SX_LOOP_MAX loops run) or SX_EIO. */
int sx_loop_start(sx_loop *l, int (*before_wait)(void *ctx), void *ctx);
/* From another thread: runs the slot destructors on the loop's thread,
 * ends it and joins it. The loop's watches and timers must be gone by
 * then (the destructors may remove theirs). */
void sx_loop_stop(sx_loop *l);
void sx_loop_free(sx_loop *l); /* accepts NULL; stops first */

/* The loop whose thread calls, or NULL. */
sx_loop *sx_loop_current(void);
int sx_loop_index(const sx_loop *l); /* 0..SX_LOOP_MAX-1, once started */

/* Watches w->fd for events (EPOLLIN and/or EPOLLOUT), or changes what it
 * watches for. 0 or SX_EIO (logged). */
int sx_loop_watch(sx_loop *l, struct sx_loop_watch *w, uint32_t events);
void sx_loop_unwatch(sx_loop *l, struct sx_loop_watch *w);

/* Arms t to run once at due_ns (re-arming moves it); due_ns < 0 disarms. */
void sx_loop_timer_set(sx_loop *l, struct sx_loop_timer *t, int64_t due_ns);

/* From any thread: runs fn(ctx) on the loop's thread soon. 0, or
 * SX_ENOMEM / SX_EBUSY (the loop is stopping: fn never runs). */
int sx_loop_post(sx_loop *l, sx_loop_fn fn, void *ctx);

/* The same for a loop that may have stopped and gone meanwhile: posts
 * only if l is still the running loop numbered index (its number when the
 * caller met it; l NULL: whichever loop runs as index), else SX_EBUSY. */
int sx_loop_post_at(int index, const sx_loop *l, sx_loop_fn fn, void *ctx);

/* On the loop's thread: delta more (or fewer) events are on their way to
 * this loop from another thread, soon (a task a journal sync will post);
 * while exactly one is, an idle loop polls longer before it sleeps. */
void sx_loop_expect(sx_loop *l, int delta);

/* From any thread: makes the loop go round once more (before_wait runs
 * again) even if nothing it watches is ready. */
void sx_loop_wake(sx_loop *l);

/* Background work that a loop does while it polls before sleeping, in the
 * time it would otherwise spin away (the usage ledger's writes: on a small
 * machine, a thread of its own would take a CPU from the client or the
 * upstream instead). fn does a few microseconds of it and returns true
 * while there is more; it must never block. One for the process, set
 * before the loops start and cleared (NULL) after they stop. */
void sx_loop_set_idle_work(bool (*fn)(void *ctx), void *ctx);

/* Per-loop state of a module: the slot for key (created empty, NULL
 * value), whose value dtor(value) gets when the loop stops, on its
 * thread. NULL when out of memory. */
void **sx_loop_slot(sx_loop *l, const void *key, sx_loop_fn dtor);

#endif
