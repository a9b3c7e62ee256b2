"""Risk: portfolio metrics (VaR/CVaR, Sharpe, Sortino, drawdown, profit factor)."""

from ._metrics import RiskMetrics as RiskMetrics
from ._metrics import historical_cvar as historical_cvar
from ._metrics import historical_var as historical_var
from ._metrics import parametric_cvar as parametric_cvar
from ._metrics import parametric_var as parametric_var
from ._metrics import profit_factor as profit_factor
from ._metrics import sharpe_ratio as sharpe_ratio
from ._metrics import sortino_ratio as sortino_ratio

__all__ = [
    "RiskMetrics",
    "historical_cvar",
    "historical_var",
    "parametric_cvar",
    "parametric_var",
    "profit_factor",
    "sharpe_ratio",
    "sortino_ratio",
]
