/* Usage reports read from the daily rollups (usage_daily): one tenant's
 * totals over a span of UTC days, its day-by-day series with the empty
 * days filled in, every tenant's totals for the admin ranking, and the
 * parsing of the period names the usage API accepts. */
#include "metering/internal.h"

#include "base/err.h"
#include "base/time.h"

#include <stdlib.h>
#include <string.h>

#define SUM_COLUMNS                                                                    \
    "SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(rerank_calls),"   \
    " SUM(quantum_rerank_calls), SUM(training_jobs)"

int sx_usage_period_parse(const char *period, int64_t today, struct sx_usage_span *out)
{
    int y, mo, d;

    if (!period)
        return SX_EINVAL;
    sx_time_civil_from_days(today, &y, &mo, &d);
    if (strcmp(period, "today") == 0) {
        out->from_day = out->to_day = today;
        return 0;
    }
    if (strcmp(period, "current_month") == 0) {
        /* nothing to change: y, mo are this month */
    } else if (strcmp(period, "previous_month") == 0) {
        if (--mo == 0) {
            mo = 12;
            y--;
        }
    } else {
        /* Exactly "YYYY-MM". */
        if (strlen(period) != 7 || period[4] != '-')
            return SX_EINVAL;
        for (int i = 0; i < 7; i++)
            if (i != 4 && (period[i] < '0' || period[i] > '9'))
                return SX_EINVAL;
        y = atoi(period);
        mo = atoi(period + 5);
        if (y < 1970 || mo < 1 || mo > 12)
            return SX_EINVAL;
    }
    out->from_day = sx_time_days_from_civil(y, mo, 1);
    out->to_day = (mo == 12 ? sx_time_days_from_civil(y + 1, 1, 1)
                            : sx_time_days_from_civil(y, mo + 1, 1)) - 1;
    return 0;
}

static void read_totals(sx_stmt *st, int col, struct sx_usage_totals *t)
{
    t->requests = sx_stmt_int(st, col);
    t->prompt_tokens = sx_stmt_int(st, col + 1);
    t->completion_tokens = sx_stmt_int(st, col + 2);
    t->rerank_calls = sx_stmt_int(st, col + 3);
    t->quantum_rerank_calls = sx_stmt_int(st, col + 4);
    t->training_jobs = sx_stmt_int(st, col + 5);
    t->tokens = t->prompt_tokens + t->completion_tokens;
}

int sx_meter_usage(sx_meter *m, const char *tenant_id, const struct sx_usage_span *span,
                   struct sx_usage_totals *out)
{
    sx_db *db;
    sx_stmt *st;
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = sx_ledger_flush(m->ledger)) != 0)
        return rc;
    db = sx_store_acquire(m->store);
    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db,
                     "SELECT " SUM_COLUMNS " FROM usage_daily"
                     " WHERE tenant_id = $1 AND day >= $2 AND day <= $3",
                     "tii", tenant_id, span->from_day, span->to_day);
    rc = st ? sx_stmt_step(st) : SX_ESTORE;
    if (rc == SX_STORE_ROW) {
        read_totals(st, 0, out); /* SUM over no rows is NULL, read as 0 */
        rc = 0;
    }
    if (st)
        sx_stmt_done(st);
    sx_store_release(m->store, db);
    return rc < 0 ? rc : 0;
}

int sx_meter_usage_daily(sx_meter *m, const char *tenant_id, const struct sx_usage_span *span,
                         struct sx_usage_totals *days, int64_t n_days)
{
    sx_db *db;
    sx_stmt *st;
    int rc;

    if (span->to_day < span->from_day || n_days != span->to_day - span->from_day + 1)
        return SX_EINVAL;
    memset(days, 0, sizeof(*days) * (size_t)n_days);
    if ((rc = sx_ledger_flush(m->ledger)) != 0)
        return rc;
    db = sx_store_acquire(m->store);
    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db,
                     "SELECT day, requests, prompt_tokens, completion_tokens, rerank_calls,"
                     " quantum_rerank_calls, training_jobs FROM usage_daily"
                     " WHERE tenant_id = $1 AND day >= $2 AND day <= $3",
                     "tii", tenant_id, span->from_day, span->to_day);
    if (!st) {
        sx_store_release(m->store, db);
        return SX_ESTORE;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        int64_t i = sx_stmt_int(st, 0) - span->from_day;

        if (i >= 0 && i < n_days)
            read_totals(st, 1, &days[i]);
    }
    sx_stmt_done(st);
    sx_store_release(m->store, db);
    return rc < 0 ? rc : 0;
}

void sx_meter_usage_list_free(char **ids, struct sx_usage_totals *totals, size_t n)
{
    for (size_t i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
    free(totals);
}

int sx_meter_usage_by_tenant(sx_meter *m, const struct sx_usage_span *span, char ***ids,
                             struct sx_usage_totals **totals, size_t *n)
{
    sx_db *db;
    sx_stmt *st;
    size_t cap = 0;
    int rc;

    *ids = NULL;
    *totals = NULL;
    *n = 0;
    if ((rc = sx_ledger_flush(m->ledger)) != 0)
        return rc;
    db = sx_store_acquire(m->store);
    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db,
                     "SELECT tenant_id, " SUM_COLUMNS " FROM usage_daily"
                     " WHERE day >= $1 AND day <= $2 GROUP BY tenant_id ORDER BY tenant_id",
                     "ii", span->from_day, span->to_day);
    if (!st) {
        sx_store_release(m->store, db);
        return SX_ESTORE;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **ni = realloc(*ids, ncap * sizeof(**ids));
            struct sx_usage_totals *nt;

            if (ni)
                *ids = ni;
            nt = ni ? realloc(*totals, ncap * sizeof(**totals)) : NULL;
            if (!nt) {
                rc = SX_ENOMEM;
                break;
            }
            *totals = nt;
            cap = ncap;
        }
        (*ids)[*n] = strdup(sx_stmt_text(st, 0));
        if (!(*ids)[*n]) {
            rc = SX_ENOMEM;
            break;
        }
        read_totals(st, 1, &(*totals)[*n]);
        (*n)++;
    }
    sx_stmt_done(st);
    sx_store_release(m->store, db);
    if (rc < 0) {
        sx_meter_usage_list_free(*ids, *totals, *n);
        *ids = NULL;
        *totals = NULL;
        *n = 0;
        return rc;
    }
    return 0;
}
