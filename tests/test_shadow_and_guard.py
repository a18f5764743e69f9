"""A shadow version scored on what the market did, promoted on that evidence; a guard that rolls back a bad one."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request

import pytest
import torch

from agents.serving.model_store import ModelStore
from cluster_helpers import always, reserved_port, running_cluster, trending_bars, wait_for, write_config
from market.csv_loader import write_bars_csv
from tactical.config import load_config
from tactical.rpc import admin_token
from tactical_engine import Client
from tactical_engine.client import TacticalClient
from tactical_engine.promotion import evaluation_set
from tactical_engine.rollout import rollout
from training.system import TacticalMARLSystem
from training.versions import ensure_default_version, publish

pytestmark = pytest.mark.cluster
LONG = 1


def start(tmp, **serving):
    config_path = write_config(tmp, serving={"audit_flush_ms": 200.0, **serving})
    cfg = load_config(config_path)
    ensure_default_version(cfg.paths.model_store, cfg)
    store = ModelStore(cfg.paths.model_store)
    torch.manual_seed(0)
    assert publish(store, always(TacticalMARLSystem(), 2), source="test: always Long") == LONG
    return config_path, cfg, store


def tactical(config_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tactical_engine", *args, "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120)


def activate(cluster, cfg, store, *versions: int) -> None:
    """Roll each version out in turn, without the gate (the test's own market is what it judges)."""
    token = admin_token(cfg)
    with TacticalClient(cluster.coordinator.address, cfg, admin_token=token) as admin:
        for version in versions:
            rollout(admin, store, version, cfg, token, gate="off")


def stream(cluster, cfg, bars, instrument: str) -> list:
    """The bars one by one over a DecideStream (after the history a first decision needs); every decision."""
    need = cfg.features.min_bars
    with Client(cluster.coordinator.address, cfg) as client, client.stream(instrument, bars[:need]) as s:
        return [s.first] + [s.send(bars.bar(i)) for i in range(need, len(bars))]


def test_a_shadow_beside_the_untrained_default_earns_a_significant_record_and_is_promoted(tmp_path):
    config_path, cfg, store = start(tmp_path)
    with running_cluster(config_path) as cluster:
        target = ("--target", cluster.coordinator.address)
        activate(cluster, cfg, store, 0)  # the untrained default serves
        started = tactical(config_path, "shadow", "--version", str(LONG), *target)
        assert started.returncode == 0 and "version 1 shadows active version 0" in started.stdout, started.stderr
        bars = trending_bars(cfg.features.min_bars + 200, 0.0005)  # a rising market: Long earns, v0 mostly holds
        served = stream(cluster, cfg, bars, "RISING")
        assert {d.version for d in served} == {0} and not any(d.degraded for d in served)  # clients: active only
        status = tactical(config_path, "shadow", "status", "--json", *target)
        record = json.loads(status.stdout)
        assert record["shadow_version"] == LONG and record["decisions"] == len(served) and record["bars"] == 200
        assert record["difference"]["low"] > 0 and record["shadow"]["log_pnl"] > record["active"]["log_pnl"]
        assert "the shadow is better" in tactical(config_path, "shadow", "status", *target).stdout
        promoted = tactical(config_path, "promote", "--gate", "significant", *target)
        assert promoted.returncode == 0 and "promoted: version 1 active (was 0)" in promoted.stdout, promoted.stderr
        with Client(cluster.coordinator.address, cfg) as client:
            assert client.status().active_version == LONG
            wait_for(lambda: client.status().audit_waiting == 0, timeout=30)
        assert "no shadow version" in tactical(config_path, "shadow", "status", *target).stdout
    with sqlite3.connect(cfg.paths.audit_log) as db:
        rows = db.execute("SELECT model_version, shadow_version, shadow_action FROM decisions WHERE instrument = "
                          "'RISING'").fetchall()
    assert len(rows) == len(served) and set(rows) == {(0, LONG, "Long")}  # each served decision, its shadow beside



def test_a_backtest_through_the_cluster_is_audited_as_one_and_judges_nothing_live_unless_sent_as_live(tmp_path):
    """Historical bars replayed by `tactical backtest --target` must not move a shadow's record, the guard (its
    drawdown, the committee's disagreement), drift or the gate's evaluation set; --as-live (a staging cluster fed a
    recorded stream) makes them count."""
    config_path, cfg, store = start(tmp_path)
    falling = tmp_path / "falling.csv"
    write_bars_csv(trending_bars(cfg.features.min_bars + 60, -0.001), falling)
    with running_cluster(config_path) as cluster:
        target = ("--target", cluster.coordinator.address)
        activate(cluster, cfg, store, 0)
        assert tactical(config_path, "shadow", "--version", str(LONG), *target).returncode == 0

        def replay_and_drain(*flags: str) -> dict:
            res = tactical(config_path, "backtest", "--data", str(falling), *flags, *target)
            assert res.returncode == 0, res.stderr
            with Client(cluster.coordinator.address, cfg) as client:
                wait_for(lambda: client.status().audit_waiting == 0, timeout=30)
            return json.loads(tactical(config_path, "shadow", "status", "--json", *target).stdout)

        def committee() -> dict:  # what drift and the guard's disagreement check read
            status = json.loads(tactical(config_path, "status", "--json", *target).stdout)
            return status["health"]["versions"]

        record = replay_and_drain()
        assert record["decisions"] == 0 and record["bars"] == 0, record
        assert committee() == {}
        with sqlite3.connect(cfg.paths.audit_log) as db:
            rows, marked = db.execute("SELECT COUNT(*), SUM(backtest) FROM decisions").fetchone()
        assert rows == marked >= 60
        windows, _, source = evaluation_set(cfg, None, None)
        assert len(windows) == 0 and "live decisions" in source
        summary = tactical(config_path, "audit")
        assert f"from backtests {rows}" in summary.stdout and "BACKTEST" in summary.stdout, summary.stdout

        record = replay_and_drain("--as-live")
        assert record["decisions"] == rows and 0 < record["bars"] < rows, record
        assert committee()["0"]["decisions"] == rows
        windows, _, _ = evaluation_set(cfg, None, None)
        assert len(windows) == rows
    assert tactical(config_path, "backtest", "--synthetic", "--as-live").stderr.strip().endswith(
        "--as-live is for bars sent to a cluster: give --target HOST:PORT")


def test_a_shadow_record_is_of_one_active_version_and_the_cli_says_what_it_replaces_or_stops(tmp_path):
    config_path, cfg, store = start(tmp_path)
    torch.manual_seed(0)
    short = publish(store, always(TacticalMARLSystem(), 0), source="test: always Short")
    with running_cluster(config_path) as cluster:
        target = ("--target", cluster.coordinator.address)
        activate(cluster, cfg, store, 0)
        assert tactical(config_path, "shadow", "--version", str(LONG), *target).returncode == 0
        beside_v0 = stream(cluster, cfg, trending_bars(cfg.features.min_bars + 30, 0.0005), "FIRST")
        activate(cluster, cfg, store, short)  # another active version: the record restarts
        status = json.loads(tactical(config_path, "shadow", "status", "--json", *target).stdout)
        assert status["active_version"] == short and status["decisions"] == 0 and status["bars"] == 0
        assert status["agreement"] is None
        beside_short = stream(cluster, cfg, trending_bars(cfg.features.min_bars + 20, 0.0005, seed=1), "SECOND")
        status = json.loads(tactical(config_path, "shadow", "status", "--json", *target).stdout)
        assert len(beside_v0) == 31 and status["decisions"] == len(beside_short) == 21 and status["bars"] == 20
        assert status["agreement"] == 0.0  # always Long beside always Short
        assert status["active"]["log_pnl"] < 0 < status["shadow"]["log_pnl"]  # a rising market: Short loses
        again = tactical(config_path, "shadow", "--version", str(LONG), *target)
        assert again.returncode == 0, again.stderr
        assert f"replaced shadow version 1 and its record (21 decisions, 20 bars scored beside version {short})" \
            in again.stdout
        stopped = tactical(config_path, "shadow", "--stop", *target)
        assert stopped.returncode == 0 and "shadow version 1 beside active version 2" in stopped.stdout
        assert "stopped shadow version 1" in stopped.stdout
        assert "no shadow was running" in tactical(config_path, "shadow", "--stop", *target).stdout

def test_the_guard_rolls_a_losing_version_back_with_the_reason_in_the_log_and_the_audit(tmp_path):
    metrics = reserved_port()
    config_path, cfg, store = start(tmp_path, guard_max_drawdown=0.01, guard_min_decisions=20, metrics_port=metrics)
    with running_cluster(config_path, log_dir=tmp_path / "logs") as cluster:
        activate(cluster, cfg, store, 0, LONG)  # always Long, about to meet a falling market
        served = stream(cluster, cfg, trending_bars(cfg.features.min_bars + 300, -0.001), "FALLING")
        with Client(cluster.coordinator.address, cfg) as client:
            wait_for(lambda: client.status().active_version == 0, timeout=30)
            wait_for(lambda: client.status().audit_waiting == 0, timeout=30)
        assert served[0].version == LONG and served[-1].version == 0  # rolled back while the stream ran
        status = tactical(config_path, "status", "--target", cluster.coordinator.address)
        assert "GUARD at " in status.stdout and " UTC: rolled version 1 back to 0: drawdown" in status.stdout
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read().decode()
        assert "tactical_guard_rollbacks_total 1.0" in text
    log = (tmp_path / "logs" / "coordinator.log").read_text()
    assert "guard: rolled version 1 back to 0: drawdown" in log and "> 1.0% over" in log
    with sqlite3.connect(cfg.paths.audit_log) as db:
        (kind, detail), = db.execute("SELECT kind, detail FROM events").fetchall()
    detail = json.loads(detail)
    assert kind == "guard-rollback" and detail["version"] == LONG and detail["rolled_back_to"] == 0
    assert detail["check"] == "drawdown" and detail["value"] > 0.01 and detail["over"] >= 20
