"""Sequence models for the entry filter: per-symbol ring buffers and windowed ONNX scoring.

A sequence model (``tools/train/_deep.py``: 1-D CNN, LSTM, Transformer encoder, and a
multi-modal model that also reads book levels) scores the ordered window of a symbol's last
``window`` feature rows instead of one row. Its sidecar is a tabular model's plus::

    "input": "sequence", "window": N, "book_levels": K   (K = 0: no book input)

and its graph takes ``input`` of shape ``(batch, N, n_features)`` (oldest row first; NaN
allowed: the graph maps it to 0 after its own standardisation) and, when ``K > 0``,
``book`` of shape ``(batch, K, 4)`` (bid px, bid qty, ask px, ask qty, best level first).
Rows the ring has not seen yet are zeros, as in training.

**A window is the last N ticks' rows.** :class:`TickWindows` wraps a symbol's
:class:`~engine.models.FeatureBuilder` and pushes the feature row after every tick (QUOTE or
TRADE row: the events that move a feature) into a :class:`SequenceRing`; at a signal the
window is the last N ticks' rows, the signal's own tick last, ``side`` set to the signal's
on the rows seen. Only the last N ticks of each range it is fed can be in a later window, so
the ticks before them go through the builder in one compiled call and only those N one at a
time: the same rows as pushing every tick, whatever the range boundaries (the symbol actor's
chunks, a signal's tick). The engine (:class:`~engine.actors._filter.EntryFilter`) and
training (:func:`windows_at`, ``tools.train deep``) run this same class.

:class:`SequenceRing` keeps one symbol's rows in a preallocated ``(2N, n_features)`` buffer,
each row written twice (at ``i`` and ``i + N``) so the ordered window is always the contiguous
slice ``[pos, pos + N)``: pushing a row and reading the window allocate no array.

**Book levels** (``book_levels`` K > 0, the multi-modal model): the top K levels of the
symbol's local book at the signal's tick (:func:`book_at`: the :class:`~engine.messages.Ticks`
book columns, which replay and live carry when the strategy or the model reads the book).
Where there is none at that tick (the book not synced yet, or data without depth updates)
the levels are NaN, which the graph maps to 0, exactly as training builds them; the filter
counts such signals (``book_missing`` in the run summary).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..messages import EventKind, Ticks
from ._features import FeatureBuilder, FeatureSpec
from ._onnx import (
    ModelError,
    OnnxModel,
    check_sidecar,
    model_from_bytes,
    open_session,
    read_sidecar,
    sidecar_path,
)

#: Book levels a multi-modal model may read (the replay tape keeps 10).
MAX_BOOK_LEVELS = 10
_QUOTE = int(EventKind.QUOTE)
_TRADE = int(EventKind.TRADE)


class SequenceRing:
    """The last ``window`` feature rows of one symbol, oldest first, without allocating.

    Args:
        window: rows kept (N >= 1).
        width: features per row.
        dtype: the feature spec's dtype.
    """

    def __init__(self, window: int, width: int, dtype: str | np.dtype = "float32") -> None:
        if window < 1 or width < 1:
            raise ValueError("a ring needs window >= 1 and width >= 1")
        self.window = window
        self._buf = np.zeros((2 * window, width), dtype=np.dtype(dtype))
        self._pos = 0  # index of the oldest row of the window
        self.count = 0  # rows pushed so far

    def push(self, row: np.ndarray) -> None:
        """Append one row (the oldest falls out once ``window`` rows are held)."""
        n = self.window
        i = self._pos
        self._buf[i] = row
        self._buf[i + n] = row
        self._pos = i + 1 if i + 1 < n else 0
        self.count += 1

    def view(self) -> np.ndarray:
        """The ordered window ``(window, width)``, oldest first: a view, valid until the next
        :meth:`push` (copy it to keep it)."""
        return self._buf[self._pos : self._pos + self.window]

    def copy_into(self, out: np.ndarray) -> None:
        """Write the ordered window into ``out`` (its last ``out.shape[0]`` rows if shorter)."""
        k = out.shape[0]
        np.copyto(out, self._buf[self._pos + self.window - k : self._pos + self.window])


class TickWindows:
    """A symbol's feature rows tick by tick: the ordered window of its last ``window`` ticks.

    Feed it the ranges a :class:`~engine.models.FeatureBuilder` would be fed
    (:meth:`on_ticks`); it feeds the builder and pushes a row after each QUOTE or TRADE
    row among the last ``window`` of each range (the only ones a later window can hold).
    Nothing is allocated per tick (one scratch row, the ring).

    Args:
        builder: the symbol's feature builder (this object feeds it).
        window: ticks per window (N >= 1).
    """

    def __init__(self, builder: FeatureBuilder, window: int) -> None:
        spec = builder.spec
        self.builder = builder
        self.window = window
        self.ring = SequenceRing(window, len(spec.names), spec.dtype)
        self._row = np.zeros(len(spec.names), dtype=np.dtype(spec.dtype))
        self._side_at = spec.names.index("side") if "side" in spec.names else -1

    def on_ticks(self, ticks: Ticks, start: int, stop: int) -> None:
        """Consume rows ``[start, stop)`` of ``ticks`` (as :meth:`FeatureBuilder.on_ticks`)."""
        stop = min(stop, len(ticks))
        if start >= stop:
            return
        kind = ticks.kind
        first, seen = stop, 0
        while first > start and seen < self.window:
            first -= 1
            k = kind[first]
            if k in (_QUOTE, _TRADE):
                seen += 1
        b = self.builder
        b.on_ticks(ticks, start, first)  # no later window holds these ticks' rows
        b._catch_up()  # a background compile: wait for it here (rows are needed now)
        # The kernel's arguments once per range; one compiled call per tick.
        args = b._consume_args(ticks, first, stop)[:-2]
        consume = b._k._consume_ticks
        row, ring = self._row, self.ring
        for i in range(first, stop):
            if kind[i] in (_QUOTE, _TRADE):  # the kernel ignores every other kind
                consume(*args, i, i + 1)
                b.row(0.0, row)
                ring.push(row)

    def window_into(self, out: np.ndarray, side: float) -> None:
        """The window as of the last tick consumed, into ``out`` ``(window, F)``: zeros for
        ticks not seen yet, ``side`` on the rows seen (the model answers for this entry)."""
        self.ring.copy_into(out)
        if self._side_at >= 0:
            seen = min(self.ring.count, self.window)
            out[self.window - seen :, self._side_at] = side


def book_at(ticks: Ticks, index: int, out: np.ndarray) -> bool:
    """The top ``out.shape[0]`` book levels at row ``index`` of ``ticks`` into ``out``
    ``(K, 4)`` (bid px, bid qty, ask px, ask qty, best first); NaN and False where the batch
    has no synced book at that row."""
    b = int(ticks.book_row[index]) if 0 <= index < len(ticks) else -1
    k = out.shape[0]
    if b < 0 or ticks.book_bid_px.shape[1] < k:
        out.fill(np.nan)
        return False
    out[:, 0] = ticks.book_bid_px[b, :k]
    out[:, 1] = ticks.book_bid_qty[b, :k]
    out[:, 2] = ticks.book_ask_px[b, :k]
    out[:, 3] = ticks.book_ask_qty[b, :k]
    return True


def windows_at(
    ticks: Ticks,
    at: Sequence[tuple[int, float]],
    spec: FeatureSpec,
    window: int,
    book_levels: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Training's windows: at each ``(row_index, side)`` (ascending), the window the engine's
    filter scores at a signal on that row, and its book levels.

    One :class:`TickWindows` consumes ``ticks`` up to and including each index, as the
    symbol actor does at a signal (the engine code, not a copy of it).

    Returns:
        ``(n, window, F)`` windows and ``(n, book_levels, 4)`` book levels (NaN: no book).
    """
    builder = FeatureBuilder(spec)
    tw = TickWindows(builder, window)
    dtype = np.dtype(spec.dtype)
    windows = np.zeros((len(at), window, len(spec.names)), dtype=dtype)
    books = np.full((len(at), book_levels, 4), np.nan, dtype=dtype)
    pos = 0
    for j, (i, side) in enumerate(at):
        if i < pos - 1 or not 0 <= i < len(ticks):
            raise IndexError(f"row {i}: indices must ascend within the {len(ticks)} ticks")
        tw.on_ticks(ticks, pos, i + 1)
        pos = max(pos, i + 1)
        tw.window_into(windows[j], side)
        if book_levels:
            book_at(ticks, i, books[j])
    return windows, books


