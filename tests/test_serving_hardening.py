"""The HTTP server with a stand-in generator (no model): the OpenAI-compatible routes, one error shape
on every status, no local paths in any answer, per-request timeouts, abandoned requests leaving the
queue, mixed token budgets in one batch, the warning for an exposed address without a key."""
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

from codecl.serve.generator import Generation  # noqa: E402


class FakeGenerator:
    """Writes `LANG: PROMPT` word by word, one word a token: a budget of k keeps k words (then `truncated`)."""
    tasks = ["python", "javascript"]
    method, seed = "fake", 0

    def __init__(self, run_dir="nowhere"):
        self.run_dir = run_dir
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.calls: list[tuple[list[str], list]] = []
        self.fail_with: Exception | None = None

    @property
    def seen(self) -> list[str]:
        """Every prompt generated so far."""
        return [p for prompts, _ in self.calls for p in prompts]

    def describe(self):
        return {"method": self.method, "languages": self.tasks, "base_model": {"name": "tiny"}}

    def generate_records(self, prompts, language, budgets):
        self.calls.append((list(prompts), list(budgets)))
        self.started.set()
        self.release.wait(20)
        if self.fail_with is not None:
            raise self.fail_with
        out = []
        for prompt, budget in zip(prompts, budgets):
            words = f"{language}: {prompt}".split()
            budget = budget or 24
            out.append(Generation(" ".join(words[:budget]), len(words) > budget, len(prompt.split()), min(len(words), budget), budget))
        return out


class Server:
    def __init__(self, generator=None, **options):
        from codecl.serve.server import create_app, listen

        self.generator = generator or FakeGenerator()
        self.app = create_app(self.generator, **{"max_wait_ms": 0, **options})
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="critical", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def raw(self, path, body: bytes | None = None, headers=None, method=None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def request(self, path, body=None, headers=None, method=None):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        status, headers, raw = self.raw(path, data, headers, method)
        return status, headers, json.loads(raw)

    def close(self):
        self.generator.release.set()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def server():
    s = Server(max_prompt_chars=100)
    yield s
    s.close()


def assert_error(status, raw: bytes, want_status, param=None):
    """OpenAI's error shape, ASCII-only."""
    assert status == want_status, raw
    raw.decode("ascii")
    body = json.loads(raw)
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    assert error["param"] == param, error
    return error


# ---------------------------------------------------------------- OpenAI-compatible routes


def test_models_lists_one_model_a_task(server):
    status, _, body = server.request("/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["fake/python", "fake/javascript", "fake"]  # "fake": the method, routed per prompt
    assert body["data"][-1]["routed"] is True and body["data"][-1]["task"] is None
    assert all(m["object"] == "model" and m["owned_by"] == "codecl" and isinstance(m["created"], int) for m in body["data"])
    status, _, body = server.request("/v1/models/fake/javascript")
    assert status == 200 and body["id"] == "fake/javascript" and body["task"] == "javascript"
    status, _, raw = server.raw("/v1/models/lora/rust")
    assert assert_error(status, raw, 404, "model")["code"] == "model_not_found"


def test_completions_in_openais_shape(server):
    status, _, body = server.request("/v1/completions", {"model": "fake/python", "prompt": "add two numbers", "max_tokens": 3,
                                                         "temperature": 0, "n": 1, "user": "someone"})
    assert status == 200, body
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == "fake/python"
    assert isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "text": "python: add two", "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    # a list of prompts: one choice each, in order; a bare task name is an alias; stop ends the text
    status, _, body = server.request("/v1/completions", {"model": "javascript", "prompt": ["a b", "c d e"], "stop": [" d"]})
    assert status == 200 and body["model"] == "fake/javascript"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in body["choices"]] == [(0, "javascript: a b", "stop"),
                                                                                     (1, "javascript: c", "stop")]
    assert body["usage"]["prompt_tokens"] == 5


def test_chat_completions_use_the_last_user_message(server):
    messages = [{"role": "system", "content": "You write code."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "x"}, {"role": "user", "content": [{"type": "text", "text": "sort a list"}]}]
    status, _, body = server.request("/v1/chat/completions", {"model": "fake/python", "messages": messages, "max_tokens": 50})
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "python: sort a list"}, "logprobs": None,
                                "finish_reason": "stop"}]
    assert body["usage"]["completion_tokens"] == 4
    status, _, raw = server.raw("/v1/chat/completions", json.dumps({"model": "fake/python", "messages": [
        {"role": "system", "content": "no user"}]}).encode())
    assert_error(status, raw, 400, "messages")


