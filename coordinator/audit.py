"""The audit trail: every decision appended to SQLite (WAL) by a background writer thread.

The request path only puts the finished Decision and its window bytes on a queue; hashing,
encoding and the insert happen on the writer thread, which commits at least every
`flush_ms` milliseconds (the documented loss window if the process is SIGKILLed) and
drains everything on close (graceful shutdown loses nothing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
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
    probabilities TEXT NOT NULL,       -- JSON [short, hold, long]
    votes TEXT NOT NULL,               -- JSON list: agent, ok, action, probabilities, latency_ms, error
    model_version INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    degraded INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (time_ms);
"""
_INSERT = ("INSERT INTO decisions (request_id, time_ms, window_sha256, bar_time_ms, action, confidence, probabilities,"
           " votes, model_version, latency_ms, degraded, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_STOP = object()


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating) an audit database in WAL mode."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a process kill
    conn.executescript(SCHEMA)
    return conn


def _row(decision: decision_pb2.Decision, window: bytes, answered_ms: int) -> tuple[Any, ...]:
    votes = [{"agent": v.agent, "ok": v.ok, "action": action_label(v.action),
              "probabilities": [round(p, 6) for p in v.probabilities], "latency_ms": round(v.latency_ms, 3),
              "error": v.error} for v in decision.votes]
    return (decision.request_id, answered_ms, hashlib.sha256(window).hexdigest(), decision.bar_time_ms,
            action_label(decision.action), float(decision.confidence),
            json.dumps([round(p, 6) for p in decision.probabilities]), json.dumps(votes), decision.model_version,
            decision.latency_ms, int(decision.degraded), decision.reason)


class AuditLog:
    def __init__(self, path: str | Path, flush_ms: float):
        self.path = Path(path)
        self.flush_s = flush_ms / 1000.0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.written = 0
        connect(self.path).close()  # fail at start, not in the thread, if the file cannot be opened
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def record(self, decision: decision_pb2.Decision, window: bytes) -> None:
        """Queue a decision for the log; never blocks."""
        self._queue.put((decision, window, int(time.time() * 1000)))

    def close(self) -> None:
        """Write everything queued, then stop the writer."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        conn = connect(self.path)
        stopping = False
        while not stopping:
            rows = []
            deadline = time.monotonic() + self.flush_s
            while True:
                timeout = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(timeout, 0.0)) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                rows.append(_row(*item))
            if rows:
                try:
                    with conn:
                        conn.executemany(_INSERT, rows)
                    self.written += len(rows)
                except sqlite3.Error:
                    log.exception("audit write of %d decisions failed", len(rows))
        conn.close()


def latest(path: str | Path, limit: int) -> list[sqlite3.Row]:
    conn = connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return list(reversed(conn.execute("SELECT * FROM decisions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()))
    finally:
        conn.close()


def summary(path: str | Path) -> dict[str, Any]:
    """Counts by action and by model version, degraded share, latency percentiles."""
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
