"""OpenAI endpoints over the upstream backend (proxy mode), against a real
synapsex and the loopback mock upstream of mock_upstream.py: shapes, SSE
streaming, tenant settings, validation, routing by key and X-Tenant-ID,
502/504 mapping and cancellation of a relay when the client leaves."""
import json
import shutil
import time

import pytest
import requests

from conftest import SENSITIVE, assert_error, unique_slug
from mock_upstream import REPLY, MockUpstream, start_synapsex, stop_synapsex

UP_KEY = "up-key-" + "Zq8" * 10


@pytest.fixture(scope="module")
def mock():
    m = MockUpstream(key=UP_KEY)
    yield m
    m.close()


@pytest.fixture(scope="module", params=["own_client", "libcurl"])
def srv(request, mock):
    """Every test here runs through both clients of the upstream backend:
    its own HTTP/1.1 client for an IP address, libcurl for a host name."""
    host = "127.0.0.1" if request.param == "own_client" else "localhost"
    url = mock.url.replace("127.0.0.1", host)
    SENSITIVE.add_secret(UP_KEY)
    s = start_synapsex([
        "--http-threads", "4",
        "--upstream", f"synapsex-chat={url};key_env=SX_TEST_UP_KEY;context=4096",
        "--upstream", f"synapsex-slow={url};key_env=SX_TEST_UP_KEY;timeout_ms=1000",
        "--upstream", f"synapsex-dead=http://{host}:1/v1;connect_timeout_ms=500",
    ], {"SX_TEST_UP_KEY": UP_KEY})
    yield s
    stop_synapsex(s)


@pytest.fixture
def tkey(sapi):
    t, key = sapi.create_tenant(tier="pro")
    return t, key


def chat(sapi, key, body, **kw):
    return sapi.post("/chat/completions", key=key, json=body, **kw)


def msgs(text="What medications interact with aspirin?"):
    return [{"role": "user", "content": text}]


