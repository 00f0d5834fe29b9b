/* Unit tests of the tenancy module's tenants, settings, tiers, CIDR
 * matching, audit log and purge hooks, on a real SQLite store in a
 * temporary directory. Keys and authentication: test_tenancy_auth.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "tenancy/tenancy.h"

#define ADMIN_KEY "sk-admin-unit-test-0123456789abcdef"

struct fx {
    char dir[64];
    sx_store *s;
    sx_tenancy *tn;
};

static const struct sx_actor admin = {"key_test", "admin", "req_test", "127.0.0.1"};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct sx_tenancy_options o = {0};
    char err[256], newkey[SX_API_KEY_MAX];

    sx_log_min_level = SX_LOG_WARN;
    snprintf(f->dir, sizeof(f->dir), "/tmp/sx_test_tenancy_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->s = sx_store_open(NULL, f->dir, 4, err, sizeof(err));
    assert_non_null(f->s);
    o.data_dir = f->dir;
    o.admin_key = ADMIN_KEY;
    f->tn = sx_tenancy_open(f->s, &o, newkey, err, sizeof(err));
    assert_non_null(f->tn);
    assert_string_equal(newkey, "");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];

    sx_tenancy_close(f->tn);
    sx_store_close(f->s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Creates a tenant from a JSON text; returns the snapshot (caller unrefs). */
static struct sx_tenant *create(struct fx *f, const char *json, int expect_rc)
{
    char key[SX_API_KEY_MAX], kid[SX_KEY_ID_MAX];
    struct sx_fault fault = {0};
    struct sx_tenant *t = NULL;
    json_t *body = json_loads(json, 0, NULL);
    int rc;

    assert_non_null(body);
    rc = sx_tenant_create(f->tn, body, 0, &admin, &t, key, kid, &fault);
    json_decref(body);
    assert_int_equal(rc, expect_rc);
    if (rc == 0) {
        assert_non_null(t);
        assert_true(strncmp(key, "sk-", 3) == 0);
        assert_true(strncmp(kid, "key_", 4) == 0);
    }
    return t;
}

static int64_t count(struct fx *f, const char *sql, const char *arg)
{
    sx_db *db = sx_store_acquire(f->s);
    sx_stmt *st = sx_db_query(db, sql, "t", arg);
    int64_t n = -1;

    if (st && sx_stmt_step(st) == SX_STORE_ROW)
        n = sx_stmt_int(st, 0);
    sx_stmt_done(st);
    sx_store_release(f->s, db);
    return n;
}

static void test_slug_rules(void **state)
{
    static const char *const good[] = {"abc", "farmacia_santa_casa", "a-b_c-1",
                                       "0pharma", ("x23456789012345678901234567890123456789"
                                                   "0123456789012345678901234")};
    static const char *const bad[] = {"", "ab", "Abc", "ab c", "ab!", "-abc", "_abc",
                                      "tenant_x1", "trial_abc", "admin", "platform",
                                      "caf\xc3\xa9", ("x234567890123456789012345678901234567890"
                                                      "12345678901234567890123456")};
    struct sx_fault fault;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        assert_int_equal(sx_tenant_slug_check(good[i], &fault), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        memset(&fault, 0, sizeof(fault));
        assert_int_equal(sx_tenant_slug_check(bad[i], &fault), SX_EINVAL);
        assert_string_equal(fault.param, "slug");
        assert_true(strlen(fault.message) > 10);
    }
}

