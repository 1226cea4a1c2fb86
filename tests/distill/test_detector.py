"""BCKDDetector on the five head families: training steps, the frozen teacher, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from distilltools import CONFIGS, FAMILIES, batch, build, distill_cfg, model_cfg, save_teacher
from mmdet.registry import MODELS
from mmengine.config import Config

from bckd.checkpoint import load_state_dict

DISTILL_TERMS = ("loss_distill_cls", "loss_distill_loc")


def _train(
    model: torch.nn.Module, data: dict, steps: int, lr: float, distill_only: bool = False
) -> list[dict[str, float]]:
    """Steps of SGD on one fixed batch; the logged loss values of each step.

    ``distill_only`` descends on the distillation terms alone, so that their decrease measures
    their own gradients rather than the balance with the detection losses.
    """
    optim = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(**data, mode="loss")
        total, log = model.parse_losses(losses)
        if distill_only:
            total = sum(v for k, v in losses.items() if k.startswith("loss_distill"))
        optim.zero_grad()
        total.backward()
        optim.step()
        history.append({k: v.item() for k, v in log.items()})
    return history


@pytest.mark.parametrize("family", FAMILIES)
def test_distillation_step_and_terms_decrease(family: str, teacher_dir: Path) -> None:
    model = build(distill_cfg(family, save_teacher(family, teacher_dir)))
    data = batch(model)
    history = _train(model, data, steps=8, lr=0.005, distill_only=True)
    first = history[0]
    for term in DISTILL_TERMS:
        assert term in first, f"{term} missing from {sorted(first)}"
        values = [h[term] for h in history]
        assert all(math.isfinite(v) for v in values), values
        # Means of the first and last 3 steps: a single step's value wobbles (RTMDet's BCDL
        # rises 20 % from step 1 to 2 at any lr down to 0.001, BatchNorm on a 2-image batch).
        assert sum(values[-3:]) < sum(values[:3]), f"{family} {term}: {values}"
    assert first["distill_num_pos"] >= 1


@pytest.mark.parametrize("method,terms", [("kd", ("loss_distill_cls",)),
                                          ("ld", ("loss_distill_ld",)),
                                          ("bcdl", ("loss_distill_cls",)),
                                          ("ildl", ("loss_distill_loc",))])
def test_baselines_switch_by_config(method: str, terms: tuple[str, ...], teacher_dir: Path) -> None:
    model = build(distill_cfg("gfl", save_teacher("gfl", teacher_dir), method=method))
    losses = model(**batch(model), mode="loss")
    present = {k for k in losses if k.startswith("loss_distill")}
    assert present == set(terms)
    for term in terms:
        assert torch.isfinite(losses[term]) and losses[term].requires_grad


def test_teacher_is_frozen_hidden_and_follows_the_student(teacher_dir: Path) -> None:
    model = build(distill_cfg("gfl", save_teacher("gfl", teacher_dir)))
    student_keys = set(build(model_cfg("gfl_student")).state_dict())
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}

    assert set(model.state_dict()) == student_keys
    teacher_params = {id(p) for p in model.teacher.parameters()}
    assert not teacher_params & {id(p) for p in model.parameters()}
    assert all(not p.requires_grad for p in model.teacher.parameters())

    _train(model, batch(model), steps=2, lr=0.01)
    model.train()
    assert not model.teacher.training and model.bbox_head.training
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included

    model.to(torch.float64)
    assert next(model.teacher.parameters()).dtype == torch.float64


def test_saved_student_loads_into_plain_student(teacher_dir: Path, tmp_path: Path) -> None:
    model = build(distill_cfg("atss", save_teacher("atss", teacher_dir)))
    _train(model, batch(model), steps=1, lr=0.01)
    path = tmp_path / "student.pth"
    torch.save({"state_dict": model.state_dict()}, path)

    student = build(model_cfg("atss_student"))
    student.load_state_dict(load_state_dict(str(path)), strict=True)
    assert torch.equal(student.bbox_head.atss_cls.weight, model.bbox_head.atss_cls.weight)
    model.eval(), student.eval()
    data = batch(student)
    with torch.no_grad():
        ours = model(**data, mode="tensor")
        theirs = student(**data, mode="tensor")
    assert all(torch.allclose(a, b) for a, b in zip(ours[0], theirs[0], strict=True))


def test_teacher_checkpoint_must_match_its_config(teacher_dir: Path) -> None:
    cfg = distill_cfg("gfl", save_teacher("atss", teacher_dir))  # ATSS weights for a GFL teacher
    with pytest.raises(ValueError, match="does not match the teacher config"):
        build(cfg)


def test_missing_teacher_checkpoint_is_named(tmp_path: Path) -> None:
    cfg = distill_cfg("gfl", tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build(cfg)


def test_no_distillation_term_is_refused(teacher_dir: Path) -> None:
    cfg = distill_cfg("gfl", save_teacher("gfl", teacher_dir))
    cfg.loss_distill_cls = cfg.loss_distill_loc = None
    with pytest.raises(ValueError, match="no distillation loss"):
        build(cfg)


@pytest.mark.parametrize(
    ("config", "student_depth", "teacher_depth"),
    [("bckd_gfl_r101_r50_1x_coco.py", 50, 101), ("bckd_rtmdet_l_tiny_coco.py", None, None)],
)
def test_coco_configs_build_their_student_from_mmdets_config(
    config: str, student_depth: int | None, teacher_depth: int | None
) -> None:
    # Their student is `{{_base_.model}}` of an `mmdet::` config, which carries `_scope_`.
    cfg = Config.fromfile(str(CONFIGS.parent / "coco" / config)).model
    assert cfg.student["_scope_"] == "mmdet"
    cfg.teacher_ckpt = None  # random weights: no download, the same modules
    model = MODELS.build(cfg)  # no init_weights: that would fetch ImageNet weights
    assert model.bbox_head.num_classes == model.teacher.bbox_head.num_classes == 80
    if student_depth is not None:
        assert (model.backbone.depth, model.teacher.backbone.depth) == (student_depth,
                                                                         teacher_depth)
    student_params = sum(p.numel() for p in model.parameters())  # the teacher is hidden
    teacher_params = sum(p.numel() for p in model.teacher.parameters())
    assert student_params < teacher_params
