"""The hardware package and the hardware actor.

Topology is read from fake /sys trees built in tmp_path and from the real one;
plans are checked as properties over generated topologies; pinning is applied
to this process and verified by reading the affinity back (then restored).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import subprocess
import sys
import threading
import typing
from pathlib import Path

import attrs
import pytest
import structlog
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import LogCapture

from engine.actors._hardware import HardwareActor
from hardware import (
    Core,
    CpuListError,
    HardwareConfig,
    LoopLagStats,
    NumaNode,
    PinningError,
    Topology,
    apply_plan,
    configure_numba,
    configure_onnx_session,
    format_cpulist,
    freeze_gc,
    make_plan,
    onnx_session_settings,
    parse_cpulist,
    pin_current_thread,
    read_topology,
    restore_settings,
    setup_worker_thread,
    spawn_affinity,
    thread_environment,
)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ALLOWED = tuple(sorted(os.sched_getaffinity(0)))
# Keep the real process's GC settings out of the tests that apply a plan.
NO_GC = {"gc_thresholds": (), "gc_freeze": False}


def capture() -> tuple[LogCapture, structlog.typing.FilteringBoundLogger]:
    cap = LogCapture()
    log = structlog.wrap_logger(
        None, processors=[cap], wrapper_class=structlog.make_filtering_bound_logger(0)
    )
    return cap, log


@pytest.fixture
def log():
    return capture()[1]


@pytest.fixture
def restore_process():
    """Put the calling thread's affinity and the GC thresholds back after the test."""
    affinity = os.sched_getaffinity(0)
    thresholds = gc.get_threshold()
    yield
    os.sched_setaffinity(0, affinity)
    gc.set_threshold(*thresholds)


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "hardware", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


# -- cpulist ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("", ()),
        ("\n", ()),
        ("0", (0,)),
        ("0-3,8,10-11\n", (0, 1, 2, 3, 8, 10, 11)),
        (" 3, 1-2,2 ", (1, 2, 3)),
        ("5-5", (5,)),
    ],
)
def test_parse_cpulist(text, cpus):
    assert parse_cpulist(text) == cpus


@pytest.mark.parametrize("text", ["a", "3-1", "1,,2", "-1", "1-", "0x1", "1-2-3"])
def test_parse_cpulist_refuses_what_is_not_a_cpulist(text):
    with pytest.raises(CpuListError, match="not a cpulist"):
        parse_cpulist(text)


def test_format_cpulist_writes_what_the_kernel_writes():
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10, 2]) == "0-3,8,10-11"
    assert format_cpulist([]) == ""
    assert format_cpulist([4]) == "4"


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=1023)))
def test_cpulist_roundtrip(cpus):
    text = format_cpulist(cpus)
    assert parse_cpulist(text) == tuple(sorted(cpus))
    assert format_cpulist(parse_cpulist(text)) == text


