"""The HTTP JSON API over a `Generator` (FastAPI + uvicorn): `codecl serve RUN_DIR`.

    POST /v1/generate          {"language"?, "prompt", "max_new_tokens"?} -> {"code", "language", "method", "latency_ms", "routed"}
    GET  /v1/models            OpenAI: one model a trained task of the served method, id "METHOD/TASK"
    POST /v1/completions       OpenAI: {"model", "prompt": str | [str], "max_tokens"?, "temperature"? (0), "n"? (1), "stop"?}
    POST /v1/chat/completions  OpenAI: {"model", "messages": [...]}; the last user message is the description
    GET  /v1/tasks             the served method/seed, its languages, and every method of the run
    GET  /v1/stats             micro-batching counters (requests, batches, batch sizes, cancelled, timeouts)
    GET  /healthz              {"status": "ok", ...}

Model ids are `METHOD/TASK` (`hybrid/python`), as vLLM names a LoRA module; a bare task name
(`python`) is accepted too. Task-free requests (`codecl.routing`): the model id `METHOD` (or `auto`),
and a /v1/generate body without `language`, send each prompt to the task the router picks from the
prompt alone; the response names it (`language`, `routed: true`; a completion choice's `task`). Decoding is greedy (the run's evaluation): `temperature` other than 0,
`top_p` other than 1, `n`/`best_of` other than 1, `stream`, `echo` and `logprobs` are a 400
naming the field. `finish_reason` is "length" when decoding stopped at the token budget, else "stop".

Every error, on every route and status (400 bad JSON or field, 401, 404 unknown path, model or
language, 405 wrong method, 413, 500, 503 queue full with `Retry-After`, 504 timed out), is
OpenAI's shape, ASCII-escaped JSON (any input can be echoed; a lone UTF-16 surrogate is a 400):
`{"error": {"message", "type", "param", "code"}}`. No response names a local path.

A request that waits longer than `request_timeout_s` gets 504; a request whose client went away,
or that timed out, leaves the queue before its batch starts and is never generated. Concurrent
requests for one language are batched (`codecl.serve.batcher`), whatever their token budgets.

With an API key (`--api-key`, or $CODECL_API_KEY), every /v1/ route needs
`Authorization: Bearer KEY` (or `X-API-Key: KEY`); /healthz stays open. Binding to an address
other than loopback without a key prints a warning on stderr.
"""
# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime,
# and the request model is local to create_app (its limits come from the arguments).
import asyncio
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from codecl import __version__
from codecl.errors import ConfigError
from codecl.serve.batcher import MicroBatcher, QueueFull
from codecl.serve.generator import Generator

MAX_NEW_TOKENS_LIMIT = 1024
"""Largest `max_new_tokens` a request may ask for."""


RETRY_AFTER_S = 1
"""Retry-After of a 503 (queue full)."""

REQUEST_TIMEOUT_S = 120.0
"""Default of `request_timeout_s`: longer waits get 504."""

MAX_PROMPTS = 64
ROUTED = "\0routed"
"""`task_of`'s answer for the model ids `METHOD`, `METHOD/auto` and `auto`: every prompt goes where the router sends it."""
"""Most prompts in one /v1/completions request."""

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                405: "invalid_request_error", 413: "invalid_request_error", 500: "server_error", 503: "server_error",
                504: "timeout_error"}
_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?(?:[/\\][\w.~+@-]+){2,}[/\\]?")
_PRIVATE_DIRS: list[str] = []
"""Local folders whose names are taken out of error messages (the run's, the cache's, ...)."""


def _scrub(text: str, everything: bool = False) -> str:
    """`text` without the local folders codecl knows of (and, with `everything`, without anything path-like)."""
    for folder in sorted({d for d in _PRIVATE_DIRS if d and len(d) > 1}, key=len, reverse=True):
        text = text.replace(folder, "<path>")
    return _PATH.sub("<path>", text) if everything else text


