"""Checkpoint selection: candidates are judged on held-out bars, and what a user deploys is the best of them.

The policy rules are tested on real scores (positions scored on a real series by the same code
training uses); the session is tested on a real training run whose held-out Sharpe ratio peaks
before its last update, as the issue's real runs did.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from agents.serving.model_store import VERSION_FILE, ModelStore, best_version
from market.synthetic import SyntheticParams, generate
from tactical.config import default_config
from training.evaluation import Validation, oracle_positions, validate_positions
from training.metrics_log import read_metrics
from training.selection import AUTO, EVERY, IMPROVED, Selection, resolve_policy
from training.series import HOLDOUT, TradingSeries
from training.session import run_session

TACTICAL = [sys.executable, "-c", "import sys; from tactical_engine.cli import main; sys.exit(main())"]
SMALL = {"num_envs": 4, "episode_length": 16, "minibatch_size": 32, "epochs": 1}


def run(*args, timeout=180):
    return subprocess.run([*TACTICAL, *args], capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- the policy, on real scores

@pytest.fixture(scope="module")
def scores() -> dict[str, Validation]:
    """Held-out scores of known policies on a trending synthetic market: always Hold, the regime oracle
    (long in up-trends, short in down-trends), the oracle on every other trend bar only, always long."""
    cfg = default_config()
    market = generate(4000, seed=3, params=SyntheticParams(trend_drift=1.0, mean_duration=200.0))
    series = TradingSeries.from_bars(market.bars, cfg)
    first, last = series.decision_bars(HOLDOUT)
    oracle = oracle_positions(market.regimes, series).astype(np.float64)
    half = oracle.copy()
    half[::2] = 0
    n = last - first + 1
    return {name: validate_positions(p, series, cfg) for name, p in
            {"hold": np.zeros(n), "oracle": oracle, "half": half, "long": np.ones(n)}.items()}


def test_the_known_policies_score_as_expected(scores):
    assert scores["hold"].sharpe == 0 and not scores["hold"].beats_flat and scores["hold"].model.trades == 0
    assert 0 < scores["half"].sharpe < scores["oracle"].sharpe
    assert scores["oracle"].beats_flat and scores["oracle"].beats_buy_and_hold
    assert scores["long"].sharpe == pytest.approx(scores["long"].buy_and_hold.sharpe)
    assert scores["oracle"].flat.sharpe == 0 and scores["oracle"].flat.trades == 0


def test_a_candidate_improves_only_above_flat_and_every_earlier_candidate(scores):
    order = ["hold", "half", "oracle", "half", "oracle", "hold"]
    for policy in (IMPROVED, EVERY):
        selection = Selection(policy)
        verdicts = [selection.judge(update, scores[name]) for update, name in enumerate(order, start=1)]
        assert [v.improved for v in verdicts] == [False, True, True, False, False, False]  # a tie is no improvement
        published = [v.update for v in verdicts if v.publish]
        assert published == ([2, 3] if policy == IMPROVED else [1, 2, 3, 4, 5, 6])
        assert selection.best is verdicts[2]
        assert verdicts[0].reason == "does not beat flat (it always holds)"  # a Hold collapse never counts
        assert verdicts[1].reason == "the first to beat flat"
        assert verdicts[3].reason == f"not above the best so far (update 3, Sharpe {scores['oracle'].sharpe:+.2f})"


def test_a_resumed_run_must_beat_the_model_it_resumed_from(scores):
    selection = Selection(IMPROVED)
    selection.resume_from(40, scores["oracle"])
    verdict = selection.judge(41, scores["half"])
    assert not verdict.improved and not verdict.publish and selection.best is None
    assert verdict.reason.startswith("not above the resumed model (update 40")

    selection = Selection(IMPROVED)
    selection.resume_from(40, scores["hold"])  # a resumed model that does not beat flat sets no bar
    assert selection.judge(41, scores["half"]).improved


def test_early_stop_counts_candidates_since_the_last_improvement(scores):
    selection = Selection(EVERY, early_stop=2)
    stops = [(selection.judge(u, scores[name]), selection.should_stop)[1]
             for u, name in enumerate(["hold", "half", "hold", "half", "half"], start=1)]
    assert stops == [False, False, False, True, True]
    assert not Selection(EVERY).should_stop and selection.stale == 3


def test_auto_publishes_improvements_when_pushing_and_every_candidate_otherwise():
    assert resolve_policy(AUTO, pushing=True) == IMPROVED and resolve_policy(AUTO, pushing=False) == EVERY
    assert resolve_policy(EVERY, pushing=True) == EVERY and resolve_policy(IMPROVED, pushing=False) == IMPROVED


def test_the_best_version_compares_only_scores_on_the_same_bars(tmp_path):
    store = ModelStore(tmp_path)

    def write(version, sharpe, *, source="a.csv", last_ms=2000, beats_flat=True):
        validation = {"first_ms": 1000, "last_ms": last_ms, "transaction_cost": 1e-4, "beats_flat": beats_flat,
                      "model": {"sharpe": sharpe}}
        store.write_version(version, {VERSION_FILE: json.dumps({"data": {"source": source},
                                                                "validation": validation}).encode()})

    assert best_version(store) is None
    store.write_version(0, {VERSION_FILE: b"{}"})  # the embedded default: never scored
    write(1, 1.6)
    write(2, 0.4)
    assert best_version(store) == 1
    write(3, 1.6)
    assert best_version(store) == 3  # of equal scores, the newer
    write(4, 9.0, last_ms=3000)  # a later --until: other held-out bars, which the newest scores are on
    assert best_version(store) == 4
    write(5, 0.0, last_ms=3000, beats_flat=False)
    assert best_version(store) == 4
    write(6, 0.0, source="b.csv", beats_flat=False)  # newest bars, where nothing beat flat
    assert best_version(store) is None


# ---------------------------------------------------------------- a real session

# A strong planted edge but a short training window (1,250 bars) and an eager learner (learning rate 1e-3, 8
# epochs over minibatches of 64): the policy leaves Hold after one update, reaches its best held-out Sharpe
# ratio by the third, then trades more and more on what it fits in its window (3 held-out trades at update
# 3, 13 at 5) and does worse on the held-out half while its training reward goes on rising.
# Seeded data and training on one thread: the same run every time. About 15 s on an idle 2-core machine.
OVERFITTING = {
    "training": {"num_envs": 8, "episode_length": 32, "minibatch_size": 64, "epochs": 8, "learning_rate": 0.001,
                 "seed": 1, "holdout_fraction": 0.5},
    "synthetic": {"bars": 2500, "seed": 11, "trend_drift": 2.0, "mean_duration": 200.0},
}
UPDATES = 5


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory):
    """`tactical train --save-every 1 --push` in process: the default policy (auto) with a push after each publish."""
    tmp = tmp_path_factory.mktemp("selection")
    cfg = default_config().replace(**OVERFITTING, paths={"model_store": str(tmp / "store"),
                                                         "metrics": str(tmp / "metrics.jsonl")})
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    pushed: list[int] = []
    result = run_session(cfg.to_dict(), updates=UPDATES, save_every=1, progress=False, after_publish=pushed.append)
    return tmp, result, pushed


@pytest.mark.cluster
def test_pushing_publishes_exactly_the_improvements_and_the_last_published_is_the_best_not_the_last(pushed_run):
    tmp, result, pushed = pushed_run
    store = ModelStore(tmp / "store")
    trajectory = ", ".join(f"update {c.update}: Sharpe {c.validation.sharpe:+.1f}, {c.validation.model.trades} trades"
                           for c in result.candidates)
    assert result.policy == IMPROVED, "--push without --publish publishes only improvements"
    assert [c.update for c in result.candidates] == list(range(1, UPDATES + 1)), trajectory

    # what improved, recomputed from the candidates' held-out scores: above flat and every earlier candidate
    bar, improvements = 0.0, []
    for c in result.candidates:
        if c.validation.sharpe > bar:
            bar, improvements = c.validation.sharpe, [*improvements, c.update]
    assert improvements, trajectory
    assert [c.update for c in result.candidates if c.improved] == improvements

    # published, pushed and in the store: exactly those, in order, each with its score
    assert pushed == result.versions == store.versions()[1:], trajectory
    records = [store.info(v)["validation"] for v in pushed]
    assert [r["update"] for r in records] == improvements
    assert all(r["improved"] and r["beats_flat"] and r["policy"] == IMPROVED for r in records)
    by_update = {c.update: c.validation for c in result.candidates}
    assert [r["model"]["sharpe"] for r in records] == [by_update[u].sharpe for u in improvements]

    # the last published is the best, and the best is not the last candidate: training went on past it
    assert best_version(store) == pushed[-1] and result.best.version == pushed[-1]
    last = result.candidates[-1]
    assert result.best.update < last.update and last.validation.sharpe < result.best.validation.sharpe, trajectory
    assert not last.publish and last.reason.startswith(f"not above the best so far (update {result.best.update}")
    training_rewards = [r["episode_reward"] for r in read_metrics(tmp / "metrics.jsonl")]
    assert training_rewards[-1] > training_rewards[result.best.update - 1], "training reward rose past the best"


@pytest.mark.cluster
def test_versions_json_shows_every_versions_validation_and_marks_the_best(pushed_run):
    tmp, _, pushed = pushed_run
    res = run("versions", "--offline", "--json", "--config", str(tmp / "config.yaml"))
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    assert listing["best"] == pushed[-1]
    entries = {e["version"]: e for e in listing["store"]}
    assert [v for v, e in entries.items() if e["best"]] == [pushed[-1]]
    assert "validation" not in entries[0]  # the embedded default was never scored
    for version in pushed:
        v = entries[version]["validation"]
        assert {"update", "bars", "first_ms", "last_ms", "transaction_cost", "improved", "beats_flat",
                "beats_buy_and_hold"} <= set(v)
        assert {"sharpe", "log_return", "total_return", "trades"} <= set(v["model"]) == set(v["buy_and_hold"])
        assert v["flat"]["sharpe"] == 0 and v["flat"]["trades"] == 0

    text = run("versions", "--offline", "--store", str(tmp / "store")).stdout
    assert f"(best: v{pushed[-1]})" in text and f"* v{pushed[-1]} " in text
    assert text.count("<- best") == 1 and text.count("held out: Sharpe") == len(pushed)


@pytest.mark.cluster
def test_every_candidate_is_published_without_push_and_early_stop_ends_the_run(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({"training": SMALL, "synthetic": {"bars": 3000}, "paths": {
        "model_store": str(tmp_path / "store"), "metrics": str(tmp_path / "metrics.jsonl")}}))
    res = run("train", "--config", str(config), "--updates", "10", "--save-every", "1", "--early-stop", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    # two updates of this small model hold throughout: neither candidate beats flat, so the run stops after two
    assert "trained updates 1-2 (stopped early: 2 candidates in a row without held-out improvement)" in res.stdout
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2
    assert "best: none; no candidate beat flat (always Hold) on the held-out bars" in res.stdout
    assert "published to" in res.stdout and "(publish policy every): v1 (update 1), v2 (update 2)" in res.stdout
    store = ModelStore(tmp_path / "store")
    assert store.versions() == [0, 1, 2] and best_version(store) is None
    for version, update in ((1, 1), (2, 2)):
        v = store.info(version)["validation"]
        assert v["update"] == update and v["policy"] == EVERY and not v["improved"] and v["model"]["trades"] == 0
    assert "update 1, held out: Sharpe +0.00" in res.stderr and "does not beat flat (it always holds): published" \
        in res.stderr
