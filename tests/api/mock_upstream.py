"""A loopback OpenAI-compatible upstream for the serving tests, plus a
helper that starts synapsex with extra flags (models, upstreams).

The mock answers /v1/chat/completions, /v1/completions and /v1/embeddings
with canned text. The last user message (or the prompt) steers it:
  "MOCK:delay=S"     wait S seconds before answering
  "MOCK:status=N"    answer HTTP N with an OpenAI error body
  "MOCK:context"     answer 400 as vLLM does for a prompt over the context
  "MOCK:nousage"     never send a usage object
  "MOCK:slow=N"      stream N chunks, 0.1 s apart (for disconnect tests)
  "MOCK:cut"         close the stream before the end
  "MOCK:chunked"     stream with chunked transfer coding on a kept
                     connection, as vLLM (uvicorn) does
Every request body is recorded in MockUpstream.requests; a relay the client
dropped is counted in MockUpstream.disconnects, connections accepted in
MockUpstream.connections.
"""
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
import conftest  # noqa: E402  (shared server helpers and the leak check)

REPLY = "Aspirin interacts with warfarin and ibuprofen."


class MockUpstream:
    def __init__(self, key=None):
        self.key = key
        self.requests = []
        self.disconnects = 0
        self.connections = 0
        self.lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with mock.lock:
                    mock.connections += 1

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                with mock.lock:
                    mock.requests.append({"path": self.path, "body": body,
                                          "auth": self.headers.get("Authorization")})
                if mock.key and self.headers.get("Authorization") != f"Bearer {mock.key}":
                    return self.error(401, "bad key")
                steer = mock.steer(body)
                m = re.search(r"MOCK:delay=([\d.]+)", steer)
                if m:
                    time.sleep(float(m.group(1)))
                m = re.search(r"MOCK:status=(\d+)", steer)
                if m:
                    return self.error(int(m.group(1)), "mock failure")
                if "MOCK:context" in steer:
                    return self.error(400, "This model's maximum context length is 2048 "
                                           "tokens. However, you requested 4100 tokens.")
                if self.path.endswith("/embeddings"):
                    return self.embeddings(body)
                if body.get("stream"):
                    return self.stream(body, steer)
                return self.whole(body, steer)

            def error(self, status, msg):
                data = json.dumps({"error": {"message": msg, "type": "x",
                                             "param": None, "code": None}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def embeddings(self, body):
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                data = {"object": "list", "model": body["model"],
                        "data": [{"object": "embedding", "index": i,
                                  "embedding": [0.5, -0.25, float(len(s))]}
                                 for i, s in enumerate(inputs)],
                        "usage": {"prompt_tokens": 7 * len(inputs), "total_tokens": 7}}
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def whole(self, body, steer):
                # The same steering as a stream: slow=N takes N * 0.1 s,
                # cut sends half the body, nousage leaves usage out.
                chat = "messages" in body
                m = re.search(r"MOCK:slow=(\d+)", steer)
                words = ["w "] * int(m.group(1)) if m else REPLY.split(" ")
                if m:
                    time.sleep(0.1 * len(words))
                text = "".join(words).rstrip() if m else REPLY
                choice = {"index": 0, "finish_reason": "stop"}
                if chat:
                    choice["message"] = {"role": "assistant", "content": text}
                else:
                    choice["text"] = text
                out = {"id": "x", "object": "chat.completion" if chat else "text_completion",
                       "choices": [choice]}
                if "MOCK:nousage" not in steer:
                    out["usage"] = {"prompt_tokens": 11, "completion_tokens": len(words),
                                    "total_tokens": 11 + len(words)}
                raw = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if "MOCK:cut" in steer:
                    self.send_header("Connection", "close")
                    raw = raw[:len(raw) // 2]
                self.end_headers()
                try:
                    self.wfile.write(raw)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with mock.lock:
                        mock.disconnects += 1

            def stream(self, body, steer):
                chat = "messages" in body
                self.chunked = "MOCK:chunked" in steer
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if self.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                m = re.search(r"MOCK:slow=(\d+)", steer)
                words = ["w "] * int(m.group(1)) if m else \
                    [w + " " for w in REPLY.split(" ")]
                words[-1] = words[-1].rstrip()
                try:
                    for i, w in enumerate(words):
                        if chat:
                            ch = {"index": 0, "delta": {"content": w}, "finish_reason": None}
                        else:
                            ch = {"index": 0, "text": w, "finish_reason": None}
                        self.event({"id": "u", "choices": [ch]})
                        if m:
                            time.sleep(0.1)
                        if "MOCK:cut" in steer and i == 1:
                            self.close_connection = True
                            return
                    last = {"index": 0, "finish_reason": "stop"}
                    last["delta" if chat else "text"] = {} if chat else ""
                    self.event({"id": "u", "choices": [last]})
                    if "MOCK:nousage" not in steer and \
                            (body.get("stream_options") or {}).get("include_usage"):
                        self.event({"id": "u", "choices": [], "usage": {
                            "prompt_tokens": 11, "completion_tokens": len(words),
                            "total_tokens": 11 + len(words)}})
                    self.write_part(b"data: [DONE]\n\n")
                    if self.chunked:
                        self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with mock.lock:
                        mock.disconnects += 1

            def event(self, obj):
                self.write_part(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            def write_part(self, data):
                if self.chunked:
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def steer(body):
        if "prompt" in body:
            return str(body["prompt"])
        if isinstance(body.get("input"), str):
            return body["input"]
        msgs = body.get("messages") or []
        users = [m for m in msgs if m.get("role") == "user"]
        return str(users[-1]["content"]) if users else ""

    def last(self, path_end="/chat/completions"):
        with self.lock:
            for r in reversed(self.requests):
                if r["path"].endswith(path_end):
                    return r
        return None

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def fixtures_dir():
    """The fixtures folder, or None where it is absent."""
    d = os.environ.get("SYNAPSEX_FIXTURES",
                       os.path.join(conftest.REPO, "..", "shared", "fixtures"))
    d = os.path.abspath(d)
    return d if os.path.isdir(os.path.join(d, "models")) else None


def fixture_model(name):
    """The path of models/<name> in the fixtures, or None where it is absent."""
    d = fixtures_dir()
    if d is None:
        return None
    path = os.path.join(d, "models", name)
    return path if os.path.isfile(path) else None


def tiny_model():
    return fixture_model("tiny-qwen2-q8_0.gguf")


def start_synapsex(extra_args, env_extra=None):
    """Starts build/synapsex on a free port with extra flags; returns a
    conftest.Server. Stop it with stop_synapsex()."""
    return conftest.start_server(extra_args, env_extra)


def stop_synapsex(srv):
    conftest.stop_server(srv)


if __name__ == "__main__":
    # Standalone: python3 mock_upstream.py [PORT-file]; prints the URL.
    m = MockUpstream(key=os.environ.get("MOCK_KEY"))
    print(m.url, flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
