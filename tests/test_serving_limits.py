"""The HTTP server's edges with a stand-in generator (no model): lone surrogates, chunked
oversize bodies, a full queue, the API key (errors in OpenAI's shape: see test_serving_hardening)."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")


class FakeGenerator:
    tasks = ["python", "javascript"]
    method, seed, run_dir = "fake", 0, "nowhere"

    def __init__(self):
        self.release = threading.Event()
        self.release.set()

    def describe(self):
        return {"method": self.method, "languages": self.tasks}

    def generate_batch(self, prompts, language, max_new_tokens):
        self.release.wait(10)
        return [f"# {language}: {p}" for p in prompts]


class Server:
    def __init__(self, **options):
        from codecl.serve.server import create_app, listen

        self.generator = FakeGenerator()
        self.app = create_app(self.generator, max_wait_ms=0, **options)
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="critical", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def request(self, path, body: bytes | None = None, headers=None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, json.loads(exc.read())

    def close(self):
        self.generator.release.set()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def server():
    s = Server(max_prompt_chars=100)
    yield s
    s.close()


def test_lone_surrogates_are_a_400_in_the_error_shape(server):
    for body in (b'{"language": "python", "prompt": "x\\ud800y"}', b'{"language": "\\udfff", "prompt": "x"}',
                 b'{"language": "python", "prompt": 5, "x": "\\ud800"}'):
        status, headers, answer = server.request("/v1/generate", body)
        assert status == 400 and isinstance(answer["error"]["message"], str), (body, answer)
    status, _, answer = server.request("/v1/generate", b'{"language": "python", "prompt": "ok"}')
    assert status == 200 and answer["code"] == "# python: ok"


def chunked_post(port: int, chunks: list[bytes]) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for chunk in chunks:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed before the end: that is the point
            pass
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                dict(line.split(b": ", 1) for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]).get(b"content-length", b"0")):
            more = conn.recv(65536)
            if not more:
                break
            data += more
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_chunked_oversize_body_is_413_while_reading(server):
    status, answer = chunked_post(server.port, [b'{"language": "python", "prompt": "' + b"x" * 1000] * 200)
    assert status == 413 and "over the limit" in answer["error"]["message"]
    status, answer = chunked_post(server.port, [b'{"language": "python", ', b'"prompt": "small"}'])
    assert status == 200 and answer["code"] == "# python: small"


def test_a_full_queue_is_503_with_retry_after():
    s = Server(max_batch=1, max_queue=2)
    try:
        s.generator.release.clear()  # the first batch blocks; the next requests wait in the queue
        results = []

        def post(i):
            results.append(s.request("/v1/generate", json.dumps({"language": "python", "prompt": f"p{i}"}).encode()))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.2)
        status, headers, answer = s.request("/v1/generate", b'{"language": "python", "prompt": "late"}')
        assert status == 503 and headers.get("Retry-After") == "1" and "busy" in answer["error"]["message"]
        s.generator.release.set()
        for t in threads:
            t.join(10)
        assert sorted(r[0] for r in results) == [200, 200, 200]
    finally:
        s.close()


def test_api_key_guards_the_v1_routes():
    s = Server(api_key="sesame")
    try:
        body = b'{"language": "python", "prompt": "x"}'
        assert s.request("/v1/generate", body)[0] == 401
        assert s.request("/v1/generate", body, {"Authorization": "Bearer wrong"})[0] == 401
        status, headers, answer = s.request("/v1/tasks")
        assert status == 401 and "API key" in answer["error"]["message"] and headers.get("WWW-Authenticate") == "Bearer"
        assert s.request("/v1/generate", body, {"Authorization": "Bearer sesame"})[0] == 200
        assert s.request("/v1/generate", body, {"X-API-Key": "sesame"})[0] == 200
        assert s.request("/healthz")[0] == 200
    finally:
        s.close()


def test_error_shapes(server):
    status, _, answer = server.request("/v1/generate", b'{"language": "python", "prompt": 5}')
    assert status == 400 and answer["error"]["param"] == "prompt" and "prompt: " in answer["error"]["message"]
    status, _, answer = server.request("/v1/generate", b"{not json")
    assert status == 400 and answer["error"]["param"] == "body" and answer["error"]["code"] == "invalid_json"
    status, _, answer = server.request("/v1/generate", b'{"language": "rust", "prompt": "x"}')
    assert status == 404 and "known: python, javascript" in answer["error"]["message"]
    status, _, answer = server.request("/v1/generate", json.dumps({"language": "python", "prompt": "x" * 101}).encode())
    assert status == 413 and "100" in answer["error"]["message"]
    status, _, answer = server.request("/v1/generate", json.dumps({"language": "python", "prompt": "x" * 10_000}).encode())
    assert status == 413 and "over the limit" in answer["error"]["message"]  # from Content-Length, before reading
    status, _, answer = server.request("/v1/stats")
    assert status == 200 and answer["max_queue"] == 256 and answer["waiting"] == 0