@pytest.mark.parametrize("extra, field", [
    ({"temperature": 0.7}, "temperature"), ({"top_p": 0.5}, "top_p"), ({"n": 2}, "n"), ({"stream": True}, "stream"),
    ({"best_of": 3}, "best_of"), ({"logprobs": 2}, "logprobs"), ({"echo": True}, "echo"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "many"}, "max_tokens"), ({"prompt": 5}, "prompt"), ({"prompt": []}, "prompt"), ({"stop": ["a"] * 5}, "stop"),
])
def test_unsupported_options_are_a_400_naming_the_field(server, extra, field):
    status, _, raw = server.raw("/v1/completions", json.dumps({"model": "fake/python", "prompt": "x", **extra}).encode())
    error = assert_error(status, raw, 400, field)
    assert field in error["message"] and error["type"] == "invalid_request_error"
    assert server.generator.calls == []


# ---------------------------------------------------------------- one error shape everywhere


def test_every_error_status_has_the_openai_shape(server):
    assert_error(*server.raw("/v2/nothing")[::2], 404)
    assert_error(*server.raw("/v1/generate", method="GET")[::2], 405)
    assert_error(*server.raw("/v1/models", b"{}", method="POST")[::2], 405)
    assert_error(*server.raw("/v1/completions", b"{not json")[::2], 400, "body")
    assert_error(*server.raw("/v1/generate", b"{not json")[::2], 400, "body")
    assert_error(*server.raw("/v1/generate", b'{"language": "python", "prompt": 5}')[::2], 400, "prompt")
    assert_error(*server.raw("/v1/generate", b'{"language": "python", "prompt": "x\\ud800y"}')[::2], 400, "prompt")
    assert_error(*server.raw("/v1/completions", b'{"model": "fake/python", "prompt": "\\udfff"}')[::2], 400, "prompt")
    assert_error(*server.raw("/v1/generate", b'{"language": "rust", "prompt": "x"}')[::2], 404, "language")
    assert_error(*server.raw("/v1/completions", b'{"model": "\xc3\xa9/rust", "prompt": "x"}')[::2], 404, "model")
    assert_error(*server.raw("/v1/generate", json.dumps({"language": "python", "prompt": "x" * 101}).encode())[::2], 413, "prompt")
    assert_error(*server.raw("/v1/completions", json.dumps({"model": "python", "prompt": ["a", "x" * 101]}).encode())[::2], 413,
                 "prompt.1")
    assert_error(*server.raw("/v1/generate", json.dumps({"language": "python", "prompt": "x" * 10_000}).encode())[::2], 413)
    status, _, body = server.request("/v1/generate", {"language": "python", "prompt": "ok"})
    assert status == 200 and body["code"] == "python: ok"


def test_401_has_the_openai_shape():
    s = Server(api_key="sesame")
    try:
        status, headers, raw = s.raw("/v1/models")
        assert assert_error(status, raw, 401)["code"] == "invalid_api_key" and headers.get("WWW-Authenticate") == "Bearer"
        assert s.raw("/v1/models", headers={"Authorization": "Bearer sesame"})[0] == 200
        assert s.raw("/healthz")[0] == 200
    finally:
        s.close()


def test_503_and_500_have_the_openai_shape(tmp_path):
    s = Server(FakeGenerator(str(tmp_path)), max_batch=1, max_queue=1)
    try:
        s.generator.release.clear()
        first = threading.Thread(target=s.request, args=("/v1/generate", {"language": "python", "prompt": "slow"}))
        first.start()
        assert s.generator.started.wait(10)
        second = threading.Thread(target=s.request, args=("/v1/generate", {"language": "python", "prompt": "queued"}))
        second.start()
        _wait_for(lambda: s.request("/v1/stats")[2]["waiting"] == 1)
        status, headers, raw = s.raw("/v1/completions", json.dumps({"model": "fake/python", "prompt": "late"}).encode())
        assert assert_error(status, raw, 503)["code"] == "queue_full" and headers.get("Retry-After") == "1"
        s.generator.release.set()
        first.join(10), second.join(10)
        s.generator.fail_with = FileNotFoundError(f"{tmp_path}/weights/model.safetensors is gone")
        status, _, raw = s.raw("/v1/generate", json.dumps({"language": "python", "prompt": "boom"}).encode())
        error = assert_error(status, raw, 500)
        assert str(tmp_path) not in error["message"] and "weights" not in error["message"] and "<path>" in error["message"]
    finally:
        s.close()


# ---------------------------------------------------------------- no local paths


