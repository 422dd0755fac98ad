"""An asyncio micro-batcher: concurrent requests for the same language share one `generate_batch` call.

Requests queue per language (with `mixed_budgets`, requests with different `max_new_tokens` share a
batch and `generate_batch` gets one budget per prompt; without it they queue per (language,
max_new_tokens)). One worker takes the oldest queue, waits until
it holds `max_batch` requests or its first request has waited `max_wait_ms`, and runs one batch in
a worker thread (the model is used by one batch at a time). Requests that arrive while a batch
runs queue up and go together in the next one, so under load batches fill without waiting.
`max_batch=1` turns batching off: one request per call, in arrival order.
The queue is bounded: beyond `max_queue` waiting requests, `submit` raises `QueueFull` at once
(the server answers 503 with Retry-After) instead of letting latency grow without end.
A request whose caller stops waiting (the `submit` awaiting it is cancelled: the client went away
or its time ran out) leaves the queue at once and is never generated (`stats.cancelled`); one
cancelled while its batch runs gets no answer (`stats.abandoned`).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable


class QueueFull(RuntimeError):
    """`max_queue` requests are already waiting."""


@dataclass(eq=False)
class _Pending:
    prompt: str
    future: asyncio.Future
    enqueued_s: float
    max_new_tokens: int | None = None


@dataclass
class BatchStats:
    requests: int = 0
    """Requests answered (or failed) by a batch."""
    batches: int = 0
    """`generate_batch` calls."""
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    """How many batches had each size."""
    cancelled: int = 0
    """Requests dropped from the queue before their batch started (never generated)."""
    abandoned: int = 0
    """Requests given up while their batch ran (generated, the answer thrown away)."""

    def as_dict(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "cancelled": self.cancelled, "abandoned": self.abandoned}


class MicroBatcher:
    def __init__(self, generate_batch: Callable[[list[str], str, int | None], list], max_batch: int = 8,
                 max_wait_ms: float = 10.0, max_queue: int = 256, mixed_budgets: bool = False):
        """`mixed_budgets`: `generate_batch(prompts, language, budgets)` takes one budget per prompt
        (a list), so requests for a language share a batch whatever their `max_new_tokens`."""
        self.mixed_budgets = mixed_budgets
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.generate_batch, self.max_batch, self.max_wait_s = generate_batch, max_batch, max_wait_ms / 1000
        self.stats = BatchStats()
        self._queues: dict = {}  # key -> requests; insertion order = oldest first
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codecl-generate")

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._run_forever())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for queue in self._queues.values():
            for pending in queue:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("server shutting down"))
        self._queues.clear()
        self._executor.shutdown(wait=True)

    async def submit(self, prompt: str, language: str, max_new_tokens: int | None = None):
        """Queue one request; returns its code when its batch has run (or raises the batch's error).
        Cancelling the caller takes the request out of the queue (if its batch has not started)."""
        if self._worker is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self.waiting() >= self.max_queue:
            raise QueueFull(f"{self.waiting()} requests are already waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        pending = _Pending(prompt, loop.create_future(), loop.time(), max_new_tokens)
        key = language if self.mixed_budgets else (language, max_new_tokens)
        self._queues.setdefault(key, []).append(pending)
        self._arrived.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._drop(key, pending)
            raise

    def _drop(self, key, pending: _Pending) -> None:
        """Forget a request whose caller stopped waiting."""
        queue = self._queues.get(key)
        if queue is not None and pending in queue:
            queue.remove(pending)
            if not queue:
                del self._queues[key]
            self.stats.cancelled += 1
        elif not pending.future.done() or pending.future.cancelled():
            self.stats.abandoned += 1
        pending.future.cancel()

    def waiting(self) -> int:
        """Requests queued and not yet in a running batch."""
        return sum(len(queue) for queue in self._queues.values())

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queues:
                self._arrived.clear()
                await self._arrived.wait()
            key, queue = next(iter(self._queues.items()))
            deadline = queue[0].enqueued_s + self.max_wait_s
            while len(queue) < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            if self._queues.get(key) is not queue:  # every request of it was dropped while it waited
                continue
            batch = queue[: self.max_batch]
            del self._queues[key]
            if len(queue) > len(batch):  # the rest goes to the back: other languages are not starved
                self._queues[key] = queue[len(batch):]
            batch = [p for p in batch if not p.future.done()]  # a client that went away was cancelled
            if batch:
                await self._run_batch(key, batch)

    async def _run_batch(self, key, batch: list[_Pending]) -> None:
        language, budgets = (key, [p.max_new_tokens for p in batch]) if self.mixed_budgets else key
        prompts = [p.prompt for p in batch]
        try:
            codes = await asyncio.get_running_loop().run_in_executor(self._executor, self.generate_batch, prompts, language, budgets)
        except Exception as exc:  # every request of the batch gets the error
            codes, error = None, exc
        else:
            error = None
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        self.stats.batch_sizes[len(batch)] = self.stats.batch_sizes.get(len(batch), 0) + 1
        for i, pending in enumerate(batch):
            if pending.future.done():
                continue
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(codes[i])
