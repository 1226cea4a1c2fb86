"""Kind -> shell command of the Ray job. The one place that knows the jobs' command lines."""

from __future__ import annotations

import shlex
from pathlib import Path

from bckd.config.kinds import JobKind

__all__ = ["build_entrypoint"]


def build_entrypoint(kind: str, job_file: Path, python: str = "python", module: str = "") -> str:
    """``python -m jobs.train --spec FILE`` (``jobs.sweep`` for sweeps).

    Everything else the job needs is in the job file (``bckd.config.jobfile``), so no value of
    a request is ever a shell token. ``module`` replaces the job module, or names a script
    (tests run a stand-in that reads the same file).
    """
    module = module or ("jobs.sweep" if kind == JobKind.sweep else "jobs.train")
    run = [module] if module.endswith(".py") else ["-m", module]  # a script path, or a module
    return shlex.join([python, *run, "--spec", str(job_file)])
