/* The limiter core: GCRA for requests/min and UTC-day counters for tokens
 * and requests, kept in an in-memory table striped by tenant. One admission
 * checks every limit and takes its share under one stripe lock, so
 * concurrent requests of a tenant are serialized and the limits are exact.
 *
 * GCRA keeps one number per tenant, the theoretical arrival time (TAT) of
 * the next request: a request at time t is admitted when TAT - t <= tau,
 * and then pushes TAT to max(TAT, t) + T. With burst b, interval
 * T = 60 s / (rpm - b + 1) + 1 ms and tau = (b - 1) T, the n-th
 * admission after a first one at t1 comes no earlier than t1 + (n - b) T,
 * so a 60 s window holds at most rpm admissions: there is no window
 * boundary to burst across.
 *
 * The decision time is read under the stripe lock, once: GCRA runs on the
 * monotonic clock and the admission's wall time (the ledger's started_at,
 * the UTC day) is that same reading plus an offset, so the times recorded
 * are the times decided on, in lock order, and the bound holds for them
 * exactly. The offset follows the wall clock when it is stepped. */
#include "metering/internal.h"

#include "base/err.h"
#include "base/time.h"

#include <stdatomic.h>
#include <time.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRIPES 64
#define CHAINS_PER_STRIPE 64

struct entry {
    struct entry *next;
    char tenant_id[SX_TENANT_ID_MAX];
    int64_t tat_ns;   /* GCRA theoretical arrival time (monotonic clock) */
    int64_t day;      /* the UTC day the counters below belong to */
    int64_t used;     /* tokens settled on day */
    int64_t reserved; /* tokens held by admitted, unsettled requests of day */
    int64_t requests; /* requests admitted on day */
    unsigned reached; /* REACHED_* bits already reported for day */
};

struct stripe {
    pthread_mutex_t lock;
    struct entry *chains[CHAINS_PER_STRIPE];
};

struct memstate {
    struct stripe stripes[STRIPES];
    _Atomic int64_t wall_off_ns; /* wall clock = monotonic + this */
};

/* A wall clock stepped by more than this moves the offset. */
#define CLOCK_STEP_NS 20000000LL

static int64_t wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Re-reads the offset between the two clocks when the wall clock has been
 * stepped (the kernel slews both alike, so only a step moves it). The
 * reading counts only when the two monotonic reads around it are close,
 * so a thread preempted in between cannot move it. */
static void clock_sync(struct memstate *ms)
{
    int64_t m1 = sx_time_mono_ns(), w = wall_ns(), m2 = sx_time_mono_ns();
    int64_t off = atomic_load_explicit(&ms->wall_off_ns, memory_order_relaxed);
    int64_t drift = w - (m1 + off);

    if ((drift > CLOCK_STEP_NS || drift < -CLOCK_STEP_NS) && m2 - m1 < 1000000)
        atomic_store_explicit(&ms->wall_off_ns, w - m1, memory_order_relaxed);
}

void sx_gcra_params(int64_t rpm, int64_t *t_ns, int64_t *tau_ns, int64_t *burst)
{
    int64_t b;

    if (rpm < 1)
        rpm = 1;
    b = rpm / 10;
    if (b < 1)
        b = 1;
    /* 1 ms more than 60 s / (rpm - b + 1): a closed window of exactly
     * 60 s then holds no more than rpm admissions even as seen through
     * millisecond timestamps (the ledger's, a client's), with room for the
     * microseconds between reading the clock and taking the lock. */
    *t_ns = NS_PER_MIN / (rpm - b + 1) + 1000000;
    *tau_ns = (b - 1) * *t_ns;
    *burst = b;
}

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static struct stripe *stripe_of(struct memstate *ms, const char *id, struct entry ***chain)
{
    uint64_t h = hash_id(id);
    struct stripe *s = &ms->stripes[h % STRIPES];

    *chain = &s->chains[(h / STRIPES) % CHAINS_PER_STRIPE];
    return s;
}

/* The tenant's entry, created when missing; called with the stripe locked. */
static struct entry *find(struct entry **chain, const char *id, bool create)
{
    struct entry *e;

    for (e = *chain; e; e = e->next)
        if (strcmp(e->tenant_id, id) == 0)
            return e;
    if (!create)
        return NULL;
    e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", id);
    e->day = -1;
    e->next = *chain;
    *chain = e;
    return e;
}

/* Moves the entry's counters to day when a new UTC day has begun. A
 * reservation of the old day is settled against the old day (see
 * mem_settle), so nothing of it is carried over. */
