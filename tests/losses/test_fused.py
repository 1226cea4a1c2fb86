"""The fused BCDL + ILDL pass equals the functional losses (values and gradients, 1e-5), decodes
only the boxes of priors with non-zero weight (real mmdet heads), and its compile switch falls
back to eager when compiling is off or fails."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import bckd.losses  # noqa: F401  (registers the loss modules)
from bckd.distill.dense_outputs import box_rows, flatten_dense_outputs
from bckd.losses import fused
from bckd.losses.functional import (
    binary_classification_distillation_loss as bcdl,
)
from bckd.losses.functional import (
    iou_localization_distillation_loss as ildl,
)
from bckd.losses.fused import fused_distillation_losses
from bckd.losses.rows import BoxRows, Levels, level_rows

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "synth"
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def _fresh_compile_state():
    fused.reset_compilation()
    yield
    fused.reset_compilation()


def _inputs(n: int = 3000, c: int = 80, seed: int = 0, zero_frac: float = 0.3):
    """COCO-like rows: logits near the head's prior bias, pixel boxes, ~30% padding weight 0."""
    g = torch.Generator().manual_seed(seed)
    zs = (torch.randn(n, c, generator=g) * 1.5 - 4.6).requires_grad_(True)
    zt = torch.randn(n, c, generator=g) * 1.5 - 4.6
    xy = torch.rand(n, 2, generator=g) * 800
    bs = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 300], 1).requires_grad_(True)
    bt = bs.detach() + torch.randn(n, 4, generator=g) * 20
    weight = (torch.rand(n, generator=g) >= zero_frac).float()
    return zs, zt, bs, bt, weight


def _grads(value: torch.Tensor, *leaves: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, leaves))


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("iou_mode", ["giou", "iou"])
@pytest.mark.parametrize("zero_frac", [0.0, 0.3])
def test_eager_pass_equals_the_functional_losses(beta, iou_mode, zero_frac):
    zs, zt, bs, bt, weight = _inputs(zero_frac=zero_frac)
    cls, loc = fused_distillation_losses(zs, zt, bs, bt, weight, avg_factor=63.0, beta=beta,
                                         iou_mode=iou_mode, compile=False)
    ref_cls = bcdl(zs, zt, weight, beta, avg_factor=63.0)
    ref_loc = ildl(bs, bt, zs, zt, weight, avg_factor=63.0, iou_mode=iou_mode)
    torch.testing.assert_close(cls, ref_cls, **TOL)
    torch.testing.assert_close(loc, ref_loc, **TOL)
    for ours, theirs in zip(_grads(cls + loc, zs, bs), _grads(ref_cls + ref_loc, zs, bs),
                            strict=True):
        torch.testing.assert_close(ours, theirs, **TOL)


def test_weight_that_needs_gradient_gets_the_functional_gradient():
    # A trained weight is not gathered: its zero rows still get d loss / d w_i = loss_i.
    zs, zt, bs, bt, weight = _inputs(n=500)
    weight.requires_grad_(True)
    _, loc = fused_distillation_losses(zs, zt, bs, bt, weight, avg_factor=9.0, compile=False)
    ref = ildl(bs, bt, zs, zt, weight, avg_factor=9.0)
    ours, theirs = _grads(loc, weight)[0], _grads(ref, weight)[0]
    torch.testing.assert_close(ours, theirs, **TOL)
    assert (ours[weight == 0] != 0).any()


def test_the_pass_runs_the_functional_losses_themselves(monkeypatch):
    # One copy of each equation: the pass holds none of its own, so a changed functional loss
    # changes what trains.
    calls = []

    def spy(fn):
        def run(*args, **kwargs):
            calls.append(fn.__name__)
            return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(fused, "binary_classification_distillation_loss", spy(bcdl))
    monkeypatch.setattr(fused, "iou_localization_distillation_loss", spy(ildl))
    zs, zt, bs, bt, weight = _inputs(n=50)
    cls, loc = fused_distillation_losses(zs, zt, bs, bt, weight, 3.0, compile=False)
    assert calls == [bcdl.__name__, ildl.__name__]
    torch.testing.assert_close(cls, bcdl(zs, zt, weight, avg_factor=3.0))
    torch.testing.assert_close(loc, ildl(bs, bt, zs, zt, weight, avg_factor=3.0))


def test_levels_are_flattened_image_major_like_the_distiller():
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, 3 * 5, h, w, generator=g) for h, w in ((4, 6), (2, 3))]  # A=3, K=5
    rows = level_rows(maps, 5)
    assert rows.shape == (2 * 3 * (24 + 6), 5)
    # image 1, level 0, location (y=1, x=2), anchor 2: row P + (1*6 + 2)*3 + 2
    torch.testing.assert_close(rows[90 + (1 * 6 + 2) * 3 + 2], maps[0][1, 10:15, 1, 2])
    zt = [m.flip(1) for m in maps]
    cls, _ = fused_distillation_losses(Levels(maps, 5), Levels(zt, 5), compile=False)
    torch.testing.assert_close(cls, bcdl(rows, level_rows(zt, 5)), **TOL)


def _head_and_outputs(family: str):
    """A real synth-config student head in train mode and its outputs on random features."""
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(CONFIGS / f"{family}_student.py")).model)
    with torch.no_grad():
        outs = model.bbox_head(model.neck(model.backbone(torch.randn(2, 3, 96, 128))))
    # image 1 padded from 64 x 80: its priors outside that get weight 0
    metas = [dict(pad_shape=(96, 128)), dict(pad_shape=(64, 80))]
    return model.bbox_head.train(), outs[0], outs[1], metas


