"""Tenants' LoRA adapters on the serving path: a tenant with an active
adapter gets it on every request (greedy output equal to `synapsex run
--lora`), other tenants never do (alone or batched together), responses say
which version served them, a version activated while a request streams
moves only the next requests, model ids "<base>:<slug>-vN" pin a version of
the caller's own adapter only, /v1/models shows the adapter to its tenant
alone, and an upstream configured with lora= is sent the adapter's name.
Fixtures: tiny-llama-f32 ("tiny") with lora-tiny-llama.gguf."""
import concurrent.futures as cf
import json
import os
import struct
import subprocess
import tempfile
import threading

import pytest
import requests

from conftest import REPO, Api, assert_error
from mock_upstream import MockUpstream, fixture_model, start_synapsex, stop_synapsex

BASE = fixture_model("tiny-llama-f32.gguf")
LORA = fixture_model("lora-tiny-llama.gguf")
pytestmark = pytest.mark.skipif(BASE is None or LORA is None,
                                reason="skipped: fixtures absent")
OCTET = {"Content-Type": "application/octet-stream"}
PROMPT = "Once upon a time"
BIN = os.path.join(REPO, os.environ.get("SYNAPSEX_BIN", "build/synapsex"))


def with_alpha(data, alpha):
    """The adapter with another adapter.lora.alpha: a second, different
    version of the same adapter (its update scaled by alpha / 8)."""
    i = data.find(b"adapter.lora.alpha") + len(b"adapter.lora.alpha")
    assert struct.unpack_from("<I", data, i)[0] == 6  # f32
    return data[:i + 4] + struct.pack("<f", alpha) + data[i + 8:]


@pytest.fixture(scope="module")
def files():
    with open(LORA, "rb") as f:
        v1 = f.read()
    v2 = with_alpha(v1, 24.0)
    d = tempfile.mkdtemp(prefix="sx-lora-")
    p2 = os.path.join(d, "lora-v2.gguf")
    with open(p2, "wb") as f:
        f.write(v2)
    return {"v1": v1, "v2": v2, "v1_path": LORA, "v2_path": p2}


@pytest.fixture(scope="module")
def srv():
    s = start_synapsex(["--model", f"tiny={BASE};context=2048;max_running=16"])
    yield s
    stop_synapsex(s)


def upload(sapi, tid, data, activate=True, base="tiny"):
    r = sapi.request("POST", f"/tenants/{tid}/adapters", key=sapi.srv.admin_key,
                     headers=OCTET, data=data,
                     params={"base_model": base, "activate": "true" if activate else "false"})
    assert r.status_code == 201, r.text
    return r.json()


def cli_run(lora_path, max_tokens):
    args = [BIN, "run", "--model", BASE, "--prompt", PROMPT, "--max-tokens",
            str(max_tokens), "--temperature", "0", "--threads", "1"]
    if lora_path:
        args += ["--lora", lora_path]
    out = subprocess.run(args, capture_output=True, timeout=60, check=True)
    return out.stdout.decode()


def complete(sapi, key, max_tokens=24, model="tiny", **kw):
    r = sapi.post("/completions", key=key, timeout=120, json=dict(
        {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}, **kw))
    assert r.status_code == 200, r.text
    return r.json()


def text(body):
    return body["choices"][0]["text"]


@pytest.fixture(scope="module")
def tenants(sapi, files):
    a, akey = sapi.create_tenant(tier="business")
    b, bkey = sapi.create_tenant(tier="business")
    upload(sapi, a["id"], files["v1"])
    return {"a": a, "akey": akey, "b": b, "bkey": bkey}


def test_adapter_output_matches_cli_and_is_tenant_only(sapi, tenants, files):
    a, akey, bkey = tenants["a"], tenants["akey"], tenants["bkey"]
    ra = complete(sapi, akey)
    rb = complete(sapi, bkey)
    assert text(ra) == cli_run(files["v1_path"], 24)
    assert text(rb) == cli_run(None, 24)
    assert text(ra) != text(rb)
    assert ra["model"] == "tiny" and rb["model"] == "tiny"
    assert ra["meta"]["adapter"] == {"version": "v1", "model_id": f"tiny:{a['slug']}-v1"}
    assert rb["meta"]["adapter"] is None
    # Chat takes it too.
    body = {"model": "tiny", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "hello"}]}
    ca = sapi.post("/chat/completions", key=akey, json=body).json()
    cb = sapi.post("/chat/completions", key=bkey, json=body).json()
    assert ca["meta"]["adapter"]["version"] == "v1" and cb["meta"]["adapter"] is None
    assert ca["choices"][0]["message"]["content"] != cb["choices"][0]["message"]["content"]


