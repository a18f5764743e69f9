"""Checkpoint selection: which of a training session's candidates to publish, judged on held-out bars.

Training reward says how well a policy fits the bars it learns from, not how it does after them:
on real daily bars it kept rising while the held-out Sharpe ratio of the saved models fell from
1.60 to 0.42, and the last, worst one was published and pushed. So a session scores every
candidate (the model at a save point) on the held-out tail (training.evaluation.validate) and
judges it here:

- a candidate *improves* when its held-out Sharpe ratio is above the best so far in the session.
  The bar starts at flat's (0), or at the resumed model's when that one beats flat, so a policy
  that collapsed to always-Hold (Sharpe 0) never counts as an improvement over nothing;
- publish policy `every` publishes every candidate, each with its score; `improved` only those
  that improve, so the versions a session publishes get better on held-out bars and its last is
  its best; `auto` is `improved` when versions go live (`tactical train --push`), else `every`;
- early stop: `early_stop` candidates in a row without improvement end the session (0: never).

Torch-free (Validation is only a type here), so that `tactical versions` can `describe` records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.evaluation import Validation

EVERY, IMPROVED, AUTO = "every", "improved", "auto"


def resolve_policy(setting: str, pushing: bool) -> str:
    """The policy a session runs: training.publish, `auto` being `improved` when pushing and `every` otherwise."""
    if setting == AUTO:
        return IMPROVED if pushing else EVERY
    return setting


def describe(record: dict[str, Any]) -> str:
    """One line of a validation record (Validation.record()): the model against flat and buy-and-hold."""
    model, flat, hold = record["model"], record["flat"], record["buy_and_hold"]
    beaten = [name for name, key in (("flat", "beats_flat"), ("buy and hold", "beats_buy_and_hold")) if record[key]]
    return (f"Sharpe {model['sharpe']:+.2f} (flat {flat['sharpe']:.2f}, buy and hold {hold['sharpe']:+.2f}), "
            f"return {model['total_return']:+.2%} (buy and hold {hold['total_return']:+.2%}), "
            f"{model['trades']} trades, beats {' and '.join(beaten) if beaten else 'neither'}")


@dataclass
class Candidate:
    """The model at one save point, its held-out score and what the session does with it."""

    update: int
    validation: Validation | None  # None without held-out bars (then only policy `every` runs)
    improved: bool
    publish: bool
    reason: str  # why it improved or not, for the log and the summary
    version: int | None = None  # once published

    def record(self, policy: str) -> dict[str, Any]:
        """What version.json keeps: the score, whether it improved in its session, the policy it was published under."""
        if self.validation is None:
            return {}
        return {"validation": {**self.validation.record(), "update": self.update, "improved": self.improved,
                               "policy": policy}}


class Selection:
    """A session's best candidate so far, the verdict on each new one, and when to stop."""

    def __init__(self, policy: str, early_stop: int = 0):
        if policy not in (EVERY, IMPROVED):
            raise ValueError(f"publish policy must be {EVERY!r} or {IMPROVED!r}, got {policy!r}")
        self.policy, self.early_stop = policy, early_stop
        self.candidates: list[Candidate] = []
        self.best: Candidate | None = None  # the session's last improvement
        self.resumed: Candidate | None = None  # the model a resumed session started from, when it beats flat
        self.stale = 0  # candidates since the last improvement

    def resume_from(self, update: int, validation: Validation) -> None:
        """Make the model a session resumes from the bar to beat, when it beats flat."""
        if validation.beats_flat:
            self.resumed = Candidate(update, validation, improved=False, publish=False, reason="resumed from")

    def judge(self, update: int, validation: Validation | None) -> Candidate:
        """The verdict on the model at `update`: improved or not, published or skipped, and why."""
        leader = self.best or self.resumed
        if validation is None:
            improved, reason = False, "not scored: no held-out bars"
        elif leader is None:
            improved = validation.beats_flat
            always_holds = validation.model.trades == 0
            reason = ("the first to beat flat" if improved else
                      "does not beat flat" + (" (it always holds)" if always_holds else ""))
        else:
            improved = validation.sharpe > leader.validation.sharpe
            which = "the resumed model" if leader is self.resumed else "the best so far"
            reason = (f"{'above' if improved else 'not above'} {which} "
                      f"(update {leader.update}, Sharpe {leader.validation.sharpe:+.2f})")
        candidate = Candidate(update, validation, improved, self.policy == EVERY or improved, reason)
        self.candidates.append(candidate)
        if improved:
            self.best, self.stale = candidate, 0
        else:
            self.stale += 1
        return candidate

    @property
    def should_stop(self) -> bool:
        """Early stop: `early_stop` candidates in a row without improvement."""
        return self.early_stop > 0 and self.stale >= self.early_stop
