"""The local order book of one symbol, kept from a REST snapshot and diff depth.

Storage, per side: a dict ``ticks -> qty`` (the levels, O(1) update) and a list of
the same ticks kept sorted with :mod:`bisect`, with the best price at the end (bid
ticks ascending, ask ticks negated), so that most inserts and deletes, which
happen near the top of the book, move only the few list items above them. The
best level is ``keys[-1]`` (O(1)) and the top N a slice (O(N)).

On the full BTCUSDT capture this costs ~14 us per diff (median, decode
included; ``tools/bench/book.py``). Sorted numpy arrays merged per diff
(``searchsorted`` + ``insert``) measured ~80 us while designing: a diff touches
only ~34 levels (median) and numpy's per-call overhead dominates such batches.

Prices are exact integers on a :class:`PriceGrid` of one unit of the last
decimal place (Binance's ``pricePrecision``: ``"61800.20"`` is 6180020), called
ticks here. Not the exchange's ``tickSize``: a live book can hold levels off the
current tick grid (CTKUSDT's snapshot in the cryptofeed capture has 131 bids
such as ``0.50579`` under a ``0.00100`` tick, presumably resting since before a
tick-size change), and rejecting them would make the book impossible to keep.
A parsed price string is memoised in two generations of at most 2,048 entries
(about 0.5 MB however long the session; a day sees tens of thousands of
distinct strings), so most levels cost a dict lookup rather than a parse. The
generations are small enough to fill within the first minute of a busy symbol
(BTCUSDT sees ~3,000 distinct price strings a minute), so the memo's memory is
flat after warm-up; 8,192 took longer than the soak's warm-up to fill and was
measured as a steady climb. On an unbounded book of the full capture (5,000
levels a side) the smaller memo misses more often; a miss costs ~0.35 us (the
fast path of :meth:`PriceGrid.ticks`).

Memory of the levels: the diff stream reports changes at any depth, and a book
that keeps every level it ever heard of grows for as long as the session runs
(BTCUSDT: 2,000 levels a side from the 1,000-level snapshot to ~3,500 within 3
minutes, prices from 1,000 to 100,000 USDT). Binance's guide to local books notes
that levels beyond the snapshot's depth are not reliable (a level that never
changes after the snapshot is never sent), so ``max_levels`` (the live feed: its
``snapshot_limit``) drops the levels farthest from the touch once a side holds
a quarter more than that; the best ``max_levels`` a side are kept as the stream
tells them.
"""

from __future__ import annotations

import enum
import math
import operator
from bisect import bisect_left, insort
from collections.abc import Mapping
from itertools import chain
from types import MappingProxyType

import numpy as np

from ._decode import LevelsInput, decode_levels
from ._errors import BookError, BookPriceError
from ._prices import PriceGrid

_MEMO_MAX = 1 << 11


class Side(enum.IntEnum):
    """A side of the book."""

    BID = 0
    ASK = 1


class ApplyResult(enum.Enum):
    """What became of one diff."""

    APPLIED = "applied"
    """Applied; ``last_update_id`` is now the diff's ``u``."""
    STALE_DROPPED = "stale_dropped"
    """Older than the book (``u < lastUpdateId`` before the first applied diff,
    ``u <= last_update_id`` after it); nothing changed."""
    GAP = "gap"
    """Does not connect to the book (first diff: ``U > lastUpdateId``; later:
    ``pu != last_update_id``); nothing applied and the book is no longer synced."""
    NOT_SYNCED = "not_synced"
    """No snapshot since the book was made or since the last gap; nothing applied."""
    BUFFERED = "buffered"
    """Held by :class:`BookSync` until a snapshot arrives (never from the book)."""


