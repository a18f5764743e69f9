"""A closed-loop load generator for the decision service, for the benchmarks (serving.py, audit_overhead.py).

Each of `streams` clients sends one request, waits for the answer, sends the next: on a
DecideStream (one long-lived stream per client), with unary Decide calls, or with DecideBatch
calls of `items` instruments each (mode "batch": a window per instrument; mode "ticks": each
instrument's next bar, after its history once). Latency is measured by the client, from send to
answer, per request; decisions count every instrument of a batch.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import numpy as np

from tactical.config import ServingConfig
from tactical.rpc import aio_channel
from tactical.v1 import common_pb2, decision_pb2, decision_pb2_grpc
from tactical.wire import encode_window


@dataclass
class LoadResult:
    mode: str
    streams: int
    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list)  # per request
    errors: list[str] = field(default_factory=list)
    degraded: int = 0
    versions: dict[int, int] = field(default_factory=dict)
    items: int = 1  # decisions per request

    @property
    def decisions(self) -> int:
        return len(self.latencies_ms) * self.items

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


class TickBatches:
    """DecideBatch requests of every instrument's next bar, one bar further each time (a desk at each bar close)."""

    def __init__(self, instruments: int, min_bars: int, seed: int = 0, tag: str = ""):
        from market.synthetic import synthetic_bars

        self.names = [f"SYN{tag}{i:04d}" for i in range(instruments)]
        self.series = [synthetic_bars(min_bars + 5000, seed=seed + i) for i in range(instruments)]
        self.min_bars = min_bars
        self.next = min_bars

    def histories(self) -> decision_pb2.DecideBatchRequest:
        from tactical.wire import encode_bars

        return decision_pb2.DecideBatchRequest(items=[decision_pb2.DecideRequest(
            instrument=name, bars=encode_bars(bars[:self.min_bars])) for name, bars in zip(self.names, self.series,
                                                                                            strict=True)])

    def __getitem__(self, _: int) -> decision_pb2.DecideBatchRequest:
        t, self.next = self.next, self.next + 1
        return decision_pb2.DecideBatchRequest(items=[decision_pb2.DecideRequest(instrument=name, bar=common_pb2.Bar(
            time_ms=int(b.time[t]), open=b.open[t], high=b.high[t], low=b.low[t], close=b.close[t],
            volume=b.volume[t])) for name, b in zip(self.names, self.series, strict=True)])

    def __len__(self) -> int:
        return len(self.series[0]) - self.min_bars


async def _batch_client(stub, requests, stop_at: float, result: LoadResult, limit: int | None) -> None:
    sent = 0
    while time.perf_counter() < stop_at and (limit is None or sent < limit):
        request = requests[sent % len(requests)]
        start = time.perf_counter()
        try:
            response = await stub.DecideBatch(request, timeout=30.0)
        except grpc.aio.AioRpcError as exc:
            result.errors.append(f"{exc.code().name}: {exc.details()}")
            continue
        finally:
            sent += 1
        result.latencies_ms.append((time.perf_counter() - start) * 1e3)
        for d in response.decisions:
            if d.HasField("error"):
                result.errors.append(d.error.message)
            result.degraded += d.degraded


def batch_requests(items: int, count: int = 8, seed: int = 0) -> list[decision_pb2.DecideBatchRequest]:
    """DecideBatch requests of `items` instruments' windows, to cycle through."""
    rng = np.random.default_rng(seed)
    return [decision_pb2.DecideBatchRequest(items=[decision_pb2.DecideRequest(
        instrument=f"SYM{i:04d}", window=encode_window(rng.uniform(-1, 1, (60, 7)).astype(np.float32)))
        for i in range(items)]) for _ in range(count)]


async def run_load(target: str, cfg: ServingConfig, *, streams: int, seconds: float, mode: str = "stream",
                   per_stream: int | None = None, warmup_s: float = 0.5, requests: list | None = None,
                   items: int = 1, min_bars: int = 92, connections: int = 1) -> LoadResult:
    """Drive `streams` closed-loop clients for `seconds` (or `per_stream` requests each) after a warm-up.

    Modes: "stream", "unary", "batch" (`items` windows per DecideBatch), "ticks" (`items` instruments' next
    bars per DecideBatch, their `min_bars` of history sent first). The clients share `connections` TCP
    connections round-robin (one process's channels to one address share one unless each asks for its own;
    with several coordinators on the port, each connection reaches one of them).
    """
    channels = [aio_channel(target, cfg, own_connection=connections > 1) for _ in range(connections)]
    try:
        stubs = [decision_pb2_grpc.DecisionServiceStub(channel) for channel in channels]
        sources: list = []
        if mode == "ticks":  # each instrument's history on the connection (the coordinator) its bars will use
            sources = [TickBatches(items, min_bars, seed=1000 * k, tag=f"{k}-") for k in range(streams)]
            for k, source in enumerate(sources):
                await stubs[k % connections].DecideBatch(source.histories(), timeout=60.0)
        elif mode == "batch":
            requests = requests or batch_requests(items)
        else:
            requests = requests or sample_requests(64)
        client = {"stream": _stream_client, "unary": _unary_client}.get(mode, _batch_client)

        async def drive(result: LoadResult, stop_at: float, limit: int | None) -> None:
            await asyncio.gather(*(client(stubs[k % connections], sources[k] if sources else requests, stop_at,
                                          result, limit) for k in range(streams)))

        if warmup_s > 0:
            await drive(LoadResult(mode, streams, 0.0, items=items), time.perf_counter() + warmup_s, None)
        result = LoadResult(mode, streams, 0.0, items=items)
        start = time.perf_counter()
        await drive(result, start + seconds if per_stream is None else float("inf"), per_stream)
        result.elapsed_s = time.perf_counter() - start
        return result
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
