"""Instruments, one bar per tick, many instruments per call, and the Python API (Engine, Client, AsyncClient).

The promises a live desk relies on: a window built from one bar per tick is, bar for bar, the one
a full series gives; a batch answers each instrument as a single call would; the in-process engine
and the cluster answer the same Decision; a client whose coordinator restarted sends the history
again by itself.
"""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import numpy as np
import pytest

from cluster_helpers import prepare_store, random_window, running_cluster, wait_for, write_config
from market.features import compute_features
from market.synthetic import synthetic_bars
from tactical.actions import Action
from tactical.config import load_config
from tactical.v1 import common_pb2, decision_pb2, decision_pb2_grpc
from tactical.wire import encode_bars, encode_window
from tactical_engine import AsyncClient, Client, Decision, DecisionRefused, Engine, Refusal

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    config_path = write_config(tmp, serving={"max_instruments": 4, "max_bar_gap_ms": 3_600_000})
    prepare_store(tmp, config_path)
    with running_cluster(config_path, supervise=True) as cluster:
        cluster.cfg_path = config_path
        yield cluster


@pytest.fixture
def stub(cluster):
    with grpc.insecure_channel(cluster.coordinator.address) as channel:
        yield decision_pb2_grpc.DecisionServiceStub(channel)


def serving(client: Client) -> bool:
    try:
        return client.status().serving
    except grpc.RpcError:  # restarting
        return False


def bar_message(bars, t: int) -> common_pb2.Bar:
    return common_pb2.Bar(time_ms=int(bars.time[t]), open=bars.open[t], high=bars.high[t], low=bars.low[t],
                          close=bars.close[t], volume=bars.volume[t])


def test_one_bar_per_tick_gives_bar_for_bar_the_windows_of_the_whole_series(cluster, stub):
    bars = synthetic_bars(400, seed=21)
    need = cluster.cfg.features.min_bars
    full = compute_features(bars, cluster.cfg.features)
    first = stub.Decide(decision_pb2.DecideRequest(instrument="EURUSD", bars=encode_bars(bars[:need])))
    assert first.instrument == "EURUSD" and first.bar_time_ms == bars.time[need - 1]
    requests = [decision_pb2.DecideRequest(instrument="EURUSD", bar=bar_message(bars, t)) for t in range(need, 400)]
    ticked = list(stub.DecideStream(iter(requests), timeout=60))
    windows = [decision_pb2.DecideRequest(instrument="EURUSD-windows", window=encode_window(full[t - 59:t + 1]))
               for t in range(need, 400)]
    reference = list(stub.DecideStream(iter(windows), timeout=60))
    assert len(ticked) == len(reference) == 400 - need
    for t, (tick, ref) in enumerate(zip(ticked, reference, strict=True), start=need):
        assert not tick.HasField("error") and tick.bar_time_ms == bars.time[t]
        np.testing.assert_allclose(tick.probabilities, ref.probabilities, rtol=0, atol=1e-6, err_msg=f"bar {t}")
        assert [v.probabilities for v in tick.votes] == [v.probabilities for v in ref.votes]


