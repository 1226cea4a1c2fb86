"""Helpers of the export tests: a tiny synthetic data set and real student checkpoints.

Checkpoints are written as mmengine writes them (``meta['cfg']`` holds the config's text), from
detectors built by mmdet from this project's synth configs with their own initialization; the
trained case is tests/export/test_from_run.py, a real ``bckd train`` job.
"""

from __future__ import annotations

from pathlib import Path

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import bckd.distill  # noqa: F401  (registers BCKDDetector)
import bckd.losses  # noqa: F401
from bckd.data.synth import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "synth"

init_default_scope("mmdet")


def make_synth(out: Path, num_val: int = 6) -> Path:
    """``num_val`` val images (and 2 train) of 128 px in ``out``."""
    generate(SynthConfig(out=out, num_train=2, num_val=num_val, image_size=128, workers=1),
             progress=False)
    return out


def config(name: str, data: Path, **options) -> Config:
    """``configs/synth/<name>.py`` pointed at the data set in ``data``."""
    cfg = Config.fromfile(str(CONFIGS / f"{name}.py"))
    root = f"{data}/"
    cfg.merge_from_dict({"val_dataloader.dataset.data_root": root,
                         "test_dataloader.dataset.data_root": root,
                         "train_dataloader.dataset.data_root": root,
                         "val_evaluator.ann_file": f"{root}annotations/instances_val.json",
                         **options})
    return cfg


def save_checkpoint(cfg: Config, state_dict: dict, path: Path, with_cfg: bool = True) -> Path:
    meta = {"epoch": 1, "iter": 1, **({"cfg": cfg.pretty_text} if with_cfg else {})}
    torch.save({"meta": meta, "state_dict": state_dict}, path)
    return path


def plain_checkpoint(name: str, data: Path, directory: Path, seed: int = 0) -> Path:
    """A ``<name>`` detector's initialized weights as an mmengine checkpoint with its config."""
    cfg = config(name, data)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return save_checkpoint(cfg, model.state_dict(), directory / f"{name}.pth")


def numel(module: torch.nn.Module) -> int:
    """Parameters and buffers of ``module``."""
    return sum(t.numel() for t in (*module.parameters(), *module.buffers()))
