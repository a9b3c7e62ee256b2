"""The simulated venues: the in-process venue used by replay and paper trading, and
the Binance USD-M compatible loopback exchange (market data replayed from a capture,
signed trading endpoints matched against it, user-data streams, limits, faults).
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._venue import SimVenue as SimVenue
from ._venue import SymbolAccount as SymbolAccount

# The loopback exchange (h11, wsproto, its matching engine) loads at first use: a replay
# needs only SimVenue (tests/test_startup.py checks that it loads nothing else).
if TYPE_CHECKING:
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

_LAZY = {
    "ExchangeApi": "._exchange_api",
    "ExchangeApiError": "._exchange_errors",
    "REQUEST_FAULT_KINDS": "._exchange_faults",
    "RequestFault": "._exchange_faults",
    "LimitSettings": "._exchange_limits",
    "Recording": "._recorded",
    "load_recording": "._recorded",
    "Fault": "._stream_server",
    "ServerSettings": "._stream_server",
    "StreamServer": "._stream_server",
    "TradingSettings": "._stream_server",
    "split_faults": "._stream_server",
    "AccountSettings": "._trading",
    "MatchingEngine": "._trading",
    "SimFill": "._trading",
    "SimOrder": "._trading",
    "SimPosition": "._trading",
    "SymbolRules": "._trading",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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
