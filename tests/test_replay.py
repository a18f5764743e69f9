"""Replay: the audit log keeps what the agents saw, and a version's decisions can be recomputed over it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import zlib

import numpy as np
import pytest

from cluster_helpers import prepare_store, random_window, running_cluster, wait_for, write_config
from market.synthetic import configured
from tactical.config import load_config
from tactical.rpc import admin_token
from tactical_engine import Client
from tactical_engine.client import TacticalClient
from tactical_engine.rollout import rollout

pytestmark = pytest.mark.cluster
BARS = 120


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two instruments' bar streams and a few windows served by version 1, committed to the audit log."""
    tmp = tmp_path_factory.mktemp("replay")
    config_path = write_config(tmp, serving={"audit_flush_ms": 200.0}, synthetic={"bars": 2000})
    store = prepare_store(tmp, config_path, trained_versions=2)
    cfg = load_config(config_path)
    with running_cluster(config_path) as cluster:
        token = admin_token(cfg)
        with TacticalClient(cluster.coordinator.address, cfg, admin_token=token) as admin:
            rollout(admin, store, 1, cfg, token)
        need = cfg.features.min_bars
        with Client(cluster.coordinator.address, cfg) as client:
            for seed, name in ((1, "EURUSD"), (2, "GBPUSD")):
                bars = configured(cfg.replace(synthetic={"seed": seed}).synthetic).bars
                with client.stream(name, bars[:need]) as stream:
                    for i in range(need, need + BARS):
                        stream.send(bars.bar(i))
            for i in range(5):
                client.decide(random_window(i), instrument="windows")

            def committed() -> bool:
                return client.status().audit_waiting == 0

            wait_for(committed, timeout=30)
    return config_path


def replay(config_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tactical_engine", "replay", "--config", str(config_path), *args],
                          capture_output=True, text=True, timeout=120)


def test_replaying_the_served_version_reproduces_every_decision_and_its_pnl(served):
    config_path = served
    res = replay(config_path, "--version", "1", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["decisions"] == 2 * (BARS + 1) + 5 and r["tampered"] == [] and r["without_window"] == 0
    assert r["served_by_version"] == {"1": r["decisions"]}
    assert r["reproduced"] == r["served_by_this_version"] == r["decisions"] and r["agreement"] == 1.0
    assert r["max_probability_difference"] < 1e-5
    assert r["scored_bars"] == 2 * BARS  # each instrument's bars but its last; window requests have no price
    assert r["replayed_log_pnl"] == pytest.approx(r["served_log_pnl"])
    other = json.loads(replay(config_path, "--version", "2", "--json", "--instrument", "EURUSD").stdout)
    assert other["decisions"] == BARS + 1 and other["reproduced"] == 0 and other["scored_bars"] == BARS
    assert other["agreement"] < 1.0  # another model, other opinions


def test_a_tampered_row_is_reported_and_left_out(served, tmp_path):
    config_path = served
    db = tmp_path / "audit.sqlite"
    db.write_bytes((config_path.parent / "audit.sqlite").read_bytes())
    conn = sqlite3.connect(db)
    run, seq, blob = conn.execute("SELECT run, seq, window FROM decisions ORDER BY id LIMIT 1 OFFSET 10").fetchone()
    window = np.frombuffer(zlib.decompress(blob), dtype="<f4").copy()
    window[0] += 0.5  # the features changed after the fact
    conn.execute("UPDATE decisions SET window = ? WHERE run = ? AND seq = ?", (zlib.compress(window.tobytes()), run,
                                                                                  seq))
    conn.commit()
    conn.close()
    res = replay(config_path, "--version", "1", "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert f"TAMPERED, left out: {run}/{seq}: window does not match its sha256" in res.stdout
    assert f"{2 * (BARS + 1) + 4:,} of {2 * (BARS + 1) + 4:,} reproduced exactly" in res.stdout
    assert replay(config_path, "--version", "9").returncode == 2


def test_a_file_that_is_not_an_audit_log_or_a_range_that_matches_nothing_is_one_readable_error(served, tmp_path):
    config_path = served
    junk = tmp_path / "bars.csv"
    junk.write_text("time,open,high,low,close\n")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE prices (close REAL)")
    for path, why in ((junk, "file is not a database"), (other, "without a decisions table"), (tmp_path, "")):
        res = replay(config_path, "--version", "1", "--db", str(path))
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"tactical replay: error: {path} is not an audit log" in res.stderr and why in res.stderr
    with sqlite3.connect(other) as conn:  # nothing was added to the database that was not an audit log
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["prices"]
    audit = subprocess.run([sys.executable, "-m", "tactical_engine", "audit", "--config", str(config_path),
                            "--db", str(junk)], capture_output=True, text=True, timeout=60)
    assert audit.returncode == 2 and f"{junk} is not an audit log" in audit.stderr
    audit = subprocess.run([sys.executable, "-m", "tactical_engine", "audit", "--config", str(config_path),
                            "--request-id", "no-such-request"], capture_output=True, text=True, timeout=60)
    assert audit.returncode == 2 and "matches --request-id no-such-request" in audit.stderr and not audit.stdout
    audit = subprocess.run([sys.executable, "-m", "tactical_engine", "audit", "--config", str(config_path)],
                           capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0 and "by model version 1: " in audit.stdout, audit.stdout + audit.stderr
    reversed_range = replay(config_path, "--version", "1", "--from", "2030-01-02", "--to", "2030-01-01")
    assert reversed_range.returncode == 2 and "--from 2030-01-02 is not before --to 2030-01-01" in reversed_range.stderr
    nothing = replay(config_path, "--version", "v1", "--instrument", "NOPE")  # v1: as `tactical versions` prints it
    assert nothing.returncode == 2 and "match --instrument NOPE" in nothing.stderr and not nothing.stdout
