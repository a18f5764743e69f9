from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AuditRecord(_message.Message):
    __slots__ = ("run", "seq", "answered_ms", "window", "decision", "traceparent", "close", "shadow_version", "shadow_action", "event", "backtest")
    RUN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ACTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    BACKTEST_FIELD_NUMBER: _ClassVar[int]
    run: str
    seq: int
    answered_ms: int
    window: bytes
    decision: bytes
    traceparent: str
    close: float
    shadow_version: int
    shadow_action: int
    event: str
    backtest: bool
    def __init__(self, run: _Optional[str] = ..., seq: _Optional[int] = ..., answered_ms: _Optional[int] = ..., window: _Optional[bytes] = ..., decision: _Optional[bytes] = ..., traceparent: _Optional[str] = ..., close: _Optional[float] = ..., shadow_version: _Optional[int] = ..., shadow_action: _Optional[int] = ..., event: _Optional[str] = ..., backtest: _Optional[bool] = ...) -> None: ...
