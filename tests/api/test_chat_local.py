"""OpenAI endpoints over the local engine backend, on the fixture model
tiny-qwen2-q8_0.gguf (../shared/fixtures, or SYNAPSEX_FIXTURES): chat plain
and streamed, completions, embeddings, the context limit, determinism with a
seed, and a client that disconnects mid-stream freeing its sequence."""
import json
import math
import time

import pytest
import requests

from conftest import assert_error
from mock_upstream import start_synapsex, stop_synapsex, tiny_model

MODEL = tiny_model()
pytestmark = pytest.mark.skipif(MODEL is None, reason="skipped: fixtures absent")


@pytest.fixture(scope="module")
def srv():
    s = start_synapsex(["--model", f"synapsex-chat={MODEL}"])
    yield s
    stop_synapsex(s)


@pytest.fixture(scope="module")
def tkey(sapi):
    return sapi.create_tenant(tier="business")


def events(resp):
    out = []
    for line in resp.text.split("\n"):
        if line.startswith("data: "):
            out.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return out


def test_chat_plain(sapi, tkey):
    t, key = tkey
    r = sapi.post("/chat/completions", key=key, json={
        "model": "synapsex-chat", "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "user", "content": "What medications interact with aspirin?"}]})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["model"] == "synapsex-chat" and b["meta"]["backend"] == "local"
    assert b["choices"][0]["finish_reason"] in ("stop", "length")
    u = b["usage"]
    # The ChatML rendering of one user turn is more tokens than the text.
    assert u["prompt_tokens"] > 8 and 1 <= u["completion_tokens"] <= 12
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_greedy_is_deterministic_and_stream_matches(sapi, tkey):
    _, key = tkey
    body = {"model": "synapsex-chat", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me about tea."}]}
    a = sapi.post("/chat/completions", key=key, json=body).json()
    b = sapi.post("/chat/completions", key=key, json=body).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    s = sapi.post("/chat/completions", key=key, json=dict(
        body, stream=True, stream_options={"include_usage": True}))
    ev = events(s)
    assert ev[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in ev[:-1] if c["choices"])
    assert text == a["choices"][0]["message"]["content"]
    assert ev[-2]["usage"] == a["usage"]


def test_seeded_sampling_repeats(sapi, tkey):
    _, key = tkey
    body = {"model": "synapsex-chat", "max_tokens": 10, "temperature": 1.0, "seed": 42,
            "messages": [{"role": "user", "content": "Pick words."}]}
    a = sapi.post("/chat/completions", key=key, json=body).json()
    b = sapi.post("/chat/completions", key=key, json=body).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]


def test_logprobs(sapi, tkey):
    _, key = tkey
    r = sapi.post("/chat/completions", key=key, json={
        "model": "synapsex-chat", "max_tokens": 4, "temperature": 0, "logprobs": True,
        "top_logprobs": 2, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    items = r.json()["choices"][0]["logprobs"]["content"]
    assert 1 <= len(items) <= 4
    for it in items:
        assert it["logprob"] <= 0 and len(it["top_logprobs"]) == 2
        # Greedy: the chosen token is the most likely one.
        assert it["logprob"] == pytest.approx(it["top_logprobs"][0]["logprob"], abs=1e-5)


def test_completions(sapi, tkey):
    _, key = tkey
    r = sapi.post("/completions", key=key, json={"model": "synapsex-chat",
                                                  "prompt": "Once upon a time",
                                                  "max_tokens": 5, "temperature": 0})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["object"] == "text_completion" and b["usage"]["completion_tokens"] <= 5
    assert b["usage"]["prompt_tokens"] == 4


def test_embeddings_unit_length(sapi, tkey):
    _, key = tkey
    r = sapi.post("/embeddings", key=key, json={"model": "synapsex-chat",
                                                 "input": ["aspirin", "warfarin dose"],
                                                 "encoding_format": "float"})
    assert r.status_code == 200, r.text
    d = r.json()["data"]
    assert len(d) == 2 and len(d[0]["embedding"]) == 64
    for item in d:
        assert math.sqrt(sum(x * x for x in item["embedding"])) == pytest.approx(1, 1e-3)
    assert d[0]["embedding"] != d[1]["embedding"]


def test_context_length_exceeded(sapi, tkey):
    _, key = tkey
    r = sapi.post("/chat/completions", key=key, json={
        "model": "synapsex-chat", "messages": [{"role": "user", "content": "tea " * 400}]})
    err = assert_error(r, 400)
    assert err["code"] == "context_length_exceeded" and "256" in err["message"]


def usage_tokens(sapi, tenant_id):
    r = sapi.aget(f"/tenants/{tenant_id}/usage", params={"period": "today"})
    assert r.status_code == 200, r.text
    body = r.json()
    return body.get("completion_tokens", body.get("usage", {}).get("completion_tokens"))


def test_disconnect_mid_stream_frees_the_sequence(sapi):
    t, key = sapi.create_tenant(tier="business")
    r = requests.post(sapi.srv.base + "/chat/completions", stream=True, timeout=10,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "synapsex-chat", "stream": True, "temperature": 1,
                            "max_tokens": 4000,
                            "messages": [{"role": "user",
                                          "content": "Write a long story."}]})
    assert r.status_code == 200
    n = 0
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            n += 1
            if n == 3:
                break
    r.close()
    # The job is cancelled at once: its settled usage stays far below the
    # room it had (256 - prompt), and the next request is served.
    deadline = time.monotonic() + 5
    used = None
    while time.monotonic() < deadline:
        used = usage_tokens(sapi, t["id"])
        if used:
            break
        time.sleep(0.05)
    assert used is not None and 0 < used < 150, f"completion tokens billed: {used}"
    ok = sapi.post("/chat/completions", key=key, json={
        "model": "synapsex-chat", "max_tokens": 3,
        "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_concurrent_streams_share_the_engine_on_2_http_threads():
    """32 streams on a server with 2 HTTP threads: more streams are open at
    once than there are threads (a waiting stream holds none; the engine
    batches their sequences), and every one ends with [DONE]."""
    import re
    import threading

    from conftest import Api

    s = start_synapsex(["--model", f"synapsex-chat={MODEL}", "--http-threads", "2"])
    try:
        api = Api(s)
        _, key = api.create_tenant(tier="enterprise", settings={"rate_limit_rpm": 100000})
        results, lock = [], threading.Lock()

        def one(i):
            r = requests.post(s.base + "/chat/completions", timeout=60,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"model": "synapsex-chat", "stream": True, "max_tokens": 24,
                                    "temperature": 0, "messages": [
                                        {"role": "user", "content": f"Story number {i}."}]})
            ok = r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
            with lock:
                results.append(ok or (r.status_code, r.text[:200]))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        for th in threads:
            th.start()
        most = 0
        while any(th.is_alive() for th in threads):
            text = requests.get(s.root + "/metrics", timeout=5,
                                headers={"Authorization": f"Bearer {s.admin_key}"}).text
            m = re.search(r"^synapsex_http_streams_open (\d+)", text, re.M)
            most = max(most, int(m.group(1)) if m else 0)
            time.sleep(0.01)
        for th in threads:
            th.join()
        assert results.count(True) == 32, [x for x in results if x is not True][:3]
        assert most > 2, f"at most {most} streams were open at once"
    finally:
        stop_synapsex(s)
