"""Errors raised by the hardware package.

Tree::

    HardwareError
    ├── CpuListError     text is not a Linux cpulist ("0-3,8,10-11")
    └── PinningError     the kernel refused a CPU affinity

Everything else the package does degrades instead of raising: a missing /sys
file becomes a fallback and a note, a refused setting becomes a
:class:`~hardware.Refusal` in :class:`~hardware.AppliedSettings` and a warning.
"""

from __future__ import annotations


class HardwareError(Exception):
    """Root of every error the hardware package raises on purpose."""


class CpuListError(HardwareError, ValueError):
    """Text that is not a Linux cpulist."""


class PinningError(HardwareError):
    """The kernel refused to set a thread's CPU affinity.

    Attributes:
        cpus: the CPUs that were asked for.
    """

    def __init__(self, cpus: tuple[int, ...], message: str) -> None:
        super().__init__(message)
        self.cpus = cpus
