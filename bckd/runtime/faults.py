"""A test seam: a worker that SIGKILLs itself at a named point of training, once.

A real crash (an OOM kill, a lost node, a segfault) cannot be timed by a test: it lands wherever
it lands. To test that a restart from *every* kind of point is clean, the tests make rank 0 kill
itself exactly there instead, with ``kill -9``'s effect (no exception, no ``finally``, no flush).
It is armed only by the environment variable, which nothing but the tests sets::

    BCKD_FAULT="iter:3,iter:6,val:2,checkpoint:3"

Each comma-separated ``point:n`` fires once per job, on rank 0:

* ``iter:N``: after global training iteration ``N`` (1-based), once the other hooks of that
  iteration have run (its metrics are logged or buffered);
* ``val:E``: during the evaluation of epoch ``E``, after its first val batch;
* ``checkpoint:E``: during the checkpoint of epoch ``E``, after rank 0 has written it and before
  it is reported to Ray Train (a write the crash leaves behind, unregistered).

Before dying, rank 0 waits until Ray Train has collected the reports it made so far. Ray's
controller takes a report off a worker only when it polls it (every 0.5 s: ``launch.POLL_S``),
so a real crash that soon after a checkpoint's report loses it and restarts from the one before
(no harm to MLflow: the steps in between are dropped as any replay). Waiting makes the restart
point the one the test names instead of a matter of timing.

"Once" must survive the process: before killing itself the worker creates
``<work_dir>/faults/<point>-<n>.fired``; a restarted worker finds the file and goes on. The work
dir must therefore be the same for all attempts, which it is on one node (the tests' case).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from mmengine.hooks import Hook

__all__ = ["ENV", "FaultHook", "armed", "crash_point"]

ENV = "BCKD_FAULT"
POINTS = ("iter", "val", "checkpoint")


def _faults() -> set[tuple[str, int]]:
    faults = set()
    for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
        point, _, n = item.partition(":")
        if point not in POINTS or not n.isdigit():
            raise ValueError(f"{ENV}={os.environ[ENV]!r}: {item!r} is not one of "
                             f"{', '.join(p + ':N' for p in POINTS)}")
        faults.add((point, int(n)))
    return faults


def armed() -> bool:
    """Whether this process has any fault to inject (else no hook is registered)."""
    return bool(_faults())


def crash_point(runner, point: str, n: int) -> None:
    """SIGKILL this process if ``point:n`` is armed, this is rank 0 and it has not fired yet."""
    if runner.rank != 0 or (point, n) not in _faults():
        return
    marker = Path(runner.work_dir) / "faults" / f"{point}-{n}.fired"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        marker.touch(exist_ok=False)  # exclusive: fires once, even if two attempts raced here
    except FileExistsError:
        return
    _wait_for_reports_collected()
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_for_reports_collected(timeout_s: float = 60.0) -> None:
    """Until this worker's queue of ``ray.train.report`` results is empty (Ray internals: the
    queue its controller polls), plus a moment for the controller to register what it took."""
    try:
        from ray.train.v2._internal.execution.context import get_train_context

        results = get_train_context().get_result_queue()
    except Exception:  # noqa: BLE001 - another Ray version: wait out a few polls instead
        time.sleep(6.0)
        return
    deadline = time.monotonic() + timeout_s
    while not results.empty() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)


class FaultHook(Hook):
    """Fires ``iter:N`` and ``val:E``; ``checkpoint:E`` is fired by ``RayCheckpointHook``."""

    priority = "LOWEST"  # after the MLflow hook has logged or buffered the iteration

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        crash_point(runner, "iter", runner.iter + 1)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if batch_idx == 0:
            crash_point(runner, "val", runner.epoch)
