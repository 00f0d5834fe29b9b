/* The usage ledger: one row per finished metered request (usage_events,
 * keyed by request id so a retry can never bill twice), daily rollups per
 * tenant (usage_daily) updated in the same transaction, and the limit
 * events (usage_limit_events, one per tenant, kind and day).
 *
 * Group commit, leader/follower: a settling thread queues its row; if no
 * commit is in progress it becomes the leader, takes everything queued,
 * writes it in one transaction on the ledger's own connection and wakes
 * the followers whose rows it carried. Rows queued while a commit runs wait
 * for the next leader (the first of them), so alone a request pays one
 * commit on its own thread and under load one commit serves a whole queue.
 * The rollups of a batch are summed per tenant and day first; a leader
 * checkpoints the WAL every few hundred rows after waking its batch. A
 * small thread writes what no request waits for (limit events). Durability
 * of a commit: ledger_sync (base/config.h).
 *
 * With a journal (sx_meter_options.journal_dir, the server's default), a
 * settling thread instead appends its row to the journal (journal.c), and
 * with ledger_sync = full waits for a group fdatasync of it, leader/follower
 * as above; the journaled rows then reach the store a few milliseconds
 * later, and readers of the usage tables call sx_ledger_flush() first. At
 * open, rows that a crash left in the journal are committed before
 * anything reads the rollups.
 *
 * Who writes journaled rows into the store: with SQLite, the event loops,
 * in the time they would spin before sleeping (sx_ledger_step, through
 * sx_loop_set_idle_work): a row per step into a transaction left open
 * between steps, committed by a step once it is STEP_TX_MS old. A step
 * costs a few microseconds and never blocks, so a loop that is woken in
 * the middle of the ledger's work answers at once; the work uses the CPU
 * the spinning loop held anyway. Measured at concurrency 1 on a 2-vCPU VM
 * (bench/gateway), where the ledger thread's batches had queued the
 * client and the upstream behind them on the other CPU: 500-630 -> 230-260
 * us p99 (the mock alone 100-120). Whoever leads next (the ledger thread,
 * a flush, a settler past the backlog) finishes that transaction with its
 * own batch. The ledger thread leads when no loop has stepped for
 * GATHER_MS (the loops are busy, or asleep), the steps fall a batch
 * behind, or a sync commit is due (below). A transaction open from step to
 * step would keep the database's other writers (tenants, keys) out, as
 * SQLite's busy wait seldom finds the lock free between two: while one
 * waits (sx_store_writer_waiting), the steps commit and begin nothing. */
#include "metering/internal.h"

#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "base/time.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 1024
#define BUSY_RETRIES 8
/* Committed rows between two WAL checkpoints. full: about SQLite's own
 * 1000-page WAL, small enough that the WAL is soon rewritten in place,
 * where an fsync has no file size to update; normal: a checkpoint is the
 * only fsync, so a larger WAL (about 20 MB) makes them rarer. */
#define CHECKPOINT_ROWS_FULL 200
#define CHECKPOINT_ROWS_NORMAL 1000
/* Journal mode: how long the ledger thread lets rows gather after it is
 * woken before it commits them (a flush or a close cuts it short), and
 * the rows between checkpoints: nobody waits for these commits, so they
 * are made large, which writes each page once for many rows. */
#define GATHER_MS 10
#define CHECKPOINT_ROWS_JOURNALED 8192
/* The ledger thread runs at nice 19: its commits are background work and
 * must not delay a request. On a 2-CPU VM at concurrency 1, a 70-row
 * commit (about 400 us of CPU every 10 ms) at normal priority preempted
 * the thread serving the request, or held up the client and the upstream
 * queued behind it, while the other CPU idled: 480 -> 125-170 us p99 added
 * at SCHED_IDLE (bench/gateway). On another 2-CPU VM, a guest of a guest,
 * SCHED_IDLE made that p99 8-78 ms against 0.9-1.0 ms at nice 19, with 14%
 * more CPU a request; perf sched showed woken threads left waiting on an
 * idle vCPU for up to 27 ms, and holding the ledger's lock at normal
 * priority changed nothing. A thread at nice 19 can still go without the
 * CPU for long on a busy machine, in the middle of a batch too (so its
 * batches are smaller: each holds the database's write lock). Past
 * BACKLOG_ROWS rows waiting, the thread that journals a row commits a
 * batch itself, or waits for the batch in progress (which lends the
 * ledger thread a CPU), as a flush does: memory and the delay of usage
 * reports stay bounded however busy the CPUs are, and a sustained load
 * pays for its ledger as it goes. */
#define IDLE_BATCH_MAX 256
/* The loops' steps commit their transaction once it is STEP_TX_MS old with
 * nothing queued, or holds STEP_TX_ROWS rows; after finding the database
 * locked by another connection, they pause for STEP_PAUSE_MS. */
#define STEP_TX_MS 10
#define STEP_TX_ROWS IDLE_BATCH_MAX
#define STEP_PAUSE_MS 2
#define BACKLOG_ROWS SX_LEDGER_BACKLOG_ROWS

static const struct sx_migration migrations[] = {
    {1, "usage ledger, daily rollups, limit events",
     "CREATE TABLE usage_events ("
     " request_id TEXT PRIMARY KEY,"
     " tenant_id TEXT NOT NULL,"
     " day BIGINT NOT NULL,"
     " started_at BIGINT NOT NULL,"
     " finished_at BIGINT NOT NULL,"
     " endpoint TEXT NOT NULL,"
     " model TEXT,"
     " status TEXT NOT NULL,"
     " prompt_tokens BIGINT NOT NULL,"
     " completion_tokens BIGINT NOT NULL,"
     " rerank_calls BIGINT NOT NULL,"
     " quantum_rerank_calls BIGINT NOT NULL,"
     " training_jobs BIGINT NOT NULL);"
     "CREATE INDEX usage_events_tenant_day ON usage_events (tenant_id, day);"
     "CREATE TABLE usage_daily ("
     " tenant_id TEXT NOT NULL,"
     " day BIGINT NOT NULL,"
     " requests BIGINT NOT NULL,"
     " prompt_tokens BIGINT NOT NULL,"
     " completion_tokens BIGINT NOT NULL,"
     " rerank_calls BIGINT NOT NULL,"
     " quantum_rerank_calls BIGINT NOT NULL,"
     " training_jobs BIGINT NOT NULL,"
     " PRIMARY KEY (tenant_id, day));"
     "CREATE INDEX usage_daily_day ON usage_daily (day);"
     "CREATE TABLE usage_limit_events ("
     " tenant_id TEXT NOT NULL,"
     " day BIGINT NOT NULL,"
     " kind TEXT NOT NULL,"
     " limit_value BIGINT NOT NULL,"
     " used BIGINT NOT NULL,"
     " created_at BIGINT NOT NULL,"
     " PRIMARY KEY (tenant_id, day, kind));"},
};

