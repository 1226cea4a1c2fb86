"""Load a job's mmengine config and check it before any worker starts.

Everything here runs on the driver, so a bad input fails in seconds with one message naming the
problem, instead of minutes later inside a Ray worker: a missing config file, an override key
that does not exist, a missing data set, a teacher checkpoint that does not fit its config.

Paths in the config (``data_root``, ``ann_file``, ``teacher_ckpt``, ``work_dir``) are made absolute
against the driver's working directory, because Ray workers do not share it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mmengine.config import Config, ConfigDict
from mmengine.utils import import_modules_from_strings

from bckd.engine.policy import ConfigPolicy, PolicyError, check_config, check_size

__all__ = [
    "MISSING",
    "RunInfo",
    "apply_overrides",
    "check_dataset",
    "check_override_keys",
    "check_override_value",
    "check_teacher",
    "describe_run",
    "flatten_config",
    "init_registries",
    "load_config",
    "lookup",
    "parse_config_data",
    "resolve_paths",
]

MISSING = object()


def lookup(cfg: Any, dotted: str) -> Any:
    """The value at a dotted key (list items by integer index, negative from the end), or
    :data:`MISSING`. The empty key is the whole config."""
    node = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for part in dotted.split(".") if dotted else []:
        if isinstance(node, Mapping):
            if part not in node:
                return MISSING
            node = node[part]
        elif isinstance(node, list | tuple) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(node) <= index < len(node):
                return MISSING
            node = node[index]
        else:
            return MISSING
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
            parent = lookup(cfg, name.rpartition(".")[0])
            if not isinstance(parent, Mapping):
                raise PolicyError(name, f"override {name!r}: {'.'.join(parts[:-1])!r} is not a "
                                  "dict in the config")
        elif lookup(cfg, name) is MISSING:
            hint = _closest_existing(cfg, parts)
            raise PolicyError(name, f"override key {name!r} does not exist in the config "
                              f"({hint}); prefix it with '+' to add a new key")
        merged[name] = value
    return merged


def check_override_value(key: str, old: Any, new: Any) -> None:
    """An override keeps the kind of value it replaces: a number stays a number, a flag a flag,
    a list a list, and a whole section is not replaced by a scalar."""
    if old is MISSING or old is None:
        return
    if isinstance(old, bool):
        ok = isinstance(new, bool)
    elif isinstance(old, int | float):
        ok = isinstance(new, int | float) and not isinstance(new, bool)
    elif isinstance(old, Mapping):
        ok = isinstance(new, Mapping)
    elif isinstance(old, list | tuple):
        ok = isinstance(new, list | tuple)
    else:
        ok = True
    if not ok:
        raise PolicyError(key, f"override value {new!r} does not fit the config's "
                          f"{type(old).__name__} {old!r}")


def _closest_existing(cfg: Config, parts: list[str]) -> str:
    for depth in range(len(parts) - 1, -1, -1):
        node = lookup(cfg, ".".join(parts[:depth]))
        if node is not MISSING:
            where = ".".join(parts[:depth]) or "the top level"
            keys = sorted(node.keys()) if isinstance(node, Mapping) else []
            return f"{where} has keys {keys}" if keys else f"{where} has no key {parts[depth]!r}"
    return "no such key"


def parse_config_data(text: str, fmt: str) -> dict:
    """A config that is data (YAML or JSON), parsed without running anything.

    Raises :class:`PolicyError` for text that does not parse, is not a mapping, or would pull
    code in (``_base_``, ``custom_imports``); the rest of the policy runs in :func:`load_config`.
    """
    try:
        data = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError, RecursionError) as err:
        raise PolicyError("", f"not valid {fmt}: {err}") from None
    check_size(data)
    if not isinstance(data, dict):
        raise PolicyError("", "a config is a mapping of config keys")
    for key in ("_base_", "custom_imports"):
        if key in data:
            raise PolicyError(key, "not allowed in a config given as data (it would run code)")
    if not isinstance(data.get("model"), dict):
        raise PolicyError("model", "a config needs a model mapping")
    return data


def load_config(path: str | os.PathLike, options: Mapping[str, Any] | None = None,
                policy: ConfigPolicy | None = None) -> Config:
    """Read a config, apply checked overrides, and hold the result to the config policy.

    Without ``policy`` (a person at a terminal with their own config) a ``.py`` config is
    loaded with mmengine and only the policy's rule on registered names applies. With one (a
    request), only a shipped ``.py`` under ``policy.configs_dir`` is executed; a ``.json`` or
    ``.yaml`` config is data, parsed by :func:`parse_config_data`, and every path must fall in
    the policy's roots.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.suffix in (".json", ".yaml", ".yml") and policy is not None:
        fmt = "json" if path.suffix == ".json" else "yaml"
        data = parse_config_data(path.read_text(), fmt)
        return apply_overrides(Config(data, filename=str(path)), options, policy, trusted=False)
    if policy is not None and policy.configs_dir is not None and not (
            path.suffix == ".py" and path.resolve().is_relative_to(policy.configs_dir.resolve())):
        raise PolicyError("config", f"{str(path)!r} is neither a shipped config nor a JSON or "
                          "YAML config")
    try:
        cfg = Config.fromfile(str(path))
    except (SyntaxError, NameError, KeyError, TypeError, ImportError) as err:
        raise ValueError(f"config {path} does not load: {type(err).__name__}: {err}") from None
    return apply_overrides(cfg, options, policy, trusted=True)


def apply_overrides(cfg: Config, options: Mapping[str, Any] | None,
                    policy: ConfigPolicy | None, trusted: bool) -> Config:
    """Merge checked overrides into ``cfg`` (in place) and hold the result to the policy.

    ``trusted``: ``cfg`` is a shipped (or the terminal user's own) config, whose
    ``custom_imports`` are imported and are then the only value that key may have.
    """
    trusted_imports = copy.deepcopy(cfg.get("custom_imports")) if trusted else None
    if options:
        checked = check_override_keys(cfg, options)
        for key, value in checked.items():
            check_size(value, key)
            check_override_value(key, lookup(cfg, key), value)
        cfg.merge_from_dict(checked)
    if trusted_imports:
        import_modules_from_strings(**trusted_imports)
    check_config(cfg.to_dict(), policy or ConfigPolicy(configs_dir=None), trusted_imports)
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
    if "://" not in ckpt and not Path(ckpt).is_file():  # a URL is fetched by build_teacher
        raise FileNotFoundError(f"teacher checkpoint not found: {ckpt} (train the teacher first, "
                                "e.g. `bckd train <teacher config>`, or set model.teacher_ckpt)")
    from bckd.distill import build_teacher

    init_registries(cfg)
    build_teacher(model["teacher"], ckpt)


def init_registries(cfg: Config) -> None:
    """Register what a checked config may build, before building it: its own (checked)
    ``custom_imports``, this project's modules (an uploaded config has no imports of its own),
    and mmdet as the default scope."""
    from mmengine.registry import init_default_scope

    import bckd.distill  # noqa: F401  (registers BCKDDetector)
    import bckd.losses  # noqa: F401  (registers the distillation losses)

    if cfg.get("custom_imports"):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get("default_scope", "mmdet"))


@dataclass(frozen=True)
class RunInfo:
    """What a run is, for MLflow tags and params."""

    method: str  # plain, kd, ld, bcdl, ildl or bckd (bckd.distill.method_name)
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
    model = cfg.model
    dataset = _inner_dataset(cfg.get("train_dataloader")) or {}
    data = f"{dataset.get('type', '?')}:{Path(str(dataset.get('data_root', ''))).name}"
    if model.get("type") != "BCKDDetector":
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