/* Each row: a settings object and the field a refusal must name ("" = ok). */
static void test_settings_table(void **state)
{
    static const struct {
        const char *json, *param;
    } rows[] = {
        {"{\"default_model\": \"synapsex-chat-32k\"}", ""},
        {"{\"default_model\": \"\"}", "default_model"},
        {"{\"default_model\": 5}", "default_model"},
        {"{\"max_tokens_per_request\": 4096}", ""},
        {"{\"max_tokens_per_request\": 0}", "max_tokens_per_request"},
        {"{\"max_tokens_per_request\": 1000001}", "max_tokens_per_request"},
        {"{\"max_tokens_per_request\": 20.5}", "max_tokens_per_request"},
        {"{\"max_tokens_per_request\": \"10\"}", "max_tokens_per_request"},
        {"{\"default_temperature\": 0.7}", ""},
        {"{\"default_temperature\": 2}", ""},
        {"{\"default_temperature\": 2.01}", "default_temperature"},
        {"{\"default_temperature\": -0.1}", "default_temperature"},
        {"{\"enable_rerank\": true}", ""},
        {"{\"enable_rerank\": 1}", "enable_rerank"},
        {"{\"rerank_tier\": \"quantum_cpu\"}", ""},
        {"{\"rerank_tier\": \"quantum\"}", "rerank_tier"},
        {"{\"rerank_k\": 16}", ""},
        {"{\"rerank_k\": 17}", "rerank_k"},
        {"{\"custom_system_prompt\": \"You help.\\nBe brief.\"}", ""},
        {"{\"custom_system_prompt\": [\"x\"]}", "custom_system_prompt"},
        {"{\"allowed_topics\": [\"healthcare\", \"orders\"]}", ""},
        {"{\"allowed_topics\": \"healthcare\"}", "allowed_topics"},
        {"{\"blocked_topics\": [\"\"]}", "blocked_topics"},
        {"{\"blocked_topics\": [3]}", "blocked_topics"},
        {"{\"enable_rag\": false}", ""},
        {"{\"rag_top_k\": 50}", ""},
        {"{\"rag_top_k\": 51}", "rag_top_k"},
        {"{\"rag_threshold\": 0.7}", ""},
        {"{\"rag_threshold\": 1.5}", "rag_threshold"},
        {"{\"rate_limit_rpm\": 150}", ""},
        {"{\"rate_limit_rpm\": 0}", "rate_limit_rpm"},
        {"{\"rate_limit_rpm\": null}", ""},
        {"{\"daily_token_limit\": 0}", ""},
        {"{\"daily_token_limit\": -1}", "daily_token_limit"},
        {"{\"enable_training\": true}", ""},
        {"{\"ip_allowlist\": [\"203.0.113.0/24\", \"2001:db8::/32\", \"10.1.2.3\"]}", ""},
        {"{\"ip_allowlist\": [\"10.0.0.1/8\"]}", "ip_allowlist"},
        {"{\"ip_allowlist\": [\"300.1.1.1\"]}", "ip_allowlist"},
        {"{\"ip_allowlist\": [\"10.0.0.0/33\"]}", "ip_allowlist"},
        {"{\"ip_allowlist\": \"10.0.0.0/8\"}", "ip_allowlist"},
        {"{\"temperature\": 0.5}", "temperature"},
    };
    struct sx_fault fault;

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(*rows); i++) {
        json_t *o = json_loads(rows[i].json, 0, NULL);
        int rc;

        assert_non_null(o);
        memset(&fault, 0, sizeof(fault));
        rc = sx_settings_check(o, &fault);
        if (rows[i].param[0] == 0) {
            if (rc != 0)
                fail_msg("%s refused: %s", rows[i].json, fault.message);
        } else {
            if (rc != SX_EINVAL)
                fail_msg("%s accepted", rows[i].json);
            assert_string_equal(fault.param, rows[i].param);
        }
        json_decref(o);
    }

    /* A 64-item list passes; 65 do not. A prompt of 8 KiB passes; one more
     * byte does not. */
    {
        json_t *list = json_array(), *o;
        char *prompt = malloc(SX_SETTINGS_PROMPT_MAX + 2);

        for (int i = 0; i < 64; i++)
            json_array_append_new(list, json_string("t"));
        o = json_pack("{s:O}", "allowed_topics", list);
        assert_int_equal(sx_settings_check(o, &fault), 0);
        json_decref(o);
        json_array_append_new(list, json_string("t"));
        o = json_pack("{s:O}", "allowed_topics", list);
        assert_int_equal(sx_settings_check(o, &fault), SX_EINVAL);
        json_decref(o);
        json_decref(list);
        memset(prompt, 'p', SX_SETTINGS_PROMPT_MAX);
        prompt[SX_SETTINGS_PROMPT_MAX] = 0;
        o = json_pack("{s:s}", "custom_system_prompt", prompt);
        assert_int_equal(sx_settings_check(o, &fault), 0);
        json_decref(o);
        prompt[SX_SETTINGS_PROMPT_MAX] = 'p';
        prompt[SX_SETTINGS_PROMPT_MAX + 1] = 0;
        o = json_pack("{s:s}", "custom_system_prompt", prompt);
        assert_int_equal(sx_settings_check(o, &fault), SX_EINVAL);
        json_decref(o);
        free(prompt);
    }
}

