"""What a sweep is asked to do (:class:`SweepSpec`), checked field by field before anything
starts, and what it ends with (:class:`SweepResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEDULERS", "SEARCHES", "SweepResult", "SweepSpec", "check_spec"]

SCHEDULERS = ("asha", "fifo")
SEARCHES = ("random", "optuna")


@dataclass
class SweepSpec:
    config: str
    num_samples: int = 8  # samples of the space (times each grid point)
    search_space: str | None = None  # YAML/JSON file; default: bckd.tune.space.DEFAULT_SPACE
    scheduler: str = "asha"
    search: str = "random"
    max_concurrent: int | None = None  # default: as many trials as the cluster fits at once
    metric: str = "coco/bbox_mAP"
    mode: str = "max"
    name: str | None = None  # default: sweep_<config stem>; the same name again restores
    experiment: str = "bckd"
    address: str | None = None
    num_workers: int = 1  # per trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0  # 0 or 1 (bckd.runtime.cluster.WorkerResources)
    cfg_options: dict[str, Any] = field(default_factory=dict)  # for every trial
    work_dir: str | None = None  # default: work_dirs/<name>
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: float = 2.0  # ASHA: keep the best 1/rf at each rung (4 cuts too hard
    # for the handful of trials a CPU sweep runs)
    seed: int | None = None  # of the search algorithm
    progress_interval: int = 10
    max_failures: int = 0  # worker failures each trial's run recovers from (JobSpec's)
    capacity_timeout_s: float = 600.0  # waiting for an autoscaler's nodes (JobSpec's)
    local_num_cpus: int | None = None
    trial_memory_mb: int = 256  # what a trial's driver process reserves (it holds no CPU)
    tags: dict[str, str] = field(default_factory=dict)  # on the parent and every trial's run
    # the parent MLflow run the service created for a submitted sweep; None at a terminal
    run_id: str | None = None
    policy: Any = None  # bckd.config.policy.ConfigPolicy of a submitted sweep; None at a terminal


@dataclass
class SweepResult:
    name: str
    sweep_dir: str
    parent_run_id: str
    status: str  # FINISHED, FAILED (every trial failed) or KILLED (interrupted)
    best_trial_id: str | None = None
    best_run_id: str | None = None
    best_value: float | None = None
    best_config: dict[str, Any] = field(default_factory=dict)
    trials: list[dict] = field(default_factory=list)  # trial_id, outcome, config, best, epochs
    restored: bool = False
    wall_s: float = 0.0


def check_spec(spec: SweepSpec) -> None:
    """Raise ``ValueError`` naming the command-line flag of the first invalid field."""
    if spec.scheduler not in SCHEDULERS:
        raise ValueError(f"--scheduler must be one of {SCHEDULERS}, got {spec.scheduler!r}")
    if spec.search not in SEARCHES:
        raise ValueError(f"--search must be one of {SEARCHES}, got {spec.search!r}")
    if spec.mode not in ("max", "min"):
        raise ValueError(f"--mode must be max or min, got {spec.mode!r}")
    if spec.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {spec.num_samples}")
    if spec.max_concurrent is not None and spec.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {spec.max_concurrent}")
    if spec.grace_period < 1 or spec.reduction_factor <= 1:
        raise ValueError("ASHA needs --grace-period >= 1 and --reduction-factor > 1, got "
                         f"{spec.grace_period} and {spec.reduction_factor}")
