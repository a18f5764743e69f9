from tactical.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecideRequest(_message.Message):
    __slots__ = ("request_id", "window", "bars", "bar", "instrument", "backtest")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    BAR_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    window: _common_pb2.Window
    bars: _common_pb2.BarSeries
    bar: _common_pb2.Bar
    instrument: str
    backtest: bool
    def __init__(self, request_id: _Optional[str] = ..., window: _Optional[_Union[_common_pb2.Window, _Mapping]] = ..., bars: _Optional[_Union[_common_pb2.BarSeries, _Mapping]] = ..., bar: _Optional[_Union[_common_pb2.Bar, _Mapping]] = ..., instrument: _Optional[str] = ..., backtest: _Optional[bool] = ...) -> None: ...

class DecideBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[DecideRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[DecideRequest, _Mapping]]] = ...) -> None: ...

class DecideBatchResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ...) -> None: ...

class AgentVote(_message.Message):
    __slots__ = ("agent", "ok", "action", "probabilities", "value", "latency_ms", "error")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    agent: str
    ok: bool
    action: _common_pb2.Action
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    value: float
    latency_ms: float
    error: str
    def __init__(self, agent: _Optional[str] = ..., ok: _Optional[bool] = ..., action: _Optional[_Union[_common_pb2.Action, str]] = ..., probabilities: _Optional[_Iterable[float]] = ..., value: _Optional[float] = ..., latency_ms: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("request_id", "action", "confidence", "probabilities", "votes", "model_version", "latency_ms", "degraded", "reason", "error", "bar_time_ms", "instrument")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BAR_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    action: _common_pb2.Action
    confidence: float
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    votes: _containers.RepeatedCompositeFieldContainer[AgentVote]
    model_version: int
    latency_ms: float
    degraded: bool
    reason: str
    error: _common_pb2.Error
    bar_time_ms: int
    instrument: str
    def __init__(self, request_id: _Optional[str] = ..., action: _Optional[_Union[_common_pb2.Action, str]] = ..., confidence: _Optional[float] = ..., probabilities: _Optional[_Iterable[float]] = ..., votes: _Optional[_Iterable[_Union[AgentVote, _Mapping]]] = ..., model_version: _Optional[int] = ..., latency_ms: _Optional[float] = ..., degraded: _Optional[bool] = ..., reason: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., bar_time_ms: _Optional[int] = ..., instrument: _Optional[str] = ...) -> None: ...
