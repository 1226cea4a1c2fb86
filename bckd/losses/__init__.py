"""Distillation losses: pure functions (the code that trains), the compiled pass that runs BCDL
and ILDL, and their mmdet-registered modules.

Importing this package registers ``BinaryClassificationDistillationLoss``,
``IoULocalizationDistillationLoss`` and ``PKDLoss`` in ``mmdet.registry.MODELS``.
"""

from bckd.losses.functional import (
    binary_classification_distillation_loss,
    iou_localization_distillation_loss,
    pearson_feature_distillation_loss,
)
from bckd.losses.fused import fused_distillation_losses
from bckd.losses.modules import (
    BinaryClassificationDistillationLoss,
    IoULocalizationDistillationLoss,
    PKDLoss,
)

__all__ = [
    "BinaryClassificationDistillationLoss",
    "IoULocalizationDistillationLoss",
    "PKDLoss",
    "binary_classification_distillation_loss",
    "fused_distillation_losses",
    "iou_localization_distillation_loss",
    "pearson_feature_distillation_loss",
]