# -- topology from a fake /sys ---------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def fake_sys(
    root: Path, *, packages: int = 2, cores: int = 4, smt: int = 2, isolated: str = ""
) -> Path:
    """A sysfs tree numbered like Intel's: cpu = thread * (packages*cores) + package*cores + core.

    Each package is a NUMA node with its own L3; L1 and L2 are per core.
    """
    cpu_dir = root / "devices" / "system" / "cpu"
    per_thread = packages * cores
    n = per_thread * smt
    write(cpu_dir / "online", f"0-{n - 1}")
    write(cpu_dir / "isolated", isolated)
    for cpu in range(n):
        first = cpu % per_thread
        package, core = divmod(first, cores)
        siblings = format_cpulist(first + k * per_thread for k in range(smt))
        package_cpus = format_cpulist(c for c in range(n) if (c % per_thread) // cores == package)
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        write(topo / "thread_siblings_list", siblings)
        write(topo / "core_id", str(core))
        write(topo / "physical_package_id", str(package))
        caches = [
            (1, "Data", "48K", siblings),
            (1, "Instruction", "32K", siblings),
            (2, "Unified", "2048K", siblings),
            (3, "Unified", "30M", package_cpus),
        ]
        for i, (level, kind, size, shared) in enumerate(caches):
            index = cpu_dir / f"cpu{cpu}" / "cache" / f"index{i}"
            write(index / "level", str(level))
            write(index / "type", kind)
            write(index / "size", size)
            write(index / "shared_cpu_list", shared)
    for package in range(packages):
        cpus = [c for c in range(n) if (c % per_thread) // cores == package]
        write(
            root / "devices" / "system" / "node" / f"node{package}" / "cpulist",
            format_cpulist(cpus),
        )
    return root


def test_fake_two_sockets_with_smt(tmp_path):
    topo = read_topology(fake_sys(tmp_path), allowed=range(16))
    assert topo.online == tuple(range(16))
    assert topo.allowed == tuple(range(16))
    assert topo.packages == (0, 1)
    assert topo.smt
    assert len(topo.cores) == 8
    assert {c.cpus for c in topo.cores} == {(i, i + 8) for i in range(8)}
    assert [(c.package, c.core_id, c.node) for c in topo.cores][:5] == [
        (0, 0, 0),
        (0, 1, 0),
        (0, 2, 0),
        (0, 3, 0),
        (1, 0, 1),
    ]
    assert topo.nodes == (
        NumaNode(node=0, cpus=(0, 1, 2, 3, 8, 9, 10, 11)),
        NumaNode(node=1, cpus=(4, 5, 6, 7, 12, 13, 14, 15)),
    )
    by_kind: dict[tuple[int, str], list] = {}
    for cache in topo.caches:
        by_kind.setdefault((cache.level, cache.type), []).append(cache)
    assert {k: len(v) for k, v in by_kind.items()} == {
        (1, "Data"): 8,
        (1, "Instruction"): 8,
        (2, "Unified"): 8,
        (3, "Unified"): 2,
    }
    assert by_kind[1, "Data"][0].size_bytes == 48 * 1024
    assert by_kind[3, "Unified"][0].size_bytes == 30 * 1024 * 1024
    assert by_kind[3, "Unified"][0].cpus == (0, 1, 2, 3, 8, 9, 10, 11)
    assert topo.notes == ()


def test_fake_isolated_cpus_and_restricted_allowed_set(tmp_path):
    topo = read_topology(fake_sys(tmp_path, isolated="6,14"), allowed=[4, 5, 6, 7, 14])
    assert topo.isolated == (6, 14)
    assert topo.allowed == (4, 5, 6, 7, 14)
    plan = make_plan(topo, HardwareConfig())
    assert plan.trio_cpus == (6,)  # the isolated core wins
    assert any("isolated" in n for n in plan.notes)
    assert any("may only use" in n for n in plan.notes)
    assert set(plan.onnx_cpus + plan.worker_cpus) <= {4, 5, 7}


def test_empty_sys_falls_back_without_crashing(tmp_path):
    topo = read_topology(tmp_path)
    assert topo.online == ALLOWED
    assert topo.allowed == ALLOWED
    assert [c.cpus for c in topo.cores] == [(cpu,) for cpu in ALLOWED]
    assert topo.nodes == (NumaNode(node=0, cpus=ALLOWED),)
    assert topo.caches == ()
    assert any("one NUMA node" in n for n in topo.notes)
    assert any("own core" in n for n in topo.notes)


def test_partial_and_garbled_sys(tmp_path):
    cpu_dir = tmp_path / "devices" / "system" / "cpu"
    # no "online" file: CPUs come from the directories; cpu3 is offline
    for cpu in range(4):
        (cpu_dir / f"cpu{cpu}").mkdir(parents=True)
    write(cpu_dir / "cpu3" / "online", "0")
    write(cpu_dir / "cpu0" / "topology" / "thread_siblings_list", "zzz")
    write(cpu_dir / "cpu1" / "topology" / "thread_siblings_list", "1-2")
    write(cpu_dir / "cpu1" / "topology" / "core_id", "not a number")
    write(cpu_dir / "cpu1" / "cache" / "index0" / "level", "1")  # no type: skipped
    write(cpu_dir / "cpu2" / "cache" / "index0" / "level", "2")
    write(cpu_dir / "cpu2" / "cache" / "index0" / "type", "Unified")
    write(cpu_dir / "cpu2" / "cache" / "index0" / "size", "huge")
    write(tmp_path / "devices" / "system" / "node" / "node0" / "cpulist", "0-1")
    topo = read_topology(tmp_path, allowed=[0, 1, 2])
    assert topo.online == (0, 1, 2)
    assert [c.cpus for c in topo.cores] == [(0,), (1, 2)]
    assert topo.cores[1].core_id == 1  # unreadable core_id: the CPU number
    assert topo.nodes == (NumaNode(node=0, cpus=(0, 1, 2)),)  # cpu2 had no node
    assert [(c.level, c.size_bytes) for c in topo.caches] == [(2, 0)]
    assert any("cpuN directories" in n for n in topo.notes)
    assert any("no NUMA node" in n for n in topo.notes)


def test_real_sys():
    topo = read_topology()
    assert topo.online
    assert topo.allowed == ALLOWED
    cpus = [c for core in topo.cores for c in core.cpus]
    assert sorted(cpus) == list(topo.online)  # every online CPU in exactly one core
    assert sorted(c for node in topo.nodes for c in node.cpus) == list(topo.online)
    plan = make_plan(topo, HardwareConfig())
    usable = set(topo.allowed) & set(topo.online)
    assert set(plan.trio_cpus + plan.onnx_cpus + plan.worker_cpus) <= usable


# -- the plan ---------------------------------------------------------------------


@st.composite
def topologies(draw):
    packages = draw(st.integers(1, 2))
    cores = draw(st.integers(1, 6))
    smt = draw(st.integers(1, 2))
    per_thread = packages * cores
    n = per_thread * smt
    core_list = tuple(
        Core(
            package=p,
            core_id=c,
            node=p,
            cpus=tuple(p * cores + c + k * per_thread for k in range(smt)),
        )
        for p in range(packages)
        for c in range(cores)
    )
    nodes = tuple(
        NumaNode(
            node=p,
            cpus=tuple(sorted(x for core in core_list[p * cores :][:cores] for x in core.cpus)),
        )
        for p in range(packages)
    )
    allowed = draw(st.sets(st.integers(0, n - 1), min_size=1))
    isolated = draw(st.sets(st.sampled_from(range(n)), max_size=2))
    return Topology(
        sys_root="generated",
        online=tuple(range(n)),
        allowed=tuple(sorted(allowed)),
        isolated=tuple(sorted(isolated)),
        cores=core_list,
        nodes=nodes,
        caches=(),
    )


@settings(max_examples=300, deadline=None)
@given(topologies(), st.integers(1, 4), st.integers(0, 3), st.booleans())
def test_plan_properties(topo, onnx_threads, numba_threads, avoid_smt):
    config = HardwareConfig(
        onnx_threads=onnx_threads, numba_threads=numba_threads, avoid_smt_siblings=avoid_smt
    )
    plan = make_plan(topo, config)
    usable = set(topo.allowed)
    assert len(plan.trio_cpus) == 1
    for cpus in (plan.trio_cpus, plan.onnx_cpus, plan.numba_cpus, plan.worker_cpus):
        assert set(cpus) <= usable
    assert len(plan.onnx_cpus) == onnx_threads
    assert plan.worker_cpus
    assert bool(plan.numba_cpus) == (numba_threads > 0)
    assert len(plan.numba_cpus) <= numba_threads
    usable_cores = [set(c.cpus) & usable for c in topo.cores if set(c.cpus) & usable]
    trio_core = next(c for c in usable_cores if plan.trio_cpus[0] in c)
    others = set(plan.onnx_cpus) | set(plan.numba_cpus) | set(plan.worker_cpus)
    if len(usable_cores) >= 2:
        # enough cores: nothing shares the Trio thread's physical core
        assert not (trio_core if avoid_smt else set(plan.trio_cpus)) & others
        assert plan.pin
    if len(usable) == 1:
        assert not plan.pin
        assert plan.notes


def test_plan_on_two_sockets_prefers_distinct_cores_near_the_trio_thread(tmp_path):
    topo = read_topology(fake_sys(tmp_path), allowed=range(16))
    plan = make_plan(topo, HardwareConfig(onnx_threads=3, numba_threads=2))
    assert plan.trio_cpus == (1,)  # not CPU 0's core; node 0
    # one per physical core: the Trio thread's node first, CPU 0's core last in it
    assert plan.onnx_cpus == (2, 3, 0)
    assert plan.numba_cpus == (4, 5)
    # the rest, but not the Trio core's sibling (9)
    assert plan.worker_cpus == (6, 7, 8, 10, 11, 12, 13, 14, 15)
    assert plan.notes == ()


def test_plan_drops_cpus_it_cannot_use_and_says_so(tmp_path):
    topo = read_topology(fake_sys(tmp_path, packages=1, cores=2, smt=1), allowed=[0, 1])
    plan = make_plan(topo, HardwareConfig(trio_cpus=(7,), worker_cpus=(1, 9)))
    assert plan.trio_cpus == (1,)
    assert plan.worker_cpus == (1,)
    assert any("trio_cpus: CPUs 7 are not usable" in n for n in plan.notes)
    assert any("chosen automatically" in n for n in plan.notes)
    assert any("worker threads share the Trio thread's CPU 1" in n for n in plan.notes)


def test_plan_with_one_cpu_or_one_core(tmp_path):
    one = read_topology(fake_sys(tmp_path / "a", packages=1, cores=1, smt=1), allowed=[0])
    plan = make_plan(one, HardwareConfig(onnx_threads=2))
    assert not plan.pin
    assert plan.trio_cpus == plan.worker_cpus == (0,)
    assert plan.onnx_cpus == (0, 0)
    assert any("only CPU 0 is usable" in n for n in plan.notes)

    smt = read_topology(fake_sys(tmp_path / "b", packages=1, cores=1, smt=2), allowed=[0, 1])
    plan = make_plan(smt, HardwareConfig())
    assert plan.pin
    assert plan.trio_cpus == (0,)
    assert plan.worker_cpus == plan.onnx_cpus == (1,)
    assert any("one physical core" in n for n in plan.notes)


def test_config_fields_are_what_the_engine_loader_converts():
    simple = {bool, int, float, str}
    for field in attrs.fields(HardwareConfig):
        tp = field.type
        if typing.get_origin(tp) is tuple:
            inner, ellipsis = typing.get_args(tp)
            assert ellipsis is Ellipsis and inner in simple, field.name
        else:
            assert tp in simple, field.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trio_cpus": (-1,)}, "'trio_cpus' must be >= 0"),
        ({"nice": 20}, "'nice' must be <= 19"),
        ({"fifo_priority": 0}, "'fifo_priority' must be >= 1"),
        ({"onnx_threads": 0}, "'onnx_threads' must be >= 1"),
        ({"gc_thresholds": (1, 2, 3, 4)}, "'gc_thresholds' must hold at most 3 values"),
        ({"lag_interval_ms": -1}, "'lag_interval_ms' must be >= 0"),
    ],
)
def test_config_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HardwareConfig(**kwargs)


