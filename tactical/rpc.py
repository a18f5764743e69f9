"""gRPC plumbing shared by the servers and their clients: options, binding, channels, TLS, the admin token.

Servers disable SO_REUSEPORT so that a port already in use is an error instead of two
processes silently sharing it, unless serving.reuse_port asks for sharing (several coordinators
on one port): then each process also listens alone on a local socket, its own address, because
the kernel hands each connection to the shared port to any one of them.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha import reflection, reflection_pb2

from tactical.config import Config, ServingConfig
from tactical.errors import UserError
from tactical.logs import client_errors
from tactical.wire import ADMIN_TOKEN_HEADER

ADMIN_TOKEN_ENV = "TACTICAL_ADMIN_TOKEN"
log = logging.getLogger(__name__)


class ServeError(UserError, RuntimeError):
    """A server that cannot start; the message says why (port in use, bad TLS files...)."""


SHUTDOWN_GRACE_S = 5.0  # a stopping server lets in-flight calls finish for this long


def server_options(cfg: ServingConfig) -> list[tuple[str, int]]:
    """gRPC refuses a message over serving.max_message_bytes (RESOURCE_EXHAUSTED) before reading it, and no
    bandwidth-delay probing grows a stream's flow-control window past its 64 KiB: what oversized requests in
    flight can make the server buffer stays small (measured: 32 concurrent 16 MiB requests grew it 65 MB)."""
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.so_reuseport", int(cfg.reuse_port)),
    ]


def new_server(cfg: ServingConfig) -> grpc.aio.Server:
    """A grpc.aio server with our limits: message size, and at most serving.max_concurrent_calls calls at once
    (more are refused with RESOURCE_EXHAUSTED), which bounds the memory that requests in flight can take."""
    return grpc.aio.server(options=server_options(cfg), maximum_concurrent_rpcs=cfg.max_concurrent_calls)


@dataclass(frozen=True)
class Undecodable:
    """What a request that is not a valid message of its type becomes, so its handler can answer
    INVALID_ARGUMENT (or, on a stream, an error message) instead of gRPC answering UNKNOWN."""

    message: str


def _safe_parser(request_type: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return request_type.FromString(data)
        except DecodeError as exc:
            return Undecodable(f"undecodable {request_type.DESCRIPTOR.full_name} ({len(data)} bytes): {exc}")

    return parse


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Register `servicer`'s methods for `service`, as the generated add_*_to_server does, but parsing
    requests safely: a unary call with undecodable bytes is answered INVALID_ARGUMENT here (and logged at
    a bounded rate); a streaming handler receives an Undecodable item and answers it itself."""
    handlers = {}
    for method in service.methods:
        parse = _safe_parser(GetMessageClass(method.input_type))
        serialize = GetMessageClass(method.output_type).SerializeToString
        implementation = getattr(servicer, method.name)
        if method.client_streaming:
            factory = grpc.stream_stream_rpc_method_handler if method.server_streaming else \
                grpc.stream_unary_rpc_method_handler
        else:
            implementation = _refusing_undecodable(implementation)
            factory = grpc.unary_stream_rpc_method_handler if method.server_streaming else \
                grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(implementation, request_deserializer=parse, response_serializer=serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Server reflection under both names stock tools ask for: grpc.reflection.v1 (current grpcurl, Postman)
    and v1alpha (older tools). The two are the same messages in another package, so one servicer answers
    both (grpcio-reflection ships only v1alpha)."""
    names = [*service_names, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection.aio.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo, request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    for service in (reflection.SERVICE_NAME, REFLECTION_V1):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service,
                                                                              {"ServerReflectionInfo": handler}),))


def _refusing_undecodable(implementation: Callable) -> Callable:
    async def handle(request: Message | Undecodable, context: grpc.aio.ServicerContext) -> Message:
        if isinstance(request, Undecodable):
            client_errors.note("undecodable request", request.message)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await implementation(request, context)

    return handle


def channel_options(cfg: ServingConfig, own_connection: bool = False) -> list[tuple[str, int]]:
    """Channels reconnect quickly: an agent restarted by the launcher is back within ~0.1-1 s.

    gRPC gives all the channels of a process to one address one connection; `own_connection` gives
    this channel a connection of its own, which (with several coordinators on one port) may reach
    another coordinator.
    """
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        *([("grpc.use_local_subchannel_pool", 1)] if own_connection else []),
    ]


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ServeError(f"cannot read TLS file {path}: {exc.strerror}") from None


def tls_enabled(cfg: ServingConfig) -> bool:
    return bool(cfg.tls_cert)


def own_address(port: int, pid: int) -> str:
    """Where process `pid`, one of several sharing `port`, is reached alone: an abstract Unix socket named by
    both, local to this host and plaintext even when TLS is configured (its clients are on this host)."""
    return f"unix-abstract:tactical-{port}-{pid}"


def _local_socket(address: str) -> bool:
    return address.startswith(("unix:", "unix-abstract:"))


def bind(server: grpc.aio.Server, host: str, port: int, cfg: ServingConfig) -> int:
    """Listen on host:port (0 = any free port) with TLS when configured, and at own_address() when the port is
    shared (serving.reuse_port); return the port."""
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
    if cfg.reuse_port:
        own = own_address(bound, os.getpid())
        if not server.add_insecure_port(own):
            raise ServeError(f"cannot listen on {own}")
        log.info("sharing port %d with other processes (serving.reuse_port); this one alone at %s", bound, own)
    return bound


def aio_channel(address: str, cfg: ServingConfig, *, own_connection: bool = False) -> grpc.aio.Channel:
    """A channel to host:port (TLS when configured) or to a local socket (plaintext); see channel_options."""
    options = channel_options(cfg, own_connection)
    if tls_enabled(cfg) and not _local_socket(address):
        creds = grpc.ssl_channel_credentials(_read(cfg.tls_ca), _read(cfg.tls_key), _read(cfg.tls_cert))
        return grpc.aio.secure_channel(address, creds, options=options)
    return grpc.aio.insecure_channel(address, options=options)


def sync_channel(address: str, cfg: ServingConfig, *, own_connection: bool = False) -> grpc.Channel:
    """As aio_channel, blocking."""
    options = channel_options(cfg, own_connection)
    if tls_enabled(cfg) and not _local_socket(address):
        creds = grpc.ssl_channel_credentials(_read(cfg.tls_ca), _read(cfg.tls_key), _read(cfg.tls_cert))
        return grpc.secure_channel(address, creds, options=options)
    return grpc.insecure_channel(address, options=options)


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
