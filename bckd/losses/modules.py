"""mmdet-registered wrappers of the losses: ``MODELS.build(dict(type=..., ...))``.

Each module holds its hyper-parameters and ``loss_weight``; ``forward`` takes the functional
loss's tensors and reduction arguments. BCDL and ILDL run the functional losses through
:func:`bckd.losses.fused.fused_distillation_losses`, compiled per their ``compile`` switch
(``True``, ``False``, or ``"auto"``: compile at COCO-scale inputs only), e.g.
``loss_distill_cls=dict(type="BinaryClassificationDistillationLoss", compile=False)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmdet.registry import MODELS
from torch import Tensor, nn

from bckd.losses.functional import check_beta, check_iou_mode, pearson_feature_distillation_loss
from bckd.losses.fused import check_compile_mode, fused_distillation_losses
from bckd.losses.rows import BoxRows

__all__ = ["BinaryClassificationDistillationLoss", "IoULocalizationDistillationLoss", "PKDLoss"]


@MODELS.register_module()
class BinaryClassificationDistillationLoss(nn.Module):
    """BCDL times ``loss_weight``; see :func:`binary_classification_distillation_loss`."""

    def __init__(
        self, beta: float = 1.0, loss_weight: float = 1.0, compile: bool | str = "auto"
    ) -> None:
        super().__init__()
        check_beta(beta)  # when the config is built, not at the first step
        self.beta = beta
        self.loss_weight = loss_weight
        self.compile_mode = check_compile_mode(compile)  # not `self.compile`: nn.Module's method

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        cls, _ = fused_distillation_losses(student_logits, teacher_logits, weight=weight,
                                           avg_factor=avg_factor, beta=self.beta,
                                           compile=self.compile_mode)
        return self.loss_weight * cls

    def extra_repr(self) -> str:
        return f"beta={self.beta}, loss_weight={self.loss_weight}, compile={self.compile_mode!r}"


@MODELS.register_module()
class IoULocalizationDistillationLoss(nn.Module):
    """ILDL times ``loss_weight``; see :func:`iou_localization_distillation_loss`.

    The boxes may be :class:`~bckd.losses.rows.BoxRows` instead of ``Tensor[N, 4]``: then only
    the priors with non-zero ``weight`` are decoded.
    """

    def __init__(
        self, iou_mode: str = "giou", loss_weight: float = 4.0, compile: bool | str = "auto"
    ) -> None:
        super().__init__()
        check_iou_mode(iou_mode)
        self.iou_mode = iou_mode
        self.loss_weight = loss_weight
        self.compile_mode = check_compile_mode(compile)

    def forward(
        self,
        student_boxes: Tensor | BoxRows,
        teacher_boxes: Tensor | BoxRows,
        student_logits: Tensor,
        teacher_logits: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
    ) -> Tensor:
        _, loc = fused_distillation_losses(
            student_logits, teacher_logits, student_boxes, teacher_boxes, weight=weight,
            avg_factor=avg_factor, iou_mode=self.iou_mode, with_cls=False,
            compile=self.compile_mode)
        return self.loss_weight * loc

    def extra_repr(self) -> str:
        return (f"iou_mode={self.iou_mode!r}, loss_weight={self.loss_weight}, "
                f"compile={self.compile_mode!r}")


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
