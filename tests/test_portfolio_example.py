"""examples/portfolio_klines.py: the optimiser's four objectives, walk-forward on real klines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "external" / "freqtrade_1m_usdm"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared klines")


def test_four_objectives_walk_forward_on_real_klines(tmp_path: Path) -> None:
    out = tmp_path / "portfolio.json"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "examples" / "portfolio_klines.py"), "--data", str(DATA),
            "--symbols", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT",
            "--lookback-hours", "72", "--rebalance-hours", "12", "--max-weight", "0.4",
            "--json", str(out),
        ],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["symbols"] == ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    assert report["out_of_sample_bars"] == report["bars"] - 72
    rules = report["results"]
    assert set(rules) == {
        "equal_weight",
        "min_variance",
        "mean_variance",
        "risk_parity",
        "min_cvar",
    }
    for name, r in rules.items():
        weights = list(r["last_weights"].values())
        assert sum(weights) == pytest.approx(1.0, abs=1e-3), name
        assert min(weights) >= 0.0, name
        if name not in ("equal_weight", "risk_parity"):  # risk parity has no weight cap
            assert max(weights) <= 0.4 + 1e-3, name
        assert r["vol_ann"] > 0 and 0 <= r["max_drawdown"] < 1
    assert "| min_cvar |" in proc.stdout


def test_a_directory_without_klines_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "portfolio_klines.py"), "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path}: no *_USDT_USDT-1m-futures.feather files"
    ]
