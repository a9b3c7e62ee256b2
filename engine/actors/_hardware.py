"""The hardware actor: places the process on the machine and measures event-loop lag.

At start, in the Trio thread, it reads the CPU topology, makes the pinning plan
from ``[hardware]`` and applies it (affinity of the Trio thread, nice value,
``SCHED_FIFO`` if configured, memory lock, GC thresholds), logging what was
applied and a warning for each setting the system refused. Then, until it is
cancelled, it samples how late a timed wake-up comes (``trio.current_time()``;
the lag of the event loop) into :attr:`HardwareActor.lag`, and after the
optional warm-up event it freezes the GC once.

It sends nothing to any other actor and reads no clock but Trio's, and that
only for the lag metric, so a replay stays deterministic with it running.
"""

from __future__ import annotations

import gc
from pathlib import Path

import trio
from structlog.typing import FilteringBoundLogger

from hardware import (
    AppliedSettings,
    HardwareConfig,
    LoopLagStats,
    PinningPlan,
    Topology,
    apply_plan,
    freeze_gc,
    make_plan,
    read_topology,
    restore_settings,
)


class HardwareActor:
    """Applies the hardware plan, then measures event-loop lag until cancelled.

    Start it first (``await nursery.start(actor.run)``), before anything creates
    threads: a thread starts with the CPUs and policy of the thread that creates
    it, so a pool created before the plan is applied escapes it. Cancel it when
    the run is over; it never ends on its own.

    Args:
        config: the ``[hardware]`` section.
        log: a bound structlog logger.
        warmed_up: set when warm-up is over (kernels compiled, models loaded);
            the GC is frozen once after it, if ``config.gc_freeze``.
        bounded: the run ends on its own (replay): the freeze neither collects
            first nor counts what it froze (:func:`hardware.freeze_gc`: each a walk
            of the whole heap, tens of ms, for a few objects of garbage and a log
            field); that garbage is freed after the actor unfreezes at the end.
        topology: the machine; default: read from ``sys_root``.
        sys_root: where sysfs is mounted.

    Attributes:
        lag: the event-loop lag samples.
        topology: the topology used, once started.
        plan: the plan, once started; worker threads call
            ``hardware.setup_worker_thread(actor.plan)`` when they start, and
            the model actor ``hardware.configure_onnx_session(options, actor.plan)``.
        applied: what was applied, read back, once started.
        frozen: whether this actor has frozen the GC (it unfreezes when it stops).
        frozen_objects: how many objects ``gc.freeze()`` froze; 0 until then, None
            when not counted (``bounded``).
        settled: set when the post-warm-up work is done (at once if there is none),
            so a supervisor can start trading after the GC freeze, not during it.
    """

    def __init__(
        self,
        *,
        config: HardwareConfig,
        log: FilteringBoundLogger,
        warmed_up: trio.Event | None = None,
        bounded: bool = False,
        topology: Topology | None = None,
        sys_root: Path = Path("/sys"),
    ) -> None:
        self._cfg = config
        self._log = log
        self._warmed_up = warmed_up
        self._bounded = bounded
        self._sys_root = sys_root
        self.topology = topology
        self.lag = LoopLagStats(window=config.lag_window)
        self.plan: PinningPlan | None = None
        self.applied: AppliedSettings | None = None
        self.frozen = False
        self.frozen_objects: int | None = 0
        self.settled = trio.Event()  # set once the post-warm-up work (GC freeze) is done

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the plan, report started, then sample loop lag until cancelled.

        On cancellation (the only way it ends) it unfreezes the GC, restores the
        affinity, policy, nice value, memory lock and GC thresholds it changed,
        logs the lag summary, and lets ``trio.Cancelled`` propagate.
        """
        topology = self.topology or read_topology(self._sys_root)
        self.topology = topology
        self.plan = make_plan(topology, self._cfg)
        applied = self.applied = apply_plan(self.plan, log=self._log)
        try:
            async with trio.open_nursery() as nursery:
                if self._warmed_up is not None and self.plan.enabled and self.plan.gc_freeze:
                    nursery.start_soon(self._freeze_after, self._warmed_up)
                else:
                    self.settled.set()
                task_status.started()
                await self._sample_lag()
        finally:
            if self.frozen:
                gc.unfreeze()
            restore_settings(applied, log=self._log)
            self._log.info("hardware actor stopped", loop_lag=self.lag.summary())

    async def _freeze_after(self, warmed_up: trio.Event) -> None:
        await warmed_up.wait()
        full = not self._bounded
        self.frozen_objects = freeze_gc(collect=full, count=full)
        self.frozen = True
        self.settled.set()
        self._log.info("gc frozen after warm-up", frozen_objects=self.frozen_objects)

    async def _sample_lag(self) -> None:
        if self._cfg.lag_interval_ms == 0:
            await trio.sleep_forever()
        interval = self._cfg.lag_interval_ms / 1000
        deadline = trio.current_time() + interval
        while True:
            await trio.sleep_until(deadline)
            now = trio.current_time()
            self.lag.record(now - deadline)
            # From now, not from the missed deadline: a long stall is one late
            # sample, not a burst of catch-up samples.
            deadline = now + interval
