"""gRPC plumbing shared by the servers and their clients: options, binding, channels, TLS, the admin token.

Servers disable SO_REUSEPORT so that a port already in use is an error instead of two
processes silently sharing it.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import grpc
import numpy as np

from tactical.config import Config, ServingConfig
from tactical.errors import UserError
from tactical.wire import ADMIN_TOKEN_HEADER

ADMIN_TOKEN_ENV = "TACTICAL_ADMIN_TOKEN"


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
