"""Rate limits, daily token quotas and the durable usage ledger under load,
through /v1/chat/completions on a mock upstream:
  - 64 concurrent clients hammer one tenant (30 requests/min) for 65 s: no
    60 s window of the ledger's admission times holds more than 30, another
    tenant is unaffected, refusals are OpenAI-shaped 429s with Retry-After
    and x-ratelimit-* headers;
  - a small daily token quota is never exceeded and its first refusal is
    recorded once as a limit event; trial tenants get their own codes;
  - SIGKILL during a load of completions, with ledger_sync full and normal:
    after a restart the ledger holds every request whose response the client
    fully received, once, and the day's quota use is reloaded."""
import threading
import time

import pytest
import requests

from conftest import unique_slug
from metered_server import MeteredServer, MockUpstream, completions_available

RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests")
TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                 "x-ratelimit-reset-tokens")
RESET_RE = r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$"


@pytest.fixture(scope="module")
def upstream():
    up = MockUpstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def metered(upstream):
    srv = MeteredServer(upstream).start()
    yield srv
    rc = srv.stop()
    assert rc == 0, f"server exited {rc}:\n{srv.log_text()[-2000:]}"
    srv.remove_data()


def need_completions(srv, key):
    reason = completions_available(srv, key)
    if reason:
        pytest.skip(reason)


def check_429(r, code):
    import re
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == code, err
    assert len(err["message"]) > 20
    retry = r.headers.get("Retry-After")
    assert retry and retry.isdigit() and int(retry) >= 1, retry
    for h in RATE_HEADERS:
        assert h in r.headers, (h, dict(r.headers))
    assert re.match(RESET_RE, r.headers["x-ratelimit-reset-requests"]), r.headers
    return err


def max_in_window(times_ms, window_ms=60000):
    times = sorted(times_ms)
    best, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] > window_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_rpm_exact_under_64_clients(metered):
    hot, hot_key = metered.create_tenant(unique_slug("hot"), tier="pro",
                                         settings={"rate_limit_rpm": 30})
    calm, calm_key = metered.create_tenant(unique_slug("calm"), tier="pro")
    need_completions(metered, calm_key)

    stop = time.monotonic() + 65
    lock = threading.Lock()
    admitted, refused, odd, checked = [], [0], [], [0]

    def client():
        s = requests.Session()
        while time.monotonic() < stop:
            try:
                r = metered.chat(hot_key, max_tokens=1, session=s)
            except requests.RequestException as e:
                with lock:
                    odd.append(repr(e))
                continue
            with lock:
                if r.status_code == 200:
                    admitted.append(r.headers.get("x-request-id"))
                elif r.status_code == 429:
                    refused[0] += 1
                    if checked[0] < 20:
                        checked[0] += 1
                        try:
                            check_429(r, "rate_limit_exceeded")
                        except AssertionError as e:
                            odd.append(str(e))
                else:
                    odd.append(f"{r.status_code} {r.text[:200]}")
            time.sleep(0.1)

    calm_status = []

    def calm_client():
        s = requests.Session()
        while time.monotonic() < stop:
            calm_status.append(metered.chat(calm_key, max_tokens=1, session=s).status_code)
            time.sleep(1.0)

    threads = [threading.Thread(target=client) for _ in range(64)]
    threads.append(threading.Thread(target=calm_client))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not odd, odd[:5]

    # Admission times as the ledger recorded them (ms, server clock).
    rows = metered.ledger("SELECT request_id, started_at FROM usage_events WHERE tenant_id = ?",
                          (hot["id"],))
    assert sorted(r[0] for r in rows) == sorted(admitted)
    worst = max_in_window([r[1] for r in rows])
    assert worst <= 30, f"{worst} admissions in one 60 s window (limit 30)"
    # 3 at once, then 28 a minute: over 65 s at least 30 were admitted.
    assert len(admitted) >= 30, len(admitted)
    assert refused[0] > 1000, refused[0]
    # The other tenant was never refused.
    assert len(calm_status) >= 30 and set(calm_status) == {200}, calm_status


