"""The towers of a stacked-conv dense head, as CrossKD cuts them.

A supported head (GFL, ATSS, RetinaNet, by exact type) is two towers of stacked convs
(``cls_convs``, ``reg_convs``), each ending in a prediction conv, with a per-level ``Scale`` on
the regression for GFL and ATSS. Layer ``d`` of a tower is its ``d``-th conv, or past the last
one, its prediction conv. Here: each head's layout, a capture of what enters a layer while the
head runs, the teacher's per-channel statistics for the student's features, and the teacher's
layers from ``d`` on applied to given inputs (the cross-head path). The losses over that path
are :mod:`bckd.distill.crosskd`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from mmdet.models.dense_heads import ATSSHead, GFLHead, RetinaHead
from torch import Tensor, nn

__all__ = [
    "TOWERS",
    "TOWER_HEADS",
    "TowerHead",
    "align_channel_stats",
    "channels_in",
    "channels_out",
    "cross_head_forward",
    "tap_towers",
    "tower_head",
]

TOWERS = ("cls", "reg")


@dataclass(frozen=True)
class TowerHead:
    """The end of a stacked-conv head's two towers: its prediction convs' attribute names, and
    whether ``forward_single`` applies ``scales[level]`` to the regression output."""

    cls_out: str
    reg_out: str
    scaled: bool

    def layer(self, head: nn.Module, tower: str, depth: int) -> nn.Module:
        """The layer of ``tower`` ("cls" or "reg") at ``depth``: a tower conv, or past the last
        one, the prediction conv."""
        convs = getattr(head, f"{tower}_convs")
        if depth < len(convs):
            return convs[depth]
        return getattr(head, self.cls_out if tower == "cls" else self.reg_out)


# Exact types: a subclass may change forward_single (VFNetHead subclasses ATSSHead).
TOWER_HEADS: dict[type, TowerHead] = {
    GFLHead: TowerHead("gfl_cls", "gfl_reg", scaled=True),
    ATSSHead: TowerHead("atss_cls", "atss_reg", scaled=True),
    RetinaHead: TowerHead("retina_cls", "retina_reg", scaled=False),
}


def tower_head(role: str, head: nn.Module) -> TowerHead:
    """The layout of ``head``; ``ValueError`` naming the head type when CrossKD cannot cut it."""
    layout = TOWER_HEADS.get(type(head))
    if layout is None:
        supported = ", ".join(t.__name__ for t in TOWER_HEADS)
        raise ValueError(f"CrossKD does not support the {role} head {type(head).__name__}: it "
                         "needs stacked-conv towers ending in prediction convs, as in "
                         f"{supported}")
    return layout


def channels_out(head: nn.Module, tower: str, depth: int) -> int:
    """Channels of the features that enter ``tower``'s layer at ``depth``."""
    if depth == 0:
        return head.in_channels
    return getattr(head, f"{tower}_convs")[depth - 1].conv.out_channels


def channels_in(layer: nn.Module) -> int:
    return layer.conv.in_channels if hasattr(layer, "conv") else layer.in_channels


@contextmanager
def tap_towers(head: nn.Module, layout: TowerHead, depth: int) -> Iterator[dict[str, list[Tensor]]]:
    """Record, per tower and per FPN level, the input of the tower's layer at ``depth`` while
    ``head`` runs its usual forward inside the ``with`` block (levels in call order).

    Inputs, not outputs: a ConvModule's ReLU is in place, so a captured pre-activation would be
    overwritten; the input of layer ``d`` is exactly what the teacher's layer ``d`` receives.
    """
    feats: dict[str, list[Tensor]] = {tower: [] for tower in TOWERS}
    handles = [
        layout.layer(head, tower, depth).register_forward_pre_hook(
            lambda module, args, out=feats[tower]: out.append(args[0]))
        for tower in TOWERS
    ]
    try:
        yield feats
    finally:
        for handle in handles:
            handle.remove()


def align_channel_stats(student: Tensor, teacher: Tensor, eps: float = 1e-6) -> Tensor:
    """Give ``student`` (B, C, H, W) the per-channel mean and std of ``teacher`` (B, C, H, W).

    ``(s - mean_s) / (std_s + eps) * std_t + mean_t``, statistics of each channel over all
    ``B*H*W`` values: the official code's ``align_scale``, but with population stds (the
    official unbiased ones give the same ratio, and NaN on a 1x1 level of a one-image batch).
    The teacher's statistics are constants (detached).
    """
    dims = (0, 2, 3)
    teacher = teacher.detach()
    s_std = student.std(dims, keepdim=True, correction=0)
    normed = (student - student.mean(dims, keepdim=True)) / (s_std + eps)
    return normed * teacher.std(dims, keepdim=True, correction=0) + teacher.mean(dims, keepdim=True)


def cross_head_forward(
    teacher_head: nn.Module,
    layout: TowerHead,
    cls_feats: Sequence[Tensor],
    reg_feats: Sequence[Tensor],
    depth: int,
) -> tuple[list[Tensor], list[Tensor]]:
    """The teacher's layers from ``depth`` on, applied to per-level tower inputs.

    Args:
        cls_feats, reg_feats: per level (B, C_t, H_l, W_l), the inputs of the teacher's layer at
            ``depth`` in each tower.

    Returns:
        Per level, (B, A*C, H_l, W_l) class logits and (B, A*R, H_l, W_l) regression, in the
        teacher head's own encoding (what its ``forward`` returns as the first two outputs).
    """
    cls_scores, bbox_preds = [], []
    for level, (cls_feat, reg_feat) in enumerate(zip(cls_feats, reg_feats, strict=True)):
        for conv in teacher_head.cls_convs[depth:]:
            cls_feat = conv(cls_feat)
        for conv in teacher_head.reg_convs[depth:]:
            reg_feat = conv(reg_feat)
        cls_scores.append(getattr(teacher_head, layout.cls_out)(cls_feat))
        bbox_pred = getattr(teacher_head, layout.reg_out)(reg_feat)
        if layout.scaled:
            bbox_pred = teacher_head.scales[level](bbox_pred).float()  # as forward_single
        bbox_preds.append(bbox_pred)
    return cls_scores, bbox_preds
