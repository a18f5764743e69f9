"""Monitoring as an operator meets it: metrics endpoints, the dashboard's queries, drift, committee health,
logs for machines, traces into the audit log, progress that a log file can hold."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.serving.model_store import ModelStore
from cluster_helpers import opinionated_model, reserved_port, running_cluster, wait_for, write_config
from coordinator.audit import _SCHEMA, SCHEMA_VERSION, connect
from coordinator.committee import CommitteeWatch
from market.drift import MIN_ROWS, SHIFTED, STABLE, psi, reference_bins
from market.features import compute_features
from market.synthetic import configured
from tactical.config import load_config
from tactical.logs import JsonLinesFormatter
from tactical.progress import PlainProgress
from tactical.v1 import decision_pb2
from tactical.wire import FEATURE_NAMES, traceparent
from tactical_engine import Client
from tactical_engine.json_output import message_dict
from training.versions import ensure_default_version, publish

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "tactical-dashboard.json"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEALTH_WINDOW = 5000


# ------------------------------------------------------------------------------------------- without a cluster
def test_json_log_lines_carry_time_level_process_agent_message_and_fields():
    record = logging.LogRecord("tactical.x", logging.WARNING, __file__, 1, "staged version %d", (3,), None)
    record.version = 3  # what extra={"version": 3} does
    line = json.loads(JsonLinesFormatter("agent", agent="fvg").format(record))
    assert line["level"] == "warning" and line["process"] == "agent" and line["agent"] == "fvg"
    assert line["message"] == "staged version 3" and line["version"] == 3 and line["logger"] == "tactical.x"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


def test_progress_off_a_terminal_is_a_plain_line_per_interval_and_one_at_the_end(caplog):
    with caplog.at_level(logging.INFO, logger="tactical.progress"), \
            PlainProgress(total=50, desc="training", unit="update", interval_s=3600) as bar:
        for _ in range(50):
            bar.set_postfix_str("episode return +0.1%")
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "training: 50/50 (100%)" in lines[0] and "episode return +0.1%" in lines[0]
    assert "\r" not in lines[0]


@pytest.mark.parametrize(("value", "kept"), [
    (TRACE, True),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),  # all-zero trace id
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),  # version ff is invalid
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),  # upper case is not W3C
    ("garbage", False),
])
def test_only_a_well_formed_traceparent_is_kept(value, kept):
    assert traceparent([("other", "x"), ("traceparent", value)]) == (value if kept else "")
    assert traceparent(None) == ""


def test_json_output_has_snake_case_keys_numbers_as_numbers_and_null_for_unset():
    d = decision_pb2.Decision(request_id="r", action=3, bar_time_ms=1_700_000_000_123, probabilities=[0.1, 0.2, 0.7],
                              latency_ms=1.5)
    out = message_dict(d)
    assert out["bar_time_ms"] == 1_700_000_000_123 and out["action"] == "Long" and out["latency_ms"] == 1.5
    assert out["model_version"] is None and out["probabilities"] == [0.1, 0.2, 0.7]
    d.model_version = 0  # version 0 is a version, not "unset"
    assert message_dict(d)["model_version"] == 0


def test_an_audit_log_of_the_layout_before_traces_is_brought_up_to_date_with_its_rows(tmp_path):
    path = tmp_path / "audit.sqlite"
    old = sqlite3.connect(path)
    old.execute("\n".join(line for line in _SCHEMA[0].splitlines()
                           if line.split()[0] not in ("traceparent", "close", "window", "shadow_version",
                                                      "shadow_action", "backtest")))
    old.execute("INSERT INTO decisions (run, seq, request_id, time_ms, window_sha256, bar_time_ms, action, degraded, "
                "reason, decision) VALUES ('r', 1, 'kept', 1, 'x', 0, 'Hold', 0, '', x'')")
    old.execute("PRAGMA user_version = 3")
    old.commit()
    old.close()
    conn = connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT request_id, traceparent, backtest FROM decisions").fetchall() == [("kept", None, 0)]
    conn.close()


def _features(cfg, **synthetic) -> np.ndarray:
    return compute_features(configured(cfg.replace(synthetic=synthetic).synthetic).bars, cfg.features)


def test_psi_is_stable_on_the_training_market_and_shifted_when_volatility_triples(tmp_path):
    cfg = load_config(write_config(tmp_path))
    reference = reference_bins(_features(cfg, bars=30_000)[cfg.features.min_bars:])
    same = psi(reference, _features(cfg, seed=5, bars=HEALTH_WINDOW + 100)[-HEALTH_WINDOW:])
    wild = dict(zip(FEATURE_NAMES, psi(reference, _features(cfg, seed=5, sigma=cfg.synthetic.sigma * 3,
                                                            bars=HEALTH_WINDOW + 100)[-HEALTH_WINDOW:]), strict=True))
    assert max(same) < STABLE, same
    assert wild["price_momentum_5"] > SHIFTED and wild["fvg_nearest_level"] > SHIFTED, wild
    assert wild["volume_ratio"] < STABLE, wild  # volume did not change


# ------------------------------------------------------------------------------------------------ on a cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A cluster whose active version has a training reference of the synthetic market, metrics on every process,
    JSON logs in files."""
    tmp = tmp_path_factory.mktemp("observed")
    ports = {name: reserved_port() for name in ("coordinator", "fvg", "momentum", "entry")}
    config_path = write_config(tmp, synthetic={"bars": 30_000}, serving={
        "metrics_port": ports["coordinator"], "health_window": HEALTH_WINDOW,
        "agents": {name: {"port": 0, "metrics_port": ports[name]} for name in ("fvg", "momentum", "entry")}})
    cfg = load_config(config_path)
    ensure_default_version(cfg.paths.model_store, cfg)
    training = _features(cfg, bars=30_000)[cfg.features.min_bars:]
    publish(ModelStore(cfg.paths.model_store), opinionated_model(100), source="test",
            feature_reference=reference_bins(training))
    with running_cluster(config_path, log_dir=tmp / "logs", child_options=("--log-format", "json")) as c:
        c.cfg, c.config_path, c.tmp = cfg, config_path, tmp
        yield c


