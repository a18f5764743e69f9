"""The audit trail: every decision answered is committed to SQLite (WAL) or counted as dropped, exactly.

    answered == logged + dropped + waiting, and waiting is 0 after a graceful stop.

How a record travels:
- The request path gives it the next sequence number of this coordinator's run, frames it (an
  AuditRecord: the Decision as answered and the window the agents saw) and appends it to the
  backlog: a few microseconds, no I/O.
- Every `serving.audit_flush_ms` the frames not yet sent go down a pipe, in one write, to a
  writer process of its own, which commits them in a batch and answers on its own pipe with the
  highest sequence number it committed. Only then does the coordinator let a record go.
- A writer that dies is replaced and gets every record not yet acknowledged again; rows are
  keyed by (run, seq), so what the dead one had committed is not stored twice.
- The writer never dies of a record: a value SQLite cannot hold (NaN, inf) goes in as NULL
  beside the whole Decision, which keeps it exactly. It never dies of the disk either: a commit
  that fails (disk full, read-only, immutable files) is retried, and reported on its pipe, so
  the coordinator says AUDIT DEGRADED and why.
- Bounded: records wait in memory up to `serving.audit_backlog_bytes`, then, when
  `paths.audit_spill` names a directory (put it on another disk), in a spill file there up to
  `serving.audit_spill_bytes`; they are read back as the writer catches up, and a coordinator
  started after a crash sends what a dead one's spill file still holds. Past both, the policy
  decides (`serving.audit_policy`): fail-open answers and counts the record as dropped;
  fail-closed refuses decisions (UNAVAILABLE) while the audit is degraded.

Why a process, and why it is so shy: a writer thread took the GIL from the event loop in bursts
(+15-40% on the decision p99, measured here); a writer process woken by each pipe write was
scheduled onto the coordinator's CPU and stalled it the same way. So the writer is SCHED_IDLE
and wakes on its own timer, and the coordinator writes to the pipe once per flush interval.

    python -m coordinator.audit PATH RUN [--poll-ms MS]   # the writer (the coordinator starts it)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import sqlite3
import struct
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tactical.actions import action_label
from tactical.errors import UserError
from tactical.logs import RateLimitedLog
from tactical.v1 import audit_pb2, decision_pb2
from tactical.wire import DEFAULT_INSTRUMENT

log = logging.getLogger(__name__)
trouble_log = RateLimitedLog(log, interval_s=30.0)

FAIL_OPEN, FAIL_CLOSED = "fail-open", "fail-closed"
SCHEMA_VERSION = 6
_LENGTH = struct.Struct("<I")
PIPE_BYTES = 1 << 20  # pipe capacity: a flush interval's frames at several thousand decisions/s
_F_SETPIPE_SZ = 1031  # Linux fcntl
RESTART_BACKOFF_S = (0.1, 5.0)  # a writer that keeps dying is restarted after 0.1 s, doubling up to 5 s
STALL_S = 5.0  # waiting records and no acknowledgement for this long past a poll: the writer is stuck
DRAIN_TIMEOUT_S = 8.0  # a graceful stop waits this long for the writer's last commits (the launcher allows 10 s)
SPILL_READ_BYTES = 4 << 20  # read back from the spill file in chunks of this size
SPILL_PREFIX = "audit-spill."
PRUNE_S = 60.0  # how often the writer clears windows past their retention

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,                 -- the coordinator process that answered (random id per start)
    seq INTEGER NOT NULL,              -- the record's number in that run
    request_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,          -- when the coordinator answered, ms since the epoch
    window_sha256 TEXT NOT NULL,       -- hex digest of the float32 window the agents saw
    bar_time_ms INTEGER NOT NULL,      -- last bar's time for bar requests, else 0
    action TEXT NOT NULL,              -- Short, Hold or Long
    confidence REAL,                   -- NULL when not a finite number (the decision keeps it exactly)
    model_version INTEGER,             -- NULL when no version was active
    latency_ms REAL,
    degraded INTEGER NOT NULL,
    reason TEXT NOT NULL,
    decision BLOB NOT NULL,            -- the whole tactical.v1.Decision as answered: votes, probabilities...
    instrument TEXT NOT NULL DEFAULT 'default',
    traceparent TEXT,                  -- the W3C trace context the client sent, NULL when none
    close REAL,                        -- the last bar's close for bar requests, else NULL
    window BLOB,                       -- zlib of the float32 window the agents saw; NULL past audit_window_days
    shadow_version INTEGER,            -- the shadow version run beside the active one, NULL when none
    shadow_action TEXT,                -- its action on the same window
    backtest INTEGER NOT NULL DEFAULT 0,  -- 1: historical bars a backtest replayed, not live traffic
    UNIQUE (run, seq)
)""",
    """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,                -- e.g. guard-rollback
    detail TEXT NOT NULL,              -- JSON: what happened and why, with the figures
    UNIQUE (run, seq)
)""",
    "CREATE INDEX IF NOT EXISTS decisions_time ON decisions (time_ms)",
    "CREATE INDEX IF NOT EXISTS decisions_instrument ON decisions (instrument, time_ms)",
)
_COLUMNS = ("run, seq, request_id, time_ms, window_sha256, bar_time_ms, action, confidence, model_version, "
            "latency_ms, degraded, reason, decision, instrument, traceparent, close, window, shadow_version, "
            "shadow_action, backtest")
