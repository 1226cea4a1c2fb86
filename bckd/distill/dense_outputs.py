"""Per-prior classification logits and decoded boxes from any mmdet dense head.

Dense heads return one map per FPN level and encode boxes in their own way (GFL's integral
distribution, anchor deltas, FCOS and RTMDet point distances). The distillation losses need the
same thing from every head: for each prior ``i`` of each image, the ``C`` class logits and the box
in image pixels. :func:`flatten_dense_outputs` is that single mechanism; the only per-head piece is
how a regression vector becomes a box, which lives in :data:`BOX_DECODERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from mmdet.models.dense_heads import FCOSHead, GFLHead
from mmdet.structures.bbox import distance2bbox
from torch import Tensor, nn

from bckd.losses.rows import BoxRows, Levels, flatten_level_maps

__all__ = [
    "BOX_DECODERS",
    "DenseOutputs",
    "box_rows",
    "flatten_dense_outputs",
    "register_box_decoder",
    "valid_priors",
]

# Decoder contract: (head, priors (P_l, K), regression (B, P_l, R), stride) -> boxes (B, P_l, 4)
# in pixels, x1 y1 x2 y2. ``priors`` are what ``head.prior_generator.grid_priors`` returns for
# one level: anchors (P_l, 4) for anchor generators, points (P_l, 2) for point generators.
# ``stride`` is the level's int, or a (P_l, 1) tensor when rows of all levels are decoded at
# once (:func:`box_rows`); decoders use it only in products that broadcast either way.
BoxDecoder = Callable[[nn.Module, Tensor, Tensor, int | Tensor], Tensor]
BOX_DECODERS: dict[type, BoxDecoder] = {}


def register_box_decoder(head_type: type) -> Callable[[BoxDecoder], BoxDecoder]:
    """Register how ``head_type`` (and its subclasses) turns regression outputs into boxes."""

    def wrap(fn: BoxDecoder) -> BoxDecoder:
        BOX_DECODERS[head_type] = fn
        return fn

    return wrap


def _find_decoder(head: nn.Module) -> BoxDecoder:
    # Most specific registered class first, so GFL (a subclass of AnchorHead) wins over the default.
    for cls in type(head).__mro__:
        if cls in BOX_DECODERS:
            return BOX_DECODERS[cls]
    return decode_with_bbox_coder


def decode_with_bbox_coder(
    head: nn.Module, priors: Tensor, regression: Tensor, stride: int
) -> Tensor:
    """Default: the head's own ``bbox_coder`` (anchor deltas for RetinaNet/ATSS, point distances
    for RTMDet, whose regression is already in pixels)."""
    batch, num_priors, _ = regression.shape
    # Flat 2-D inputs: with 3-D ones, mmdet's delta coder takes its slow ONNX-export path.
    flat = regression.reshape(batch * num_priors, -1)  # (B*P_l, R)
    boxes = head.bbox_coder.decode(priors.repeat(batch, 1), flat)  # (B*P_l, 4)
    return boxes.reshape(batch, num_priors, 4)


@register_box_decoder(GFLHead)
def decode_gfl(head: nn.Module, priors: Tensor, regression: Tensor, stride: int) -> Tensor:
    """GFL regresses a discrete distribution over ``reg_max + 1`` bins per side, in strides."""
    batch, num_priors, _ = regression.shape
    distances = head.integral(regression.reshape(batch * num_priors, -1)) * stride  # (B*P_l, 4)
    centers = head.anchor_center(priors)  # (P_l, 2)
    centers = centers.unsqueeze(0).expand(batch, num_priors, 2).reshape(-1, 2)
    return distance2bbox(centers, distances).reshape(batch, num_priors, 4)


@register_box_decoder(FCOSHead)
def decode_fcos(head: nn.Module, priors: Tensor, regression: Tensor, stride: int) -> Tensor:
    """FCOS with ``norm_on_bbox`` predicts distances in strides while training and in pixels in
    eval mode (it multiplies by the stride in ``forward_single``); the teacher runs in eval mode
    and the student in train mode, so the scale depends on the head's mode."""
    if head.norm_on_bbox and head.training:
        regression = regression * stride
    return decode_with_bbox_coder(head, priors, regression, stride)


@dataclass
class DenseOutputs:
    """Head outputs flattened over levels; ``P`` is the number of priors of one image.

    logits: (B, P, C) classification logits.
    boxes: (B, P, 4) decoded boxes, x1 y1 x2 y2 in input-image pixels; ``None`` when not
        decoded (``decode_boxes=False``: :func:`box_rows` decodes the rows a loss needs).
    valid: (B, P) bool, priors inside each image's padded shape (False on batch padding).
    level_sizes: number of priors of each level, in order; they sum to ``P``.
    """

    logits: Tensor
    boxes: Tensor | None
    valid: Tensor
    level_sizes: list[int]


