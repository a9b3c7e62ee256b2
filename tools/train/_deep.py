"""``python -m tools.train deep``: sequence models (1-D CNN, LSTM, Transformer, multi-modal).

Needs the ``dl`` extra (PyTorch CPU): ``pip install -e '.[dl]'``.

**Data.** The engine's own entry signals and labels (:func:`driver_signals`: a take-all replay
of each continuous capture, labelled by the engine's triple barrier at ``venue.taker_fee_bps``
a leg), grouped into captures and time windows exactly as :mod:`tools.train._walkforward`
does. A signal's *sequence* is the ordered window of its symbol's last ``window`` ticks'
feature rows (QUOTE and TRADE rows of the replay's own columns), its own tick last,
zero-padded at the start: built by :func:`engine.models.windows_at`, i.e. the
:class:`~engine.models.TickWindows` the engine's filter keeps per symbol, so training and
serving see the same windows (:func:`sequences_of` checks each ends in the row the engine
journaled). The multi-modal model also reads the top ``book_levels`` levels of the replay's
rebuilt book (``load_tape(book=True)``) at the signal's tick, as the engine serves them.

**Models** (tiny: a few hundred labelled signals): ``cnn`` (two 1-D convolutions, global
average pool), ``lstm`` (one layer), ``transformer`` (one encoder layer, 2 heads, learned
positions, written out with plain ops so the legacy exporter handles it) and ``multimodal``
(the LSTM's summary concatenated with an MLP over the book). Each standardises its inputs
inside the graph (train-set means and deviations as constants, NaN -> 0), so serving feeds raw
rows. Adam, a fixed number of epochs, class-weighted BCE, seeded.

**Evaluation.** Walk-forward: for each window but the first, fit on the labelled signals of
every earlier window of the trained symbols (purged: a label decided ``embargo`` before the
window starts), test on the window; ETHUSDT is held out by default. Per window and model: AUC,
precision at the threshold and how many it selects, next to the GBDT of the shipped ensemble
fitted on the same rows. No replay PnL here (``walkforward`` does that for row models).

**Export.** ``--out DIR`` fits each kind on all the labelled signals of the trained symbols and
writes ``entry_filter_<kind>.onnx`` (opset :data:`OPSET`, IR the pinned onnxruntime loads)
with a sidecar like the row models' plus ``input: "sequence"``, ``window`` and
``book_levels``; parity PyTorch vs onnxruntime is checked (1e-5) before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import engine
from engine.feeds import CaptureLimits, CaptureStats, expand_paths, load_tape, open_tick_store
from engine.models import default_feature_spec

from ._driver_data import DriverSignals, driver_signals

#: ONNX opset of the exports (the row models' too; onnxruntime >= 1.20 runs it).
OPSET = 17
#: ONNX IR version of the exports (onnxruntime 1.20 loads up to 10).
IR_VERSION = 8
DEEP_KINDS = ("cnn", "lstm", "transformer", "multimodal")
PARITY_TOL = 1e-5
_NS_PER_MS = 1_000_000


class DeepParityError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than :data:`PARITY_TOL`."""


# -- data -----------------------------------------------------------------------------------


@attrs.frozen
class SequenceData:
    """Signals with their windows (and book levels), in journal order per capture."""

    windows: np.ndarray  # (n, window, F) float32, NaN kept
    books: np.ndarray  # (n, levels, 4) float32: bid px, bid qty, ask px, ask qty
    label: np.ndarray  # (n,) int8, -1 undecided
    ts: np.ndarray  # (n,) int64
    ts_resolved: np.ndarray  # (n,) int64
    symbol: tuple[str, ...]
    capture: np.ndarray  # (n,) int index of the capture


class WindowParityError(RuntimeError):
    """Training's window of a signal does not end in the row the engine journaled for it."""


