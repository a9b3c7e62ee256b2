"""Trireme: an actor-model trading engine for Binance USD-M futures, on Trio.

The public API is what this module exports; everything else is private.
"""

from ._api import Result as Result
from ._api import backtest as backtest
from ._config import Config as Config
from ._config import Override as Override
from ._config import config_from_dict as config_from_dict
from ._config import env_overrides as env_overrides
from ._config import load_config as load_config
from ._config import set_overrides as set_overrides
from ._errors import ActorFailedError as ActorFailedError
from ._errors import ConfigError as ConfigError
from ._errors import DataError as DataError
from ._errors import EngineError as EngineError
from ._errors import JournalError as JournalError
from ._logging import make_logger as make_logger
from ._replay import run_replay as run_replay
from ._report import RunReport as RunReport
from ._report import SymbolSummary as SymbolSummary
from ._report import report_json as report_json
from ._report import summary_text as summary_text
from ._report import write_report as write_report
from .journal import journal_digest as journal_digest

__all__ = [
    "ActorFailedError",
    "Config",
    "ConfigError",
    "DataError",
    "EngineError",
    "JournalError",
    "Override",
    "Result",
    "RunReport",
    "SymbolSummary",
    "backtest",
    "config_from_dict",
    "env_overrides",
    "journal_digest",
    "load_config",
    "make_logger",
    "report_json",
    "run_replay",
    "set_overrides",
    "summary_text",
    "write_report",
]
