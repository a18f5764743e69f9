"""Data-parallel training: two ranks on this machine (gloo, 127.0.0.1) stay identical while learning
from different trajectories; `tactical train --nproc 2` judges and publishes once, from rank 0, and
an early stop ends both ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from agents.serving.model_store import ModelStore
from tactical.config import default_config
from training.distributed import free_port
from training.mappo import TacticalMAPPOTrainer
from training.metrics_log import read_metrics

pytestmark = pytest.mark.cluster

SMALL = {"num_envs": 4, "episode_length": 16, "minibatch_size": 32, "epochs": 2}

RANK_SCRIPT = """
import sys, torch
from tactical.config import default_config
from training.distributed import process_group
from training.mappo import TacticalMAPPOTrainer
out, small = sys.argv[1], eval(sys.argv[2])
cfg = default_config().replace(training=small, synthetic={"bars": 3000}, paths={"metrics": out + "/metrics.jsonl"})
with process_group() as ctx:  # joins through RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, as under torchrun
    trainer = TacticalMAPPOTrainer(cfg, progress=False)
    trainer.train(2)
    torch.save({"rank": ctx.rank, "world": ctx.world_size, "params": trainer.model.state_dict(),
                "last_obs": torch.from_numpy(trainer.next_obs.copy()), "value_norm": trainer.value_norm.state_dict()},
               f"{out}/rank{ctx.rank}.pt")
"""


def test_two_ranks_keep_identical_parameters_while_collecting_different_trajectories(tmp_path):
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(tmp_path), repr(SMALL)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    for key in r0["params"]:
        torch.testing.assert_close(r0["params"][key], r1["params"][key], rtol=0, atol=0, msg=key)
    assert r0["value_norm"] == r1["value_norm"]  # normalized over both ranks' returns
    assert not torch.equal(r0["last_obs"], r1["last_obs"])  # each rank played its own episodes
    assert [r["update"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]  # rank 0 logs alone

    # the gradients were averaged: rank 0's episodes trained alone (same seed, same bars) end elsewhere
    single = TacticalMAPPOTrainer(default_config().replace(training=SMALL, synthetic={"bars": 3000}), progress=False,
                                  log_metrics=False)
    single.train(2)
    assert torch.equal(torch.from_numpy(single.next_obs), r0["last_obs"])
    weight = "actors.momentum.policy_head.weight"
    assert not torch.equal(single.model.state_dict()[weight], r0["params"][weight])


def test_nproc_2_trains_and_rank_0_judges_and_publishes_once(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(json.dumps({"training": SMALL, "synthetic": {"bars": 3000},
                                  "paths": {"model_store": str(tmp_path / "store"),
                                            "metrics": str(tmp_path / "metrics.jsonl")}}))
    # rank 0 judges the candidate at update 2 (it holds: no improvement) and stops the run early, on both ranks
    res = subprocess.run([sys.executable, "-m", "tactical_engine", "train", "--config", str(config), "--updates", "6",
                          "--save-every", "2", "--early-stop", "1", "--nproc", "2"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    store = ModelStore(tmp_path / "store")
    assert store.versions() == [0, 1]  # the embedded default beside what it trained
    assert "2 rank(s)" in store.info(1)["source"] and store.info(1)["validation"]["update"] == 2
    assert [r["update"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert res.stdout.count("trained updates 1-2 (stopped early") == 1 and res.stderr.count("held out: Sharpe") == 1
    assert res.stderr.count("published version 1") == 1 and "trained updates 1-2" in res.stdout


def test_a_sigint_to_the_launcher_alone_stops_every_rank_after_its_update_and_publishes(tmp_path):
    """`kill -INT <pid of tactical train --nproc 2>` (no terminal to signal the ranks): it stops as Ctrl-C does."""
    config = tmp_path / "small.yaml"
    metrics = tmp_path / "metrics.jsonl"
    config.write_text(json.dumps({"training": SMALL, "synthetic": {"bars": 3000},
                                  "paths": {"model_store": str(tmp_path / "store"), "metrics": str(metrics)}}))
    proc = subprocess.Popen([sys.executable, "-m", "tactical_engine", "train", "--config", str(config), "--updates",
                             "500", "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not metrics.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "(stopped by Ctrl-C)" in out and err.count("published version 1") == 1, out + err[-2000:]
    done = len(read_metrics(metrics))
    assert 1 <= done < 500
    assert ModelStore(tmp_path / "store").versions() == [0, 1]
