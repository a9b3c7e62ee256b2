"""A progress line on stderr for set-up steps that take more than a second.

The first run on a fresh clone compiles numba kernels and parses captures before
anything else prints: without a word the engine looks hung. :func:`slow_step` wraps
one set-up step; if it is still running after ``after_s`` seconds, a timer thread
writes ``trireme: <what>...`` to stderr, and ``done in X s`` when it ends. Steps
that finish sooner print nothing (a warm start stays quiet). The step itself runs
in the calling thread as before, so nothing about its result changes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


@contextmanager
def slow_step(
    what: str, *, after_s: float = 1.0, stream: TextIO | None = None, style: str = "auto"
) -> Iterator[None]:
    """Say on ``stream`` (stderr) that ``what`` is under way, if it takes over ``after_s``.

    Args:
        what: the step, as the line names it (``compiling kernels (first run only)``).
        after_s: how long the step may run before the line appears.
        stream: where the line goes (default: ``sys.stderr`` at the time of the call).
        style: ``logging.progress`` (``off``: say nothing).
    """
    if style == "off":
        yield
        return
    out = stream if stream is not None else sys.stderr
    started = time.monotonic()
    said = threading.Event()
    lock = threading.Lock()

    def say() -> None:
        with lock:
            if not said.is_set():
                said.set()
                out.write(f"trireme: {what}...\n")
                out.flush()

    timer = threading.Timer(after_s, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            if said.is_set():
                out.write(f"trireme: {what}: done in {time.monotonic() - started:.1f} s\n")
                out.flush()
            said.set()  # a timer that fires now says nothing
