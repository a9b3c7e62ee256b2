"""Progress on stderr (engine._progress): plain lines off a terminal, a bar on one, silence
for short tasks; set-up steps said only when slower than the threshold; and a replay that
shows it when asked."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine._progress import Meter, file_bytes, slow_step, watch

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_off_a_terminal_with_rate_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    meter = Meter("replay", 1_000_000, stream=out, after_s=2.0, every_s=10.0, clock=clock)
    assert meter.style == "lines"
    clock.now += 1.0
    meter.update(100_000)
    assert out.getvalue() == ""  # not before after_s
    clock.now += 1.0
    meter.update(250_000)
    clock.now += 5.0
    meter.update(300_000)  # within every_s of the first line: no second line
    clock.now += 5.0
    meter.update(600_000)
    clock.now += 3.0
    meter.update(1_000_000)
    meter.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "trireme: replay 250,000/1,000,000 events (25%), 125k events/s, ETA 6 s",
        "trireme: replay 600,000/1,000,000 events (60%), 50k events/s, ETA 8 s",
        "trireme: replay: 1,000,000 events in 15 s (66.7k events/s)",
    ]


def test_a_short_task_says_nothing() -> None:
    out, clock = io.StringIO(), Clock()
    with Meter("replay", 10, stream=out, clock=clock) as meter:
        clock.now += 0.5
        meter.update(10)
    assert out.getvalue() == ""


def test_a_terminal_gets_a_bar_and_off_is_silent() -> None:
    tty = Tty()
    with Meter("sweep", 4, "tasks", stream=tty, after_s=0.0) as meter:
        assert meter.style == "bar"
        for k in range(1, 5):
            meter.update(k)
    text = tty.getvalue()
    assert "trireme: sweep" in text and "4/4" in text
    off = Tty()
    with Meter("sweep", 4, stream=off, style="off", after_s=0.0) as meter:
        meter.update(4)
    assert off.getvalue() == ""


def test_a_bad_style_is_refused() -> None:
    with pytest.raises(ValueError, match="progress style"):
        Meter("x", 1, style="fancy")  # type: ignore[arg-type]


def test_replay_shows_progress_lines_when_asked(tmp_path: Path) -> None:
    """The bundled replay with lines every 50 ms from the start prints progress lines
    ending with the whole count; with ``off`` it prints none. The report is unchanged."""
    runs = []
    for style in ("lines", "off"):
        proc = subprocess.run(
            [
                sys.executable, "-m", "engine", "--config", str(ROOT / "config.toml"),
                "--set", f"logging.progress={style}", "--set", "logging.progress_every_s=0.05",
                "--set", f"journal.dir={tmp_path / style}",
                "--set", f"logging.path={tmp_path / style / 'log.jsonl'}",
            ],
            capture_output=True, text=True, cwd=ROOT, check=True, timeout=600,
        )  # fmt: skip
        runs.append(proc)
    digest = [
        next(ln for ln in p.stdout.splitlines() if "journal_sha256" in ln).split()[-1] for p in runs
    ]
    assert digest[0] == digest[1]
    assert "trireme: replay" not in runs[1].stderr
    # A fast machine may finish inside after_s: then it says nothing, which is right;
    # when it did speak, the last line is the summary of the whole run.
    said = [ln for ln in runs[0].stderr.splitlines() if ln.startswith("trireme: replay")]
    if said:
        assert said[-1].startswith("trireme: replay: ") and " events in " in said[-1]


def test_watch_polls_a_counter_while_the_block_runs() -> None:
    """Work that cannot report (one synchronous call) is shown by polling its counter
    from a thread; the meter ends at the final count and is closed."""
    out = io.StringIO()
    count = [0]
    polled = threading.Event()

    def done() -> int:
        if count[0] >= 50:
            polled.set()
        return count[0]

    meter = Meter("import", 100, "bytes", stream=out, after_s=0.0, every_s=0.0)
    with watch(meter, done, every_s=0.001):
        count[0] = 50
        assert polled.wait(60)  # the poller saw the half-way count while we ran
        count[0] = 100
    lines = out.getvalue().splitlines()
    assert any("50/100 bytes (50%)" in ln for ln in lines)
    assert lines[-1].startswith("trireme: import: 100 bytes in ")
    assert meter.style == "off"


def test_parsing_counts_the_bytes_read_through_the_tick_store(tmp_path: Path) -> None:
    """The parse counts every byte of the files (compressed, as stored), also when the
    tick store parses on the caller's behalf; a store hit reads nothing."""
    from engine.feeds import CaptureStats, TickStore, load_tape

    paths = [ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"]
    assert file_bytes([*paths, tmp_path / "missing"]) == paths[0].stat().st_size
    store = TickStore(tmp_path / "ticks")
    first, second = CaptureStats(), CaptureStats()
    load_tape(paths, ["BTCUSDT"], stats=first, store=store)
    assert first.read.n == paths[0].stat().st_size
    load_tape(paths, ["BTCUSDT"], stats=second, store=store)
    assert store.last_outcome == "hit" and second.read.n == 0


# -- set-up steps (no count) ------------------------------------------------------


def test_a_slow_step_is_announced_and_its_end_said():
    out = io.StringIO()
    announced = threading.Event()

    class Watch(io.StringIO):
        def write(self, text: str) -> int:
            n = out.write(text)
            announced.set()
            return n

    with slow_step("compiling kernels", after_s=0.01, stream=Watch()):
        assert announced.wait(60)  # the step is still running when the line appears
    lines = out.getvalue().splitlines()
    assert lines[0] == "trireme: compiling kernels..."
    assert lines[1].startswith("trireme: compiling kernels: done in ")


def test_a_quick_step_says_nothing():
    out = io.StringIO()
    with slow_step("reading market data", after_s=3600.0, stream=out):
        pass
    assert out.getvalue() == ""


def test_a_step_is_announced_once_in_lines_also_on_a_terminal() -> None:
    tty, clock = Tty(), Clock()
    meter = Meter("loading the ML filter", None, stream=tty, after_s=1.0, clock=clock)
    assert meter.style == "lines"
    meter.update()
    clock.now += 1.5
    meter.update()
    clock.now += 30.0
    meter.update()  # no second line, however long it runs
    meter.close()
    assert tty.getvalue().splitlines() == [
        "trireme: loading the ML filter...",
        "trireme: loading the ML filter: done in 31.5 s",
    ]


def test_a_step_with_progress_off_says_nothing() -> None:
    out = io.StringIO()
    with slow_step("compiling kernels", after_s=0.0, stream=out, style="off"):
        pass
    assert out.getvalue() == ""
