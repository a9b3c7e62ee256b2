"""What a replay's set-up leaves out: the GC collection before the freeze, a second
hash of the sources (issue 12: the set-up around the driver is most of a short replay)."""

from __future__ import annotations

import gc
import gzip
import os
import shutil
import weakref
from pathlib import Path

import pytest
import structlog
import trio

import engine.actors._hardware as hardware_actor_module
import engine.feeds._store as store_module
from engine.actors import HardwareActor
from engine.feeds import CaptureLimits, CaptureStats, TickStore, load_tape, scan_symbols
from engine.testing import replay, replay_config
from hardware import HardwareConfig, freeze_gc


class _Cycle:
    """Garbage only a collection frees (it refers to itself)."""

    def __init__(self) -> None:
        self.me = self


def _garbage() -> weakref.ref[_Cycle]:
    return weakref.ref(_Cycle())


@pytest.fixture
def quiet_gc():
    """No automatic collection during the test (it would free the cycles it watches)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def test_freeze_without_collect_keeps_garbage_until_unfrozen(quiet_gc):
    collected = _garbage()
    assert freeze_gc() > 0  # collects first
    assert collected() is None
    gc.unfreeze()

    kept = _garbage()
    assert freeze_gc(collect=False, count=False) is None
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert kept() is not None  # frozen with the live objects: not collected
    gc.unfreeze()
    gc.collect()
    assert kept() is None  # unfrozen: an ordinary cycle again


def _log() -> structlog.typing.FilteringBoundLogger:
    return structlog.wrap_logger(
        structlog.ReturnLogger(), wrapper_class=structlog.make_filtering_bound_logger(0)
    )


async def test_a_bounded_run_freezes_without_collecting_and_unfreezes_at_its_end(
    autojump_clock, quiet_gc
):
    warmed_up = trio.Event()
    actor = HardwareActor(
        config=HardwareConfig(pin=False, gc_thresholds=()),
        log=_log(),
        warmed_up=warmed_up,
        bounded=True,
    )
    kept = _garbage()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        warmed_up.set()
        await actor.settled.wait()
        assert actor.frozen and actor.frozen_objects is None
        assert gc.get_freeze_count() > 0
        assert kept() is not None
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert kept() is None


async def test_a_replay_freezes_the_gc_without_a_full_collection(tmp_path, sample, monkeypatch):
    calls: list[dict[str, bool]] = []
    real = hardware_actor_module.freeze_gc

    def spy(**kwargs: bool) -> int | None:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(hardware_actor_module, "freeze_gc", spy)
    report = await replay(replay_config(tmp_path, [sample]))
    assert report.events > 0
    assert calls == [{"collect": False, "count": False}]
    assert gc.get_freeze_count() == 0  # unfrozen when the run ended


@pytest.fixture
def old_capture(tmp_path: Path, sample: Path) -> Path:
    path = tmp_path / "data" / "btcusdt.gz"
    path.parent.mkdir()
    shutil.copyfile(sample, path)
    return path


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    real = store_module.file_digest

    def spy(path: Path) -> dict[str, object]:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(store_module, "file_digest", spy)
    return hashed


def test_a_store_hashes_a_source_once_for_the_symbols_and_the_load(
    tmp_path, old_capture, monkeypatch
):
    # The copy was just written: as old as the racy window only for this test.
    monkeypatch.setattr(store_module, "RACY_NS", 0, raising=False)
    hashed = _count_hashes(monkeypatch)
    store = TickStore(tmp_path / "ticks")
    symbols = store.symbols([old_capture], scan_symbols)
    load_tape([old_capture], symbols, limits=CaptureLimits(), stats=CaptureStats(), store=store)
    assert store.last_outcome == "imported"
    load_tape([old_capture], symbols, limits=CaptureLimits(), stats=CaptureStats(), store=store)
    assert store.last_outcome == "hit"
    assert hashed == [old_capture]


def test_a_source_changed_after_its_hash_is_hashed_again(tmp_path, old_capture, monkeypatch):
    monkeypatch.setattr(store_module, "RACY_NS", 0, raising=False)
    hashed = _count_hashes(monkeypatch)
    store = TickStore(tmp_path / "ticks")
    symbols = store.symbols([old_capture], scan_symbols)
    lines = gzip.decompress(old_capture.read_bytes()).splitlines(keepends=True)
    old_capture.write_bytes(gzip.compress(b"".join(lines[: len(lines) // 2])))
    load_tape([old_capture], symbols, limits=CaptureLimits(), stats=CaptureStats(), store=store)
    assert hashed == [old_capture, old_capture]


def test_a_source_changed_within_the_timestamp_granularity_is_hashed_every_time(
    tmp_path, sample, monkeypatch
):
    """Same size and mtime put back: the signature cannot tell, so a file hashed
    within the racy window of its last change is hashed again at its next use."""
    capture = tmp_path / "btcusdt.jsonl"  # plain: a byte changes in place
    data = bytearray(gzip.decompress(sample.read_bytes()))
    capture.write_bytes(data)
    hashed = _count_hashes(monkeypatch)
    store = TickStore(tmp_path / "ticks")
    load_tape([capture], ["BTCUSDT"], limits=CaptureLimits(), stats=CaptureStats(), store=store)
    assert store.last_outcome == "imported"
    before = capture.stat()
    at = data.rindex(b'"B":"') + 5  # the last quote's bid size: another digit
    data[at] = ord("1") if data[at] != ord("1") else ord("2")
    capture.write_bytes(data)
    os.utime(capture, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert capture.stat().st_size == before.st_size
    load_tape([capture], ["BTCUSDT"], limits=CaptureLimits(), stats=CaptureStats(), store=store)
    assert hashed == [capture, capture]
    assert store.last_outcome == "rebuilt"
