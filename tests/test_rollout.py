"""Live rollout, rollback, admin security, audit trail, and the faults that must lose nothing."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnx
import pytest
import torch

from agents.model.export import export_artifact
from agents.serving.artifact import Manifest
from agents.serving.model_store import ModelStore, artifact_names
from agents.serving.runtime import ActorRunner
from cluster_helpers import prepare_store, random_window, running_cluster, wait_for, write_config
from tactical.config import AGENT_NAMES, load_config
from tactical.failpoints import CRASH_AT_ENV
from tactical.rpc import admin_token
from tactical.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc
from tactical_engine.client import AgentClient, TacticalClient, decide_request
from tactical_engine.rollout import RolloutError, rollout
from training.system import TacticalMARLSystem
from training.versions import publish

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A cluster whose model store holds v0 (default) and v1..v3; v3 is active at start."""
    tmp = tmp_path_factory.mktemp("rollout")
    config_path = write_config(tmp)
    store = prepare_store(tmp, config_path, trained_versions=3)
    with running_cluster(config_path, supervise=True) as cluster:
        cluster.store = store
        cluster.token = admin_token(cluster.cfg)
        cluster.config_path = config_path
        yield cluster


def client_for(cluster, token=""):
    return TacticalClient(cluster.coordinator.address, cluster.cfg, admin_token=token)


def test_cluster_started_on_the_newest_version(setup):
    with client_for(setup) as client:
        assert client.status().active_version == 3


def test_admin_calls_need_the_token(setup):
    version_list = cluster_pb2.ListVersionsRequest()
    with grpc.insecure_channel(setup.coordinator.address) as channel:
        admin = cluster_pb2_grpc.ModelAdminServiceStub(channel)
        calls = [lambda md: admin.Activate(cluster_pb2.ActivateRequest(version=1), metadata=md, timeout=5),
                 lambda md: admin.Rollback(cluster_pb2.RollbackRequest(), metadata=md, timeout=5),
                 lambda md: admin.ListVersions(version_list, metadata=md, timeout=5)]
        for call in calls:
            for metadata in [(), (("x-tactical-admin-token", "wrong"),)]:
                with pytest.raises(grpc.RpcError) as err:
                    call(metadata)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "admin call without a valid token" in err.value.details()
    with AgentClient(setup.agents[0].address, setup.cfg, admin_token="wrong") as agent:
        blob, manifest = setup.store.read_artifact(1, "fvg")
        with pytest.raises(grpc.RpcError) as err:
            agent.stage("fvg", 1, blob, manifest.to_json(), manifest.sha256)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with client_for(setup) as client:  # decisions need no token
        assert client.decide(window=random_window()).votes[0].ok
        assert client.status().active_version == 3  # nothing changed


def expected_probabilities(store: ModelStore, versions, windows):
    """(version, window index, agent index) -> probabilities, computed here from the artifacts."""
    out = {}
    for v in versions:
        for a, name in enumerate(AGENT_NAMES):
            probs = ActorRunner(*store.read_artifact(v, name)).run(windows).probabilities
            for i in range(len(windows)):
                out[(v, i, a)] = probs[i]
    return out


def test_rollouts_and_rollbacks_under_load_never_mix_versions(setup):
    windows = np.stack([random_window(100 + i) for i in range(32)])
    expected = expected_probabilities(setup.store, [1, 2, 3], windows)
    records = []  # (sent, answered, window index, decision)
    stop = threading.Event()
    failures = []

    def stream():
        sent = {}

        def requests():
            i = 0
            while not stop.is_set():
                sent[i] = time.perf_counter()
                yield decide_request(window=windows[i % 32], request_id=str(i))
                i += 1
                time.sleep(0.001)

        try:
            with client_for(setup) as client:
                for d in client.decide_stream(requests()):
                    k = int(d.request_id)
                    records.append((sent[k], time.perf_counter(), k % 32, d))
        except grpc.RpcError as exc:
            failures.append(exc)

    thread = threading.Thread(target=stream)
    thread.start()
    timeline = [(float("-inf"), float("-inf"), 3)]  # (call began, call returned, version now active)
    with client_for(setup, setup.token) as client:
        time.sleep(0.3)
        for step in [1, 2, "rollback", 3, "rollback", "rollback", 2]:
            began = time.perf_counter()
            if step == "rollback":
                version = client.rollback().active_version
            else:
                version = rollout(client, setup.store, step, setup.cfg, setup.token).version
            timeline.append((began, time.perf_counter(), version))
            time.sleep(0.25)
    stop.set()
    thread.join(timeout=30)
    assert not failures, failures
    assert [v for _, _, v in timeline] == [3, 1, 2, 1, 3, 1, 3, 2]  # each rollback pops one step
    assert len(records) > 300
    seen_versions = set()
    for sent, answered, i, d in records:
        assert not d.HasField("error") and not d.degraded, d.reason
        # Every vote is exactly what that agent's model of the decision's version gives for the window.
        for a, vote in enumerate(d.votes):
            np.testing.assert_allclose(vote.probabilities, expected[(d.model_version, i, a)], atol=1e-5)
        # The version was active at some moment while the request was in flight.
        allowed = {v for k, (began, _, v) in enumerate(timeline)
                   if began <= answered and (k + 1 == len(timeline) or timeline[k + 1][1] >= sent)}
        assert d.model_version in allowed, (d.model_version, allowed)
        seen_versions.add(d.model_version)
    assert seen_versions == {1, 2, 3}


