"""Keys: extra tenant keys, listing (prefix only), revocation effective on the
next request, rotation with an overlap window, platform keys."""
import time

from conftest import assert_error, key_items

ROTATE = "/tenants/{t}/keys/{k}/rotate"


def secret_of(body):
    for f in ("api_key", "key", "secret"):
        if isinstance(body.get(f), str) and body[f].startswith("sk-"):
            return body[f]
    raise AssertionError(f"no key secret in {body}")


def can_read(api, t, key):
    return api.get(f"/tenants/{t['id']}/settings", key=key).status_code == 200


def test_list_shows_prefix_only(api, tenant):
    t, key = tenant
    r = api.aget(f"/tenants/{t['id']}/keys")
    assert r.status_code == 200, r.text
    items = key_items(r.json())
    assert len(items) == 1
    k = items[0]
    assert k["id"] and k.get("prefix")
    assert key.startswith(k["prefix"]) and len(k["prefix"]) < len(key) - 30
    secret = key.rsplit("-", 1)[-1]
    assert key not in r.text and secret not in r.text
    assert secret[:20] not in r.text


def test_create_extra_key_both_work(api, tenant):
    t, key = tenant
    r = api.apost(f"/tenants/{t['slug']}/keys", json={})
    assert r.status_code in (200, 201), r.text
    extra = secret_of(r.json())
    assert extra != key and extra.startswith("sk-")
    assert not extra.startswith(("sk-admin-", "sk-platform-"))
    assert len(extra.rsplit("-", 1)[-1]) >= 43
    assert can_read(api, t, key) and can_read(api, t, extra)
    items = key_items(api.aget(f"/tenants/{t['id']}/keys").json())
    assert len(items) == 2
    assert extra not in api.aget(f"/tenants/{t['id']}/keys").text


def test_revoke_takes_effect_on_next_request(api, tenant):
    t, key = tenant
    r = api.apost(f"/tenants/{t['id']}/keys", json={})
    extra, extra_id = secret_of(r.json()), r.json()["id"]
    assert can_read(api, t, extra)
    r = api.adelete(f"/tenants/{t['id']}/keys/{extra_id}")
    assert r.status_code in (200, 204), r.text
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=extra), 401)
    assert can_read(api, t, key), "revoking one key must not touch the others"
    # Revoked keys leave the active listing or are marked revoked.
    items = key_items(api.aget(f"/tenants/{t['id']}/keys").json())
    live = [k for k in items if k["id"] == extra_id and not k.get("revoked_at")
            and k.get("status", "active") == "active"]
    assert not live, items
    # Revoking again or an unknown key id is 404.
    assert api.adelete(f"/tenants/{t['id']}/keys/{extra_id}").status_code in (404, 200, 204)
    assert_error(api.adelete(f"/tenants/{t['id']}/keys/key_doesnotexist"), 404)


def test_revoke_the_creation_key(api, tenant):
    t, key = tenant
    kid = key_items(api.aget(f"/tenants/{t['id']}/keys").json())[0]["id"]
    assert api.adelete(f"/tenants/{t['id']}/keys/{kid}").status_code in (200, 204)
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=key), 401)


def test_key_of_another_tenant_cannot_be_revoked_through_mine(api, tenant, other_tenant):
    a, _ = tenant
    b, bkey = other_tenant
    bkid = key_items(api.aget(f"/tenants/{b['id']}/keys").json())[0]["id"]
    assert_error(api.adelete(f"/tenants/{a['id']}/keys/{bkid}"), 404)
    assert can_read(api, b, bkey)


def test_keys_routes_are_admin_only(api, tenant):
    t, key = tenant
    assert_error(api.get(f"/tenants/{t['id']}/keys", key=key), 403)
    assert_error(api.post(f"/tenants/{t['id']}/keys", key=key, json={}), 403)
    kid = key_items(api.aget(f"/tenants/{t['id']}/keys").json())[0]["id"]
    assert_error(api.delete(f"/tenants/{t['id']}/keys/{kid}", key=key), 403)
    assert can_read(api, t, key)
    assert len(key_items(api.aget(f"/tenants/{t['id']}/keys").json())) == 1


