"""Market data feeds: capture readers and the replay feed."""

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
from ._replay import ReplayFeed as ReplayFeed

__all__ = [
    "SPOT_SUFFIX",
    "CaptureLimits",
    "CaptureStats",
    "ReplayFeed",
    "expand_paths",
    "merge_captures",
    "parse_line",
    "read_capture",
    "scan_symbols",
    "unsupported_symbol",
    "untradeable",
]
