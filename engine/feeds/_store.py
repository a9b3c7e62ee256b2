"""The tick store: parsed market data kept as memory-mapped numpy columns.

The first replay of a set of sources (or ``python -m engine data import``) parses
them into a :class:`~engine.feeds._tape.Tape` and writes its columns as ``.npy``
files beside a ``meta.json``; later loads map the files (``np.load(mmap_mode="r")``)
without parsing: loading costs the hashing of the sources and a few file opens,
whatever the number of events.

Layout, under the store's root::

    <entry>/meta.json            what was stored, from what, and the reader counters
    <entry>/<i>.<dtype>.npy      the i-th symbol's (sorted order) columns of that dtype,
                                 as the rows of a 2-D array (int64: ts, ts_exchange,
                                 seq, next_funding_ts; int8: kind, buyer_maker;
                                 float64: the prices and quantities)
    <entry>/<i>.book_row.npy     the i-th symbol's book state index per row (int64),
                                 only for a symbol with depth rows
    <entry>/<i>.book.npy         its book states, float64 ``(4, n_states, levels)``:
                                 bid price, bid qty, ask price, ask qty
                                 (:mod:`engine.feeds._bookcols`)

An entry is named by a hash of what it was built for: the sources' resolved paths
and names (a CSV source's name says its symbol and format), the reader limits, the
requested symbol set, the store format and the book depth kept
(:data:`~engine.feeds._bookcols.BOOK_LEVELS`). Its ``meta.json`` holds the digest of the
sources' contents (sha256 and size of each file's bytes); a load recomputes it, so
a changed source is re-imported into the same entry (the old one replaced, so
editing a capture does not grow the store).

**Why the symbol set is part of the key.** The readers' time checks (clamping,
jump detection, duplicates) and their counters run over the requested symbols
only, and a CSV source of another symbol is not read at all, so the tape of a
subset is not in general a slice of the tape of every symbol. Keying by the set
keeps a stored tape exact by construction; the common case (every symbol in the
data) is one entry.

**Never trusted when broken.** A missing, short or over-long column file, a wrong
dtype or length, unreadable ``meta.json``, another format version or a key that
does not match is rebuilt (said once on the log). Entries are written to a
temporary directory and renamed into place, so a reader never sees half an entry
and two processes importing the same sources at once both end with one whole
entry. The content of a column is not checksummed at load (that would cost what
mapping saves): the store trusts the bytes it wrote itself.

**Growth.** One entry per (sources, symbols, limits); nothing expires. Clear it
by deleting the directory (``rm -rf ~/.cache/trireme/ticks`` for the default
location); ``python -m engine data import`` prints what each entry holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from structlog.typing import FilteringBoundLogger

from .._errors import ConfigError, DataError
from ..messages import Ticks
from ._bookcols import BOOK_LEVELS
from ._capture import CaptureLimits, CaptureStats
from ._tape import COLUMNS, Tape, parse_tape, tape_from_columns

#: Columns stored together, one file per dtype and symbol: rows of a 2-D array.
_GROUPS: tuple[tuple[str, np.dtype, tuple[str, ...]], ...] = tuple(
    (dtype.name, dtype, tuple(name for name, d in COLUMNS if d == dtype))
    for dtype in dict.fromkeys(d for _name, d in COLUMNS)
)

#: Bumped whenever the layout or the meaning of a stored column changes.
FORMAT_VERSION = 2
_BOOK_STATES = ("book_bid_px", "book_bid_qty", "book_ask_px", "book_ask_qty")
_META = "meta.json"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
#: A source changed this recently (ns) before it was hashed is hashed again at each
#: use: file timestamps can be as coarse as 2 s (FAT), a kernel tick on most others.
RACY_NS = 3_000_000_000


class StoreEntryError(Exception):
    """A store entry that cannot be used (the message says why); it is rebuilt."""


@attrs.frozen(kw_only=True)
class StoreEntry:
    """What one entry of the store holds (``meta.json``, summarised).

    Attributes:
        path: the entry's directory.
        sources: the source files it was built from, as given then.
        symbols: the symbol set it was built for.
        events: events stored.
        bytes: size of its files.
        first_ts: replay time of the first event, ns (None: none).
        last_ts: replay time of the last event, ns (None: none).
    """

    path: Path
    sources: tuple[str, ...]
    symbols: tuple[str, ...]
    events: int
    bytes: int
    first_ts: int | None
    last_ts: int | None


def default_store_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/trireme/ticks``, else ``~/.cache/trireme/ticks``."""
    environ = os.environ if env is None else env
    cache = environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "trireme" / "ticks"


