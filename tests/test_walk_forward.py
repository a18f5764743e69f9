"""Walk-forward evaluation: the segments, its honesty (no test bar reaches training), resuming, scoring."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from agents.serving.model_store import ModelStore
from market.bars import Bars
from market.synthetic import synthetic_bars
from tactical.config import AGENT_NAMES, default_config
from tactical_engine.backtest import BUY_AND_HOLD, MODEL, RANDOM
from tactical_engine.walk_forward import WalkForwardError, WalkForwardRun, plan_segments, score_walk_forward

TINY = {"num_envs": 2, "episode_length": 8, "minibatch_size": 16, "epochs": 1, "updates": 1}
TRAIN, TEST = 300, 120


def tiny_config():
    return default_config().replace(training=TINY)


def walk(tmp_path, name: str, bars: Bars, *, continued: bool = True, updates: int = 1) -> WalkForwardRun:
    return WalkForwardRun(tmp_path / name, tiny_config(), bars, source="test bars", train_bars=TRAIN,
                          test_bars=TEST, step=TEST, updates=updates, continued=continued)


def shas(run: WalkForwardRun, version: int) -> list[str]:
    """The agents' artifact digests of a version: equal digests, equal weights."""
    return [ModelStore(run.store.root).manifest(version, name).sha256 for name in AGENT_NAMES]


def test_segments_follow_each_other_and_each_tests_the_bars_after_its_window():
    cfg = default_config()
    segments = plan_segments(1000, cfg, 300, 100, 100)
    assert len(segments) == 7  # windows start at 0, 100, ... 600; the last tests bars 900-999
    for s in segments:
        assert s.train_end - s.train_first == 300 and s.bars == 100
        assert s.first == s.train_end - 1  # its return, to bar train_end, is the first one after the window
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(segments))  # stitched, no overlap
    assert segments[-1].last == 998  # the last decision earns the return to the last bar
    gaps = plan_segments(1000, cfg, 300, 100, 250)
    assert [s.train_first for s in gaps] == [0, 250, 500] and gaps[1].first - gaps[0].last == 151


