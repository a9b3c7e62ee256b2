"""The set-up progress line: said only for steps slower than the threshold."""

from __future__ import annotations

import io
import threading

from engine._progress import slow_step


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
