"""Decisions from a running cluster, in Python: Client (sync) and AsyncClient (asyncio).

The same methods as the in-process Engine, answering the same Decision dataclasses (never protobuf):

    from tactical_engine import Client
    with Client("127.0.0.1:50050") as client:
        d = client.decide(window, instrument="EURUSD")                # one decision
        many = client.decide_many({"EURUSD": bar, "GBPUSD": bar2})      # every instrument at a bar close
        with client.stream("EURUSD", history) as stream:              # a live stream: one bar per period
            d = stream.send(next_bar)

Streams and decide_many keep each instrument's last bars: when the coordinator has no history
for an instrument (it restarted, or forgot it: Error.reason NO_HISTORY) or a stream breaks, the
client sends the history again by itself, then the bar. tactical_engine.client.TacticalClient is
the wire-level client the CLI uses (protobuf in and out, admin calls).
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from market.bars import Bar, Bars
from tactical.config import Config, as_config
from tactical.rpc import aio_channel, sync_channel
from tactical.v1 import cluster_pb2, cluster_pb2_grpc, decision_pb2, decision_pb2_grpc
from tactical.wire import ERROR_REASON_HEADER, NO_HISTORY, traceparent_metadata
from tactical_engine.api import Decision, DecisionRefused, Refusal, decision_or_refusal
from tactical_engine.requests import Histories, Input, request_for

RETRIED = (grpc.StatusCode.UNAVAILABLE,)  # a broken stream (a coordinator restarting): reopened, history sent again


def _refused(exc: grpc.RpcError) -> DecisionRefused:
    reason = dict(exc.trailing_metadata() or ()).get(ERROR_REASON_HEADER, "")
    return DecisionRefused(exc.code().name, exc.details() or "", reason)


def _answer(d: decision_pb2.Decision, instrument: str) -> Decision:
    answer = decision_or_refusal(d, instrument)
    if isinstance(answer, Refusal):
        raise DecisionRefused(answer.code, answer.message, answer.reason)
    return answer


def _target(target: str | None, cfg: Config) -> str:
    return target or cfg.serving.local_coordinator


class Client:
    """A running cluster's decisions (sync); see the module docstring. Thread-safe like a gRPC channel."""

    def __init__(self, target: str | None = None, config: Config | Mapping[str, Any] | str | Path | None = None,
                 timeout: float = 5.0):
        self.cfg = as_config(config)
        self.target = _target(target, self.cfg)
        self.timeout = timeout
        self.channel = sync_channel(self.target, self.cfg.serving)
        self.stub = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.histories = Histories(self.cfg.features.min_bars)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def decide(self, window: np.ndarray | None = None, *, bars: Bars | None = None, instrument: str = "",
               traceparent: str | None = None) -> Decision:
        """One decision on a (60, 7) window, or on the last bar of `bars` (>= features.min_bars); bad input raises
        DecisionRefused naming the problem. `traceparent`: your W3C trace context, kept in the audit row."""
        if (window is None) == (bars is None):
            raise ValueError("give exactly one of window or bars")
        item = window if window is not None else bars
        try:
            d = self.stub.Decide(request_for(item, instrument), timeout=self.timeout,
                                 metadata=traceparent_metadata(traceparent))
        except grpc.RpcError as exc:
            raise _refused(exc) from None
        self.histories.sent(instrument, item)
        return Decision.from_proto(d)

    def decide_many(self, items: Mapping[str, Input], traceparent: str | None = None) -> dict[str, Decision | Refusal]:
        """One decision per instrument in one call (DecideBatch): a window, a history (Bars) or the next Bar each.
        A bad item is a Refusal; a Bar the coordinator has no history for is sent again after its history."""
        answers = self._batch(items, traceparent)
        resend = self.histories.resend(items, {name for name, a in answers.items()
                                               if isinstance(a, Refusal) and a.reason == NO_HISTORY})
        if resend:
            self._batch(resend, traceparent)
            answers.update(self._batch({name: items[name] for name in resend}, traceparent))
        for name, answer in answers.items():
            if isinstance(answer, Decision):
                self.histories.sent(name, items[name])
        return answers

    def decide_windows(self, windows: np.ndarray, instrument: str = "") -> list[Decision]:
        """Decisions for many windows (N, 60, 7) of one instrument, in order (DecideBatch calls)."""
        size = self.cfg.serving.max_batch_items
        out = []
        for start in range(0, len(windows), size):
            requests = [request_for(w, instrument, f"window-{start + i}")
                        for i, w in enumerate(windows[start:start + size])]
            try:
                response = self.stub.DecideBatch(decision_pb2.DecideBatchRequest(items=requests), timeout=self.timeout)
            except grpc.RpcError as exc:
                raise _refused(exc) from None
            out += [_answer(d, instrument) for d in response.decisions]
        return out

    def stream(self, instrument: str, history: Bars, *, backtest: bool = False) -> TickStream:
        """A DecideStream for one instrument: `history` first (its decision is `.first`), then send(bar).
        `backtest`: historical bars replayed, kept out of what judges versions live (DecideRequest.backtest)."""
        return TickStream(self, instrument, history, backtest)

    def status(self) -> cluster_pb2.ClusterStatus:
        """The coordinator's view of the cluster (an operator's message, as `tactical status` shows it)."""
        return cluster_pb2_grpc.ClusterServiceStub(self.channel).GetStatus(cluster_pb2.GetStatusRequest(),
                                                                           timeout=self.timeout)

    def _batch(self, items: Mapping[str, Input], traceparent: str | None) -> dict[str, Decision | Refusal]:
        requests = [request_for(item, name) for name, item in items.items()]
        try:
            response = self.stub.DecideBatch(decision_pb2.DecideBatchRequest(items=requests), timeout=self.timeout,
                                             metadata=traceparent_metadata(traceparent))
        except grpc.RpcError as exc:
            raise _refused(exc) from None
        return {name: decision_or_refusal(d, name) for name, d in zip(items, response.decisions, strict=True)}


