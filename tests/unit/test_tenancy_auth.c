/* Unit tests of API keys and principals: hashing (no secret stored), lookup,
 * revocation and rotation with its overlap window, the admin key bootstrap,
 * and who may reach which tenant (DESIGN.md section 3). */
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
    struct sx_tenant *a, *b; /* two tenants */
    char key_a[SX_API_KEY_MAX], key_b[SX_API_KEY_MAX], kid_a[SX_KEY_ID_MAX];
    char platform[SX_API_KEY_MAX];
};

static const struct sx_actor admin = {"key_test", "admin", NULL, NULL};

static sx_tenancy *open_tenancy(struct fx *f, const char *admin_key, char *newkey)
{
    struct sx_tenancy_options o = {0};
    char err[256];
    sx_tenancy *tn;

    o.data_dir = f->dir;
    o.admin_key = admin_key;
    tn = sx_tenancy_open(f->s, &o, newkey, err, sizeof(err));
    if (!tn)
        fail_msg("sx_tenancy_open: %s", err);
    return tn;
}

static struct sx_tenant *make_tenant(struct fx *f, const char *json, char *key, char *kid)
{
    char k2[SX_KEY_ID_MAX];
    struct sx_fault fault = {0};
    struct sx_tenant *t = NULL;
    json_t *body = json_loads(json, 0, NULL);

    assert_int_equal(sx_tenant_create(f->tn, body, 0, &admin, &t, key, kid ? kid : k2,
                                      &fault), 0);
    json_decref(body);
    return t;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    char err[256], newkey[SX_API_KEY_MAX];
    struct sx_fault fault;
    json_t *pk;

    sx_log_min_level = SX_LOG_WARN;
    snprintf(f->dir, sizeof(f->dir), "/tmp/sx_test_auth_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->s = sx_store_open(NULL, f->dir, 4, err, sizeof(err));
    assert_non_null(f->s);
    f->tn = open_tenancy(f, ADMIN_KEY, newkey);
    f->a = make_tenant(f, "{\"name\": \"A\", \"slug\": \"alpha_one\", \"tier\": \"enterprise\"}",
                       f->key_a, f->kid_a);
    f->b = make_tenant(f, "{\"name\": \"B\", \"slug\": \"beta\"}", f->key_b, NULL);
    assert_int_equal(sx_key_create(f->tn, SX_KEY_PLATFORM, NULL, "ci", &admin, &pk, &fault),
                     0);
    snprintf(f->platform, sizeof(f->platform), "%s",
             json_string_value(json_object_get(pk, "api_key")));
    json_decref(pk);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];

