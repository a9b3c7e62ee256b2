"""The simulated venues: the in-process venue used by replay and paper trading, and
the Binance USD-M compatible loopback exchange (market data replayed from a capture,
signed trading endpoints matched against it, user-data streams, limits, faults).
"""

from ._exchange_api import ExchangeApi as ExchangeApi
from ._exchange_errors import ExchangeApiError as ExchangeApiError
from ._exchange_faults import REQUEST_FAULT_KINDS as REQUEST_FAULT_KINDS
from ._exchange_faults import RequestFault as RequestFault
from ._exchange_limits import LimitSettings as LimitSettings
from ._recorded import Recording as Recording
from ._recorded import load_recording as load_recording
from ._stream_server import Fault as Fault
from ._stream_server import ServerSettings as ServerSettings
from ._stream_server import StreamServer as StreamServer
from ._stream_server import TradingSettings as TradingSettings
from ._stream_server import split_faults as split_faults
from ._trading import AccountSettings as AccountSettings
from ._trading import MatchingEngine as MatchingEngine
from ._trading import SimFill as SimFill
from ._trading import SimOrder as SimOrder
from ._trading import SimPosition as SimPosition
from ._trading import SymbolRules as SymbolRules
from ._venue import SimVenue as SimVenue
from ._venue import SymbolAccount as SymbolAccount

__all__ = [
    "REQUEST_FAULT_KINDS",
    "AccountSettings",
    "ExchangeApi",
    "ExchangeApiError",
    "Fault",
    "LimitSettings",
    "MatchingEngine",
    "Recording",
    "RequestFault",
    "ServerSettings",
    "SimFill",
    "SimOrder",
    "SimPosition",
    "SimVenue",
    "StreamServer",
    "SymbolAccount",
    "SymbolRules",
    "TradingSettings",
    "load_recording",
    "split_faults",
]
