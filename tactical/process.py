"""What every server process does around serving: announce its address, log, stop on signals, pin a core.

A server process announces where it listens with one JSON line on stdout
({"listening": "host:port", "pid": N}), which the launcher waits for; its logs go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable

from tactical.errors import UserError

LAUNCHER_PID_ENV = "TACTICAL_LAUNCHER_PID"
CLUSTER_ENV = "TACTICAL_CLUSTER"  # one local cluster's id, in the environment of every process it starts
_PR_SET_PDEATHSIG = 1


class ProcessError(UserError, RuntimeError):
    """A server process that cannot start here (its launcher is gone, a core it may not use)."""


def announce_listening(address: str, metrics: str | None = None) -> None:
    """The one stdout line a launcher waits for (with the metrics endpoint's address, when there is one)."""
    sys.stdout.write(json.dumps({"listening": address, "pid": os.getpid(), "metrics": metrics}) + "\n")
    sys.stdout.flush()


def on_shutdown_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Run `callback` on SIGINT or SIGTERM (graceful shutdown)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)


async def serve_until_signal(address: str, metrics: str | None = None) -> None:
    """Announce `address` to the launcher, then return at the first SIGINT or SIGTERM."""
    announce_listening(address, metrics)
    stop = asyncio.Event()
    on_shutdown_signals(asyncio.get_running_loop(), stop.set)
    await stop.wait()


def follow_launcher() -> None:
    """Started by `tactical up`: have the kernel send SIGTERM if the launcher dies (Linux prctl)."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher:
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(launcher):  # the launcher died before we got here
        raise ProcessError("the launcher that started this process is gone")


def started_with(key: str, value: str) -> list[int]:
    """Live processes whose environment has `key`=`value`: what a launcher started, its children's children too
    (the environment is inherited). A process in the middle of its exec shows no environment for that moment."""
    marker = f"{key}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


def pin_to_core(core: int) -> int:
    """Pin this process (and the threads it starts later) to one CPU; return the core, -1 if not pinned."""
    if core < 0:
        return -1
    available = sorted(os.sched_getaffinity(0))
    if core not in available:
        raise ProcessError(f"cannot pin to core {core}: this process may use cores {available}")
    os.sched_setaffinity(0, {core})
    return core