def flatten_dense_outputs(
    head: nn.Module,
    cls_scores: Sequence[Tensor],
    bbox_preds: Sequence[Tensor],
    batch_img_metas: Sequence[dict],
    decode_boxes: bool = True,
) -> DenseOutputs:
    """Flatten one dense head's per-level outputs into per-prior logits and pixel boxes.

    Args:
        head: the mmdet dense head that produced the maps (its priors and box coding are used).
        cls_scores: per level (B, A*C, H_l, W_l) logits.
        bbox_preds: per level (B, A*R, H_l, W_l) regression in the head's own encoding.
        batch_img_metas: per image, with ``pad_shape`` (the image's padded size).
        decode_boxes: ``False`` leaves ``boxes`` as ``None``, for callers that hand ILDL
            :func:`box_rows` instead (the distiller does: it decodes only weighted rows).
    """
    featmap_sizes = [tuple(s.shape[-2:]) for s in cls_scores]
    num_base = head.prior_generator.num_base_priors[0]
    return DenseOutputs(
        logits=flatten_level_maps(cls_scores, head.cls_out_channels),
        boxes=_decode_levels(head, bbox_preds) if decode_boxes else None,
        valid=valid_priors(head, featmap_sizes, batch_img_metas, cls_scores[0].device),
        level_sizes=[h * w * num_base for h, w in featmap_sizes],
    )


def _level_priors(head: nn.Module, maps: Sequence[Tensor]) -> tuple[list[Tensor], list[int]]:
    """Each level's priors (P_l, K) for per-level maps (B, *, H_l, W_l), and its stride."""
    featmap_sizes = [tuple(m.shape[-2:]) for m in maps]
    priors = head.prior_generator.grid_priors(featmap_sizes, dtype=maps[0].dtype,
                                              device=maps[0].device)
    strides = [s[0] if isinstance(s, tuple) else s for s in head.prior_generator.strides]
    return priors, strides


def _decode_levels(head: nn.Module, bbox_preds: Sequence[Tensor]) -> Tensor:
    """Per level (B, A*R, H_l, W_l) regression -> (B, P, 4) pixel boxes of every prior."""
    priors, strides = _level_priors(head, bbox_preds)
    decode = _find_decoder(head)
    batch = bbox_preds[0].shape[0]
    boxes = []
    for level_priors, pred, stride in zip(priors, bbox_preds, strides, strict=True):
        regression = pred.permute(0, 2, 3, 1).reshape(batch, level_priors.shape[0], -1)
        boxes.append(decode(head, level_priors, regression, stride))
    return torch.cat(boxes, dim=1)


def box_rows(head: nn.Module, bbox_preds: Sequence[Tensor]) -> BoxRows:
    """What decodes any prior's box later, for ``IoULocalizationDistillationLoss`` (and
    :func:`bckd.losses.fused.fused_distillation_losses`), which decode only the rows with
    non-zero weight.

    Rows are image-major over the batch, ``b * P + p``, as in :class:`DenseOutputs`. The
    regression stays as the per-level maps (B, A*R, H_l, W_l); priors (B*P, K) and strides
    (B*P, 1) are small.
    """
    priors, strides = _level_priors(head, bbox_preds)
    batch = bbox_preds[0].shape[0]
    level_strides = [p.new_full((p.shape[0], 1), s) for p, s in zip(priors, strides, strict=False)]
    channels = bbox_preds[0].shape[1] // head.prior_generator.num_base_priors[0]  # R per prior
    return BoxRows(
        regression=Levels(list(bbox_preds), channels),
        priors=torch.cat(priors).repeat(batch, 1),  # (B*P, K)
        strides=torch.cat(level_strides).repeat(batch, 1),  # (B*P, 1)
        decode=partial(_decode_rows, head, _find_decoder(head)),
    )


def _decode_rows(
    head: nn.Module, decode: BoxDecoder, priors: Tensor, regression: Tensor, strides: Tensor
) -> Tensor:
    """(n, K) priors, (n, R) regression, (n, 1) strides of any levels -> (n, 4) pixel boxes."""
    return decode(head, priors, regression.unsqueeze(0), strides)[0]


def valid_priors(
    head: nn.Module,
    featmap_sizes: Sequence[tuple[int, int]],
    batch_img_metas: Sequence[dict],
    device: torch.device,
) -> Tensor:
    """(B, P) bool: the priors inside each image's ``pad_shape``, in ``grid_priors`` order."""
    # Once per distinct padded shape: the images of a batch mostly share one, and the flags cost
    # a dozen small ops per level and image.
    flags: dict[tuple, Tensor] = {}
    for meta in batch_img_metas:
        shape = tuple(meta["pad_shape"])
        if shape not in flags:
            flags[shape] = torch.cat(head.prior_generator.valid_flags(featmap_sizes, shape, device))
    return torch.stack([flags[tuple(meta["pad_shape"])] for meta in batch_img_metas])
