"""The usage API (GET /v1/tenants/{t}/usage, /usage/daily,
/v1/admin/usage/tenants): shapes, every day of a range, validation, who may
read what, numbers that match the requests made (through a mock upstream),
the spec's three usage examples run unchanged, and usage purged with its
tenant."""
import datetime
import os
import re
import subprocess
import threading
import time

import pytest

from conftest import assert_error, unique_slug
from metered_server import (MOCK_PROMPT_TOKENS, MeteredServer, MockUpstream,
                            completions_available)

EXAMPLES = os.path.join(os.path.dirname(__file__), "examples")
TOTAL_FIELDS = ("requests", "tokens", "prompt_tokens", "completion_tokens",
                "rerank_calls", "quantum_rerank_calls", "training_jobs")


def utc_today():
    return datetime.datetime.now(datetime.timezone.utc).date()


# ---- against the suite's shared server ------------------------------------

def test_usage_of_a_new_tenant_is_zero(api, tenant):
    t, key = tenant
    r = api.aget(f"/tenants/{t['id']}/usage", params={"period": "current_month"})
    assert r.status_code == 200, r.text
    u = r.json()
    assert u["tenant_id"] == t["id"] and u["period"] == "current_month"
    today = utc_today()
    assert u["from"] == today.replace(day=1).isoformat()
    assert u["to"] >= today.isoformat() and u["to"][:7] == today.isoformat()[:7]
    for f in TOTAL_FIELDS:
        assert u[f] == 0, (f, u)
    # By slug too, and by the tenant's own key.
    assert api.aget(f"/tenants/{t['slug']}/usage").json()["tenant_id"] == t["id"]
    assert api.get(f"/tenants/{t['id']}/usage", key=key).status_code == 200


def test_periods(api, tenant):
    t, _ = tenant
    today = utc_today()
    first = today.replace(day=1)
    prev_last = first - datetime.timedelta(days=1)
    cases = {
        "today": (today, today),
        "previous_month": (prev_last.replace(day=1), prev_last),
        "2024-02": (datetime.date(2024, 2, 1), datetime.date(2024, 2, 29)),
        "2023-12": (datetime.date(2023, 12, 1), datetime.date(2023, 12, 31)),
    }
    for period, (a, b) in cases.items():
        u = api.aget(f"/tenants/{t['id']}/usage", params={"period": period}).json()
        assert (u["period"], u["from"], u["to"]) == (period, a.isoformat(), b.isoformat())


def test_bad_periods_list_the_accepted_forms(api, tenant):
    t, _ = tenant
    for bad in ("yesterday", "2024-13", "2024-1", "2024-01-01", "", "CURRENT_MONTH"):
        r = api.aget(f"/tenants/{t['id']}/usage", params={"period": bad})
        err = assert_error(r, 400, param="period")
        for form in ("current_month", "previous_month", "today", "YYYY-MM"):
            assert form in err["message"], err
    r = api.aget("/admin/usage/tenants", params={"period": "last_week"})
    assert_error(r, 400, param="period", words=("YYYY-MM",))


def test_daily_lists_every_day(api, tenant):
    t, _ = tenant
    r = api.aget(f"/tenants/{t['id']}/usage/daily",
                 params={"from": "2024-02-27", "to": "2024-03-02"})
    assert r.status_code == 200, r.text
    days = r.json()["days"]
    assert [d["date"] for d in days] == ["2024-02-27", "2024-02-28", "2024-02-29",
                                         "2024-03-01", "2024-03-02"]
    for d in days:
        assert set(TOTAL_FIELDS) <= set(d)
        assert all(d[f] == 0 for f in TOTAL_FIELDS)
    one = api.aget(f"/tenants/{t['id']}/usage/daily",
                   params={"from": "2024-01-01", "to": "2024-01-01"}).json()["days"]
    assert len(one) == 1
    year = api.aget(f"/tenants/{t['id']}/usage/daily",
                    params={"from": "2024-01-01", "to": "2024-12-31"}).json()["days"]
    assert len(year) == 366


def test_daily_bad_ranges(api, tenant):
    t, _ = tenant
    path = f"/tenants/{t['id']}/usage/daily"
    for bad in ("2024-02-30", "2024/01/01", "yesterday", "2024-1-1", "2024-01-01T00:00"):
        assert_error(api.aget(path, params={"from": bad, "to": "2024-03-01"}), 400,
                     param="from", words=("YYYY-MM-DD",))
        assert_error(api.aget(path, params={"from": "2024-01-01", "to": bad}), 400,
                     param="to", words=("YYYY-MM-DD",))
    assert_error(api.aget(path, params={"from": "2024-03-01", "to": "2024-02-01"}), 400,
                 param="to", words=("from",))
    assert_error(api.aget(path, params={"from": "2023-01-01", "to": "2024-01-02"}), 400,
                 param="to", words=("366",))


