"""A capture read straight into columns: a compiled line parser, the checks over arrays.

:func:`read_capture_columns` gives the same events, in the same order, with the same
counters as :func:`engine.feeds._capture.read_capture` over one file, but as columns
(the tape's) instead of one message object per event. Two numba kernels do the
common lines:

- :func:`_parse_lines` walks the decompressed bytes once and, for every line of the
  exact shape a Binance recorder writes (``<stamp> {"stream":"...","data":{...}}``, a
  ``bookTicker``, ``trade`` or ``depthUpdate`` event with all its fields, no
  whitespace, no escapes, decimal strings of at most 15 digits), writes its fields
  into preallocated arrays. Prices and quantities are read as ``mantissa /
  10**decimals``: both are exact doubles, so the one division rounds correctly and
  gives the value the JSON decoder gives. A depth diff's levels are checked for
  shape and skipped (a replay that reads the book takes the general path). Any
  other line is marked for the general path.
- :func:`_check_rows` applies the reader's checks (values, symbols, the replay clock,
  duplicates, clamping) to a run of parsed lines, and stops at the first line that
  needs more than the common case (a line for the general path, a time outside the
  jump or skew bounds, an event time out of range).

The lines the kernels leave go through :class:`_General`, the per-line body of
``_read_file`` over the same state, so a capture with odd lines counts them exactly
as before. What goes through here: one capture file (not CSV or feather), a
USD-M one with receive stamps, small enough to read whole (:func:`small_enough`),
read without the book; anything else is read by ``merge_captures`` as before.

The symbol scan (:func:`~engine.feeds._capture.scan_symbols`) parses the file the
same way and keeps the parse for the read that follows (:func:`parse_file`), keyed
by the file's size, mtime and CRC-32, so a replay gunzips and parses it once.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from .._errors import DataError
from ._capture import (
    _INF,
    _MAX_EVENT_MS,
    _MS,
    UNITS,
    AggTrade,
    BookTicker,
    CaptureLimits,
    CaptureStats,
    DepthUpdate,
    Kline,
    MarketMessage,
    MarkPrice,
    Trade,
    _bad_value,
    _check_unit,
    _Clock,
    _decode_line,
    _Dedupe,
    _inflate_all,
    _keep_snapshot,
    _scaled,
    _TruncatedGzipError,
    probe_capture,
)
from ._columns import DEPTH, KLINE, MARK, NAN, QUOTE, TRADE

# Line kinds written by _parse_lines.
_GENERAL, _QUOTE, _TRADE, _DEPTH = 0, 1, 2, 3
#: Distinct symbols the parser interns (a line with one more goes the general way).
_MAX_SYMBOLS = 64
_MAX_SYMBOL_LEN = 32
_POW10 = np.array([10.0**k for k in range(16)])
_HEAD = np.frombuffer(b'","data":{"e":"', dtype=np.uint8).copy()
_TAG_QUOTE = np.frombuffer(b"bookTicker", dtype=np.uint8).copy()
_TAG_TRADE = np.frombuffer(b"trade", dtype=np.uint8).copy()
_TAG_DEPTH = np.frombuffer(b"depthUpdate", dtype=np.uint8).copy()
# Key bits of _parse_lines: E T s u b B a A t p q m U pu = 1 << 0 .. 1 << 13.
_INT_KEYS = 1 | 2 | 8 | 256 | 4096 | 8192  # E T u t U pu
_DECIMAL_KEYS = 16 | 32 | 64 | 128 | 512 | 1024  # b B a A p q
# Counters of _check_rows, by index.
_BAD_PRICE, _BAD_QTY, _CROSSED, _OTHER, _DUP, _CLAMPED, _EVENTS = range(7)
_COUNTER_NAMES = ("bad_price", "bad_qty", "crossed_book", "other_symbol", "duplicate")


@njit(cache=True, nogil=True, inline="always")
def _string_end(buf: Any, i: int, end: int) -> int:
    """Index of the closing quote of a string starting at ``i`` (after its opening
    quote); -1 for an escape, a control or non-ASCII byte, or no quote on the line."""
    while i < end:
        c = buf[i]
        if c == 34:
            return i
        if c == 92 or c < 32 or c >= 128:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True, inline="always")
def _uint_end(buf: Any, i: int, end: int) -> int:
    """End of a JSON unsigned integer of at most 18 digits at ``i``; -1 if none."""
    j = i
    while j < end and 48 <= buf[j] <= 57:
        j += 1
    n = j - i
    if n == 0 or n > 18 or (buf[i] == 48 and n > 1):
        return -1
    return j


@njit(cache=True, nogil=True, inline="always")
def _uint_value(buf: Any, i: int, j: int) -> int:
    v = 0
    for k in range(i, j):
        v = v * 10 + (buf[k] - 48)
    return v


@njit(cache=True, nogil=True, inline="always")
def _decimal_end(buf: Any, i: int, end: int) -> int:
    """End (after the closing quote) of a ``"123.45"`` string at ``i`` whose digits
    (at most 15) make an exact double; -1 otherwise."""
    if i >= end or buf[i] != 34:
        return -1
    j = i + 1
    k = j
    while k < end and 48 <= buf[k] <= 57:
        k += 1
    n_int = k - j
    if n_int == 0 or (buf[j] == 48 and n_int > 1):
        return -1
    n_frac = 0
    if k < end and buf[k] == 46:
        k += 1
        f = k
        while k < end and 48 <= buf[k] <= 57:
            k += 1
        n_frac = k - f
        if n_frac == 0:
            return -1
    if n_int + n_frac > 15 or k >= end or buf[k] != 34:
        return -1
    return k + 1


@njit(cache=True, nogil=True, inline="always")
def _decimal_value(buf: Any, i: int, j: int, pow10: Any) -> float:
    mant = 0
    n_frac = 0
    frac = False
    for k in range(i + 1, j - 1):
        c = buf[k]
        if c == 46:
            frac = True
            continue
        mant = mant * 10 + (c - 48)
        if frac:
            n_frac += 1
    return mant / pow10[n_frac]


@njit(cache=True, nogil=True, inline="always")
def _number_end(buf: Any, i: int, end: int) -> int:
    """Index of the closing quote of a string of digits and dots starting at ``i``
    (after its opening quote); -1 for any other byte before it."""
    while i < end:
        c = buf[i]
        if c == 34:
            return i
        if (c < 48 or c > 57) and c != 46:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True, inline="always")
def _levels_end(buf: Any, i: int, end: int) -> int:
    """End of a ``[["p","q"],...]`` levels array at ``i`` (strings of digits and dots
    only); -1 if the array has any other shape."""
    if i >= end or buf[i] != 91:
        return -1
    i += 1
    if i < end and buf[i] == 93:
        return i + 1
    while True:
        if i + 1 >= end or buf[i] != 91 or buf[i + 1] != 34:
            return -1
        e = _number_end(buf, i + 2, end)
        if e < 0 or e + 2 >= end or buf[e + 1] != 44 or buf[e + 2] != 34:
            return -1
        e = _number_end(buf, e + 3, end)
        if e < 0 or e + 2 >= end or buf[e + 1] != 93:
            return -1
        i = e + 2
        c = buf[i]
        if c == 93:
            return i + 1
        if c != 44:
            return -1
        i += 1


@njit(cache=True, nogil=True)
def _parse_line(
    buf: Any,
    i: int,
    size: int,
    line: int,
    kind: Any,
    recv: Any,
    sym: Any,
    ev: Any,
    ident: Any,
    flag: Any,
    f0: Any,
    f1: Any,
    f2: Any,
    f3: Any,
    names: Any,
    name_len: Any,
    n_names_box: Any,
    pow10: Any,
) -> int:
    """Parse the line starting at ``i`` if it is a common one: its end (the newline
    or the end of the buffer), else -1."""
    # <stamp> {"stream":"...","data":{"e":"
    j = i
    v = 0
    while j < size and 48 <= buf[j] <= 57:
        if j - i == 18 and (v > 922337203685477580 or (v == 922337203685477580 and buf[j] > 55)):
            return -1  # past int64: the general path
        v = v * 10 + (buf[j] - 48)
        j += 1
    if j == i or j - i > 19 or j + 11 >= size or buf[j] != 32:
        return -1
    if (
        buf[j + 1] != 123
        or buf[j + 2] != 34
        or buf[j + 3] != 115
        or buf[j + 4] != 116
        or buf[j + 5] != 114
        or buf[j + 6] != 101
        or buf[j + 7] != 97
        or buf[j + 8] != 109
        or buf[j + 9] != 34
        or buf[j + 10] != 58
        or buf[j + 11] != 34
    ):
        return -1
    stamp = v
    k = _string_end(buf, j + 12, size)
    # ","data":{"e":"   (15 bytes)
    if k < 0 or k + 15 >= size:
        return -1
    ok = True
    for m in range(15):
        if buf[k + m] != _HEAD[m]:
            ok = False
            break
    if not ok:
        return -1
    t0 = k + 15
    t1 = _string_end(buf, t0, size)
    if t1 < 0:
        return -1
    tlen = t1 - t0
    this = _GENERAL
    if tlen == 10 and buf[t0] == 98 and buf[t0 + 4] == 84 and buf[t0 + 9] == 114:
        tag = _TAG_QUOTE
        this = _QUOTE
    elif tlen == 5 and buf[t0] == 116 and buf[t0 + 1] == 114:
        tag = _TAG_TRADE
        this = _TRADE
    elif tlen == 11 and buf[t0] == 100 and buf[t0 + 5] == 85:
        tag = _TAG_DEPTH
        this = _DEPTH
    else:
        return -1
    for m in range(tlen):
        if buf[t0 + m] != tag[m]:
            ok = False
            break
    if not ok:
        return -1
    # The fields, each once: bit per key.
    seen = 0
    i = t1 + 1
    s_lo = s_hi = 0
    while ok:
        if i >= size:
            ok = False
            break
        c = buf[i]
        if c == 125:  # }
            i += 1
            break
        if c != 44 or i + 1 >= size or buf[i + 1] != 34:
            ok = False
            break
        ks = i + 2
        ke = _string_end(buf, ks, size)
        if ke < 0 or ke + 1 >= size or buf[ke + 1] != 58:
            ok = False
            break
        vs = ke + 2
        klen = ke - ks
        key = buf[ks] if klen >= 1 else 0
        bit = 0
        # Known keys of this kind: E T s u b B a A t p q m U pu.
        if klen == 2 and key == 112 and buf[ks + 1] == 117 and this == _DEPTH:
            bit = 1 << 13  # pu
        elif klen == 1:
            if key == 69:
                bit = 1  # E
            elif key == 84:
                bit = 2  # T
            elif key == 115:
                bit = 4  # s
            elif key == 117 and this != _TRADE:
                bit = 8  # u
            elif key == 98 and this != _TRADE:
                bit = 16  # b
            elif key == 66 and this == _QUOTE:
                bit = 32  # B
            elif key == 97 and this != _TRADE:
                bit = 64  # a
            elif key == 65 and this == _QUOTE:
                bit = 128  # A
            elif key == 116 and this == _TRADE:
                bit = 256  # t
            elif key == 112 and this == _TRADE:
                bit = 512  # p
            elif key == 113 and this == _TRADE:
                bit = 1024  # q
            elif key == 109 and this == _TRADE:
                bit = 2048  # m
            elif key == 85 and this == _DEPTH:
                bit = 4096  # U
        if (
            bit & seen
            or (klen == 1 and key == 101)
            or (klen == 2 and key == 112 and buf[ks + 1] == 115)
        ):
            ok = False  # a repeated key (or tag), a pair "ps": the general path decides
            break
        seen |= bit
        if bit == 4:  # s
            if vs >= size or buf[vs] != 34:
                ok = False
                break
            e = _string_end(buf, vs + 1, size)
            if e < 0:
                ok = False
                break
            s_lo, s_hi = vs + 1, e
            i = e + 1
        elif bit & _INT_KEYS:  # integers
            e = _uint_end(buf, vs, size)
            if e < 0:
                ok = False
                break
            val = _uint_value(buf, vs, e)
            if bit == 1:
                ev[line] = val
            elif bit == 8 or bit == 256:
                ident[line] = val
            i = e
        elif this == _DEPTH and (bit == 16 or bit == 64):
            e = _levels_end(buf, vs, size)
            if e < 0:
                ok = False
                break
            i = e
        elif bit & _DECIMAL_KEYS:  # decimal strings
            e = _decimal_end(buf, vs, size)
            if e < 0:
                ok = False
                break
            x = _decimal_value(buf, vs, e, pow10)
            if bit == 16 or bit == 512:
                f0[line] = x
            elif bit == 32 or bit == 1024:
                f1[line] = x
            elif bit == 64:
                f2[line] = x
            else:
                f3[line] = x
            i = e
        elif bit == 2048:  # m
            if (
                vs + 4 <= size
                and buf[vs] == 116
                and buf[vs + 1] == 114
                and buf[vs + 2] == 117
                and buf[vs + 3] == 101
            ):
                flag[line] = 1
                i = vs + 4
            elif (
                vs + 5 <= size
                and buf[vs] == 102
                and buf[vs + 1] == 97
                and buf[vs + 2] == 108
                and buf[vs + 3] == 115
                and buf[vs + 4] == 101
            ):
                flag[line] = 0
                i = vs + 5
            else:
                ok = False
                break
        else:  # a field the event does not have: a plain string or integer is ignored
            if vs < size and buf[vs] == 34:
                e = _string_end(buf, vs + 1, size)
                if e < 0:
                    ok = False
                    break
                i = e + 1
            else:
                e = _uint_end(buf, vs, size)
                if e < 0:
                    ok = False
                    break
                i = e
    if not ok or i >= size or buf[i] != 125:  # the envelope's closing brace
        return -1
    i += 1
    if i < size and buf[i] != 10:  # the line ends there
        return -1
    if this == _QUOTE:
        need = 1 | 2 | 4 | 8 | 16 | 32 | 64 | 128
    elif this == _TRADE:
        need = 1 | 2 | 4 | 256 | 512 | 1024 | 2048
    else:
        need = 1 | 2 | 4 | 8 | 16 | 64 | 4096 | 8192
    if seen != need:
        return -1
    # Intern the symbol.
    s_len = s_hi - s_lo
    if s_len > names.shape[1]:
        return -1
    n_names = n_names_box[0]
    found = -1
    for n in range(n_names):
        if name_len[n] != s_len:
            return -1
        same = True
        for m in range(s_len):
            if names[n, m] != buf[s_lo + m]:
                same = False
                break
        if same:
            found = n
            break
    if found < 0:
        if n_names == names.shape[0]:
            return -1
        found = n_names
        for m in range(s_len):
            names[found, m] = buf[s_lo + m]
        name_len[found] = s_len
        n_names_box[0] = n_names + 1
    sym[line] = found
    recv[line] = stamp
    kind[line] = this
    return i


@njit(cache=True, nogil=True)
def _parse_lines(
    buf: Any,
    lo: Any,
    hi: Any,
    kind: Any,
    recv: Any,
    sym: Any,
    ev: Any,
    ident: Any,
    flag: Any,
    f0: Any,
    f1: Any,
    f2: Any,
    f3: Any,
    names: Any,
    name_len: Any,
    n_names_box: Any,
    pow10: Any,
) -> int:
    """Split ``buf`` into lines (as ``bytes.split(b"\\n")``, less an empty last one)
    and parse the common ones (see the module docstring): the number of lines, or -1
    when there are more than the arrays hold.

    Per line: ``lo``/``hi`` its bytes, ``kind`` (_GENERAL for the general path),
    ``recv`` the stamp as written, ``sym`` the interned symbol, ``ev`` E, ``ident``
    ``u`` (quote, depth) or ``t`` (trade), ``flag`` the trade's ``m``, ``f0..f3``
    bid, bid qty, ask, ask qty (quote) or price, qty (trade). The symbols interned
    are ``names``/``name_len``, ``n_names_box[0]`` of them.
    """
    size = buf.shape[0]
    cap = lo.shape[0]
    pos = 0
    line = 0
    while pos < size:
        if line == cap:
            return -1
        kind[line] = _GENERAL
        end = _parse_line(
            buf, pos, size, line, kind, recv, sym, ev, ident, flag, f0, f1, f2, f3,
            names, name_len, n_names_box, pow10,
        )  # fmt: skip
        if end < 0:
            end = pos
            while end < size and buf[end] != 10:
                end += 1
            kind[line] = _GENERAL
        lo[line] = pos
        hi[line] = end
        pos = end + 1
        line += 1
    return line


@njit(cache=True, nogil=True)
def _check_rows(
    start: int,
    stop: int,
    kind: Any,
    recv: Any,
    sym: Any,
    ev: Any,
    ident: Any,
    f0: Any,
    f1: Any,
    f2: Any,
    f3: Any,
    allowed: Any,
    last_ids: Any,
    state: Any,
    limits: Any,
    out_ts: Any,
    counts: Any,
) -> int:
    """The checks of ``_read_file`` on lines ``start:stop`` while they are common.

    ``state`` is ``[ref, last]`` (updated), ``limits`` ``[scale, jump, skew,
    max_event_ms]``, ``last_ids`` per ``(stream, symbol)`` (0 quote, 1 trade, 2
    depth; -1: none), ``allowed`` per symbol. ``out_ts[i]`` is the replay time of a
    line passed on, -1 for a line skipped. Returns the first line not handled
    (``stop`` when all were).
    """
    scale, jump, skew, max_event_ms = limits[0], limits[1], limits[2], limits[3]
    ref, last = state[0], state[1]
    limit = 9223372036854775807 // scale
    i = start
    while i < stop:
        k = kind[i]
        if k == _GENERAL:
            break
        out_ts[i] = -1
        if k == _QUOTE:
            bid, bq, ask, aq = f0[i], f1[i], f2[i], f3[i]
            if not (0.0 < bid < np.inf and 0.0 < ask < np.inf):
                counts[_BAD_PRICE] += 1
                i += 1
                continue
            if not (0.0 < bq < np.inf and 0.0 < aq < np.inf):
                counts[_BAD_QTY] += 1
                i += 1
                continue
            if bid >= ask:
                counts[_CROSSED] += 1
                i += 1
                continue
            stream = 0
        elif k == _TRADE:
            if not 0.0 < f0[i] < np.inf:
                counts[_BAD_PRICE] += 1
                i += 1
                continue
            if not 0.0 < f1[i] < np.inf:
                counts[_BAD_QTY] += 1
                i += 1
                continue
            stream = 1
        else:
            stream = 2
        e = ev[i]
        if e > max_event_ms or recv[i] > limit:
            break  # the general path counts it
        s = sym[i]
        if allowed[s] == 0:
            counts[_OTHER] += 1
            i += 1
            continue
        if allowed[s] < 0:
            break
        ts = recv[i] * scale
        event_ns = e * 1_000_000
        off = ts - event_ns if event_ns else 0
        if not (-jump <= ts - ref <= jump and -skew <= off <= skew):
            break
        ident_i = ident[i]
        if ident_i <= last_ids[stream, s]:  # (ids parsed here are never negative)
            counts[_DUP] += 1
            i += 1
            continue
        last_ids[stream, s] = ident_i
        if ts < last:
            ts = last
            counts[_CLAMPED] += 1
        ref = last = ts
        counts[_EVENTS] += 1
        out_ts[i] = ts
        i += 1
    state[0], state[1] = ref, last
    return i


class _General:
    """The per-line body of ``_read_file`` over the columnar reader's state: for the
    lines the kernels leave (same order of checks, same counters)."""

    def __init__(
        self,
        path: Path,
        stats: CaptureStats,
        symbols: frozenset[str],
        clock: _Clock,
        dedupe: _Dedupe,
        scale: int,
    ) -> None:
        self.path = path
        self.stats = stats
        self.symbols = symbols
        self.clock = clock
        self.dedupe = dedupe
        self.scale = scale
        self.waiting: list[list[Any]] = []

    def line(self, line_no: int, line: bytes) -> list[tuple[int, MarketMessage]]:
        """The events passed on at this line (see ``_read_file``)."""
        stats, skipped, scale, clock = self.stats, self.stats.skipped, self.scale, self.clock
        start = line.find(b"{")
        decoded = _decode_line(line)
        if isinstance(decoded, str):
            skipped[decoded] += 1
            if decoded == "snapshot" and start > 0:
                _keep_snapshot(stats, line, start, scale, self.waiting)
            return []
        raw, msg, by_stream = decoded
        if by_stream:
            raise DataError(f"{self.path}:{line_no}: spot stream in a USD-M capture")
        recv = None if raw is None else _scaled(raw, scale)
        kind = type(msg)
        ids: dict[str, int] | None
        if kind is BookTicker:
            ok = (
                0.0 < msg.bid < msg.ask < _INF
                and 0.0 < msg.bid_qty < _INF
                and 0.0 < msg.ask_qty < _INF
            )
            ids, ident = self.dedupe.quotes, msg.update_id
        elif kind is Trade:
            ok = 0.0 < msg.price < _INF and 0.0 < msg.qty < _INF
            ids, ident = self.dedupe.trades, msg.trade_id
        else:
            ok = _bad_value(msg) is None
            ids, ident = None, 0
        if not ok:
            skipped[_bad_value(msg) or "bad_field"] += 1
            return []
        symbol = msg.symbol
        if self.waiting:
            for entry in self.waiting:
                entry[0] = symbol
            self.waiting.clear()
        if symbol not in self.symbols:
            skipped["other_symbol"] += 1
            return []
        event_ns = msg.event_time * _MS
        ts = recv if recv is not None else (event_ns or clock.last)
        off = ts - event_ns if event_ns else 0
        if clock.held is not None or not (
            -clock.jump <= ts - clock.ref <= clock.jump and -clock.skew <= off <= clock.skew
        ):
            return clock.push(line_no, recv, msg)
        if ids is not None:
            if 0 <= ident <= ids.get(symbol, -1):
                skipped["duplicate"] += 1
                return []
            ids[symbol] = ident
        elif self.dedupe.seen(msg):
            skipped["duplicate"] += 1
            return []
        if ts < clock.last:
            ts = clock.last
            stats.clamped += 1
        clock.ref = clock.last = ts
        stats.events += 1
        return [(ts, msg)]


_loaded = False


def _load_kernels() -> None:
    """Load (or compile) both kernels once per process, on tiny input of the types the
    reader passes: a cache numba cannot read is dropped and the kernel compiled
    (:func:`~engine.indicators._specialize.warm`)."""
    global _loaded
    if _loaded:
        return
    from ..indicators._specialize import warm

    buf = np.frombuffer(b"1 x\n", dtype=np.uint8)
    i8, i64, f64 = (np.zeros(2, t) for t in (np.int8, np.int64, np.float64))
    warm(
        _parse_lines,
        (
            buf, i64.copy(), i64.copy(), i8.copy(), i64.copy(), i64.copy(), i64.copy(),
            i64.copy(), i8.copy(), f64.copy(), f64.copy(), f64.copy(), f64.copy(),
            np.zeros((_MAX_SYMBOLS, _MAX_SYMBOL_LEN), np.uint8), np.zeros(_MAX_SYMBOLS, np.int64),
            np.zeros(1, np.int64), _POW10,
        ),
    )  # fmt: skip
    warm(
        _check_rows,
        (
            0, 0, i8, i64, i64, i64, i64, f64, f64, f64, f64, np.zeros(1, np.int64),
            np.zeros((3, 1), np.int64), np.zeros(2, np.int64), np.ones(4, np.int64),
            np.zeros(2, np.int64), np.zeros(7, np.int64),
        ),
    )  # fmt: skip
    _loaded = True


class _Parsed:
    """A capture file decompressed and its lines parsed (:func:`_parse_lines`)."""

    __slots__ = (
        "data", "error", "ev", "f0", "f1", "f2", "f3", "flag", "hi", "ident", "kind", "lo",
        "n", "names", "read", "recv", "sym",
    )  # fmt: skip

    def __init__(self, path: Path) -> None:
        _load_kernels()
        data, self.read, self.error = _inflate_all(path)
        self.data = data
        buf = np.frombuffer(data, dtype=np.uint8)
        cap = len(data) // 128 + 1024  # lines of a typical capture, else counted
        while True:
            self.lo = np.empty(cap, np.int64)
            self.hi = np.empty(cap, np.int64)
            self.kind = np.empty(cap, np.int8)
            self.recv = np.empty(cap, np.int64)
            self.sym = np.empty(cap, np.int64)
            self.ev = np.empty(cap, np.int64)
            self.ident = np.empty(cap, np.int64)
            self.flag = np.zeros(cap, np.int8)
            self.f0 = np.empty(cap, np.float64)
            self.f1 = np.empty(cap, np.float64)
            self.f2 = np.empty(cap, np.float64)
            self.f3 = np.empty(cap, np.float64)
            names = np.zeros((_MAX_SYMBOLS, _MAX_SYMBOL_LEN), np.uint8)
            name_len = np.zeros(_MAX_SYMBOLS, np.int64)
            box = np.zeros(1, np.int64)
            n = _parse_lines(
                buf, self.lo, self.hi, self.kind, self.recv, self.sym, self.ev, self.ident,
                self.flag, self.f0, self.f1, self.f2, self.f3, names, name_len, box, _POW10,
            )  # fmt: skip
            if n >= 0:
                break
            cap = data.count(b"\n") + 1
        if cap > 2 * n + 1024:  # give back most of a generous first guess
            for name in (
                "lo",
                "hi",
                "kind",
                "recv",
                "sym",
                "ev",
                "ident",
                "flag",
                "f0",
                "f1",
                "f2",
                "f3",
            ):
                setattr(self, name, getattr(self, name)[:n].copy())
        self.n = n
        self.names = tuple(bytes(names[k, : name_len[k]]).decode() for k in range(int(box[0])))

    def complete_lines(self) -> int:
        """Lines the reader reads: all, or, after a stream error, those before the
        cut (as ``open_capture``, which drops the incomplete last one)."""
        if self.error is None or not self.n or self.data.endswith(b"\n"):
            return self.n
        return self.n - 1

    def symbols_found(self, symbol_re: Any, pair_re: Any) -> tuple[set[bytes], bytes]:
        """What :func:`~._capture.scan_symbols` finds in the file: every match of
        ``symbol_re`` and the first of ``pair_re``. A parsed line holds one ``"s"`` and
        no ``"ps"`` field, so only the other lines are searched."""
        found = {
            name.encode() for name in self.names if symbol_re.fullmatch(f'"s":"{name}"'.encode())
        }
        pair = b""
        for i in np.flatnonzero(self.kind[: self.n] == _GENERAL).tolist():
            line = self.data[self.lo[i] : self.hi[i]]
            found.update(symbol_re.findall(line))
            if not pair:
                match = pair_re.search(line)
                pair = match[0] if match is not None else b""
        return found, pair


#: A file parsed by :func:`~._capture.scan_symbols`, kept for the read that follows
#: it (a replay scans the symbols, then reads the same file): one file, of at most
#: this many bytes decompressed.
_KEEP_BYTES = 256 << 20
#: The largest gzip file read whole (captures inflate about 8x: ~256 MiB of text).
_MAX_GZIP_BYTES = 32 << 20
_kept: dict[tuple[str, int, int, int], _Parsed] = {}


def _file_key(path: Path) -> tuple[str, int, int, int] | None:
    """The file as it is now: path, size, mtime and the CRC-32 of its bytes (a file
    rewritten between the scan and the read is parsed again)."""
    try:
        st = path.stat()
        crc = zlib.crc32(path.read_bytes())
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, crc)


def _take(path: Path) -> _Parsed | None:
    """The kept parse of ``path`` if it is still the file's (dropped either way)."""
    if not _kept:
        return None
    key = _file_key(path)
    parsed = _kept.pop(key, None) if key is not None else None
    _kept.clear()
    return parsed


