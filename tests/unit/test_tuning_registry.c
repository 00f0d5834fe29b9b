/* Adapter registry tests: uploads validated against the base model,
 * versions and activation/rollback, in-flight handles surviving a switch,
 * the memory budget with LRU eviction, preloading after a restart, and the
 * purge of a deleted tenant (rows, files, cache). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/err.h"
#include "tuning/registry.h"

#include "engine_fixture.h"

/* Two local models: "tiny" (llama f32) and "qwen" (qwen2 q8_0). */
static sx_model *llama, *qwen;

static const sx_model *model_of(void *ctx, const char *name)
{
    (void)ctx;
    if (strcmp(name, "tiny") == 0)
        return llama;
    if (strcmp(name, "qwen") == 0)
        return qwen;
    return NULL;
}

static struct sx_tenant tenant(const char *id, const char *slug)
{
    struct sx_tenant t;

    memset(&t, 0, sizeof(t));
    snprintf(t.id, sizeof(t.id), "%s", id);
    snprintf(t.slug, sizeof(t.slug), "%s", slug);
    return t;
}

static int version_of(json_t *v)
{
    int n = (int)json_integer_value(json_object_get(v, "number"));

    json_decref(v);
    return n;
}

static void test_registry(void **state)
{
    char dir[] = "/tmp/sx_registry_XXXXXX", err[256], msg[256], path[512];
    struct sx_registry_options o = {.model_of = model_of, .preload = -1};
    struct sx_tenant a = tenant("tenant_aaaa", "acme"), b = tenant("tenant_bbbb", "bolt");
    sx_store *store;
    sx_registry *r;
    sx_adapter_handle *h1, *h2, *hb;
    json_t *v, *list;
    char *lora, *qlora, base[64];
    size_t len, qlen;
    int n, ver;
    uint64_t bytes;

    (void)state;
    NEED_FIXTURES();
    llama = load_model("models/tiny-llama-f32.gguf");
    qwen = load_model("models/tiny-qwen2-q8_0.gguf");
    lora = read_fixture("models/lora-tiny-llama.gguf", &len);
    qlora = read_fixture("models/lora-tiny-qwen2.gguf", &qlen);
    assert_non_null(mkdtemp(dir));
    o.data_dir = dir;
    store = sx_store_open(NULL, dir, 4, err, sizeof(err));
    assert_non_null(store);
    r = sx_registry_open(store, NULL, &o, err, sizeof(err));
    assert_non_null(r);

    /* Nothing yet. */
    assert_int_equal(sx_tuning_active_adapter(r, &a, "tiny", &h1), SX_ENOTFOUND);
    assert_null(h1);

    /* Uploads: validated against the named base model. */
    assert_int_equal(sx_registry_upload(r, &a, "qwen", lora, len, true, NULL, &v, msg, sizeof(msg)),
                     SX_EINVAL);
    assert_non_null(strstr(msg, "architecture"));
    assert_int_equal(sx_registry_upload(r, &a, "tiny", "GGUF junk", 9, true, NULL, &v, msg,
                                        sizeof(msg)), SX_EINVAL);
    assert_int_equal(sx_registry_upload(r, &a, "nope", lora, len, true, NULL, &v, msg, sizeof(msg)),
                     SX_ENOTFOUND);
    assert_non_null(strstr(msg, "nope"));
    assert_int_equal(sx_registry_upload(r, &a, "tiny", lora, len, true, NULL, &v, msg, sizeof(msg)),
                     0);
    assert_string_equal(json_string_value(json_object_get(v, "version")), "v1");
    assert_string_equal(json_string_value(json_object_get(v, "model_id")), "tiny:acme-v1");
    assert_int_equal(json_integer_value(json_object_get(v, "rank")), 4);
    assert_int_equal(json_integer_value(json_object_get(v, "size_bytes")), (json_int_t)len);
    assert_int_equal(strlen(json_string_value(json_object_get(v, "sha256"))), 64);
    json_decref(v);
    snprintf(path, sizeof(path), "%s/adapters/tenant_aaaa/1.gguf", dir);
    assert_int_equal(access(path, R_OK), 0);
    assert_int_equal(sx_registry_upload(r, &a, "tiny", lora, len, true, NULL, &v, msg, sizeof(msg)),
                     0);
    assert_int_equal(version_of(v), 2);

    /* The active one, v2; a request holds it across a rollback to v1. */
    assert_int_equal(sx_tuning_active_adapter(r, &a, "tiny", &h2), 0);
    assert_int_equal(sx_adapter_version(h2), 2);
    assert_string_equal(sx_adapter_base_model(h2), "tiny");
    assert_int_equal(sx_tuning_active_adapter(r, &a, "qwen", &h1), SX_ENOTFOUND);
    assert_int_equal(sx_registry_activate(r, &a, 1, NULL, &v), 0);
    assert_int_equal(version_of(v), 1);
    assert_int_equal(sx_registry_activate(r, &a, 9, NULL, &v), SX_ENOTFOUND);
    assert_int_equal(sx_tuning_active_adapter(r, &a, "tiny", &h1), 0);
    assert_int_equal(sx_adapter_version(h1), 1);
    assert_int_equal(sx_adapter_version(h2), 2);
    assert_int_equal(sx_lora_get_info(sx_adapter_lora(h2))->rank, 4);
    assert_int_equal(sx_registry_active_version(r, "tenant_aaaa", &ver, base, sizeof(base)), 0);
    assert_int_equal(ver, 1);
    assert_string_equal(base, "tiny");

    /* The listing. */
    assert_int_equal(sx_registry_list(r, &a, &list), 0);
    assert_int_equal(json_array_size(json_object_get(list, "data")), 2);
    assert_string_equal(json_string_value(json_object_get(list, "active")), "v1");
    assert_true(json_is_false(json_object_get(
        json_array_get(json_object_get(list, "data"), 1), "active")));
    json_decref(list);

    /* Versions are per tenant; the other tenant's upload is its own v1. */
    assert_int_equal(sx_registry_upload(r, &b, "qwen", qlora, qlen, true, NULL, &v, msg,
                                        sizeof(msg)), 0);
    assert_int_equal(version_of(v), 1);
    assert_int_equal(sx_tuning_active_adapter(r, &b, "qwen", &hb), 0);
    assert_ptr_not_equal(sx_adapter_lora(hb), sx_adapter_lora(h1));
    sx_adapter_release(hb);
    sx_adapter_release(h1);
    sx_adapter_release(h2);
    sx_registry_cache_stats(r, &n, &bytes);
    assert_int_equal(n, 3);
    sx_registry_close(r);

    /* Restart with a budget that holds one adapter: preloading fills it,
     * and taking another evicts the least recently used. */
    o.preload = 0;
    o.mem_budget = bytes / 3 + 1024;
    r = sx_registry_open(store, NULL, &o, err, sizeof(err));
    assert_non_null(r);
    sx_registry_cache_stats(r, &n, &bytes);
    assert_int_equal(n, 1);
    assert_int_equal(sx_tuning_active_adapter(r, &a, "tiny", &h1), 0);
    sx_adapter_release(h1);
    assert_int_equal(sx_tuning_active_adapter(r, &b, "qwen", &hb), 0);
    sx_registry_cache_stats(r, &n, &bytes);
    assert_int_equal(n, 1);
    assert_true(bytes <= o.mem_budget);

    /* An adapter a request holds is not evicted (a regression: it was, and
     * the next request loaded a second copy): the cache runs over budget
     * until the last holder lets go. */
    assert_int_equal(sx_tuning_active_adapter(r, &a, "tiny", &h1), 0);
    sx_registry_cache_stats(r, &n, &bytes);
    assert_int_equal(n, 2);
    assert_int_equal(sx_tuning_active_adapter(r, &a, "tiny", &h2), 0);
    assert_ptr_equal(h2, h1);
    sx_adapter_release(h2);
    assert_int_equal(sx_lora_get_info(sx_adapter_lora(h1))->n_matrices, 14);
    assert_int_equal(sx_lora_get_info(sx_adapter_lora(hb))->n_matrices, 14);
    sx_adapter_release(hb);
    sx_registry_cache_stats(r, &n, &bytes);
    assert_int_equal(n, 1);
    assert_true(bytes <= o.mem_budget);
    sx_adapter_release(h1);

    /* Purge: rows, files and cache of that tenant only. */
    {
        sx_db *db = sx_store_acquire(store);

        assert_int_equal(sx_registry_purge(r, db, "tenant_aaaa"), 0);
        sx_store_release(store, db);
    }
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(sx_tuning_active_adapter(r, &a, "tiny", &h1), SX_ENOTFOUND);
    assert_int_equal(sx_registry_list(r, &a, &list), 0);
    assert_int_equal(json_array_size(json_object_get(list, "data")), 0);
    assert_true(json_is_null(json_object_get(list, "active")));
    json_decref(list);
    assert_int_equal(sx_tuning_active_adapter(r, &b, "qwen", &hb), 0);
    sx_adapter_release(hb);

    sx_registry_close(r);
    sx_store_close(store);
    sx_model_free(llama);
    sx_model_free(qwen);
    free(lora);
    free(qlora);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

/* "fleet" is an upstream that serves adapters by name. */
static bool remote_of(void *ctx, const char *name)
{
    (void)ctx;
    return strcmp(name, "fleet") == 0;
}

/* Pinned versions (a model id naming vN) and adapters of upstream models:
 * stored and versioned after a header check, never loaded. */
static void test_pinned_and_remote(void **state)
{
    char dir[] = "/tmp/sx_registry_XXXXXX", err[256], msg[256], path[512], base[64];
    struct sx_registry_options o = {.model_of = model_of, .remote_of = remote_of,
                                    .preload = 0};
    struct sx_tenant a = tenant("tenant_aaaa", "acme"), b = tenant("tenant_bbbb", "bolt");
    sx_store *store;
    sx_registry *r;
    sx_adapter_handle *h;
    json_t *v;
    char *lora, *model;
    size_t len, mlen;
    int ver, n;
    uint64_t bytes;

    (void)state;
    NEED_FIXTURES();
    llama = load_model("models/tiny-llama-f32.gguf");
    qwen = NULL;
    lora = read_fixture("models/lora-tiny-llama.gguf", &len);
    model = read_fixture("models/tiny-llama-f32.gguf", &mlen);
    assert_non_null(mkdtemp(dir));
    o.data_dir = dir;
    store = sx_store_open(NULL, dir, 4, err, sizeof(err));
    assert_non_null(store);
    r = sx_registry_open(store, NULL, &o, err, sizeof(err));
    assert_non_null(r);

    /* Two local versions, v2 active; v1 stays reachable by number. */
    assert_int_equal(sx_registry_upload(r, &a, "tiny", lora, len, true, NULL, &v, msg,
                                        sizeof(msg)), 0);
    json_decref(v);
    assert_int_equal(sx_registry_upload(r, &a, "tiny", lora, len, true, NULL, &v, msg,
                                        sizeof(msg)), 0);
    json_decref(v);
    assert_int_equal(sx_tuning_adapter_version(r, &a, "tiny", 1, &h), 0);
    assert_int_equal(sx_adapter_version(h), 1);
    sx_adapter_release(h);
    assert_int_equal(sx_tuning_adapter_version(r, &a, "tiny", 3, &h), SX_ENOTFOUND);
    assert_null(h);
    assert_int_equal(sx_tuning_adapter_version(r, &a, "tiny", 0, &h), SX_ENOTFOUND);
    assert_int_equal(sx_tuning_adapter_version(r, &b, "tiny", 1, &h), SX_ENOTFOUND);
    assert_int_equal(sx_registry_find_version(r, "tenant_aaaa", 1, &ver, base, sizeof(base)),
                     0);
    assert_int_equal(ver, 1);
    assert_int_equal(sx_registry_find_version(r, "tenant_aaaa", 0, &ver, base, sizeof(base)),
                     0);
    assert_int_equal(ver, 2);
    assert_int_equal(sx_registry_find_version(r, "tenant_bbbb", 1, &ver, base, sizeof(base)),
                     SX_ENOTFOUND);

    /* Upstream: the header is checked (a model file is not an adapter). */
    assert_int_equal(sx_registry_upload(r, &b, "fleet", model, mlen, true, NULL, &v, msg,
                                        sizeof(msg)), SX_EINVAL);
    assert_non_null(strstr(msg, "adapter"));
    assert_int_equal(sx_registry_upload(r, &b, "fleet", "GGUF junk", 9, true, NULL, &v, msg,
                                        sizeof(msg)), SX_EINVAL);
    assert_int_equal(sx_registry_upload(r, &b, "fleet", lora, len, true, NULL, &v, msg,
                                        sizeof(msg)), 0);
    assert_string_equal(json_string_value(json_object_get(v, "model_id")), "fleet:bolt-v1");
    assert_int_equal(json_integer_value(json_object_get(v, "rank")), 4);
    json_decref(v);
    assert_int_equal(sx_registry_active_version(r, "tenant_bbbb", &ver, base, sizeof(base)),
                     0);
    assert_int_equal(ver, 1);
    assert_string_equal(base, "fleet");
    /* Never loaded: no engine model to load it for. */
    assert_int_equal(sx_tuning_active_adapter(r, &b, "fleet", &h), SX_ENOTFOUND);
    sx_registry_close(r);

    /* A restart preloads the local active adapter only, quietly skipping
     * the upstream one. */
    r = sx_registry_open(store, NULL, &o, err, sizeof(err));
    assert_non_null(r);
    sx_registry_cache_stats(r, &n, &bytes);
    assert_int_equal(n, 1);

    sx_registry_close(r);
    sx_store_close(store);
    sx_model_free(llama);
    llama = NULL;
    free(lora);
    free(model);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_pinned_and_remote),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
