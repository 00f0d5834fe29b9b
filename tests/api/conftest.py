"""Black-box API test harness for synapsex.

One real server process per test session (per xdist worker, if used): it is
started from SYNAPSEX_BIN (default build/synapsex) on a free loopback port with
a fresh data directory and a fresh random admin key, and stopped with SIGTERM
at the end (it must exit 0 within 20 s). Every secret the tests see or send is
recorded; at the end the server log must contain none of them, nor any tenant
text (system prompts, topics, contact emails) the tests stored.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BASE62 = string.ascii_letters + string.digits

# What each status must carry as error.type (DESIGN.md section 3).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


def rand62(n):
    return "".join(secrets.choice(BASE62) for _ in range(n))


def unique_slug(prefix="t"):
    """A slug no other test (or xdist worker) will use: lowercase + digits."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class Sensitive:
    """Collects every secret and every piece of tenant text the suite handles,
    so that the server log can be searched for them at the end."""

    SECRET_FIELDS = ("api_key", "key", "secret", "new_key", "old_key")

    def __init__(self):
        self.secrets = set()
        self.texts = set()

    def add_secret(self, value):
        if not isinstance(value, str) or len(value) < 8:
            return
        self.secrets.add(value)
        # The base62 secret part of sk-<kind>-<secret>: the last segment.
        tail = value.rsplit("-", 1)[-1]
        if len(tail) >= 16:
            self.secrets.add(tail)

    def add_text(self, value):
        if isinstance(value, str) and len(value) >= 6:
            self.texts.add(value)

    def scan(self, obj):
        """Records secrets found in a decoded JSON response."""
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in self.SECRET_FIELDS and isinstance(v, str):
                    self.add_secret(v)
                self.scan(v)
        elif isinstance(obj, list):
            for v in obj:
                self.scan(v)
        elif isinstance(obj, str) and obj.startswith("sk-") and len(obj) >= 40:
            self.add_secret(obj)

    def scan_request_json(self, obj):
        """Tenant text the tests store: prompts, topics, emails."""
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in ("custom_system_prompt", "contact_email"):
                    self.add_text(v)
                elif k in ("allowed_topics", "blocked_topics") and \
                        isinstance(v, list):
                    for t in v:
                        self.add_text(t)
                elif k in self.SECRET_FIELDS:
                    self.add_secret(v)
                else:
                    self.scan_request_json(v)

    def leaks_in(self, text):
        found = [s for s in self.secrets if s in text]
        found += [t for t in self.texts if t in text]
        return found


SENSITIVE = Sensitive()