def corrupt_onnx(blob: bytes, mutate) -> bytes:
    model = onnx.load_from_string(blob)
    mutate(model)
    return model.SerializeToString()


def nan_weights(model):
    init = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2)
    arr = onnx.numpy_helper.to_array(init).copy()
    arr[:] = np.nan
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))


def raw_stage(address, token, header, chunks):
    with grpc.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentAdminServiceStub(channel)
        messages = [agent_pb2.StageChunk(header=header)] + [agent_pb2.StageChunk(data=c) for c in chunks]
        return stub.StageVersion(iter(messages), metadata=(("x-tactical-admin-token", token),), timeout=30)


def test_corrupt_artifacts_are_refused_and_serving_continues(setup):
    fvg = setup.agents[0].address
    blob, _ = setup.store.read_artifact(1, "fvg")
    torch.manual_seed(0)
    short = TacticalMARLSystem(setup.cfg.replace(features={"window": 52}))
    short_blob, _ = export_artifact(short.actors["fvg"], 7)
    momentum_blob, _ = setup.store.read_artifact(1, "momentum")

    def header(data, version=7, agent="fvg", sha=None, size=None, manifest_agent=None):
        sha = sha or hashlib.sha256(data).hexdigest()
        m = Manifest(agent=manifest_agent or agent, version=version, sha256=sha, size_bytes=len(data))
        return agent_pb2.StageHeader(agent=agent, version=version, sha256=sha,
                                     size_bytes=size if size is not None else len(data), manifest_json=m.to_json())

    nan_blob = corrupt_onnx(blob, nan_weights)
    cases = [
        ("truncated", header(blob), [blob[: len(blob) // 2]], grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
        ("wrong checksum", header(blob, sha="0" * 64), [blob], grpc.StatusCode.INVALID_ARGUMENT, "checksum"),
        ("wrong shapes", header(short_blob), [short_blob], grpc.StatusCode.FAILED_PRECONDITION, "model signature"),
        ("NaN weights", header(nan_blob), [nan_blob], grpc.StatusCode.FAILED_PRECONDITION, "non-finite"),
        ("other agent's model", header(momentum_blob), [momentum_blob], grpc.StatusCode.FAILED_PRECONDITION,
         "exported for agent 'momentum'"),
        ("addressed to another agent", header(blob, agent="entry"), [blob], grpc.StatusCode.FAILED_PRECONDITION,
         "artifact is for agent 'entry'"),
        ("version changed under the same number", header(momentum_blob, version=1, agent="fvg"),
         [momentum_blob], grpc.StatusCode.FAILED_PRECONDITION, "versions are immutable"),
    ]
    with AgentClient(fvg, setup.cfg) as agent:
        before = agent.info()
    with client_for(setup) as client:
        active = client.status().active_version
        for name, head, chunks, code, message in cases:
            with pytest.raises(grpc.RpcError) as err:
                raw_stage(fvg, setup.token, head, chunks)
            assert err.value.code() == code, name
            assert message in err.value.details(), (name, err.value.details())
            d = client.decide(window=random_window(5))
            assert all(v.ok for v in d.votes) and d.model_version == active, name
    with AgentClient(fvg, setup.cfg) as agent:
        after = agent.info()
    assert list(after.stored_versions) == list(before.stored_versions)
    assert list(after.loaded_versions) == list(before.loaded_versions)


def test_a_rollout_an_agent_refuses_activates_nothing_and_names_the_agent(setup):
    store = setup.store
    version = store.latest() + 1
    files = {}
    for name in AGENT_NAMES:
        blob, _ = store.read_artifact(1, name)
        if name == "momentum":
            blob = corrupt_onnx(blob, nan_weights)
        m = Manifest.for_blob(name, version, blob)
        blob_name, manifest_name = artifact_names(name)
        files[blob_name], files[manifest_name] = blob, m.to_json().encode()
    store.write_version(version, files)
    with client_for(setup, setup.token) as client:
        active = client.status().active_version
        with pytest.raises(RolloutError, match=f"staging version {version} failed, nothing was activated: "
                                               f"agent momentum at .*non-finite outputs"):
            rollout(client, store, version, setup.cfg, setup.token)
        assert client.status().active_version == active
    out = subprocess.run([sys.executable, "-m", "tactical_engine", "rollout", "--version", str(version), "--target",
                          setup.coordinator.address, "--config", str(setup.config_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "agent momentum" in out.stderr and "nothing was activated" in out.stderr


def test_agent_killed_mid_write_of_a_staged_version_serves_its_last_good_version(setup):
    child = setup.agents[0]
    store_dir = setup.store.root.parent / "agents" / "fvg"
    # restart the agent with a crash point inside the model store's atomic write of a version
    child.env = {CRASH_AT_ENV: "model_store.write_version"}
    try:
        killed_pid = child.proc.pid
        child.proc.kill()
        wait_for(lambda: child.alive() and child.proc.pid != killed_pid and _info(setup, child) is not None,
                 timeout=30)
    finally:
        child.env = {}  # its next restart is a normal one
    crashing = child.proc
    try:
        before = _info(setup, child)
        blob, _ = setup.store.read_artifact(1, "fvg")
        version = 50
        with AgentClient(child.address, setup.cfg, admin_token=setup.token) as agent, \
                pytest.raises(grpc.RpcError) as err:
            agent.stage("fvg", version, blob, Manifest.for_blob("fvg", version, blob).to_json(),
                        hashlib.sha256(blob).hexdigest(), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        crashing.wait(timeout=10)
        assert crashing.returncode == -signal.SIGKILL  # it died inside the write, at the crash point
    finally:
        if crashing.poll() is None:  # the crash point was never reached: do not leave it armed for other tests
            crashing.kill()
    wait_for(lambda: child.alive() and child.proc.pid != crashing.pid and _info(setup, child) is not None, timeout=30)
    info = _info(setup, child)
    assert version not in info.loaded_versions and version not in info.stored_versions
    assert list(info.stored_versions) == list(before.stored_versions)
    assert not [p.name for p in store_dir.iterdir() if p.name.startswith(".tmp-")]  # swept at start, never loaded
    with client_for(setup) as client:
        wait_for(lambda: all(v.ok for v in client.decide(window=random_window(6)).votes))


def _info(setup, child):
    try:
        with AgentClient(child.address, setup.cfg, timeout=1) as agent:
            return agent.info()
    except grpc.RpcError:
        return None


def test_restarted_coordinator_keeps_the_active_version(setup):
    with client_for(setup, setup.token) as client:
        rollout(client, setup.store, 2, setup.cfg, setup.token)
        assert client.status().active_version == 2
    coordinator = setup.coordinator
    old_pid = coordinator.proc.pid
    coordinator.proc.kill()
    wait_for(lambda: coordinator.alive() and coordinator.proc.pid != old_pid, timeout=30)
    with client_for(setup) as client:
        wait_for(lambda: client.health() == "SERVING")
        assert client.status().active_version == 2
        assert client.decide(window=random_window(7)).model_version == 2


def audit_rows(path, ids=None):
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT request_id, model_version, degraded FROM decisions").fetchall()
    finally:
        conn.close()
    return [r for r in rows if ids is None or r[0] in ids]


def _stream_decisions(cluster, prefix: str, count: int) -> set[str]:
    with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
        requests = (decide_request(window=random_window(i % 50), request_id=f"{prefix}{i}") for i in range(count))
        return {d.request_id for d in client.decide_stream(requests)}


def test_every_answered_decision_is_audited_after_graceful_shutdown(tmp_path):
    config_path = write_config(tmp_path)
    prepare_store(tmp_path, config_path)
    ids = set()
    with running_cluster(config_path) as cluster:
        with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
            for i in range(100):
                ids.add(client.decide(window=random_window(i), request_id=f"u{i}").request_id)
        with ThreadPoolExecutor(8) as pool:  # a burst: more than one flush interval's worth
            for found in pool.map(lambda k: _stream_decisions(cluster, f"s{k}-", 300), range(8)):
                ids |= found
    assert len(ids) == 2500
    rows = audit_rows(load_config(config_path).paths.audit_log, ids)
    assert len(rows) == 2500 and {r[1] for r in rows} == {1}


def _decisions_around_a_writer_kill(tmp_path, count: int, **serving) -> tuple[set[str], set[str], str]:
    """Stream `count` decisions, SIGKILL the audit writer, stream `count` more, stop gracefully.

    Returns the request ids answered before and after the kill, and the audit log's path."""
    config_path = write_config(tmp_path, serving=serving)
    prepare_store(tmp_path, config_path)
    path = load_config(config_path).paths.audit_log
    with running_cluster(config_path) as cluster:
        before = _stream_decisions(cluster, "a", count)
        writer = subprocess.run(["pgrep", "-f", f"coordinator.audit {path}"], capture_output=True, text=True)
        os.kill(int(writer.stdout.split()[0]), 9)
        after = _stream_decisions(cluster, "b", count)
    return before, after, path


def test_a_dead_audit_writer_is_replaced_and_the_log_stays_readable(tmp_path):
    before, after, path = _decisions_around_a_writer_kill(tmp_path, 500)
    logged = {r[0] for r in audit_rows(path)}
    assert after <= logged  # everything after the replacement is there
    assert len(before & logged) > 0  # what the dead writer had committed stays readable
    from coordinator.audit import latest

    assert len(latest(path, 10)) == 10


def test_a_writer_killed_since_the_last_flush_is_replaced_at_shutdown_and_nothing_is_lost(tmp_path):
    # a 5 s flush interval: nothing reaches the first writer, the graceful stop finds it dead
    before, after, path = _decisions_around_a_writer_kill(tmp_path, 200, audit_flush_ms=5000.0)
    assert before | after == {r[0] for r in audit_rows(path)} and len(before | after) == 400


def test_a_killed_coordinator_loses_at_most_the_flush_window(tmp_path):
    config_path = write_config(tmp_path, serving={"audit_flush_ms": 200.0})
    prepare_store(tmp_path, config_path)
    answered = {}
    with running_cluster(config_path, restart=False) as cluster, \
            TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < 1.5:
            d = client.decide(window=random_window(i), request_id=f"k{i}")
            answered[d.request_id] = time.perf_counter()
            i += 1
        cluster.coordinator.proc.kill()
        killed = time.perf_counter()
        cluster.coordinator.proc.wait()
    cfg = load_config(config_path)
    path = cfg.paths.audit_log
    wait_for(lambda: _writer_done(path))  # the writer drains the pipe after the coordinator's death
    logged = {r[0] for r in audit_rows(path)}
    missing = [t for rid, t in answered.items() if rid not in logged]
    # Only decisions answered in the last flush interval before the kill may be missing
    # (plus scheduling slack on a loaded machine).
    flush_s = cfg.serving.audit_flush_ms / 1000
    assert all(killed - t <= flush_s + 0.3 for t in missing), sorted(killed - t for t in missing)[-5:]
    assert len(logged & set(answered)) > 0.7 * len(answered)


def _writer_done(path) -> bool:
    out = subprocess.run(["pgrep", "-f", f"coordinator.audit {path}"], capture_output=True)
    return out.returncode != 0


def test_an_older_active_version_is_served_after_restarts(tmp_path):
    """Agents load only the newest versions at start; the active one, persisted but older, loads on demand."""
    config_path = write_config(tmp_path, serving={"versions_kept": 2})
    store = prepare_store(tmp_path, config_path, trained_versions=3)  # v0..v3; agents start on [2, 3]
    cfg = load_config(config_path)
    token = admin_token(cfg, create=True)
    with running_cluster(config_path, supervise=True) as cluster:
        with client_for(cluster, token) as client:
            rollout(client, store, 1, cfg, token)
        killed = cluster.agents[1]
        old_pid = killed.proc.pid
        killed.proc.kill()
        wait_for(lambda: killed.alive() and killed.proc.pid != old_pid and _info(cluster, killed) is not None)
        assert 1 not in _info(cluster, killed).loaded_versions  # restarted on the newest two
        with client_for(cluster) as client:
            d = wait_for(lambda: (r := client.decide(window=random_window(1))).votes[1].ok and r)
            assert d.model_version == 1 and not d.degraded
            assert 1 in _info(cluster, killed).loaded_versions
    with running_cluster(config_path) as cluster, client_for(cluster) as client:  # the whole cluster again: on v1
        assert client.status().active_version == 1
        d = wait_for(lambda: (r := client.decide(window=random_window(2))).degraded is False and r)
        assert d.model_version == 1


def test_a_version_trained_with_other_feature_settings_is_not_activated(setup, tmp_path):
    """Features computed otherwise than in training would be served confidently wrong: refused, naming the keys."""
    cfg = load_config(setup.config_path)
    skewed = cfg.replace(features={"momentum_period": 10, "volume_window": 30})
    torch.manual_seed(5)
    version = publish(setup.store, TacticalMARLSystem(skewed).eval(), source="test: other feature settings")
    with client_for(setup, setup.token) as client:
        before = client.status().active_version
        with pytest.raises(RolloutError) as refused:
            rollout(client, setup.store, version, cfg, setup.token)
        assert client.status().active_version == before
    message = str(refused.value)
    assert f"version {version} was trained with features this coordinator computes differently" in message
    assert "features.momentum_period 10 (here 5)" in message and "features.volume_window 30 (here 20)" in message
