"""Load a job's mmengine config and check it before any worker starts.

Everything here runs on the driver, so a bad input fails in seconds with one message naming the
problem, instead of minutes later inside a Ray worker: a missing config file, an override key
that does not exist, a missing data set, a teacher checkpoint that does not fit its config.

Paths in the config (``data_root``, ``ann_file``, ``teacher_ckpt``, ``work_dir``) are made absolute
against the driver's working directory, because Ray workers do not share it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict

__all__ = [
    "RunInfo",
    "check_dataset",
    "check_override_keys",
    "check_teacher",
    "describe_run",
    "flatten_config",
    "load_config",
    "resolve_paths",
]

_MISSING = object()


def _lookup(cfg: Any, parts: list[str]) -> Any:
    """The value at a dotted path (list items by integer index), or ``_MISSING``."""
    node = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for part in parts:
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(node) <= index < len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def check_override_keys(cfg: Config, options: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``options`` ready for ``cfg.merge_from_dict``; raise if a key does not exist.

    mmengine silently adds unknown keys, so a typo (``optim_wraper.optimizer.lr=0.01``) would
    train with the default. A key that starts with ``+`` adds a new leaf on purpose
    (``+train_dataloader.dataset.indices=16``); its parent must exist.
    """
    merged: dict[str, Any] = {}
    for key, value in options.items():
        add = key.startswith("+")
        name = key.removeprefix("+")
        parts = name.split(".")
        if add:
            parent = _lookup(cfg, parts[:-1])
            if not isinstance(parent, Mapping):
                raise ValueError(f"--cfg-options {name}: {'.'.join(parts[:-1])!r} is not a dict "
                                 "in the config")
        elif _lookup(cfg, parts) is _MISSING:
            hint = _closest_existing(cfg, parts)
            raise ValueError(f"--cfg-options key {name!r} does not exist in the config "
                             f"({hint}); prefix it with '+' to add a new key")
        merged[name] = value
    return merged


def _closest_existing(cfg: Config, parts: list[str]) -> str:
    for depth in range(len(parts) - 1, -1, -1):
        node = _lookup(cfg, parts[:depth])
        if node is not _MISSING:
            where = ".".join(parts[:depth]) or "the top level"
            keys = sorted(node.keys()) if isinstance(node, Mapping) else []
            return f"{where} has keys {keys}" if keys else f"{where} has no key {parts[depth]!r}"
    return "no such key"


