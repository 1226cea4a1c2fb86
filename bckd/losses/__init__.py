"""BCKD distillation losses: pure functions, and their mmdet-registered modules.

Importing this package registers ``BinaryClassificationDistillationLoss`` and
``IoULocalizationDistillationLoss`` in ``mmdet.registry.MODELS``.
"""

from bckd.losses.functional import (
    binary_classification_distillation_loss,
    iou_localization_distillation_loss,
)
from bckd.losses.modules import (
    BinaryClassificationDistillationLoss,
    IoULocalizationDistillationLoss,
)

__all__ = [
    "BinaryClassificationDistillationLoss",
    "IoULocalizationDistillationLoss",
    "binary_classification_distillation_loss",
    "iou_localization_distillation_loss",
]
