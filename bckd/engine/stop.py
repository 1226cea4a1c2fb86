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
"""

from __future__ import annotations

import ray
import torch
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.logging import print_log

__all__ = ["StopFlag", "StopHook", "StopRequested"]


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


class StopHook(Hook):
    priority = "LOWEST"  # after the MLflow and checkpoint hooks of the same iteration

    def __init__(self, flag, interval: int = 10, report=None) -> None:
        self.flag = flag
        self.interval = max(1, interval)
        self.report = report  # callable(runner): checkpoint and report (RayCheckpointHook)
        self._asked: ray.ObjectRef | None = None  # rank 0's question still on its way

    def _flag_is_set(self) -> bool:
        """The flag's answer to an earlier question (False while none has come back), and a
        new question when that one has. A blocking ``ray.get`` here is a round trip through
        the actor's process, which the training's own threads keep waiting for CPU on a busy
        node (measured 144 ms per check under load, every ``interval`` iterations)."""
        answer = False
        if self._asked is not None:
            ready, _ = ray.wait([self._asked], timeout=0)
            if not ready:
                return False
            answer = bool(ray.get(ready[0]))
        self._asked = self.flag.is_set.remote()
        return answer

    def before_train(self, runner) -> None:
        if runner.rank == 0:  # once a job (and per restart): a round trip here is no cost
            ray.get(self.flag.begin_training.remote())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if (runner.iter + 1) % self.interval:
            return
        stop = torch.zeros(1)
        if runner.rank == 0:
            stop[0] = float(self._flag_is_set())
        if dist.is_initialized() and runner.world_size > 1:
            dist.broadcast(stop, src=0)
        if stop.item():
            print_log(f"stop requested: checkpointing at iteration {runner.iter + 1}",
                      logger="current")
            if self.report is not None:
                self.report(runner)
            raise StopRequested
