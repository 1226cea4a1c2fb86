"""The mmdet-registered loss modules build from config and scale the functional losses."""

import pytest
import torch
from mmdet.registry import MODELS

import bckd.losses  # noqa: F401  (registers the modules)
from bckd.losses import (
    BinaryClassificationDistillationLoss,
    IoULocalizationDistillationLoss,
    binary_classification_distillation_loss,
    iou_localization_distillation_loss,
)


def _inputs(n: int = 40, c: int = 5):
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(n, c, generator=g, requires_grad=True)
    zt = torch.randn(n, c, generator=g)
    xy = torch.rand(n, 2, generator=g) * 50
    bs = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 20], 1).requires_grad_(True)
    bt = bs.detach() + torch.randn(n, 4, generator=g)
    weight = (torch.rand(n, generator=g) > 0.2).float()
    return zs, zt, bs, bt, weight


def test_registered_under_their_class_names():
    assert (
        MODELS.get("BinaryClassificationDistillationLoss") is BinaryClassificationDistillationLoss
    )
    assert MODELS.get("IoULocalizationDistillationLoss") is IoULocalizationDistillationLoss


def test_bcdl_module_from_config_applies_beta_and_loss_weight():
    loss = MODELS.build(
        dict(type="BinaryClassificationDistillationLoss", beta=2.0, loss_weight=0.5)
    )
    zs, zt, _, _, weight = _inputs()
    value = loss(zs, zt, weight=weight, avg_factor=7.0)
    expected = binary_classification_distillation_loss(zs, zt, weight, beta=2.0, avg_factor=7.0)
    assert expected.item() > 0
    torch.testing.assert_close(value, 0.5 * expected)
    value.backward()
    assert zs.grad is not None


def test_ildl_module_from_config_applies_iou_mode_and_loss_weight():
    loss = MODELS.build(
        dict(type="IoULocalizationDistillationLoss", iou_mode="iou", loss_weight=2.0)
    )
    zs, zt, bs, bt, weight = _inputs()
    value = loss(bs, bt, zs, zt, weight=weight, avg_factor=7.0)
    expected = iou_localization_distillation_loss(bs, bt, zs, zt, weight, 7.0, iou_mode="iou")
    assert expected.item() > 0
    torch.testing.assert_close(value, 2.0 * expected)
    giou = iou_localization_distillation_loss(bs, bt, zs, zt, weight, 7.0, iou_mode="giou")
    assert not torch.allclose(value, 2.0 * giou)


def test_default_hyper_parameters():
    bcdl = MODELS.build(dict(type="BinaryClassificationDistillationLoss"))
    ildl = MODELS.build(dict(type="IoULocalizationDistillationLoss"))
    assert (bcdl.beta, bcdl.loss_weight) == (1.0, 1.0)
    assert (ildl.iou_mode, ildl.loss_weight) == ("giou", 4.0)
    zs, zt, bs, bt, _ = _inputs()
    torch.testing.assert_close(
        ildl(bs, bt, zs, zt), 4.0 * iou_localization_distillation_loss(bs, bt, zs, zt)
    )


@pytest.mark.parametrize(
    "cfg",
    [
        dict(type="BinaryClassificationDistillationLoss", beta=-1.0),
        dict(type="IoULocalizationDistillationLoss", iou_mode="diou"),
    ],
)
def test_invalid_config_raises(cfg):
    with pytest.raises(ValueError):
        MODELS.build(cfg)
