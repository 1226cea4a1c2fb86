"""CrossKD: the student's head features continue through the teacher's head.

Wang et al., "CrossKD: Cross-Head Knowledge Distillation for Object Detection", CVPR 2024. A
dense head of the supported kind is two towers of stacked convs (``cls_convs``, ``reg_convs``),
each ending in a prediction conv, with a per-level ``Scale`` on the regression for GFL and ATSS.
At depth ``d`` (``0 <= d <= stacked_convs``) CrossKD takes the student's tower features that
enter the tower's layer ``d`` (layer ``stacked_convs`` is the prediction conv), runs them through
the teacher's layers ``d, d+1, ...`` and its prediction convs (and ``Scale``), and distills the
outputs of this cross-head path against the teacher's own predictions:

* classification: BCDL, the QFL-style sigmoid BCE (CrossKD's ``KDQualityFocalLoss``), on every
  valid prior, normalized by N, the student's positives;
* box, GFL: KL between the box distributions (mmdet's ``KnowledgeDistillationKLDivLoss``),
  each prior weighted by the teacher's top class score, normalized by the sum of those weights;
* box, ATSS / RetinaNet: an IoU loss (``GIoULoss``) between the cross-head and teacher boxes,
  both decoded with the teacher's coder and anchors, weighted as above, normalized by N.

Following the official code, the student's features are first given the teacher's per-channel
statistics (``align=True``) and, for ``d > 0``, passed through a ReLU. The teacher's layers get
no gradient (their parameters are frozen) but pass it to the student's layers below depth ``d``.
ATSS's centerness branch is not distilled.

The heads' towers, the feature capture and the cross-head path are :mod:`bckd.distill.towers`;
this module holds the method: its checks, its adapters, its taps and its two terms.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from bckd.distill.adapters import channel_adapter
from bckd.distill.dense_outputs import flatten_dense_outputs, valid_priors
from bckd.distill.methods.base import DistillBatch, DistillMethod, Pair, register_method
from bckd.distill.towers import (
    TOWERS,
    align_channel_stats,
    channels_in,
    channels_out,
    cross_head_forward,
    tap_towers,
    tower_head,
)
from bckd.losses.rows import level_rows

__all__ = ["DISTRIBUTION_LOSSES", "CrossKD"]

# Box losses over GFL's per-side distributions; any other box loss compares decoded boxes.
DISTRIBUTION_LOSSES = ("KnowledgeDistillationKLDivLoss",)


@register_method
class CrossKD(DistillMethod):
    """The two CrossKD terms for one student/teacher pair of stacked-conv heads.

    Holds the loss modules, the cut and, where the widths at the cut differ, one 1x1 adapter
    per tower (``adapters["cls"]``, ``adapters["reg"]``). The teacher's head is read from each
    batch and never stored, so it stays outside the student's module tree.

    Args:
        pair: the heads (checked here: towers CrossKD can cut, the depth, the widths).
        loss_cls: config of the classification term (BCDL), or ``None``.
        loss_box: config of the box term: ``KnowledgeDistillationKLDivLoss`` over GFL's box
            distributions, or a box loss such as ``GIoULoss`` over decoded boxes; or ``None``.
        depth: the cut, ``0 <= depth <= stacked_convs``; ``None`` is the teacher's last tower
            conv (the paper's GFL setting: index 3 of 4 stacked convs).
        align: give the student's features the teacher's per-channel statistics first.
    """

    name = "crosskd"
    terms = ("loss_distill_crosskd_cls", "loss_distill_crosskd_box")
    reads = frozenset({"logits", "boxes", "towers"})

    def __init__(
        self,
        pair: Pair,
        loss_cls: dict | None = None,
        loss_box: dict | None = None,
        depth: int | None = None,
        align: bool = True,
    ) -> None:
        super().__init__()
        if not (loss_cls or loss_box):
            raise ValueError("CrossKD needs loss_cls or loss_box (loss_distill_crosskd_cls or "
                             "loss_distill_crosskd_box)")
        student_head, teacher_head = pair.student, pair.teacher
        self.student_layout = tower_head("student", student_head)
        self.teacher_layout = tower_head("teacher", teacher_head)
        self.depth = len(teacher_head.cls_convs) - 1 if depth is None else depth
        self.align = align
        self.distribution = loss_box is not None and loss_box["type"] in DISTRIBUTION_LOSSES
        self.loss_cls = MODELS.build(loss_cls) if loss_cls else None
        self.loss_box = MODELS.build(loss_box) if loss_box else None
        widths = self._check(student_head, teacher_head, pair.channel_adapters)
        self.adapters = nn.ModuleDict({tower: channel_adapter(have, want)
                                       for tower, (have, want) in widths.items() if have != want})

    def _check(self, student: nn.Module, teacher: nn.Module,
               adapters: bool) -> dict[str, tuple[int, int]]:
        """Per tower, (student channels, teacher channels) at the cut; raises on misfits."""
        depth = self.depth
        for role, head in (("student", student), ("teacher", teacher)):
            for tower in TOWERS:
                convs = len(getattr(head, f"{tower}_convs"))
                if not 0 <= depth <= convs:
                    raise ValueError(f"crosskd_depth={depth} is outside the {role} head's "
                                     f"{tower}_convs: 0 <= depth <= {convs}")
        if self.distribution and not hasattr(teacher, "reg_max"):
            raise ValueError(f"loss_distill_crosskd_box={DISTRIBUTION_LOSSES[0]} needs box "
                             "distributions (a GFL-style teacher head); the teacher head is "
                             f"{type(teacher).__name__}: use an IoU loss such as GIoULoss")
        widths = {}
        for tower in TOWERS:
            have = channels_out(student, tower, depth)
            want = channels_in(self.teacher_layout.layer(teacher, tower, depth))
            if have != want and not adapters:
                raise ValueError(f"CrossKD at depth {depth}: the student's {tower} tower gives "
                                 f"{have} channels, the teacher's layer takes {want}; set "
                                 "channel_adapters=True to bridge them with a trained 1x1 conv "
                                 "(kept out of checkpoints)")
            widths[tower] = (have, want)
        return widths

    def tap(self, head: nn.Module, role: str) -> AbstractContextManager[dict[str, list[Tensor]]]:
        """``with crosskd.tap(head, "student") as feats``: per tower, the inputs at the cut."""
        layout = self.student_layout if role == "student" else self.teacher_layout
        return tap_towers(head, layout, self.depth)

    def bridge(self, student: Tensor, teacher: Tensor, adapter: nn.Module | None) -> Tensor:
        """A student tower input (B, C_s, H, W) -> the teacher layer's input (B, C_t, H, W)."""
        x = adapter(student) if adapter is not None else student
        if self.align:
            x = align_channel_stats(x, teacher)
        # Inside a tower the teacher's layers take ReLU outputs; the FPN features (depth 0) are
        # not rectified.
        return F.relu(x) if self.depth > 0 else x

    def forward(self, batch: DistillBatch) -> dict[str, Tensor]:
        """``loss_distill_crosskd_cls`` and ``loss_distill_crosskd_box`` over N, the student's
        positives; the taps hold per tower, per level (B, C, H_l, W_l) inputs at the cut."""
        student_taps, teacher_taps = batch.student.taps[self.name], batch.teacher.taps[self.name]
        teacher_head, img_metas = batch.teacher.head, batch.img_metas
        adapters = dict(self.adapters.items())  # per tower, where the widths differ
        inputs = {
            tower: [self.bridge(s, t, adapters.get(tower))
                    for s, t in zip(student_taps[tower], teacher_taps[tower], strict=True)]
            for tower in TOWERS
        }
        cross_cls, cross_reg = cross_head_forward(
            teacher_head, self.teacher_layout, inputs["cls"], inputs["reg"], self.depth)
        t_cls, t_reg = batch.teacher.outs[0], batch.teacher.outs[1]
        channels = teacher_head.cls_out_channels
        s_logits = level_rows(cross_cls, channels)  # (B*P, C)
        t_logits = level_rows(t_cls, channels)
        featmap_sizes = [tuple(m.shape[-2:]) for m in t_cls]
        valid = valid_priors(teacher_head, featmap_sizes, img_metas, t_logits.device)
        valid = valid.reshape(-1).to(s_logits.dtype)  # (B*P,)

        losses: dict[str, Tensor] = {}
        if self.loss_cls is not None:
            losses["loss_distill_crosskd_cls"] = self.loss_cls(
                s_logits, t_logits, weight=valid, avg_factor=batch.num_pos)
        if self.loss_box is not None:
            # CrossKD weighs each prior's box by the teacher's top class score.
            score = t_logits.detach().sigmoid().amax(dim=-1) * valid  # (B*P,)
            if self.distribution:
                losses["loss_distill_crosskd_box"] = self._distribution_loss(
                    teacher_head, cross_reg, t_reg, score)
            else:
                cross = flatten_dense_outputs(teacher_head, cross_cls, cross_reg, img_metas)
                target = flatten_dense_outputs(teacher_head, t_cls, t_reg, img_metas)
                losses["loss_distill_crosskd_box"] = self.loss_box(
                    cross.boxes.reshape(-1, 4), target.boxes.reshape(-1, 4),
                    weight=score, avg_factor=batch.num_pos)
        return losses

    def _distribution_loss(self, teacher_head: nn.Module, cross_reg: list[Tensor],
                           t_reg: list[Tensor], score: Tensor) -> Tensor:
        """KL over each side's ``reg_max + 1`` bins, ``sum_i s_i sum_k KL_ik / (4 sum_i s_i)``."""
        bins = teacher_head.reg_max + 1
        s_dist = level_rows(cross_reg, 4 * bins).reshape(-1, bins)  # (B*P*4, bins)
        t_dist = level_rows(t_reg, 4 * bins).reshape(-1, bins)
        weight = score[:, None].expand(-1, 4).reshape(-1)  # (B*P*4,)
        return self.loss_box(s_dist, t_dist, weight=weight, avg_factor=4.0 * score.sum())
