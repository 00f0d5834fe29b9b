/* The metering module: exact per-tenant request rates (GCRA), UTC-day token
 * quotas and trial per-day limits, and the durable usage ledger with its
 * daily rollups. Metered handlers call sx_meter_admit() before any work and
 * sx_meter_settle() before the last byte of their response; the usage API
 * reads the rollups; the webhook module subscribes to limit events.
 *
 * Guarantees (single process, the default):
 *   - no 60-second window ever holds more admissions of a tenant than its
 *     requests/min limit; a burst of up to max(1, rpm/10) is admitted at
 *     once, the steady rate is then about rpm - burst + 1 per minute; the
 *     admission times the ledger records (started_at) are the decision
 *     times themselves, so this holds for them exactly;
 *   - settled + reserved tokens of a tenant's UTC day never exceed its
 *     tokens/day limit (the day is the day of admission);
 *   - sx_meter_settle() returns (sx_meter_settle_then() calls back) only
 *     once the event is durable: in the ledger's journal, fsynced with
 *     ledger_sync = full (a power loss loses nothing), in the page cache
 *     with normal (a crash or SIGKILL of the process loses nothing); the
 *     store gets it a few milliseconds later, and the usage reports wait
 *     for that; a request id is recorded at most once.
 * The limiter state lives in memory behind an interface (limiter_ops in
 * internal.h) that a shared backend (Redis) can implement later; today's
 * tokens and requests are reloaded from the rollups when the module opens. */
#ifndef SX_METERING_METERING_H
#define SX_METERING_METERING_H

#include <stdint.h>

#include "http/http.h"
#include "store/store.h"
#include "tenancy/tenancy.h"

typedef struct sx_meter sx_meter;
struct sx_meter_grant; /* one admitted request's reservation (opaque) */

struct sx_meter_options {
    /* SX_LEDGER_SYNC_FULL (0, the default: every group commit is fsynced)
     * or SX_LEDGER_SYNC_NORMAL (committed to the OS page cache), from
     * base/config.h; docs/configuration.md, key ledger_sync. */
    int ledger_sync;
    /* The ledger's journal (a directory, created if missing): settling
     * then appends to it and the store is written behind (ledger.c). NULL
     * keeps none: each settlement commits to the store itself. */
    const char *journal_dir;
};

/* Opens the module: applies its migrations, loads today's usage from the
 * rollups, opens the ledger's own connection and thread and registers the
 * tenant purge hook with tn (tn may be NULL in tests: no hook, and
 * sx_meter_admit() is then unavailable). opt NULL means the defaults. NULL
 * with a message in err on failure. */
sx_meter *sx_meter_open(sx_store *store, sx_tenancy *tn, const struct sx_meter_options *opt,
                        char *err, size_t errlen);
/* Stops the writer after it has written everything queued. Accepts NULL.
 * Every grant must have been settled. */
void sx_meter_close(sx_meter *m);
/* Idle work for the event loops (sx_loop_set_idle_work; meter is the
 * sx_meter): with a journal, a step of writing the usage rows into the
 * store, so that a loop with nothing to do does it rather than a thread
 * of its own. True while more is left; never blocks. */
bool sx_meter_idle_work(void *meter);

/* ---- admission and settlement -------------------------------------------- */

/* Admission, called by a metered handler AFTER auth and body validation
 * and BEFORE any work: GCRA requests/min for the tenant, then reserve
 * prompt_tokens + max_tokens (after clamping) against the tenant's UTC-day
 * token quota (and trial per-day limits), atomically: a refused request
 * consumes nothing. On refusal it replies 429 itself (OpenAI body, code
 * rate_limit_exceeded / daily_token_limit_exceeded /
 * trial_request_limit_exceeded / trial_token_limit_exceeded, Retry-After,
 * x-ratelimit-* headers) and returns SX_ELIMIT. Bad arguments (negative
 * counts) reply 500 and return SX_EINVAL. On success it sets the
 * x-ratelimit-* headers on r and returns 0 with *out owned by the caller
 * until sx_meter_settle(). */
int sx_meter_admit(sx_meter *m, sx_http_req *r, const struct sx_tenant *t,
                   int64_t prompt_tokens, int64_t max_tokens, struct sx_meter_grant **out);

/* The x-ratelimit-* headers of an admitted request as name/value pairs,
 * for a response whose headers are not set through sx_http_set_header()
 * (a stream). Returns the number of headers passed to set. */
int sx_meter_headers(const struct sx_meter_grant *g,
                     void (*set)(void *ctx, const char *name, const char *value), void *ctx);

struct sx_usage_event {
    const char *model; /* public model name */
    int64_t prompt_tokens, completion_tokens;
    int rerank_calls, quantum_rerank_calls;
    const char *status;   /* "ok", "error", "cancelled", "content_filter" */
    const char *endpoint; /* "chat.completions", "completions", "embeddings" */
};

/* Settle: bill the real counts (on error or disconnect: what was
 * generated), release the rest of the reservation, append the event to the
 * durable usage ledger. Blocks until the event is durable, so the handler
 * calls it BEFORE sending the response's last byte. Frees g (also on
 * failure). Returns 0, SX_EINVAL (negative counts: nothing billed beyond
 * releasing the reservation) or SX_ESTORE (the ledger write failed after
 * retries; logged). */
