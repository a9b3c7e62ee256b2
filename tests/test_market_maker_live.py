"""The market maker live against the loopback exchange: post-only quotes rest at the
exchange, are amended in place (PUT /fapi/v1/order) and cancelled, fill as maker, and
at the end the engine's journal and the exchange's books agree (the checks of
``test_live_trading``: every order at most one exchange order, fills order by order,
the final position, nothing left unfinished)."""

from __future__ import annotations

import pytest
import trio
from test_live_trading import (  # the loopback exchange's live-run helpers
    GUARD_S,
    KEY,
    QUIET,
    SECRET,
    SPEED,
    FeedWatch,
    Journal,
    check_books,
    credentials,  # noqa: F401 (a fixture)
    live_doc,
    recording,  # noqa: F401 (a fixture)
)

from engine import _supervisor, config_from_dict
from engine._supervisor import new_journal_path, run_live
from engine.venues.sim._stream_server import ServerSettings, StreamServer, TradingSettings
from engine.venues.sim._trading import AccountSettings

CAP = 0.01


async def test_quotes_rest_amend_and_fill_at_the_exchange(tmp_path, recording, credentials):  # noqa: F811
    server = StreamServer(
        recording,
        ServerSettings(speed=SPEED),
        QUIET,
        trading=TradingSettings(account=AccountSettings()),
        api_keys={KEY: SECRET},
    )
    watch = FeedWatch(recording)
    with pytest.MonkeyPatch.context() as patch, trio.fail_after(GUARD_S):  # a hang guard
        patch.setattr(_supervisor, "LiveFeed", watch.make_feed)
        async with trio.open_nursery() as nursery:
            ws_port, rest_port = await nursery.start(server.serve, "127.0.0.1", 0, 0)
            doc = live_doc(tmp_path, ws_port, rest_port)
            doc["strategy"] = {
                "kind": "market_maker",
                # Times in wall-clock ms: the exchange plays 60x the recorded pace.
                "params": {
                    "quote_qty": 0.002,
                    "max_inventory": CAP,
                    "vol_sample_ms": 20,
                    "vol_period": 5,
                    "refresh_ms": 20,
                    "min_quote_life_ms": 10,
                },
            }
            doc["model"] = {"enabled": False}
            config = config_from_dict(doc, source="<test>", base_dir=str(tmp_path))
            journal_path = new_journal_path(config, "live")
            stop = trio.Event()

            async def stop_when_caught_up() -> None:
                await watch.caught_up.wait()  # the whole capture was passed on
                stop.set()

            nursery.start_soon(stop_when_caught_up)
            report = await run_live(config, log=QUIET, stop=stop, journal_path=journal_path)
            nursery.cancel_scope.cancel()
    journal = Journal.read(report.journal_path)
    (summary,) = report.per_symbol
    # The resting quotes were cancelled at the stop: both books agree, nothing open.
    check_books([journal], server, summary.position_qty, frozenset())
    submits = journal.of("SubmitOrder")
    assert submits and {s["time_in_force"] for s in submits if s["purpose"] == "ENTRY"} == {"GTX"}
    assert journal.of("OrderReplaced"), "no quote was amended at the exchange"
    fills = journal.of("OrderFilled")
    assert fills and any(f["liquidity"] == "MAKER" for f in fills)
    inventory = 0.0
    for f in fills:
        inventory += f["side"] * f["last_qty"]  # side: +1 buy, -1 sell
        assert abs(inventory) <= CAP + 1e-9
