"""One ledger of positions: quantity, average entry, realized PnL and fees per symbol.

The engine keeps each symbol's position in one place. The venue the execution
actor drives (simulated or Binance) applies every fill it reports to the ledger,
and a live start applies what reconciliation found at the exchange (an adopted
position); the risk actor, the symbol actors and the run report read it. So a
position adopted after a restart is the risk actor's as much as the symbol
actor's: it can be closed.

Who writes and who reads, and when (the step protocol keeps it deterministic):
only the execution actor's venue writes, while execution handles step ``k``; it
starts step ``k`` only when risk has sent its order batch ``k``, which risk sends
only once every symbol actor has sent its intents for ``k``. So a symbol actor or
risk working on step ``k`` always reads the ledger as it stood after step ``k - 1``
(the fills of the reports they are reading), whatever order Trio runs tasks in.

``BinanceVenue.exchange_positions`` is not a copy: it is the exchange's own view
(``ACCOUNT_UPDATE``), kept apart on purpose to detect drift from this ledger.
"""

from __future__ import annotations

import math

import attrs

_QTY_DECIMALS = 12  # absorbs 0.1 + 0.2 when fills add up


@attrs.define
class SymbolAccount:
    """One symbol's position and PnL.

    Attributes:
        qty: signed position (positive long), rounded to 12 decimals.
        avg_price: average entry price of the open position (0 when flat).
        realized: realized PnL (before fees) since the start.
        fees: fees paid since the start.
        round_trips: positions closed (or flipped through flat).
        fills: fills applied.
        last_mid: the latest mid the position was marked to (NaN: never quoted).
        closed: PnL after fees of each trade closed and not yet taken.
    """

    qty: float = 0.0
    avg_price: float = 0.0
    realized: float = 0.0
    fees: float = 0.0
    round_trips: int = 0
    fills: int = 0
    last_mid: float = math.nan
    closed: list[float] = attrs.Factory(list)
    _opened_at: float = 0.0  # realized - fees when the position was opened

    def unrealized(self) -> float:
        """Mark-to-mid PnL of the open position (0 when flat or never quoted)."""
        if self.qty == 0.0 or math.isnan(self.last_mid):
            return 0.0
        return self.qty * (self.last_mid - self.avg_price)

    def apply_fill(self, signed_qty: float, price: float, fee: float) -> None:
        """Update position, average price, realized PnL and fees for one fill."""
        if self.qty == 0.0:
            self._opened_at = self.realized - self.fees
        self.fees += fee
        self.fills += 1
        old = self.qty
        new = round(old + signed_qty, _QTY_DECIMALS)
        if old == 0.0 or (old > 0.0) == (signed_qty > 0.0):
            self.avg_price = (self.avg_price * abs(old) + price * abs(signed_qty)) / abs(new)
        else:
            closed = min(abs(signed_qty), abs(old))
            self.realized += closed * (price - self.avg_price) * (1.0 if old > 0.0 else -1.0)
            if abs(new) < 1e-12:
                new = 0.0
                self.avg_price = 0.0
                self.round_trips += 1
                self.closed.append(self.realized - self.fees - self._opened_at)
            elif (new > 0.0) != (old > 0.0):
                # Flipped through flat: the rest opens a new position at this price.
                self.avg_price = price
                self.round_trips += 1
                self.closed.append(self.realized - self.fees - self._opened_at)
                self._opened_at = self.realized - self.fees
        self.qty = new

    def adopt(self, qty: float, avg_price: float) -> None:
        """Hold ``qty`` at ``avg_price`` from now on (a position found at the exchange).

        Not a fill: no fee, no fill count, realized PnL unchanged; the position's
        PnL is counted from ``avg_price``.
        """
        self.qty = round(qty, _QTY_DECIMALS)
        self.avg_price = avg_price if self.qty != 0.0 else 0.0
        self._opened_at = self.realized - self.fees


class PositionLedger:
    """Every symbol's :class:`SymbolAccount`, fed by fills and adoptions.

    Args:
        symbols: symbols to open flat accounts for now (others open on first use).
    """

    def __init__(self, symbols: tuple[str, ...] | list[str] = ()) -> None:
        self.accounts: dict[str, SymbolAccount] = {s: SymbolAccount() for s in symbols}
        self.adopted: dict[str, tuple[float, float]] = {}
        """Per symbol ``(qty, avg_price)`` as adopted at the start (for the report)."""

    def account(self, symbol: str) -> SymbolAccount:
        """The symbol's account (created flat on first use)."""
        acct = self.accounts.get(symbol)
        if acct is None:
            acct = self.accounts[symbol] = SymbolAccount()
        return acct

    def qty(self, symbol: str) -> float:
        """The symbol's signed position (0 for a symbol never traded)."""
        acct = self.accounts.get(symbol)
        return acct.qty if acct is not None else 0.0

    def avg_price(self, symbol: str) -> float:
        """The symbol's average entry price (0 when flat)."""
        acct = self.accounts.get(symbol)
        return acct.avg_price if acct is not None else 0.0

    def apply_fill(self, symbol: str, signed_qty: float, price: float, fee: float) -> None:
        """Apply one fill (``signed_qty`` positive for a buy)."""
        self.account(symbol).apply_fill(signed_qty, price, fee)

    def adopt(self, symbol: str, qty: float, avg_price: float) -> None:
        """Start the symbol from a position found at the exchange (live start)."""
        self.account(symbol).adopt(qty, avg_price)
        self.adopted[symbol] = (self.qty(symbol), self.avg_price(symbol))

    def mark(self, symbol: str, mid: float) -> None:
        """Mark the symbol's position to ``mid``."""
        self.account(symbol).last_mid = mid

    def equity(self) -> float:
        """Realized PnL - fees + unrealized PnL over every symbol."""
        return sum(a.realized - a.fees + a.unrealized() for a in self.accounts.values())

    def take_closed_trades(self) -> list[float]:
        """PnL after fees of the trades closed since the last call, in symbol order."""
        out: list[float] = []
        for symbol in sorted(self.accounts):
            acct = self.accounts[symbol]
            out.extend(acct.closed)
            acct.closed.clear()
        return out
