"""Graceful stop: the driver raises a flag, the workers checkpoint and return at the same step.

The flag is a tiny Ray actor (so it works across nodes). Rank 0 reads it every ``interval``
iterations and broadcasts the answer, so every rank leaves at the same iteration after one last
``ray.train.report`` with a checkpoint; the worker function then returns normally (a raised
error would count as a worker failure and trigger a restart). Rank 0 never waits for the actor:
it asks at one check and reads the answer at a later one, so a stop lands an interval late.

A stop before training began has nothing to checkpoint. Rank 0 tells the flag when training
begins, and raising the flag answers whether it has: the actor runs one call at a time, so the
two orders are the only ones, and the driver waits for a stop checkpoint only when one is coming
(before, a job cancelled while its workers started waited out the whole stop grace).

The hook that reads the flag is :class:`bckd.runtime.hooks.stop.StopHook`. This module imports
Ray alone: the flag's actor process imports it to rebuild the class, and each job starts one such
process beside its workers. With torch and mmengine imported too it cost 3.4 s of CPU at the
moment the workers import mmdet on the same cores (``python -c "import ..."``, 2-core machine);
with Ray alone, 0.5 s.
"""

from __future__ import annotations

import ray

__all__ = ["StopFlag", "StopRequested"]


@ray.remote(num_cpus=0)
class StopFlag:
    def __init__(self) -> None:
        self._set = False
        self._training = False

    def set(self) -> bool:
        """Ask the workers to stop; True if training had begun (a stop checkpoint will come),
        False if not (nothing to save: the driver need not wait)."""
        self._set = True
        return self._training

    def begin_training(self) -> None:
        self._training = True

    def is_set(self) -> bool:
        return self._set


class StopRequested(Exception):  # noqa: N818 - a signal, not an error
    """Raised on every rank after the stop checkpoint; caught by the worker function."""