_INSERT = f"INSERT OR IGNORE INTO decisions ({_COLUMNS}) VALUES ({', '.join('?' * 20)})"
_INSERT_EVENT = "INSERT OR IGNORE INTO events (run, seq, time_ms, kind, detail) VALUES (?, ?, ?, ?, ?)"
def _v2_table() -> str:
    """The table as layout 2 had it (what migrating a layout-1 database starts from): the columns added later
    are added by their own steps."""
    later = ("instrument", "traceparent", "close", "window", "shadow_version", "shadow_action", "backtest")
    return "\n".join(line for line in _SCHEMA[0].splitlines() if line.split()[0] not in later)


# Each earlier layout and the statements that bring it to the next; a database is brought up to date once.
_MIGRATIONS = {
    # version 1: before (run, seq) keys, with NOT NULL numbers: rows kept, as run 'v1'
    1: ("DROP INDEX IF EXISTS decisions_time",
        "ALTER TABLE decisions RENAME TO decisions_v1",
        _v2_table(),
        "INSERT INTO decisions (run, seq, request_id, time_ms, window_sha256, bar_time_ms, action, confidence, "
        "model_version, latency_ms, degraded, reason, decision) SELECT 'v1', id, request_id, time_ms, window_sha256, "
        "bar_time_ms, action, confidence, model_version, latency_ms, degraded, reason, decision FROM decisions_v1",
        "DROP TABLE decisions_v1"),
    # version 2: before instruments
    2: ("ALTER TABLE decisions ADD COLUMN instrument TEXT NOT NULL DEFAULT 'default'",),
    # version 3: before trace context
    3: ("ALTER TABLE decisions ADD COLUMN traceparent TEXT",),
    # version 4: before windows and closes were kept (replay, the promotion gate), and shadows and events
    4: ("ALTER TABLE decisions ADD COLUMN close REAL", "ALTER TABLE decisions ADD COLUMN window BLOB",
        "ALTER TABLE decisions ADD COLUMN shadow_version INTEGER",
        "ALTER TABLE decisions ADD COLUMN shadow_action TEXT"),
    # version 5: before backtest traffic was marked
    5: ("ALTER TABLE decisions ADD COLUMN backtest INTEGER NOT NULL DEFAULT 0",),
}


class AuditError(UserError, RuntimeError):
    """The audit log cannot be used at all (an unwritable path at start); the message names the path."""