# -- applying -----------------------------------------------------------------------


def test_apply_pins_and_reads_back(restore_process):
    cpu = ALLOWED[-1]
    plan = make_plan(
        read_topology(), HardwareConfig(trio_cpus=(cpu,), gc_thresholds=(5000, 20, 30))
    )
    plan = attrs.evolve(plan, pin=True)  # also with a single allowed CPU
    cap, log = capture()
    applied = apply_plan(plan, log=log)
    assert os.sched_getaffinity(0) == {cpu}
    assert applied.affinity == (cpu,)
    assert applied.affinity_before == ALLOWED
    assert applied.gc_thresholds == gc.get_threshold() == (5000, 20, 30)
    assert applied.refused == ()
    assert cap.entries[-1]["event"] == "hardware settings applied"
    assert cap.entries[-1]["cpus"] == str(cpu)

    assert restore_settings(applied, log=log) == ()
    assert os.sched_getaffinity(0) == set(ALLOWED)
    assert gc.get_threshold() == applied.gc_thresholds_before


def test_disabled_plan_changes_nothing(restore_process, log):
    plan = make_plan(read_topology(), HardwareConfig(enabled=False, trio_cpus=(ALLOWED[0],)))
    applied = apply_plan(plan, log=log)
    assert applied.affinity == applied.affinity_before == ALLOWED
    assert applied.gc_thresholds == applied.gc_thresholds_before


