"""Load OHLCV bars from CSV files in the usual layouts.

Accepted: a header row; a time column named time, timestamp, datetime, date or ts (or a
`date` plus a `time` column), and open, high, low, close, volume, in any case and order.
Extra columns are ignored. The file is UTF-8, or UTF-16/UTF-32 with a byte-order mark (what
spreadsheets write as "Unicode"). Time is ISO 8601 text (naive times are UTC) or a Unix epoch
number in seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude (one
unit for the whole column). Every bad row is an error naming its line and problem.
"""

from __future__ import annotations

import array
import codecs
import csv
import datetime as dt
import io
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from market.bars import BarDataError, Bars, validate_bars
from tactical.atomic import atomic_open

_TIME_COLUMNS = ("time", "timestamp", "datetime", "date", "ts")
_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
_TEXT_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M",
                 "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M")
# UTF-32 before UTF-16: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# Epoch units by magnitude, as digit counts tell them apart (seconds have 10 digits today, milliseconds 13,
# microseconds 16, nanoseconds 19): (unit, bound on |number|, milliseconds per unit). Nanoseconds end
# where int64 does (2262-04-11), as numpy and pandas hold them.
_EPOCH_UNITS = (("seconds", Decimal(10) ** 11, Decimal(1000)),
                ("milliseconds", Decimal(10) ** 14, Decimal(1)),
                ("microseconds", Decimal(10) ** 17, Decimal("1e-3")),
                ("nanoseconds", Decimal(2) ** 63, Decimal("1e-6")))
# The times datetime can show (years 1 to 9999), in milliseconds.
_MIN_MS = -62_135_596_800_000
_MAX_MS = 253_402_300_799_999


class _TimeColumn:
    """Reads the times of one column: ISO 8601 text, or epoch numbers all in the unit of the first one."""

    def __init__(self) -> None:
        self.first_epoch: tuple[str, str] | None = None  # (text, unit) of the column's first epoch number

    def ms(self, text: str) -> int:
        """Milliseconds since the epoch; ValueError naming the problem."""
        text = text.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            ms = _iso_ms(text)
        else:
            ms = self._epoch_ms(text, number)
        if not _MIN_MS <= ms <= _MAX_MS:
            raise ValueError(f"time {text!r} is out of range (years 1 to 9999)")
        return ms

    def _epoch_ms(self, text: str, number: Decimal) -> int:
        if not number.is_finite():
            raise ValueError(f"time {text!r} is not finite")
        unit, ms_per_unit = next(((unit, per) for unit, bound, per in _EPOCH_UNITS if abs(number) < bound),
                                 (None, None))
        if unit is None:
            raise ValueError(f"epoch time {text} is out of range (the largest is {2 ** 63 - 1} nanoseconds, "
                             f"2262-04-11)")
        if self.first_epoch is None:
            self.first_epoch = (text, unit)
        elif unit != self.first_epoch[1]:
            first, first_unit = self.first_epoch
            raise ValueError(f"epoch time {text} is in {unit} by its size, but the column's first, {first}, is in "
                             f"{first_unit}; use one unit for the whole column")
        return int((number * ms_per_unit).to_integral_value())


