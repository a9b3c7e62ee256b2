"""Hardware: CPU topology, pinning, priority and memory settings, and what was applied.

Read the machine with :func:`read_topology`, decide with :func:`make_plan`
(pure), apply from the Trio thread with :func:`apply_plan` and keep the
returned :class:`AppliedSettings`. ``python -m hardware`` prints the topology
and the plan. Nothing here needs Trio; the engine's hardware actor drives it.
"""

from ._apply import AppliedSettings as AppliedSettings
from ._apply import Refusal as Refusal
from ._apply import apply_plan as apply_plan
from ._apply import configure_numba as configure_numba
from ._apply import configure_onnx_session as configure_onnx_session
from ._apply import current_affinity as current_affinity
from ._apply import freeze_gc as freeze_gc
from ._apply import onnx_session_settings as onnx_session_settings
from ._apply import pin_current_thread as pin_current_thread
from ._apply import restore_settings as restore_settings
from ._apply import setup_worker_thread as setup_worker_thread
from ._apply import spawn_affinity as spawn_affinity
from ._apply import thread_affinities as thread_affinities
from ._apply import thread_environment as thread_environment
from ._config import HardwareConfig as HardwareConfig
from ._errors import CpuListError as CpuListError
from ._errors import HardwareError as HardwareError
from ._errors import PinningError as PinningError
from ._lag import LoopLagStats as LoopLagStats
from ._plan import PinningPlan as PinningPlan
from ._plan import make_plan as make_plan
from ._topology import Cache as Cache
from ._topology import Core as Core
from ._topology import NumaNode as NumaNode
from ._topology import Topology as Topology
from ._topology import format_cpulist as format_cpulist
from ._topology import parse_cpulist as parse_cpulist
from ._topology import read_topology as read_topology

__all__ = [
    "AppliedSettings",
    "Cache",
    "Core",
    "CpuListError",
    "HardwareConfig",
    "HardwareError",
    "LoopLagStats",
    "NumaNode",
    "PinningError",
    "PinningPlan",
    "Refusal",
    "Topology",
    "apply_plan",
    "configure_numba",
    "configure_onnx_session",
    "current_affinity",
    "format_cpulist",
    "freeze_gc",
    "make_plan",
    "onnx_session_settings",
    "parse_cpulist",
    "pin_current_thread",
    "read_topology",
    "restore_settings",
    "setup_worker_thread",
    "spawn_affinity",
    "thread_affinities",
    "thread_environment",
]
