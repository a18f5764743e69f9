"""The serving cluster as clients see it: real agent and coordinator processes on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cluster_helpers import prepare_store, random_window, reserved_port, running_cluster, wait_for, write_config
from coordinator.aggregation import AggregationRule
from coordinator.core import AUTO_ACTIVATE_WAIT_S
from market.features import compute_features
from market.synthetic import synthetic_bars
from tactical.config import AGENT_NAMES, load_config
from tactical.process import LAUNCHER_PID_ENV, started_with
from tactical.v1 import agent_pb2, agent_pb2_grpc, common_pb2, decision_pb2, decision_pb2_grpc
from tactical.wire import encode_batch, encode_window
from tactical_engine.client import AgentClient, TacticalClient, decide_request

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    config_path = write_config(tmp)
    prepare_store(tmp, config_path)
    with running_cluster(config_path) as cluster:
        cluster.cfg_path = config_path
        yield cluster


@pytest.fixture
def client(cluster):
    with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
        yield client


def test_decision_from_a_window_carries_every_vote(client, cluster):
    d = client.decide(window=random_window(1), request_id="req-1")
    assert d.request_id == "req-1"
    assert d.model_version == 1  # the newest version every agent holds was activated at start
    assert not d.degraded and (d.reason == "" or d.reason.startswith("Hold"))
    assert [v.agent for v in d.votes] == list(AGENT_NAMES)
    assert all(v.ok and len(v.probabilities) == 3 and 0 < v.latency_ms <= d.latency_ms for v in d.votes)
    np.testing.assert_allclose(sum(d.probabilities), 1.0, rtol=1e-5)
    # The coordinator applied the DESIGN rule to the votes.
    rule = AggregationRule.from_config(cluster.cfg.aggregation)
    expected = rule(np.array([[v.probabilities for v in d.votes]]))
    np.testing.assert_allclose(d.probabilities, expected.combined[0], rtol=1e-5)
    assert d.action == expected.actions[0]  # one action encoding: the rule's output is the wire's value
    assert d.latency_ms > 0


def test_decision_from_bars_equals_decision_from_their_features(client, cluster):
    bars = synthetic_bars(500, seed=4)
    tail = bars[500 - cluster.cfg.features.min_bars:]
    from_bars = client.decide(bars=tail)
    window = compute_features(bars, cluster.cfg.features)[-60:]  # features over the long series
    from_window = client.decide(window=window)
    np.testing.assert_allclose(from_bars.probabilities, from_window.probabilities, rtol=1e-6)
    assert from_bars.bar_time_ms == int(bars.time[-1])


def test_stream_answers_in_order(client):
    requests = [decide_request(window=random_window(i), request_id=f"s{i}") for i in range(40)]
    answers = list(client.decide_stream(iter(requests)))
    assert [a.request_id for a in answers] == [f"s{i}" for i in range(40)]
    assert all(not a.HasField("error") and len(a.votes) == 3 for a in answers)


def bad_requests(cfg):
    window = random_window(2)
    nan = window.copy()
    nan[12, 3] = np.nan
    inf = window.copy()
    inf[0, 6] = np.inf
    short = synthetic_bars(cfg.features.min_bars - 1, seed=1)
    bars = synthetic_bars(cfg.features.min_bars, seed=1)

    def broken(field, index, value):
        arrays = {f: getattr(bars, f).copy() for f in ("time", "open", "high", "low", "close", "volume")}
        arrays[field][index] = value
        from market.bars import Bars
        return Bars(**arrays)

    big = common_pb2.Window(data=b"\0" * (1 << 20), bars=60, features=7)
    return [
        ("wrong shape", decide_request(window=window[:59]), "must be 60 bars x 7 features, got 59 x 7"),
        ("NaN", decide_request(window=nan), "holds nan at bar 12, feature 3 (fvg_age)"),
        ("inf", decide_request(window=inf), "holds inf at bar 0, feature 6 (volume_ratio)"),
        ("empty", decision_pb2.DecideRequest(window=common_pb2.Window()), "window is empty"),
        ("wrong data size", decision_pb2.DecideRequest(window=big), "window data is 1048576 bytes"),
        ("nothing", decision_pb2.DecideRequest(), "neither a window, bars nor a bar"),
        ("too few bars", decide_request(bars=short), f"too few bars: need at least {cfg.features.min_bars}"),
        ("out of order", decide_request(bars=broken("time", 50, bars.time[48])), "bar 50: time"),
        ("high < low", decide_request(bars=broken("high", 30, 1.0)), "bar 30: "),
        ("negative volume", decide_request(bars=broken("volume", 7, -5.0)), "bar 7: negative volume"),
        ("long id", decision_pb2.DecideRequest(request_id="x" * 65, window=encode_window(window)), "request_id"),
    ]


def test_bad_input_is_invalid_argument_and_the_next_request_succeeds(client, cluster):
    for name, request, message in bad_requests(cluster.cfg):
        with pytest.raises(grpc.RpcError) as err:
            client.decisions.Decide(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert message in err.value.details(), (name, err.value.details())
        assert len(client.decide(window=random_window(3)).votes) == 3  # still serving


def test_bad_input_on_a_stream_is_answered_and_the_stream_continues(client, cluster):
    requests = []
    for i, (_, request, _) in enumerate(bad_requests(cluster.cfg)):
        requests += [request, decide_request(window=random_window(i), request_id=f"good{i}")]
    answers = list(client.decide_stream(iter(requests)))
    assert len(answers) == len(requests)
    for bad, good in zip(answers[::2], answers[1::2], strict=True):
        assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and bad.error.message
        assert not good.HasField("error") and good.request_id.startswith("good")


def test_a_message_over_the_size_cap_is_refused_before_it_is_read(client, cluster):
    # a plain channel: ours refuses to send over the cap itself
    cap = cluster.cfg.serving.max_message_bytes
    huge = decision_pb2.DecideRequest(window=common_pb2.Window(data=b"\0" * (cap + 1), bars=60, features=7))
    with grpc.insecure_channel(cluster.coordinator.address) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Decide(huge, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in err.value.details() and f"vs. {cap})" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:  # on a stream, gRPC ends the stream
            list(stub.DecideStream(iter([decide_request(window=random_window(1)), huge]), timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(client.decide(window=random_window(1)).votes) == 3  # and the server goes on


def test_health_command_reports_every_process_serving(cluster):
    out = subprocess.run([sys.executable, "-m", "tactical_engine", "health", "--target", cluster.coordinator.address,
                          "--config", cluster.cfg_path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert sum(" SERVING " in line for line in lines) == 4 and "NOT_SERVING" not in out.stdout
    for name in AGENT_NAMES:
        assert any(line.startswith(f"agent {name}") for line in lines)


def test_decide_command_prints_the_votes(cluster):
    out = subprocess.run([sys.executable, "-m", "tactical_engine", "decide", "--target", cluster.coordinator.address,
                          "--config", cluster.cfg_path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "model version 1" in out.stdout and all(name in out.stdout for name in AGENT_NAMES)


def test_reflection_lists_the_services(cluster):
    for address, expected in [(cluster.coordinator.address, "tactical.v1.DecisionService"),
                              (cluster.agents[0].address, "tactical.v1.AgentService")]:
        with grpc.insecure_channel(address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            names = {s.name for s in next(responses).list_services_response.service}
        assert {expected, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_agents_are_pinned_and_do_not_load_torch(cluster):
    for name, child in zip(AGENT_NAMES, cluster.agents, strict=True):
        assert os.sched_getaffinity(child.proc.pid) == {cluster.cores[name]}
        with open(f"/proc/{child.proc.pid}/maps") as maps:
            assert "libtorch" not in maps.read()
        with AgentClient(child.address, cluster.cfg) as agent:
            before = agent.info()
            with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
                client.decide(window=random_window(3))
            info = agent.info()
        assert info.agent == name and info.pid == child.proc.pid and info.core == cluster.cores[name]
        assert 1 in info.loaded_versions and info.windows_served == before.windows_served + 1


def test_agent_validates_its_own_input(cluster):
    with grpc.insecure_channel(cluster.agents[0].address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        windows = np.stack([random_window(1), random_window(2)])
        ok = stub.Act(agent_pb2.ActRequest(seq=9, model_version=1, windows=encode_batch(windows)), timeout=5)
        assert ok.seq == 9 and len(np.frombuffer(ok.probabilities, "<f4")) == 6
        with pytest.raises(grpc.RpcError) as err:
            stub.Act(agent_pb2.ActRequest(model_version=42, windows=encode_batch(windows)), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "model version 42" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Act(agent_pb2.ActRequest(model_version=1, windows=encode_batch(windows[:, :, :5])), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_concurrent_decisions_are_batched(cluster):
    """Windows in flight together reach an agent as one message: fewer agent messages than decisions."""
    before = _served(cluster)
    n = 256
    with TacticalClient(cluster.coordinator.address, cluster.cfg) as client, ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: client.decide(window=random_window(i)), range(n)))
    after = _served(cluster)
    windows = after[0] - before[0]
    batches = after[1] - before[1]
    assert windows == n and batches < n


def _served(cluster):
    with AgentClient(cluster.agents[1].address, cluster.cfg) as agent:
        info = agent.info()
    return info.windows_served, info.batches


def test_a_late_agent_is_left_out_after_the_deadline(cluster, client):
    """SIGSTOP freezes the momentum agent: decisions still come back, degraded, naming it."""
    child = cluster.agents[1]
    os.kill(child.proc.pid, 19)  # SIGSTOP
    try:
        d = client.decide(window=random_window(5))
    finally:
        os.kill(child.proc.pid, 18)  # SIGCONT
    assert d.degraded and "momentum" in d.reason
    vote = d.votes[1]
    assert not vote.ok and ("deadline exceeded" in vote.error or "unavailable" in vote.error)
    assert d.votes[0].ok and d.votes[2].ok
    wait_for(lambda: not client.decide(window=random_window(6)).degraded)


def test_agent_killed_mid_stream_no_call_fails_and_it_comes_back(tmp_path):
    config_path = write_config(tmp_path)
    prepare_store(tmp_path, config_path)
    with running_cluster(config_path, supervise=True) as cluster:
        with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
            killed = threading.Event()
            stop = threading.Event()

            def requests():
                i = 0
                while not stop.is_set():
                    i += 1
                    if i == 50:
                        cluster.agents[2].proc.kill()  # SIGKILL the entry agent mid-stream
                        killed.set()
                    yield decide_request(window=random_window(i))

            decisions = []
            for d in client.decide_stream(requests()):
                decisions.append(d)
                if killed.is_set() and len(decisions) > 100 and cluster.agents[2].alive() and not d.degraded:
                    stop.set()
                    break
                if len(decisions) > 20_000:
                    pytest.fail("the entry agent never came back")
        assert all(not d.HasField("error") for d in decisions)
        degraded = [d for d in decisions if d.degraded]
        assert degraded, "decisions during the outage should be degraded"
        # Each degraded decision names the agents that did not vote (on a loaded machine another
        # agent may also miss a deadline now and then); the outage itself is the entry agent's.
        for d in degraded:
            assert all(v.agent in d.reason for v in d.votes if not v.ok), d.reason
        assert sum(not d.votes[2].ok for d in degraded) >= 0.5 * len(degraded)
        assert not decisions[-1].degraded
        assert any("agent entry restarted" in e for e in cluster.events)


def test_too_few_agents_means_hold_with_the_reason(tmp_path):
    config_path = write_config(tmp_path)
    prepare_store(tmp_path, config_path)
    with running_cluster(config_path, restart=False) as cluster:
        with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
            for child in cluster.agents[:2]:
                child.proc.kill()
                child.proc.wait()
            d = wait_for(lambda: (r := client.decide(window=random_window(7))).votes[1].ok is False and r)
        assert d.action == common_pb2.ACTION_HOLD and d.degraded
        assert "1 of 3 agents voted, min_agents is 2" in d.reason


def test_coordinator_started_before_its_agents(tmp_path):
    """NOT_SERVING until the agents appear, then SERVING, without a restart. A fresh coordinator
    waits for every agent before its first activation (it would pick a version only the first
    ones hold), as long as they come within AUTO_ACTIVATE_WAIT_S."""
    from tactical_engine.launcher import Child, tactical_command

    config_path = write_config(tmp_path)
    prepare_store(tmp_path, config_path)
    ports = [reserved_port() for _ in AGENT_NAMES]
    agents_arg = ",".join(f"{n}=127.0.0.1:{p}" for n, p in zip(AGENT_NAMES, ports, strict=True))
    coordinator = Child("coordinator", tactical_command("coordinator", "--agents", agents_arg, "--config",
                                                        str(config_path)), 0)
    agents = [Child(f"agent {n}", tactical_command("agent", "--name", n, "--config", str(config_path)), p)
              for n, p in zip(AGENT_NAMES, ports, strict=True)]
    cfg = load_config(config_path)
    try:
        coordinator.spawn()
        address = coordinator.wait_listening()
        with TacticalClient(address, cfg) as client:
            assert client.health() == "NOT_SERVING"
            for agent in agents[:2]:
                agent.spawn()
            wait_for(lambda: sum(a.connected and a.HasField("info") for a in client.status().agents) == 2)
            status = client.status()
            if status.uptime_s < AUTO_ACTIVATE_WAIT_S - 1:  # (a very slow start may pass the wait: then it serves)
                assert not status.HasField("active_version") and not status.serving
            agents[2].spawn()
            wait_for(lambda: client.health() == "SERVING")
            wait_for(lambda: all(v.ok for v in client.decide(window=random_window(8)).votes))
    finally:
        for child in [coordinator, *agents]:
            child.terminate()
            if child.proc is not None:
                child.proc.stdout.close()
    assert coordinator.proc.returncode == 0 and all(a.proc.returncode == 0 for a in agents)


def test_graceful_stop_exits_cleanly(tmp_path):
    config_path = write_config(tmp_path)
    prepare_store(tmp_path, config_path)
    with running_cluster(config_path) as cluster:
        with TacticalClient(cluster.coordinator.address, cluster.cfg) as client:
            client.decide(window=random_window(9))
        children = list(cluster.children)
    assert [child.proc.returncode for child in children] == [0] * len(children)


def test_an_agent_batches_concurrent_callers_and_serves_a_lone_one_at_once(cluster):
    """Requests that arrive together share forward passes; one request alone gets its own right away."""
    import asyncio

    from tactical.rpc import aio_channel

    address = cluster.agents[2].address

    async def burst(n):
        async with aio_channel(address, cluster.cfg.serving) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            request = agent_pb2.ActRequest(model_version=1, windows=encode_batch(random_window(3)[None]))
            await asyncio.gather(*(stub.Act(request, timeout=10) for _ in range(n)))

    def served():
        with AgentClient(address, cluster.cfg) as agent:
            info = agent.info()
        return info.windows_served, info.batches

    w0, b0 = served()
    asyncio.run(burst(1))
    w1, b1 = served()
    assert (w1 - w0, b1 - b0) == (1, 1)
    asyncio.run(burst(200))
    w2, b2 = served()
    assert w2 - w1 == 200 and b2 - b1 < 200


def test_up_command_health_wait_and_sigterm_drains_a_running_stream(tmp_path):
    """`tactical up` as a user runs it; `tactical health --wait` waits for it; SIGTERM while a client
    streams: health goes NOT_SERVING first, the open stream is still answered until the client ends
    it, and everything stops cleanly."""
    import signal
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = reserved_port()
    config_path = write_config(tmp_path, serving={"coordinator_port": port})
    prepare_store(tmp_path, config_path)
    cfg = load_config(config_path)
    up = subprocess.Popen([sys.executable, "-m", "tactical_engine", "up", "--config", str(config_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        health = subprocess.run([sys.executable, "-m", "tactical_engine", "health", "--wait", "60", "--json",
                                 "--target", f"127.0.0.1:{port}", "--config", str(config_path)],
                                capture_output=True, text=True, timeout=120)
        assert health.returncode == 0, health.stdout + health.stderr
        statuses = [row["status"] for row in json.loads(health.stdout)["processes"]]
        assert statuses == ["SERVING"] * 4, health.stdout
        assert len(launched_by(up.pid)) == 5  # three agents, the coordinator, its audit writer

        watched: list[str] = []
        signalled = threading.Event()
        sent_after_signal = []

        def requests():
            for i in range(100_000):
                if i == 20:
                    up.send_signal(signal.SIGTERM)
                    signalled.set()
                if signalled.is_set():
                    sent_after_signal.append(i)
                    if len(sent_after_signal) > 50:
                        return
                    time.sleep(0.01)
                yield decide_request(window=random_window(i % 7), request_id=f"r{i}")

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))

            def follow():
                try:
                    for update in watch:
                        watched.append(health_pb2.HealthCheckResponse.ServingStatus.Name(update.status))
                except grpc.RpcError:
                    pass

            follower = threading.Thread(target=follow)
            follower.start()
            wait_for(lambda: watched)  # the watch is open before the signal can come
            with TacticalClient(f"127.0.0.1:{port}", cfg) as client:
                answers = list(client.decide_stream(requests()))
            follower.join(timeout=30)
        assert len(answers) == 20 + len(sent_after_signal) - 1
        assert all(not a.HasField("error") and len(a.votes) == 3 and not a.degraded for a in answers)
        assert watched[0] == "SERVING" and "NOT_SERVING" in watched
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0 and launched_by(up.pid) == []
    assert "all SERVING" in out and f"127.0.0.1:{port}" in out and out.rstrip().endswith("stopped")


def test_up_command_stops_at_ctrl_c_while_still_starting(tmp_path):
    import signal

    config_path = write_config(tmp_path, serving={"coordinator_port": reserved_port()})
    prepare_store(tmp_path, config_path)
    up = subprocess.Popen([sys.executable, "-m", "tactical_engine", "up", "--config", str(config_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert up.stdout.readline().startswith("starting the cluster")
    assert "agents started" in up.stdout.readline()
    # The first agent is up; the others and the coordinator are still to come: a stop in mid start-up.
    assert "listening on" in up.stdout.readline()
    up.send_signal(signal.SIGINT)
    out, _ = up.communicate(timeout=60)
    assert up.returncode == 0
    assert "all SERVING" not in out and out.rstrip().endswith("stopped")
    assert launched_by(up.pid) == []  # every process it had started is gone


def launched_by(pid: int) -> list[int]:
    """Live processes started by the launcher with this pid (they carry it in their environment)."""
    return started_with(LAUNCHER_PID_ENV, str(pid))


def test_stopping_a_cluster_also_stops_what_its_processes_left_behind(tmp_path):
    """A process of the cluster that no child accounts for (its start interrupted by Ctrl-C, an audit writer whose
    coordinator died first) is stopped with the rest: nothing of the cluster outlives its stop."""
    from tactical.process import CLUSTER_ENV
    from tactical_engine.launcher import LocalCluster

    config_path = write_config(tmp_path)
    cluster = LocalCluster(load_config(config_path), str(config_path))
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                            env={**os.environ, CLUSTER_ENV: cluster.instance})
    try:
        # Popen returns once exec has begun; the kernel sets the new environment up a moment later
        wait_for(lambda: started_with(CLUSTER_ENV, cluster.instance) == [left.pid], timeout=10)
        cluster.stop()
        assert left.wait(timeout=5) == -15  # SIGTERM
        assert started_with(CLUSTER_ENV, cluster.instance) == []
    finally:
        left.kill()
        left.wait()
