"""mmengine hooks that connect a Runner inside a Ray Train worker to MLflow, Ray and the console.

* :class:`MLflowLoggerHook` (rank 0 writes): per-step losses, lr and images/s; per-evaluation
  COCO metrics, the COCO result json and, for a distillation run, the Figure 3 disagreement
  maps; the teacher's COCO metrics once before the first epoch (evaluated on all ranks).
* :class:`RayCheckpointHook` (all ranks): after each evaluation (or each epoch without one) rank 0
  saves a full mmengine checkpoint and every rank calls ``ray.train.report``, so Ray keeps the
  checkpoints and a restarted worker group resumes from the latest one.
* :class:`ProgressHook` (rank 0): one console line every N iterations, forwarded by Ray to the
  driver's console: epoch, iteration, ETA, images/s, latest losses.
* :class:`ShardAuditHook` (all ranks): which images each rank trained on, for checks and tests.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import os
import tempfile
from pathlib import Path

import torch
from mmengine.dist import get_rank, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from bckd.engine.tracking import RunWriter

__all__ = [
    "MLflowLoggerHook",
    "ProgressHook",
    "RayCheckpointHook",
    "ShardAuditHook",
    "evaluate_teacher",
    "images_per_second",
    "params_sha256",
    "will_validate",
]

CHECKPOINT_FILE = "checkpoint.pth"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if is_model_wrapper(model) else model


def _scalars(outputs: dict | None) -> dict[str, float]:
    """Loss dict values as floats (tensors of one element, numbers)."""
    scalars = {}
    for key, value in (outputs or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            scalars[key] = float(value.detach())
        elif isinstance(value, (int, float)):
            scalars[key] = float(value)
    return scalars


def images_per_second(runner, data_batch) -> float | None:
    """Global images/s of the last iteration: batch size x world size / iteration time."""
    try:
        seconds = runner.message_hub.get_scalar("train/time").current()
    except KeyError:
        return None
    batch = len(data_batch["inputs"]) if isinstance(data_batch, dict) else 0
    return batch * get_world_size() / seconds if seconds > 0 else None


def _training(runner) -> bool:
    """Whether ``runner`` is inside ``train()`` (not a standalone ``val()``)."""
    loop = getattr(runner, "_train_loop", None)
    return loop is not None and not isinstance(loop, dict)


def will_validate(runner) -> bool:
    """Whether the epoch-based loop evaluates after the epoch that just ended (``runner.epoch``
    already counts it), mirroring ``EpochBasedTrainLoop.run``."""
    loop = runner.train_loop
    epoch = loop.epoch + 1
    return (runner.val_loop is not None and epoch >= loop.val_begin
            and (epoch % loop.val_interval == 0 or epoch == loop.max_epochs))


@torch.no_grad()
def evaluate_teacher(runner) -> dict[str, float]:
    """COCO metrics of ``model.teacher`` on the val loader, computed on all ranks like ValLoop."""
    teacher = _unwrap(runner.model).teacher
    evaluator = runner.val_evaluator
    for data_batch in runner.val_dataloader:
        outputs = teacher.test_step(data_batch)
        evaluator.process(data_samples=outputs, data_batch=data_batch)
    return evaluator.evaluate(len(runner.val_dataloader.dataset))


class MLflowLoggerHook(Hook):
    """Log a run's metrics and evaluation artifacts to MLflow from rank 0.

    Args:
        tracking_uri, run_id: the run the driver created.
        resumed: the run already holds steps from an earlier attempt (skip those steps).
        flush_interval: iterations between MLflow writes (metrics are buffered in between).
        eval_prefix: ``CocoMetric.outfile_prefix``; ``<prefix>.bbox.json`` is logged per eval.
        figure3_images: val images in the disagreement picture (distillation runs; 0: none).
    """

    priority = "LOW"  # after IterTimerHook (NORMAL), which measures the iteration time

    def __init__(self, tracking_uri: str, run_id: str, resumed: bool = False,
                 flush_interval: int = 10, eval_prefix: str | None = None,
                 figure3_images: int = 2) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.resumed = resumed
        self.flush_interval = max(1, flush_interval)
        self.eval_prefix = eval_prefix
        self.figure3_images = figure3_images
        self.writer: RunWriter | None = None
        self._buffer: list[tuple[int, dict[str, float]]] = []

    def before_run(self, runner) -> None:
        if is_main_process():
            self.writer = RunWriter(self.tracking_uri, self.run_id, resumed=self.resumed)

    def before_train(self, runner) -> None:
        model = _unwrap(runner.model)
        # Once per run: not after a resume (runner.iter > 0), and only when there is a val set.
        if hasattr(model, "teacher") and runner.iter == 0 and runner.val_loop is not None:
            print_log("evaluating the teacher on the val set", logger="current")
            metrics = evaluate_teacher(runner)
            if self.writer is not None:
                self.writer.log_metrics({f"teacher/{k}": v for k, v in _numbers(metrics).items()},
                                        step=0)
                self._log_eval_json("eval/teacher")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.writer is None:
            return
        metrics = _scalars(outputs)
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
        if self.writer is None or not _training(runner):
            return
        self.flush()
        # Empty when the model detected nothing yet (CocoMetric logs an error and returns {}).
        self.writer.log_metrics(_numbers(metrics or {}), step=runner.iter)
        epoch_dir = f"eval/epoch_{runner.epoch:03d}"
        self._log_eval_json(epoch_dir)
        model = _unwrap(runner.model)
        if hasattr(model, "teacher") and self.figure3_images > 0:
            self._log_figure3(runner, model, epoch_dir)

    def flush(self) -> None:
        if self.writer is None:
            return
        for step, metrics in self._buffer:
            self.writer.log_metrics(metrics, step=step)
        self._buffer.clear()

    def _log_eval_json(self, artifact_dir: str) -> None:
        if self.eval_prefix is None:
            return
        path = Path(f"{self.eval_prefix}.bbox.json")
        if path.is_file():
            self.writer.log_artifact(path, artifact_dir)

    def _log_figure3(self, runner, model, artifact_dir: str) -> None:
        from bckd.evaluation import figure3

        dataset = runner.val_dataloader.dataset
        indices = list(range(min(self.figure3_images, len(dataset))))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"figure3_epoch_{runner.epoch:03d}.png"
            try:
                figure3(model, dataset, indices, path,
                        title=f"sum_c |p_t - p_s| per FPN level, epoch {runner.epoch}")
            except Exception as err:  # noqa: BLE001 - a picture must never stop training
                print_log(f"figure 3 failed: {err!r}", logger="current", level=logging.WARNING)
                return
            self.writer.log_artifact(path, artifact_dir)


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


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
        metrics = _numbers(metrics)
        if self.score_key and self.score_key not in metrics:
            metrics[self.score_key] = -math.inf if self.score_rule == "greater" else math.inf
        return metrics

    def after_train_epoch(self, runner) -> None:
        if not will_validate(runner) and (runner.epoch + 1) % self.interval == 0:
            self._report(runner, epoch=runner.epoch + 1, metrics=self._scored({}))

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if not _training(runner):
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
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=f"checkpoint_iter_{iteration:07d}")
        print_log(f"reported the checkpoint of epoch {epoch}, iteration {iteration} to Ray "
                  "Train", logger="current")


class ProgressHook(Hook):
    """A console line every ``interval`` iterations on rank 0 (Ray shows it on the driver)."""

    priority = "LOW"

    def __init__(self, interval: int = 10) -> None:
        self.interval = max(1, interval)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1
        if get_rank() != 0 or (step % self.interval and step != runner.max_iters):
            return
        eta = runner.message_hub.get_info("eta")
        eta_text = str(datetime.timedelta(seconds=int(eta))) if eta is not None else "?"
        speed = images_per_second(runner, data_batch)
        losses = " ".join(f"{k}={v:.4f}" for k, v in _scalars(outputs).items() if "loss" in k)
        # mmengine's logger, not print: Ray Train's patched print would show the line twice.
        print_log(f"bckd: progress epoch={runner.epoch + 1}/{runner.max_epochs} "
                  f"iter={step}/{runner.max_iters} eta={eta_text} "
                  f"images_per_s={speed or 0.0:.1f} {losses}", logger="current")


class ShardAuditHook(Hook):
    """Record the image ids this rank trained on, per epoch (for the data-parallel checks)."""

    priority = "LOW"

    def __init__(self) -> None:
        self.seen: dict[int, list[int]] = {}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        samples = data_batch.get("data_samples", []) if isinstance(data_batch, dict) else []
        ids = self.seen.setdefault(runner.epoch + 1, [])
        ids.extend(int(s.metainfo.get("img_id", -1)) for s in samples)


def params_sha256(model: torch.nn.Module) -> str:
    """Hash of the trainable parameters (BatchNorm running stats are per rank under DDP)."""
    digest = hashlib.sha256()
    for name, param in sorted(_unwrap(model).named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def node_identity() -> dict[str, str]:
    """Where this worker runs: Ray node id, host name and pid."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "host": os.uname().nodename,
            "pid": str(os.getpid())}
