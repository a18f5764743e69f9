"""A multi-host test bed made of Linux network namespaces, for tests and benchmarks of real clusters.

Why: several machines are what the product is built for, and one CI machine is what we have.
Each "host" is a network namespace whose only interface (besides lo) is one end of a veth pair;
the other ends are ports of a bridge that lives in a namespace of its own. Nothing connects the
bed to the root namespace or to any uplink, the hosts have no default route and no NAT, so no
packet can leave the bed: `Bed.verify_isolation()` checks that before anything is sent. Every
process of the bed (servers, relays, clients, trainers) is started inside its host's namespace
with `ip netns exec`, in its own working directory (the host's "disk").

Pieces:

- `Bed`: namespaces with a per-run prefix (`tnb-<pid>-<token>-`), so parallel runs never meet;
  namespaces of our prefix whose creating process is gone are swept first. Context manager;
  `close()` stops every process and removes every namespace even when a test failed.
  `bed_fixture()` wraps it as a pytest fixture that skips, with the reason, where namespaces
  cannot be made (not root, no `ip`, `ip netns add` refused, no veth/bridge support).
- Link faults: `Bed.link_down/link_up` (the host's switch port), and `Relay`: a delaying TCP
  relay run inside a host's namespace (the kernels here lack `tc netem`), delaying every chunk
  by a set number of ms in each direction, in order, changeable at run time through a control file.
- Certificates for mutual TLS, one per host, whose SANs name the host's bed address.
- `start_cluster()`: agents, a relay, two coordinators and the initial rollout, all over mTLS.
- Programs run inside namespaces (`python netbed.py SUBCOMMAND`): `relay`, `stream` (a decision
  stream client writing one JSON line per decision), `probe` (health, reflection, TLS refusals),
  `watch` (the coordinator's view of its agents over time).

Our processes are driven through their console scripts (`tactical`, `torchrun` beside the
interpreter) and spoken to with the generated stubs `tactical.v1.*`; the few places that need our
Python modules (writing model versions, recomputing votes, the torchrun rank program) are in ONE
section below, "Our own Python modules", so a change of package layout is fixed there alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

PREFIX = "tnb-"                    # every namespace of every bed starts with this
NETNS_DIR = Path("/run/netns")
BRIDGE = "br0"
HOST_IF = "eth0"                   # the one interface of every host besides lo
SUBNETS = [f"10.{b}.0.0/24" for b in range(247, 255)]  # private; the first one not used in the root namespace
AGENT_NAMES = ("fvg", "momentum", "entry")  # the order of votes in a Decision (the wire contract)
HOSTS = ("fvg", "momentum", "entry", "coord-a", "coord-b", "client", "train0", "train1")
AGENT_PORT, COORDINATOR_PORT, RELAY_PORT = 50051, 50050, 50061
# Addresses outside the bed that must be unreachable from every host (plus the root namespace's own).
OUTSIDE = ["1.1.1.1", "8.8.8.8", "192.0.2.1"]
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "no_proxy")
_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
IPV6_OFF = "for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do [ -e $f ] && echo 1 > $f; done; true"

HERE = Path(__file__).resolve()
BIN = Path(sys.executable).parent


def tactical_bin() -> str:
    """The `tactical` console script beside this interpreter."""
    return str(BIN / "tactical")


def torchrun_bin() -> str:
    """The `torchrun` console script beside this interpreter (torch's own)."""
    return str(BIN / "torchrun")


class BedUnavailable(RuntimeError):
    """Namespaces cannot be made here; the message says why (a test skips with it)."""


class IsolationError(AssertionError):
    """The bed is not sealed: a host could reach outside. Never a skip: the bed must not be used."""


# --------------------------------------------------------------------------------------------
# Low level: ip commands, processes, namespaces
# --------------------------------------------------------------------------------------------

def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, **kw: Any) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check=check)


def _ns_pids(ns: str) -> list[int]:
    res = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def _start_time(pid: int) -> float | None:
    """When process `pid` started (Unix seconds), None if there is none (or it is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime"))
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _kill_namespace_processes(ns: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process left in namespace `ns` (all started by a bed: the namespace is ours)."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in _ns_pids(ns) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)
    return killed


def _delete_namespace(ns: str) -> str | None:
    """Kill what runs in it, delete it; a problem as text, None when it is gone."""
    if not (NETNS_DIR / ns).exists():
        return None
    _kill_namespace_processes(ns)
    res = _ip("netns", "del", ns, check=False)
    if (NETNS_DIR / ns).exists():
        return f"namespace {ns} could not be deleted: {res.stderr.strip()}"
    return None


def sweep_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces of `prefix` whose creator (the pid in the name) is gone; return their names.

    A pid in use again by a process that started after the namespace was made is not the creator.
    """
    if not NETNS_DIR.is_dir():
        return []
    swept = []
    for ns in sorted(os.listdir(NETNS_DIR)):
        m = re.match(re.escape(prefix) + r"(\d+)-", ns)
        if not m:
            continue
        try:
            created = (NETNS_DIR / ns).stat().st_mtime
        except FileNotFoundError:
            continue
        started = _start_time(int(m.group(1)))
        if started is not None and started <= created + 2.0:
            continue  # its creator still runs
        if _delete_namespace(ns) is None:
            swept.append(ns)
    return swept


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of bed processes: no proxies (gRPC honours them), nothing of an outer launcher."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in _PROXY_VARS and not k.startswith("TACTICAL_") and k not in _TORCHRUN_VARS}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


def _die_with_parent() -> list[str]:
    """An argv prefix that has the kernel SIGKILL the child when the thread starting it ends (so a
    SIGKILLed test leaves no servers running); only from the main thread, whose end is the process's."""
    if threading.current_thread() is not threading.main_thread() or shutil.which("setpriv") is None:
        return []
    return ["setpriv", "--pdeathsig", "KILL"]


# --------------------------------------------------------------------------------------------
# The bed
# --------------------------------------------------------------------------------------------

@dataclass
class Host:
    """One host of the bed: its namespace, its address on the bridge, its directory."""

    name: str
    ns: str
    ip: str
    dir: Path  # this host's working directory ("its disk")

    @property
    def port_name(self) -> str:
        """Its port on the bridge (in the bridge's namespace)."""
        return f"v-{self.name}"


