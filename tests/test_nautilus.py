"""NautilusTrader as the client: the orders it fills follow, bar for bar, the decisions the cluster answered."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster_helpers import opinionated_model, running_cluster, wait_for, write_config
from market.csv_loader import write_bars_csv
from market.synthetic import synthetic_bars
from tactical.config import load_config
from training.versions import ensure_default_version, publish

pytest.importorskip("nautilus_trader", reason="the nautilus extra is not installed: pip install -e '.[nautilus]'")
pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A cluster whose version trades both ways on these bars (min_confidence 0: every argmax is traded)."""
    tmp = tmp_path_factory.mktemp("nautilus")
    config_path = write_config(tmp, aggregation={"min_confidence": 0.0})
    cfg = load_config(config_path)
    ensure_default_version(cfg.paths.model_store, cfg)
    from agents.serving.model_store import ModelStore

    publish(ModelStore(cfg.paths.model_store), opinionated_model(3), source="test: trades both ways")
    with running_cluster(config_path) as cluster:
        cluster.cfg_path = config_path
        cluster.tmp = tmp
        yield cluster


def test_nautilus_fills_follow_the_decisions_bar_for_bar(cluster):
    from tactical_engine.nautilus import run_backtest

    bars = synthetic_bars(500, seed=3)
    cost = cluster.cfg.training.transaction_cost
    result = run_backtest(bars, cluster.coordinator.address, config_path=str(cluster.cfg_path), fee=cost)
    need = cluster.cfg.features.min_bars
    warming, deciding = result.decisions[:need - 1], result.decisions[need - 1:]
    assert all(d is None for d in warming) and all(d is not None for d in deciding)
    decided = np.array([d.position if d is not None else 0 for d in result.decisions], dtype=np.float64)
    assert set(np.unique(decided)) == {-1.0, 0.0, 1.0}  # it traded long, short and flat
    np.testing.assert_array_equal(result.positions, decided)  # the position after every bar is the decision
    for decision_bar, fill_bar, _, price, _ in result.fills:  # filled on the decision's bar, at its close
        assert fill_bar == decision_bar and price == pytest.approx(result.closes[fill_bar], abs=1e-9)
    changes = np.abs(np.diff(np.concatenate(([0.0], decided))))
    assert sum(abs(q) for _, _, q, _, _ in result.fills) == changes.sum()
    # what the fills earned is what the decisions earn held from close to close; fees are cost x notional, and
    # Nautilus's account (in cents) adds them up to its P&L
    gross = sum(-q * price for _, _, q, price, _ in result.fills) + decided[-1] * result.closes[-1]
    assert gross == pytest.approx(np.sum(decided[:-1] * np.diff(result.closes)), abs=1e-9)
    for _, _, q, price, fee in result.fills:
        assert fee == pytest.approx(cost * abs(q) * price, abs=0.005)  # rounded to the cent
    assert result.pnl == pytest.approx(gross - result.fees, abs=0.01 * len(result.fills))
    # and the decisions are the ones the cluster answers for these bars (served path, in-process engine alike)
    from tactical_engine import Engine

    engine = Engine.load(cluster.cfg.paths.model_store, version=1, config=cluster.cfg_path)
    with engine.stream("CHECK", bars[:need]) as stream:
        expected = [stream.first.position] + [stream.send(bars.bar(t)).position for t in range(need, len(bars))]
    np.testing.assert_array_equal(decided[need - 1:], expected)
    # a backtest's requests: audited as such, so they do not judge versions live (shadow, guard, gate)
    from tactical_engine import Client

    with Client(cluster.coordinator.address, config=cluster.cfg_path) as client:
        wait_for(lambda: client.status().audit_waiting == 0, timeout=30)
    with sqlite3.connect(cluster.cfg.paths.audit_log) as db:
        assert db.execute("SELECT COUNT(*), SUM(backtest) FROM decisions WHERE instrument = 'NAUTILUS'"
                          ).fetchone() == (len(deciding), len(deciding))


def test_the_example_runs_over_a_csv(cluster):
    csv = cluster.tmp / "bars.csv"
    write_bars_csv(synthetic_bars(300, seed=4), csv)
    out = subprocess.run([sys.executable, str(REPO / "examples" / "nautilus_backtest.py"), "--csv", str(csv),
                          "--target", cluster.coordinator.address, "--config", str(cluster.cfg_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "position after every bar == the decision the cluster answered: True" in out.stdout
    assert "every fill on its decision's bar at that bar's close: True" in out.stdout