def load_config(path: str | os.PathLike, options: Mapping[str, Any] | None = None) -> Config:
    """Read an mmengine config file and apply checked ``--cfg-options``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        cfg = Config.fromfile(str(path))
    except (SyntaxError, NameError, KeyError, TypeError, ImportError) as err:
        raise ValueError(f"config {path} does not load: {type(err).__name__}: {err}") from None
    if options:
        cfg.merge_from_dict(check_override_keys(cfg, options))
    return cfg


def _absolute(path: str | None, base: Path) -> str | None:
    if path is None or "://" in str(path) or "::" in str(path):  # URIs, "mmdet::..." configs
        return path
    return str((base / path).resolve()) if not os.path.isabs(path) else str(path)


def resolve_paths(cfg: Config, base: str | os.PathLike | None = None) -> Config:
    """Make data, annotation, checkpoint and work-dir paths absolute (in place)."""
    base = Path(base or os.getcwd())
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = _inner_dataset(cfg.get(loader))
        if dataset is not None and dataset.get("data_root"):
            root = _absolute(dataset["data_root"], base)
            dataset["data_root"] = root.rstrip("/") + "/"
    for name in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(name)
        if isinstance(evaluator, Mapping) and evaluator.get("ann_file"):
            evaluator["ann_file"] = _absolute(evaluator["ann_file"], base)
    model = cfg.get("model", {})
    if model.get("type") == "BCKDDetector":
        model["teacher_ckpt"] = _absolute(model.get("teacher_ckpt"), base)
        if isinstance(model.get("teacher"), str):
            model["teacher"] = _absolute(model["teacher"], base)
    for key in ("work_dir", "load_from"):
        if cfg.get(key):
            cfg[key] = _absolute(cfg[key], base)
    return cfg


def _inner_dataset(loader: Any) -> Any:
    """The dataset config of a dataloader, looking through wrappers (RepeatDataset...)."""
    if not isinstance(loader, Mapping):
        return None
    dataset = loader.get("dataset")
    while isinstance(dataset, Mapping) and "dataset" in dataset and "ann_file" not in dataset:
        dataset = dataset["dataset"]
    return dataset


def check_dataset(cfg: Config) -> None:
    """Raise ``FileNotFoundError`` naming the first missing annotation file or image folder."""
    hint = "(write the synthetic set with `bckd data synth --out DIR`, or set data_root)"
    loaders = ["train_dataloader"] + (["val_dataloader"] if cfg.get("val_cfg") else [])
    for loader in loaders:
        dataset = _inner_dataset(cfg.get(loader))
        if dataset is None:
            raise ValueError(f"config has no {loader}.dataset")
        root = Path(dataset.get("data_root") or "")
        ann = dataset.get("ann_file")
        if ann and not (root / ann).is_file():
            raise FileNotFoundError(f"dataset not found: {loader} annotation file {root / ann} "
                                    f"does not exist {hint}")
        img = (dataset.get("data_prefix") or {}).get("img")
        if img and not (root / img).is_dir():
            raise FileNotFoundError(f"dataset not found: {loader} image folder {root / img} "
                                    f"does not exist {hint}")
    evaluator = cfg.get("val_evaluator")
    if (cfg.get("val_cfg") and isinstance(evaluator, Mapping) and evaluator.get("ann_file")
            and not Path(evaluator["ann_file"]).is_file()):
        raise FileNotFoundError(f"dataset not found: val_evaluator.ann_file "
                                    f"{evaluator['ann_file']} does not exist {hint}")


def check_teacher(cfg: Config) -> None:
    """For a distillation config, load the teacher checkpoint into the teacher config now.

    Raises ``FileNotFoundError`` if the checkpoint is missing and ``ValueError`` (naming keys or
    shapes) if it does not fit; plain detector configs pass.
    """
    model = cfg.get("model", {})
    if model.get("type") != "BCKDDetector":
        return
    ckpt = model.get("teacher_ckpt")
    if ckpt is None:
        return  # the distiller warns that the teacher stays random
    if not Path(ckpt).is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: {ckpt} (train the teacher first, "
                                "e.g. `bckd train <teacher config>`, or set model.teacher_ckpt)")
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    from bckd.distill import build_teacher

    import_modules_from_strings(**cfg.get("custom_imports", {"imports": []}))
    init_default_scope(cfg.get("default_scope", "mmdet"))
    build_teacher(model["teacher"], ckpt)


@dataclass(frozen=True)
class RunInfo:
    """What a run is, for MLflow tags and params."""

    method: str  # plain, kd, ld, bcdl, ildl or bckd (bckd.distill.method_name)
    student: str
    teacher: str  # "" for a plain run
    dataset: str
    loss_weights: dict[str, float]


def _model_name(model: Mapping) -> str:
    head = model.get("bbox_head", {}).get("type", "?")
    backbone = model.get("backbone", {})
    depth = backbone.get("depth", backbone.get("deepen_factor", ""))
    width = backbone.get("base_channels", backbone.get("widen_factor", ""))
    desc = f"{model.get('type', '?')}/{head}/{backbone.get('type', '?')}{depth}"
    return f"{desc}-w{width}" if width != "" else desc


def describe_run(cfg: Config) -> RunInfo:
    model = cfg.model
    dataset = _inner_dataset(cfg.get("train_dataloader")) or {}
    data = f"{dataset.get('type', '?')}:{Path(str(dataset.get('data_root', ''))).name}"
    if model.get("type") != "BCKDDetector":
        weights = {k: float(v["loss_weight"]) for k, v in model.get("bbox_head", {}).items()
                   if k.startswith("loss_") and isinstance(v, Mapping) and "loss_weight" in v}
        return RunInfo("plain", _model_name(model), "", data, weights)
    from bckd.distill.detector import method_name, teacher_model_config

    terms = {k: v for k, v in model.items() if k.startswith("loss_distill") and v}
    weights = {k: float(v.get("loss_weight", 1.0)) for k, v in terms.items()}
    return RunInfo(method_name(model), _model_name(model["student"]),
                   _model_name(teacher_model_config(model["teacher"])), data, weights)


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
