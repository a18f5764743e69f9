from tactical.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActRequest(_message.Message):
    __slots__ = ("seq", "model_version", "windows", "shadow_version")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    seq: int
    model_version: int
    windows: _common_pb2.WindowBatch
    shadow_version: int
    def __init__(self, seq: _Optional[int] = ..., model_version: _Optional[int] = ..., windows: _Optional[_Union[_common_pb2.WindowBatch, _Mapping]] = ..., shadow_version: _Optional[int] = ...) -> None: ...

class ActResponse(_message.Message):
    __slots__ = ("seq", "model_version", "probabilities", "values", "inference_us", "error", "shadow_probabilities", "shadow_error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SHADOW_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    model_version: int
    probabilities: bytes
    values: bytes
    inference_us: float
    error: _common_pb2.Error
    shadow_probabilities: bytes
    shadow_error: str
    def __init__(self, seq: _Optional[int] = ..., model_version: _Optional[int] = ..., probabilities: _Optional[bytes] = ..., values: _Optional[bytes] = ..., inference_us: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., shadow_probabilities: _Optional[bytes] = ..., shadow_error: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent", "loaded_versions", "stored_versions", "active_requests", "windows_served", "batches", "p50_inference_us", "p99_inference_us", "core", "pid", "uptime_s", "sha256", "broken_versions", "feature_references", "instance", "feature_settings")
    class Sha256Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    class BrokenVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    class FeatureReferencesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    class FeatureSettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STORED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_SERVED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    P50_INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    P99_INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    CORE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BROKEN_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_REFERENCES_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    stored_versions: _containers.RepeatedScalarFieldContainer[int]
    active_requests: int
    windows_served: int
    batches: int
    p50_inference_us: float
    p99_inference_us: float
    core: int
    pid: int
    uptime_s: float
    sha256: _containers.ScalarMap[int, str]
    broken_versions: _containers.ScalarMap[int, str]
    feature_references: _containers.ScalarMap[int, str]
    instance: str
    feature_settings: _containers.ScalarMap[int, str]
    def __init__(self, agent: _Optional[str] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., stored_versions: _Optional[_Iterable[int]] = ..., active_requests: _Optional[int] = ..., windows_served: _Optional[int] = ..., batches: _Optional[int] = ..., p50_inference_us: _Optional[float] = ..., p99_inference_us: _Optional[float] = ..., core: _Optional[int] = ..., pid: _Optional[int] = ..., uptime_s: _Optional[float] = ..., sha256: _Optional[_Mapping[int, str]] = ..., broken_versions: _Optional[_Mapping[int, str]] = ..., feature_references: _Optional[_Mapping[int, str]] = ..., instance: _Optional[str] = ..., feature_settings: _Optional[_Mapping[int, str]] = ...) -> None: ...

class StageChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: StageHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[StageHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class StageHeader(_message.Message):
    __slots__ = ("agent", "version", "sha256", "size_bytes", "manifest_json")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    agent: str
    version: int
    sha256: str
    size_bytes: int
    manifest_json: str
    def __init__(self, agent: _Optional[str] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., manifest_json: _Optional[str] = ...) -> None: ...

class StageResult(_message.Message):
    __slots__ = ("agent", "version", "already_staged")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_STAGED_FIELD_NUMBER: _ClassVar[int]
    agent: str
    version: int
    already_staged: bool
    def __init__(self, agent: _Optional[str] = ..., version: _Optional[int] = ..., already_staged: _Optional[bool] = ...) -> None: ...