def test_pin_current_thread_is_per_thread(restore_process):
    cpu = ALLOWED[0]
    seen: list[set[int]] = []

    def worker():
        pin_current_thread([cpu])
        seen.append(os.sched_getaffinity(0))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [{cpu}]
    assert os.sched_getaffinity(0) == set(ALLOWED)


def test_setup_worker_thread_pins_and_drops_real_time():
    plan = attrs.evolve(
        make_plan(read_topology(), HardwareConfig()), pin=True, worker_cpus=(ALLOWED[0],)
    )
    seen: list[tuple[object, ...]] = []

    def worker():
        try:  # inherit a real-time policy, as a thread created by a FIFO Trio thread would
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            was = os.sched_getscheduler(0)
        except PermissionError:
            was = None
        cpus = setup_worker_thread(plan)
        seen.append((was, cpus, os.sched_getaffinity(0), os.sched_getscheduler(0)))

    t = threading.Thread(target=worker)  # a throwaway thread: nothing leaks into the test
    t.start()
    t.join()
    was, cpus, affinity, policy = seen[0]
    assert cpus == (ALLOWED[0],)
    assert affinity == {ALLOWED[0]}
    assert policy == os.SCHED_OTHER
    assert was in (None, os.SCHED_FIFO)
    assert os.sched_getaffinity(0) == set(ALLOWED)


