"""Tenant settings: GET/PATCH at /v1/tenants/{t}/settings, every field the
spec documents with good and bad values, merge semantics, tenant read-only
access, and that a change is visible to the very next request."""
import pytest

from conftest import assert_error

# field -> (good values, bad values). Bad values are wrong types or out of
# the documented range.
FIELDS = {
    "default_model": (["synapsex-chat-32k", "synapsex-chat"], [42, True, ["m"], {}]),
    "max_tokens_per_request": ([4096, 1, 2048], [-1, 0, "2048", 2.5, True]),
    "default_temperature": ([0.7, 0, 0.0, 1, 2.0], [-0.1, 2.5, "hot", True, [0.7]]),
    "enable_rerank": ([True, False], ["yes", 1, 0, "true"]),
    "rerank_tier": (["classic", "quantum_cpu", "quantum_gpu"], ["bogus", 3, True, ""]),
    "rerank_k": ([4, 1, 2], [0, -3, "4", 1.5, True]),
    "custom_system_prompt": (["You are a helpful assistant for settings tests."],
                             [42, ["a"], {"x": 1}, True]),
    "allowed_topics": ([["healthcare", "products", "orders"], []],
                       ["healthcare", [1, 2], {"a": 1}, [["x"]], 7]),
    "blocked_topics": ([["competitors", "legal_advice"], []],
                       ["competitors", [True], 3.5, [None]]),
    "enable_rag": ([True, False], ["true", 0, 1]),
    "rag_top_k": ([5, 1, 20], [0, -1, "5", 2.5, False]),
    "rag_threshold": ([0.7, 0, 1, 0.25], [-0.1, 1.5, "0.7", True]),
    "rate_limit_rpm": ([150, 1, 10000], [-1, "150", 1.5, True]),
    "daily_token_limit": ([500000, 1, 10 ** 9], [-1, "x", 2.5, True]),
}
# JSON null is left out of the bad values: it may mean "back to the tier
# default", which the contract leaves open.

SPEC_PATCH = {
    "default_model": "synapsex-chat-32k",
    "max_tokens_per_request": 4096,
    "default_temperature": 0.7,
    "enable_rerank": True,
    "rerank_tier": "quantum_cpu",
    "rerank_k": 4,
    "custom_system_prompt": "You are a helpful assistant for...",
    "allowed_topics": ["healthcare", "products", "orders"],
    "blocked_topics": ["competitors", "legal_advice"],
    "enable_rag": True,
    "rag_top_k": 5,
    "rag_threshold": 0.7,
    "rate_limit_rpm": 150,
    "daily_token_limit": 500000,
}


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def test_get_has_every_documented_field(api, tenant):
    t, _ = tenant
    s = api.settings(t["id"])
    for f in FIELDS:
        assert f in s, f"settings lack {f!r}: {s}"
    assert isinstance(s["default_model"], str) and s["default_model"]
    assert s["rerank_tier"] in ("classic", "quantum_cpu", "quantum_gpu")
    assert isinstance(s["enable_rerank"], bool) and isinstance(s["enable_rag"], bool)


def test_spec_patch_round_trips(api, tenant):
    t, _ = tenant
    r = api.apatch(f"/tenants/{t['id']}/settings", json=SPEC_PATCH)
    assert r.status_code == 200, r.text
    s = api.settings(t["slug"])
    for k, v in SPEC_PATCH.items():
        assert same(s[k], v), (k, s[k], v)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_field_good_values(api, tenant, field):
    t, _ = tenant
    for v in FIELDS[field][0]:
        r = api.apatch(f"/tenants/{t['id']}/settings", json={field: v})
        assert r.status_code == 200, (field, v, r.text)
        got = api.settings(t["id"])[field]
        assert same(got, v), (field, v, got)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_field_bad_values_are_400_and_change_nothing(api, tenant, field):
    t, _ = tenant
    before = api.settings(t["id"])
    for v in FIELDS[field][1]:
        r = api.apatch(f"/tenants/{t['id']}/settings", json={field: v})
        err = assert_error(r, 400)
        assert err["param"] is not None and field in err["param"], (field, v, err)
        assert field in err["message"], (field, v, err)
    assert api.settings(t["id"]) == before


def test_unknown_field_is_400_naming_it(api, tenant):
    t, _ = tenant
    before = api.settings(t["id"])
    assert_error(api.apatch(f"/tenants/{t['id']}/settings",
                            json={"rerank_tierr": "classic"}), 400, param="rerank_tierr")
    # A bad field in an otherwise good patch rejects the whole patch.
    err = assert_error(api.apatch(f"/tenants/{t['id']}/settings",
                                  json={"rag_top_k": 9, "bogus_option": True}), 400)
    assert "bogus_option" in err["param"] and "bogus_option" in err["message"]
    err = assert_error(api.apatch(f"/tenants/{t['id']}/settings",
                                  json={"rag_top_k": 9, "rag_threshold": 7}), 400)
    assert "rag_threshold" in err["param"]
    assert api.settings(t["id"]) == before


