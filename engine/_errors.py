"""Errors raised by the engine.

Tree::

    EngineError
    ├── ConfigError          a config file, key or value is wrong (CLI exit code 2)
    ├── DataError            market data cannot be read (missing file, bad gzip)
    ├── JournalError         the journal cannot be opened or written
    └── ActorFailedError     an actor died; trading halted (fail closed)
"""

from __future__ import annotations

import trio


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


# What a task sees when a peer closed a channel it was using: when a peer fails, its
# channels close as it unwinds, and the tasks on the other end fail with one of these.
# They are consequences of the failure, never its cause.
_PEER_CLOSED = (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError)


def single_cause(exc: BaseException) -> BaseException:
    """The one error that caused (nested) exception groups, else ``exc`` itself.

    Trio's nurseries wrap every error in an :class:`ExceptionGroup`. When one task
    failed, that task's error is what a user should see. When an actor fails, its
    output channels close as it unwinds and the actors reading them fail too, with
    :class:`trio.EndOfChannel` (or a broken or closed resource): those errors are
    consequences, so they are set aside when exactly one other error is left.

    Returns:
        The lone cause, or ``exc`` when there are several independent errors.
    """
    leaves: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)
        else:
            leaves.append(item)
    if len(leaves) == 1:
        return leaves[0]
    causes = [e for e in leaves if not isinstance(e, _PEER_CLOSED)]
    return causes[0] if len(causes) == 1 else exc