@dataclass
class BedProcess:
    """A process started inside a host; stdout and stderr go to files under the host's logs/."""

    name: str
    host: Host
    argv: list[str]
    proc: subprocess.Popen
    stdout: Path
    stderr: Path
    address: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 3000) -> str:
        """The end of its stderr and stdout, for failure messages."""
        parts = []
        for path in (self.stderr, self.stdout):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text.strip():
                    parts.append(f"--- {path.name}:\n{text[-tail:]}")
        return "\n".join(parts) or "(no output)"

    def wait_listening(self, timeout: float = 60.0) -> str:
        """The address from the {"listening": ...} line our servers (and the relay) print on stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for line in self.stdout.read_text().splitlines():
                    if '"listening"' in line:
                        with contextlib.suppress(ValueError, KeyError):
                            self.address = json.loads(line)["listening"]
                            return self.address
            if not self.alive():
                raise RuntimeError(f"{self.name} on {self.host.name} exited ({self.proc.returncode}) before "
                                   f"listening:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} on {self.host.name} did not listen within {timeout:g} s:\n{self.output()}")

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """`sig` (SIGTERM: our servers drain and flush), then SIGKILL after `timeout`; the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def netns_inode(self) -> int:
        """The inode of the network namespace it runs in (compare with Bed.ns_inode)."""
        return os.stat(f"/proc/{self.pid}/ns/net").st_ino


@dataclass
class HostIsolation:
    """What one host looked like when checked: its interfaces, addresses, default routes, and how
    its attempts to reach outside failed."""

    links: list[str]
    addresses: list[str]
    default_routes: list[str]
    outside: dict[str, dict[str, str]]  # address -> {"tcp": how it failed, "udp": ...}; only ENETUNREACH is right


@dataclass
class IsolationReport:
    """The whole bed as checked; `problems()` lists every breach (empty: sealed)."""

    hosts: dict[str, HostIsolation]
    bridge_links: list[str]
    bridge_addresses: list[str]
    root_addresses_in_bed: list[str]
    expected_links: dict[str, list[str]]

    def problems(self) -> list[str]:
        out = []
        for name, h in self.hosts.items():
            if sorted(h.links) != sorted(self.expected_links[name]):
                out.append(f"{name}: interfaces {h.links}, expected only {self.expected_links[name]}")
            if h.default_routes:
                out.append(f"{name}: default route(s) {h.default_routes}")
            for addr, how in h.outside.items():
                if set(how.values()) != {"ENETUNREACH"}:
                    out.append(f"{name}: a packet to {addr} outside the bed was not refused for lack of a route "
                               f"({how})")
        if sorted(self.bridge_links) != sorted(self.expected_links["(bridge)"]):
            out.append(f"bridge namespace: interfaces {self.bridge_links}, expected {self.expected_links['(bridge)']}")
        if self.bridge_addresses:
            out.append(f"bridge namespace holds addresses {self.bridge_addresses}")
        if self.root_addresses_in_bed:
            out.append(f"the root namespace holds bed addresses {self.root_addresses_in_bed}")
        return out


