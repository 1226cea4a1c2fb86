"""BCKD (Yang et al., "Bridging Cross-task Protocol Inconsistency for Distillation in Dense
Object Detection", ICCV 2023): BCDL on the class logits and ILDL on the boxes, together."""

from __future__ import annotations

from torch import Tensor

from bckd.distill.methods.base import DistillBatch, DistillMethod, Pair, register_method
from bckd.distill.methods.bcdl import BCDL
from bckd.distill.methods.ildl import ILDL

__all__ = ["BCKD"]


@register_method
class BCKD(DistillMethod):
    """``loss_cls``: the BCDL config, ``loss_loc``: the ILDL config (defaults: the paper's)."""

    name = "bckd"
    terms = BCDL.terms + ILDL.terms
    reads = BCDL.reads | ILDL.reads

    def __init__(self, pair: Pair, loss_cls: dict | None = None,
                 loss_loc: dict | None = None) -> None:
        super().__init__()
        self.bcdl = BCDL(pair, loss_cls)
        self.ildl = ILDL(pair, loss_loc)

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        return {**self.bcdl(batch), **self.ildl(batch)}
