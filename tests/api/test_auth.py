"""Authentication and isolation: missing/invalid/revoked keys, schemes, tenant
keys confined to their tenant, X-Tenant-ID rules, platform keys acting for a
tenant, admin-only routes, the IP allowlist."""
import pytest

from conftest import assert_error, rand62

from test_keys import make_platform_key

ADMIN_ONLY = [
    ("GET", "/tenants"),
    ("POST", "/tenants"),
    ("GET", "/tenants/{t}"),
    ("PATCH", "/tenants/{t}"),
    ("DELETE", "/tenants/{t}"),
    ("PATCH", "/tenants/{t}/settings"),
    ("GET", "/tenants/{t}/keys"),
    ("POST", "/tenants/{t}/keys"),
    ("GET", "/admin/platform-keys"),
    ("POST", "/admin/platform-keys"),
    ("GET", "/admin/audit"),
]


def settings_url(t):
    return f"/tenants/{t['id']}/settings"


def test_missing_key_is_401(api, tenant):
    t, _ = tenant
    for path in ("/tenants", settings_url(t), "/admin/audit", "/admin/platform-keys"):
        err = assert_error(api.get(path), 401)
        assert "key" in err["message"].lower() or "authorization" in err["message"].lower()
    assert_error(api.post("/tenants", json={"name": "x", "slug": "no_auth_x"}), 401)
    assert_error(api.aget("/tenants/no_auth_x"), 404)


@pytest.mark.parametrize("auth", [
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Token {admin}",
    "{admin}",
    "Bearer  {admin}x",
    "Bearer sk-admin-" + "A" * 43,
    "Bearer sk-platform-" + "B" * 43,
    "Bearer sk-nosuchtenant-" + "C" * 43,
    "Bearer sk-",
    "Bearer " + "x" * 5000,
    "Bearer {admin} extra",
])
def test_invalid_credentials_are_401(api, auth):
    n = api.tenant_count()
    hdr = {"Authorization": auth.format(admin=api.srv.admin_key)}
    assert_error(api.get("/tenants", headers=hdr), 401)
    assert_error(api.post("/tenants", headers=hdr,
                          json={"name": "x", "slug": "bad_auth_probe", "tier": "free"}), 401)
    assert api.tenant_count() == n


def test_tampered_tenant_key_is_401(api, tenant):
    t, key = tenant
    last = key[-1]
    flipped = key[:-1] + ("a" if last != "a" else "b")
    assert_error(api.get(settings_url(t), key=flipped), 401)
    assert_error(api.get(settings_url(t), key=key[:-1]), 401)
    assert_error(api.get(settings_url(t), key=key + "0"), 401)
    # Same secret, another slug prefix: the secret alone must not authenticate
    # a different key name.
    secret = key.rsplit("-", 1)[-1]
    assert_error(api.get(settings_url(t), key="sk-admin-" + secret), 401)


def test_tenant_key_cannot_see_other_tenant(api, tenant, other_tenant):
    a, akey = tenant
    b, _ = other_tenant
    before = api.snapshot(b["id"])
    for ref in (b["id"], b["slug"]):
        assert_error(api.get(f"/tenants/{ref}/settings", key=akey), 404)
    # Not existing looks the same as not yours.
    r1 = api.get(f"/tenants/{b['id']}/settings", key=akey)
    r2 = api.get("/tenants/tenant_nonexistent0/settings", key=akey)
    assert r1.status_code == r2.status_code == 404
    assert r1.json()["error"]["type"] == r2.json()["error"]["type"]
    assert api.snapshot(b["id"]) == before


@pytest.mark.parametrize("method,path", ADMIN_ONLY)
def test_admin_only_routes_refuse_tenant_keys(api, tenant, method, path):
    t, key = tenant
    before = api.snapshot(t["id"])
    n = api.tenant_count()
    kw = {"json": {"name": "x", "slug": "tenant_made_this", "tier": "free",
                   "rate_limit_rpm": 99999}} if method in ("POST", "PATCH") else {}
    r = api.request(method, path.format(t=t["id"]), key=key, **kw)
    assert_error(r, 403)
    assert api.snapshot(t["id"]) == before
    assert api.tenant_count() == n


@pytest.mark.parametrize("method,path", ADMIN_ONLY)
def test_admin_only_routes_refuse_platform_keys(api, tenant, method, path):
    t, _ = tenant
    _, pkey = make_platform_key(api)
    before = api.snapshot(t["id"])
    kw = {"json": {"name": "x"}} if method in ("POST", "PATCH") else {}
    r = api.request(method, path.format(t=t["id"]), key=pkey,
                    headers={"X-Tenant-ID": t["id"]}, **kw)
    assert_error(r, 403)
    assert api.snapshot(t["id"]) == before


def test_tenant_key_with_other_x_tenant_id_is_403(api, tenant, other_tenant):
    a, akey = tenant
    b, _ = other_tenant
    for ref in (b["id"], b["slug"]):
        assert_error(api.get(settings_url(a), key=akey, headers={"X-Tenant-ID": ref}), 403)
        # Path and header both name B: refused either way (403 or 404).
        r = api.get(settings_url(b), key=akey, headers={"X-Tenant-ID": ref})
        assert r.status_code in (403, 404), r.text
        assert_error(r, r.status_code)
    assert_error(api.get(settings_url(a), key=akey,
                         headers={"X-Tenant-ID": "tenant_unknown0000"}), 403)
    # Naming itself is fine, by id or slug.
    for ref in (a["id"], a["slug"]):
        r = api.get(settings_url(a), key=akey, headers={"X-Tenant-ID": ref})
        assert r.status_code == 200, r.text