/* A queued item: an event row (its caller waits on wake) or a limit event
 * (fire and forget: whoever writes it frees it). */
struct item {
    struct item *next;
    bool is_limit;
    bool detached; /* journaled row: nobody waits, freed once written */
    uint32_t segment; /* journaled row: its journal segment */
    char request_id[96], tenant_id[SX_TENANT_ID_MAX];
    char endpoint[40], model[128], status[24];
    int64_t day, started_ms, finished_ms;
    int64_t prompt_tokens, completion_tokens;
    int64_t rerank_calls, quantum_rerank_calls, training_jobs;
    enum sx_meter_limit_kind kind;
    int64_t limit, used;
    bool deleted;  /* the tenant is gone: nothing to record */
    bool inserted; /* newly recorded (not a duplicate) */
    bool done;     /* event rows: written (rc says how) */
    int rc;
    pthread_cond_t wake; /* event rows: signalled when done or leader */
};

/* A settler waiting for its journaled row to reach the disk (full): told
 * by the syncer thread once an fdatasync covers row number seq. */
struct waiter {
    struct waiter *next;
    int64_t seq;
    sx_meter_settled_fn durable;
    void *ctx;
};

/* One rollup of a batch: the new rows of a tenant and day, summed. */
struct rollup {
    const char *tenant_id;
    int64_t day, requests, prompt_tokens, completion_tokens;
    int64_t rerank_calls, quantum_rerank_calls, training_jobs;
};

struct ledger {
    sx_meter *meter;
    sx_store *store;
    sx_db *db; /* the ledger's own connection, used by the leader only */
    int sync;  /* SX_LEDGER_SYNC_* */
    pthread_t thread;
    bool started;

    pthread_mutex_t lock;
    pthread_cond_t queued; /* the ledger thread: work nobody waits on */
    struct item *head, *tail;
    bool leading; /* a commit is in progress */
    bool held;    /* sx_ledger_hold(): the ledger thread commits nothing */
    bool stopping;
    int64_t batches, rows, rows_since_checkpoint;

    /* Journal mode (journal non-NULL); the fields are under lock. */
    struct journal *journal;
    bool idle;            /* the ledger thread waits for work */
    bool syncing;         /* the syncer runs an fdatasync (full) */
    bool syncer_idle;     /* the syncer waits for work */
    int64_t appended;     /* rows journaled since open */
    int64_t failed;       /* rows the store refused (kept in the journal) */
    uint32_t keep;        /* the oldest segment holding a refused row, 0 none */
    pthread_cond_t applied; /* rows went to the store */
    pthread_cond_t sync_wanted; /* the syncer: settlers wait (full) */
    struct waiter *waiting, **waiting_tail; /* in journal order */
    pthread_t syncer;
    bool syncer_started;

    /* The transaction open on db between two of the loops' steps (journal
     * mode): its rows, written but not committed, in order. Whoever leads
     * owns it and the rollups; others read it under lock, with no leader. */
    bool steps; /* the loops step (journal mode, SQLite) */
    bool tx_open;
    int tx_n;
    struct item *tx_rows, **tx_tail;
    int64_t tx_opened_ns;
    int64_t stepped_ns;          /* when a loop last took a step */
    int64_t steps_paused_until;  /* the store was busy: no step before */
    char tx_tenant[SX_TENANT_ID_MAX]; /* the last tenant looked up */
    bool tx_tenant_known, tx_tenant_deleted;

    int n_rollups;
    struct rollup rollups[BATCH_MAX]; /* the leader's scratch */
};

static const char *const insert_event_sql =
    "INSERT INTO usage_events (request_id, tenant_id, day, started_at, finished_at,"
    " endpoint, model, status, prompt_tokens, completion_tokens, rerank_calls,"
    " quantum_rerank_calls, training_jobs)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    " ON CONFLICT (request_id) DO NOTHING";

static const char *const upsert_daily_sql =
    "INSERT INTO usage_daily (tenant_id, day, requests, prompt_tokens, completion_tokens,"
    " rerank_calls, quantum_rerank_calls, training_jobs)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (tenant_id, day) DO UPDATE SET"
    " requests = usage_daily.requests + excluded.requests,"
    " prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,"
    " rerank_calls = usage_daily.rerank_calls + excluded.rerank_calls,"
    " quantum_rerank_calls = usage_daily.quantum_rerank_calls"
    "   + excluded.quantum_rerank_calls,"
    " training_jobs = usage_daily.training_jobs + excluded.training_jobs";

static const char *const insert_limit_sql =
    "INSERT INTO usage_limit_events (tenant_id, day, kind, limit_value, used, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, day, kind) DO NOTHING";

/* Adds a newly recorded row to the batch's rollups. */
static void add_rollup(struct ledger *lg, int *n, const struct item *it)
{
    struct rollup *r = NULL;

    for (int i = *n - 1; i >= 0 && !r; i--)
        if (lg->rollups[i].day == it->day && strcmp(lg->rollups[i].tenant_id, it->tenant_id) == 0)
            r = &lg->rollups[i];
    if (!r) {
        r = &lg->rollups[(*n)++];
        memset(r, 0, sizeof(*r));
        r->tenant_id = it->tenant_id;
        r->day = it->day;
    }
    r->requests += it->training_jobs ? 0 : 1;
    r->prompt_tokens += it->prompt_tokens;
    r->completion_tokens += it->completion_tokens;
    r->rerank_calls += it->rerank_calls;
    r->quantum_rerank_calls += it->quantum_rerank_calls;
    r->training_jobs += it->training_jobs;
}

