"""Applying a :class:`PinningPlan` to the running process, and reading it back.

Linux scopes: CPU affinity (``sched_setaffinity(0, ...)``), the scheduling
policy (``sched_setscheduler(0, ...)``) and, unlike POSIX, the nice value are
attributes of a *thread*, and a new thread inherits them from the thread that
creates it. So :func:`apply_plan` runs in the Trio thread and sets that
thread's affinity and policy (the nice value is set on every thread of the
process). Threads created afterwards from the Trio thread start with the Trio
thread's CPUs and policy: worker threads call :func:`setup_worker_thread`
when they start (worker CPUs, no real-time policy), and thread pools that
cannot be set up thread by thread (numba's) are created inside
:func:`spawn_affinity`.

Nothing here raises because the process lacks a right: each refusal becomes a
:class:`Refusal` in :class:`AppliedSettings` and one warning in the log that
says what was refused and what would allow it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
from structlog.typing import FilteringBoundLogger

from ._errors import PinningError
from ._plan import PinningPlan
from ._topology import format_cpulist

_MCL_CURRENT = 1
_MCL_FUTURE = 2
_POLICIES = ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE", "SCHED_FIFO", "SCHED_RR")
_NICE_HINT = "lowering the nice value needs CAP_SYS_NICE or RLIMIT_NICE (ulimit -e)"
_FIFO_HINT = (
    "SCHED_FIFO needs CAP_SYS_NICE or RLIMIT_RTPRIO >= the priority (ulimit -r); "
    "in a container also --cap-add=SYS_NICE and real-time runtime for its cgroup"
)
_MLOCK_HINT = "mlockall needs CAP_IPC_LOCK or an RLIMIT_MEMLOCK (ulimit -l) above the process size"


@attrs.frozen(kw_only=True)
class Refusal:
    """A setting the system did not allow.

    Attributes:
        setting: ``affinity``, ``nice``, ``sched_fifo``, ``lock_memory``,
            ``gc_thresholds`` or ``numba``.
        reason: what the system said, and what would allow it.
    """

    setting: str
    reason: str


@attrs.frozen(kw_only=True)
class AppliedSettings:
    """What :func:`apply_plan` found, what it changed, and what was refused.

    Every "after" value is read back from the system, not copied from the plan.

    Attributes:
        plan: the plan that was applied.
        affinity_before: the calling thread's CPUs before.
        affinity: its CPUs after (``os.sched_getaffinity(0)``).
        nice_before: the nice value before.
        nice: the nice value after.
        scheduler_before: the calling thread's policy before (``SCHED_OTHER``...).
        scheduler: its policy after.
        fifo_priority: its real-time priority after (0 unless FIFO or RR).
        memory_locked: whether ``mlockall`` succeeded.
        gc_thresholds_before: ``gc.get_threshold()`` before.
        gc_thresholds: ``gc.get_threshold()`` after.
        numba_threads: numba's thread count for the calling thread after; 0 when
            numba was left alone.
        refused: what the system did not allow.
        notes: anything else worth knowing (a read-back that differs).
    """

    plan: PinningPlan
    affinity_before: tuple[int, ...]
    affinity: tuple[int, ...]
    nice_before: int
    nice: int
    scheduler_before: str
    scheduler: str
    fifo_priority: int
    memory_locked: bool
    gc_thresholds_before: tuple[int, ...]
    gc_thresholds: tuple[int, ...]
    numba_threads: int
    refused: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()


def _reason(exc: BaseException, hint: str = "") -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    text = text or type(exc).__name__
    return f"{text}; {hint}" if hint else text


def current_affinity() -> tuple[int, ...]:
    """The calling thread's CPUs, or ``()`` where the platform cannot say."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return ()


def thread_affinities() -> dict[int, tuple[int, ...]]:
    """Every thread of this process (by kernel thread id) and its CPUs.

    Threads that end while they are read are left out; ``{}`` where ``/proc`` or
    the affinity call is missing.
    """
    out: dict[int, tuple[int, ...]] = {}
    try:
        tids = sorted(int(p.name) for p in Path("/proc/self/task").iterdir() if p.name.isdigit())
    except OSError:
        return out
    for tid in tids:
        try:
            out[tid] = tuple(sorted(os.sched_getaffinity(tid)))
        except (AttributeError, OSError):
            continue
    return out


