"""Logging for the long-running processes: one line per event on stderr, and client errors at a bounded rate.

Two formats: `text` for people (time, level, process, message) and `json` for machines (one
JSON object per line with time, level, process, pid, agent, logger, message and the fields a
call passes in `extra=`), so a log shipper needs no parsing rules.

A server that logs every bad request a client sends can be made to write megabytes of log by
anyone who can reach it, and the one line an operator needs drowns in them. Client errors
(undecodable bytes, invalid input) are therefore counted per kind: the first of a kind is
logged at once, then at most one line per interval saying how many more came.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import threading
import time

CLIENT_ERROR_INTERVAL_S = 10.0
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
# what every LogRecord carries; anything else on a record came in through `extra=` and is a field
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, process, pid, agent, logger, message, fields."""

    def __init__(self, process: str, agent: str | None = None):
        super().__init__()
        self.process, self.agent = process, agent

    def format(self, record: logging.LogRecord) -> str:
        entry: dict = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "process": self.process, "pid": record.process,
        }
        if self.agent is not None:
            entry["agent"] = self.agent
        entry["logger"] = record.name
        entry["message"] = record.getMessage()
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(process: str, *, agent: str | None = None, level: str = "info", fmt: str = "text") -> None:
    """Send this process's logs to stderr in `fmt` (text or json) from `level` up, replacing earlier setup."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLinesFormatter(process, agent))
    else:
        label = f"{process} {agent}" if agent else process
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{label} pid {os.getpid()}] %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def logs_are_json() -> bool:
    """Whether this process logs JSON lines (then nothing else may be drawn on stderr)."""
    return any(isinstance(h.formatter, JsonLinesFormatter) for h in logging.getLogger().handlers)


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
