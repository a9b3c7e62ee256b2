"""``python -m tools.train evaluate``: the shipped filter on given data, offline and in replay.

Two views of the same data:

* **Signals.** Every entry the strategy would propose if always flat
  (:func:`~tools.train._labels.entry_signals`, per symbol), labelled by the triple barrier
  (the strategy's exits, ``[model] label_fee_bps`` per leg) and scored by the ensemble and by
  each member: AUC, precision and recall at the threshold (:func:`build_dataset`,
  :func:`~engine.models._training.metrics`, as training computes them).
* **Replay.** The real engine (:func:`engine.run_replay`) twice on the data with the given
  config, the filter off and on. Trades, win rate and PnL after fees come from each run's
  journal (``OrderFilled`` records: a trade closes when its symbol's position returns to
  zero); the filter's decisions from ``EntryScored`` and the report's ``not_ready``; how the
  scored entries turned out from ``DecisionLabeled`` (the engine's own online labels).

* **Engine signals.** The entries the engine itself meets (a take-all replay,
  :func:`~tools.train._driver_data.driver_signals`: rows and labels from its journal),
  scored by the ensemble: the same metrics on what the filter would really see.

Whether the data overlaps the models' training data is decided from the sidecars'
``training_data`` (file names, sha256) and their split times; the output says
``out_of_sample`` accordingly.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import engine
from engine.feeds import expand_paths, scan_symbols
from engine.models import Ensemble, OnnxModel, default_feature_spec
from engine.models._training import auc, metrics
from engine.models._training import iso as _iso

from ._driver_data import driver_signals
from ._labels import StrategyConfig, entry_signals
from ._train import Dataset, build_dataset, file_digest

__all__ = ["engine_signal_metrics", "evaluate", "journal_trades", "replay_pair", "strategy_of"]

_NS_PER_MS = 1_000_000


def strategy_of(config: engine.Config) -> StrategyConfig:
    """The labelling :class:`StrategyConfig` of a config: its strategy, label fee and latency."""
    s = config.strategy
    return StrategyConfig(
        sample_ms=s.sample_ms,
        fast=s.fast,
        slow=s.slow,
        rsi_period=s.rsi_period,
        rsi_long_max=s.rsi_long_max,
        rsi_short_min=s.rsi_short_min,
        allow_short=s.allow_short,
        stop_loss_bps=s.stop_loss_bps,
        take_profit_bps=s.take_profit_bps,
        max_hold_ms=s.max_hold_ms,
        fee_bps=config.model.label_fee_bps,
        latency_ms=config.venue.latency_ms,
    )


# -- overlap with the training data ----------------------------------------------------


def _training_overlap(
    files: Sequence[Path], digest: str, span: tuple[int, int] | None, sidecars: list[dict]
) -> dict[str, Any]:
    """Whether the data is (part of) what the models were trained and tested on.

    Overlap by name or sha256 of a file (or of all files together), or by time: the data's
    span meets a model's signal span (first training signal to last test signal, plus the
    label horizon), which catches excerpts of the training capture under another name.
    """
    names = {p.name for p in files}
    hashes = {digest} | {file_digest([p]) for p in files}
    train_names: set[str] = set()
    train_hashes: set[str] = set()
    windows: list[tuple[int, int]] = []
    for sc in sidecars:
        td = sc.get("training_data") or {}
        train_names.update(td.get("files", []))
        if td.get("sha256"):
            train_hashes.add(td["sha256"])
        splits = sc.get("splits") or {}
        first = (splits.get("train") or {}).get("first_ts_ns")
        last = (splits.get("test") or splits.get("train") or {}).get("last_ts_ns")
        hold = (sc.get("strategy") or {}).get("max_hold_ms", 0) * _NS_PER_MS
        if first is not None and last is not None:
            windows.append((int(first), int(last) + int(hold)))
    by_time = span is not None and any(lo <= span[1] and span[0] <= hi for lo, hi in windows)
    overlap = {
        "file_name": bool(names & train_names),
        "sha256": bool(hashes & train_hashes),
        "time": bool(by_time),
    }
    return {
        "out_of_sample": not any(overlap.values()),
        "overlap": overlap,
        "training_data": {
            "files": sorted(train_names),
            "sha256": sorted(train_hashes),
            "signal_windows": [[_iso(lo), _iso(hi)] for lo, hi in sorted(set(windows))],
        },
    }


# -- signals: offline metrics ----------------------------------------------------------


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    if len(y) == 0:
        return {"n": 0, "positives": 0, "base_rate": None, "auc": None, "threshold": threshold}
    return metrics(y, p, threshold)


def _datasets(files: list[Path], symbols: list[str], cfg: StrategyConfig) -> list[Dataset]:
    spec = default_feature_spec()
    return [build_dataset(files, cfg, spec, symbol=s) for s in symbols]


def _signal_counts(
    symbols: list[str], datasets: list[Dataset], cfg: StrategyConfig
) -> dict[str, Any]:
    """Entry signals (always flat), those labelled, those before the features are warm."""
    per = {
        s: {
            "total": len(entry_signals(d.ticks, cfg)),
            "labelled": int(d.y.shape[0]),
            "not_warm": d.dropped_not_warm,
        }
        for s, d in zip(symbols, datasets, strict=True)
    }
    for v in per.values():
        # Warm, but the data ends before a barrier decides the label.
        v["undecided_at_end"] = v["total"] - v["labelled"] - v["not_warm"]
    totals = {k: sum(v[k] for v in per.values()) for k in ("total", "labelled", "not_warm")}
    return {**totals, "undecided_at_end": sum(v["undecided_at_end"] for v in per.values())} | {
        "per_symbol": per
    }


def _signal_metrics(
    datasets: list[Dataset],
    members: list[OnnxModel],
    ensemble: Ensemble,
    threshold: float,
    holdout_ns: int | None,
    extra_fee_bps: float,
) -> dict[str, Any]:
    n_feat = len(default_feature_spec().names)
    X = np.concatenate([d.X for d in datasets]) if datasets else np.zeros((0, n_feat))
    X = X.astype(np.float32)
    y = np.concatenate([d.y for d in datasets]) if datasets else np.zeros(0, np.int8)
    net = np.concatenate([d.labels.net_bps for d in datasets]) if datasets else np.zeros(0)
    t0 = np.concatenate([d.labels.t0 for d in datasets]) if datasets else np.zeros(0, np.int64)
    scorers = {"ensemble": ensemble.predict_batch}
    scorers |= {Path(m.path).stem: m.predict_batch for m in members}
    probs = {k: (f(X) if len(X) else np.zeros(0)) for k, f in scorers.items()}
    # The same entries labelled at the venue's taker fee instead of the training label fee:
    # what the replay's trades pay.
    y_venue = (net - 2.0 * extra_fee_bps > 0.0).astype(np.int8)
    out: dict[str, Any] = {
        "all_signals": {k: _metrics(y, p, threshold) for k, p in probs.items()},
        "all_signals_at_venue_fee": {k: _metrics(y_venue, p, threshold) for k, p in probs.items()},
    }
    if holdout_ns is not None:
        # In-sample data: the signals from the models' own test window on, which the fit
        # never saw (the threshold was still chosen with them in view).
        sel = t0 >= holdout_ns
        out["models_test_window"] = {
            "from": _iso(holdout_ns),
            **{k: _metrics(y[sel], p[sel], threshold) for k, p in probs.items()},
        }
    return out


def engine_signal_metrics(
    config: engine.Config,
    files: Sequence[Path],
    work_dir: Path,
    members: list[OnnxModel],
    ensemble: Ensemble,
    threshold: float,
    extra_fee_bps: float,
) -> dict[str, Any]:
    """The ensemble's metrics on the engine's own entry signals (take-all replay).

    Rows and labels come from the engine's journal (:func:`driver_signals`), not from a
    strategy loop of our own: only the entries the engine really meets (while flat).
    """
    sig = driver_signals(config, files, work_dir)
    lab = sig.labelled
    X, y = sig.X[lab], sig.label[lab]
    y_venue = (sig.ret_bps[lab] - 2.0 * extra_fee_bps > 0.0).astype(np.int8)
    scorers = {"ensemble": ensemble.predict_batch}
    scorers |= {Path(m.path).stem: m.predict_batch for m in members}
    probs = {k: (f(X) if len(X) else np.zeros(0)) for k, f in scorers.items()}
    return {
        "scored": len(sig.ts),
        "labelled": len(lab),
        "metrics": {k: _metrics(y, p, threshold) for k, p in probs.items()},
        "metrics_at_venue_fee": {k: _metrics(y_venue, p, threshold) for k, p in probs.items()},
    }


# -- replay: the engine with and without the filter ------------------------------------


def journal_trades(path: Path) -> dict[str, Any]:
    """Closed trades and filter decisions of a run, from its journal.

    A trade is a symbol's fills from flat back to flat; its PnL is the signed cash flow of
    those fills less their fees. Trades still open at the end are counted, not scored.
    """
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT kind, payload FROM journal WHERE kind IN "
            "('OrderFilled', 'EntryScored', 'DecisionLabeled', 'ModelRetrained') ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    pos: dict[str, float] = defaultdict(float)
    cash: dict[str, float] = defaultdict(float)
    trades: dict[str, list[float]] = defaultdict(list)
    opened: dict[str, int] = {}
    trade_log: list[tuple[int, float]] = []  # (ts of the opening fill, PnL after fees)
    scored: dict[str, dict[str, Any]] = {}
    labels: dict[str, dict[str, Any]] = {}
    retrains = []
    for kind, payload in rows:
        r = json.loads(payload)
        if kind == "OrderFilled":
            s = r["symbol"]
            if pos[s] == 0.0:
                opened[s] = r["ts_event"]
            cash[s] -= r["side"] * r["last_qty"] * r["last_price"] + r["fee"]
            pos[s] = round(pos[s] + r["side"] * r["last_qty"], 12)
            if pos[s] == 0.0:
                trades[s].append(cash[s])
                trade_log.append((opened[s], cash[s]))
                cash[s] = 0.0
        elif kind == "EntryScored":
            scored[r["correlation_id"]] = r
        elif kind == "DecisionLabeled":
            labels[r["correlation_id"]] = r
        else:
            retrains.append({k: r[k] for k in ("swapped", "reason", "samples")})
    return {
        "trades": trade_log,
        "per_symbol": {
            s: {
                "trades": len(trades[s]),
                "wins": sum(x > 0.0 for x in trades[s]),
                "pnl_after_fees": round(sum(trades[s]), 6),
            }
            for s in sorted(trades)
        },
        "open_at_end": sorted(s for s, q in pos.items() if q != 0.0),
        "scored": scored,
        "labels": labels,
        "retrains": retrains,
    }


def _decision_outcomes(scored: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    """How the taken and the rejected entries turned out (the engine's online labels)."""
    out: dict[str, Any] = {}
    for name, taken in (("taken", True), ("rejected", False)):
        lab = [labels[c] for c, r in scored.items() if r["taken"] is taken and c in labels]
        ret = np.array([x["ret_bps"] for x in lab])
        out[name] = {
            "labelled": len(lab),
            "paid": int(sum(x["label"] for x in lab)),
            "hit_rate": round(float(np.mean([x["label"] for x in lab])), 4) if lab else None,
            "mean_ret_bps": round(float(ret.mean()), 3) if len(ret) else None,
        }
    both = [c for c in scored if c in labels]
    y = np.array([labels[c]["label"] for c in both])
    s = np.array([scored[c]["score"] for c in both])
    a = auc(y, s) if len(both) else None
    out["auc_of_scores"] = round(a, 4) if a is not None else None
    return out


def _trade_stats(pnl: np.ndarray) -> dict[str, Any]:
    wins = int((pnl > 0.0).sum())
    return {
        "trades": len(pnl),
        "wins": wins,
        "win_rate": round(wins / len(pnl), 4) if len(pnl) else None,
        "pnl_after_fees": round(float(pnl.sum()), 6),
    }


def _run_summary(
    report: engine.RunReport, journal: dict[str, Any], holdout_ns: int | None
) -> dict[str, Any]:
    pnl = np.array([x for _ts, x in journal["trades"]])
    wins = int((pnl > 0.0).sum())
    entry_signals = sum(p.transitions.get("SIGNALED", 0) for p in report.per_symbol)
    out: dict[str, Any] = {
        "symbols": report.symbols,
        "events": report.events,
        "entry_signals": entry_signals,
        "orders": report.orders,
        "fills": report.fills,
        "denied": report.denied,
        "trades": len(pnl),
        "wins": wins,
        "win_rate": round(wins / len(pnl), 4) if len(pnl) else None,
        "closed_trades_pnl_after_fees": round(float(pnl.sum()), 6),
        "pnl_after_fees": round(report.net_pnl, 6),
        "realized_pnl": round(report.realized_pnl, 6),
        "fees": round(report.fees, 6),
        "max_drawdown": round(report.max_drawdown, 6),
        "round_trips": report.round_trips,
        "open_at_end": journal["open_at_end"],
        "trading_state": report.trading_state,
        "per_symbol": journal["per_symbol"],
        "wall_seconds": round(report.wall_seconds, 3),
    }
    m = report.model
    if m.get("enabled"):
        scored = journal["scored"]
        taken = sum(1 for r in scored.values() if r["taken"])
        out["filter"] = {
            "signals": entry_signals,
            "scored": len(scored),
            "taken": taken,
            "filtered": len(scored) - taken,
            "not_ready": m["not_ready"],
            "regimes": dict(Counter(r["regime"] for r in scored.values()).most_common()),
            "outcomes": _decision_outcomes(scored, journal["labels"]),
        }
        out["model"] = {
            k: m[k]
            for k in (
                "model",
                "requests",
                "inference_us_p50",
                "inference_us_p99",
                "retrains",
                "swaps",
                "thresholds",
            )
            if k in m
        }
        out["model"]["retrain_results"] = journal["retrains"]
    if holdout_ns is not None:
        # Trades opened, and decisions made, in the models' test window (the fit never saw
        # it; the run's state at its start is what the earlier, in-sample part left).
        late = np.array([x for ts, x in journal["trades"] if ts >= holdout_ns])
        window: dict[str, Any] = {"from": _iso(holdout_ns), **_trade_stats(late)}
        if m.get("enabled"):
            dec = [r for r in journal["scored"].values() if r["ts_event"] >= holdout_ns]
            window["scored"] = len(dec)
            window["taken"] = sum(1 for r in dec if r["taken"])
        out["models_test_window"] = window
    return out


def replay_pair(
    config: engine.Config, files: Sequence[Path], work_dir: Path, holdout_ns: int | None = None
) -> dict[str, dict[str, Any]]:
    """Replay ``files`` with ``config``, the filter off then on; a summary of each run.

    Only the data paths, the journal and log locations (under ``work_dir``) and
    ``model.enabled`` are changed; everything else is the config's. With ``holdout_ns``,
    each summary also has the trades opened from then on (``models_test_window``).
    """
    import trio

    out: dict[str, dict[str, Any]] = {}
    for name, enabled in (("unfiltered", False), ("filtered", True)):
        run_dir = work_dir / name
        cfg = attrs.evolve(
            config,
            data=attrs.evolve(config.data, paths=tuple(str(p) for p in files)),
            journal=attrs.evolve(config.journal, dir=str(run_dir)),
            logging=attrs.evolve(config.logging, path=str(run_dir / "engine.jsonl")),
            model=attrs.evolve(config.model, enabled=enabled),
        )
        log, stream = engine.make_logger(cfg.logging.path, cfg.logging.level)
        try:
            report = trio.run(partial(engine.run_replay, cfg, log=log))
        finally:
            if stream is not None:
                stream.close()
        out[name] = _run_summary(report, journal_trades(Path(report.journal_path)), holdout_ns)
    return out


def _difference(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    f, u = runs["filtered"], runs["unfiltered"]
    keys = ("trades", "orders", "pnl_after_fees", "fees", "max_drawdown")
    return {k: round(f[k] - u[k], 6) for k in keys}


# -- the command -----------------------------------------------------------------------


def evaluate(
    data: Sequence[Path],
    config_path: Path,
    *,
    model_paths: Sequence[Path] | None = None,
    threshold: float | None = None,
    replay: bool = True,
    journal_dir: Path | None = None,
) -> dict[str, Any]:
    """The shipped filter on ``data``: signal metrics and the replay with and without it.

    Args:
        data: capture files or directories.
        config_path: the engine config (strategy, venue, ``[model]``) to evaluate with.
        model_paths: ensemble members, in place of the config's ``model.paths`` and
            ``weights`` (equal weights), for the metrics and the filtered replay alike.
        threshold: for precision and recall (default: ``model.threshold``).
        replay: also replay with the engine (off: signal metrics only).
        journal_dir: keep the replays' journals and logs here (default: a temporary
            directory, removed afterwards).

    Raises:
        engine.ConfigError: the config is invalid.
        engine.DataError: the data cannot be read.
        engine.models.ModelError: a model does not match the feature spec.
    """
    config = engine.load_config(config_path)
    files = expand_paths([str(p) for p in data])
    symbols = list(config.data.symbols) or scan_symbols(files)
    spec = default_feature_spec()
    if model_paths:
        paths = tuple(str(Path(p).resolve()) for p in model_paths)
        config = attrs.evolve(config, model=attrs.evolve(config.model, paths=paths, weights=()))
    members = [OnnxModel.load(config.resolve(p), spec) for p in config.model.paths]
    ensemble = Ensemble(members, config.model.weights or None)
    sidecars = [m.sidecar for m in members]
    thr = config.model.threshold if threshold is None else threshold
    cfg = strategy_of(config)
    datasets = _datasets(files, symbols, cfg)
    starts = [int(d.ticks.ts[0]) for d in datasets]
    ends = [int(d.ticks.ts[-1]) for d in datasets]
    span = (min(starts), max(ends)) if datasets else None
    digest = file_digest(files)
    sample = _training_overlap(files, digest, span, sidecars)
    holdout = [sc.get("splits", {}).get("test") for sc in sidecars]
    holdout_ns = (
        max(int(h["first_ts_ns"]) for h in holdout)
        if not sample["out_of_sample"] and all(holdout)
        else None
    )
    trained = {k: v for k, v in (sidecars[0].get("strategy") or {}).items() if k != "fee_bps"}
    ours = {k: v for k, v in attrs.asdict(cfg).items() if k != "fee_bps"}
    out: dict[str, Any] = {
        "out_of_sample": sample["out_of_sample"],
        "data": {
            "files": [str(p) for p in files],
            "sha256": digest,
            "symbols": symbols,
            "first": _iso(span[0]) if span else None,
            "last": _iso(span[1]) if span else None,
            "seconds": round((span[1] - span[0]) / 1e9, 3) if span else 0.0,
        },
        "overlap": sample["overlap"],
        "training_data": sample["training_data"],
        "config": str(config_path),
        "models": [str(m.path) for m in members],
        "weights": [round(float(w), 6) for w in ensemble.weights],
        "strategy": attrs.asdict(cfg),
        "strategy_matches_training": trained == ours,
        "threshold": thr,
        "signals": _signal_counts(symbols, datasets, cfg),
        "fees_bps_per_leg": {
            "labels": config.model.label_fee_bps,
            "venue_taker": config.venue.taker_fee_bps,
        },
        "metrics": _signal_metrics(
            datasets,
            members,
            ensemble,
            thr,
            holdout_ns,
            config.venue.taker_fee_bps - config.model.label_fee_bps,
        ),
    }
    if replay:
        extra_fee = config.venue.taker_fee_bps - config.model.label_fee_bps
        with contextlib.ExitStack() as stack:
            work = journal_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="trireme-eval-"))
            )
            runs = replay_pair(config, files, work, holdout_ns)
            out["engine_signals"] = engine_signal_metrics(
                config, files, work / "take_all", members, ensemble, thr, extra_fee
            )
        out["replay"] = {**runs, "filtered_minus_unfiltered": _difference(runs)}
    out["caveats"] = _caveats(out)
    return out


