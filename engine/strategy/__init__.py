"""Strategies: njit kernels that turn market batches into signals."""

from pathlib import Path as _Path

from ..indicators._common import drop_stale_kernel_cache as _drop_stale_kernel_cache

# The strategy kernel inlines indicator kernels: its numba cache is stale when either
# package changed (numba only watches the kernel's own file).
_drop_stale_kernel_cache(_Path(__file__).parent, also=[_Path(__file__).parents[1] / "indicators"])

from ._ema_cross import Mode as Mode  # noqa: E402 - after the cache check
from ._ema_cross import Signal as Signal  # noqa: E402

__all__ = ["Mode", "Signal"]
