"""Cut the bundled sample from the full BTCUSDT capture.

``python -m tools.make_sample [--seconds 180] [--src PATH] [--out PATH]`` keeps
the first N seconds (by local receive time, in whatever unit the capture stamps it)
of the capture, line for line, and writes a reproducible gzip (no timestamp or file
name in the header).
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

from engine import DataError
from engine.feeds._capture import UNITS, probe_capture

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT.parent / "shared/data/external/hftbacktest/btcusdt_20240808.gz"
DEFAULT_OUT = ROOT / "data/sample/btcusdt_20240808_180s.gz"


def cut(src: Path, seconds: float) -> bytes:
    """The first ``seconds`` of ``src`` as a reproducible gzip.

    The receive stamps are read in the unit the capture reader finds for the file
    (hftbacktest wrote microseconds in 2023, nanoseconds in 2024).

    Raises:
        DataError: the file's stamps have no unit (no line with a stamp and an event time).
    """
    unit = probe_capture(src).unit
    if not unit:
        raise DataError(f"{src}: no receive-time stamps to cut by")
    lines = gzip.decompress(src.read_bytes()).split(b"\n")
    first = int(lines[0].split(b" ", 1)[0])
    end = first + int(seconds * 1e9) // UNITS[unit]
    keep = [line for line in lines if line and int(line.split(b" ", 1)[0]) < end]
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as out:
        out.write(b"\n".join(keep) + b"\n")
    return buf.getvalue()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m tools.make_sample")
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    data = cut(args.src, args.seconds)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
