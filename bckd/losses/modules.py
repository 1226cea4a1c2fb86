"""mmdet-registered wrappers of the losses: ``MODELS.build(dict(type=..., ...))``.

Each module holds its hyper-parameters and ``loss_weight`` and calls the function in
:mod:`bckd.losses.functional`; ``forward`` takes the function's tensors and reduction arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmdet.registry import MODELS
from torch import Tensor, nn

from bckd.losses.functional import (
    IOU_MODES,
    binary_classification_distillation_loss,
    iou_localization_distillation_loss,
    pearson_feature_distillation_loss,
)

__all__ = ["BinaryClassificationDistillationLoss", "IoULocalizationDistillationLoss", "PKDLoss"]


@MODELS.register_module()
class BinaryClassificationDistillationLoss(nn.Module):
    """BCDL times ``loss_weight``; see :func:`binary_classification_distillation_loss`."""

    def __init__(self, beta: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if not beta > 0:
            raise ValueError(f"{beta=} must be > 0")
        self.beta = beta
        self.loss_weight = loss_weight

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        return self.loss_weight * binary_classification_distillation_loss(
            student_logits, teacher_logits, weight, self.beta, avg_factor
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, loss_weight={self.loss_weight}"


@MODELS.register_module()
class IoULocalizationDistillationLoss(nn.Module):
    """ILDL times ``loss_weight``; see :func:`iou_localization_distillation_loss`."""

    def __init__(self, iou_mode: str = "giou", loss_weight: float = 4.0) -> None:
        super().__init__()
        if iou_mode not in IOU_MODES:
            raise ValueError(f"{iou_mode=} must be one of {IOU_MODES}")
        self.iou_mode = iou_mode
        self.loss_weight = loss_weight

    def forward(
        self,
        student_boxes: Tensor,
        teacher_boxes: Tensor,
        student_logits: Tensor,
        teacher_logits: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        return self.loss_weight * iou_localization_distillation_loss(
            student_boxes,
            teacher_boxes,
            student_logits,
            teacher_logits,
            weight,
            avg_factor,
            iou_mode=self.iou_mode,
        )

    def extra_repr(self) -> str:
        return f"iou_mode={self.iou_mode!r}, loss_weight={self.loss_weight}"


@MODELS.register_module()
class PKDLoss(nn.Module):
    """PKD times ``loss_weight``, summed over feature levels; see
    :func:`pearson_feature_distillation_loss`. Each level counts ``loss_weight`` times its mean,
    as in the authors' configs (one ``PKDLoss`` per FPN level, each with the same weight).
    """

    def __init__(self, loss_weight: float = 1.0, per_image: bool = False) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.per_image = per_image

    def forward(
        self,
        student_feats: Tensor | Sequence[Tensor],
        teacher_feats: Tensor | Sequence[Tensor],
    ) -> Tensor:
        """One ``Tensor[B, C, H, W]`` each, or one per level (same number, same shapes)."""
        if isinstance(student_feats, Tensor):
            student_feats, teacher_feats = [student_feats], [teacher_feats]
        if len(student_feats) != len(teacher_feats) or not student_feats:
            raise ValueError(f"PKD needs one teacher map per student map: {len(student_feats)} "
                             f"student levels, {len(teacher_feats)} teacher levels")
        total = sum(
            pearson_feature_distillation_loss(s, t, per_image=self.per_image)
            for s, t in zip(student_feats, teacher_feats, strict=True)
        )
        return self.loss_weight * total

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, per_image={self.per_image}"
