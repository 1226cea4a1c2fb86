"""Load a job's mmengine config and check it before any worker starts.

Everything here runs on the driver, so a bad input fails in seconds with one message naming the
problem, instead of minutes later inside a Ray worker: a missing config file, an override key
that does not exist, a missing data set, a teacher checkpoint that does not fit its config.

Paths in the config (``data_root``, ``ann_file``, ``teacher_ckpt``, ``work_dir``) are made absolute
against the driver's working directory, because Ray workers do not share it.

Overrides are :mod:`bckd.config.overrides`, registry set-up :mod:`bckd.config.registries`, a
run's description for MLflow :mod:`bckd.config.run_info`; import their names from there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mmengine.config import Config

from bckd.config.dataset import inner_dataset
from bckd.config.kinds import is_distillation
from bckd.config.overrides import apply_overrides
from bckd.config.policy import ConfigPolicy, PolicyError, check_size
from bckd.config.registries import init_registries

__all__ = [
    "CONFIG_JSON",
    "check_dataset",
    "check_teacher",
    "load_config",
    "parse_config_data",
    "resolve_paths",
    "write_config_json",
]

CONFIG_JSON = "config.json"  # a run's resolved config, as data (the run dir and MLflow)


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
    submitted job) the config is data, a ``.json`` or ``.yaml`` file parsed by
    :func:`parse_config_data` (the API loaded a shipped config and wrote its values into the
    job file), and every path must fall in the policy's roots: no config file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if policy is not None:
        if path.suffix not in (".json", ".yaml", ".yml"):
            raise PolicyError("config", f"{str(path)!r}: a submitted job's config is data "
                              "(JSON or YAML); only the API loads shipped .py configs")
        fmt = "json" if path.suffix == ".json" else "yaml"
        data = parse_config_data(path.read_text(), fmt)
        # the file name keeps its .json: mmengine's Runner dumps the config under it, as JSON
        return apply_overrides(Config(data, filename=str(path)), options, policy, trusted=False)
    try:
        cfg = Config.fromfile(str(path))
    except (SyntaxError, NameError, KeyError, TypeError, ImportError) as err:
        raise ValueError(f"config {path} does not load: {type(err).__name__}: {err}") from None
    return apply_overrides(cfg, options, policy, trusted=True)


def write_config_json(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the resolved ``cfg`` to ``path`` (a run's ``config.json``) and return it.

    JSON, not mmengine's ``Config.dump`` to ``.py``: that text is Python, and a key or value
    holding a quote would put code into a file that people and tools load back. Tuples become
    lists; a value JSON cannot hold (a terminal config's own objects) is written as its repr.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.to_dict(), indent=1, default=repr) + "\n")
    return path


def _absolute(path: str | None, base: Path) -> str | None:
    if path is None or "://" in str(path) or "::" in str(path):  # URIs, "mmdet::..." configs
        return path
    return str((base / path).resolve()) if not os.path.isabs(path) else str(path)


def resolve_paths(cfg: Config, base: str | os.PathLike | None = None) -> Config:
    """Make data, annotation, checkpoint and work-dir paths absolute (in place)."""
    base = Path(base or os.getcwd())
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = inner_dataset(cfg.get(loader))
        if dataset is not None and dataset.get("data_root"):
            root = _absolute(dataset["data_root"], base)
            dataset["data_root"] = root.rstrip("/") + "/"
    for name in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(name)
        if isinstance(evaluator, Mapping) and evaluator.get("ann_file"):
            evaluator["ann_file"] = _absolute(evaluator["ann_file"], base)
    model = cfg.get("model", {})
    if is_distillation(model):
        model["teacher_ckpt"] = _absolute(model.get("teacher_ckpt"), base)
        if isinstance(model.get("teacher"), str):
            model["teacher"] = _absolute(model["teacher"], base)
    for key in ("work_dir", "load_from"):
        if cfg.get(key):
            cfg[key] = _absolute(cfg[key], base)
    return cfg



def check_dataset(cfg: Config) -> None:
    """Raise ``FileNotFoundError`` naming the first missing annotation file or image folder."""
    hint = "(write the synthetic set with `bckd data synth --out DIR`, or set data_root)"
    loaders = ["train_dataloader"] + (["val_dataloader"] if cfg.get("val_cfg") else [])
    for loader in loaders:
        dataset = inner_dataset(cfg.get(loader))
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
    if not is_distillation(model):
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
