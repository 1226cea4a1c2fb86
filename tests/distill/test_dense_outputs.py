"""flatten_dense_outputs decodes every head's boxes as the head's own inference does."""

from __future__ import annotations

import pytest
import torch
from distilltools import FAMILIES, batch, build, model_cfg
from mmengine.config import ConfigDict

from bckd.distill import flatten_dense_outputs
from bckd.distill.dense_outputs import valid_priors
from bckd.distill.positives import record_positives

# Keep every (prior, class) pair: no score threshold, no top-k, no NMS, no clipping.
KEEP_ALL = ConfigDict(nms_pre=-1, score_thr=-1.0, min_bbox_size=-1, max_per_img=-1)


def _head_outputs(family: str, training: bool) -> tuple:
    torch.manual_seed(0)
    model = build(model_cfg(f"{family}_student"))
    model.train(training)
    data = batch(model, size=96)
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(data["inputs"]))
    metas = [s.metainfo for s in data["data_samples"]]
    return model, outs, metas


@pytest.mark.parametrize("family", FAMILIES)
def test_boxes_match_the_heads_own_decoding(family: str) -> None:
    model, outs, metas = _head_outputs(family, training=False)
    flat = flatten_dense_outputs(model.bbox_head, outs[0], outs[1], metas)
    num_priors = sum(flat.level_sizes)
    assert flat.logits.shape == (2, num_priors, 8)
    assert flat.boxes.shape == (2, num_priors, 4) and flat.valid.shape == (2, num_priors)

    huge = [{**m, "img_shape": (10**5, 10**5)} for m in metas]  # disables clipping to the image
    extra = {"score_factors": outs[2]} if len(outs) > 2 and family in ("atss", "fcos") else {}
    results = model.bbox_head.predict_by_feat(
        outs[0], outs[1], batch_img_metas=huge, cfg=KEEP_ALL, rescale=False, with_nms=False,
        **extra)
    # With everything kept, the head returns each prior's box once per class; it clips boxes at
    # 0 (distance2bbox and delta2bbox clamp to the image), the distillation boxes are not clipped.
    theirs = results[0].bboxes.unique(dim=0)
    ours = flat.boxes[0].clamp(min=0).unique(dim=0)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    torch.testing.assert_close(ours.sort(dim=0).values, theirs.sort(dim=0).values,
                               rtol=1e-4, atol=1e-3)


def test_fcos_boxes_agree_between_train_and_eval_mode() -> None:
    # FCOS predicts distances in strides while training and in pixels in eval mode.
    # Same features for both; only the head's mode changes (its GroupNorm has no running stats).
    model, _, metas = _head_outputs("fcos", training=False)
    data = batch(model, size=96)
    head = model.bbox_head
    with torch.no_grad():
        feats = model.extract_feat(data["inputs"])
        eval_outs = head(feats)
        head.train()
        train_outs = head(feats)
    train_boxes = flatten_dense_outputs(head, *train_outs[:2], metas).boxes
    head.eval()
    eval_boxes = flatten_dense_outputs(head, *eval_outs[:2], metas).boxes
    torch.testing.assert_close(train_boxes, eval_boxes, rtol=1e-4, atol=1e-3)


def test_batch_padding_is_invalid() -> None:
    model, outs, metas = _head_outputs("gfl", training=False)
    metas[1] = {**metas[1], "pad_shape": (64, 96)}  # second image only fills the top 64 rows
    flat = flatten_dense_outputs(model.bbox_head, outs[0], outs[1], metas)
    assert flat.valid[0].all()
    assert 0 < flat.valid[1].sum() < flat.valid.shape[1]


@pytest.mark.parametrize("family", ("gfl", "atss", "retinanet", "fcos"))
def test_positive_count_is_what_the_head_normalizes_by(family: str) -> None:
    model = build(model_cfg(f"{family}_student"))
    model.train()
    data = batch(model)
    head = model.bbox_head
    seen = []
    handle = head.loss_cls.register_forward_pre_hook(
        lambda m, a, kw: seen.append(float(kw["avg_factor"])), with_kwargs=True)
    with record_positives(head) as recorder:
        outs = head(model.extract_feat(data["inputs"]))
        gts = [s.gt_instances for s in data["data_samples"]]
        head.loss_by_feat(*outs, gts, [s.metainfo for s in data["data_samples"]])
    handle.remove()
    assert recorder.num_positives() == pytest.approx(seen[-1])
    level_sizes = [o.shape[-2] * o.shape[-1] * head.num_base_priors for o in outs[0]]
    mask = recorder.positive_mask(batch_size=2, level_sizes=level_sizes)
    assert mask.sum().item() == pytest.approx(seen[-1])


def test_valid_priors_are_each_images_own_flags() -> None:
    # valid_priors computes the flags once per distinct pad_shape; each row must still be the
    # flags of its own image's pad_shape, whatever the order of the shapes in the batch.
    model, outs, metas = _head_outputs("gfl", training=False)
    head, cpu = model.bbox_head, torch.device("cpu")
    sizes = [tuple(o.shape[-2:]) for o in outs[0]]
    pads = [(96, 96), (64, 96), (96, 96), (96, 32)]
    valid = valid_priors(head, sizes, [{**metas[0], "pad_shape": p} for p in pads], cpu)
    for row, pad in zip(valid, pads, strict=True):
        assert torch.equal(row, torch.cat(head.prior_generator.valid_flags(sizes, pad, cpu)))
    assert not torch.equal(valid[0], valid[1]) and not torch.equal(valid[1], valid[3])
