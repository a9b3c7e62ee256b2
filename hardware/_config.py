"""``[hardware]``: the hardware actor's configuration.

Field types are limited to what the engine's TOML loader converts (bool, int,
tuple[int, ...]); "automatic" is an empty tuple, never ``None``. The
annotations are real types (no ``from __future__ import annotations``) so that
``attrs.fields(HardwareConfig)[i].type`` is usable without resolving.
"""

from typing import Any

import attrs
from attrs import validators as v

_cpu_ids = v.deep_iterable(
    member_validator=[v.instance_of(int), v.ge(0)], iterable_validator=v.instance_of(tuple)
)


def _gc_thresholds(_inst: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    # Worded like attrs' own messages ("'name' must ...: value") so the engine's
    # loader names the key.
    if len(value) > 3:
        raise ValueError(f"'{attribute.name}' must hold at most 3 values: {list(value)}")


@attrs.frozen(kw_only=True)
class HardwareConfig:
    """How the process is placed on the machine.

    Attributes:
        enabled: apply anything at all; False leaves the process as it is (the
            plan is still computed and loop lag still measured).
        pin: set CPU affinities.
        trio_cpus: CPUs for the Trio thread; empty: one CPU chosen by the plan.
        onnx_cpus: CPUs for onnxruntime's intra-op threads, one per thread in
            turn; empty: chosen by the plan.
        numba_cpus: CPUs for numba's parallel thread pool; empty: chosen.
        worker_cpus: CPUs for worker threads; empty: chosen.
        onnx_threads: onnxruntime intra-op threads per session (the calling
            thread is the first).
        numba_threads: threads for numba's parallel kernels; 0 leaves numba's
            pool alone (not started).
        avoid_smt_siblings: keep the other hardware threads of the Trio
            thread's core free while other CPUs are left.
        nice: nice value (-20..19) for every thread of the process; set only
            when it differs from the current one.
        sched_fifo: run the Trio thread under ``SCHED_FIFO``.
        fifo_priority: its real-time priority (1..99).
        lock_memory: ``mlockall`` current and future pages.
        gc_thresholds: ``gc.set_threshold`` values (up to 3); empty: unchanged.
        gc_freeze: ``gc.freeze()`` once warm-up is over.
        lag_interval_ms: how often the event-loop lag is sampled; 0: never.
        lag_window: how many recent lag samples the percentiles cover.
    """

    enabled: bool = attrs.field(default=True, validator=v.instance_of(bool))
    pin: bool = attrs.field(default=True, validator=v.instance_of(bool))
    trio_cpus: tuple[int, ...] = attrs.field(default=(), validator=_cpu_ids)
    onnx_cpus: tuple[int, ...] = attrs.field(default=(), validator=_cpu_ids)
    numba_cpus: tuple[int, ...] = attrs.field(default=(), validator=_cpu_ids)
    worker_cpus: tuple[int, ...] = attrs.field(default=(), validator=_cpu_ids)
    onnx_threads: int = attrs.field(default=1, validator=[v.instance_of(int), v.ge(1)])
    numba_threads: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0)])
    avoid_smt_siblings: bool = attrs.field(default=True, validator=v.instance_of(bool))
    nice: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(-20), v.le(19)])
    sched_fifo: bool = attrs.field(default=False, validator=v.instance_of(bool))
    fifo_priority: int = attrs.field(default=10, validator=[v.instance_of(int), v.ge(1), v.le(99)])
    lock_memory: bool = attrs.field(default=False, validator=v.instance_of(bool))
    gc_thresholds: tuple[int, ...] = attrs.field(
        default=(50_000, 50, 100),
        validator=[
            v.deep_iterable(
                member_validator=[v.instance_of(int), v.ge(0)],
                iterable_validator=v.instance_of(tuple),
            ),
            _gc_thresholds,
        ],
    )
    gc_freeze: bool = attrs.field(default=True, validator=v.instance_of(bool))
    lag_interval_ms: int = attrs.field(default=100, validator=[v.instance_of(int), v.ge(0)])
    lag_window: int = attrs.field(default=4096, validator=[v.instance_of(int), v.gt(0)])
