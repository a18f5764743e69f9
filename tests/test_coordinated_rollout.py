"""Several coordinators over the same agents switch versions together, or not at all."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import pytest

from cluster_helpers import prepare_store, random_window, running_cluster, write_config
from tactical.config import load_config
from tactical.failpoints import CRASH_AT_ENV
from tactical.rpc import admin_token
from tactical_engine.client import TacticalClient
from tactical_engine.launcher import Child, tactical_command
from tactical_engine.rollout import RolloutError, activate, rollback, rollout, stage

pytestmark = pytest.mark.cluster


@contextlib.contextmanager
def second_coordinator(tmp, config_path, agents: str, name: str = "b", env: dict | None = None):
    """Another coordinator process over `agents` (NAME=HOST:PORT,...), with a state and audit log of its own."""
    child = Child(f"coordinator {name}", tactical_command(
        "coordinator", "--config", str(config_path), "--agents", agents, "--state", str(tmp / f"{name}-state"),
        "--audit", str(tmp / f"{name}-audit.sqlite")), 0, env=env or {}, log=tmp / f"coordinator-{name}.log")
    child.spawn()
    try:
        child.wait_listening()
        yield child
    finally:
        child.terminate()
        if child.proc.stdout is not None:
            child.proc.stdout.close()


def agents_of(cluster) -> str:
    return ",".join(f"{child.name.split()[1]}={child.address}" for child in cluster.agents)


@pytest.fixture
def setup(tmp_path):
    config_path = write_config(tmp_path)
    store = prepare_store(tmp_path, config_path, trained_versions=3)  # versions 0 (default), 1, 2, 3
    cfg = load_config(config_path)
    with running_cluster(config_path) as cluster:
        token = admin_token(cfg)
        with TacticalClient(cluster.coordinator.address, cfg, admin_token=token) as a:
            rollout(a, store, 1, cfg, token)
        yield cluster, cfg, store, token, config_path, tmp_path


def clients(cfg, token, *children):
    return [TacticalClient(child.address, cfg, admin_token=token) for child in children]


def active(client) -> int:
    return client.status().active_version


def test_a_rollout_switches_every_coordinator_within_a_window_and_no_decision_mixes_versions(setup):
    cluster, cfg, store, token, config_path, tmp = setup
    with second_coordinator(tmp, config_path, agents_of(cluster)) as b:
        a_client, b_client = both = clients(cfg, token, cluster.coordinator, b)
        rollout(b_client, store, 1, cfg, token)  # b started on the newest version the agents hold
        answers: list = []
        stop = threading.Event()

        def load(client: TacticalClient) -> None:  # a client-side round robin over both coordinators
            while not stop.is_set():
                answers.append((time.monotonic(), client.target, client.decide(window=random_window(len(answers)))))

        threads = [threading.Thread(target=load, args=(c,)) for c in both]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            result = rollout(both, store, 2, cfg, token)
            finished = time.monotonic()
            time.sleep(0.5)
            back = rollback(both)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert result.switch.version == 2 and set(result.switch.previous.values()) == {1}
        assert set(result.switch.previous) == {cluster.coordinator.address, b.address}
        assert 0 <= result.switch.window_ms < 5000
        assert back.version == 1 and set(back.previous.values()) == {2} and active(a_client) == active(b_client) == 1
        decided = [d for _, _, d in answers]
        assert {d.model_version for d in decided} == {1, 2}
        assert not any(d.degraded for d in decided), [d.reason for d in decided if d.degraded][:3]  # no mixed votes
        after = [d for t, _, d in answers if finished < t < finished + 0.4]
        assert after and {d.model_version for d in after} == {2}  # after the rollout returned: the new version only
        for c in both:
            c.close()

    res = subprocess.run([sys.executable, "-m", "tactical_engine", "rollout", "--version", "3", "--config",
                          str(config_path), "--target", cluster.coordinator.address],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "version 3 active (was 1)" in res.stdout, res.stderr


def test_when_one_coordinator_cannot_prepare_none_switches(setup, tmp_path):
    cluster, cfg, store, token, config_path, tmp = setup
    # b also knows a second fvg process, which holds no version: version 3 cannot be activated there
    spare = Child("agent fvg spare", tactical_command("agent", "--name", "fvg", "--config", str(config_path),
                                                      "--store", str(tmp / "spare"), "--no-bootstrap"), 0,
                  log=tmp / "spare.log")
    spare.spawn()
    try:
        spare.wait_listening()
        with second_coordinator(tmp, config_path, agents_of(cluster) + f",fvg={spare.address}") as b:
            both = clients(cfg, token, cluster.coordinator, b)
            a_client = both[0]
            stage(a_client, store, 3, cfg, token)  # on the three agents a knows, not on the spare
            with pytest.raises(RolloutError) as refused:
                activate(both, 3)
            assert "no coordinator switched" in str(refused.value) and b.address in str(refused.value)
            assert "fvg at " + spare.address in str(refused.value)
            assert active(a_client) == 1
            res = subprocess.run([sys.executable, "-m", "tactical_engine", "rollback", "--config", str(config_path),
                                  "--target", cluster.coordinator.address, "--target", b.address],
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode == 1 and "tactical rollback:" in res.stderr, res.stderr  # b never had a version
            for c in both:
                c.close()
    finally:
        spare.terminate()
        spare.proc.stdout.close()


def test_a_coordinator_dying_as_it_switches_makes_the_others_switch_back(setup):
    cluster, cfg, store, token, config_path, tmp = setup
    with second_coordinator(tmp, config_path, agents_of(cluster),
                            env={CRASH_AT_ENV: "coordinator-switch"}) as b:
        both = clients(cfg, token, cluster.coordinator, b)
        a_client = both[0]
        with pytest.raises(RolloutError) as failed:
            rollout(both, store, 2, cfg, token)
        message = str(failed.value)
        assert f"coordinator {b.address}: UNAVAILABLE" in message
        assert f"switched back: {cluster.coordinator.address}" in message and "COULD NOT" not in message
        assert active(a_client) == 1 and not b.alive()
        assert a_client.list_versions().history[-1:] != [2]  # switched back by a rollback, not an activation
        for c in both:
            c.close()


def test_coordinators_that_would_roll_back_to_different_versions_are_refused(setup):
    cluster, cfg, store, token, config_path, tmp = setup
    with second_coordinator(tmp, config_path, agents_of(cluster)) as b:
        a_client, b_client = both = clients(cfg, token, cluster.coordinator, b)
        rollout(both, store, 2, cfg, token)  # both on 2
        rollout(a_client, store, 3, cfg, token)  # a alone: 2 -> 3, would go back to 2
        rollout(b_client, store, 1, cfg, token)
        rollout(b_client, store, 0, cfg, token)  # b alone: 2 -> 1 -> 0, would go back to 1
        with pytest.raises(RolloutError, match="would roll back to different versions"):
            rollback(both)
        assert (active(a_client), active(b_client)) == (3, 0)  # nothing moved
        for c in both:
            c.close()