/* Writes one item inside the open transaction. */
static int write_item(sx_db *db, struct item *it)
{
    int64_t n;

    it->inserted = false;
    if (it->deleted)
        return 0;
    if (it->is_limit)
        n = sx_db_run(db, insert_limit_sql, "titiii", it->tenant_id, it->day,
                      sx_meter_limit_kind_name(it->kind), it->limit, it->used,
                      it->finished_ms);
    else
        n = sx_db_run(db, insert_event_sql, "ttiiitttiiiii", it->request_id, it->tenant_id,
                      it->day, it->started_ms, it->finished_ms, it->endpoint,
                      it->model[0] ? it->model : NULL, it->status, it->prompt_tokens,
                      it->completion_tokens, it->rerank_calls, it->quantum_rerank_calls,
                      it->training_jobs);
    if (n < 0)
        return (int)n;
    it->inserted = n == 1; /* 0: already recorded, the rollup has it */
    return 0;
}

/* Whether tenant_id is gone: a request that finishes after its tenant was
 * deleted must not bring usage rows back (the purge already ran). A
 * transaction is mostly a few tenants: each run of one is looked up once. */
static bool tenant_deleted(struct ledger *lg, const char *tenant_id)
{
    struct sx_tenant *t = NULL;

    if (!lg->meter->tenancy)
        return false;
    if (lg->tx_tenant_known && strcmp(lg->tx_tenant, tenant_id) == 0)
        return lg->tx_tenant_deleted;
    lg->tx_tenant_deleted = sx_tenant_get(lg->meter->tenancy, tenant_id, &t) == SX_ENOTFOUND;
    sx_tenant_unref(t);
    memcpy(lg->tx_tenant, tenant_id, strlen(tenant_id) + 1); /* same bound as the item's */
    lg->tx_tenant_known = true;
    return lg->tx_tenant_deleted;
}

/* Writes one item in the open transaction, begun here if none is: when
 * another connection writes, begin waits for it (wait) or returns SX_EBUSY
 * at once. */
static int tx_write(struct ledger *lg, struct item *it, bool wait)
{
    int rc;

    if (!lg->tx_open) {
        rc = wait ? sx_db_begin(lg->db) : sx_db_try_begin(lg->db);
        if (rc)
            return rc;
        lg->tx_open = true;
        lg->tx_opened_ns = sx_time_mono_ns();
        lg->tx_tenant_known = false;
        lg->n_rollups = 0;
    }
    it->deleted = tenant_deleted(lg, it->tenant_id);
    rc = write_item(lg->db, it);
    if (rc == 0 && it->inserted && !it->is_limit)
        add_rollup(lg, &lg->n_rollups, it);
    return rc;
}

/* Commits the open transaction after one rollup update per tenant and day
 * of its rows; rolled back when that fails. */
static int tx_commit(struct ledger *lg)
{
    int rc = 0;

    if (!lg->tx_open)
        return 0;
    for (int i = 0; rc == 0 && i < lg->n_rollups; i++) {
        const struct rollup *r = &lg->rollups[i];
        int64_t k = sx_db_run(lg->db, upsert_daily_sql, "tiiiiiii", r->tenant_id, r->day,
                              r->requests, r->prompt_tokens, r->completion_tokens,
                              r->rerank_calls, r->quantum_rerank_calls, r->training_jobs);

        rc = k < 0 ? (int)k : 0;
    }
    if (rc == 0)
        rc = sx_db_commit(lg->db);
    else
        sx_db_rollback(lg->db);
    lg->tx_open = false;
    return rc;
}

static void tx_abort(struct ledger *lg)
{
    sx_db_rollback(lg->db);
    lg->tx_open = false;
}

/* Writes items [first, until) in one transaction: the events, then one
 * rollup update per tenant and day. */
