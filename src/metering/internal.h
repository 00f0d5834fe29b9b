/* Internal to src/metering/: the limiter core (GCRA + day quotas) behind
 * its state interface, the ledger writer and the module struct. Unit tests
 * include this header to drive the core with explicit clocks. */
#ifndef SX_METERING_INTERNAL_H
#define SX_METERING_INTERNAL_H

#include "metering/metering.h"

#include <pthread.h>
#include <stdbool.h>

#define MS_PER_DAY 86400000LL
#define NS_PER_MIN 60000000000LL

/* The limits one admission is checked against (from sx_tenant_limits). */
struct meter_limits {
    int64_t rpm;              /* > 0 */
    int64_t tokens_per_day;   /* -1: unlimited */
    int64_t requests_per_day; /* -1: unlimited */
    bool trial;               /* refusals use the trial_* codes */
};

enum meter_verdict {
    METER_OK,
    METER_RATE,           /* rate_limit_exceeded */
    METER_TRIAL_REQUESTS, /* trial_request_limit_exceeded */
    METER_TOKENS,         /* daily_token_limit_exceeded / trial_token_... */
};

/* Bits of limits reached for the first time in a day. */
enum {
    REACHED_TOKENS = 1 << SX_LIMIT_DAILY_TOKENS,
    REACHED_TRIAL_REQUESTS = 1 << SX_LIMIT_TRIAL_REQUESTS,
    REACHED_TRIAL_TOKENS = 1 << SX_LIMIT_TRIAL_TOKENS,
};

struct admit_result {
    enum meter_verdict verdict;
    int64_t day;                /* UTC day (days since epoch) of admission */
    int64_t at_ms;              /* the decision's wall time (ms since epoch) */
    int64_t remaining_requests; /* admissible right now, after this one */
    int64_t reset_requests_ns;  /* until the whole burst is available */
    int64_t retry_after_ns;     /* refusals: the earliest useful retry */
    int64_t remaining_tokens;   /* -1 when unlimited */
    int64_t used_tokens;        /* settled today */
    int64_t reserved_tokens;    /* held by requests in flight, this one included */
    int64_t requests_today;     /* admitted today, this one included */
    unsigned reached;           /* REACHED_* bits newly set (refusal by a limit) */
};

/* The limiter's state interface. The in-memory implementation below is
 * exact within one process; a shared one (Redis, a later issue) implements
 * the same calls atomically on the server side. */
struct limiter_ops {
    const char *name;
    void *(*open)(void);
    void (*close)(void *st);
    /* Checks and, when every limit allows it and take is set, takes one
     * request slot and reserves need tokens, atomically (take false: only
     * the verdict, nothing taken; a refusal counts as one either way).
     * mono_ns < 0: the decision time is read from the clocks at the
     * decision (out->at_ms); else mono_ns and wall_ms are used (tests).
     * Fills out; 0 or SX_ENOMEM. */
    int (*admit)(void *st, const char *tenant_id, const struct meter_limits *l,
                 int64_t need, bool take, int64_t mono_ns, int64_t wall_ms,
                 struct admit_result *out);
    /* Releases a reservation of day and bills used tokens against it
     * (uncount: also gives the request back). Returns the REACHED_* bits
     * newly set by this settlement; *used_after is the day's settled use. */
    unsigned (*settle)(void *st, const char *tenant_id, const struct meter_limits *l,
                       int64_t day, int64_t reserved, int64_t used, bool uncount,
                       int64_t *used_after);
    /* Seeds a tenant's day from the ledger (at open). 0 or SX_ENOMEM. */
    int (*preload)(void *st, const char *tenant_id, int64_t day, int64_t tokens,
                   int64_t requests);
};

extern const struct limiter_ops sx_limiter_memory;

/* GCRA parameters for a requests/min limit: emission interval t_ns,
 * tolerance tau_ns and burst size, chosen so that no 60 s window (closed)
 * holds more than rpm admissions. */
void sx_gcra_params(int64_t rpm, int64_t *t_ns, int64_t *tau_ns, int64_t *burst);

/* "1s", "250ms", "6m0s", "1h2m3.5s": a duration as OpenAI's reset headers
 * write it, from milliseconds. */
void sx_meter_format_duration(int64_t ms, char *out, size_t n);

/* ---- ledger (ledger.c) --------------------------------------------------- */

struct ledger;

/* One event row. Strings are copied by sx_ledger_append. */
struct ledger_row {
    const char *request_id, *tenant_id, *endpoint, *model, *status;
    int64_t day, started_ms, finished_ms;
    int64_t prompt_tokens, completion_tokens;
    int64_t rerank_calls, quantum_rerank_calls, training_jobs;
};

/* sync: SX_LEDGER_SYNC_FULL or SX_LEDGER_SYNC_NORMAL (base/config.h).
 * journal_dir: see sx_meter_options; rows journaled there by an earlier
 * run are committed before this returns (NULL and a message in err when
 * they cannot be; they stay journaled). */
struct ledger *sx_ledger_open(sx_meter *m, sx_store *store, int sync, const char *journal_dir,
                              char *err, size_t errlen);
void sx_ledger_close(struct ledger *lg);
/* Appends a row and returns once it is durable as ledger_sync says: in the
 * journal, or without one committed to the store (group commit, leader/
 * follower). 0, SX_EINVAL, SX_ENOMEM or SX_ESTORE. */
