"""Log lines of an inline step wait until its orders are written (``engine.actors._inline``).

A :func:`deferring` logger passes its calls straight through, except while its
:class:`LogDeferral` holds (an inline step runs): then they wait, in the order made,
and are written, in that order, when the step releases them. Every logger bound from
it shares the deferral, so the venue's lines keep their place among the cores'.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from engine.actors._inline import deferral_of, deferring


class _Lines:
    """A structlog processor keeping each event's name and fields; drops the event."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def __call__(self, _logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        self.lines.append({"method": method, **event_dict})
        raise structlog.DropEvent

    def logger(self, level: int = logging.INFO) -> Any:
        return structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[self],
            wrapper_class=structlog.make_filtering_bound_logger(level),
        )


def test_lines_pass_straight_through_when_not_held() -> None:
    out = _Lines()
    log = deferring(out.logger())
    log.info("one", x=1)
    assert [line["event"] for line in out.lines] == ["one"]


def test_held_lines_wait_and_keep_their_order_across_bound_loggers() -> None:
    out = _Lines()
    root = deferring(out.logger())
    symbol = root.bind(actor="symbol", symbol="BTCUSDT")
    venue = root.bind(actor="venue")
    deferral = deferral_of(symbol)
    assert deferral is not None and deferral is deferral_of(venue) is deferral_of(root)
    deferral.holding = True
    symbol.info("order intent", qty=0.1)
    venue.info("order written", latency_ms=0.2)
    symbol.debug("below the level")  # filtered as before
    root.warning("something else")
    assert out.lines == []
    deferral.release()
    assert [(line["event"], line.get("actor")) for line in out.lines] == [
        ("order intent", "symbol"),
        ("order written", "venue"),
        ("something else", None),
    ]
    assert out.lines[0]["symbol"] == "BTCUSDT" and out.lines[0]["qty"] == 0.1
    assert out.lines[1]["method"] == "info" and out.lines[2]["method"] == "warning"
    out.lines.clear()
    symbol.info("after")  # released: straight through again
    assert [line["event"] for line in out.lines] == ["after"]


def test_a_held_exception_line_keeps_the_exception_it_was_logged_in() -> None:
    out = _Lines()
    log = deferring(out.logger())
    deferral = deferral_of(log)
    assert deferral is not None
    deferral.holding = True
    try:
        raise ValueError("boom")
    except ValueError:
        log.error("failed", exc_info=True)
    deferral.release()  # no exception being handled any more
    (line,) = out.lines
    exc_type, exc, _tb = line["exc_info"]
    assert exc_type is ValueError and str(exc) == "boom"


def test_deferring_twice_shares_one_deferral() -> None:
    out = _Lines()
    log = deferring(out.logger())
    assert deferring(log) is log
    assert deferral_of(out.logger()) is None


async def test_an_inline_step_writes_its_lines_after_its_orders(tmp_path, monkeypatch) -> None:
    # The paper pipeline with the inline path, as tests/test_inline_step.py runs it.
    from test_inline_step import SAMPLE, STRATEGY, SYMBOL, _FixedFeed, _steps

    from engine import config_from_dict
    from engine._supervisor import _run_pipeline
    from engine.venues.sim import SimVenue

    out = _Lines()
    # For each order the venue receives: the lines about it written by then.
    at_submit: list[list[str]] = []
    submit = SimVenue.submit

    def submit_(venue: SimVenue, order: Any) -> Any:
        cid = order.client_order_id
        at_submit.append([x["event"] for x in out.lines if x.get("client_order_id") == cid])
        return submit(venue, order)

    monkeypatch.setattr(SimVenue, "submit", submit_)
    steps = _steps()[:1500]
    doc = {
        "engine": {"mode": "paper"},
        "data": {"symbols": [SYMBOL]},
        "journal": {"dir": str(tmp_path / "runs")},
        "feeds": {"inline": True},
        "strategy": STRATEGY,
        "hardware": {"enabled": False},
        "portfolio": {"enabled": False},
    }
    config = config_from_dict(doc, source="<test>", base_dir=tmp_path)
    await _run_pipeline(
        config,
        mode="paper",
        journal_path=tmp_path / "inline.sqlite",
        symbols=[SYMBOL],
        data=[str(SAMPLE)],
        make_feed=lambda market_tx, step_tx, inline: _FixedFeed(steps, market_tx, step_tx, inline),
        log=out.logger(),
        setup_started=0.0,
        control=None,
        control_state=None,
    )
    assert len(at_submit) >= 2  # entries and exits
    assert at_submit == [[]] * len(at_submit)  # nothing about an order before its write
    events = [x["event"] for x in out.lines]
    # ...and every line after it, in the order made.
    assert events.count("order intent") == events.count("order submitted") == len(at_submit)
    intents = [i for i, e in enumerate(events) if e == "order intent"]
    submitted = [i for i, e in enumerate(events) if e == "order submitted"]
    assert all(a < b for a, b in zip(intents, submitted, strict=True))