def test_bad_ticks_are_invalid_argument_naming_the_instrument_and_the_bar(cluster, stub):
    bars = synthetic_bars(200, seed=22)
    need = cluster.cfg.features.min_bars
    stub.Decide(decision_pb2.DecideRequest(instrument="GBPUSD", bars=encode_bars(bars[:need])))
    stub.Decide(decision_pb2.DecideRequest(instrument="GBPUSD", bar=bar_message(bars, need)))
    late = bar_message(bars, need + 1)
    late.time_ms += 2 * 3_600_000
    broken = bar_message(bars, need + 1)
    broken.high = broken.low / 2
    cases = [
        (bar_message(bars, need), "GBPUSD", "repeats the last bar"),
        (bar_message(bars, need - 5), "GBPUSD", "is before the last bar"),
        (late, "GBPUSD", "more than serving.max_bar_gap_ms"),
        (broken, "GBPUSD", "is below low"),
        (bar_message(bars, need + 1), "NEVER-SEEN", "no history for this instrument here"),
    ]
    for bar, instrument, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.Decide(decision_pb2.DecideRequest(instrument=instrument, bar=bar), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"instrument {instrument}, bar at " in err.value.details() and message in err.value.details()
    reasons = dict(err.value.trailing_metadata())  # the last case: a client can act on it
    assert reasons["x-tactical-error-reason"] == "NO_HISTORY"
    with pytest.raises(grpc.RpcError) as err:
        stub.Decide(decision_pb2.DecideRequest(instrument="has space", window=encode_window(random_window(1))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid name" in err.value.details()


def test_a_batch_answers_each_instrument_as_a_single_call_and_refuses_only_bad_items(cluster, stub):
    windows = [random_window(100 + i) for i in range(60)]
    items = [decision_pb2.DecideRequest(instrument=f"SYM{i}", window=encode_window(w)) for i, w in enumerate(windows)]
    items[7] = decision_pb2.DecideRequest(instrument="SYM7", window=encode_window(windows[7][:50]))
    response = stub.DecideBatch(decision_pb2.DecideBatchRequest(items=items))
    assert [d.instrument for d in response.decisions] == [f"SYM{i}" for i in range(60)]
    assert response.decisions[7].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    for i in (0, 13, 59):
        single = stub.Decide(items[i])
        assert single.probabilities == response.decisions[i].probabilities and single.action == \
            response.decisions[i].action
    limit = cluster.cfg.serving.max_batch_items
    with pytest.raises(grpc.RpcError) as err:
        stub.DecideBatch(decision_pb2.DecideBatchRequest(items=[items[0]] * (limit + 1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_batch_items" in err.value.details()


def test_the_engine_and_the_cluster_answer_the_same_decision(cluster):
    engine = Engine.load(cluster.cfg.paths.model_store, version=1, config=cluster.cfg_path)
    bars = synthetic_bars(300, seed=23)
    with Client(cluster.coordinator.address, config=cluster.cfg_path) as client:
        for d_engine, d_cluster in [
            (engine.decide(random_window(5), instrument="X"), client.decide(random_window(5), instrument="X")),
            (engine.decide(bars=bars, instrument="Y"), client.decide(bars=bars, instrument="Y")),
        ]:
            assert isinstance(d_engine, Decision) and isinstance(d_cluster, Decision)
            assert (d_engine.action, d_engine.version, d_engine.instrument, d_engine.bar_time, d_engine.reason) == \
                (d_cluster.action, d_cluster.version, d_cluster.instrument, d_cluster.bar_time, d_cluster.reason)
            assert d_engine.probabilities == d_cluster.probabilities
            assert [(v.agent, v.action, v.probabilities) for v in d_engine.votes] == \
                [(v.agent, v.action, v.probabilities) for v in d_cluster.votes]
        assert isinstance(d_cluster.action, Action) and d_cluster.bar_time.timestamp() * 1000 == bars.time[-1]
        many = engine.decide_windows(np.stack([random_window(i) for i in range(5)]))
        assert [d.probabilities for d in many] == [d.probabilities for d in client.decide_windows(
            np.stack([random_window(i) for i in range(5)]))]
        with pytest.raises(DecisionRefused) as refused:
            client.decide(random_window(1)[:30])
        assert refused.value.code == "INVALID_ARGUMENT"
        with pytest.raises(DecisionRefused):
            engine.decide(random_window(1)[:30])


def test_streams_resend_the_history_when_the_coordinator_forgot_it(cluster):
    cfg = load_config(cluster.cfg_path)
    need = cfg.features.min_bars
    bars = synthetic_bars(need + 40, seed=24)
    engine = Engine.load(cfg.paths.model_store, version=1, config=cluster.cfg_path)
    with Client(cluster.coordinator.address, config=cluster.cfg_path) as client, \
            client.stream("AAPL", bars[:need]) as stream, engine.stream("AAPL", bars[:need]) as local:
        assert stream.first.probabilities == local.first.probabilities
        for t in range(need, need + 10):
            assert stream.send(bars.bar(t)).probabilities == local.send(bars.bar(t)).probabilities
        # the coordinator keeps 4 instruments here: 4 others make it forget AAPL
        others = {f"FILL{i}": synthetic_bars(need, seed=i) for i in range(4)}
        assert all(isinstance(d, Decision) for d in client.decide_many(others).values())
        with grpc.insecure_channel(cluster.coordinator.address) as channel, pytest.raises(grpc.RpcError) as err:
            decision_pb2_grpc.DecisionServiceStub(channel).Decide(
                decision_pb2.DecideRequest(instrument="AAPL", bar=bar_message(bars, need + 10)))
        assert "no history" in err.value.details()
        for t in range(need + 10, need + 20):  # the stream sends AAPL's history again by itself
            assert stream.send(bars.bar(t)).probabilities == local.send(bars.bar(t)).probabilities
        # a restarted coordinator keeps nothing: the broken stream is reopened and the history sent again
        cluster.coordinator.proc.kill()
        wait_for(lambda: serving(client), timeout=60)
        for t in range(need + 20, need + 30):
            assert stream.send(bars.bar(t)).probabilities == local.send(bars.bar(t)).probabilities
        # decide_many keeps histories too: after the restart FILL0's next bar is decided after its history
        nxt = synthetic_bars(need + 1, seed=0)
        answer = client.decide_many({"FILL0": nxt.bar(need)})["FILL0"]
        assert isinstance(answer, Decision), answer
        refused = client.decide_many({"UNKNOWN": nxt.bar(need)})["UNKNOWN"]
        assert isinstance(refused, Refusal) and refused.reason == "NO_HISTORY"


def test_the_async_client_answers_as_the_sync_one(cluster):
    bars = synthetic_bars(cluster.cfg.features.min_bars + 5, seed=25)
    need = cluster.cfg.features.min_bars

    async def run():
        async with AsyncClient(cluster.coordinator.address, config=cluster.cfg_path) as client:
            one = await client.decide(random_window(9), instrument="ASYNC")
            many = await client.decide_many({"A1": random_window(1), "A2": bars})
            async with await client.stream("ASYNC-S", bars[:need], backtest=True) as stream:
                ticks = [await stream.send(bars.bar(t)) for t in range(need, need + 5)]
            return one, many, ticks

    one, many, ticks = asyncio.run(run())
    with Client(cluster.coordinator.address, config=cluster.cfg_path) as client:
        assert client.decide(random_window(9), instrument="ASYNC").probabilities == one.probabilities
        assert client.decide(random_window(1)).probabilities == many["A1"].probabilities
    assert many["A2"].bar_time is not None and len(ticks) == 5 and all(isinstance(t, Decision) for t in ticks)
    with Client(cluster.coordinator.address, config=cluster.cfg_path) as client:  # the stream was a backtest's
        wait_for(lambda: client.status().audit_waiting == 0, timeout=30)
    with sqlite3.connect(cluster.cfg.paths.audit_log) as db:
        marked = dict(db.execute("SELECT instrument, MIN(backtest) * 10 + MAX(backtest) FROM decisions "
                                 "WHERE instrument IN ('ASYNC', 'ASYNC-S') GROUP BY instrument").fetchall())
    assert marked == {"ASYNC": 0, "ASYNC-S": 11}
