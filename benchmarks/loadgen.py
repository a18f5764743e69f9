"""A closed-loop load generator for the decision service, for the benchmarks (serving.py, audit_overhead.py).

Each of `streams` clients sends one request, waits for the decision, sends the next: on a
DecideStream (one long-lived stream per client) or with unary Decide calls. Latency is
measured by the client, from send to answer.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from tactical.config import ServingConfig
from tactical.rpc import aio_channel
from tactical.v1 import decision_pb2, decision_pb2_grpc
from tactical.wire import encode_window


@dataclass
class LoadResult:
    mode: str
    streams: int
    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    degraded: int = 0
    versions: dict[int, int] = field(default_factory=dict)

    @property
    def decisions(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.decisions / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def sample_requests(count: int, seed: int = 0, bars: int = 60) -> list[decision_pb2.DecideRequest]:
    """Distinct valid window requests to cycle through."""
    rng = np.random.default_rng(seed)
    return [decision_pb2.DecideRequest(window=encode_window(rng.uniform(-1, 1, (bars, 7)).astype(np.float32)))
            for _ in range(count)]


async def _stream_client(stub, requests, stop_at: float, result: LoadResult, limit: int | None) -> None:
    call = stub.DecideStream()
    sent = 0
    try:
        while time.perf_counter() < stop_at and (limit is None or sent < limit):
            start = time.perf_counter()
            await call.write(requests[sent % len(requests)])
            sent += 1
            d = await call.read()
            if d is grpc.aio.EOF:
                result.errors.append("stream closed")
                return
            _account(result, d, start)
        await call.done_writing()
    except grpc.aio.AioRpcError as exc:
        result.errors.append(f"{exc.code().name}: {exc.details()}")


async def _unary_client(stub, requests, stop_at: float, result: LoadResult, limit: int | None) -> None:
    sent = 0
    while time.perf_counter() < stop_at and (limit is None or sent < limit):
        start = time.perf_counter()
        try:
            d = await stub.Decide(requests[sent % len(requests)], timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            result.errors.append(f"{exc.code().name}: {exc.details()}")
            continue
        finally:
            sent += 1
        _account(result, d, start)


def _account(result: LoadResult, d: decision_pb2.Decision, start: float) -> None:
    result.latencies_ms.append((time.perf_counter() - start) * 1e3)
    if d.HasField("error"):
        result.errors.append(d.error.message)
    result.degraded += d.degraded
    result.versions[d.model_version] = result.versions.get(d.model_version, 0) + 1


async def run_load(target: str, cfg: ServingConfig, *, streams: int, seconds: float, mode: str = "stream",
                   per_stream: int | None = None, warmup_s: float = 0.5, requests: list | None = None) -> LoadResult:
    """Drive `streams` closed-loop clients for `seconds` (or `per_stream` requests each) after a warm-up."""
    requests = requests or sample_requests(64)
    channel = aio_channel(target, cfg)
    try:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        client = _stream_client if mode == "stream" else _unary_client
        if warmup_s > 0:
            warm = LoadResult(mode, streams, 0.0)
            stop_at = time.perf_counter() + warmup_s
            await asyncio.gather(*(client(stub, requests, stop_at, warm, None) for _ in range(streams)))
        result = LoadResult(mode, streams, 0.0)
        start = time.perf_counter()
        stop_at = start + seconds if per_stream is None else float("inf")
        await asyncio.gather(*(client(stub, requests, stop_at, result, per_stream) for _ in range(streams)))
        result.elapsed_s = time.perf_counter() - start
        return result
    finally:
        await channel.close()
