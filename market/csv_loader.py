"""Load OHLCV bars from CSV files in the usual layouts (and Parquet files, with pyarrow).

Accepted: a header row; a time column named time, timestamp, datetime, date or ts (or a
`date` plus a `time` column), and open, high, low, close, volume, in any case and order.
Without a named time column, an unnamed first column holding times is the time column: what
pandas' `DataFrame.to_csv()` writes for a DatetimeIndex. Extra columns are ignored. The file
is UTF-8, or UTF-16/UTF-32 with a byte-order mark (what spreadsheets write as "Unicode"). Time
is ISO 8601 text (naive times are UTC) or a Unix epoch number in seconds, milliseconds,
microseconds or nanoseconds, told apart by magnitude (one unit for the whole column). Every
bad row is an error naming its line and problem.
"""

from __future__ import annotations

import array
import codecs
import csv
import datetime as dt
import io
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from market.bars import BarDataError, Bars, bar_stamp, validate_bars
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
    """Reads the times of one column: ISO 8601 text, or epoch numbers all in the unit of the first one.

    `text_only`: refuse epoch numbers. For the unnamed first column of a pandas export, where numbers
    are a RangeIndex (0, 1, 2...) that would otherwise read as seconds of 1970.
    """

    def __init__(self, *, text_only: bool = False) -> None:
        self.first_epoch: tuple[str, str] | None = None  # (text, unit) of the column's first epoch number
        self.text_only = text_only

    def ms(self, text: str) -> int:
        """Milliseconds since the epoch; ValueError naming the problem."""
        text = text.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            ms = _iso_ms(text)
        else:
            if self.text_only:
                raise ValueError(f"the unnamed first column holds {text!r}, not a time (a pandas index without "
                                 f"times?); name the time column time, timestamp, datetime, date or ts")
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
    twice = [c for c in dict.fromkeys(name.strip().lower() for name in header)
             if c and sum(name.strip().lower() == c for name in header) > 1]
    if twice:
        raise BarDataError(f"{path}: column(s) {', '.join(twice)} appear more than once (header: "
                           f"{', '.join(h.strip() for h in header)}): which one holds the bars is not clear")
    missing = [c for c in _PRICE_COLUMNS if c not in columns]
    time_cols = _time_columns(columns, header)
    if time_cols is None:
        missing.insert(0, "time")
    if missing:
        raise BarDataError(f"{path}: missing column(s) {', '.join(missing)} "
                           f"(header: {', '.join(h.strip() for h in header)})")
    price_idx = [columns[c] for c in _PRICE_COLUMNS]
    time_column = _TimeColumn(text_only=time_cols == [_UNNAMED_FIRST] and not header[_UNNAMED_FIRST].strip())
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


_UNNAMED_FIRST = 0


def _time_columns(columns: dict[str, int], header: list[str]) -> list[int] | None:
    if "date" in columns and "time" in columns:
        return [columns["date"], columns["time"]]
    for name in _TIME_COLUMNS:
        if name in columns:
            return [columns[name]]
    if header and not header[_UNNAMED_FIRST].strip():  # DataFrame.to_csv(): the index, under an empty header
        return [_UNNAMED_FIRST]
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
            writer.writerow([bar_stamp(t), repr(o), repr(h), repr(lo), repr(c), repr(v)])


# ---------------------------------------------------------------- columns of other containers (pandas, Parquet)

_PER_MS = {"us": 1_000, "ns": 1_000_000, "ps": 1_000_000_000}  # units finer than a millisecond: per millisecond
_INT_EPOCH_PER_MS = {"milliseconds": 1, "microseconds": 1_000, "nanoseconds": 1_000_000}


def column_times_ms(values: np.ndarray, name_of: Callable[[int], str]) -> np.ndarray:
    """Milliseconds since the epoch (int64) from a column of times, by its dtype; BarDataError naming the row.

    numpy datetime64 in any unit (UTC; pandas 2 holds nanoseconds, pandas 3 microseconds, Parquet
    files any of them, so the unit is read from the dtype, never assumed), epoch numbers (unit by
    magnitude, as in CSV), or text (what the CSV loader reads). Sub-millisecond times round half to
    even, as the CSV loader rounds them.
    """
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return _datetime64_ms(values, name_of)
    if values.dtype.kind in "iuf":
        return _epoch_column_ms(values, name_of)
    column = _TimeColumn()
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values.tolist()):
        try:
            out[i] = column.ms(str(value))
        except ValueError as exc:
            raise BarDataError(f"{name_of(i)}: {exc}") from None
    return out


def _round_div(numbers: np.ndarray, divisor: int) -> np.ndarray:
    """int64 numbers / divisor rounded half to even, in exact integer arithmetic."""
    if divisor == 1:
        return numbers
    quotient, remainder = np.divmod(numbers, divisor)
    return quotient + ((2 * remainder > divisor) | ((2 * remainder == divisor) & (quotient % 2 == 1)))


