"""The `tactical` console script: help, the features command, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cluster_helpers import reserved_port
from market.features import compute_features
from market.synthetic import configured
from tactical.config import load_config
from tactical.v1 import common_pb2, decision_pb2
from tactical_engine.cli import main

TACTICAL = [sys.executable, "-m", "tactical_engine"]


def run(*args, cwd=None):
    return subprocess.run([*TACTICAL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.cluster
def test_console_script_is_installed():
    script = Path(sys.executable).parent / "tactical"
    assert script.exists(), "pip install -e . should put the `tactical` script beside the interpreter"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "COMMAND" in out.stdout


@pytest.mark.cluster
def test_features_on_synthetic_bars_and_saved_matrix(tmp_path):
    out_file = tmp_path / "f.npy"
    res = run("features", "--synthetic", "5000", "--seed", "3", "--out", str(out_file))
    assert res.returncode == 0, res.stderr
    assert "5,000 bars" in res.stdout and "fvg_bullish_active" in res.stdout
    assert np.load(out_file).shape == (5000, 7)


@pytest.mark.cluster
def test_bad_csv_is_one_readable_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,0.5,2,1,1\n")
    res = run("features", "--csv", str(bad))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 2" in lines[0] and "high 0.5 is below low 2.0" in lines[0]


@pytest.mark.cluster
def test_bad_config_is_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("features:\n  windw: 60\n")
    res = run("features", "--synthetic", "100", "--config", str(cfg))
    assert res.returncode == 2 and "unknown config key 'features.windw'" in res.stderr


@pytest.mark.parametrize("args,message", [
    (["audit", "--last", "-2"], "--last must be at least 1, got -2"),
    (["tune", "--startup-trials", "-1"], "--startup-trials must be at least 0, got -1"),
    (["tune", "--warmup-updates", "-1"], "--warmup-updates must be at least 0, got -1"),
    (["tune", "--trials", "0"], "--trials must be at least 1, got 0"),
    (["demo", "--updates", "0"], "--updates must be at least 1, got 0"),  # was: silently the default
    (["demo", "--push-every", "0"], "--push-every must be at least 1, got 0"),
    (["backtest", "--synthetic", "--target", "127.0.0.1:1", "--streams", "0"], "--streams must be at least 1, got 0"),
    (["backtest", "--synthetic", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["backtest", "--synthetic", "--from", "2024-01-05", "--to", "2024-01-04"],
     "--from 2024-01-05 is after --to 2024-01-04"),
    (["backtest", "--synthetic", "--version", "-1"], "--version must be at least 0, got -1"),
    (["rollout", "--version", "-1"], "--version must be at least 0, got -1"),
    (["rollout", "--version", "v-1"], "--version must be at least 0, got -1"),
    (["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["train", "--save-every", "-1"], "--save-every must be at least 0, got -1"),
    (["features", "--synthetic", "0"], "--synthetic must be at least 1, got 0"),
    (["features", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["decide", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["decide", "--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
    (["status", "--timeout", "nan"], "--timeout must be a positive number of seconds, got nan"),
    (["health", "--wait", "nan"], "--wait must be at least 0, got nan"),
    (["up", "--duration", "-1"], "--duration must be a positive number of seconds, got -1.0"),
    (["up", "--coordinators", "0"], "--coordinators must be between 1 and 64, got 0"),
    (["agent", "--name", "fvg", "--port", "-5"], "--port must be between 0 and 65535, got -5"),  # gRPC: port 65531
    (["agent", "--name", "fvg", "--core", "-2"], "--core must be at least -1, got -2"),
    (["coordinator", "--port", "70000"], "--port must be between 0 and 65535, got 70000"),
])
def test_numbers_out_of_range_are_refused_before_any_work(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"tactical {args[0]}: error: {message}\n"


@pytest.mark.parametrize("args,source", [
    (["features", "--csv", "bars.csv", "--seed", "3"], "--csv"),
    (["decide", "--window", "w.npy", "--seed", "3"], "--window"),
    (["decide", "--csv", "bars.csv", "--seed", "0"], "--csv"),
])
def test_a_seed_beside_other_bars_is_refused_not_ignored(capsys, args, source):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == f"tactical {args[0]}: error: --seed sets the synthetic market's seed; it does nothing with {source}\n"


@pytest.mark.parametrize("values,message", [
    (np.full((60, 7), "x"), "must hold real numbers (integers or floats), got dtype <U1"),
    (np.zeros((60, 7), complex), "must hold real numbers (integers or floats), got dtype complex128"),
    (np.full((60, 7), 1e39), "a window holds 1e+39, past float32's range"),
])
def test_decide_refuses_a_window_file_that_is_not_real_numbers(tmp_path, capsys, values, message):
    path = tmp_path / "w.npy"
    np.save(path, values)
    assert main(["decide", "--window", str(path), "--target", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tactical decide: error: cannot read window file {path}: ") and message in err
    assert len(err.splitlines()) == 1



def test_decide_refuses_a_window_file_that_is_not_npy_with_a_line_that_says_how_to_write_one(tmp_path, capsys):
    path = tmp_path / "w.csv"
    path.write_text("time,open,high,low,close\n1,1,1,1,1\n")
    assert main(["decide", "--window", str(path), "--target", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err == (f"tactical decide: error: {path} is not a .npy array (write the 60 x 7 "
                                       f"float32 window with numpy.save)\n")



def test_a_coordinator_that_is_not_there_is_one_line_that_says_what_to_check(capsys):
    assert main(["decide", "--target", f"127.0.0.1:{reserved_port()}", "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tactical decide: error: UNAVAILABLE: ") and len(err.splitlines()) == 1
    assert err.endswith("(is the cluster running there? `tactical health --target HOST:PORT` checks; `tactical up` "
                        "starts one)\n")



@pytest.mark.parametrize("command", [["status"], ["decide"], ["versions"], ["health"], ["rollback"]])
def test_a_coordinator_on_port_0_needs_a_target_and_says_so(tmp_path, capsys, command):
    config = tmp_path / "port0.yaml"
    config.write_text("serving:\n  coordinator_port: 0\n  admin_token: t\n")
    assert main([*command, "--config", str(config)]) == 2
    assert capsys.readouterr().err == (f"tactical {command[0]}: error: serving.coordinator_port is 0: the coordinator "
                                       f"picked its port when it started; give --target HOST:PORT as `tactical up` "
                                       f"printed it\n")


def test_health_of_a_coordinator_that_is_not_there_shows_no_numbers_it_does_not_have(capsys):
    assert main(["health", "--json", "--target", f"127.0.0.1:{reserved_port()}", "--timeout", "1"]) == 1
    row, = json.loads(capsys.readouterr().out)["processes"]
    assert row["status"] == "UNREACHABLE (UNAVAILABLE)"
    assert row["requests"] is None and row["p50_ms"] is None and row["p99_ms"] is None



def test_an_output_path_that_is_a_directory_is_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["features", "--synthetic", "500", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"tactical features: error: Is a directory: {tmp_path}\n"
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


SYNTHETIC = "synthetic:\n  seed: 5\n  sigma: 0.004\n  trend_drift: 1.0\n"


def test_features_use_the_config_synthetic_market_and_seed(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(SYNTHETIC)
    cfg = load_config(config)
    for extra, seed in (([], 5), (["--seed", "6"], 6)):
        out = tmp_path / f"f{seed}.npy"
        assert main(["features", "--synthetic", "500", "--out", str(out), "--config", str(config), *extra]) == 0
        bars = configured(cfg.replace(synthetic={"bars": 500, "seed": seed}).synthetic).bars
        np.testing.assert_array_equal(np.load(out), compute_features(bars, cfg.features))


def test_decide_sends_bars_of_the_config_synthetic_market(tmp_path, monkeypatch, capsys):
    sent = []

    class Client:  # stands in for the cluster: records what decide sends
        def __init__(self, target, cfg, timeout):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def decide(self, *, window=None, bars=None, **request):
            sent.append(bars)
            return decision_pb2.Decision(action=common_pb2.ACTION_HOLD, confidence=0.5, probabilities=[0.2, 0.5, 0.3])

    monkeypatch.setattr("tactical_engine.client.TacticalClient", Client)
    config = tmp_path / "c.yaml"
    config.write_text(SYNTHETIC)
    cfg = load_config(config)
    for extra, seed in (([], 5), (["--seed", "6"], 6)):
        assert main(["decide", "--config", str(config), *extra]) == 0
        expected = configured(cfg.replace(synthetic={"bars": cfg.features.min_bars, "seed": seed}).synthetic).bars
        np.testing.assert_array_equal(sent[-1].close, expected.close)
        np.testing.assert_array_equal(sent[-1].time, expected.time)
    assert "decision Hold" in capsys.readouterr().out


def test_help_says_the_seed_defaults_to_the_config(capsys):
    for command in ("features", "decide"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "default: the config's synthetic.seed" in " ".join(capsys.readouterr().out.split())
