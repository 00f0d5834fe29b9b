"""Admin bootstrap and durability across restarts, on servers of their own
(not the session server): a generated admin key is printed once and only
its hash is kept; tenants, keys, revocations and the audit log survive a
SIGTERM and even a SIGKILL right after the response."""
import os
import signal
import subprocess
import time

import pytest
import requests

from conftest import REPO, SENSITIVE, _free_port, rand62

BIN = os.path.join(REPO, os.environ.get("SYNAPSEX_BIN", "build/synapsex"))


class Proc:
    def __init__(self, data_dir, admin_key=None):
        if not os.access(BIN, os.X_OK):
            pytest.fail(f"server binary {BIN!r} is missing", pytrace=False)
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.pop("SYNAPSEX_CONFIG", None)
        env.pop("SYNAPSEX_ADMIN_KEY", None)
        if admin_key:
            env["SYNAPSEX_ADMIN_KEY"] = admin_key
        env["SYNAPSEX_LOG_LEVEL"] = "debug"
        self.out_path = os.path.join(data_dir, f"stdout.{self.port}")
        self.err_path = os.path.join(data_dir, f"stderr.{self.port}")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data",
                 os.path.join(data_dir, "data")], stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, env=env, cwd=data_dir)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {self.stderr()}"
            try:
                if requests.get(self.base + "/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        self.kill()
        pytest.fail("server did not come up")

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def req(self, method, path, key, **kw):
        return requests.request(method, self.base + "/v1" + path, timeout=10,
                                headers={"Authorization": f"Bearer {key}"}, **kw)

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=15) == 0, self.stderr()[-2000:]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_generated_admin_key_printed_once(tmp_path):
    p = Proc(str(tmp_path))
    try:
        out = p.stdout()
        keys = [w for w in out.split() if w.startswith("sk-admin-")]
        assert len(keys) == 1, f"expected one generated admin key on stdout: {out!r}"
        key = keys[0]
        SENSITIVE.add_secret(key)
        assert len(key.rsplit("-", 1)[-1]) >= 43
        assert key not in p.stderr(), "the generated admin key went to the log"
        assert p.req("GET", "/tenants", key).status_code == 200
    finally:
        p.term()
    # Only a keyed hash is stored: the secret is nowhere in the data dir.
    secret = key.rsplit("-", 1)[-1].encode()
    for root, _, files in os.walk(tmp_path / "data"):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert secret not in fh.read(), f"admin secret stored in clear in {f}"
    p2 = Proc(str(tmp_path))
    try:
        assert "sk-admin-" not in p2.stdout(), "admin key printed again on restart"
        assert p2.req("GET", "/tenants", key).status_code == 200
    finally:
        p2.term()


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_state_survives_restart(tmp_path, stop):
    admin = "sk-admin-" + rand62(43)
    SENSITIVE.add_secret(admin)
    p = Proc(str(tmp_path), admin)
    try:
        slug = f"durable_{stop}"
        r = p.req("POST", "/tenants", admin, json={
            "name": "Durable", "slug": slug, "tier": "pro",
            "settings": {"rag_top_k": 9}})
        assert r.status_code == 201, r.text
        t = r.json()
        key = t["api_key"]
        SENSITIVE.add_secret(key)
        r = p.req("POST", f"/tenants/{slug}/keys", admin, json={})
        extra = r.json()
        SENSITIVE.add_secret(extra["api_key"])
        assert p.req("DELETE", f"/tenants/{slug}/keys/{extra['id']}", admin).status_code == 200
    finally:
        if stop == "sigkill":
            p.kill()
        else:
            p.term()
    # Tenant files hold hashes, never secrets.
    for root, _, files in os.walk(tmp_path / "data"):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                data = fh.read()
                assert key.rsplit("-", 1)[-1].encode() not in data, f
    p2 = Proc(str(tmp_path), admin)
    try:
        g = p2.req("GET", f"/tenants/{slug}", admin)
        assert g.status_code == 200 and g.json()["id"] == t["id"]
        s = p2.req("GET", f"/tenants/{t['id']}/settings", key)
        assert s.status_code == 200 and s.json()["rag_top_k"] == 9
        assert p2.req("GET", f"/tenants/{slug}/settings",
                      extra["api_key"]).status_code == 401
        a = p2.req("GET", "/admin/audit", admin, params={"tenant": t["id"]})
        actions = [e["action"] for e in a.json()["events"]]
        assert any("revoke" in x for x in actions) and any("create" in x for x in actions)
    finally:
        p2.term()
    for proc in (p, p2):
        log = proc.stderr() + proc.stdout()
        assert not SENSITIVE.leaks_in(log)


def test_wrong_admin_key_env_does_not_unlock(tmp_path):
    """A second start with another SYNAPSEX_ADMIN_KEY: the new key is the
    operator's choice now; a random key still gets nothing."""
    a1 = "sk-admin-" + rand62(43)
    SENSITIVE.add_secret(a1)
    p = Proc(str(tmp_path), a1)
    p.term()
    a2 = "sk-admin-" + rand62(43)
    SENSITIVE.add_secret(a2)
    p2 = Proc(str(tmp_path), a2)
    try:
        assert p2.req("GET", "/tenants", a2).status_code == 200
        assert p2.req("GET", "/tenants", "sk-admin-" + rand62(43)).status_code == 401
    finally:
        p2.term()
