"""``python -m tools.train walkforward``: the filter trained on earlier data, judged on later data.

The question it answers is the one the shipped default depends on: does a filter trained the
way ``tools.train`` trains it improve the engine's net PnL after fees on data it never saw?

1. **Captures.** The data files are grouped into continuous captures (same symbols, each
   file starting within ``data.max_time_jump_ms`` of the previous one's end: the two files
   of a day pair continue each other), and each capture is cut into ``splits`` equal
   windows of market time.
2. **Signals and labels** come from the engine itself (:func:`driver_signals`: a take-all
   replay of each capture with the config's strategy), labelled by the engine's triple
   barrier at the fee the venue charges (``venue.taker_fee_bps`` a leg: the shipped
   strategy enters and exits with market orders) unless ``--label-fee-bps`` says otherwise.
3. **Walk-forward.** For every window (but the earliest) a fresh ensemble is fitted
   (:func:`~engine.models._training.fit_calibrated`, the kinds ``train`` ships) on the
   labelled signals of every *earlier* window of the symbols trained on, purged: a training
   label must be decided ``embargo_ms`` before the test window starts. The held-out symbols
   (ETHUSDT by default) are never trained on; their windows are tested like the others.
4. **Per held-out window**: AUC of the ensemble on the window's engine signals, precision
   at the operating threshold (``model.threshold``) and how many it selects; then the engine
   replays the window's capture twice, without the filter and with the fold's ensemble
   (frozen: online retraining off; every other ``[model]`` key as configured), and counts
   the trades *opened in the window*: signals, scored/taken, trades and net PnL after fees.
   Bootstrap 95 % intervals (``--boot`` resamples) are given for AUC, each net PnL and
   their difference, since every window holds few trades. Trading less improves a losing
   strategy whatever is dropped, so each window also compares the filtered PnL with as
   many of the unfiltered run's trades taken at random (``selection``).

A window whose training data has too few positives to fit (``--min-positives``) gets no
model: the row says so, and the filter cannot be judged there (nothing to replay with).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import engine
from engine._progress import Meter
from engine.feeds import (
    CaptureLimits,
    CaptureStats,
    expand_paths,
    load_tape,
    open_tick_store,
    scan_symbols,
)
from engine.models import Ensemble, OnnxModel, default_feature_spec
from engine.models._training import (
    MODEL_KINDS,
    auc,
    calibration_of,
    check_parity,
    fit_calibrated,
    make_sidecar,
    metrics,
    span,
    to_onnx,
)
from engine.models._training import iso as _iso

from ._driver_data import DriverSignals, driver_signals
from ._evaluate import journal_trades
from ._labels import purged_split

__all__ = ["Capture", "Window", "captures_of", "default_data", "markdown", "walk_forward"]

_ROOT = Path(__file__).resolve().parents[2]
_EXTERNAL = _ROOT.parent / "shared" / "data" / "external"
_NS_PER_MS = 1_000_000


def default_data() -> list[Path]:
    """Every tick capture in ``../shared/data/external`` (``hftbacktest*/``)."""
    return expand_paths([_EXTERNAL / "hftbacktest_history", _EXTERNAL / "hftbacktest"])


@attrs.frozen
class Capture:
    """Files that continue each other: one replay, one warm-up."""

    files: tuple[Path, ...]
    symbols: tuple[str, ...]
    first_ts: int
    last_ts: int

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.files)


@attrs.frozen
class Window:
    """A stretch of one capture's market time ``[start, end)``."""

    capture: int  # index into the capture list
    index: int  # the window's number within its capture
    start: int
    end: int
    symbols: tuple[str, ...]

    def label(self, captures: Sequence[Capture]) -> str:
        return f"{captures[self.capture].name} [{self.index + 1}]"


