"""The simulated venue used by replay (and, later, paper trading)."""

from ._venue import SimVenue as SimVenue
from ._venue import SymbolAccount as SymbolAccount

__all__ = ["SimVenue", "SymbolAccount"]
