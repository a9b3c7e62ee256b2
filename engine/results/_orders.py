"""What a run's orders did, from its journal: orders by type, fills and fees by liquidity.

:class:`OrderActivity` is the synchronous core: it takes journal records (kind and
payload, in journal order) and keeps counts, with no file and no event loop;
:func:`read_order_activity` feeds it a journal file. Together with the round trips'
statistics (win rate, average hold, exit reasons: :func:`~engine.results.trade_stats`)
it is the per-strategy part of the report: a run replays one strategy, so these are
that strategy's figures.

Counted: every ``SubmitOrder`` by ``order_type`` (``MARKET``, ``LIMIT``,
``STOP_MARKET``, ``TAKE_PROFIT_MARKET``), LIMIT orders also by ``time_in_force``,
every order by ``purpose`` (``ENTRY``/``EXIT``), and what became of them
(``OrderDenied`` by risk, ``OrderRejected`` by the venue, ``OrderExpired``,
``OrderCanceled``, ``OrderReplaced``); every ``OrderFilled`` by ``liquidity``
(``MAKER``: a resting order filled; ``TAKER``) with its quantity, notional and fee
(a maker rebate is a negative fee). A ``FillRecovered`` (a live start found a fill
the last journal missed) carries no liquidity: it counts as ``UNKNOWN``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._trades import journal_records

#: The journal kinds :class:`OrderActivity` reads.
ORDER_KINDS = (
    "SubmitOrder",
    "OrderDenied",
    "OrderRejected",
    "OrderExpired",
    "OrderCanceled",
    "OrderReplaced",
    "OrderFilled",
    "FillRecovered",
)
_OUTCOMES = {
    "OrderDenied": "denied",
    "OrderRejected": "rejected",
    "OrderExpired": "expired",
    "OrderCanceled": "canceled",
    "OrderReplaced": "replaced",
}
_DEFAULT_TIF = "GTC"  # the journal leaves time_in_force out at its default


class OrderActivity:
    """Counts of orders and fills, fed journal records in order."""

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.limit_by_tif: Counter[str] = Counter()
        self.by_purpose: Counter[str] = Counter()
        self.reduce_only = 0
        self.outcomes: Counter[str] = Counter()
        self.fills: dict[str, dict[str, float]] = {}
        self._handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "SubmitOrder": self._on_submit,
            "OrderFilled": self._on_fill,
            "FillRecovered": self._on_recovered,
            **dict.fromkeys(_OUTCOMES, self._on_outcome),
        }

    def feed(self, kind: str, payload: dict[str, Any]) -> None:
        """Take one journal record (other kinds are ignored)."""
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(kind, payload)

    def _on_submit(self, _kind: str, p: dict[str, Any]) -> None:
        order_type = str(p.get("order_type", "MARKET"))
        self.by_type[order_type] += 1
        if order_type == "LIMIT":
            self.limit_by_tif[str(p.get("time_in_force", _DEFAULT_TIF))] += 1
        self.by_purpose[str(p["purpose"])] += 1
        self.reduce_only += bool(p.get("reduce_only"))

    def _on_outcome(self, kind: str, _p: dict[str, Any]) -> None:
        self.outcomes[_OUTCOMES[kind]] += 1

    def _on_fill(self, _kind: str, p: dict[str, Any]) -> None:
        self._add_fill(str(p.get("liquidity", "TAKER")), p["last_qty"], p["last_price"], p["fee"])

    def _on_recovered(self, _kind: str, p: dict[str, Any]) -> None:
        self._add_fill("UNKNOWN", p["qty"], p["price"], p["fee"])

    def _add_fill(self, liquidity: str, qty: Any, price: Any, fee: Any) -> None:
        row = self.fills.setdefault(
            liquidity, {"fills": 0, "qty": 0.0, "notional": 0.0, "fees": 0.0}
        )
        row["fills"] += 1
        row["qty"] += float(qty)
        row["notional"] += float(qty) * float(price)
        row["fees"] += float(fee)

    def summary(self) -> dict[str, object]:
        """The counts as a JSON-ready dict (keys sorted; empty groups are ``{}``).

        Returns:
            ``orders`` (total), ``by_type``, ``limit_by_tif``, ``by_purpose``,
            ``reduce_only``, ``outcomes`` (denied, rejected, expired, canceled,
            replaced), ``fills`` per liquidity (``fills``, ``qty``, ``notional``,
            ``fees``, ``fee_bps``: fees over notional), and ``maker_share`` (the
            share of filled notional that rested; None without fills).
        """
        fills = {}
        for liquidity, row in sorted(self.fills.items()):
            notional = row["notional"]
            fills[liquidity] = {
                **row,
                "fills": int(row["fills"]),
                "fee_bps": 1e4 * row["fees"] / notional if notional > 0 else None,
            }
        total = sum(r["notional"] for r in self.fills.values())
        maker = self.fills.get("MAKER", {}).get("notional", 0.0)
        return {
            "orders": sum(self.by_type.values()),
            "by_type": dict(sorted(self.by_type.items())),
            "limit_by_tif": dict(sorted(self.limit_by_tif.items())),
            "by_purpose": dict(sorted(self.by_purpose.items())),
            "reduce_only": self.reduce_only,
            "outcomes": dict(sorted(self.outcomes.items())),
            "fills": fills,
            "maker_share": maker / total if total > 0 else None,
        }


def read_order_activity(path: Path) -> OrderActivity:
    """An :class:`OrderActivity` fed every order record of the journal at ``path``.

    Raises:
        JournalError: the file is not a readable journal.
    """
    activity = OrderActivity()
    for kind, payload in journal_records(path, ORDER_KINDS):
        activity.feed(kind, payload)
    return activity
