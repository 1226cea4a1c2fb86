"""The teacher's forward: inference mode, reduced precision, fp32 outputs, every method's backward,
and the ``teacher_precision`` setting refused by the detector and by the config policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from distilltools import CONFIGS, batch, build, model_cfg
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from bckd.distill.precision import cpu_has_native_bf16, resolve_precision, teacher_forward

# |reduced - fp32| of a random GFL teacher's head outputs at 64 px, over each map's RMS,
# measured: largest 0.081 and mean 0.016 for bf16 (8 mantissa bits), 0.0097 and 0.0020 for fp16
# (11); the trained demo teacher's are smaller (bf16 0.027, 0.004). The bounds are about twice
# the random teacher's.
MAX_ERROR = {"bf16": 0.15, "fp16": 0.02}
MEAN_ERROR = {"bf16": 0.03, "fp16": 0.005}
# Every distillation config shipped for the synthetic set.
METHOD_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.py")
                        if Config.fromfile(str(p)).model.type == "BCKDDetector")


@pytest.fixture(scope="module")
def gfl_teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(model_cfg("gfl_teacher")).eval()


def _maps(outs: tuple) -> list[torch.Tensor]:
    return [m for level_maps in outs for m in level_maps]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_teacher_forward_gives_fp32_outputs_close_to_fp32(gfl_teacher, precision: str) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_feats = gfl_teacher.extract_feat(x)
        ref = _maps(gfl_teacher.bbox_head(ref_feats))
    feats, outs = teacher_forward(gfl_teacher, x, precision, with_feats=True)
    got = _maps(outs)
    for t in got + list(feats):
        assert t.dtype == torch.float32 and not t.is_inference(), (t.dtype, t.is_inference())
    if precision == "fp32":  # the same kernels, only the autograd mode differs: exact
        assert all(torch.equal(a, b) for a, b in zip(got + list(feats), ref + list(ref_feats),
                                                     strict=True))
        return
    for a, b in zip(got, ref, strict=True):
        err = (a - b).abs() / b.pow(2).mean().sqrt()
        assert err.max() <= MAX_ERROR[precision], f"{precision} {err.max()=}"
        assert err.mean() <= MEAN_ERROR[precision], f"{precision} {err.mean()=}"
    assert not all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))  # it did autocast


@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_every_method_trains_a_step_with_the_teacher_in_inference_mode(name: str) -> None:
    """One ``train_step`` of each shipped method config, its teacher in fp32 (where outputs would
    reach autograd uncopied, were they not copied) on a 64 px image."""
    cfg = model_cfg(name)
    cfg.teacher_ckpt, cfg.teacher_precision = None, "fp32"
    torch.manual_seed(0)
    model = build(cfg).train()
    modes = []
    # The teacher's neck runs for every method (PKD and CWD need no teacher head).
    model.teacher.neck.register_forward_hook(
        lambda *_: modes.append(torch.is_inference_mode_enabled()))
    student = [*model.backbone.parameters(), *model.neck.parameters(),
               *model.bbox_head.parameters()]  # PKD reaches the FPN only, the others the head
    before = [p.detach().clone() for p in student]
    data = batch(model, size=64, num_images=1)
    losses = model(**data, mode="loss")
    terms = {k: v for k, v in losses.items() if k.startswith("loss_distill")}
    assert terms and all(v.requires_grad and torch.isfinite(v) for v in terms.values()), terms
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    optim.update_params(sum(terms.values()))
    assert modes == [True], modes
    assert any(not torch.equal(a, b) for a, b in zip(before, student, strict=True))
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", None)])
def test_the_distiller_runs_the_teacher_as_configured_and_crosskd_with_gradients(
        precision: str, dtype: torch.dtype | None) -> None:
    """The teacher's own forward under inference mode and autocast; CrossKD's pass of the
    student's features through the teacher's layers outside both, with gradients."""
    cfg = model_cfg("crosskd_gfl")
    cfg.teacher_ckpt, cfg.teacher_precision = None, precision
    torch.manual_seed(0)
    model = build(cfg).train()
    calls = []
    model.teacher.bbox_head.gfl_cls.register_forward_hook(lambda m, args, out: calls.append((
        torch.is_inference_mode_enabled(), out.dtype, args[0].requires_grad)))
    model(**batch(model, size=64, num_images=1), mode="loss")
    levels = len(model.teacher.bbox_head.prior_generator.strides)
    assert calls[:levels] == [(True, dtype or torch.float32, False)] * levels
    assert calls[levels:] == [(False, torch.float32, True)] * levels  # the cross-head path


def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_elsewhere(tmp_path: Path,
                                                                    monkeypatch) -> None:
    for flags, native in (("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True),
                          ("fpu avx512f avx512bw", False)):
        cpuinfo = tmp_path / f"cpuinfo-{native}-{len(flags)}"
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert cpu_has_native_bf16(cpuinfo) is native, flags
    import bckd.distill.precision as precision

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"  # not measured on GPUs
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"  # explicit: as asked


def test_an_invalid_precision_is_refused_naming_the_key_and_value() -> None:
    cfg = model_cfg("bckd_gfl")
    cfg.teacher_ckpt, cfg.teacher_precision = None, "bf32"
    with pytest.raises(ValueError, match="teacher_precision='bf32' is not one of 'auto', 'fp32'"):
        build(cfg)
    with pytest.raises(ValueError, match="teacher_precision=16 is not one of"):
        resolve_precision(16, torch.device("cpu"))


def test_the_config_policy_refuses_an_invalid_precision_as_data() -> None:
    from bckd.config.policy import ConfigPolicy, PolicyError, check_config

    cfg = Config.fromfile(str(CONFIGS / "bckd_gfl.py")).to_dict()
    cfg.pop("custom_imports")
    for value in ("auto", "fp32", "bf16", "fp16"):
        cfg["model"]["teacher_precision"] = value
        check_config(cfg, ConfigPolicy(configs_dir=None))
    cfg["model"]["teacher_precision"] = "float8"
    with pytest.raises(PolicyError, match="'float8' is not one of") as err:
        check_config(cfg, ConfigPolicy(configs_dir=None))
    assert err.value.key == "model.teacher_precision"
