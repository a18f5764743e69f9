"""The wire: numpy arrays <-> messages, with the validation every server applies, and the protocol's constants.

Windows travel as little-endian float32 bytes with their shape; bars as repeated messages.
Decoding checks the shape and every value and raises WireError (a ValueError) whose message
names the problem, for the servers to return as INVALID_ARGUMENT. A window's columns are the
seven features in FEATURE_NAMES order: part of the contract, so they are defined here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from tactical.errors import UserError
from tactical.v1 import common_pb2

F32 = np.dtype("<f4")
FEATURE_NAMES = (
    "fvg_bullish_active",
    "fvg_bearish_active",
    "fvg_nearest_level",
    "fvg_age",
    "fvg_mitigation_signal",
    "price_momentum_5",
    "volume_ratio",
)
N_FEATURES = len(FEATURE_NAMES)
STAGE_CHUNK = 1 << 20  # StageVersion sends a blob in data chunks of at most this many bytes
MAX_REQUEST_ID = 64  # characters of a client's request_id
DEFAULT_INSTRUMENT = "default"  # what a request that names no instrument is for
_INSTRUMENT = re.compile(r"[A-Za-z0-9._\-/:^=+#]{1,64}")
ADMIN_TOKEN_HEADER = "x-tactical-admin-token"  # metadata key of the admin token on admin calls
ERROR_REASON_HEADER = "x-tactical-error-reason"  # trailing metadata key of Error.reason on unary calls
NO_HISTORY = "NO_HISTORY"  # Error.reason: send the instrument's history again
TRACEPARENT_HEADER = "traceparent"  # W3C trace context a client may send; recorded in the decision's audit row
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


class BarColumns(Protocol):
    """OHLCV columns of equal length (market.bars.Bars is one): what a BarSeries carries."""

    time: np.ndarray  # int64 ms since the epoch
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class WireError(UserError, ValueError):
    """A message that breaks the contract; the text names the problem."""


def window_values(window: np.ndarray) -> np.ndarray:
    """The window as contiguous little-endian float32, refusing what would not convert faithfully.

    numpy would turn text into a ValueError, drop the imaginary part of complex numbers with only a
    warning, and make values past float32's range inf; each is a WireError naming the problem here.
    """
    values = np.asarray(window)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise WireError(f"a window must hold real numbers (integers or floats), got dtype {values.dtype}")
    with np.errstate(over="raise"):
        try:
            return np.ascontiguousarray(values, dtype=F32)
        except FloatingPointError:
            peak = np.abs(values[np.isfinite(values)]).max()
            raise WireError(f"a window holds {peak:g}, past float32's range (+-3.4e38)") from None


def encode_window(window: np.ndarray) -> common_pb2.Window:
    w = window_values(window)
    if w.ndim != 2:
        raise WireError(f"a window is 2-D (bars, features), got shape {w.shape}")
    return common_pb2.Window(data=w.tobytes(), bars=w.shape[0], features=w.shape[1])


def encode_batch(windows: np.ndarray) -> common_pb2.WindowBatch:
    w = np.ascontiguousarray(windows, dtype=F32)
    return common_pb2.WindowBatch(data=w.tobytes(), count=w.shape[0], bars=w.shape[1], features=w.shape[2])


def _check_finite(values: np.ndarray, what: str) -> None:
    """values: (count, bars, features)."""
    bad = ~np.isfinite(values)
    if bad.any():
        i, bar, feature = (int(x) for x in np.argwhere(bad)[0])
        prefix = f"window {i} " if values.shape[0] > 1 else ""
        raise WireError(f"{what}{prefix}holds {values[i, bar, feature]} at bar {bar}, feature {feature} "
                        f"({FEATURE_NAMES[feature] if feature < len(FEATURE_NAMES) else '?'}); values must be finite")


def _decode(data: bytes, count: int, bars: int, features: int, window: int, what: str) -> np.ndarray:
    if not data and not bars and not features:
        raise WireError(f"{what}is empty")
    if (bars, features) != (window, N_FEATURES):
        raise WireError(f"{what}must be {window} bars x {N_FEATURES} features, got {bars} x {features}")
    need = count * bars * features * F32.itemsize
    if len(data) != need:
        raise WireError(f"{what}data is {len(data)} bytes; {count} x {bars} x {features} float32 needs {need}")
    values = np.frombuffer(data, dtype=F32).reshape(count, bars, features)
    _check_finite(values, what)
    return values


def decode_window(msg: common_pb2.Window, window: int) -> np.ndarray:
    """(window, 7) float32 read-only view of the message's bytes."""
    return _decode(msg.data, 1, msg.bars, msg.features, window, "window ")[0]


def decode_batch(msg: common_pb2.WindowBatch, window: int, max_count: int) -> np.ndarray:
    """(count, window, 7) float32 read-only view of the message's bytes."""
    if not 1 <= msg.count <= max_count:
        raise WireError(f"a batch holds 1 to {max_count} windows, got {msg.count}")
    return _decode(msg.data, msg.count, msg.bars, msg.features, window, "batch ")


def encode_bars(bars: BarColumns) -> common_pb2.BarSeries:
    return common_pb2.BarSeries(bars=[
        common_pb2.Bar(time_ms=t, open=o, high=h, low=low, close=c, volume=v)
        for t, o, h, low, c, v in zip(bars.time.tolist(), bars.open.tolist(), bars.high.tolist(), bars.low.tolist(),
                                      bars.close.tolist(), bars.volume.tolist(), strict=True)])


def decode_bars(msg: common_pb2.BarSeries) -> tuple[np.ndarray, np.ndarray]:
    """(time int64 (n,), open/high/low/close/volume float64 (n, 5)), not yet validated (market.bars does that)."""
    n = len(msg.bars)
    time = np.fromiter((b.time_ms for b in msg.bars), dtype=np.int64, count=n)
    cols = np.fromiter((x for b in msg.bars for x in (b.open, b.high, b.low, b.close, b.volume)), dtype=np.float64,
                       count=5 * n).reshape(n, 5)
    return time, cols


def instrument_name(text: str) -> str:
    """The request's instrument: `text` if it is a valid name (1-64 of letters, digits and . _ - / : ^ = + #),
    DEFAULT_INSTRUMENT if empty, else WireError."""
    if not text:
        return DEFAULT_INSTRUMENT
    if _INSTRUMENT.fullmatch(text) is None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise WireError(f"instrument {shown!r} is not a valid name: 1 to 64 characters from letters, digits and "
                        f". _ - / : ^ = + #")
    return text


def traceparent(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The W3C `traceparent` among a call's metadata, or "" when absent or malformed (the spec says ignore it)."""
    for key, value in metadata or ():
        if key == TRACEPARENT_HEADER:
            value = value.decode("ascii", "replace") if isinstance(value, bytes) else value
            version, _, rest = value.partition("-")
            valid = (_TRACEPARENT.fullmatch(value) is not None and version != "ff"
                     and rest[:32] != "0" * 32 and rest[33:49] != "0" * 16)
            return value if valid else ""
    return ""


def traceparent_metadata(value: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata that carries a client's trace context (none when `value` is empty)."""
    return ((TRACEPARENT_HEADER, value),) if value else ()
