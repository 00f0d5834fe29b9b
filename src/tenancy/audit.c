/* The audit log: one row per admin action (who, when, what, on which
 * object, which fields), written in the same transaction as the change it
 * records so that neither exists without the other. Rows hold field names,
 * never values, so no secret or tenant text reaches the log. */
#include "tenancy/internal.h"

#include "base/err.h"
#include "base/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sx_audit_record(sx_db *db, const struct sx_actor *who, const char *action,
                    const char *target_type, const char *target_id, const char *tenant_id,
                    const json_t *fields)
{
    char id[40], *names;
    int64_t n;
    int rc;

    rc = sx_tenancy_new_id("audit_", id, sizeof(id));
    if (rc)
        return rc;
    names = fields ? json_dumps(fields, JSON_COMPACT) : strdup("[]");
    if (!names)
        return SX_ENOMEM;
    n = sx_db_run(db, "INSERT INTO audit_log (id, created_at, actor_key_id, actor_kind,"
                      " action, target_type, target_id, tenant_id, fields, request_id,"
                      " client_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                  "tittttttttt", id, sx_time_now_ms(),
                  who ? who->key_id : NULL, who && who->kind ? who->kind : "system", action,
                  target_type, target_id, tenant_id, names, who ? who->request_id : NULL,
                  who ? who->client_ip : NULL);
    free(names);
    return n < 0 ? (int)n : 0;
}

static json_t *text_or_null(sx_stmt *st, int col)
{
    return sx_stmt_is_null(st, col) ? json_null() : json_string(sx_stmt_text(st, col));
}

static json_t *event_json(sx_stmt *st)
{
    char when[SX_TIME_ISO_LEN + 1];
    json_t *fields = json_loads(sx_stmt_text(st, 8), 0, NULL);

    sx_time_iso8601_ms(sx_stmt_int(st, 1), when);
    return json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "id", sx_stmt_text(st, 0),
                     "object", "audit_event",
                     "created_at", when,
                     "actor_key_id", text_or_null(st, 2),
                     "actor_kind", sx_stmt_text(st, 3),
                     "action", sx_stmt_text(st, 4),
                     "target_type", text_or_null(st, 5),
                     "target_id", text_or_null(st, 6),
                     "tenant_id", text_or_null(st, 7),
                     "fields", json_is_array(fields) ? fields : json_array(),
                     "request_id", text_or_null(st, 9),
                     "client_ip", text_or_null(st, 10));
}

int sx_audit_list(sx_tenancy *tn, const struct sx_audit_filter *flt, json_t **page,
                  bool *has_more, char next_cursor[96])
{
    char after_id[48] = "", last_id[48] = "";
    int64_t after_ms = -1, last_ms = 0;
    sx_stmt *st;
    sx_db *db;
    int rc, count = 0;

    *page = NULL;
    *has_more = false;
    /* Read the cursor before clearing next_cursor: callers may pass the
     * previous page's buffer as both. */
    if (flt->after && *flt->after) {
        char *end;

        after_ms = strtoll(flt->after, &end, 10);
        if (flt->after[0] < '0' || flt->after[0] > '9' || *end != '.' || !end[1] ||
            strlen(end + 1) >= sizeof(after_id))
            return SX_EINVAL;
        snprintf(after_id, sizeof(after_id), "%s", end + 1);
    }
    next_cursor[0] = 0;
    db = sx_store_acquire(tn->store);
    if (!db)
        return SX_ESTORE;
    st = sx_db_query(db, "SELECT id, created_at, actor_key_id, actor_kind, action,"
                         " target_type, target_id, tenant_id, fields, request_id, client_ip"
                         " FROM audit_log"
                         " WHERE ($1 = '' OR action = $1) AND ($2 = '' OR tenant_id = $2)"
                         " AND ($3 = 0 OR created_at >= $3) AND ($4 = 0 OR created_at < $4)"
                         " AND ($5 < 0 OR created_at < $5 OR (created_at = $5 AND id < $6))"
                         " ORDER BY created_at DESC, id DESC LIMIT $7",
                     "ttiiiti", flt->action ? flt->action : "",
                     flt->tenant_id ? flt->tenant_id : "", flt->since, flt->until, after_ms,
                     after_id, (int64_t)flt->limit + 1);
    *page = json_array();
    if (!st || !*page) {
        rc = SX_ESTORE;
        goto out;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        if (count == flt->limit) {
            *has_more = true;
            continue;
        }
        json_array_append_new(*page, event_json(st));
        last_ms = sx_stmt_int(st, 1);
        snprintf(last_id, sizeof(last_id), "%s", sx_stmt_text(st, 0));
        count++;
    }
    if (rc == SX_STORE_DONE && *has_more)
        snprintf(next_cursor, 96, "%lld.%s", (long long)last_ms, last_id);
    rc = rc == SX_STORE_DONE ? 0 : rc;

out:
    sx_stmt_done(st);
    sx_store_release(tn->store, db);
    if (rc) {
        json_decref(*page);
        *page = NULL;
    }
    return rc;
}