class TickStream:
    """One instrument's bars over a DecideStream (sync): its history at once, then one bar at a time."""

    def __init__(self, client: Client, instrument: str, history: Bars, backtest: bool = False):
        self.client, self.instrument, self.backtest = client, instrument, backtest
        self.history = history[max(0, len(history) - client.cfg.features.min_bars):]
        self._open()
        self.first = self._exchange(self._request(history))

    def send(self, bar: Bar) -> Decision:
        """The decision on the instrument's next bar (DecisionRefused for a bar out of order, repeated...)."""
        try:
            d = self._exchange(self._request(bar))
        except DecisionRefused as refused:
            if refused.reason != NO_HISTORY:
                raise
            self._exchange(self._request(self.history))  # the coordinator forgot: remind it
            d = self._exchange(self._request(bar))
        grown = self.history.append(bar)
        self.history = grown[len(grown) - len(self.history):]
        return d

    def close(self) -> None:
        self._requests.put(None)
        try:
            for _ in self._responses:  # let the call end cleanly
                pass
        except grpc.RpcError:  # it had already broken: nothing left to end
            pass

    def __enter__(self) -> TickStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, item: Input) -> decision_pb2.DecideRequest:
        return request_for(item, self.instrument, backtest=self.backtest)

    def _open(self) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._responses: Iterator[decision_pb2.Decision] = self.client.stub.DecideStream(
            iter(self._requests.get, None))

    def _exchange(self, request: decision_pb2.DecideRequest) -> Decision:
        """One request, one answer; a broken stream (the coordinator restarting) is reopened once, the history
        sent again first."""
        for attempt in range(2):
            self._requests.put(request)
            try:
                return _answer(next(self._responses), self.instrument)
            except grpc.RpcError as exc:
                if attempt or exc.code() not in RETRIED:
                    raise _refused(exc) from None
                self._open()
                if request.WhichOneof("input") == "bar":
                    self._requests.put(self._request(self.history))
                    next(self._responses)
        raise AssertionError("unreachable")


