"""The BCKD distillation losses as pure functions over flattened priors, and PKD's feature loss.

Yang et al., "Bridging Cross-task Protocol Inconsistency for Distillation in Dense Object
Detection", ICCV 2023. Every prior ``i`` of every FPN level and image is one row; callers flatten
the levels once (``(B, C, H, W)`` per level -> ``(N, C)``) and pass all priors in one call.

* BCDL (binary classification distillation): a binary cross-entropy per class against the
  teacher's sigmoid scores, modulated by ``|p_t - p_s| ** beta`` as in Quality Focal Loss.
* ILDL (IoU-based localization distillation): ``1 - GIoU(student box, teacher box)`` per prior,
  weighted by the largest per-class score gap ``max_c |p_t - p_s|``.

Both reduce like mmdet losses, ``sum_i weight_i * loss_i / avg_factor``, but without mmdet's eps
in the denominator (callers clamp, ``max(1, num_pos)``).

* PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via Pearson
  Correlation Coefficient", NeurIPS 2022): MSE between channel-normalized FPN feature maps, i.e.
  ``1 - r`` with ``r`` the Pearson correlation of each channel of student and teacher.

These functions are the code that trains, not a reference beside it: the compiled pass of
:mod:`bckd.losses.fused` and the registered modules call them, and their argument rules (the
``check_*`` functions below) are the only copy. This module imports torch only, so the methods
can be read, tested and reused without mmdet or mmcv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IOU_MODES",
    "binary_classification_distillation_loss",
    "check_avg_factor",
    "check_beta",
    "check_boxes",
    "check_iou_mode",
    "check_logits",
    "iou_localization_distillation_loss",
    "pearson_feature_distillation_loss",
]

IOU_MODES = ("iou", "giou")


def binary_classification_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weight: Tensor | None = None,
    beta: float = 1.0,
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """BCDL: ``sum_i w_i sum_c BCE(z_s[i, c], p_t[i, c]) * |p_t[i, c] - p_s[i, c]| ** beta``.

    Args:
        student_logits: ``Tensor[N, C]`` classification logits of the student, before sigmoid.
        teacher_logits: ``Tensor[N, C]`` teacher logits; detached here, the teacher gets no grad.
        weight: optional ``Tensor[N]`` per-prior weight (e.g. the head's label weights; zero
            excludes a prior). Not detached.
        beta: exponent of the modulating factor, ``> 0``. The factor is not detached from the
            student, as in Quality Focal Loss; its gradient at ``p_s == p_t`` is taken as 0.
        avg_factor: normaliser of the weighted sum (e.g. the number of positive priors; callers
            clamp it, ``max(1, num_pos)``). ``None`` divides by ``N``, the number of rows.

    Returns:
        Scalar tensor. ``N == 0`` gives ``0.0 * student_logits.sum()``, which keeps the graph.
    """
    check_logits(student_logits.shape, teacher_logits.shape, _shape(weight))
    check_beta(beta)
    if student_logits.shape[0] == 0:
        return 0.0 * student_logits.sum()

    target = teacher_logits.detach().sigmoid()  # (N, C), p_t
    gap = (student_logits.sigmoid() - target).abs()  # (N, C), |p_s - p_t|
    if beta == 1.0:
        modulator = gap
    elif beta > 1.0:
        modulator = gap.pow(beta)
    else:
        # d/dx x**beta is infinite at x == 0 for beta < 1 and autograd would give 0 * inf = nan
        # where student and teacher agree; route those entries around pow, so their gradient is 0.
        nonzero = gap > 0
        modulator = torch.where(nonzero, torch.where(nonzero, gap, 1.0).pow(beta), 0.0)
    bce = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")  # (N, C)
    per_prior = (bce * modulator).sum(dim=1)  # (N,)
    return _weighted_mean(per_prior, weight, avg_factor)


def iou_localization_distillation_loss(
    student_boxes: Tensor,
    teacher_boxes: Tensor,
    student_logits: Tensor,
    teacher_logits: Tensor,
    weight: Tensor | None = None,
    avg_factor: float | Tensor | None = None,
    iou_mode: str = "giou",
    eps: float = 1e-6,
) -> Tensor:
    """ILDL: ``sum_i w_i * max_c |p_t[i, c] - p_s[i, c]| * (1 - GIoU(b_s[i], b_t[i]))``.

    Args:
        student_boxes: ``Tensor[N, 4]`` decoded student boxes, ``x1, y1, x2, y2`` with
            ``x2 >= x1`` and ``y2 >= y1``. Any unit (pixels, or the head's stride units): the
            loss is invariant to a common scale of both boxes of a prior.
        teacher_boxes: ``Tensor[N, 4]`` teacher boxes of the same priors, same format and unit;
            detached here.
        student_logits: ``Tensor[N, C]`` student classification logits; only used, detached, for
            the per-prior factor ``u_i = max_c |p_t - p_s|``.
        teacher_logits: ``Tensor[N, C]`` teacher classification logits; detached here.
        weight: optional ``Tensor[N]`` per-prior weight; zero excludes a prior. Not detached.
        avg_factor: normaliser of the weighted sum; ``None`` divides by ``N``.
        iou_mode: ``"giou"`` (the paper) or ``"iou"`` (then ``1 - IoU``).
        eps: lower bound of union and enclosing areas, in squared box units (as mmdet).

    Returns:
        Scalar tensor. ``N == 0`` gives ``0.0 * student_boxes.sum()``, which keeps the graph.
    """
    check_logits(student_logits.shape, teacher_logits.shape, _shape(weight))
    check_boxes("student_boxes", student_boxes.shape, student_logits.shape)
    check_boxes("teacher_boxes", teacher_boxes.shape, student_logits.shape)
    check_iou_mode(iou_mode)
    if student_boxes.shape[0] == 0:
        return 0.0 * student_boxes.sum()

    with torch.no_grad():
        gap = student_logits.sigmoid() - teacher_logits.sigmoid()  # (N, C)
        uncertainty = gap.abs_().amax(dim=1)  # (N,), u_i
    iou = _aligned_box_iou(student_boxes, teacher_boxes.detach(), mode=iou_mode, eps=eps)  # (N,)
    return _weighted_mean(uncertainty * (1.0 - iou), weight, avg_factor)


def pearson_feature_distillation_loss(
    student_feats: Tensor,
    teacher_feats: Tensor,
    per_image: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """PKD on one feature level: ``mean((norm(F_s) - norm(F_t)) ** 2) / 2``.

    ``norm`` gives each channel zero mean and unit standard deviation,
    ``(x - mean) / (std + eps)``. As in the authors' code (mmrazor's ``PKDLoss``, copied into
    CrossKD), the statistics of channel ``c`` are taken over the whole batch, all ``B*H*W``
    values. Unlike that code, ``std`` is the population one (divisor ``M``, not ``M - 1``):
    the loss is then exactly ``mean_c (1 - r_c)`` (``eps`` aside), ``r_c`` the Pearson
    correlation of student and teacher in channel ``c`` (the unbiased one scales it by
    ``(M - 1) / M``, which is 1/2 on a 1x1 level of two images), and it stays defined on a 1x1
    level of one image, where the unbiased ``std`` is NaN. The loss ignores each channel's
    scale and offset.

    Args:
        student_feats: ``Tensor[B, C, H, W]`` student features (after any channel adapter).
        teacher_feats: ``Tensor[B, C, H, W]``, same shape; detached here.
        per_image: take the statistics per image and channel over ``H*W`` instead of per
            channel over the batch; the loss is then the mean over images and channels of
            ``1 - r``.
        eps: added to the standard deviation, as the authors' code does.

    Returns:
        Scalar tensor, the mean over all ``B*C*H*W`` elements.
    """
    if student_feats.ndim != 4 or teacher_feats.shape != student_feats.shape:
        raise ValueError("PKD needs feature maps of one shape (B, C, H, W): "
                         f"{student_feats.shape=} {teacher_feats.shape=}")
    dims = (2, 3) if per_image else (0, 2, 3)
    normed_s = _standardize(student_feats, dims, eps)
    normed_t = _standardize(teacher_feats.detach(), dims, eps)
    return F.mse_loss(normed_s, normed_t) / 2


def _standardize(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """``(x - mean) / (std + eps)``, mean and population std over ``dims`` (kept)."""
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, correction=0)
    return (x - mean) / (std + eps)


def _aligned_box_iou(
    boxes1: Tensor, boxes2: Tensor, mode: str = "giou", eps: float = 1e-6
) -> Tensor:
    """IoU or GIoU of row-aligned boxes ``Tensor[N, 4]`` (``x1, y1, x2, y2``) -> ``Tensor[N]``.

    Same definition and ``eps`` clamping as mmdet's ``bbox_overlaps(..., is_aligned=True)``;
    kept here so that this module does not import mmdet (tests check the two agree). One
    difference: a box with ``x2 < x1`` or ``y2 < y1`` counts as empty. ILDL runs on every prior,
    and an untrained point head (RTMDet without ``exp_on_reg``) predicts negative distances;
    with a signed area the union goes to ``eps`` and the loss to -1e5 and beyond.
    """
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).clamp(min=0).prod(dim=1)  # (N,)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).clamp(min=0).prod(dim=1)
    inter_wh = torch.min(boxes1[:, 2:], boxes2[:, 2:]) - torch.max(boxes1[:, :2], boxes2[:, :2])
    inter = inter_wh.clamp(min=0).prod(dim=1)  # (N,)
    union = (area1 + area2 - inter).clamp(min=eps)
    iou = inter / union
    if mode == "iou":
        return iou
    hull_wh = torch.max(boxes1[:, 2:], boxes2[:, 2:]) - torch.min(boxes1[:, :2], boxes2[:, :2])
    hull = hull_wh.clamp(min=0).prod(dim=1).clamp(min=eps)  # (N,), smallest enclosing box
    return iou - (hull - union) / hull


def _weighted_mean(
    per_prior: Tensor, weight: Tensor | None, avg_factor: float | Tensor | None
) -> Tensor:
    """``sum_i weight_i * per_prior_i / avg_factor``; ``avg_factor=None`` means ``N``."""
    if weight is not None:
        per_prior = per_prior * weight
    check_avg_factor(avg_factor)
    if avg_factor is None:
        avg_factor = per_prior.shape[0]
    return per_prior.sum() / avg_factor


# The argument rules, stated once: the losses here, the fused pass (before it flattens any map)
# and the registered modules (when a config is built) all call these.


def check_logits(student: Sequence[int], teacher: Sequence[int],
                 weight: Sequence[int] | None) -> None:
    """Shapes of student and teacher logits, both ``(N, C)``, and of a ``(N,)`` weight."""
    student, teacher = tuple(student), tuple(teacher)
    if len(student) != 2 or teacher != student:
        raise ValueError(f"logits must both be (N, C): student.shape={student} "
                         f"teacher.shape={teacher}")
    if weight is not None and tuple(weight) != student[:1]:
        raise ValueError(f"weight.shape={tuple(weight)} must be (N,), N the rows of the logits "
                         f"{student}")


def check_boxes(name: str, boxes: Sequence[int], logits: Sequence[int]) -> None:
    """Boxes ``name`` are ``(N, 4)``, one per row of the ``(N, C)`` logits."""
    if tuple(boxes) != (logits[0], 4):
        raise ValueError(f"{name}.shape={tuple(boxes)} must be (N, 4), one box per row of the "
                         f"logits {tuple(logits)}")


def check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"{beta=} must be > 0")


def check_iou_mode(iou_mode: str) -> None:
    if iou_mode not in IOU_MODES:
        raise ValueError(f"{iou_mode=} must be one of {IOU_MODES}")


def check_avg_factor(avg_factor: float | Tensor | None) -> None:
    if avg_factor is not None and not isinstance(avg_factor, Tensor) and not avg_factor > 0:
        raise ValueError(f"{avg_factor=} must be > 0")


def _shape(x: Tensor | None) -> tuple[int, ...] | None:
    return None if x is None else tuple(x.shape)
