"""``python -m hardware [--json] [--apply] [--config FILE] [--sys-root DIR]``.

Prints the CPU topology and the pinning plan; ``--apply`` applies the plan to
this process and prints what was applied, read back from the system. Refused
settings are warnings on stderr, not failures: the exit code is 0 whenever the
topology could be shown, 2 for bad usage or a bad config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs
import structlog
from structlog.typing import FilteringBoundLogger

from ._apply import (
    AppliedSettings,
    apply_plan,
    onnx_session_settings,
    thread_affinities,
    thread_environment,
)
from ._config import HardwareConfig
from ._plan import PinningPlan, make_plan
from ._topology import Topology, format_cpulist, read_topology

EXIT_OK = 0
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = _Parser(
        prog="python -m hardware",
        description="Show the CPU topology and the pinning plan; optionally apply it.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--apply", action="store_true", help="apply the plan to this process and read it back"
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file whose [hardware] table to use"
    )
    parser.add_argument(
        "--sys-root", type=Path, default=Path("/sys"), metavar="DIR", help="sysfs root"
    )
    return parser


def load_hardware_config(path: Path) -> HardwareConfig:
    """The ``[hardware]`` table of a TOML file (defaults when it has none).

    Raises:
        ValueError: the file cannot be read or parsed, or a key or value is wrong;
            the message names the file and the key.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read config ({exc})") from exc
    table = data.get("hardware", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: hardware: expected a [hardware] table")
    known = {f.name for f in attrs.fields(HardwareConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ValueError(
                f"{path}: hardware.{key}: unknown key; expected one of: {', '.join(sorted(known))}"
            )
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return HardwareConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: hardware: {exc.args[0] if exc.args else exc}") from exc


def _cpus(cpus: Sequence[int]) -> str:
    return format_cpulist(cpus) or "none"


def _where(cpus: Sequence[int]) -> str:
    listed = _cpus(cpus)
    return f"CPU {listed}" if listed.isdigit() else f"CPUs {listed}"


def _size(n: int) -> str:
    if n and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} B" if n else "?"


def _topology_lines(topology: Topology) -> list[str]:
    lines = [
        f"Topology (from {topology.sys_root})",
        f"  CPUs online     {_cpus(topology.online)}",
        f"  CPUs allowed    {_cpus(topology.allowed)}",
        f"  CPUs isolated   {_cpus(topology.isolated)}",
        f"  packages {len(topology.packages)}, physical cores {len(topology.cores)}, "
        f"SMT {'on' if topology.smt else 'off'}, NUMA nodes {len(topology.nodes)}",
    ]
    lines += [f"  NUMA node {n.node:<5} CPUs {_cpus(n.cpus)}" for n in topology.nodes]
    lines.append("  cores (package/core id, node: CPUs)")
    lines += [
        f"    {c.package}/{c.core_id}, node {c.node}: {_cpus(c.cpus)}" for c in topology.cores
    ]
    if topology.caches:
        lines.append("  caches")
        groups = Counter((c.level, c.type, c.size_bytes, len(c.cpus)) for c in topology.caches)
        for (level, kind, size, width), count in sorted(groups.items()):
            lines.append(
                f"    L{level} {kind:<12} {_size(size):>8} x{count}, each shared by {width} CPU"
                + ("s" if width != 1 else "")
            )
    lines += [f"  note: {note}" for note in topology.notes]
    return lines


def _plan_lines(plan: PinningPlan) -> list[str]:
    numba = (
        f"{_where(plan.numba_cpus)} (pool of {plan.numba_threads} threads)"
        if plan.numba_threads
        else "left alone (numba_threads = 0)"
    )
    gc_text = ", ".join(map(str, plan.gc_thresholds)) if plan.gc_thresholds else "unchanged"
    onnx_entries = onnx_session_settings(plan)["config_entries"]
    env = " ".join(f"{k}={v}" for k, v in thread_environment(plan).items())
    lines = [
        "Plan",
        f"  apply           {'yes' if plan.enabled else 'no (hardware.enabled = false)'}",
        f"  pinning         {'on' if plan.pin else 'off'}",
        f"  Trio thread     {_where(plan.trio_cpus)}",
        f"  onnxruntime     {plan.onnx_threads} intra-op thread(s) on CPU "
        + ", ".join(map(str, plan.onnx_cpus))
        + " (the first is the thread that calls run)",
        f"  numba           {numba}",
        f"  worker threads  {_where(plan.worker_cpus)}",
        f"  nice            {plan.nice}",
        "  scheduler       "
        + (f"SCHED_FIFO priority {plan.fifo_priority}" if plan.sched_fifo else "SCHED_OTHER"),
        f"  memory lock     {'mlockall' if plan.lock_memory else 'off'}",
        f"  gc thresholds   {gc_text}",
        f"  gc.freeze       {'after warm-up' if plan.gc_freeze else 'off'}",
        f"  environment     {env}",
    ]
    if onnx_entries:
        lines.append(f"  onnx options    {onnx_entries}")
    lines += [f"  note: {note}" for note in plan.notes]
    return lines


def _applied_lines(applied: AppliedSettings) -> list[str]:
    lines = [
        "Applied (read back)",
        f"  Trio thread     {_where(applied.affinity)} (was {_cpus(applied.affinity_before)})",
        f"  nice            {applied.nice} (was {applied.nice_before})",
        f"  scheduler       {applied.scheduler} priority {applied.fifo_priority} "
        f"(was {applied.scheduler_before})",
        f"  memory locked   {'yes' if applied.memory_locked else 'no'}",
        f"  gc thresholds   {', '.join(map(str, applied.gc_thresholds))} "
        f"(was {', '.join(map(str, applied.gc_thresholds_before))})",
        f"  numba threads   {applied.numba_threads or 'untouched'}",
    ]
    threads = thread_affinities()
    if threads:
        lines.append(
            "  threads         "
            + ", ".join(f"{tid}: {_cpus(cpus)}" for tid, cpus in threads.items())
        )
    lines += [f"  refused: {r.setting}: {r.reason}" for r in applied.refused]
    lines += [f"  note: {note}" for note in applied.notes]
    return lines


def render_text(
    topology: Topology, plan: PinningPlan, applied: AppliedSettings | None = None
) -> str:
    """The human-readable report."""
    lines = _topology_lines(topology) + _plan_lines(plan)
    if applied is not None:
        lines += _applied_lines(applied)
    return "\n".join(lines) + "\n"


def render_json(
    topology: Topology, plan: PinningPlan, applied: AppliedSettings | None = None
) -> str:
    """The report as one JSON document."""
    doc: dict[str, Any] = {
        "topology": {
            **attrs.asdict(topology),
            "packages": list(topology.packages),
            "smt": topology.smt,
        },
        "plan": attrs.asdict(plan),
        "environment": thread_environment(plan),
        "onnx": onnx_session_settings(plan),
    }
    if applied is not None:
        doc["applied"] = attrs.asdict(applied, filter=lambda a, _v: a.name != "plan")
        doc["applied"]["threads"] = {str(t): list(c) for t, c in thread_affinities().items()}
    return json.dumps(doc, indent=2) + "\n"


def _stderr_logger() -> FilteringBoundLogger:
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.KeyValueRenderer(key_order=["level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = load_hardware_config(args.config) if args.config else HardwareConfig()
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    topology = read_topology(args.sys_root)
    plan = make_plan(topology, config)
    applied = apply_plan(plan, log=_stderr_logger()) if args.apply else None
    render = render_json if args.json else render_text
    sys.stdout.write(render(topology, plan, applied))
    return EXIT_OK
