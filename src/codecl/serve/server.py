"""The HTTP JSON API over a `Generator` (FastAPI + uvicorn): `codecl serve RUN_DIR`.

    POST /v1/generate  {"language", "prompt", "max_new_tokens"?} -> {"code", "language", "method", "latency_ms"}
    GET  /v1/tasks     the served method/seed, its languages, and every method of the run
    GET  /v1/stats     micro-batching counters (requests, batches, batch sizes)
    GET  /healthz      {"status": "ok", ...}

Errors are JSON objects with an `error` line: 422 names the field at fault (and keeps FastAPI's
`detail` list), 404 lists the known languages, 413 gives the size limit. Concurrent requests for
one language are batched (`codecl.serve.batcher`).
"""
# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime,
# and the request model is local to create_app (its limits come from the arguments).
import socket
import time
from contextlib import asynccontextmanager

from codecl import __version__
from codecl.errors import ConfigError
from codecl.serve.batcher import MicroBatcher
from codecl.serve.generator import Generator

MAX_NEW_TOKENS_LIMIT = 1024
"""Largest `max_new_tokens` a request may ask for."""


def _error(status: int, message: str, **extra):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message, **extra})


def _field_name(error: dict) -> str:
    """`language`, `max_new_tokens`, ... from pydantic's `loc` (`body` for a body that is not a JSON object)."""
    if error["type"] == "json_invalid":
        return "body"
    return ".".join(str(part) for part in error["loc"] if part != "body") or "body"


def create_app(generator: Generator, max_batch: int = 8, max_wait_ms: float = 10.0, max_prompt_chars: int = 4000):
    """The FastAPI app; the micro-batcher starts and stops with the app's lifespan."""
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

    batcher = MicroBatcher(generator.generate_batch, max_batch=max_batch, max_wait_ms=max_wait_ms)
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

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            return _error(413, f"request body of {length} bytes is over the limit of {max_body_bytes} bytes "
                               f"(prompts: at most {max_prompt_chars} characters)")
        return await call_next(request)

    @app.post("/v1/generate", response_model=GenerateResponse)
    async def generate(body: GenerateRequest):
        started = time.perf_counter()
        if body.language not in generator.tasks:
            return _error(404, f"unknown language {body.language!r}; known: {', '.join(generator.tasks)}", known=generator.tasks)
        if len(body.prompt) > max_prompt_chars:
            return _error(413, f"prompt has {len(body.prompt)} characters; the limit is {max_prompt_chars}", limit=max_prompt_chars)
        try:
            code = await batcher.submit(body.prompt, body.language, body.max_new_tokens)
        except Exception as exc:  # the batch failed: one line, never a traceback page
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}")
        return GenerateResponse(code=code, language=body.language, method=generator.method,
                                latency_ms=round((time.perf_counter() - started) * 1000, 3))

    @app.get("/v1/tasks")
    async def tasks():
        return generator.describe()

    @app.get("/v1/stats")
    async def stats():
        return {"max_batch": max_batch, "max_wait_ms": max_wait_ms, **batcher.stats.as_dict()}

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
          max_prompt_chars: int = 4000, log_level: str = "info") -> None:
    """Bind, announce the URL on stdout (one flushed line: `--port 0` callers read the port from it), serve until stopped."""
    require_dependencies()
    import uvicorn

    app = create_app(generator, max_batch=max_batch, max_wait_ms=max_wait_ms, max_prompt_chars=max_prompt_chars)
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"serving {generator.method} (seed {generator.seed}; {', '.join(generator.tasks)}) on http://{shown}:{bound_port}",
          flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
