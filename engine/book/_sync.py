"""The Binance USD-M local order book protocol for one symbol, as a state machine.

From "How to manage a local order book correctly": buffer the diff stream, get a
``/fapi/v1/depth`` snapshot, drop diffs with ``u < lastUpdateId``, apply first
the diff with ``U <= lastUpdateId <= u``, then each diff whose ``pu`` is the
previous ``u``; on any other diff, start again from the snapshot.

:data:`TRANSITIONS` is the whole machine, keyed by ``(state, what happened)``:
what happened is the snapshot's type or the :class:`ApplyResult` of a diff
(decided by the book's named checks). Anything else raises
:class:`BookTransitionError` naming the state and the event, e.g. a snapshot
that nobody asked for::

    AWAITING_SNAPSHOT --DepthSnapshot--> AWAITING_BRIDGE   (then the buffer is replayed)
    AWAITING_SNAPSHOT --BUFFERED-------> AWAITING_SNAPSHOT
    AWAITING_BRIDGE   --STALE_DROPPED--> AWAITING_BRIDGE
    AWAITING_BRIDGE   --APPLIED--------> SYNCED
    AWAITING_BRIDGE   --GAP------------> AWAITING_SNAPSHOT (the snapshot is older than the stream)
    SYNCED            --APPLIED--------> SYNCED
    SYNCED            --STALE_DROPPED--> SYNCED
    SYNCED            --GAP------------> AWAITING_SNAPSHOT
    AWAITING_BRIDGE, SYNCED --BookPriceError--> AWAITING_SNAPSHOT

The machine does no I/O: the caller fetches a snapshot whenever
:attr:`BookSync.needs_snapshot` turns true and hands it to
:meth:`BookSync.on_snapshot`.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

import attrs

from ._book import ApplyResult, OrderBook
from ._decode import DepthSnapshot, LevelsInput
from ._errors import BookError, BookPriceError, BookTransitionError


class SyncState(enum.Enum):
    """Where :class:`BookSync` is in the protocol."""

    AWAITING_SNAPSHOT = "awaiting_snapshot"
    """Diffs are buffered; the caller must fetch a snapshot."""
    AWAITING_BRIDGE = "awaiting_bridge"
    """A snapshot is loaded; waiting for the diff with ``U <= lastUpdateId <= u``."""
    SYNCED = "synced"
    """Following the stream: every diff continues the ``pu`` chain."""


Event = ApplyResult | type[DepthSnapshot] | type[BookPriceError]

#: ``(state, event) -> next state``. The event is the ``DepthSnapshot`` type, a
#: diff's :class:`ApplyResult`, or ``BookPriceError`` (a diff the book could not
#: apply, leaving it part-applied).
TRANSITIONS: Mapping[tuple[SyncState, Event], SyncState] = MappingProxyType(
    {
        (SyncState.AWAITING_SNAPSHOT, DepthSnapshot): SyncState.AWAITING_BRIDGE,
        (SyncState.AWAITING_SNAPSHOT, ApplyResult.BUFFERED): SyncState.AWAITING_SNAPSHOT,
        (SyncState.AWAITING_BRIDGE, ApplyResult.STALE_DROPPED): SyncState.AWAITING_BRIDGE,
        (SyncState.AWAITING_BRIDGE, ApplyResult.APPLIED): SyncState.SYNCED,
        (SyncState.AWAITING_BRIDGE, ApplyResult.GAP): SyncState.AWAITING_SNAPSHOT,
        (SyncState.SYNCED, ApplyResult.APPLIED): SyncState.SYNCED,
        (SyncState.SYNCED, ApplyResult.STALE_DROPPED): SyncState.SYNCED,
        (SyncState.SYNCED, ApplyResult.GAP): SyncState.AWAITING_SNAPSHOT,
        (SyncState.AWAITING_BRIDGE, BookPriceError): SyncState.AWAITING_SNAPSHOT,
        (SyncState.SYNCED, BookPriceError): SyncState.AWAITING_SNAPSHOT,
    }
)


class DepthDiff(Protocol):
    """A ``depthUpdate``: what :class:`BookSync` reads (``DepthUpdate`` has it)."""

    @property
    def first_id(self) -> int: ...  # U
    @property
    def last_id(self) -> int: ...  # u
    @property
    def prev_last_id(self) -> int: ...  # pu
    @property
    def bids(self) -> LevelsInput: ...
    @property
    def asks(self) -> LevelsInput: ...
    @property
    def tx_time(self) -> int: ...  # T, ms


@attrs.define
class SyncStats:
    """Counters of one :class:`BookSync`.

    Attributes:
        results: diffs by outcome (a buffered diff replayed after a snapshot is
            counted again under its new outcome).
        snapshots: snapshots loaded.
        buffer_overflows: diffs pushed out of the full buffer (oldest first).
        buffer_restarts: times the buffer was emptied because a buffered diff did
            not continue the previous one's ``pu`` chain.
    """

    results: Counter[ApplyResult] = attrs.Factory(Counter)
    snapshots: int = 0
    buffer_overflows: int = 0
    buffer_restarts: int = 0

    @property
    def gaps(self) -> int:
        """Diffs that did not connect (each one started a resync)."""
        return self.results[ApplyResult.GAP]


class BookSync:
    """Keeps an :class:`OrderBook` in sync with a diff-depth stream and snapshots.

    Feed every diff of the symbol, in stream order, to :meth:`on_diff`. While
    :attr:`needs_snapshot` is true (at the start and after every gap) diffs are
    buffered; fetch ``/fapi/v1/depth`` and give the reply to :meth:`on_snapshot`,
    which loads it and replays the buffer. A diff is never applied across a gap.

    Args:
        book: the book to keep (normally fresh).
        max_buffer: diffs held while waiting for a snapshot; the oldest are dropped
            beyond it (a snapshot older than what is left then just triggers
            another snapshot).
    """

    __slots__ = ("_book", "_buffer", "_state", "_unapplied", "stats")

    def __init__(self, book: OrderBook, *, max_buffer: int = 1000) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer}")
        self._book = book
        self._buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self._state = SyncState.AWAITING_SNAPSHOT
        self._unapplied: list[DepthDiff] = []  # passed diffs whose levels wait (defer=True)
        self.stats = SyncStats()

    @property
    def book(self) -> OrderBook:
        """The book kept in sync (the levels of deferred diffs applied first)."""
        if self._unapplied:
            self.apply_deferred()
        return self._book

    @property
    def deferred(self) -> int:
        """Diffs passed with ``defer=True`` whose levels are not applied yet."""
        return len(self._unapplied)

    @property
    def state(self) -> SyncState:
        """The current state."""
        return self._state

    @property
    def needs_snapshot(self) -> bool:
        """Whether the caller must fetch a snapshot and pass it to :meth:`on_snapshot`."""
        return self._state is SyncState.AWAITING_SNAPSHOT

    @property
    def buffered(self) -> int:
        """How many diffs wait for a snapshot."""
        return len(self._buffer)

    def on_diff(self, diff: DepthDiff, *, defer: bool = False) -> ApplyResult:
        """Take the next diff of the stream.

        ``defer=True``: the update-id checks run now (the result, :attr:`state`,
        :attr:`needs_snapshot` and the counters are what they would be), but the
        levels of a diff that connects wait until :meth:`apply_deferred`, which
        applies them in stream order. :attr:`book`, :meth:`on_snapshot` and an
        ``on_diff`` without ``defer`` apply them first, so nothing sees the book
        behind. The live feed defers a read's diffs until after the read's step
        when that step carries no book (the levels are off the way to an order).

        Returns:
            ``BUFFERED`` while awaiting a snapshot; otherwise the book's verdict
            (``APPLIED``, ``STALE_DROPPED`` or ``GAP``). After ``GAP`` the diff is
            kept as the first of the new buffer and :attr:`needs_snapshot` is true.

        Raises:
            BookTransitionError: the book was made unsynced behind this object's back.
            BookDecodeError: from the book, which is unchanged (the next diff
                reports the gap).
            BookPriceError: from the book, which is left unsynced; the buffer is
                emptied and a snapshot is needed. BookDecodeError: levels that are not
                ``[[price, qty], ...]`` (the book is unchanged).
        """
        if self._unapplied and not defer:
            self.apply_deferred()
        state = self._state
        if state is SyncState.AWAITING_SNAPSHOT:
            result = self._buffer_diff(diff)
        elif defer:
            result = self._book.advance(
                diff.first_id, diff.last_id, diff.prev_last_id, tx_time=diff.tx_time
            )
            if result is ApplyResult.APPLIED:
                self._unapplied.append(diff)
        else:
            try:
                result = self._book.apply_diff(
                    diff.first_id,
                    diff.last_id,
                    diff.prev_last_id,
                    diff.bids,
                    diff.asks,
                    tx_time=diff.tx_time,
                )
            except BookPriceError:
                # The book was left part-applied and unsynced: only a snapshot helps.
                self._state = self._next(state, BookPriceError)
                self._buffer.clear()
                raise
        self._state = self._next(state, result)
        if result is ApplyResult.GAP:
            self._buffer.append(diff)
        self.stats.results[result] += 1
        return result

    def on_snapshot(self, snapshot: DepthSnapshot) -> list[tuple[DepthDiff, ApplyResult]]:
        """Load a snapshot, then replay the buffered diffs through :meth:`on_diff`.

        Returns:
            Each buffered diff with what became of it, in order (``BUFFERED``
            again for the ones after a gap, which wait for the next snapshot).

        Raises:
            BookTransitionError: no snapshot was needed (the state is unchanged).
            BookDecodeError, BookPriceError: the snapshot is bad (the book and the
                buffer are unchanged; still awaiting a snapshot), or so are the
                levels of a deferred diff (see :meth:`apply_deferred`).
        """
        target = self._next(self._state, DepthSnapshot)
        if self._unapplied:
            self.apply_deferred()  # in order: the snapshot replaces what they leave
        self._book.apply_snapshot(
            snapshot.last_update_id, snapshot.bids, snapshot.asks, tx_time=snapshot.tx_time
        )
        self._state = target
        self.stats.snapshots += 1
        pending = list(self._buffer)
        self._buffer.clear()
        return [(diff, self.on_diff(diff)) for diff in pending]

    def apply_deferred(self) -> None:
        """Apply the levels of the diffs ``on_diff(defer=True)`` passed, in order.

        Raises:
            BookDecodeError, BookPriceError: a diff's levels cannot be applied (what
                ``on_diff`` raises for it without ``defer``); the book is left
                unsynced, the rest of the deferred diffs are dropped and a snapshot
                is needed (the buffer of a gap that came after them is kept).
        """
        unapplied = self._unapplied
        if not unapplied:
            return
        self._unapplied = []
        book = self._book
        try:
            for diff in unapplied:
                book.apply_levels(diff.bids, diff.asks)
        except BookError:
            # The book's ids are past this diff: only a snapshot helps (fail closed).
            if self._state is not SyncState.AWAITING_SNAPSHOT:
                self._state = self._next(self._state, BookPriceError)
            raise

    def _buffer_diff(self, diff: DepthDiff) -> ApplyResult:
        buffer = self._buffer
        if buffer and diff.prev_last_id != buffer[-1].last_id:
            # What came before a break can never be bridged to what follows it.
            buffer.clear()
            self.stats.buffer_restarts += 1
        elif len(buffer) == buffer.maxlen:
            self.stats.buffer_overflows += 1
        buffer.append(diff)
        return ApplyResult.BUFFERED

    def _next(self, state: SyncState, event: Event) -> SyncState:
        try:
            return TRANSITIONS[(state, event)]
        except KeyError:
            raise BookTransitionError(self._book.symbol, state, event) from None