def test_platform_key_cannot_manage_tenants(api, tenant):
    """Platform keys act on the OpenAI endpoints only (DESIGN.md section 3);
    the management routes under /v1/tenants/{t} refuse them, with or
    without X-Tenant-ID."""
    t, _ = tenant
    _, pkey = make_platform_key(api)
    before = api.snapshot(t["id"])
    for hdr in ({}, {"X-Tenant-ID": t["id"]}, {"X-Tenant-ID": t["slug"]}):
        assert_error(api.get(settings_url(t), key=pkey, headers=hdr), 403)
        assert_error(api.patch(settings_url(t), key=pkey, headers=hdr,
                               json={"rag_top_k": 2}), 403)
    assert api.snapshot(t["id"]) == before


OPENAI_PROBE = "/models"


@pytest.fixture
def openai_endpoint(api):
    """The tenant-scoped OpenAI endpoint platform keys act on (GET
    /v1/models, 'any key' in the contract). Skips, saying why, while the
    server has none."""
    r = api.aget(OPENAI_PROBE, headers={"X-Tenant-ID": "x"})
    if r.status_code == 404 and "no such endpoint" in r.text:
        pytest.skip("the server has no OpenAI-compatible endpoint yet (GET /v1/models): "
                    "platform key + X-Tenant-ID cannot be exercised over HTTP")
    return OPENAI_PROBE


def test_platform_key_acts_for_named_tenant(api, openai_endpoint, tenant):
    t, _ = tenant
    _, pkey = make_platform_key(api)
    for ref in (t["id"], t["slug"]):
        r = api.get(openai_endpoint, key=pkey, headers={"X-Tenant-ID": ref})
        assert r.status_code == 200, r.text


def test_platform_key_refusals(api, openai_endpoint, tenant):
    t, _ = tenant
    kid, pkey = make_platform_key(api)
    # No X-Tenant-ID: a platform key is no one by itself.
    err = assert_error(api.get(openai_endpoint, key=pkey), 400)
    assert "x-tenant-id" in err["message"].lower()
    # Empty, unknown or malformed tenant.
    for bad in ("", "tenant_doesnotexist1", "no_such_slug_zz", "x' OR '1'='1",
                "../" + t["slug"], t["slug"].upper(), "a" * 300):
        r = api.get(openai_endpoint, key=pkey, headers={"X-Tenant-ID": bad})
        assert r.status_code in (400, 404), (bad, r.status_code, r.text)
        assert_error(r, r.status_code)
    # Suspended tenant.
    api.apatch(f"/tenants/{t['id']}", json={"status": "suspended"})
    err = assert_error(api.get(openai_endpoint, key=pkey,
                               headers={"X-Tenant-ID": t["id"]}), 403)
    assert "suspend" in err["message"].lower()
    api.apatch(f"/tenants/{t['id']}", json={"status": "active"})
    assert api.get(openai_endpoint, key=pkey,
                   headers={"X-Tenant-ID": t["id"]}).status_code == 200
    # Deleted tenant, then a revoked platform key.
    api.adelete(f"/tenants/{t['id']}")
    r = api.get(openai_endpoint, key=pkey, headers={"X-Tenant-ID": t["id"]})
    assert_error(r, 404)
    api.adelete(f"/admin/platform-keys/{kid}")
    u, _ = api.create_tenant()
    assert_error(api.get(openai_endpoint, key=pkey, headers={"X-Tenant-ID": u["id"]}), 401)


def test_tenant_key_x_tenant_id_on_openai_endpoint(api, openai_endpoint, tenant,
                                                   other_tenant):
    a, akey = tenant
    b, _ = other_tenant
    assert api.get(openai_endpoint, key=akey).status_code == 200
    assert api.get(openai_endpoint, key=akey, headers={"X-Tenant-ID": a["slug"]}
                   ).status_code == 200
    for ref in (b["id"], b["slug"], "tenant_unknown0000"):
        assert_error(api.get(openai_endpoint, key=akey, headers={"X-Tenant-ID": ref}), 403)


def test_revoked_platform_key_is_401_everywhere(api, tenant):
    t, _ = tenant
    kid, pkey = make_platform_key(api)
    assert api.adelete(f"/admin/platform-keys/{kid}").status_code == 200
    for path in ("/tenants", settings_url(t), "/admin/audit"):
        assert_error(api.get(path, key=pkey, headers={"X-Tenant-ID": t["id"]}), 401)


def test_ip_allowlist(api):
    t, key = api.create_tenant(tier="enterprise")
    r = api.apatch(settings_url(t), json={"ip_allowlist": ["10.0.0.0/8", "192.0.2.0/24"]})
    assert r.status_code == 200, r.text
    err = assert_error(api.get(settings_url(t), key=key), 403)
    assert "ip" in err["message"].lower() or "address" in err["message"].lower()
    # The admin is not bound by a tenant's allowlist.
    assert api.aget(settings_url(t)).status_code == 200
    r = api.apatch(settings_url(t), json={"ip_allowlist": ["10.0.0.0/8", "127.0.0.0/8"]})
    assert r.status_code == 200, r.text
    assert api.get(settings_url(t), key=key).status_code == 200
    r = api.apatch(settings_url(t), json={"ip_allowlist": ["127.0.0.1/32"]})
    assert api.get(settings_url(t), key=key).status_code == 200
    r = api.apatch(settings_url(t), json={"ip_allowlist": []})
    assert r.status_code == 200
    assert api.get(settings_url(t), key=key).status_code == 200


def test_random_keys_never_authenticate(api, tenant):
    t, _ = tenant
    for prefix in ("sk-admin-", "sk-platform-", f"sk-{t['slug']}-", "sk-trial-"):
        assert_error(api.get(settings_url(t), key=prefix + rand62(43),
                             headers={"X-Tenant-ID": t["id"]}), 401)