def _iso_ms(text: str) -> int:
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
        stamp = stamp.replace(tzinfo=dt.UTC)
    return round(stamp.timestamp() * 1000)


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch from ISO text or an epoch number (its unit read from its magnitude)."""
    return _TimeColumn().ms(text)


def _line_after(head: str) -> int:
    """The 1-based line of the character after `head`, counting line ends as the csv module does."""
    return head.count("\n") + head.count("\r") - head.count("\r\n") + 1


def _encoding(head: bytes) -> tuple[bytes, str]:
    """(byte-order mark, encoding) for a file starting with `head`: UTF-8 when there is no mark."""
    return next(((bom, enc) for bom, enc in _BOMS if head.startswith(bom)), (b"", "utf-8"))


def _text_problem(path: Path) -> str:
    """Decode the whole file to find where it stops being text; raises BarDataError naming the line.

    Only for the error path: loading streams the file instead of holding it in memory."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BarDataError(f"{path}: cannot open: {exc.strerror}") from exc
    bom, encoding = _encoding(data)
    data = data[len(bom):]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = _line_after(data[:exc.start].decode(encoding))
        bad = " ".join(f"0x{b:02x}" for b in data[exc.start:exc.end])
        raise BarDataError(f"{path}: line {line}: not valid {encoding.upper()} ({exc.reason} {bad}); "
                           f"save the file as UTF-8") from None
    nul = text.find("\x00")
    if nul >= 0:
        raise BarDataError(f"{path}: line {_line_after(text[:nul])}: a NUL character (UTF-16 text without a byte-order "
                           f"mark?); save the file as UTF-8")
    return "the file is not text"


def _open_text(path: Path) -> io.TextIOWrapper:
    """The file as a text stream: UTF-8, or what its byte-order mark says (the mark skipped)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 (returned, wrapped in the text stream that closes it)
    except OSError as exc:
        raise BarDataError(f"{path}: cannot open: {exc.strerror}") from exc
    head = raw.read(4)
    bom, encoding = _encoding(head)
    if not bom and b"\x00" in head:  # UTF-16/32 without a mark: the csv module would read NULs as text
        raw.close()
        raise BarDataError(f"{path}: {_text_problem(path)}")
    raw.seek(len(bom))
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


def load_bars_csv(path: str | Path) -> Bars:
    """Read and validate the bars of a CSV file; raise BarDataError naming the first bad line."""
    path = Path(path)
    with _open_text(path) as text:
        reader = csv.reader(text)
        try:
            times, values, lines = _read_rows(path, reader)
        except UnicodeDecodeError:
            raise BarDataError(f"{path}: {_text_problem(path)}") from None
        except csv.Error as exc:  # e.g. a field over the csv module's size limit: not a bar file
            raise BarDataError(f"{path}: line {reader.line_num}: {exc}") from None
    v = np.frombuffer(values, dtype=np.float64).reshape(-1, len(_PRICE_COLUMNS))
    bars = Bars.from_arrays(np.frombuffer(times, dtype=np.int64), v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4])
    validate_bars(bars, name_of=lambda i: f"{path}: line {lines[i]}")
    return bars


def _read_rows(path: Path, reader) -> tuple[array.array, array.array, array.array]:
    """Times (ms), open, high, low, close, volume row after row, and each row's line; header checked.

    Compact arrays, not lists of Python objects: a million bars take tens of MB, not hundreds."""
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
    time_column = _TimeColumn()
    times, values, lines = array.array("q"), array.array("d"), array.array("q")
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{path}: line {line}"
        if len(row) < len(header):
            raise BarDataError(f"{where}: expected {len(header)} fields, got {len(row)}")
        try:
            times.append(time_column.ms(" ".join(row[i] for i in time_cols)))
        except ValueError as exc:
            raise BarDataError(f"{where}: {exc}") from None
        try:
            values.extend([float(row[i]) for i in price_idx])
        except ValueError:
            bad = next(c for c, i in zip(_PRICE_COLUMNS, price_idx, strict=True) if not _is_float(row[i]))
            raise BarDataError(f"{where}: {bad} {row[columns[bad]]!r} is not a number") from None
        lines.append(line)
    if not times:
        raise BarDataError(f"{path}: no bars after the header")
    return times, values, lines


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
        for t, o, h, lo, c, v in zip(bars.time.tolist(), bars.open.tolist(), bars.high.tolist(), bars.low.tolist(),
                                     bars.close.tolist(), bars.volume.tolist(), strict=True):
            stamp = dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")
            writer.writerow([stamp, repr(o), repr(h), repr(lo), repr(c), repr(v)])
