"""Helpers for testing code built on the engine (shipped, like ``trio.testing``)."""

from ._helpers import quiet_logger as quiet_logger
from ._helpers import replay as replay
from ._helpers import replay_config as replay_config
from ._helpers import scheduler_seed as scheduler_seed
from ._strategy import StrategyRun as StrategyRun
from ._strategy import run_strategy as run_strategy

__all__ = [
    "StrategyRun",
    "quiet_logger",
    "replay",
    "replay_config",
    "run_strategy",
    "scheduler_seed",
]
