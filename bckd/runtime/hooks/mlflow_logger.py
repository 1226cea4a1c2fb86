"""``MLflowLoggerHook`` (rank 0 writes): per-step losses, lr and images/s; per-evaluation COCO
metrics, the COCO result json and, for a distillation run, the Figure 3 disagreement maps; the
teacher's COCO metrics once before the first epoch (evaluated on all ranks)."""

from __future__ import annotations

from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from bckd.runtime.hooks.figure3 import log_figure3
from bckd.runtime.hooks.replay import record_replay
from bckd.runtime.hooks.runner_state import (
    evaluation_numbers,
    images_per_second,
    scalars,
    training,
    unwrap,
)
from bckd.runtime.hooks.teacher import evaluate_teacher
from bckd.tracking.runs import RunWriter

__all__ = ["MLflowLoggerHook"]


class MLflowLoggerHook(Hook):
    """Log a run's metrics and evaluation artifacts to MLflow from rank 0.

    Args:
        tracking_uri, run_id: the run the driver created. It may already hold steps from an
            earlier attempt of the job, whether or not this worker resumes from a checkpoint
            (a worker killed before the first one restarts from scratch): the writer asks
            MLflow and drops those steps (:class:`~bckd.tracking.runs.RunWriter`).
        flush_interval: iterations between MLflow writes (metrics are buffered in between and
            written in one batch).
        eval_prefix: ``CocoMetric.outfile_prefix``; ``<prefix>.bbox.json`` is logged per eval.
        figure3_images: val images in the disagreement picture (distillation runs; 0: none).
    """

    priority = "LOW"  # after IterTimerHook (NORMAL), which measures the iteration time

    def __init__(self, tracking_uri: str, run_id: str, flush_interval: int = 10,
                 eval_prefix: str | None = None, figure3_images: int = 2) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.flush_interval = max(1, flush_interval)
        self.eval_prefix = eval_prefix
        self.figure3_images = figure3_images
        self.writer: RunWriter | None = None
        self._buffer: list[tuple[int, dict[str, float]]] = []

    def before_run(self, runner) -> None:
        if is_main_process():
            self.writer = RunWriter(self.tracking_uri, self.run_id)

    def before_train(self, runner) -> None:
        if self.writer is not None:  # steps an earlier attempt logged that this one redoes
            record_replay(self.writer, runner.iter)
        model = unwrap(runner.model)
        if hasattr(model, "resolved_teacher_precision") and self.writer is not None:
            # what 'auto' chose on this device; a tag, since the config's param is logged as
            # written and an MLflow param cannot change
            self.writer.set_tags({"model.teacher_precision": model.resolved_teacher_precision()})
        # Once per run: not after a resume (runner.iter > 0), and only when there is a val set.
        if hasattr(model, "teacher") and runner.iter == 0 and runner.val_loop is not None:
            print_log("evaluating the teacher on the val set", logger="current")
            metrics = evaluate_teacher(runner)
            if self.writer is not None:
                self.writer.log_metrics(
                    {f"teacher/{k}": v for k, v in
                     evaluation_numbers(metrics, runner.val_evaluator).items()}, step=0)
                self._log_eval_json("eval/teacher")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.writer is None:
            return
        metrics = scalars(outputs)
        lrs = runner.optim_wrapper.get_lr()
        if "lr" in lrs:
            metrics["lr"] = float(lrs["lr"][0])
        speed = images_per_second(runner, data_batch)
        if speed is not None:
            metrics["images_per_s"] = speed
        metrics["epoch"] = float(runner.epoch + 1)
        self._buffer.append((runner.iter + 1, metrics))
        if len(self._buffer) >= self.flush_interval:
            self.flush()

    def after_train_epoch(self, runner) -> None:
        self.flush()

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if self.writer is None or not training(runner):
            return
        self.flush()
        self.writer.log_metrics(evaluation_numbers(metrics, runner.val_evaluator),
                                step=runner.iter)
        epoch_dir = f"eval/epoch_{runner.epoch:03d}"
        self._log_eval_json(epoch_dir)
        model = unwrap(runner.model)
        if hasattr(model, "teacher") and self.figure3_images > 0:
            log_figure3(self.writer, runner, model, self.figure3_images, epoch_dir)

    def flush(self) -> None:
        if self.writer is None:
            return
        # One MLflow write for the buffer, not one per step: the write blocks the training loop,
        # and ten SQLite commits took six times as long as one (benchmarks/README.md, Ray).
        self.writer.log_steps(self._buffer)
        self._buffer.clear()

    def _log_eval_json(self, artifact_dir: str) -> None:
        if self.eval_prefix is None:
            return
        path = Path(f"{self.eval_prefix}.bbox.json")
        if path.is_file():
            self.writer.log_artifact(path, artifact_dir)
