"""A pandas-exported CSV (and Parquet file) and a DataFrame, end to end: features, train, backtest, decide;
the backtest's buy-and-hold Sharpe ratio is the plain computation with the series' own bars per year."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from agents.serving.model_store import ModelStore
from cluster_helpers import running_cluster, write_config
from market.bars import Bars
from market.csv_loader import load_bars
from market.features import compute_features
from market.performance import MS_PER_YEAR
from market.windows import all_windows
from market_series import hourly_fx_bars
from tactical.config import load_config
from tactical_engine.client import TacticalClient
from tactical_engine.engine import Engine

pd = pytest.importorskip("pandas")
pytestmark = pytest.mark.cluster

TACTICAL = [sys.executable, "-m", "tactical_engine"]
TINY = {"num_envs": 4, "episode_length": 16, "minibatch_size": 32, "epochs": 1}


def tactical(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TACTICAL, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """3,000 hourly 24x5 FX bars as a user would have them: a DataFrame in New York time (microseconds),
    capitalized columns, written by to_csv() (the times under an empty header) and to_parquet()."""
    tmp = tmp_path_factory.mktemp("pandas")
    df = hourly_fx_bars(2017, 2017)[:3000].to_pandas()
    df.index = df.index.as_unit("us").tz_convert("America/New_York").rename(None)
    df = df.rename(columns=str.capitalize)
    df.to_csv(tmp / "eurusd.csv")
    df.to_parquet(tmp / "eurusd.parquet")
    return tmp, df, write_config(tmp, training=TINY)


def test_a_pandas_csv_through_features_train_backtest_and_decide(exported):
    tmp, df, config = exported
    csv = str(tmp / "eurusd.csv")
    assert (tmp / "eurusd.csv").read_text().startswith(",Open,High,Low,Close,Volume\n2017-01-01 19:00:00-05:00,")
    features = tactical("features", "--csv", csv, "--config", str(config))
    assert features.returncode == 0 and f"3,000 bars from {csv}" in features.stdout, features.stderr
    train = tactical("train", "--data", csv, "--updates", "1", "--config", str(config))
    assert train.returncode == 0, train.stderr
    assert ModelStore(load_config(config).paths.model_store).versions() == [0, 1]  # v0 beside what train made

    out = tactical("backtest", "--data", csv, "--json", "--config", str(config))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    bars = load_bars(csv)
    first = len(bars) - 1 - report["decisions"]
    pnl = np.diff(np.log(bars.close[first:]))
    pnl[0] -= load_config(config).training.transaction_cost
    per_year = (len(bars) - 1) / ((bars.time[-1] - bars.time[0]) / MS_PER_YEAR)
    hold = report["reports"][1]
    assert hold["name"] == "buy and hold" and hold["periods_per_year"] == pytest.approx(per_year)
    assert hold["sharpe"] == pytest.approx(pnl.mean() / pnl.std() * np.sqrt(per_year))
    assert hold["annual_return"] is None  # 18 weeks: no annual figure
    assert report["notes"][0].startswith("WARNING: in sample. Version 1 trained on bars through 2017-")

    untrained = tactical("backtest", "--data", csv, "--version", "0", "--fill", "next-open", "--json",
                         "--config", str(config))
    assert untrained.returncode == 0, untrained.stderr
    assert json.loads(untrained.stdout)["fill"] == "next-open"
    parquet = tactical("backtest", "--data", str(tmp / "eurusd.parquet"), "--json", "--config", str(config))
    assert json.loads(parquet.stdout)["reports"] == report["reports"]

    with running_cluster(config) as cluster:
        decide = tactical("decide", "--csv", csv, "--target", cluster.coordinator.address, "--json",
                          "--config", str(config))
        assert decide.returncode == 0, decide.stderr
        assert json.loads(decide.stdout)["action"] in ("Short", "Hold", "Long")
        with TacticalClient(cluster.coordinator.address, load_config(config)) as client:  # straight from the DataFrame
            decision = client.decide(bars=Bars.from_pandas(df)[len(df) - 92:])
        assert decision.HasField("model_version")


def test_a_dataframe_through_features_training_and_the_engine(exported):
    tmp, df, config = exported
    from training.mappo import TacticalMAPPOTrainer
    from training.versions import ensure_default_version

    cfg = load_config(config)
    bars = Bars.from_pandas(df)
    np.testing.assert_array_equal(bars.time, load_bars(tmp / "eurusd.csv").time)
    assert bars.time[0] == 1483315200000  # 2017-01-02 00:00 UTC, written as 2017-01-01 19:00-05:00
    trainer = TacticalMAPPOTrainer(cfg, bars=bars, progress=False, log_metrics=False)
    trainer.train(1)
    assert trainer.updates_done == 1 and set(trainer.evaluate()) == {"model", "hold", "random"}
    windows = all_windows(compute_features(bars, cfg.features), cfg.features.window)
    ensure_default_version(cfg.paths.model_store, cfg)
    decisions = Engine(ModelStore(cfg.paths.model_store), 0, cfg).aggregate(windows[-100:])
    assert len(decisions.actions) == 100
    assert Bars.from_pandas(bars.to_pandas()).close.tolist() == bars.close.tolist()
