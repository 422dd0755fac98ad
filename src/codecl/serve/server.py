"""The HTTP JSON API over a `Generator` (FastAPI + uvicorn): `codecl serve RUN_DIR`.

    POST /v1/generate  {"language", "prompt", "max_new_tokens"?} -> {"code", "language", "method", "latency_ms"}
    GET  /v1/tasks     the served method/seed, its languages, and every method of the run
    GET  /v1/stats     micro-batching counters (requests, batches, batch sizes)
    GET  /healthz      {"status": "ok", ...}

Errors are JSON objects with an `error` line (ASCII-escaped JSON, so that any input can be
echoed): 422 names the field at fault (and keeps FastAPI's `detail` list; a string with a lone
UTF-16 surrogate, e.g. "\\ud800", is a 422 too), 404 lists the known languages, 413 gives the
size limit (from Content-Length, or while reading a chunked body), 503 says the queue is full
(with `Retry-After`), 401 a missing or wrong API key. Concurrent requests for one language are
batched (`codecl.serve.batcher`).

With an API key (`--api-key`, or $CODECL_API_KEY), every /v1/ route needs
`Authorization: Bearer KEY` (or `X-API-Key: KEY`); /healthz stays open.
"""
# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime,
# and the request model is local to create_app (its limits come from the arguments).
import json
import secrets
import socket
import time
from contextlib import asynccontextmanager

from codecl import __version__
from codecl.errors import ConfigError
from codecl.serve.batcher import MicroBatcher, QueueFull
from codecl.serve.generator import Generator

MAX_NEW_TOKENS_LIMIT = 1024
"""Largest `max_new_tokens` a request may ask for."""


RETRY_AFTER_S = 1
"""Retry-After of a 503 (queue full)."""


def _error(status: int, message: str, headers: dict | None = None, **extra):
    from fastapi.responses import Response

    body = json.dumps({"error": message, **extra}, ensure_ascii=True)  # never fails, even on lone surrogates
    return Response(content=body, status_code=status, media_type="application/json", headers=headers)


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413, from Content-Length before reading, or while
    reading a body of unknown length (chunked), without buffering more than `max_bytes` + one chunk."""

    def __init__(self, app, max_bytes: int, max_prompt_chars: int):
        self.app, self.max_bytes, self.max_prompt_chars = app, max_bytes, max_prompt_chars

    def _too_large(self, size: str):
        return _error(413, f"request body of {size} bytes is over the limit of {self.max_bytes} bytes "
                           f"(prompts: at most {self.max_prompt_chars} characters)", limit_bytes=self.max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(length)(scope, receive, send)
        if length.isdigit():
            return await self.app(scope, receive, send)
        chunks, size = [], 0  # no Content-Length: read it all here, up to the limit
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(f"more than {self.max_bytes}")(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _field_name(error: dict) -> str:
    """`language`, `max_new_tokens`, ... from pydantic's `loc` (`body` for a body that is not a JSON object)."""
    if error["type"] == "json_invalid":
        return "body"
    return ".".join(str(part) for part in error["loc"] if part != "body") or "body"


def create_app(generator: Generator, max_batch: int = 8, max_wait_ms: float = 10.0, max_prompt_chars: int = 4000,
               max_queue: int = 256, api_key: str | None = None):
    """The FastAPI app; the micro-batcher starts and stops with the app's lifespan.

    `max_queue`: requests that may wait for a batch (more get 503); `api_key`: required on /v1/ routes."""
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from pydantic import BaseModel, ConfigDict, Field

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        language: str = Field(min_length=1, description="A trained language, e.g. python (see GET /v1/tasks).")
        prompt: str = Field(min_length=1, description=f"Natural-language description of the code (at most {max_prompt_chars} characters).")
        max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT,
                                           description="Generation budget; default: the run's eval.max_new_tokens.")

    class GenerateResponse(BaseModel):
        code: str
        language: str
        method: str
        latency_ms: float

    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key is empty; pass a non-empty --api-key (or leave it out)")
    batcher = MicroBatcher(generator.generate_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
    max_body_bytes = 4 * max_prompt_chars + 4096  # UTF-8 is at most 4 bytes a character, plus the JSON around it

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="codecl", version=__version__, lifespan=lifespan,
                  description=f"Code generation with the {generator.method} modules of {generator.run_dir}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        fields = [_field_name(e) for e in errors]
        message = "; ".join(f"{name}: {e['msg']}" + (f" ({e['ctx']['error']})" if "error" in e.get("ctx", {}) else "")
                            for name, e in zip(fields, errors))
        return _error(422, f"invalid request: {message}", fields=fields, detail=jsonable_encoder(errors))

    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes, max_prompt_chars=max_prompt_chars)

    if api_key is not None:
        wanted = api_key.encode()

        @app.middleware("http")
        async def _require_key(request: Request, call_next):
            if request.url.path.startswith("/v1/"):
                given = request.headers.get("x-api-key", "")
                scheme, _, token = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() == "bearer":
                    given = token.strip()
                if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"), wanted):
                    return _error(401, "missing or wrong API key (send `Authorization: Bearer KEY`)",
                                  headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)

    @app.post("/v1/generate", response_model=GenerateResponse)
    async def generate(body: GenerateRequest):
        started = time.perf_counter()
        bad = [name for name in ("language", "prompt") if _has_lone_surrogate(getattr(body, name))]
        if bad:
            return _error(422, f"invalid request: {bad[0]}: a lone UTF-16 surrogate is not text", fields=bad)
        if body.language not in generator.tasks:
            return _error(404, f"unknown language {body.language!r}; known: {', '.join(generator.tasks)}", known=generator.tasks)
        if len(body.prompt) > max_prompt_chars:
            return _error(413, f"prompt has {len(body.prompt)} characters; the limit is {max_prompt_chars}", limit=max_prompt_chars)
        try:
            code = await batcher.submit(body.prompt, body.language, body.max_new_tokens)
        except QueueFull as exc:
            return _error(503, f"server busy: {exc}; retry later", headers={"Retry-After": str(RETRY_AFTER_S)},
                          retry_after_s=RETRY_AFTER_S)
        except Exception as exc:  # the batch failed: one line, never a traceback page
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}")
        return GenerateResponse(code=code, language=body.language, method=generator.method,
                                latency_ms=round((time.perf_counter() - started) * 1000, 3))

    @app.get("/v1/tasks")
    async def tasks():
        return generator.describe()

    @app.get("/v1/stats")
    async def stats():
        return {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue, "waiting": batcher.waiting(),
                **batcher.stats.as_dict()}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "method": generator.method, "seed": generator.seed, "languages": generator.tasks,
                "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, **batcher.stats.as_dict()}}

    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one, read back with getsockname)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def require_dependencies() -> None:
    """FastAPI and uvicorn are the `serve` extra; say how to get them before loading a model."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"codecl serve needs FastAPI and uvicorn ({exc.name} is missing): pip install 'codecl[serve]'") from None


def serve(generator: Generator, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 8, max_wait_ms: float = 10.0,
          max_prompt_chars: int = 4000, log_level: str = "info", max_queue: int = 256, api_key: str | None = None) -> None:
    """Bind, announce the URL on stdout (one flushed line: `--port 0` callers read the port from it), serve until stopped."""
    require_dependencies()
    import uvicorn

    app = create_app(generator, max_batch=max_batch, max_wait_ms=max_wait_ms, max_prompt_chars=max_prompt_chars,
                     max_queue=max_queue, api_key=api_key)
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"serving {generator.method} (seed {generator.seed}; {', '.join(generator.tasks)}) on http://{shown}:{bound_port}",
          flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
