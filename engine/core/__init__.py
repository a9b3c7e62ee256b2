"""Synchronous cores (no Trio, no I/O) and the deterministic replay driver.

Each core takes messages and returns messages, as h11's ``Connection`` does: the
Trio actors of paper and live trading (:mod:`engine.actors`) run them on bounded
channels, and replay drives them directly, event by event, from
:class:`ReplayDriver`.
"""

from ._driver import ReplayDriver as ReplayDriver
from ._execution import ExecutionCore as ExecutionCore
from ._execution import record_key as record_key
from ._risk import RiskCore as RiskCore
from ._symbol import SymbolCore as SymbolCore

__all__ = ["ExecutionCore", "ReplayDriver", "RiskCore", "SymbolCore", "record_key"]