class OrderBook:
    """Price levels of one symbol with the Binance USD-M update-id rules.

    Load a snapshot with :meth:`apply_snapshot`, then feed every diff in stream
    order to :meth:`apply_diff`; it applies a diff only when it connects to the
    book and reports stale diffs and gaps as :class:`ApplyResult` values. The
    buffering and re-snapshot protocol around it is :class:`BookSync`.

    Reads (:meth:`best_bid`, :meth:`levels`, ...) return the levels as they are,
    synced or not: check :attr:`synced` before trusting them.

    Args:
        symbol: the symbol, for messages.
        price_decimals: decimal places of prices (exchangeInfo ``pricePrecision``);
            a price with more (non-zero) places raises :class:`BookPriceError`.
            None takes the most places among the first snapshot's prices (Binance
            prints every price of a symbol with ``pricePrecision`` places).
        max_levels: levels kept a side (None: all). When a side holds more than
            ``max_levels + max_levels // 4`` after a snapshot or diff, the levels
            farthest from the touch are dropped down to ``max_levels``: what a
            bounded local book does (see the module docstring). Reads deeper than
            ``max_levels`` then see fewer levels than an unbounded book would.

    Raises:
        ValueError: ``max_levels`` is below 1.
    """

    __slots__ = (
        "_ask_keys",
        "_ask_view",
        "_asks",
        "_bid_keys",
        "_bid_view",
        "_bids",
        "_bridged",
        "_den",
        "_grid",
        "_last_update_id",
        "_max_levels",
        "_memo",
        "_memo_old",
        "_num",
        "_prune_above",
        "_symbol",
        "_synced",
        "_tx_time",
    )

    def __init__(
        self, symbol: str = "", *, price_decimals: int | None = None, max_levels: int | None = None
    ) -> None:
        if max_levels is not None and max_levels < 1:
            raise ValueError(f"max_levels must be >= 1, got {max_levels}")
        self._symbol = symbol
        self._max_levels = max_levels
        # Pruning waits for a quarter more than max_levels, so it runs once per
        # many diffs (a slice delete and a few hundred pops), not at every new level.
        self._prune_above = None if max_levels is None else max_levels + max(1, max_levels // 4)
        self._memo: dict[str, int] = {}  # price text -> ticks
        self._memo_old: dict[str, int] = {}  # the generation before (see _parse)
        self._grid: PriceGrid | None = None
        self._num = self._den = 1
        if price_decimals is not None:
            self._set_grid(PriceGrid(decimals=price_decimals, tick_units=1))
        self._bids: dict[int, float] = {}
        self._asks: dict[int, float] = {}
        self._bid_keys: list[int] = []  # ticks, ascending: best bid last
        self._ask_keys: list[int] = []  # -ticks, ascending: best ask last
        self._bid_view = MappingProxyType(self._bids)
        self._ask_view = MappingProxyType(self._asks)
        self._last_update_id = -1
        self._tx_time = 0
        self._synced = False
        self._bridged = False  # a diff has been applied since the snapshot

    # -- state ---------------------------------------------------------------

    @property
    def symbol(self) -> str:
        """The symbol."""
        return self._symbol

    @property
    def grid(self) -> PriceGrid | None:
        """The price grid (None until the first snapshot when it is inferred).

        ``grid.ticks("61800.20")`` and ``grid.price(ticks)`` convert.
        """
        return self._grid

    @property
    def max_levels(self) -> int | None:
        """Levels kept a side (None: all); see the class docstring."""
        return self._max_levels

    @property
    def last_update_id(self) -> int:
        """The snapshot's ``lastUpdateId``, then the ``u`` of the last applied diff."""
        return self._last_update_id

    @property
    def tx_time(self) -> int:
        """Exchange transaction time ``T`` (ms) of the snapshot or last applied diff."""
        return self._tx_time

    @property
    def synced(self) -> bool:
        """Whether the levels are the exchange's book as of :attr:`last_update_id`."""
        return self._synced

    def __repr__(self) -> str:
        return (
            f"OrderBook({self._symbol!r}, synced={self._synced}, "
            f"last_update_id={self._last_update_id}, "
            f"levels={len(self._bids)}/{len(self._asks)})"
        )

    # -- updates -------------------------------------------------------------

    def apply_snapshot(
        self, last_update_id: int, bids: LevelsInput, asks: LevelsInput, *, tx_time: int = 0
    ) -> None:
        """Replace every level with a REST snapshot's; the book is then synced.

        The book is unchanged when this raises. Zero-quantity levels are skipped.

        Raises:
            BookDecodeError: the levels are not ``[[price, qty], ...]``.
            BookPriceError: a price is malformed or has too many decimal places.
        """
        bid_levels = decode_levels(bids)
        ask_levels = decode_levels(asks)
        grid = self._grid
        if grid is None:
            grid = PriceGrid.infer(price for price, _qty in chain(bid_levels, ask_levels))
        to_ticks = grid.ticks
        new_bids = {to_ticks(price): qty for price, qty in bid_levels if qty}
        new_asks = {to_ticks(price): qty for price, qty in ask_levels if qty}
        if self._grid is None:
            self._set_grid(grid)
        # In place, so that the read-only views stay live.
        self._bids.clear()
        self._bids.update(new_bids)
        self._asks.clear()
        self._asks.update(new_asks)
        self._bid_keys[:] = sorted(new_bids)
        self._ask_keys[:] = sorted(-t for t in new_asks)
        self._prune()
        self._last_update_id = last_update_id
        self._tx_time = tx_time
        self._synced = True
        self._bridged = False

    def _set_grid(self, grid: PriceGrid) -> None:
        self._grid = grid
        self._num = grid.tick_units
        self._den = 10**grid.decimals
        self._memo = {}
        self._memo_old = {}

    def apply_diff(
        self,
        first_id: int,
        last_id: int,
        prev_last_id: int,
        bids: LevelsInput,
        asks: LevelsInput,
        *,
        tx_time: int = 0,
    ) -> ApplyResult:
        """Apply one ``depthUpdate`` (``U``, ``u``, ``pu``, ``b``, ``a``) if it connects.

        The first diff after a snapshot must span it (``U <= lastUpdateId <= u``);
        each later one must continue the chain (``pu`` equal to the last ``u``).
        Quantities are absolute; 0 removes a level (absent levels are ignored).

        Args:
            first_id: ``U``.
            last_id: ``u``.
            prev_last_id: ``pu``.
            bids: ``b``, raw JSON (``DepthUpdate.bids``) or decoded pairs.
            asks: ``a``, likewise.
            tx_time: ``T`` (ms), kept as :attr:`tx_time`.

        Returns:
            What became of the diff; only ``APPLIED`` changes the levels, and
            ``GAP`` leaves the book unsynced until the next snapshot.

        Raises:
            BookDecodeError: the levels are not ``[[price, qty], ...]`` (the book is
                unchanged; the next diff will report the gap).
            BookPriceError: a price is malformed or has too many decimal places
                (the book is left unsynced).
        """
        verdict = self._verdict(first_id, last_id, prev_last_id)
        if verdict is not None:
            return verdict
        self._apply_decoded(decode_levels(bids), decode_levels(asks))
        return self._move_to(last_id, tx_time)

    def _verdict(self, first_id: int, last_id: int, prev_last_id: int) -> ApplyResult | None:
        """:meth:`apply_diff`'s update-id checks: what becomes of the diff, None if it
        connects (``GAP`` has unsynced the book)."""
        if not self._synced:
            return ApplyResult.NOT_SYNCED
        last = self._last_update_id
        if self._bridged:
            if last_id <= last:
                return ApplyResult.STALE_DROPPED
            if prev_last_id != last:
                self._synced = False
                return ApplyResult.GAP
        else:
            if last_id < last:
                return ApplyResult.STALE_DROPPED
            if first_id > last:
                self._synced = False
                return ApplyResult.GAP
        return None

    def advance(
        self, first_id: int, last_id: int, prev_last_id: int, *, tx_time: int = 0
    ) -> ApplyResult:
        """:meth:`apply_diff` in two halves, this the first: the update-id checks, and
        for a diff that connects (``APPLIED``) the book's ids move on to it, but its
        levels wait for :meth:`apply_levels`.

        Until the levels are applied the book's levels are behind its
        :attr:`last_update_id`: only :class:`BookSync` uses the two halves, and it
        applies the levels before anything reads the book (see
        :meth:`BookSync.on_diff`).
        """
        verdict = self._verdict(first_id, last_id, prev_last_id)
        if verdict is not None:
            return verdict
        return self._move_to(last_id, tx_time)

    def _move_to(self, last_id: int, tx_time: int) -> ApplyResult:
        """The book's ids move on to a diff that connects."""
        self._last_update_id = last_id
        self._tx_time = tx_time
        self._bridged = True
        return ApplyResult.APPLIED

    def apply_levels(self, bids: LevelsInput, asks: LevelsInput) -> None:
        """The second half of :meth:`apply_diff`: the levels of a diff :meth:`advance`
        passed, in stream order.

        Raises:
            BookDecodeError, BookPriceError: the levels cannot be applied; the book
                is left unsynced either way (its ids are past this diff already).
        """
        try:
            bid_levels = decode_levels(bids)
            ask_levels = decode_levels(asks)
        except BookError:
            self._synced = False
            raise
        self._apply_decoded(bid_levels, ask_levels)

    def _apply_decoded(
        self, bid_levels: list[tuple[str, float]], ask_levels: list[tuple[str, float]]
    ) -> None:
        """Decoded levels into the book (left unsynced by a price off its grid)."""
        try:
            self._apply_side(bid_levels, self._bids, self._bid_keys, 1)
            self._apply_side(ask_levels, self._asks, self._ask_keys, -1)
        except BookPriceError:
            self._synced = False
            raise
        self._prune()

    def _apply_side(
        self, levels: list[tuple[str, float]], qty: dict[int, float], keys: list[int], sign: int
    ) -> None:
        # The hot loop: one memo lookup, one or two dict operations, and a bisect
        # only when a level appears or disappears.
        memo = self._memo
        for price, q in levels:
            t = memo.get(price)
            if t is None:
                t = self._parse(price)
            if q:
                if t not in qty:
                    insort(keys, sign * t)
                qty[t] = q
            elif qty.pop(t, None) is not None:
                del keys[bisect_left(keys, sign * t)]

    def _prune(self) -> None:
        limit = self._prune_above
        if limit is None:
            return
        keep = self._max_levels
        assert keep is not None
        for keys, qty, sign in ((self._bid_keys, self._bids, 1), (self._ask_keys, self._asks, -1)):
            if len(keys) > limit:
                # The farthest from the touch are at the front (best last).
                drop = len(keys) - keep
                for k in keys[:drop]:
                    del qty[sign * k]
                del keys[:drop]

    def _parse(self, price: str) -> int:
        # Two generations of at most _MEMO_MAX entries each: when the newer one is
        # full it becomes the older and the oldest is dropped, so the prices still
        # in use (near the top of the book) move up instead of being re-parsed.
        assert self._grid is not None  # set by the snapshot that synced the book
        t = self._memo_old.get(price)
        if t is None:
            t = self._grid.ticks(price)
        memo = self._memo
        if len(memo) >= _MEMO_MAX:
            self._memo_old = memo
            memo = self._memo = {}
        memo[price] = t
        return t

    # -- reads ---------------------------------------------------------------

    def best_bid(self) -> tuple[float, float] | None:
        """``(price, qty)`` of the best bid, or None when the side is empty."""
        keys = self._bid_keys
        if not keys:
            return None
        t = keys[-1]
        return t * self._num / self._den, self._bids[t]

    def best_ask(self) -> tuple[float, float] | None:
        """``(price, qty)`` of the best ask, or None when the side is empty."""
        keys = self._ask_keys
        if not keys:
            return None
        t = -keys[-1]
        return t * self._num / self._den, self._asks[t]

    def best_ticks(self) -> tuple[int | None, int | None]:
        """Best bid and best ask in ticks (None for an empty side)."""
        return (
            self._bid_keys[-1] if self._bid_keys else None,
            -self._ask_keys[-1] if self._ask_keys else None,
        )

    def _top(self, side: Side, n: int | None) -> tuple[list[int], dict[int, float]]:
        """The best ``n`` ticks of a side (all when None), best first, and its levels."""
        if side is Side.BID:
            keys = self._bid_keys
            return (keys[::-1] if n is None else keys[: -_count(n) - 1 : -1]), self._bids
        keys = self._ask_keys
        top = keys[::-1] if n is None else keys[: -_count(n) - 1 : -1]
        return [-k for k in top], self._asks

    def tick_levels(self, side: Side, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best ``n`` levels (all when None), best first, as exact ticks.

        Returns:
            ``(ticks, qty)``: int64 and float64 arrays of equal length (at most ``n``).
        """
        top, qty = self._top(side, n)
        return np.array(top, dtype=np.int64), np.array([qty[t] for t in top], dtype=np.float64)

    def levels(self, side: Side, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best ``n`` levels (all when None), best first.

        Returns:
            ``(price, qty)`` float64 arrays; each price equals ``float`` of its
            decimal string exactly.
        """
        top, qty = self._top(side, n)
        num, den = self._num, self._den
        # Built from Python lists: for the usual small n, two np.array calls cost
        # less than numpy arithmetic on int arrays (measured ~3 us against ~6 us
        # for n=10). int / int is correctly rounded, hence exact.
        return (
            np.array([t * num / den for t in top], dtype=np.float64),
            np.array([qty[t] for t in top], dtype=np.float64),
        )

    def imbalance(self, n: int) -> float:
        """``(bid_qty - ask_qty) / (bid_qty + ask_qty)`` over the best ``n`` levels a side.

        Returns:
            A value in [-1, 1]; NaN when both sides are empty.
        """
        k = _count(n)
        if not k:
            return math.nan
        bid = sum(map(self._bids.__getitem__, self._bid_keys[-k:]))
        ask = sum(map(self._asks.__getitem__, map(operator.neg, self._ask_keys[-k:])))
        total = bid + ask
        return (bid - ask) / total if total > 0 else math.nan

    def depth(self, side: Side) -> Mapping[int, float]:
        """A live read-only view of every level of a side, ``ticks -> qty`` (unordered)."""
        return self._bid_view if side is Side.BID else self._ask_view

    def level_count(self, side: Side) -> int:
        """How many levels a side holds."""
        return len(self._bids if side is Side.BID else self._asks)


def _count(n: int) -> int:
    if n < 0:
        raise ValueError(f"level count must be >= 0, got {n}")
    return n
