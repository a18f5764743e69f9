"""Progress display that suits where stderr goes, and never shares a line with a log record.

On a terminal with text logs: a tqdm bar, and log records are written above it (tqdm's logging
redirection) instead of into the middle of its line. Anywhere else (a file, a pipe, a log
collector, JSON logs): no `\\r` frames, but one log record every few seconds and one at the end,
so a 120-update run redirected to a file is a few readable lines, not one 29 KB line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tactical.logs import logs_are_json

PLAIN_INTERVAL_S = 5.0
log = logging.getLogger("tactical.progress")


class _Discard:
    """tqdm's file for a plain progress: everything it would draw goes to the log instead."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class PlainProgress(tqdm):
    """A tqdm whose frames are log records: at most one per `interval_s`, and the final one."""

    def __init__(self, *args, interval_s: float = PLAIN_INTERVAL_S, **kwargs):
        self._interval_s = interval_s
        self._last_line, self._last_n = time.monotonic(), kwargs.get("initial", 0)
        kwargs.update(file=_Discard(), bar_format="{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) "
                                                  "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        final = self.disable  # close() sets it before drawing the last frame
        now = time.monotonic()
        if msg == "" or self.n == self._last_n or (not final and now - self._last_line < self._interval_s):
            return True
        self._last_line, self._last_n = now, self.n
        d = self.format_dict
        fields = {"progress": d["prefix"], "done": d["n"], "total": d["total"], "elapsed_s": round(d["elapsed"], 1)}
        log.info("%s", self.format_meter(**d), extra=fields)
        return True


@contextmanager
def progress_bar(total: int, desc: str, unit: str, *, initial: int = 0, enabled: bool = True) -> Iterator[tqdm]:
    """A bar over `total` units of work (`initial` of them done before) for the duration of the block; see the
    module docstring."""
    if not enabled:
        with tqdm(total=total, disable=True) as bar:
            yield bar
    elif sys.stderr.isatty() and not logs_are_json():
        with logging_redirect_tqdm(), tqdm(total=total, initial=initial, desc=desc, unit=unit,
                                           dynamic_ncols=True) as bar:
            yield bar
    else:
        with PlainProgress(total=total, initial=initial, desc=desc, unit=unit) as bar:
            yield bar
