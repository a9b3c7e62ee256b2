"""Progress of a long task on stderr: a bar on a terminal, plain periodic lines otherwise.

A replay of a day of ticks, a tick-store import or a sweep runs for minutes; without
a word the engine looks hung, and with a bar redrawn into a log file the log is
unreadable. :class:`Meter` chooses by where stderr goes (``logging.progress =
"auto"``): a tqdm bar (count, rate, ETA) when it is a terminal, otherwise one line
every ``every_s`` seconds in the form::

    trireme: replay 1,234,567/2,600,000 events (47%), 612k events/s, ETA 2 s

Nothing appears for a task that ends within ``after_s`` (a short replay stays quiet),
and the last line says how long the whole task took. Progress goes to stderr only:
the JSON log and the report never depend on it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, TextIO

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
    """The progress of one task with a known total, shown on ``stream``.

    Args:
        what: the task, as the line names it (``replay``).
        total: the count at which the task is done (events, tasks, bytes...).
        unit: what is counted, in the plural (``events``).
        style: ``auto`` (a bar on a terminal, lines otherwise), ``bar``, ``lines``
            or ``off``.
        stream: where it goes (default: ``sys.stderr`` at the time of the call).
        after_s: nothing is shown before the task has run this long.
        every_s: the spacing of plain lines.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        what: str,
        total: int,
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
        self.total = max(0, int(total))
        self.unit = unit
        self._out = stream if stream is not None else sys.stderr
        self._after_s = after_s
        self._every_s = every_s
        self._clock = clock
        self._started = clock()
        self._next_line = self._started + after_s
        self._done = 0
        self.lines = 0
        if style == "auto":
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

    def update(self, done: int) -> None:
        """The task has reached ``done`` of :attr:`total` (a count, not an increment)."""
        done = min(int(done), self.total) if self.total else int(done)
        if self._bar is not None:
            if done > self._done:
                self._bar.update(done - self._done)
        elif self.style == "lines":
            now = self._clock()
            if now >= self._next_line:
                self._write(self._line(done, now))
                self._next_line = now + self._every_s
        self._done = max(self._done, done)

    def close(self) -> None:
        """The task ended: say how long it took (if anything was shown)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        if self.style == "lines" and self.lines:
            elapsed = self._clock() - self._started
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
def watch(meter: Meter, done: Callable[[], int], *, every_s: float = 0.25) -> Iterator[Meter]:
    """Keep ``meter`` at ``done()`` from a thread while the block runs synchronously.

    For work that cannot stop to report (parsing a capture runs in one call):
    ``done`` reads a counter the work keeps (e.g. the bytes a capture parse has read,
    ``CaptureStats.read.n``), polled every ``every_s``; the meter is closed at
    the end of the block.
    """
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


def file_bytes(paths: Iterable[Path]) -> int:
    """The total size of the files among ``paths`` (0 for those that cannot be read)."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total
