"""The model actor: scores entry signals with the ONNX ensemble and retrains it online.

Per step it reads one :class:`ScoreBatch` from every symbol actor, in the fixed symbol
order, scores the step's requests together (one request through the ensemble's
pre-bound single-row path, several in one batch) and answers each symbol with a
:class:`ScoreReply` in the same step.
Labelled decisions that came with the batches are kept, in step order, as the training
window for online retraining.
With sequence members (``"input": "sequence"`` sidecars: :mod:`engine.models._sequence`)
each request carries its window, the symbol's last ``window`` ticks' rows as of the signal's
tick (kept per symbol, tick by tick, in the symbol's
:class:`~engine.actors._filter.EntryFilter`), and with a multi-modal member its book levels;
a request without them is a protocol error. Online retraining refits row models only (none
when the first member is a sequence model).

Retraining runs on a schedule (market events in replay, market time live) in a worker
thread (:func:`trio.to_thread.run_sync`): fit on the older part of the window, validate
on the most recent slice, export to ONNX, and swap the candidate in only if it beats
the model it replaces on that slice. The answer is applied at a fixed step,
``apply_after_steps`` after the request; in replay the actor waits for the thread there,
so the swap lands at the same step whatever the machine's speed and the journal digest
stays deterministic. Live, a result not ready yet is applied at the first step after
it is (trading never waits for a fit). Every retrain is logged and journaled
(:class:`ModelRetrained`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio
from structlog.typing import FilteringBoundLogger

from .._config import ModelSection
from .._errors import DataError
from ..messages import (
    LabeledDecision,
    ModelRetrained,
    Score,
    ScoreBatch,
    ScoreReply,
    ScoreRequest,
)
from ..models import Ensemble, FeatureSpec, ModelError, OnnxModel, load_model, read_sidecar
from ..models._hmm import HmmParams
from ._symbol import ProtocolError

_SECOND = 1_000_000_000


def ensemble_id(ensemble: Ensemble) -> str:
    """A short, stable name of an ensemble: its members' ONNX hashes and weights."""
    h = hashlib.sha256()
    for model, weight in zip(ensemble.models, ensemble.weights, strict=True):
        h.update(str(model.sidecar.get("onnx_sha256", model.name)).encode())
        h.update(f":{weight:.6f};".encode())
    return h.hexdigest()[:12]


def load_ensemble(
    config: ModelSection, spec: FeatureSpec, resolve: Callable[[str], Any]
) -> Ensemble:
    """The configured ensemble, every member checked against ``spec``.

    A member whose sidecar says ``"input": "sequence"`` is a
    :class:`~engine.models.SequenceModel` (the symbols' filters then keep
    ``ensemble.window`` ticks' rows; with ``ensemble.book_levels`` they also send the
    book levels at the signal's tick, see :func:`model_reads_book`).

    Raises:
        ModelError: a model file or its sidecar is missing, corrupt or does not match.
    """
    models = [load_model(resolve(p), spec, threads=config.threads) for p in config.paths]
    ensemble = Ensemble(models, config.weights or None)
    # One run each: onnxruntime's first call allocates; do that in set-up, not at a signal.
    row = np.zeros(len(spec.names), dtype=np.dtype(spec.dtype))
    window = np.zeros((ensemble.window, row.shape[0]), dtype=row.dtype) if ensemble.window else None
    book = np.full((ensemble.book_levels, 4), np.nan, dtype=row.dtype)
    ensemble.predict_one(row, window, book)
    return ensemble


def model_reads_book(config: ModelSection, resolve: Callable[[str], Any]) -> bool:
    """Whether a configured model reads book levels (its sidecar's ``book_levels`` > 0), so
    that replay loads and live feeds build the book columns (as for a strategy that reads
    the book). Read from the sidecars alone, before the data; an unreadable sidecar counts
    as no (:func:`load_ensemble` then refuses it, naming it)."""
    if not config.enabled:
        return False
    for p in config.paths:
        try:
            sidecar = read_sidecar(resolve(p))
        except ModelError:
            continue
        levels = sidecar.get("book_levels", 0)
        if sidecar.get("input") == "sequence" and isinstance(levels, int) and levels > 0:
            return True
    return False


