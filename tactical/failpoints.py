"""Crash points for fault tests: with TACTICAL_CRASH_AT=<name> a process SIGKILLs itself at that point.

A kill from outside cannot land reliably inside a write that takes a millisecond; this one does,
so a test can prove what a crash at the worst moment leaves behind. Unset, it costs one lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_AT_ENV = "TACTICAL_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process here if TACTICAL_CRASH_AT names this point."""
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