def test_pin_current_thread_refused():
    with pytest.raises(PinningError, match="cannot pin to CPUs 4095"):
        pin_current_thread([4095])
    with pytest.raises(PinningError, match="no CPUs"):
        pin_current_thread([])
    assert os.sched_getaffinity(0) == set(ALLOWED)


def test_spawn_affinity_places_new_threads_and_restores(restore_process):
    cpu = ALLOWED[0]
    seen: list[set[int]] = []
    with spawn_affinity([cpu]) as inside:
        t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        t.start()
        t.join()
    assert inside == (cpu,)
    assert seen == [{cpu}]
    assert os.sched_getaffinity(0) == set(ALLOWED)


def _refuse(*_args):
    raise PermissionError(errno.EPERM, "Operation not permitted")


def test_sched_fifo_and_nice_refused_are_warnings(monkeypatch, restore_process):
    monkeypatch.setattr(os, "sched_setscheduler", _refuse)
    monkeypatch.setattr(os, "setpriority", _refuse)
    now = os.getpriority(os.PRIO_PROCESS, 0)
    config = HardwareConfig(sched_fifo=True, nice=now - 1 if now > -20 else now + 1, **NO_GC)
    cap, log = capture()
    applied = apply_plan(make_plan(read_topology(), config), log=log)
    refused = {r.setting: r.reason for r in applied.refused}
    assert set(refused) == {"sched_fifo", "nice"}
    assert "RLIMIT_RTPRIO" in refused["sched_fifo"]
    assert "CAP_SYS_NICE" in refused["nice"]
    assert applied.scheduler == applied.scheduler_before
    warnings = [e for e in cap.entries if e["log_level"] == "warning"]
    assert [w["setting"] for w in warnings] == ["nice", "sched_fifo"]
    assert "refused" in warnings[1]["event"]


