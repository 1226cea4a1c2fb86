"""BCDL alone (the BCKD paper's ablation): the binary classification distillation loss on the
class logits of every valid prior, over N
(:func:`bckd.losses.binary_classification_distillation_loss`)."""

from __future__ import annotations

from bckd.distill.methods.base import LogitsMethod, register_method

__all__ = ["BCDL"]


@register_method
class BCDL(LogitsMethod):
    """``loss``: ``BinaryClassificationDistillationLoss`` (the paper's beta 1, weight 1)."""

    name = "bcdl"
    default_loss = dict(type="BinaryClassificationDistillationLoss", beta=1.0, loss_weight=1.0)
