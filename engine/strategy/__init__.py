"""Strategies: njit kernels that turn market batches into signals, behind one interface."""

from pathlib import Path as _Path

from ..indicators._common import drop_stale_kernel_cache as _drop_stale_kernel_cache

# The strategy kernel inlines indicator kernels: its numba cache is stale when either
# package changed (numba only watches the kernel's own file).
_drop_stale_kernel_cache(_Path(__file__).parent, also=[_Path(__file__).parents[1] / "indicators"])

from ._base import Mode as Mode  # noqa: E402 - after the cache check
from ._base import OrderSpec as OrderSpec  # noqa: E402
from ._base import QuotingStrategy as QuotingStrategy  # noqa: E402
from ._base import Signal as Signal  # noqa: E402
from ._base import Strategy as Strategy  # noqa: E402
from ._base import StrategySpec as StrategySpec  # noqa: E402
from ._base import load_strategy as load_strategy  # noqa: E402
from ._base import make_strategy as make_strategy  # noqa: E402
from ._base import resolve_strategy as resolve_strategy  # noqa: E402
from ._base import state_slot as state_slot  # noqa: E402
from ._base import store_entry as store_entry  # noqa: E402
from ._base import strategy_class as strategy_class  # noqa: E402
from ._base import strategy_label as strategy_label  # noqa: E402

__all__ = [
    "Mode",
    "OrderSpec",
    "QuotingStrategy",
    "Signal",
    "Strategy",
    "StrategySpec",
    "load_strategy",
    "make_strategy",
    "resolve_strategy",
    "state_slot",
    "store_entry",
    "strategy_class",
    "strategy_label",
]
