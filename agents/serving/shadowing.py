"""A shadow version's passes off the answer path: an ActStream answers with the active version at
once; the shadow's pass runs afterwards, in the core's idle time, and its probabilities ride on the
stream's next answer (or, when no request follows within SHADOW_LINGER_S, a message of their own).

Why: a shadow is scored, never served, so it should not cost a live answer anything. Run inside the
answer (as unary Act does) it put a second forward pass before every reply, and on a core two agents
share, two. Here the passes run on a thread the kernel schedules only when the core has nothing else
to do (SCHED_IDLE); ONNX Runtime releases the GIL while it computes, so the event loop answers
meanwhile. What waits while the core is busy runs together, one pass for many requests. A job that
has waited RESCUE_S (a core with no idle time) is run by the event loop itself, batched with the
others waiting: every window gets its shadow pass, late rather than never. A message of its own for
every shadow part was measured to cost more CPU than the pass it moved; riding on the next answer
costs nothing while traffic flows.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from agents.serving.runtime import ActorRunner
from tactical.logs import RateLimitedLog
from tactical.v1 import agent_pb2

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)
SHADOW_LINGER_S = 0.02  # a shadow part waits this long for the next answer to carry it
RESCUE_S = 0.05  # a shadow job waiting this long is run on the event loop, at normal priority
NO_VOTE = np.full(3, math.nan, dtype="<f4").tobytes()  # a window the shadow could not run: the coordinator sees no vote


class StreamShadows:
    """One stream's shadow parts: asked for and not yet run (`outstanding`), or run and not yet sent."""

    def __init__(self):
        self._lock = threading.Lock()  # the worker thread delivers, the event loop sends
        self._seqs: list[int] = []
        self._parts: list[bytes] = []
        self.outstanding = 0

    def asked(self) -> None:
        """A job for the worker: a part to expect."""
        with self._lock:
            self.outstanding += 1

    def put(self, seqs: list[int], parts: list[bytes], ran: int = 0) -> None:
        """Parts for these requests (`ran` of them were outstanding jobs)."""
        with self._lock:
            self._seqs.extend(seqs)
            self._parts.extend(parts)
            self.outstanding -= ran

    def expecting(self) -> bool:
        """Parts are waiting to be sent, or jobs to be run."""
        return bool(self._seqs) or self.outstanding > 0

    def attach(self, response: agent_pb2.ActResponse) -> bool:
        """Move the parts waiting to be sent into `response`; False when none waited."""
        with self._lock:
            if not self._seqs:
                return False
            response.shadow_of.extend(self._seqs)
            response.shadow_probabilities = b"".join(self._parts)
            self._seqs, self._parts = [], []
        return True


@dataclass
class _Job:
    seq: int
    runner: ActorRunner
    windows: np.ndarray
    stream: StreamShadows
    queued: float  # time.monotonic()


def _idle_priority() -> None:
    """Run the calling thread only when its core is otherwise idle (Linux SCHED_IDLE; else the lowest nice)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError) as exc:
            log.warning("shadow passes run at normal priority: %s", exc)


class ShadowWorker:
    """The agent's shadow passes: a SCHED_IDLE thread, and the event loop for jobs that waited too long."""

    def __init__(self, max_batch: int):
        self.max_batch = max_batch
        self.windows_run = 0
        self.windows_rescued = 0  # of those, run by the event loop after RESCUE_S
        self._jobs: collections.deque[_Job] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="shadow-passes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join()

    def submit(self, seq: int, runner: ActorRunner, windows: np.ndarray, stream: StreamShadows) -> None:
        stream.asked()
        with self._ready:
            self._jobs.append(_Job(seq, runner, windows, stream, time.monotonic()))
            self._ready.notify()

    def rescue(self) -> None:
        """Run, here, the jobs that have waited RESCUE_S or more (the core had no idle time for them)."""
        cutoff = time.monotonic() - RESCUE_S
        while True:
            with self._ready:
                if not self._jobs or self._jobs[0].queued > cutoff:
                    return
            jobs = self._take(block=False)
            if not jobs:
                return
            self._run(jobs)
            with self._ready:
                self.windows_rescued += sum(len(job.windows) for job in jobs)

    def _take(self, block: bool = True) -> list[_Job] | None:
        """The next jobs to run as one pass: same version, same stream, up to max_batch windows (None: stopping)."""
        with self._ready:
            while block and not self._jobs and not self._stopping:
                self._ready.wait()
            if not self._jobs or (block and self._stopping):
                return None
            first = self._jobs.popleft()
            jobs, count = [first], len(first.windows)
            while self._jobs and self._jobs[0].runner is first.runner and self._jobs[0].stream is first.stream \
                    and count + len(self._jobs[0].windows) <= self.max_batch:
                count += len(self._jobs[0].windows)
                jobs.append(self._jobs.popleft())
            return jobs

    def _run(self, jobs: list[_Job]) -> None:
        counts = [len(job.windows) for job in jobs]
        try:
            probs, _ = jobs[0].runner.infer(jobs[0].windows if len(jobs) == 1 else
                                            np.concatenate([job.windows for job in jobs]))
            data = probs.astype("<f4", copy=False).tobytes()
        except Exception as exc:  # a shadow that fails costs its votes, never the agent
            failures.note("shadow pass failed", f"{type(exc).__name__}: {exc}", logging.WARNING)
            data = NO_VOTE * sum(counts)
        parts, offset = [], 0
        for count in counts:
            parts.append(data[offset:offset + count * 12])
            offset += count * 12
        jobs[0].stream.put([job.seq for job in jobs], parts, ran=len(jobs))
        with self._ready:
            self.windows_run += sum(counts)

    def _work(self) -> None:
        _idle_priority()
        while (jobs := self._take()) is not None:
            self._run(jobs)
