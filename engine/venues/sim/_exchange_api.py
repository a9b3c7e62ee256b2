"""The loopback exchange's REST protocol: limits, faults, auth, parameters, endpoints.

:meth:`ExchangeApi.handle` takes one HTTP request (method, target, body,
headers) and returns the reply; it does no I/O itself (the server sends the
reply, sleeps for ``slow`` faults and runs the websockets).

Order of checks, as Binance applies them: unknown endpoint (404); IP weight and
order-count limits (429/418, before anything else); armed faults; API key
(``X-MBX-APIKEY``: missing -2014, unknown -2015, both HTTP 401); for SIGNED
endpoints ``signature`` (HMAC-SHA256 of the query string concatenated with the
body, ``signature=`` removed: -1022), ``timestamp`` (mandatory, -1102) against
the exchange clock (``timestamp < server + 1000`` and ``server - timestamp <=
recvWindow``, default 5000, at most 60000: -1021); then the parameters with
Binance's codes; then the matching engine. A parameter sent in both the query
string and the body is taken from the query string.

Weights (Binance USD-M docs): order placement 0 (it counts on the order limits),
amendment 1 (and one order), cancel/query 1, ``openOrders`` 1 with a symbol and
40 without, ``allOrders``, ``userTrades``, ``account``, ``balance``,
``positionRisk`` 5, ``income`` 30, ``depth`` 2/5/10/20 by limit,
``aggTrades``/``historicalTrades`` 20, ``trades`` 5, ``klines`` 1/2/5/10 by
limit, ``ticker/24hr`` 1 with a symbol and 40 without, ``ticker/price`` and
``ticker/bookTicker`` 1/2 and 2/5, others 1. Every reply carries
``X-MBX-USED-WEIGHT-1M``; order endpoints also ``X-MBX-ORDER-COUNT-10S`` and
``X-MBX-ORDER-COUNT-1M``.

Order types: LIMIT and MARKET on ``/fapi/v1/order``; STOP_MARKET and
TAKE_PROFIT_MARKET on the algo order API (``/fapi/v1/algoOrder``, see
:mod:`._algo`); the other conditional types are refused on both (-4120 on
``/fapi/v1/order`` as Binance answers since the algo migration, -1116 on the
algo API); exchangeInfo lists exactly what is accepted. ccxt's
``load_markets`` asks ``/sapi/v1/capital/config/getall`` for the coins: it gets
USDT and the base assets, with no network (nothing is deposited or withdrawn here),
and ``/sapi/v1/margin/allPairs``: none (there is no spot margin here).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import attrs
import orjson

from . import _exchange_errors as err
from ._algo import ALGO_ORDER_TYPES, AlgoBook, AlgoRequest
from ._exchange_errors import ExchangeApiError
from ._exchange_faults import FaultBox, RequestFault
from ._exchange_limits import ServerRateLimiter
from ._trading import ZERO, MatchingEngine, OrderRequest, SymbolRules
from ._trading_format import (
    algo_json,
    balance_row,
    income_row,
    order_json,
    plain,
    position_risk,
    trade_json,
)
from ._userdata import ListenKeys

CLIENT_ORDER_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_NUMBER_TEXT = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_MAX_RECV_WINDOW = 60_000

Params = dict[str, str]
Event = dict[str, Any]


@attrs.frozen(kw_only=True)
class HttpReply:
    """What the server sends back.

    Attributes:
        status: HTTP status.
        body: JSON bytes.
        headers: extra headers (rate-limit counters, ``Retry-After``).
        delay_s: hold the reply this long first (``slow`` fault).
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    code: int = 0  # the Binance error code of a refusal (0: none), for the access log


class UserStreamSink(Protocol):
    """Where the API sends user-data events (the server's websocket side)."""

    def publish(self, events: Iterable[Event]) -> None:
        """Send events to the active listen key's streams."""
        ...

    def drop_user_streams(self) -> None:
        """Cut every user-data connection now."""
        ...

    def listen_key_closed(self, key: str) -> None:
        """The key was closed: its streams get nothing more."""
        ...


@attrs.frozen
class _Endpoint:
    handler: str
    security: str  # "NONE", "USER_STREAM" or "SIGNED"
    weight: int | Callable[[Params], int]
    orders: int = 0


def _depth_weight(params: Params) -> int:
    try:
        limit = int(params.get("limit", "500"))
    except ValueError:
        return 2
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def _klines_weight(params: Params) -> int:
    try:
        limit = int(params.get("limit", "500"))
    except ValueError:
        return 1
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def _per_symbol(one: int, every: int) -> Callable[[Params], int]:
    return lambda p: one if p.get("symbol") else every