class AuditUnavailable(RuntimeError):
    """fail-closed: a decision refused because the audit cannot record it now; the message says why."""


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating, or bringing an older layout up to date) an audit database in WAL mode."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a process kill
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def open_log(path: str | Path) -> sqlite3.Connection:
    """An existing audit log opened for reading (brought up to date like `connect`). Raises AuditError naming the
    path when it is not one: another SQLite database (nothing is added to it), not SQLite at all, a directory."""
    try:
        probe = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=30)
        try:
            found = probe.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions'").fetchone()
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{path} is not an audit log ({exc})") from None
    if found is None:
        raise AuditError(f"{path} is not an audit log (an SQLite database without a decisions table)")
    return connect(path)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an audit database of an earlier layout (or a new one) to SCHEMA_VERSION, in one transaction.

    The version is read again inside the transaction: coordinators sharing the file (`tactical up
    --coordinators N`) start together, and only the first may migrate."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            conn.execute("COMMIT")
            return
        columns = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
        if columns:  # an existing table: its layout is the version (user_version 0 was written before it was kept)
            version = version or (1 if "run" not in columns else 2)
            for step in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def check_writable(path: str | Path) -> None:
    """Open the audit log once at start, so an unusable path is one clear error now, not trouble later."""
    try:
        connect(path).close()
    except (sqlite3.Error, OSError) as exc:
        raise AuditError(f"cannot write the audit log at {Path(path).resolve()}: {exc}") from None


def frame(record: audit_pb2.AuditRecord) -> bytes:
    data = record.SerializeToString()
    return _LENGTH.pack(len(data)) + data


def read_frames(data: bytes | bytearray) -> tuple[list[bytes], int]:
    """The complete frames' payloads at the start of `data`, and the bytes they take."""
    payloads, offset = [], 0
    while len(data) - offset >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(data, offset)
        end = offset + _LENGTH.size + size
        if end > len(data):
            break
        payloads.append(bytes(data[offset + _LENGTH.size:end]))
        offset = end
    return payloads, offset


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def row(payload: bytes, keep_window: bool = True) -> tuple[str, tuple[Any, ...]]:
    """("decision" or "event", the row of one record); values SQLite cannot hold become NULL (the decision blob
    keeps them). The window is kept zlib-compressed (level 1: 1680 bytes of features become about 820)."""
    record = audit_pb2.AuditRecord.FromString(payload)
    if record.event:
        return "event", (record.run, record.seq, record.answered_ms, json.loads(record.event)["kind"], record.event)
    d = decision_pb2.Decision.FromString(record.decision)
    return "decision", (
            record.run, record.seq, d.request_id, record.answered_ms, hashlib.sha256(record.window).hexdigest(),
            d.bar_time_ms, action_label(d.action), _finite(d.confidence),
            d.model_version if d.HasField("model_version") else None, _finite(d.latency_ms), int(d.degraded),
            d.reason, record.decision, d.instrument or DEFAULT_INSTRUMENT, record.traceparent or None,
            record.close if math.isfinite(record.close) and record.close > 0 else None,
            zlib.compress(record.window, 1) if keep_window else None,
            record.shadow_version if record.HasField("shadow_version") else None,
            action_label(record.shadow_action) if record.HasField("shadow_version") else None, int(record.backtest))


@dataclass(frozen=True)
class AuditStatus:
    """The audit as status and health report it."""

    policy: str
    trouble: str | None  # None: committing as it should; else why the audit is degraded
    answered: int  # decisions recorded (or dropped) since start
    logged: int  # of those, committed
    dropped: int  # of those, left out of the log (fail-open, backlog full)
    waiting: int  # of those, in memory or the spill file, not yet committed
    spilled: int  # of the waiting, in the spill file
    backlog_bytes: int  # memory the waiting records take
    recovered: int  # records of an earlier coordinator's spill file committed since start