static void test_cidr(void **state)
{
    struct sx_cidr c;
    char why[200];

    (void)state;
    assert_int_equal(sx_cidr_parse("10.0.0.0/8", &c, why, sizeof(why)), 0);
    assert_true(sx_cidr_match(&c, "10.200.3.4"));
    assert_true(sx_cidr_match(&c, "::ffff:10.1.2.3")); /* IPv4-mapped client */
    assert_false(sx_cidr_match(&c, "11.0.0.1"));
    assert_false(sx_cidr_match(&c, "::1"));
    assert_false(sx_cidr_match(&c, "garbage"));
    assert_false(sx_cidr_match(&c, NULL));
    assert_int_equal(sx_cidr_parse("192.168.1.128/25", &c, why, sizeof(why)), 0);
    assert_true(sx_cidr_match(&c, "192.168.1.200"));
    assert_false(sx_cidr_match(&c, "192.168.1.127"));
    assert_int_equal(sx_cidr_parse("2001:db8::/32", &c, why, sizeof(why)), 0);
    assert_true(sx_cidr_match(&c, "2001:db8:ffff::1"));
    assert_false(sx_cidr_match(&c, "2001:db9::1"));
    assert_false(sx_cidr_match(&c, "10.0.0.1"));
    assert_int_equal(sx_cidr_parse("::1", &c, why, sizeof(why)), 0);
    assert_int_equal(c.bits, 128);
    assert_true(sx_cidr_match(&c, "::1"));
    assert_int_equal(sx_cidr_parse("0.0.0.0/0", &c, why, sizeof(why)), 0);
    assert_true(sx_cidr_match(&c, "8.8.8.8"));
    assert_int_equal(sx_cidr_parse("10.0.0.1/8", &c, why, sizeof(why)), SX_EINVAL);
    assert_non_null(strstr(why, "host bits"));
    assert_int_equal(sx_cidr_parse("10.0.0.0/", &c, why, sizeof(why)), SX_EINVAL);
    assert_int_equal(sx_cidr_parse("10.0.0.0/x", &c, why, sizeof(why)), SX_EINVAL);
    assert_int_equal(sx_cidr_parse("2001:db8::/129", &c, why, sizeof(why)), SX_EINVAL);
    assert_int_equal(sx_cidr_parse("fe80::1%eth0", &c, why, sizeof(why)), SX_EINVAL);
    assert_int_equal(sx_cidr_parse("/8", &c, why, sizeof(why)), SX_EINVAL);
}

static void test_create_get_and_duplicate(void **state)
{
    struct fx *f = *state;
    struct sx_tenant *t, *by_slug, *by_id;

    t = create(f, "{\"name\": \"Farm\\u00e1cia Santa Casa\", \"slug\": \"farmacia_santa_casa\","
                  " \"tier\": \"pro\", \"contact_email\": \"admin@farmacia.com\","
                  " \"settings\": {\"max_tokens_per_request\": 2048,"
                  " \"rerank_tier\": \"quantum_cpu\"}}", 0);
    assert_true(strncmp(t->id, "tenant_", 7) == 0);
    assert_int_equal(t->tier, SX_TIER_PRO);
    assert_int_equal(t->settings.max_tokens_per_request, 2048);
    assert_int_equal(t->settings.rerank_k, 4); /* default filled in */
    assert_int_equal(sx_tenant_get(f->tn, "farmacia_santa_casa", &by_slug), 0);
    assert_int_equal(sx_tenant_get(f->tn, t->id, &by_id), 0);
    assert_string_equal(by_slug->id, t->id);
    assert_string_equal(by_id->slug, "farmacia_santa_casa");
    assert_string_equal(by_id->name, "Farm\xc3\xa1" "cia Santa Casa");
    sx_tenant_unref(by_slug);
    sx_tenant_unref(by_id);

    /* Same slug again: refused, nothing written. */
    assert_null(create(f, "{\"name\": \"Other\", \"slug\": \"farmacia_santa_casa\"}",
                       SX_EEXIST));
    assert_int_equal(count(f, "SELECT COUNT(*) FROM tenants WHERE slug = $1",
                           "farmacia_santa_casa"), 1);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1", t->id),
                     1);
    assert_int_equal(sx_tenant_get(f->tn, "nobody", &by_id), SX_ENOTFOUND);
    sx_tenant_unref(t);
}

