"""ONNX inference for the entry filter: checked loading, 1-row iobinding, batches, ensembles.

A model is a ``.onnx`` file plus a JSON sidecar beside it (same stem). :meth:`OnnxModel.load`
refuses a model whose sidecar does not describe the engine's :class:`FeatureSpec` (feature
names and order, input dtype, spec version) or whose ``.onnx`` bytes do not hash to the
sidecar's ``onnx_sha256``, raising :class:`ModelError` naming the file and the field.
onnxruntime errors are translated to :class:`ModelError` here, once.

Single-row scoring copies the row into a pre-bound input buffer and calls
``run_with_iobinding`` without ``RunOptions`` (which costs ~40 us a call here); outputs land
in pre-bound numpy buffers, so a call allocates nothing on the Python side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .._errors import EngineError
from ._features import FeatureSpec


class ModelError(EngineError):
    """A model cannot be used: missing or mismatched sidecar, bad hash, onnxruntime failure.

    Attributes:
        path: the file concerned.
        field: the sidecar field (``"feature_names"``, ``"onnx_sha256"``, ...) or ``""``.
    """

    def __init__(self, path: Path | str, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        where = f"{path}: {field}" if field else str(path)
        super().__init__(f"{where}: {problem}")


def sidecar_path(onnx_path: Path) -> Path:
    """The sidecar of a model file: same stem, ``.json``."""
    return onnx_path.with_suffix(".json")


def read_sidecar(onnx_path: Path) -> dict[str, Any]:
    """The sidecar's JSON.

    Raises:
        ModelError: missing or not a JSON object.
    """
    path = sidecar_path(onnx_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(path, "", "no sidecar beside the model") from None
    except (OSError, ValueError) as exc:
        raise ModelError(path, "", f"unreadable sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(path, "", "the sidecar is not a JSON object")
    return data


def check_sidecar(onnx_path: Path, blob: bytes, sidecar: dict[str, Any], spec: FeatureSpec) -> None:
    """Refuse a model that does not match ``spec`` or whose bytes do not match the sidecar.

    Raises:
        ModelError: naming the sidecar file and the first mismatching field.
    """
    side = sidecar_path(onnx_path)
    expected: dict[str, Any] = {
        "feature_names": list(spec.names),
        "input_dtype": spec.dtype,
        "feature_spec_version": spec.version,
    }
    for field, want in expected.items():
        got = sidecar.get(field)
        if got != want:
            if field == "feature_names" and isinstance(got, list):
                diff = next(
                    (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                    min(len(got), len(want)),
                )
                problem = (
                    f"does not match the engine's feature spec at column {diff} "
                    f"(model {got[diff] if diff < len(got) else '<end>'!r}, "
                    f"engine {want[diff] if diff < len(want) else '<end>'!r})"
                )
            else:
                problem = f"is {got!r}, the engine expects {want!r}"
            raise ModelError(side, field, problem)
    digest = hashlib.sha256(blob).hexdigest()
    if sidecar.get("onnx_sha256") != digest:
        raise ModelError(
            side,
            "onnx_sha256",
            f"is {sidecar.get('onnx_sha256')!r} but {onnx_path.name} hashes to {digest}",
        )


_M = TypeVar("_M")


def model_from_bytes(
    cls: Callable[[Path, bytes, dict[str, Any], FeatureSpec, int], _M],
    blob: bytes,
    sidecar: dict[str, Any],
    spec: FeatureSpec,
    threads: int,
    name: str,
) -> _M:
    """``cls`` (a model class) from memory, checked as files are (:func:`check_sidecar`):
    what :meth:`OnnxModel.from_bytes` and :meth:`SequenceModel.from_bytes` do.

    Raises:
        ModelError: sidecar mismatch, hash mismatch, or onnxruntime refuses it.
    """
    path = Path(name)
    check_sidecar(path, blob, sidecar, spec)
    return cls(path, blob, dict(sidecar), spec, threads)


def open_session(path: Path, blob: bytes, threads: int) -> Any:
    """An onnxruntime CPU session of the model ``blob`` (read from ``path``):
    sequential, ``threads`` intra-op threads, one inter-op thread.

    Raises:
        ModelError: onnxruntime cannot load it.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (non-exported) types
        raise ModelError(path, "", f"onnxruntime cannot load it ({exc})") from exc


