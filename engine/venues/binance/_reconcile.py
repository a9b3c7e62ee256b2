"""Start-up reconciliation: what the journal believes against what Binance says.

Before the live venue trades after a (re)start, it compares:

* the journal's view (:class:`JournalView`, rebuilt by :func:`journal_view_from_files`
  from the engine's whole live history: every live journal of ``journal.dir`` in
  start order): the orders it last saw not final (open, or UNKNOWN: sent without
  an answer), the position of every symbol, and every ``newClientOrderId`` it ever
  implied. Positions count the fills (``OrderFilled``), the fills a start
  recovered (``FillRecovered``) and the positions a start agreed with the exchange
  (``PositionReconciled``, which every successful live start journals for each
  traded symbol: the history restarts from it, so trades by hand that one start
  explained are not questioned again). An order a start resolved
  (``OrderReconciled``) is final from then on. A start that refused to trade
  journaled none of these, so the next start checks the same again;
* the exchange's :class:`ExchangeSnapshot`: ``openOrders``, ``positionRisk``,
  recent ``userTrades``, and a ``query_order`` by ``clientOrderId`` for every
  journal order that is not open (``None`` when the answer was -2013).

:func:`plan_reconciliation` (pure) turns that into a :class:`ReconcilePlan`:

* each journal order not final gets an :class:`OrderResolution` (its final
  status at the exchange, or still open; "not found" means it was never placed:
  REJECTED ``not_placed``), and the fills the journal lacks, trade by trade from
  ``userTrades`` (:class:`RecoveredFill`): no fill is lost;
* the fills of a protective stop or target (:mod:`._protect`, ids ``ps-...`` and
  ``pt-...``) that triggered while no engine ran are the engine's, recovered as such
  (the order that traded is looked up by ``orderId``; its ``clientOrderId`` is the
  stop's or target's), not trades by hand;
* open orders at the exchange are adopted or cancelled by ``policy``
  (``"adopt"`` keeps them and counts their fills; ``"cancel"`` cancels them),
  whether the journal knows them or not;
* per symbol, journal position + recovered fills must equal ``positionRisk``.
  A difference fully explained by trades after the journal's last record of
  orders the journal does not know (someone traded by hand) is accepted with a
  note; anything else raises :class:`ReconciliationError`, naming each symbol
  and the numbers, and the engine does not trade.

:func:`reconcile` is the async driver: it fetches the snapshot, plans, cancels
what the plan says, and plans again on a fresh snapshot (a cancelled order may
have filled meanwhile), so the positions it accepts are after the cancels.

Client order ids never collide across restarts: the venue sends
:func:`venue_client_order_id` of each engine order, derived from its symbol,
engine id and decision time, and reconciliation recomputes the same id from the
journaled :class:`~engine.messages.SubmitOrder`; :attr:`JournalView.used_client_order_ids`
lets a caller check that.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import orjson
from structlog.typing import FilteringBoundLogger

import fsm
from engine._errors import EngineError, JournalError

from ...ledger import PositionLedger
from ...messages import Side
from ._client import BinanceRestClient
from ._errors import RequestRejectedError
from ._ids import venue_client_order_id
from ._protect import is_protective_id

_ZERO = Decimal(0)
_NOT_FOUND = -2013
_UNKNOWN_ORDER = -2011
_TOLERANCE = Decimal("1e-9")


class ReconciliationError(EngineError):
    """The journal and the exchange disagree in a way reconciliation cannot explain.

    Attributes:
        differences: one line per disagreement (symbol, journal, exchange, gap).
    """

    def __init__(self, differences: Iterable[str]) -> None:
        self.differences = tuple(differences)
        super().__init__("reconciliation refused: " + "; ".join(self.differences))


@attrs.frozen(kw_only=True)
class JournalOrder:
    """An order the journal last saw not final.

    Attributes:
        client_order_id: the engine's id.
        venue_client_order_id: the ``newClientOrderId`` it was sent with.
        status: the last status the journal recorded (``SUBMITTED``: no answer).
        cum_qty: filled so far, per the journal.
        venue_order_id: Binance's ``orderId`` when the journal saw an ack.
    """

    client_order_id: str
    venue_client_order_id: str
    symbol: str
    side: Side
    qty: float
    reduce_only: bool
    status: fsm.OrderStatus
    cum_qty: float = 0.0
    venue_order_id: int | None = None
    ts_event: int = 0


@attrs.frozen(kw_only=True)
class JournalView:
    """What the journal believes.

    Attributes:
        orders: orders not final in the journal.
        positions: per symbol ``(signed quantity, average entry price)`` from the fills,
            the recovered fills and the reconciled positions.
        used_client_order_ids: every ``newClientOrderId`` the journal's orders were sent with.
        known_venue_order_ids: every Binance ``orderId`` the journal saw.
        last_ts: the latest exchange time in the journal (ns; 0 when none): of an
            acknowledgement, a fill, a recovered fill or a reconciled position. Local
            times (decisions, local rejections) are left out: this is compared with
            the exchange's trade times.
    """

    orders: tuple[JournalOrder, ...] = ()
    positions: Mapping[str, tuple[float, float]] = attrs.Factory(dict)
    used_client_order_ids: frozenset[str] = frozenset()
    known_venue_order_ids: frozenset[int] = frozenset()
    last_ts: int = 0


@attrs.frozen(kw_only=True)
class ExchangeSnapshot:
    """What the exchange says (raw REST payloads, as Binance sends them).

    Attributes:
        open_orders: ``GET /fapi/v1/openOrders``.
        position_risk: ``GET /fapi/v2/positionRisk``.
        trades: per symbol, ``GET /fapi/v1/userTrades`` (recent, and of the orders queried).
        queried: per ``clientOrderId`` of a journal order not open, ``GET
            /fapi/v1/order``'s answer, or ``None`` for -2013 (does not exist).
        protective: ``orderId`` -> ``clientOrderId`` of the orders that triggered
            protective stops and targets placed (ids ``ps-...``, ``pt-...``; the
            journal does not know them),
            among those that traded after the journal's last record.
    """

    open_orders: tuple[Mapping[str, Any], ...] = ()
    position_risk: tuple[Mapping[str, Any], ...] = ()
    trades: Mapping[str, tuple[Mapping[str, Any], ...]] = attrs.Factory(dict)
    queried: Mapping[str, Mapping[str, Any] | None] = attrs.Factory(dict)
    protective: Mapping[int, str] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class RecoveredFill:
    """A fill the journal lacks, from ``userTrades`` (or from the order's totals)."""

    client_order_id: str
    venue_client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    commission: Decimal
    trade_id: int | None  # None: made from executedQty/avgPrice, no trade was found
    time_ms: int


@attrs.frozen(kw_only=True)
class OrderResolution:
    """What became of a journal order that was not final."""

    client_order_id: str
    venue_client_order_id: str
    symbol: str
    status: fsm.OrderStatus
    executed_qty: Decimal
    venue_order_id: int | None
    reason: str = ""


@attrs.frozen(kw_only=True)
class OpenOrderRef:
    """An order open at the exchange.

    Attributes:
        client_order_id: the exchange's ``clientOrderId``.
        engine_order_id: the engine's id when the journal knows the order, else ``None``.
    """

    client_order_id: str
    engine_order_id: str | None
    symbol: str
    order_id: int
    side: str
    orig_qty: Decimal
    executed_qty: Decimal
    reduce_only: bool


@attrs.frozen(kw_only=True)
class ReconcilePlan:
    """What to do before trading.

    Attributes:
        resolutions: the final (or open) status of every journal order not final.
        fills: fills the journal lacks, in trade order; journal them.
        cancel: open orders to cancel (policy ``"cancel"``).
        adopt: open orders to keep and follow (policy ``"adopt"``).
        positions: per symbol ``(quantity, entry price)`` as the exchange has it,
            which the plan found consistent (symbols not listed are flat); start
            the accounts from these.
        notes: differences that were explained (foreign trades), for the log.
        exchange_time_ms: the exchange's time once the positions were read (0:
            not set; the venue sets it).
    """

    resolutions: tuple[OrderResolution, ...] = ()
    fills: tuple[RecoveredFill, ...] = ()
    cancel: tuple[OpenOrderRef, ...] = ()
    adopt: tuple[OpenOrderRef, ...] = ()
    positions: Mapping[str, tuple[Decimal, Decimal]] = attrs.Factory(dict)
    notes: tuple[str, ...] = ()
    exchange_time_ms: int = 0


# -- the journal's view ---------------------------------------------------------------


# The kinds the view is built from (the rest of a journal does not matter here).
VIEW_KINDS = (
    "SubmitOrder",
    "OrderAccepted",
    "OrderFilled",
    "OrderRejected",
    "OrderCanceled",
    "OrderExpired",
    "FillRecovered",
    "OrderReconciled",
    "PositionReconciled",
)
_FINAL_ACTIONS = ("canceled",)  # reconciliation cancelled it: whatever filled was recovered


class _ViewBuilder:
    """Folds journal records, file by file in start order, into a :class:`JournalView`."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}  # by venue id, over the whole history
        self.latest: dict[str, str] = {}  # engine id -> venue id, within the current file
        self.ledger = PositionLedger()
        self.used: set[str] = set()
        self.known: set[int] = set()
        self.last_ts = 0

    def start_file(self) -> None:
        # Engine ids (``tr-BTCUSDT-1``) restart with every run; venue ids do not.
        self.latest = {}

    def _entry(self, p: Mapping[str, Any]) -> dict[str, Any] | None:
        vid = str(p.get("venue_client_order_id") or "")
        if not vid:
            vid = self.latest.get(str(p.get("client_order_id", "")), "")
        return self.orders.get(vid) if vid else None

    def add(self, kind: str, p: Mapping[str, Any]) -> None:
        if kind == "SubmitOrder":
            vid = venue_client_order_id(p["symbol"], p["client_order_id"], p["ts_event"], p["seq"])
            self.used.add(vid)
            self.latest[p["client_order_id"]] = vid
            self.orders[vid] = {
                "submit": p,
                "machine": fsm.new_order(),
                "cum": 0.0,
                "venue_order_id": None,
            }
            return
        if kind in ("OrderAccepted", "OrderFilled", "FillRecovered", "PositionReconciled"):
            self.last_ts = max(self.last_ts, int(p.get("ts_event", 0)))
        if kind == "PositionReconciled":
            self.ledger.adopt(str(p["symbol"]), float(p["qty"]), float(p["avg_price"]))
            return
        if kind == "OrderFilled":
            self.ledger.apply_fill(
                p["symbol"], int(p["side"]) * float(p["last_qty"]), float(p["last_price"]), 0.0
            )
        elif kind == "FillRecovered":
            self.ledger.apply_fill(
                p["symbol"], int(p["side"]) * float(p["qty"]), float(p["price"]), 0.0
            )
        entry = self._entry(p)
        if entry is None:
            return
        machine = entry["machine"]
        event: object | None = None
        if kind == "OrderAccepted":
            entry["venue_order_id"] = int(p["venue_order_id"])
            self.known.add(int(p["venue_order_id"]))
            event = fsm.Accepted()
        elif kind == "OrderFilled":
            entry["cum"] = float(p["cum_qty"])
            event = fsm.Fill(cum_qty=float(p["cum_qty"]), qty=float(p["order_qty"]))
        elif kind == "FillRecovered":
            entry["cum"] = round(entry["cum"] + float(p["qty"]), 12)
            event = fsm.Fill(cum_qty=entry["cum"], qty=float(entry["submit"]["qty"]))
        elif kind == "OrderRejected":
            event = fsm.Rejected(reason=str(p.get("reason", "")))
        elif kind == "OrderCanceled":
            event = fsm.Canceled()
        elif kind == "OrderExpired":
            event = fsm.Expired()
        elif kind == "OrderReconciled":
            self._resolve(entry, p)
            return
        if event is not None and fsm.ORDER_TABLE.resolve(machine.state, event) is not None:
            machine.handle(event)

    @staticmethod
    def _resolve(entry: dict[str, Any], p: Mapping[str, Any]) -> None:
        """A start found what became of the order: final from then on, or still open."""
        action = str(p.get("action", ""))
        try:
            status = fsm.status_from_exchange(str(p.get("status", "")))
        except ValueError:
            status = None
        if action in _FINAL_ACTIONS or status in fsm.TERMINAL_STATUSES:
            entry["final"] = True

    def view(self) -> JournalView:
        open_orders = []
        for vid, entry in self.orders.items():
            machine = entry["machine"]
            if entry.get("final") or machine.state in fsm.TERMINAL_STATUSES:
                continue
            p = entry["submit"]
            open_orders.append(
                JournalOrder(
                    client_order_id=p["client_order_id"],
                    venue_client_order_id=vid,
                    symbol=p["symbol"],
                    side=Side(int(p["side"])),
                    qty=float(p["qty"]),
                    reduce_only=bool(p.get("reduce_only", False)),
                    status=machine.state,
                    cum_qty=entry["cum"],
                    venue_order_id=entry["venue_order_id"],
                    ts_event=int(p["ts_event"]),
                )
            )
        return JournalView(
            orders=tuple(open_orders),
            positions={s: (a.qty, a.avg_price) for s, a in sorted(self.ledger.accounts.items())},
            used_client_order_ids=frozenset(self.used),
            known_venue_order_ids=frozenset(self.known),
            last_ts=self.last_ts,
        )


def journal_view_from_records(records: Iterable[tuple[str, Mapping[str, Any]]]) -> JournalView:
    """Rebuild the journal's view from one journal's records in order.

    Args:
        records: ``(kind, payload)`` pairs as the journal stores them (kind is the
            message class name, payload its fields).
    """
    builder = _ViewBuilder()
    builder.start_file()
    for kind, payload in records:
        builder.add(kind, payload)
    return builder.view()


def journal_view_from_files(paths: Sequence[Path]) -> JournalView:
    """Rebuild the journal's view from the engine's live history (read only).

    Args:
        paths: the journals of every live start, oldest first (see
            :func:`engine.journal.journal_files`); empty: nothing was ever journaled.

    Raises:
        JournalError: a file is not a readable journal.
    """
    builder = _ViewBuilder()
    marks = ",".join("?" * len(VIEW_KINDS))
    for path in paths:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                created = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'"
                ).fetchone()
                # A start killed before it made its journal's tables journaled nothing.
                rows = (
                    db.execute(
                        f"SELECT kind, payload FROM journal WHERE kind IN ({marks}) ORDER BY id",
                        VIEW_KINDS,
                    ).fetchall()
                    if created
                    else []
                )
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise JournalError(f"{path}: cannot read journal ({exc})") from exc
        builder.start_file()
        for kind, payload in rows:
            builder.add(kind, orjson.loads(payload))
    return builder.view()


def journal_view_from_file(path: Path) -> JournalView:
    """Rebuild the journal's view from one journal file (read only).

    Raises:
        JournalError: the file is not a readable journal.
    """
    return journal_view_from_files([path])


# -- the plan -------------------------------------------------------------------------


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else _ZERO


def _open_ref(raw: Mapping[str, Any], engine_id: str | None) -> OpenOrderRef:
    return OpenOrderRef(
        client_order_id=str(raw.get("clientOrderId", "")),
        engine_order_id=engine_id,
        symbol=str(raw["symbol"]),
        order_id=int(raw["orderId"]),
        side=str(raw.get("side", "")),
        orig_qty=_dec(raw.get("origQty")),
        executed_qty=_dec(raw.get("executedQty")),
        reduce_only=bool(raw.get("reduceOnly", False)),
    )


def _recover(
    order: JournalOrder,
    order_id: int | None,
    executed: Decimal,
    avg_price: Decimal,
    trades: Iterable[Mapping[str, Any]],
    time_ms: int,
) -> list[RecoveredFill]:
    """Fills of ``order`` beyond what the journal has, from its trades."""
    known = Decimal(str(order.cum_qty))
    if executed <= known:
        return []
    out: list[RecoveredFill] = []
    cum = _ZERO
    quote = _ZERO
    own = sorted(
        (t for t in trades if order_id is not None and int(t.get("orderId", -1)) == order_id),
        key=lambda t: int(t["id"]),
    )
    for trade in own:
        qty, price = _dec(trade["qty"]), _dec(trade["price"])
        cum += qty
        quote += qty * price
        if cum <= known:
            continue
        out.append(
            RecoveredFill(
                client_order_id=order.client_order_id,
                venue_client_order_id=order.venue_client_order_id,
                symbol=order.symbol,
                side=order.side,
                qty=min(qty, cum - known),
                price=price,
                commission=_dec(trade.get("commission")),
                trade_id=int(trade["id"]),
                time_ms=int(trade.get("time", time_ms)),
            )
        )
    seen = max(cum, known)
    if executed > seen:
        # Trades not served (older than the lookback): the rest at the price the
        # order's average implies.
        rest = executed - seen
        price = (avg_price * executed - quote) / rest if cum else avg_price
        out.append(
            RecoveredFill(
                client_order_id=order.client_order_id,
                venue_client_order_id=order.venue_client_order_id,
                symbol=order.symbol,
                side=order.side,
                qty=rest,
                price=price if price > 0 else avg_price,
                commission=_ZERO,
                trade_id=None,
                time_ms=time_ms,
            )
        )
    return out


def plan_reconciliation(
    view: JournalView,
    snapshot: ExchangeSnapshot,
    *,
    symbols: Iterable[str],
    policy: str,
) -> ReconcilePlan:
    """Compare the journal with the exchange and say what to do.

    Args:
        view: the journal's view.
        snapshot: the exchange's state (with a query answer for every journal
            order not open at the exchange).
        symbols: the symbols the engine trades; others are left alone.
        policy: ``"adopt"`` or ``"cancel"`` open orders.

    Returns:
        The plan.

    Raises:
        ReconciliationError: a position differs by more than recovered and
            foreign fills explain, or a journal order was not queried.
        ValueError: an unknown policy.
    """
    if policy not in ("adopt", "cancel"):
        raise ValueError(f"policy must be 'adopt' or 'cancel', not {policy!r}")
    traded = set(symbols)
    open_by_id = {
        str(o.get("clientOrderId", "")): o for o in snapshot.open_orders if o["symbol"] in traded
    }
    journal_ids = {o.venue_client_order_id: o for o in view.orders}
    resolutions: list[OrderResolution] = []
    fills: list[RecoveredFill] = []
    problems: list[str] = []
    ours: set[int] = set(view.known_venue_order_ids)

    for order in view.orders:
        trades = snapshot.trades.get(order.symbol, ())
        raw = open_by_id.get(order.venue_client_order_id)
        if raw is None:
            if order.venue_client_order_id not in snapshot.queried:
                problems.append(f"{order.client_order_id}: not open and not queried")
                continue
            raw = snapshot.queried[order.venue_client_order_id]
        if raw is None:
            if order.cum_qty > 0:
                problems.append(
                    f"{order.client_order_id}: journal has fills of {order.cum_qty} but the "
                    "exchange does not know the order"
                )
                continue
            resolutions.append(
                OrderResolution(
                    client_order_id=order.client_order_id,
                    venue_client_order_id=order.venue_client_order_id,
                    symbol=order.symbol,
                    status=fsm.OrderStatus.REJECTED,
                    executed_qty=_ZERO,
                    venue_order_id=None,
                    reason="not_placed",
                )
            )
            continue
        order_id = int(raw["orderId"]) if raw.get("orderId") is not None else None
        if order_id is not None:
            ours.add(order_id)
        executed = _dec(raw.get("executedQty"))
        time_ms = int(raw.get("updateTime") or raw.get("time") or 0)
        fills.extend(
            _recover(order, order_id, executed, _dec(raw.get("avgPrice")), trades, time_ms)
        )
        resolutions.append(
            OrderResolution(
                client_order_id=order.client_order_id,
                venue_client_order_id=order.venue_client_order_id,
                symbol=order.symbol,
                status=fsm.status_from_exchange(str(raw.get("status", "NEW"))),
                executed_qty=executed,
                venue_order_id=order_id,
            )
        )

    refs = [
        _open_ref(raw, journal_ids[cid].client_order_id if cid in journal_ids else None)
        for cid, raw in sorted(open_by_id.items())
    ]
    for ref in refs:
        ours.add(ref.order_id)

    # A protective stop that triggered while no engine ran: its fills are the engine's.
    for symbol in sorted(traded):
        for t in snapshot.trades.get(symbol, ()):
            order_id = int(t.get("orderId", -1))
            cid = snapshot.protective.get(order_id)
            if (
                cid is None
                or order_id in ours
                or int(t.get("time", 0)) <= view.last_ts // 1_000_000
            ):
                continue
            fills.append(
                RecoveredFill(
                    client_order_id=cid,
                    venue_client_order_id=cid,
                    symbol=symbol,
                    side=Side.BUY if str(t.get("side")) == "BUY" else Side.SELL,
                    qty=_dec(t["qty"]),
                    price=_dec(t["price"]),
                    commission=_dec(t.get("commission")),
                    trade_id=int(t["id"]),
                    time_ms=int(t["time"]),
                )
            )
    ours.update(snapshot.protective)

    exchange_pos: dict[str, tuple[Decimal, Decimal]] = {}
    for row in snapshot.position_risk:
        symbol = str(row["symbol"])
        if symbol not in traded or str(row.get("positionSide", "BOTH")) not in ("BOTH", ""):
            continue
        exchange_pos[symbol] = (_dec(row.get("positionAmt")), _dec(row.get("entryPrice")))

    recovered: dict[str, Decimal] = {}
    for fill in fills:
        recovered[fill.symbol] = recovered.get(fill.symbol, _ZERO) + int(fill.side) * fill.qty
    last_ms = view.last_ts // 1_000_000
    notes: list[str] = []
    positions: dict[str, tuple[Decimal, Decimal]] = {}
    for symbol in sorted(traded):
        journal_qty = Decimal(str(view.positions.get(symbol, (0.0, 0.0))[0]))
        expected = journal_qty + recovered.get(symbol, _ZERO)
        actual, entry = exchange_pos.get(symbol, (_ZERO, _ZERO))
        positions[symbol] = (actual, entry)
        if abs(actual - expected) <= _TOLERANCE:
            continue
        foreign = sum(
            (
                (_dec(t["qty"]) if str(t.get("side")) == "BUY" else -_dec(t["qty"]))
                for t in snapshot.trades.get(symbol, ())
                if int(t.get("orderId", -1)) not in ours and int(t.get("time", 0)) > last_ms
            ),
            _ZERO,
        )
        if foreign and abs(actual - expected - foreign) <= _TOLERANCE:
            notes.append(
                f"{symbol}: position {actual} = journal {journal_qty} + recovered "
                f"{recovered.get(symbol, _ZERO)} + {foreign} traded by orders the engine "
                "did not place"
            )
            continue
        problems.append(
            f"{symbol}: journal {journal_qty} + recovered {recovered.get(symbol, _ZERO)} "
            f"+ foreign {foreign} != exchange {actual} (unexplained {actual - expected - foreign})"
        )
    if problems:
        raise ReconciliationError(problems)
    cancel = tuple(refs) if policy == "cancel" else ()
    adopt = tuple(refs) if policy == "adopt" else ()
    fills.sort(key=lambda f: (f.time_ms, f.trade_id if f.trade_id is not None else 0))
    return ReconcilePlan(
        resolutions=tuple(resolutions),
        fills=tuple(fills),
        cancel=cancel,
        adopt=adopt,
        positions={s: p for s, p in positions.items() if p[0] != 0},
        notes=tuple(notes),
    )


# -- the driver -----------------------------------------------------------------------


async def fetch_snapshot(
    client: BinanceRestClient, view: JournalView, *, symbols: Iterable[str]
) -> ExchangeSnapshot:
    """Fetch what :func:`plan_reconciliation` needs.

    ``userTrades`` are fetched per traded symbol from the journal's last record
    (at most 7 days back, Binance's limit), and per journal order the exchange
    reports executed, by its ``orderId``.

    Raises:
        BinanceError: a request failed (other than -2013 on a query).
    """
    traded = sorted(set(symbols))
    open_orders = tuple(o for o in await client.open_orders() if o.get("symbol") in traded)
    position_risk = tuple(await client.position_risk())
    open_ids = {str(o.get("clientOrderId")) for o in open_orders}
    queried: dict[str, Mapping[str, Any] | None] = {}
    trades: dict[str, dict[int, Mapping[str, Any]]] = {s: {} for s in traded}
    for order in view.orders:
        if order.venue_client_order_id in open_ids:
            continue
        try:
            queried[order.venue_client_order_id] = await client.query_order(
                order.symbol, client_order_id=order.venue_client_order_id
            )
        except RequestRejectedError as exc:
            if exc.code != _NOT_FOUND:
                raise
            queried[order.venue_client_order_id] = None
    per_order = [
        (o["symbol"], int(o["orderId"]))
        for o in (*open_orders, *(q for q in queried.values() if q is not None))
        if _dec(o.get("executedQty")) > 0 and o.get("symbol") in trades
    ]
    for symbol, order_id in per_order:
        for t in await client.user_trades(symbol, order_id=order_id, limit=1000):
            trades[symbol][int(t["id"])] = t
    protective: dict[int, str] = {}
    if view.last_ts:
        start_ms = view.last_ts // 1_000_000
        for symbol in traded:
            for t in await client.user_trades(symbol, start_time_ms=start_ms, limit=1000):
                trades[symbol][int(t["id"])] = t
        # Orders the journal does not know that traded since: a protective stop's
        # or target's (``ps-``/``pt-...``, placed by the venue, not journaled) or
        # foreign (by hand).
        own = set(view.known_venue_order_ids) | {order_id for _s, order_id in per_order}
        own |= {int(o["orderId"]) for o in open_orders}
        unknown = sorted(
            {
                (symbol, int(t["orderId"]))
                for symbol, by_id in trades.items()
                for t in by_id.values()
                if int(t["orderId"]) not in own and int(t.get("time", 0)) > start_ms
            }
        )
        for symbol, order_id in unknown:
            raw = await client.query_order(symbol, order_id=order_id)
            cid = str(raw.get("clientOrderId", ""))
            if is_protective_id(cid):
                protective[order_id] = cid
    return ExchangeSnapshot(
        open_orders=open_orders,
        position_risk=position_risk,
        trades={s: tuple(by_id[i] for i in sorted(by_id)) for s, by_id in trades.items()},
        queried=queried,
        protective=protective,
    )


async def reconcile(
    client: BinanceRestClient,
    view: JournalView,
    *,
    symbols: Iterable[str],
    policy: str,
    log: FilteringBoundLogger,
) -> ReconcilePlan:
    """Fetch, plan, cancel what the plan says, and check again after the cancels.

    Returns:
        The plan on the state after the cancels (its ``cancel`` lists what was
        cancelled).

    Raises:
        ReconciliationError: see :func:`plan_reconciliation`.
        BinanceError: a request failed; nothing is known to be consistent.

    On cancellation some cancels may have been sent; nothing else changes.
    """
    traded = tuple(symbols)
    snapshot = await fetch_snapshot(client, view, symbols=traded)
    plan = plan_reconciliation(view, snapshot, symbols=traded, policy=policy)
    if plan.cancel:
        for ref in plan.cancel:
            try:
                await client.cancel_order(ref.symbol, client_order_id=ref.client_order_id)
            except RequestRejectedError as exc:
                if exc.code != _UNKNOWN_ORDER:  # gone already (filled or cancelled)
                    raise
            log.warning(
                "reconciliation cancelled an open order",
                symbol=ref.symbol,
                client_order_id=ref.client_order_id,
                engine_order_id=ref.engine_order_id,
            )
        snapshot = await fetch_snapshot(client, view, symbols=traded)
        again = plan_reconciliation(view, snapshot, symbols=traded, policy=policy)
        plan = attrs.evolve(again, cancel=plan.cancel + again.cancel)
    for note in plan.notes:
        log.warning("reconciliation note", note=note)
    for fill in plan.fills:
        # The journal of the run that placed these never saw them: say each one.
        log.warning(
            "fill recovered by reconciliation",
            symbol=fill.symbol,
            client_order_id=fill.client_order_id,
            venue_client_order_id=fill.venue_client_order_id,
            side=fill.side.name,
            qty=fill.qty,
            price=fill.price,
            trade_id=fill.trade_id,
        )
    log.info(
        "reconciled",
        resolved=len(plan.resolutions),
        recovered_fills=len(plan.fills),
        canceled=len(plan.cancel),
        adopted=len(plan.adopt),
    )
    return plan
