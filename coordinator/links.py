"""The coordinator's connection to one agent: a long-lived ActStream that batches windows in flight.

Why a stream: one message each way per batch, no per-call setup (measured 0.25-0.3 ms less
per decision than a unary call). Why batching: when several decisions are in flight, their
windows go to the agent as one message and one forward pass, so the messages per decision fall
as load rises. A lone window is sent at once; windows wait only while `max_in_flight` messages
are already outstanding on the stream.

When the stream breaks (agent killed, restarting), every waiting window fails at once (its
decision marks the agent unavailable), submissions fail fast while disconnected, and the link
reconnects by itself as soon as the agent is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import grpc
import numpy as np

from tactical.config import ServingConfig
from tactical.metrics import Histogram
from tactical.rpc import aio_channel
from tactical.v1 import agent_pb2, agent_pb2_grpc, common_pb2

log = logging.getLogger(__name__)
INFO_TIMEOUT_S = 1.0


class AgentUnavailable(ConnectionError):
    """The agent cannot be reached right now."""


@dataclass(frozen=True)
class AgentAnswer:
    """One agent's answer for a block of windows."""

    probabilities: np.ndarray  # (count, 3) float32
    values: np.ndarray  # (count,) float32
    version: int
    received: float  # time.perf_counter() when the answer arrived
    shadow: np.ndarray | None = None  # (count, 3) the shadow version's probabilities, when one ran


class Fanout:
    """A block of windows (one decision's, or a batch request's) sent to every agent, and their answers;
    `done` resolves when all agents have answered or failed.

    One future per block instead of one per agent plus asyncio.wait: the fan-out is on the hot
    path, and this halves its bookkeeping. An agent answers a block in one piece.
    """

    __slots__ = ("answers", "count", "done", "errors", "remaining")

    def __init__(self, agents: int, count: int, loop: asyncio.AbstractEventLoop):
        self.count = count
        self.answers: list[AgentAnswer | None] = [None] * agents
        self.errors: list[str] = [""] * agents
        self.remaining = agents
        self.done = loop.create_future()

    def answer(self, index: int, answer: AgentAnswer) -> None:
        if self.answers[index] is None and not self.errors[index]:
            self.answers[index] = answer
            self._count()

    def fail(self, index: int, error: str) -> None:
        if self.answers[index] is None and not self.errors[index]:
            self.errors[index] = error
            self._count()

    def _count(self) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.done.done():
            self.done.set_result(None)


class ArrivalForecast:
    """Which client streams are about to send: answered less than 2 x `linger_s` ago, next request not yet in.

    A closed-loop client sends its next window right after an answer, so its request is known
    to be on its way. Links linger for those (never for anyone else, and at most `linger_s`),
    which makes batches bigger under load and costs a lone client nothing. Measured here with
    32 streams: a 1 ms bound gave ~5,800 decisions/s against ~5,000 with 0.5 ms.
    """

    def __init__(self, linger_s: float):
        self.window_s = 2 * linger_s
        self.linger_s = linger_s
        self._answered: dict[int, float] = {}

    def answered(self, stream: int) -> None:
        self._answered[stream] = time.perf_counter()

    def arrived(self, stream: int) -> None:
        self._answered.pop(stream, None)

    def expected(self) -> int:
        cutoff = time.perf_counter() - self.window_s
        stale = [k for k, t in self._answered.items() if t < cutoff]
        for k in stale:
            del self._answered[k]
        return len(self._answered)


