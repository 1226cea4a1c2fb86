"""Resolve ``RUN_OR_CKPT`` into the student's config and weights.

``RUN_OR_CKPT`` is an MLflow run id (its ``checkpoints/final.pth``), an MLflow
``runs:/<id>/<path>`` URI, or a local checkpoint file. The config comes from ``--config``, else
the run's logged ``config.json`` (what the job logs, see :mod:`bckd.runtime.launch`) or the
``config.json`` beside a local checkpoint (the job's work dir holds both), else the checkpoint's
``meta['cfg']`` (mmengine's ``epoch_N.pth``). Nothing a checkpoint or a run carries is executed:
the job's config may hold what a request put there. ``config.json`` is read with ``json.loads``,
``meta['cfg']`` (mmengine's ``pretty_text``, assignments of literals and ``dict(...)``) with
``ast`` as literals only, and a config's ``custom_imports`` are dropped (this project's modules,
the only ones a job may import, are loaded anyway).

A distillation config's model is a ``BCKDDetector``; the exported model is its ``student``, a
plain mmdet detector, and only the student's keys of the checkpoint are kept (a distiller's
checkpoint has none of the teacher's by design, but a checkpoint from elsewhere may).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mmengine.config import Config, ConfigDict

from bckd.config.kinds import is_distillation

__all__ = ["FINAL_CHECKPOINT", "Source", "build_student", "resolve", "student_model_config",
           "tracking_uri_or_default"]

FINAL_CHECKPOINT = "checkpoints/final.pth"  # the job's student weights (bckd.runtime.launch)
CONFIG_ARTIFACT = "config.json"  # the job's resolved config, logged at the run's root
_RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's run ids: uuid4 hex


@dataclass
class Source:
    """A resolved ``RUN_OR_CKPT``: the full config, the checkpoint's weights, where they came
    from, and the MLflow run (``None`` for a local file)."""

    value: str
    cfg: Config
    state_dict: dict[str, torch.Tensor]
    checkpoint: str
    run_id: str | None = None
    tracking_uri: str | None = None
    dropped_keys: list[str] = field(default_factory=list)  # filled by build_student


def tracking_uri_or_default(tracking_uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the store ``bckd train`` writes by
    default (``work_dirs/mlflow.db``) when it exists."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    default = Path("work_dirs/mlflow.db")
    if default.is_file():
        return f"sqlite:///{default.resolve()}"
    raise ValueError("an MLflow run needs its tracking store: pass --tracking-uri or set "
                     "MLFLOW_TRACKING_URI (no work_dirs/mlflow.db here)")


def _download(run_id: str, artifact_path: str, tracking_uri: str, dst: str) -> Path:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException as err:
        if err.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):  # the service's MLflow
            raise ValueError(f"RUN_OR_CKPT: MLflow at {tracking_uri} wants a login that may "
                             f"read run {run_id!r}: yours, by eval \"$(bckd jobs mlflow-login "
                             "--env)\", then this command again") from None
        raise ValueError(f"RUN_OR_CKPT: no MLflow run {run_id!r} in {tracking_uri}") from None
    try:
        return Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, tracking_uri=tracking_uri, dst_path=dst))
    except (MlflowException, OSError) as err:
        raise FileNotFoundError(f"MLflow run {run_id!r} has no artifact {artifact_path!r} "
                                f"({type(err).__name__})") from None


def _load_checkpoint(path: Path) -> dict:
    """The checkpoint as a dict; a bare state dict becomes ``{"state_dict": ...}``.

    Weights-only with numpy values first (final.pth); a full mmengine checkpoint (message hub,
    ``epoch_N.pth``) needs mmengine's wider allow-list, used because the file is named by the
    person at this terminal (no REST request reaches this command)."""
    from bckd.checkpoint import mmengine_safe_globals, weights_safe_globals

    try:
        with weights_safe_globals():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an UnpicklingError names the type; retry wider
        try:
            with mmengine_safe_globals():
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - not a torch file at all
            raise ValueError(f"RUN_OR_CKPT: {str(path)!r} is not a readable torch checkpoint: "
                             f"{str(err).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"RUN_OR_CKPT: {str(path)!r} holds a {type(checkpoint).__name__}, not "
                         "a checkpoint or state dict")
    return checkpoint if "state_dict" in checkpoint else {"state_dict": checkpoint}


def _job_config(path: Path) -> Config:
    """A job's ``config.json``, as data."""
    try:
        return Config(json.loads(path.read_text()), filename=str(path))
    except (ValueError, TypeError) as err:  # not JSON, or not a mapping
        raise ValueError(f"{path} is not a job's config.json: {err}") from None