def captures_of(config: engine.Config, files: Sequence[Path]) -> list[Capture]:
    """Group ``files`` into continuous captures, in time order.

    Raises:
        engine.DataError: a file cannot be read or has no market event.
    """
    store = open_tick_store(
        config.data.tick_store, base_dir=Path(config.base_dir), where="data.tick_store"
    )
    limits = CaptureLimits(
        max_receive_skew_ms=config.data.max_receive_skew_ms,
        max_time_jump_ms=config.data.max_time_jump_ms,
    )
    spans = []
    for path in files:
        symbols = tuple(scan_symbols([path]))
        tape = load_tape([path], symbols, limits=limits, stats=CaptureStats(), store=store)
        if tape.first_ts is None or tape.last_ts is None:
            raise engine.DataError(f"{path}: no market events found")
        spans.append((tape.first_ts, tape.last_ts, symbols, path))
    spans.sort(key=lambda s: (s[0], str(s[3])))
    jump = config.data.max_time_jump_ms * _NS_PER_MS
    groups: list[list[Any]] = []
    for first, last, symbols, path in spans:
        for g in groups:
            if g[2] == symbols and 0 <= first - g[1] <= jump:
                g[1] = max(g[1], last)
                g[3].append(path)
                break
        else:
            groups.append([first, last, symbols, [path]])
    return [Capture(tuple(g[3]), g[2], g[0], g[1]) for g in groups]


def _windows(captures: Sequence[Capture], splits: int) -> list[Window]:
    out = []
    for c, cap in enumerate(captures):
        edges = np.linspace(cap.first_ts, cap.last_ts + 1, splits + 1).astype(np.int64)
        out.extend(
            Window(c, k, int(edges[k]), int(edges[k + 1]), cap.symbols) for k in range(splits)
        )
    return sorted(out, key=lambda w: (w.start, w.capture))


# -- replays -----------------------------------------------------------------------------


def _replay(config: engine.Config, files: Sequence[Path], run_dir: Path) -> engine.RunReport:
    import trio

    cfg = attrs.evolve(
        config,
        data=attrs.evolve(config.data, paths=tuple(str(p) for p in files)),
        journal=attrs.evolve(config.journal, dir=str(run_dir)),
        logging=attrs.evolve(config.logging, path=str(run_dir / "engine.jsonl"), progress="off"),
    )
    log, stream = engine.make_logger(cfg.logging.path, cfg.logging.level)
    try:
        return trio.run(partial(engine.run_replay, cfg, log=log))
    finally:
        if stream is not None:
            stream.close()


@attrs.frozen
class _Run:
    """What a replay did, by time: entry signals, filter decisions, closed trades."""

    signals: np.ndarray  # ts of each IDLE -> SIGNALED
    scored: list[tuple[int, bool]]  # (ts, taken)
    trades: list[tuple[int, float]]  # (ts of the opening fill, PnL after fees)
    open_at_end: list[str]

    def window(self, w: Window) -> dict[str, Any]:
        def inside(ts: int) -> bool:
            return w.start <= ts < w.end

        pnl = np.array([x for ts, x in self.trades if inside(ts)], dtype=np.float64)
        return {
            "signals": int(((self.signals >= w.start) & (self.signals < w.end)).sum()),
            "scored": sum(1 for ts, _ in self.scored if inside(ts)),
            "taken": sum(1 for ts, t in self.scored if inside(ts) and t),
            "pnl": pnl,
        }


def _read_run(journal: Path) -> _Run:
    trades = journal_trades(journal)
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT payload FROM journal WHERE kind = 'PositionChanged' ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    signals = [
        r["ts_event"] for r in map(json.loads, (p for (p,) in rows)) if r["target"] == "SIGNALED"
    ]
    return _Run(
        signals=np.array(signals, dtype=np.int64),
        scored=[(r["ts_event"], bool(r["taken"])) for r in trades["scored"].values()],
        trades=list(trades["trades"]),
        open_at_end=trades["open_at_end"],
    )


# -- statistics --------------------------------------------------------------------------


def _ci(samples: np.ndarray) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.shape[0] == 0:
        return None
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def _boot_sums(pnl: np.ndarray, rng: np.random.Generator, boot: int) -> np.ndarray:
    if pnl.shape[0] == 0:
        return np.zeros(boot)
    return pnl[rng.integers(0, pnl.shape[0], (boot, pnl.shape[0]))].sum(axis=1)


