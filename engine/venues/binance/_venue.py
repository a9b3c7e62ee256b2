"""The live Binance venue, driven by the execution actor like the simulated one.

:class:`BinanceVenue` offers :class:`~engine.venues.sim.SimVenue`'s synchronous
interface (``submit``, ``on_market``, ``cancel_all``, ``expire_all``,
``step_quotes``, ``equity``, ``take_closed_trades``, ``seq``) over background
tasks that do the I/O. It does not offer SimVenue's fault drills (``ban``,
``reject_next``): a live venue's faults are real. What the actor must do:

1. ``await nursery.start(venue.run)`` before the actor starts: syncs the clock,
   loads ``exchangeInfo`` (order templates, rate limits), connects the user-data
   stream, reconciles with the journal when given one (see
   :mod:`._reconcile`), then reports started. Start-up waits out what passes
   (a 429 until ``Retry-After``, a 418 ban until it ends, no answer or a
   refused connection with a capped backoff), logging each wait, until
   ``startup_deadline_s`` from the start: then :class:`StartupDeadlineError`
   (also at once for a ban that outlasts the deadline). Other failures
   (credentials, a refused request, :class:`ReconciliationError`) propagate at
   once. Either way nothing was traded.
2. Per step, exactly as with SimVenue: ``cancel_all`` when halting, ``submit``
   per approved order, ``on_market(ticks)`` with the step's market data, and
   ``expire_all`` on the final step.
3. Per step, ``take_ops()``: the venue's operational events (a 418 ban as
   :class:`RateLimitBanned`, a position the exchange reports differently as
   :class:`ReconciliationFailed`), to journal and pass to risk like the feed's.

``submit`` checks the order against the symbol's filters and returns at once:
``[]`` (sent, or queued for the sender task) or ``[OrderRejected]`` (a filter
refused it, reason ``filter:<REASON>``; nothing was sent). When nothing is queued
ahead of it, the lean transport has an idle plain-TCP connection and the rate
limiter lets it through now, the signed request is written inside ``submit``
(:attr:`BinanceVenue.write_inline`): no task hand-over between the decision and
the wire; a task reads the answer. Each order's tick-to-written and
submit-to-written times go to :attr:`BinanceVenue.write_latency` and the log
(``order written``). The REST answers and user-data
events become :class:`OrderAccepted`, :class:`OrderFilled` (one per trade, with
``cum_qty``), :class:`OrderCanceled`, :class:`OrderExpired` and
:class:`OrderRejected`, queued as they arrive and handed out by the next
``on_market`` in ``(exchange time, arrival)`` order, numbered from the shared
``seq`` only then. Each order's events are kept in causal order (its times are
made non-decreasing) and checked against the order machine, so the actor's
machine never sees an impossible sequence; a duplicate (the same trade from the
stream and from a query) is dropped by its cumulative quantity.

Order types: MARKET, LIMIT (GTC, IOC, FOK, GTX; price rounded to the tick on the
passive side), reduce-only, and STOP_MARKET / TAKE_PROFIT_MARKET on the algo order
API (``POST /fapi/v1/algoOrder``). :meth:`BinanceVenue.cancel` and
:meth:`BinanceVenue.replace` (``PUT /fapi/v1/order``) make it a
:class:`~engine.venues._protocol.ManagesOrders`. ``ALGO_UPDATE`` events become
:class:`OrderAccepted`, :class:`OrderTriggered` and the final event; the order a
conditional order places on trigger carries its client id, so its fills are that
order's. ``AMENDMENT`` updates (or the amend's answer, whichever comes first)
become :class:`OrderReplaced`. With ``protective`` the venue also rests
protective stops and targets on the exchange while a position is held (:mod:`._protect`).

Failure handling, per order:

* no answer in time, a broken connection, a 5xx or "Unknown error" 503: the
  order is UNKNOWN (it may exist). It stays ``SUBMITTED`` for the actor until
  the user stream reports it, or until a query by ``clientOrderId`` after
  ``unknown_grace_s`` (which exceeds ``recvWindow``: the exchange refuses a
  request older than that, so a later "-2013 does not exist" is final) says
  what it is: found, its status and fills (exact trades from ``userTrades``);
  -2013 after the grace period, :class:`OrderRejected` ``not_placed``;
* -1021 (timestamp outside ``recvWindow``): the client re-syncs the clock and
  resends once with a new timestamp and the same ``clientOrderId``; a duplicate
  id answer (-4116) means the first one was placed and the order is queried;
* 429: the limiter stops sending until ``Retry-After``; the order is resent
  (same id) unless older than ``max_order_age_s``, then rejected ``stale``
  (also when the limiter holds it in its queue past that age: nothing was sent);
* 418: the order is rejected ``418 ip banned``, a :class:`RateLimitBanned`
  op is emitted once per ban, and every order until the ban ends is rejected
  without being sent;
* a refusal (-2019 margin, -4164 notional, ...): :class:`OrderRejected` with
  ``"<code> <msg>"``;
* the user stream dropped: after it reconnects every open or unknown order is
  queried (and its missing trades fetched), so no fill is lost.

Orders are placed with priorities: reduce-only (closing) orders before new
ones, cancels before both (the rate limiter's :class:`Priority`). The limiter
can be handed in (``limiter``, with its ``server_clock``) to share it with the
live feed's REST calls: Binance counts both against one IP.

Positions and PnL go to the engine's :class:`~engine.ledger.PositionLedger`
(the one risk, the symbol actors and the report read): from the positions
start-up reconciliation agreed with the exchange, then from the fills, marked to
the mid of the step's quotes (``equity``: realized - fees + unrealized since
start, as in SimVenue). ``ACCOUNT_UPDATE`` positions are kept apart in
:attr:`exchange_positions` (refreshed from ``positionRisk`` after a user-stream
gap): the exchange's view, not a copy; when one disagrees with the ledger for
``drift_grace_s`` while no order of the symbol is in flight, a
:class:`ReconciliationFailed` op says so, once, and again after an operator
resume (:meth:`on_resume`) if it still disagrees.

Credentials come only from :func:`credentials_from_env`; they are never logged
and not in any repr.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import numpy as np
import trio
from structlog.typing import FilteringBoundLogger

import fsm

from ..._config import ExitsSection
from ...feeds._transport import TransportError
from ...ledger import PositionLedger, SymbolAccount
from ...messages import (
    CancelOrder,
    EventKind,
    FillRecovered,
    OpsEvent,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderTriggered,
    RateLimitBanned,
    ReconciliationFailed,
    ReplaceOrder,
    Side,
    SubmitOrder,
    Ticks,
)
from ._client import BinanceRestClient, NewOrderInFlight
from ._clock import ServerClock
from ._errors import (
    BinanceError,
    FilterError,
    IpBannedError,
    OrderRejectedError,
    RateLimitedError,
    RequestRejectedError,
    SendDeadlineError,
    ServiceUnavailableError,
    StartupDeadlineError,
    TimestampSkewError,
    UnknownOrderStateError,
)
from ._ids import venue_client_order_id
from ._protect import (
    CancelStop,
    PlaceStop,
    ProtectiveStops,
    StopAction,
    is_protective_id,
    protective_kind,
)
from ._ratelimit import DEFAULT_LIMITS, Priority, RateLimiter, rate_limits_from_exchange_info
from ._reconcile import JournalView, ReconcilePlan, journal_view_from_files, reconcile
from ._signing import Credentials
from ._templates import (
    OrderTemplate,
    OrderType,
    PreparedOrder,
    TimeInForce,
    templates_from_exchange_info,
)
from ._transport import LeanTransport, OrderTransport
from ._userstream import (
    AccountUpdate,
    AlgoUpdate,
    Connector,
    OrderTradeUpdate,
    StreamGap,
    StreamSignal,
    UserStream,
)

_ZERO = Decimal(0)
# The enums by value, looked up per order (an Enum call by value costs a microsecond).
_ORDER_TYPE_OF = {t.value: t for t in OrderType}
_TIME_IN_FORCE_OF = {t.value: t for t in TimeInForce}
_NOT_FOUND = -2013
_UNKNOWN_ORDER = -2011
_NO_NEED_TO_MODIFY = -5027
_DUPLICATE_ID = -4116
_FEE_ASSETS = frozenset({"USDT", "USDC", "BUSD", ""})

_O = fsm.OrderStatus
# Plain values for the per-step and per-order comparisons (an enum member lookup
# costs a call each time).
_QUOTE = int(EventKind.QUOTE)
_LIMIT = OrderType.LIMIT
_T = TypeVar("_T")


class _State:
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    UNKNOWN = "UNKNOWN"
    OPEN = "OPEN"
    DONE = "DONE"


@attrs.define(eq=False)
class _Live:
    """One order the venue tracks."""

    order: SubmitOrder
    prepared: PreparedOrder
    venue_id: str
    queued_at: float
    machine: fsm.Machine[fsm.OrderStatus] = attrs.Factory(fsm.new_order)
    state: str = _State.QUEUED
    venue_order_id: int | None = None
    cum_qty: Decimal = _ZERO
    quote_qty: Decimal = _ZERO  # sum(qty * price) of the fills seen
    sent_at: float = math.inf
    submitted_ns: int = 0  # time.time_ns at submit
    written_ns: int = 0  # time.time_ns when its request was first written whole
    inline: bool = False  # written inside submit, not by the sender task
    next_check: float = math.inf
    checking: bool = False
    cancel_requested: bool = False
    last_ts: int = 0
    order_qty: Decimal = _ZERO  # the order's size now (amended, or a triggered order's)
    amended: tuple[Decimal, Decimal | None] | None = None  # (qty, price) last reported
    pending_replace: ReplaceOrder | None = None  # asked before the order was acknowledged

    def __attrs_post_init__(self) -> None:
        self.order_qty = self.prepared.quantity
        self.amended = (self.prepared.quantity, self.prepared.price)

    @property
    def priority(self) -> Priority:
        return Priority.CLOSE if self.prepared.reduce_only else Priority.NEW_ORDER

    @property
    def terminal(self) -> bool:
        return self.machine.state in fsm.TERMINAL_STATUSES


class _WriteMark:
    """The write hook of an order written inside :meth:`BinanceVenue.submit`.

    Stamps the time its request's last byte was written (``time.time_ns``), then
    calls ``then`` when set (the venue's own hook, once the order's record exists).
    """

    __slots__ = ("ns", "then")

    def __init__(self) -> None:
        self.ns = 0
        self.then: Callable[[], None] | None = None

    def __call__(self) -> None:
        if not self.ns:
            self.ns = time.time_ns()
        if self.then is not None:
            self.then()


class WriteLatency:
    """Per order, tick-to-written and submit-to-written times in fixed rings (constant memory).

    ``tick`` is from the order's ``ts_event`` (the triggering tick's receive
    stamp, ``time.time_ns``, for orders a tick decided) to its request's last
    byte written; ``submit`` from :meth:`BinanceVenue.submit` to the same write.
    ``count`` and the maxima cover the whole run; the percentiles the newest
    ``window`` orders.

    Args:
        window: how many of the newest orders the percentiles are taken over.
    """

    __slots__ = ("_next", "_submit", "_tick", "count", "max_submit_ns", "max_tick_ns")

    def __init__(self, window: int = 4096) -> None:
        self._tick = np.zeros(window, dtype=np.int64)
        self._submit = np.zeros(window, dtype=np.int64)
        self._next = 0
        self.count = 0
        self.max_tick_ns = 0
        self.max_submit_ns = 0

    def record(self, tick_ns: int, submit_ns: int) -> None:
        """Add one order's two times (ns)."""
        i = self._next
        self._tick[i] = tick_ns
        self._submit[i] = submit_ns
        self._next = 0 if i + 1 == self._tick.shape[0] else i + 1
        self.count += 1
        self.max_tick_ns = max(self.max_tick_ns, tick_ns)
        self.max_submit_ns = max(self.max_submit_ns, submit_ns)

    def summary(self) -> dict[str, Any]:
        """``{"count", "tick_to_written_us": {p50, p99, max}, "submit_to_written_us": {...}}``."""
        n = min(self.count, self._tick.shape[0])
        out: dict[str, Any] = {"count": self.count}
        for name, ring, top in (
            ("tick_to_written_us", self._tick, self.max_tick_ns),
            ("submit_to_written_us", self._submit, self.max_submit_ns),
        ):
            if not n:
                out[name] = None
                continue
            p50, p99 = np.percentile(ring[:n], [50, 99])
            out[name] = {
                "p50": round(float(p50) / 1e3, 1),
                "p99": round(float(p99) / 1e3, 1),
                "max": round(top / 1e3, 1),
            }
        return out