def _datetime64_ms(values: np.ndarray, name_of: Callable[[int], str]) -> np.ndarray:
    missing = np.flatnonzero(np.isnat(values))
    if missing.size:
        raise BarDataError(f"{name_of(int(missing[0]))}: the time is missing (NaT)")
    unit, count = np.datetime_data(values.dtype)
    if unit not in _PER_MS:  # milliseconds and coarser: exact in milliseconds
        return values.astype("datetime64[ms]").view(np.int64)
    if _PER_MS[unit] % count:
        raise BarDataError(f"unsupported time unit datetime64[{count}{unit}]")
    return _round_div(values.view(np.int64), _PER_MS[unit] // count)


def _epoch_column_ms(values: np.ndarray, name_of: Callable[[int], str]) -> np.ndarray:
    if not values.size:
        return np.zeros(0, dtype=np.int64)
    magnitude = np.abs(values.astype(np.float64))
    bad = np.flatnonzero(~np.isfinite(magnitude))
    if bad.size:
        raise BarDataError(f"{name_of(int(bad[0]))}: time {values[bad[0]]} is not finite")
    units = np.searchsorted(np.array([float(bound) for _, bound, _ in _EPOCH_UNITS]), magnitude, side="right")
    if (over := np.flatnonzero(units == len(_EPOCH_UNITS))).size:
        raise BarDataError(f"{name_of(int(over[0]))}: epoch time {values[over[0]]} is out of range (the largest is "
                           f"{2 ** 63 - 1} nanoseconds, 2262-04-11)")
    if (other := np.flatnonzero(units != units[0])).size:
        i = int(other[0])
        raise BarDataError(f"{name_of(i)}: epoch time {values[i]} is in {_EPOCH_UNITS[units[i]][0]} by its size, but "
                           f"the column's first, {values[0]}, is in {_EPOCH_UNITS[units[0]][0]}; use one unit for "
                           f"the whole column")
    unit, _, ms_per_unit = _EPOCH_UNITS[units[0]]
    if values.dtype.kind == "f":
        return np.round(values * float(ms_per_unit)).astype(np.int64)
    numbers = values.astype(np.int64)  # integers: exact (nanoseconds do not fit a float's 53 bits)
    return numbers * 1000 if unit == "seconds" else _round_div(numbers, _INT_EPOCH_PER_MS[unit])


def bars_from_columns(time: np.ndarray, prices: Mapping[str, np.ndarray], name_of: Callable[[int], str]) -> Bars:
    """Validated bars from a time column (see column_times_ms) and the five price columns by lower-case name."""
    try:
        arrays = [np.asarray(prices[c], dtype=np.float64) for c in _PRICE_COLUMNS]
    except (TypeError, ValueError) as exc:
        raise BarDataError(f"a price or volume column is not numeric: {exc}") from None
    bars = Bars.from_arrays(column_times_ms(time, name_of), *arrays)
    validate_bars(bars, name_of=name_of)
    return bars


def find_columns(names: list[str], where: str) -> tuple[str | None, dict[str, str]]:
    """(the time column's name or None, the price columns' names by lower-case name); missing prices refused."""
    lower = {str(n).strip().lower(): n for n in names}
    missing = [c for c in _PRICE_COLUMNS if c not in lower]
    if missing:
        raise BarDataError(f"{where}: missing column(s) {', '.join(missing)} (columns: {', '.join(map(str, names))})")
    time = next((lower[n] for n in _TIME_COLUMNS if n in lower), None)
    return time, {c: lower[c] for c in _PRICE_COLUMNS}


PARQUET_SUFFIXES = (".parquet", ".pq")


def load_bars(path: str | Path) -> Bars:
    """Bars from a file: Parquet (by its suffix or its magic bytes; needs pyarrow), else CSV."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        magic = b""  # the loader below says why it cannot be opened
    if path.suffix.lower() in PARQUET_SUFFIXES or magic == b"PAR1":
        return load_bars_parquet(path)
    return load_bars_csv(path)


def load_bars_parquet(path: str | Path) -> Bars:
    """Bars from a Parquet file: a time column (as in CSV, or the index pandas stored, or the one timestamp
    column) and open, high, low, close, volume. Needs pyarrow; BarDataError naming the problem."""
    path = Path(path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise BarDataError(f"{path}: reading Parquet needs pyarrow: pip install 'tactical-engine[parquet]'") from None
    try:
        table = pq.read_table(path)
    except OSError as exc:
        raise BarDataError(f"{path}: cannot open: {exc.strerror or exc}") from None
    except pa.ArrowException as exc:
        raise BarDataError(f"{path}: not a readable Parquet file: {exc}") from None
    time, prices = find_columns(table.column_names, str(path))
    time = time or _parquet_index_column(table, pa)
    if time is None:
        raise BarDataError(f"{path}: no time column: name one time, timestamp, datetime, date or ts, or store a "
                           f"DatetimeIndex (columns: {', '.join(table.column_names)})")
    columns = {c: table.column(name).to_numpy() for c, name in prices.items()}
    return bars_from_columns(table.column(time).to_numpy(), columns, lambda i: f"{path}: row {i}")


def _parquet_index_column(table, pa) -> str | None:
    """The column holding the index pandas stored (DataFrame.to_parquet), else the only timestamp column."""
    meta = (table.schema.metadata or {}).get(b"pandas")
    if meta:
        import json

        stored = [c for c in json.loads(meta).get("index_columns", []) if isinstance(c, str)]
        if len(stored) == 1:
            return stored[0]
    stamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
    return stamps[0] if len(stamps) == 1 else None
