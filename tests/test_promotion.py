"""The promotion gate: a candidate that trades worse than the active version is not rolled out."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from agents.serving.model_store import ModelStore
from cluster_helpers import always, running_cluster, trending_bars, wait_for, write_config
from market.csv_loader import load_bars_csv
from tactical.config import load_config
from tactical.rpc import admin_token
from tactical_engine import Client
from tactical_engine.client import TacticalClient
from tactical_engine.rollout import rollout
from training.system import TacticalMARLSystem
from training.versions import ensure_default_version, publish

pytestmark = pytest.mark.cluster
LONG, SHORT, LONG_AGAIN = 1, 2, 3


def rising_bars_csv(path, n: int = 400):
    """A market that rises steadily, as a CSV file for --eval-data."""
    bars = trending_bars(n, 0.0005)
    lines = ["time,open,high,low,close,volume"] + [
        f"{t // 1000},{o:.6f},{h:.6f},{lo:.6f},{c:.6f},{v:.0f}"
        for t, o, h, lo, c, v in zip(bars.time, bars.open, bars.high, bars.low, bars.close, bars.volume, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("promotion")
    config_path = write_config(tmp, serving={"audit_flush_ms": 200.0})
    cfg = load_config(config_path)
    ensure_default_version(cfg.paths.model_store, cfg)
    store = ModelStore(cfg.paths.model_store)
    torch.manual_seed(0)
    long_model = always(TacticalMARLSystem(), 2)
    assert publish(store, long_model, source="test: always Long") == LONG
    assert publish(store, always(TacticalMARLSystem(), 2).mirrored(), source="test: Long and Short swapped") == SHORT
    assert publish(store, always(TacticalMARLSystem(), 2), source="test: always Long again") == LONG_AGAIN
    csv = rising_bars_csv(tmp / "rising.csv")
    with running_cluster(config_path) as cluster:
        token = admin_token(cfg)
        with TacticalClient(cluster.coordinator.address, cfg, admin_token=token) as admin:
            rollout(admin, store, LONG, cfg, token, gate="off")
        cluster.cfg, cluster.config_path, cluster.csv = cfg, config_path, csv
        yield cluster


def tactical_rollout(setup, version: int, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tactical_engine", "rollout", "--version", str(version), "--config",
                           str(setup.config_path), "--target", setup.coordinator.address, *flags],
                          capture_output=True, text=True, timeout=120)


def active(setup) -> int:
    with TacticalClient(setup.coordinator.address, setup.cfg) as client:
        return client.status().active_version


def test_a_worse_candidate_is_refused_on_the_audit_logs_recent_bars(setup):
    """The cluster served a rising market with the always-Long version; the swapped one would have lost."""
    bars = load_bars_csv(setup.csv)
    need = setup.cfg.features.min_bars
    with Client(setup.coordinator.address, setup.cfg) as client, client.stream("RISING", bars[:need]) as stream:
        for i in range(need, need + 150):
            stream.send(bars.bar(i))
    with Client(setup.coordinator.address, setup.cfg) as client:
        wait_for(lambda: client.status().audit_waiting == 0, timeout=30)
    res = tactical_rollout(setup, SHORT, "--gate", "better")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "promotion gate (better) REFUSED: version 2 against active version 1 over 150 bars of the last 5,000 " \
           "live decisions of" in res.stderr and "nothing was staged or switched" in res.stderr, res.stderr
    assert active(setup) == LONG


def test_the_gate_on_a_file_refuses_worse_passes_better_and_force_overrides(setup):
    for policy in ("better", "significant"):
        res = tactical_rollout(setup, SHORT, "--gate", policy, "--eval-data", str(setup.csv))
        assert res.returncode == 1 and f"promotion gate ({policy}) REFUSED" in res.stderr, res.stderr
        assert "log P&L -" in res.stderr  # the numbers: the swapped model loses on a rising market
        assert f"(`tactical rollout --version {SHORT} --force` overrides)" in res.stderr
        assert active(setup) == LONG
    forced = tactical_rollout(setup, SHORT, "--force")
    assert forced.returncode == 0 and "promotion gate skipped (--force)" in forced.stdout, forced.stderr
    assert active(setup) == SHORT
    again = tactical_rollout(setup, SHORT)
    assert again.returncode == 0 and f"version {SHORT} is already active, nothing to compare" in again.stdout
    better = tactical_rollout(setup, LONG_AGAIN, "--gate", "significant", "--eval-data", str(setup.csv))
    assert better.returncode == 0 and "promotion gate (significant) passed: version 3 against active version 2" \
        in better.stdout, better.stderr
    assert active(setup) == LONG_AGAIN
