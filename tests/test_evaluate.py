"""``python -m tools.train evaluate``: signal metrics and the engine's replays, on the sample.

The checks are about structure and consistency (counts that must add up, the same trades
seen by the report and the journal), not about how well the models do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from tools.train.__main__ import main
from tools.train._evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"
CONFIG = ROOT / "config.toml"
SCORERS = {"ensemble", "entry_filter_gbdt", "entry_filter_rf", "entry_filter_mlp"}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # One evaluation for every test: it replays the sample twice (about 2 s). Round-tripped
    # through JSON, as the command prints it.
    journals = tmp_path_factory.mktemp("eval")
    doc = json.loads(json.dumps(evaluate([SAMPLE], CONFIG, journal_dir=journals)))
    doc["_journals"] = str(journals)
    return doc


def test_the_sample_is_labelled_in_sample(result):
    # The sample is an excerpt of the training capture under another name: caught by time.
    assert result["out_of_sample"] is False
    assert result["overlap"]["time"] is True
    assert result["data"]["symbols"] == ["BTCUSDT"]
    assert result["strategy_matches_training"] is True
    assert any(c.startswith("in-sample") for c in result["caveats"])


def test_signal_counts_and_metrics_are_consistent(result):
    sig = result["signals"]
    assert sig["total"] == sig["labelled"] + sig["not_warm"] + sig["undecided_at_end"]
    assert sig["labelled"] > 0
    for view in ("all_signals", "all_signals_at_venue_fee", "models_test_window"):
        assert set(result["metrics"][view]) - {"from"} == SCORERS
    for view in ("all_signals", "all_signals_at_venue_fee"):
        for m in result["metrics"][view].values():
            assert m["n"] == sig["labelled"]
            assert m["threshold"] == result["threshold"] == 0.3
            assert 0 <= m["selected"] <= m["n"]
            assert m["auc"] is None or 0.0 <= m["auc"] <= 1.0
            assert 0.0 <= m["precision"] <= 1.0 and 0.0 <= m["recall"] <= 1.0
    # Paying at the taker fee is harder than at the label fee.
    fee = result["metrics"]["all_signals_at_venue_fee"]["ensemble"]["positives"]
    assert fee <= result["metrics"]["all_signals"]["ensemble"]["positives"]


def _check_run(run: dict) -> None:
    assert (
        run["trades"] == run["round_trips"] == sum(s["trades"] for s in run["per_symbol"].values())
    )
    assert 0 <= run["wins"] <= run["trades"]
    if run["trades"]:
        assert run["win_rate"] == pytest.approx(run["wins"] / run["trades"], abs=1e-4)
    assert run["fills"] >= 2 * run["trades"]
    if not run["open_at_end"]:
        # The journal's closed trades are the report's PnL after fees.
        assert run["closed_trades_pnl_after_fees"] == pytest.approx(run["pnl_after_fees"])
    assert run["max_drawdown"] >= 0.0


def test_replays_with_and_without_the_filter(result):
    u, f = result["replay"]["unfiltered"], result["replay"]["filtered"]
    _check_run(u)
    _check_run(f)
    assert u["events"] == f["events"] > 0
    assert "filter" not in u and "model" not in u
    flt = f["filter"]
    assert flt["taken"] + flt["filtered"] + flt["not_ready"] == flt["signals"]
    assert flt["signals"] == f["entry_signals"]
    assert flt["scored"] == f["model"]["requests"] == flt["taken"] + flt["filtered"]
    assert f["orders"] >= flt["taken"]
    # On this data the filter takes fewer entries than the strategy makes unfiltered.
    assert flt["taken"] <= u["entry_signals"]
    out = flt["outcomes"]
    assert out["taken"]["labelled"] <= flt["taken"]
    assert out["rejected"]["labelled"] <= flt["filtered"]
    assert "cache_hit_rate" not in f["model"]  # the score cache is gone (0 hits anywhere)
    assert f["model"]["inference_us_p50"] <= f["model"]["inference_us_p99"]
    diff = result["replay"]["filtered_minus_unfiltered"]
    assert diff["trades"] == f["trades"] - u["trades"]
    assert diff["pnl_after_fees"] == pytest.approx(f["pnl_after_fees"] - u["pnl_after_fees"])
    for run in (u, f):
        window = run["models_test_window"]
        assert 0 <= window["trades"] <= run["trades"]


def test_journals_are_kept_where_asked(result):
    journals = Path(result["_journals"])
    for name in ("unfiltered", "filtered"):
        assert list((journals / name).glob("*.sqlite"))


def test_no_replay_gives_the_metrics_only(capsys):
    assert main(["evaluate", "--data", str(SAMPLE), "--no-replay"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "replay" not in doc and set(doc["metrics"]["all_signals"]) == SCORERS


def test_bad_data_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "missing.gz"), "--no-replay"]) == 2
    assert "error:" in capsys.readouterr().err
