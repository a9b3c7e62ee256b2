"""Reading Binance websocket captures.

A capture is one JSON message per line: the combined-stream wrapper
``{"stream": ..., "data": {...}}`` or the bare event, optionally prefixed by the
local receive time as ``<stamp> {json}`` or ``<epoch-seconds>: {json}``; plain or
gzip. Lines that are not market events (the URL line of a cryptofeed capture,
REST snapshots, anything unparsable) are counted, never fatal.

Event messages are decoded into typed msgspec structs (about 0.4 us per message
here, against 2.7 us for the json module).

What a reader checks, per file (:func:`read_capture`; the counts are in
:class:`CaptureStats`, by reason):

- **Receive-time unit.** Collectors write the prefix in seconds, milliseconds,
  microseconds or nanoseconds. The unit is chosen per file by magnitude against the
  messages' own event times ``E`` (the first :data:`_PROBE_EVENTS` stamped events
  vote), and every stamp is checked against its line's ``E``: a file whose stamps
  disagree with their event times by more than ``max_receive_skew_ms`` is refused
  (:class:`~engine.DataError` naming the file and line), never replayed at the wrong
  speed.
- **Values.** A non-finite, zero or negative price or quantity, a crossed or locked
  book top (bid >= ask) and an event time beyond what int64 nanoseconds hold are
  skipped (``bad_price``, ``bad_qty``, ``crossed_book``, ``time_out_of_range``).
- **Time.** Replay time never goes backwards within a file: an earlier stamp is
  raised to the latest seen and counted (``clamped``). A line more than
  ``max_time_jump_ms`` from its neighbours is skipped (``time_jump``): the line is
  held until the next one says whether the market moved there too (a gap in the
  capture) or came back (one bad stamp), so one far-future stamp never drags the
  events after it.
- **Duplicates.** An event whose update or trade id is not above the last one of
  its symbol and stream (``u`` of bookTicker and depth, ``t`` / ``a`` of trades;
  event time and content for mark prices and klines, which carry no id) is dropped
  (``duplicate``), as the live feed does: the same file replayed twice, or a
  duplicated line, does not double events.
- **Truncated gzip.** A gzip stream that ends before its end-of-stream marker is
  replayed up to the cut, the cut line counted as ``truncated`` and the file listed
  in :attr:`CaptureStats.truncated` (the run summary prints a warning). Such a file
  is what a recorder killed mid-write leaves, and everything before the cut is
  intact (each line is still validated), so refusing it would make the capture
  unusable without repair; hiding it would be worse, hence the warning.
- **Markets.** Spot streams (``<symbol>@bookTicker`` without ``"e"``,
  ``@depth@100ms`` without ``"pu"``, trades with ``"M"``) are recognised by their
  stream name and fields and replay under the symbol ``<SYMBOL>.SPOT``
  (:data:`SPOT_SUFFIX`), so they never mix with the USD-M contract of the same
  name. Coin-margined (``BTCUSD_PERP``, or any message with a ``"ps"`` pair field)
  and delivery (``ETHUSDT_240927``) contracts are refused with a line that says so.
"""

from __future__ import annotations

import heapq
import math
import re
import statistics
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import msgspec

try:  # zlib-ng inflates the same streams about twice as fast as zlib
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - a declared dependency; zlib still reads them
    _zlib = zlib  # type: ignore[assignment]

from .._errors import DataError

_MS = 1_000_000
_INF = math.inf
_INT64_MAX = (1 << 63) - 1
#: The largest event time (ms) whose nanoseconds still fit an int64 column.
_MAX_EVENT_MS = _INT64_MAX // _MS
#: Receive-time units by name, as nanoseconds per unit.
UNITS: dict[str, int] = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
#: Symbol suffix of spot markets (kept apart from the USD-M contract of the same name).
SPOT_SUFFIX = ".SPOT"
#: Stamped events whose units vote for a file's receive-time unit.
_PROBE_EVENTS = 64
#: Lines read at most to find them.
_PROBE_LINES = 20_000


class BookTicker(msgspec.Struct, tag_field="e", tag="bookTicker"):
    """``<symbol>@bookTicker`` (spot's carries no ``"e"``, ``"E"`` nor ``"T"``)."""

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
    """``<symbol>@markPrice[@1s]``: mark and index price, funding rate and time.

    Attributes:
        mark: the mark price (``p``), what unrealised PnL is marked to.
        index: the index price (``i``; NaN when absent).
        funding_rate: the funding rate of the next settlement (``r``; NaN when absent).
        next_funding_time: the next settlement, epoch ms (``T``; 0 when absent).
    """

    symbol: str = msgspec.field(name="s")
    mark: float = msgspec.field(name="p")
    index: float = msgspec.field(name="i", default=math.nan)
    funding_rate: float = msgspec.field(name="r", default=math.nan)
    next_funding_time: int = msgspec.field(name="T", default=0)
    event_time: int = msgspec.field(name="E", default=0)


MarketMessage = BookTicker | Trade | AggTrade | DepthUpdate | Kline | MarkPrice


class Envelope(msgspec.Struct):
    """The combined-stream wrapper."""

    stream: str
    data: MarketMessage