def rotate(api, t, kid, overlap):
    r = api.apost(ROTATE.format(t=t["id"], k=kid), json={"overlap_seconds": overlap})
    assert r.status_code in (200, 201), r.text
    return secret_of(r.json())


def test_rotate_with_overlap_keeps_old_key_for_the_window(api, tenant):
    t, old = tenant
    kid = key_items(api.aget(f"/tenants/{t['id']}/keys").json())[0]["id"]
    new = rotate(api, t, kid, 2)
    assert new != old
    assert can_read(api, t, new)
    assert can_read(api, t, old), "old key must work during the overlap"
    time.sleep(3.2)
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=old), 401)
    assert can_read(api, t, new)


def test_rotate_without_overlap_stops_old_key_at_once(api, tenant):
    t, old = tenant
    kid = key_items(api.aget(f"/tenants/{t['id']}/keys").json())[0]["id"]
    new = rotate(api, t, kid, 0)
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=old), 401)
    assert can_read(api, t, new)


def test_rotate_validation(api, tenant):
    t, old = tenant
    kid = key_items(api.aget(f"/tenants/{t['id']}/keys").json())[0]["id"]
    before = api.snapshot(t["id"])
    for body in ({"overlap_seconds": -1}, {"overlap_seconds": "60"},
                 {"overlap_seconds": 10 ** 12}, {"overlap": 5}):
        assert_error(api.apost(ROTATE.format(t=t["id"], k=kid), json=body), 400)
    assert_error(api.apost(ROTATE.format(t=t["id"], k="key_nope"),
                           json={"overlap_seconds": 0}), 404)
    assert api.snapshot(t["id"]) == before
    assert can_read(api, t, old)


# ---------------------------------------------------------------- platform keys

def make_platform_key(api, name="ci"):
    r = api.apost("/admin/platform-keys", json={"name": name})
    assert r.status_code in (200, 201), r.text
    body = r.json()
    key = secret_of(body)
    assert key.startswith("sk-platform-")
    assert len(key.rsplit("-", 1)[-1]) >= 43
    return body["id"], key


def test_platform_keys_create_list_delete(api):
    kid, key = make_platform_key(api)
    r = api.aget("/admin/platform-keys")
    assert r.status_code == 200, r.text
    items = key_items(r.json())
    mine = [k for k in items if k["id"] == kid]
    assert len(mine) == 1 and key.startswith(mine[0]["prefix"])
    assert key not in r.text and key.rsplit("-", 1)[-1] not in r.text
    r = api.adelete(f"/admin/platform-keys/{kid}")
    assert r.status_code in (200, 204), r.text
    t, _ = api.create_tenant()
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=key,
                         headers={"X-Tenant-ID": t["id"]}), 401)
    assert_error(api.adelete("/admin/platform-keys/pk_doesnotexist"), 404)


def test_platform_key_routes_admin_only(api, tenant):
    t, tkey = tenant
    _, pkey = make_platform_key(api)
    for key, hdr in ((tkey, {}), (pkey, {"X-Tenant-ID": t["id"]}), (pkey, {})):
        assert_error(api.get("/admin/platform-keys", key=key, headers=hdr), 403)
        assert_error(api.post("/admin/platform-keys", key=key, headers=hdr,
                              json={"name": "x"}), 403)
    n = len(key_items(api.aget("/admin/platform-keys").json()))
    assert_error(api.post("/admin/platform-keys", key=tkey, json={}), 403)
    assert len(key_items(api.aget("/admin/platform-keys").json())) == n


def test_platform_key_create_validation(api):
    n = len(key_items(api.aget("/admin/platform-keys").json()))
    assert_error(api.apost("/admin/platform-keys", json={"name": 5}), 400, param="name")
    assert_error(api.apost("/admin/platform-keys", json={"scope": "all"}), 400,
                 param="scope")
    assert len(key_items(api.aget("/admin/platform-keys").json())) == n