static void test_create_refusals(void **state)
{
    static const struct {
        const char *json, *param;
    } rows[] = {
        {"{\"slug\": \"abc\"}", "name"},
        {"{\"name\": \"A\"}", "slug"},
        {"{\"name\": \"A\", \"slug\": 5}", "slug"},
        {"{\"name\": \"\", \"slug\": \"abc\"}", "name"},
        {"{\"name\": \"A\", \"slug\": \"abc\", \"tier\": \"gold\"}", "tier"},
        {"{\"name\": \"A\", \"slug\": \"abc\", \"contact_email\": \"nope\"}", "contact_email"},
        {"{\"name\": \"A\", \"slug\": \"abc\", \"contact_email\": \"a@b\"}", "contact_email"},
        {"{\"name\": \"A\", \"slug\": \"abc\", \"settings\": {\"rag_top_k\": 0}}",
         "settings.rag_top_k"},
        {"{\"name\": \"A\", \"slug\": \"abc\", \"settings\": []}", "settings"},
        {"{\"name\": \"A\", \"slug\": \"abc\", \"owner\": \"x\"}", "owner"},
    };
    struct fx *f = *state;

    for (size_t i = 0; i < sizeof(rows) / sizeof(*rows); i++) {
        char key[SX_API_KEY_MAX], kid[SX_KEY_ID_MAX];
        struct sx_fault fault = {0};
        struct sx_tenant *t = NULL;
        json_t *body = json_loads(rows[i].json, 0, NULL);

        assert_int_equal(sx_tenant_create(f->tn, body, 0, &admin, &t, key, kid, &fault),
                         SX_EINVAL);
        if (strcmp(fault.param, rows[i].param) != 0)
            fail_msg("%s: param %s, expected %s", rows[i].json, fault.param, rows[i].param);
        json_decref(body);
    }
    assert_int_equal(count(f, "SELECT COUNT(*) FROM tenants WHERE slug <> $1", ""), 0);
}

static void test_update_merges_and_cache_sees_it(void **state)
{
    struct fx *f = *state;
    struct sx_tenant *t = create(f, "{\"name\": \"A\", \"slug\": \"acme\", \"tier\": \"pro\","
                                    " \"settings\": {\"rag_top_k\": 9, \"rerank_k\": 3}}", 0);
    struct sx_tenant *u = NULL, *again;
    struct sx_fault fault = {0};
    json_t *patch;

    /* Warm the cache, then change through the API path. */
    assert_int_equal(sx_tenant_get(f->tn, "acme", &again), 0);
    sx_tenant_unref(again);
    patch = json_loads("{\"tier\": \"business\", \"status\": \"suspended\","
                       " \"settings\": {\"rerank_tier\": \"quantum_gpu\", \"rerank_k\": null}}",
                       0, NULL);
    assert_int_equal(sx_tenant_update(f->tn, "acme", patch, &admin, &u, &fault), 0);
    json_decref(patch);
    assert_int_equal(u->tier, SX_TIER_BUSINESS);
    assert_int_equal(u->status, SX_TENANT_SUSPENDED);
    assert_int_equal(u->settings.rag_top_k, 9);    /* kept */
    assert_int_equal(u->settings.rerank_k, 4);     /* reset to default by null */
    assert_int_equal(u->settings.rerank_tier, SX_RERANK_QUANTUM_GPU);
    sx_tenant_unref(u);
    assert_int_equal(sx_tenant_get(f->tn, t->id, &again), 0);
    assert_int_equal(again->tier, SX_TIER_BUSINESS);
    sx_tenant_unref(again);

    /* Refusals change nothing. */
    patch = json_loads("{\"slug\": \"other\"}", 0, NULL);
    assert_int_equal(sx_tenant_update(f->tn, "acme", patch, &admin, &u, &fault), SX_EINVAL);
    assert_string_equal(fault.param, "slug");
    json_decref(patch);
    patch = json_loads("{\"tier\": \"free\", \"status\": \"gone\"}", 0, NULL);
    assert_int_equal(sx_tenant_update(f->tn, "acme", patch, &admin, &u, &fault), SX_EINVAL);
    assert_string_equal(fault.param, "status");
    json_decref(patch);
    assert_int_equal(sx_tenant_get(f->tn, "acme", &again), 0);
    assert_int_equal(again->tier, SX_TIER_BUSINESS);
    sx_tenant_unref(again);

    patch = json_loads("{\"rate_limit_rpm\": 150}", 0, NULL);
    assert_int_equal(sx_tenant_settings_update(f->tn, "acme", patch, &admin, &u, &fault), 0);
    assert_int_equal(u->settings.rate_limit_rpm, 150);
    sx_tenant_unref(u);
    assert_int_equal(sx_tenant_settings_update(f->tn, "ghost", patch, &admin, &u, &fault),
                     SX_ENOTFOUND);
    json_decref(patch);
    sx_tenant_unref(t);
}