static int write_tx(struct ledger *lg, struct item *first, struct item *until)
{
    int rc = 0;

    for (struct item *it = first; rc == 0 && it != until; it = it->next)
        rc = tx_write(lg, it, true);
    if (rc) {
        tx_abort(lg);
        return rc;
    }
    return tx_commit(lg);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Writes a batch durably: retried while the store is busy; when the batch
 * as a whole fails, each item is tried alone so one bad row cannot fail
 * the others. Sets it->rc. */
static void write_batch(struct ledger *lg, struct item *batch)
{
    int rc = SX_ESTORE;

    for (int attempt = 0; attempt < BUSY_RETRIES; attempt++) {
        rc = write_tx(lg, batch, NULL);
        if (rc != SX_EBUSY)
            break;
        sleep_ms(5 << attempt);
    }
    if (rc && batch && batch->next) {
        SX_WARN("metering", "ledger batch failed (%s); writing its rows one by one",
                sx_strerror(rc));
        for (struct item *it = batch; it; it = it->next)
            it->rc = write_tx(lg, it, it->next);
    } else {
        for (struct item *it = batch; it; it = it->next)
            it->rc = rc;
    }
    for (struct item *it = batch; it; it = it->next)
        if (it->rc)
            SX_ERROR("metering", "ledger write for tenant %s failed: %s", it->tenant_id,
                     sx_strerror(it->rc));
}

static void publish(struct ledger *lg, const struct item *it)
{
    struct sx_meter_limit_event ev = {0};
    int y, mo, d;

    ev.tenant_id = it->tenant_id;
    ev.kind = it->kind;
    ev.kind_name = sx_meter_limit_kind_name(it->kind);
    sx_time_civil_from_days(it->day, &y, &mo, &d);
    snprintf(ev.day, sizeof(ev.day), "%04d-%02d-%02d", y, mo, d);
    ev.limit = it->limit;
    ev.used = it->used;
    ev.at_ms = it->finished_ms;
    SX_INFO("metering", "tenant %s reached its %s (%lld) on %s", it->tenant_id, ev.kind_name,
            (long long)it->limit, ev.day);
    sx_meter_publish(lg->meter, &ev);
}

/* Copies the WAL back into the database (PASSIVE) on the ledger's
 * connection, by a leader that still holds the lead: no commit runs in
 * between, so the next commit starts the WAL over from its beginning and
 * rewrites the same file blocks (an fsync that needs no metadata update).
 * In place of SQLite's automatic checkpoint, which would run inside a
 * COMMIT that a whole batch of followers waits on. */
static void checkpoint(struct ledger *lg)
{
    if (strcmp(sx_store_backend(lg->store), "sqlite") != 0)
        return;
    if (sx_db_exec(lg->db, "PRAGMA wal_checkpoint(PASSIVE)") != 0)
        SX_WARN("metering", "ledger WAL checkpoint failed");
}

/* Copies the whole WAL into the database file (TRUNCATE: waits for
 * readers); true once it did, which leaves every commit on the disk. */
static bool store_synced(struct ledger *lg)
{
    sx_stmt *st;
    bool done = false;

    if (strcmp(sx_store_backend(lg->store), "sqlite") != 0)
        return true;
    st = sx_db_query(lg->db, "PRAGMA wal_checkpoint(TRUNCATE)", "");
    if (st && sx_stmt_step(st) == SX_STORE_ROW)
        done = sx_stmt_int(st, 0) == 0 && sx_stmt_int(st, 1) == sx_stmt_int(st, 2);
    if (st)
        sx_stmt_done(st);
    if (!done)
        SX_WARN("metering", "the usage ledger's last commits could not be checkpointed; "
                "its journal stays for the next start");
    return done;
}

/* Wakes whoever should lead next: the owner of the first queued row, or
 * the ledger thread for a limit event (or for a close in progress). */
static void hand_over(struct ledger *lg)
{
    if (lg->head && !lg->head->is_limit && !lg->head->detached)
        pthread_cond_signal(&lg->head->wake);
    else if (lg->head || lg->stopping)
        pthread_cond_signal(&lg->queued);
}

/* Journal mode, after a commit that reached the disk (with full; with
 * normal a commit in the page cache is as durable as the journal): the
 * segments whose rows are all in the store go, a refused row keeping its
 * segment for the next start's replay. Lock held. */
static void release_segments(struct ledger *lg)
{
    uint32_t below = UINT32_MAX;

    for (const struct item *it = lg->head; it; it = it->next)
        if (!it->is_limit) {
            below = it->segment;
            break;
        }
    if (lg->keep && lg->keep < below)
        below = lg->keep;
    sx_journal_release(lg->journal, below);
}

/* Takes up to max queued items off the queue (NULL: none, or max < 1).
 * Lock held. */
static struct item *take(struct ledger *lg, int max)
{
    struct item *first = lg->head, *it = first;

    if (!first || max < 1)
        return NULL;
    for (int n = 1; it->next && n < max; n++)
        it = it->next;
    lg->head = it->next;
    if (!lg->head)
        lg->tail = NULL;
    it->next = NULL;
    return first;
}

/* The rows of the open transaction, which the caller now owns. */
static struct item *tx_detach(struct ledger *lg)
{
    struct item *rows = lg->tx_rows;

    lg->tx_rows = NULL;
    lg->tx_tail = &lg->tx_rows;
    lg->tx_n = 0;
    return rows;
}

/* Commits the open transaction and hands its rows to the caller (*rows),
 * each with rc 0 when the commit went through. */
static int tx_commit_rows(struct ledger *lg, struct item **rows)
{
    int rc = tx_commit(lg);

    *rows = tx_detach(lg);
    for (struct item *it = *rows; rc == 0 && it; it = it->next)
        it->rc = 0;
    return rc;
}

/* Writes batch (may be NULL) after the rows that the loops' steps left in
 * the open transaction and commits them all; when that fails, they go
 * through write_batch() (retries, then one by one). Returns them all, in
 * order, each with its rc. Unlocked, as the leader. */
static struct item *finish(struct ledger *lg, struct item *batch)
{
    struct item *all;
    int rc = 0;

    if (!lg->tx_open) {
        write_batch(lg, batch);
        return batch;
    }
    for (struct item *it = batch; rc == 0 && it; it = it->next)
        rc = tx_write(lg, it, true);
    *lg->tx_tail = batch;
    if (rc == 0) {
        rc = tx_commit_rows(lg, &all);
    } else {
        tx_abort(lg);
        all = tx_detach(lg);
    }
    if (rc)
        write_batch(lg, all);
    return all;
}

/* After a commit of done, lock held: counts and frees its rows (or wakes
 * their owners), lets go of the journal where it may, checkpoints when
 * due, hands the lead on and publishes the limit events it recorded. */
static void settle(struct ledger *lg, struct item *done, bool sync_now)
{
    struct item *it, *limits = NULL, **lt = &limits;
    bool batch_ok = true;

    /* A waiter may free its item as soon as done is set: read next first. */
    lg->batches++;
    for (it = done; it;) {
        struct item *next = it->next;

        if (it->is_limit) {
            it->next = NULL;
            *lt = it;
            lt = &it->next;
        } else if (it->detached) {
            lg->rows++;
            lg->rows_since_checkpoint++;
            if (it->rc) {
                batch_ok = false;
                lg->failed++;
                if (!lg->keep || it->segment < lg->keep)
                    lg->keep = it->segment;
            }
            free(it);
        } else {
            lg->rows++;
            lg->rows_since_checkpoint++;
            it->done = true;
            pthread_cond_signal(&it->wake);
        }
        it = next;
    }
    if (lg->journal)
        pthread_cond_broadcast(&lg->applied);
    if (sync_now && batch_ok)
        release_segments(lg);
    /* Every so many rows, a checkpoint, after the followers are woken:
     * the leader's own request and those arriving meanwhile wait for it. */
    if (lg->journal ? sync_now
                    : lg->rows_since_checkpoint >= (lg->sync == SX_LEDGER_SYNC_FULL
                                                        ? CHECKPOINT_ROWS_FULL
                                                        : CHECKPOINT_ROWS_NORMAL)) {
        lg->rows_since_checkpoint = 0;
        pthread_mutex_unlock(&lg->lock);
        checkpoint(lg);
        pthread_mutex_lock(&lg->lock);
    }
    lg->leading = false;
    hand_over(lg);
    if (limits) {
        pthread_mutex_unlock(&lg->lock);
        for (it = limits; it;) {
            struct item *next = it->next;

            if (it->rc == 0 && it->inserted)
                publish(lg, it);
            free(it);
            it = next;
        }
        pthread_mutex_lock(&lg->lock);
    }
}

/* One commit as the leader: of up to max (<= BATCH_MAX) items, counting
 * the rows the loops' steps left in the open transaction. Called with the
 * lock held, no leader and something to write; returns with the lock
 * held. Writes unlocked, then wakes the rows' owners and the next leader. */
static void lead(struct ledger *lg, int max)
{
    /* Journal mode: every so many rows a commit reaches the disk (full),
     * and the journal files before it may then go. The steps leave no
     * transaction open past that many rows (synchronous is not changed
     * inside one). */
    bool sync_now = lg->journal && !lg->tx_open &&
                    lg->rows_since_checkpoint >= CHECKPOINT_ROWS_JOURNALED;
    struct item *batch, *done;

    lg->leading = true;
    batch = take(lg, max - lg->tx_n);
    pthread_mutex_unlock(&lg->lock);

    if (sync_now && lg->sync == SX_LEDGER_SYNC_FULL)
        sx_db_exec(lg->db, "PRAGMA synchronous=FULL");
    done = finish(lg, batch);
    if (sync_now && lg->sync == SX_LEDGER_SYNC_FULL)
        sx_db_exec(lg->db, "PRAGMA synchronous=NORMAL");

    pthread_mutex_lock(&lg->lock);
    settle(lg, done, sync_now);
}

/* Whether the loops' steps keep up with the queue (so the ledger thread
 * leaves it to them): one stepped within the last GATHER_MS, fewer than a
 * batch of rows wait outside the open transaction, and nothing is queued
 * that steps leave to the ledger thread. Lock held. */
static bool loops_stepping(const struct ledger *lg)
{
    return lg->steps && !lg->stopping && (!lg->head || lg->head->detached) &&
           !(lg->tx_open && sx_store_writer_waiting(lg->store)) &&
           lg->appended - lg->rows - lg->tx_n < IDLE_BATCH_MAX &&
           lg->rows_since_checkpoint < CHECKPOINT_ROWS_JOURNALED &&
           sx_time_mono_ns() - lg->stepped_ns < GATHER_MS * 1000000LL;
}

/* Lets journaled rows gather for GATHER_MS (settlers do not signal
 * meanwhile), unless the ledger closes (a flush commits for itself:
 * catch_up()). Lock held. */
static void gather(struct ledger *lg)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += GATHER_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!lg->stopping && pthread_cond_timedwait(&lg->queued, &lg->lock, &until) == 0)
        ;
}

