"""The actors: per symbol, risk, execution, hardware (journal, portfolio: own packages)."""

from ._execution import ExecutionActor as ExecutionActor
from ._execution import record_key as record_key
from ._hardware import HardwareActor as HardwareActor
from ._inline import InlineStep as InlineStep
from ._risk import RiskActor as RiskActor
from ._symbol import ProtocolError as ProtocolError
from ._symbol import SymbolActor as SymbolActor

__all__ = [
    "ExecutionActor",
    "HardwareActor",
    "InlineStep",
    "ProtocolError",
    "RiskActor",
    "SymbolActor",
    "record_key",
]
