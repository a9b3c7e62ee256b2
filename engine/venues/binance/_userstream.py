"""The user-data stream: order updates and account updates pushed by Binance.

:class:`UserStream` keeps one websocket open on ``<ws_url>/ws/<listenKey>``:

* the listen key is created (``POST /fapi/v1/listenKey``) before every connect
  (Binance returns the live key, extended, when one exists), kept alive every
  ``keepalive_s`` (Binance drops a key not extended for 60 minutes) and closed
  (``DELETE``) when the stream stops;
* messages are decoded with msgspec into :class:`OrderTradeUpdate`,
  :class:`AlgoUpdate` (conditional orders), :class:`AccountUpdate` and
  :class:`ListenKeyExpired`; other event types are skipped;
* a drop (network, server close, keep-alive refused, ``listenKeyExpired``)
  reconnects with capped exponential backoff and jitter, creating a new key when
  the old one expired. Anything pushed while disconnected is lost to the stream,
  so after every re-connect the owner receives a :class:`StreamGap`: it must
  query its open and unknown orders (and their trades) by REST. The gap is
  reported only once the new connection is up, so an update can never fall
  between the owner's queries and the stream.

Events go to a plain callable (``handler``), called in the stream's task in
arrival order; it must not block.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from decimal import Decimal

import attrs
import msgspec
import trio
from structlog.typing import FilteringBoundLogger

from ...feeds._transport import MessageStream, TransportError, open_transport
from ._client import BinanceRestClient
from ._errors import BinanceError


class OrderUpdate(msgspec.Struct, frozen=True):
    """The ``o`` object of an ``ORDER_TRADE_UPDATE`` (quantities as exact decimals)."""

    symbol: str = msgspec.field(name="s")
    client_order_id: str = msgspec.field(name="c")
    side: str = msgspec.field(name="S")
    order_type: str = msgspec.field(name="o")
    quantity: Decimal = msgspec.field(name="q")
    price: Decimal = msgspec.field(name="p")
    avg_price: Decimal = msgspec.field(name="ap")
    execution_type: str = msgspec.field(name="x")
    status: str = msgspec.field(name="X")
    order_id: int = msgspec.field(name="i")
    last_qty: Decimal = msgspec.field(name="l")
    cum_qty: Decimal = msgspec.field(name="z")
    last_price: Decimal = msgspec.field(name="L")
    trade_time_ms: int = msgspec.field(name="T")
    trade_id: int = msgspec.field(name="t", default=0)
    commission: Decimal = msgspec.field(name="n", default=Decimal(0))
    commission_asset: str = msgspec.field(name="N", default="")
    maker: bool = msgspec.field(name="m", default=False)
    reduce_only: bool = msgspec.field(name="R", default=False)
    time_in_force: str = msgspec.field(name="f", default="GTC")
    original_type: str = msgspec.field(name="ot", default="")
    strategy_type: str = msgspec.field(name="st", default="")  # ALGO_CONDITION: triggered
    strategy_id: int = msgspec.field(name="si", default=0)  # the algo order's id


class OrderTradeUpdate(msgspec.Struct, frozen=True, tag_field="e", tag="ORDER_TRADE_UPDATE"):
    """An order changed: new, (partially) filled, cancelled, expired, ..."""

    event_time_ms: int = msgspec.field(name="E")
    transaction_time_ms: int = msgspec.field(name="T")
    order: OrderUpdate = msgspec.field(name="o")


class AlgoOrderUpdate(msgspec.Struct, frozen=True):
    """The ``o`` object of an ``ALGO_UPDATE`` (a conditional order's status).

    ``status`` is the algo status: ``NEW``, ``TRIGGERING``, ``TRIGGERED``,
    ``FINISHED``, ``CANCELED``, ``EXPIRED`` or ``REJECTED`` (``reject_reason``).
    The order it triggers carries ``client_algo_id`` as its own client order id.
    """

    symbol: str = msgspec.field(name="s")
    client_algo_id: str = msgspec.field(name="caid")
    algo_id: int = msgspec.field(name="aid")
    order_type: str = msgspec.field(name="o")
    side: str = msgspec.field(name="S")
    quantity: Decimal = msgspec.field(name="q")
    status: str = msgspec.field(name="X")
    trigger_price: Decimal = msgspec.field(name="tp")
    actual_order_id: str = msgspec.field(name="ai", default="")
    actual_qty: Decimal = msgspec.field(name="aq", default=Decimal(0))
    actual_price: Decimal = msgspec.field(name="ap", default=Decimal(0))
    close_position: bool = msgspec.field(name="cp", default=False)
    reduce_only: bool = msgspec.field(name="R", default=False)
    trigger_time_ms: int = msgspec.field(name="tt", default=0)
    reject_reason: str = msgspec.field(name="rm", default="")


class AlgoUpdate(msgspec.Struct, frozen=True, tag_field="e", tag="ALGO_UPDATE"):
    """A conditional (algo) order changed status."""

    event_time_ms: int = msgspec.field(name="E")
    transaction_time_ms: int = msgspec.field(name="T")
    order: AlgoOrderUpdate = msgspec.field(name="o")


class BalanceUpdate(msgspec.Struct, frozen=True):
    """One asset of an ``ACCOUNT_UPDATE``."""

    asset: str = msgspec.field(name="a")
    wallet_balance: Decimal = msgspec.field(name="wb")
    cross_wallet_balance: Decimal = msgspec.field(name="cw", default=Decimal(0))


class PositionUpdate(msgspec.Struct, frozen=True):
    """One position of an ``ACCOUNT_UPDATE``."""

    symbol: str = msgspec.field(name="s")
    position_amount: Decimal = msgspec.field(name="pa")
    entry_price: Decimal = msgspec.field(name="ep")
    unrealized_pnl: Decimal = msgspec.field(name="up", default=Decimal(0))
    position_side: str = msgspec.field(name="ps", default="BOTH")


class AccountData(msgspec.Struct, frozen=True):
    """The ``a`` object of an ``ACCOUNT_UPDATE``."""

    reason: str = msgspec.field(name="m", default="")
    balances: tuple[BalanceUpdate, ...] = msgspec.field(name="B", default=())
    positions: tuple[PositionUpdate, ...] = msgspec.field(name="P", default=())


class AccountUpdate(msgspec.Struct, frozen=True, tag_field="e", tag="ACCOUNT_UPDATE"):
    """Balances and positions changed (fills, funding, transfers)."""

    event_time_ms: int = msgspec.field(name="E")
    transaction_time_ms: int = msgspec.field(name="T")
    account: AccountData = msgspec.field(name="a")


class ListenKeyExpired(msgspec.Struct, frozen=True, tag_field="e", tag="listenKeyExpired"):
    """The listen key expired; the stream carries nothing more."""

    event_time_ms: int = msgspec.field(name="E")


class _Envelope(msgspec.Struct):
    e: str = ""


UserEvent = OrderTradeUpdate | AlgoUpdate | AccountUpdate | ListenKeyExpired

_DECODER = msgspec.json.Decoder(UserEvent)
_ENVELOPE = msgspec.json.Decoder(_Envelope)


def decode_user_event(data: str | bytes) -> UserEvent | None:
    """Decode one user-data message.

    Returns:
        The typed event, or ``None`` for an event type this module does not use
        (``MARGIN_CALL``, ``ACCOUNT_CONFIG_UPDATE``, ``TRADE_LITE``, ...).

    Raises:
        msgspec.DecodeError: a known event type with a malformed body, or not JSON.
    """
    try:
        return _DECODER.decode(data)
    except msgspec.ValidationError:
        kind = _ENVELOPE.decode(data).e
        if kind in ("ORDER_TRADE_UPDATE", "ALGO_UPDATE", "ACCOUNT_UPDATE", "listenKeyExpired"):
            raise
        return None


@attrs.frozen(kw_only=True)
class StreamConnected:
    """The stream is (re)connected; ``reconnects`` counts the connections before this one."""

    listen_key_new: bool
    reconnects: int


@attrs.frozen(kw_only=True)
class StreamGap:
    """The stream was down: updates may have been missed; query open and unknown orders.

    Attributes:
        reason: why the previous connection ended.
        down_s: seconds between the drop and the new connection (Trio clock).
    """

    reason: str
    down_s: float


StreamSignal = UserEvent | StreamConnected | StreamGap
Handler = Callable[[StreamSignal], None]
Connector = Callable[[str], AbstractAsyncContextManager[MessageStream]]


class _DropError(Exception):
    """The connection must be replaced (internal control flow)."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


class UserStream:
    """Keeps the user-data stream connected and hands its events to ``handler``.

    Args:
        client: the REST client (listen key calls; needs the API key).
        ws_url: the websocket root, for example ``wss://fstream.binance.com``.
        log: a bound structlog logger.
        transport: the websocket transport (``wsproto`` or ``trio-websocket``).
        connect: the websocket connector seam: ``connect(url)`` is an async
            context manager yielding a :class:`MessageStream` (tests pass an
            in-memory one); ``open_transport(transport, url)`` by default.
        keepalive_s: seconds between listen key keep-alives (Binance: 60 min
            lifetime; 30 min recommended).
        backoff_s: the first reconnect delay; doubles per failed attempt.
        max_backoff_s: the cap on the reconnect delay.
        rng: jitter source (seed it in tests).
    """

    def __init__(
        self,
        client: BinanceRestClient,
        ws_url: str,
        *,
        log: FilteringBoundLogger,
        transport: str = "wsproto",
        keepalive_s: float = 1800.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        rng: random.Random | None = None,
        connect: Connector | None = None,
    ) -> None:
        self._client = client
        self._ws_url = ws_url.rstrip("/")
        self._log = log
        self._connect: Connector = (
            connect if connect is not None else functools.partial(open_transport, transport)
        )
        self._keepalive_s = keepalive_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._rng = rng if rng is not None else random.Random()
        self._key: str | None = None
        self.connects = 0
        """Successful connections so far."""
        self.events = 0
        """Events handed to the handler so far (decoded, known types)."""

    async def run(
        self, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Stream events to ``handler`` until cancelled.

        Reports started once the first connection is up, so the owner's first
        REST queries cannot miss an update. Errors before that (the listen key
        refused, no connection) propagate; later ones reconnect.

        On cancellation the listen key is closed (shielded, best effort, 2 s).
        """
        started = False
        failures = 0
        down_since: float | None = None
        reason = ""
        try:
            while True:
                try:
                    key_new = await self._ensure_key()
                    url = f"{self._ws_url}/ws/{self._key}"
                    async with self._connect(url) as ws:
                        failures = 0
                        self.connects += 1
                        handler(
                            StreamConnected(listen_key_new=key_new, reconnects=self.connects - 1)
                        )
                        if down_since is not None:
                            down_s = trio.current_time() - down_since
                            down_since = None
                            handler(StreamGap(reason=reason, down_s=down_s))
                        if not started:
                            started = True
                            task_status.started()
                        self._log.info("user stream connected", reconnects=self.connects - 1)
                        drops: list[_DropError] = []
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._keepalive, nursery.cancel_scope, drops)
                            try:
                                await self._read(ws, handler)
                            except _DropError as exc:
                                drops.append(exc)
                            except TransportError as exc:
                                drops.append(_DropError(f"connection lost: {exc}"))
                            nursery.cancel_scope.cancel()
                        raise drops[0] if drops else _DropError("stream ended")
                except (TransportError, BinanceError, _DropError) as exc:
                    if not started and not isinstance(exc, _DropError):
                        raise
                    why = exc.reason if isinstance(exc, _DropError) else repr(exc)
                    if isinstance(exc, _DropError) and exc.expired:
                        self._key = None
                    if down_since is None:  # the gap is named after what opened it
                        down_since = trio.current_time()
                        reason = why
                    failures += 1
                    delay = min(self._max_backoff_s, self._backoff_s * 2 ** (failures - 1))
                    delay *= 0.5 + self._rng.random() / 2
                    self._log.warning("user stream down", reason=why, retry_in_s=delay)
                    await trio.sleep(delay)
        finally:
            await self._close_key()

    async def _ensure_key(self) -> bool:
        old = self._key
        self._key = await self._client.create_listen_key()
        return self._key != old

    async def _keepalive(self, scope: trio.CancelScope, drops: list[_DropError]) -> None:
        while True:
            await trio.sleep(self._keepalive_s)
            try:
                await self._client.keepalive_listen_key()
            except BinanceError as exc:
                # -1125: "This listenKey does not exist." Anything else: reconnect,
                # which creates (or re-extends) the key.
                drops.append(_DropError(f"keep-alive refused: {exc}", expired=exc.code == -1125))
                scope.cancel()
                return
            self._log.debug("listen key kept alive")

    async def _read(self, ws: MessageStream, handler: Handler) -> None:
        get_message = ws.get_message
        while True:
            data = await get_message()
            try:
                event = decode_user_event(data)
            except msgspec.DecodeError as exc:
                self._log.error("user stream message unreadable", error=str(exc))
                continue
            if event is None:
                continue
            if isinstance(event, ListenKeyExpired):
                raise _DropError("listenKeyExpired", expired=True)
            self.events += 1
            handler(event)

    async def _close_key(self) -> None:
        if self._key is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self._client.close_listen_key()
            except BinanceError as exc:
                self._log.warning("listen key not closed", error=str(exc))
        self._key = None
