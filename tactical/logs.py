"""Logging for the server processes: one line per event on stderr, and client errors at a bounded rate.

A server that logs every bad request a client sends can be made to write megabytes of log by
anyone who can reach it, and the one line an operator needs drowns in them. Client errors
(undecodable bytes, invalid input) are therefore counted per kind: the first of a kind is
logged at once, then at most one line per interval saying how many more came.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

CLIENT_ERROR_INTERVAL_S = 10.0


def setup_logging(name: str, level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{name} pid {os.getpid()}] %(message)s")


class RateLimitedLog:
    """Log the first event of each kind, then a count of the rest at most once per `interval_s`."""

    def __init__(self, logger: logging.Logger, interval_s: float = CLIENT_ERROR_INTERVAL_S):
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}  # kind -> (last logged at, events since)
        self.counts: dict[str, int] = {}  # kind -> events since start

    def note(self, kind: str, message: str, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            last, since = self._kinds.get(kind, (-float("inf"), 0))
            if now - last < self.interval_s:
                self._kinds[kind] = (last, since + 1)
                return
            self._kinds[kind] = (now, 0)
        if since:
            self.logger.log(level, "%s: %s (and %d more in the last %.0f s)", kind, message, since, now - last)
        else:
            self.logger.log(level, "%s: %s", kind, message)


client_errors = RateLimitedLog(logging.getLogger("tactical.client_errors"))
