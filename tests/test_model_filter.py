"""The ML entry filter in the engine: model actor, scores in the journal, hot swap."""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import orjson
import pytest
import trio

from engine.models import ModelError, default_feature_spec
from engine.testing import replay, replay_config, scheduler_seed

ROOT = Path(__file__).resolve().parents[1]
MODELS = [str(ROOT / f"models/onnx/entry_filter_{k}.onnx") for k in ("gbdt", "rf", "mlp")]

# The strategy the shipped models were trained for (models/onnx/*.json "strategy").
FAST = {
    "sample_ms": 200,
    "fast": 3,
    "slow": 8,
    "rsi_long_max": 90.0,
    "rsi_short_min": 10.0,
    "stop_loss_bps": 6.0,
    "take_profit_bps": 10.0,
    "max_hold_ms": 20000,
}


def filter_config(tmp_path, data, **model):
    return replay_config(
        tmp_path,
        data,
        strategy=FAST,
        model={"enabled": True, "paths": MODELS, "retrain": False, **model},
    )


def run(config, seed: int | None = None):
    if seed is None:
        return trio.run(replay, config)
    with scheduler_seed(seed):
        return trio.run(replay, config)


def rows(path: str, kind: str) -> list[dict]:
    db = sqlite3.connect(path)
    try:
        return [
            orjson.loads(p)
            for (p,) in db.execute(
                "SELECT payload FROM journal WHERE kind = ? ORDER BY id", (kind,)
            )
        ]
    finally:
        db.close()


def test_every_entry_signal_is_scored_and_journaled(tmp_path, sample):
    from engine import make_logger, run_replay

    config = filter_config(tmp_path, [sample])
    log, log_file = make_logger(str(tmp_path / "engine.jsonl"), "info")
    try:
        report = trio.run(functools.partial(run_replay, config, log=log))
    finally:
        log_file.close()
    scored = rows(report.journal_path, "EntryScored")
    assert scored, "the fast strategy signals on the sample"
    model = report.model
    assert model["enabled"] and model["requests"] == len(scored)
    n = len(default_feature_spec().names)
    for r in scored:
        assert r["model"] == model["model"]
        assert 0.0 <= r["score"] <= 1.0
        assert len(r["features"]) == n
        assert r["taken"] == (r["score"] >= r["threshold"])
    # A taken entry becomes an order with the decision's correlation id; a filtered one does not.
    orders = {o["correlation_id"] for o in rows(report.journal_path, "SubmitOrder")}
    for r in scored:
        assert (r["correlation_id"] in orders) == r["taken"]
    # The decision log line carries the model and the score.
    lines = [json.loads(x) for x in (tmp_path / "engine.jsonl").read_text().splitlines()]
    logged = [x for x in lines if x.get("message") == "entry scored"]
    assert len(logged) == len(scored)
    assert all(x["trireme"]["model"] == model["model"] and "score" in x["trireme"] for x in logged)


def test_the_filter_changes_decisions_and_can_be_turned_off(tmp_path, sample):
    on = run(filter_config(tmp_path / "on", [sample]))
    off_cfg = replay_config(tmp_path / "off", [sample], strategy=FAST)
    off = run(off_cfg)
    assert off.model == {"enabled": False}
    assert not rows(off.journal_path, "EntryScored")
    filtered = [r for r in rows(on.journal_path, "EntryScored") if not r["taken"]]
    # Same signals, fewer entries: every filtered signal is an order the unfiltered run made.
    entries_on = [o for o in rows(on.journal_path, "SubmitOrder") if o["purpose"] == "ENTRY"]
    entries_off = [o for o in rows(off.journal_path, "SubmitOrder") if o["purpose"] == "ENTRY"]
    assert filtered
    assert len(entries_on) < len(entries_off)


def test_filtered_replay_is_deterministic_across_schedules(tmp_path, sample):
    digests = {
        run(filter_config(tmp_path / str(seed), [sample]), seed).journal_sha256
        for seed in (1, 2, 3)
    }
    assert len(digests) == 1


def test_engine_features_equal_the_training_path(tmp_path, sample):
    from engine.models import training_rows

    report = run(filter_config(tmp_path, [sample]))
    scored = rows(report.journal_path, "EntryScored")
    spec = default_feature_spec()
    expected = training_rows(
        [sample], "BTCUSDT", [(r["ts_event"], r["side"]) for r in scored], spec
    )
    got = np.array([r["features"] for r in scored], dtype=np.float64)
    np.testing.assert_allclose(got, expected.astype(np.float64), rtol=1e-6, atol=1e-9)