def load_regime_model(config: ModelSection, resolve: Callable[[str], Any]) -> HmmParams | None:
    """The HMM of ``[model] regime = "hmm"`` (None with the threshold regime).

    Raises:
        ModelError: ``regime_model`` is missing or not a valid HMM parameter file (one line
            naming the key and the file).
    """
    if config.regime != "hmm":
        return None
    try:
        return HmmParams.load(resolve(config.regime_model))
    except DataError as exc:
        raise ModelError("model.regime_model", "", str(exc)) from None


LATENCY_WINDOW = 100_000  # scored batches whose latency the percentiles cover


@attrs.define
class ModelStats:
    """What the report and the status command show about the filter."""

    requests: int = 0
    batches: int = 0
    retrains: int = 0
    swaps: int = 0
    # Per scored batch, the latest LATENCY_WINDOW in a ring written through at
    # construction (np.full): its 800 KB are resident from the start, where a deque
    # of floats grew page by page to ~3.2 MB over the first 100,000 batches, which a
    # soak of a few hours reads as a leak. Percentiles do not depend on the order.
    latency_us: np.ndarray = attrs.field(factory=lambda: np.full(LATENCY_WINDOW, 0.0))
    latency_count: int = 0  # batches timed so far; the ring holds the latest of them

    def record_latency(self, us: float) -> None:
        """Keep one batch's per-request scoring time (overwrites the oldest when full)."""
        self.latency_us[self.latency_count % self.latency_us.shape[0]] = us
        self.latency_count += 1

    def latencies(self) -> np.ndarray:
        """The kept latencies (at most ``LATENCY_WINDOW``), in ring order."""
        return self.latency_us[: min(self.latency_count, self.latency_us.shape[0])]

    def summary(self) -> dict[str, Any]:
        kept = self.latencies()
        lat = kept if kept.shape[0] else np.zeros(1)
        return {
            "requests": self.requests,
            "batches": self.batches,
            "inference_us_p50": round(float(np.percentile(lat, 50)), 1),
            "inference_us_p99": round(float(np.percentile(lat, 99)), 1),
            "retrains": self.retrains,
            "swaps": self.swaps,
        }


@attrs.frozen
class _Job:
    """A retrain in flight: where its answer lands and when it must be applied."""

    request_step: int
    apply_step: int
    samples: int
    done: trio.Event
    result: list[Any]


