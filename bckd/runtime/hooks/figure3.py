"""The Figure 3 picture of a distillation run after each evaluation, as an MLflow artifact."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from mmengine.logging import print_log

from bckd.distill.randomness import preserved_rng
from bckd.tracking.runs import RunWriter

__all__ = ["log_figure3"]


def log_figure3(writer: RunWriter, runner, model, num_images: int, artifact_dir: str) -> None:
    """Draw the teacher-student disagreement maps of the first ``num_images`` val images and log
    the PNG under ``artifact_dir``; a failure is logged as a warning, never raised."""
    from bckd.evaluation import figure3

    dataset = runner.val_dataloader.dataset
    indices = list(range(min(num_images, len(dataset))))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"figure3_epoch_{runner.epoch:03d}.png"
        try:
            with preserved_rng():  # the student alone draws no picture: keep the pairs exact
                figure3(model, dataset, indices, path,
                        title=f"sum_c |p_t - p_s| per FPN level, epoch {runner.epoch}")
        except Exception as err:  # noqa: BLE001 - a picture must never stop training
            print_log(f"figure 3 failed: {err!r}", logger="current", level=logging.WARNING)
            return
        writer.log_artifact(path, artifact_dir)