def sequences_of(
    config: engine.Config, files: Sequence[Path], sig: DriverSignals, window: int, levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each signal's window of its symbol's last ``window`` ticks' rows (itself last) and the
    top ``levels`` book levels at its tick (NaN: no book there).

    The replay's own columns (:func:`load_tape`, book included, ``data.start``/``end``
    applied), each signal placed at the first quote of its time
    (:func:`~engine.models._features.signal_rows`, as ``tools.train`` places rows) and the
    windows built by :func:`engine.models.windows_at`: the engine's
    :class:`~engine.models.TickWindows`, the class the filter runs. Checked: every window's
    last row is the row the engine journaled for that signal.

    Raises:
        WindowParityError: a window's last row differs from the journaled one.
    """
    from engine._replay import _window
    from engine.feeds._tape import restrict_tape
    from engine.models import windows_at
    from engine.models._features import signal_rows

    spec = default_feature_spec()
    n = len(sig.symbol)
    windows = np.zeros((n, window, len(spec.names)), dtype=np.float32)
    books = np.full((n, levels, 4), np.nan, dtype=np.float32)
    symbols = tuple(sorted(set(sig.symbol)))
    if not symbols:
        return windows, books
    store = open_tick_store(
        config.data.tick_store, base_dir=Path(config.base_dir), where="data.tick_store"
    )
    limits = CaptureLimits(
        max_receive_skew_ms=config.data.max_receive_skew_ms,
        max_time_jump_ms=config.data.max_time_jump_ms,
    )
    tape = load_tape(
        list(files), symbols, limits=limits, stats=CaptureStats(), store=store, book=True
    )
    tape = restrict_tape(tape, *_window(config))
    for s in symbols:
        ticks = tape.ticks[s]
        idx = np.flatnonzero(np.asarray(sig.symbol) == s)
        rows = signal_rows(ticks, sig.ts[idx])
        order = np.argsort(rows, kind="stable")
        at = [(int(rows[k]), float(sig.side[idx[k]])) for k in order]
        w, b = windows_at(ticks, at, spec, window, levels)
        windows[idx[order]] = w
        books[idx[order]] = b
    last, journaled = windows[:, -1], sig.X
    same = (last == journaled) | (np.isnan(last) & np.isnan(journaled))
    bad = np.flatnonzero(~same.all(axis=1))
    if bad.size:
        raise WindowParityError(
            f"{bad.size} of {n} windows do not end in the engine's journaled row "
            f"(first: {sig.correlation_id[bad[0]]})"
        )
    return windows, books


# -- models ---------------------------------------------------------------------------------


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # the dl extra
        raise engine.ConfigError(
            "tools.train deep", "", "needs PyTorch, the dl extra: pip install -e '.[dl]'"
        ) from exc
    return torch


def build(kind: str, width: int, window: int, levels: int, mean: np.ndarray, std: np.ndarray):
    """A fresh, untrained model of ``kind`` (standardisation constants baked in)."""
    torch = _torch()
    nn = torch.nn

    class _Norm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("inv", torch.tensor(1.0 / std, dtype=torch.float32))

        def forward(self, x):
            z = (x - self.mean) * self.inv
            return torch.where(torch.isnan(z), torch.zeros_like(z), z)

    class _Head(nn.Module):
        """Logit -> (1 - p, p), the row models' ``probabilities`` layout."""

        def forward(self, logit):
            p = torch.sigmoid(logit)
            return torch.cat([1.0 - p, p], dim=1)

    class CNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = _Norm()
            self.conv = nn.Sequential(
                nn.Conv1d(width, 16, 3, padding=1), nn.ReLU(),
                nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(),
            )  # fmt: skip
            self.out = nn.Linear(16, 1)
            self.head = _Head()

        def forward(self, x):
            h = self.conv(self.norm(x).transpose(1, 2)).mean(dim=2)
            return self.head(self.out(h))

    class LSTM(nn.Module):
        def __init__(self, book: int = 0) -> None:
            super().__init__()
            self.norm = _Norm()
            self.lstm = nn.LSTM(width, 16, batch_first=True)
            self.book = book
            if book:
                self.book_mlp = nn.Sequential(nn.Linear(book * 4, 16), nn.ReLU())
            self.out = nn.Linear(32 if book else 16, 1)
            self.head = _Head()

        def summary(self, x):
            h, _ = self.lstm(self.norm(x))
            return h[:, -1]

        def forward(self, x):
            return self.head(self.out(self.summary(x)))

    class MultiModal(LSTM):
        """The LSTM's summary and an MLP over the book: prices in bps from the mid,
        quantities log1p, missing levels 0."""

        def forward(self, x, book):
            mid = 0.5 * (book[:, 0:1, 0] + book[:, 0:1, 2])  # (B, 1)
            px = (book[:, :, 0::2] / mid.unsqueeze(2) - 1.0) * 1e4
            qty = torch.log1p(book[:, :, 1::2])
            b = torch.cat([px, qty], dim=2).reshape(book.shape[0], -1)
            b = torch.where(torch.isnan(b), torch.zeros_like(b), b)
            h = torch.cat([self.summary(x), self.book_mlp(b)], dim=1)
            return self.head(self.out(h))

    class Transformer(nn.Module):
        """One pre-norm encoder layer, 2 heads, written with plain ops."""

        def __init__(self, d: int = 16, heads: int = 2) -> None:
            super().__init__()
            self.norm = _Norm()
            self.inp = nn.Linear(width, d)
            self.pos = nn.Parameter(torch.zeros(1, window, d))
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
            self.out = nn.Linear(d, 1)
            self.head = _Head()
            self.d, self.heads = d, heads

        def forward(self, x):
            bsz = x.shape[0]
            h = self.inp(self.norm(x)) + self.pos
            q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=2)
            dh = self.d // self.heads

            def split(t):
                return t.reshape(bsz, window, self.heads, dh).transpose(1, 2)

            att = torch.softmax(split(q) @ split(k).transpose(2, 3) / dh**0.5, dim=3)
            a = (att @ split(v)).transpose(1, 2).reshape(bsz, window, self.d)
            h = h + self.proj(a)
            h = h + self.ff(self.ln2(h))
            return self.head(self.out(h[:, -1]))

    if kind == "cnn":
        return CNN()
    if kind == "lstm":
        return LSTM()
    if kind == "transformer":
        return Transformer()
    if kind == "multimodal":
        return MultiModal(book=levels)
    raise ValueError(f"unknown deep model kind {kind!r}; expected one of {DEEP_KINDS}")


