"""Re-timing a capture to the wall clock: every recorded time moved by one constant.

A capture from 2024 served as recorded carries 2024 event times, and a client
that signs requests with its own clock (every third-party client) is refused
with -1021 by an exchange whose clock says 2024. The loopback exchange therefore
shifts every time in the recorded bytes by ``offset_ms`` (the wall clock at the
start of playback minus the first recorded ``E``), so ``E``, ``T`` and the
server time agree with now. Only the digits of the time fields change: field
order, spacing, prices and ids stay byte for byte as recorded.

Time fields: ``E`` and ``T`` at any depth (event, transaction, next funding,
kline close, liquidation trade time) and, in kline events only, ``t`` (the open
time; elsewhere ``t`` is a trade id). ``E`` sent as a string (``listenKeyExpired``)
is not market data and never replayed.
"""

from __future__ import annotations

import re

_TIME_FIELDS = re.compile(rb'"([ET])":(\d+)')
_KLINE_TIME_FIELDS = re.compile(rb'"([ETt])":(\d+)')


def retime(data: bytes, offset_ms: int, *, kline: bool = False) -> bytes:
    """``data`` with every time field moved by ``offset_ms``.

    Args:
        data: one recorded event (or combined-stream envelope) as JSON bytes.
        offset_ms: the shift; 0 returns ``data`` itself.
        kline: the event is a kline (its ``t`` is a time, not a trade id).

    Returns:
        The re-timed bytes.
    """
    if not offset_ms:
        return data
    pattern = _KLINE_TIME_FIELDS if kline else _TIME_FIELDS

    def shift(match: re.Match[bytes]) -> bytes:
        moved = int(match.group(2)) + offset_ms
        return b'"' + match.group(1) + b'":' + str(moved).encode()

    return pattern.sub(shift, data)


def is_kline_stream(stream: str) -> bool:
    """Whether a stream name carries kline events (``btcusdt@kline_1m``...)."""
    return "@kline_" in stream or "@continuousKline_" in stream