@pytest.mark.parametrize(("train", "test", "step", "message"), [
    (100, 50, 50, "--train-bars 100 is too few: one 64-step episode after 92 bars of history needs 156"),
    (300, 100, 50, "--step 50 is below --test-bars 100"),
    (900, 200, 200, "need 1,100 bars (a window and the bars after it), the data has 1,000"),
])
def test_plans_that_do_not_fit_are_refused(train, test, step, message):
    with pytest.raises(WalkForwardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_segments(1000, default_config(), train, test, step)


@pytest.mark.cluster  # trains four tiny models (about 10 s)
def test_no_bar_after_a_window_reaches_its_model(tmp_path, monkeypatch):
    from training import mappo

    trained_on = []

    class Recording(mappo.TacticalMAPPOTrainer):
        def __init__(self, config, **kwargs):
            super().__init__(config, **kwargs)
            trained_on.append((kwargs["bars"], self.series.decision_bars("train")))

    monkeypatch.setattr(mappo, "TacticalMAPPOTrainer", Recording)
    bars = synthetic_bars(TRAIN + 3 * TEST, seed=5)
    run = walk(tmp_path, "a", bars)
    cut = run.segments[1].train_end  # the first bar after segment 1's window
    other = synthetic_bars(len(bars), seed=6)
    scale = bars.close[cut - 1] / other.close[cut - 1]
    future = Bars.from_arrays(bars.time, *(np.concatenate([getattr(bars, c)[:cut], getattr(other, c)[cut:] * (
        scale if c != "volume" else 1.0)]) for c in ("open", "high", "low", "close", "volume")))
    changed = walk(tmp_path, "b", future)
    a = [run.run_segment(s) for s in run.segments[:2]]
    b = [changed.run_segment(s) for s in changed.segments[:2]]
    for (window, (_, last_decision)), segment in zip(trained_on, run.segments[:2] * 2, strict=True):
        # the trainer got the window and nothing more, all of it before the segment's first tested return,
        # and its last training reward is the return into the window's last bar
        assert len(window) == TRAIN and window.time[-1] == bars.time[segment.first] == bars.time[segment.train_end - 1]
        assert last_decision == TRAIN - 2
    for version in (1, 2):  # both models trained alike: nothing after their windows was used
        assert shas(run, version) == shas(changed, version)
    np.testing.assert_array_equal(a[0].positions, b[0].positions)  # segment 0 tests bars before the cut
    assert a[1].positions[0] == b[1].positions[0]  # decided at the window's last bar, before the cut
    assert run.store.info(2)["data"]["train_last_ms"] == int(bars.time[cut - 1])  # recorded as trained through


@pytest.mark.cluster  # trains six tiny models
def test_a_stopped_run_goes_on_from_the_last_finished_segment(tmp_path):
    bars = synthetic_bars(TRAIN + 3 * TEST, seed=5)
    whole = walk(tmp_path, "whole", bars)
    uninterrupted = [whole.run_segment(s) for s in whole.segments]
    assert len(uninterrupted) == 3

    first = walk(tmp_path, "stopped", bars)
    first.run_segment(first.segments[0])
    first.run_segment(first.segments[1])
    (first.dir / "segments" / "segment-0001.json").unlink()  # stopped after publishing segment 1, before deciding
    metrics = first.dir / "metrics.jsonl"  # the run's own: one line per update trained
    lines = metrics.read_text().count("\n")
    again = walk(tmp_path, "stopped", bars)
    assert sorted(again.finished()) == [0]
    resumed = [again.finished()[0]] + [again.run_segment(s) for s in again.segments[1:]]
    assert metrics.read_text().count("\n") == lines + 1  # only segment 2 trained
    for r, u in zip(resumed, uninterrupted, strict=True):
        np.testing.assert_array_equal(r.positions, u.positions)
        assert shas(again, r.version) == shas(whole, u.version)
    assert ModelStore(again.store.root).versions() == [0, 1, 2, 3]  # the embedded default v0 too

    with pytest.raises(WalkForwardError, match=r"holds a run with other settings .*updates: 1 there, 2 now"):
        walk(tmp_path, "stopped", bars, updates=2)
    with pytest.raises(WalkForwardError, match="bars_sha256"):
        walk(tmp_path, "stopped", synthetic_bars(len(bars), seed=7))
    restarted = WalkForwardRun(again.dir, tiny_config(), bars, source="test bars", train_bars=TRAIN,
                               test_bars=TEST, step=TEST, updates=2, continued=True, restart=True)
    assert restarted.finished() == {} and json.loads((again.dir / "run.json").read_text())["updates"] == 2


def test_scoring_stitches_segments_at_the_training_costs(tmp_path):
    bars = synthetic_bars(TRAIN + 3 * TEST, seed=5)
    run = walk(tmp_path, "s", bars, continued=False)
    results = [run.run_segment(s) for s in run.segments]
    cfg = tiny_config()
    report = score_walk_forward(results, bars, cfg, fill="close", periods_per_year=525_960.0, seed=1, samples=200)
    assert list(report.stitched) == [MODEL, BUY_AND_HOLD, "flat", RANDOM]
    cost = cfg.training.transaction_cost
    for name, stitched in report.stitched.items():
        np.testing.assert_array_equal(stitched.pnl, np.concatenate([s[name].pnl for s in report.segments]))
        assert stitched.bars == 3 * TEST
    for segment, r in zip(report.segments, results, strict=True):  # each segment starts flat and pays to enter
        first = r.segment.first
        assert segment[BUY_AND_HOLD].pnl[0] == pytest.approx(np.log(bars.close[first + 1] / bars.close[first]) - cost)
    assert report.stitched[BUY_AND_HOLD].total_return == pytest.approx(
        np.prod([s[BUY_AND_HOLD].total_return + 1 for s in report.segments]) - 1)
    again = score_walk_forward(results, bars, cfg, fill="close", periods_per_year=525_960.0, seed=1, samples=200)
    np.testing.assert_array_equal(again.stitched[RANDOM].pnl, report.stitched[RANDOM].pnl)  # seeded
    assert report.intervals.reference == BUY_AND_HOLD and set(report.intervals.difference) == {MODEL, "flat", RANDOM}
    next_open = score_walk_forward(results, bars, cfg, fill="next-open", periods_per_year=525_960.0, seed=1,
                                   samples=200)
    assert next_open.stitched[BUY_AND_HOLD].total_return != report.stitched[BUY_AND_HOLD].total_return


@pytest.mark.cluster  # CLI processes that train
def test_evaluate_command_on_a_pandas_csv_resumes_and_refuses_bad_input(tmp_path):
    pd = pytest.importorskip("pandas")
    import subprocess
    import sys

    from cluster_helpers import write_config

    config = write_config(tmp_path, training=TINY)
    df = synthetic_bars(1000, seed=3).to_pandas()
    assert isinstance(df, pd.DataFrame)
    df.to_csv(tmp_path / "bars.csv")
    args = [sys.executable, "-m", "tactical_engine", "evaluate", "--walk-forward", "--data", str(tmp_path / "bars.csv"),
            "--train-bars", "400", "--test-bars", "200", "--config", str(config)]

    def evaluate(*more: str) -> subprocess.CompletedProcess:
        return subprocess.run([*args, *more], capture_output=True, text=True, timeout=300)

    png = tmp_path / "wf.png"
    first = evaluate("--json", "--plot", str(png), "--samples", "200")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert [p["name"] for p in out["policies"]] == [MODEL, BUY_AND_HOLD, "flat", RANDOM]
    assert len(out["segments"]) == 3 and out["out_of_sample_bars"] == 600
    model = out["policies"][0]
    low, high = model["sharpe_interval"]
    assert low <= model["sharpe"] <= high and "sharpe_minus_buy_and_hold" in model
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "segment 3/3 done" in first.stderr  # not a terminal: plain lines, no bar

    again = evaluate("--json", "--samples", "200")  # resumed: every segment finished, nothing trained
    assert again.returncode == 0 and "training" not in again.stderr
    assert json.loads(again.stdout)["policies"] == out["policies"]
    text = evaluate("--samples", "200", "--fill", "next-open")
    assert text.returncode == 0 and "buy-and-hold's at 95% confidence" in text.stdout
    assert "tested on" in text.stdout and "fills at the next bar open" in text.stdout

    for more, message in [(["--test-bars", "900"], "need 1,300 bars"),
                          (["--step", "100"], "--step 100 is below --test-bars 200"),
                          (["--updates", "2"], "holds a run with other settings")]:
        bad = evaluate(*more)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    (tmp_path / "broken.csv").write_text(",Open,High\n1,2,3\n")
    bad = subprocess.run([*args[:6], str(tmp_path / "broken.csv"), *args[7:]], capture_output=True, text=True)
    assert bad.returncode == 2 and "missing column(s) low, close, volume" in bad.stderr, bad.stderr
