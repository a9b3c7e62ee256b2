"""NautilusTrader's side of ``tools.bench nautilus``; runs in NautilusTrader's own venv.

``<venv>/bin/python _nautilus_run.py QUOTES.npz`` loads the same synthetic quotes
Trireme replays, builds NautilusTrader's ``BacktestEngine`` (risk engine on, logging
bypassed) with its ``EMACross`` example strategy (10/20 EMA on 100-tick mid bars) on
an ETHUSDT perpetual, times ``engine.run()`` alone and prints one JSON line.

NautilusTrader is not a dependency of Trireme: this file imports it only when run
by the interpreter of the venv that ``tools.bench nautilus --install`` creates.
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal

import numpy as np
import pandas as pd
from nautilus_trader.adapters.binance import BINANCE_VENUE
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, RiskEngineConfig
from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import BarType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.wranglers import QuoteTickDataWrangler
from nautilus_trader.test_kit.providers import TestInstrumentProvider


def main(path: str) -> None:
    cols = np.load(path)
    index = pd.to_datetime(cols["ts_ms"], unit="ms", utc=True)
    frame = pd.DataFrame(
        {
            "bid_price": cols["bid"],
            "ask_price": cols["ask"],
            "bid_size": cols["bid_qty"],
            "ask_size": cols["ask_qty"],
        },
        index=index,
    )
    instrument = TestInstrumentProvider.ethusdt_perp_binance()
    ticks = QuoteTickDataWrangler(instrument).process(frame)

    engine = BacktestEngine(
        config=BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            risk_engine=RiskEngineConfig(bypass=False),
        )
    )
    engine.add_venue(
        venue=BINANCE_VENUE,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=None,
        starting_balances=[Money(1_000_000.0, USDT)],
    )
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    strategy = EMACross(
        config=EMACrossConfig(
            instrument_id=instrument.id,
            bar_type=BarType.from_str(f"{instrument.id}-100-TICK-MID-INTERNAL"),
            trade_size=Decimal("0.100"),
            fast_ema_period=10,
            slow_ema_period=20,
            subscribe_quote_ticks=True,
            subscribe_trade_ticks=False,
            request_bars=False,
        )
    )
    engine.add_strategy(strategy)
    t0 = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - t0
    fills = engine.trader.generate_order_fills_report()
    result = {
        "events": len(ticks),
        "seconds": seconds,
        "events_per_s": len(ticks) / seconds,
        "orders_filled": len(fills),
    }
    engine.dispose()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
