"""ILDL alone (the BCKD paper's ablation): ``1 - GIoU`` between student and teacher boxes of
every valid prior, weighted by the largest class-score gap, over N
(:func:`bckd.losses.iou_localization_distillation_loss`)."""

from __future__ import annotations

from mmdet.registry import MODELS
from torch import Tensor

from bckd.distill.dense_outputs import box_rows
from bckd.distill.methods.base import DistillBatch, DistillMethod, Pair, register_method

__all__ = ["ILDL"]


@register_method
class ILDL(DistillMethod):
    """``loss``: ``IoULocalizationDistillationLoss`` (the paper's GIoU, weight 4). Boxes stay
    encoded until the loss decodes the rows it weighs (:func:`box_rows`): none on padding."""

    name = "ildl"
    terms = ("loss_distill_loc",)
    reads = frozenset({"logits", "boxes"})

    def __init__(self, pair: Pair, loss: dict | None = None) -> None:
        super().__init__()
        self.loss = MODELS.build(loss or dict(type="IoULocalizationDistillationLoss",
                                              iou_mode="giou", loss_weight=4.0))

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        s_logits, t_logits, weight = batch.logit_rows
        student, teacher = batch.student, batch.teacher
        return {"loss_distill_loc": self.loss(
            box_rows(student.head, student.outs[1]), box_rows(teacher.head, teacher.outs[1]),
            s_logits, t_logits, weight=weight, avg_factor=batch.num_pos)}
