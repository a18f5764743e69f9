"""Load OHLCV bars from CSV files in the usual layouts.

Accepted: a header row; a time column named time, timestamp, datetime, date or ts (or a
`date` plus a `time` column), and open, high, low, close, volume, in any case and order.
Extra columns are ignored. Time is ISO 8601 text (naive times are UTC) or a Unix epoch
number in seconds or milliseconds. Every bad row is an error naming its line and problem.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

from market.bars import BarDataError, Bars, validate_bars
from tactical.atomic import atomic_open

_TIME_COLUMNS = ("time", "timestamp", "datetime", "date", "ts")
_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
_TEXT_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M",
                 "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M")


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch from ISO text or an epoch number (seconds if < 1e11, else ms)."""
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not np.isfinite(number):
            raise ValueError(f"time {text!r} is not finite")
        return int(round(number if abs(number) >= 1e11 else number * 1000))
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        for fmt in _TEXT_FORMATS:
            try:
                stamp = dt.datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"cannot read time {text!r} (expected ISO 8601 or a Unix epoch number)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(round(stamp.timestamp() * 1000))


def load_bars_csv(path: str | Path) -> Bars:
    """Read and validate the bars of a CSV file; raise BarDataError naming the first bad line."""
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise BarDataError(f"{path}: cannot open: {exc.strerror}") from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise BarDataError(f"{path}: the file is empty")
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        missing = [c for c in _PRICE_COLUMNS if c not in columns]
        time_cols = _time_columns(columns)
        if time_cols is None:
            missing.insert(0, "time")
        if missing:
            raise BarDataError(f"{path}: missing column(s) {', '.join(missing)} "
                               f"(header: {', '.join(h.strip() for h in header)})")
        price_idx = [columns[c] for c in _PRICE_COLUMNS]
        times: list[int] = []
        values: list[list[float]] = []
        lines: list[str] = []
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            where = f"{path}: line {line}"
            if len(row) < len(header):
                raise BarDataError(f"{where}: expected {len(header)} fields, got {len(row)}")
            try:
                times.append(parse_time_ms(" ".join(row[i] for i in time_cols)))
            except ValueError as exc:
                raise BarDataError(f"{where}: {exc}") from None
            try:
                values.append([float(row[i]) for i in price_idx])
            except ValueError:
                bad = next(c for c, i in zip(_PRICE_COLUMNS, price_idx) if not _is_float(row[i]))
                raise BarDataError(f"{where}: {bad} {row[columns[bad]]!r} is not a number") from None
            lines.append(where)
    if not times:
        raise BarDataError(f"{path}: no bars after the header")
    v = np.asarray(values, dtype=np.float64)
    bars = Bars.from_arrays(times, v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4])
    validate_bars(bars, names=lines)
    return bars


def _time_columns(columns: dict[str, int]) -> list[int] | None:
    if "date" in columns and "time" in columns:
        return [columns["date"], columns["time"]]
    for name in _TIME_COLUMNS:
        if name in columns:
            return [columns[name]]
    return None


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_bars_csv(bars: Bars, path: str | Path) -> None:
    """Write bars as CSV (ISO 8601 UTC times), the layout load_bars_csv reads back."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time", *_PRICE_COLUMNS])
        for t, o, h, l, c, v in zip(bars.time.tolist(), bars.open.tolist(), bars.high.tolist(), bars.low.tolist(),
                                    bars.close.tolist(), bars.volume.tolist()):
            stamp = dt.datetime.fromtimestamp(t / 1000, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")
            writer.writerow([stamp, repr(o), repr(h), repr(l), repr(c), repr(v)])