def parse_file(path: Path, *, keep: bool = False) -> _Parsed:
    """Decompress and parse ``path`` (errors are in the result's ``error``); with
    ``keep``, the result is kept for the next :func:`read_capture_columns` of it."""
    _kept.clear()
    key = _file_key(path) if keep else None
    parsed = _Parsed(path)
    if key is not None and len(parsed.data) <= _KEEP_BYTES:
        _kept[key] = parsed
    return parsed


def forget() -> None:
    """Drop the file kept by a scan (its reader is the general one)."""
    _kept.clear()


def small_enough(path: Path) -> bool:
    """Whether ``path`` is read whole (decompressed in memory, with its line arrays):
    at most :data:`_MAX_GZIP_BYTES` gzipped or :data:`_KEEP_BYTES` plain. Larger files
    are streamed by the general reader (and scan), in constant memory."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
    except OSError:
        return True  # (the reader says what is wrong with it)
    return size <= (_MAX_GZIP_BYTES if gzipped else _KEEP_BYTES)


def fast_path_for(path: Path, book: bool) -> bool:
    """Whether :func:`read_capture_columns` reads ``path`` (else the general reader)."""
    from ._csv import is_csv_source  # _csv builds on _capture
    from ._feather import is_feather_source

    return (
        not book and not is_csv_source(path) and not is_feather_source(path) and small_enough(path)
    )


def read_capture_columns(
    path: Path,
    stats: CaptureStats,
    symbols: frozenset[str],
    limits: CaptureLimits,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]] | None:
    """One capture's events as columns, or None when the file is not for this reader
    (a spot capture, or one without receive stamps: read it with ``read_capture``).

    Returns:
        ``(columns, symbol, names)``: the tape's columns (:data:`~._tape.COLUMNS`) of
        every event passed on, in order, ``symbol`` an index into ``names`` per event.

    Raises:
        DataError: as :func:`~engine.feeds._capture.read_capture`.
    """
    profile = probe_capture(path)
    if profile.spot or not profile.unit:
        return None
    dedupe = _Dedupe()
    clock = _Clock(path, stats, limits, dedupe, profile.anchor)
    _check_unit(path, profile, clock.skew)
    stats.units[str(path)] = profile.unit
    scale = UNITS[profile.unit]
    parsed = _take(path) or parse_file(path)
    stats.read.n += parsed.read
    error = parsed.error
    if isinstance(error, FileNotFoundError):
        raise DataError(f"{path}: no such market data file") from None
    if isinstance(error, _TruncatedGzipError):
        stats.truncated.append(str(path))
        stats.skipped["truncated"] += 1  # the cut line, never complete
    n = parsed.complete_lines()
    data, names = parsed.data, list(parsed.names)
    lo, hi, kind, recv, sym = parsed.lo, parsed.hi, parsed.kind, parsed.recv, parsed.sym
    ev, ident, flag = parsed.ev, parsed.ident, parsed.flag
    f0, f1, f2, f3 = parsed.f0, parsed.f1, parsed.f2, parsed.f3
    n_names = len(names)
    index = {name: k for k, name in enumerate(names)}
    allowed = np.array([1 if s in symbols else 0 for s in names] or [0], np.int64)
    # The id tables live in arrays while the kernel runs and in the dicts while the
    # general path does: each hands over to the other.
    last_ids = np.full((3, max(n_names, 1)), -1, np.int64)
    tables = (dedupe.quotes, dedupe.trades, dedupe._depth)
    state = np.array([clock.ref, clock.last], np.int64)
    bounds = np.array([scale, clock.jump, clock.skew, _MAX_EVENT_MS], np.int64)
    out_ts = np.full(len(kind), -1, np.int64)
    counts = np.zeros(7, np.int64)
    general = _General(path, stats, symbols, clock, dedupe, scale)
    extra: list[tuple[int, int, MarketMessage]] = []  # (line, ts, msg) from the general path
    stats.lines += n
    i = 0
    while i < n:
        if clock.held is None and not general.waiting:
            state[0], state[1] = clock.ref, clock.last
            for t, table in enumerate(tables):
                for name, k in index.items():
                    last_ids[t, k] = table.get(name, -1)
            i = _check_rows(
                i, n, kind, recv, sym, ev, ident, f0, f1, f2, f3,
                allowed, last_ids, state, bounds, out_ts, counts,
            )  # fmt: skip
            clock.ref, clock.last = int(state[0]), int(state[1])
            for t, table in enumerate(tables):
                for name, k in index.items():
                    if last_ids[t, k] >= 0 or name in table:
                        table[name] = int(last_ids[t, k])
            if i >= n:
                break
        out_ts[i] = -1
        line = data[lo[i] : hi[i]]
        for ts, msg in general.line(i + 1, line):
            extra.append((i, ts, msg))
        i += 1
    clock.finish()
    for name, count in zip(_COUNTER_NAMES, counts[:5].tolist(), strict=True):
        if count:
            stats.skipped[name] += count
    stats.clamped += int(counts[_CLAMPED])
    stats.events += int(counts[_EVENTS])
    if error is not None and not isinstance(error, _TruncatedGzipError):
        raise DataError(f"{path}: cannot read market data ({error})") from error
    return _columns(out_ts, kind, sym, ev, flag, f0, f1, f2, f3, extra, names, index)


def _columns(
    out_ts: np.ndarray,
    kind: np.ndarray,
    sym: np.ndarray,
    ev: np.ndarray,
    flag: np.ndarray,
    f0: np.ndarray,
    f1: np.ndarray,
    f2: np.ndarray,
    f3: np.ndarray,
    extra: list[tuple[int, int, MarketMessage]],
    names: list[str],
    index: dict[str, int],
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """The passed lines as tape columns, in order (general-path events at their line)."""
    rows = np.flatnonzero(out_ts >= 0)
    k = kind[rows]
    quote = k == _QUOTE
    trade = k == _TRADE
    n_fast = len(rows)
    cols: dict[str, np.ndarray] = {
        "ts": out_ts[rows],
        "ts_exchange": ev[rows] * _MS,
        "kind": np.where(quote, QUOTE, np.where(trade, TRADE, DEPTH)).astype(np.int8),
        "buyer_maker": np.where(trade, flag[rows], 0).astype(np.int8),
        "bid": np.where(quote, f0[rows], NAN),
        "bid_qty": np.where(quote, f1[rows], NAN),
        "ask": np.where(quote, f2[rows], NAN),
        "ask_qty": np.where(quote, f3[rows], NAN),
        "price": np.where(trade, f0[rows], NAN),
        "qty": np.where(trade, f1[rows], NAN),
        "index_price": np.full(n_fast, NAN),
        "funding_rate": np.full(n_fast, NAN),
        "next_funding_ts": np.zeros(n_fast, np.int64),
    }
    symbol = sym[rows]
    if extra:
        # Each general-path event goes in at its line: after the fast rows before it.
        at = np.searchsorted(rows, np.array([line for line, _ts, _msg in extra]), side="left")
        more = [_row(ts, msg) for _line, ts, msg in extra]
        for name in cols:
            cols[name] = np.insert(cols[name], at, [r[name] for r in more])
        for _line, _ts, msg in extra:
            if msg.symbol not in index:
                index[msg.symbol] = len(names)
                names.append(msg.symbol)
        symbol = np.insert(symbol, at, [index[msg.symbol] for _line, _ts, msg in extra])
    return cols, symbol, names


def _row(ts: int, msg: MarketMessage) -> dict[str, Any]:
    """One event's row, as ``parse_tape`` appends it."""
    row: dict[str, Any] = {
        "ts": ts,
        "ts_exchange": msg.event_time * _MS,
        "kind": 0,
        "buyer_maker": 0,
        "bid": NAN,
        "bid_qty": NAN,
        "ask": NAN,
        "ask_qty": NAN,
        "price": NAN,
        "qty": NAN,
        "index_price": NAN,
        "funding_rate": NAN,
        "next_funding_ts": 0,
    }
    if isinstance(msg, BookTicker):
        row.update(kind=QUOTE, bid=msg.bid, bid_qty=msg.bid_qty, ask=msg.ask, ask_qty=msg.ask_qty)
    elif isinstance(msg, Trade | AggTrade):
        row.update(
            kind=TRADE, buyer_maker=1 if msg.buyer_maker else 0, price=msg.price, qty=msg.qty
        )
    elif isinstance(msg, DepthUpdate):
        row.update(kind=DEPTH)
    elif isinstance(msg, Kline):
        row.update(kind=KLINE, price=msg.bar.close, qty=msg.bar.volume)
    elif isinstance(msg, MarkPrice):
        row.update(
            kind=MARK,
            price=msg.mark,
            index_price=msg.index,
            funding_rate=msg.funding_rate,
            next_funding_ts=msg.next_funding_time * _MS,
        )
    return row


__all__ = ["fast_path_for", "forget", "parse_file", "read_capture_columns", "small_enough"]
