"""The fault matrix, under load: real processes on 127.0.0.1, bounded loops, and after each fault the
accounting every operator relies on: decisions answered == rows in the audit log + counted drops.

Faults that need root (a small tmpfs mounted by the test for a full disk, immutable files) skip
with the reason where they cannot be made; what the test mounts it always unmounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from cluster_helpers import prepare_store, random_window, running_cluster, wait_for, write_config
from tactical.config import load_config
from tactical.v1 import cluster_pb2, common_pb2, decision_pb2
from tactical_engine.client import TacticalClient, decide_request

pytestmark = pytest.mark.cluster
TACTICAL = [sys.executable, "-m", "tactical_engine"]


# ---------------------------------------------------------------------------------------------- helpers
class Load:
    """Closed-loop decisions on a few DecideStreams from threads until stopped; counts what came back."""

    def __init__(self, address: str, cfg, streams: int = 2, limit_s: float = 60.0):
        self.address, self.cfg, self.streams, self.limit_s = address, cfg, streams, limit_s
        self.stop = threading.Event()
        self.decisions: list[decision_pb2.Decision] = []
        self.refused: list[str] = []  # error decisions (stream) with their message
        self.failed: list[str] = []  # calls that failed outright
        self._threads: list[threading.Thread] = []

    def _run(self, k: int) -> None:
        started = time.monotonic()
        answered = threading.Semaphore(1)  # closed loop: the next request only after the last answer

        def requests():
            i = 0
            while answered.acquire(timeout=30) and not self.stop.is_set() and time.monotonic() - started < self.limit_s:
                i += 1
                yield decide_request(window=random_window(i % 97), request_id=f"load{k}-{i}")

        try:
            with TacticalClient(self.address, self.cfg, timeout=30) as client:
                for d in client.decide_stream(requests()):
                    (self.refused.append(d.error.message) if d.HasField("error") else self.decisions.append(d))
                    answered.release()
        except grpc.RpcError as exc:
            self.failed.append(f"{exc.code().name}: {exc.details()}")

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(self.streams)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` more decisions came back."""
        target = len(self.decisions) + count
        wait_for(lambda: len(self.decisions) >= target, timeout=timeout)


def status(cluster) -> cluster_pb2.ClusterStatus:
    with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
        return client.status()


def audit_rows(path) -> tuple[int, int, set[str]]:
    """Rows, distinct (run, seq) keys, request ids."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows, keys = conn.execute("SELECT COUNT(*), COUNT(DISTINCT run || ':' || seq) FROM decisions").fetchone()
        ids = {r[0] for r in conn.execute("SELECT request_id FROM decisions")}
    return rows, keys, ids


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, readonly: bool = False):
    """A small tmpfs at `path` (a full disk on demand), always unmounted; skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def disk_full(directory: Path):
    """Fill the filesystem of `directory` to the last block; room again at the end."""
    filler = directory / "filler"
    # unbuffered: a buffered file would raise ENOSPC again from close() flushing what the full disk refused
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(b"\0" * 65536):
            pass
    try:
        yield
    finally:
        filler.unlink()


def tactical(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TACTICAL, *args], capture_output=True, text=True, timeout=timeout)


def stopped(load: Load, cluster) -> cluster_pb2.ClusterStatus:
    """Stop the load, let the audit commit what waits, and return the coordinator's last word before its stop."""
    load.__exit__()
    wait_for(lambda: status(cluster).audit_waiting == 0, timeout=60)
    return status(cluster)


def assert_every_decision_accounted(cluster_status_before_stop, path, answered: int) -> None:
    """After a graceful stop: every decision answered is a row, once, or was counted as dropped."""
    rows, keys, _ = audit_rows(path)
    assert rows == keys, "a record was stored twice"
    assert rows + cluster_status_before_stop.audit_dropped == answered, (rows, cluster_status_before_stop)


# ---------------------------------------------------------------------------------------------- one shared cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    config_path = write_config(tmp)
    prepare_store(tmp, config_path)
    with running_cluster(config_path, log_dir=tmp / "logs") as cluster:
        cluster.tmp = tmp
        yield cluster


