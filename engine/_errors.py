"""Errors raised by the engine.

Tree::

    EngineError
    ├── ConfigError          a config file, key or value is wrong (CLI exit code 2)
    ├── DataError            market data cannot be read (missing file, bad gzip)
    ├── JournalError         the journal cannot be opened or written
    └── ActorFailedError     an actor died; trading halted (fail closed)
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """A configuration problem, with the file and dotted key it concerns.

    Attributes:
        source: the config file (or ``"--flag"`` for a command-line value).
        key: the dotted key (``"risk.max_notional_total"``), or ``""``.
        problem: what was wrong and what was expected.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class DataError(EngineError):
    """Market data could not be read."""


class JournalError(EngineError):
    """The journal could not be opened, written or read back."""


class ActorFailedError(EngineError):
    """An actor failed; the engine halted trading and stopped."""


def single_cause(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups that hold just one, else ``exc``.

    Trio's nurseries wrap every error in an :class:`ExceptionGroup`; when a single task
    failed, that task's error is what a user should see.
    """
    leaves: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)
        else:
            leaves.append(item)
    return leaves[0] if len(leaves) == 1 else exc
