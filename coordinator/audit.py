"""The audit trail: every decision appended to SQLite (WAL) by a writer process of its own.

Why a process, and why it is so shy: a writer thread took the GIL from the event loop in
bursts (+15-40% on the decision p99, measured here); a writer process woken by each pipe
write was scheduled onto the coordinator's CPU and stalled it the same way. So the request
path only appends a small frame (the serialized Decision, the time, the window's sha256) to
a buffer; every `flush_ms` (serving.audit_flush_ms) the buffer goes to a pipe in one write;
the writer, SCHED_IDLE (it never preempts a serving process), wakes on its own timer, reads
what the pipe holds and commits it. The interval trades the crash-loss window against tail
latency: each flush disturbs the decisions in flight a little, so 5 flushes a second moved
the p99 at 8 streams by +18% and 1 a second did not measurably (benchmarks/audit_overhead.py).

Nothing is lost on a graceful stop (the coordinator closes the pipe, the writer drains it
and commits). If the coordinator is SIGKILLed, everything already handed over is committed
by the writer: at most the last `flush_ms` of decisions is lost. If the writer dies, the
coordinator starts a new one; if it falls hopelessly behind (MAX_BUFFERED), decisions are
dropped from the log and counted, never from the service.

    python -m coordinator.audit PATH [--poll-ms MS]   # the writer (the coordinator starts it)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fcntl
import hashlib
import logging
import os
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tactical.actions import action_label
from tactical.v1 import decision_pb2

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,          -- when the coordinator answered, ms since the epoch
    window_sha256 TEXT NOT NULL,       -- hex digest of the float32 window the agents saw
    bar_time_ms INTEGER NOT NULL,      -- last bar's time for bar requests, else 0
    action TEXT NOT NULL,              -- Short, Hold or Long
    confidence REAL NOT NULL,
    model_version INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    degraded INTEGER NOT NULL,
    reason TEXT NOT NULL,
    decision BLOB NOT NULL             -- the whole tactical.v1.Decision as answered: votes, probabilities...
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (time_ms);
"""
_INSERT = ("INSERT INTO decisions (request_id, time_ms, window_sha256, bar_time_ms, action, confidence, model_version,"
           " latency_ms, degraded, reason, decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_FRAME = struct.Struct("<IQ32s")  # decision length, answered at (ms), window sha256
MAX_BUFFERED = 64 << 20  # bytes waiting for a stuck writer before frames are dropped
PIPE_BYTES = 1 << 20  # pipe capacity: a flush interval's frames at several thousand decisions/s
_F_SETPIPE_SZ = 1031  # Linux fcntl
DRAIN_ATTEMPTS = 3  # writers started at shutdown before the rest is given up


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating) an audit database in WAL mode."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a process kill
    conn.executescript(SCHEMA)
    return conn


class AuditLog:
    """The coordinator's end: frames decisions and hands them to the writer process.

    Lives on the event loop: frames wait in a buffer for the flush timer; when the pipe is
    full the rest is written as soon as the pipe has room (the loop watches it), so a writer
    that falls behind under load catches up later instead of losing anything, up to
    MAX_BUFFERED bytes.
    """

    def __init__(self, path: str | Path, flush_ms: float):
        self.path = Path(path)
        self.flush_s = flush_ms / 1000
        connect(self.path).close()  # fail at start, not later, if the file cannot be opened
        self.dropped = 0
        self._buffer = bytearray()
        self._lengths: collections.deque[int] = collections.deque()  # frame sizes in the buffer, oldest first
        self._into_head = 0  # bytes of the oldest frame already in the pipe
        self._timer: asyncio.TimerHandle | None = None
        self._watching = False
        self._writer = self._start_writer()

    def _start_writer(self) -> subprocess.Popen:
        writer = subprocess.Popen([sys.executable, "-m", "coordinator.audit", str(self.path), "--poll-ms",
                                   str(self.flush_s * 500)], stdin=subprocess.PIPE, start_new_session=True)
        fd = writer.stdin.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        return writer

    def record(self, decision: decision_pb2.Decision, window: bytes) -> None:
        """Queue a decision (a few microseconds); the writer gets it within `flush_ms`."""
        data = decision.SerializeToString()
        self._buffer += _FRAME.pack(len(data), int(time.time() * 1000), hashlib.sha256(window).digest())
        self._buffer += data
        self._lengths.append(_FRAME.size + len(data))
        if self._timer is None and not self._watching:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._write()

    def _write(self) -> None:
        fd = self._writer.stdin.fileno()
        try:
            self._sent(os.write(fd, self._buffer))
        except BlockingIOError:
            pass  # the pipe is full: the loop calls back when it has room
        except BrokenPipeError:
            self._writer_died()
            return
        if len(self._buffer) > MAX_BUFFERED:
            self._overflow()
        loop = asyncio.get_running_loop()
        if self._buffer and not self._watching:
            loop.add_writer(fd, self._write)
            self._watching = True
        elif not self._buffer and self._watching:
            loop.remove_writer(fd)
            self._watching = False

    def _sent(self, count: int) -> None:
        del self._buffer[:count]
        count += self._into_head
        while self._lengths and count >= self._lengths[0]:
            count -= self._lengths.popleft()
        self._into_head = count

    def _writer_died(self) -> None:
        if self._watching:
            asyncio.get_running_loop().remove_writer(self._writer.stdin.fileno())
            self._watching = False
        self._replace_writer()
        self._write()

    def _replace_writer(self) -> None:
        """Start a new writer; the frame the dead one got half of is lost, the rest goes to the new one."""
        log.error("the audit writer died (exit code %s); starting a new one", self._writer.wait())
        if self._into_head:
            del self._buffer[:self._lengths.popleft() - self._into_head]
            self._into_head = 0
            self.dropped += 1
        self._writer = self._start_writer()

    def _overflow(self) -> None:
        """The writer is stuck: drop every whole frame not yet started (keeping the stream aligned)."""
        keep = self._lengths[0] - self._into_head if self._into_head else 0
        frames = len(self._lengths) - (1 if keep else 0)
        del self._buffer[keep:]
        self._lengths = collections.deque(list(self._lengths)[:1] if keep else [])
        self.dropped += frames
        log.error("the audit writer is stuck: dropped %d decisions from the audit log", frames)

    async def aclose(self) -> None:
        """Hand everything over, close the pipe, wait until the writer has committed it all."""
        if self._timer is not None:
            self._timer.cancel()
        if self._watching:
            asyncio.get_running_loop().remove_writer(self._writer.stdin.fileno())
            self._watching = False
        await asyncio.to_thread(self._drain)

    def _drain(self) -> None:
        """Blocking hand-over of the rest; a writer found dead now (a kill since the last flush) is replaced."""
        for _ in range(DRAIN_ATTEMPTS):
            fd = self._writer.stdin.fileno()
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            try:
                while self._buffer:
                    self._sent(os.write(fd, self._buffer))
                self._writer.stdin.close()
                break
            except BrokenPipeError:
                self._replace_writer()
        else:
            log.error("audit writers keep dying at shutdown: %d decisions not logged", len(self._lengths))
            self.dropped += len(self._lengths)
        self._writer.wait()


