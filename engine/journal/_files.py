"""Journal file names: one new file per start, numbered so that start order is unambiguous.

A run writes ``<mode>-<start>-<UTC stamp>.sqlite`` under ``journal.dir``, where
``<start>`` (six digits or more) is one more than the highest start number of that
mode already there; the file is created exclusively, so two starts never share
one. :func:`journal_files` lists a mode's journals in start order, which the live
start reconciles against as one history. Names from before the numbering
(``<mode>-<stamp>.sqlite``, ``<mode>-<stamp>-<n>.sqlite`` for starts within one
second) come first, in stamp order and then ``n``: string order put ``-2`` before
the first one of its second.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from .._errors import JournalError

_STAMP = r"\d{8}T\d{6}Z"


def _patterns(mode: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    m = re.escape(mode)
    numbered = re.compile(rf"{m}-(\d{{6,}})-{_STAMP}\.sqlite")
    legacy = re.compile(rf"{m}-({_STAMP})(?:-(\d+))?\.sqlite")
    return numbered, legacy


def _order_key(path: Path, mode: str) -> tuple[int, int, str, int] | None:
    """Where ``path`` stands among ``mode``'s journals (None: not one of them)."""
    numbered, legacy = _patterns(mode)
    if match := numbered.fullmatch(path.name):
        return (1, int(match.group(1)), "", 0)
    if match := legacy.fullmatch(path.name):
        return (0, 0, match.group(1), int(match.group(2) or 1))
    return None


def journal_files(directory: Path, mode: str) -> list[Path]:
    """The journals of ``mode`` in ``directory``, oldest start first (none: ``[]``).

    Raises:
        JournalError: ``directory`` exists but cannot be listed.
    """
    if not directory.exists():
        return []
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        raise JournalError(f"{directory}: cannot list journals ({exc.strerror})") from exc
    keyed = [(key, p) for p in entries if (key := _order_key(p, mode)) is not None]
    return [p for _key, p in sorted(keyed)]


def new_journal_file(directory: Path, mode: str) -> Path:
    """Create the empty journal file of a new start of ``mode`` and return its path.

    Raises:
        JournalError: the directory or the file cannot be created.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"{directory}: cannot create the journal directory ({exc})") from exc
    highest = max(
        (key[1] for p in journal_files(directory, mode) if (key := _order_key(p, mode))),
        default=0,
    )
    start = highest + 1
    while True:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = directory / f"{mode}-{start:06d}-{stamp}.sqlite"
        try:
            with path.open("x"):
                pass  # created: this start owns it
        except FileExistsError:
            start += 1  # another start took the number first
            continue
        except OSError as exc:
            raise JournalError(f"{path}: cannot create the journal ({exc.strerror})") from exc
        return path