def scrape(address: str) -> dict[str, list]:
    """Every sample of an endpoint, by sample name."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _windows(cfg, n: int, **synthetic) -> np.ndarray:
    features = _features(cfg, bars=n + cfg.features.window + 100, **synthetic).astype(np.float32)
    return np.lib.stride_tricks.sliding_window_view(features, cfg.features.window, axis=0)[-n:].transpose(0, 2, 1)


@pytest.mark.cluster
def test_every_process_exports_live_metrics_that_the_dashboard_queries(cluster):
    cfg = cluster.cfg
    with Client(cluster.coordinator.address, cfg) as client:
        for i in range(5):
            client.decide(_windows(cfg, 1, seed=40 + i)[0], instrument="EURUSD", traceparent=TRACE)
        client.decide_windows(_windows(cfg, MIN_ROWS, seed=4))  # drift (its panel) is judged from MIN_ROWS on
    coordinator = scrape(cluster.coordinator.metrics)
    agents = [scrape(child.metrics) for child in cluster.agents]
    decided = sum(s.value for s in coordinator["tactical_decisions_total"])
    assert decided >= 5 and coordinator["tactical_active_version"][0].value == 1
    assert coordinator["tactical_decision_latency_seconds_count"][0].value == decided
    assert {s.labels["agent"] for s in coordinator["tactical_agent_vote_latency_seconds_count"]} == set(
        cfg.serving.agents)
    for samples in agents:
        assert samples["tactical_agent_windows_total"][0].value >= 5
        assert samples["process_resident_memory_bytes"][0].value > 0

    exported = set(coordinator).union(*agents)
    queries = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
               for target in panel.get("targets", [])]
    queried = {name for expr in queries for name in re.findall(r"\b(?:tactical|process)_[a-z_]+\b", expr)}
    assert len(queried) >= 20 and queried <= exported, sorted(queried - exported)


@pytest.mark.cluster
def test_a_clients_trace_context_is_found_in_the_audit_log(cluster):
    """The test before sent its decisions with TRACE; `tactical audit --trace` finds them."""
    run = [sys.executable, "-m", "tactical_engine"]

    def committed() -> bool:
        with Client(cluster.coordinator.address, cluster.cfg) as client:
            return client.status().audit_waiting == 0

    wait_for(committed, timeout=30)
    res = subprocess.run([*run, "audit", "--config", str(cluster.config_path), "--trace", TRACE[3:35], "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["latest"]
    assert len(rows) >= 5 and {r["traceparent"] for r in rows} == {TRACE} and {r["instrument"] for r in rows} == {
        "EURUSD"}
    res = subprocess.run([*run, "audit", "--config", str(cluster.config_path), "--trace", "nothex"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "32 hex digits" in res.stderr


def test_drift_is_not_judged_on_a_handful_of_decisions():
    """17 decisions put a row or two in each of 10 bins: a PSI of noise that would read SHIFTED."""
    rng = np.random.default_rng(0)
    reference = reference_bins(rng.normal(size=(5000, 7)))
    watch = CommitteeWatch(("fvg", "momentum", "entry"), 5000, 7)

    def serve(n: int) -> None:
        windows = rng.normal(size=(n, 60, 7)).astype("<f4")
        watch.observe(1, np.ones((n, 3), bool), np.full((n, 3, 3), 1 / 3), np.full((n, 3), 1 / 3), np.zeros(n),
                      windows.tobytes())

    serve(17)
    assert watch.drift(reference) is None
    serve(MIN_ROWS - 17)
    assert max(watch.drift(reference)) < SHIFTED  # the same distribution, enough rows: no shift


@pytest.mark.cluster
def test_drift_stays_stable_on_the_training_market_and_crosses_the_band_when_volatility_triples(cluster):
    cfg = cluster.cfg
    run = [sys.executable, "-m", "tactical_engine", "status", "--config", str(cluster.config_path), "--target",
           cluster.coordinator.address]

    def drift() -> dict[str, dict]:
        res = subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        settings = [agent["info"]["feature_settings"] for agent in out["agents"]]
        assert all(s and all(isinstance(v, dict) and "window" in v for v in s.values()) for s in settings), settings
        return out["health"]["drift"]

    with Client(cluster.coordinator.address, cfg, timeout=60) as client:
        client.decide_windows(_windows(cfg, HEALTH_WINDOW, seed=5))
        calm = drift()
        assert max(d["psi"] for d in calm.values()) < STABLE and {d["band"] for d in calm.values()} == {"stable"}
        client.decide_windows(_windows(cfg, HEALTH_WINDOW, seed=5, sigma=cfg.synthetic.sigma * 3))
    wild = drift()
    assert wild["price_momentum_5"]["psi"] > SHIFTED and wild["price_momentum_5"]["band"] == "shifted", wild
    assert wild["volume_ratio"]["band"] == "stable", wild
    psi_metric = {s.labels["feature"]: s.value for s in scrape(cluster.coordinator.metrics)["tactical_feature_psi"]}
    assert psi_metric["price_momentum_5"] > SHIFTED

    text = subprocess.run(run, capture_output=True, text=True, timeout=60).stdout
    assert "input drift" in text and "SHIFTED" in text and re.search(r"price_momentum_5\s+\d+\.\d+\s+shifted", text)
    assert re.search(r"committee, version 1, last \d+ decisions: agents disagree \d+\.\d%", text), text


@pytest.mark.cluster
def test_server_processes_log_json_lines_with_their_name(cluster):
    for name in ("agent-fvg", "coordinator"):
        lines = (cluster.tmp / "logs" / f"{name}.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines]
        assert entries and all({"time", "level", "process", "pid", "message"} <= set(e) for e in entries)
    assert any(e.get("agent") == "fvg" and "listening" in e["message"]
               for e in map(json.loads, (cluster.tmp / "logs" / "agent-fvg.log").read_text().splitlines()))
