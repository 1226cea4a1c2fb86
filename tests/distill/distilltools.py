"""Build real synthetic-config detectors, small inputs, and teacher checkpoints on disk.

A plain module, not a conftest: test directories here have no ``__init__.py``, so a second
``conftest`` module elsewhere in tests/ would shadow this one on import.
"""

from __future__ import annotations

from pathlib import Path

import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope

import bckd.distill  # noqa: F401  (registers BCKDDetector)
import bckd.losses  # noqa: F401  (registers the distillation losses)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "synth"
FAMILIES = ("gfl", "atss", "retinanet", "fcos", "rtmdet")

init_default_scope("mmdet")


def model_cfg(name: str) -> ConfigDict:
    """The ``model`` of ``configs/synth/<name>.py``."""
    return Config.fromfile(str(CONFIGS / f"{name}.py")).model


def build(cfg: ConfigDict) -> torch.nn.Module:
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def save_teacher(family: str, directory: Path, seed: int = 0) -> Path:
    """An initialized teacher's weights saved as an mmengine checkpoint would hold them."""
    torch.manual_seed(seed)
    teacher = build(model_cfg(f"{family}_teacher"))
    path = directory / f"{family}_teacher.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": teacher.state_dict()}, path)
    return path


def distill_cfg(family: str, teacher_ckpt: Path, method: str = "bckd") -> ConfigDict:
    cfg = model_cfg(f"{method}_{family}")
    cfg.teacher_ckpt = str(teacher_ckpt)
    return cfg


def batch(model: torch.nn.Module, size: int = 128, num_images: int = 2, seed: int = 0) -> dict:
    """A preprocessed batch of random images with 3 random boxes each."""
    torch.manual_seed(seed)
    packed = demo_mm_inputs(
        batch_size=num_images,
        image_shapes=[(3, size, size)] * num_images,
        num_items=[3] * num_images,
        num_classes=8,
        with_mask=False,
    )
    return model.data_preprocessor(packed, True)