class Bed:
    """Hosts as network namespaces on one bridge of their own. Use as a context manager:

        with Bed(["a", "b"], tmp_path) as bed:     # sealed and checked; certificates in a/tls, b/tls
            a = bed.host("a").ip
            server = bed.start("a", "web", [sys.executable, "-m", "http.server", "--bind", a])
            bed.run("b", [sys.executable, "-c", f"import socket; socket.create_connection(('{a}', 8000))"])
            with bed.partitioned("a"):             # a's switch port down for the block
                ...
    """

    def __init__(self, hosts: Sequence[str], root: str | Path, *, tls: bool = True):
        for name in hosts:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,12}", name) or name == "sw":
                raise ValueError(f"host name {name!r}: 1-13 of a-z, 0-9, '-' (it names a network interface), "
                                 f"not 'sw' (the bridge's namespace)")
        if len(set(hosts)) != len(hosts):
            raise ValueError(f"host names repeat: {list(hosts)}")
        self.names = list(hosts)
        self.root = Path(root)
        self.tls = tls
        self.run_id = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        self.bridge_ns = f"{self.run_id}-sw"
        self.hosts: dict[str, Host] = {}
        self.subnet = ""
        self.token = secrets.token_urlsafe(18)  # the admin token of the bed's clusters
        self.processes: list[BedProcess] = []
        self.swept: list[str] = []
        self.isolation: IsolationReport | None = None
        self._made: list[str] = []  # namespaces to delete, in creation order
        self._previous_sigterm: Any = None
        self._closed = False

    # -- building ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        """Sweep stale beds, make the bridge and the hosts, check isolation. BedUnavailable if impossible."""
        if os.geteuid() != 0:
            raise BedUnavailable(f"network namespaces need root (CI runs as root); running as uid {os.geteuid()}")
        if shutil.which("ip") is None:
            raise BedUnavailable("the `ip` command (iproute2) is not installed")
        self.swept = sweep_stale()
        self._install_sigterm()
        try:
            self.subnet = self._free_subnet()
            net = ipaddress.ip_network(self.subnet)
            self._add_namespace(self.bridge_ns, first=True)
            self._need(_ip("-n", self.bridge_ns, "link", "add", BRIDGE, "type", "bridge", check=False),
                       "cannot make a bridge (no bridge support in this kernel?)")
            _ip("-n", self.bridge_ns, "link", "set", BRIDGE, "up")
            for i, name in enumerate(self.names):
                host = Host(name, f"{self.run_id}-{name}", str(net.network_address + 11 + i), self.root / name)
                host.dir.mkdir(parents=True, exist_ok=True)
                (host.dir / "logs").mkdir(exist_ok=True)
                self._add_namespace(host.ns)
                self.hosts[name] = host
                self._need(_ip("link", "add", HOST_IF, "netns", host.ns, "type", "veth", "peer", "name",
                               host.port_name, "netns", self.bridge_ns, check=False),
                           "cannot make a veth pair (no veth support in this kernel?)")
                _ip("-n", self.bridge_ns, "link", "set", host.port_name, "master", BRIDGE)
                _ip("-n", self.bridge_ns, "link", "set", host.port_name, "up")
                _ip("-n", host.ns, "addr", "add", f"{host.ip}/{net.prefixlen}", "dev", HOST_IF)
                _ip("-n", host.ns, "link", "set", "lo", "up")
                _ip("-n", host.ns, "link", "set", HOST_IF, "up")
            if self.tls:
                make_certificates(self)
            self.isolation = self.verify_isolation()
        except BaseException:
            self.close()
            raise

    def _need(self, res: subprocess.CompletedProcess, why: str) -> None:
        if res.returncode != 0:
            raise BedUnavailable(f"{why}: {res.stderr.strip()}")

    def _add_namespace(self, ns: str, first: bool = False) -> None:
        res = _ip("netns", "add", ns, check=False)
        if res.returncode != 0:
            raise BedUnavailable(f"`ip netns add` failed: {res.stderr.strip()}") if first else \
                RuntimeError(f"ip netns add {ns}: {res.stderr.strip()}")
        self._made.append(ns)
        # No IPv6 in the bed (before any interface exists): no link-local chatter, one IPv4 address per host.
        res = _run(["ip", "netns", "exec", ns, "sh", "-c", IPV6_OFF], check=False)
        if res.returncode != 0:
            raise BedUnavailable(f"`ip netns exec` failed: {res.stderr.strip()}") if first else \
                RuntimeError(f"ip netns exec {ns}: {res.stderr.strip()}")

    def _free_subnet(self) -> str:
        used = [ipaddress.ip_interface(a) for a in _root_addresses()]
        for subnet in SUBNETS:
            net = ipaddress.ip_network(subnet)
            if not any(a.ip in net or net.overlaps(a.network) for a in used):
                return subnet
        raise BedUnavailable(f"every candidate subnet {SUBNETS} is in use in the root namespace")

    def _install_sigterm(self) -> None:
        """While the bed exists, a SIGTERM (a CI timeout) acts as Ctrl-C: the stack unwinds (pytest
        stops and tears its fixtures down), so close() still runs."""
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            def on_term(signum: int, frame: object) -> None:
                raise KeyboardInterrupt(f"SIGTERM: the network bed {self.run_id} is being removed")

            self._previous_sigterm = signal.signal(signal.SIGTERM, on_term)

    # -- tearing down ------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop every process (newest first, SIGTERM then SIGKILL), delete every namespace.

        Returns what could not be removed (empty when all is gone); never raises."""
        if self._closed:
            return []
        self._closed = True
        problems: list[str] = []
        for p in reversed(self.processes):
            try:
                p.stop(timeout=8.0)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # keep going: the rest must go
                problems.append(f"stopping {p.name}: {exc}")
        for ns in reversed(self._made):
            try:
                problem = _delete_namespace(ns)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                problem = f"deleting {ns}: {exc}"
            if problem:
                problems.append(problem)
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)
        return problems

    def leftovers(self) -> list[str]:
        """Namespaces of this bed that still exist (should be none after close())."""
        return [ns for ns in self._made if (NETNS_DIR / ns).exists()]

    # -- using -------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def ns_inode(self, name: str) -> int:
        return (NETNS_DIR / self.hosts[name].ns).stat().st_ino

    def run(self, host: str, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
            env: dict[str, str] | None = None, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        """Run a command inside `host` (working directory: the host's) and wait for it."""
        h = self.hosts[host]
        res = subprocess.run(["ip", "netns", "exec", h.ns, *argv], check=False, capture_output=True, text=True,
                             timeout=timeout, env=_child_env(env), cwd=cwd or h.dir, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise RuntimeError(f"on {host}: {' '.join(map(str, argv))} exited {res.returncode}:\n"
                               f"{res.stderr[-3000:]}{res.stdout[-2000:]}")
        return res

    def start(self, host: str, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: str | Path | None = None) -> BedProcess:
        """Start a long-running process inside `host`; it is stopped by close() (or its .stop())."""
        h = self.hosts[host]
        out, err = h.dir / "logs" / f"{name}.out", h.dir / "logs" / f"{name}.err"
        with open(out, "w") as fout, open(err, "w") as ferr:
            proc = subprocess.Popen([*_die_with_parent(), "ip", "netns", "exec", h.ns, *argv], stdout=fout,
                                    stderr=ferr, stdin=subprocess.DEVNULL, env=_child_env(env), cwd=cwd or h.dir,
                                    start_new_session=True)
        p = BedProcess(name, h, list(argv), proc, out, err)
        self.processes.append(p)
        return p

    def python(self, host: str, name: str, subcommand: str, *args: str, env: dict[str, str] | None = None
               ) -> BedProcess:
        """Start one of this file's programs (relay, stream, watch...) inside `host`."""
        return self.start(host, name, [sys.executable, str(HERE), subcommand, *args], env=env)

    def link_down(self, host: str) -> None:
        """Partition `host`: its switch port goes down (the host's own configuration is untouched)."""
        _ip("-n", self.bridge_ns, "link", "set", self.hosts[host].port_name, "down")

    def link_up(self, host: str) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self.hosts[host].port_name, "up")

    @contextlib.contextmanager
    def partitioned(self, host: str) -> Iterator[None]:
        """`host` cut off for the duration of the block, and back afterwards whatever happens."""
        self.link_down(host)
        try:
            yield
        finally:
            self.link_up(host)

    def start_relay(self, host: str, listen_port: int, target_port: int, name: str = "relay") -> Relay:
        """A delaying TCP relay inside `host`: host_ip:listen_port -> host_ip:target_port, 0 ms to begin."""
        h = self.hosts[host]
        control = h.dir / f"{name}.delay"
        Relay.write_control(control, 0, 0.0)
        proc = self.python(host, name, "relay", "--listen", f"{h.ip}:{listen_port}",
                           "--target", f"{h.ip}:{target_port}", "--control", str(control))
        proc.wait_listening(30)
        relay = Relay(proc, control)
        relay.wait_applied(0, 0.0)
        return relay

    def verify_isolation(self) -> IsolationReport:
        """Each host: exactly lo + its veth, no default route, outside addresses unreachable.

        The bridge namespace holds only lo, the bridge and the hosts' ports, and no address; the
        root namespace holds no bed address. Raises IsolationError listing every breach."""
        outside = OUTSIDE + [str(ipaddress.ip_interface(a).ip) for a in _root_addresses()] + _root_gateways()
        probes = {name: subprocess.Popen(["ip", "netns", "exec", h.ns, sys.executable, "-I", "-c", _OUTSIDE_PROBE,
                                          *outside], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for name, h in self.hosts.items()}  # all at once: each is a process of its own namespace
        hosts = {}
        for name, h in self.hosts.items():
            stdout, stderr = probes[name].communicate(timeout=30)
            if probes[name].returncode != 0:
                raise RuntimeError(f"the isolation probe failed on {name}: {stderr}")
            addrs = _ip("-n", h.ns, "-o", "addr", "show").stdout
            routes = [r for fam in ("-4", "-6") for r in
                      _ip("-n", h.ns, fam, "route", "show", "default", check=False).stdout.splitlines() if r.strip()]
            hosts[name] = HostIsolation(_link_names(h.ns), re.findall(r"inet6? (\S+)", addrs), routes,
                                        json.loads(stdout))
        bridge_addrs = re.findall(r"inet6? (\S+)", _ip("-n", self.bridge_ns, "-o", "addr", "show").stdout)
        net = ipaddress.ip_network(self.subnet)
        in_root = [a for a in _root_addresses() if ipaddress.ip_interface(a).ip in net]
        expected = {name: ["lo", HOST_IF] for name in self.hosts}
        expected["(bridge)"] = ["lo", BRIDGE] + [h.port_name for h in self.hosts.values()]
        report = IsolationReport(hosts, _link_names(self.bridge_ns), bridge_addrs, in_root, expected)
        for name, h in hosts.items():
            want = f"{self.hosts[name].ip}/{net.prefixlen}"
            if [a for a in h.addresses if not a.startswith("127.")] != [want]:
                raise IsolationError(f"{name}: addresses {h.addresses}, expected only {want} besides loopback")
        if report.problems():
            raise IsolationError("the bed is not sealed:\n" + "\n".join(report.problems()))
        return report

    def processes_outside_the_bed(self) -> list[str]:
        """Started processes (still running) not in their host's namespace: should be none."""
        out = []
        for p in self.processes:
            if p.alive():
                try:
                    inode = p.netns_inode()
                except OSError:
                    continue
                if inode != self.ns_inode(p.host.name):
                    out.append(f"{p.name} (pid {p.pid}) is not in {p.host.ns}")
        return out


def _link_names(ns: str) -> list[str]:
    out = _ip("-n", ns, "-o", "link", "show").stdout
    return [m.split("@")[0] for m in re.findall(r"^\d+: ([^:]+):", out, flags=re.MULTILINE)]


def _root_addresses() -> list[str]:
    """Global IPv4 addresses of the root namespace (with prefix length)."""
    out = _ip("-4", "-o", "addr", "show", "scope", "global", check=False).stdout
    return re.findall(r"inet (\S+)", out)


def _root_gateways() -> list[str]:
    out = _ip("-4", "route", "show", "default", check=False).stdout
    return re.findall(r"via (\S+)", out)


def bed_fixture(hosts: Sequence[str] = HOSTS, scope: str = "module") -> Callable:
    """A pytest fixture yielding an entered Bed under a temporary directory; skips with the reason
    where namespaces cannot be made; fails at teardown if anything of the bed is left."""
    import pytest

    @pytest.fixture(scope=scope)
    def bed(tmp_path_factory: Any) -> Iterator[Bed]:
        b = Bed(hosts, tmp_path_factory.mktemp("netbed"))
        try:
            b.create()
        except BedUnavailable as exc:
            pytest.skip(f"no network-namespace test bed here: {exc}")
        try:
            yield b
        finally:
            problems = b.close()
            assert not problems and not b.leftovers(), (problems, b.leftovers())

    return bed


# --------------------------------------------------------------------------------------------
# Certificates for mutual TLS
# --------------------------------------------------------------------------------------------

def make_certificates(bed: Bed) -> Path:
    """A CA, and per host a key and certificate (SAN: its bed address and name) for both ends.

    Each host's directory gets tls/ca.pem, tls/node.pem, tls/node.key: the bed's config names
    these relative paths, so one config file serves every host, each with its own identity."""
    if shutil.which("openssl") is None:
        raise BedUnavailable("mutual TLS needs the openssl command")
    pki = bed.root / "pki"
    pki.mkdir(exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
          "-subj", f"/CN=netbed CA {bed.run_id}"], cwd=pki)
    for name, h in bed.hosts.items():
        _run(["openssl", "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"], cwd=pki)
        (pki / f"{name}.ext").write_text(f"subjectAltName=IP:{h.ip},DNS:{name},IP:127.0.0.1\n"
                                         "extendedKeyUsage=serverAuth,clientAuth\n")
        _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-set_serial", str(secrets.randbits(63)), "-out", f"{name}.pem", "-days", "2",
              "-extfile", f"{name}.ext"], cwd=pki)
        tls = h.dir / "tls"
        tls.mkdir(exist_ok=True)
        shutil.copy(pki / "ca.pem", tls / "ca.pem")
        shutil.copy(pki / f"{name}.pem", tls / "node.pem")
        shutil.copy(pki / f"{name}.key", tls / "node.key")
        os.chmod(tls / "node.key", 0o600)
    return pki


