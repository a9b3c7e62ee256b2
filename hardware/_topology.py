"""CPU topology read from sysfs: CPUs, physical cores with their SMT siblings,
NUMA nodes and caches.

Every file is optional. A file that is missing or unreadable (a container with
a partial /sys, an old kernel, a VM that hides topology) falls back to the
simplest true statement: one package, each CPU its own core, one NUMA node, no
cache information. Each fallback is written into ``Topology.notes``; nothing
here raises for a bad /sys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import attrs

from ._errors import CpuListError

_CPU_DIR = re.compile(r"^cpu(\d+)$")
_NODE_DIR = re.compile(r"^node(\d+)$")
_INDEX_DIR = re.compile(r"^index(\d+)$")
_SIZE = re.compile(r"^(\d+)\s*([KMG]?)$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Parse a Linux cpulist (``"0-3,8,10-11"``) into sorted, distinct CPU ids.

    Surrounding whitespace is ignored and an empty list is ``()``; items may
    overlap or come in any order.

    Raises:
        CpuListError: an item is not ``N`` or ``N-M`` with ``N <= M``.
    """
    cpus: set[int] = set()
    body = text.strip()
    if not body:
        return ()
    for item in body.split(","):
        lo, sep, hi = item.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise CpuListError(f"not a cpulist: {text!r} (bad item {item!r})")
        first = int(lo)
        last = int(hi) if sep else first
        if last < first:
            raise CpuListError(f"not a cpulist: {text!r} (range {item!r} runs backwards)")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPU ids as the kernel does: sorted ranges, ``"0-3,8,10-11"``.

    ``format_cpulist(parse_cpulist(s)) == s`` for any list the kernel writes.
    """
    ordered = sorted(set(cpus))
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(runs)


def parse_cache_size(text: str) -> int:
    """Bytes in a sysfs cache size (``"32K"``, ``"1024K"``, ``"8M"``).

    Raises:
        ValueError: not a size.
    """
    match = _SIZE.match(text.strip().upper())
    if match is None:
        raise ValueError(f"not a cache size: {text!r}")
    return int(match[1]) * _UNITS[match[2]]


@attrs.frozen(kw_only=True)
class Cache:
    """One cache, as seen by the CPUs that share it.

    Attributes:
        level: 1, 2, 3...
        type: ``Data``, ``Instruction`` or ``Unified``.
        size_bytes: its size, 0 when the kernel does not say.
        cpus: the online CPUs that share it.
    """

    level: int
    type: str
    size_bytes: int
    cpus: tuple[int, ...]


@attrs.frozen(kw_only=True)
class Core:
    """A physical core and its hardware threads (SMT siblings).

    Attributes:
        package: the physical package (socket) id.
        core_id: the kernel's core id (unique within a package).
        node: the NUMA node its first CPU belongs to.
        cpus: its online logical CPUs; more than one when SMT is on.
    """

    package: int
    core_id: int
    node: int
    cpus: tuple[int, ...]


@attrs.frozen(kw_only=True)
class NumaNode:
    """A NUMA node with CPUs.

    Attributes:
        node: the node id.
        cpus: its online CPUs.
    """

    node: int
    cpus: tuple[int, ...]


@attrs.frozen(kw_only=True)
class Topology:
    """What the machine looks like to this process.

    Attributes:
        sys_root: the sysfs root it was read from.
        online: online logical CPUs.
        allowed: the CPUs this process may run on (``os.sched_getaffinity``;
            cgroup cpusets and ``taskset`` show up here).
        isolated: CPUs removed from the scheduler (``isolcpus=``).
        cores: physical cores, ordered by their first CPU.
        nodes: NUMA nodes that hold online CPUs.
        caches: distinct caches, by level, type and CPUs.
        notes: the fallbacks that were needed, in words.
    """

    sys_root: str
    online: tuple[int, ...]
    allowed: tuple[int, ...]
    isolated: tuple[int, ...]
    cores: tuple[Core, ...]
    nodes: tuple[NumaNode, ...]
    caches: tuple[Cache, ...]
    notes: tuple[str, ...] = ()

    @property
    def packages(self) -> tuple[int, ...]:
        """The physical package ids."""
        return tuple(sorted({c.package for c in self.cores}))

    @property
    def smt(self) -> bool:
        """Whether any core has more than one online hardware thread."""
        return any(len(c.cpus) > 1 for c in self.cores)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except (OSError, ValueError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _read_cpulist(path: Path) -> tuple[int, ...] | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return parse_cpulist(text)
    except CpuListError:
        return None


def _numbered(directory: Path, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    found = [(int(m[1]), p) for p in entries if (m := pattern.match(p.name))]
    return sorted(found)


def _online(cpu_dir: Path, notes: list[str]) -> tuple[int, ...]:
    online = _read_cpulist(cpu_dir / "online")
    if online:
        return online
    dirs = _numbered(cpu_dir, _CPU_DIR)
    if dirs:
        notes.append(f"{cpu_dir / 'online'} unreadable; CPUs taken from the cpuN directories")
        # cpu0 often has no "online" file: it cannot be taken offline.
        return tuple(n for n, p in dirs if _read_int(p / "online") in (None, 1))
    try:
        allowed = tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        allowed = ()
    if allowed:
        notes.append(f"{cpu_dir} unreadable; CPUs taken from the process's affinity")
        return allowed
    notes.append(f"{cpu_dir} unreadable; CPUs taken from os.cpu_count()")
    return tuple(range(os.cpu_count() or 1))


def _allowed(given: Iterable[int] | None, online: tuple[int, ...]) -> tuple[int, ...]:
    if given is not None:
        return tuple(sorted(set(given)))
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return online


def _nodes(node_dir: Path, online: tuple[int, ...], notes: list[str]) -> tuple[NumaNode, ...]:
    on = set(online)
    nodes: list[NumaNode] = []
    for n, path in _numbered(node_dir, _NODE_DIR):
        cpus = _read_cpulist(path / "cpulist")
        if cpus is None:
            continue
        mine = tuple(c for c in cpus if c in on)
        if mine:  # memory-only nodes (CXL, HBM) hold no CPUs to pin to
            nodes.append(NumaNode(node=n, cpus=mine))
    if not nodes:
        notes.append(f"{node_dir} unreadable; one NUMA node assumed")
        return (NumaNode(node=0, cpus=online),)
    stray = on - {c for node in nodes for c in node.cpus}
    if stray:
        notes.append(f"CPUs {format_cpulist(stray)} are in no NUMA node; put in node 0")
        merged = {node.node: set(node.cpus) for node in nodes}
        merged.setdefault(0, set()).update(stray)
        nodes = [NumaNode(node=n, cpus=tuple(sorted(c))) for n, c in sorted(merged.items())]
    return tuple(nodes)


def _cores(
    cpu_dir: Path, online: tuple[int, ...], node_of: dict[int, int], notes: list[str]
) -> tuple[Core, ...]:
    on = set(online)
    seen: set[int] = set()
    cores: list[Core] = []
    missing: list[int] = []
    for cpu in online:
        if cpu in seen:
            continue
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        siblings = _read_cpulist(topo / "thread_siblings_list") or _read_cpulist(
            topo / "core_cpus_list"
        )
        if siblings is None or cpu not in siblings:
            missing.append(cpu)
            siblings = (cpu,)
        cpus = tuple(c for c in siblings if c in on and c not in seen)
        seen.update(cpus)
        package = _read_int(topo / "physical_package_id")
        core_id = _read_int(topo / "core_id")
        cores.append(
            Core(
                package=package if package is not None and package >= 0 else 0,
                core_id=core_id if core_id is not None else cpu,
                node=node_of.get(cpu, 0),
                cpus=cpus,
            )
        )
    if missing:
        notes.append(
            f"no SMT sibling list for CPUs {format_cpulist(missing)}; each taken as its own core"
        )
    return tuple(cores)


def _caches(cpu_dir: Path, online: tuple[int, ...]) -> tuple[Cache, ...]:
    on = set(online)
    found: dict[tuple[int, str, tuple[int, ...]], Cache] = {}
    for cpu in online:
        for _, index in _numbered(cpu_dir / f"cpu{cpu}" / "cache", _INDEX_DIR):
            level = _read_int(index / "level")
            kind = _read(index / "type")
            if level is None or kind is None:
                continue
            shared = _read_cpulist(index / "shared_cpu_list") or (cpu,)
            cpus = tuple(c for c in shared if c in on)
            key = (level, kind.strip(), cpus)
            if key in found:
                continue
            size_text = _read(index / "size")
            try:
                size = parse_cache_size(size_text) if size_text is not None else 0
            except ValueError:
                size = 0
            found[key] = Cache(level=level, type=key[1], size_bytes=size, cpus=cpus)
    return tuple(found[k] for k in sorted(found))


def read_topology(
    sys_root: Path = Path("/sys"), *, allowed: Iterable[int] | None = None
) -> Topology:
    """Read the CPU topology from sysfs.

    Never raises for a missing or malformed file: see the module docstring for
    the fallbacks.

    Args:
        sys_root: the sysfs mount (a fake tree in tests).
        allowed: the CPUs the process may use; default ``os.sched_getaffinity(0)``.

    Returns:
        The topology, with ``notes`` naming every fallback used.
    """
    notes: list[str] = []
    cpu_dir = sys_root / "devices" / "system" / "cpu"
    online = _online(cpu_dir, notes)
    permitted = _allowed(allowed, online)
    isolated = tuple(c for c in (_read_cpulist(cpu_dir / "isolated") or ()) if c in online)
    nodes = _nodes(sys_root / "devices" / "system" / "node", online, notes)
    node_of = {cpu: node.node for node in nodes for cpu in node.cpus}
    cores = _cores(cpu_dir, online, node_of, notes)
    caches = _caches(cpu_dir, online)
    if not caches:
        notes.append("no cache information")
    outside = set(permitted) - set(online)
    if outside:
        notes.append(f"allowed CPUs {format_cpulist(outside)} are not online")
    return Topology(
        sys_root=str(sys_root),
        online=online,
        allowed=permitted,
        isolated=isolated,
        cores=cores,
        nodes=nodes,
        caches=caches,
        notes=tuple(notes),
    )