@pytest.mark.parametrize("family", ["gfl", "atss", "retinanet", "fcos", "rtmdet"])
def test_box_rows_decode_only_weighted_priors_and_match_the_flattened_boxes(family):
    head, cls, reg, metas = _head_and_outputs(family)
    flat = flatten_dense_outputs(head, cls, reg, metas)
    weight = flat.valid.reshape(-1).float()  # (B*P,)
    assert 0 < int(weight.sum()) < len(weight)
    boxes = flat.boxes.reshape(-1, 4)
    lazy = flatten_dense_outputs(head, cls, reg, metas, decode_boxes=False)
    assert lazy.boxes is None and torch.equal(lazy.logits, flat.logits)
    rows_s = box_rows(head, [r.detach().requires_grad_(True) for r in reg])
    decoded = []
    spy = BoxRows(rows_s.regression, rows_s.priors, rows_s.strides,
                  lambda p, r, s: decoded.append(len(p)) or rows_s.decode(p, r, s))
    torch.testing.assert_close(rows_s.decode(rows_s.priors, level_rows(
        rows_s.regression.maps, rows_s.regression.channels), rows_s.strides), boxes)

    teacher = boxes.flip(0).detach()  # any other boxes of the same priors
    zs = flat.logits.reshape(-1, flat.logits.shape[-1]).requires_grad_(True)
    zt = zs.detach().flip(0)
    loss = MODELS.build(dict(type="IoULocalizationDistillationLoss", compile=False))
    ours = loss(spy, teacher, zs, zt, weight=weight, avg_factor=5.0)
    assert decoded == [int(weight.sum())]  # the padding's boxes were never decoded
    all_rows = level_rows(rows_s.regression.maps, rows_s.regression.channels)  # (N, R)
    ref = 4.0 * ildl(rows_s.decode(rows_s.priors, all_rows, rows_s.strides), teacher, zs, zt,
                     weight, avg_factor=5.0)
    torch.testing.assert_close(ours, ref, **TOL)
    maps = rows_s.regression.maps
    for a, b in zip(torch.autograd.grad(ours, maps), torch.autograd.grad(ref, maps), strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_modules_take_the_switch_from_config_and_eager_never_compiles(monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("compiled although switched off")

    monkeypatch.setattr(torch, "compile", no_compile)
    zs, zt, bs, bt, weight = _inputs(n=200)
    for compile in (False, "auto"):  # "auto" stays eager below AUTO_MIN_ELEMENTS logits
        cls = MODELS.build(dict(type="BinaryClassificationDistillationLoss", compile=compile))
        loc = MODELS.build(dict(type="IoULocalizationDistillationLoss", compile=compile))
        assert cls.compile_mode == compile and f"compile={compile!r}" in repr(loc)
        torch.testing.assert_close(cls(zs, zt, weight, 3.0), bcdl(zs, zt, weight, 1.0, 3.0))
        torch.testing.assert_close(loc(bs, bt, zs, zt, weight, 3.0),
                                   4.0 * ildl(bs, bt, zs, zt, weight, 3.0))


@pytest.mark.parametrize("compile", ["yes", 1, None])
def test_unknown_switch_values_are_refused(compile):
    with pytest.raises(ValueError, match="compile="):
        MODELS.build(dict(type="BinaryClassificationDistillationLoss", compile=compile))


def test_a_failing_compile_falls_back_to_eager_and_logs_once(monkeypatch, caplog):
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("inductor exploded")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    zs, zt, bs, bt, weight = _inputs(n=300)
    ref = fused_distillation_losses(zs, zt, bs, bt, weight, 7.0, compile=False)
    with caplog.at_level(logging.WARNING, logger="bckd.losses.fused"):
        first = fused_distillation_losses(zs, zt, bs, bt, weight, 7.0, compile=True)
        second = fused_distillation_losses(zs, zt, bs, bt, weight, 7.0, compile=True)
    for got in (first, second):
        torch.testing.assert_close(got, ref)
    assert [r.getMessage() for r in caplog.records] == [
        "bckd fused losses: torch.compile unavailable (RuntimeError: inductor exploded); "
        "running eager"]


def test_a_missing_compiler_falls_back_without_trying(monkeypatch, caplog):
    monkeypatch.setattr(fused.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("tried to compile"))
    zs, zt, bs, bt, weight = _inputs(n=100)
    with caplog.at_level(logging.WARNING, logger="bckd.losses.fused"):
        got = fused_distillation_losses(zs, zt, bs, bt, weight, compile=True)
    torch.testing.assert_close(got, fused_distillation_losses(zs, zt, bs, bt, weight,
                                                              compile=False))
    assert "no C++ compiler" in caplog.text


@pytest.mark.slow  # torch.compile of the pass: about a minute on 2 quiet cores, more when loaded
def test_compiled_pass_equals_eager_in_value_and_gradient():
    zs, zt, bs, bt, weight = _inputs(n=4000)
    for beta in (1.0, 0.5):
        eager = fused_distillation_losses(zs, zt, bs, bt, weight, 11.0, beta=beta, compile=False)
        compiled = fused_distillation_losses(zs, zt, bs, bt, weight, 11.0, beta=beta,
                                             compile=True)
        assert fused._broken is None, fused._broken  # really compiled, no fallback
        for a, b in zip(compiled, eager, strict=True):
            torch.testing.assert_close(a, b, **TOL)
        for a, b in zip(_grads(sum(compiled), zs, bs), _grads(sum(eager), zs, bs), strict=True):
            torch.testing.assert_close(a, b, **TOL)
