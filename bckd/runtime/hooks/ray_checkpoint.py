"""``RayCheckpointHook`` (all ranks): after each evaluation (or each epoch without one) rank 0
saves a full mmengine checkpoint and every rank calls ``ray.train.report``, so Ray keeps the
checkpoints and a restarted worker group resumes from the latest one."""

from __future__ import annotations

import tempfile

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from bckd.runtime.faults import crash_point
from bckd.runtime.hooks.runner_state import finite_numbers, training, will_validate

__all__ = ["CHECKPOINT_FILE", "RayCheckpointHook"]

CHECKPOINT_FILE = "checkpoint.pth"  # inside each Ray checkpoint directory
# The score of a checkpoint without an evaluation: worse than any real score, and finite,
# because Ray Train writes the reported metrics to JSON and reads them back on a restart, where
# an infinity comes back as None and its checkpoint manager then fails to rank the checkpoints
# ("unsupported operand type(s) for *: 'float' and 'NoneType'").
UNSCORED = 1e30


class RayCheckpointHook(Hook):
    """Save a full checkpoint on rank 0 and report it to Ray Train from every rank.

    Reports after each evaluation, with the COCO metrics (so Ray can rank checkpoints by
    ``score_key``), and after each epoch that has no evaluation. ``ray.train.report`` is a
    barrier: every rank reports the same number of times.
    """

    priority = "VERY_LOW"  # after the MLflow hook has logged this epoch

    def __init__(self, score_key: str | None = None, score_rule: str = "greater",
                 interval: int = 1) -> None:
        self.score_key = score_key
        self.score_rule = score_rule
        self.interval = max(1, interval)

    def _scored(self, metrics: dict) -> dict[str, float]:
        """``metrics`` with the score key present (worst value when the evaluation had none,
        e.g. no detection at all), so Ray can always rank the checkpoint."""
        metrics = finite_numbers(metrics)
        if self.score_key and self.score_key not in metrics:
            metrics[self.score_key] = -UNSCORED if self.score_rule == "greater" else UNSCORED
        return metrics

    def after_train_epoch(self, runner) -> None:
        if not will_validate(runner) and (runner.epoch + 1) % self.interval == 0:
            self._report(runner, epoch=runner.epoch + 1, metrics=self._scored({}))

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if not training(runner):
            return
        if runner.epoch % self.interval == 0 or runner.epoch == runner.train_loop.max_epochs:
            self._report(runner, epoch=runner.epoch, metrics=self._scored(metrics or {}))

    def report_mid_epoch(self, runner) -> None:
        """Checkpoint inside an epoch (called from ``after_train_iter``, on a stop request).

        mmengine's epoch loop resumes such a checkpoint at the start of its epoch, with the
        iteration counter continuing, so no logged step repeats."""
        self._report(runner, epoch=runner.epoch, metrics=self._scored({}),
                     iteration=runner.iter + 1)

    def _report(self, runner, epoch: int, metrics: dict[str, float],
                iteration: int | None = None) -> None:
        import ray.train

        iteration = runner.iter if iteration is None else iteration
        metrics = {**metrics, "epoch": epoch, "iter": iteration}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if is_main_process():
                runner.save_checkpoint(tmp, CHECKPOINT_FILE,
                                       meta=dict(epoch=epoch, iter=iteration))
                crash_point(runner, "checkpoint", epoch)  # a test seam; see bckd.runtime.faults
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=f"checkpoint_iter_{iteration:07d}")
        print_log(f"reported the checkpoint of epoch {epoch}, iteration {iteration} to Ray "
                  "Train", logger="current")