@attrs.define
class _Queued:
    ts: int
    arrival: int
    cls: type | None  # None: an adopted order's fill, accounted without an event
    fields: dict[str, Any]
    fill: tuple[str, float, float, float] | None = None  # symbol, signed qty, price, fee


class BinanceVenue:
    """A live Binance USD-M venue with SimVenue's synchronous interface.

    Args:
        base_url: the REST root (``https://fapi.binance.com`` or the loopback's).
        ws_url: the websocket root (``wss://fstream.binance.com`` or the loopback's).
        credentials: from :func:`credentials_from_env`.
        symbols: the symbols the engine trades.
        log: a bound structlog logger.
        order_transport: ``"httpx"`` or ``"lean"`` (h11 on raw sockets; see
            :mod:`._transport`) for placing and cancelling orders.
        ws_transport: the user stream's websocket transport (``wsproto`` or
            ``trio-websocket``).
        pool_size: the lean transport's connections.
        timeout_s: the deadline of one REST exchange; an order past it is UNKNOWN.
        recv_window_ms: ``recvWindow`` of signed requests.
        unknown_grace_s: how long after sending an UNKNOWN order is first queried;
            ``None``: ``recv_window_ms`` + 1 s, after which a missing order cannot
            appear any more.
        check_interval_s: how often the resolver looks for orders to query.
        open_check_s: an open order not heard of for this long is queried.
        max_order_age_s: an order not sent this long after ``submit`` (rate limit,
            unavailable venue) is rejected ``stale`` instead of sent late.
        keepalive_s: listen key keep-alive period.
        fee_rate_estimate: fee rate assumed for a fill whose trade could not be
            fetched (its quantity and average price come from the order).
        drift_grace_s: how long the exchange's position and the fills' must
            disagree, unchanged and with no order of the symbol in flight, before
            a :class:`ReconciliationFailed` is raised. The ``ACCOUNT_UPDATE`` of a
            fill may arrive after its ``ORDER_TRADE_UPDATE`` (a separate message):
            comparing at once raised false drifts in live runs.
        journal: what to reconcile with at start: the live history (journal files,
            oldest first; see :func:`~engine.journal.journal_files`), one journal
            file, or a :class:`JournalView`.
        reconcile_policy: ``"adopt"`` or ``"cancel"`` open orders the journal
            does not account for (see :mod:`._reconcile`).
        cancel_on_exit: cancel open orders (shielded, 5 s) when :meth:`run` ends.
        seq: the event sequence shared with the actor (as SimVenue's).
        now_ns: wall clock for ``ts_init`` and local events, ns.
        http: an ``httpx.AsyncClient`` to use (tests inject a mock); one is
            made (and closed) by :meth:`run` otherwise.
        ws_connect: the user stream's websocket connector seam (see
            :class:`UserStream`); ``ws_transport``'s by default.
        limiter: the process's one rate limiter (shared with the live feed);
            one is made by :meth:`run` otherwise. Its clock must be
            ``server_clock.now``.
        server_clock: the server-time estimate ``limiter`` runs on; made by
            :meth:`run` when not given.
        startup_deadline_s: how long start-up may wait out rate limits, a ban
            and unanswered requests before giving up.
        startup_backoff_s: the first retry delay at start-up after no answer or
            a refused connection; doubles per failure, capped at 30 s.
        ledger: the engine's position ledger: the venue applies its fills and the
            positions reconciliation adopts to it (a new one by default).
        protective: the ``[exits]`` section whose stops rest on the exchange as
            STOP_MARKET ``closePosition`` orders while a position is held (see
            :mod:`._protect`); ``None``: none rest. A protective stop's fills go to
            the ledger and are journaled as :class:`FillRecovered` (from
            :meth:`take_ops`), so the next start's reconciliation counts them.
        protective_move_bps: move a protective stop only when its level moved
            by more than this.
        protective_fallback_bps: with ``protective``, where the stop rests (from
            the entry) when its stops give no level the venue can use (0: none).
        protective_stop: with ``protective``, rest the stop (STOP_MARKET).
        protective_target: with ``protective``, rest a TAKE_PROFIT_MARKET
            ``closePosition`` order at the final target (``target_bps`` or a ladder's
            last rung, see :mod:`._protect`; none configured: none rests).
    """

    write_inline = True
    """Write an order's request inside :meth:`submit` when nothing is queued ahead
    of it and the transport and rate limiter allow it at once (lean transport,
    plain TCP); else the sender task writes it. (Benchmarks turn it off to compare.)"""

    def __init__(
        self,
        *,
        base_url: str,
        ws_url: str,
        credentials: Credentials,
        symbols: list[str] | tuple[str, ...],
        log: FilteringBoundLogger,
        order_transport: str = "httpx",
        ws_transport: str = "wsproto",
        pool_size: int = 4,
        timeout_s: float = 5.0,
        recv_window_ms: int = 5000,
        unknown_grace_s: float | None = None,
        check_interval_s: float = 0.25,
        open_check_s: float = 30.0,
        max_order_age_s: float = 5.0,
        keepalive_s: float = 1800.0,
        fee_rate_estimate: float = 0.0005,
        drift_grace_s: float = 1.0,
        journal: Path | Sequence[Path] | JournalView | None = None,
        reconcile_policy: str = "cancel",
        cancel_on_exit: bool = True,
        seq: Iterator[int] | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        http: httpx.AsyncClient | None = None,
        ws_connect: Connector | None = None,
        limiter: RateLimiter | None = None,
        server_clock: ServerClock | None = None,
        startup_deadline_s: float = 300.0,
        startup_backoff_s: float = 1.0,
        ledger: PositionLedger | None = None,
        protective: ExitsSection | None = None,
        protective_move_bps: float = 5.0,
        protective_fallback_bps: float = 0.0,
        protective_stop: bool = True,
        protective_target: bool = True,
    ) -> None:
        if order_transport not in ("httpx", "lean"):
            raise ValueError(f"order_transport must be 'httpx' or 'lean', not {order_transport!r}")
        if reconcile_policy not in ("adopt", "cancel"):
            raise ValueError(
                f"reconcile_policy must be 'adopt' or 'cancel', not {reconcile_policy!r}"
            )
        if (limiter is None) != (server_clock is None):
            raise ValueError("give limiter and server_clock together (the limiter runs on it)")
        if not startup_deadline_s > 0:
            raise ValueError(f"startup_deadline_s must be > 0, not {startup_deadline_s!r}")
        self._base_url = base_url
        self._ws_url = ws_url
        self._credentials = credentials
        self.symbols = tuple(symbols)
        self._log = log
        self._order_transport_kind = order_transport
        self._ws_transport = ws_transport
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._recv_window_ms = recv_window_ms
        self._grace_s = (
            unknown_grace_s if unknown_grace_s is not None else recv_window_ms / 1000 + 1.0
        )
        self._check_interval_s = check_interval_s
        self._open_check_s = open_check_s
        self._max_order_age_s = max_order_age_s
        self._keepalive_s = keepalive_s
        self._fee_rate = fee_rate_estimate
        self._drift_grace_s = drift_grace_s
        self._journal = journal
        self._policy = reconcile_policy
        self._cancel_on_exit = cancel_on_exit
        self._seq = seq if seq is not None else itertools.count(1)
        self._now_ns = now_ns
        self._http = http
        self._ws_connect = ws_connect
        self._clock_resync_s = 300.0

        self._templates: dict[str, OrderTemplate] = {}
        self._client: BinanceRestClient | None = None
        self._limiter: RateLimiter | None = limiter
        self._server_clock: ServerClock | None = server_clock
        self._startup_deadline_s = startup_deadline_s
        self._startup_backoff_s = startup_backoff_s
        self._nursery: trio.Nursery | None = None
        self._adopted: dict[str, Decimal] = {}  # venue id -> cum qty, orders adopted at start
        self._adopted_symbols: dict[str, str] = {}  # venue id -> symbol
        self._outbox_send, self._outbox = trio.open_memory_channel[_Live](1024)
        self._outbox_used = 0  # orders in the outbox (its statistics() costs the order path)
        # Orders written inside submit, for the task that starts their answer readers
        # (a channel send costs the step less than a task spawn). At most pool_size
        # are in flight: the inline write needs a free transport slot.
        self._written_send, self._written = trio.open_memory_channel[
            tuple[_Live, NewOrderInFlight]
        ](1024)
        self._orders: dict[str, _Live] = {}  # by venue client order id
        self._by_engine_id: dict[str, str] = {}  # engine client order id -> venue id
        self._queue: list[_Queued] = []
        self._arrival = itertools.count()
        self._ops: list[tuple[int, int, type, dict[str, Any]]] = []
        self._bans_reported: set[float] = set()
        self._drift_reported: dict[str, float] = {}
        self._drift_seen: dict[str, tuple[tuple[float, float], float]] = {}
        self._position_updates: dict[str, int] = {}  # symbol -> ACCOUNT_UPDATEs seen
        self._fee_assets_warned: set[str] = set()
        self._ready = False
        self.protective: ProtectiveStops | None = None
        """The protective stops' core (``None`` without ``protective`` stops)."""
        if protective is not None and ProtectiveStops.wanted(
            protective,
            stop=protective_stop,
            target=protective_target,
            fallback_bps=protective_fallback_bps,
        ):
            self.protective = ProtectiveStops(
                protective,
                move_bps=protective_move_bps,
                now_ns=now_ns,
                fallback_bps=protective_fallback_bps,
                stop=protective_stop,
                target=protective_target,
            )
        self.protective_adopted: list[str] = []
        """Protective orders (stops, targets) a start found protecting a held position, and kept."""
        self.protective_cancelled: list[str] = []
        """Protective orders a start found orphaned (no position to protect), cancelled."""
        self._protective_cum: dict[str, Decimal] = {}  # protective id -> filled so far
        self._protective_symbol: dict[str, str] = {}

        self.step_quotes: dict[str, tuple[int, float, float]] = {}
        self.ledger = ledger if ledger is not None else PositionLedger()
        self.equity = 0.0
        self.equity_peak = 0.0
        self.max_drawdown = 0.0
        self.exchange_positions: dict[str, tuple[float, float]] = {}
        """Per symbol ``(position amount, entry price)`` from the latest ACCOUNT_UPDATE."""
        self.wallet_balances: dict[str, float] = {}
        """Per asset wallet balance from the latest ACCOUNT_UPDATE."""
        self.reconciliation: ReconcilePlan | None = None
        """What start-up reconciliation found and did (``None`` without a journal)."""
        self.stream: UserStream | None = None
        self.write_latency = WriteLatency()
        """Tick-to-written and submit-to-written times of the orders sent."""

    def __repr__(self) -> str:
        return f"BinanceVenue(base_url={self._base_url!r}, symbols={self.symbols!r})"

    # -- the synchronous interface ------------------------------------------------

    @property
    def seq(self) -> Iterator[int]:
        """The event sequence shared with the execution actor."""
        return self._seq

    @property
    def pending_orders(self) -> int:
        """Orders not yet in a final state (queued, in flight, unknown or open)."""
        return sum(1 for live in self._orders.values() if not live.terminal)

    def unknown_orders(self) -> list[str]:
        """Engine ids of orders whose state at the exchange is UNKNOWN now."""
        return sorted(
            live.order.client_order_id
            for live in self._orders.values()
            if live.state == _State.UNKNOWN
        )

    @property
    def accounts(self) -> dict[str, SymbolAccount]:
        """The ledger's accounts, by symbol."""
        return self.ledger.accounts

    def account(self, symbol: str) -> SymbolAccount:
        """The symbol's account in the ledger (created flat on first use)."""
        return self.ledger.account(symbol)

    def submit(self, order: SubmitOrder) -> list[OrderEvent]:
        """Check an order against its symbol's filters and queue it for sending.

        Returns:
            ``[]`` when queued (its events come from later :meth:`on_market`
            calls), or ``[OrderRejected]`` when it was refused here; nothing
            was sent then.
        """
        template = self._templates.get(order.symbol)
        reason = ""
        prepared: PreparedOrder | None = None
        venue_id = venue_client_order_id(
            order.symbol, order.client_order_id, order.ts_event, order.seq
        )
        if not self._ready:
            reason = "venue_not_ready"
        elif template is None:
            reason = "filter:UNKNOWN_SYMBOL"
        else:
            try:
                kind = _ORDER_TYPE_OF.get(order.order_type)
                tif = _TIME_IN_FORCE_OF.get(order.time_in_force)
                if kind is None or tif is None:
                    raise ValueError(order.order_type)  # as OrderType(...) would
                prepared = template.prepare(
                    order.side,
                    order.qty,
                    client_order_id=venue_id,
                    order_type=kind,
                    reduce_only=order.reduce_only,
                    ref_price=order.ref_price,
                    price=order.price if kind is _LIMIT else None,
                    time_in_force=tif,
                    trigger_price=order.stop_price if kind.conditional else None,
                )
            except FilterError as exc:
                reason = f"filter:{exc.reason}"
            except ValueError:
                reason = f"filter:ORDER_TYPE_{order.order_type}"
        if prepared is None:
            now = self._now_ns()
            self._log.warning(
                "order refused before sending",
                symbol=order.symbol,
                client_order_id=order.client_order_id,
                reason=reason,
            )
            return [self._local_rejection(order, reason, now)]
        submitted_ns = time.time_ns()
        if self.write_inline and self._client is not None and self._outbox_used == 0:
            # Nothing queued ahead of it: write the request now, in the caller's step,
            # rather than two task hand-overs later; a task reads the answer. The
            # order's record is made after the write, off the path to the wire.
            mark = _WriteMark()
            sent = self._client.new_order_now(prepared, written=mark)
            if sent is not None:
                now_t = trio.current_time()
                live = _Live(
                    order=order,
                    prepared=prepared,
                    venue_id=venue_id,
                    queued_at=now_t,
                    submitted_ns=submitted_ns,
                    inline=True,
                    state=_State.SENDING,
                    sent_at=now_t,
                )
                if mark.ns:
                    self._on_written(live, mark.ns)
                else:  # the socket took part of it: :meth:`_send` writes the rest
                    mark.then = functools.partial(self._on_written, live)
                self._orders[venue_id] = live
                self._by_engine_id[order.client_order_id] = venue_id
                try:
                    self._written_send.send_nowait((live, sent))
                except trio.WouldBlock:
                    self._spawn(self._send, live, sent)
                return []
        live = _Live(
            order=order,
            prepared=prepared,
            venue_id=venue_id,
            queued_at=trio.current_time(),
            submitted_ns=submitted_ns,
        )
        try:
            self._outbox_send.send_nowait(live)
            self._outbox_used += 1
        except trio.WouldBlock:
            return [self._local_rejection(order, "venue_queue_full", self._now_ns())]
        self._orders[venue_id] = live
        self._by_engine_id[order.client_order_id] = venue_id
        return []

    def _live_of(self, client_order_id: str) -> _Live | None:
        venue_id = self._by_engine_id.get(client_order_id)
        live = None if venue_id is None else self._orders.get(venue_id)
        return None if live is None or live.terminal else live

    def cancel(self, command: CancelOrder) -> list[OrderEvent]:
        """Cancel one open order (``DELETE /fapi/v1/order``, or ``/fapi/v1/algoOrder``
        for a conditional one).

        Returns:
            ``[OrderCanceled]`` for an order not sent yet (cancelled here), else
            ``[]``: its :class:`OrderCanceled` (or the fills that beat the cancel)
            come from later :meth:`on_market` calls. ``[]`` too for an order
            already final or unknown here.
        """
        live = self._live_of(command.client_order_id)
        if live is None or live.cancel_requested:
            return []
        live.cancel_requested = True
        if live.state == _State.QUEUED:
            return self._local_cancel(live, command.ts_event, command.reason)
        if live.state != _State.SENDING:  # a SENDING order is cancelled once answered
            self._spawn(self._cancel_one, live)
        return []

    def replace(self, command: ReplaceOrder) -> list[OrderEvent]:
        """Amend an open LIMIT order in place (``PUT /fapi/v1/order``).

        Price and quantity are rounded as a new order's. An order not yet
        acknowledged is amended once it is. Returns ``[]`` (or
        ``[OrderRejected]``-free: a refused amendment is logged, the order keeps
        its price); the :class:`OrderReplaced` comes from a later
        :meth:`on_market`, or an :class:`OrderCanceled` where Binance cancels
        instead (a quantity at most the filled one, a GTX order that would take).
        """
        live = self._live_of(command.client_order_id)
        if live is None or live.cancel_requested:
            return []
        if live.prepared.order_type is not OrderType.LIMIT:
            self._log.warning(
                "amend of a non-limit order ignored",
                symbol=live.order.symbol,
                client_order_id=live.order.client_order_id,
            )
            return []
        if live.venue_order_id is None or live.state in (_State.QUEUED, _State.SENDING):
            live.pending_replace = command
            return []
        self._spawn(self._amend, live, command)
        return []

    def _local_rejection(self, order: SubmitOrder, reason: str, now: int) -> OrderRejected:
        return OrderRejected(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            purpose=order.purpose,
            reason=reason,
            ts_event=now,
            ts_init=now,
            seq=next(self._seq),
            correlation_id=order.correlation_id,
        )

    def on_market(self, ticks: dict[str, Ticks]) -> list[OrderEvent]:
        """Hand out the order events that arrived since the last call; mark the accounts.

        Args:
            ticks: the step's market events per symbol (QUOTE rows give the marks).

        Returns:
            The events in ``(exchange time, arrival)`` order.
        """
        events = self._drain()
        self.step_quotes = {}
        for symbol, batch in ticks.items():
            rows = (batch.kind == _QUOTE).nonzero()[0]
            if not rows.size:
                continue
            i = rows[-1]  # the step's last quote
            last = (int(batch.ts[i]), float(batch.bid[i]), float(batch.ask[i]))
            self.step_quotes[symbol] = last
            self.ledger.mark(symbol, 0.5 * (last[1] + last[2]))
        self._mark()
        self._check_drift()
        if self.protective is not None and self._ready:
            now = self._now_ns()
            for symbol in self.symbols:
                self._protect(
                    self.protective.on_step(
                        symbol,
                        self.ledger.qty(symbol),
                        self.ledger.avg_price(symbol),
                        ticks.get(symbol),
                        now,
                    )
                )
        return events

    # -- protective stops -----------------------------------------------------------

    def _protect(self, actions: list[StopAction]) -> None:
        for action in actions:
            if isinstance(action, PlaceStop):
                self._protective_symbol[action.client_algo_id] = action.symbol
                self._protective_cum[action.client_algo_id] = _ZERO
                self._spawn(self._place_protective, action)
            else:
                self._spawn(self._cancel_protective, action)

    async def _adopt_protective(self, client: BinanceRestClient) -> None:
        """At start: adopt the protective orders that still protect a held position
        (one stop and one target per symbol, on its closing side; targets only while
        they rest: :meth:`ProtectiveStops.adopts`); cancel the other ``ps-``/``pt-`` orders."""
        assert self.protective is not None
        rows = await client.open_algo_orders()
        kept: set[tuple[str, str]] = set()
        for row in sorted(rows, key=lambda r: int(r.get("algoId", 0)), reverse=True):
            cid = str(row.get("clientAlgoId", ""))
            symbol = str(row.get("symbol", ""))
            if not is_protective_id(cid) or symbol not in self.symbols:
                continue
            kind = protective_kind(cid)
            qty = self.ledger.qty(symbol)
            closing = "SELL" if qty > 0 else "BUY"
            if (
                qty != 0.0
                and row.get("side") == closing
                and (symbol, kind) not in kept
                and self.protective.adopts(kind)
            ):
                kept.add((symbol, kind))
                trigger = float(row.get("triggerPrice", 0.0))
                self.protective.adopt(symbol, cid, Side[closing], trigger)
                self._protective_symbol[cid] = symbol
                self._protective_cum[cid] = _ZERO
                self.protective_adopted.append(cid)
                self._log.info(f"protective {kind} adopted", symbol=symbol, client_order_id=cid,
                               trigger=trigger)  # fmt: skip
                continue
            try:
                await client.cancel_algo_order(client_algo_id=cid)
            except RequestRejectedError as exc:
                if exc.code not in (_NOT_FOUND, _UNKNOWN_ORDER):
                    raise
            self.protective_cancelled.append(cid)
            self._log.warning(f"orphan protective {kind} cancelled", symbol=symbol,
                              client_order_id=cid)  # fmt: skip

    async def _place_protective(self, action: PlaceStop) -> None:
        assert self._client is not None and self.protective is not None
        try:
            prepared = self._templates[action.symbol].prepare(
                action.side,
                abs(self.ledger.qty(action.symbol)) or 1.0,  # not sent: closePosition
                client_order_id=action.client_algo_id,
                order_type=action.order_type,
                trigger_price=action.trigger,
                close_position=True,
            )
            await self._client.new_order(prepared, priority=Priority.CLOSE)
        except FilterError as exc:
            self._log.warning(f"protective {action.kind} refused before sending",
                              reason=exc.reason, symbol=action.symbol,
                              price=float(action.trigger))  # fmt: skip
            self._protective_gone(action.client_algo_id)
            self.protective.on_refused(action.symbol, action.client_algo_id)
            return
        except RequestRejectedError as exc:
            self._log.warning(
                f"protective {action.kind} refused",
                symbol=action.symbol,
                price=float(action.trigger),  # ``trigger`` is the exit's reason (a keyword)
                error=exc.msg,
                **{"error.code": str(exc.code)},
            )
            self._protective_gone(action.client_algo_id)
            self.protective.on_refused(action.symbol, action.client_algo_id)
            return
        except BinanceError as exc:
            # It may rest at the exchange: the next start finds and cancels or adopts it.
            self._log.warning(f"protective {action.kind} not confirmed", symbol=action.symbol,
                              client_order_id=action.client_algo_id, error=str(exc))  # fmt: skip
            self.protective.on_refused(action.symbol, action.client_algo_id)
            return
        self._log.info(f"protective {action.kind} placed", symbol=action.symbol,
                       price=float(action.trigger),
                       client_order_id=action.client_algo_id)  # fmt: skip
        self._protect(self.protective.on_placed(action.symbol, action.client_algo_id))

    async def _cancel_protective(self, action: CancelStop) -> None:
        assert self._client is not None
        try:
            await self._client.cancel_algo_order(client_algo_id=action.client_algo_id)
        except RequestRejectedError as exc:
            # Gone already: triggered, or expired with its position.
            self._log.info(f"protective {protective_kind(action.client_algo_id)} not cancelled",
                           client_order_id=action.client_algo_id,
                           error=exc.msg, **{"error.code": str(exc.code)})  # fmt: skip
            return
        except BinanceError as exc:
            self._log.warning(f"protective {protective_kind(action.client_algo_id)} cancel failed",
                              client_order_id=action.client_algo_id, error=str(exc))  # fmt: skip
            return
        self._log.info(f"protective {protective_kind(action.client_algo_id)} cancelled",
                       symbol=action.symbol,
                       client_order_id=action.client_algo_id, reason=action.reason)  # fmt: skip

    def _protective_gone(self, client_algo_id: str) -> None:
        self._protective_cum.pop(client_algo_id, None)
        self._protective_symbol.pop(client_algo_id, None)

    def _on_protective_fill(self, update: OrderTradeUpdate) -> None:
        """A protective stop's triggered order: its fills go to the ledger and the journal."""
        o = update.order
        seen = self._protective_cum[o.client_order_id]
        if o.cum_qty > seen:
            qty = o.cum_qty - seen
            price = o.last_price if qty == o.last_qty else o.avg_price
            side = Side.BUY if o.side == "BUY" else Side.SELL
            fee = float(o.commission) if o.commission_asset in _FEE_ASSETS else 0.0
            ts = (o.trade_time_ms or update.event_time_ms) * 1_000_000
            self._queue.append(
                _Queued(
                    ts=ts,
                    arrival=next(self._arrival),
                    cls=None,
                    fields={},
                    fill=(o.symbol, int(side) * float(qty), float(price), fee),
                )
            )
            self._ops.append(
                (
                    ts,
                    next(self._arrival),
                    FillRecovered,
                    {
                        "symbol": o.symbol,
                        "client_order_id": o.client_order_id,
                        "venue_client_order_id": o.client_order_id,
                        "side": side,
                        "qty": float(qty),
                        "price": float(price),
                        "fee": fee,
                        "trade_id": o.trade_id,
                        "ts_event": ts,
                        "ts_init": self._now_ns(),
                        "correlation_id": f"protective_{protective_kind(o.client_order_id)}",
                    },
                )
            )
            self._protective_cum[o.client_order_id] = o.cum_qty
            self._log.warning(f"protective {protective_kind(o.client_order_id)} filled",
                              symbol=o.symbol, qty=qty, price=price,
                              client_order_id=o.client_order_id)  # fmt: skip
        if fsm.status_from_exchange(o.status) in fsm.TERMINAL_STATUSES:
            self._protective_gone(o.client_order_id)

    def cancel_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """Cancel every order not yet final.

        Orders not sent yet are cancelled here (returned now); for the others a
        cancel goes to the exchange (priority CANCEL, per symbol) and their
        :class:`OrderCanceled` (or fills, if they filled first) come later.
        """
        out: list[OrderEvent] = []
        symbols: set[str] = set()
        for live in self._orders.values():
            if live.terminal or live.cancel_requested:
                continue
            live.cancel_requested = True
            if live.state == _State.QUEUED:
                out.extend(self._local_cancel(live, ts, reason))
            elif live.prepared.conditional:
                # DELETE allOpenOrders does not reach the algo service.
                if live.state != _State.SENDING:
                    self._spawn(self._cancel_one, live)
                live.next_check = min(live.next_check, trio.current_time() + 1.0)
            else:
                symbols.add(live.order.symbol)
                live.next_check = min(live.next_check, trio.current_time() + 1.0)
        for symbol in sorted(symbols):
            self._log.warning("cancelling open orders", symbol=symbol, reason=reason)
            self._spawn(self._cancel_symbol, symbol)
        return out

    def expire_all(self, ts: int, reason: str) -> list[OrderEvent]:
        """The market ended: cancel what is still open (live orders cannot expire locally)."""
        return self.cancel_all(ts, reason)

    def take_closed_trades(self) -> list[float]:
        """PnL after fees of trades closed since the last call, in symbol order."""
        return self.ledger.take_closed_trades()

    def on_resume(self) -> None:
        """An operator resumed trading: a position drift that persists is reported again.

        A drift is reported once per symbol and amount, and the halt it causes lasts
        until an operator resumes; if the exchange still disagrees with the ledger
        then, the check fires again after ``drift_grace_s`` instead of letting the
        engine trade on a position known to be wrong.
        """
        self._drift_reported.clear()
        self._drift_seen.clear()

    def take_ops(self) -> list[OpsEvent]:
        """Operational events since the last call (:class:`RateLimitBanned`,
        :class:`ReconciliationFailed`), in time order; journal them and pass them to
        risk with the step's other ops."""
        self._ops.sort(key=lambda item: (item[0], item[1]))
        # (FillRecovered too: a protective stop's fill, journaled for reconciliation.)
        out = [cls(**fields, seq=next(self._seq)) for _ts, _n, cls, fields in self._ops]
        self._ops.clear()
        return out

    # -- background ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, reconcile, then send orders and follow them until cancelled.

        Raises:
            StartupDeadlineError: start-up waited (429, 418, no answer) past
                ``startup_deadline_s``, or a ban outlasts it; nothing was traded.
            BinanceError: start-up failed (credentials, exchange info, user stream).
            ReconciliationError: the journal and the exchange disagree in a way
                that cannot be explained; nothing was traded.

        On cancellation, open orders are cancelled (shielded, 5 s at most) when
        ``cancel_on_exit``, and the listen key is closed.
        """
        async with _maybe_client(self._http) as http:
            lean: OrderTransport | None = None
            if self._order_transport_kind == "lean":
                lean = LeanTransport(self._base_url, pool_size=self._pool_size)
            try:
                await self._run(http, lean, task_status)
            finally:
                if lean is not None:
                    with trio.CancelScope(shield=True):
                        await lean.aclose()

    async def _run(
        self,
        http: httpx.AsyncClient,
        lean: OrderTransport | None,
        task_status: trio.TaskStatus[None],
    ) -> None:
        if self._server_clock is None or self._limiter is None:
            self._server_clock = ServerClock()
            self._limiter = RateLimiter(DEFAULT_LIMITS, clock=self._server_clock.now)
        clock, limiter = self._server_clock, self._limiter
        client = self._make_client(http, lean, limiter, clock)
        deadline = trio.current_time() + self._startup_deadline_s
        await self._patiently("server time", client.sync_time, deadline)
        info = await self._patiently("exchangeInfo", client.exchange_info, deadline)
        limits = rate_limits_from_exchange_info(info)
        if limits:
            # The same limiter: the live feed shares it and keeps what it has counted.
            limiter.set_limits(limits)
        self._client = client
        self._templates = {
            s: t for s, t in templates_from_exchange_info(info).items() if s in self.symbols
        }
        missing = sorted(set(self.symbols) - set(self._templates))
        if missing:
            raise BinanceError(f"exchangeInfo lists no {', '.join(missing)}")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.stream = UserStream(
                client,
                self._ws_url,
                log=self._log,
                transport=self._ws_transport,
                keepalive_s=self._keepalive_s,
                connect=self._ws_connect,
            )
            await self._patiently(
                "user stream", lambda: nursery.start(self.stream.run, self._on_stream), deadline
            )
            nursery.start_soon(self._resync_clock, client)
            if self._journal is not None:
                if isinstance(self._journal, JournalView):
                    view = self._journal
                elif isinstance(self._journal, Path):
                    view = journal_view_from_files([self._journal])
                else:
                    view = journal_view_from_files(list(self._journal))
                # Read, plan, cancel, read again: a retry after a failure part-way
                # starts over from what the exchange holds then.
                plan = await self._patiently(
                    "reconciliation",
                    lambda: reconcile(
                        client, view, symbols=self.symbols, policy=self._policy, log=self._log
                    ),
                    deadline,
                )
                # The exchange's time once its positions were read: the next start's
                # reconciliation questions only trades after it.
                plan = attrs.evolve(plan, exchange_time_ms=clock.now_ms())
                self.reconciliation = plan
                for symbol in self.symbols:
                    # Every reader of the ledger (risk, the symbol actors, the report)
                    # starts from the exchange's position, flat included.
                    qty, price = plan.positions.get(symbol, (_ZERO, _ZERO))
                    self.ledger.adopt(symbol, float(qty), float(price))
                for adopted in plan.adopt:
                    self._adopted[adopted.client_order_id] = adopted.executed_qty
                    self._adopted_symbols[adopted.client_order_id] = adopted.symbol
            if self.protective is not None:
                await self._patiently(
                    "protective stops", lambda: self._adopt_protective(client), deadline
                )
            if isinstance(lean, LeanTransport):
                # The first order finds a connection open (the inline write needs one).
                await lean.warm_up()
            self._ready = True
            nursery.start_soon(self._sender)
            nursery.start_soon(self._readers)
            nursery.start_soon(self._resolver)
            self._log.info(
                "binance venue ready",
                symbols=list(self.symbols),
                order_transport=self._order_transport_kind,
            )
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._ready = False
                if self._cancel_on_exit:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await self._cancel_everything()

    async def _patiently(self, step: str, call: Callable[[], Awaitable[_T]], deadline: float) -> _T:
        """Run one start-up step, waiting out what passes, until ``deadline`` (Trio time).

        A 429: the limiter holds the retry until ``Retry-After``. A 418: sleep
        until the ban ends (give up at once if it ends after the deadline). No
        answer, a 5xx, a refused connection: retry after a capped exponential
        backoff. Each wait is logged. Anything else propagates.

        Raises:
            StartupDeadlineError: still not done at ``deadline``.
        """
        assert self._limiter is not None
        limiter = self._limiter
        failures = 0
        last = "no answer"
        while True:
            with trio.move_on_at(deadline):
                try:
                    return await call()
                except RateLimitedError as exc:
                    last = f"429 {exc.msg}"
                    self._log.warning(
                        "start-up rate limited (429); waiting for Retry-After",
                        step=step,
                        wait_s=round(limiter.blocked_for(), 3),
                        deadline_in_s=round(deadline - trio.current_time(), 3),
                    )
                    continue  # the limiter holds the next attempt
                except IpBannedError as exc:
                    last = f"418 {exc.msg}"
                    wait_s = limiter.banned_for()
                    if trio.current_time() + wait_s > deadline:
                        raise self._startup_failed(step, last) from exc
                    self._log.warning(
                        "start-up IP banned (418); waiting for the ban to end",
                        step=step,
                        wait_s=round(wait_s, 3),
                        deadline_in_s=round(deadline - trio.current_time(), 3),
                    )
                    await trio.sleep(wait_s)
                    continue
                except (UnknownOrderStateError, ServiceUnavailableError, TransportError) as exc:
                    # Safe to repeat: start-up only reads, (re)creates the listen key,
                    # and cancels orders that reconciliation finds again if still open.
                    last = str(exc)
                    failures += 1
                    wait_s = min(30.0, self._startup_backoff_s * 2 ** (failures - 1))
                    self._log.warning(
                        "start-up request failed; retrying",
                        step=step,
                        error=last,
                        wait_s=wait_s,
                        deadline_in_s=round(deadline - trio.current_time(), 3),
                    )
                    await trio.sleep(wait_s)
                    continue
            raise self._startup_failed(step, last)

    def _startup_failed(self, step: str, last: str) -> StartupDeadlineError:
        error = StartupDeadlineError(
            f"venue start-up not done within venue.startup_deadline_s = "
            f"{self._startup_deadline_s:g} s (at {step}: {last}); nothing traded"
        )
        self._log.error("venue start-up gave up", step=step, error=last)
        return error

    async def _resync_clock(self, client: BinanceRestClient) -> None:
        # Not ServerClock.run: its first sync would propagate an error (a 418 ban).
        while True:
            await trio.sleep(self._clock_resync_s)
            try:
                await client.sync_time()
            except BinanceError as exc:
                self._log.warning("server time sync failed", error=str(exc))

    def _make_client(
        self,
        http: httpx.AsyncClient,
        lean: OrderTransport | None,
        limiter: RateLimiter,
        clock: ServerClock,
    ) -> BinanceRestClient:
        return BinanceRestClient(
            http,
            credentials=self._credentials,
            limiter=limiter,
            clock=clock,
            base_url=self._base_url,
            recv_window_ms=self._recv_window_ms,
            timeout_s=self._timeout_s,
            order_transport=lean,
        )

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _cancel_everything(self) -> None:
        open_ = [o for o in self._orders.values() if not o.terminal]
        for symbol in sorted({o.order.symbol for o in open_ if not o.prepared.conditional}):
            await self._cancel_symbol(symbol)
        for live in open_:
            if live.prepared.conditional:
                await self._cancel_one(live)

    async def _cancel_one(self, live: _Live) -> None:
        """Cancel one order at the exchange; its final event comes from the answer
        or the stream (a cancel that lost the race to a fill changes nothing)."""
        assert self._client is not None
        try:
            if live.prepared.conditional:
                await self._client.cancel_algo_order(client_algo_id=live.venue_id)
                self._transition(
                    live, fsm.Canceled(), self._now_ns(), OrderCanceled,
                    cum_qty=float(live.cum_qty), reason="canceled",
                )  # fmt: skip
                return
            data = await self._client.cancel_order(live.order.symbol, client_order_id=live.venue_id)
        except RequestRejectedError as exc:
            # Unknown order: already final (its event is on its way) or never placed.
            self._log.warning(
                "cancel refused",
                venue_id=live.venue_id,
                error=exc.msg,
                **{"error.code": str(exc.code)},
            )
            live.next_check = min(live.next_check, trio.current_time() + 1.0)
            return
        except BinanceError as exc:
            self._log.warning("cancel failed", venue_id=live.venue_id, error=str(exc))
            live.next_check = min(live.next_check, trio.current_time() + 1.0)
            return
        self._on_snapshot(live, data, from_query=False)

    async def _amend(self, live: _Live, command: ReplaceOrder) -> None:
        """``PUT /fapi/v1/order`` for one order; the answer (or the stream's
        ``AMENDMENT``) becomes :class:`OrderReplaced`."""
        assert self._client is not None
        template = self._templates[live.order.symbol]
        try:
            params = template.amend_params(
                live.order.side, command.qty, command.price, live.venue_id
            )
            data = await self._client.amend_order(params)
        except FilterError as exc:
            self._log.warning(
                "amend refused before sending", venue_id=live.venue_id, reason=exc.reason
            )
            return
        except RequestRejectedError as exc:
            if exc.code != _NO_NEED_TO_MODIFY:
                self._log.warning(
                    "amend refused",
                    venue_id=live.venue_id,
                    error=exc.msg,
                    **{"error.code": str(exc.code)},
                )
                live.next_check = min(live.next_check, trio.current_time() + 1.0)
            return
        except BinanceError as exc:
            self._log.warning("amend failed", venue_id=live.venue_id, error=str(exc))
            live.next_check = min(live.next_check, trio.current_time() + 1.0)
            return
        status = str(data.get("status", ""))
        ts_ms = int(data.get("updateTime") or self._now_ns() // 1_000_000)
        if status in ("NEW", "PARTIALLY_FILLED"):
            self._replaced(live, Decimal(str(data["origQty"])), Decimal(str(data["price"])), ts_ms)
        self._on_snapshot(live, data, from_query=False)

    def _replaced(self, live: _Live, qty: Decimal, price: Decimal, ts_ms: int) -> None:
        if live.amended == (qty, price):
            return  # the answer and the stream both report it
        if self._transition(
            live, fsm.Replaced(), ts_ms * 1_000_000, OrderReplaced,
            qty=float(qty), price=float(price),
        ):  # fmt: skip
            live.amended = (qty, price)
            live.order_qty = qty

    def _trigger(self, live: _Live, ts_ms: int, price: Decimal) -> None:
        """A conditional order triggered (once; ``price`` is its trigger price)."""
        if live.machine.state in (_O.SUBMITTED, _O.NEW):
            self._transition(
                live, fsm.Triggered(), ts_ms * 1_000_000, OrderTriggered,
                trigger_price=float(price),
            )  # fmt: skip

    def _on_algo(
        self,
        live: _Live,
        status: str,
        ts_ms: int,
        *,
        algo_id: int | None,
        trigger: Decimal,
        reason: str = "",
    ) -> None:
        """Apply a conditional order's algo status (from ``ALGO_UPDATE`` or REST)."""
        if algo_id is not None and live.venue_order_id is None:
            live.venue_order_id = algo_id
        if status != "REJECTED" or live.machine.state is not _O.SUBMITTED:
            self._accept(live, ts_ms)
        ts = ts_ms * 1_000_000
        cum = float(live.cum_qty)
        if status in ("TRIGGERING", "TRIGGERED", "FINISHED"):
            self._trigger(live, ts_ms, trigger)
            if status == "FINISHED" and not live.terminal:
                # The triggered order's own updates say how it ended; make sure.
                live.next_check = min(live.next_check, trio.current_time() + 1.0)
        elif status == "CANCELED":
            self._transition(
                live, fsm.Canceled(), ts, OrderCanceled, cum_qty=cum, reason="canceled"
            )
        elif status == "EXPIRED":
            self._transition(live, fsm.Expired(), ts, OrderExpired, cum_qty=cum, reason="expired")
        elif status == "REJECTED":
            if live.machine.state is _O.NEW:
                self._trigger(live, ts_ms, trigger)  # refused when it triggered
            why = reason or "rejected"
            self._transition(live, fsm.Rejected(reason=why), ts, OrderRejected, reason=why)
        elif status != "NEW":
            self._log.error("unknown algo status", status=status, venue_id=live.venue_id)

    async def _cancel_symbol(self, symbol: str) -> None:
        assert self._client is not None
        try:
            await self._client.cancel_all(symbol)
        except BinanceError as exc:
            self._log.error("cancel of open orders failed", symbol=symbol, error=str(exc))

    async def _readers(self) -> None:
        """Start the answer reader of each order :meth:`submit` wrote inline."""
        async for live, sent in self._written:
            self._spawn(self._send, live, sent)

    async def _sender(self) -> None:
        async with trio.open_nursery() as nursery:
            async for live in self._outbox:
                batch = [live]
                while True:
                    try:
                        batch.append(self._outbox.receive_nowait())
                    except trio.WouldBlock:
                        break
                self._outbox_used -= len(batch)
                # Closing orders first; the limiter keeps that order when it must wait.
                batch.sort(key=lambda item: (item.priority, item.order.seq))
                for item in batch:
                    nursery.start_soon(self._send, item)

    def _on_written(self, live: _Live, now: int = 0) -> None:
        """The order's request was written, at ``now`` (0: this call's time)."""
        if live.written_ns:
            return  # a resend: the order's time is its first write
        now = now or time.time_ns()
        live.written_ns = now
        tick_ns = now - live.order.ts_event
        submit_ns = now - live.submitted_ns
        self.write_latency.record(tick_ns, submit_ns)
        self._log.info(
            "order written",
            symbol=live.order.symbol,
            client_order_id=live.order.client_order_id,
            purpose=live.order.purpose.value,
            latency_ms=tick_ns / 1e6,
            submit_ms=submit_ns / 1e6,
            queued=0 if live.inline else 1,
        )

    async def _send(self, live: _Live, sent: NewOrderInFlight | None = None) -> None:
        """Send one order (or, with ``sent``, read the answer to its inline write).

        Resends as the failure allows (see the module docstring); on cancellation
        an order in flight stays SENDING (the venue is stopping).
        """
        assert self._client is not None
        order = live.order
        attempts = 0
        written = functools.partial(self._on_written, live)
        while True:
            if sent is None:
                if live.cancel_requested:
                    self._queue_cancel_local(live, "canceled before sending")
                    return
                age = trio.current_time() - live.queued_at
                if age > self._max_order_age_s:
                    self._reject(live, f"stale: not sent within {self._max_order_age_s} s")
                    return
                live.state = _State.SENDING
                live.sent_at = trio.current_time()
            attempts += 1
            try:
                if sent is not None:
                    inline, sent = sent, None
                    answer = await self._client.finish_new_order(inline)
                else:
                    answer = await self._client.new_order(
                        live.prepared,
                        send_by=live.queued_at + self._max_order_age_s,
                        written=written,
                    )
            except SendDeadlineError:
                # Held by the rate limiter: a decision this old is not sent late.
                live.state = _State.QUEUED
                self._reject(live, f"stale: not sent within {self._max_order_age_s} s")
                return
            except UnknownOrderStateError as exc:
                self._unknown(live, str(exc))
                return
            except IpBannedError as exc:
                self._banned(live, exc)
                self._reject(live, "418 ip banned")
                return
            except RateLimitedError:
                live.state = _State.QUEUED
                continue  # the limiter holds the next attempt until Retry-After
            except ServiceUnavailableError as exc:
                live.state = _State.QUEUED
                if attempts >= 3:
                    self._reject(live, f"unavailable: {exc.msg}")
                    return
                await trio.sleep(0.2 * attempts)
                continue
            except TimestampSkewError as exc:
                self._reject(live, f"-1021 {exc.msg}")
                return
            except OrderRejectedError as exc:
                if exc.code == _DUPLICATE_ID:
                    # An earlier attempt with this id was placed: find out what it is.
                    self._unknown(live, "duplicate clientOrderId", delay=0.0)
                    return
                self._reject(live, f"{exc.code} {exc.msg}")
                return
            except BinanceError as exc:
                self._reject(live, f"{exc.code} {exc.msg}" if exc.code else exc.msg)
                return
            self._log.info(
                "order placed",
                symbol=order.symbol,
                client_order_id=order.client_order_id,
                venue_client_order_id=live.venue_id,
                latency_ms=round((trio.current_time() - live.sent_at) * 1000, 3),
            )
            self._on_snapshot(live, answer, from_query=False)
            if live.cancel_requested and not live.terminal:
                self._spawn(self._cancel_one, live)
            elif live.pending_replace is not None and not live.terminal:
                command, live.pending_replace = live.pending_replace, None
                self._spawn(self._amend, live, command)
            return

    async def _resolver(self) -> None:
        while True:
            await trio.sleep(self._check_interval_s)
            now = trio.current_time()
            for live in list(self._orders.values()):
                if live.terminal:
                    del self._orders[live.venue_id]
                    # Its engine id too (a live run's memory must not grow per order);
                    # unless the id was sent again under a newer venue id.
                    engine_id = live.order.client_order_id
                    if self._by_engine_id.get(engine_id) == live.venue_id:
                        del self._by_engine_id[engine_id]
                    continue
                if not live.checking and live.next_check <= now:
                    live.checking = True
                    self._spawn(self._check, live)

    async def _check(self, live: _Live) -> None:
        assert self._client is not None
        try:
            if live.prepared.conditional:
                data = await self._check_algo(live)
                if data is None:
                    return
            else:
                data = await self._client.query_order(
                    live.order.symbol, client_order_id=live.venue_id
                )
        except RequestRejectedError as exc:
            if exc.code == _NOT_FOUND and live.state == _State.UNKNOWN:
                if trio.current_time() - live.sent_at >= self._grace_s:
                    self._reject(live, "not_placed: unknown order not found after grace period")
                else:
                    live.next_check = live.sent_at + self._grace_s
            else:
                self._log.warning("order query refused", venue_id=live.venue_id, error=str(exc))
                live.next_check = trio.current_time() + self._open_check_s
            return
        except BinanceError as exc:
            self._log.warning("order query failed", venue_id=live.venue_id, error=str(exc))
            live.next_check = trio.current_time() + max(1.0, self._check_interval_s)
            return
        finally:
            live.checking = False
        executed = Decimal(str(data.get("executedQty", "0")))
        if executed > live.cum_qty and data.get("orderId") is not None:
            live.venue_order_id = int(data["orderId"])
            placed_ms = data.get("time") or data.get("updateTime")
            self._accept(live, int(placed_ms or self._now_ns() // 1_000_000))
            await self._recover_trades(live, live.venue_order_id)
        self._on_snapshot(live, data, from_query=True)

    async def _check_algo(self, live: _Live) -> dict[str, Any] | None:
        """Query a conditional order; once triggered, the order it placed (returned,
        to be applied as any order's query), else ``None`` (applied here)."""
        assert self._client is not None
        data = await self._client.query_algo_order(client_algo_id=live.venue_id)
        self._on_algo_snapshot(live, data)
        actual = str(data.get("actualOrderId") or "")
        if live.terminal or not actual:
            if not live.terminal:
                live.next_check = trio.current_time() + self._open_check_s
            return None
        return await self._client.query_order(live.order.symbol, order_id=int(actual))

    def _on_algo_snapshot(self, live: _Live, data: dict[str, Any]) -> None:
        ts_ms = int(data.get("updateTime") or data.get("createTime") or self._now_ns() // 1_000_000)
        self._on_algo(
            live,
            str(data.get("algoStatus", "NEW")),
            ts_ms,
            algo_id=int(data["algoId"]) if data.get("algoId") is not None else None,
            trigger=Decimal(str(data.get("triggerPrice", "0"))),
        )
        if not live.terminal and live.state != _State.UNKNOWN:
            live.next_check = trio.current_time() + self._open_check_s

    async def _recover_trades(self, live: _Live, order_id: int) -> None:
        assert self._client is not None
        try:
            trades = await self._client.user_trades(live.order.symbol, order_id=order_id)
        except BinanceError as exc:
            self._log.warning("trades not fetched", venue_id=live.venue_id, error=str(exc))
            return
        cum = _ZERO
        for trade in sorted(trades, key=lambda t: int(t.get("id", 0))):
            if int(trade.get("orderId", order_id)) != order_id:
                continue
            qty = Decimal(str(trade["qty"]))
            cum += qty
            if cum <= live.cum_qty:
                continue
            fresh = min(qty, cum - live.cum_qty)
            self._fill(
                live,
                cum,
                fresh,
                Decimal(str(trade["price"])),
                Decimal(str(trade.get("commission", "0"))),
                str(trade.get("commissionAsset", "USDT")),
                int(trade.get("time", 0)),
                "MAKER" if trade.get("maker") else "TAKER",
            )

    # -- order state --------------------------------------------------------------

    def _unknown(self, live: _Live, why: str, *, delay: float | None = None) -> None:
        live.state = _State.UNKNOWN
        wait = self._grace_s if delay is None else delay
        live.next_check = min(live.next_check, trio.current_time() + wait)
        self._log.warning(
            "order state unknown",
            symbol=live.order.symbol,
            client_order_id=live.order.client_order_id,
            venue_client_order_id=live.venue_id,
            reason=why,
            query_in_s=wait,
        )

    def _banned(self, live: _Live, exc: IpBannedError) -> None:
        limiter, clock = self._limiter, self._server_clock
        if limiter is None or clock is None or not math.isfinite(limiter.banned_until):
            return
        if limiter.banned_until in self._bans_reported:
            return  # this ban was reported already
        self._bans_reported.add(limiter.banned_until)
        now = self._now_ns()
        until_ns = now + int(limiter.banned_for() * 1e9)
        self._log.error("ip banned (418)", until_ts=until_ns, error=exc.msg)
        self._ops.append(
            (
                now,
                next(self._arrival),
                RateLimitBanned,
                {
                    "symbol": live.order.symbol,
                    "until_ts": until_ns,
                    "reason": f"418 {exc.msg}",
                    "ts_event": now,
                    "ts_init": now,
                },
            )
        )

    def _reject(self, live: _Live, reason: str) -> None:
        self._log.warning(
            "order rejected",
            symbol=live.order.symbol,
            client_order_id=live.order.client_order_id,
            reason=reason,
        )
        self._transition(
            live, fsm.Rejected(reason=reason), self._now_ns(), OrderRejected, reason=reason
        )

    def _queue_cancel_local(self, live: _Live, reason: str) -> None:
        self._transition(
            live, fsm.Canceled(), self._now_ns(), OrderCanceled, cum_qty=0.0, reason=reason
        )

    def _local_cancel(self, live: _Live, ts: int, reason: str) -> list[OrderEvent]:
        """Cancel an order never sent; the event is returned now (not queued)."""
        live.machine.handle(fsm.Canceled())
        live.state = _State.DONE
        order = live.order
        return [
            OrderCanceled(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                purpose=order.purpose,
                cum_qty=0.0,
                reason=reason,
                ts_event=ts,
                ts_init=ts,
                seq=next(self._seq),
                correlation_id=order.correlation_id,
            )
        ]

    def _transition(self, live: _Live, event: object, ts_ns: int, cls: type, **fields: Any) -> bool:
        """Queue ``cls`` when the order machine takes ``event``; False if it cannot."""
        if fsm.ORDER_TABLE.resolve(live.machine.state, event) is None:
            return False
        live.machine.handle(event)
        if live.terminal:
            live.state = _State.DONE
        elif live.state in (_State.UNKNOWN, _State.SENDING, _State.QUEUED):
            live.state = _State.OPEN
        ts_ns = max(ts_ns, live.last_ts)
        live.last_ts = ts_ns
        order = live.order
        fill = fields.pop("_fill", None)
        self._queue.append(
            _Queued(
                ts=ts_ns,
                arrival=next(self._arrival),
                cls=cls,
                fields={
                    "client_order_id": order.client_order_id,
                    "symbol": order.symbol,
                    "purpose": order.purpose,
                    "ts_event": ts_ns,
                    "ts_init": self._now_ns(),
                    "correlation_id": order.correlation_id,
                    **fields,
                },
                fill=fill,
            )
        )
        return True

    def _accept(self, live: _Live, ts_ms: int) -> None:
        if live.venue_order_id is None:
            return
        if live.machine.state is _O.SUBMITTED:
            self._transition(
                live, fsm.Accepted(), ts_ms * 1_000_000, OrderAccepted,
                venue_order_id=live.venue_order_id,
            )  # fmt: skip

    def _fill(
        self,
        live: _Live,
        cum: Decimal,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        fee_asset: str,
        ts_ms: int,
        liquidity: str,
    ) -> None:
        if cum <= live.cum_qty or qty <= 0:
            return  # seen already (stream and query both report it)
        order_qty = float(live.order_qty)
        fee_value = float(fee)
        if fee_asset not in _FEE_ASSETS:
            if fee_asset not in self._fee_assets_warned:
                self._fee_assets_warned.add(fee_asset)
                self._log.warning("fee not in a USD asset; not counted", asset=fee_asset)
            fee_value = 0.0
        event = fsm.Fill(cum_qty=float(cum), qty=order_qty)
        if fsm.ORDER_TABLE.resolve(live.machine.state, event) is None:
            self._log.error("fill for a finished order", venue_id=live.venue_id, cum=str(cum))
            return
        live.cum_qty = cum
        live.quote_qty += qty * price
        side = live.order.side
        self._transition(
            live,
            event,
            ts_ms * 1_000_000,
            OrderFilled,
            side=side,
            last_qty=float(qty),
            last_price=float(price),
            cum_qty=float(cum),
            order_qty=order_qty,
            fee=fee_value,
            liquidity=liquidity,
            _fill=(live.order.symbol, int(side) * float(qty), float(price), fee_value),
        )

    def _synthetic_fill(self, live: _Live, cum: Decimal, avg: Decimal, ts_ms: int) -> None:
        """Fill the part of ``cum`` no trade was seen for, at the price the average implies."""
        qty = cum - live.cum_qty
        if qty <= 0:
            return
        price = (avg * cum - live.quote_qty) / qty if avg > 0 else _ZERO
        if price <= 0:
            price = avg
        fee = qty * price * Decimal(str(self._fee_rate))
        self._log.warning(
            "fill recovered from the order's totals",
            venue_id=live.venue_id,
            qty=qty,
            price=price,
        )
        self._fill(live, cum, qty, price, fee, "USDT", ts_ms, "TAKER")

    def _on_snapshot(self, live: _Live, data: dict[str, Any], *, from_query: bool) -> None:
        """Apply an order as REST reports it (new order answer, query)."""
        if "algoStatus" in data:
            self._on_algo_snapshot(live, data)
            return
        if live.prepared.conditional:
            # The order a conditional order placed when it triggered.
            self._trigger(live, int(data.get("time") or 0), live.prepared.trigger_price or _ZERO)
            if Decimal(str(data.get("origQty", "0"))) > 0:
                live.order_qty = Decimal(str(data["origQty"]))
        if data.get("orderId") is not None and not live.prepared.conditional:
            live.venue_order_id = int(data["orderId"])
        ts_ms = int(data.get("updateTime") or data.get("time") or self._now_ns() // 1_000_000)
        status = str(data.get("status", "NEW"))
        try:
            target = fsm.status_from_exchange(status)
        except ValueError:
            self._log.error("unknown order status", status=status, venue_id=live.venue_id)
            return
        executed = Decimal(str(data.get("executedQty", "0")))
        if target is not _O.REJECTED:
            self._accept(live, ts_ms)
        if executed > live.cum_qty:
            if from_query:
                self._synthetic_fill(live, executed, Decimal(str(data.get("avgPrice", "0"))), ts_ms)
            else:
                # The answer has no trades; the stream will, else a query soon.
                live.next_check = min(live.next_check, trio.current_time() + 1.0)
        self._finish(live, target, ts_ms, executed)
        if not live.terminal and live.state != _State.UNKNOWN:
            live.next_check = trio.current_time() + self._open_check_s

    def _finish(
        self,
        live: _Live,
        target: fsm.OrderStatus,
        ts_ms: int,
        executed: Decimal,
    ) -> None:
        ts = ts_ms * 1_000_000
        cum = float(live.cum_qty)
        if executed > live.cum_qty:
            return  # fills still to come; the final status waits for them
        if target is _O.CANCELED:
            self._transition(
                live, fsm.Canceled(), ts, OrderCanceled, cum_qty=cum, reason="canceled"
            )
        elif target is _O.EXPIRED:
            self._transition(live, fsm.Expired(), ts, OrderExpired, cum_qty=cum, reason="expired")
        elif target is _O.REJECTED:
            self._transition(
                live, fsm.Rejected(reason="rejected"), ts, OrderRejected, reason="rejected"
            )

    def _on_stream(self, signal: StreamSignal) -> None:
        if isinstance(signal, OrderTradeUpdate):
            self._on_order_update(signal)
        elif isinstance(signal, AlgoUpdate):
            self._on_algo_update(signal)
        elif isinstance(signal, AccountUpdate):
            for pos in signal.account.positions:
                if pos.position_side in ("BOTH", ""):
                    self.exchange_positions[pos.symbol] = (
                        float(pos.position_amount),
                        float(pos.entry_price),
                    )
                    self._position_updates[pos.symbol] = (
                        self._position_updates.get(pos.symbol, 0) + 1
                    )
            for bal in signal.account.balances:
                self.wallet_balances[bal.asset] = float(bal.wallet_balance)
        elif isinstance(signal, StreamGap):
            now = trio.current_time()
            self._log.warning(
                "user stream gap; querying open orders", reason=signal.reason, down_s=signal.down_s
            )
            for live in self._orders.values():
                if not live.terminal and live.state != _State.QUEUED:
                    live.next_check = now
            # ACCOUNT_UPDATEs of the gap are lost: what we hold is stale until refreshed.
            self.exchange_positions.clear()
            self._drift_seen.clear()
            self._spawn(self._refresh_positions, dict(self._position_updates))

    def _on_order_update(self, update: OrderTradeUpdate) -> None:
        o = update.order
        live = self._orders.get(o.client_order_id)
        if live is None:
            if o.client_order_id in self._protective_cum:
                self._on_protective_fill(update)
            else:
                self._on_adopted_update(update)
            return
        ts_ms = o.trade_time_ms or update.transaction_time_ms or update.event_time_ms
        try:
            target = fsm.status_from_exchange(o.status)
        except ValueError:
            self._log.error("unknown order status", status=o.status, venue_id=live.venue_id)
            return
        if live.prepared.conditional:
            # The MARKET order the algo service placed on trigger (same client id).
            self._trigger(live, ts_ms, live.prepared.trigger_price or _ZERO)
            if o.quantity > 0:
                live.order_qty = o.quantity
        else:
            live.venue_order_id = o.order_id
        if target is not _O.REJECTED:
            self._accept(live, ts_ms)
        if o.execution_type == "AMENDMENT":
            self._replaced(live, o.quantity, o.price, ts_ms)
        if o.cum_qty > live.cum_qty:
            if o.cum_qty - live.cum_qty == o.last_qty and o.last_qty > 0:
                self._fill(
                    live, o.cum_qty, o.last_qty, o.last_price, o.commission,
                    o.commission_asset, ts_ms, "MAKER" if o.maker else "TAKER",
                )  # fmt: skip
            else:
                # A trade before this one was missed: fill the difference at the
                # price the average implies, then let a query confirm.
                self._synthetic_fill(live, o.cum_qty, o.avg_price, ts_ms)
        self._finish(live, target, ts_ms, o.cum_qty)
        if not live.terminal:
            live.next_check = trio.current_time() + self._open_check_s

    def _on_algo_update(self, update: AlgoUpdate) -> None:
        a = update.order
        live = self._orders.get(a.client_algo_id)
        if live is None:
            self._on_foreign_algo(update)
            return
        self._on_algo(
            live,
            a.status,
            update.transaction_time_ms or update.event_time_ms,
            algo_id=a.algo_id,
            trigger=a.trigger_price,
            reason=a.reject_reason,
        )
        if not live.terminal:
            live.next_check = trio.current_time() + self._open_check_s

    def _on_foreign_algo(self, update: AlgoUpdate) -> None:
        """A conditional order that is no engine order: a protective stop (its end
        frees its symbol for a new one), or one placed by hand (ignored)."""
        a = update.order
        symbol = self._protective_symbol.get(a.client_algo_id)
        if symbol is None or self.protective is None:
            return
        if a.status in ("TRIGGERED", "FINISHED", "CANCELED", "EXPIRED", "REJECTED"):
            self.protective.on_gone(symbol, a.client_algo_id)
        if a.status in ("CANCELED", "EXPIRED", "REJECTED"):
            self._protective_gone(a.client_algo_id)  # nothing more can fill

    def _on_adopted_update(self, update: OrderTradeUpdate) -> None:
        """An order reconciliation adopted: its fills count, but no order events."""
        o = update.order
        seen = self._adopted.get(o.client_order_id)
        if seen is None:
            return  # not ours
        if o.cum_qty > seen:
            qty = o.cum_qty - seen
            price = o.last_price if qty == o.last_qty else o.avg_price
            sign = 1.0 if o.side == "BUY" else -1.0
            fee = float(o.commission) if o.commission_asset in _FEE_ASSETS else 0.0
            self._queue.append(
                _Queued(
                    ts=(o.trade_time_ms or update.event_time_ms) * 1_000_000,
                    arrival=next(self._arrival),
                    cls=None,
                    fields={},
                    fill=(o.symbol, sign * float(qty), float(price), fee),
                )
            )
            self._adopted[o.client_order_id] = o.cum_qty
        if fsm.status_from_exchange(o.status) in fsm.TERMINAL_STATUSES:
            del self._adopted[o.client_order_id]
            self._adopted_symbols.pop(o.client_order_id, None)

    async def _refresh_positions(self, seen: dict[str, int]) -> None:
        """Positions from ``positionRisk`` after a stream gap.

        A symbol that got an ``ACCOUNT_UPDATE`` meanwhile keeps that (newer) one.
        """
        assert self._client is not None
        try:
            rows = await self._client.position_risk()
        except BinanceError as exc:
            self._log.warning("positions not refreshed after stream gap", error=str(exc))
            return
        for row in rows:
            symbol = str(row.get("symbol", ""))
            if row.get("positionSide", "BOTH") not in ("BOTH", ""):
                continue
            if self._position_updates.get(symbol, 0) != seen.get(symbol, 0):
                continue
            self.exchange_positions[symbol] = (
                float(row.get("positionAmt", 0.0)),
                float(row.get("entryPrice", 0.0)),
            )

    # -- accounting ---------------------------------------------------------------

    def _drain(self) -> list[OrderEvent]:
        queued, self._queue = self._queue, []
        queued.sort(key=lambda q: (q.ts, q.arrival))
        out: list[OrderEvent] = []
        for item in queued:
            if item.cls is not None:
                out.append(item.cls(**item.fields, seq=next(self._seq)))
            if item.fill is not None:
                symbol, signed_qty, price, fee = item.fill
                self.ledger.apply_fill(symbol, signed_qty, price, fee)
        return out

    def _mark(self) -> None:
        equity = self.ledger.equity()
        self.equity = equity
        self.equity_peak = max(self.equity_peak, equity)
        self.max_drawdown = max(self.max_drawdown, self.equity_peak - equity)

    def _check_drift(self) -> None:
        if not self.exchange_positions:
            return  # nothing to compare (the loop below would do nothing)
        busy = {live.order.symbol for live in self._orders.values() if not live.terminal}
        if self._adopted:
            busy.update(self._adopted_symbols.values())
        now_t = trio.current_time()
        for symbol, (amount, _entry) in self.exchange_positions.items():
            if symbol not in self.symbols or symbol in busy:
                self._drift_seen.pop(symbol, None)
                continue
            ours = self.ledger.qty(symbol)
            if abs(amount - ours) <= 1e-9:
                self._drift_reported.pop(symbol, None)
                self._drift_seen.pop(symbol, None)
                continue
            seen = self._drift_seen.get(symbol)
            if seen is None or seen[0] != (ours, amount):
                # A disagreement may be a report still on its way: wait for it to last.
                self._drift_seen[symbol] = ((ours, amount), now_t)
                continue
            if now_t - seen[1] < self._drift_grace_s:
                continue
            if self._drift_reported.get(symbol) == amount:
                continue
            self._drift_reported[symbol] = amount
            now = self._now_ns()
            reason = f"position: fills say {ours}, exchange says {amount}"
            self._log.error("position drift", symbol=symbol, ours=ours, exchange=amount)
            self._ops.append(
                (
                    now,
                    next(self._arrival),
                    ReconciliationFailed,
                    {"symbol": symbol, "reason": reason, "ts_event": now, "ts_init": now},
                )
            )


@contextlib.asynccontextmanager
async def _maybe_client(http: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """The injected client as is, or a new one, closed at the end."""
    if http is not None:
        yield http
        return
    # Deadlines are the client's cancel scopes, not httpx's.
    own = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_keepalive_connections=8))
    try:
        yield own
    finally:
        with trio.CancelScope(shield=True):
            await own.aclose()
