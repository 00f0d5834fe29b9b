"""The server log (debug level) never holds a key, a secret or tenant text.
The session fixture checks the whole suite's log at shutdown; this test
checks it mid-run, after traffic that tempts a careless logger."""
from conftest import SENSITIVE, assert_error


def test_log_has_no_secret_or_tenant_text(api):
    email = "log-probe-contact@example.org"
    prompt = "LOGPROBE system prompt that must stay private"
    t, key = api.create_tenant(contact_email=email,
                               settings={"custom_system_prompt": prompt,
                                         "allowed_topics": ["logprobe_topic_a"]})
    api.get(f"/tenants/{t['id']}/settings", key=key)
    assert_error(api.get(f"/tenants/{t['id']}/settings", key=key + "x"), 401)
    assert_error(api.get("/tenants", key=key), 403)
    extra = api.apost(f"/tenants/{t['id']}/keys", json={}).json()
    api.adelete(f"/tenants/{t['id']}/keys/{extra['id']}")
    api.get(f"/tenants/{t['id']}/settings", key=extra["api_key"])
    pk = api.apost("/admin/platform-keys", json={"name": "logprobe"}).json()
    api.get("/models", key=pk.get("api_key"), headers={"X-Tenant-ID": t["slug"]})
    api.apatch(f"/tenants/{t['id']}/settings",
               json={"custom_system_prompt": prompt + " v2", "rag_top_k": "bad"})
    assert SENSITIVE.secrets, "the suite recorded no secrets"

    log = api.srv.log_text()
    assert log.strip(), "the server wrote no log at debug level"
    leaks = SENSITIVE.leaks_in(log)
    assert not leaks, f"{len(leaks)} secret(s) or tenant text in the log: " \
                      f"{[x[:12] + '...' for x in leaks]}"
    for s in (key, key.rsplit("-", 1)[-1], api.srv.admin_key, email, prompt):
        assert s not in log


def test_leak_detector_catches_a_planted_secret():
    """The log check itself can fail: a key, its bare secret part or a
    recorded prompt in a log line are all reported."""
    from conftest import Sensitive
    s = Sensitive()
    s.add_secret("sk-acme-" + "Q" * 43)
    s.add_text("a private prompt")
    assert s.leaks_in("auth ok for sk-acme-" + "Q" * 43)
    assert s.leaks_in("token=" + "Q" * 43)
    assert s.leaks_in("INFO prompt was: a private prompt")
    assert not s.leaks_in("INFO [http] GET /v1/tenants/{t}/settings 200 sk-acme-QQQQ")
