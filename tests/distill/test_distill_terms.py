"""The BCKD method's BCDL and ILDL equal the functional losses over the valid priors.

The distiller never decodes every box nor flattens the teacher's outputs like the student's:
ILDL decodes only the rows it weighs (``box_rows``), the teacher contributes its logits alone,
and the valid mask is computed once per padded shape. The reference here does all of it the
plain way: both heads through ``flatten_dense_outputs`` with decoded boxes, the invalid priors
dropped, then the functional losses of :mod:`bckd.losses.functional`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from distilltools import FAMILIES, batch, build, distill_cfg, save_teacher
from mmdet.models.utils import unpack_gt_instances

from bckd.distill import flatten_dense_outputs
from bckd.distill.methods import DistillBatch, Side
from bckd.distill.positives import record_positives
from bckd.distill.precision import teacher_forward
from bckd.losses import (
    binary_classification_distillation_loss,
    iou_localization_distillation_loss,
)


@pytest.mark.parametrize("family", FAMILIES)
def test_terms_equal_the_functional_losses_on_valid_priors(family: str, teacher_dir: Path) -> None:
    model = build(distill_cfg(family, save_teacher(family, teacher_dir))).train()
    data = batch(model, size=96, num_images=3)
    gts, ignored, metas = unpack_gt_instances(data["data_samples"])
    metas[1] = {**metas[1], "pad_shape": (64, 96)}  # batch padding below row 64: left out
    outs = model.bbox_head(model.extract_feat(data["inputs"]))
    with record_positives(model.bbox_head) as positives:
        model.bbox_head.loss_by_feat(*outs, gts, metas, ignored)
    _, t_outs = teacher_forward(model.teacher, data["inputs"], "fp32")
    num_pos = positives.num_positives()

    bckd = model.distill_methods["bckd"]
    got = bckd(DistillBatch(Side(model.bbox_head, None, outs, {}),
                            Side(model.teacher.bbox_head, None, t_outs, {}), metas, positives))
    assert set(got) == {"loss_distill_cls", "loss_distill_loc"}

    s = flatten_dense_outputs(model.bbox_head, outs[0], outs[1], metas)
    t = flatten_dense_outputs(model.teacher.bbox_head, t_outs[0], t_outs[1], metas)
    valid = s.valid.reshape(-1)
    assert 0 < valid.sum() < valid.numel()

    def rows(x: torch.Tensor) -> torch.Tensor:  # (B, P, K) -> (n_valid, K)
        return x.reshape(-1, x.shape[-1])[valid]

    want = {
        "loss_distill_cls": bckd.bcdl.loss.loss_weight
        * binary_classification_distillation_loss(
            rows(s.logits), rows(t.logits), beta=bckd.bcdl.loss.beta, avg_factor=num_pos),
        "loss_distill_loc": bckd.ildl.loss.loss_weight
        * iou_localization_distillation_loss(
            rows(s.boxes), rows(t.boxes), rows(s.logits), rows(t.logits), avg_factor=num_pos,
            iou_mode=bckd.ildl.loss.iou_mode),
    }
    student_maps = [*outs[0], *outs[1]]
    for term, value in want.items():
        assert value > 0, term
        torch.testing.assert_close(got[term], value, rtol=1e-5, atol=1e-7)
        grads = torch.autograd.grad(got[term], student_maps, retain_graph=True,
                                    allow_unused=True)
        ref_grads = torch.autograd.grad(value, student_maps, retain_graph=True,
                                        allow_unused=True)
        for g, r in zip(grads, ref_grads, strict=True):
            if r is None:
                assert g is None or not g.any()
            else:
                torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)
