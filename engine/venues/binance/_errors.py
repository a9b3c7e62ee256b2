"""Errors raised by the Binance USD-M REST venue, and the one place they are chosen.

Tree::

    EngineError
    └── BinanceError                 status, code, msg of the failed request
        ├── RateLimitedError         HTTP 429: slow down (retry_after seconds when sent)
        ├── IpBannedError            HTTP 418: the IP is banned; send nothing until it ends
        ├── TimestampSkewError       code -1021: timestamp outside recvWindow; re-sync time
        ├── AuthenticationError      401, -1022, -2014, -2015: key, signature or permissions
        ├── ServiceUnavailableError  the request was NOT executed (503 "Service Unavailable.",
        │                            -1008 overloaded, connection refused); safe to resend
        ├── SendDeadlineError        the request was NOT sent: the rate limiter held it
        │                            past its deadline
        ├── UnknownOrderStateError   the request MAY have been executed (timeout, 5xx,
        │                            503 "Unknown error...", -1007): state is UNKNOWN
        ├── RequestRejectedError     any other 4xx with a Binance code: nothing was executed
        │   └── OrderRejectedError   the same, on an order endpoint (new order, cancel)
        ├── FilterError              a local pre-check (tick, step, min notional) refused
        │                            an order before anything was sent
        └── StartupDeadlineError     the venue's start-up (time, exchangeInfo, user stream,
                                     reconciliation) kept failing or waiting (429, 418, no
                                     answer) past ``venue.startup_deadline_s``; nothing traded

:func:`error_from_response` maps an HTTP status and a Binance error body
(``{"code": -2019, "msg": "Margin is insufficient."}``) to the most specific type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from engine._errors import EngineError

_BANNED_UNTIL = re.compile(r"banned until (\d{10,16})")
_AUTH_CODES = frozenset({-1002, -1022, -2014, -2015})
_UNAVAILABLE_MSGS = ("Service Unavailable.", "Internal error; unable to process your request.")


class BinanceError(EngineError):
    """A Binance request failed.

    Attributes:
        status: the HTTP status (0 when no response came back).
        code: the Binance error code (``-2019``), or ``None`` when the body had none.
        msg: the Binance message, or a description of the local failure.
    """

    def __init__(self, msg: str, *, status: int = 0, code: int | None = None) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        prefix = f"HTTP {status}" if status else "no response"
        super().__init__(
            f"{prefix}, code {code}: {msg}" if code is not None else f"{prefix}: {msg}"
        )


class RateLimitedError(BinanceError):
    """HTTP 429: a request-weight or order-count limit was broken.

    Attributes:
        retry_after: seconds from the ``Retry-After`` header, or ``None``.
    """

    def __init__(
        self, msg: str, *, status: int = 429, code: int | None = None, retry_after: float | None
    ) -> None:
        super().__init__(msg, status=status, code=code)
        self.retry_after = retry_after


class IpBannedError(BinanceError):
    """HTTP 418: the IP is banned for repeatedly breaking the limits after a 429.

    Attributes:
        retry_after: seconds from the ``Retry-After`` header, or ``None``.
        banned_until_ms: the ban's end (epoch ms) read from the message, or ``None``.
    """

    def __init__(
        self,
        msg: str,
        *,
        status: int = 418,
        code: int | None = None,
        retry_after: float | None = None,
        banned_until_ms: int | None = None,
    ) -> None:
        super().__init__(msg, status=status, code=code)
        self.retry_after = retry_after
        self.banned_until_ms = banned_until_ms


class TimestampSkewError(BinanceError):
    """Code -1021: the request's timestamp fell outside ``recvWindow``; nothing was executed."""


class AuthenticationError(BinanceError):
    """The API key, signature or key permissions were refused; nothing was executed."""


class ServiceUnavailableError(BinanceError):
    """The venue did not execute the request (overloaded, unavailable, not connected)."""


class SendDeadlineError(BinanceError):
    """A request was not sent by its deadline (it waited for the rate limiter).

    Nothing reached the exchange. The venue rejects an order ``stale`` with it
    rather than placing a market order decided long ago.
    """