class AgentLink:
    def __init__(self, name: str, address: str, cfg: ServingConfig, window: int, n_features: int,
                 forecast: ArrivalForecast):
        self.name, self.address = name, address
        self.forecast = forecast
        self.window, self.n_features = window, n_features
        self.max_batch, self.max_in_flight = cfg.max_batch, cfg.max_in_flight
        self.channel = aio_channel(address, cfg)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.connected = False
        self.last_error = "not connected yet"
        self.info: agent_pb2.AgentInfo | None = None
        self.messages_sent = 0
        self.windows_sent = 0
        self.batch_size: Histogram | None = None  # windows per message, when metrics are kept
        self._pending: list[tuple[int, bytes, Fanout, int]] = []  # (version, windows, fanout, agent index)
        self._pending_windows = 0
        self._pending_since = 0.0
        self._in_flight: dict[int, list[tuple[Fanout, int]]] = {}
        self._wake = asyncio.Event()
        self._seq = 0
        self._task: asyncio.Task | None = None
        self.on_connect = None  # optional coroutine function, called after each (re)connection

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"link-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.channel.close()

    def submit(self, version: int, windows: bytes, fanout: Fanout, index: int, shadow: int | None = None) -> None:
        """Send this block of windows (fanout.count of them), also to `shadow` if given; the answer or failure
        lands in slot `index`."""
        if not self.connected:
            fanout.fail(index, self.last_error)
        else:
            if not self._pending:
                self._pending_since = time.perf_counter()
            self._pending.append(((version, shadow), windows, fanout, index))
            self._pending_windows += fanout.count
            self._wake.set()

    async def refresh_info(self, timeout: float = INFO_TIMEOUT_S) -> agent_pb2.AgentInfo | None:
        """Ask the agent what it holds; None (and last_error set) when it does not answer."""
        try:
            self.info = await self.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self.info = None
            if not self.connected:
                self.last_error = f"unavailable: {exc.details() or exc.code().name}"
        return self.info

    def servable(self) -> set[int]:
        """Versions the agent can vote with: in memory or persisted (loaded on first use), not held broken."""
        if not self.connected or self.info is None:
            return set()
        return (set(self.info.loaded_versions) | set(self.info.stored_versions)) - set(self.info.broken_versions)

    def holds(self, version: int) -> bool:
        """Connected and can vote with the version."""
        return self.connected and self.info is not None and version not in self.info.broken_versions and (
            version in self.info.loaded_versions or version in self.info.stored_versions)

    async def _supervise(self) -> None:
        while True:
            call = None
            try:
                await self.channel.channel_ready()
                call = self.stub.ActStream()
                self.connected = True
                log.info("connected to agent %s at %s", self.name, self.address)
                await self.refresh_info()
                if self.on_connect is not None:
                    await self.on_connect()
                reader = asyncio.ensure_future(self._read(call))
                writer = asyncio.ensure_future(self._write(call))
                try:
                    done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                finally:
                    for task in (reader, writer):
                        task.cancel()
                    await asyncio.gather(reader, writer, return_exceptions=True)
            except asyncio.CancelledError:
                self._fail_all("coordinator shutting down")
                raise
            except (grpc.aio.AioRpcError, AgentUnavailable) as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                self.last_error = f"unavailable: {detail}"
            except Exception as exc:  # never let one agent's failure stop the link
                log.exception("agent %s link failed", self.name)
                self.last_error = f"link error: {exc}"
            finally:
                if call is not None:
                    call.cancel()
            if self.connected:
                log.warning("lost agent %s (%s); reconnecting", self.name, self.last_error)
            self.connected = False
            self.info = None
            self._fail_all(self.last_error)
            await asyncio.sleep(0.05)

    def _fail_all(self, error: str) -> None:
        slots = [(f, i) for _, _, f, i in self._pending]
        slots += [slot for waiting in self._in_flight.values() for slot in waiting]
        self._pending.clear()
        self._pending_windows = 0
        self._in_flight.clear()
        for fanout, index in slots:
            fanout.fail(index, error)

    async def _write(self, call) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # one more loop turn: windows already arriving join this batch
            self._wake.clear()
            while self._pending and len(self._in_flight) < self.max_in_flight:
                linger = self._linger()
                if linger > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), linger)
                    self._wake.clear()
                    continue
                # one message: blocks of one version, up to max_batch windows (a bigger block goes alone)
                version, take, count = self._pending[0][0], 1, self._pending[0][2].count
                while take < len(self._pending) and self._pending[take][0] == version \
                        and count + self._pending[take][2].count <= self.max_batch:
                    count += self._pending[take][2].count
                    take += 1
                batch, self._pending = self._pending[:take], self._pending[take:]
                self._pending_windows -= count
                self._pending_since = time.perf_counter()
                live = [item for item in batch if not item[2].done.done()]  # skip decisions that gave up
                if not live:
                    continue
                self._seq += 1
                self._in_flight[self._seq] = [(f, i) for _, _, f, i in live]
                count = sum(f.count for _, _, f, _ in live)
                data = live[0][1] if len(live) == 1 else b"".join(w for _, w, _, _ in live)  # a big block: no copy
                request = agent_pb2.ActRequest(
                    seq=self._seq, model_version=version[0], shadow_version=version[1],
                    windows=common_pb2.WindowBatch(data=data, count=count, bars=self.window, features=self.n_features))
                self.messages_sent += 1
                self.windows_sent += count
                if self.batch_size is not None:
                    self.batch_size.observe(count)
                await call.write(request)

    def _linger(self) -> float:
        """Seconds to wait for windows known to be on their way (0: send now)."""
        if self._pending_windows >= self.max_batch or not self.forecast.expected():
            return 0.0
        return max(0.0, self._pending_since + self.forecast.linger_s - time.perf_counter())

    async def _read(self, call) -> None:
        while True:
            response = await call.read()
            received = time.perf_counter()
            if response is grpc.aio.EOF:
                raise AgentUnavailable("the agent closed the stream")
            slots = self._in_flight.pop(response.seq, None)
            self._wake.set()  # room for another message in flight
            if slots is None:
                continue
            probs = np.frombuffer(response.probabilities, dtype="<f4").reshape(-1, 3)
            values = np.frombuffer(response.values, dtype="<f4")
            expected = sum(fanout.count for fanout, _ in slots)
            if response.error.code or len(probs) != expected or len(values) != expected:
                error = response.error.message or f"agent answered {len(probs)} windows for {expected}"
                for fanout, index in slots:
                    fanout.fail(index, error)
                continue
            shadow = np.frombuffer(response.shadow_probabilities, dtype="<f4").reshape(-1, 3) \
                if len(response.shadow_probabilities) == expected * 12 else None
            offset = 0
            for fanout, index in slots:
                end = offset + fanout.count
                fanout.answer(index, AgentAnswer(probs[offset:end], values[offset:end], response.model_version,
                                                 received, None if shadow is None else shadow[offset:end]))
                offset = end


