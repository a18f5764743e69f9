"""The audit trail: every decision appended to SQLite (WAL) by a writer process of its own.

Why a process and not a thread: a writer thread takes the GIL from the event loop in bursts,
and that showed in the decision p99 (+15-40% measured here). Now the request path appends a
small frame (the serialized Decision, the time, the window's sha256) to a buffer; every
`flush_ms` milliseconds (serving.audit_flush_ms) the buffer goes to a pipe in one write, and
the writer process commits what it reads at once. Rare, batched hand-overs matter: each one
wakes the writer and takes a core from the serving processes for a moment (every 5 ms, that
showed as +0.1-0.2 ms on the median decision).

Nothing is lost on a graceful stop (the coordinator closes the pipe, the writer drains it
and commits). If the coordinator is SIGKILLed, everything already handed over is committed
by the writer: at most the last `flush_ms` of decisions is lost. If the writer dies, the
coordinator starts a new one.

    python -m coordinator.audit PATH   # the writer (the coordinator starts it)
"""

from __future__ import annotations

import argparse
import asyncio
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

from tactical.v1 import decision_pb2
from tactical.wire import action_label

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


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating) an audit database in WAL mode."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a process kill
    conn.executescript(SCHEMA)
    return conn


class AuditLog:
    """The coordinator's end: frames decisions and hands them to the writer process."""

    def __init__(self, path: str | Path, flush_ms: float):
        self.path = Path(path)
        self.flush_s = flush_ms / 1000
        connect(self.path).close()  # fail at start, not later, if the file cannot be opened
        self.dropped = 0
        self._buffer = bytearray()
        self._scheduled = False
        self._writer = self._start_writer()

    def _start_writer(self) -> subprocess.Popen:
        writer = subprocess.Popen([sys.executable, "-m", "coordinator.audit", str(self.path)], stdin=subprocess.PIPE,
                                  start_new_session=True)
        fd = writer.stdin.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        return writer

    def record(self, decision: decision_pb2.Decision, window: bytes) -> None:
        """Queue a decision (a few microseconds); the writer gets it within `flush_ms`."""
        data = decision.SerializeToString()
        self._buffer += _FRAME.pack(len(data), int(time.time() * 1000), hashlib.sha256(window).digest())
        self._buffer += data
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.flush_s, self._hand_over)

    def _hand_over(self) -> None:
        self._scheduled = False
        try:
            written = os.write(self._writer.stdin.fileno(), self._buffer)
            del self._buffer[:written]
        except BlockingIOError:
            pass  # the pipe is full: keep the bytes, try again next turn
        except BrokenPipeError:
            log.error("the audit writer died (exit code %s); starting a new one", self._writer.wait())
            self._writer = self._start_writer()
        if len(self._buffer) > MAX_BUFFERED:
            frames = self._drop_buffer()
            log.error("the audit writer is stuck: dropped %d decisions from the audit log", frames)
        if self._buffer and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.flush_s, self._hand_over)

    def _drop_buffer(self) -> int:
        frames, offset = 0, 0
        while offset < len(self._buffer):
            offset += _FRAME.size + _FRAME.unpack_from(self._buffer, offset)[0]
            frames += 1
        self._buffer.clear()
        self.dropped += frames
        return frames

    def close(self) -> None:
        """Hand everything over, close the pipe, wait until the writer has committed it all."""
        fd = self._writer.stdin.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        try:
            self._writer.stdin.write(bytes(self._buffer))
            self._buffer.clear()
            self._writer.stdin.close()
        except BrokenPipeError:
            log.error("the audit writer died before shutdown: %d bytes not logged", len(self._buffer))
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


def run_writer(path: str) -> None:
    """Read frames from stdin until EOF, committing each batch as it arrives.

    Runs at the lowest CPU priority: when a serving process and the writer both want a core,
    the serving process gets it; the writer catches up in the gaps (the pipe and the
    coordinator's buffer hold what it has not read yet).
    """
    os.nice(19)
    conn = connect(path)
    pending = b""
    fd = sys.stdin.buffer.fileno()
    while chunk := os.read(fd, 1 << 20):
        rows, used = _rows(pending + chunk)
        pending = (pending + chunk)[used:]
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
    run_writer(parser.parse_args().path)


if __name__ == "__main__":
    main()
