"""KD (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015) on a dense head: a
softmax KL with temperature between the class logits of each valid prior, over N."""

from __future__ import annotations

from bckd.distill.methods.base import LogitsMethod, register_method

__all__ = ["KD"]


@register_method
class KD(LogitsMethod):
    """``loss``: mmdet's ``KnowledgeDistillationKLDivLoss`` (configs/synth/kd_gfl.py's)."""

    name = "kd"
    default_loss = dict(type="KnowledgeDistillationKLDivLoss", T=2, loss_weight=1.0)
