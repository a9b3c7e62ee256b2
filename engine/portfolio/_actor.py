"""The portfolio actor: turns recent returns into per-symbol exposure limits.

Risk sends a :class:`PortfolioRequest` every ``every_steps`` steps; the actor
solves the configured problem in a worker thread (the event loop keeps running
the other actors) and answers with :class:`ExposureLimits`: ``limit_i = |w_i| *
exposure_budget``. Risk reads the answer at a fixed later step, so results do not
depend on how long the solve took. A failed solve answers with no limits and the
reason; risk keeps the last good ones. An inaccurate solve (the solver met only
its reduced tolerances) is used when its weights meet the constraints, and is
counted (``inaccurate``) and logged with its status: see the status policy in
:mod:`engine.portfolio._optimize`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import trio
from structlog.typing import FilteringBoundLogger

from .._config import PortfolioSection
from ..messages import ExposureLimits, PortfolioRequest

# Solve times the median covers: the latest ones, in a ring allocated once. A list of
# every solve grew for as long as the run (one float per solve, 450 an hour at the
# shipped pace: the soak's memray found it).
SOLVE_WINDOW = 1024


@attrs.define
class PortfolioStats:
    """Solve counts and times, for the report."""

    solves: int = 0
    failures: int = 0
    inaccurate: int = 0  # solves used although the solver met only its reduced tolerances
    solve_ms_max: float | None = None  # over the whole run
    last_weights: dict[str, float] = attrs.Factory(dict)
    last_limits: dict[str, float] = attrs.Factory(dict)
    last_error: str = ""
    _recent_ms: array[float] = attrs.field(
        init=False, repr=False, factory=lambda: array("d", bytes(8 * SOLVE_WINDOW))
    )

    def record_solve(self, ms: float) -> None:
        """Count a solve that took ``ms`` milliseconds."""
        self._recent_ms[self.solves % SOLVE_WINDOW] = ms
        self.solves += 1
        self.solve_ms_max = ms if self.solve_ms_max is None else max(self.solve_ms_max, ms)

    @property
    def solve_ms(self) -> list[float]:
        """The latest solve times (up to :data:`SOLVE_WINDOW`), in no particular order."""
        return self._recent_ms[: min(self.solves, SOLVE_WINDOW)].tolist()

    def summary(self) -> dict[str, object]:
        """Counts, median solve time (the latest :data:`SOLVE_WINDOW` solves) and max
        (all), and the last weights and limits."""
        times = self.solve_ms
        return {
            "solves": self.solves,
            "failures": self.failures,
            "inaccurate": self.inaccurate,
            "solve_ms_median": float(np.median(times)) if times else None,
            "solve_ms_max": self.solve_ms_max,
            "last_weights": self.last_weights,
            "last_limits": self.last_limits,
            "last_error": self.last_error,
        }


class PortfolioActor:
    """Solves the portfolio problem on request.

    Args:
        config: the portfolio section.
        requests: requests from risk (the actor stops when risk closes it).
        answers: the send side back to risk.
        log: a bound structlog logger.
        thread_setup: called first in the worker thread of every solve (pins it to
            the worker CPUs of the hardware plan).
    """

    def __init__(
        self,
        *,
        config: PortfolioSection,
        requests: trio.MemoryReceiveChannel[PortfolioRequest],
        answers: trio.MemorySendChannel[ExposureLimits],
        log: FilteringBoundLogger,
        thread_setup: Callable[[], object] | None = None,
    ) -> None:
        self._cfg = config
        self._requests = requests
        self._answers = answers
        self._log = log
        self._optimizers: dict[tuple[int, int], Any] = {}
        self._thread_setup = thread_setup
        self.stats = PortfolioStats()

    def set_thread_setup(self, setup: Callable[[], object]) -> None:
        """Set what every solve's worker thread calls first (see ``thread_setup``)."""
        self._thread_setup = setup

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer requests until risk closes the channel.

        On cancellation a solve in progress finishes in its thread and its result
        is dropped.
        """
        with self._answers:  # sync close: no checkpoint while an error unwinds
            task_status.started()
            async for request in self._requests:
                answer = await trio.to_thread.run_sync(self.solve, request)
                await self._answers.send(answer)

    def solve(self, request: PortfolioRequest) -> ExposureLimits:
        """Solve one request (runs in a worker thread)."""
        if self._thread_setup is not None:
            self._thread_setup()
        cfg = self._cfg
        symbols = request.symbols
        n = len(symbols)
        if n == 1:
            # Nothing to diversify: the whole budget (capped by max_weight is
            # infeasible with one asset, so the cap does not apply).
            weights = np.ones(1)
            return self._answer(request, weights, "single_symbol", 0.0)
        # cvxpy and scikit-learn take ~2 s to import: only runs with several
        # symbols pay for them (the supervisor imports them during set-up).
        from ._optimize import Constraints, Objective, Optimizer, PortfolioError

        periods = request.returns.shape[0]
        key = (n, periods if cfg.objective == "min_cvar" else 0)
        optimizer = self._optimizers.get(key)
        if optimizer is None:
            optimizer = self._optimizers[key] = Optimizer(
                n,
                Objective(cfg.objective),
                Constraints(
                    max_weight=cfg.max_weight, leverage=cfg.leverage, long_only=cfg.long_only
                ),
                risk_aversion=cfg.risk_aversion,
                cvar_beta=cfg.cvar_beta,
                periods=key[1],
            )
        try:
            solution = optimizer.solve(request.returns)
        except PortfolioError as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc)
            self._log.warning("portfolio solve failed; risk keeps the last limits", error=str(exc))
            return ExposureLimits(
                step=request.step, limits={}, weights={}, status=str(exc), solve_seconds=0.0
            )
        if not solution.accurate:
            self.stats.inaccurate += 1
        return self._answer(request, solution.weights, solution.status, solution.solve_seconds)

    def _answer(
        self, request: PortfolioRequest, weights: np.ndarray, status: str, seconds: float
    ) -> ExposureLimits:
        budget = self._cfg.exposure_budget
        w = {s: float(x) for s, x in zip(request.symbols, weights, strict=True)}
        limits = {s: abs(x) * budget for s, x in w.items()}
        self.stats.record_solve(seconds * 1e3)
        self.stats.last_weights = w
        self.stats.last_limits = limits
        self._log.info(
            "portfolio limits",
            step=request.step,
            weights={s: round(x, 4) for s, x in w.items()},
            status=status,
            solve_ms=round(seconds * 1e3, 3),
        )
        return ExposureLimits(
            step=request.step, limits=limits, weights=w, status=status, solve_seconds=seconds
        )
