"""The local cluster: three agent processes and one or more coordinators on this machine, supervised.

Each agent is pinned to a core (round-robin over the cores this process may use when the
config says -1). Several coordinators share the coordinator port (SO_REUSEPORT: the kernel
spreads connections over them), the agents, the state directory and the audit log; each is
also reached alone at its own local socket, which is how the launcher checks each one's health.
Children run in their own session, so Ctrl-C reaches only the launcher, which then stops them
in order: the coordinators first (NOT_SERVING, drain, flush the audit log), then the agents. A
child that dies is restarted on the same port. Children get $TACTICAL_LAUNCHER_PID and ask the
kernel to stop them if the launcher itself is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tactical.config import AGENT_NAMES, Config
from tactical.errors import UserError
from tactical.process import CLUSTER_ENV, LAUNCHER_PID_ENV, started_with
from tactical.rpc import own_address, sync_channel
from tactical_engine.client import health_status

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class LaunchError(UserError, RuntimeError):
    """The cluster could not be started; the message names the process and why."""


def tactical_command(*args: str) -> list[str]:
    """argv that runs `tactical ARGS` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "tactical_engine", *args]


def ensure_model_store(model_store: str | Path, config_path: str | None) -> None:
    """Give an empty model store version 0 (the seeded default), in a child process: torch stays out of ours."""
    from agents.serving.model_store import ModelStore

    if ModelStore(model_store).versions():
        return
    argv = [sys.executable, "-m", "training.versions", "--ensure-default", str(model_store)]
    if config_path:
        argv += ["--config", str(config_path)]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise LaunchError(f"could not write the default model version into {model_store}: "
                          f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'unknown error'}")


