/* In-memory postings for the rag module's BM25F ranking: per tenant, each
 * query term's chunks with the term's frequency in title, text and meta,
 * read once from the tenant's FTS5 index and then ranked in C with
 * MaxScore (Turtle & Flood) instead of through FTS5, whose doclist and
 * position decoding is most of a query's time. Scores use the same
 * arithmetic as the FTS5 ranking function (internal.h), so results are
 * the same bits.
 *
 * Freshness: a tenant's lists are kept under the key of the frequency
 * cache (FTS5 structure record and write generation, see index.c); any
 * write makes a new key and drops them. Lists are built on the second
 * query under one key, so a tenant being written to keeps the pruned FTS5
 * path. Memory: a budget across tenants, the least recently used tenant
 * going first; a tenant larger than the budget, or with chunk ids that
 * carry no column lengths, stays on FTS5. */
#include "rag/internal.h"

#include "base/err.h"
#include "base/log.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT_TENANTS 64
#define BOUND_SLACK 1e-9 /* bounds are compared with this relative margin */

struct post {
    int64_t rowid;
    int32_t tf[SX_RAG_COLS];
};

struct pt_list {
    char term[SX_RAG_TERM_MAX + 1];
    size_t n;
    struct post *p; /* by rowid, ascending */
};

struct pt_tenant {
    char tenant[64];
    char *structure;
    unsigned long gen;
    int refs;       /* searches using the lists now */
    bool dead;      /* detached from the cache; freed by the last search */
    bool fts_only;  /* over budget or legacy ids: FTS5 under this key */
    uint64_t used;
    double avg_len[SX_RAG_COLS];
    bool have_avg;
    size_t bytes, n_lists, cap_lists;
    struct pt_list **lists;
};

struct sx_rag_postings {
    pthread_mutex_t mu;
    size_t budget, bytes;
    uint64_t clock;
    struct pt_tenant *t[PT_TENANTS];
};

struct sx_rag_postings *sx_rag_postings_new(size_t budget)
{
    struct sx_rag_postings *c = calloc(1, sizeof(*c));

