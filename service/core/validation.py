"""Checks of a JobCreate before anything reaches Ray; each failure names the offending field.

The request's own fields are checked here; its config, with every override applied, goes
through the one config policy (:mod:`bckd.config.policy`) that the job applies again before it
builds anything. Shipped configs (``configs/**.py``) are trusted code and are loaded with
mmengine; an uploaded config is data, parsed and never executed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from bckd.config.dataset import check_teacher_classes, dataset_options, head_num_classes
from bckd.config.kinds import DISTILLER, JobKind, is_distillation
from bckd.config.loader import parse_config_data
from bckd.config.overrides import MISSING, apply_overrides, lookup
from bckd.config.paths import PathError, check_path, resolve
from bckd.config.policy import ConfigPolicy, PolicyError, Roots, registered_names
from bckd.config.run_info import flatten_config
from bckd.data.check import DEFAULT_LAYOUT, DataSetError, read_categories
from bckd.runtime.cluster import Capacity, ResourceError, WorkerResources
from bckd.runtime.cluster import check_resources as fits
from service.core.datasets import DataSource
from service.core.errors import Invalid
from service.core.hints import did_you_mean, policy_hint
from service.core.schemas import JobCreate
from service.settings import PROJECT_ROOT, Settings

__all__ = ["ValidatedJob", "is_distill_config", "list_configs", "validate_job",
           "warm_up"]



@dataclass
class ValidatedJob:
    config_label: str  # the config's name, or "upload"
    config_data: dict  # the config as data, before overrides: a shipped one as loaded here
    overrides: dict[str, Any]  # typed, with the data set and teacher_ckpt folded in
    resolved: dict[str, str]  # the resolved config, flat: what a rerun must match
    config_hash: str
    waits_for_capacity: bool = False  # it fits only once the autoscaler adds nodes


def warm_up() -> None:
    """Import what checking a request needs (mmengine, and mmdet's registries through the
    policy's names): seconds the first request would otherwise wait."""
    from mmengine.config import Config  # noqa: F401

    registered_names()


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
        known = (n for n, _ in list_configs(configs_dir))
        raise Invalid("config", f"unknown config {name!r}{did_you_mean(name, known)}; "
                      "see GET /v1/configs")
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
    return is_distillation(model)


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


def _request_options(req: JobCreate, cfg: Any, teacher: str | None,
                     source: DataSource | None, classes: list[str] | None, configs_dir: Path
                     ) -> tuple[dict[str, Any], dict[str, str]]:
    """Config options set from the request's own fields (the data set, the teacher), and each
    option's key -> that field (for error locations). A teacher config file is read only if
    it is a shipped or an mmdet:: one (the config policy's own rule, run before the policy)."""
    try:
        values = (dataset_options(cfg, source.root, classes, configs_dir, PROJECT_ROOT)
                  if source is not None else {})
    except PathError as err:
        raise Invalid(_field("model.teacher", req, {}), str(err)) from None
    fields = {key: source.field for key in values}
    if teacher is not None:
        values["model.teacher_ckpt"], fields["model.teacher_ckpt"] = teacher, "teacher_ckpt"
    return values, fields


def _options(req: JobCreate, values: dict[str, Any], fields: dict[str, str],
             fetched: dict[str, str]) -> dict[str, Any]:
    """The request's overrides (``runs:/`` values replaced by their local copies) plus
    ``values``; a key set both ways is refused (one setting, one name)."""
    options = {k: fetched.get(f"overrides.{k}", v) for k, v in req.overrides.items()}
    for key, value in values.items():
        name = key.removeprefix("+")
        given = next((k for k in (name, f"+{name}") if k in options), None)
        if given is not None:
            raise Invalid(f"overrides.{given}", f"also set by the request's {fields[key]}; "
                          "give one")
        options[key] = value
    return options


def _check_merges(data: dict, options: dict[str, Any]) -> None:
    """mmengine merges a mapping override into the mapping it replaces, and raises a
    ``TypeError`` on anything else (``None``, a string): refuse that here, naming the key. A
    mapping with ``_delete_`` replaces whatever was there (a set's teacher model over the
    teacher's config file name), so it merges anywhere."""
    for key, value in options.items():
        old = lookup(data, key.removeprefix("+"))
        if (isinstance(value, dict) and value.get("_delete_") is not True
                and old is not MISSING and not isinstance(old, dict)):
            raise Invalid(f"overrides.{key}", f"a mapping merges only into a mapping, and the "
                          f"config has {old!r} here; to set one, upload the config with it "
                          "(config_upload)")


def _source_classes(source: DataSource | None, policy: ConfigPolicy) -> list[str] | None:
    """The set's class names: a registered set's, or those of a raw data_root's train
    annotations once the path rules allow reading them (else the policy names the field)."""
    if source is None or source.classes is not None:
        return source.classes if source is not None else None
    ann = str(Path(source.root) / DEFAULT_LAYOUT["train"].ann_file)
    try:
        check_path(ann, policy.roots, read=True)
        return read_categories(resolve(ann, policy.roots.base))
    except (PathError, DataSetError):
        return None


def _check_teacher_classes(resolved: dict, data: dict, classes: list[str],
                           req: JobCreate, configs_dir: Path) -> None:
    """A local teacher checkpoint trained on other classes than the set's is refused (a URL
    one is checked by the job, which fetches it)."""
    from bckd.distill import teacher_model_config

    ckpt = resolved["model"].get("teacher_ckpt")
    if not ckpt or "://" in ckpt or not (path := resolve(ckpt, PROJECT_ROOT)).is_file():
        return
    try:
        check_teacher_classes(str(path), teacher_model_config(
            data["model"]["teacher"], configs_dir, PROJECT_ROOT), classes)
    except ValueError as err:
        raise Invalid("teacher_ckpt" if req.teacher_ckpt else "config", str(err)) from None
    except Exception as err:  # torch.load of a file that is no checkpoint: any of its errors
        raise Invalid("teacher_ckpt" if req.teacher_ckpt else "config",
                      f"{ckpt} is not a readable torch checkpoint ({type(err).__name__}); give "
                      "a .pth a job saved, e.g. runs:/<run id>/checkpoints/final.pth") from None


def check_resources(req: JobCreate, capacity: Capacity) -> bool:
    """The job's own rule (``bckd.runtime.cluster.check_resources``) on the request: True when
    the nodes up now place its workers, False when it must wait for an autoscaler's nodes."""
    r = req.resources
    try:
        return fits(WorkerResources(r.num_workers, r.cpus_per_worker, r.gpus_per_worker),
                    capacity)
    except ResourceError as err:
        raise Invalid(f"resources.{err.field}", err.message) from None


def _check_kind(req: JobCreate, cfg: dict) -> bool:
    """The kind fits the config; True for a distillation config."""
    is_distill = is_distillation(cfg.get("model"))
    if req.kind == JobKind.distill and not is_distill:
        raise Invalid("config", f"kind distill needs a config whose model.type is {DISTILLER}")
    if req.kind == JobKind.train and is_distill:
        raise Invalid("kind", f"this config is a {DISTILLER}; submit it as kind distill")
    if not is_distill and req.teacher_ckpt:
        raise Invalid("teacher_ckpt", f"only a {DISTILLER} config takes a teacher checkpoint")
    return is_distill


def _check_classes(model: dict, configs_dir: Path) -> None:
    from bckd.distill import teacher_model_config  # the policy has checked the teacher config

    teacher = teacher_model_config(model.get("teacher"), configs_dir, PROJECT_ROOT)
    student = model.get("student")
    t, s = head_num_classes(teacher), head_num_classes(student)
    if t is not None and s is not None and t != s:
        raise Invalid("config", f"teacher/student mismatch: teacher has {t} classes, student {s}")


def validate_job(req: JobCreate, settings: Settings, owner: str, run_dir: Path,
                 fetched: dict[str, str], capacity: Callable[[], Capacity] | None,
                 source: DataSource | None = None) -> ValidatedJob:
    """Check a request whose run will live in ``run_dir``; ``fetched`` maps request fields to
    the local copies of their ``runs:/`` checkpoints (``service.core.checkpoints``), ``source`` is
    the data set it trains on (``service.core.datasets.data_source``); ``capacity()`` gives
    what the cluster holds, asked once every other check has passed."""
    from mmengine.config import Config

    if (req.config is None) == (req.config_upload is None):
        raise Invalid("config", "give exactly one of config (a name) or config_upload")
    teacher = fetched.get("teacher_ckpt", req.teacher_ckpt)
    policy = ConfigPolicy(settings.configs_dir, Roots(
        read=tuple(settings.read_roots(owner)), write=run_dir.resolve(), base=PROJECT_ROOT),
        url_prefixes=tuple(settings.checkpoint_url_prefixes))
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
    classes = _source_classes(source, policy)
    values, injected = _request_options(req, data, teacher, source, classes,
                                        settings.configs_dir)
    options = _options(req, values, injected, fetched)
    _check_merges(data, options)
    try:
        # no copy of data first: Config copies every mapping and list it is given
        cfg = apply_overrides(Config(data), options, policy, trusted=file is not None)
    except PolicyError as err:
        raise Invalid(_field(err.key, req, injected), err.message + policy_hint(err.key, req)
                      ) from None
    resolved = cfg.to_dict()
    if distill:
        _check_classes(resolved["model"], settings.configs_dir)
        if classes is not None:
            _check_teacher_classes(resolved, data, classes, req, settings.configs_dir)
    if req.data_root is not None and not (PROJECT_ROOT / req.data_root).is_dir():
        raise Invalid("data_root", f"{req.data_root!r} is not a directory")
    # last: a bad request is refused whether or not Ray answers (capacity() may raise)
    waits = capacity is not None and not check_resources(req, capacity())
    flat = {**flatten_config(resolved), "kind": str(req.kind), "experiment": req.experiment}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()
    return ValidatedJob(label, data, options, flat, digest, waits)
