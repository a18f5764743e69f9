from tactical.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("agent", "address", "connected", "info", "error", "problem")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    agent: str
    address: str
    connected: bool
    info: _agent_pb2.AgentInfo
    error: str
    problem: str
    def __init__(self, agent: _Optional[str] = ..., address: _Optional[str] = ..., connected: _Optional[bool] = ..., info: _Optional[_Union[_agent_pb2.AgentInfo, _Mapping]] = ..., error: _Optional[str] = ..., problem: _Optional[str] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("active_version", "serving", "agents", "decisions", "degraded_decisions", "p50_ms", "p99_ms", "pid", "uptime_s", "audit_dropped", "audit_policy", "audit_trouble", "audit_logged", "audit_waiting", "audit_spilled", "audit_backlog_bytes", "health_json", "guard", "guard_time_ms")
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    AUDIT_DROPPED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_POLICY_FIELD_NUMBER: _ClassVar[int]
    AUDIT_TROUBLE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_LOGGED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_WAITING_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SPILLED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_JSON_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    GUARD_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    active_version: int
    serving: bool
    agents: _containers.RepeatedCompositeFieldContainer[AgentStatus]
    decisions: int
    degraded_decisions: int
    p50_ms: float
    p99_ms: float
    pid: int
    uptime_s: float
    audit_dropped: int
    audit_policy: str
    audit_trouble: str
    audit_logged: int
    audit_waiting: int
    audit_spilled: int
    audit_backlog_bytes: int
    health_json: str
    guard: str
    guard_time_ms: int
    def __init__(self, active_version: _Optional[int] = ..., serving: _Optional[bool] = ..., agents: _Optional[_Iterable[_Union[AgentStatus, _Mapping]]] = ..., decisions: _Optional[int] = ..., degraded_decisions: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., pid: _Optional[int] = ..., uptime_s: _Optional[float] = ..., audit_dropped: _Optional[int] = ..., audit_policy: _Optional[str] = ..., audit_trouble: _Optional[str] = ..., audit_logged: _Optional[int] = ..., audit_waiting: _Optional[int] = ..., audit_spilled: _Optional[int] = ..., audit_backlog_bytes: _Optional[int] = ..., health_json: _Optional[str] = ..., guard: _Optional[str] = ..., guard_time_ms: _Optional[int] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("expected_version",)
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    expected_version: int
    def __init__(self, expected_version: _Optional[int] = ...) -> None: ...

class ActivationResult(_message.Message):
    __slots__ = ("active_version", "previous_version", "switched_ms")
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    SWITCHED_MS_FIELD_NUMBER: _ClassVar[int]
    active_version: int
    previous_version: int
    switched_ms: int
    def __init__(self, active_version: _Optional[int] = ..., previous_version: _Optional[int] = ..., switched_ms: _Optional[int] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("version", "ttl_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    version: int
    ttl_ms: float
    def __init__(self, version: _Optional[int] = ..., ttl_ms: _Optional[float] = ...) -> None: ...

class PrepareResult(_message.Message):
    __slots__ = ("version", "active_version", "rollback_target")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_TARGET_FIELD_NUMBER: _ClassVar[int]
    version: int
    active_version: int
    rollback_target: int
    def __init__(self, version: _Optional[int] = ..., active_version: _Optional[int] = ..., rollback_target: _Optional[int] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentVersions(_message.Message):
    __slots__ = ("agent", "loaded_versions", "stored_versions", "error")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STORED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    agent: str
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    stored_versions: _containers.RepeatedScalarFieldContainer[int]
    error: str
    def __init__(self, agent: _Optional[str] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., stored_versions: _Optional[_Iterable[int]] = ..., error: _Optional[str] = ...) -> None: ...

class VersionList(_message.Message):
    __slots__ = ("active_version", "history", "agents")
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    active_version: int
    history: _containers.RepeatedScalarFieldContainer[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentVersions]
    def __init__(self, active_version: _Optional[int] = ..., history: _Optional[_Iterable[int]] = ..., agents: _Optional[_Iterable[_Union[AgentVersions, _Mapping]]] = ...) -> None: ...

class GetShadowRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetShadowRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ShadowReport(_message.Message):
    __slots__ = ("shadow_version", "active_version", "since_ms", "decisions", "agreed", "active_pnl", "shadow_pnl", "transaction_cost")
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    AGREED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PNL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_PNL_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_COST_FIELD_NUMBER: _ClassVar[int]
    shadow_version: int
    active_version: int
    since_ms: int
    decisions: int
    agreed: int
    active_pnl: bytes
    shadow_pnl: bytes
    transaction_cost: float
    def __init__(self, shadow_version: _Optional[int] = ..., active_version: _Optional[int] = ..., since_ms: _Optional[int] = ..., decisions: _Optional[int] = ..., agreed: _Optional[int] = ..., active_pnl: _Optional[bytes] = ..., shadow_pnl: _Optional[bytes] = ..., transaction_cost: _Optional[float] = ...) -> None: ...
