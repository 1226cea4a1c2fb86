"""The paper's Figure 3: where the student's class probabilities still differ from the teacher's.

For each FPN level ``l`` and each location, the map is ``sum_c |p_t - p_s|`` over the ``C``
sigmoid class probabilities (averaged over the priors of a location when a head has several).
Bright spots are where distillation still has work to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bckd.distill.dense_outputs import flatten_dense_outputs

__all__ = ["disagreement_maps", "figure3", "render_disagreement"]


@torch.no_grad()
def disagreement_maps(student: nn.Module, teacher: nn.Module, batch_inputs: Tensor,
                      img_metas: Sequence[dict]) -> list[Tensor]:
    """Per level, ``(B, H_l, W_l)`` maps of ``sum_c |sigmoid(t) - sigmoid(s)|``.

    Args:
        student, teacher: one-stage detectors with ``extract_feat`` and a dense ``bbox_head``.
        batch_inputs: (B, 3, H, W) preprocessed images.
        img_metas: per image, with ``pad_shape``.
    """
    maps = []
    outs = {}
    for role, model in (("student", student), ("teacher", teacher)):
        cls_scores, bbox_preds = model.bbox_head(model.extract_feat(batch_inputs))[:2]
        outs[role] = flatten_dense_outputs(model.bbox_head, cls_scores, bbox_preds, img_metas)
        sizes = [tuple(s.shape[-2:]) for s in cls_scores]
    s_prob = outs["student"].logits.sigmoid()  # (B, P, C)
    t_prob = outs["teacher"].logits.sigmoid()
    diff = (t_prob - s_prob).abs().sum(dim=-1)  # (B, P)
    batch = diff.shape[0]
    for level, (h, w) in zip(diff.split(outs["student"].level_sizes, dim=1), sizes, strict=True):
        maps.append(level.reshape(batch, h, w, -1).mean(dim=-1))  # (B, H_l, W_l)
    return maps


def render_disagreement(images: Sequence, maps: Sequence[Tensor], path: str | os.PathLike,
                        title: str = "") -> str:
    """Write a PNG grid: one row per image, the image then one heat map per FPN level.

    Args:
        images: per image an (H, W, 3) uint8 RGB array.
        maps: per level (B, H_l, W_l), as from :func:`disagreement_maps`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(images), len(maps) + 1
    vmax = max(float(m.max()) for m in maps) or 1.0  # one color scale for all levels
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for i, image in enumerate(images):
        axes[i, 0].imshow(image)
        axes[i, 0].set_title("input" if i == 0 else "", fontsize=8)
        for lvl, level_map in enumerate(maps, start=1):
            im = axes[i, lvl].imshow(level_map[i].float().cpu().numpy(), cmap="inferno",
                                     vmin=0.0, vmax=vmax)
            if i == 0:
                axes[i, lvl].set_title(f"P{lvl + 2}", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="sum_c |p_t - p_s|")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)


def figure3(model: nn.Module, dataset, indices: Sequence[int], path: str | os.PathLike,
            title: str = "") -> str:
    """Figure 3 for a ``BCKDDetector`` on ``dataset[i] for i in indices``; returns the PNG path."""
    from mmengine.dataset import pseudo_collate

    data = pseudo_collate([dataset[i] for i in indices])
    was_training = model.training
    model.eval()
    try:
        batch = model.data_preprocessor(data, False)
        metas = [s.metainfo for s in batch["data_samples"]]
        maps = disagreement_maps(model, model.teacher, batch["inputs"], metas)
    finally:
        model.train(was_training)
    images = [img.permute(1, 2, 0).flip(-1).cpu().numpy() for img in data["inputs"]]  # BGR->RGB
    return render_disagreement(images, maps, path, title)
