"""Pure state machines: no I/O, no Trio.

A generic table-driven :class:`Machine`, the per-symbol position machine
(:data:`POSITION_TABLE`), the order machine (:data:`ORDER_TABLE`) and the
account-wide trading machine (:data:`TRADING_TABLE`).
"""

from ._errors import FsmError as FsmError
from ._errors import InvalidTransitionError as InvalidTransitionError
from ._errors import TableError as TableError
from ._machine import Machine as Machine
from ._machine import Table as Table
from ._machine import Transition as Transition
from ._order import ORDER_TABLE as ORDER_TABLE
from ._order import TERMINAL_STATUSES as TERMINAL_STATUSES
from ._order import Accepted as Accepted
from ._order import Canceled as Canceled
from ._order import Expired as Expired
from ._order import Fill as Fill
from ._order import OrderStatus as OrderStatus
from ._order import Rejected as Rejected
from ._order import Replaced as Replaced
from ._order import Triggered as Triggered
from ._order import is_complete as is_complete
from ._order import is_partial as is_partial
from ._order import new_order as new_order
from ._order import status_from_exchange as status_from_exchange
from ._position import POSITION_TABLE as POSITION_TABLE
from ._position import EntryDenied as EntryDenied
from ._position import EntryFailed as EntryFailed
from ._position import EntryFilled as EntryFilled
from ._position import EntryPartiallyFilled as EntryPartiallyFilled
from ._position import EntrySignaled as EntrySignaled
from ._position import EntrySubmitted as EntrySubmitted
from ._position import ExitFilled as ExitFilled
from ._position import ExitPartiallyFilled as ExitPartiallyFilled
from ._position import ExitReduced as ExitReduced
from ._position import ExitRejected as ExitRejected
from ._position import ExitSignaled as ExitSignaled
from ._position import ExitSubmitted as ExitSubmitted
from ._position import PositionState as PositionState
from ._position import new_position as new_position
from ._trading import TRADING_TABLE as TRADING_TABLE
from ._trading import HaltRequested as HaltRequested
from ._trading import ReduceRequested as ReduceRequested
from ._trading import ResumeRequested as ResumeRequested
from ._trading import TradingState as TradingState
from ._trading import new_trading as new_trading

__all__ = [
    "ORDER_TABLE",
    "POSITION_TABLE",
    "TERMINAL_STATUSES",
    "TRADING_TABLE",
    "Accepted",
    "Canceled",
    "EntryDenied",
    "EntryFailed",
    "EntryFilled",
    "EntryPartiallyFilled",
    "EntrySignaled",
    "EntrySubmitted",
    "ExitFilled",
    "ExitPartiallyFilled",
    "ExitReduced",
    "ExitRejected",
    "ExitSignaled",
    "ExitSubmitted",
    "Expired",
    "Fill",
    "FsmError",
    "HaltRequested",
    "InvalidTransitionError",
    "Machine",
    "OrderStatus",
    "PositionState",
    "ReduceRequested",
    "Rejected",
    "Replaced",
    "ResumeRequested",
    "Table",
    "TableError",
    "TradingState",
    "Transition",
    "Triggered",
    "is_complete",
    "is_partial",
    "new_order",
    "new_position",
    "new_trading",
    "status_from_exchange",
]