def test_no_local_path_in_any_answer(tmp_path):
    secret = tmp_path / "runs" / "secret-run"
    s = Server(FakeGenerator(str(secret)))
    try:
        answers = [s.raw(path)[2] for path in ("/openapi.json", "/docs", "/healthz", "/v1/tasks", "/v1/models", "/v1/stats",
                                                "/v1/models/nothing", "/nowhere")]
        answers.append(s.raw("/v1/generate", b'{"language": "go", "prompt": "x"}')[2])
        for raw in answers:
            text = raw.decode()
            assert str(tmp_path) not in text and "secret-run" not in text, text[:300]
        assert "fake" in json.loads(answers[0])["info"]["description"]
    finally:
        s.close()


# ---------------------------------------------------------------- timeouts and abandoned requests


def _wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_request_waiting_too_long_is_504_and_never_generated():
    s = Server(max_batch=1, request_timeout_s=0.5)
    try:
        s.generator.release.clear()  # the first batch blocks
        results = {}
        slow = threading.Thread(target=lambda: results.update(slow=s.raw("/v1/generate", b'{"language": "python", "prompt": "slow"}')))
        slow.start()
        assert s.generator.started.wait(10)
        started = time.monotonic()
        status, _, raw = s.raw("/v1/completions", json.dumps({"model": "fake/python", "prompt": "late"}).encode())
        assert 0.4 < time.monotonic() - started < 5
        assert assert_error(status, raw, 504)["code"] == "request_timeout"
        slow.join(10)
        assert_error(results["slow"][0], results["slow"][2], 504)  # its batch ran too long: its answer is dropped
        s.generator.release.set()
        _wait_for(lambda: s.request("/v1/stats")[2]["abandoned"] == 1)
        stats = s.request("/v1/stats")[2]
        assert stats["timeouts"] == 2 and stats["cancelled"] == 1 and stats["waiting"] == 0
        assert s.generator.seen == ["slow"]  # "late" left the queue: never generated
        assert s.request("/v1/generate", {"language": "python", "prompt": "after"})[0] == 200
        assert s.generator.seen == ["slow", "after"]
    finally:
        s.close()


def test_a_client_that_goes_away_is_taken_out_of_the_queue():
    s = Server(max_batch=1)
    try:
        s.generator.release.clear()
        results = {}
        slow = threading.Thread(target=lambda: results.update(slow=s.request("/v1/generate", {"language": "python", "prompt": "slow"})))
        slow.start()
        assert s.generator.started.wait(10)
        body = json.dumps({"model": "fake/python", "prompt": "abandoned"}).encode()
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as conn:
            conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            _wait_for(lambda: s.request("/v1/stats")[2]["waiting"] == 1)
        _wait_for(lambda: s.request("/v1/stats")[2]["disconnects"] == 1)  # noticed while its batch had not started
        stats = s.request("/v1/stats")[2]
        assert stats["cancelled"] == 1 and stats["waiting"] == 0
        s.generator.release.set()
        slow.join(10)
        assert results["slow"][0] == 200
        assert s.generator.seen == ["slow"]  # the abandoned prompt never reached the model
    finally:
        s.close()


# ---------------------------------------------------------------- mixed budgets share a batch


def test_requests_with_different_budgets_share_a_batch_and_keep_their_own():
    s = Server(max_batch=8, max_wait_ms=300)
    try:
        bodies = [{"model": "fake/python", "prompt": "one two three four five six", "max_tokens": k} for k in (2, 5)]
        results = [None, None]
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, s.request("/v1/completions", bodies[i])))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(s.generator.calls) == 1  # one batch, one budget each
        assert s.generator.calls[0][0] == ["one two three four five six"] * 2 and sorted(s.generator.calls[0][1]) == [2, 5]
        texts = [r[2]["choices"][0]["text"] for r in results]
        assert texts == ["python: one", "python: one two three four"]
        alone = [s.request("/v1/completions", body)[2]["choices"][0]["text"] for body in bodies]
        assert alone == texts
    finally:
        s.close()


# ---------------------------------------------------------------- exposed without a key


def test_listening_beyond_loopback_without_a_key_warns(capsys):
    from codecl.serve.server import exposure_warning, make_server

    for host, key, warned in [("0.0.0.0", None, True), ("0.0.0.0", "k", False), ("127.0.0.1", None, False),
                              ("localhost", None, False), ("::1", None, False)]:
        try:
            server, sock, url = make_server(FakeGenerator(), host=host, port=0, api_key=key)
        except Exception as exc:  # e.g. no IPv6 here
            assert host == "::1", exc
            continue
        sock.close()
        err = capsys.readouterr().err
        assert ("without an API key" in err) == warned, (host, key, err)
        assert (exposure_warning(host, key) is not None) == warned
    assert "--api-key" in exposure_warning("10.1.2.3", None)