def test_platform_key_routes_to_the_tenants_adapter(sapi, tenants):
    r = sapi.apost("/admin/platform-keys", json={"name": "p"})
    assert r.status_code in (200, 201), r.text
    pkey = r.json()["api_key"]
    via = sapi.post("/completions", key=pkey, headers={"X-Tenant-ID": tenants["a"]["id"]},
                    json={"model": "tiny", "prompt": PROMPT, "max_tokens": 24,
                          "temperature": 0})
    assert via.status_code == 200, via.text
    assert text(via.json()) == text(complete(sapi, tenants["akey"]))
    assert via.json()["meta"]["adapter"]["version"] == "v1"


def test_concurrent_tenants_are_isolated(sapi, tenants):
    akey, bkey = tenants["akey"], tenants["bkey"]
    alone_a, alone_b = text(complete(sapi, akey, 48)), text(complete(sapi, bkey, 48))
    keys = [akey, bkey] * 6
    with cf.ThreadPoolExecutor(len(keys)) as ex:
        outs = list(ex.map(lambda k: complete(sapi, k, 48), keys))
    for k, o in zip(keys, outs):
        assert text(o) == (alone_a if k == akey else alone_b)
        assert (o["meta"]["adapter"] is not None) == (k == akey)


def stream_events(resp):
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:]
            yield "[DONE]" if data == b"[DONE]" else json.loads(data)


def test_activation_mid_stream_and_rollback(sapi, files):
    t, key = sapi.create_tenant(tier="business")
    tid, slug = t["id"], t["slug"]
    upload(sapi, tid, files["v1"])
    upload(sapi, tid, files["v2"], activate=False)
    n = 800
    v1_alone = text(complete(sapi, key, n, model=f"tiny:{slug}-v1"))
    v2_alone = text(complete(sapi, key, n, model=f"tiny:{slug}-v2"))
    assert v1_alone != v2_alone
    overlapped = False
    for _ in range(5):
        sapi.apost(f"/tenants/{tid}/adapters/v1/activate")
        done = threading.Event()
        got = {"text": "", "metas": []}
        first = threading.Event()
        resp = requests.post(sapi.srv.base + "/completions", stream=True, timeout=120,
                             headers={"Authorization": f"Bearer {key}"},
                             json={"model": "tiny", "prompt": PROMPT, "max_tokens": n,
                                   "temperature": 0, "stream": True})
        assert resp.status_code == 200

        def reader():
            for ev in stream_events(resp):
                if ev == "[DONE]":
                    break
                if "meta" in ev:
                    got["metas"].append(ev["meta"]["adapter"])
                got["text"] += ev["choices"][0]["text"]
                first.set()
            done.set()
            first.set()

        th = threading.Thread(target=reader)
        th.start()
        assert first.wait(120)
        r = sapi.apost(f"/tenants/{tid}/adapters/v2/activate")
        assert r.status_code == 200, r.text
        still_running = not done.is_set()
        nxt = complete(sapi, key, 24)
        th.join(120)
        assert not th.is_alive()
        assert nxt["meta"]["adapter"]["version"] == "v2"
        assert text(nxt) == v2_alone[:len(text(nxt))]
        # The stream started on v1 and finished on it: first and last
        # chunks say so, and the text is v1's whole output.
        assert len(got["metas"]) == 2, got["metas"]
        assert all(m["version"] == "v1" for m in got["metas"])
        assert got["text"] == v1_alone
        overlapped = overlapped or still_running
        if overlapped:
            break
    assert overlapped, "the stream always ended before the activation; nothing was tested"
    # Rollback: v1 again for new requests.
    assert sapi.apost(f"/tenants/{tid}/adapters/v1/activate").status_code == 200
    back = complete(sapi, key, 24)
    assert back["meta"]["adapter"]["version"] == "v1"
    assert text(back) == v1_alone[:len(text(back))]