class _RawEnvelope(msgspec.Struct):
    """The wrapper with its data undecoded: for streams whose events carry no ``"e"``."""

    stream: str
    data: msgspec.Raw


@attrs.frozen(kw_only=True)
class CaptureLimits:
    """Bounds of the time checks (``[data]`` keys of the same names).

    Attributes:
        max_receive_skew_ms: a receive stamp further than this from its own line's
            event time refuses the file.
        max_time_jump_ms: a line further than this from its neighbours is skipped.
    """

    max_receive_skew_ms: int = attrs.field(default=900_000, validator=attrs.validators.gt(0))
    max_time_jump_ms: int = attrs.field(default=3_600_000, validator=attrs.validators.gt(0))


class ByteCount:
    """A count of bytes read, shared by the readers of one load and its progress meter."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


@attrs.define
class CaptureStats:
    """What readers saw besides market events.

    Attributes:
        lines: lines (or CSV rows) read.
        events: market events passed on.
        skipped: lines not passed on, by reason.
        clamped: events whose replay time was raised to the latest seen in their file.
        units: per file, the unit of its receive-time stamps (``s``, ``ms``, ``us``,
            ``ns``) or ``E`` when replay time is the exchange event time.
        truncated: files whose gzip stream ended before its end (replayed to the cut).
        snapshots: REST depth snapshots recorded in captures (counted as skipped
            ``snapshot`` lines), ``[symbol, receive_ns, body]`` in file order; the
            symbol is that of the file's next market event (a snapshot names none).
    """

    lines: int = 0
    events: int = 0
    skipped: Counter[str] = attrs.Factory(Counter)
    clamped: int = 0
    units: dict[str, str] = attrs.Factory(dict)
    truncated: list[str] = attrs.Factory(list)
    # The levels themselves, not a counter: left out of comparisons and reprs (a
    # tape mapped from the tick store has its book already, and no snapshots).
    snapshots: list[list[Any]] = attrs.field(factory=list, eq=False, repr=False)
    # Bytes of the files read so far (as stored: compressed for gzip), shared with
    # the stats of a parse made on this one's behalf: what progress meters poll while
    # a parse runs; not a fact about the data.
    read: ByteCount = attrs.field(factory=lambda: ByteCount(), eq=False, repr=False)

    def summary(self) -> dict[str, object]:
        """The per-file facts for the run report (units, clamped, duplicates, truncated)."""
        return {
            "units": dict(self.units),
            "clamped": self.clamped,
            "duplicates": self.skipped.get("duplicate", 0),
            "truncated": list(self.truncated),
        }


_ENVELOPE = msgspec.json.Decoder(Envelope, strict=False)
_BARE = msgspec.json.Decoder(MarketMessage, strict=False)
_RAW_ENVELOPE = msgspec.json.Decoder(_RawEnvelope)
# Streams whose events are recognised by the stream name (spot's bookTicker has no "e").
_BY_STREAM = {"bookTicker": msgspec.json.Decoder(BookTicker, strict=False)}
_SYMBOL_RE = re.compile(rb'"s":"([A-Z0-9_]+)"')
_PAIR_RE = re.compile(rb'"ps":"([A-Za-z0-9_]+)"')
_DELIVERY_RE = re.compile(r"^[A-Z0-9]+_\d{6}$")


_CHUNK = 1 << 20


class _TruncatedGzipError(Exception):
    """The gzip stream ended before its end-of-stream marker."""


def _chunks(path: Path, size: int = _CHUNK, stats: CaptureStats | None = None) -> Iterator[bytes]:
    """The file's bytes in chunks of ``size`` bytes read, gunzipped (every gzip member).

    ``stats.read`` (when given) counts the bytes read from the file.

    Raises:
        _TruncatedGzipError: after the last chunk, when the last gzip member has no end.
    """
    with path.open("rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != b"\x1f\x8b":
            while chunk := f.read(size):
                if stats is not None:
                    stats.read.n += len(chunk)
                yield chunk
            return
        inflater = _zlib.decompressobj(wbits=47)
        while raw := f.read(size):
            if stats is not None:
                stats.read.n += len(raw)
            while raw:
                yield inflater.decompress(raw)
                raw = inflater.unused_data
                if raw:  # a concatenated gzip member starts here
                    yield inflater.flush()
                    inflater = _zlib.decompressobj(wbits=47)
        yield inflater.flush()
        if not inflater.eof:
            raise _TruncatedGzipError


#: Errors of a corrupt gzip stream (zlib's, and zlib-ng's when it is the inflater).
_ZLIB_ERRORS = (zlib.error, _zlib.error)


def _inflate_all(path: Path) -> tuple[bytes, int, BaseException | None]:
    """The whole file decompressed: ``(bytes, bytes read, error)`` (a truncated or
    corrupt stream: the bytes up to the error, and the error)."""
    parts: list[bytes] = []
    counter = CaptureStats()
    error: BaseException | None = None
    try:
        for data in _chunks(path, _CHUNK, counter):
            parts.append(data)
    except (_TruncatedGzipError, OSError, *_ZLIB_ERRORS) as exc:
        error = exc
    return b"".join(parts), counter.read.n, error


def open_capture(
    path: Path, stats: CaptureStats | None = None, *, chunk: int = _CHUNK
) -> Iterator[bytes]:
    """Yield the lines of a capture (without line endings), gunzipping gzip files.

    Decompression and line splitting run in C over 1 MiB chunks: several times
    faster than ``gzip.open(...).readline``.

    Args:
        path: the capture.
        stats: where a truncated gzip stream is recorded (``truncated``: the file is
            listed and its cut line counted instead of yielded). Without it, a
            truncated stream is an error.
        chunk: bytes read at a time (small when only the first lines are wanted).

    Raises:
        DataError: the file is missing, unreadable or a corrupt gzip stream, or (with
            no ``stats``) a gzip stream that ends early.
    """
    tail = b""
    try:
        for data in _chunks(path, chunk, stats):
            if not data:
                continue
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            yield from lines
    except FileNotFoundError:
        raise DataError(f"{path}: no such market data file") from None
    except _TruncatedGzipError:
        if stats is None:
            raise DataError(f"{path}: truncated gzip (the stream ends early)") from None
        stats.truncated.append(str(path))
        stats.skipped["truncated"] += 1  # the cut line, never complete
        return
    except (OSError, *_ZLIB_ERRORS) as exc:
        raise DataError(f"{path}: cannot read market data ({exc})") from exc
    if tail:
        yield tail


def _invalid_reason(exc: msgspec.ValidationError, body: bytes) -> str:
    """Why a JSON body did not validate: not a market event, or one with a bad field."""
    if b'"lastUpdateId"' in body:
        return "snapshot"
    text = str(exc)
    if "`$.e`" in text or "`$.data.e`" in text or "field `e`" in text:
        return "unknown_message"
    return "bad_field"  # a market event with a field out of range or of the wrong type


def _decode_line(line: bytes) -> tuple[int | float | None, MarketMessage, bool] | str:
    """Decode one line: ``(receive prefix as written, message, by_stream)`` or a skip reason.

    ``by_stream`` says the event was recognised by its stream name (it has no ``"e"``).
    """
    start = line.find(b"{")
    if start < 0:
        return "non_json" if line.strip() else "blank"
    body = line[start:]
    raw: int | float | None = None
    if start:
        prefix = line[:start]
        try:
            # ``<stamp> {json}``; int() ignores the surrounding spaces.
            raw = int(prefix)
        except ValueError:
            try:
                # ``<epoch-seconds>: {json}`` (cryptofeed)
                raw = float(prefix.rstrip().rstrip(b":"))
            except ValueError:
                # ``https://.../depth?... -> 1626992741.3: {...}`` is a recorded REST reply.
                return "rest_reply" if b" -> " in prefix else "bad_prefix"
    try:
        if body.startswith(b'{"stream"'):
            return raw, _ENVELOPE.decode(body).data, False
        return raw, _BARE.decode(body), False
    except msgspec.ValidationError as exc:
        if body.startswith(b'{"stream"'):
            by_stream = _decode_by_stream(body)
            if by_stream is not None:
                return raw, by_stream, True
        return _invalid_reason(exc, body)
    except msgspec.DecodeError:
        return "malformed_json"


def _decode_by_stream(body: bytes) -> MarketMessage | None:
    """The event of a wrapped message whose kind only its stream name says, else None."""
    try:
        envelope = _RAW_ENVELOPE.decode(body)
        _symbol, _at, kind = envelope.stream.partition("@")
        decoder = _BY_STREAM.get(kind.partition("@")[0])
        if decoder is None:
            return None
        return decoder.decode(envelope.data)
    except msgspec.DecodeError:
        return None


def _unit_for(raw: int | float, event_ms: int) -> str:
    """The unit of a receive stamp: nearest to its event time, else by magnitude alone.

    Units are a factor of 1000 apart, so for any date between 1973 and 2262 the
    magnitude alone is unambiguous; the event time decides when there is one.
    """
    target = event_ms * _MS if event_ms > 0 else 1.7e18  # ~2023 when there is no E
    if raw <= 0:
        return "ns"
    return min(UNITS, key=lambda u: abs(math.log10(raw * UNITS[u]) - math.log10(target)))


def _scaled(raw: int | float, scale: int) -> int:
    return raw * scale if type(raw) is int else int(raw * scale)


def parse_line(line: bytes, stats: CaptureStats) -> tuple[int | None, MarketMessage] | None:
    """Decode one capture line; count and return None when it is not a market event.

    The receive-time prefix is converted to nanoseconds in the unit this line's own
    event time (or its magnitude) says; :func:`read_capture` decides the unit once
    per file and checks every line against it.

    Returns:
        ``(receive_ns or None, message)``.
    """
    stats.lines += 1
    decoded = _decode_line(line)
    if isinstance(decoded, str):
        stats.skipped[decoded] += 1
        return None
    raw, msg, _by_stream = decoded
    if raw is None:
        return None, msg
    return _scaled(raw, UNITS[_unit_for(raw, msg.event_time)]), msg


def _bad_value(msg: MarketMessage) -> str | None:
    """Why an event's values cannot be market data, or None.

    Comparisons are written so that NaN fails them (``0 < nan`` is false).
    """
    kind = type(msg)
    if kind is BookTicker:
        if not (0.0 < msg.bid < _INF and 0.0 < msg.ask < _INF):
            return "bad_price"
        if not (0.0 < msg.bid_qty < _INF and 0.0 < msg.ask_qty < _INF):
            return "bad_qty"
        if msg.bid >= msg.ask:
            return "crossed_book"
    elif kind is Trade or kind is AggTrade:
        if not 0.0 < msg.price < _INF:
            return "bad_price"
        if not 0.0 < msg.qty < _INF:
            return "bad_qty"
    elif kind is MarkPrice:
        if not 0.0 < msg.mark < _INF or msg.index <= 0.0 or msg.index == _INF:
            return "bad_price"
        if abs(msg.funding_rate) == _INF or not 0 <= msg.next_funding_time <= _MAX_EVENT_MS:
            return "bad_field"
    elif kind is Kline:
        if not 0.0 < msg.bar.close < _INF:
            return "bad_price"
        if not 0.0 <= msg.bar.volume < _INF:
            return "bad_qty"
    if not 0 <= msg.event_time <= _MAX_EVENT_MS:
        return "time_out_of_range"
    return None


def unsupported_symbol(symbol: str) -> str | None:
    """What is not supported about a symbol's contract, or None for a USD-M perpetual.

    Coin-margined contracts (``BTCUSD_PERP``, ``BTCUSD_240927``) are inverse (PnL in
    the base coin, quantities in contracts of a fixed USD value) and USD-M delivery
    contracts (``ETHUSDT_240927``) expire: neither is modelled by the venues, the
    risk checks nor the reports.
    """
    if "_" not in symbol:
        return None
    base, _, suffix = symbol.partition("_")
    if base.endswith("USD") or suffix == "PERP":
        return (
            f"{symbol} is a coin-margined contract (inverse PnL, quantity in contracts): "
            "not supported; Trireme trades USD-M perpetuals only"
        )
    if _DELIVERY_RE.match(symbol):
        return (
            f"{symbol} is a USD-M delivery contract (expires 20{suffix[:2]}-{suffix[2:4]}-"
            f"{suffix[4:]}): not supported; Trireme trades USD-M perpetuals only"
        )
    return f"{symbol}: not a USD-M perpetual symbol; Trireme trades USD-M perpetuals only"


def untradeable(symbol: str) -> str | None:
    """Why ``symbol`` cannot be traded on the USD-M futures venue (paper, live), or None.

    Spot symbols (``BTCUSDT.SPOT``) replay for research; coin-margined and delivery
    contracts are not supported at all (:func:`unsupported_symbol`).
    """
    if symbol.endswith(SPOT_SUFFIX):
        return (
            f"{symbol} is a spot market: spot data replays for research, but paper and "
            "live trade USD-M perpetuals on the futures venue only"
        )
    return unsupported_symbol(symbol)


def _coin_margined_pair(line: bytes, where: str) -> None:
    """Refuse a line that carries a ``"ps"`` pair field (coin-margined; USD-M has none)."""
    match = _PAIR_RE.search(line)
    if match is not None:
        raise DataError(
            f'{where}: coin-margined capture (pair field "ps":"{match[1].decode()}", '
            "whatever the symbol says): not supported; Trireme trades USD-M perpetuals only"
        )


@attrs.frozen
class FileProfile:
    """What the first lines of a capture say about the whole file.

    Attributes:
        unit: the receive-stamp unit (a key of :data:`UNITS`), or ``""`` when no
            line of the probe carried both a stamp and an event time.
        anchor: the median replay time (ns) of the probed events (the neighbour
            the first event is checked against), or None.
        spot: the file holds spot streams.
        samples: ``(line number, stamp as written, event time ms)`` of the probed
            stamped events.
    """

    unit: str
    anchor: int | None
    spot: bool
    samples: tuple[tuple[int, int | float, int], ...]


def _spot_marker(msg: MarketMessage, body: bytes, by_stream: bool) -> bool:
    """Whether an event is from a spot stream (fields USD-M futures do not send)."""
    if by_stream:
        return True  # bookTicker without "e"
    kind = type(msg)
    if kind is DepthUpdate:
        return msg.prev_last_id < 0  # futures diffs always chain with "pu"
    if kind is Trade or kind is AggTrade:
        return b'"M":' in body  # spot's "ignore" field
    return False


def probe_capture(path: Path) -> FileProfile:
    """Read the first lines of a capture: receive-stamp unit, start time, market.

    Raises:
        DataError: the file cannot be read, or holds coin-margined or delivery
            contracts (naming the file and line).
    """
    samples: list[tuple[int, int | float, int]] = []
    times: list[int] = []
    spot = False
    # Small reads: the probe wants the first few hundred lines, not the first 8 MB.
    for line_no, line in enumerate(open_capture(path, CaptureStats(), chunk=1 << 14), 1):
        if line_no > _PROBE_LINES or len(samples) >= _PROBE_EVENTS:
            break
        decoded = _decode_line(line)
        if isinstance(decoded, str):
            continue
        raw, msg, by_stream = decoded
        where = f"{path}:{line_no}"
        reason = unsupported_symbol(msg.symbol)
        if reason is not None:
            raise DataError(f"{where}: {reason}")
        _coin_margined_pair(line, where)
        spot = spot or _spot_marker(msg, line, by_stream)
        if _bad_value(msg) is not None:
            continue
        if raw is not None and msg.event_time > 0:
            samples.append((line_no, raw, msg.event_time))
        elif raw is None and msg.event_time > 0:
            times.append(msg.event_time * _MS)
    unit = ""
    if samples:
        votes = Counter(_unit_for(raw, e) for _n, raw, e in samples)
        unit = votes.most_common(1)[0][0]
        times = [_scaled(raw, UNITS[unit]) for _n, raw, _e in samples]
    anchor = int(statistics.median_low(times)) if times else None
    return FileProfile(unit=unit, anchor=anchor, spot=spot, samples=tuple(samples))


def _check_unit(path: Path, profile: FileProfile, skew_ns: int) -> None:
    """Refuse a file whose stamps, in the unit chosen, still miss their event times.

    Raises:
        DataError: naming the file and the first probed line that is off.
    """
    if not profile.unit:
        return
    scale = UNITS[profile.unit]
    offs = [(_scaled(raw, scale) - e * _MS, n, raw, e) for n, raw, e in profile.samples]
    if statistics.median_low(abs(o[0]) for o in offs) <= skew_ns:
        return  # the unit fits; lines that are off are dealt with one by one
    off, line_no, raw, e = next(o for o in offs if abs(o[0]) > skew_ns)
    raise DataError(
        f"{path}:{line_no}: receive time {raw} matches its event time E={e} in no unit "
        f"(s, ms, us, ns): {off / 1e9:+.3f} s off read as {profile.unit}, more than "
        f"data.max_receive_skew_ms = {skew_ns // _MS}"
    )


class _Dedupe:
    """Drops events whose id is not above the last of their symbol and stream.

    Ids are ``u`` of bookTicker and depth diffs and ``t`` / ``a`` of trades, which the
    exchange numbers increasingly per symbol. Mark prices and klines carry no id:
    one is a duplicate when its event time is earlier than the last, or equal with
    the same content.
    """

    __slots__ = ("_aggs", "_depth", "_timed", "quotes", "trades")

    def __init__(self) -> None:
        # Last id per symbol, one dict per stream (no key tuple built per event).
        self.quotes: dict[str, int] = {}
        self.trades: dict[str, int] = {}
        self._aggs: dict[str, int] = {}
        self._depth: dict[str, int] = {}
        self._timed: dict[tuple[type, str], tuple[int, set[tuple[object, ...]]]] = {}

    def seen(self, msg: MarketMessage) -> bool:
        """Whether ``msg`` was seen already (records it when not)."""
        kind = type(msg)
        if kind is BookTicker:
            ids, ident = self.quotes, msg.update_id
        elif kind is Trade:
            ids, ident = self.trades, msg.trade_id
        elif kind is DepthUpdate:
            ids, ident = self._depth, msg.last_id
        elif kind is AggTrade:
            ids, ident = self._aggs, msg.trade_id
        else:
            return self._seen_timed(msg)
        symbol = msg.symbol
        if ident <= ids.get(symbol, -1):
            return ident >= 0  # (no id: never a duplicate)
        ids[symbol] = ident
        return False

    def _seen_timed(self, msg: MarketMessage) -> bool:
        key = (type(msg), msg.symbol)
        content: tuple[object, ...]
        if isinstance(msg, MarkPrice):
            content = (msg.mark, msg.index, msg.funding_rate, msg.next_funding_time)
        else:
            assert isinstance(msg, Kline)
            content = (msg.bar.close, msg.bar.volume, msg.bar.closed)
        last = self._timed.get(key)
        if last is not None:
            if msg.event_time < last[0]:
                return True
            if msg.event_time == last[0]:
                if content in last[1]:
                    return True
                last[1].add(content)
                return False
        self._timed[key] = (msg.event_time, {content})
        return False


class _Clock:
    """One file's replay time: what :func:`timeline` does with each event.

    Args:
        path: the file (for errors).
        stats: counters to update.
        limits: the bounds.
        dedupe: drops duplicates (None: the caller does, after merging files).
        anchor: the time the first event is checked against (None: not checked).
    """

    __slots__ = ("dedupe", "held", "jump", "last", "path", "ref", "skew", "stats")

    def __init__(
        self,
        path: Path,
        stats: CaptureStats,
        limits: CaptureLimits,
        dedupe: _Dedupe | None,
        anchor: int | None,
    ) -> None:
        self.path = path
        self.stats = stats
        self.skew = limits.max_receive_skew_ms * _MS
        self.jump = limits.max_time_jump_ms * _MS
        self.dedupe = dedupe
        # ``ref``: the neighbour a line's time is checked against (-1: none yet);
        # ``last``: the latest replay time passed on; ``held``: a line far from
        # ``ref``, waiting for the next line to say whether the jump was real.
        self.ref = anchor if anchor is not None else -1
        self.last = 0
        self.held: tuple[int, MarketMessage, int, int | None] | None = None

    def push(
        self, line_no: int, recv: int | None, msg: MarketMessage
    ) -> list[tuple[int, MarketMessage]]:
        """The events to pass on now that this line was read (none, one or two).

        Raises:
            DataError: a receive stamp disagrees with its event time (:meth:`_skew_ok`).
        """
        out: list[tuple[int, MarketMessage]] = []
        skipped = self.stats.skipped
        if not 0 <= msg.event_time <= _MAX_EVENT_MS:
            skipped["time_out_of_range"] += 1
            return out
        jump = self.jump
        event_ns = msg.event_time * _MS
        ts = recv if recv is not None else (event_ns or self.last)
        if self.held is not None:
            # This line says whether the held one's jump was real: it was when this
            # line is far from the old neighbour too (a gap in the capture), it was
            # one bad stamp when this line came back.
            h_ts, h_msg, h_line, h_recv = self.held
            self.held = None
            if abs(ts - self.ref) > jump:
                if self._skew_ok(h_line, h_recv, h_msg, ts):
                    self._pass(h_ts, h_msg, out)
            else:
                skipped["time_jump"] += 1
        if abs(ts - self.ref) > jump:
            if not 0 < ts <= _INT64_MAX:
                skipped["time_out_of_range"] += 1
                return out
            if self.ref >= 0:  # (no neighbour yet: nothing to be far from)
                self.held = (ts, msg, line_no, recv)
                return out
        if self._skew_ok(line_no, recv, msg, self.ref):
            self._pass(ts, msg, out)
        return out

    def _pass(self, ts: int, msg: MarketMessage, out: list[tuple[int, MarketMessage]]) -> None:
        if self.dedupe is not None and self.dedupe.seen(msg):
            self.stats.skipped["duplicate"] += 1
            return
        if ts < self.last:
            ts = self.last
            self.stats.clamped += 1
        self.ref = self.last = ts
        self.stats.events += 1
        out.append((ts, msg))

    def finish(self) -> None:
        """At the end of the file: a line still held had no neighbour agree with it."""
        if self.held is not None:
            self.held = None
            self.stats.skipped["time_jump"] += 1

    def _skew_ok(self, line_no: int, recv: int | None, msg: MarketMessage, ref: int) -> bool:
        """Check a line's receive stamp against its own event time.

        Returns:
            True when they agree (or there is nothing to compare); False, counted
            as ``time_jump``, when the event time is the odd one out (further than
            the jump bound from the line's neighbour ``ref``).

        Raises:
            DataError: they disagree by more than the skew bound and the event time
                is where the market is: the clock that stamped the file moved (or
                its unit changed) mid-file, so its times cannot be trusted.
        """
        event_ns = msg.event_time * _MS
        if recv is None or not event_ns or abs(recv - event_ns) <= self.skew:
            return True
        if abs(event_ns - ref) > self.jump:
            self.stats.skipped["time_jump"] += 1
            return False
        raise DataError(
            f"{self.path}:{line_no}: receive time is {(recv - event_ns) / 1e9:+.3f} s from "
            f"the event time E={msg.event_time}, more than data.max_receive_skew_ms = "
            f"{self.skew // _MS}"
        )


def timeline(
    path: Path,
    lines: Iterable[tuple[int, int | None, MarketMessage]],
    stats: CaptureStats,
    limits: CaptureLimits,
    dedupe: _Dedupe | None,
    anchor: int | None = None,
) -> Iterator[tuple[int, MarketMessage]]:
    """Replay times of one file's events: jumps skipped, stamps checked, duplicates dropped.

    Args:
        path: the file (for errors).
        lines: ``(line number, receive ns or None, message)`` in file order; without a
            receive time an event replays at its event time.
        stats: counters to update.
        limits: the bounds.
        dedupe: drops duplicates (None: the caller does, after merging files).
        anchor: the time the first event is checked against (None: not checked).

    Raises:
        DataError: a receive stamp disagrees with its event time.
    """
    clock = _Clock(path, stats, limits, dedupe, anchor)
    for line_no, recv, msg in lines:
        yield from clock.push(line_no, recv, msg)
    clock.finish()


def _read_file(
    path: Path,
    stats: CaptureStats,
    symbols: frozenset[str] | None,
    limits: CaptureLimits,
    dedupe: _Dedupe | None,
) -> Iterator[tuple[int, MarketMessage]]:
    """One capture's events in file order, checked (see the module docstring).

    The loop is :func:`timeline` over the decoded lines, with the common case (in
    time, stamp agreeing, nothing held) inlined: a generator layer and a call per
    event would cost a third of the decoding.
    """
    profile = probe_capture(path)
    clock = _Clock(path, stats, limits, dedupe, profile.anchor)
    _check_unit(path, profile, clock.skew)
    if profile.unit or profile.anchor is not None:  # (a file of no market events has none)
        stats.units[str(path)] = profile.unit or "E"
    scale = UNITS[profile.unit] if profile.unit else 0
    spot = profile.spot
    known: set[str] = set()
    skipped = stats.skipped
    envelope = _ENVELOPE.decode
    decode_error = msgspec.DecodeError
    inf, ms = _INF, _MS
    ref, last, jump, skew = clock.ref, clock.last, clock.jump, clock.skew
    neg_jump, neg_skew = -jump, -skew
    pending = False
    quote_ids = dedupe.quotes if dedupe is not None else None
    trade_ids = dedupe.trades if dedupe is not None else None
    line_no = 0
    waiting: list[list[Any]] = []  # snapshots still without a symbol
    for line in open_capture(path, stats):
        line_no += 1
        stats.lines += 1
        # Fast path, inlined because it runs once per message: ``<stamp> {"stream":...}``.
        start = line.find(b"{")
        msg = None
        if scale and start > 0 and line.startswith(b'{"stream"', start):
            try:
                recv: int | None = int(line[:start]) * scale
                msg = envelope(line[start:]).data
            except (ValueError, decode_error):
                msg = None
        if msg is None:
            decoded = _decode_line(line)
            if isinstance(decoded, str):
                skipped[decoded] += 1
                if decoded == "snapshot" and start > 0 and scale:
                    _keep_snapshot(stats, line, start, scale, waiting)
                continue
            raw, msg, by_stream = decoded
            if by_stream and not spot:
                raise DataError(f"{path}:{line_no}: spot stream in a USD-M capture")
            recv = None if raw is None else _scaled(raw, scale or UNITS[_unit_for(raw, 0)])
        # The two commonest kinds are checked inline (a call per event costs as much
        # as the check); every other kind, and a failed check, goes to _bad_value.
        # (An event time out of range always takes the slow path below, which
        # checks it.)
        kind = type(msg)
        if kind is BookTicker:
            ok = (
                0.0 < msg.bid < msg.ask < inf
                and 0.0 < msg.bid_qty < inf
                and 0.0 < msg.ask_qty < inf
            )
            ids, ident = quote_ids, msg.update_id
        elif kind is Trade:
            ok = 0.0 < msg.price < inf and 0.0 < msg.qty < inf
            ids, ident = trade_ids, msg.trade_id
        else:
            ok = _bad_value(msg) is None
            ids = None
        if not ok:
            skipped[_bad_value(msg) or "bad_field"] += 1
            continue
        symbol = msg.symbol
        if waiting:
            for entry in waiting:
                entry[0] = symbol
            waiting.clear()
        if spot:
            symbol += SPOT_SUFFIX
            msg = msgspec.structs.replace(msg, symbol=symbol)
        if symbols is not None:
            # (The symbols come from scan_symbols, which refuses unsupported ones.)
            if symbol not in symbols:
                skipped["other_symbol"] += 1
                continue
        elif symbol not in known:
            problem = unsupported_symbol(msg.symbol)
            if problem is not None:
                raise DataError(f"{path}:{line_no}: {problem}")
            known.add(symbol)
        # The common case of _Clock.push, inlined; anything else goes there.
        event_ns = msg.event_time * ms
        ts = recv if recv is not None else (event_ns or last)
        off = ts - event_ns if event_ns else 0
        if pending or not (neg_jump <= ts - ref <= jump and neg_skew <= off <= skew):
            clock.ref, clock.last = ref, last
            yield from clock.push(line_no, recv, msg)
            ref, last, pending = clock.ref, clock.last, clock.held is not None
            continue
        if ids is not None:
            if 0 <= ident <= ids.get(symbol, -1):
                skipped["duplicate"] += 1
                continue
            ids[symbol] = ident
        elif dedupe is not None and dedupe.seen(msg):
            skipped["duplicate"] += 1
            continue
        if ts < last:
            ts = last
            stats.clamped += 1
        ref = last = ts
        stats.events += 1
        yield ts, msg
    clock.finish()


def _keep_snapshot(
    stats: CaptureStats, line: bytes, start: int, scale: int, waiting: list[list[Any]]
) -> None:
    """Keep a recorded ``<stamp> {"lastUpdateId":...}`` line for the book columns."""
    from ..book import BookError, decode_snapshot  # engine.book does not import feeds

    try:
        recv = int(line[:start]) * scale
        snapshot = decode_snapshot(line[start:])
    except (ValueError, BookError):
        return
    entry: list[Any] = [None, recv, snapshot]
    stats.snapshots.append(entry)
    waiting.append(entry)


def read_capture(
    path: Path,
    stats: CaptureStats,
    symbols: frozenset[str] | None = None,
    *,
    limits: CaptureLimits | None = None,
) -> Iterator[tuple[int, MarketMessage]]:
    """Decode a capture into ``(replay_ts_ns, message)`` in file order.

    The replay time of an event is its local receive time when the line has one
    (in the unit the file uses), else the exchange event time. Lines are checked as
    the module docstring says; what is skipped is counted in ``stats``.

    Args:
        path: the capture (plain or gzip).
        stats: counters to update.
        symbols: keep only these symbols (None keeps all; spot ones end in ``.SPOT``).
        limits: bounds of the time checks (the defaults of :class:`CaptureLimits`).

    Raises:
        DataError: the file cannot be opened or read; its stamps disagree with its
            event times; it holds coin-margined or delivery contracts.
    """
    return _read_file(path, stats, symbols, limits or CaptureLimits(), _Dedupe())


def scan_symbols(paths: Iterable[Path]) -> list[str]:
    """Every symbol that appears in market events of the captures, sorted.

    A byte-level scan (no JSON decoding), so finding the symbols before the replay
    starts costs a fraction of the replay itself. Symbols of spot captures end in
    :data:`SPOT_SUFFIX`.

    Raises:
        DataError: a file cannot be read, or holds coin-margined or delivery
            contracts (a ``"ps"`` pair field, or a symbol with ``_``).
    """
    from ._csv import csv_symbol, is_csv_source  # _csv builds on this module
    from ._fastcap import parse_file, small_enough
    from ._feather import feather_symbol, is_feather_source

    found: set[str] = set()
    for path in paths:
        if is_csv_source(path):
            found.add(csv_symbol(path))
            continue
        if is_feather_source(path):
            symbol = feather_symbol(path)
            found.update([symbol] if symbol is not None else [])
            continue
        in_file, pair = (
            _scan_parsed(path, parse_file) if small_enough(path) else _scan_streamed(path)
        )
        for raw in sorted(in_file):
            problem = unsupported_symbol(raw.decode())
            if problem is not None:
                raise DataError(f"{path}: {problem}")
        if pair:
            _coin_margined_pair(pair, str(path))
        suffix = SPOT_SUFFIX if in_file and probe_capture(path).spot else ""
        found.update(s.decode() + suffix for s in in_file)
    return sorted(found)


def _scan_parsed(path: Path, parse_file: Any) -> tuple[set[bytes], bytes]:
    """Symbols and the first pair field of a file read whole: it is parsed, and the
    parse kept for the read that follows (see :mod:`engine.feeds._fastcap`)."""
    parsed = parse_file(path, keep=True)
    error = parsed.error
    if isinstance(error, FileNotFoundError):
        raise DataError(f"{path}: no such market data file") from None
    if error is not None and not isinstance(error, _TruncatedGzipError):
        # (a truncated stream: the reader replays up to the cut and reports it)
        raise DataError(f"{path}: cannot read market data ({error})") from error
    return parsed.symbols_found(_SYMBOL_RE, _PAIR_RE)


def _scan_streamed(path: Path) -> tuple[set[bytes], bytes]:
    """Symbols and the first pair field of a large file, a chunk at a time."""
    in_file: set[bytes] = set()
    pair = b""
    tail = b""
    try:
        for chunk in _chunks(path):
            # The tail overlaps chunks so that a match cut by a boundary is seen whole.
            window = tail + chunk
            in_file.update(_SYMBOL_RE.findall(window))
            if not pair:
                match = _PAIR_RE.search(window)
                pair = match[0] if match is not None else b""
            tail = window[-64:]
    except FileNotFoundError:
        raise DataError(f"{path}: no such market data file") from None
    except _TruncatedGzipError:
        pass  # the reader replays up to the cut and reports it
    except (OSError, *_ZLIB_ERRORS) as exc:
        raise DataError(f"{path}: cannot read market data ({exc})") from exc
    return in_file, pair


_DOC_SUFFIXES = frozenset({".md", ".txt", ".rst", ".html", ".pdf", ".part", ".checksum"})


def _is_data_name(path: Path) -> bool:
    """Whether a file found in a data directory is data (not its README or licence)."""
    name = path.name
    return not (
        name.startswith(".")
        or path.suffix.lower() in _DOC_SUFFIXES
        or name.upper().startswith(("LICENSE", "LICENCE", "README", "NOTICE", "COPYING"))
        or name.upper().startswith("SOURCES.")
    )


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the data files inside named directories (sorted).

    In a directory, documentation (``*.md``, ``*.txt``, README, LICENSE, SOURCES,
    dot files) is left out, since a data folder carries its licence note beside the
    data.

    Raises:
        DataError: a path does not exist, or nothing was named.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # Recursive: a downloaded public-data archive keeps symbol/kind folders.
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and _is_data_name(p)))
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
    paths: list[Path],
    stats: CaptureStats,
    symbols: frozenset[str] | None = None,
    *,
    limits: CaptureLimits | None = None,
) -> Iterator[tuple[int, MarketMessage]]:
    """Events of several sources merged by replay time (ties: file order, then line).

    Sources are websocket captures, Binance public-data CSV files
    (:mod:`engine.feeds._csv`) or Freqtrade feather files (:mod:`engine.feeds._feather`),
    told apart by the file name. Duplicates are dropped
    after the merge (the same event in two files counts once).
    """
    from ._csv import _read_csv, is_csv_source  # _csv builds on this module
    from ._feather import _read_feather, is_feather_source

    bounds = limits or CaptureLimits()

    def reader(path: Path, dedupe: _Dedupe | None) -> Iterator[tuple[int, MarketMessage]]:
        if is_csv_source(path):
            return _read_csv(path, stats, symbols, bounds, dedupe)
        if is_feather_source(path):
            return _read_feather(path, stats, symbols, bounds, dedupe)
        return _read_file(path, stats, symbols, bounds, dedupe)

    if len(paths) == 1:
        yield from reader(paths[0], _Dedupe())
        return
    dedupe = _Dedupe()
    streams = [_keyed(reader(p, None), i) for i, p in enumerate(paths)]
    for ts, _i, _n, msg in heapq.merge(*streams):
        if dedupe.seen(msg):
            stats.skipped["duplicate"] += 1
            stats.events -= 1  # counted by its reader
            continue
        yield ts, msg
