"""RAG inside chat completions: the spec's "RAG in Action" (a pharmacy
tenant asks "What pain medications do you have?" and the aspirin document,
with its title and price, goes into the prompt and into meta.rag), through
the loopback mock upstream (whose recorded requests show the exact prompt)
and, when the fixtures are present, the local tiny model (whose prompt
token count shows that RAG context is billed). Also: RAG off, nothing above
the threshold, streaming, and isolation between tenants through chat."""
import json
import random

import pytest

from conftest import Api, SENSITIVE, unique_slug
from mock_upstream import MockUpstream, start_synapsex, stop_synapsex, tiny_model

UP_KEY = "up-key-" + "Rg7" * 10
QUESTION = "What pain medications do you have?"
PROMPT = "You are a pharmacy assistant for Farmácia Santa Casa."
ASPIRIN = {"doc_id": "med_001", "title": "Aspirin 500mg",
           "text": "Pain reliever and anti-inflammatory. Dosage: 1-2 tablets every "
                   "4-6 hours...",
           "metadata": {"category": "analgesics", "price": 12.99}}


@pytest.fixture(scope="module")
def mock():
    m = MockUpstream(key=UP_KEY)
    yield m
    m.close()


@pytest.fixture(scope="module")
def sapi(mock):
    SENSITIVE.add_secret(UP_KEY)
    s = start_synapsex(["--upstream",
                        f"synapsex-chat={mock.url};key_env=SX_TEST_UP_KEY;context=4096"],
                       {"SX_TEST_UP_KEY": UP_KEY})
    yield Api(s)
    stop_synapsex(s)


def pharmacy(api, docs=(ASPIRIN,), **settings):
    SENSITIVE.add_text(PROMPT)
    t, key = api.create_tenant(tier="pro", settings={"custom_system_prompt": PROMPT,
                                                       **settings})
    r = api.apost(f"/tenants/{t['id']}/datasets/register",
                  json={"name": "product_catalog", "type": "documents",
                        "data_use": {"allow_rag": True}})
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    r = api.apost(f"/tenants/{t['id']}/datasets/{ds}/upload/docs", json={"docs": list(docs)})
    assert r.status_code == 200, r.text
    return t, key


def chat(api, key, text=QUESTION, **kw):
    r = api.post("/chat/completions", key=key, json={
        "model": "synapsex-chat", "messages": [{"role": "user", "content": text}], **kw})
    assert r.status_code == 200, r.text
    return r


def sent_messages(mock):
    """The messages of the last chat request the upstream received."""
    chats = [x for x in mock.requests if x["path"].endswith("/chat/completions")]
    return chats[-1]["body"]["messages"]


def test_spec_rag_in_action(sapi, mock):
    t, key = pharmacy(sapi)
    body = chat(sapi, key).json()
    rag = body["meta"]["rag"]
    assert rag["used"] is True, rag
    assert [c["doc_id"] for c in rag["chunks"]] == ["med_001"]
    c = rag["chunks"][0]
    assert c["chunk_id"].startswith("chk_") and c["title"] == "Aspirin 500mg"
    assert 0.5 <= c["score"] <= 1 and rag["top_k"] == 5 and rag["threshold"] == 0.5

    # One system turn: the tenant's prompt, then the document with its title
    # and metadata (the price the spec's answer quotes); the question as is.
    msgs = sent_messages(mock)
    assert [m["role"] for m in msgs] == ["system", "user"]
    system = msgs[0]["content"]
    assert system.startswith(PROMPT)
    assert "Aspirin 500mg" in system and "12.99" in system and "analgesics" in system
    assert "Pain reliever and anti-inflammatory" in system
    assert msgs[1]["content"] == QUESTION


def test_stream_carries_meta_rag(sapi, mock):
    _, key = pharmacy(sapi)
    r = chat(sapi, key, stream=True)
    events = [json.loads(line[6:]) for line in r.text.split("\n")
              if line.startswith("data: {")]
    metas = [e["meta"] for e in events if "meta" in e]
    assert metas and all(m["rag"]["chunks"][0]["doc_id"] == "med_001" for m in metas)


def test_rag_off_adds_nothing(sapi, mock):
    _, key = pharmacy(sapi, enable_rag=False)
    body = chat(sapi, key).json()
    assert body["meta"]["rag"] is None
    msgs = sent_messages(mock)
    assert msgs == [{"role": "system", "content": PROMPT},
                    {"role": "user", "content": QUESTION}]


def test_nothing_above_threshold_adds_nothing(sapi, mock):
    _, key = pharmacy(sapi)
    body = chat(sapi, key, text="Do you deliver to Lisbon on Sundays?").json()
    assert body["meta"]["rag"]["used"] is False and body["meta"]["rag"]["chunks"] == []
    assert [m["role"] for m in sent_messages(mock)] == ["system", "user"]
    assert sent_messages(mock)[0]["content"] == PROMPT


