"""Served traffic read back from the audit log: what the agents saw, what was answered, what the price was.

For `tactical replay` (what would version V have done?) and the promotion gate (is the candidate
better on what this cluster serves?). A row's window is used only if it still hashes to the
window_sha256 the writer stored beside it: a row changed since (a hand edit, a bad disk) is
reported, never scored.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator.audit import open_log
from tactical.v1 import decision_pb2


@dataclass
class LoggedTraffic:
    """Decisions as served, oldest first, one entry per row whose window was kept and checks out."""

    instrument: np.ndarray  # (n,) str
    time_ms: np.ndarray  # (n,) when the coordinator answered
    bar_time_ms: np.ndarray  # (n,) the last bar's time, 0 for window requests
    close: np.ndarray  # (n,) the last bar's close, NaN for window requests
    windows: np.ndarray  # (n, window, features) float32
    action: np.ndarray  # (n,) the served Action value
    probabilities: np.ndarray  # (n, 3) the served combined probabilities
    version: np.ndarray  # (n,) the version that answered, -1 when none was active
    degraded: np.ndarray  # (n,) bool: some agent did not vote
    tampered: list[str] = field(default_factory=list)  # "run/seq: why" of rows left out
    without_window: int = 0  # rows whose window was not kept (retention, audit_window_days 0)

    def __len__(self) -> int:
        return len(self.action)


def read_traffic(path: str | Path, *, start_ms: int | None = None, end_ms: int | None = None,
                 instrument: str | None = None, last: int | None = None, shape: tuple[int, int] = (60, 7),
                 live_only: bool = False) -> LoggedTraffic:
    """The decisions answered in [start_ms, end_ms) (of `instrument`; only the `last` N), oldest first;
    `live_only` leaves out what backtests replayed through the cluster."""
    where, params = ["backtest = 0"] if live_only else ["1"], []
    for clause, value in (("time_ms >= ?", start_ms), ("time_ms < ?", end_ms), ("instrument = ?", instrument)):
        if value is not None:
            where.append(clause)
            params.append(value)
    query = (f"SELECT run, seq, instrument, time_ms, bar_time_ms, close, window, window_sha256, decision "
             f"FROM decisions WHERE {' AND '.join(where)} ORDER BY id DESC")
    if last is not None:
        query += f" LIMIT {int(last)}"
    conn = open_log(path)
    try:
        rows = conn.execute(query, params).fetchall()[::-1]
    finally:
        conn.close()
    kept, tampered, without = [], [], 0
    for run, seq, name, time_ms, bar_time, close, blob, sha, served in rows:
        if blob is None:
            without += 1
            continue
        try:
            window = zlib.decompress(blob)
        except zlib.error as exc:
            tampered.append(f"{run}/{seq}: window unreadable ({exc})")
            continue
        if hashlib.sha256(window).hexdigest() != sha or len(window) != shape[0] * shape[1] * 4:
            tampered.append(f"{run}/{seq}: window does not match its sha256")
            continue
        kept.append((name, time_ms, bar_time, np.nan if close is None else close, window,
                     decision_pb2.Decision.FromString(served)))
    d = [k[5] for k in kept]
    return LoggedTraffic(
        instrument=np.array([k[0] for k in kept], dtype=object), time_ms=np.array([k[1] for k in kept], np.int64),
        bar_time_ms=np.array([k[2] for k in kept], np.int64), close=np.array([k[3] for k in kept], np.float64),
        windows=np.frombuffer(b"".join(k[4] for k in kept), dtype="<f4").reshape(len(kept), *shape),
        action=np.array([x.action for x in d], np.int64).reshape(len(d)),
        probabilities=np.array([list(x.probabilities) or [0.0, 0.0, 0.0] for x in d], np.float64).reshape(
            len(d), 3),
        version=np.array([x.model_version if x.HasField("model_version") else -1 for x in d], np.int64),
        degraded=np.array([x.degraded for x in d], bool), tampered=tampered, without_window=without)