def _rows(data: bytes) -> tuple[list[tuple[Any, ...]], int]:
    """Decode the complete frames at the start of `data`; return the rows and the bytes used."""
    rows, offset = [], 0
    while len(data) - offset >= _FRAME.size:
        size, answered_ms, digest = _FRAME.unpack_from(data, offset)
        end = offset + _FRAME.size + size
        if end > len(data):
            break
        blob = data[offset + _FRAME.size:end]
        d = decision_pb2.Decision.FromString(blob)
        rows.append((d.request_id, answered_ms, digest.hex(), d.bar_time_ms, action_label(d.action), d.confidence,
                     d.model_version, d.latency_ms, int(d.degraded), d.reason, blob))
        offset = end
    return rows, offset


def run_writer(path: str, poll_s: float) -> None:
    """Every `poll_s`, read what the pipe holds and commit it; stop at EOF.

    The writer keeps out of the serving processes' way: it is SCHED_IDLE (it never preempts
    them, it runs in the gaps), and it wakes on its own timer rather than on pipe writes (a
    pipe wakeup is scheduled onto the writing CPU and stalled the coordinator: measured +15-45%
    on the decision p99). The pipe and the coordinator's buffer hold what it has not read yet.
    """
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    conn = connect(path)
    fd = sys.stdin.buffer.fileno()
    os.set_blocking(fd, False)
    pending = b""
    eof = False
    while not eof:
        time.sleep(poll_s)
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            pending += chunk
        rows, used = _rows(pending)
        pending = pending[used:]
        if rows:
            with conn:
                conn.executemany(_INSERT, rows)
    conn.close()


def latest(path: str | Path, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` decisions, oldest first, with their votes decoded."""
    conn = connect(path)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM decisions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    finally:
        conn.close()
    out = []
    for row in reversed(rows):
        record = dict(row)
        decision = decision_pb2.Decision.FromString(record.pop("decision"))
        record["probabilities"] = [round(p, 6) for p in decision.probabilities]
        record["votes"] = [{"agent": v.agent, "ok": v.ok, "action": action_label(v.action),
                            "probabilities": [round(p, 6) for p in v.probabilities],
                            "latency_ms": round(v.latency_ms, 3), "error": v.error} for v in decision.votes]
        out.append(record)
    return out


def summary(path: str | Path) -> dict[str, Any]:
    """Counts by action and by model version, degraded share, time range."""
    conn = connect(path)
    try:
        total, degraded = conn.execute("SELECT COUNT(*), COALESCE(SUM(degraded), 0) FROM decisions").fetchone()
        by_action = dict(conn.execute("SELECT action, COUNT(*) FROM decisions GROUP BY action").fetchall())
        by_version = dict(conn.execute(
            "SELECT model_version, COUNT(*) FROM decisions GROUP BY model_version ORDER BY model_version").fetchall())
        first, last = conn.execute("SELECT MIN(time_ms), MAX(time_ms) FROM decisions").fetchone()
    finally:
        conn.close()
    return {"decisions": total, "degraded": degraded, "by_action": by_action, "by_version": by_version,
            "first_ms": first, "last_ms": last}


def main() -> None:
    parser = argparse.ArgumentParser(description="The audit writer: frames on stdin -> SQLite (started by the "
                                                 "coordinator).")
    parser.add_argument("path")
    parser.add_argument("--poll-ms", type=float, default=100.0)
    args = parser.parse_args()
    run_writer(args.path, args.poll_ms / 1000)


if __name__ == "__main__":
    main()
