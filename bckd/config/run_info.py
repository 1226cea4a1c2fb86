"""What a run is, for MLflow: its method, student, teacher and data set (:func:`describe_run`),
and the config flattened to one param per leaf, under the leaf's dotted key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmengine.config import Config, ConfigDict

from bckd.config.dataset import inner_dataset
from bckd.config.kinds import is_distillation

__all__ = ["RunInfo", "describe_run", "flatten_config"]


@dataclass(frozen=True)
class RunInfo:
    """What a run is, for MLflow tags and params."""

    method: str  # plain, or its methods joined by +: bckd, bckd+pkd (bckd.distill.method_name)
    student: str
    teacher: str  # "" for a plain run
    dataset: str


def _model_name(model: Mapping) -> str:
    head = model.get("bbox_head", {}).get("type", "?")
    backbone = model.get("backbone", {})
    depth = backbone.get("depth", backbone.get("deepen_factor", ""))
    width = backbone.get("base_channels", backbone.get("widen_factor", ""))
    desc = f"{model.get('type', '?')}/{head}/{backbone.get('type', '?')}{depth}"
    return f"{desc}-w{width}" if width != "" else desc


def describe_run(cfg: Config) -> RunInfo:
    """Method, models and data set of a loaded config (MLflow tags and params)."""
    model = cfg.model
    dataset = inner_dataset(cfg.get("train_dataloader")) or {}
    data = f"{dataset.get('type', '?')}:{Path(str(dataset.get('data_root', ''))).name}"
    if not is_distillation(model):
        return RunInfo("plain", _model_name(model), "", data)
    from bckd.distill import method_name, teacher_model_config

    return RunInfo(method_name(model), _model_name(model["student"]),
                   _model_name(teacher_model_config(model["teacher"])), data)


def flatten_config(cfg: Mapping | ConfigDict, prefix: str = "") -> dict[str, str]:
    """``{"model.backbone.depth": "18", ...}``: every leaf of the config, as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = str(value)
    return flat