def test_dataset_registered_after_chats_is_used_at_once(sapi, mock):
    """A tenant that chatted before it had any dataset (retrieval then
    remembers that it has none) gets its documents into the very next chat
    after registering and uploading them; a dataset that does not allow RAG
    does not count."""
    SENSITIVE.add_text(PROMPT)
    t, key = sapi.create_tenant(tier="pro", settings={"custom_system_prompt": PROMPT})
    for _ in range(2):
        assert chat(sapi, key).json()["meta"]["rag"]["chunks"] == []
    for allow in (False, True):
        r = sapi.apost(f"/tenants/{t['id']}/datasets/register",
                       json={"name": f"catalog_{allow}", "type": "documents",
                             "data_use": {"allow_rag": allow}})
        assert r.status_code == 201, r.text
        r = sapi.apost(f"/tenants/{t['id']}/datasets/{r.json()['id']}/upload/docs",
                       json={"docs": [ASPIRIN]})
        assert r.status_code == 200, r.text
        chunks = chat(sapi, key).json()["meta"]["rag"]["chunks"]
        assert [c["doc_id"] for c in chunks] == (["med_001"] if allow else [])


def test_client_system_message_is_merged_not_doubled(sapi, mock):
    _, key = pharmacy(sapi)
    r = sapi.post("/chat/completions", key=key, json={
        "model": "synapsex-chat",
        "messages": [{"role": "system", "content": "Answer briefly."},
                     {"role": "user", "content": QUESTION}]})
    assert r.status_code == 200, r.text
    msgs = sent_messages(mock)
    assert [m["role"] for m in msgs] == ["system", "user"]
    s = msgs[0]["content"]
    assert s.index(PROMPT) < s.index("Answer briefly.") < s.index("Aspirin 500mg")


def test_chat_isolation_randomised(sapi, mock):
    """Six tenants with the same vocabulary and marked documents: chat
    retrieval only ever uses the asking tenant's documents, in meta.rag and
    in the prompt the upstream receives."""
    vocab = ["aspirin", "pain", "fever", "tablet", "dose", "syrup", "child", "cream",
             "skin", "allergy", "cough", "vitamin"]
    rnd = random.Random(7)
    tenants = []
    for _ in range(6):
        mark = "mark" + unique_slug("x").replace("_", "")
        docs = [{"doc_id": f"{mark}-{j}", "title": " ".join(rnd.sample(vocab, 2)),
                 "text": " ".join(rnd.choice(vocab) for _ in range(12)) + f". {mark}.",
                 "metadata": {"owner": mark}} for j in range(8)]
        t, key = pharmacy(sapi, docs=docs, rag_threshold=0.0, rag_top_k=10)
        tenants.append((mark, key))
    marks = [m for m, _ in tenants]
    for _ in range(30):
        mark, key = rnd.choice(tenants)
        body = chat(sapi, key, text=" ".join(rnd.sample(vocab, 3))).json()
        rag = body["meta"]["rag"]
        assert rag["used"] and rag["chunks"]
        assert all(c["doc_id"].startswith(mark + "-") for c in rag["chunks"]), rag
        system = sent_messages(mock)[0]["content"]
        assert mark in system
        assert not [m for m in marks if m != mark and m in system]


@pytest.mark.skipif(tiny_model() is None, reason="skipped: fixtures absent")
def test_rag_context_counts_as_prompt_tokens():
    """On the local engine the prompt is counted after augmentation: the
    same question costs more prompt tokens with RAG on than off."""
    srv = start_synapsex(["--model", f"synapsex-chat={tiny_model()}"])
    try:
        api = Api(srv)
        _, on = pharmacy(api)
        _, off = pharmacy(api, enable_rag=False)
        a = chat(api, on, max_tokens=2).json()
        b = chat(api, off, max_tokens=2).json()
        assert a["meta"]["rag"]["chunks"][0]["doc_id"] == "med_001"
        assert a["usage"]["prompt_tokens"] > b["usage"]["prompt_tokens"] + 20, (a, b)
    finally:
        stop_synapsex(srv)


@pytest.mark.skipif(tiny_model() is None, reason="skipped: fixtures absent")
def test_local_model_embeds_chunks():
    """With a local model the rag module gets the engine's pooled
    embeddings: every uploaded chunk has a vector (dataset inspect counts
    them, a long document's chunks too, cut to the model's context), and
    search fuses vectors with BM25 while still finding the right document."""
    srv = start_synapsex(["--model", f"synapsex-chat={tiny_model()}"])
    try:
        api = Api(srv)
        long_doc = {"doc_id": "manual", "title": "Pharmacy manual",
                    "text": " ".join(f"Section {i} explains storage rules for tablets."
                                     for i in range(300))}
        t, key = pharmacy(api, docs=(ASPIRIN, long_doc))
        ds = api.aget(f"/tenants/{t['id']}/datasets").json()["data"][0]["id"]
        info = api.aget(f"/tenants/{t['id']}/datasets/{ds}").json()
        assert info["chunk_count"] > 2, info
        assert info["vector_count"] == info["chunk_count"], info
        r = api.post(f"/tenants/{t['id']}/datasets/search", key=key,
                     json={"query": "aspirin pain reliever", "top_k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["vectors"] is True, body
        assert body["data"][0]["doc_id"] == "med_001", body
        assert -1 <= body["data"][0]["similarity"] <= 1, body
        # A query far longer than the model's context is cut, not refused.
        r = api.post(f"/tenants/{t['id']}/datasets/search", key=key,
                     json={"query": "aspirin " + "1234567890" * 800, "top_k": 1})
        assert r.status_code == 200, r.text
        assert r.json()["vectors"] is True, r.text
    finally:
        stop_synapsex(srv)