class Spill:
    """Records waiting on disk, oldest first, while the memory backlog is full: one file in paths.audit_spill.

    Appended while records overflow memory, read back from the front as the writer catches up,
    emptied (truncated) when all is read. Its name carries the coordinator's pid and run, so a
    coordinator started later knows a dead one's leftovers (recover()) from a live one's.
    """

    def __init__(self, directory: str | Path, run: str, limit_bytes: int):
        self.directory = Path(directory)
        self.path = self.directory / f"{SPILL_PREFIX}{os.getpid()}.{run}.bin"
        self.limit_bytes = limit_bytes
        self.pending = 0  # records in the file not yet read back
        self._file = None
        self._written = 0  # bytes appended since the file was last emptied
        self._read = 0  # bytes of those read back

    def append(self, data: bytes) -> bool:
        """Keep a frame on disk; False when the spill is full or cannot be written (the caller decides)."""
        if self._written - self._read + len(data) > self.limit_bytes:
            return False
        try:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a+b")  # noqa: SIM115 (kept open while records wait in it)
            self._file.write(data)
        except OSError as exc:
            trouble_log.note("audit spill", f"cannot write {self.path}: {exc}", logging.ERROR)
            return False
        self._written += len(data)
        self.pending += 1
        return True

    def take(self, max_bytes: int = SPILL_READ_BYTES) -> list[bytes]:
        """The oldest waiting frames, about `max_bytes` of them, removed from the spill."""
        if not self.pending:
            return []
        self._file.flush()
        self._file.seek(self._read)
        data = self._file.read(max_bytes)
        payloads, used = read_frames(data)
        if not payloads:  # one frame larger than max_bytes
            (size,) = _LENGTH.unpack_from(data)
            self._file.seek(self._read)
            payloads, used = read_frames(self._file.read(_LENGTH.size + size))
        self._read += used
        self.pending -= len(payloads)
        if not self.pending:
            self._file.truncate(0)
            self._written = self._read = 0
        return [_LENGTH.pack(len(p)) + p for p in payloads]

    def close(self) -> None:
        """Keep what is still pending on disk for the next start (fsynced); remove an empty file."""
        if self._file is None:
            return
        if self.pending:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if not self.pending:
            self.path.unlink(missing_ok=True)


def leftover_spills(directory: str | Path) -> list[Path]:
    """Spill files of coordinators that are gone, oldest first: records answered but never committed."""
    found = []
    for path in Path(directory).glob(f"{SPILL_PREFIX}*.bin"):
        pid = path.name[len(SPILL_PREFIX):].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # its coordinator still runs
            except ProcessLookupError:
                found.append(path)
            except PermissionError:
                continue
    return sorted(found, key=lambda p: p.stat().st_mtime)


