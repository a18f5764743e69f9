"""Crash-safe file writes: write a temporary sibling, fsync it, rename over the target, fsync the directory.

A reader (or a process restarted after a kill) sees either the old file or the new one, never
a half-written one. Temporary names start with '.tmp-' so loaders skip them, and carry the
writer's host and pid so a sweep removes only leftovers of writers that are gone: another
process may be writing into the same store right now. Files get the usual umask permissions
(a model store is shared with agents that may run as another user).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tactical.errors import UserError

TMP_PREFIX = ".tmp-"
FOREIGN_TMP_STALE_S = 3600.0  # a temporary from another host is swept only when this old


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "localhost"


def _tmp_prefix(path: Path) -> str:
    """'.tmp-<name>.<host>.<pid>.' (mkstemp/mkdtemp append a random part)."""
    return f"{TMP_PREFIX}{path.name}.{_host()}.{os.getpid()}."


def _read_umask() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    raise OSError("no Umask line in /proc/self/status")


try:
    _UMASK = _read_umask()
except OSError:  # no /proc: read it the old way, once, before any thread of ours runs
    _UMASK = os.umask(0o022)
    os.umask(_UMASK)
_IMPORTED = time.time()  # a temporary with our pid but older than this is a dead namesake's


def fsync_dir(path: str | Path) -> None:
    """Make a rename or creation inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it atomically replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes owner-only files
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name; on a clean exit rename it to `path` (which must not exist).

    Every file written inside should be fsynced by the caller (atomic_write_* does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes owner-only directories
        yield tmp
        fsync_dir(tmp)
        if path.exists():
            raise FileExistsError(f"{path} already exists")
        try:
            os.rename(tmp, path)  # fails if path exists: a version is never overwritten
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another writer got there first
                raise FileExistsError(f"{path} already exists") from None
            raise
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def discard_tree(path: str | Path) -> None:
    """Remove a directory so that no reader ever sees it half deleted: renamed to a temporary name at once,
    then deleted; a kill in between leaves a temporary the owner's next sweep removes."""
    path = Path(path)
    doomed = path.with_name(f"{_tmp_prefix(path)}discarded")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _writer_gone(entry: Path) -> bool:
    """Whether the process that made this temporary is gone (or, on another host, it is stale)."""
    parts = entry.name.rsplit(".", 3)  # [.tmp-<name>, host, pid, random]
    if len(parts) == 4 and parts[1] == _host() and parts[2].isdigit():
        if int(parts[2]) == os.getpid():  # ours, unless it predates us (a restarted container reuses pids)
            try:
                return entry.lstat().st_mtime < _IMPORTED
            except FileNotFoundError:
                return False
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False  # still writing (a reused pid only delays the sweep)
    try:
        return time.time() - entry.lstat().st_mtime > FOREIGN_TMP_STALE_S
    except FileNotFoundError:
        return False


def sweep_temporaries(directory: str | Path) -> int:
    """Remove leftovers of interrupted atomic writes in `directory` whose writer is gone; return how many."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    count = 0
    for entry in directory.iterdir():
        if entry.name.startswith(TMP_PREFIX) and _writer_gone(entry):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            count += 1
    return count


class UnwritablePath(UserError, OSError):
    """A directory a process must write to but cannot; the message names it and why."""


def require_writable_dir(path: str | Path, what: str) -> Path:
    """Create `path` if needed and prove it writable (a temporary file made and removed), or UnwritablePath."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_tmp_prefix(path / "probe"), dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UnwritablePath(f"cannot write to {what} at {path.resolve()}: {exc.strerror or exc}") from None
    return path
