"""Exact pairs (docs/REPRODUCTION.md): at one seed, a distillation run's student starts from the
student alone's exact weights and, with its distillation terms weighted 0, follows the student
alone's loss trajectory to the last digit. Both fail when the teacher, the losses or the adapters
draw from the global random stream before the student's ``init_weights()`` or the data loader.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from distilltools import CONFIGS, FAMILIES, model_cfg
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner, set_random_seed

from bckd.data.synth import SynthConfig, generate

SEED = 7
# Every distillation config shipped for a family, by the student alone it pairs with.
DISTILL = {f"{f}_student": sorted(p.stem for p in CONFIGS.glob(f"*_{f}.py")) for f in FAMILIES}


def initial_state(cfg) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The student's weights after the Runner's sequence (seed, build, init_weights), and the
    torch generator's state after it (what the data loader's base seed is drawn from)."""
    set_random_seed(SEED)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.state_dict(), torch.get_rng_state()


@pytest.mark.parametrize("student", sorted(DISTILL))
def test_every_method_starts_from_the_student_alones_weights(student: str) -> None:
    assert DISTILL[student], f"no distillation config pairs with {student}"
    want, want_rng = initial_state(model_cfg(student))
    for name in DISTILL[student]:
        cfg = model_cfg(name)
        cfg.teacher_ckpt = None  # a random teacher: its weights don't matter here, only draws
        have, have_rng = initial_state(cfg)
        assert have.keys() == want.keys(), name
        differ = [k for k in want if not torch.equal(have[k], want[k])]
        assert not differ, f"{name}: {len(differ)} tensors differ from {student}'s, {differ[:3]}"
        assert torch.equal(have_rng, want_rng), f"{name} leaves the random stream elsewhere"


def _losses(config: str, data: Path, work_dir: Path, **options) -> dict[str, list[float]]:
    """Per-iteration losses of 3 training iterations of a shipped config through mmengine's
    Runner, in process (the Ray worker calls the same Runner with the same config)."""
    cfg = Config.fromfile(str(CONFIGS / f"{config}.py"))
    cfg.merge_from_dict({
        "train_dataloader.dataset.data_root": f"{data}/", "train_dataloader.batch_size": 4,
        "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
        "train_cfg.max_epochs": 1, "randomness.seed": SEED, "work_dir": str(work_dir),
        "default_hooks.logger.interval": 1, "default_hooks.checkpoint.interval": 100,
        "default_hooks.checkpoint.save_best": None, **options})
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    scalars = runner.message_hub.log_scalars
    return {k: list(v.data[0]) for k, v in scalars.items()
            if k.startswith("train/loss") and "distill" not in k}


def test_zero_weighted_bckd_follows_the_student_alones_trajectory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(SynthConfig(out=data, num_train=12, num_val=2, image_size=128, workers=1),
             progress=False)
    alone = _losses("gfl_student", data, tmp_path / "alone")
    zero = _losses("bckd_gfl", data, tmp_path / "bckd", **{
        "model.teacher_ckpt": None, "model.loss_distill_cls.loss_weight": 0.0,
        "model.loss_distill_loc.loss_weight": 0.0})
    assert set(alone) == set(zero) and {"train/loss_cls", "train/loss_bbox"} <= set(alone)
    assert len(alone["train/loss"]) == 3, alone
    assert zero == alone  # exactly, every logged digit
