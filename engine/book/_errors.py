"""Errors raised by the order book.

Tree::

    EngineError
    └── BookError                 root of every error raised by :mod:`engine.book`
        ├── BookDecodeError       depth levels or a snapshot are not the JSON expected
        ├── BookPriceError        a price is not an exact decimal on the book's price grid
        └── BookTransitionError   the sync machine has no edge for an event in its state

A gap in the update-id chain or a stale diff is not an error: they are expected
on a live stream and come back as :class:`~engine.book.ApplyResult` values.
"""

from __future__ import annotations

from .._errors import EngineError


class BookError(EngineError):
    """Root of every error raised by :mod:`engine.book`."""


class BookDecodeError(BookError):
    """Depth levels or a REST snapshot could not be decoded."""


class BookPriceError(BookError):
    """A price string is malformed, finer than the grid, or off the tick grid."""


class BookTransitionError(BookError):
    """The sync machine got an event for which its current state has no edge.

    Attributes:
        symbol: the book's symbol.
        state: the state the machine was in (unchanged).
        event: what arrived (an ``ApplyResult`` name or an event type's name).
    """

    def __init__(self, symbol: str, state: object, event: object) -> None:
        self.symbol = symbol
        self.state = state
        self.event = getattr(event, "name", None) or getattr(event, "__name__", repr(event))
        name = getattr(state, "name", state)
        super().__init__(f"BookSync({symbol}): no transition from {name} on {self.event}")
