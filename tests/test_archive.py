"""The public-data archive downloader against a local HTTP server with the archive's layout.

The server is a real HTTP/1.1 server (the standard library's, on loopback) that serves
files with ``Range`` support, like data.binance.vision's CDN; it can cut a transfer
half-way once, to exercise resuming.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import io
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from engine import DataError
from engine.feeds import CaptureStats, expand_paths, read_capture
from engine.feeds._archive import archive_files, download, list_archive
from engine.feeds._capture import merge_captures

SAMPLE = Path(__file__).resolve().parents[1] / "data/sample/btcusdt_20240808_180s.gz"


def _book_ticker_zip(day: dt.date, rows: int) -> bytes:
    """A bookTicker CSV zip made from the real quotes of the bundled sample."""
    lines = ["update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,"
             "transaction_time,event_time"]  # fmt: skip
    base_ms = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    for i, (_ts, msg) in enumerate(read_capture(SAMPLE, CaptureStats())):
        if type(msg).__name__ != "BookTicker":
            continue
        ms = base_ms + len(lines) * 10
        lines.append(f"{ms},{msg.bid},{msg.bid_qty},{msg.ask},{msg.ask_qty},{ms},{ms}")
        if len(lines) > rows or i > 100_000:
            break
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"BTCUSDT-bookTicker-{day}.csv", "\n".join(lines) + "\n")
    return buf.getvalue()


class _Archive:
    """Files by URL path, and a switch that cuts the next transfer of one file."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.ranges: list[str] = []

    def add(self, rel: str, body: bytes, *, checksum: bytes | None = None) -> None:
        name = rel.rsplit("/", 1)[-1]
        digest = checksum or hashlib.sha256(body).hexdigest().encode()
        self.files["/" + rel] = body
        self.files[f"/{rel}.CHECKSUM"] = digest + b"  " + name.encode() + b"\n"


def _handler(archive: _Archive) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = archive.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            header = self.headers.get("Range")
            if header:
                archive.ranges.append(header)
                start = int(header.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            part = body[start:]
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if self.path in archive.cut_once:
                archive.cut_once.discard(self.path)
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(part)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, _Archive]]:
    archive = _Archive()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(archive))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", archive
    finally:
        httpd.shutdown()
        httpd.server_close()


DAYS = [dt.date(2024, 8, 1), dt.date(2024, 8, 2), dt.date(2024, 8, 3)]


def test_layout_matches_binance() -> None:
    files = archive_files(["btcusdt"], ["bookTicker", "klines"], DAYS[0], DAYS[1], interval="1m")
    assert [f.path for f in files] == [
        "data/futures/um/daily/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-08-01.zip",
        "data/futures/um/daily/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-08-02.zip",
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-08-01.zip",
        "data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-08-02.zip",
    ]
    with pytest.raises(DataError, match="unknown kind 'depth'"):
        archive_files(["BTCUSDT"], ["depth"], DAYS[0], DAYS[1])


async def test_download_verifies_resumes_and_lists(
    server: tuple[str, _Archive], tmp_path: Path
) -> None:
    url, archive = server
    files = archive_files(["BTCUSDT"], ["bookTicker"], DAYS[0], DAYS[2])
    # The archive lacks the middle day: a gap, counted as missing.
    archive.add(files[0].path, _book_ticker_zip(DAYS[0], 3000))
    archive.add(files[2].path, _book_ticker_zip(DAYS[2], 3000))
    archive.cut_once.add("/" + files[2].path)

    with trio.fail_after(60):
        with pytest.raises(DataError):  # the cut transfer is short: not verified, kept as .part
            await download(files, tmp_path, base_url=url, parallel=1)
    part = tmp_path / (files[2].path + ".part")
    assert part.exists() and 0 < part.stat().st_size < len(archive.files["/" + files[2].path])
    assert [s.partial for s in list_archive(tmp_path)] == [1]

    with trio.fail_after(60):
        stats = await download(files, tmp_path, base_url=url, parallel=2)
    # The first run may or may not have finished day 1 before the cut stopped it.
    assert stats.resumed == 1 and stats.downloaded + stats.already_present == 2
    assert stats.missing == [files[1].path]
    assert any(r != "bytes=0-" for r in archive.ranges)
    for f in (files[0], files[2]):
        assert (tmp_path / f.path).read_bytes() == archive.files["/" + f.path]
    [span] = list_archive(tmp_path)
    assert (span.symbol, span.kind, span.first, span.last) == ("BTCUSDT", "bookTicker", *DAYS[::2])
    assert span.files == 2 and span.gaps == [DAYS[1]] and span.partial == 0

    # The download directory replays as it is.
    events = list(merge_captures(expand_paths([tmp_path]), CaptureStats(), frozenset({"BTCUSDT"})))
    assert len(events) == 6000


async def test_checksum_mismatch_is_refused(server: tuple[str, _Archive], tmp_path: Path) -> None:
    url, archive = server
    [f] = archive_files(["BTCUSDT"], ["bookTicker"], DAYS[0], DAYS[0])
    archive.add(f.path, _book_ticker_zip(DAYS[0], 100), checksum=b"0" * 64)
    with trio.fail_after(60), pytest.raises(DataError, match="does not match"):
        await download([f], tmp_path, base_url=url)
    assert not (tmp_path / f.path).exists()
    assert not (tmp_path / (f.path + ".part")).exists()


def test_cli_download_then_list(server: tuple[str, _Archive], tmp_path: Path) -> None:
    url, archive = server
    files = archive_files(["BTCUSDT"], ["bookTicker"], DAYS[0], DAYS[2])
    for f in (files[0], files[2]):
        archive.add(f.path, _book_ticker_zip(f.day, 200))
    out = tmp_path / "archive"
    args = ["--symbols", "BTCUSDT", "--kinds", "bookTicker", "--from", "2024-08-01"]
    args += ["--to", "2024-08-03", "--out", str(out), "--base-url", url]
    done = subprocess.run(
        [sys.executable, "-m", "engine", "data", "download", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "downloaded 2" in done.stdout and "not in the archive 1" in done.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "engine", "data", "list", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "BTCUSDT" in listed.stdout and "gaps: 2024-08-02" in listed.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "engine", "data", "download", *args, "--kinds", "depth"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "depth" in bad.stderr