def test_who_may_read_usage(api, tenant, other_tenant):
    t, key = tenant
    o, okey = other_tenant
    for path in (f"/tenants/{t['id']}/usage", f"/tenants/{t['id']}/usage/daily"):
        assert api.get(path, key=key).status_code == 200
        assert_error(api.get(path, key=okey), 404)  # never reveals the other tenant
        assert_error(api.get(path), 401)
        assert_error(api.aget(path.replace(t["id"], "tenant_doesnotexist0")), 404)
    assert_error(api.get("/admin/usage/tenants", key=key), 403)
    assert_error(api.get("/admin/usage/tenants"), 401)
    r = api.apost("/admin/platform-keys", json={"name": "usage-test"})
    if r.status_code in (200, 201):
        pkey = r.json()["api_key"]
        assert_error(api.get(f"/tenants/{t['id']}/usage", key=pkey), 403)
        assert_error(api.get("/admin/usage/tenants", key=pkey), 403)


def test_admin_ranking_lists_every_tenant(api, tenant):
    t, _ = tenant
    for sort in ("tokens_desc", "tokens_asc", "requests_desc", "requests_asc", "name_asc"):
        r = api.aget("/admin/usage/tenants", params={"period": "today", "sort": sort})
        assert r.status_code == 200, r.text
        rows = r.json()["tenants"]
        mine = [x for x in rows if x["tenant_id"] == t["id"]]
        assert len(mine) == 1
        assert mine[0]["name"] == t["name"] and mine[0]["slug"] == t["slug"]
        assert mine[0]["tier"] == t["tier"]
        assert all(f in mine[0] for f in TOTAL_FIELDS)
    names = [x["name"] for x in api.aget("/admin/usage/tenants",
                                         params={"sort": "name_asc"}).json()["tenants"]]
    assert names == sorted(names)
    assert_error(api.aget("/admin/usage/tenants", params={"sort": "tokens"}), 400,
                 param="sort", words=("tokens_desc", "name_asc"))


# ---- with requests made through a mock upstream -----------------------------

@pytest.fixture(scope="module")
def metered():
    up = MockUpstream()
    srv = MeteredServer(up).start()
    yield srv
    rc = srv.stop()
    up.close()
    assert rc == 0, f"server exited {rc}:\n{srv.log_text()[-2000:]}"
    srv.remove_data()


