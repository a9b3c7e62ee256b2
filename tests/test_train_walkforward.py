"""Walk-forward evaluation of the filter (tools.train walkforward) on real captures."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import engine
from tools.train.__main__ import main
from tools.train._walkforward import captures_of, markdown, walk_forward

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "btcusdt_20240808_180s.gz"
HISTORY = ROOT.parent / "shared" / "data" / "external" / "hftbacktest_history"
CONFIG = ROOT / "config.toml"

needs_history = pytest.mark.skipif(not HISTORY.is_dir(), reason="../shared captures absent")


@needs_history
def test_files_that_continue_each_other_are_one_capture():
    files = sorted(HISTORY.glob("usdm_*_2024071*.gz"))
    assert len(files) == 4
    caps = captures_of(engine.load_config(CONFIG), files)
    # BTCUSDT and ETHUSDT, each a 07-18 file continued by its 07-19 file.
    assert [(c.symbols, [p.name for p in c.files]) for c in caps] == [
        (("BTCUSDT",), ["usdm_btcusdt_20240718.gz", "usdm_btcusdt_20240719.gz"]),
        (("ETHUSDT",), ["usdm_ethusdt_20240718.gz", "usdm_ethusdt_20240719.gz"]),
    ]
    assert all(0 < c.last_ts - c.first_ts < 600 * 10**9 for c in caps)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    # Three minutes: too few signals for a model, enough for the windows and their replays.
    return walk_forward(
        CONFIG, [SAMPLE], splits=3, boot=200, work_dir=tmp_path_factory.mktemp("wf")
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    # BTCUSDT 2023-04, ETHUSDT 2024-07 (never trained on): one window each. Labels before fees
    # (0 bps): at the venue's fee these captures hold no positive to learn from, and the
    # model path (fit, export, the filtered replay) must run.
    if not HISTORY.is_dir():
        pytest.skip("../shared captures absent")
    files = sorted(HISTORY.glob("usdm_btcusdt_2023*.gz")) + sorted(
        HISTORY.glob("usdm_ethusdt_2024071*.gz")
    )
    return walk_forward(
        CONFIG,
        files,
        splits=1,
        label_fee_bps=0.0,
        kinds=("gbdt",),
        min_positives=3,
        boot=200,
        work_dir=tmp_path_factory.mktemp("wf_history"),
    )


def test_windows_are_in_time_order_and_train_only_on_the_past(result):
    rows = result["windows"]
    assert len(rows) == 3
    assert [r["from"] for r in rows] == sorted(r["from"] for r in rows)
    assert rows[0]["train"]["rows"] == 0  # nothing before the first window
    assert not any(r["model"]["trained"] for r in rows)  # too few labels on the sample
    assert all(r["model"]["reason"] for r in rows) and result["pooled"]["difference_ci95"] is None
    embargo = timedelta(milliseconds=result["embargo_ms"])
    for r in rows:
        last = r["train"]["last_label_decided"]
        if last is not None:
            assert datetime.fromisoformat(last) < datetime.fromisoformat(r["from"]) - embargo
    assert [r["train"]["rows"] for r in rows] == sorted(r["train"]["rows"] for r in rows)


def test_each_window_is_replayed_with_and_without_its_model(history):
    result = history
    rows = result["windows"]
    assert [r["symbols"] for r in rows] == [["BTCUSDT"], ["ETHUSDT"]]
    with_model = [r for r in rows if r["model"]["trained"]]
    assert len(with_model) == 1, "ETHUSDT 2024-07 has a model trained on BTCUSDT 2023-04"
    for r in with_model:
        on, off = r["replay_on"], r["replay_off"]
        assert 0 <= on["taken"] <= on["scored"] <= on["signals"]
        assert on["trades"] <= on["taken"] + 1  # a trade opened in the window was taken there
        diff = on["net_pnl"] - off["net_pnl"]
        assert r["difference"]["net_pnl"] == pytest.approx(diff, abs=1e-3)
        lo, hi = r["difference"]["ci95"]
        assert lo <= hi
        assert 0.0 <= r["test"]["precision"] <= 1.0
        sel = r["selection"]  # against taking as many of the unfiltered trades at random
        if off["trades"]:
            mean_off = off["net_pnl"] / off["trades"]
            want = on["net_pnl"] - on["trades"] * mean_off
            assert sel["vs_random_same_count"] == pytest.approx(want, abs=1e-3)
    for r in rows:
        if not r["model"]["trained"]:
            assert "replay_on" not in r and r["model"]["reason"]
    p = result["pooled"]
    assert p["windows_with_a_model"] == len(with_model)
    assert p["net_pnl_off"] == pytest.approx(sum(r["replay_off"]["net_pnl"] for r in with_model))
    assert p["filter_improves_net_pnl"] == (p["difference"] > 0)
    assert p["filter_selects_better_than_random"] == (p["vs_random_ci95"][0] > 0)


def test_the_windows_split_the_unfiltered_run(result, tmp_path):
    # Every closed trade of the whole unfiltered replay opened in exactly one window.
    rows = result["windows"]
    settings = {"journal.dir": str(tmp_path), "logging.path": str(tmp_path / "e.jsonl")}
    report = engine.backtest(CONFIG, **settings).report  # config.toml replays SAMPLE
    assert sum(r["replay_off"]["trades"] for r in rows) == report.round_trips
    assert sum(r["replay_off"]["net_pnl"] for r in rows) == pytest.approx(report.net_pnl, abs=1e-3)


@pytest.mark.parametrize("which", ["result", "history"])
def test_markdown_has_a_row_per_window_and_the_pooled_row(which, request):
    got = request.getfixturevalue(which)
    lines = markdown(got).splitlines()
    assert len(lines) == 2 + len(got["windows"]) + 1
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert len({line.count("|") for line in lines}) == 1  # every row has every column
    assert "**pooled**" in lines[-1]


def test_the_held_out_symbol_is_never_trained_on(history):
    eth = [r for r in history["windows"] if r["symbols"] == ["ETHUSDT"]]
    assert eth and all(r["held_out_symbol"] for r in eth)
    btc, eth_window = history["windows"]
    assert btc["train"]["symbols"] == [] and eth_window["train"]["symbols"] == ["BTCUSDT"]
    # Every labelled BTCUSDT signal of 2023 trains the 2024 window.
    assert eth_window["train"]["rows"] == btc["test"]["labelled"] > 0


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["walkforward", "--splits", "0"])
    assert exc.value.code == 2
    assert "--splits" in capsys.readouterr().err


def test_json_output_of_the_command(tmp_path, capsys):
    code = main(
        ["walkforward", "--data", str(SAMPLE), "--splits", "2", "--boot", "20",
         "--models", "gbdt", "--work-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["windows"]) == 2
    # Labels charge what the venue charges unless told otherwise.
    assert doc["label_fee_bps_per_leg"] == doc["venue_taker_fee_bps"] == 5.0
