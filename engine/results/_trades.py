"""Round trips rebuilt from the journal: one :class:`Trade` per position from flat to flat.

The journal keeps every fill (``OrderFilled``), every position move
(``PositionChanged``, whose trigger into EXITING is the exit reason) and every
funding payment (``FundingApplied``). :class:`RoundTrips` is the synchronous core:
it takes those records in journal order and returns trades, with no file and no
event loop; :func:`read_trades` feeds it a journal file.

A trade opens when a symbol's position leaves zero and closes when it is back at
zero. Fills in the position's direction add to the entry (partial fills, scaling
in: the entry price is the quantity-weighted average), fills against it to the
exit. A fill that crosses zero (a flip) is split: the part that closes the
position ends this trade, the rest opens the next one, and its fee is shared in
proportion to the quantities. Entry and exit orders carry different correlation
ids, so trades are matched by position, not by correlation. A live start's
``PositionReconciled`` (a position adopted from the exchange) opens a trade at the
reconciled average price, and a ``FillRecovered`` counts as a fill.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson

from .._errors import JournalError

# The kinds a round trip needs; the journal's other records are skipped in SQL.
KINDS = ("OrderFilled", "FillRecovered", "PositionReconciled", "PositionChanged", "FundingApplied")
ADOPTED = "reconciled"  # the correlation id of a position a live start adopted
OPEN_AT_END = "open at end"
NO_REASON = "none recorded"  # closed without a move into EXITING (a flip, an adoption)
_EPS = 1e-9  # relative: a remaining quantity this small is zero (float sums of fills)


@attrs.frozen(kw_only=True)
class Trade:
    """One round trip of a symbol's position (flat -> position -> flat).

    Prices are quantity-weighted averages of the fills; ``fees`` are the entry and
    exit fees (a flip's fee shared by quantity), ``funding`` what the account
    received while the position was held (negative: paid). ``gross_pnl`` is the
    price move times the quantity, ``net_pnl = gross_pnl - fees + funding`` and
    ``ret`` is ``net_pnl`` over the entry notional. A position still open when the
    journal ends is a trade with ``exit_reason`` ``"open at end"``, no exit and no
    PnL (it is left out of the statistics).
    """

    symbol: str
    side: str  # LONG or SHORT
    qty: float
    entry_ts: int
    entry_price: float
    exit_ts: int | None
    exit_price: float | None
    hold_s: float | None
    exit_reason: str
    fees: float
    funding: float
    gross_pnl: float
    net_pnl: float
    ret: float
    entry_fills: int
    exit_fills: int
    correlation_id: str  # the first entry fill's

    @property
    def closed(self) -> bool:
        """Whether the position came back to flat within the journal."""
        return self.exit_ts is not None


@attrs.define
class _Open:
    sign: int
    correlation_id: str
    entry_ts: int
    qty: float = 0.0
    entry_notional: float = 0.0
    exit_qty: float = 0.0
    exit_notional: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    entry_fills: int = 0
    exit_fills: int = 0
    exit_ts: int = 0
    reason: str = NO_REASON

    def remaining(self) -> float:
        return self.qty - self.exit_qty


class RoundTrips:
    """Rebuilds round trips from journal records (kind and payload dict), in order.

    Also keeps the realized PnL as it happens (:attr:`pnl_events`: time and change
    of PnL after fees and funding, one per fill or payment), from which
    :func:`engine.results.realized_curve` builds an equity curve when the run gives
    none.
    """

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.pnl_events: list[tuple[int, float]] = []
        self._open: dict[str, _Open] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "OrderFilled": self._on_fill,
            "FillRecovered": self._on_recovered_fill,
            "PositionReconciled": self._on_reconciled,
            "PositionChanged": self._on_position,
            "FundingApplied": self._on_funding,
        }

    def feed(self, kind: str, payload: dict[str, Any]) -> None:
        """Take one journal record (other kinds are ignored)."""
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(payload)

    def finish(self) -> list[Trade]:
        """The trades, closed ones in closing order, then positions still open (by symbol)."""
        still_open = [self._trade(sym, o, closed=False) for sym, o in sorted(self._open.items())]
        return [*self.trades, *still_open]

    def _on_position(self, p: dict[str, Any]) -> None:
        held = self._open.get(p["symbol"])
        if held is not None and p["target"] == "EXITING" and p["source"] != "EXITING":
            held.reason = p["trigger"]

    def _on_funding(self, p: dict[str, Any]) -> None:
        amount = float(p["amount"])
        self.pnl_events.append((int(p["ts_event"]), amount))
        held = self._open.get(p["symbol"])
        if held is not None:
            held.funding += amount

    def _on_reconciled(self, p: dict[str, Any]) -> None:
        """A live start's position (agreed with the exchange): held from then on."""
        qty = float(p["qty"])
        if p["symbol"] in self._open or qty == 0.0:
            return
        held = self._open[p["symbol"]] = _Open(
            sign=1 if qty > 0 else -1, correlation_id=ADOPTED, entry_ts=int(p["ts_event"])
        )
        held.qty = abs(qty)
        held.entry_notional = abs(qty) * float(p["avg_price"])

    def _on_recovered_fill(self, p: dict[str, Any]) -> None:
        """A fill the last journal missed, recovered from the exchange: a fill all the same."""
        self._on_fill({**p, "last_qty": p["qty"], "last_price": p["price"], "side": p["side"]})

    def _on_fill(self, p: dict[str, Any]) -> None:
        symbol, qty, price = p["symbol"], float(p["last_qty"]), float(p["last_price"])
        sign, ts, fee = int(p["side"]), int(p["ts_event"]), float(p["fee"])
        if qty <= 0.0:
            return
        held = self._open.get(symbol)
        if held is None or held.sign == sign:
            self._add_entry(symbol, held, sign, qty, price, fee, ts, p["correlation_id"])
            self.pnl_events.append((ts, -fee))
            return
        closing = min(qty, held.remaining())
        closing_fee = fee * closing / qty
        held.exit_qty += closing
        held.exit_notional += closing * price
        held.fees += closing_fee
        held.exit_fills += 1
        held.exit_ts = ts
        entry_price = held.entry_notional / held.qty
        self.pnl_events.append((ts, held.sign * (price - entry_price) * closing - closing_fee))
        if held.remaining() <= _EPS * held.qty:
            self.trades.append(self._trade(symbol, held, closed=True))
            del self._open[symbol]
            rest = qty - closing
            if rest > _EPS * qty:  # a flip: the rest opens the next trade
                self._add_entry(
                    symbol, None, sign, rest, price, fee - closing_fee, ts, p["correlation_id"]
                )
                self.pnl_events.append((ts, -(fee - closing_fee)))

    def _add_entry(
        self,
        symbol: str,
        held: _Open | None,
        sign: int,
        qty: float,
        price: float,
        fee: float,
        ts: int,
        correlation_id: str,
    ) -> None:
        if held is None:
            held = self._open[symbol] = _Open(sign=sign, correlation_id=correlation_id, entry_ts=ts)
        held.qty += qty
        held.entry_notional += qty * price
        held.fees += fee
        held.entry_fills += 1

    @staticmethod
    def _trade(symbol: str, o: _Open, *, closed: bool) -> Trade:
        entry_price = o.entry_notional / o.qty
        common = {
            "symbol": symbol,
            "side": "LONG" if o.sign > 0 else "SHORT",
            "qty": o.qty,
            "entry_ts": o.entry_ts,
            "entry_price": entry_price,
            "entry_fills": o.entry_fills,
            "correlation_id": o.correlation_id,
        }
        if not closed:
            return Trade(
                **common,
                exit_ts=None,
                exit_price=None,
                hold_s=None,
                exit_reason=OPEN_AT_END,
                fees=o.fees,
                funding=o.funding,
                gross_pnl=0.0,
                net_pnl=0.0,
                ret=0.0,
                exit_fills=o.exit_fills,
            )
        exit_price = o.exit_notional / o.exit_qty
        gross = o.sign * (exit_price - entry_price) * o.qty
        net = gross - o.fees + o.funding
        return Trade(
            **common,
            exit_ts=o.exit_ts,
            exit_price=exit_price,
            hold_s=(o.exit_ts - o.entry_ts) / 1e9,
            exit_reason=o.reason,
            fees=o.fees,
            funding=o.funding,
            gross_pnl=gross,
            net_pnl=net,
            ret=net / o.entry_notional,
            exit_fills=o.exit_fills,
        )


def journal_records(path: Path, kinds: Iterable[str] = KINDS) -> Iterator[tuple[str, dict]]:
    """The records of ``kinds`` in a journal file, in id order, as (kind, payload).

    Raises:
        JournalError: the file is not a readable journal.
    """
    wanted = tuple(kinds)
    if not path.is_file():
        raise JournalError(f"{path}: no such journal")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot read journal ({exc})") from exc
    try:
        marks = ", ".join("?" * len(wanted))
        rows = db.execute(
            f"SELECT kind, payload FROM journal WHERE kind IN ({marks}) ORDER BY id", wanted
        )
        for kind, payload in rows:
            yield kind, orjson.loads(payload)
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot read journal ({exc})") from exc
    except orjson.JSONDecodeError as exc:
        raise JournalError(f"{path}: damaged journal record ({exc})") from exc
    finally:
        db.close()


def read_round_trips(path: Path) -> RoundTrips:
    """A :class:`RoundTrips` fed with every relevant record of the journal at ``path``.

    Raises:
        JournalError: the file is not a readable journal.
    """
    trips = RoundTrips()
    for kind, payload in journal_records(path):
        trips.feed(kind, payload)
    return trips


def read_trades(path: Path) -> list[Trade]:
    """The round trips of the journal at ``path`` (see :class:`Trade`).

    Raises:
        JournalError: the file is not a readable journal.
    """
    return read_round_trips(path).finish()
