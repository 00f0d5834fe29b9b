"""Tenants: create, list (tier filter, limit, cursor), get by id and slug,
update, suspend, delete (keys revoked at once, data gone)."""
from conftest import SENSITIVE, assert_error, next_cursor, unique_slug


def test_create_returns_id_and_key_once(api):
    slug = unique_slug("create")
    r = api.apost("/tenants", json={
        "name": "Create Test", "slug": slug, "tier": "pro",
        "contact_email": f"ops-{slug}@example.com",
        "settings": {"rag_top_k": 3}})
    assert r.status_code in (200, 201), r.text
    t = r.json()
    assert t["id"].startswith("tenant_") and len(t["id"]) > len("tenant_")
    assert t["name"] == "Create Test"
    assert t["slug"] == slug
    assert t["tier"] == "pro"
    assert t["contact_email"] == f"ops-{slug}@example.com"
    assert t.get("status", "active") == "active"
    key = t["api_key"]
    assert key.startswith("sk-") and not key.startswith(("sk-admin-", "sk-platform-"))
    secret = key.rsplit("-", 1)[-1]
    # >= 32 random bytes in base62 is >= 43 characters.
    assert len(secret) >= 43 and secret.isalnum(), "secret must be >= 32 bytes base62"

    # The key is shown once: never again by get or list.
    g = api.aget(f"/tenants/{t['id']}")
    assert g.status_code == 200
    assert key not in g.text and secret not in g.text
    assert "api_key" not in g.json() or g.json()["api_key"] in (None, "")
    lst = api.aget("/tenants", params={"limit": 100})
    assert secret not in lst.text

    # The key works at once, for its own tenant's settings.
    s = api.get(f"/tenants/{t['id']}/settings", key=key)
    assert s.status_code == 200, s.text
    assert s.json()["rag_top_k"] == 3


def test_tenant_keys_are_distinct(api):
    _, k1 = api.create_tenant()
    _, k2 = api.create_tenant()
    assert k1 != k2
    assert k1.rsplit("-", 1)[-1] != k2.rsplit("-", 1)[-1]


def test_get_by_id_and_by_slug_agree(api, tenant):
    t, _ = tenant
    a = api.aget(f"/tenants/{t['id']}")
    b = api.aget(f"/tenants/{t['slug']}")
    assert a.status_code == 200 and b.status_code == 200
    assert a.json() == b.json()
    assert a.json()["id"] == t["id"] and a.json()["slug"] == t["slug"]


def test_get_unknown_tenant_is_404(api):
    assert_error(api.aget("/tenants/tenant_doesnotexist0000"), 404)
    assert_error(api.aget(f"/tenants/{unique_slug('nobody')}"), 404)


def test_create_validation(api):
    before = api.tenant_count()
    slug = unique_slug("val")
    base = {"name": "V", "slug": slug, "tier": "free"}
    cases = [
        ({k: v for k, v in base.items() if k != "name"}, "name"),
        ({**base, "name": 42}, "name"),
        ({**base, "name": ""}, "name"),
        ({**base, "tier": "platinum"}, "tier"),
        ({**base, "tier": 3}, "tier"),
        ({**base, "slug": 17}, "slug"),
        ({**base, "contact_email": "not-an-email"}, "contact_email"),
        ({**base, "contact_email": 5}, "contact_email"),
        ({**base, "bogus_field": 1}, "bogus_field"),
        ({**base, "settings": "fast"}, "settings"),
    ]
    for body, param in cases:
        err = assert_error(api.apost("/tenants", json=body), 400)
        assert param in (err["param"] or "") and param in err["message"], \
            (body, err)
    # Invalid settings inside a create name the settings field.
    err = assert_error(api.apost("/tenants", json={
        **base, "settings": {"rag_top_k": "five"}}), 400)
    assert "rag_top_k" in (err["param"] or "") and "rag_top_k" in err["message"]
    assert_error(api.aget(f"/tenants/{slug}"), 404)
    assert api.tenant_count() == before


def test_duplicate_slug_is_409(api, tenant):
    t, _ = tenant
    before = api.snapshot(t["id"])
    n = api.tenant_count()
    r = api.apost("/tenants", json={"name": "Dup", "slug": t["slug"], "tier": "pro"})
    err = assert_error(r, 409)
    assert t["slug"] in err["message"] or "slug" in err["message"]
    assert api.snapshot(t["id"]) == before
    assert api.tenant_count() == n


def test_bad_slugs_are_400(api):
    n = api.tenant_count()
    bad = ["UpperCase", "has space", "", "a" * 200, "café_latte", "слаг",
           "semi;colon", "slash/slug", "dot.slug", "x' OR '1'='1",
           "'; DROP TABLE tenants;--", "../etc"]
    for slug in bad:
        err = assert_error(api.apost("/tenants", json={
            "name": "Bad", "slug": slug, "tier": "free"}), 400)
        assert err["param"] == "slug", (slug, err)
        assert "slug" in err["message"]
    assert api.tenant_count() == n