def _broken_models(tmp_path: Path) -> list[str]:
    out = []
    for path in MODELS:
        dst = tmp_path / Path(path).name
        shutil.copy(path, dst)
        shutil.copy(Path(path).with_suffix(".json"), dst.with_suffix(".json"))
        out.append(str(dst))
    side = Path(out[1]).with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["feature_names"] = list(reversed(meta["feature_names"]))
    side.write_text(json.dumps(meta))
    return out


def test_a_model_whose_sidecar_does_not_match_is_refused_at_start(tmp_path, sample):
    config = filter_config(tmp_path, [sample], paths=_broken_models(tmp_path))
    with pytest.raises(ModelError, match=r"entry_filter_rf\.json.*feature_names"):
        run(config)
    # Nothing was traded: no journal was written past its header.
    assert not any((tmp_path / "runs").glob("*.sqlite")) or all(
        not rows(str(p), "SubmitOrder") for p in (tmp_path / "runs").glob("*.sqlite")
    )


def test_cli_refuses_a_mismatched_model_with_one_clear_line(tmp_path, sample):
    models = _broken_models(tmp_path)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        f'[data]\npaths = ["{sample}"]\n[journal]\ndir = "{tmp_path}/runs"\n'
        f'[logging]\npath = "{tmp_path}/log.jsonl"\n'
        f"[model]\nenabled = true\npaths = {json.dumps(models)}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "entry_filter_rf.json" in proc.stderr and "feature_names" in proc.stderr
    # One error line; a slow machine may also show progress ("trireme: loading ...").
    said = [ln for ln in proc.stderr.splitlines() if not ln.startswith("trireme: ")]
    assert len(said) == 1 and proc.stderr.endswith("\n")


def hot_swap_config(tmp_path, sample, **extra):
    # Retrain early and often, and accept any candidate, so swaps happen on the sample.
    model = {
        "retrain": True,
        "retrain_every_events": 8000,
        "retrain_min_samples": 12,
        "min_auc_gain": -1.0,
        "apply_after_steps": 3,
        "label_fee_bps": 0.0,
        **extra,
    }
    return filter_config(tmp_path, [sample], **model)


def test_hot_swap_under_load_keeps_the_replay_deterministic(tmp_path, sample):
    reports = [run(hot_swap_config(tmp_path / str(seed), sample), seed) for seed in (1, 2, 3)]
    assert len({r.journal_sha256 for r in reports}) == 1
    report = reports[0]
    retrained = rows(report.journal_path, "ModelRetrained")
    assert retrained, "retraining ran on the schedule"
    swaps = [r for r in retrained if r["swapped"]]
    assert swaps and report.model["swaps"] == len(swaps)
    # Decisions after a swap are scored by the new ensemble.
    models = {r["model"] for r in rows(report.journal_path, "EntryScored")}
    assert len(models) >= 2
    assert swaps[0]["previous"] in models


def test_a_worse_candidate_is_not_swapped_in(tmp_path, sample):
    report = run(hot_swap_config(tmp_path, sample, min_auc_gain=2.0))
    retrained = rows(report.journal_path, "ModelRetrained")
    assert retrained and not any(r["swapped"] for r in retrained)
    assert {r["model"] for r in rows(report.journal_path, "EntryScored")} == {report.model["model"]}


def test_labels_are_journaled_from_later_quotes_only(tmp_path, sample):
    report = run(filter_config(tmp_path, [sample]))
    labels = rows(report.journal_path, "DecisionLabeled")
    scored = {r["correlation_id"]: r for r in rows(report.journal_path, "EntryScored")}
    assert labels
    for label in labels:
        decision = scored[label["correlation_id"]]
        assert label["ts_decision"] == decision["ts_event"]
        assert label["ts_event"] > decision["ts_event"]
        assert label["label"] == int(label["ret_bps"] > 0)


def test_config_validates_the_model_section(tmp_path, sample):
    from engine import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=r"model\.threshold"):
        config_from_dict({"model": {"threshold": 0.5, "threshold_max": 0.4}}, source="t.toml")
    with pytest.raises(ConfigError, match=r"model\.weights"):
        config_from_dict(
            {"model": {"enabled": True, "paths": MODELS, "weights": [1.0]}}, source="t.toml"
        )
    assert attrs.asdict(config_from_dict({}, source="t").model)["enabled"] is False
