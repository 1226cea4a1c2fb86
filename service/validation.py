"""Checks of a JobCreate before anything reaches Ray; each failure names the offending field.

Configs under ``configs/`` are trusted code shipped with the product, so they are loaded with
mmengine (which executes ``.py`` configs). Uploaded configs are data only: parsed with
``yaml.safe_load`` / ``json.loads``, never executed, and refused if they could pull code in
(``_base_``, ``custom_imports``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from fastapi import HTTPException, status

from service.models import JobKind
from service.ray_jobs import ClusterTotals
from service.schemas import JobCreate
from service.settings import PROJECT_ROOT, Settings

__all__ = ["Invalid", "ValidatedJob", "list_configs", "load_trusted_config", "validate_job"]

DISTILLER = "BCKDDetector"
PATH_KEYS = ("data_root", "ann_file", "load_from", "teacher_ckpt", "resume_from")  # key endings
# An upload may not pull code in: no _base_ (.py bases run), custom_imports only of the product.
TRUSTED_IMPORTS = re.compile(r"^(bckd|mmdet)(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def Invalid(field: str, msg: str, code: int = status.HTTP_422_UNPROCESSABLE_CONTENT
            ) -> HTTPException:
    """A 4xx in FastAPI's own validation shape: ``detail[0].loc`` names the field."""
    return HTTPException(code, [{"loc": ["body", *field.split(".")], "msg": f"{field}: {msg}",
                                 "type": "value_error"}])


@dataclass
class ValidatedJob:
    config_path: str  # what the job opens, relative to the project root when under configs/
    config_label: str
    cfg_options: dict[str, str] = field(default_factory=dict)
    upload: dict | None = None  # the parsed upload, stored as JSON by the caller


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

    # custom_imports (bckd.losses, torch, mmdet) are the job's business, not the API's
    return Config.fromfile(path, import_custom_modules=False, format_python_code=False).to_dict()


def load_trusted_config(path: Path) -> dict:
    try:
        return _load(str(path), path.stat().st_mtime)
    except Exception as err:  # a broken shipped config: name it rather than a 500
        raise Invalid("config", f"{path.name} failed to load: {type(err).__name__}: {err}"
                      ) from err


def parse_upload(fmt: str, content: str) -> dict:
    try:
        data = yaml.safe_load(content) if fmt == "yaml" else json.loads(content)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise Invalid("config_upload.content", f"not valid {fmt}: {err}") from err
    if not isinstance(data, dict):
        raise Invalid("config_upload.content", "must be a mapping of config keys")
    if "_base_" in data:
        raise Invalid("config_upload.content._base_",
                      "not allowed in an uploaded config (a base config is code)")
    if "custom_imports" in data:
        ci = data["custom_imports"]
        imports = ci.get("imports") if isinstance(ci, dict) else None
        imports = [imports] if isinstance(imports, str) else imports
        if not isinstance(imports, list) or not all(
                isinstance(m, str) and TRUSTED_IMPORTS.match(m) for m in imports):
            raise Invalid("config_upload.content.custom_imports",
                          "only modules of bckd or mmdet may be imported by an upload")
    if not isinstance(data.get("model"), dict):
        raise Invalid("config_upload.content.model", "an uploaded config needs a model mapping")
    try:
        json.dumps(data)
    except (TypeError, ValueError) as err:
        raise Invalid("config_upload.content", f"not JSON-representable: {err}") from err
    return data


_MISSING = object()


