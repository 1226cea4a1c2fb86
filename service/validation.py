"""Checks of a JobCreate before anything reaches Ray; each failure names the offending field.

The request's own fields are checked here; its config, with every override applied, goes
through the one config policy (:mod:`bckd.engine.policy`) that the job applies again before it
builds anything. Shipped configs (``configs/**.py``) are trusted code and are loaded with
mmengine; an uploaded config is data, parsed and never executed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from bckd.engine.config import parse_config_data
from bckd.engine.overrides import MISSING, apply_overrides, lookup
from bckd.engine.policy import ConfigPolicy, PolicyError, Roots
from bckd.engine.run_info import flatten_config
from service.errors import Invalid
from service.models import JobKind
from service.ray_jobs import ClusterTotals
from service.schemas import JobCreate
from service.settings import PROJECT_ROOT, Settings

__all__ = ["DISTILLER", "ValidatedJob", "is_distill_config", "list_configs", "validate_job"]

DISTILLER = "BCKDDetector"


@dataclass
class ValidatedJob:
    config_label: str  # the config's name, or "upload"
    config_file: Path | None  # a shipped config
    config_data: dict | None  # or an upload, as data
    overrides: dict[str, Any]  # typed, with data_root and teacher_ckpt folded in
    resolved: dict[str, str]  # the resolved config, flat: what a rerun must match
    config_hash: str


def list_configs(configs_dir: Path) -> list[tuple[str, Path]]:
    out = []
    for p in sorted(configs_dir.rglob("*.py")):
        rel = p.relative_to(configs_dir)
        if "_base_" in rel.parts or p.name.startswith("_"):
            continue
        out.append((str(rel.with_suffix("")), p))
    return out


def resolve_config(configs_dir: Path, name: str) -> Path:
    root = configs_dir.resolve()
    try:
        path = (root / name).resolve()
        if path.suffix != ".py":
            path = path.with_name(path.name + ".py")
        if not path.is_relative_to(root) or "_base_" in path.relative_to(root).parts:
            raise Invalid("config", f"{name!r} is not a config name from GET /v1/configs")
        found = path.is_file()
    except (OSError, ValueError) as err:  # a name too long, or with a NUL byte
        raise Invalid("config", f"{name!r} is not a valid config name: {err}") from err
    if not found:
        raise Invalid("config", f"unknown config {name!r}; see GET /v1/configs")
    return path


@lru_cache(maxsize=64)
def _load(path: str, mtime: float) -> dict:
    from mmengine.config import Config

    return Config.fromfile(path, import_custom_modules=False, format_python_code=False).to_dict()


def load_trusted_config(path: Path) -> dict:
    """A shipped config as a dict (cached per file version): a copy the caller may change."""
    try:
        return copy.deepcopy(_load(str(path), path.stat().st_mtime))
    except Exception as err:  # a broken shipped config: name it rather than a 500
        raise Invalid("config", f"{path.name} failed to load: {type(err).__name__}: {err}"
                      ) from err


def is_distill_config(path: Path) -> bool:
    model = load_trusted_config(path).get("model")
    return isinstance(model, dict) and model.get("type") == DISTILLER


def _field(key: str, req: JobCreate, injected: dict[str, str]) -> str:
    """The request field a policy error at config ``key`` came from."""
    for option in [*req.overrides, *injected]:
        name = option.removeprefix("+")
        if key == name or key.startswith(name + ".") or (key and name.startswith(key + ".")):
            return injected.get(option) or f"overrides.{option}"
    if key == "config":
        return "config" if req.config is not None else "config_upload"
    base = "config" if req.config is not None else "config_upload.content"
    return f"{base}.{key}" if key else base


def _folded_options(req: JobCreate, cfg: Any, teacher: str | None) -> dict[str, str]:
    """Config keys set from the request's own fields -> that field (for error locations)."""
    injected: dict[str, str] = {}
    if req.data_root is not None:
        if isinstance(cfg.get("data_root"), str):  # the configs' own variable, as mmdet's have
            injected["data_root"] = "data_root"
        for split in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if lookup(cfg, f"{split}.dataset.data_root") is not MISSING:
                injected[f"{split}.dataset.data_root"] = "data_root"
        for ev in ("val_evaluator", "test_evaluator"):
            if isinstance(lookup(cfg, f"{ev}.ann_file"), str):
                injected[f"{ev}.ann_file"] = "data_root"
    if teacher is not None:
        injected["model.teacher_ckpt"] = "teacher_ckpt"
    return injected


