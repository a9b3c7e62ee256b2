"""The append-only SQLite journal and its actor."""

from ._journal import Journal as Journal
from ._journal import JournalActor as JournalActor
from ._journal import canonical as canonical
from ._journal import journal_digest as journal_digest

__all__ = ["Journal", "JournalActor", "canonical", "journal_digest"]
