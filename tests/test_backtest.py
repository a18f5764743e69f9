"""`tactical backtest` and `tactical demo`: in process and through the served path, same decisions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from agents.serving.model_store import ModelStore
from cluster_helpers import prepare_store, running_cluster, write_config
from market.synthetic import configured
from tactical.config import load_config
from tactical_engine.backtest import (
    BacktestError,
    BacktestResult,
    decision_bars,
    local_decisions,
    plot,
    remote_decisions,
    score,
)
from tactical_engine.cli import main
from tactical_engine.engine import Engine

pytestmark = pytest.mark.cluster

TACTICAL = [sys.executable, "-m", "tactical_engine"]
SMALL = {"num_envs": 4, "episode_length": 16, "minibatch_size": 32, "epochs": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backtest")
    path = write_config(tmp, synthetic={"bars": 1500})
    prepare_store(tmp, path)
    return path


def run(*args):
    return subprocess.run([*TACTICAL, *args], capture_output=True, text=True, timeout=300)


def test_in_process_and_served_decisions_are_the_same(setup):
    cfg = load_config(setup)
    bars = configured(cfg.synthetic).bars
    first, last = decision_bars(bars, cfg, None, None)
    local = local_decisions(Engine(ModelStore(cfg.paths.model_store), 1, cfg), bars, cfg, first, last)
    assert first == cfg.features.min_bars - 1 and last == len(bars) - 2
    assert set(np.unique(local)) <= {-1.0, 0.0, 1.0} and len(np.unique(local)) > 1
    with running_cluster(setup) as cluster:
        result = BacktestResult({}, first, last, bars, np.zeros(0))
        served = remote_decisions(cluster.coordinator.address, cfg, bars, first, last, result, streams=3)
    np.testing.assert_array_equal(served, local)
    assert dict(result.versions) == {1: last - first + 1} and result.degraded == 0


def test_backtest_command_reports_the_model_and_the_baselines(setup):
    res = run("backtest", "--synthetic", "--version", "1", "--from", "2024-01-01T10:00Z", "--config", str(setup),
              "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    names = [r["name"] for r in out["reports"]]
    assert names == ["model", "buy and hold", "flat", "random votes"]
    flat = out["reports"][2]
    assert flat["total_return"] == 0 and flat["trades"] == 0
    assert out["from"] == "2024-01-01 10:00" and out["decisions"] == 1500 - 600 - 1
    text = run("backtest", "--synthetic", "--config", str(setup))
    assert text.returncode == 0 and "buy and hold" in text.stdout and "Sharpe" in text.stdout


def test_backtest_errors_are_one_line(setup, tmp_path):
    for args, message in [(["--synthetic", "--version", "9"], "no version 9"),
                          (["--synthetic", "--from", "2030-01-01"], "no bar to decide at"),
                          (["--synthetic", "--from", "soon"], "--from: cannot read time 'soon'")]:
        res = run("backtest", *args, "--config", str(setup))
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_in_sample_backtests_are_flagged(tmp_path):
    path = write_config(tmp_path, synthetic={"bars": 2000}, training=SMALL)
    res = run("train", "--config", str(path), "--updates", "1", "--until", "2024-01-01T20:00Z")
    assert res.returncode == 0, res.stderr
    inside = run("backtest", "--synthetic", "--from", "2024-01-01T12:00Z", "--config", str(path))
    assert "WARNING: in sample" in inside.stdout
    outside = run("backtest", "--synthetic", "--from", "2024-01-01T21:00Z", "--config", str(path))
    assert "out of sample: version 1 trained on bars through 2024-01-01" in outside.stdout
    other_market = write_config(tmp_path, synthetic={"bars": 2000, "seed": 99}, training=SMALL)  # same store
    elsewhere = run("backtest", "--synthetic", "--from", "2024-01-01T21:00Z", "--config", str(other_market))
    assert "version 1 was trained on other bars (synthetic (seed 11, 2,000 bars" in elsewhere.stdout


def test_demo_runs_end_to_end_and_stops_cleanly(tmp_path):
    # publish every candidate: two updates of this small model stay flat, which the demo's default (improved when
    # pushing) would rightly not roll out, and this test is about the rollout machinery
    path = write_config(tmp_path, synthetic={"bars": 2500, "trend_drift": 1.0, "mean_duration": 200.0},
                        training={**SMALL, "publish": "every"})
    res = run("demo", "--config", str(path), "--updates", "2", "--push-every", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    for expected in ("all SERVING", "rolled out version 1", "rolled out version 2", "serving decisions over",
                     "buy and hold", "random votes", "stopping", "done."):
        assert expected in out, expected
    assert "version(s) {2: " in out  # the held-out decisions were served by the last version pushed
    assert "0 degraded" in out


def test_plot_writes_a_png(setup, tmp_path):
    png = tmp_path / "equity.png"
    res = run("backtest", "--synthetic", "--version", "1", "--plot", str(png), "--config", str(setup))
    assert res.returncode == 0, res.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert f"plot written to {png}" in res.stdout


def test_a_plot_file_that_cannot_be_written_is_refused_before_the_backtest(tmp_path, capsys):
    config = write_config(tmp_path)  # an empty model store: a backtest that ran would fail with "no version"
    (tmp_path / "d.png").mkdir()
    for target, message in [(tmp_path / "no" / "x.png", f"no directory {tmp_path / 'no'}"),
                            (tmp_path / "x.txt", "give a file name ending in one of"),
                            (tmp_path, "give a file name ending in one of"),
                            (tmp_path / "d.png", "is a directory")]:
        assert main(["backtest", "--synthetic", "--plot", str(target), "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tactical backtest: error: --plot {target}: ") and message in err, err
        assert len(err.splitlines()) == 1


def test_a_failed_plot_write_is_a_backtest_error(tmp_path):
    cfg = load_config(write_config(tmp_path))
    bars = configured(cfg.synthetic).bars
    result = BacktestResult({}, 100, 200, bars, np.zeros(101))
    score(result, cfg, seed=0)
    with pytest.raises(BacktestError, match=f"--plot: cannot write {tmp_path}/gone/x.png: No such file or directory"):
        plot(result, str(tmp_path / "gone" / "x.png"))  # e.g. the directory was removed while the backtest ran
