"""Per-update training metrics as JSON Lines, one line appended per record.

Each record is one write() of a whole line to the file opened for appending, then fsynced: a
reader (a dashboard, a tuning script, `tail -f`) sees whole lines, a crash loses at most the
update in progress, and a record costs the same at update 10,000 as at update 1. Runs share
the file (a resumed run continues it); every record says which run wrote it (`run`: the start
time in UTC and a random suffix) and when (`time`: Unix seconds), so runs whose `update`
numbers repeat stay apart.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any


class MetricsLog:
    """The records of one run, appended to a JSON Lines file (created with its directory on first write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.run = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"

    def write(self, record: dict[str, Any]) -> None:
        """Append `record`, with this run's id and the wall-clock time, as one line; durable on return."""
        line = json.dumps({"run": self.run, "time": time.time(), **record}, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            data = line.encode("utf-8")
            while data:  # a short write (a full disk) must not leave half a line for the next one to join
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a metrics file, oldest first."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