def store_dir(setting: str, *, base_dir: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Where ``data.tick_store`` puts the store (None for ``"off"``).

    Args:
        setting: ``"auto"``, ``"off"`` or a directory (relative to ``base_dir``).
        base_dir: the config file's directory.
        env: the environment (default: this process's).
    """
    if setting == "off":
        return None
    if setting == "auto":
        return default_store_dir(env)
    path = Path(setting).expanduser()
    return path if path.is_absolute() else base_dir / path


def open_tick_store(
    setting: str,
    *,
    base_dir: Path,
    where: str,
    log: FilteringBoundLogger | None = None,
    env: Mapping[str, str] | None = None,
) -> TickStore | None:
    """The tick store ``data.tick_store`` names, its directory created (None: ``"off"``).

    Args:
        setting: the value of ``data.tick_store``.
        base_dir: the config file's directory (a relative setting is under it).
        where: where the setting came from (``Config.where("data.tick_store")``).
        log: where the store reports rebuilt entries.
        env: the environment (default: this process's).

    Raises:
        ConfigError: naming ``data.tick_store`` when the directory cannot be
            created or written.
    """
    root = store_dir(setting, base_dir=base_dir, env=env)
    if root is None:
        return None
    key = "data.tick_store"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(where, key, f"cannot create {root} ({exc.strerror or exc})") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(where, key, f"{root} is not writable")
    return TickStore(root, log=log)


def file_digest(path: Path) -> dict[str, Any]:
    """``{"name", "size", "sha256"}`` of a source file's bytes.

    Raises:
        DataError: the file is missing or unreadable (as the readers say it).
    """
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise DataError(f"{path}: no such market data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read market data ({exc})") from exc
    return {"name": path.name, "size": size, "sha256": digest}


def _key(
    paths: list[Path], symbols: Iterable[str], limits: CaptureLimits, book: bool
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "paths": [str(p.resolve()) for p in paths],
        "symbols": sorted(set(symbols)),
        "limits": attrs.asdict(limits),
        "book_levels": BOOK_LEVELS if book else 0,  # an entry with and one without
    }


def _entry_name(key: Mapping[str, Any]) -> str:
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _stats_delta(stats: CaptureStats, paths: list[Path]) -> dict[str, Any]:
    """The counters of a parse that started from zero, files by their index in ``paths``."""
    index = {str(p): i for i, p in enumerate(paths)}
    return {
        "lines": stats.lines,
        "events": stats.events,
        "skipped": [[reason, n] for reason, n in stats.skipped.items()],
        "clamped": stats.clamped,
        "units": [[index[name], unit] for name, unit in stats.units.items()],
        "truncated": [index[name] for name in stats.truncated],
    }


def _restore_stats(stats: CaptureStats, saved: Mapping[str, Any], paths: list[Path]) -> None:
    """Add stored counters to ``stats`` as the parse would have added them."""
    stats.lines += int(saved["lines"])
    stats.events += int(saved["events"])
    for reason, n in saved["skipped"]:
        stats.skipped[str(reason)] += int(n)
    stats.clamped += int(saved["clamped"])
    for i, unit in saved["units"]:
        stats.units[str(paths[i])] = str(unit)
    stats.truncated.extend(str(paths[i]) for i in saved["truncated"])


def _group_file(i: int, group: str) -> str:
    return f"{i}.{group}.npy"


class TickStore:
    """Parsed sources as memory-mapped columns under ``root`` (see the module docstring).

    Args:
        root: the store's directory (created on first write).
        log: where a rebuilt entry is reported (None: not reported).
    """

    def __init__(self, root: Path, *, log: FilteringBoundLogger | None = None) -> None:
        self.root = Path(root)
        self._log = log
        #: How the last :meth:`load` went: ``"hit"``, ``"imported"``, ``"rebuilt"`` or
        #: ``"not_stored"`` (parsed, but the entry could not be written: see the log).
        self.last_outcome = ""
        #: Why the last load rebuilt its entry ("" when it did not).
        self.last_problem = ""
        # path -> (its stat signature, its digest): a run asks for the symbols, then
        # loads, and each needs the sources' digests (3.6 MB hashed: 2.5 ms).
        self._digests: dict[Path, tuple[tuple[int, ...], dict[str, Any]]] = {}

    def _source_digests(self, paths: list[Path]) -> list[dict[str, Any]]:
        """:func:`file_digest` of each of ``paths``; one already hashed by this store is
        not hashed again while its stat signature (device, inode, size, mtime, ctime:
        a write always moves ctime) is unchanged. As git's "racy clean" rule has it, a
        file whose ctime is within :data:`RACY_NS` of its hashing could have changed
        again within the timestamps' granularity: such a file is hashed every time."""
        out = []
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                out.append(file_digest(path))  # raises the readers' DataError
                continue
            sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = self._digests.get(path)
            if known is not None and known[0] == sig:
                out.append(dict(known[1]))
                continue
            started = time.time_ns()
            digest = file_digest(path)
            if st.st_ctime_ns < started - RACY_NS:
                self._digests[path] = (sig, digest)
            out.append(digest)
        return out

    def load(
        self,
        paths: list[Path],
        symbols: Iterable[str],
        *,
        limits: CaptureLimits,
        stats: CaptureStats,
        book: bool = False,
    ) -> Tape:
        """The tape of ``paths``: mapped from the store, else parsed and stored.

        ``stats`` is updated as a parse would update it. ``book``: with the order
        book columns (an entry of its own: see :func:`~engine.feeds.parse_tape`).

        A store that cannot be written (a full disk) costs a parse, not the load:
        the tape is returned and the failure logged (``last_outcome``).

        Raises:
            DataError: a source cannot be read or fails the readers' checks.
        """
        order = tuple(dict.fromkeys(symbols))
        key = _key(paths, order, limits, book)
        sources = self._source_digests(paths)
        entry = self.entry_for(paths, order, limits=limits, book=book)
        problem = ""
        if entry.exists():
            try:
                meta = _read_meta(entry, key, sources)
                tape = _map_entry(entry, meta, order)
            except StoreEntryError as exc:
                problem = str(exc)
            else:
                _restore_stats(stats, meta["stats"], paths)
                self.last_outcome, self.last_problem = "hit", ""
                return tape
        fresh = CaptureStats(read=stats.read)  # progress meters poll the caller's count
        tape = parse_tape(paths, order, limits=limits, stats=fresh, book=book)
        try:
            self._write(entry, key, sources, paths, tape, fresh)
        except OSError as exc:
            # The store is a cache: a full disk costs the next run a parse, not this run.
            self.last_outcome, self.last_problem = "not_stored", f"cannot write {entry} ({exc})"
            if self._log is not None:
                self._log.warning("tick store entry not written", path=str(entry), reason=str(exc))
        else:
            if problem and self._log is not None:
                self._log.warning("tick store entry rebuilt", path=str(entry), reason=problem)
            self.last_outcome = "rebuilt" if problem else "imported"
            self.last_problem = problem
        _restore_stats(stats, _stats_delta(fresh, paths), paths)
        return tape

    def symbols(self, paths: list[Path], scan: Callable[[list[Path]], list[str]]) -> list[str]:
        """The symbols ``scan`` finds in ``paths``, kept beside the sources' digests so a
        later run of the same files skips the scan (a changed file is scanned again).

        Raises:
            DataError: a source cannot be read.
        """
        sources = self._source_digests(paths)
        name = _entry_name({"format": FORMAT_VERSION, "sources": sources})
        path = self.root / "symbols" / f"{name}.json"
        try:
            found = json.loads(path.read_text())["symbols"]
            if isinstance(found, list) and all(isinstance(x, str) for x in found):
                return list(found)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or damaged: scan again and rewrite it
        found = scan(paths)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"symbols": found, "sources": sources}))
            tmp.replace(path)
        except OSError as exc:  # a cache: the next run scans again
            if self._log is not None:
                self._log.warning("tick store symbols not written", path=str(path), reason=str(exc))
        return found

    def entry_for(
        self,
        paths: list[Path],
        symbols: Iterable[str],
        *,
        limits: CaptureLimits,
        book: bool = False,
    ) -> Path:
        """The directory of the entry for these sources, symbols, limits and book."""
        return self.root / _entry_name(_key(paths, symbols, limits, book))

    def entries(self) -> list[StoreEntry]:
        """Every readable entry (half-written and unreadable ones left out)."""
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                meta = json.loads((entry / _META).read_text())
                size = sum(f.stat().st_size for f in entry.iterdir())
                out.append(
                    StoreEntry(
                        path=entry,
                        sources=tuple(meta["sources_given"]),
                        symbols=tuple(meta["key"]["symbols"]),
                        events=int(meta["stats"]["events"]),
                        bytes=size,
                        first_ts=meta["first_ts"],
                        last_ts=meta["last_ts"],
                    )
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def _write(
        self,
        entry: Path,
        key: Mapping[str, Any],
        sources: list[dict[str, Any]],
        paths: list[Path],
        tape: Tape,
        stats: CaptureStats,
    ) -> None:
        """Write ``tape`` as ``entry``: into a temporary directory, then renamed into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))
        try:
            lengths = {}
            book_states = {}
            for i, symbol in enumerate(sorted(tape.symbols)):
                ticks = tape.ticks[symbol]
                lengths[symbol] = len(ticks)
                if not len(ticks):
                    continue  # (an empty array cannot be mapped: built at load)
                if symbol in tape.book_counts:
                    book_states[symbol] = _write_book(tmp, i, ticks)
                for group, dtype, names in _GROUPS:
                    # Written through a mapping, row by row: no stacked copy in memory.
                    path = tmp / _group_file(i, group)
                    out = np.lib.format.open_memmap(
                        path, mode="w+", dtype=dtype, shape=(len(names), len(ticks))
                    )
                    for row, name in enumerate(names):
                        out[row] = getattr(ticks, name)
                    out.flush()
                    del out
                    with path.open("rb+") as f:
                        os.fsync(f.fileno())
            meta = {
                "format": FORMAT_VERSION,
                "key": key,
                "sources": sources,
                "sources_given": [str(p) for p in paths],
                "lengths": lengths,
                "book_states": book_states,
                "book_counts": {s: dict(c) for s, c in tape.book_counts.items()},
                "first_ts": tape.first_ts,
                "last_ts": tape.last_ts,
                "stats": _stats_delta(stats, paths),
                "created_unix_s": round(time.time(), 3),  # for people; nothing reads it
            }
            with (tmp / _META).open("w") as f:
                json.dump(meta, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            tmp.chmod(0o755)
            self._install(tmp, entry, key, sources)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _install(
        self, tmp: Path, entry: Path, key: Mapping[str, Any], sources: list[dict[str, Any]]
    ) -> None:
        """Rename ``tmp`` to ``entry``, moving a stale or broken ``entry`` aside first.

        When another process installed a whole entry for the same sources in the
        meantime, that one is kept (it holds the same columns) and ``tmp`` is dropped.
        """
        for _attempt in range(5):
            try:
                os.rename(tmp, entry)
                return
            except OSError:
                if not entry.exists():
                    raise
            try:
                meta = _read_meta(entry, key, sources)
                _map_entry(entry, meta, tuple(key["symbols"]))
            except StoreEntryError:
                pass
            else:
                return  # a racing writer's entry, whole
            old = Path(tempfile.mkdtemp(prefix=_OLD_PREFIX, dir=self.root))
            try:
                os.rename(entry, old / "entry")
            except FileNotFoundError:
                pass  # another process moved it first
            finally:
                shutil.rmtree(old, ignore_errors=True)
        raise OSError(f"{entry}: could not be replaced")

    def _sweep(self) -> None:
        """Remove what interrupted writers left (temporary directories over an hour old)."""
        cutoff = time.time() - 3600
        for leftover in self.root.iterdir():
            if leftover.name.startswith((_TMP_PREFIX, _OLD_PREFIX)):
                with contextlib.suppress(OSError):
                    if leftover.stat().st_mtime < cutoff:
                        shutil.rmtree(leftover, ignore_errors=True)


def _read_meta(
    entry: Path, key: Mapping[str, Any], sources: list[dict[str, Any]]
) -> dict[str, Any]:
    """The entry's metadata, checked against what it must have been built for.

    Raises:
        StoreEntryError: unreadable, another format, another key, changed sources.
    """
    try:
        meta = json.loads((entry / _META).read_text())
    except FileNotFoundError:
        raise StoreEntryError("meta.json missing") from None
    except (OSError, ValueError) as exc:
        raise StoreEntryError(f"meta.json unreadable ({exc})") from exc
    if not isinstance(meta, dict):
        raise StoreEntryError("meta.json is not an object")
    if meta.get("format") != FORMAT_VERSION:
        raise StoreEntryError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    if meta.get("key") != json.loads(json.dumps(key)):
        raise StoreEntryError("built for other sources, symbols or limits")
    if meta.get("sources") != sources:
        raise StoreEntryError("a source changed since it was imported")
    stats = meta.get("stats")
    try:
        lengths = {str(s): int(n) for s, n in meta["lengths"].items()}
        if not isinstance(stats, dict):
            raise TypeError
        for name in ("lines", "events", "clamped"):
            int(stats[name])
        Counter({str(r): int(n) for r, n in stats["skipped"]})
        n_paths = len(sources)
        if not all(0 <= int(i) < n_paths for i, _unit in stats["units"]):
            raise ValueError
        if not all(0 <= int(i) < n_paths for i in stats["truncated"]):
            raise ValueError
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreEntryError("meta.json has malformed counters") from None
    if sorted(lengths) != key["symbols"] or sum(lengths.values()) != int(stats["events"]):
        raise StoreEntryError("meta.json lengths do not match its symbols and events")
    meta["lengths"] = lengths
    try:
        meta["book_states"] = {str(s): int(n) for s, n in meta["book_states"].items()}
        meta["book_counts"] = {
            str(s): {str(k): int(v) for k, v in c.items()} for s, c in meta["book_counts"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreEntryError("meta.json has malformed book counts") from None
    if not set(meta["book_states"]) <= set(lengths):
        raise StoreEntryError("meta.json book states name a symbol it does not hold")
    return meta


def _map_entry(entry: Path, meta: Mapping[str, Any], order: tuple[str, ...]) -> Tape:
    """Map an entry's columns read-only.

    Raises:
        StoreEntryError: a column file is missing, unreadable, of the wrong dtype,
            shape or size.
    """
    lengths: dict[str, int] = meta["lengths"]
    columns: dict[str, dict[str, np.ndarray]] = {}
    for i, symbol in enumerate(sorted(lengths)):
        n = lengths[symbol]
        out: dict[str, np.ndarray] = {}
        for group, dtype, names in _GROUPS:
            if n == 0:
                rows = np.empty((len(names), 0), dtype=dtype)
            else:
                rows = _map_group(entry / _group_file(i, group), dtype, (len(names), n))
            for row, name in enumerate(names):
                array = rows[row]
                array.flags.writeable = False
                out[name] = array
        if symbol in meta["book_states"] and n:
            states = meta["book_states"][symbol]
            book_row = _map_array(entry / f"{i}.book_row.npy", np.dtype(np.int64), (n,))
            book_row.flags.writeable = False
            out["book_row"] = book_row
            book = _map_array(
                entry / f"{i}.book.npy", np.dtype(np.float64), (4, states, BOOK_LEVELS)
            )
            for row, name in enumerate(_BOOK_STATES):
                array = book[row]
                array.flags.writeable = False
                out[name] = array
        columns[symbol] = out
    tape = tape_from_columns(order, columns, meta["book_counts"])
    if (tape.first_ts, tape.last_ts) != (meta["first_ts"], meta["last_ts"]):
        raise StoreEntryError("first/last replay time do not match meta.json")
    return tape


def _write_book(tmp: Path, i: int, ticks: Ticks) -> int:
    """Write a symbol's book columns; returns its number of book states."""
    _save(tmp / f"{i}.book_row.npy", ticks.book_row)
    states = ticks.book_bid_px.shape[0]
    path = tmp / f"{i}.book.npy"
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float64, shape=(4, states, BOOK_LEVELS)
    )
    for row, name in enumerate(_BOOK_STATES):
        out[row] = getattr(ticks, name)
    out.flush()
    del out
    with path.open("rb+") as f:
        os.fsync(f.fileno())
    return int(states)


def _save(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _map_group(path: Path, dtype: np.dtype, shape: tuple[int, int]) -> np.ndarray:
    return _map_array(path, dtype, shape)


def _map_array(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise StoreEntryError(f"{path.name} missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise StoreEntryError(f"{path.name} unreadable ({exc})") from exc
    if mapped.dtype != dtype or mapped.shape != shape or not mapped.flags.c_contiguous:
        raise StoreEntryError(
            f"{path.name} holds {mapped.dtype}{list(mapped.shape)}, expected {dtype}{list(shape)}"
        )
    size = path.stat().st_size
    if size != mapped.offset + mapped.nbytes:
        raise StoreEntryError(
            f"{path.name} is {size} bytes, expected {mapped.offset + mapped.nbytes}"
        )
    # A plain ndarray view of the mapping (a memmap subclass costs at every slice).
    return np.asarray(mapped)