TLS_FILES = {"tls_ca": "tls/ca.pem", "tls_cert": "tls/node.pem", "tls_key": "tls/node.key"}


# --------------------------------------------------------------------------------------------
# The delaying relay (the kernels here have no netem)
# --------------------------------------------------------------------------------------------

@dataclass
class Relay:
    """Handle on a running relay: `set_delay(ms)` applies to chunks read from then on, both directions."""

    process: BedProcess
    control: Path
    seq: int = 0
    delay_ms: float = 0.0

    @staticmethod
    def write_control(path: Path, seq: int, delay_ms: float) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{seq} {delay_ms}\n")
        os.replace(tmp, path)

    def set_delay(self, delay_ms: float, timeout: float = 10.0) -> None:
        """Set the added delay per direction and wait until the relay confirms it."""
        self.seq += 1
        self.write_control(self.control, self.seq, delay_ms)
        self.wait_applied(self.seq, delay_ms, timeout)
        self.delay_ms = delay_ms

    def wait_applied(self, seq: int, delay_ms: float, timeout: float = 10.0) -> None:
        applied = self.control.with_name(self.control.name + ".applied")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                s, d = applied.read_text().split()
                if int(s) == seq and float(d) == delay_ms:
                    return
            if not self.process.alive():
                raise RuntimeError(f"the relay died:\n{self.process.output()}")
            time.sleep(0.01)
        raise RuntimeError(f"the relay did not apply delay {delay_ms} ms within {timeout:g} s")


async def _relay_main(listen: str, target: str, control: Path) -> None:
    """Forward every connection to `target`, each chunk delayed by the control file's ms, in order."""
    loop = asyncio.get_running_loop()
    state = {"delay": 0.0, "stamp": None}
    applied = control.with_name(control.name + ".applied")

    def read_control() -> None:
        try:
            st = control.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == state["stamp"]:
            return
        try:
            seq, delay = control.read_text().split()
            state["delay"] = max(0.0, float(delay)) / 1000.0
        except (OSError, ValueError):
            return  # half-visible write: read again next time
        state["stamp"] = stamp
        tmp = applied.with_name(applied.name + ".tmp")
        tmp.write_text(f"{seq} {delay}\n")
        os.replace(tmp, applied)

    async def watch_control() -> None:
        while True:
            read_control()
            await asyncio.sleep(0.01)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def receive() -> None:
            while data := await reader.read(1 << 16):
                await queue.put((loop.time() + state["delay"], data))
            await queue.put(None)

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        tasks = [asyncio.ensure_future(receive()), asyncio.ensure_future(deliver())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, port = target.rsplit(":", 1)
        try:
            up_r, up_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(pipe(client_r, up_w), pipe(up_r, client_w))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (client_w, up_w):
                w.close()

    read_control()
    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port))
    print(json.dumps({"listening": listen, "pid": os.getpid()}), flush=True)
    watcher = asyncio.ensure_future(watch_control())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()  # open connections die with the process
    watcher.cancel()