static void test_effective_limits(void **state)
{
    struct fx *f = *state;
    struct sx_tenant_limits l;
    struct sx_tenant *free_t = create(f, "{\"name\": \"F\", \"slug\": \"free1\"}", 0);
    struct sx_tenant *biz = create(f, "{\"name\": \"B\", \"slug\": \"biz1\", \"tier\": "
                                      "\"business\", \"settings\": {\"rerank_tier\": "
                                      "\"quantum_gpu\", \"rate_limit_rpm\": 900}}", 0);
    struct sx_tenant *ent = create(f, "{\"name\": \"E\", \"slug\": \"ent1\", \"tier\": "
                                      "\"enterprise\", \"settings\": {\"daily_token_limit\": "
                                      "500000, \"enable_training\": false}}", 0);

    sx_tenant_limits(f->tn, free_t, &l);
    assert_int_equal(l.requests_per_minute, 20);
    assert_int_equal(l.tokens_per_day, 10000);
    assert_int_equal(l.max_rerank_tier, SX_RERANK_CLASSIC);
    assert_false(l.training);
    sx_tenant_limits(f->tn, biz, &l);
    assert_int_equal(l.requests_per_minute, 900);         /* admin raised it */
    assert_int_equal(l.tokens_per_day, 1000000);
    assert_int_equal(l.max_rerank_tier, SX_RERANK_QUANTUM_GPU); /* admin granted it */
    assert_true(l.training);
    sx_tenant_limits(f->tn, ent, &l);
    assert_int_equal(l.tokens_per_day, 500000);
    assert_false(l.training);
    assert_int_equal(l.requests_per_day, -1);
    sx_tenant_unref(free_t);
    sx_tenant_unref(biz);
    sx_tenant_unref(ent);
}

static void test_list_pages_and_filter(void **state)
{
    struct fx *f = *state;
    char next[96], json[128];
    int found[5] = {0};
    struct sx_fault fault;
    enum sx_tier pro = SX_TIER_PRO;
    json_t *page;
    bool more;
    int seen = 0, pages = 0;
    const char *after = NULL;
    char cursor[96];

    for (int i = 0; i < 5; i++) {
        snprintf(json, sizeof(json), "{\"name\": \"T%d\", \"slug\": \"t%d-x\", \"tier\": "
                 "\"%s\"}", i, i, i % 2 ? "pro" : "free");
        sx_tenant_unref(create(f, json, 0));
    }
    do {
        assert_int_equal(sx_tenant_list(f->tn, NULL, 2, after, &page, &more, next, &fault),
                         0);
        /* Creation order; tenants created in the same millisecond may
         * come in either order, so check that each appears exactly once. */
        for (size_t i = 0; i < json_array_size(page); i++) {
            const char *s = json_string_value(json_object_get(json_array_get(page, i),
                                                              "slug"));

            assert_int_equal(strlen(s), 4);
            assert_int_equal(found[s[1] - '0']++, 0);
            seen++;
        }
        json_decref(page);
        pages++;
        snprintf(cursor, sizeof(cursor), "%s", next);
        after = cursor;
    } while (more);
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);

    assert_int_equal(sx_tenant_list(f->tn, &pro, 100, NULL, &page, &more, next, &fault), 0);
    assert_int_equal(json_array_size(page), 2);
    assert_false(more);
    json_decref(page);
    assert_int_equal(sx_tenant_list(f->tn, NULL, 10, "bogus", &page, &more, next, &fault),
                     SX_EINVAL);
}