class AsyncClient:
    """A running cluster's decisions (asyncio); the same methods as Client, awaited."""

    def __init__(self, target: str | None = None, config: Config | Mapping[str, Any] | str | Path | None = None,
                 timeout: float = 5.0):
        self.cfg = as_config(config)
        self.target = _target(target, self.cfg)
        self.timeout = timeout
        self.channel = aio_channel(self.target, self.cfg.serving)
        self.stub = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.histories = Histories(self.cfg.features.min_bars)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def decide(self, window: np.ndarray | None = None, *, bars: Bars | None = None,
                     instrument: str = "", traceparent: str | None = None) -> Decision:
        if (window is None) == (bars is None):
            raise ValueError("give exactly one of window or bars")
        item = window if window is not None else bars
        try:
            d = await self.stub.Decide(request_for(item, instrument), timeout=self.timeout,
                                       metadata=traceparent_metadata(traceparent))
        except grpc.aio.AioRpcError as exc:
            raise _refused(exc) from None
        self.histories.sent(instrument, item)
        return Decision.from_proto(d)

    async def decide_many(self, items: Mapping[str, Input],
                          traceparent: str | None = None) -> dict[str, Decision | Refusal]:
        answers = await self._batch(items, traceparent)
        resend = self.histories.resend(items, {name for name, a in answers.items()
                                               if isinstance(a, Refusal) and a.reason == NO_HISTORY})
        if resend:
            await self._batch(resend, traceparent)
            answers.update(await self._batch({name: items[name] for name in resend}, traceparent))
        for name, answer in answers.items():
            if isinstance(answer, Decision):
                self.histories.sent(name, items[name])
        return answers

    async def stream(self, instrument: str, history: Bars, *, backtest: bool = False) -> AsyncTickStream:
        """An opened AsyncTickStream (its history sent; `.first` is that decision); `backtest` as in Client.stream."""
        stream = AsyncTickStream(self, instrument, history, backtest)
        await stream.open()
        return stream

    async def _batch(self, items: Mapping[str, Input], traceparent: str | None) -> dict[str, Decision | Refusal]:
        requests = [request_for(item, name) for name, item in items.items()]
        try:
            response = await self.stub.DecideBatch(decision_pb2.DecideBatchRequest(items=requests),
                                                   timeout=self.timeout, metadata=traceparent_metadata(traceparent))
        except grpc.aio.AioRpcError as exc:
            raise _refused(exc) from None
        return {name: decision_or_refusal(d, name) for name, d in zip(items, response.decisions, strict=True)}


class AsyncTickStream:
    """One instrument's bars over a DecideStream (asyncio); see TickStream."""

    def __init__(self, client: AsyncClient, instrument: str, history: Bars, backtest: bool = False):
        self.client, self.instrument, self.backtest = client, instrument, backtest
        self.history = history[max(0, len(history) - client.cfg.features.min_bars):]
        self.first: Decision | None = None
        self._call = None

    async def open(self) -> None:
        self._call = self.client.stub.DecideStream()
        self.first = await self._exchange(self._request(self.history))

    async def send(self, bar: Bar) -> Decision:
        try:
            d = await self._exchange(self._request(bar))
        except DecisionRefused as refused:
            if refused.reason != NO_HISTORY:
                raise
            await self._exchange(self._request(self.history))
            d = await self._exchange(self._request(bar))
        grown = self.history.append(bar)
        self.history = grown[len(grown) - len(self.history):]
        return d

    async def close(self) -> None:
        if self._call is not None:
            await self._call.done_writing()

    async def __aenter__(self) -> AsyncTickStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _request(self, item: Input) -> decision_pb2.DecideRequest:
        return request_for(item, self.instrument, backtest=self.backtest)

    async def _exchange(self, request: decision_pb2.DecideRequest) -> Decision:
        for attempt in range(2):
            try:
                await self._call.write(request)
                d = await self._call.read()
                if d is grpc.aio.EOF:
                    raise DecisionRefused("UNAVAILABLE", "the stream ended")
                return _answer(d, self.instrument)
            except grpc.aio.AioRpcError as exc:
                if attempt or exc.code() not in RETRIED:
                    raise _refused(exc) from None
                self._call = self.client.stub.DecideStream()
                if request.WhichOneof("input") == "bar":
                    await self._call.write(self._request(self.history))
                    await self._call.read()
        raise AssertionError("unreachable")
