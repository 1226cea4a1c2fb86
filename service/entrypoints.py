"""Kind -> shell command of the Ray job. The one place that knows the jobs' command lines."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

__all__ = ["JobCommand", "build_entrypoint"]


@dataclass(frozen=True)
class JobCommand:
    kind: str  # train | distill | sweep
    config: str  # a path the job can open: configs/... or an uploaded JSON config
    name: str  # work_dirs/<name>, the MLflow run name
    experiment: str
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    num_samples: int = 1  # sweep trials
    cfg_options: dict[str, str] = field(default_factory=dict)  # dotted key -> literal


def build_entrypoint(cmd: JobCommand, python: str = "python", module: str = "") -> str:
    """``python -m jobs.train CONFIG --name N --experiment E ...`` (``jobs.sweep`` for sweeps).

    ``module`` replaces the job module, or names a script (tests run a stand-in with the same
    command line).
    """
    module = module or ("jobs.sweep" if cmd.kind == "sweep" else "jobs.train")
    run = [module] if module.endswith(".py") else ["-m", module]  # a script path, or a module
    argv = [python, *run, cmd.config, "--name", cmd.name, "--experiment", cmd.experiment,
            "--num-workers", str(cmd.num_workers),
            "--cpus-per-worker", _num(cmd.cpus_per_worker)]
    if cmd.gpus_per_worker > 0:
        argv.append("--use-gpu")
    if cmd.kind == "sweep":
        argv += ["--num-samples", str(cmd.num_samples)]
    if cmd.cfg_options:
        argv += ["--cfg-options", *(f"{k}={v}" for k, v in cmd.cfg_options.items())]
    return shlex.join(argv)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