def _vs_random(
    on: np.ndarray, off: np.ndarray, rng: np.random.Generator, boot: int
) -> tuple[float, np.ndarray]:
    """The filtered run's PnL less what as many trades drawn at random from the unfiltered
    run make on average (``n_on`` x the unfiltered mean trade): selection, not abstention."""
    if off.shape[0] == 0:
        return 0.0, np.zeros(boot)
    value = float(on.sum() - on.shape[0] * off.mean())
    mean_off = off[rng.integers(0, off.shape[0], (boot, off.shape[0]))].mean(axis=1)
    return value, _boot_sums(on, rng, boot) - on.shape[0] * mean_off


def _boot_auc(y: np.ndarray, p: np.ndarray, rng: np.random.Generator, boot: int) -> np.ndarray:
    out = np.full(boot, np.nan)
    if len(np.unique(y)) < 2:
        return out
    for b in range(boot):
        i = rng.integers(0, y.shape[0], y.shape[0])
        a = auc(y[i], p[i])
        if a is not None:
            out[b] = a
    return out


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


# -- the folds ---------------------------------------------------------------------------


def _fit(
    X: np.ndarray, y: np.ndarray, t: np.ndarray, out: Path, kinds: Sequence[str], seed: int
) -> list[Path]:
    """Fit, export and document one model per kind on (X, y); the ``.onnx`` paths."""
    spec = default_feature_spec()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in kinds:
        model = fit_calibrated(kind, X, y, seed)
        blob = to_onnx(model, len(spec.names), f"entry_filter_{kind}")
        parity = check_parity(model, blob, X)
        path = out / f"entry_filter_{kind}.onnx"
        path.write_bytes(blob)
        sidecar = make_sidecar(
            name=f"entry_filter_{kind}",
            kind=kind,
            blob=blob,
            spec=spec,
            seed=seed,
            training_data={"rows": len(y), "positives": int(y.sum())},
            splits={"train": span(t) | {"n": len(y)}},
            metrics={},
            parity=parity,
            calibration_fallback=calibration_of(model),
        )
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
        paths.append(path)
    return paths