def _stats(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = windows.reshape(-1, windows.shape[2]).astype(np.float64)
    flat = flat[~np.all(flat == 0, axis=1)]  # padding rows
    mean = np.nan_to_num(np.nanmean(flat, axis=0)) if flat.shape[0] else np.zeros(flat.shape[1])
    std = np.nan_to_num(np.nanstd(flat, axis=0)) if flat.shape[0] else np.ones(flat.shape[1])
    return mean.astype(np.float32), np.where(std > 1e-9, std, 1.0).astype(np.float32)


def fit(
    kind: str,
    windows: np.ndarray,
    books: np.ndarray,
    y: np.ndarray,
    *,
    levels: int,
    seed: int,
    epochs: int = 60,
) -> Any:
    """Train one model of ``kind`` on ``(windows, books, y)``; returns it in eval mode."""
    torch = _torch()
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    mean, std = _stats(windows)
    model = build(kind, windows.shape[2], windows.shape[1], levels, mean, std)
    x = torch.tensor(windows)
    bk = torch.tensor(books[:, :levels])
    t = torch.tensor(y.astype(np.float32)).unsqueeze(1)
    pos = float(y.sum())
    weight = torch.tensor((len(y) - pos) / max(pos, 1.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-3)
    lossf = torch.nn.BCELoss(reduction="none")
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            p = model(x[idx], bk[idx]) if kind == "multimodal" else model(x[idx])
            w = torch.where(t[idx] > 0.5, weight, torch.ones_like(t[idx]))
            loss = (lossf(p[:, 1:2].clamp(1e-6, 1 - 1e-6), t[idx]) * w).mean()
            loss.backward()
            opt.step()
    return model.eval()


def predict(model: Any, kind: str, windows: np.ndarray, books: np.ndarray) -> np.ndarray:
    """PyTorch's P(1) for each window (the parity reference)."""
    torch = _torch()
    with torch.no_grad():
        x = torch.tensor(np.ascontiguousarray(windows, dtype=np.float32))
        if kind == "multimodal":
            b = torch.tensor(np.ascontiguousarray(books, dtype=np.float32))
            return model(x, b)[:, 1].numpy().astype(np.float64)
        return model(x)[:, 1].numpy().astype(np.float64)


def to_onnx(model: Any, kind: str, window: int, width: int, levels: int) -> bytes:
    """The model as ONNX bytes (opset :data:`OPSET`, IR :data:`IR_VERSION`, dynamic batch)."""
    import io

    import onnx

    torch = _torch()
    x = torch.zeros(1, window, width)
    args: tuple[Any, ...] = (x,)
    names = ["input"]
    if kind == "multimodal":
        args = (x, torch.ones(1, levels, 4))
        names.append("book")
    buf = io.BytesIO()
    # The TorchScript exporter (``dynamo=False``): it needs no onnxscript and writes the
    # opset asked for; its deprecation warnings (of itself and of helpers it calls) are
    # expected, and only inside this call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The LSTM's zero initial state is sized from the input's batch dimension in the
        # graph, so any batch works (check_parity runs whole batches to prove it).
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size")
        torch.onnx.export(
            model, args, buf, input_names=names, output_names=["probabilities"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "probabilities"]},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def check_parity(
    model: Any, kind: str, blob: bytes, windows: np.ndarray, books: np.ndarray
) -> dict[str, Any]:
    """Max |PyTorch - onnxruntime| over the given windows.

    Raises:
        DeepParityError: above :data:`PARITY_TOL`.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    feeds = {"input": np.ascontiguousarray(windows, dtype=np.float32)}
    if kind == "multimodal":
        feeds["book"] = np.ascontiguousarray(books, dtype=np.float32)
    got = sess.run(["probabilities"], feeds)[0][:, 1].astype(np.float64)
    want = predict(model, kind, windows, books)
    diff = float(np.max(np.abs(got - want))) if len(want) else 0.0
    if not diff <= PARITY_TOL:
        raise DeepParityError(f"{kind}: max |torch - onnxruntime| = {diff:.3g} > {PARITY_TOL}")
    return {"rows": len(want), "max_abs_diff": diff, "tolerance": PARITY_TOL}


def sidecar(
    *, kind: str, blob: bytes, window: int, levels: int, seed: int, rows: int, positives: int,
    metrics: dict[str, Any], parity: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The sidecar of an exported sequence model (what :func:`engine.models.load_model` reads)."""
    import onnxruntime

    spec = default_feature_spec()
    return {
        "model": f"entry_filter_{kind}",
        "estimator": f"tools.train._deep {kind} (PyTorch)",
        "input": "sequence",
        "window": window,
        "book_levels": levels if kind == "multimodal" else 0,
        "feature_names": list(spec.names),
        "feature_spec_version": spec.version,
        "input_name": "input",
        "book_input_name": "book",
        "input_dtype": spec.dtype,
        "output_name": "probabilities",
        "positive_class_column": 1,
        "opset": {"": OPSET},
        "ir_version": IR_VERSION,
        "onnxruntime": onnxruntime.__version__,
        "seed": seed,
        "training_data": {"rows": rows, "positives": positives},
        "metrics": metrics,
        "parity": parity,
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
    }


# -- evaluation -----------------------------------------------------------------------------


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    if y.min() == y.max():
        return None
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, p)), 4)


