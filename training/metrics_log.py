"""Per-update training metrics as JSON Lines, rewritten atomically after every record.

A reader (a dashboard, a tuning script, a person with `tail`) never sees a half-written line,
and a crash loses at most the update in progress. Records of earlier runs in the same file
are kept, so a resumed run continues the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tactical.atomic import atomic_write_text


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []

    def write(self, record: dict[str, Any]) -> None:
        self._lines.append(json.dumps(record, sort_keys=True))
        atomic_write_text(self.path, "\n".join(self._lines) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a metrics file, oldest first."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
