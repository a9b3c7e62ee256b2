"""Stopping a long-running command on Ctrl-C, SIGTERM or a time limit."""

from __future__ import annotations

import math
import signal

import trio


async def wait_for_stop(duration: float = 0.0) -> None:
    """Return on SIGINT or SIGTERM, or after ``duration`` seconds (0: no limit).

    The signals are handled only while this waits, so a command can finish its
    work (final step, flushing files) instead of dying with KeyboardInterrupt.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        with trio.move_on_after(duration if duration > 0 else math.inf):
            async for _sig in signals:
                return
