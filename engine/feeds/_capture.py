"""Reading Binance USD-M websocket captures.

A capture is one JSON message per line: the combined-stream wrapper
``{"stream": ..., "data": {...}}`` or the bare event, optionally prefixed by the
local receive time as ``<ns> {json}`` or ``<epoch-seconds>: {json}``; plain or
gzip. Lines that are not market events (the URL line of a cryptofeed capture,
REST snapshots, anything unparsable) are counted, never fatal.

Event messages are decoded into typed msgspec structs (about 0.4 us per message
here, against 2.7 us for the json module).
"""

from __future__ import annotations

import heapq
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import msgspec

from .._errors import DataError

_MS = 1_000_000


class BookTicker(msgspec.Struct, tag_field="e", tag="bookTicker"):
    """``<symbol>@bookTicker``."""

    symbol: str = msgspec.field(name="s")
    bid: float = msgspec.field(name="b")
    bid_qty: float = msgspec.field(name="B")
    ask: float = msgspec.field(name="a")
    ask_qty: float = msgspec.field(name="A")
    event_time: int = msgspec.field(name="E", default=0)
    tx_time: int = msgspec.field(name="T", default=0)
    update_id: int = msgspec.field(name="u", default=-1)


class Trade(msgspec.Struct, tag_field="e", tag="trade"):
    """``<symbol>@trade``."""

    symbol: str = msgspec.field(name="s")
    price: float = msgspec.field(name="p")
    qty: float = msgspec.field(name="q")
    buyer_maker: bool = msgspec.field(name="m")
    event_time: int = msgspec.field(name="E", default=0)
    tx_time: int = msgspec.field(name="T", default=0)
    trade_id: int = msgspec.field(name="t", default=-1)


class AggTrade(msgspec.Struct, tag_field="e", tag="aggTrade"):
    """``<symbol>@aggTrade``."""

    symbol: str = msgspec.field(name="s")
    price: float = msgspec.field(name="p")
    qty: float = msgspec.field(name="q")
    buyer_maker: bool = msgspec.field(name="m")
    event_time: int = msgspec.field(name="E", default=0)
    tx_time: int = msgspec.field(name="T", default=0)
    trade_id: int = msgspec.field(name="a", default=-1)


class DepthUpdate(msgspec.Struct, tag_field="e", tag="depthUpdate"):
    """``<symbol>@depth@<speed>`` diff; levels stay raw JSON until a book decodes them."""

    symbol: str = msgspec.field(name="s")
    first_id: int = msgspec.field(name="U")
    last_id: int = msgspec.field(name="u")
    prev_last_id: int = msgspec.field(name="pu", default=-1)
    bids: msgspec.Raw = msgspec.field(name="b", default=msgspec.Raw(b"[]"))
    asks: msgspec.Raw = msgspec.field(name="a", default=msgspec.Raw(b"[]"))
    event_time: int = msgspec.field(name="E", default=0)
    tx_time: int = msgspec.field(name="T", default=0)


class KlineBar(msgspec.Struct):
    """The ``k`` object of a kline event."""

    close: float = msgspec.field(name="c")
    volume: float = msgspec.field(name="v")
    closed: bool = msgspec.field(name="x")


class Kline(msgspec.Struct, tag_field="e", tag="kline"):
    """``<symbol>@kline_<interval>``."""

    symbol: str = msgspec.field(name="s")
    bar: KlineBar = msgspec.field(name="k")
    event_time: int = msgspec.field(name="E", default=0)


class MarkPrice(msgspec.Struct, tag_field="e", tag="markPriceUpdate"):
    """``<symbol>@markPrice``."""

    symbol: str = msgspec.field(name="s")
    mark: float = msgspec.field(name="p")
    event_time: int = msgspec.field(name="E", default=0)


MarketMessage = BookTicker | Trade | AggTrade | DepthUpdate | Kline | MarkPrice