def test_poison_windows_make_invalid_votes_and_no_decision_carries_nan(cluster):
    big = np.finfo(np.float32).max
    windows = [np.full((60, 7), sign * big, np.float32) for sign in (1, -1)] * 10 + [random_window(1)]
    with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
        decisions = list(client.decide_stream(iter([decide_request(window=w) for w in windows])))
    assert len(decisions) == len(windows) and not any(d.HasField("error") for d in decisions)
    invalid = [d for d in decisions if any("invalid vote" in v.error for v in d.votes)]
    assert invalid, "the seeded model answers NaN to an overflowing window: some vote must have been invalid"
    for d in decisions:
        numbers = [d.confidence, *d.probabilities, *(p for v in d.votes for p in v.probabilities)]
        assert np.isfinite(numbers).all(), d
    for d in invalid:
        assert d.degraded and "invalid vote" in d.reason
        assert all(np.isfinite(v.value) for v in d.votes if v.ok)
    s = status(cluster)  # the audit took them all: nothing dropped, the writer alive
    assert not s.audit_trouble and s.audit_dropped == 0
    assert s.decisions == s.audit_logged + s.audit_dropped + s.audit_waiting


GARBAGE = [
    b"\x0a\x02\xff\xfe",  # request_id: invalid UTF-8
    b"\xff\xff\xff\xff\xff",  # not a message at all
    decide_request(window=random_window(0), request_id="cut").SerializeToString()[:-17],  # truncated
]