def sse_events(resp):
    """Parses an SSE body into a list of data payloads (JSON or '[DONE]')."""
    out = []
    for block in resp.text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_plain_chat_relays_and_reports_usage(sapi, mock, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs()})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "synapsex-chat"
    ch = body["choices"][0]
    assert ch["message"] == {"role": "assistant", "content": REPLY, "refusal": None}
    assert ch["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 11  # the upstream's own count
    assert body["usage"]["total_tokens"] == 11 + body["usage"]["completion_tokens"]
    assert body["meta"]["adapter"] is None and body["meta"]["backend"] == "upstream"
    assert "x-ratelimit-remaining-requests" in r.headers
    up = mock.last()
    assert up["auth"] == f"Bearer {UP_KEY}"
    # A whole response is asked for whole: one body to relay.
    assert up["body"]["stream"] is False and "stream_options" not in up["body"]
    assert up["body"]["model"] == "synapsex-chat"


def test_tenant_settings_are_applied(sapi, mock):
    settings = {"custom_system_prompt": "You answer for a pharmacy chain.",
                "default_temperature": 0.3, "max_tokens_per_request": 50,
                "default_model": "synapsex-chat"}
    _, key = sapi.create_tenant(tier="pro", settings=settings)
    r = chat(sapi, key, {"messages": msgs("hello"), "max_tokens": 1000, "seed": 7,
                         "stop": ["END"]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "synapsex-chat"
    up = mock.last()["body"]
    assert up["messages"][0] == {"role": "system",
                                 "content": "You answer for a pharmacy chain."}
    assert up["messages"][1] == {"role": "user", "content": "hello"}
    assert up["temperature"] == pytest.approx(0.3)
    assert up["max_tokens"] == 50
    assert up["seed"] == 7 and up["stop"] == ["END"]

    # An explicit temperature wins over the default.
    chat(sapi, key, {"messages": msgs("x"), "temperature": 1.5})
    assert mock.last()["body"]["temperature"] == pytest.approx(1.5)


def test_stream_with_usage(sapi, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs(), "stream": True,
                         "stream_options": {"include_usage": True}}, stream=False)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    ev = sse_events(r)
    assert ev[-1] == "[DONE]"
    chunks = ev[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in chunks if c["choices"])
    assert text == REPLY
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 11
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_field(sapi, mock, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs(), "stream": True})
    ev = sse_events(r)
    assert ev[-1] == "[DONE]"
    assert all("usage" not in c for c in ev[:-1])
    # Upstream it is a stream too, with the upstream's usage always asked for.
    up = mock.last()["body"]
    assert up["stream"] is True and up["stream_options"] == {"include_usage": True}


def test_whole_upstream_answer_without_usage_is_counted_locally(sapi, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:nousage")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == REPLY
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0


def test_whole_upstream_answer_cut_short_is_502(sapi, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:cut")})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_error"


def test_usage_counted_locally_without_upstream_usage(sapi, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:nousage hi")})
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    assert u["prompt_tokens"] >= 1 and u["completion_tokens"] >= 1


def test_chunked_streams_share_a_kept_connection(sapi, mock, tkey):
    _, key = tkey
    s = requests.Session()  # one client connection: one loop, one upstream pool
    before = mock.connections
    for _ in range(3):
        r = s.post(sapi.srv.base + "/chat/completions", timeout=10,
                   headers={"Authorization": f"Bearer {key}"},
                   json={"model": "synapsex-chat", "stream": True,
                         "stream_options": {"include_usage": True},
                         "messages": msgs("MOCK:chunked")})
        ev = sse_events(r)
        assert ev[-1] == "[DONE]", r.text
        assert "".join(c["choices"][0]["delta"].get("content", "")
                       for c in ev[:-1] if c["choices"]) == REPLY
        assert ev[-2]["usage"]["prompt_tokens"] == 11
    assert mock.connections - before <= 1
    # Cut short, a chunked stream ends in an error event, not [DONE].
    r = s.post(sapi.srv.base + "/chat/completions", timeout=10,
               headers={"Authorization": f"Bearer {key}"},
               json={"model": "synapsex-chat", "stream": True,
                     "messages": msgs("MOCK:chunked MOCK:cut")})
    ev = sse_events(r)
    assert "[DONE]" not in ev and "error" in ev[-1]


def test_completions_plain_and_streamed(sapi, mock, tkey):
    _, key = tkey
    r = sapi.post("/completions", key=key, json={"model": "synapsex-chat",
                                                  "prompt": "Say it", "max_tokens": 9})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == REPLY
    assert mock.last("/completions")["body"]["prompt"] == "Say it"
    r = sapi.post("/completions", key=key, json={"model": "synapsex-chat",
                                                  "prompt": "Say it", "stream": True})
    ev = sse_events(r)
    assert ev[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in ev[:-1] if c["choices"]) == REPLY


def test_embeddings_float_and_base64(sapi, tkey):
    import base64
    import struct
    _, key = tkey
    r = sapi.post("/embeddings", key=key, json={"model": "synapsex-chat",
                                                 "input": ["ab", "abcd"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == [0.5, -0.25, 4.0]
    assert body["usage"]["prompt_tokens"] == 14
    r = sapi.post("/embeddings", key=key, json={"model": "synapsex-chat", "input": "abc",
                                                 "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -0.25, 3.0)


def test_models_list(sapi, tkey):
    _, key = tkey
    r = sapi.get("/models", key=key)
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["synapsex-chat", "synapsex-slow", "synapsex-dead"]
    assert all(m["object"] == "model" and m["owned_by"] == "synapsex"
               for m in r.json()["data"])
    assert sapi.get("/models/synapsex-chat", key=key).json()["id"] == "synapsex-chat"
    assert_error(sapi.get("/models/nope", key=key), 404)
    assert_error(sapi.get("/models"), 401)


@pytest.mark.parametrize("extra,param", [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"seed": "x"}, "seed"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"model": 5}, "model"),
])
def test_validation_names_the_field(sapi, tkey, extra, param):
    _, key = tkey
    body = {"model": "synapsex-chat", "messages": msgs()}
    body.update(extra)
    assert_error(chat(sapi, key, body), 400, param=param)


def test_message_validation(sapi, tkey):
    _, key = tkey
    assert_error(chat(sapi, key, {"model": "synapsex-chat", "messages": []}), 400,
                 param="messages")
    bad = [{"role": "wizard", "content": "x"}]
    assert_error(chat(sapi, key, {"model": "synapsex-chat", "messages": bad}), 400,
                 param="messages[0].role")
    img = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert_error(chat(sapi, key, {"model": "synapsex-chat", "messages": img}), 400,
                 param="messages[0].content[0].type")
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"},
                                          {"type": "text", "text": "b"}]}]
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": parts,
                         "user": "u1", "metadata": {"k": "v"}})
    assert r.status_code == 200, r.text


def test_unknown_model_is_404_with_the_list(sapi, tkey):
    _, key = tkey
    err = assert_error(chat(sapi, key, {"model": "gpt-9", "messages": msgs()}), 404,
                       param="model")
    assert "synapsex-chat" in err["message"] and err["code"] == "model_not_found"


def test_context_length_exceeded(sapi, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("word " * 5000)})
    err = assert_error(r, 400)
    assert err["code"] == "context_length_exceeded"