@pytest.fixture(params=["constant", "bytes"])
def prompt_counting(request, metered):
    """Runs a test with the mock upstream counting prompts below synapsex's
    estimate, then far above it (a regression: the estimate was reserved,
    and an upstream that counted more pushed the day past the quota)."""
    metered.upstream.prompt_counting = request.param
    yield request.param
    metered.upstream.prompt_counting = "constant"


def test_daily_token_quota_never_exceeded(metered, prompt_counting):
    import re
    t, key = metered.create_tenant(unique_slug("quota"), tier="free",
                                   settings={"rate_limit_rpm": 1000000,
                                             "daily_token_limit": 300})
    calm, calm_key = metered.create_tenant(unique_slug("calm"), tier="free",
                                           settings={"rate_limit_rpm": 1000000})
    need_completions(metered, key)  # one request
    lock = threading.Lock()
    ok, refusals, odd, calm_status = [1], [], [], []

    def client():
        s = requests.Session()
        streak = 0
        for _ in range(200):
            r = metered.chat(key, max_tokens=4, session=s)
            with lock:
                if r.status_code == 200:
                    ok[0] += 1
                    streak = 0
                    for h in RATE_HEADERS + TOKEN_HEADERS:
                        if h not in r.headers:
                            odd.append(f"missing {h}")
                elif r.status_code == 429:
                    refusals.append(r)
                    streak += 1
                else:
                    odd.append(f"{r.status_code} {r.text[:200]}")
            if streak >= 3:
                return

    def calm_client():
        s = requests.Session()
        for _ in range(10):
            calm_status.append(metered.chat(calm_key, max_tokens=4, session=s).status_code)

    threads = [threading.Thread(target=client) for _ in range(64)]
    threads.append(threading.Thread(target=calm_client))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not odd, odd[:5]
    assert refusals, "the quota never refused anything"
    # The other tenant of the same tier was never refused.
    assert calm_status == [200] * 10, calm_status
    err = check_429(refusals[-1], "daily_token_limit_exceeded")
    assert "max_tokens" in err["message"]
    h = refusals[-1].headers
    assert h["x-ratelimit-limit-tokens"] == "300"
    assert int(h["x-ratelimit-remaining-tokens"]) < 300
    assert re.match(RESET_RE, h["x-ratelimit-reset-tokens"]), h

    u = metered.request("GET", f"/tenants/{t['id']}/usage", key=metered.admin_key,
                        params={"period": "today"}).json()
    assert u["requests"] == ok[0]
    assert 0 < u["tokens"] <= 300, u
    assert u["tokens"] > 300 // 2, u  # reservations do not waste half the quota

    # Reaching the limit is recorded once for the day.
    for _ in range(50):
        ev = metered.ledger("SELECT kind, limit_value FROM usage_limit_events "
                            "WHERE tenant_id = ?", (t["id"],))
        if ev:
            break
        time.sleep(0.05)
    assert ev == [("daily_token_limit", 300)], ev


def create_trial(metered, settings):
    r = metered.request("POST", "/tenants", key=metered.admin_key,
                        json={"name": "Trial T", "slug": unique_slug("tri"), "tier": "trial",
                              "settings": settings})
    if r.status_code not in (200, 201):
        pytest.skip(f"trial tenants cannot be created by an admin: {r.text[:200]}")
    return r.json(), r.json()["api_key"]