def test_undecodable_requests_are_invalid_argument_logged_at_a_bounded_rate(cluster):
    log_path = cluster.tmp / "logs" / "coordinator.log"
    before = log_path.read_text().count("undecodable request")
    with grpc.insecure_channel(cluster.coordinator.address) as channel:
        raw = channel.unary_unary("/tactical.v1.DecisionService/Decide", request_serializer=bytes,
                                  response_deserializer=decision_pb2.Decision.FromString)
        codes = set()
        for i in range(1000):
            with pytest.raises(grpc.RpcError) as err:
                raw(GARBAGE[i % len(GARBAGE)], timeout=5)
            codes.add(err.value.code())
            assert "undecodable tactical.v1.DecideRequest" in err.value.details()
        assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
        stream = channel.stream_stream("/tactical.v1.DecisionService/DecideStream", request_serializer=bytes,
                                       response_deserializer=decision_pb2.Decision.FromString)
        good = decide_request(window=random_window(1), request_id="good").SerializeToString()
        answers = list(stream(iter([GARBAGE[0], good, GARBAGE[1], good]), timeout=10))
    assert [a.HasField("error") for a in answers] == [True, False, True, False]  # the stream went on
    assert answers[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[1].request_id == "good" and len(answers[1].votes) == 3
    log = log_path.read_text()
    assert log.count("undecodable request") - before <= 3 and "Traceback" not in log  # a line, then counts


def test_many_concurrent_oversized_calls_leave_the_coordinator_memory_bounded(cluster):
    pid = cluster.coordinator.proc.pid
    idle = rss_mb(pid)
    huge = decision_pb2.DecideRequest(window=common_pb2.Window(data=b"\1" * (16 << 20), bars=60, features=7))
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(cluster.coordinator.address, options=options) as channel:
        stub = channel.unary_unary("/tactical.v1.DecisionService/Decide",
                                   request_serializer=decision_pb2.DecideRequest.SerializeToString,
                                   response_deserializer=decision_pb2.Decision.FromString)

        def call(_):
            try:
                stub(huge, timeout=30)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(32) as pool:
            codes = set(pool.map(call, range(32)))
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
        assert len(client.decide(window=random_window(2)).votes) == 3
    assert rss_mb(pid) - idle < 50, (idle, rss_mb(pid))


def test_reflection_answers_under_v1_and_v1alpha(cluster):
    request = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    with grpc.insecure_channel(cluster.coordinator.address) as channel:
        for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            call = channel.stream_stream(f"/{package}.ServerReflection/ServerReflectionInfo",
                                         request_serializer=bytes,
                                         response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            response = next(iter(call(iter([request]), timeout=5)))
            names = {s.name for s in response.list_services_response.service}
            assert {"tactical.v1.DecisionService", "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection"} <= names, package


# ---------------------------------------------------------------------------------------------- the audit log
def test_writer_kills_under_load_lose_nothing_and_store_nothing_twice(tmp_path):
    config_path = write_config(tmp_path, serving={"audit_flush_ms": 200.0})
    prepare_store(tmp_path, config_path)
    with running_cluster(config_path) as cluster, Load(cluster.coordinator.address, cluster.cfg, streams=4) as load:
        load.wait(200)
        for _ in range(6):  # SIGKILL the writer, again and again, while decisions flow
            for writer in children(cluster.coordinator.proc.pid):
                os.kill(writer, signal.SIGKILL)
            load.wait(100)
        final = stopped(load, cluster)
    assert not load.failed and not load.refused
    rows, keys, ids = audit_rows(tmp_path / "audit.sqlite")
    assert rows == keys == len(load.decisions) == final.decisions
    assert ids == {d.request_id for d in load.decisions}


def test_a_full_audit_disk_is_loud_waits_in_the_spill_file_and_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "auditfs", "8m") as auditfs:
        config_path = write_config(tmp_path, serving={"audit_flush_ms": 200.0, "audit_backlog_bytes": 200_000},
                                   paths={"audit_log": str(auditfs / "audit.sqlite")})
        prepare_store(tmp_path, config_path)
        with running_cluster(config_path) as cluster, Load(cluster.coordinator.address, cluster.cfg) as load:
            load.wait(200)
            with disk_full(auditfs):
                # the writer's own words (between two failed commits the trouble may name the spill file instead)
                trouble = wait_for(lambda: "cannot commit" in (t := status(cluster).audit_trouble) and t, timeout=60)
                # decisions go on (fail-open): records wait in memory (200 kB), then in the spill file
                s = wait_for(lambda: (r := status(cluster)).audit_spilled > 0 and r, timeout=60)
                assert s.audit_dropped == 0 and s.decisions == s.audit_logged + s.audit_waiting, s
                health = wait_for(lambda: "cannot commit" in (h := tactical(
                    "health", "--target", cluster.coordinator.address, "--config", str(config_path))).stdout and h,
                    timeout=60)
                assert health.returncode == 1 and "AUDIT DEGRADED" in health.stdout, health.stdout + health.stderr
                assert f"cannot commit to {auditfs / 'audit.sqlite'}" in health.stdout, health.stdout
            # room again: the backlog drains by itself
            wait_for(lambda: not (r := status(cluster)).audit_trouble and r.audit_spilled == 0, timeout=60)
            final = stopped(load, cluster)
        assert "disk is full" in trouble or "disk I/O error" in trouble, trouble
        assert not load.failed and not load.refused and final.audit_dropped == 0
        assert_every_decision_accounted(final, auditfs / "audit.sqlite", len(load.decisions))


def test_without_a_spill_file_a_full_backlog_is_dropped_and_counted(tmp_path):
    with tmpfs(tmp_path / "auditfs", "8m") as auditfs:
        config_path = write_config(tmp_path, serving={"audit_flush_ms": 200.0, "audit_backlog_bytes": 100_000},
                                   paths={"audit_log": str(auditfs / "audit.sqlite"), "audit_spill": ""})
        prepare_store(tmp_path, config_path)
        with running_cluster(config_path) as cluster, Load(cluster.coordinator.address, cluster.cfg) as load:
            load.wait(200)
            with disk_full(auditfs):
                wait_for(lambda: status(cluster).audit_dropped > 0, timeout=60)
            wait_for(lambda: not status(cluster).audit_trouble, timeout=60)
            final = stopped(load, cluster)
        assert not load.failed and final.audit_dropped > 0
        assert_every_decision_accounted(final, auditfs / "audit.sqlite", len(load.decisions))


def test_fail_closed_refuses_decisions_while_the_audit_cannot_record_them(tmp_path):
    with tmpfs(tmp_path / "auditfs", "8m") as auditfs:
        config_path = write_config(tmp_path, serving={"audit_flush_ms": 200.0, "audit_policy": "fail-closed"},
                                   paths={"audit_log": str(auditfs / "audit.sqlite")})
        prepare_store(tmp_path, config_path)
        with running_cluster(config_path) as cluster, Load(cluster.coordinator.address, cluster.cfg) as load, \
                TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
            load.wait(200)
            with disk_full(auditfs):
                wait_for(lambda: load.refused, timeout=60)
                assert "fail-closed" in load.refused[0] and "not deciding" in load.refused[0], load.refused[0]
                wait_for(lambda: client.health() == "NOT_SERVING")
            wait_for(lambda: client.health() == "SERVING", timeout=60)
            refused = len(load.refused)
            load.wait(100)  # deciding again
            final = stopped(load, cluster)
        assert not load.failed and final.audit_dropped == 0 and len(load.refused) >= refused
        assert_every_decision_accounted(final, auditfs / "audit.sqlite", len(load.decisions))


def test_immutable_audit_files_for_a_while_lose_nothing(tmp_path):
    config_path = write_config(tmp_path, serving={"audit_flush_ms": 200.0})
    prepare_store(tmp_path, config_path)
    files = [tmp_path / f"audit.sqlite{suffix}" for suffix in ("", "-wal", "-shm")]
    with running_cluster(config_path) as cluster, Load(cluster.coordinator.address, cluster.cfg) as load:
        load.wait(200)
        try:
            if subprocess.run(["chattr", "+i", *map(str, files)], capture_output=True).returncode != 0:
                pytest.skip("cannot make files immutable here (chattr needs root on ext2/3/4)")
            wait_for(lambda: status(cluster).audit_trouble, timeout=30)
            load.wait(200)
        finally:
            subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True)
        wait_for(lambda: not status(cluster).audit_trouble, timeout=60)
        final = stopped(load, cluster)
    assert not load.failed and final.audit_dropped == 0
    assert_every_decision_accounted(final, tmp_path / "audit.sqlite", len(load.decisions))