# Runs in a child process that gives up the rights first: CAP_SYS_NICE and
# CAP_IPC_LOCK (capabilities are per thread on Linux; this is the only thread) and
# the RTPRIO, NICE and MEMLOCK limits. Lowering both is always allowed.
_UNPRIVILEGED = """
import ctypes, json, resource
import structlog

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]

libc = ctypes.CDLL(None, use_errno=True)
header, data = Header(0x20080522, 0), (Data * 2)()
if libc.capget(ctypes.byref(header), data) != 0:
    raise SystemExit(3)
for bit in (23, 14):  # CAP_SYS_NICE, CAP_IPC_LOCK
    data[0].effective &= ~(1 << bit)
    data[0].permitted &= ~(1 << bit)
if libc.capset(ctypes.byref(header), data) != 0:
    raise SystemExit(3)
for limit in (resource.RLIMIT_RTPRIO, resource.RLIMIT_NICE, resource.RLIMIT_MEMLOCK):
    resource.setrlimit(limit, (0, 0))

from hardware import HardwareConfig, apply_plan, make_plan, read_topology
config = HardwareConfig(pin=False, sched_fifo=True, fifo_priority=5, nice=-5, lock_memory=True)
applied = apply_plan(make_plan(read_topology(), config), log=structlog.get_logger())
print(json.dumps({"scheduler": applied.scheduler, "nice": applied.nice,
                  "memory_locked": applied.memory_locked,
                  "refused": {r.setting: r.reason for r in applied.refused}}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux capabilities")
def test_settings_really_refused_without_the_rights():
    proc = subprocess.run(
        [PYTHON, "-c", _UNPRIVILEGED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 3:
        pytest.skip("capget/capset are not allowed here")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["scheduler"] == "SCHED_OTHER"
    assert out["nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert not out["memory_locked"]
    assert set(out["refused"]) == {"sched_fifo", "nice", "lock_memory"}
    assert "RLIMIT_RTPRIO" in out["refused"]["sched_fifo"]
    assert "sched_fifo refused" in proc.stdout  # the warning


def test_thread_settings_for_onnxruntime_and_numba(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    topo = read_topology(fake_sys(tmp_path), allowed=range(16))
    plan = make_plan(topo, HardwareConfig(onnx_threads=3))
    settings_ = onnx_session_settings(plan)
    assert settings_["intra_op_num_threads"] == 3
    # onnxruntime pins the threads it creates (not the caller's); its ids count from 1
    assert settings_["config_entries"] == {"session.intra_op_thread_affinities": "4;1"}
    options = ort.SessionOptions()
    configure_onnx_session(options, plan)
    assert options.intra_op_num_threads == 3
    assert options.get_session_config_entry("session.intra_op_thread_affinities") == "4;1"
    assert onnx_session_settings(attrs.evolve(plan, pin=False))["config_entries"] == {}

    assert thread_environment(plan)["NUMBA_NUM_THREADS"] == "1"
    assert configure_numba(plan) == (0, ())  # numba_threads = 0: numba is left alone


def test_freeze_gc():
    try:
        assert freeze_gc() > 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_loop_lag_stats():
    stats = LoopLagStats(window=100)
    assert stats.summary()["p99_ms"] == 0.0
    for i in range(1, 201):
        stats.record(i / 1000)
    stats.record(-1.0)
    summary = stats.summary()
    assert summary["count"] == 201
    assert summary["max_ms"] == pytest.approx(200.0)
    assert summary["last_ms"] == 0.0
    # the window holds the last 100 samples: 0 and 102..200 ms (nearest rank)
    assert summary["p50_ms"] == pytest.approx(150.0)
    assert summary["p99_ms"] == pytest.approx(199.0)


# -- the command line -----------------------------------------------------------


def test_cli_prints_topology_and_plan():
    proc = run_cli()
    assert proc.returncode == 0, proc.stderr
    assert "Topology (from /sys)" in proc.stdout
    assert f"CPUs allowed    {format_cpulist(ALLOWED)}" in proc.stdout
    assert "Trio thread" in proc.stdout
    assert "Applied" not in proc.stdout


def test_cli_json():
    proc = run_cli("--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["topology"]["allowed"] == list(ALLOWED)
    assert set(doc["plan"]["trio_cpus"]) <= set(ALLOWED)
    assert "applied" not in doc


def test_cli_apply_reads_back(tmp_path):
    cpu = ALLOWED[-1]
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 1)  # raising is always allowed
    config = tmp_path / "hw.toml"
    config.write_text(
        f"[hardware]\ntrio_cpus = [{cpu}]\nnice = {nice}\nsched_fifo = true\n"
        "fifo_priority = 1\nlock_memory = true\ngc_thresholds = [1000]\n"
    )
    proc = run_cli("--json", "--apply", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    applied = json.loads(proc.stdout)["applied"]
    assert applied["affinity"] == [cpu]
    assert applied["nice"] == nice
    assert applied["gc_thresholds"][0] == 1000
    refused = {r["setting"] for r in applied["refused"]}
    assert (applied["scheduler"] == "SCHED_FIFO") != ("sched_fifo" in refused)
    assert applied["memory_locked"] != ("lock_memory" in refused)
    for setting in refused:
        assert setting in proc.stderr  # each refusal is a warning


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two CPUs")
def test_cli_apply_starts_numbas_pool_on_its_cpus(tmp_path):
    config = tmp_path / "hw.toml"
    config.write_text("[hardware]\nnumba_threads = 2\ngc_thresholds = []\n")
    proc = run_cli(
        "--json", "--apply", "--config", str(config), env={**os.environ, "NUMBA_NUM_THREADS": "2"}
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    applied, plan = doc["applied"], doc["plan"]
    assert applied["refused"] == []
    assert applied["numba_threads"] == 2
    assert applied["affinity"] == plan["trio_cpus"]
    threads = list(applied["threads"].values())
    assert threads[0] == plan["trio_cpus"]  # the main thread
    assert plan["numba_cpus"] in threads[1:]  # the pool's thread(s)


def test_cli_on_a_fake_sys_and_bad_config(tmp_path):
    from hardware._cli import main

    fake = fake_sys(tmp_path / "sys")
    proc = run_cli("--sys-root", str(fake))
    assert proc.returncode == 0, proc.stderr
    assert "packages 2, physical cores 8, SMT on, NUMA nodes 2" in proc.stdout
    assert "L3 Unified        30 MiB x2, each shared by 8 CPUs" in proc.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text("[hardware]\ntrio_cpu = 3\n")
    assert main(["--config", str(bad)]) == 2
    bad.write_text("[hardware]\nnice = 40\n")
    assert main(["--config", str(bad)]) == 2


# -- the actor --------------------------------------------------------------------


async def test_actor_applies_samples_lag_and_restores_on_cancel(autojump_clock):
    cap, log = capture()
    cpu = ALLOWED[-1]
    actor = HardwareActor(
        config=HardwareConfig(trio_cpus=(cpu,), lag_interval_ms=100, gc_thresholds=(9000,)),
        log=log,
    )
    before = gc.get_threshold()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        if len(ALLOWED) > 1:
            assert os.sched_getaffinity(0) == {cpu}
        assert gc.get_threshold()[0] == 9000
        assert actor.applied is not None and actor.plan is not None
        await trio.sleep(1.05)
        assert actor.lag.count == 10
        assert actor.lag.max_s == 0.0  # the autojump clock never runs late
        # The loop is held up: the actor's next wake-up (due in 0.05 s) comes 0.25 s late.
        autojump_clock.jump(0.30)
        await trio.sleep(0.01)
        assert actor.lag.max_s == pytest.approx(0.25)
        nursery.cancel_scope.cancel()
    assert os.sched_getaffinity(0) == set(ALLOWED)
    assert gc.get_threshold() == before
    stopped = cap.entries[-1]
    assert stopped["event"] == "hardware actor stopped"
    assert stopped["loop_lag"]["count"] == 11
    assert stopped["loop_lag"]["max_ms"] == pytest.approx(250.0)


async def test_actor_freezes_gc_after_warm_up(autojump_clock, log):
    warmed_up = trio.Event()
    actor = HardwareActor(
        config=HardwareConfig(pin=False, gc_thresholds=()), log=log, warmed_up=warmed_up
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(0.5)
        assert actor.frozen_objects == 0
        warmed_up.set()
        await trio.sleep(0.01)
        assert actor.frozen_objects > 0
        assert gc.get_freeze_count() > 0
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0


async def test_actor_without_lag_sampling_runs_until_cancelled(autojump_clock, log):
    actor = HardwareActor(config=HardwareConfig(enabled=False, lag_interval_ms=0), log=log)
    with trio.move_on_after(5) as scope:
        await actor.run()
    assert scope.cancelled_caught
    assert actor.lag.count == 0
    assert actor.applied is not None and actor.applied.affinity == ALLOWED
