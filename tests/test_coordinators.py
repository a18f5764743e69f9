"""Several coordinators on one port (`tactical up --coordinators N`): real processes on free ports, always stopped.

Each coordinator is also reached alone at its own address, which is how these tests know which
process answered: its status counts its decisions and names its pid.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest

from cluster_helpers import prepare_store, random_window, running_cluster, wait_for, write_config
from tactical.config import load_config
from tactical.rpc import admin_token, sync_channel
from tactical.v1 import decision_pb2_grpc
from tactical_engine.client import TacticalClient, decide_request
from tactical_engine.launcher import LaunchError, LocalCluster
from tactical_engine.rollout import rollout

pytestmark = pytest.mark.cluster
TACTICAL = [sys.executable, "-m", "tactical_engine"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two coordinators sharing a free port, supervised; versions 0-3 in the store, 3 active at start."""
    tmp = tmp_path_factory.mktemp("coordinators")
    config_path = write_config(tmp)
    store = prepare_store(tmp, config_path, trained_versions=3)
    with running_cluster(config_path, supervise=True, coordinators=2) as cluster:
        cluster.store = store
        cluster.token = admin_token(cluster.cfg)
        yield cluster


def status(child, cfg):
    with TacticalClient(child.own_address, cfg) as client:
        return client.status()


def decide_on_a_new_connection(address: str, cfg, seed: int):
    """One decision over a connection of its own: with several coordinators on the port, any one may answer."""
    with sync_channel(address, cfg.serving, own_connection=True) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        return stub.Decide(decide_request(window=random_window(seed)), timeout=10)


def test_each_coordinator_is_reached_alone_and_the_kernel_spreads_connections_over_both(cluster):
    first, second = cluster.coordinators
    assert first.address == second.address and first.own_address != second.own_address
    before = {child.name: status(child, cluster.cfg) for child in cluster.coordinators}
    assert {child.name: before[child.name].pid for child in cluster.coordinators} == {
        child.name: child.proc.pid for child in cluster.coordinators}  # its own address reaches that process
    decisions = []
    for seed in range(100):  # each connection lands on either: all 100 on one would be a 1 in 2^99 event
        decisions.append(decide_on_a_new_connection(first.address, cluster.cfg, seed))
        answered = {c.name: status(c, cluster.cfg).decisions - before[c.name].decisions
                    for c in cluster.coordinators}
        if all(answered.values()):
            break
    assert all(answered.values()), answered
    assert sum(answered.values()) == len(decisions)
    assert all(not d.HasField("error") and not d.degraded and d.model_version == 3 for d in decisions)
    for child in cluster.coordinators:
        with TacticalClient(child.own_address, cluster.cfg) as client:
            assert client.health() == "SERVING"


class Stream:
    """A closed-loop DecideStream from a thread, recording (sent, answered, decision)."""

    def __init__(self, address: str, cfg, own_connection: bool):
        self.records: list[tuple[float, float, object]] = []
        self.failures: list[Exception] = []
        self.stop = threading.Event()
        self.channel = sync_channel(address, cfg.serving, own_connection=own_connection)
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        sent: dict[int, float] = {}

        def requests():
            i = 0
            while not self.stop.is_set():
                sent[i] = time.perf_counter()
                yield decide_request(window=random_window(i % 16), request_id=str(i))
                i += 1
                time.sleep(0.002)

        try:
            for d in decision_pb2_grpc.DecisionServiceStub(self.channel).DecideStream(requests()):
                self.records.append((sent[int(d.request_id)], time.perf_counter(), d))
        except grpc.RpcError as exc:
            self.failures.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.channel.close()


def test_a_switch_through_any_coordinator_is_every_decision_after_it_returned(cluster):
    """Rollouts and a rollback, each through another coordinator (alone, or the shared port), under streams to
    each coordinator alone and through the port: a decision sent after a switch returned carries its version,
    whichever process answers it (and the first one, sent to each at once, too)."""
    first, second = cluster.coordinators
    streams = [Stream(child.own_address, cluster.cfg, False) for child in cluster.coordinators]
    streams += [Stream(first.address, cluster.cfg, True) for _ in range(2)]
    timeline = [(float("-inf"), float("-inf"), 3)]  # (call began, call returned, version now active)
    right_after = []
    try:
        time.sleep(0.3)
        for step, via in [(1, first.own_address), (2, second.own_address), (3, first.address),
                          ("rollback", second.own_address), (1, first.own_address)]:
            began = time.perf_counter()
            with TacticalClient(via, cluster.cfg, admin_token=cluster.token) as client:
                if step == "rollback":
                    version = client.rollback().active_version
                else:
                    version = rollout(client, cluster.store, step, cluster.cfg, cluster.token).version
            timeline.append((began, time.perf_counter(), version))
            right_after.append([decide_on_a_new_connection(c.own_address, cluster.cfg, 0).model_version
                                for c in cluster.coordinators])
            time.sleep(0.25)
    finally:
        for stream in streams:
            stream.close()
    assert [v for _, _, v in timeline] == [3, 1, 2, 3, 2, 1]  # the rollback popped the history both share
    assert right_after == [[v, v] for _, _, v in timeline[1:]]
    for k, stream in enumerate(streams):
        assert not stream.failures, stream.failures
        assert len(stream.records) > 50, k
        for sent, answered, d in stream.records:
            assert not d.HasField("error") and not d.degraded and all(v.ok for v in d.votes), d
            allowed = {v for i, (began, _, v) in enumerate(timeline)
                       if began <= answered and (i + 1 == len(timeline) or timeline[i + 1][1] >= sent)}
            assert d.model_version in allowed, (k, d.model_version, allowed)
        assert {d.model_version for _, _, d in stream.records} == {1, 2, 3}, k