def pin_current_thread(cpus: Iterable[int]) -> tuple[int, ...]:
    """Pin the calling thread to ``cpus`` and return its CPUs as read back.

    Worker threads call this first thing (a thread starts with the CPUs of the
    thread that created it, usually the Trio thread). The read-back can be a
    subset of ``cpus`` when a cpuset narrows it.

    Raises:
        PinningError: the platform has no affinity call, or the kernel refused
            (no usable CPU in ``cpus``, no right to change it).
    """
    wanted = tuple(sorted(set(cpus)))
    if not wanted:
        raise PinningError(wanted, "no CPUs to pin to")
    try:
        os.sched_setaffinity(0, wanted)
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError as exc:
        raise PinningError(wanted, "CPU affinity is not supported on this platform") from exc
    except OSError as exc:
        raise PinningError(
            wanted, f"cannot pin to CPUs {format_cpulist(wanted)}: {_reason(exc)}"
        ) from exc


def setup_worker_thread(plan: PinningPlan) -> tuple[int, ...]:
    """Make the calling worker thread follow the plan; call it first thing in the thread.

    A thread starts with the CPUs and scheduling policy of the thread that
    created it, usually the Trio thread. This pins it to ``plan.worker_cpus``
    (when the plan pins) and puts it back under ``SCHED_OTHER`` if it inherited
    a real-time policy, so that workers never compete with the Trio thread at
    real-time priority.

    Returns:
        The thread's CPUs, read back.

    Raises:
        PinningError: the kernel refused the worker CPUs.
    """
    if not plan.enabled:
        return current_affinity()
    policy, _ = _scheduler()
    if policy in ("SCHED_FIFO", "SCHED_RR"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # lowering: always allowed
    return pin_current_thread(plan.worker_cpus) if plan.pin else current_affinity()


def _policy_name(policy: int) -> str:
    for name in _POLICIES:
        if getattr(os, name, None) == policy:
            return name
    return f"policy {policy}"


def _scheduler() -> tuple[str, int]:
    try:
        return _policy_name(os.sched_getscheduler(0)), os.sched_getparam(0).sched_priority
    except (AttributeError, OSError):
        return "unknown", 0


def _nice() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


@contextlib.contextmanager
def spawn_affinity(cpus: Iterable[int]) -> Iterator[tuple[int, ...]]:
    """Run the body with the calling thread on ``cpus``, so threads it creates start there.

    For thread pools that cannot be pinned thread by thread (numba's parallel
    pool starts on its first use; onnxruntime's inter-op pool). A real-time
    policy is not passed on either: the thread runs under ``SCHED_OTHER`` for the
    body. Both are restored afterwards. If the CPUs cannot be set, the body runs
    where the thread is.

    Yields:
        The calling thread's CPUs inside the body.
    """
    before = current_affinity()
    policy, priority = _scheduler()
    realtime = policy in ("SCHED_FIFO", "SCHED_RR")
    moved = False
    try:
        if realtime:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        try:
            inside = pin_current_thread(cpus)
            moved = True
        except PinningError:
            inside = before
        yield inside
    finally:
        if moved and before:
            os.sched_setaffinity(0, before)
        if realtime:
            os.sched_setscheduler(0, getattr(os, policy), os.sched_param(priority))


def freeze_gc(*, collect: bool = True, count: bool = True) -> int | None:
    """Collect, then move every tracked object to the permanent generation.

    Call once after warm-up: objects that live for the whole run (config, kernels,
    sessions, preallocated state) are then never scanned again, so later
    collections are shorter. The freeze itself only relinks the generations' lists;
    the collection and the count each walk the whole heap.

    Args:
        collect: run a full collection first, so that no garbage is frozen with the
            live objects. After the engine's imports it takes 30-90 ms and finds
            little (56 objects after the shipped replay's set-up, 180 with the ML
            filter). A process that runs for days pays it once; a bounded run (a
            replay) can skip it and keep that garbage until :func:`gc.unfreeze`.
        count: count the frozen objects (5-10 ms after the engine's imports).

    Returns:
        How many objects are frozen (None when not counted).
    """
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count() if count else None


def thread_environment(plan: PinningPlan) -> dict[str, str]:
    """Environment variables that cap native thread pools, for a fresh process.

    They take effect only when set before numpy, numba and onnxruntime are
    imported (a systemd unit, a container's environment). numba's pool size is
    fixed at import (``NUMBA_NUM_THREADS``, default: every CPU) and BLAS libraries
    start a thread per CPU unless told otherwise.
    """
    return {
        "NUMBA_NUM_THREADS": str(max(1, plan.numba_threads)),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def onnx_session_settings(plan: PinningPlan) -> dict[str, Any]:
    """onnxruntime session settings that follow the plan.

    Returns:
        ``intra_op_num_threads``, ``inter_op_num_threads`` and the session config
        entries (``config_entries``); with pinning on, the intra-op threads that
        onnxruntime creates (all but the first: the caller's thread runs as
        thread 0) are pinned by ``session.intra_op_thread_affinities``, whose
        processor ids count from 1.
    """
    entries: dict[str, str] = {}
    if plan.enabled and plan.pin and plan.onnx_threads > 1:
        entries["session.intra_op_thread_affinities"] = ";".join(
            str(cpu + 1) for cpu in plan.onnx_cpus[1:]
        )
    return {
        "intra_op_num_threads": plan.onnx_threads,
        "inter_op_num_threads": 1,
        "config_entries": entries,
    }


def configure_onnx_session(options: Any, plan: PinningPlan) -> None:
    """Set an ``onnxruntime.SessionOptions`` from the plan (see :func:`onnx_session_settings`).

    The hardware package does not import onnxruntime; ``options`` is whatever the
    model actor built.
    """
    settings = onnx_session_settings(plan)
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    for key, value in settings["config_entries"].items():
        options.add_session_config_entry(key, value)


def configure_numba(plan: PinningPlan) -> tuple[int, tuple[Refusal, ...]]:
    """Start numba's parallel pool on ``plan.numba_cpus`` and set its thread count.

    Does nothing when ``plan.numba_threads`` is 0: starting the pool starts
    ``NUMBA_NUM_THREADS`` threads, which only pays when kernels are parallel.
    The count is per calling thread in numba; call this from the thread that
    runs the kernels. With more than one thread the pool is started here (one
    tiny parallel kernel is compiled and run, under a second) so that its
    threads are created on ``plan.numba_cpus``.

    Returns:
        numba's thread count for the calling thread (0 if untouched) and any refusal.
    """
    if not plan.enabled or plan.numba_threads == 0:
        return 0, ()
    refused: list[Refusal] = []
    cpus = plan.numba_cpus if plan.pin else current_affinity()
    try:
        # Imported here, on the pool's CPUs: numba sizes its pool at import from
        # the importing thread's affinity (unless NUMBA_NUM_THREADS is set).
        with spawn_affinity(cpus), warnings.catch_warnings():
            # A threading layer that cannot load warns and falls back; that is
            # a degraded start, not an error.
            warnings.simplefilter("ignore")
            import numba  # slow to import: only when asked for

            n = min(plan.numba_threads, numba.config.NUMBA_NUM_THREADS)
            numba.set_num_threads(n)
            if n > 1:
                _start_numba_pool(numba)
        if n < plan.numba_threads:
            refused.append(
                Refusal(
                    setting="numba",
                    reason=(
                        f"{plan.numba_threads} threads asked for, NUMBA_NUM_THREADS is "
                        f"{numba.config.NUMBA_NUM_THREADS}; using {n}"
                    ),
                )
            )
        return numba.get_num_threads(), tuple(refused)
    except ImportError as exc:
        return 0, (Refusal(setting="numba", reason=f"numba is not importable: {exc}"),)
    except Exception as exc:  # numba raises several types for a pool that cannot start
        return 0, (Refusal(setting="numba", reason=f"cannot start numba's pool: {exc!r}"),)


def _start_numba_pool(numba: Any) -> None:
    # Some threading layers (OpenMP) create their threads at the first parallel
    # region, not when the layer loads: run one here, on the pool's CPUs.
    @numba.njit(parallel=True)
    def touch(n: int) -> int:
        total = 0
        for i in numba.prange(n):
            total += i
        return total

    touch(64)


def _set_nice(value: int) -> None:
    # Linux keeps the nice value per thread: the calling thread first (so a
    # refusal changes nothing), then every other thread of the process.
    os.setpriority(os.PRIO_PROCESS, 0, value)
    try:
        tids = [int(p.name) for p in Path("/proc/self/task").iterdir() if p.name.isdigit()]
    except OSError:
        tids = []
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.setpriority(os.PRIO_PROCESS, tid, value)


def _mlockall(flags: int) -> None:
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "mlockall is only used on Linux")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _munlockall() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.munlockall()


def apply_plan(plan: PinningPlan, *, log: FilteringBoundLogger) -> AppliedSettings:
    """Apply the plan to the calling thread and the process; read everything back.

    Call it from the Trio thread, before thread pools are created. In order:
    CPU affinity of the calling thread, the nice value of every thread, the
    calling thread's ``SCHED_FIFO`` policy, ``mlockall``, GC thresholds, numba's
    pool. A refused setting is logged as a warning and recorded; the rest still
    goes ahead.

    Args:
        plan: from :func:`make_plan`.
        log: where to report what was applied and refused.

    Returns:
        What was applied, read back from the system.
    """
    affinity_before = current_affinity()
    nice_before = _nice()
    scheduler_before, _ = _scheduler()
    gc_before = gc.get_threshold()
    refused: list[Refusal] = []
    notes: list[str] = []
    locked = False
    numba_threads = 0

    if plan.enabled:
        if plan.pin:
            try:
                after = pin_current_thread(plan.trio_cpus)
                if after != tuple(sorted(set(plan.trio_cpus))):
                    notes.append(
                        f"asked for CPUs {format_cpulist(plan.trio_cpus)}, "
                        f"got {format_cpulist(after)}"
                    )
            except PinningError as exc:
                refused.append(Refusal(setting="affinity", reason=str(exc)))
        if plan.nice != nice_before:
            try:
                _set_nice(plan.nice)
            except (AttributeError, OSError) as exc:
                hint = _NICE_HINT if isinstance(exc, PermissionError) else ""
                refused.append(Refusal(setting="nice", reason=_reason(exc, hint)))
        if plan.sched_fifo:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(plan.fifo_priority))
            except (AttributeError, OSError) as exc:
                hint = _FIFO_HINT if isinstance(exc, PermissionError) else ""
                refused.append(Refusal(setting="sched_fifo", reason=_reason(exc, hint)))
        if plan.lock_memory:
            try:
                _mlockall(_MCL_CURRENT | _MCL_FUTURE)
                locked = True
            except OSError as exc:
                hint = _MLOCK_HINT if exc.errno in (errno.EPERM, errno.ENOMEM) else ""
                refused.append(Refusal(setting="lock_memory", reason=_reason(exc, hint)))
        if plan.gc_thresholds:
            gc.set_threshold(*plan.gc_thresholds)
        numba_threads, numba_refused = configure_numba(plan)
        refused.extend(numba_refused)

    scheduler, priority = _scheduler()
    applied = AppliedSettings(
        plan=plan,
        affinity_before=affinity_before,
        affinity=current_affinity(),
        nice_before=nice_before,
        nice=_nice(),
        scheduler_before=scheduler_before,
        scheduler=scheduler,
        fifo_priority=priority,
        memory_locked=locked,
        gc_thresholds_before=gc_before,
        gc_thresholds=gc.get_threshold(),
        numba_threads=numba_threads,
        refused=tuple(refused),
        notes=tuple(notes),
    )
    for refusal in applied.refused:
        log.warning(
            f"hardware: {refusal.setting} refused; continuing without it",
            setting=refusal.setting,
            reason=refusal.reason,
        )
    log.info(
        "hardware settings applied" if plan.enabled else "hardware settings disabled",
        cpus=format_cpulist(applied.affinity),
        cpus_before=format_cpulist(affinity_before),
        nice=applied.nice,
        scheduler=applied.scheduler,
        fifo_priority=applied.fifo_priority,
        memory_locked=locked,
        gc_thresholds=list(applied.gc_thresholds),
        numba_threads=numba_threads,
        worker_cpus=format_cpulist(plan.worker_cpus),
        onnx_cpus=[*plan.onnx_cpus],
        refused=[r.setting for r in applied.refused],
        notes=[*plan.notes, *notes],
    )
    return applied


