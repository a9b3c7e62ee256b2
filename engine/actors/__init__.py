"""The actors: one per symbol, risk, execution (the journal actor lives in ``journal``)."""

from ._execution import ExecutionActor as ExecutionActor
from ._execution import record_key as record_key
from ._risk import RiskActor as RiskActor
from ._symbol import ProtocolError as ProtocolError
from ._symbol import SymbolActor as SymbolActor

__all__ = ["ExecutionActor", "ProtocolError", "RiskActor", "SymbolActor", "record_key"]
