"""The top of the house: the Python API, the launcher, rollout and backtest operations, the `tactical` CLI.

The Python API, for programs that decide (see README "Python API"):

    from tactical_engine import Engine, Client, AsyncClient, Decision, Action, Bar

Names are imported when first used, so the CLI (and `tactical --help`) does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {"Engine": "tactical_engine.engine", "EngineStream": "tactical_engine.engine",
        "Client": "tactical_engine.remote", "AsyncClient": "tactical_engine.remote",
        "TickStream": "tactical_engine.remote", "AsyncTickStream": "tactical_engine.remote",
        "Decision": "tactical_engine.api", "Vote": "tactical_engine.api", "Refusal": "tactical_engine.api",
        "DecisionRefused": "tactical_engine.api", "Action": "tactical_engine.api", "Bar": "tactical_engine.api",
        "Bars": "market.bars"}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'tactical_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
