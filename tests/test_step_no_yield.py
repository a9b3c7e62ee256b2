"""No other Trio task runs inside a live step, but at the waits the inline path documents.

A live run against the loopback exchange (``test_live_trading``'s slow-answer run: the
first order answered after 1.5 s, the venue giving up after 0.5 s), with a
:class:`trio.abc.Instrument` watching every round of :class:`~engine.actors.InlineStep`
(the read loop's step through the symbol, risk and execution actors). Whenever the
round's own task is suspended inside a round, the instrument takes where (the engine
function it waits in, from its await frames) and whether it had anything to wait for
(a task Trio reschedules at once, before its step ends, only yielded), and it names
every other task stepped before the round ends. Other tasks may run only while a round
waits at one of the waits ``engine/actors/_inline.py`` documents: a model's scores, a
portfolio answer due at the step, room in the journal's channel, the venue's last
answers at the market's final step. A task switch anywhere else between a tick and its
order's write would let the venue's reader tasks (which put answers on its queue) and
everything else in; and a round never yields where it need not wait (the risk actor's
``receive`` of a portfolio answer already in did, until it took it without a wait).

The journal shows what such a wait lets in: an order whose answers (acceptance, fills)
are journaled at its own submission's step was submitted in the market's final step,
whose drain waits for the venue's answers. That is how CI's
``test_slow_answer_past_the_timeout_is_resolved`` once journaled a retried exit's
``SubmitOrder``, ``OrderSubmitted``, ``OrderAccepted`` and ``OrderFilled`` together:
execution's step submits and drains the venue's queue with no checkpoint in between,
in either mode (``feeds.inline`` or the actor tasks), but at the final step.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from test_live_trading import ORDER, credentials, live_run, recording

from engine.actors import InlineStep
from engine.venues.sim._exchange_faults import RequestFault

__all__ = ["credentials", "recording"]  # fixtures, used by name

ANSWERS = ("OrderAccepted", "OrderFilled", "OrderRejected", "OrderCanceled", "OrderExpired")
# Where a round may wait: the innermost engine function under ``_round`` (its own line
# ``await self._journal.send``: room in the journal's channel).
DOCUMENTED = {
    "_ask_model": "a model's scores",
    "_exchange_with_portfolio": "a portfolio answer due at the step",
    "_round": "room in the journal's channel",
    "_drain_venue": "the venue's last answers (the market's final step)",
}


@attrs.frozen
class Wait:
    """One suspension of a round's task: where, and whether it only yielded (Trio had
    it runnable again before its step ended: there was nothing to wait for)."""

    site: str
    yielded: bool


@attrs.define
class Round:
    """One :meth:`InlineStep._round`: its step, whether it is the market's final step
    (or a closing round after it), its task's suspensions, the other tasks it let run."""

    task: trio.lowlevel.Task
    step: int
    final: bool
    waits: list[Wait] = attrs.field(factory=list)
    others: list[tuple[str, str]] = attrs.field(factory=list)  # (task, the round's wait)


class StepWatch(trio.abc.Instrument):
    """For each inline round (see :func:`watch`): its task's suspensions, and the other
    tasks stepped while it was under way."""

    def __init__(self) -> None:
        self.current: Round | None = None
        self.rounds: list[Round] = []
        self._rescheduled = False

    def start(self, r: Round) -> None:
        assert self.current is None, "rounds overlap"
        self.current = r
        self._rescheduled = False

    def end(self) -> None:
        assert self.current is not None
        self.rounds.append(self.current)
        self.current = None

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        r = self.current
        if r is None:
            return
        if task is r.task:
            self._rescheduled = False
        else:
            r.others.append((task.name, r.waits[-1].site if r.waits else "(not waiting)"))

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        # The round's task made runnable during its own step: by its own checkpoint.
        r = self.current
        if r is not None and task is r.task:
            self._rescheduled = True

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        r = self.current
        if r is not None and task is r.task:
            r.waits.append(Wait(wait_site(task), self._rescheduled))


def wait_site(task: trio.lowlevel.Task) -> str:
    """The innermost engine function under ``_round`` where ``task`` is suspended."""
    frames = [frame.f_code for frame, _line in task.iter_await_frames()]
    names = [code.co_name for code in frames]
    if "_round" not in names:
        return "outside _round: " + " > ".join(names)
    under = frames[names.index("_round") :]
    return [code.co_name for code in under if "/engine/" in code.co_filename][-1]


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> StepWatch:
    """A :class:`StepWatch` of every :meth:`InlineStep._round` (wrapped here, for the
    test); added to the run by the test."""
    watch = StepWatch()
    original = InlineStep._round

    async def _round(self: InlineStep, batches: Any, market: Any) -> Any:
        watch.start(Round(trio.lowlevel.current_task(), self._step, market is None or market.final))
        try:
            return await original(self, batches, market)
        finally:
            watch.end()

    monkeypatch.setattr(InlineStep, "_round", _round)
    return watch


def journal_rows(path: Path) -> list[tuple[int, str, dict[str, Any]]]:
    """(step, kind, payload) of every journal record, in order."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT step, kind, payload FROM journal ORDER BY id").fetchall()
    return [(step, kind, json.loads(payload)) for step, kind, payload in rows]


def answered_in_their_step(rows: list[tuple[int, str, dict[str, Any]]]) -> dict[str, int]:
    """Engine order id -> step, for the orders with an answer journaled at the step
    that journaled their submission."""
    submitted = {p["client_order_id"]: s for s, kind, p in rows if kind == "OrderSubmitted"}
    return {
        p["client_order_id"]: s
        for s, kind, p in rows
        if kind in ANSWERS and submitted.get(p["client_order_id"]) == s
    }


async def test_no_task_runs_inside_a_live_step_but_at_a_documented_wait(
    tmp_path: Path, recording: Any, credentials: None, watch: StepWatch
) -> None:
    faults = (RequestFault.parse("slow:1500" + ORDER),)
    trio.lowlevel.add_instrument(watch)
    try:
        report, _server, journal = await live_run(
            tmp_path, recording, faults=faults, request_timeout_ms=500
        )
    finally:
        trio.lowlevel.remove_instrument(watch)
    rounds = watch.rounds
    assert len(rounds) > 100
    assert [r.step for r in rounds] == list(range(len(rounds)))
    assert journal.of("OrderFilled"), "nothing traded: nothing to check"
    waits = [(r.step, w) for r in rounds for w in r.waits]
    assert {w.site for _step, w in waits} <= set(DOCUMENTED), waits
    # A round yields only where it must wait (the model's request is sent with a
    # yield, its scores waited for anyway).
    assert [(s, w) for s, w in waits if w.yielded and w.site != "_ask_model"] == []
    for r in rounds:
        assert r.final or "_drain_venue" not in {w.site for w in r.waits}, r.step
        for task, site in r.others:
            assert site in DOCUMENTED, (r.step, task, site)
    # An order answered at its own submission's step: its round waited for the venue.
    by_step = {r.step: r for r in rounds}
    for cid, step in answered_in_their_step(journal_rows(report.journal_path)).items():
        r = by_step[step]
        assert r.final and "_drain_venue" in {w.site for w in r.waits}, (cid, step, r)
