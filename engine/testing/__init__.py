"""Helpers for testing code built on the engine (shipped, like ``trio.testing``)."""

from ._helpers import quiet_logger as quiet_logger
from ._helpers import replay as replay
from ._helpers import replay_config as replay_config
from ._helpers import scheduler_seed as scheduler_seed

__all__ = ["quiet_logger", "replay", "replay_config", "scheduler_seed"]
