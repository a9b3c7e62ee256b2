"""CSV market data as a replay source: Binance public data and QuantConnect LEAN bars.

**Binance public data** (data.binance.vision): USD-M futures files, plain ``.csv``
or a ``.zip`` holding one CSV, with or without the header row (older files have
none). The kind and the symbol come from the file name
(``BTCUSDT-aggTrades-2024-08-08.zip``, ``BTCUSDT-bookTicker-2024-08-08.csv``,
``BTCUSDT-1m-2024-08-08.zip``), columns:

- aggTrades: agg_trade_id, price, quantity, first_trade_id, last_trade_id,
  transact_time, is_buyer_maker;
- trades: id, price, qty, quote_qty, time, is_buyer_maker;
- bookTicker: update_id, best_bid_price, best_bid_qty, best_ask_price,
  best_ask_qty, transaction_time, event_time;
- klines (any interval): open_time, open, high, low, close, volume, close_time,
  quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore;
  each bar becomes one closed kline event at its close time.

Times are epoch milliseconds, or microseconds (Binance moved its spot files to
microseconds in 2025): the unit is told per file by magnitude and reported in
:attr:`CaptureStats.units`.

**LEAN** (QuantConnect's data folders, ``Data/cryptofuture/binance/minute/<symbol>/``):
``<yyyymmdd>_trade.zip`` and ``<yyyymmdd>_quote.zip``, each holding one header-less
CSV named ``<yyyymmdd>_<symbol>_<minute|second>_<trade|quote>[_perp].csv``, its
first column milliseconds since midnight UTC of that day:

- trade bars: time, open, high, low, close, volume: a closed kline event;
- quote bars: time, bid open, high, low, close, bid size, ask open, high, low,
  close, ask size: a book-ticker event at the closing bid and ask.

Each bar is an event at its close (start + period - 1 ms, as Binance's
``close_time``). ``_perp`` marks a USD-M perpetual; without it the bars are
spot (LEAN's ``crypto`` market) and replay as ``<SYMBOL>.SPOT``.

Rows are yielded as the same message structs the websocket capture reader makes,
with the same checks (values, time, duplicates; see :mod:`engine.feeds._capture`).
"""

from __future__ import annotations

import calendar
import csv
import io
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .._errors import DataError
from ._capture import (
    SPOT_SUFFIX,
    UNITS,
    AggTrade,
    BookTicker,
    CaptureLimits,
    CaptureStats,
    Kline,
    KlineBar,
    MarketMessage,
    Trade,
    _bad_value,
    _Dedupe,
    _unit_for,
    timeline,
    unsupported_symbol,
)

_MS = 1_000_000
_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9_]+)-(?P<kind>aggTrades|trades|bookTicker|\d+[smhdwM])-", re.IGNORECASE
)
_LEAN_NAME = re.compile(r"^(?P<day>\d{8})_(?P<kind>trade|quote)\.zip$", re.IGNORECASE)
_LEAN_CSV = re.compile(
    r"^(?P<day>\d{8})_(?P<symbol>[a-z0-9]+)_(?P<res>minute|second)_(?P<kind>trade|quote)"
    r"(?P<perp>_perp)?\.csv$",
    re.IGNORECASE,
)
_LEAN_PERIOD_MS = {"minute": 60_000, "second": 1_000}


def is_csv_source(path: Path) -> bool:
    """Whether ``path`` looks like a Binance public-data or LEAN CSV (plain or zipped)."""
    name = path.name
    if _LEAN_NAME.match(name) is not None:
        return True
    return path.suffix.lower() in (".csv", ".zip") and _NAME.match(name) is not None


