"""Journal file names: one per start, in an order that cannot be mistaken."""

from __future__ import annotations

import re
import time

import pytest

from engine import JournalError, config_from_dict
from engine._supervisor import last_journal, new_journal_path
from engine.journal import Journal, journal_files, new_journal_file


def test_starts_within_one_second_keep_their_order(tmp_path, monkeypatch):
    # Every start in the same second: the old names (``-2``, ``-3``) sorted before the
    # first, so the "latest" journal was the oldest.
    second = time.gmtime(1_767_225_600)
    monkeypatch.setattr(time, "gmtime", lambda *_args: second)
    config = config_from_dict({"journal": {"dir": "runs"}}, source="<t>", base_dir=str(tmp_path))
    made = []
    for _start in range(3):
        path = new_journal_path(config, "live")
        Journal(path).close()
        made.append(path)
    assert len(set(made)) == 3
    assert journal_files(tmp_path / "runs", "live") == made
    assert last_journal(config, "live") == made[-1]
    assert sorted(made) == made  # plain name order agrees (ls, glob)


def test_older_names_come_first_and_other_files_are_ignored(tmp_path):
    names = [
        "live-20240101T000000Z.sqlite",
        "live-20240101T000000Z-2.sqlite",
        "live-20240101T000000Z-10.sqlite",
        "live-20240102T000000Z.sqlite",
    ]
    for name in names:
        (tmp_path / name).touch()
    for other in ("paper-000001-20240101T000000Z.sqlite", "live-notes.sqlite", "x.txt"):
        (tmp_path / other).touch()
    (tmp_path / "live-000001-20240101T000000Z.sqlite-wal").touch()
    fresh = new_journal_file(tmp_path, "live")
    assert fresh.name.startswith("live-000001-")
    assert journal_files(tmp_path, "live") == [tmp_path / n for n in names] + [fresh]
    assert new_journal_file(tmp_path, "live").name.startswith("live-000002-")


def test_a_new_journal_is_never_an_existing_one(tmp_path):
    first = new_journal_file(tmp_path, "live")
    first.write_bytes(b"taken")
    second = new_journal_file(tmp_path, "live")
    assert second != first and first.read_bytes() == b"taken"
    assert second.stat().st_size == 0


def test_a_directory_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match=re.escape(str(blocker / "runs"))):
        new_journal_file(blocker / "runs", "live")
    assert journal_files(tmp_path / "missing", "live") == []