def _literal(node: ast.expr) -> object:
    """A ``pretty_text`` value: literals, and ``dict(key=...)`` calls, nested in any order."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == "dict" and not node.args:
        if any(kw.arg is None for kw in node.keywords):
            raise ValueError("dict(**...)")
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    return ast.literal_eval(node)  # a constant or a signed number; ValueError on anything else


def _meta_config(text: str, value: str) -> Config:
    """``meta['cfg']`` as data: each top-level ``name = <literal>`` of mmengine's
    ``pretty_text``; a config that is not plain data is refused, never run."""
    try:
        data = {}
        for stmt in ast.parse(text).body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                raise ValueError(f"line {stmt.lineno} is no plain assignment")
            data[stmt.targets[0].id] = _literal(stmt.value)
        return Config(data)
    except (SyntaxError, ValueError, TypeError) as err:
        raise ValueError(f"RUN_OR_CKPT {value!r}: the checkpoint's meta['cfg'] is not plain data "
                         f"({err}), and it is never executed: pass --config, or export from the "
                         "run's final.pth (its config.json is read instead)") from None


def _config(checkpoint: dict, explicit: list[Path], job: list[Path], value: str) -> Config:
    """``--config`` (``explicit``), else a job's ``config.json`` among ``job`` that exists, else
    ``meta['cfg']`` read as literals; without ``custom_imports`` (see the module docstring)."""
    text = (checkpoint.get("meta") or {}).get("cfg")
    if explicit:  # a file the person at this terminal named
        cfg = Config.fromfile(str(explicit[0]))
    elif found := next((path for path in job if path.is_file()), None):
        cfg = _job_config(found)
    elif isinstance(text, str) and text.strip():
        cfg = _meta_config(text, value)
    else:
        raise ValueError(f"RUN_OR_CKPT {value!r}: no config (none of {[str(p) for p in job]} "
                         "exists, and the checkpoint has no meta['cfg']): pass --config")
    cfg.pop("custom_imports", None)
    return cfg


def resolve(value: str, tracking_uri: str | None = None, config: str | None = None,
            workdir: str | None = None) -> Source:
    """The config and weights that ``value`` names (see the module docstring).

    Args:
        workdir: where MLflow downloads go (default: a new temporary directory).
    Raises:
        FileNotFoundError: a missing file or artifact, named.
        ValueError: an unknown run, an unreadable checkpoint, or no config, named.
    """
    explicit = [Path(config)] if config else []
    if config and not Path(config).is_file():
        raise FileNotFoundError(f"--config: no such file {config!r}")
    path = Path(value)
    if value.startswith("runs:/") or (_RUN_ID.fullmatch(value) and not path.exists()):
        run_id, _, artifact = value.removeprefix("runs:/").strip("/").partition("/")
        uri = tracking_uri_or_default(tracking_uri)
        dst = workdir or tempfile.mkdtemp(prefix="bckd-export-")
        ckpt = _download(run_id, artifact or FINAL_CHECKPOINT, uri, dst)
        checkpoint = _load_checkpoint(ckpt)
        job = []
        if not explicit:
            # a run logged without one: meta['cfg'], or --config
            with contextlib.suppress(FileNotFoundError):
                job = [_download(run_id, CONFIG_ARTIFACT, uri, dst)]
        cfg = _config(checkpoint, explicit, job, value)
        return Source(value, cfg, checkpoint["state_dict"], str(ckpt), run_id, uri)
    if not path.is_file():
        raise FileNotFoundError(f"RUN_OR_CKPT {value!r} is neither a checkpoint file nor an "
                                "MLflow run id (32 hex digits) or runs:/ URI")
    checkpoint = _load_checkpoint(path)
    cfg = _config(checkpoint, explicit, [path.parent / CONFIG_ARTIFACT], value)
    return Source(value, cfg, checkpoint["state_dict"], str(path))


def student_model_config(cfg: Config) -> dict:
    """The plain mmdet model config of the student: a ``BCKDDetector``'s ``student`` (with the
    data preprocessor the Runner would have given the distiller), or the model itself."""
    model = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else cfg.model)
    # mmengine's Runner gives a config's top-level data_preprocessor to a model without one.
    preprocessor = model.get("data_preprocessor") or cfg.get("data_preprocessor")
    if is_distillation(model):
        model = copy.deepcopy(model["student"])
        if preprocessor:  # BCKDDetector replaces the student's with it
            model["data_preprocessor"] = copy.deepcopy(preprocessor)
    elif preprocessor and "data_preprocessor" not in model:
        model["data_preprocessor"] = copy.deepcopy(preprocessor)
    model.pop("use_syncbn", None)  # RTMDet's training option, popped by BCKDDetector too
    return model


def build_student(source: Source) -> torch.nn.Module:
    """The student detector in eval mode, with the checkpoint's student weights loaded strictly.

    Keys the student does not have (a teacher's, adapters', a DDP ``module.`` prefix aside) are
    dropped and listed in ``source.dropped_keys``.

    Raises:
        ValueError: keys missing or of other shapes (e.g. a teacher's checkpoint), named.
    """
    from mmdet.registry import MODELS

    from bckd.config.registries import init_registries

    init_registries(source.cfg)
    model = MODELS.build(ConfigDict(student_model_config(source.cfg)))  # heads read attrs
    state = {k.removeprefix("module."): v for k, v in source.state_dict.items()}
    own = model.state_dict()
    source.dropped_keys = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state)
    shapes = sorted(k for k in own if k in state and state[k].shape != own[k].shape)
    if missing or shapes:
        detail = (f"{len(missing)} student keys missing (e.g. {missing[:3]})" if missing else
                  f"{len(shapes)} keys of other shapes (e.g. {shapes[0]}: "
                  f"{tuple(state[shapes[0]].shape)} in the file, {tuple(own[shapes[0]].shape)} "
                  "in the student)")
        raise ValueError(f"RUN_OR_CKPT {source.value!r}: the checkpoint does not hold the weights "
                         f"of the config's student: {detail}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    return model.eval()
