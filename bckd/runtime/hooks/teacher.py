"""The teacher's COCO metrics on the val set, once before a distillation run's first epoch."""

from __future__ import annotations

import torch

from bckd.distill.randomness import preserved_rng
from bckd.runtime.hooks.runner_state import unwrap

__all__ = ["evaluate_teacher"]


@torch.no_grad()
def evaluate_teacher(runner) -> dict[str, float]:
    """COCO metrics of ``model.teacher`` on the val loader, computed on all ranks like ValLoop.

    The student alone evaluates nothing before training, so this runs under a preserved random
    state: the first pass over the val loader draws its base seed from torch's generator, which
    would shift the training loader's and break the exact pairing of a seed's runs."""
    teacher = unwrap(runner.model).teacher
    evaluator = runner.val_evaluator
    with preserved_rng():
        for data_batch in runner.val_dataloader:
            outputs = teacher.test_step(data_batch)
            evaluator.process(data_samples=outputs, data_batch=data_batch)
        return evaluator.evaluate(len(runner.val_dataloader.dataset))