def _judge(y: np.ndarray, p: np.ndarray, thr: float) -> dict[str, Any]:
    sel = p >= thr
    return {
        "auc": _auc(y, p),
        "selected": int(sel.sum()),
        "precision": round(float(y[sel].mean()), 4) if sel.any() else None,
    }


def load_signals(
    config: engine.Config, files: Sequence[Path], work: Path, *, window: int, levels: int,
    splits: int,
) -> tuple[SequenceData, list[Any], list[Any]]:  # fmt: skip
    """Take-all replays of every capture: windows, books and labels; captures and windows."""
    from ._walkforward import _windows, captures_of

    captures = captures_of(config, files)
    parts = []
    for c, cap in enumerate(captures):
        sig = driver_signals(config, cap.files, work / f"c{c}")
        w, b = sequences_of(config, cap.files, sig, window, levels)
        parts.append((sig, w, b, c))
    data = SequenceData(
        windows=np.concatenate([p[1] for p in parts]),
        books=np.concatenate([p[2] for p in parts]),
        label=np.concatenate([p[0].label for p in parts]),
        ts=np.concatenate([p[0].ts for p in parts]),
        ts_resolved=np.concatenate([p[0].ts_resolved for p in parts]),
        symbol=tuple(s for p in parts for s in p[0].symbol),
        capture=np.concatenate([np.full(len(p[0].label), p[3]) for p in parts]),
    )
    return data, captures, _windows(captures, splits)


