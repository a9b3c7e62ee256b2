"""Writing live market data in the capture format the replay feed reads.

Gzip files of lines ``<receive ns> <raw json>``, rotated by size or age; a file
is complete (flushed and closed, valid gzip) whenever it is rotated or the
recorder is closed, so a stop loses nothing already received.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import IO


class CaptureWriter:
    """Appends lines to rotating gzip captures in ``directory``.

    Args:
        directory: created if missing.
        prefix: file names are ``<prefix>-<UTC time>-<n>.jsonl.gz``.
        rotate_bytes: start a new file after this many uncompressed bytes.
        rotate_s: start a new file after this many seconds.
    """

    def __init__(
        self,
        directory: Path,
        *,
        prefix: str = "capture",
        rotate_bytes: int = 256 << 20,
        rotate_s: float = 3600.0,
    ) -> None:
        self.directory = directory
        self._prefix = prefix
        self._rotate_bytes = rotate_bytes
        self._rotate_s = rotate_s
        self._file: IO[bytes] | None = None
        self._opened = 0.0
        self._bytes = 0
        self._n = 0
        self.files: list[Path] = []
        self.lines = 0
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, ts_ns: int, raw: bytes) -> None:
        """Append one message received at ``ts_ns``."""
        now = time.monotonic()
        if (
            self._file is None
            or self._bytes >= self._rotate_bytes
            or (now - self._opened >= self._rotate_s)
        ):
            self._rotate(now)
        assert self._file is not None
        line = b"%d %s\n" % (ts_ns, raw)
        self._file.write(line)
        self._bytes += len(line)
        self.lines += 1

    def _rotate(self, now: float) -> None:
        self.close()
        self._n += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.directory / f"{self._prefix}-{stamp}-{self._n:04d}.jsonl.gz"
        self._file = gzip.open(path, "wb", compresslevel=6)  # noqa: SIM115 - kept open across writes
        self._opened = now
        self._bytes = 0
        self.files.append(path)

    def close(self) -> None:
        """Flush and close the current file (a complete gzip member)."""
        if self._file is not None:
            self._file.close()
            self._file = None