def test_upstream_down_is_502_and_slow_is_504(sapi, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-dead", "messages": msgs()})
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "upstream_unreachable" and "connect" in err["message"]
    r = chat(sapi, key, {"model": "synapsex-dead", "messages": msgs(), "stream": True})
    assert r.status_code == 502, r.text
    t0 = time.monotonic()
    r = chat(sapi, key, {"model": "synapsex-slow", "messages": msgs("MOCK:delay=4")})
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - t0 < 3.9


def test_upstream_errors_are_mapped(sapi, tkey):
    _, key = tkey
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:status=500")})
    assert r.status_code == 502 and "HTTP 500" in r.json()["error"]["message"]
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:status=429")})
    assert r.status_code == 503 and r.headers.get("retry-after")
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:status=400")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "upstream_rejected", r.text
    # An upstream without context= configured: its own words are recognised.
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:context")})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert "maximum context length" in r.json()["error"]["message"]
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:cut")})
    assert r.status_code == 502, r.text
    r = chat(sapi, key, {"model": "synapsex-chat", "messages": msgs("MOCK:cut"),
                         "stream": True})
    ev = sse_events(r)
    assert "[DONE]" not in ev and "error" in ev[-1]


def test_platform_key_with_x_tenant_id(sapi):
    slug = unique_slug("farmacia")
    t, tenant_key = sapi.create_tenant(slug=slug, tier="pro")
    r = sapi.apost("/admin/platform-keys", json={"name": "routing"})
    assert r.status_code in (200, 201), r.text
    pkey = r.json()["api_key"]
    body = {"model": "synapsex-chat", "messages": [{"role": "user", "content": "..."}]}
    for ref in (slug, t["id"]):
        r = chat(sapi, pkey, body, headers={"X-Tenant-ID": ref})
        assert r.status_code == 200, r.text
    assert_error(chat(sapi, pkey, body, headers={"X-Tenant-ID": "no_such_tenant"}), 404)
    assert_error(chat(sapi, pkey, body), 400)
    _, other_key = sapi.create_tenant(tier="pro")
    assert_error(chat(sapi, other_key, body, headers={"X-Tenant-ID": slug}), 403)
    assert_error(chat(sapi, "sk-nobody-" + "x" * 40, body), 401)
    assert_error(chat(sapi, None, body), 401)


def test_client_disconnect_cancels_the_relay(sapi, mock, tkey):
    _, key = tkey
    before = mock.disconnects
    r = requests.post(sapi.srv.base + "/chat/completions", stream=True, timeout=10,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "synapsex-chat", "stream": True,
                            "messages": msgs("MOCK:slow=100")})
    assert r.status_code == 200
    it = r.iter_lines()
    seen = 0
    for line in it:
        if line.startswith(b"data: "):
            seen += 1
            if seen == 3:
                break
    r.close()
    deadline = time.monotonic() + 5
    while mock.disconnects == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock.disconnects > before, "the upstream relay kept running after the client left"


def test_no_model_configured_is_503(api, tenant):
    _, key = tenant
    r = api.post("/chat/completions", key=key, json={"model": "synapsex-chat",
                                                      "messages": msgs()})
    err = assert_error(r, 503)
    assert "--model" in err["message"] and "--upstream" in err["message"]


def test_200_concurrent_streams_on_4_http_threads(sapi):
    """The server runs 4 HTTP threads; 200 streams that each last about
    0.5 s are all served together, because a waiting stream holds none."""
    import threading
    _, key = sapi.create_tenant(tier="enterprise",
                                settings={"rate_limit_rpm": 100000})
    results = []
    lock = threading.Lock()

    def one():
        s = requests.Session()
        r = s.post(sapi.srv.base + "/chat/completions", timeout=30,
                   headers={"Authorization": f"Bearer {key}"},
                   json={"model": "synapsex-chat", "stream": True,
                         "messages": msgs("MOCK:slow=5")})
        ok = r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        with lock:
            results.append(ok or r.status_code)

    threads = [threading.Thread(target=one) for _ in range(200)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    took = time.monotonic() - t0
    assert results.count(True) == 200, [x for x in results if x is not True][:5]
    # Served one after another on 4 threads this would take 25 s.
    assert took < 15, took


def test_sigterm_lets_in_flight_requests_finish(mock):
    """Graceful shutdown: a completion (plain and streamed) in flight when
    SIGTERM arrives is answered in full, and the server then exits 0."""
    import signal
    import threading

    from conftest import Api

    s = start_synapsex(["--upstream", f"synapsex-chat={mock.url};key_env=SX_TEST_UP_KEY"],
                       {"SX_TEST_UP_KEY": UP_KEY})
    api = Api(s)
    _, key = api.create_tenant(tier="pro")
    out = {}

    def call(name, stream):
        body = {"model": "synapsex-chat", "stream": stream,
                "messages": msgs("MOCK:delay=1.0 take your time")}
        out[name] = api.post("/chat/completions", key=key, json=body, timeout=30)

    threads = [threading.Thread(target=call, args=(n, st))
               for n, st in (("plain", False), ("stream", True))]
    for th in threads:
        th.start()
    time.sleep(0.4)  # both are waiting on the upstream now
    s.proc.send_signal(signal.SIGTERM)
    for th in threads:
        th.join(timeout=30)
    assert s.proc.wait(timeout=20) == 0
    assert out["plain"].status_code == 200, out["plain"].text
    assert out["plain"].json()["choices"][0]["message"]["content"] == REPLY
    assert out["stream"].status_code == 200
    assert "[DONE]" in sse_events(out["stream"])
    assert not SENSITIVE.leaks_in(s.log_text())
    shutil.rmtree(s.data_dir, ignore_errors=True)
