"""Helpers for tests that run the real cluster: configs on free ports under tmp, start and stop."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import torch

from agents.serving.model_store import ModelStore
from market.bars import Bars
from tactical.config import load_config
from tactical_engine.launcher import LocalCluster, write_isolated_config
from training.system import TacticalMARLSystem
from training.versions import ensure_default_version, publish

# Tests whose point is not the deadline must not fail because a shared 2-core machine stalled a vote
# past the packaged 50 ms: they run with this one; a test about deadlines sets its own.
TEST_DEADLINE_MS = 1000.0


def write_config(tmp: Path, **sections) -> Path:
    """A config file with every port 0 (free ports), every path under `tmp` and a patient deadline."""
    sections["serving"] = {"deadline_ms": TEST_DEADLINE_MS, **sections.get("serving", {})}
    return write_isolated_config(tmp, **sections)


def opinionated_model(seed: int) -> TacticalMARLSystem:
    """A model whose agents hold clear, different opinions (so votes and versions are distinguishable)."""
    torch.manual_seed(seed)
    model = TacticalMARLSystem().eval()
    with torch.no_grad():
        for actor in model.actors.values():
            actor.policy_head.weight.normal_(0, 0.3)
            actor.policy_head.bias.normal_(0, 1.0)
    return model


def always(model: TacticalMARLSystem, favoured: int) -> TacticalMARLSystem:
    """Every actor votes `favoured` (0 Short, 2 Long) whatever the window: a policy whose P&L is easy to know."""
    with torch.no_grad():
        for actor in model.actors.values():
            actor.policy_head.weight.zero_()
            actor.policy_head.bias.copy_(torch.tensor([-5.0, -5.0, -5.0]))
            actor.policy_head.bias[favoured] = 5.0
    return model.eval()


def trending_bars(n: int, drift: float, seed: int = 0) -> Bars:
    """One-minute bars of a market that moves `drift` (log) a bar with a little noise: up if positive."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, abs(drift) * 0.4, n)))
    opens = np.concatenate(([close[0]], close[:-1]))
    return Bars.from_arrays(1_704_067_200_000 + 60_000 * np.arange(n), opens, np.maximum(opens, close) * 1.0001,
                            np.minimum(opens, close) * 0.9999, close, 1000 + rng.integers(0, 100, n))


def prepare_store(tmp: Path, config_path: Path, trained_versions: int = 1) -> ModelStore:
    """Version 0 (default) plus `trained_versions` opinionated versions."""
    cfg = load_config(config_path)
    ensure_default_version(cfg.paths.model_store, cfg)
    store = ModelStore(cfg.paths.model_store)
    for i in range(trained_versions):
        publish(store, opinionated_model(100 + i), source="test")
    return store


@contextlib.contextmanager
def running_cluster(config_path: Path, *, restart: bool = True, supervise: bool = False, log_dir: Path | None = None,
                    child_options: tuple[str, ...] = (), coordinators: int = 1):
    """A started LocalCluster, stopped at the end; with `supervise`, a thread restarts dead children;
    with `log_dir`, each process logs to a file there instead of the test's stderr."""
    cluster = LocalCluster(load_config(config_path), str(config_path), restart=restart, log_dir=log_dir,
                           child_options=child_options, coordinators=coordinators)
    cluster.start()
    stop = threading.Event()
    events: list[str] = []

    def loop():
        while not stop.is_set():
            events.extend(cluster.supervise_once())
            time.sleep(0.05)

    thread = threading.Thread(target=loop, daemon=True) if supervise else None
    if thread:
        thread.start()
    cluster.events = events
    try:
        yield cluster
    finally:
        stop.set()
        if thread:
            thread.join()
        cluster.stop()


def reserved_port() -> int:
    """A free port below the kernel's ephemeral range, so no outgoing connection can take it before use."""
    import random
    import socket

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randint(20_000, low - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port found")


def random_window(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(60, 7)).astype(np.float32)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
