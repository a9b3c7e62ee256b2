"""Binance USD-M futures REST venue: signing, server time, order templates, ids,
rate limiting, errors and a thin client (the engine wiring comes later).

Typical use::

    creds = credentials_from_env("BINANCE_API_KEY", "BINANCE_API_SECRET")
    clock = ServerClock()
    limiter = RateLimiter(rate_limits_from_exchange_info(info), clock=clock.now)
    client = BinanceRestClient(http, credentials=creds, limiter=limiter, clock=clock)
    templates = templates_from_exchange_info(info)
    order = templates["BTCUSDT"].prepare(Side.BUY, 0.01, client_order_id=ids.make(seq))
    await client.new_order(order)
"""

from ._client import BASE_URL as BASE_URL
from ._client import BinanceRestClient as BinanceRestClient
from ._clock import ServerClock as ServerClock
from ._errors import AuthenticationError as AuthenticationError
from ._errors import BinanceError as BinanceError
from ._errors import FilterError as FilterError
from ._errors import IpBannedError as IpBannedError
from ._errors import OrderRejectedError as OrderRejectedError
from ._errors import RateLimitedError as RateLimitedError
from ._errors import RequestRejectedError as RequestRejectedError
from ._errors import ServiceUnavailableError as ServiceUnavailableError
from ._errors import TimestampSkewError as TimestampSkewError
from ._errors import UnknownOrderStateError as UnknownOrderStateError
from ._errors import error_from_response as error_from_response
from ._ids import CLIENT_ORDER_ID_PATTERN as CLIENT_ORDER_ID_PATTERN
from ._ids import ClientOrderIds as ClientOrderIds
from ._ratelimit import DEFAULT_LIMITS as DEFAULT_LIMITS
from ._ratelimit import Priority as Priority
from ._ratelimit import RateLimit as RateLimit
from ._ratelimit import RateLimiter as RateLimiter
from ._ratelimit import rate_limits_from_exchange_info as rate_limits_from_exchange_info
from ._signing import API_KEY_HEADER as API_KEY_HEADER
from ._signing import Credentials as Credentials
from ._signing import MissingCredentialsError as MissingCredentialsError
from ._signing import credentials_from_env as credentials_from_env
from ._templates import OrderTemplate as OrderTemplate
from ._templates import OrderType as OrderType
from ._templates import PreparedOrder as PreparedOrder
from ._templates import TimeInForce as TimeInForce
from ._templates import templates_from_exchange_info as templates_from_exchange_info

__all__ = [
    "API_KEY_HEADER",
    "BASE_URL",
    "CLIENT_ORDER_ID_PATTERN",
    "DEFAULT_LIMITS",
    "AuthenticationError",
    "BinanceError",
    "BinanceRestClient",
    "ClientOrderIds",
    "Credentials",
    "FilterError",
    "IpBannedError",
    "MissingCredentialsError",
    "OrderRejectedError",
    "OrderTemplate",
    "OrderType",
    "PreparedOrder",
    "Priority",
    "RateLimit",
    "RateLimitedError",
    "RateLimiter",
    "RequestRejectedError",
    "ServerClock",
    "ServiceUnavailableError",
    "TimeInForce",
    "TimestampSkewError",
    "UnknownOrderStateError",
    "credentials_from_env",
    "error_from_response",
    "rate_limits_from_exchange_info",
    "templates_from_exchange_info",
]