# --------------------------------------------------------------------------------------------
# Programs run inside hosts: the isolation probe, a decision stream, probes of servers
# --------------------------------------------------------------------------------------------

# Run inside each host by verify_isolation (python -I -c: no site, starts in milliseconds): a TCP connect
# and a UDP datagram to each address in argv, printing how each failed. Only ENETUNREACH is right
# (no route at all); a timeout or a refusal would mean a packet left the host.
_OUTSIDE_PROBE = """
import errno, json, socket, sys
def attempt(fn):
    try:
        fn()
        return "sent"
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
def tcp(addr):
    socket.create_connection((addr, 443), timeout=2.0).close()
def udp(addr):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"netbed", (addr, 53))
print(json.dumps({a: {"tcp": attempt(lambda: tcp(a)), "udp": attempt(lambda: udp(a))} for a in sys.argv[1:]}))
"""


def _credentials(tls: str | None):
    import grpc

    if not tls:
        return None
    d = Path(tls)
    return grpc.ssl_channel_credentials((d / "ca.pem").read_bytes(), (d / "node.key").read_bytes(),
                                        (d / "node.pem").read_bytes())


def _channel(target: str, tls: str | None):
    import grpc

    creds = _credentials(tls)
    return grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)


def _stream_main(args: argparse.Namespace) -> None:
    """Closed-loop DecideStream: one JSON line per decision (and per failed call) to --out.

    Stops at --count, after --seconds, or when the --stop file appears. A broken stream is
    recorded as a failure and a new one opened (at most --max-failures times)."""
    import numpy as np

    from tactical.v1 import common_pb2, decision_pb2_grpc

    windows = np.load(args.windows).astype("<f4")
    requests = [common_pb2.Window(data=w.tobytes(), bars=w.shape[0], features=w.shape[1]) for w in windows]
    with open(args.out, "a", buffering=1) as out, _channel(args.target, args.tls) as channel:
        run = _StreamRun(args, requests, out)
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        while not run.stopping() and run.failures <= args.max_failures:
            run.one_stream(stub)
        out.write(json.dumps({"end": True, "sent": run.next, "answered": run.answered,
                              "failures": run.failures}) + "\n")


class _StreamRun:
    """The `stream` program's state: counters, send times, the output file; one DecideStream at a time."""

    def __init__(self, args: argparse.Namespace, requests: list, out: Any):
        self.args, self.requests, self.out = args, requests, out
        self.end = time.monotonic() + args.seconds
        self.next = self.answered = self.failures = 0
        self.sent: dict[int, float] = {}

    def stopping(self) -> bool:
        a = self.args
        return bool((a.count and self.next >= a.count) or time.monotonic() > self.end
                    or (a.stop is not None and os.path.exists(a.stop)))

    def one_stream(self, stub: Any) -> None:
        """Send, wait for the answer, record, repeat, until stopping; a broken stream is a failure."""
        import grpc

        from tactical.v1 import decision_pb2

        args = self.args
        gate, closed = threading.Semaphore(0), threading.Event()
        progress = {"t": time.monotonic(), "waiting": False}

        def requests() -> Iterator:
            while not self.stopping() and not closed.is_set():
                k = self.next
                self.next += 1
                self.sent[k] = time.monotonic()
                progress.update(t=self.sent[k], waiting=True)
                yield decision_pb2.DecideRequest(request_id=f"{args.prefix}{k}",
                                                 window=self.requests[k % len(self.requests)])
                while not gate.acquire(timeout=0.1):
                    if closed.is_set():
                        return
                if args.interval_ms:
                    time.sleep(args.interval_ms / 1000)

        call = stub.DecideStream(requests())

        def watchdog() -> None:  # an answer that never comes is a failed call, not a hang
            while not closed.wait(0.2):
                if progress["waiting"] and time.monotonic() - progress["t"] > args.answer_timeout:
                    call.cancel()
                    return

        threading.Thread(target=watchdog, daemon=True).start()
        try:
            for d in call:
                now = time.monotonic()
                progress["waiting"] = False
                k = int(d.request_id[len(args.prefix):])
                votes = [[v.agent, v.ok, [float(x) for x in v.probabilities], v.latency_ms, v.error] for v in d.votes]
                self.out.write(json.dumps({"i": k, "w": k % len(self.requests), "sent": self.sent.pop(k, now),
                                           "recv": now, "v": d.model_version, "deg": d.degraded,
                                           "reason": d.reason, "lat": d.latency_ms, "votes": votes,
                                           "error": d.error.message if d.HasField("error") else ""},
                                          separators=(",", ":")) + "\n")
                self.answered += 1
                gate.release()
        except grpc.RpcError as exc:
            self.failures += 1
            cancelled = exc.code() == grpc.StatusCode.CANCELLED
            detail = f"no answer within {args.answer_timeout:g} s" if cancelled else (exc.details() or "")
            self.out.write(json.dumps({"failed": exc.code().name, "details": detail, "t": time.monotonic()}) + "\n")
            time.sleep(0.2)
        finally:
            closed.set()


def _probe_main(args: argparse.Namespace) -> None:
    """Per target: health, services by reflection (and one service's methods resolved through it),
    and whether a plaintext client and a TLS client without a certificate are refused. JSON."""
    import grpc
    from google.protobuf import descriptor_pool
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    def refused(channel: grpc.Channel) -> str:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            return "answered"
        except grpc.RpcError as exc:
            return exc.code().name

    result = {}
    for target in args.targets:
        r: dict[str, Any] = {}
        with _channel(target, args.tls) as channel:
            try:
                h = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                r["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(h.status)
            except grpc.RpcError as exc:
                r["health"] = f"error {exc.code().name}: {exc.details()}"
            try:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                answer = next(iter(stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)))
                r["services"] = sorted(s.name for s in answer.list_services_response.service)
                pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
                r["methods"] = {}
                for name in r["services"]:
                    if name.startswith("tactical."):
                        r["methods"][name] = sorted(m.name for m in pool.FindServiceByName(name).methods)
            except grpc.RpcError as exc:
                r["services"] = f"error {exc.code().name}: {exc.details()}"
        with grpc.insecure_channel(target) as plain:
            r["plaintext"] = refused(plain)
        if args.tls:
            ca = (Path(args.tls) / "ca.pem").read_bytes()
            with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca)) as no_cert:
                r["tls_without_client_cert"] = refused(no_cert)
        result[target] = r
    print(json.dumps(result, indent=1))