class Server:
    def __init__(self, binary, port, data_dir, log_path, admin_key, proc):
        self.binary = binary
        self.port = port
        self.host = "127.0.0.1"
        self.root = f"http://127.0.0.1:{port}"
        self.base = self.root + "/v1"
        self.data_dir = data_dir
        self.log_path = log_path
        self.admin_key = admin_key
        self.proc = proc

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra_args=(), env_extra=None):
    """Starts SYNAPSEX_BIN (default build/synapsex) on a free loopback port
    with a fresh data directory and admin key, plus extra_args (models,
    upstreams) and env_extra; returns a Server once /healthz answers. Stop it
    with stop_server()."""
    binary = os.path.join(REPO, os.environ.get("SYNAPSEX_BIN", "build/synapsex"))
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        pytest.fail(f"server binary {binary!r} is missing: build it with "
                    f"`make build/synapsex` or set SYNAPSEX_BIN", pytrace=False)
    data_dir = tempfile.mkdtemp(prefix="sx-api-")
    log_path = os.path.join(data_dir, "server.log")
    admin_key = "sk-admin-" + rand62(43)
    SENSITIVE.add_secret(admin_key)
    env = dict(os.environ)
    env.pop("SYNAPSEX_CONFIG", None)
    env.update(env_extra or {})
    env["SYNAPSEX_ADMIN_KEY"] = admin_key
    env["SYNAPSEX_LOG_LEVEL"] = "debug"

    for attempt in range(3):
        port = _free_port()
        logf = open(log_path, "ab")
        proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data",
             os.path.join(data_dir, "data")] + list(extra_args),
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=data_dir)
        logf.close()
        srv = Server(binary, port, data_dir, log_path, admin_key, proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if requests.get(srv.root + "/healthz", timeout=1).status_code == 200:
                    return srv
            except requests.RequestException:
                pass
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail(f"server did not answer /healthz within 30 s; log:\n"
                        f"{srv.log_text()[-4000:]}", pytrace=False)
        # Exited: maybe the port was taken in between; retry on another.
    pytest.fail(f"server exited at start (rc={proc.returncode}); log:\n"
                f"{srv.log_text()[-4000:]}", pytrace=False)


def stop_server(srv):
    """Stops a server from start_server() with SIGTERM: it must exit 0 within
    20 s, and its log must hold none of the secrets or tenant text the tests
    recorded. A clean run leaves nothing behind; a failing one keeps the log."""
    srv.proc.send_signal(signal.SIGTERM)
    try:
        rc = srv.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        srv.proc.wait()
        pytest.fail("server did not exit within 20 s of SIGTERM")
    log = srv.log_text()
    assert rc == 0, f"server exited {rc} after SIGTERM; log tail:\n{log[-3000:]}"
    leaks = SENSITIVE.leaks_in(log)
    assert not leaks, (f"{len(leaks)} secret(s)/tenant text found in the server "
                       f"log {srv.log_path}, e.g. {sorted(leaks)[0][:12]}...")
    shutil.rmtree(srv.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    srv = start_server()
    yield srv
    stop_server(srv)


class Api:
    """Thin requests wrapper: base URL, Bearer keys, secret recording."""

    def __init__(self, srv):
        self.srv = srv
        self.http = requests.Session()

    def request(self, method, path, key=None, headers=None, root=False, **kw):
        h = {}
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        if headers:
            h.update(headers)
        for name, v in h.items():
            if name.lower() == "authorization" and isinstance(v, str):
                SENSITIVE.add_secret(v.split(" ", 1)[-1])
        if "json" in kw:
            SENSITIVE.scan_request_json(kw["json"])
        kw.setdefault("timeout", 15)
        url = (self.srv.root if root else self.srv.base) + path
        r = self.http.request(method, url, headers=h, **kw)
        try:
            SENSITIVE.scan(r.json())
        except ValueError:
            pass
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # Admin shortcuts.
    def aget(self, path, **kw):
        return self.get(path, key=self.srv.admin_key, **kw)

    def apost(self, path, **kw):
        return self.post(path, key=self.srv.admin_key, **kw)

    def apatch(self, path, **kw):
        return self.patch(path, key=self.srv.admin_key, **kw)

    def adelete(self, path, **kw):
        return self.delete(path, key=self.srv.admin_key, **kw)

    # Domain helpers.
    def create_tenant(self, slug=None, tier="free", name=None, settings=None,
                      contact_email=None):
        slug = slug or unique_slug()
        body = {"name": name or f"Tenant {slug}", "slug": slug, "tier": tier}
        if contact_email:
            body["contact_email"] = contact_email
        if settings is not None:
            body["settings"] = settings
        r = self.apost("/tenants", json=body)
        assert r.status_code in (200, 201), f"create tenant: {r.status_code} {r.text}"
        t = r.json()
        assert t["id"].startswith("tenant_"), t
        assert t["api_key"].startswith("sk-"), "create must return api_key once"
        return t, t["api_key"]

    def settings(self, tenant):
        r = self.aget(f"/tenants/{tenant}/settings")
        assert r.status_code == 200, r.text
        return r.json()

    def snapshot(self, tenant_id):
        """Everything admin-visible about one tenant, for 'state unchanged'."""
        t = self.aget(f"/tenants/{tenant_id}")
        s = self.aget(f"/tenants/{tenant_id}/settings")
        k = self.aget(f"/tenants/{tenant_id}/keys")
        return (t.status_code, strip_volatile(t.json()), s.status_code, s.json(),
                k.status_code, strip_volatile(k.json()))

    def tenant_count(self):
        n, cursor = 0, None
        for _ in range(1000):
            params = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            r = self.aget("/tenants", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            n += len(body["tenants"])
            cursor = next_cursor(body)
            if not cursor:
                return n
        raise AssertionError("tenant listing never ended")


VOLATILE = ("last_used_at", "updated_at_ms")


def strip_volatile(obj):
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def next_cursor(body):
    """The cursor for the next page, or None at the end."""
    if body.get("has_more") is False:
        return None
    for k in ("next_cursor", "cursor", "next"):
        if body.get(k):
            return body[k]
    return None


def key_items(body):
    for k in ("keys", "data", "platform_keys"):
        if isinstance(body.get(k), list):
            return body[k]
    raise AssertionError(f"no key list in {body}")


def assert_error(r, status, param=None, words=()):
    """The response is an OpenAI-shaped error with the right status and type;
    optionally names `param` and contains each of `words` in its message."""
    assert r.status_code == status, f"want {status}, got {r.status_code}: {r.text[:500]}"
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON: {r.text[:300]!r}")
    assert set(body) == {"error"}, body
    err = body["error"]
    for f in ("message", "type", "param", "code"):
        assert f in err, f"error lacks {f!r}: {body}"
    assert isinstance(err["message"], str) and len(err["message"]) >= 8, body
    assert err["type"] == ERROR_TYPES[status], body
    assert err["param"] is None or isinstance(err["param"], str), body
    assert err["code"] is None or isinstance(err["code"], str), body
    if param is not None:
        assert err["param"] == param, f"param should be {param!r}: {body}"
        assert param in err["message"], f"message should name {param!r}: {body}"
    for w in words:
        assert w.lower() in err["message"].lower(), f"{w!r} not in {err['message']!r}"
    return err


@pytest.fixture(scope="module")
def sapi(srv):
    """An Api on the module's own server: the serving tests define `srv`
    (started with the models or upstreams they need)."""
    return Api(srv)


@pytest.fixture(scope="session")
def api(server):
    return Api(server)


@pytest.fixture
def tenant(api):
    """A fresh free-tier tenant: (tenant json, api key)."""
    return api.create_tenant()


@pytest.fixture
def other_tenant(api):
    return api.create_tenant()


def raw_http(srv, data, timeout=10):
    """Sends raw bytes on a fresh connection and returns (status, headers, body)."""
    with socket.create_connection((srv.host, srv.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
                if _complete(b"".join(chunks)):
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    resp = b"".join(chunks)
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0]) if lines else None
    assert m, f"no HTTP status line in {resp[:200]!r}"
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), headers, body


def _complete(resp):
    head, sep, body = resp.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return bool(m) and len(body) >= int(m.group(1))


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False).encode()