def write_isolated_config(directory: str | Path, **sections: dict) -> Path:
    """A config file under `directory` whose ports are all free (0) and whose paths all live there.

    For clusters that must not meet another one: tests, benchmarks, a second cluster beside the
    first. `sections` are merged in (e.g. synthetic={"bars": 3000}).
    """
    import yaml

    directory = Path(directory)
    data: dict = {
        "serving": {"coordinator_port": 0, "metrics_port": 0,
                    "agents": {name: {"port": 0, "metrics_port": 0} for name in AGENT_NAMES}},
        "paths": {key: str(directory / name) for key, name in {
            "model_store": "models", "agent_store": "agents", "coordinator_state": "coordinator",
            "audit_log": "audit.sqlite", "audit_spill": "audit-spill", "admin_token_file": "admin.token",
            "study_storage": "optuna.sqlite", "metrics": "metrics.jsonl", "logs": "logs"}.items()},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def coordinator_metrics_ports(cfg: Config, count: int) -> list[int]:
    """Each coordinator's Prometheus port: serving.metrics_port, then the next ports up that no other endpoint of
    the config takes (9150, 9154, 9155, ... with the packaged ports); all 0 (none) when it is 0."""
    first = cfg.serving.metrics_port
    if not first:
        return [0] * count
    taken = {cfg.serving.coordinator_port} | {a.port for a in cfg.serving.agents.values()} | {
        a.metrics_port for a in cfg.serving.agents.values()}
    ports, candidate = [first], first + 1
    while len(ports) < count:
        if candidate > 65535:
            raise LaunchError(f"no metrics ports left above serving.metrics_port {first} for {count} coordinators")
        if candidate not in taken:
            ports.append(candidate)
        candidate += 1
    return ports


def require_free_ports(host: str, ports: list[tuple[int, str]]) -> None:
    """Refuse to start while another process holds one of the (port, whose) listed, naming every one held: before
    anything is spawned (a server that fails to bind only says so in gRPC's log), and before coordinators bind with
    SO_REUSEPORT, which would join that process (another cluster's coordinators) instead of failing."""
    held = []
    for port, whose in ports:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no holder
            try:
                probe.bind(address)
            except OSError as exc:
                held.append(f"{port} ({whose}: {exc.strerror})")
    if held:
        raise LaunchError(f"cannot listen on {host}: port{'s' * (len(held) > 1)} {', '.join(held)}; is another "
                          f"cluster running (`tactical health`)? Stop it, or set other ports in the config")


def assign_cores(cfg: Config) -> dict[str, int]:
    """Each agent's core: the configured one, else round-robin over the cores available here."""
    available = sorted(os.sched_getaffinity(0))
    cores, i = {}, 0
    for name in AGENT_NAMES:
        configured = cfg.serving.agents[name].core
        if configured >= 0:
            cores[name] = configured
        else:
            cores[name] = available[i % len(available)]
            i += 1
    return cores


@dataclass
class Child:
    """One supervised server process; `command` is its argv without `--port`."""

    name: str
    command: list[str]
    port: int
    address: str = ""
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_restart: float = 0.0
    backoff: float = 0.1
    history: list[float] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # set over the launcher's environment
    log: Path | None = None  # where its stderr (its log) goes, appended; None: the launcher's stderr
    metrics: str | None = None  # where its Prometheus endpoint listens, as it announced
    shares_port: bool = False  # started with --reuse-port, beside others on the same port

    @property
    def own_address(self) -> str:
        """Where this process alone is reached: its address, or its own local socket when it shares the port."""
        return own_address(self.port, self.proc.pid) if self.shares_port else self.address

    def spawn(self) -> None:
        env = {**os.environ, **self.env, LAUNCHER_PID_ENV: str(os.getpid())}
        log = open(self.log, "ab") if self.log is not None else None  # noqa: SIM115 (the child holds it)
        try:
            self.proc = subprocess.Popen([*self.command, "--port", str(self.port)], stdout=subprocess.PIPE,
                                         stderr=log, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                         env=env)
        finally:
            if log is not None:
                log.close()

    def wait_listening(self, timeout: float = READY_TIMEOUT_S) -> str:
        """Read the child's {"listening": ...} line; return its address."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=0.2):
                    line = self.proc.stdout.readline()
                    if line:
                        try:
                            announced = json.loads(line)
                            self.address, self.metrics = announced["listening"], announced.get("metrics")
                        except (ValueError, KeyError, TypeError):
                            continue
                        self.port = int(self.address.rsplit(":", 1)[1])
                        return self.address
                if self.proc.poll() is not None:
                    raise LaunchError(f"{self.name} exited with code {self.proc.returncode} before listening "
                                      f"(see its log above)")
        raise LaunchError(f"{self.name} did not start listening within {timeout:.0f} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ask_to_stop(self) -> None:
        """SIGTERM, once: a second one could land after the server removed its handler, and kill it."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self.ask_to_stop()
        self.wait_stopped(timeout)


class LocalCluster:
    def __init__(self, cfg: Config, config_path: str | None, *, restart: bool = True, log_dir: Path | None = None,
                 child_options: Sequence[str] = (), coordinators: int = 1):
        """`log_dir`: each process logs to <log_dir>/<name>.log instead of this process's stderr.
        `child_options`: options every server process gets (e.g. --log-format json). `coordinators`: how many
        coordinator processes share the coordinator port."""
        if coordinators < 1:
            raise ValueError(f"a cluster needs at least one coordinator, got {coordinators}")
        self.cfg = cfg
        self.log_dir = log_dir
        self.config_path = config_path
        self.restart = restart
        self.host = cfg.serving.host
        common = (["--config", config_path] if config_path else []) + list(child_options)
        self.cores = assign_cores(cfg)
        self.instance = os.urandom(6).hex()  # marks every process this cluster starts, and theirs
        self.agents = [Child(f"agent {name}", tactical_command("agent", "--name", name, "--core",
                                                               str(self.cores[name]), "--host", self.host, *common),
                             cfg.serving.agents[name].port, log=self._log(f"agent-{name}"),
                             env={CLUSTER_ENV: self.instance})
                       for name in AGENT_NAMES]
        self.coordinator_count = coordinators
        self.coordinators: list[Child] = []
        self._common = common

    def _log(self, name: str) -> Path | None:
        if self.log_dir is None:
            return None
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        return Path(self.log_dir) / f"{name}.log"

    @property
    def coordinator(self) -> Child | None:
        """The first coordinator; with several, the others share its address (the one clients use)."""
        return self.coordinators[0] if self.coordinators else None

    @property
    def children(self) -> list[Child]:
        return self.agents + self.coordinators

    def start(self, ready_timeout: float = READY_TIMEOUT_S, progress: Callable[[str], None] | None = None) -> None:
        """Start everything and wait until every process reports SERVING; `progress` hears each phase."""
        say = progress or (lambda text: None)
        require_free_ports(self.host, [(child.port, child.name) for child in self.agents if child.port] + (
            [(self.cfg.serving.coordinator_port, "coordinator")] if self.cfg.serving.coordinator_port else []))
        ensure_model_store(self.cfg.paths.model_store, self.config_path)
        try:
            for child in self.agents:
                child.spawn()
            say("agents started (pids " + ", ".join(str(child.proc.pid) for child in self.agents) + "), loading models")
            for child in self.agents:
                child.wait_listening(ready_timeout)
                say(f"{child.name} listening on {child.address}")
            self.coordinators = self._coordinators()
            first, *others = self.coordinators
            first.spawn()
            first.wait_listening(ready_timeout)  # with port 0 it picks the port the others share
            for child in others:
                child.port = first.port
                child.spawn()
            for child in others:
                child.wait_listening(ready_timeout)
            say(f"{'coordinator' if not others else f'{len(self.coordinators)} coordinators'} listening on "
                f"{first.address}; waiting until every process is SERVING")
            self.wait_serving(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _coordinators(self) -> list[Child]:
        """The coordinator processes to start: one, or several sharing the port (--reuse-port), each with its own
        metrics port."""
        agents = ",".join(f"{name}={child.address}" for name, child in zip(AGENT_NAMES, self.agents, strict=True))
        count = self.coordinator_count
        names = ["coordinator"] if count == 1 else [f"coordinator {i}" for i in range(1, count + 1)]
        return [Child(name, tactical_command("coordinator", "--host", self.host, "--agents", agents, "--metrics-port",
                                             str(metrics), *(["--reuse-port"] if count > 1 else []), *self._common),
                      self.cfg.serving.coordinator_port, log=self._log(name.replace(" ", "-")), shares_port=count > 1,
                      env={CLUSTER_ENV: self.instance})
                for name, metrics in zip(names, coordinator_metrics_ports(self.cfg, count), strict=True)]

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self.children:
            with sync_channel(child.own_address, self.cfg.serving) as channel:
                while (status := health_status(channel, 1.0)) != "SERVING":
                    if not child.alive():
                        raise LaunchError(f"{child.name} exited with code {child.proc.returncode}")
                    if time.monotonic() > deadline:
                        raise LaunchError(f"{child.name} at {child.own_address} is {status} after {timeout:.0f} s"
                                          + (f": {self._coordinator_view(child)}" if child in self.coordinators
                                             else ""))
                    time.sleep(0.1)

    def _coordinator_view(self, coordinator: Child) -> str:
        """Why a coordinator does not serve, as it sees it: the active version and what each agent has."""
        from tactical_engine.client import TacticalClient, active_version_text

        try:
            with TacticalClient(coordinator.own_address, self.cfg, timeout=2) as client:
                s = client.status()
        except Exception as exc:  # the explanation is best effort; the error it decorates is what matters
            return f"(no status: {exc})"
        agents = "; ".join(
            f"{a.agent} " + (f"has {sorted(set(a.info.loaded_versions) | set(a.info.stored_versions))}"
                             if a.connected and a.HasField("info") else f"unreachable ({a.error})")
            for a in s.agents)
        return f"active version {active_version_text(s)}; {agents}"

    def supervise_once(self) -> list[str]:
        """Restart children that died (with backoff); return what happened."""
        events = []
        now = time.monotonic()
        for child in self.children:
            if child.alive() or not self.restart:
                continue
            if child.next_restart == 0.0:
                code = child.proc.returncode if child.proc else None
                child.history = [t for t in child.history if now - t < 60] + [now]
                child.backoff = 0.1 * 2 ** min(len(child.history) - 1, 6)  # 0.1 s, then up to 6.4 s when crash-looping
                child.next_restart = now + child.backoff
                events.append(f"{child.name} exited (code {code}); restarting in {child.backoff:.1f} s")
            elif now >= child.next_restart:
                child.spawn()
                try:
                    child.wait_listening()
                    child.restarts += 1
                    alone = f", alone at {child.own_address}" if child.shares_port else ""
                    events.append(f"{child.name} restarted on {child.address}{alone} (restart {child.restarts})")
                except LaunchError as exc:
                    events.append(f"{child.name} failed to restart: {exc}")
                child.next_restart = 0.0
        return events

    def stop(self) -> None:
        """Coordinators first (they drain and flush), then the agents."""
        for child in self.coordinators:
            child.ask_to_stop()
        for child in self.coordinators:
            child.wait_stopped()
        for child in self.agents:
            child.ask_to_stop()
        for child in self.agents:
            child.wait_stopped()
        for child in self.children:
            if child.proc is not None and child.proc.stdout is not None:
                child.proc.stdout.close()
        self._stop_strays()

    def _stop_strays(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop what this cluster started that no child accounts for: a process whose start a stop signal
        interrupted (its Popen never returned), a coordinator's audit writer when the coordinator was stopped
        before it could stop it. SIGTERM, then SIGKILL after `timeout`."""
        strays = started_with(CLUSTER_ENV, self.instance)
        if not strays:
            return
        log.warning("stopping %d process(es) of this cluster that outlived their parent: pids %s", len(strays),
                    strays)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while (strays := started_with(CLUSTER_ENV, self.instance)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not strays:
                return
