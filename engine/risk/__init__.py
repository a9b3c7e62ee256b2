"""Risk: portfolio metrics (VaR/CVaR, Sharpe, Sortino, drawdown, profit factor) and sizing."""

from ._metrics import RiskMetrics as RiskMetrics
from ._metrics import historical_cvar as historical_cvar
from ._metrics import historical_var as historical_var
from ._metrics import parametric_cvar as parametric_cvar
from ._metrics import parametric_var as parametric_var
from ._metrics import profit_factor as profit_factor
from ._metrics import sharpe_ratio as sharpe_ratio
from ._metrics import sortino_ratio as sortino_ratio
from ._sizing import SizingInputs as SizingInputs
from ._sizing import kelly_fraction as kelly_fraction
from ._sizing import size_notional as size_notional

__all__ = [
    "RiskMetrics",
    "SizingInputs",
    "historical_cvar",
    "historical_var",
    "kelly_fraction",
    "parametric_cvar",
    "parametric_var",
    "profit_factor",
    "sharpe_ratio",
    "size_notional",
    "sortino_ratio",
]