def test_reserved_looking_slug_cannot_be_admin(api):
    """A tenant slugged 'admin' or 'platform' must not get a key that acts as
    an admin or platform key: refuse the slug or keep the key a tenant key."""
    for slug in ("admin", "platform"):
        r = api.apost("/tenants", json={"name": "R", "slug": slug, "tier": "free"})
        if r.status_code in (200, 201):
            key = r.json()["api_key"]
            assert_error(api.get("/tenants", key=key), 403)
            assert_error(api.get("/admin/platform-keys", key=key), 403)
        else:
            assert r.status_code in (400, 409), r.text
            assert_error(r, r.status_code)


def test_list_shape_and_tier_filter(api):
    slugs = {}
    for tier in ("enterprise", "business"):
        t, _ = api.create_tenant(tier=tier)
        slugs[t["slug"]] = tier
    r = api.aget("/tenants", params={"tier": "enterprise", "limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["tenants"], list)
    for t in body["tenants"]:
        assert t["tier"] == "enterprise"
        assert {"id", "name", "slug", "tier"} <= set(t)
        assert "api_key" not in t
    listed = {t["slug"] for t in body["tenants"]}
    assert {s for s, tier in slugs.items() if tier == "enterprise"} <= listed
    assert not {s for s, tier in slugs.items() if tier == "business"} & listed
    assert_error(api.aget("/tenants", params={"tier": "gold"}), 400, param="tier")


def test_list_limit_and_cursor_pagination(api):
    # A tier of its own would be ideal; enterprise tenants from this test are
    # tagged by slug prefix and the walk checks every one appears exactly once.
    prefix = unique_slug("page")
    made = set()
    for i in range(7):
        t, _ = api.create_tenant(slug=f"{prefix}_{i}", tier="enterprise")
        made.add(t["id"])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"tier": "enterprise", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = api.aget("/tenants", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["tenants"]) <= 3
        seen += [t["id"] for t in body["tenants"]]
        pages += 1
        cursor = next_cursor(body)
        if not cursor:
            break
        assert pages < 100
    assert len(seen) == len(set(seen)), "a tenant appeared on two pages"
    assert made <= set(seen)
    assert pages >= 3

    # limit=1 returns exactly one and a cursor.
    r = api.aget("/tenants", params={"limit": 1})
    assert len(r.json()["tenants"]) == 1 and next_cursor(r.json())


def test_list_bad_params(api):
    for params in ({"limit": "abc"}, {"limit": -1}, {"limit": 0},
                   {"cursor": "not-a-cursor!!"}, {"tier": "pro' OR 1=1--"}):
        r = api.aget("/tenants", params=params)
        assert_error(r, 400)
    r = api.aget("/tenants", params={"limit": 10 ** 9})
    assert r.status_code in (200, 400), r.text


def test_patch_fields(api, tenant):
    t, key = tenant
    slug = t["slug"]
    r = api.apatch(f"/tenants/{slug}", json={
        "tier": "business", "name": "Renamed", "contact_email": f"new-{slug}@example.com",
        "settings": {"rerank_tier": "quantum_gpu"}})
    assert r.status_code == 200, r.text
    g = api.aget(f"/tenants/{t['id']}").json()
    assert g["tier"] == "business"
    assert g["name"] == "Renamed"
    assert g["contact_email"] == f"new-{slug}@example.com"
    assert g["slug"] == slug
    assert api.settings(t["id"])["rerank_tier"] == "quantum_gpu"
    # The tenant's key is unaffected by a tier change.
    assert api.get(f"/tenants/{t['id']}/settings", key=key).status_code == 200


def test_patch_settings_are_merged(api):
    t, _ = api.create_tenant(settings={"rag_top_k": 7, "enable_rag": True})
    r = api.apatch(f"/tenants/{t['id']}", json={"settings": {"rerank_k": 3}})
    assert r.status_code == 200, r.text
    s = api.settings(t["id"])
    assert s["rag_top_k"] == 7 and s["enable_rag"] is True and s["rerank_k"] == 3


def test_patch_validation_leaves_state(api, tenant):
    t, _ = tenant
    before = api.snapshot(t["id"])
    for body, param in [({"tier": "gold"}, "tier"), ({"status": "deleted"}, "status"),
                        ({"name": 5}, "name"), ({"contact_email": "nope"}, "contact_email"),
                        ({"nickname": "x"}, "nickname"),
                        ({"name": "Ok", "settings": {"rag_top_k": -1}}, "rag_top_k"),
                        ({"tier": "pro", "settings": {"colour": "red"}}, "colour")]:
        err = assert_error(api.apatch(f"/tenants/{t['id']}", json=body), 400)
        assert param in (err["param"] or "") and param in err["message"], (body, err)
    assert api.snapshot(t["id"]) == before
    assert_error(api.apatch("/tenants/tenant_nope000000", json={"name": "x"}), 404)


def test_suspend_and_reactivate(api, tenant):
    t, key = tenant
    r = api.apatch(f"/tenants/{t['id']}", json={"status": "suspended"})
    assert r.status_code == 200, r.text
    assert api.aget(f"/tenants/{t['id']}").json()["status"] == "suspended"
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=key), 403)
    # The admin still manages a suspended tenant.
    assert api.aget(f"/tenants/{t['id']}/settings").status_code == 200
    r = api.apatch(f"/tenants/{t['id']}", json={"status": "active"})
    assert r.status_code == 200
    assert api.get(f"/tenants/{t['id']}/settings", key=key).status_code == 200