int sx_ledger_append(struct ledger *lg, const struct ledger_row *row);
/* The same without waiting: durable(ctx, 0 or SX_ESTORE) runs exactly once
 * when the row is durable, on this thread (before the return) or on the
 * ledger's journal thread (journal and ledger_sync = full). Returns 0, or
 * SX_EINVAL / SX_ENOMEM / SX_ESTORE (then durable never runs). */
int sx_ledger_append_then(struct ledger *lg, const struct ledger_row *row,
                          sx_meter_settled_fn durable, void *ctx);
/* Returns once every row appended before the call is in the store (a
 * no-op without a journal): readers of the usage tables call it first.
 * SX_ESTORE when the store refused some of those rows (they stay in the
 * journal for the next start). */
int sx_ledger_flush(struct ledger *lg);
/* Queues a limit event (no wait); recorded once, then published. */
void sx_ledger_limit_event(struct ledger *lg, const char *tenant_id,
                           enum sx_meter_limit_kind kind, int64_t day, int64_t limit,
                           int64_t used);
/* Calls preload for every tenant's use on day (from the rollups). */
int sx_ledger_load_day(struct ledger *lg, int64_t day,
                       int (*preload)(void *ctx, const char *tenant_id, int64_t tokens,
                                      int64_t requests),
                       void *ctx);
/* Batches written and events appended since open (for tests, metrics). */
void sx_ledger_stats(struct ledger *lg, int64_t *batches, int64_t *rows);
/* Journal mode: past this many journaled rows not yet in the store, the
 * thread that journals one commits a batch itself (ledger.c says why). */
#define SX_LEDGER_BACKLOG_ROWS 4096
/* Journal mode: one step of writing the journaled rows into the store, for
 * a loop that would otherwise spin (sx_loop_set_idle_work): a row into the
 * open transaction, or its commit. Never blocks: false at once when
 * another thread holds the ledger or there is nothing to do. */
bool sx_ledger_step(struct ledger *lg);
/* Tests: while held, the ledger thread commits nothing (as when the CPUs
 * are too busy to run it; steps still do); a close still drains the
 * queue. */
void sx_ledger_hold(struct ledger *lg, bool hold);

/* ---- the ledger's journal (journal.c) ------------------------------------ */

struct journal;

/* Opens the journal in dir (created if missing); durable: segments are
 * created with a directory fsync. Nothing is read yet. NULL and a message
 * in err on failure. */
struct journal *sx_journal_open(const char *dir, bool durable, char *err, size_t errlen);
void sx_journal_close(struct journal *j); /* accepts NULL; keeps the files */
/* Calls apply for every intact record on disk, oldest first; stops at the
 * first non-zero return. *records counts them. 0 or a negative code. */
int sx_journal_replay(struct journal *j, int (*apply)(void *ctx, const void *rec, size_t len),
                      void *ctx, size_t *records);
/* Removes every segment on disk (after a replay, or at a clean close). */
int sx_journal_reset(struct journal *j);
/* Appends one record (1..4096 bytes) to the page cache (a copy into the
 * mapped segment, or one pwrite()); *seq is the segment it went to.
 * may_rotate false: a full segment is not closed now (someone syncs it).
 * 0, SX_EINVAL or SX_EIO (logged). */
int sx_journal_append(struct journal *j, const void *payload, size_t len, bool may_rotate,
                      uint32_t *seq);
/* The segment being appended to (for fdatasync), -1 before the first. */
int sx_journal_fd(const struct journal *j);
/* Removes the segments before below (never the one being appended to):
 * every row in them is in the store. */
void sx_journal_release(struct journal *j, uint32_t below);

/* The module (meter.c). */
#define METER_MAX_SUBSCRIBERS 16

struct sx_meter {
    sx_store *store;
    sx_tenancy *tenancy;
    const struct limiter_ops *ops;
    void *state;
    struct ledger *ledger;

    pthread_mutex_t sub_lock;
    struct {
        sx_meter_limit_fn fn;
        void *ctx;
    } subs[METER_MAX_SUBSCRIBERS];
    int n_subs;
};

/* Delivers a recorded limit event to the subscribers (ledger thread). */
void sx_meter_publish(sx_meter *m, const struct sx_meter_limit_event *ev);
const char *sx_meter_limit_kind_name(enum sx_meter_limit_kind k);

/* The admission core without HTTP: checks tenant_id against l, and on
 * success returns a grant (request_id copied, may be NULL for tests).
 * mono_ns < 0 reads the clocks at the decision (see limiter_ops.admit).
 * Queues the limit events a refusal triggers. 0, SX_ELIMIT (res says why),
 * SX_EINVAL or SX_ENOMEM. */
int sx_meter_admit_core(sx_meter *m, const char *tenant_id, const struct meter_limits *l,
                        const char *request_id, int64_t prompt_tokens, int64_t max_tokens,
                        int64_t mono_ns, int64_t wall_ms, struct admit_result *res,
                        struct sx_meter_grant **out);
/* Settlement with an explicit clock (tests). Same as sx_meter_settle. */
int sx_meter_settle_at(sx_meter *m, struct sx_meter_grant *g, const struct sx_usage_event *ev,
                       int64_t wall_ms);

#endif
