"""The market maker live against the loopback exchange: post-only quotes rest at the
exchange, are amended in place (PUT /fapi/v1/order) and cancelled, fill as maker, and
at the end the engine's journal and the exchange's books agree (the checks of
``test_live_trading``: every order at most one exchange order, fills order by order,
the final position, nothing left unfinished)."""

from __future__ import annotations

from typing import Any

from _loopback import KEY, QUIET, SECRET, FeedWatch, run_on_loopback
from test_live_trading import (  # the loopback exchange's live-run helpers
    GUARD_S,
    SPEED,
    Journal,
    check_books,
    credentials,  # noqa: F401 (a fixture)
    live_doc,
    recording,  # noqa: F401 (a fixture)
)

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

    def doc(ws_port: int, rest_port: int) -> dict[str, Any]:
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
        return doc

    report = await run_on_loopback(
        server,
        tmp_path,
        doc,
        make_feed=watch.make_feed,
        until=watch.caught_up,  # the whole capture was passed on
        guard_s=GUARD_S,
    )
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