def test_a_killed_coordinator_leaves_the_other_serving_and_is_restarted_on_the_shared_port(cluster):
    first, second = cluster.coordinators
    old_pid, restarts = second.proc.pid, second.restarts
    second.proc.send_signal(signal.SIGKILL)
    second.proc.wait()
    decisions = [decide_on_a_new_connection(first.address, cluster.cfg, seed) for seed in range(20)]
    assert all(not d.HasField("error") and not d.degraded for d in decisions)
    wait_for(lambda: second.restarts == restarts + 1 and second.alive(), timeout=60)
    assert second.proc.pid != old_pid and second.port == first.port
    with TacticalClient(second.own_address, cluster.cfg) as client:
        wait_for(lambda: client.health() == "SERVING", timeout=60)
        restarted = client.status()
    assert restarted.pid == second.proc.pid
    assert restarted.active_version == status(first, cluster.cfg).active_version  # the shared state's
    assert any(e.startswith(f"{second.name} restarted on {first.address}, alone at {second.own_address}")
               for e in cluster.events)


def test_a_cluster_refuses_ports_other_processes_hold_naming_each_before_starting_anything(tmp_path):
    """SO_REUSEPORT would let coordinators join another cluster's on it, and an agent that cannot bind says so
    only in gRPC's log; the launcher checks every configured port first."""
    with socket.create_server(("127.0.0.1", 0)) as coordinator_holder, socket.create_server(("127.0.0.1", 0)) as fvg:
        port, fvg_port = coordinator_holder.getsockname()[1], fvg.getsockname()[1]
        agents = {"fvg": {"port": fvg_port, "metrics_port": 0}, "momentum": {"port": 0, "metrics_port": 0},
                  "entry": {"port": 0, "metrics_port": 0}}
        for count in (1, 2):
            config_path = write_config(tmp_path, serving={"coordinator_port": port, "agents": agents})
            cluster = LocalCluster(load_config(config_path), str(config_path), coordinators=count)
            with pytest.raises(LaunchError) as refused:
                cluster.start()
            assert str(refused.value).startswith(
                f"cannot listen on 127.0.0.1: ports {fvg_port} (agent fvg: Address already in use), {port} "
                f"(coordinator: Address already in use); is another cluster running (`tactical health`)?")
            assert not any(child.proc for child in cluster.children)  # nothing started


def test_up_prints_every_coordinator_and_each_one_s_health_can_be_checked(tmp_path):
    config_path = write_config(tmp_path, serving={"metrics_port": 0})
    prepare_store(tmp_path, config_path)
    up = subprocess.Popen([*TACTICAL, "up", "--coordinators", "2", "--config", str(config_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)
        reader.start()
        wait_for(lambda: any(line.startswith("all SERVING") for line in lines) or up.poll() is not None,
                 timeout=180)
        rows = [line.split() for line in lines if line.startswith("coordinator ")]
        assert [row[:2] for row in rows] == [["coordinator", "1"], ["coordinator", "2"]], lines
        public = {row[2] for row in rows}
        own = [row[-1] for row in rows]
        assert len(public) == 1 and all(a.startswith("unix-abstract:") for a in own) and own[0] != own[1], lines
        for address in own:
            health = subprocess.run([*TACTICAL, "health", "--json", "--target", address, "--config", str(config_path)],
                                    capture_output=True, text=True, timeout=120)
            assert health.returncode == 0, health.stdout + health.stderr
            assert [r["status"] for r in json.loads(health.stdout)["processes"]] == ["SERVING"] * 4
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        reader.join(timeout=10)
    assert up.returncode == 0 and lines[-1].strip() == "stopped", lines
    assert any("2 coordinators share it" in line for line in lines)