class Envelope(msgspec.Struct):
    """The combined-stream wrapper."""

    stream: str
    data: MarketMessage


@attrs.define
class CaptureStats:
    """What a reader saw besides market events."""

    lines: int = 0
    events: int = 0
    skipped: Counter[str] = attrs.Factory(Counter)


_ENVELOPE = msgspec.json.Decoder(Envelope, strict=False)
_BARE = msgspec.json.Decoder(MarketMessage, strict=False)
_SYMBOL_RE = re.compile(rb'"s":"([A-Z0-9]+)"')


_CHUNK = 1 << 20


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes in chunks, gunzipped (every gzip member) when it is gzip."""
    with path.open("rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != b"\x1f\x8b":
            while chunk := f.read(_CHUNK):
                yield chunk
            return
        inflater = zlib.decompressobj(wbits=47)
        while raw := f.read(_CHUNK):
            while raw:
                yield inflater.decompress(raw)
                raw = inflater.unused_data
                if raw:  # a concatenated gzip member starts here
                    yield inflater.flush()
                    inflater = zlib.decompressobj(wbits=47)
        yield inflater.flush()


def open_capture(path: Path) -> Iterator[bytes]:
    """Yield the lines of a capture (without line endings), gunzipping gzip files.

    Decompression and line splitting run in C over 1 MiB chunks: several times
    faster than ``gzip.open(...).readline``.

    Raises:
        DataError: the file is missing, unreadable or a corrupt gzip stream.
    """
    tail = b""
    try:
        for chunk in _chunks(path):
            if not chunk:
                continue
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            yield from lines
    except FileNotFoundError:
        raise DataError(f"{path}: no such market data file") from None
    except (OSError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read market data ({exc})") from exc
    if tail:
        yield tail


def parse_line(line: bytes, stats: CaptureStats) -> tuple[int | None, MarketMessage] | None:
    """Decode one capture line; count and return None when it is not a market event.

    Returns:
        ``(receive_ns or None, message)``.
    """
    stats.lines += 1
    start = line.find(b"{")
    if start < 0:
        stats.skipped["non_json" if line.strip() else "blank"] += 1
        return None
    body = line[start:]
    ts: int | None = None
    if start:
        prefix = line[:start]
        try:
            # ``<ns> {json}``; int() ignores the surrounding spaces.
            ts = int(prefix)
        except ValueError:
            try:
                # ``<epoch-seconds>: {json}`` (cryptofeed)
                ts = int(float(prefix.rstrip().rstrip(b":")) * 1e9)
            except ValueError:
                # ``https://.../depth?... -> 1626992741.3: {...}`` is a recorded REST reply.
                stats.skipped["rest_reply" if b" -> " in prefix else "bad_prefix"] += 1
                return None
    try:
        msg = _ENVELOPE.decode(body).data if body.startswith(b'{"stream"') else _BARE.decode(body)
    except msgspec.ValidationError:
        reason = "snapshot" if b'"lastUpdateId"' in body else "unknown_message"
        stats.skipped[reason] += 1
        return None
    except msgspec.DecodeError:
        stats.skipped["malformed_json"] += 1
        return None
    return ts, msg


def read_capture(
    path: Path, stats: CaptureStats, symbols: frozenset[str] | None = None
) -> Iterator[tuple[int, MarketMessage]]:
    """Decode a capture into ``(replay_ts_ns, message)`` in file order.

    The replay time of an event is its local receive time when the line has one,
    else the exchange event time. Time never goes backwards within a file: an
    earlier stamp (a clock step, or exchange times of different streams) is raised
    to the latest seen, so file order is replay order.

    Args:
        path: the capture (plain or gzip).
        stats: counters to update.
        symbols: keep only these symbols (None keeps all).

    Raises:
        DataError: the file cannot be opened or read.
    """
    last_ts = 0
    envelope = _ENVELOPE.decode
    decode_error = msgspec.DecodeError
    for line in open_capture(path):
        # Fast path, inlined because it runs once per message: ``<ns> {"stream":...}``.
        start = line.find(b"{")
        msg = None
        if start > 0 and line.startswith(b'{"stream"', start):
            try:
                recv_ns: int | None = int(line[:start])
                msg = envelope(line[start:]).data
                stats.lines += 1
            except (ValueError, decode_error):
                msg = None
        if msg is None:
            parsed = parse_line(line, stats)
            if parsed is None:
                continue
            recv_ns, msg = parsed
        if symbols is not None and msg.symbol not in symbols:
            stats.skipped["other_symbol"] += 1
            continue
        ts = recv_ns if recv_ns is not None else msg.event_time * _MS
        if ts < last_ts:
            ts = last_ts
        last_ts = ts
        stats.events += 1
        yield ts, msg


def scan_symbols(paths: Iterable[Path]) -> list[str]:
    """Every symbol that appears in market events of the captures, sorted.

    A byte-level scan (no JSON decoding), so finding the symbols before the replay
    starts costs a fraction of the replay itself.
    """
    from ._csv import csv_symbol, is_csv_source  # _csv builds on this module

    found: set[bytes] = set()
    for path in paths:
        if is_csv_source(path):
            found.add(csv_symbol(path).encode())
            continue
        tail = b""
        try:
            for chunk in _chunks(path):
                # The tail overlaps chunks so that a match cut by a boundary is seen whole.
                window = tail + chunk
                found.update(_SYMBOL_RE.findall(window))
                tail = window[-64:]
        except FileNotFoundError:
            raise DataError(f"{path}: no such market data file") from None
        except (OSError, zlib.error) as exc:
            raise DataError(f"{path}: cannot read market data ({exc})") from exc
    return sorted(s.decode() for s in found)


_DOC_SUFFIXES = frozenset({".md", ".txt", ".rst", ".html", ".pdf"})


def _is_data_name(path: Path) -> bool:
    """Whether a file found in a data directory is data (not its README or licence)."""
    name = path.name
    return not (
        name.startswith(".")
        or path.suffix.lower() in _DOC_SUFFIXES
        or name.upper().startswith(("LICENSE", "LICENCE", "README", "NOTICE", "COPYING"))
    )


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the data files inside named directories (sorted).

    In a directory, documentation (``*.md``, ``*.txt``, README, LICENSE, dot
    files) is left out, since a data folder carries its licence note beside the
    data.

    Raises:
        DataError: a path does not exist, or nothing was named.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file() and _is_data_name(p)))
        elif path.is_file():
            out.append(path)
        else:
            raise DataError(f"{path}: no such market data file or directory")
    if not out:
        raise DataError("no market data given (set data.paths or pass --data)")
    return out


def _keyed(
    events: Iterator[tuple[int, MarketMessage]], index: int
) -> Iterator[tuple[int, int, int, MarketMessage]]:
    for n, (ts, msg) in enumerate(events):
        yield ts, index, n, msg


def merge_captures(
    paths: list[Path], stats: CaptureStats, symbols: frozenset[str] | None = None
) -> Iterator[tuple[int, MarketMessage]]:
    """Events of several sources merged by replay time (ties: file order, then line).

    Sources are websocket captures or Binance public-data CSV files
    (:mod:`engine.feeds._csv`), told apart by the file name.
    """
    from ._csv import is_csv_source, read_csv_source  # _csv builds on this module

    def reader(path: Path) -> Iterator[tuple[int, MarketMessage]]:
        if is_csv_source(path):
            return read_csv_source(path, stats, symbols)
        return read_capture(path, stats, symbols)

    if len(paths) == 1:
        yield from reader(paths[0])
        return
    streams = [_keyed(reader(p), i) for i, p in enumerate(paths)]
    for ts, _i, _n, msg in heapq.merge(*streams):
        yield ts, msg
