"""Market data feeds: capture readers, the tape and the tick store (the live feed: ``_live``)."""

from ._capture import SPOT_SUFFIX as SPOT_SUFFIX
from ._capture import CaptureLimits as CaptureLimits
from ._capture import CaptureStats as CaptureStats
from ._capture import expand_paths as expand_paths
from ._capture import merge_captures as merge_captures
from ._capture import parse_line as parse_line
from ._capture import read_capture as read_capture
from ._capture import scan_symbols as scan_symbols
from ._capture import unsupported_symbol as unsupported_symbol
from ._capture import untradeable as untradeable
from ._store import StoreEntry as StoreEntry
from ._store import TickStore as TickStore
from ._store import default_store_dir as default_store_dir
from ._store import open_tick_store as open_tick_store
from ._store import store_dir as store_dir
from ._tape import Tape as Tape
from ._tape import load_tape as load_tape

__all__ = [
    "SPOT_SUFFIX",
    "CaptureLimits",
    "CaptureStats",
    "StoreEntry",
    "Tape",
    "TickStore",
    "default_store_dir",
    "expand_paths",
    "load_tape",
    "merge_captures",
    "open_tick_store",
    "parse_line",
    "read_capture",
    "scan_symbols",
    "store_dir",
    "unsupported_symbol",
    "untradeable",
]