class OnnxModel:
    """One checked model: P(entry pays) for feature rows.

    Build with :meth:`load` or :meth:`from_bytes`. Not thread-safe: :meth:`predict_one`
    reuses its buffers.

    Attributes:
        path: the file (or the name given to :meth:`from_bytes`).
        blob: the ONNX bytes (what :func:`~engine.models.retrain` compares against).
        sidecar: the sidecar's JSON object.
        spec: the feature spec it was checked against.
        window: 0: a row model (a :class:`~engine.models.SequenceModel` has its window).
        book_levels: 0: reads no book levels.
    """

    window = 0
    book_levels = 0

    def __init__(
        self, path: Path, blob: bytes, sidecar: dict[str, Any], spec: FeatureSpec, threads: int
    ) -> None:
        self.path = path
        self.blob = blob
        self.sidecar = sidecar
        self.spec = spec
        self.session = open_session(path, blob, threads)
        self._input = sidecar.get("input_name", "input")
        self._output = sidecar.get("output_name", "probabilities")
        self._col = int(sidecar.get("positive_class_column", 1))
        names = [o.name for o in self.session.get_outputs()]
        if self._output not in names:
            raise ModelError(sidecar_path(path), "output_name", f"not among outputs {names}")
        n = len(spec.names)
        dtype = np.dtype(spec.dtype)
        self._x = np.zeros((1, n), dtype=dtype)
        self._binding = self.session.io_binding()
        self._binding.bind_cpu_input(self._input, self._x)
        self._out_bufs: list[np.ndarray] = []
        for o in self.session.get_outputs():
            shape = [1 if not isinstance(d, int) else d for d in o.shape]
            if o.name == self._output:
                shape = [1, 2]
            dt = np.int64 if "int64" in o.type else np.float32
            buf = np.zeros(shape, dtype=dt)
            self._binding.bind_output(o.name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
            self._out_bufs.append(buf)
            if o.name == self._output:
                self._proba = buf

    @classmethod
    def load(cls, path: Path | str, spec: FeatureSpec, *, threads: int = 1) -> OnnxModel:
        """Load ``path`` and its sidecar, checked against ``spec``.

        Args:
            path: the ``.onnx`` file.
            spec: the engine's feature spec the model must have been trained on.
            threads: onnxruntime intra-op threads.

        Raises:
            ModelError: missing file, sidecar mismatch, hash mismatch, or onnxruntime refuses it.
        """
        path = Path(path)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise ModelError(path, "", f"cannot read the model ({exc})") from exc
        sidecar = read_sidecar(path)
        check_sidecar(path, blob, sidecar, spec)
        return cls(path, blob, sidecar, spec, threads)

    @classmethod
    def from_bytes(
        cls,
        blob: bytes,
        sidecar: dict[str, Any],
        spec: FeatureSpec,
        *,
        threads: int = 1,
        name: str = "<retrained>.onnx",
    ) -> OnnxModel:
        """A model from memory (e.g. :attr:`RetrainResult.blob` and its sidecar), checked
        against ``spec`` as :meth:`load` checks files.

        Args:
            blob: the ONNX bytes.
            sidecar: the sidecar's JSON object.
            spec: the engine's feature spec.
            threads: onnxruntime intra-op threads.
            name: a file name to report in errors (nothing is read or written).

        Raises:
            ModelError: sidecar mismatch, hash mismatch, or onnxruntime refuses it.
        """
        return model_from_bytes(cls, blob, sidecar, spec, threads, name)

    @property
    def name(self) -> str:
        """The model's name (sidecar ``model``, else the file stem)."""
        return str(self.sidecar.get("model", self.path.stem))

    def predict_one(self, row: np.ndarray) -> float:
        """P(1) of one feature row, through the pre-bound buffers (``run_with_iobinding``)."""
        self._x[0] = row
        self.session.run_with_iobinding(self._binding)
        return float(self._proba[0, self._col])

    def predict_one_run(self, row: np.ndarray) -> float:
        """P(1) of one row through plain ``session.run`` (the reference for iobinding)."""
        x = np.asarray(row, dtype=self._x.dtype).reshape(1, -1)
        return float(self.session.run([self._output], {self._input: x})[0][0, self._col])

    def predict_batch(self, rows: np.ndarray) -> np.ndarray:
        """P(1) of each row of a ``(n, n_features)`` array."""
        x = np.ascontiguousarray(rows, dtype=self._x.dtype)
        if x.shape[0] == 0:
            return np.zeros(0)
        return self.session.run([self._output], {self._input: x})[0][:, self._col].astype(
            np.float64
        )


class Ensemble:
    """A weighted average of models' probabilities (weights normalized to sum to 1).

    Members may be row models (:class:`OnnxModel`) or sequence models
    (:class:`~engine.models.SequenceModel`); with any of the latter, :attr:`window` is the
    longest window and the callers pass each request's ordered window (each sequence member
    reads its last ``window`` rows); :attr:`book_levels` is the most book levels a member
    reads, and the callers pass that many (each member reads its first ``book_levels``).

    Raises:
        ValueError: no models, a weight count mismatch, negative weights or models trained
            on different feature specs.
    """

    def __init__(self, models: Sequence[Any], weights: Sequence[float] | None = None):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        w = np.ones(len(models)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(models),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("one non-negative weight per model, not all zero")
        if any(m.spec != models[0].spec for m in models):
            raise ValueError("ensemble members must share one feature spec")
        self.models = tuple(models)
        self.weights = w / w.sum()
        self.spec = models[0].spec
        self.window = max(int(m.window) for m in self.models)
        self.book_levels = max(int(m.book_levels) for m in self.models)

    def predict_one(
        self, row: np.ndarray, window: np.ndarray | None = None, book: np.ndarray | None = None
    ) -> float:
        """Weighted P(1) of one row (``window``: its ordered window, for sequence members;
        ``book``: ``(K, 4)`` levels, for members that read the book)."""
        total = 0.0
        for m, w in zip(self.models, self.weights, strict=True):
            total += w * (m.predict_window(window, book) if m.window else m.predict_one(row))
        return float(total)

    def predict_batch(
        self,
        rows: np.ndarray,
        windows: np.ndarray | None = None,
        books: np.ndarray | None = None,
    ) -> np.ndarray:
        """Weighted P(1) of each row (``windows``: ``(n, window, F)``, for sequence members;
        ``books``: ``(n, K, 4)``, for members that read the book)."""
        return sum(
            w * (m.predict_windows(windows, books) if m.window else m.predict_batch(rows))
            for m, w in zip(self.models, self.weights, strict=True)
        )
