"""Indicator kernels: TA-Lib-compatible batch functions and O(1) incremental updates."""

from ._ema_rsi import EMA_STATE_SIZE as EMA_STATE_SIZE
from ._ema_rsi import RSI_STATE_SIZE as RSI_STATE_SIZE
from ._ema_rsi import ema as ema
from ._ema_rsi import ema_state as ema_state
from ._ema_rsi import ema_update as ema_update
from ._ema_rsi import rsi as rsi
from ._ema_rsi import rsi_state as rsi_state
from ._ema_rsi import rsi_update as rsi_update

__all__ = [
    "EMA_STATE_SIZE",
    "RSI_STATE_SIZE",
    "ema",
    "ema_state",
    "ema_update",
    "rsi",
    "rsi_state",
    "rsi_update",
]