def run_example(srv, name):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYNAPSEX_BASE": srv.base,
           "SYNAPSEX_ADMIN_KEY": srv.admin_key, "LANG": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8", "NO_PROXY": "*"}
    p = subprocess.run(["/usr/bin/python3", os.path.join(EXAMPLES, name)], env=env,
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and not p.stderr, p.stderr.decode()
    return p.stdout.decode()


def test_usage_counts_match_requests_and_spec_examples(metered):
    farm, fkey = metered.create_tenant("farmacia_santa_casa", tier="pro",
                                       name="Farmácia Santa Casa")
    other, okey = metered.create_tenant(unique_slug("hosp"), tier="pro", name="Hospital X")
    reason = completions_available(metered, fkey)
    if reason:
        pytest.skip(reason)

    # completions_available made one request for farm already.
    want = {farm["id"]: [1, 0, 0], other["id"]: [0, 0, 0]}  # requests, prompt, completion
    first = metered.request("GET", f"/tenants/{farm['id']}/usage", key=metered.admin_key,
                            params={"period": "today"}).json()
    want[farm["id"]][1] = first["prompt_tokens"]
    want[farm["id"]][2] = first["completion_tokens"]
    assert first["requests"] == 1
    for tenant_id, key, n, max_tokens in ((farm["id"], fkey, 6, 3), (other["id"], okey, 2, 1)):
        for i in range(n):
            r = metered.chat(key, max_tokens=max_tokens, stream=(i % 2 == 1))
            assert r.status_code == 200, r.text
            assert r.headers.get("x-ratelimit-limit-requests") == "100"
            assert int(r.headers["x-ratelimit-remaining-tokens"]) >= 0
            want[tenant_id][0] += 1
            want[tenant_id][1] += MOCK_PROMPT_TOKENS
            want[tenant_id][2] += max_tokens

    for tid, (nreq, pt, ct) in want.items():
        for period in ("today", "current_month"):
            u = metered.request("GET", f"/tenants/{tid}/usage", key=metered.admin_key,
                                params={"period": period}).json()
            assert (u["requests"], u["prompt_tokens"], u["completion_tokens"]) == \
                (nreq, pt, ct), u
            assert u["tokens"] == pt + ct
        today = utc_today().isoformat()
        days = metered.request("GET", f"/tenants/{tid}/usage/daily", key=metered.admin_key,
                               params={"from": today, "to": today}).json()["days"]
        assert days[0]["requests"] == nreq and days[0]["tokens"] == pt + ct

    f_req, f_pt, f_ct = want[farm["id"]]
    o_req, o_pt, o_ct = want[other["id"]]
    out = run_example(metered, "usage.py")
    assert out == (f"Requests: {f_req}\nTokens: {f_pt + f_ct}\nRerank calls: 0\n"
                   f"Training jobs: 0\n"), out

    out = run_example(metered, "usage_daily.py")  # January 2024: no use then
    lines = out.splitlines()
    assert len(lines) == 31
    assert lines[0] == "2024-01-01: 0 requests, 0 tokens"
    assert lines[30] == "2024-01-31: 0 requests, 0 tokens"

    out = run_example(metered, "usage_tenants.py")
    assert out.splitlines() == [f"Farmácia Santa Casa: {f_pt + f_ct:,} tokens",
                                f"Hospital X: {o_pt + o_ct:,} tokens"], out


def test_usage_purged_with_the_tenant(metered):
    t, key = metered.create_tenant(unique_slug("gone"))
    reason = completions_available(metered, key)
    if reason:
        pytest.skip(reason)
    assert metered.ledger("SELECT COUNT(*) FROM usage_events WHERE tenant_id = ?",
                          (t["id"],))[0][0] == 1

    # A request still running when the tenant is deleted brings no row back.
    metered.upstream.delay_s = 1.0
    late = []
    th = threading.Thread(target=lambda: late.append(metered.chat(key)))
    th.start()
    try:
        time.sleep(0.4)
        r = metered.request("DELETE", f"/tenants/{t['id']}", key=metered.admin_key)
        assert r.status_code in (200, 204), r.text
        th.join(timeout=30)
    finally:
        metered.upstream.delay_s = 0.0
    assert late and late[0].status_code in (200, 401, 403, 404, 500, 502), late
    for table in ("usage_events", "usage_daily", "usage_limit_events"):
        n = metered.ledger(f"SELECT COUNT(*) FROM {table} WHERE tenant_id = ?", (t["id"],))
        assert n[0][0] == 0, table
    rows = metered.request("GET", "/admin/usage/tenants", key=metered.admin_key).json()
    assert t["id"] not in [x["tenant_id"] for x in rows["tenants"]]
    assert re.match(r"^tenant_", t["id"])


LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@pytest.mark.skipif(not os.path.exists(LIBFAKETIME),
                    reason="skipped: libfaketime absent (apt-get install faketime)")
def test_spec_daily_example_prints_the_requests_of_january_2024(tmp_path):
    """The spec's "Usage by Day" example asks for January 2024: a server whose
    clock starts on 2024-01-15 (libfaketime, preloaded into the server alone)
    serves requests on that day, and the example, run unchanged, prints them
    on that line and zeros elsewhere."""
    up = MockUpstream()
    fake = {"LD_PRELOAD": LIBFAKETIME, "FAKETIME": "@2024-01-15 10:00:00",
            # The sanitizer build's runtime must otherwise be loaded first.
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    srv = MeteredServer(up, data_dir=str(tmp_path), env_extra=fake).start()
    try:
        farm, fkey = srv.create_tenant("farmacia_santa_casa", tier="pro",
                                       name="Farmácia Santa Casa")
        reason = completions_available(srv, fkey)
        if reason:
            pytest.skip(reason)
        for _ in range(4):
            assert srv.chat(fkey, max_tokens=3).status_code == 200
        u = srv.request("GET", f"/tenants/{farm['id']}/usage", key=srv.admin_key,
                        params={"period": "today"}).json()
        assert u["from"] == "2024-01-15" and u["requests"] == 5, u

        lines = run_example(srv, "usage_daily.py").splitlines()
        assert len(lines) == 31
        assert lines[14] == f"2024-01-15: 5 requests, {u['tokens']} tokens", lines[14]
        assert u["tokens"] > 0
        assert set(lines[:14] + lines[15:]) == {
            f"2024-01-{d:02d}: 0 requests, 0 tokens" for d in range(1, 32) if d != 15}
        out = run_example(srv, "usage.py")  # current_month is January 2024 there
        assert out.startswith(f"Requests: 5\nTokens: {u['tokens']}\n"), out
    finally:
        rc = srv.stop()
        up.close()
    assert rc == 0, srv.log_text()[-2000:]