def _int_field(sidecar: dict[str, Any], path: Path, field: str, lo: int, hi: int) -> int:
    value = sidecar.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ModelError(
            sidecar_path(path), field, f"is {value!r}, expected an int in [{lo}, {hi}]"
        )
    return value


class SequenceModel:
    """One checked sequence model: P(entry pays) for ordered windows of feature rows.

    Built by :func:`load_model` (or :meth:`from_bytes`) when the sidecar says
    ``"input": "sequence"``. Single-window scoring copies the window into a pre-bound
    ``(1, N, F)`` buffer and runs with iobinding, like :meth:`OnnxModel.predict_one`.

    Attributes:
        window: rows per window (N).
        book_levels: book levels the model reads (0: none).
    """

    def __init__(
        self, path: Path, blob: bytes, sidecar: dict[str, Any], spec: FeatureSpec, threads: int
    ) -> None:

        self.path = path
        self.blob = blob
        self.sidecar = sidecar
        self.spec = spec
        self.window = _int_field(sidecar, path, "window", 1, 4096)
        self.book_levels = _int_field(sidecar, path, "book_levels", 0, MAX_BOOK_LEVELS)
        self.session = open_session(path, blob, threads)
        self._input = sidecar.get("input_name", "input")
        self._book_input = sidecar.get("book_input_name", "book")
        self._output = sidecar.get("output_name", "probabilities")
        self._col = int(sidecar.get("positive_class_column", 1))
        inputs = {i.name for i in self.session.get_inputs()}
        want = {self._input} | ({self._book_input} if self.book_levels else set())
        if inputs != want:
            raise ModelError(
                sidecar_path(path), "input_name", f"graph inputs {sorted(inputs)} != {sorted(want)}"
            )
        if self._output not in [o.name for o in self.session.get_outputs()]:
            raise ModelError(sidecar_path(path), "output_name", "not among the graph's outputs")
        dtype = np.dtype(spec.dtype)
        self._x = np.zeros((1, self.window, len(spec.names)), dtype=dtype)
        self._book = np.zeros((1, max(self.book_levels, 1), 4), dtype=dtype)
        self._proba = np.zeros((1, 2), dtype=np.float32)
        self._binding = self.session.io_binding()
        self._binding.bind_cpu_input(self._input, self._x)
        if self.book_levels:
            self._binding.bind_cpu_input(self._book_input, self._book)
        self._binding.bind_output(
            self._output,
            "cpu",
            0,
            self._proba.dtype,
            list(self._proba.shape),
            self._proba.ctypes.data,
        )

    @classmethod
    def from_bytes(
        cls,
        blob: bytes,
        sidecar: dict[str, Any],
        spec: FeatureSpec,
        *,
        threads: int = 1,
        name: str = "<sequence>.onnx",
    ) -> SequenceModel:
        """A sequence model from memory, checked as :func:`load_model` checks files."""
        return model_from_bytes(cls, blob, sidecar, spec, threads, name)

    @property
    def name(self) -> str:
        """The model's name (sidecar ``model``, else the file stem)."""
        return str(self.sidecar.get("model", self.path.stem))

    def predict_window(self, window: np.ndarray, book: np.ndarray | None = None) -> float:
        """P(1) of one ordered window ``(>= N, F)`` (its last N rows are used), through the
        pre-bound buffers; ``book`` ``(>= K, 4)`` when the model reads the book."""
        self._x[0] = window[window.shape[0] - self.window :]
        if self.book_levels:
            if book is None:
                raise ModelError(self.path, "book_levels", "the model needs book levels")
            self._book[0] = book[: self.book_levels]
        self.session.run_with_iobinding(self._binding)
        return float(self._proba[0, self._col])

    def predict_windows(self, windows: np.ndarray, books: np.ndarray | None = None) -> np.ndarray:
        """P(1) of each window of a ``(B, >= N, F)`` array (and ``(B, >= K, 4)`` books)."""
        x = np.ascontiguousarray(windows[:, windows.shape[1] - self.window :], dtype=self._x.dtype)
        if x.shape[0] == 0:
            return np.zeros(0)
        feeds = {self._input: x}
        if self.book_levels:
            if books is None:
                raise ModelError(self.path, "book_levels", "the model needs book levels")
            feeds[self._book_input] = np.ascontiguousarray(
                books[:, : self.book_levels], dtype=self._x.dtype
            )
        out = self.session.run([self._output], feeds)[0]
        return out[:, self._col].astype(np.float64)

    def predict_one(self, row: np.ndarray, window: np.ndarray | None = None) -> float:
        """P(1) given the symbol's window (``row`` alone is no input for a sequence model).

        Raises:
            ModelError: no window given.
        """
        if window is None:
            raise ModelError(self.path, "input", "a sequence model scores windows, not rows")
        return self.predict_window(window)


def load_model(
    path: Path | str, spec: FeatureSpec, *, threads: int = 1
) -> OnnxModel | SequenceModel:
    """Load ``path`` as a row model or, when its sidecar says ``"input": "sequence"``, a
    :class:`SequenceModel`; both checked against ``spec`` and the sidecar's hash.

    Raises:
        ModelError: missing file, sidecar mismatch, hash mismatch, or onnxruntime refuses it.
    """
    path = Path(path)
    sidecar = read_sidecar(path)
    kind = sidecar.get("input", "row")
    if kind == "row":
        return OnnxModel.load(path, spec, threads=threads)
    if kind != "sequence":
        raise ModelError(sidecar_path(path), "input", f"is {kind!r}, expected 'row' or 'sequence'")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(path, "", f"cannot read the model ({exc})") from exc
    check_sidecar(path, blob, sidecar, spec)
    return SequenceModel(path, blob, sidecar, spec, threads)