/* The ledger thread: leads when only fire-and-forget items are queued and
 * no loop is stepping, and drains the queue on close. */
static void *ledger_main(void *arg)
{
    struct ledger *lg = arg;

    if (setpriority(PRIO_PROCESS, (id_t)gettid(), 19) != 0)
        SX_WARN("metering", "the ledger thread keeps its priority (setpriority: %s)",
                strerror(errno));
    pthread_mutex_lock(&lg->lock);
    for (;;) {
        /* The transaction's fields are the leader's: read with no leader. */
        bool work = !lg->leading && (lg->head || lg->tx_open) && (!lg->held || lg->stopping);

        if (work && !loops_stepping(lg)) {
            lead(lg, IDLE_BATCH_MAX);
            /* What came during that commit waits for the next, unless
             * the thread falls behind. */
            if (lg->journal && !lg->stopping && lg->appended - lg->rows < IDLE_BATCH_MAX)
                gather(lg);
            continue;
        }
        if (lg->stopping && !lg->leading && !lg->head && !lg->tx_open)
            break;
        /* Nothing to do, or (journal mode) look again in GATHER_MS: a
         * step that leads now may leave rows to write, and nobody would
         * wake the thread for them. */
        if (!lg->journal || !(lg->leading || lg->head || lg->tx_open)) {
            lg->idle = true;
            pthread_cond_wait(&lg->queued, &lg->lock);
            lg->idle = false;
        }
        if (lg->journal)
            gather(lg);
    }
    pthread_mutex_unlock(&lg->lock);
    return NULL;
}

/* A step that committed nothing lets go of the lead: a flush may wait to
 * take it, a close for the ledger thread to. Lock held. */
static void step_done(struct ledger *lg)
{
    lg->leading = false;
    pthread_cond_broadcast(&lg->applied);
    if (lg->stopping)
        pthread_cond_signal(&lg->queued);
}

/* Rows a step could not write (the transaction would not begin, or the
 * store refused it): back to the head of the queue, in order, and no step
 * for pause_ms. After a refusal that is long enough for the ledger thread
 * to take over: its batches retry, then write row by row. Lock held. */
static void give_back(struct ledger *lg, struct item *rows, int64_t now, int pause_ms)
{
    struct item *last = rows;

    while (last->next)
        last = last->next;
    last->next = lg->head;
    if (!lg->head)
        lg->tail = last;
    lg->head = rows;
    lg->steps_paused_until = now + pause_ms * 1000000LL;
    step_done(lg);
    if (lg->idle)
        pthread_cond_signal(&lg->queued);
}

bool sx_ledger_step(struct ledger *lg)
{
    struct item *it = NULL, *done;
    int64_t now;
    bool commit, writer;
    int rc;

    if (!lg->steps || pthread_mutex_trylock(&lg->lock) != 0)
        return false;
    now = sx_time_mono_ns();
    if (lg->leading || lg->stopping || now < lg->steps_paused_until ||
        (lg->head && !lg->head->detached)) {
        pthread_mutex_unlock(&lg->lock);
        return false;
    }
    /* Commit when the transaction is full, or old with nothing queued, or
     * when the rows since the last sync reach CHECKPOINT_ROWS_JOURNALED
     * (the ledger thread's sync commit comes next; no step until then),
     * or when another connection waits to write: held from step to step,
     * the lock would otherwise be free only between two transactions,
     * too seldom for SQLite's busy wait to find it. No new transaction
     * while one waits. */
    writer = sx_store_writer_waiting(lg->store);
    commit = lg->tx_open &&
             (lg->tx_n >= STEP_TX_ROWS || writer ||
              lg->rows_since_checkpoint + lg->tx_n >= CHECKPOINT_ROWS_JOURNALED ||
              (!lg->head && now - lg->tx_opened_ns >= STEP_TX_MS * 1000000LL));
    if (!commit && (!lg->head || writer ||
                    lg->rows_since_checkpoint >= CHECKPOINT_ROWS_JOURNALED)) {
        pthread_mutex_unlock(&lg->lock);
        return false;
    }
    if (!commit)
        it = take(lg, 1);
    lg->leading = true;
    lg->stepped_ns = now;
    pthread_mutex_unlock(&lg->lock);

    if (it) {
        rc = tx_write(lg, it, false);
        pthread_mutex_lock(&lg->lock);
        if (rc == 0) {
            *lg->tx_tail = it;
            lg->tx_tail = &it->next;
            lg->tx_n++;
            step_done(lg);
        } else if (!lg->tx_open) {
            give_back(lg, it, now, STEP_PAUSE_MS); /* another connection writes */
        } else {
            tx_abort(lg);
            *lg->tx_tail = it;
            give_back(lg, tx_detach(lg), now, 2 * GATHER_MS);
        }
        pthread_mutex_unlock(&lg->lock);
        return rc == 0;
    }
    rc = tx_commit_rows(lg, &done);
    pthread_mutex_lock(&lg->lock);
    if (rc)
        give_back(lg, done, now, 2 * GATHER_MS);
    else
        settle(lg, done, false);
    pthread_mutex_unlock(&lg->lock);
    return rc == 0;
}

