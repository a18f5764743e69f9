"""The active model version and its history, persisted atomically so a restart keeps them."""

from __future__ import annotations

import json
from pathlib import Path

from tactical.atomic import atomic_write_text

HISTORY_LIMIT = 100


class ActiveVersionState:
    """`version` is what every decision uses (None until the first activation)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / "active_version.json"
        try:
            data = json.loads(self.path.read_text())
            self.version: int | None = int(data["active"])
            self.history: list[int] = [int(v) for v in data["history"]]
        except FileNotFoundError:
            self.version, self.history = None, []

    def _persist(self, version: int, history: list[int]) -> None:
        atomic_write_text(self.path, json.dumps({"active": version, "history": history[-HISTORY_LIMIT:]}))

    def activate(self, version: int) -> int | None:
        """Make `version` active (persisted first, then switched); return the previous one."""
        previous = self.version
        history = self.history + ([previous] if previous is not None and previous != version else [])
        self._persist(version, history)
        self.version, self.history = version, history[-HISTORY_LIMIT:]
        return previous

    def rollback_target(self) -> int | None:
        return self.history[-1] if self.history else None

    def rollback(self) -> int | None:
        """Re-activate the previous version (popping it from the history); return the one replaced."""
        target = self.rollback_target()
        if target is None:
            raise LookupError("no earlier version to roll back to")
        previous = self.version
        self._persist(target, self.history[:-1])
        self.version, self.history = target, self.history[:-1]
        return previous
