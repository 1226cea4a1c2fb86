"""LD (Zheng et al., "Localization Distillation for Dense Object Detection", CVPR 2022): KL
between GFL's per-side box distributions on the student's positive priors, each weighted by the
student's top class score, as mmdet's ``LDHead``."""

from __future__ import annotations

from mmdet.registry import MODELS
from torch import Tensor

from bckd.distill.compat import check_equal
from bckd.distill.methods.base import DistillBatch, DistillMethod, Pair, register_method
from bckd.losses.rows import flatten_level_maps

__all__ = ["LD"]


@register_method
class LD(DistillMethod):
    """``loss``: mmdet's ``KnowledgeDistillationKLDivLoss`` over ``reg_max + 1`` bins (the
    baseline of configs/synth/ld_gfl.py). Needs GFL-style heads with one ``reg_max``."""

    name = "ld"
    terms = ("loss_distill_ld",)
    reads = frozenset({"boxes"})

    def __init__(self, pair: Pair, loss: dict | None = None) -> None:
        super().__init__()
        for role, head in (("student", pair.student), ("teacher", pair.teacher)):
            if not hasattr(head, "reg_max"):
                raise ValueError(f"LD (loss_distill_ld) needs GFL-style heads; the {role} head "
                                 f"is {type(head).__name__}")
        check_equal({"reg_max": (pair.student.reg_max, pair.teacher.reg_max)})
        self.loss = MODELS.build(loss or dict(type="KnowledgeDistillationKLDivLoss", T=10,
                                              loss_weight=0.25))

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        student = batch.dense
        bins = batch.student.head.reg_max + 1
        pos = batch.positives.positive_mask(student.logits.shape[0], student.level_sizes)  # (B, P)
        s_dist = flatten_level_maps(batch.student.outs[1], 4 * bins)[pos].reshape(-1, bins)
        t_dist = flatten_level_maps(batch.teacher.outs[1], 4 * bins)[pos].reshape(-1, bins)
        score = student.logits.detach().sigmoid().amax(dim=-1)[pos]  # (n_pos,)
        weight = score[:, None].expand(-1, 4).reshape(-1)  # (n_pos*4,), per side
        return {"loss_distill_ld": self.loss(s_dist, t_dist, weight=weight, avg_factor=4.0)}
