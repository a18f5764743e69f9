"""The active model version and its history, persisted atomically so a restart keeps them.

Several coordinators may share one state directory (`tactical up --coordinators N` runs them on
one port, where an admin call reaches any one of them): the file is then the one truth they all
follow. A switch takes an exclusive lock on the directory's signal file, re-reads the state file
(so a rollback pops the shared history, not a stale copy), writes it atomically, then bumps a
counter in the signal file. Every coordinator maps that counter into memory and reads it before
each decision (tens of nanoseconds), so a decision that starts after an Activate returned carries
the new version, whichever coordinator answers it. The file itself is also compared once a
second (`follow`, from the coordinator's monitor), which catches a change without a bump: a
writer killed between the two, a hand edit.

A state file that cannot be read at start (damaged by a disk fault or a hand edit) is moved
aside, named and logged, and the coordinator starts as if it had none: it activates the newest
version every agent holds. A directory it cannot write to is an error at start, naming the path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

from tactical.atomic import atomic_write_text, require_writable_dir

HISTORY_LIMIT = 100
STATE_NAME, SIGNAL_NAME = "active_version.json", "active_version.signal"
log = logging.getLogger(__name__)


def _map_counter(path: Path) -> memoryview:
    """The signal file's 8-byte switch counter, mapped shared (created as 0 by the first coordinator).

    Zeros are written rather than the file extended, so its block exists on disk: a write to a mapped
    hole on a full disk would kill the process (SIGBUS). Two coordinators creating it at once append 16
    zeros; the counter is the first 8."""
    with open(path, "a+b") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            f.write(bytes(8 - size))
            f.flush()
        return memoryview(mmap.mmap(f.fileno(), 8)).cast("Q")


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class ActiveVersionState:
    """`version` is what every decision uses (None until the first activation); `current()` brings it up to
    date with the other coordinators sharing the directory."""

    def __init__(self, directory: str | Path):
        require_writable_dir(directory, "the coordinator's state directory (paths.coordinator_state)")
        self.path = Path(directory) / STATE_NAME
        self._signal_path = Path(directory) / SIGNAL_NAME
        self._counter = _map_counter(self._signal_path)
        self._seen = self._counter[0]  # read before the file: a switch meanwhile is seen at the next decision
        self._file: tuple[int, ...] | None = None  # the identity of the file last read or written here
        self.version: int | None = None
        self.history: list[int] = []
        self.shadow: int | None = None  # a version scored beside the active one (tactical shadow)
        try:
            self._read()
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            aside = self.path.with_name(f"{self.path.name}.corrupt-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
            with contextlib.suppress(FileNotFoundError):  # a sibling starting at the same time moved it first
                self.path.rename(aside)
            log.error("the state file %s could not be read (%s): moved to %s; starting with no active version "
                      "(the newest version every agent holds is activated)", self.path, exc, aside.name)

    def _read(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            identity = _identity(os.fstat(f.fileno()))
            data = json.loads(f.read())
        version, history = int(data["active"]), [int(v) for v in data["history"]]
        shadow = None if data.get("shadow") is None else int(data["shadow"])
        self.version, self.history, self.shadow, self._file = version, history, shadow, identity

    def current(self) -> int | None:
        """The active version, re-read first when another coordinator switched since (per decision: one
        memory read)."""
        if self._counter[0] != self._seen:
            self.follow()
        return self.version

    def follow(self) -> None:
        """Take up a switch another coordinator sharing the directory made: signalled, or seen in the file."""
        signalled = self._counter[0]
        try:
            changed = signalled != self._seen or _identity(self.path.stat()) != self._file
        except FileNotFoundError:
            changed = False  # deleted by hand: keep serving; the next switch writes it again
        self._seen = signalled
        if not changed:
            return
        before = self.version
        try:
            self._read()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._file = None
            log.error("the shared state file %s could not be read (%s): still serving version %s", self.path, exc,
                      before)
            return
        if self.version != before:
            log.info("following version %s, switched by another coordinator sharing %s (was %s)", self.version,
                     self.path.parent, before)

    @contextlib.contextmanager
    def _switching(self) -> Iterator[None]:
        """Read-modify-write of the shared file, one coordinator at a time; the others are signalled after."""
        with open(self._signal_path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.follow()
            yield
            self._counter[0] += 1
            self._seen = self._counter[0]

    def _persist(self, version: int | None, history: list[int], shadow: int | None) -> None:
        atomic_write_text(self.path, json.dumps({"active": version, "history": history[-HISTORY_LIMIT:],
                                                 "shadow": shadow}))
        self._file = _identity(self.path.stat())

    def activate(self, version: int) -> int | None:
        """Make `version` active (persisted first, then switched); return the previous one."""
        with self._switching():
            previous = self.version
            history = self.history + ([previous] if previous is not None and previous != version else [])
            shadow = None if self.shadow == version else self.shadow  # a shadow promoted is a shadow no more
            self._persist(version, history, shadow)
            self.version, self.history, self.shadow = version, history[-HISTORY_LIMIT:], shadow
        return previous

    def rollback_target(self) -> int | None:
        self.follow()
        return self.history[-1] if self.history else None

    def rollback(self) -> int | None:
        """Re-activate the previous version (popping it from the history); return the one replaced."""
        with self._switching():
            if not self.history:
                raise LookupError("no earlier version to roll back to")
            previous, target = self.version, self.history[-1]
            shadow = None if self.shadow == target else self.shadow
            self._persist(target, self.history[:-1], shadow)
            self.version, self.history, self.shadow = target, self.history[:-1], shadow
        return previous

    def set_shadow(self, version: int | None) -> None:
        """Shadow `version` beside the active one (None: stop), persisted; coordinators sharing the state follow."""
        with self._switching():
            self._persist(self.version, self.history, version)
            self.shadow = version