def deep(
    config_path: Path,
    data: Sequence[Path] | None = None,
    *,
    kinds: Sequence[str] = DEEP_KINDS,
    window: int = 16,
    levels: int = 5,
    splits: int = 2,
    holdout_symbols: Sequence[str] = ("ETHUSDT",),
    seed: int = 7,
    epochs: int = 60,
    min_positives: int = 6,
    label_fee_bps: float | None = None,
    out: Path | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Walk-forward scores of the sequence models (and, with ``out``, the exported models).

    Raises:
        engine.ConfigError: the config is invalid or PyTorch is missing.
        engine.DataError: the data cannot be read.
        DeepParityError: an export's onnxruntime outputs differ from PyTorch's.
    """
    from engine.models._training import fit_calibrated

    from ._walkforward import default_data

    _torch()
    t0 = time.perf_counter()
    config = engine.load_config(config_path)
    fee = config.venue.taker_fee_bps if label_fee_bps is None else label_fee_bps
    config = attrs.evolve(config, model=attrs.evolve(config.model, label_fee_bps=fee))
    files = expand_paths([str(p) for p in (data or default_data())])
    thr = config.model.threshold
    embargo = config.strategy.max_hold_ms * _NS_PER_MS
    held = set(holdout_symbols)
    with contextlib.ExitStack() as stack:
        work = work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deep-")))
        d, captures, wins = load_signals(
            config, files, work, window=window, levels=levels, splits=splits
        )
        trained_sym = np.array([s not in held for s in d.symbol], dtype=bool)
        labelled = d.label >= 0
        rows = []
        pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for n, w in enumerate(wins):
            test = labelled & (d.capture == w.capture) & (d.ts >= w.start) & (d.ts < w.end)
            train = labelled & trained_sym & (d.ts_resolved < w.start - embargo)
            row: dict[str, Any] = {
                "window": w.label(captures),
                "test_signals": int(test.sum()),
                "test_positives": int(d.label[test].sum()),
                "train_signals": int(train.sum()),
                "train_positives": int(d.label[train].sum()),
                "symbols": sorted({d.symbol[i] for i in np.flatnonzero(test)}),
            }
            if n == 0 or row["train_positives"] < min_positives or not test.any():
                row["models"] = None
                rows.append(row)
                continue
            y = d.label[train].astype(np.int64)
            yt = d.label[test].astype(np.int64)
            res = {}
            gb = fit_calibrated("gbdt", d.windows[train, -1], y, seed)
            p = gb.predict_proba(d.windows[test, -1])[:, 1]
            res["gbdt (row)"] = _judge(yt, p, thr)
            pooled.setdefault("gbdt (row)", []).append((yt, p))
            for kind in kinds:
                m = fit(kind, d.windows[train], d.books[train], y, levels=levels, seed=seed,
                        epochs=epochs)  # fmt: skip
                p = predict(m, kind, d.windows[test], d.books[test])
                res[kind] = _judge(yt, p, thr)
                pooled.setdefault(kind, []).append((yt, p))
            row["models"] = res
            rows.append(row)
        exported = []
        if out is not None:
            all_train = labelled & trained_sym
            y = d.label[all_train].astype(np.int64)
            out.mkdir(parents=True, exist_ok=True)
            for kind in kinds:
                m = fit(kind, d.windows[all_train], d.books[all_train], y, levels=levels,
                        seed=seed, epochs=epochs)  # fmt: skip
                blob = to_onnx(m, kind, window, d.windows.shape[2], levels)
                sel = np.flatnonzero(labelled)
                par = check_parity(m, kind, blob, d.windows[sel], d.books[sel][:, :levels])
                path = out / f"entry_filter_{kind}.onnx"
                path.write_bytes(blob)
                side = sidecar(
                    kind=kind, blob=blob, window=window, levels=levels, seed=seed,
                    rows=len(y), positives=int(y.sum()), metrics={}, parity=par,
                )  # fmt: skip
                path.with_suffix(".json").write_text(json.dumps(side, indent=2) + "\n")
                exported.append({"path": str(path), "bytes": len(blob), "parity": par})
    return {
        "config": str(config_path),
        "captures": [cap.name for cap in captures],
        "holdout_symbols": sorted(held),
        "window": window,
        "book_levels": levels,
        "epochs": epochs,
        "threshold": thr,
        "label_fee_bps_per_leg": fee,
        "signals": len(d.label),
        "labelled": int(labelled.sum()),
        "windows": rows,
        # every tested window's signals together (scores of different fits: a rough summary)
        "pooled": {
            k: {
                "signals": int(sum(len(y) for y, _ in v)),
                "positives": int(sum(y.sum() for y, _ in v)),
            }
            | _judge(np.concatenate([y for y, _ in v]), np.concatenate([p for _, p in v]), thr)
            for k, v in pooled.items()
        },
        "exported": exported,
        "seconds": round(time.perf_counter() - t0, 1),
    }