def test_patch_merges(api, tenant):
    t, _ = tenant
    assert api.apatch(f"/tenants/{t['id']}/settings",
                      json={"rag_top_k": 8, "enable_rag": True}).status_code == 200
    assert api.apatch(f"/tenants/{t['id']}/settings",
                      json={"rerank_k": 2}).status_code == 200
    s = api.settings(t["id"])
    assert s["rag_top_k"] == 8 and s["enable_rag"] is True and s["rerank_k"] == 2
    # An empty patch changes nothing.
    before = s
    r = api.apatch(f"/tenants/{t['id']}/settings", json={})
    assert r.status_code == 200, r.text
    assert api.settings(t["id"]) == before


def test_patch_response_is_the_merged_settings(api, tenant):
    t, _ = tenant
    r = api.apatch(f"/tenants/{t['id']}/settings", json={"rag_top_k": 4})
    assert r.status_code == 200
    assert r.json() == api.settings(t["id"])


def limits(api, t):
    return api.aget(f"/tenants/{t['id']}").json()["limits"]


def test_admin_may_grant_beyond_tier(api):
    # The spec's update example gives a business tenant quantum_gpu; an
    # admin may grant it to a free tenant too, and raise limits.
    t, _ = api.create_tenant(tier="free")
    assert "quantum_gpu" not in limits(api, t)["rerank_tiers"]
    r = api.apatch(f"/tenants/{t['id']}/settings",
                   json={"rerank_tier": "quantum_gpu", "rate_limit_rpm": 5000,
                         "daily_token_limit": 50_000_000})
    assert r.status_code == 200, r.text
    s = api.settings(t["id"])
    assert s["rerank_tier"] == "quantum_gpu" and s["rate_limit_rpm"] == 5000
    lim = limits(api, t)
    assert "quantum_gpu" in lim["rerank_tiers"]
    assert lim["requests_per_minute"] == 5000 and lim["tokens_per_day"] == 50_000_000
    # null gives the tier's default back.
    r = api.apatch(f"/tenants/{t['id']}/settings", json={"rate_limit_rpm": None})
    assert r.status_code == 200, r.text
    assert limits(api, t)["requests_per_minute"] == 20


def test_tier_defaults(api):
    """The tier table of DESIGN.md shows through each tenant's limits."""
    want = {"free": (20, 10000, False, "quantum_cpu"),
            "pro": (100, 100000, False, "quantum_gpu"),
            "business": (500, 1000000, True, "quantum_gpu"),
            "enterprise": (None, None, True, None)}
    for tier, (rpm, tpd, training, not_allowed) in want.items():
        t, _ = api.create_tenant(tier=tier)
        lim = limits(api, t)
        if rpm is not None:
            assert lim["requests_per_minute"] == rpm, (tier, lim)
        assert lim["tokens_per_day"] == tpd, (tier, lim)
        assert lim["training"] is training, (tier, lim)
        assert "classic" in lim["rerank_tiers"]
        if not_allowed:
            assert not_allowed not in lim["rerank_tiers"], (tier, lim)
        if tier in ("pro", "business"):
            assert "quantum_cpu" in lim["rerank_tiers"]
        if tier == "enterprise":
            assert "quantum_gpu" in lim["rerank_tiers"]
    # A tier change moves the defaults with it.
    t, _ = api.create_tenant(tier="free")
    api.apatch(f"/tenants/{t['id']}", json={"tier": "business"})
    assert limits(api, t)["requests_per_minute"] == 500


def test_tenant_reads_own_settings_but_cannot_patch(api, tenant):
    t, key = tenant
    r = api.get(f"/tenants/{t['id']}/settings", key=key)
    assert r.status_code == 200
    assert r.json() == api.settings(t["id"])
    r = api.get(f"/tenants/{t['slug']}/settings", key=key)
    assert r.status_code == 200
    before = api.settings(t["id"])
    assert_error(api.patch(f"/tenants/{t['id']}/settings", key=key,
                           json={"rate_limit_rpm": 100000}), 403)
    assert api.settings(t["id"]) == before


def test_change_visible_to_next_request(api, tenant):
    t, key = tenant
    for k in (3, 6, 2):
        assert api.apatch(f"/tenants/{t['id']}/settings",
                          json={"rerank_k": k}).status_code == 200
        assert api.get(f"/tenants/{t['id']}/settings", key=key).json()["rerank_k"] == k


def test_settings_of_unknown_tenant_404(api):
    assert_error(api.aget("/tenants/tenant_zzzzzzzzzz/settings"), 404)
    assert_error(api.apatch("/tenants/no_such_slug_here/settings",
                            json={"rag_top_k": 3}), 404)


def test_ip_allowlist_validation(api):
    t, _ = api.create_tenant(tier="enterprise")
    before = api.settings(t["id"])
    for bad in ("10.0.0.0/8", ["300.1.1.1/8"], ["10.0.0.0/33"], ["abc"], [7],
                ["10.0.0.0/8 "], ["::1/129"]):
        err = assert_error(api.apatch(f"/tenants/{t['id']}/settings",
                                      json={"ip_allowlist": bad}), 400)
        assert "ip_allowlist" in err["param"], (bad, err)
    assert api.settings(t["id"]) == before
    r = api.apatch(f"/tenants/{t['id']}/settings",
                   json={"ip_allowlist": ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]})
    assert r.status_code == 200, r.text
    assert api.settings(t["id"])["ip_allowlist"] == ["10.0.0.0/8", "192.168.1.7/32",
                                                      "::1/128"]
