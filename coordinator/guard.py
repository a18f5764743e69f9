"""The guard: the active version is rolled back, on live evidence, when it goes wrong.

Checked once a second (the coordinator's monitor), never on the request path. Each check is off
at 0 and judges only after serving.guard_min_decisions decisions (or scored bars) of the version:
- drawdown: of its live P&L since its activation (coordinator.scoring), as a share of equity;
- disagreement: the share of its recent decisions whose voting agents disagreed (committee health);
- invalid votes: the share of its votes since activation that were not a probability distribution.
A breach rolls back to the version before (if every agent still holds it), logs why with the
figures, counts it (tactical_guard_rollbacks_total), records an event in the audit log and shows
it in `tactical status`, as it shows a breach it cannot act on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tactical.logs import RateLimitedLog

if TYPE_CHECKING:
    from coordinator.core import Coordinator

log = logging.getLogger(__name__)
blocked = RateLimitedLog(log, interval_s=60.0)


@dataclass(frozen=True)
class Breach:
    check: str  # drawdown, disagreement, invalid_votes
    value: float
    limit: float
    over: int  # decisions or scored bars the value is over

    def describe(self) -> str:
        return f"{self.check.replace('_', ' ')} {self.value:.1%} > {self.limit:.1%} over {self.over:,}"


def breach(c: Coordinator) -> Breach | None:
    """The first threshold the active version crosses, or None."""
    s, version = c.cfg.serving, c.state.version
    if version is None:
        return None
    least = s.guard_min_decisions
    if s.guard_max_drawdown > 0 and c.scores.active == version and c.scores.scored >= least \
            and c.scores.drawdown > s.guard_max_drawdown:
        return Breach("drawdown", c.scores.drawdown, s.guard_max_drawdown, c.scores.scored)
    if s.guard_max_disagreement > 0:
        health = c.committee.health(version)
        if health is not None and health.decisions >= least and health.disagreement > s.guard_max_disagreement:
            return Breach("disagreement", health.disagreement, s.guard_max_disagreement, health.decisions)
    if s.guard_max_invalid_votes > 0:
        decisions, invalid = c.since_activation()
        share = invalid / (decisions * len(c.agents)) if decisions else 0.0
        if decisions >= least and share > s.guard_max_invalid_votes:
            return Breach("invalid_votes", share, s.guard_max_invalid_votes, decisions)
    return None


def watch(c: Coordinator) -> str | None:
    """Roll back if the active version crossed a threshold; what happened, for the log (None: nothing)."""
    found = breach(c)
    if found is None:
        return None
    version, target = c.state.version, c.state.rollback_target()
    problems = c.missing(target) if target is not None else []
    if target is None or problems or c.feature_skew(target) is not None:
        why = "no earlier version" if target is None else (
            f"version {target} cannot serve: {'; '.join(problems) or c.feature_skew(target)}")
        message = f"version {version} crossed the guard ({found.describe()}) but cannot be rolled back: {why}"
        blocked.note("guard blocked", message, logging.ERROR)
        c.guard_last = (int(time.time() * 1000), f"BLOCKED: {message}")
        return None
    c.state.rollback()
    c.on_activated(target)
    c.metrics.rollbacks += 1
    c.metrics.guard_rollbacks += 1
    message = f"guard: rolled version {version} back to {target}: {found.describe()}"
    c.guard_last = (int(time.time() * 1000), message.removeprefix("guard: "))
    log.error(message, extra={"version": version, "rolled_back_to": target, "check": found.check,
                              "value": found.value, "limit": found.limit, "over": found.over})
    if c.audit is not None:
        c.audit.event("guard-rollback", version=version, rolled_back_to=target, check=found.check,
                      value=found.value, limit=found.limit, over=found.over)
    return message
