"""Support for the metering API tests (test_usage.py, test_limits.py): a
loopback mock of an OpenAI-compatible upstream (streamed chat and text
completions with usage, embeddings) and a synapsex server started with that
upstream as its `synapsex-chat` model, on its own data directory so that a
test may kill it and start it again on the same ledger.
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from conftest import REPO, SENSITIVE, rand62

MODEL = "synapsex-chat"
MOCK_PROMPT_TOKENS = 3  # what the mock reports by default; below any estimate
MOCK_MAX_COMPLETION = 4  # tokens generated at most per request


class _MockHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self._json(400, {"error": {"message": "bad json"}})
        mock = self.server.mock
        with mock.lock:
            mock.calls += 1
        if mock.delay_s:
            time.sleep(mock.delay_s)
        if self.path.endswith("/embeddings"):
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(len(inputs))]
            return self._json(200, {"object": "list", "data": data, "model": MODEL,
                                    "usage": {"prompt_tokens": 2 * len(inputs),
                                              "total_tokens": 2 * len(inputs)}})
        chat = self.path.endswith("/chat/completions")
        if not chat and not self.path.endswith("/completions"):
            return self._json(404, {"error": {"message": "no such path"}})
        n = min(int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
                MOCK_MAX_COMPLETION)
        words = ["tok%d " % i for i in range(n)]
        prompt_tokens = mock.count_prompt(body)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                 "total_tokens": prompt_tokens + n}
        obj = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                       "finish_reason": "length"} if chat else
                      {"index": 0, "text": "".join(words), "finish_reason": "length"})
            return self._json(200, {"id": "mock-1", "object": obj, "created": 1,
                                    "model": MODEL, "choices": [choice], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk_obj = obj + ".chunk" if chat else obj
        for w in words:
            choice = ({"index": 0, "delta": {"content": w}, "finish_reason": None} if chat
                      else {"index": 0, "text": w, "finish_reason": None})
            self._sse({"id": "mock-1", "object": chunk_obj, "created": 1, "model": MODEL,
                       "choices": [choice]})
        last = ({"index": 0, "delta": {}, "finish_reason": "length"} if chat
                else {"index": 0, "text": "", "finish_reason": "length"})
        self._sse({"id": "mock-1", "object": chunk_obj, "created": 1, "model": MODEL,
                   "choices": [last]})
        self._sse({"id": "mock-1", "object": chunk_obj, "created": 1, "model": MODEL,
                   "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _sse(self, obj):
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()


class MockUpstream:
    def __init__(self, delay_s=0.0):
        self.delay_s = delay_s
        # How the mock counts a prompt: MOCK_PROMPT_TOKENS always, or with
        # "bytes" as a worst-case tokenizer would (a token per byte of text
        # and 10 a message), far above synapsex's 4-bytes-a-token estimate.
        self.prompt_counting = "constant"
        self.calls = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _MockHandler)
        self.httpd.daemon_threads = True
        self.httpd.mock = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def count_prompt(self, body):
        if self.prompt_counting != "bytes":
            return MOCK_PROMPT_TOKENS
        if "messages" in body:
            return sum(len(str(m.get("content", "")).encode()) + 10 for m in body["messages"])
        return len(str(body.get("prompt", "")).encode())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MeteredServer:
    """A synapsex process with the mock upstream; restartable on its data."""

    def __init__(self, upstream, data_dir=None, ledger_sync=None, env_extra=None):
        self.upstream = upstream
        self.env_extra = dict(env_extra or {})  # e.g. libfaketime's variables
        self.ledger_sync = ledger_sync  # None: the server's default
        self.dir = data_dir or tempfile.mkdtemp(prefix="sx-meter-")
        self.data = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "server.log")
        self.admin_key = "sk-admin-" + rand62(43)
        SENSITIVE.add_secret(self.admin_key)
        self.proc = None
        self.port = None
        self.http = requests.Session()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def db_path(self):
        return os.path.join(self.data, "synapsex.db")

    def start(self):
        binary = os.path.abspath(os.environ.get("SYNAPSEX_BIN",
                                                os.path.join(REPO, "build/synapsex")))
        env = dict(os.environ)
        env.pop("SYNAPSEX_CONFIG", None)
        env["SYNAPSEX_ADMIN_KEY"] = self.admin_key
        env["SYNAPSEX_LOG_LEVEL"] = "info"
        env.update(self.env_extra)
        for _ in range(3):
            self.port = _free_port()
            with open(self.log_path, "ab") as logf:
                self.proc = subprocess.Popen(
                    [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data",
                     self.data, "--http-threads", "16", "--upstream",
                     f"{MODEL}={self.upstream.url}"] +
                    (["--ledger-sync", self.ledger_sync] if self.ledger_sync else []),
                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, cwd=self.dir)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(f"http://127.0.0.1:{self.port}/healthz",
                                    timeout=1).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not start:\n" + self.log_text()[-3000:])
        raise AssertionError("server exited at start:\n" + self.log_text()[-3000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def remove_data(self):
        """Deletes the data directory (after a clean stop)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def crash(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # Requests.
    def request(self, method, path, key=None, **kw):
        headers = kw.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
            SENSITIVE.add_secret(key)
        kw.setdefault("timeout", 30)
        return self.http.request(method, self.base + path, headers=headers, **kw)

    def create_tenant(self, slug, tier="pro", settings=None, name=None):
        body = {"name": name or f"Tenant {slug}", "slug": slug, "tier": tier}
        if settings:
            body["settings"] = settings
        r = self.request("POST", "/tenants", key=self.admin_key, json=body)
        assert r.status_code in (200, 201), r.text
        t = r.json()
        SENSITIVE.add_secret(t["api_key"])
        return t, t["api_key"]

    def chat(self, key, max_tokens=4, session=None, stream=False, **extra):
        body = {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
                "messages": [{"role": "user", "content": "hello"}]}
        body.update(extra)
        http = session or self.http
        return http.post(self.base + "/chat/completions", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {key}"})

    def ledger(self, sql, args=()):
        """Reads the usage tables directly (read-only, WAL allows it). A
        running server commits its journaled usage rows a little behind the
        responses; a usage report first makes it commit all of them."""
        if self.proc and self.proc.poll() is None:
            r = self.request("GET", "/admin/usage/tenants", key=self.admin_key)
            assert r.status_code == 200, r.text
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()


def completions_available(srv, key):
    """None when /v1/chat/completions is served, else the reason to skip:
    only the router's "no such endpoint" 404 counts as not served."""
    r = srv.chat(key)
    if r.status_code == 404 and "no such endpoint" in r.text:
        return "/v1/chat/completions is not served by this build (router 404)"
    return None