def _error(status: int, message: str, headers: dict | None = None, param: str | None = None, code: str | None = None):
    """OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`, ASCII-escaped JSON."""
    from fastapi.responses import Response

    error = {"message": _scrub(message, everything=status >= 500), "type": _ERROR_TYPES.get(status, "invalid_request_error"),
             "param": param, "code": code}
    body = json.dumps({"error": error}, ensure_ascii=True)  # never fails, even on lone surrogates
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
                           f"(prompts: at most {self.max_prompt_chars} characters)", code="request_too_large")

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


class _RequireKey:
    """ASGI middleware: /v1/ routes need the API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`)."""

    def __init__(self, app, api_key: str):
        self.app, self.wanted = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith("/v1/"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            given = headers.get("x-api-key", "")
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer":
                given = token.strip()
            if not secrets.compare_digest(given.encode("latin-1", "replace"), self.wanted):
                response = _error(401, "missing or wrong API key (send `Authorization: Bearer KEY`)",
                                  headers={"WWW-Authenticate": "Bearer"}, code="invalid_api_key")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _field_name(error: dict) -> str:
    """`language`, `max_new_tokens`, `messages.0.content` ... from pydantic's `loc` (`body` for a body that is
    not a JSON object); the names of union members (`str`, `list[...]`) are left out."""
    if error["type"] == "json_invalid":
        return "body"
    parts = [part for part in error["loc"][1 if error["loc"][:1] == ("body",) else 0:]]
    kept = [str(p) for p in parts if isinstance(p, int) or (isinstance(p, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p)
                                                            and p not in ("str", "int", "float", "bool", "list", "dict"))]
    return ".".join(kept) or "body"


async def _client_gone(request) -> None:
    """Returns when the client has disconnected (the body is read already: the next message says so)."""
    while True:
        try:
            message = await request.receive()
        except Exception:  # the connection is gone
            return
        if message.get("type") == "http.disconnect":
            return


class _Abandoned(Exception):
    """The client went away, or its time ran out (`timed_out`), before its answer was ready."""

    def __init__(self, timed_out: bool):
        super().__init__("timed out" if timed_out else "client went away")
        self.timed_out = timed_out


def _records_of(generator):
    """`generate(prompts, language, budgets) -> [Generation]`: the generator's own `generate_records`,
    or one built on `generate_batch` (budgets decoded one at a time; no truncation flags or counts)."""
    if hasattr(generator, "generate_records"):
        return generator.generate_records
    from codecl.serve.generator import Generation

    def generate(prompts, language, budgets):
        out = [None] * len(prompts)
        for budget in dict.fromkeys(budgets):
            idx = [i for i, b in enumerate(budgets) if b == budget]
            for i, text in zip(idx, generator.generate_batch([prompts[i] for i in idx], language, budget)):
                out[i] = Generation(text, False, 0, 0, budget or 0)
        return out

    return generate


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for listening beyond this machine without an API key (None on loopback or with a key)."""
    if api_key:
        return None
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (f"warning: listening on {host} without an API key: anyone who can reach this address can use the "
            f"server; pass --api-key (or set $CODECL_API_KEY), or bind to 127.0.0.1")


def create_app(generator: Generator, max_batch: int = 8, max_wait_ms: float = 10.0, max_prompt_chars: int = 4000,
               max_queue: int = 256, api_key: str | None = None, request_timeout_s: float | None = REQUEST_TIMEOUT_S):
    """The FastAPI app; the micro-batcher starts and stops with the app's lifespan.

    `max_queue`: requests that may wait for a batch (more get 503); `api_key`: required on /v1/ routes;
    `request_timeout_s`: a request not answered by then gets 504 (None: no limit)."""
    from typing import Annotated

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        language: str | None = Field(default=None, min_length=1, description="A trained language, e.g. python (see GET /v1/tasks); "
                                     "left out: the router picks it from the prompt (codecl.routing).")
        prompt: str = Field(min_length=1, description=f"Natural-language description of the code (at most {max_prompt_chars} characters).")
        max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT,
                                           description="Generation budget; default: the run's eval.max_new_tokens.")

    class GenerateResponse(BaseModel):
        code: str
        language: str
        method: str
        latency_ms: float
        routed: bool = False

    Number = Annotated[float, Strict()]
    Budget = Annotated[int, Strict(), Field(ge=1, le=MAX_NEW_TOKENS_LIMIT)]
    Prompt = Annotated[str, Strict(), Field(min_length=1)]

    class _OpenAIRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")  # OpenAI's other options (user, seed, penalties, ...) are ignored
        model: StrictStr = Field(description="A model id of GET /v1/models: METHOD/TASK (or TASK).")
        max_tokens: Budget | None = Field(default=None, description="Generation budget; default: the run's eval.max_new_tokens.")
        temperature: Number | None = Field(default=None, description="0 only: decoding is greedy.")
        top_p: Number | None = Field(default=None, description="1 only.")
        n: StrictInt = Field(default=1, description="1 only.")
        best_of: StrictInt | None = None
        stop: Prompt | list[Prompt] | None = Field(default=None, description="Up to 4 strings; the text ends before the first.")
        stream: StrictBool | None = None
        logprobs: StrictBool | StrictInt | None = None
        user: StrictStr | None = None

    class CompletionRequest(_OpenAIRequest):
        prompt: Prompt | list[Prompt] = Field(description="A description, or a list of them (one choice each).")
        echo: StrictBool | None = None

    class ChatMessage(BaseModel):
        model_config = ConfigDict(extra="ignore")
        role: StrictStr
        content: StrictStr | list[dict] | None = None

    class ChatRequest(_OpenAIRequest):
        messages: list[ChatMessage] = Field(min_length=1, description="The last user message is the description.")
        max_completion_tokens: Budget | None = None

    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key is empty; pass a non-empty --api-key (or leave it out)")
    if request_timeout_s is not None and request_timeout_s <= 0:
        raise ConfigError(f"the request timeout must be positive, got {request_timeout_s}")
    _PRIVATE_DIRS.extend(str(d) for d in _local_dirs(generator))
    generate = _records_of(generator)
    batcher = MicroBatcher(generate, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, mixed_budgets=True)
    max_body_bytes = 4 * max_prompt_chars + 4096  # UTF-8 is at most 4 bytes a character, plus the JSON around it (a list of prompts shares it)
    counters = {"timeouts": 0, "disconnects": 0}
    created = int(time.time())
    models = {f"{generator.method}/{task}": task for task in generator.tasks}

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="codecl", version=__version__, lifespan=lifespan,
                  description=f"Code generation with the {generator.method} modules of a codecl run "
                              f"(tasks: {', '.join(generator.tasks)}); OpenAI-compatible /v1/models, /v1/completions "
                              f"and /v1/chat/completions beside /v1/generate.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors, fields, seen = exc.errors(), [], set()
        for name, e in ((_field_name(e), e) for e in exc.errors()):
            if name not in seen:  # one line a field (a union gives one error per member)
                seen.add(name)
                fields.append((name, e))
        message = "; ".join(f"{name}: {e['msg']}" + (f" ({e['ctx']['error']})" if "error" in e.get("ctx", {}) else "")
                            for name, e in fields)
        fields = [name for name, _ in fields]
        code = "invalid_json" if fields == ["body"] else "invalid_value"
        return _error(400, f"invalid request: {message}", param=fields[0] if fields else None, code=code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return _error(404, f"no route {request.url.path}; see GET /v1/models, POST /v1/completions, "
                               f"POST /v1/chat/completions, POST /v1/generate", code="not_found")
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
            return _error(405, f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else ""),
                          headers=exc.headers, code="method_not_allowed")
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _failed(request: Request, exc: Exception):  # never a traceback page
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", code="internal_error")

    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes, max_prompt_chars=max_prompt_chars)
    if api_key is not None:
        app.add_middleware(_RequireKey, api_key=api_key)

    async def run(request: Request, prompts: list[str], language: str, budget: int | None):
        """Generations for `prompts` (one batcher request each), or an error response. Gives up (and takes
        its requests out of the queue) when the client goes away or `request_timeout_s` has passed."""
        loop = asyncio.get_running_loop()
        deadline = None if request_timeout_s is None else loop.time() + request_timeout_s
        jobs: list[asyncio.Future] = []
        watcher = asyncio.ensure_future(_client_gone(request))
        try:
            for i, prompt in enumerate(prompts):  # `language`: one for all, or one per prompt (routed requests)
                jobs.append(asyncio.ensure_future(batcher.submit(prompt, language[i] if isinstance(language, list) else language, budget)))
                await asyncio.sleep(0)  # let it queue (or fail at once on a full queue)
                if jobs[-1].done() and jobs[-1].exception() is not None:
                    break
            while not any(j.done() and j.exception() is not None for j in jobs):
                pending = [j for j in jobs if not j.done()]
                if not pending:
                    break
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise _Abandoned(timed_out=True)
                done, _ = await asyncio.wait([*pending, watcher], timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if watcher in done and not all(j.done() for j in jobs):
                    raise _Abandoned(timed_out=False)
            return [job.result() for job in jobs]
        except _Abandoned as exc:
            counters["timeouts" if exc.timed_out else "disconnects"] += 1
            if exc.timed_out:
                return _error(504, f"the request was not answered within {request_timeout_s:g} s (--request-timeout-s); "
                                   f"it was dropped", code="request_timeout")
            return _error(499, "client closed the request", code="client_closed")
        except QueueFull as exc:
            return _error(503, f"server busy: {exc}; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}, code="queue_full")
        except Exception as exc:  # the batch failed: one line, never a traceback page
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}", code="generation_failed")
        finally:
            for job in [*jobs, watcher]:
                if not job.done():
                    job.cancel()

    def check_prompts(prompts: list[str], param: str):
        """An error response for a prompt that is not text or too long, else None."""
        for i, prompt in enumerate(prompts):
            name = param if len(prompts) == 1 else f"{param}.{i}"
            if _has_lone_surrogate(prompt):
                return _error(400, f"invalid request: {name}: a lone UTF-16 surrogate is not text", param=name, code="invalid_value")
            if len(prompt) > max_prompt_chars:
                return _error(413, f"{name} has {len(prompt)} characters; the limit is {max_prompt_chars}", param=name,
                              code="prompt_too_long")
        return None

    @app.post("/v1/generate", response_model=GenerateResponse)
    async def generate_code(body: GenerateRequest, request: Request):
        started = time.perf_counter()
        bad = [name for name in ("language", "prompt") if getattr(body, name) is not None and _has_lone_surrogate(getattr(body, name))]
        if bad:
            return _error(400, f"invalid request: {bad[0]}: a lone UTF-16 surrogate is not text", param=bad[0], code="invalid_value")
        routed = body.language is None
        if routed:
            if (refused := check_prompts([body.prompt], "prompt")) is not None:
                return refused
            body.language = (await asyncio.to_thread(generator.route, [body.prompt]))[0]
        if body.language not in generator.tasks:
            return _error(404, f"unknown language {body.language!r}; known: {', '.join(generator.tasks)}", param="language",
                          code="unknown_language")
        if (refused := check_prompts([body.prompt], "prompt")) is not None:
            return refused
        records = await run(request, [body.prompt], body.language, body.max_new_tokens)
        if not isinstance(records, list):
            return records
        return GenerateResponse(code=records[0].text, language=body.language, method=generator.method,
                                latency_ms=round((time.perf_counter() - started) * 1000, 3), routed=routed)

    def unsupported(body) -> object | None:
        """A 400 for an option this server cannot honour (decoding is greedy, one choice, no streaming)."""
        checks = [("temperature", body.temperature not in (None, 0), "only greedy decoding is served: temperature must be 0 or left out"),
                  ("top_p", body.top_p not in (None, 1), "only greedy decoding is served: top_p must be 1 or left out"),
                  ("n", body.n != 1, "one choice per prompt: n must be 1"),
                  ("best_of", body.best_of not in (None, 1), "best_of must be 1 or left out"),
                  ("stream", bool(body.stream), "streaming is not supported: stream must be false"),
                  ("logprobs", body.logprobs not in (None, False, 0), "logprobs are not supported"),
                  ("echo", bool(getattr(body, "echo", None)), "echo is not supported"),
                  ("stop", isinstance(body.stop, list) and len(body.stop) > 4, "at most 4 stop sequences")]
        for field, bad, why in checks:
            if bad:
                value = getattr(body, field)
                return _error(400, f"invalid request: {field}: {why} (got {json.dumps(value, ensure_ascii=True)})", param=field,
                              code="unsupported_value")
        if _has_lone_surrogate(body.model):
            return _error(400, "invalid request: model: a lone UTF-16 surrogate is not text", param="model", code="invalid_value")
        return None

    def task_of(model: str) -> str | None:
        """The task a model id names; ROUTED for the method's own name or `auto` (the router picks per prompt)."""
        if model in (generator.method, "auto", f"{generator.method}/auto"):
            return ROUTED
        return models.get(model) or (model if model in generator.tasks else None)

    async def tasks_for(task: str, prompts: list[str]) -> str | list[str]:
        return await asyncio.to_thread(generator.route, prompts) if task == ROUTED else task

    def model_name(task: str | list[str]) -> str:
        if isinstance(task, list):
            return f"{generator.method}/{task[0]}" if len(set(task)) == 1 else generator.method
        return f"{generator.method}/{task}"

    def unknown_model(model: str):
        return _error(404, f"unknown model {model!r}; served: {', '.join(models)} (GET /v1/models)", param="model",
                      code="model_not_found")

    def usage(records) -> dict:
        prompt_tokens = sum(r.prompt_tokens for r in records)
        completion_tokens = sum(r.completion_tokens for r in records)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def finish(record, stop) -> tuple[str, str]:
        """(text cut before the first stop sequence, finish_reason)."""
        text = record.text
        stops = [stop] if isinstance(stop, str) else (stop or [])
        cuts = [text.find(s) for s in stops if s in text]
        if cuts:
            return text[: min(cuts)], "stop"
        return text, "length" if record.truncated else "stop"

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list",
                "data": [{"id": name, "object": "model", "created": created, "owned_by": "codecl", "method": generator.method,
                          "seed": generator.seed, "task": task} for name, task in models.items()]
                + [{"id": generator.method, "object": "model", "created": created, "owned_by": "codecl", "method": generator.method,
                    "seed": generator.seed, "task": None, "routed": True}]}

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str):
        task = task_of(model)
        if task is None:
            return unknown_model(model)
        if task == ROUTED:
            return {"id": generator.method, "object": "model", "created": created, "owned_by": "codecl", "method": generator.method,
                    "seed": generator.seed, "task": None, "routed": True}
        name = f"{generator.method}/{task}"
        return {"id": name, "object": "model", "created": created, "owned_by": "codecl", "method": generator.method,
                "seed": generator.seed, "task": task}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        if (refused := unsupported(body)) is not None:
            return refused
        if (task := task_of(body.model)) is None:
            return unknown_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > MAX_PROMPTS:
            return _error(400, f"invalid request: prompt: give 1 to {MAX_PROMPTS} prompts, got {len(prompts)}", param="prompt",
                          code="invalid_value")
        if (refused := check_prompts(prompts, "prompt")) is not None:
            return refused
        task = await tasks_for(task, prompts)
        records = await run(request, prompts, task, body.max_tokens)
        if not isinstance(records, list):
            return records
        choices = []
        for i, record in enumerate(records):
            text, reason = finish(record, body.stop)
            choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": reason,
                            **({"task": task[i]} if isinstance(task, list) else {})})
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name(task), "choices": choices, "usage": usage(records)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        if (refused := unsupported(body)) is not None:
            return refused
        if (task := task_of(body.model)) is None:
            return unknown_model(body.model)
        users = [m for m in body.messages if m.role == "user"]
        content = users[-1].content if users else None
        if isinstance(content, list):  # content parts: the text ones, joined
            content = "\n".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
        if not isinstance(content, str) or not content:
            return _error(400, "invalid request: messages: needs a user message with text content (the description)",
                          param="messages", code="invalid_value")
        if (refused := check_prompts([content], "messages")) is not None:
            return refused
        task = await tasks_for(task, [content])
        records = await run(request, [content], task, body.max_completion_tokens or body.max_tokens)
        if not isinstance(records, list):
            return records
        text, reason = finish(records[0], body.stop)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name(task),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}],
                "usage": usage(records)}

    @app.get("/v1/tasks")
    async def tasks():
        return generator.describe()

    @app.get("/v1/stats")
    async def stats():
        return {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue, "request_timeout_s": request_timeout_s,
                "waiting": batcher.waiting(), **batcher.stats.as_dict(), **counters}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "method": generator.method, "seed": generator.seed, "languages": generator.tasks,
                "models": list(models), "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, **batcher.stats.as_dict()}}

    return app


