"""Batch requests that arrive together into one forward pass, without ever making one wait.

Handlers enqueue and await. One worker task drains the queue: it takes every request that is
already waiting (same model version, up to max_batch windows) and runs them as one batch.
A request that finds the queue empty is served on the worker's next turn, so nothing is held
back for company; batches form only from requests that queued while a forward pass ran.
The coordinator's one stream (its windows already batched there) skips the queue and runs
`infer_now`. Inference runs on the event loop: the process has one core
and one compute thread.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

import numpy as np

from agents.serving.registry import VersionRegistry
from tactical.metrics import INFERENCE_BUCKETS_S, SIZE_BUCKETS, Histogram


class UnknownVersion(LookupError):
    """The requested model version is not loaded on this agent."""


@dataclass
class _Request:
    version: int
    windows: np.ndarray  # (k, window, 7)
    future: asyncio.Future


class InferenceBatcher:
    def __init__(self, registry: VersionRegistry, max_batch: int, history: int = 4096):
        self.registry = registry
        self.max_batch = max_batch
        self._queue: collections.deque[_Request] = collections.deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.inference_us: collections.deque[float] = collections.deque(maxlen=history)
        self.windows_served = 0
        self.batches = 0
        self.inference_seconds = Histogram(INFERENCE_BUCKETS_S)  # for the metrics endpoint
        self.batch_sizes = Histogram(SIZE_BUCKETS)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="inference-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    def idle(self) -> bool:
        return not self._queue

    def infer_now(self, version: int, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The same as `infer`, run right here: for a caller that knows nobody else is waiting."""
        runner = self.registry.get(version)
        if runner is None:
            raise UnknownVersion(version)
        return self._run(runner, windows)

    async def infer(self, version: int, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Probabilities (k, 3), values (k,) and the forward pass's microseconds for `windows`."""
        if self.registry.get(version) is None:
            raise UnknownVersion(version)
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(version, windows, future))
        self._wake.set()
        return await future

    def _take_batch(self) -> list[_Request]:
        first = self._queue.popleft()
        batch, count = [first], len(first.windows)
        while self._queue and self._queue[0].version == first.version \
                and count + len(self._queue[0].windows) <= self.max_batch:
            request = self._queue.popleft()
            batch.append(request)
            count += len(request.windows)
        return batch

    def _run(self, runner, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        start = time.perf_counter()
        probs, values = runner.infer(windows)
        micros = (time.perf_counter() - start) * 1e6
        self.inference_us.append(micros)
        self.batches += 1
        self.windows_served += len(windows)
        self.inference_seconds.observe(micros / 1e6)
        self.batch_sizes.observe(len(windows))
        return probs, values, micros

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take_batch()
                live = [r for r in batch if not r.future.done()]  # callers may have given up
                if live:
                    self._forward(live)
                await asyncio.sleep(0)  # let handlers that became ready enqueue before the next batch

    def _forward(self, batch: list[_Request]) -> None:
        runner = self.registry.get(batch[0].version)
        if runner is None:  # evicted between enqueue and now
            for r in batch:
                r.future.set_exception(UnknownVersion(batch[0].version))
            return
        windows = batch[0].windows if len(batch) == 1 else np.concatenate([r.windows for r in batch])
        try:
            probs, values, micros = self._run(runner, windows)
        except Exception as exc:  # an inference failure answers the callers, never kills the worker
            for r in batch:
                r.future.set_exception(exc)
            return
        offset = 0
        for r in batch:
            k = len(r.windows)
            r.future.set_result((probs[offset:offset + k], values[offset:offset + k], micros))
            offset += k