class AuditLog:
    """The coordinator's end of the audit trail (see the module docstring). Lives on the event loop."""

    def __init__(self, path: str | Path, *, flush_ms: float, policy: str = FAIL_OPEN,
                 backlog_bytes: int = 64 << 20, spill_dir: str | Path | None = None, spill_bytes: int = 1 << 30,
                 window_days: float = 30.0):
        self.path = Path(path)
        self.window_days = window_days
        check_writable(self.path)
        self.flush_s = flush_ms / 1000
        self.policy = policy
        self.backlog_limit = backlog_bytes
        self.run = uuid.uuid4().hex[:12]
        self.answered = self.logged = self.dropped = self.recovered = 0
        self._seq = 0
        self._records: collections.deque[tuple[bytes, bool]] = collections.deque()  # (frame, ours), oldest first
        self._memory_bytes = 0
        self._out = bytearray()  # frames not yet in the pipe
        self._spill = Spill(spill_dir, self.run, spill_bytes) if spill_dir else None
        self._leftovers = leftover_spills(spill_dir) if spill_dir else []
        self._leftover_pending = 0
        self._writer: subprocess.Popen | None = None
        self._acked = 0  # frames the current writer has acknowledged
        self._writer_error: str | None = None
        self._deaths: collections.deque[float] = collections.deque(maxlen=8)
        self._restart: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watching = False
        self._reading = False
        self._progress = time.monotonic()  # the last acknowledgement, or when waiting began
        self._closing = False
        for path in self._leftovers:
            self._recover(path)
        self._start_writer()

    # ------------------------------------------------------------------ the request path
    def accepting(self) -> bool:
        """Whether a decision may be answered now: always under fail-open; under fail-closed only while the
        audit is not in trouble."""
        return self.policy == FAIL_OPEN or self.trouble() is None

    def record(self, decision: decision_pb2.Decision, window: bytes, traceparent: str = "",
               close: float = math.nan, shadow_version: int | None = None, shadow_action: int = 0,
               backtest: bool = False) -> None:
        """Take a decision's record (a few microseconds); the writer gets it within flush_ms."""
        self.answered += 1
        data = self._framed(audit_pb2.AuditRecord(window=window, decision=decision.SerializeToString(),
                                                  traceparent=traceparent, close=close,
                                                  shadow_version=shadow_version, shadow_action=shadow_action,
                                                  backtest=backtest))
        full = self._memory_bytes + len(data) > self.backlog_limit
        if self._spill is not None and (self._spill.pending or full) and self._spill.append(data):
            pass
        elif full and self.policy == FAIL_OPEN:
            self.dropped += 1
            trouble_log.note("audit dropped", f"the audit backlog is full ({self._memory_bytes:,} bytes waiting"
                             f"{', and the spill file' if self._spill is not None else ''}): decisions answered "
                             f"now are left out of the log (serving.audit_policy fail-open)", logging.ERROR)
            return
        else:  # fail-closed keeps every record it took, over the limit if it must
            self._keep(data, ours=True)
        self._schedule()

    def event(self, kind: str, **detail: Any) -> None:
        """Record an operational event (the guard's rollback...) in the events table, beside the decisions.
        Events are rare and small: they wait in memory whatever the backlog, and are not decisions (ours=None)."""
        self._keep(self._framed(audit_pb2.AuditRecord(event=json.dumps({"kind": kind, **detail}))), ours=None)
        self._schedule()

    def _framed(self, record: audit_pb2.AuditRecord) -> bytes:
        self._seq += 1
        record.run, record.seq, record.answered_ms = self.run, self._seq, int(time.time() * 1000)
        if not self._records:
            self._progress = time.monotonic()
        return frame(record)

    def _schedule(self) -> None:
        if self._timer is None and not self._watching:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self._flush)

    def _keep(self, data: bytes, ours: bool | None) -> None:
        """`ours`: a decision of this run (True), an earlier run's (False), an event (None)."""
        self._records.append((data, ours))
        self._memory_bytes += len(data)
        if self._writer is not None:
            self._out += data

    # ------------------------------------------------------------------ status
    def trouble(self) -> str | None:
        """Why the audit is degraded, or None."""
        if self._writer_error is not None:
            return f"the audit writer cannot commit to {self.path}: {self._writer_error}"
        if self._writer is None:
            return "the audit writer is down (being restarted)"
        waiting_s = time.monotonic() - self._progress
        if self._records and waiting_s > self.flush_s + STALL_S:
            return f"the audit writer has committed nothing for {waiting_s:.0f} s"
        if self._spill is not None and self._spill.pending:
            return f"the audit writer is behind: {self._spill.pending:,} records in the spill file {self._spill.path}"
        if self._memory_bytes > self.backlog_limit:
            return f"the audit backlog is full ({self._memory_bytes:,} bytes)"
        return None

    def status(self) -> AuditStatus:
        ours = sum(1 for _, mine in self._records if mine)
        spilled = self._spill.pending if self._spill is not None else 0
        return AuditStatus(self.policy, self.trouble(), self.answered, self.logged, self.dropped, ours + spilled,
                           spilled, self._memory_bytes, self.recovered)

    # ------------------------------------------------------------------ the writer process
    def _start_writer(self) -> None:
        self._restart = None
        writer = subprocess.Popen([sys.executable, "-m", "coordinator.audit", str(self.path), "--poll-ms",
                                   str(self.flush_s * 500), "--window-days", str(self.window_days)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        fd = writer.stdin.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(writer.stdout.fileno(), False)
        self._writer, self._acked = writer, 0
        self._out = bytearray(b"".join(data for data, _ in self._records))  # every record not acknowledged
        self._progress = time.monotonic()
        self._reading = False
        with contextlib.suppress(RuntimeError):  # no running loop yet: the first _write starts reading
            asyncio.get_running_loop().add_reader(writer.stdout.fileno(), self._on_output, writer)
            self._reading = True

    def _on_output(self, writer: subprocess.Popen) -> None:
        """The writer's reports: 'ack N' (N frames committed so far), 'error TEXT'; EOF when it died."""
        try:
            data = os.read(writer.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not data:
            self._writer_died(writer)
            return
        for line in data.decode("utf-8", "replace").splitlines():
            kind, _, value = line.partition(" ")
            if kind == "ack" and writer is self._writer:
                self._acknowledged(int(value))
            elif kind == "error" and writer is self._writer:
                self._writer_error = value
                trouble_log.note("audit writer", f"cannot commit to {self.path}: {value}; records wait "
                                 f"({self._memory_bytes:,} bytes in memory)", logging.ERROR)

    def _acknowledged(self, total: int) -> None:
        for _ in range(total - self._acked):
            data, ours = self._records.popleft()
            self._memory_bytes -= len(data)
            if ours:
                self.logged += 1
            elif ours is False:
                self.recovered += 1
                self._leftover_pending -= 1
        self._acked = total
        self._writer_error = None
        self._progress = time.monotonic()
        if self._leftovers and not self._leftover_pending:
            for path in self._leftovers:
                path.unlink(missing_ok=True)
            self._leftovers = []
        self._refill()

    def _refill(self) -> None:
        """Move spilled records back into memory while there is room."""
        while self._spill is not None and self._spill.pending and self._memory_bytes < self.backlog_limit // 2:
            for data in self._spill.take():
                self._keep(data, ours=True)
            self._schedule_write()

    def _writer_died(self, writer: subprocess.Popen) -> None:
        if writer is not self._writer:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(writer.stdout.fileno())
        self._reading = False
        if self._watching:
            loop.remove_writer(writer.stdin.fileno())
            self._watching = False
        code = writer.wait()
        for pipe in (writer.stdin, writer.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        self._writer = None
        now = time.monotonic()
        self._deaths.append(now)
        recent = sum(1 for t in self._deaths if now - t < 60)
        delay = 0.0 if self._closing else min(RESTART_BACKOFF_S[0] * 2 ** (recent - 1), RESTART_BACKOFF_S[1])
        trouble_log.note("audit writer", f"the audit writer exited (code {code}); {len(self._records):,} records "
                         f"not acknowledged are sent again to a new one in {delay:.1f} s", logging.ERROR)
        self._restart = loop.call_later(delay, self._start_and_write)

    def _start_and_write(self) -> None:
        self._start_writer()
        self._write()

    def _flush(self) -> None:
        self._timer = None
        if self._writer is not None:
            self._write()

    def _schedule_write(self) -> None:
        if self._writer is not None and self._out and not self._watching:
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        writer = self._writer
        if writer is None:
            return
        if not self._reading:
            asyncio.get_running_loop().add_reader(writer.stdout.fileno(), self._on_output, writer)
            self._reading = True
        fd = writer.stdin.fileno()
        try:
            if self._out:
                del self._out[:os.write(fd, self._out)]
        except BlockingIOError:
            pass  # the pipe is full: the loop calls back when it has room
        except BrokenPipeError:
            self._writer_died(writer)
            return
        loop = asyncio.get_running_loop()
        if self._out and not self._watching:
            loop.add_writer(fd, self._write)
            self._watching = True
        elif not self._out and self._watching:
            loop.remove_writer(fd)
            self._watching = False

    def _recover(self, path: Path) -> None:
        """Records a dead coordinator left in its spill file: sent first, counted as recovered."""
        payloads, _ = read_frames(path.read_bytes())
        for payload in payloads:
            self._keep(_LENGTH.pack(len(payload)) + payload, ours=False)
        self._leftover_pending += len(payloads)
        log.warning("recovering %d audit records left in %s by a coordinator that stopped without committing them",
                    len(payloads), path)

    # ------------------------------------------------------------------ stop
    async def aclose(self) -> AuditStatus:
        """Hand everything over and wait (up to DRAIN_TIMEOUT_S) until the writer has committed it; what it
        could not commit stays in the spill file when there is one (sent by the next start), else is dropped."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (self._records or (self._spill is not None and self._spill.pending)) and time.monotonic() < deadline:
            if self._writer is None and self._restart is None:
                self._start_and_write()
            self._refill()
            self._write()
            await asyncio.sleep(0.02)
        if self._restart is not None:
            self._restart.cancel()
        left = [(data, ours) for data, ours in self._records]
        if left:
            self._keep_on_disk(left)
        writer, self._writer = self._writer, None
        if writer is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(writer.stdout.fileno())
            if self._watching:
                loop.remove_writer(writer.stdin.fileno())
            writer.stdin.close()
            try:
                await asyncio.to_thread(writer.wait, 5.0)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait()
            writer.stdout.close()
        if self._spill is not None:
            self._spill.close()
        return self.status()

    def _keep_on_disk(self, left: list[tuple[bytes, bool]]) -> None:
        """Records the writer could not commit in time: into a fresh spill file ahead of what waits there."""
        self._records.clear()
        self._memory_bytes = 0
        if self._spill is None:
            lost = sum(1 for _, ours in left if ours)
            self.dropped += lost
            log.error("the audit writer could not commit %d decisions before the stop (no paths.audit_spill to "
                      "keep them in): they are not in the audit log", lost)
            return
        rest = []
        while self._spill.pending:
            rest += self._spill.take()
        fresh = Spill(self._spill.directory, self.run, self._spill.limit_bytes + sum(len(d) for d, _ in left))
        for data in [d for d, _ in left] + rest:
            fresh.append(data)
        self._spill.close()
        self._spill = fresh
        log.error("the audit writer could not commit %d records before the stop: they wait in %s for the next "
                  "start", fresh.pending, fresh.path)


# ---------------------------------------------------------------------- the writer process
def _report(text: str) -> None:
    with contextlib.suppress(BrokenPipeError):  # the coordinator is gone: commit what arrived anyway
        os.write(sys.stdout.fileno(), (text + "\n").encode())


def run_writer(path: str, poll_s: float, window_days: float = 30.0) -> None:
    """Every `poll_s`, read what the pipe holds and commit it; report each commit; stop at EOF.

    The writer keeps out of the serving processes' way: it is SCHED_IDLE (it never preempts
    them, it runs in the gaps), and it wakes on its own timer rather than on pipe writes (a
    pipe wakeup is scheduled onto the writing CPU and stalled the coordinator: measured +15-45%
    on the decision p99). A commit that fails is retried at the next poll with the same rows and
    the error reported; the coordinator keeps every record until it is acknowledged. Windows older
    than `window_days` are cleared every PRUNE_S (0: none kept).
    """
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    fd = sys.stdin.buffer.fileno()
    os.set_blocking(fd, False)
    pending = bytearray()
    rows: list[tuple[str, tuple[Any, ...]]] = []
    committed = 0
    conn: sqlite3.Connection | None = None
    eof = False
    pruned = time.monotonic()
    while not (eof and not rows):
        time.sleep(poll_s)
        while not eof:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            eof = not chunk
            pending += chunk
        payloads, used = read_frames(pending)
        del pending[:used]
        for payload in payloads:
            try:
                rows.append(row(payload, keep_window=window_days > 0))
            except Exception as exc:  # a record that is not one (a damaged spill file): said, skipped
                _report(f"error a damaged audit record was skipped: {exc}")
        if not rows:
            continue
        try:
            if conn is None:
                conn = connect(path)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, [values for kind, values in rows if kind == "decision"])
            conn.executemany(_INSERT_EVENT, [values for kind, values in rows if kind == "event"])
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:  # start afresh next time: a connection that failed a write may stay failed
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                conn = None
            _report(f"error {' '.join(str(exc).split())}")
            if eof:
                time.sleep(poll_s)  # the coordinator decides when to give up
            continue
        committed += len(rows)
        rows.clear()
        _report(f"ack {committed}")
        if window_days > 0 and time.monotonic() - pruned > PRUNE_S:
            pruned = time.monotonic()
            with contextlib.suppress(sqlite3.Error):  # retried at the next prune
                conn.execute("UPDATE decisions SET window = NULL WHERE window IS NOT NULL AND time_ms < ?",
                             (int((time.time() - window_days * 86400) * 1000),))
    if conn is not None:
        conn.close()


def latest(path: str | Path, limit: int, *, request_id: str | None = None,
           trace_id: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` decisions, oldest first, with their votes decoded; only those with `request_id`
    or of the W3C trace `trace_id` (32 hex digits) when given."""
    where, params = [], []
    if request_id is not None:
        where.append("request_id = ?")
        params.append(request_id)
    if trace_id is not None:
        where.append("substr(traceparent, 4, 32) = ?")
        params.append(trace_id.lower())
    conn = open_log(path)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(f"SELECT * FROM decisions {'WHERE ' + ' AND '.join(where) if where else ''} "
                            f"ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
    finally:
        conn.close()
    out = []
    for record in reversed(rows):
        entry = dict(record)
        entry.pop("window")  # the features (bytes; replay reads them): window_sha256 names them
        entry["degraded"], entry["backtest"] = bool(entry["degraded"]), bool(entry["backtest"])
        decision = decision_pb2.Decision.FromString(entry.pop("decision"))
        entry["probabilities"] = [round(p, 6) for p in decision.probabilities]
        entry["votes"] = [{"agent": v.agent, "ok": v.ok, "action": action_label(v.action),
                           "probabilities": [round(p, 6) for p in v.probabilities],
                           "latency_ms": round(v.latency_ms, 3), "error": v.error} for v in decision.votes]
        out.append(entry)
    return out


def summary(path: str | Path) -> dict[str, Any]:
    """Counts by action and by model version, degraded and backtest decisions, time range."""
    conn = open_log(path)
    try:
        total, degraded, backtest = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(degraded), 0), COALESCE(SUM(backtest), 0) FROM decisions").fetchone()
        by_action = dict(conn.execute("SELECT action, COUNT(*) FROM decisions GROUP BY action").fetchall())
        by_version = dict(conn.execute(
            "SELECT model_version, COUNT(*) FROM decisions GROUP BY model_version ORDER BY model_version").fetchall())
        first, last = conn.execute("SELECT MIN(time_ms), MAX(time_ms) FROM decisions").fetchone()
    finally:
        conn.close()
    return {"decisions": total, "degraded": degraded, "backtest": backtest, "by_action": by_action,
            "by_version": by_version, "first_ms": first, "last_ms": last}


def main() -> None:
    parser = argparse.ArgumentParser(description="The audit writer: framed records on stdin -> SQLite; reports "
                                                 "on stdout (started by the coordinator).")
    parser.add_argument("path")
    parser.add_argument("--poll-ms", type=float, default=100.0)
    parser.add_argument("--window-days", type=float, default=30.0)
    args = parser.parse_args()
    run_writer(args.path, args.poll_ms / 1000, args.window_days)


if __name__ == "__main__":
    main()
