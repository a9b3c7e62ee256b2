"""Binance USD-M futures venue: signing, server time, order templates, ids, rate
limiting, errors, a thin REST client over an order transport seam (httpx or lean
h11), the user-data stream, start-up reconciliation, and :class:`BinanceVenue`,
the live venue the execution actor drives like the simulated one.

Typical use::

    creds = credentials_from_env("BINANCE_API_KEY", "BINANCE_API_SECRET")
    clock = ServerClock()
    limiter = RateLimiter(rate_limits_from_exchange_info(info), clock=clock.now)
    client = BinanceRestClient(http, credentials=creds, limiter=limiter, clock=clock)
    templates = templates_from_exchange_info(info)
    order = templates["BTCUSDT"].prepare(Side.BUY, 0.01, client_order_id=ids.make(seq))
    await client.new_order(order)

The live venue (see :mod:`._venue` for what the actor calls and when)::

    venue = BinanceVenue(base_url=..., ws_url=..., credentials=creds,
                         symbols=["BTCUSDT"], log=log, order_transport="lean")
    await nursery.start(venue.run)
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
from ._errors import SendDeadlineError as SendDeadlineError
from ._errors import ServiceUnavailableError as ServiceUnavailableError
from ._errors import StartupDeadlineError as StartupDeadlineError
from ._errors import TimestampSkewError as TimestampSkewError
from ._errors import UnknownOrderStateError as UnknownOrderStateError
from ._errors import error_from_response as error_from_response
from ._ids import CLIENT_ORDER_ID_PATTERN as CLIENT_ORDER_ID_PATTERN
from ._ids import ClientOrderIds as ClientOrderIds
from ._ids import venue_client_order_id as venue_client_order_id
from ._ratelimit import DEFAULT_LIMITS as DEFAULT_LIMITS
from ._ratelimit import Priority as Priority
from ._ratelimit import RateLimit as RateLimit
from ._ratelimit import RateLimiter as RateLimiter
from ._ratelimit import rate_limits_from_exchange_info as rate_limits_from_exchange_info
from ._reconcile import ExchangeSnapshot as ExchangeSnapshot
from ._reconcile import JournalOrder as JournalOrder
from ._reconcile import JournalView as JournalView
from ._reconcile import OpenOrderRef as OpenOrderRef
from ._reconcile import OrderResolution as OrderResolution
from ._reconcile import ReconcilePlan as ReconcilePlan
from ._reconcile import ReconciliationError as ReconciliationError
from ._reconcile import RecoveredFill as RecoveredFill
from ._reconcile import fetch_snapshot as fetch_snapshot
from ._reconcile import journal_view_from_file as journal_view_from_file
from ._reconcile import journal_view_from_files as journal_view_from_files
from ._reconcile import journal_view_from_records as journal_view_from_records
from ._reconcile import plan_reconciliation as plan_reconciliation
from ._reconcile import reconcile as reconcile
from ._signing import API_KEY_HEADER as API_KEY_HEADER
from ._signing import Credentials as Credentials
from ._signing import MissingCredentialsError as MissingCredentialsError
from ._signing import credentials_from_env as credentials_from_env
from ._templates import OrderTemplate as OrderTemplate
from ._templates import OrderType as OrderType
from ._templates import PreparedOrder as PreparedOrder
from ._templates import TimeInForce as TimeInForce
from ._templates import templates_from_exchange_info as templates_from_exchange_info
from ._transport import HttpxTransport as HttpxTransport
from ._transport import LeanTransport as LeanTransport
from ._transport import OrderTransport as OrderTransport
from ._transport import RawResponse as RawResponse
from ._userstream import AccountData as AccountData
from ._userstream import AccountUpdate as AccountUpdate
from ._userstream import BalanceUpdate as BalanceUpdate
from ._userstream import ListenKeyExpired as ListenKeyExpired
from ._userstream import OrderTradeUpdate as OrderTradeUpdate
from ._userstream import OrderUpdate as OrderUpdate
from ._userstream import PositionUpdate as PositionUpdate
from ._userstream import StreamConnected as StreamConnected
from ._userstream import StreamGap as StreamGap
from ._userstream import UserStream as UserStream
from ._userstream import decode_user_event as decode_user_event
from ._venue import BinanceVenue as BinanceVenue

__all__ = [
    "API_KEY_HEADER",
    "BASE_URL",
    "CLIENT_ORDER_ID_PATTERN",
    "DEFAULT_LIMITS",
    "AccountData",
    "AccountUpdate",
    "AuthenticationError",
    "BalanceUpdate",
    "BinanceError",
    "BinanceRestClient",
    "BinanceVenue",
    "ClientOrderIds",
    "Credentials",
    "ExchangeSnapshot",
    "FilterError",
    "HttpxTransport",
    "IpBannedError",
    "JournalOrder",
    "JournalView",
    "LeanTransport",
    "ListenKeyExpired",
    "MissingCredentialsError",
    "OpenOrderRef",
    "OrderRejectedError",
    "OrderResolution",
    "OrderTemplate",
    "OrderTradeUpdate",
    "OrderTransport",
    "OrderType",
    "OrderUpdate",
    "PositionUpdate",
    "PreparedOrder",
    "Priority",
    "RateLimit",
    "RateLimitedError",
    "RateLimiter",
    "RawResponse",
    "ReconcilePlan",
    "ReconciliationError",
    "RecoveredFill",
    "RequestRejectedError",
    "SendDeadlineError",
    "ServerClock",
    "ServiceUnavailableError",
    "StartupDeadlineError",
    "StreamConnected",
    "StreamGap",
    "TimeInForce",
    "TimestampSkewError",
    "UnknownOrderStateError",
    "UserStream",
    "credentials_from_env",
    "decode_user_event",
    "error_from_response",
    "fetch_snapshot",
    "journal_view_from_file",
    "journal_view_from_files",
    "journal_view_from_records",
    "plan_reconciliation",
    "rate_limits_from_exchange_info",
    "reconcile",
    "templates_from_exchange_info",
    "venue_client_order_id",
]
