"""What the execution core needs from a venue, and the optional parts.

:class:`Venue` is the synchronous interface both venues implement: the simulated
matcher (:class:`~engine.venues.sim.SimVenue`, replay and paper) and Binance
(:class:`~engine.venues.binance.BinanceVenue`, live: its requests run in its own
tasks and their answers come back through :meth:`Venue.on_market`).
:class:`ConnectedVenue` adds the task a venue must run (connect, reconcile) before
anything trades; :class:`FaultDrills` the injected faults of replay drills.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import trio

from ..ledger import PositionLedger
from ..messages import CancelOrder, OpsEvent, OrderEvent, ReplaceOrder, SubmitOrder, Ticks


@runtime_checkable
class Venue(Protocol):
    """Orders in, order events out; fills go to the engine's ledger."""

    ledger: PositionLedger
    equity: float
    max_drawdown: float

    @property
    def seq(self) -> Iterator[int]:
        """The event sequence the execution core numbers its own events from too."""
        ...

    @property
    def pending_orders(self) -> int:
        """Orders sent and not yet in a final state."""
        ...

    def submit(self, order: SubmitOrder) -> list[OrderEvent]:
        """Send an order; its first events (accepted, or rejected)."""
        ...

    def on_market(self, ticks: dict[str, Ticks]) -> list[OrderEvent]:
        """A step's market data (simulated fills) or none (live answers so far)."""
        ...

    def cancel_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """Cancel every open order."""
        ...

    def expire_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """The run ends: end what is still open."""
        ...

    def take_closed_trades(self) -> list[float]:
        """PnL after fees of the trades closed since the last call."""
        ...

    def take_ops(self) -> list[OpsEvent]:
        """Operational events since the last call (funding, bans, drift)."""
        ...

    def on_resume(self) -> None:
        """An operator resumed trading: re-arm the venue's own checks."""
        ...


@runtime_checkable
class ManagesOrders(Protocol):
    """A venue that cancels and amends open orders (resting LIMIT and stop orders).

    Both venues are: the simulated one, and the Binance venue (``DELETE`` / ``PUT
    /fapi/v1/order``, ``DELETE /fapi/v1/algoOrder`` for conditional orders), whose
    answers come later from :meth:`Venue.on_market`.
    """

    def cancel(self, command: CancelOrder) -> list[OrderEvent]:
        """Cancel an open order: ``[OrderCanceled]``, or ``[]`` when no longer open."""
        ...

    def replace(self, command: ReplaceOrder) -> list[OrderEvent]:
        """Amend an open LIMIT order's price and quantity (back of the queue)."""
        ...


@runtime_checkable
class ConnectedVenue(Venue, Protocol):
    """A venue with a task of its own, started (connected, reconciled) before trading."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and reconcile, report started, then serve until cancelled."""
        ...


@runtime_checkable
class FaultDrills(Protocol):
    """Faults a drill can inject into a venue (the simulated one)."""

    def ban(self, until_ts: int) -> None:
        """Refuse every order sent before ``until_ts`` (an HTTP 418 ban)."""
        ...

    def reject_next(self, count: int) -> None:
        """Reject the next ``count`` orders (margin insufficient)."""
        ...