def restore_settings(applied: AppliedSettings, *, log: FilteringBoundLogger) -> tuple[Refusal, ...]:
    """Undo what :func:`apply_plan` changed, from the same thread.

    Affinity, scheduling policy, GC thresholds and the memory lock go back;
    raising the nice value back down needs the same right as lowering it, and
    numba's pool stays. Refusals are logged as warnings.

    Returns:
        What could not be restored.
    """
    refused: list[Refusal] = []
    if applied.affinity != applied.affinity_before and applied.affinity_before:
        try:
            pin_current_thread(applied.affinity_before)
        except PinningError as exc:
            refused.append(Refusal(setting="affinity", reason=str(exc)))
    policy = getattr(os, applied.scheduler_before, None)
    if applied.scheduler != applied.scheduler_before and isinstance(policy, int):
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))
        except OSError as exc:
            refused.append(Refusal(setting="sched_fifo", reason=_reason(exc)))
    if applied.nice != applied.nice_before:
        try:
            _set_nice(applied.nice_before)
        except OSError as exc:
            hint = _NICE_HINT if isinstance(exc, PermissionError) else ""
            refused.append(Refusal(setting="nice", reason=_reason(exc, hint)))
    if applied.memory_locked:
        _munlockall()
    gc.set_threshold(*applied.gc_thresholds_before)
    for refusal in refused:
        log.warning(
            f"hardware: could not restore {refusal.setting}",
            setting=refusal.setting,
            reason=refusal.reason,
        )
    return tuple(refused)