def walk_forward(
    config_path: Path,
    data: Sequence[Path] | None = None,
    *,
    splits: int = 2,
    holdout_symbols: Sequence[str] = ("ETHUSDT",),
    label_fee_bps: float | None = None,
    kinds: Sequence[str] = MODEL_KINDS,
    seed: int = 7,
    embargo_ms: int | None = None,
    min_positives: int = 6,
    boot: int = 2000,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Walk-forward evaluation of the filter on every capture of ``data``.

    Args:
        config_path: the engine config (strategy, venue fees, ``[model]`` threshold).
        data: capture files or directories (default: :func:`default_data`).
        splits: windows per capture.
        holdout_symbols: symbols never trained on (tested only).
        label_fee_bps: per-leg fee in the labels (default: ``venue.taker_fee_bps``).
        kinds: the ensemble's model kinds.
        seed: for the fits and the bootstrap.
        embargo_ms: a training label is decided this long before the test window
            (default: the strategy's ``max_hold_ms``).
        min_positives: fewer positive training labels than this: no model for the window.
        boot: bootstrap resamples.
        work_dir: keep the replays' journals and the folds' models here (default: a
            temporary directory, removed afterwards).

    Raises:
        engine.ConfigError: the config is invalid.
        engine.DataError: the data cannot be read.
    """
    t_start = time.perf_counter()
    config = engine.load_config(config_path)
    fee = config.venue.taker_fee_bps if label_fee_bps is None else label_fee_bps
    config = attrs.evolve(config, model=attrs.evolve(config.model, label_fee_bps=fee))
    files = expand_paths([str(p) for p in (data or default_data())])
    embargo_ns = (config.strategy.max_hold_ms if embargo_ms is None else embargo_ms) * _NS_PER_MS
    thr = config.model.threshold
    rng = np.random.default_rng(seed)
    held = set(holdout_symbols)
    with contextlib.ExitStack() as stack:
        work = work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="trireme-wf-"))
        )
        captures = captures_of(config, files)
        windows = _windows(captures, splits)
        # Progress on stderr: each capture replayed twice, then each window fitted and
        # replayed with its model.
        meter = stack.enter_context(
            Meter(
                "walk-forward",
                len(captures) + len(windows),
                "steps",
                style=config.logging.progress_style,
                every_s=config.logging.progress_every_s,
            )
        )
        signals: list[DriverSignals] = []
        unfiltered: list[_Run] = []
        for c, cap in enumerate(captures):
            signals.append(driver_signals(config, cap.files, work / f"c{c}" / "take_all"))
            off = attrs.evolve(config, model=attrs.evolve(config.model, enabled=False))
            report = _replay(off, cap.files, work / f"c{c}" / "unfiltered")
            unfiltered.append(_read_run(Path(report.journal_path)))
            meter.update(c + 1)
        rows = []
        for n, w in enumerate(windows):
            rows.append(
                _fold(
                    n, w, captures, signals, unfiltered, held,
                    config=config, work=work, kinds=kinds, seed=seed, embargo_ns=embargo_ns,
                    min_positives=min_positives, thr=thr, rng=rng, boot=boot,
                )
            )  # fmt: skip
            meter.update(len(captures) + n + 1)
    tested = [r for r in rows if r["model"]["trained"]]
    off_pnl = np.concatenate([r["_pnl_off"] for r in tested]) if tested else np.zeros(0)
    on_pnl = np.concatenate([r["_pnl_on"] for r in tested]) if tested else np.zeros(0)
    d_off = sum(_boot_sums(r["_pnl_off"], rng, boot) for r in tested) if tested else np.zeros(1)
    d_on = sum(_boot_sums(r["_pnl_on"], rng, boot) for r in tested) if tested else np.zeros(1)
    picks = [_vs_random(r["_pnl_on"], r["_pnl_off"], rng, boot) for r in tested]
    for r in rows:
        del r["_pnl_off"], r["_pnl_on"]
    pooled = {
        "windows_with_a_model": len(tested),
        "windows_without": len(rows) - len(tested),
        "trades_off": int(off_pnl.shape[0]),
        "trades_on": int(on_pnl.shape[0]),
        "net_pnl_off": round(float(off_pnl.sum()), 4),
        "net_pnl_on": round(float(on_pnl.sum()), 4),
        "difference": round(float(on_pnl.sum() - off_pnl.sum()), 4),
        "difference_ci95": _ci(np.asarray(d_on - d_off)) if tested else None,
        "mean_trade_off": _r(off_pnl.mean()) if off_pnl.shape[0] else None,
        "mean_trade_on": _r(on_pnl.mean()) if on_pnl.shape[0] else None,
        "vs_random_same_count": round(sum(v for v, _ in picks), 4) if picks else None,
        "vs_random_ci95": _ci(np.asarray(sum(b for _, b in picks))) if picks else None,
    }
    pooled["filter_improves_net_pnl"] = bool(tested) and pooled["difference"] > 0.0
    # Trading less improves a losing strategy whatever is dropped: the bar is beating
    # as many trades taken at random, with the interval clear of zero.
    ci = pooled["vs_random_ci95"]
    pooled["filter_selects_better_than_random"] = bool(ci) and ci[0] > 0.0
    return {
        "config": str(config_path),
        "captures": [
            {
                "files": [str(p) for p in cap.files],
                "symbols": list(cap.symbols),
                "first": _iso(cap.first_ts),
                "last": _iso(cap.last_ts),
                "seconds": round((cap.last_ts - cap.first_ts) / 1e9, 1),
            }
            for cap in captures
        ],
        "holdout_symbols": sorted(held),
        "splits_per_capture": splits,
        "label_fee_bps_per_leg": fee,
        "venue_taker_fee_bps": config.venue.taker_fee_bps,
        "threshold": thr,
        "embargo_ms": embargo_ns // _NS_PER_MS,
        "kinds": list(kinds),
        "bootstrap": boot,
        "windows": rows,
        "pooled": pooled,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def _fold(
    n: int,
    w: Window,
    captures: Sequence[Capture],
    signals: Sequence[DriverSignals],
    unfiltered: Sequence[_Run],
    held: set[str],
    *,
    config: engine.Config,
    work: Path,
    kinds: Sequence[str],
    seed: int,
    embargo_ns: int,
    min_positives: int,
    thr: float,
    rng: np.random.Generator,
    boot: int,
) -> dict[str, Any]:
    """One held-out window: train on the earlier windows, score, replay with and without."""
    # Training rows: labelled signals of the trained-on symbols, decided before the window.
    Xs, ys, ts, decided = [], [], [], []
    trained_on: set[str] = set()
    for sig in signals:
        lab = sig.labelled
        lab = lab[np.array([sig.symbol[i] not in held for i in lab], dtype=bool)]
        train, _ = purged_split(sig.ts[lab], sig.ts_resolved[lab], w.start, w.end, embargo_ns)
        rows = lab[train]
        Xs.append(sig.X[rows])
        ys.append(sig.label[rows])
        ts.append(sig.ts[rows])
        decided.append(sig.ts_resolved[rows])
        trained_on.update(sig.symbol[i] for i in rows)
    last_decided = max((int(d.max()) for d in decided if d.shape[0]), default=None)
    X = np.concatenate(Xs).astype(np.float32)
    y = np.concatenate(ys).astype(np.int64)
    t = np.concatenate(ts)
    sig = signals[w.capture]
    lab = sig.labelled
    test = lab[(sig.ts[lab] >= w.start) & (sig.ts[lab] < w.end)]
    in_window = int(((sig.ts >= w.start) & (sig.ts < w.end)).sum())
    y_test = sig.label[test].astype(np.int64)
    row: dict[str, Any] = {
        "window": w.label(captures),
        "symbols": list(w.symbols),
        "held_out_symbol": bool(set(w.symbols) & held),
        "from": _iso(w.start),
        "to": _iso(w.end),
        "train": {
            "rows": len(y),
            "positives": int(y.sum()),
            "symbols": sorted(trained_on),
            "last_label_decided": _iso(last_decided) if last_decided is not None else None,
        },
        "test": {
            "engine_signals": in_window,
            "labelled": len(test),
            "positives": int(y_test.sum()),
        },
    }
    off = unfiltered[w.capture].window(w)
    row["replay_off"] = {
        "signals": off["signals"],
        "trades": int(off["pnl"].shape[0]),
        "net_pnl": round(float(off["pnl"].sum()), 4),
        "net_pnl_ci95": _ci(_boot_sums(off["pnl"], rng, boot)) if off["pnl"].shape[0] else None,
    }
    row["_pnl_off"], row["_pnl_on"] = off["pnl"], np.zeros(0)
    if int(y.sum()) < min_positives or int(y.sum()) > len(y) - min_positives:
        row["model"] = {
            "trained": False,
            "reason": f"{int(y.sum())} positives in {len(y)} training labels"
            f" (at least {min_positives} of each class needed)",
        }
        return row
    fold_dir = work / f"fold{n}"
    try:
        paths = _fit(X, y, t, fold_dir / "models", kinds, seed)
    except ValueError as exc:  # scikit-learn: a calibration fold with one class
        row["model"] = {"trained": False, "reason": f"fit failed: {exc}"}
        return row
    spec = default_feature_spec()
    members = [OnnxModel.load(p, spec) for p in paths]
    ensemble = Ensemble(members, None)
    p_test = ensemble.predict_batch(sig.X[test]) if len(test) else np.zeros(0)
    m = metrics(y_test, p_test, thr) if len(test) else {"auc": None, "precision": None}
    a_ci = _ci(_boot_auc(y_test, p_test, rng, boot)) if len(test) else None
    row["model"] = {"trained": True, "paths": [str(p) for p in paths]}
    row["test"] |= {
        "auc": _r(m["auc"]),
        "auc_ci95": a_ci,
        "precision": _r(m.get("precision")),
        "selected": m.get("selected", 0),
    }
    on_cfg = attrs.evolve(
        config,
        model=attrs.evolve(
            config.model,
            enabled=True,
            paths=tuple(str(p) for p in paths),
            weights=(),
            retrain=False,
        ),
    )
    report = _replay(on_cfg, captures[w.capture].files, fold_dir / "filtered")
    on = _read_run(Path(report.journal_path)).window(w)
    row["replay_on"] = {
        "signals": on["signals"],
        "scored": on["scored"],
        "taken": on["taken"],
        "trades": int(on["pnl"].shape[0]),
        "net_pnl": round(float(on["pnl"].sum()), 4),
        "net_pnl_ci95": _ci(_boot_sums(on["pnl"], rng, boot)) if on["pnl"].shape[0] else None,
    }
    diff = _boot_sums(on["pnl"], rng, boot) - _boot_sums(off["pnl"], rng, boot)
    row["difference"] = {
        "net_pnl": round(float(on["pnl"].sum() - off["pnl"].sum()), 4),
        "ci95": _ci(diff),
    }
    pick, pick_boot = _vs_random(on["pnl"], off["pnl"], rng, boot)
    row["selection"] = {
        "mean_trade_off": _r(off["pnl"].mean()) if off["pnl"].shape[0] else None,
        "mean_trade_on": _r(on["pnl"].mean()) if on["pnl"].shape[0] else None,
        "vs_random_same_count": round(pick, 4),
        "ci95": _ci(pick_boot) if off["pnl"].shape[0] else None,
    }
    row["_pnl_on"] = on["pnl"]
    return row


# -- the README table --------------------------------------------------------------------


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, list):
        return f"[{x[0]:+.{nd}f}, {x[1]:+.{nd}f}]"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def markdown(result: dict[str, Any]) -> str:
    """The walk-forward result as the README's Markdown table (one row per window)."""
    head = (
        "| held-out window | symbol | train rows (positives) | test signals labelled"
        " (positives) | AUC [95 % CI] | precision @thr (selected) | replay signals off | scored"
        " / taken on | trades off / on | net PnL off [95 % CI] | net PnL on [95 % CI] |"
        " on - off [95 % CI] | on - random same count [95 % CI] |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in result["windows"]:
        sym = ", ".join(r["symbols"]) + (" (never trained on)" if r["held_out_symbol"] else "")
        te, off = r["test"], r["replay_off"]
        on = r.get("replay_on")
        trained = r["model"]["trained"]
        auc_cell = f"{_f(te.get('auc'))} {_f(te.get('auc_ci95'))}" if trained else "no model"
        prec = f"{_f(te.get('precision'))} ({te.get('selected')})" if trained else "n/a"
        if on:
            decided = f"{on['scored']} / {on['taken']}"
            pnl_on = f"{_f(on['net_pnl'])} {_f(on['net_pnl_ci95'])}"
            diff = f"{_f(r['difference']['net_pnl'])} {_f(r['difference']['ci95'])}"
            sel = r["selection"]
            pick = f"{_f(sel['vs_random_same_count'])} {_f(sel['ci95'])}"
        else:
            decided = pnl_on = diff = pick = "n/a"
        cells = [
            r["window"],
            sym,
            f"{r['train']['rows']} ({r['train']['positives']})",
            f"{te['labelled']} ({te['positives']})",
            auc_cell,
            prec,
            str(off["signals"]),
            decided,
            f"{off['trades']} / {on['trades'] if on else 'n/a'}",
            f"{_f(off['net_pnl'])} {_f(off['net_pnl_ci95'])}",
            pnl_on,
            diff,
            pick,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    p = result["pooled"]
    if p["windows_with_a_model"]:
        pooled = [
            f"{p['trades_off']} / {p['trades_on']}",
            _f(p["net_pnl_off"]),
            _f(p["net_pnl_on"]),
            f"{_f(p['difference'])} {_f(p['difference_ci95'])}",
            f"{_f(p['vs_random_same_count'])} {_f(p['vs_random_ci95'])}",
        ]
    else:
        pooled = ["n/a"] * 5  # no window had a model: there is no filter to judge
    label = f"**pooled** ({p['windows_with_a_model']} windows with a model)"
    lines.append("| " + " | ".join([label, *[""] * 7, *pooled]) + " |")
    return "\n".join(lines) + "\n"