_ENDPOINTS: Mapping[tuple[str, str], _Endpoint] = {
    ("GET", "/fapi/v1/ping"): _Endpoint("public", "NONE", 1),
    ("GET", "/fapi/v1/time"): _Endpoint("public", "NONE", 1),
    ("GET", "/fapi/v1/exchangeInfo"): _Endpoint("public", "NONE", 1),
    ("GET", "/fapi/v1/depth"): _Endpoint("public", "NONE", _depth_weight),
    ("GET", "/fapi/v1/historicalTrades"): _Endpoint("public", "NONE", 20),
    ("GET", "/fapi/v1/aggTrades"): _Endpoint("public", "NONE", 20),
    ("GET", "/fapi/v1/trades"): _Endpoint("public", "NONE", 5),
    ("GET", "/fapi/v1/ticker/24hr"): _Endpoint("public", "NONE", _per_symbol(1, 40)),
    ("GET", "/fapi/v1/ticker/price"): _Endpoint("public", "NONE", _per_symbol(1, 2)),
    ("GET", "/fapi/v2/ticker/price"): _Endpoint("public", "NONE", _per_symbol(1, 2)),
    ("GET", "/fapi/v1/ticker/bookTicker"): _Endpoint("public", "NONE", _per_symbol(2, 5)),
    ("GET", "/fapi/v1/klines"): _Endpoint("public", "NONE", _klines_weight),
    ("GET", "/fapi/v1/premiumIndex"): _Endpoint("public", "NONE", 1),
    ("GET", "/fapi/v1/fundingRate"): _Endpoint("public", "NONE", 1),
    ("GET", "/fapi/v1/openInterest"): _Endpoint("public", "NONE", 1),
    ("GET", "/api/v3/ping"): _Endpoint("public", "NONE", 1),
    ("GET", "/api/v3/time"): _Endpoint("public", "NONE", 1),
    ("POST", "/fapi/v1/order"): _Endpoint("new_order", "SIGNED", 0, orders=1),
    ("PUT", "/fapi/v1/order"): _Endpoint("amend_order", "SIGNED", 1, orders=1),
    ("GET", "/fapi/v1/order"): _Endpoint("query_order", "SIGNED", 1),
    ("DELETE", "/fapi/v1/order"): _Endpoint("cancel_order", "SIGNED", 1),
    ("DELETE", "/fapi/v1/allOpenOrders"): _Endpoint("cancel_all", "SIGNED", 1),
    ("GET", "/fapi/v1/openOrder"): _Endpoint("open_order", "SIGNED", 1),
    ("GET", "/fapi/v1/openOrders"): _Endpoint(
        "open_orders", "SIGNED", lambda p: 1 if p.get("symbol") else 40
    ),
    ("GET", "/fapi/v1/allOrders"): _Endpoint("all_orders", "SIGNED", 5),
    ("GET", "/fapi/v1/userTrades"): _Endpoint("user_trades", "SIGNED", 5),
    ("GET", "/fapi/v1/income"): _Endpoint("income", "SIGNED", 30),
    ("POST", "/fapi/v1/algoOrder"): _Endpoint("new_algo", "SIGNED", 0, orders=1),
    ("GET", "/fapi/v1/algoOrder"): _Endpoint("query_algo", "SIGNED", 1),
    ("DELETE", "/fapi/v1/algoOrder"): _Endpoint("cancel_algo", "SIGNED", 1),
    ("DELETE", "/fapi/v1/algoOpenOrders"): _Endpoint("cancel_all_algo", "SIGNED", 1),
    ("GET", "/fapi/v1/openAlgoOrders"): _Endpoint("open_algos", "SIGNED", _per_symbol(1, 40)),
    ("GET", "/fapi/v1/allAlgoOrders"): _Endpoint("all_algos", "SIGNED", 5),
    ("POST", "/fapi/v1/marginType"): _Endpoint("margin_type", "SIGNED", 1),
    ("GET", "/sapi/v1/capital/config/getall"): _Endpoint("coins", "SIGNED", 10),
    ("GET", "/sapi/v1/margin/allPairs"): _Endpoint("margin_pairs", "USER_STREAM", 1),
    ("GET", "/fapi/v2/positionRisk"): _Endpoint("position_risk_v2", "SIGNED", 5),
    ("GET", "/fapi/v3/positionRisk"): _Endpoint("position_risk_v3", "SIGNED", 5),
    ("GET", "/fapi/v2/account"): _Endpoint("account_v2", "SIGNED", 5),
    ("GET", "/fapi/v3/account"): _Endpoint("account_v3", "SIGNED", 5),
    ("GET", "/fapi/v2/balance"): _Endpoint("balance", "SIGNED", 5),
    ("GET", "/fapi/v3/balance"): _Endpoint("balance", "SIGNED", 5),
    ("POST", "/fapi/v1/leverage"): _Endpoint("leverage", "SIGNED", 1),
    ("GET", "/fapi/v1/leverageBracket"): _Endpoint("leverage_bracket", "SIGNED", 1),
    ("GET", "/fapi/v1/positionSide/dual"): _Endpoint("position_mode", "SIGNED", 30),
    ("POST", "/fapi/v1/listenKey"): _Endpoint("listen_key_create", "USER_STREAM", 1),
    ("PUT", "/fapi/v1/listenKey"): _Endpoint("listen_key_keepalive", "USER_STREAM", 1),
    ("DELETE", "/fapi/v1/listenKey"): _Endpoint("listen_key_close", "USER_STREAM", 1),
}
_ORDER_PATHS = frozenset({"/fapi/v1/order", "/fapi/v1/allOpenOrders", "/fapi/v1/algoOrder"})
# Conditional types: since the algo migration /fapi/v1/order refuses them (-4120).
_CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
ACCEPTED_ORDER_TYPES = ("LIMIT", "MARKET", *ALGO_ORDER_TYPES)
_ALGO_ENDPOINT_ONLY = (
    "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
)