def _lookup(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _literal(value: Any) -> str:
    """A value as mmengine's ``--cfg-options k=v`` parser reads it back."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    return str(value)


def _check_type(key: str, old: Any, new: Any) -> None:
    ok = True
    if isinstance(old, bool):
        ok = isinstance(new, bool)
    elif isinstance(old, int | float):
        ok = isinstance(new, int | float) and not isinstance(new, bool)
    elif isinstance(old, dict):
        ok = False  # replacing a whole section by a scalar breaks the config
    elif isinstance(old, list | tuple):
        ok = isinstance(new, list)
    if not ok:
        raise Invalid(f"overrides.{key}",
                      f"value {new!r} does not fit the config's {type(old).__name__} {old!r}")


def check_path(settings: Settings, fld: str, value: str, must_exist: bool = True) -> Path:
    if not value:
        raise Invalid(fld, "empty path")
    try:
        path = Path(value)
        path = (path if path.is_absolute() else PROJECT_ROOT / path).resolve()
        exists = path.exists()
    except (OSError, ValueError) as err:  # a name too long, or with a NUL byte
        raise Invalid(fld, f"{value!r} is not a valid path: {err}") from err
    if not any(path.is_relative_to(root) for root in settings.allowed_roots):
        roots = ", ".join(str(r) for r in settings.allowed_roots)
        raise Invalid(fld, f"{value!r} is outside the allowed data roots ({roots})")
    if must_exist and not exists:
        raise Invalid(fld, f"{value!r} does not exist")
    return path


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


def _num_classes(model: dict) -> Any:
    head = model.get("bbox_head") if isinstance(model, dict) else None
    return head.get("num_classes") if isinstance(head, dict) else None


def _check_distill(req: JobCreate, cfg: dict, settings: Settings) -> None:
    model = cfg.get("model", {})
    is_distill = isinstance(model, dict) and model.get("type") == DISTILLER
    if req.kind == JobKind.distill and not is_distill:
        raise Invalid("config", f"kind distill needs a config whose model.type is {DISTILLER}")
    if req.kind == JobKind.train and is_distill:
        raise Invalid("kind", f"this config is a {DISTILLER}; submit it as kind distill")
    if not is_distill and req.teacher_ckpt:
        raise Invalid("teacher_ckpt", f"only a {DISTILLER} config takes a teacher checkpoint")
    if not is_distill:
        return
    teacher = model.get("teacher")
    if isinstance(teacher, str) and teacher.endswith(".py"):
        tpath = Path(teacher)
        if tpath.resolve().is_relative_to(settings.configs_dir.resolve()) and tpath.is_file():
            teacher = load_trusted_config(tpath).get("model")
    student = model.get("student")
    if isinstance(teacher, dict) and isinstance(student, dict):
        t, s = _num_classes(teacher), _num_classes(student)
        if t is not None and s is not None and t != s:
            raise Invalid("config", f"teacher/student mismatch: teacher has {t} classes, "
                          f"student {s}")


def validate_job(req: JobCreate, settings: Settings, totals: ClusterTotals | None
                 ) -> ValidatedJob:
    if (req.config is None) == (req.config_upload is None):
        raise Invalid("config", "give exactly one of config (a name) or config_upload")
    if req.config is not None:
        path = resolve_config(settings.configs_dir, req.config)
        cfg = load_trusted_config(path)
        try:
            rel = str(path.relative_to(PROJECT_ROOT))  # the job runs in the project root
        except ValueError:
            rel = str(path)
        out = ValidatedJob(config_path=rel, config_label=req.config)
    else:
        cfg = parse_upload(req.config_upload.format, req.config_upload.content)
        out = ValidatedJob(config_path="", config_label="upload", upload=cfg)

    _check_distill(req, cfg, settings)

    for key, value in req.overrides.items():
        old = _lookup(cfg, key)
        if old is _MISSING:
            raise Invalid(f"overrides.{key}", "no such key in the config")
        _check_type(key, old, value)
        if key.rsplit(".", 1)[-1] in PATH_KEYS and isinstance(value, str):
            check_path(settings, f"overrides.{key}", value)
        out.cfg_options[key] = _literal(value)

    if req.data_root is not None:
        root = check_path(settings, "data_root", req.data_root)
        if not root.is_dir():
            raise Invalid("data_root", f"{req.data_root!r} is not a directory")
        for split in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if _lookup(cfg, f"{split}.dataset.data_root") is not _MISSING:
                out.cfg_options[f"{split}.dataset.data_root"] = f"{root}/"
        for ev in ("val_evaluator", "test_evaluator"):
            ann = _lookup(cfg, f"{ev}.ann_file")
            if isinstance(ann, str):
                out.cfg_options[f"{ev}.ann_file"] = str(root / "annotations" / Path(ann).name)

    if req.teacher_ckpt is not None and not req.teacher_ckpt.startswith("runs:/"):
        ckpt = check_path(settings, "teacher_ckpt", req.teacher_ckpt)
        if not ckpt.is_file():
            raise Invalid("teacher_ckpt", f"{req.teacher_ckpt!r} is not a file")
        out.cfg_options["model.teacher_ckpt"] = str(ckpt)

    if totals is not None:
        check_resources(req, totals)
    return out
