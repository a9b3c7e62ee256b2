"""Binance's public-data archive (data.binance.vision): download, verify, list.

The archive keeps one zip a day per symbol and kind, each beside a ``.CHECKSUM`` file
(``<sha256>  <file name>``)::

    data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-08-01.zip
    data/futures/um/daily/bookTicker/BTCUSDT/BTCUSDT-bookTicker-2024-08-01.zip
    data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-08-01.zip

:func:`download` mirrors that layout under an output directory. A file is written to
``<name>.part`` and renamed only once its sha256 matches the archive's checksum, so a
finished file is always a verified one; an interrupted download resumes from the
``.part`` file's size with an HTTP ``Range`` request. A day the archive does not have
(404) is counted as missing, never fatal. :func:`list_archive` says what is on disk:
per symbol and kind, the first and last day and the days missing in between.

The files replay as they are (``engine.feeds`` reads the zipped CSVs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import attrs
import httpx
import trio

from .._errors import DataError

DEFAULT_BASE_URL = "https://data.binance.vision"
KINDS = ("aggTrades", "trades", "bookTicker", "klines")
_DAY_FILE = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<kind>[A-Za-z0-9]+)-(?P<day>\d{4}-\d{2}-\d{2})\.zip$"
)


@attrs.frozen(kw_only=True)
class ArchiveFile:
    """One day of one symbol and kind in the archive."""

    symbol: str
    kind: str  # aggTrades, trades, bookTicker, or a kline interval such as "1m"
    day: dt.date
    path: str  # relative to the archive root, e.g. "data/futures/um/daily/..."

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@attrs.define
class DownloadStats:
    """What a download did, file by file outcome counts."""

    downloaded: int = 0
    resumed: int = 0
    already_present: int = 0
    missing: list[str] = attrs.field(factory=list)
    bytes: int = 0


def archive_files(
    symbols: Iterable[str],
    kinds: Iterable[str],
    start: dt.date,
    end: dt.date,
    *,
    interval: str = "1m",
) -> list[ArchiveFile]:
    """Every daily file for ``symbols`` x ``kinds`` from ``start`` to ``end`` (inclusive).

    Raises:
        DataError: an unknown kind, or ``end`` before ``start``.
    """
    if end < start:
        raise DataError(f"--to {end} is before --from {start}")
    files = []
    for kind in kinds:
        if kind not in KINDS:
            raise DataError(f"--kinds: unknown kind {kind!r}; expected some of {', '.join(KINDS)}")
        for symbol in symbols:
            sym = symbol.upper()
            day = start
            while day <= end:
                if kind == "klines":
                    rel = f"klines/{sym}/{interval}/{sym}-{interval}-{day}.zip"
                    label = interval
                else:
                    rel = f"{kind}/{sym}/{sym}-{kind}-{day}.zip"
                    label = kind
                files.append(
                    ArchiveFile(
                        symbol=sym, kind=label, day=day, path=f"data/futures/um/daily/{rel}"
                    )
                )
                day += dt.timedelta(days=1)
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_checksum(text: str, name: str, url: str) -> str:
    parts = text.split()
    if len(parts) < 1 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
        raise DataError(f"{url}: not a sha256 checksum file")
    if len(parts) > 1 and parts[1].lstrip("*") != name:
        raise DataError(f"{url}: checksum is for {parts[1]!r}, not {name!r}")
    return parts[0].lower()


async def _fetch_one(
    client: httpx.AsyncClient, f: ArchiveFile, out: Path, stats: DownloadStats
) -> None:
    target = out / f.path
    checksum_url = f"/{f.path}.CHECKSUM"
    reply = await client.get(checksum_url)
    if reply.status_code == 404:
        stats.missing.append(f.path)
        return
    _raise_for(reply, checksum_url)
    expected = _parse_checksum(reply.text, f.name, checksum_url)
    if target.exists() and _sha256(target) == expected:
        stats.already_present += 1
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    async with client.stream("GET", f"/{f.path}", headers=headers) as body:
        if body.status_code == 404:
            stats.missing.append(f.path)
            return
        if body.status_code == 416:  # the .part is already whole (or longer): check it
            offset = -1
        else:
            _raise_for(body, f.path)
            resumed = offset > 0 and body.status_code == 206
            mode = "ab" if resumed else "wb"
            with part.open(mode) as sink:
                async for chunk in body.aiter_bytes():
                    sink.write(chunk)
                    stats.bytes += len(chunk)
            stats.resumed += resumed
    actual = _sha256(part)
    if actual != expected:
        part.unlink()
        raise DataError(
            f"{target}: sha256 {actual[:16]}... does not match the archive's "
            f"{expected[:16]}...; the partial file was removed, run again"
        )
    part.replace(target)
    stats.downloaded += 1


def _raise_for(reply: httpx.Response, what: str) -> None:
    if reply.status_code >= 400:
        raise DataError(f"{what}: HTTP {reply.status_code} {reply.reason_phrase}")


async def download(
    files: list[ArchiveFile],
    out: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    parallel: int = 4,
    client: httpx.AsyncClient | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DownloadStats:
    """Download ``files`` into ``out`` (mirroring the archive's layout), verified.

    Args:
        files: from :func:`archive_files`.
        out: the local root; files land at ``out / file.path``.
        base_url: the archive's root URL.
        parallel: downloads at a time.
        client: an HTTP client (default: a new pooled one on ``base_url``).
        progress: called with ``(done, total)`` after each file.

    Raises:
        DataError: a checksum mismatch, an HTTP error other than 404, or the network
            failed; files finished before it stay, the current one stays as ``.part``.

    On cancellation, the file being written stays as ``.part`` and resumes next time.
    """
    stats = DownloadStats()
    done = 0
    limit = trio.CapacityLimiter(parallel)

    async def one(f: ArchiveFile, http: httpx.AsyncClient) -> None:
        nonlocal done
        async with limit:
            try:
                await _fetch_one(http, f, out, stats)
            except httpx.HTTPError as exc:
                raise DataError(f"{base_url}/{f.path}: {type(exc).__name__}: {exc}") from exc
        done += 1
        if progress is not None:
            progress(done, len(files))

    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=60.0)
            )
        try:
            async with trio.open_nursery() as nursery:
                for f in files:
                    nursery.start_soon(one, f, client)
        except ExceptionGroup as group:
            # Downloads run side by side; report the first failure, as one line.
            errors = group.subgroup(DataError)
            if errors is None:
                raise
            first = next(iter(_leaves(errors)))
            others = len(list(_leaves(errors))) - 1
            suffix = f" (and {others} more failed download(s))" if others else ""
            raise DataError(f"{first}{suffix}") from group
    return stats


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@attrs.frozen(kw_only=True)
class ArchiveSpan:
    """What is on disk for one symbol and kind."""

    symbol: str
    kind: str
    first: dt.date | None  # None: only unfinished downloads
    last: dt.date | None
    files: int
    gaps: list[dt.date]
    partial: int  # unfinished ``.part`` downloads


def list_archive(root: Path) -> list[ArchiveSpan]:
    """Per symbol and kind under ``root``: the days present, the days missing between."""
    days: dict[tuple[str, str], set[dt.date]] = {}
    partial: dict[tuple[str, str], int] = {}
    for path in sorted(root.rglob("*.zip*")):
        name = path.name.removesuffix(".part")
        match = _DAY_FILE.match(name)
        if match is None or path.name.endswith(".CHECKSUM"):
            continue
        key = (match["symbol"], match["kind"])
        if path.name.endswith(".part"):
            partial[key] = partial.get(key, 0) + 1
            continue
        days.setdefault(key, set()).add(dt.date.fromisoformat(match["day"]))
    spans = []
    for key in sorted(days.keys() | partial.keys()):
        present = sorted(days.get(key, ()))
        first = present[0] if present else None
        last = present[-1] if present else None
        gaps = []
        if first is not None and last is not None:
            span = (first + dt.timedelta(days=i) for i in range((last - first).days + 1))
            gaps = [day for day in span if day not in days[key]]
        spans.append(
            ArchiveSpan(
                symbol=key[0],
                kind=key[1],
                first=first,
                last=last,
                files=len(present),
                gaps=gaps,
                partial=partial.get(key, 0),
            )
        )
    return spans