_FEW = 30  # labelled signals below which AUC, precision and recall are mostly noise


def _caveats(out: dict[str, Any]) -> list[str]:
    """What the numbers cannot show, in words, so that a reader does not over-read them."""
    notes = []
    if not out["out_of_sample"]:
        why = ", ".join(k for k, v in out["overlap"].items() if v)
        notes.append(f"in-sample: the data overlaps the models' training data ({why})")
    n = out["signals"]["labelled"]
    if n < _FEW:
        notes.append(f"only {n} labelled signals: AUC, precision and recall are not meaningful")
    fees = out["fees_bps_per_leg"]
    if fees["labels"] < fees["venue_taker"]:
        notes.append(
            f"labels use {fees['labels']} bps per leg, the venue charges {fees['venue_taker']}:"
            " an entry labelled as paying can lose in the replay (all_signals_at_venue_fee)"
        )
    runs = out.get("replay")
    if runs:
        u, f = runs["unfiltered"], runs["filtered"]
        flt = f["filter"]
        if flt["scored"] == 0:
            notes.append(
                f"the filter scored no signal ({flt['not_ready']} not ready: features not"
                " warm): the filtered run's result is the fail-closed warm-up, not the model"
            )
        elif flt["not_ready"]:
            notes.append(f"{flt['not_ready']} signals were refused because not warm")
        if u["pnl_after_fees"] < 0.0 and f["trades"] < u["trades"]:
            notes.append(
                "the strategy loses after fees here, so any filter that trades less loses"
                " less: compare win rates and the taken/rejected outcomes, not the PnL"
            )
    return notes
