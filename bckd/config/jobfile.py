"""The job file: one JSON document that says everything a submitted job is.

The service writes it and the job reads it (``python -m jobs.train --spec FILE``), so a value
keeps its JSON type from the REST body to the config (``"None"`` stays a string, ``[1, 2]`` a
list), where a shell command line and ``--cfg-options`` would re-parse it. It also carries what
the config policy needs to hold the job to the same roots as the API did.

The config travels as data, always: the API loads a shipped config itself and writes its values
here (``config_data``), so the job builds its config with ``Config(data)`` and never executes a
config file. The job's MLflow run is the API's too: it created the run (tags ``bckd.owner``,
``bckd.job_id``) before the job existed, and ``mlflow_run_id`` names it; the job trains in that
run or not at all (:func:`bckd.tracking.runs.open_owned_run`).

The file is trusted as to *where* (its roots, run directory, configs directory and MLflow run:
the service wrote them), never as to *what*: its config and overrides go through the policy
again in :func:`bckd.config.loader.load_config` before anything is built.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bckd.config.kinds import JobKind
from bckd.config.policy import ConfigPolicy, Roots

__all__ = ["JobFile", "read_job_file"]

VERSION = 2  # 2: the config is always data, and the MLflow run is the service's
RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id (uuid4 hex)


@dataclass
class JobFile:
    kind: str  # a JobKind: train | distill | sweep
    name: str  # the run's name: its directory and its MLflow run name
    experiment: str
    owner: str
    run_dir: str  # absolute; the job's work_dir, where all its outputs go
    configs_dir: str  # the shipped configs (the config policy's configs_dir)
    read_roots: list[str]  # absolute; data sets and the owner's own directory
    base_dir: str  # relative paths in the config resolve against it (the job's cwd)
    config_data: dict  # the config as data: a shipped one as the API loaded it, or an upload
    mlflow_run_id: str  # the run the service created for this job (and its reruns)
    config_name: str | None = None  # the shipped config's name (GET /v1/configs); None: upload
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> JSON value
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0  # one of bckd.runtime.cluster.GPUS_PER_WORKER
    num_samples: int = 1  # sweeps: trials
    max_failures: int = 0  # worker failures a run (each trial's run) recovers from
    # how long the job waits for nodes an autoscaler adds (the service's pending_timeout_s)
    capacity_timeout_s: float = 600.0
    tags: dict[str, str] = field(default_factory=dict)  # MLflow run tags (owner, job id, hash)
    # checkpoint URL prefixes allowed besides the model zoo's (the service's
    # BCKD_CHECKPOINT_URL_PREFIXES; see bckd.config.paths)
    checkpoint_url_prefixes: list[str] = field(default_factory=list)
    version: int = VERSION

    def policy(self) -> ConfigPolicy:
        roots = Roots(read=tuple(Path(r) for r in self.read_roots), write=Path(self.run_dir),
                      base=Path(self.base_dir))
        return ConfigPolicy(configs_dir=Path(self.configs_dir), roots=roots,
                            url_prefixes=tuple(self.checkpoint_url_prefixes))

    def config_path(self) -> Path:
        """The config the job loads, written as JSON into the run directory (so that the work
        dir keeps what was asked): data, read back with ``json.loads``."""
        path = Path(self.run_dir) / "request_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.config_data, indent=1))
        return path

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)


def read_job_file(path: str | Path) -> JobFile:
    """Read and type-check a job file; raise ``ValueError`` naming the first bad field."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--spec {path}: cannot read the job file: {err}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"--spec {path}: not a version {VERSION} job file")
    types = {"kind": str, "name": str, "experiment": str, "owner": str, "run_dir": str,
             "configs_dir": str, "read_roots": list, "base_dir": str, "overrides": dict,
             "num_workers": int, "cpus_per_worker": (int, float), "gpus_per_worker": int,
             "num_samples": int, "max_failures": int, "capacity_timeout_s": (int, float),
             "tags": dict, "config_data": dict, "mlflow_run_id": str,
             "checkpoint_url_prefixes": list}
    unknown = set(data) - set(types) - {"config_name", "version"}
    if unknown:
        raise ValueError(f"--spec {path}: unknown fields {sorted(unknown)}")
    for key, kind in types.items():
        if key in data and not isinstance(data[key], kind):
            raise ValueError(f"--spec {path}: {key} has the wrong type "
                             f"({type(data[key]).__name__})")
    failures = data.get("max_failures", 0)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ValueError(f"--spec {path}: max_failures must be an integer >= 0, "
                         f"got {failures!r}")
    if not all(isinstance(p, str) for p in data.get("checkpoint_url_prefixes", [])):
        raise ValueError(f"--spec {path}: checkpoint_url_prefixes must be strings")
    if data.get("kind") not in set(JobKind):
        raise ValueError(f"--spec {path}: kind must be one of {tuple(str(k) for k in JobKind)}")
    if not RUN_ID.fullmatch(str(data.get("mlflow_run_id"))):
        raise ValueError(f"--spec {path}: mlflow_run_id must name the MLflow run the service "
                         "created for the job (32 hex digits); submit jobs through the API")
    if not isinstance(data.get("config_name"), str | None):
        raise ValueError(f"--spec {path}: config_name must be a string")
    missing = [k for k in ("run_dir", "configs_dir", "base_dir", "read_roots", "config_data")
               if k not in data]
    if missing:
        raise ValueError(f"--spec {path}: missing fields {missing}")
    for value in (data["run_dir"], data["configs_dir"], data["base_dir"], *data["read_roots"]):
        if not isinstance(value, str) or not Path(value).is_absolute():
            raise ValueError(f"--spec {path}: {value!r} must be an absolute path")
    try:
        return JobFile(**data)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"--spec {path}: {err}") from None
