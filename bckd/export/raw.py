"""The exported graph and its one post-processing function.

The graph is backbone, neck and dense head up to the head's raw per-level maps (``cls_scores``,
``bbox_preds`` and, for ATSS and FCOS, ``centernesses``): every mmdet dense head has them, while
box decoding from priors, the score threshold and NMS are data-dependent Python in the head.
:func:`detections` runs those on the raw maps with the head's own ``predict_by_feat`` (priors,
GFL's integral, the coder, thresholds, mmcv's NMS), for torch and onnxruntime outputs alike.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor, nn

__all__ = ["GROUP_NAMES", "RawHeadOutputs", "detections", "output_names"]

# The head forward's output groups, in order (predict_by_feat's first three arguments).
GROUP_NAMES = ("cls_score", "bbox_pred", "score_factor")


class RawHeadOutputs(nn.Module):
    """``(B, 3, H, W)`` preprocessed images -> the head's maps as one flat tuple, group by group
    and level by level: ``cls_score_0..L-1`` ``(B, A*C, H_l, W_l)``, ``bbox_pred_0..L-1``
    ``(B, A*4 or A*4*(reg_max+1), H_l, W_l)``, then ``score_factor_*`` when the head has them."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        groups = self.detector.bbox_head(self.detector.extract_feat(images))
        return tuple(level for group in groups for level in group)


def output_names(detector: nn.Module, images: Tensor) -> list[str]:
    """``cls_score_0``, ... for ``detector``'s head, by running it once on ``images``."""
    with torch.inference_mode():
        flat = RawHeadOutputs(detector).eval()(images)
    levels = detector.bbox_head.prior_generator.num_levels
    return [f"{GROUP_NAMES[i // levels]}_{i % levels}" for i in range(len(flat))]


def detections(head: nn.Module, raw: Sequence[Tensor], batch_img_metas: Sequence[dict],
               score_thr: float | None = None, rescale: bool = True) -> list[InstanceData]:
    """Per image, the head's detections from its raw maps (the flat tuple of
    :class:`RawHeadOutputs`, torch tensors): ``bboxes (N, 4)`` x1 y1 x2 y2 in the original
    image's pixels (``rescale``), ``scores (N,)``, ``labels (N,)``.

    Args:
        batch_img_metas: per image ``img_shape``, ``scale_factor``, ``ori_shape``, as mmdet's
            data samples carry them after the test pipeline.
        score_thr: replaces the head's ``test_cfg.score_thr`` (NMS and ``max_per_img`` stay).
    """
    levels = head.prior_generator.num_levels
    assert len(raw) % levels == 0 and len(raw) // levels <= len(GROUP_NAMES), f"{len(raw)=}"
    groups = [list(raw[i:i + levels]) for i in range(0, len(raw), levels)]
    cfg = ConfigDict(copy.deepcopy(head.test_cfg))
    if score_thr is not None:
        cfg.score_thr = score_thr
    return head.predict_by_feat(*groups, batch_img_metas=list(batch_img_metas), cfg=cfg,
                                rescale=rescale, with_nms=True)
