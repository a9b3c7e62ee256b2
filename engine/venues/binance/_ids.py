"""Deterministic, idempotent ``newClientOrderId`` values.

An id is ``t`` + a 13-character base-36 digest of the engine run id + ``-`` +
the base-36 sequence number, for example ``t0k3v9q1x2m7aa-2s``. The same run id
and sequence always give the same id, so a resent order carries the id of the
first attempt and Binance refuses the duplicate instead of opening a second
position; a new run id (a restart) gives ids that never collide with the last
run's (64-bit digest). Ids match Binance's ``^[.A-Z:/a-z0-9_-]{1,36}$`` and use
no character that needs percent-encoding, so the signed string is the sent one.
"""

from __future__ import annotations

import hashlib
import re

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_PREFIX = "t"
_TOKEN_LEN = 13  # 36**13 > 2**64
_MAX_SEQ = 36 ** (36 - len(_PREFIX) - _TOKEN_LEN - 1) - 1


# Every two-digit base-36 string, so a conversion takes one division per two digits:
# an id is made between a tick and its order's write.
_PAIRS = tuple(a + b for a in _DIGITS for b in _DIGITS)


def _base36_padded(n: int, pairs: int) -> str:
    """``n`` in base 36, zero-padded to at least ``2 * pairs`` digits."""
    out = []
    while n or pairs > 0:
        n, rem = divmod(n, 1296)
        out.append(_PAIRS[rem])
        pairs -= 1
    out.reverse()
    return "".join(out)


def _base36(n: int) -> str:
    return _base36_padded(n, 0).lstrip("0") or "0"


def run_token(run_id: str) -> str:
    """Return the 13-character base-36 digest that stands for ``run_id`` in ids."""
    digest = int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big")
    return _base36_padded(digest, 7)[-_TOKEN_LEN:]  # 14 digits; 2**64 < 36**13


class ClientOrderIds:
    """Makes and recognises the client order ids of one engine run.

    Args:
        run_id: the engine run's id (any string; it is digested).
    """

    __slots__ = ("_prefix", "run_id")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._prefix = f"{_PREFIX}{run_token(run_id)}-"

    def make(self, seq: int) -> str:
        """Return the id for order number ``seq`` of this run.

        Raises:
            ValueError: ``seq`` is negative or too large for 36 characters.
        """
        if not 0 <= seq <= _MAX_SEQ:
            raise ValueError(f"seq {seq} outside 0..{_MAX_SEQ}")
        return self._prefix + _base36(seq)

    def parse(self, client_order_id: str) -> int | None:
        """Return the sequence of one of this run's ids, or ``None`` for any other id."""
        if not client_order_id.startswith(self._prefix):
            return None
        tail = client_order_id[len(self._prefix) :]
        if not tail or any(c not in _DIGITS for c in tail):
            return None
        return int(tail, 36)

    def is_engine_id(self, client_order_id: str) -> bool:
        """True when ``client_order_id`` has the shape of any run's engine id."""
        head, sep, tail = client_order_id.partition("-")
        return (
            bool(sep)
            and len(head) == len(_PREFIX) + _TOKEN_LEN
            and head.startswith(_PREFIX)
            and bool(tail)
            and all(c in _DIGITS for c in head[1:] + tail)
        )


def venue_client_order_id(symbol: str, engine_order_id: str, ts_event: int, seq: int) -> str:
    """The ``newClientOrderId`` the live venue sends for one engine order.

    The engine numbers its orders per run (``tr-BTCUSDT-1`` again after a
    restart), which Binance would refuse as a duplicate or, worse, confuse with
    the last run's order. The venue id is an engine id of a "run" named after
    the order itself: symbol, engine id and decision time (wall-clock ns, never
    repeated across restarts), numbered by the order's ``seq``. It is therefore
    the same on every resend (idempotent), new after a restart, and recomputed
    from a journaled :class:`~engine.messages.SubmitOrder` alone, which is how
    reconciliation finds an order whose answer never came.

    Args:
        symbol: the order's symbol.
        engine_order_id: the engine's ``client_order_id``.
        ts_event: the order's ``ts_event`` (ns).
        seq: the order's ``seq``.
    """
    # ``ClientOrderIds(f"{symbol}|{engine_order_id}|{ts_event}").make(seq)``, without
    # the object: this runs between a tick and its order's write.
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq {seq} outside 0..{_MAX_SEQ}")
    return f"{_PREFIX}{run_token(f'{symbol}|{engine_order_id}|{ts_event}')}-{_base36(seq)}"
