"""Freqtrade's data directory as a replay source (``freqtrade download-data`` feather files).

Freqtrade keeps one Apache Arrow feather file per pair, timeframe and candle type,
every one with the columns ``date`` (timestamp, the candle's open time, UTC),
``open``, ``high``, ``low``, ``close`` and ``volume``. The pair and the kind come
from the file name:

- ``BTC_USDT_USDT-1m-futures.feather``: USD-M perpetual candles of ``BTCUSDT``
  (``<BASE>_<QUOTE>_<SETTLE>``; a settle currency other than the quote is a
  coin-margined contract, refused as the other readers refuse it);
- ``BTC_USDT-1m.feather``: spot candles, replayed as ``BTCUSDT.SPOT``;
- ``BTC_USDT_USDT-8h-funding_rate.feather``: funding settlements, the rate in
  ``open`` at each funding time;
- ``BTC_USDT_USDT-8h-mark.feather``: mark-price candles;
- ``-index`` and ``-premiumIndex`` candles: not used (their rows are counted as
  ``unused_candle_type``).

What each becomes, the same message structs the CSV reader makes
(:mod:`engine.feeds._csv`):

- each candle is one closed kline event (a KLINE row: price = close, qty =
  volume) at its close time, open time + timeframe - 1 ms, as Binance's
  ``close_time``;
- each funding time ``T`` is one mark-price event (a MARK row) at ``T``, carrying
  the mark price at ``T`` and naming the next funding time and its rate, which is
  what the simulated venue settles funding from
  (:meth:`~engine.venues.sim.SimVenue.apply_funding`): the settlement of ``T``
  happens at the row of ``T``, at the rate the row before announced. The mark price
  at ``T`` is the open of the mark candle starting at ``T`` (the ``-mark`` file of
  the same pair and timeframe, read beside the funding file), else the close of
  the last candle of the pair that closed at or before ``T``.
- Funding goes with candles: the funding rows of a pair are kept within the span of
  its candle file in the same directory (the funding time just before the first
  candle is announced at the first candle's close, so the first settlement inside
  the span is known); without a candle file the pair's funding and mark files are
  skipped (``no_candles``), and a mark file without a funding file is not used
  (``mark_without_funding``).

Checks, per row, counted in :class:`~engine.feeds.CaptureStats` by reason and never
fatal: a missing time or value (``bad_row``), a candle whose high is below its low
or whose close is outside them (``bad_candle``), a non-finite, zero or negative
price (``bad_price``) or negative volume (``bad_qty``), then the capture readers'
time checks (clamped, jumps, duplicates; a jump is at least two timeframes, and
funding rows, hours apart by nature, are checked for order only). A file that
cannot be read as Arrow, or whose columns are not Freqtrade's, is refused:
:class:`~engine.DataError` naming the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np

from .._errors import DataError
from ._capture import (
    SPOT_SUFFIX,
    CaptureLimits,
    CaptureStats,
    Kline,
    KlineBar,
    MarketMessage,
    MarkPrice,
    _bad_value,
    _Dedupe,
    timeline,
    unsupported_symbol,
)

if TYPE_CHECKING:
    import pyarrow as pa

_MS = 1_000_000
_NAME = re.compile(
    r"^(?P<pair>[A-Za-z0-9]+_[A-Za-z0-9]+(?:_[A-Za-z0-9]+)?)-(?P<tf>\d+[smhdw])"
    r"(?:-(?P<kind>futures|mark|funding_rate|index|premiumIndex))?\.feather$"
)
_TF_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
#: Freqtrade's columns, in its order.
COLUMNS = ("date", "open", "high", "low", "close", "volume")
_NAT = np.iinfo(np.int64).min
_FUNDING_JUMP_MS = 30 * 86_400_000  # a month: longer than any funding interval


def is_feather_source(path: Path) -> bool:
    """Whether ``path`` is a feather file (told apart from captures by its suffix)."""
    return path.suffix.lower() == ".feather"


def _parse_name(path: Path) -> tuple[str, str, int, str]:
    """``(pair, symbol, timeframe ms, kind)`` from a Freqtrade file name.

    ``kind`` is ``candles`` for futures and spot candles.

    Raises:
        DataError: not a Freqtrade name, or a contract the engine does not model.
    """
    match = _NAME.match(path.name)
    if match is None:
        raise DataError(
            f"{path}: not a Freqtrade data file name (<BASE>_<QUOTE>_<SETTLE>-<timeframe>-"
            "futures|mark|funding_rate.feather, or <BASE>_<QUOTE>-<timeframe>.feather)"
        )
    pair = match["pair"]
    parts = pair.upper().split("_")
    tf = match["tf"]
    tf_ms = int(tf[:-1]) * _TF_MS[tf[-1]]
    kind = match["kind"] or "candles"
    if len(parts) == 2:
        if kind != "candles":
            raise DataError(f"{path}: a {kind} file of a spot pair ({pair}): not Freqtrade's")
        return pair, parts[0] + parts[1] + SPOT_SUFFIX, tf_ms, kind
    base, quote, settle = parts
    if match["kind"] is None:
        raise DataError(f"{path}: futures pair {pair} without a candle type in the name")
    if settle != quote:
        raise DataError(
            f"{path}: {pair} settles in {settle}, a coin-margined contract: not supported; "
            "Trireme trades USD-M perpetuals only"
        )
    symbol = base + quote
    problem = unsupported_symbol(symbol)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return pair, symbol, tf_ms, "candles" if kind == "futures" else kind


def _candle_file(path: Path, pair: str) -> Path | None:
    """The candle file of ``pair`` beside ``path`` (the finest timeframe), or None."""
    best: tuple[int, Path] | None = None
    for sibling in path.parent.glob(f"{pair}-*.feather"):
        match = _NAME.match(sibling.name)
        if match is None or match["pair"] != pair:
            continue
        if match["kind"] not in ("futures", None):
            continue
        tf = match["tf"]
        tf_ms = int(tf[:-1]) * _TF_MS[tf[-1]]
        if best is None or tf_ms < best[0]:
            best = (tf_ms, sibling)
    return None if best is None else best[1]


def feather_symbol(path: Path) -> str | None:
    """The symbol a feather file replays (None: it contributes no events).

    Funding and mark files count only beside a candle file of their pair.

    Raises:
        DataError: the name is not Freqtrade's, or names an unsupported contract.
    """
    pair, symbol, _tf, kind = _parse_name(path)
    if kind == "candles":
        return symbol
    if kind in ("funding_rate", "mark") and _candle_file(path, pair) is not None:
        return symbol
    return None


def read_columns(path: Path) -> dict[str, np.ndarray]:
    """A Freqtrade file's columns: ``date`` as int64 ns (NaT: int64 min), floats (NaN: null).

    Raises:
        DataError: the file cannot be read as Arrow, or its columns are not Freqtrade's.
    """
    import pyarrow as pa  # only replays of feather files pay for the import
    import pyarrow.feather as feather

    try:
        table = feather.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read as a feather (Arrow IPC) file ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.column_names]
    shape = f"expected Freqtrade's columns {', '.join(COLUMNS)}; found " + (
        ", ".join(f"{f.name}: {f.type}" for f in table.schema) or "none"
    )
    if missing:
        raise DataError(f"{path}: not Freqtrade's shape ({shape})")
    if not pa.types.is_timestamp(table.schema.field("date").type):
        raise DataError(f"{path}: not Freqtrade's shape (date is not a timestamp; {shape})")
    if not all(
        pa.types.is_floating(t) or pa.types.is_integer(t)
        for t in (table.schema.field(c).type for c in COLUMNS[1:])
    ):
        raise DataError(f"{path}: not Freqtrade's shape (a price column is not numeric; {shape})")
    out = {"date": _ns(table.column("date"))}
    for name in COLUMNS[1:]:
        column = table.column(name).cast(pa.float64())
        out[name] = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return out


def _ns(column: pa.ChunkedArray) -> np.ndarray:
    import pyarrow as pa

    ns = column.cast(pa.timestamp("ns", tz=column.type.tz)).cast(pa.int64())
    return ns.fill_null(_NAT).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _candle_rows(
    path: Path, symbol: str, tf_ms: int, stats: CaptureStats
) -> Iterator[tuple[int, int, MarketMessage]]:
    cols = read_columns(path)
    stats.units[str(path)] = "ns"
    for row_no, (date, high, low, close, volume) in enumerate(
        zip(
            cols["date"].tolist(),
            cols["high"].tolist(),
            cols["low"].tolist(),
            cols["close"].tolist(),
            cols["volume"].tolist(),
            strict=True,
        ),
        1,
    ):
        stats.lines += 1
        if date == _NAT or math.isnan(close) or math.isnan(volume):
            stats.skipped["bad_row"] += 1
            continue
        if not low <= close <= high:  # (NaN high or low fails too)
            stats.skipped["bad_candle"] += 1
            continue
        close_ms = date // _MS + tf_ms - 1
        msg = Kline(
            symbol=symbol,
            bar=KlineBar(close=close, volume=volume, closed=True),
            event_time=close_ms,
        )
        reason = _bad_value(msg)
        if reason is not None:
            stats.skipped[reason] += 1
            continue
        yield row_no, close_ms * _MS, msg


def _mark_lookup(path: Path, candles: Path) -> MarkLookup:
    """Mark prices at funding times: the pair's ``-mark`` file of the same timeframe,
    else the closes of its candles."""
    mark_path = path.with_name(path.name.replace("-funding_rate.feather", "-mark.feather"))
    marks = read_columns(mark_path) if mark_path.is_file() else None
    return MarkLookup(marks, read_columns(candles), _tf_of(candles))


def _tf_of(path: Path) -> int:
    match = _NAME.match(path.name)
    assert match is not None  # found by _candle_file
    tf = match["tf"]
    return int(tf[:-1]) * _TF_MS[tf[-1]]


class MarkLookup:
    """The mark price at a time, from mark candles (their open) or last-price candles.

    Args:
        marks: the ``-mark`` file's columns, or None.
        candles: the pair's candle columns.
        candle_tf_ms: the candles' timeframe.
    """

    def __init__(
        self, marks: dict[str, np.ndarray] | None, candles: dict[str, np.ndarray], candle_tf_ms: int
    ) -> None:
        self._marks = marks
        ok = candles["date"] != _NAT
        self._close_ns = candles["date"][ok] + (candle_tf_ms - 1) * _MS
        self._close = candles["close"][ok]
        self.first_close_ns = int(self._close_ns.min()) if self._close_ns.size else None
        self.last_close_ns = int(self._close_ns.max()) if self._close_ns.size else None

    def at(self, ts_ns: int) -> float:
        """The mark price at ``ts_ns`` (NaN when neither source has one)."""
        if self._marks is not None:
            dates = self._marks["date"]
            # The mark candle that opens at the funding time (funding times can be a
            # millisecond late: 08:00:00.001).
            j = int(np.searchsorted(dates, ts_ns, side="right")) - 1
            if j >= 0 and ts_ns - int(dates[j]) < 60_000 * _MS:
                price = float(self._marks["open"][j])
                if price > 0.0:
                    return price
        j = int(np.searchsorted(self._close_ns, ts_ns, side="right")) - 1
        return float(self._close[j]) if j >= 0 else math.nan


def _funding_rows(
    path: Path, pair: str, symbol: str, tf_ms: int, stats: CaptureStats
) -> Iterator[tuple[int, int, MarketMessage]]:
    cols = read_columns(path)
    stats.units[str(path)] = "ns"
    n = len(cols["date"])
    candles = _candle_file(path, pair)
    if candles is None:
        stats.lines += n
        stats.skipped["no_candles"] += n
        return
    lookup = _mark_lookup(path, candles)
    start, end = lookup.first_close_ns, lookup.last_close_ns
    if start is None or end is None:
        stats.lines += n
        stats.skipped["no_candles"] += n
        return
    # The funding schedule: valid times and rates, in time order.
    times: list[int] = []
    rates: list[float] = []
    rows: list[int] = []
    for row_no, (date, rate) in enumerate(
        zip(cols["date"].tolist(), cols["open"].tolist(), strict=True), 1
    ):
        stats.lines += 1
        if date == _NAT or not math.isfinite(rate):
            stats.skipped["bad_row"] += 1
            continue
        if times and date <= times[-1]:
            stats.skipped["duplicate" if date == times[-1] else "clamped_funding"] += 1
            continue
        times.append(date)
        rates.append(rate)
        rows.append(row_no)
    for k, (funding_ns, row_no) in enumerate(zip(times, rows, strict=True)):
        nxt = k + 1 < len(times)
        if funding_ns > end or (nxt and times[k + 1] < start):
            stats.skipped["outside_candles"] += 1
            continue
        # The funding time just before the candles is announced at the first one.
        at_ns = max(funding_ns, start)
        mark = lookup.at(funding_ns)
        if math.isnan(mark):  # (announced: the mark price when it is announced)
            mark = lookup.at(at_ns)
        msg = MarkPrice(
            symbol=symbol,
            mark=mark,
            funding_rate=rates[k + 1] if nxt else math.nan,
            next_funding_time=times[k + 1] // _MS if nxt else 0,
            event_time=at_ns // _MS,
        )
        reason = "no_mark_price" if math.isnan(mark) else _bad_value(msg)
        if reason is not None:
            stats.skipped[reason] += 1
            continue
        yield row_no, at_ns, msg


def _unused_rows(
    path: Path, stats: CaptureStats, reason: str
) -> Iterator[tuple[int, int, MarketMessage]]:
    n = len(read_columns(path)["date"])  # (read: a damaged file is still an error)
    stats.lines += n
    stats.skipped[reason] += n
    return iter(())


def _read_feather(
    path: Path,
    stats: CaptureStats,
    symbols: frozenset[str] | None,
    limits: CaptureLimits,
    dedupe: _Dedupe | None,
) -> Iterator[tuple[int, MarketMessage]]:
    """The checked events of a feather source (``dedupe`` None: the caller drops duplicates)."""
    pair, symbol, tf_ms, kind = _parse_name(path)
    if symbols is not None and symbol not in symbols:
        return iter(())
    rows: Iterator[tuple[int, int, MarketMessage]]
    if kind == "candles":
        rows = _candle_rows(path, symbol, tf_ms, stats)
        # Neighbouring rows are a timeframe apart: a daily candle is no time jump.
        jump = max(limits.max_time_jump_ms, 2 * tf_ms)
        limits = attrs.evolve(limits, max_time_jump_ms=jump)
    elif kind == "funding_rate":
        rows = _funding_rows(path, pair, symbol, tf_ms, stats)
        # Settlements are hours apart, their order checked above: no jump check.
        limits = attrs.evolve(limits, max_time_jump_ms=_FUNDING_JUMP_MS)
    elif kind == "mark":
        funding = path.with_name(path.name.replace("-mark.feather", "-funding_rate.feather"))
        if _candle_file(path, pair) is None:
            rows = _unused_rows(path, stats, "no_candles")
        elif not funding.is_file():
            rows = _unused_rows(path, stats, "mark_without_funding")
        else:
            return iter(())  # read by the funding file's reader, for its mark prices
    else:
        rows = _unused_rows(path, stats, "unused_candle_type")
    return timeline(path, rows, stats, limits, dedupe)


def read_feather_source(
    path: Path,
    stats: CaptureStats,
    symbols: frozenset[str] | None = None,
    *,
    limits: CaptureLimits | None = None,
) -> Iterator[tuple[int, MarketMessage]]:
    """Decode a Freqtrade feather file into ``(ts_ns, message)`` in time order.

    Args:
        path: the file (its name says the pair, timeframe and kind).
        stats: counters to update (rows read and skipped by reason).
        symbols: keep only these symbols (None keeps all).
        limits: bounds of the time checks.

    Raises:
        DataError: the file cannot be read as Arrow, its columns are not Freqtrade's,
            or its name is not Freqtrade's.
    """
    return _read_feather(path, stats, symbols, limits or CaptureLimits(), _Dedupe())
