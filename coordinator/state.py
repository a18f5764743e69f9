"""The active model version and its history, persisted atomically so a restart keeps them.

A state file that cannot be read (damaged by a disk fault or a hand edit) is moved aside, named
and logged, and the coordinator starts as if it had none: it activates the newest version every
agent holds. A directory it cannot write to is an error at start, naming the path.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

from tactical.atomic import atomic_write_text, require_writable_dir

HISTORY_LIMIT = 100
log = logging.getLogger(__name__)


class ActiveVersionState:
    """`version` is what every decision uses (None until the first activation)."""

    def __init__(self, directory: str | Path):
        require_writable_dir(directory, "the coordinator's state directory (paths.coordinator_state)")
        self.path = Path(directory) / "active_version.json"
        self.version: int | None = None
        self.history: list[int] = []
        self.shadow: int | None = None  # a version scored beside the active one (tactical shadow)
        try:
            data = json.loads(self.path.read_text())
            self.version = int(data["active"])
            self.history = [int(v) for v in data["history"]]
            self.shadow = None if data.get("shadow") is None else int(data["shadow"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            aside = self.path.with_name(f"{self.path.name}.corrupt-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
            self.path.rename(aside)
            self.version, self.history, self.shadow = None, [], None
            log.error("the state file %s could not be read (%s): moved to %s; starting with no active version "
                      "(the newest version every agent holds is activated)", self.path, exc, aside.name)

    def _persist(self, version: int | None, history: list[int], shadow: int | None) -> None:
        atomic_write_text(self.path, json.dumps({"active": version, "history": history[-HISTORY_LIMIT:],
                                                 "shadow": shadow}))

    def activate(self, version: int) -> int | None:
        """Make `version` active (persisted first, then switched); return the previous one."""
        previous = self.version
        history = self.history + ([previous] if previous is not None and previous != version else [])
        shadow = None if self.shadow == version else self.shadow  # a shadow promoted is a shadow no more
        self._persist(version, history, shadow)
        self.version, self.history, self.shadow = version, history[-HISTORY_LIMIT:], shadow
        return previous

    def rollback_target(self) -> int | None:
        return self.history[-1] if self.history else None

    def rollback(self) -> int | None:
        """Re-activate the previous version (popping it from the history); return the one replaced."""
        target = self.rollback_target()
        if target is None:
            raise LookupError("no earlier version to roll back to")
        previous = self.version
        shadow = None if self.shadow == target else self.shadow
        self._persist(target, self.history[:-1], shadow)
        self.version, self.history, self.shadow = target, self.history[:-1], shadow
        return previous

    def set_shadow(self, version: int | None) -> None:
        """Shadow `version` beside the active one (None: stop), persisted."""
        self._persist(self.version, self.history, version)
        self.shadow = version
