"""The append-only SQLite journal (WAL) of orders, fills and transitions.

Each record is stored with its kind and a canonical JSON payload (sorted keys,
enums as their values, floats in shortest round-trip form). The journal digest is
the sha256 of ``kind + "\\t" + payload + "\\n"`` over the records in id order, so
the same run gives the same digest however it is stored, and anyone can recompute
it from the file with :func:`journal_digest`. Updates and deletes are refused by
triggers: the journal is append-only.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import attrs
import orjson
import trio

from .._errors import JournalError
from ..messages import JournalBatch, JournalRecord

# The connection's page cache in KiB (``PRAGMA cache_size`` negative = KiB).
CACHE_KIB = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    ts_event INTEGER NOT NULL,
    ts_init INTEGER NOT NULL,
    kind TEXT NOT NULL,
    symbol TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS journal_no_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_no_delete BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'journal is append-only'); END;
"""


def canonical(record: JournalRecord) -> tuple[str, bytes]:
    """A record's kind and canonical JSON payload.

    A field marked ``metadata={"journal": "omit_default"}`` is left out while it
    holds its default, so a field added to a message later (a market order's NaN
    limit price) does not change the payload, nor the digest, of a run that does
    not use it; a reader takes the default when the key is missing.
    """
    data = attrs.asdict(record, recurse=False)
    for field in _omittable(type(record)):
        value, default = data[field.name], field.default
        if value == default or (value != value and default != default):  # NaN == NaN
            del data[field.name]
    payload = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return type(record).__name__, payload


@functools.cache
def _omittable(cls: type) -> tuple[attrs.Attribute, ...]:
    return tuple(f for f in attrs.fields(cls) if f.metadata.get("journal") == "omit_default")


def _digest_line(kind: str, payload: bytes) -> bytes:
    return kind.encode() + b"\t" + payload + b"\n"


class Journal:
    """A journal file open for appending; a context manager that closes it on exit.

    Use it in a ``with`` block (or call :meth:`close`) so that the connection is
    closed on every exit path, a start that fails before its journal actor runs
    included: an open connection keeps the WAL file beside the journal.

    Args:
        path: the SQLite file; created with its directory if missing. An
            existing journal is appended to, never truncated.

    Raises:
        JournalError: the file cannot be created or is not a journal (nothing is
            left open).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sha = hashlib.sha256()
        self.records = 0
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None)
            # NORMAL in WAL mode survives a process crash; FULL would also survive
            # power loss at the cost of an fsync per step. Set before the switch to
            # WAL, whose header write (a rollback-journal transaction) then syncs
            # once less.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_mode=WAL")
            # Appends touch the last pages only: a small page cache (256 KiB, not
            # SQLite's 2 MiB) keeps a live run's memory from growing with the file.
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.executescript(f"BEGIN;{SCHEMA}COMMIT;")  # one transaction, not four
            for kind, payload in db.execute("SELECT kind, payload FROM journal ORDER BY id"):
                self._sha.update(_digest_line(kind, payload.encode()))
                self.records += 1
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()  # not a journal: nothing stays open
            raise JournalError(f"{path}: cannot open journal ({exc})") from exc
        self._db: sqlite3.Connection | None = db

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (records and digest stay readable)."""
        return self._db is None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"{self.path}: journal is closed")
        return self._db

    def set_meta(self, items: dict[str, str]) -> None:
        """Record run metadata (config digest, data files); not part of the digest."""
        db = self._open()
        try:
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(items.items())
            )
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot write metadata ({exc})") from exc

    def append(self, step: int, records: Iterable[JournalRecord]) -> None:
        """Append a step's records in one transaction.

        Raises:
            JournalError: the write failed; nothing of this step was stored.
        """
        rows = []
        for record in records:
            kind, payload = canonical(record)
            rows.append((step, record.ts_event, record.ts_init, kind, record.symbol, payload))
        if not rows:
            return
        db = self._open()
        try:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO journal (step, ts_event, ts_init, kind, symbol, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(s, te, ti, k, sym, p.decode()) for s, te, ti, k, sym, p in rows],
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise JournalError(f"{self.path}: cannot append to journal ({exc})") from exc
        for _s, _te, _ti, kind, _sym, payload in rows:
            self._sha.update(_digest_line(kind, payload))
        self.records += len(rows)

    def digest(self) -> str:
        """sha256 (hex) of every record so far, in order."""
        return self._sha.hexdigest()

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close; again: nothing happens.

        Raises:
            JournalError: the checkpoint failed (the connection is closed all the same).
        """
        db, self._db = self._db, None
        if db is None:
            return
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot checkpoint journal ({exc})") from exc
        finally:
            db.close()


def journal_digest(path: Path) -> str:
    """Recompute the digest of a journal file from its rows.

    Raises:
        JournalError: the file is not a readable journal.
    """
    sha = hashlib.sha256()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for kind, payload in db.execute("SELECT kind, payload FROM journal ORDER BY id"):
                sha.update(_digest_line(kind, payload.encode()))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot read journal ({exc})") from exc
    return sha.hexdigest()


class JournalActor:
    """Writes each step's records (already in canonical order) to the journal.

    Args:
        journal: the open journal (the actor closes it when its inbox closes).
        inbox: journal batches from the execution actor.
    """

    def __init__(self, *, journal: Journal, inbox: trio.MemoryReceiveChannel[JournalBatch]) -> None:
        self.journal = journal
        self._inbox = inbox

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Append batches until the inbox closes, then close the journal.

        A step is one SQLite transaction: on cancellation the last complete step is
        on disk and nothing partial is.
        """
        with self._inbox:
            task_status.started()
            try:
                async for batch in self._inbox:
                    self.journal.append(batch.step, batch.records)
            finally:
                self.journal.close()
