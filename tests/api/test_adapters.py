"""Tenant LoRA adapters over HTTP: upload of a raw GGUF body (validated
against the base model, above the 1 MiB JSON limit), versions, activation and
rollback, admin-only access, and the purge of a deleted tenant's files. Uses
the fixture models tiny-llama-f32 ("tiny") and tiny-qwen2-q8_0 ("qwen")."""
import os

import pytest

from conftest import assert_error
from mock_upstream import fixtures_dir, start_synapsex, stop_synapsex

FIX = fixtures_dir()
pytestmark = pytest.mark.skipif(FIX is None, reason="skipped: fixtures absent")
OCTET = {"Content-Type": "application/octet-stream"}


def model(name):
    return os.path.join(FIX, "models", name)


@pytest.fixture(scope="module")
def srv():
    s = start_synapsex(["--model", f"tiny={model('tiny-llama-f32.gguf')}",
                        "--model", f"qwen={model('tiny-qwen2-q8_0.gguf')}"])
    yield s
    stop_synapsex(s)


def adapter(name):
    with open(model(name), "rb") as f:
        return f.read()


def upload(sapi, tid, data, base="tiny", key=None, headers=OCTET, **params):
    params = dict(params)
    if base:
        params["base_model"] = base
    return sapi.request("POST", f"/tenants/{tid}/adapters", key=key or sapi.srv.admin_key,
                        headers=headers, data=data, params=params)


def test_versions_activation_rollback(sapi):
    t, key = sapi.create_tenant(tier="business")
    tid = t["id"]
    r = upload(sapi, tid, adapter("lora-tiny-llama.gguf"))
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert v1["version"] == "v1" and v1["active"] is True
    assert v1["base_model"] == "tiny" and v1["rank"] == 4 and v1["alpha"] == 8
    assert v1["model_id"] == f"tiny:{t['slug']}-v1"
    assert len(v1["sha256"]) == 64 and v1["size_bytes"] == 41024
    # By slug too; not activated on request.
    r = upload(sapi, t["slug"], adapter("lora-tiny-llama.gguf"), activate="false")
    assert r.status_code == 201, r.text
    assert r.json()["version"] == "v2" and r.json()["active"] is False
    lst = sapi.aget(f"/tenants/{tid}/adapters").json()
    assert [v["version"] for v in lst["data"]] == ["v1", "v2"]
    assert lst["active"] == "v1"
    r = sapi.apost(f"/tenants/{tid}/adapters/v2/activate")
    assert r.status_code == 200 and r.json()["active"] is True, r.text
    assert sapi.aget(f"/tenants/{tid}/adapters").json()["active"] == "v2"
    # Rollback.
    r = sapi.apost(f"/tenants/{tid}/adapters/1/activate")
    assert r.status_code == 200, r.text
    assert sapi.aget(f"/tenants/{tid}/adapters").json()["active"] == "v1"
    assert_error(sapi.apost(f"/tenants/{tid}/adapters/v9/activate"), 404)
    assert_error(sapi.apost(f"/tenants/{tid}/adapters/latest/activate"), 400, "version")
    # The audit log has both kinds of action.
    audit = sapi.aget("/admin/audit").text
    assert "adapter.upload" in audit and "adapter.activate" in audit
    # Admin only: the tenant's own key may not upload, list or activate.
    assert upload(sapi, tid, adapter("lora-tiny-llama.gguf"), key=key).status_code == 403
    assert sapi.get(f"/tenants/{tid}/adapters", key=key).status_code == 403
    assert sapi.post(f"/tenants/{tid}/adapters/v1/activate", key=key).status_code == 403


def test_validation_errors(sapi):
    t, _ = sapi.create_tenant()
    tid = t["id"]
    err = assert_error(upload(sapi, tid, adapter("lora-tiny-qwen2.gguf")), 400)
    assert "architecture" in err["message"]
    err = assert_error(upload(sapi, tid, b"not a gguf file at all"), 400)
    assert "gguf" in err["message"].lower()
    assert_error(upload(sapi, tid, adapter("lora-tiny-llama.gguf"), base="nope"), 400,
                 "base_model", ["nope"])
    assert_error(upload(sapi, tid, adapter("lora-tiny-llama.gguf"),
                        headers={"Content-Type": "application/json"}), 400,
                 words=["octet-stream"])
    assert_error(upload(sapi, tid, b"", base="tiny"), 400, words=["empty"])
    # Above the 1 MiB JSON limit the route still reads the body (then rejects
    # what is not an adapter with 400, not 413).
    err = assert_error(upload(sapi, tid, b"GGUF" + b"\0" * (3 << 20)), 400)
    assert "gguf" in err["message"].lower()
    # A model file is not an adapter.
    with open(model("tiny-llama-f32.gguf"), "rb") as f:
        err = assert_error(upload(sapi, tid, f.read()), 400)
    assert "adapter" in err["message"]
    assert sapi.aget(f"/tenants/{tid}/adapters").json()["data"] == []


def test_default_model_and_purge(sapi, srv):
    t, _ = sapi.create_tenant(settings={"default_model": "qwen"})
    tid = t["id"]
    r = upload(sapi, tid, adapter("lora-tiny-qwen2.gguf"), base=None)
    assert r.status_code == 201, r.text
    assert r.json()["base_model"] == "qwen"
    path = os.path.join(srv.data_dir, "data", "adapters", tid, "1.gguf")
    assert os.path.isfile(path)
    assert sapi.adelete(f"/tenants/{tid}").status_code in (200, 204)
    assert not os.path.exists(path)
    assert sapi.aget(f"/tenants/{tid}/adapters").status_code == 404
