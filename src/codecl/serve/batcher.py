"""An asyncio micro-batcher: concurrent requests for the same language share one `generate_batch` call.

Requests queue per key (language, max_new_tokens). One worker takes the oldest queue, waits until
it holds `max_batch` requests or its first request has waited `max_wait_ms`, and runs one batch in
a worker thread (the model is used by one batch at a time). Requests that arrive while a batch
runs queue up and go together in the next one, so under load batches fill without waiting.
`max_batch=1` turns batching off: one request per call, in arrival order.
The queue is bounded: beyond `max_queue` waiting requests, `submit` raises `QueueFull` at once
(the server answers 503 with Retry-After) instead of letting latency grow without end.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable


class QueueFull(RuntimeError):
    """`max_queue` requests are already waiting."""


@dataclass
class _Pending:
    prompt: str
    future: asyncio.Future
    enqueued_s: float


@dataclass
class BatchStats:
    requests: int = 0
    """Requests answered (or failed) by a batch."""
    batches: int = 0
    """`generate_batch` calls."""
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    """How many batches had each size."""

    def as_dict(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "largest_batch": self.largest_batch,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}}


class MicroBatcher:
    def __init__(self, generate_batch: Callable[[list[str], str, int | None], list[str]], max_batch: int = 8,
                 max_wait_ms: float = 10.0, max_queue: int = 256):
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.generate_batch, self.max_batch, self.max_wait_s = generate_batch, max_batch, max_wait_ms / 1000
        self.stats = BatchStats()
        self._queues: dict[tuple[str, int | None], list[_Pending]] = {}  # insertion order = oldest first
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

    async def submit(self, prompt: str, language: str, max_new_tokens: int | None = None) -> str:
        """Queue one request; returns its code when its batch has run (or raises the batch's error)."""
        if self._worker is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self.waiting() >= self.max_queue:
            raise QueueFull(f"{self.waiting()} requests are already waiting (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        pending = _Pending(prompt, loop.create_future(), loop.time())
        self._queues.setdefault((language, max_new_tokens), []).append(pending)
        self._arrived.set()
        return await pending.future

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
            batch = queue[: self.max_batch]
            del self._queues[key]
            if len(queue) > len(batch):  # the rest goes to the back: other languages are not starved
                self._queues[key] = queue[len(batch):]
            batch = [p for p in batch if not p.future.done()]  # a client that went away was cancelled
            if batch:
                await self._run_batch(key, batch)

    async def _run_batch(self, key: tuple[str, int | None], batch: list[_Pending]) -> None:
        language, max_new_tokens = key
        prompts = [p.prompt for p in batch]
        try:
            codes = await asyncio.get_running_loop().run_in_executor(self._executor, self.generate_batch, prompts, language, max_new_tokens)
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
