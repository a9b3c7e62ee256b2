"""Binance USD-M JSON shapes for the loopback exchange's orders, trades and account.

REST bodies (``/fapi/v1/order``, ``/fapi/v1/algoOrder``, ``userTrades``,
``income``, ``/fapi/v2|v3/positionRisk``, ``account``, ``balance``) and
user-data events (``ORDER_TRADE_UPDATE``, ``ALGO_UPDATE``, ``ACCOUNT_UPDATE``,
``ACCOUNT_CONFIG_UPDATE``, ``listenKeyExpired``), field for field as Binance
sends them (the user-data events are checked key for key against events recorded
from Binance in ``tests/test_loopback_clients.py``). Numbers are strings, as
Binance sends them; times are exchange milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._algo import AlgoOrder
    from ._trading import IncomeRecord, SimFill, SimOrder, SimPosition, SymbolRules

_ZERO = Decimal(0)


def fixed(value: Decimal, places: int) -> str:
    """``value`` with exactly ``places`` decimals."""
    q = Decimal(1).scaleb(-places)
    return format(value.quantize(q, rounding=ROUND_HALF_EVEN), "f")


def plain(value: Decimal) -> str:
    """``value`` without exponent or trailing zeros (``"0"`` for zero)."""
    if not value:
        return "0"
    text = format(value.normalize(), "f")
    return text


def order_json(order: SimOrder, rules: SymbolRules, *, query: bool = False) -> dict[str, Any]:
    """The order as ``POST/GET/DELETE /fapi/v1/order`` return it.

    Args:
        order: the order.
        rules: its symbol's filters (for the number formats).
        query: add ``time`` (query endpoints) instead of ``cumQty`` (new/cancel).
    """
    pp, qp = rules.price_precision, rules.quantity_precision
    out: dict[str, Any] = {
        "orderId": order.order_id,
        "symbol": order.symbol,
        "status": order.status,
        "clientOrderId": order.client_order_id,
        "price": fixed(order.price, pp) if order.price else "0",
        "avgPrice": fixed(order.avg_price, max(5, pp)),
        "origQty": fixed(order.quantity, qp),
        "executedQty": fixed(order.executed_qty, qp),
        "cumQuote": fixed(order.cum_quote, max(5, pp)),
        "timeInForce": order.time_in_force,
        "type": order.type,
        "reduceOnly": order.reduce_only,
        "closePosition": False,
        "side": order.side,
        "positionSide": "BOTH",
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": order.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": order.stp_mode,
        "goodTillDate": 0,
        "updateTime": order.update_time,
    }
    if query:
        out["time"] = order.time
    else:
        out["cumQty"] = fixed(order.executed_qty, qp)
    return out


def trade_json(fill: SimFill, rules: SymbolRules) -> dict[str, Any]:
    """A ``GET /fapi/v1/userTrades`` row."""
    return {
        "buyer": fill.side == "BUY",
        "commission": plain(fill.commission),
        "commissionAsset": "USDT",
        "id": fill.trade_id,
        "maker": fill.maker,
        "orderId": fill.order_id,
        "price": fixed(fill.price, rules.price_precision),
        "qty": fixed(fill.qty, rules.quantity_precision),
        "quoteQty": plain(fill.quote_qty),
        "realizedPnl": plain(fill.realized_pnl),
        "side": fill.side,
        "positionSide": "BOTH",
        "symbol": fill.symbol,
        "time": fill.time,
    }


def order_trade_update(
    order: SimOrder,
    rules: SymbolRules,
    exec_type: str,
    now_ms: int,
    fill: SimFill | None,
    bids_notional: Decimal,
    asks_notional: Decimal,
) -> dict[str, Any]:
    """The ``ORDER_TRADE_UPDATE`` user-data event for one status change.

    An order triggered by an algo order carries the algo id in ``si``, ``ss`` -1
    and ``st`` ``ALGO_CONDITION``, as Binance sends it.
    """
    pp, qp = rules.price_precision, rules.quantity_precision
    strategy: dict[str, Any] = (
        {"si": order.algo_id, "ss": -1, "st": "ALGO_CONDITION"}
        if order.algo_id
        else {"si": 0, "ss": 0}
    )
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "o": {
            "s": order.symbol,
            "c": order.client_order_id,
            "S": order.side,
            "o": order.type,
            "f": order.time_in_force,
            "q": fixed(order.quantity, qp),
            "p": fixed(order.price, pp) if order.price else "0",
            "ap": plain(order.avg_price),
            "sp": "0",
            "x": exec_type,
            "X": order.status,
            "i": order.order_id,
            "l": fixed(fill.qty, qp) if fill else "0",
            "z": fixed(order.executed_qty, qp),
            "L": fixed(fill.price, pp) if fill else "0",
            "N": "USDT",
            "n": plain(fill.commission) if fill else "0",
            "T": now_ms,
            "t": fill.trade_id if fill else 0,
            "b": plain(bids_notional),
            "a": plain(asks_notional),
            "m": fill.maker if fill else False,
            "R": order.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": order.type,
            "ps": "BOTH",
            "cp": False,
            "rp": plain(fill.realized_pnl) if fill else "0",
            "pP": False,
            **strategy,
            "V": order.stp_mode,
            "pm": "NONE",
            "gtd": 0,
            "er": "0",  # expiry reason: none of Binance's (STP, FOK...) applies here
        },
    }


def account_update(
    reason: str,
    wallet: Decimal,
    cross_wallet: Decimal,
    positions: Iterable[tuple[SimPosition, Decimal]],
    now_ms: int,
) -> dict[str, Any]:
    """The ``ACCOUNT_UPDATE`` event: the USDT balance and the changed positions."""
    return {
        "e": "ACCOUNT_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "a": {
            "m": reason,
            "B": [{"a": "USDT", "wb": plain(wallet), "cw": plain(cross_wallet), "bc": "0"}],
            "P": [
                {
                    "s": pos.symbol,
                    "pa": plain(pos.amount),
                    "ep": plain(pos.entry_price),
                    "bep": plain(pos.entry_price),
                    "cr": plain(pos.realized_pnl),
                    "up": plain(upnl),
                    "mt": "isolated" if pos.isolated else "cross",
                    "iw": plain(pos.isolated_wallet),
                    "ps": "BOTH",
                }
                for pos, upnl in positions
            ],
        },
    }


def config_update(symbol: str, leverage: int, now_ms: int) -> dict[str, Any]:
    """``ACCOUNT_CONFIG_UPDATE`` after a leverage change."""
    return {
        "e": "ACCOUNT_CONFIG_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "ac": {"s": symbol, "l": leverage},
    }


def listen_key_expired(listen_key: str, now_ms: int) -> dict[str, Any]:
    """``listenKeyExpired`` (Binance now sends ``E`` as a string here)."""
    return {"e": "listenKeyExpired", "E": str(now_ms), "listenKey": listen_key}


def position_risk(
    pos: SimPosition,
    mark: Decimal,
    upnl: Decimal,
    margin: Decimal,
    open_margin: Decimal,
    notionals: tuple[Decimal, Decimal],
    *,
    version: int,
) -> dict[str, Any]:
    """A ``/fapi/v2/positionRisk`` (``version=2``) or ``/fapi/v3/positionRisk`` row."""
    common: dict[str, Any] = {
        "symbol": pos.symbol,
        "positionSide": "BOTH",
        "positionAmt": plain(pos.amount),
        "entryPrice": plain(pos.entry_price),
        "breakEvenPrice": plain(pos.entry_price),
        "markPrice": plain(mark),
        "unRealizedProfit": plain(upnl),
        "liquidationPrice": "0",
        "isolatedMargin": plain(pos.isolated_wallet + upnl) if pos.isolated else "0",
        "notional": plain(pos.amount * mark),
        "isolatedWallet": plain(pos.isolated_wallet),
        "updateTime": pos.update_time,
    }
    if version == 2:
        common.update(
            {
                "marginType": "isolated" if pos.isolated else "cross",
                "isAutoAddMargin": "false",
                "leverage": str(pos.leverage),
                "maxNotionalValue": "1000000000",
            }
        )
    else:
        common.update(
            {
                "marginAsset": "USDT",
                "initialMargin": plain(margin + open_margin),
                "maintMargin": "0",
                "positionInitialMargin": plain(margin),
                "openOrderInitialMargin": plain(open_margin),
                "adl": 0,
                "bidNotional": plain(notionals[0]),
                "askNotional": plain(notionals[1]),
            }
        )
    return common


def balance_row(wallet: Decimal, upnl: Decimal, available: Decimal, now_ms: int) -> dict[str, Any]:
    """The USDT row of ``/fapi/v2/balance`` and ``/fapi/v3/balance``."""
    return {
        "accountAlias": "SimTrireme",
        "asset": "USDT",
        "balance": plain(wallet),
        "crossWalletBalance": plain(wallet),
        "crossUnPnl": plain(upnl),
        "availableBalance": plain(available),
        "maxWithdrawAmount": plain(max(_ZERO, min(wallet, available))),
        "marginAvailable": True,
        "updateTime": now_ms,
    }


def income_row(record: IncomeRecord) -> dict[str, Any]:
    """A ``GET /fapi/v1/income`` row."""
    return {
        "symbol": record.symbol,
        "incomeType": record.income_type,
        "income": fixed(record.amount, 8),
        "asset": "USDT",
        "info": "",
        "time": record.time,
        "tranId": record.tran_id,
        "tradeId": str(record.trade_id),
    }


def algo_json(algo: AlgoOrder, rules: SymbolRules, *, query: bool) -> dict[str, Any]:
    """An algo order as ``POST /fapi/v1/algoOrder`` (``query=False``) or the
    query endpoints (``GET /fapi/v1/algoOrder``, ``openAlgoOrders``,
    ``allAlgoOrders``) return it."""
    pp, qp = rules.price_precision, rules.quantity_precision
    zero_price = fixed(_ZERO, pp)
    head: dict[str, Any] = {
        "algoId": algo.algo_id,
        "clientAlgoId": algo.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": algo.type,
        "symbol": algo.symbol,
        "side": algo.side,
        "positionSide": "BOTH",
        "timeInForce": "GTC",
        "quantity": fixed(algo.quantity, qp),
        "algoStatus": algo.status,
    }
    if query:
        head["actualOrderId"] = str(algo.actual_order_id) if algo.actual_order_id else ""
        head["actualPrice"] = fixed(algo.actual_price, max(5, pp))
    head.update(
        {
            "triggerPrice": fixed(algo.trigger_price, pp),
            "price": zero_price,
            "icebergQuantity": None,
        }
    )
    if query:
        head.update(
            {
                "tpTriggerPrice": zero_price,
                "tpPrice": zero_price,
                "slTriggerPrice": zero_price,
                "slPrice": zero_price,
                "tpOrderType": "",
            }
        )
    head.update(
        {
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": algo.working_type,
            "priceMatch": "NONE",
            "closePosition": algo.close_position,
            "priceProtect": algo.price_protect,
            "reduceOnly": algo.reduce_only,
            "createTime": algo.create_time,
            "updateTime": algo.update_time,
            "triggerTime": algo.trigger_time,
            "goodTillDate": 0,
        }
    )
    return head


def algo_update(algo: AlgoOrder, rules: SymbolRules, now_ms: int) -> dict[str, Any]:
    """The ``ALGO_UPDATE`` user-data event for one status of an algo order.

    ``TRIGGERED`` and ``FINISHED`` add the triggered order's average price
    (``ap``), filled quantity (``aq``) and type (``act``); ``REJECTED`` adds the
    reason (``rm``), as in the events Binance sends.
    """
    pp, qp = rules.price_precision, rules.quantity_precision
    o: dict[str, Any] = {
        "caid": algo.client_algo_id,
        "aid": algo.algo_id,
        "at": "CONDITIONAL",
        "o": algo.type,
        "s": algo.symbol,
        "S": algo.side,
        "ps": "BOTH",
        "f": "GTC",
        "q": fixed(algo.quantity, qp),
        "X": algo.status,
        "ai": str(algo.actual_order_id) if algo.actual_order_id else "",
    }
    if algo.status in ("TRIGGERED", "FINISHED"):
        o["ap"] = plain(algo.actual_price)
        o["aq"] = plain(algo.actual_qty)
        o["act"] = "MARKET"
    o.update(
        {
            "tp": fixed(algo.trigger_price, pp),
            "p": "0",
            "V": "EXPIRE_MAKER",
            "wt": algo.working_type,
            "pm": "NONE",
            "cp": algo.close_position,
            "pP": algo.price_protect,
            "R": algo.reduce_only,
            "tt": algo.trigger_time,
            "gtd": 0,
        }
    )
    if algo.status == "REJECTED":
        o["rm"] = algo.reject_reason
    return {"e": "ALGO_UPDATE", "T": now_ms, "E": now_ms, "o": o}
