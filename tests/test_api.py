"""The research API: ``engine.backtest`` from a plain call and inside running event loops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

import engine
from engine import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.toml"  # replays the bundled 180 s BTCUSDT sample


def settings(tmp_path: Path) -> dict[str, object]:
    return {
        "journal.dir": str(tmp_path / "runs"),
        "logging.path": str(tmp_path / "engine.jsonl"),
        "data.tick_store": "off",
    }


def check(result: engine.Result) -> None:
    report = result.report
    assert report.fills > 0
    assert len(result.fills) == report.fills
    assert len(result.orders) == report.orders
    assert set(result.orders.status) == {"OrderFilled"}
    closed = result.trades[result.trades.exit_ts.notna()]
    assert len(closed) == report.round_trips
    # The trades add up to the run's PnL (fees included).
    assert closed.net_pnl.sum() == pytest.approx(report.net_pnl, abs=1e-6)
    assert result.fills.ts.dt.tz is not None
    assert isinstance(result.equity, pd.DataFrame) and len(result.equity) > 0
    assert result.summary["journal_sha256"] == report.journal_sha256
    assert result.text.startswith("trireme replay: 1 file(s), symbols BTCUSDT")


def test_plain_call(tmp_path):
    result = engine.backtest(CONFIG, **settings(tmp_path))
    check(result)


async def test_inside_a_running_trio_loop(tmp_path):
    # The call is synchronous; trio.run refuses to nest, so it runs in a thread.
    inside = engine.backtest(CONFIG, **settings(tmp_path / "in"))
    check(inside)
    assert inside.report.journal_sha256 == (
        engine.backtest(CONFIG, **settings(tmp_path / "again")).report.journal_sha256
    )


def test_inside_a_running_asyncio_loop(tmp_path):
    # What a Jupyter cell sees: an asyncio loop running in this thread.
    async def cell() -> engine.Result:
        asyncio.get_running_loop()
        return engine.backtest(CONFIG, **settings(tmp_path / "cell"))

    inside = asyncio.run(cell())
    check(inside)
    plain = engine.backtest(CONFIG, **settings(tmp_path / "plain"))
    assert inside.report.journal_sha256 == plain.report.journal_sha256


def test_overrides_as_keywords_and_as_a_dict(tmp_path):
    base = settings(tmp_path)
    as_dict = engine.backtest(CONFIG, overrides={**base, "risk.capital": 5000})
    as_keywords = engine.backtest(CONFIG, **{**base, "risk.capital": 5000})
    assert as_dict.summary["trades"]["start_equity"] == 5000
    assert as_dict.report.journal_sha256 == as_keywords.report.journal_sha256


def test_bad_override_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"risk\.no_such_key"):
        engine.backtest(CONFIG, **{**settings(tmp_path), "risk.no_such_key": 1})