# ---------------------------------------------------------------------------------------------- damaged state
def test_a_tampered_stored_version_is_reported_and_a_rollout_repairs_it(tmp_path):
    config_path = write_config(tmp_path)
    prepare_store(tmp_path, config_path)
    blob = tmp_path / "agents" / "fvg" / "v000001" / "fvg.onnx"
    with running_cluster(config_path, supervise=True) as cluster:
        fvg = cluster.agents[0]
        fvg.proc.kill()  # a restart reads the store again, and meets the flipped bit
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
        with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
            # once restarted, it answers: version 1 is broken here (not merely unreachable)
            d = wait_for(lambda: "broken" in (r := client.decide(window=random_window(1))).reason and r, timeout=30)
            assert d.degraded and "no vote from fvg (version 1 is broken on agent fvg" in d.reason
            assert "sha256" in d.reason
            health = tactical("health", "--target", cluster.coordinator.address, "--config", str(config_path))
            assert health.returncode == 1
            assert "agent fvg" in health.stdout and "holds version 1 broken" in health.stdout, health.stdout
            repair = tactical("rollout", "--version", "1", "--target", cluster.coordinator.address,
                              "--config", str(config_path))
            assert repair.returncode == 0, repair.stderr
            assert not wait_for(lambda: (r := client.decide(window=random_window(2))).degraded is False and r,
                                timeout=30).degraded
            health = tactical("health", "--target", cluster.coordinator.address, "--config", str(config_path))
            assert health.returncode == 0, health.stdout


def test_a_full_agent_store_refuses_a_stage_and_a_restart_serves_what_it_has(tmp_path):
    with tmpfs(tmp_path / "agents" / "fvg", "1500k"):  # room for two versions of one agent's blob, not three
        config_path = write_config(tmp_path)
        store = prepare_store(tmp_path, config_path)  # versions 0 and 1
        with running_cluster(config_path, supervise=True) as cluster:
            from cluster_helpers import opinionated_model
            from training.versions import publish

            publish(store, opinionated_model(7), source="test")  # version 2: does not fit fvg's store
            rollout = tactical("rollout", "--version", "2", "--target", cluster.coordinator.address,
                               "--config", str(config_path))
            assert rollout.returncode == 1 and "RESOURCE_EXHAUSTED" in rollout.stderr, rollout.stderr
            assert str(tmp_path / "agents" / "fvg") in rollout.stderr  # the message names the path
            cluster.agents[0].proc.kill()  # its start-up import of version 2 fails the same way: it must start
            with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
                d = wait_for(lambda: (r := client.decide(window=random_window(1))).degraded is False and r,
                             timeout=60)
                assert d.model_version == 1 and client.status().active_version == 1


def test_a_damaged_state_file_is_moved_aside_and_the_coordinator_starts(tmp_path):
    config_path = write_config(tmp_path)
    prepare_store(tmp_path, config_path)
    state = tmp_path / "coordinator" / "active_version.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"active": 1, "hist')  # truncated mid-write by a disk fault
    with running_cluster(config_path) as cluster, TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
        assert client.status().active_version == 1  # the newest version every agent holds
    aside = [p.name for p in state.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and json.loads(state.read_text())["active"] == 1


def test_unwritable_paths_at_start_are_one_line_errors_naming_the_path(tmp_path):
    with tmpfs(tmp_path / "readonly", "1m", readonly=True) as readonly:
        config_path = write_config(tmp_path, paths={"audit_log": str(readonly / "audit.sqlite")})
        cfg = load_config(config_path)
        out = tactical("coordinator", "--config", str(config_path), "--agents",
                       "fvg=127.0.0.1:1,momentum=127.0.0.1:1,entry=127.0.0.1:1", "--port", "0", timeout=60)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"tactical coordinator: error: cannot write the audit log at {cfg.paths.audit_log}" in out.stderr
        out = tactical("agent", "--name", "fvg", "--store", str(readonly / "fvg"), "--no-bootstrap",
                       "--config", str(config_path), "--port", "0", timeout=60)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"tactical agent: error: cannot write to agent fvg's version store at {readonly / 'fvg'}" in out.stderr
