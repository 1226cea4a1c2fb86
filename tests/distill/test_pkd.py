"""PKD in the distiller: its term on every FPN level, the channel adapters (trained, yet kept
out of checkpoints), refused shapes, and the pkd and bckd+pkd configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from distilltools import batch, build, model_cfg
from mmengine.runner.checkpoint import get_state_dict
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict

from bckd.checkpoint import load_state_dict
from bckd.distill import method_name
from bckd.losses import pearson_feature_distillation_loss


def _pkd(name: str = "pkd_gfl", **overrides: object) -> torch.nn.Module:
    cfg = model_cfg(name)
    cfg.teacher_ckpt = None
    cfg.teacher_precision = "fp32"  # the references below recompute the teacher in fp32
    cfg.update(overrides)
    torch.manual_seed(0)
    return build(cfg)


def _student_keys() -> set[str]:
    return set(build(model_cfg("gfl_student")).state_dict())


def test_feature_term_is_pkd_of_adapted_student_features_on_every_level() -> None:
    model = _pkd()
    data = batch(model, size=64)
    losses = model(**data, mode="loss")
    feats = model.extract_feat(data["inputs"])
    with torch.no_grad():
        t_feats = model.teacher.extract_feat(data["inputs"])
    adapters = model.distill_methods["pkd"].adapters
    assert len(adapters) == len(feats) == 5
    expected = 6.0 * sum(pearson_feature_distillation_loss(adapt(f), t)
                         for adapt, f, t in zip(adapters, feats, t_feats, strict=True))
    torch.testing.assert_close(losses["loss_distill_feat"], expected)


def test_adapters_train_with_the_student_but_stay_out_of_checkpoints(tmp_path: Path) -> None:
    model = _pkd()
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("distill_methods.pkd.adapters.") for n in names)
    assert set(model.state_dict()) == _student_keys()
    assert not any("distill_methods" in k for k in model.state_dict(prefix="module."))
    assert set(get_state_dict(model)) == _student_keys()  # mmengine's checkpoint writer
    assert not any(k.startswith("distill_methods") for k in model.state_dict()._metadata)

    before = model.distill_methods["pkd"].adapters[0].weight.detach().clone()
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    total, _ = model.parse_losses(model(**batch(model, size=64), mode="loss"))
    total.backward()
    optim.step()
    assert not torch.equal(before, model.distill_methods["pkd"].adapters[0].weight)

    # The saved student loads strictly into the plain student, and back into the distiller.
    path = tmp_path / "student.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    student = build(model_cfg("gfl_student"))
    student.load_state_dict(load_state_dict(str(path)), strict=True)
    model.load_state_dict(student.state_dict(), strict=True)
    mmengine_load_state_dict(model, student.state_dict(), strict=True)  # as a resume does


def test_differing_widths_are_refused_without_adapters() -> None:
    with pytest.raises(ValueError, match="student's have 64 channels, the teacher's 96; set "
                                         "channel_adapters=True"):
        _pkd(channel_adapters=False)


def test_equal_widths_need_no_adapter() -> None:
    cfg = model_cfg("pkd_gfl")
    cfg.student, cfg.teacher_ckpt, cfg.channel_adapters = model_cfg("gfl_teacher"), None, False
    model = build(cfg)
    assert len(model.distill_methods["pkd"].adapters) == 0
    assert math.isfinite(model(**batch(model, size=64), mode="loss")["loss_distill_feat"].item())


@pytest.mark.parametrize("name,method,terms", [
    ("pkd_gfl", "pkd", {"loss_distill_feat"}),
    ("bckd_pkd_gfl", "bckd+pkd", {"loss_distill_feat", "loss_distill_cls", "loss_distill_loc"}),
])
def test_configs_build_and_step(name: str, method: str, terms: set[str]) -> None:
    assert method_name(model_cfg(name)) == method
    model = _pkd(name)
    losses = model(**batch(model, size=64), mode="loss")
    assert {k for k in losses if k.startswith("loss_distill")} == terms
    for term in terms:
        assert losses[term].requires_grad and math.isfinite(losses[term].item())
    assert losses["loss_distill_feat"].item() > 0


@pytest.mark.parametrize("name,method", [("crosskd_gfl", "crosskd"), ("crosskd_atss", "crosskd"),
                                         ("pkd_gfl", "pkd"), ("bckd_pkd_gfl", "bckd+pkd"),
                                         ("bckd_gfl", "bckd"), ("ld_gfl", "ld"),
                                         ("cwd_gfl", "cwd")])
def test_method_names(name: str, method: str) -> None:
    assert method_name(model_cfg(name)) == method


def test_crosskd_and_pkd_combine() -> None:
    cfg = model_cfg("crosskd_gfl")
    cfg.loss_distill_feat = dict(type="PKDLoss", loss_weight=6.0)
    assert method_name(cfg) == "crosskd+pkd"