def _watch_main(args: argparse.Namespace) -> None:
    """Poll a coordinator's GetStatus: one JSON line per poll (time, serving, each agent connected)."""
    import grpc

    from tactical.v1 import cluster_pb2, cluster_pb2_grpc

    end = time.monotonic() + args.seconds
    with open(args.out, "a", buffering=1) as out, _channel(args.target, args.tls) as channel:
        stub = cluster_pb2_grpc.ClusterServiceStub(channel)
        while time.monotonic() < end and not (args.stop and os.path.exists(args.stop)):
            t = time.monotonic()
            try:
                s = stub.GetStatus(cluster_pb2.GetStatusRequest(), timeout=5)
                line = {"t": t, "serving": s.serving, "agents": {a.agent: [a.connected, a.error] for a in s.agents}}
            except grpc.RpcError as exc:
                line = {"t": t, "error": exc.code().name}
            out.write(json.dumps(line) + "\n")
            time.sleep(max(0.0, args.interval - (time.monotonic() - t)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="programs that run inside a bed host")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("relay")
    p.add_argument("--listen", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--control", required=True, type=Path)
    p = sub.add_parser("stream")
    p.add_argument("--target", required=True)
    p.add_argument("--tls")
    p.add_argument("--windows", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stop")
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--interval-ms", type=float, default=5.0)
    p.add_argument("--prefix", default="r")
    p.add_argument("--answer-timeout", type=float, default=10.0)
    p.add_argument("--max-failures", type=int, default=20)
    p = sub.add_parser("probe")
    p.add_argument("targets", nargs="+")
    p.add_argument("--tls")
    p = sub.add_parser("watch")
    p.add_argument("--target", required=True)
    p.add_argument("--tls")
    p.add_argument("--out", required=True)
    p.add_argument("--stop")
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.cmd == "relay":
        asyncio.run(_relay_main(args.listen, args.target, args.control))
    elif args.cmd == "stream":
        _stream_main(args)
    elif args.cmd == "probe":
        _probe_main(args)
    elif args.cmd == "watch":
        _watch_main(args)


# --------------------------------------------------------------------------------------------
# Decision streams seen from the test: start, read, stop
# --------------------------------------------------------------------------------------------

@dataclass
class StreamClient:
    """A `stream` program running inside a host; `records()` reads what it answered so far."""

    process: BedProcess
    out: Path
    stop_file: Path
    target: str
    _parsed: list[dict] = field(default_factory=list)
    _offset: int = 0

    def _lines(self) -> list[dict]:
        """Every complete line so far (read incrementally: polling a long stream stays cheap)."""
        with contextlib.suppress(OSError), open(self.out, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._offset += end
            for line in chunk[:end].splitlines():
                with contextlib.suppress(ValueError):
                    self._parsed.append(json.loads(line))
        return self._parsed

    def records(self) -> list[dict]:
        """Decisions answered so far, in order."""
        return [r for r in self._lines() if "i" in r]

    def failures(self) -> list[dict]:
        return [r for r in self._lines() if "failed" in r]

    def wait(self, predicate: Callable[[list[dict]], bool], timeout: float, what: str) -> list[dict]:
        """Poll records until predicate(records) holds; AssertionError naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records()
            if predicate(records):
                return records
            if not self.process.alive():
                raise AssertionError(f"the stream client to {self.target} exited while waiting for {what}:\n"
                                     f"{self.process.output()}\n{self.failures()}")
            time.sleep(0.05)
        raise AssertionError(f"waiting for {what} on the stream to {self.target}: not within {timeout:g} s "
                             f"({len(self.records())} decisions, failures {self.failures()[:3]})")

    def wait_count_after(self, t: float, n: int, timeout: float, what: str = "") -> list[dict]:
        """Wait for `n` decisions sent after monotonic time `t`; return them."""
        self.wait(lambda rs: sum(r["sent"] > t for r in rs) >= n, timeout, what or f"{n} decisions")
        return [r for r in self.records() if r["sent"] > t]

    def stop(self, timeout: float = 20.0) -> dict:
        """Ask it to finish (stop file), wait, and return its final counts."""
        self.stop_file.touch()
        try:
            self.process.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.stop(2)
            raise AssertionError(f"the stream client to {self.target} did not stop within {timeout:g} s") from None
        ends = [r for r in self._lines() if r.get("end")]
        if not ends:
            raise AssertionError(f"the stream client to {self.target} ended without a summary:\n"
                                 f"{self.process.output()}")
        return ends[-1]


def vote(record: dict, agent: str) -> list:
    """[agent, ok, probabilities, latency_ms, error] of `agent` in a stream record."""
    return next(v for v in record["votes"] if v[0] == agent)


def mixed_version_decisions(records: Sequence[dict], expected: dict[int, Any], atol: float = 1e-5) -> list[dict]:
    """Decisions with a vote that is not what its decision's version gives for that window.

    `expected[version]`: array (agents, windows, 3) from the version's artifacts (expected_votes)."""
    import numpy as np

    mixed = []
    for r in records:
        if r["error"]:
            continue
        table = expected.get(r["v"])
        for a, v in enumerate(r["votes"]):
            if v[1] and (table is None or not np.allclose(v[2], table[a, r["w"]], atol=atol)):
                mixed.append(r)
                break
    return mixed


# --------------------------------------------------------------------------------------------
# A cluster across the bed: agents on their hosts, a relay, two coordinators, mTLS everywhere
# --------------------------------------------------------------------------------------------

@dataclass
class BedCluster:
    """A running cluster on the bed and the ways to use it from a host (CLI, streams, probes, status)."""

    bed: Bed
    config: Path
    agents: dict[str, str]                    # agent -> its direct address
    coordinators: dict[str, str] = field(default_factory=dict)  # coordinator host -> address
    relays: dict[str, Relay] = field(default_factory=dict)      # agent -> relay in front of it (coord-a's path)
    servers: dict[str, BedProcess] = field(default_factory=dict)  # agents and coordinators by host
    windows: Path | None = None
    store_host: str = "client"                # the model store lives on this host's disk
    _streams: int = 0

    def tactical(self, host: str, *args: str, timeout: float = 60.0, check: bool = True
                 ) -> subprocess.CompletedProcess:
        """`tactical ARGS --config C` inside `host` (the CLI reads the same config on every host)."""
        return self.bed.run(host, [tactical_bin(), *args, "--config", str(self.config)], timeout=timeout,
                            check=check)

    def rollout(self, version: int, *coordinators: str, host: str = "client") -> str:
        """`tactical rollout --version V --target C1 [--target C2...]` from `host` (several: switched together);
        its output."""
        return self.tactical(host, "rollout", "--version", str(version), *self._targets(coordinators)).stdout

    def rollback(self, *coordinators: str, host: str = "client") -> str:
        return self.tactical(host, "rollback", *self._targets(coordinators)).stdout

    def _targets(self, coordinators: Sequence[str]) -> list[str]:
        return [arg for c in coordinators for arg in ("--target", self.coordinators[c])]

    def audit_rows(self, coordinator: str) -> list[tuple[int, int]]:
        """(answered at, ms since the epoch; model version) of every decision in `coordinator`'s audit log."""
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.bed.host(coordinator).dir / "state" / "audit.sqlite")) as db:
            return db.execute("SELECT time_ms, model_version FROM decisions ORDER BY time_ms").fetchall()

    def status(self, coordinator: str, host: str = "client") -> dict:
        return json.loads(self.tactical(host, "status", "--json", "--target", self.coordinators[coordinator]).stdout)

    def stream(self, coordinator: str, *, host: str = "client", interval_ms: float = 5.0, count: int = 0,
               seconds: float = 120.0, windows: Path | None = None) -> StreamClient:
        """Start a decision stream from `host` to `coordinator` (stop it with .stop())."""
        self._streams += 1
        name = f"stream{self._streams}-{coordinator}"
        h = self.bed.host(host)
        out, stop = h.dir / f"{name}.jsonl", h.dir / f"{name}.stop"
        proc = self.bed.python(host, name, "stream", "--target", self.coordinators[coordinator], "--tls", "tls",
                               "--windows", str(windows or self.windows), "--out", str(out), "--stop", str(stop),
                               "--count", str(count), "--seconds", str(seconds), "--interval-ms", str(interval_ms),
                               "--prefix", f"{name}-")
        return StreamClient(proc, out, stop, self.coordinators[coordinator])

    def probe(self, targets: Sequence[str], host: str = "client") -> dict:
        res = self.bed.run(host, [sys.executable, str(HERE), "probe", *targets, "--tls", "tls"], timeout=120)
        return json.loads(res.stdout)

    def watch(self, coordinator: str, host: str = "client", interval: float = 0.25) -> tuple[BedProcess, Path, Path]:
        """Poll `coordinator`'s status from `host`; returns (process, JSON-lines file, stop file)."""
        h = self.bed.host(host)
        self._streams += 1
        out, stop = h.dir / f"watch{self._streams}.jsonl", h.dir / f"watch{self._streams}.stop"
        proc = self.bed.python(host, f"watch{self._streams}", "watch", "--target", self.coordinators[coordinator],
                               "--tls", "tls", "--out", str(out), "--stop", str(stop), "--interval", str(interval))
        return proc, out, stop

    def store_dir(self) -> Path:
        return self.bed.host(self.store_host).dir / "state" / "models"

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.servers.items()}


def mixed_windows_ms(rows: dict[str, list[tuple[int, int]]], timeline: list[tuple]) -> list[int]:
    """Per switch in `timeline`: how long, by the coordinators' audit logs, one coordinator already answered
    with the new version while another still answered with the old one (0: never)."""
    windows = []
    for k in range(1, len(timeline)):
        old, new = timeline[k - 1][2], timeline[k][2]
        start = timeline[k][3] * 1000
        end = timeline[k + 1][3] * 1000 if k + 1 < len(timeline) else float("inf")
        span = [(t, v) for coordinator in rows.values() for t, v in coordinator if start <= t < end]
        first_new = min((t for t, v in span if v == new), default=None)
        last_old = max((t for t, v in span if v == old), default=None)
        windows.append(max(0, last_old - first_new) if first_new is not None and last_old is not None else 0)
    return windows

def write_bed_config(bed: Bed, name: str = "tactical", **sections: dict) -> Path:
    """One config for every host: mTLS files (relative: each host has its own), the bed's admin token,
    fixed ports (each host has its own network stack), state under each host's directory (relative
    paths, and every process runs in its host's directory)."""
    import yaml

    data: dict[str, Any] = {"serving": {"coordinator_port": COORDINATOR_PORT,
                                        "agents": {a: {"port": AGENT_PORT} for a in AGENT_NAMES},
                                        "admin_token": bed.token, **(TLS_FILES if bed.tls else {})}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path = bed.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_cluster(bed: Bed, *, versions: Sequence[int] = (1, 2, 3), coordinators: Sequence[str] = ("coord-a",
                  "coord-b"), relay_for: str | None = "fvg", active: int = 1, windows: int = 64,
                  serving: dict | None = None, coordinator_serving: dict[str, dict] | None = None,
                  agent_hosts: dict[str, str] | None = None, config_name: str = "tactical",
                  log: Callable[[str], None] = lambda message: None) -> BedCluster:
    """Agents on hosts fvg/momentum/entry, coordinators on `coordinators`, `active` rolled out from the client.

    `agent_hosts` places agents elsewhere (several on one host listen on consecutive ports), e.g.
    everything on one host for a same-machine reference beside the cross-host cluster.

    The agents start with empty stores and no model store to import from: the first version
    reaches them over the network, staged by `tactical rollout` from the client host. The first
    coordinator reaches `relay_for` through a delaying relay in that agent's host (0 ms until
    set); the others reach every agent directly. `serving` goes into the config every host reads;
    `coordinator_serving[host]` is merged over it for that coordinator alone (e.g. its deadline).
    Each step's failure says which process and why.
    `log` hears each step as it completes (with the seconds since the start)."""
    import numpy as np

    started = time.monotonic()

    def step(what: str) -> None:
        log(f"{time.monotonic() - started:6.1f} s  {what}")

    config = write_bed_config(bed, config_name, serving=serving or {})
    hosts = {a: (agent_hosts or {}).get(a, a) for a in AGENT_NAMES}
    ports = {a: AGENT_PORT + [hosts[b] for b in AGENT_NAMES[:i]].count(hosts[a]) for i, a in enumerate(AGENT_NAMES)}
    agents = {a: f"{bed.host(hosts[a]).ip}:{ports[a]}" for a in AGENT_NAMES}
    cluster = BedCluster(bed, config, agents)
    cluster.windows = bed.root / "windows.npy"
    np.save(cluster.windows, np.random.default_rng(7).uniform(-1, 1, (windows, 60, 7)).astype("<f4"))
    for a in AGENT_NAMES:
        cluster.servers[a] = bed.start(hosts[a], f"agent-{a}", [
            tactical_bin(), "agent", "--name", a, "--host", bed.host(hosts[a]).ip, "--port", str(ports[a]),
            "--core", "-1", "--no-bootstrap", "--config", str(config)])
    if relay_for:
        cluster.relays[relay_for] = bed.start_relay(hosts[relay_for], RELAY_PORT, ports[relay_for])
    for i, c in enumerate(coordinators):
        links = {a: (f"{bed.host(hosts[a]).ip}:{RELAY_PORT}" if a in cluster.relays and i == 0 else addr)
                 for a, addr in agents.items()}
        own = (coordinator_serving or {}).get(c)
        own_config = write_bed_config(bed, f"{config_name}-{c}", serving={**(serving or {}), **own}) if own else config
        cluster.servers[c] = bed.start(c, f"coordinator-{c}", [
            tactical_bin(), "coordinator", "--host", bed.host(c).ip, "--port", str(COORDINATOR_PORT),
            "--agents", ",".join(f"{a}={addr}" for a, addr in links.items()), "--config", str(own_config)])
    publish_test_versions(cluster.store_dir(), versions)  # while the servers start
    step(f"versions {list(versions)} published on {cluster.store_host}")
    for p in cluster.servers.values():
        p.wait_listening(60)
    step("agents and coordinators listening")
    cluster.coordinators = {c: cluster.servers[c].address for c in coordinators}
    for c in coordinators:  # the first coordinator stages; the others find the version there already
        deadline = time.monotonic() + 30
        while True:  # right after start a coordinator may not have met every agent yet
            res = cluster.tactical("client", "rollout", "--version", str(active), "--target",
                                   cluster.coordinators[c], check=False)
            if res.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"rollout of version {active} to {c} failed: {res.stderr}")
            time.sleep(0.5)
        step(f"version {active} rolled out to {c}")
    for c in coordinators:
        res = cluster.tactical("client", "health", "--wait", "30", "--target", cluster.coordinators[c], check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{c} not healthy:\n{res.stdout}{res.stderr}")
        step(f"{c} and its agents SERVING")
    return cluster


# --------------------------------------------------------------------------------------------
# Our own Python modules: the ONLY place this file imports them (the package layout moves).
# --------------------------------------------------------------------------------------------

def publish_test_versions(store_dir: Path, versions: Sequence[int], seed: int = 100) -> None:
    """Write model versions whose agents hold clear, different opinions (votes tell versions apart)."""
    import torch

    from agents.serving.model_store import ModelStore
    from training.system import TacticalMARLSystem
    from training.versions import publish

    store = ModelStore(store_dir)
    for v in sorted(set(versions) - set(store.versions())):
        torch.manual_seed(seed + v)
        model = TacticalMARLSystem().eval()
        with torch.no_grad():
            for actor in model.actors.values():
                actor.policy_head.weight.normal_(0, 0.3)
                actor.policy_head.bias.normal_(0, 1.0)
        publish(store, model, source=f"netbed test version {v}", version=v)


def expected_votes(store_dir: Path, versions: Sequence[int], windows: Any) -> dict[int, Any]:
    """version -> (agents, windows, 3): every agent's probabilities, recomputed from the artifacts."""
    import numpy as np

    from agents.serving.model_store import ModelStore
    from agents.serving.runtime import ActorRunner

    store = ModelStore(store_dir)
    return {v: np.stack([ActorRunner(*store.read_artifact(v, a)).run(windows).probabilities for a in AGENT_NAMES])
            for v in versions}


# The program every torchrun rank runs (argv: out_dir, training overrides as JSON, updates): joins the
# job through the torchrun environment, trains, saves its parameters to compare across ranks.
RANK_PROGRAM = """
import json, sys, time, torch
from tactical.config import default_config
from training.distributed import process_group
from training.mappo import TacticalMAPPOTrainer
out, overrides, updates = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
cfg = default_config().replace(**overrides, paths={"metrics": out + "/metrics.jsonl"})
with process_group() as ctx:
    begun = time.perf_counter()
    trainer = TacticalMAPPOTrainer(cfg, progress=False)
    start = time.perf_counter()
    trainer.train(updates)
    seconds, setup = time.perf_counter() - start, start - begun
    torch.save({"rank": ctx.rank, "world": ctx.world_size, "params": trainer.model.state_dict(),
                "last_obs": torch.from_numpy(trainer.next_obs.copy()), "value_norm": trainer.value_norm.state_dict(),
                "seconds": seconds, "setup_seconds": setup, "performance": trainer.get_performance_stats()},
               f"{out}/rank{ctx.rank}.pt")
"""


def torchrun(bed: Bed, hosts: Sequence[str], args: Sequence[str], *, nproc_per_node: int = 1, port: int = 29500,
             timeout: float = 300.0, name: str = "torchrun") -> tuple[list[BedProcess], float]:
    """`torchrun ... ARGS` on each of `hosts` (node rank = position; the first is the master), gloo
    over the bridge (GLOO_SOCKET_IFNAME: the host's one interface). Waits; AssertionError with the
    logs if any fails or `timeout` passes. Returns the processes and the wall-clock seconds."""
    master = bed.host(hosts[0]).ip
    started = time.monotonic()
    procs = [bed.start(h, f"{name}-{h}", [
        torchrun_bin(), "--nnodes", str(len(hosts)), "--node_rank", str(rank), "--nproc_per_node", str(nproc_per_node),
        "--master_addr", master, "--master_port", str(port), *args],
        env={"GLOO_SOCKET_IFNAME": HOST_IF, "TP_SOCKET_IFNAME": HOST_IF}) for rank, h in enumerate(hosts)]
    deadline = started + timeout
    for p in procs:
        try:
            p.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.stop(5)
            raise AssertionError(f"torchrun did not finish within {timeout:g} s:\n" +
                                 "\n".join(q.output() for q in procs)) from None
    seconds = time.monotonic() - started
    failed = [p for p in procs if p.proc.returncode != 0]
    if failed:
        raise AssertionError("torchrun failed:\n" + "\n".join(f"{p.name}: {p.output()}" for p in failed))
    return procs, seconds


def train_ranks(bed: Bed, hosts: Sequence[str], *, overrides: dict, updates: int, out: Path,
                nproc_per_node: int = 1, timeout: float = 300.0) -> dict[str, Any]:
    """RANK_PROGRAM under torchrun on `hosts`: {"ranks": each rank's saved payload, "seconds": wall time}."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    program = bed.root / "rank_program.py"
    program.write_text(RANK_PROGRAM)
    _, seconds = torchrun(bed, hosts, [str(program), str(out), json.dumps(overrides), str(updates)],
                          nproc_per_node=nproc_per_node, timeout=timeout, name=f"ranks-{out.name}")
    world = len(hosts) * nproc_per_node
    return {"ranks": [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)], "seconds": seconds}


if __name__ == "__main__":
    main()
