"""The spec's Python `requests` examples (tests/api/examples/, copied from
spec/multi-tenancy.txt and re-indented) run unchanged against the server,
only the base URL, keys and tenant id coming from the environment, and print
what the documentation shows."""
import os
import re
import subprocess

import pytest

from conftest import SENSITIVE, assert_error

HERE = os.path.join(os.path.dirname(__file__), "examples")


def run_example(api, name, tenant_id=None):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "SYNAPSEX_BASE": api.srv.base,
           "SYNAPSEX_ADMIN_KEY": api.srv.admin_key,
           "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
           "NO_PROXY": "*"}
    if tenant_id:
        env["SYNAPSEX_TENANT_ID"] = tenant_id
    p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, name)], env=env,
                       capture_output=True, timeout=60)
    out = p.stdout.decode("utf-8")
    assert p.returncode == 0, f"{name} failed:\n{out}\n{p.stderr.decode()}"
    assert not p.stderr, p.stderr.decode()
    return out


@pytest.fixture(scope="module")
def spec_tenant(api):
    """The spec's tenant, created by the spec's create example."""
    SENSITIVE.add_text("admin@farmacia.com")
    SENSITIVE.add_text("You are a pharmacy assistant for Farmácia Santa Casa.")
    out = run_example(api, "create_tenant.py")
    m = re.fullmatch(r"Tenant ID: (tenant_\S+)\nAPI Key: (sk-\S+)\n", out)
    assert m, f"create example printed {out!r}"
    SENSITIVE.add_secret(m.group(2))
    return m.group(1), m.group(2)


def test_create_example(api, spec_tenant):
    tid, key = spec_tenant
    # The spec shows "sk-farmacia-santa-casa-xxx": the key names the tenant.
    assert key.startswith("sk-farmacia"), key
    t = api.aget(f"/tenants/{tid}").json()
    assert t["name"] == "Farmácia Santa Casa"
    assert t["slug"] == "farmacia_santa_casa" and t["tier"] == "pro"
    assert t["contact_email"] == "admin@farmacia.com"
    s = api.settings("farmacia_santa_casa")
    assert s["default_model"] == "synapsex-chat"
    assert s["max_tokens_per_request"] == 2048
    assert s["enable_rerank"] is True and s["rerank_tier"] == "quantum_cpu"
    assert s["custom_system_prompt"] == \
        "You are a pharmacy assistant for Farmácia Santa Casa."
    assert api.get(f"/tenants/{tid}/settings", key=key).status_code == 200


def test_list_example(api, spec_tenant):
    api.create_tenant(tier="free")  # must not be listed under tier=pro
    out = run_example(api, "list_tenants.py")
    lines = out.splitlines()
    assert "Farmácia Santa Casa (farmacia_santa_casa): pro" in lines, out
    for line in lines:
        assert re.fullmatch(r".+ \([a-z0-9_-]+\): pro", line), line
    assert len(lines) <= 50


def test_update_example(api):
    t, key = api.create_tenant(tier="pro")
    out = run_example(api, "update_tenant.py", t["id"])
    assert out == ""
    g = api.aget(f"/tenants/{t['id']}").json()
    assert g["tier"] == "business"
    assert api.settings(t["id"])["rerank_tier"] == "quantum_gpu"
    assert api.get(f"/tenants/{t['id']}/settings", key=key).status_code == 200


def test_settings_patch_and_get_examples(api):
    t, _ = api.create_tenant(tier="pro")
    for w in ("You are a helpful assistant for...", "healthcare", "products",
              "orders", "competitors", "legal_advice"):
        SENSITIVE.add_text(w)
    assert run_example(api, "patch_settings.py", t["id"]) == ""
    out = run_example(api, "get_settings.py", t["id"])
    assert out == "Model: synapsex-chat-32k\nRerank: quantum_cpu\n", out
    s = api.settings(t["id"])
    assert s["allowed_topics"] == ["healthcare", "products", "orders"]
    assert s["rate_limit_rpm"] == 150 and s["daily_token_limit"] == 500000


def test_delete_example(api):
    t, key = api.create_tenant(tier="pro")
    assert run_example(api, "delete_tenant.py", t["id"]) == ""
    assert_error(api.aget(f"/tenants/{t['id']}"), 404)
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=key), 401)


def test_examples_accept_slug_in_place_of_id(api):
    """{t} accepts the slug, so the id-taking examples work with slugs."""
    t, _ = api.create_tenant(tier="pro")
    run_example(api, "patch_settings.py", t["slug"])
    out = run_example(api, "get_settings.py", t["slug"])
    assert out == "Model: synapsex-chat-32k\nRerank: quantum_cpu\n"
    run_example(api, "update_tenant.py", t["slug"])
    assert api.aget(f"/tenants/{t['id']}").json()["tier"] == "business"
    run_example(api, "delete_tenant.py", t["slug"])
    assert_error(api.aget(f"/tenants/{t['id']}"), 404)
