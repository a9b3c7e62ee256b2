"""The Binance error replies the loopback exchange sends, as typed exceptions.

Tree::

    EngineError
    └── ExchangeApiError      HTTP status + Binance code + message, sent as
                              ``{"code": -2019, "msg": "Margin is insufficient."}``

Each constructor below is named after Binance's own error name and uses its
documented message, so a client's error mapping sees exactly what Binance sends.
"""

from __future__ import annotations

from engine._errors import EngineError


class ExchangeApiError(EngineError):
    """A request the loopback exchange refuses, as Binance would.

    Attributes:
        status: the HTTP status (400, 401, 404, 418, 429, 503).
        code: the Binance error code.
        msg: the Binance message.
        retry_after_s: the ``Retry-After`` header (429 and 418), or ``None``.
    """

    def __init__(
        self, status: int, code: int, msg: str, *, retry_after_s: int | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        self.retry_after_s = retry_after_s
        super().__init__(f"HTTP {status}, code {code}: {msg}")


def unknown_error() -> ExchangeApiError:
    """503 / -1000: the request reached the engine; its outcome is unknown to the client."""
    return ExchangeApiError(
        503, -1000, "Unknown error, please check your request or try again later."
    )


def service_unavailable() -> ExchangeApiError:
    """503: nothing was executed."""
    return ExchangeApiError(503, -1000, "Service Unavailable.")


def mandatory(param: str) -> ExchangeApiError:
    """-1102 MANDATORY_PARAM_EMPTY_OR_MALFORMED."""
    return ExchangeApiError(
        400, -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    )


def either_param(first: str, second: str) -> ExchangeApiError:
    """-1102 when one of two identifying parameters is required."""
    return ExchangeApiError(
        400, -1102, f"Param '{first}' or '{second}' must be sent, but both were empty/null!"
    )


def illegal_chars(param: str, legal: str) -> ExchangeApiError:
    """-1100 ILLEGAL_CHARS."""
    return ExchangeApiError(
        400, -1100, f"Illegal characters found in parameter '{param}'; legal range is '{legal}'."
    )


def not_required(param: str) -> ExchangeApiError:
    """-1106 PARAM_NOT_REQUIRED."""
    return ExchangeApiError(400, -1106, f"Parameter '{param}' sent when not required.")


def invalid_param(param: str) -> ExchangeApiError:
    """-1130 INVALID_PARAMETER."""
    return ExchangeApiError(400, -1130, f"Data sent for parameter '{param}' is not valid.")


def bad_precision() -> ExchangeApiError:
    """-1111 BAD_PRECISION."""
    return ExchangeApiError(400, -1111, "Precision is over the maximum defined for this asset.")


def bad_symbol() -> ExchangeApiError:
    """-1121 BAD_SYMBOL."""
    return ExchangeApiError(400, -1121, "Invalid symbol.")


def code(status: int, code_: int, msg: str) -> ExchangeApiError:
    """Any other documented error."""
    return ExchangeApiError(status, code_, msg)


INVALID_TIMESTAMP = "Timestamp for this request is outside of the recvWindow."
INVALID_SIGNATURE = "Signature for this request is not valid."
BAD_API_KEY_FMT = "API-key format invalid."
REJECTED_MBX_KEY = "Invalid API-key, IP, or permissions for action."
MARGIN_INSUFFICIENT = "Margin is insufficient."
REDUCE_ONLY_REJECT = "ReduceOnly Order is rejected."
NO_SUCH_ORDER = "Order does not exist."
UNKNOWN_ORDER = "Unknown order sent."
GTX_REJECT = (
    "Due to the order could not be executed as maker, the Post Only order will be rejected. "
    "The order will not be recorded in the order history"
)
FOK_REJECT = (
    "Due to the order could not be filled immediately, the FOK order has been rejected. "
    "The order will not be recorded in the order history"
)


def min_notional(notional: str) -> ExchangeApiError:
    """-4164 MIN_NOTIONAL."""
    return ExchangeApiError(
        400,
        -4164,
        f"Order's notional must be no smaller than {notional} (unless you choose reduce only).",
    )