def test_models_list_and_adapter_ids(sapi, tenants, files):
    a, akey, b, bkey = tenants["a"], tenants["akey"], tenants["b"], tenants["bkey"]
    aid = f"tiny:{a['slug']}-v1"
    ids_a = [m["id"] for m in sapi.get("/models", key=akey).json()["data"]]
    ids_b = [m["id"] for m in sapi.get("/models", key=bkey).json()["data"]]
    ids_admin = [m["id"] for m in sapi.get("/models", key=sapi.srv.admin_key).json()["data"]]
    assert ids_a == ["tiny", aid]
    assert ids_b == ["tiny"] and ids_admin == ["tiny"]
    # Admin naming the tenant sees it too.
    r = sapi.get("/models", key=sapi.srv.admin_key, headers={"X-Tenant-ID": a["id"]})
    assert aid in [m["id"] for m in r.json()["data"]]
    m = sapi.get(f"/models/{aid}", key=akey)
    assert m.status_code == 200 and m.json()["parent"] == "tiny", m.text
    assert_error(sapi.get(f"/models/{aid}", key=bkey), 404)
    # Naming the id: the owner gets that version and the id back as model.
    r = complete(sapi, akey, model=aid)
    assert r["model"] == aid and r["meta"]["adapter"]["model_id"] == aid
    assert text(r) == text(complete(sapi, akey))
    # Another tenant naming it, or a version that does not exist: 404, and
    # never the other tenant's adapter.
    for k, name in [(bkey, aid), (akey, f"tiny:{a['slug']}-v9"),
                    (akey, f"tiny:{b['slug']}-v1"), (akey, f"nope:{a['slug']}-v1"),
                    (akey, f"tiny:{a['slug']}-v01")]:
        err = assert_error(sapi.post("/completions", key=k, json={
            "model": name, "prompt": PROMPT, "max_tokens": 2}), 404, "model")
        assert err["code"] == "model_not_found"


def test_stream_meta_first_and_last(sapi, tenants):
    r = requests.post(sapi.srv.base + "/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {tenants['akey']}"},
                      json={"model": "tiny", "max_tokens": 6, "temperature": 0,
                            "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    evs = [e for e in stream_events(r) if e != "[DONE]"]
    assert evs[0]["meta"]["adapter"]["version"] == "v1"
    assert evs[-1]["choices"][0]["finish_reason"] and evs[-1]["meta"]["adapter"]
    assert all("meta" not in e for e in evs[1:-1])


def test_upstream_names_the_adapter(files):
    mock = MockUpstream()
    s = start_synapsex(["--upstream", f"fleet={mock.url};model=Qwen/Qwen2-7B;lora=slug",
                        "--upstream", f"plain={mock.url}"])
    try:
        api = Api(s)
        t, key = api.create_tenant(tier="business")
        u, ukey = api.create_tenant(tier="business")
        v = upload(api, t["id"], files["v1"], base="fleet")
        assert v["model_id"] == f"fleet:{t['slug']}-v1" and v["rank"] == 4
        # A model file is not an adapter even for an upstream.
        r = api.request("POST", f"/tenants/{t['id']}/adapters", key=s.admin_key,
                        headers=OCTET, data=b"GGUF junk", params={"base_model": "fleet"})
        assert_error(r, 400)
        # An upstream without lora= takes no adapters.
        r = api.request("POST", f"/tenants/{t['id']}/adapters", key=s.admin_key,
                        headers=OCTET, data=files["v1"], params={"base_model": "plain"})
        assert_error(r, 400, "base_model")
        body = {"model": "fleet", "max_tokens": 5,
                "messages": [{"role": "user", "content": "hello"}]}
        r = api.post("/chat/completions", key=key, json=body)
        assert r.status_code == 200, r.text
        assert mock.last()["body"]["model"] == f"{t['slug']}-v1"
        assert r.json()["meta"]["adapter"] == {
            "version": "v1", "model_id": f"fleet:{t['slug']}-v1",
            "upstream_model": f"{t['slug']}-v1"}
        assert r.json()["model"] == "fleet"
        r = api.post("/chat/completions", key=ukey, json=body)
        assert mock.last()["body"]["model"] == "Qwen/Qwen2-7B"
        assert r.json()["meta"]["adapter"] is None
        # A new version moves the name; pinning the old id still works.
        upload(api, t["id"], files["v2"], base="fleet")
        api.post("/chat/completions", key=key, json=body)
        assert mock.last()["body"]["model"] == f"{t['slug']}-v2"
        r = api.post("/chat/completions", key=key,
                     json=dict(body, model=f"fleet:{t['slug']}-v1"))
        assert r.status_code == 200 and mock.last()["body"]["model"] == f"{t['slug']}-v1"
        ids = [m["id"] for m in api.get("/models", key=key).json()["data"]]
        assert f"fleet:{t['slug']}-v2" in ids
        assert_error(api.post("/chat/completions", key=ukey, json=dict(
            body, model=f"fleet:{t['slug']}-v1")), 404, "model")
    finally:
        stop_synapsex(s)
        mock.close()


def test_bad_lora_option_stops_the_start():
    binary = BIN
    out = subprocess.run([binary, "serve", "--listen", "127.0.0.1:0", "--data",
                          tempfile.mkdtemp(prefix="sx-bad-"), "--upstream",
                          "x=http://127.0.0.1:9/v1;lora=fixed-name"],
                         capture_output=True, timeout=30)
    assert out.returncode != 0
    assert b"{slug}" in out.stdout + out.stderr
