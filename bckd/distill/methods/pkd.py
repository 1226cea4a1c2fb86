"""PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson
Correlation Coefficient", NeurIPS 2022) on every FPN level: ``1 - r`` per channel
(:func:`bckd.losses.pearson_feature_distillation_loss`), the student's features through a 1x1
adapter where the widths differ."""

from __future__ import annotations

from mmdet.registry import MODELS
from torch import Tensor

from bckd.distill.adapters import adapt_features, feature_adapters
from bckd.distill.methods.base import DistillBatch, DistillMethod, Pair, register_method

__all__ = ["PKD"]


@register_method
class PKD(DistillMethod):
    """``loss``: ``PKDLoss``, summed over levels (default weight 6, the authors' configs)."""

    name = "pkd"
    terms = ("loss_distill_feat",)
    reads = frozenset({"features"})

    def __init__(self, pair: Pair, loss: dict | None = None) -> None:
        super().__init__()
        self.loss = MODELS.build(loss or dict(type="PKDLoss", loss_weight=6.0))
        self.adapters = feature_adapters(pair, "PKD (loss_distill_feat)")

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        feats = adapt_features(self.adapters, batch.student.feats)
        return {"loss_distill_feat": self.loss(feats, list(batch.teacher.feats))}
