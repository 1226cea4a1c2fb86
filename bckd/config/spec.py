"""What a training job is asked to do (:class:`JobSpec`), what it ends with (:class:`JobResult`),
and :func:`prepare`: every check of the inputs that can fail before Ray or MLflow are touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["JobResult", "JobSpec", "Prepared", "prepare"]


@dataclass
class JobSpec:
    config: str
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0  # 0 or 1 (bckd.runtime.cluster.WorkerResources)
    cfg_options: dict[str, Any] = field(default_factory=dict)
    experiment: str = "bckd"
    name: str | None = None  # default: the config file's stem
    address: str | None = None  # default: RAY_ADDRESS, else a new local cluster
    work_dir: str | None = None  # default: work_dirs/<name>
    storage_path: str | None = None  # shared path or s3:// URI for multi-node; default work_dir
    max_failures: int = 0
    capacity_timeout_s: float = 600.0  # waiting for an autoscaler's nodes, then FAILED
    progress_interval: int = 10  # iterations between console lines and MLflow writes
    stop_grace_s: float = 60.0  # after SIGINT/SIGTERM, time for the workers to checkpoint
    local_num_cpus: int | None = None  # CPUs of a local cluster this job starts (default: all)
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow run tags (sweep parent)
    # the MLflow run the service created for a submitted job (its job file); None at a terminal
    run_id: str | None = None
    callbacks: list = field(default_factory=list)  # ray.train UserCallbacks (Tune reporting)
    stop_requested: Any = None  # () -> bool: stopped from outside (a Tune scheduler): KILLED
    policy: Any = None  # bckd.config.policy.ConfigPolicy of a submitted job; None at a terminal


@dataclass
class JobResult:
    name: str
    work_dir: str
    mlflow_run_id: str
    status: str  # FINISHED, FAILED or KILLED
    final_checkpoint: str | None = None
    best_checkpoint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # of the latest checkpoint
    ranks: list[dict] = field(default_factory=list)  # per rank: node, params hash, images seen
    error: str | None = None
    wall_s: float = 0.0


@dataclass
class Prepared:
    cfg: Any
    name: str
    work_dir: Path


def prepare(spec: JobSpec) -> Prepared:
    """Everything that can fail on bad input, before Ray or MLflow are touched."""
    from bckd.config.loader import check_dataset, check_teacher, load_config, resolve_paths

    cfg = load_config(spec.config, spec.cfg_options, spec.policy)
    name = spec.name or Path(spec.config).stem
    if not name or "/" in name:
        raise ValueError(f"--name must be a plain name, got {name!r}")
    work_dir = Path(spec.work_dir or Path("work_dirs") / name).resolve()
    cfg.work_dir = str(work_dir)
    # relative paths resolve where the policy resolved them (the service's project root)
    roots = spec.policy.roots if spec.policy is not None else None
    resolve_paths(cfg, roots.base if roots is not None else None)
    if cfg.get("train_cfg", {}).get("type", "EpochBasedTrainLoop") != "EpochBasedTrainLoop":
        raise ValueError("jobs train with mmengine's EpochBasedTrainLoop; the config has "
                         f"train_cfg.type={cfg.train_cfg.get('type')!r}")
    check_dataset(cfg)
    check_teacher(cfg)
    return Prepared(cfg, name, work_dir)