class UnknownOrderStateError(BinanceError):
    """The request may or may not have been executed.

    Binance: a 5xx, a timeout, or a 503 with "Unknown error, please check your
    request or try again later." means the request reached the matching engine
    but no answer came back. An order's status must then be treated as UNKNOWN
    and found out (query by ``newClientOrderId`` or the user-data stream); it must
    never be treated as failed, or the position is counted wrong.
    """


class RequestRejectedError(BinanceError):
    """The venue refused the request (4xx with a Binance code); nothing was executed."""


class OrderRejectedError(RequestRejectedError):
    """The venue refused an order or a cancel (for example -2019 margin, -4164 notional)."""


class FilterError(BinanceError):
    """A local pre-check refused an order before it was sent.

    Attributes:
        symbol: the order's symbol.
        reason: a stable code (``"QTY_BELOW_MIN"``, ``"NOTIONAL_BELOW_MIN"``, ...).
        value: the offending value after rounding, or ``None``.
        bound: the bound it broke, or ``None``.
    """

    def __init__(
        self,
        symbol: str,
        reason: str,
        *,
        value: Decimal | None = None,
        bound: Decimal | None = None,
    ) -> None:
        self.symbol = symbol
        self.reason = reason
        self.value = value
        self.bound = bound
        detail = f"{symbol}: {reason}"
        if value is not None:
            detail += f" ({value} vs {bound})"
        super().__init__(detail)


class StartupDeadlineError(BinanceError):
    """The venue could not start within its start-up deadline; nothing was traded.

    Start-up waits out a 429 (``Retry-After``), a 418 ban and unanswered
    requests, up to the deadline; this says which step it was on and why. The
    CLI reports it in one line with exit code 2.
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.args = (msg,)  # no "no response:" prefix: this is the whole story in one line


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: never seen from Binance; fall back to the default backoff


def error_from_response(
    status: int,
    body: bytes | Mapping[str, Any] | None,
    headers: Mapping[str, str] | None = None,
    *,
    order_endpoint: bool = False,
) -> BinanceError:
    """Choose the exception for a failed Binance response.

    Args:
        status: the HTTP status code (``>= 400``, or 200 with an error body).
        body: the raw response body or its parsed JSON; a non-JSON body
            (a proxy's HTML page) is kept as the message.
        headers: the response headers, for ``Retry-After``.
        order_endpoint: the request placed or cancelled an order, so a plain
            refusal is an :class:`OrderRejectedError`.

    Returns:
        The most specific :class:`BinanceError` (not raised).
    """
    headers = headers or {}
    code: int | None = None
    msg = ""
    if isinstance(body, Mapping):
        parsed: Any = body
    else:
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
            msg = body.decode("utf-8", "replace")[:200] if body else ""
    if isinstance(parsed, Mapping):
        raw_code = parsed.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        msg = str(parsed.get("msg", ""))
    msg = msg or f"HTTP {status}"

    if status == 418:
        match = _BANNED_UNTIL.search(msg)
        return IpBannedError(
            msg,
            status=status,
            code=code,
            retry_after=_retry_after(headers),
            banned_until_ms=int(match.group(1)) if match else None,
        )
    if status == 429:
        return RateLimitedError(msg, status=status, code=code, retry_after=_retry_after(headers))
    if code == -1021:
        return TimestampSkewError(msg, status=status, code=code)
    if status == 401 or code in _AUTH_CODES:
        return AuthenticationError(msg, status=status, code=code)
    if code == -1008 or (status == 503 and msg.startswith(_UNAVAILABLE_MSGS)):
        return ServiceUnavailableError(msg, status=status, code=code)
    if status >= 500 or code == -1007:
        # Binance: a 5XX (and -1007, backend timeout) is NOT a failure; the
        # execution status is unknown and could have been a success.
        return UnknownOrderStateError(msg, status=status, code=code)
    if order_endpoint:
        return OrderRejectedError(msg, status=status, code=code)
    return RequestRejectedError(msg, status=status, code=code)
