"""The teacher's COCO metrics on the val set, once before a distillation run's first epoch."""

from __future__ import annotations

import torch

from bckd.engine.hooks.runner_state import unwrap

__all__ = ["evaluate_teacher"]


@torch.no_grad()
def evaluate_teacher(runner) -> dict[str, float]:
    """COCO metrics of ``model.teacher`` on the val loader, computed on all ranks like ValLoop."""
    teacher = unwrap(runner.model).teacher
    evaluator = runner.val_evaluator
    for data_batch in runner.val_dataloader:
        outputs = teacher.test_step(data_batch)
        evaluator.process(data_samples=outputs, data_batch=data_batch)
    return evaluator.evaluate(len(runner.val_dataloader.dataset))