def _options(req: JobCreate, cfg: Any, injected: dict[str, str], teacher: str | None
             ) -> dict[str, Any]:
    options: dict[str, Any] = dict(req.overrides)
    for key, source in injected.items():
        if key in options or f"+{key}" in options:  # one setting, one name
            raise Invalid(f"overrides.{key}", f"also set by the request's {source}; give one")
        if source == "teacher_ckpt":
            options[key] = teacher
        elif key.endswith("ann_file"):
            options[key] = str(Path(req.data_root) / "annotations" / Path(lookup(cfg, key)).name)
        else:
            options[key] = req.data_root.rstrip("/") + "/"
    return options


def check_resources(req: JobCreate, totals: ClusterTotals) -> None:
    r = req.resources
    if r.cpus_per_worker > totals.max_node_cpus:
        raise Invalid("resources.cpus_per_worker",
                      f"{r.cpus_per_worker} CPUs per worker, but the largest node has "
                      f"{totals.max_node_cpus}")
    if r.gpus_per_worker > totals.max_node_gpus:
        raise Invalid("resources.gpus_per_worker",
                      f"{r.gpus_per_worker} GPUs per worker, but the largest node has "
                      f"{totals.max_node_gpus}")
    if r.num_workers * r.cpus_per_worker > totals.cpus:
        raise Invalid("resources.num_workers",
                      f"{r.num_workers} workers x {r.cpus_per_worker} CPUs exceed the "
                      f"cluster's {totals.cpus} CPUs")
    if r.num_workers * r.gpus_per_worker > totals.gpus:
        raise Invalid("resources.num_workers",
                      f"{r.num_workers} workers x {r.gpus_per_worker} GPUs exceed the "
                      f"cluster's {totals.gpus} GPUs")


def _num_classes(model: Any) -> Any:
    head = model.get("bbox_head") if isinstance(model, dict) else None
    return head.get("num_classes") if isinstance(head, dict) else None


def _check_kind(req: JobCreate, cfg: dict) -> bool:
    """The kind fits the config; True for a distillation config."""
    model = cfg.get("model", {})
    is_distill = isinstance(model, dict) and model.get("type") == DISTILLER
    if req.kind == JobKind.distill and not is_distill:
        raise Invalid("config", f"kind distill needs a config whose model.type is {DISTILLER}")
    if req.kind == JobKind.train and is_distill:
        raise Invalid("kind", f"this config is a {DISTILLER}; submit it as kind distill")
    if not is_distill and req.teacher_ckpt:
        raise Invalid("teacher_ckpt", f"only a {DISTILLER} config takes a teacher checkpoint")
    return is_distill


def _check_classes(model: dict) -> None:
    from bckd.distill import teacher_model_config  # the policy has checked the teacher config

    teacher, student = teacher_model_config(model.get("teacher")), model.get("student")
    t, s = _num_classes(teacher), _num_classes(student)
    if t is not None and s is not None and t != s:
        raise Invalid("config", f"teacher/student mismatch: teacher has {t} classes, student {s}")


def validate_job(req: JobCreate, settings: Settings, owner: str, run_dir: Path,
                 teacher: str | None, totals: ClusterTotals | None) -> ValidatedJob:
    """Check a request whose run will live in ``run_dir``; ``teacher`` is its teacher
    checkpoint as a local path (a ``runs:/`` reference already downloaded)."""
    from mmengine.config import Config

    if (req.config is None) == (req.config_upload is None):
        raise Invalid("config", "give exactly one of config (a name) or config_upload")
    if req.teacher_ckpt is not None and teacher is None:
        teacher = req.teacher_ckpt
    policy = ConfigPolicy(settings.configs_dir, Roots(
        read=tuple(settings.read_roots(owner)), write=run_dir.resolve(), base=PROJECT_ROOT))
    if req.config is not None:
        file = resolve_config(settings.configs_dir, req.config)
        data, label = load_trusted_config(file), req.config
    else:
        file, label = None, "upload"
        try:
            data = parse_config_data(req.config_upload.content, req.config_upload.format)
        except PolicyError as err:
            raise Invalid(_field(err.key, req, {}), err.message) from None
    distill = _check_kind(req, data)
    injected = _folded_options(req, data, teacher)
    options = _options(req, data, injected, teacher)
    try:
        cfg = apply_overrides(Config(copy.deepcopy(data)), options, policy,
                              trusted=file is not None)
    except PolicyError as err:
        raise Invalid(_field(err.key, req, injected), err.message) from None
    resolved = cfg.to_dict()
    if distill:
        _check_classes(resolved["model"])
    if req.data_root is not None and not (PROJECT_ROOT / req.data_root).is_dir():
        raise Invalid("data_root", f"{req.data_root!r} is not a directory")
    if totals is not None:
        check_resources(req, totals)
    flat = {**flatten_config(resolved), "kind": str(req.kind), "experiment": req.experiment}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()
    return ValidatedJob(label, file, data if file is None else None, options, flat, digest)
