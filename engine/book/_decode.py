"""Decoding depth levels and REST snapshots with msgspec.

A diff's levels reach the book as the raw JSON of ``DepthUpdate.bids``/``asks``
(``msgspec.Raw``), ``[["61800.20","2.909"], ...]``. They are decoded in one call
into ``(price_text, qty)`` pairs: the price stays a string (turned into exact
ticks by the book), the quantity is parsed to a float in C (``strict=False``
accepts a number in a string).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from ._errors import BookDecodeError

#: Levels as they may be given: raw JSON, or already-decoded ``(price, qty)`` pairs.
LevelsInput = msgspec.Raw | bytes | bytearray | memoryview | Sequence[Sequence[str | float]]

_RAW = (msgspec.Raw, bytes, bytearray, memoryview)
_LEVELS = msgspec.json.Decoder(list[tuple[str, float]], strict=False)


class DepthSnapshot(msgspec.Struct, frozen=True):
    """A ``GET /fapi/v1/depth`` reply; the levels stay raw JSON until a book loads them."""

    last_update_id: int = msgspec.field(name="lastUpdateId")
    bids: msgspec.Raw = msgspec.field(default=msgspec.Raw(b"[]"))
    asks: msgspec.Raw = msgspec.field(default=msgspec.Raw(b"[]"))
    event_time: int = msgspec.field(name="E", default=0)
    tx_time: int = msgspec.field(name="T", default=0)


_SNAPSHOT = msgspec.json.Decoder(DepthSnapshot)


def decode_levels(levels: LevelsInput) -> list[tuple[str, float]]:
    """Depth levels as ``(price_text, qty)`` pairs.

    Raises:
        BookDecodeError: not a JSON array of ``[price_string, qty]`` pairs, or a
            quantity that is NaN, infinite or negative.
    """
    if isinstance(levels, _RAW):
        try:
            out = _LEVELS.decode(levels)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise BookDecodeError(f"depth levels: {exc}") from exc
    else:
        out = []
        try:
            for price, qty in levels:
                if not isinstance(price, str):
                    raise TypeError(f"price {price!r} is not a string")
                out.append((price, float(qty)))
        except (TypeError, ValueError) as exc:
            raise BookDecodeError(f"depth levels: {exc}") from exc
    # A quantity of 0 removes a level; NaN, infinite or negative ones are no
    # quantity at all (two passes in C rather than a Python loop per level).
    if out:
        qtys = [qty for _price, qty in out]
        if not (min(qtys) >= 0.0 and math.isfinite(math.fsum(qtys))):
            bad = next(q for q in qtys if not 0.0 <= q < math.inf)
            raise BookDecodeError(f"depth levels: quantity {bad} is not a finite number >= 0")
    return out


def decode_snapshot(data: bytes | str) -> DepthSnapshot:
    """Decode the JSON body of a ``/fapi/v1/depth`` reply.

    Raises:
        BookDecodeError: not JSON, or no integer ``lastUpdateId``.
    """
    try:
        return _SNAPSHOT.decode(data)
    except msgspec.DecodeError as exc:
        raise BookDecodeError(f"depth snapshot: {exc}") from exc
