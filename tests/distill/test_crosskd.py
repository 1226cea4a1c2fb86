"""CrossKD: the cross-head path and both terms recomputed by hand from the heads' modules,
gradients, the hidden teacher, checkpoints, and the heads and settings that are refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from distilltools import batch, build, model_cfg
from mmdet.structures.bbox import bbox_overlaps

from bckd.distill import method_name

TERMS = ("loss_distill_crosskd_cls", "loss_distill_crosskd_box")


def _crosskd(family: str = "gfl", **overrides: object) -> torch.nn.Module:
    """``configs/synth/crosskd_<family>.py`` with a random teacher (its own or another's)."""
    cfg = model_cfg(f"crosskd_{family}" if family in ("gfl", "atss") else "crosskd_atss")
    if family not in ("gfl", "atss"):
        cfg.student, cfg.teacher = model_cfg(f"{family}_student"), model_cfg(f"{family}_teacher")
    cfg.teacher_ckpt = None
    cfg.teacher_precision = "fp32"  # the references below recompute the teacher in fp32
    cfg.update(overrides)
    torch.manual_seed(0)
    return build(cfg)


def _levels(maps: list[torch.Tensor], channels: int) -> list[torch.Tensor]:
    """Per level (B, K, H, W) -> (B*H*W, K)."""
    return [m.permute(0, 2, 3, 1).reshape(-1, channels) for m in maps]


def _cross_head_by_hand(model: torch.nn.Module, inputs: torch.Tensor, predictors: tuple[str, str]):
    """The paper's cross-head outputs, written out layer by layer: the student's tower convs
    below the cut d, its 1x1 adapter, the teacher's per-channel mean and std (official
    ``align_scale``), a ReLU, then the teacher's convs from d on, its predictors and Scale
    (RetinaNet has none)."""
    student, teacher = model.bbox_head, model.teacher.bbox_head
    depth = model.distill_methods["crosskd"].depth
    feats = model.extract_feat(inputs)
    with torch.no_grad():
        t_feats = model.teacher.extract_feat(inputs)
    cls_scores, bbox_preds = [], []
    for level, (x, tx) in enumerate(zip(feats, t_feats, strict=True)):
        out = {}
        for tower in ("cls", "reg"):
            s, t = x, tx
            for i in range(depth):
                s = getattr(student, f"{tower}_convs")[i](s)
                with torch.no_grad():
                    t = getattr(teacher, f"{tower}_convs")[i](t)
            s = model.distill_methods["crosskd"].adapters[tower](s)
            s_mean, t_mean = s.mean((0, 2, 3), keepdim=True), t.mean((0, 2, 3), keepdim=True)
            s_std = ((s - s_mean) ** 2).mean((0, 2, 3), keepdim=True).sqrt()
            t_std = ((t - t_mean) ** 2).mean((0, 2, 3), keepdim=True).sqrt()
            f = torch.relu((s - s_mean) / (s_std + 1e-6) * t_std + t_mean)
            for conv in getattr(teacher, f"{tower}_convs")[depth:]:
                f = conv(f)
            out[tower] = f
        cls_scores.append(getattr(teacher, predictors[0])(out["cls"]))
        reg = getattr(teacher, predictors[1])(out["reg"])
        bbox_preds.append(teacher.scales[level](reg) if hasattr(teacher, "scales") else reg)
    with torch.no_grad():
        t_outs = teacher(t_feats)
    return cls_scores, bbox_preds, t_outs[0], t_outs[1]


def _qfl_kd(z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """CrossKD's KDQualityFocalLoss (beta=1) per prior, summed over classes: (N, C) -> (N,)."""
    p_t = z_t.sigmoid()
    bce = -(p_t * F.logsigmoid(z_s) + (1 - p_t) * F.logsigmoid(-z_s))
    return (bce * (z_s.sigmoid() - p_t).abs()).sum(1)


def test_gfl_terms_match_the_paper_recomputed_by_hand() -> None:
    model = _crosskd("gfl")
    data = batch(model, size=64)
    losses = model(**data, mode="loss")
    num_pos = losses["distill_num_pos"].item()
    cls, reg, t_cls, t_reg = _cross_head_by_hand(model, data["inputs"], ("gfl_cls", "gfl_reg"))
    channels, bins = model.bbox_head.cls_out_channels, model.teacher.bbox_head.reg_max + 1

    # Classification: QFL-form BCE against the teacher's scores, every prior, over N.
    expected_cls = sum(_qfl_kd(s, t).sum() for s, t in
                       zip(_levels(cls, channels), _levels(t_cls, channels), strict=True)) / num_pos
    torch.testing.assert_close(losses["loss_distill_crosskd_cls"], expected_cls)

    # Box: KL(teacher || cross-head) summed over bins (class_reduction='sum'), loss_weight 4,
    # each prior weighted by the teacher's top score, over 4 * the sum of the weights.
    weighted, total_weight = 0.0, 0.0
    for s, t, z_t in zip(_levels(reg, 4 * bins), _levels(t_reg, 4 * bins),
                         _levels(t_cls, channels), strict=True):
        p_t = t.reshape(-1, 4, bins).softmax(-1)
        kl = (p_t * (p_t.log() - s.reshape(-1, 4, bins).log_softmax(-1))).sum(-1)  # (n, 4)
        w = z_t.sigmoid().amax(1)  # (n,)
        weighted = weighted + (w[:, None] * kl).sum()
        total_weight = total_weight + w.sum()
    expected_box = 4.0 * weighted / (4 * total_weight)
    torch.testing.assert_close(losses["loss_distill_crosskd_box"], expected_box, rtol=1e-5,
                               atol=1e-7)
    assert expected_box.item() > 0


def _check_giou_and_cls_terms(family: str, predictors: tuple[str, str]) -> None:
    """Both terms of an anchor head's CrossKD recomputed by hand: GIoU between cross-head and
    teacher boxes decoded with the teacher's coder and anchors, weighted by the teacher's top
    score, over N; and the QFL-form BCE on the logits over N."""
    model = _crosskd(family)
    data = batch(model, size=64)
    losses = model(**data, mode="loss")
    num_pos = losses["distill_num_pos"].item()
    cls, reg, t_cls, t_reg = _cross_head_by_hand(model, data["inputs"], predictors)
    head = model.teacher.bbox_head
    anchors = head.prior_generator.grid_priors([m.shape[-2:] for m in reg], device=reg[0].device)
    batch_size = reg[0].shape[0]
    expected = 0.0
    for level_anchors, s, t, z_t in zip(anchors, _levels(reg, 4), _levels(t_reg, 4),
                                        _levels(t_cls, head.cls_out_channels), strict=True):
        # (B*H*W*A, 4) rows are image-major, as the anchors repeated per image.
        level_anchors = level_anchors.repeat(batch_size, 1)
        giou = bbox_overlaps(head.bbox_coder.decode(level_anchors, s),
                             head.bbox_coder.decode(level_anchors, t), mode="giou",
                             is_aligned=True)
        expected = expected + (z_t.sigmoid().amax(1) * (1 - giou)).sum()
    assert expected.item() > 0
    torch.testing.assert_close(losses["loss_distill_crosskd_box"], 1.0 * expected / num_pos)
    channels = head.cls_out_channels
    expected_cls = sum(_qfl_kd(s, t).sum() for s, t in zip(
        _levels(cls, channels), _levels(t_cls, channels), strict=True)) / num_pos
    torch.testing.assert_close(losses["loss_distill_crosskd_cls"], expected_cls)


def test_atss_box_term_is_giou_of_boxes_decoded_with_the_teachers_anchors() -> None:
    _check_giou_and_cls_terms("atss", ("atss_cls", "atss_reg"))


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_gradients_reach_the_student_below_the_cut_and_never_the_teacher(depth: int) -> None:
    model = _crosskd("gfl", crosskd_depth=depth)
    losses = model(**batch(model, size=64), mode="loss")
    sum(losses[t] for t in TERMS).backward()

    head = model.bbox_head
    for tower in ("cls", "reg"):
        for i, conv in enumerate(getattr(head, f"{tower}_convs")):
            grad = conv.conv.weight.grad
            if i < depth:
                assert grad is not None and grad.abs().sum() > 0, (tower, i)
            else:
                assert grad is None, (tower, i)
    assert head.gfl_cls.weight.grad is None and head.gfl_reg.weight.grad is None
    assert head.scales[0].scale.grad is None
    assert model.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    for adapter in model.distill_methods["crosskd"].adapters.values():
        assert adapter.weight.grad.abs().sum() > 0
    teacher_params = list(model.teacher.parameters())
    assert all(not p.requires_grad and p.grad is None for p in teacher_params)


def test_teacher_stays_frozen_hidden_and_out_of_checkpoints() -> None:
    model = _crosskd("gfl")
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    adapter_before = model.distill_methods["crosskd"].adapters["cls"].weight.detach().clone()
    model.train()
    total, _ = model.parse_losses(model(**batch(model, size=64), mode="loss"))
    total.backward()
    optim.step()

    assert not model.teacher.training and model.bbox_head.training
    assert all(torch.equal(before[k], v) for k, v in model.teacher.state_dict().items())
    assert not torch.equal(adapter_before, model.distill_methods["crosskd"].adapters["cls"].weight)
    assert set(model.state_dict()) == set(build(model_cfg("gfl_student")).state_dict())
    # Hooks on the heads live only while a loss is computed.
    for head in (model.bbox_head, model.teacher.bbox_head):
        assert not any(m._forward_pre_hooks for m in head.modules())


@pytest.mark.parametrize("family", ["gfl", "atss"])
def test_config_builds_and_steps(family: str) -> None:
    cfg = model_cfg(f"crosskd_{family}")
    assert method_name(cfg) == "crosskd"
    model = _crosskd(family)
    losses = model(**batch(model, size=64), mode="loss")
    for term in TERMS:
        assert term in losses and losses[term].requires_grad
        assert math.isfinite(losses[term].item()) and losses[term].item() > 0
    assert "loss_distill_cls" not in losses and "loss_distill_loc" not in losses


def test_retinanet_works_too() -> None:
    # 9 anchors per location and no Scale on the regression: the same terms, by hand.
    model = _crosskd("retinanet")
    assert model.teacher.bbox_head.prior_generator.num_base_priors == [9] * 5
    assert not hasattr(model.teacher.bbox_head, "scales")
    _check_giou_and_cls_terms("retinanet", ("retina_cls", "retina_reg"))


def test_equal_widths_need_no_adapter() -> None:
    cfg = model_cfg("crosskd_gfl")
    cfg.student, cfg.teacher_ckpt, cfg.channel_adapters = model_cfg("gfl_teacher"), None, False
    model = build(cfg)
    assert len(model.distill_methods["crosskd"].adapters) == 0
    losses = model(**batch(model, size=64), mode="loss")
    assert all(math.isfinite(losses[t].item()) for t in TERMS)


@pytest.mark.parametrize("family,head", [("fcos", "FCOSHead"), ("rtmdet", "RTMDetSepBNHead")])
def test_heads_without_plain_towers_are_refused_by_name(family: str, head: str) -> None:
    cfg = model_cfg("crosskd_atss")
    cfg.student, cfg.teacher = model_cfg(f"{family}_student"), model_cfg(f"{family}_teacher")
    cfg.teacher_ckpt = None
    with pytest.raises(ValueError, match=f"CrossKD does not support the student head {head}"):
        build(cfg)


@pytest.mark.parametrize("overrides,message", [
    (dict(channel_adapters=False), "student's cls tower gives 64 channels, the teacher's layer "
                                   "takes 96; set channel_adapters=True"),
    (dict(crosskd_depth=3), "crosskd_depth=3 is outside the student head's cls_convs"),
])
def test_misfit_settings_are_refused(overrides: dict, message: str) -> None:
    cfg = model_cfg("crosskd_gfl")
    cfg.teacher_ckpt = None
    cfg.update(overrides)
    with pytest.raises(ValueError, match=message):
        build(cfg)


def test_distribution_box_term_needs_a_gfl_teacher() -> None:
    cfg = model_cfg("crosskd_atss")
    cfg.teacher_ckpt = None
    cfg.loss_distill_crosskd_box = dict(type="KnowledgeDistillationKLDivLoss", T=1)
    with pytest.raises(ValueError, match="the teacher head is ATSSHead: use an IoU loss"):
        build(cfg)


def test_default_depth_is_before_the_teachers_last_tower_conv() -> None:
    model = _crosskd("gfl", crosskd_depth=None)
    assert model.distill_methods["crosskd"].depth == len(model.teacher.bbox_head.cls_convs) - 1 == 1