    if (c && pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    if (c)
        c->budget = budget;
    return c;
}

static void tenant_free(struct pt_tenant *e)
{
    size_t i;

    if (!e)
        return;
    for (i = 0; i < e->n_lists; i++) {
        free(e->lists[i]->p);
        free(e->lists[i]);
    }
    free(e->lists);
    free(e->structure);
    free(e);
}

/* Takes slot i's tenant out of the cache (lock held). */
static void detach(struct sx_rag_postings *c, size_t i)
{
    struct pt_tenant *e = c->t[i];

    c->t[i] = NULL;
    c->bytes -= e->bytes;
    if (e->refs == 0)
        tenant_free(e);
    else
        e->dead = true;
}

void sx_rag_postings_set_budget(struct sx_rag_postings *c, size_t budget)
{
    size_t i;

    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->budget = budget;
    for (i = 0; i < PT_TENANTS && budget == 0; i++)
        if (c->t[i])
            detach(c, i);
    pthread_mutex_unlock(&c->mu);
}

void sx_rag_postings_free(struct sx_rag_postings *c)
{
    size_t i;

    if (!c)
        return;
    for (i = 0; i < PT_TENANTS; i++)
        tenant_free(c->t[i]);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static struct pt_list *find_list(const struct pt_tenant *e, const char *term)
{
    size_t i;

    for (i = 0; i < e->n_lists; i++)
        if (strcmp(e->lists[i]->term, term) == 0)
            return e->lists[i];
    return NULL;
}

/* The chunks matching term (a quoted phrase, as FTS5 ranks it) with
 * their frequencies. *legacy set when a chunk id carries no lengths. */
static int build_list(sx_db *db, const char *name, const char *term, struct pt_list **out,
                      bool *legacy)
{
    char sql[256], expr[SX_RAG_TERM_MAX + 3];
    struct pt_list *l = calloc(1, sizeof(*l));
    size_t cap = 0;
    sx_stmt *st;
    int rc;

    *out = NULL;
    if (!l)
        return SX_ENOMEM;
    snprintf(l->term, sizeof(l->term), "%s", term);
    snprintf(sql, sizeof(sql), "SELECT rowid, sx_rag_tf(%s) FROM %s WHERE %s MATCH $1 "
             "ORDER BY rowid", name, name, name);
    snprintf(expr, sizeof(expr), "\"%s\"", term);
    if (!(st = sx_db_query(db, sql, "t", expr))) {
        free(l);
        return SX_ESTORE;
    }
    while ((rc = sx_stmt_step(st)) == SX_STORE_ROW) {
        int64_t id = sx_stmt_int(st, 0), tf = sx_stmt_int(st, 1);
        int c;

        if (!(id >> SX_RAG_ID_SERIAL_SHIFT))
            *legacy = true;
        if (l->n == cap) {
            void *p = realloc(l->p, (cap = cap ? cap * 2 : 64) * sizeof(*l->p));

            if (!p) {
                rc = SX_ENOMEM;
                break;
            }
            l->p = p;
        }
        l->p[l->n].rowid = id;
        for (c = 0; c < SX_RAG_COLS; c++)
            l->p[l->n].tf[c] = (int32_t)((tf >> (20 * c)) & 0xFFFFF);
        l->n++;
    }
    sx_stmt_done(st);
    if (rc != SX_STORE_DONE) {
        free(l->p);
        free(l);
        return rc == SX_ENOMEM ? rc : SX_ESTORE;
    }
    *out = l;
    return 0;
}

/* The columns' average lengths as the FTS5 ranking function computes
 * them, read through a term in the index. */
static int read_avg(sx_db *db, const char *name, const char *term, double avg[SX_RAG_COLS])
{
    char sql[256], expr[SX_RAG_TERM_MAX + 3];
    long long rows = 0, total[SX_RAG_COLS] = {0};
    const char *s;
    sx_stmt *st;
    int rc, c, ok = 0;

    snprintf(sql, sizeof(sql), "SELECT sx_rag_totals(%s) FROM %s WHERE %s MATCH $1 LIMIT 1",
             name, name, name);
    snprintf(expr, sizeof(expr), "\"%s\"", term);
    if (!(st = sx_db_query(db, sql, "t", expr)))
        return SX_ESTORE;
    rc = sx_stmt_step(st);
    if (rc == SX_STORE_ROW && (s = sx_stmt_text(st, 0)) != NULL)
        ok = sscanf(s, "%lld %lld %lld %lld", &rows, &total[0], &total[1], &total[2]) == 4;
    sx_stmt_done(st);
    if (rc < 0)
        return SX_ESTORE;
    if (!ok)
        return SX_ENOTFOUND;
    for (c = 0; c < SX_RAG_COLS; c++)
        avg[c] = rows > 0 ? (double)total[c] / (double)rows : 0;
    return 0;
}

/* ---- ranking ------------------------------------------------------------- */

struct hit {
    double score;
    int64_t rowid;
};

/* x ranks below y: a lower score, or the same score and a later chunk
 * (FTS5's sorter keeps equal scores in rowid order). */
static bool worse(const struct hit *x, const struct hit *y)
{
    return x->score < y->score || (x->score == y->score && x->rowid > y->rowid);
}

static void sift_down(struct hit *h, size_t n, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        struct hit t;

        if (c >= n)
            return;
        if (c + 1 < n && worse(&h[c + 1], &h[c]))
            c++;
        if (!worse(&h[c], &h[i]))
            return;
        t = h[i];
        h[i] = h[c];
        h[c] = t;
        i = c;
    }
}

static void heap_push(struct hit *h, size_t *n, size_t cap, struct hit x)
{
    size_t i;

    if (*n == cap) {
        if (!worse(&h[0], &x))
            return;
        h[0] = x;
        sift_down(h, *n, 0);
        return;
    }
    for (i = (*n)++; i > 0 && worse(&x, &h[(i - 1) / 2]); i = (i - 1) / 2)
        h[i] = h[(i - 1) / 2];
    h[i] = x;
}

static int by_rank(const void *a, const void *b)
{
    const struct hit *x = a, *y = b;

    return worse(y, x) ? -1 : worse(x, y);
}

/* First position in l at or after from with rowid >= id (galloping). */
static size_t seek(const struct pt_list *l, size_t from, int64_t id)
{
    size_t step = 1, lo = from, hi;

    if (lo >= l->n || l->p[lo].rowid >= id)
        return lo;
    while (lo + step < l->n && l->p[lo + step].rowid < id)
        lo += step, step *= 2;
    hi = lo + step < l->n ? lo + step : l->n;
    while (lo + 1 < hi) { /* p[lo] < id, p[hi] >= id or hi == n */
        size_t mid = lo + (hi - lo) / 2;

        if (l->p[mid].rowid < id)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* The best cap chunks scoring at least need (and above 0), exactly. */
static int rank(const struct sx_rag_pterm *t, const struct pt_list *const *l, size_t k,
                const double avg[SX_RAG_COLS], double need, struct sx_rag_cand *out,
                size_t cap, size_t *n)
{
    double rest[SX_RAG_QUERY_TERMS_MAX + 1];
    size_t pos[SX_RAG_QUERY_TERMS_MAX] = {0}, n_heap = 0, i, e;
    struct hit *heap = malloc(cap * sizeof(*heap));
    double bar = need;

    if (!heap)
        return SX_ENOMEM;
    rest[k] = 0;
    for (i = k; i-- > 0;)
        rest[i] = rest[i + 1] + t[i].weight * t[i].idf * (SX_RAG_K1 + 1);
    /* Terms e.. are non-essential: together they cannot reach the bar, so
     * only chunks holding one of terms 0..e-1 are visited. */
    for (e = k; e > 0 && rest[e - 1] * (1 + BOUND_SLACK) < bar; e--)
        ;
    for (;;) {
        int64_t d = INT64_MAX;
        double norm[SX_RAG_COLS], score = 0;
        int c;

        for (i = 0; i < e; i++)
            if (pos[i] < l[i]->n && l[i]->p[pos[i]].rowid < d)
                d = l[i]->p[pos[i]].rowid;
        if (d == INT64_MAX)
            break;
        for (c = 0; c < SX_RAG_COLS; c++)
            norm[c] = sx_rag_norm(sx_rag_id_len(d, c), avg[c]);
        for (i = 0; i < k; i++) {
            if ((score + rest[i]) * (1 + BOUND_SLACK) < bar)
                break;
            if (i >= e)
                pos[i] = seek(l[i], pos[i], d);
            if (pos[i] < l[i]->n && l[i]->p[pos[i]].rowid == d)
                score += sx_rag_term_score(l[i]->p[pos[i]].tf, norm, t[i].weight, t[i].idf);
        }
        if (i == k && score > 0 && score >= need) {
            heap_push(heap, &n_heap, cap, (struct hit){score, d});
            if (n_heap == cap && heap[0].score > bar) {
                bar = heap[0].score;
                while (e > 0 && rest[e - 1] * (1 + BOUND_SLACK) < bar)
                    e--;
            }
        }
        for (i = 0; i < e; i++)
            if (pos[i] < l[i]->n && l[i]->p[pos[i]].rowid == d)
                pos[i]++;
    }
    qsort(heap, n_heap, sizeof(*heap), by_rank);
    for (i = 0; i < n_heap; i++)
        out[i] = (struct sx_rag_cand){heap[i].rowid, heap[i].score};
    *n = n_heap;
    free(heap);
    return 0;
}

/* ---- the cache ----------------------------------------------------------- */

/* Frees least recently used tenants other than keep until the budget
 * holds (lock held). */
static void evict(struct sx_rag_postings *c, const struct pt_tenant *keep)
{
    while (c->bytes > c->budget) {
        size_t i, old = PT_TENANTS;

        for (i = 0; i < PT_TENANTS; i++)
            if (c->t[i] && c->t[i] != keep && c->t[i]->bytes > 0 &&
                (old == PT_TENANTS || c->t[i]->used < c->t[old]->used))
                old = i;
        if (old == PT_TENANTS)
            return;
        detach(c, old);
    }
}

/* The tenant's entry for this key, referenced, or NULL (lock held): a
 * first query under a key makes the entry and gets NULL. */
static struct pt_tenant *acquire(struct sx_rag_postings *c, const char *tenant_id,
                                 const char *structure, unsigned long gen)
{
    struct pt_tenant *e;
    size_t i, slot = PT_TENANTS;

    for (i = 0; i < PT_TENANTS; i++) {
        if (c->t[i] && strcmp(c->t[i]->tenant, tenant_id) == 0) {
            e = c->t[i];
            if (e->gen == gen && strcmp(e->structure, structure) == 0) {
                e->used = ++c->clock;
                if (e->fts_only)
                    return NULL;
                e->refs++;
                return e;
            }
            detach(c, i);
            slot = i;
            break;
        }
    }
    for (i = 0; i < PT_TENANTS && slot == PT_TENANTS; i++)
        if (!c->t[i])
            slot = i;
    if (slot == PT_TENANTS) { /* full: the least recently used goes */
        slot = 0;
        for (i = 1; i < PT_TENANTS; i++)
            if (c->t[i]->used < c->t[slot]->used)
                slot = i;
        detach(c, slot);
    }
    e = calloc(1, sizeof(*e));
    if (!e || !(e->structure = strdup(structure))) {
        free(e);
        return NULL;
    }
    snprintf(e->tenant, sizeof(e->tenant), "%s", tenant_id);
    e->gen = gen;
    e->used = ++c->clock;
    c->t[slot] = e;
    return NULL;
}

static void release(struct sx_rag_postings *c, struct pt_tenant *e)
{
    pthread_mutex_lock(&c->mu);
    if (--e->refs == 0 && e->dead)
        tenant_free(e);
    pthread_mutex_unlock(&c->mu);
}

int sx_rag_postings_search(struct sx_rag_postings *c, sx_db *db, const char *name,
                           const char *tenant_id, const char *structure, unsigned long gen,
                           const struct sx_rag_pterm *t, size_t k, double need,
                           struct sx_rag_cand *out, size_t cap, size_t *n)
{
    struct pt_list *built[SX_RAG_QUERY_TERMS_MAX] = {NULL};
    const struct pt_list *l[SX_RAG_QUERY_TERMS_MAX];
    double avg[SX_RAG_COLS];
    bool legacy = false, have_avg;
    struct pt_tenant *e;
    size_t i, j;
    int rc = 0;

    *n = 0;
    if (!c || !structure || k == 0 || k > SX_RAG_QUERY_TERMS_MAX || cap == 0)
        return 0;
    pthread_mutex_lock(&c->mu);
    e = c->budget > 0 ? acquire(c, tenant_id, structure, gen) : NULL;
    if (e) {
        for (i = 0; i < k; i++)
            l[i] = find_list(e, t[i].term);
        have_avg = e->have_avg;
        memcpy(avg, e->avg_len, sizeof(avg));
    }
    pthread_mutex_unlock(&c->mu);
    if (!e)
        return 0;

    /* 1. Lists this tenant has not needed yet, from FTS5. */
    for (i = 0; i < k && rc == 0; i++)
        if (!l[i])
            rc = build_list(db, name, t[i].term, &built[i], &legacy);
    if (rc == 0 && !have_avg)
        rc = read_avg(db, name, t[0].term, avg);

    /* 2. Into the cache, within the budget. */
    pthread_mutex_lock(&c->mu);
    if (rc == 0 && !have_avg && !e->dead) {
        memcpy(e->avg_len, avg, sizeof(avg));
        e->have_avg = true;
    }
    for (i = 0; i < k && rc == 0; i++) {
        struct pt_list *have;
        void *p;

        if (!built[i])
            continue;
        l[i] = built[i];
        if (e->dead || legacy || (have = find_list(e, t[i].term)) != NULL)
            continue; /* used for this query only */
        if (e->n_lists == e->cap_lists) {
            if (!(p = realloc(e->lists, (e->cap_lists * 2 + 16) * sizeof(*e->lists))))
                continue;
            e->lists = p;
            e->cap_lists = e->cap_lists * 2 + 16;
        }
        e->lists[e->n_lists++] = built[i];
        e->bytes += sizeof(*built[i]) + built[i]->n * sizeof(*built[i]->p);
        c->bytes += sizeof(*built[i]) + built[i]->n * sizeof(*built[i]->p);
        built[i] = NULL; /* the cache owns it now */
    }
    if (!e->dead && (legacy || e->bytes > c->budget)) {
        /* Keep the key, drop the lists: FTS5 until the index changes. */
        for (j = 0; j < PT_TENANTS && c->t[j] != e; j++)
            ;
        e->fts_only = true;
        if (legacy)
            SX_INFO("rag", "tenant %s has chunks without lengths in their ids; ranking "
                    "through FTS5", tenant_id);
        else
            SX_INFO("rag", "tenant %s's postings exceed the %zu-byte budget; ranking "
                    "through FTS5", tenant_id, c->budget);
        if (j < PT_TENANTS) {
            struct pt_tenant *stub = calloc(1, sizeof(*stub));

            detach(c, j); /* freed at release */
            if (stub && (stub->structure = strdup(structure))) {
                snprintf(stub->tenant, sizeof(stub->tenant), "%s", tenant_id);
                stub->gen = gen;
                stub->fts_only = true;
                stub->used = ++c->clock;
                c->t[j] = stub;
            } else {
                free(stub);
            }
        }
    } else {
        evict(c, e);
    }
    pthread_mutex_unlock(&c->mu);

    /* 3. Rank (the lists stay while e is referenced). */
    if (rc == 0 && !legacy)
        rc = rank(t, l, k, avg, need, out, cap, n);
    for (i = 0; i < k; i++)
        if (built[i]) {
            free(built[i]->p);
            free(built[i]);
        }
    release(c, e);
    if (rc != 0) {
        *n = 0;
        return rc == SX_ENOTFOUND ? 0 : rc;
    }
    return legacy ? 0 : 1;
}
