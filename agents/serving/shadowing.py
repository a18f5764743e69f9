"""A shadow version's passes off the answer path: an ActStream answers with the active version at
once, runs the shadow's pass after the answer is written, and the shadow's probabilities ride on
the stream's next answer (or, when no request follows within SHADOW_LINGER_S, a message of their
own).

Why: a shadow is scored, never served, so it should not delay a live answer. Run inside the answer
(as unary Act does) it put a second forward pass before every reply, and on a core two agents
share, two. A message of its own for every shadow part was measured to cost more CPU (a gRPC
message each way) than the pass it moved; riding on the next answer costs nothing while traffic
flows.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from agents.serving.registry import VersionRegistry
from tactical.logs import RateLimitedLog
from tactical.v1 import agent_pb2

log = logging.getLogger(__name__)
failures = RateLimitedLog(log)
SHADOW_LINGER_S = 0.02  # a shadow part waits this long for the next answer to carry it
NO_VOTE = np.full(3, math.nan, dtype="<f4").tobytes()  # a window the shadow could not run: the coordinator sees no vote


class ShadowParts:
    """One stream's shadow work: requests asked to be shadowed (not yet run), and parts run but not yet sent."""

    def __init__(self, agent: str, registry: VersionRegistry):
        self.agent, self.registry = agent, registry
        self.asked: list[tuple[int, int, np.ndarray]] = []  # (seq, shadow version, windows)
        self.seqs: list[int] = []
        self.parts: list[bytes] = []

    def ask(self, seq: int, version: int, windows: np.ndarray) -> None:
        self.asked.append((seq, version, windows))

    async def run(self) -> int:
        """Run what was asked, each version's windows in one pass (a version that cannot run gives no votes);
        the number of windows."""
        asked, self.asked = self.asked, []
        for version in dict.fromkeys(v for _, v, _ in asked):
            mine = [(seq, windows) for seq, v, windows in asked if v == version]
            counts = [len(windows) for _, windows in mine]
            try:
                runner = self.registry.get(version) or await self.registry.load_stored(version)
                if runner is None:
                    raise LookupError(f"model version {version} is not on agent {self.agent}")
                probs, _ = runner.infer(mine[0][1] if len(mine) == 1 else np.concatenate([w for _, w in mine]))
                data = probs.astype("<f4", copy=False).tobytes()
            except Exception as exc:  # a shadow that cannot run costs its votes, never the stream
                failures.note("shadow version cannot run", f"{type(exc).__name__}: {exc}", logging.WARNING)
                data = NO_VOTE * sum(counts)
            offset = 0
            for (seq, _), count in zip(mine, counts, strict=True):
                self.seqs.append(seq)
                self.parts.append(data[offset:offset + count * 12])
                offset += count * 12
        return sum(len(windows) for _, _, windows in asked)

    def attach(self, response: agent_pb2.ActResponse) -> bool:
        """Put the parts waiting to be sent into `response`; False when none waited."""
        if not self.seqs:
            return False
        response.shadow_of.extend(self.seqs)
        response.shadow_probabilities = b"".join(self.parts)
        self.seqs, self.parts = [], []
        return True