class AgentGroup:
    """One agent's replicas (one or more processes serving the same actor): decisions go round-robin
    to the connected replicas that hold the version asked for, so losing a replica costs no vote.
    """

    def __init__(self, name: str, links: list[AgentLink]):
        self.name = name
        self.links = links
        self._next = 0

    @property
    def connected(self) -> bool:
        return any(link.connected for link in self.links)

    @property
    def last_error(self) -> str:
        return "; ".join(f"{link.address} {link.last_error}" for link in self.links if not link.connected)

    def holds(self, version: int) -> bool:
        """Some replica can answer with this version."""
        return any(link.holds(version) for link in self.links)

    def submit(self, version: int, windows: bytes, fanout: Fanout, index: int, shadow: int | None = None) -> None:
        if len(self.links) == 1:  # the usual case, on the hot path: no choice to make
            self.links[0].submit(version, windows, fanout, index, shadow)
            return
        ready = [link for link in self.links if link.holds(version)] or [link for link in self.links if link.connected]
        if not ready:
            fanout.fail(index, f"unavailable: {self.last_error}")
            return
        self._next += 1
        ready[self._next % len(ready)].submit(version, windows, fanout, index, shadow)

    def start(self) -> None:
        for link in self.links:
            link.start()

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links))

    async def refresh_info(self) -> None:
        await asyncio.gather(*(link.refresh_info() for link in self.links if link.connected))
