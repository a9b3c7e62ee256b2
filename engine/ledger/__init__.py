"""The one ledger of positions, fed by fills and adoptions, read by risk, the symbol
actors and the report."""

from ._ledger import PositionLedger as PositionLedger
from ._ledger import SymbolAccount as SymbolAccount

__all__ = ["PositionLedger", "SymbolAccount"]
