"""A small, table-driven state machine.

The table is data: ``{(state, event_type): target}``, where ``target`` is either a
state or a sequence of ``(guard, state)`` pairs. Guards are named pure predicates
``guard(event) -> bool``; the first that holds wins, and when none holds the event
is invalid in that state. The machine does no I/O.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from ._errors import InvalidTransitionError, TableError

S = TypeVar("S", bound=enum.Enum)

Guard = Callable[[Any], bool]
Target = Any  # a state, or a sequence of (guard, state) pairs


@attrs.frozen(kw_only=True)
class Transition(Generic[S]):
    """One transition taken by a machine."""

    source: S
    target: S
    event: object


class Table(Generic[S]):
    """A validated transition table.

    Args:
        name: a label used in error messages and diagrams.
        states: the enum of states.
        initial: the state a new machine starts in.
        transitions: ``{(state, event_type): target}``.
        terminal: states that are allowed to have no outgoing edge.

    Raises:
        TableError: a key or target names a state outside ``states`` or a guard
            list is empty.
    """

    def __init__(
        self,
        *,
        name: str,
        states: type[S],
        initial: S,
        transitions: Mapping[tuple[S, type], Target],
        terminal: Iterable[S] = (),
    ) -> None:
        self.name = name
        self.states = states
        self.initial = initial
        self.terminal = frozenset(terminal)
        self.transitions: dict[tuple[S, type], Target] = dict(transitions)
        for (source, event_type), target in self.transitions.items():
            if not isinstance(source, states):
                raise TableError(f"{name}: source {source!r} is not a {states.__name__}")
            if not isinstance(event_type, type):
                raise TableError(f"{name}: event key {event_type!r} is not a type")
            for state in self._targets_of(target):
                if not isinstance(state, states):
                    raise TableError(f"{name}: target {state!r} is not a {states.__name__}")
        # Per state, its edges by event type, each with the target's own edges: a
        # running machine follows these without hashing a state (an Enum's hash is a
        # Python call) or building a key per event.
        out: dict[Any, dict[type, Any]] = {state: {} for state in states}
        for (source, event_type), target in self.transitions.items():
            if isinstance(target, enum.Enum):
                out[source][event_type] = (target, out[target])
            else:
                out[source][event_type] = [(guard, state, out[state]) for guard, state in target]
        self._out = out

    @staticmethod
    def _targets_of(target: Target) -> list[Any]:
        if isinstance(target, enum.Enum):
            return [target]
        options = list(target)
        if not options:
            raise TableError("empty guard list")
        return [state for _guard, state in options]

    def edges(self) -> list[tuple[S, type, S, str | None]]:
        """Every edge as ``(source, event_type, target, guard_name)``."""
        out: list[tuple[S, type, S, str | None]] = []
        for (source, event_type), target in self.transitions.items():
            if isinstance(target, enum.Enum):
                out.append((source, event_type, target, None))
            else:
                for guard, state in target:
                    out.append((source, event_type, state, guard.__name__))
        return out

    def events(self) -> frozenset[type]:
        """Every event type that appears in the table."""
        return frozenset(event_type for _source, event_type in self.transitions)

    def reachable(self) -> frozenset[S]:
        """States reachable from ``initial`` along any edge (guards ignored)."""
        seen = {self.initial}
        todo = deque([self.initial])
        while todo:
            state = todo.popleft()
            for source, _event, target, _guard in self.edges():
                if source is state and target not in seen:
                    seen.add(target)
                    todo.append(target)
        return frozenset(seen)

    def dead_ends(self) -> frozenset[S]:
        """Non-terminal states with no outgoing edge to another state."""
        leaving = {source for source, _e, target, _g in self.edges() if target is not source}
        return frozenset(s for s in self.states if s not in leaving and s not in self.terminal)

    def resolve(self, state: S, event: object) -> S | None:
        """The target for ``event`` in ``state``, or None when there is no edge."""
        target = self.transitions.get((state, type(event)))
        if target is None or isinstance(target, enum.Enum):
            return target
        for guard, candidate in target:
            if guard(event):
                return candidate
        return None

    def mermaid(self) -> str:
        """The table as a Mermaid ``stateDiagram-v2`` (used for the README)."""
        lines = ["stateDiagram-v2", f"    [*] --> {self.initial.name}"]
        for source, event_type, target, guard in self.edges():
            label = event_type.__name__ + (f" [{guard}]" if guard else "")
            lines.append(f"    {source.name} --> {target.name}: {label}")
        lines.extend(f"    {state.name} --> [*]" for state in sorted(self.terminal, key=str))
        return "\n".join(lines)


class Machine(Generic[S]):
    """A running instance of a :class:`Table`.

    Args:
        table: the transition table.
        state: the starting state (defaults to the table's initial state), used to
            rebuild a machine from a journal.
    """

    __slots__ = ("_out", "_state", "table")

    def __init__(self, table: Table[S], state: S | None = None) -> None:
        self.table = table
        self._state = table.initial if state is None else state
        self._out = table._out[self._state]  # the current state's edges

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    def can_handle(self, event: object) -> bool:
        """Whether ``event`` has an edge from the current state."""
        return self.table.resolve(self._state, event) is not None

    def handle(self, event: object) -> Transition[S]:
        """Apply ``event`` and return the transition taken.

        Raises:
            InvalidTransitionError: no edge (or no guard holds); the state is unchanged.
        """
        edge = self._out.get(type(event))
        if edge is None:
            raise InvalidTransitionError(self.table.name, self._state, event)
        if type(edge) is tuple:
            target, out = edge
        else:  # guarded: the first guard that holds
            held = next((option for option in edge if option[0](event)), None)
            if held is None:
                raise InvalidTransitionError(self.table.name, self._state, event)
            _guard, target, out = held
        transition = Transition(source=self._state, target=target, event=event)
        self._state = target
        self._out = out
        return transition
