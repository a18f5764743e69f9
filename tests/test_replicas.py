"""Several replicas of one agent behind one coordinator: shared round-robin, no vote lost with a replica."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster_helpers import prepare_store, random_window, wait_for, write_config
from tactical.config import load_config
from tactical.rpc import admin_token
from tactical_engine.client import AgentClient, TacticalClient, decide_request
from tactical_engine.launcher import Child, tactical_command
from tactical_engine.rollout import rollout

pytestmark = pytest.mark.cluster


def test_two_fvg_replicas_share_the_load_and_cover_for_each_other(tmp_path):
    config_path = write_config(tmp_path)
    store = prepare_store(tmp_path, config_path)
    cfg = load_config(config_path)
    token = admin_token(cfg, create=True)
    common = ["--config", str(config_path)]
    agents = [Child(f"agent {name}", tactical_command("agent", "--name", name, "--store",
                                                      str(tmp_path / "agents" / label), *common), 0)
              for name, label in [("fvg", "fvg-a"), ("fvg", "fvg-b"), ("momentum", "momentum"), ("entry", "entry")]]
    coordinator = Child("coordinator", [], 0)
    try:
        for child in agents:
            child.spawn()
        for child in agents:
            child.wait_listening()
        names = ["fvg", "fvg", "momentum", "entry"]
        spec = ",".join(f"{name}={child.address}" for name, child in zip(names, agents, strict=True))
        coordinator.command = tactical_command("coordinator", "--agents", spec, *common)
        coordinator.spawn()
        coordinator.wait_listening()
        with TacticalClient(coordinator.address, cfg, admin_token=token) as client:
            wait_for(lambda: client.health() == "SERVING")
            result = rollout(client, store, 0, cfg, token)  # stages on all four processes
            assert len(result.staged) == 4 and client.status().active_version == 0
            decisions = list(client.decide_stream(decide_request(window=random_window(i)) for i in range(200)))
            assert all(not d.degraded for d in decisions)
            served = []
            for replica in agents[:2]:
                with AgentClient(replica.address, cfg) as agent:
                    served.append(agent.info().windows_served)
            assert served == [100, 100]  # round-robin: the two fvg replicas took turns

            health = subprocess.run([sys.executable, "-m", "tactical_engine", "health", "--target",
                                     coordinator.address, *common], capture_output=True, text=True, timeout=60)
            assert health.returncode == 0 and health.stdout.count("agent fvg") == 2

            agents[0].proc.kill()  # one fvg replica dies: the other one carries the fvg vote
            agents[0].proc.wait()
            d = wait_for(lambda: (r := client.decide(window=random_window(7))).votes[0].ok and r)
            later = [client.decide(window=random_window(i)) for i in range(50)]
            assert all(not x.degraded for x in later) and d.model_version == 0
    finally:
        for child in [coordinator, *agents]:
            child.terminate()
            if child.proc is not None:
                child.proc.stdout.close()