def signature_payload(query: str, body: str) -> str:
    """The ``totalParams`` string Binance signs: query then body, ``signature`` removed."""

    def strip(raw: str) -> str:
        return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))

    return strip(query) + strip(body)


def sign(secret: str, payload: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``payload`` (Binance's SIGNED scheme)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class ExchangeApi:
    """The REST side of the loopback exchange.

    Args:
        engine: the matching engine and account.
        api_keys: API key -> secret; every key trades the one simulated account.
        limiter: IP weight and order-count limits.
        faults: armed request faults.
        listen_keys: the user-data stream keys.
        sink: where user-data events go.
        public: serves the public market-data paths: ``(path, params) -> (status, body)``.
        clock_ms: the exchange clock (ms) used for ``timestamp`` checks and event times.
        now: trio time (s) for limits and listen-key expiry.
        algos: the conditional orders.
        prices: a symbol's (last trade, mark) price now, for algo triggers.
    """

    def __init__(
        self,
        *,
        engine: MatchingEngine,
        api_keys: Mapping[str, str],
        limiter: ServerRateLimiter,
        faults: FaultBox,
        listen_keys: ListenKeys,
        sink: UserStreamSink,
        public: Callable[[str, Params], tuple[int, bytes]],
        clock_ms: Callable[[], int],
        now: Callable[[], float],
        algos: AlgoBook,
        prices: Callable[[str], tuple[Decimal, Decimal]],
    ) -> None:
        self.engine = engine
        self.algos = algos
        self._prices = prices
        self._secrets = dict(api_keys)
        self.limiter = limiter
        self.faults = faults
        self.listen_keys = listen_keys
        self._sink = sink
        self._public_data = public
        self._clock_ms = clock_ms
        self._now = now

    # -- pipeline ---------------------------------------------------------------------

    def handle(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> HttpReply:
        """Answer one request (see the module docstring for the order of checks)."""
        url = urllib.parse.urlsplit(target)
        path, query = url.path, url.query
        body_text = body.decode("utf-8", "replace")
        params: Params = dict(urllib.parse.parse_qsl(body_text, keep_blank_values=True))
        params.update(urllib.parse.parse_qsl(query, keep_blank_values=True))
        endpoint = _ENDPOINTS.get((method, path))
        if endpoint is None:
            return HttpReply(
                status=404,
                body=orjson.dumps({"code": -1, "msg": f"unknown endpoint {method} {path}"}),
                code=-1,
            )
        now = self._now()
        weight = endpoint.weight(params) if callable(endpoint.weight) else endpoint.weight
        order_headers = path in _ORDER_PATHS
        signed = endpoint.security == "SIGNED"
        delay = 0.0
        executed_anyway = False
        try:
            self.limiter.admit(weight, endpoint.orders, now, self._clock_ms())
            fault = self.faults.take(method, path, signed)
            if fault is not None:
                delay, executed_anyway = self._pre_fault(fault, now)
            if endpoint.security != "NONE":
                self._authenticate(headers, query, body_text, params, signed)
            if fault is not None and fault.kind in ("-2019", "-4164"):
                raise self._order_fault(fault, params)
            status, payload = getattr(self, "_" + endpoint.handler)(path, params)
            if executed_anyway:
                raise err.unknown_error()
        except ExchangeApiError as exc:
            status = exc.status
            payload = orjson.dumps({"code": exc.code, "msg": exc.msg})
            extra = (("Retry-After", str(exc.retry_after_s)),) if exc.retry_after_s else ()
            return HttpReply(
                status=status,
                body=payload,
                headers=self._limit_headers(now, order_headers) + extra,
                delay_s=delay,
                code=exc.code,
            )
        return HttpReply(
            status=status,
            body=payload,
            headers=self._limit_headers(now, order_headers),
            delay_s=delay,
        )

    def _limit_headers(self, now: float, orders: bool) -> tuple[tuple[str, str], ...]:
        out = [("X-MBX-USED-WEIGHT-1M", str(self.limiter.used_weight(now)))]
        if orders:
            in_10s, in_1m = self.limiter.order_counts(now)
            out += [("X-MBX-ORDER-COUNT-10S", str(in_10s)), ("X-MBX-ORDER-COUNT-1M", str(in_1m))]
        return tuple(out)

    def _pre_fault(self, fault: RequestFault, now: float) -> tuple[float, bool]:
        """Apply a fault that acts before the request; returns (delay, executed anyway)."""
        kind = fault.kind
        if kind == "429":
            raise self.limiter.rate_limit(fault.value, now)
        if kind == "418":
            self.limiter.ban(fault.value / 1000, now)
            raise self.limiter.banned_error(now, self._clock_ms())
        if kind == "503-lost":
            raise err.unknown_error()
        if kind == "503-unavailable":
            raise err.service_unavailable()
        if kind == "-1021":
            raise err.code(400, -1021, err.INVALID_TIMESTAMP)
        if kind == "drop_user_stream":
            self._sink.drop_user_streams()
        if kind == "slow":
            return fault.value / 1000, False
        return 0.0, kind == "503-executed"

    def _order_fault(self, fault: RequestFault, params: Params) -> ExchangeApiError:
        if fault.kind == "-2019":
            return err.code(400, -2019, err.MARGIN_INSUFFICIENT)
        rules = self.engine.rules.get(params.get("symbol", "").upper())
        return err.min_notional(rules.min_notional_text if rules else "5")

    def _authenticate(
        self, headers: Mapping[str, str], query: str, body: str, params: Params, signed: bool
    ) -> None:
        key = headers.get("x-mbx-apikey", "")
        if not key:
            raise err.code(401, -2014, err.BAD_API_KEY_FMT)
        secret = self._secrets.get(key)
        if secret is None:
            raise err.code(401, -2015, err.REJECTED_MBX_KEY)
        if not signed:
            return
        if not params.get("signature"):
            raise err.mandatory("signature")
        expected = sign(secret, signature_payload(query, body))
        if not hmac.compare_digest(expected, params["signature"].lower()):
            raise err.code(400, -1022, err.INVALID_SIGNATURE)
        if not params.get("timestamp"):
            raise err.mandatory("timestamp")
        timestamp = _int(params, "timestamp")
        window = _int(params, "recvWindow") if params.get("recvWindow") else 5000
        if window > _MAX_RECV_WINDOW or window <= 0:
            raise err.code(400, -1131, "recvWindow must be less than 60000")
        server = self._clock_ms()
        if timestamp >= server + 1000:
            raise err.code(
                400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if server - timestamp > window:
            raise err.code(400, -1021, err.INVALID_TIMESTAMP)

    # -- public -----------------------------------------------------------------------

    def _public(self, path: str, params: Params) -> tuple[int, bytes]:
        status, body = self._public_data(path, params)
        if status >= 400:
            parsed = orjson.loads(body)
            raise err.code(status, parsed.get("code", -1), parsed.get("msg", ""))
        return status, body

    # -- orders -----------------------------------------------------------------------

    def _new_order(self, _path: str, params: Params) -> tuple[int, bytes]:
        req, resp_type = self._order_request(params)
        accepted, final, events = self.engine.new_order(req, self._clock_ms())
        self._sink.publish(events)
        shown = accepted if resp_type == "ACK" else final
        return 200, orjson.dumps(order_json(shown, self.engine.rules[req.symbol]))

    def _query_order(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        order = self._find(symbol, params)
        if order is None:
            raise err.code(400, -2013, err.NO_SUCH_ORDER)
        return 200, orjson.dumps(order_json(order, self.engine.rules[symbol], query=True))

    def _open_order(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        order = self._find(symbol, params)
        if order is None or not order.is_open:
            raise err.code(400, -2013, err.NO_SUCH_ORDER)
        return 200, orjson.dumps(order_json(order, self.engine.rules[symbol], query=True))

    def _cancel_order(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        order_id, cid = self._order_ref(params)
        order, events = self.engine.cancel(
            symbol, self._clock_ms(), order_id=order_id, client_order_id=cid
        )
        self._sink.publish(events)
        return 200, orjson.dumps(order_json(order, self.engine.rules[symbol]))

    def _cancel_all(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        self._sink.publish(self.engine.cancel_all(symbol, self._clock_ms()))
        return 200, orjson.dumps(
            {"code": 200, "msg": "The operation of cancel all open order is done."}
        )

    def _amend_order(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        rules = self.engine.rules[symbol]
        order_id, cid = self._order_ref(params)
        side = params.get("side", "")
        if not side:
            raise err.mandatory("side")
        if side not in ("BUY", "SELL"):
            raise err.code(400, -1117, "Invalid side.")
        if params.get("priceMatch", "NONE") != "NONE":
            # Price matching needs the queue model this exchange does not have.
            raise err.invalid_param("priceMatch")
        for name in ("quantity", "price"):
            if not params.get(name):
                raise err.mandatory(name)
        qty = self._quantity(params, rules, market=False)
        price = _decimal(params, "price", rules.price_precision)
        self._check_price(price, rules, self.engine.mark_price(symbol))
        order, events = self.engine.amend(
            symbol,
            self._clock_ms(),
            order_id=order_id,
            client_order_id=None if order_id is not None else cid,
            side=side,
            quantity=qty,
            price=price,
        )
        self._sink.publish(events)
        return 200, orjson.dumps(order_json(order, rules))

    # -- algo (conditional) orders ------------------------------------------------------

    def _new_algo(self, _path: str, params: Params) -> tuple[int, bytes]:
        req = self._algo_request(params)
        last, mark = self._prices(req.symbol)
        order, events = self.algos.place(req, last, mark, self._clock_ms())
        self._sink.publish(events)
        return 200, orjson.dumps(algo_json(order, self.engine.rules[req.symbol], query=False))

    def _algo_ref(self, params: Params) -> tuple[int | None, str | None]:
        algo_id = _int(params, "algoId") if params.get("algoId") else None
        cid = params.get("clientAlgoId") or None
        if algo_id is None and cid is None:
            raise err.either_param("algoId", "clientAlgoId")
        return algo_id, cid

    def _query_algo(self, _path: str, params: Params) -> tuple[int, bytes]:
        algo_id, cid = self._algo_ref(params)
        order = self.algos.find(algo_id=algo_id, client_algo_id=cid)
        if order is None:
            raise err.code(400, -2013, err.NO_SUCH_ORDER)
        return 200, orjson.dumps(algo_json(order, self.engine.rules[order.symbol], query=True))

    def _cancel_algo(self, _path: str, params: Params) -> tuple[int, bytes]:
        algo_id, cid = self._algo_ref(params)
        order, events = self.algos.cancel(
            algo_id=algo_id, client_algo_id=cid, now_ms=self._clock_ms()
        )
        self._sink.publish(events)
        return 200, orjson.dumps(
            {
                "algoId": order.algo_id,
                "clientAlgoId": order.client_algo_id,
                "code": "200",
                "msg": "success",
            }
        )

    def _cancel_all_algo(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        self._sink.publish(self.algos.cancel_all(symbol, self._clock_ms()))
        return 200, orjson.dumps(
            {"code": 200, "msg": "The operation of cancel all open order is done."}
        )

    def _open_algos(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params) if params.get("symbol") else None
        rows = [
            algo_json(o, self.engine.rules[o.symbol], query=True)
            for o in self.algos.open_orders(symbol)
        ]
        return 200, orjson.dumps(rows)

    def _all_algos(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        limit = self._limit(params)
        orders = self.algos.orders(symbol)
        if params.get("algoId"):
            from_id = _int(params, "algoId")
            orders = [o for o in orders if o.algo_id >= from_id][:limit]
        else:
            orders = self._time_window(orders, params, lambda o: o.create_time)[-limit:]
        rules = self.engine.rules[symbol]
        return 200, orjson.dumps([algo_json(o, rules, query=True) for o in orders])

    def _algo_request(self, params: Params) -> AlgoRequest:
        algo_type = params.get("algoType", "")
        if not algo_type:
            raise err.mandatory("algoType")
        if algo_type != "CONDITIONAL":
            raise err.invalid_param("algoType")
        symbol = self._symbol(params)
        rules = self.engine.rules[symbol]
        side = params.get("side", "")
        if not side:
            raise err.mandatory("side")
        if side not in ("BUY", "SELL"):
            raise err.code(400, -1117, "Invalid side.")
        order_type = params.get("type", "")
        if not order_type:
            raise err.mandatory("type")
        if order_type not in ALGO_ORDER_TYPES:
            # STOP, TAKE_PROFIT and TRAILING_STOP_MARKET would need a limit or
            # trailing model this exchange does not have: refused, not faked.
            raise err.code(400, -1116, "Invalid orderType.")
        if params.get("positionSide", "BOTH") != "BOTH":
            raise err.code(400, -4061, "Order's position side does not match user's setting.")
        working = params.get("workingType", "CONTRACT_PRICE")
        if working not in ("CONTRACT_PRICE", "MARK_PRICE"):
            raise err.invalid_param("workingType")
        if params.get("price"):
            raise err.not_required("price")
        if not params.get("triggerPrice"):
            raise err.mandatory("triggerPrice")
        trigger = _decimal(params, "triggerPrice", rules.price_precision)
        if trigger <= 0 or (rules.tick and trigger % rules.tick):
            raise err.code(400, -4014, "Price not increased by tick size.")
        close_position = _bool(params, "closePosition")
        reduce_only = _bool(params, "reduceOnly")
        if close_position:
            if params.get("quantity"):
                raise err.not_required("quantity")
            if reduce_only:
                raise err.not_required("reduceOnly")
            qty = ZERO
        else:
            if not params.get("quantity"):
                raise err.mandatory("quantity")
            qty = self._quantity(params, rules, market=True)
            below = qty * trigger < rules.min_notional
            if not reduce_only and rules.min_notional and below:
                raise err.min_notional(rules.min_notional_text)
        cid = params.get("clientAlgoId") or None
        if cid is not None and not CLIENT_ORDER_ID.match(cid):
            raise err.code(400, -4015, "Client order id is not valid.")
        return AlgoRequest(
            symbol=symbol,
            side=side,
            type=order_type,
            quantity=qty,
            trigger_price=trigger,
            working_type=working,
            reduce_only=reduce_only,
            close_position=close_position,
            price_protect=_bool(params, "priceProtect"),
            client_algo_id=cid,
        )

    def _open_orders(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params) if params.get("symbol") else None
        rows = [
            order_json(o, self.engine.rules[o.symbol], query=True)
            for o in self.engine.open_orders(symbol)
        ]
        return 200, orjson.dumps(rows)

    def _all_orders(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        limit = self._limit(params)
        orders = [o for o in self.engine.orders() if o.symbol == symbol]
        if params.get("orderId"):
            from_id = _int(params, "orderId")
            orders = [o for o in orders if o.order_id >= from_id][:limit]
        else:
            orders = self._time_window(orders, params, lambda o: o.time)[-limit:]
        rules = self.engine.rules[symbol]
        return 200, orjson.dumps([order_json(o, rules, query=True) for o in orders])

    def _user_trades(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        limit = self._limit(params)
        fills = self.engine.fills(symbol)
        if params.get("orderId"):
            order_id = _int(params, "orderId")
            fills = [f for f in fills if f.order_id == order_id]
        if params.get("fromId"):
            from_id = _int(params, "fromId")
            fills = [f for f in fills if f.trade_id >= from_id][:limit]
        else:
            fills = self._time_window(fills, params, lambda f: f.time)[-limit:]
        rules = self.engine.rules[symbol]
        return 200, orjson.dumps([trade_json(f, rules) for f in fills])

    def _income(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params) if params.get("symbol") else None
        kind = params.get("incomeType") or None
        limit = 100
        if params.get("limit"):
            limit = _int(params, "limit")
            if not 1 <= limit <= 1000:
                raise err.invalid_param("limit")
        rows = [
            r
            for r in self.engine.income()
            if (symbol is None or r.symbol == symbol) and (kind is None or r.income_type == kind)
        ]
        if params.get("page"):
            # Binance pages from the oldest row of the window.
            page = _int(params, "page")
            rows = self._time_window(rows, params, lambda r: r.time)
            rows = rows[(page - 1) * limit : page * limit]
        else:
            rows = self._time_window(rows, params, lambda r: r.time)[:limit]
        return 200, orjson.dumps([income_row(r) for r in rows])

    # -- account ----------------------------------------------------------------------

    def _risk_rows(self, params: Params, version: int) -> list[dict[str, Any]]:
        symbol = self._symbol(params) if params.get("symbol") else None
        eng = self.engine
        rows = []
        for pos in eng.positions():
            if symbol is not None and pos.symbol != symbol:
                continue
            if version == 3 and not pos.amount and not eng.open_orders(pos.symbol):
                continue  # v3 lists only symbols with a position or open orders
            rows.append(
                position_risk(
                    pos,
                    eng.mark_price(pos.symbol),
                    eng.unrealized_pnl(pos.symbol),
                    eng.position_margin(pos.symbol),
                    eng.open_order_margin(pos.symbol),
                    eng.notionals(pos.symbol),
                    version=version,
                )
            )
        return rows

    def _position_risk_v2(self, _path: str, params: Params) -> tuple[int, bytes]:
        return 200, orjson.dumps(self._risk_rows(params, 2))

    def _position_risk_v3(self, _path: str, params: Params) -> tuple[int, bytes]:
        return 200, orjson.dumps(self._risk_rows(params, 3))

    def _account(self, version: int) -> dict[str, Any]:
        eng = self.engine
        now = self._clock_ms()
        wallet = eng.wallet
        upnl = eng.total_unrealized()
        pos_margin = sum((eng.position_margin(p.symbol) for p in eng.positions()), ZERO)
        order_margin = eng.open_order_margin()
        available = eng.available_balance()
        totals = {
            "totalInitialMargin": plain(pos_margin + order_margin),
            "totalMaintMargin": "0",
            "totalWalletBalance": plain(wallet),
            "totalUnrealizedProfit": plain(upnl),
            "totalMarginBalance": plain(wallet + upnl),
            "totalPositionInitialMargin": plain(pos_margin),
            "totalOpenOrderInitialMargin": plain(order_margin),
            "totalCrossWalletBalance": plain(wallet),
            "totalCrossUnPnl": plain(upnl),
            "availableBalance": plain(available),
            "maxWithdrawAmount": plain(max(ZERO, min(wallet, available))),
        }
        asset = {
            "asset": "USDT",
            "walletBalance": plain(wallet),
            "unrealizedProfit": plain(upnl),
            "marginBalance": plain(wallet + upnl),
            "maintMargin": "0",
            "initialMargin": plain(pos_margin + order_margin),
            "positionInitialMargin": plain(pos_margin),
            "openOrderInitialMargin": plain(order_margin),
            "crossWalletBalance": plain(wallet),
            "crossUnPnl": plain(upnl),
            "availableBalance": plain(available),
            "maxWithdrawAmount": plain(max(ZERO, min(wallet, available))),
            "updateTime": now,
        }
        positions = []
        for pos in eng.positions():
            if version == 3 and not pos.amount:
                continue
            mark = eng.mark_price(pos.symbol)
            row: dict[str, Any] = {
                "symbol": pos.symbol,
                "positionSide": "BOTH",
                "positionAmt": plain(pos.amount),
                "unrealizedProfit": plain(eng.unrealized_pnl(pos.symbol)),
                "isolatedMargin": plain(pos.isolated_wallet),
                "notional": plain(pos.amount * mark),
                "isolatedWallet": plain(pos.isolated_wallet),
                "initialMargin": plain(
                    eng.position_margin(pos.symbol) + eng.open_order_margin(pos.symbol)
                ),
                "maintMargin": "0",
                "updateTime": pos.update_time,
            }
            if version == 2:
                bids, asks = eng.notionals(pos.symbol)
                row.update(
                    {
                        "positionInitialMargin": plain(eng.position_margin(pos.symbol)),
                        "openOrderInitialMargin": plain(eng.open_order_margin(pos.symbol)),
                        "leverage": str(pos.leverage),
                        "isolated": pos.isolated,
                        "entryPrice": plain(pos.entry_price),
                        "breakEvenPrice": plain(pos.entry_price),
                        "maxNotional": "1000000000",
                        "bidNotional": plain(bids),
                        "askNotional": plain(asks),
                    }
                )
            positions.append(row)
        if version == 2:
            asset["marginAvailable"] = True
            head: dict[str, Any] = {
                "feeTier": 0,
                "canTrade": True,
                "canDeposit": True,
                "canWithdraw": True,
                "updateTime": 0,
                "multiAssetsMargin": False,
                "tradeGroupId": -1,
            }
            return {**head, **totals, "assets": [asset], "positions": positions}
        return {**totals, "assets": [asset], "positions": positions}

    def _account_v2(self, _path: str, _params: Params) -> tuple[int, bytes]:
        return 200, orjson.dumps(self._account(2))

    def _account_v3(self, _path: str, _params: Params) -> tuple[int, bytes]:
        return 200, orjson.dumps(self._account(3))

    def _balance(self, _path: str, _params: Params) -> tuple[int, bytes]:
        eng = self.engine
        row = balance_row(
            eng.wallet, eng.total_unrealized(), eng.available_balance(), self._clock_ms()
        )
        return 200, orjson.dumps([row])

    def _leverage(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        if not params.get("leverage"):
            raise err.mandatory("leverage")
        leverage = _int(params, "leverage")
        self._sink.publish(self.engine.set_leverage(symbol, leverage, self._clock_ms()))
        return 200, orjson.dumps(
            {"leverage": leverage, "maxNotionalValue": "1000000000", "symbol": symbol}
        )

    def _leverage_bracket(self, _path: str, params: Params) -> tuple[int, bytes]:
        def entry(symbol: str) -> dict[str, Any]:
            return {
                "symbol": symbol,
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": self.engine.settings.max_leverage,
                        "notionalCap": 1_000_000_000,
                        "notionalFloor": 0,
                        "maintMarginRatio": 0.004,
                        "cum": 0.0,
                    }
                ],
            }

        if params.get("symbol"):
            return 200, orjson.dumps(entry(self._symbol(params)))
        return 200, orjson.dumps([entry(s) for s in sorted(self.engine.rules)])

    def _position_mode(self, _path: str, _params: Params) -> tuple[int, bytes]:
        return 200, orjson.dumps({"dualSidePosition": False})

    def _margin_type(self, _path: str, params: Params) -> tuple[int, bytes]:
        symbol = self._symbol(params)
        margin_type = params.get("marginType", "")
        if not margin_type:
            raise err.mandatory("marginType")
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise err.invalid_param("marginType")
        self.engine.set_margin_type(symbol, margin_type == "ISOLATED")
        return 200, orjson.dumps({"code": 200, "msg": "success"})

    def _margin_pairs(self, _path: str, _params: Params) -> tuple[int, bytes]:
        # A futures-only exchange: no spot margin pairs.
        return 200, b"[]"

    def _coins(self, _path: str, _params: Params) -> tuple[int, bytes]:
        assets = sorted({"USDT", *(s.removesuffix("USDT") for s in self.engine.rules)})
        return 200, orjson.dumps([_coin(asset) for asset in assets])

    # -- user-data stream keys --------------------------------------------------------

    def _listen_key_create(self, _path: str, _params: Params) -> tuple[int, bytes]:
        return 200, orjson.dumps({"listenKey": self.listen_keys.create(self._now())})

    def _listen_key_keepalive(self, _path: str, params: Params) -> tuple[int, bytes]:
        key = self.listen_keys.keepalive(self._now(), params.get("listenKey"))
        return 200, orjson.dumps({"listenKey": key})

    def _listen_key_close(self, _path: str, params: Params) -> tuple[int, bytes]:
        closed = self.listen_keys.close(params.get("listenKey"))
        if closed is not None:
            self._sink.listen_key_closed(closed)
        return 200, b"{}"

    # -- parameters -------------------------------------------------------------------

    def _symbol(self, params: Params) -> str:
        symbol = params.get("symbol", "")
        if not symbol:
            raise err.mandatory("symbol")
        if symbol not in self.engine.rules:
            raise err.bad_symbol()
        return symbol

    def _order_ref(self, params: Params) -> tuple[int | None, str | None]:
        order_id = _int(params, "orderId") if params.get("orderId") else None
        cid = params.get("origClientOrderId") or None
        if order_id is None and cid is None:
            raise err.either_param("orderId", "origClientOrderId")
        return order_id, cid

    def _find(self, symbol: str, params: Params) -> Any:
        order_id, cid = self._order_ref(params)
        return self.engine.find_order(symbol, order_id=order_id, client_order_id=cid)

    @staticmethod
    def _limit(params: Params) -> int:
        if not params.get("limit"):
            return 500
        limit = _int(params, "limit")
        if not 1 <= limit <= 1000:
            raise err.invalid_param("limit")
        return limit

    @staticmethod
    def _time_window(rows: list[Any], params: Params, time_of: Callable[[Any], int]) -> list[Any]:
        start = _int(params, "startTime") if params.get("startTime") else None
        end = _int(params, "endTime") if params.get("endTime") else None
        return [
            r
            for r in rows
            if (start is None or time_of(r) >= start) and (end is None or time_of(r) <= end)
        ]

    def _order_request(self, params: Params) -> tuple[OrderRequest, str]:
        symbol = self._symbol(params)
        rules = self.engine.rules[symbol]
        side = params.get("side", "")
        if not side:
            raise err.mandatory("side")
        if side not in ("BUY", "SELL"):
            raise err.code(400, -1117, "Invalid side.")
        order_type = params.get("type", "")
        if not order_type:
            raise err.mandatory("type")
        if order_type in _CONDITIONAL_TYPES:
            raise err.code(400, -4120, _ALGO_ENDPOINT_ONLY)
        if order_type not in ("MARKET", "LIMIT"):
            raise err.code(400, -1116, "Invalid orderType.")
        if params.get("positionSide", "BOTH") != "BOTH":
            raise err.code(400, -4061, "Order's position side does not match user's setting.")
        reduce_only = _bool(params, "reduceOnly")
        cid = params.get("newClientOrderId") or None
        if cid is not None and not CLIENT_ORDER_ID.match(cid):
            raise err.code(400, -4015, "Client order id is not valid.")
        resp_type = params.get("newOrderRespType", "ACK")
        if resp_type not in ("ACK", "RESULT"):
            raise err.invalid_param("newOrderRespType")
        if not params.get("quantity"):
            raise err.mandatory("quantity")
        market = order_type == "MARKET"
        qty = self._quantity(params, rules, market=market)
        price = ZERO
        tif = "GTC"
        mark = self.engine.mark_price(symbol)
        if market:
            if params.get("price"):
                raise err.not_required("price")
            if params.get("timeInForce"):
                raise err.not_required("timeInForce")
            reference = mark
        else:
            tif = params.get("timeInForce", "")
            if not tif:
                raise err.mandatory("timeInForce")
            if tif not in ("GTC", "IOC", "FOK", "GTX"):
                raise err.code(400, -1115, "Invalid timeInForce.")
            if not params.get("price"):
                raise err.mandatory("price")
            price = _decimal(params, "price", rules.price_precision)
            self._check_price(price, rules, mark)
            reference = price
        below = bool(reference) and qty * reference < rules.min_notional
        if not reduce_only and rules.min_notional and below:
            raise err.min_notional(rules.min_notional_text)
        req = OrderRequest(
            symbol=symbol,
            side=side,
            type=order_type,
            quantity=qty,
            price=price,
            time_in_force=tif,
            reduce_only=reduce_only,
            client_order_id=cid,
        )
        return req, resp_type

    @staticmethod
    def _quantity(params: Params, rules: SymbolRules, *, market: bool) -> Decimal:
        """``quantity`` checked against LOT_SIZE (MARKET_LOT_SIZE for market orders)."""
        qty = _decimal(params, "quantity", rules.quantity_precision)
        step = rules.market_step if market else rules.step
        min_qty = rules.market_min_qty if market else rules.min_qty
        max_qty = rules.market_max_qty if market else rules.max_qty
        if qty <= 0:
            raise err.code(400, -4003, "Quantity less than or equal to zero.")
        if qty < min_qty:
            raise err.code(400, -4004, "Quantity less than min quantity.")
        if max_qty and qty > max_qty:
            raise err.code(400, -4005, "Quantity greater than max quantity.")
        if step and qty % step:
            raise err.code(400, -4023, "Qty not increased by step size.")
        return qty

    @staticmethod
    def _check_price(price: Decimal, rules: SymbolRules, mark: Decimal) -> None:
        if price <= 0:
            raise err.code(400, -4001, "Price less than 0.")
        if rules.min_price and price < rules.min_price:
            raise err.code(400, -4013, "Price less than min price.")
        if rules.max_price and price > rules.max_price:
            raise err.code(400, -4002, "Price greater than max price.")
        if rules.tick and price % rules.tick:
            raise err.code(400, -4014, "Price not increased by tick size.")
        if mark and rules.multiplier_up and price > mark * rules.multiplier_up:
            raise err.code(400, -4016, "Price is higher than mark price multiplier cap.")
        if mark and rules.multiplier_down and price < mark * rules.multiplier_down:
            raise err.code(400, -4024, "Price is lower than mark price multiplier floor.")


def _coin(asset: str) -> dict[str, Any]:
    """A ``/sapi/v1/capital/config/getall`` row: a coin of the spot wallet, which the
    loopback exchange does not have (empty, no network to deposit or withdraw on)."""
    return {
        "coin": asset,
        "depositAllEnable": False,
        "withdrawAllEnable": False,
        "name": asset,
        "free": "0",
        "locked": "0",
        "freeze": "0",
        "withdrawing": "0",
        "ipoing": "0",
        "ipoable": "0",
        "storage": "0",
        "isLegalMoney": False,
        "trading": True,
        "networkList": [],
    }


def _int(params: Params, name: str) -> int:
    try:
        return int(params[name])
    except (KeyError, ValueError):
        raise err.mandatory(name) from None


def _bool(params: Params, name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise err.invalid_param(name)
    return value == "true"


def _decimal(params: Params, name: str, max_places: int) -> Decimal:
    text = params[name]
    if not _NUMBER.match(text):
        raise err.illegal_chars(name, _NUMBER_TEXT)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise err.illegal_chars(name, _NUMBER_TEXT) from None
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > max_places:
        raise err.bad_precision()
    return value