int sx_meter_settle(sx_meter *m, struct sx_meter_grant *g, const struct sx_usage_event *ev);
/* The same without blocking: settled(ctx, 0 or SX_ESTORE) runs exactly
 * once, when the event is durable, either on this thread before the
 * return or on the ledger's journal thread (ledger_sync = full); the
 * handler sends its last byte from there. Frees g. Returns 0, or SX_EINVAL
 * / SX_ENOMEM / SX_ESTORE, and then settled never runs. */
typedef void (*sx_meter_settled_fn)(void *ctx, int rc);
int sx_meter_settle_then(sx_meter *m, struct sx_meter_grant *g,
                         const struct sx_usage_event *ev, sx_meter_settled_fn settled,
                         void *ctx);

/* Whether sx_meter_admit() would refuse any request of t now, whatever
 * its size: its requests/min are used up, or a trial's requests/day, or
 * its tokens/day quota has no token left. Then it replies the same 429
 * and returns SX_ELIMIT; else 0. Takes nothing either way. For handlers
 * with work to do before they know the request's size (retrieval), so
 * that a refused tenant costs no more than the check. */
int sx_meter_check(sx_meter *m, sx_http_req *r, const struct sx_tenant *t);

/* Releases a grant without recording anything, for a request that ended
 * before it did any billable work and should not count. Frees g. */
void sx_meter_release(sx_meter *m, struct sx_meter_grant *g);

/* Counts one training job of a tenant in the ledger (durable on return).
 * job_id makes it idempotent: recording the same job twice counts once.
 * 0, SX_EINVAL or SX_ESTORE. */
int sx_meter_record_training_job(sx_meter *m, const char *tenant_id, const char *job_id);

/* ---- limit events (for webhooks) ---------------------------------------- */

enum sx_meter_limit_kind {
    SX_LIMIT_DAILY_TOKENS,   /* the tenant's tokens/day */
    SX_LIMIT_TRIAL_REQUESTS, /* a trial tenant's requests/day */
    SX_LIMIT_TRIAL_TOKENS,   /* a trial tenant's tokens/day */
};

struct sx_meter_limit_event {
    const char *tenant_id;
    enum sx_meter_limit_kind kind;
    const char *kind_name; /* "daily_token_limit", "trial_request_limit", ... */
    char day[11];          /* the UTC day, "YYYY-MM-DD" */
    int64_t limit;         /* the limit in force */
    int64_t used;          /* settled use when it was reached */
    int64_t at_ms;         /* when */
};

/* Calls fn(ev, ctx) once per tenant, kind and UTC day, the first time a
 * tenant reaches a limit: its settled use reaches it, or a request that
 * would fit in a whole day's quota is refused by it. The event is stored
 * (usage_limit_events) before fn runs, and fn runs on the thread that
 * committed it (the ledger's or a settling request's): it must return
 * quickly (queue the work). Up to 16 subscribers;
 * register before serving. 0 or SX_ELIMIT. */
typedef void (*sx_meter_limit_fn)(const struct sx_meter_limit_event *ev, void *ctx);
int sx_meter_subscribe(sx_meter *m, sx_meter_limit_fn fn, void *ctx);

/* ---- usage queries ------------------------------------------------------ */

struct sx_usage_totals {
    int64_t requests;
    int64_t tokens; /* prompt + completion */
    int64_t prompt_tokens, completion_tokens;
    int64_t rerank_calls, quantum_rerank_calls;
    int64_t training_jobs;
};

/* A span of UTC days, inclusive, as days since 1970-01-01. */
struct sx_usage_span {
    int64_t from_day, to_day;
};

/* Parses a usage period: "current_month", "previous_month", "today" or
 * "YYYY-MM" (1970-01 .. 9999-12), relative to the UTC day today (days since
 * the epoch). A month spans all its days. 0 or SX_EINVAL. */
int sx_usage_period_parse(const char *period, int64_t today, struct sx_usage_span *out);

/* Totals of one tenant over span. 0 or SX_ESTORE. */
int sx_meter_usage(sx_meter *m, const char *tenant_id, const struct sx_usage_span *span,
                   struct sx_usage_totals *out);

/* One entry per day of span (to_day - from_day + 1 entries in days, zeros
 * for days without use). 0, SX_EINVAL (span reversed) or SX_ESTORE. */
int sx_meter_usage_daily(sx_meter *m, const char *tenant_id, const struct sx_usage_span *span,
                         struct sx_usage_totals *days, int64_t n_days);

/* Totals of every tenant with use in span: *ids[i] (malloc'd strings, the
 * array too) and (*totals)[i] for i < *n, sorted by tenant id. The caller
 * frees with sx_meter_usage_list_free(). 0, SX_ENOMEM or SX_ESTORE. */
int sx_meter_usage_by_tenant(sx_meter *m, const struct sx_usage_span *span, char ***ids,
                             struct sx_usage_totals **totals, size_t *n);
void sx_meter_usage_list_free(char **ids, struct sx_usage_totals *totals, size_t n);

#endif
