"""The journal file closes on every exit path and refuses to be used once closed."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from engine import JournalError
from engine.journal import Journal, journal_digest
from engine.messages import Purpose, Side, SubmitOrder


def open_files_under(directory: Path) -> list[str]:
    """The files under ``directory`` that this process holds open (Linux /proc)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd to list open files")
    root = str(directory.resolve())
    out = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # the fd listing itself, closed by now
            target = os.readlink(fd)
            if target == root or target.startswith(root + os.sep):
                out.append(target)
    return sorted(out)


def record(seq: int) -> SubmitOrder:
    return SubmitOrder(
        client_order_id=f"tr-BTCUSDT-{seq}", symbol="BTCUSDT", side=Side.BUY, qty=0.01,
        ref_price=60_000.0, purpose=Purpose.ENTRY, reduce_only=False, ts_event=seq,
        ts_init=seq, seq=seq, correlation_id=f"BTCUSDT-{seq}",
    )  # fmt: skip


def test_a_with_block_closes_the_journal_when_its_body_fails(tmp_path):
    path = tmp_path / "j.sqlite"
    with pytest.raises(RuntimeError, match="start refused"), Journal(path) as journal:
        journal.append(1, [record(1)])
        assert open_files_under(tmp_path), "the journal is not open: the test proves nothing"
        raise RuntimeError("start refused")
    assert journal.closed
    assert open_files_under(tmp_path) == []
    assert not Path(f"{path}-wal").exists()  # checkpointed and closed by its last holder
    # What was appended before the failure is kept, and readable by anyone.
    assert journal_digest(path) == journal.digest()
    assert journal.records == 1


def test_close_twice_is_one_close_and_a_closed_journal_refuses_writes(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.close()
    journal.close()  # the journal actor closes it, then the supervisor's with block
    with pytest.raises(JournalError, match=r"j\.sqlite: journal is closed"):
        journal.append(1, [record(1)])
    with pytest.raises(JournalError, match="journal is closed"):
        journal.set_meta({"mode": "live"})


def test_a_file_that_is_not_a_journal_is_refused_and_left_closed(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(JournalError, match=r"notes\.sqlite: cannot open journal"):
        Journal(path)
    assert open_files_under(tmp_path) == []


def test_a_journal_appended_to_after_a_reopen_keeps_one_digest(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal(path) as first:
        first.append(1, [record(1)])
    with Journal(path) as again:
        assert again.records == 1 and again.digest() == first.digest()
        again.append(2, [record(2)])
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM journal").fetchone() == (2,)
    assert journal_digest(path) == again.digest()