static void roll_day(struct entry *e, int64_t day)
{
    if (e->day == day)
        return;
    if (day < e->day)
        return; /* a wall clock stepping back keeps the later day */
    e->day = day;
    e->used = 0;
    e->reserved = 0;
    e->requests = 0;
    e->reached = 0;
}

static void *mem_open(void)
{
    struct memstate *ms = calloc(1, sizeof(*ms));

    int64_t m1, w;

    if (!ms)
        return NULL;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&ms->stripes[i].lock, NULL);
    /* The offset from a wall reading taken between two close monotonic
     * ones (a few tries), so that it is exact to a few microseconds. */
    for (int i = 0; i < 16; i++) {
        int64_t m2;

        m1 = sx_time_mono_ns();
        w = wall_ns();
        m2 = sx_time_mono_ns();
        if (m2 - m1 < 20000)
            break;
    }
    atomic_init(&ms->wall_off_ns, w - m1);
    return ms;
}

static void mem_close(void *st)
{
    struct memstate *ms = st;

    if (!ms)
        return;
    for (int i = 0; i < STRIPES; i++) {
        for (int c = 0; c < CHAINS_PER_STRIPE; c++) {
            struct entry *e = ms->stripes[i].chains[c], *next;

            for (; e; e = next) {
                next = e->next;
                free(e);
            }
        }
        pthread_mutex_destroy(&ms->stripes[i].lock);
    }
    free(ms);
}

static int64_t ms_until_midnight(int64_t wall_ms)
{
    int64_t into = wall_ms % MS_PER_DAY;

    return MS_PER_DAY - (into < 0 ? into + MS_PER_DAY : into);
}

/* The counters' view after a decision, for the response headers. */
static void describe(const struct entry *e, const struct meter_limits *l, int64_t t_ns,
                     int64_t tau_ns, int64_t now_ns, struct admit_result *out)
{
    int64_t ahead = e->tat_ns - now_ns;

    if (ahead < 0)
        ahead = 0;
    out->remaining_requests = ahead > tau_ns ? 0 : (tau_ns - ahead) / t_ns + 1;
    out->reset_requests_ns = ahead;
    out->used_tokens = e->used;
    out->reserved_tokens = e->reserved;
    out->requests_today = e->requests;
    if (l->tokens_per_day < 0) {
        out->remaining_tokens = -1;
    } else {
        int64_t left = l->tokens_per_day - e->used - e->reserved;

        out->remaining_tokens = left < 0 ? 0 : left;
    }
}

static int mem_admit(void *st, const char *tenant_id, const struct meter_limits *l,
                     int64_t need, bool take, int64_t mono_ns, int64_t wall_ms,
                     struct admit_result *out)
{
    struct memstate *ms = st;
    struct entry **chain, *e;
    struct stripe *s = stripe_of(ms, tenant_id, &chain);
    int64_t t_ns, tau_ns, burst, tat, day;
    unsigned token_bit = l->trial ? REACHED_TRIAL_TOKENS : REACHED_TOKENS;
    bool real_clock = mono_ns < 0;

    sx_gcra_params(l->rpm, &t_ns, &tau_ns, &burst);
    memset(out, 0, sizeof(*out));
    if (real_clock)
        clock_sync(ms);

    pthread_mutex_lock(&s->lock);
    if (real_clock) {
        /* The decision time: one reading, under the lock. */
        mono_ns = sx_time_mono_ns();
        wall_ms = (mono_ns + atomic_load_explicit(&ms->wall_off_ns, memory_order_relaxed)) /
                  1000000;
    }
    day = wall_ms / MS_PER_DAY;
    out->day = day;
    out->at_ms = wall_ms;
    e = find(chain, tenant_id, true);
    if (!e) {
        pthread_mutex_unlock(&s->lock);
        return SX_ENOMEM;
    }
    roll_day(e, day);
    tat = e->tat_ns > mono_ns ? e->tat_ns : mono_ns;

    /* 1. Requests per minute. */
    if (tat - mono_ns > tau_ns) {
        out->verdict = METER_RATE;
        out->retry_after_ns = tat - tau_ns - mono_ns;
        goto refused;
    }

    /* 2. A trial tenant's requests per day. */
    if (l->requests_per_day >= 0 && e->requests >= l->requests_per_day) {
        out->verdict = METER_TRIAL_REQUESTS;
        out->retry_after_ns = ms_until_midnight(wall_ms) * 1000000;
        if (!(e->reached & REACHED_TRIAL_REQUESTS)) {
            e->reached |= REACHED_TRIAL_REQUESTS;
            out->reached |= REACHED_TRIAL_REQUESTS;
        }
        goto refused;
    }