def test_delete_revokes_keys_and_purges(api):
    t, key = api.create_tenant(settings={"custom_system_prompt": "purge me please"})
    extra = api.apost(f"/tenants/{t['id']}/keys", json={})
    assert extra.status_code in (200, 201), extra.text
    extra_key = extra.json().get("api_key") or extra.json().get("key")
    assert api.get(f"/tenants/{t['id']}/settings", key=key).status_code == 200

    r = api.adelete(f"/tenants/{t['slug']}")
    assert r.status_code in (200, 204), r.text
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=key), 401)
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=extra_key), 401)
    assert_error(api.aget(f"/tenants/{t['id']}"), 404)
    assert_error(api.aget(f"/tenants/{t['slug']}"), 404)
    assert_error(api.aget(f"/tenants/{t['id']}/settings"), 404)
    assert_error(api.aget(f"/tenants/{t['id']}/keys"), 404)
    assert_error(api.adelete(f"/tenants/{t['id']}"), 404)
    listed = api.aget("/tenants", params={"limit": 100}).text
    assert t["id"] not in listed


def test_deleted_slug_and_key_do_not_resurrect(api):
    """Recreating a deleted slug gives a new id and a new key; the old key
    stays dead and the old settings do not come back."""
    slug = unique_slug("again")
    t1, k1 = api.create_tenant(slug=slug, settings={"rag_top_k": 9})
    assert api.adelete(f"/tenants/{t1['id']}").status_code in (200, 204)
    r = api.apost("/tenants", json={"name": "Again", "slug": slug, "tier": "free"})
    if r.status_code == 409:
        return  # refusing to reuse a slug is also acceptable
    assert r.status_code in (200, 201), r.text
    t2 = r.json()
    assert t2["id"] != t1["id"] and t2["api_key"] != k1
    assert_error(api.get(f"/tenants/{slug}/settings", key=k1), 401)
    assert api.settings(slug).get("rag_top_k") != 9


def test_concurrent_creates_of_one_slug(api):
    """Ten admins racing for one slug: exactly one wins, the rest get 409."""
    from concurrent.futures import ThreadPoolExecutor
    import requests
    slug = unique_slug("race")

    def create(i):
        return requests.post(api.srv.base + "/tenants", timeout=15, headers={
            "Authorization": f"Bearer {api.srv.admin_key}"},
            json={"name": f"Racer {i}", "slug": slug, "tier": "free"})
    with ThreadPoolExecutor(10) as ex:
        rs = list(ex.map(create, range(10)))
    for r in rs:
        if r.status_code == 201:
            SENSITIVE.add_secret(r.json()["api_key"])
    codes = sorted(r.status_code for r in rs)
    assert codes == [201] + [409] * 9, codes
    for r in rs:
        if r.status_code == 409:
            assert_error(r, 409)


def test_concurrent_settings_patches_lose_nothing(api, tenant):
    """Patches of different fields at the same time all land (no lost
    update in the read-merge-write of settings)."""
    from concurrent.futures import ThreadPoolExecutor
    import requests
    t, _ = tenant
    patches = [{"rag_top_k": 7}, {"rerank_k": 3}, {"enable_rag": False},
               {"default_model": "race-model"}, {"rate_limit_rpm": 77},
               {"daily_token_limit": 777}, {"rag_threshold": 0.3},
               {"max_tokens_per_request": 1234}, {"enable_rerank": True},
               {"blocked_topics": ["race_topic"]}]

    def patch(body):
        return requests.patch(f"{api.srv.base}/tenants/{t['id']}/settings", timeout=15,
                              headers={"Authorization": f"Bearer {api.srv.admin_key}"},
                              json=body).status_code
    for _ in range(3):
        with ThreadPoolExecutor(10) as ex:
            assert set(ex.map(patch, patches)) == {200}
        s = api.settings(t["id"])
        for body in patches:
            for k, v in body.items():
                assert s[k] == v, (k, s[k], v)
        api.apatch(f"/tenants/{t['id']}/settings", json={k: None for p in patches for k in p})
