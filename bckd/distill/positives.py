"""Read which priors the student's head assigned as positives, from the head itself.

The paper normalizes both distillation terms by N, the number of positive samples the student's
head assigned. Every mmdet dense head runs its own assigner inside ``loss_by_feat`` and hands the
resulting labels to its classification loss (a bare label tensor for focal loss, a
``(labels, scores)`` pair for quality focal loss), with background encoded as ``num_classes``.
Re-running the assigners here would duplicate five different code paths; instead a forward
pre-hook on ``head.loss_cls`` records those labels while the student's loss runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from mmdet.utils import reduce_mean
from torch import Tensor, nn

__all__ = ["PositiveRecorder", "record_positives"]


class PositiveRecorder:
    """Labels seen by a head's classification loss during one ``loss_by_feat`` call."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._labels: list[Tensor] = []
        self._num_pos: float | None = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        target = args[1] if len(args) > 1 else kwargs["target"]
        labels = target[0] if isinstance(target, (tuple, list)) else target
        self._labels.append(labels.detach().reshape(-1))
        self._num_pos = None

    def positive_mask(self, batch_size: int, level_sizes: list[int]) -> Tensor:
        """(B, P) bool mask of positive priors, in :func:`flatten_dense_outputs` order.

        Heads pass labels level-major, each level as (B * P_l,), whether in one call or one call
        per level; they are regrouped here into image-major order.
        """
        labels = torch.cat(self._labels)
        expected = batch_size * sum(level_sizes)
        if labels.numel() != expected:
            raise RuntimeError(
                f"the student's classification loss saw {labels.numel()} labels, expected "
                f"{expected} (batch {batch_size} x {sum(level_sizes)} priors)"
            )
        per_level = labels.split([batch_size * n for n in level_sizes])
        labels = torch.cat([lv.reshape(batch_size, -1) for lv in per_level], dim=1)
        return (labels >= 0) & (labels < self.num_classes)

    def num_positives(self) -> float:
        """Positives in this batch, averaged over ranks, at least 1 (the paper's N).

        Computed once (an all-reduce across ranks) and kept: several terms normalize by it.
        """
        if self._num_pos is None:
            count = sum(int(((lb >= 0) & (lb < self.num_classes)).sum()) for lb in self._labels)
            device = self._labels[0].device if self._labels else torch.device("cpu")
            self._num_pos = max(reduce_mean(torch.tensor(float(count), device=device)).item(),
                                1.0)
        return self._num_pos


@contextmanager
def record_positives(head: nn.Module) -> Iterator[PositiveRecorder]:
    """Record the labels ``head.loss_cls`` receives inside the ``with`` block."""
    recorder = PositiveRecorder(head.num_classes)
    handle = head.loss_cls.register_forward_pre_hook(recorder, with_kwargs=True)
    try:
        yield recorder
    finally:
        handle.remove()
