"""CWD: the channel-wise divergence against its definition, the method's term on every FPN
level of a real distiller, and the cwd_gfl config (adapters trained, out of checkpoints)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from distilltools import batch, build, model_cfg

from bckd.distill import method_name
from bckd.distill.methods.cwd import channel_wise_divergence


def _by_definition(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """Sum over images and channels of KL(p_t || p_s) over the H*W locations, times tau^2, over
    B*C; written with torch's kl_div and explicit loops."""
    total = 0.0
    for b in range(s.shape[0]):
        for c in range(s.shape[1]):
            log_p_s = (s[b, c].reshape(-1) / tau).log_softmax(0)
            log_p_t = (t[b, c].reshape(-1) / tau).log_softmax(0)
            total = total + F.kl_div(log_p_s, log_p_t, log_target=True, reduction="sum")
    return tau**2 * total / (s.shape[0] * s.shape[1])


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_divergence_is_the_papers(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 4, 5, generator=g)
    got = channel_wise_divergence(s, t, tau)
    torch.testing.assert_close(got, _by_definition(s, t, tau))
    assert got.item() > 0
    got.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_divergence_ignores_a_channels_offset_and_vanishes_on_the_teacher() -> None:
    t = torch.randn(2, 3, 4, 4)
    offset = torch.randn(2, 3, 1, 1)  # a softmax over locations does not see it
    assert channel_wise_divergence(t + offset, t).abs().item() < 1e-6
    assert channel_wise_divergence(2 * t, t).item() > 1e-3


def test_misshapen_maps_are_refused() -> None:
    with pytest.raises(ValueError, match="CWD needs feature maps of one shape"):
        channel_wise_divergence(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, 4))


def _cwd(**overrides: object) -> torch.nn.Module:
    cfg = model_cfg("cwd_gfl")
    cfg.teacher_ckpt, cfg.teacher_precision = None, "fp32"  # fp32: the reference recomputes it
    cfg.update(overrides)
    torch.manual_seed(0)
    return build(cfg)


def test_term_is_cwd_of_adapted_student_features_on_every_level() -> None:
    model = _cwd()
    method = model.distill_methods["cwd"]
    data = batch(model, size=64)
    losses = model(**data, mode="loss")
    assert {k for k in losses if k.startswith("loss_distill")} == {"loss_distill_cwd"}
    feats = model.extract_feat(data["inputs"])
    with torch.no_grad():
        t_feats = model.teacher.extract_feat(data["inputs"])
    assert len(method.adapters) == len(feats) == 5
    expected = 10.0 * sum(_by_definition(adapt(f), t, 1.0)
                          for adapt, f, t in zip(method.adapters, feats, t_feats, strict=True))
    torch.testing.assert_close(losses["loss_distill_cwd"], expected)


def test_config_trains_its_adapters_and_keeps_them_out_of_checkpoints() -> None:
    assert method_name(model_cfg("cwd_gfl")) == "cwd"
    model = _cwd()
    assert set(model.state_dict()) == set(build(model_cfg("gfl_student")).state_dict())
    adapter = model.distill_methods["cwd"].adapters[0]
    before = adapter.weight.detach().clone()
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    total, log = model.parse_losses(model(**batch(model, size=64), mode="loss"))
    assert math.isfinite(log["loss_distill_cwd"].item()) and log["loss_distill_cwd"].item() > 0
    total.backward()
    optim.step()
    assert not torch.equal(before, adapter.weight)


def test_differing_widths_are_refused_without_adapters() -> None:
    with pytest.raises(ValueError, match="CWD compares FPN features of one shape: the student's "
                                         "have 64 channels, the teacher's 96"):
        _cwd(channel_adapters=False)


def test_cwd_combines_with_bckd_as_a_list() -> None:
    cfg = model_cfg("bckd_gfl")
    cfg.methods, cfg.channel_adapters = [dict(type="CWD")], True
    assert method_name(cfg) == "bckd+cwd"
