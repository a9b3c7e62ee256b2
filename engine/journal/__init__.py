"""The append-only SQLite journal, its actor, and the journal files of each start."""

from ._files import journal_files as journal_files
from ._files import new_journal_file as new_journal_file
from ._journal import Journal as Journal
from ._journal import JournalActor as JournalActor
from ._journal import canonical as canonical
from ._journal import journal_digest as journal_digest

__all__ = [
    "Journal",
    "JournalActor",
    "canonical",
    "journal_digest",
    "journal_files",
    "new_journal_file",
]
