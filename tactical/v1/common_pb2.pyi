from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_SHORT: _ClassVar[Action]
    ACTION_HOLD: _ClassVar[Action]
    ACTION_LONG: _ClassVar[Action]
ACTION_UNSPECIFIED: Action
ACTION_SHORT: Action
ACTION_HOLD: Action
ACTION_LONG: Action

class Window(_message.Message):
    __slots__ = ("data", "bars", "features")
    DATA_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    bars: int
    features: int
    def __init__(self, data: _Optional[bytes] = ..., bars: _Optional[int] = ..., features: _Optional[int] = ...) -> None: ...

class WindowBatch(_message.Message):
    __slots__ = ("data", "count", "bars", "features")
    DATA_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BARS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    count: int
    bars: int
    features: int
    def __init__(self, data: _Optional[bytes] = ..., count: _Optional[int] = ..., bars: _Optional[int] = ..., features: _Optional[int] = ...) -> None: ...

class Bar(_message.Message):
    __slots__ = ("time_ms", "open", "high", "low", "close", "volume")
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    def __init__(self, time_ms: _Optional[int] = ..., open: _Optional[float] = ..., high: _Optional[float] = ..., low: _Optional[float] = ..., close: _Optional[float] = ..., volume: _Optional[float] = ...) -> None: ...

class BarSeries(_message.Message):
    __slots__ = ("bars",)
    BARS_FIELD_NUMBER: _ClassVar[int]
    bars: _containers.RepeatedCompositeFieldContainer[Bar]
    def __init__(self, bars: _Optional[_Iterable[_Union[Bar, _Mapping]]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
