"""Figure 3 maps: one (B, H_l, W_l) map per FPN level; zero where teacher and student agree."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from bckd.evaluation import disagreement_maps, render_disagreement

ROOT = Path(__file__).resolve().parents[2]


def _student():
    register_all_modules()
    cfg = Config.fromfile(ROOT / "configs/synth/gfl_student.py").model
    return MODELS.build(cfg).eval()


def test_maps_per_level_and_zero_for_identical_models(tmp_path):
    torch.manual_seed(0)
    student = _student()
    teacher = copy.deepcopy(student)
    images = torch.randn(2, 3, 64, 96)
    metas = [{"pad_shape": (64, 96), "img_shape": (64, 96)}] * 2
    maps = disagreement_maps(student, teacher, images, metas)
    strides = [8, 16, 32, 64, 128]
    assert [tuple(m.shape) for m in maps] == [(2, -(-64 // s), -(-96 // s)) for s in strides]
    assert all(float(m.abs().max()) == 0.0 for m in maps)
    with torch.no_grad():
        teacher.bbox_head.gfl_cls.bias.add_(1.0)
    maps = disagreement_maps(student, teacher, images, metas)
    assert all(float(m.min()) > 0.0 for m in maps)
    png = render_disagreement([torch.zeros(64, 96, 3, dtype=torch.uint8).numpy()] * 2, maps,
                              tmp_path / "fig3.png", title="test")
    assert Path(png).stat().st_size > 1000