def _lean_csv_name(path: Path) -> re.Match[str]:
    """The inner CSV name of a LEAN zip, parsed.

    Raises:
        DataError: the zip cannot be read or does not hold one LEAN bar CSV.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".csv")]
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read zip ({exc})") from exc
    match = _LEAN_CSV.match(names[0]) if len(names) == 1 else None
    if match is None:
        raise DataError(
            f"{path}: expected one LEAN bar CSV (<yyyymmdd>_<symbol>_minute_trade[_perp].csv) "
            f"in the zip, found {names}"
        )
    return match


def _lean_symbol(match: re.Match[str]) -> str:
    symbol = match["symbol"].upper()
    return symbol if match["perp"] else symbol + SPOT_SUFFIX


def csv_symbol(path: Path) -> str:
    """The symbol of a CSV source (from its name; a LEAN zip's from the CSV inside).

    Raises:
        DataError: the name does not say, or the symbol is not a USD-M perpetual.
    """
    if _LEAN_NAME.match(path.name) is not None:
        return _lean_symbol(_lean_csv_name(path))
    match = _NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: not a Binance public-data file name (SYMBOL-kind-date)")
    symbol = match["symbol"].upper()
    problem = unsupported_symbol(symbol)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return symbol


def _rows(path: Path) -> Iterator[list[str]]:
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.lower().endswith(".csv")]
                if len(names) != 1:
                    raise DataError(f"{path}: expected one CSV in the zip, found {len(names)}")
                with archive.open(names[0]) as raw:
                    yield from csv.reader(io.TextIOWrapper(raw, encoding="utf-8"))
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                yield from csv.reader(handle)
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc


def read_csv_source(
    path: Path,
    stats: CaptureStats,
    symbols: frozenset[str] | None = None,
    *,
    limits: CaptureLimits | None = None,
) -> Iterator[tuple[int, MarketMessage]]:
    """Decode a CSV source into ``(ts_ns, message)`` in file order.

    A header row, blank rows and rows that do not parse are counted in
    ``stats.skipped`` (``header``, ``blank``, ``bad_row``), never fatal; events are
    checked as captures are (values, time, duplicates).

    Raises:
        DataError: the file cannot be read or its name does not say what it is.
    """
    return _read_csv(path, stats, symbols, limits or CaptureLimits(), _Dedupe())


def _read_csv(
    path: Path,
    stats: CaptureStats,
    symbols: frozenset[str] | None,
    limits: CaptureLimits,
    dedupe: _Dedupe | None,
) -> Iterator[tuple[int, MarketMessage]]:
    """The checked events of a CSV source (``dedupe`` None: the caller drops duplicates)."""
    symbol = csv_symbol(path)
    if symbols is not None and symbol not in symbols:
        return iter(())
    rows = _lean_rows(path, stats) if _LEAN_NAME.match(path.name) else _binance_rows(path, stats)
    return timeline(path, rows, stats, limits, dedupe)


def _checked(
    stats: CaptureStats, row_no: int, ts: int, msg: MarketMessage
) -> tuple[int, int, MarketMessage] | None:
    reason = _bad_value(msg)
    if reason is not None:
        stats.skipped[reason] += 1
        return None
    return row_no, ts, msg


def _binance_rows(path: Path, stats: CaptureStats) -> Iterator[tuple[int, int, MarketMessage]]:
    match = _NAME.match(path.name)
    assert match is not None  # csv_symbol checked the name
    symbol = match["symbol"].upper()
    kind = match["kind"]
    scale = 0
    for row_no, row in enumerate(_rows(path), 1):
        stats.lines += 1
        if not row or not row[0].strip():
            stats.skipped["blank"] += 1
            continue
        if not row[0].strip()[0].isdigit():
            stats.skipped["header"] += 1
            continue
        try:
            if not scale:
                unit = _unit_for(int(row[_TIME_COLUMN.get(kind, 6)]), 0)
                scale = UNITS[unit]
                stats.units[str(path)] = unit
            ts, msg = _decode(kind, symbol, row, scale)
        except (ValueError, IndexError):
            stats.skipped["bad_row"] += 1
            continue
        checked = _checked(stats, row_no, ts, msg)
        if checked is not None:
            yield checked


# The column holding a row's time, per kind (klines: close_time).
_TIME_COLUMN = {"aggTrades": 5, "trades": 4, "bookTicker": 5}


def _bool(text: str) -> bool:
    return text.strip().lower() in ("true", "1")


def _decode(kind: str, symbol: str, row: list[str], scale: int) -> tuple[int, MarketMessage]:
    """One row as ``(ts_ns, message)``; times are in units of ``scale`` ns."""
    if kind == "aggTrades":
        t = int(row[5]) * scale
        return t, AggTrade(
            symbol=symbol,
            price=float(row[1]),
            qty=float(row[2]),
            buyer_maker=_bool(row[6]),
            event_time=t // _MS,
            tx_time=t // _MS,
            trade_id=int(row[0]),
        )
    if kind == "trades":
        t = int(row[4]) * scale
        return t, Trade(
            symbol=symbol,
            price=float(row[1]),
            qty=float(row[2]),
            buyer_maker=_bool(row[5]),
            event_time=t // _MS,
            tx_time=t // _MS,
            trade_id=int(row[0]),
        )
    if kind == "bookTicker":
        t = (int(row[6]) if len(row) > 6 and row[6] else int(row[5])) * scale
        return t, BookTicker(
            symbol=symbol,
            bid=float(row[1]),
            bid_qty=float(row[2]),
            ask=float(row[3]),
            ask_qty=float(row[4]),
            event_time=t // _MS,
            tx_time=int(row[5]) * scale // _MS,
            update_id=int(row[0]),
        )
    close_time = int(row[6]) * scale
    bar = KlineBar(close=float(row[4]), volume=float(row[5]), closed=True)
    return close_time, Kline(symbol=symbol, bar=bar, event_time=close_time // _MS)


def _lean_rows(path: Path, stats: CaptureStats) -> Iterator[tuple[int, int, MarketMessage]]:
    match = _lean_csv_name(path)
    symbol = _lean_symbol(match)
    try:
        day = time.strptime(match["day"], "%Y%m%d")
    except ValueError as exc:
        raise DataError(f"{path}: {match['day']} is not a date (yyyymmdd)") from exc
    midnight_ms = calendar.timegm(day) * 1000
    period = _LEAN_PERIOD_MS[match["res"].lower()]
    quote = match["kind"].lower() == "quote"
    stats.units[str(path)] = "ms"
    for row_no, row in enumerate(_rows(path), 1):
        stats.lines += 1
        if not row or not row[0].strip():
            stats.skipped["blank"] += 1
            continue
        try:
            close_ms = midnight_ms + int(row[0]) + period - 1
            msg: MarketMessage
            if quote:
                msg = BookTicker(
                    symbol=symbol,
                    bid=float(row[4]),
                    bid_qty=float(row[5]),
                    ask=float(row[9]),
                    ask_qty=float(row[10]),
                    event_time=close_ms,
                    tx_time=close_ms,
                )
            else:
                bar = KlineBar(close=float(row[4]), volume=float(row[5]), closed=True)
                msg = Kline(symbol=symbol, bar=bar, event_time=close_ms)
        except (ValueError, IndexError):
            stats.skipped["bad_row"] += 1
            continue
        checked = _checked(stats, row_no, close_ms * _MS, msg)
        if checked is not None:
            yield checked