class ModelActor:
    """Scores every symbol's entry signals; retrains and hot-swaps the ensemble.

    Args:
        config: the ``[model]`` section.
        ensemble: the loaded ensemble (:func:`load_ensemble`).
        symbols: the symbol actors, in the order their batches are read.
        requests: one receive channel per symbol.
        replies: one send channel per symbol.
        log: a bound structlog logger.
        deterministic: replay: wait for a retrain at its apply step (digest stays the same
            run after run); live: apply whenever it is ready.
        retrain_fn: the pure retrain function (``engine.models.retrain``), run in a thread.
        swap_dir: where each refit that is swapped in is saved, ``<candidate>.onnx`` and its
            sidecar ``<candidate>.json`` (the id the :class:`ModelRetrained` row names), so a
            swap can be audited or loaded again; None: not saved.
    """

    def __init__(
        self,
        *,
        config: ModelSection,
        ensemble: Ensemble,
        symbols: Sequence[str],
        requests: dict[str, trio.MemoryReceiveChannel[ScoreBatch]],
        replies: dict[str, trio.MemorySendChannel[ScoreReply]],
        log: FilteringBoundLogger,
        deterministic: bool = True,
        retrain_fn: Callable[..., Any] | None = None,
        swap_dir: Path | None = None,
    ) -> None:
        self._cfg = config
        self._swap_dir = swap_dir
        self._symbols = list(symbols)
        self._requests = requests
        self._replies = replies
        self._log = log.bind(actor="model")
        self._deterministic = deterministic
        self._retrain_fn = retrain_fn
        self._set_ensemble(ensemble)
        self.stats = ModelStats()
        self._window: deque[LabeledDecision] = deque(maxlen=config.retrain_window)
        self._events_since = 0
        self._last_retrain_ts: int | None = None
        self._job: _Job | None = None
        self._seq = 0

    def _set_ensemble(self, ensemble: Ensemble) -> None:
        self.ensemble = ensemble
        self.model_id = ensemble_id(ensemble)

    def summary(self) -> dict[str, Any]:
        """Counters for the run report."""
        return {"model": self.model_id, **self.stats.summary()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve steps until every symbol actor has closed its request channel.

        Raises:
            ProtocolError: a batch for the wrong step arrived.
        """
        with contextlib.ExitStack() as stack:
            for channel in self._replies.values():
                stack.enter_context(channel)
            async with trio.open_nursery() as nursery:
                task_status.started()
                step = 0
                while True:
                    batches: list[ScoreBatch] = []
                    for symbol in self._symbols:
                        try:
                            batch = await self._requests[symbol].receive()
                        except trio.EndOfChannel:
                            continue
                        if batch.step != step:
                            raise ProtocolError(f"model: {symbol} step {batch.step} != {step}")
                        batches.append(batch)
                    if not batches:
                        break
                    records = await self._maybe_swap(step, max(b.ts for b in batches))
                    scores = self._score(batches)
                    self._learn(step, batches, nursery)
                    for i, batch in enumerate(batches):
                        reply = ScoreReply(
                            step=step,
                            scores=scores[batch.symbol],
                            records=tuple(records) if i == 0 else (),
                        )
                        await self._replies[batch.symbol].send(reply)
                    step += 1
                nursery.cancel_scope.cancel()

    # -- scoring ------------------------------------------------------------------

    def _score(self, batches: list[ScoreBatch]) -> dict[str, tuple[Score, ...]]:
        out: dict[str, list[Score]] = {b.symbol: [] for b in batches}
        requests = [r for b in batches for r in b.requests]
        for request, score in zip(requests, self.score(requests), strict=True):
            out[request.symbol].append(score)
        return {k: tuple(v) for k, v in out.items()}

    def score(self, requests: list[ScoreRequest]) -> list[Score]:
        """Score requests in one model call (the single-row path for one request).

        There is no score cache: one keyed by feature rows quantized to 0.001 was measured
        at 0 hits on every capture (26 real-valued features never repeat) and removed.

        With sequence members each request is scored on the window it carries (its
        symbol's last ticks as of its signal) and, for a member that reads the book, on
        the book levels it carries.

        Raises:
            ProtocolError: the ensemble reads windows (or book levels) and a request has
                none (its symbol's filter was not built for this ensemble).
        """
        if not requests:
            return []
        t0 = time.perf_counter()
        ens = self.ensemble
        if ens.window:
            for r in requests:
                if r.window is None or (ens.book_levels and r.book is None):
                    raise ProtocolError(
                        f"model: {r.correlation_id} came without the window"
                        f"{' and book levels' if ens.book_levels else ''} the ensemble reads"
                    )
        if len(requests) == 1:
            r = requests[0]
            values = [ens.predict_one(r.row, r.window, r.book)]
        else:
            rows = np.stack([r.row for r in requests])
            windows = np.stack([r.window for r in requests]) if ens.window else None
            books = np.stack([r.book for r in requests]) if ens.book_levels else None
            values = [float(v) for v in ens.predict_batch(rows, windows, books)]
        elapsed_us = (time.perf_counter() - t0) * 1e6 / len(requests)
        self.stats.requests += len(requests)
        self.stats.batches += 1
        self.stats.record_latency(elapsed_us)
        return [
            Score(correlation_id=request.correlation_id, score=value, model=self.model_id)
            for request, value in zip(requests, values, strict=True)
        ]

    # -- online learning ------------------------------------------------------------

    def _learn(self, step: int, batches: list[ScoreBatch], nursery: trio.Nursery) -> None:
        cfg = self._cfg
        ts = max(b.ts for b in batches)
        for batch in batches:
            self.learn(batch.labeled)
            self._events_since += batch.events
        if not cfg.retrain or self._retrain_fn is None or self._job is not None:
            return
        if self.ensemble.models[0].window:  # online refits are for row models only
            return
        if self._deterministic:
            due = self._events_since >= cfg.retrain_every_events
        else:
            if self._last_retrain_ts is None:
                self._last_retrain_ts = ts
            due = ts - self._last_retrain_ts >= cfg.retrain_every_s * _SECOND
        if not due:
            return
        self._events_since = 0
        self._last_retrain_ts = ts
        window = self.retrain_window()
        job = _Job(
            request_step=step,
            apply_step=step + cfg.apply_after_steps,
            samples=len(window),
            done=trio.Event(),
            result=[],
        )
        self._job = job
        self._log.info("retrain started", step=step, samples=len(window), model=self.model_id)
        nursery.start_soon(self._retrain, job, window)

    async def _retrain(self, job: _Job, window: list[LabeledDecision]) -> None:
        try:
            job.result.append(await trio.to_thread.run_sync(self.retrain, window))
        except Exception as exc:  # a failed fit keeps the current model, loudly
            self._log.error("retrain failed", error=repr(exc))
            job.result.append(exc)
        finally:
            job.done.set()

    def retrain(self, window: list[LabeledDecision]) -> Any:
        """Refit the first member on ``window`` (the pure retrain function; no swap)."""
        assert self._retrain_fn is not None
        cfg = self._cfg
        member = self.ensemble.models[0]
        X = (
            np.stack([d.row for d in window]).astype(np.float32)
            if window
            else np.zeros((0, len(member.spec.names)), dtype=np.float32)
        )
        y = np.asarray([d.label for d in window], dtype=np.int64)
        t = np.asarray([d.ts_decision for d in window], dtype=np.int64)
        return self._retrain_fn(
            X,
            y,
            t,
            current=member.blob,
            spec=member.spec,
            seed=0,
            validation_fraction=cfg.validation_fraction,
            min_samples=cfg.retrain_min_samples,
            min_auc_gain=cfg.min_auc_gain,
        )

    def learn(self, labeled: tuple[LabeledDecision, ...] | list[LabeledDecision]) -> None:
        """Add labelled decisions to the retraining window."""
        self._window.extend(labeled)

    def retrain_window(self) -> list[LabeledDecision]:
        """The window a retrain starts from, in decision order; counts the retrain."""
        self.stats.retrains += 1
        return sorted(self._window, key=lambda d: (d.ts_decision, d.correlation_id))

    async def _maybe_swap(self, step: int, ts: int) -> list[ModelRetrained]:
        job = self._job
        if job is None or step < job.apply_step:
            return []
        if self._deterministic:
            await job.done.wait()
        elif not job.done.is_set():
            return []
        self._job = None
        return [self.swap(job.result[0], job.samples, f"online-{job.request_step}", ts, step)]

    def _save(self, candidate: str, blob: bytes, sidecar: Any) -> None:
        assert self._swap_dir is not None
        self._swap_dir.mkdir(parents=True, exist_ok=True)
        (self._swap_dir / f"{candidate}.onnx").write_bytes(blob)
        text = json.dumps(dict(sidecar), indent=1, sort_keys=True) + "\n"
        (self._swap_dir / f"{candidate}.json").write_text(text)

    def swap(self, result: Any, samples: int, name: str, ts: int, step: int) -> ModelRetrained:
        """Apply a retrain's result: swap the candidate in if it was accepted; the record."""
        previous = self.model_id
        member = self.ensemble.models[0]
        if isinstance(result, Exception):
            swapped, reason, auc_prev, auc_new, candidate = (
                False,
                f"error: {result!r}",
                math.nan,
                math.nan,
                "",
            )
        else:
            swapped, reason = bool(result.accepted), str(result.reason)
            auc_prev = float(result.metrics_current.get("auc", math.nan))
            auc_new = float(result.metrics_candidate.get("auc", math.nan))
            candidate = str(result.sidecar.get("onnx_sha256", ""))[:12] if result.blob else ""
            if swapped:
                new_member = OnnxModel.from_bytes(
                    result.blob,
                    result.sidecar,
                    member.spec,
                    threads=self._cfg.threads,
                    name=name,
                )
                if self._swap_dir is not None:
                    self._save(candidate, result.blob, result.sidecar)
                members = (new_member, *self.ensemble.models[1:])
                self._set_ensemble(Ensemble(members, self.ensemble.weights))
                self.stats.swaps += 1
        self._seq += 1
        record = ModelRetrained(
            symbol="",
            previous=previous,
            candidate=candidate,
            swapped=swapped,
            reason=reason,
            samples=samples,
            auc_previous=auc_prev,
            auc_candidate=auc_new,
            ts_event=ts,
            ts_init=ts,
            seq=self._seq,
        )
        log = self._log.info if swapped else self._log.warning
        log(
            "model swapped" if swapped else "model kept",
            previous=previous,
            model=self.model_id,
            candidate=candidate,
            reason=reason,
            samples=samples,
            auc_previous=auc_prev,
            auc_candidate=auc_new,
            step=step,
        )
        return record
