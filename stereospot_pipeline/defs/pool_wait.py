"""The in-process executor's wait for a pool slot, made cheap, visible and interruptible.

Three faults of Dagster 1.13.27's in-process executor (the one every local run uses), met by a
conversion whose stereo steps wait for the ``gpu`` pool:

- it never sleeps: ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` returns
  ``min(0, ...)``, never a positive time, so the plan loop spins at 100% CPU for as long as the slot
  is held;
- it only logs "Step blocked by limit for pool gpu", not by whom;
- a SIGINT/SIGTERM arriving while it waits is only noted (interrupts are raised inside steps
  only), so the run cannot be stopped short of SIGKILL.

``install()`` (called by definitions.py) patches the two loop methods: the wait sleeps until the next claim
check, in slices that end at once when a stop is asked for (the captured interrupt, or ``STOP``
set by the CLI), and every ``_REPORT_EVERY_S`` the run log says who holds the slot and since when;
a holder whose process is gone is recovered on the spot (``runs.recover_dead_runs``).
"""

from __future__ import annotations

import threading
import time

from dagster._core.events import EngineEventData
from dagster._core.execution.plan import active
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._utils.interrupts import check_captured_interrupt

from stereospot_pipeline.runs import recover_dead_runs, slot_holders

# Set by `stereospot convert` when a signal asks the conversion to stop (see cli.py).
STOP = threading.Event()
WAIT_MESSAGE = "waiting for a slot of pool"
_SLICE_S = 0.25
_REPORT_EVERY_S = 30.0

_original_get_next_step = active.ActiveExecution.get_next_step


def _stop_requested() -> bool:
    return STOP.is_set() or check_captured_interrupt()


def _raise_if_stopping() -> None:
    # KeyboardInterrupt is what Dagster's run loop turns into a canceled run (CANCELING -> CANCELED).
    if _stop_requested():
        raise KeyboardInterrupt


def _next_claim_check(self: InstanceConcurrencyContext) -> float:
    if not self.has_pending_claims():
        return 0.0
    now = time.time()
    return max(0.0, min((ready - now for ready in self._pending_timeouts.values()), default=0.0))


def _get_next_step(self: active.ActiveExecution):
    _raise_if_stopping()
    return _original_get_next_step(self)


def _sleep_til_ready(self: active.ActiveExecution) -> None:
    _report_wait(self)
    deadline = time.monotonic() + self.sleep_interval()
    while True:
        _raise_if_stopping()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _SLICE_S))


def _report_wait(execution: active.ActiveExecution) -> None:
    concurrency = execution._instance_concurrency_context
    if concurrency is None or not concurrency.has_pending_claims():
        return
    reported: dict[str, float] = execution.__dict__.setdefault("_stereospot_wait_reported", {})
    instance, run_id = concurrency._instance, concurrency._run_id
    now = time.monotonic()
    for step_key in concurrency.pending_claim_steps():
        if now - reported.get(step_key, -_REPORT_EVERY_S) < _REPORT_EVERY_S:
            continue
        reported[step_key] = now
        pool = active._pool_key_for_step(execution.get_step_by_key(step_key))
        holders = slot_holders(instance, pool, exclude_run=run_id)
        if any(h.worker is not None and not h.worker.is_alive() for h in holders):
            recover_dead_runs(instance)
            holders = slot_holders(instance, pool, exclude_run=run_id)
        held_by = "; ".join(h.describe() for h in holders) or "another step"
        run = instance.get_run_by_id(run_id)
        if run is not None:
            instance.report_engine_event(
                f"{step_key} is {WAIT_MESSAGE} '{pool}', held by {held_by}", run, step_key=step_key,
                engine_event_data=EngineEventData(metadata={"pool": pool, "held_by": held_by}))


def install() -> None:
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = _next_claim_check
    active.ActiveExecution.get_next_step = _get_next_step
    active.ActiveExecution.sleep_til_ready = _sleep_til_ready