static int purged;

static int purge_hook(sx_db *db, const char *tenant_id, void *ctx)
{
    (void)ctx;
    purged++;
    return sx_db_run(db, "DELETE FROM extra WHERE tenant_id = $1", "t", tenant_id) < 0
               ? SX_ESTORE
               : 0;
}

static void test_delete_purges(void **state)
{
    struct fx *f = *state;
    struct sx_tenant *t = create(f, "{\"name\": \"D\", \"slug\": \"doomed\"}", 0), *g;
    char id[SX_TENANT_ID_MAX];
    sx_db *db;

    db = sx_store_acquire(f->s);
    assert_int_equal(sx_db_exec(db, "CREATE TABLE extra (tenant_id TEXT)"), 0);
    assert_int_equal(sx_db_run(db, "INSERT INTO extra VALUES ($1)", "t", t->id), 1);
    sx_store_release(f->s, db);
    assert_int_equal(sx_tenancy_on_purge(f->tn, "extra", purge_hook, NULL), 0);

    purged = 0;
    assert_int_equal(sx_tenant_delete(f->tn, "doomed", &admin, id), 0);
    assert_string_equal(id, t->id);
    assert_int_equal(purged, 1);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM extra WHERE tenant_id = $1", t->id), 0);
    assert_int_equal(count(f, "SELECT COUNT(*) FROM api_keys WHERE tenant_id = $1", t->id),
                     0);
    assert_int_equal(sx_tenant_get(f->tn, t->id, &g), SX_ENOTFOUND);
    assert_int_equal(sx_tenant_delete(f->tn, "doomed", &admin, id), SX_ENOTFOUND);
    /* The slug is free again. */
    sx_tenant_unref(create(f, "{\"name\": \"D2\", \"slug\": \"doomed\"}", 0));
    sx_tenant_unref(t);
}

static void test_audit_records_names_not_values(void **state)
{
    struct fx *f = *state;
    struct sx_audit_filter flt = {0};
    struct sx_tenant *t = create(f, "{\"name\": \"Secretive\", \"slug\": \"audited\","
                                    " \"settings\": {\"custom_system_prompt\": "
                                    "\"TOPSECRET\"}}", 0);
    char next[96], first_id[48], *dump;
    const char *first;
    json_t *page;
    bool more;

    flt.limit = 100;
    flt.tenant_id = t->id;
    assert_int_equal(sx_audit_list(f->tn, &flt, &page, &more, next), 0);
    assert_int_equal(json_array_size(page), 1);
    dump = json_dumps(page, 0);
    assert_non_null(strstr(dump, "tenant.create"));
    assert_non_null(strstr(dump, "settings.custom_system_prompt"));
    assert_null(strstr(dump, "TOPSECRET"));
    assert_null(strstr(dump, "Secretive"));
    assert_non_null(strstr(dump, "key_test"));
    free(dump);
    json_decref(page);

    flt.tenant_id = NULL;
    flt.action = "admin_key.bootstrap";
    assert_int_equal(sx_audit_list(f->tn, &flt, &page, &more, next), 0);
    assert_int_equal(json_array_size(page), 1);
    json_decref(page);
    flt.action = NULL;
    flt.limit = 1;
    assert_int_equal(sx_audit_list(f->tn, &flt, &page, &more, next), 0);
    assert_true(more);
    first = json_string_value(json_object_get(json_array_get(page, 0), "id"));
    snprintf(first_id, sizeof(first_id), "%s", first);
    json_decref(page);
    flt.after = next; /* the same buffer receives the next cursor */
    assert_int_equal(sx_audit_list(f->tn, &flt, &page, &more, next), 0);
    assert_int_equal(json_array_size(page), 1);
    assert_false(more);
    assert_string_not_equal(json_string_value(json_object_get(json_array_get(page, 0), "id")),
                            first_id);
    json_decref(page);
    sx_tenant_unref(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slug_rules),
        cmocka_unit_test(test_settings_table),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test_setup_teardown(test_create_get_and_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_merges_and_cache_sees_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_effective_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_pages_and_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_purges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_records_names_not_values, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
