"""gRPC plumbing shared by the servers and the CLI: options, binding, TLS, admin token, logging.

Servers disable SO_REUSEPORT so that a port already in use is an error instead of two
processes silently sharing it. A server process announces where it listens with one JSON
line on stdout ({"listening": "host:port", "pid": N}); its logs go to stderr.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
import numpy as np

from tactical.config import Config, ServingConfig
from tactical.errors import UserError

ADMIN_TOKEN_HEADER = "x-tactical-admin-token"
LAUNCHER_PID_ENV = "TACTICAL_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1
ADMIN_TOKEN_ENV = "TACTICAL_ADMIN_TOKEN"
log = logging.getLogger(__name__)


class ServeError(UserError, RuntimeError):
    """A server that cannot start; the message says why (port in use, bad TLS files...)."""


SHUTDOWN_GRACE_S = 5.0  # a stopping server lets in-flight calls finish for this long
# gRPC itself refuses (RESOURCE_EXHAUSTED, before parsing) only messages this many times over
# serving.max_message_bytes; between the two, the handler answers INVALID_ARGUMENT naming the size.
HARD_MESSAGE_LIMIT_FACTOR = 4


def server_options(cfg: ServingConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes * HARD_MESSAGE_LIMIT_FACTOR),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def channel_options(cfg: ServingConfig) -> list[tuple[str, int]]:
    """Channels reconnect quickly: an agent restarted by the launcher is back within ~0.1-1 s."""
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
    ]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ServeError(f"cannot read TLS file {path}: {exc.strerror}") from None


def tls_enabled(cfg: ServingConfig) -> bool:
    return bool(cfg.tls_cert)


def bind(server: grpc.aio.Server, host: str, port: int, cfg: ServingConfig) -> int:
    """Listen on host:port (0 = any free port) with TLS when configured; return the port."""
    address = f"{host}:{port}"
    try:
        if tls_enabled(cfg):
            creds = grpc.ssl_server_credentials([(_read(cfg.tls_key), _read(cfg.tls_cert))],
                                                root_certificates=_read(cfg.tls_ca), require_client_auth=True)
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServeError(f"cannot listen on {address}: {exc} (port in use?)") from None
    if not bound:
        raise ServeError(f"cannot listen on {address} (port in use?)")
    return bound


def aio_channel(address: str, cfg: ServingConfig) -> grpc.aio.Channel:
    if tls_enabled(cfg):
        creds = grpc.ssl_channel_credentials(_read(cfg.tls_ca), _read(cfg.tls_key), _read(cfg.tls_cert))
        return grpc.aio.secure_channel(address, creds, options=channel_options(cfg))
    return grpc.aio.insecure_channel(address, options=channel_options(cfg))


def sync_channel(address: str, cfg: ServingConfig) -> grpc.Channel:
    if tls_enabled(cfg):
        creds = grpc.ssl_channel_credentials(_read(cfg.tls_ca), _read(cfg.tls_key), _read(cfg.tls_cert))
        return grpc.secure_channel(address, creds, options=channel_options(cfg))
    return grpc.insecure_channel(address, options=channel_options(cfg))


def admin_token(cfg: Config, *, create: bool = False) -> str:
    """The admin token: $TACTICAL_ADMIN_TOKEN, else serving.admin_token, else the token file.

    With `create`, a missing token file gets a fresh random token (mode 0600), so a local
    cluster is protected without any setup; clients on the same machine read the same file.
    """
    token = os.environ.get(ADMIN_TOKEN_ENV) or cfg.serving.admin_token
    if token:
        return token
    path = Path(cfg.paths.admin_token_file)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not create:
            return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic create-if-absent: another process may have won the race
    except FileExistsError:
        token = path.read_text().strip()
    finally:
        os.unlink(tmp)
    return token


def admin_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((ADMIN_TOKEN_HEADER, token),)


async def require_admin(context: grpc.aio.ServicerContext, token: str) -> None:
    """Abort the call with PERMISSION_DENIED unless it carries the admin token."""
    given = dict(context.invocation_metadata() or ()).get(ADMIN_TOKEN_HEADER, "")
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"admin call without a valid token: send it in the '{ADMIN_TOKEN_HEADER}' metadata "
                            f"header (from ${ADMIN_TOKEN_ENV}, serving.admin_token or the token file)")


def percentile(values: Iterable[float], q: float) -> float:
    """A percentile of a server's recent latencies, for its info RPC (0 before the first)."""
    array = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(array, q)) if array.size else 0.0


def announce_listening(address: str) -> None:
    """The one stdout line a launcher waits for."""
    sys.stdout.write(json.dumps({"listening": address, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()


def setup_logging(name: str, level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{name} pid {os.getpid()}] %(message)s")


def on_shutdown_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """Run `callback` on SIGINT or SIGTERM (graceful shutdown)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)


async def serve_until_signal(address: str) -> None:
    """Announce `address` to the launcher, then return at the first SIGINT or SIGTERM."""
    announce_listening(address)
    stop = asyncio.Event()
    on_shutdown_signals(asyncio.get_running_loop(), stop.set)
    await stop.wait()


def follow_launcher() -> None:
    """Started by `tactical up`: have the kernel send SIGTERM if the launcher dies (Linux prctl)."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher:
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(launcher):  # the launcher died before we got here
        raise ServeError("the launcher that started this process is gone")


def pin_to_core(core: int) -> int:
    """Pin this process (and the threads it starts later) to one CPU; return the core, -1 if not pinned."""
    if core < 0:
        return -1
    available = sorted(os.sched_getaffinity(0))
    if core not in available:
        raise ServeError(f"cannot pin to core {core}: this process may use cores {available}")
    os.sched_setaffinity(0, {core})
    return core
