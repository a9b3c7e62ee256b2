"""``[hardware]``: the hardware actor's configuration.

Field types are limited to what the engine's TOML loader converts (bool, int,
float, tuple[int, ...]); "automatic" is an empty tuple, never ``None``. The
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


def _seconds(value: Any) -> Any:
    # An integer is a number of seconds too (TOML ``60``); a bool is not.
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _mmap_threshold(_inst: Any, attribute: attrs.Attribute, value: int) -> None:
    # Up to glibc's own ceiling for its dynamic threshold (32 MiB on 64-bit); below
    # a few pages every small buffer would be a system call.
    if value != 0 and not 16 <= value <= 32_768:
        raise ValueError(
            f"'{attribute.name}' must be 0 (glibc's default) or 16..32768 KiB: {value}"
        )


def _trim_interval(_inst: Any, attribute: attrs.Attribute, value: float) -> None:
    # A trim every few milliseconds would only burn a core: 0 (off) or a second up.
    if value != 0 and not 1 <= value <= 86_400:
        raise ValueError(f"'{attribute.name}' must be 0 (off) or 1..86400 seconds: {value}")


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
        malloc_trim_s: seconds between calls of glibc's ``malloc_trim(0)`` in
            paper and live runs, handing the heap's free pages back to the
            kernel (engine._memory); 0: never. Not covered by ``enabled`` (it
            places nothing); skipped where the C library has no ``malloc_trim``.
        malloc_mmap_threshold_kb: glibc's ``M_MMAP_THRESHOLD`` in paper and live
            runs, in KiB: blocks this large or larger get a mapping of their own,
            returned to the kernel when freed, instead of fragmenting the heap
            (engine._memory); 0 leaves glibc's dynamic threshold. Not glibc:
            skipped. Default 64: with ``malloc_arena_max = 1`` the soak measured
            glibc's free memory growing 5-10x slower (engine._memory).
        malloc_arena_max: glibc's ``M_ARENA_MAX`` in paper and live runs: at most
            this many malloc arenas (one per allocating thread otherwise, up to 8
            per core); 0 leaves glibc's. Default 1 (see above). Not glibc: skipped.
        malloc_at_exec: apply the two settings above from the process's start: a
            paper or live ``python -m engine`` executes itself again at once (same
            PID and command line) with ``GLIBC_TUNABLES`` holding them, merged with
            the user's, so that start-up's allocations are laid out that way too
            (engine._memory); not when the environment already holds them (glibc
            read them), nor in replays. False: ``mallopt`` at the run's start
            instead; not glibc: nothing. The run report says which way
            (``malloc_trim.mallopt.applied``: exec, mallopt or none).
        numpy_cache_fill: fill numpy's cache of small freed buffers (3.6 MB) at
            the start of paper and live runs instead of letting it fill over hours
            as new sizes come (engine._memory.fill_numpy_cache): RSS is flat after
            warm-up instead of creeping up to it.
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
    malloc_trim_s: float = attrs.field(
        default=60.0, converter=_seconds, validator=[v.instance_of(float), _trim_interval]
    )
    malloc_mmap_threshold_kb: int = attrs.field(
        default=64, validator=[v.instance_of(int), _mmap_threshold]
    )
    malloc_arena_max: int = attrs.field(
        default=1, validator=[v.instance_of(int), v.ge(0), v.le(1024)]
    )
    malloc_at_exec: bool = attrs.field(default=True, validator=v.instance_of(bool))
    numpy_cache_fill: bool = attrs.field(default=True, validator=v.instance_of(bool))
