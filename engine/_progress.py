"""Progress of long work on stderr: set-up steps, replays, imports, sweeps.

Without a word the engine looks hung: the first run on a fresh clone compiles numba
kernels, and a replay of a day of ticks, a tick-store import or a sweep runs for
minutes. One class shows all of it, :class:`Meter`; nothing appears for work that
ends within ``after_s`` (a warm start and a short replay stay quiet). Progress goes to
stderr only: the JSON log and the report never depend on it.

* **A task with a count** (``Meter(what, total, unit)``, kept current with
  :meth:`Meter.update`): with ``logging.progress = "auto"`` a tqdm bar (count, rate,
  ETA) when stderr is a terminal, otherwise one line every ``every_s`` seconds::

      trireme: replay 1,234,567/2,600,000 events (47%), 612k events/s, ETA 2 s

  and a last line saying how long the whole task took.
* **A step with no count** (``total=None``, as :func:`slow_step` makes): one line
  ``trireme: <what>...`` once it has run ``after_s``, and ``trireme: <what>: done in
  X s`` when it ends (lines, also on a terminal).

Work that cannot stop to report (a kernel compiling, a capture parsed in one call)
runs inside :func:`watch`, which keeps the meter current from a thread; the work
itself runs in the calling thread as before, so nothing about its result changes.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, TextIO

__all__ = ["STYLES", "Meter", "Style", "file_bytes", "slow_step", "watch"]

Style = Literal["auto", "bar", "lines", "off"]
STYLES: tuple[str, ...] = ("auto", "bar", "lines", "off")


def _si(x: float) -> str:
    """``612345.0`` -> ``612k`` (rates: three significant figures at most)."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Meter:
    """The progress of one task (or one step), shown on ``stream``.

    Args:
        what: the task, as the line names it (``replay``).
        total: the count at which the task is done (events, tasks, bytes...); None:
            a step with no count (a line when it has run ``after_s``, one when it ends).
        unit: what is counted, in the plural (``events``).
        style: ``auto`` (a bar on a terminal, lines otherwise), ``bar``, ``lines``
            or ``off``. A step with no count always uses lines.
        stream: where it goes (default: ``sys.stderr`` at the time of the call).
        after_s: nothing is shown before the task has run this long.
        every_s: the spacing of plain lines.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "events",
        *,
        style: Style = "auto",
        stream: TextIO | None = None,
        after_s: float = 2.0,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"progress style must be one of {STYLES}, got {style!r}")
        self.what = what
        self.counted = total is not None
        self.total = max(0, int(total)) if total is not None else 0
        self.unit = unit
        self._out = stream if stream is not None else sys.stderr
        self._after_s = after_s
        self._every_s = every_s
        self._clock = clock
        self._started = clock()
        self._next_line = self._started + after_s
        self._done = 0
        self.lines = 0
        if style in ("auto", "bar") and not self.counted:
            style = "lines"
        elif style == "auto":
            isatty = getattr(self._out, "isatty", None)
            style = "bar" if isatty is not None and isatty() else "lines"
        self.style: Style = style
        self._bar = None
        if style == "bar":
            from tqdm import tqdm  # only where a terminal shows it

            self._bar = tqdm(
                total=self.total,
                desc=f"trireme: {what}",
                unit=unit.rstrip("s") or unit,
                unit_scale=self.total >= 10_000,
                file=self._out,
                delay=after_s,
                leave=True,
                dynamic_ncols=True,
                mininterval=0.25,
            )

    def update(self, done: int = 0) -> None:
        """The task has reached ``done`` of :attr:`total` (a count, not an increment);
        for a step with no count, only the time matters."""
        done = min(int(done), self.total) if self.total else int(done)
        if self._bar is not None:
            if done > self._done:
                self._bar.update(done - self._done)
        elif self.style == "lines":
            now = self._clock()
            if now >= self._next_line:
                self._write(self._line(done, now))
                # A step is announced once; a count is repeated every every_s.
                self._next_line = now + self._every_s if self.counted else math.inf
        self._done = max(self._done, done)

    def close(self) -> None:
        """The task ended: say how long it took (if anything was shown)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        if self.style == "lines" and self.lines:
            elapsed = self._clock() - self._started
            if not self.counted:
                self._write(f"trireme: {self.what}: done in {elapsed:.1f} s")
            else:
                rate = self._done / elapsed if elapsed > 0 else 0.0
                self._write(
                    f"trireme: {self.what}: {self._done:,} {self.unit} in {_duration(elapsed)}"
                    f" ({_si(rate)} {self.unit}/s)"
                )
        self.style = "off"

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, done: int, now: float) -> str:
        if not self.counted:
            return f"trireme: {self.what}..."
        elapsed = now - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"trireme: {self.what} {done:,}"
        if self.total:
            line += f"/{self.total:,} {self.unit} ({done / self.total:.0%})"
        else:
            line += f" {self.unit}"
        line += f", {_si(rate)} {self.unit}/s"
        if self.total and rate > 0:
            line += f", ETA {_duration((self.total - done) / rate)}"
        return line

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
        self.lines += 1


@contextlib.contextmanager
def watch(
    meter: Meter, done: Callable[[], int] = lambda: 0, *, every_s: float = 0.25
) -> Iterator[Meter]:
    """Keep ``meter`` at ``done()`` from a thread while the block runs synchronously.

    For work that cannot stop to report (parsing a capture runs in one call):
    ``done`` reads a counter the work keeps (e.g. the bytes a capture parse has read,
    ``CaptureStats.read.n``), polled every ``every_s``; the meter is closed at
    the end of the block.
    """
    if meter.style == "off":  # nothing to show: no thread
        try:
            yield meter
        finally:
            meter.close()
        return
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every_s):
            meter.update(done())

    thread = threading.Thread(target=poll, name=f"progress-{meter.what}", daemon=True)
    thread.start()
    try:
        yield meter
    finally:
        stop.set()
        thread.join()
        meter.update(done())
        meter.close()


def slow_step(
    what: str, *, after_s: float = 1.0, stream: TextIO | None = None, style: Style = "auto"
) -> contextlib.AbstractContextManager[Meter]:
    """Say on ``stream`` (stderr) that the set-up step ``what`` is under way, if it
    takes over ``after_s``, and how long it took (a :class:`Meter` with no count,
    under :func:`watch`)::

        with slow_step("compiling the feature kernels (first run only)"):
            compile_them()

    Args:
        what: the step, as the line names it.
        after_s: how long the step may run before the line appears.
        stream: where the line goes (default: ``sys.stderr`` at the time of the call).
        style: ``logging.progress`` (``off``: say nothing).
    """
    meter = Meter(what, None, style=style, stream=stream, after_s=after_s)
    return watch(meter, every_s=min(0.25, after_s))


def file_bytes(paths: Iterable[Path]) -> int:
    """The total size of the files among ``paths`` (0 for those that cannot be read)."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total