def _local_dirs(generator) -> list[str]:
    """Local folders a message could name: the run's, the cache's, the working folder, the home, the temp folder."""
    dirs = [os.environ.get("CODECL_CACHE"), os.environ.get("HF_HOME"), os.getcwd(), tempfile.gettempdir(), str(Path.home())]
    run_dir = getattr(generator, "run_dir", None)
    if run_dir:
        dirs += [str(run_dir), str(Path(run_dir).resolve())]
    out = []
    for d in dirs:
        if d and d not in ("/", "."):
            out += [d, os.path.realpath(d)]
    return out


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


def make_server(generator: Generator, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 8, max_wait_ms: float = 10.0,
                max_prompt_chars: int = 4000, log_level: str = "info", max_queue: int = 256, api_key: str | None = None,
                request_timeout_s: float | None = REQUEST_TIMEOUT_S):
    """(uvicorn server, listening socket, URL): `serve` without running it. Warns on stderr when the
    address is not loopback and there is no API key."""
    require_dependencies()
    import uvicorn

    app = create_app(generator, max_batch=max_batch, max_wait_ms=max_wait_ms, max_prompt_chars=max_prompt_chars,
                     max_queue=max_queue, api_key=api_key, request_timeout_s=request_timeout_s)
    sock = listen(host, port)
    if (warning := exposure_warning(host, api_key)) is not None:
        print(warning, file=sys.stderr, flush=True)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    return uvicorn.Server(config), sock, f"http://{shown}:{bound_port}"


def serve(generator: Generator, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 8, max_wait_ms: float = 10.0,
          max_prompt_chars: int = 4000, log_level: str = "info", max_queue: int = 256, api_key: str | None = None,
          request_timeout_s: float | None = REQUEST_TIMEOUT_S) -> None:
    """Bind, announce the URL on stdout (one flushed line: `--port 0` callers read the port from it), serve until stopped."""
    server, sock, url = make_server(generator, host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                    max_prompt_chars=max_prompt_chars, log_level=log_level, max_queue=max_queue, api_key=api_key,
                                    request_timeout_s=request_timeout_s)
    print(f"serving {generator.method} (seed {generator.seed}; {', '.join(generator.tasks)}) on {url}", flush=True)
    server.run(sockets=[sock])