def test_trial_limits_have_their_own_codes(metered):
    # Requests per day: the trial default is 100.
    t, key = create_trial(metered, {"rate_limit_rpm": 1000000})
    need_completions(metered, key)  # request 1
    s = requests.Session()
    for i in range(2, 101):
        r = metered.chat(key, max_tokens=1, session=s)
        assert r.status_code == 200, (i, r.text)
    check_429(metered.chat(key, max_tokens=1, session=s), "trial_request_limit_exceeded")

    # Tokens per day.
    # (A request reserves its prompt's bound, about 80 tokens here, and
    # settles to about 11.)
    t, key = create_trial(metered, {"rate_limit_rpm": 1000000, "daily_token_limit": 200})
    codes = [metered.chat(key, max_tokens=8, session=s) for _ in range(24)]
    assert codes[0].status_code == 200, codes[0].text
    check_429(codes[-1], "trial_token_limit_exceeded")


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_crash_keeps_every_answered_request(upstream, tmp_path, sync):
    # Both durability modes survive a SIGKILL (normal: the committed WAL is
    # in the page cache; full: it is on the disk).
    upstream.delay_s = 0.02
    srv = MeteredServer(upstream, data_dir=str(tmp_path), ledger_sync=sync).start()
    try:
        assert f"ledger_sync = {sync}" in srv.log_text(), srv.log_text()[-2000:]
        t, key = srv.create_tenant(unique_slug("crash"), tier="business",
                                   settings={"rate_limit_rpm": 1000000,
                                             "daily_token_limit": 10000000})
        need_completions(srv, key)
        stop = threading.Event()
        lock = threading.Lock()
        received = []

        def client(i):
            s = requests.Session()
            n = 0
            while not stop.is_set():
                n += 1
                stream = (i + n) % 3 == 0
                try:
                    r = srv.chat(key, max_tokens=2, session=s, stream=stream)
                    body = r.content  # the whole response, or an exception
                except requests.RequestException:
                    continue
                if r.status_code == 200 and (not stream or b"[DONE]" in body):
                    with lock:
                        received.append(r.headers["x-request-id"])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for th in threads:
            th.start()
        time.sleep(3)
        srv.crash()
        stop.set()
        for th in threads:
            th.join(timeout=60)
        assert len(received) > 20, len(received)

        srv.start()  # the same data directory
        rows = srv.ledger("SELECT request_id FROM usage_events WHERE tenant_id = ?",
                          (t["id"],))
        ids = [r[0] for r in rows]
        missing = set(received) - set(ids)
        assert not missing, f"{len(missing)} answered requests missing from the ledger"
        assert len(ids) == len(set(ids))
        assert len(ids) >= len(received)
        # The rollup was written with its events.
        (nreq, ntok), = srv.ledger("SELECT SUM(requests), SUM(prompt_tokens + "
                                   "completion_tokens) FROM usage_daily WHERE tenant_id = ?",
                                   (t["id"],))
        (ev_tok,), = srv.ledger("SELECT SUM(prompt_tokens + completion_tokens) "
                                "FROM usage_events WHERE tenant_id = ?", (t["id"],))
        assert nreq == len(ids) and ntok == ev_tok
        # Today's use was reloaded: the remaining tokens count it.
        r = srv.chat(key, max_tokens=1)
        assert r.status_code == 200, r.text
        assert int(r.headers["x-ratelimit-remaining-tokens"]) <= 10000000 - ntok - 1
    finally:
        upstream.delay_s = 0.0
        rc = srv.stop()
    assert rc == 0, srv.log_text()[-2000:]


def test_every_metered_endpoint_carries_the_rate_headers(metered):
    """x-ratelimit-* on chat (plain and streamed), completions and embeddings,
    each header once, and the remaining requests counting down."""
    t, key = metered.create_tenant(unique_slug("hdr"), tier="pro")
    need_completions(metered, key)
    calls = [
        ("/chat/completions", {"model": "synapsex-chat", "max_tokens": 2,
                               "messages": [{"role": "user", "content": "hi"}]}),
        ("/chat/completions", {"model": "synapsex-chat", "max_tokens": 2, "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]}),
        ("/completions", {"model": "synapsex-chat", "max_tokens": 2, "prompt": "hi"}),
        ("/embeddings", {"model": "synapsex-chat", "input": "hi"}),
    ]
    remaining = []
    for path, body in calls:
        r = metered.request("POST", path, key=key, json=body)
        assert r.status_code == 200, (path, r.text)
        for h in RATE_HEADERS + TOKEN_HEADERS:
            assert h in r.headers, (path, h, dict(r.headers))
            assert "," not in r.headers[h], (path, h, r.headers[h])  # sent once
        remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
    assert remaining == sorted(remaining, reverse=True) and remaining[0] > remaining[-1]
