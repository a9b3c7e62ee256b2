"""Portfolio optimisation (cvxpy) and the portfolio actor.

The optimiser's names are imported on first use: cvxpy and scikit-learn take
about 2 s to import, which the command line should not pay for a single-symbol
run or a usage error.
"""

from typing import Any

from ._actor import PortfolioActor as PortfolioActor
from ._actor import PortfolioStats as PortfolioStats

_LAZY = {
    "Constraints",
    "Objective",
    "Optimizer",
    "PortfolioError",
    "Solution",
    "risk_contributions",
    "shrunk_covariance",
}

__all__ = [
    "Constraints",
    "Objective",
    "Optimizer",
    "PortfolioActor",
    "PortfolioError",
    "PortfolioStats",
    "Solution",
    "risk_contributions",
    "shrunk_covariance",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _optimize

        return getattr(_optimize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
