"""What the hooks read from an mmengine Runner: the bare model, loss scalars, speed, loop state."""

from __future__ import annotations

import math

import torch
from mmengine.dist import get_world_size
from mmengine.model import is_model_wrapper

__all__ = ["evaluation_numbers", "finite_numbers", "images_per_second", "scalars", "training",
           "unwrap", "will_validate"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if is_model_wrapper(model) else model


def scalars(outputs: dict | None) -> dict[str, float]:
    """Loss dict values as floats (tensors of one element, numbers)."""
    out = {}
    for key, value in (outputs or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value.detach())
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def finite_numbers(metrics: dict) -> dict[str, float]:
    """The finite numeric values of ``metrics`` (what MLflow and Ray can record)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def evaluation_numbers(metrics: dict | None, evaluator) -> dict[str, float]:
    """An evaluation's values as MLflow should plot them.

    COCO writes -1 for an area range without ground truth: a marker, not a score, so it is
    dropped. mmdet's ``CocoMetric`` returns nothing at all when the model detected nothing,
    whose COCO mAP is 0 (pycocotools' precision stays 0 where there is ground truth): its
    mAP, mAP_50 and mAP_75 are logged as 0, so the curve starts where the model did."""
    from mmdet.evaluation import CocoMetric

    values = {k: v for k, v in finite_numbers(metrics or {}).items()
              if not ("mAP" in k and v == -1.0)}
    if not metrics:
        for metric in getattr(evaluator, "metrics", ()):
            if isinstance(metric, CocoMetric):
                values.update({f"{metric.prefix}/{kind}_{suffix}": 0.0 for kind in metric.metrics
                               for suffix in ("mAP", "mAP_50", "mAP_75")})
    return values


def images_per_second(runner, data_batch) -> float | None:
    """Global images/s of the last iteration: batch size x world size / iteration time."""
    try:
        seconds = runner.message_hub.get_scalar("train/time").current()
    except KeyError:
        return None
    batch = len(data_batch["inputs"]) if isinstance(data_batch, dict) else 0
    return batch * get_world_size() / seconds if seconds > 0 else None


def training(runner) -> bool:
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