static void enqueue(struct ledger *lg, struct item *it)
{
    it->next = NULL;
    if (lg->tail)
        lg->tail->next = it;
    else
        lg->head = it;
    lg->tail = it;
}

/* The syncer thread (journal, ledger_sync = full): one fdatasync covers
 * every row journaled before it starts, so while it runs the next group
 * gathers; then it tells that group's settlers, in journal order. */
static void *syncer_main(void *arg)
{
    struct ledger *lg = arg;

    pthread_mutex_lock(&lg->lock);
    for (;;) {
        struct waiter *done, **tail = &lg->waiting, *w;
        int64_t upto;
        int fd, rc;

        if (!lg->waiting) {
            if (lg->stopping)
                break;
            lg->syncer_idle = true;
            pthread_cond_wait(&lg->sync_wanted, &lg->lock);
            lg->syncer_idle = false;
            continue;
        }
        upto = lg->appended;
        fd = sx_journal_fd(lg->journal);
        lg->syncing = true;
        pthread_mutex_unlock(&lg->lock);
        rc = fdatasync(fd);
        if (rc != 0)
            SX_ERROR("metering", "fdatasync of the ledger journal failed: %s",
                     strerror(errno));
        pthread_mutex_lock(&lg->lock);
        lg->syncing = false;

        /* The waiters this sync covered leave the list, oldest first. */
        while (*tail && (*tail)->seq <= upto)
            tail = &(*tail)->next;
        done = lg->waiting;
        lg->waiting = *tail;
        *tail = NULL;
        if (!lg->waiting)
            lg->waiting_tail = &lg->waiting;
        pthread_mutex_unlock(&lg->lock);
        for (w = done; w;) {
            struct waiter *next = w->next;

            w->durable(w->ctx, rc == 0 ? 0 : SX_ESTORE);
            free(w);
            w = next;
        }
        pthread_mutex_lock(&lg->lock);
    }
    pthread_mutex_unlock(&lg->lock);
    return NULL;
}

/* ---- the journal's records ------------------------------------------------ */

/* A row as a journal record: the eight counts and times, then the five
 * strings, each a length byte and its bytes. */
static size_t encode_row(const struct item *it, unsigned char *out)
{
    const int64_t v[8] = {it->day,           it->started_ms,    it->finished_ms,
                          it->prompt_tokens, it->completion_tokens, it->rerank_calls,
                          it->quantum_rerank_calls, it->training_jobs};
    const char *str[5] = {it->request_id, it->tenant_id, it->endpoint, it->model, it->status};
    size_t n = sizeof(v);

    memcpy(out, v, sizeof(v));
    for (int i = 0; i < 5; i++) {
        size_t len = strlen(str[i]); /* < 256: every field is shorter */

        out[n++] = (unsigned char)len;
        memcpy(out + n, str[i], len);
        n += len;
    }
    return n;
}

/* The inverse; SX_EINVAL when rec is not a row (a record this binary did
 * not write). */
static int decode_row(const unsigned char *rec, size_t len, struct item *it)
{
    int64_t v[8];
    struct {
        char *dst;
        size_t cap;
    } str[5] = {{it->request_id, sizeof(it->request_id)},
                {it->tenant_id, sizeof(it->tenant_id)},
                {it->endpoint, sizeof(it->endpoint)},
                {it->model, sizeof(it->model)},
                {it->status, sizeof(it->status)}};
    size_t n = sizeof(v);

    if (len < n)
        return SX_EINVAL;
    memcpy(v, rec, sizeof(v));
    for (int i = 0; i < 5; i++) {
        size_t k;

        if (n >= len || (k = rec[n++]) >= str[i].cap || n + k > len)
            return SX_EINVAL;
        memcpy(str[i].dst, rec + n, k);
        str[i].dst[k] = 0;
        n += k;
    }
    if (n != len || !it->request_id[0] || !it->tenant_id[0])
        return SX_EINVAL;
    it->day = v[0];
    it->started_ms = v[1];
    it->finished_ms = v[2];
    it->prompt_tokens = v[3];
    it->completion_tokens = v[4];
    it->rerank_calls = v[5];
    it->quantum_rerank_calls = v[6];
    it->training_jobs = v[7];
    return 0;
}

/* Replay at open: the rows a crash left in the journal, committed in
 * batches before the ledger takes new ones. */
struct replay {
    struct ledger *lg;
    struct item *head, **tail;
    int n;
    size_t bad;
};

static int replay_commit(struct replay *rp)
{
    int rc = 0;

    if (rp->head) {
        write_batch(rp->lg, rp->head);
        for (struct item *it = rp->head, *next; it; it = next) {
            next = it->next;
            if (it->rc)
                rc = it->rc;
            free(it);
        }
    }
    rp->head = NULL;
    rp->tail = &rp->head;
    rp->n = 0;
    return rc;
}

static int replay_one(void *ctx, const void *rec, size_t len)
{
    struct replay *rp = ctx;
    struct item *it = calloc(1, sizeof(*it));

    if (!it)
        return SX_ENOMEM;
    if (decode_row(rec, len, it) != 0) {
        rp->bad++;
        free(it);
        return 0;
    }
    *rp->tail = it;
    rp->tail = &it->next;
    return ++rp->n == BATCH_MAX ? replay_commit(rp) : 0;
}

static int open_journal(struct ledger *lg, const char *dir, char *err, size_t errlen)
{
    struct replay rp = {lg, NULL, NULL, 0, 0};
    size_t records;
    int rc;

    rp.tail = &rp.head;
    lg->journal = sx_journal_open(dir, lg->sync == SX_LEDGER_SYNC_FULL, err, errlen);
    if (!lg->journal)
        return SX_EIO;
    rc = sx_journal_replay(lg->journal, replay_one, &rp, &records);
    if (rc == 0)
        rc = replay_commit(&rp);
    else
        replay_commit(&rp);
    if (rc == 0)
        rc = sx_journal_reset(lg->journal);
    if (rc) {
        snprintf(err, errlen,
                 "cannot commit the usage rows journaled in \"%s\" to the store (%s); they "
                 "stay there for the next start",
                 dir, sx_strerror(rc));
        return rc;
    }
    if (records)
        SX_INFO("metering", "usage ledger: %zu journaled row(s) from before the last stop "
                "committed", records - rp.bad);
    if (rp.bad)
        SX_WARN("metering", "usage ledger journal: %zu record(s) not understood, ignored",
                rp.bad);
    return 0;
}

