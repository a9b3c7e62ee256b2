"""Sequence models for the entry filter: per-symbol ring buffers and windowed ONNX scoring.

A sequence model (``tools/train/_deep.py``: 1-D CNN, LSTM, Transformer encoder, and a
multi-modal model that also reads book levels) scores the ordered window of a symbol's last
``window`` feature rows instead of one row. Its sidecar is a tabular model's plus::

    "input": "sequence", "window": N, "book_levels": K   (K = 0: no book input)

and its graph takes ``input`` of shape ``(batch, N, n_features)`` (oldest row first; NaN
allowed: the graph maps it to 0 after its own standardisation) and, when ``K > 0``,
``book`` of shape ``(batch, K, 4)`` (bid px, bid qty, ask px, ask qty, best level first).
Rows the ring has not seen yet are zeros, as in training.

:class:`SequenceRing` keeps one symbol's rows in a preallocated ``(2N, n_features)`` buffer,
each row written twice (at ``i`` and ``i + N``) so the ordered window is always the contiguous
slice ``[pos, pos + N)``: pushing a row and reading the window allocate no array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._features import FeatureSpec
from ._onnx import (
    ModelError,
    OnnxModel,
    check_sidecar,
    open_session,
    read_sidecar,
    sidecar_path,
)

#: Book levels a multi-modal model may read (the replay tape keeps 10).
MAX_BOOK_LEVELS = 10


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
        path = Path(name)
        check_sidecar(path, blob, sidecar, spec)
        return cls(path, blob, dict(sidecar), spec, threads)

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
