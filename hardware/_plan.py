"""The pinning plan: which CPUs each kind of thread gets (pure; no system calls).

Rules, in order:

1. Only CPUs that are online and in the process's allowed set are used; a
   configured CPU outside them is dropped with a note.
2. The Trio thread gets one CPU on a core of its own: an isolated core
   (``isolcpus=``) if there is one, otherwise not the core of CPU 0 (which
   takes most interrupts and kernel housekeeping) when another core exists,
   on the NUMA node with the most usable cores.
3. The other hardware threads of the Trio core (SMT siblings) stay free while
   any other core is left (``avoid_smt_siblings``).
4. onnxruntime's intra-op threads, then numba's pool, take one CPU each from the
   other cores: first one hardware thread per physical core, then the cores'
   remaining SMT threads. Cores on the Trio thread's NUMA node come before the
   others (memory and L3 locality), and within a node CPU 0's core comes last.
   Threads share CPUs, with a note, when there are fewer CPUs than threads.
5. Worker threads get the CPUs nobody else got, or share, with a note.

With one usable CPU there is nothing to place: pinning is skipped and the plan
says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import attrs

from ._config import HardwareConfig
from ._topology import Topology, format_cpulist


@attrs.frozen(kw_only=True)
class PinningPlan:
    """What :func:`apply_plan` would do; the resolved form of the config.

    Attributes:
        enabled: apply anything at all.
        pin: set CPU affinities.
        trio_cpus: the Trio (event loop) thread's CPUs.
        onnx_cpus: one CPU per onnxruntime intra-op thread; the first is for the
            thread that calls ``session.run``, the rest are passed to
            onnxruntime (see :func:`onnx_session_settings`).
        numba_cpus: the CPUs numba's parallel pool is started on (empty when
            ``numba_threads`` is 0).
        worker_cpus: the CPUs worker threads pin themselves to.
        onnx_threads: onnxruntime intra-op threads per session.
        numba_threads: numba parallel threads; 0 leaves numba alone.
        nice: nice value for the process's threads.
        sched_fifo: put the Trio thread under ``SCHED_FIFO``.
        fifo_priority: its real-time priority.
        lock_memory: ``mlockall`` the process.
        gc_thresholds: ``gc.set_threshold`` values; empty: unchanged.
        gc_freeze: ``gc.freeze()`` after warm-up.
        notes: what the plan had to compromise on, in words.
    """

    enabled: bool
    pin: bool
    trio_cpus: tuple[int, ...]
    onnx_cpus: tuple[int, ...]
    numba_cpus: tuple[int, ...]
    worker_cpus: tuple[int, ...]
    onnx_threads: int
    numba_threads: int
    nice: int
    sched_fifo: bool
    fifo_priority: int
    lock_memory: bool
    gc_thresholds: tuple[int, ...]
    gc_freeze: bool
    notes: tuple[str, ...] = ()


def _keep(
    requested: Sequence[int], usable: set[int], what: str, notes: list[str]
) -> tuple[int, ...]:
    kept = tuple(dict.fromkeys(c for c in requested if c in usable))
    dropped = [c for c in requested if c not in usable]
    if dropped:
        notes.append(
            f"hardware.{what}: CPUs {format_cpulist(dropped)} are not usable by this process; "
            "dropped"
        )
        if not kept:
            notes.append(f"hardware.{what}: no usable CPU left; chosen automatically")
    return kept


def _cycle(source: Sequence[int], n: int) -> tuple[int, ...]:
    return tuple(source[i % len(source)] for i in range(n))


def _describe(cpus: Iterable[int]) -> str:
    listed = format_cpulist(cpus)
    return f"CPU {listed}" if listed.isdigit() else f"CPUs {listed}"


def make_plan(topology: Topology, config: HardwareConfig) -> PinningPlan:
    """Decide where each kind of thread runs; see the module docstring for the rules.

    Args:
        topology: the machine, from :func:`read_topology`.
        config: the ``[hardware]`` section.

    Returns:
        The plan; it never raises, and compromises are listed in ``notes``.
    """
    notes: list[str] = []
    online = set(topology.online)
    usable = [c for c in topology.allowed if c in online]
    if not usable:
        usable = list(topology.allowed or topology.online)
        notes.append("no allowed CPU is online; using the allowed set as it is")
    usable_set = set(usable)
    if usable_set != online and usable:
        notes.append(f"this process may only use {_describe(usable)} (cpuset or taskset)")

    cores = [tuple(c for c in core.cpus if c in usable_set) for core in topology.cores]
    node_of_core = [core.node for core in topology.cores]
    placed = {c for cpus in cores for c in cpus}
    for cpu in sorted(usable_set - placed):  # a CPU sysfs did not describe: its own core
        cores.append((cpu,))
        node_of_core.append(0)
    indexed = [(i, cpus) for i, cpus in enumerate(cores) if cpus]
    node_size = Counter(node_of_core[i] for i, _ in indexed)
    isolated = set(topology.isolated)

    def housekeeping(cpus: tuple[int, ...]) -> bool:
        return 0 in cpus and len(indexed) > 1

    # -- the Trio thread
    trio = _keep(config.trio_cpus, usable_set, "trio_cpus", notes)
    if not trio and indexed:
        _, cpus = min(
            indexed,
            key=lambda ic: (
                not set(ic[1]) <= isolated,
                housekeeping(ic[1]),
                -node_size[node_of_core[ic[0]]],
                ic[1][0],
            ),
        )
        trio = (cpus[0],)
        if set(cpus) <= isolated:
            notes.append(f"Trio thread on isolated {_describe(trio)}")
    trio_set = set(trio)
    trio_cores = [ic for ic in indexed if trio_set & set(ic[1])]
    trio_node = node_of_core[trio_cores[0][0]] if trio_cores else 0
    siblings = [c for _, cpus in trio_cores for c in cpus if c not in trio_set]

    # -- the CPUs left for everything else, best first
    others = sorted(
        (ic for ic in indexed if ic not in trio_cores),
        key=lambda ic: (node_of_core[ic[0]] != trio_node, housekeeping(ic[1]), ic[1][0]),
    )
    pool = [cpus[0] for _, cpus in others] + [c for _, cpus in others for c in cpus[1:]]
    if not config.avoid_smt_siblings:
        pool += siblings
        siblings = []
    fallback = pool or siblings or list(trio)
    if not pool:
        where = f"the Trio thread's SMT sibling {_describe(siblings)}" if siblings else "it"
        if len(usable) > 1 or siblings:
            notes.append(f"one physical core: the other threads share {where}")

    # -- onnxruntime
    onnx_req = _keep(config.onnx_cpus, usable_set, "onnx_cpus", notes)
    if onnx_req:
        onnx = _cycle(onnx_req, config.onnx_threads)
    else:
        onnx = _cycle(fallback, config.onnx_threads)
    if len(set(onnx)) < config.onnx_threads:
        notes.append(
            f"{config.onnx_threads} onnxruntime threads on {_describe(onnx)}: they share CPUs"
        )

    # -- numba
    numba: tuple[int, ...] = ()
    if config.numba_threads > 0:
        numba_req = _keep(config.numba_cpus, usable_set, "numba_cpus", notes)
        if numba_req:
            numba = numba_req
        else:
            ordered = [c for c in fallback if c not in onnx] + [c for c in fallback if c in onnx]
            numba = tuple(sorted(ordered[: config.numba_threads]))
        if set(numba) & set(onnx):
            notes.append(f"numba and onnxruntime threads share {_describe(set(numba) & set(onnx))}")
        if len(numba) < config.numba_threads:
            notes.append(
                f"{config.numba_threads} numba threads on {_describe(numba)}: they share CPUs"
            )

    # -- worker threads
    workers = _keep(config.worker_cpus, usable_set, "worker_cpus", notes)
    if not workers:
        taken = set(onnx) | set(numba)
        rest = tuple(sorted(c for c in pool if c not in taken))
        if rest:
            workers = rest
        else:
            workers = tuple(sorted(set(fallback)))
            if pool and taken:
                notes.append(f"worker threads share {_describe(workers)} with onnxruntime/numba")

    for what, cpus in (("onnxruntime", onnx), ("numba", numba), ("worker", workers)):
        shared = trio_set & set(cpus)
        if shared and len(usable) > 1:
            notes.append(f"{what} threads share the Trio thread's {_describe(shared)}")

    pin = config.pin
    if len(usable) <= 1:
        pin = False
        notes.append(f"only {_describe(usable)} is usable: every thread shares it; no pinning")
    elif not config.pin:
        notes.append("hardware.pin = false: CPU affinity is left as it is")
    if not config.enabled:
        notes.append("hardware.enabled = false: nothing is applied")
    return PinningPlan(
        enabled=config.enabled,
        pin=pin,
        trio_cpus=trio,
        onnx_cpus=onnx,
        numba_cpus=numba,
        worker_cpus=workers,
        onnx_threads=config.onnx_threads,
        numba_threads=config.numba_threads,
        nice=config.nice,
        sched_fifo=config.sched_fifo,
        fifo_priority=config.fifo_priority,
        lock_memory=config.lock_memory,
        gc_thresholds=config.gc_thresholds,
        gc_freeze=config.gc_freeze,
        notes=tuple(notes),
    )
