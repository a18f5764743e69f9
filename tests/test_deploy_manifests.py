"""The deployment files under deploy/: Kubernetes manifests, systemd units, their configs and commands.

Offline and without a cluster: manifests are validated against the Kubernetes schema that the
kubernetes-validate package ships, configs with our loader, every `tactical` command line against
the installed CLI's own --help (the console script, not its modules, whose paths may move), and the
units with `systemd-analyze verify` where that tool exists.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tactical.config import load_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
# A release kubernetes-validate ships a schema for; strict: an unknown field (a typo) is an error too.
KUBERNETES_VERSION = "1.33.0"
TACTICAL = Path(sys.executable).parent / "tactical"
INSTALLED_TACTICAL = "/opt/tactical/venv/bin/tactical"  # where the units expect the CLI (deploy/README.md)
CONFIGMAP_KEY = "tactical.yaml"
AGENT_HEALTH_SERVICE = "tactical.v1.AgentService"
COORDINATOR_HEALTH_SERVICE = "tactical.v1.DecisionService"


# ---- Kubernetes -------------------------------------------------------------------------------

def load_manifests(paths) -> list[tuple[str, dict]]:
    return [(str(path.relative_to(DEPLOY)), doc) for path in sorted(paths)
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


ALL_MANIFESTS = load_manifests(KUBERNETES.rglob("*.yaml"))
# what `kubectl apply -f deploy/kubernetes/` sends
APPLIED = [doc for _, doc in load_manifests(KUBERNETES.glob("*.yaml"))]


def find(kind: str, name: str) -> dict:
    (doc,) = [d for _, d in ALL_MANIFESTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def deployments() -> list[dict]:
    return [d for d in APPLIED if d["kind"] == "Deployment"]


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def pod_annotations(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"].get("annotations", {})


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def cpu_cores(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def configmap_config(tmp_path: Path, text: str | None = None):
    path = tmp_path / CONFIGMAP_KEY
    path.write_text(text if text is not None else find("ConfigMap", "tactical-config")["data"][CONFIGMAP_KEY])
    return load_config(path)


@pytest.fixture(scope="module")
def cluster_cfg(tmp_path_factory):
    return configmap_config(tmp_path_factory.mktemp("configmap"))


def agent_names() -> list[str]:
    return list(load_config().serving.agents)


@pytest.mark.parametrize("doc", [doc for _, doc in ALL_MANIFESTS],
                         ids=[f"{path}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in ALL_MANIFESTS])
def test_every_manifest_validates_against_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_fails_validation():
    deployment = copy.deepcopy(find("Deployment", "tactical-agent-fvg"))
    misspelt = container(deployment)
    misspelt["livenesProbe"] = misspelt.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment = copy.deepcopy(find("Deployment", "tactical-agent-fvg"))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_applied_folder_holds_every_part_and_no_placeholder_secret():
    kinds = sorted({d["kind"] for d in APPLIED})
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "PodDisruptionBudget", "Service"]
    names = {d["metadata"]["name"] for d in deployments()}
    assert names == {f"tactical-agent-{a}" for a in agent_names()} | {"tactical-coordinator"}
    # Placeholders live in a subfolder, so applying the folder never overwrites real Secrets.
    secrets = {d["metadata"]["name"] for _, d in ALL_MANIFESTS if d["kind"] == "Secret"}
    assert secrets == {"tactical-admin-token", "tactical-tls"}


def test_the_configmap_holds_a_config_our_loader_accepts(tmp_path, cluster_cfg):
    assert cluster_cfg.serving.host == "0.0.0.0"
    assert all([cluster_cfg.serving.tls_cert, cluster_cfg.serving.tls_key, cluster_cfg.serving.tls_ca])
    assert cluster_cfg.serving.admin_token == ""  # the token comes from the Secret, never from the ConfigMap
    broken = find("ConfigMap", "tactical-config")["data"][CONFIGMAP_KEY].replace("tls_ca:", "tls_cacert:")
    with pytest.raises(ValueError, match=r"unknown config key 'serving\.tls_cacert'"):
        configmap_config(tmp_path, broken)


def mount_of(deployment: dict, path: str) -> tuple[dict, dict]:
    """The volume mount holding `path` (the deepest one) and its volume."""
    spec = deployment["spec"]["template"]["spec"]
    mounts = [m for m in container(deployment)["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{deployment['metadata']['name']}: nothing is mounted where {path} is"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def test_every_file_the_processes_read_or_write_is_on_a_volume(cluster_cfg):
    secret_keys = {name: set(find("Secret", name)["stringData"]) for name in ("tactical-tls", "tactical-admin-token")}
    for deployment in deployments():
        command = container(deployment)["command"]
        config_path = command[command.index("--config") + 1]
        mount, volume = mount_of(deployment, config_path)
        assert volume["configMap"]["name"] == "tactical-config"
        assert config_path == f"{mount['mountPath']}/{CONFIGMAP_KEY}"
        for tls_file in (cluster_cfg.serving.tls_cert, cluster_cfg.serving.tls_key, cluster_cfg.serving.tls_ca):
            mount, volume = mount_of(deployment, tls_file)
            assert volume["secret"]["secretName"] == "tactical-tls"
            assert Path(tls_file).name in secret_keys["tactical-tls"]
        (token,) = [e for e in container(deployment)["env"] if e["name"] == "TACTICAL_ADMIN_TOKEN"]
        ref = token["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secret_keys[ref["name"]]
        # The root filesystem is read-only: what a process writes must be on its volume.
        assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True
        if command[1] == "agent":
            written = [f"{cluster_cfg.paths.agent_store}/{command[command.index('--name') + 1]}"]
            if "--no-bootstrap" not in command:  # it would write version 0 into the model store at start
                written.append(cluster_cfg.paths.model_store)
        else:
            written = [cluster_cfg.paths.coordinator_state, cluster_cfg.paths.audit_log, cluster_cfg.paths.model_store]
        for path in written:
            mount, volume = mount_of(deployment, path)
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert find("PersistentVolumeClaim", claim), claim


def test_each_agent_deployment_requests_exactly_one_cpu():
    for name in agent_names():
        deployment = find("Deployment", f"tactical-agent-{name}")
        resources = container(deployment)["resources"]
        assert cpu_cores(resources["requests"]["cpu"]) == 1.0, name
        assert cpu_cores(resources["limits"]["cpu"]) == 1.0, name
        # requests == limits everywhere: Guaranteed QoS, which the static CPU manager needs to give a whole core.
        assert resources["requests"] == resources["limits"], name
        assert deployment["spec"]["replicas"] == 1


def test_services_ports_and_the_coordinators_agents_agree(cluster_cfg):
    addresses = {}
    for name in agent_names():
        deployment, service = find("Deployment", f"tactical-agent-{name}"), find("Service", f"tactical-agent-{name}")
        command = container(deployment)["command"]
        assert command[command.index("--name") + 1] == name
        assert "--port" not in command  # the port is the config's, which the Service and --agents repeat
        port = cluster_cfg.serving.agents[name].port
        assert container(deployment)["ports"] == [{"name": "grpc", "containerPort": port}, {
            "name": "metrics", "containerPort": cluster_cfg.serving.agents[name].metrics_port}]
        assert pod_annotations(deployment)["prometheus.io/port"] == str(cluster_cfg.serving.agents[name].metrics_port)
        assert service["spec"]["ports"] == [{"name": "grpc", "port": port, "targetPort": "grpc"}]
        assert [d["metadata"]["name"] for d in deployments() if selects(service["spec"]["selector"], pod_labels(d))] \
            == [deployment["metadata"]["name"]]
        # Not ready until a version is staged, and staging goes through this Service.
        assert service["spec"]["publishNotReadyAddresses"] is True
        addresses[name] = f"{service['metadata']['name']}:{port}"
    coordinator = find("Deployment", "tactical-coordinator")
    command = container(coordinator)["command"]
    assert command[command.index("--agents") + 1] == ",".join(f"{n}={a}" for n, a in addresses.items())
    port = cluster_cfg.serving.coordinator_port
    assert container(coordinator)["ports"] == [{"name": "grpc", "containerPort": port}, {
        "name": "metrics", "containerPort": cluster_cfg.serving.metrics_port}]
    assert pod_annotations(coordinator)["prometheus.io/port"] == str(cluster_cfg.serving.metrics_port)
    assert find("Service", "tactical-coordinator")["spec"]["ports"] == [{"name": "grpc", "port": port,
                                                                          "targetPort": "grpc"}]


def test_probes_check_grpc_health_of_their_own_server():
    for deployment in deployments():
        name = deployment["metadata"]["name"]
        (port,) = [p["containerPort"] for p in container(deployment)["ports"] if p["name"] == "grpc"]
        service = AGENT_HEALTH_SERVICE if name.startswith("tactical-agent-") else COORDINATOR_HEALTH_SERVICE
        for probe, mode in (("readinessProbe", "ready"), ("livenessProbe", "live")):
            # The certificate is checked against the Service's name, the one real clients dial.
            assert container(deployment)[probe]["exec"]["command"] == ["tactical-probe", mode, str(port), service, name]
        assert find("Service", name)


def test_the_disruption_budget_keeps_enough_agents_to_decide(cluster_cfg):
    (pdb,) = [d for d in APPLIED if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == cluster_cfg.aggregation.min_agents
    selected = [d["metadata"]["name"] for d in deployments() if selects(pdb["spec"]["selector"]["matchLabels"],
                                                                       pod_labels(d))]
    assert sorted(selected) == sorted(f"tactical-agent-{a}" for a in agent_names())


def test_the_image_provides_what_the_manifests_run():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (tag,) = re.findall(r"docker build -f deploy/Dockerfile -t (\S+) \.", dockerfile)
    assert {container(d)["image"] for d in deployments()} == {tag}
    assert "COPY --chmod=0755 deploy/probe.sh /usr/local/bin/tactical-probe" in dockerfile
    assert "/usr/local/bin/grpc_health_probe" in dockerfile
    assert "grpc_health_probe " in (DEPLOY / "probe.sh").read_text()
    # The build context lets in only what the ignore file allows: every package pip installs must be there.
    allowed = {line[1:] for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["setuptools"]["packages"]["find"]["include"])
    assert packages | {"pyproject.toml", pyproject["project"]["readme"], "deploy/probe.sh"} <= allowed


@pytest.fixture
def fake_health_probe(tmp_path):
    """A grpc_health_probe on PATH that records its arguments and exits with $FAKE_STATUS."""
    script = tmp_path / "grpc_health_probe"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$FAKE_ARGS"\nexit "$FAKE_STATUS"\n')
    script.chmod(0o755)

    def run(*args: str, status: int) -> tuple[int, list[str]]:
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_STATUS": str(status),
               "FAKE_ARGS": str(tmp_path / "args")}
        (tmp_path / "args").write_text("")
        result = subprocess.run(["sh", str(DEPLOY / "probe.sh"), *args], env=env, capture_output=True, text=True,
                                check=False)
        return result.returncode, (tmp_path / "args").read_text().splitlines()

    return run


def test_the_probe_script_is_ready_only_when_serving_and_alive_while_answering(fake_health_probe, cluster_cfg):
    args = ("50051", AGENT_HEALTH_SERVICE, "tactical-agent-fvg")
    code, argv = fake_health_probe("ready", *args, status=0)
    assert code == 0
    assert argv == ["-addr=127.0.0.1:50051", f"-service={AGENT_HEALTH_SERVICE}", "-connect-timeout=2s",
                    "-rpc-timeout=2s", "-tls", f"-tls-ca-cert={cluster_cfg.serving.tls_ca}",
                    f"-tls-client-cert={cluster_cfg.serving.tls_cert}",
                    f"-tls-client-key={cluster_cfg.serving.tls_key}", "-tls-server-name=tactical-agent-fvg"]
    assert fake_health_probe("ready", *args, status=4)[0] == 4  # NOT_SERVING: not ready
    assert fake_health_probe("live", *args, status=4)[0] == 0  # ... but alive
    assert fake_health_probe("live", *args, status=2)[0] == 2  # no connection: dead
    assert fake_health_probe("live", *args, status=3)[0] == 3  # the health RPC failed
    assert fake_health_probe("started", *args, status=0) == (64, [])  # a bad mode never reaches the probe


# ---- systemd ----------------------------------------------------------------------------------

UNIT_FILES = sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.target"))


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat); our units use no line continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_start(path: Path) -> list[str]:
    """ExecStart's argv with ${VAR} expanded from the unit's own Environment= lines, as systemd would."""
    service = read_unit(path)["Service"]
    env = dict(item.partition("=")[::2] for item in service.get("Environment", []))
    (line,) = service["ExecStart"]
    return shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line))


def agent_units() -> dict[str, Path]:
    return {name: SYSTEMD / f"tactical-agent-{name}.service" for name in agent_names()}


def test_one_unit_per_process_restarting_on_failure():
    services = {p.name for p in SYSTEMD.glob("*.service")}
    assert services == {p.name for p in agent_units().values()} | {"tactical-coordinator.service"}
    for name in services:
        service = read_unit(SYSTEMD / name)["Service"]
        assert service["Restart"] == ["on-failure"], name
        assert service["User"] == ["tactical"] and service["WorkingDirectory"] == ["/var/lib/tactical"], name
        # Required (no leading "-"): the admin token must be the same on every process.
        assert service["EnvironmentFile"] == ["/etc/tactical/tactical.env"], name
        assert exec_start(SYSTEMD / name)[0] == INSTALLED_TACTICAL, name
    (wants,) = read_unit(SYSTEMD / "tactical.target")["Unit"]["Wants"]
    assert sorted(wants.split()) == sorted(services)


def test_agents_are_pinned_to_distinct_cores_away_from_the_coordinator():
    cores = {}
    for name, path in agent_units().items():
        (affinity,) = read_unit(path)["Service"]["CPUAffinity"]
        assert re.fullmatch(r"\d+", affinity), f"{name}: one core, got {affinity!r}"
        argv = exec_start(path)
        assert argv[1:4] == ["agent", "--name", name]
        assert argv[argv.index("--core") + 1] == affinity, f"{name}: --core and CPUAffinity must name the same core"
        cores[name] = int(affinity)
    assert len(set(cores.values())) == len(cores), cores
    (coordinator,) = read_unit(SYSTEMD / "tactical-coordinator.service")["Service"]["CPUAffinity"]
    assert not set(map(int, coordinator.split())) & set(cores.values())


def test_the_systemd_config_loads_and_matches_the_units():
    cfg = load_config(SYSTEMD / "tactical.yaml")
    # Absolute, so the CLI run from any directory finds what the services keep under /var/lib/tactical.
    for path in (cfg.paths.model_store, cfg.paths.agent_store, cfg.paths.coordinator_state, cfg.paths.audit_log,
                 cfg.paths.admin_token_file):
        assert path.startswith("/var/lib/tactical/"), path
    for path in SYSTEMD.glob("*.service"):
        argv = exec_start(path)
        assert argv[argv.index("--config") + 1] == "/etc/tactical/tactical.yaml", path.name
    argv = exec_start(SYSTEMD / "tactical-coordinator.service")
    assert argv[argv.index("--agents") + 1] == ",".join(
        f"{name}={cfg.serving.host}:{cfg.serving.agents[name].port}" for name in agent_names())


def render_units(directory: Path, *, venv_tactical: str) -> None:
    """The units as installed, with ExecStart pointing at `venv_tactical` (verify checks the binary exists)."""
    directory.mkdir(exist_ok=True)
    for path in UNIT_FILES:
        (directory / path.name).write_text(path.read_text().replace(INSTALLED_TACTICAL, venv_tactical))


def systemd_verify(directory: Path) -> list[str]:
    """What `systemd-analyze verify` says about our units (it exits 0 on bad keys and values, so read it)."""
    result = subprocess.run(["systemd-analyze", "verify", *sorted(str(p) for p in directory.iterdir())],
                            capture_output=True, text=True, timeout=60, check=False)
    ours = [p.name for p in UNIT_FILES]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if any(name in line for name in ours)]
    return lines + ([f"exit code {result.returncode}"] if result.returncode else [])


needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed here")


@needs_systemd_analyze
def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    render_units(tmp_path, venv_tactical=str(TACTICAL))
    for path in UNIT_FILES:
        committed, rendered = path.read_text().splitlines(), (tmp_path / path.name).read_text().splitlines()
        changed = [(a, b) for a, b in zip(committed, rendered, strict=True) if a != b]
        assert len(committed) == len(rendered)
        assert all(a.startswith("ExecStart=") for a, _ in changed), changed
        assert len(changed) == (path.suffix == ".service"), path.name
    assert systemd_verify(tmp_path) == []


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    render_units(tmp_path / "typo", venv_tactical=str(TACTICAL))
    unit = tmp_path / "typo" / "tactical-agent-fvg.service"
    unit.write_text(unit.read_text().replace("CPUAffinity=", "CPUAfinity="))
    assert any("CPUAfinity" in line for line in systemd_verify(tmp_path / "typo"))
    render_units(tmp_path / "missing", venv_tactical=str(tmp_path / "no-such-venv" / "tactical"))
    assert any("not executable" in line for line in systemd_verify(tmp_path / "missing"))


# ---- every `tactical` command line --------------------------------------------------------------

@dataclass(frozen=True)
class CommandSpec:
    options: dict[str, str | None]  # flag -> metavar (None: takes no value)
    required: tuple[str, ...]
    one_of: tuple[tuple[str, ...], ...]  # required groups of mutually exclusive flags


@functools.cache
def command_spec(command: str) -> CommandSpec | None:
    """What `tactical COMMAND --help` accepts, read from its own output (None: no such command)."""
    result = subprocess.run([str(TACTICAL), command, "--help"], capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, "COLUMNS": "10000"})  # one line per option and usage
    if result.returncode != 0:
        return None
    usage, _, rest = result.stdout.partition("\n")
    options: dict[str, str | None] = {}
    for line in rest.splitlines():
        match = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        for form in match.group(1).split(", ") if match else ():
            flag, _, metavar = form.partition(" ")
            options[flag] = metavar or None
    bare = re.sub(r"\[[^\]]*\]", "", usage)  # drop the optional parts
    one_of = tuple(tuple(re.findall(r"--[\w-]+", group)) for group in re.findall(r"\(([^)]*)\)", bare))
    required = tuple(re.findall(r"--[\w-]+", re.sub(r"\([^)]*\)", "", bare)))
    return CommandSpec(options, required, one_of)


def cli_problems(argv: list[str]) -> list[str]:
    """Why `tactical ARGV` would not parse; [] when it would."""
    spec = command_spec(argv[0]) if argv else None
    if spec is None:
        return [f"no such command: tactical {' '.join(argv[:1])}"]
    problems, given, args = [], set(), argv[1:]
    i = 0
    while i < len(args):
        flag, has_inline, inline = args[i].partition("=")
        if flag not in spec.options:
            problems.append(f"unknown argument {args[i]!r}")
        elif spec.options[flag] is None:
            given.add(flag)
            if has_inline:
                problems.append(f"{flag} takes no value")
        else:
            given.add(flag)
            if not has_inline:
                if i + 1 == len(args) or args[i + 1].startswith("--"):
                    problems.append(f"{flag} needs a value")
                    i += 1
                    continue
                i += 1
                inline = args[i]
            choices = re.fullmatch(r"\{(.*)\}", spec.options[flag])
            if choices and inline not in choices.group(1).split(","):
                problems.append(f"{flag} {inline!r} is not one of {choices.group(1)}")
        i += 1
    problems += [f"{flag} is required" for flag in spec.required if flag not in given]
    problems += [f"exactly one of {', '.join(group)}" for group in spec.one_of if len(given & set(group)) != 1]
    return problems


SHELL_OPERATORS = re.compile(r"^[;&|<>()]+$")


def tactical_commands_in_shell(line: str) -> list[list[str]]:
    """The argv after each `tactical` (or .../bin/tactical) run in a shell line, nested `sh -c '...'` included.

    `tactical` is also the service user's name: after -u/-g, or with nothing after it, it is not the CLI.
    """
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    found = []
    for i, token in enumerate(tokens):
        if " " in token:
            found += tactical_commands_in_shell(token)
        elif (token == "tactical" or token.endswith("/bin/tactical")) and tokens[i - 1:i] not in (["-u"], ["-g"]) \
                and i + 1 < len(tokens) and not SHELL_OPERATORS.match(tokens[i + 1]):
            argv = []
            for arg in tokens[i + 1:]:
                if SHELL_OPERATORS.match(arg):
                    break
                argv.append(arg)
            found.append(argv)
    return found


def readme_commands() -> list[list[str]]:
    text = (DEPLOY / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            commands += tactical_commands_in_shell(line)
    return commands


def test_every_tactical_command_line_parses():
    lines = []
    for deployment in deployments():
        command = container(deployment)["command"]
        assert command[0] == "tactical"
        lines.append((f"kubernetes {deployment['metadata']['name']}", command[1:]))
    lines += [(f"systemd {path.name}", exec_start(path)[1:]) for path in SYSTEMD.glob("*.service")]
    readme = readme_commands()
    assert {argv[0] for argv in readme} == {"rollout", "rollback", "health"}  # the README's commands were found
    lines += [("deploy/README.md", argv) for argv in readme]
    problems = {f"{where}: tactical {shlex.join(argv)}": cli_problems(argv) for where, argv in lines}
    assert {line: why for line, why in problems.items() if why} == {}


def test_the_command_line_check_catches_what_argparse_would_refuse():
    assert cli_problems(["agent", "--name", "fvg", "--core", "-1", "--no-bootstrap"]) == []
    assert cli_problems(["agent", "--name", "fvg", "--cores", "1"]) == ["unknown argument '--cores'",
                                                                        "unknown argument '1'"]
    assert cli_problems(["agent", "--name", "alpha"]) == ["--name 'alpha' is not one of fvg,momentum,entry"]
    assert cli_problems(["agent", "--core", "1"]) == ["--name is required"]
    assert cli_problems(["agent", "--name", "fvg", "--config"]) == ["--config needs a value"]
    assert cli_problems(["agent", "--name", "fvg", "--no-bootstrap=yes"]) == ["--no-bootstrap takes no value"]
    one_of = ["exactly one of --version, --checkpoint, --latest"]
    assert cli_problems(["rollout", "--target", "localhost:50050"]) == one_of
    assert cli_problems(["rollout", "--latest", "--version", "2"]) == one_of
    assert cli_problems(["deploy"]) == ["no such command: tactical deploy"]