    sx_tenant_unref(f->a);
    sx_tenant_unref(f->b);
    sx_tenancy_close(f->tn);
    sx_store_close(f->s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static int authn(struct fx *f, const char *key, struct sx_principal *p, int *status)
{
    char header[SX_API_KEY_MAX + 16];
    struct sx_refusal why = {0};
    int rc;

    snprintf(header, sizeof(header), "Bearer %s", key);
    rc = sx_auth_principal(f->tn, header, p, &why);
    *status = rc ? why.status : 200;
    return rc;
}

static void test_key_shapes_and_hash_only(void **state)
{
    struct fx *f = *state;
    sx_db *db;
    sx_stmt *st;
    const char *secret;
    int rows = 0;

    /* "sk-<slug with '-' for '_'>-" then 43 base62 characters. */
    assert_true(strncmp(f->key_a, "sk-alpha-one-", 13) == 0);
    assert_int_equal(strlen(f->key_a), 13 + 43);
    assert_true(strncmp(f->platform, "sk-platform-", 12) == 0);
    secret = f->key_a + 13;

    /* No column of any key row holds the secret. */
    db = sx_store_acquire(f->s);
    st = sx_db_query(db, "SELECT id, prefix, hash, COALESCE(name, '') FROM api_keys", "");
    while (sx_stmt_step(st) == SX_STORE_ROW) {
        for (int c = 0; c < 4; c++)
            assert_null(strstr(sx_stmt_text(st, c), secret));
        assert_int_equal(strlen(sx_stmt_text(st, 2)), 64);
        rows++;
    }
    sx_stmt_done(st);
    sx_store_release(f->s, db);
    assert_int_equal(rows, 4); /* admin, two tenants, platform */
}

static void test_principals(void **state)
{
    struct fx *f = *state;
    struct sx_principal p;
    struct sx_refusal why;
    char wrong[SX_API_KEY_MAX];
    int status;

    assert_int_equal(authn(f, ADMIN_KEY, &p, &status), 0);
    assert_int_equal(p.kind, SX_KEY_ADMIN);
    assert_int_equal(authn(f, f->platform, &p, &status), 0);
    assert_int_equal(p.kind, SX_KEY_PLATFORM);
    assert_int_equal(authn(f, f->key_a, &p, &status), 0);
    assert_int_equal(p.kind, SX_KEY_TENANT);
    assert_string_equal(p.tenant_id, f->a->id);

    /* One changed character of a real key is an unknown key. */
    snprintf(wrong, sizeof(wrong), "%s", f->key_a);
    wrong[20] = wrong[20] == 'x' ? 'y' : 'x';
    assert_int_equal(authn(f, wrong, &p, &status), SX_EAUTH);
    assert_int_equal(status, 401);

    assert_int_equal(sx_auth_principal(f->tn, NULL, &p, &why), SX_EAUTH);
    assert_string_equal(why.fault.code, "missing_api_key");
    assert_int_equal(sx_auth_principal(f->tn, "Basic abc", &p, &why), SX_EAUTH);
    assert_string_equal(why.fault.code, "invalid_authorization_header");
    assert_int_equal(sx_auth_principal(f->tn, "Bearer ", &p, &why), SX_EAUTH);
    assert_int_equal(sx_auth_principal(f->tn, "Bearer sk-\x01", &p, &why), SX_EAUTH);
    assert_string_equal(why.fault.code, "invalid_api_key");
    /* Scheme is case-insensitive, surrounding spaces tolerated. */
    snprintf(wrong, sizeof(wrong), "bearer  %s ", ADMIN_KEY);
    assert_int_equal(sx_auth_principal(f->tn, wrong, &p, &why), 0);
}

static void test_revocation_is_immediate(void **state)
{
    struct fx *f = *state;
    struct sx_principal p;
    int status;

    assert_int_equal(authn(f, f->key_a, &p, &status), 0); /* now cached */
    assert_int_equal(sx_key_revoke(f->tn, SX_KEY_TENANT, f->b->id, f->kid_a, &admin),
                     SX_ENOTFOUND); /* wrong tenant */
    assert_int_equal(sx_key_revoke(f->tn, SX_KEY_TENANT, f->a->id, f->kid_a, &admin), 0);
    assert_int_equal(authn(f, f->key_a, &p, &status), SX_EAUTH);
    assert_int_equal(status, 401);
    assert_int_equal(sx_key_revoke(f->tn, SX_KEY_TENANT, f->a->id, f->kid_a, &admin), 0);
    assert_int_equal(sx_key_revoke(f->tn, SX_KEY_TENANT, f->a->id, "key_nope", &admin),
                     SX_ENOTFOUND);
}

static void test_rotation_overlap(void **state)
{
    struct fx *f = *state;
    struct sx_principal p;
    struct sx_fault fault;
    json_t *out, *keys;
    char fresh[SX_API_KEY_MAX], fresh_id[SX_KEY_ID_MAX];
    int status;

    assert_int_equal(authn(f, f->key_a, &p, &status), 0);
    /* With an hour of overlap both keys work. */
    assert_int_equal(sx_key_rotate(f->tn, f->a, f->kid_a, 3600, &admin, &out, &fault), 0);
    snprintf(fresh, sizeof(fresh), "%s", json_string_value(json_object_get(out, "api_key")));
    snprintf(fresh_id, sizeof(fresh_id), "%s",
             json_string_value(json_object_get(out, "id")));
    assert_string_equal(json_string_value(json_object_get(out, "rotated_from")), f->kid_a);
    json_decref(out);
    assert_int_equal(authn(f, f->key_a, &p, &status), 0);
    assert_int_equal(authn(f, fresh, &p, &status), 0);
    assert_string_equal(p.tenant_id, f->a->id);

    /* Rotating the old key again with no overlap ends it at once. */
    assert_int_equal(sx_key_rotate(f->tn, f->a, f->kid_a, 0, &admin, &out, &fault), 0);
    json_decref(out);
    assert_int_equal(authn(f, f->key_a, &p, &status), SX_EAUTH);
    assert_int_equal(authn(f, fresh, &p, &status), 0);
    /* An expired key cannot be rotated; nor can overlaps out of range. */
    assert_int_equal(sx_key_rotate(f->tn, f->a, f->kid_a, 0, &admin, &out, &fault),
                     SX_EINVAL);
    assert_int_equal(sx_key_rotate(f->tn, f->a, fresh_id, -1, &admin, &out, &fault),
                     SX_EINVAL);
    assert_string_equal(fault.param, "overlap_seconds");
    assert_int_equal(sx_key_rotate(f->tn, f->b, fresh_id, 10, &admin, &out, &fault),
                     SX_ENOTFOUND);

    /* The list shows prefixes and states, never the secret. */
    assert_int_equal(sx_key_list(f->tn, SX_KEY_TENANT, f->a->id, &keys), 0);
    assert_int_equal(json_array_size(keys), 3);
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *k = json_array_get(keys, i);

        assert_null(json_object_get(k, "api_key"));
        assert_true(strlen(json_string_value(json_object_get(k, "prefix"))) < 30);
    }
    assert_string_equal(json_string_value(json_object_get(json_array_get(keys, 0), "status")),
                        "expired");
    json_decref(keys);
}

static void test_delete_tenant_kills_keys(void **state)
{
    struct fx *f = *state;
    struct sx_principal p;
    char id[SX_TENANT_ID_MAX];
    int status;

    assert_int_equal(authn(f, f->key_b, &p, &status), 0);
    assert_int_equal(sx_tenant_delete(f->tn, "beta", &admin, id), 0);
    assert_int_equal(authn(f, f->key_b, &p, &status), SX_EAUTH);
}

static void test_path_rules(void **state)
{
    struct fx *f = *state;
    struct sx_principal adm, ta, plat;
    struct sx_refusal why;
    struct sx_tenant *t;
    int status;

    assert_int_equal(authn(f, ADMIN_KEY, &adm, &status), 0);
    assert_int_equal(authn(f, f->key_a, &ta, &status), 0);
    assert_int_equal(authn(f, f->platform, &plat, &status), 0);

    /* Admin: any tenant by id or slug; unknown is 404. */
    assert_int_equal(sx_auth_path_tenant(f->tn, &adm, "beta", NULL, false, "1.2.3.4", &t,
                                         &why), 0);
    sx_tenant_unref(t);
    assert_int_equal(sx_auth_path_tenant(f->tn, &adm, "nobody", NULL, false, NULL, &t, &why),
                     SX_ENOTFOUND);
    assert_int_equal(why.status, 404);

    /* Tenant key: own tenant only where allowed; another tenant looks like
     * no tenant at all. */
    assert_int_equal(sx_auth_path_tenant(f->tn, &ta, f->a->id, NULL, true, NULL, &t, &why), 0);
    sx_tenant_unref(t);
    assert_int_equal(sx_auth_path_tenant(f->tn, &ta, "alpha_one", NULL, false, NULL, &t,
                                         &why), SX_EPERM);
    assert_int_equal(why.status, 403);
    assert_int_equal(sx_auth_path_tenant(f->tn, &ta, "beta", NULL, true, NULL, &t, &why),
                     SX_ENOTFOUND);
    assert_int_equal(why.status, 404);
    assert_string_equal(why.fault.message, "no tenant \"beta\" (use a tenant id or slug)");
    assert_int_equal(sx_auth_path_tenant(f->tn, &ta, "alpha_one", "beta", true, NULL, &t,
                                         &why), SX_EPERM);

    /* Platform keys do not manage tenants. */
    assert_int_equal(sx_auth_path_tenant(f->tn, &plat, "beta", NULL, true, NULL, &t, &why),
                     SX_EPERM);
}

static void test_request_rules(void **state)
{
    struct fx *f = *state;
    struct sx_principal ta, plat;
    struct sx_refusal why;
    struct sx_tenant *t, *u;
    struct sx_fault fault;
    json_t *patch;
    int status;

    assert_int_equal(authn(f, f->key_a, &ta, &status), 0);
    assert_int_equal(authn(f, f->platform, &plat, &status), 0);

    /* Platform + X-Tenant-ID by slug or id. */
    assert_int_equal(sx_auth_request_tenant(f->tn, &plat, "beta", NULL, &t, &why), 0);
    assert_string_equal(t->id, f->b->id);
    sx_tenant_unref(t);
    assert_int_equal(sx_auth_request_tenant(f->tn, &plat, f->b->id, NULL, &t, &why), 0);
    sx_tenant_unref(t);
    assert_int_equal(sx_auth_request_tenant(f->tn, &plat, NULL, NULL, &t, &why), SX_EINVAL);
    assert_int_equal(why.status, 400);
    assert_string_equal(why.fault.param, "X-Tenant-ID");
    assert_int_equal(sx_auth_request_tenant(f->tn, &plat, "ghost", NULL, &t, &why),
                     SX_ENOTFOUND);

    /* Tenant key: X-Tenant-ID may repeat its own tenant, never another. */
    assert_int_equal(sx_auth_request_tenant(f->tn, &ta, "alpha_one", NULL, &t, &why), 0);
    sx_tenant_unref(t);
    assert_int_equal(sx_auth_request_tenant(f->tn, &ta, "beta", NULL, &t, &why), SX_EPERM);
    assert_int_equal(why.status, 403);
    assert_int_equal(sx_auth_request_tenant(f->tn, &ta, "ghost", NULL, &t, &why), SX_EPERM);

    /* IP allowlist applies to tenant keys, and a change shows at once. */
    patch = json_loads("{\"ip_allowlist\": [\"10.0.0.0/8\", \"2001:db8::/32\"]}", 0, NULL);
    assert_int_equal(sx_tenant_settings_update(f->tn, "alpha_one", patch, &admin, &u, &fault),
                     0);
    json_decref(patch);
    sx_tenant_unref(u);
    assert_int_equal(sx_auth_request_tenant(f->tn, &ta, NULL, "10.9.8.7", &t, &why), 0);
    sx_tenant_unref(t);
    assert_int_equal(sx_auth_request_tenant(f->tn, &ta, NULL, "2001:db8::5", &t, &why), 0);
    sx_tenant_unref(t);
    assert_int_equal(sx_auth_request_tenant(f->tn, &ta, NULL, "192.168.0.1", &t, &why),
                     SX_EPERM);
    assert_string_equal(why.fault.code, "ip_not_allowed");
    assert_int_equal(sx_auth_path_tenant(f->tn, &ta, "alpha_one", NULL, true, "127.0.0.1", &t,
                                         &why), SX_EPERM);

    /* Suspension refuses tenant and platform keys alike. */
    patch = json_loads("{\"status\": \"suspended\"}", 0, NULL);
    assert_int_equal(sx_tenant_update(f->tn, "beta", patch, &admin, &u, &fault), 0);
    json_decref(patch);
    sx_tenant_unref(u);
    assert_int_equal(sx_auth_request_tenant(f->tn, &plat, "beta", NULL, &t, &why), SX_EPERM);
    assert_string_equal(why.fault.code, "tenant_suspended");
}

static void test_admin_bootstrap(void **state)
{
    struct fx *f = *state;
    char newkey[SX_API_KEY_MAX], err[256];
    struct sx_principal p;
    struct sx_tenancy_options o = {0};
    int status;

    /* A new environment key replaces the old environment key. */
    sx_tenancy_close(f->tn);
    f->tn = open_tenancy(f, "sk-admin-another-env-key-0123456789", newkey);
    assert_string_equal(newkey, "");
    assert_int_equal(authn(f, "sk-admin-another-env-key-0123456789", &p, &status), 0);
    assert_int_equal(p.kind, SX_KEY_ADMIN);
    assert_int_equal(authn(f, ADMIN_KEY, &p, &status), SX_EAUTH);

    /* Without one, an admin key already exists: nothing is generated. */
    sx_tenancy_close(f->tn);
    f->tn = open_tenancy(f, NULL, newkey);
    assert_string_equal(newkey, "");

    /* Refusals: too short, or a tenant's key. */
    o.data_dir = f->dir;
    o.admin_key = "short";
    assert_null(sx_tenancy_open(f->s, &o, newkey, err, sizeof(err)));
    o.admin_key = "sk-admin-only-thirty-one-chars1";
    assert_null(sx_tenancy_open(f->s, &o, newkey, err, sizeof(err)));
    assert_non_null(strstr(err, "32 to"));
    o.admin_key = f->key_b;
    assert_null(sx_tenancy_open(f->s, &o, newkey, err, sizeof(err)));
    assert_non_null(strstr(err, "non-admin"));
}

static void test_generated_admin_key_and_pepper(void **state)
{
    char dir[64], err[256], newkey[SX_API_KEY_MAX], again[SX_API_KEY_MAX], path[128];
    char header[SX_API_KEY_MAX + 8];
    struct sx_tenancy_options o = {0};
    struct sx_principal p;
    struct sx_refusal why;
    sx_tenancy *tn;
    sx_store *s;

    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sx_test_boot_XXXXXX");
    assert_non_null(mkdtemp(dir));
    s = sx_store_open(NULL, dir, 2, err, sizeof(err));
    o.data_dir = dir;
    tn = sx_tenancy_open(s, &o, newkey, err, sizeof(err));
    assert_non_null(tn);
    assert_true(strncmp(newkey, "sk-admin-", 9) == 0);
    assert_int_equal(strlen(newkey), 9 + 43);
    snprintf(header, sizeof(header), "Bearer %s", newkey);
    assert_int_equal(sx_auth_principal(tn, header, &p, &why), 0);
    assert_int_equal(p.kind, SX_KEY_ADMIN);
    sx_tenancy_close(tn);

    /* Restart: no second key, the first still verifies (same pepper). */
    tn = sx_tenancy_open(s, &o, again, err, sizeof(err));
    assert_string_equal(again, "");
    assert_int_equal(sx_auth_principal(tn, header, &p, &why), 0);
    sx_tenancy_close(tn);

    /* The pepper file is private; another pepper breaks every key. */
    snprintf(path, sizeof(path), "%s/pepper", dir);
    assert_int_equal(access(path, R_OK), 0);
    {
        char cmd[200];

        snprintf(cmd, sizeof(cmd), "test \"$(stat -c %%a '%s')\" = 600", path);
        assert_int_equal(system(cmd), 0);
    }
    o.pepper = "a-completely-different-pepper";
    tn = sx_tenancy_open(s, &o, again, err, sizeof(err));
    assert_non_null(tn);
    assert_int_equal(sx_auth_principal(tn, header, &p, &why), SX_EAUTH);
    sx_tenancy_close(tn);

    /* An operator's key from the environment supersedes the generated one
     * (which may have leaked from the first start's output). */
    o.pepper = NULL;
    o.admin_key = "sk-admin-chosen-by-the-operator-0123456789";
    tn = sx_tenancy_open(s, &o, again, err, sizeof(err));
    assert_non_null(tn);
    assert_int_equal(sx_auth_principal(tn, header, &p, &why), SX_EAUTH);
    snprintf(header, sizeof(header), "Bearer %s", o.admin_key);
    assert_int_equal(sx_auth_principal(tn, header, &p, &why), 0);
    assert_int_equal(p.kind, SX_KEY_ADMIN);
    sx_tenancy_close(tn);
    sx_store_close(s);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_shapes_and_hash_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_principals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_is_immediate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_tenant_kills_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_bootstrap, setup, teardown),
        cmocka_unit_test(test_generated_admin_key_and_pepper),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
