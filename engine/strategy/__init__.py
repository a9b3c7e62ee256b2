"""Strategies: njit kernels that turn market batches into signals."""

from ._ema_cross import Mode as Mode
from ._ema_cross import Signal as Signal

__all__ = ["Mode", "Signal"]
