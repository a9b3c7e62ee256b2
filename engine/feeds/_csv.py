"""Binance public-data CSV files (data.binance.vision) as a replay source.

USD-M futures files, plain ``.csv`` or a ``.zip`` holding one CSV, with or
without the header row (older files have none). The kind and the symbol come
from the file name (``BTCUSDT-aggTrades-2024-08-08.zip``,
``BTCUSDT-bookTicker-2024-08-08.csv``, ``BTCUSDT-1m-2024-08-08.zip``), columns:

- aggTrades: agg_trade_id, price, quantity, first_trade_id, last_trade_id,
  transact_time (ms), is_buyer_maker;
- trades: id, price, qty, quote_qty, time (ms), is_buyer_maker;
- bookTicker: update_id, best_bid_price, best_bid_qty, best_ask_price,
  best_ask_qty, transaction_time (ms), event_time (ms);
- klines (any interval): open_time, open, high, low, close, volume, close_time
  (ms), quote_volume, count, taker_buy_volume, taker_buy_quote_volume, ignore;
  each bar becomes one closed kline event at its close time.

Rows are yielded as the same message structs the websocket capture reader makes.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .._errors import DataError
from ._capture import AggTrade, BookTicker, CaptureStats, Kline, KlineBar, MarketMessage, Trade

_MS = 1_000_000
_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<kind>aggTrades|trades|bookTicker|\d+[smhdwM])-", re.IGNORECASE
)


def is_csv_source(path: Path) -> bool:
    """Whether ``path`` looks like a Binance public-data CSV (plain or zipped)."""
    return path.suffix.lower() in (".csv", ".zip") and _NAME.match(path.name) is not None


def csv_symbol(path: Path) -> str:
    """The symbol in a public-data file name."""
    match = _NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: not a Binance public-data file name (SYMBOL-kind-date)")
    return match["symbol"].upper()


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
    path: Path, stats: CaptureStats, symbols: frozenset[str] | None = None
) -> Iterator[tuple[int, MarketMessage]]:
    """Decode a public-data CSV into ``(ts_ns, message)`` in file order.

    A header row, blank rows and rows that do not parse are counted in
    ``stats.skipped`` (``header``, ``blank``, ``bad_row``), never fatal.

    Raises:
        DataError: the file cannot be read or its name does not say what it is.
    """
    match = _NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: not a Binance public-data file name (SYMBOL-kind-date)")
    symbol = match["symbol"].upper()
    kind = match["kind"]
    if symbols is not None and symbol not in symbols:
        return
    last = 0
    for row in _rows(path):
        stats.lines += 1
        if not row or not row[0].strip():
            stats.skipped["blank"] += 1
            continue
        if not row[0].strip()[0].isdigit():
            stats.skipped["header"] += 1
            continue
        try:
            ts, msg = _decode(kind, symbol, row)
        except (ValueError, IndexError):
            stats.skipped["bad_row"] += 1
            continue
        ts = max(ts, last)
        last = ts
        stats.events += 1
        yield ts, msg


def _bool(text: str) -> bool:
    return text.strip().lower() in ("true", "1")


def _decode(kind: str, symbol: str, row: list[str]) -> tuple[int, MarketMessage]:
    if kind == "aggTrades":
        t = int(row[5])
        return t * _MS, AggTrade(
            symbol=symbol,
            price=float(row[1]),
            qty=float(row[2]),
            buyer_maker=_bool(row[6]),
            event_time=t,
            tx_time=t,
            trade_id=int(row[0]),
        )
    if kind == "trades":
        t = int(row[4])
        return t * _MS, Trade(
            symbol=symbol,
            price=float(row[1]),
            qty=float(row[2]),
            buyer_maker=_bool(row[5]),
            event_time=t,
            tx_time=t,
            trade_id=int(row[0]),
        )
    if kind == "bookTicker":
        t = int(row[6]) if len(row) > 6 and row[6] else int(row[5])
        return t * _MS, BookTicker(
            symbol=symbol,
            bid=float(row[1]),
            bid_qty=float(row[2]),
            ask=float(row[3]),
            ask_qty=float(row[4]),
            event_time=t,
            tx_time=int(row[5]),
            update_id=int(row[0]),
        )
    close_time = int(row[6])
    bar = KlineBar(close=float(row[4]), volume=float(row[5]), closed=True)
    return close_time * _MS, Kline(symbol=symbol, bar=bar, event_time=close_time)