struct ledger *sx_ledger_open(sx_meter *m, sx_store *store, int sync, const char *journal_dir,
                              char *err, size_t errlen)
{
    struct ledger *lg;

    if (sync != SX_LEDGER_SYNC_FULL && sync != SX_LEDGER_SYNC_NORMAL) {
        snprintf(err, errlen, "ledger_sync must be full or normal");
        return NULL;
    }
    if (sx_store_migrate(store, "metering", migrations,
                         sizeof(migrations) / sizeof(migrations[0]), err, errlen))
        return NULL;
    lg = calloc(1, sizeof(*lg));
    if (!lg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    lg->meter = m;
    lg->store = store;
    lg->sync = sync;
    pthread_mutex_init(&lg->lock, NULL);
    pthread_cond_init(&lg->queued, NULL);
    pthread_cond_init(&lg->applied, NULL);
    pthread_cond_init(&lg->sync_wanted, NULL);
    lg->waiting_tail = &lg->waiting;
    lg->tx_tail = &lg->tx_rows;

    /* The ledger's own connection: its durability setting is its own, and
     * tenants, keys and the audit log keep synchronous=FULL on theirs. In
     * WAL mode NORMAL makes a commit a write to the WAL file without
     * fsync: in the page cache, so a killed process loses nothing. */
    lg->db = sx_store_connect(store);
    if (!lg->db) {
        snprintf(err, errlen, "cannot open the usage ledger's database connection");
        sx_ledger_close(lg);
        return NULL;
    }
    if (strcmp(sx_store_backend(store), "sqlite") == 0 &&
        sx_db_exec(lg->db, sync == SX_LEDGER_SYNC_FULL
                               ? "PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0"
                               : "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0")) {
        snprintf(err, errlen, "cannot configure the usage ledger's database connection");
        sx_ledger_close(lg);
        return NULL;
    }
    if (journal_dir && open_journal(lg, journal_dir, err, errlen) != 0) {
        sx_ledger_close(lg);
        return NULL;
    }
    /* Journaled, the store's commits need not reach the disk one by one:
     * the journal holds the rows until a commit that does (lead()). */
    if (lg->journal && strcmp(sx_store_backend(store), "sqlite") == 0 &&
        sx_db_exec(lg->db, "PRAGMA synchronous=NORMAL")) {
        snprintf(err, errlen, "cannot configure the usage ledger's database connection");
        sx_ledger_close(lg);
        return NULL;
    }
    if (lg->journal && sync == SX_LEDGER_SYNC_FULL) {
        if (pthread_create(&lg->syncer, NULL, syncer_main, lg) != 0) {
            snprintf(err, errlen, "cannot start the usage ledger's journal thread");
            sx_ledger_close(lg);
            return NULL;
        }
        lg->syncer_started = true;
    }
    if (pthread_create(&lg->thread, NULL, ledger_main, lg) != 0) {
        snprintf(err, errlen, "cannot start the usage ledger thread");
        sx_ledger_close(lg);
        return NULL;
    }
    lg->started = true;
    lg->steps = lg->journal && strcmp(sx_store_backend(store), "sqlite") == 0;
    SX_INFO("metering", "usage ledger ready (ledger_sync = %s, %s)",
            sync == SX_LEDGER_SYNC_FULL ? "full" : "normal",
            lg->journal ? "journaled" : "committed by each request");
    return lg;
}

void sx_ledger_close(struct ledger *lg)
{
    if (!lg)
        return;
    pthread_mutex_lock(&lg->lock);
    lg->stopping = true;
    pthread_cond_signal(&lg->queued);
    pthread_cond_signal(&lg->sync_wanted);
    pthread_mutex_unlock(&lg->lock);
    if (lg->syncer_started)
        pthread_join(lg->syncer, NULL);
    if (lg->started)
        pthread_join(lg->thread, NULL);
    /* Everything journaled is in the store now, unless the store refused
     * rows: those segments stay for the next start, as does the journal
     * when (full) the store's last commits cannot be made durable. */
    if (lg->journal && lg->started && !lg->keep &&
        (lg->sync != SX_LEDGER_SYNC_FULL || store_synced(lg)))
        sx_journal_reset(lg->journal);
    sx_journal_close(lg->journal);
    sx_store_disconnect(lg->db);
    pthread_cond_destroy(&lg->sync_wanted);
    pthread_cond_destroy(&lg->applied);
    pthread_cond_destroy(&lg->queued);
    pthread_mutex_destroy(&lg->lock);
    free(lg);
}

static void copy(char *dst, size_t n, const char *src)
{
    size_t len = src ? strlen(src) : 0;

    if (len >= n)
        len = n - 1;
    memcpy(dst, src ? src : "", len);
    dst[len] = 0;
}

static int fill_item(struct item *it, const struct ledger_row *row)
{
    if (!row->request_id || strlen(row->request_id) >= sizeof(it->request_id) ||
        !row->tenant_id || strlen(row->tenant_id) >= sizeof(it->tenant_id))
        return SX_EINVAL;
    memset(it, 0, offsetof(struct item, wake));
    copy(it->request_id, sizeof(it->request_id), row->request_id);
    copy(it->tenant_id, sizeof(it->tenant_id), row->tenant_id);
    copy(it->endpoint, sizeof(it->endpoint), row->endpoint);
    copy(it->model, sizeof(it->model), row->model);
    copy(it->status, sizeof(it->status), row->status ? row->status : "ok");
    it->day = row->day;
    it->started_ms = row->started_ms;
    it->finished_ms = row->finished_ms;
    it->prompt_tokens = row->prompt_tokens;
    it->completion_tokens = row->completion_tokens;
    it->rerank_calls = row->rerank_calls;
    it->quantum_rerank_calls = row->quantum_rerank_calls;
    it->training_jobs = row->training_jobs;
    return 0;
}

/* Journal mode: one step for a thread that needs journaled rows in the
 * store now (the ledger thread may wait long for a CPU): commits a batch
 * when nobody leads, else waits for the leader's batch, which lends a
 * starved leader a CPU. false when nothing is left to commit. Lock held. */
static bool catch_up(struct ledger *lg)
{
    if (lg->leading)
        pthread_cond_wait(&lg->applied, &lg->lock);
    else if (lg->head || lg->tx_open)
        lead(lg, BATCH_MAX);
    else
        return false;
    return true;
}

/* Journal mode: the row goes to the journal and to the ledger thread's
 * queue for the store; durable runs once it is as durable as ledger_sync
 * says (normal: at once, on this thread; full: on the syncer's). */
static int append_journaled(struct ledger *lg, struct item *it, sx_meter_settled_fn durable,
                            void *ctx)
{
    unsigned char rec[512];
    size_t len = encode_row(it, rec);
    struct waiter *w = NULL;
    int rc;

    it->detached = true;
    if (lg->sync == SX_LEDGER_SYNC_FULL && !(w = malloc(sizeof(*w)))) {
        free(it);
        return SX_ENOMEM;
    }
    pthread_mutex_lock(&lg->lock);
    /* A segment being synced is not rotated away under its syncer. */
    rc = sx_journal_append(lg->journal, rec, len, !lg->syncing, &it->segment);
    if (rc) {
        pthread_mutex_unlock(&lg->lock);
        free(it);
        free(w);
        return SX_ESTORE;
    }
    ++lg->appended;
    enqueue(lg, it);
    if (lg->idle)
        pthread_cond_signal(&lg->queued);
    if (w) {
        *w = (struct waiter){NULL, lg->appended, durable, ctx};
        *lg->waiting_tail = w;
        lg->waiting_tail = &w->next;
        if (lg->syncer_idle)
            pthread_cond_signal(&lg->sync_wanted);
    }
    while (lg->appended - lg->rows >= BACKLOG_ROWS && catch_up(lg))
        ; /* the ledger thread falls behind */
    pthread_mutex_unlock(&lg->lock);
    if (!w)
        durable(ctx, 0);
    return 0;
}

int sx_ledger_append_then(struct ledger *lg, const struct ledger_row *row,
                          sx_meter_settled_fn durable, void *ctx)
{
    struct item local, *it = &local;
    int rc;

    if (lg->journal && !(it = malloc(sizeof(*it))))
        return SX_ENOMEM;
    rc = fill_item(it, row);
    if (rc) {
        if (it != &local)
            free(it);
        return rc;
    }
    if (lg->journal)
        return append_journaled(lg, it, durable, ctx);

    /* No journal: this thread commits (or follows a leader's commit). */
    pthread_cond_init(&it->wake, NULL);
    pthread_mutex_lock(&lg->lock);
    enqueue(lg, it);
    while (!it->done) {
        if (!lg->leading)
            lead(lg, BATCH_MAX); /* our row is in this batch or a later one */
        else
            pthread_cond_wait(&it->wake, &lg->lock);
    }
    pthread_mutex_unlock(&lg->lock);
    pthread_cond_destroy(&it->wake);
    durable(ctx, it->rc ? SX_ESTORE : 0);
    return 0;
}

/* sx_ledger_append waits on one of these for its own row. */
struct wait_one {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
};

static void wake_one(void *ctx, int rc)
{
    struct wait_one *w = ctx;

    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->rc = rc;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int sx_ledger_append(struct ledger *lg, const struct ledger_row *row)
{
    struct wait_one w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};
    int rc = sx_ledger_append_then(lg, row, wake_one, &w);

    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.rc;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

int sx_ledger_flush(struct ledger *lg)
{
    int64_t target, failed;

    if (!lg->journal)
        return 0;
    pthread_mutex_lock(&lg->lock);
    target = lg->appended;
    failed = lg->failed;
    while (lg->rows < target && catch_up(lg))
        ;
    failed = lg->failed - failed;
    pthread_mutex_unlock(&lg->lock);
    return failed ? SX_ESTORE : 0;
}

void sx_ledger_limit_event(struct ledger *lg, const char *tenant_id,
                           enum sx_meter_limit_kind kind, int64_t day, int64_t limit,
                           int64_t used)
{
    struct item *it = calloc(1, sizeof(*it));

    if (!it) {
        SX_ERROR("metering", "out of memory recording a limit event of tenant %s", tenant_id);
        return;
    }
    it->is_limit = true;
    copy(it->tenant_id, sizeof(it->tenant_id), tenant_id);
    it->kind = kind;
    it->day = day;
    it->limit = limit;
    it->used = used;
    it->finished_ms = sx_time_now_ms();
    pthread_mutex_lock(&lg->lock);
    enqueue(lg, it);
    if (!lg->leading)
        pthread_cond_signal(&lg->queued); /* else the leader hands over */
    pthread_mutex_unlock(&lg->lock);
}

int sx_ledger_load_day(struct ledger *lg, int64_t day,
                       int (*preload)(void *ctx, const char *tenant_id, int64_t tokens,
                                      int64_t requests),
                       void *ctx)
{
    sx_db *db = sx_store_acquire(lg->store);
    sx_stmt *st;
    int rc = 0, step;

    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db,
                     "SELECT tenant_id, prompt_tokens + completion_tokens, requests"
                     " FROM usage_daily WHERE day = $1",
                     "i", day);
    if (!st) {
        sx_store_release(lg->store, db);
        return SX_ESTORE;
    }
    while ((step = sx_stmt_step(st)) == SX_STORE_ROW && rc == 0)
        rc = preload(ctx, sx_stmt_text(st, 0), sx_stmt_int(st, 1), sx_stmt_int(st, 2));
    if (step < 0 && rc == 0)
        rc = step;
    sx_stmt_done(st);
    sx_store_release(lg->store, db);
    return rc;
}

void sx_ledger_hold(struct ledger *lg, bool hold)
{
    pthread_mutex_lock(&lg->lock);
    lg->held = hold;
    pthread_cond_signal(&lg->queued);
    pthread_mutex_unlock(&lg->lock);
}

void sx_ledger_stats(struct ledger *lg, int64_t *batches, int64_t *rows)
{
    pthread_mutex_lock(&lg->lock);
    *batches = lg->batches;
    *rows = lg->rows;
    pthread_mutex_unlock(&lg->lock);
}