    /* 3. Tokens per day: settled use, the reservations in flight and this
     * request's prompt + max_tokens must fit. When it would fit once the
     * requests in flight settle, a retry soon may succeed. */
    if (l->tokens_per_day >= 0 && e->used + e->reserved + need > l->tokens_per_day) {
        out->verdict = METER_TOKENS;
        if (e->used + need <= l->tokens_per_day)
            out->retry_after_ns = 1000000000LL;
        else
            out->retry_after_ns = ms_until_midnight(wall_ms) * 1000000;
        /* A request larger than the whole day refused alone does not
         * mean the tenant reached its limit. */
        if (need <= l->tokens_per_day && !(e->reached & token_bit)) {
            e->reached |= token_bit;
            out->reached |= token_bit;
        }
        goto refused;
    }

    /* Admitted: take the slot and the reservation together. */
    if (!take) {
        out->verdict = METER_OK;
        describe(e, l, t_ns, tau_ns, mono_ns, out);
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    e->tat_ns = tat + t_ns;
    e->requests++;
    e->reserved += need;
    out->verdict = METER_OK;
    describe(e, l, t_ns, tau_ns, mono_ns, out);
    pthread_mutex_unlock(&s->lock);
    return 0;

refused:
    describe(e, l, t_ns, tau_ns, mono_ns, out);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static unsigned mem_settle(void *st, const char *tenant_id, const struct meter_limits *l,
                           int64_t day, int64_t reserved, int64_t used, bool uncount,
                           int64_t *used_after)
{
    struct memstate *ms = st;
    struct entry **chain, *e;
    struct stripe *s = stripe_of(ms, tenant_id, &chain);
    unsigned bit = l->trial ? REACHED_TRIAL_TOKENS : REACHED_TOKENS, newly = 0;

    *used_after = 0;
    pthread_mutex_lock(&s->lock);
    e = find(chain, tenant_id, false);

    /* A request admitted on a day that has since ended was billed to that
     * day in the ledger; today's counters never held its reservation. */
    if (e && e->day == day) {
        e->reserved -= reserved;
        if (e->reserved < 0)
            e->reserved = 0;
        e->used += used;
        if (uncount && e->requests > 0)
            e->requests--;
        if (l->tokens_per_day >= 0 && e->used >= l->tokens_per_day && !(e->reached & bit)) {
            e->reached |= bit;
            newly |= bit;
        }
        *used_after = e->used;
    }
    pthread_mutex_unlock(&s->lock);
    return newly;
}

static int mem_preload(void *st, const char *tenant_id, int64_t day, int64_t tokens,
                       int64_t requests)
{
    struct memstate *ms = st;
    struct entry **chain, *e;
    struct stripe *s = stripe_of(ms, tenant_id, &chain);

    pthread_mutex_lock(&s->lock);
    e = find(chain, tenant_id, true);
    if (e) {
        roll_day(e, day);
        if (e->day == day) {
            e->used += tokens;
            e->requests += requests;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return e ? 0 : SX_ENOMEM;
}

const struct limiter_ops sx_limiter_memory = {
    .name = "memory",
    .open = mem_open,
    .close = mem_close,
    .admit = mem_admit,
    .settle = mem_settle,
    .preload = mem_preload,
};

void sx_meter_format_duration(int64_t ms, char *out, size_t n)
{
    int64_t h, m, s, frac;
    size_t len = 0;

    if (ms <= 0) {
        snprintf(out, n, "0s");
        return;
    }
    if (ms < 1000) {
        snprintf(out, n, "%lldms", (long long)ms);
        return;
    }
    h = ms / 3600000;
    m = ms / 60000 % 60;
    s = ms / 1000 % 60;
    frac = ms % 1000;
    out[0] = 0;
    if (h)
        len += (size_t)snprintf(out + len, n - len, "%lldh", (long long)h);
    if (h || m)
        len += (size_t)snprintf(out + len, n - len, "%lldm", (long long)m);
    if (len >= n)
        return;
    if (frac) {
        char f[8];
        int k;

        snprintf(f, sizeof(f), "%03lld", (long long)frac);
        for (k = 2; k > 0 && f[k] == '0'; k--)
            f[k] = 0;
        snprintf(out + len, n - len, "%lld.%ss", (long long)s, f);
    } else {
        snprintf(out + len, n - len, "%llds", (long long)s);
    }
}
