"""Graceful stop: the driver raises a flag, the workers checkpoint and return at the same step.

The flag is a tiny Ray actor (so it works across nodes). Rank 0 reads it every ``interval``
iterations and broadcasts the answer, so every rank leaves at the same iteration after one last
``ray.train.report`` with a checkpoint; the worker function then returns normally (a raised
error would count as a worker failure and trigger a restart).
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

    def set(self) -> None:
        self._set = True

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

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if (runner.iter + 1) % self.interval:
            return
        stop = torch.zeros(1)
        if runner.rank == 0:
            stop[0] = float(ray.get(self.flag.is_set.remote()))
        if dist.is_initialized() and runner.world_size > 1:
            dist.broadcast(stop, src=0)
        if stop.item():
            print_log(f"stop requested: checkpointing at iteration {runner.iter + 1}",
                      logger="current")
            if self.report is not None:
                self.report(runner)
            raise StopRequested
