"""A capture loaded for serving: every message as the exact bytes that were recorded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import attrs
import msgspec

from ...feeds._capture import UNITS, expand_paths, open_capture, probe_capture

_STREAM_FOR_EVENT = {
    "bookTicker": "bookTicker",
    "trade": "trade",
    "aggTrade": "aggTrade",
    "depthUpdate": "depth",
    "markPriceUpdate": "markPrice",
}


class _Envelope(msgspec.Struct):
    stream: str
    data: msgspec.Raw


class _Head(msgspec.Struct):
    """The fields the server needs to route and to inject faults."""

    e: str = ""
    s: str = ""
    E: int = 0
    U: int = -1
    u: int = -1
    pu: int = -1
    lastUpdateId: int = -1  # Binance's field name


@attrs.frozen(kw_only=True)
class RecordedMessage:
    """One market message of a capture.

    Attributes:
        ts: recorded local receive time, ns (or ``E`` when the line had none).
        stream: the stream name (``btcusdt@depth@0ms``).
        symbol: upper-case symbol.
        data: the exact bytes of the event object (what ``/ws/<stream>`` sends).
        envelope: the exact combined-stream bytes (what ``/stream?streams=`` sends).
        event_time: ``E`` in ms.
        first_id, last_id, prev_last_id: ``U``, ``u``, ``pu`` of depth updates (else -1).
    """

    ts: int
    stream: str
    symbol: str
    data: bytes
    envelope: bytes
    event_time: int
    first_id: int = -1
    last_id: int = -1
    prev_last_id: int = -1


@attrs.frozen(kw_only=True)
class RecordedSnapshot:
    """A REST depth snapshot found in the capture."""

    ts: int
    symbol: str
    body: bytes
    last_update_id: int


@attrs.define
class Recording:
    """Messages in time order, depth snapshots, and exchangeInfo if the data had one."""

    messages: list[RecordedMessage] = attrs.Factory(list)
    snapshots: list[RecordedSnapshot] = attrs.Factory(list)
    exchange_info: bytes | None = None

    @property
    def symbols(self) -> list[str]:
        """Every symbol with messages, sorted."""
        return sorted({m.symbol for m in self.messages})


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_HEAD = msgspec.json.Decoder(_Head)


def _prefix_ts(prefix: bytes, scale: int, float_scale: int) -> int | None:
    """The receive stamp in ns; the scales are ns per unit of an integer / decimal stamp."""
    text = prefix.strip().rstrip(b":").strip()
    if b" -> " in text:
        text = text.rsplit(b" -> ", 1)[1].rstrip(b":").strip()
    if not text:
        return None
    try:
        return int(text) * scale
    except ValueError:
        return int(float(text) * float_scale)


def load_recording(paths: Iterable[str | Path]) -> Recording:
    """Load captures (files or directories) for serving.

    Lines that are neither stream messages nor REST replies are skipped.
    ``/fapi/v1/exchangeInfo`` replies and depth snapshots are kept.

    Raises:
        DataError: a path does not exist or cannot be read.
    """
    rec = Recording()
    for path in expand_paths(paths):
        pending_snapshots: list[tuple[int, bytes, str]] = []
        file_symbols: set[str] = set()
        # The stamps' unit as the replay reader determines it (s, ms, us or ns);
        # a file without stamped events is read as written: ns, or float seconds.
        unit = probe_capture(path).unit
        scale = UNITS[unit] if unit else 1
        float_scale = UNITS[unit] if unit else UNITS["s"]
        for line in open_capture(path):
            start = line.find(b"{")
            if start < 0:
                continue
            prefix, body = line[:start], line[start:]
            try:
                ts = _prefix_ts(prefix, scale, float_scale)
            except ValueError:
                continue
            try:
                if body.startswith(b'{"stream"'):
                    env = _ENVELOPE.decode(body)
                    data, stream, envelope = bytes(env.data), env.stream, body
                else:
                    data, stream, envelope = body, "", b""
                head = _HEAD.decode(data)
            except msgspec.DecodeError:
                continue
            if head.lastUpdateId >= 0 and not head.e:
                symbol = ""
                if b"symbol=" in prefix:
                    symbol = prefix.split(b"symbol=", 1)[1].split(b"&", 1)[0].decode()
                pending_snapshots.append((ts or 0, body, symbol.upper()))
                continue
            if b"/exchangeInfo" in prefix and b'"symbols"' in body:
                rec.exchange_info = body
                continue
            if not head.e or not head.s:
                continue
            if not stream:
                kind = _STREAM_FOR_EVENT.get(head.e)
                if kind is None:
                    continue
                stream = f"{head.s.lower()}@{kind}"
                envelope = b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"
            file_symbols.add(head.s)
            rec.messages.append(
                RecordedMessage(
                    ts=ts if ts is not None else head.E * 1_000_000,
                    stream=stream,
                    symbol=head.s,
                    data=data,
                    envelope=envelope,
                    event_time=head.E,
                    first_id=head.U,
                    last_id=head.u,
                    prev_last_id=head.pu,
                )
            )
        for ts, body, symbol in pending_snapshots:
            if not symbol and len(file_symbols) == 1:
                symbol = next(iter(file_symbols))
            if symbol:
                last = _HEAD.decode(body).lastUpdateId
                rec.snapshots.append(
                    RecordedSnapshot(ts=ts, symbol=symbol, body=body, last_update_id=last)
                )
    rec.messages.sort(key=lambda m: m.ts)  # stable: file order within a timestamp
    rec.snapshots.sort(key=lambda s: s.ts)
    return rec
